# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError


@pytest.mark.parametrize("text, expected", [
    ("/CN=x", "/CN=x"),
    ("/CN=mcp-plugin-a/O=MCPGateway/OU=Plugins", "/CN=mcp-plugin-a/O=MCPGateway/OU=Plugins"),
    ("/C=DE/ST=Berlin/L=Berlin/O=Org/CN=n", "/C=DE/ST=Berlin/L=Berlin/O=Org/CN=n"),
    ("/CN=a\\/b", "/CN=a\\/b"),
    ("/cn=lower", "/CN=lower"),
    ("/emailAddress=a@b.c/CN=z", "/emailAddress=a@b.c/CN=z"),
])
def test_parse_subject(text, expected):
    assert X.format_name(X.parse_subject(text)) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "non-empty"),
    (None, "non-empty"),
    ("CN=x", "must start with '/'"),
    ("/CN", "not KEY=VALUE"),
    ("/CN=", "empty value"),
    ("/XX=1", "unknown attribute"),
    ("/C=Germany", "bad value"),
    ("/CN=" + "x" * 65, "bad value"),
])
def test_parse_subject_errors(text, fragment):
    with pytest.raises(PKIError) as err:
        X.parse_subject(text, "certificates[0].subject")
    assert fragment in str(err.value)
    assert "certificates[0].subject" in str(err.value)


@pytest.mark.parametrize("values, expected", [
    (["DNS:a"], ["DNS:a"]),
    (["a", "mcp-plugin-a", "localhost"], ["DNS:a", "DNS:mcp-plugin-a", "DNS:localhost"]),
    (["IP:10.0.0.1", "127.0.0.1", "::1", "dead::beef"], ["IP:10.0.0.1", "IP:127.0.0.1", "IP:::1", "IP:dead::beef"]),
    (["dns:Upper.Example", "DNS:upper.example"], ["DNS:Upper.Example"]),
    (["*.example.com", "under_score"], ["DNS:*.example.com", "DNS:under_score"]),
    (None, []),
    ([], []),
])
def test_parse_sans(values, expected):
    assert X.format_sans(X.parse_sans(values)) == expected


@pytest.mark.parametrize("value, fragment", [
    ("", "non-empty"),
    ("DNS:", "empty value"),
    ("IP:300.1.1.1", "not an IP address"),
    ("email:a@b", "unsupported SAN type"),
    ("URI:https://x", "unsupported SAN type"),
    ("bad name", "not a valid DNS name"),
    ("-leading", "not a valid DNS name"),
    ("a..b", "not a valid DNS name"),
    ("x" * 64, "not a valid DNS name"),
])
def test_parse_sans_errors(value, fragment):
    with pytest.raises(PKIError) as err:
        X.parse_sans(["ok", value], "sans")
    assert fragment in str(err.value)
    assert "sans[1]" in str(err.value)


def test_san_set_is_order_insensitive():
    one = X.parse_sans(["a", "b", "IP:10.0.0.1"])
    two = X.parse_sans(["IP:10.0.0.1", "B", "a"])
    assert X.san_set(one) == X.san_set(two)
    assert isinstance(one[2], x509.IPAddress) and one[2].value == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize("key_type, key_size, expected", [
    ("rsa", None, ("rsa", 4096)),
    ("rsa", 2048, ("rsa", 2048)),
    ("rsa", 3072, ("rsa", 3072)),
    ("ecdsa", None, ("ecdsa", 256)),
    ("ecdsa", 384, ("ecdsa", 384)),
    ("ed25519", None, ("ed25519", None)),
])
def test_key_spec(key_type, key_size, expected):
    assert X.resolve_key_spec(key_type, key_size) == expected


@pytest.mark.parametrize("key_type, key_size, fragment", [
    ("dsa", None, "key_type must be one of"),
    ("rsa", 1024, "not valid for key_type rsa"),
    ("rsa", 256, "not valid for key_type rsa"),
    ("ecdsa", 521, "not valid for key_type ecdsa"),
    ("ecdsa", 4096, "not valid for key_type ecdsa"),
    ("ed25519", 256, "must not be set"),
    ("rsa", "big", "must be an integer"),
])
def test_key_spec_errors(key_type, key_size, fragment):
    with pytest.raises(PKIError, match=fragment):
        X.resolve_key_spec(key_type, key_size)


def _extensions(cert):
    return {type(ext.value).__name__: ext for ext in cert.extensions}


@pytest.mark.parametrize("key_type, key_size", [("ecdsa", 256), ("ecdsa", 384), ("ed25519", None), ("rsa", 2048)])
def test_ca_certificate_extensions(key_type, key_size, rsa_key):
    key = rsa_key if key_type == "rsa" else X.generate_private_key(key_type, key_size)
    cert = X.build_ca_certificate(key, X.parse_subject("/CN=Test-CA"), 10, X.utcnow())
    ext = _extensions(cert)
    assert ext["BasicConstraints"].critical and ext["BasicConstraints"].value.ca
    assert ext["BasicConstraints"].value.path_length == 0
    ku = ext["KeyUsage"]
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert "SubjectKeyIdentifier" in ext and "AuthorityKeyIdentifier" in ext
    assert X.ca_problems(cert) == []
    assert cert.serial_number > 0 and cert.serial_number.bit_length() > 64
    if key_type == "ed25519":
        assert cert.signature_hash_algorithm is None
    else:
        assert cert.signature_hash_algorithm.name == "sha256"


@pytest.mark.parametrize("leaf_type, profile", [("rsa", "server"), ("rsa", "client"), ("ecdsa", "server"),
                                                ("ecdsa", "client"), ("ed25519", "server")])
def test_leaf_certificate_extensions(leaf_type, profile, rsa_key):
    ca_key = X.generate_private_key("ecdsa", 256)
    now = X.utcnow()
    ca = X.build_ca_certificate(ca_key, X.parse_subject("/CN=Test-CA"), 10, now)
    key = rsa_key if leaf_type == "rsa" else X.generate_private_key(leaf_type, 256 if leaf_type == "ecdsa" else None)
    cert = X.build_leaf_certificate(key.public_key(), X.parse_subject("/CN=leaf"), X.parse_sans(["a", "10.1.1.1"]),
                                    profile, ca, ca_key, 5, now)
    ext = _extensions(cert)
    assert ext["BasicConstraints"].critical and not ext["BasicConstraints"].value.ca
    ku = ext["KeyUsage"].value
    assert ext["KeyUsage"].critical and ku.digital_signature
    assert ku.key_encipherment == (leaf_type == "rsa")
    want = ExtendedKeyUsageOID.SERVER_AUTH if profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    assert list(ext["ExtendedKeyUsage"].value) == [want]
    assert ext["AuthorityKeyIdentifier"].value.key_identifier == \
        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert X.format_sans(X.cert_sans(cert)) == ["DNS:a", "IP:10.1.1.1"]
    assert X.profile_problems(cert, profile) == []
    assert X.profile_problems(cert, "client" if profile == "server" else "server")
    assert X.issued_by(cert, ca)
    assert (cert.not_valid_after_utc - now).days == 5


def test_load_private_key_errors(rsa_key):
    plain = X.dump_private_key(rsa_key)
    locked = X.dump_private_key(rsa_key, "s3cret")
    assert X.same_public_key(X.load_private_key(locked, "s3cret").public_key(), rsa_key.public_key())
    for data, passphrase, fragment in [(locked, None, "no passphrase was given"),
                                       (locked, "wrong", "wrong passphrase or corrupt"),
                                       (b"garbage", None, "not a valid PEM private key"),
                                       (plain[:200], None, "not a valid")]:
        with pytest.raises(PKIError) as err:
            X.load_private_key(data, passphrase)
        assert fragment in str(err.value)
        assert "s3cret" not in str(err.value) and "BEGIN" not in str(err.value)
