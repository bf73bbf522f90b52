# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""``mcp-mtls-probe --trust-check``: proves that the gateway's plugin client trusts only its ``ca_bundle``.

A throwaway CA (made here, in memory and a private temporary folder; never installed) signs a server certificate
for a plugin's host name, and a TLS server on 127.0.0.1 presents it. The CA is offered to the process the way a
system store would offer it (``SSL_CERT_FILE``). Control: Python's default context (what cpex 0.1.4 starts from)
accepts that server, so the check could see a client that trusts the system store. Then the client context the
gateway builds for the plugin (cpex's ``create_ssl_context`` with the deployed config) must refuse it. One JSON
record: {"check": "plugin_client_trusts_only_ca_bundle", "target", "ok", "expected", "seen"}.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import tempfile
import threading

CHECK = "plugin_client_trusts_only_ca_bundle"
EXPECTED = ("cpex's client (the deployed config) refuses a server whose CA is in the system store only, "
            "which Python's default context accepts")


def _certificates(folder, hostname):
    """A throwaway CA and a server certificate for HOSTNAME: (ca.crt, server.crt, server.key) paths."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # pylint: disable=import-outside-toplevel

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mcp-mtls trust check CA")).issuer_name(name("mcp-mtls trust check CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name(hostname)).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(folder, n) for n in ("ca.crt", "server.crt", "server.key"))
    for path, data in zip(paths, (ca.public_bytes(serialization.Encoding.PEM),
                                  server.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)
    return paths


class _Server:
    """A TLS server on 127.0.0.1 that presents one certificate to each connection (no client certificate)."""

    def __init__(self, certfile, keyfile):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            with conn:
                try:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (OSError, ssl.SSLError):
                    pass

    def close(self):
        self.sock.close()


def _connect(context, port, hostname, timeout):
    """None when CONTEXT completes a handshake with the server and reads from it, else the error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=hostname) as tls:
                tls.recv(2)
        return None
    except ssl.SSLCertVerificationError as exc:
        return "certificate verify failed: %s" % (exc.verify_message or exc.reason)
    except (OSError, ssl.SSLError) as exc:
        return str(exc)


def run(name, hostname, tls_config, timeout=10.0):
    """The check for plugin NAME, reached at HOSTNAME, with its deployed client TLS_CONFIG."""
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
    from cpex.framework.external.mcp.tls_utils import create_ssl_context  # pylint: disable=import-outside-toplevel

    record = {"check": CHECK, "target": name, "ok": False, "expected": EXPECTED}
    folder = tempfile.mkdtemp(prefix="mcp-trust-check-")
    saved = {key: os.environ.get(key) for key in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    server = None
    try:
        ca, cert, key = _certificates(folder, hostname)
        server = _Server(cert, key)
        os.environ["SSL_CERT_FILE"], os.environ["SSL_CERT_DIR"] = ca, folder  # the store that default contexts load
        control = _connect(ssl.create_default_context(), server.port, hostname, timeout)
        if control is not None:
            record["seen"] = "the control failed (Python's default context refused the system store's CA: %s), " \
                             "so this check proves nothing here" % control
            return record
        try:
            refused = _connect(create_ssl_context(tls_config, name), server.port, hostname, timeout)
        except PluginError as exc:
            record["seen"] = "cpex's client could not build its context: %s" % exc.error.message
            return record
        record["ok"] = refused is not None and refused.startswith("certificate verify failed")
        record["seen"] = ("refused: %s" % refused) if refused else \
            "accepted a server whose CA is in the system store only (cpex trusts the system store)"
        return record
    except Exception as exc:  # pylint: disable=broad-except  # the check fails, naming why
        record["seen"] = "the check could not run: %s: %s" % (type(exc).__name__, exc)
        return record
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


REVOKED_CHECK = "revoked_server_cert_refused"
REVOKED_EXPECTED = ("cpex's client (the deployed config, with its CRL) refuses the revoked server certificate of the "
                    "plugin, presented under the plugin's name")


def revoked(name, hostname, client_context, certfile, keyfile, timeout=10.0):
    """The revoked server certificate of plugin NAME (CERTFILE, KEYFILE), served on loopback under HOSTNAME, must be
    refused by the client context the gateway builds for it (CLIENT_CONTEXT(): cpex's create_ssl_context with the
    deployed config, or the gRPC channel's check, common.client_context): one JSON record."""
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel

    record = {"check": REVOKED_CHECK, "target": name, "ok": False, "expected": REVOKED_EXPECTED}
    server = None
    try:
        server = _Server(certfile, keyfile)
        try:
            refused = _connect(client_context(), server.port, hostname, timeout)
        except PluginError as exc:
            record["seen"] = "cpex's client could not build its context: %s" % exc.error.message
            return record
        record["ok"] = refused is not None and "revoked" in refused
        record["seen"] = ("refused: %s" % refused) if refused else "accepted the revoked certificate"
        return record
    except Exception as exc:  # pylint: disable=broad-except  # the check fails, naming why
        record["seen"] = "the check could not run: %s: %s" % (type(exc).__name__, exc)
        return record
    finally:
        if server is not None:
            server.close()
