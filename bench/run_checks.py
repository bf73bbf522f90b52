"""bench/run.py: the checks of a tree, outside the timing: complete and valid after a first run (verify_tree),
unchanged by a no-op run (snapshot before and after)."""
import hashlib
import os

from run_tools import plugin_names, sh


def tree_files(pki, n):
    files = ["ca/ca.key", "ca/ca.crt", "gateway/client.key", "gateway/client.crt", "gateway/ca.crt"]
    for name in plugin_names(n):
        files += [f"plugins/{name}/server.key", f"plugins/{name}/server.crt", f"plugins/{name}/ca.crt"]
    return files


def snapshot(pki):
    snap = {}
    for root, _dirs, files in os.walk(pki):
        for fn in files:
            p = os.path.join(root, fn)
            st = os.stat(p)
            with open(p, "rb") as f:
                snap[os.path.relpath(p, pki)] = (hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns,
                                                 st.st_mode & 0o777)
    return snap


def verify_tree(pki, key, n):
    """A broken tool must not win: every file present, every leaf signed by the CA, its key matching,
    the right key type, the plugin SANs, identical CA copies, `openssl verify` on samples.
    Returns (errors, strict) where strict says whether the samples pass -x509_strict with purpose."""
    # pylint: disable=import-outside-toplevel
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    errors = []
    missing = [f for f in tree_files(pki, n) if not os.path.isfile(os.path.join(pki, f))]
    if missing:
        return [f"missing {len(missing)} files, e.g. {missing[:3]}"], False

    def spki(k):
        return k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    with open(os.path.join(pki, "ca/ca.crt"), "rb") as f:
        ca_pem = f.read()
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaves = [("gateway/client", "gateway/ca.crt", None)]
    leaves += [(f"plugins/{p}/server", f"plugins/{p}/ca.crt", p) for p in plugin_names(n)]
    for base, copy, name in [("ca/ca", None, None)] + leaves:
        try:
            with open(os.path.join(pki, base + ".crt"), "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(os.path.join(pki, base + ".key"), "rb") as f:
                k = serialization.load_pem_private_key(f.read(), None, unsafe_skip_rsa_key_validation=True)
            cert.verify_directly_issued_by(ca)
            if spki(k.public_key()) != spki(cert.public_key()):
                errors.append(f"{base}: key does not match certificate")
            if key == "rsa" and not (isinstance(k, rsa.RSAPrivateKey) and k.key_size == 4096):
                errors.append(f"{base}: not RSA-4096")
            if key == "ecdsa" and not (isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"):
                errors.append(f"{base}: not P-256")
            if copy:
                with open(os.path.join(pki, copy), "rb") as f:
                    if f.read() != ca_pem:
                        errors.append(f"{copy}: differs from ca/ca.crt")
            if name:
                sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                want = {name, f"mcp-plugin-{name}", "localhost"}
                if not want <= set(sans.get_values_for_type(x509.DNSName)):
                    errors.append(f"{base}: SANs {sans} lack {want}")
        except Exception as exc:  # noqa: BLE001 - any failure is a verification error
            errors.append(f"{base}: {type(exc).__name__}: {exc}")
        if len(errors) > 5:
            break
    ca_file = os.path.join(pki, "ca/ca.crt")
    samples = [("gateway/client.crt", "sslclient")]
    names = plugin_names(n)
    samples += [(f"plugins/{p}/server.crt", "sslserver") for p in sorted({names[0], names[-1]})]
    strict = True
    for rel, purpose in samples:
        r = sh(["openssl", "verify", "-CAfile", ca_file, os.path.join(pki, rel)])
        if r.returncode != 0:
            errors.append(f"openssl verify {rel}: {(r.stdout + r.stderr).strip()[-300:]}")
        r = sh(["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca_file,
                os.path.join(pki, rel)])
        strict = strict and r.returncode == 0
    return errors, strict
