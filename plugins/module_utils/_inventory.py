# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""Turn plugin lists (role variables, upstream config files, inventory) into the PKI tree plan.

Pure functions: no Ansible, no I/O. Every error names the offending input and the fix.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import (  # noqa: F401 (PlanError: re-exported)
    DEFAULT_PREFIX,
    PlanError,
    address_san,
    check_plugin_name,
    pki_paths,
    standard_sans,
)

# Leaf names of the front door's server certificates and of the MCP clients' certificates: a plugin name cannot
# contain '.', so "frontdoor.HOST" and "client.NAME" never collide with a plugin (revoke.yml: -e revoke=client.NAME).
FRONTDOOR = "frontdoor."
CLIENT = "client."
_CERT_NAME_MAX = 63
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_TRUE = ("true", "yes", "on", "1")
_WILDCARD = ("0.0.0.0", "::", "[::]", "")


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


def _truthy(value):
    """Ansible's | bool for the values an inventory gives: true/false, 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _san(item, where):
    """ITEM ("DNS:name", "IP:address", or a bare name or address) as a checked SAN."""
    kind, _sep, value = item.strip().partition(":")
    if kind.upper() == "IP" and _sep:
        try:
            return "IP:%s" % ipaddress.ip_address(value.strip().strip("[]"))
        except ValueError:
            raise PlanError("%s: gateway_https_sans entry %r is not an IP address" % (where, item)) from None
    if kind.upper() == "DNS" and _sep:
        value = value.strip()
    else:
        san = address_san(item.strip())
        if san.startswith("IP:"):
            return san
        value = item.strip()
    if not _DNS_NAME.fullmatch(value) and not (value.startswith("*.") and _DNS_NAME.fullmatch(value[2:])):
        raise PlanError("%s: gateway_https_sans entry %r is not a DNS name or an IP address ('DNS:gw.example.com', "
                        "'IP:10.0.0.5')" % (where, item))
    return "DNS:%s" % value


def frontdoor_plan(hostvars, groups, group="mcp_gateways"):
    """[{host, sans}]: every gateway host (GROUP) that serves its API over HTTPS (its gateway_https), with the SANs of
    its server certificate. localhost and 127.0.0.1 (the host's own checks and the gateway's self-calls), the
    inventory name when it is a DNS name or an address, ansible_host, gateway_listen_host unless it is a wildcard,
    and gateway_https_sans."""
    plan = []
    for host in (groups or {}).get(group, []) or []:
        own = hostvars.get(host) or {}
        if not _truthy(own.get("gateway_https", False)):
            continue
        where = "host %s" % host
        if len(FRONTDOOR + host) > _CERT_NAME_MAX:
            raise PlanError("%s: the inventory name is longer than %d characters, too long for the name of its "
                            "front door certificate (%s + name); use a shorter inventory name (ansible_host can "
                            "stay the long one)" % (where, _CERT_NAME_MAX - len(FRONTDOOR), FRONTDOOR))
        sans = ["DNS:localhost", "IP:127.0.0.1"]
        candidates = [host, own.get("ansible_host"), own.get("gateway_listen_host")]
        for address in candidates:
            if not isinstance(address, str) or address.strip() in _WILDCARD:
                continue
            san = address_san(address.strip())
            if san.startswith("DNS:") and not _DNS_NAME.fullmatch(san[4:]):
                continue
            if san not in sans:
                sans.append(san)
        extra = own.get("gateway_https_sans") or []
        if not isinstance(extra, list) or not all(isinstance(item, str) and item.strip() for item in extra):
            raise PlanError("%s: gateway_https_sans must be a list of non-empty strings like 'DNS:gw.example.com' or "
                            "'IP:10.0.0.5' (got %r)" % (where, extra))
        for item in extra:
            san = _san(item, where)
            if san not in sans:
                sans.append(san)
        plan.append({"host": host, "sans": sans})
    return plan


def normalize_clients(entries, source="pki_clients"):
    """pki_clients (names, or dicts with name and optional subject) -> [{'name', 'subject'}]."""
    if entries is None:
        entries = []
    if isinstance(entries, tuple):
        entries = list(entries)
    if not isinstance(entries, list):
        raise PlanError("%s: expected a list of client names or dicts {name, subject}, got %s"
                        % (source, type(entries).__name__))
    out, seen = [], {}
    for index, entry in enumerate(entries):
        where = "%s[%d]" % (source, index)
        subject = None
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"name", "subject"})
            if unknown:
                raise PlanError("%s: unknown key(s) %s; a client entry has name and optionally subject"
                                % (where, ", ".join(map(str, unknown))))
            name, subject = entry.get("name"), entry.get("subject")
        else:
            name = entry
        limit = _CERT_NAME_MAX - len(CLIENT)
        if not isinstance(name, str) or len(name) > limit or not _CLIENT_NAME.fullmatch(name):
            raise PlanError("%s: client name %r must be 1-%d letters, digits or '-', starting and ending with a letter "
                            "or digit (it names the folder clients/NAME and the certificate client.NAME)"
                            % (where, name, limit))
        if subject is not None and (not isinstance(subject, str) or not subject.startswith("/") or "=" not in subject):
            raise PlanError("%s: subject %r must be in openssl form /CN=name/O=org" % (where, subject))
        if name.lower() in seen:
            raise PlanError("%s: client name %r repeats %s; every client needs its own name" % (where, name, seen[name.lower()]))
        seen[name.lower()] = where
        out.append({"name": name, "subject": subject or "/CN=%s/O=MCPGateway/OU=Clients" % name})
    return out


def pki_leaves(entries, pki_dir, plugin_subject_prefix=DEFAULT_PREFIX,
               gateway_subject="/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway", reissue=(), frontdoors=(),
               clients=()):
    """The certificate_set items for the gateway client and every plugin, in the upstream layout, then the server
    certificate of every gateway front door (FRONTDOORS, of frontdoor_plan: frontdoor/HOST/) and the client
    certificate of every MCP client (CLIENTS, pki_clients: clients/NAME/); the leaves named in REISSUE ("gateway",
    plugin names, frontdoor.HOST or client.NAME) are re-issued now, with a new key (a revocation's replacement).

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
    for door in frontdoors or ():
        host = door["host"]
        leaves.append({
            "name": FRONTDOOR + host,
            "profile": "server",
            "subject": "/CN=%s/O=MCPGateway/OU=Gateway" % (host if _DNS_NAME.fullmatch(host) else "mcp-gateway"),
            "sans": list(door["sans"]),
            "key_path": "%s/frontdoor/%s/server.key" % (pki_dir, host),
            "cert_path": "%s/frontdoor/%s/server.crt" % (pki_dir, host),
            "ca_copy_path": "%s/frontdoor/%s/ca.crt" % (pki_dir, host),
        })
    for client in normalize_clients(clients):
        leaves.append({
            "name": CLIENT + client["name"],
            "profile": "client",
            "subject": client["subject"],
            "sans": [],
            "key_path": "%s/clients/%s/client.key" % (pki_dir, client["name"]),
            "cert_path": "%s/clients/%s/client.crt" % (pki_dir, client["name"]),
            "ca_copy_path": "%s/clients/%s/ca.crt" % (pki_dir, client["name"]),
        })
    known = [leaf["name"] for leaf in leaves]
    unknown = [name for name in reissue or () if name not in known]
    if unknown:
        raise PlanError("reissue: %s is not a leaf of the tree (the gateway, a planned plugin, a front door or a client: %s)"
                        % (", ".join(map(str, unknown)), ", ".join(known)))
    for leaf in leaves:
        if leaf["name"] in (reissue or ()):
            leaf.update(force=True, keep_key=False)
    return leaves


def pki_tree(plugin_dirs, pki_dir, frontdoors=()):
    """The certificates of an existing tree that the CA signs, for reports: CA, gateway, each plugin folder found, then
    the front door of each host in FRONTDOORS (folders frontdoor/HOST, or host names)."""
    pki_dir = pki_dir.rstrip("/")
    gateway = {"name": "gateway", "cert_path": f"{pki_dir}/gateway/client.crt", "key_path": f"{pki_dir}/gateway/client.key"}
    tree = [{"name": "ca", "cert_path": f"{pki_dir}/ca/ca.crt"}, gateway]
    for folder in sorted(str(d).rstrip("/") for d in plugin_dirs or []):
        name = folder.rsplit("/", 1)[-1]
        paths = pki_paths(pki_dir, name)
        tree.append({"name": name, "cert_path": paths["cert"], "key_path": paths["key"]})
    for host in sorted({str(d).rstrip("/").rsplit("/", 1)[-1] for d in frontdoors or []}):
        tree.append({"name": FRONTDOOR + host, "cert_path": f"{pki_dir}/frontdoor/{host}/server.crt",
                     "key_path": f"{pki_dir}/frontdoor/{host}/server.key"})
    return tree


def client_tree(clients, pki_dir):
    """The MCP clients' CA and certificates, for reports (their CA signs them): CLIENTS are pki_clients entries (names
    or dicts with name) or folders clients/NAME. Empty when there are none."""
    pki_dir = pki_dir.rstrip("/")
    names = sorted({(entry.get("name") if isinstance(entry, dict) else str(entry).rstrip("/").rsplit("/", 1)[-1])
                    for entry in clients or []} - {None, ""})
    if not names:
        return []
    tree = [{"name": "clients-ca", "cert_path": f"{pki_dir}/clients-ca/ca.crt"}]
    for name in names:
        tree.append({"name": CLIENT + name, "cert_path": f"{pki_dir}/clients/{name}/client.crt",
                     "key_path": f"{pki_dir}/clients/{name}/client.key"})
    return tree


def leaf_passphrases(entries, gateway_passphrase="", plugin_passphrase="", client_passphrase=""):
    """The option passphrases of certificate_set and certificate_info for ENTRIES (of pki_leaves or pki_tree):
    the gateway's keys (its client key and its front door's) have GATEWAY_PASSPHRASE, the MCP clients' keys
    CLIENT_PASSPHRASE, every other key PLUGIN_PASSPHRASE; empty means unencrypted."""
    passphrases = {}
    for entry in entries:
        if not entry.get("key_path"):
            continue
        name = entry["name"]
        passphrase = (gateway_passphrase if name == "gateway" or name.startswith(FRONTDOOR)
                      else client_passphrase if name.startswith(CLIENT) else plugin_passphrase)
        if passphrase:
            passphrases[entry["name"]] = passphrase
    return passphrases
