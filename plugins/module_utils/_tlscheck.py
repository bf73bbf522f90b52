# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_util is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The handshake checks of module verify_host, run on a target host with only Python, curl, openssl and ss.

Every check records what was expected and what was seen; role verify asserts on the records.
Every negative check (NEGATIVE_CHECKS) first needs its positive twin on the same address: the same request
with the gateway's certificate must get an HTTP answer there. A refusal only counts when the server refuses
at the TLS level after our ClientHello went out over an established TCP connection; a refused connection, a
name that does not resolve or a client that could not even load its certificate is no refusal.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import ssl
import subprocess
import time
import warnings
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import health_port as plan_health_port

TIMEOUT = 10
HEALTH_TIMEOUT = 3
HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH
WRONG_NAME = "name-not-in-sans.invalid"
ANY_SUITE = "DEFAULT:@SECLEVEL=0"
# Every TLS 1.2 suite without AEAD (CBC, RC4, 3DES ...) plus the AEAD ones with RSA key exchange.
WEAK_TLS12_SUITES = "ALL:-AESGCM:-AESCCM:-CHACHA20:-ARIAGCM:kRSA+AESGCM:!aNULL:!eNULL:@SECLEVEL=0"
NEGATIVE_CHECKS = ("no_client_cert_refused", "foreign_ca_cert_refused", "hostname_mismatch_refused",
                   "tls1_1_refused", "weak_tls1_2_suites_refused", "health_not_reachable_remotely")
# The server's TLS refusals: an alert it sent, or the connection it closed after our ClientHello without an
# HTTP answer. The second is no proof on its own, but the plugins' server cannot do better: uvicorn serves TLS
# through asyncio's (or uvloop's) memory-BIO SSL protocol, which closes the transport on a failed handshake
# without sending the alert OpenSSL wrote (seen with uvicorn 0.55 on Python 3.11 and 3.13, both loops: a client
# without a certificate, with a foreign one, offering TLS 1.1 or only weak suites gets a bare EOF). It only
# counts right after the positive twin got an HTTP answer on the same address, so a closed port, a hung
# server (a timeout), a TLS close_notify, a plain HTTP server or a client-side error can never count.
REFUSALS = ("alert", "closed")
# A gRPC plugin (URL grpcs://HOST:PORT) is asked in HTTP/2 with one real gRPC call, cpex's health check
# (/cpex.Health/Check): its answer, a DATA frame with the response message, is the "HTTP answer" of the checks below.
# A call the server refuses after the handshake (the launcher's CRL check) ends in trailers without a DATA frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GRPC_HEALTH_PATH = "/cpex.Health/Check"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_GOAWAY = 0, 1, 4, 7
H2_END_STREAM, H2_END_HEADERS, H2_ACK = 0x1, 0x4, 0x1
CALL_REFUSED = "call-refused"
ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13)[ _]alert[ _]([a-z0-9_ ]+)", re.I)


def run(cmd, timeout=20, stdin=b""):
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return 124, "timeout"


def curl(url, *extra):
    rc, out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *extra, url])
    return rc, out.strip()[-300:]


def check(name, ok, expected, seen):
    return {"check": name, "ok": bool(ok), "expected": expected, "seen": seen}


def _h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_length(length):
    """An HPACK string length: an integer with a 7-bit prefix (RFC 7541 5.1), Huffman bit off."""
    if length < 127:
        return bytes([length])
    out, length = [127], length - 127
    while length >= 128:
        out.append(length % 128 + 128)
        length //= 128
    return bytes(out + [length])


def _hpack_literal(name, value):
    """One header as an HPACK literal without indexing, new name, no Huffman coding."""
    name, value = name.encode("ascii"), value.encode("ascii")
    return b"\x00" + _hpack_length(len(name)) + name + _hpack_length(len(value)) + value


def grpc_health_request(authority):
    """The bytes of an HTTP/2 connection making one gRPC call of cpex's Health/Check (empty request message)."""
    headers = b"".join(_hpack_literal(name, value) for name, value in (
        (":method", "POST"), (":scheme", "https"), (":path", GRPC_HEALTH_PATH), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")))
    return (H2_PREFACE + _h2_frame(H2_SETTINGS, 0, 0) + _h2_frame(H2_HEADERS, H2_END_HEADERS, 1, headers)
            + _h2_frame(H2_DATA, H2_END_STREAM, 1, b"\x00\x00\x00\x00\x00"))


def _h2_read(tls):
    """(outcome, detail) of the server's side of grpc_health_request's connection: http when the call's response
    message came (a DATA frame on the stream), CALL_REFUSED when the stream ended without one, closed when the
    connection ended first; None when the caller should go on reading."""
    buffer = b""
    while True:
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size = int.from_bytes(buffer[:3], "big")
            kind, flags, stream = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9:9 + size], buffer[9 + size:]
            if kind == H2_SETTINGS and not flags & H2_ACK:
                tls.sendall(_h2_frame(H2_SETTINGS, H2_ACK, 0))
            elif kind == H2_DATA and stream == 1 and payload:
                serving = payload.endswith(b"\x08\x01")
                return "http", "gRPC answer to %s%s" % (GRPC_HEALTH_PATH, " (SERVING)" if serving else "")
            elif kind == H2_HEADERS and stream == 1 and flags & H2_END_STREAM:
                return CALL_REFUSED, "the server ended the gRPC call %s without an answer (it refused it after the " \
                    "TLS handshake)" % GRPC_HEALTH_PATH
            elif kind == H2_GOAWAY:
                return "closed", "the server closed the HTTP/2 connection (GOAWAY) without answering the gRPC call"
        data = tls.recv(4096)
        if not data:
            return "closed", "the server closed the connection without answering the gRPC call"
        buffer += data


def attempt(target, server_name, request, ca, cert=None, key=None, version=None, ciphers=None, check_hostname=True,
            h2=False, strict=False):
    """One HTTPS request to TARGET (family, sockaddr): no DNS, the server verified against CA for SERVER_NAME.
    With H2 (a gRPC server), ALPN offers h2 and REQUEST is grpc_health_request's: its answer is outcome http, a call
    refused after the handshake CALL_REFUSED.

    Returns (outcome, detail); outcome is one of: client-error (this side could not be set up: nothing was
    sent), no-connection (no TCP connection), verify-failed (this client refused the server's certificate),
    alert (the server sent a TLS alert), closed (the server closed the connection after our ClientHello,
    before any HTTP answer, without an alert), tls-error (this client stopped the handshake), http (an HTTP
    status line came back) or other (a timeout, a TLS close_notify without an answer, not HTTP). STRICT: the
    server's chain is verified with OpenSSL's strict X.509 checks (RFC 5280)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = check_hostname
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        context.load_verify_locations(ca)
        if cert:
            context.load_cert_chain(cert, key, password="")  # an encrypted key fails here instead of prompting
        if ciphers:
            context.set_ciphers(ciphers)
        if h2:
            context.set_alpn_protocols(["h2"])
        if version:
            with warnings.catch_warnings():  # TLS 1.1 is deprecated: offering it is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = context.maximum_version = version
    except (OSError, ValueError) as exc:
        return "client-error", f"client-side error (nothing sent): {exc}"
    stage = "TCP connect"
    answer = b""
    try:
        with socket.socket(target[0], socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(target[1])
            stage = "TLS handshake (after our ClientHello)"
            with context.wrap_socket(sock, server_hostname=server_name, suppress_ragged_eofs=False) as tls:
                # With TLS 1.3 the client's handshake ends before the server has checked the client's
                # certificate: its verdict comes with the first read.
                stage = f"{tls.version()} request"
                tls.sendall(request)
                if h2:
                    return _h2_read(tls)
                while b"\n" not in answer and len(answer) < 4096:
                    data = tls.recv(4096)
                    if not data:
                        break
                    answer += data
    except ssl.SSLCertVerificationError as exc:
        return "verify-failed", f"verify code {exc.verify_code}: {exc.verify_message}"
    except ssl.SSLError as exc:
        alert = ALERT.search(str(exc))
        if alert:
            return "alert", f"{stage}: the server sent the TLS alert {alert.group(1).strip().lower()}"
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "closed", f"{stage}: the server closed the connection without an alert and without an HTTP answer"
        return "tls-error", f"{stage}: this client stopped the handshake: {exc}"
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
        if stage != "TCP connect":
            return "closed", f"{stage}: the server reset the connection without an HTTP answer ({exc})"
        return "no-connection", f"{stage}: {exc}"
    except OSError as exc:
        return ("no-connection" if stage == "TCP connect" else "other"), f"{stage}: {str(exc) or type(exc).__name__}"
    if answer.startswith(b"HTTP/"):
        return "http", answer.split(b"\r\n")[0].decode("latin-1")
    if not answer:
        return "other", f"{stage}: the server ended the TLS session (close_notify) without an HTTP answer"
    return "other", f"{stage}: no HTTP answer: {answer[:40]!r}"


def connection_refused(target, port):
    """(refused, detail): no TCP connection to PORT at TARGET's address (refused, timed out or rejected)."""
    sockaddr = (target[1][0], port, *target[1][2:])
    with socket.socket(target[0], socket.SOCK_STREAM) as sock:
        sock.settimeout(HEALTH_TIMEOUT)
        try:
            sock.connect(sockaddr)
        except (ConnectionRefusedError, TimeoutError) as exc:
            return True, f"{sockaddr[0]}:{port}: {str(exc) or 'timed out'}"
        except OSError as exc:  # EHOSTUNREACH: a firewall's reject, the host itself answered the twin
            return exc.errno == errno.EHOSTUNREACH, f"{sockaddr[0]}:{port}: {exc}"
    return False, f"{sockaddr[0]}:{port}: connected"


def foreign_problem(foreign):
    """Why FOREIGN's cert is no valid client certificate of its CA (None when it is)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(foreign["cert"], foreign["key"], password="")
    except (OSError, ValueError) as exc:
        return f"client-side error: the foreign certificate and key do not load together: {exc}"
    if foreign.get("ca"):
        rc, out = run(["openssl", "verify", "-CAfile", foreign["ca"], "-purpose", "sslclient", foreign["cert"]])
        if rc != 0:
            return f"client-side error: the foreign certificate is no client certificate of the foreign CA: {' '.join(out.split())[-300:]}"
    return None


def remote(url, client, foreign=None, health_port=None, revoked=None, client_auth="require", health=True,
           strict=False):
    """The checks of one plugin endpoint URL (as in the gateway's plugins.yaml; grpcs://HOST:PORT for a gRPC plugin,
    asked in HTTP/2) from this host.

    CLIENT: paths cert, key, ca of the gateway's client files; FOREIGN: paths cert, key (and ca) of a valid
    client certificate of another CA, or None; HEALTH_PORT: the plugin's health port (default: port + 1000);
    REVOKED: paths cert, key of a client certificate of this CA that was revoked (playbooks/revoke.yml), or None.
    CLIENT_AUTH "optional" (the gateway's front door): a client without a certificate must get an HTTP answer.
    HEALTH false: no plain health port to check. STRICT: every handshake verifies the server's chain strictly."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    h2 = parts.scheme == "grpcs"
    request = grpc_health_request(parts.netloc) if h2 else \
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    mine = {"cert": client["cert"], "key": client["key"]} if client.get("cert") else {}
    ca = client["ca"]
    try:
        targets = list(dict.fromkeys((info[0], info[4]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        resolved = ", ".join(target[1][0] for target in targets)
    except OSError as exc:
        targets, resolved = [], f"{host} does not resolve: {exc}"
    results = [check("name_resolves", targets, f"{host} resolves", resolved)]

    # The positive twin: the first address where the gateway's certificate gets an HTTP answer.
    twin, tried = None, []
    for target in targets:
        outcome, detail = attempt(target, host, request, ca, h2=h2, strict=strict, **mine)
        tried.append(f"{target[1][0]}: {detail}")
        if outcome == "http":
            twin = target
            break
    results.append(check("mtls_handshake_with_gateway_cert", twin,
                         f"an HTTP answer over mTLS with the gateway's certificate, the server verified against the CA for {host}",
                         "; ".join(tried) or f"not tried: {resolved}"))

    def on_twin(name, expected, accept, control=None, server_name=host, **options):
        """A check on the address where the twin (and CONTROL, a check record) succeeded, with the same client."""
        if not twin:
            return check(name, False, expected, "not tried: mtls_handshake_with_gateway_cert failed")
        if control and not control["ok"]:
            return check(name, False, expected, f"not tried: its control {control['check']} failed")
        outcome, detail = attempt(twin, server_name, request, ca, h2=h2, strict=strict, **options)
        return check(name, accept(outcome, detail), expected, f"{twin[1][0]}:{port}: {detail}")

    def refused(outcome, _detail):
        return outcome in REFUSALS

    server_refusal = "a TLS alert from the server, or the server closing the connection after our ClientHello without an HTTP answer"
    if client_auth == "optional":
        results.append(on_twin("no_client_cert_served", "an HTTP answer for a client without a certificate "
                               "(client certificates optional)", lambda outcome, _detail: outcome == "http"))
    else:
        results.append(on_twin("no_client_cert_refused", f"{server_refusal}, for a client without a certificate", refused))
    if foreign:
        expected = f"{server_refusal}, for a valid client certificate of another CA"
        problem = foreign_problem(foreign)
        results.append(check("foreign_ca_cert_refused", False, expected, problem) if problem else
                       on_twin("foreign_ca_cert_refused", expected, refused, cert=foreign["cert"], key=foreign["key"]))
    if revoked:
        # grpcio's handshake takes no CRL: a gRPC plugin's launcher refuses each call of a revoked certificate.
        results.append(on_twin("revoked_client_cert_refused",
                               f"{server_refusal}, for the revoked client certificate (its CA's CRL lists it)" + (
                                   "; or, for a gRPC plugin, the gRPC call refused after the handshake" if h2 else ""),
                               lambda outcome, _detail: outcome in REFUSALS or (h2 and outcome == CALL_REFUSED),
                               cert=revoked["cert"], key=revoked["key"]))
    results.append(on_twin("hostname_mismatch_refused",
                           f"this client refuses the server's certificate for {WRONG_NAME} (verify code {HOSTNAME_MISMATCH}, "
                           "hostname mismatch) on the address where the right name succeeds",
                           lambda outcome, detail: outcome == "verify-failed" and detail.startswith(f"verify code {HOSTNAME_MISMATCH}:"),
                           server_name=WRONG_NAME, **mine))
    control = on_twin("tls1_2_accepted", "an HTTP answer over TLS 1.2 (control for the TLS 1.1 and weak suite checks)",
                      lambda outcome, _detail: outcome == "http", version=ssl.TLSVersion.TLSv1_2, ciphers=ANY_SUITE, **mine)
    results.append(control)
    results.append(on_twin("tls1_1_refused", f"{server_refusal}, for a TLS 1.1 ClientHello (TLS 1.2 control succeeds)", refused,
                           control, version=ssl.TLSVersion.TLSv1_1, ciphers=ANY_SUITE, **mine))
    results.append(on_twin("weak_tls1_2_suites_refused",
                           f"{server_refusal}, for a TLS 1.2 ClientHello offering only CBC and RSA-key-exchange suites "
                           "(TLS 1.2 control succeeds)", refused, control, version=ssl.TLSVersion.TLSv1_2, ciphers=WEAK_TLS12_SUITES, **mine))

    if not health:
        return results
    health = health_port or plan_health_port(port)
    expected = f"no TCP connection to port {health} (refused or timed out) at the address where the mTLS request succeeds"
    if twin:
        closed, seen = connection_refused(twin, health)
        results.append(check("health_not_reachable_remotely", closed, expected, seen))
    else:
        results.append(check("health_not_reachable_remotely", False, expected, "not tried: mtls_handshake_with_gateway_cert failed"))
    return results


def frontdoor(url, client, foreign=None, revoked=None, client_auth="require"):
    """The checks of the gateway's front door at URL (its /health over HTTPS), from the gateway host: remote()'s, with
    the server's chain verified strictly, named frontdoor_*. CLIENT: paths ca (the bundle that verifies the server
    certificate) and, unless the key is encrypted, cert and key of a client certificate the front door accepts."""
    checks = remote(url, client, foreign, revoked=revoked, client_auth=client_auth, health=False, strict=True)
    if not client.get("cert"):
        # Without a usable client certificate the twin is the request without one (client_auth optional only).
        checks = [item for item in checks if item["check"] != "no_client_cert_served"]
    return [dict(item, check="frontdoor_" + item["check"]) for item in checks]


def listening():
    rc, out = run(["ss", "-ltnH"])
    sockets = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            addr, port = fields[3].rsplit(":", 1)
            sockets.append((addr.strip("[]"), int(port)))
    return sockets


def local(port, health_port, wait=0, clock=time.monotonic, sleep=time.sleep):
    """The checks of one plugin on its own host: health on loopback only (polled for up to WAIT seconds: an
    instance that was just restarted), the mTLS port listening."""
    results = []
    health = health_port
    deadline = clock() + wait
    rc, out = curl(f"http://127.0.0.1:{health}/health")
    while not (rc == 0 and out.endswith("200")) and clock() < deadline:
        sleep(1)
        rc, out = curl(f"http://127.0.0.1:{health}/health")
    results.append(check("health_answers_on_loopback", rc == 0 and out.endswith("200"),
                         f"HTTP 200 from http://127.0.0.1:{health}/health", f"exit {rc}: {out}"))
    socks = listening()
    health_addrs = sorted({a for a, p in socks if p == health})
    main_addrs = sorted({a for a, p in socks if p == port})
    results.append(check("health_bound_to_loopback_only", health_addrs and all(a.startswith("127.") or a == "::1" for a in health_addrs),
                         f"port {health} listens on loopback only", f"{health_addrs}"))
    results.append(check("mtls_port_listening", bool(main_addrs), f"port {port} listens", f"{main_addrs}"))
    return results


# What the launcher counts for each refused handshake of counted()'s attempts (launcher_telemetry.REASONS).
COUNTED_ATTEMPTS = (("no_certificate", "a client without a certificate"),
                    ("protocol", "a TLS 1.1 ClientHello"),
                    ("not_tls", "plain HTTP on the mTLS port"),
                    ("unknown_ca", "a client certificate of another CA"))
_FAILURES = re.compile(r'^mcp_plugin_tls_handshake_failures_total\{plugin="(?:[^"\\]|\\.)*",reason="([a-z_]+)"\} ([0-9]+)$')


def failure_counters(path):
    """{reason: count} of a plugin instance's TLS metrics file (the launcher's tls.prom); None when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    return {match.group(1): int(match.group(2)) for match in map(_FAILURES.match, text.splitlines()) if match}


def counted(port, ca, metrics, foreign=None, wait=5.0, clock=time.monotonic, sleep=time.sleep):
    """Refused handshakes are counted: make the refused handshakes of COUNTED_ATTEMPTS (unknown_ca only with
    FOREIGN: paths cert, key) on this host's mTLS PORT (CA: the instance's bundle, to trust its certificate), then
    wait up to WAIT seconds until the METRICS file's counter of each reason grew (other clients may add to it; a
    reason that is not counted fails). One check record."""
    name = "refused_handshakes_counted"
    attempts = [item for item in COUNTED_ATTEMPTS if foreign or item[0] != "unknown_ca"]
    expected = "each refused handshake counted by its reason in %s: %s" % (
        metrics, ", ".join("%s (%s)" % item for item in attempts))
    before = failure_counters(metrics)
    if before is None:
        return check(name, False, expected, "no metrics file %s (written by launcher 1.3.0 or later)" % metrics)
    addrs = sorted({a for a, p in listening() if p == port})
    if not addrs:
        return check(name, False, expected, "port %s does not listen" % port)
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(addrs[0], addrs[0])
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    target = (family, (address, port))
    request = b"GET /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    outcomes = []
    for reason, _label in attempts:
        if reason == "not_tls":
            try:
                with socket.create_connection(target[1][:2], timeout=TIMEOUT) as raw:
                    raw.sendall(request)
                    raw.recv(64)
                outcomes.append("%s: sent" % reason)
            except OSError as exc:
                outcomes.append("%s: %s" % (reason, exc))
            continue
        options = {"version": ssl.TLSVersion.TLSv1_1, "ciphers": ANY_SUITE} if reason == "protocol" else {}
        if reason == "unknown_ca":
            options = {"cert": foreign["cert"], "key": foreign["key"]}
        outcome, detail = attempt(target, "localhost", request, ca, check_hostname=False, **options)
        outcomes.append("%s: %s" % (reason, outcome if outcome in REFUSALS else detail))
    deadline = clock() + wait
    while True:
        after = failure_counters(metrics) or {}
        grown = {reason: after.get(reason, 0) - before.get(reason, 0) for reason, _label in attempts}
        if all(value > 0 for value in grown.values()) or clock() >= deadline:
            break
        sleep(0.2)
    seen = "; ".join("%s +%d" % item for item in grown.items())
    return check(name, all(value > 0 for value in grown.values()), expected,
                 "%s (attempts: %s)" % (seen, "; ".join(outcomes)))


def health_status(url, tls=None):
    """'healthy' when URL answers HTTP 200 with JSON status "healthy", else what it answered. TLS: paths ca, and
    optionally cert and key (a client certificate), for an https URL."""
    tls = tls or {}
    try:
        with open_url(url, timeout=5, validate_certs=True, use_proxy=False, ca_path=tls.get("ca"),
                      client_cert=tls.get("cert"), client_key=tls.get("key")) as answer:
            body = answer.read(65536)
            status = json.loads(body.decode("utf-8", "replace")).get("status") if answer.status == 200 else None
            return "healthy" if status == "healthy" else f"HTTP {answer.status}, status {status!r}"
    except (OSError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"


def gateway_health(url, wait, clock=time.monotonic, sleep=time.sleep, tls=None):
    """Poll URL every second until it is healthy or WAIT seconds passed (a starting gateway answers only once
    it loaded its plugins)."""
    deadline = clock() + wait
    while True:
        seen = health_status(url, tls)
        if seen == "healthy" or clock() >= deadline:
            return check("gateway_healthy", seen == "healthy", f"{url} healthy within {wait} s", seen)
        sleep(1)


def gateway_service(unit, plugins, health_url=None, wait=0, tls=None):
    """The gateway unit is active (healthy at HEALTH_URL, waiting up to WAIT s; TLS as health_status's) and its
    current run registered every plugin in PLUGINS and reported their number."""
    results = [gateway_health(health_url, wait, tls=tls)] if health_url else []
    rc, state = run(["systemctl", "is-active", unit])
    results.append(check("gateway_service_active", state.strip() == "active", f"{unit} active", state.strip()))
    rc, invocation = run(["systemctl", "show", "-p", "InvocationID", "--value", unit])
    rc, log = run(["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_INVOCATION_ID={invocation.strip()}"], timeout=30)
    registered = set(re.findall(r"Registered plugin: (\S+)", log))
    for name in plugins:
        results.append(check("gateway_registered_plugin", name in registered,
                             f"'Registered plugin: {name}' in this run of {unit}",
                             "registered" if name in registered else f"not registered (saw {sorted(registered)})"))
    counts = re.findall(r"Plugin manager initialized with ([0-9]+) plugins", log)
    results.append(check("gateway_plugin_count", counts and int(counts[-1]) == len(plugins),
                         f"'Plugin manager initialized with {len(plugins)} plugins' in this run of {unit}",
                         f"{counts[-1]} plugins" if counts else "no such line"))
    return results
