# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test helpers: a fast ECDSA CA, leaf item builders, folder snapshots."""

from __future__ import annotations

import os

from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_ca, validate_leaves


def make_ca(folder, key_type="ecdsa", key_size=None, passphrase=None, subject=None, **extra):
    params = {"key_path": os.path.join(str(folder), "ca", "ca.key"),
              "cert_path": os.path.join(str(folder), "ca", "ca.crt"),
              "key_type": key_type, "key_size": key_size, "passphrase": passphrase, "subject": subject}
    params.update(extra)
    spec = validate_ca(params)
    return spec


def leaf_item(folder, name="alpha", **overrides):
    base = os.path.join(str(folder), "plugins", name)
    item = {
        "name": name,
        "key_path": os.path.join(base, "server.key"),
        "cert_path": os.path.join(base, "server.crt"),
        "ca_copy_path": os.path.join(base, "ca.crt"),
        "subject": "/CN=mcp-plugin-%s/O=MCPGateway/OU=Plugins" % name,
        "sans": [name, "mcp-plugin-%s" % name, "localhost"],
        "key_type": "ecdsa",
    }
    item.update(overrides)
    return item


def snapshot(folder):
    """{relative path: (bytes, mode)} of every file under FOLDER."""
    out = {}
    for root, _dirs, files in os.walk(str(folder)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, str(folder))] = (handle.read(), os.stat(path).st_mode & 0o7777)
    return out


class PKI:
    """A CA in a temp folder plus a helper to run ensure_certificates on items."""

    def __init__(self, folder, passphrase=None):
        self.folder = folder
        self.ca_spec = make_ca(folder, passphrase=passphrase)
        self.passphrase = passphrase
        ensure_ca(self.ca_spec)

    @property
    def ca_cert(self):
        return self.ca_spec.cert_path

    @property
    def ca_key(self):
        return self.ca_spec.key_path

    def run(self, items, check_mode=False, now=None, defaults=None, workers=2):
        specs = validate_leaves(items, defaults)
        return ensure_certificates(specs, self.ca_cert, self.ca_key, self.passphrase, check_mode=check_mode,
                                   workers=workers, now=now)
