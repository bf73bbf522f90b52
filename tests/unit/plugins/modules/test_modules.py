# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules end to end as Ansible runs them (a JSON args file), without ansible-playbook:
argument specs, check mode, diff, no_log, one error message."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

import ansible_collections.mcpgateway.mtls as collection

ROOT = os.path.abspath(list(collection.__path__)[0])  # .../ansible_collections/mcpgateway/mtls
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(ROOT)))
MODULES = os.path.join(ROOT, "plugins", "modules")


def run(module, tmp_path, check=False, diff=False, **args):
    args.update({"_ansible_check_mode": check, "_ansible_diff": diff, "_ansible_tmpdir": str(tmp_path)})
    path = tmp_path / ("args-%s.json" % module)
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [COLLECTIONS, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, os.path.join(MODULES, module + ".py"), str(path)],
                         capture_output=True, text=True, env=env, check=False)
    path.unlink()
    return json.loads(out.stdout)


@pytest.fixture
def tree(tmp_path):
    pki = tmp_path / "pki"
    return {"ca_cert": str(pki / "ca" / "ca.crt"), "ca_key": str(pki / "ca" / "ca.key"), "root": pki}


def _items(tree):
    return [{"name": name, "key_path": str(tree["root"] / "plugins" / name / "server.key"),
             "cert_path": str(tree["root"] / "plugins" / name / "server.crt"),
             "ca_copy_path": str(tree["root"] / "plugins" / name / "ca.crt"),
             "subject": "/CN=mcp-plugin-%s/O=MCPGateway/OU=Plugins" % name,
             "sans": [name, "mcp-plugin-" + name, "localhost"]}
            for name in ("one", "two")]


def test_four_step_idempotence(tmp_path, tree):
    ca_args = {"key_path": tree["ca_key"], "cert_path": tree["ca_cert"], "key_type": "ecdsa", "passphrase": "ca-secret"}
    set_args = {"ca_cert": tree["ca_cert"], "ca_key": tree["ca_key"], "ca_passphrase": "ca-secret",
                "key_type": "ecdsa", "certificates": _items(tree), "passphrases": {"one": "item-secret", "two": "item-secret"}}
    changed = []
    for check in (True, False, True, False):
        ca = run("ca", tmp_path, check=check, diff=True, **ca_args)
        leaves = run("certificate_set", tmp_path, check=check, diff=True, **set_args)
        assert not ca.get("failed") and not leaves.get("failed"), (ca, leaves)
        changed.append((ca["changed"], leaves["changed"]))
        assert "ca-secret" not in json.dumps([ca, leaves]) and "item-secret" not in json.dumps(leaves)
        if check and not os.path.exists(tree["ca_cert"]):
            assert not tree["root"].exists()
            assert leaves["summary"]["reissued"] == 2
            assert sorted(leaves["diff"]["after"]) == sorted(i["cert_path"] for i in _items(tree))
    assert changed == [(True, True), (True, True), (False, False), (False, False)]


def test_certificate_and_info(tmp_path, tree):
    run("ca", tmp_path, key_path=tree["ca_key"], cert_path=tree["ca_cert"], key_type="ecdsa")
    args = {"ca_cert": tree["ca_cert"], "ca_key": tree["ca_key"], "key_type": "ecdsa", "profile": "client",
            "key_path": str(tree["root"] / "gateway" / "client.key"),
            "cert_path": str(tree["root"] / "gateway" / "client.crt"),
            "ca_copy_path": str(tree["root"] / "gateway" / "ca.crt"),
            "subject": "/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway"}
    first = run("certificate", tmp_path, diff=True, **args)
    assert first["changed"] and first["reasons"] == ["certificate missing", "key missing"]
    assert first["diff"]["before"] == {} and first["diff"]["after"]["profile"] == "client"
    assert not run("certificate", tmp_path, **args)["changed"]
    info = run("certificate_info", tmp_path, check=True, ca_cert=tree["ca_cert"],
               certificates=[{"cert_path": args["cert_path"], "key_path": args["key_path"]}],
               paths=[str(tree["root"] / "missing.crt")])
    assert not info["changed"]
    assert [c["status"] for c in info["certificates"]] == ["ok", "missing"]
    assert info["certificates"][0]["chain_valid"] and info["certificates"][0]["key_matches"]


@pytest.mark.parametrize("module, args, fragment", [
    ("ca", {"valid_days": 0}, "valid_days must be > 0"),
    ("ca", {"key_type": "ecdsa", "key_size": 2048}, "key_size 2048 is not valid for key_type ecdsa"),
    ("certificate_set", {"certificates": [{"key_path": "/x/a.key", "cert_path": "/x/a.crt", "subject": "/CN=a",
                                           "name": "a/b"}]}, "must not contain '/'"),
    ("certificate_set", {"workers": 0, "certificates": []}, "workers must be >= 1"),
    ("certificate_set", {"certificates": [{"key_path": "/x/a.key", "cert_path": "/x/a.crt", "subject": "/CN=a",
                                           "name": "a"}], "passphrases": {"b": "b-secret"}},
     "passphrases: no entry of certificates is named b; passphrases are keyed by certificates[].name"),
])
def test_bad_input_is_one_clear_error(tmp_path, tree, module, args, fragment):
    if module == "ca":
        args = dict(args, key_path=tree["ca_key"], cert_path=tree["ca_cert"])
    else:
        args = dict(args, ca_cert=tree["ca_cert"], ca_key=tree["ca_key"])
    result = run(module, tmp_path, **args)
    assert result["failed"] and fragment in result["msg"]
    assert not tree["root"].exists()


def test_plugin_host_converges_reports_and_never_returns_keys_or_passphrases(tmp_path, journal):
    """Module plugin_host as Ansible runs it; a recording systemctl on PATH stands in for systemd
    (molecule runs it against real systemd over ssh). Keys, passphrases and programs (whose source may name a PEM
    marker, like the launcher's check for encrypted keys) reach neither the result nor the host's journal."""
    key = "-----BEGIN PRIVATE KEY-----\nS3CRETKEYBYTES\n-----END PRIVATE KEY-----\n"
    cert = "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n"
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    log = tmp_path / "systemctl.log"
    (fakebin / "systemctl").write_text("#!/bin/sh\necho \"$*\" >> %s\n" % log)
    (fakebin / "systemctl").chmod(0o755)
    args = {"instances": [{"name": "one", "config": "c\n", "env": "e\n", "socket": "[Socket]\n",
                           "cert": cert, "ca": cert}],
            "keys": {"one": key}, "passphrases": {"one": "PassPhrase-XYZ"},
            "units": {"mcp-plugin@.service": "[Service]\n"},
            "programs": {str(fakebin / "launcher.py"): "MARK = b'-----BEGIN ENCRYPTED PRIVATE KEY-----'\n"},
            "restart_programs": [str(fakebin / "launcher.py")],
            "user": str(os.getuid()), "group": str(os.getgid()), "config_dir": str(tmp_path / "etc"),
            "unit_dir": str(tmp_path / "units"), "state_dir": str(tmp_path / "run")}
    (tmp_path / "units").mkdir()
    old_path = os.environ["PATH"]
    os.environ["PATH"] = "%s:%s" % (fakebin, old_path)
    try:
        checked = run("plugin_host", tmp_path, check=True, **args)
        assert checked["changed"] and not (tmp_path / "etc").exists(), checked
        first = run("plugin_host", tmp_path, **args)
    finally:
        os.environ["PATH"] = old_path
    assert not first.get("failed"), first
    assert first["changed"] and first["daemon_reload"] and first["started"] == ["one"]
    assert first["restart"] == []  # just started: no restart on top
    calls = log.read_text().splitlines()
    assert [line.split()[0] for line in calls] == ["show", "daemon-reload", "show", "enable", "start"]
    text = json.dumps([checked, first])
    assert "S3CRETKEYBYTES" not in text and "PassPhrase-XYZ" not in text and "PRIVATE KEY-----" not in text
    assert (tmp_path / "etc" / "one" / "secret.env").read_text().count("PassPhrase-XYZ") == 1
    assert (fakebin / "launcher.py").read_text().startswith("MARK = ")
    logged = journal.read_text(encoding="utf-8")
    assert logged.count("Invoked with") == 2, logged  # the stand-in really got both invocations
    assert "S3CRETKEYBYTES" not in logged and "PassPhrase-XYZ" not in logged and "PRIVATE KEY" not in logged


def test_plugin_host_fails_on_a_missing_prerequisite_before_any_change_also_in_check_mode(tmp_path, monkeypatch):
    """Option prerequisites: a PATH holding only a fake systemctl; curl and an unknown program are missing (the
    sbin folders the module also searches hold neither)."""
    cert = "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n"
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "systemctl").write_text("#!/bin/sh\necho \"$*\" >> %s\n" % (tmp_path / "systemctl.log"))
    (fakebin / "systemctl").chmod(0o755)
    (tmp_path / "units").mkdir()
    args = {"instances": [{"name": "one", "config": "c\n", "env": "e\n", "socket": "[Socket]\n",
                           "cert": cert, "ca": cert}],
            "keys": {"one": "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n"},
            "units": {"mcp-plugin@.service": "[Service]\n"},
            "user": str(os.getuid()), "group": str(os.getgid()), "config_dir": str(tmp_path / "etc"),
            "unit_dir": str(tmp_path / "units"), "state_dir": str(tmp_path / "run"),
            "prerequisites": ["systemctl", "curl", "mcp-no-such-tool-4711"]}
    monkeypatch.setenv("PATH", str(fakebin))
    for check in (True, False):
        result = run("plugin_host", tmp_path, check=check, **args)
        assert result.get("failed") and not result.get("changed"), result
        assert result["msg"].startswith(
            "missing on this host: curl (Debian/Ubuntu: apt install curl; RHEL/Fedora: dnf install curl), "
            "mcp-no-such-tool-4711 (no package known to this collection: install what provides it). "), result
        assert "systemctl (" not in result["msg"]
    assert not (tmp_path / "etc").exists() and os.listdir(tmp_path / "units") == []
    assert not (tmp_path / "systemctl.log").exists()  # not even systemctl show ran
    (fakebin / "curl").write_text("#!/bin/sh\n")
    (fakebin / "curl").chmod(0o755)
    args["prerequisites"] = ["systemctl", "curl"]
    result = run("plugin_host", tmp_path, **args)
    assert not result.get("failed") and result["changed"] and result["started"] == ["one"], result


# A passphrase with a quote and a backslash: in the str() of a list option they are escaped, so a per-entry no_log
# value no longer matched the logged text and was written to the journal in clear (the reason for `passphrases`).
HARD_PASSPHRASE = "it's \"quoted\" \\ back-Secret-77"


def test_key_passphrases_never_reach_the_journal(tmp_path, tree, journal):
    run("ca", tmp_path, key_path=tree["ca_key"], cert_path=tree["ca_cert"], key_type="ecdsa")
    items = _items(tree)
    passphrases = {"one": HARD_PASSPHRASE, "two": HARD_PASSPHRASE}
    made = run("certificate_set", tmp_path, ca_cert=tree["ca_cert"], ca_key=tree["ca_key"], key_type="ecdsa",
               certificates=items, passphrases=passphrases)
    assert made["changed"] and made["summary"]["reissued"] == 2, made
    for item in items:  # each key really is encrypted with its passphrase
        data = open(item["key_path"], "rb").read()
        assert b"ENCRYPTED" in data
        serialization.load_pem_private_key(data, HARD_PASSPHRASE.encode())
    info = run("certificate_info", tmp_path, ca_cert=tree["ca_cert"], passphrases={"one": HARD_PASSPHRASE},
               certificates=[{"name": "one", "cert_path": items[0]["cert_path"], "key_path": items[0]["key_path"]}])
    assert info["certificates"][0]["key_matches"], info
    logged = journal.read_text(encoding="utf-8")
    assert logged.count("Invoked with") == 3, logged  # the stand-in really got every invocation
    assert "Secret-77" not in logged, logged
    assert "Secret-77" not in json.dumps([made, info])
