# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The certificate revocation list that goes with a CA bundle: ``ca.crl`` in the bundle's folder (the TLS set), one
PEM CRL per CA of the bundle. Both ends enforce it when it is there: the plugin launcher for client certificates,
the gateway's plugin client (``client_trust``) for server certificates.

Python's ssl module loads a CRL but cannot show it, and the host venvs need not have ``cryptography``: the
``nextUpdate`` of each CRL is read here from its DER (an expired CRL makes OpenSSL refuse every peer, so it is
refused before it is used).
"""

from __future__ import annotations

import base64
import calendar
import os
import re
import time

CRL_NAME = "ca.crl"
_PEM = re.compile(rb"-----BEGIN X509 CRL-----\s+(.+?)\s+-----END X509 CRL-----", re.S)


def beside(ca_bundle: str) -> str:
    """The CRL path that goes with the CA bundle CA_BUNDLE."""
    return os.path.join(os.path.dirname(ca_bundle), CRL_NAME)


def _element(der: bytes, pos: int):
    """(tag, content start, content end) of the DER element at POS."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _time(tag: int, text: bytes) -> float:
    value = text.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(value[:2])
        value = ("19" if year >= 50 else "20") + value
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    if not value.endswith("Z") or len(value) != 15:
        raise ValueError("unsupported time %r" % value)
    return float(calendar.timegm(time.strptime(value[:14], "%Y%m%d%H%M%S")))


def next_update(der: bytes):
    """nextUpdate of one DER CRL, in epoch seconds (None when the CRL has none)."""
    _tag, start, _end = _element(der, 0)              # CertificateList
    _tag, pos, end = _element(der, start)             # TBSCertList
    tag, _start, after = _element(der, pos)
    if tag == 0x02:                                   # version
        pos = after
    for _field in ("signature", "issuer", "thisUpdate"):
        pos = _element(der, pos)[2]
    if pos >= end:
        return None
    tag, start, after = _element(der, pos)
    return _time(tag, der[start:after]) if tag in (0x17, 0x18) else None


def read(path: str):
    """The earliest nextUpdate of the PEM CRLs in PATH (epoch seconds); ValueError naming the problem."""
    with open(path, "rb") as handle:
        data = handle.read()
    blocks = _PEM.findall(data)
    if not blocks:
        raise ValueError("%s holds no PEM CRL" % path)
    updates = []
    for block in blocks:
        try:
            update = next_update(base64.b64decode(b"".join(block.split()), validate=True))
        except (ValueError, IndexError) as exc:
            raise ValueError("%s: a CRL that cannot be read (%s)" % (path, exc)) from exc
        if update is None:
            raise ValueError("%s: a CRL without nextUpdate" % path)
        updates.append(update)
    return min(updates)


def current(path: str, now: float | None = None) -> float:
    """read(PATH), refusing a CRL whose nextUpdate has passed (OpenSSL would then refuse every peer)."""
    update = read(path)
    now = time.time() if now is None else now
    if update <= now:
        raise ValueError("%s expired at %s: with it every peer would be refused (renew it: rotate.yml or site.yml)"
                         % (path, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(update))))
    return update
