#!/usr/bin/env python
"""Benchmark tool (c): the cost floor, written for this benchmark.

    floor.py first|noop PKI_DIR KEY_TYPE DAYS NAME...

first: every key (CA, gateway, each plugin) generated at once in a ThreadPoolExecutor with
       os.cpu_count() workers (`cryptography` releases the GIL during key generation), then the
       CA certificate and the leaves signed (also in the pool), and the tree written with plain
       writes (no temp file + rename, no lock) in the contract layout, keys 0600 / certs 0644.
       Same certificate profile as ours (strict-valid extensions), so the floor does the same work
       a correct tool must do, minus everything that is not cryptography or a file write.
noop:  the minimum a content-idempotent tool must do on a complete tree, in one process, one thread:
       load the CA certificate and key (RSA without OpenSSL's key validation), then for every leaf
       parse the certificate, check it is signed by the CA (signature check), not expiring within
       30 days, has the expected subject, EKU (profile) and SANs, load its key with
       unsafe_skip_rsa_key_validation=True and compare public keys, and compare the ca.crt copy
       bytes. Writes nothing. Exit status 3 if anything would need re-issuing.
Prints one JSON line: {"inner_s": seconds spent after the imports, "items": leaves checked/made}.
"""
import datetime
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

T_IMPORT = time.perf_counter()
# pylint: disable=wrong-import-position
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_SUBJECT = [("CN", "ContextForge-CA"), ("O", "ContextForge"), ("OU", "Plugins")]
OIDS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
RENEW_BEFORE = datetime.timedelta(days=30)


def name(parts):
    return x509.Name([x509.NameAttribute(OIDS[k], v) for k, v in parts])


def leaves(pki, names):
    """(key path, cert path, ca copy path, subject, sans, profile) for gateway + plugins."""
    out = [(f"{pki}/gateway/client.key", f"{pki}/gateway/client.crt", f"{pki}/gateway/ca.crt",
            [("CN", "mcp-gateway-client"), ("O", "MCPGateway"), ("OU", "Gateway")], [], "client")]
    for n in names:
        d = f"{pki}/plugins/{n}"
        out.append((f"{d}/server.key", f"{d}/server.crt", f"{d}/ca.crt",
                    [("CN", f"mcp-plugin-{n}"), ("O", "MCPGateway"), ("OU", "Plugins")],
                    [n, f"mcp-plugin-{n}", "localhost"], "server"))
    return out


def genkey(key_type):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return ec.generate_private_key(ec.SECP256R1())


def write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def builder(subject, issuer, pub, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))


def make_ca(key, days):
    subj = name(CA_SUBJECT)
    b = (builder(subj, subj, key.public_key(), days)
         .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False))
    return b.sign(key, hashes.SHA256())


def make_leaf(ca_key, ca_cert, key, subject, sans, profile, days):
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (builder(name(subject), ca_cert.subject, key.public_key(), days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, is_rsa, False, False, False, False, False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def first(pki, key_type, days, names):
    items = leaves(pki, names)
    for d in [f"{pki}/ca"] + [os.path.dirname(i[0]) for i in items]:
        os.makedirs(d, exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        keys = [pool.submit(genkey, key_type) for _i in range(len(items) + 1)]
        ca_key = keys[0].result()
        ca_cert = make_ca(ca_key, days)
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        write(f"{pki}/ca/ca.key", key_pem(ca_key), 0o600)
        write(f"{pki}/ca/ca.crt", ca_pem, 0o644)

        def issue(i):
            kpath, cpath, capath, subject, sans, profile = items[i]
            key = keys[i + 1].result()
            cert = make_leaf(ca_key, ca_cert, key, subject, sans, profile, days)
            write(kpath, key_pem(key), 0o600)
            write(cpath, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            write(capath, ca_pem, 0o644)

        list(pool.map(issue, range(len(items))))
    return len(items), 0


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None,
                                                  unsafe_skip_rsa_key_validation=True)


def pub_der(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def noop(pki, key_type, days, names):
    del days
    with open(f"{pki}/ca/ca.crt", "rb") as f:
        ca_pem = f.read()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = load_key(f"{pki}/ca/ca.key")
    now = datetime.datetime.now(datetime.timezone.utc)
    bad = 0
    if pub_der(ca_key) != ca_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        bad += 1
    if ca_cert.not_valid_after_utc - now < RENEW_BEFORE:
        bad += 1
    want_type = rsa.RSAPrivateKey if key_type == "rsa" else ec.EllipticCurvePrivateKey
    items = leaves(pki, names)
    for kpath, cpath, capath, subject, sans, _profile in items:
        try:
            with open(cpath, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            cert.verify_directly_issued_by(ca_cert)
            key = load_key(kpath)
            with open(capath, "rb") as f:
                ca_copy = f.read()
        except (OSError, ValueError, TypeError, x509.InvalidSignature) as exc:
            del exc
            bad += 1
            continue
        ok = (cert.not_valid_after_utc - now >= RENEW_BEFORE
              and cert.subject == name(subject)
              and isinstance(key, want_type)
              and pub_der(key) == cert.public_key().public_bytes(
                  serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
              and ca_copy == ca_pem)
        try:
            if ok:
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                want = ExtendedKeyUsageOID.SERVER_AUTH if _profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
                ok = want in eku
            if ok and sans:
                got = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                ok = sorted(got.get_values_for_type(x509.DNSName)) == sorted(sans)
        except x509.ExtensionNotFound:
            ok = False
        bad += 0 if ok else 1
    return len(items), bad


def main():
    mode, pki, key_type, days = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    names = sys.argv[5:]
    t0 = time.perf_counter()
    count, bad = (first if mode == "first" else noop)(pki, key_type, days, names)
    t1 = time.perf_counter()
    print(json.dumps({"inner_s": round(t1 - t0, 4), "import_s": round(t0 - T_IMPORT, 4),
                      "items": count, "bad": bad}))
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
