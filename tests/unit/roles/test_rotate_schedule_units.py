"""The templates of role rotate_schedule, rendered with jinja2 and Ansible's own filters from the role's
defaults and vars, then parsed (units), checked by systemd-analyze (where installed), and the wrapper (the
host package's rotate.py behind a first line) with its settings run as the role installs them.

systemd mode cannot run here (no systemd as PID 1); the installed units are exercised on systemd hosts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2.nativetypes import NativeEnvironment

from ansible.plugins.filter.core import FilterModule as CoreFilters
from ansible.plugins.filter.mathstuff import FilterModule as MathFilters
from ansible.plugins.test.core import TestModule as CoreTests
from ansible.plugins.test.files import TestModule as FileTests

ROLE = Path(__file__).resolve().parents[3] / "roles" / "rotate_schedule"
PROGRAM = ROLE.parents[1] / "host" / "src" / "mcp_mtls_host" / "rotate.py"
INVENTORY = "/srv/mcp/inventory/hosts.yml"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# The preflight's stat of rotate_schedule_systemd_marker: a folder where systemd runs the machine, else missing.
SYSTEMD_RUNS = {"stat": {"exists": True, "isdir": True}}
NO_SYSTEMD = {"stat": {"exists": False}}
# What tasks/wrapper.yml registers from `ansible-playbook --version` (one line of it): the wrapper's interpreter.
PYTHON = "/opt/ansible/venv/bin/python3"
VERSION = {"stdout": f"ansible-playbook [core 2.19.0]\n  python version = 3.12.3 (main, Apr  9 2024) [GCC 13.2.0] ({PYTHON})\n"
                     "  jinja version = 3.1.6\n"}


def _lookup(plugin, path):
    """Ansible's file lookup (the default rstrip), all the templates use."""
    assert plugin == "ansible.builtin.file", plugin
    return Path(path).read_text().rstrip()


def _environment(cls):
    # Ansible renders templates with trim_blocks and keeps the last newline.
    env = cls(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(CoreFilters().filters())
    env.filters.update(MathFilters().filters())
    # Ansible's default filter replaces only Ansible's own undefined marker; jinja's does the same for jinja's Undefined.
    env.filters["default"] = env.filters["d"] = jinja2.filters.do_default
    env.tests.update(CoreTests().tests())
    env.tests.update(FileTests().tests())
    return env


NATIVE = _environment(NativeEnvironment)
TEXT = _environment(jinja2.Environment)


class LazyVars(dict):
    """Variables templated on first use, like Ansible's: defaults and vars may refer to each other."""

    def __init__(self, raw):
        super().__init__(raw)
        self._resolved = {}

    def __getitem__(self, key):
        if key not in self._resolved:
            self._resolved[key] = self._resolve(super().__getitem__(key))
        return self._resolved[key]

    def _resolve(self, value):
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            tmpl = NATIVE.from_string(value)
            return NATIVE.concat(tmpl.root_render_func(tmpl.new_context(self, shared=True)))
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value


def role_vars(**override):
    data = {}
    for name in ("defaults/main.yml", "vars/main.yml"):
        data.update(yaml.safe_load((ROLE / name).read_text()))
    data.update(
        role_path=str(ROLE),
        ansible_playbook_python="/opt/ansible/venv/bin/python3",
        ansible_config_file="/srv/mcp/ansible.cfg",
        ansible_managed="Ansible managed",
        rotate_schedule_inventory=INVENTORY,
        __rotate_schedule_run_systemd=SYSTEMD_RUNS,  # what tasks/preflight.yml finds where systemd runs
        __rotate_schedule_version=VERSION,  # what tasks/wrapper.yml finds
        lookup=_lookup,
        dict=dict,  # a global of Ansible's templates; render() gives the templates none
    )
    data.update(override)
    return LazyVars(data)


def render(template, **override):
    return render_text((ROLE / "templates" / template).read_text(), role_vars(**override))


def render_text(text, settings):
    tmpl = TEXT.from_string(text)
    return TEXT.concat(tmpl.root_render_func(tmpl.new_context(settings, shared=True)))


def parse_unit(text):
    """{section: {key: [values]}}; refuses what systemd would not read as intended."""
    sections, current = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = re.fullmatch(r"\[([A-Za-z]+)\]", stripped)
        if header:
            assert header[1] not in sections, f"line {number}: section [{header[1]}] repeated"
            current = sections[header[1]] = {}
            continue
        assert current is not None, f"line {number} outside a section: {line!r}"
        key, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Za-z0-9]*", key), f"line {number} is no Key=Value: {line!r}"
        assert value == value.strip() and value, f"line {number}: empty or padded value: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def one(section, key):
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


@pytest.fixture
def units():
    return {name: render(name + ".j2") for name in ("mcp-mtls-rotate.service", "mcp-mtls-rotate.timer")}


def test_every_template_starts_with_ansible_managed(units):
    for name in ("mcp-mtls-rotate.service", "mcp-mtls-rotate.timer", "mcp-mtls-rotate.cron"):
        assert render(name + ".j2").startswith("#\n# Ansible managed\n#\n"), name
    wrapper = render("mcp-mtls-rotate.py.j2")
    head = f"#!{PYTHON}\n#\n# Ansible managed\n#\n"
    assert wrapper.startswith(head)
    assert wrapper[len(head):] == PROGRAM.read_text()  # rotate.py as it is, ending with one newline


def test_timer_is_persistent_randomized_and_precise(units):
    unit = parse_unit(units["mcp-mtls-rotate.timer"])
    assert set(unit) == {"Unit", "Timer", "Install"}
    timer = unit["Timer"]
    assert one(timer, "OnCalendar") == "daily"
    assert one(timer, "Persistent") == "true"
    assert one(timer, "RandomizedDelaySec") == "3600"
    assert one(timer, "AccuracySec") == "1s"
    assert one(timer, "Unit") == "mcp-mtls-rotate.service"
    assert one(unit["Install"], "WantedBy") == "timers.target"


def test_service_is_a_hardened_oneshot_of_the_wrapper(units):
    unit = parse_unit(units["mcp-mtls-rotate.service"])
    assert set(unit) == {"Unit", "Service"}  # no [Install]: only the timer starts it
    svc = unit["Service"]
    assert one(svc, "Type") == "oneshot"
    assert one(svc, "ExecStart") == "/usr/local/sbin/mcp-mtls-rotate --now"  # the timer does the random delay
    assert one(svc, "SuccessExitStatus") == "75"  # skipped because a manual run held the lock
    assert one(svc, "TimeoutStartSec") == str(3600 + 300)
    # Default: strict. Read-only system and home but for what the job writes; no new privileges.
    assert (one(svc, "ProtectSystem"), one(svc, "ProtectHome")) == ("strict", "read-only")
    assert svc["ReadWritePaths"] == ["-/var/log/mcp-mtls-rotate", "-/run", "-/srv/mcp/inventory", "-%h/.ansible", "-%h/.ssh"]
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID", "ProtectKernelTunables",
                "ProtectControlGroups", "RestrictNamespaces", "MemoryDenyWriteExecute", "LockPersonality"):
        assert one(svc, key) == "yes", key
    assert one(svc, "CapabilityBoundingSet").split() == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
                                                         "CAP_FOWNER", "CAP_FSETID"]
    assert one(svc, "SystemCallFilter") == "@system-service"
    assert "User" not in svc  # root: the PKI tree and root's SSH keys


def test_compatible_hardening_keeps_sudo_and_podman_working():
    svc = parse_unit(render("mcp-mtls-rotate.service.j2", rotate_schedule_hardening="compatible"))["Service"]
    assert one(svc, "ProtectSystem") == "full"  # at most full: strict would make /var (podman state) read-only
    assert one(svc, "PrivateTmp") == "yes"
    assert one(svc, "ProtectKernelModules") == "yes" and one(svc, "ProtectKernelLogs") == "yes"
    # sudo (setuid), podman (namespaces, capabilities) and root's ~/.ssh must keep working.
    for absent in ("NoNewPrivileges", "ProtectHome", "User", "CapabilityBoundingSet", "SystemCallFilter",
                   "PrivateDevices", "RestrictNamespaces", "ProtectClock"):
        assert absent not in svc, absent
    assert svc["ReadWritePaths"] == ["-/var/log/mcp-mtls-rotate", "-/run", "-/srv/mcp/inventory"]


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("hardening, most", [("strict", 3.0), ("compatible", 9.0)])
def test_exposure_of_the_service(tmp_path, hardening, most):
    unit = tmp_path / "mcp-mtls-rotate.service"
    unit.write_text(render("mcp-mtls-rotate.service.j2", rotate_schedule_hardening=hardening))
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout[-500:] + proc.stderr[-500:]
    print(f"{hardening}: exposure {found.group(1)}")
    assert float(found.group(1)) <= most, proc.stdout[-2000:]


def test_service_and_timer_follow_the_settings():
    timer = parse_unit(render("mcp-mtls-rotate.timer.j2", rotate_schedule_on_calendar="Mon..Fri 02:30",
                              rotate_schedule_random_delay=0, rotate_schedule_accuracy_sec="1min"))["Timer"]
    assert (one(timer, "OnCalendar"), one(timer, "RandomizedDelaySec"), one(timer, "AccuracySec")) == \
        ("Mon..Fri 02:30", "0", "1min")
    svc = parse_unit(render("mcp-mtls-rotate.service.j2", rotate_schedule_timeout=0, rotate_schedule_wrapper="/opt/r",
                            rotate_schedule_read_write_paths=["/etc/mcpgateway", "", "/var/log/mcp-mtls-rotate"]))["Service"]
    assert one(svc, "TimeoutStartSec") == "infinity" and one(svc, "ExecStart") == "/opt/r --now"
    assert svc["ReadWritePaths"] == ["-/var/log/mcp-mtls-rotate", "-/run", "-/etc/mcpgateway", "-%h/.ansible", "-%h/.ssh"]


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="systemd-analyze is not installed")
def test_systemd_analyze_accepts_the_units(tmp_path):
    wrapper = tmp_path / "mcp-mtls-rotate"  # verify wants ExecStart= to be an executable
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(0o755)
    for name in ("mcp-mtls-rotate.service", "mcp-mtls-rotate.timer"):
        (tmp_path / name).write_text(render(name + ".j2", rotate_schedule_wrapper=str(wrapper)))
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(tmp_path / "mcp-mtls-rotate.timer"),
                           str(tmp_path / "mcp-mtls-rotate.service")], capture_output=True, text=True, check=False)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "mcp-mtls-rotate" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="systemd-analyze is not installed")
def test_default_schedule_values_are_valid_for_systemd():
    settings = role_vars()
    assert subprocess.run([SYSTEMD_ANALYZE, "calendar", settings["rotate_schedule_on_calendar"]],
                          capture_output=True, check=False).returncode == 0
    for span in (settings["rotate_schedule_random_delay"], settings["rotate_schedule_accuracy_sec"]):
        proc = subprocess.run([SYSTEMD_ANALYZE, "timespan", str(span)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def test_the_preflight_looks_for_systemd_at_rotate_schedule_systemd_marker():
    """The stat whose result the method is picked from (below) is the one of the preflight."""
    tasks = yaml.safe_load((ROLE / "tasks/preflight.yml").read_text())
    [stat] = [task for task in tasks if "ansible.builtin.stat" in task and task.get("register") == "__rotate_schedule_run_systemd"]
    assert stat["ansible.builtin.stat"]["path"] == "{{ rotate_schedule_systemd_marker }}"
    assert role_vars()["rotate_schedule_systemd_marker"] == "/run/systemd/system"


@pytest.mark.parametrize(
    ("method", "found", "picked"),
    [("auto", SYSTEMD_RUNS, "systemd"), ("auto", NO_SYSTEMD, "cron"), ("auto", {"stat": {"exists": True, "isdir": False}}, "cron"),
     ("cron", SYSTEMD_RUNS, "cron"), ("systemd", NO_SYSTEMD, "systemd")],  # the preflight then fails (tests/integration)
    ids=["auto-systemd-runs", "auto-no-systemd", "auto-marker-not-a-folder", "cron-forced", "systemd-forced"],
)
def test_method_auto_picks_systemd_where_it_runs_the_machine_else_cron(method, found, picked):
    settings = role_vars(rotate_schedule_method=method, __rotate_schedule_run_systemd=found)
    assert settings["__rotate_schedule_has_systemd"] is found["stat"].get("isdir", False)
    assert settings["__rotate_schedule_method"] == picked
    assert (settings["__rotate_schedule_want_systemd"], settings["__rotate_schedule_want_cron"]) == (picked == "systemd", picked == "cron")
    assert role_vars(rotate_schedule_method=method, rotate_schedule_state="absent",
                     __rotate_schedule_run_systemd=found)["__rotate_schedule_want_cron"] is False


def test_cron_entry_has_a_stable_minute_per_inventory():
    def entry(inventory):
        lines = render("mcp-mtls-rotate.cron.j2", rotate_schedule_inventory=inventory).splitlines()
        return [line for line in lines if line and not line.startswith("#")][-1]

    first = entry(INVENTORY)
    assert re.fullmatch(r"([0-9]|[1-5][0-9]) 0 \* \* \* root /usr/local/sbin/mcp-mtls-rotate --random-delay 3600 >/dev/null",
                        first), first
    assert entry(INVENTORY) == first  # deterministic
    minutes = {entry(f"/srv/site{n}/hosts.yml").split()[0] for n in range(40)}
    assert len(minutes) > 15  # spread, not all in one minute


def test_argument_specs_match_defaults():
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, spec in options.items():
        assert spec.get("default") == defaults[name], name
        assert spec.get("description"), name


def wrapper_task(name_start, **override):
    """A task of tasks/wrapper.yml with its module arguments rendered from the role's variables."""
    [task] = [t for t in yaml.safe_load((ROLE / "tasks/wrapper.yml").read_text()) if t["name"].startswith(name_start)]
    module = next(key for key in task if key.startswith("ansible.builtin."))
    settings = role_vars(**override)
    return {key: render_text(value, settings) if isinstance(value, str) else value
            for key, value in task[module].items()}


def install_wrapper(**override):
    """The settings file and the wrapper, as tasks/wrapper.yml writes them; the wrapper checked by its validate."""
    settings_task = wrapper_task("Install the settings of the wrapper", **override)
    program_task = wrapper_task("Install the wrapper", **override)
    assert (settings_task["mode"], program_task["mode"]) == ("0600", "0750")
    settings = Path(settings_task["dest"])
    assert settings.name == Path(program_task["dest"]).name + ".json"
    settings.write_text(settings_task["content"])
    settings.chmod(0o600)
    script = Path(program_task["dest"])
    script.write_text(render(program_task["src"], **override))
    script.chmod(0o750)
    validate = shlex.split(program_task["validate"].replace("%s", shlex.quote(str(script))))
    assert subprocess.run(validate, check=False).returncode == 0, validate
    return script, json.loads(settings.read_text())


def python_assert(stdout):
    """Whether the assert of tasks/wrapper.yml passes on this `ansible-playbook --version` output."""
    [task] = [t for t in yaml.safe_load((ROLE / "tasks/wrapper.yml").read_text()) if t["name"].startswith("Assert that it is Python")]
    settings = role_vars(__rotate_schedule_version={"stdout": stdout})
    return all(render_text("{{ (%s) | bool }}" % cond, settings) == "True" for cond in task["ansible.builtin.assert"]["that"])


@pytest.mark.parametrize(("stdout", "python"), [
    (VERSION["stdout"], PYTHON),
    ("  python version = 3.9.2 (default, Feb 28 2021, 17:03:44) [GCC 10.2.1] (/srv/a(b)/bin/python3.9)",
     "/srv/a(b)/bin/python3.9"),
    ("  python version = 3.13.5 (main, Jun 25 2025, 18:55:22) [GCC 14.2.0] (/usr/bin/python3)", "/usr/bin/python3"),
    ("  python version = 3.10.1 (main) [GCC 10.2.1]\n  jinja version = 3.1.6 (/usr/lib/python3/dist-packages/jinja2)", None),
    ("  python version = 3.8.10 (default, Nov 22 2023) [GCC 9.4.0] (/usr/bin/python3)", None),
    ("  python version = 3.12.3 (main) [GCC 13.2.0] (/opt/my venv/bin/python3)", None),
    ("", None),
], ids=["venv", "parentheses", "system", "no-path", "python-3.8", "blank-in-path", "no-output"])
def test_the_wrapper_runs_with_the_python_of_ansible_playbook(stdout, python):
    """tasks/wrapper.yml asks `ansible-playbook --version` for its Python: 3.9 or later at a path a first line can name."""
    assert python_assert(stdout) is (python is not None)
    if python:
        assert role_vars(__rotate_schedule_version={"stdout": stdout})["__rotate_schedule_python"] == python


def test_the_python_of_the_real_ansible_playbook_is_found():
    playbook = Path(sys.executable).parent / "ansible-playbook"
    if not playbook.exists():
        pytest.skip(f"no {playbook}")
    proc = subprocess.run([str(playbook), "--version"], capture_output=True, text=True, check=True)
    assert python_assert(proc.stdout), proc.stdout
    python = role_vars(__rotate_schedule_version={"stdout": proc.stdout})["__rotate_schedule_python"]
    assert Path(python).samefile(sys.executable), python


def test_wrapper_passes_odd_values_through_intact(tmp_path):
    """Odd values through the settings file: paths with spaces and quotes, arguments with spaces.

    ansible-playbook is replaced here by a recorder of its argv and environment; the integration
    test runs the wrapper with the real ansible-playbook.
    """
    odd = tmp_path / "it's a dir"
    odd.mkdir()
    recorder = odd / "ansible-playbook"
    recorder.write_text('#!/bin/sh\nfor a in "$@"; do printf "ARG<%s>\\n" "$a"; done\n'
                        'printf "ENV<%s>\\n" "$MCP_NOTE" "$ANSIBLE_CONFIG" "$LC_ALL"\n')
    recorder.chmod(0o755)
    script, settings = install_wrapper(
        __rotate_schedule_version={"stdout": f"  python version = 3.11.0 (main) [GCC] ({sys.executable})"},
        rotate_schedule_wrapper=str(odd / "mcp-mtls-rotate"),
        rotate_schedule_ansible_playbook=str(recorder),
        rotate_schedule_inventory=str(odd / "inv $x"),
        rotate_schedule_playbook=str(odd / 'rot"ate.yml'),
        rotate_schedule_extra_args=["-e", "a=b c", "--limit", "*"],
        rotate_schedule_environment={"MCP_NOTE": "it's $HOME `x`", "MCP_EQ": "a=b", "MCP_N": 1, "MCP_B": True},
        rotate_schedule_log_dir=str(odd / "log"),
        rotate_schedule_lock_file=str(odd / "lock"),
    )
    assert settings["environment"] == {"ANSIBLE_CONFIG": "/srv/mcp/ansible.cfg", "MCP_NOTE": "it's $HOME `x`",
                                       "MCP_EQ": "a=b", "MCP_N": "1", "MCP_B": "True",  # strings, as env(1) got them
                                       "PATH": f"{odd}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    assert (settings["keep_logs"], settings["timeout"], settings["rc_locked"]) == (30, 3600, 75)
    proc = subprocess.run([str(script), "--now"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = re.findall(r"^ARG<(.*)>$", proc.stdout, re.M)
    assert args == ["-i", str(odd / "inv $x"), str(odd / 'rot"ate.yml'), "-e", "a=b c", "--limit", "*"]
    assert re.findall(r"^ENV<(.*)>$", proc.stdout, re.M) == ["it's $HOME `x`", "/srv/mcp/ansible.cfg", "C.UTF-8"]
    record = json.loads((odd / "log/last-run.json").read_text())
    assert record["playbook"] == str(odd / 'rot"ate.yml') and record["inventory"] == str(odd / "inv $x")
    assert stat.S_IMODE(os.stat(odd / "log").st_mode) == 0o750
    # The log names the environment's variables, not their values.
    header = Path(record["log"]).read_text().splitlines()[:3]
    assert header[2] == "# environment: ANSIBLE_CONFIG MCP_B MCP_EQ MCP_N MCP_NOTE PATH" and not any("`x`" in line for line in header), header
