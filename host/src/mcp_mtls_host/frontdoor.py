# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The gateway's front door: its own API (``/mcp``, ``/tools``, ``/health``) over TLS, with client certificates
required or optional (console script ``mcp-mtls-gateway``, the role gateway's ExecStart).

Gateway 1.1.0 has no listener TLS settings of its own: its CLI (``mcpgateway.cli``) hands every option to uvicorn's,
whose ``--ssl-*`` options build the context once with OpenSSL's defaults. That means no CRL for client certificates,
no minimum version or cipher policy beyond uvicorn's, session tickets on, and the key's password on the command
line, where ``ps`` shows it. This program runs the same CLI, but hands uvicorn (its ``ssl_context_factory``) a
context built by the plugin launcher's code (``launcher_tls``). It has the TLS policy's minimum version and
TLS 1.2 ciphers, and no session tickets. Client certificates are checked against the CA bundle of the gateway's TLS
set and against the CRL beside it. Before serving, a self-check proves that the bundle verifies the served chain
strictly. It refuses to start (exit status 3, the reason on stderr) when a file is missing or does not load, or
when the command line asks for uvicorn's own TLS or a Unix socket: it never falls back to plain HTTP.

Settings come from the environment (the role's env file):

``MCP_MTLS_HTTPS_CERTFILE``, ``MCP_MTLS_HTTPS_KEYFILE``, ``MCP_MTLS_HTTPS_CA_BUNDLE``
    The server certificate, its key and the CA bundle that verifies client certificates; the CRL is ``ca.crl``
    beside the bundle when it is there. Without ``MCP_MTLS_HTTPS_CERTFILE`` the CLI runs unchanged (plain HTTP).
``MCP_MTLS_HTTPS_CLIENT_AUTH``
    ``require`` (default): no certificate, no connection. ``optional``: a client without a certificate is served
    (the gateway's own authentication decides), one with a certificate must present one the bundle verifies.
``MCP_MTLS_HTTPS_MIN_VERSION``, ``MCP_MTLS_HTTPS_CIPHERS``
    ``TLSv1.2`` (default) or ``TLSv1.3``; the TLS 1.2 suites (forward secrecy and AEAD only).
``MCP_MTLS_HTTPS_KEYFILE_PASSWORD``
    The key's passphrase, when it is encrypted.
"""

from __future__ import annotations

import inspect
import os
import sys

from .launcher_checks import LauncherError, tls_policy

PREFIX = "MCP_MTLS_HTTPS_"
CLIENT_AUTH = ("require", "optional")
# uvicorn options that would replace or bypass this program's TLS: its own TLS, a Unix socket or a passed descriptor,
# and worker or reload processes (new interpreters that would not have this program's context: plain HTTP).
REFUSED_OPTIONS = ("--ssl-", "--uds", "--fd", "--workers", "--reload")


def settings(env) -> dict | None:
    """The front door's TLS settings from ENV, checked; None when it serves plain HTTP."""
    certfile = env.get(PREFIX + "CERTFILE", "")
    if not certfile:
        return None
    missing = [PREFIX + name for name in ("KEYFILE", "CA_BUNDLE") if not env.get(PREFIX + name)]
    if missing:
        raise LauncherError(f"{PREFIX}CERTFILE is set but {' and '.join(missing)} not: the TLS set is incomplete")
    client_auth = env.get(PREFIX + "CLIENT_AUTH", "") or "require"
    if client_auth not in CLIENT_AUTH:
        raise LauncherError(f"{PREFIX}CLIENT_AUTH={client_auth!r} must be one of {', '.join(CLIENT_AUTH)}")
    for name in ("CERTFILE", "KEYFILE", "CA_BUNDLE"):
        path = env[PREFIX + name]
        if not os.path.isabs(path):
            raise LauncherError(f"{PREFIX}{name}={path!r} must be an absolute path")
        if not os.access(path, os.R_OK):
            raise LauncherError(f"{PREFIX}{name}: {path} is missing or not readable by this user")
    if env.get("WEB_CONCURRENCY", "1").strip() not in ("", "1"):
        raise LauncherError(f"WEB_CONCURRENCY={env['WEB_CONCURRENCY']!r}: uvicorn's worker processes would serve plain "
                            "HTTP (they do not get this program's TLS context); the front door serves with one process")
    policy = tls_policy(env, PREFIX + "MIN_VERSION", PREFIX + "CIPHERS")
    policy["client_auth"] = client_auth
    return {
        "tls": {"certfile": certfile, "keyfile": env[PREFIX + "KEYFILE"], "ca_bundle": env[PREFIX + "CA_BUNDLE"]},
        "password": env.get(PREFIX + "KEYFILE_PASSWORD") or None,
        "policy": policy,
    }


def check_arguments(argv) -> None:
    """Refuse the uvicorn options that would serve TLS some other way, or not on the TCP port."""
    refused = sorted({arg.split("=", 1)[0] for arg in argv if arg.startswith(REFUSED_OPTIONS)})
    if refused:
        raise LauncherError(f"{', '.join(refused)}: the front door's TLS comes from {PREFIX}* (this program "
                            "builds the context, in this one process); remove these options")


def install(uvicorn_config, context, certfile: str) -> None:
    """Make every uvicorn Config serve CONTEXT (module UVICORN_CONFIG, ``uvicorn.config``)."""
    original_load = uvicorn_config.Config.load

    def load(self):
        self.ssl_context_factory = lambda _config, _default: context
        # uvicorn's start-up line then says https://.
        self.ssl_certfile = self.ssl_certfile or certfile
        return original_load(self)

    uvicorn_config.Config.load = load


def main(argv=None) -> int:
    """Run the gateway's CLI (``mcpgateway.cli.main``) with the front door's TLS; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        wanted = settings(os.environ)
        if wanted:
            check_arguments(argv)
            import uvicorn.config  # pylint: disable=import-outside-toplevel

            from .launcher_tls import TLSMaterial  # pylint: disable=import-outside-toplevel

            if "ssl_context_factory" not in inspect.signature(uvicorn.config.Config).parameters:
                raise LauncherError("this uvicorn has no ssl_context_factory (gateway 1.1.0 asks for uvicorn >= 0.51, "
                                    "which has it): upgrade uvicorn in the gateway's venv")
            tls = wanted["tls"]
            material = TLSMaterial(tls, wanted["password"], wanted["policy"], os.path.dirname(tls["certfile"]), None)
            context = material.start()
            install(uvicorn.config, context, tls["certfile"])
            policy = wanted["policy"]
            crl = any(name.endswith(".crl") for name in material.loaded)
            print(f"mcp-mtls-gateway: HTTPS with {tls['certfile']}, client certificates "
                  f"{'required' if policy['client_auth'] == 'require' else 'optional'} (CA bundle {tls['ca_bundle']}"
                  f"{', with its CRL' if crl else ', without a CRL'}), {policy['version']} or later",
                  file=sys.stderr, flush=True)
    except (LauncherError, OSError) as exc:
        print(f"mcp-mtls-gateway: refusing to start: {exc}", file=sys.stderr)
        return 3
    from mcpgateway.cli import main as cli_main  # pylint: disable=import-outside-toplevel

    sys.argv = ["mcpgateway", *argv]
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
