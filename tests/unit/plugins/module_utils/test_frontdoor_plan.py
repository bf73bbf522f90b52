# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway's front door on the controller side: the front door plan, the MCP clients' certificates and their
passphrases (module_utils/_inventory.py), and the front door's key and certificate in the gateway's TLS set
(module_utils/_gatewaystate.py)."""

from __future__ import annotations

import os
import stat

import pytest
from test_gatewaystate import CERT, KEY, gateway, run_command  # noqa: F401  # pylint: disable=unused-import

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _gatewaystate as G
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _inventory as inv
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

BASE_SANS = ["DNS:localhost", "IP:127.0.0.1"]
SERVER_KEY = "-----BEGIN PRIVATE KEY-----\nSSSS\n-----END PRIVATE KEY-----\n"
SERVER_CERT = "-----BEGIN CERTIFICATE-----\nTTTT\n-----END CERTIFICATE-----\n"
CLIENTS_CA = "-----BEGIN CERTIFICATE-----\nUUUU\n-----END CERTIFICATE-----\n"
FRONT_DOOR = {"server_key": SERVER_KEY, "server_cert": SERVER_CERT, "clients_ca": CLIENTS_CA}


def plan(host="gw1", **own):
    """frontdoor_plan of one gateway host with gateway_https true and OWN's other variables."""
    return inv.frontdoor_plan({host: dict({"gateway_https": True}, **own)}, {"mcp_gateways": [host]})


# --- frontdoor_plan --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, planned", [
    (True, True),
    ("true", True),
    ("True", True),
    (" yes ", True),
    (False, False),
    ("false", False),
    ("False", False),
    ("", False),
    (None, False),
])
def test_gateway_https_as_bool_or_string(value, planned):
    hostvars = {"gw1": {"gateway_https": value}}
    assert [door["host"] for door in inv.frontdoor_plan(hostvars, {"mcp_gateways": ["gw1"]})] == (["gw1"] if planned else [])


def test_gateway_https_as_a_yaml_integer_agrees_with_role_gateway():
    """BUG (reported, not fixed here): role gateway reads gateway_https with `| bool` (vars/main.yml) and its
    preflight accepts 1 and 0, so `gateway_https: 1` (a YAML integer) serves the front door; _truthy takes only True
    or strings, so the plan leaves that host out, no certificate is issued, and role gateway then fails with
    'frontdoor/HOST/server.crt is missing on the controller. Run role mcpgateway.mtls.pki first'."""
    hostvars = {"gw1": {"gateway_https": 1}, "gw2": {"gateway_https": 0}}
    assert [door["host"] for door in inv.frontdoor_plan(hostvars, {"mcp_gateways": ["gw1", "gw2"]})] == ["gw1"]


def test_only_the_gateways_with_gateway_https_are_planned_in_group_order():
    hostvars = {"c": {"gateway_https": "true"}, "a": {"gateway_https": True}, "b": {}, "d": {"gateway_https": "false"},
                "p": {"gateway_https": True}}  # p: not a gateway host
    groups = {"mcp_gateways": ["c", "b", "a", "d", "missing"], "mcp_plugin_servers": ["p"]}
    assert [door["host"] for door in inv.frontdoor_plan(hostvars, groups)] == ["c", "a"]
    assert inv.frontdoor_plan(hostvars, {"mcp_plugin_servers": ["p"]}) == []
    assert inv.frontdoor_plan(hostvars, None) == []
    assert [door["host"] for door in inv.frontdoor_plan(hostvars, groups, group="mcp_plugin_servers")] == ["p"]


def test_a_gateway_host_without_gateway_https_may_have_a_long_name():
    long_name = "h" * 80
    assert inv.frontdoor_plan({long_name: {}}, {"mcp_gateways": [long_name]}) == []


def test_sans_localhost_loopback_and_the_dns_valid_inventory_name():
    assert plan("gw1") == [{"host": "gw1", "sans": BASE_SANS + ["DNS:gw1"]}]
    assert plan("gw1.example.com")[0]["sans"] == BASE_SANS + ["DNS:gw1.example.com"]


@pytest.mark.parametrize("host, sans", [
    ("gw_1", BASE_SANS),  # not a DNS name: no SAN of its own
    ("192.0.2.7", BASE_SANS + ["IP:192.0.2.7"]),
    ("localhost", BASE_SANS),  # no repeat
    ("-gw", BASE_SANS),
])
def test_the_inventory_name_is_a_san_only_when_it_is_a_dns_name_or_an_address(host, sans):
    assert plan(host)[0]["sans"] == sans


@pytest.mark.parametrize("ansible_host, san", [
    ("10.0.0.5", "IP:10.0.0.5"),
    ("fd00::5", "IP:fd00::5"),
    ("gw1.example.com", "DNS:gw1.example.com"),
    (" gw1.example.com ", "DNS:gw1.example.com"),
])
def test_ansible_host_ip_or_dns(ansible_host, san):
    assert plan(ansible_host=ansible_host)[0]["sans"] == BASE_SANS + ["DNS:gw1", san]


def test_ansible_host_that_is_not_a_dns_name_or_repeats_is_left_out():
    assert plan(ansible_host="bad_name")[0]["sans"] == BASE_SANS + ["DNS:gw1"]
    assert plan(ansible_host="127.0.0.1")[0]["sans"] == BASE_SANS + ["DNS:gw1"]
    assert plan(ansible_host="gw1")[0]["sans"] == BASE_SANS + ["DNS:gw1"]


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "[::]", "", " 0.0.0.0 "])
def test_a_wildcard_listen_host_is_no_san(listen):
    assert plan(ansible_host="10.0.0.5", gateway_listen_host=listen)[0]["sans"] == BASE_SANS + ["DNS:gw1", "IP:10.0.0.5"]


def test_a_specific_listen_host_is_a_san():
    door = plan(ansible_host="10.0.0.5", gateway_listen_host="10.1.1.1")[0]
    assert door["sans"] == BASE_SANS + ["DNS:gw1", "IP:10.0.0.5", "IP:10.1.1.1"]
    assert plan(gateway_listen_host="gw-int.example.com")[0]["sans"] == BASE_SANS + ["DNS:gw1", "DNS:gw-int.example.com"]


def test_gateway_https_sans_with_and_without_prefix_deduplicated_in_order():
    extra = ["DNS:gw.example.com", "IP:10.0.0.9", "alias.example.com", "10.0.0.10", " fd00::9 ",
             "DNS:localhost", "127.0.0.1", "IP:10.0.0.5", "gw.example.com", "DNS:gw1"]
    door = plan(ansible_host="10.0.0.5", gateway_https_sans=extra)[0]
    assert door["sans"] == BASE_SANS + ["DNS:gw1", "IP:10.0.0.5", "DNS:gw.example.com", "IP:10.0.0.9",
                                        "DNS:alias.example.com", "IP:10.0.0.10", "IP:fd00::9"]


def test_gateway_https_sans_prefixes_are_case_insensitive_and_wildcards_allowed():
    door = plan(gateway_https_sans=["ip:10.0.0.9", "dns:gw.example.com", "DNS:*.mcp.example.com", "IP:[fd00::1]"])[0]
    assert door["sans"][-4:] == ["IP:10.0.0.9", "DNS:gw.example.com", "DNS:*.mcp.example.com", "IP:fd00::1"]


@pytest.mark.parametrize("entry, needle", [
    ("IP:not-an-ip", "is not an IP address"),
    ("ip:10.0.0.300", "is not an IP address"),
    ("DNS:bad name", "is not a DNS name"),
    ("DNS:-bad.example.com", "is not a DNS name"),
    ("under_score.example.com", "is not a DNS name"),
    ("DNS:gw.example.com/x", "is not a DNS name"),
])
def test_gateway_https_sans_that_are_no_names_or_addresses_are_refused(entry, needle):
    with pytest.raises(inv.PlanError) as err:
        plan(gateway_https_sans=[entry])
    assert "host gw1" in str(err.value) and needle in str(err.value) and repr(entry) in str(err.value)


def test_empty_gateway_https_sans_is_none():
    assert plan(gateway_https_sans=[])[0]["sans"] == plan(gateway_https_sans=None)[0]["sans"] == BASE_SANS + ["DNS:gw1"]


@pytest.mark.parametrize("extra", ["DNS:gw.example.com", [""], ["  "], [5], ["DNS:a", None], {"DNS": "gw.example.com"}])
def test_bad_gateway_https_sans_names_the_host(extra):
    with pytest.raises(inv.PlanError, match=r"^host gw1: gateway_https_sans must be a list of non-empty strings"):
        plan(gateway_https_sans=extra)


def test_an_inventory_name_too_long_for_the_certificate_name_is_refused():
    longest = "h" * 53  # frontdoor. + 53 = 63 characters
    assert plan(longest)[0]["host"] == longest
    too_long = "h" * 54
    with pytest.raises(inv.PlanError, match=r"^host %s: the inventory name is longer than 53 characters" % too_long):
        plan(too_long)


# --- normalize_clients -----------------------------------------------------------------------------------------------

def test_normalize_clients_names_and_dicts():
    out = inv.normalize_clients(["alice", {"name": "bob", "subject": "/CN=bob/O=Acme"}, {"name": "carol-2"}])
    assert out == [{"name": "alice", "subject": "/CN=alice/O=MCPGateway/OU=Clients"},
                   {"name": "bob", "subject": "/CN=bob/O=Acme"},
                   {"name": "carol-2", "subject": "/CN=carol-2/O=MCPGateway/OU=Clients"}]
    assert inv.normalize_clients(None) == inv.normalize_clients([]) == []


def test_the_longest_client_name():
    assert inv.normalize_clients(["x" * 56])[0]["name"] == "x" * 56  # client. + 56 = 63 characters


@pytest.mark.parametrize("entries, needle", [
    ("alice", r"^pki_clients: expected a list of client names"),
    ([{"name": "a", "sans": ["DNS:a"]}], r"^pki_clients\[0\]: unknown key\(s\) sans"),
    (["a/b"], r"^pki_clients\[0\]: client name 'a/b' must be 1-56 letters"),
    (["a.b"], r"^pki_clients\[0\]: client name 'a.b' must be"),
    ([""], r"^pki_clients\[0\]: client name '' must be"),
    (["x" * 57], r"^pki_clients\[0\]: client name 'x{57}' must be"),
    (["x" * 60], r"^pki_clients\[0\]: client name 'x{60}' must be"),
    (["-a"], r"client name '-a' must be"),
    (["a-"], r"client name 'a-' must be"),
    ([5], r"client name 5 must be"),
    ([{"subject": "/CN=x"}], r"^pki_clients\[0\]: client name None must be"),
    (["ok", "Alice", "alice"], r"^pki_clients\[2\]: client name 'alice' repeats pki_clients\[1\]"),
    ([{"name": "a", "subject": "CN=a/O=x"}], r"^pki_clients\[0\]: subject 'CN=a/O=x' must be in openssl form"),
    ([{"name": "a", "subject": "/CNa"}], r"subject '/CNa' must be in openssl form"),
    ([{"name": "a", "subject": ""}], r"subject '' must be in openssl form"),
    ([{"name": "a", "subject": 5}], r"subject 5 must be in openssl form"),
])
def test_normalize_clients_rejects(entries, needle):
    with pytest.raises(inv.PlanError, match=needle):
        inv.normalize_clients(entries)


def test_a_client_name_with_a_trailing_newline_is_refused():
    """BUG (reported, not fixed here): _CLIENT_NAME ends in '$', which also matches before a final newline, so
    'alice\\n' (e.g. a YAML block scalar) passes as a client name and becomes clients/alice\\n/ and /CN=alice\\n."""
    with pytest.raises(inv.PlanError, match=r"^pki_clients\[0\]: client name 'alice\\n' must be"):
        inv.normalize_clients(["alice\n"])


# --- pki_leaves: front doors and clients -----------------------------------------------------------------------------

@pytest.fixture
def doors():
    hostvars = {"gw1": {"gateway_https": True, "ansible_host": "10.0.0.5"}, "gw_2": {"gateway_https": "true"}}
    return inv.frontdoor_plan(hostvars, {"mcp_gateways": ["gw1", "gw_2"]})


def test_pki_leaves_front_doors_and_clients_after_the_gateway_and_plugins(doors):
    leaves = inv.pki_leaves(["A"], "/pki/", frontdoors=doors, clients=["alice", {"name": "bob", "subject": "/CN=b/O=x"}])
    assert [leaf["name"] for leaf in leaves] == ["gateway", "A", "frontdoor.gw1", "frontdoor.gw_2", "client.alice",
                                                 "client.bob"]
    assert leaves[2] == {"name": "frontdoor.gw1", "profile": "server", "subject": "/CN=gw1/O=MCPGateway/OU=Gateway",
                         "sans": BASE_SANS + ["DNS:gw1", "IP:10.0.0.5"], "key_path": "/pki/frontdoor/gw1/server.key",
                         "cert_path": "/pki/frontdoor/gw1/server.crt", "ca_copy_path": "/pki/frontdoor/gw1/ca.crt"}
    # An inventory name that is no DNS name is no CN either.
    assert leaves[3]["subject"] == "/CN=mcp-gateway/O=MCPGateway/OU=Gateway"
    assert leaves[3]["sans"] == BASE_SANS
    assert leaves[3]["key_path"] == "/pki/frontdoor/gw_2/server.key"
    assert leaves[4] == {"name": "client.alice", "profile": "client", "subject": "/CN=alice/O=MCPGateway/OU=Clients",
                         "sans": [], "key_path": "/pki/clients/alice/client.key",
                         "cert_path": "/pki/clients/alice/client.crt", "ca_copy_path": "/pki/clients/alice/ca.crt"}
    assert leaves[5]["subject"] == "/CN=b/O=x" and leaves[5]["cert_path"] == "/pki/clients/bob/client.crt"
    assert not any("force" in leaf or "keep_key" in leaf for leaf in leaves)


def test_pki_leaves_without_front_doors_or_clients_is_unchanged():
    assert [leaf["name"] for leaf in inv.pki_leaves(["A"], "/pki", frontdoors=[], clients=None)] == ["gateway", "A"]
    assert [leaf["name"] for leaf in inv.pki_leaves(["A"], "/pki", frontdoors=[], clients=[])] == ["gateway", "A"]


def test_pki_leaves_with_the_default_clients():
    """BUG (reported, not fixed here): the default clients=() reaches normalize_clients, which takes only a list or
    None: every call without clients= (test_inventory.py, the filter's documented example) raises
    'pki_clients: expected a list of client names or dicts {name, subject}, got tuple'."""
    try:
        leaves = inv.pki_leaves(["A"], "/pki")
    except inv.PlanError as exc:
        leaves = exc
    assert not isinstance(leaves, inv.PlanError), "pki_leaves(['A'], '/pki') raised: %s" % leaves
    assert [leaf["name"] for leaf in leaves] == ["gateway", "A"]


def test_pki_leaves_refuses_a_bad_client():
    with pytest.raises(inv.PlanError, match=r"^pki_clients\[1\]: client name 'a.b'"):
        inv.pki_leaves([], "/pki", clients=["ok", "a.b"])


def test_reissue_of_a_client_and_a_front_door(doors):
    leaves = inv.pki_leaves(["A"], "/pki", frontdoors=doors, clients=["alice", "bob"],
                            reissue=["client.alice", "frontdoor.gw1"])
    forced = {leaf["name"]: (leaf.get("force"), leaf.get("keep_key")) for leaf in leaves}
    assert forced == {"gateway": (None, None), "A": (None, None), "frontdoor.gw1": (True, False),
                      "frontdoor.gw_2": (None, None), "client.alice": (True, False), "client.bob": (None, None)}


@pytest.mark.parametrize("name", ["client.carol", "frontdoor.gw3", "alice", "gw1"])
def test_reissue_of_an_unknown_client_or_front_door_fails(doors, name):
    with pytest.raises(inv.PlanError, match=r"^reissue: %s is not a leaf of the tree" % name) as err:
        inv.pki_leaves(["A"], "/pki", frontdoors=doors, clients=["alice"], reissue=[name])
    assert str(err.value).endswith(": gateway, A, frontdoor.gw1, frontdoor.gw_2, client.alice)")


# --- leaf_passphrases --------------------------------------------------------------------------------------------------

def test_front_doors_have_the_gateway_passphrase_and_clients_the_client_passphrase(doors):
    leaves = inv.pki_leaves(["A"], "/pki", frontdoors=doors, clients=["alice"])
    assert inv.leaf_passphrases(leaves, "gw", "pl", "cl") == {
        "gateway": "gw", "A": "pl", "frontdoor.gw1": "gw", "frontdoor.gw_2": "gw", "client.alice": "cl"}
    assert inv.leaf_passphrases(leaves, "", "pl", "cl") == {"A": "pl", "client.alice": "cl"}
    assert inv.leaf_passphrases(leaves, "gw", "pl") == {"gateway": "gw", "A": "pl", "frontdoor.gw1": "gw",
                                                        "frontdoor.gw_2": "gw"}
    # Role pki's call for the client leaves alone (leaves.yml).
    clients = [leaf for leaf in leaves if leaf["name"].startswith("client.")]
    assert inv.leaf_passphrases(clients, client_passphrase="cl") == {"client.alice": "cl"}


# --- the front door's key, certificate and clients' CA in the gateway's TLS set (_gatewaystate) ------------------------

def test_validate_accepts_the_front_door_set(gateway):  # noqa: F811
    params = gateway()
    params["tls"].update(FRONT_DOOR)
    assert sorted(G.validate(params)) == sorted(entry["path"] for entry in params["files"])


@pytest.mark.parametrize("server, needle", [
    ({"server_key": SERVER_KEY, "clients_ca": CLIENTS_CA}, r"tls.server_key and tls.server_cert come together"),
    ({"server_cert": SERVER_CERT, "clients_ca": CLIENTS_CA}, r"tls.server_key and tls.server_cert come together"),
    (dict(FRONT_DOOR, server_cert=""), r"tls.server_key and tls.server_cert come together"),
    (dict(FRONT_DOOR, server_key=SERVER_CERT), r"tls.server_key is not a PEM private key"),
    (dict(FRONT_DOOR, server_key="garbage"), r"tls.server_key is not a PEM private key"),
    (dict(FRONT_DOOR, server_cert=SERVER_KEY + SERVER_CERT), r"tls.server_cert is not a PEM certificate without a key"),
    (dict(FRONT_DOOR, server_cert="garbage"), r"tls.server_cert is not a PEM certificate without a key"),
    (dict(FRONT_DOOR, clients_ca=""), r"tls.clients_ca comes with tls.server_cert"),
    ({"clients_ca": CLIENTS_CA}, r"tls.clients_ca comes with tls.server_cert"),
    (dict(FRONT_DOOR, clients_ca=KEY + CLIENTS_CA), r"tls.clients_ca is not a PEM certificate bundle without a key"),
    (dict(FRONT_DOOR, clients_ca="garbage"), r"tls.clients_ca is not a PEM certificate bundle without a key"),
])
def test_a_bad_front_door_set_is_refused_before_anything_is_written(gateway, server, needle):  # noqa: F811
    params = gateway()
    params["tls"].update(server)
    with pytest.raises(PKIError, match=needle):
        G.validate(params)
    with pytest.raises(PKIError, match=needle):
        G.converge(params, run_command)
    assert os.listdir(params["config_dir"]) == []


def _owner_mode(path):
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_the_front_door_joins_the_tls_set_key_0600_certificates_0644(gateway):  # noqa: F811
    params = gateway(uid=4321, gid=4322)  # the gateway's user and group (the client key's owner)
    etc = params["config_dir"]
    G.converge(params, run_command)
    without = os.readlink(etc + "/tls")
    assert sorted(os.listdir(etc + "/tls")) == ["ca.crt", "client.crt", "client.key"]
    params["tls"].update(FRONT_DOOR)
    result = G.converge(params, run_command)
    assert result["reasons"] == ["TLS files changed"] and os.readlink(etc + "/tls") != without
    assert sorted(os.listdir(etc + "/tls")) == ["ca.crt", "client.crt", "client.key", "clients-ca.crt", "server.crt",
                                                "server.key"]
    assert _owner_mode(etc + "/tls/server.key") == (4321, 4322, 0o600) == _owner_mode(etc + "/tls/client.key")
    assert _owner_mode(etc + "/tls/server.crt") == (0, 0, 0o644) == _owner_mode(etc + "/tls/client.crt")
    assert _owner_mode(etc + "/tls/clients-ca.crt") == (0, 0, 0o644)
    for name, text in (("server.key", SERVER_KEY), ("server.crt", SERVER_CERT), ("clients-ca.crt", CLIENTS_CA),
                       ("client.key", KEY), ("client.crt", CERT)):
        with open(etc + "/tls/" + name, encoding="utf-8") as handle:
            assert handle.read() == text, name
    assert not G.converge(params, run_command)["changed"]
    # Without the front door the next set has none of its files.
    params["tls"].update(server_key="", server_cert="", clients_ca="")
    assert G.converge(params, run_command)["reasons"] == ["TLS files changed"]
    assert sorted(os.listdir(etc + "/tls")) == ["ca.crt", "client.crt", "client.key"]
