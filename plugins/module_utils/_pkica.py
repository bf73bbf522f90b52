# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The CA itself: ensure_ca creates, renews or repairs the CA key and self-signed certificate under
the run lock (never replacing an existing key unless regenerate=always), and decides why a CA
certificate needs renewing. Works without AnsibleModule; errors are PKIError, raised before anything
is written whenever the cause is an input.
"""

from __future__ import annotations

import os

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import CERT_DIR_MODE, KEY_DIR_MODE, _read, leftover_temps, temps_warning

__all__ = ["ensure_ca"]


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
    if X.lifetime_days(cert) != spec.valid_days and not getattr(spec, "keep_validity", False):
        reasons.append("validity changed: %d -> %d days" % (X.lifetime_days(cert), spec.valid_days))
    for problem in X.ca_problems(cert):
        reasons.append("CA certificate not strict-valid: %s" % problem)
    return reasons
