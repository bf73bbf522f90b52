# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The whole per-plugin state of a plugin host, converged in one pass (module plugin_host), and the file
operations the gateway side shares (module gateway_host).

Files: CONFIG_DIR/NAME/{config.yaml,env,secret.env}, the TLS set CONFIG_DIR/NAME/tls -> tls.d/ID/,
the shared unit templates and each instance's socket drop-in. Every write is atomic (temp file,
rename); a TLS set is switched by replacing one symlink, so key, certificate and CA bundle change at once.

Decisions: which instances must restart and why (a file they load changed, a shared unit changed, or
what they run with - CONFIG_DIR/NAME's files by the checksums their unit recorded at start in
STATE_DIR/NAME/loaded.sha256 - differs from what is deployed), which sockets restart (port changed),
whether systemd must reload, and which instance folders are no longer planned. An instance whose TLS set
alone changed is reloaded instead (its launcher builds a new TLS context on SIGHUP; option reload).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import (
    ensure_dir,
    fix_attributes,
    fsync_dir,
    read_bytes,
    write_file,
)
from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import name_problem
from ansible_collections.mcpgateway.mtls.plugins.module_utils._prereq import require

# A TLS set (a service's key, certificate and CA bundle) lives in DIR/tls.d/ID/, ID derived from the checksums of
# its files, and DIR/tls is a symlink to it: switching the link switches key, certificate and CA bundle at once, so
# no reader ever sees a key with another certificate. Version 0.1 kept a plain folder DIR/tls (moved to LEGACY).
LINK = "tls"
VERSIONS = "tls.d"
LEGACY = "legacy"
SERVICE_UNIT = "mcp-plugin@.service"
SOCKET_UNIT = "mcp-plugin@.socket"
DROPIN = "listen.conf"
# What an instance loads at start, relative to its folder (mcp-plugin@.service records their checksums; the
# launcher records the TLS ones again, and the CRL, which a TLS set may lack: absent and unrecorded is the same).
LOADED_FILES = ("config.yaml", "env", "tls/server.crt", "tls/server.key", "tls/ca.crt", "tls/ca.crl")
OPTIONAL_FILES = ("tls/ca.crl",)
_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@_.:-]*\.(service|socket|timer|path|target)$")
_LOADED_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S.*)$")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def set_id(checksums):
    """ID of a TLS set from {dest: sha256 checksum}: 16 hex digits, the same for the same contents."""
    text = "".join("%s:%s\n" % (dest, checksums[dest]) for dest in sorted(checksums))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _bytes(text):
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def socket_dropin_dir(unit_dir, name):
    return posixpath.join(unit_dir, "mcp-plugin@%s.socket.d" % name)


def secret_env(passphrase):
    """secret.env of an instance with an encrypted key (a systemd EnvironmentFile, double-quoted value)."""
    if any(char in passphrase for char in "\n\r\0"):
        raise PKIError("a key passphrase contains a line break or NUL, which an environment file cannot hold: "
                       "choose a passphrase without them")
    value = passphrase.replace("\\", "\\\\").replace('"', '\\"')
    return ("# Managed by mcpgateway.mtls (module plugin_host): the key passphrase, readable by root and the\n"
            "# service group only; the unit reads it with EnvironmentFile=.\n"
            'PLUGINS_SERVER_SSL_KEYFILE_PASSWORD="%s"\n' % value)


def validate(instances, units, keys, secrets, programs=None, restart_programs=()):
    """Check every input before anything is written. Raises PKIError naming the problem and the fix."""
    programs = programs or {}
    for path, content in programs.items():
        if not isinstance(path, str) or not posixpath.isabs(path) or posixpath.normpath(path) != path:
            raise PKIError("programs: %r is not a normalized absolute path" % (path,))
        if not isinstance(content, str) or not content:
            raise PKIError("programs: the content of %s is empty (render it before calling plugin_host)" % path)
    unknown = sorted(set(restart_programs) - set(programs))
    if unknown:
        raise PKIError("restart_programs: %s is not a path of programs" % ", ".join(unknown))
    names = []
    for entry in instances:
        name = entry.get("name")
        problem = name_problem(name)
        if problem:
            raise PKIError("instances: %s" % problem)
        if name in names:
            raise PKIError("instance %s is given twice: each plugin has one entry" % name)
        names.append(name)
        for field in ("config", "env", "socket", "cert", "ca"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise PKIError("instance %s: %s is empty (render it before calling plugin_host)" % (name, field))
        if not isinstance(keys.get(name), str) or "PRIVATE KEY" not in keys[name]:
            raise PKIError("instance %s: keys has no PEM private key for it (run the pki role first)" % name)
        if entry.get("crl") and "-----BEGIN X509 CRL-----" not in entry["crl"]:
            raise PKIError("instance %s: crl is not a PEM CRL (run the pki role first)" % name)
        if "PRIVATE KEY" in entry["cert"] or "PRIVATE KEY" in entry["ca"] or "PRIVATE KEY" in (entry.get("crl") or ""):
            raise PKIError("instance %s: a private key was given as certificate or CA bundle: "
                           "only keys may hold a key" % name)
    unknown = sorted(set(keys) - set(names)) + sorted(set(secrets) - set(names))
    if unknown:
        raise PKIError("keys/passphrases name instances that are not planned: %s" % ", ".join(unknown))
    for unit in units:
        if not _UNIT_NAME.match(unit):
            raise PKIError("units: %r is not a systemd unit file name" % unit)
    return names


class HostFiles:
    """Idempotent file operations recording what changed (check mode: decide only, write nothing)."""

    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.changed = []

    def _record(self, path):
        self.changed.append(path)
        return True

    def directory(self, path, mode, uid, gid):
        if not os.path.lexists(path):
            if not self.check_mode:
                ensure_dir(path, mode, uid, gid)
            return self._record(path)
        if os.path.islink(path) or not os.path.isdir(path):
            raise PKIError("%s should be a folder but is another kind of file: move it away and run again" % path)
        if self.check_mode:
            return False
        return fix_attributes(path, mode, uid, gid) and self._record(path)

    def file(self, path, data, mode, uid, gid):
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise PKIError("%s should be a regular file but is a link or folder: move it away and run again" % path)
        current = read_bytes(path) if os.path.isdir(os.path.dirname(path)) else None
        if current == data:
            info = os.stat(path)
            if (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, uid, gid):
                return False
            if not self.check_mode:
                fix_attributes(path, mode, uid, gid)
            return self._record(path)
        if not self.check_mode:
            write_file(path, data, mode, uid, gid)
        return self._record(path)

    def absent(self, path):
        if not os.path.lexists(path):
            return False
        if os.path.isdir(path) and not os.path.islink(path):
            raise PKIError("%s should be a file but is a folder: remove it by hand" % path)
        if not self.check_mode:
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
        return self._record(path)

    def tls_set(self, folder, files, gid):
        """FILES: [(dest, data, mode, uid, gid)]. Deploys them into FOLDER/tls.d/ID and points FOLDER/tls
        there. Keeps the previous set (rollback) and removes older ones. Returns True when the set changed."""
        ident = set_id({dest: sha256(data) for dest, data, _m, _u, _g in files})
        versions = posixpath.join(folder, VERSIONS)
        version = posixpath.join(versions, ident)
        link = posixpath.join(folder, LINK)
        target = posixpath.join(VERSIONS, ident)
        changed = self.directory(versions, 0o750, 0, gid)
        changed = self.directory(version, 0o750, 0, gid) or changed
        for dest, data, mode, uid, fgid in files:
            path = posixpath.join(version, dest)
            if self.check_mode and not os.path.isdir(version):
                changed = self._record(path)
                continue
            changed = self.file(path, data, mode, uid, fgid) or changed
        previous = None
        if os.path.islink(link):
            previous = os.readlink(link)
        elif os.path.isdir(link):
            # Version 0.1 kept the files in a plain folder: it becomes the previous set, tls.d/legacy.
            previous = posixpath.join(VERSIONS, LEGACY)
            if os.path.lexists(posixpath.join(folder, previous)):
                raise PKIError("%s is a folder and %s exists too: keep one of them and run again"
                               % (link, posixpath.join(folder, previous)))
            if not self.check_mode:
                os.rename(link, posixpath.join(folder, previous))
        elif os.path.lexists(link):
            raise PKIError("%s should be a link to a TLS set but is a file: move it away and run again" % link)
        if previous != target:
            if not self.check_mode:
                temp = posixpath.join(folder, ".%s.new" % LINK)
                if os.path.lexists(temp):
                    os.unlink(temp)
                os.symlink(target, temp)
                os.replace(temp, link)
                fsync_dir(folder)
            changed = self._record(link)
        self._prune(versions, ident, previous)
        return changed

    def _prune(self, versions, current, previous):
        """Remove the version folders but the current and the previous one (the newest other when the
        link did not move)."""
        if not os.path.isdir(versions):
            return
        keep = {current}
        if previous and previous != posixpath.join(VERSIONS, current):
            keep.add(posixpath.basename(previous))
        else:
            others = [(os.lstat(posixpath.join(versions, entry)).st_mtime, entry) for entry in os.listdir(versions)
                      if entry != current and os.path.isdir(posixpath.join(versions, entry))]
            if others:
                keep.add(max(others)[1])
        for entry in sorted(os.listdir(versions)):
            path = posixpath.join(versions, entry)
            if entry in keep or entry.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
                continue
            if not self.check_mode:
                for child in os.listdir(path):
                    os.unlink(posixpath.join(path, child))
                os.rmdir(path)
            self._record(path)


def loaded_diff(folder, state_file, files=LOADED_FILES):
    """The files of FILES (relative to FOLDER) that differ from the checksums an instance's unit recorded at
    start in STATE_FILE (the launcher rewrites the TLS lines when it reloads); None when there is no record."""
    recorded = read_bytes(state_file)
    if recorded is None:
        return None
    sums = {}
    for line in recorded.decode("utf-8", "replace").splitlines():
        match = _LOADED_LINE.match(line)
        if match:
            sums[match.group(2)] = match.group(1)
    differ = []
    for name in files:
        data = read_bytes(posixpath.join(folder, name))
        if data is None and name in OPTIONAL_FILES and name not in sums:
            continue
        if sums.get(name) != sha256(data or b"\0"):
            differ.append(name)
    return differ


def loaded_differs(folder, state_file, files=LOADED_FILES):
    """Why an instance runs with other files than FOLDER holds: None when the checksums its unit recorded
    at start (STATE_FILE) match the deployed files, else a reason."""
    differ = loaded_diff(folder, state_file, files)
    if differ is None:
        return "not running (no record of what it loaded)"
    return "runs with another %s than deployed" % differ[0] if differ else None


def converge(params, check_mode=False):
    """Bring the host to PARAMS (the module's options). Returns the module result (no file contents)."""
    # The host's programs first (option prerequisites): a missing one fails here, before anything is written.
    require(params.get("prerequisites"))
    instances, units = params["instances"], params["units"] or {}
    keys = params["keys"] or {}
    secrets = {name: secret_env(str(value)) for name, value in (params["passphrases"] or {}).items()
               if value not in (None, "")}
    programs = params.get("programs") or {}
    restart_programs = params.get("restart_programs") or []
    names = validate(instances, units, keys, secrets, programs, restart_programs)
    config_dir, unit_dir, state_dir = params["config_dir"], params["unit_dir"], params["state_dir"]
    uid, gid = params["uid"], params["gid"]
    files = HostFiles(check_mode)
    reasons = {name: [] for name in names}
    # What a reload takes (option reload): only the TLS set changed. The launcher loads it into a new context.
    reload_reasons = {name: [] for name in names}
    tls_reload = params.get("reload", True)
    socket_restart = []
    daemon_reload = False

    shared = [params["restart_all"]] if params["restart_all"] else []
    for folder in sorted({posixpath.dirname(path) for path in programs}):
        if not os.path.isdir(folder):  # created 0755 root; an existing folder (say /usr/local/bin) is left as it is
            files.directory(folder, 0o755, 0, 0)
    for path in sorted(programs):
        if files.file(path, _bytes(programs[path]), 0o755, 0, 0) and path in restart_programs:
            shared.append("%s changed" % path)
    files.directory(config_dir, 0o750, 0, gid)
    for unit, content in sorted(units.items()):
        if files.file(posixpath.join(unit_dir, unit), _bytes(content), 0o644, 0, 0):
            daemon_reload = True
            if unit == SERVICE_UNIT:
                for name in names:
                    reasons[name].append("unit %s changed" % unit)
            if unit == SOCKET_UNIT:
                socket_restart = list(names)
    for entry in instances:
        name = entry["name"]
        folder = posixpath.join(config_dir, name)
        files.directory(folder, 0o750, 0, gid)
        for dest, field in (("config.yaml", "config"), ("env", "env")):
            if files.file(posixpath.join(folder, dest), _bytes(entry[field]), 0o640, 0, gid):
                reasons[name].append("%s changed" % dest)
        secret = posixpath.join(folder, "secret.env")
        if name in secrets:
            if files.file(secret, _bytes(secrets[name]), 0o640, 0, gid):
                reasons[name].append("key passphrase changed")
        elif files.absent(secret):
            reasons[name].append("key passphrase removed")
        tls = [("server.key", _bytes(keys[name]), 0o600, uid, gid),
               ("server.crt", _bytes(entry["cert"]), 0o644, 0, 0),
               ("ca.crt", _bytes(entry["ca"]), 0o644, 0, 0)]
        if entry.get("crl"):
            tls.append(("ca.crl", _bytes(entry["crl"]), 0o644, 0, 0))
        if files.tls_set(folder, tls, gid):
            (reload_reasons if tls_reload else reasons)[name].append("TLS files changed")
        dropin = socket_dropin_dir(unit_dir, name)
        files.directory(dropin, 0o755, 0, 0)
        if files.file(posixpath.join(dropin, DROPIN), _bytes(entry["socket"]), 0o644, 0, 0):
            daemon_reload = True
            if name not in socket_restart:
                socket_restart.append(name)
        if not reasons[name]:
            # What it runs with: a reload takes a TLS set it does not run with yet; an instance that does not
            # run (no record) or runs with another config restarts.
            state = posixpath.join(state_dir, name, "loaded.sha256")
            why = loaded_differs(folder, state)
            tls_only = why and tls_reload and all(path.startswith(LINK + "/")
                                                  for path in loaded_diff(folder, state) or [""])
            if why and not tls_only:
                reasons[name].append(why)
            elif why and not reload_reasons[name]:
                reload_reasons[name].append(why)
    for name in names:
        reasons[name].extend(why for why in shared if why not in reasons[name])
        if reasons[name]:  # a restart loads the TLS set too
            reasons[name].extend(reload_reasons.pop(name))
    absent = sorted(entry for entry in (os.listdir(config_dir) if os.path.isdir(config_dir) else [])
                    if entry not in names and not entry.startswith(".")
                    and os.path.isdir(posixpath.join(config_dir, entry)))
    return {
        "changed": bool(files.changed),
        "changed_paths": files.changed,
        "restart": [name for name in names if reasons[name]],
        "reload": [name for name in names if reload_reasons.get(name)],
        "reasons": {name: why for name, why in list(reasons.items()) + list(reload_reasons.items()) if why},
        "socket_restart": socket_restart,
        "daemon_reload": daemon_reload,
        "absent": absent,
    }
