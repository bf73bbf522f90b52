#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: python_env
short_description: Keep a service venv holding a set of packages and the collection's host package, pip only on change
version_added: 0.2.0
description:
  - The one install mechanism of roles P(mcpgateway.mtls.plugin_server#role) and P(mcpgateway.mtls.gateway#role).
  - The action plugin builds the collection's host package (C(mcp-mtls-host), the launcher and the probe) into a
    reproducible wheel on the controller and adds it to O(requirements), pinned to its exact version.
  - A stamp in the venv records what was installed; a run whose stamp matches costs one remote call and runs
    neither Python nor pip. Changes made by hand inside the venv are not seen; remove
    C(O(path)/.mcp-requirements.sha256) to make pip run again.
  - When pip must run and the host's O(wheelhouse) does not hold the wanted wheels, the action sends one archive
    with the wheels of O(local_wheelhouse) and the host package, unpacks it into O(wheelhouse) and installs.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
attributes:
  action:
    description: An action plugin builds the host package and sends the wheels when they are needed.
    support: full
  check_mode:
    support: full
    details:
      - Reports whether pip would run; sends, unpacks and installs nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  path:
    description: The venv's folder; created with O(python) when it has no C(bin/python).
    type: path
    required: true
  python:
    description: The interpreter that creates the venv.
    type: str
    default: python3
  min_python:
    description:
      - The oldest Python O(python) may be (C(MAJOR.MINOR)). Checked, with the venv module and C(ensurepip), before the
        venv is created; the module then fails naming the fix.
    type: str
    default: "3.9"
  requirements:
    description: What pip installs (requirement specifiers, for example C(cpex==0.1.4)).
    type: list
    elements: str
    required: true
  wheelhouse:
    description: The folder on the host that holds the shipped wheels (replaced as a whole when they change).
    type: path
    required: true
  local_wheelhouse:
    description:
      - A folder of wheels on the controller to ship with the host package (air-gapped sites). Empty = only the host
        package is shipped and the rest comes from the index.
      - Handled by the action plugin.
    type: path
    default: ""
  no_index:
    description: Install from the wheelhouse only (C(pip --no-index)).
    type: bool
    default: false
  index_url:
    description: The package index pip uses (C(--index-url)); empty = pip's default.
    type: str
    default: ""
  extra_args:
    description: More pip arguments, split like a shell would.
    type: str
    default: ""
  environment:
    description: Environment variables for pip (for example proxies). Never logged, not part of the stamp.
    type: dict
    default: {}
  wheelhouse_stamp:
    description: Set by the action plugin (the fingerprint of the wheels it ships); do not set it.
    type: str
  archive:
    description: Set by the action plugin (the archive it sent); do not set it.
    type: path
notes:
  - Needs C(python3-venv) (Debian, Ubuntu) on the host to create the venv.
seealso:
  - module: mcpgateway.mtls.plugin_host
  - module: mcpgateway.mtls.gateway_host
"""

EXAMPLES = r"""
- name: Install cpex and a plugin into the plugin venv
  mcpgateway.mtls.python_env:
    path: /opt/mcp-plugins/venv
    python: /usr/bin/python3
    requirements: [cpex==0.1.4, cpex-output-length-guard==0.1.2]
    wheelhouse: /opt/mcp-plugins/wheelhouse
  register: venv
"""

RETURN = r"""
stamp:
  description: The fingerprint of what the venv holds (or would hold).
  returned: success
  type: str
reasons:
  description: Why pip ran (or would run).
  returned: changed
  type: list
  elements: str
host_package:
  description: The host package's version, installed with the requirements.
  returned: success
  type: str
  sample: 1.0.0+g0123456789ab
wheelhouse_needed:
  description: Internal, between the module and its action plugin.
  returned: never
  type: bool
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._venv import converge


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "python": {"type": "str", "default": "python3"},
            "min_python": {"type": "str", "default": "3.9"},
            "requirements": {"type": "list", "elements": "str", "required": True},
            "wheelhouse": {"type": "path", "required": True},
            "local_wheelhouse": {"type": "path", "default": ""},
            "no_index": {"type": "bool", "default": False},
            "index_url": {"type": "str", "default": ""},
            "extra_args": {"type": "str", "default": ""},
            "environment": {"type": "dict", "default": {}, "no_log": True},
            "wheelhouse_stamp": {"type": "str"},
            "archive": {"type": "path"},
        },
        supports_check_mode=True,
    )
    if not re.match(r"^[0-9]+\.[0-9]+$", module.params["min_python"]):
        module.fail_json(msg="min_python must be MAJOR.MINOR such as 3.12, got %r" % module.params["min_python"])

    def run_command(argv, **kwargs):
        # A missing program raises OSError (reported by the caller, naming the fix) instead of failing here.
        return module.run_command(argv, handle_exceptions=False, **kwargs)

    try:
        result = converge(module.params, run_command, module.check_mode)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot converge the venv %s: %s: %s"
                         % (module.params["path"], exc.filename or "", exc.strerror or exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
