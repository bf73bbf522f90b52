"""bench/run.py: the summary of the runs (medians per cell) and the Markdown report (tables, ratios, targets)."""
import statistics

from run_tools import TOOLS, use_role


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
