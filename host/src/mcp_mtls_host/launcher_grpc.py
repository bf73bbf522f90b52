# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The launcher's gRPC mode: cpex's gRPC plugin server behind the launcher's guarantees.

A plugin whose config has ``grpc_server_settings`` (plugin_server renders it for ``transport: grpc``) is served by
cpex's own gRPC servicers (``GrpcPluginServicer``, ``GrpcHealthServicer``) over cpex's ``ExternalPluginServer``,
but not by cpex's ``GrpcPluginRuntime``, whose defects this mode avoids (measured with cpex 0.1.4, grpcio 1.85):

* g1 (fail-open): ``PLUGINS_GRPC_SERVER_SSL_ENABLED=true`` without certificate files, or a config whose
  ``grpc_server_settings`` has no ``tls``, serves plaintext gRPC with a warning. Here the TLS files are required
  and loaded (and checked) before anything listens; nothing is ever bound without TLS.
* g2 (``client_auth: optional`` is ``none``): it maps to ``require_client_authentication=False`` and no layer
  checks afterwards, so a client without a certificate calls every hook. Here client certificates are required.
* g3 (no reload): the credentials are built once. Here they are grpcio's dynamic server credentials: every new
  connection's handshake asks for the current TLS set, which ``systemctl reload`` (SIGHUP) replaces after the
  launcher loaded and checked it (``launcher_tls.TLSMaterial``); established connections keep theirs.
* g4 (no revocation): grpcio's server credentials take no CRL. Here each call's peer certificate (the handshake's
  ``x509_pem_cert``) is looked up in the CRLs of the set's bundle and a revoked one is refused with
  UNAUTHENTICATED before the servicer runs; an expired CRL refuses every call (fail closed, as OpenSSL does).
* g5 (SO_REUSEPORT): grpcio binds with SO_REUSEPORT, so a second server on the same port starts too and the kernel
  splits the connections between them. Here the port is bound without it: a taken port is an error.
* g6 (misleading errors): a key that does not match the certificate ends in "Failed to bind to address";
  required client authentication without a CA bundle in "Illegal to require client auth without providing root
  certificates". Here the launcher's own checks name the file and the problem first.
* g7 (no plain health): health is a gRPC call on the mTLS port. The launcher serves ``GET /health`` in plain
  HTTP on the health port (port + 1000) on ``--health-host`` (loopback), like the HTTP mode, for the unit's
  health check; it answers 200 once the gRPC server serves.

* g8 (refused handshakes): they happen inside grpcio, out of Python's reach; grpcio only writes a line to stderr
  ("Handshake failed with error SSL_ERROR_SSL: ...:REASON: detail", without the peer). The launcher routes its
  stderr through a pipe (``StderrTap``): every line goes on to the journal unchanged, and these lines are counted
  by reason in ``tls.prom`` like the HTTP mode's (no completed-handshake counter: grpcio reports none).

TLS policy: grpcio (BoringSSL) offers TLS 1.2 and 1.3 and no lower; its minimum cannot be raised from Python, so
``MCP_PLUGIN_TLS_MIN_VERSION=TLSv1.3`` is refused for gRPC plugins. The TLS 1.2 suites are the policy's
(``GRPC_SSL_CIPHER_SUITES``, set before grpcio is imported).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import ssl
import threading
import time

from .launcher_checks import LauncherError, health_port, pem_key_is_encrypted

log = logging.getLogger("mcp_plugin_launcher")

# cpex 0.1.4's generated gRPC code needs grpcio >= 1.78 and protobuf >= 6.31 (it raises at import below them),
# although its package metadata asks only for grpcio >= 1.70 and protobuf >= 5.29.
MIN_GRPCIO = (1, 78)
CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"
HEALTH_BODY = b'{"status":"healthy","transport":"grpc"}'
# grpcio's line for a refused handshake (its TSI layer): the BoringSSL reason and its detail.
_HANDSHAKE_FAILED = re.compile(rb"Handshake failed with error \S+: error:[0-9a-fA-F]+:[^:]*:[^:]*:([A-Z0-9_]+): ?(.*)$")
# BoringSSL's reason -> telemetry reason (CERTIFICATE_VERIFY_FAILED is split by its detail, below).
_GRPC_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_certificate", "CERTIFICATE_REQUIRED": "no_certificate",
    "UNSUPPORTED_PROTOCOL": "protocol", "WRONG_VERSION_NUMBER": "protocol", "NO_SHARED_CIPHER": "cipher",
    "HTTP_REQUEST": "not_tls", "HTTPS_PROXY_REQUEST": "not_tls", "TLSV1_ALERT_UNKNOWN_CA": "client_refused_server",
    "SSLV3_ALERT_BAD_CERTIFICATE": "client_refused_server", "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "client_refused_server",
    "TLSV1_ALERT_DECRYPT_ERROR": "client_refused_server", "SSLV3_ALERT_CERTIFICATE_REVOKED": "client_refused_server",
}
_VERIFY_DETAILS = (("unable to get local issuer", "unknown_ca"), ("self-signed", "unknown_ca"),
                   ("self signed", "unknown_ca"), ("has expired", "expired"), ("not yet valid", "not_yet_valid"),
                   ("revoked", "revoked"))


def handshake_refusal(line: bytes):
    """(reason, detail) of a grpcio stderr LINE reporting a refused handshake, else None."""
    match = _HANDSHAKE_FAILED.search(line.rstrip(b"\r\n"))
    if not match:
        return None
    word, detail = match.group(1).decode("ascii", "replace"), match.group(2).decode("utf-8", "replace").strip()
    reason = _GRPC_REASONS.get(word, "other")
    if word == "CERTIFICATE_VERIFY_FAILED":
        reason = next((r for text, r in _VERIFY_DETAILS if text in detail.lower()), "bad_certificate")
    return reason, ("%s: %s" % (word.lower().replace("_", " "), detail)) if detail else word.lower().replace("_", " ")


class StderrTap:
    """File descriptor 2 through a pipe: a thread copies every byte on to the original stderr (the journal) and hands
    each complete line to ON_LINE. The thread never stops reading (a full pipe would block every writer)."""

    def __init__(self, on_line):
        self.on_line = on_line
        self.original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.read_fd = read_fd
        threading.Thread(target=self._pump, name="grpc-stderr-tap", daemon=True).start()

    def _pump(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                return
            try:
                os.write(self.original, chunk)
            except OSError:
                pass
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > 65536:
                pending = b""
            for line in lines:
                try:
                    self.on_line(line)
                except Exception:  # pylint: disable=broad-except  # counting never stops the copying
                    pass


def count_refusals(telemetry):
    """ON_LINE for StderrTap: count grpcio's refused handshakes in TELEMETRY (they are in the journal already)."""

    def on_line(line):
        refusal = handshake_refusal(line)
        if refusal:
            telemetry.refused(None, refusal[0], refusal[1], what="TLS handshake", log_it=False)

    return on_line


def cipher_suites(policy: dict) -> str:
    """The TLS 1.2 suites of POLICY (OpenSSL syntax) as the colon list of names BoringSSL takes."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers(policy["ciphers"])
    return ":".join(c["name"] for c in probe.get_ciphers() if c["protocol"] != "TLSv1.3")


def prepare_environment(policy: dict, env=None) -> None:
    """Before grpcio is imported: refuse what grpcio cannot enforce, set its TLS 1.2 suites."""
    env = os.environ if env is None else env
    if policy["version"] != "TLSv1.2":
        raise LauncherError("MCP_PLUGIN_TLS_MIN_VERSION=%s cannot be enforced for a gRPC plugin: grpcio offers TLS 1.2 "
                            "and 1.3 and has no minimum version setting; use TLSv1.2 (plugin_server_tls_min_version)"
                            % policy["version"])
    env[CIPHER_ENV] = cipher_suites(policy)


def import_grpc():
    """grpcio, checked: the version cpex's generated code needs."""
    try:
        import grpc  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise LauncherError("grpcio is not installed in this venv (a gRPC plugin needs grpcio and protobuf: "
                            "plugin_server installs them for transport: grpc): %s" % exc, code=3) from exc
    try:
        version = tuple(int(part) for part in grpc.__version__.split(".")[:2])
    except ValueError:
        version = (0, 0)
    if version < MIN_GRPCIO:
        raise LauncherError("grpcio %s is older than %d.%d, which cpex's generated gRPC code needs"
                            % ((grpc.__version__,) + MIN_GRPCIO), code=3)
    return grpc


def _unencrypted_key(path: str, password: str | None) -> bytes:
    """The key of PATH as unencrypted PEM, in memory only (grpcio takes no key password)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not password or not pem_key_is_encrypted(data):  # a password for a plain key is ignored, as OpenSSL does
        return data
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel

    try:
        key = serialization.load_pem_private_key(data, password.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise LauncherError("cannot decrypt %s with the configured password: %s" % (path, exc)) from exc
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Revocations:
    """The revoked (issuer, serial) pairs of a TLS set's CRL file, and when that CRL expires."""

    def __init__(self, path: str | None, next_update: float | None):
        self.next_update = next_update
        self.revoked = set()
        self._verdicts = {}
        if not path:
            return
        from cryptography import x509  # pylint: disable=import-outside-toplevel

        with open(path, "rb") as handle:
            data = handle.read()
        for block in data.split(b"-----END X509 CRL-----")[:-1]:
            crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
            issuer = crl.issuer.public_bytes()
            self.revoked.update((issuer, entry.serial_number) for entry in crl)

    def problem(self, pem: bytes | None, now: float | None = None) -> tuple[str, str] | None:
        """None when the peer certificate PEM may call, else (reason, detail)."""
        if not pem:
            return "no_certificate", "no client certificate on the connection"
        if self.next_update is not None and (time.time() if now is None else now) >= self.next_update:
            return "crl", "the CRL of the TLS set has expired: every client is refused until it is renewed"
        verdict = self._verdicts.get(pem)
        if verdict is None:
            from cryptography import x509  # pylint: disable=import-outside-toplevel

            cert = x509.load_pem_x509_certificate(pem)
            key = (cert.issuer.public_bytes(), cert.serial_number)
            verdict = ("revoked", "client certificate serial %x (%s) is revoked by its CA's CRL"
                       % (cert.serial_number, cert.subject.rfc4514_string())) if key in self.revoked else False
            if len(self._verdicts) > 1024:
                self._verdicts.clear()
            self._verdicts[pem] = verdict
        return verdict or None


class GrpcCredentials:
    """What a TLS set is for grpcio: the certificate configuration and the set's revocations. Built by
    TLSMaterial after its own checks (``extra_loader``), handed out by the dynamic credentials' fetcher."""

    def __init__(self, grpc, material):
        self.grpc = grpc
        self.material = material
        self._served = None

    def load(self, files: dict, info: dict):
        """The grpcio configuration and revocations of the set FILES (resolved paths; INFO from build_context)."""
        key = _unencrypted_key(files["keyfile"], self.material.password)
        with open(files["certfile"], "rb") as handle:
            chain = handle.read()
        with open(files["ca_bundle"], "rb") as handle:
            roots = handle.read()
        try:
            revocations = Revocations(files.get("crl"), info["crl_next_update"])
        except (ValueError, OSError) as exc:
            raise LauncherError("cannot read the CRL %s: %s" % (files.get("crl"), exc)) from exc
        config = self.grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)
        return config, revocations

    def fetch(self):
        """grpcio's fetcher, called for each new connection: the configuration when the set changed, else None."""
        current = self.material.extra
        if current is self._served:
            return None
        self._served = current
        return current[0]

    def credentials(self):
        self._served = self.material.extra
        return self.grpc.dynamic_ssl_server_credentials(self._served[0], self.fetch, require_client_authentication=True)


def guard_interceptor(grpc, material):
    """A server interceptor refusing calls whose peer certificate the set's CRL revokes (defect g4)."""

    class Guard(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, handler_call_details):
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            if handler.unary_unary is None:  # cpex's services are unary: anything else is refused, not unguarded
                async def refuse_stream(_request, context):
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only unary calls are served")
                return grpc.unary_unary_rpc_method_handler(refuse_stream)
            inner = handler.unary_unary

            async def guarded(request, context):
                auth = context.auth_context() or {}
                pem = (auth.get("x509_pem_cert") or [None])[0]
                problem = material.extra[1].problem(pem)
                if problem:
                    material.telemetry.refused(context.peer(), problem[0], problem[1])
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem[1])
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(guarded, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)

    return Guard()


async def _health(state, reader, writer):
    """GET /health: 200 once the gRPC server serves (defect g7); anything else 404."""
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass
        parts = line.split(b" ")
        health = len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?", 1)[0] == b"/health"
        ok = health and state["serving"]
        body = HEALTH_BODY if ok else b'{"status":"unavailable"}'
        status = b"200 OK" if ok else (b"503 Service Unavailable" if health else b"404 Not Found")
        writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (status, len(body), body))
        await writer.drain()
    except (asyncio.TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def serve(creds, config_path: str, settings: dict, health_host: str, graceful: float, state: dict):
    """Run cpex's gRPC servicers with mTLS until SIGTERM/SIGINT."""
    # pylint: disable=import-outside-toplevel
    grpc, material = creds.grpc, creds.material
    from cpex.framework.external.grpc.proto import plugin_service_pb2_grpc
    from cpex.framework.external.grpc.server.server import GrpcHealthServicer, GrpcPluginServicer
    from cpex.framework.external.mcp.server.server import ExternalPluginServer

    plugin_server = ExternalPluginServer(config_path=config_path)
    await plugin_server.initialize()
    loaded = len(await plugin_server.get_plugin_configs())
    if not loaded:
        raise LauncherError("no plugin loaded from %s: refusing to serve an empty gRPC server" % config_path, code=4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = grpc.aio.server(interceptors=[guard_interceptor(grpc, material)], options=[("grpc.so_reuseport", 0)])
    plugin_service_pb2_grpc.add_PluginServiceServicer_to_server(GrpcPluginServicer(plugin_server), server)
    plugin_service_pb2_grpc.add_HealthServicer_to_server(GrpcHealthServicer(plugin_server), server)
    host, port = settings["host"], int(settings["port"])
    address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    try:
        server.add_secure_port(address, creds.credentials())
    except RuntimeError as exc:
        raise LauncherError("cannot bind the gRPC port %s: %s (is another process on it?)" % (address, exc), code=1) from exc
    await server.start()
    health = await asyncio.start_server(lambda r, w: _health(state, r, w), health_host, health_port(port))
    state["serving"] = True
    log.info("gRPC plugin server with mTLS (client certificates required) on %s, %d plugin(s); health on http://%s:%d/health",
             address, loaded, health_host, health_port(port))
    try:
        await stop.wait()
    finally:
        log.info("stopping the gRPC server (grace %.0f s)", graceful)
        health.close()
        await server.stop(graceful)
        await plugin_server.shutdown()


def run(config_path: str, settings: dict, material, policy: dict, health_host: str, graceful: float) -> int:
    """The gRPC mode's main: TLS material first (nothing listens without it), then the server. Exit status."""
    prepare_environment(policy)
    StderrTap(count_refusals(material.telemetry))  # before grpcio starts writing (defect g8)
    grpc = import_grpc()
    creds = GrpcCredentials(grpc, material)
    material.extra_loader = creds.load
    material.start()  # loads and checks the set, builds the grpcio configuration (refuses before anything binds)
    material.install_signal_handler()
    state = {"serving": False}
    asyncio.run(serve(creds, config_path, settings, health_host, graceful, state))
    return 0 if state["serving"] else 4
