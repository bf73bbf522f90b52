# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Skip policy of every test suite (tests/unit, tests/integration, molecule/default/tests), a pytest plugin.

The runners report skips (-rfEs: failures, errors and skips). With CI=true a skipped test fails the run,
naming the test and the reason, unless the test declared that it cannot apply on this kind of machine:
it calls ``not_applicable(reason)``, or its skip reason starts with NOT_APPLICABLE (for a mark:
``pytest.mark.skipif(condition, reason=NOT_APPLICABLE + "...")``). Any other skip (pytest.skip, skipif,
skip marks, importorskip, a module skipped at collection) means the suite did not find what it expects
on such a machine: provide it. Expected failures (xfail) are no skips and stay allowed.
"""

from __future__ import annotations

import os

import pytest

NOT_APPLICABLE = "not applicable on this kind of machine: "
_STRICT = pytest.StashKey[bool]()


def not_applicable(reason):
    """Skip the running test because it cannot apply on this kind of machine (a skip CI accepts); REASON says why."""
    __tracebackhide__ = True  # the skip report names the caller's line
    pytest.skip(NOT_APPLICABLE + reason)


def _violation(report, config):
    """The failure text when REPORT is a skip that CI does not accept, else None."""
    if not (config.stash[_STRICT] and report.skipped) or hasattr(report, "wasxfail"):
        return None
    # A skip's longrepr is (path, lineno, message); pytest.skip() puts "Skipped: " before the reason.
    message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = message[len("Skipped: "):] if message.startswith("Skipped: ") else message
    if reason.startswith(NOT_APPLICABLE):
        return None
    return ("skip policy: %s was skipped with CI=true: %s\nA skip fails CI unless the test cannot apply on this kind of "
            "machine: provide what it needs, or skip with skip_policy.not_applicable(reason)." % (report.nodeid, reason))


def pytest_configure(config):
    config.stash[_STRICT] = os.environ.get("CI", "").lower() == "true"


def _enforce(report, config):
    """REPORT, turned into a failure when it is a skip that CI does not accept."""
    failure = _violation(report, config)
    if failure:
        report.outcome, report.longrepr = "failed", failure
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item):
    return _enforce((yield), item.config)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    return _enforce((yield), collector.config)
