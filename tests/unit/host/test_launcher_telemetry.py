"""Unit tests for mcp_mtls_host.launcher_telemetry: refused handshakes on a real asyncio TLS server (127.0.0.1),
made by real clients, are logged and counted by reason; the Prometheus text it writes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import time

import pytest

import host_certs as certs
from mcp_mtls_host import launcher_telemetry as T


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture()
def server(tmp_path):
    """An asyncio TLS server requiring client certificates from CA one; its Telemetry; and the clients' material."""
    ca1, ca2 = certs.make_ca("CA one"), certs.make_ca("CA two")
    leaf = certs.make_leaf(ca1, "mcp-plugin-a", True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(_write(tmp_path, "s.crt", certs.pem(leaf[1])), _write(tmp_path, "s.key", certs.key_pem(leaf[0])))
    context.load_verify_locations(_write(tmp_path, "ca1.crt", certs.pem(ca1[1])))
    telemetry = T.Telemetry("a", str(tmp_path / "tls.prom"))
    assert T.install(lambda protocol: telemetry if getattr(protocol, "_sslcontext", None) is context else None)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def handle(reader, writer):
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        holder["port"] = srv.sockets[0].getsockname()[1]
        holder["stop"] = asyncio.Event()
        ready.set()
        await holder["stop"].wait()
        srv.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)

    def client(cert=None, trust=ca1, max_version=None, plain=False):
        if plain:
            with socket.create_connection(("127.0.0.1", holder["port"]), timeout=5) as raw:
                raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                raw.recv(100)
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=certs.pem(trust[1]).decode())
        if max_version:
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = max_version
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        if cert:
            ctx.load_cert_chain(_write(tmp_path, "c.crt", certs.pem(cert[1])), _write(tmp_path, "c.key", certs.key_pem(cert[0])))
        try:
            with socket.create_connection(("127.0.0.1", holder["port"]), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="mcp-plugin-a") as tls:
                    tls.recv(2)
        except (OSError, ssl.SSLError):
            pass

    yield {"telemetry": telemetry, "client": client, "ca1": ca1, "ca2": ca2, "port": holder["port"]}
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(10)
    loop.close()


def _wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_each_refusal_is_counted_by_its_reason_and_logged_with_the_peer(server, caplog, tmp_path):
    telemetry, client = server["telemetry"], server["client"]
    good = certs.make_leaf(server["ca1"], "mcp-gateway-client", False)
    foreign = certs.make_leaf(server["ca2"], "mcp-gateway-client", False)
    expired = certs.make_leaf(server["ca1"], "mcp-gateway-client", False, days=1, start_days=-5)
    with caplog.at_level(logging.WARNING, logger="mcp_plugin_launcher"):
        client(cert=good)
        client()                                   # no client certificate
        client(cert=foreign)                       # unknown CA
        client(cert=expired)                       # expired
        client(cert=good, max_version=ssl.TLSVersion.TLSv1_1)  # TLS 1.1
        client(plain=True)                         # plain HTTP on the TLS port
        client(cert=good, trust=server["ca2"])     # the client refuses the server's certificate
        assert _wait_for(lambda: sum(telemetry.failures.values()) == 6 and telemetry.handshakes == 1)
    failures = {reason: count for reason, count in telemetry.failures.items() if count}
    assert failures == {"no_certificate": 1, "unknown_ca": 1, "expired": 1, "protocol": 1, "not_tls": 1,
                        "client_refused_server": 1}, failures
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused TLS handshake from 127.0.0.1:")]
    assert len(refused) == 6, refused
    assert any(": unknown_ca (client certificate refused: unable to get local issuer certificate)" in m for m in refused)
    assert _wait_for(lambda: os.path.exists(tmp_path / "tls.prom"))
    text = (tmp_path / "tls.prom").read_text()
    assert 'mcp_plugin_tls_handshake_failures_total{plugin="a",reason="unknown_ca"} 1' in text
    assert 'mcp_plugin_tls_handshake_failures_total{plugin="a",reason="revoked"} 0' in text
    assert 'mcp_plugin_tls_handshakes_total{plugin="a"} 1' in text
    assert oct(os.stat(tmp_path / "tls.prom").st_mode & 0o777) == "0o644"


def test_log_lines_are_limited_but_every_refusal_is_counted(caplog):
    clock = [0.0]
    telemetry = T.Telemetry("a", None, clock=lambda: clock[0])
    error = ssl.SSLError(1, "[SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE] peer did not return a certificate")
    other = ssl.SSLError(1, "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol")
    with caplog.at_level(logging.WARNING, logger="mcp_plugin_launcher"):
        for _attempt in range(T.LOG_BURST + 5):
            telemetry.handshake(("10.0.0.9", 4000), error)
        telemetry.handshake(("10.0.0.8", 4000), other)  # a flood of one reason does not hide another
        clock[0] = T.LOG_WINDOW_S + 1
        telemetry.handshake(("10.0.0.9", 4001), error)
    messages = [r.getMessage() for r in caplog.records]
    assert telemetry.failures["no_certificate"] == T.LOG_BURST + 6
    assert sum(m.startswith("refused TLS handshake from 10.0.0.9:") for m in messages) == T.LOG_BURST + 1
    assert any(m.startswith("refused TLS handshake from 10.0.0.8:4000: protocol (") for m in messages), messages
    assert "5 more refused TLS handshakes (no_certificate) in the last 60 s were counted, not logged" in messages


@pytest.mark.parametrize("exc, reason", [
    (ssl.SSLError(1, "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol"), "protocol"),
    (ssl.SSLError(1, "[SSL: NO_SHARED_CIPHER] no shared cipher"), "cipher"),
    (ssl.SSLError(1, "[SSL: HTTP_REQUEST] http request"), "not_tls"),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"), "client_refused_server"),
    (ssl.SSLError(1, "[SSL: SOMETHING_ELSE] else"), "other"),
    (ConnectionResetError("reset"), "aborted"),
    (ConnectionResetError, "aborted"),  # asyncio hands some errors over as classes
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "aborted"),
    (ValueError("x"), "other"),
])
def test_classify(exc, reason):
    assert T.classify(exc)[0] == reason


def test_verify_codes():
    for code, reason in ((23, "revoked"), (10, "expired"), (9, "not_yet_valid"), (20, "unknown_ca"), (12, "crl"),
                         (3, "crl"), (26, "bad_certificate"), (999, "bad_certificate")):
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code, exc.verify_message = code, "x"
        assert T.classify(exc)[0] == reason, code


def test_served_gauges_and_reload_counters(tmp_path):
    telemetry = T.Telemetry('we"ird', str(tmp_path / "tls.prom"))
    telemetry.served(1_900_000_000, initial=True)  # written at once
    text = (tmp_path / "tls.prom").read_text()
    assert 'mcp_plugin_tls_certificate_expiry_timestamp_seconds{plugin="we\\"ird"} 1900000000' in text
    assert 'mcp_plugin_tls_reloads_total{plugin="we\\"ird",result="ok"} 0' in text
    telemetry.served(None, ok=False)
    telemetry.served(1_950_000_000)
    telemetry.write()
    text = (tmp_path / "tls.prom").read_text()
    assert 'result="refused"} 1' in text and 'result="ok"} 1' in text and "} 1950000000" in text
    assert all(line.startswith("#") or line.rsplit(" ", 1)[1].isdigit() for line in text.splitlines())


def test_a_connection_closed_before_the_handshake_is_counted_not_logged(server, caplog):
    """A port check (connect, close) is no refusal: counted as aborted, without a log line."""
    import socket as sock_module

    telemetry = server["telemetry"]
    with caplog.at_level(logging.WARNING, logger="mcp_plugin_launcher"):
        with sock_module.create_connection(("127.0.0.1", server["port"]), timeout=5):
            pass
        assert _wait_for(lambda: telemetry.failures["aborted"] == 1)
    assert not [r for r in caplog.records if "refused TLS handshake" in r.getMessage()]
