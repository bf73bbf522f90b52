"""The gRPC plugin (transport: grpc) on the converged molecule hosts: cpex's gRPC servicers run by the launcher.

* Its port is bound by the launcher (grpcio cannot take a socket from systemd): the instance's socket unit is
  skipped by its condition, the service runs, and it runs with the deployed files.
* From the gateway host, real gRPC calls with curl over HTTP/2 (cpex's /cpex.Health/Check): with the gateway's
  client certificate the server answers SERVING; without a certificate, with a valid certificate of another CA,
  offering TLS 1.1 only, or under a name outside the certificate's SANs, no call is answered.
* The gateway and the probe reach it with cpex's gRPC client (the probe's line for it says grpcs://).
"""

from __future__ import annotations

import json
import re

import pytest
from molecule_support import ADDRESS, GATEWAY, GRPC, PLUGIN_HOSTS, PLUGINS, host

PORT = {name: port for plugins in PLUGIN_HOSTS.values() for name, port in plugins.items()}
CLIENT = "--cert /etc/mcpgateway/tls/client.crt --key /etc/mcpgateway/tls/client.key"
# One gRPC call of cpex's Health/Check: POST over HTTP/2 with an empty request message (5-byte gRPC frame header).
CALL = ("printf '\\000\\000\\000\\000\\000' | curl -sS --http2 --max-time 10 --cacert /etc/mcpgateway/tls/ca.crt "
        "-H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- -o /tmp/grpc.out -w '%{{http_code}}' "
        "{extra} https://{address}:{port}/cpex.Health/Check; rc=$?; echo; od -An -tx1 /tmp/grpc.out 2>/dev/null; "
        "rm -f /tmp/grpc.out; exit $rc")
SERVING = "00 00 00 00 02 08 01"  # the response message: 2 bytes, field 1 (status) = 1 (SERVING)


def call(name, extra="", address=None):
    return host(GATEWAY).run(CALL.format(extra=extra, address=address or ADDRESS[name], port=PORT[name]))


@pytest.mark.parametrize("name", sorted(GRPC))
def test_the_grpc_instance_binds_its_port_itself_and_runs_with_the_deployed_files(name):
    h = host(PLUGINS[name])
    assert h.run(f"systemctl is-active mcp-plugin@{name}.service").stdout.strip() == "active"
    socket = h.run(f"systemctl show -p ActiveState -p ConditionResult --value mcp-plugin@{name}.socket").stdout.split()
    assert socket == ["inactive", "no"], f"the socket of a gRPC instance must never start: {socket}"
    # The service binds it (ProtectProc=invisible hides its process from ss -p; systemd, pid 1, would show).
    listeners = h.run(f"ss -ltnpH 'sport = :{PORT[name]}'").stdout
    assert '"systemd"' not in listeners, listeners
    assert "0.0.0.0:%d" % PORT[name] in listeners or "*:%d" % PORT[name] in listeners, listeners
    # ... and its service user owns the listening socket (ss -e: the socket's owner; systemd's would be root's).
    uid = h.run("id -u mcp-plugin").stdout.strip()
    owner = h.run(f"ss -ltneH 'sport = :{PORT[name]}'").stdout
    assert uid.isdigit() and f"uid:{uid} " in owner, (uid, owner)
    check = h.run(f"cd /etc/mcp-plugins/{name} && sha256sum --check --status /run/mcp-plugins/{name}/loaded.sha256")
    assert check.rc == 0, "the instance does not run with the deployed files"
    config = h.run(f"cat /etc/mcp-plugins/{name}/config.yaml").stdout
    assert "grpc_server_settings:" in config and "client_auth: require" in config, config


@pytest.mark.parametrize("name", sorted(GRPC))
def test_a_real_grpc_call_needs_the_gateways_certificate(name):
    ok = call(name, CLIENT)
    assert ok.rc == 0 and ok.stdout.startswith("200") and SERVING in " ".join(ok.stdout.split()), ok.stdout + ok.stderr
    none = call(name)
    assert none.rc != 0 and SERVING not in none.stdout, (none.rc, none.stdout, none.stderr)
    gw = host(GATEWAY)
    made = gw.run("cd /tmp && printf 'extendedKeyUsage=clientAuth\\nkeyUsage=digitalSignature\\n' > f.ext "
                  "&& openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout fca.key "
                  "-out fca.crt -days 1 -subj /CN=foreign-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null "
                  "&& openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout f.key -out f.csr "
                  "-subj /CN=mcp-gateway-client 2>/dev/null && openssl x509 -req -in f.csr -CA fca.crt -CAkey fca.key "
                  "-out f.crt -days 1 -extfile f.ext 2>/dev/null")
    assert made.rc == 0, made.stderr
    try:
        foreign = call(name, "--cert /tmp/f.crt --key /tmp/f.key")
    finally:
        gw.run("rm -f /tmp/fca.key /tmp/fca.crt /tmp/f.key /tmp/f.csr /tmp/f.crt /tmp/f.ext")
    assert foreign.rc != 0 and SERVING not in foreign.stdout, (foreign.rc, foreign.stdout, foreign.stderr)
    # TLS 1.1 only: curl connects and offers it; the server refuses (TLS 1.2 with the same client succeeds above).
    old = call(name, CLIENT + " --tlsv1.1 --tls-max 1.1 --ciphers DEFAULT:@SECLEVEL=0")
    assert old.rc in (35, 56) and SERVING not in old.stdout, (old.rc, old.stdout, old.stderr)
    # A name outside the certificate's SANs, pointed at the same address: curl refuses the server (60).
    ip = gw.run(f"getent hosts {ADDRESS[name]}").stdout.split()[0]
    wrong = call(name, CLIENT + f" --resolve not-in-the-sans.test:{PORT[name]}:{ip}", address="not-in-the-sans.test")
    assert wrong.rc == 60 and SERVING not in wrong.stdout, (wrong.rc, wrong.stdout, wrong.stderr)


@pytest.mark.parametrize("name", sorted(GRPC))
def test_the_probe_calls_the_grpc_plugin_with_cpexs_grpc_client(name):
    run = host(GATEWAY).run(f"runuser -u mcpgateway -- /usr/local/bin/mcp-mtls-probe --plugin {name}")
    assert run.rc == 0, run.stdout + run.stderr
    line = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert line["ok"] and line["stage"] == "done" and line["hook"] == "tool_pre_invoke", line
    assert line["url"] == f"grpcs://{ADDRESS[name]}:{PORT[name]}" and line["tls_version"] in ("TLSv1.2", "TLSv1.3"), line
    entry = host(GATEWAY).run("cat /etc/mcpgateway/plugins.yaml").stdout
    assert re.search(rf"name: {name}\n(?:\s+.*\n)*?\s+grpc:\n\s+target: {re.escape(ADDRESS[name])}:{PORT[name]}\n\s+tls:", entry), entry
