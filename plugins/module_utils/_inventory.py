# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""Turn plugin lists (role variables, upstream config files, inventory) into the PKI tree plan.

Pure functions: no Ansible, no I/O. Every error names the offending input and the fix.
"""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import (  # noqa: F401 (PlanError: re-exported)
    DEFAULT_PREFIX,
    PlanError,
    check_plugin_name,
    pki_paths,
    standard_sans,
)


def _check_sans(sans, where):
    if sans is None:
        return []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s.strip() for s in sans):
        raise PlanError(f"{where}: 'sans' must be a list of non-empty strings like 'DNS:host' or 'IP:10.0.0.1'")
    return list(sans)


def normalize_plugins(entries, source="pki_plugins", prefix=DEFAULT_PREFIX):
    """Names or dicts -> [{'name': str, 'sans': [...]}]; rejects empty, hostile and repeated names."""
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise PlanError(f"{source}: expected a list of plugin names or dicts, got {type(entries).__name__}")
    out, seen = [], {}
    for index, entry in enumerate(entries):
        where = f"{source}[{index}]"
        if isinstance(entry, dict) and entry.get("inventory_host"):
            where = f"host {entry['inventory_host']}: plugin_server_plugins entry {entry.get('name')!r}"
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


def pki_leaves(entries, pki_dir, plugin_subject_prefix=DEFAULT_PREFIX,
               gateway_subject="/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway", reissue=()):
    """The certificate_set items for the gateway client and every plugin, in the upstream layout; the leaves named
    in REISSUE ("gateway" or plugin names) are re-issued now, with a new key (a revocation's replacement).

    Passphrases are not part of the items: leaf_passphrases() gives the modules' option passphrases."""
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
    leaves = [gateway]
    for plugin in plugins:
        name = plugin["name"]
        paths = pki_paths(pki_dir, name)
        sans = standard_sans(name, plugin_subject_prefix)
        for extra in plugin["sans"]:
            if extra not in sans:
                sans.append(extra)
        leaf = {
            "name": name,
            "profile": "server",
            "subject": f"/CN={plugin_subject_prefix}{name}/O=MCPGateway/OU=Plugins",
            "sans": sans,
            "key_path": paths["key"],
            "cert_path": paths["cert"],
            "ca_copy_path": paths["ca"],
        }
        leaves.append(leaf)
    known = [leaf["name"] for leaf in leaves]
    unknown = [name for name in reissue or () if name not in known]
    if unknown:
        raise PlanError("reissue: %s is not a leaf of the tree (the gateway or a planned plugin: %s)"
                        % (", ".join(map(str, unknown)), ", ".join(known)))
    for leaf in leaves:
        if leaf["name"] in (reissue or ()):
            leaf.update(force=True, keep_key=False)
    return leaves


def pki_tree(plugin_dirs, pki_dir):
    """The certificates of an existing tree, for reports: CA, gateway, then each plugin folder found."""
    pki_dir = pki_dir.rstrip("/")
    gateway = {"name": "gateway", "cert_path": f"{pki_dir}/gateway/client.crt", "key_path": f"{pki_dir}/gateway/client.key"}
    tree = [{"name": "ca", "cert_path": f"{pki_dir}/ca/ca.crt"}, gateway]
    for folder in sorted(str(d).rstrip("/") for d in plugin_dirs or []):
        name = folder.rsplit("/", 1)[-1]
        paths = pki_paths(pki_dir, name)
        tree.append({"name": name, "cert_path": paths["cert"], "key_path": paths["key"]})
    return tree


def leaf_passphrases(entries, gateway_passphrase="", plugin_passphrase=""):
    """The option passphrases of certificate_set and certificate_info for ENTRIES (of pki_leaves or pki_tree):
    the gateway's key has GATEWAY_PASSPHRASE, every other key PLUGIN_PASSPHRASE; empty means unencrypted."""
    passphrases = {}
    for entry in entries:
        if not entry.get("key_path"):
            continue
        passphrase = gateway_passphrase if entry["name"] == "gateway" else plugin_passphrase
        if passphrase:
            passphrases[entry["name"]] = passphrase
    return passphrases
