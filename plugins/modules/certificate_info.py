#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: certificate_info
short_description: Report on certificates (expiry, chain, key match), read-only
version_added: 0.1.0
description:
  - Reads certificates and reports, per certificate, subject, SANs, issuer, serial, validity, days left,
    a status (V(ok), V(expiring), V(expired), V(missing) or V(invalid)), whether it chains to a given CA
    and whether a given key matches it.
  - Never writes anything and never returns key material.
author:
  - mcpgateway.mtls developers (@mcpgateway)
extends_documentation_fragment:
  - mcpgateway.mtls._attributes
  - mcpgateway.mtls._attributes.info_module
options:
  certificates:
    description:
      - Certificates to report on, optionally with their key.
    type: list
    elements: dict
    suboptions:
      cert_path:
        description: Path of the certificate.
        type: path
        required: true
      name:
        description: A label for the certificate, returned as RV(certificates[].name) (for example the plugin name).
        type: str
      key_path:
        description: Path of the private key; when given, RV(certificates[].key_matches) is reported.
        type: path
  passphrases:
    description:
      - Passphrases of encrypted private keys, keyed by O(certificates[].name).
      - A name that no entry of O(certificates) has is an error.
      - A top-level option rather than one per entry, so that no passphrase is ever written to the host's log.
    type: dict
    default: {}
  paths:
    description:
      - Certificate paths to report on (after those in O(certificates)).
    type: list
    elements: path
  ca_cert:
    description:
      - CA certificate to check the chain against (issuer name, signature, CA currently valid).
    type: path
  renew_before_days:
    description:
      - A certificate that expires within this many days has status V(expiring).
    type: int
    default: 30
  crl:
    description:
      - A revocation list (PEM) to report on as RV(crl), checked against O(ca_cert).
    type: path
    version_added: 0.3.0
  crl_renew_before_days:
    description:
      - RV(crl.status) is V(expiring) when O(crl) lapses within this many days.
    type: int
    default: 15
    version_added: 0.3.0
requirements:
  - cryptography >= 41.0
seealso:
  - module: mcpgateway.mtls.certificate_set
"""

EXAMPLES = r"""
- name: Report on the PKI tree
  mcpgateway.mtls.certificate_info:
    ca_cert: "{{ pki_dir }}/ca/ca.crt"
    renew_before_days: 30
    certificates:
      - cert_path: "{{ pki_dir }}/ca/ca.crt"
      - cert_path: "{{ pki_dir }}/gateway/client.crt"
        key_path: "{{ pki_dir }}/gateway/client.key"
    paths: "{{ plugin_names | map('regex_replace', '^(.*)$', pki_dir ~ '/plugins/\\1/server.crt') | list }}"
  register: __check_certs

- name: Fail when a certificate needs attention
  ansible.builtin.assert:
    that: __check_certs.certificates | rejectattr('status', 'equalto', 'ok') | list | length == 0
"""

RETURN = r"""
certificates:
  description: One entry per certificate, in input order.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The O(certificates[].name) given, else the path.
      returned: always
      type: str
      sample: gateway
    path:
      description: Absolute path of the certificate.
      returned: always
      type: str
      sample: /srv/pki/gateway/client.crt
    exists:
      description: Whether the file exists.
      returned: always
      type: bool
      sample: true
    subject:
      description: Subject in openssl form; null when missing or invalid.
      returned: always
      type: str
      sample: /CN=mcp-gateway-client/O=MCPGateway/OU=Gateway
    sans:
      description: Subject alternative names.
      returned: always
      type: list
      elements: str
      sample: ["DNS:guard", "IP:10.0.0.5"]
    issuer:
      description: Issuer in openssl form.
      returned: always
      type: str
      sample: /CN=ContextForge-CA/O=ContextForge/OU=Plugins
    serial:
      description: Serial number in hexadecimal.
      returned: always
      type: str
      sample: 634801529db2d32d10b78d852d94f50383fdf53e
    not_before:
      description: Start of validity, ISO 8601 UTC.
      returned: always
      type: str
      sample: "2026-11-24T01:33:12Z"
    not_after:
      description: End of validity, ISO 8601 UTC.
      returned: always
      type: str
      sample: "2029-02-26T01:38:12Z"
    not_after_epoch:
      description: End of validity, seconds since the epoch (for monitoring).
      returned: always
      type: int
      sample: 1866764292
    days_left:
      description: Whole days until the end of validity (rounded down; negative when expired).
      returned: always
      type: int
      sample: 824
    status:
      description: V(ok), V(expiring) (within O(renew_before_days)), V(expired), V(missing) or V(invalid).
      returned: always
      type: str
      sample: ok
    chain_valid:
      description:
        - Whether the certificate's issuer is O(ca_cert), its signature verifies with the CA key, and the CA is valid now.
        - False for every certificate when O(ca_cert) cannot be used (see RV(ca_error)); null when O(ca_cert) is not given.
      returned: always
      type: bool
      sample: true
    key_matches:
      description: Whether the given key matches the certificate; null when no key was given.
      returned: always
      type: bool
      sample: true
    fingerprint_sha256:
      description: SHA-256 fingerprint of the certificate.
      returned: always
      type: str
      sample: "3B:92:9F:B2:5B:DD:A6:B0:DC:EE:85:F6:E4:5A:30:D3:3A:0D:6B:B8:7B:C7:70:E5:6C:73:ED:63:E0:24:D4:F0"
    key_type:
      description: Key type and size of the certificate.
      returned: always
      type: str
      sample: rsa-4096
    profile:
      description: V(server) or V(client) from extendedKeyUsage, V(both), or null.
      returned: always
      type: str
      sample: client
    error:
      description: Why the status is V(invalid); null otherwise.
      returned: always
      type: str
      sample: null
ca_error:
  description: Why O(ca_cert) could not be used (missing, unreadable, not a CA, not valid now); null when fine or not given.
  returned: success
  type: str
  sample: null
crl:
  description: The report on O(crl); null when O(crl) is not given.
  returned: success
  type: dict
  version_added: 0.3.0
  contains:
    path:
      description: The CRL file.
      type: str
    status:
      description:
        - V(ok), V(expiring) (within O(crl_renew_before_days)), V(expired) (every peer would refuse every certificate),
          V(missing) or V(invalid) (unreadable, or not signed by O(ca_cert)).
      type: str
    next_update:
      description: When it lapses, ISO 8601 UTC.
      type: str
    next_update_epoch:
      description: The same, in seconds since the epoch.
      type: int
    days_left:
      description: Whole days until then.
      type: int
    revoked:
      description: How many certificates it lists.
      type: int
    error:
      description: Why the status is V(missing) or V(invalid); null otherwise.
      type: str
summary:
  description: How many certificates have each status, and the total.
  returned: success
  type: dict
  sample: {"total": 3, "ok": 2, "expiring": 1, "expired": 0, "missing": 0, "invalid": 0}
"""

import calendar
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import attach_passphrases, passphrases_argument_spec

from ansible_collections.mcpgateway.mtls.plugins.module_utils._crl import crl_info
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkiinfo import certificate_info
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY


def crl_report(path, ca_cert, renew_before_days):
    """RV(crl): the CRL at PATH, its status and its days left."""
    report = {"path": path, "status": "invalid", "next_update": None, "next_update_epoch": None, "days_left": None,
              "revoked": None, "error": None}
    try:
        with open(ca_cert, "rb") as handle:
            ca = handle.read() if ca_cert else None
    except (OSError, TypeError):
        ca = None
    try:
        info = crl_info(path, ca)
    except PKIError as exc:
        report.update(status="missing" if "does not exist" in str(exc) else "invalid", error=str(exc))
        return report
    report.update(next_update=info["next_update"], days_left=info["days_left"], revoked=len(info["revoked_serials"]))
    if info["next_update"]:
        report["next_update_epoch"] = calendar.timegm(time.strptime(info["next_update"], "%Y-%m-%dT%H:%M:%SZ"))
    if info["signature_ok"] is False:
        report["error"] = "not signed by %s" % ca_cert
    elif info["days_left"] is None or info["days_left"] < 0:
        report["status"] = "expired"
    else:
        report["status"] = "expiring" if info["days_left"] < renew_before_days else "ok"
    return report


def main():
    argument_spec = {
        "certificates": {"type": "list", "elements": "dict", "options": {
            "cert_path": {"type": "path", "required": True},
            "name": {"type": "str"},
            "key_path": {"type": "path", "no_log": False},
        }},
        "paths": {"type": "list", "elements": "path"},
        "ca_cert": {"type": "path"},
        "renew_before_days": {"type": "int", "default": 30},
        "crl": {"type": "path"},
        "crl_renew_before_days": {"type": "int", "default": 15},
    }
    argument_spec.update(passphrases_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[("certificates", "paths")])
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    try:
        entries = attach_passphrases(params["certificates"] or [], params["passphrases"])
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    entries += [{"cert_path": path} for path in params["paths"] or []]
    try:
        result = certificate_info(entries, params["ca_cert"], params["renew_before_days"])
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    if result["ca_error"]:
        module.warn(result["ca_error"])
    result["crl"] = crl_report(params["crl"], params["ca_cert"], params["crl_renew_before_days"]) if params["crl"] else None
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
