# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The produced certificates pass `openssl verify -x509_strict` and a real mutual-TLS handshake with
VERIFY_X509_STRICT, and a client from a foreign CA is refused. Without Ansible."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from pki_helpers import PKI, leaf_item

OPENSSL = shutil.which("openssl")


def _tree(tmp_path, key_type, key_size=None):
    pki = PKI(tmp_path)
    if key_type != "ecdsa":
        from ansible_collections.mcpgateway.mtls.plugins.module_utils._pkica import ensure_ca
        from pki_helpers import make_ca
        pki.ca_spec = make_ca(tmp_path, key_type=key_type, key_size=key_size, regenerate="always")
        ensure_ca(pki.ca_spec)
    server = leaf_item(tmp_path, "alpha", key_type=key_type, key_size=key_size, sans=["alpha", "localhost", "127.0.0.1"])
    client = leaf_item(tmp_path, "gw", key_type=key_type, key_size=key_size, profile="client", sans=None,
                       subject="/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway")
    pki.run([server, client])
    return pki, server, client


CASES = [("ecdsa", None), ("ecdsa", 384), ("ed25519", None), ("rsa", 2048)]


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
@pytest.mark.parametrize("key_type, key_size", CASES)
def test_openssl_verify_strict(tmp_path, key_type, key_size):
    pki, server, client = _tree(tmp_path, key_type, key_size)
    for item, purpose in ((server, "sslserver"), (client, "sslclient")):
        out = subprocess.run([OPENSSL, "verify", "-x509_strict", "-purpose", purpose, "-CAfile", pki.ca_cert,
                              item["cert_path"]], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        wrong = "sslclient" if purpose == "sslserver" else "sslserver"
        out = subprocess.run([OPENSSL, "verify", "-x509_strict", "-purpose", wrong, "-CAfile", pki.ca_cert,
                              item["cert_path"]], capture_output=True, text=True, check=False)
        assert out.returncode != 0
    out = subprocess.run([OPENSSL, "verify", "-x509_strict", "-CAfile", pki.ca_cert, pki.ca_cert],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def _contexts(pki, server, client, client_ca=None):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(server["cert_path"], server["key_path"])
    server_ctx.load_verify_locations(pki.ca_cert)
    client_ctx = ssl.create_default_context(cafile=pki.ca_cert)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx.load_cert_chain(client["cert_path"], client["key_path"])
    return server_ctx, client_ctx


def _handshake(server_ctx, client_ctx, hostname):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    outcome = {}

    def serve():
        conn, _addr = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            outcome["server_error"] = exc
        finally:
            listener.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                outcome["data"] = tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        outcome["client_error"] = exc
    thread.join(5)
    return outcome


@pytest.mark.parametrize("key_type, key_size", CASES)
def test_mutual_tls_handshake_strict(tmp_path, key_type, key_size):
    pki, server, client = _tree(tmp_path, key_type, key_size)
    server_ctx, client_ctx = _contexts(pki, server, client)
    outcome = _handshake(server_ctx, client_ctx, "alpha")
    assert outcome.get("data") == b"ok", outcome
    assert dict(x[0] for x in outcome["peer"]["subject"])["commonName"] == "mcp-gateway-client"


def test_foreign_client_and_wrong_name_refused(tmp_path):
    pki, server, client = _tree(tmp_path / "main", "ecdsa")
    other, _other_server, foreign = _tree(tmp_path / "other", "ecdsa")
    server_ctx, client_ctx = _contexts(pki, server, client)
    foreign_ctx = ssl.create_default_context(cafile=pki.ca_cert)
    foreign_ctx.load_cert_chain(foreign["cert_path"], foreign["key_path"])
    outcome = _handshake(server_ctx, foreign_ctx, "alpha")
    assert "data" not in outcome and "peer" not in outcome
    outcome = _handshake(server_ctx, client_ctx, "not-in-sans")
    assert isinstance(outcome.get("client_error"), ssl.SSLCertVerificationError)
    assert other.ca_cert != pki.ca_cert
