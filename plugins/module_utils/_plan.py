# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""The plugin plan: every fact about a plugin, derived once from the inventory (pure functions).

A plugin is declared once, in `plugin_server_plugins` of the host that runs it; the gateway side may
list the plugins it connects to in `gateway_plugins` instead. From these, this module derives what every
role, gate, check and the lab need: the name (one rule), where it runs, its ports, the address and URL the
gateway dials, the SANs its certificate needs for that address, its PKI paths and its unit. The roles,
verify and the lab read the plan; none of them derives one of these facts again.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# Defaults of the public variables that shape the plan (roles' defaults/main.yml repeat them for
# ansible-doc; tests/unit checks that they agree).
DEFAULT_PREFIX = "mcp-plugin-"        # gateway_plugin_host_prefix and pki_plugin_subject_prefix
DEFAULT_GROUP = "mcp_plugin_servers"  # the inventory group of the plugin hosts (the playbooks' and the roles')
PLUGIN_VAR = "plugin_server_plugins"

# Each instance serves mTLS on PORT and plain-HTTP health (loopback only) on PORT + HEALTH_PORT_OFFSET.
HEALTH_PORT_OFFSET = 1000
MAX_PORT = 65535 - HEALTH_PORT_OFFSET
TRANSPORT = "http"
# A plugin's `transport`: http (cpex's MCP server over Streamable HTTP, the default) or grpc (cpex's gRPC server).
TRANSPORTS = ("http", "grpc")

# A plugin name becomes a directory (plugins/NAME), a systemd instance, a DNS SAN (NAME) and, with the
# prefix, a second DNS SAN (mcp-plugin-NAME): one DNS label that still fits in 63 characters with the prefix.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_MAX_LABEL = 63


class PlanError(ValueError):
    """An inventory that cannot become a plan: the message names the input and the fix."""


def name_problem(name, prefix=DEFAULT_PREFIX):
    """None when NAME is a valid plugin name, else what is wrong with it and what it must be."""
    limit = _MAX_LABEL - len(prefix)
    if not isinstance(name, str) or not name.strip():
        return "the plugin name is empty or not a string (%r); give every plugin a name" % (name,)
    if "/" in name or ".." in name or "\\" in name:
        return ("plugin name %r contains a path separator or '..'; a plugin name must be a single DNS label "
                "(letters, digits, '-')" % name)
    if len(name) > limit or not _LABEL.match(name):
        return ("plugin name %r is not a valid certificate name; it must be 1-%d letters, digits or '-', starting "
                "and ending with a letter or digit, because it becomes the DNS SANs '%s' and '%s%s', a directory and "
                "a systemd instance name; rename the plugin" % (name, limit, name, prefix, name))
    return None


def check_plugin_name(name, where="plugin", prefix=DEFAULT_PREFIX):
    """Return NAME if it is a valid plugin name, else raise PlanError naming WHERE, the name and the fix."""
    problem = name_problem(name, prefix)
    if problem:
        raise PlanError("%s: %s" % (where, problem))
    return name


def _port(value):
    """An integer port, or None when VALUE is not one (preflight reports it, with the plugin's name)."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def health_port(port):
    """The plain-HTTP health port of an instance whose mTLS port is PORT (None when PORT is not a port)."""
    port = _port(port)
    return None if port is None else port + HEALTH_PORT_OFFSET


def pki_paths(pki_dir, name):
    """Where the controller's PKI tree keeps a plugin's server key, certificate and CA copy."""
    base = "%s/plugins/%s" % (str(pki_dir).rstrip("/"), name)
    return {"dir": base, "key": base + "/server.key", "cert": base + "/server.crt", "ca": base + "/ca.crt"}


def standard_sans(name, subject_prefix=DEFAULT_PREFIX):
    """The SANs every plugin certificate carries: its name, the prefixed name and localhost."""
    return ["DNS:%s" % name, "DNS:%s%s" % (subject_prefix, name), "DNS:localhost"]


def address_san(address):
    """The SAN that lets a client verify ADDRESS: IP:A for an IP address, else DNS:A."""
    try:
        return "IP:%s" % ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return "DNS:%s" % address


def _url_host(url):
    """The host of URL as written (urlsplit lower-cases it; a SAN keeps the spelling the user gave)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.split(":", 1)[0]


def transport(entry):
    """The transport of a plugin entry (`transport`, default http), lower-cased; preflight refuses others."""
    return str(entry.get("transport") or TRANSPORT).lower()


def _hostport(address, port):
    """HOST:PORT, an IPv6 address in brackets (given with or without them)."""
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    return "%s:%s" % ("[%s]" % bare if ":" in bare else bare, port)


def _address_url(entry, prefix):
    """The host the gateway dials and the URL: the entry's `url`, else https://HOST:PORT/mcp (grpcs://HOST:PORT for
    a gRPC plugin, whose gateway entry names the target HOST:PORT) where HOST is the entry's `host` or PREFIX+NAME."""
    if entry.get("url") and transport(entry) != "grpc":
        url = str(entry["url"])
        return _url_host(url), url
    address = str(entry.get("host") or "%s%s" % (prefix, entry["name"]))
    if transport(entry) == "grpc":
        return address, "grpcs://%s" % _hostport(address, entry.get("port", "NO-PORT"))
    return address, "https://%s:%s/mcp" % (address, entry.get("port", "NO-PORT"))


def _entries(hosts, hostvars, var):
    """(inventory host, entry) for every plugin declared on HOSTS, in inventory order."""
    out = []
    for host in hosts or []:
        plugins = (hostvars.get(host) or {}).get(var) or []
        if not isinstance(plugins, list):
            raise PlanError("host %s: %s must be a list of plugin dicts" % (host, var))
        for index, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or "name" not in plugin:
                raise PlanError("host %s: %s[%d] needs a 'name'" % (host, var, index))
            out.append((host, plugin))
    return out


def _view(hostvars, gateway, explicit, prefix, group):
    """How one gateway sees the plugins: (explicit entries, host prefix, plugin hosts group). Arguments
    given win; what is None is read from the gateway's inventory variables, then the defaults (the group is an
    argument only: the group names are fixed, mcp_gateways and mcp_plugin_servers)."""
    own = (hostvars.get(gateway) or {}) if gateway else {}
    explicit = own.get("gateway_plugins") if explicit is None else explicit
    prefix = own.get("gateway_plugin_host_prefix") if prefix is None else prefix
    return list(explicit or []), DEFAULT_PREFIX if prefix is None else str(prefix), group or DEFAULT_GROUP


def plugin_plan(hostvars, groups, gateways=None, explicit=None, prefix=None, group=None, pki_dir="",
                var=PLUGIN_VAR):
    """The plan: one dict per plugin, deployed ones (on a host of GROUP) and the ones the gateway dials.

    Each dict holds the declared fields (the deployed entry, then the gateway entry over it) and:
    name, inventory_host ('' when no host of GROUP runs it), deployed, gateway (the gateway connects to
    it), transport (http or grpc), port, health_port, address and url (what the gateway dials: https://HOST:PORT/mcp,
    or grpcs://HOST:PORT for gRPC), target (HOST:PORT for a gRPC plugin, else None), sans (the entry's extra
    SANs plus the address of every gateway's view: role pki leaves out those it already has), pki (paths
    in PKI_DIR, when given) and unit.

    GATEWAYS are the gateway hosts whose inventory variables (gateway_plugins, gateway_plugin_host_prefix)
    shape the URLs; EXPLICIT, PREFIX and GROUP, when given, win over them (the
    gateway role passes its own variables). The first gateway's view gives `gateway`, `address` and `url`.
    Names are matched exactly; a name given twice stays twice, for the preflight checks to name.
    """
    if isinstance(gateways, str):
        gateways = [gateways]
    views = [_view(hostvars, g, explicit, prefix, group) for g in ([g for g in gateways or [] if g] or [None])]
    deployed = [dict(entry, inventory_host=host, deployed=True, gateway=False, _addresses=[])
                for host, entry in _entries((groups or {}).get(views[0][2], []), hostvars, var)]
    plan = list(deployed)
    gateway_order = []
    for number, (view_explicit, view_prefix, _group) in enumerate(views):
        if view_explicit:
            dialed, merged = [], set()
            for index, entry in enumerate(view_explicit):
                if not isinstance(entry, dict) or "name" not in entry:
                    raise PlanError("gateway_plugins[%d]: every plugin needs a 'name' (%r)" % (index, entry))
                item = next((i for i in plan if i["name"] == entry["name"] and id(i) not in merged), None)
                if item is None or (number == 0 and item["gateway"]):
                    item = dict(entry, inventory_host="", deployed=False, gateway=False, _addresses=[])
                    plan.append(item)
                elif number == 0:
                    item.update(entry)
                merged.add(id(item))
                dialed.append((item, dict(item, **entry)))
        else:
            dialed = [(item, item) for item in deployed]
        for item, declared in dialed:
            address, url = _address_url(declared, view_prefix)
            if address and address not in item["_addresses"]:
                item["_addresses"].append(address)
            if number == 0:
                item.update(gateway=True, _address=address, _url=url)
                gateway_order.append(item)
    out = gateway_order + [item for item in plan if not item["gateway"]]
    for item in out:
        name = item["name"]
        sans = list(item.get("sans") or [])
        for address in item.pop("_addresses"):
            if address_san(address) not in sans:
                sans.append(address_san(address))
        if item["gateway"]:
            item["address"], item["url"] = item.pop("_address"), item.pop("_url")
        else:
            item["address"], item["url"] = _address_url(item, views[0][1])
        item.update(
            sans=sans,
            transport=transport(item),
            target=_hostport(item["address"], item.get("port", "NO-PORT")) if transport(item) == "grpc" else None,
            health_port=health_port(item.get("port")),
            unit="mcp-plugin@%s.service" % name,
        )
        if pki_dir:
            item["pki"] = pki_paths(pki_dir, name)
    return out


def host_plan(entries, inventory_host="", pki_dir="", prefix=DEFAULT_PREFIX, var=PLUGIN_VAR):
    """The plan of one host's plugins (its ENTRIES of plugin_server_plugins), as plugin_plan derives it."""
    return plugin_plan({inventory_host: {var: entries}}, {DEFAULT_GROUP: [inventory_host]}, prefix=prefix,
                       group=DEFAULT_GROUP, explicit=[], pki_dir=pki_dir, var=var)


def port_conflicts(plugins):
    """For each plugin of one host, the other plugins whose mTLS or health port collides with its own.

    Returns {name: [names it collides with]} for every plugin; an empty list means no collision.
    """
    used = {}
    for plugin in plugins or []:
        for number in (_port(plugin["port"]), health_port(plugin["port"])):
            if number is not None:
                used.setdefault(number, []).append(plugin["name"])
    out = {}
    for plugin in plugins or []:
        numbers = (_port(plugin["port"]), health_port(plugin["port"]))
        others = {n for number in numbers if number is not None for n in used[number] if n != plugin["name"]}
        out[plugin["name"]] = sorted(others)
    return out
