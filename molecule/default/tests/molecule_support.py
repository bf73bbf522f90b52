"""Helpers of the molecule tests that run playbooks against the converged hosts (not a test module)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import testinfra
import yaml

GATEWAY = "mcp-mol-gw"
# Every gateway host, in inventory order (the order in which site.yml and rotate.yml roll them, one at a time).
GATEWAYS = [GATEWAY, "mcp-mol-gw2"]
PLUGIN_HOSTS = {"mcp-mol-plug1": {"MolGuard": 8000, "MolGrpc": 8300}, "mcp-mol-plug2": {"MolWords": 8000, "MolEcho": 8100}}
PLUGINS = {name: h for h, names in PLUGIN_HOSTS.items() for name in names}
# The plugins served over gRPC (transport: grpc); the others over MCP (Streamable HTTP).
GRPC = {"MolGrpc"}
# Where the gateway dials each plugin (molecule.yml: gateway_plugin_host_prefix "mol-", MolEcho's `host`); the
# hosts' network aliases are these names only, so a check that dials mcp-plugin-NAME cannot pass.
ADDRESS = {"MolGuard": "mol-MolGuard", "MolGrpc": "mol-MolGrpc", "MolWords": "mol-MolWords", "MolEcho": "echo.mol.test"}
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PKI = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "certs/mcp"
REPORT = PKI.parent / "rotate-report.json"
PROBE = "/usr/local/bin/mcp-mtls-probe"
# The gateways that serve their API over HTTPS (molecule.yml: gateway_https), with client certificates.
FRONTDOOR = {"mcp-mol-gw2"}
# The leaves of their server certificates, and of the MCP clients' certificates (molecule.yml: pki_clients).
FRONTDOOR_LEAVES = ["frontdoor." + name for name in sorted(FRONTDOOR)]
CLIENT_LEAVES = ["client.mol-ci", "client.mol-client"]
TLS_DIR = "/etc/mcpgateway/tls"


def gateway_url(name):
    """The base URL of the gateway on host NAME, as the host itself reaches it."""
    return ("https" if name in FRONTDOOR else "http") + "://127.0.0.1:4444"


def gateway_tls(name):
    """verify_host's tls for the gateway on host NAME: its CA bundle and its own client certificate (None: plain HTTP)."""
    if name not in FRONTDOOR:
        return None
    return {"ca": f"{TLS_DIR}/ca.crt", "cert": f"{TLS_DIR}/client.crt", "key": f"{TLS_DIR}/client.key"}


def health_command(name):
    """The curl command on host NAME that succeeds when its gateway answers /health (with the gateway's own client
    certificate at an HTTPS front door)."""
    tls = gateway_tls(name)
    extra = f"--cacert {tls['ca']} --cert {tls['cert']} --key {tls['key']} " if tls else ""
    return f"curl -fsS -o /dev/null {extra}{gateway_url(name)}/health"


def group_vars():
    """The group_vars of `all` of the molecule inventory (molecule.yml's), e.g. the passphrases."""
    path = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "inventory/group_vars/all"
    return yaml.safe_load(path.read_text())


def network_aliases(container):
    """The service-network aliases molecule.yml gives CONTAINER (to restore them after a network fault)."""
    platforms = yaml.safe_load((Path(__file__).resolve().parents[1] / "molecule.yml").read_text())["platforms"]
    opts = next(p for p in platforms if p["name"] == container).get("extra_opts") or []
    service = [opt.split(":", 1)[1] for opt in opts if opt.startswith("--network=mcp-molecule:")]
    return [part.split("=", 1)[1] for spec in service for part in spec.split(",") if part.startswith("alias=")]


def host(name):
    return testinfra.get_host(f"podman://{name}")


def playbook(path, *args, timeout=2400, env=None):
    """ansible-playbook PATH against the molecule inventory; the CompletedProcess, its duration printed."""
    run_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {}))
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", run_env["MOLECULE_INVENTORY_FILE"], str(REPO / path), *args]
    started = time.monotonic()
    run = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=timeout, check=False)
    run.seconds = time.monotonic() - started
    print(f"{path} {' '.join(args)}: rc {run.returncode} in {run.seconds:.0f} s")
    return run


def recap(out):
    """host -> {ok, changed, unreachable, failed} of the PLAY RECAP."""
    found = re.findall(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M)
    return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])} for m in found}


def fingerprint(pem_path):
    out = subprocess.run(["openssl", "x509", "-in", str(pem_path), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def controller_leaves():
    return {name: fingerprint(PKI / f"plugins/{name}/server.crt") for name in PLUGINS}


def served(every=False):
    """sha256 of the certificate each plugin serves, as the gateway side sees it (one-shot probe): of the
    plugins that answered, or with every=True of all of them (the probe must succeed)."""
    run = host(GATEWAY).run(f"runuser -u mcpgateway -- {PROBE} --no-hook")
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if every:
        assert run.rc == 0, run.stdout + run.stderr
    return {line["name"]: line["server_cert_sha256"] for line in lines if every or line.get("ok")}


def main_pid(h, unit):
    return h.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()


def stop_container(name):
    subprocess.run(["podman", "stop", "-t", "10", name], check=True, capture_output=True)


def reachable(name):
    """Whether Ansible reaches NAME the way the playbooks do (ssh as the admin user, become)."""
    run_env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "-i", run_env["MOLECULE_INVENTORY_FILE"], name, "-m",
                           "ansible.builtin.ping", "-b"], env=run_env, capture_output=True, text=True, timeout=120,
                          check=False)
    return proc.returncode == 0


def forget_neighbours():
    """Flush the neighbour (ARP) tables of every host of the scenario. A host that was restarted or reconnected
    comes back with a new MAC address at the same IP and announces nothing: the other hosts keep sending to the
    old MAC until their entry goes stale and is probed again, which stalls a new connection for about 5 s
    (delay_first_probe_time). Seen as 6.3 s gaps on that host's plugins in the next rotation of the suite."""
    platforms = yaml.safe_load((Path(__file__).resolve().parents[1] / "molecule.yml").read_text())["platforms"]
    for platform in platforms:
        # In the host's network namespace from outside: the hosts themselves lack CAP_NET_ADMIN.
        pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", platform["name"]], check=True,
                             capture_output=True, text=True).stdout.strip()
        if pid and pid != "0":
            subprocess.run(["nsenter", "-t", pid, "-n", "ip", "neigh", "flush", "all"], check=True, capture_output=True)


def start_container(name, units=(), serving=()):
    """Start a stopped host again and wait until systemd runs it, the given units are active, the given
    plugins answer the gateway side's probe (an active service may not listen yet) and Ansible reaches it
    over ssh (a restarted container gets a new MAC address: until the controller's neighbour entry for its
    address expires, ssh can time out although the host is up)."""
    subprocess.run(["podman", "start", name], check=True, capture_output=True)
    forget_neighbours()
    deadline = time.monotonic() + 180
    while True:
        state = host(name).run("systemctl is-system-running").stdout.strip()
        active = all(host(name).run(f"systemctl is-active {u}").stdout.strip() == "active" for u in units)
        if state in ("running", "degraded") and active and set(serving) <= served().keys() and reachable(name):
            return
        assert time.monotonic() < deadline, f"{name} did not come back: {state}"
        time.sleep(2)


def private_key_files(h):
    """path -> text of every file on host h that holds a PEM private-key marker, binary files included:
    the whole file system but /proc, /sys and /dev (the kernel's pseudo file systems, where no key can be
    written); symlinks are not followed, their targets are found where they lie."""
    found = h.run("grep -rlsa -D skip -e 'PRIVATE KEY-----' $(ls -d /* | grep -vxE '/(proc|sys|dev)') || true").stdout.split()
    return {path: h.file(path).content.decode("utf-8", "replace") for path in found}
