"""Hardening figures of the converged hosts: unit exposure, listening sockets, TLS versions and ciphers.

Measured, printed (pytest -s: the molecule log) and recorded in the README:
* `systemd-analyze security` exposure of every service unit the collection installs (target <= 3.0);
* every listening TCP and UDP socket on each host: off-host (not loopback) only the plugins' mTLS ports;
* per plugin, from the gateway host with its client certificate: which TLS versions complete a handshake
  (only 1.2 and 1.3), and which of all the cipher suites the host's OpenSSL knows the server accepts
  (TLS 1.2: ECDHE with AEAD only; TLS 1.3: OpenSSL's AEAD suites).
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from molecule_support import ADDRESS, GATEWAY, GRPC, PLUGIN_HOSTS, host

PORTS = {name: port for plugins in PLUGIN_HOSTS.values() for name, port in plugins.items()}
CLIENT = "-cert /etc/mcpgateway/tls/client.crt -key /etc/mcpgateway/tls/client.key -CAfile /etc/mcpgateway/tls/ca.crt"
MAX_EXPOSURE = 3.0


def our_services(h):
    """The collection's service units on the host, from systemd itself (templates' instances included)."""
    out = h.run("systemctl list-units --all --plain --no-legend --type=service "
                "'mcp-plugin@*' 'mcp-plugin-health@*' 'mcpgateway*' 'mcp-mtls-*'").stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("name", [GATEWAY, *sorted(PLUGIN_HOSTS)])
def test_every_unit_exposure_is_at_most_3(name):
    h = host(name)
    units = our_services(h)
    expected = ({"mcpgateway.service"} if name == GATEWAY else
                {f"{kind}@{p}.service" for p in PLUGIN_HOSTS[name] for kind in ("mcp-plugin", "mcp-plugin-health")})
    assert expected <= set(units), (expected, units)
    figures = {}
    for unit in units:
        out = h.run(f"systemd-analyze security {unit} --no-pager").stdout
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert found, out[-400:]
        figures[unit] = float(found.group(1))
    print(f"systemd-analyze security on {name}: {figures}")
    too_open = {unit: level for unit, level in figures.items() if level > MAX_EXPOSURE}
    assert not too_open, too_open


def listeners(h):
    """(proto, address, port, process) of every listening TCP and bound UDP socket on the host."""
    out = h.run("ss -H -l -n -p -t -u").stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        proto, local = fields[0], fields[4]
        address, port = local.rsplit(":", 1)
        address = address.strip("[]").split("%", 1)[0]
        process = re.search(r'users:\(\("([^"]+)"', line)
        found.append((proto, address, int(port), process.group(1) if process else "?"))
    return found


def off_host(address):
    return address == "*" or not ipaddress.ip_address(address).is_loopback


@pytest.mark.parametrize("name", [GATEWAY, *sorted(PLUGIN_HOSTS)])
def test_only_the_mtls_ports_listen_off_host(name):
    sockets = listeners(host(name))
    assert sockets, "no listening socket found at all: the probe itself is broken"
    exposed = sorted({(proto, port, proc) for proto, address, port, proc in sockets if off_host(address)})
    local = sorted({(proto, f"{address}:{port}", proc) for proto, address, port, proc in sockets if not off_host(address)})
    print(f"{name}: off-host {exposed}; loopback only {local}")
    # sshd on 22 is the lab's management access (how Ansible reaches the host, as on a fleet), not something the
    # collection deploys: it must be sshd itself, and everything else off-host is exactly the mTLS ports.
    management = [(proto, port, proc) for proto, port, proc in exposed if port == 22]
    assert management == [("tcp", 22, "sshd")], exposed
    deployed = [entry for entry in exposed if entry[1] != 22]
    allowed = {("tcp", port) for port in PLUGIN_HOSTS.get(name, {}).values()}
    assert {(proto, port) for proto, port, _proc in deployed} == allowed, exposed
    # The MCP plugins' ports are held by systemd (socket units); grpcio binds a gRPC plugin's port itself.
    # (ProtectProc=invisible hides the launcher's process from ss -p: its port shows without a process, never systemd.)
    grpc_ports = {port for plugin, port in PLUGIN_HOSTS.get(name, {}).items() if plugin in GRPC}
    assert all((proc != "systemd") if port in grpc_ports else (proc == "systemd") for _proto, port, proc in deployed), \
        exposed


def _handshakes(name, attempts):
    """Handshakes from the gateway host, one per (label, s_client arguments): label -> OK (completed),
    NO (refused) or CLIENT (the client could not even offer it: such a refusal would prove nothing)."""
    # A gRPC server (BoringSSL in grpcio) completes a TLS 1.2 handshake only for a client that offers ALPN h2, as every
    # gRPC client does.
    alpn = "-alpn h2 " if name in GRPC else ""
    lines = [f"if timeout 10 openssl s_client -connect {ADDRESS[name]}:{PORTS[name]} -servername {ADDRESS[name]} "
             f"{alpn}{CLIENT} {args} </dev/null >/tmp/hs.out 2>&1; then echo 'OK {label}'; "
             f"elif grep -qi 'no protocols available\\|no cipher match\\|no ciphers available' /tmp/hs.out; "
             f"then echo 'CLIENT {label}'; else echo 'NO {label}'; fi"
             for label, args in attempts]
    run = host(GATEWAY).run(" ; ".join(lines) + " ; rm -f /tmp/hs.out")
    assert run.rc == 0, run.stderr[-800:]
    result = dict(line.split(" ", 1)[::-1] for line in run.stdout.splitlines() if line.split(" ", 1)[0] in ("OK", "NO", "CLIENT"))
    assert set(result) == {label for label, _args in attempts}, "a handshake reported nothing"
    return result


@pytest.mark.parametrize("name", sorted(PORTS))
def test_only_tls_1_2_and_1_3_are_accepted(name):
    # SECLEVEL=0 so that the client really offers TLS 1.0/1.1 (OpenSSL 3 refuses them itself otherwise).
    versions = {"TLSv1": "-tls1", "TLSv1.1": "-tls1_1", "TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}
    result = _handshakes(name, [(v, f"{flag} -cipher DEFAULT:@SECLEVEL=0") for v, flag in versions.items()])
    print(f"{name}: TLS versions {result}")
    assert result == {"TLSv1": "NO", "TLSv1.1": "NO", "TLSv1.2": "OK", "TLSv1.3": "OK"}, result


@pytest.mark.parametrize("name", sorted(PORTS))
def test_only_forward_secret_aead_suites_are_accepted(name):
    h = host(GATEWAY)
    tls12 = h.run("openssl ciphers -tls1_2 'ALL:COMPLEMENTOFALL:@SECLEVEL=0'").stdout.strip().split(":")
    tls12 = [c for c in tls12 if c and not c.startswith("TLS_")]  # the list includes the TLS 1.3 suites
    tls13 = [c for c in h.run("openssl ciphers -s -tls1_3 'ALL'").stdout.strip().split(":") if c.startswith("TLS_")]
    assert len(tls12) > 20 and len(tls13) >= 3, (tls12, tls13)
    result = _handshakes(name, [(c, f"-tls1_2 -cipher {c}:@SECLEVEL=0") for c in tls12]
                         + [(c, f"-tls1_3 -ciphersuites {c}") for c in tls13])
    accepted12 = sorted(c for c in tls12 if result[c] == "OK")
    accepted13 = sorted(c for c in tls13 if result[c] == "OK")
    cannot = sorted(c for c, r in result.items() if r == "CLIENT")
    print(f"{name}: {len(tls12)} TLS 1.2 suites tried, accepted {accepted12}; {len(tls13)} TLS 1.3 suites tried, "
          f"accepted {accepted13}; the client could not offer {len(cannot)}")
    assert accepted12, "no TLS 1.2 suite accepted at all"
    weak = [c for c in accepted12 if not c.startswith("ECDHE-") or not re.search(r"GCM|CHACHA20", c)]
    assert not weak, f"accepted without forward secrecy or AEAD: {weak}"
    assert accepted13 and all(re.search(r"GCM|CHACHA20", c) for c in accepted13), accepted13
    # The molecule PKI makes ECDSA keys: the default list ECDHE+AESGCM:ECDHE+CHACHA20 leaves exactly these. grpcio's
    # BoringSSL (1.85.4) serves the two AES-GCM ones of them, without ChaCha20 (measured 2026-12-07).
    ecdsa = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"]
    assert accepted12 == (ecdsa[:2] if name in GRPC else ecdsa), accepted12
    assert len(cannot) < len(tls12) / 2, f"the client could not offer most suites: {cannot}"
