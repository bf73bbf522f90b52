#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: crl
short_description: Keep a certificate revocation list signed by the CA
version_added: 0.3.0
description:
  - Keeps a PEM certificate revocation list (CRL) signed by the CA key of M(mcpgateway.mtls.ca), for TLS servers
    that check client certificates against it (for example OpenSSL with C(VERIFY_CRL_CHECK_LEAF)).
  - Every CRL written names the CA as issuer, is valid from now (minus five minutes for slow clocks) until
    O(next_update_days) from now, carries a C(CRLNumber) one higher than the previous CRL's (starting at 1) and
    the C(authorityKeyIdentifier) of the CA, and is signed with SHA-256 (Ed25519 CAs sign without a digest).
  - The CRL is re-signed when it is missing, unreadable or not a PEM CRL, when it was not signed by this CA
    (its entries are then dropped, as they belong to another CA), when its nextUpdate is within
    O(renew_before_days) or past, when it lacks the extensions above, or when O(revoke) adds a serial number.
    Otherwise nothing is written.
  - Revoked entries keep their serial number, revocation date and reason whenever the CRL is re-signed.
    Nothing is ever removed from the CRL of the same CA.
  - A CA key that cannot be opened (corrupt, encrypted without O(ca_passphrase), wrong passphrase) or that does
    not match the CA certificate is an error naming the file.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.files
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the CRL would be re-signed and why; writes nothing, creates no folder and no lock file.
  diff_mode:
    support: full
    details:
      - Shows CRL number, last and next update and the revoked serial numbers before and after, never key material.
  idempotent:
    support: full
    details:
      - A CRL is re-signed without a change of the options only when its nextUpdate comes within O(renew_before_days).
options:
  path:
    description:
      - Path of the CRL file (PEM). Its folder is created (C(0755)) when missing.
    type: path
    required: true
  ca_cert:
    description:
      - Path of the CA certificate (made by M(mcpgateway.mtls.ca)).
    type: path
    required: true
  ca_key:
    description:
      - Path of the CA private key. Its folder holds the lock file C(.lock).
    type: path
    required: true
  ca_passphrase:
    description:
      - Passphrase of the CA private key, if it is encrypted.
    type: str
  revoke:
    description:
      - Paths of certificates to revoke. Their serial numbers are added to the CRL with the revocation date of
        this run and the reason O(reason).
      - Each must exist and be a certificate issued and signed by O(ca_cert). The CA certificate itself and any
        other CA certificate are refused.
      - A serial number already listed is left as it is, with its original date and reason.
      - Removing a path from this list does not un-revoke its certificate.
    type: list
    elements: path
    default: []
  reason:
    description:
      - Revocation reason given to the serial numbers added in this run.
      - V(unspecified) is written as an entry without a reason code, as RFC 5280 asks.
    type: str
    choices: [unspecified, keyCompromise, superseded, cessationOfOperation, affiliationChanged]
    default: keyCompromise
  next_update_days:
    description:
      - The nextUpdate of a newly signed CRL, in days from now. Must be at least 1.
      - Verifiers that check CRLs refuse every certificate of the CA once the CRL's nextUpdate has passed, so
        run this module more often than that (for example from a daily timer).
    type: int
    default: 30
  renew_before_days:
    description:
      - A CRL whose nextUpdate is within this many days is re-signed. Must be at least 0 and smaller than
        O(next_update_days).
    type: int
    default: 15
  owner:
    description:
      - User name (or numeric id) that should own the CRL file and created folders.
    type: str
  group:
    description:
      - Group name (or numeric id) that should own the CRL file and created folders.
    type: str
  mode:
    description:
      - Permissions of the CRL file, as an octal string. A CRL is public.
    type: raw
    default: '0644'
  lock_timeout:
    description:
      - Seconds to wait for the lock C(.lock) in the CA key's folder, held by another run, before failing.
    type: float
    default: 300
notes:
  - The file is replaced atomically (private temporary file in the same folder, fsync, rename, fsync of the folder).
  - The whole run holds the exclusive C(flock) on C(.lock) in the folder of the CA key that M(mcpgateway.mtls.ca)
    and the leaf modules hold, so a CRL is never signed by a CA that is being replaced. Check mode takes a shared
    lock, and only when the lock file exists.
requirements:
  - cryptography >= 41.0
seealso:
  - module: mcpgateway.mtls.ca
  - module: mcpgateway.mtls.certificate_set
"""

EXAMPLES = r"""
- name: Keep the plugin CA's CRL fresh
  mcpgateway.mtls.crl:
    path: "{{ pki_dir }}/ca/ca.crl"
    ca_cert: "{{ pki_dir }}/ca/ca.crt"
    ca_key: "{{ pki_dir }}/ca/ca.key"

- name: Revoke the gateway client certificate of a lost host
  mcpgateway.mtls.crl:
    path: /srv/pki/ca/ca.crl
    ca_cert: /srv/pki/ca/ca.crt
    ca_key: /srv/pki/ca/ca.key
    ca_passphrase: "{{ vault_ca_passphrase }}"
    revoke:
      - /srv/pki/gateway/client.crt
    reason: keyCompromise

- name: A CRL valid for a week, re-signed every run after three days
  mcpgateway.mtls.crl:
    path: /srv/pki/ca/ca.crl
    ca_cert: /srv/pki/ca/ca.crt
    ca_key: /srv/pki/ca/ca.key
    next_update_days: 7
    renew_before_days: 4
"""

RETURN = r"""
path:
  description: Absolute path of the CRL.
  returned: success
  type: str
  sample: /srv/pki/ca/ca.crl
reasons:
  description: Why the CRL was (or, in check mode, would be) re-signed. Empty when it was not.
  returned: success
  type: list
  elements: str
  sample: ["revoking serial 5f0c2a9e0d4c3b6f1e2d3c4b5a69788796a5b4c3 (/srv/pki/gateway/client.crt)"]
revoked:
  description: The entries of the CRL after the run (predicted in check mode).
  returned: success
  type: list
  elements: dict
  contains:
    serial:
      description: Serial number in lowercase hexadecimal, without colons.
      type: str
      sample: 5f0c2a9e0d4c3b6f1e2d3c4b5a69788796a5b4c3
    revocation_date:
      description: Revocation date, ISO 8601 UTC.
      type: str
      sample: "2026-11-24T01:02:03Z"
    reason:
      description: Revocation reason (RFC 5280 name), V(unspecified) when the entry has none.
      type: str
      sample: keyCompromise
added:
  description: Serial numbers (lowercase hexadecimal) added to the CRL in this run.
  returned: success
  type: list
  elements: str
  sample: ["5f0c2a9e0d4c3b6f1e2d3c4b5a69788796a5b4c3"]
crl_number:
  description: CRLNumber of the CRL after the run (the predicted one in check mode).
  returned: success
  type: int
  sample: 2
last_update:
  description: lastUpdate (thisUpdate) of the CRL after the run, ISO 8601 UTC.
  returned: success
  type: str
  sample: "2026-11-24T00:57:03Z"
next_update:
  description: nextUpdate of the CRL after the run, ISO 8601 UTC.
  returned: success
  type: str
  sample: "2026-12-24T01:02:03Z"
days_left:
  description: Whole days until nextUpdate (negative once it has passed).
  returned: success
  type: int
  sample: 30
issuer:
  description: Issuer of the CRL, the subject of the CA certificate, in openssl form.
  returned: success
  type: str
  sample: /CN=ContextForge-CA/O=ContextForge/OU=Plugins
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import (
    common_argument_spec, lock_argument_spec, signer_argument_spec)
from ansible_collections.mcpgateway.mtls.plugins.module_utils._crl import REASONS, ensure_crl, validate_crl
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY


def main():
    signer = signer_argument_spec()
    common = common_argument_spec()
    argument_spec = {
        "path": {"type": "path", "required": True},
        "ca_cert": signer["ca_cert"],
        "ca_key": signer["ca_key"],
        "ca_passphrase": signer["ca_passphrase"],
        "revoke": {"type": "list", "elements": "path", "default": []},
        "reason": {"type": "str", "choices": list(REASONS), "default": "keyCompromise"},
        "next_update_days": {"type": "int", "default": 30},
        "renew_before_days": {"type": "int", "default": 15},
        "owner": common["owner"],
        "group": common["group"],
        "mode": {"type": "raw", "default": "0644"},
    }
    argument_spec.update(lock_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    try:
        result = ensure_crl(validate_crl(module.params), check_mode=module.check_mode)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
