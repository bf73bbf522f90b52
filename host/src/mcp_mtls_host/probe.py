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
``stage`` names the step that failed (config, files, tls, mcp or grpc, hook) or is "done". A plugin with a
``grpc:`` entry is reached with cpex's gRPC client (``GrpcExternalPlugin``), the TLS check with the context
``client_trust.grpc_ssl_context`` builds for its channel and the HTTP/2 preface instead of an HTTP request.
With --trust-check, one more object, {"check", "target", "ok", "expected", "seen"}
(``mcp_mtls_host.trustcheck``).
Exit status: 0 all plugins ok, 1 at least one failed, 2 configuration or usage error.

Run it with the Python of a venv that has ``cpex`` (the gateway's venv, or a
small probe venv), as the gateway's service user: then a success also proves
that this user can read the deployed key.

This module is the command line of all three programs (``main``, the console
script ``mcp-mtls-probe``) and the one-shot probe; ``--check-config`` only loads
and validates the config (``mcp_mtls_host.configcheck``), ``--loop SECONDS``
watches the plugins during a certificate rotation (``mcp_mtls_host.watch``,
where its JSON summary is described).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import socket
import ssl
import sys
import time

from . import configcheck, trustcheck, watch
from .common import (DEFAULT_CONFIG, DEFAULT_ENV_FILE, client_context, current_user, describe_cert, emit, hook_call,
                     is_grpc, plugin_client, plugin_url, resolve_target)
from .watch_stats import emit_loop

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
    parser.add_argument(
        "--new-ok",
        action="store_true",
        help="a --plugin that the config does not list yet is reported as new (one JSON line, \"new\": true), not as an "
        "error (also set by MCP_MTLS_PROBE_NEW_OK=1)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per plugin (default: %(default)s)")
    parser.add_argument("--no-hook", action="store_true", help="stop after MCP initialize + get_plugin_config")
    parser.add_argument(
        "--check-config", action="store_true", help="only load and validate the config with cpex (no connection); usable as validate:"
    )
    parser.add_argument(
        "--trust-check",
        action="store_true",
        help="also prove that the client context trusts only ca_bundle: a server signed by a CA that only the system "
        "store offers must be refused (one more JSON line, with \"check\"; mcp_mtls_host.trustcheck)",
    )
    parser.add_argument("--revoked-cert", default=None, metavar="PATH",
                        help="with --revoked-key and one --plugin: that plugin's revoked server certificate, which the "
                        "client context must refuse (one more JSON line, with \"check\")")
    parser.add_argument("--revoked-key", default=None, metavar="PATH", help="the key of --revoked-cert")
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
    if bool(args.revoked_cert) != bool(args.revoked_key) or (args.revoked_cert and len(args.plugin) != 1):
        parser.error("--revoked-cert and --revoked-key go together, with exactly one --plugin")
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
        if args.no_hook or args.check_config or args.trust_check:
            parser.error("--loop calls a hook: it cannot be combined with --no-hook, --check-config or --trust-check")
        if args.new_ok:
            parser.error("--new-ok is for one-shot probes: --loop watches the plugins the config lists")
        if not args.timeout > 0:
            parser.error("--timeout needs a positive number of seconds")
    # The environment form is for callers that may meet an older probe (a rollout gates the plugin hosts before it
    # upgrades the gateways' probe): an older probe ignores the variable where it would refuse an unknown option.
    args.new_ok = args.new_ok or (args.loop is None and os.environ.get("MCP_MTLS_PROBE_NEW_OK") == "1")
    return args


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


# An HTTP/2 client's first bytes: the connection preface and an empty SETTINGS frame (a gRPC server answers with
# its own SETTINGS frame, after it accepted the client certificate).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def tls_check(host, port, tls_config, plugin_config, timeout):
    """Handshake + one request with the gateway's SSL context (an HTTP request, or the HTTP/2 preface for gRPC);
    returns (error, details)."""
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel

    details = {}
    grpc = is_grpc(plugin_config)
    try:
        context = client_context(plugin_config, tls_config)
    except PluginError as exc:
        return "client TLS setup failed: %s" % exc.error.message, details
    except (OSError, ValueError, ssl.SSLError) as exc:
        return "client TLS setup failed: %s" % exc, details
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
                    tls.sendall(H2_PREFACE if grpc else request.encode("ascii"))
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


async def probe_plugin(plugin_config, args):
    from cpex.framework.errors import PluginError  # pylint: disable=import-outside-toplevel
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

    error, details = await asyncio.to_thread(tls_check, host, port, tls_config, plugin_config, args.timeout)
    result.update(details)
    if error:
        return finish("tls", error)

    plugin = plugin_client(plugin_config)
    stage = "grpc" if is_grpc(plugin_config) else "mcp"
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


def probe_all(plugins, args):
    """Probe each plugin and print its line as soon as it is done; the results.

    One plugin at a time (the MCP client's task scopes must open and close in the same task, and sequential latencies
    are the honest numbers), each in an event loop of its own: whatever escapes one plugin's probe (a cancellation
    from the MCP client's scopes is a BaseException that probe_plugin does not catch) becomes that plugin's failed
    line, and the lines already printed stay printed."""
    results = []
    for plugin_config in plugins:
        try:
            res = asyncio.run(probe_plugin(plugin_config, args))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pylint: disable=broad-except
            res = result_template(plugin_config.name, plugin_url(plugin_config))
            res.update(stage="probe", error="the probe of this plugin ended with %s: %s" % (type(exc).__name__, exc))
        emit(res)
        results.append(res)
    return results


def main(argv=None):
    """The probe's command line (console script mcp-mtls-probe): one-shot, --check-config or --loop; the exit status."""
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

    error, config = configcheck.load_config(config_path, env_file)
    if error:
        return fail_config(error)
    plugins = configcheck.external_plugins(config)
    if args.check_config:
        return configcheck.report(config_path, plugins)
    if args.plugin:
        known = {p.name for p in plugins}
        missing = [name for name in args.plugin if name not in known]
        if missing and not args.new_ok:
            return fail_config("plugin(s) not in %s: %s" % (config_path, ", ".join(missing)))
        for name in missing:
            # A plugin added to the plan that this gateway's config does not list yet (a rollout reaches the
            # gateways last): nothing to call, and no failure; the caller decides what a new plugin means.
            res = result_template(name, None)
            res.update(ok=None, new=True, stage="config", error="not in %s yet" % config_path)
            emit(res)
        plugins = [p for p in plugins if p.name in args.plugin]
        if missing and not plugins:
            return 0
    if not plugins:
        return fail_config("no kind: external plugins in %s" % config_path)
    if args.loop is not None:
        return watch.run_loop_mode(plugins, args, fail_config)

    results = probe_all(plugins, args)
    if args.trust_check:
        results.append(trust_check(plugins, args.timeout))
    if args.revoked_cert:
        error, _url, host, _port, tls_config = resolve_target(plugins[0])
        record = trustcheck.revoked(plugins[0].name, host, functools.partial(client_context, plugins[0], tls_config),
                                    args.revoked_cert, args.revoked_key, args.timeout) if not error else {
            "check": trustcheck.REVOKED_CHECK, "target": plugins[0].name, "ok": False,
            "expected": trustcheck.REVOKED_EXPECTED, "seen": error}
        emit(record)
        results.append(record)
    return 0 if all(r["ok"] for r in results) else 1


def trust_check(plugins, timeout):
    """The --trust-check record (printed), for the first plugin that is reached over mTLS."""
    for plugin_config in plugins:
        error, _url, host, _port, tls_config = resolve_target(plugin_config)
        if not error:
            record = trustcheck.run(plugin_config.name, host, tls_config, timeout)
            break
    else:
        record = {"check": trustcheck.CHECK, "target": "config", "ok": False, "expected": trustcheck.EXPECTED,
                  "seen": "no plugin is reached over mTLS: nothing to check"}
    emit(record)
    return record


if __name__ == "__main__":
    sys.exit(main())
