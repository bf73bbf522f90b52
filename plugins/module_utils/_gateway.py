# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""The gateway's plugin client configuration, shaped from the inventory (pure functions)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError

# Fields of a plugin that its gateway entry carries (never `config`: cpex rejects it on external entries).
ENTRY_FIELDS = ("hooks", "mode", "priority")


def gateway_client_config(plugins, tls, settings_in="yaml"):
    """plugins.yaml for the gateway: one `kind: external` entry per plugin of the plan; mcp.tls in yaml mode."""
    if settings_in not in ("yaml", "env"):
        raise PlanError(f"gateway_mtls_settings_in must be 'yaml' or 'env', got {settings_in!r}")
    tls = {key: value for key, value in (tls or {}).items() if value != ""}
    entries = []
    for plugin in plugins:
        mcp = {"proto": "STREAMABLEHTTP", "url": plugin["url"]}
        if settings_in == "yaml":
            mcp["tls"] = dict(tls)
        entry = {"name": plugin["name"], "kind": "external"}
        entry.update({key: plugin[key] for key in ENTRY_FIELDS if key in plugin})
        entry["mcp"] = mcp
        entries.append(entry)
    return {"plugins": entries}
