"""Role rotate_schedule in SYSTEMD mode, for real, on a systemd host (testinfra, podman backend).

The gateway host (Debian trixie, Python 3.13, systemd as PID 1) plays the controller: the test gives it
ansible-core (pip, offline, from the wheels of lab/cache/wheelhouse-py313 it copies there) and this
collection (the tarball `ansible-galaxy collection build` makes here, installed offline by the host's
ansible-galaxy), makes a small PKI tree there with role pki, then applies role rotate_schedule ON THE HOST
in auto mode with the installed collection's playbooks/check.yml as the scheduled playbook. It checks the
timer systemd runs, starts the service (a real run, passing), makes the run fail, removes the schedule,
and at the end removes everything it made, then checks that the host is as it found it.

Developed against the lab (`source lab/env.sh; MCP_SCHEDULE_HOST=mcp-gw1 pytest ...`); in
molecule/default/tests only GATEWAY changes (mcp-mol-gw). Numbers are printed (pytest -s).
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import testinfra
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

GATEWAY = os.environ.get("MCP_SCHEDULE_HOST", "mcp-mol-gw")
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
WHEELHOUSE = REPO / "lab/cache/wheelhouse-py313"
CONTROLLER_BIN = REPO / ".venv/bin"
# The controller's ansible-core, which the host gets too (lab/requirements-gateway.txt pins the same).
ANSIBLE_CORE = importlib.metadata.version("ansible-core")

# What the test makes on the host (all removed at the end).
ROOT = "/opt/mcp-rotate-test"
VENV = f"{ROOT}/venv"
COLLECTIONS = f"{ROOT}/collections"
CONFIG = f"{ROOT}/ansible.cfg"
INSTALLED = f"{COLLECTIONS}/ansible_collections/mcpgateway/mtls"
CHECK = f"{INSTALLED}/playbooks/check.yml"
STATE = "/var/lib/mcp-rotate-test"
INV_DIR = f"{STATE}/inv"
INVENTORY = f"{INV_DIR}/hosts.yml"
PKI_DIR = f"{INV_DIR}/certs/mcp"
WHEELS_TMP_PREFIX = "/tmp/mcp-rotate-test-wheels."
# What the role makes on the host (its defaults).
SERVICE, TIMER = "mcp-mtls-rotate.service", "mcp-mtls-rotate.timer"
UNIT_DIR = "/etc/systemd/system"
UNITS = (f"{UNIT_DIR}/{SERVICE}", f"{UNIT_DIR}/{TIMER}")
WANTS_LINK = f"{UNIT_DIR}/timers.target.wants/{TIMER}"
WRAPPER = "/usr/local/sbin/mcp-mtls-rotate"
SETTINGS = WRAPPER + ".json"  # the wrapper's settings (command, environment, limits), root 0600
LOG_DIR = "/var/log/mcp-mtls-rotate"
LAST_RUN = f"{LOG_DIR}/last-run.json"
LOCK = "/run/mcp-mtls-rotate.lock"
STAMP = f"/var/lib/systemd/timers/stamp-{TIMER}"
CRON_FILE = "/etc/cron.d/mcp-mtls-rotate"
OURS = (ROOT, STATE, *UNITS, WANTS_LINK, WRAPPER, SETTINGS, LOG_DIR, LOCK, STAMP, CRON_FILE)

# How the test runs ansible on the host: the job inherits ANSIBLE_CONFIG (the installing run's config file).
HOST_ENV = ["env", f"ANSIBLE_CONFIG={CONFIG}", "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "LC_ALL=C.UTF-8",
            "HOME=/root"]
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.M)

HOST = testinfra.get_host(f"podman://{GATEWAY}")
TIMES: dict[str, float] = {}


def say(message):
    print(f"[schedule-systemd {GATEWAY}] {message}", flush=True)


def sh(command, ok=(0,), timeout=None):
    """Run a shell command on the host; assert its exit status is one of `ok` (None: any)."""
    if timeout:
        command = f"timeout {int(timeout)} sh -c {shlex.quote(command)}"
    res = HOST.run(command)
    if ok is not None:
        assert res.rc in ok, (f"on {GATEWAY}: {command}\nrc {res.rc}\n--- stdout\n{res.stdout[-4000:]}\n"
                              f"--- stderr\n{res.stderr[-4000:]}")
    return res


def q(*words):
    return shlex.join(str(w) for w in words)


def put(path, text, mode="0644"):
    """Write a file on the host (through podman exec's stdin, no quoting involved)."""
    subprocess.run(["podman", "exec", "-i", GATEWAY, "sh", "-c", f"umask 022; cat > {shlex.quote(path)}"],
                   input=text, text=True, check=True, timeout=60)
    sh(q("chmod", mode, path))


def podman_cp(src, dest):
    subprocess.run(["podman", "cp", str(src), f"{GATEWAY}:{dest}"], check=True, timeout=300)


def exists(path):
    return sh(q("test", "-e", path) + " || " + q("test", "-L", path), ok=(0, 1)).rc == 0


def props(unit, *names):
    out = sh(q("systemctl", "show", "-p", ",".join(names), unit)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def host_ansible(*words, timeout=900):
    """ansible-playbook (or ansible-galaxy, ...) of the host's venv, with the test's config; returns the result."""
    started = time.monotonic()
    res = sh(q(*HOST_ENV, *words), ok=None, timeout=timeout)
    res.seconds = time.monotonic() - started
    return res


def recaps(text):
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(text)}


def changed_tasks(stdout):
    """Names of the tasks (and handlers) that reported a change, in the order they ran."""
    names, current = [], None
    for line in stdout.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(?:[^\]:]+ : )?(.*)\] \*+$", line)
        if m:
            current = m[1]
        elif line.startswith("changed: ") and current and current not in names:
            names.append(current)
    return names


def apply_schedule(*args, **extra):
    """Role rotate_schedule through the installed collection's playbook mcpgateway.mtls.schedule_rotation."""
    settings = {
        "rotate_schedule_inventory": INVENTORY,
        "rotate_schedule_playbook": CHECK,
        "rotate_schedule_ansible_playbook": f"{VENV}/bin/ansible-playbook",
    }
    settings.update(extra)
    res = host_ansible(f"{VENV}/bin/ansible-playbook", "-i", INVENTORY, "mcpgateway.mtls.schedule_rotation",
                       "-e", json.dumps(settings), *args)
    out = res.stdout + res.stderr
    assert res.rc == 0, f"schedule_rotation {args} {extra}: rc {res.rc}\n{out[-5000:]}"
    recap = recaps(res.stdout)
    assert set(recap) == {"localhost"} and recap["localhost"]["failed"] == 0, out[-3000:]
    res.changed = recap["localhost"]["changed"]
    res.changed_tasks = changed_tasks(res.stdout)
    assert len(res.changed_tasks) == res.changed, (res.changed_tasks, res.stdout[-3000:])
    return res


def start_service():
    """systemctl start (Type=oneshot: returns when the run is over); the run's properties and journal."""
    started = time.monotonic()
    res = sh(q("systemctl", "start", SERVICE), ok=None, timeout=900)
    res.seconds = time.monotonic() - started
    res.props = props(SERVICE, "Result", "ExecMainStatus", "ActiveState", "InvocationID",
                      "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic")
    invocation = res.props["InvocationID"]
    assert re.fullmatch(r"[0-9a-f]{32}", invocation), res.props
    # journald may store the last lines of the run a moment after the unit finished.
    deadline = time.monotonic() + 20
    while True:
        res.journal = sh(q("journalctl", "--no-pager", "-o", "cat", "-u", SERVICE,
                           f"_SYSTEMD_INVOCATION_ID={invocation}")).stdout
        done = re.search(r"^mcp-mtls-rotate: (ok|FAILED)", res.journal, re.M) and "PLAY RECAP" in res.journal
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return res


def last_run():
    return json.loads(sh(q("cat", LAST_RUN)).stdout)


def run_logs():
    return sh(f"ls -1 {shlex.quote(LOG_DIR)}/rotate-*.log 2>/dev/null", ok=(0, 1, 2)).stdout.split()


def wheel_closure(requirement, marker_env):
    """The wheels of WHEELHOUSE that `requirement` needs on a Python with `marker_env`, from their metadata."""
    wheels = {}
    for path in WHEELHOUSE.glob("*.whl"):
        name, version = parse_wheel_filename(path.name)[:2]
        assert name not in wheels, f"{WHEELHOUSE}: two wheels of {name}"
        wheels[name] = (version, path)
    picked, seen, todo = {}, set(), [Requirement(requirement)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        assert name in wheels, f"{WHEELHOUSE} has no wheel of {name} ({req}): rebuild it with `bash lab/wheelhouse.sh py313`"
        version, path = wheels[name]
        assert req.specifier.contains(version, prereleases=True), f"{path.name} does not satisfy {req}"
        picked[name] = path
        for extra in {"", *req.extras}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            with zipfile.ZipFile(path) as whl:
                meta = next(n for n in whl.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
                headers = email.parser.Parser().parsestr(whl.read(meta).decode())
            for line in headers.get_all("Requires-Dist") or []:
                dep = Requirement(line)
                if dep.marker is None or dep.marker.evaluate({**marker_env, "extra": extra}):
                    todo.append(dep)
    return sorted(picked.values())


def snapshot():
    """What this test (or the role) may leave on the host: must be the same before and after."""
    paths = {path: exists(path) for path in OURS}
    # Over ssh with become, Ansible's own module runtime makes root's remote_tmp (/root/.ansible/tmp) on any
    # managed host; it must stay empty. Anything else there, or in /root/.cache, is the role's or the test's.
    listing = sh("find /root/.ansible /root/.cache -mindepth 1 -not -path /root/.ansible/tmp 2>/dev/null; "
                 f"ls -1d {WHEELS_TMP_PREFIX}* 2>/dev/null", ok=None).stdout
    units = sh(q("systemctl", "list-units", "--all", "--no-legend", "--plain", "mcp-mtls-rotate*")).stdout.strip()
    timers = [line for line in sh("systemctl list-timers --all --no-legend").stdout.splitlines() if TIMER in line]
    return {"paths": paths, "listing": listing, "loaded_units": units, "timers": timers}


def ours_or_nothing():
    """Refuse to run over a rotation schedule that is not this test's; a leftover of this test is removed."""
    present = [path for path in OURS if exists(path)]
    if not present:
        return
    for path in (SETTINGS, LAST_RUN, f"{UNIT_DIR}/{SERVICE}"):
        if exists(path) and sh(q("grep", "-qsF", "-e", f"{ROOT}/", "-e", f"{STATE}/", path), ok=(0, 1)).rc != 0:
            pytest.fail(f"{GATEWAY} already has a rotation schedule that is not this test's ({path}): not touching it")
    say(f"removing the leftovers of an earlier run: {present}")
    cleanup()


def cleanup():
    """Remove everything the test and the role made: the role itself first (state absent), then by hand."""
    if exists(f"{VENV}/bin/ansible-playbook") and exists(CHECK) and exists(INVENTORY):
        res = host_ansible(f"{VENV}/bin/ansible-playbook", "-i", INVENTORY, "mcpgateway.mtls.schedule_rotation",
                           "-e", json.dumps({"rotate_schedule_state": "absent"}))
        if res.rc != 0:
            say(f"cleanup: state absent failed (rc {res.rc}), removing by hand:\n{(res.stdout + res.stderr)[-2000:]}")
    sh(q("systemctl", "stop", TIMER, SERVICE), ok=None)
    sh(q("systemctl", "disable", TIMER), ok=None)
    sh(q("rm", "-rf", "--", *UNITS, WANTS_LINK, WRAPPER, SETTINGS, CRON_FILE, LOCK, STAMP, LOG_DIR, ROOT, STATE))
    sh(f"rm -rf -- {WHEELS_TMP_PREFIX}*")
    sh("systemctl daemon-reload")
    sh(q("systemctl", "reset-failed", SERVICE, TIMER), ok=None)


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    """The host set up as a controller: venv with ansible-core, the collection, an inventory, a PKI tree."""
    t_all = time.monotonic()
    assert sh("test -d /run/systemd/system && systemctl is-system-running", ok=None).stdout.strip() in (
        "running", "degraded"), f"{GATEWAY}: systemd does not run the host"
    pyver = sh("python3 -c 'import sys; print(sys.version.split()[0])'").stdout.strip()
    ours_or_nothing()
    before = snapshot()
    assert not any(before["paths"].values()) and not before["loaded_units"] and not before["timers"], before
    tmp = tmp_path_factory.mktemp("schedule-systemd")
    try:
        # 1. ansible-core in a venv, offline, from the wheels it needs (copied from the wheelhouse).
        t = time.monotonic()
        sh(q("mkdir", "-p", ROOT, INV_DIR) + " && " + q("python3", "-m", "venv", VENV), timeout=300)
        marker_env = json.loads(sh(q(f"{VENV}/bin/python", "-c", "import json; from pip._vendor.packaging.markers "
                                     "import default_environment as d; print(json.dumps(d()))")).stdout)
        wheels = wheel_closure(f"ansible-core=={ANSIBLE_CORE}", marker_env)
        stage = tmp / "wheels"
        stage.mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, stage)
        remote_wheels = sh(q("mktemp", "-d", f"{WHEELS_TMP_PREFIX}XXXXXX")).stdout.strip()
        podman_cp(f"{stage}/.", remote_wheels)
        sh(q(f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", remote_wheels, f"ansible-core=={ANSIBLE_CORE}"), timeout=600)
        sh(q("rm", "-rf", "--", remote_wheels))
        sh(q(f"{VENV}/bin/pip", "check", "--disable-pip-version-check"))
        version = sh(q(f"{VENV}/bin/ansible-playbook", "--version")).stdout
        assert f"core {ANSIBLE_CORE}]" in version and f"python version = {pyver}" in version, version
        TIMES["venv + ansible-core offline"] = time.monotonic() - t
        say(f"Python {pyver}; ansible-core {ANSIBLE_CORE} from {len(wheels)} of the wheelhouse's "
            f"{len(list(WHEELHOUSE.glob('*.whl')))} wheels: {', '.join(w.name.split('-')[0] for w in wheels)}")

        # 2. The collection: built here, installed there by the host's ansible-galaxy, offline.
        t = time.monotonic()
        dist = tmp / "dist"
        build = subprocess.run([str(CONTROLLER_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist),
                                str(REPO)], capture_output=True, text=True, check=False, timeout=300,
                               env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
        assert build.returncode == 0, build.stdout + build.stderr
        tarballs = sorted(dist.glob("mcpgateway-mtls-*.tar.gz"))
        assert len(tarballs) == 1, tarballs
        tarball = tarballs[0]
        podman_cp(tarball, f"{ROOT}/{tarball.name}")
        put(CONFIG, f"[defaults]\ncollections_path = {COLLECTIONS}\ninterpreter_python = auto_silent\n"
                    "retry_files_enabled = false\nnocolor = true\n"
                    # ansible-galaxy would keep its cache in /root/.ansible otherwise, even with --offline.
                    f"[galaxy]\ncache_dir = {ROOT}/galaxy_cache\n")
        galaxy = host_ansible(f"{VENV}/bin/ansible-galaxy", "collection", "install", "--offline", "-p", COLLECTIONS,
                              f"{ROOT}/{tarball.name}", timeout=300)
        assert galaxy.rc == 0, galaxy.stdout + galaxy.stderr
        manifest = json.loads(sh(q("cat", f"{INSTALLED}/MANIFEST.json")).stdout)
        listed = host_ansible(f"{VENV}/bin/ansible-galaxy", "collection", "list", "mcpgateway.mtls")
        assert listed.rc == 0 and COLLECTIONS in listed.stdout, listed.stdout + listed.stderr
        TIMES["collection build + offline install"] = time.monotonic() - t
        say(f"collection {manifest['collection_info']['version']} ({tarball.stat().st_size} bytes) installed in {INSTALLED}")

        # 3. The inventory of the scheduled run and a tiny PKI tree made by role pki, on the host.
        t = time.monotonic()
        put(INVENTORY, "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                       "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
        put(f"{ROOT}/pki.yml", "- name: A tiny PKI tree for the scheduled check\n  hosts: localhost\n"
                               "  connection: local\n  gather_facts: false\n  roles:\n    - role: mcpgateway.mtls.pki\n"
                               f"      vars:\n        pki_plugins: [a]\n        pki_key_type: ecdsa\n"
                               f"        pki_dir: {PKI_DIR}\n")
        pki = host_ansible(f"{VENV}/bin/ansible-playbook", "-i", INVENTORY, f"{ROOT}/pki.yml")
        assert pki.rc == 0, (pki.stdout + pki.stderr)[-4000:]
        for name in ("ca/ca.crt", "ca/ca.key", "gateway/client.crt", "plugins/a/server.crt", "plugins/a/server.key"):
            assert exists(f"{PKI_DIR}/{name}"), name
        sh(q("openssl", "verify", "-x509_strict", "-CAfile", f"{PKI_DIR}/ca/ca.crt", f"{PKI_DIR}/plugins/a/server.crt"))
        TIMES["pki role on the host"] = time.monotonic() - t
    except BaseException:
        cleanup()
        raise

    yield {"before": before}

    t = time.monotonic()
    cleanup()
    TIMES["cleanup"] = time.monotonic() - t
    TIMES["whole module"] = time.monotonic() - t_all
    say("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))
    after = snapshot()
    assert after == before, f"{GATEWAY} is not as the test found it:\nbefore {before}\nafter  {after}"


def tree_sums():
    return sh(f"cd {shlex.quote(PKI_DIR)} && find . -type f | sort | xargs sha256sum").stdout


def test_auto_mode_installs_a_running_timer_on_a_systemd_host(controller):
    # Check mode first, on a host without the schedule: systemd cannot know a timer whose unit is not
    # written, so the role must report the changes without asking systemd about it, and write nothing.
    dry = apply_schedule("--check", "--diff")
    say(f"role --check on a clean host: changed={dry.changed} in {dry.seconds:.1f} s: {dry.changed_tasks}")
    assert dry.changed >= 3, dry.stdout[-3000:]
    for path in (*UNITS, WANTS_LINK, WRAPPER, LOG_DIR, CRON_FILE):
        assert not exists(path), f"--check wrote {path}"
    assert sh(q("systemctl", "list-units", "--all", "--no-legend", "--plain", "mcp-mtls-rotate*")).stdout.strip() == ""

    res = apply_schedule()
    TIMES["role install"] = res.seconds
    say(f"role install: changed={res.changed} in {res.seconds:.1f} s: {res.changed_tasks}")
    assert res.changed >= 3, res.stdout[-3000:]  # at least the log folder, the wrapper and the units

    # auto picked systemd: the units, no cron file.
    for unit in UNITS:
        f = HOST.file(unit)
        assert f.is_file and (f.user, f.group, f.mode) == ("root", "root", 0o644), unit
        assert f.content_string.startswith("#\n# Ansible managed\n#\n"), unit
    assert not exists(CRON_FILE), "auto mode on a systemd host must not install the cron job"
    wrapper = HOST.file(WRAPPER)
    assert wrapper.is_file and (wrapper.user, wrapper.mode) == ("root", 0o750)
    settings_file = HOST.file(SETTINGS)
    assert settings_file.is_file and (settings_file.user, settings_file.mode) == ("root", 0o600)
    settings = json.loads(settings_file.content_string)
    assert settings["command"] == [f"{VENV}/bin/ansible-playbook", "-i", INVENTORY, CHECK], settings
    assert settings["environment"]["ANSIBLE_CONFIG"] == CONFIG, "the job must use the installing run's config file"

    # Enabled, active, with the settings the template asked for.
    assert sh(q("systemctl", "is-enabled", TIMER)).stdout.strip() == "enabled"
    assert sh(q("systemctl", "is-active", TIMER)).stdout.strip() == "active"
    assert HOST.file(WANTS_LINK).is_symlink
    timer = props(TIMER, "Persistent", "RandomizedDelayUSec", "AccuracyUSec", "Unit", "FragmentPath", "TimersCalendar",
                  "NextElapseUSecRealtime", "LoadState")
    say(f"timer: {timer}")
    assert (timer["Persistent"], timer["RandomizedDelayUSec"], timer["AccuracyUSec"]) == ("yes", "1h", "1s"), timer
    assert (timer["Unit"], timer["FragmentPath"], timer["LoadState"]) == (SERVICE, f"{UNIT_DIR}/{TIMER}", "loaded"), timer
    assert "OnCalendar=*-*-* 00:00:00" in timer["TimersCalendar"], timer

    # The next elapse: in the future, within a day and the random delay, between 00:00 and 01:00 local time.
    listed = [line for line in sh(q("systemctl", "list-timers", "--all", "--no-legend", TIMER)).stdout.splitlines()
              if line.strip()]
    assert len(listed) == 1 and listed[0].split()[-2:] == [TIMER, SERVICE], listed
    next_str = timer["NextElapseUSecRealtime"]
    assert next_str and listed[0].startswith(next_str), (next_str, listed)
    clock = sh(q("date", "-d", next_str, "+%s %H %M %S") + " && date +%s").stdout.split()
    next_s, hour, minute, second, now_s = int(clock[0]), int(clock[1]), int(clock[2]), int(clock[3]), int(clock[4])
    since_midnight = hour * 3600 + minute * 60 + second
    say(f"next elapse {next_str}: in {next_s - now_s} s, {since_midnight} s after midnight (random delay <= 3600 s)")
    assert 0 < next_s - now_s <= 86400 + 3600 + 1, (next_str, now_s)
    assert since_midnight <= 3600 + 1, next_str

    verify = sh(q("systemd-analyze", "verify", *UNITS) + " 2>&1")
    assert verify.stdout.strip() == "", f"systemd-analyze verify is not clean:\n{verify.stdout}"

    service = props(SERVICE, "Type", "ExecStart", "ProtectSystem", "PrivateTmp", "ReadWritePaths", "ActiveState",
                    "SuccessExitStatus")
    assert service["Type"] == "oneshot" and f"argv[]={WRAPPER} --now" in service["ExecStart"], service
    # Strict hardening (the default), and the real run below passes under it.
    assert (service["ProtectSystem"], service["PrivateTmp"]) == ("strict", "yes"), service
    assert {f"-{LOG_DIR}", "-/run", f"-{INV_DIR}", "-/root/.ansible", "-/root/.ssh"} <= set(service["ReadWritePaths"].split()), service
    assert service["SuccessExitStatus"].split()[:1] == ["75"], service
    analyzed = sh(q("systemd-analyze", "security", SERVICE, "--no-pager")).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", analyzed).group(1))
    say(f"systemd-analyze security {SERVICE}: {exposure}")
    assert exposure <= 3.0, analyzed[-600:]
    # Installing never runs the job.
    assert service["ActiveState"] == "inactive" and run_logs() == [] and not exists(LAST_RUN), service

    again = apply_schedule()
    TIMES["role no-op"] = again.seconds
    say(f"role re-applied: changed={again.changed} in {again.seconds:.1f} s")
    assert again.changed == 0, again.stdout[-3000:]


def test_the_service_runs_the_installed_check_playbook(controller):
    sums = tree_sums()
    run = start_service()
    TIMES["service run (ok)"] = run.seconds
    p = run.props
    unit_s = (int(p["ExecMainExitTimestampMonotonic"]) - int(p["ExecMainStartTimestampMonotonic"])) / 1e6
    assert run.rc == 0, f"systemctl start: rc {run.rc} {run.stderr}\n{run.journal[-4000:]}"
    assert (p["Result"], p["ExecMainStatus"], p["ActiveState"]) == ("success", "0", "inactive"), (p, run.journal[-3000:])

    journal = run.journal
    assert "PLAY [Check the expiry of every MCP mTLS certificate]" in journal, journal[-3000:]
    assert "All 3 certificates valid for more than 15 days" in journal, journal[-3000:]
    assert "Plugin a: expires" in journal, journal[-3000:]
    assert "PLAY RECAP" in journal, journal[-3000:]
    recap = recaps(journal)
    assert set(recap) == {"localhost"}, journal[-2000:]
    assert (recap["localhost"]["failed"], recap["localhost"]["changed"]) == (0, 0), journal[-2000:]
    assert re.search(r"^mcp-mtls-rotate: ok in \d+s; log /var/log/mcp-mtls-rotate/rotate-\d{8}T\d{6}Z(-\d+)?\.log$",
                     journal, re.M), journal[-1000:]

    record = last_run()
    say(f"ok run: systemctl start {run.seconds:.1f} s, unit {unit_s:.1f} s, last-run.json {record}")
    assert (record["status"], record["rc"]) == ("ok", 0), record
    assert (record["playbook"], record["inventory"]) == (CHECK, INVENTORY), record
    assert record["host"] == sh("uname -n").stdout.strip(), record
    assert record["started"] <= record["finished"] and 0 <= record["duration_seconds"] <= unit_s + 1, record
    assert run_logs() == [record["log"]], run_logs()
    log = sh(q("cat", record["log"])).stdout
    assert recaps(log) == recap and f"# mcp-mtls-rotate: run started {record['started']}" in log, log[-2000:]
    assert "ANSIBLE_CONFIG" in log and "PATH" in log, log[:600]

    status = sh(q(WRAPPER, "--status"), ok=None)
    assert status.rc == 0 and json.loads(status.stdout) == record, (status.rc, status.stdout, status.stderr)
    assert tree_sums() == sums, "check.yml must not change the PKI tree"
    assert sh(q("systemctl", "is-active", TIMER)).stdout.strip() == "active"


def test_a_failing_scheduled_run_fails_the_unit_and_is_recorded(controller):
    first_log = last_run()["log"]
    res = apply_schedule(rotate_schedule_extra_args=["-e", "check_threshold_days=100000"])
    say(f"role with extra args: changed={res.changed} in {res.seconds:.1f} s: {res.changed_tasks}")
    assert res.changed >= 1, res.stdout[-3000:]
    assert json.loads(HOST.file(SETTINGS).content_string)["command"][-2:] == ["-e", "check_threshold_days=100000"]

    time.sleep(1.1)  # the run logs are named by the second
    run = start_service()
    TIMES["service run (failing)"] = run.seconds
    p = run.props
    assert run.rc != 0, f"systemctl start must fail when the run fails: {run.stdout} {run.stderr}"
    assert (p["Result"], p["ActiveState"]) == ("exit-code", "failed"), (p, run.journal[-3000:])
    assert sh(q("systemctl", "is-failed", SERVICE), ok=None).stdout.strip() == "failed"

    journal = run.journal
    assert "Certificates needing attention: " in journal and "threshold 100000 days" in journal, journal[-3000:]
    recap = recaps(journal)
    assert set(recap) == {"localhost"} and recap["localhost"]["failed"] == 1, journal[-2000:]
    assert "PLAY [Check the expiry" in journal and "All 3 certificates valid" not in journal, \
        "the journal of this invocation must hold this run only"
    assert re.search(r"^mcp-mtls-rotate: FAILED, rc [1-9]\d*, after \d+s; log ", journal, re.M), journal[-1000:]

    record = last_run()
    say(f"failing run: systemctl start rc {run.rc} in {run.seconds:.1f} s, ExecMainStatus {p['ExecMainStatus']}, "
        f"last-run.json {record}")
    assert record["status"] == "failed" and record["rc"] != 0 and str(record["rc"]) == p["ExecMainStatus"], (record, p)
    assert record["log"] != first_log and run_logs() == sorted([first_log, record["log"]]), (record, run_logs())
    status = sh(q(WRAPPER, "--status"), ok=None)
    assert status.rc == 1 and json.loads(status.stdout) == record and "FAILED" in status.stderr, status.stderr
    # A failed run does not stop the schedule.
    assert sh(q("systemctl", "is-active", TIMER)).stdout.strip() == "active"
    assert sh(q("systemctl", "is-enabled", TIMER)).stdout.strip() == "enabled"


def test_state_absent_removes_the_schedule_and_keeps_the_logs(controller):
    logs = run_logs()
    record = last_run()
    assert len(logs) == 2, logs
    res = apply_schedule(rotate_schedule_state="absent")
    say(f"role state absent: changed={res.changed} in {res.seconds:.1f} s: {res.changed_tasks}")
    assert res.changed >= 3, res.stdout[-3000:]  # timer stopped/disabled, units removed, wrapper removed

    for path in (*UNITS, WANTS_LINK, WRAPPER, SETTINGS, CRON_FILE):
        assert not exists(path), path
    timers = sh("systemctl list-timers --all --no-legend").stdout
    assert TIMER not in timers, timers
    assert sh(q("systemctl", "is-active", TIMER), ok=None).stdout.strip() == "inactive"
    files = sh(q("systemctl", "list-unit-files", "--no-legend", "mcp-mtls-rotate*"), ok=None).stdout
    assert "mcp-mtls-rotate" not in files, files
    # Nothing of it stays loaded, not even the failed result of the last run (it would keep the host "degraded").
    loaded = sh(q("systemctl", "list-units", "--all", "--no-legend", "--plain", "mcp-mtls-rotate*")).stdout.strip()
    assert loaded == "", loaded
    failed = sh("systemctl --failed --no-legend --plain").stdout
    assert SERVICE not in failed, failed

    # The logs stay.
    assert run_logs() == logs and last_run() == record

    again = apply_schedule(rotate_schedule_state="absent")
    assert again.changed == 0, again.stdout[-3000:]
