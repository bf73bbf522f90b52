# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The systemd units of a plugin host's instances, brought up in a constant number of systemctl calls.

Each planned instance NAME has a socket (mcp-plugin@NAME.socket, holds the mTLS port), a service
(mcp-plugin@NAME.service) and a health timer (mcp-plugin-health@NAME.timer). One `systemctl show`
reads them all; then, only where needed: a service that still binds its port itself (role 0.1, no
active socket) is stopped so its socket can take the port, failed units are reset (a run after a fix
must be able to start them again), units are enabled, and started - sockets, services, timers.
A gRPC instance (SOCKETLESS) binds its port itself: its socket is left alone, or stopped when it still
holds the port (the instance was an HTTP one), which stops the service too, so that it starts again.
"""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

_PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState")


def unit_names(name):
    return {"socket": "mcp-plugin@%s.socket" % name, "service": "mcp-plugin@%s.service" % name,
            "timer": "mcp-plugin-health@%s.timer" % name}


def parse_show(text):
    """`systemctl show -p Id,LoadState,ActiveState,UnitFileState U1 U2 ...` -> {unit: {property: value}}."""
    states, current = {}, {}
    for line in (text or "").splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                states[current["Id"]] = current
            current = {}
            continue
        key, _sep, value = line.partition("=")
        if key in _PROPERTIES:
            current[key] = value
    return states


def plan(names, states, socketless=()):
    """What to do for NAMES given their unit STATES: handover, reset, enable and start lists of units. The
    instances of SOCKETLESS have no socket: one that holds their port is stopped (handover)."""
    steps = {"handover": [], "reset": [], "enable": [], "start": []}
    starts = {"socket": [], "service": [], "timer": []}
    for name in names:
        units = unit_names(name)
        info = {kind: states.get(unit, {}) for kind, unit in units.items()}
        if name in socketless:
            if info["socket"].get("ActiveState") in ("active", "activating", "reloading"):
                steps["handover"].append(units["socket"])  # it stops the service too (Requires=)
                info["service"] = dict(info["service"], ActiveState="inactive")
            del units["socket"]
        elif info["socket"].get("ActiveState") != "active" and info["service"].get("ActiveState") == "active":
            steps["handover"].append(units["service"])
            info["service"] = dict(info["service"], ActiveState="inactive")
        for kind, unit in units.items():
            state = info[kind]
            if state.get("ActiveState") == "failed":
                steps["reset"].append(unit)
            if state.get("UnitFileState") not in ("enabled", "enabled-runtime", "static", "linked"):
                steps["enable"].append(unit)
            if state.get("ActiveState") not in ("active", "activating", "reloading"):
                starts[kind].append(unit)
    steps["start"] = starts["socket"] + starts["service"] + starts["timer"]
    return steps


def ensure_running(names, run, check_mode=False, daemon_reload=False, socketless=()):
    """Bring the units of NAMES up (SOCKETLESS: the gRPC instances, which have no socket). RUN(argv) -> (rc, stdout,
    stderr) runs systemctl. Returns what was done:
    {daemon_reload, handover, reset, enable, start, started (instance names whose service started),
    sockets_started (instance names), calls (systemctl invocations)}."""
    calls = []

    def systemctl(*args):
        argv = ["systemctl"] + list(args)
        calls.append(" ".join(argv[:2]))
        rc, out, err = run(argv)
        if rc != 0:
            raise PKIError("%s failed (rc=%s): %s; see `systemctl status` and `journalctl -u` of the units named"
                           % (" ".join(argv), rc, (err or out).strip()))
        return out

    if daemon_reload and not check_mode:
        systemctl("daemon-reload")
    units = [unit for name in names for unit in unit_names(name).values()]
    states = parse_show(systemctl("show", "-p", ",".join(_PROPERTIES), "--", *units)) if units else {}
    steps = plan(names, states, socketless)
    if not check_mode:
        if steps["handover"]:
            systemctl("stop", "--", *steps["handover"])
        if steps["reset"]:
            systemctl("reset-failed", "--", *steps["reset"])
        if steps["enable"]:
            systemctl("enable", "--quiet", "--", *steps["enable"])
        if steps["start"]:
            systemctl("start", "--", *steps["start"])
    started = set(steps["start"])
    return dict(steps, daemon_reload=bool(daemon_reload), calls=calls,
                started=[name for name in names if unit_names(name)["service"] in started],
                sockets_started=[name for name in names if unit_names(name)["socket"] in started])
