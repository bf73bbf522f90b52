# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""The gateway's plugin client configuration, shaped from the inventory (pure functions)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError

# Fields of a plugin that its gateway entry carries (never `config`: cpex rejects it on external entries).
ENTRY_FIELDS = ("hooks", "mode", "priority")


# The client TLS fields of a gRPC entry (cpex's GRPCClientTLSConfig has no check_hostname: grpcio always checks the
# target's name against the server certificate).
GRPC_TLS_FIELDS = ("certfile", "keyfile", "ca_bundle", "keyfile_password", "verify")


def gateway_client_config(plugins, tls, settings_in="yaml"):
    """plugins.yaml for the gateway: one `kind: external` entry per plugin of the plan, with `mcp` (url) or, for a
    gRPC plugin, `grpc` (target); the client TLS settings in it in yaml mode (env mode: PLUGINS_CLIENT_MTLS_* and
    PLUGINS_GRPC_CLIENT_MTLS_* in the env file)."""
    if settings_in not in ("yaml", "env"):
        raise PlanError(f"gateway_mtls_settings_in must be 'yaml' or 'env', got {settings_in!r}")
    tls = {key: value for key, value in (tls or {}).items() if value != ""}
    entries = []
    for plugin in plugins:
        entry = {"name": plugin["name"], "kind": "external"}
        entry.update({key: plugin[key] for key in ENTRY_FIELDS if key in plugin})
        if plugin.get("transport") == "grpc":
            section, key = {"target": plugin["target"]}, "grpc"
            if settings_in == "yaml":
                section["tls"] = {field: value for field, value in tls.items() if field in GRPC_TLS_FIELDS}
        else:
            section, key = {"proto": "STREAMABLEHTTP", "url": plugin["url"]}, "mcp"
            if settings_in == "yaml":
                section["tls"] = dict(tls)
        entry[key] = section
        entries.append(entry)
    return {"plugins": entries}
