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
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pylint: disable=wrong-import-position
from run_checks import snapshot, verify_tree  # noqa: E402  (beside this script)
from run_report import report, summarize  # noqa: E402
from run_tools import (BENCH, CLASSES, OURS_VIA, REPO, TOOLS, ansible_env, inventory, ours_available,  # noqa: E402
                       sh, stop_child, use_role, venv_bin)

MATRIX = (("rsa", 1), ("rsa", 10), ("rsa", 50), ("ecdsa", 50), ("ecdsa", 1000))
DEFAULT_REPS = 3
# community.crypto needs minutes per run here (about 0.45 s per module call, five calls per leaf):
# one repetition by default at these points; --quick skips the two slowest.
SLOW_REPS = {("community", "rsa", 50): 1, ("community", "ecdsa", 50): 1, ("community", "ecdsa", 1000): 1}
QUICK_SKIP = {("community", "rsa", 50), ("community", "ecdsa", 1000)}


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
                runs.extend(one_run(CLASSES[tname](work), tname, key, n, rep, reps, work))
        if progress:
            progress(runs)
    return runs


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
