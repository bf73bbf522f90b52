# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests that the roles' preflight checks share, so that a rule is written once (logic in module_utils)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _plan


def plugin_name(value, prefix=_plan.DEFAULT_PREFIX):
    """True when VALUE is a valid plugin name (one DNS label that fits with the prefix)."""
    return _plan.name_problem(value, prefix) is None


class TestModule:
    """mcpgateway.mtls tests."""

    def tests(self):
        return {"plugin_name": plugin_name}
