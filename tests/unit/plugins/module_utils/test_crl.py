# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CA's CRL (module_utils/_crl.py) with real keys and certificates: signing, revoking, re-signing before
nextUpdate, replacing a foreign or broken CRL, check mode, crl_info, and OpenSSL (the openssl program and
Python's ssl) enforcing the result."""
from __future__ import annotations

import datetime
import os
import re
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._crl import crl_info, ensure_crl, validate_crl
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pki import ensure_certificates
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkispec import validate_leaves

from pki_helpers import PKI, leaf_item, make_ca, snapshot

NOW = X.utcnow()
OTHER_SUBJECT = "/CN=Other-CA/O=Elsewhere"


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _crl_path(tmp_path):
    return str(tmp_path / "ca" / "ca.crl")


def _spec(pki, tmp_path, **overrides):
    params = {"path": _crl_path(tmp_path), "ca_cert": pki.ca_cert, "ca_key": pki.ca_key,
              "ca_passphrase": pki.passphrase}
    params.update(overrides)
    return validate_crl(params)


def _leaves(pki, folder, *names, profile="client"):
    """Issue client leaves NAMES with the CA of PKI; returns their certificate paths."""
    items = [leaf_item(folder, name, profile=profile) for name in names]
    pki.run(items)
    return [item["cert_path"] for item in items]


def _serial(cert_path):
    return "%x" % X.load_certificate(_read(cert_path)).serial_number


def _other_ca(folder, subject=OTHER_SUBJECT):
    """A second CA (another key, by default another name) with one client leaf: (ca spec, leaf cert path)."""
    spec = make_ca(folder, subject=subject)
    ensure_ca(spec)
    item = leaf_item(folder, "stray", profile="client")
    ensure_certificates(validate_leaves([item]), spec.cert_path, spec.key_path)
    return spec, item["cert_path"]


def _openssl_crl(crl_path, ca_path):
    out = subprocess.run(["openssl", "crl", "-in", crl_path, "-CAfile", ca_path, "-noout", "-text"],
                         capture_output=True, text=True, check=False)
    return out.returncode, out.stdout + out.stderr


def _openssl_serials(text):
    return sorted("%x" % int(value, 16) for value in re.findall(r"Serial Number: ([0-9A-F]+)", text))


# ---------------------------------------------------------------- create, keep, revoke

def test_first_run_creates_then_nothing_changes(pki, tmp_path):
    spec = _spec(pki, tmp_path)
    first = ensure_crl(spec, now=NOW)
    assert first["changed"] and first["reasons"] == ["CRL missing"]
    assert first["crl_number"] == 1 and first["revoked"] == [] and first["added"] == []
    assert first["path"] == spec.path
    assert first["issuer"] == X.format_name(X.load_certificate(_read(pki.ca_cert)).subject)
    assert first["next_update"] == X.iso(NOW + datetime.timedelta(days=30)) and first["days_left"] == 30
    assert first["last_update"] == X.iso(NOW - datetime.timedelta(minutes=5))
    after = {"crl_number": 1, "last_update": first["last_update"], "next_update": first["next_update"], "revoked": []}
    assert first["diff"] == {"before": {}, "after": after}
    assert oct(os.stat(spec.path).st_mode & 0o777) == "0o644"
    crl = x509.load_pem_x509_crl(_read(spec.path))
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ski = X.load_certificate(_read(pki.ca_cert)).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki == ski.value.digest
    before = snapshot(tmp_path)
    second = ensure_crl(spec, now=NOW + datetime.timedelta(hours=1))
    assert not second["changed"] and second["reasons"] == [] and "diff" not in second
    assert second["crl_number"] == 1 and second["next_update"] == first["next_update"]
    assert second["days_left"] == 29
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key_type", ["ecdsa", "ed25519"])
def test_revoke_a_leaf_openssl_accepts_the_crl_and_a_second_run_keeps_its_date(tmp_path, key_type):
    pki = PKI(tmp_path)
    if key_type != "ecdsa":
        pki.ca_spec = make_ca(tmp_path / key_type, key_type=key_type)
        ensure_ca(pki.ca_spec)
    bad, good = _leaves(pki, tmp_path, "bad", "good")
    ensure_crl(_spec(pki, tmp_path), now=NOW)
    later = NOW + datetime.timedelta(hours=2)
    result = ensure_crl(_spec(pki, tmp_path, revoke=[bad]), now=later)
    serial = _serial(bad)
    assert result["changed"] and result["crl_number"] == 2 and result["added"] == [serial]
    assert result["reasons"] == ["revoking serial %s (%s)" % (serial, bad)]
    assert result["revoked"] == [{"serial": serial, "revocation_date": X.iso(later), "reason": "keyCompromise"}]
    assert re.match(r"^[0-9a-f]+$", serial)
    code, text = _openssl_crl(_crl_path(tmp_path), pki.ca_cert)
    assert code == 0 and "verify OK" in text, text
    assert _openssl_serials(text) == [serial] and "Key Compromise" in text
    assert re.search(r"X509v3 CRL Number: *\n *2\b", text), text
    assert _serial(good) not in _openssl_serials(text)

    before = snapshot(tmp_path)
    again = ensure_crl(_spec(pki, tmp_path, revoke=[bad]), now=later + datetime.timedelta(days=1))
    assert not again["changed"] and again["added"] == [] and again["crl_number"] == 2
    assert again["revoked"][0]["revocation_date"] == X.iso(later)
    assert snapshot(tmp_path) == before

    both = ensure_crl(_spec(pki, tmp_path, revoke=[bad, good, good], reason="superseded"),
                      now=later + datetime.timedelta(days=2))
    assert both["added"] == [_serial(good)] and both["crl_number"] == 3
    assert [(e["serial"], e["reason"]) for e in both["revoked"]] == [(serial, "keyCompromise"),
                                                                     (_serial(good), "superseded")]
    assert both["revoked"][0]["revocation_date"] == X.iso(later)


def test_reason_unspecified_is_an_entry_without_a_reason_code(pki, tmp_path):
    (leaf,) = _leaves(pki, tmp_path, "gone")
    result = ensure_crl(_spec(pki, tmp_path, revoke=[leaf], reason="unspecified"), now=NOW)
    assert result["revoked"][0]["reason"] == "unspecified"
    (entry,) = list(x509.load_pem_x509_crl(_read(_crl_path(tmp_path))))
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_revoking_the_ca_certificate_is_refused_and_the_crl_stays(pki, tmp_path):
    ensure_crl(_spec(pki, tmp_path), now=NOW)
    before = snapshot(tmp_path)
    with pytest.raises(PKIError, match=r"revoke\[0\]: %s is the CA certificate itself" % re.escape(pki.ca_cert)):
        ensure_crl(_spec(pki, tmp_path, revoke=[pki.ca_cert]), now=NOW)
    assert snapshot(tmp_path) == before


def test_revoking_another_ca_certificate_is_refused(pki, tmp_path):
    other, dummy = _other_ca(tmp_path / "other")
    with pytest.raises(PKIError, match=r"%s is a CA certificate \(basicConstraints CA:TRUE\)" % re.escape(
            other.cert_path)):
        ensure_crl(_spec(pki, tmp_path, revoke=[other.cert_path]), now=NOW)
    assert not os.path.exists(_crl_path(tmp_path))


def test_revoking_a_leaf_of_another_ca_names_both_issuers(pki, tmp_path):
    (mine,) = _leaves(pki, tmp_path, "mine")
    ensure_crl(_spec(pki, tmp_path), now=NOW)
    dummy, stray = _other_ca(tmp_path / "other")
    before = snapshot(tmp_path)
    with pytest.raises(PKIError) as caught:
        ensure_crl(_spec(pki, tmp_path, revoke=[mine, stray]), now=NOW)
    message = str(caught.value)
    assert message.startswith("revoke[1]: certificate %s was issued by %s, not by this CA " % (stray, OTHER_SUBJECT))
    assert X.format_name(X.load_certificate(_read(pki.ca_cert)).subject) in message and pki.ca_cert in message
    assert snapshot(tmp_path) == before  # nothing revoked, not even the valid one


def test_a_leaf_of_a_ca_with_the_same_name_but_another_key_is_refused(pki, tmp_path):
    dummy, twin_leaf = _other_ca(tmp_path / "twin", subject=None)  # the default CA subject, as pki's CA
    with pytest.raises(PKIError, match=r"\(same name, another key\)"):
        ensure_crl(_spec(pki, tmp_path, revoke=[twin_leaf]), now=NOW)


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_a_missing_or_broken_certificate_to_revoke_is_named(pki, tmp_path, content):
    path = str(tmp_path / "x.crt")
    if content is not None:
        with open(path, "wb") as handle:
            handle.write(content)
    with pytest.raises(PKIError, match=r"revoke\[0\]: certificate %s (does not exist|is unreadable)" % re.escape(path)):
        ensure_crl(_spec(pki, tmp_path, revoke=[path]), now=NOW)


# ---------------------------------------------------------------- re-signing

@pytest.mark.parametrize("days, fragment", [(16, "CRL nextUpdate within 15 days"), (31, "CRL nextUpdate passed on")])
def test_near_or_past_next_update_resigns_with_the_same_entries(pki, tmp_path, days, fragment):
    (leaf,) = _leaves(pki, tmp_path, "old")
    first = ensure_crl(_spec(pki, tmp_path, revoke=[leaf]), now=NOW)
    later = NOW + datetime.timedelta(days=days)
    still = ensure_crl(_spec(pki, tmp_path), now=NOW + datetime.timedelta(days=14))
    assert not still["changed"]
    result = ensure_crl(_spec(pki, tmp_path), now=later)
    assert result["changed"] and len(result["reasons"]) == 1 and result["reasons"][0].startswith(fragment)
    assert result["crl_number"] == first["crl_number"] + 1
    assert result["revoked"] == first["revoked"] and result["added"] == []
    assert result["next_update"] == X.iso(later + datetime.timedelta(days=30)) and result["days_left"] == 30
    assert crl_info(_crl_path(tmp_path), _read(pki.ca_cert), now=later)["revoked_serials"] == [_serial(leaf)]


def test_a_crl_of_another_ca_is_replaced_and_its_entries_dropped(pki, tmp_path):
    other, stray = _other_ca(tmp_path / "other")
    path = _crl_path(tmp_path)
    other_spec = validate_crl({"path": path, "ca_cert": other.cert_path, "ca_key": other.key_path, "revoke": [stray]})
    for dummy in range(2):
        ensure_crl(other_spec, now=NOW, check_mode=False)
    ensure_crl(other_spec, now=NOW + datetime.timedelta(days=20))  # number 2 with that CA
    result = ensure_crl(_spec(pki, tmp_path), now=NOW)
    assert result["changed"] and result["revoked"] == [] and result["crl_number"] == 1
    assert result["reasons"] == ["CRL was issued by another CA (%s) (its 1 entries are dropped: they belong to "
                                 "that CA)" % OTHER_SUBJECT]
    before = result["diff"]["before"]
    assert before["crl_number"] == 2 and before["revoked"][0]["serial"] == _serial(stray)
    info = crl_info(path, _read(pki.ca_cert), now=NOW)
    assert info["signature_ok"] and info["revoked_serials"] == [] and info["crl_number"] == 1


def test_a_crl_signed_by_another_key_of_the_same_name_is_replaced(pki, tmp_path):
    twin, dummy = _other_ca(tmp_path / "twin", subject=None)
    path = _crl_path(tmp_path)
    ensure_crl(validate_crl({"path": path, "ca_cert": twin.cert_path, "ca_key": twin.key_path}), now=NOW)
    result = ensure_crl(_spec(pki, tmp_path), now=NOW)
    assert result["changed"] and result["reasons"][0].startswith("CRL was signed by another key than this CA's")


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
def test_a_garbage_file_is_replaced(pki, tmp_path, content):
    path = _crl_path(tmp_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)
    result = ensure_crl(_spec(pki, tmp_path), now=NOW)
    assert result["changed"] and result["reasons"] == ["CRL %s is not a PEM CRL: replaced" % path]
    assert result["crl_number"] == 1 and crl_info(path, _read(pki.ca_cert))["signature_ok"] is True


def test_a_crl_without_the_extensions_is_resigned_with_its_entries(pki, tmp_path):
    (leaf,) = _leaves(pki, tmp_path, "bare")
    ca_cert = X.load_certificate(_read(pki.ca_cert))
    ca_key = X.load_private_key(_read(pki.ca_key), None)
    revoked = x509.RevokedCertificateBuilder().serial_number(int(_serial(leaf), 16)).revocation_date(
        NOW - datetime.timedelta(days=3)).build()
    bare = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(NOW)
            .next_update(NOW + datetime.timedelta(days=30)).add_revoked_certificate(revoked)
            .sign(ca_key, X.signature_hash(ca_key)))
    path = _crl_path(tmp_path)
    with open(path, "wb") as handle:
        handle.write(bare.public_bytes(serialization.Encoding.PEM))
    result = ensure_crl(_spec(pki, tmp_path), now=NOW)
    assert result["reasons"] == ["CRL lacks the CRLNumber extension", "CRL lacks the authorityKeyIdentifier of this CA"]
    assert result["crl_number"] == 1
    assert result["revoked"] == [{"serial": _serial(leaf), "revocation_date": X.iso(NOW - datetime.timedelta(days=3)),
                                  "reason": "unspecified"}]
    assert not ensure_crl(_spec(pki, tmp_path), now=NOW)["changed"]


def test_mode_is_corrected_without_resigning(pki, tmp_path):
    ensure_crl(_spec(pki, tmp_path), now=NOW)
    path = _crl_path(tmp_path)
    data = _read(path)
    os.chmod(path, 0o600)
    result = ensure_crl(_spec(pki, tmp_path), now=NOW)
    assert result["changed"] and result["reasons"] == [] and result["crl_number"] == 1
    assert oct(os.stat(path).st_mode & 0o777) == "0o644" and _read(path) == data
    custom = ensure_crl(_spec(pki, tmp_path, mode="0640"), now=NOW)
    assert custom["changed"] and oct(os.stat(path).st_mode & 0o777) == "0o640"


# ---------------------------------------------------------------- check mode

def test_check_mode_writes_nothing(pki, tmp_path):
    (leaf,) = _leaves(pki, tmp_path, "maybe")
    before = snapshot(tmp_path)
    predicted = ensure_crl(_spec(pki, tmp_path), check_mode=True, now=NOW)
    assert predicted["changed"] and predicted["reasons"] == ["CRL missing"] and predicted["crl_number"] == 1
    assert predicted["next_update"] == X.iso(NOW + datetime.timedelta(days=30))
    assert snapshot(tmp_path) == before and not os.path.exists(_crl_path(tmp_path))
    ensure_crl(_spec(pki, tmp_path), now=NOW)
    before = snapshot(tmp_path)
    revoke = ensure_crl(_spec(pki, tmp_path, revoke=[leaf]), check_mode=True, now=NOW)
    assert revoke["changed"] and revoke["added"] == [_serial(leaf)] and revoke["crl_number"] == 2
    assert revoke["diff"]["before"]["revoked"] == []
    assert revoke["diff"]["after"]["revoked"][0]["serial"] == _serial(leaf)
    stale = ensure_crl(_spec(pki, tmp_path), check_mode=True, now=NOW + datetime.timedelta(days=20))
    assert stale["changed"] and stale["reasons"][0].startswith("CRL nextUpdate within 15 days")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- errors

def test_wrong_or_missing_ca_passphrase_is_one_clear_error(tmp_path):
    pki = PKI(tmp_path, passphrase="right-secret")
    with pytest.raises(PKIError, match=r"^cannot open CA key %s: wrong passphrase or corrupt file$" % re.escape(
            pki.ca_key)) as caught:
        ensure_crl(_spec(pki, tmp_path, ca_passphrase="wrong-secret"), now=NOW)
    assert "secret" not in str(caught.value)
    with pytest.raises(PKIError, match=r"cannot open CA key .*: it is encrypted and no passphrase was given"):
        ensure_crl(_spec(pki, tmp_path, ca_passphrase=None), now=NOW)
    assert not os.path.exists(_crl_path(tmp_path))
    assert ensure_crl(_spec(pki, tmp_path), now=NOW)["crl_number"] == 1


def test_a_ca_key_of_another_ca_is_refused(pki, tmp_path):
    other, dummy = _other_ca(tmp_path / "other")
    with pytest.raises(PKIError, match=r"CA key %s does not match CA certificate %s" % (
            re.escape(other.key_path), re.escape(pki.ca_cert))):
        ensure_crl(_spec(pki, tmp_path, ca_key=other.key_path), now=NOW)


def test_a_missing_ca_is_named(tmp_path):
    params = {"path": str(tmp_path / "ca.crl"), "ca_cert": str(tmp_path / "no" / "ca.crt"),
              "ca_key": str(tmp_path / "no" / "ca.key")}
    with pytest.raises(PKIError, match="CA key %s does not exist" % re.escape(params["ca_key"])):
        ensure_crl(validate_crl(params), now=NOW)
    with pytest.raises(PKIError, match="CA key %s does not exist" % re.escape(params["ca_key"])):
        ensure_crl(validate_crl(params), check_mode=True, now=NOW)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("overrides, fragment", [
    ({"renew_before_days": 30}, "renew_before_days (30) must be smaller than next_update_days (30)"),
    ({"renew_before_days": 20, "next_update_days": 7},
     "renew_before_days (20) must be smaller than next_update_days (7)"),
    ({"next_update_days": 0, "renew_before_days": 0}, "next_update_days must be >= 1, got 0"),
    ({"renew_before_days": -1}, "renew_before_days must be >= 0, got -1"),
    ({"reason": "cACompromise"}, "reason must be one of unspecified, keyCompromise"),
    ({"mode": "0999"}, "mode: invalid mode"),
    ({"path": "/x/ca.key", "ca_key": "/x/ca.key"}, "must differ from ca_cert and ca_key"),
])
def test_bad_options_are_named(tmp_path, overrides, fragment):
    params = {"path": str(tmp_path / "ca.crl"), "ca_cert": "/x/ca.crt", "ca_key": "/x/ca.key"}
    params.update(overrides)
    with pytest.raises(PKIError) as caught:
        validate_crl(params)
    assert fragment in str(caught.value)


# ---------------------------------------------------------------- crl_info

def test_crl_info_reads_without_a_key_and_checks_the_signature(pki, tmp_path):
    (leaf,) = _leaves(pki, tmp_path, "info")
    ensure_crl(_spec(pki, tmp_path, revoke=[leaf]), now=NOW)
    path = _crl_path(tmp_path)
    ca_pem = _read(pki.ca_cert)
    info = crl_info(path, ca_pem, now=NOW + datetime.timedelta(days=40))
    assert info == {"issuer": X.format_name(X.load_certificate(ca_pem).subject),
                    "last_update": X.iso(NOW - datetime.timedelta(minutes=5)),
                    "next_update": X.iso(NOW + datetime.timedelta(days=30)), "days_left": -10,
                    "crl_number": 1, "revoked_serials": [_serial(leaf)], "signature_ok": True}
    assert crl_info(path, ca_pem.decode())["signature_ok"] is True
    assert crl_info(path, X.load_certificate(ca_pem))["signature_ok"] is True
    assert crl_info(path)["signature_ok"] is None
    for subject in (OTHER_SUBJECT, None):  # another CA; the same name with another key
        other, dummy = _other_ca(tmp_path / ("other-%s" % bool(subject)), subject=subject)
        assert crl_info(path, _read(other.cert_path))["signature_ok"] is False


def test_crl_info_names_a_missing_or_unreadable_file(tmp_path):
    missing = str(tmp_path / "missing.crl")
    with pytest.raises(PKIError, match="CRL %s does not exist" % re.escape(missing)):
        crl_info(missing)
    broken = tmp_path / "broken.crl"
    broken.write_bytes(b"nope")
    with pytest.raises(PKIError, match="CRL %s is unreadable: not a valid PEM CRL" % re.escape(str(broken))):
        crl_info(str(broken))


# ---------------------------------------------------------------- enforcement by OpenSSL through Python's ssl

def _handshake(server_context, client_context):
    """A TLS handshake in memory. Returns None when the server accepted the client, else the server's ssl.SSLError."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for dummy in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_side=False, server_hostname="localhost")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for dummy in range(20):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return exc
        c_in.write(s_out.read())
        if client_done and server_done:
            return None
    raise AssertionError("the handshake did not complete")


def test_python_ssl_refuses_a_revoked_client_certificate_and_accepts_another(pki, tmp_path):
    server = leaf_item(tmp_path, "server", profile="server")
    pki.run([server])
    revoked, kept = _leaves(pki, tmp_path, "revoked", "kept")
    ensure_crl(_spec(pki, tmp_path, revoke=[revoked]), now=X.utcnow())

    def server_context(with_crl=True):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server["cert_path"], server["key_path"])
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.load_verify_locations(pki.ca_cert)
        if with_crl:
            context.load_verify_locations(_crl_path(tmp_path))
        return context

    def client_context(cert_path):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(pki.ca_cert)
        context.load_cert_chain(cert_path, os.path.join(os.path.dirname(cert_path), "server.key"))
        return context

    refused = _handshake(server_context(), client_context(revoked))
    assert isinstance(refused, ssl.SSLCertVerificationError), refused
    assert refused.verify_code == 23 and "revoked" in refused.verify_message
    assert _handshake(server_context(), client_context(kept)) is None
    # Without the CRL, OpenSSL refuses every client under VERIFY_CRL_CHECK_LEAF: the CRL is what lets 'kept' in.
    missing = _handshake(server_context(with_crl=False), client_context(kept))
    assert isinstance(missing, ssl.SSLCertVerificationError) and missing.verify_code == 3
