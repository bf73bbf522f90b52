# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""What the gateway-side programs (probe, config check, rotation watcher) share.

The deployed paths, the env-file loader (PLUGINS_* settings, before cpex reads them), the JSON output, the
description of a certificate and of an error, and the two cpex helpers that turn a plugin's configuration
into something to connect to (resolve_target) and to call (hook_call). cpex is imported only inside the
functions that need it: this module imports without it.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import os
import re
import sys
from datetime import timezone
from urllib.parse import urlparse

DEFAULT_CONFIG = "/etc/mcpgateway/plugins.yaml"
DEFAULT_ENV_FILE = "/etc/mcpgateway/env"
# Hooks the probe can call with a payload that no plugin should act upon.
KNOWN_HOOKS = ("tool_pre_invoke", "tool_post_invoke")
PROBE_TOOL = "mcp-mtls-probe"


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


def current_user():
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return str(os.getuid())


def emit(obj):
    """Print one JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


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


def describe_error(exc, timeout):
    """One line for a failed call: cpex's message, a time-out, or the exception's type and text."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = "timed out after %g s" % timeout
    else:
        message = getattr(getattr(exc, "error", None), "message", None)
        text = str(message) if message else "%s: %s" % (type(exc).__name__, exc)
    return " ".join(text.split())[:500]


def hook_call(hook_names):
    """Pick a hook the probe can feed; returns (hook_name, payload) or (None, None)."""
    from cpex.framework.hooks.tools import ToolPostInvokePayload, ToolPreInvokePayload  # pylint: disable=import-outside-toplevel

    for hook in KNOWN_HOOKS:
        if hook in hook_names:
            if hook == "tool_pre_invoke":
                return hook, ToolPreInvokePayload(name=PROBE_TOOL, args={})
            return hook, ToolPostInvokePayload(name=PROBE_TOOL, result={"content": [{"type": "text", "text": "probe"}]})
    return None, None


def is_grpc(plugin_config):
    """Whether an external plugin is reached over gRPC (its entry has `grpc:`), else MCP."""
    return getattr(plugin_config, "grpc", None) is not None


def plugin_url(plugin_config):
    """What the probe reports as a plugin's address: the MCP url, or grpcs://TARGET for a gRPC plugin."""
    if is_grpc(plugin_config):
        target = plugin_config.grpc.target
        return "grpcs://%s" % target if target else None
    return getattr(getattr(plugin_config, "mcp", None), "url", None)


def _resolve_grpc(plugin_config):
    from cpex.framework.models import GRPCClientTLSConfig  # pylint: disable=import-outside-toplevel

    from .client_trust import split_target  # pylint: disable=import-outside-toplevel

    url = plugin_url(plugin_config)
    if not plugin_config.grpc.target:
        return "gRPC plugin over a unix socket: no TLS to probe", url, None, None, None
    tls_config = plugin_config.grpc.tls or GRPCClientTLSConfig.from_env()
    if tls_config is None:
        return ("no client TLS settings (neither grpc.tls nor PLUGINS_GRPC_CLIENT_MTLS_*): cpex would open a plaintext "
                "channel"), url, None, None, None
    if not tls_config.certfile or not tls_config.keyfile:
        return "no client certificate configured: this would not be mutual TLS", url, None, None, tls_config
    if not tls_config.verify or not tls_config.ca_bundle:
        return ("grpc.tls has verify false or no ca_bundle: cpex's channel would then trust grpcio's bundled public "
                "roots"), url, None, None, tls_config
    try:
        host, port = split_target(plugin_config.grpc.target)
    except ValueError as exc:
        return str(exc), url, None, None, tls_config
    return None, url, host, port, tls_config


def client_context(plugin_config, tls_config):
    """The Python TLS client context that judges a plugin's server as the gateway's client does: cpex's
    create_ssl_context for MCP (restricted by client_trust), client_trust.grpc_ssl_context for gRPC."""
    if is_grpc(plugin_config):
        from .client_trust import grpc_ssl_context  # pylint: disable=import-outside-toplevel

        return grpc_ssl_context(tls_config)
    from cpex.framework.external.mcp.tls_utils import create_ssl_context  # pylint: disable=import-outside-toplevel

    return create_ssl_context(tls_config, plugin_config.name)


def plugin_client(plugin_config):
    """cpex's external plugin client for PLUGIN_CONFIG: ExternalPlugin (MCP) or GrpcExternalPlugin."""
    if is_grpc(plugin_config):
        from cpex.framework.external.grpc.client import GrpcExternalPlugin  # pylint: disable=import-outside-toplevel

        return GrpcExternalPlugin(plugin_config)
    from cpex.framework.external.mcp.client import ExternalPlugin  # pylint: disable=import-outside-toplevel

    return ExternalPlugin(plugin_config)


def resolve_target(plugin_config):
    """(error, url, host, port, tls_config) of an external plugin; error is None when it can be probed over mTLS."""
    from cpex.framework.models import MCPClientTLSConfig  # pylint: disable=import-outside-toplevel

    if is_grpc(plugin_config):
        return _resolve_grpc(plugin_config)
    url = plugin_config.mcp.url if plugin_config.mcp else None
    if not plugin_config.mcp or not url:
        return ("not an MCP external plugin with a url nor a gRPC one with a target (only STREAMABLEHTTP/SSE over HTTPS "
                "and gRPC over TLS can be probed)"), url, None, None, None
    parsed = urlparse(url)
    if parsed.scheme != "https":
        return "plugin url is not https: the connection would not use TLS", url, None, None, None
    tls_config = plugin_config.mcp.tls or MCPClientTLSConfig.from_env()
    if tls_config is None:
        return "no client TLS settings (neither mcp.tls nor PLUGINS_CLIENT_MTLS_*)", url, None, None, None
    if not tls_config.certfile:
        return "no client certificate configured: this would not be mutual TLS", url, None, None, tls_config
    return None, url, parsed.hostname, parsed.port or 443, tls_config
