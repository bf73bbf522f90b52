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
* defect 5 (no certificate reload, so a rotation is a restart): when systemd
  passes the listening socket (socket activation, ``mcp-plugin@NAME.socket``),
  the mTLS server serves on that socket instead of binding its own.  systemd
  keeps the socket open while the instance restarts, so connections made
  during the restart wait in the kernel's backlog instead of being refused.
  The socket must be a listening TCP socket on ``server_settings.port``.
  Graceful shutdown is capped (``MCP_PLUGIN_GRACEFUL_TIMEOUT``, default 5 s):
  cpex's long-lived MCP streams would otherwise hold a stop until systemd
  kills the process.

Exit codes: 0 normal stop, 2 configuration refused, 3 runtime refused or
incompatible cpex, 4 the runtime ended without ever serving.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import inspect
import logging
import os
import re
import socket
import ssl
import sys
import types

LAUNCHER_VERSION = "1.2.0"
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
CERT_REQUIRED = 2
HEALTH_PORT_OFFSET = 1000
KEY_PASSWORD_ENV = "PLUGINS_SERVER_SSL_KEYFILE_PASSWORD"
CONFIG_ENV = "PLUGINS_CONFIG_PATH"
GRACEFUL_ENV = "MCP_PLUGIN_GRACEFUL_TIMEOUT"
CIPHERS_ENV = "MCP_PLUGIN_TLS_CIPHERS"
MIN_VERSION_ENV = "MCP_PLUGIN_TLS_MIN_VERSION"
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
MIN_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
SD_LISTEN_FDS_START = 3
KIND_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

log = logging.getLogger("mcp_plugin_launcher")


class LauncherError(Exception):
    """A refusal with a message meant for the operator."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# Pure checks (no cpex import; unit-tested)
# --------------------------------------------------------------------------


def health_port(port: int) -> int:
    """Port of cpex's plain-HTTP health server for an mTLS port."""
    return int(port) + HEALTH_PORT_OFFSET


def normalize_cert_reqs(value):
    """Return ``value`` as an int verify mode (0, 1, 2) or raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"ssl_cert_reqs must be 0, 1 or 2, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"ssl_cert_reqs must be 0, 1 or 2, not {value!r}")
    if number not in (0, 1, 2):
        raise ValueError(f"ssl_cert_reqs must be 0, 1 or 2, not {value!r}")
    return number


def pem_key_is_encrypted(pem: bytes) -> bool:
    """True when a PEM private key is encrypted (PKCS#8 or legacy OpenSSL)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or (
        b"Proc-Type: 4,ENCRYPTED" in pem
    )


def _readable(path: str) -> str | None:
    """None when ``path`` is a readable regular file, else the reason."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return f"is not readable by uid {os.getuid()}"
    return None


def check_config(data, config_path: str, check_files: bool = True) -> list[str]:
    """Return every problem found in a parsed plugin config (empty list = ok).

    ``data`` is the YAML document as loaded by ``yaml.safe_load``.
    """
    errors: list[str] = []
    where = config_path
    if not isinstance(data, dict):
        return [f"{where}: the file must be a YAML mapping with 'plugins' and 'server_settings'"]

    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        errors.append(f"{where}: 'plugins' must be a non-empty list (cpex would serve 0 plugins and still report healthy)")
    else:
        for index, plugin in enumerate(plugins):
            if not isinstance(plugin, dict):
                errors.append(f"{where}: plugins[{index}] must be a mapping")
                continue
            label = plugin.get("name") or f"plugins[{index}]"
            if not plugin.get("name"):
                errors.append(f"{where}: plugins[{index}] has no 'name'")
            kind = plugin.get("kind")
            if kind == "external":
                errors.append(f"{where}: plugin {label}: kind 'external' is a gateway-side entry, not a server plugin")
            elif not isinstance(kind, str) or not KIND_RE.match(kind):
                errors.append(f"{where}: plugin {label}: 'kind' must be a dotted Python class path, got {kind!r}")
            if not plugin.get("hooks"):
                errors.append(f"{where}: plugin {label}: 'hooks' is empty, the plugin would never run")
            if plugin.get("mode") == "disabled":
                errors.append(f"{where}: plugin {label}: mode 'disabled' on a dedicated plugin server")

    server = data.get("server_settings")
    if not isinstance(server, dict):
        errors.append(f"{where}: 'server_settings' is missing; cpex would fall back to env vars or plain HTTP")
        return errors
    if server.get("uds"):
        errors.append(f"{where}: server_settings.uds is set; a unix socket is served without TLS")
    port = server.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 64535:
        errors.append(f"{where}: server_settings.port must be an integer 1-64535 (health uses port+1000), got {port!r}")
    if not server.get("host"):
        errors.append(f"{where}: server_settings.host is missing")

    tls = server.get("tls")
    if not isinstance(tls, dict):
        errors.append(f"{where}: server_settings.tls is missing; cpex would serve plain HTTP (refusing)")
        return errors
    for field in ("certfile", "keyfile", "ca_bundle"):
        value = tls.get(field)
        if not value or not isinstance(value, str):
            errors.append(f"{where}: server_settings.tls.{field} is not set")
        elif not os.path.isabs(value):
            errors.append(f"{where}: server_settings.tls.{field} must be an absolute path, got {value!r}")
        elif check_files:
            problem = _readable(value)
            if problem:
                errors.append(f"{where}: server_settings.tls.{field} {value} {problem}")
    try:
        reqs = normalize_cert_reqs(tls.get("ssl_cert_reqs", CERT_REQUIRED))
        if reqs != CERT_REQUIRED:
            errors.append(f"{where}: server_settings.tls.ssl_cert_reqs is {reqs}; mTLS needs 2 (client certificate required)")
    except ValueError as exc:
        errors.append(f"{where}: server_settings.tls.{exc}")
    return errors


def check_kinds_importable(data) -> list[str]:
    """Return a message for each plugin whose module cannot be found."""
    errors = []
    for plugin in data.get("plugins") or []:
        kind = plugin.get("kind") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            continue
        module = kind.rsplit(".", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            errors.append(
                f"plugin {plugin.get('name')}: module {module!r} of kind {kind!r} is not installed in {sys.prefix}"
            )
    return errors


def check_key_material(tls: dict, password: str | None) -> None:
    """Load cert, key and CA like the server will, without ever prompting."""
    keyfile, certfile, cafile = tls["keyfile"], tls["certfile"], tls["ca_bundle"]
    with open(keyfile, "rb") as handle:
        pem = handle.read()
    if pem_key_is_encrypted(pem) and not password:
        raise LauncherError(
            f"{keyfile} is encrypted but no password is set: put it in server_settings.tls.keyfile_password "
            f"or in {KEY_PASSWORD_ENV} (refusing to start instead of waiting for a prompt)"
        )

    def never_prompt():
        if password:
            return password
        raise LauncherError(f"{keyfile} needs a password but none is set")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, never_prompt)
    except ssl.SSLError as exc:
        raise LauncherError(
            f"cannot use key {keyfile} with certificate {certfile}: {exc.reason or exc} "
            "(wrong password, not a PEM key, or key and certificate do not match)"
        ) from exc
    try:
        context.load_verify_locations(cafile)
    except ssl.SSLError as exc:
        raise LauncherError(f"cannot load CA bundle {cafile}: {exc.reason or exc}") from exc


def activated_fds(env, pid: int) -> list[int]:
    """File descriptors systemd passed to this process (sd_listen_fds), empty when none.

    Only when LISTEN_PID names this process: a child must not take its parent's sockets.
    """
    if env.get("LISTEN_PID", "") != str(pid):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        raise LauncherError(f"LISTEN_FDS={env.get('LISTEN_FDS')!r} is not a number") from None
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0)))


def check_listening_socket(sock, host: str, port: int) -> None:
    """Refuse a passed socket that is not a listening TCP socket on the configured port (and address)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        raise LauncherError(f"the socket passed by systemd is not a TCP stream socket ({sock.family!r}, {sock.type!r})")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise LauncherError("the socket passed by systemd is not listening")
    address, bound_port = sock.getsockname()[:2]
    if bound_port != int(port):
        raise LauncherError(
            f"the socket passed by systemd listens on port {bound_port}, but server_settings.port is {port}: "
            "fix ListenStream= of the instance's socket unit (the role renders both from the same port)"
        )
    try:
        wanted = socket.inet_pton(sock.family, host)
        have = socket.inet_pton(sock.family, address)
    except OSError:  # host is a name, or of the other family: the port check above is what we can do
        return
    if wanted != have:
        raise LauncherError(
            f"the socket passed by systemd listens on {address}, but server_settings.host is {host}: "
            "fix ListenStream= of the instance's socket unit"
        )


def take_activated_socket(host: str, port: int, env=None, pid=None):
    """The listening socket systemd passed for the mTLS port, checked; None without socket activation."""
    env = os.environ if env is None else env
    fds = activated_fds(env, os.getpid() if pid is None else pid)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)  # never hand them on to a child
    if not fds:
        return None
    if len(fds) != 1:
        raise LauncherError(f"systemd passed {len(fds)} sockets; the instance's socket unit must have one ListenStream=")
    sock = socket.socket(fileno=fds[0])
    try:
        check_listening_socket(sock, host, port)
    except LauncherError:
        sock.detach()  # leave the descriptor to systemd
        raise
    sock.set_inheritable(False)
    return sock


def graceful_timeout(env) -> float:
    """Seconds a stop waits for open connections (cpex's MCP streams never end by themselves)."""
    value = env.get(GRACEFUL_ENV, "5")
    try:
        seconds = float(value)
    except ValueError:
        raise LauncherError(f"{GRACEFUL_ENV}={value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 300:
        raise LauncherError(f"{GRACEFUL_ENV}={value!r} must be between 0 and 300 seconds")
    return seconds


def source_digest(obj) -> str:
    """SHA-256 of an object's source text."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Runtime patching (imports cpex)
# --------------------------------------------------------------------------


def _cpex_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cpex")
    except metadata.PackageNotFoundError:
        return "not installed"


def verify_cpex(runtime) -> None:
    """Fail unless the runtime code the patches rely on is cpex 0.1.4's."""
    version = _cpex_version()
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


def tls_policy(env) -> dict:
    """The TLS policy of the mTLS port from the environment, checked (lowest version, TLS 1.2 ciphers)."""
    version = env.get(MIN_VERSION_ENV, "") or "TLSv1.2"
    if version not in MIN_VERSIONS:
        raise LauncherError(f"{MIN_VERSION_ENV}={version!r} must be one of {', '.join(MIN_VERSIONS)}")
    ciphers = env.get(CIPHERS_ENV, "") or DEFAULT_CIPHERS
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.set_ciphers(ciphers)
    except ssl.SSLError:
        raise LauncherError(f"{CIPHERS_ENV}={ciphers!r} selects no cipher OpenSSL knows (see `openssl ciphers -v`)") from None
    weak = sorted(c["name"] for c in probe.get_ciphers()
                  if c["protocol"] != "TLSv1.3" and (c["kea"] not in ("kx-ecdhe", "kx-dhe") or not c["aead"]
                                                     or c["auth"] == "auth-null"))
    if weak:
        raise LauncherError(f"{CIPHERS_ENV}={ciphers!r} selects suites without forward secrecy, authentication "
                            f"or an AEAD cipher: {', '.join(weak)}; use e.g. {DEFAULT_CIPHERS}")
    return {"version": version, "minimum_version": MIN_VERSIONS[version], "ciphers": ciphers}


def _tls_factory(policy):
    """uvicorn's ssl_context_factory: its context, with the policy applied and client certificates required."""

    def factory(config, default_factory):
        context = default_factory()
        context.minimum_version = max(context.minimum_version, policy["minimum_version"])  # never below TLS 1.2
        context.set_ciphers(policy["ciphers"])
        if context.verify_mode != ssl.CERT_REQUIRED:
            raise LauncherError("uvicorn built a TLS context that does not require client certificates", code=3)
        return context

    return factory


def install_patches(runtime, health_host: str, key_password: str | None, state: dict,
                    listen_socket=None, stop_timeout: float = 5.0, policy=None) -> None:
    """Patch the runtime's server class in place (after verify_cpex)."""
    policy = policy or tls_policy({})
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
        if key_password and not ssl_config.get("ssl_keyfile_password"):
            ssl_config["ssl_keyfile_password"] = key_password
        ssl_config["ssl_context_factory"] = _tls_factory(policy)
        ssl_config["timeout_graceful_shutdown"] = stop_timeout
        log.info(
            "launcher %s: mTLS on %s:%s (client certificate required, %s or later, TLS 1.2 ciphers %s%s), "
            "health on %s:%s",
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


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def load_yaml(path: str):
    import yaml  # installed with cpex

    problem = _readable(path)
    if problem:
        raise LauncherError(f"plugin config {path} {problem} (set {CONFIG_ENV} or --config)")
    with open(path, encoding="utf-8") as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise LauncherError(f"plugin config {path} is not valid YAML: {exc}") from exc


def preflight(config_path: str, key_password: str | None, check_files: bool = True):
    """All checks that need no cpex import; returns the parsed config."""
    data = load_yaml(config_path)
    errors = check_config(data, config_path, check_files=check_files)
    if not errors:
        errors = check_kinds_importable(data)
    if errors:
        raise LauncherError("refusing to start:\n  - " + "\n  - ".join(errors))
    tls = data["server_settings"]["tls"]
    if check_files:
        check_key_material(tls, tls.get("keyfile_password") or key_password)
    return data


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {LAUNCHER_VERSION}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s", stream=sys.stderr)
    try:
        if args.check_tls_policy:
            policy = tls_policy(os.environ)
            print(f"TLS policy ok: {policy['version']} or later, TLS 1.2 ciphers {policy['ciphers']}")
            return 0
        if not args.config:
            raise LauncherError(f"no plugin config: set {CONFIG_ENV} or pass --config")
        config_path = os.path.abspath(args.config)
        key_password = os.environ.get(KEY_PASSWORD_ENV) or None
        preflight_data = preflight(config_path, key_password, check_files=not args.no_file_checks)

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
        policy = tls_policy(os.environ)
        if args.check:
            print(f"{config_path}: ok (cpex {_cpex_version()}, launcher {LAUNCHER_VERSION})")
            return 0
        state = {"serving": False}
        settings = preflight_data["server_settings"]
        listen_socket = take_activated_socket(settings["host"], settings["port"])
        install_patches(runtime, args.health_host, key_password, state, listen_socket, graceful_timeout(os.environ), policy)
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


if __name__ == "__main__":
    sys.exit(main())
