"""Day-2 workflows on the converged molecule hosts, as an operator runs them: add a plugin (and let the nightly
rotate.yml be the first run to see it), move it to another host, remove it, and try to empty a host by mistake.

Each step changes the inventory the way a user edits host_vars (a second inventory source with host_vars of its
own, which wins over molecule's) and runs the real playbook over ssh with become. The order of what happens on
different hosts is read from their journals (the containers share one clock): a gateway must restart without a
plugin before that plugin's instance stops, or the gateway's calls to it fail in between.

Runs last (file name): it leaves the plan as molecule.yml has it, but plug1's venv keeps an extra package.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from molecule_support import GATEWAY, GATEWAYS, PKI, controller_leaves, fingerprint, host, main_pid, playbook, recap, served

MOLECULE_YML = Path(__file__).resolve().parents[1] / "molecule.yml"
NEW = "MolNew"
FIRST, SECOND = "mcp-mol-plug1", "mcp-mol-plug2"


def declared_plugins():
    """host -> plugin_server_plugins as molecule.yml declares them."""
    host_vars = yaml.safe_load(MOLECULE_YML.read_text())["provisioner"]["inventory"]["host_vars"]
    return {name: copy.deepcopy(host_vars[name]["plugin_server_plugins"]) for name in (FIRST, SECOND)}


def new_plugin(port, address):
    return {"name": NEW, "port": port, "host": address, "kind": "mcp_lab_plugins.word_filter.WordFilterPlugin",
            "hooks": ["tool_pre_invoke"], "mode": "transform", "packages": ["mcp-lab-plugins==0.1.0"],
            "config": {"words": {"shout": "say"}}}


@pytest.fixture()
def edit(tmp_path):
    """edit({host: plugins}) -> the ansible-playbook arguments of an inventory in which those hosts' host_vars
    set plugin_server_plugins so (a later inventory source wins over molecule's host_vars)."""

    def make(plugins_by_host):
        folder = tmp_path / ("inventory-%d" % len(list(tmp_path.iterdir())))
        (folder / "host_vars").mkdir(parents=True)
        (folder / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {h: None for h in plugins_by_host}}}))
        for name, plugins in plugins_by_host.items():
            (folder / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump({"plugin_server_plugins": plugins}))
        return ["-i", str(folder)]

    return make


def instance_files(h, name):
    """What of plugin NAME's instance is on host h: whether its socket, service and health timer are active and
    enabled (template instances: systemd knows every name, so what counts is their state), its config folder and
    its socket drop-in."""
    units = f"mcp-plugin@{name}.socket mcp-plugin@{name}.service mcp-plugin-health@{name}.timer"
    active = h.run(f"systemctl is-active {units}").stdout.split()
    enabled = [state == "enabled" for state in h.run(f"systemctl is-enabled {units}").stdout.split()]
    return {"active": active, "enabled": enabled, "folder": h.file(f"/etc/mcp-plugins/{name}").exists,
            "dropin": h.file(f"/etc/systemd/system/mcp-plugin@{name}.socket.d").exists}


RUNNING = {"active": ["active"] * 3, "enabled": [True] * 3, "folder": True, "dropin": True}
GONE = {"active": ["inactive"] * 3, "enabled": [False] * 3, "folder": False, "dropin": False}


def journal_times(h, unit, prefix):
    """Realtime stamps (µs) of the journal messages of UNIT on host h that start with PREFIX (systemd's own)."""
    out = h.run(f"journalctl -o json --no-pager -u {unit}").stdout
    entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [int(e["__REALTIME_TIMESTAMP"]) for e in entries if str(e.get("MESSAGE", "")).startswith(prefix)]


def gateway_events(gateway, since_us, prefix):
    return [t for t in journal_times(host(gateway), "mcpgateway.service", prefix) if t > since_us]


def assert_dropped_before_stopped(old_host, since_us):
    """Every gateway restarted (with a plugins.yaml without NEW, or with its new address) after SINCE_US, one at a
    time (the next one stopped only after the previous one started again), and NEW's instance on OLD_HOST stopped for
    good (its last stop: the instance may have restarted earlier in the run) only after the last gateway started."""
    previous_start = since_us
    for gateway in GATEWAYS:
        stops, starts = gateway_events(gateway, since_us, "Stopping "), gateway_events(gateway, since_us, "Started ")
        assert stops and starts, (gateway, stops, starts)
        assert min(stops) > previous_start, f"{gateway} stopped at {min(stops)} µs, before the previous gateway was back"
        previous_start = max(starts)
    stops = [t for t in journal_times(host(old_host), f"mcp-plugin@{NEW}.service", "Stopped ") if t > since_us]
    assert stops, stops
    assert previous_start < max(stops), (
        f"{NEW} on {old_host} stopped for good at {max(stops)} µs, before the last gateway restarted at {previous_start} µs")


def now_us(h):
    return int(h.run("date +%s%6N").stdout.strip())


def test_add_move_and_remove_a_plugin(edit):
    plan = declared_plugins()
    gw = host(GATEWAY)

    # 1. Add: MolNew on plug1 (dialled at the plug1 alias mol-molguard). The nightly rotate.yml is the first run
    # to see it: the plugin host's gate must not probe it against the gateway's old plugins.yaml; the gateway's
    # rollout adds it, calls it and restarts with it.
    added = edit({FIRST: plan[FIRST] + [new_plugin(8200, "mol-molguard")]})
    run = playbook("playbooks/rotate.yml", *added)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    leaves = controller_leaves() | {NEW: fingerprint(PKI / f"plugins/{NEW}/server.crt")}
    assert served(every=True) == leaves
    assert f"name: {NEW}" in gw.file("/etc/mcpgateway/plugins.yaml").content_string
    assert instance_files(host(FIRST), NEW) == RUNNING

    # 2. Move: MolNew to plug2 (dialled at mol-molwords). site.yml starts it there, the gateway switches to the
    # new address, and only then is the instance on plug1 stopped and removed.
    since = now_us(gw)
    old_cert = leaves[NEW]
    moved = edit({FIRST: plan[FIRST], SECOND: plan[SECOND] + [new_plugin(8200, "mol-molwords")]})
    run = playbook("site.yml", *moved)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert instance_files(host(FIRST), NEW) == GONE
    assert instance_files(host(SECOND), NEW) == RUNNING
    leaves = controller_leaves() | {NEW: fingerprint(PKI / f"plugins/{NEW}/server.crt")}
    assert leaves[NEW] != old_cert  # its SANs name the new address
    assert served(every=True) == leaves
    assert "mol-molwords:8200" in gw.file("/etc/mcpgateway/plugins.yaml").content_string
    assert_dropped_before_stopped(FIRST, since)
    # Still in the plan: its certificates stay where they are.
    assert not list((PKI / "retired/plugins").glob(f"*/{NEW}"))

    # 3. Remove: the gateway drops it first, then the instance stops; its certificates are retired (moved, with
    # the key still 0600), and check.yml no longer reports them.
    since = now_us(gw)
    gateway_pids = [main_pid(host(g), "mcpgateway.service") for g in GATEWAYS]
    run = playbook("site.yml", *edit({SECOND: plan[SECOND]}))
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert all(main_pid(host(g), "mcpgateway.service") != pid for g, pid in zip(GATEWAYS, gateway_pids))
    assert instance_files(host(SECOND), NEW) == GONE
    assert f"name: {NEW}" not in gw.file("/etc/mcpgateway/plugins.yaml").content_string
    assert served(every=True) == controller_leaves()
    assert_dropped_before_stopped(SECOND, since)
    assert not (PKI / f"plugins/{NEW}").exists()
    retired = list((PKI / "retired/plugins").glob(f"*/{NEW}"))
    assert len(retired) == 1 and fingerprint(retired[0] / "server.crt") == leaves[NEW], retired
    assert oct((retired[0] / "server.key").stat().st_mode & 0o777) == "0o600"
    check = playbook("playbooks/check.yml")
    assert check.returncode == 0 and NEW not in check.stdout, check.stdout[-3000:]

    # A rerun has nothing left to do.
    run = playbook("site.yml")
    assert run.returncode == 0 and all(h["changed"] == 0 for h in recap(run.stdout).values()), run.stdout[-4000:]


def test_an_empty_plugin_list_does_not_empty_the_host(edit):
    """An empty (or misnamed) host_vars file must not stop every instance of a host: site.yml refuses, names the
    host and the way to do it on purpose, and changes nothing."""
    h = host(FIRST)
    pid = main_pid(h, "mcp-plugin@MolGuard.service")
    gateway_pid = main_pid(host(GATEWAY), "mcpgateway.service")
    run = playbook("site.yml", *edit({FIRST: []}))
    out = run.stdout + run.stderr
    assert run.returncode == 2, out[-4000:]
    assert f"host {FIRST}: plugin_server_plugins is empty" in out and "plugin_server_remove_all: true" in out, out[-4000:]
    assert all(hosts["changed"] == 0 for hosts in recap(run.stdout).values()), recap(run.stdout)
    assert main_pid(h, "mcp-plugin@MolGuard.service") == pid
    assert main_pid(host(GATEWAY), "mcpgateway.service") == gateway_pid
    assert os.path.isdir(PKI / "plugins/MolGuard")


def test_every_gateway_gates_the_plugin_hosts():
    """A rollout's gate on a plugin host calls its plugins from each gateway host, not only the first: a plugin that
    the second gateway cannot reach (its name points elsewhere there) stops the rotation, naming that gateway."""
    second = host(GATEWAYS[1])
    assert second.run("cp /etc/hosts /root/hosts.before && echo '127.0.0.2 mol-MolWords mol-molwords' >> /etc/hosts").rc == 0
    try:
        assert "MolWords" in served()  # the first gateway still reaches it
        run = playbook("playbooks/rotate.yml")
        out = run.stdout + run.stderr
        assert run.returncode != 0, out[-4000:]
        assert f"gate failed on mcp-mol-plug2 (probed from {GATEWAYS[1]}): MolWords" in out, out[-4000:]
        assert "Rotation stopped in stage renew at mcp-mol-plug2" in out, out[-4000:]
    finally:
        second.run("cp /root/hosts.before /etc/hosts")
