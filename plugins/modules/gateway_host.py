#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: gateway_host
short_description: Converge the gateway side of a host (client TLS set, plugin config, env, unit, probe) in one call
version_added: 0.2.0
description:
  - Writes what role P(mcpgateway.mtls.gateway#role) deploys on a gateway host in one process, so that a run costs one
    remote round trip for it instead of one per file.
  - First the folders of O(directories), then the client TLS set O(config_dir)/tls, a link to C(tls.d/ID/) holding C(client.key) (owner O(user), group
    O(group), 0600), C(client.crt) and C(ca.crt) (root, 0644). Key, certificate and CA bundle change together when
    the link is replaced. The previous set is kept for a rollback; older ones are removed.
  - Then each of O(files), in their order, is replaced atomically. A file with O(files[].validate) is first
    written to a temporary copy beside it and checked with that command; when the check fails it is not replaced
    and the module fails with the command's output.
  - It returns whether the gateway must restart and why; the gateway also restarts when the files its unit
    recorded at start (O(loaded)) differ from the deployed ones, for example after a run that was interrupted
    before its restart. It restarts nothing itself.
  - The private key is taken only through O(tls.key), and secret file contents only through O(secrets); neither
    is ever logged or returned.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.files
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change and whether the gateway would restart; writes nothing and runs no check command.
        A missing program of O(prerequisites) fails it as it fails a real run.
  diff_mode:
    support: partial
    details:
      - A before and after of each changed file of O(files) whose content was given in O(files[].content); never of
        the TLS set or of O(secrets).
  idempotent:
    support: full
options:
  config_dir:
    description: The gateway's config folder; the TLS set is O(config_dir)/tls. It must exist.
    type: path
    default: /etc/mcpgateway
  user:
    description: The service user, owner of C(client.key).
    type: str
    required: true
  group:
    description: The service group, group of the TLS set's folders and of C(client.key).
    type: str
    required: true
  directories:
    description: Folders to create (with missing parents) or whose mode and owner to fix, in this order, first.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      mode:
        description: Mode, for example C(0750).
        type: raw
        default: "0755"
      owner:
        description: Owner.
        type: str
        default: root
      group:
        description: Group.
        type: str
        default: root
  generate:
    description:
      - Files made once on the host by a command (for example the gateway's secrets), after O(directories). The
        command runs only while its file is missing; its output is never logged or returned.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file the command creates.
        type: path
        required: true
      argv:
        description: The command and its arguments (not run in a shell).
        type: list
        elements: str
        required: true
      restart:
        description: Whether creating the file makes the gateway restart.
        type: bool
        default: false
  tls:
    description:
      - The client TLS set. Without it the TLS set is left alone.
      - Given as a whole as one never-logged option (the key and the certificates).
    type: dict
    suboptions:
      key:
        description: The client private key (PEM).
        type: str
        required: true
      cert:
        description: The client certificate (PEM).
        type: str
        required: true
      ca:
        description: The CA bundle plugin servers are verified against (PEM).
        type: str
        required: true
      crl:
        description:
          - The CRLs of the CAs of O(tls.ca) (PEM), written to C(ca.crl) in the TLS set. The plugin client (the host
            package's hook) then checks every plugin server's certificate against its CA's CRL. Empty, none is checked.
        type: str
        default: ""
        version_added: 0.3.0
      server_key:
        description:
          - The private key of the gateway's front door (PEM), written to C(server.key) (mode 0600, owner O(user)) in
            the TLS set. Only with O(tls.server_cert). Empty, the set has no front door files.
        type: str
        default: ""
        version_added: 0.3.0
      server_cert:
        description:
          - The certificate of the gateway's front door (PEM), written to C(server.crt) in the TLS set.
        type: str
        default: ""
        version_added: 0.3.0
      clients_ca:
        description:
          - The CA bundle the front door verifies MCP clients' certificates against (PEM), written to C(clients-ca.crt)
            in the TLS set, beside C(ca.crl), which must then hold the CRL of each of its CAs. Only with O(tls.server_cert).
        type: str
        default: ""
        version_added: 0.3.0
  files:
    description: Plain files to write, in this order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path; its folder must exist.
        type: path
        required: true
      content:
        description: The content. Leave it out when O(secrets) holds it.
        type: str
      mode:
        description: Mode, for example C(0640).
        type: raw
        default: "0644"
      owner:
        description: Owner.
        type: str
        default: root
      group:
        description: Group.
        type: str
        default: root
      restart:
        description: Whether a change of this file makes the gateway restart (reason C(PATH changed)).
        type: bool
        default: false
      validate:
        description:
          - A command run (not in a shell) before a changed file replaces the old one; C(%s) stands for a copy of
            the new content with the file's mode and owner. When the command's program does not exist yet the file
            is written unchecked and a warning says so.
        type: str
  secrets:
    description:
      - Contents of files that hold a secret (for example a key passphrase in the env file), by O(files[].path).
        Never logged or returned.
    type: dict
    default: {}
  unit:
    description: The gateway's unit, whose state is returned in RV(unit_state) (read only).
    type: str
  loaded:
    description:
      - What the running gateway loaded, recorded by its unit at start (or, for a gateway this collection does not run,
        by role gateway after its restart command).
    type: dict
    suboptions:
      record:
        description:
          - The C(sha256sum) output the unit wrote (paths relative to O(config_dir)). Missing = not running, unless
            O(loaded.required).
        type: path
        required: true
      required:
        description:
          - A missing record is a reason to restart (RV(reasons)), because the gateway runs but nothing recorded what it
            loaded (a gateway that this collection does not start).
        type: bool
        default: false
      files:
        description: The files it records, relative to O(config_dir).
        type: list
        elements: str
        required: true
  prerequisites:
    description:
      - Programs that must already be installed on the host (for example V(openssl), V(runuser), V(sha256sum)), by
        name, looked up in the module's E(PATH), then in C(/usr/sbin) and C(/sbin); or by absolute path.
      - Checked first, also in check mode. When any is missing the module fails before it changes anything, with
        one message naming every missing program and the package that provides it on Debian/Ubuntu and on
        RHEL/Fedora.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
seealso:
  - module: mcpgateway.mtls.plugin_host
"""

EXAMPLES = r"""
- name: Converge the gateway side
  mcpgateway.mtls.gateway_host:
    user: mcpgateway
    group: mcpgateway
    tls:
      key: "{{ lookup('ansible.builtin.file', 'certs/mcp/gateway/client.key', rstrip=false) }}"
      cert: "{{ lookup('ansible.builtin.file', 'certs/mcp/gateway/client.crt', rstrip=false) }}"
      ca: "{{ lookup('ansible.builtin.file', 'certs/mcp/gateway/ca.crt', rstrip=false) }}"
    files:
      - path: /etc/mcpgateway/plugins.yaml
        content: "{{ lookup('ansible.builtin.template', 'plugins.yaml.j2') }}"
        group: mcpgateway
        mode: "0640"
        restart: true
    # Fails before any change, naming the packages, when one of them is not installed.
    prerequisites: [openssl, runuser, sha256sum]
  register: __gateway

- name: Restart the gateway
  ansible.builtin.systemd_service:
    name: mcpgateway.service
    state: restarted
  when: __gateway.restart
"""

RETURN = r"""
restart:
  description: Whether the gateway must restart.
  returned: success
  type: bool
reasons:
  description: Why it must restart.
  returned: success
  type: list
  elements: str
  sample: ["TLS files changed", "/etc/mcpgateway/plugins.yaml changed"]
unit_state:
  description: C(ActiveState), C(LoadState) and C(UnitFileState) of O(unit), as C(systemctl show) gives them (empty when it
    cannot tell).
  returned: when O(unit) is given
  type: dict
  sample: {"ActiveState": "active", "LoadState": "loaded", "UnitFileState": "enabled"}
changed_paths:
  description: Paths that were (or in check mode would be) written, linked or removed. Never their contents.
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._gatewaystate import converge
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import parse_mode, resolve_group, resolve_owner


def _ids(module, owner, group, what):
    """uid and gid; in check mode on a new host the service user may not exist yet (None: would change)."""
    try:
        return resolve_owner(owner, what + " owner"), resolve_group(group, what + " group")
    except PKIError:
        if not module.check_mode:
            raise
        return None, None


def main():
    module = AnsibleModule(
        argument_spec={
            "config_dir": {"type": "path", "default": "/etc/mcpgateway"},
            "user": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            # no_log as a whole: AnsibleModule logs a dict option's str() to the host's journal, where a
            # suboption's no_log value (a multi-line key) no longer matches and would be written in clear.
            "tls": {"type": "dict", "no_log": True, "options": {
                "key": {"type": "str", "required": True, "no_log": True},
                "cert": {"type": "str", "required": True},
                "ca": {"type": "str", "required": True},
                "crl": {"type": "str", "default": ""},
                "server_key": {"type": "str", "default": "", "no_log": True},
                "server_cert": {"type": "str", "default": ""},
                "clients_ca": {"type": "str", "default": ""},
            }},
            "directories": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "mode": {"type": "raw", "default": "0755"},
                "owner": {"type": "str", "default": "root"},
                "group": {"type": "str", "default": "root"},
            }},
            "generate": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "argv": {"type": "list", "elements": "str", "required": True},
                "restart": {"type": "bool", "default": False},
            }},
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "content": {"type": "str"},
                "mode": {"type": "raw", "default": "0644"},
                "owner": {"type": "str", "default": "root"},
                "group": {"type": "str", "default": "root"},
                "restart": {"type": "bool", "default": False},
                "validate": {"type": "str"},
            }},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "unit": {"type": "str"},
            "loaded": {"type": "dict", "options": {
                "record": {"type": "path", "required": True},
                "required": {"type": "bool", "default": False},
                "files": {"type": "list", "elements": "str", "required": True},
            }},
            "prerequisites": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    try:
        params["uid"], params["gid"] = _ids(module, params["user"], params["group"], "user/group")
        directories = []
        for entry in params["directories"]:
            entry = dict(entry, mode=parse_mode(entry["mode"], "directories[].mode of %s" % entry["path"]))
            entry["uid"], entry["gid"] = _ids(module, entry["owner"], entry["group"], entry["path"])
            directories.append(entry)
        params["directories"] = directories
        files = []
        for entry in params["files"]:
            entry = dict(entry, mode=parse_mode(entry["mode"], "files[].mode of %s" % entry["path"]))
            entry["uid"], entry["gid"] = _ids(module, entry["owner"], entry["group"], entry["path"])
            files.append(entry)
        params["files"] = files
        result = converge(params, module.run_command, module.check_mode, module._diff)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot converge the gateway host: %s: %s" % (exc.filename or "", exc.strerror or exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
