"""A gateway this collection does not install (gateway_install: false; users run it in a container, or with their
own unit): a CA rotation must not move on while that gateway still runs with old files, or the next stage (plugin
servers presenting leaves of the new CA) cuts it off.

The molecule gateway host plays that gateway: the inventory says gateway_install: false, so the role leaves its
unit alone (as it would a container) and only deploys the files; the unit records at each start what it loaded
(/run/mcpgateway/loaded.sha256), which tells the test what the running gateway really uses. First without a restart
command: the rotation must stop at the gateway in stage trust, naming it and what to do. Then with
gateway_restart_command: the rotation resumes and completes, and the running gateway loaded the final files.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from molecule_support import GATEWAY, PKI, REPORT, controller_leaves, health_command, host, main_pid, playbook, served

# The env keys role gateway adds for a gateway it installs: the same values keep the env file as it is.
SERVICE_ENV = {"DATABASE_URL": "sqlite:////var/lib/mcpgateway/mcp.db", "CACHE_TYPE": "memory",
               "MCPGATEWAY_UI_ENABLED": "false", "MCPGATEWAY_ADMIN_API_ENABLED": "false"}
RECORD = "/var/lib/mcp-mtls/gateway-loaded.sha256"


@pytest.fixture()
def external(tmp_path):
    """external(**gateway_vars) -> ansible-playbook arguments of an inventory in which the gateway host is not
    installed by this collection (a later inventory source wins over molecule's host_vars)."""

    def make(**extra):
        folder = tmp_path / ("inventory-%d" % len(list(tmp_path.iterdir())))
        (folder / "host_vars").mkdir(parents=True)
        (folder / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {GATEWAY: None}}}))
        values = {"gateway_install": False, "gateway_env_extra": SERVICE_ENV, **extra}
        (folder / "host_vars" / f"{GATEWAY}.yml").write_text(yaml.safe_dump(values))
        return ["-i", str(folder)]

    return make


def runs_with_deployed_files(record):
    """Whether the sha256sum lines in RECORD match the gateway's deployed files."""
    return host(GATEWAY).run(f"cd /etc/mcpgateway && sha256sum --check --status {record}").rc == 0


def wait_healthy(seconds=120):
    gw = host(GATEWAY)
    deadline = time.monotonic() + seconds
    while gw.run(health_command(GATEWAY)).rc != 0:
        assert time.monotonic() < deadline, "the gateway did not answer /health"
        time.sleep(2)


def test_a_ca_rotation_never_moves_on_while_a_gateway_we_do_not_run_holds_old_files(external):
    gw = host(GATEWAY)
    before = served(every=True)
    assert before == controller_leaves()
    pid = main_pid(gw, "mcpgateway.service")

    # 1. Nobody restarts that gateway: the rotation stops at it in stage trust, names it and the way out.
    run = playbook("playbooks/rotate.yml", "-e", "rotate_force=ca", *external())
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    assert f"Rotation stopped in stage trust at {GATEWAY}" in out, out[-4000:]
    assert "gateway_runs_with_deployed_files" in out and "gateway_restart_command" in out, out[-4000:]
    assert json.loads((PKI / "ca/rotation.json").read_text())["phase"] == "trust"  # it did not move on
    report = json.loads(REPORT.read_text())
    assert report["status"] == "failed" and report["failed_host"] == GATEWAY, report
    # The plugins still serve their leaves of the old CA, and the gateway was left running as it was.
    assert served(every=True) == before == controller_leaves()
    assert main_pid(gw, "mcpgateway.service") == pid
    assert not gw.file(RECORD).exists

    # 2. With gateway_restart_command the rotation resumes where it stopped and completes; the gateway was restarted
    # by the command after each change and runs with the final files (its unit's own record says so).
    run = playbook("playbooks/rotate.yml", *external(gateway_restart_command=["systemctl", "restart", "mcpgateway.service"]))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert not (PKI / "ca/rotation.json").exists()
    assert json.loads(REPORT.read_text())["status"] == "ok"
    assert main_pid(gw, "mcpgateway.service") != pid
    assert runs_with_deployed_files(RECORD) and runs_with_deployed_files("/run/mcpgateway/loaded.sha256")
    wait_healthy()
    after = served(every=True)
    assert after == controller_leaves() and set(after.values()).isdisjoint(before.values())

    # 3. Back to a gateway this collection installs (the scenario's own inventory).
    run = playbook("site.yml")
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert served(every=True) == controller_leaves()
