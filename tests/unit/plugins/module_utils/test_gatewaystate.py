# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway side of a host in one pass (module_utils/_gatewaystate.py, module gateway_host)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _gatewaystate as G
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"
CA = "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n"
LOADED = ["plugins.yaml", "env", "tls/client.crt", "tls/client.key", "tls/ca.crt"]


def run_command(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def gateway(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()

    def params(**extra):
        files = [
            {"path": str(etc / "plugins.yaml"), "content": "plugins: []\n", "mode": 0o640, "uid": os.getuid(),
             "gid": os.getgid(), "restart": True, "validate": None},
            {"path": str(etc / "env"), "content": "A=1\n", "mode": 0o640, "uid": os.getuid(), "gid": os.getgid(),
             "restart": True, "validate": None},
            {"path": str(etc / "probe"), "content": "#!/bin/sh\n", "mode": 0o755, "uid": os.getuid(),
             "gid": os.getgid(), "restart": False, "validate": None},
        ]
        out = {"config_dir": str(etc), "uid": os.getuid(), "gid": os.getgid(), "files": files, "secrets": {},
               "tls": {"key": KEY, "cert": CERT, "ca": CA},
               "loaded": {"record": str(tmp_path / "run" / "loaded.sha256"), "files": LOADED}}
        out.update(extra)
        return out
    return params


def _record_loaded(params):
    """What the gateway unit's ExecStartPre does: record the checksums of what it loads."""
    lines = ["%s  %s" % (hashlib.sha256(open(os.path.join(params["config_dir"], f), "rb").read()).hexdigest(), f)
             for f in LOADED]
    os.makedirs(os.path.dirname(params["loaded"]["record"]), exist_ok=True)
    with open(params["loaded"]["record"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_first_run_writes_everything_then_a_second_is_a_no_op(gateway):
    params = gateway()
    etc = params["config_dir"]
    check = G.converge(params, run_command, check_mode=True)
    assert check["changed"] and check["restart"] and os.listdir(etc) == []  # check mode writes nothing
    first = G.converge(params, run_command)
    reasons = ["TLS files changed", etc + "/plugins.yaml changed", etc + "/env changed"]
    assert first["changed"] and first["reasons"] == reasons
    assert os.path.islink(etc + "/tls") and os.readlink(etc + "/tls").startswith("tls.d/")
    assert _mode(etc + "/tls/client.key") == 0o600 and _mode(etc + "/tls/client.crt") == 0o644
    assert _mode(etc + "/plugins.yaml") == 0o640 and _mode(etc + "/probe") == 0o755
    assert open(etc + "/tls/client.key").read() == KEY
    again = G.converge(params, run_command)
    assert not again["changed"] and not again["restart"] and again["reasons"] == []


def test_only_restarting_files_restart_and_a_new_tls_set_keeps_the_previous(gateway):
    params = gateway()
    etc = params["config_dir"]
    G.converge(params, run_command)
    first_set = os.readlink(etc + "/tls")
    params["files"][2]["content"] = "#!/bin/sh\nexit 0\n"
    probe_only = G.converge(params, run_command)
    assert probe_only["changed"] and not probe_only["restart"]
    params["tls"] = dict(params["tls"], cert=CERT.replace("BBBB", "DDDD"))
    result = G.converge(params, run_command)
    assert result["reasons"] == ["TLS files changed"]
    assert os.readlink(etc + "/tls") != first_set
    assert sorted(os.listdir(etc + "/tls.d")) == sorted([first_set[len("tls.d/"):],
                                                         os.readlink(etc + "/tls")[len("tls.d/"):]])


def test_a_gateway_running_with_other_files_restarts_and_none_running_does_not(gateway):
    params = gateway()
    G.converge(params, run_command)
    assert not G.converge(params, run_command)["restart"]  # no record: not running, starting is not our part
    _record_loaded(params)
    assert not G.converge(params, run_command)["restart"]
    with open(params["loaded"]["record"], "a", encoding="utf-8") as handle:
        handle.write("0" * 64 + "  env\n")  # a later line wins, like sha256sum's own parsing would see
    result = G.converge(params, run_command)
    assert result["restart"] and result["reasons"] == ["runs with another env than deployed"]
    assert not result["changed"]


def test_a_gateway_we_do_not_run_needs_a_record_of_what_it_loaded(gateway):
    """loaded.required (a gateway this collection does not start): no record is a reason to restart it, and so is a
    record of other files; a matching record is not."""
    params = gateway()
    params["loaded"]["required"] = True
    G.converge(params, run_command)
    result = G.converge(params, run_command)
    assert result["restart"] and result["reasons"] == ["no record of what the gateway loaded (%s)" % params["loaded"]["record"]]
    _record_loaded(params)
    assert not G.converge(params, run_command)["restart"]
    params["tls"] = dict(params["tls"], cert=CERT.replace("BBBB", "EEEE"))
    assert G.converge(params, run_command)["reasons"] == ["TLS files changed"]
    assert G.converge(params, run_command)["reasons"] == ["runs with another tls/client.crt than deployed"]


def test_a_file_whose_check_fails_is_not_replaced(gateway, tmp_path):
    checker = tmp_path / "check.py"
    # Like cpex's loader, the check needs the TLS files the config names: the set is deployed before the files.
    checker.write_text("import os, sys\ntext = open(sys.argv[1]).read()\n"
                       "assert os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), 'tls', 'client.crt'))\n"
                       "sys.exit(0 if 'plugins:' in text else 3)\n")
    params = gateway()
    params["files"][0]["validate"] = "%s %s %%s" % (sys.executable, checker)
    G.converge(params, run_command)
    target = params["files"][0]["path"]
    params["files"][0]["content"] = "broken: true\n"
    with pytest.raises(PKIError, match=r"plugins.yaml was not replaced: its check \(.*\) failed with rc 3"):
        G.converge(params, run_command)
    assert open(target).read() == "plugins: []\n"
    assert [f for f in os.listdir(params["config_dir"]) if f.endswith(".check")] == []  # the copy is gone
    params["files"][0]["content"] = "plugins: [a]\n"
    assert G.converge(params, run_command)["reasons"] == [target + " changed"]


def test_a_check_whose_program_is_not_installed_yet_warns(gateway):
    params = gateway()
    params["files"][0]["validate"] = "/nonexistent/python check %s"
    result = G.converge(params, run_command)
    assert result["warnings"] == [params["files"][0]["path"] + " was not checked: /nonexistent/python is not "
                                  "installed yet"]
    assert os.path.exists(params["files"][0]["path"])


def test_secret_contents_come_from_secrets_and_are_never_in_a_diff(gateway):
    params = gateway()
    env = params["files"][1]
    secret = "A=1\nPLUGINS_CLIENT_MTLS_KEYFILE_PASSWORD=s3cret\n"
    params["files"][1] = dict(env, content=None)
    params["secrets"] = {env["path"]: secret}
    result = G.converge(params, run_command, diff=True)
    assert open(env["path"]).read() == secret
    assert [d["after_header"] for d in result["diff"]] == [params["files"][0]["path"], params["files"][2]["path"]]
    assert "s3cret" not in repr(result)


@pytest.mark.parametrize("change, needle", [
    (lambda p: p["files"].append(dict(p["files"][0])), "plugins.yaml is given twice"),
    (lambda p: p["files"][0].update(path="etc/x"), "'etc/x' is not a normalized absolute path"),
    (lambda p: p["secrets"].update({p["files"][0]["path"]: "x"}), "give the content of .*plugins.yaml once"),
    (lambda p: p["files"][1].update(content=None), "give the content of .*env once"),
    (lambda p: p["secrets"].update({"/etc/other": "x"}), "secrets: /etc/other is not a path of files"),
    (lambda p: p["tls"].update(key=CERT), "tls.key is not a PEM private key"),
    (lambda p: p["tls"].update(ca=KEY + CA), "tls.ca is not a PEM certificate without a key"),
    (lambda p: p["loaded"].update(files=["../etc/shadow"]), "must be a path inside config_dir"),
    (lambda p: p["files"][0].update(path="/nonexistent-dir/plugins.yaml"), "the folder of /nonexistent-dir/"),
])
def test_bad_input_is_refused_before_anything_is_written(gateway, change, needle):
    params = gateway()
    change(params)
    with pytest.raises(PKIError, match=needle):
        G.converge(params, run_command)
    assert os.listdir(params["config_dir"]) == []


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_missing_prerequisite_fails_before_anything_is_written(gateway, only_programs, tmp_path, check_mode):
    """Option prerequisites: checked first, also in check mode (before folders, generated secrets, the TLS set
    and the files); one error naming every missing program and its packages."""
    only_programs("sha256sum")
    params = gateway(prerequisites=["runuser", "sha256sum", "openssl"],
                     directories=[{"path": str(tmp_path / "state"), "mode": 0o750, "uid": os.getuid(),
                                   "gid": os.getgid()}])
    with pytest.raises(PKIError) as error:
        G.converge(params, run_command, check_mode)
    assert str(error.value).startswith(
        "missing on this host: runuser (Debian/Ubuntu: apt install util-linux; RHEL/Fedora: dnf install util-linux), "
        "openssl (Debian/Ubuntu: apt install openssl; RHEL/Fedora: dnf install openssl). ")
    assert os.listdir(params["config_dir"]) == [] and not (tmp_path / "state").exists()


def test_present_prerequisites_let_the_converge_run(gateway, only_programs):
    only_programs("runuser", "sha256sum", "openssl")
    params = gateway(prerequisites=["runuser", "sha256sum", "openssl"])
    assert G.converge(params, run_command)["changed"]
    assert not G.converge(params, run_command)["changed"]
