# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CA rotation state machine (module_utils/_rotation.py): phases, trust bundles, crash-safe promotion."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates, load_signing_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_ca, validate_leaves
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _rotation as R
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

from pki_helpers import PKI, leaf_item, snapshot


def _fp(path):
    with open(path, "rb") as handle:
        return X.fingerprint_sha256(X.load_certificate(handle.read()))


def _certs_in(path):
    with open(path, "rb") as handle:
        return handle.read().count(b"-----BEGIN CERTIFICATE-----")


@pytest.fixture()
def pki(tmp_path):
    return PKI(tmp_path)


def _layout(pki):
    return R.Layout(os.path.dirname(pki.ca_cert))


def _next_spec(layout):
    return validate_ca({"key_path": layout.next_key, "cert_path": layout.next_cert, "key_type": "ecdsa"})


def _start(layout, check_mode=False):
    return R.rotation(layout, "started", _next_spec(layout), check_mode=check_mode)


def _leaves(pki, report):
    specs = validate_leaves([leaf_item(pki.folder, "alpha"), leaf_item(pki.folder, "beta")])
    return ensure_certificates(specs, report["signing_cert"], report["signing_key"], ca_trust=report["trust_extra"])


def test_no_rotation_reports_the_current_ca(pki):
    layout = _layout(pki)
    report = R.rotation(layout, "current")
    assert not report["changed"] and not report["in_progress"] and report["phase"] is None
    assert (report["signing_cert"], report["signing_key"], report["trust_extra"]) == (layout.cert, layout.key, [])
    # Ending a rotation that is not there changes nothing either.
    assert not R.rotation(layout, "promoted")["changed"]
    with pytest.raises(PKIError, match="no CA rotation is in progress"):
        R.rotation(layout, "reissue")


def test_full_rotation_with_overlapping_trust(pki):
    layout = _layout(pki)
    old = _fp(layout.cert)
    _leaves(pki, R.rotation(layout, "current"))
    alpha = os.path.join(pki.folder, "plugins", "alpha")

    started = _start(layout)
    assert started["changed"] and started["phase"] == "trust" and started["old_fingerprint"] == old
    assert started["trust_extra"] == [layout.next_cert] and started["signing_cert"] == layout.cert
    again = _start(layout)
    assert not again["changed"] and again["new_fingerprint"] == started["new_fingerprint"]
    trust = _leaves(pki, started)
    # Phase trust: no leaf is re-issued, every CA copy becomes old + new.
    assert not any(item["reissued"] for item in trust["certificates"])
    assert _certs_in(os.path.join(alpha, "ca.crt")) == 2

    reissue = R.rotation(layout, "reissue")
    assert reissue["changed"] and reissue["phase"] == "reissue"
    assert (reissue["signing_cert"], reissue["trust_extra"]) == (layout.next_cert, [layout.cert])
    assert not R.rotation(layout, "reissue")["changed"]
    issued = _leaves(pki, reissue)
    assert all(item["reissued"] and "not signed by the current CA" in item["reasons"] for item in issued["certificates"])
    assert _certs_in(os.path.join(alpha, "ca.crt")) == 2

    promoted = R.rotation(layout, "promoted")
    assert promoted["changed"] and not promoted["in_progress"]
    assert _fp(layout.cert) == started["new_fingerprint"]
    assert not os.path.exists(layout.next_dir) and not os.path.exists(layout.state)
    retired = layout.retired_dir(old)
    assert _fp(os.path.join(retired, "ca.crt")) == old
    assert oct(os.stat(os.path.join(retired, "ca.key")).st_mode & 0o777) == "0o600"
    final = _leaves(pki, promoted)
    # After the promotion the leaves are current (signed by the new CA) and the copies hold it alone.
    assert not any(item["reissued"] for item in final["certificates"])
    assert _certs_in(os.path.join(alpha, "ca.crt")) == 1
    before = snapshot(pki.folder)
    assert not R.rotation(layout, "promoted")["changed"] and not _leaves(pki, R.rotation(layout, "current"))["changed"]
    assert snapshot(pki.folder) == before


def test_phases_never_skip(pki):
    layout = _layout(pki)
    _start(layout)
    with pytest.raises(PKIError, match="phase trust: the leaves must be re-issued"):
        R.rotation(layout, "promoted")


def test_check_mode_writes_nothing(pki):
    layout = _layout(pki)
    before = snapshot(pki.folder)
    report = _start(layout, check_mode=True)
    assert report["changed"] and report["phase"] == "trust" and report["trust_extra"] == []
    assert snapshot(pki.folder) == before


@pytest.mark.parametrize("renames_before_crash", [0, 1, 2])
def test_interrupted_promotion_is_finished_by_any_later_call(pki, monkeypatch, renames_before_crash):
    """Power cut after the old CA was retired (0 renames), after the key moved (1), after the
    certificate moved too (2, before the clean-up): any later call finishes the promotion."""
    layout = _layout(pki)
    old = _fp(layout.cert)
    new = _start(layout)["new_fingerprint"]
    R.rotation(layout, "reissue")
    real_replace, real_rmtree = os.replace, R.shutil.rmtree
    moved = []

    def crashing_replace(src, dst):
        if os.path.dirname(os.path.abspath(src)) == layout.next_dir:  # the promotion's own renames
            if len(moved) == renames_before_crash:
                raise KeyboardInterrupt("power cut")
            moved.append(dst)
        return real_replace(src, dst)

    def crashing_rmtree(path, *args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(R.os, "replace", crashing_replace)
    monkeypatch.setattr(R.shutil, "rmtree", crashing_rmtree)
    with pytest.raises(KeyboardInterrupt):
        R.rotation(layout, "promoted")
    monkeypatch.setattr(R.os, "replace", real_replace)
    monkeypatch.setattr(R.shutil, "rmtree", real_rmtree)
    assert len(moved) == renames_before_crash and os.path.exists(layout.state)
    assert _fp(os.path.join(layout.retired_dir(old), "ca.crt")) == old
    report = R.rotation(layout, "current")
    assert report["in_progress"] == (renames_before_crash == 0) and report["changed"] == (renames_before_crash > 0)
    if renames_before_crash == 0:  # nothing moved yet: still phase reissue, promoted by the next step
        assert R.rotation(layout, "promoted")["changed"]
    assert _fp(layout.cert) == new
    loaded = load_signing_ca(layout.cert, layout.key, None)  # key and certificate belong together
    assert X.fingerprint_sha256(loaded.cert) == new
    assert not os.path.exists(layout.next_dir) and not os.path.exists(layout.state)


@pytest.mark.parametrize("damage, needle", [
    ("state-garbage", "is not valid JSON"),
    ("state-phase", "must hold phase"),
    ("next-missing", "is missing: restore it"),
    ("next-replaced", "is not the new CA recorded"),
])
def test_damaged_rotation_is_an_error_that_names_the_file(pki, damage, needle):
    layout = _layout(pki)
    _start(layout)
    if damage == "state-garbage":
        _io.write_file(layout.state, b"{not json", 0o644)
    elif damage == "state-phase":
        _io.write_file(layout.state, json.dumps({"phase": "later", "old": "a", "new": "b"}).encode(), 0o644)
    elif damage == "next-missing":
        os.unlink(layout.next_cert)
    else:
        os.unlink(layout.next_cert)
        os.unlink(layout.next_key)
        ensure_ca(_next_spec(layout))  # some other CA in its place
    before = snapshot(pki.folder)
    with pytest.raises(PKIError, match=needle):
        R.rotation(layout, "current")
    assert snapshot(pki.folder) == before


def test_trust_bundle_refuses_bad_extra_certificates(pki, tmp_path):
    specs = validate_leaves([leaf_item(pki.folder, "alpha")])
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(PKIError, match=r"ca_trust\[0\]: .* does not exist"):
        ensure_certificates(specs, pki.ca_cert, pki.ca_key, ca_trust=[str(tmp_path / "missing.crt")])
    with pytest.raises(PKIError, match=r"ca_trust\[0\]: .* is unreadable"):
        ensure_certificates(specs, pki.ca_cert, pki.ca_key, ca_trust=[str(garbage)])
    leaf = os.path.join(pki.folder, "plugins", "alpha", "server.crt")
    ensure_certificates(specs, pki.ca_cert, pki.ca_key)
    with pytest.raises(PKIError, match="is not a CA certificate"):
        ensure_certificates(specs, pki.ca_cert, pki.ca_key, ca_trust=[leaf])
    # The signing CA itself named again is not repeated in the bundle.
    ensure_certificates(specs, pki.ca_cert, pki.ca_key, ca_trust=[pki.ca_cert])
    assert _certs_in(os.path.join(pki.folder, "plugins", "alpha", "ca.crt")) == 1


def test_each_cas_revocation_list_moves_with_it_on_promotion(pki):
    """ca/ca.crl (the old CA's) is retired with it; ca/next/ca.crl (the new CA's, kept by module crl during the
    rotation) becomes ca/ca.crl; nothing is left in next/."""
    layout = _layout(pki)
    old = _fp(layout.cert)
    started = _start(layout)
    with open(layout.crl, "wb") as handle:
        handle.write(b"old CA's CRL\n")
    with open(layout.next_crl, "wb") as handle:
        handle.write(b"new CA's CRL\n")
    R.rotation(layout, "reissue")
    promoted = R.rotation(layout, "promoted")
    assert promoted["changed"] and _fp(layout.cert) == started["new_fingerprint"]
    with open(layout.crl, "rb") as handle:
        assert handle.read() == b"new CA's CRL\n"
    with open(os.path.join(layout.retired_dir(old), "ca.crl"), "rb") as handle:
        assert handle.read() == b"old CA's CRL\n"
    assert not os.path.exists(layout.next_dir)
