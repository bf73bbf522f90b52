# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/_tlscheck.py: the gateway-side checks against real TLS servers on 127.0.0.1, run through module
verify_host (option remote_plugins) as Ansible runs it. The key search is in test_keysearch.py."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import ssl
import subprocess
import threading
import warnings

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._tlscheck import NEGATIVE_CHECKS

STRONG = "ECDHE+AESGCM:ECDHE+CHACHA20"
WRONG_NAME = "name-not-in-sans.invalid"
POSITIVE_CHECKS = {"name_resolves", "mtls_handshake_with_gateway_cert", "tls1_2_accepted"}


def openssl(*args, cwd, stdin=None):
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, check=True, capture_output=True).stdout


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")


def make_ca(folder, name, *passout):
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", *EC, "-subj", f"/CN={name}", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
            *(passout or ("-nodes",)), cwd=folder)


def make_leaf(pki, name, ca, extensions):
    (pki / f"{name}.ext").write_text(extensions)
    openssl("req", *EC, "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}/ca.crt", "-CAkey", f"{ca}/ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A deployed CA with a server certificate for localhost and the gateway's client certificate, a foreign
    CA with its client certificate, and a third CA whose client certificate the foreign CA did not sign."""
    pki = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "foreign", "other"):
        make_ca(pki / ca, f"{ca}-ca")
    server = "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    make_leaf(pki, "server", "ca", server)
    make_leaf(pki, "server-any-name", "ca", f"subjectAltName=DNS:localhost,DNS:{WRONG_NAME}\nextendedKeyUsage=serverAuth\n")
    for name, ca in (("client", "ca"), ("foreign-client", "foreign"), ("other-client", "other")):
        make_leaf(pki, name, ca, "extendedKeyUsage=clientAuth\n")
    (pki / "broken.key").write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    return pki


def server_context(pki, verify=ssl.CERT_REQUIRED, minimum=ssl.TLSVersion.TLSv1_2, ciphers=STRONG, cert="server"):
    """What the plugin launcher configures: client certificates from the CA required, TLS >= 1.2, ECDHE+AEAD."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    context.load_verify_locations(pki / "ca" / "ca.crt")
    context.verify_mode = verify
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
    context.set_ciphers(ciphers)
    return context


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class ThreadedServer(http.server.ThreadingHTTPServer):
    """Blocking TLS sockets: a refused handshake sends its alert (the handshake runs in the request's thread)."""
    daemon_threads = True

    def __init__(self, context):
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get_request(self):
        sock, address = self.socket.accept()
        sock.settimeout(5)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address):
        pass  # refused handshakes are the point

    def shutdown_request(self, request):
        """Half-close, then drain what the client sent before closing: closing with unread bytes sends a TCP
        reset, and a reset that overtakes the alert makes the client see a bare EOF."""
        try:
            request.shutdown(socket.SHUT_WR)
            while socket.socket.recv(request, 65536):  # the raw bytes under TLS
                pass
        except OSError:
            pass
        request.close()

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class AsyncioServer:
    """TLS through asyncio's memory-BIO SSL protocol, as uvicorn serves it: a refused handshake closes the
    connection without sending the alert."""

    def __init__(self, context):
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, details: None)  # "SSL handshake failed" is the point
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    @staticmethod
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self):
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class HangUp:
    """Accepts every connection and closes it at once (a socket unit whose service fails to start)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _address = self.sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def serve():
    """serve(Kind, *args) starts a server; all are stopped (and their threads joined) after the test."""
    started = []

    def start(kind, *args):
        started.append(kind(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def closed_ports():
    """Two ports of 127.0.0.1 that refuse connections: bound but never listening, so nothing takes them meanwhile."""
    socks = [socket.socket() for _port in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    yield [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()


def foreign(pki, cert="foreign-client", key="foreign-client"):
    """Option foreign: the PEM texts of a client certificate of the foreign CA, a key and the foreign CA."""
    return {"cert": (pki / f"{cert}.crt").read_text(), "key": (pki / f"{key}.key").read_text(),
            "ca": (pki / "foreign/ca.crt").read_text()}


def remote(verify_host, pki, port, health, foreign_option=None, host="localhost"):
    """Run module verify_host with one remote plugin as the role does; {check name: record}."""
    result = verify_host(remote_plugins=[{"name": "t", "url": f"https://{host}:{port}/mcp", "health_port": health}],
                         client={"cert": str(pki / "client.crt"), "key": str(pki / "client.key"), "ca": str(pki / "ca/ca.crt")},
                         foreign=foreign_option or foreign(pki))
    assert "msg" not in result and not result.get("exception"), result
    records = result["checks"]
    assert all(set(record) == {"check", "ok", "expected", "seen", "target"} and record["target"] == "t" for record in records), records
    by_name = {record["check"]: record for record in records}
    assert len(by_name) == len(records) and set(by_name) == POSITIVE_CHECKS | set(NEGATIVE_CHECKS), records
    return by_name


def failed(results):
    return {name for name, record in results.items() if not record["ok"]}


# --------------------------------------------------------------------------------------- remote_plugins: the checks

@pytest.mark.parametrize("kind, refusal", [(ThreadedServer, "the server sent the TLS alert"),
                                           (AsyncioServer, "closed the connection without an alert")], ids=["threaded", "asyncio"])
def test_a_correct_server_passes_every_check(verify_host, pki, serve, closed_ports, kind, refusal):
    server = serve(kind, server_context(pki))
    results = remote(verify_host, pki, server.port, closed_ports[0])
    assert failed(results) == set(), results
    for name in ("no_client_cert_refused", "foreign_ca_cert_refused", "tls1_1_refused", "weak_tls1_2_suites_refused"):
        assert refusal in results[name]["seen"], results[name]
    assert "verify code 62" in results["hostname_mismatch_refused"]["seen"]


def test_a_down_server_fails_every_negative_check(verify_host, pki, closed_ports):
    results = remote(verify_host, pki, closed_ports[0], closed_ports[1])
    assert "Connection refused" in results["mtls_handshake_with_gateway_cert"]["seen"], results
    assert failed(results) == set(NEGATIVE_CHECKS) | {"mtls_handshake_with_gateway_cert", "tls1_2_accepted"}, results


def test_a_port_that_hangs_up_fails_every_negative_check(verify_host, pki, serve, closed_ports):
    """A connection that is accepted and closed before any TLS (a socket unit whose service fails) is no refusal."""
    server = serve(HangUp)
    results = remote(verify_host, pki, server.port, closed_ports[0])
    assert failed(results) == set(NEGATIVE_CHECKS) | {"mtls_handshake_with_gateway_cert", "tls1_2_accepted"}, results


def test_a_name_that_does_not_resolve_fails_every_negative_check(verify_host, pki, closed_ports):
    results = remote(verify_host, pki, closed_ports[0], closed_ports[1], host="mcp-plugin-t.invalid")
    assert failed(results) == set(NEGATIVE_CHECKS) | POSITIVE_CHECKS, results


@pytest.mark.parametrize("cert, key, ca_problem", [
    ("foreign-client", "client", "do not load together"),  # the key of another certificate
    ("foreign-client", "broken", "do not load together"),  # a key openssl cannot read
    ("other-client", "other-client", "no client certificate of the foreign CA"),  # valid, but not from the foreign CA
], ids=["mismatched-key", "broken-key", "not-from-the-foreign-ca"])
def test_a_client_side_error_fails_the_foreign_ca_check(verify_host, pki, serve, closed_ports, cert, key, ca_problem):
    server = serve(ThreadedServer, server_context(pki))
    results = remote(verify_host, pki, server.port, closed_ports[0], foreign(pki, cert, key))
    assert failed(results) == {"foreign_ca_cert_refused"}, results
    seen = results["foreign_ca_cert_refused"]["seen"]
    assert seen.startswith("client-side error") and ca_problem in seen, seen
    assert "bm90IGEga2V5" not in json.dumps(results)  # no key material in the output


@pytest.mark.parametrize("weakness, options, expected", [
    ("no client certificate asked for", {"verify": ssl.CERT_NONE}, {"no_client_cert_refused", "foreign_ca_cert_refused"}),
    ("client certificate optional", {"verify": ssl.CERT_OPTIONAL}, {"no_client_cert_refused"}),
    ("TLS 1.1 accepted", {"minimum": ssl.TLSVersion.TLSv1_1, "ciphers": "ALL:@SECLEVEL=0"}, {"tls1_1_refused", "weak_tls1_2_suites_refused"}),
    ("weak TLS 1.2 suites accepted", {"ciphers": "ALL:@SECLEVEL=0"}, {"weak_tls1_2_suites_refused"}),
    ("certificate valid for any name asked", {"cert": "server-any-name"}, {"hostname_mismatch_refused"}),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_weak_server_fails_exactly_its_checks(verify_host, pki, serve, closed_ports, weakness, options, expected):
    server = serve(ThreadedServer, server_context(pki, **options))
    results = remote(verify_host, pki, server.port, closed_ports[0])
    assert failed(results) == expected, (weakness, results)


def test_a_health_port_reachable_on_the_same_address_fails(verify_host, pki, serve):
    server = serve(ThreadedServer, server_context(pki))
    with socket.create_server(("127.0.0.1", 0)) as health:
        results = remote(verify_host, pki, server.port, health.getsockname()[1])
    assert failed(results) == {"health_not_reachable_remotely"}, results
    assert "connected" in results["health_not_reachable_remotely"]["seen"]


def test_gateway_health_waits_until_healthy_and_reports_what_it_saw():
    """A real HTTP server on loopback: 'starting' twice, then healthy; the poll ends on the first healthy answer.
    Without a server, or with a server that never becomes healthy, the check fails naming what it got."""
    from ansible_collections.mcpgateway.mtls.plugins.module_utils import _tlscheck

    answers = iter([(503, {"status": "starting"}), (200, {"status": "starting"})])

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            code, body = next(answers, (200, {"status": "healthy"}))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/health" % server.server_address[1]
    sleeps = []
    try:
        record = _tlscheck.gateway_health(url, 30, sleep=sleeps.append)
        assert record["ok"] and record["seen"] == "healthy" and len(sleeps) == 2, (record, sleeps)
        answers = iter([(200, {"status": "unhealthy"})] * 100)
        clock = iter(range(0, 1000, 2))
        record = _tlscheck.gateway_health(url, 5, clock=lambda: next(clock), sleep=lambda _s: None)
        assert not record["ok"] and record["seen"] == "HTTP 200, status 'unhealthy'", record
    finally:
        server.shutdown()
        server.server_close()
    record = _tlscheck.gateway_health(url, 0)
    assert not record["ok"] and "Error" in record["seen"], record


# ------------------------------------------------------------------ local_plugins: refused handshakes are counted

def counted_check(verify_host, pki, tmp_path, port, **extra):
    """Module verify_host with one local plugin 't' and handshake_counters, as the role runs it on a plugin host."""
    (tmp_path / "etc/t/tls").mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/t/tls/ca.crt").write_bytes((pki / "ca" / "ca.crt").read_bytes())
    result = verify_host(local_plugins=[{"name": "t", "port": port, "health_port": port + 1000}],
                         loaded_from=str(tmp_path / "etc"), loaded_state_dir=str(tmp_path / "run"),
                         handshake_counters=True, **extra)
    assert "msg" not in result, result
    return {r["check"]: r for r in result["checks"]}["refused_handshakes_counted"]


def test_refused_handshakes_are_counted_by_the_launchers_telemetry(verify_host, pki, serve, tmp_path):
    from mcp_mtls_host import launcher_telemetry

    context = server_context(pki)
    (tmp_path / "run/t").mkdir(parents=True)
    telemetry = launcher_telemetry.Telemetry("t", str(tmp_path / "run/t/tls.prom"))
    telemetry.served(None, initial=True)
    assert launcher_telemetry.install(lambda protocol: telemetry if protocol._sslcontext is context else None)
    server = serve(AsyncioServer, context)
    record = counted_check(verify_host, pki, tmp_path, server.port, foreign=foreign(pki))
    assert record["ok"], record
    assert record["seen"].startswith("no_certificate +1; protocol +1; not_tls +1; unknown_ca +1"), record
    # Without the foreign material, three kinds of refusal are made and checked.
    record = counted_check(verify_host, pki, tmp_path, server.port)
    assert record["ok"] and "unknown_ca" not in record["seen"], record


def test_a_launcher_that_does_not_count_fails_the_check(verify_host, pki, serve, tmp_path, monkeypatch):
    from mcp_mtls_host import launcher_telemetry as T

    monkeypatch.setattr(T, "WRITE_DELAY_S", 0.05)
    (tmp_path / "run/t").mkdir(parents=True)
    T.Telemetry("t", str(tmp_path / "run/t/tls.prom")).served(None, initial=True)  # a file that never changes
    server = serve(AsyncioServer, server_context(pki))
    record = counted_check(verify_host, pki, tmp_path, server.port, wait=0)
    assert not record["ok"] and record["seen"].startswith("no_certificate +0; protocol +0; not_tls +0"), record
    (tmp_path / "run/t/tls.prom").unlink()
    record = counted_check(verify_host, pki, tmp_path, server.port)
    assert not record["ok"] and "no metrics file" in record["seen"], record


# ------------------------------------------------------------- remote_plugins: a revoked client certificate (revoke.yml)

def _crl_listing(pki, name):
    """A CRL of the deployed CA listing the certificate NAME.crt (PEM file path)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = serialization.load_pem_private_key((pki / "ca/ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca/ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((pki / f"{name}.crt").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(now - datetime.timedelta(hours=1))
           .next_update(now + datetime.timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(leaf.serial_number)
                                    .revocation_date(now - datetime.timedelta(minutes=5)).build())
           .sign(key, hashes.SHA256()))
    path = pki / f"{name}.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("enforced", [True, False], ids=["crl", "no-crl"])
def test_a_revoked_client_certificate_is_refused_where_the_crl_is_enforced(verify_host, pki, serve, enforced):
    if not (pki / "revoked-client.crt").exists():
        make_leaf(pki, "revoked-client", "ca", "extendedKeyUsage=clientAuth\n")
    context = server_context(pki)
    if enforced:
        context.load_verify_locations(_crl_listing(pki, "revoked-client"))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    server = serve(AsyncioServer, context)
    result = verify_host(remote_plugins=[{"name": "t", "url": f"https://localhost:{server.port}/mcp",
                                          "health_port": server.port + 1000}],
                         client={"cert": str(pki / "client.crt"), "key": str(pki / "client.key"), "ca": str(pki / "ca/ca.crt")},
                         revoked_client={"cert": (pki / "revoked-client.crt").read_text(),
                                         "key": (pki / "revoked-client.key").read_text()})
    records = {r["check"]: r for r in result["checks"]}
    assert records["mtls_handshake_with_gateway_cert"]["ok"], records  # the current certificate is accepted
    assert records["revoked_client_cert_refused"]["ok"] is enforced, records["revoked_client_cert_refused"]
