"""Gateway client config shaping (module_utils/_gateway.py)."""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _gateway as gw
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _plan as _plan_mod
from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError

HOSTVARS = {"p1": {"plugin_server_plugins": [{"name": "A", "port": 8000, "hooks": ["tool_pre_invoke"], "config": {"x": 1}}]},
            "p2": {"plugin_server_plugins": [{"name": "B", "port": 8001, "mode": "transform", "priority": 5}]}}
TLS = {"certfile": "/c.crt", "keyfile": "/c.key", "ca_bundle": "/ca.crt", "keyfile_password": "", "verify": True,
       "check_hostname": True}


GROUPS = {"mcp_plugin_servers": ["p1", "p2"]}


def _plan(explicit=None, hostvars=None, groups=None):
    """What role gateway passes to gateway_client_config: the plan's plugins the gateway connects to."""
    hostvars = HOSTVARS if hostvars is None else hostvars
    groups = GROUPS if groups is None else groups
    return [p for p in _plan_mod.plugin_plan(hostvars, groups, explicit=explicit or []) if p["gateway"]]


def test_plugins_from_inventory_get_host_and_url():
    plugins = _plan()
    assert [(p["name"], p["inventory_host"], p["url"]) for p in plugins] == [
        ("A", "p1", "https://mcp-plugin-A:8000/mcp"), ("B", "p2", "https://mcp-plugin-B:8001/mcp")]


def test_explicit_plugins_win_and_may_give_url_or_host():
    plugins = _plan([{"name": "X", "url": "https://x.test:1/mcp"}, {"name": "Y", "host": "y.test", "port": 2}],
                    groups={"mcp_plugin_servers": ["p1"]})
    assert [(p["name"], p["inventory_host"], p["url"]) for p in plugins] == [
        ("X", "", "https://x.test:1/mcp"), ("Y", "", "https://y.test:2/mcp")]
    # the deployed plugin A is not in the explicit list: the gateway does not connect to it
    config = gw.gateway_client_config(plugins, TLS)
    assert [(e["name"], e["mcp"]["url"]) for e in config["plugins"]] == [
        ("X", "https://x.test:1/mcp"), ("Y", "https://y.test:2/mcp")]


def test_missing_port_is_visible_in_the_url_for_preflight():
    assert _plan([{"name": "Z"}], {}, {})[0]["url"] == "https://mcp-plugin-Z:NO-PORT/mcp"


@pytest.mark.parametrize("explicit, hostvars, needle", [
    ([], {"p1": {"plugin_server_plugins": {"name": "A"}}}, "host p1: plugin_server_plugins must be a list"),
    ([], {"p1": {"plugin_server_plugins": [{"port": 1}]}}, r"host p1: plugin_server_plugins\[0\] needs a 'name'"),
    ([{"port": 1}], {}, r"gateway_plugins\[0\]: every plugin needs a 'name'"),
])
def test_bad_plugins(explicit, hostvars, needle):
    with pytest.raises(PlanError, match=needle):
        _plan(explicit, hostvars, {"mcp_plugin_servers": list(hostvars)})


def test_client_config_yaml_mode():
    config = gw.gateway_client_config(_plan(), TLS)
    a, b = config["plugins"]
    assert list(a) == ["name", "kind", "hooks", "mcp"] and "config" not in a
    assert a["mcp"] == {"proto": "STREAMABLEHTTP", "url": "https://mcp-plugin-A:8000/mcp",
                        "tls": {k: v for k, v in TLS.items() if k != "keyfile_password"}}
    assert (b["mode"], b["priority"]) == ("transform", 5)


def test_client_config_env_mode_has_no_tls_and_bad_mode_fails():
    config = gw.gateway_client_config(_plan(), TLS, "env")
    assert "tls" not in config["plugins"][0]["mcp"]
    with pytest.raises(PlanError, match="'yaml' or 'env'"):
        gw.gateway_client_config([], TLS, "both")
