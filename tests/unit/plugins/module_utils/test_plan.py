# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The plugin plan: names, ports, addresses, URLs, SANs, PKI paths (module_utils/_plan.py, test plugin plan.py)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _inventory
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _plan as P
from ansible_collections.mcpgateway.mtls.plugins.test import plan as jinja_tests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))

HOSTVARS = {
    "p1": {"plugin_server_plugins": [{"name": "A", "port": 8000, "hooks": ["tool_pre_invoke"], "kind": "pkg.A"},
                                     {"name": "B", "port": 8100}]},
    "p2": {"plugin_server_plugins": [{"name": "C", "port": 8001, "sans": ["DNS:c.internal"]}]},
    "gw": {},
}
GROUPS = {"mcp_plugin_servers": ["p1", "p2"], "mcp_gateways": ["gw"]}


def _hostvars(**gateways):
    """HOSTVARS with the given gateway hosts' variables."""
    hostvars = copy.deepcopy(HOSTVARS)
    hostvars.update(copy.deepcopy(gateways))
    return hostvars


def _by_name(plan):
    return {item["name"]: item for item in plan}


# --- the default view ------------------------------------------------------------------------------------


def test_default_view_every_inventory_plugin():
    plan = P.plugin_plan(HOSTVARS, GROUPS, pki_dir="/pki/")
    assert [(p["name"], p["inventory_host"]) for p in plan] == [("A", "p1"), ("B", "p1"), ("C", "p2")]
    a = plan[0]
    assert a == {
        "name": "A", "port": 8000, "hooks": ["tool_pre_invoke"], "kind": "pkg.A",
        "inventory_host": "p1", "deployed": True, "gateway": True, "transport": "http", "target": None,
        "address": "mcp-plugin-A", "url": "https://mcp-plugin-A:8000/mcp", "health_port": 9000,
        "sans": ["DNS:mcp-plugin-A"], "unit": "mcp-plugin@A.service",
        "pki": {"dir": "/pki/plugins/A", "key": "/pki/plugins/A/server.key",
                "cert": "/pki/plugins/A/server.crt", "ca": "/pki/plugins/A/ca.crt"},
    }
    for item in plan:
        assert item["deployed"] is True and item["gateway"] is True
        assert item["url"] == "https://mcp-plugin-%s:%d/mcp" % (item["name"], item["port"])
        assert item["health_port"] == item["port"] + P.HEALTH_PORT_OFFSET
        assert item["unit"] == "mcp-plugin@%s.service" % item["name"]
    # The standard address adds no SAN; declared SANs are kept.
    assert plan[2]["sans"] == ["DNS:c.internal", "DNS:mcp-plugin-C"]


def test_no_pki_without_pki_dir_and_inputs_untouched():
    hostvars, groups = copy.deepcopy(HOSTVARS), copy.deepcopy(GROUPS)
    explicit = [{"name": "A", "host": "a.test"}]
    plan = P.plugin_plan(hostvars, groups, explicit=explicit)
    assert all("pki" not in item for item in plan)
    assert hostvars == HOSTVARS and groups == GROUPS and explicit == [{"name": "A", "host": "a.test"}]


def test_empty_inventory_is_an_empty_plan():
    assert P.plugin_plan({}, {}) == []
    assert P.plugin_plan({"p1": {}}, {"mcp_plugin_servers": ["p1"]}) == []
    assert P.plugin_plan(HOSTVARS, None) == []


# --- the gateway's view: prefix, host, IP ----------------------------------------------------------------


def test_prefix_from_the_gateway_hostvars():
    hostvars = _hostvars(gw={"gateway_plugin_host_prefix": "srv-"})
    plan = _by_name(P.plugin_plan(hostvars, GROUPS, gateways=["gw"]))
    assert plan["A"]["address"] == "srv-A"
    assert plan["A"]["url"] == "https://srv-A:8000/mcp"
    assert plan["A"]["sans"] == ["DNS:srv-A"]
    assert plan["C"]["sans"] == ["DNS:c.internal", "DNS:srv-C"]
    assert all(item["gateway"] and item["deployed"] for item in plan.values())


def test_empty_prefix_dials_the_bare_name_which_is_a_standard_san():
    plan = P.plugin_plan(HOSTVARS, GROUPS, prefix="")
    assert (plan[0]["address"], plan[0]["url"], plan[0]["sans"]) == ("A", "https://A:8000/mcp", ["DNS:A"])
    # role pki leaves out the SANs it already has: the certificate is the one of the default layout
    assert _inventory.pki_leaves(plan, "/pki")[1]["sans"] == ["DNS:A", "DNS:mcp-plugin-A", "DNS:localhost"]


def test_the_group_is_an_argument_not_a_gateway_variable():
    """The group names are fixed (the playbooks' host patterns): a gateway's gateway_plugin_hosts_group, a variable
    of earlier versions, is not read; the filter's own argument still picks another group."""
    hostvars = _hostvars(gw={"gateway_plugin_hosts_group": "edge"})
    groups = dict(GROUPS, edge=["p2"])
    plan = P.plugin_plan(hostvars, groups, gateways=["gw"])
    assert [(p["name"], p["inventory_host"]) for p in plan] == [("A", "p1"), ("B", "p1"), ("C", "p2")]
    plan = P.plugin_plan(hostvars, groups, gateways=["gw"], group="edge")
    assert [(p["name"], p["inventory_host"], p["deployed"]) for p in plan] == [("C", "p2", True)]


def test_per_plugin_host():
    hostvars = _hostvars()
    hostvars["p1"]["plugin_server_plugins"][0]["host"] = "a.example.test"
    a = P.plugin_plan(hostvars, GROUPS)[0]
    assert (a["address"], a["url"]) == ("a.example.test", "https://a.example.test:8000/mcp")
    assert a["sans"] == ["DNS:a.example.test"]


def test_ip_host_gets_an_ip_san():
    hostvars = _hostvars()
    hostvars["p1"]["plugin_server_plugins"][0]["host"] = "10.0.0.5"
    a = P.plugin_plan(hostvars, GROUPS)[0]
    assert (a["address"], a["url"], a["sans"]) == ("10.0.0.5", "https://10.0.0.5:8000/mcp", ["IP:10.0.0.5"])


def test_host_already_in_sans_is_not_repeated():
    hostvars = _hostvars()
    hostvars["p1"]["plugin_server_plugins"][0].update(host="a.test", sans=["DNS:a.test"])
    assert P.plugin_plan(hostvars, GROUPS)[0]["sans"] == ["DNS:a.test"]


@pytest.mark.parametrize("address, san", [
    ("mcp-plugin-A", "DNS:mcp-plugin-A"),
    ("a.example.test", "DNS:a.example.test"),
    ("10.0.0.5", "IP:10.0.0.5"),
    ("::1", "IP:::1"),
    ("[fd00::1]", "IP:fd00::1"),
])
def test_address_san(address, san):
    assert P.address_san(address) == san


# --- explicit gateway_plugins ----------------------------------------------------------------------------


def test_explicit_list_order_merge_and_leftovers():
    explicit = [{"name": "C", "port": 9443, "host": "c.gw.test"},
                {"name": "X", "url": "https://x.test:7000/mcp", "hooks": ["prompt_pre_fetch"]},
                {"name": "A", "priority": 5}]
    plan = P.plugin_plan(HOSTVARS, GROUPS, explicit=explicit)
    assert [(p["name"], p["gateway"], p["deployed"], p["inventory_host"]) for p in plan] == [
        ("C", True, True, "p2"), ("X", True, False, ""), ("A", True, True, "p1"), ("B", False, True, "p1")]
    c, x, a, b = plan
    # merged with the deployed entry: the explicit port and host win, the inventory host and SANs stay
    assert (c["port"], c["host"], c["health_port"]) == (9443, "c.gw.test", 10443)
    assert (c["address"], c["url"]) == ("c.gw.test", "https://c.gw.test:9443/mcp")
    assert c["sans"] == ["DNS:c.internal", "DNS:c.gw.test"]
    # explicit-only: URL as given
    assert (x["address"], x["url"], x["hooks"]) == ("x.test", "https://x.test:7000/mcp", ["prompt_pre_fetch"])
    assert x["sans"] == ["DNS:x.test"] and x["health_port"] is None
    # merged fields of both
    assert (a["port"], a["priority"], a["hooks"], a["url"]) == (8000, 5, ["tool_pre_invoke"], "https://mcp-plugin-A:8000/mcp")
    # deployed but not dialled: still has its plan
    assert (b["url"], b["health_port"], b["sans"]) == ("https://mcp-plugin-B:8100/mcp", 9100, [])


def test_explicit_prefix_group_arguments_win_over_the_gateway_hostvars():
    hostvars = _hostvars(gw={"gateway_plugins": [{"name": "Z", "port": 1}], "gateway_plugin_host_prefix": "gwp-"})
    groups = dict(GROUPS, edge=["p2"])
    # from the gateway's own variables (and the group argument)
    plan = P.plugin_plan(hostvars, groups, gateways=["gw"], group="edge")
    assert [(p["name"], p["gateway"], p["deployed"], p["url"]) for p in plan] == [
        ("Z", True, False, "https://gwp-Z:1/mcp"), ("C", False, True, "https://gwp-C:8001/mcp")]
    # the arguments win
    plan = P.plugin_plan(hostvars, groups, gateways=["gw"], explicit=[{"name": "A"}], prefix="arg-",
                         group="mcp_plugin_servers")
    assert [(p["name"], p["gateway"], p["url"]) for p in plan] == [
        ("A", True, "https://arg-A:8000/mcp"), ("B", False, "https://arg-B:8100/mcp"),
        ("C", False, "https://arg-C:8001/mcp")]
    assert plan[0]["sans"] == ["DNS:arg-A"]


def test_empty_explicit_argument_means_every_inventory_plugin():
    """The gateway role passes gateway_plugins (default []): then it dials every plugin of the group."""
    hostvars = _hostvars(gw={"gateway_plugins": [{"name": "Z", "port": 1}]})
    plan = P.plugin_plan(hostvars, GROUPS, gateways=["gw"], explicit=[])
    assert [(p["name"], p["gateway"]) for p in plan] == [("A", True), ("B", True), ("C", True)]


def test_two_gateways_with_different_prefixes():
    hostvars = _hostvars(gw1={"gateway_plugin_host_prefix": "one-"}, gw2={"gateway_plugin_host_prefix": "two-"})
    plan = _by_name(P.plugin_plan(hostvars, GROUPS, gateways=["gw1", "gw2"]))
    assert (plan["A"]["address"], plan["A"]["url"]) == ("one-A", "https://one-A:8000/mcp")
    assert plan["A"]["sans"] == ["DNS:one-A", "DNS:two-A"]
    assert plan["C"]["sans"] == ["DNS:c.internal", "DNS:one-C", "DNS:two-C"]


def test_two_gateways_one_with_the_default_prefix():
    hostvars = _hostvars(gw1={}, gw2={"gateway_plugin_host_prefix": "two-"})
    plan = _by_name(P.plugin_plan(hostvars, GROUPS, gateways=["gw1", "gw2"]))
    assert (plan["A"]["address"], plan["A"]["url"]) == ("mcp-plugin-A", "https://mcp-plugin-A:8000/mcp")
    assert plan["A"]["sans"] == ["DNS:mcp-plugin-A", "DNS:two-A"]
    assert _inventory.pki_leaves(list(plan.values()), "/pki")[1]["sans"] == ["DNS:A", "DNS:mcp-plugin-A", "DNS:localhost", "DNS:two-A"]


def test_an_explicit_name_given_twice_stays_twice_for_the_preflight():
    plan = P.plugin_plan(HOSTVARS, GROUPS, explicit=[{"name": "X", "port": 1}, {"name": "X", "port": 2}])
    dialed = [(p["name"], p["port"], p["url"]) for p in plan if p["gateway"]]
    assert dialed == [("X", 1, "https://mcp-plugin-X:1/mcp"), ("X", 2, "https://mcp-plugin-X:2/mcp")]


def test_a_name_deployed_on_two_hosts_is_dialled_twice_for_the_preflight():
    hostvars = {"p1": {"plugin_server_plugins": [{"name": "A", "port": 1}]},
                "p2": {"plugin_server_plugins": [{"name": "A", "port": 2}]}}
    plan = P.plugin_plan(hostvars, {"mcp_plugin_servers": ["p1", "p2"]})
    assert [(p["inventory_host"], p["gateway"]) for p in plan] == [("p1", True), ("p2", True)]


def test_explicit_entries_match_deployed_names_exactly():
    plan = _by_name(P.plugin_plan(HOSTVARS, GROUPS, explicit=[{"name": "a", "port": 9}]))
    assert plan["a"]["deployed"] is False and plan["a"]["gateway"] is True
    assert plan["A"]["deployed"] is True and plan["A"]["gateway"] is False and plan["A"]["unit"] == "mcp-plugin@A.service"


def test_a_url_host_keeps_its_spelling_in_the_san():
    plan = P.plugin_plan(HOSTVARS, GROUPS, explicit=[{"name": "A", "url": "https://user@Plug-A.Example:8443/x"}])
    assert plan[0]["address"] == "Plug-A.Example" and "DNS:Plug-A.Example" in plan[0]["sans"]
    ipv6 = P.plugin_plan(HOSTVARS, GROUPS, explicit=[{"name": "A", "url": "https://[fd00::1]:8443/x"}])
    assert ipv6[0]["address"] == "fd00::1" and "IP:fd00::1" in ipv6[0]["sans"]


def test_one_gateway_given_as_a_string():
    hostvars = _hostvars(gw={"gateway_plugin_host_prefix": "srv-"})
    assert _by_name(P.plugin_plan(hostvars, GROUPS, gateways="gw"))["A"]["address"] == "srv-A"


def test_second_gateway_only_plugin_is_neither_dialled_by_the_first_nor_deployed():
    hostvars = _hostvars(gw1={}, gw2={"gateway_plugins": [{"name": "Y", "host": "y.test", "port": 1}]})
    plan = P.plugin_plan(hostvars, GROUPS, gateways=["gw1", "gw2"])
    assert [(p["name"], p["gateway"], p["deployed"]) for p in plan] == [
        ("A", True, True), ("B", True, True), ("C", True, True), ("Y", False, False)]
    assert plan[3]["sans"] == ["DNS:y.test"]


def test_empty_gateway_names_are_ignored():
    assert P.plugin_plan(HOSTVARS, GROUPS, gateways=["", None]) == P.plugin_plan(HOSTVARS, GROUPS)


# --- url entries, missing ports --------------------------------------------------------------------------


@pytest.mark.parametrize("url, address, san", [
    ("https://x.test/mcp", "x.test", "DNS:x.test"),
    ("https://x.test:7000/mcp", "x.test", "DNS:x.test"),
    ("https://10.1.2.3:7000/mcp", "10.1.2.3", "IP:10.1.2.3"),
    ("https://[fd00::2]:7000/mcp", "fd00::2", "IP:fd00::2"),
])
def test_url_entries(url, address, san):
    (x,) = P.plugin_plan({}, {}, explicit=[{"name": "X", "url": url}])
    assert (x["address"], x["url"], x["sans"], x["health_port"]) == (address, url, [san], None)


def test_url_entry_with_a_port_field_has_a_health_port():
    (x,) = P.plugin_plan({}, {}, explicit=[{"name": "X", "url": "https://x.test:7000/mcp", "port": 7000}])
    assert x["health_port"] == 8000


def test_missing_port_is_visible_in_the_url_for_preflight():
    (z,) = P.plugin_plan({}, {}, explicit=[{"name": "Z"}])
    assert (z["url"], z["health_port"], z["deployed"], z["inventory_host"]) == (
        "https://mcp-plugin-Z:NO-PORT/mcp", None, False, "")


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostvars, explicit, needle", [
    ({"p1": {"plugin_server_plugins": {"name": "A"}}}, None, "host p1: plugin_server_plugins must be a list"),
    ({"p1": {"plugin_server_plugins": "A"}}, None, "host p1: plugin_server_plugins must be a list"),
    ({"p1": {"plugin_server_plugins": [{"port": 1}]}}, None, r"host p1: plugin_server_plugins\[0\] needs a 'name'"),
    ({"p1": {"plugin_server_plugins": ["A"]}}, None, r"host p1: plugin_server_plugins\[0\] needs a 'name'"),
    ({}, [{"name": "A"}, {"port": 1}], r"gateway_plugins\[1\]: every plugin needs a 'name'"),
    ({}, ["A"], r"gateway_plugins\[0\]: every plugin needs a 'name'"),
])
def test_plan_errors(hostvars, explicit, needle):
    with pytest.raises(P.PlanError, match=needle):
        P.plugin_plan(hostvars, {"mcp_plugin_servers": list(hostvars)}, explicit=explicit)


def test_plan_error_is_a_value_error_and_the_inventory_one():
    assert issubclass(P.PlanError, ValueError)
    assert _inventory.PlanError is P.PlanError
    assert _inventory.check_plugin_name is P.check_plugin_name


# --- one host's plan -------------------------------------------------------------------------------------


def test_host_plan():
    (a,) = P.host_plan([{"name": "A", "port": 8000}], "p1", pki_dir="/pki")
    assert (a["inventory_host"], a["deployed"], a["url"], a["health_port"], a["pki"]["cert"]) == (
        "p1", True, "https://mcp-plugin-A:8000/mcp", 9000, "/pki/plugins/A/server.crt")
    (a,) = P.host_plan([{"name": "A", "port": 8000}], "p1", prefix="srv-")
    assert (a["address"], a["sans"]) == ("srv-A", ["DNS:srv-A"])


# --- the name rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MyPlugin", "example-plugin-a", "a", "A1", "1a", "x" * 52])
def test_valid_names(name):
    assert P.name_problem(name) is None
    assert P.check_plugin_name(name) == name
    assert _inventory.check_plugin_name(name) == name


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
    assert needle in P.name_problem(name)
    with pytest.raises(P.PlanError) as err:
        P.check_plugin_name(name, where="pki_plugins[3]")
    assert str(err.value).startswith("pki_plugins[3]: ")
    assert needle in str(err.value)


def test_the_prefix_sets_the_length_limit():
    assert P.name_problem("x" * 61, prefix="p-") is None
    assert "1-61" in P.name_problem("x" * 62, prefix="p-")
    with pytest.raises(P.PlanError, match="1-45"):
        P.check_plugin_name("x" * 46, prefix="mcp-plugin-server-")


@pytest.mark.parametrize("value, prefix, expected", [
    ("A", P.DEFAULT_PREFIX, True),
    ("example-plugin-a", P.DEFAULT_PREFIX, True),
    ("x" * 52, P.DEFAULT_PREFIX, True),
    ("x" * 52, "mcp-plugin-server-", False),
    ("x" * 53, P.DEFAULT_PREFIX, False),
    ("under_score", P.DEFAULT_PREFIX, False),
    ("dot.ted", P.DEFAULT_PREFIX, False),
    ("..", P.DEFAULT_PREFIX, False),
    ("a/b", P.DEFAULT_PREFIX, False),
    ("", P.DEFAULT_PREFIX, False),
    (None, P.DEFAULT_PREFIX, False),
    (7, P.DEFAULT_PREFIX, False),
])
def test_jinja_test_plugin_name(value, prefix, expected):
    test = jinja_tests.TestModule().tests()["plugin_name"]
    assert test is jinja_tests.plugin_name
    assert test(value, prefix) is expected
    if prefix == P.DEFAULT_PREFIX:
        assert test(value) is expected


# --- ports, paths, SANs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port, expected", [(8000, 9000), ("8000", 9000), (1, 1001), (None, None), ("x", None),
                                            (True, None), ("NO-PORT", None)])
def test_health_port(port, expected):
    assert P.health_port(port) == expected


def test_max_port_leaves_room_for_the_health_port():
    assert P.MAX_PORT + P.HEALTH_PORT_OFFSET == 65535


def test_pki_paths_and_standard_sans():
    assert P.pki_paths("/p/", "A") == {"dir": "/p/plugins/A", "key": "/p/plugins/A/server.key",
                                       "cert": "/p/plugins/A/server.crt", "ca": "/p/plugins/A/ca.crt"}
    assert P.standard_sans("A") == ["DNS:A", "DNS:mcp-plugin-A", "DNS:localhost"]
    assert P.standard_sans("A", "srv-") == ["DNS:A", "DNS:srv-A", "DNS:localhost"]


@pytest.mark.parametrize("plugins, expected", [
    ([], {}),
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 8001}], {"A": [], "B": []}),
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 8000}], {"A": ["B"], "B": ["A"]}),
    ([{"name": "A", "port": 8000}, {"name": "B", "port": 9000}], {"A": ["B"], "B": ["A"]}),  # A's health port
    ([{"name": "A", "port": "8000"}, {"name": "B", "port": 7000}, {"name": "C", "port": 8000}],
     {"A": ["B", "C"], "B": ["A", "C"], "C": ["A", "B"]}),
])
def test_port_conflicts(plugins, expected):
    assert P.port_conflicts(plugins) == expected


def test_port_conflicts_of_a_plan():
    plan = P.plugin_plan({"p1": {"plugin_server_plugins": [{"name": "A", "port": 8000}, {"name": "B", "port": 9000}]}},
                         {"mcp_plugin_servers": ["p1"]})
    assert P.port_conflicts(plan) == {"A": ["B"], "B": ["A"]}


# --- the roles' defaults repeat the constants ------------------------------------------------------------


def _role_defaults(role):
    with open(os.path.join(ROOT, "roles", role, "defaults", "main.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def _role_spec_defaults(role):
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    return {name: spec["default"] for name, spec in options.items() if "default" in spec}


@pytest.mark.parametrize("role, variable, constant", [
    ("gateway", "gateway_plugin_host_prefix", "DEFAULT_PREFIX"),
    ("pki", "pki_plugin_subject_prefix", "DEFAULT_PREFIX"),
])
def test_role_defaults_agree_with_the_plan(role, variable, constant):
    defaults = _role_defaults(role)
    if variable not in defaults:
        pytest.skip("roles/%s/defaults/main.yml has no %s" % (role, variable))
    assert defaults[variable] == getattr(P, constant)
    specs = _role_spec_defaults(role)
    if variable in specs:
        assert specs[variable] == getattr(P, constant)


def test_constants():
    assert (P.DEFAULT_PREFIX, P.DEFAULT_GROUP, P.HEALTH_PORT_OFFSET) == ("mcp-plugin-", "mcp_plugin_servers", 1000)
