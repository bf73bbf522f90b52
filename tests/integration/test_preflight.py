"""Bad inventories fail in preflight with a message naming the host, the plugin and the fix."""

from __future__ import annotations

import pytest
import yaml

from integration_support import PLAYBOOKS, run_playbook

GOOD = {"name": "Alpha", "port": 8000, "kind": "pkg.mod.Cls", "hooks": ["tool_pre_invoke"]}


def inventory(tmp_path, plugins_by_host):
    hosts = {h: {"ansible_connection": "local", "plugin_server_plugins": p} for h, p in plugins_by_host.items()}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mcp_plugin_servers": {"hosts": hosts}}}}))
    return path


def make_tree(tmp_path, names):
    settings = {"pki_dir": str(tmp_path / "certs/mcp"), "pki_plugins": names, "pki_key_type": "ecdsa"}
    res = run_playbook(PLAYBOOKS / "pki.yml", settings)
    assert res.rc == 0, res.out


def preflight(tmp_path, plugins_by_host, **settings):
    return run_playbook(PLAYBOOKS / "plugin_server_preflight.yml",
                        dict(settings, plugin_server_pki_dir=str(tmp_path / "certs/mcp")),
                        inventory=inventory(tmp_path, plugins_by_host))


def test_good_inventory_passes(tmp_path):
    make_tree(tmp_path, ["Alpha", "Beta"])
    res = preflight(tmp_path, {"h1": [GOOD, dict(GOOD, name="Beta", port=8001)]})
    assert res.rc == 0, res.out


@pytest.mark.parametrize("plugins, needles", [
    ([{k: v for k, v in GOOD.items() if k != "port"}], ["host h1, plugin Alpha", "integer port", "Fix the entry"]),
    ([GOOD, dict(GOOD, name="Beta")], ["host h1, plugin Alpha", "also used by", "Beta"]),
    ([GOOD, dict(GOOD, name="Beta", port=9000)], ["host h1, plugin Alpha", "health port", "Beta"]),
    ([dict(GOOD, name="../etc")], ["host h1, plugin ../etc", "certificate"]),
    ([dict(GOOD, name="bad name")], ["host h1, plugin bad name"]),
    ([GOOD, dict(GOOD, port=8001)], ["host h1", "appears twice", "Alpha"]),
    ([dict(GOOD, transport="ftp")], ["host h1, plugin Alpha", "transport must be http (the default)", '"ftp"']),
    ([dict(GOOD, transport="grpc", url="https://alpha:8000/mcp")], ["host h1, plugin Alpha", "A gRPC plugin has no url"]),
])
def test_bad_inventory_names_host_plugin_and_fix(tmp_path, plugins, needles):
    make_tree(tmp_path, ["Alpha", "Beta"])
    res = preflight(tmp_path, {"h1": plugins})
    assert res.rc != 0
    for needle in needles:
        assert needle in res.out, res.out


def test_missing_cert_tree_says_run_the_pki_role(tmp_path):
    res = preflight(tmp_path, {"h2": [GOOD]})
    assert res.rc != 0
    assert "host h2, plugin Alpha: missing" in res.out and "Run the pki role first" in res.out, res.out


def test_a_grpc_plugin_refuses_a_tls_1_3_minimum_that_grpcio_cannot_enforce(tmp_path):
    make_tree(tmp_path, ["Alpha"])
    grpc = dict(GOOD, transport="grpc")
    assert preflight(tmp_path, {"h1": [grpc]}).rc == 0
    res = preflight(tmp_path, {"h1": [grpc]}, plugin_server_tls_min_version="TLSv1.3")
    assert res.rc != 0
    assert "host h1, plugin Alpha" in res.out and "needs plugin_server_tls_min_version TLSv1.2" in res.out, res.out
    # The same minimum is fine for an HTTP plugin (the launcher's own TLS context enforces it).
    assert preflight(tmp_path, {"h1": [GOOD]}, plugin_server_tls_min_version="TLSv1.3").rc == 0
