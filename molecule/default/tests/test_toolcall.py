"""A real MCP tools/call through the real gateway, with every plugin hop over mTLS (verify_tool_call).

verify_host's tool_call (module_utils/_toolcall.py) registers a throwaway REST tool on the gateway host's loopback
with the gateway's API, calls it through /mcp with a JWT signed by the gateway's own secret, and removes it. The
molecule gateways run it in every verify (molecule.yml: SSRF_ALLOW_LOCALHOST for the gateway, the arguments and what
the tool must receive). Here it runs on its own, so that its records can be read:

* the pre-invoke hooks of MolWords and MolEcho (MCP over mTLS, mcp-mol-plug2) and of MolGrpc (gRPC over mTLS,
  mcp-mol-plug1) each rewrote their word of the arguments the tool received;
* the post-invoke hook of MolGuard (MCP over mTLS, mcp-mol-plug1) cut the answer to its 40 characters;
* with a plugin down, the gateway refuses the call and the tool is never reached (the gateway fails closed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from molecule_support import GATEWAY, REPO, gateway_tls, gateway_url, health_command, host, main_pid

ARGS = {"text": "oh crap, the token is secret"}
EXPECT = {"text": "oh crud, the [redacted] is [redacted]"}
RESULT = '"received"'
CUT_AT = 40  # MolGuard's max_chars (molecule.yml)


def tool_call(arguments=None, expect=None, expect_result=RESULT, gateway=GATEWAY, tls="default"):
    """verify_host's tool_call on the gateway host GATEWAY, as the verify role runs it: its records by check name.
    TLS: paths ca, cert, key on that host for an HTTPS front door (default: its CA bundle and the gateway's own
    client certificate)."""
    args = {"host": gateway, "tool_call": {
        "url": gateway_url(gateway), "env_files": ["/etc/mcpgateway/env", "/etc/mcpgateway/secrets.env"],
        "arguments": arguments or ARGS, "expect": expect or EXPECT, "expect_result": expect_result,
        "tls": gateway_tls(gateway) if tls == "default" else tls}}
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "-i", env["MOLECULE_INVENTORY_FILE"], gateway, "-b", "-m",
                           "mcpgateway.mtls.verify_host", "-a", json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][gateway]
    return {record["check"]: record for record in result["checks"]}


def test_every_plugin_hop_acts_on_a_real_tool_call():
    records = tool_call()
    reached, answered = records["gateway_tool_call_reaches_the_tool"], records["gateway_tool_call_answered"]
    print(f"tool call: {reached['seen']}; answer: {answered['seen']}")
    assert reached["ok"], reached
    # MolGuard's post-invoke hook cut the tool's answer ({"received": {...}}, more than 40 characters) to 40 + "...".
    match = re.match(r"isError False, (\d+) characters: (.*)$", answered["seen"], re.S)
    assert answered["ok"] and match, answered
    assert int(match.group(1)) <= CUT_AT and match.group(2).endswith("..."), answered
    # Without the plugins' rewrites the same call fails the check: the records can fail.
    unchanged = tool_call(expect=ARGS)["gateway_tool_call_reaches_the_tool"]
    assert not unchanged["ok"] and "[redacted]" in unchanged["seen"], unchanged


def wait_healthy(name, timeout=120):
    deadline = time.monotonic() + timeout
    while host(name).run(health_command(name)).rc != 0:
        assert time.monotonic() < deadline, f"the gateway on {name} did not become healthy"
        time.sleep(2)


def test_with_the_grpc_plugin_down_the_gateway_fails_closed_and_recovers_by_itself():
    plug, gateway = host("mcp-mol-plug1"), host(GATEWAY)
    pid = main_pid(gateway, "mcpgateway.service")
    assert plug.run("systemctl stop mcp-plugin@MolGrpc.service").rc == 0
    try:
        down = tool_call()
        reached = down["gateway_tool_call_reaches_the_tool"]
        print(f"MolGrpc down: {reached['seen'][:300]}")
        # Fail closed: the call is refused with the plugin's error, and the tool is never reached.
        assert not reached["ok"] and "the tool received nothing" in reached["seen"], reached
        assert "UNAVAILABLE" in reached["seen"], reached
        assert gateway.run("systemctl is-active mcpgateway.service").stdout.strip() == "active"
    finally:
        assert plug.run("systemctl start mcp-plugin@MolGrpc.service").rc == 0
    # grpcio's channel reconnects on its own: the same gateway process serves the next call through MolGrpc.
    back = tool_call()
    assert back["gateway_tool_call_reaches_the_tool"]["ok"], back
    assert main_pid(gateway, "mcpgateway.service") == pid


def test_with_an_mcp_plugin_down_the_gateway_fails_closed_until_it_is_restarted():
    """cpex 0.1.4's MCP client cannot reconnect a session whose connection failed (it closes the session's task
    group from another task: "cancel scope" errors), so the gateway fails closed while the plugin is down and goes on
    failing after it is back, until the gateway restarts. Both gateways of the scenario lose their session to the
    plugin, so both are restarted at the end."""
    plug, gateway = host("mcp-mol-plug2"), host(GATEWAY)
    units = "mcp-plugin@MolWords.socket mcp-plugin@MolWords.service"  # the socket too: it would start the service
    assert plug.run(f"systemctl stop {units}").rc == 0
    try:
        down = tool_call()["gateway_tool_call_reaches_the_tool"]
        print(f"MolWords down: {down['seen'][:300]}")
        assert not down["ok"] and "the tool received nothing" in down["seen"], down
        assert gateway.run("systemctl is-active mcpgateway.service").stdout.strip() == "active"
    finally:
        assert plug.run(f"systemctl start {units}").rc == 0
    after = tool_call()["gateway_tool_call_reaches_the_tool"]
    print(f"MolWords back, the gateway not restarted: ok={after['ok']}: {after['seen'][:300]}")
    for name in ("mcp-mol-gw", "mcp-mol-gw2"):
        assert host(name).run("systemctl restart mcpgateway.service").rc == 0
    for name in ("mcp-mol-gw", "mcp-mol-gw2"):
        wait_healthy(name)
    restarted = tool_call()["gateway_tool_call_reaches_the_tool"]
    assert restarted["ok"], restarted
