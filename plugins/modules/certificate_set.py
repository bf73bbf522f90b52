#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: certificate_set
short_description: Ensure many leaf keys and certificates signed by one CA, in one call
version_added: 0.1.0
description:
  - Does what M(mcpgateway.mtls.certificate) does, for a list of certificates, in one process under one lock.
  - The CA is read and checked once. Every input is validated before anything is written (including
    duplicate key or certificate paths and duplicate or invalid names).
  - The keys that are needed are generated in parallel threads (key generation releases the GIL).
    Existing keys are loaded without OpenSSL's slow RSA consistency check; they are checked against
    their certificate by comparing public keys instead. A run that changes nothing is therefore cheap.
  - Each certificate is re-issued for the same reasons as in M(mcpgateway.mtls.certificate); the result
    lists them per certificate.
  - The module-level options O(key_type), O(key_size), O(valid_days), O(renew_before_days), O(owner), O(group),
    O(key_mode), O(cert_mode), O(backup), O(profile), O(keep_key) and O(force) are defaults for every entry of
    O(certificates); an entry overrides them.
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
      - Reports, per certificate, what would be issued and why; writes nothing, creates no folder and no lock file.
  diff_mode:
    support: full
    details:
      - Shows, for each changed certificate path, subject, SANs, not_after, serial and key type before and after.
  idempotent:
    support: full
options:
  workers:
    description:
      - Number of threads that generate keys and write files. Default is the number of CPUs.
    type: int
  profile:
    description:
      - Default profile of the entries. V(server) sets extendedKeyUsage serverAuth, V(client) clientAuth.
    type: str
    choices: [server, client]
    default: server
  keep_key:
    description:
      - Default of the entries' O(certificates[].keep_key).
    type: bool
    default: false
  force:
    description:
      - Re-issue every certificate now.
    type: bool
    default: false
  certificates:
    description:
      - The certificates to ensure.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Optional name of the entry (for example the plugin name), returned in the result.
          - Must match C([A-Za-z0-9][A-Za-z0-9_.-]*), must not contain C(..), and must be unique.
        type: str
      key_path:
        description: Path of the private key.
        type: path
        required: true
      cert_path:
        description: Path of the certificate.
        type: path
        required: true
      ca_copy_path:
        description:
          - Where to write a copy of the CA certificate; rewritten only when it differs.
          - Several entries may share one copy.
        type: path
      subject:
        description: Subject, in openssl form C(/CN=name/O=org/OU=unit).
        type: str
        required: true
      sans:
        description:
          - Subject alternative names, C(DNS:name) or C(IP:address); bare names and addresses are detected.
        type: list
        elements: str
      profile:
        description: V(server) or V(client). Default O(profile).
        type: str
        choices: [server, client]
      keep_key:
        description: Reuse a valid existing key of the requested type on re-issue. Default O(keep_key).
        type: bool
      force:
        description: Re-issue this certificate now. Default O(force).
        type: bool
      key_type:
        description: Overrides O(key_type). Setting it without O(certificates[].key_size) uses that type's default size.
        type: str
        choices: [rsa, ecdsa, ed25519]
      key_size:
        description: Overrides O(key_size).
        type: int
      valid_days:
        description: Overrides O(valid_days).
        type: int
      renew_before_days:
        description: Overrides O(renew_before_days).
        type: int
      owner:
        description: Overrides O(owner).
        type: str
      group:
        description: Overrides O(group).
        type: str
      key_mode:
        description: Overrides O(key_mode).
        type: raw
      cert_mode:
        description: Overrides O(cert_mode).
        type: raw
      backup:
        description: Overrides O(backup).
        type: bool
  passphrases:
    description:
      - Passphrases that encrypt the private keys, keyed by O(certificates[].name); an entry without one has an
        unencrypted key.
      - A name that no entry of O(certificates) has is an error.
      - A top-level option rather than one per entry, so that no passphrase is ever written to the host's log.
    type: dict
    default: {}
seealso:
  - module: mcpgateway.mtls.ca
  - module: mcpgateway.mtls.certificate
  - module: mcpgateway.mtls.certificate_info
"""

EXAMPLES = r"""
- name: Ensure the gateway client and every plugin server certificate
  mcpgateway.mtls.certificate_set:
    ca_cert: "{{ pki_dir }}/ca/ca.crt"
    ca_key: "{{ pki_dir }}/ca/ca.key"
    valid_days: 825
    renew_before_days: 30
    certificates: >-
      {{ [{'name': 'gateway', 'profile': 'client',
           'key_path': pki_dir ~ '/gateway/client.key', 'cert_path': pki_dir ~ '/gateway/client.crt',
           'ca_copy_path': pki_dir ~ '/gateway/ca.crt',
           'subject': '/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway'}]
         + __pki_plugin_entries }}
  register: __pki_certs

- name: Ensure two plugin certificates with P-256 keys
  mcpgateway.mtls.certificate_set:
    ca_cert: /srv/pki/ca/ca.crt
    ca_key: /srv/pki/ca/ca.key
    key_type: ecdsa
    certificates:
      - name: guard
        key_path: /srv/pki/plugins/guard/server.key
        cert_path: /srv/pki/plugins/guard/server.crt
        ca_copy_path: /srv/pki/plugins/guard/ca.crt
        subject: /CN=mcp-plugin-guard/O=MCPGateway/OU=Plugins
        sans: [guard, mcp-plugin-guard, localhost]
      - name: filter
        key_path: /srv/pki/plugins/filter/server.key
        cert_path: /srv/pki/plugins/filter/server.crt
        ca_copy_path: /srv/pki/plugins/filter/ca.crt
        subject: /CN=mcp-plugin-filter/O=MCPGateway/OU=Plugins
        sans: [filter, mcp-plugin-filter, localhost]
"""

RETURN = r"""
certificates:
  description: One entry per input certificate, in input order.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The entry's name, when one was given.
      returned: when given
      type: str
      sample: guard
    key_path:
      description: Absolute path of the key.
      returned: always
      type: str
      sample: /srv/pki/plugins/guard/server.key
    cert_path:
      description: Absolute path of the certificate.
      returned: always
      type: str
      sample: /srv/pki/plugins/guard/server.crt
    ca_copy_path:
      description: Absolute path of the CA copy, or null.
      returned: always
      type: str
      sample: /srv/pki/plugins/guard/ca.crt
    changed:
      description: Whether anything of this entry changed (or would change).
      returned: always
      type: bool
      sample: true
    reissued:
      description: Whether the certificate was (or would be) issued.
      returned: always
      type: bool
      sample: true
    reasons:
      description: Why the certificate was (or would be) issued; empty when left alone.
      returned: always
      type: list
      elements: str
      sample: ["expires within 30 days (not_after 2026-12-01T00:00:00Z)"]
    new_key:
      description: Whether a new key was (or would be) generated.
      returned: always
      type: bool
      sample: true
    key_changed:
      description: Whether the key file was (or would be) written.
      returned: always
      type: bool
      sample: true
    cert_changed:
      description: Whether the certificate file was (or would be) written.
      returned: always
      type: bool
      sample: true
    ca_copy_changed:
      description: Whether the CA copy was (or would be) written.
      returned: always
      type: bool
      sample: false
    attributes_changed:
      description: Existing files whose mode or owner was (or would be) corrected.
      returned: always
      type: list
      elements: str
      sample: []
    backup_files:
      description: Backups made of replaced files.
      returned: always
      type: list
      elements: str
      sample: []
    subject:
      description: Subject after the run.
      returned: always
      type: str
      sample: /CN=mcp-plugin-guard/O=MCPGateway/OU=Plugins
    sans:
      description: SANs after the run.
      returned: always
      type: list
      elements: str
      sample: ["DNS:guard", "DNS:mcp-plugin-guard", "DNS:localhost"]
    not_after:
      description: End of validity, ISO 8601 UTC (predicted in check mode).
      returned: always
      type: str
      sample: "2029-02-27T01:02:03Z"
    serial:
      description: Serial number in hexadecimal; null for a certificate that check mode would issue.
      returned: always
      type: str
      sample: 634801529db2d32d10b78d852d94f50383fdf53e
    key_type:
      description: Key type and size of the certificate.
      returned: always
      type: str
      sample: rsa-4096
    profile:
      description: The requested profile.
      returned: always
      type: str
      sample: server
summary:
  description: Counts over all entries.
  returned: success
  type: dict
  sample: {"total": 51, "changed": 1, "reissued": 1, "unchanged": 50}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mcpgateway.mtls.plugins.module_utils._argspec import (
    attach_passphrases,
    common_argument_spec,
    leaf_argument_spec,
    lock_argument_spec,
    passphrases_argument_spec,
    signer_argument_spec,
)
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_leaves
from ansible_collections.mcpgateway.mtls.plugins.module_utils._x509 import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY

DEFAULT_KEYS = ("key_type", "key_size", "valid_days", "renew_before_days", "owner", "group", "key_mode",
                "cert_mode", "backup", "profile", "keep_key", "force")


def main():
    argument_spec = {
        "certificates": {"type": "list", "elements": "dict", "required": True,
                         "options": leaf_argument_spec(item=True)},
        "workers": {"type": "int"},
        "profile": {"type": "str", "choices": ["server", "client"], "default": "server"},
        "keep_key": {"type": "bool", "default": False},
        "force": {"type": "bool", "default": False},
    }
    argument_spec.update(common_argument_spec())
    argument_spec.update(signer_argument_spec())
    argument_spec.update(lock_argument_spec())
    argument_spec.update(passphrases_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    if params["workers"] is not None and params["workers"] < 1:
        module.fail_json(msg="workers must be >= 1, got %d" % params["workers"])
    defaults = {key: params[key] for key in DEFAULT_KEYS}
    try:
        specs = validate_leaves(attach_passphrases(params["certificates"], params["passphrases"]), defaults)
        outcome = ensure_certificates(specs, params["ca_cert"], params["ca_key"], params["ca_passphrase"],
                                      check_mode=module.check_mode, workers=params["workers"],
                                      lock_timeout=params["lock_timeout"], ca_trust=params["ca_trust"])
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    for warning in outcome["warnings"]:
        module.warn(warning)
    certificates = outcome["certificates"]
    changed = sum(1 for item in certificates if item["changed"])
    result = {
        "changed": outcome["changed"],
        "certificates": certificates,
        "summary": {"total": len(certificates), "changed": changed,
                    "reissued": sum(1 for item in certificates if item["reissued"]),
                    "unchanged": len(certificates) - changed},
    }
    if module._diff and outcome["changed"]:
        result["diff"] = outcome["diff"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
