# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""Read-only reporting for the certificate_info module: for each certificate, whether it exists,
its facts, days left and status (ok, expiring, expired, missing, invalid), whether it chains to a
given CA and matches its key, plus a summary. Never writes and never returns key material.
"""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import _int, _path

__all__ = ["certificate_info"]


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
