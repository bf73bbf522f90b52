# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""What the deployed hosts must look like, and how probe results read (pure functions, shared by the
gateway and verify roles)."""

from __future__ import annotations

import json
import re

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError


def tls_file_expectations(items, base_dir, owner, kind):
    """Expected owner/mode of deployed TLS files.

    kind 'server': items are plugin names, files in BASE/NAME/tls/server.{key,crt} and ca.crt;
    kind 'client': items are gateway config dirs, files in DIR/tls/client.{key,crt} and ca.crt.
    Keys must be owned by the service user and 0600; certificates 0644 (any owner).
    """
    out = []
    for item in items or []:
        if kind == "server":
            folder, stem = f"{base_dir.rstrip('/')}/{item}/tls", "server"
        elif kind == "client":
            folder, stem = f"{str(item).rstrip('/')}/tls", "client"
        else:
            raise PlanError(f"tls_file_expectations: kind must be 'server' or 'client', got {kind!r}")
        out += [
            {"path": f"{folder}/{stem}.key", "owner": owner, "mode": "0600"},
            {"path": f"{folder}/{stem}.crt", "owner": None, "mode": "0644"},
            {"path": f"{folder}/ca.crt", "owner": None, "mode": "0644"},
        ]
    return out


def certificate_records(certificates, min_days_left):
    """One certificate_valid record per result of module certificate_info (the controller's PKI tree)."""
    records = []
    for item in certificates or []:
        def field(key):
            return item[key] if key in item else ("?" if key == "days_left" else "n/a")
        records.append({
            "check": "certificate_valid", "target": item.get("name"),
            "ok": item.get("status") == "ok" and item.get("chain_valid") is not False and item.get("key_matches") is not False,
            "expected": "exists, chains to the CA, matches its key, more than %s days left" % min_days_left,
            "seen": "%s, %s days left, chain_valid=%s, key_matches=%s" % (
                item.get("status"), field("days_left"), field("chain_valid"), field("key_matches"))})
    return records


def openssl_records(results):
    """One openssl_verify_x509_strict record per registered result of `openssl verify -x509_strict` (a loop over
    certificate_info results: item.item.name is the certificate)."""
    records = []
    for result in results or []:
        out = str(result.get("stdout") or "")
        records.append({"check": "openssl_verify_x509_strict", "target": (result.get("item") or {}).get("name"),
                        "ok": result.get("rc") == 0 and re.search(r": OK$", out) is not None, "expected": "OK",
                        "seen": ("%s %s" % (out, result.get("stderr") or "")).strip()})
    return records


def probe_summary(line):
    """One JSON line of the gateway's mTLS probe -> one human line (also for config errors without a name)."""
    if not isinstance(line, dict):
        raise PlanError(f"probe_summary: expected a parsed probe line, got {line!r}")
    where = ("%s %s" % (line.get("name") or "config", line.get("url") or "")).strip()
    if line.get("new") is True:
        return "%s: new, %s (the gateway's own rollout adds it and calls it)" % (where, line.get("error"))
    if line.get("ok") is True:
        return "%s: ok, %s, %s ms, hook %s, server cert sha256 %s" % (
            where, line.get("tls_version"), line.get("latency_ms"), line.get("hook") or "none",
            str(line.get("server_cert_sha256") or "")[:16])
    return "%s: failed at %s: %s" % (where, line.get("stage"), line.get("error"))


def probe_check(line):
    """One JSON line of the gateway's mTLS probe -> one verify check result."""
    if not isinstance(line, dict) or "name" not in line:
        raise PlanError(f"probe_check: expected a probe result with a 'name', got {line!r}")
    modern = line.get("tls_version") in ("TLSv1.2", "TLSv1.3")
    ok = line.get("ok") is True and modern
    seen = probe_summary(line) + ("" if modern or line.get("ok") is not True else " (below TLS 1.2)")
    return {"check": "gateway_probe_mtls_call", "target": line["name"], "ok": ok,
            "expected": "cpex's client with the deployed config completes an mTLS call (TLS 1.2+)", "seen": seen}


def _hex(fingerprint):
    return str(fingerprint or "").replace(":", "").lower()


def gate_problems(lines, names, expected, stale=(), stderr="", checks=()):
    """What stops a rollout gate on one plugin host; empty = the gate passes.

    LINES: parsed probe lines; NAMES: the host's plugins; EXPECTED: certificate_info results of the
    controller's server certificates (same order as NAMES); STALE: instances not running with the
    deployed files. Each plugin must answer over mTLS (TLS 1.2+), be served exactly the controller's
    certificate, and run with the deployed files; a plugin that the gateway's config does not list yet (a probe line
    with "new": true, a plugin just added) is gated by the gateway's rollout, which adds it and calls it. CHECKS:
    records of module verify_host on the plugin host (local_plugins, loaded_from); a failed one is a problem, a failed
    runs_with_deployed_files marks its plugin stale.
    """
    names = list(names or [])
    expected = list(expected or [])
    if len(expected) != len(names):
        raise PlanError("gate_problems: %d plugin names but %d expected certificates" % (len(names), len(expected)))
    by_name = {line.get("name"): line for line in lines or [] if isinstance(line, dict)}
    failed = [record for record in checks or [] if isinstance(record, dict) and not record.get("ok")]
    stale = list(stale or []) + [r.get("target") for r in failed if r.get("check") == "runs_with_deployed_files"]
    problems = ["%s: %s: %s" % (r.get("target"), r.get("check"), r.get("seen"))
                for r in failed if r.get("check") != "runs_with_deployed_files"]
    for name, info in zip(names, expected):
        line = by_name.get(name)
        if name in (stale or []):
            problems.append("%s does not run with the deployed files (restart mcp-plugin@%s)" % (name, name))
        if line is None:
            detail = " ".join(str(stderr or "").split())[:300]
            problems.append("%s: no answer from the probe%s" % (name, (": " + detail) if detail else ""))
            continue
        if line.get("new") is True:
            continue  # the gateway's config does not list it yet: its gate is the gateway's rollout, which comes last
        if line.get("ok") is not True:
            problems.append(probe_summary(line))
            continue
        if line.get("tls_version") not in ("TLSv1.2", "TLSv1.3"):
            problems.append("%s: answered with %s, below TLS 1.2" % (name, line.get("tls_version")))
        want, have = _hex((info or {}).get("fingerprint_sha256")), _hex(line.get("server_cert_sha256"))
        if not want:
            problems.append("%s: the controller has no readable certificate for it (%s)" % (
                name, (info or {}).get("error") or (info or {}).get("status")))
        elif have != want:
            problems.append("%s serves the certificate sha256 %s, but the controller's is %s" % (name, have[:16], want[:16]))
    return problems


def probe_records(rc, stdout, stderr, names, target):
    """The records of one run of the gateway's mTLS probe: it ran (exit 0 or 1), one record per JSON line
    (a line without a plugin name, such as a config error, is a failed record for 'config'), and the lines
    cover exactly NAMES, the plugins the gateway's plugins.yaml lists."""
    lines = []
    for text in str(stdout or "").splitlines():
        if text.startswith("{"):
            try:
                line = json.loads(text)
            except ValueError:
                line = {"ok": False, "stage": "output", "error": "not JSON: %s" % text[:200]}
            lines.append(line if isinstance(line, dict) else {"ok": False, "stage": "output", "error": text[:200]})
    records = [{"check": "probe_ran", "target": target, "ok": rc in (0, 1), "expected": "the probe runs (exit 0 or 1)",
                "seen": ("exit %s %s" % (rc, str(stderr or "")[-300:])).strip()}]
    for line in lines:
        if "check" in line and "name" not in line:  # a check of the probe's own (--trust-check)
            records.append({"check": str(line["check"]), "target": str(line.get("target") or target),
                            "ok": line.get("ok") is True, "expected": str(line.get("expected") or ""),
                            "seen": str(line.get("seen") or "")})
        elif "name" in line:
            records.append(probe_check(line))
        else:
            where = "output" if line.get("stage") == "output" else "config"
            records.append({"check": "gateway_probe_mtls_call", "target": where, "ok": False,
                            "expected": "cpex's client loads the deployed config and prints JSON lines",
                            "seen": probe_summary(dict(line, name=where))})
    seen = sorted(str(line["name"]) for line in lines if "name" in line)
    want = sorted(str(name) for name in names or [])
    # Plugins without a line: what the probe said on stderr (say a traceback) is all there is to tell why.
    said = " ".join(str(stderr or "").split())[-300:] if seen != want and stderr else ""
    records.append({"check": "probe_covers_every_plugin", "target": target, "ok": seen == want,
                    "expected": ",".join(want), "seen": ",".join(seen) + ("; the probe said: %s" % said if said else "")})
    return records
