"""Expectations of deployed files and probe results (module_utils/_verify.py)."""

from __future__ import annotations

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


def test_gate_fails_without_a_controller_certificate_and_on_bad_input():
    problems = inv.gate_problems([GOOD], ["A"], [{"fingerprint_sha256": None, "status": "missing"}])
    assert problems == ["A: the controller has no readable certificate for it (missing)"]
    with pytest.raises(PlanError):
        inv.gate_problems([GOOD], ["A", "B"], [{"fingerprint_sha256": FP}])
    # A line for another plugin does not count for this one.
    assert inv.gate_problems([dict(GOOD, name="B")], ["A"], [{"fingerprint_sha256": FP}])[0].startswith("A: no answer")
