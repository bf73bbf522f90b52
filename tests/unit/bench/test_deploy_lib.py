"""bench/deploy_lib.py: shapes, generated inventories, round-trip counting and the summary."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))
import deploy_lib as lib  # noqa: E402


@pytest.mark.parametrize("text, hosts, plugins", [("lab", 0, 0), ("1x10", 1, 10), ("10x2", 10, 2)])
def test_shapes(text, hosts, plugins):
    shape = lib.Shape.parse(text)
    assert (shape.hosts, shape.plugins, str(shape)) == (hosts, plugins, text)


@pytest.mark.parametrize("text", ["", "x", "0x1", "1x0", "201x1", "1x51", "2x2x2", "lab2"])
def test_bad_shapes_name_the_fix(text):
    with pytest.raises(ValueError, match="shape"):
        lib.Shape.parse(text)


def test_generated_inventory_has_unique_addresses_ports_and_valid_plugin_names(tmp_path):
    (tmp_path / "inventories" / "lab" / "group_vars").mkdir(parents=True)
    (tmp_path / "inventories" / "lab" / "group_vars" / "all.yml").write_text("x: 1\n")
    root = lib.write_inventory(lib.Shape.parse("3x4"), tmp_path)
    assert root == tmp_path / ".build" / "bench-3x4" and (root / "group_vars" / "all.yml").exists()
    addresses, plugin_hosts = lib.inventory_hosts(root)
    assert plugin_hosts == ["mcp-bplug01", "mcp-bplug02", "mcp-bplug03"]
    assert addresses == {"10.89.210.11": "mcp-bgw1", "10.89.210.21": "mcp-bplug01", "10.89.210.22": "mcp-bplug02",
                         "10.89.210.23": "mcp-bplug03"}
    names = []
    for host in plugin_hosts:
        plugins = yaml.safe_load((root / "host_vars" / (host + ".yml")).read_text())["plugin_server_plugins"]
        ports = [p["port"] for p in plugins]
        assert len(plugins) == 4 and len(set(ports)) == 4
        names += [p["name"] for p in plugins]
    from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import name_problem
    assert len(set(names)) == 12 and not [n for n in names if name_problem(n)]


def test_the_lab_shape_uses_the_lab_inventory():
    root = lib.write_inventory(lib.Shape.parse("lab"), REPO)
    addresses, plugin_hosts = lib.inventory_hosts(root)
    assert root == REPO / "inventories" / "lab" and plugin_hosts == ["mcp-plug1", "mcp-plug2"]
    assert addresses["10.89.210.11"] == "mcp-gw1"


def test_the_ssh_wrapper_logs_tool_and_target_only_and_runs_the_real_tool(tmp_path, monkeypatch):
    counter = lib.SshCounter(tmp_path)
    counter.reset()
    env = counter.environ(dict(os.environ))
    ssh = env["ANSIBLE_SSH_EXECUTABLE"]
    # `ssh -V ...` runs the real ssh, which prints its version and exits before it connects anywhere.
    out = subprocess.run([ssh, "-V", "-o", "ControlPath=/tmp/x", "10.89.210.21", "/bin/sh -c 'secret'"],
                         capture_output=True, text=True, check=False)
    assert "OpenSSH" in out.stderr
    assert counter.read() == ["ssh 10.89.210.21"]
    assert lib.calls_per_host(counter.read() + ["sftp 10.89.210.99", "ssh ?"], {"10.89.210.21": "h1"}) == \
        {"?": 2, "h1": 1}


RECAP = """
PLAY RECAP *********
mcp-gw1                    : ok=40   changed=0    unreachable=0    failed=0    skipped=3    rescued=0    ignored=0
mcp-plug1                  : ok=20   changed=1    unreachable=0    failed=0    skipped=3    rescued=0    ignored=0
"""


def test_recap_and_noop_rule():
    recap = lib.parse_recap(RECAP)
    assert recap["mcp-plug1"] == {"ok": 20, "changed": 1, "unreachable": 0, "failed": 0}
    assert not lib.noop_ok({"name": "no-op site", "recap": recap})
    assert lib.noop_ok({"name": "first site.yml", "recap": recap})
    assert not lib.noop_ok({"name": "no-op site", "recap": {}})  # no recap: the run did not finish


def test_summary_medians_ratios_and_calls_and_markdown(tmp_path):
    def run(name, seconds, calls, changed=0):
        return {"name": name, "seconds": seconds, "rc": 0, "calls": calls,
                "recap": {"p1": {"ok": 1, "changed": changed, "unreachable": 0, "failed": 0}}}
    runs = [run("empty play", 2.0, {"p1": 2, "gw": 2}), run("no-op site", 10.0, {"p1": 11, "p2": 9, "gw": 30}),
            run("empty play", 4.0, {"p1": 2, "gw": 2}), run("no-op site", 14.0, {"p1": 13, "p2": 9, "gw": 30}),
            run("no-op site", 12.0, {"p1": 12, "p2": 9, "gw": 30}, changed=1)]
    rows = {row["name"]: row for row in lib.summarize(runs, ["p1", "p2"])}
    assert rows["empty play"]["median_s"] == 3.0 and rows["no-op site"]["median_s"] == 12.0
    assert rows["no-op site"]["ratio"] == 4.0 and rows["no-op site"]["calls_max_plugin_host"] == 12
    assert rows["no-op site"]["calls_other_hosts"] == 30 and rows["no-op site"]["ok"] is False
    results = {"started": "now", "reps": 3, "machine": {"cpus": 2, "load_start": 1.0}, "runs": runs,
               "plugin_hosts": ["p1", "p2"]}
    lib.write_results(results, tmp_path / "out", lib.Shape.parse("2x1"))
    text = (tmp_path / "out.md").read_text()
    assert "| no-op site | 3 | 12.0 (10.0-14.0) | 4.0x | 12 | 30 | - | NO |" in text


def test_a_forced_rotation_counts_the_probe_loop(tmp_path):
    loop = {"total": {"calls": 500, "failed": 0, "longest_gap_s": 2.6}, "error": None,
            "plugins": {"A": {"error": None}, "B": {"error": None}}}
    forced = {"name": "rotate_force=ca", "seconds": 120.0, "rc": 0, "calls": {"p1": 40, "gw": 60},
              "recap": {"p1": {"ok": 1, "changed": 5, "unreachable": 0, "failed": 0}}, "probe": lib.probe_figures(loop)}
    assert lib.noop_ok(forced)  # changes are expected; what counts is the loop
    lost = dict(forced, probe=lib.probe_figures(dict(loop, total={"calls": 500, "failed": 2, "longest_gap_s": 7.1})))
    assert not lib.noop_ok(lost)
    assert not lib.noop_ok(dict(forced, probe=lib.probe_figures(None)))  # no summary: nothing was measured
    broken = dict(loop, plugins={"A": {"error": "watcher died"}, "B": {"error": None}})
    assert lib.probe_figures(broken)["error"] == "watcher died" and not lib.noop_ok(dict(forced, probe=lib.probe_figures(broken)))
    results = {"started": "now", "reps": 1, "machine": {"cpus": 2, "load_start": 1.0}, "plugin_hosts": ["p1"],
               "runs": [{"name": "empty play", "seconds": 2.0, "rc": 0, "calls": {}, "recap": {}}, forced, lost]}
    lib.write_results(results, tmp_path / "out", lib.Shape.parse("1x1"))
    assert "| rotate_force=ca | 2 | 120.0 (120.0-120.0) | 60.0x | 40.0 | 60.0 | 2, 7.1 s | NO |" in (tmp_path / "out.md").read_text()
