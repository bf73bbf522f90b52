#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: certificate
short_description: Ensure a leaf private key and certificate signed by a CA
version_added: 0.1.0
description:
  - Ensures one private key and one certificate signed by the CA made by M(mcpgateway.mtls.ca), with the
    extensions strict verifiers need (basicConstraints C(CA:FALSE) critical, keyUsage digitalSignature
    (plus keyEncipherment for RSA) critical, extendedKeyUsage serverAuth or clientAuth, SANs, key identifiers).
  - The certificate is (re-)issued when it or the key is missing or unreadable, when it expires within
    O(renew_before_days), when it is not signed by the current CA, when the key does not match it, when
    O(subject), O(sans), O(key_type)/O(key_size) or O(profile) changed, when the key should be encrypted
    but is not, or when O(force=true). Otherwise the files are left untouched.
  - The key is written before the certificate; if a run is interrupted between the two, the next run sees
    a key that does not match the certificate and re-issues.
  - For many certificates use M(mcpgateway.mtls.certificate_set), which loads the CA once and makes the keys in parallel.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.files
  - mcpgateway.mtls._common
  - mcpgateway.mtls._common.signer
attributes:
  check_mode:
    support: full
    details:
      - Reports what would be issued and why; writes nothing, creates no folder and no lock file.
  diff_mode:
    support: full
    details:
      - Shows subject, SANs, not_after, serial and key type before and after, never key material.
  idempotent:
    support: full
options:
  key_path:
    description:
      - Path of the private key.
    type: path
    required: true
  cert_path:
    description:
      - Path of the certificate.
    type: path
    required: true
  ca_copy_path:
    description:
      - Where to write a copy of the CA certificate (for example C(ca.crt) beside the certificate).
      - Rewritten only when its content differs from the CA certificate.
    type: path
  subject:
    description:
      - Subject, in openssl form C(/CN=name/O=org/OU=unit).
    type: str
    required: true
  sans:
    description:
      - Subject alternative names, C(DNS:name) or C(IP:address); bare names and addresses are detected.
      - Compared as a set (order and duplicates do not matter).
    type: list
    elements: str
  profile:
    description:
      - V(server) sets extendedKeyUsage serverAuth, V(client) clientAuth.
    type: str
    choices: [server, client]
    default: server
  passphrase:
    description:
      - Passphrase that encrypts the private key.
    type: str
  keep_key:
    description:
      - When the certificate is re-issued, reuse the existing key if it can be read and has the requested
        type and size. By default a new key is made on every re-issue.
    type: bool
    default: false
  force:
    description:
      - Re-issue now, whatever the state.
    type: bool
    default: false
seealso:
  - module: mcpgateway.mtls.ca
  - module: mcpgateway.mtls.certificate_set
  - module: mcpgateway.mtls.certificate_info
"""

EXAMPLES = r"""
- name: Ensure the gateway client certificate
  mcpgateway.mtls.certificate:
    ca_cert: "{{ pki_dir }}/ca/ca.crt"
    ca_key: "{{ pki_dir }}/ca/ca.key"
    key_path: "{{ pki_dir }}/gateway/client.key"
    cert_path: "{{ pki_dir }}/gateway/client.crt"
    ca_copy_path: "{{ pki_dir }}/gateway/ca.crt"
    profile: client
    subject: /CN=mcp-gateway-client/O=MCPGateway/OU=Gateway

- name: Ensure a plugin server certificate with an encrypted ECDSA key
  mcpgateway.mtls.certificate:
    ca_cert: /srv/pki/ca/ca.crt
    ca_key: /srv/pki/ca/ca.key
    key_path: /srv/pki/plugins/guard/server.key
    cert_path: /srv/pki/plugins/guard/server.crt
    ca_copy_path: /srv/pki/plugins/guard/ca.crt
    subject: /CN=mcp-plugin-guard/O=MCPGateway/OU=Plugins
    sans: [guard, mcp-plugin-guard, localhost, "IP:10.0.0.5"]
    key_type: ecdsa
    passphrase: "{{ vault_plugin_key_passphrase }}"
"""

RETURN = r"""
key_path:
  description: Absolute path of the key.
  returned: success
  type: str
  sample: /srv/pki/gateway/client.key
cert_path:
  description: Absolute path of the certificate.
  returned: success
  type: str
  sample: /srv/pki/gateway/client.crt
ca_copy_path:
  description: Absolute path of the CA copy, or null.
  returned: success
  type: str
  sample: /srv/pki/gateway/ca.crt
reissued:
  description: Whether the certificate was (or in check mode would be) issued.
  returned: success
  type: bool
  sample: true
reasons:
  description: Why the certificate was (or would be) issued. Empty when it is left alone.
  returned: success
  type: list
  elements: str
  sample: ["SANs changed: DNS:a -> DNS:a, DNS:b"]
new_key:
  description: Whether a new key was (or would be) generated.
  returned: success
  type: bool
  sample: true
key_changed:
  description: Whether the key file was (or would be) written.
  returned: success
  type: bool
  sample: true
cert_changed:
  description: Whether the certificate file was (or would be) written.
  returned: success
  type: bool
  sample: true
ca_copy_changed:
  description: Whether the CA copy was (or would be) written.
  returned: success
  type: bool
  sample: false
attributes_changed:
  description: Existing files whose mode or owner was (or would be) corrected.
  returned: success
  type: list
  elements: str
  sample: []
backup_files:
  description: Backups made of replaced files.
  returned: success
  type: list
  elements: str
  sample: []
subject:
  description: Subject of the certificate after the run.
  returned: success
  type: str
  sample: /CN=mcp-gateway-client/O=MCPGateway/OU=Gateway
sans:
  description: SANs of the certificate after the run.
  returned: success
  type: list
  elements: str
  sample: ["DNS:guard", "DNS:mcp-plugin-guard", "DNS:localhost"]
not_after:
  description: End of validity, ISO 8601 UTC (predicted in check mode).
  returned: success
  type: str
  sample: "2029-02-27T01:02:03Z"
serial:
  description: Serial number in hexadecimal; null for a certificate that check mode would issue.
  returned: success
  type: str
  sample: 634801529db2d32d10b78d852d94f50383fdf53e
key_type:
  description: Key type and size of the certificate, for example C(rsa-4096).
  returned: success
  type: str
  sample: ecdsa-256
profile:
  description: The requested profile.
  returned: success
  type: str
  sample: client
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import (
    leaf_argument_spec,
    lock_argument_spec,
    signer_argument_spec,
)
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_leaves
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY


def main():
    argument_spec = leaf_argument_spec()
    argument_spec.update(signer_argument_spec())
    argument_spec.update(lock_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    item = {key: params[key] for key in leaf_argument_spec()}
    try:
        specs = validate_leaves([item], label="certificate")
        outcome = ensure_certificates(specs, params["ca_cert"], params["ca_key"], params["ca_passphrase"],
                                      check_mode=module.check_mode, workers=1, lock_timeout=params["lock_timeout"],
                                      ca_trust=params["ca_trust"])
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    for warning in outcome["warnings"]:
        module.warn(warning)
    result = outcome["certificates"][0]
    if module._diff and result["changed"]:
        cert_path = result["cert_path"]
        result["diff"] = {"before": outcome["diff"]["before"][cert_path], "after": outcome["diff"]["after"][cert_path]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
