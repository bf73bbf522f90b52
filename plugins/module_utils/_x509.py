# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""X.509 builders and parsers on top of `cryptography`: keys, subjects, SANs, CA and leaf
certificates, and the facts we report about them (never key material)."""

from __future__ import annotations

import datetime
import ipaddress
import re
import traceback

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEY_SIZES = {"rsa": (2048, 3072, 4096), "ecdsa": (256, 384), "ed25519": ()}
DEFAULT_KEY_SIZE = {"rsa": 4096, "ecdsa": 256, "ed25519": None}
PROFILES = ("server", "client")
# Backdate notBefore a little so that hosts with a slightly late clock accept a fresh certificate.
BACKDATE = datetime.timedelta(minutes=5)
DAY = datetime.timedelta(days=1)
# The last moment an X.509 time (GeneralizedTime) can express.
LAST_TIME = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)

# openssl-style short names accepted in subjects ("/CN=x/O=y/OU=z").
_SUBJECT_KEYS = (
    ("CN", "COMMON_NAME"),
    ("O", "ORGANIZATION_NAME"),
    ("OU", "ORGANIZATIONAL_UNIT_NAME"),
    ("C", "COUNTRY_NAME"),
    ("ST", "STATE_OR_PROVINCE_NAME"),
    ("L", "LOCALITY_NAME"),
    ("STREET", "STREET_ADDRESS"),
    ("DC", "DOMAIN_COMPONENT"),
    ("EMAILADDRESS", "EMAIL_ADDRESS"),
    ("SERIALNUMBER", "SERIAL_NUMBER"),
    ("TITLE", "TITLE"),
    ("GN", "GIVEN_NAME"),
    ("SN", "SURNAME"),
)
_SHORT_NAMES = {"EMAILADDRESS": "emailAddress", "SERIALNUMBER": "serialNumber", "STREET": "street"}

_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DNS_RE = re.compile(r"^(?:\*\.)?%s(?:\.%s)*$" % (_DNS_LABEL, _DNS_LABEL))


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- keys

def resolve_key_spec(key_type, key_size, what="key_type/key_size"):
    """Validate a key type/size combination; fill the default size. Returns (type, size)."""
    if key_type not in KEY_TYPES:
        raise PKIError("%s: key_type must be one of %s, got %r" % (what, ", ".join(KEY_TYPES), key_type))
    if key_type == "ed25519":
        if key_size not in (None, 0):
            raise PKIError("%s: key_size must not be set for key_type ed25519 (got %r)" % (what, key_size))
        return key_type, None
    if key_size is None:
        return key_type, DEFAULT_KEY_SIZE[key_type]
    if isinstance(key_size, bool) or not isinstance(key_size, int):
        raise PKIError("%s: key_size must be an integer, got %r" % (what, key_size))
    if key_size not in KEY_SIZES[key_type]:
        raise PKIError("%s: key_size %r is not valid for key_type %s (choose %s)" % (
            what, key_size, key_type, ", ".join(str(s) for s in KEY_SIZES[key_type])))
    return key_type, key_size


def key_label(key_type, key_size):
    return key_type if key_size is None else "%s-%d" % (key_type, key_size)


def generate_private_key(key_type, key_size):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP384R1() if key_size == 384 else ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PKIError("unsupported key_type %r" % key_type)


def key_spec_of(public_key):
    """(type, size) of a public key; (other-name, None) for types we do not issue."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ecdsa", public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519", None
    return type(public_key).__name__, None


def public_key_bytes(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(one, other):
    return public_key_bytes(one) == public_key_bytes(other)


def is_encrypted_pem(data):
    return b"ENCRYPTED" in data[:200]


def load_private_key(data, passphrase, fast=True):
    """Load a PEM private key. Raises PKIError with a short reason (no file name, no secret).

    fast=True skips OpenSSL's RSA consistency check (0.3 s for RSA-4096): callers check that the key
    matches its certificate by comparing public keys, and OpenSSL re-checks each RSA-CRT signature.
    """
    password = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    encrypted = is_encrypted_pem(data)
    if encrypted and not password:
        raise PKIError("it is encrypted and no passphrase was given")
    try:
        if fast:
            key = serialization.load_pem_private_key(
                data, password=password if encrypted else None, unsafe_skip_rsa_key_validation=True)
        else:
            key = serialization.load_pem_private_key(data, password=password if encrypted else None)
    except (ValueError, TypeError):
        if encrypted:
            raise PKIError("wrong passphrase or corrupt file") from None
        raise PKIError("not a valid PEM private key") from None
    except Exception:  # pylint: disable=broad-except
        # cryptography raises UnsupportedAlgorithm and others for odd content; never show bytes.
        raise PKIError("not a valid or supported PEM private key") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise PKIError("unsupported private key type %s" % type(key).__name__)
    return key


def dump_private_key(key, passphrase=None):
    if passphrase:
        password = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        encryption = serialization.BestAvailableEncryption(password)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_certificate(data):
    try:
        return x509.load_pem_x509_certificate(data)
    except Exception:  # pylint: disable=broad-except
        raise PKIError("not a valid PEM certificate") from None


def dump_certificate(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def signature_hash(private_key):
    # Ed25519 signs the message itself: cryptography wants algorithm=None there.
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()


# ---------------------------------------------------------------- names and SANs

def parse_subject(text, what="subject"):
    """'/CN=x/O=y/OU=z' (openssl form, '\\/' escapes a slash) -> x509.Name. Raises PKIError naming WHAT."""
    if not isinstance(text, str) or not text.strip():
        raise PKIError("%s: must be a non-empty string like '/CN=name/O=org', got %r" % (what, text))
    text = text.strip()
    if not text.startswith("/"):
        raise PKIError("%s: must start with '/' (openssl form '/CN=name/O=org'), got %r" % (what, text))
    parts, current, escaped = [], [], False
    for char in text[1:]:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "/":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    keys = dict(_SUBJECT_KEYS)
    attributes = []
    for part in parts:
        if "=" not in part:
            raise PKIError("%s: %r is not KEY=VALUE in %r" % (what, part, text))
        key, value = part.split("=", 1)
        key = key.strip()
        attr = keys.get(key.upper())
        if attr is None:
            raise PKIError("%s: unknown attribute %r in %r (use %s)" % (
                what, key, text, ", ".join(pair[0] for pair in _SUBJECT_KEYS)))
        if value == "":
            raise PKIError("%s: empty value for %s in %r" % (what, key, text))
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            # A NUL or a line break in a name is how certificate names are forged: refuse them.
            raise PKIError("%s: control character in the value of %s in %r" % (what, key, text))
        try:
            attributes.append(x509.NameAttribute(getattr(NameOID, attr), value))
        except ValueError as exc:
            raise PKIError("%s: bad value for %s in %r: %s" % (what, key, text, exc)) from None
    return x509.Name(attributes)


def format_name(name):
    """x509.Name -> '/CN=x/O=y' (openssl order: as encoded)."""
    short = {getattr(NameOID, attr).dotted_string: key for key, attr in _SUBJECT_KEYS}
    out = []
    for attribute in name:
        key = short.get(attribute.oid.dotted_string)
        key = _SHORT_NAMES.get(key, key) if key else attribute.oid.dotted_string
        value = attribute.value if isinstance(attribute.value, str) else repr(attribute.value)
        out.append("/%s=%s" % (key, value.replace("/", "\\/")))
    return "".join(out)


def name_key(name):
    """Comparable form of a Name: order and values, not the ASN.1 string types."""
    return tuple((attr.oid.dotted_string, attr.value) for attr in name)


def parse_sans(values, what="sans"):
    """['DNS:x', 'IP:1.2.3.4', 'bare.name', '10.0.0.1'] -> list of GeneralName (deduplicated)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    result, seen = [], set()
    for index, raw in enumerate(values):
        where = "%s[%d]" % (what, index)
        if not isinstance(raw, str) or not raw.strip():
            raise PKIError("%s: SAN must be a non-empty string, got %r" % (where, raw))
        text = raw.strip()
        kind, dummy, value = text.partition(":")
        upper = kind.upper()
        if upper in ("DNS", "IP") and value:
            explicit = upper
        elif upper in ("DNS", "IP"):
            raise PKIError("%s: empty value in SAN %r" % (where, raw))
        elif ":" in text and upper.isalpha() and not _looks_like_ipv6(text):
            raise PKIError("%s: unsupported SAN type %r in %r (use DNS: or IP:)" % (where, kind, raw))
        else:
            explicit, value = None, text
        name = _san(explicit, value.strip(), where, raw)
        key = _san_key(name)
        if key not in seen:
            seen.add(key)
            result.append(name)
    return result


def _looks_like_ipv6(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _san(kind, value, where, raw):
    if kind in ("IP", None):
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            if kind == "IP":
                raise PKIError("%s: %r is not an IP address" % (where, raw)) from None
    if len(value) > 253 or not DNS_RE.match(value):
        raise PKIError("%s: %r is not a valid DNS name" % (where, raw))
    return x509.DNSName(value)


def _san_key(name):
    if isinstance(name, x509.DNSName):
        return ("DNS", name.value.lower())
    if isinstance(name, x509.IPAddress):
        return ("IP", name.value.compressed)
    return (type(name).__name__, str(name.value))


def san_set(names):
    return frozenset(_san_key(name) for name in names)


def format_sans(names):
    out = []
    for name in names:
        if isinstance(name, x509.DNSName):
            out.append("DNS:%s" % name.value)
        elif isinstance(name, x509.IPAddress):
            out.append("IP:%s" % name.value.compressed)
        else:
            out.append("%s:%s" % (type(name).__name__, name.value))
    return out


def cert_sans(cert):
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


# ---------------------------------------------------------------- certificates

def build_ca_certificate(private_key, subject, valid_days, now):
    public_key = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    )
    cert = builder.sign(private_key, signature_hash(private_key))
    # Cheap guard against a faulty signature from a damaged key (keys are loaded without the slow check).
    cert.verify_directly_issued_by(cert)
    return cert


def build_leaf_certificate(public_key, subject, sans, profile, ca_cert, ca_key, valid_days, now):
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_days * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca_key, signature_hash(ca_key))
    cert.verify_directly_issued_by(ca_cert)
    return cert


def issued_by(cert, ca_cert):
    """Issuer name matches and the signature verifies with the CA public key."""
    try:
        cert.verify_directly_issued_by(ca_cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        return None


def ca_problems(cert):
    """What a CA certificate lacks for strict verifiers (empty list when fine)."""
    problems = []
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca or not bc.critical:
        problems.append("basicConstraints CA:TRUE critical missing")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.critical or not ku.value.key_cert_sign or not ku.value.crl_sign:
        problems.append("keyUsage keyCertSign+cRLSign critical missing")
    if _ext(cert, x509.SubjectKeyIdentifier) is None:
        problems.append("subjectKeyIdentifier missing")
    if _ext(cert, x509.AuthorityKeyIdentifier) is None:
        problems.append("authorityKeyIdentifier missing")
    if cert.version != x509.Version.v3:
        problems.append("not an X.509 v3 certificate")
    return problems


def is_ca(cert):
    bc = _ext(cert, x509.BasicConstraints)
    return bc is not None and bc.value.ca


def profile_problems(cert, profile):
    """What differs from the extensions this collection puts on a leaf of PROFILE."""
    problems = []
    want = ExtendedKeyUsageOID.SERVER_AUTH if profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        problems.append("no extendedKeyUsage (want %sAuth)" % profile)
    elif list(eku.value) != [want]:
        have = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in eku.value)
        problems.append("extendedKeyUsage is %s (want %sAuth)" % (have, profile))
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or bc.value.ca or not bc.critical:
        problems.append("basicConstraints CA:FALSE critical missing")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.critical or not ku.value.digital_signature:
        problems.append("keyUsage digitalSignature critical missing")
    if _ext(cert, x509.SubjectKeyIdentifier) is None or _ext(cert, x509.AuthorityKeyIdentifier) is None:
        problems.append("subject/authority key identifier missing")
    return problems


def cert_profile(cert):
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return None
    usages = list(eku.value)
    if ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        return "client"
    return "both" if ExtendedKeyUsageOID.SERVER_AUTH in usages else None


def lifetime_days(cert):
    span = cert.not_valid_after_utc - cert.not_valid_before_utc - BACKDATE
    return int(round(span.total_seconds() / 86400.0))


def fingerprint_sha256(cert):
    return ":".join("%02X" % byte for byte in cert.fingerprint(hashes.SHA256()))


def cert_facts(cert):
    """Public facts about a certificate, for results and diffs."""
    key_type, key_size = key_spec_of(cert.public_key())
    return {
        "subject": format_name(cert.subject),
        "issuer": format_name(cert.issuer),
        "sans": format_sans(cert_sans(cert)),
        "serial": "%x" % cert.serial_number,
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "key_type": key_label(key_type, key_size),
        "profile": cert_profile(cert),
    }
