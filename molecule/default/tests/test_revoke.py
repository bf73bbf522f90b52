"""playbooks/revoke.yml on the converged molecule hosts: a revoked gateway certificate and a revoked plugin
certificate, each replaced and refused within one run, while everything keeps working; bad input refused first."""

from __future__ import annotations

import json
import re
import subprocess

from molecule_support import GATEWAYS, PKI, PLUGINS, host, playbook
from test_observe import counters

SERIAL = re.compile(r"Serial Number: ([0-9A-F]+)")


def serial(path):
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return out.strip().split("=", 1)[1].upper()


def crl_serials():
    out = subprocess.run(["openssl", "crl", "-noout", "-text", "-in", str(PKI / "ca/ca.crl")], capture_output=True,
                         text=True, check=True).stdout
    return set(SERIAL.findall(out))


def pids():
    return {name: host(h).run(f"systemctl show -p MainPID --value mcp-plugin@{name}.service").stdout.strip()
            for name, h in PLUGINS.items()}


def probe_ok(gateway):
    run = host(gateway).run("runuser -u mcpgateway -- /usr/local/bin/mcp-mtls-probe --no-hook")
    return run.rc == 0, run.stdout + run.stderr


def checks_of(out, name):
    """The verify records NAME that the run printed (the assert's success message lists none; failures list all)."""
    return re.findall(rf"check: {name}", out)


def revoked_files():
    """Every certificate and key that revoke.yml filed or holds (PKI/revoked/...), with its content."""
    folder = PKI / "revoked"
    return {str(p): p.read_bytes() for p in folder.rglob("*.pem")} if folder.exists() else {}


def test_bad_input_is_refused_before_anything_changes():
    # test_frontdoor.py may have revoked an MCP client already: nothing may change from here on.
    before, before_revoked = (PKI / "ca/ca.crl").read_bytes(), revoked_files()
    before_clients = (PKI / "clients-ca/ca.crl").read_bytes()
    for value, needle in (("ca", "the CA cannot be revoked by its own revocation list"),
                          ("NoSuchPlugin", "is neither gateway, nor a plugin of the plan"),
                          ("client.nobody", "nor an MCP client of pki_clients (client.mol-ci, client.mol-client)"),
                          ("frontdoor.mcp-mol-gw2", "a front door certificate is not revoked here"),
                          ("", "revoke must name the leaf to revoke")):
        run = playbook("playbooks/revoke.yml", "-e", json.dumps({"revoke": value}))
        said = " ".join((run.stdout + run.stderr).split())
        assert run.returncode != 0 and needle in said, said[-2000:]
        assert "Rotate: plan on the controller" not in run.stdout
    assert (PKI / "ca/ca.crl").read_bytes() == before
    assert (PKI / "clients-ca/ca.crl").read_bytes() == before_clients
    assert revoked_files() == before_revoked
    assert not [path for path in revoked_files() if "/revoked/pending/" in path]


def test_a_revoked_gateway_certificate_is_refused_by_every_plugin_and_the_gateway_keeps_working():
    old = serial(PKI / "gateway/client.crt")
    before_pids, before_counts = pids(), counters()
    run = playbook("playbooks/revoke.yml", "-e", "revoke=gateway")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert old in crl_serials()
    assert serial(PKI / "gateway/client.crt") != old
    # The proof ran: each plugin refused the revoked certificate, and counted it as revoked.
    after = counters()
    for name in PLUGINS:
        assert after[name].get("revoked", 0) > before_counts[name].get("revoked", 0), (name, before_counts, after)
    for gateway in GATEWAYS:
        ok, said = probe_ok(gateway)
        assert ok, said
        deployed = host(gateway).run("openssl x509 -noout -serial -in /etc/mcpgateway/tls/client.crt").stdout
        assert deployed.strip().split("=", 1)[1].upper() != old
        assert host(gateway).run("test -s /etc/mcpgateway/tls/ca.crl").rc == 0
    # Plugin instances took the new CRL by reloading.
    assert pids() == before_pids
    kept = list((PKI / "revoked").glob("*/gateway/key.pem"))
    assert kept and oct(kept[0].stat().st_mode & 0o777) == "0o600", kept
    assert not (PKI / "revoked/pending").exists() or not list((PKI / "revoked/pending").iterdir())
    report = json.loads((PKI.parent / "revoke-report.json").read_text())
    assert report["status"] == "ok", report


def test_a_revoked_plugin_certificate_is_refused_by_the_gateways_client():
    name = "MolEcho"
    old = serial(PKI / f"plugins/{name}/server.crt")
    before_pids = pids()
    run = playbook("playbooks/revoke.yml", "-e", f"revoke={name}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert old in crl_serials()
    new = serial(PKI / f"plugins/{name}/server.crt")
    assert new != old
    assert pids() == before_pids  # replaced and revoked by reloads
    for gateway in GATEWAYS:
        ok, said = probe_ok(gateway)
        assert ok, said
        served = json.loads([line for line in said.splitlines() if f'"name": "{name}"' in line][0])
        assert served["ok"]
    assert list((PKI / "revoked").glob(f"*/{name}/cert.pem"))
