"""Plugin lists -> PKI plan: names, config files, inventory, expectations (module_utils/_inventory.py)."""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _inventory as inv


@pytest.mark.parametrize("name", ["MyPlugin", "example-plugin-a", "a", "A1", "x" * 52])
def test_valid_names(name):
    assert inv.check_plugin_name(name) == name


@pytest.mark.parametrize("name, needle", [
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    (7, "empty"),
    ("../x", "path separator"),
    ("a/b", "path separator"),
    ("a\\b", "path separator"),
    ("..", "path separator"),
    ("x" * 53, "1-52"),
    ("-lead", "not a valid certificate name"),
    ("trail-", "not a valid certificate name"),
    ("under_score", "not a valid certificate name"),
    ("dot.ted", "not a valid certificate name"),
    ("sp ace", "not a valid certificate name"),
    ("$(reboot)", "not a valid certificate name"),
    ("a;rm -rf", "not a valid certificate name"),
    ("naïve", "not a valid certificate name"),
    ("名前", "not a valid certificate name"),
])
def test_invalid_names_name_the_input_and_the_fix(name, needle):
    with pytest.raises(inv.PlanError) as err:
        inv.check_plugin_name(name, where="pki_plugins[3]")
    assert "pki_plugins[3]" in str(err.value)
    assert needle in str(err.value)


def test_longer_prefix_shrinks_the_limit():
    with pytest.raises(inv.PlanError, match="1-45"):
        inv.check_plugin_name("x" * 46, prefix="mcp-plugin-server-")


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
    hostvars = {"h1": {"plugin_server_plugins": [{"name": "A", "port": 8000}]},
                "h2": {"plugin_server_plugins": [{"name": "A", "port": 8001}]}}
    with pytest.raises(inv.PlanError) as err:
        inv.pki_leaves(inv.inventory_plugins(["h1", "h2"], hostvars), "/pki")
    assert "host h2" in str(err.value) and "host h1" in str(err.value)


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


def test_inventory_plugins_keeps_host_and_fields():
    hostvars = {"h1": {"plugin_server_plugins": [{"name": "A", "port": 8000}]}, "h2": {}}
    assert inv.inventory_plugins(["h1", "h2"], hostvars) == [{"name": "A", "port": 8000, "sans": [], "host": "h1"}]
    with pytest.raises(inv.PlanError, match="host h1: plugin_server_plugins must be a list"):
        inv.inventory_plugins(["h1"], {"h1": {"plugin_server_plugins": {"name": "A"}}})


def test_pki_leaves_upstream_layout():
    leaves = inv.pki_leaves(["MyPlugin", {"name": "B", "sans": ["DNS:b.test", "DNS:localhost"]}], "/x/certs/mcp/",
                            plugin_passphrase="p")
    gateway, plugin, other = leaves
    assert gateway == {"name": "gateway", "profile": "client", "subject": "/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway",
                       "sans": [], "key_path": "/x/certs/mcp/gateway/client.key",
                       "cert_path": "/x/certs/mcp/gateway/client.crt", "ca_copy_path": "/x/certs/mcp/gateway/ca.crt"}
    assert plugin["subject"] == "/CN=mcp-plugin-MyPlugin/O=MCPGateway/OU=Plugins"
    assert plugin["sans"] == ["DNS:MyPlugin", "DNS:mcp-plugin-MyPlugin", "DNS:localhost"]
    assert plugin["key_path"] == "/x/certs/mcp/plugins/MyPlugin/server.key"
    assert plugin["passphrase"] == "p" and "passphrase" not in gateway
    assert other["sans"] == ["DNS:B", "DNS:mcp-plugin-B", "DNS:localhost", "DNS:b.test"]


def test_pki_leaves_needs_a_dir():
    with pytest.raises(inv.PlanError, match="pki_dir is empty"):
        inv.pki_leaves([], "")


def test_pki_tree():
    tree = inv.pki_tree(["/p/plugins/B/", "/p/plugins/A"], "/p")
    assert [t["name"] for t in tree] == ["ca", "gateway", "A", "B"]
    assert tree[2] == {"name": "A", "cert_path": "/p/plugins/A/server.crt", "key_path": "/p/plugins/A/server.key"}
    assert all("passphrase" not in t for t in tree)


def test_pki_tree_passes_the_passphrases_of_encrypted_keys():
    tree = inv.pki_tree(["/p/plugins/A"], "/p", "gw-pass", "plug-pass")
    assert [t.get("passphrase") for t in tree] == [None, "gw-pass", "plug-pass"]
    assert [t.get("passphrase") for t in inv.pki_tree(["/p/plugins/A"], "/p", "", "plug-pass")] == [None, None, "plug-pass"]


@pytest.mark.parametrize("plugins, expected", [
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 8001}], {"A": [], "B": []}),
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 8000}], {"A": ["B"], "B": ["A"]}),
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 9000}], {"A": ["B"], "B": ["A"]}),  # A's health port
    ([{"name": "A", "port": "8000"}, {"name": "B", "port": 7000}, {"name": "C", "port": 8000}],
     {"A": ["B", "C"], "B": ["A", "C"], "C": ["A", "B"]}),
])
def test_port_conflicts(plugins, expected):
    assert inv.port_conflicts(plugins) == expected
