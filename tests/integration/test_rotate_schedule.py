"""Role rotate_schedule in cron mode on this machine, every path in tmp_path, and its wrapper run for real.

The scheduled playbook is playbooks/check.yml against a PKI tree made by role pki: it passes, and it
fails with `-e check_threshold_days=100000` (every certificate "expiring").
The folder that tells the role whether systemd runs the machine (rotate_schedule_systemd_marker) is one in
tmp_path that does not exist, so method auto falls back to cron here whatever runs this machine.
systemd mode needs systemd as PID 1: tests/unit/roles/test_rotate_schedule_units.py checks its units and
how auto picks the method, the molecule scenario installs and runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from integration_support import PLAYBOOKS, REPO, run_playbook


SCHEDULE = REPO / "playbooks" / "schedule_rotation.yml"
CHECK = REPO / "playbooks" / "check.yml"
PROGRAM = REPO / "host" / "src" / "mcp_mtls_host" / "rotate.py"
# The wrapper runs with the Python that runs ansible-playbook: the one its own first line names here (the venv's).
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
RC_LOCKED = 75
# What cron gives a job: no venv on PATH, no ANSIBLE_CONFIG, no locale.
CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh", "LOGNAME": "root"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """An inventory of the controller whose pki_dir is a real tree made by role pki (valid 400 days)."""
    root = tmp_path_factory.mktemp("rotate-inventory")
    pki_dir = root / "certs/mcp"
    res = run_playbook(PLAYBOOKS / "pki.yml", {"pki_dir": str(pki_dir), "pki_plugins": ["One"], "pki_key_type": "ecdsa",
                                               "pki_cert_days": 400, "pki_renew_before_days": 1})
    assert res.rc == 0, res.out
    inv = root / "hosts.ini"
    inv.write_text(f'localhost ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}" '
                   f"pki_dir={pki_dir}\n")
    return inv


@pytest.fixture
def base(tmp_path):
    for sub in ("cron.d", "sbin", "systemd", "run"):
        (tmp_path / sub).mkdir()
    return tmp_path


def role_vars(base, inventory, **extra):
    settings = {
        "rotate_schedule_method": "cron",
        "rotate_schedule_inventory": str(inventory),
        "rotate_schedule_playbook": str(CHECK),
        "rotate_schedule_cron_dir": str(base / "cron.d"),
        "rotate_schedule_systemd_dir": str(base / "systemd"),
        "rotate_schedule_wrapper": str(base / "sbin/mcp-mtls-rotate"),
        "rotate_schedule_log_dir": str(base / "log"),
        "rotate_schedule_lock_file": str(base / "run/mcp-mtls-rotate.lock"),
        "rotate_schedule_systemd_marker": str(base / "run/systemd/system"),  # missing: no systemd
    }
    settings.update(extra)
    return settings


def install(base, inventory, check=False, **extra):
    return run_playbook(SCHEDULE, role_vars(base, inventory, **extra), check=check)


def wrapper(base, *args, timeout=300):
    # stdin not a terminal, as under cron and systemd (with one, the run stays in the foreground group)
    return subprocess.run([str(base / "sbin/mcp-mtls-rotate"), *args], env=CRON_ENV, cwd=base, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def wrapper_settings(base):
    """The wrapper's settings, the JSON file the role writes beside it."""
    return json.loads((base / "sbin/mcp-mtls-rotate.json").read_text())


def last_run(base):
    return json.loads((base / "log/last-run.json").read_text())


def run_logs(base):
    return sorted((base / "log").glob("rotate-*.log"))


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root):
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_cron_mode_installs_the_cron_file_and_the_wrapper(base, inventory):
    res = install(base, inventory)
    assert res.rc == 0, res.out
    assert res.changed() == 4, res.out  # log folder, the wrapper's settings, wrapper, cron file

    cron = base / "cron.d/mcp-mtls-rotate"
    text = cron.read_text()
    assert text.splitlines()[:3] == ["#", "# Ansible managed", "#"]
    minute = int(hashlib.sha1(str(inventory).encode()).hexdigest()[:8], 16) % 60
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert entries == ["SHELL=/bin/sh", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       f"{minute} 0 * * * root {base}/sbin/mcp-mtls-rotate --random-delay 3600 >/dev/null"], text
    assert text.endswith("\n")  # cron ignores a last line without a newline

    script = base / "sbin/mcp-mtls-rotate"
    for path, want in ((cron, 0o644), (script, 0o750), (base / "sbin/mcp-mtls-rotate.json", 0o600), (base / "log", 0o750)):
        assert mode(path) == want, path
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0), path
    body = script.read_text()
    python = ANSIBLE_PLAYBOOK.read_text().splitlines()[0][2:]  # the interpreter of ansible-playbook
    head = f"#!{python}\n#\n# Ansible managed\n#\n"
    assert body.startswith(head) and body[len(head):] == PROGRAM.read_text()  # rotate.py as it is
    assert "--random-delay SECONDS" in body
    job = wrapper_settings(base)
    assert job["command"] == [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(CHECK)]
    assert job["environment"]["ANSIBLE_CONFIG"] == str(REPO / "ansible.cfg")  # the installing run's config file
    assert (job["keep_logs"], job["timeout"], job["rc_locked"]) == (30, 3600, RC_LOCKED)
    compiled = subprocess.run([python, "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", str(script)], check=False)
    assert compiled.returncode == 0
    assert not list((base / "systemd").iterdir())  # cron mode: no units


def test_wrapper_runs_the_playbook_records_it_and_the_role_is_idempotent_then_removable(base, inventory):
    assert install(base, inventory).rc == 0
    script = base / "sbin/mcp-mtls-rotate"

    assert wrapper(base, "--status").returncode == 2  # nothing recorded yet
    bad = wrapper(base, "--random-delay", "soon")
    assert bad.returncode == 64 and "usage:" in bad.stderr

    t0 = time.time()
    proc = wrapper(base, "--now")
    took = time.time() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # stdout carries the playbook's output (what journald keeps under systemd)
    assert "PLAY RECAP" in proc.stdout and "All 3 certificates valid for more than 15 days" in proc.stdout

    rec = last_run(base)
    assert rec["status"] == "ok" and rec["rc"] == 0, rec
    assert rec["playbook"] == str(CHECK) and rec["inventory"] == str(inventory)
    assert rec["host"] == os.uname().nodename
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["started"]) and rec["started"] <= rec["finished"]
    assert 0 <= rec["duration_seconds"] <= took + 1
    [log] = run_logs(base)
    assert rec["log"] == str(log) and re.fullmatch(r"rotate-\d{8}T\d{6}Z\.log", log.name)
    text = log.read_text()
    assert "PLAY RECAP" in text and re.search(r"localhost\s*: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", text)
    assert text.rstrip().endswith(f"mcp-mtls-rotate: ok in {rec['duration_seconds']}s; log {log}")
    assert mode(log) == 0o640 and mode(base / "log/last-run.json") == 0o640
    assert not list((base / "log").glob(".last-run.json.*"))  # the temp file was renamed, not left behind

    status = subprocess.run([str(script), "--status"], capture_output=True, text=True, check=False)
    assert status.returncode == 0 and json.loads(status.stdout) == rec

    # A second role run, with logs and last-run.json in place, changes nothing.
    again = install(base, inventory)
    assert again.rc == 0 and again.changed() == 0, again.out

    # state absent needs no inventory
    settings = {k: v for k, v in role_vars(base, inventory).items() if k != "rotate_schedule_inventory"}
    gone = run_playbook(SCHEDULE, {**settings, "rotate_schedule_state": "absent"})
    assert gone.rc == 0 and gone.changed() == 2, gone.out  # cron file, wrapper and its settings
    assert not (base / "cron.d/mcp-mtls-rotate").exists() and not script.exists()
    assert not (base / "sbin/mcp-mtls-rotate.json").exists()
    assert run_logs(base) == [log] and last_run(base) == rec  # the logs stay
    still_gone = install(base, inventory, rotate_schedule_state="absent")
    assert still_gone.rc == 0 and still_gone.changed() == 0, still_gone.out


def test_failed_run_is_recorded_and_status_exits_nonzero(base, inventory):
    res = install(base, inventory, rotate_schedule_extra_args=["-e", "check_threshold_days=100000"], rotate_schedule_keep_logs=2)
    assert res.rc == 0, res.out
    proc = wrapper(base, "--now")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # ansible-playbook: a task failed
    assert "FAILED, rc 2" in proc.stderr
    rec = last_run(base)
    assert rec["status"] == "failed" and rec["rc"] == 2, rec
    text = Path(rec["log"]).read_text()
    assert "Certificates needing attention: ca, gateway, One" in text and "PLAY RECAP" in text
    assert "-e check_threshold_days=100000" in text.splitlines()[1]  # the command line heads the log

    status = wrapper(base, "--status")
    assert status.returncode == 1 and json.loads(status.stdout) == rec and "FAILED" in status.stderr

    # keep_logs=2: a third run removes the oldest log.
    for _run in range(2):
        time.sleep(1.1)  # log names have a one-second resolution
        assert wrapper(base, "--now").returncode == 2
    logs = run_logs(base)
    assert len(logs) == 2 and logs[-1] == Path(last_run(base)["log"])


def test_a_run_never_overlaps_another(base, inventory):
    go = base / "go"
    gate = base / "gate.yml"  # the scheduled playbook: waits until the test creates GO
    gate.write_text("---\n- name: Gate\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                    f"    - name: Wait for the test\n      ansible.builtin.wait_for:\n        path: {go}\n        timeout: 120\n")
    assert install(base, inventory, rotate_schedule_playbook=str(gate)).rc == 0
    lock = base / "run/mcp-mtls-rotate.lock"

    # 1. The test holds the lock, as a running rotation would.
    holder = subprocess.Popen(["flock", str(lock), "sh", "-c", "echo held; exec sleep 60"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = wrapper(base, "--now")
        assert proc.returncode == RC_LOCKED, proc.stdout + proc.stderr
        assert f"another run holds {lock}" in proc.stderr and "PLAY" not in proc.stdout
        rec = last_run(base)
        assert rec["status"] == "locked" and rec["rc"] == RC_LOCKED and rec["log"] is None, rec
        assert run_logs(base) == []  # nothing ran
        assert wrapper(base, "--status").returncode == RC_LOCKED
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and the sleep that inherited the lock
        holder.wait()

    # 2. Two wrappers: the second starts while the first runs the playbook, which cannot end before GO exists.
    first = subprocess.Popen([str(base / "sbin/mcp-mtls-rotate"), "--now"], env=CRON_ENV, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not run_logs(base):  # the first one makes its log only once it holds the lock
            assert first.poll() is None and time.time() < deadline, "the first run ended before it was seen running"
            time.sleep(0.05)
        second = wrapper(base, "--now")
        assert second.returncode == RC_LOCKED, second.stdout + second.stderr
        assert "not starting a second one" in second.stderr
        assert first.poll() is None, "the first run ended without the go-ahead: " + first.communicate()[1]
        go.touch()
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, out + err
    assert "TASK [Wait for the test]" in out and len(run_logs(base)) == 1
    assert last_run(base)["status"] == "ok"  # the first one finished last


def test_timeout_kills_the_run_and_records_a_failure(base, inventory):
    slow = base / "slow.yml"
    # A sleep of this run only (its pid in the duration), so that pgrep below cannot see another test run's.
    nap = "120.%d" % os.getpid()
    slow.write_text("---\n- name: Hang\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: Sleep\n      ansible.builtin.command: sleep %s\n      changed_when: false\n" % nap)
    assert install(base, inventory, rotate_schedule_playbook=str(slow), rotate_schedule_timeout=3).rc == 0
    t0 = time.time()
    proc = wrapper(base, "--now")
    assert proc.returncode == 124 and "killed after the timeout of 3s" in proc.stderr, proc.stdout + proc.stderr
    assert time.time() - t0 < 60
    assert last_run(base)["status"] == "failed" and last_run(base)["rc"] == 124
    # The wrapper killed the whole process group of the run: no ansible-playbook, no `sleep` left (they get a
    # few seconds to exit after the signal; a leak would still be running long after).
    deadline = time.monotonic() + 15
    while subprocess.run(["pgrep", "-f", f"^sleep {nap}$|{slow}"], check=False).returncode != 1:
        assert time.monotonic() < deadline, "processes of the killed run are still running"
        time.sleep(0.5)


def test_default_playbook_is_the_collections_rotate_yml(base, inventory):
    """Without rotate_schedule_playbook the job runs playbooks/rotate.yml (found through the collection
    path, so it resolves the collection's roles) and passes its syntax check. Not run: it rotates."""
    settings = role_vars(base, inventory)
    del settings["rotate_schedule_playbook"]
    res = run_playbook(SCHEDULE, settings)
    assert res.rc == 0, res.out
    job = wrapper_settings(base)
    playbook = Path(job["playbook"])
    assert playbook.parts[-5:] == ("ansible_collections", "mcpgateway", "mtls", "playbooks", "rotate.yml"), job
    assert job["command"][3] == job["playbook"]
    assert playbook.samefile(REPO / "playbooks" / "rotate.yml")


def test_auto_picks_cron_without_systemd(base, inventory):
    res = install(base, inventory, rotate_schedule_method="auto")
    assert res.rc == 0, res.out
    assert (base / "cron.d/mcp-mtls-rotate").is_file() and not list((base / "systemd").iterdir())

    forced = install(base, inventory, rotate_schedule_method="systemd")
    assert forced.rc != 0, forced.out
    assert f"systemd is not running here ({base}/run/systemd/system is missing)" in " ".join(forced.out.split()), forced.out


def test_check_mode_on_a_clean_machine_reports_changes_and_writes_nothing(base, inventory):
    before = snapshot(base)
    res = install(base, inventory, check=True)
    assert res.rc == 0, res.out
    assert res.changed() == 4, res.out  # as test_cron_mode_installs_the_cron_file_and_the_wrapper
    assert snapshot(base) == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rotate_schedule_inventory": ""}, "rotate_schedule_inventory is required"),
        ({"rotate_schedule_inventory": "inventories/example"},
         "as an absolute path: e.g. -e rotate_schedule_inventory=$PWD/inventories/prod (got 'inventories/example')"),
        ({"rotate_schedule_inventory": "/nonexistent/inventory"}, "the inventory /nonexistent/inventory is MISSING"),
        ({"rotate_schedule_playbook": "/nonexistent/rotate.yml"}, "/nonexistent/rotate.yml is MISSING"),
        ({"rotate_schedule_ansible_playbook": "{base}/ansible-playbook"}, "{base}/ansible-playbook is MISSING or not executable"),
        ({"rotate_schedule_environment": {"ANSIBLE_VAULT_PASSWORD": "hunter2"}}, "looks like an inline secret"),
        ({"rotate_schedule_extra_args": ["--no-such-option"]}, "--syntax-check` failed"),
        ({"rotate_schedule_method": "at"}, "value of rotate_schedule_method must be one of: auto, systemd, cron"),
    ],
    ids=["no-inventory", "relative-inventory", "missing-inventory", "missing-playbook", "not-executable",
         "inline-secret", "bad-extra-args", "bad-method"],
)
def test_preflight_refuses_bad_settings_before_writing(base, inventory, override, message):
    (base / "ansible-playbook").write_text("#!/bin/sh\n")  # not executable (mode 0644)
    override = {key: value.format(base=base) if isinstance(value, str) else value for key, value in override.items()}
    message = message.format(base=base)
    before = snapshot(base)
    res = install(base, inventory, **override)
    assert res.rc != 0
    assert message in " ".join(res.out.split()), res.out
    assert "hunter2" not in res.out
    assert snapshot(base) == before
