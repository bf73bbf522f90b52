"""Expectations of deployed files and probe results (module_utils/_verify.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _verify as inv
from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError


def test_tls_file_expectations():
    files = inv.tls_file_expectations(["A"], "/etc/mcp-plugins", "svc", "server")
    assert files[0] == {"path": "/etc/mcp-plugins/A/tls/server.key", "owner": "svc", "mode": "0600"}
    assert [f["mode"] for f in files] == ["0600", "0644", "0644"]
    gw = inv.tls_file_expectations(["/etc/mcpgateway"], "", "gw", "client")
    assert gw[0]["path"] == "/etc/mcpgateway/tls/client.key"
    with pytest.raises(PlanError):
        inv.tls_file_expectations(["A"], "/x", "u", "other")


def test_probe_check():
    good = inv.probe_check({"name": "A", "ok": True, "tls_version": "TLSv1.3", "latency_ms": 12, "server_cert_sha256": "ab" * 32})
    assert good["ok"] and good["target"] == "A" and "TLSv1.3" in good["seen"]
    old_tls = inv.probe_check({"name": "A", "ok": True, "tls_version": "TLSv1.1"})
    assert not old_tls["ok"] and old_tls["seen"].endswith("(below TLS 1.2)")
    bad = inv.probe_check({"name": "B", "ok": False, "stage": "tls", "error": "certificate required"})
    assert not bad["ok"] and bad["seen"] == "B: failed at tls: certificate required"
    with pytest.raises(PlanError):
        inv.probe_check("garbage")


def test_probe_summary_names_config_errors_and_successes():
    assert inv.probe_summary({"ok": False, "stage": "config", "error": "no such file"}) == \
        "config: failed at config: no such file"
    line = {"name": "A", "url": "https://mcp-plugin-A:8000/mcp", "ok": True, "tls_version": "TLSv1.3",
            "latency_ms": 9, "hook": "tool_pre_invoke", "server_cert_sha256": "cd" * 32}
    assert inv.probe_summary(line) == ("A https://mcp-plugin-A:8000/mcp: ok, TLSv1.3, 9 ms, hook tool_pre_invoke, "
                                       "server cert sha256 " + "cd" * 8)
    with pytest.raises(PlanError):
        inv.probe_summary([])


# ---------------------------------------------------------------- rollout gate

FP = "AB:" * 31 + "AB"
GOOD = {"name": "A", "ok": True, "tls_version": "TLSv1.3", "server_cert_sha256": "ab" * 32}


def test_gate_passes_when_served_certificate_is_the_controllers():
    assert inv.gate_problems([GOOD], ["A"], [{"fingerprint_sha256": FP}]) == []


@pytest.mark.parametrize("lines, stale, needle", [
    ([dict(GOOD, server_cert_sha256="cd" * 32)], [], "serves the certificate sha256 cdcd"),
    ([dict(GOOD, ok=False, stage="tls", error="unknown ca")], [], "failed at tls: unknown ca"),
    ([dict(GOOD, tls_version="TLSv1.1")], [], "below TLS 1.2"),
    ([], [], "A: no answer from the probe: boom"),
    ([GOOD], ["A"], "does not run with the deployed files"),
])
def test_gate_problems_name_the_plugin(lines, stale, needle):
    problems = inv.gate_problems(lines, ["A"], [{"fingerprint_sha256": FP}], stale, "boom")
    assert len(problems) == 1 and needle in problems[0] and problems[0].startswith("A")


def test_gate_leaves_a_plugin_the_gateway_does_not_list_yet_to_the_gateways_rollout():
    new = {"name": "B", "ok": None, "new": True, "stage": "config", "error": "not in /etc/mcpgateway/plugins.yaml yet"}
    expected = [{"fingerprint_sha256": FP}, {"fingerprint_sha256": FP}]
    assert inv.gate_problems([GOOD, new], ["A", "B"], expected) == []
    assert inv.probe_summary(new) == ("B: new, not in /etc/mcpgateway/plugins.yaml yet (the gateway's own rollout adds it "
                                      "and calls it)")
    # New on the gateway side does not excuse the plugin host: an instance not running its files still fails.
    assert inv.gate_problems([GOOD, new], ["A", "B"], expected, ["B"]) == [
        "B does not run with the deployed files (restart mcp-plugin@B)"]


def test_gate_problems_from_the_host_records():
    checks = [{"check": "health_answers_on_loopback", "target": "A", "ok": False, "seen": "exit 7: 000"},
              {"check": "mtls_port_listening", "target": "A", "ok": True, "seen": "['*']"},
              {"check": "runs_with_deployed_files", "target": "A", "ok": False, "seen": "runs with another env"}]
    problems = inv.gate_problems([GOOD], ["A"], [{"fingerprint_sha256": FP}], checks=checks)
    assert problems == ["A: health_answers_on_loopback: exit 7: 000",
                        "A does not run with the deployed files (restart mcp-plugin@A)"], problems
    assert inv.gate_problems([GOOD], ["A"], [{"fingerprint_sha256": FP}], checks=checks[1:2]) == []


def test_gate_fails_without_a_controller_certificate_and_on_bad_input():
    problems = inv.gate_problems([GOOD], ["A"], [{"fingerprint_sha256": None, "status": "missing"}])
    assert problems == ["A: the controller has no readable certificate for it (missing)"]
    with pytest.raises(PlanError):
        inv.gate_problems([GOOD], ["A", "B"], [{"fingerprint_sha256": FP}])
    # A line for another plugin does not count for this one.
    assert inv.gate_problems([dict(GOOD, name="B")], ["A"], [{"fingerprint_sha256": FP}])[0].startswith("A: no answer")


# ---------------------------------------------------------------- probe records (module verify_host)

def _line(name, **extra):
    return json.dumps(dict({"name": name, "url": "https://mcp-plugin-%s:8000/mcp" % name, "ok": True,
                            "tls_version": "TLSv1.3", "latency_ms": 5, "server_cert_sha256": "ab" * 32}, **extra))


def _by_check(records):
    return [(r["check"], r["target"], r["ok"]) for r in records]


def test_probe_records_pass_with_a_line_for_every_plugin():
    stdout = "starting\n" + _line("B") + "\n" + _line("A") + "\n"  # a line not starting with '{' is no result
    records = inv.probe_records(0, stdout, "", ["A", "B"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", True), ("gateway_probe_mtls_call", "B", True),
                                  ("gateway_probe_mtls_call", "A", True), ("probe_covers_every_plugin", "gw1", True)]
    assert records[-1]["expected"] == "A,B" and records[-1]["seen"] == "A,B"
    assert all(set(r) == {"check", "target", "ok", "expected", "seen"} for r in records)


def test_probe_records_exit_2_fails_probe_ran():
    records = inv.probe_records(2, "", "usage: probe\n", ["A"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", False), ("probe_covers_every_plugin", "gw1", False)]
    assert records[0]["seen"] == "exit 2 usage: probe" and records[-1]["seen"] == "; the probe said: usage: probe"
    # Exit 1 (a plugin failed) is a run: its lines tell which.
    assert inv.probe_records(1, _line("A", ok=False, stage="tls", error="x"), "", ["A"], "gw1")[0]["ok"] is True


def test_probe_records_a_missing_plugin_fails_the_coverage():
    records = inv.probe_records(0, _line("A") + "\n", "", ["A", "B"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", True), ("gateway_probe_mtls_call", "A", True),
                                  ("probe_covers_every_plugin", "gw1", False)]
    assert records[-1]["expected"] == "A,B" and records[-1]["seen"] == "A"
    # A probe that ended early (no line for B): its stderr is the only clue, and it is shown.
    crashed = inv.probe_records(1, _line("A") + "\n", "Traceback (most recent call last):\n  ...\nCancelledError\n", ["A", "B"], "gw1")
    assert crashed[-1]["seen"] == "A; the probe said: Traceback (most recent call last): ... CancelledError"


def test_probe_records_a_config_error_without_a_name_is_a_failed_record_for_config():
    stdout = json.dumps({"ok": False, "stage": "config", "error": "no such file: plugins.yaml"}) + "\n"
    records = inv.probe_records(1, stdout, "", ["A"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", True), ("gateway_probe_mtls_call", "config", False),
                                  ("probe_covers_every_plugin", "gw1", False)]
    assert records[1]["seen"] == "config: failed at config: no such file: plugins.yaml"


def test_probe_records_a_line_that_is_not_json_is_a_failed_record():
    records = inv.probe_records(0, "{not json\n" + _line("A") + "\n", "", ["A"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", True), ("gateway_probe_mtls_call", "output", False),
                                  ("gateway_probe_mtls_call", "A", True), ("probe_covers_every_plugin", "gw1", True)]
    assert records[1]["seen"] == "output: failed at output: not JSON: {not json"


def test_certificate_records_pass_only_a_valid_certificate():
    certs = [{"name": "ca", "status": "ok", "days_left": 3000},
             {"name": "gw", "status": "ok", "days_left": 800, "chain_valid": True, "key_matches": True},
             {"name": "A", "status": "ok", "days_left": 800, "chain_valid": False, "key_matches": True},
             {"name": "B", "status": "expiring", "days_left": 3, "chain_valid": True, "key_matches": True},
             {"name": "C", "status": "missing"}]
    records = inv.certificate_records(certs, 7)
    assert [(r["target"], r["ok"]) for r in records] == [("ca", True), ("gw", True), ("A", False), ("B", False), ("C", False)]
    assert records[0]["seen"] == "ok, 3000 days left, chain_valid=n/a, key_matches=n/a"
    assert records[4]["seen"] == "missing, ? days left, chain_valid=n/a, key_matches=n/a"
    assert records[2]["expected"] == "exists, chains to the CA, matches its key, more than 7 days left"


def test_openssl_records_need_exit_0_and_ok():
    results = [{"item": {"name": "gw"}, "rc": 0, "stdout": "/pki/gateway/client.crt: OK", "stderr": ""},
               {"item": {"name": "A"}, "rc": 2, "stdout": "", "stderr": "error 20 at 0 depth lookup"},
               {"item": {"name": "B"}, "rc": 0, "stdout": "/pki/B: OK but not really", "stderr": ""}]
    records = inv.openssl_records(results)
    assert [(r["target"], r["ok"]) for r in records] == [("gw", True), ("A", False), ("B", False)]
    assert records[1]["seen"] == "error 20 at 0 depth lookup"


def test_probe_records_keep_the_probes_own_checks():
    """--trust-check adds a line with "check" and no "name": a record of its own, not a plugin and not a config error."""
    check = {"check": "plugin_client_trusts_only_ca_bundle", "target": "A", "ok": False, "expected": "refused",
             "seen": "accepted a server whose CA is in the system store only"}
    records = inv.probe_records(1, _line("A") + "\n" + json.dumps(check) + "\n", "", ["A"], "gw1")
    assert _by_check(records) == [("probe_ran", "gw1", True), ("gateway_probe_mtls_call", "A", True),
                                  ("plugin_client_trusts_only_ca_bundle", "A", False), ("probe_covers_every_plugin", "gw1", True)]
    assert records[2]["seen"] == check["seen"] and records[2]["expected"] == "refused"
