# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""Handshake telemetry of the plugin launcher's mTLS port (cpex defect 8: a refused handshake leaves no trace).

Every handshake on the mTLS port ends in asyncio's ``SSLProtocol._on_handshake_complete``; the launcher wraps it
for the connections of its own TLS context (``launcher_tls.ReloadingContext``) and hands each outcome to a
``Telemetry``: a refused handshake is logged once with the peer's address and the reason (at most
``LOG_BURST`` lines per reason and ``LOG_WINDOW_S`` seconds, then one line saying how many more were only counted:
a flood of one kind never hides another), and
counted by reason. The counters, and gauges for the served certificate's expiry and the TLS set's reloads, are
written in the Prometheus text format to ``$RUNTIME_DIRECTORY/tls.prom`` (atomically, at most once a second):
files, never a network listener. The health check copies the file to a node_exporter textfile directory when one
is configured.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time

log = logging.getLogger("mcp_plugin_launcher")

METRICS_FILE = "tls.prom"
LOG_BURST, LOG_WINDOW_S, WRITE_DELAY_S = 20, 60.0, 1.0
# Reasons, in the order they are written (every one, from 0, so that rate() and absent series work).
REASONS = ("no_certificate", "unknown_ca", "revoked", "expired", "not_yet_valid", "bad_certificate", "crl",
           "protocol", "cipher", "not_tls", "client_refused_server", "aborted", "other")
# Counted, not logged: a peer that closed the connection before the handshake ended (a port check, a load
# balancer's TCP probe, a client that gave up). The others are refusals, each logged.
QUIET = ("aborted",)
# X509_V_ERR_* codes (OpenSSL's x509_vfy.h) -> reason.
_VERIFY_CODES = {
    2: "unknown_ca", 20: "unknown_ca", 21: "unknown_ca", 19: "unknown_ca", 18: "unknown_ca", 7: "bad_certificate",
    23: "revoked", 10: "expired", 9: "not_yet_valid", 3: "crl", 8: "crl", 11: "crl", 12: "crl", 15: "crl", 16: "crl",
    13: "bad_certificate", 14: "bad_certificate", 26: "bad_certificate",
}
_REASON_WORDS = (
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"), ("CERTIFICATE_REQUIRED", "no_certificate"),
    ("UNSUPPORTED_PROTOCOL", "protocol"), ("WRONG_VERSION_NUMBER", "protocol"), ("VERSION_TOO_LOW", "protocol"),
    ("UNSUPPORTED_VERSION", "protocol"), ("NO_PROTOCOLS_AVAILABLE", "protocol"),
    ("NO_SHARED_CIPHER", "cipher"), ("NO_CIPHERS", "cipher"), ("NO_SUITABLE_SIGNATURE", "cipher"),
    ("HTTP_REQUEST", "not_tls"), ("HTTPS_PROXY_REQUEST", "not_tls"),
    ("ALERT_UNKNOWN_CA", "client_refused_server"), ("ALERT_BAD_CERTIFICATE", "client_refused_server"),
    ("ALERT_CERTIFICATE_EXPIRED", "client_refused_server"), ("ALERT_CERTIFICATE_UNKNOWN", "client_refused_server"),
    ("ALERT_DECRYPT_ERROR", "client_refused_server"), ("ALERT_CERTIFICATE_REVOKED", "client_refused_server"),
)


def classify(exc) -> tuple[str, str]:
    """(reason, detail) of a failed server-side handshake (asyncio passes some errors as classes)."""
    if isinstance(exc, type):
        exc = exc()
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "aborted", "the peer closed the connection during the handshake"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _VERIFY_CODES.get(getattr(exc, "verify_code", None), "bad_certificate")
        return reason, "client certificate refused: %s" % (exc.verify_message or getattr(exc, "reason", None) or exc)
    if isinstance(exc, ssl.SSLError):
        said = getattr(exc, "reason", None)
        upper = ("%s %s" % (said or "", exc)).upper()
        for word, reason in _REASON_WORDS:
            if word in upper:
                return reason, str(said or exc).lower().replace("_", " ")
        return "other", str(said or exc)
    return "other", "%s: %s" % (type(exc).__name__, exc)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Telemetry:
    """Counters and gauges of one instance's mTLS port, written to PATH (None: counted, logged, not written)."""

    def __init__(self, plugin: str, path: str | None, clock=time.monotonic):
        self.plugin = plugin
        self.path = path
        self.clock = clock
        self.failures = {reason: 0 for reason in REASONS}
        self.handshakes = 0
        self.reloads = {"ok": 0, "refused": 0}
        self.certificate_not_after = None
        self.crl_next_update = None
        self.loaded_at = None
        self._windows = {}  # reason -> [window start, lines logged, lines suppressed]
        self._lock = threading.Lock()
        self._timer = None

    # Outcomes
    def handshake(self, peer, exc) -> None:
        """One handshake on the mTLS port ended: EXC None when it completed."""
        with self._lock:
            if exc is None:
                self.handshakes += 1
            else:
                reason, detail = classify(exc)
                self.failures[reason] += 1
                if reason not in QUIET:
                    self._log_refusal(peer, reason, detail)
        self._schedule()

    def refused(self, peer, reason, detail, what="call (after its TLS handshake)", log_it=True) -> None:
        """A refusal the gRPC mode sees by REASON (one of REASONS): a call refused after its handshake (the
        revocation check grpcio's handshake cannot make), or a handshake grpcio refused and already logged (LOG_IT
        false; grpcio does not say which peer)."""
        with self._lock:
            self.failures[reason] += 1
            if log_it:
                self._log_refusal(peer, reason, detail, what)
        self._schedule()

    def _log_refusal(self, peer, reason, detail, what="TLS handshake"):
        now = self.clock()
        window = self._windows.get(reason)
        if window is None or now - window[0] >= LOG_WINDOW_S:
            if window and window[2]:
                log.warning("%d more refused TLS handshakes (%s) in the last %.0f s were counted, not logged",
                            window[2], reason, LOG_WINDOW_S)
            window = self._windows[reason] = [now, 0, 0]
        if window[1] < LOG_BURST:
            window[1] += 1
            where = "%s:%s" % tuple(peer[:2]) if isinstance(peer, (tuple, list)) and len(peer) >= 2 else str(peer)
            log.warning("refused %s from %s: %s (%s)", what, where, reason, detail)
        else:
            window[2] += 1

    def served(self, not_after: float | None, ok: bool = True, initial: bool = False,
               crl_next_update: float | None = None) -> None:
        """A TLS set was loaded (INITIAL: at start; CRL_NEXT_UPDATE: its CRL's, None without a CRL) or a reload was
        refused (OK false)."""
        with self._lock:
            if not initial:
                self.reloads["ok" if ok else "refused"] += 1
            if ok:
                self.certificate_not_after = not_after
                self.crl_next_update = crl_next_update
                self.loaded_at = time.time()
        self._schedule(now=initial)

    # Output
    def render(self) -> str:
        plugin = _label(self.plugin)
        lines = [
            "# HELP mcp_plugin_tls_handshake_failures_total Refused TLS handshakes on the plugin's mTLS port, by reason.",
            "# TYPE mcp_plugin_tls_handshake_failures_total counter",
        ]
        lines += ['mcp_plugin_tls_handshake_failures_total{plugin="%s",reason="%s"} %d' % (plugin, reason, count)
                  for reason, count in self.failures.items()]
        lines += [
            "# HELP mcp_plugin_tls_handshakes_total Completed TLS handshakes on the plugin's mTLS port.",
            "# TYPE mcp_plugin_tls_handshakes_total counter",
            'mcp_plugin_tls_handshakes_total{plugin="%s"} %d' % (plugin, self.handshakes),
            "# HELP mcp_plugin_tls_reloads_total TLS set reloads (systemctl reload), by result.",
            "# TYPE mcp_plugin_tls_reloads_total counter",
        ]
        lines += ['mcp_plugin_tls_reloads_total{plugin="%s",result="%s"} %d' % (plugin, result, count)
                  for result, count in self.reloads.items()]
        if self.certificate_not_after is not None:
            lines += [
                "# HELP mcp_plugin_tls_certificate_expiry_timestamp_seconds When the certificate the port serves expires.",
                "# TYPE mcp_plugin_tls_certificate_expiry_timestamp_seconds gauge",
                'mcp_plugin_tls_certificate_expiry_timestamp_seconds{plugin="%s"} %d' % (plugin, self.certificate_not_after),
            ]
        if self.loaded_at is not None:
            lines += [
                "# HELP mcp_plugin_tls_crl_enforced Whether the TLS set in use has a CRL that client certificates are "
                "checked against.",
                "# TYPE mcp_plugin_tls_crl_enforced gauge",
                'mcp_plugin_tls_crl_enforced{plugin="%s"} %d' % (plugin, self.crl_next_update is not None),
            ]
        if self.crl_next_update is not None:
            lines += [
                "# HELP mcp_plugin_tls_crl_next_update_timestamp_seconds When the enforced CRL expires (then every client "
                "is refused).",
                "# TYPE mcp_plugin_tls_crl_next_update_timestamp_seconds gauge",
                'mcp_plugin_tls_crl_next_update_timestamp_seconds{plugin="%s"} %d' % (plugin, self.crl_next_update),
            ]
        if self.loaded_at is not None:
            lines += [
                "# HELP mcp_plugin_tls_set_loaded_timestamp_seconds When the TLS set in use was loaded.",
                "# TYPE mcp_plugin_tls_set_loaded_timestamp_seconds gauge",
                'mcp_plugin_tls_set_loaded_timestamp_seconds{plugin="%s"} %d' % (plugin, self.loaded_at),
            ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if not self.path:
            return
        with self._lock:
            text = self.render()
            self._timer = None
        temp = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temp, 0o644)  # metrics, no secret: readable by a collector
            os.replace(temp, self.path)
        except OSError as exc:
            log.warning("cannot write the TLS metrics to %s: %s", self.path, exc)

    def _schedule(self, now: bool = False) -> None:
        """Write soon (bursts of handshakes make one write), or now."""
        if not self.path:
            return
        if now:
            self.write()
            return
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(WRITE_DELAY_S, self.write)
            self._timer.daemon = True
            self._timer.start()


# The callbacks install() registered: each maps a connection's protocol to its Telemetry, or None.
_SOURCES = []


def install(telemetry_of) -> bool:
    """Wrap asyncio's SSLProtocol._on_handshake_complete (once): TELEMETRY_OF(protocol) returns the Telemetry of a
    connection's server context, or None for connections that are not its own. False (with a warning) when this
    Python's asyncio has no such method with the expected signature: then nothing is counted."""
    import inspect  # pylint: disable=import-outside-toplevel
    from asyncio import sslproto  # pylint: disable=import-outside-toplevel

    original = getattr(sslproto.SSLProtocol, "_on_handshake_complete", None)
    if getattr(original, "mcp_mtls_telemetry", False):
        if telemetry_of not in _SOURCES:
            _SOURCES.append(telemetry_of)
        return True
    if original is None or list(inspect.signature(original).parameters) != ["self", "handshake_exc"]:
        log.warning("asyncio.sslproto.SSLProtocol has no _on_handshake_complete(self, handshake_exc) on this Python: "
                    "handshakes are not counted")
        return False

    def _on_handshake_complete(self, handshake_exc):
        try:
            for source in _SOURCES:
                telemetry = source(self)
                if telemetry is not None:
                    transport = getattr(self, "_transport", None)
                    peer = transport.get_extra_info("peername") if transport is not None else None
                    telemetry.handshake(peer, handshake_exc)
                    break
        except Exception as exc:  # pylint: disable=broad-except  # telemetry never breaks a connection
            log.debug("handshake telemetry: %s", exc)
        return original(self, handshake_exc)

    _on_handshake_complete.mcp_mtls_telemetry = True
    sslproto.SSLProtocol._on_handshake_complete = _on_handshake_complete
    _SOURCES.append(telemetry_of)
    return True
