"""Secrets: every playbook run with -vvv --diff shows no private key and no passphrase, nor does any log.

The molecule inventory encrypts the CA key and the plugin keys (passphrases with blanks, quotes, '#',
'$', '\\'). The runs are made to move keys: site.yml after a plugin's deployed TLS set was removed,
rotate.yml with rotate_force=leaves (new keys for every host), check.yml, and schedule_rotation.yml
(cron mode on the controller, every path in a temporary folder) whose wrapper then runs check.yml with
-vvv --diff for real. Searched: the output of each run, the wrapper's logs, the rotation report, and on
every host the whole journal and /var/log. Searched for: each passphrase (as typed, JSON-escaped and by
a distinctive part), the gateway's generated secrets, and every line of every private key's PEM body
(controller and hosts, encrypted ones too), plus the PEM private-key marker itself.
Then: key files 0600 and owned by the service user on every host (every TLS set kept), passphrase and
secret files not readable by others, the CA key only on the controller (0600).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import pytest
from molecule_support import GATEWAY, PKI, PLUGIN_HOSTS, REPO, REPORT, group_vars, host, playbook, private_key_files, recap

HOSTS = [GATEWAY, *PLUGIN_HOSTS]
VERBOSE = ("-vvv", "--diff")
OUTPUTS: dict[str, str] = {}  # what each run printed, for the search


def pem_key_lines(text):
    """The base64 body lines of every PEM private key in text (at least 40 characters, so unique)."""
    lines = []
    for body in re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END [A-Z ]*PRIVATE KEY-----", text, re.S):
        lines += [line.strip() for line in body.splitlines() if len(line.strip()) >= 40 and ":" not in line]
    return lines


def host_keys(name):
    """path -> PEM text of every private key file the collection deployed on the host (all TLS sets)."""
    h = host(name)
    found = h.run("find /etc/mcp-plugins /etc/mcpgateway -name '*.key' -type f 2>/dev/null").stdout.split()
    return {path: h.file(path).content_string for path in found}


def gateway_secrets():
    """The values of the gateway's generated secrets file (JWT and encryption keys, passwords)."""
    text = host(GATEWAY).file("/etc/mcpgateway/secrets.env").content_string
    values = [line.split("=", 1)[1].strip().strip("'\"") for line in text.splitlines() if "=" in line and not line.startswith("#")]
    return [v for v in values if len(v) >= 12]


def needles():
    """name -> string that must not appear anywhere."""
    gv = group_vars()
    found = {}
    for var in ("pki_ca_passphrase", "pki_plugin_key_passphrase"):
        secret = gv[var]
        found[f"{var} (as typed)"] = secret
        found[f"{var} (JSON-escaped)"] = json.dumps(secret)[1:-1]
        found[f"{var} (a distinctive part)"] = secret.split()[1]  # "CA-pass", "Plug-pass"
    for i, value in enumerate(gateway_secrets()):
        found[f"gateway secret #{i}"] = value
    # The tree's keys, and the keys of revoked leaves that playbooks/revoke.yml kept (revoked/STAMP/NAME/key.pem).
    keys = {str(p): p.read_text() for p in [*PKI.rglob("*.key"), *PKI.rglob("key.pem")]}
    for name in HOSTS:
        keys.update({f"{name}:{path}": text for path, text in host_keys(name).items()})
    assert any("ca/ca.key" in k for k in keys) and any(k.startswith(GATEWAY) for k in keys), sorted(keys)
    for where, text in keys.items():
        lines = pem_key_lines(text)
        assert lines, f"{where}: no PEM body found (the search would prove nothing)"
        for n, line in enumerate(lines):
            found[f"line {n} of the private key {where}"] = line
    found["a PEM private key marker"] = "PRIVATE KEY-----"
    return found


def run_verbose(path, *args, **kwargs):
    run = playbook(path, *VERBOSE, *args, **kwargs)
    text = OUTPUTS[f"{path} {' '.join(args)}".strip()] = run.stdout + run.stderr
    # Where the verbose lines go depends on the environment (under `molecule verify`: stderr).
    assert re.search(r"^<[^>]+> ESTABLISH ", text, re.M), "not a -vvv run"
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every playbook, verbose, moving keys; and the scheduled wrapper's run. Returns the extra logs."""
    h = host("mcp-mol-plug1")
    assert h.run("rm -rf /etc/mcp-plugins/MolGuard/tls.d /etc/mcp-plugins/MolGuard/tls").rc == 0
    site = run_verbose("site.yml")
    assert site.returncode == 0, site.stdout[-3000:]
    assert recap(site.stdout)["mcp-mol-plug1"]["changed"] > 0
    rotate = run_verbose("playbooks/rotate.yml", "-e", "rotate_force=leaves")
    assert rotate.returncode == 0, rotate.stdout[-3000:]
    check = run_verbose("playbooks/check.yml")
    assert check.returncode == 0, check.stdout[-3000:]
    base = tmp_path_factory.mktemp("schedule")
    for sub in ("cron.d", "sbin", "systemd", "run", "log"):
        (base / sub).mkdir()
    settings = {
        "rotate_schedule_method": "cron",
        "rotate_schedule_inventory": os.environ["MOLECULE_INVENTORY_FILE"],
        "rotate_schedule_playbook": str(REPO / "playbooks/check.yml"),
        "rotate_schedule_extra_args": list(VERBOSE),
        "rotate_schedule_environment": {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                                        "ANSIBLE_COLLECTIONS_PATH": os.environ["ANSIBLE_COLLECTIONS_PATH"]},
        "rotate_schedule_cron_dir": str(base / "cron.d"),
        "rotate_schedule_systemd_dir": str(base / "systemd"),
        "rotate_schedule_wrapper": str(base / "sbin/mcp-mtls-rotate"),
        "rotate_schedule_log_dir": str(base / "log"),
        "rotate_schedule_lock_file": str(base / "run/lock"),
    }
    extra = base / "vars.json"
    extra.write_text(json.dumps(settings))
    schedule = run_verbose("playbooks/schedule_rotation.yml", "-e", f"@{extra}")
    assert schedule.returncode == 0, schedule.stdout[-3000:]
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh", "LOGNAME": "root"}
    wrapper = subprocess.run([str(base / "sbin/mcp-mtls-rotate"), "--now"], env=cron_env, cwd=base, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=900, check=False)
    assert wrapper.returncode == 0, wrapper.stdout[-3000:] + wrapper.stderr[-2000:]
    logs = {str(p): p.read_text(errors="replace") for p in (base / "log").rglob("*") if p.is_file()}
    assert any("ESTABLISH" in text for text in logs.values()), "the scheduled run's log is not verbose"
    logs["wrapper output"] = wrapper.stdout + wrapper.stderr
    logs[str(REPORT)] = REPORT.read_text()
    for name in HOSTS:
        journal = ["podman", "exec", name, "journalctl", "--no-pager", "-o", "cat"]
        logs[f"{name}: journal"] = subprocess.run(journal, capture_output=True, text=True, errors="replace", check=True).stdout
        logs[f"{name}: /var/log"] = host(name).run("grep -rIh '' /var/log 2>/dev/null || true").stdout
    return logs


def test_no_key_or_passphrase_in_any_output_or_log(runs):
    searched = {**OUTPUTS, **runs}
    print("searched: " + ", ".join(f"{where} ({len(text)} chars)" for where, text in searched.items()))
    assert len(OUTPUTS) == 4 and all(len(text) > 5000 for text in OUTPUTS.values()), {k: len(v) for k, v in OUTPUTS.items()}
    # What is searched, besides the 4 runs: the wrapper's output, its log files, the report, and the whole
    # journal and /var/log of every host (a journal of a few lines would mean it was not read).
    assert "wrapper output" in runs and str(REPORT) in runs, sorted(runs)
    assert len(runs) >= 2 + 1 + 2 * len(HOSTS), sorted(runs)  # at least one log file of the wrapper's
    assert all(len(runs[f"{name}: journal"]) > 10000 and f"{name}: /var/log" in runs for name in HOSTS), {k: len(v) for k, v in runs.items()}
    secrets = needles()
    print(f"{len(secrets)} strings searched for in {len(searched)} outputs and logs "
          f"({sum(len(t) for t in searched.values())} characters)")
    leaks = [f"{what} in {where}" for where, text in searched.items() for what, needle in secrets.items() if needle in text]
    assert not leaks, leaks[:20]
    # Diff mode was on: files that are no secret are shown (keys, passphrase files and the like never are),
    # so the absence of the keys means something.
    diffs = {where: len(re.findall(r"^\s+after_header: ", text, re.M)) for where, text in OUTPUTS.items()}
    print(f"diffs shown per run: {diffs}")
    assert diffs["playbooks/rotate.yml -e rotate_force=leaves"] > 0, diffs


@pytest.mark.parametrize("name", HOSTS)
def test_key_and_secret_files_modes_and_owners(runs, name):
    h = host(name)
    user = "mcpgateway" if name == GATEWAY else "mcp-plugin"
    keys = host_keys(name)
    assert keys, "no key found"
    for path in keys:
        f = h.file(path)
        assert (f.user, f.mode) == (user, 0o600), (path, f.user, oct(f.mode))
    others = ("/etc/mcpgateway/secrets.env",) if name == GATEWAY else tuple(
        f"/etc/mcp-plugins/{p}/secret.env" for p in PLUGIN_HOSTS[name])
    for path in others:
        f = h.file(path)
        assert f.exists and f.mode & 0o007 == 0 and f.user == "root", (path, f.user, oct(f.mode))
    # The load records hold digests only, and are private to the service user.
    records = h.run("find /run/mcp-plugins /run/mcpgateway -name loaded.sha256 2>/dev/null").stdout.split()
    assert records
    for path in records:
        assert h.file(path).mode & 0o077 == 0


def test_the_ca_key_is_on_the_controller_only_and_0600(runs):
    for path in [PKI / "ca/ca.key", *PKI.rglob("*.key")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, (path, oct(mode))
    # The plugin CA's key and the MCP clients' CA's key (role pki's clients-ca/, molecule.yml's pki_clients).
    for ca_key in (PKI / "ca/ca.key", PKI / "clients-ca/ca.key"):
        assert ca_key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), ca_key
        ca_body = "".join(pem_key_lines(ca_key.read_text()))
        for name in HOSTS:
            copies = private_key_files(host(name))
            assert copies, f"{name}: no private key found at all (the search would prove nothing)"
            for path, text in copies.items():
                assert ca_body not in "".join(pem_key_lines(text)), f"{name}:{path}"
