# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""Safe launcher for the cpex external plugin server (MCP over mTLS).

Installed by the role ``mcpgateway.mtls.plugin_server`` into the plugin venv and
run by ``mcp-plugin@NAME.service``.  It checks the configuration, then runs the
*unmodified* cpex runtime (``cpex.framework.external.mcp.server.runtime.run``)
in-process with a few targeted, version-checked patches:

* defect 1: cpex hands ``ssl_cert_reqs`` to uvicorn as the string "2" and
  uvicorn dies with ``ValueError: '2' is not a valid VerifyMode``.  The result
  of ``SSLCapableMCPServer._get_ssl_config`` is converted back to ``int``.
* defect 2: cpex serves plain HTTP when the TLS block is missing or partial.
  The launcher refuses to start unless ``server_settings.tls`` names a readable
  certfile, keyfile and ca_bundle and ``ssl_cert_reqs`` is 2 (required).
* defect 3: without ``PLUGINS_TRANSPORT=http`` cpex picks stdio when stdin is
  not a TTY (always under systemd).  The launcher forces the HTTP transport.
* defect 4: a missing config file or an unimportable plugin is silently
  skipped.  The launcher requires the file and a non-empty ``plugins`` list,
  checks every ``kind`` is importable, and sets ``PLUGINS_FAIL_ON_PLUGIN_ERROR``.
* defect 6: an encrypted key without a password makes OpenSSL prompt (hang)
  or fail with "PEM lib".  The key is loaded up front with a password callback
  that never prompts, and errors name the file.
* defect 7: the plain-HTTP health server (port + 1000) binds to the same host
  as the mTLS server.  It is bound to ``--health-host`` (default 127.0.0.1)
  while the mTLS port keeps ``server_settings.host``.
* TLS policy on the mTLS port (uvicorn's ``ssl_context_factory`` hook): TLS 1.2
  is the lowest version (``MCP_PLUGIN_TLS_MIN_VERSION``: TLSv1.2 or TLSv1.3) and
  the TLS 1.2 cipher suites are ``MCP_PLUGIN_TLS_CIPHERS`` (OpenSSL syntax,
  default: ECDHE with AES-GCM or ChaCha20-Poly1305 only; uvicorn's default
  "TLSv1" would also offer CBC and RSA key exchange without forward secrecy).
* defect 5 (no certificate reload; SIGHUP terminates cpex): the launcher builds the
  TLS context itself and serves every new connection from the current one
  (``mcp_mtls_host.launcher_tls``). SIGHUP (``systemctl reload``, whose
  ExecReload is ``--reload $MAINPID``) loads key, certificate and CA bundle
  again into a new context, checks it (key matches, the bundle verifies the
  certificate) and only then makes it current; a set that does not load is
  refused with a journal message and the previous one keeps serving.
  Established connections keep theirs. Restarts still happen when the config,
  env or software changed: then, when systemd
  passes the listening socket (socket activation, ``mcp-plugin@NAME.socket``),
  the mTLS server serves on that socket instead of binding its own.  systemd
  keeps the socket open while the instance restarts, so connections made
  during the restart wait in the kernel's backlog instead of being refused.
  The socket must be a listening TCP socket on ``server_settings.port``.
  Graceful shutdown is capped (``MCP_PLUGIN_GRACEFUL_TIMEOUT``, default 5 s):
  cpex's long-lived MCP streams would otherwise hold a stop until systemd
  kills the process.

* defect 8 (a refused handshake leaves no trace): every handshake on the mTLS
  port is counted, and a refused one logged once with the peer address and the
  reason (``mcp_mtls_host.launcher_telemetry``), into
  ``$RUNTIME_DIRECTORY/tls.prom`` (Prometheus text format) with the served
  certificate's expiry and the reloads.

Exit codes: 0 normal stop, 2 configuration refused, 3 runtime refused or
incompatible cpex, 4 the runtime ended without ever serving.

This module is the command line (``main``, the console script
``mcp-plugin-launcher``); the checks made before cpex is imported are in
``mcp_mtls_host.launcher_checks``, the cpex verification and the patches in
``mcp_mtls_host.launcher_patches``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .launcher_checks import (
    CIPHERS_ENV,
    CONFIG_ENV,
    KEY_PASSWORD_ENV,
    LAUNCHER_VERSION,
    MIN_VERSION_ENV,
    LauncherError,
    graceful_timeout,
    preflight,
    settings_key,
    take_activated_socket,
    tls_policy,
)
from .launcher_patches import RUNTIME_MODULE, cpex_version, install_patches, verify_cpex
from .launcher_tls import TLSMaterial
from .launcher_tls import request as reload_request

log = logging.getLogger("mcp_plugin_launcher")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV), help=f"plugin config YAML (default: ${CONFIG_ENV})")
    parser.add_argument(
        "--health-host",
        default=os.environ.get("MCP_PLUGIN_HEALTH_HOST", "127.0.0.1"),
        help="address of the plain-HTTP health server on port+1000 (default 127.0.0.1)",
    )
    parser.add_argument("--check", action="store_true", help="check the configuration and cpex, then exit")
    parser.add_argument("--no-file-checks", action="store_true", help="with --check: skip TLS file checks")
    parser.add_argument("--check-tls-policy", action="store_true",
                        help=f"check ${MIN_VERSION_ENV} and ${CIPHERS_ENV} only (no config, no cpex), then exit")
    parser.add_argument("--reload", type=int, metavar="PID",
                        help="ask the launcher PID to reload its TLS files and wait for its answer (ExecReload)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {LAUNCHER_VERSION}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The launcher's command line (console script mcp-plugin-launcher); the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s", stream=sys.stderr)
    try:
        if args.check_tls_policy:
            policy = tls_policy(os.environ)
            print(f"TLS policy ok: {policy['version']} or later, TLS 1.2 ciphers {policy['ciphers']}")
            return 0
        if args.reload is not None:
            taken, message = reload_request(args.reload, os.environ.get("RUNTIME_DIRECTORY"))
            (log.info if taken else log.error)("TLS reload of process %s: %s", args.reload, message)
            return 0 if taken else 1
        if not args.config:
            raise LauncherError(f"no plugin config: set {CONFIG_ENV} or pass --config")
        if args.no_file_checks and not args.check:
            raise LauncherError("--no-file-checks goes with --check only: a server loads its TLS files")
        config_path = os.path.abspath(args.config)
        key_password = os.environ.get(KEY_PASSWORD_ENV) or None
        preflight_data = preflight(config_path, check_files=not args.no_file_checks)
        policy = tls_policy(os.environ)
        section = settings_key(preflight_data)
        settings = preflight_data[section]
        tls = settings["tls"]
        material = TLSMaterial(tls, tls.get("keyfile_password") or key_password, policy, os.path.dirname(config_path),
                               None if args.check else os.environ.get("RUNTIME_DIRECTORY"))
        if section == "grpc_server_settings":
            return _grpc(args, config_path, settings, material, policy)
        # The TLS files, loaded and checked before cpex is imported (defect 6: never prompting for a password).
        tls_context = None if args.no_file_checks else material.start()
        if not args.check:
            material.install_signal_handler()  # SIGHUP reloads them from now on (instead of terminating)
            material.count_handshakes()  # defect 8: refused handshakes are logged and counted (tls.prom)

        # Before cpex reads its (cached) settings: defects 3 and 4.
        if os.environ.get("PLUGINS_TRANSPORT", "http").lower() != "http":
            log.warning("PLUGINS_TRANSPORT=%s ignored: the launcher always serves HTTP with mTLS", os.environ["PLUGINS_TRANSPORT"])
        os.environ["PLUGINS_TRANSPORT"] = "http"
        os.environ["PLUGINS_FAIL_ON_PLUGIN_ERROR"] = "true"
        os.environ[CONFIG_ENV] = config_path
        if os.path.exists(".env"):
            log.warning("%s/.env exists and cpex reads it; the systemd unit runs in the config directory", os.getcwd())

        from importlib import import_module

        runtime = import_module(RUNTIME_MODULE)
        verify_cpex(runtime)
        if args.check:
            print(f"{config_path}: ok (cpex {cpex_version()}, launcher {LAUNCHER_VERSION})")
            return 0
        state = {"serving": False}
        listen_socket = take_activated_socket(settings["host"], settings["port"])
        install_patches(runtime, args.health_host, state, tls_context, policy, listen_socket, graceful_timeout(os.environ))
        asyncio.run(runtime.run())
        if not state["serving"]:
            log.error("the cpex runtime ended without serving (plugin initialization failed?)")
            return 4
        return 0
    except LauncherError as exc:
        log.error("%s", exc)
        return exc.code
    except KeyboardInterrupt:
        return 0


def _grpc(args, config_path, settings, material, policy) -> int:
    """The gRPC mode (mcp_mtls_host.launcher_grpc); --check loads what it would serve with and stops."""
    from . import launcher_grpc  # pylint: disable=import-outside-toplevel

    os.environ["PLUGINS_FAIL_ON_PLUGIN_ERROR"] = "true"
    os.environ[CONFIG_ENV] = config_path
    if not args.check:
        if take_activated_socket(settings["host"], settings["port"]) is not None:
            raise LauncherError("systemd passed a listening socket, but grpcio binds its port itself: the instance's "
                                "socket unit must not start for a gRPC plugin (plugin_server renders it that way)")
        return launcher_grpc.run(config_path, settings, material, policy, args.health_host, graceful_timeout(os.environ))
    launcher_grpc.prepare_environment(policy)
    grpc = launcher_grpc.import_grpc()
    if not args.no_file_checks:
        material.extra_loader = launcher_grpc.GrpcCredentials(grpc, material).load
        material.start()
    print(f"{config_path}: ok (gRPC, grpcio {grpc.__version__}, cpex {cpex_version()}, launcher {LAUNCHER_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
