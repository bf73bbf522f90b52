"""Read the lab inventory (inventories/lab) for lab/lab.sh: the single source of truth for
which containers exist, their images and the network aliases of the plugins they run.

A deliberately small reader (PyYAML only, no ansible): hosts.yml groups plus group_vars/ and
host_vars/ files named after a group or host (.yml/.yaml). Jinja expressions are not evaluated;
the lab keys it reads (mcp_lab_image, mcp_lab_network, plugin_server_plugins) must be literals.

Usage: inventory.py hosts            -> "HOST<TAB>GROUP<TAB>IMAGE<TAB>NETWORK<TAB>alias,alias..."
       inventory.py packages         -> one extra pip requirement per line (plugins' `packages`)
       inventory.py plugins          -> "HOST<TAB>NAME<TAB>PORT" per plugin
Env MCP_LAB_INVENTORY overrides the inventory directory.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import yaml

GROUPS = ("mcp_gateways", "mcp_plugin_servers")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load(path: Path) -> dict:
    for candidate in (path.with_suffix(".yml"), path.with_suffix(".yaml"), path):
        if candidate.is_file():
            with candidate.open(encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            if not isinstance(data, dict):
                sys.exit(f"inventory.py: {candidate} is not a mapping")
            return data
    return {}


def walk_groups(name: str, node: dict, parents: list[str], out: dict[str, list[str]]) -> None:
    """Collect host -> groups (including parent groups) from a YAML inventory tree."""
    node = node or {}
    chain = parents + [name]
    for host in (node.get("hosts") or {}):
        out.setdefault(host, [])
        for group in chain:
            if group not in out[host]:
                out[host].append(group)
    for child, sub in (node.get("children") or {}).items():
        walk_groups(child, sub, chain, out)


def inventory() -> list[dict]:
    root = Path(os.environ.get("MCP_LAB_INVENTORY") or Path(__file__).resolve().parents[2] / "inventories" / "lab")
    tree = load(root / "hosts")
    if not tree:
        sys.exit(f"inventory.py: no hosts.yml in {root}")
    host_groups: dict[str, list[str]] = {}
    for name, node in tree.items():
        walk_groups(name, node, [], host_groups)
    hosts = []
    for host, groups in host_groups.items():
        variables: dict = {}
        # all first, then the host's groups in tree order, then the host: later wins (like Ansible
        # for groups at different depths; our groups do not overlap).
        for group in ["all"] + [g for g in groups if g != "all"]:
            variables.update(load(root / "group_vars" / group))
        variables.update(load(root / "host_vars" / host))
        role = next((g for g in groups if g in GROUPS), None)
        if role is None:
            continue
        hosts.append({"host": host, "group": role, "vars": variables})
    return hosts


def plugins_of(entry: dict) -> list[dict]:
    plugins = entry["vars"].get("plugin_server_plugins") or []
    if entry["group"] != "mcp_plugin_servers":
        return []
    for plugin in plugins:
        name = str(plugin.get("name", ""))
        if not NAME_RE.match(name):
            sys.exit(f"inventory.py: host {entry['host']}: plugin name {name!r} is not a valid certificate name")
    return plugins


def aliases(entry: dict) -> list[str]:
    """DNS names the gateway uses for this host's plugins (the certificates' DNS SANs).
    DNS is case-insensitive but aardvark-dns matches names exactly, and clients lower-case the
    host of a URL: register the spelling from the inventory and its lower-case form."""
    names: list[str] = []
    for plugin in plugins_of(entry):
        for name in (f"mcp-plugin-{plugin['name']}", str(plugin["name"])):
            for spelling in (name, name.lower()):
                if spelling not in names and spelling != entry["host"]:
                    names.append(spelling)
    return names


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "hosts"
    hosts = inventory()
    if what == "hosts":
        for entry in hosts:
            image = entry["vars"].get("mcp_lab_image")
            if not image:
                sys.exit(f"inventory.py: host {entry['host']} has no mcp_lab_image")
            network = entry["vars"].get("mcp_lab_network", "mcp-lab")
            print("\t".join([entry["host"], entry["group"], image, network, ",".join(aliases(entry))]))
    elif what == "packages":
        seen = []
        for entry in hosts:
            for plugin in plugins_of(entry):
                for requirement in plugin.get("packages") or []:
                    if requirement not in seen:
                        seen.append(requirement)
        print("\n".join(seen))
    elif what == "plugins":
        for entry in hosts:
            for plugin in plugins_of(entry):
                print(f"{entry['host']}\t{plugin['name']}\t{plugin.get('port', '')}")
    else:
        sys.exit(f"inventory.py: unknown command {what!r} (hosts|packages|plugins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
