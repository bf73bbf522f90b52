# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkiinfo import certificate_info
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X

from pki_helpers import PKI, leaf_item, snapshot


@pytest.mark.parametrize("days_later, status, days_left", [
    (0, "ok", 99),
    (75, "expiring", 24),
    (101, "expired", -2),
])
def test_status_and_days_left(pki, tmp_path, days_later, status, days_left):
    item = leaf_item(tmp_path, "alpha", valid_days=100)
    pki.run([item])
    now = X.utcnow() + datetime.timedelta(days=days_later, minutes=1)
    report = certificate_info([{"cert_path": item["cert_path"], "key_path": item["key_path"]}], pki.ca_cert,
                              renew_before_days=30, now=now)
    info = report["certificates"][0]
    assert info["status"] == status and info["days_left"] == days_left
    assert info["exists"] and info["key_matches"] and info["subject"] == item["subject"]
    assert info["not_after"].endswith("Z") and isinstance(info["not_after_epoch"], int)
    assert len(info["fingerprint_sha256"].split(":")) == 32
    assert int(info["serial"], 16) > 0
    assert report["summary"][status] == 1 and report["summary"]["total"] == 1


def test_missing_invalid_chain_and_key(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    other = PKI(tmp_path / "other")
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"nope")
    entries = [
        {"cert_path": item["cert_path"], "key_path": item["key_path"]},
        {"cert_path": str(tmp_path / "nope.crt")},
        {"cert_path": str(garbage)},
        {"cert_path": item["cert_path"], "key_path": other.ca_key},
        str(other.ca_cert),
    ]
    before = snapshot(tmp_path)
    report = certificate_info(entries, pki.ca_cert)
    statuses = [c["status"] for c in report["certificates"]]
    assert statuses == ["ok", "missing", "invalid", "ok", "ok"]
    assert [c["chain_valid"] for c in report["certificates"]] == [True, None, None, True, False]
    assert [c["key_matches"] for c in report["certificates"]] == [True, None, None, False, None]
    assert report["ca_error"] is None
    assert "PRIVATE" not in repr(report)
    assert snapshot(tmp_path) == before


def test_ca_problems_reported_not_fatal(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    report = certificate_info([item["cert_path"]], str(tmp_path / "missing-ca.crt"))
    assert "does not exist" in report["ca_error"]
    assert report["certificates"][0]["chain_valid"] is False
    later = X.utcnow() + datetime.timedelta(days=900)
    report = certificate_info([item["cert_path"]], pki.ca_cert, now=later)
    assert "not valid now" in report["ca_error"] and report["certificates"][0]["chain_valid"] is False
    assert not os.path.exists(str(tmp_path / "missing-ca.crt"))
