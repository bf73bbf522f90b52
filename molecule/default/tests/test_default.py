"""Behaviour of the converged molecule hosts, read from inside the containers (testinfra, podman backend)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import testinfra
from molecule_support import ADDRESS, GRPC, PLUGIN_HOSTS, group_vars, private_key_files

GATEWAY = "mcp-mol-gw"
PLUGINS = {name: (host, port) for host, plugins in PLUGIN_HOSTS.items() for name, port in plugins.items()}
# The MCP (Streamable HTTP) plugins: their port is held by systemd's socket; the gRPC ones are in test_grpc.py.
HTTP = sorted(set(PLUGINS) - GRPC)
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PKI = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "certs/mcp"


def host(name):
    return testinfra.get_host(f"podman://{name}")


def journal(h, unit):
    return h.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_units_active_and_enabled(name):
    h = host(PLUGINS[name][0])
    for unit in (f"mcp-plugin@{name}.service", f"mcp-plugin-health@{name}.timer"):
        svc = h.service(unit)
        assert svc.is_running or unit.endswith(".timer") and h.run(f"systemctl is-active {unit}").stdout.strip() == "active", journal(h, unit)
        assert svc.is_enabled, unit


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_unit_hardening(name):
    h = host(PLUGINS[name][0])
    props = h.service(f"mcp-plugin@{name}.service").systemd_properties
    assert props["User"] == "mcp-plugin"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    bounding = h.run(f"systemctl show -p CapabilityBoundingSet --value mcp-plugin@{name}.service").stdout.strip()
    assert bounding == "", f"capabilities left in the bounding set: {bounding}"
    out = h.run(f"systemd-analyze security mcp-plugin@{name}.service --no-pager").stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security mcp-plugin@{name}.service: {exposure}")
    assert exposure <= 3.0, out[-400:]


@pytest.mark.parametrize("plugin_host", sorted(PLUGIN_HOSTS))
def test_ports_listen_on_the_right_addresses(plugin_host):
    h = host(plugin_host)
    for name, port in PLUGIN_HOSTS[plugin_host].items():
        assert h.socket(f"tcp://0.0.0.0:{port}").is_listening, name
        assert h.socket(f"tcp://127.0.0.1:{port + 1000}").is_listening, name
        assert not h.socket(f"tcp://0.0.0.0:{port + 1000}").is_listening, f"{name}: health open to the network"


@pytest.mark.parametrize("name", HTTP)
def test_port_held_by_systemd_tls_set_switched_by_link_and_loaded_files_recorded(name):
    h, port = host(PLUGINS[name][0]), PLUGINS[name][1]
    assert h.service(f"mcp-plugin@{name}.socket").is_enabled
    assert h.run(f"systemctl is-active mcp-plugin@{name}.socket").stdout.strip() == "active"
    listeners = h.run(f"ss -ltnpH 'sport = :{port}'").stdout
    assert '("systemd",pid=1,' in listeners, listeners  # the port stays open while the instance restarts
    link = h.file(f"/etc/mcp-plugins/{name}/tls")
    assert link.is_symlink and re.fullmatch(rf"/etc/mcp-plugins/{name}/tls\.d/[0-9a-f]{{16}}", link.linked_to), link.linked_to
    record = h.file(f"/run/mcp-plugins/{name}/loaded.sha256")
    assert (record.user, record.mode) == ("mcp-plugin", 0o600)
    assert "PASSPHRASE" not in record.content_string and "secret.env" not in record.content_string
    check = h.run(f"cd /etc/mcp-plugins/{name} && sha256sum --check --status /run/mcp-plugins/{name}/loaded.sha256")
    assert check.rc == 0, "the instance does not run with the deployed files"


@pytest.mark.parametrize("plugin_host", sorted(PLUGIN_HOSTS))
def test_plugin_tls_files_modes_and_owners(plugin_host):
    h = host(plugin_host)
    for name in PLUGIN_HOSTS[plugin_host]:
        key = h.file(f"/etc/mcp-plugins/{name}/tls/server.key")
        assert (key.user, key.mode) == ("mcp-plugin", 0o600)
        for crt in ("server.crt", "ca.crt"):
            assert h.file(f"/etc/mcp-plugins/{name}/tls/{crt}").mode == 0o644


PEM_KEY = re.compile(r"^-----BEGIN ([A-Z ]*)PRIVATE KEY-----\r?\n(?:[A-Za-z-]+: [^\n]*\n|\r?\n)*"
                     r"(?:[A-Za-z0-9+/=]+\r?\n)+-----END \1PRIVATE KEY-----", re.M)


@pytest.mark.parametrize("name", [GATEWAY, *sorted(PLUGIN_HOSTS)])
def test_no_ca_private_key_on_any_host(name):
    """Every PEM private key on the host (in any file: a key, a backup, a source file embedding one) is
    opened, with the plugin key passphrase where encrypted, and compared with the CA's by public key,
    and by content with the controller's (encrypted) CA key."""
    h = host(name)
    ca_pub = subprocess.run(["openssl", "x509", "-in", str(PKI / "ca/ca.crt"), "-noout", "-pubkey"],
                            capture_output=True, text=True, check=True).stdout.strip()
    ca_bodies = {_key_body(m.group(0)) for m in PEM_KEY.finditer((PKI / "ca/ca.key").read_text())}
    assert len(ca_bodies) == 1, "the controller's CA key was not recognised: the search itself is broken"
    blocks = [(path, m.group(0)) for path, text in private_key_files(h).items() for m in PEM_KEY.finditer(text)]
    assert any(re.search(r"/tls\.d/[0-9a-f]+/(server|client)\.key$", path) for path, _block in blocks), \
        "the deployed key was not found: the search itself is broken"
    passphrase = shlex.quote(group_vars()["pki_plugin_key_passphrase"])
    for path, block in blocks:
        assert _key_body(block) not in ca_bodies, f"{name}: {path} holds a copy of the CA key"
        if "OPENSSH PRIVATE KEY" in block:  # e.g. sshd's host keys: opened here, they are unencrypted
            pub = _openssh_public_pem(block)
            assert pub, f"{name}: the OpenSSH-format key in {path} cannot be opened, so it cannot be compared"
            assert pub != ca_pub, f"{name}: {path} holds the CA private key (OpenSSH format)"
            continue
        pub = h.run(f"printf '%s\\n' {shlex.quote(block)} | P={passphrase} openssl pkey -pubout -passin env:P")
        assert pub.rc == 0, f"{name}: a key in {path} cannot be opened, so it cannot be compared: {pub.stderr[-300:]}"
        assert pub.stdout.strip() != ca_pub, f"{name}: {path} holds the CA private key"
    print(f"{name}: {len(blocks)} PEM private keys compared with the CA's")


def _openssh_public_pem(block):
    """The public key (SubjectPublicKeyInfo PEM) of an unencrypted OpenSSH-format private key, or None."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(block.encode(), password=None)
    except (ValueError, TypeError):
        return None
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode().strip()


def _key_body(pem):
    return "".join(line.strip() for line in pem.splitlines() if line.strip() and "-----" not in line and ":" not in line)


def test_gateway_files_service_and_probe():
    h = host(GATEWAY)
    key = h.file("/etc/mcpgateway/tls/client.key")
    assert (key.user, key.mode) == ("mcpgateway", 0o600)
    svc = h.service("mcpgateway.service")
    assert svc.is_running and svc.is_enabled, journal(h, "mcpgateway.service")
    assert h.socket("tcp://127.0.0.1:4444").is_listening
    # Only the gateway's current start counts: its invocation's journal, not the unit's whole history.
    invocation = h.run("systemctl show -p InvocationID --value mcpgateway.service").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", invocation), invocation
    current = h.run(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}").stdout
    registered = set(re.findall(r"Registered plugin: (\S+)", current))
    assert registered == set(PLUGINS), (registered, journal(h, "mcpgateway.service"))
    probe = h.run("runuser -u mcpgateway -- /usr/local/bin/mcp-mtls-probe")
    assert probe.rc == 0, probe.stdout + probe.stderr
    lines = [json.loads(line) for line in probe.stdout.splitlines() if line.startswith("{")]
    assert sorted(x["name"] for x in lines) == sorted(PLUGINS)
    assert all(x["ok"] and x["tls_version"] in ("TLSv1.2", "TLSv1.3") for x in lines), lines


@pytest.mark.parametrize("name", HTTP)
def test_handshakes_from_the_gateway_host(name):
    h = host(GATEWAY)
    port = PLUGINS[name][1]
    base = f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert /etc/mcpgateway/tls/ca.crt https://{ADDRESS[name]}:{port}/mcp"
    ok = h.run(base + " --cert /etc/mcpgateway/tls/client.crt --key /etc/mcpgateway/tls/client.key")
    assert ok.rc == 0 and ok.stdout.isdigit(), ok.stderr
    refused = h.run(base)
    assert refused.rc in (35, 56), (refused.rc, refused.stderr)
    # TLS 1.1 refused by the server: the same client completes TLS 1.2 (the server is up and talks to it);
    # with TLS 1.1 it connects, its ClientHello really goes out, and the server answers with no ServerHello:
    # an alert, or (uvicorn: asyncio's TLS sends no alert) it closes the connection. No session exists.
    s_client = (f"openssl s_client -connect {ADDRESS[name]}:{port} -cipher 'DEFAULT:@SECLEVEL=0' -msg "
                f"-cert /etc/mcpgateway/tls/client.crt -key /etc/mcpgateway/tls/client.key -CAfile /etc/mcpgateway/tls/ca.crt")
    tls12 = h.run(s_client + " -tls1_2 -verify_return_error </dev/null")
    assert tls12.rc == 0 and "Protocol  : TLSv1.2" in tls12.stdout, tls12.stdout[-800:] + tls12.stderr[-800:]
    tls11 = h.run(s_client + " -tls1_1 </dev/null")
    out11 = tls11.stdout + tls11.stderr
    assert tls11.rc != 0 and "CONNECTED(" in out11, out11[-800:]
    assert re.search(r">>> TLS 1\.1, Handshake \[length [0-9a-f]+\], ClientHello", out11), out11[-800:]
    assert "ServerHello" not in out11 and "Cipher is (NONE)" in out11, out11[-800:]
    assert re.search(r"<<< TLS 1\.[0-2], Alert \[length 0002\], fatal", out11) or "SSL handshake has read 0 bytes" in out11, out11[-800:]
    health = h.run(f"curl -sS --max-time 5 http://{ADDRESS[name]}:{port + 1000}/health")
    assert health.rc == 7, "the health port must not be reachable from the gateway host"


def _run_site(*args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", env["MOLECULE_INVENTORY_FILE"], str(REPO / "site.yml"), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)


def _recap(out):
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", out, re.M)}


def test_check_mode_on_the_deployed_hosts_reports_nothing_to_change():
    run = _run_site("--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = _recap(run.stdout)
    assert set(recap) >= {GATEWAY, *PLUGIN_HOSTS} and not any(recap.values()), recap


def _podman_write(name, path, data):
    """Write DATA (bytes) to PATH on host NAME through stdin (never on a command line)."""
    subprocess.run(["podman", "exec", "-i", name, "sh", "-c", f"mkdir -p \"$(dirname {shlex.quote(path)})\" && cat > {shlex.quote(path)}"],
                   input=data, check=True, capture_output=True)


def test_verify_fails_on_a_world_readable_key_and_finds_ca_key_copies_anywhere():
    """The verify role is not a rubber stamp: a key made world-readable fails the play, naming the file; so
    do copies of the CA key where the old search did not look: the encrypted key after 100 KiB of text in
    /var/cache (a folder outside the old list, a file over the old 64 KiB cap), the decrypted key as the
    second key of a PEM bundle, and a copy in /run (a tmpfs outside the old list)."""
    h = host("mcp-mol-plug1")
    key = "/etc/mcp-plugins/MolGuard/tls/server.key"
    encrypted = (PKI / "ca/ca.key").read_bytes()
    plain = subprocess.run(["openssl", "pkey", "-in", str(PKI / "ca/ca.key"), "-passin", "env:P"], capture_output=True, check=True,
                           env=dict(os.environ, P=group_vars()["pki_ca_passphrase"])).stdout
    other = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                           capture_output=True, check=True).stdout
    planted = {"/var/cache/mcp-t/notes.txt": b"lorem ipsum\n" * 9000 + encrypted,
               "/srv/mcp-t/bundle.pem": other + plain,
               "/run/mcp-t/hidden.pem": plain}
    assert h.run(f"chmod 0644 {key}").rc == 0
    try:
        for path, data in planted.items():
            _podman_write("mcp-mol-plug1", path, data)
        run = _run_site("--tags", "verify_files")
    finally:
        h.run(f"chmod 0600 {key}; rm -rf /var/cache/mcp-t /srv/mcp-t /run/mcp-t")
    out = run.stdout + run.stderr  # ansible-core 2.19 prints the failed assertion on stderr
    assert run.returncode != 0
    assert "check: file_owner_mode" in out and f"target: {key}" in out, out[-3000:]
    assert "check: no_ca_private_key_on_host" in out, out[-3000:]
    found = out[out.find("check: no_ca_private_key_on_host"):]
    for path in planted:
        assert path in found, (path, found[:3000])


def _negative_checks():
    """The refusal checks of verify's gateway side, as module verify_host's checks name them."""
    spec = importlib.util.spec_from_file_location("_tlscheck", REPO / "plugins/module_utils/_tlscheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert len(module.NEGATIVE_CHECKS) >= 6, module.NEGATIVE_CHECKS
    return module.NEGATIVE_CHECKS


def test_verify_negative_checks_fail_when_the_plugin_is_down():
    """With MolEcho stopped, every one of its refusal checks must fail too (a refused connection is no TLS
    refusal, and a port that answers nothing proves nothing about the health port), and so must its
    positive checks; MolWords, on the same host, keeps passing."""
    h = host("mcp-mol-plug2")
    # The socket too: systemd would start the instance again on the first connection.
    h.run("systemctl stop mcp-plugin-health@MolEcho.timer mcp-plugin@MolEcho.socket mcp-plugin@MolEcho.service")
    try:
        run = _run_site("--tags", "verify_gateway")
    finally:
        h.run("systemctl start mcp-plugin@MolEcho.socket mcp-plugin@MolEcho.service mcp-plugin-health@MolEcho.timer")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "failed check(s) on mcp-mol-gw" in out, out[-3000:]
    failed = out[out.find("failed check(s) on mcp-mol-gw"):]
    # to_nice_yaml sorts the keys of each record (check, expected, ok, seen, target) and indents by 4: "-   check: X".
    pairs = set(re.findall(r"^\s*-\s+check: (\S+)\n.*?\btarget: (\S+)", failed, re.S | re.M))
    expected = {*_negative_checks(), "mtls_handshake_with_gateway_cert", "gateway_probe_mtls_call"}
    assert {(check, "MolEcho") for check in expected} <= pairs, (sorted(expected - {c for c, t in pairs if t == "MolEcho"}), failed[:4000])
    assert not [pair for pair in pairs if pair[1] == "MolWords"], failed[:4000]


def _main_pid(h, name):
    return h.run(f"systemctl show -p MainPID --value mcp-plugin@{name}.service").stdout.strip()


def test_certificate_change_reloads_only_that_plugin_and_is_served():
    """Re-issue MolWords' certificate on the controller; site.yml reloads exactly that instance (no restart: every
    process stays) and it serves the new certificate."""
    h2 = host("mcp-mol-plug2")
    pids = {name: _main_pid(host(PLUGINS[name][0]), name) for name in PLUGINS}
    old = (PKI / "plugins/MolWords/server.crt").read_bytes()
    forced = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "localhost", "-c", "local", "-m", "mcpgateway.mtls.certificate", "-a",
         json.dumps({"key_path": str(PKI / "plugins/MolWords/server.key"), "cert_path": str(PKI / "plugins/MolWords/server.crt"),
                     "ca_cert": str(PKI / "ca/ca.crt"), "ca_key": str(PKI / "ca/ca.key"), "profile": "server",
                     # the molecule inventory encrypts the CA and plugin keys
                     "ca_passphrase": group_vars()["pki_ca_passphrase"],
                     "passphrase": group_vars()["pki_plugin_key_passphrase"],
                     "subject": "/CN=mcp-plugin-MolWords/O=MCPGateway/OU=Plugins", "key_type": "ecdsa", "force": True,
                     "sans": ["DNS:MolWords", "DNS:mcp-plugin-MolWords", "DNS:localhost", "DNS:" + ADDRESS["MolWords"]]})],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    new = (PKI / "plugins/MolWords/server.crt").read_bytes()
    assert new != old
    since = h2.run("date +%s").stdout.strip()
    run = _run_site()
    assert run.returncode == 0, run.stdout[-3000:]
    after = {name: _main_pid(host(PLUGINS[name][0]), name) for name in PLUGINS}
    assert after == pids, (pids, after)
    reloads = {name: h2.run(f"journalctl -u mcp-plugin@{name}.service --since @{since} -o cat --no-pager "
                            "| grep -c 'TLS reload: new handshakes use the set'").stdout.strip() for name in ("MolWords", "MolEcho")}
    assert reloads == {"MolWords": "1", "MolEcho": "0"}, reloads
    served = host(GATEWAY).run(f"openssl s_client -connect {ADDRESS['MolWords']}:8000 -cert /etc/mcpgateway/tls/client.crt "
                               "-key /etc/mcpgateway/tls/client.key </dev/null 2>/dev/null | openssl x509 -outform PEM")
    deployed = h2.run("cat /etc/mcp-plugins/MolWords/tls/server.crt").stdout
    assert served.stdout.strip() == deployed.strip() == new.decode().strip()
