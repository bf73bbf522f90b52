# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""Turn plugin lists (role variables, upstream config files, inventory) into the PKI tree plan.

Pure functions: no Ansible, no I/O. Every error names the offending input and the fix.
"""

from __future__ import annotations

import re

# A plugin name becomes a directory (plugins/NAME), a DNS SAN (NAME) and, with the prefix, a second DNS
# SAN (mcp-plugin-NAME): so it must be one DNS label that still fits in 63 characters with the prefix.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_MAX_LABEL = 63


class PlanError(ValueError):
    """A plugin list or config that cannot become a certificate tree."""


def check_plugin_name(name, where="plugin", prefix="mcp-plugin-"):
    """Return name if it is a valid certificate name, else raise PlanError naming it and the fix."""
    if not isinstance(name, str) or not name.strip():
        raise PlanError(f"{where}: the plugin name is empty or not a string ({name!r}); give every plugin a name")
    limit = _MAX_LABEL - len(prefix)
    if "/" in name or ".." in name or "\\" in name:
        raise PlanError(
            f"{where}: plugin name {name!r} contains a path separator or '..'; "
            "a plugin name must be a single DNS label (letters, digits, '-')"
        )
    if len(name) > limit or not _LABEL.match(name):
        raise PlanError(
            f"{where}: plugin name {name!r} is not a valid certificate name; it must be 1-{limit} letters, "
            f"digits or '-', starting and ending with a letter or digit, because it becomes the DNS SANs "
            f"'{name}' and '{prefix}{name}' and a directory name; rename the plugin"
        )
    return name


def _check_sans(sans, where):
    if sans is None:
        return []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s.strip() for s in sans):
        raise PlanError(f"{where}: 'sans' must be a list of non-empty strings like 'DNS:host' or 'IP:10.0.0.1'")
    return list(sans)


def normalize_plugins(entries, source="pki_plugins", prefix="mcp-plugin-"):
    """Names or dicts -> [{'name': str, 'sans': [...]}]; rejects empty, hostile and repeated names."""
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise PlanError(f"{source}: expected a list of plugin names or dicts, got {type(entries).__name__}")
    out, seen = [], {}
    for index, entry in enumerate(entries):
        where = f"{source}[{index}]"
        if isinstance(entry, dict) and entry.get("host"):
            where = f"host {entry['host']}: plugin_server_plugins entry {entry.get('name')!r}"
        if isinstance(entry, dict):
            if "name" not in entry:
                raise PlanError(f"{where}: a plugin entry needs a 'name'")
            name, sans = entry["name"], _check_sans(entry.get("sans"), where)
        else:
            name, sans = entry, []
        check_plugin_name(name, where, prefix)
        if name.lower() in seen:
            raise PlanError(
                f"{where}: plugin name {name!r} repeats {seen[name.lower()]}; "
                "every plugin needs its own name (names are compared case-insensitively, like DNS)"
            )
        seen[name.lower()] = where
        out.append({"name": name, "sans": sans})
    return out


def external_plugins(config, source="plugins config"):
    """Plugins with kind: external from an upstream-style config (the Makefile's MCP_PLUGIN_CONFIG)."""
    if not isinstance(config, dict) or not isinstance(config.get("plugins"), list):
        raise PlanError(f"{source}: expected a YAML mapping with a 'plugins' list (upstream plugins config format)")
    names = []
    for index, entry in enumerate(config["plugins"]):
        if not isinstance(entry, dict):
            raise PlanError(f"{source}: plugins[{index}] is not a mapping")
        if entry.get("kind") == "external":
            names.append(entry.get("name"))
    if not names:
        raise PlanError(f"{source}: no plugin has 'kind: external'; nothing to make certificates for")
    return names


def inventory_plugins(hosts, hostvars, var="plugin_server_plugins"):
    """Every plugin declared on the given hosts, with its host added (for checks and error messages)."""
    out = []
    for host in hosts or []:
        plugins = (hostvars.get(host) or {}).get(var) or []
        if not isinstance(plugins, list):
            raise PlanError(f"host {host}: {var} must be a list of plugin dicts")
        for index, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or "name" not in plugin:
                raise PlanError(f"host {host}: {var}[{index}] needs a 'name'")
            out.append(dict(plugin, sans=plugin.get("sans") or [], host=host))
    return out


def pki_leaves(entries, pki_dir, plugin_subject_prefix="mcp-plugin-",
               gateway_subject="/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway",
               gateway_passphrase="", plugin_passphrase=""):
    """The certificate_set items for the gateway client and every plugin, in the upstream layout."""
    if not pki_dir:
        raise PlanError("pki_dir is empty; set it to the root of the certificate tree")
    pki_dir = pki_dir.rstrip("/")
    plugins = normalize_plugins(entries, source="plugins", prefix=plugin_subject_prefix)
    gateway = {
        "name": "gateway",
        "profile": "client",
        "subject": gateway_subject,
        "sans": [],
        "key_path": f"{pki_dir}/gateway/client.key",
        "cert_path": f"{pki_dir}/gateway/client.crt",
        "ca_copy_path": f"{pki_dir}/gateway/ca.crt",
    }
    if gateway_passphrase:
        gateway["passphrase"] = gateway_passphrase
    leaves = [gateway]
    for plugin in plugins:
        name = plugin["name"]
        base = f"{pki_dir}/plugins/{name}"
        sans = [f"DNS:{name}", f"DNS:{plugin_subject_prefix}{name}", "DNS:localhost"]
        for extra in plugin["sans"]:
            if extra not in sans:
                sans.append(extra)
        leaf = {
            "name": name,
            "profile": "server",
            "subject": f"/CN={plugin_subject_prefix}{name}/O=MCPGateway/OU=Plugins",
            "sans": sans,
            "key_path": f"{base}/server.key",
            "cert_path": f"{base}/server.crt",
            "ca_copy_path": f"{base}/ca.crt",
        }
        if plugin_passphrase:
            leaf["passphrase"] = plugin_passphrase
        leaves.append(leaf)
    return leaves


def pki_tree(plugin_dirs, pki_dir, gateway_passphrase="", plugin_passphrase=""):
    """The certificates of an existing tree, for reports: CA, gateway, then each plugin folder found.

    The passphrases (those of role pki) let certificate_info open encrypted keys to match them.
    """
    pki_dir = pki_dir.rstrip("/")
    gateway = {"name": "gateway", "cert_path": f"{pki_dir}/gateway/client.crt", "key_path": f"{pki_dir}/gateway/client.key"}
    if gateway_passphrase:
        gateway["passphrase"] = gateway_passphrase
    tree = [{"name": "ca", "cert_path": f"{pki_dir}/ca/ca.crt"}, gateway]
    for folder in sorted(str(d).rstrip("/") for d in plugin_dirs or []):
        name = folder.rsplit("/", 1)[-1]
        leaf = {"name": name, "cert_path": f"{folder}/server.crt", "key_path": f"{folder}/server.key"}
        if plugin_passphrase:
            leaf["passphrase"] = plugin_passphrase
        tree.append(leaf)
    return tree


def port_conflicts(plugins, health_offset=1000):
    """For each plugin of one host, the other plugins whose mTLS or health port collides with its own.

    Each plugin uses PORT (mTLS) and PORT + health_offset (plain-HTTP health). Returns
    {name: [names it collides with]} for every plugin; an empty list means no collision.
    """
    used = {}
    for plugin in plugins or []:
        port = int(plugin["port"])
        for number in (port, port + health_offset):
            used.setdefault(number, []).append(plugin["name"])
    out = {}
    for plugin in plugins or []:
        port = int(plugin["port"])
        others = {n for number in (port, port + health_offset) for n in used[number] if n != plugin["name"]}
        out[plugin["name"]] = sorted(others)
    return out
