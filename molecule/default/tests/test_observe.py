"""What the plugin hop shows and whom it trusts, on the converged molecule hosts.

* Handshake telemetry: the gateway-side negative checks of verify (no client certificate, a foreign CA, TLS 1.1,
  weak suites, a name outside the SANs) show in each plugin's counters (/run/mcp-plugins/NAME/tls.prom) with
  their reason, and in its journal with the gateway host's address.
* Trust: a CA put into the gateway host's real system store (update-ca-certificates) signs a certificate for a
  plugin's name, and a server on the gateway host presents it under that name. curl (the system store) accepts
  it; the gateway's plugin client refuses it, in the probe and in the real gateway service.
"""

from __future__ import annotations

import re
import time

from molecule_support import ADDRESS, GATEWAY, GRPC, PLUGINS, health_command, host, playbook

METRICS = "/run/mcp-plugins/{name}/tls.prom"
FAILURES = re.compile(r'^mcp_plugin_tls_handshake_failures_total\{plugin="([^"]+)",reason="([a-z_]+)"\} (\d+)$', re.M)
# What verify's gateway-side negative checks make each plugin count (tls1_2_accepted and the positive twin
# complete their handshakes).
EXPECTED = {"no_certificate", "unknown_ca", "protocol", "cipher", "client_refused_server"}
# A gRPC plugin's handshakes are grpcio's (BoringSSL): the launcher counts the refusals grpcio writes to its stderr.
# The client that refuses the server's name (hostname_mismatch_refused) shows there as BAD_PACKET_LENGTH: "other".
EXPECTED_GRPC = {"no_certificate", "unknown_ca", "protocol", "cipher", "other"}
# grpcio's own line for each refusal (no peer address in it), in the plugin's journal.
GRPCIO_SAYS = {"no_certificate": "PEER_DID_NOT_RETURN_A_CERTIFICATE", "unknown_ca": "CERTIFICATE_VERIFY_FAILED",
               "protocol": "UNSUPPORTED_PROTOCOL", "cipher": "NO_SHARED_CIPHER"}


def counters():
    """{plugin: {reason: count}} read on the plugin hosts."""
    found = {}
    for name, plugin_host in PLUGINS.items():
        text = host(plugin_host).run(f"cat {METRICS.format(name=name)}").stdout
        found[name] = {reason: int(count) for plugin, reason, count in FAILURES.findall(text) if plugin == name}
    return found


REFUSED = re.compile(r"refused TLS handshake from (?:::ffff:)?([0-9a-f.:]+):\d+: ([a-z_]+) \(")


def test_verifys_refused_handshakes_are_counted_by_reason_and_logged_with_the_gateways_address():
    gateway_ips = set(host(GATEWAY).run("hostname -I").stdout.split())
    # The launcher writes its counters at most once a second: let the handshakes of the tests before (test_hardening
    # tries every suite) reach the file first, so that they do not count as this run's.
    time.sleep(3)
    before = counters()
    since = host("mcp-mol-plug1").run("date +%s").stdout.strip()
    run = playbook("site.yml", "--tags", "verify_gateway", "--limit", GATEWAY)
    assert run.returncode == 0, run.stdout[-3000:]
    time.sleep(2)  # the launcher writes its counters at most once a second
    after = counters()
    for name in PLUGINS:
        grown = {reason: after[name].get(reason, 0) - before[name].get(reason, 0) for reason in after[name]}
        print(f"{name}: counters grown by verify's gateway-side checks: {grown}")
        expected = EXPECTED_GRPC if name in GRPC else EXPECTED
        assert {reason for reason, value in grown.items() if value > 0} - {"aborted"} == expected, (name, grown)
        journal = host(PLUGINS[name]).run(
            f"journalctl -u mcp-plugin@{name}.service --since @{since} -o cat --no-pager").stdout
        if name in GRPC:
            for reason, word in GRPCIO_SAYS.items():
                assert "Handshake failed with error SSL_ERROR_SSL: " in journal and word in journal, (name, reason)
            continue
        logged = set(REFUSED.findall(journal))
        # Each reason is logged up to 20 times a minute; test_hardening, just before, tries every cipher suite, so
        # the cipher refusals of this minute may be counted only (their counter is asserted above).
        for reason in EXPECTED - {"cipher"}:
            assert any(ip in gateway_ips for ip, said in logged if said == reason), (name, reason, gateway_ips, logged)


ROGUE = "/root/rogue"
ROGUE_NAME = ADDRESS["MolGuard"]


def test_the_gateways_plugin_client_refuses_a_ca_of_the_system_store():
    gw = host("mcp-mol-gw2")
    setup = (
        f"set -e; rm -rf {ROGUE}; mkdir -p {ROGUE}; cd {ROGUE}; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 1 "
        "-subj '/CN=Rogue system-store CA' -addext basicConstraints=critical,CA:TRUE "
        "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null; "
        f"printf 'subjectAltName=DNS:{ROGUE_NAME},DNS:mcp-plugin-MolGuard\\nextendedKeyUsage=serverAuth\\n"
        "basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\nsubjectKeyIdentifier=hash\\n"
        "authorityKeyIdentifier=keyid\\n' > leaf.ext; "
        f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr "
        f"-subj '/CN=mcp-plugin-MolGuard' 2>/dev/null; "
        "openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -set_serial 7 -days 1 -extfile leaf.ext "
        "-out leaf.crt 2>/dev/null; "
        "cp ca.crt /usr/local/share/ca-certificates/mcp-test-rogue.crt; update-ca-certificates >/dev/null 2>&1; "
        # /etc/hosts is a bind mount in the container: rewritten in place, the rogue name first.
        f"cp /etc/hosts /etc/hosts.mcp-test; {{ echo '127.0.0.1 {ROGUE_NAME}'; cat /etc/hosts.mcp-test; }} > /etc/hosts; "
        f"systemd-run --unit mcp-test-rogue --quiet openssl s_server -accept 127.0.0.1:8000 -cert {ROGUE}/leaf.crt "
        f"-key {ROGUE}/leaf.key -www; "
        "for i in $(seq 50); do ss -ltn | grep -q '127.0.0.1:8000 ' && break; sleep 0.1; done"
    )
    try:
        made = gw.run(setup)
        assert made.rc == 0, made.stdout + made.stderr
        # The control: the system store trusts the rogue server under the plugin's name.
        control = gw.run(f"curl -sS -o /dev/null -w '%{{http_code}}' https://{ROGUE_NAME}:8000/")
        assert control.rc == 0 and control.stdout == "200", control.stdout + control.stderr
        # cpex's client as the gateway runs it: the probe, with the deployed config, as the gateway's user.
        probe = gw.run("runuser -u mcpgateway -- /usr/local/bin/mcp-mtls-probe --plugin MolGuard --no-hook")
        assert probe.rc == 1 and '"stage": "tls"' in probe.stdout, probe.stdout + probe.stderr
        # openssl s_server sends the rogue CA too when it finds it in the system store: either way unverifiable.
        assert re.search(r"server certificate rejected: (unable to get local issuer certificate|self-signed "
                         r"certificate in certificate chain)", probe.stdout), probe.stdout
        # The real gateway service, restarted: it connects to the rogue server for MolGuard and refuses it.
        since = gw.run("date +%s").stdout.strip()
        gw.run("systemctl restart mcpgateway.service")
        deadline = time.monotonic() + 90
        journal = ""
        while time.monotonic() < deadline:
            journal = gw.run(f"journalctl -u mcpgateway.service --since @{since} -o cat --no-pager").stdout
            if "CERTIFICATE_VERIFY_FAILED" in journal or "certificate verify failed" in journal:
                break
            time.sleep(2)
        assert re.search(r"(?i)certificate verify failed", journal), journal[-3000:]
        assert "Registered plugin: MolGuard" not in journal, journal[-3000:]
    finally:
        gw.run("systemctl stop mcp-test-rogue.service; rm -f /usr/local/share/ca-certificates/mcp-test-rogue.crt; "
               "update-ca-certificates --fresh >/dev/null 2>&1; "
               "test -f /etc/hosts.mcp-test && cat /etc/hosts.mcp-test > /etc/hosts && rm -f /etc/hosts.mcp-test; "
               f"rm -rf {ROGUE}; systemctl reset-failed mcpgateway.service; systemctl restart mcpgateway.service")
    deadline = time.monotonic() + 120
    while gw.run(health_command("mcp-mol-gw2")).rc != 0:
        assert time.monotonic() < deadline, "the gateway on mcp-mol-gw2 did not come back"
        time.sleep(2)
    assert gw.run("runuser -u mcpgateway -- /usr/local/bin/mcp-mtls-probe --no-hook").rc == 0


def test_the_health_check_copies_the_tls_metrics_to_the_textfile_folder():
    """mcp-mol-plug1 sets plugin_server_metrics_textfile_dir: its health check publishes MolGuard's tls.prom there."""
    plug = host("mcp-mol-plug1")
    target = "/var/lib/prometheus/node-exporter/mcp_plugin_MolGuard.prom"
    assert plug.run("systemctl start mcp-plugin-health@MolGuard.service").rc == 0
    copied = plug.run(f"stat -c '%a %U' {target} && cat {target}")
    assert copied.rc == 0, copied.stdout + copied.stderr
    mode_owner, _newline, text = copied.stdout.partition("\n")
    assert mode_owner == "644 root", mode_owner
    source = plug.run(f"cat {METRICS.format(name='MolGuard')}").stdout
    # The same series; the counters may have grown since the copy (the gateways keep calling MolGuard).
    copy, now = series(text), series(source)
    assert copy.keys() == now.keys() and 'mcp_plugin_tls_handshakes_total{plugin="MolGuard"}' in copy, text[:500]
    assert all(copy[key] <= now[key] for key in copy), (copy, now)


def series(text):
    """{series: value} of a Prometheus text file."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}
