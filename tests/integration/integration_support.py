"""Helpers for integration tests: real ansible-playbook runs and module processes on this machine.

A module of its own (not conftest): test files import it by this unique name, which also works when one
pytest session collects tests/unit (whose conftest would shadow `conftest`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
LOCALHOST = Path(__file__).resolve().parent / "inventory" / "localhost.ini"
MODULES = REPO / "plugins" / "modules"
COLLECTIONS = REPO / ".build" / "collections"
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.M,
)


@dataclass
class Run:
    rc: int
    out: str
    recap: dict

    def changed(self, host="localhost"):
        return self.recap[host]["changed"]


def ansible_env(**extra):
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run_playbook(playbook, extra_vars=None, inventory=None, check=False, diff=False, verbosity=0,
                 args=(), env=None, timeout=900):
    """Run ansible-playbook; return rc, combined output and the parsed PLAY RECAP."""
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(playbook)]
    cmd += ["-i", str(inventory) if inventory else str(LOCALHOST)]
    if extra_vars is not None:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    cmd += list(args)
    proc = subprocess.run(cmd, cwd=REPO, env=ansible_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in _RECAP.finditer(out)}
    return Run(proc.returncode, out, recap)


def tree_digest(root: Path):
    """{relative path: (sha256, mode)} of every file below root."""
    import hashlib

    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), oct(path.stat().st_mode & 0o777))
    return out


def leaf_entries(root, count, **extra):
    """The gateway client and COUNT-1 plugin servers, as certificate_set entries (upstream layout)."""
    entries = [dict(name="gateway", profile="client", key_path="%s/gateway/client.key" % root,
                    cert_path="%s/gateway/client.crt" % root, ca_copy_path="%s/gateway/ca.crt" % root,
                    subject="/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway", **extra)]
    for index in range(count - 1):
        name = "Plugin%02d" % index
        entries.append(dict(name=name, key_path="%s/plugins/%s/server.key" % (root, name),
                            cert_path="%s/plugins/%s/server.crt" % (root, name),
                            ca_copy_path="%s/plugins/%s/ca.crt" % (root, name),
                            subject="/CN=mcp-plugin-%s/O=MCPGateway/OU=Plugins" % name,
                            sans=["DNS:%s" % name, "DNS:mcp-plugin-%s" % name, "DNS:localhost"], **extra))
    return entries


def ca_args(root, **extra):
    """Options of module ca for a tree at ROOT (ecdsa, to be quick)."""
    args = {"key_path": "%s/ca/ca.key" % root, "cert_path": "%s/ca/ca.crt" % root, "key_type": "ecdsa"}
    args.update(extra)
    return args


def set_args(root, entries, signing="ca", trust=(), **extra):
    """Options of module certificate_set for ENTRIES, signed by ROOT/SIGNING (ca or ca/next)."""
    args = {"ca_cert": "%s/%s/ca.crt" % (root, signing), "ca_key": "%s/%s/ca.key" % (root, signing),
            "ca_trust": list(trust), "certificates": entries, "workers": 2}
    args.update(extra)
    return args
