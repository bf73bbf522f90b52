# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkiinfo import certificate_info
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_leaves
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

from pki_helpers import PKI, leaf_item, snapshot


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)


def test_first_run_then_idempotent_byte_identical(pki, tmp_path):
    items = [leaf_item(tmp_path, "alpha"), leaf_item(tmp_path, "beta", profile="client")]
    first = pki.run(items)
    assert first["changed"]
    for result in first["certificates"]:
        assert result["reasons"] == ["certificate missing", "key missing"]
        assert result["new_key"] and result["ca_copy_changed"] and result["serial"]
    assert first["certificates"][0]["name"] == "alpha"
    assert _read(items[0]["ca_copy_path"]) == _read(pki.ca_cert)
    base = os.path.dirname(items[0]["key_path"])
    assert oct(os.stat(base).st_mode & 0o777) == "0o700"
    assert oct(os.stat(items[0]["key_path"]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(items[0]["cert_path"]).st_mode & 0o777) == "0o644"
    before = snapshot(tmp_path)
    second = pki.run(items)
    assert not second["changed"]
    assert all(not r["changed"] and r["reasons"] == [] for r in second["certificates"])
    assert second["diff"] == {"before": {}, "after": {}}
    assert snapshot(tmp_path) == before
    assert not [name for name in os.listdir(base) if name.endswith(".tmp")]


def test_check_mode_from_empty_directory(pki, tmp_path):
    items = [leaf_item(tmp_path, "alpha")]
    before = snapshot(tmp_path)
    result = pki.run(items, check_mode=True)
    cert = result["certificates"][0]
    assert result["changed"] and cert["reissued"] and cert["serial"] is None
    assert cert["reasons"] == ["certificate missing", "key missing"]
    after = result["diff"]["after"][items[0]["cert_path"]]
    assert after["subject"] == items[0]["subject"] and after["key_type"] == "ecdsa-256"
    assert "DNS:alpha" in after["sans"]
    assert snapshot(tmp_path) == before
    assert not os.path.exists(os.path.join(str(tmp_path), "plugins"))


def test_check_mode_before_the_ca_exists(tmp_path):
    specs = validate_leaves([leaf_item(tmp_path, "alpha")])
    ca_dir = os.path.join(str(tmp_path), "ca")
    result = ensure_certificates(specs, ca_dir + "/ca.crt", ca_dir + "/ca.key", check_mode=True)
    assert result["changed"] and "does not exist yet" in result["warnings"][0]
    assert result["certificates"][0]["ca_copy_changed"]
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(PKIError, match="CA key .*ca.key does not exist"):
        ensure_certificates(specs, ca_dir + "/ca.crt", ca_dir + "/ca.key")


def _mutate(case, pki, tmp_path, item):
    """Bring the issued leaf into the state CASE; return (new item, run kwargs)."""
    kwargs = {}
    if case == "cert_missing":
        os.unlink(item["cert_path"])
    elif case == "key_missing":
        os.unlink(item["key_path"])
    elif case == "cert_unreadable":
        _write(item["cert_path"], b"garbage")
    elif case == "key_unreadable":
        _write(item["key_path"], b"-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    elif case == "expiring":
        kwargs["now"] = X.utcnow() + datetime.timedelta(days=80)
    elif case == "expired":
        kwargs["now"] = X.utcnow() + datetime.timedelta(days=101)
    elif case == "other_ca":
        other = PKI(tmp_path / "other")
        other_item = dict(item, key_path=str(tmp_path / "o.key"), cert_path=str(tmp_path / "o.crt"),
                          ca_copy_path=None)
        other.run([other_item])
        os.replace(other_item["cert_path"], item["cert_path"])
        os.replace(other_item["key_path"], item["key_path"])
    elif case == "key_mismatch":
        _write(item["key_path"], X.dump_private_key(X.generate_private_key("ecdsa", 256)))
    elif case == "subject":
        item = dict(item, subject="/CN=renamed/O=MCPGateway")
    elif case == "sans":
        item = dict(item, sans=item["sans"] + ["IP:10.0.0.9"])
    elif case == "key_type":
        item = dict(item, key_type="ed25519")
    elif case == "key_size":
        item = dict(item, key_size=384)
    elif case == "profile":
        item = dict(item, profile="client")
    elif case == "passphrase":
        item = dict(item, passphrase="leaf-secret")
    elif case == "force":
        item = dict(item, force=True)
    return item, kwargs


@pytest.mark.parametrize("case, reason", [
    ("cert_missing", "certificate missing"),
    ("key_missing", "key missing"),
    ("cert_unreadable", "certificate unreadable: not a valid PEM certificate"),
    ("key_unreadable", "key unreadable: not a valid PEM private key"),
    ("expiring", "expires within 30 days"),
    ("expired", "expired on"),
    ("other_ca", "not signed by the current CA"),
    ("key_mismatch", "key does not match certificate"),
    ("subject", "subject changed: /CN=mcp-plugin-alpha/O=MCPGateway/OU=Plugins -> /CN=renamed/O=MCPGateway"),
    ("sans", "SANs changed"),
    ("key_type", "key type changed: ecdsa-256 -> ed25519"),
    ("key_size", "key type changed: ecdsa-256 -> ecdsa-384"),
    ("profile", "profile changed: extendedKeyUsage is serverAuth (want clientAuth)"),
    ("passphrase", "key is not passphrase-protected"),
    ("force", "force=true"),
])
def test_every_reissue_reason(pki, tmp_path, case, reason):
    item = leaf_item(tmp_path, "alpha", valid_days=100)
    pki.run([item])
    item, kwargs = _mutate(case, pki, tmp_path, item)
    check = pki.run([item], check_mode=True, **kwargs)["certificates"][0]
    assert check["reissued"] and any(r.startswith(reason) for r in check["reasons"]), check["reasons"]
    result = pki.run([item], **kwargs)["certificates"][0]
    assert result["reissued"] and result["reasons"] == check["reasons"]
    assert result["new_key"]
    # And afterwards the leaf is valid again: the next run (same clock) changes nothing.
    again = pki.run([dict(item, force=False)], **kwargs)["certificates"][0]
    assert not again["changed"], again["reasons"]
    info = certificate_info([{"cert_path": item["cert_path"], "key_path": item["key_path"],
                              "passphrase": item.get("passphrase")}], pki.ca_cert,
                            now=kwargs.get("now"))["certificates"][0]
    assert info["chain_valid"] and info["key_matches"]


def test_san_order_and_case_do_not_matter(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", sans=["a", "b", "IP:10.0.0.1"])
    pki.run([item])
    item = dict(item, sans=["IP:10.0.0.1", "B", "a", "a"])
    assert not pki.run([item])["changed"]


def test_keep_key_reuses_valid_key(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", keep_key=True)
    pki.run([item])
    key_before = _read(item["key_path"])
    result = pki.run([dict(item, force=True)])["certificates"][0]
    assert result["reissued"] and not result["new_key"] and not result["key_changed"]
    assert _read(item["key_path"]) == key_before
    # A key of another type is not reused.
    result = pki.run([dict(item, key_size=384)])["certificates"][0]
    assert result["new_key"] and _read(item["key_path"]) != key_before


def test_keep_key_encrypts_reused_key(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", keep_key=True)
    pki.run([item])
    public = X.load_private_key(_read(item["key_path"]), None).public_key()
    result = pki.run([dict(item, passphrase="pw")])["certificates"][0]
    assert result["key_changed"] and not result["new_key"]
    assert X.same_public_key(X.load_private_key(_read(item["key_path"]), "pw").public_key(), public)


def test_crash_between_key_and_cert_is_repaired(pki, tmp_path):
    """A new key without its new certificate (crash) is detected as a mismatch and re-issued."""
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    _write(item["key_path"], X.dump_private_key(X.generate_private_key("ecdsa", 256)))
    result = pki.run([item])["certificates"][0]
    assert result["reasons"] == ["key does not match certificate"]
    assert not pki.run([item])["changed"]


def test_keep_key_after_crash_reuses_the_new_key(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", keep_key=True)
    pki.run([item])
    new_key = X.generate_private_key("ecdsa", 256)
    _write(item["key_path"], X.dump_private_key(new_key))
    result = pki.run([item])["certificates"][0]
    assert result["reissued"] and not result["new_key"]
    cert = X.load_certificate(_read(item["cert_path"]))
    assert X.same_public_key(cert.public_key(), new_key.public_key())


def test_ca_copy_rewritten_only_when_different(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    _write(item["ca_copy_path"], b"stale")
    result = pki.run([item])["certificates"][0]
    assert result["changed"] and result["ca_copy_changed"] and not result["reissued"]
    assert _read(item["ca_copy_path"]) == _read(pki.ca_cert)
    mtime = os.stat(item["ca_copy_path"]).st_mtime_ns
    assert not pki.run([item])["changed"]
    assert os.stat(item["ca_copy_path"]).st_mtime_ns == mtime


def test_shared_ca_copy(pki, tmp_path):
    shared = str(tmp_path / "gateway" / "ca.crt")
    items = [leaf_item(tmp_path, "alpha", ca_copy_path=shared), leaf_item(tmp_path, "beta", ca_copy_path=shared)]
    pki.run(items)
    assert _read(shared) == _read(pki.ca_cert)
    assert not pki.run(items)["changed"]


def test_ca_renewal_keeps_leaves_and_refreshes_copies(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    cert_before = _read(item["cert_path"])
    later = X.utcnow() + datetime.timedelta(days=800)
    ensure_ca(pki.ca_spec, now=later)
    result = pki.run([dict(item, renew_before_days=1)], now=later)["certificates"][0]
    assert not result["reissued"] and result["ca_copy_changed"]
    assert _read(item["cert_path"]) == cert_before


def test_backup_of_replaced_leaf_files(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", backup=True)
    pki.run([item])
    old_key, old_cert = _read(item["key_path"]), _read(item["cert_path"])
    result = pki.run([dict(item, force=True)])["certificates"][0]
    assert len(result["backup_files"]) == 2
    contents = sorted(_read(path) for path in result["backup_files"])
    assert contents == sorted([old_key, old_cert])
    key_backup = [p for p in result["backup_files"] if os.path.basename(p).startswith("server.key.")][0]
    assert os.stat(key_backup).st_mode & 0o777 == 0o600


def test_mode_drift_is_fixed_without_reissue(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha")
    pki.run([item])
    os.chmod(item["key_path"], 0o644)
    check = pki.run([item], check_mode=True)["certificates"][0]
    assert check["changed"] and check["attributes_changed"] == [item["key_path"]]
    assert os.stat(item["key_path"]).st_mode & 0o777 == 0o644
    result = pki.run([item])["certificates"][0]
    assert result["changed"] and not result["reissued"]
    assert os.stat(item["key_path"]).st_mode & 0o777 == 0o600


def test_rsa_leaf_and_custom_modes(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", key_type="rsa", key_size=2048, key_mode="0640", cert_mode="0600")
    result = pki.run([item])["certificates"][0]
    assert result["key_type"] == "rsa-2048"
    assert os.stat(item["key_path"]).st_mode & 0o777 == 0o640
    assert os.stat(item["cert_path"]).st_mode & 0o777 == 0o600


def test_defaults_inherit_and_item_key_type_resets_size(pki, tmp_path):
    items = [leaf_item(tmp_path, "alpha", key_type=None), leaf_item(tmp_path, "beta", key_type="ecdsa")]
    specs = validate_leaves(items, {"key_type": "ecdsa", "key_size": 384, "valid_days": 90,
                                    "renew_before_days": 10, "profile": "client"})
    assert (specs[0].key_type, specs[0].key_size, specs[0].valid_days, specs[0].profile) == ("ecdsa", 384, 90, "client")
    assert specs[1].key_size == 256


def test_passphrase_never_in_results(pki, tmp_path):
    item = leaf_item(tmp_path, "alpha", passphrase="very-secret-pw")
    result = pki.run([item])
    assert "very-secret-pw" not in repr(result)
    assert X.is_encrypted_pem(_read(item["key_path"]))
    specs = validate_leaves([item])
    assert "very-secret-pw" not in repr(specs)
    # The wrong passphrase makes the key unreadable: re-issue, and say so without the secret.
    wrong = pki.run([dict(item, passphrase="other-pw")], check_mode=True)["certificates"][0]
    assert wrong["reasons"] == ["key unreadable: wrong passphrase or corrupt file", "key does not match certificate"][:1]


@pytest.mark.parametrize("change, fragment", [
    ({"valid_days": 0}, "certificates[0]: valid_days must be > 0"),
    ({"valid_days": 30, "renew_before_days": 30}, "certificates[0]: renew_before_days (30) must be smaller"),
    ({"key_type": "ecdsa", "key_size": 4096}, "certificates[0]: key_type/key_size: key_size 4096 is not valid"),
    ({"key_type": "ed25519", "key_size": 256}, "must not be set for key_type ed25519"),
    ({"subject": "/CN"}, "certificates[0]: subject: 'CN' is not KEY=VALUE"),
    ({"subject": None}, "certificates[0]: subject is required"),
    ({"sans": ["ok", "bad name"]}, "certificates[0]: sans[1]: 'bad name' is not a valid DNS name"),
    ({"sans": ["IP:1.2.3"]}, "is not an IP address"),
    ({"profile": "both"}, "certificates[0]: profile must be server or client"),
    ({"name": ""}, "certificates[0]: name: invalid certificate name '': must not be empty"),
    ({"name": "a/b"}, "must not contain '/'"),
    ({"name": ".."}, "must not contain '..'"),
    ({"key_path": None}, "certificates[0]: key_path is required"),
    ({"cert_path": "/tmp/"}, "must be a file path"),
    ({"bogus": 1}, "unknown option(s) bogus"),
])
def test_bad_item_fails_before_writing(pki, tmp_path, change, fragment):
    before = snapshot(tmp_path)
    item = leaf_item(tmp_path, "alpha")
    item.update(change)
    with pytest.raises(PKIError) as err:
        pki.run([leaf_item(tmp_path, "zeta"), item][1:])
    assert fragment in str(err.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("second, fragment", [
    ({"name": "beta"}, "certificates[1].key_path: "),
    ({"name": "beta", "key_path": "/x/k"}, "certificates[1].cert_path: "),
    ({"key_path": "/x/k", "cert_path": "/x/c"}, "certificates[1].name: duplicate certificate name 'alpha'"),
    ({"name": "beta", "key_path": "/x/k", "cert_path": "/x/c", "ca_copy_path": None}, None),
])
def test_duplicates_in_a_set(pki, tmp_path, second, fragment):
    first = leaf_item(tmp_path, "alpha")
    other = dict(first, **second)
    if fragment is None:
        # Same ca_copy_path for two entries is fine; a copy that is another entry's key is not.
        validate_leaves([first, other])
        bad = dict(other, ca_copy_path=first["key_path"])
        with pytest.raises(PKIError, match="is also a key or certificate"):
            validate_leaves([first, bad])
        return
    before = snapshot(tmp_path)
    with pytest.raises(PKIError) as err:
        pki.run([first, other])
    assert fragment in str(err.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case, fragment", [
    ("ca_key_corrupt", "cannot open CA key"),
    ("ca_cert_corrupt", "CA certificate .*ca.crt is unreadable"),
    ("ca_mismatch", "CA key .*ca.key does not match CA certificate .*ca.crt"),
    ("ca_cert_missing", "CA certificate .*ca.crt does not exist"),
    ("ca_expired", "expired on"),
    ("ca_wrong_passphrase", "cannot open CA key .*ca.key: wrong passphrase"),
])
def test_bad_ca_fails_before_writing(tmp_path, case, fragment):
    pki = PKI(tmp_path, passphrase="ca-pass" if case == "ca_wrong_passphrase" else None)
    kwargs = {}
    if case == "ca_key_corrupt":
        _write(pki.ca_key, b"junk")
    elif case == "ca_cert_corrupt":
        _write(pki.ca_cert, b"junk")
    elif case == "ca_mismatch":
        _write(pki.ca_key, X.dump_private_key(X.generate_private_key("ecdsa", 256)))
    elif case == "ca_cert_missing":
        os.unlink(pki.ca_cert)
    elif case == "ca_expired":
        kwargs["now"] = X.utcnow() + datetime.timedelta(days=900)
    elif case == "ca_wrong_passphrase":
        pki.passphrase = "nope"
    before = snapshot(tmp_path)
    with pytest.raises(PKIError, match=fragment) as err:
        pki.run([leaf_item(tmp_path, "alpha")], **kwargs)
    assert "ca-pass" not in str(err.value) and "nope" not in str(err.value)
    assert snapshot(tmp_path) == before


def test_set_runs_in_parallel_and_serially_alike(pki, tmp_path):
    items = [leaf_item(tmp_path, "n%02d" % i) for i in range(12)]
    result = pki.run(items, workers=4)
    assert sum(r["reissued"] for r in result["certificates"]) == 12
    assert [r["name"] for r in result["certificates"]] == ["n%02d" % i for i in range(12)]
    assert not pki.run(items, workers=1)["changed"]
    serials = {r["serial"] for r in result["certificates"]}
    assert len(serials) == 12
