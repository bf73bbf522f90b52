#!/usr/bin/env python
"""PKI benchmark for mcpgateway.mtls (entry point of `make bench`; method in bench/README.md).

Scenario = CA + gateway client + N plugin server certificates with one key type. For every scenario,
tool and repetition: a fresh empty directory, the "first run" (timed), a check that the tree is
complete and valid, the "no-op run" on the complete tree (timed), a check that it changed nothing.
Tools: upstream (bench/upstream.sh), community (bench/community_crypto.yml), floor (bench/floor.py),
ours (bench/ours.yml). Wall time = time.perf_counter() around the whole subprocess.

Examples:
    .venv/bin/python bench/run.py                                  # the whole matrix
    .venv/bin/python bench/run.py --quick                          # skip community.crypto's slowest
    .venv/bin/python bench/run.py --skip community@ecdsa:1000      # all but the ~2 h cell
    .venv/bin/python bench/run.py --only ours,floor --n 50 --key rsa
    .venv/bin/python bench/run.py --scenarios ecdsa:1000 --reps 5 --reps community=1
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TOOLS = ("upstream", "community", "floor", "ours")
MATRIX = (("rsa", 1), ("rsa", 10), ("rsa", 50), ("ecdsa", 50), ("ecdsa", 1000))
DEFAULT_REPS = 3
# community.crypto needs minutes per run here (about 0.45 s per module call, five calls per leaf):
# one repetition by default at these points; --quick skips the two slowest.
SLOW_REPS = {("community", "rsa", 50): 1, ("community", "ecdsa", 50): 1, ("community", "ecdsa", 1000): 1}
QUICK_SKIP = {("community", "rsa", 50), ("community", "ecdsa", 1000)}
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


# ------------------------------------------------------------------------------ verification
def tree_files(pki, n):
    files = ["ca/ca.key", "ca/ca.crt", "gateway/client.key", "gateway/client.crt", "gateway/ca.crt"]
    for name in plugin_names(n):
        files += [f"plugins/{name}/server.key", f"plugins/{name}/server.crt", f"plugins/{name}/ca.crt"]
    return files


def snapshot(pki):
    snap = {}
    for root, _dirs, files in os.walk(pki):
        for fn in files:
            p = os.path.join(root, fn)
            st = os.stat(p)
            with open(p, "rb") as f:
                snap[os.path.relpath(p, pki)] = (hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns,
                                                 st.st_mode & 0o777)
    return snap


def verify_tree(pki, key, n):
    """A broken tool must not win: every file present, every leaf signed by the CA, its key matching,
    the right key type, the plugin SANs, identical CA copies, `openssl verify` on samples.
    Returns (errors, strict) where strict says whether the samples pass -x509_strict with purpose."""
    # pylint: disable=import-outside-toplevel
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    errors = []
    missing = [f for f in tree_files(pki, n) if not os.path.isfile(os.path.join(pki, f))]
    if missing:
        return [f"missing {len(missing)} files, e.g. {missing[:3]}"], False

    def spki(k):
        return k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    with open(os.path.join(pki, "ca/ca.crt"), "rb") as f:
        ca_pem = f.read()
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaves = [("gateway/client", "gateway/ca.crt", None)]
    leaves += [(f"plugins/{p}/server", f"plugins/{p}/ca.crt", p) for p in plugin_names(n)]
    for base, copy, name in [("ca/ca", None, None)] + leaves:
        try:
            with open(os.path.join(pki, base + ".crt"), "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(os.path.join(pki, base + ".key"), "rb") as f:
                k = serialization.load_pem_private_key(f.read(), None, unsafe_skip_rsa_key_validation=True)
            cert.verify_directly_issued_by(ca)
            if spki(k.public_key()) != spki(cert.public_key()):
                errors.append(f"{base}: key does not match certificate")
            if key == "rsa" and not (isinstance(k, rsa.RSAPrivateKey) and k.key_size == 4096):
                errors.append(f"{base}: not RSA-4096")
            if key == "ecdsa" and not (isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"):
                errors.append(f"{base}: not P-256")
            if copy:
                with open(os.path.join(pki, copy), "rb") as f:
                    if f.read() != ca_pem:
                        errors.append(f"{copy}: differs from ca/ca.crt")
            if name:
                sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                want = {name, f"mcp-plugin-{name}", "localhost"}
                if not want <= set(sans.get_values_for_type(x509.DNSName)):
                    errors.append(f"{base}: SANs {sans} lack {want}")
        except Exception as exc:  # noqa: BLE001 - any failure is a verification error
            errors.append(f"{base}: {type(exc).__name__}: {exc}")
        if len(errors) > 5:
            break
    ca_file = os.path.join(pki, "ca/ca.crt")
    samples = [("gateway/client.crt", "sslclient")]
    names = plugin_names(n)
    samples += [(f"plugins/{p}/server.crt", "sslserver") for p in sorted({names[0], names[-1]})]
    strict = True
    for rel, purpose in samples:
        r = sh(["openssl", "verify", "-CAfile", ca_file, os.path.join(pki, rel)])
        if r.returncode != 0:
            errors.append(f"openssl verify {rel}: {(r.stdout + r.stderr).strip()[-300:]}")
        r = sh(["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca_file,
                os.path.join(pki, rel)])
        strict = strict and r.returncode == 0
    return errors, strict


# ------------------------------------------------------------------------------------ runner
def machine_info():
    def first_line(cmd):
        try:
            return sh(cmd).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    import cryptography  # pylint: disable=import-outside-toplevel

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "nproc": os.cpu_count(),
        "cpu": first_line(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).strip(),
        "loadavg_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openssl_cli": first_line(["openssl", "version"]),
        "cryptography": cryptography.__version__,
        "ansible_core": first_line([venv_bin("ansible-playbook"), "--version"]),
        "git_head": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }
    try:
        man = REPO / ".build/ext-collections/ansible_collections/community/crypto/MANIFEST.json"
        info["community_crypto"] = json.loads(man.read_text())["collection_info"]["version"]
    except (OSError, ValueError, KeyError):
        info["community_crypto"] = "?"
    return info


def parse_reps(values):
    default, per_tool = DEFAULT_REPS, {}
    for v in values or []:
        for part in v.split(","):
            if "=" in part:
                t, c = part.split("=", 1)
                if t not in TOOLS:
                    sys.exit(f"--reps: unknown tool {t!r}")
                per_tool[t] = int(c)
            else:
                default = int(part)
    return default, per_tool


def scenarios_from(args):
    if args.scenarios:
        out = []
        for s in args.scenarios.split(","):
            k, n = s.split(":")
            out.append((k, int(n)))
        return out
    ns = [int(x) for x in args.n.split(",")] if args.n else None
    keys = ["rsa", "ecdsa"] if args.key in (None, "both") else [args.key]
    if ns and args.key not in (None, "both"):
        return [(k, n) for k in keys for n in ns]
    out = [(k, n) for k, n in MATRIX if k in keys and (ns is None or n in ns)]
    if not out and ns:
        out = [(k, n) for k in keys for n in ns]
    return out


def plan(args):
    tools = args.only.split(",") if args.only else list(TOOLS)
    for t in tools:
        if t not in TOOLS:
            sys.exit(f"--only: unknown tool {t!r} (known: {', '.join(TOOLS)})")
    default, per_tool = parse_reps(args.reps)
    skips = set((args.skip or "").split(","))
    items = []
    for key, n in scenarios_from(args):
        for t in tools:
            if args.quick and (t, key, n) in QUICK_SKIP:
                continue
            if f"{t}@{key}:{n}" in skips:
                continue
            reps = per_tool[t] if t in per_tool else SLOW_REPS.get((t, key, n), default)
            if reps > 0:
                items.append((key, n, t, reps))
    return items


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def one_run(tool, tname, key, n, rep, reps, work):
    """First run + checks + no-op run + checks, for one tool and repetition."""
    out = []
    pki = os.path.join(work, f"{key}-{n}-{tname}-{rep}", "certs", "mcp")
    os.makedirs(os.path.dirname(pki))
    rec = {"tool": tname, "key": key, "n": n, "rep": rep}
    for phase in ("first", "noop"):
        before = snapshot(pki) if phase == "noop" else None
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        ok, extra = tool.run(phase, key, n, pki)
        wall = time.perf_counter() - t0
        entry = dict(rec, phase=phase, wall_s=round(wall, 3), ok=ok, load1=round(load, 2), **extra)
        if ok and phase == "first":
            errors, strict = verify_tree(pki, key, n)
            entry["strict_valid"] = strict
            if errors:
                entry["ok"], entry["errors"] = False, errors
            if tname in ("community", "ours") and not entry.get("changed"):
                entry["ok"], entry["errors"] = False, ["first run reported no change"]
        if ok and phase == "noop":
            after = snapshot(pki)
            changed = sorted(p for p in set(before) | set(after)
                             if before.get(p, (None,))[0] != after.get(p, (None,))[0]
                             or before.get(p, (0, 0, 0))[2] != after.get(p, (0, 0, 0))[2])
            touched = sum(1 for p in after if p in before and before[p][1] != after[p][1])
            entry["files_changed"] = len(changed)
            entry["files_touched"] = touched
            if changed:
                entry["ok"], entry["errors"] = False, [f"no-op run changed {changed[:5]}"]
            if tname in ("community", "ours") and extra.get("changed"):
                entry["ok"] = False
                entry.setdefault("errors", []).append(f"no-op run reported changed={extra['changed']}")
            if tname == "floor" and extra.get("bad"):
                entry["ok"] = False
        out.append(entry)
        log(f"  {key:5} N={n:<4} {tname:9} rep {rep + 1}/{reps} {phase:5} "
            f"{wall:8.2f} s  {'ok' if entry['ok'] else 'FAILED ' + str(entry.get('errors') or entry.get('stderr'))[:400]}")
        if not entry["ok"]:
            break
    shutil.rmtree(os.path.dirname(os.path.dirname(pki)), ignore_errors=True)
    return out


def measure(args, items, work, runs, progress=None):
    classes = {"upstream": Upstream, "community": Community, "floor": Floor, "ours": Ours}
    scen = []
    for key, n, _t, _r in items:
        if (key, n) not in scen:
            scen.append((key, n))
    # Ansible start-up reference: an empty play, same inventory and config.
    if any(t in ("community", "ours") for _k, _n, t, _r in items):
        empty = os.path.join(work, "empty.yml")
        with open(empty, "w", encoding="utf-8") as f:
            f.write("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
        for rep in range(args.baseline_reps):
            t0 = time.perf_counter()
            r = sh([venv_bin("ansible-playbook"), "-i", inventory(work), empty], cwd=str(REPO),
                   env=ansible_env(work))
            runs.append({"tool": "ansible-empty-play", "key": "-", "n": 0, "rep": rep, "phase": "first",
                         "wall_s": round(time.perf_counter() - t0, 3), "ok": r.returncode == 0})
    # Blocks: per scenario the tools interleaved rep by rep; the single-rep slow cells
    # (community.crypto at N >= 50) come last, so everything else is measured first.
    blocks = []
    for key, n in scen:
        fast = [(t, r) for k, nn, t, r in items if (k, nn) == (key, n) and (t, k, nn) not in SLOW_REPS]
        if fast:
            blocks.append((key, n, fast))
    for key, n, t, r in items:
        if (t, key, n) in SLOW_REPS:
            blocks.append((key, n, [(t, r)]))
    for key, n, here in blocks:
        for rep in range(max(r for _t, r in here)):
            for tname, reps in here:
                if rep >= reps:
                    continue
                runs.extend(one_run(classes[tname](work), tname, key, n, rep, reps, work))
        if progress:
            progress(runs)
    return runs


# ----------------------------------------------------------------------------------- report
def fmt(x):
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def summarize(runs):
    cells = {}
    for r in runs:
        c = cells.setdefault((r["key"], r["n"], r["tool"], r["phase"]),
                             {"walls": [], "ok": True, "tasks": [], "inner": [], "module": [], "strict": None})
        if r["ok"]:
            c["walls"].append(r["wall_s"])
            if "tasks_s" in r:
                c["tasks"].append(r["tasks_s"])
            if "module_s" in r:
                c["module"].append(r["module_s"])
            if "inner_s" in r:
                c["inner"].append(r["inner_s"])
        else:
            c["ok"] = False
        if "strict_valid" in r:
            c["strict"] = r["strict_valid"] if c["strict"] is None else (c["strict"] and r["strict_valid"])
    for c in cells.values():
        c["median"] = statistics.median(c["walls"]) if c["walls"] else None
        c["min"] = min(c["walls"]) if c["walls"] else None
        c["max"] = max(c["walls"]) if c["walls"] else None
        c["reps"] = len(c["walls"])
        c["tasks_median"] = statistics.median(c["tasks"]) if c["tasks"] else None
        c["inner_median"] = statistics.median(c["inner"]) if c["inner"] else None
        c["module_median"] = statistics.median(c["module"]) if c["module"] else None
    return cells


def ratio(a, b):
    return a / b if a and b else None


def report(info, args_line, runs, cells, status="complete"):
    lines = ["# PKI benchmark results", "",
             f"Command: `{args_line}`  ", f"Status: {status}  ", f"Date (UTC): {info['date_utc']}; git HEAD {info['git_head']}  ",
             f"Machine: {info['nproc']} CPUs ({info['cpu']}), load average at start (1/5/15 min) "
             + " / ".join(f"{v:.2f}" for v in info["loadavg_start"]) + f", {info['platform']}  ",
             f"Python {info['python']}, cryptography {info['cryptography']}, {info['openssl_cli']}, "
             f"{info['ansible_core']}, community.crypto {info['community_crypto']}  ",
             f"ours via: {'role mcpgateway.mtls.pki' if use_role() else 'modules ca + certificate_set'}", "",
             "Wall seconds of the whole process (median over reps, min-max in brackets). "
             "'in-task' = ansible task durations from the json callback (module work without "
             "ansible-playbook start-up; in brackets, when recorded, only the mcpgateway.mtls.* or "
             "community.crypto.* tasks); for the floor: time after the imports. "
             "'strict' = sample certificates pass `openssl verify -x509_strict -purpose ...`.", ""]
    empty = [r["wall_s"] for r in runs if r["tool"] == "ansible-empty-play" and r["ok"]]
    if empty:
        lines += [f"ansible-playbook start-up reference (empty play): median {fmt(statistics.median(empty))} s "
                  f"over {len(empty)} runs.", ""]
    lines += ["| keys | N | tool | reps | first run s | first in-task s | no-op run s | no-op in-task s | strict |",
              "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    scen = []
    for r in runs:
        if r["tool"] != "ansible-empty-play" and (r["key"], r["n"]) not in scen:
            scen.append((r["key"], r["n"]))
    for key, n in scen:
        for t in TOOLS:
            f, o = cells.get((key, n, t, "first")), cells.get((key, n, t, "noop"))
            if not f:
                continue

            def cell(c):
                if not c:
                    return "-"
                if not c["ok"] and not c["walls"]:
                    return "FAILED"
                s = f"{fmt(c['median'])} ({fmt(c['min'])}-{fmt(c['max'])})" if c["reps"] > 1 else fmt(c["median"])
                return s + ("" if c["ok"] else " (some FAILED)")

            def inner(c):
                if not c:
                    return "-"
                text = fmt(c["tasks_median"] if c["tasks_median"] is not None else c["inner_median"])
                if c.get("module_median") is not None:
                    text += f" ({fmt(c['module_median'])})"
                return text

            strict = {True: "yes", False: "no", None: "-"}[f["strict"]]
            noop = cell(o) + (" (file exists only)" if t == "upstream" and o else "")
            lines.append(f"| {key} | {n} | {t} | {f['reps']} | {cell(f)} | {inner(f)} | {noop} | {inner(o)} | {strict} |")
    lines += ["", "Ratios of medians (same run). In brackets: the median of the per-repetition ratios "
              "(both tools measured back to back in the same repetition, so less exposed to load drift).", "",
              "| keys | N | ours/floor first | ours/upstream first | community/ours first | "
              "community/ours no-op | ours no-op s | ours/floor no-op |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def med(key, n, t, p):
        c = cells.get((key, n, t, p))
        return c["median"] if c and c["ok"] else None

    walls = {(r["key"], r["n"], r["tool"], r["phase"], r["rep"]): r["wall_s"] for r in runs if r["ok"]}

    def both(key, n, a, b, phase):
        whole = ratio(med(key, n, a, phase), med(key, n, b, phase))
        pairs = [walls[(key, n, a, phase, rep)] / walls[(key, n, b, phase, rep)]
                 for (k, nn, t, p, rep) in walls if (k, nn, t, p) == (key, n, a, phase)
                 and walls.get((key, n, b, phase, rep))]
        if whole is None or len(pairs) < 2:
            return fmt(whole)
        return f"{fmt(whole)} ({fmt(statistics.median(pairs))})"

    for key, n in scen:
        vals = [both(key, n, "ours", "floor", "first"), both(key, n, "ours", "upstream", "first"),
                both(key, n, "community", "ours", "first"), both(key, n, "community", "ours", "noop"),
                fmt(med(key, n, "ours", "noop")), both(key, n, "ours", "floor", "noop")]
        lines.append(f"| {key} | {n} | " + " | ".join(vals) + " |")
    lines += ["", "Targets (issue 2):", "", "| target | measured | verdict |", "|---|---|---|"]

    def target(label, value, ok_fn, unit=""):
        if value is None:
            lines.append(f"| {label} | not measured | - |")
        else:
            lines.append(f"| {label} | {fmt(value)}{unit} | {'PASS' if ok_fn(value) else 'FAIL'} |")

    target("N=50 RSA-4096 first run <= 1.3 x floor",
           ratio(med("rsa", 50, "ours", "first"), med("rsa", 50, "floor", "first")), lambda v: v <= 1.3, " x")
    target("N=50 RSA-4096 no-op <= 3 s", med("rsa", 50, "ours", "noop"), lambda v: v <= 3, " s")
    target("N=50 RSA-4096 no-op >= 50 x faster than community.crypto",
           ratio(med("rsa", 50, "community", "noop"), med("rsa", 50, "ours", "noop")), lambda v: v >= 50, " x")
    target("N=50 P-256 no-op <= 3 s", med("ecdsa", 50, "ours", "noop"), lambda v: v <= 3, " s")
    target("N=50 P-256 no-op >= 50 x faster than community.crypto (if the no-op target, stated without "
           "a key type, is read as covering P-256 too)",
           ratio(med("ecdsa", 50, "community", "noop"), med("ecdsa", 50, "ours", "noop")), lambda v: v >= 50, " x")
    target("N=50 P-256 first run <= 4 s", med("ecdsa", 50, "ours", "first"), lambda v: v <= 4, " s")
    target("N=1000 P-256 first run <= 15 s", med("ecdsa", 1000, "ours", "first"), lambda v: v <= 15, " s")
    target("N=1000 P-256 no-op <= 6 s", med("ecdsa", 1000, "ours", "noop"), lambda v: v <= 6, " s")
    failed = [r for r in runs if not r["ok"]]
    if failed:
        lines += ["", "Failed runs:", ""]
        for r in failed:
            lines.append(f"- {r['tool']} {r['key']} N={r['n']} rep {r['rep']} {r['phase']}: "
                         f"{str(r.get('errors') or r.get('stderr'))[:300]}")
    end = info.get("loadavg_end")
    if end:
        lines.append("\nLoad average at end (1/5/15 min): " + " / ".join(f"{v:.2f}" for v in end if v is not None))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma list of tools ({','.join(TOOLS)})")
    ap.add_argument("--n", help="comma list of plugin counts (filters the matrix; with --key: any N)")
    ap.add_argument("--key", choices=["rsa", "ecdsa", "both"], help="key type (filters the matrix)")
    ap.add_argument("--scenarios", help="explicit list, e.g. rsa:1,ecdsa:1000 (overrides --n/--key)")
    ap.add_argument("--reps", action="append",
                    help=f"repetitions: a number (default {DEFAULT_REPS}) and/or tool=number, e.g. "
                         "--reps 5 --reps community=1 (community defaults to 1 at rsa:50, ecdsa:50, ecdsa:1000)")
    ap.add_argument("--quick", action="store_true",
                    help="skip community.crypto at rsa:50 and ecdsa:1000 (the runs that take many minutes)")
    ap.add_argument("--skip", help="comma list of TOOL@KEY:N to leave out, e.g. community@ecdsa:1000")
    ap.add_argument("--baseline-reps", type=int, default=3, help="runs of the empty-play start-up reference")
    ap.add_argument("--out", default=str(BENCH / "results"),
                    help="output prefix: writes PREFIX.md and PREFIX.json (default bench/results)")
    ap.add_argument("--ours-via", choices=["auto", "role", "modules"], default="auto",
                    help="how (d) calls the collection: role pki or the modules (auto: role if present)")
    ap.add_argument("--from-json", metavar="PATH",
                    help="measure nothing: re-render the report of an earlier results.json into --out")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args()

    OURS_VIA["value"] = args.ours_via
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        OURS_VIA["value"] = data.get("ours_via", "auto")
        md = report(data["machine"], data["command"], data["runs"], summarize(data["runs"]),
                    data.get("status", "complete"))
        Path(args.out + ".md").write_text(md, encoding="utf-8")
        if Path(args.out + ".json").resolve() != Path(args.from_json).resolve():
            Path(args.out + ".json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(md)
        return 0
    items = plan(args)
    if not ours_available() and any(t == "ours" for _k, _n, t, _r in items):
        log("WARNING: plugins/modules/{ca,certificate_set}.py missing: skipping tool 'ours'")
        items = [i for i in items if i[2] != "ours"]
    log("plan: " + ", ".join(f"{t}@{k}:{n}x{r}" for k, n, t, r in items))
    if args.dry_run or not items:
        return 0
    info = machine_info()
    work = tempfile.mkdtemp(prefix="mtls-bench-", dir="/tmp")

    def on_term(signum, frame):
        del frame
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    args_line = (".venv/bin/python bench/run.py " + " ".join(sys.argv[1:])).strip()
    runs = []

    def write(status):
        info["loadavg_end"] = list(os.getloadavg())
        md = report(info, args_line, runs, summarize(runs), status)
        Path(args.out + ".md").write_text(md, encoding="utf-8")
        Path(args.out + ".json").write_text(json.dumps({"machine": info, "command": args_line, "status": status,
                                                        "ours_via": "role" if use_role() else "modules",
                                                        "plan": items, "runs": runs}, indent=1) + "\n",
                                            encoding="utf-8")
        return md

    try:
        measure(args, items, work, runs, progress=lambda _runs: write("partial (still running)"))
    except (KeyboardInterrupt, SystemExit):
        stop_child()
        write("INTERRUPTED: only the runs listed were measured")
        log(f"interrupted: partial results in {args.out}.md")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(write("complete"))
    log(f"wrote {args.out}.md and {args.out}.json")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
