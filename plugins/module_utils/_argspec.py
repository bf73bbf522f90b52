# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""Argument specs shared by the modules (kept next to the logic, in one place)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError


def common_argument_spec(with_defaults=True):
    """Options of every writing module. Without defaults (certificate_set items): None = inherit."""
    spec = {
        "key_type": {"type": "str", "choices": ["rsa", "ecdsa", "ed25519"], "default": "rsa"},
        "key_size": {"type": "int"},
        "valid_days": {"type": "int", "default": 825},
        "renew_before_days": {"type": "int", "default": 30},
        "owner": {"type": "str"},
        "group": {"type": "str"},
        "key_mode": {"type": "raw", "default": "0600", "no_log": False},
        "cert_mode": {"type": "raw", "default": "0644"},
        "backup": {"type": "bool", "default": False},
    }
    if not with_defaults:
        for option in spec.values():
            option.pop("default", None)
    return spec


def lock_argument_spec():
    return {"lock_timeout": {"type": "float", "default": 300}}


def signer_argument_spec():
    return {
        "ca_cert": {"type": "path", "required": True},
        "ca_key": {"type": "path", "required": True},
        "ca_passphrase": {"type": "str", "no_log": True},
        "ca_trust": {"type": "list", "elements": "path", "default": []},
    }


def leaf_argument_spec(item=False):
    """Options of one leaf: the certificate module, or (item=True) one certificate_set entry."""
    spec = {
        "key_path": {"type": "path", "required": True, "no_log": False},
        "cert_path": {"type": "path", "required": True},
        "ca_copy_path": {"type": "path"},
        "subject": {"type": "str", "required": True},
        "sans": {"type": "list", "elements": "str"},
        "profile": {"type": "str", "choices": ["server", "client"], "default": "server"},
        "passphrase": {"type": "str", "no_log": True},
        "keep_key": {"type": "bool", "default": False},
        "force": {"type": "bool", "default": False},
    }
    spec.update(common_argument_spec(with_defaults=not item))
    if item:
        spec["name"] = {"type": "str"}
        # An item's passphrase comes from the module's top-level option passphrases (keyed by name): AnsibleModule
        # logs a list option as its str() to the host's journal, where the escaping of a quote or backslash makes
        # a no_log suboption no longer match its masked value, so it would be written in clear.
        del spec["passphrase"]
        for key in ("profile", "keep_key", "force"):
            spec[key].pop("default", None)
    return spec


def passphrases_argument_spec():
    """Top-level option of the modules that take a list of keys: passphrase per entry name, never logged."""
    return {"passphrases": {"type": "dict", "default": {}, "no_log": True}}


def attach_passphrases(items, passphrases, label="certificates"):
    """ITEMS (list of dicts with an optional name) each with its passphrase from PASSPHRASES (name -> passphrase).

    Returns new dicts; a passphrase for a name that no item has is an error (a typo would leave a key unencrypted
    or unreadable without a word)."""
    passphrases = passphrases or {}
    names = set(item.get("name") for item in items if isinstance(item, dict))
    unknown = sorted(str(name) for name in passphrases if name not in names)
    if unknown:
        raise PKIError("passphrases: no entry of %s is named %s; passphrases are keyed by %s[].name" % (
            label, ", ".join(unknown), label))
    attached = []
    for item in items:
        if isinstance(item, dict) and passphrases.get(item.get("name")):
            item = dict(item, passphrase=passphrases[item["name"]])
        attached.append(item)
    return attached
