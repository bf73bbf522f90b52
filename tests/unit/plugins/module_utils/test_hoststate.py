# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A plugin host's per-instance state in one pass (module_utils/_hoststate.py, module plugin_host)."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _hoststate as H
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"
CA = "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n"


def _instance(name, port=8443, cert=CERT, config=None):
    return {"name": name, "config": config or "plugins: [%s]\n" % name, "env": "PORT=%d\n" % port,
            "socket": "[Socket]\nListenStream=0.0.0.0:%d\n" % port, "cert": cert, "ca": CA}


@pytest.fixture
def host(tmp_path):
    def params(instances=None, **extra):
        instances = instances if instances is not None else [_instance("one"), _instance("two", 8444)]
        out = {"instances": instances, "keys": {i["name"]: KEY for i in instances}, "passphrases": {},
               "units": {"mcp-plugin@.service": "[Service]\n", "mcp-plugin@.socket": "[Socket]\n"},
               "restart_all": "", "config_dir": str(tmp_path / "etc"), "unit_dir": str(tmp_path / "units"),
               "state_dir": str(tmp_path / "run"), "uid": os.getuid(), "gid": os.getgid()}
        out.update(extra)
        return out
    os.makedirs(tmp_path / "units")
    return params


def _record_loaded(params, name):
    """What mcp-plugin@.service's ExecStartPre does: record the checksums of what the instance loads."""
    folder = os.path.join(params["config_dir"], name)
    lines = ["%s  %s" % (hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest(), f)
             for f in H.LOADED_FILES if os.path.exists(os.path.join(folder, f))]
    os.makedirs(os.path.join(params["state_dir"], name), exist_ok=True)
    with open(os.path.join(params["state_dir"], name, "loaded.sha256"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_first_run_writes_everything_with_modes_and_restarts_nothing_running(host):
    params = host()
    result = H.converge(params)
    etc = params["config_dir"]
    assert result["changed"] and result["daemon_reload"]
    assert _mode(etc) == _mode(etc + "/one") == 0o750
    assert _mode(etc + "/one/config.yaml") == _mode(etc + "/one/env") == 0o640
    assert os.readlink(etc + "/one/tls").startswith("tls.d/")
    assert _mode(etc + "/one/tls/server.key") == 0o600 and _mode(etc + "/one/tls/server.crt") == 0o644
    assert open(etc + "/one/tls/server.key").read() == KEY
    assert open(params["unit_dir"] + "/mcp-plugin@two.socket.d/listen.conf").read().endswith(":8444\n")
    assert not os.path.exists(etc + "/one/secret.env")
    # Nothing runs yet: every instance is listed, with the reasons of a first deploy.
    assert result["restart"] == ["one", "two"] and "TLS files changed" in result["reasons"]["one"]
    assert result["socket_restart"] == ["one", "two"]
    assert all(KEY not in str(value) for value in result.values())


def test_second_run_is_a_no_op_once_the_instances_run_with_the_files(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    again = H.converge(params)
    assert again == {"changed": False, "changed_paths": [], "restart": [], "reload": [], "reasons": {},
                     "socket_restart": [], "daemon_reload": False, "absent": []}


def test_a_new_certificate_switches_the_link_keeps_the_previous_set_and_reloads_only_its_instance(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    first = os.readlink(params["config_dir"] + "/one/tls")
    params["instances"][0]["cert"] = CERT.replace("BBBB", "DDDD")
    result = H.converge(params)
    assert result["reload"] == ["one"] and result["restart"] == [] and result["reasons"] == {"one": ["TLS files changed"]}
    assert not result["daemon_reload"] and result["socket_restart"] == []
    second = os.readlink(params["config_dir"] + "/one/tls")
    versions = sorted(os.listdir(params["config_dir"] + "/one/tls.d"))
    assert second != first and versions == sorted([os.path.basename(first), os.path.basename(second)])
    # A third set: the oldest is pruned, the previous one kept for a rollback.
    params["instances"][0]["cert"] = CERT.replace("BBBB", "EEEE")
    H.converge(params)
    third = os.readlink(params["config_dir"] + "/one/tls")
    assert sorted(os.listdir(params["config_dir"] + "/one/tls.d")) == sorted(
        [os.path.basename(second), os.path.basename(third)])


def test_an_instance_running_with_other_files_restarts_without_any_file_change(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    state = os.path.join(params["state_dir"], "two", "loaded.sha256")
    with open(state, "w", encoding="utf-8") as handle:
        handle.write("0" * 64 + "  config.yaml\n")
    result = H.converge(params)
    assert not result["changed"] and result["restart"] == ["two"]
    assert result["reasons"]["two"] == ["runs with another config.yaml than deployed"]


def test_shared_changes_restart_every_instance_and_sockets_follow_their_port(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    params["units"]["mcp-plugin@.service"] = "[Service]\nUser=x\n"
    params["instances"][1] = _instance("two", 9444)
    result = H.converge(dict(params, restart_all="the virtual environment changed"))
    assert result["daemon_reload"] and result["restart"] == ["one", "two"]
    assert result["reasons"]["one"] == ["unit mcp-plugin@.service changed", "the virtual environment changed"]
    assert result["socket_restart"] == ["two"] and "env changed" in result["reasons"]["two"]


def test_passphrases_go_to_secret_env_escaped_and_go_away_with_the_encryption(host):
    params = host(passphrases={"one": 'S3cr"et\\word', "two": ""})
    result = H.converge(params)
    secret = params["config_dir"] + "/one/secret.env"
    assert _mode(secret) == 0o640
    assert 'PLUGINS_SERVER_SSL_KEYFILE_PASSWORD="S3cr\\"et\\\\word"\n' in open(secret).read()
    assert not os.path.exists(params["config_dir"] + "/two/secret.env")
    assert "S3cr" not in repr(result)
    for name in ("one", "two"):
        _record_loaded(params, name)
    removed = H.converge(dict(params, passphrases={}))
    assert not os.path.exists(secret) and removed["reasons"] == {"one": ["key passphrase removed"]}


def test_check_mode_decides_and_writes_nothing(host, tmp_path):
    params = host()
    result = H.converge(params, check_mode=True)
    assert result["changed"] and result["restart"] == ["one", "two"]
    assert not os.path.exists(params["config_dir"]) and os.listdir(params["unit_dir"]) == []


def test_permissions_and_owners_are_repaired_and_reported(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    os.chmod(params["config_dir"] + "/one/tls/server.key", 0o644)
    os.chmod(params["config_dir"] + "/two/env", 0o666)
    result = H.converge(params)
    assert _mode(params["config_dir"] + "/one/tls/server.key") == 0o600
    assert _mode(params["config_dir"] + "/two/env") == 0o640
    assert result["restart"] == ["two"] and result["reload"] == ["one"]


def _rewrite_record(params, name, **sums):
    """Change lines of an instance's loaded.sha256 (file name -> checksum)."""
    path = os.path.join(params["state_dir"], name, "loaded.sha256")
    lines = [line.split("  ", 1) for line in open(path, encoding="utf-8").read().splitlines()]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join("%s  %s\n" % (sums.get(file, digest), file) for digest, file in lines))


def test_reload_false_restarts_for_a_new_tls_set(host):
    params = host(reload=False)
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    params["instances"][1]["cert"] = CERT.replace("BBBB", "DDDD")
    result = H.converge(params)
    assert result["restart"] == ["two"] and result["reload"] == [] and result["reasons"] == {"two": ["TLS files changed"]}


def test_a_new_tls_set_for_an_instance_that_does_not_run_is_a_restart(host):
    params = host()
    H.converge(params)
    _record_loaded(params, "one")  # two has no record: it does not run
    params["instances"][1]["cert"] = params["instances"][0]["cert"] = CERT.replace("BBBB", "DDDD")
    result = H.converge(params)
    assert result["reload"] == ["one"] and result["restart"] == ["two"]
    assert result["reasons"]["two"] == ["not running (no record of what it loaded)", "TLS files changed"]


def test_a_new_tls_set_with_a_new_config_is_one_restart(host):
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    params["instances"][0]["cert"] = CERT.replace("BBBB", "DDDD")
    params["instances"][0]["config"] = "plugins: [changed]\n"
    result = H.converge(params)
    assert result["restart"] == ["one"] and result["reload"] == []
    assert result["reasons"]["one"] == ["config.yaml changed", "TLS files changed"]


def test_running_with_another_tls_set_is_a_reload_and_with_another_env_a_restart(host):
    """An interrupted run: the files were deployed, the reload or restart did not happen."""
    params = host()
    H.converge(params)
    for name in ("one", "two"):
        _record_loaded(params, name)
    _rewrite_record(params, "one", **{"tls/server.crt": "1" * 64, "tls/server.key": "2" * 64})
    _rewrite_record(params, "two", **{"tls/ca.crt": "3" * 64, "env": "4" * 64})
    result = H.converge(params)
    assert not result["changed"] and result["reload"] == ["one"] and result["restart"] == ["two"]
    assert result["reasons"] == {"one": ["runs with another tls/server.crt than deployed"],
                                 "two": ["runs with another env than deployed"]}


def test_a_plain_tls_folder_of_version_0_1_becomes_the_previous_set(host):
    params = host([_instance("one")])
    legacy = os.path.join(params["config_dir"], "one", "tls")
    os.makedirs(legacy)
    with open(os.path.join(legacy, "server.crt"), "w", encoding="utf-8") as handle:
        handle.write(CERT)
    H.converge(params)
    assert os.path.islink(legacy)
    assert open(os.path.join(params["config_dir"], "one", "tls.d", "legacy", "server.crt")).read() == CERT


def test_folders_of_unplanned_instances_are_reported_not_removed(host):
    params = host()
    H.converge(params)
    result = H.converge(host([_instance("one")]))
    assert result["absent"] == ["two"] and os.path.isdir(params["config_dir"] + "/two")


@pytest.mark.parametrize("change, needle", [
    (lambda p: p["instances"].append(dict(p["instances"][0])), "given twice"),
    (lambda p: p["instances"][0].update(name="../x"), "path separator"),
    (lambda p: p["instances"][0].update(config=""), "config is empty"),
    (lambda p: p["keys"].pop("one"), "no PEM private key"),
    (lambda p: p["instances"][0].update(cert=KEY), "only keys may hold a key"),
    (lambda p: p["keys"].update(ghost=KEY), "not planned: ghost"),
    (lambda p: p["units"].update({"../evil.service": "x"}), "not a systemd unit file name"),
    (lambda p: p["passphrases"].update(one="two\nlines"), "line break"),
])
def test_bad_input_fails_before_anything_is_written(host, change, needle):
    params = host()
    change(params)
    with pytest.raises(PKIError, match=needle):
        H.converge(params)
    assert not os.path.exists(params["config_dir"])


def test_something_else_in_the_way_is_refused_not_replaced(host):
    params = host([_instance("one")])
    os.makedirs(params["config_dir"] + "/one")
    with open(params["config_dir"] + "/one/tls", "w", encoding="utf-8") as handle:
        handle.write("mine")
    with pytest.raises(PKIError, match="should be a link to a TLS set"):
        H.converge(params)
    assert open(params["config_dir"] + "/one/tls").read() == "mine"


def test_programs_are_root_0755_and_only_a_restarting_one_restarts_every_instance(host, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher, check = str(bin_dir / "launcher.py"), str(bin_dir / "healthcheck")
    programs = {launcher: "#!/usr/bin/python3\nprint(1)\n", check: "#!/bin/sh\nexit 0\n"}
    params = host(programs=programs, restart_programs=[launcher])
    first = H.converge(params)
    assert launcher in first["changed_paths"] and check in first["changed_paths"]
    assert _mode(launcher) == _mode(check) == 0o755 and os.stat(launcher).st_uid == 0
    assert open(launcher).read() == programs[launcher]
    for name in ("one", "two"):
        _record_loaded(params, name)
    assert not H.converge(params)["changed"]  # a no-op
    programs[check] = "#!/bin/sh\nexit 1\n"
    result = H.converge(params)
    assert result["changed_paths"] == [check] and result["restart"] == []  # the health check restarts nothing
    programs[launcher] = "#!/usr/bin/python3\nprint(2)\n"
    check_mode = H.converge(params, check_mode=True)
    assert check_mode["restart"] == ["one", "two"] and open(launcher).read().endswith("print(1)\n")
    result = H.converge(params)
    assert result["reasons"] == {"one": [launcher + " changed"], "two": [launcher + " changed"]}


@pytest.mark.parametrize("programs, restart, needle", [
    ({"bin/x": "x"}, [], "'bin/x' is not a normalized absolute path"),
    ({"/opt/../x": "x"}, [], "is not a normalized absolute path"),
    ({"/tmp/x": ""}, [], "the content of /tmp/x is empty"),
    ({"/tmp/x": "x"}, ["/tmp/y"], "restart_programs: /tmp/y is not a path of programs"),
])
def test_bad_programs_are_refused_before_anything_is_written(host, programs, restart, needle):
    params = host(programs=programs, restart_programs=restart)
    with pytest.raises(PKIError, match=needle.replace("(", r"\(")):
        H.converge(params)
    assert not os.path.exists(params["config_dir"])


def test_a_missing_program_folder_is_created_and_an_existing_one_left_alone(host, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o775)
    existing.chmod(0o775)
    params = host(programs={str(tmp_path / "new/bin/check"): "#!/bin/sh\n", str(existing / "other"): "#!/bin/sh\n"})
    check_mode = H.converge(params, check_mode=True)
    assert str(tmp_path / "new/bin") in check_mode["changed_paths"] and not (tmp_path / "new").exists()
    H.converge(params)
    assert os.stat(tmp_path / "new/bin").st_mode & 0o7777 == 0o755
    assert os.stat(existing).st_mode & 0o7777 == 0o775


def test_a_tls_set_is_named_by_its_contents():
    sums = {"server.key": "1" * 64, "server.crt": "2" * 64, "ca.crt": "3" * 64}
    ident = H.set_id(sums)
    assert len(ident) == 16 and int(ident, 16) >= 0
    assert H.set_id(dict(reversed(list(sums.items())))) == ident  # not the order given
    assert H.set_id(dict(sums, **{"ca.crt": "4" * 64})) != ident
    assert H.set_id(dict(sums, **{"client.crt": sums.pop("server.crt")})) != ident  # names count too


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_missing_prerequisite_fails_before_anything_is_written(host, only_programs, check_mode):
    """Option prerequisites: checked first, also in check mode; one error naming every missing program and its
    packages, and the host is left as it was."""
    only_programs("sha256sum", "systemctl")
    params = host(prerequisites=["curl", "ss", "sha256sum", "systemctl"])
    with pytest.raises(PKIError) as error:
        H.converge(params, check_mode=check_mode)
    text = str(error.value)
    assert text.startswith("missing on this host: curl (Debian/Ubuntu: apt install curl; RHEL/Fedora: dnf install "
                           "curl), ss (Debian/Ubuntu: apt install iproute2; RHEL/Fedora: dnf install iproute). ")
    named = text.split(". All", maxsplit=1)[0]
    assert "sha256sum" not in named and "systemctl" not in named
    assert not os.path.exists(params["config_dir"]) and os.listdir(params["unit_dir"]) == []


def test_present_prerequisites_let_the_converge_run(host, only_programs):
    only_programs("curl", "ss", "sha256sum", "systemctl")
    params = host(prerequisites=["curl", "ss", "sha256sum", "systemctl"])
    assert H.converge(params)["changed"]
    assert not H.converge(params)["changed"]


CRL = "-----BEGIN X509 CRL-----\nDDDD\n-----END X509 CRL-----\n"


def test_a_crl_joins_the_tls_set_and_a_new_one_is_a_reload(host):
    params = host([_instance("one")])
    params["instances"][0]["crl"] = CRL
    H.converge(params)
    folder = params["config_dir"] + "/one"
    assert open(folder + "/tls/ca.crl").read() == CRL and _mode(folder + "/tls/ca.crl") == 0o644
    _record_loaded(params, "one")
    assert H.converge(params)["restart"] == [] and H.converge(params)["reload"] == []
    params["instances"][0]["crl"] = CRL.replace("DDDD", "EEEE")
    result = H.converge(params)
    assert result["reload"] == ["one"] and result["restart"] == []
    _record_loaded(params, "one")
    # The CRL goes away (a tree without one): a new set without ca.crl, a reload; a running instance that never
    # recorded a CRL and has none runs with what is deployed.
    params["instances"][0]["crl"] = ""
    assert H.converge(params)["reload"] == ["one"] and not os.path.exists(folder + "/tls/ca.crl")
    _record_loaded(params, "one")
    assert H.converge(params)["reload"] == []


def test_a_crl_that_is_no_crl_is_refused(host):
    params = host([_instance("one")])
    params["instances"][0]["crl"] = CERT
    with pytest.raises(PKIError, match="crl is not a PEM CRL"):
        H.converge(params)
