"""Unit tests for the plugin server launcher: mcp_mtls_host.launcher (command line), .launcher_checks (the checks
made before cpex is imported) and .launcher_patches (cpex verification, the TLS context factory); no cpex needed."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import ssl
import types

import pytest

from mcp_mtls_host import launcher, launcher_checks, launcher_patches


@pytest.fixture()
def tls_files(tmp_path):
    paths = {}
    for name in ("server.crt", "server.key", "ca.crt"):
        path = tmp_path / name
        path.write_text("placeholder\n")
        paths[name] = str(path)
    return paths


@pytest.fixture()
def good(tls_files):
    return {
        "plugins": [
            {
                "name": "word-filter",
                "kind": "mcp_lab_plugins.word_filter.WordFilterPlugin",
                "hooks": ["tool_pre_invoke"],
                "mode": "transform",
                "config": {"words": {"bad": "good"}},
            }
        ],
        "server_settings": {
            "host": "0.0.0.0",
            "port": 8000,
            "tls": {
                "certfile": tls_files["server.crt"],
                "keyfile": tls_files["server.key"],
                "ca_bundle": tls_files["ca.crt"],
                "ssl_cert_reqs": 2,
            },
        },
    }


def test_good_config_passes(good):
    assert launcher_checks.check_config(good, "c.yaml") == []


@pytest.mark.parametrize("value,expected", [(2, 2), ("2", 2), (" 1 ", 1), (0, 0)])
def test_normalize_cert_reqs(value, expected):
    assert launcher_checks.normalize_cert_reqs(value) == expected


@pytest.mark.parametrize("value", ["required", 3, -1, True, None, 2.0])
def test_normalize_cert_reqs_rejects(value):
    with pytest.raises(ValueError):
        launcher_checks.normalize_cert_reqs(value)


def test_health_port():
    assert launcher_checks.health_port(8000) == 9000
    assert launcher_checks.health_port("8001") == 9001


def _mutate(config, fn):
    data = copy.deepcopy(config)
    fn(data)
    return data


@pytest.mark.parametrize(
    "mutation,needle",
    [
        (lambda d: d["server_settings"].pop("tls"), "server_settings.tls is missing"),
        (lambda d: d.pop("server_settings"), "'server_settings' (or 'grpc_server_settings') is missing"),
        (lambda d: d["server_settings"]["tls"].pop("keyfile"), "tls.keyfile is not set"),
        (lambda d: d["server_settings"]["tls"].update(certfile=""), "tls.certfile is not set"),
        (lambda d: d["server_settings"]["tls"].update(ca_bundle="ca.crt"), "must be an absolute path"),
        (lambda d: d["server_settings"]["tls"].update(ssl_cert_reqs=0), "ssl_cert_reqs is 0"),
        (lambda d: d["server_settings"]["tls"].update(ssl_cert_reqs="optional"), "ssl_cert_reqs must be"),
        (lambda d: d.update(plugins=[]), "'plugins' must be a non-empty list"),
        (lambda d: d.pop("plugins"), "'plugins' must be a non-empty list"),
        (lambda d: d["plugins"][0].update(kind="external"), "gateway-side entry"),
        (lambda d: d["plugins"][0].update(kind="NoDots"), "dotted Python class path"),
        (lambda d: d["plugins"][0].update(hooks=[]), "'hooks' is empty"),
        (lambda d: d["plugins"][0].pop("name"), "has no 'name'"),
        (lambda d: d["server_settings"].update(port=70000), "server_settings.port"),
        (lambda d: d["server_settings"].update(port="8000"), "server_settings.port"),
        (lambda d: d["server_settings"].update(uds="/run/x.sock"), "uds is set"),
    ],
)
def test_bad_configs_are_refused(good, mutation, needle):
    errors = launcher_checks.check_config(_mutate(good, mutation), "c.yaml")
    assert any(needle in error for error in errors), errors
    assert all(error.startswith("c.yaml:") for error in errors)


def test_missing_and_unreadable_tls_files(good, tls_files):
    os.unlink(tls_files["ca.crt"])
    errors = launcher_checks.check_config(good, "c.yaml")
    assert any("ca_bundle" in e and "does not exist" in e for e in errors)
    assert launcher_checks.check_config(good, "c.yaml", check_files=False) == []


def test_not_a_mapping():
    assert launcher_checks.check_config(["x"], "c.yaml")[0].startswith("c.yaml: the file must be a YAML mapping")
    assert launcher_checks.check_config(None, "c.yaml")


def test_pem_key_is_encrypted():
    assert launcher_checks.pem_key_is_encrypted(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAA\n")
    assert launcher_checks.pem_key_is_encrypted(b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n")
    assert not launcher_checks.pem_key_is_encrypted(b"-----BEGIN PRIVATE KEY-----\nAAA\n")


def test_kinds_importable(good):
    data = _mutate(good, lambda d: d["plugins"].append({"name": "x", "kind": "json.JSONDecoder", "hooks": ["h"]}))
    errors = launcher_checks.check_kinds_importable(data)
    names = " ".join(errors)
    if importlib.util.find_spec("mcp_lab_plugins") is None:
        assert "word-filter" in names
    assert "plugin x" not in names


def test_source_digest_is_stable():
    def sample():
        return 1

    assert launcher_patches.source_digest(sample) == launcher_patches.source_digest(sample)
    assert len(launcher_patches.source_digest(sample)) == 64


def test_verify_cpex_refuses_changed_internals():
    class Fake:
        def _get_ssl_config(self):
            return {}

        async def _start_health_check_server(self, port):
            return None

        async def run_streamable_http_async(self):
            return None

    async def run():
        return None

    runtime = types.SimpleNamespace(SSLCapableMCPServer=Fake, run=run)
    with pytest.raises(launcher_checks.LauncherError) as info:
        launcher_patches.verify_cpex(runtime)
    assert info.value.code == 3
    assert "changed internals" in str(info.value)


def test_verify_cpex_refuses_missing_class():
    with pytest.raises(launcher_checks.LauncherError, match="missing"):
        launcher_patches.verify_cpex(types.SimpleNamespace())


def test_tls_factory_hands_uvicorn_the_launchers_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    assert launcher_patches._tls_factory(context)(None, lambda: pytest.fail("uvicorn's own factory was called")) is context


def test_tls_factory_requires_client_certs():
    with pytest.raises(launcher_checks.LauncherError):
        launcher_patches._tls_factory(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))(None, lambda: None)


def test_no_file_checks_is_for_check_only(tmp_path, good):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(good))
    assert launcher.main(["--config", str(config), "--no-file-checks"]) == 2


def test_check_tls_policy_needs_no_config(monkeypatch, capsys):
    monkeypatch.delenv("PLUGINS_CONFIG_PATH", raising=False)
    monkeypatch.setenv("MCP_PLUGIN_TLS_MIN_VERSION", "TLSv1.3")
    assert launcher.main(["--check-tls-policy"]) == 0
    assert "TLS policy ok: TLSv1.3 or later, TLS 1.2 ciphers ECDHE+AESGCM:ECDHE+CHACHA20" in capsys.readouterr().out
    monkeypatch.setenv("MCP_PLUGIN_TLS_CIPHERS", "AES128-SHA")
    assert launcher.main(["--check-tls-policy"]) == 2


def test_tls_policy_accepts_a_stricter_cipher_list():
    policy = launcher_checks.tls_policy({"MCP_PLUGIN_TLS_CIPHERS": "ECDHE+AESGCM"})
    assert policy["ciphers"] == "ECDHE+AESGCM"


@pytest.mark.parametrize("env, message", [
    ({"MCP_PLUGIN_TLS_MIN_VERSION": "TLSv1.1"}, "MCP_PLUGIN_TLS_MIN_VERSION='TLSv1.1' must be one of TLSv1.2, TLSv1.3"),
    ({"MCP_PLUGIN_TLS_CIPHERS": "NO-SUCH-CIPHER"}, "selects no cipher"),
    ({"MCP_PLUGIN_TLS_CIPHERS": "AES128-GCM-SHA256"}, "without forward secrecy"),
    ({"MCP_PLUGIN_TLS_CIPHERS": "ECDHE+AESGCM:ECDHE-RSA-AES128-SHA"}, "ECDHE-RSA-AES128-SHA"),
    ({"MCP_PLUGIN_TLS_CIPHERS": "aNULL:@SECLEVEL=0"}, "MCP_PLUGIN_TLS_CIPHERS"),
])
def test_tls_policy_refuses(env, message):
    with pytest.raises(launcher_checks.LauncherError, match=re.escape(message)):
        launcher_checks.tls_policy(env)


def test_main_without_config_fails(monkeypatch):
    monkeypatch.delenv("PLUGINS_CONFIG_PATH", raising=False)
    assert launcher.main([]) == 2


def test_main_with_missing_config_fails(tmp_path):
    assert launcher.main(["--config", str(tmp_path / "nope.yaml")]) == 2


# ---------------------------------------------------------------- socket activation (defect 5)

@pytest.fixture()
def listener():
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_activated_fds_only_for_this_process():
    assert launcher_checks.activated_fds({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == [3]
    assert launcher_checks.activated_fds({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42) == [3, 4]
    assert launcher_checks.activated_fds({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42) == []
    assert launcher_checks.activated_fds({}, 42) == []
    with pytest.raises(launcher_checks.LauncherError, match="LISTEN_FDS"):
        launcher_checks.activated_fds({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42)


def test_take_activated_socket_without_activation_clears_env():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "OTHER": "kept"}
    assert launcher_checks.take_activated_socket("0.0.0.0", 8000, env=env, pid=2) is None
    assert env == {"OTHER": "kept"}


def test_take_activated_socket_refuses_two_sockets():
    with pytest.raises(launcher_checks.LauncherError, match="2 sockets"):
        launcher_checks.take_activated_socket("0.0.0.0", 8000, env={"LISTEN_PID": "7", "LISTEN_FDS": "2"}, pid=7)


def test_listening_socket_on_the_configured_port_passes(listener):
    port = listener.getsockname()[1]
    launcher_checks.check_listening_socket(listener, "127.0.0.1", port)
    launcher_checks.check_listening_socket(listener, "mcp-plugin-x.example", port)  # a name: only the port is checked


@pytest.mark.parametrize("host, delta, needle", [
    ("127.0.0.1", 1, "listens on port"),
    ("10.1.2.3", 0, "server_settings.host is 10.1.2.3"),
])
def test_listening_socket_mismatch_is_refused(listener, host, delta, needle):
    port = listener.getsockname()[1]
    with pytest.raises(launcher_checks.LauncherError, match=needle):
        launcher_checks.check_listening_socket(listener, host, port + delta)


def test_socket_not_listening_or_not_tcp_is_refused():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
        idle.bind(("127.0.0.1", 0))
        with pytest.raises(launcher_checks.LauncherError, match="not listening"):
            launcher_checks.check_listening_socket(idle, "127.0.0.1", idle.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(launcher_checks.LauncherError, match="not a TCP stream"):
            launcher_checks.check_listening_socket(udp, "127.0.0.1", udp.getsockname()[1])


@pytest.mark.parametrize("value, expected", [(None, 5.0), ("0", 0.0), ("2.5", 2.5), ("300", 300.0)])
def test_graceful_timeout(value, expected):
    env = {} if value is None else {launcher_checks.GRACEFUL_ENV: value}
    assert launcher_checks.graceful_timeout(env) == expected


@pytest.mark.parametrize("value", ["-1", "301", "soon"])
def test_graceful_timeout_rejects(value):
    with pytest.raises(launcher_checks.LauncherError, match=launcher_checks.GRACEFUL_ENV):
        launcher_checks.graceful_timeout({launcher_checks.GRACEFUL_ENV: value})
