# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""Input validation for the PKI: the options of the ca, ca_rotation, certificate and certificate_set
modules (and of each certificate_set item) checked, defaulted and normalised into a Spec, before
anything is read or written. Owns the option defaults, validity limits, path and lock-timeout
checks. Works without AnsibleModule; errors are PKIError naming the input.
"""

from __future__ import annotations

import math
import os

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._names import cert_name_problem

__all__ = ["validate_leaf", "validate_leaves"]

DEFAULT_CA_SUBJECT = "/CN=ContextForge-CA/O=ContextForge/OU=Plugins"
COMMON_DEFAULTS = {
    "key_type": "rsa",
    "key_size": None,
    "valid_days": 825,
    "renew_before_days": 30,
    "owner": None,
    "group": None,
    "key_mode": "0600",
    "cert_mode": "0644",
    "backup": False,
}
LEAF_DEFAULTS = dict(COMMON_DEFAULTS, profile="server", sans=None, passphrase=None, keep_key=False,
                     force=False, ca_copy_path=None, name=None)
LEAF_KEYS = ("name", "key_path", "cert_path", "ca_copy_path", "profile", "subject", "sans", "key_type",
             "key_size", "valid_days", "renew_before_days", "owner", "group", "key_mode", "cert_mode",
             "backup", "passphrase", "keep_key", "force")


class Spec:
    """A validated set of options (attribute access; passphrase never shown by repr)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self):
        shown = {k: v for k, v in self.__dict__.items() if k != "passphrase"}
        return "Spec(%r)" % shown


# ---------------------------------------------------------------- validation

def _int(value, what):
    if isinstance(value, bool):
        raise PKIError("%s: must be an integer, got %r" % (what, value))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PKIError("%s: must be an integer, got %r" % (what, value)) from None


def max_valid_days(now=None):
    """The longest validity a certificate made now can have: X.509 times end with the year 9999."""
    return (X.LAST_TIME - (now or X.utcnow())).days - 1


def validate_validity(valid_days, renew_before_days, where=""):
    valid_days = _int(valid_days, where + "valid_days")
    renew = _int(renew_before_days, where + "renew_before_days")
    if valid_days <= 0:
        raise PKIError("%svalid_days must be > 0, got %d" % (where, valid_days))
    if valid_days > max_valid_days():
        raise PKIError("%svalid_days must be at most %d (a certificate cannot end after the year 9999), got %d" % (
            where, max_valid_days(), valid_days))
    if renew < 0:
        raise PKIError("%srenew_before_days must be >= 0, got %d" % (where, renew))
    if renew >= valid_days:
        raise PKIError("%srenew_before_days (%d) must be smaller than valid_days (%d): every run would renew" % (
            where, renew, valid_days))
    return valid_days, renew


def _path(value, what, required=True):
    if value is None or value == "":
        if required:
            raise PKIError("%s is required" % what)
        return None
    if not isinstance(value, str):
        raise PKIError("%s: must be a path string, got %r" % (what, value))
    if "\x00" in value:
        raise PKIError("%s: must not contain a NUL byte, got %r" % (what, value))
    if value.endswith("/"):
        raise PKIError("%s: must be a file path, not a folder: %r" % (what, value))
    return os.path.abspath(os.path.expanduser(value))


def _common(values, where):
    key_type, key_size = X.resolve_key_spec(values["key_type"], values["key_size"],
                                            where + "key_type/key_size")
    valid_days, renew = validate_validity(values["valid_days"], values["renew_before_days"], where)
    return {
        "key_type": key_type,
        "key_size": key_size,
        "valid_days": valid_days,
        "renew_before_days": renew,
        "uid": _io.resolve_owner(values["owner"], where + "owner"),
        "gid": _io.resolve_group(values["group"], where + "group"),
        "owner": values["owner"],
        "group": values["group"],
        "key_mode": _io.parse_mode(values["key_mode"], where + "key_mode"),
        "cert_mode": _io.parse_mode(values["cert_mode"], where + "cert_mode"),
        "backup": bool(values["backup"]),
    }


def validate_ca(params):
    """Options of the ca module -> Spec. Raises PKIError naming the input."""
    values = dict(COMMON_DEFAULTS, subject=DEFAULT_CA_SUBJECT, passphrase=None, regenerate="never",
                  lock_timeout=300, keep_validity=False)
    values.update({k: v for k, v in params.items() if v is not None})
    spec = _common(values, "")
    if values["regenerate"] not in ("never", "always"):
        raise PKIError("regenerate must be never or always, got %r" % values["regenerate"])
    key_path = _path(values.get("key_path"), "key_path")
    cert_path = _path(values.get("cert_path"), "cert_path")
    if key_path == cert_path:
        raise PKIError("key_path and cert_path must differ (%s)" % key_path)
    lock_timeout = _lock_timeout(values["lock_timeout"])
    return Spec(key_path=key_path, cert_path=cert_path, subject=X.parse_subject(values["subject"], "subject"),
                passphrase=values["passphrase"] or None, regenerate=values["regenerate"],
                lock_timeout=lock_timeout, keep_validity=bool(values["keep_validity"]), **spec)


def _lock_timeout(value):
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise PKIError("lock_timeout must be a number of seconds, got %r" % (value,)) from None
    if math.isnan(timeout):  # no deadline could ever be reached
        raise PKIError("lock_timeout must be a number of seconds, got %r" % (value,))
    if timeout < 0:
        raise PKIError("lock_timeout must be >= 0, got %r" % (value,))
    return timeout


def validate_leaf(item, defaults=None, where=""):
    """One leaf (certificate module options or a certificate_set item) -> Spec.

    DEFAULTS are the module-level values an item inherits; None in ITEM means "inherit".
    """
    if not isinstance(item, dict):
        raise PKIError("%s: must be a dict, got %r" % (where.rstrip(": ") or "certificate", type(item).__name__))
    values = dict(LEAF_DEFAULTS)
    values.update({k: v for k, v in (defaults or {}).items() if v is not None and k in LEAF_DEFAULTS})
    unknown = sorted(set(item) - set(LEAF_KEYS))
    if unknown:
        raise PKIError("%sunknown option(s) %s" % (where, ", ".join(unknown)))
    values.update({k: v for k, v in item.items() if v is not None})
    # An item that sets key_type but not key_size gets that type's default size, not the
    # module-wide size meant for another type.
    if item.get("key_type") is not None and item.get("key_size") is None:
        values["key_size"] = None
    spec = _common(values, where)
    name = values.get("name")
    if name is not None:
        problem = cert_name_problem(name)
        if problem:
            raise PKIError("%sname: invalid certificate name %r: %s" % (where, name, problem))
    if values["profile"] not in X.PROFILES:
        raise PKIError("%sprofile must be server or client, got %r" % (where, values["profile"]))
    key_path = _path(values.get("key_path"), where + "key_path")
    cert_path = _path(values.get("cert_path"), where + "cert_path")
    ca_copy_path = _path(values.get("ca_copy_path"), where + "ca_copy_path", required=False)
    if key_path == cert_path or ca_copy_path in (key_path, cert_path):
        raise PKIError("%skey_path, cert_path and ca_copy_path must be different files" % where)
    if values.get("subject") is None:
        raise PKIError("%ssubject is required" % where)
    subject = X.parse_subject(values["subject"], where + "subject")
    sans = X.parse_sans(values["sans"], where + "sans")
    passphrase = values["passphrase"] or None
    if passphrase is not None and not isinstance(passphrase, str):
        raise PKIError("%spassphrase must be a string" % where)
    return Spec(name=name, key_path=key_path, cert_path=cert_path, ca_copy_path=ca_copy_path,
                profile=values["profile"], subject=subject, sans=sans, passphrase=passphrase,
                keep_key=bool(values["keep_key"]), force=bool(values["force"]), **spec)


def validate_leaves(items, defaults=None, label="certificates"):
    """Validate a list of leaves and that no key/cert file (or name) is used twice."""
    if not isinstance(items, list):
        raise PKIError("%s must be a list" % label)
    specs = [validate_leaf(item, defaults, "%s[%d]: " % (label, index)) for index, item in enumerate(items)]
    owners = {}
    names = {}
    for index, spec in enumerate(specs):
        for what in ("key_path", "cert_path"):
            path = getattr(spec, what)
            if path in owners:
                raise PKIError("%s[%d].%s: %s is already used by %s" % (label, index, what, path, owners[path]))
            owners[path] = "%s[%d].%s" % (label, index, what)
        if spec.name is not None:
            if spec.name in names:
                raise PKIError("%s[%d].name: duplicate certificate name %r (also %s)" % (
                    label, index, spec.name, names[spec.name]))
            names[spec.name] = "%s[%d]" % (label, index)
    for index, spec in enumerate(specs):
        if spec.ca_copy_path in owners:
            raise PKIError("%s[%d].ca_copy_path: %s is also a key or certificate (%s)" % (
                label, index, spec.ca_copy_path, owners[spec.ca_copy_path]))
    return specs
