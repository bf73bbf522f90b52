# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""Issuing leaf certificates: loading the signing CA, deciding per leaf when to (re-)issue (plans),
writing keys, certificates and CA copies under the run lock, and the trust bundle the CA copies hold
during a CA rotation. Also the helpers the CA side shares (file reads, leftover temp files, the run
lock folder). Everything here works without AnsibleModule (unit-testable); errors are PKIError.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import _lock_timeout, _path

__all__ = ["ensure_certificates", "plan_leaf", "load_signing_ca"]

KEY_DIR_MODE = 0o700
CERT_DIR_MODE = 0o755
# The incoming CA of a CA rotation lives in CA_DIR/next/, the rotation's state in CA_DIR/rotation.json (_rotation).
ROTATION_NEXT_DIR = "next"
ROTATION_STATE_FILE = "rotation.json"


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
