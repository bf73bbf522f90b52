#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: verify_host
short_description: Run every mTLS check of one host in one call and return a record per check
version_added: 0.2.0
description:
  - The host side of role P(mcpgateway.mtls.verify#role) and of the rollout gates. Runs, on the target, every check that
    O(files), O(local_plugins), O(remote_plugins), O(ca_key_search), O(same_content), O(gateway_loaded),
    O(gateway_service), O(frontdoor), O(tool_call) and O(probe) ask for, in one process, so that verifying a host
    costs one remote round trip whatever the number of plugins.
  - Each check returns a record C(check), C(target), C(ok), C(expected), C(seen). The module never fails because a
    check failed; the caller asserts on RV(checks). It fails only on bad input.
  - A negative check (a refusal) only counts after its positive twin, the same request with the gateway's
    certificate, got an HTTP answer on the same address; a refused connection, a name that does not resolve or a
    client-side error is never a refusal.
  - With O(ca_files) (on the controller) it instead returns RV(ca_identities), the public keys and key digests
    that O(ca_key_search) compares with.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.INFO_MODULE
options:
  host:
    description: The name the host-wide records carry as C(target) (role verify passes the inventory name).
    type: str
    default: host
  files:
    description: Deployed files whose owner and mode must match (C(file_owner_mode)); a symlink never matches.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      owner:
        description: The owner it must have; V(null) for any owner.
        type: str
      mode:
        description: The mode it must have, four octal digits.
        type: str
        required: true
  local_plugins:
    description:
      - Plugins served by this host, as entries of the plugin plan (the keys V(name), V(port) and V(health_port) are
        read; others are ignored). Checks that the health port answers HTTP 200 on loopback and listens on loopback
        only, and that the mTLS port listens.
    type: list
    elements: dict
    default: []
  wait:
    description: Seconds the health endpoint of each of O(local_plugins) may take to answer (instances just restarted).
    type: int
    default: 0
  loaded_from:
    description:
      - The config folder of the plugin instances (C(plugin_server_config_dir)). Also checks that each of O(local_plugins)
        runs with exactly the deployed files (C(runs_with_deployed_files)), that is, the checksums its unit recorded at start in
        O(loaded_state_dir)/NAME/loaded.sha256 match the files in O(loaded_from)/NAME.
    type: path
  loaded_state_dir:
    description: Where the units record what each instance loaded (and the launchers write their TLS metrics).
    type: path
    default: /run/mcp-plugins
  handshake_counters:
    description:
      - With O(loaded_from), make refused handshakes on each of O(local_plugins)'s mTLS port from this host (no
        client certificate, TLS 1.1, plain HTTP, and with O(foreign) a certificate of another CA) and check that the
        launcher counted each by its reason in O(loaded_state_dir)/NAME/tls.prom
        (C(mcp_plugin_tls_handshake_failures_total), check C(refused_handshakes_counted)).
    type: bool
    default: false
    version_added: 0.3.0
  same_content:
    description: Deployed files that must hold exactly given content (C(deployed_file_matches)), by SHA-256.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      sha256:
        description: The SHA-256 of the wanted content (hex), for example of the controller's copy.
        type: str
        required: true
      source:
        description: Where the wanted content is, for the record (for example the controller's path).
        type: str
        default: the controller's copy
  gateway_loaded:
    description:
      - The gateway service runs with exactly the deployed files (C(gateway_runs_with_deployed_files)), that is, the checksums
        its unit recorded at start match the files of O(gateway_loaded.config_dir).
    type: dict
    suboptions:
      record:
        description: The C(sha256sum) output the unit wrote at start.
        type: path
        required: true
      config_dir:
        description: The gateway's config folder (the record's paths are relative to it).
        type: path
        required: true
      files:
        description: The files it records, relative to O(gateway_loaded.config_dir).
        type: list
        elements: str
        required: true
  remote_plugins:
    description:
      - Plugins this host (a gateway host) calls, as entries of the plugin plan (the keys V(name), V(url) and
        V(health_port) are read; V(health_port) defaults to the URL's port + 1000). Each URL, as the gateway's
        plugins.yaml has it, must resolve, complete an mTLS request with O(client), refuse a client without a
        certificate, with O(foreign)'s certificate, TLS 1.1 and weak TLS 1.2 suites, present a certificate this client
        refuses for another name, and keep the health port unreachable from here.
    type: list
    elements: dict
    default: []
  client:
    description: Paths of the gateway's deployed client files on this host. Required with O(remote_plugins).
    type: dict
    suboptions:
      cert:
        description: Client certificate.
        type: path
        required: true
      key:
        description: Client key (unencrypted, as the gateway loads it).
        type: path
        required: true
      ca:
        description: The CA bundle the server is verified against.
        type: path
        required: true
  foreign:
    description:
      - A valid client certificate of another CA (PEM contents), for the check C(foreign_ca_cert_refused). Written to a
        private temporary folder for the checks and removed before the module returns. Never logged, not even in the
        host's journal.
    type: dict
    suboptions:
      cert:
        description: The certificate.
        type: str
        required: true
      key:
        description: Its private key. Never logged.
        type: str
        required: true
      ca:
        description: The foreign CA certificate; the certificate must verify against it as a TLS client.
        type: str
  revoked_server:
    description:
      - With O(probe) and O(revoked_server_name), a plugin's revoked server certificate (C(playbooks/revoke.yml)). The
        probe serves it on loopback under the plugin's name, and the gateway's plugin client (with its CRL) must refuse
        it (C(revoked_server_cert_refused)). Written to a temporary folder that only O(probe.user) can read, removed
        before the module returns.
    type: dict
    version_added: 0.3.0
    suboptions:
      cert:
        description: The revoked certificate (PEM).
        type: str
        required: true
      key:
        description: Its private key (PEM, unencrypted). Never logged.
        type: str
        required: true
  revoked_server_name:
    description: The plugin whose certificate O(revoked_server) is.
    type: str
    version_added: 0.3.0
  revoked_client:
    description:
      - A client certificate of this PKI that was revoked (C(playbooks/revoke.yml), PEM contents). With
        O(remote_plugins), each plugin must refuse it where the gateway's certificate succeeds
        (C(revoked_client_cert_refused)). Written to a private temporary folder and removed before the module returns.
    type: dict
    version_added: 0.3.0
    suboptions:
      cert:
        description: The revoked certificate, PEM.
        required: true
        type: str
      key:
        description: Its private key, PEM and unencrypted (the check presents it). Never logged.
        required: true
        type: str
  ca_key_search:
    description:
      - Search every regular file of the host (but the pseudo file systems and O(ca_key_search.exclude)) for a private
        key of a CA of the controller, by content digest and by public key (C(no_ca_private_key_on_host)).
    type: dict
    suboptions:
      spki:
        description: SHA-256 of each CA certificate's SubjectPublicKeyInfo (RV(ca_identities)).
        type: list
        elements: str
        default: []
      key_digests:
        description: SHA-256 of each CA key's base64 body (RV(ca_identities)).
        type: list
        elements: str
        default: []
      exclude:
        description: Folders not to search.
        type: list
        elements: path
        default: []
      root:
        description: Where the search starts.
        type: path
        default: /
  gateway_service:
    description: The gateway's unit must be active and its current run must have registered every plugin.
    type: dict
    suboptions:
      unit:
        description: The unit.
        type: str
        required: true
      plugins:
        description: The plugin names it must have registered (and their number, C(Plugin manager initialized with N)).
        type: list
        elements: str
        required: true
      health_url:
        description: Also require this URL to answer HTTP 200 with JSON C(status) C(healthy).
        type: str
      wait:
        description: Seconds to wait for O(gateway_service.health_url) to become healthy (a gateway that was just started).
        type: int
        default: 0
      tls:
        description:
          - For an https URL - paths C(ca) (the bundle that verifies the gateway's server certificate), and C(cert)
            and C(key) of a client certificate when the gateway's front door asks for one.
        type: dict
        version_added: 0.3.0
        suboptions:
          ca:
            description: The CA bundle.
            type: path
            required: true
          cert:
            description: The client certificate.
            type: path
          key:
            description: Its (unencrypted) key.
            type: path
  tool_call:
    description:
      - A real MCP C(tools/call) through the gateway on this host (module_utils C(_toolcall)). A throwaway REST tool on
        this host's loopback is registered with the gateway's API, called through C(/mcp) and removed again.
      - The JWT is signed with the gateway's C(JWT_SECRET_KEY) from O(tool_call.env_files) for its platform admin.
        Records C(gateway_tool_call_reaches_the_tool), and C(gateway_tool_call_answered) with O(tool_call.expect_result).
      - The gateway must allow loopback destinations (C(SSRF_ALLOW_LOCALHOST=true)).
    type: dict
    suboptions:
      url:
        description: The gateway's base URL, e.g. C(http://127.0.0.1:4444).
        type: str
        required: true
      env_files:
        description: The gateway's environment files (its JWT settings and secret, later files win).
        type: list
        elements: path
        required: true
      arguments:
        description: The arguments of the call.
        type: dict
        required: true
      expect:
        description: What the tool must receive, after the plugins' pre-invoke hooks (default O(tool_call.arguments)).
        type: dict
      expect_result:
        description: A text the answer must contain, after the plugins' post-invoke hooks (empty, no such record).
        type: str
        default: ""
      tls:
        description:
          - For an https URL - paths C(ca) (the bundle that verifies the gateway's server certificate), and C(cert)
            and C(key) of a client certificate when the gateway's front door asks for one.
        type: dict
        version_added: 0.3.0
        suboptions:
          ca:
            description: The CA bundle.
            type: path
            required: true
          cert:
            description: The client certificate.
            type: path
          key:
            description: Its (unencrypted) key.
            type: path
  revoked_frontdoor_client:
    description:
      - A revoked MCP client certificate (role pki's C(client.NAME), playbooks/revoke.yml) that O(frontdoor) must refuse
        (record C(frontdoor_revoked_client_cert_refused)). Written to a private temporary folder for the check and removed.
      - Given as a whole as one never-logged option.
    type: dict
    version_added: 0.3.0
    suboptions:
      cert:
        description: The certificate (PEM).
        type: str
        required: true
      key:
        description: Its unencrypted key (PEM).
        type: str
        required: true
  frontdoor:
    description:
      - The gateway's front door (its API over HTTPS, role gateway's C(gateway_https)), checked from this host at
        O(frontdoor.url) (its C(/health)). Records C(frontdoor_*) - an HTTP answer with the client certificate, the
        server's chain verified strictly against O(frontdoor.ca) for the URL's host; without a certificate refused
        (O(frontdoor.client_auth=require)) or served (V(optional)); O(foreign)'s certificate refused; the revoked
        client of O(revoked_client) refused; a wrong host name refused by this client; TLS 1.1 and weak TLS 1.2 suites
        refused where TLS 1.2 succeeds.
    type: dict
    version_added: 0.3.0
    suboptions:
      url:
        description: The front door's health URL, e.g. C(https://127.0.0.1:4444/health).
        type: str
        required: true
      client_auth:
        description: What the front door asks of clients.
        type: str
        choices: [require, optional]
        default: require
      ca:
        description: The bundle that verifies the gateway's server certificate.
        type: path
        required: true
      cert:
        description: A client certificate the front door accepts (the gateway's own); without it only V(optional) is checked.
        type: path
      key:
        description: Its (unencrypted) key.
        type: path
  probe:
    description: Run the gateway's mTLS probe (cpex's client with the deployed config) as the gateway's user.
    type: dict
    suboptions:
      command:
        description: The probe command.
        type: path
        required: true
      user:
        description: The user it runs as (through C(runuser)).
        type: str
        required: true
      plugins:
        description: The plugin names its answers must cover.
        type: list
        elements: str
        required: true
      trust_check:
        description:
          - Also run the probe's C(--trust-check) (check C(plugin_client_trusts_only_ca_bundle)). A server signed by a
            throwaway CA that only the system store offers (C(SSL_CERT_FILE)) must be refused by the gateway's plugin
            client, while Python's default context accepts it.
        type: bool
        default: false
        version_added: 0.3.0
  ca_files:
    description:
      - On the controller only, and alone. The CA certificates and keys of the PKI tree (current, incoming, retired).
        Returns RV(ca_identities) and runs no check.
    type: list
    elements: path
    default: []
notes:
  - Needs C(openssl), C(curl) and C(ss) on the host for the checks that use them; a missing tool fails its check.
"""

EXAMPLES = r"""
- name: Verify a gateway host
  mcpgateway.mtls.verify_host:
    host: "{{ inventory_hostname }}"
    remote_plugins:
      - {name: guard, url: "https://plug1.example.com:8443/mcp", health_port: 9443}
    client:
      cert: /etc/mcpgateway/tls/client.crt
      key: /etc/mcpgateway/tls/client.key
      ca: /etc/mcpgateway/tls/ca.crt
    probe: {command: /usr/local/bin/mcp-mtls-probe, user: mcpgateway, plugins: [guard]}
  register: __checks

- name: Assert that every check passed
  ansible.builtin.assert:
    that: __checks.checks | rejectattr('ok') | list | length == 0
"""

RETURN = r"""
checks:
  description: One record per check, in the order they ran.
  returned: success
  type: list
  elements: dict
  sample: [{"check": "mtls_port_listening", "target": "guard", "ok": true, "expected": "port 8443 listens",
            "seen": "['0.0.0.0']"}]
failed_checks:
  description: How many records have C(ok) false (the task itself does not fail for them).
  returned: success
  type: int
ca_identities:
  description: With O(ca_files), C(spki) and C(key_digests) to pass to O(ca_key_search).
  returned: when O(ca_files) is set
  type: dict
"""

import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _keysearch, _tlscheck, _toolcall
from ansible_collections.mcpgateway.mtls.plugins.module_utils._hoststate import loaded_differs
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import read_bytes
from ansible_collections.mcpgateway.mtls.plugins.module_utils._verify import probe_records

PROBE_TIMEOUT = 300


def file_records(expectations):
    """One file_owner_mode record per expected file (lstat: a symlink in place of the file never matches)."""
    records = []
    for item in expectations:
        owner, mode = item.get("owner"), item["mode"]
        try:
            info = os.lstat(item["path"])
        except OSError:
            info = None
        if info is None:
            seen, ok = "missing", False
        else:
            try:
                name = pwd.getpwuid(info.st_uid).pw_name
            except KeyError:
                name = str(info.st_uid)
            have = "%04o" % stat.S_IMODE(info.st_mode)
            seen = "%s %s" % (name, have) if stat.S_ISREG(info.st_mode) else "%s %s (not a regular file)" % (name, have)
            ok = stat.S_ISREG(info.st_mode) and (owner is None or name == owner) and have == mode
        records.append(_tlscheck.check("file_owner_mode", ok, "%s %s" % (owner or "any owner", mode), seen))
        records[-1]["target"] = item["path"]
    return records


def write_foreign(folder, foreign):
    """The foreign material as files in FOLDER (made 0700 when missing; files 0600): {cert, key, ca} paths."""
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    paths = {}
    for part in ("cert", "key", "ca"):
        if foreign.get(part):
            paths[part] = os.path.join(folder, part + ".pem")
            fd = os.open(paths[part], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(foreign[part])
    return paths


def run_probe(probe, extra=()):
    try:
        argv = ["runuser", "-u", probe["user"], "--", probe["command"]] + (["--trust-check"] if probe.get("trust_check") else [])
        proc = subprocess.run(argv + list(extra), capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        return 124, "", "the probe did not end within %d s" % PROBE_TIMEOUT
    except OSError as exc:
        return 127, "", "cannot run runuser: %s" % exc


def revoked_server_records(probe, name, revoked):
    """The probe's revoked_server_cert_refused check: the REVOKED certificate and key of plugin NAME, in a temporary
    folder that only the probe's user can read, served on loopback to the client context."""
    folder = tempfile.mkdtemp(prefix="mcp-revoked-")
    try:
        paths = write_foreign(folder, {"cert": revoked["cert"], "key": revoked["key"]})
        account = pwd.getpwnam(probe["user"])
        for path in [folder] + list(paths.values()):
            os.chown(path, account.pw_uid, account.pw_gid)
        rc, out, err = run_probe(dict(probe, trust_check=False), ["--no-hook", "--plugin", name,
                                                                  "--revoked-cert", paths["cert"], "--revoked-key", paths["key"]])
    except (KeyError, OSError) as exc:
        rc, out, err = 127, "", str(exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    found = []
    for text in out.splitlines():
        try:
            line = json.loads(text) if text.startswith("{") else None
        except ValueError:
            line = None
        if isinstance(line, dict) and line.get("check") == "revoked_server_cert_refused":
            found.append(line)
    if not found:
        return [{"check": "revoked_server_cert_refused", "target": name, "ok": False,
                 "expected": "the probe checks the revoked server certificate", "seen": "exit %s %s" % (rc, err[-300:])}]
    return [{key: found[0].get(key) for key in ("check", "target", "ok", "expected", "seen")}]


def plugin_problems(entries, keys, option):
    """What is wrong with the plugin entries of OPTION: each needs KEYS; ports are whole numbers."""
    problems = []
    for number, entry in enumerate(entries):
        missing = [key for key in keys if entry.get(key) in (None, "")]
        if missing:
            problems.append("%s[%d] (%s) lacks %s" % (option, number, entry.get("name", "no name"), ", ".join(missing)))
        for key in ("port", "health_port"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not str(value).isdigit() or not 0 < int(value) < 65536):
                problems.append("%s[%d] (%s): %s must be a port number 1-65535, got %r" % (
                    option, number, entry.get("name", "no name"), key, value))
    return problems


def local_records(params, foreign):
    """The records of PARAMS['local_plugins'] (FOREIGN: paths of the foreign client material, or None)."""
    records = []
    for plugin in params["local_plugins"]:
        name = plugin["name"]
        records += [dict(item, target=name)
                    for item in _tlscheck.local(int(plugin["port"]), int(plugin["health_port"]), params["wait"])]
        if params["loaded_from"]:
            why = loaded_differs(os.path.join(params["loaded_from"], name),
                                 os.path.join(params["loaded_state_dir"], name, "loaded.sha256"))
            records.append(dict(_tlscheck.check("runs_with_deployed_files", why is None, "the files of %s/%s" % (
                params["loaded_from"], name), why or "the deployed files"), target=name))
        if params["handshake_counters"]:
            records.append(dict(_tlscheck.counted(
                int(plugin["port"]), os.path.join(params["loaded_from"], name, "tls", "ca.crt"),
                os.path.join(params["loaded_state_dir"], name, "tls.prom"), foreign), target=name))
    return records


def run_checks(params):
    """Every check PARAMS ask for, as records (host-wide records carry PARAMS['host'] as target)."""
    host = params["host"]
    records = file_records(params["files"])
    folder = tempfile.mkdtemp(prefix="mcp-verify-")
    try:
        foreign = write_foreign(folder, params["foreign"]) if params["foreign"] else None
        revoked = None
        if params["revoked_client"]:
            revoked = write_foreign(os.path.join(folder, "revoked"), params["revoked_client"])
        records += local_records(params, foreign)
        if params["remote_plugins"]:
            for plugin in params["remote_plugins"]:
                checks = _tlscheck.remote(plugin["url"], params["client"], foreign,
                                          int(plugin["health_port"]) if plugin.get("health_port") else None,
                                          revoked)
                records += [dict(item, target=plugin["name"]) for item in checks]
        if params["frontdoor"] is not None:
            door = params["frontdoor"]
            # The front door trusts the gateway's CA too: a revoked gateway certificate is refused there as well.
            door_revoked = revoked
            if params["revoked_frontdoor_client"]:
                door_revoked = write_foreign(os.path.join(folder, "revoked-client"), params["revoked_frontdoor_client"])
            records += [dict(item, target="%s front door" % host) for item in _tlscheck.frontdoor(
                door["url"], {"ca": door["ca"], "cert": door["cert"], "key": door["key"]}, foreign, door_revoked,
                door["client_auth"])]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if params["ca_key_search"] is not None:
        search = params["ca_key_search"]
        found = _keysearch.ca_key(search["spki"], search["key_digests"], search["exclude"], search["root"])
        records += [dict(item, target=host) for item in found]
    for item in params["same_content"]:
        data = read_bytes(item["path"])
        seen = "missing" if data is None else hashlib.sha256(data).hexdigest()
        records.append(dict(_tlscheck.check("deployed_file_matches", seen == item["sha256"].lower(), "%s (sha256 %s)" % (
            item["source"], item["sha256"][:16]), seen if data is None else "sha256 %s" % seen[:16]), target=item["path"]))
    if params["gateway_loaded"] is not None:
        loaded = params["gateway_loaded"]
        why = loaded_differs(loaded["config_dir"], loaded["record"], tuple(loaded["files"]))
        records.append(dict(_tlscheck.check("gateway_runs_with_deployed_files", why is None, "the files of %s" % loaded[
            "config_dir"], why or "the deployed files"), target=host))
    if params["gateway_service"] is not None:
        service = params["gateway_service"]
        records += [dict(item, target=host) for item in _tlscheck.gateway_service(
            service["unit"], service["plugins"], service["health_url"], service["wait"], service["tls"])]
    if params["tool_call"] is not None:
        call = params["tool_call"]
        records += [dict(item, target=host) for item in _toolcall.run(
            call["url"].rstrip("/"), call["env_files"], call["arguments"], call["expect"], call["expect_result"],
            tls=call["tls"])]
    if params["probe"] is not None:
        rc, out, err = run_probe(params["probe"])
        records += probe_records(rc, out, err, params["probe"]["plugins"], host)
        if params["revoked_server"] and params["revoked_server_name"]:
            records += revoked_server_records(params["probe"], params["revoked_server_name"], params["revoked_server"])
    return records


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "host"},
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True}, "owner": {"type": "str"},
                "mode": {"type": "str", "required": True}}},
            "local_plugins": {"type": "list", "elements": "dict", "default": []},
            "wait": {"type": "int", "default": 0},
            "loaded_from": {"type": "path"},
            "loaded_state_dir": {"type": "path", "default": "/run/mcp-plugins"},
            "handshake_counters": {"type": "bool", "default": False},
            "same_content": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True}, "sha256": {"type": "str", "required": True},
                "source": {"type": "str", "default": "the controller's copy"}}},
            "gateway_loaded": {"type": "dict", "options": {
                "record": {"type": "path", "required": True}, "config_dir": {"type": "path", "required": True},
                "files": {"type": "list", "elements": "str", "required": True}}},
            "remote_plugins": {"type": "list", "elements": "dict", "default": []},
            "client": {"type": "dict", "options": {
                "cert": {"type": "path", "required": True}, "key": {"type": "path", "required": True, "no_log": False},
                "ca": {"type": "path", "required": True}}},
            # no_log on the whole option: AnsibleModule logs a dict option's str() to the journal, where a
            # suboption's no_log value (a multi-line key) no longer matches and would be written in clear.
            "revoked_client": {"type": "dict", "no_log": True, "options": {
                "cert": {"type": "str", "required": True},
                "key": {"type": "str", "required": True, "no_log": True}}},
            "foreign": {"type": "dict", "no_log": True, "options": {
                "cert": {"type": "str", "required": True}, "key": {"type": "str", "required": True, "no_log": True},
                "ca": {"type": "str"}}},
            "ca_key_search": {"type": "dict", "no_log": False, "options": {
                "spki": {"type": "list", "elements": "str", "default": []},
                "key_digests": {"type": "list", "elements": "str", "default": [], "no_log": False},
                "exclude": {"type": "list", "elements": "path", "default": []},
                "root": {"type": "path", "default": "/"}}},
            "gateway_service": {"type": "dict", "options": {
                "unit": {"type": "str", "required": True},
                "plugins": {"type": "list", "elements": "str", "required": True},
                "health_url": {"type": "str"}, "wait": {"type": "int", "default": 0},
                "tls": {"type": "dict", "options": {
                    "ca": {"type": "path", "required": True}, "cert": {"type": "path"},
                    "key": {"type": "path", "no_log": False}}}}},
            "tool_call": {"type": "dict", "options": {
                "url": {"type": "str", "required": True},
                "env_files": {"type": "list", "elements": "path", "required": True},
                "arguments": {"type": "dict", "required": True}, "expect": {"type": "dict"},
                "expect_result": {"type": "str", "default": ""},
                "tls": {"type": "dict", "options": {
                    "ca": {"type": "path", "required": True}, "cert": {"type": "path"},
                    "key": {"type": "path", "no_log": False}}}}},
            "frontdoor": {"type": "dict", "options": {
                "url": {"type": "str", "required": True},
                "client_auth": {"type": "str", "choices": ["require", "optional"], "default": "require"},
                "ca": {"type": "path", "required": True}, "cert": {"type": "path"},
                "key": {"type": "path", "no_log": False}}},
            "probe": {"type": "dict", "options": {
                "command": {"type": "path", "required": True}, "user": {"type": "str", "required": True},
                "plugins": {"type": "list", "elements": "str", "required": True},
                "trust_check": {"type": "bool", "default": False}}},
            # no_log as a whole, apart from the plugin's name (a no_log value is masked wherever it shows): the key is
            # multi-line, and AnsibleModule writes a dict option's str() to the journal, where a suboption's no_log
            # value would no longer match.
            "revoked_server": {"type": "dict", "no_log": True, "options": {
                "cert": {"type": "str", "required": True},
                "key": {"type": "str", "required": True, "no_log": True}}},
            "revoked_server_name": {"type": "str"},
            # no_log as a whole (see revoked_client).
            "revoked_frontdoor_client": {"type": "dict", "no_log": True, "options": {
                "cert": {"type": "str", "required": True},
                "key": {"type": "str", "required": True, "no_log": True}}},
            "ca_files": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    problems = plugin_problems(params["local_plugins"], ("name", "port", "health_port"), "local_plugins")
    problems += plugin_problems(params["remote_plugins"], ("name", "url"), "remote_plugins")
    problems += ["files[%d] (%s): mode must be four octal digits such as 0600, got %r" % (number, item["path"], item["mode"])
                 for number, item in enumerate(params["files"]) if not re.match(r"^[0-7]{4}$", item["mode"])]
    if problems:
        module.fail_json(msg="; ".join(problems))
    if params["handshake_counters"] and params["local_plugins"] and not params["loaded_from"]:
        module.fail_json(msg="handshake_counters needs loaded_from: the folder of the instances (their CA bundles)")
    door = params["frontdoor"]
    if door is not None and (bool(door["cert"]) != bool(door["key"]) or (door["client_auth"] == "require" and not door["cert"])):
        module.fail_json(msg="frontdoor: cert and key come together, and client_auth require needs them (a client "
                             "certificate the front door accepts)")
    if params["remote_plugins"] and not params["client"]:
        module.fail_json(msg="remote_plugins needs client: the paths of the gateway's client certificate, key and CA bundle")
    if params["ca_files"]:
        others = [name for name in ("files", "local_plugins", "remote_plugins", "same_content") if params[name]]
        others += [name for name in ("client", "ca_key_search", "gateway_service", "gateway_loaded", "probe", "foreign")
                   if params[name] is not None]
        if others:
            module.fail_json(msg="ca_files runs alone, on the controller; remove %s or make a second call" % ", ".join(others))
        try:
            module.exit_json(changed=False, checks=[], failed_checks=0, ca_identities=_keysearch.ca_identities(params["ca_files"]))
        except (OSError, ValueError) as exc:
            module.fail_json(msg="cannot read the CA files: %s" % exc)
    records = run_checks(params)
    module.exit_json(changed=False, checks=records, failed_checks=sum(1 for item in records if not item["ok"]))


if __name__ == "__main__":
    main()
