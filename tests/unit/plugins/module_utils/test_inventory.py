"""Plugin lists -> PKI plan: plugin lists, config files, leaves, tree (module_utils/_inventory.py).

The name rule, the plugin plan and port_conflicts are tested in test_plan.py.
"""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _inventory as inv
from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import plugin_plan


def test_normalize_names_and_dicts():
    out = inv.normalize_plugins(["A", {"name": "B", "sans": ["DNS:b.test"]}])
    assert out == [{"name": "A", "sans": []}, {"name": "B", "sans": ["DNS:b.test"]}]


@pytest.mark.parametrize("entries, needle", [
    (["A", "a"], "repeats pki_plugins\\[0\\]"),
    ([{"sans": []}], "needs a 'name'"),
    ([{"name": "A", "sans": "DNS:x"}], "'sans' must be a list"),
    ([{"name": "A", "sans": [""]}], "'sans' must be a list"),
    ("A", "expected a list"),
])
def test_normalize_rejects(entries, needle):
    with pytest.raises(inv.PlanError, match=needle):
        inv.normalize_plugins(entries)


def test_repeat_across_hosts_names_both_hosts():
    """Role pki feeds the deployed plugins of the plan to pki_leaves: a name on two hosts names both."""
    hostvars = {"h1": {"plugin_server_plugins": [{"name": "A", "port": 8000}]},
                "h2": {"plugin_server_plugins": [{"name": "a", "port": 8001}]}}
    plan = [p for p in plugin_plan(hostvars, {"mcp_plugin_servers": ["h1", "h2"]}) if p["deployed"]]
    assert [(p["name"], p["inventory_host"]) for p in plan] == [("A", "h1"), ("a", "h2")]
    with pytest.raises(inv.PlanError) as err:
        inv.pki_leaves(plan, "/pki")
    assert "host h2: plugin_server_plugins entry 'a'" in str(err.value) and "host h1" in str(err.value)


def test_bad_name_from_the_inventory_names_its_host():
    hostvars = {"h1": {"plugin_server_plugins": [{"name": "bad_name", "port": 8000}]}}
    with pytest.raises(inv.PlanError, match="^host h1: plugin_server_plugins entry 'bad_name': plugin name 'bad_name'"):
        inv.normalize_plugins(plugin_plan(hostvars, {"mcp_plugin_servers": ["h1"]}))


def test_plan_sans_reach_the_leaves():
    """A plugin's `host` (the address the gateway dials) becomes a SAN of its certificate."""
    hostvars = {"h1": {"plugin_server_plugins": [{"name": "A", "port": 8000, "host": "a.example.test"}]}}
    (_gateway, leaf) = inv.pki_leaves(plugin_plan(hostvars, {"mcp_plugin_servers": ["h1"]}), "/pki")
    assert leaf["sans"] == ["DNS:A", "DNS:mcp-plugin-A", "DNS:localhost", "DNS:a.example.test"]


def test_external_plugins_from_upstream_config():
    config = {"plugins": [{"name": "A", "kind": "external"}, {"name": "B", "kind": "pkg.Cls"}, {"name": "C", "kind": "external"}]}
    assert inv.external_plugins(config) == ["A", "C"]


@pytest.mark.parametrize("config, needle", [
    ({}, "'plugins' list"),
    ([], "'plugins' list"),
    ({"plugins": ["x"]}, "plugins\\[0\\] is not a mapping"),
    ({"plugins": [{"name": "A", "kind": "native"}]}, "no plugin has 'kind: external'"),
])
def test_external_plugins_rejects(config, needle):
    with pytest.raises(inv.PlanError, match=needle):
        inv.external_plugins(config, source="cfg.yaml")


def test_pki_leaves_upstream_layout():
    leaves = inv.pki_leaves(["MyPlugin", {"name": "B", "sans": ["DNS:b.test", "DNS:localhost"]}], "/x/certs/mcp/")
    gateway, plugin, other = leaves
    assert gateway == {"name": "gateway", "profile": "client", "subject": "/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway",
                       "sans": [], "key_path": "/x/certs/mcp/gateway/client.key",
                       "cert_path": "/x/certs/mcp/gateway/client.crt", "ca_copy_path": "/x/certs/mcp/gateway/ca.crt"}
    assert plugin["subject"] == "/CN=mcp-plugin-MyPlugin/O=MCPGateway/OU=Plugins"
    assert plugin["sans"] == ["DNS:MyPlugin", "DNS:mcp-plugin-MyPlugin", "DNS:localhost"]
    assert plugin["key_path"] == "/x/certs/mcp/plugins/MyPlugin/server.key"
    assert not [leaf for leaf in leaves if "passphrase" in leaf]
    assert inv.leaf_passphrases(leaves, "", "p") == {"MyPlugin": "p", "B": "p"}
    assert other["sans"] == ["DNS:B", "DNS:mcp-plugin-B", "DNS:localhost", "DNS:b.test"]


def test_pki_leaves_needs_a_dir():
    with pytest.raises(inv.PlanError, match="pki_dir is empty"):
        inv.pki_leaves([], "")


def test_pki_tree():
    tree = inv.pki_tree(["/p/plugins/B/", "/p/plugins/A"], "/p")
    assert [t["name"] for t in tree] == ["ca", "gateway", "A", "B"]
    assert tree[2] == {"name": "A", "cert_path": "/p/plugins/A/server.crt", "key_path": "/p/plugins/A/server.key"}
    assert all("passphrase" not in t for t in tree)


def test_leaf_passphrases_of_encrypted_keys():
    tree = inv.pki_tree(["/p/plugins/A"], "/p")
    assert inv.leaf_passphrases(tree, "gw-pass", "plug-pass") == {"gateway": "gw-pass", "A": "plug-pass"}
    assert inv.leaf_passphrases(tree, "", "plug-pass") == {"A": "plug-pass"}  # the CA entry has no key; "" = none
    assert inv.leaf_passphrases(tree) == {}


def test_pki_leaves_reissue_forces_a_new_key_for_the_named_leaves_only():
    leaves = inv.pki_leaves(["A", "B"], "/pki", reissue=["gateway", "B"])
    forced = {leaf["name"]: (leaf.get("force"), leaf.get("keep_key")) for leaf in leaves}
    assert forced == {"gateway": (True, False), "A": (None, None), "B": (True, False)}
    with pytest.raises(inv.PlanError, match="reissue: C is not a leaf of the tree .*gateway, A, B"):
        inv.pki_leaves(["A", "B"], "/pki", reissue=["C"])
