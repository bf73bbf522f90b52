"""The gateway's own API over HTTPS (gateway_https), on mcp-mol-gw2, with the MCP clients' certificates of role pki.

molecule.yml gives mcp-mol-gw2 a front door that requires client certificates, and two MCP clients (pki_clients)
whose certificates come from their own CA (clients-ca/). Here a real client uses them, from the gateway host, with
curl, openssl and verify_host:

* mol-client's certificate gets /health and a real MCP tools/call through the front door; without a certificate,
  or with a certificate of a foreign CA, the connection is refused; the chain verifies strictly for the SAN
  gw2.mol.test; the same certificate opens no plugin server (they trust only the plugin CA);
* with gateway_https_client_auth optional, a client without a certificate is served and a foreign one still refused;
* revoke.yml -e revoke=client.mol-client: the old certificate is refused, its replacement served.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from molecule_support import PKI, REPO, TLS_DIR, host, playbook, recap
from test_toolcall import tool_call

GW = "mcp-mol-gw2"
URL = "https://127.0.0.1:4444"
CLIENT = "mol-client"
FOLDER = "/root/mcp-test-client"


def copy_client(name=CLIENT, folder=FOLDER):
    """The client's files from the controller's tree into FOLDER on GW (0700), as an MCP client holds them."""
    h = host(GW)
    assert h.run(f"rm -rf {folder} && install -d -m 0700 {folder}").rc == 0
    for dest in ("client.crt", "client.key", "ca.crt"):
        subprocess.run(["podman", "cp", str(PKI / "clients" / name / dest), f"{GW}:{folder}/{dest}"], check=True)
    assert h.run(f"chmod 0600 {folder}/client.key").rc == 0
    return {"ca": f"{folder}/ca.crt", "cert": f"{folder}/client.crt", "key": f"{folder}/client.key"}


@pytest.fixture()
def client():
    """mol-client's certificate, key and CA bundle on the gateway host, as an MCP client holds them."""
    yield copy_client()
    host(GW).run(f"rm -rf {FOLDER} {FOLDER}-foreign")


def code(tls=None, url=URL + "/health", ca=None):
    """(curl's exit status, the HTTP status curl saw: 000 when there was no HTTP answer)."""
    args = f"--cacert {ca or (tls or {}).get('ca') or TLS_DIR + '/ca.crt'} "
    if tls and tls.get("cert"):
        args += f"--cert {tls['cert']} --key {tls['key']} "
    result = host(GW).run(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 {args}{url}")
    return result.rc, result.stdout.strip()


def foreign_client():
    """A client certificate of a CA the gateway does not know, made on the gateway host."""
    folder = f"{FOLDER}-foreign"
    script = (f"set -e; rm -rf {folder}; install -d -m 0700 {folder}; cd {folder}; "
              "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt "
              "-subj /CN=foreign-ca -days 1 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null; "
              "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -out client.csr -subj /CN=foreign 2>/dev/null; "
              "printf 'extendedKeyUsage=clientAuth\\n' > ext; "
              "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out client.crt 2>/dev/null")
    assert host(GW).run(script).rc == 0
    return {"cert": f"{folder}/client.crt", "key": f"{folder}/client.key"}


def frontdoor_records(tls, client_auth="require"):
    """verify_host's frontdoor checks on GW with the client certificate TLS: its records by check name."""
    args = {"host": GW, "frontdoor": {"url": URL + "/health", "client_auth": client_auth, **tls}}
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "-i", env["MOLECULE_INVENTORY_FILE"], GW, "-b", "-m",
                           "mcpgateway.mtls.verify_host", "-a", json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    checks = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][GW]["checks"]
    return {record["check"]: record for record in checks}


def test_the_mcp_clients_certificate_opens_the_front_door_and_nothing_else(client):
    assert code(client) == (0, "200")
    rc, status = code({"ca": client["ca"]})
    assert rc != 0 and status == "000", (rc, status)
    assert code({"ca": client["ca"], **foreign_client()})[1] == "000"
    # The served chain verifies strictly for the SAN MCP clients use (gateway_https_sans), with the client's bundle.
    strict = host(GW).run(
        f"openssl s_client -connect 127.0.0.1:4444 -servername gw2.mol.test -verify_hostname gw2.mol.test "
        f"-x509_strict -verify_return_error -CAfile {client['ca']} -cert {client['cert']} -key {client['key']} "
        "-brief </dev/null 2>&1")
    assert strict.rc == 0 and "Verification: OK" in strict.stdout, strict.stdout
    wrong = host(GW).run(f"openssl s_client -connect 127.0.0.1:4444 -verify_hostname other.mol.test "
                         f"-verify_return_error -CAfile {client['ca']} -brief </dev/null 2>&1")
    assert wrong.rc != 0, wrong.stdout
    # The plugin servers trust only the plugin CA: the MCP client's certificate opens none of them, where the
    # gateway's own certificate gets an HTTP answer (the control).
    plugin = "https://mol-MolWords:8000/mcp"
    assert code(client, url=plugin)[1] == "000"
    own = {"cert": f"{TLS_DIR}/client.crt", "key": f"{TLS_DIR}/client.key"}
    assert code(own, url=plugin, ca=client["ca"])[1] != "000"


def test_the_front_door_checks_pass_with_the_mcp_clients_certificate(client):
    records = frontdoor_records(client)
    print({name: record["seen"][:100] for name, record in records.items()})
    for name in ("frontdoor_mtls_handshake_with_gateway_cert", "frontdoor_no_client_cert_refused",
                 "frontdoor_tls1_1_refused", "frontdoor_weak_tls1_2_suites_refused", "frontdoor_hostname_mismatch_refused"):
        assert records[name]["ok"], records[name]
    assert all(record["ok"] for record in records.values()), records


def test_a_real_tool_call_through_the_front_door(client):
    with_cert = tool_call(gateway=GW, tls=client)
    reached = with_cert["gateway_tool_call_reaches_the_tool"]
    assert reached["ok"], reached
    assert with_cert["gateway_tool_call_answered"]["ok"], with_cert
    without = tool_call(gateway=GW, tls={"ca": client["ca"]})["gateway_tool_call_reaches_the_tool"]
    assert not without["ok"], without


def test_optional_client_certificates(client):
    run = playbook("site.yml", "-e", "gateway_https_client_auth=optional")
    try:
        assert run.returncode == 0, run.stdout[-4000:]
        assert "MCP_MTLS_HTTPS_CLIENT_AUTH=optional" in host(GW).file("/etc/mcpgateway/env").content_string
        assert code({"ca": client["ca"]}) == (0, "200")
        assert code(client) == (0, "200")
        assert code({"ca": client["ca"], **foreign_client()})[1] == "000"
        records = frontdoor_records(client, client_auth="optional")
        assert records["frontdoor_no_client_cert_served"]["ok"], records
        assert all(record["ok"] for record in records.values()), records
    finally:
        back = playbook("site.yml")
    assert back.returncode == 0, back.stdout[-4000:]
    assert code({"ca": client["ca"]})[1] == "000"


def test_revoking_an_mcp_client(client):
    old_serial = host(GW).run(f"openssl x509 -in {client['cert']} -noout -serial").stdout.strip()
    run = playbook("playbooks/revoke.yml", "-e", f"revoke=client.{CLIENT}")
    assert run.returncode == 0, run.stdout[-4000:]
    counts = recap(run.stdout)
    assert counts and not any(c["failed"] or c["unreachable"] for c in counts.values()), run.stdout[-2000:]
    assert code(client)[1] == "000"  # the copy the client still holds: revoked
    new = copy_client()
    assert host(GW).run(f"openssl x509 -in {new['cert']} -noout -serial").stdout.strip() != old_serial
    assert code(new) == (0, "200")
    crl = subprocess.run(["openssl", "crl", "-in", str(PKI / "clients-ca/ca.crl"), "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert old_serial.split("=", 1)[1] in crl.replace(":", "").upper(), crl
