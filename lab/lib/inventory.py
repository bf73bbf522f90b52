"""Read the lab inventory (inventories/lab) for lab/lab.sh: the single source of truth for
which containers exist, their images and the network aliases of the plugins they run.

A deliberately small reader (PyYAML only, no ansible): hosts.yml groups plus group_vars/ and
host_vars/ files named after a group or host (.yml/.yaml). Jinja expressions are not evaluated;
the lab keys it reads (mcp_lab_image, mcp_lab_network, mcp_lab_mgmt_network, mcp_lab_mgmt_subnet,
ansible_host, plugin_server_plugins) must be literals. Host variables may also sit in hosts.yml.

Usage: inventory.py hosts            -> "HOST<TAB>GROUP<TAB>IMAGE<TAB>NETWORK<TAB>MGMT_NETWORK<TAB>MGMT_SUBNET<TAB>ADDRESS<TAB>alias,alias..."
                                        (the aliases last: they may be empty, and read(1) merges empty tab fields)
       inventory.py packages         -> one extra pip requirement per line (plugins' `packages`)
       inventory.py plugins          -> "HOST<TAB>NAME<TAB>PORT" per plugin
Env MCP_LAB_INVENTORY overrides the inventory directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import yaml

GROUPS = ("mcp_gateways", "mcp_plugin_servers")


def _load_plan():
    """The collection's plugin plan (plugins/module_utils/_plan.py: standard library only), so that the lab
    names and reaches the plugins exactly as the roles do."""
    path = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "_plan.py"
    spec = importlib.util.spec_from_file_location("mcp_plugin_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAN = _load_plan()


def load(path: Path) -> dict:
    for candidate in (path.with_suffix(".yml"), path.with_suffix(".yaml"), path):
        if candidate.is_file():
            with candidate.open(encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            if not isinstance(data, dict):
                sys.exit(f"inventory.py: {candidate} is not a mapping")
            return data
    return {}


def walk_groups(name: str, node: dict, parents: list[str], out: dict[str, list[str]], inline: dict) -> None:
    """Collect host -> groups (including parent groups) and the hosts' inline variables from a YAML
    inventory tree."""
    node = node or {}
    chain = parents + [name]
    for host, variables in (node.get("hosts") or {}).items():
        out.setdefault(host, [])
        inline.setdefault(host, {}).update(variables or {})
        for group in chain:
            if group not in out[host]:
                out[host].append(group)
    for child, sub in (node.get("children") or {}).items():
        walk_groups(child, sub, chain, out, inline)


def inventory() -> list[dict]:
    root = Path(os.environ.get("MCP_LAB_INVENTORY") or Path(__file__).resolve().parents[2] / "inventories" / "lab")
    tree = load(root / "hosts")
    if not tree:
        sys.exit(f"inventory.py: no hosts.yml in {root}")
    host_groups: dict[str, list[str]] = {}
    inline_vars: dict[str, dict] = {}
    for name, node in tree.items():
        walk_groups(name, node, [], host_groups, inline_vars)
    hosts = []
    for host, groups in host_groups.items():
        variables: dict = {}
        inline = inline_vars.get(host) or {}
        # all first, then the host's groups in tree order, then the host: later wins (like Ansible
        # for groups at different depths; our groups do not overlap).
        for group in ["all"] + [g for g in groups if g != "all"]:
            variables.update(load(root / "group_vars" / group))
        variables.update(inline)
        variables.update(load(root / "host_vars" / host))
        role = next((g for g in groups if g in GROUPS), None)
        if role is None:
            continue
        hosts.append({"host": host, "group": role, "vars": variables})
    return hosts


def plan(hosts: list[dict]) -> list[dict]:
    """The plugin plan of the lab inventory, as the gateway hosts see it."""
    hostvars = {entry["host"]: entry["vars"] for entry in hosts}
    groups: dict[str, list[str]] = {}
    for entry in hosts:
        groups.setdefault(entry["group"], []).append(entry["host"])
    for host, variables in hostvars.items():
        for plugin in variables.get(PLAN.PLUGIN_VAR) or [] if host in groups.get("mcp_plugin_servers", []) else []:
            problem = PLAN.name_problem(plugin.get("name"))
            if problem:
                sys.exit(f"inventory.py: host {host}: {problem}")
    try:
        return PLAN.plugin_plan(hostvars, groups, gateways=groups.get("mcp_gateways", []))
    except PLAN.PlanError as exc:
        sys.exit(f"inventory.py: {exc}")


def aliases(entry: dict, plugins: list[dict]) -> list[str]:
    """DNS names the gateway uses for this host's plugins (the certificates' DNS SANs: the plan's address,
    and the plugin's name). DNS is case-insensitive but aardvark-dns matches names exactly, and clients
    lower-case the host of a URL: register the spelling from the inventory and its lower-case form."""
    names: list[str] = []
    for plugin in plugins:
        if plugin["inventory_host"] != entry["host"]:
            continue
        for name in (plugin["address"], str(plugin["name"])):
            for spelling in (name, name.lower()):
                if spelling not in names and spelling != entry["host"]:
                    names.append(spelling)
    return names


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "hosts"
    hosts = inventory()
    plugins = [plugin for plugin in plan(hosts) if plugin["deployed"]]
    if what == "hosts":
        for entry in hosts:
            image = entry["vars"].get("mcp_lab_image")
            if not image:
                sys.exit(f"inventory.py: host {entry['host']} has no mcp_lab_image")
            network = entry["vars"].get("mcp_lab_network", "mcp-lab")
            mgmt = entry["vars"].get("mcp_lab_mgmt_network", "mcp-lab-mgmt")
            subnet = entry["vars"].get("mcp_lab_mgmt_subnet", "")
            address = entry["vars"].get("ansible_host")
            if not address or not subnet:
                sys.exit(f"inventory.py: host {entry['host']} needs ansible_host and mcp_lab_mgmt_subnet (its ssh address)")
            print("\t".join([entry["host"], entry["group"], image, network, mgmt, subnet, address,
                             ",".join(aliases(entry, plugins))]))
    elif what == "packages":
        seen = []
        for plugin in plugins:
            for requirement in plugin.get("packages") or []:
                if requirement not in seen:
                    seen.append(requirement)
        print("\n".join(seen))
    elif what == "plugins":
        for plugin in plugins:
            print(f"{plugin['inventory_host']}\t{plugin['name']}\t{plugin.get('port', '')}")
    else:
        sys.exit(f"inventory.py: unknown command {what!r} (hosts|packages|plugins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
