#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: plugin_host
short_description: Converge every plugin instance of a plugin server host in one call
version_added: 0.2.0
description:
  - Writes the whole per-plugin state of a host that runs external plugin servers (role
    P(mcpgateway.mtls.plugin_server#role)'s deploy step) in one process, so that a run costs the same number of
    remote round trips whatever the number of plugins.
  - For each instance V(NAME) in O(instances) it ensures O(config_dir)/NAME/ (root, group O(group), 0750),
    C(config.yaml) and C(env) (0640), C(secret.env) (0640, only for instances in O(passphrases); removed otherwise),
    the TLS set O(config_dir)/NAME/tls, a link to C(tls.d/ID/) holding C(server.key) (owner O(user), 0600),
    C(server.crt), C(ca.crt) and with O(instances[].crl) C(ca.crl) (root, 0644), and the socket drop-in
    O(unit_dir)/mcp-plugin@NAME.socket.d/listen.conf. It also writes the shared unit files O(units).
  - Every file is replaced atomically; a TLS set is switched by replacing one link, so key, certificate and CA
    bundle change together. The previous set is kept for a rollback; older ones are removed.
  - It returns which instances must restart and why; an instance also restarts when the files its unit
    recorded at start (O(state_dir)/NAME/loaded.sha256) differ from the deployed ones, for example after a run
    that was interrupted before its restart.
  - With O(reload), an instance whose TLS set alone changed (or runs with another TLS set than deployed) is
    returned in RV(reload) instead. C(systemctl reload) makes its launcher load the set into a new TLS context
    for every new handshake, without a restart. A change of anything else restarts it (and that loads the set).
  - With O(start), it reloads systemd when a unit changed, then brings every instance's socket, service and
    health timer up (enabled and active) in at most six C(systemctl) calls, whatever the number of instances.
  - Private keys and passphrases are taken only through O(keys) and O(passphrases), which are never logged, and
    are never returned.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.files
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change and which instances would restart or start; writes nothing and runs only
        C(systemctl show). A missing program of O(prerequisites) fails it as it fails a real run.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  instances:
    description: The plugin instances of this host (the host's part of the plugin plan), rendered.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Plugin name (a DNS label); the folder and the systemd instance name.
        type: str
        required: true
      config:
        description: Content of C(config.yaml).
        type: str
        required: true
      env:
        description: Content of C(env), the unit's environment file.
        type: str
        required: true
      socket:
        description: Content of the socket drop-in C(listen.conf) (the instance's mTLS port).
        type: str
        required: true
      transport:
        description:
          - V(grpc) for an instance that binds its port itself (grpcio cannot take a socket from systemd). Its socket is
            not started, and is stopped when it still holds the port.
        type: str
        default: http
        choices: [http, grpc]
      cert:
        description: The server certificate (PEM).
        type: str
        required: true
      ca:
        description: The CA bundle clients are verified against (PEM).
        type: str
        required: true
      crl:
        description:
          - The CRLs of the CAs of O(instances[].ca) (PEM), written to C(ca.crl) in the TLS set. The launcher then checks
            every client certificate against its CA's CRL. Empty, the set has no CRL and none is checked.
        type: str
        default: ""
        version_added: 0.3.0
  keys:
    description: The server private key (PEM) of each instance, by name. Never logged.
    type: dict
    required: true
  passphrases:
    description:
      - The passphrase of each instance's encrypted key, by name; written to C(secret.env) as
        C(PLUGINS_SERVER_SSL_KEYFILE_PASSWORD). Never logged. An instance not named here, or named with an empty
        passphrase, gets no C(secret.env).
    type: dict
    default: {}
  units:
    description: Shared unit files to write into O(unit_dir), file name to content.
    type: dict
    default: {}
  programs:
    description:
      - Programs the instances run, by absolute path, written as root with mode 0755 before the instances (for
        example the launcher and the health check). Their folders must exist.
      - Never logged (a program's source would otherwise be copied into the host's journal on every run).
    type: dict
    default: {}
  restart_programs:
    description: Paths of O(programs) whose change restarts every instance (reason C(PATH changed)).
    type: list
    elements: path
    default: []
  restart_all:
    description:
      - When not empty, every instance restarts, with this text as the reason (for example because the
        virtual environment changed).
    type: str
    default: ""
  user:
    description: The service user, owner of each C(server.key).
    type: str
    required: true
  group:
    description: The service group, group of the folders and files.
    type: str
    required: true
  config_dir:
    description: Folder of the instances' folders.
    type: path
    default: /etc/mcp-plugins
  unit_dir:
    description: Folder of the systemd unit files.
    type: path
    default: /etc/systemd/system
  state_dir:
    description: Runtime folder where each instance's unit records the checksums of what it loaded.
    type: path
    default: /run/mcp-plugins
  reload:
    description:
      - Return instances whose TLS set alone changed in RV(reload) (to be reloaded) instead of RV(restart).
      - V(false) restarts them, as before version 0.3.0.
    type: bool
    default: true
    version_added: 0.3.0
  start:
    description: Reload systemd when a unit changed and enable and start every instance's socket, service and timer.
    type: bool
    default: true
  prerequisites:
    description:
      - Programs that must already be installed on the host (for example V(curl), V(ss), V(sha256sum),
        V(systemctl)), by name, looked up in the module's E(PATH), then in C(/usr/sbin) and C(/sbin); or by absolute
        path. Not the O(programs) this module writes.
      - Checked first, also in check mode. When any is missing the module fails before it changes anything, with
        one message naming every missing program and the package that provides it on Debian/Ubuntu and on
        RHEL/Fedora.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
"""

EXAMPLES = r"""
- name: Converge the plugin instances
  mcpgateway.mtls.plugin_host:
    user: mcp-plugin
    group: mcp-plugin
    instances:
      - name: guard
        config: "{{ lookup('ansible.builtin.template', 'config.yaml.j2') }}"
        env: "{{ lookup('ansible.builtin.template', 'env.j2') }}"
        socket: "[Socket]\nListenStream=0.0.0.0:8443\n"
        cert: "{{ lookup('ansible.builtin.file', pki_dir ~ '/plugins/guard/server.crt', rstrip=false) }}"
        ca: "{{ lookup('ansible.builtin.file', pki_dir ~ '/plugins/guard/ca.crt', rstrip=false) }}"
    keys:
      guard: "{{ lookup('ansible.builtin.file', pki_dir ~ '/plugins/guard/server.key', rstrip=false) }}"
    # Fails before any change, naming the packages, when one of them is not installed.
    prerequisites: [curl, ss, sha256sum, systemctl]
  register: __host

- name: Restart what changed
  ansible.builtin.systemd_service:
    name: "mcp-plugin@{{ item }}.service"
    state: restarted
  loop: "{{ __host.restart }}"
"""

RETURN = r"""
restart:
  description: Instances that must restart (their files changed or they run with other files), without those
    this call just started.
  returned: success
  type: list
  elements: str
  sample: [guard]
reload:
  description: Instances whose TLS set alone changed, to be reloaded (C(systemctl reload)), without those this
    call just started. Empty when O(reload) is false.
  returned: success
  type: list
  elements: str
  sample: [guard]
  version_added: 0.3.0
reasons:
  description: Why each instance in RV(restart) or RV(reload) (and each one just started) must restart or reload.
  returned: success
  type: dict
  sample: {"guard": ["TLS files changed"]}
socket_restart:
  description: Instances whose socket must restart (its port changed), without sockets this call just started.
  returned: success
  type: list
  elements: str
  sample: []
started:
  description: Instances whose service this call started (they need no restart).
  returned: success
  type: list
  elements: str
  sample: []
daemon_reload:
  description: Whether a unit file changed (systemd was reloaded when O(start) is true).
  returned: success
  type: bool
changed_paths:
  description: Paths that were (or in check mode would be) written, linked or removed. Never their contents.
  returned: success
  type: list
  elements: str
absent:
  description: Folders in O(config_dir) of instances that are not in O(instances) (left for the caller to remove).
  returned: success
  type: list
  elements: str
systemctl:
  description: The systemctl calls made, with what they were for.
  returned: success
  type: dict
  sample: {"enable": [], "start": [], "reset": [], "handover": [], "calls": ["systemctl show"]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._hoststate import converge
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import resolve_group, resolve_owner
from ansible_collections.mcpgateway.mtls.plugins.module_utils._units import ensure_running

_INSTANCE = {
    "name": {"type": "str", "required": True},
    "config": {"type": "str", "required": True},
    "env": {"type": "str", "required": True},
    "socket": {"type": "str", "required": True},
    "transport": {"type": "str", "default": "http", "choices": ["http", "grpc"]},
    "cert": {"type": "str", "required": True},
    "ca": {"type": "str", "required": True},
    "crl": {"type": "str", "default": ""},
}


def main():
    module = AnsibleModule(
        argument_spec={
            "instances": {"type": "list", "elements": "dict", "required": True, "options": _INSTANCE},
            "keys": {"type": "dict", "required": True, "no_log": True},
            "passphrases": {"type": "dict", "default": {}, "no_log": True},
            "units": {"type": "dict", "default": {}},
            "programs": {"type": "dict", "default": {}, "no_log": True},
            "restart_programs": {"type": "list", "elements": "path", "default": []},
            "restart_all": {"type": "str", "default": ""},
            "user": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "config_dir": {"type": "path", "default": "/etc/mcp-plugins"},
            "unit_dir": {"type": "path", "default": "/etc/systemd/system"},
            "state_dir": {"type": "path", "default": "/run/mcp-plugins"},
            "reload": {"type": "bool", "default": True},
            "start": {"type": "bool", "default": True},
            "prerequisites": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    try:
        try:
            params["uid"] = resolve_owner(params["user"], "user")
            params["gid"] = resolve_group(params["group"], "group")
        except PKIError:
            if not module.check_mode:
                raise
            # Check mode on a new host: the service user is created by the same run, not yet.
            params["uid"] = params["gid"] = None
        result = converge(params, check_mode=module.check_mode)
        units = {"calls": []}
        if params["start"]:
            names = [entry["name"] for entry in params["instances"]]
            units = ensure_running(names, module.run_command, module.check_mode, result["daemon_reload"],
                                   [entry["name"] for entry in params["instances"] if entry["transport"] == "grpc"])
            result["restart"] = [name for name in result["restart"] if name not in units["started"]]
            result["reload"] = [name for name in result["reload"] if name not in units["started"]]
            result["socket_restart"] = [name for name in result["socket_restart"]
                                        if name not in units["sockets_started"]]
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot converge the plugin host: %s: %s" % (exc.filename or "", exc.strerror or exc))
    result["started"] = units.get("started", [])
    result["systemctl"] = {key: units[key] for key in ("calls", "handover", "reset", "enable", "start") if key in units}
    result["changed"] = result["changed"] or any(units.get(key) for key in ("handover", "reset", "enable", "start"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
