#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ca_rotation
short_description: Rotate a CA with overlapping trust, phase by phase
version_added: 0.2.0
description:
  - Keeps the state of a CA rotation in the CA folder O(ca_dir) (the folder of C(ca.key) and C(ca.crt)),
    so that a rotation can run unattended, stop at any point and resume.
  - V(started) creates the incoming CA in C(ca_dir/next/) and enters phase C(trust), in which every host
    is to trust both CAs while the leaves are still signed by the current one. V(reissue) enters phase
    C(reissue), in which the leaves are signed by the new CA and hosts still trust both. V(promoted) makes
    the new CA the current one (C(ca_dir/ca.key), C(ca_dir/ca.crt)) and keeps the old one in
    C(ca_dir/retired/FINGERPRINT/); trust bundles then hold the new CA only.
  - Phases only move forward, one at a time. Moving on is the caller's decision, to be taken after the
    previous phase was rolled out to every host (playbook C(mcpgateway.mtls.rotate) does this).
  - The result says which CA signs leaves now (RV(signing_cert), RV(signing_key)) and which further CA
    certificates belong in the trust bundles (RV(trust_extra)); pass them to M(mcpgateway.mtls.certificate_set).
  - The promotion is made of atomic renames and writes; when it was interrupted, any later call finishes it.
    Nothing is deleted except the emptied C(next/) folder and the state file C(rotation.json).
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.files
  - mcpgateway.mtls._common
attributes:
  check_mode:
    support: full
    details:
      - Reports the phase that would be entered; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  ca_dir:
    description:
      - The CA folder, holding C(ca.key) and C(ca.crt) (the upstream tree's C(certs/mcp/ca)).
    type: path
    required: true
  state:
    description:
      - V(current) only reports (and finishes an interrupted promotion).
      - V(started) starts a rotation unless one is in progress.
      - V(reissue) moves from phase trust to phase reissue.
      - V(promoted) ends the rotation, the new CA takes over and the old one is retired. No change when no rotation is in progress.
    type: str
    choices: [current, started, reissue, promoted]
    default: current
  subject:
    description:
      - Subject of the new CA (with O(state=started)).
    type: str
    default: /CN=ContextForge-CA/O=ContextForge/OU=Plugins
  passphrase:
    description:
      - Passphrase that encrypts the new CA key (with O(state=started)).
    type: str
seealso:
  - module: mcpgateway.mtls.ca
  - module: mcpgateway.mtls.certificate_set
"""

EXAMPLES = r"""
- name: Start a CA rotation (phase trust)
  mcpgateway.mtls.ca_rotation:
    ca_dir: "{{ pki_dir }}/ca"
    state: started
  register: rotation

- name: Sign the leaves and fill the trust bundles as the phase requires
  mcpgateway.mtls.certificate_set:
    ca_cert: "{{ rotation.signing_cert }}"
    ca_key: "{{ rotation.signing_key }}"
    ca_trust: "{{ rotation.trust_extra }}"
    certificates: "{{ leaves }}"

- name: After the rollout, move on to phase reissue
  mcpgateway.mtls.ca_rotation:
    ca_dir: "{{ pki_dir }}/ca"
    state: reissue
"""

RETURN = r"""
in_progress:
  description: Whether a CA rotation is in progress (after this call).
  returned: success
  type: bool
  sample: true
phase:
  description: V(trust), V(reissue), or null when no rotation is in progress.
  returned: success
  type: str
  sample: trust
signing_cert:
  description: The CA certificate that signs leaves in this phase.
  returned: success
  type: str
  sample: /srv/pki/ca/ca.crt
signing_key:
  description: The CA key that signs leaves in this phase.
  returned: success
  type: str
  sample: /srv/pki/ca/ca.key
trust_extra:
  description: Further CA certificates every trust bundle must hold in this phase.
  returned: success
  type: list
  elements: str
  sample: [/srv/pki/ca/next/ca.crt]
old_fingerprint:
  description: SHA-256 fingerprint of the CA being replaced, or null.
  returned: success
  type: str
  sample: "3B:92:9F:..."
new_fingerprint:
  description: SHA-256 fingerprint of the incoming CA, or null.
  returned: success
  type: str
  sample: "A1:07:5C:..."
started:
  description: When the rotation started (ISO 8601 UTC), or null.
  returned: success
  type: str
  sample: "2026-12-02T04:00:00Z"
actions:
  description: What was (or, in check mode, would be) done.
  returned: success
  type: list
  elements: str
  sample: ["phase trust -> reissue"]
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import common_argument_spec, lock_argument_spec
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import DEFAULT_CA_SUBJECT, validate_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._rotation import STATES, Layout, rotation
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY


def main():
    argument_spec = {
        "ca_dir": {"type": "path", "required": True},
        "state": {"type": "str", "choices": list(STATES), "default": "current"},
        "subject": {"type": "str", "default": DEFAULT_CA_SUBJECT},
        "passphrase": {"type": "str", "no_log": True},
    }
    argument_spec.update(common_argument_spec())
    argument_spec.update(lock_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    try:
        layout = Layout(params["ca_dir"])
        # Validated whatever the state: a bad option is an error now, not at the next rotation.
        spec = validate_ca(dict({k: v for k, v in params.items() if k not in ("ca_dir", "state")},
                                key_path=layout.next_key, cert_path=layout.next_cert))
        result = rotation(layout, params["state"], spec if params["state"] == "started" else None,
                          check_mode=module.check_mode, lock_timeout=params["lock_timeout"])
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="CA rotation in %s: %s" % (os.path.abspath(params["ca_dir"]), exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
