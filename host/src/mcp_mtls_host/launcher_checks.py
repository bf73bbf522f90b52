# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The plugin server launcher's checks: everything it refuses before cpex is imported (no cpex needed).

The plugin config (``check_config``, ``check_kinds_importable``, ``preflight``), the TLS policy of the mTLS port
(``tls_policy``, also run alone by ``--check-tls-policy`` on the controller), the socket passed by systemd
(``take_activated_socket``) and the graceful-stop time. A refusal is a ``LauncherError``; see
``mcp_mtls_host.launcher`` for the defects these checks guard against and the exit codes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import ssl
import sys

LAUNCHER_VERSION = "1.3.0"
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


class LauncherError(Exception):
    """A refusal with a message meant for the operator."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


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

    section = settings_key(data)
    if "server_settings" in data and "grpc_server_settings" in data:
        errors.append(f"{where}: both 'server_settings' (HTTP) and 'grpc_server_settings' (gRPC) are set; an "
                      "instance serves one transport: keep one")
        return errors
    server = data.get(section)
    if not isinstance(server, dict):
        errors.append(f"{where}: 'server_settings' (or 'grpc_server_settings') is missing; cpex would fall back to env "
                      "vars or plain HTTP")
        return errors
    if server.get("uds"):
        errors.append(f"{where}: {section}.uds is set; a unix socket is served without TLS")
    port = server.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 64535:
        errors.append(f"{where}: {section}.port must be an integer 1-64535 (health uses port+1000), got {port!r}")
    if not server.get("host"):
        errors.append(f"{where}: {section}.host is missing")

    tls = server.get("tls")
    if not isinstance(tls, dict):
        errors.append(f"{where}: {section}.tls is missing; cpex would serve without TLS (refusing)")
        return errors
    for field in ("certfile", "keyfile", "ca_bundle"):
        value = tls.get(field)
        if not value or not isinstance(value, str):
            errors.append(f"{where}: {section}.tls.{field} is not set")
        elif not os.path.isabs(value):
            errors.append(f"{where}: {section}.tls.{field} must be an absolute path, got {value!r}")
        elif check_files:
            problem = _readable(value)
            if problem:
                errors.append(f"{where}: {section}.tls.{field} {value} {problem}")
    if section == "grpc_server_settings":
        auth = tls.get("client_auth", "require")
        if not isinstance(auth, str) or auth.lower() != "require":
            errors.append(f"{where}: {section}.tls.client_auth is {auth!r}; mTLS needs 'require' (cpex's 'optional' "
                          "lets clients without a certificate call every hook)")
        return errors
    try:
        reqs = normalize_cert_reqs(tls.get("ssl_cert_reqs", CERT_REQUIRED))
        if reqs != CERT_REQUIRED:
            errors.append(f"{where}: {section}.tls.ssl_cert_reqs is {reqs}; mTLS needs 2 (client certificate required)")
    except ValueError as exc:
        errors.append(f"{where}: {section}.tls.{exc}")
    return errors


def settings_key(data) -> str:
    """The config's server section: grpc_server_settings for a gRPC instance, else server_settings."""
    return "grpc_server_settings" if isinstance(data, dict) and "grpc_server_settings" in data else "server_settings"


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


def tls_policy(env, min_version_env=MIN_VERSION_ENV, ciphers_env=CIPHERS_ENV) -> dict:
    """The TLS policy of the mTLS port from the environment (the variables MIN_VERSION_ENV and CIPHERS_ENV), checked
    (lowest version, TLS 1.2 ciphers)."""
    version = env.get(min_version_env, "") or "TLSv1.2"
    if version not in MIN_VERSIONS:
        raise LauncherError(f"{min_version_env}={version!r} must be one of {', '.join(MIN_VERSIONS)}")
    ciphers = env.get(ciphers_env, "") or DEFAULT_CIPHERS
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.set_ciphers(ciphers)
    except ssl.SSLError:
        raise LauncherError(f"{ciphers_env}={ciphers!r} selects no cipher OpenSSL knows (see `openssl ciphers -v`)") from None
    weak = sorted(c["name"] for c in probe.get_ciphers()
                  if c["protocol"] != "TLSv1.3" and (c["kea"] not in ("kx-ecdhe", "kx-dhe") or not c["aead"]
                                                     or c["auth"] == "auth-null"))
    if weak:
        raise LauncherError(f"{ciphers_env}={ciphers!r} selects suites without forward secrecy, authentication "
                            f"or an AEAD cipher: {', '.join(weak)}; use e.g. {DEFAULT_CIPHERS}")
    return {"version": version, "minimum_version": MIN_VERSIONS[version], "ciphers": ciphers}


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


def preflight(config_path: str, check_files: bool = True):
    """The config checks that need no cpex import; returns the parsed config. (The TLS files are loaded and
    checked by ``mcp_mtls_host.launcher_tls``.)"""
    data = load_yaml(config_path)
    errors = check_config(data, config_path, check_files=check_files)
    if not errors:
        errors = check_kinds_importable(data)
    if errors:
        raise LauncherError("refusing to start:\n  - " + "\n  - ".join(errors))
    return data
