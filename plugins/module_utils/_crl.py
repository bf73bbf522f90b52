# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The CA's certificate revocation list: ensure_crl keeps a PEM CRL signed by the CA key (revoking
certificates it issued, re-signing before nextUpdate comes near) under the CA's run lock, and
crl_info reads a CRL without any key, for reports. Works without AnsibleModule; errors are PKIError
naming the input or the file, raised before anything is written.
"""

from __future__ import annotations

import os

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import (
    CERT_DIR_MODE, _read, leftover_temps, load_signing_ca, run_lock_folder, temps_warning)
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import (
    Spec, _int, _lock_timeout, _path, max_valid_days)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # reported by the module through X.HAS_CRYPTOGRAPHY
    pass

__all__ = ["ensure_crl", "crl_info", "validate_crl"]

# The reasons a revocation can be given here (RFC 5280 CRLReason names, as cryptography's ReasonFlags values).
REASONS = ("unspecified", "keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged")
DEFAULT_REASON = "keyCompromise"
CRL_DEFAULTS = {
    "ca_passphrase": None,
    "revoke": [],
    "reason": DEFAULT_REASON,
    "next_update_days": 30,
    "renew_before_days": 15,
    "owner": None,
    "group": None,
    "mode": "0644",
    "lock_timeout": 300,
}
# RFC 5280 5.2.3: a CRL number is at most 20 octets.
MAX_CRL_NUMBER = 2 ** 159 - 1


# ---------------------------------------------------------------- input

def validate_crl(params):
    """Options of the crl module -> Spec. Raises PKIError naming the input."""
    values = dict(CRL_DEFAULTS)
    values.update({k: v for k, v in params.items() if v is not None})
    path = _path(values.get("path"), "path")
    ca_cert = _path(values.get("ca_cert"), "ca_cert")
    ca_key = _path(values.get("ca_key"), "ca_key")
    if path in (ca_cert, ca_key):
        raise PKIError("path %s must differ from ca_cert and ca_key" % path)
    revoke = values["revoke"]
    if isinstance(revoke, str):
        revoke = [revoke]
    if not isinstance(revoke, (list, tuple)):
        raise PKIError("revoke: must be a list of certificate paths, got %r" % type(revoke).__name__)
    revoke = [_path(item, "revoke[%d]" % index) for index, item in enumerate(revoke)]
    for index, item in enumerate(revoke):
        if item in (path, ca_key):
            raise PKIError("revoke[%d]: %s is the CRL or the CA key, not a certificate" % (index, item))
    if values["reason"] not in REASONS:
        raise PKIError("reason must be one of %s, got %r" % (", ".join(REASONS), values["reason"]))
    next_update_days = _int(values["next_update_days"], "next_update_days")
    renew_before_days = _int(values["renew_before_days"], "renew_before_days")
    if next_update_days < 1:
        raise PKIError("next_update_days must be >= 1, got %d" % next_update_days)
    if next_update_days > max_valid_days():
        raise PKIError("next_update_days must be at most %d (X.509 times end with the year 9999), got %d" % (
            max_valid_days(), next_update_days))
    if renew_before_days < 0:
        raise PKIError("renew_before_days must be >= 0, got %d" % renew_before_days)
    if renew_before_days >= next_update_days:
        raise PKIError("renew_before_days (%d) must be smaller than next_update_days (%d): every run would re-sign"
                       % (renew_before_days, next_update_days))
    return Spec(path=path, ca_cert=ca_cert, ca_key=ca_key, passphrase=values["ca_passphrase"] or None,
                revoke=revoke, reason=values["reason"], next_update_days=next_update_days,
                renew_before_days=renew_before_days, mode=_io.parse_mode(values["mode"], "mode"),
                uid=_io.resolve_owner(values["owner"], "owner"), gid=_io.resolve_group(values["group"], "group"),
                lock_timeout=_lock_timeout(values["lock_timeout"]))


# ---------------------------------------------------------------- reading

def serial_hex(number):
    return "%x" % number


def _load_crl(data):
    try:
        return x509.load_pem_x509_crl(data)
    except Exception:  # pylint: disable=broad-except
        raise PKIError("not a valid PEM CRL") from None


def _crl_number(crl):
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (x509.ExtensionNotFound, ValueError):
        return None


def _aki(crl):
    try:
        return crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def _entry_reason(entry):
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except (x509.ExtensionNotFound, ValueError):
        return "unspecified"


def _entries(crl):
    """[(serial, revocation date, reason name)] of a CRL, in its order."""
    return [(entry.serial_number, entry.revocation_date_utc, _entry_reason(entry)) for entry in crl]


def _signed_by(crl, ca_cert):
    """The CRL names CA_CERT's subject as issuer and its signature verifies with CA_CERT's public key."""
    if X.name_key(crl.issuer) != X.name_key(ca_cert.subject):
        return False
    try:
        return bool(crl.is_signature_valid(ca_cert.public_key()))
    except Exception:  # pylint: disable=broad-except
        return False


def _days_left(moment, now):
    if moment is None:
        return None
    return int((moment - now).total_seconds() // 86400)


def crl_info(path, ca_cert_pem_or_cert=None, now=None):
    """Facts of the CRL file PATH, read without any key. With a CA certificate (PEM bytes/str or an
    x509.Certificate), signature_ok says whether that CA issued and signed it; without one it is None.
    Raises PKIError naming the file when it is missing or not a PEM CRL."""
    now = now or X.utcnow()
    data = _read(path, "CRL")
    if data is None:
        raise PKIError("CRL %s does not exist" % path)
    try:
        crl = _load_crl(data)
    except PKIError as exc:
        raise PKIError("CRL %s is unreadable: %s" % (path, exc)) from None
    signature_ok = None
    if ca_cert_pem_or_cert is not None:
        ca_cert = ca_cert_pem_or_cert
        if isinstance(ca_cert, str):
            ca_cert = ca_cert.encode("utf-8")
        if isinstance(ca_cert, bytes):
            ca_cert = X.load_certificate(ca_cert)
        signature_ok = _signed_by(crl, ca_cert)
    next_update = crl.next_update_utc
    return {
        "issuer": X.format_name(crl.issuer),
        "last_update": X.iso(crl.last_update_utc),
        "next_update": X.iso(next_update) if next_update is not None else None,
        "days_left": _days_left(next_update, now),
        "crl_number": _crl_number(crl),
        "revoked_serials": [serial_hex(entry.serial_number) for entry in crl],
        "signature_ok": signature_ok,
    }


# ---------------------------------------------------------------- revocations

def _to_revoke(spec, ca):
    """The certificates of spec.revoke, each checked to be a leaf issued by CA: [(serial, path)]."""
    ca_fingerprint = X.fingerprint_sha256(ca.cert)
    ca_subject = X.format_name(ca.cert.subject)
    found, seen = [], set()
    for index, path in enumerate(spec.revoke):
        where = "revoke[%d]" % index
        data = _read(path, "certificate")
        if data is None:
            raise PKIError("%s: certificate %s does not exist" % (where, path))
        try:
            cert = X.load_certificate(data)
        except PKIError as exc:
            raise PKIError("%s: certificate %s is unreadable: %s" % (where, path, exc)) from None
        if X.fingerprint_sha256(cert) == ca_fingerprint:
            raise PKIError("%s: %s is the CA certificate itself: a CA cannot revoke itself in its own CRL "
                           "(start a new CA with mcpgateway.mtls.ca_rotation instead)" % (where, path))
        if X.is_ca(cert):
            raise PKIError("%s: %s is a CA certificate (basicConstraints CA:TRUE): only leaf certificates are "
                           "revoked here" % (where, path))
        if not X.issued_by(cert, ca.cert):
            issuer = X.format_name(cert.issuer)
            detail = " (same name, another key)" if X.name_key(cert.issuer) == X.name_key(ca.cert.subject) else ""
            raise PKIError("%s: certificate %s was issued by %s, not by this CA %s (%s)%s" % (
                where, path, issuer, ca_subject, spec.ca_cert, detail))
        if cert.serial_number not in seen:
            seen.add(cert.serial_number)
            found.append((cert.serial_number, path))
    return found


# ---------------------------------------------------------------- the CRL

class _Current:
    """What is at the CRL path, as far as this CA is concerned."""

    def __init__(self):
        self.crl = None
        self.entries = []      # [(serial, date, reason)] kept in the next CRL
        self.number = 0        # the CRL number the next one follows
        self.reasons = []      # why the file must be re-signed regardless of revocations
        self.facts = None      # for the diff


def _current(spec, ca, now):
    current = _Current()
    try:
        data = _io.read_bytes(spec.path)
    except OSError as exc:
        current.reasons.append("CRL %s is unreadable (%s)" % (spec.path, exc.strerror))
        return current
    if data is None:
        current.reasons.append("CRL missing")
        return current
    try:
        crl = _load_crl(data)
    except PKIError:
        current.reasons.append("CRL %s is not a PEM CRL: replaced" % spec.path)
        return current
    entries = _entries(crl)
    current.facts = _facts(_crl_number(crl), crl.last_update_utc, crl.next_update_utc, entries)
    if not _signed_by(crl, ca.cert):
        dropped = " (its %d entries are dropped: they belong to that CA)" % len(entries) if entries else ""
        if X.name_key(crl.issuer) == X.name_key(ca.cert.subject):
            other = "signed by another key than this CA's (issuer %s)" % X.format_name(crl.issuer)
        else:
            other = "issued by another CA (%s)" % X.format_name(crl.issuer)
        current.reasons.append("CRL was %s%s" % (other, dropped))
        return current
    current.crl = crl
    current.entries = entries
    number = _crl_number(crl)
    if number is None:
        current.reasons.append("CRL lacks the CRLNumber extension")
    else:
        current.number = number
    if _aki(crl) != _authority_key_identifier(ca).key_identifier:
        current.reasons.append("CRL lacks the authorityKeyIdentifier of this CA")
    next_update = crl.next_update_utc
    if next_update is None:
        current.reasons.append("CRL has no nextUpdate")
    elif next_update <= now:
        current.reasons.append("CRL nextUpdate passed on %s" % X.iso(next_update))
    elif next_update - now <= spec.renew_before_days * X.DAY:
        current.reasons.append("CRL nextUpdate within %d days (%s)" % (spec.renew_before_days, X.iso(next_update)))
    return current


def _authority_key_identifier(ca):
    """From the CA's subjectKeyIdentifier (how verifiers match CRL to CA), else from its public key."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except (x509.ExtensionNotFound, ValueError):
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key())


def _build_crl(ca, entries, number, last_update, next_update):
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_identifier(ca), critical=False)
    )
    for serial, date, reason in entries:
        revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(date)
        if reason != "unspecified":  # RFC 5280 5.3.1: the reason unspecified is expressed by leaving it out
            revoked = revoked.add_extension(x509.CRLReason(x509.ReasonFlags(reason)), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca.key, X.signature_hash(ca.key))
    if not crl.is_signature_valid(ca.cert.public_key()):  # a damaged key (keys are loaded without the slow check)
        raise PKIError("the CRL signed with CA key %s does not verify with CA certificate %s" % (
            ca.key_path, ca.cert_path))
    return crl


def _facts(number, last_update, next_update, entries):
    return {
        "crl_number": number,
        "last_update": X.iso(last_update) if last_update is not None else None,
        "next_update": X.iso(next_update) if next_update is not None else None,
        "revoked": [{"serial": serial_hex(serial), "revocation_date": X.iso(date), "reason": reason}
                    for serial, date, reason in entries],
    }


def ensure_crl(spec, check_mode=False, now=None):
    """Ensure the CRL at spec.path: signed by the CA, listing the certificates of spec.revoke (added with
    revocation date NOW), not within spec.renew_before_days of its nextUpdate."""
    now = now or X.utcnow()
    folder = run_lock_folder(spec.ca_key)
    if not os.path.isdir(folder):
        raise PKIError("CA key %s does not exist (create it with mcpgateway.mtls.ca first)" % spec.ca_key)
    with _io.RunLock(folder, timeout=spec.lock_timeout, shared=check_mode, create=not check_mode):
        ca = load_signing_ca(spec.ca_cert, spec.ca_key, spec.passphrase, now=now)
        warnings = list(ca.warnings)
        to_revoke = _to_revoke(spec, ca)
        stale = leftover_temps([spec.path], check_mode)
        if stale:
            warnings.append(temps_warning(stale, check_mode))
        current = _current(spec, ca, now)
        reasons = list(current.reasons)
        entries = list(current.entries)
        listed = set(entry[0] for entry in entries)
        added = []
        for serial, path in to_revoke:
            if serial not in listed:
                listed.add(serial)
                entries.append((serial, now, spec.reason))
                added.append(serial_hex(serial))
                reasons.append("revoking serial %s (%s)" % (serial_hex(serial), path))
        resign = bool(reasons)
        if resign:
            number = current.number + 1
            if number > MAX_CRL_NUMBER:
                raise PKIError("CRL %s: its CRLNumber %d cannot grow any further (20 octets)" % (
                    spec.path, current.number))
            last_update, next_update = now - X.BACKDATE, now + spec.next_update_days * X.DAY
            if not check_mode:
                crl = _build_crl(ca, entries, number, last_update, next_update)
                # The entries as encoded (revocation dates without microseconds).
                entries = _entries(crl)
                _io.ensure_dir(os.path.dirname(spec.path), CERT_DIR_MODE, spec.uid, spec.gid)
                _io.write_file(spec.path, crl.public_bytes(serialization.Encoding.PEM), spec.mode,
                               spec.uid, spec.gid)
        else:
            crl = current.crl
            number, last_update, next_update = current.number, crl.last_update_utc, crl.next_update_utc
        attributes = False
        if not resign and _io.attributes_differ(spec.path, spec.mode, spec.uid, spec.gid):
            attributes = True
            if not check_mode:
                _io.fix_attributes(spec.path, spec.mode, spec.uid, spec.gid)
    after = _facts(number, last_update, next_update, entries)
    changed = bool(resign or attributes or stale)
    result = {
        "changed": changed,
        "path": spec.path,
        "reasons": reasons,
        "revoked": after["revoked"],
        "added": added,
        "crl_number": number,
        "last_update": after["last_update"],
        "next_update": after["next_update"],
        "days_left": _days_left(next_update, now),
        "issuer": X.format_name(ca.cert.subject),
        "warnings": warnings,
    }
    if changed:
        result["diff"] = {"before": current.facts or {}, "after": after}
    return result
