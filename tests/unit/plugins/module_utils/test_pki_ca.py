# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import DEFAULT_CA_SUBJECT
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

from pki_helpers import make_ca, snapshot


def _cert(spec):
    with open(spec.cert_path, "rb") as handle:
        return X.load_certificate(handle.read())


def test_create_then_idempotent(tmp_path):
    spec = make_ca(tmp_path)
    first = ensure_ca(spec)
    assert first["changed"] and first["new_key"] and first["cert_changed"]
    assert first["reasons"] == ["CA key missing", "CA certificate missing"]
    assert first["subject"] == DEFAULT_CA_SUBJECT and first["key_type"] == "ecdsa-256"
    assert oct(os.stat(spec.key_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(spec.cert_path).st_mode & 0o777) == "0o644"
    assert oct(os.stat(os.path.dirname(spec.key_path)).st_mode & 0o777) == "0o700"
    before = snapshot(tmp_path)
    second = ensure_ca(spec)
    assert not second["changed"] and second["reasons"] == [] and "diff" not in second
    assert snapshot(tmp_path) == before


def test_check_mode_from_empty_directory_writes_nothing(tmp_path):
    spec = make_ca(tmp_path / "pki")
    result = ensure_ca(spec, check_mode=True)
    assert result["changed"] and result["cert_changed"] and result["serial"] is None
    assert result["diff"]["before"] == {} and result["diff"]["after"]["subject"] == DEFAULT_CA_SUBJECT
    assert os.listdir(str(tmp_path)) == []


def test_check_mode_on_existing_ca_changes_nothing(tmp_path):
    spec = make_ca(tmp_path)
    ensure_ca(spec)
    before = snapshot(tmp_path)
    later = X.utcnow() + datetime.timedelta(days=800)
    result = ensure_ca(spec, check_mode=True, now=later)
    assert result["changed"] and result["reasons"][0].startswith("CA certificate expires within 30 days")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("days, fragment", [(800, "expires within 30 days"), (900, "expired on")])
def test_renewal_keeps_the_key(tmp_path, days, fragment):
    spec = make_ca(tmp_path)
    ensure_ca(spec)
    with open(spec.key_path, "rb") as handle:
        key_before = handle.read()
    old = _cert(spec)
    result = ensure_ca(spec, now=X.utcnow() + datetime.timedelta(days=days))
    assert result["changed"] and result["cert_changed"] and not result["key_changed"]
    assert fragment in result["reasons"][0]
    with open(spec.key_path, "rb") as handle:
        assert handle.read() == key_before
    new = _cert(spec)
    assert new.serial_number != old.serial_number
    assert X.same_public_key(new.public_key(), old.public_key())


@pytest.mark.parametrize("change, fragment", [
    ({"subject": "/CN=Other-CA"}, "subject changed"),
    ({"valid_days": 3650}, "validity changed: 825 -> 3650 days"),
])
def test_renewal_on_setting_change(tmp_path, change, fragment):
    ensure_ca(make_ca(tmp_path))
    result = ensure_ca(make_ca(tmp_path, **change))
    assert result["cert_changed"] and not result["new_key"]
    assert any(fragment in reason for reason in result["reasons"])


def test_keep_validity_renews_no_ca_for_a_changed_default_but_a_renewal_takes_the_new_one(tmp_path):
    """keep_validity (role pki's pki_ca_days: 0): a CA made with 825 days is not renewed because valid_days is now 3650;
    renewed for its expiry, it gets 3650 days."""
    ensure_ca(make_ca(tmp_path))
    spec = make_ca(tmp_path, valid_days=3650, keep_validity=True)
    assert spec.keep_validity is True
    result = ensure_ca(spec)
    assert not result["changed"] and result["reasons"] == []
    later = X.utcnow() + datetime.timedelta(days=800)
    renewed = ensure_ca(spec, now=later)
    assert renewed["cert_changed"] and not renewed["new_key"]
    assert [r for r in renewed["reasons"] if "validity" in r] == [] and "expires within 30 days" in renewed["reasons"][0]
    assert X.lifetime_days(_cert(spec)) == 3650


def test_upstream_style_ca_is_renewed_with_same_key(tmp_path):
    """A CA without keyUsage (like the upstream Makefile's) gets strict extensions, same key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    spec = make_ca(tmp_path)
    key = X.generate_private_key("ecdsa", 256)
    now = X.utcnow()
    name = X.parse_subject(DEFAULT_CA_SUBJECT)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(os.path.dirname(spec.key_path))
    with open(spec.key_path, "wb") as handle:
        handle.write(X.dump_private_key(key))
    with open(spec.cert_path, "wb") as handle:
        handle.write(X.dump_certificate(cert))
    result = ensure_ca(spec)
    assert result["cert_changed"] and not result["key_changed"]
    assert any("keyUsage" in reason for reason in result["reasons"])
    assert X.ca_problems(_cert(spec)) == []


def test_key_type_change_keeps_key_with_warning(tmp_path):
    ensure_ca(make_ca(tmp_path))
    result = ensure_ca(make_ca(tmp_path, key_type="ed25519"))
    assert not result["changed"]
    assert "kept" in result["warnings"][0] and "ecdsa-256" in result["warnings"][0]


def _corrupt(path):
    with open(path, "wb") as handle:
        handle.write(b"-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("case, fragment, names", [
    ("no_passphrase", "encrypted and no passphrase was given", ["key_path"]),
    ("wrong_passphrase", "wrong passphrase or corrupt file", ["key_path"]),
    ("corrupt_key", "not a valid PEM private key", ["key_path"]),
    ("corrupt_cert", "is unreadable", ["cert_path"]),
    ("mismatch", "does not match CA certificate", ["key_path", "cert_path"]),
    ("cert_without_key", "exists but its key", ["key_path", "cert_path"]),
])
def test_ca_errors_name_the_file_and_never_replace(tmp_path, case, fragment, names):
    spec = make_ca(tmp_path, passphrase="right-pass" if case in ("no_passphrase", "wrong_passphrase") else None)
    ensure_ca(spec)
    if case == "no_passphrase":
        spec = make_ca(tmp_path)
    elif case == "wrong_passphrase":
        spec = make_ca(tmp_path, passphrase="wrong-pass")
    elif case == "corrupt_key":
        _corrupt(spec.key_path)
    elif case == "corrupt_cert":
        with open(spec.cert_path, "wb") as handle:
            handle.write(b"garbage")
    elif case == "mismatch":
        with open(spec.key_path, "wb") as handle:
            handle.write(X.dump_private_key(X.generate_private_key("ecdsa", 256)))
    elif case == "cert_without_key":
        os.unlink(spec.key_path)
    before = snapshot(tmp_path)
    for check_mode in (True, False):
        with pytest.raises(PKIError) as err:
            ensure_ca(spec, check_mode=check_mode)
        message = str(err.value)
        assert fragment in message
        for name in names:
            assert getattr(spec, name) in message
        assert "right-pass" not in message and "wrong-pass" not in message
    assert snapshot(tmp_path) == before


def test_passphrase_encrypts_existing_key_in_place(tmp_path):
    ensure_ca(make_ca(tmp_path))
    spec = make_ca(tmp_path, passphrase="s3cret")
    old_cert = snapshot(tmp_path)["ca/ca.crt"]
    result = ensure_ca(spec)
    assert result["key_changed"] and not result["new_key"] and not result["cert_changed"]
    assert snapshot(tmp_path)["ca/ca.crt"] == old_cert
    with open(spec.key_path, "rb") as handle:
        data = handle.read()
    assert X.is_encrypted_pem(data)
    assert not ensure_ca(spec)["changed"]
    assert "s3cret" not in repr(result) and "s3cret" not in repr(spec)


def test_regenerate_always_backs_up(tmp_path):
    ensure_ca(make_ca(tmp_path))
    old = snapshot(tmp_path)
    result = ensure_ca(make_ca(tmp_path, regenerate="always", backup=False))
    assert result["new_key"] and result["reasons"] == ["regenerate=always"]
    assert len(result["backup_files"]) == 2
    backups = {os.path.basename(path): path for path in result["backup_files"]}
    for name in ("ca.key", "ca.crt"):
        match = [path for base, path in backups.items() if base.startswith(name + ".")]
        assert match, backups
        with open(match[0], "rb") as handle:
            assert handle.read() == old["ca/" + name][0]
        assert os.stat(match[0]).st_mode & 0o777 == old["ca/" + name][1]
    assert snapshot(tmp_path)["ca/ca.key"] != old["ca/ca.key"]


def test_mode_drift_is_fixed(tmp_path):
    spec = make_ca(tmp_path)
    ensure_ca(spec)
    os.chmod(spec.key_path, 0o644)
    result = ensure_ca(spec)
    assert result["changed"] and result["attributes_changed"] == [spec.key_path] and not result["key_changed"]
    assert os.stat(spec.key_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("params, fragment", [
    ({"valid_days": 0}, "valid_days must be > 0"),
    ({"valid_days": -5}, "valid_days must be > 0"),
    ({"renew_before_days": 825}, "renew_before_days (825) must be smaller than valid_days (825)"),
    ({"renew_before_days": -1}, "renew_before_days must be >= 0"),
    ({"key_type": "rsa", "key_size": 1024}, "key_size 1024 is not valid"),
    ({"key_type": "ed25519", "key_size": 256}, "must not be set for key_type ed25519"),
    ({"subject": "CN=x"}, "subject: must start with '/'"),
    ({"regenerate": "sometimes"}, "regenerate must be never or always"),
    ({"key_mode": "rwx"}, "key_mode: invalid mode"),
    ({"owner": "no-such-user-x"}, "owner: unknown user"),
    ({"lock_timeout": -1}, "lock_timeout must be >= 0"),
])
def test_bad_input_fails_before_writing(tmp_path, params, fragment):
    with pytest.raises(PKIError) as err:
        ensure_ca(make_ca(tmp_path, **params))
    assert fragment in str(err.value)
    assert os.listdir(str(tmp_path)) == []
