# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The plugin server launcher's hold on the cpex runtime: it verifies that the cpex code it patches is the
code it was written for (source digests), then patches the runtime's server class in place (defects 1, 5
and 7, and the reloadable TLS context with the launcher's TLS policy, see ``mcp_mtls_host.launcher``). The cpex
runtime module is imported by ``launcher.main`` and handed in, uvicorn inside install_patches: this module imports
without either.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import ssl
import types

from .launcher_checks import CERT_REQUIRED, LAUNCHER_VERSION, LauncherError, health_port, normalize_cert_reqs

RUNTIME_MODULE = "cpex.framework.external.mcp.server.runtime"
TESTED_CPEX_VERSION = "0.1.4"
# SHA-256 of inspect.getsource() of the cpex 0.1.4 code the patches depend on.
# When cpex changes any of these, the launcher stops with exit code 3 instead
# of guessing.
CPEX_SOURCE_DIGESTS = {
    "SSLCapableMCPServer._get_ssl_config": "6503c93840635aa0c85aebc79ebcadda65365165d60909829a9a35c99841ca21",
    "SSLCapableMCPServer._start_health_check_server": "33cc98020fd59334370b5580e3dc9a4bab910c18c83a1cbab50f00c92f3a6133",
    "SSLCapableMCPServer.run_streamable_http_async": "8e8b85f5a7a4bc38453a68e8c4b10c0a0639ddfa5042b9ae684f4b7f421a5c05",
    "run": "ace1bb8966889a1a906bea1e08bd24b158061ab18649c1fdb0b6d9cf7fcd0ebf",
}

log = logging.getLogger("mcp_plugin_launcher")


def source_digest(obj) -> str:
    """SHA-256 of an object's source text."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


def cpex_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cpex")
    except metadata.PackageNotFoundError:
        return "not installed"


def verify_cpex(runtime) -> None:
    """Fail unless the runtime code the patches rely on is cpex 0.1.4's."""
    version = cpex_version()
    server_cls = getattr(runtime, "SSLCapableMCPServer", None)
    targets = {
        "SSLCapableMCPServer._get_ssl_config": getattr(server_cls, "_get_ssl_config", None),
        "SSLCapableMCPServer._start_health_check_server": getattr(server_cls, "_start_health_check_server", None),
        "SSLCapableMCPServer.run_streamable_http_async": getattr(server_cls, "run_streamable_http_async", None),
        "run": getattr(runtime, "run", None),
    }
    differing = []
    for name, obj in targets.items():
        if obj is None:
            differing.append(f"{name} (missing)")
            continue
        try:
            digest = source_digest(obj)
        except (OSError, TypeError):
            differing.append(f"{name} (no source)")
            continue
        if digest != CPEX_SOURCE_DIGESTS[name]:
            differing.append(name)
    if differing:
        raise LauncherError(
            f"cpex {version} is not the cpex {TESTED_CPEX_VERSION} this launcher was written for; "
            f"changed internals: {', '.join(differing)}. Pin cpex=={TESTED_CPEX_VERSION} "
            "(plugin_server_cpex_version) or update the launcher.",
            code=3,
        )
    if version != TESTED_CPEX_VERSION:
        log.warning("cpex %s: patched code is identical to %s, continuing", version, TESTED_CPEX_VERSION)


def _tls_factory(context):
    """uvicorn's ssl_context_factory: the launcher's reloadable context (launcher_tls), instead of one that
    uvicorn would build once from the files."""

    def factory(config, default_factory):
        if context.verify_mode != ssl.CERT_REQUIRED:
            raise LauncherError("the TLS context does not require client certificates", code=3)
        return context

    return factory


def install_patches(runtime, health_host: str, state: dict, tls_context, policy: dict,
                    listen_socket=None, stop_timeout: float = 5.0) -> None:
    """Patch the runtime's server class in place (after verify_cpex). TLS_CONTEXT serves the mTLS port
    (launcher_tls.TLSMaterial.start: the files of server_settings.tls, reloadable)."""
    import uvicorn

    if "ssl_context_factory" not in inspect.signature(uvicorn.Config).parameters:
        raise LauncherError(
            f"uvicorn {getattr(uvicorn, '__version__', '?')} has no ssl_context_factory; "
            "the launcher needs uvicorn >= 0.36 to enforce TLS >= 1.2",
            code=3,
        )
    server_cls = runtime.SSLCapableMCPServer
    original_ssl = server_cls._get_ssl_config
    original_health = server_cls._start_health_check_server
    original_serve = server_cls.run_streamable_http_async

    def _get_ssl_config(self):
        ssl_config = original_ssl(self)
        if not ssl_config or not ssl_config.get("ssl_certfile") or not ssl_config.get("ssl_ca_certs"):
            raise LauncherError("cpex produced no TLS settings; refusing to serve plain HTTP", code=3)
        # defect 1: uvicorn needs an int verify mode.
        ssl_config["ssl_cert_reqs"] = normalize_cert_reqs(ssl_config.get("ssl_cert_reqs", CERT_REQUIRED))
        if ssl_config["ssl_cert_reqs"] != CERT_REQUIRED:
            raise LauncherError("client certificates are not required; refusing", code=3)
        ssl_config["ssl_context_factory"] = _tls_factory(tls_context)
        ssl_config["timeout_graceful_shutdown"] = stop_timeout
        log.info(
            "launcher %s: mTLS on %s:%s (client certificate required, %s or later, TLS 1.2 ciphers %s%s, "
            "TLS files reloaded on SIGHUP), health on %s:%s",
            LAUNCHER_VERSION, self.server_config.host, self.server_config.port,
            policy["version"], policy["ciphers"],
            ", socket from systemd" if listen_socket is not None else "",
            health_host, health_port(self.server_config.port),
        )
        return ssl_config

    async def _start_health_check_server(self, port):
        # defect 7: same code, but it sees a copy of the settings whose host is
        # the health host; the mTLS server keeps its own host.
        if port != health_port(self.server_config.port):
            raise LauncherError(f"unexpected health port {port}", code=3)
        view = types.SimpleNamespace(server_config=self.server_config.model_copy(update={"host": health_host}))
        return await original_health(view, port)

    async def run_streamable_http_async(self):
        if self.server_config.uds:
            raise LauncherError("server_settings.uds would serve without TLS; refusing", code=3)
        state["serving"] = True
        return await original_serve(self)

    server_cls._get_ssl_config = _get_ssl_config
    server_cls._start_health_check_server = _start_health_check_server
    server_cls.run_streamable_http_async = run_streamable_http_async
    if listen_socket is not None:
        runtime.uvicorn = _activated_uvicorn(uvicorn, listen_socket)


def _activated_uvicorn(uvicorn, listen_socket):
    """The runtime's view of uvicorn: its mTLS server serves on the socket systemd passed.

    cpex builds the mTLS server and the health server with ``uvicorn.Server(config).serve()``;
    only the one on the passed socket's port gets it (uvicorn's documented ``sockets=`` path).
    """
    port = listen_socket.getsockname()[1]

    class ActivatedServer(uvicorn.Server):
        async def serve(self, sockets=None):
            if sockets is None and self.config.port == port:
                log.info("serving mTLS on the socket passed by systemd (%s:%s)", *listen_socket.getsockname()[:2])
                sockets = [listen_socket]
            return await super().serve(sockets=sockets)

    return types.SimpleNamespace(Config=uvicorn.Config, Server=ActivatedServer)
