"""playbooks/rotate.yml on the converged molecule hosts: rotations under load, a failed gate, resuming.

While a rotation runs, the gateway host runs `mcp-mtls-probe --loop` (cpex's own client, one long-lived
session per plugin, like the gateway) calling a hook on every plugin every 0.2 s; every failed call is
counted. The numbers are printed (pytest -s or the molecule log) and recorded in the README.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import time

from molecule_support import ADDRESS, CLIENT_LEAVES, FRONTDOOR_LEAVES, GATEWAY, GATEWAYS, PKI, PROBE, REPO, REPORT, controller_leaves, host
from molecule_support import fingerprint as controller_fingerprint
from molecule_support import playbook
from molecule_support import served as _served

PLUGIN_HOSTS = {"mcp-mol-plug1": ["MolGuard", "MolGrpc"], "mcp-mol-plug2": ["MolWords", "MolEcho"]}
PLUGINS = {name: h for h, names in PLUGIN_HOSTS.items() for name in names}
STOP, SUMMARY = "/tmp/rotate-loop.stop", "/tmp/rotate-loop.json"
# The availability bounds asserted for every plugin during a rollout. A call that takes longer than
# CALL_TIMEOUT_S fails, so a stall cannot pass as a slow success; GAP_BOUND_S bounds the longest time
# without a successful call. The plugin instances reload their TLS set (no restart: the PIDs are asserted);
# the bound is kept loose for the gateway's own restart and a loaded machine. Before hot reload, an instance
# restart was a stop (graceful, capped at 5 s) and a start (about 2.3 s to ready) while calls waited in the
# socket's backlog: 1.7-1.8 s alone on this machine, 4.7 s while another test suite loaded both cores. (The rare 6.3 s gaps on mcp-mol-plug2 in the
# first rotation were its stale MAC address after the network fault tests: ConnectTimeout on new connections,
# placed by the timeline below; molecule_support.forget_neighbours now flushes the neighbour tables.)
INTERVAL_S, CALL_TIMEOUT_S, GAP_BOUND_S = 0.2, 6.0, 12.0


# profile_tasks stamps every task with the wall clock: a failed call of the probe loop is then placed in the
# rotation's timeline (Loop.report), which is what a rare failure needs to be understood.
TASK_STAMP = re.compile(r"^\w+ (\d{2} \w+ \d{4})\s+(\d{2}:\d{2}:\d{2}) ([+-]\d{4}) \(")


def rotate(*args, timeout=2400):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", env["MOLECULE_INVENTORY_FILE"],
           str(REPO / "playbooks/rotate.yml"), *args]
    started = time.monotonic()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"rotate.yml {' '.join(args)}: rc {run.returncode} in {time.monotonic() - started:.0f} s")
    return run


def recap(out):
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", out, re.M)}


def changed_tasks(out):
    """The tasks that reported a change, with their hosts (for assertion messages)."""
    found, task = [], None
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: [") and task:
            found.append("%s: %s" % (task, line[len("changed: "):].split("]", 1)[0] + "]"))
    return found


def timeline(out):
    """[(epoch seconds, host-less task name)] of a rotate.yml run's tasks, from profile_tasks' stamps."""
    events, task = [], None
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [", "PLAY [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
            continue
        match = TASK_STAMP.match(line)
        if match and task:
            when = datetime.datetime.strptime(" ".join(match.groups()), "%d %B %Y %H:%M:%S %z")
            events.append((when.timestamp(), task))
            task = None
    return events


def placed(summary, out):
    """Each failed call of the loop SUMMARY with the rotation task that was running then (from OUT)."""
    start = datetime.datetime.strptime(summary["started_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    events = timeline(out)
    lines = []
    for name, plugin in summary["plugins"].items():
        for failure in plugin["failures"]:
            at = start + failure["t"]
            running = [task for when, task in events if when <= at + 0.5]
            lines.append("%s t=%.1f s (%s UTC) during %r: %s" % (
                name, failure["t"], time.strftime("%H:%M:%S", time.gmtime(at)), running[-1] if running else "?",
                failure["error"]))
    return "\n".join(lines)


def served():
    """sha256 of the certificate each plugin serves, as the gateway side sees it (every plugin must answer)."""
    return _served(every=True)


def pids():
    return {name: host(h).run(f"systemctl show -p MainPID --value mcp-plugin@{name}.service").stdout.strip()
            for name, h in PLUGINS.items()}


class Loop:
    """`mcp-mtls-probe --loop` on the gateway host, stopped with a stop file."""

    def __enter__(self):
        gw = host(GATEWAY)
        gw.run(f"rm -f {STOP} {SUMMARY}")
        subprocess.run(["podman", "exec", "-d", GATEWAY, "runuser", "-u", "mcpgateway", "--", PROBE, "--loop", "3600",
                        "--interval", str(INTERVAL_S), "--timeout", str(CALL_TIMEOUT_S), "--stop-file", STOP, "--summary", SUMMARY], check=True)
        deadline = time.monotonic() + 60
        while gw.run("pgrep -f -- '--loop 3600'").rc != 0:
            assert time.monotonic() < deadline, "the probe loop did not start"
            time.sleep(0.5)
        time.sleep(3)  # sessions open, first calls made
        return self

    def __exit__(self, *exc):
        gw = host(GATEWAY)
        gw.run(f"touch {STOP}")
        deadline = time.monotonic() + 90
        while gw.run(f"test -s {SUMMARY}").rc != 0 and time.monotonic() < deadline:
            time.sleep(1)
        out = gw.run(f"cat {SUMMARY}").stdout
        self.summary = json.loads(out) if out.strip() else None
        return False

    def report(self, what, out=""):
        """Print the figures, then assert, for every plugin: it was watched without a watcher error, calls
        were made all along (at least a quarter of the interval's pace), none failed, and the longest
        gap without a successful call stayed within GAP_BOUND_S."""
        assert self.summary, "the probe loop wrote no summary"
        total, plugins = self.summary["total"], self.summary["plugins"]
        gaps = {name: p["longest_gap_s"] for name, p in plugins.items()}
        print(f"{what}: {total['calls']} calls, {total['failed']} failed, longest gap {total['longest_gap_s']} s "
              f"(per plugin {gaps}), duration {self.summary['duration_s']} s")
        assert self.summary.get("error") is None and self.summary["timeout_s"] == CALL_TIMEOUT_S, self.summary
        assert sorted(plugins) == sorted(PLUGINS), f"the loop watched {sorted(plugins)}"
        least = int(self.summary["duration_s"] / INTERVAL_S / 4)
        for name, p in plugins.items():
            assert p["error"] is None, f"{what}: the watcher of {name} ended on an error: {p['error']}"
            assert p["calls"] >= least, f"{what}: {name} made {p['calls']} calls in {self.summary['duration_s']} s (< {least})"
            assert p["failed"] == 0, f"{what}: {name} failed {p['failed']} calls:\n{placed(self.summary, out)}"
            assert p["longest_gap_s"] <= GAP_BOUND_S, f"{what}: {name} went {p['longest_gap_s']} s without a successful call"


def test_leaf_rotation_when_certificates_enter_the_window_refuses_no_call():
    """Move the renewal window past the certificates' life (825 days left, a window of 850 days, new
    certificates of 900 days): every leaf is renewed (the CA certificate, 3650 days, is not due) and rolled
    out host by host while the gateway side keeps calling every plugin. The plugin instances reload: same
    processes before and after."""
    before = served()
    before_pids = pids()
    assert before == controller_leaves()
    with Loop() as loop:
        run = rotate("-e", "pki_cert_days=900", "-e", "pki_renew_before_days=850")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    loop.report("leaf rotation (window)", run.stdout)
    after = served()
    assert after == controller_leaves()
    assert all(after[name] != before[name] for name in PLUGINS), (before, after)
    assert pids() == before_pids, "a plugin instance restarted instead of reloading its TLS set"
    fingerprints = {name: [f["sha256"] for f in p["fingerprints"]] for name, p in loop.summary["plugins"].items()}
    for name in PLUGINS:  # the loop saw the old certificate, then the new one
        assert fingerprints[name][0] == before[name] and fingerprints[name][-1] == after[name], fingerprints[name]
    report = json.loads(REPORT.read_text())
    # Each stage's plan runs role pki: without a CA rotation the first plan (stage trust) already
    # renews what is due, and stage renew, the only active one, rolls it out.
    reissued = sorted({name for stage in report["stages"].values() for name in stage["reissued"]})
    # Every leaf of the tree enters the window: the plugins, the gateway, its front door and the MCP clients.
    expected = [*PLUGINS, "gateway", *FRONTDOOR_LEAVES, *CLIENT_LEAVES]
    assert report["status"] == "ok" and reissued == sorted(expected), report["stages"]
    assert [s for s, stage in report["stages"].items() if stage["active"]] == ["renew"], report["stages"]
    assert report["stages"]["renew"]["hosts"] == [*PLUGIN_HOSTS, *GATEWAYS]


def prom(path):
    """The samples of a Prometheus textfile: metric (with its labels) -> value."""
    samples = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            metric, value = line.rsplit(" ", 1)
            samples[metric] = float(value)
    return samples


def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def broken_start(name, plugin, down=False):
    """Make plugin's instance on host name fail to take a new TLS set: a drop-in makes its reload and its start fail
    (ExecReload=/bin/false, ExecStartPre=/bin/false), and with DOWN it is stopped too (a plugin that does not answer:
    its start fails); the function returned removes the fault."""
    dropin = f"/etc/systemd/system/mcp-plugin@{plugin}.service.d"
    assert host(name).run(f"mkdir -p {dropin} && printf '[Service]\\nExecStartPre=/bin/false\\nExecReload=\\n"
                          f"ExecReload=/bin/false\\n' > {dropin}/fault.conf && systemctl daemon-reload").rc == 0
    if down:
        assert host(name).run(f"systemctl stop mcp-plugin@{plugin}.socket mcp-plugin@{plugin}.service").rc == 0
    return lambda: host(name).run(f"rm -rf {dropin} && systemctl daemon-reload")


def test_failed_gate_stops_the_rollout_and_a_rerun_resumes():
    """A plugin host that cannot start its instance fails its gate: the rollout stops there, the hosts
    after it keep serving their old certificates, the report names the host; after the fix a plain
    rerun (no force) finishes the rollout."""
    broken, untouched = "mcp-mol-plug1", "mcp-mol-plug2"
    repair = broken_start(broken, "MolGuard")
    before = served()
    before_pids = pids()
    gw_cert = host(GATEWAY).run("sha256sum /etc/mcpgateway/tls/client.crt").stdout
    textfile = PKI.parent / "rotate.prom"
    last_success = json.loads(REPORT.read_text())["last_success"]  # the earlier rotations of this module ended ok
    assert last_success
    try:
        run = rotate("-e", "rotate_force=leaves", "-e", f"rotate_textfile={textfile}")
        out = run.stdout + run.stderr
        assert run.returncode != 0
        assert f"Rotation stopped in stage renew at {broken}" in out, out[-4000:]
        report = json.loads(REPORT.read_text())
        assert report["status"] == "failed" and report["failed_host"] == broken and report["error"], report
        # For monitoring: the failed status, and the time of the last run that ended ok, kept from before.
        assert report["last_success"] == last_success
        metrics = prom(textfile)
        assert metrics['mcp_mtls_rotation_status{status="failed"}'] == 1 == metrics["mcp_mtls_rotation_failed_hosts"]
        assert metrics['mcp_mtls_rotation_status{status="ok"}'] == 0 == metrics['mcp_mtls_rotation_status{status="running"}']
        assert metrics["mcp_mtls_rotation_last_success_timestamp_seconds"] == epoch(last_success)
        assert metrics["mcp_mtls_rotation_last_run_timestamp_seconds"] == epoch(report["updated"]) > epoch(last_success)
        # check.yml: the tree is fine (its certificates are new), but with check_hosts it sees from each gateway host
        # the plugins that still serve their old certificates, and fails naming them.
        assert playbook("playbooks/check.yml").returncode == 0
        check = playbook("playbooks/check.yml", "-e", "check_hosts=true", "-e", f"check_textfile={PKI.parent / 'check.prom'}")
        assert check.returncode != 0, check.stdout[-3000:]
        for gateway in GATEWAYS:
            for name in PLUGIN_HOSTS[untouched]:
                said = check.stdout + check.stderr
                assert re.search(rf"seen from {gateway}: .*{name} serves the certificate sha256", said), said[-3000:]
            assert prom(PKI.parent / "check.prom")[f'mcp_mtls_served_certificate_problems{{gateway="{gateway}"}}'] == 3
        assert report["stages"]["renew"]["hosts"] == []
        # The hosts after the failed one were not touched: same processes, same certificates.
        now = pids()
        for name in PLUGIN_HOSTS[untouched]:
            assert now[name] == before_pids[name]
        still = {name: sha for name, sha in served_partial().items() if name in PLUGIN_HOSTS[untouched]}
        new = controller_leaves()
        for name in PLUGIN_HOSTS[untouched]:
            assert still[name] == before[name] != new[name]
        assert host(GATEWAY).run("sha256sum /etc/mcpgateway/tls/client.crt").stdout == gw_cert
    finally:
        repair()
    rerun = rotate("-e", f"rotate_textfile={textfile}")
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    assert served() == controller_leaves()
    report = json.loads(REPORT.read_text())
    assert report["status"] == "ok" and report["last_success"] == report["updated"], report
    metrics = prom(textfile)
    assert metrics['mcp_mtls_rotation_status{status="ok"}'] == 1 and metrics["mcp_mtls_rotation_failed_hosts"] == 0
    check = playbook("playbooks/check.yml", "-e", "check_hosts=true")
    said = " ".join(check.stdout.split())  # the callback wraps long messages (no quote in the text: YAML would double it)
    assert check.returncode == 0, check.stdout[-3000:]
    for gateway in GATEWAYS:
        assert f"seen from {gateway}: every plugin serves the certificate the controller holds" in said, check.stdout[-3000:]
    assert metrics["mcp_mtls_rotation_last_success_timestamp_seconds"] == epoch(report["updated"])


def test_a_batch_within_the_failure_threshold_rolls_out_past_a_failed_host():
    """rotate_batch=2 (both plugin hosts at once) with rotate_max_fail_percentage=50: the first host fails its
    gate (its instance is down and cannot start), the other one of the batch is rolled out all the same; the gateway is not rolled onto a fleet with
    a plugin that does not answer (its gate fails and stops the run); the report names both failures; after
    the fix a plain rerun finishes."""
    broken, other = "mcp-mol-plug1", "mcp-mol-plug2"
    before = served()
    repair = broken_start(broken, "MolGuard", down=True)
    try:
        run = rotate("-e", "rotate_force=leaves", "-e", "rotate_batch=2", "-e", "rotate_max_fail_percentage=50",
                     "-e", "gateway_start_timeout=20")
        out = run.stdout + run.stderr
        assert run.returncode != 0
        assert f"Rotation failed in stage renew at {broken}" in out and "The rollout goes on without it" in out, \
            out[-4000:]
        assert f"Rotation stopped in stage renew at {GATEWAY}" in out, out[-4000:]
        report = json.loads(REPORT.read_text())
        assert report["status"] == "failed" and report["failed_host"] == broken, report
        # failed_host is the first failure of the run; failed_hosts (host -> error) has every one.
        assert set(report["failed_hosts"]) == {broken, GATEWAY} and all(report["failed_hosts"].values()), report
        assert str(report["batch"]) == "2" and str(report["max_fail_percentage"]) == "50", report
        assert report["stages"]["renew"]["hosts"] == [other], report["stages"]
        # The other host of the batch serves its new certificates.
        new = controller_leaves()
        now = served_partial()
        for name in PLUGIN_HOSTS[other]:
            assert now[name] == new[name] != before[name], (name, now, new, before)
    finally:
        repair()
    rerun = rotate()
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    assert served() == controller_leaves()
    report = json.loads(REPORT.read_text())
    assert report["status"] == "ok" and report["failed_hosts"] == {} and report["failed_host"] is None, report


def served_partial():
    """Like served(), but tolerates plugins that are down."""
    return _served()


def test_ca_rotation_with_overlapping_trust_refuses_no_call_and_is_idempotent():
    """rotate_force=ca: phase trust (old + new CA everywhere), phase reissue (leaves from the new CA),
    promotion (old CA retired), then bundles with the new CA only; calls never fail on the way, and the plugin
    instances take each stage by reloading (same processes)."""
    old_ca = controller_fingerprint(PKI / "ca/ca.crt")
    before_pids = pids()
    with Loop() as loop:
        run = rotate("-e", "rotate_force=ca")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    loop.report("CA rotation", run.stdout)
    assert pids() == before_pids, "a plugin instance restarted instead of reloading its TLS set"
    new_ca = controller_fingerprint(PKI / "ca/ca.crt")
    assert new_ca != old_ca
    assert not (PKI / "ca/rotation.json").exists() and not (PKI / "ca/next").exists()
    retired = list((PKI / "ca/retired").glob("*/ca.crt"))
    assert old_ca in [controller_fingerprint(p) for p in retired]
    report = json.loads(REPORT.read_text())
    assert report["status"] == "ok"
    assert [report["stages"][s]["ca_phase"] for s in ("trust", "reissue")] == ["trust", "reissue"]
    assert all(report["stages"][s]["hosts"] == [*PLUGIN_HOSTS, *GATEWAYS] for s in ("trust", "reissue", "renew")), report["stages"]
    # Every bundle holds the new CA only, and every served certificate chains to it, strictly.
    new_pem = (PKI / "ca/ca.crt").read_text().strip()
    bundles = [(GATEWAY, "/etc/mcpgateway/tls/ca.crt")] + [
        (h, f"/etc/mcp-plugins/{n}/tls/ca.crt") for n, h in PLUGINS.items()]
    for name, path in bundles:
        assert host(name).run(f"cat {path}").stdout.strip() == new_pem, (name, path)
    gw = host(GATEWAY)
    for name in PLUGINS:
        chain = gw.run(f"openssl s_client -connect {ADDRESS[name]}:{8100 if name == 'MolEcho' else 8000} "
                       "-cert /etc/mcpgateway/tls/client.crt -key /etc/mcpgateway/tls/client.key "
                       "-CAfile /etc/mcpgateway/tls/ca.crt -verify_return_error -x509_strict </dev/null")
        assert chain.rc == 0 and "Verify return code: 0 (ok)" in chain.stdout, chain.stdout[-800:] + chain.stderr[-800:]
    assert served() == controller_leaves()
    again = rotate()
    assert again.returncode == 0, again.stdout[-3000:]
    changes = recap(again.stdout)
    assert set(changes) >= {GATEWAY, *PLUGIN_HOSTS} and not any(changes.values()), (changes, changed_tasks(again.stdout))


def test_a_tls_set_that_does_not_load_is_refused_and_the_previous_one_keeps_serving():
    """A TLS set whose key is not the certificate's (put in place by hand, as a broken deployment would) is
    refused by the reload: systemctl reload fails, the journal says why, the instance keeps its process and
    serves the certificate it served. site.yml then puts the deployed set back, by a reload."""
    name, plug = "MolWords", host("mcp-mol-plug2")
    before_pid, before = pids()[name], served()[name]
    folder = f"/etc/mcp-plugins/{name}"
    assert plug.run(f"cd {folder} && old=$(readlink tls) && mkdir tls.d/broken && cp -a $old/. tls.d/broken/ "
                    "&& cp -a ../MolEcho/tls/server.key tls.d/broken/server.key && ln -sfn tls.d/broken tls").rc == 0
    since = plug.run("date +%s").stdout.strip()
    refused = plug.run(f"systemctl reload mcp-plugin@{name}.service")
    assert refused.rc != 0, refused.stdout + refused.stderr
    journal = plug.run(f"journalctl -u mcp-plugin@{name}.service --since @{since} -o cat --no-pager").stdout
    assert "TLS reload refused, still serving the previous set: cannot use key" in journal, journal[-2000:]
    assert plug.run(f"systemctl is-active mcp-plugin@{name}.service").stdout.strip() == "active"
    assert pids()[name] == before_pid and served()[name] == before
    run = playbook("site.yml", "--limit", "mcp-mol-plug2")
    assert run.returncode == 0, run.stdout[-3000:]
    assert plug.run(f"readlink {folder}/tls").stdout.strip() not in ("", "tls.d/broken")
    assert pids()[name] == before_pid and served()[name] == before == controller_leaves()[name]
