# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The PKI decisions: input validation, when to (re-)issue, and carrying it out.

Everything here works without AnsibleModule (unit-testable); modules only map options in and
results out. Errors are PKIError, raised before anything is written whenever the cause is an input.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._names import cert_name_problem, validate_cert_name

__all__ = ["PKIError", "validate_cert_name", "ensure_ca", "ensure_certificates", "certificate_info",
           "validate_leaf", "validate_leaves", "plan_leaf", "load_signing_ca"]

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
KEY_DIR_MODE = 0o700
CERT_DIR_MODE = 0o755
# The incoming CA of a CA rotation lives in CA_DIR/next/, the rotation's state in CA_DIR/rotation.json (_rotation).
ROTATION_NEXT_DIR = "next"
ROTATION_STATE_FILE = "rotation.json"


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
                  lock_timeout=300)
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
                lock_timeout=lock_timeout, **spec)


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


# ---------------------------------------------------------------- CA for signing

class SigningCA:
    """The CA as leaves need it: certificate, its PEM bytes (for the copies) and the key."""

    def __init__(self, cert_path, key_path, cert, cert_pem, key):
        self.cert_path = cert_path
        self.key_path = key_path
        self.cert = cert
        self.cert_pem = cert_pem
        self.key = key
        self.warnings = []
        # What the CA copies beside the leaves hold: this CA, then any further trusted CA (a CA rotation).
        self.bundle_pem = cert_pem


def _read(path, what):
    try:
        return _io.read_bytes(path)
    except OSError as exc:
        raise PKIError("cannot read %s %s: %s" % (what, path, exc.strerror)) from None


def load_signing_ca(ca_cert_path, ca_key_path, passphrase, now=None):
    """Read, parse and check the CA once. Errors name the file."""
    now = now or X.utcnow()
    ca_cert_path = _path(ca_cert_path, "ca_cert")
    ca_key_path = _path(ca_key_path, "ca_key")
    cert_pem = _read(ca_cert_path, "CA certificate")
    if cert_pem is None:
        raise PKIError("CA certificate %s does not exist (create it with mcpgateway.mtls.ca first)" % ca_cert_path)
    key_pem = _read(ca_key_path, "CA key")
    if key_pem is None:
        raise PKIError("CA key %s does not exist" % ca_key_path)
    try:
        cert = X.load_certificate(cert_pem)
    except PKIError as exc:
        raise PKIError("CA certificate %s is unreadable: %s" % (ca_cert_path, exc)) from None
    try:
        key = X.load_private_key(key_pem, passphrase)
    except PKIError as exc:
        raise PKIError("cannot open CA key %s: %s" % (ca_key_path, exc)) from None
    if not X.same_public_key(key.public_key(), cert.public_key()):
        raise PKIError("CA key %s does not match CA certificate %s" % (ca_key_path, ca_cert_path))
    if not X.is_ca(cert):
        raise PKIError("CA certificate %s is not a CA certificate (basicConstraints CA:TRUE missing)" % ca_cert_path)
    if cert.not_valid_after_utc <= now:
        raise PKIError("CA certificate %s expired on %s: renew it with mcpgateway.mtls.ca first" % (
            ca_cert_path, X.iso(cert.not_valid_after_utc)))
    ca = SigningCA(ca_cert_path, ca_key_path, cert, cert_pem, key)
    problems = X.ca_problems(cert)
    if problems:
        ca.warnings.append("CA certificate %s is not strict-valid (%s): leaves will fail strict verification "
                           "until mcpgateway.mtls.ca renews it" % (ca_cert_path, "; ".join(problems)))
    return ca


class PendingCA:
    """Stands in for a CA that does not exist yet, in check mode only."""

    def __init__(self, cert_path, key_path):
        self.cert_path = cert_path
        self.key_path = key_path
        self.cert = None
        self.cert_pem = None
        self.key = None
        self.bundle_pem = None
        self.warnings = ["CA %s does not exist yet: reporting what would be issued once it does (check mode)"
                         % cert_path]


# ---------------------------------------------------------------- leaves: decide

class LeafPlan:
    """What exists for one leaf and what has to happen to it."""

    def __init__(self, spec):
        self.spec = spec
        self.reasons = []          # why the certificate is (re-)issued
        self.cert = None
        self.key = None            # the existing key, when it can be reused
        self.reuse_key = False
        self.ca_copy_needed = False
        self.before = None         # facts of the existing certificate
        self.new_cert = None
        self.key_written = False
        self.cert_written = False
        self.ca_copy_written = False
        self.key_rewrite = False
        self.attributes_changed = []
        self.backup_files = []
        self.stale_temps = []      # temp files a killed earlier run left beside this leaf's files

    @property
    def reissue(self):
        return bool(self.reasons)


def plan_leaf(spec, ca, now=None):
    """Read one leaf's files and decide. Reads each file once; loads the key without the slow RSA check."""
    now = now or X.utcnow()
    plan = LeafPlan(spec)
    reasons = plan.reasons
    cert_pem = _read(spec.cert_path, "certificate")
    key_pem = _read(spec.key_path, "key")
    cert = key = None
    if cert_pem is None:
        reasons.append("certificate missing")
    else:
        try:
            cert = X.load_certificate(cert_pem)
        except PKIError as exc:
            reasons.append("certificate unreadable: %s" % exc)
    if key_pem is None:
        reasons.append("key missing")
    else:
        try:
            key = X.load_private_key(key_pem, spec.passphrase)
        except PKIError as exc:
            reasons.append("key unreadable: %s" % exc)
    want_label = X.key_label(spec.key_type, spec.key_size)
    if cert is not None:
        plan.cert = cert
        plan.before = X.cert_facts(cert)
        not_after = cert.not_valid_after_utc
        if not_after <= now:
            reasons.append("expired on %s" % X.iso(not_after))
        elif not_after - now <= spec.renew_before_days * X.DAY:
            reasons.append("expires within %d days (not_after %s)" % (spec.renew_before_days, X.iso(not_after)))
        if ca.cert is None:
            reasons.append("not signed by the current CA (the CA does not exist yet)")
        elif not X.issued_by(cert, ca.cert):
            reasons.append("not signed by the current CA")
        if key is not None and not X.same_public_key(key.public_key(), cert.public_key()):
            reasons.append("key does not match certificate")
        have_subject = X.format_name(cert.subject)
        if X.name_key(cert.subject) != X.name_key(spec.subject):
            reasons.append("subject changed: %s -> %s" % (have_subject, X.format_name(spec.subject)))
        have_sans = X.cert_sans(cert)
        if X.san_set(have_sans) != X.san_set(spec.sans):
            reasons.append("SANs changed: %s -> %s" % (
                ", ".join(X.format_sans(have_sans)) or "(none)", ", ".join(X.format_sans(spec.sans)) or "(none)"))
        have_label = X.key_label(*X.key_spec_of(cert.public_key()))
        if have_label != want_label:
            reasons.append("key type changed: %s -> %s" % (have_label, want_label))
        for problem in X.profile_problems(cert, spec.profile):
            reasons.append("profile changed: %s" % problem)
    if key is not None and spec.passphrase and not X.is_encrypted_pem(key_pem):
        reasons.append("key is not passphrase-protected")
    if spec.force:
        reasons.append("force=true")
    if key is not None and spec.keep_key and X.key_label(*X.key_spec_of(key.public_key())) == want_label:
        plan.key = key
        plan.reuse_key = True
    if spec.ca_copy_path:
        plan.ca_copy_needed = ca.bundle_pem is None or _read(spec.ca_copy_path, "CA copy") != ca.bundle_pem
    return plan


def _attr_changes(spec, plan):
    """Existing files whose mode/owner/group differ (files that are rewritten anyway get them right)."""
    out = []
    pairs = [(spec.key_path, spec.key_mode, plan.key_rewrite), (spec.cert_path, spec.cert_mode, plan.reissue)]
    if spec.ca_copy_path:
        pairs.append((spec.ca_copy_path, spec.cert_mode, plan.ca_copy_needed))
    for path, mode, rewritten in pairs:
        if not rewritten and os.path.exists(path) and _io.attributes_differ(path, mode, spec.uid, spec.gid):
            out.append(path)
    return out


# ---------------------------------------------------------------- leaves: act

def _issue(plan, ca, now):
    """Make the key (unless reused) and sign the certificate. Runs in a worker thread."""
    spec = plan.spec
    key = plan.key if plan.reuse_key else X.generate_private_key(spec.key_type, spec.key_size)
    cert = X.build_leaf_certificate(key.public_key(), spec.subject, spec.sans, spec.profile, ca.cert, ca.key,
                                    spec.valid_days, now)
    return key, cert


def _write_leaf(plan, ca, now):
    """Issue and write one leaf: key first, then certificate, so a crash in between leaves a key that
    does not match the certificate, which the next run detects and repairs."""
    spec = plan.spec
    if plan.reissue:
        key, cert = _issue(plan, ca, now)
        plan.new_cert = cert
        _io.ensure_dir(os.path.dirname(spec.key_path), KEY_DIR_MODE, spec.uid, spec.gid)
        _io.ensure_dir(os.path.dirname(spec.cert_path), CERT_DIR_MODE, spec.uid, spec.gid)
        if plan.key_rewrite:
            backup = _io.write_file(spec.key_path, X.dump_private_key(key, spec.passphrase), spec.key_mode,
                                    spec.uid, spec.gid, backup=spec.backup, sync_dir=False)
            plan.key_written = True
            if backup:
                plan.backup_files.append(backup)
        backup = _io.write_file(spec.cert_path, X.dump_certificate(cert), spec.cert_mode, spec.uid, spec.gid,
                                backup=spec.backup, sync_dir=False)
        plan.cert_written = True
        if backup:
            plan.backup_files.append(backup)
        for folder in sorted({os.path.dirname(spec.key_path), os.path.dirname(spec.cert_path)}):
            _io.fsync_dir(folder)
    for path in plan.attributes_changed:
        mode = spec.key_mode if path == spec.key_path else spec.cert_mode
        _io.fix_attributes(path, mode, spec.uid, spec.gid)
    return plan


def _after_facts(plan, now):
    spec = plan.spec
    if plan.new_cert is not None:
        return X.cert_facts(plan.new_cert)
    if not plan.reissue:
        return plan.before
    # Check mode: what would be issued.
    return {
        "subject": X.format_name(spec.subject),
        "issuer": None,
        "sans": X.format_sans(spec.sans),
        "serial": None,
        "not_before": X.iso(now - X.BACKDATE),
        "not_after": X.iso(now + spec.valid_days * X.DAY),
        "key_type": X.key_label(spec.key_type, spec.key_size),
        "profile": spec.profile,
    }


def _leaf_result(plan, ca, now, check_mode):
    spec = plan.spec
    after = _after_facts(plan, now)
    if after is not None and plan.reissue and plan.new_cert is None:
        after["issuer"] = X.format_name(ca.cert.subject) if ca.cert is not None else None
    changed = plan.reissue or plan.ca_copy_needed or bool(plan.attributes_changed) or bool(plan.stale_temps)
    result = {
        "key_path": spec.key_path,
        "cert_path": spec.cert_path,
        "ca_copy_path": spec.ca_copy_path,
        "changed": changed,
        "reissued": plan.reissue,
        "reasons": list(plan.reasons),
        "new_key": plan.reissue and not plan.reuse_key,
        "key_changed": plan.reissue and plan.key_rewrite,
        "cert_changed": plan.reissue,
        "ca_copy_changed": plan.ca_copy_needed,
        "attributes_changed": list(plan.attributes_changed),
        "backup_files": list(plan.backup_files),
        "subject": after["subject"] if after else None,
        "sans": after["sans"] if after else [],
        "not_after": after["not_after"] if after else None,
        "serial": after["serial"] if after else None,
        "key_type": after["key_type"] if after else None,
        "profile": spec.profile,
    }
    if spec.name is not None:
        result["name"] = spec.name
    diff = None
    if changed:
        diff = {"before": plan.before or {}, "after": after or {}}
    return result, diff


def leftover_temps(paths, check_mode):
    """Temp files that a killed earlier run left while writing PATHS: removed (the caller holds the run
    lock), or in check mode only listed."""
    found = []
    for path in paths:
        found.extend(_io.stale_temps(path) if check_mode else _io.remove_stale_temps(path))
    return found


def temps_warning(found, check_mode):
    return "%s %d temp file(s) left by an interrupted run: %s" % (
        "would remove" if check_mode else "removed", len(found), ", ".join(found))


def trust_bundle(ca, extra_paths, now):
    """The CA copies' content: the signing CA's PEM, then each further trusted CA certificate, checked."""
    parts = [ca.cert_pem.strip() + b"\n"]
    seen = {X.fingerprint_sha256(ca.cert)}
    for index, path in enumerate(extra_paths or []):
        path = _path(path, "ca_trust[%d]" % index)
        data = _read(path, "trusted CA certificate")
        if data is None:
            raise PKIError("ca_trust[%d]: %s does not exist" % (index, path))
        try:
            cert = X.load_certificate(data)
        except PKIError as exc:
            raise PKIError("ca_trust[%d]: %s is unreadable: %s" % (index, path, exc)) from None
        if not X.is_ca(cert):
            raise PKIError("ca_trust[%d]: %s is not a CA certificate" % (index, path))
        if cert.not_valid_after_utc <= now:
            raise PKIError("ca_trust[%d]: %s expired on %s" % (index, path, X.iso(cert.not_valid_after_utc)))
        fingerprint = X.fingerprint_sha256(cert)
        if fingerprint not in seen:
            seen.add(fingerprint)
            parts.append(X.dump_certificate(cert).strip() + b"\n")
    return b"".join(parts)


def run_lock_folder(ca_key_path):
    """The folder whose .lock a leaf run holds: that of the CA key, except for the incoming CA of a CA
    rotation (CA_DIR/next/ca.key, CA_DIR/rotation.json present): then CA_DIR, the lock that runs signing
    with the current CA and the rotation's own steps hold too. Otherwise a run in phase trust and one in
    phase reissue could write the same leaves at once and leave one run's key beside the other's
    certificate."""
    folder = os.path.dirname(ca_key_path)
    parent = os.path.dirname(folder)
    if os.path.basename(folder) == ROTATION_NEXT_DIR and os.path.lexists(os.path.join(parent, ROTATION_STATE_FILE)):
        return parent
    return folder


def ensure_certificates(specs, ca_cert, ca_key, ca_passphrase=None, check_mode=False, workers=None,
                        lock_timeout=300, now=None, ca_trust=None):
    """Ensure many leaves under one lock: load the CA once, decide, then issue in parallel.

    CA_TRUST: further CA certificate paths the CA copies hold after the signing CA (a CA rotation).

    Returns {'changed', 'certificates': [per-leaf result], 'diff': {'before', 'after'}, 'warnings'}.
    """
    now = now or X.utcnow()
    ca_key_path = _path(ca_key, "ca_key")
    ca_cert_path = _path(ca_cert, "ca_cert")
    lock = _io.RunLock(run_lock_folder(ca_key_path), timeout=_lock_timeout(lock_timeout),
                       shared=check_mode, create=not check_mode)
    pending_ca = check_mode and not os.path.lexists(ca_key_path) and not os.path.lexists(ca_cert_path)
    if not pending_ca and not os.path.isdir(os.path.dirname(ca_key_path)):
        raise PKIError("CA key %s does not exist (folder missing)" % ca_key_path)
    with lock:
        if pending_ca:
            # Check mode before the CA exists (the ca task before us only pretended to create it):
            # report that everything would be issued instead of failing.
            ca = PendingCA(ca_cert_path, ca_key_path)
        else:
            ca = load_signing_ca(ca_cert_path, ca_key_path, ca_passphrase, now)
            if ca_trust:
                ca.bundle_pem = trust_bundle(ca, ca_trust, now)
        plans = [plan_leaf(spec, ca, now) for spec in specs]
        seen = set()
        for plan in plans:
            paths = [p for p in (plan.spec.key_path, plan.spec.cert_path, plan.spec.ca_copy_path) if p and p not in seen]
            seen.update(paths)
            plan.stale_temps = leftover_temps(paths, check_mode)
            if plan.stale_temps:
                ca.warnings.append(temps_warning(plan.stale_temps, check_mode))
        for plan in plans:
            plan.key_rewrite = plan.reissue and (not plan.reuse_key or "key is not passphrase-protected" in plan.reasons)
            plan.attributes_changed = _attr_changes(plan.spec, plan)
        if not check_mode:
            todo = [plan for plan in plans if plan.reissue or plan.attributes_changed]
            count = workers or os.cpu_count() or 1
            if len(todo) > 1 and count > 1:
                # Key generation (RSA above all) releases the GIL: threads give real parallelism.
                with ThreadPoolExecutor(max_workers=min(count, len(todo))) as pool:
                    # list() waits for every leaf and re-raises the first error.
                    list(pool.map(lambda p: _write_leaf(p, ca, now), todo))
            else:
                for plan in todo:
                    _write_leaf(plan, ca, now)
            done = set()
            for plan in plans:
                spec = plan.spec
                if plan.ca_copy_needed and spec.ca_copy_path not in done:
                    _io.ensure_dir(os.path.dirname(spec.ca_copy_path), CERT_DIR_MODE, spec.uid, spec.gid)
                    backup = _io.write_file(spec.ca_copy_path, ca.bundle_pem, spec.cert_mode, spec.uid, spec.gid,
                                            backup=spec.backup)
                    if backup:
                        plan.backup_files.append(backup)
                    done.add(spec.ca_copy_path)
        results, before, after = [], {}, {}
        for plan in plans:
            result, diff = _leaf_result(plan, ca, now, check_mode)
            results.append(result)
            if diff:
                before[plan.spec.cert_path] = diff["before"]
                after[plan.spec.cert_path] = diff["after"]
    return {
        "changed": any(r["changed"] for r in results),
        "certificates": results,
        "diff": {"before": before, "after": after},
        "warnings": list(ca.warnings),
    }


# ---------------------------------------------------------------- CA

def ensure_ca(spec, check_mode=False, now=None):
    """Ensure the CA key and self-signed certificate. Never replaces an existing key unless
    spec.regenerate == 'always' (then the old files are backed up first)."""
    now = now or X.utcnow()
    folder = os.path.dirname(spec.key_path)
    warnings = []
    if not check_mode:
        _io.ensure_dir(folder, KEY_DIR_MODE, spec.uid, spec.gid)
    with _io.RunLock(folder, timeout=spec.lock_timeout, shared=check_mode, create=not check_mode):
        reasons = []
        promotion = []
        key_file, cert_file = spec.key_path, spec.cert_path
        if spec.key_path == os.path.join(folder, "ca.key") and spec.cert_path == os.path.join(folder, "ca.crt"):
            # Lazy import: _rotation builds on this module.
            from ansible_collections.mcpgateway.mtls.plugins.module_utils._rotation import finish_interrupted_promotion
            promotion, key_file, cert_file = finish_interrupted_promotion(folder, check_mode)
            reasons.extend(promotion)
        stale = leftover_temps([spec.key_path, spec.cert_path], check_mode)
        if stale:
            warnings.append(temps_warning(stale, check_mode))
        key_pem = _read(key_file, "CA key")
        cert_pem = _read(cert_file, "CA certificate")
        key = cert = None
        before = None
        new_key = rewrite_key = renew = False
        if spec.regenerate == "always":
            reasons.append("regenerate=always")
            new_key = rewrite_key = renew = True
            if cert_pem is not None:
                try:
                    before = X.cert_facts(X.load_certificate(cert_pem))
                except PKIError:
                    before = None
        else:
            if key_pem is None:
                if cert_pem is not None:
                    raise PKIError(
                        "CA certificate %s exists but its key %s is missing: refusing to replace the CA silently "
                        "(restore the key, or set regenerate=always to start a new CA)" % (spec.cert_path, spec.key_path))
                reasons.append("CA key missing")
                new_key = rewrite_key = True
            else:
                try:
                    key = X.load_private_key(key_pem, spec.passphrase)
                except PKIError as exc:
                    raise PKIError("cannot open CA key %s: %s (it is never replaced unless regenerate=always)" % (
                        spec.key_path, exc)) from None
                if spec.passphrase and not X.is_encrypted_pem(key_pem):
                    reasons.append("CA key is not passphrase-protected: encrypting the same key")
                    rewrite_key = True
                have = X.key_label(*X.key_spec_of(key.public_key()))
                want = X.key_label(spec.key_type, spec.key_size)
                if have != want:
                    warnings.append("CA key %s is %s, not the requested %s: kept (the CA key is only replaced with "
                                    "regenerate=always)" % (spec.key_path, have, want))
            if cert_pem is None:
                reasons.append("CA certificate missing")
                renew = True
            else:
                try:
                    cert = X.load_certificate(cert_pem)
                except PKIError as exc:
                    raise PKIError("CA certificate %s is unreadable: %s (fix or remove it; it is never replaced "
                                   "silently)" % (spec.cert_path, exc)) from None
                before = X.cert_facts(cert)
                if not X.same_public_key(key.public_key(), cert.public_key()):
                    raise PKIError("CA key %s does not match CA certificate %s" % (spec.key_path, spec.cert_path))
                if not X.issued_by(cert, cert):
                    raise PKIError("CA certificate %s is not self-signed by its key" % spec.cert_path)
                renew_reasons = _ca_renew_reasons(cert, spec, now)
                reasons.extend(renew_reasons)
                renew = bool(renew_reasons)
        backups = []
        new_cert = None
        if not check_mode and (rewrite_key or renew):
            backup = spec.backup or spec.regenerate == "always"
            if new_key:
                key = X.generate_private_key(spec.key_type, spec.key_size)
            if rewrite_key:
                done = _io.write_file(spec.key_path, X.dump_private_key(key, spec.passphrase), spec.key_mode,
                                      spec.uid, spec.gid, backup=backup)
                if done:
                    backups.append(done)
            if renew:
                new_cert = X.build_ca_certificate(key, spec.subject, spec.valid_days, now)
                _io.ensure_dir(os.path.dirname(spec.cert_path), CERT_DIR_MODE, spec.uid, spec.gid)
                done = _io.write_file(spec.cert_path, X.dump_certificate(new_cert), spec.cert_mode, spec.uid,
                                      spec.gid, backup=backup)
                if done:
                    backups.append(done)
        attributes = []
        for path, mode, rewritten in ((spec.key_path, spec.key_mode, rewrite_key), (spec.cert_path, spec.cert_mode, renew)):
            if not rewritten and os.path.exists(path) and _io.attributes_differ(path, mode, spec.uid, spec.gid):
                attributes.append(path)
                if not check_mode:
                    _io.fix_attributes(path, mode, spec.uid, spec.gid)
    if new_cert is not None:
        after = X.cert_facts(new_cert)
    elif renew:
        after = {"subject": X.format_name(spec.subject), "issuer": X.format_name(spec.subject), "sans": [],
                 "serial": None, "not_before": X.iso(now - X.BACKDATE),
                 "not_after": X.iso(now + spec.valid_days * X.DAY),
                 "key_type": (X.key_label(spec.key_type, spec.key_size) if key is None or new_key
                              else X.key_label(*X.key_spec_of(key.public_key()))),
                 "profile": None}
    else:
        after = before
    changed = bool(rewrite_key or renew or attributes or stale or promotion)
    result = {
        "changed": changed,
        "key_path": spec.key_path,
        "cert_path": spec.cert_path,
        "reasons": reasons,
        "key_changed": rewrite_key,
        "new_key": new_key,
        "cert_changed": renew,
        "attributes_changed": attributes,
        "backup_files": backups,
        "subject": after["subject"],
        "not_after": after["not_after"],
        "serial": after["serial"],
        "key_type": after["key_type"],
        "fingerprint_sha256": X.fingerprint_sha256(new_cert if new_cert is not None else cert)
        if (new_cert is not None or cert is not None) else None,
        "warnings": warnings,
    }
    if changed:
        result["diff"] = {"before": before or {}, "after": after}
    return result


def _ca_renew_reasons(cert, spec, now):
    reasons = []
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        reasons.append("CA certificate expired on %s" % X.iso(not_after))
    elif not_after - now <= spec.renew_before_days * X.DAY:
        reasons.append("CA certificate expires within %d days (not_after %s)"
                       % (spec.renew_before_days, X.iso(not_after)))
    if X.name_key(cert.subject) != X.name_key(spec.subject):
        reasons.append("subject changed: %s -> %s" % (X.format_name(cert.subject), X.format_name(spec.subject)))
    if X.lifetime_days(cert) != spec.valid_days:
        reasons.append("validity changed: %d -> %d days" % (X.lifetime_days(cert), spec.valid_days))
    for problem in X.ca_problems(cert):
        reasons.append("CA certificate not strict-valid: %s" % problem)
    return reasons


# ---------------------------------------------------------------- info (read only)

def certificate_info(entries, ca_cert=None, renew_before_days=30, now=None):
    """Report on certificates. ENTRIES: list of {cert_path, key_path?, passphrase?}. Never key material."""
    now = now or X.utcnow()
    renew = _int(renew_before_days, "renew_before_days")
    if renew < 0:
        raise PKIError("renew_before_days must be >= 0, got %d" % renew)
    ca = None
    ca_problem = None
    if ca_cert:
        ca_path = _path(ca_cert, "ca_cert")
        try:
            data = _io.read_bytes(ca_path)
        except OSError as exc:
            data, ca_problem = None, "ca_cert %s is unreadable: %s" % (ca_path, exc.strerror)
        if data is None:
            ca_problem = ca_problem or "ca_cert %s does not exist" % ca_path
        else:
            try:
                ca = X.load_certificate(data)
            except PKIError as exc:
                ca_problem = "ca_cert %s is unreadable: %s" % (ca_path, exc)
        if ca is not None and not X.is_ca(ca):
            ca_problem = "ca_cert %s is not a CA certificate" % ca_path
        elif ca is not None and not ca.not_valid_before_utc <= now < ca.not_valid_after_utc:
            ca_problem = "ca_cert %s is not valid now (not_after %s)" % (ca_path, X.iso(ca.not_valid_after_utc))
    results = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"cert_path": entry}
        path = _path(entry.get("cert_path"), "certificates[%d].cert_path" % index)
        results.append(_info_one(path, entry, ca, ca_problem, renew, now))
    summary = {status: 0 for status in ("ok", "expiring", "expired", "missing", "invalid")}
    for item in results:
        summary[item["status"]] += 1
    summary["total"] = len(results)
    return {"certificates": results, "summary": summary, "ca_error": ca_problem}


def _info_one(path, entry, ca, ca_problem, renew, now):
    out = {"name": entry.get("name") or path, "path": path, "exists": False, "subject": None, "sans": [], "issuer": None, "serial": None,
           "not_before": None, "not_after": None, "not_after_epoch": None, "days_left": None,
           "status": "missing", "chain_valid": None, "key_matches": None, "fingerprint_sha256": None,
           "key_type": None, "profile": None, "error": None}
    try:
        data = _io.read_bytes(path)
    except OSError as exc:
        out.update(exists=True, status="invalid", error="unreadable: %s" % exc.strerror)
        return out
    if data is None:
        return out
    out["exists"] = True
    try:
        cert = X.load_certificate(data)
    except PKIError as exc:
        out.update(status="invalid", error=str(exc))
        return out
    facts = X.cert_facts(cert)
    not_after = cert.not_valid_after_utc
    left = (not_after - now).total_seconds()
    out.update(subject=facts["subject"], sans=facts["sans"], issuer=facts["issuer"], serial=facts["serial"],
               not_before=facts["not_before"], not_after=facts["not_after"],
               not_after_epoch=int(not_after.timestamp()), days_left=int(left // 86400),
               fingerprint_sha256=X.fingerprint_sha256(cert), key_type=facts["key_type"], profile=facts["profile"])
    if left <= 0:
        out["status"] = "expired"
    elif left <= renew * 86400:
        out["status"] = "expiring"
    else:
        out["status"] = "ok"
    if ca is not None or ca_problem is not None:
        out["chain_valid"] = ca_problem is None and X.issued_by(cert, ca)
    key_path = entry.get("key_path")
    if key_path:
        key_data = None
        try:
            key_data = _io.read_bytes(_path(key_path, "key_path"))
        except OSError:
            key_data = None
        if key_data is None:
            out["key_matches"] = False
        else:
            try:
                key = X.load_private_key(key_data, entry.get("passphrase"))
                out["key_matches"] = X.same_public_key(key.public_key(), cert.public_key())
            except PKIError:
                out["key_matches"] = False
    return out
