# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bringing a plugin host's units up in a constant number of systemctl calls (module_utils/_units.py).
A recording fake stands in for systemctl here; molecule runs the module against real systemd."""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _units as U
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError


def _show(states):
    return "\n\n".join("Id=%s\nLoadState=loaded\nActiveState=%s\nUnitFileState=%s" % (unit, active, enabled)
                       for unit, (active, enabled) in states.items()) + "\n"


class FakeSystemctl:
    def __init__(self, states, fail=None):
        self.states, self.fail, self.argv = states, fail, []

    def __call__(self, argv):
        self.argv.append(argv)
        if self.fail and argv[1] == self.fail:
            return 1, "", "Job for mcp-plugin@one.service failed."
        if argv[1] == "show":
            return 0, _show({u: self.states.get(u, ("inactive", "disabled")) for u in argv[4:]}), ""
        return 0, "", ""


def _all(names, active="active", enabled="enabled"):
    return {unit: (active, enabled) for name in names for unit in U.unit_names(name).values()}


@pytest.mark.parametrize("count", [1, 20])
def test_a_no_op_is_one_show_whatever_the_number_of_instances(count):
    names = ["p%d" % i for i in range(count)]
    fake = FakeSystemctl(_all(names))
    done = U.ensure_running(names, fake)
    assert [argv[1] for argv in fake.argv] == ["show"] and done["started"] == [] and done["enable"] == []


def test_a_new_host_enables_and_starts_sockets_then_services_then_timers_in_two_calls():
    fake = FakeSystemctl({})
    done = U.ensure_running(["one", "two"], fake, daemon_reload=True)
    assert [argv[1] for argv in fake.argv] == ["daemon-reload", "show", "enable", "start"]
    start = fake.argv[-1][3:]
    assert start == ["mcp-plugin@one.socket", "mcp-plugin@two.socket", "mcp-plugin@one.service",
                     "mcp-plugin@two.service", "mcp-plugin-health@one.timer", "mcp-plugin-health@two.timer"]
    assert done["started"] == done["sockets_started"] == ["one", "two"]


def test_a_service_holding_its_port_is_handed_over_and_failed_units_are_reset():
    states = _all(["one", "two"])
    states["mcp-plugin@one.socket"] = ("inactive", "disabled")      # role 0.1: the service binds the port
    states["mcp-plugin@two.service"] = ("failed", "enabled")
    fake = FakeSystemctl(states)
    done = U.ensure_running(["one", "two"], fake)
    assert done["handover"] == ["mcp-plugin@one.service"] and done["reset"] == ["mcp-plugin@two.service"]
    assert [argv[1] for argv in fake.argv] == ["show", "stop", "reset-failed", "enable", "start"]
    assert done["started"] == ["one", "two"] and done["sockets_started"] == ["one"]


def test_check_mode_only_reads():
    fake = FakeSystemctl({})
    done = U.ensure_running(["one"], fake, check_mode=True, daemon_reload=True)
    assert [argv[1] for argv in fake.argv] == ["show"] and done["started"] == ["one"]


def test_a_failed_start_names_the_command_and_where_to_look():
    with pytest.raises(PKIError, match=r"systemctl start .* failed \(rc=1\): Job for mcp-plugin@one.service failed.*journalctl"):
        U.ensure_running(["one"], FakeSystemctl({}, fail="start"))


def test_parse_show_reads_blocks():
    text = "Id=a.socket\nActiveState=active\nUnitFileState=enabled\n\nId=b.service\nActiveState=failed\n"
    assert U.parse_show(text) == {"a.socket": {"Id": "a.socket", "ActiveState": "active", "UnitFileState": "enabled"},
                                  "b.service": {"Id": "b.service", "ActiveState": "failed"}}
