"""bench/run.py and its modules (run_tools, run_checks, run_report): the plan, the ansible output parser, the
no-op snapshot and the report, without running a tool."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))
import run  # noqa: E402
import run_checks  # noqa: E402
import run_report  # noqa: E402
import run_tools  # noqa: E402


def args(**changes):
    values = {"only": None, "n": None, "key": None, "scenarios": None, "reps": None, "quick": False, "skip": None}
    values.update(changes)
    return SimpleNamespace(**values)


def test_the_default_plan_is_the_matrix_with_one_slow_community_rep():
    items = run.plan(args())
    assert [(k, n) for k, n, t, _r in items if t == "ours"] == list(run.MATRIX)
    assert ("rsa", 50, "community", 1) in items and ("rsa", 10, "community", 3) in items
    assert {t for _k, _n, t, _r in items} == set(run_tools.TOOLS)


@pytest.mark.parametrize("changes, expected", [
    ({"only": "ours,floor", "n": "50", "key": "rsa"}, [("rsa", 50, "ours", 3), ("rsa", 50, "floor", 3)]),
    ({"only": "ours", "n": "5", "key": "ecdsa", "reps": ["2"]}, [("ecdsa", 5, "ours", 2)]),
    ({"scenarios": "ecdsa:1000", "only": "community,ours", "reps": ["5", "community=2"]},
     [("ecdsa", 1000, "community", 2), ("ecdsa", 1000, "ours", 5)]),
    ({"scenarios": "rsa:50,ecdsa:1000", "only": "community", "quick": True}, []),
    ({"scenarios": "rsa:1", "only": "floor,upstream", "skip": "floor@rsa:1"}, [("rsa", 1, "upstream", 3)]),
])
def test_plan_filters(changes, expected):
    assert run.plan(args(**changes)) == expected


def test_an_unknown_tool_stops_the_plan():
    with pytest.raises(SystemExit, match="unknown tool"):
        run.plan(args(only="ours,mine"))


def _completed(stdout, rc=0):
    return subprocess.CompletedProcess([], rc, stdout, "")


def test_parse_ansible_reads_the_recap_and_the_module_time():
    task = {"task": {"name": "Certificates", "duration": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01.5Z"}},
            "hosts": {"localhost": {"action": "mcpgateway.mtls.certificate_set"}}}
    out = {"plays": [{"tasks": [task]}], "stats": {"localhost": {"changed": 2, "failures": 0, "unreachable": 0}}}
    ok, extra = run_tools.parse_ansible(_completed("noise\n" + json.dumps(out)))
    assert ok and extra["changed"] == 2 and extra["module_s"] == 1.5 and extra["tasks_s"] == 1.5
    assert extra["top_task"] == "Certificates (1.5 s)"
    ok, extra = run_tools.parse_ansible(_completed("not json", rc=2))
    assert not ok and "not json" in extra["stderr"]


def test_snapshot_sees_content_and_mode(tmp_path):
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.crt").write_text("x")
    before = run_checks.snapshot(tmp_path)
    (tmp_path / "ca" / "ca.crt").chmod(0o600)
    after = run_checks.snapshot(tmp_path)
    assert set(before) == {"ca/ca.crt"} and before["ca/ca.crt"][0] == after["ca/ca.crt"][0]
    assert after["ca/ca.crt"][2] == 0o600
    assert len(run_checks.tree_files(str(tmp_path), 2)) == 5 + 2 * 3


def test_verify_tree_names_missing_files(tmp_path):
    errors, strict = run_checks.verify_tree(str(tmp_path), "ecdsa", 1)
    assert errors == ["missing 8 files, e.g. ['ca/ca.key', 'ca/ca.crt', 'gateway/client.key']"] and strict is False


def test_the_committed_report_renders_again_from_its_json(monkeypatch):
    """bench/results.md is what run_report makes of bench/results.json (the output format is unchanged)."""
    data = json.loads((REPO / "bench" / "results.json").read_text(encoding="utf-8"))
    monkeypatch.setitem(run_tools.OURS_VIA, "value", data.get("ours_via", "auto"))
    md = run_report.report(data["machine"], data["command"], data["runs"], run_report.summarize(data["runs"]),
                           data.get("status", "complete"))
    assert md == (REPO / "bench" / "results.md").read_text(encoding="utf-8")
