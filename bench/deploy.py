#!/usr/bin/env python
"""Deployment benchmark for mcpgateway.mtls (entry point of `make bench-deploy`; method in bench/README.md).

Brings up a lab of systemd hosts in the SHAPE asked for (the lab of inventories/lab, or one gateway
plus H plugin hosts with P plugins each), deploys it once with site.yml, then, REPS times and
interleaved: a no-op run of each measured playbook (site.yml, playbooks/rotate.yml) and an empty
2-task play over the same hosts (the baseline). Wall time is time.perf_counter() around each
ansible-playbook; remote round trips are counted per host by wrapping ssh and sftp (every
invocation Ansible makes is one round trip over the multiplexed connection). A no-op must report
changed=0, or the run counts as failed. Then, once each, the forced rotations (--forced: rotate.yml -e
rotate_force=leaves, then =ca) while the gateway host runs the probe loop (mcp-mtls-probe --loop: cpex's own
client with the gateway's files calling every plugin every 0.2 s, a call failing after 6 s): a forced rotation
that loses a call counts as failed; its longest gap without a successful call is reported. The lab is removed
at the end (--keep leaves it up).

Examples:
    .venv/bin/python bench/deploy.py                     # the lab (1 gateway, 2 plugin hosts, 3 plugins)
    .venv/bin/python bench/deploy.py --shape 1x10        # 1 gateway + 1 plugin host with 10 plugins
    .venv/bin/python bench/deploy.py --shape 4x3 --reps 5
    .venv/bin/python bench/deploy.py --dry-run --shape 4x3   # write the inventory, print the plan
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_lib as lib  # noqa: E402  (beside this script)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PLAYBOOKS = {"site": "site.yml", "rotate": "playbooks/rotate.yml"}
FORCED = ("leaves", "ca")
LOOP_STOP, LOOP_SUMMARY = "/tmp/bench-loop.stop", "/tmp/bench-loop.json"


def run(cmd, env, log):
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    return time.perf_counter() - start, proc.returncode


def lab(action, env):
    proc = subprocess.run(["bash", "lab/lab.sh", action], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit("lab.sh %s failed:\n%s%s" % (action, proc.stdout[-3000:], proc.stderr[-3000:]))


def measure(name, playbook, inventory, env, counter, workdir, addresses, extra=()):
    log = workdir / ("%s-%d.log" % (name.replace(" ", "_").replace("=", "-"), time.time_ns()))
    counter.reset()
    seconds, rc = run([lib.venv_bin("ansible-playbook"), "-i", str(inventory), playbook, *extra], env, log)
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"name": name, "seconds": round(seconds, 2), "rc": rc, "recap": lib.parse_recap(text),
            "calls": lib.calls_per_host(counter.read(), addresses), "log": str(log)}


def podman(env, *args):
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=False)


def forced_rotation(force, gateway, inventory, env, counter, workdir, addresses):
    """rotate.yml -e rotate_force=FORCE while the probe loop runs on GATEWAY (its container has the host's name)."""
    podman(env, "exec", gateway, "rm", "-f", LOOP_STOP, LOOP_SUMMARY)
    podman(env, "exec", "-d", gateway, "runuser", "-u", "mcpgateway", "--", "/usr/local/bin/mcp-mtls-probe", "--loop",
           "3600", "--interval", "0.2", "--timeout", "6", "--stop-file", LOOP_STOP, "--summary", LOOP_SUMMARY)
    time.sleep(5)  # the sessions are open and the first calls made
    result = measure("rotate_force=" + force, "playbooks/rotate.yml", inventory, env, counter, workdir, addresses,
                     ("-e", "rotate_force=" + force))
    podman(env, "exec", gateway, "touch", LOOP_STOP)
    deadline = time.monotonic() + 90
    summary = None
    while time.monotonic() < deadline:
        out = podman(env, "exec", gateway, "cat", LOOP_SUMMARY)
        if out.returncode == 0 and out.stdout.strip():
            summary = json.loads(out.stdout)
            break
        time.sleep(1)
    result["probe"] = lib.probe_figures(summary)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="lab", help="lab, or HxP: H plugin hosts with P plugins each (default lab)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--playbooks", default="site,rotate", help="comma list of: site, rotate")
    parser.add_argument("--forced", default=",".join(FORCED),
                        help="comma list of forced rotations run once each with the probe loop: leaves, ca ('' for none)")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--dry-run", action="store_true", help="write the inventory and print the plan only")
    parser.add_argument("--out", default=str(BENCH / "deploy-results"), help="output prefix (.json and .md)")
    args = parser.parse_args(argv)
    try:
        shape = lib.Shape.parse(args.shape)
        playbooks = [(name, PLAYBOOKS[name]) for name in args.playbooks.split(",") if name]
        forced = [name for name in args.forced.split(",") if name]
        if set(forced) - set(FORCED):
            raise ValueError("--forced takes %s" % ", ".join(FORCED))
    except (ValueError, KeyError) as exc:
        parser.error("bad --shape, --playbooks or --forced: %s" % exc)
    inventory = lib.write_inventory(shape, REPO)
    addresses, plugin_hosts = lib.inventory_hosts(inventory)
    print("shape %s: inventory %s, hosts %s" % (shape, inventory, ", ".join(sorted(addresses.values()))))
    if args.dry_run:
        return 0
    env = lib.lab_env(REPO, inventory)
    running = lib.lab_containers(env)
    if running:
        sys.exit("lab containers are running (%s): run `make lab-down` first; the benchmark owns the lab while "
                 "it runs" % ", ".join(running))
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-deploy-"))
    counter = lib.SshCounter(workdir)
    env = counter.environ(env)
    results = {"shape": str(shape), "reps": args.reps, "plugin_hosts": plugin_hosts, "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_start": os.getloadavg()[0]},
               "runs": []}
    try:
        start = time.perf_counter()
        lab("up", env)
        results["lab_up_seconds"] = round(time.perf_counter() - start, 1)
        first = measure("first site.yml", "site.yml", inventory, env, counter, workdir, addresses)
        results["runs"].append(first)
        if first["rc"] != 0:
            sys.exit("the first site.yml failed (see %s)" % first["log"])
        empty = str(BENCH / "empty_play.yml")
        for _rep in range(args.reps):
            results["runs"].append(measure("empty play", empty, inventory, env, counter, workdir, addresses))
            for name, playbook in playbooks:
                results["runs"].append(measure("no-op " + name, playbook, inventory, env, counter, workdir,
                                               addresses))
        gateway = next(host for host in sorted(addresses.values()) if host not in plugin_hosts)
        for force in forced:
            results["runs"].append(forced_rotation(force, gateway, inventory, env, counter, workdir, addresses))
    finally:
        results["machine"]["load_end"] = os.getloadavg()[0]
        if not args.keep:
            lab("down", env)
        lib.write_results(results, Path(args.out), shape)
        shutil.rmtree(workdir / "bin", ignore_errors=True)
    print((Path(args.out).with_suffix(".md")).read_text(encoding="utf-8"))
    return 0 if all(run_["rc"] == 0 and lib.noop_ok(run_) for run_ in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
