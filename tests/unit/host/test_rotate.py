"""The wrapper of role rotate_schedule, host/src/mcp_mtls_host/rotate.py.

Installed as the role installs it (a first line naming this Python, the settings beside it in WRAPPER.json)
and run as a real process, with a fake "ansible-playbook" (a small Python script) whose behaviour the
settings' environment picks: FAKE_MODE ok, fail, hang, stubborn, wait or chatty. The real ansible-playbook
runs in tests/integration/test_rotate_schedule.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_mtls_host import rotate

PROGRAM = Path(rotate.__file__)
# The Python of the wrapper (the controller's, 3.9 or later): this one unless MCP_ROTATE_TEST_PYTHON names another.
PYTHON = os.environ.get("MCP_ROTATE_TEST_PYTHON", sys.executable)
RC_LOCKED = 75
SECRET = "s3cr3t-passphrase-value"
# What cron gives a job: no HOME sometimes, no locale, a short PATH.
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "root"}

FAKE = f"""#!{sys.executable} -u
import hashlib, json, os, signal, subprocess, sys, time
mode = os.environ.get("FAKE_MODE", "ok")
print("ARGS " + json.dumps(sys.argv[1:]))
print("ENV " + json.dumps({{k: os.environ.get(k) for k in ("FAKE_MODE", "LC_ALL", "HOME", "PATH")}}))
print("NOTE " + hashlib.sha256(os.environ.get("FAKE_NOTE", "").encode()).hexdigest())
print("CWD " + os.getcwd() + " STDIN " + repr(sys.stdin.read()))
sys.stderr.write("to stderr\\n")
if mode == "fail":
    sys.exit(3)
if mode in ("hang", "stubborn"):
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "300"])  # as ansible's workers and ssh: grandchildren
    with open(os.environ["FAKE_PIDS"] + ".tmp", "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    os.rename(os.environ["FAKE_PIDS"] + ".tmp", os.environ["FAKE_PIDS"])
    time.sleep(300)
if mode == "wait":
    open(os.environ["FAKE_PIDS"], "w").write(str(os.getpid()))
    while not os.path.exists(os.environ["FAKE_GO"]):
        time.sleep(0.05)
if mode == "chatty":
    for n in range(3000):
        print(f"line {{n:05d}} " + "x" * 90)
print("PLAY RECAP fake")
"""


class Wrapper:
    def __init__(self, base: Path):
        self.base = base
        self.path = base / "sbin" / "mcp-mtls-rotate"
        self.path.parent.mkdir()
        self.path.write_text(f"#!{PYTHON}\n#\n# Ansible managed\n#\n" + PROGRAM.read_text())
        self.path.chmod(0o750)
        self.fake = base / "bin" / "ansible-playbook"
        self.fake.parent.mkdir()
        self.fake.write_text(FAKE)
        self.fake.chmod(0o755)
        self.pids = base / "fake.pids"
        self.log_dir = base / "log"
        self.lock = base / "run" / "lock"
        self.lock.parent.mkdir()
        self.configure()

    def configure(self, mode="ok", environment=None, **settings):
        inventory, playbook = settings.pop("inventory", str(self.base / "inv/hosts.yml")), str(self.base / "rotate.yml")
        playbook = settings.pop("playbook", playbook)
        log_dir = settings.pop("log_dir", str(self.log_dir))
        self.settings = {
            "inventory": inventory, "playbook": playbook, "command": [str(self.fake), "-i", inventory, playbook],
            "environment": {"FAKE_MODE": mode, "FAKE_NOTE": SECRET, "FAKE_PIDS": str(self.pids),
                            "FAKE_GO": str(self.base / "go"), **(environment or {})},
            "log_dir": log_dir, "last_run": f"{log_dir}/last-run.json", "lock_file": str(self.lock),
            "keep_logs": 30, "timeout": 3600, "rc_locked": RC_LOCKED, **settings}
        self.settings_file = Path(f"{self.path}.json")
        self.settings_file.write_text(json.dumps(self.settings, indent=4, sort_keys=True) + "\n")
        self.settings_file.chmod(0o600)
        self.log_dir = Path(log_dir)

    def start(self, *args, env=None, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([str(self.path), *args], env=env or {**CRON_ENV, "HOME": "/root"}, cwd=self.base,
                                stdin=subprocess.DEVNULL, text=True, **kwargs)

    def run(self, *args, env=None, timeout=60):
        proc = self.start(*args, env=env)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def last_run(self):
        return json.loads((self.log_dir / "last-run.json").read_text())

    def logs(self):
        return sorted(self.log_dir.glob("rotate-*.log"))

    def fake_pids(self, within=20):
        deadline = time.monotonic() + within
        while not self.pids.exists():
            assert time.monotonic() < deadline, "the fake ansible-playbook did not start"
            time.sleep(0.02)
        return [int(pid) for pid in self.pids.read_text().split()]


@pytest.fixture
def wrapper(tmp_path):
    return Wrapper(tmp_path)


def gone(pid, within=10.0):
    """True once the process is gone (or a zombie nobody reaps yet)."""
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("argv", [["--now", "x"], ["--random-delay"], ["--random-delay", "soon"], ["--random-delay", "-1"],
                                  ["--random-delay", "1", "2"], ["--random-delay", "\u0663"], ["--status", "x"], ["--later"]])
def test_usage_errors_exit_64_before_reading_the_settings(argv, capfd):
    assert rotate.main(argv, settings_file="/nonexistent.json", prog="mcp-mtls-rotate") == 64
    assert capfd.readouterr().err == "usage: mcp-mtls-rotate [--now | --random-delay SECONDS | --status]\n"


def test_the_arguments():
    assert rotate.parse_args([]) == rotate.parse_args([""]) == rotate.parse_args(["--now"]) == ("now", 0)
    assert rotate.parse_args(["--random-delay", "0090"]) == ("now", 90)
    assert rotate.parse_args(["--status"]) == ("status", 0)


def test_a_run_passes_its_settings_and_records_the_result(wrapper):
    t0 = time.time()
    proc = wrapper.run("--now", env=CRON_ENV)  # no HOME, as under systemd without User=
    took = time.time() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inventory, playbook = wrapper.settings["inventory"], wrapper.settings["playbook"]
    assert json.loads(re.search(r"^ARGS (.*)$", proc.stdout, re.M)[1]) == ["-i", inventory, playbook]
    env = json.loads(re.search(r"^ENV (.*)$", proc.stdout, re.M)[1])
    assert env == {"FAKE_MODE": "ok", "LC_ALL": "C.UTF-8", "HOME": pwd.getpwuid(os.getuid()).pw_dir, "PATH": "/usr/bin:/bin"}
    assert f"NOTE {hashlib.sha256(SECRET.encode()).hexdigest()}" in proc.stdout  # the environment reached it
    assert "CWD / STDIN ''" in proc.stdout and "to stderr" in proc.stdout  # from /, stdin empty, stderr merged

    rec = wrapper.last_run()
    [log] = wrapper.logs()
    assert list(rec) == ["status", "rc", "started", "finished", "duration_seconds", "log", "playbook", "inventory", "host"]
    assert (rec["status"], rec["rc"], rec["log"], rec["playbook"], rec["inventory"]) == ("ok", 0, str(log), playbook, inventory)
    assert rec["host"] == os.uname().nodename and 0 <= rec["duration_seconds"] <= took + 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["started"]) and rec["started"] <= rec["finished"]
    assert re.fullmatch(r"rotate-\d{8}T\d{6}Z\.log", log.name)
    assert proc.stdout.endswith(f"mcp-mtls-rotate: ok in {rec['duration_seconds']}s; log {log}\n") and proc.stderr == ""

    text = log.read_text()
    head = text.splitlines()[:3]
    assert head[0] == f"# mcp-mtls-rotate: run started {rec['started']} on {rec['host']}"
    assert head[1] == f"# command: {wrapper.fake} -i {inventory} {playbook}"
    assert head[2] == "# environment: FAKE_GO FAKE_MODE FAKE_NOTE FAKE_PIDS"  # names, never values
    assert text == proc.stdout  # the log holds what stdout got
    for where in (text, proc.stdout, proc.stderr, json.dumps(rec)):
        assert SECRET not in where
    assert (mode(wrapper.log_dir), mode(log), mode(wrapper.log_dir / "last-run.json"), mode(wrapper.lock)) == \
        (0o750, 0o640, 0o640, 0o640)
    assert not list(wrapper.log_dir.glob(".last-run.json.*"))

    status = wrapper.run("--status")
    assert status.returncode == 0 and json.loads(status.stdout) == rec and status.stderr == ""


def test_the_settings_may_set_the_locale_and_home(wrapper):
    wrapper.configure(environment={"LC_ALL": "C", "HOME": "/nonexistent"})
    proc = wrapper.run("--now", env={**CRON_ENV, "HOME": ""})
    env = json.loads(re.search(r"^ENV (.*)$", proc.stdout, re.M)[1])
    assert (proc.returncode, env["LC_ALL"], env["HOME"]) == (0, "C", "/nonexistent"), proc.stdout


def test_a_failing_playbook_fails_the_run_with_its_exit_status(wrapper):
    wrapper.configure(mode="fail")
    proc = wrapper.run("--now")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    rec = wrapper.last_run()
    assert (rec["status"], rec["rc"]) == ("failed", 3)
    line = f"mcp-mtls-rotate: FAILED, rc 3, after {rec['duration_seconds']}s; log {rec['log']}\n"
    assert proc.stderr == line and "ARGS" in proc.stdout and line not in proc.stdout
    assert Path(rec["log"]).read_text().endswith("to stderr\n" + line)
    status = wrapper.run("--status")
    assert status.returncode == 1 and json.loads(status.stdout) == rec
    assert status.stderr == "mcp-mtls-rotate: the last run FAILED; see the log named above\n"


@pytest.mark.parametrize(("program", "rc"), [("missing", 127), ("not-executable", 126)])
def test_an_ansible_playbook_that_cannot_run(wrapper, program, rc):
    path = wrapper.base / program
    if program == "not-executable":
        path.write_text("#!/bin/sh\n")
    wrapper.configure(command=[str(path), "-i", "inv"])
    proc = wrapper.run("--now")
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert (wrapper.last_run()["status"], wrapper.last_run()["rc"]) == ("failed", rc)
    assert f"mcp-mtls-rotate: cannot run {path}: " in Path(wrapper.last_run()["log"]).read_text()
    if rc == 127:
        assert f"FAILED, cannot run {path} (rc 127), after " in proc.stderr


def test_a_held_lock_skips_the_run(wrapper):
    with open(wrapper.lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running rotation holds it
        proc = wrapper.run("--now")
    assert proc.returncode == RC_LOCKED, proc.stdout + proc.stderr
    assert proc.stderr == (f"mcp-mtls-rotate: another run holds {wrapper.lock}: not starting a second one "
                           f"(status locked, exit {RC_LOCKED})\n") and proc.stdout == ""
    rec = wrapper.last_run()
    assert (rec["status"], rec["rc"], rec["log"], rec["duration_seconds"]) == ("locked", RC_LOCKED, None, 0)
    assert wrapper.logs() == [] and not wrapper.pids.exists()  # nothing ran
    status = wrapper.run("--status")
    assert status.returncode == RC_LOCKED and json.loads(status.stdout) == rec
    assert status.stderr == f"mcp-mtls-rotate: the last run was skipped: another run held {wrapper.lock}\n"
    assert wrapper.run("--now").returncode == 0  # free again


def test_ansible_playbook_keeps_the_lock_when_its_wrapper_is_killed(wrapper):
    wrapper.configure(mode="hang")
    first = wrapper.start("--now", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fake, grandchild = wrapper.fake_pids()
    try:
        first.kill()
        first.wait()
        second = wrapper.run("--now")
        assert second.returncode == RC_LOCKED, second.stdout + second.stderr
    finally:
        os.killpg(fake, signal.SIGKILL)  # its own process group: the fake and its sleep
    assert gone(fake) and gone(grandchild)
    wrapper.configure(mode="ok")
    assert wrapper.run("--now").returncode == 0


def test_the_timeout_kills_every_process_of_the_run(wrapper):
    wrapper.configure(mode="hang", timeout=1)
    t0 = time.monotonic()
    proc = wrapper.run("--now")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 30
    assert re.fullmatch(r"mcp-mtls-rotate: FAILED, killed after the timeout of 1s \(rc 124\), after [12]s; log \S+\n",
                        proc.stderr), proc.stderr
    assert (wrapper.last_run()["status"], wrapper.last_run()["rc"]) == ("failed", 124)
    fake, grandchild = wrapper.fake_pids()
    assert gone(fake) and gone(grandchild), "a process of the timed-out run survived"


def test_a_run_that_ignores_sigterm_gets_sigkill(wrapper):
    wrapper.configure(mode="stubborn", timeout=1)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from mcp_mtls_host import rotate; rotate.KILL_AFTER = 1; "
            "sys.exit(rotate.main(['--now'], settings_file=sys.argv[2], prog='mcp-mtls-rotate'))")
    proc = subprocess.run([PYTHON, "-c", code, str(PROGRAM.parents[1]), str(wrapper.settings_file)],
                          env={**CRON_ENV, "HOME": "/root"}, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 137 and "FAILED, rc 137, after " in proc.stderr, proc.stdout + proc.stderr
    assert all(gone(pid) for pid in wrapper.fake_pids())


def test_sigterm_during_the_run_goes_to_the_run(wrapper):
    """As timeout(1) did: the signal reaches ansible-playbook and everything it started; the failure is recorded."""
    wrapper.configure(mode="hang")
    proc = wrapper.start("--now")
    fake, grandchild = wrapper.fake_pids()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "mcp-mtls-rotate: FAILED, rc 143, after " in err and wrapper.last_run()["rc"] == 143
    assert gone(fake) and gone(grandchild)


def test_without_a_timeout_a_signal_to_the_wrapper_alone_does_not_stop_the_run(wrapper):
    wrapper.configure(mode="wait", timeout=0)
    proc = wrapper.start("--now")
    wrapper.fake_pids()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None
    (wrapper.base / "go").touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and wrapper.last_run()["status"] == "ok", out + err


def test_the_random_delay_and_a_signal_during_it(wrapper):
    proc = wrapper.run("--random-delay", "0")
    assert proc.returncode == 0 and "random delay" not in proc.stdout
    for _attempt in range(5):
        proc = wrapper.start("--random-delay", "600")
        line = proc.stdout.readline()
        found = re.fullmatch(r"mcp-mtls-rotate: random delay: starting in (\d+)s \(at most 600s\)\n", line)
        assert found, line
        if int(found[1]) >= 2:
            break
        proc.communicate(timeout=30)  # 0 or 1 s: it ran; try again
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    assert err == "mcp-mtls-rotate: interrupted during the random delay; nothing ran\n"
    assert not wrapper.pids.exists()


def test_log_retention_keeps_the_newest(wrapper):
    wrapper.configure(keep_logs=3)
    wrapper.log_dir.mkdir()
    old = ["rotate-20200101T000000Z.log", "rotate-20200102T000000Z-99.log", "rotate-20200102T000000Z.log",
           "rotate-20200103T000000Z.log"]
    others = ["other.log", "rotate-20200101T000000Z.log.gz", ".rotate-x.log"]
    for name in old + others:
        (wrapper.log_dir / name).write_text("old\n")
    assert wrapper.run("--now").returncode == 0
    names = sorted(p.name for p in wrapper.log_dir.iterdir() if p.name != "last-run.json")
    current = Path(wrapper.last_run()["log"]).name
    assert names == sorted([*others, "rotate-20200102T000000Z.log", "rotate-20200103T000000Z.log", current])


def test_the_report_is_json_whatever_the_characters(wrapper):
    odd = 'it\'s "odd" \\ $HOME `x` \t tab \n newline \x01 \u00e9t\u00e9 \u2603'
    wrapper.configure(inventory=f"/srv/{odd}/hosts", playbook=f"/srv/{odd}.yml", log_dir=str(wrapper.base / f"log {odd}"))
    proc = wrapper.run("--now")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = (wrapper.log_dir / "last-run.json").read_text()
    rec = json.loads(raw)
    assert (rec["inventory"], rec["playbook"]) == (f"/srv/{odd}/hosts", f"/srv/{odd}.yml")
    assert rec["log"].startswith(str(wrapper.log_dir) + "/rotate-")
    command = Path(rec["log"]).read_text().splitlines()[1]  # still one line, quoted as for a shell
    assert command.startswith(f"# command: {wrapper.fake} -i $'/srv/it\\'s") and "\\n newline" in command, command
    status = wrapper.run("--status")
    assert status.returncode == 0 and json.loads(status.stdout) == rec


def test_a_closed_stdout_keeps_the_log_complete(wrapper):
    wrapper.configure(mode="chatty")
    proc = wrapper.start("--now")
    proc.stdout.close()  # the reader went away (a closed pipe): its copy stops, not the run
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    text = Path(wrapper.last_run()["log"]).read_text()
    assert text.count("\nline ") == 3000 and "PLAY RECAP fake" in text and "Traceback" not in err
    assert re.search(r"\nmcp-mtls-rotate: ok in \d+s; log \S+\n\Z", text)


@pytest.mark.parametrize("case", ["missing", "not-json", "group-writable", "no-command", "bad-keep-logs"])
def test_bad_settings_exit_78_and_run_nothing(wrapper, case):
    settings = wrapper.settings_file
    if case == "missing":
        settings.unlink()
    elif case == "not-json":
        settings.write_text("{")
    elif case == "group-writable":
        settings.chmod(0o620)
    else:
        wrapper.configure(**({"command": []} if case == "no-command" else {"keep_logs": 0}))
    proc = wrapper.run("--now")
    assert proc.returncode == 78 and proc.stderr.startswith("mcp-mtls-rotate: "), proc.stderr
    assert {"missing": "cannot read the settings", "group-writable": "writable by its owner only"}.get(case, "") in proc.stderr
    assert not wrapper.log_dir.exists() and not wrapper.pids.exists()
    assert wrapper.run("--status").returncode == 78


def test_status_without_a_usable_record(wrapper):
    status = wrapper.run("--status")
    assert status.returncode == 2 and status.stdout == ""
    assert status.stderr == f"mcp-mtls-rotate: no run recorded yet ({wrapper.log_dir}/last-run.json does not exist)\n"
    wrapper.log_dir.mkdir()
    (wrapper.log_dir / "last-run.json").write_text("garbage\n")
    status = wrapper.run("--status")
    assert status.returncode == 2 and status.stdout == "garbage\n" and "has no status" in status.stderr
