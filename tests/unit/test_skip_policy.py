# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The skip policy (tests/skip_policy.py): run on a small suite of every kind of skip, with and without CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest
from skip_policy import NOT_APPLICABLE, not_applicable


def test_plain():
    pytest.skip("the tool is missing")


@pytest.mark.skipif(True, reason="no tool either")
def test_marked():
    pass


def test_declared():
    not_applicable("needs two NUMA nodes")


@pytest.mark.skipif(True, reason=NOT_APPLICABLE + "needs systemd as PID 1")
def test_declared_by_mark():
    pass


@pytest.mark.xfail(strict=True, reason="a known bug")
def test_expected_failure():
    assert False


def test_passes():
    pass
'''


def run(pytester, monkeypatch, ci, source=SUITE):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_suite=source)
    return pytester.runpytest("-p", "skip_policy", "-p", "no:cacheprovider", "-rfEs")


def test_in_ci_a_skip_fails_unless_the_test_does_not_apply_here(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "true")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # the skip in the test fails it, the skipif mark errors its setup; declared skips and the xfail pass
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines(["FAILED test_suite.py::test_plain - skip policy: test_suite.py::test_plain was skipped with CI=true: "
                                 "the tool is missing",
                                 "ERROR test_suite.py::test_marked - skip policy: test_suite.py::test_marked was skipped with CI=true: "
                                 "no tool either",
                                 "SKIPPED [[]1[]] test_suite.py:15: not applicable on this kind of machine: needs two NUMA nodes",
                                 "SKIPPED [[]1[]] test_suite.py:18: not applicable on this kind of machine: needs systemd as PID 1"],
                                consecutive=False)


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_every_skip_passes_and_is_reported(pytester, monkeypatch, ci):
    result = run(pytester, monkeypatch, ci)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_suite.py:*: the tool is missing",
                                 "SKIPPED [[]1[]] test_suite.py:*: no tool either"], consecutive=False)


def test_in_ci_a_module_skipped_at_collection_fails_the_run(pytester, monkeypatch):
    source = 'import pytest\npytest.importorskip("no_such_module_here")\n\n\ndef test_never_collected():\n    pass\n'
    result = run(pytester, monkeypatch, "TRUE", source)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the session
    assert "skip policy: test_suite.py was skipped with CI=true: could not import 'no_such_module_here'" in result.stdout.str()


def test_every_runner_reports_failures_errors_and_skips():
    for script in (".ci/units.sh", ".ci/integration.sh"):
        [command] = [line.split() for line in (REPO / script).read_text().splitlines() if line.startswith("python -m pytest")]
        assert "-rfEs" in command, script
    verifier = yaml.safe_load((REPO / "molecule/default/molecule.yml").read_text())["verifier"]
    assert verifier["options"]["r"] == "fEs"  # molecule passes it on as -r fEs
