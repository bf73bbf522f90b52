# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""mTLS probe for the MCP Gateway's external plugins.

Loads the *deployed* gateway plugin client configuration (default
/etc/mcpgateway/plugins.yaml) with cpex's own config loader, and for each
``kind: external`` plugin (or only the ones named with --plugin):

1. opens a TLS connection with the same SSL context the gateway builds
   (cpex ``create_ssl_context``) and sends one request, so that a rejected
   client certificate (TLS 1.3 reports it only after the handshake), an
   unknown CA, a hostname mismatch or an unreadable key is reported by name;
2. connects with cpex's real external plugin client (MCP initialize,
   list tools, get_plugin_config), exactly as the gateway does at start-up;
3. calls a real hook when the plugin has one the probe knows how to feed
   (tool_pre_invoke, tool_post_invoke) with a harmless payload.

Prints one JSON object per plugin on stdout:
  {"name", "url", "ok", "stage", "error", "latency_ms", "hook", "hook_latency_ms",
   "tls_version", "server_cert_sha256", "server_cert_subject", "server_cert_not_after", "user"}
``stage`` names the step that failed (config, files, tls, mcp, hook) or is "done".
Exit status: 0 all plugins ok, 1 at least one failed, 2 configuration or usage error.

Run it with the Python of a venv that has ``cpex`` (the gateway's venv, or a
small probe venv), as the gateway's service user: then a success also proves
that this user can read the deployed key.

Loop mode, ``--loop SECONDS``: watch the plugins during a certificate rotation
or a rolling restart of the plugin servers. Each selected plugin gets its own
asyncio task that owns ONE long-lived cpex external plugin client (like the
gateway) and calls a real hook every --interval seconds (all plugins at once).
A call fails when the hook raises or exceeds --timeout (also when the MCP
client's task group cancels it after its connection broke: the cause is taken
from the client's shutdown); the client is then shut down and created anew
before the next call, as a gateway restart would (a failed re-creation is a
failed call too). The client TLS files named in the plugin's TLS settings
(certfile, keyfile, ca_bundle) are hashed every second: when they change the
client is re-created (``reloads``), as the restarted gateway would load them.
While the changed files do not yet form a usable SSL context (key and
certificate are copied one after the other) the running client is kept, for at
most --reload-grace seconds. Every --fingerprint-every seconds a TLS handshake
in a daemon thread records the server certificate's sha256.
The loop ends after SECONDS, on SIGTERM/SIGINT, or when --stop-file appears
(calls in flight are answered first); a second signal abandons them, and each
abandoned call counts as failed. Then the probe prints ONE JSON line (also
written atomically to --summary FILE):
  {"loop": true, "ok", "duration_s", "interval_s", "fingerprint_every_s", "timeout_s", "reload_grace_s",
   "stopped_by" (duration, stop-file, SIGTERM, SIGINT), "forced", "started_at", "user",
   "plugins": {NAME: {"url", "hook", "calls", "ok", "failed", "longest_gap_s",
                      "max_latency_ms", "p50_latency_ms", "p95_latency_ms",
                      "failures": [{"t", "error"}] (first 20), "failures_omitted",
                      "fingerprints": [{"sha256", "first_seen_s", "last_seen_s"}],
                      "fingerprint_errors", "last_fingerprint_error",
                      "reconnects", "reloads", "client_reconnects", "error"}},
   "total": {"calls", "ok", "failed", "longest_gap_s"}}
``longest_gap_s`` is the longest time without a successful call, counting from
the start to the first success and from the last success to the end;
``reconnects`` counts clients re-created after failures, ``client_reconnects``
the reconnections cpex made by itself inside a hook call; times are seconds
since the start. Exit status: 0 no failed call, 1 at least one, 2 configuration
or usage error (then the JSON line, or the plugin that could not be watched, has
"error"; argparse usage errors go to stderr only).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import hashlib
import json
import logging
import math
import os
import re
import socket
import ssl
import signal
import sys
import tempfile
import threading
import time
from datetime import timezone
from urllib.parse import urlparse

DEFAULT_CONFIG = "/etc/mcpgateway/plugins.yaml"
DEFAULT_ENV_FILE = "/etc/mcpgateway/env"
# Hooks the probe can call with a payload that no plugin should act upon.
KNOWN_HOOKS = ("tool_pre_invoke", "tool_post_invoke")
PROBE_TOOL = "mcp-mtls-probe"
# Loop mode
TLS_FILE_LABELS = ("certfile", "keyfile", "ca_bundle")
FILE_CHECK_EVERY = 1.0  # seconds between two hashings of the client TLS files
STOP_POLL = 0.1  # longest sleep before the stop conditions are looked at again
MAX_FAILURES = 20  # failures listed per plugin (the others are only counted)
MISDIRECTED = (
    "mTLS works, but the plugin server answers 421 Misdirected Request for Host %s:%d: the MCP server's "
    "DNS-rebinding protection (on when it binds to a loopback address) accepts only localhost/127.0.0.1; "
    "bind the plugin server to a non-loopback address or allow this host name"
)
REJECTED_AFTER_HANDSHAKE = (
    "the plugin server closed the TLS connection right after the handshake: it did not accept the client "
    "certificate (issued by another CA, expired, or without clientAuth)"
)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="mcp_mtls_probe",
        description="Connect to the gateway's external plugins over mTLS with the deployed client config.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="gateway plugin config (default: %(default)s)")
    parser.add_argument(
        "--env-file",
        default=None,
        help="env file whose PLUGINS_* variables the gateway sees (PLUGINS_CLIENT_MTLS_* when TLS is set by env); "
        "default: %s if it exists and is readable" % DEFAULT_ENV_FILE,
    )
    parser.add_argument("--no-env-file", action="store_true", help="do not read any env file")
    parser.add_argument("--plugin", action="append", default=[], metavar="NAME", help="probe only this plugin (repeatable)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per plugin (default: %(default)s)")
    parser.add_argument("--no-hook", action="store_true", help="stop after MCP initialize + get_plugin_config")
    parser.add_argument(
        "--check-config", action="store_true", help="only load and validate the config with cpex (no connection); usable as validate:"
    )
    parser.add_argument("--verbose", action="store_true", help="show cpex/mcp log output on stderr")
    loop = parser.add_argument_group(
        "loop mode", "watch the plugins during a certificate rotation: one JSON summary line at the end, exit 1 if any call failed"
    )
    loop.add_argument(
        "--loop", type=float, default=None, metavar="SECONDS", help="call a hook of each plugin for SECONDS over one long-lived client per plugin"
    )
    loop.add_argument("--interval", type=float, default=0.2, metavar="SECONDS", help="seconds between two calls per plugin (default: %(default)s)")
    loop.add_argument(
        "--fingerprint-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two TLS handshakes recording the server certificate, 0 = never (default: %(default)s)",
    )
    loop.add_argument(
        "--reload-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="keep the running client at most this long while changed TLS files do not load yet (default: %(default)s)",
    )
    loop.add_argument("--stop-file", default=None, metavar="PATH", help="end the loop as soon as PATH exists (must not exist at start)")
    loop.add_argument("--summary", default=None, metavar="FILE", help="also write the JSON summary to FILE (atomically)")
    args = parser.parse_args(argv)
    if args.loop is None:
        for option, value in (("--stop-file", args.stop_file), ("--summary", args.summary)):
            if value is not None:
                parser.error("%s needs --loop" % option)
    else:
        if not args.loop > 0:
            parser.error("--loop needs a positive number of seconds")
        if not args.interval > 0:
            parser.error("--interval needs a positive number of seconds")
        if args.fingerprint_every < 0 or args.reload_grace < 0:
            parser.error("--fingerprint-every and --reload-grace cannot be negative")
        if args.no_hook or args.check_config:
            parser.error("--loop calls a hook: it cannot be combined with --no-hook or --check-config")
        if not args.timeout > 0:
            parser.error("--timeout needs a positive number of seconds")
    return args


def load_env_file(path):
    """Put the PLUGINS_* settings of a systemd-style env file into os.environ (before cpex reads them)."""
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            key = key.strip()
            if key.startswith("export "):
                key = key[len("export "):].strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            elif len(value) >= 2 and value[0] == value[-1] == '"':
                # systemd's EnvironmentFile rules: backslash escapes inside double quotes
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if key.startswith("PLUGINS_"):
                os.environ[key] = value


def result_template(name, url):
    return {
        "name": name,
        "url": url,
        "ok": False,
        "stage": "config",
        "error": None,
        "latency_ms": None,
        "hook": None,
        "hook_latency_ms": None,
        "tls_version": None,
        "server_cert_sha256": None,
        "server_cert_subject": None,
        "server_cert_not_after": None,
        "user": current_user(),
    }


def current_user():
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return str(os.getuid())


def describe_cert(der):
    """Fingerprint, subject and notAfter of a DER certificate (cryptography is a cpex dependency)."""
    info = {"server_cert_sha256": hashlib.sha256(der).hexdigest()}
    try:
        from cryptography import x509  # pylint: disable=import-outside-toplevel

        cert = x509.load_der_x509_certificate(der)
        info["server_cert_subject"] = cert.subject.rfc4514_string()
        not_after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=timezone.utc)
        info["server_cert_not_after"] = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    except Exception:  # the fingerprint alone is still useful
        pass
    return info


def check_files(tls_config):
    """Name the first TLS file this user cannot read (cpex would only say 'PEM lib' or fail later)."""
    for label in ("ca_bundle", "certfile", "keyfile"):
        path = getattr(tls_config, label, None)
        if not path:
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            return "cannot read %s %s as user %s: %s" % (label, path, current_user(), exc.strerror or exc)
    return None


def tls_check(host, port, tls_config, plugin_name, timeout):
    """Handshake + one request with the gateway's SSL context; returns (error, details)."""
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
    from cpex.framework.external.mcp.tls_utils import create_ssl_context  # pylint: disable=import-outside-toplevel

    details = {}
    try:
        context = create_ssl_context(tls_config, plugin_name)
    except PluginError as exc:
        return "client TLS setup failed: %s" % exc.error.message, details
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                details["tls_version"] = tls.version()
                der = tls.getpeercert(binary_form=True)
                if der:
                    details.update(describe_cert(der))
                # With TLS 1.3 the server judges our certificate after the handshake:
                # only a read shows whether it was accepted.
                request = "GET /mcp HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n" % (host, port)
                try:
                    tls.sendall(request.encode("ascii"))
                    first = tls.recv(64)
                except (ConnectionResetError, BrokenPipeError):
                    first = b""
                if not first:
                    return REJECTED_AFTER_HANDSHAKE, details
                if first.startswith(b"HTTP/1.1 421") or first.startswith(b"HTTP/1.0 421"):
                    return MISDIRECTED % (host, port), details
    except ssl.SSLCertVerificationError as exc:
        details.update(fetch_unverified_cert(host, port, timeout))
        return "server certificate rejected: %s" % (exc.verify_message or exc.reason or exc), details
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        hint = ""
        if "CERTIFICATE_REQUIRED" in reason.upper() or "UNKNOWN_CA" in reason.upper() or "BAD_CERTIFICATE" in reason.upper():
            hint = " (the plugin server did not accept the client certificate: wrong CA or none sent)"
        return "TLS error: %s%s" % (reason, hint), details
    except (socket.timeout, TimeoutError):
        return "timed out connecting to %s:%d" % (host, port), details
    except OSError as exc:
        return "cannot connect to %s:%d: %s" % (host, port, exc.strerror or exc), details
    return None, details


def fetch_unverified_cert(host, port, timeout):
    """Fetch the certificate the server presents without trusting it (diagnostics only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # diagnostics only: nothing is sent over this connection
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
                return describe_cert(der) if der else {}
    except OSError:
        return {}


def hook_call(hook_names):
    """Pick a hook the probe can feed; returns (hook_name, payload) or (None, None)."""
    from cpex.framework.hooks.tools import ToolPostInvokePayload, ToolPreInvokePayload  # pylint: disable=import-outside-toplevel

    for hook in KNOWN_HOOKS:
        if hook in hook_names:
            if hook == "tool_pre_invoke":
                return hook, ToolPreInvokePayload(name=PROBE_TOOL, args={})
            return hook, ToolPostInvokePayload(name=PROBE_TOOL, result={"content": [{"type": "text", "text": "probe"}]})
    return None, None


def resolve_target(plugin_config):
    """(error, url, host, port, tls_config) of an external plugin; error is None when it can be probed over mTLS."""
    from cpex.framework.models import MCPClientTLSConfig  # pylint: disable=import-outside-toplevel

    url = plugin_config.mcp.url if plugin_config.mcp else None
    if not plugin_config.mcp or not url:
        return "not an MCP external plugin with a url (only STREAMABLEHTTP/SSE over HTTPS can be probed)", url, None, None, None
    parsed = urlparse(url)
    if parsed.scheme != "https":
        return "plugin url is not https: the connection would not use TLS", url, None, None, None
    tls_config = plugin_config.mcp.tls or MCPClientTLSConfig.from_env()
    if tls_config is None:
        return "no client TLS settings (neither mcp.tls nor PLUGINS_CLIENT_MTLS_*)", url, None, None, None
    if not tls_config.certfile:
        return "no client certificate configured: this would not be mutual TLS", url, None, None, tls_config
    return None, url, parsed.hostname, parsed.port or 443, tls_config


async def probe_plugin(plugin_config, args):
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
    from cpex.framework.external.mcp.client import ExternalPlugin  # pylint: disable=import-outside-toplevel
    from cpex.framework.models import GlobalContext, PluginContext  # pylint: disable=import-outside-toplevel

    error, url, host, port, tls_config = resolve_target(plugin_config)
    result = result_template(plugin_config.name, url)
    start = time.perf_counter()

    def finish(stage, error=None):
        result["stage"] = stage
        result["error"] = error
        result["ok"] = error is None
        result["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
        return result

    if error:
        return finish("config", error)

    error = check_files(tls_config)
    if error:
        return finish("files", error)

    error, details = await asyncio.to_thread(tls_check, host, port, tls_config, plugin_config.name, args.timeout)
    result.update(details)
    if error:
        return finish("tls", error)

    plugin = ExternalPlugin(plugin_config)
    stage = "mcp"
    try:
        await asyncio.wait_for(plugin.initialize(), timeout=args.timeout)
        if not args.no_hook:
            hook, payload = hook_call(list(plugin.config.hooks or []))
            if hook:
                stage = "hook"
                context = PluginContext(global_context=GlobalContext(request_id="mcp-mtls-probe"))
                hook_start = time.perf_counter()
                await asyncio.wait_for(plugin.invoke_hook(hook, payload, context), timeout=args.timeout)
                result["hook"] = hook
                result["hook_latency_ms"] = round((time.perf_counter() - hook_start) * 1000.0, 1)
    except PluginError as exc:
        return finish(stage, exc.error.message if exc.error else str(exc))
    except asyncio.TimeoutError:
        return finish(stage, "timed out after %.0f s" % args.timeout)
    except Exception as exc:  # report, never traceback: the output is parsed
        return finish(stage, "%s: %s" % (type(exc).__name__, exc))
    finally:
        try:
            await plugin.shutdown()
        except Exception:  # pylint: disable=broad-except
            pass
    return finish("done")


async def probe_all(plugins, args):
    results = []
    for plugin_config in plugins:
        # One plugin at a time: the MCP client's task scopes must open and close in the same task,
        # and sequential latencies are the honest numbers.
        results.append(await probe_plugin(plugin_config, args))
    return results


# --------------------------------------------------------------------------------------------------
# Loop mode (--loop). Statistics, stop conditions, file watching and the driver are plain Python, fed
# with LoopTarget objects; only CpexLoopClient, server_fingerprint, tls_files_problem and
# build_targets touch cpex.


class FatalLoopError(Exception):
    """The plugin cannot be watched at all (no hook the probe can call): its loop ends."""


class StrayCancel(Exception):
    """A CancelledError this probe did not ask for (see guarded())."""


def percentile(values, pct):
    """Nearest-rank percentile of a list of numbers (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = int(math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def to_ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 1)


class LoopStats:
    """Availability of one plugin during a loop; times are read from the loop's clock, in seconds."""

    def __init__(self, start, url=None):
        self.start = start
        self.end = None
        self.url = url
        self.hook = None
        self.error = None
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.reconnects = 0
        self.reloads = 0
        self.client_reconnects = 0
        self.latencies = []
        self.failures = []
        self.failures_omitted = 0
        self.fingerprints = []
        self.fingerprint_errors = 0
        self.last_fingerprint_error = None
        self._last_ok = start
        self._longest_gap = 0.0

    def since_start(self, now):
        return round(now - self.start, 3)

    def success(self, now, latency_s):
        self.calls += 1
        self.ok += 1
        self.latencies.append(latency_s)
        self._longest_gap = max(self._longest_gap, now - self._last_ok)
        self._last_ok = now

    def failure(self, now, error):
        self.calls += 1
        self.failed += 1
        if len(self.failures) < MAX_FAILURES:
            self.failures.append({"t": self.since_start(now), "error": error})
        else:
            self.failures_omitted += 1

    def fingerprint(self, now, sha256):
        """Record a server certificate: each distinct one once, in the order first seen."""
        for entry in self.fingerprints:
            if entry["sha256"] == sha256:
                entry["last_seen_s"] = self.since_start(now)
                return
        self.fingerprints.append({"sha256": sha256, "first_seen_s": self.since_start(now), "last_seen_s": self.since_start(now)})

    def fingerprint_failed(self, error):
        self.fingerprint_errors += 1
        self.last_fingerprint_error = error

    def longest_gap(self, end):
        """Longest time without a successful call, start -> first success and last success -> end included."""
        return max(self._longest_gap, end - self._last_ok)

    def as_dict(self, end=None):
        end = self.end if self.end is not None else end
        return {
            "url": self.url,
            "hook": self.hook,
            "error": self.error,
            "calls": self.calls,
            "ok": self.ok,
            "failed": self.failed,
            "longest_gap_s": round(self.longest_gap(end), 3),
            "max_latency_ms": to_ms(max(self.latencies) if self.latencies else None),
            "p50_latency_ms": to_ms(percentile(self.latencies, 50)),
            "p95_latency_ms": to_ms(percentile(self.latencies, 95)),
            "failures": list(self.failures),
            "failures_omitted": self.failures_omitted,
            "fingerprints": [dict(entry) for entry in self.fingerprints],
            "fingerprint_errors": self.fingerprint_errors,
            "last_fingerprint_error": self.last_fingerprint_error,
            "reconnects": self.reconnects,
            "reloads": self.reloads,
            "client_reconnects": self.client_reconnects,
        }


class LoopStop:
    """The loop's end: the deadline, the stop file appearing, or request() (signals); the first reason wins."""

    def __init__(self, deadline, stop_file=None, clock=time.monotonic, exists=os.path.lexists):
        self.deadline = deadline
        self.stop_file = stop_file
        self.clock = clock
        self.exists = exists
        self.reason = None
        self.forced = False

    def request(self, reason):
        if self.reason is None:
            self.reason = reason

    def check(self):
        """The reason to stop, or None to go on."""
        if self.reason is None:
            if self.clock() >= self.deadline:
                self.reason = "duration"
            elif self.stop_file and self.exists(self.stop_file):
                self.reason = "stop-file"
        return self.reason


def tls_file_paths(tls_config):
    """label -> path of the client TLS files a (re)started gateway would load."""
    return {label: getattr(tls_config, label) for label in TLS_FILE_LABELS if getattr(tls_config, label, None)}


def file_hashes(paths):
    """label -> sha256 of the file (or why it cannot be read): a change means the files were rotated."""
    hashes = {}
    for label in sorted(paths):
        try:
            with open(paths[label], "rb") as handle:
                hashes[label] = hashlib.sha256(handle.read()).hexdigest()
        except OSError as exc:
            hashes[label] = "unreadable: %s" % (exc.strerror or exc)
    return hashes


def describe_error(exc, timeout):
    """One line for a failed call: cpex's message, a time-out, or the exception's type and text."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = "timed out after %g s" % timeout
    else:
        message = getattr(getattr(exc, "error", None), "message", None)
        text = str(message) if message else "%s: %s" % (type(exc).__name__, exc)
    return " ".join(text.split())[:500]


def root_exception(exc):
    """The first real exception inside (nested) exception groups, skipping cancellations."""
    while getattr(exc, "exceptions", None):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def describe_failure(exc, cause, timeout):
    """describe_error(exc), or, when the MCP client cancelled the call, the error its shutdown revealed."""
    if isinstance(exc, StrayCancel) and cause is not None and not isinstance(cause, StrayCancel):
        return " ".join(("connection broke: %s" % describe_error(root_exception(cause), timeout)).split())[:500]
    return describe_error(exc, timeout)


class LoopTarget:  # pylint: disable=too-few-public-methods
    """What the loop needs of one plugin.

    new_client(on_reconnect) returns an object with async start(), call(), close() and a ``hook`` attribute;
    hashes() the TLS file hashes; files_ready() None or why the TLS files do not load (yet);
    fingerprint() a coroutine returning the server certificate's sha256 (or None: no sampling).
    """

    def __init__(self, name, new_client, url=None, hashes=None, files_ready=None, fingerprint=None):
        self.name = name
        self.new_client = new_client
        self.url = url
        self.hashes = hashes or dict
        self.files_ready = files_ready or (lambda: None)
        self.fingerprint = fingerprint


async def guarded(awaitable, stop):
    """Await; turn a CancelledError that is not a forced stop into StrayCancel.

    When a connection breaks, cpex reconnects inside invoke_hook and awaits the new session outside the
    anyio task group that its exit stack entered in this task: the group then cancels this task. That is a
    failed call, not a stop: the cancellation requests are withdrawn and the client is shut down (which
    leaves the cancelled scope)."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        if stop.forced:
            raise
        task = asyncio.current_task()
        if task is not None and hasattr(task, "uncancel"):
            while task.cancelling():
                task.uncancel()
        raise StrayCancel("cancelled inside the MCP client (its connection broke)") from None


async def close_quietly(client, stop):
    """Shut the client down; returns the exception it ended with (a broken connection's cause) or None."""
    try:
        return await guarded(client.close(), stop)
    except Exception as exc:  # pylint: disable=broad-except
        return exc


async def sleep_until(when, stop, clock, sleep):
    """Sleep until the clock reads ``when``, in short steps so that a stop is noticed quickly."""
    while stop.check() is None:
        left = when - clock()
        if left <= 0:
            return
        try:
            await guarded(sleep(min(left, STOP_POLL)), stop)
        except StrayCancel:
            continue


def next_tick(previous, interval, clock):
    """The next call time on the interval grid; when late, right now (no burst of catch-up calls)."""
    return max(previous + interval, clock())


class PluginWatcher:  # pylint: disable=too-many-instance-attributes
    """Owns one client of a plugin: creates it, calls the hook every interval, re-creates it after a
    failure or when the TLS files change. Creation, calls and shutdown all run in the task of run()."""

    def __init__(self, target, stats, stop, opts, clock, sleep):  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self.target = target
        self.stats = stats
        self.stop = stop
        self.opts = opts
        self.clock = clock
        self.sleep = sleep
        self.client = None
        self.client_hashes = None
        self.after_failure = False
        self.pending_since = None
        self.in_flight_since = None
        self.next_file_check = None

    def on_reconnect(self):
        self.stats.client_reconnects += 1

    async def drop(self, exc=None, failed_at=None):
        """Shut the client down; with exc, record the failed call (its cause comes out of the shutdown)."""
        doomed, self.client = self.client, None
        cause = None
        try:
            if doomed is not None:
                cause = await close_quietly(doomed, self.stop)
        finally:  # recorded even when a forced stop interrupts the shutdown
            if exc is not None:
                self.stats.failure(failed_at, describe_failure(exc, cause, self.opts.timeout))
                self.after_failure = True

    async def reload_if_rotated(self):
        """Re-create the client when the TLS files changed, as the restarted gateway would load them."""
        now = self.clock()
        if self.client is None or now < self.next_file_check:
            return
        self.next_file_check = now + FILE_CHECK_EVERY
        if self.target.hashes() == self.client_hashes:
            self.pending_since = None
            return
        if self.pending_since is None:
            self.pending_since = now
        # Key and certificate are copied one after the other: until they load together (or the grace
        # period is over) keep the running client, as the gateway runs on until it is restarted.
        if self.target.files_ready() is None or now - self.pending_since >= self.opts.reload_grace:
            await self.drop()
            self.stats.reloads += 1

    async def create(self):
        """A new client; False (and the failure recorded) when it cannot start."""
        self.client_hashes = self.target.hashes()
        self.pending_since = None
        candidate = self.target.new_client(self.on_reconnect)
        self.in_flight_since = self.clock()
        try:
            await guarded(candidate.start(), self.stop)
        except FatalLoopError as exc:
            self.in_flight_since = None
            self.stats.failure(self.clock(), str(exc))
            self.stats.error = str(exc)
            await close_quietly(candidate, self.stop)
            return False
        except Exception as exc:  # pylint: disable=broad-except
            self.in_flight_since = None
            self.client = candidate
            await self.drop(exc, self.clock())
            return False
        self.in_flight_since = None  # not in a finally: a forced stop must still see the call in flight
        self.client = candidate
        self.stats.hook = getattr(candidate, "hook", None)
        if self.after_failure:
            self.stats.reconnects += 1
        self.after_failure = False
        self.next_file_check = self.clock() + FILE_CHECK_EVERY
        return True

    async def call(self):
        started = self.in_flight_since = self.clock()
        try:
            await guarded(self.client.call(), self.stop)
        except Exception as exc:  # pylint: disable=broad-except
            self.in_flight_since = None
            await self.drop(exc, self.clock())
        else:
            self.in_flight_since = None
            done = self.clock()
            self.stats.success(done, done - started)

    async def run(self):
        next_call = self.clock()
        self.next_file_check = next_call + FILE_CHECK_EVERY
        try:
            while self.stop.check() is None:
                await self.reload_if_rotated()
                if self.client is None and not await self.create() and self.stats.error:
                    break
                if self.client is not None:
                    await self.call()
                next_call = next_tick(next_call, self.opts.interval, self.clock)
                await sleep_until(next_call, self.stop, self.clock, self.sleep)
        except asyncio.CancelledError:
            # A second signal (stop.forced): the call in flight is abandoned; it never answered, so it failed.
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            if self.in_flight_since is not None:
                waited = self.clock() - self.in_flight_since
                self.stats.failure(self.clock(), "abandoned after %.1f s: the loop was forced to stop while waiting for the answer" % waited)
        except Exception as exc:  # pylint: disable=broad-except
            self.stats.error = "probe error: %s" % describe_error(exc, self.opts.timeout)
        finally:
            if self.client is not None:
                await self.drop()
            self.stats.end = self.clock()


async def sample_fingerprints(target, stats, stop, opts, clock, sleep):
    """Record the server certificate every --fingerprint-every seconds (never touches the MCP client)."""
    next_sample = clock()
    while stop.check() is None:
        try:
            sha256 = await target.fingerprint()
            if not sha256:
                raise ssl.SSLError("the server sent no certificate")
        except Exception as exc:  # pylint: disable=broad-except
            stats.fingerprint_failed(describe_error(exc, opts.timeout))
        else:
            stats.fingerprint(clock(), sha256)
        next_sample = next_tick(next_sample, opts.fingerprint_every, clock)
        await sleep_until(next_sample, stop, clock, sleep)


def install_stop_signals(stop, tasks):
    """SIGTERM/SIGINT end the loop after the calls in flight; a second one cancels them."""
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(signame):
        if stop.reason is None:
            stop.request(signame)
            return
        stop.forced = True
        for task in tasks:
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no Unix signals
            continue
        installed.append(signum)
    return installed


def loop_summary(stats, start, end, opts, stop, started_at):
    plugins = {name: entry.as_dict(end) for name, entry in stats.items()}
    total = {
        "calls": sum(p["calls"] for p in plugins.values()),
        "ok": sum(p["ok"] for p in plugins.values()),
        "failed": sum(p["failed"] for p in plugins.values()),
        "longest_gap_s": max((p["longest_gap_s"] for p in plugins.values()), default=0.0),
    }
    return {
        "loop": True,
        "ok": total["failed"] == 0 and not any(p["error"] for p in plugins.values()),
        "duration_s": round(end - start, 3),
        "interval_s": opts.interval,
        "fingerprint_every_s": opts.fingerprint_every,
        "timeout_s": opts.timeout,
        "reload_grace_s": opts.reload_grace,
        "stopped_by": stop.reason,
        "forced": stop.forced,
        "started_at": started_at,
        "user": current_user(),
        "plugins": plugins,
        "total": total,
    }


async def run_loop(targets, opts, clock=time.monotonic, sleep=asyncio.sleep, handle_signals=True):
    """Watch all targets at once until the loop stops; returns the summary."""
    start = clock()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stop = LoopStop(start + opts.loop, opts.stop_file, clock)
    stats = {target.name: LoopStats(start, target.url) for target in targets}
    watchers, samplers = [], []
    for target in targets:
        entry = stats[target.name]
        watchers.append(asyncio.create_task(PluginWatcher(target, entry, stop, opts, clock, sleep).run()))
        if target.fingerprint is not None and opts.fingerprint_every > 0:
            samplers.append(asyncio.create_task(sample_fingerprints(target, entry, stop, opts, clock, sleep)))
    installed = install_stop_signals(stop, watchers + samplers) if handle_signals else []
    try:
        await asyncio.gather(*watchers, return_exceptions=True)
        stop.request("no plugin left to watch")  # when every watcher ended on an error before the stop
        for task in samplers:  # a handshake in flight is not worth waiting for
            task.cancel()
        await asyncio.gather(*samplers, return_exceptions=True)
    finally:
        loop = asyncio.get_running_loop()
        for signum in installed:
            loop.remove_signal_handler(signum)
    return loop_summary(stats, start, clock(), opts, stop, started_at)


def loop_exit_code(summary):
    """2: a configuration error (nothing or not everything could be watched), 1: a call failed, 0: none did."""
    plugins = summary.get("plugins") or {}
    if summary.get("error") or any(p.get("error") for p in plugins.values()):
        return 2
    return 1 if any(p["failed"] for p in plugins.values()) else 0


def write_summary(path, text):
    """Write text to path atomically: a temporary file in the same directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def emit_loop(summary, summary_path=None):
    """Print the summary as ONE JSON line (and write the same line to summary_path); False if that failed."""
    text = json.dumps(summary, sort_keys=True) + "\n"
    written = True
    if summary_path:
        try:
            write_summary(summary_path, text)
        except OSError as exc:
            written = False
            message = "cannot write summary %s as user %s: %s" % (summary_path, current_user(), exc.strerror or exc)
            sys.stderr.write(message + "\n")
            summary = dict(summary, summary_error=message)
            text = json.dumps(summary, sort_keys=True) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return written


async def run_with_timeout(awaitable, seconds):
    """Await with a deadline in the current task (asyncio.wait_for on Python 3.11 would start another task,
    and the MCP client's task scopes must be entered and left by the task that owns the client)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # pragma: no cover - Python < 3.11 (cpex needs 3.11)
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


class CpexLoopClient:
    """One long-lived cpex ExternalPlugin, created, called and shut down by the task that owns it."""

    def __init__(self, plugin_config, timeout, on_reconnect=None):
        self.plugin_config = plugin_config
        self.timeout = timeout
        self.on_reconnect = on_reconnect
        self.plugin = None
        self.hook = None
        self.calls = 0

    async def start(self):
        from cpex.framework.external.mcp.client import ExternalPlugin  # pylint: disable=import-outside-toplevel

        self.plugin = ExternalPlugin(self.plugin_config)
        original = getattr(self.plugin, "_reconnect_session", None)
        if original is not None and self.on_reconnect is not None:
            # Count the reconnections cpex makes by itself when a hook call finds its session gone.
            async def counted_reconnect():
                self.on_reconnect()
                return await original()

            self.plugin._reconnect_session = counted_reconnect  # pylint: disable=protected-access
        await run_with_timeout(self.plugin.initialize(), self.timeout)
        hook = hook_call(list(self.plugin.config.hooks or []))[0]
        if hook is None:
            raise FatalLoopError("the plugin has none of the hooks the probe can call (%s)" % ", ".join(KNOWN_HOOKS))
        self.hook = hook

    async def call(self):
        from cpex.framework.models import GlobalContext, PluginContext  # pylint: disable=import-outside-toplevel

        hook, payload = hook_call([self.hook])
        self.calls += 1
        context = PluginContext(global_context=GlobalContext(request_id="mcp-mtls-probe-loop-%d" % self.calls))
        await run_with_timeout(self.plugin.invoke_hook(hook, payload, context), self.timeout)

    async def close(self):
        """Shut the plugin client down; returns the exception the shutdown raised (or None), never raises it."""
        plugin, self.plugin = self.plugin, None
        if plugin is None:
            return None
        try:
            await run_with_timeout(plugin.shutdown(), self.timeout)
        except Exception as exc:  # pylint: disable=broad-except
            return exc
        return None


def in_thread(function, *args):
    """Run a blocking function in a daemon thread; returns an awaitable of its result.

    Unlike asyncio.to_thread, a handshake hanging on a silent server never holds the exit
    (asyncio.run waits for the default executor's threads)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(result, error):
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def work():
        try:
            result, error = function(*args), None
        except Exception as exc:  # pylint: disable=broad-except
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    threading.Thread(target=work, name="mcp-mtls-probe-fingerprint", daemon=True).start()
    return future


def server_fingerprint(host, port, tls_config, plugin_name, timeout):
    """sha256 of the server certificate from one TLS handshake with the gateway's SSL context (no request)."""
    from cpex.framework.external.mcp.tls_utils import create_ssl_context  # pylint: disable=import-outside-toplevel

    context = create_ssl_context(tls_config, plugin_name)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def tls_files_problem(tls_config, plugin_name):
    """None when the client TLS files load into an SSL context (key matching certificate), else why not."""
    from cpex.framework.external.mcp.tls_utils import create_ssl_context  # pylint: disable=import-outside-toplevel

    try:
        create_ssl_context(tls_config, plugin_name)
    except Exception as exc:  # pylint: disable=broad-except
        return describe_error(exc, 0)
    return None


def build_targets(plugins, args):
    """(error, targets): the LoopTargets of the selected plugins, or an error naming one that cannot be watched."""
    targets = []
    for plugin_config in plugins:
        name = plugin_config.name
        error, url, host, port, tls_config = resolve_target(plugin_config)
        if error:
            return "plugin %s: %s" % (name, error), None
        local_hooks = [str(getattr(hook, "value", hook)) for hook in (plugin_config.hooks or [])]
        if local_hooks and hook_call(local_hooks)[0] is None:
            return "plugin %s: none of its hooks (%s) is one the probe can call (%s)" % (name, ", ".join(local_hooks), ", ".join(KNOWN_HOOKS)), None
        targets.append(
            LoopTarget(
                name,
                functools.partial(CpexLoopClient, plugin_config, args.timeout),
                url=url,
                hashes=functools.partial(file_hashes, tls_file_paths(tls_config)),
                files_ready=functools.partial(tls_files_problem, tls_config, name),
                fingerprint=functools.partial(in_thread, server_fingerprint, host, port, tls_config, name, args.timeout),
            )
        )
    return None, targets


def run_loop_mode(plugins, args, fail_config):
    if args.stop_file and os.path.lexists(args.stop_file):
        return fail_config("stop file %s already exists: remove it before starting the loop" % args.stop_file)
    if args.summary:
        directory = os.path.dirname(args.summary)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            return fail_config("cannot write the summary into %s as user %s" % (directory, current_user()))
    error, targets = build_targets(plugins, args)
    if error:
        return fail_config(error)
    summary = asyncio.run(run_loop(targets, args))
    if not emit_loop(summary, args.summary):
        return 2
    return loop_exit_code(summary)


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config_path = os.path.abspath(args.config)
    env_file = None if args.no_env_file else args.env_file
    if env_file is None and not args.no_env_file and os.access(DEFAULT_ENV_FILE, os.R_OK):
        env_file = DEFAULT_ENV_FILE
    if env_file:
        env_file = os.path.abspath(env_file)
    if args.stop_file:
        args.stop_file = os.path.abspath(args.stop_file)
    if args.summary:
        args.summary = os.path.abspath(args.summary)
    # cpex's settings also read ./.env: run from a directory that has none.
    os.chdir("/")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL, stream=sys.stderr)

    def fail_config(message):
        if args.loop is not None:
            emit_loop({"loop": True, "ok": False, "error": message, "user": current_user()}, args.summary)
            return 2
        res = result_template(None, None)
        res["error"] = message
        emit(res)
        return 2

    if env_file:
        try:
            load_env_file(env_file)
        except OSError as exc:
            return fail_config("cannot read env file %s as user %s: %s" % (env_file, current_user(), exc.strerror or exc))
    # cpex treats a missing file as "no plugins": refuse that here.
    if not os.path.isfile(config_path):
        return fail_config("config file %s does not exist" % config_path)
    if not os.access(config_path, os.R_OK):
        return fail_config("config file %s is not readable by user %s" % (config_path, current_user()))
    try:
        from cpex.framework.loader.config import ConfigLoader  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        return fail_config("cpex is not importable with %s: %s" % (sys.executable, exc))
    try:
        config = ConfigLoader.load_config(config_path)
    except Exception as exc:  # pydantic ValidationError names the field
        return fail_config("cpex rejected %s: %s" % (config_path, " ".join(str(exc).split())))

    plugins = [p for p in (config.plugins or []) if p.kind == "external"]
    if args.check_config:
        emit({"config": config_path, "ok": True, "plugins": [p.name for p in plugins]})
        return 0
    if args.plugin:
        known = {p.name for p in plugins}
        missing = [name for name in args.plugin if name not in known]
        if missing:
            return fail_config("plugin(s) not in %s: %s" % (config_path, ", ".join(missing)))
        plugins = [p for p in plugins if p.name in args.plugin]
    if not plugins:
        return fail_config("no kind: external plugins in %s" % config_path)
    if args.loop is not None:
        return run_loop_mode(plugins, args, fail_config)

    results = asyncio.run(probe_all(plugins, args))
    for res in results:
        emit(res)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
