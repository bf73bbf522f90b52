# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The deployed state of a gateway host converged in one pass (module gateway_host).

Files: the client TLS set CONFIG_DIR/tls -> tls.d/ID/ (client.key, client.crt, ca.crt, switched by one
link, like a plugin instance's set) and a list of plain files (the probe, plugins.yaml, the env file,
the unit), each written atomically, optionally checked by a command before it replaces the old one.

Decision: whether the gateway must restart and why (a file it loads changed, or what it runs with - the
checksums its unit recorded at start - differs from what is deployed).
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import tempfile

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._hoststate import HostFiles, loaded_differs
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import fix_attributes, read_bytes
from ansible_collections.mcpgateway.mtls.plugins.module_utils._prereq import require

TLS_FILES = (("client.key", "key"), ("client.crt", "cert"), ("ca.crt", "ca"))
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


def _normalized_absolute(path):
    return isinstance(path, str) and posixpath.isabs(path) and posixpath.normpath(path) == path


def validate(params):
    """Check every input before anything is written; returns {path: content}. Raises PKIError naming the fix."""
    secrets = params.get("secrets") or {}
    for entry in params.get("generate") or []:
        if not _normalized_absolute(entry.get("path")) or not entry.get("argv"):
            raise PKIError("generate: %r needs a normalized absolute path and a command" % (entry.get("path"),))
    for entry in params.get("directories") or []:
        if not _normalized_absolute(entry.get("path")) or entry["path"] == "/":
            raise PKIError("directories: %r is not a normalized absolute path below /" % (entry.get("path"),))
    contents = {}
    for entry in params["files"]:
        path = entry.get("path")
        if not _normalized_absolute(path):
            raise PKIError("files: %r is not a normalized absolute path" % (path,))
        if path in contents:
            raise PKIError("files: %s is given twice" % path)
        given = entry.get("content") is not None
        if given == (path in secrets):
            raise PKIError("files: give the content of %s once, either in files[].content or (when it holds a "
                           "secret) in secrets" % path)
        contents[path] = entry["content"] if given else secrets[path]
        if not isinstance(contents[path], str):
            raise PKIError("files: the content of %s must be text" % path)
    unknown = sorted(set(secrets) - set(contents))
    if unknown:
        raise PKIError("secrets: %s is not a path of files (secrets only supply the content of files)"
                       % ", ".join(unknown))
    tls = params["tls"]
    if tls is not None:
        if "PRIVATE KEY" not in (tls.get("key") or ""):
            raise PKIError("tls.key is not a PEM private key (run the pki role first)")
        for field in ("cert", "ca"):
            text = tls.get(field) or ""
            if _PEM_CERT not in text or "PRIVATE KEY" in text:
                raise PKIError("tls.%s is not a PEM certificate without a key" % field)
        crl = tls.get("crl") or ""
        if crl and ("-----BEGIN X509 CRL-----" not in crl or "PRIVATE KEY" in crl):
            raise PKIError("tls.crl is not a PEM CRL (run the pki role first)")
        server_key, server_cert = tls.get("server_key") or "", tls.get("server_cert") or ""
        if bool(server_key) != bool(server_cert):
            raise PKIError("tls.server_key and tls.server_cert come together (the front door's key and certificate)")
        if server_key and "PRIVATE KEY" not in server_key:
            raise PKIError("tls.server_key is not a PEM private key (run the pki role first)")
        if server_cert and (_PEM_CERT not in server_cert or "PRIVATE KEY" in server_cert):
            raise PKIError("tls.server_cert is not a PEM certificate without a key")
        clients_ca = tls.get("clients_ca") or ""
        if bool(clients_ca) != bool(server_cert):
            raise PKIError("tls.clients_ca comes with tls.server_cert (the bundle the front door verifies clients with)")
        if clients_ca and (_PEM_CERT not in clients_ca or "PRIVATE KEY" in clients_ca):
            raise PKIError("tls.clients_ca is not a PEM certificate bundle without a key")
    loaded = params.get("loaded") or {}
    for name in loaded.get("files") or []:
        if posixpath.isabs(name) or ".." in name.split("/"):
            raise PKIError("loaded.files: %r must be a path inside config_dir" % name)
    return contents


def check_file(path, data, mode, uid, gid, command, run_command):
    """Run COMMAND (%s = a copy of DATA beside PATH, with PATH's mode and owner) before DATA replaces PATH.
    Returns a warning when the command's program is not there yet, None when the check passed."""
    argv = shlex.split(command)
    if not argv or not os.path.exists(argv[0]):
        return "%s was not checked: %s is not installed yet" % (path, argv[0] if argv else "(no command)")
    folder, name = posixpath.split(path)
    handle, temp = tempfile.mkstemp(prefix=".%s." % name, suffix=".check", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        fix_attributes(temp, mode, uid, gid)
        rc, out, err = run_command([arg.replace("%s", temp) for arg in argv])
    finally:
        os.unlink(temp)
    if rc != 0:
        detail = " ".join((err or out or "").split())[:600]
        raise PKIError("%s was not replaced: its check (%s) failed with rc %d: %s" % (path, command, rc, detail))
    return None


def generate(entry, run_command, check_mode):
    """Run ENTRY's command once, when its file is missing (a secret made on the host, never sent or shown).
    Returns True when the file is (or in check mode would be) created."""
    path = entry["path"]
    if os.path.lexists(path):
        return False
    if check_mode:
        return True
    rc, _out, _err = run_command(list(entry["argv"]))
    if rc != 0 or not os.path.isfile(path):
        # Neither output is shown: it may hold the secret.
        raise PKIError("generate: %s exited %d and %s; run it by hand to see why" % (
            entry["argv"][0], rc, "did not create %s" % path if rc == 0 else "its output is not shown (secret)"))
    return True


def _text(data):
    return None if data is None else data.decode("utf-8", "replace")


def converge(params, run_command, check_mode=False, diff=False):
    """Bring the host to PARAMS (the module's options, owners resolved to uid/gid). Returns the module result;
    with DIFF a before/after of each changed file whose content was given in the clear (never a secret's)."""
    # The host's programs first (option prerequisites): a missing one fails here, before anything is written.
    require(params.get("prerequisites"))
    contents = validate(params)
    host = HostFiles(check_mode)
    reasons, warnings, diffs = [], [], []
    config_dir = params["config_dir"]
    tls = params["tls"]
    for entry in params.get("directories") or []:
        host.directory(entry["path"], entry["mode"], entry["uid"], entry["gid"])
    for entry in params.get("generate") or []:
        if generate(entry, run_command, check_mode):
            host.changed.append(entry["path"])
            if entry.get("restart"):
                reasons.append("%s generated" % entry["path"])
    if tls is not None and not check_mode and not os.path.isdir(config_dir):
        raise PKIError("config_dir %s does not exist: create it before calling gateway_host" % config_dir)
    for path in contents:
        if not check_mode and not os.path.isdir(posixpath.dirname(path)):
            # (in check mode an earlier task of the same run may be about to create it)
            raise PKIError("files: the folder of %s does not exist: create it (role gateway's install step) "
                           "before calling gateway_host" % path)
    # The TLS set first: a check of plugins.yaml (cpex's loader) needs the files it names.
    if tls is not None:
        owners = {"client.key": (0o600, params["uid"], params["gid"]), "server.key": (0o600, params["uid"], params["gid"])}
        files = [(dest, tls[field].encode("utf-8")) + owners.get(dest, (0o644, 0, 0)) for dest, field in TLS_FILES]
        if tls.get("crl"):  # the CRLs of the bundle's CAs: the plugin client checks server certificates against them
            files.append(("ca.crl", tls["crl"].encode("utf-8"), 0o644, 0, 0))
        if tls.get("server_key"):  # the front door's (the host package's frontdoor serves them; MCP clients checked by ca.crt)
            files += [(dest, tls[field].encode("utf-8")) + owners.get(dest, (0o644, 0, 0))
                      for dest, field in (("server.key", "server_key"), ("server.crt", "server_cert"),
                                          ("clients-ca.crt", "clients_ca"))]
        if host.tls_set(config_dir, files, params["gid"]):
            reasons.append("TLS files changed")
    for entry in params["files"]:
        path = entry["path"]
        data = contents[path].encode("utf-8")
        mode, uid, gid = entry["mode"], entry["uid"], entry["gid"]
        folder = posixpath.dirname(path)
        current = read_bytes(path) if os.path.isdir(folder) else None
        if diff and current != data and entry.get("content") is not None:
            diffs.append({"before_header": path, "after_header": path, "before": _text(current) or "",
                          "after": contents[path]})
        if entry.get("validate") and not check_mode and current != data:
            warning = check_file(path, data, mode, uid, gid, entry["validate"], run_command)
            if warning:
                warnings.append(warning)
        if host.file(path, data, mode, uid, gid) and entry.get("restart"):
            reasons.append("%s changed" % path)
    loaded = params.get("loaded") or {}
    if not reasons and loaded.get("record") and os.path.exists(loaded["record"]):
        why = loaded_differs(config_dir, loaded["record"], tuple(loaded.get("files") or ()))
        if why:
            reasons.append(why)
    elif not reasons and loaded.get("record") and loaded.get("required"):
        # A gateway that runs without our unit: nothing recorded what it loaded.
        reasons.append("no record of what the gateway loaded (%s)" % loaded["record"])
    # Otherwise no record: the gateway does not run (starting it is the caller's part).
    result = {
        "changed": bool(host.changed),
        "changed_paths": host.changed,
        "restart": bool(reasons),
        "reasons": reasons,
        "warnings": warnings,
    }
    if params.get("unit"):
        result["unit_state"] = unit_state(params["unit"], run_command)
    if diffs:
        result["diff"] = diffs
    return result


def unit_state(unit, run_command):
    """ActiveState, LoadState and UnitFileState of UNIT ({} when systemctl cannot tell)."""
    systemctl = shutil.which("systemctl")
    if not systemctl:
        return {}
    rc, out, _err = run_command([systemctl, "show", unit, "-p", "ActiveState", "-p", "LoadState", "-p", "UnitFileState"])
    if rc != 0:
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
