"""bench/run.py: the four tools that build the certificate tree, and how a run of one is made and read.

Every tool runs as a subprocess in its own session (sh), so that an interrupted benchmark can stop the whole
child tree (stop_child); the Ansible tools' output (the ansible.posix.json callback) gives the recap and the
per-task durations (parse_ansible).
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TOOLS = ("upstream", "community", "floor", "ours")
DAYS = 825

CHILD = {"proc": None}


def sh(cmd, **kw):
    """Run cmd in its own session (so an interrupted benchmark can stop the whole child tree)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    CHILD["proc"] = proc
    out, err = proc.communicate()  # on SIGTERM, CHILD still names it for stop_child()
    CHILD["proc"] = None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def stop_child():
    proc = CHILD["proc"]
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.5)
        try:  # stragglers of the same session (ansible workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        time.sleep(0.2)


def venv_bin(name):
    for cand in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if cand.exists():
            return str(cand)
    return name


def plugin_names(n):
    return [f"plugin-{i:04d}" for i in range(1, n + 1)]


# ----------------------------------------------------------------------------------- tools
class Tool:
    """One way to build the tree. run() returns (ok, extra dict); extra may hold inner timings."""

    name = ""

    def __init__(self, work):
        self.work = work

    def prepare(self, key, n, pki):  # pragma: no cover - interface
        pass

    def run(self, phase, key, n, pki):  # pragma: no cover - interface
        raise NotImplementedError


class Upstream(Tool):
    name = "upstream"

    def run(self, phase, key, n, pki):
        r = sh(["bash", str(BENCH / "upstream.sh"), pki, key, str(DAYS)] + plugin_names(n))
        return r.returncode == 0, {"stderr": r.stderr[-2000:]} if r.returncode else {}


class Floor(Tool):
    name = "floor"

    def run(self, phase, key, n, pki):
        r = sh([sys.executable, str(BENCH / "floor.py"), phase, pki, key, str(DAYS)] + plugin_names(n))
        extra = {}
        try:
            extra = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            extra["stderr"] = r.stderr[-2000:]
        return r.returncode == 0, extra


class AnsibleTool(Tool):
    playbook = ""

    def extra_vars(self, key, n, pki):
        return {"pki_dir": pki, "pki_plugins": plugin_names(n), "bench_key_type": key, "bench_days": DAYS}

    def run(self, phase, key, n, pki):
        varfile = os.path.join(self.work, f"vars-{self.name}-{key}-{n}.json")
        with open(varfile, "w", encoding="utf-8") as f:
            json.dump(self.extra_vars(key, n, pki), f)
        r = sh([venv_bin("ansible-playbook"), "-i", inventory(self.work), "-e", "@" + varfile,
                str(BENCH / self.playbook)], cwd=str(REPO), env=ansible_env(self.work))
        return parse_ansible(r)


class Community(AnsibleTool):
    name = "community"
    playbook = "community_crypto.yml"


class Ours(AnsibleTool):
    name = "ours"
    playbook = "ours.yml"

    def extra_vars(self, key, n, pki):
        v = super().extra_vars(key, n, pki)
        v["bench_use_role"] = use_role()
        return v


OURS_VIA = {"value": "auto"}


def use_role():
    """Role mcpgateway.mtls.pki when it exists (or --ours-via role), else the modules directly."""
    if OURS_VIA["value"] != "auto":
        return OURS_VIA["value"] == "role"
    return (REPO / "roles" / "pki" / "tasks" / "main.yml").exists()


def ours_available():
    return (REPO / "plugins" / "modules" / "certificate_set.py").exists() and \
        (REPO / "plugins" / "modules" / "ca.py").exists()


def inventory(work):
    path = os.path.join(work, "inventory.ini")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    return path


def ansible_env(work):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": os.path.join(work, "ansible-local"),
        "ANSIBLE_REMOTE_TMP": os.path.join(work, "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PATH": str(Path(venv_bin("ansible-playbook")).parent) + os.pathsep + env.get("PATH", ""),
    })
    return env


def _ts(value):
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse_ansible(r):
    """Recap counts and per-task durations from the ansible.posix.json callback."""
    extra = {}
    try:
        out = json.loads(r.stdout[r.stdout.index("{"):])
    except ValueError:
        return False, {"stderr": (r.stderr or r.stdout)[-3000:]}
    stats = out.get("stats", {}).get("localhost", {})
    extra["changed"] = stats.get("changed", 0)
    extra["failures"] = stats.get("failures", 0) + stats.get("unreachable", 0)
    tasks, module_s = [], 0.0
    for play in out.get("plays", []):
        for t in play.get("tasks", []):
            d = t["task"].get("duration", {})
            if d.get("start") and d.get("end"):
                secs = round(_ts(d["end"]) - _ts(d["start"]), 3)
                tasks.append((secs, t["task"]["name"]))
                host = t.get("hosts", {}).get("localhost", {})
                if str(host.get("action", "")).startswith(("mcpgateway.mtls.", "community.crypto.")) \
                        and not host.get("skipped"):
                    module_s += secs
    extra["module_s"] = round(module_s, 3)
    if r.returncode != 0 and not out.get("plays"):
        extra["stderr"] = (r.stderr or r.stdout)[-3000:]
    extra["tasks_s"] = round(sum(secs for secs, _name in tasks), 3)
    if tasks:
        top = max(tasks)
        extra["top_task"] = f"{top[1]} ({top[0]} s)"
    if r.returncode != 0:
        msgs = []
        for play in out.get("plays", []):
            for t in play.get("tasks", []):
                for h in t.get("hosts", {}).values():
                    if h.get("failed"):
                        msgs.append(str(h.get("msg"))[:500])
        extra["stderr"] = ("; ".join(msgs) or r.stderr)[-3000:]
    return r.returncode == 0 and extra["failures"] == 0, extra


# The class of each tool, by name.
CLASSES = {"upstream": Upstream, "community": Community, "floor": Floor, "ours": Ours}
