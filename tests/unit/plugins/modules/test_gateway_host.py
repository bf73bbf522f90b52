# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module gateway_host end to end as Ansible runs it: what it adds to module_utils/_gatewaystate.py (tested in
tests/unit/plugins/module_utils/test_gatewaystate.py): owners by name, modes as strings, check mode, and the key
and secret contents kept out of its output and of the host's journal."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
KEY = "-----BEGIN PRIVATE KEY-----\nS3CRETGATEWAYKEY\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"
# A passphrase with a quote, a backslash and a line break: escaped in any str() of a list, it would no longer
# match a masked value.
SECRET_ENV = "A=1\nPLUGINS_CLIENT_MTLS_KEYFILE_PASSWORD=\"it's \\\" Secret-99\"\n"


def _args(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    return {"config_dir": str(etc), "user": ME, "group": MY_GROUP,
            "tls": {"key": KEY, "cert": CERT, "ca": CERT},
            "files": [{"path": str(etc / "plugins.yaml"), "content": "plugins: []\n", "group": MY_GROUP,
                       "owner": ME, "mode": "0640", "restart": True},
                      {"path": str(etc / "env"), "group": MY_GROUP, "owner": ME, "mode": "0640", "restart": True}],
            "secrets": {str(etc / "env"): SECRET_ENV}}


def test_converges_with_names_and_string_modes_and_check_mode_writes_nothing(run_module, tmp_path):
    args = _args(tmp_path)
    etc = tmp_path / "etc"
    check = run_module("gateway_host", tmp_path, check=True, diff=True, **args)
    assert check["changed"] and check["restart"] and os.listdir(etc) == [], check
    first = run_module("gateway_host", tmp_path, **args)
    assert first["changed"] and first["reasons"][0] == "TLS files changed", first
    assert stat.S_IMODE(os.stat(etc / "env").st_mode) == 0o640 and (etc / "env").read_text() == SECRET_ENV
    assert stat.S_IMODE(os.stat(etc / "tls" / "client.key").st_mode) == 0o600
    again = run_module("gateway_host", tmp_path, diff=True, **args)
    assert not again["changed"] and not again["restart"] and "diff" not in again, again


def test_the_key_and_the_secrets_never_reach_the_output_or_the_journal(run_module, tmp_path, journal):
    args = _args(tmp_path)
    result = run_module("gateway_host", tmp_path, diff=True, **args)
    assert result["changed"], result
    text = json.dumps(result)
    assert "S3CRETGATEWAYKEY" not in text and "Secret-99" not in text
    assert [d["after_header"] for d in result["diff"]] == [args["files"][0]["path"]]  # never the secret file
    logged = journal.read_text(encoding="utf-8")
    assert "Invoked with" in logged, logged  # the stand-in really got the invocation
    assert "S3CRETGATEWAYKEY" not in logged and "Secret-99" not in logged, logged


def test_bad_input_is_one_clear_error(run_module, tmp_path):
    args = _args(tmp_path)
    args["files"][0]["mode"] = "rwx"
    result = run_module("gateway_host", tmp_path, **args)
    assert result["failed"] and "invalid mode 'rwx'" in result["msg"], result
    args = _args(tmp_path)
    args["files"][0]["owner"] = "no-such-user-4711"
    result = run_module("gateway_host", tmp_path, **args)
    assert result["failed"] and "no-such-user-4711" in result["msg"], result
    assert os.listdir(tmp_path / "etc") == []


def test_directories_and_generated_secrets(run_module, tmp_path):
    """Folders first (created with parents, mode fixed), then a file made once by a command whose output
    (the secret) is neither returned nor shown when it fails."""
    args = _args(tmp_path)
    state = tmp_path / "var" / "lib" / "gw"
    secret = tmp_path / "etc" / "secrets.env"
    maker = tmp_path / "make-secret"
    maker.write_text("#!/bin/sh\necho 'printed-Secret-77'\numask 077\necho 'TOKEN=Secret-77' > \"$1\"\n")
    maker.chmod(0o755)
    args.update(directories=[{"path": str(state), "mode": "0750", "owner": ME, "group": MY_GROUP}],
                generate=[{"path": str(secret), "argv": [str(maker), str(secret)], "restart": True}])
    check = run_module("gateway_host", tmp_path, check=True, **args)
    assert check["changed"] and not state.exists() and not secret.exists(), check
    first = run_module("gateway_host", tmp_path, **args)
    assert first["changed"] and "%s generated" % secret in first["reasons"], first
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o750 and secret.read_text() == "TOKEN=Secret-77\n"
    assert "Secret-77" not in json.dumps(first)
    os.chmod(state, 0o755)
    maker.write_text("#!/bin/sh\necho 'printed-Secret-78'\nexit 3\n")
    again = run_module("gateway_host", tmp_path, **args)
    assert again["changed"] and again["changed_paths"] == [str(state)] and not again["restart"], again
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o750 and secret.read_text() == "TOKEN=Secret-77\n"
    secret.unlink()
    failed = run_module("gateway_host", tmp_path, **args)
    assert failed.get("failed") and "exited 3" in failed["msg"] and "Secret-78" not in json.dumps(failed), failed


def test_a_missing_prerequisite_fails_before_any_change_also_in_check_mode(run_module, tmp_path, monkeypatch):
    """Option prerequisites: a PATH holding only a fake sha256sum; curl is missing (the sbin folders the module
    also searches do not hold it)."""
    args = _args(tmp_path)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "sha256sum").write_text("#!/bin/sh\n")
    (fakebin / "sha256sum").chmod(0o755)
    args["prerequisites"] = ["sha256sum", "curl"]
    args["directories"] = [{"path": str(tmp_path / "state"), "mode": "0750", "owner": ME, "group": MY_GROUP}]
    monkeypatch.setenv("PATH", str(fakebin))
    for check in (True, False):
        result = run_module("gateway_host", tmp_path, check=check, **args)
        assert result.get("failed") and not result.get("changed"), result
        assert result["msg"].startswith(
            "missing on this host: curl (Debian/Ubuntu: apt install curl; RHEL/Fedora: dnf install curl). "), result
    assert os.listdir(tmp_path / "etc") == [] and not (tmp_path / "state").exists()
    args["prerequisites"] = ["sha256sum"]
    result = run_module("gateway_host", tmp_path, **args)
    assert not result.get("failed") and result["changed"], result
