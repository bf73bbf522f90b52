# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""The gateway's plugin client configuration, shaped from the inventory (pure functions)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._inventory import PlanError

# Fields of a plugin that its gateway entry carries (never `config`: cpex rejects it on external entries).
ENTRY_FIELDS = ("hooks", "mode", "priority")


def gateway_plugins(explicit, hosts, hostvars, prefix="mcp-plugin-", var="plugin_server_plugins"):
    """The plugins the gateway connects to: EXPLICIT when non-empty, else every plugin of HOSTS.

    Each comes back with `_host` (its plugin host, '' for explicit entries) and `_url`
    (https://PREFIX+NAME:PORT/mcp unless the entry gives `url`, or `host` instead of the prefixed name).
    """
    if explicit:
        sources = [("", plugin) for plugin in explicit]
    else:
        sources = []
        for host in hosts or []:
            plugins = (hostvars.get(host) or {}).get(var) or []
            if not isinstance(plugins, list):
                raise PlanError(f"host {host}: {var} must be a list of plugin dicts")
            sources += [(host, plugin) for plugin in plugins]
    out = []
    for host, plugin in sources:
        if not isinstance(plugin, dict) or "name" not in plugin:
            raise PlanError(f"{('host ' + host) if host else 'gateway_plugins'}: every plugin needs a 'name' ({plugin!r})")
        name = plugin.get("host") or prefix + str(plugin["name"])
        url = plugin.get("url") or "https://%s:%s/mcp" % (name, plugin.get("port", "NO-PORT"))
        out.append(dict(plugin, _host=host, _url=url))
    return out


def gateway_client_config(plugins, tls, settings_in="yaml"):
    """plugins.yaml for the gateway: one `kind: external` entry per plugin; mcp.tls in yaml mode."""
    if settings_in not in ("yaml", "env"):
        raise PlanError(f"gateway_mtls_settings_in must be 'yaml' or 'env', got {settings_in!r}")
    tls = {key: value for key, value in (tls or {}).items() if value != ""}
    entries = []
    for plugin in plugins:
        mcp = {"proto": "STREAMABLEHTTP", "url": plugin["_url"]}
        if settings_in == "yaml":
            mcp["tls"] = dict(tls)
        entry = {"name": plugin["name"], "kind": "external"}
        entry.update({key: plugin[key] for key in ENTRY_FIELDS if key in plugin})
        entry["mcp"] = mcp
        entries.append(entry)
    return {"plugins": entries}
