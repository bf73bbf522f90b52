#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ca
short_description: Ensure a CA private key and self-signed CA certificate
version_added: 0.1.0
description:
  - Creates a CA private key and a self-signed CA certificate that strict verifiers accept
    (basicConstraints C(CA:TRUE) critical with pathlen 0, keyUsage C(keyCertSign,cRLSign) critical,
    subject and authority key identifiers, SHA-256, random serial).
  - An existing CA key is never replaced, unless O(regenerate=always). A CA key that cannot be opened
    (corrupt, encrypted without O(passphrase), wrong passphrase) or that does not match the CA
    certificate is an error naming the file.
  - The CA certificate is renewed with the same key when it expires within O(renew_before_days), when
    O(subject) or O(valid_days) changed (unless O(keep_validity)), or when it lacks the extensions above (for example a CA made by
    the upstream Makefile). Leaves signed by the old certificate stay valid, as the name and key are the same.
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
      - Reports what would be created or renewed; writes nothing, creates no folder and no lock file.
  diff_mode:
    support: full
    details:
      - Shows subject, not_after, serial and key type before and after, never key material.
  idempotent:
    support: partial
    details:
      - Idempotent unless O(regenerate=always), which makes a new CA on every run.
options:
  key_path:
    description:
      - Path of the CA private key. Its folder holds the lock file C(.lock).
    type: path
    required: true
  cert_path:
    description:
      - Path of the CA certificate.
    type: path
    required: true
  subject:
    description:
      - Subject of the CA certificate, in openssl form C(/CN=name/O=org/OU=unit).
    type: str
    default: /CN=ContextForge-CA/O=ContextForge/OU=Plugins
  passphrase:
    description:
      - Passphrase that encrypts the CA private key (PKCS#8, best available encryption).
      - When set and the existing key is not encrypted, the same key is written again, encrypted.
    type: str
  keep_validity:
    description:
      - An existing CA certificate whose validity differs from O(valid_days) is not renewed for that alone (a renewal
        for another reason, such as its expiry, gets O(valid_days)). For a default that changes, so that an upgrade
        does not renew every CA certificate at once.
    type: bool
    default: false
    version_added: 0.2.0
  regenerate:
    description:
      - V(never) keeps an existing CA key whatever happens.
      - V(always) makes a new CA key and certificate on every run, after backing up the old files
        (whatever O(backup) says). Every leaf signed by the old CA is then re-issued by
        M(mcpgateway.mtls.certificate_set).
    type: str
    choices: [never, always]
    default: never
seealso:
  - module: mcpgateway.mtls.certificate_set
  - module: mcpgateway.mtls.certificate_info
"""

EXAMPLES = r"""
- name: Ensure the plugin CA
  mcpgateway.mtls.ca:
    key_path: "{{ pki_dir }}/ca/ca.key"
    cert_path: "{{ pki_dir }}/ca/ca.crt"

- name: Ensure an ECDSA CA with an encrypted key
  mcpgateway.mtls.ca:
    key_path: /srv/pki/ca/ca.key
    cert_path: /srv/pki/ca/ca.crt
    key_type: ecdsa
    passphrase: "{{ vault_ca_passphrase }}"
    valid_days: 3650
    renew_before_days: 90

- name: Start a new CA (the old files are backed up)
  mcpgateway.mtls.ca:
    key_path: /srv/pki/ca/ca.key
    cert_path: /srv/pki/ca/ca.crt
    regenerate: always
"""

RETURN = r"""
key_path:
  description: Absolute path of the CA key.
  returned: success
  type: str
  sample: /srv/pki/ca/ca.key
cert_path:
  description: Absolute path of the CA certificate.
  returned: success
  type: str
  sample: /srv/pki/ca/ca.crt
reasons:
  description: Why the key or certificate was (or, in check mode, would be) written. Empty when nothing changes.
  returned: success
  type: list
  elements: str
  sample: ["CA certificate expires within 30 days (not_after 2026-12-01T00:00:00Z)"]
key_changed:
  description: Whether the key file was (or would be) written.
  returned: success
  type: bool
  sample: false
new_key:
  description: Whether a new key was (or would be) generated.
  returned: success
  type: bool
  sample: false
cert_changed:
  description: Whether the certificate was (or would be) issued.
  returned: success
  type: bool
  sample: true
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
  sample: ["/srv/pki/ca/ca.crt.2026-11-24@01:02:03~"]
subject:
  description: Subject of the CA certificate (after the run).
  returned: success
  type: str
  sample: /CN=ContextForge-CA/O=ContextForge/OU=Plugins
not_after:
  description: End of validity, ISO 8601 UTC (predicted in check mode).
  returned: success
  type: str
  sample: "2029-02-27T01:02:03Z"
serial:
  description: Serial number in hexadecimal, or null when not yet issued (check mode).
  returned: success
  type: str
  sample: 5f0c2a9e0d4c3b6f1e2d3c4b5a69788796a5b4c3
key_type:
  description: Key type and size, for example C(rsa-4096), C(ecdsa-256) or C(ed25519).
  returned: success
  type: str
  sample: rsa-4096
fingerprint_sha256:
  description: SHA-256 fingerprint of the CA certificate, or null when it does not exist yet (check mode).
  returned: success
  type: str
  sample: "3B:92:9F:B2:5B:DD:A6:B0:DC:EE:85:F6:E4:5A:30:D3:3A:0D:6B:B8:7B:C7:70:E5:6C:73:ED:63:E0:24:D4:F0"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import common_argument_spec, lock_argument_spec
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import DEFAULT_CA_SUBJECT, validate_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY


def main():
    argument_spec = {
        "key_path": {"type": "path", "required": True, "no_log": False},
        "cert_path": {"type": "path", "required": True},
        "subject": {"type": "str", "default": DEFAULT_CA_SUBJECT},
        "passphrase": {"type": "str", "no_log": True},
        "regenerate": {"type": "str", "choices": ["never", "always"], "default": "never"},
        "keep_validity": {"type": "bool", "default": False},
    }
    argument_spec.update(common_argument_spec())
    argument_spec.update(lock_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    try:
        result = ensure_ca(validate_ca(module.params), check_mode=module.check_mode)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
