# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This doc fragment is PRIVATE to the collection mcpgateway.mtls.
# Breaking changes can occur at any time.

from __future__ import annotations


class ModuleDocFragment:
    # Options shared by ca, certificate and certificate_set (module-level defaults in certificate_set).
    DOCUMENTATION = r"""
options:
  key_type:
    description:
      - Type of the private key.
    type: str
    choices: [rsa, ecdsa, ed25519]
    default: rsa
  key_size:
    description:
      - Key size. For V(rsa) one of V(2048), V(3072), V(4096) (default V(4096)).
      - For V(ecdsa) the curve size, V(256) (P-256, default) or V(384) (P-384).
      - Must not be set for V(ed25519).
    type: int
  valid_days:
    description:
      - Validity of a newly issued certificate, in days. Must be greater than 0.
    type: int
    default: 825
  renew_before_days:
    description:
      - A certificate that expires within this many days is renewed.
      - Must be at least 0 and smaller than O(valid_days).
    type: int
    default: 30
  owner:
    description:
      - User name (or numeric id) that should own the written files and created folders.
    type: str
  group:
    description:
      - Group name (or numeric id) that should own the written files and created folders.
    type: str
  key_mode:
    description:
      - Permissions of private key files, as an octal string.
    type: raw
    default: '0600'
  cert_mode:
    description:
      - Permissions of certificate files (and CA copies), as an octal string.
    type: raw
    default: '0644'
  backup:
    description:
      - Keep a timestamped copy (for example C(server.crt.2026-11-24@01:02:03~)) of every file that is replaced.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the lock C(.lock) in the CA key's folder, held by another run, before failing.
    type: float
    default: 300
notes:
  - Files are replaced atomically (private temporary file in the same folder, fsync, rename, fsync of the folder).
  - Folders that do not exist are created, C(0700) for key folders.
  - The whole run holds an exclusive C(flock) on C(.lock) in the folder of the CA key, so two runs never
    create two CAs or interleave writes. Check mode neither creates folders nor the lock file.
requirements:
  - cryptography >= 41.0
"""

    # The CA options of the leaf modules.
    SIGNER = r"""
options:
  ca_cert:
    description:
      - Path of the CA certificate (made by M(mcpgateway.mtls.ca)).
    type: path
    required: true
  ca_key:
    description:
      - Path of the CA private key. Its folder holds the lock file.
    type: path
    required: true
  ca_passphrase:
    description:
      - Passphrase of the CA private key, if it is encrypted.
    type: str
  ca_trust:
    description:
      - Further CA certificates that the CA copies (C(ca_copy_path)) hold after the signing CA,
        making them trust bundles. Used during a CA rotation (see M(mcpgateway.mtls.ca_rotation)), so that
        hosts trust the old and the new CA at once. Each must be a valid CA certificate.
    type: list
    elements: path
    default: []
    version_added: 0.2.0
"""
