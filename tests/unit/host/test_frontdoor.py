"""Unit tests for mcp_mtls_host.frontdoor (console script mcp-mtls-gateway: the gateway's API over TLS, client
certificates required or optional) and the parts of launcher_checks and launcher_tls it uses. Real OpenSSL
handshakes in memory with certificates made here; no uvicorn, no gateway, no network."""

from __future__ import annotations

import re
import ssl
import types

import pytest
from host_certs import der, key_pem, make_ca, make_leaf, pem
from test_launcher_tls import handshake

from mcp_mtls_host import frontdoor, launcher_checks, launcher_tls

LauncherError = launcher_checks.LauncherError


@pytest.fixture()
def tls_files(tmp_path):
    """A CA, the front door's server certificate and key, and an MCP client's certificate, in tmp_path."""
    ca = make_ca("Front door CA")
    server = make_leaf(ca, "gw1", True)
    (tmp_path / "server.key").write_bytes(key_pem(server[0]))
    (tmp_path / "server.crt").write_bytes(pem(server[1]))
    (tmp_path / "ca.crt").write_bytes(pem(ca[1]))
    return {"ca": ca, "server": server, "client": make_leaf(ca, "alice", False),
            "files": {"certfile": str(tmp_path / "server.crt"), "keyfile": str(tmp_path / "server.key"),
                      "ca_bundle": str(tmp_path / "ca.crt")}}


@pytest.fixture()
def env(tls_files):
    files = tls_files["files"]
    return {"MCP_MTLS_HTTPS_CERTFILE": files["certfile"], "MCP_MTLS_HTTPS_KEYFILE": files["keyfile"],
            "MCP_MTLS_HTTPS_CA_BUNDLE": files["ca_bundle"]}


# --- settings -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("environ", [
    {},
    {"MCP_MTLS_HTTPS_CERTFILE": ""},
    {"MCP_MTLS_HTTPS_KEYFILE": "/k", "MCP_MTLS_HTTPS_CA_BUNDLE": "/c"},
])
def test_no_certfile_means_plain_http(environ):
    assert frontdoor.settings(environ) is None


def test_complete_settings(env, tls_files):
    wanted = frontdoor.settings(env)
    assert wanted["tls"] == tls_files["files"]
    assert wanted["password"] is None
    assert wanted["policy"] == dict(launcher_checks.tls_policy({}), client_auth="require")


def test_optional_client_auth_password_and_policy(env):
    env.update(MCP_MTLS_HTTPS_CLIENT_AUTH="optional", MCP_MTLS_HTTPS_KEYFILE_PASSWORD="s3cret",
               MCP_MTLS_HTTPS_MIN_VERSION="TLSv1.3", MCP_MTLS_HTTPS_CIPHERS="ECDHE+AESGCM")
    wanted = frontdoor.settings(env)
    assert wanted["password"] == "s3cret"
    assert wanted["policy"] == {"version": "TLSv1.3", "minimum_version": ssl.TLSVersion.TLSv1_3,
                                "ciphers": "ECDHE+AESGCM", "client_auth": "optional"}


def test_an_empty_client_auth_is_require(env):
    env["MCP_MTLS_HTTPS_CLIENT_AUTH"] = ""
    assert frontdoor.settings(env)["policy"]["client_auth"] == "require"


def test_the_plugin_launchers_policy_variables_do_not_apply(env):
    env.update({launcher_checks.MIN_VERSION_ENV: "bogus", launcher_checks.CIPHERS_ENV: "NO-SUCH-CIPHER"})
    assert frontdoor.settings(env)["policy"]["version"] == "TLSv1.2"


@pytest.mark.parametrize("drop, message", [
    (["MCP_MTLS_HTTPS_KEYFILE"], "MCP_MTLS_HTTPS_CERTFILE is set but MCP_MTLS_HTTPS_KEYFILE not: the TLS set is incomplete"),
    (["MCP_MTLS_HTTPS_CA_BUNDLE"], "but MCP_MTLS_HTTPS_CA_BUNDLE not: the TLS set is incomplete"),
    (["MCP_MTLS_HTTPS_KEYFILE", "MCP_MTLS_HTTPS_CA_BUNDLE"],
     "but MCP_MTLS_HTTPS_KEYFILE and MCP_MTLS_HTTPS_CA_BUNDLE not"),
])
def test_an_incomplete_set_is_refused(env, drop, message):
    for name in drop:
        env[name] = ""
    with pytest.raises(LauncherError, match=re.escape(message)):
        frontdoor.settings(env)


@pytest.mark.parametrize("value", ["sometimes", "none", "required"])
def test_client_auth_is_require_or_optional(env, value):
    env["MCP_MTLS_HTTPS_CLIENT_AUTH"] = value
    with pytest.raises(LauncherError, match=re.escape(
            f"MCP_MTLS_HTTPS_CLIENT_AUTH={value!r} must be one of require, optional")):
        frontdoor.settings(env)


@pytest.mark.parametrize("name", ["CERTFILE", "KEYFILE", "CA_BUNDLE"])
def test_a_relative_path_is_refused(env, name):
    env["MCP_MTLS_HTTPS_" + name] = "tls/file.pem"
    with pytest.raises(LauncherError, match=re.escape(f"MCP_MTLS_HTTPS_{name}='tls/file.pem' must be an absolute path")):
        frontdoor.settings(env)


@pytest.mark.parametrize("name", ["CERTFILE", "KEYFILE", "CA_BUNDLE"])
def test_a_missing_file_is_refused(env, tmp_path, name):
    missing = str(tmp_path / "nowhere" / "file.pem")
    env["MCP_MTLS_HTTPS_" + name] = missing
    with pytest.raises(LauncherError, match=re.escape(f"MCP_MTLS_HTTPS_{name}: {missing} is missing or not readable")):
        frontdoor.settings(env)


@pytest.mark.parametrize("variable, value, message", [
    ("MCP_MTLS_HTTPS_MIN_VERSION", "TLSv1.1", "MCP_MTLS_HTTPS_MIN_VERSION='TLSv1.1' must be one of TLSv1.2, TLSv1.3"),
    ("MCP_MTLS_HTTPS_CIPHERS", "NO-SUCH-CIPHER", "MCP_MTLS_HTTPS_CIPHERS='NO-SUCH-CIPHER' selects no cipher"),
    ("MCP_MTLS_HTTPS_CIPHERS", "AES128-GCM-SHA256",
     "MCP_MTLS_HTTPS_CIPHERS='AES128-GCM-SHA256' selects suites without forward secrecy"),
])
def test_policy_errors_name_the_front_doors_variable(env, variable, value, message):
    env[variable] = value
    with pytest.raises(LauncherError, match=re.escape(message)) as err:
        frontdoor.settings(env)
    assert "MCP_PLUGIN_TLS_" not in str(err.value)


# --- check_arguments ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, refused", [
    (["--ssl-keyfile", "/etc/k.pem"], "--ssl-keyfile"),
    (["--port", "4444", "--ssl-certfile=/etc/c.pem"], "--ssl-certfile"),
    (["--uds", "/run/gw.sock"], "--uds"),
    (["--uds=/run/gw.sock"], "--uds"),
    (["--fd", "3"], "--fd"),
    (["--uds", "/s", "--ssl-keyfile", "/k", "--ssl-certfile=/c", "--ssl-keyfile=/k2"],
     "--ssl-certfile, --ssl-keyfile, --uds"),
])
def test_uvicorns_own_tls_and_other_sockets_are_refused(argv, refused):
    with pytest.raises(LauncherError, match="^" + re.escape(refused + ": the front door's TLS comes from "
                                                            "MCP_MTLS_HTTPS_*")) as err:
        frontdoor.check_arguments(argv)
    assert "/c" not in str(err.value)  # the option's name, not its value


@pytest.mark.parametrize("argv", [
    [],
    ["--host", "0.0.0.0", "--port", "4444"],
    ["--host=127.0.0.1", "--port=4444", "--log-level", "info"],
])
def test_host_and_port_are_accepted(argv):
    assert frontdoor.check_arguments(argv) is None


@pytest.mark.parametrize("argv", [["--workers", "2"], ["--workers=4"], ["--reload"]])
def test_worker_processes_are_refused(argv):
    """BUG (reported, not fixed here): with --workers N > 1 or --reload (and likewise WEB_CONCURRENCY > 1 in the
    environment), uvicorn runs the app in spawned processes, which import uvicorn.config afresh: install()'s patched
    Config.load is not there, ssl_context_factory and ssl_certfile are unset, and the port serves plain HTTP
    (checked with uvicorn 0.54: `curl http://` got the app's answer). The front door promises never to fall back to
    plain HTTP, so check_arguments must refuse these options."""
    with pytest.raises(LauncherError):
        frontdoor.check_arguments(argv)


# --- install --------------------------------------------------------------------------------------------------------

def _fake_uvicorn_config():
    """A stand-in for module uvicorn.config: Config.load records what it sees."""

    class Config:
        def __init__(self, ssl_certfile=None):
            self.ssl_certfile = ssl_certfile
            self.ssl_context_factory = None
            self.seen = None

        def load(self):
            self.seen = (self.ssl_context_factory, self.ssl_certfile)
            return "loaded"

    return types.SimpleNamespace(Config=Config)


def test_install_hands_every_config_the_context():
    module = _fake_uvicorn_config()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    frontdoor.install(module, context, "/etc/mcpgateway/tls/server.crt")
    for _instance in range(2):
        config = module.Config()
        assert config.load() == "loaded"  # the original load ran, with the factory already set
        factory, certfile = config.seen
        assert factory is config.ssl_context_factory
        assert factory(config, lambda: pytest.fail("the default factory must not be called")) is context
        assert certfile == config.ssl_certfile == "/etc/mcpgateway/tls/server.crt"


def test_install_keeps_a_configs_own_certfile():
    module = _fake_uvicorn_config()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    frontdoor.install(module, context, "/etc/mcpgateway/tls/server.crt")
    config = module.Config(ssl_certfile="/own/server.crt")
    config.load()
    assert config.seen[1] == config.ssl_certfile == "/own/server.crt"
    assert config.ssl_context_factory(config, None) is context


# --- the context: client certificates required or optional ------------------------------------------------------------

@pytest.mark.parametrize("policy, mode", [
    ({}, ssl.CERT_REQUIRED),
    ({"client_auth": "require"}, ssl.CERT_REQUIRED),
    ({"client_auth": "optional"}, ssl.CERT_OPTIONAL),
    ({"client_auth": "Optional"}, ssl.CERT_REQUIRED),  # anything else fails closed
    ({"client_auth": "none"}, ssl.CERT_REQUIRED),
])
def test_client_verify_mode(policy, mode):
    assert launcher_tls.client_verify_mode(policy) == mode


def _policy(client_auth):
    return dict(launcher_checks.tls_policy({}), client_auth=client_auth)


def test_require_needs_a_client_certificate(tls_files):
    context, info = launcher_tls.build_context(tls_files["files"], None, _policy("require"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert info["crl_next_update"] is None
    trust = [tls_files["ca"][1]]
    assert handshake(context, tls_files["client"], trust)[0] == der(tls_files["server"][1])
    with pytest.raises(ssl.SSLError):
        handshake(context, None, trust)


def test_optional_serves_a_client_without_a_certificate_and_checks_one_that_is_sent(tls_files):
    context, _info = launcher_tls.build_context(tls_files["files"], None, _policy("optional"))
    assert context.verify_mode == ssl.CERT_OPTIONAL
    trust = [tls_files["ca"][1]]
    served, server = handshake(context, None, trust)
    assert served == der(tls_files["server"][1]) and server.getpeercert() is None
    served, server = handshake(context, tls_files["client"], trust)
    assert server.getpeercert(binary_form=True) == der(tls_files["client"][1])
    stranger = make_leaf(make_ca("Another CA"), "mallory", False)
    with pytest.raises(ssl.SSLError, match="certificate verify failed|unknown ca"):
        handshake(context, stranger, trust)


@pytest.mark.parametrize("client_auth, mode", [("optional", ssl.CERT_OPTIONAL), ("require", ssl.CERT_REQUIRED)])
def test_settings_to_the_served_context(env, client_auth, mode):
    """What main() does: settings -> TLSMaterial -> the context handed to uvicorn (no runtime folder)."""
    env["MCP_MTLS_HTTPS_CLIENT_AUTH"] = client_auth
    wanted = frontdoor.settings(env)
    tls = wanted["tls"]
    material = launcher_tls.TLSMaterial(tls, wanted["password"], wanted["policy"], tls["certfile"].rsplit("/", 1)[0],
                                        None)
    proxy = material.start()
    assert proxy.verify_mode == mode and material.current.verify_mode == mode
    assert proxy.minimum_version == ssl.TLSVersion.TLSv1_2


# --- tls_policy with the variables of its caller --------------------------------------------------------------------

@pytest.mark.parametrize("environ, message", [
    ({"X_MIN": "TLSv1.1"}, "X_MIN='TLSv1.1' must be one of TLSv1.2, TLSv1.3"),
    ({"X_CIPHERS": "NO-SUCH-CIPHER"}, "X_CIPHERS='NO-SUCH-CIPHER' selects no cipher"),
    ({"X_CIPHERS": "AES128-GCM-SHA256"}, "X_CIPHERS='AES128-GCM-SHA256' selects suites without forward secrecy"),
])
def test_tls_policy_errors_name_the_given_variables(environ, message):
    with pytest.raises(LauncherError, match="^" + re.escape(message)) as err:
        launcher_checks.tls_policy(environ, "X_MIN", "X_CIPHERS")
    assert launcher_checks.MIN_VERSION_ENV not in str(err.value) and launcher_checks.CIPHERS_ENV not in str(err.value)


def test_tls_policy_reads_only_the_given_variables():
    environ = {launcher_checks.MIN_VERSION_ENV: "TLSv1.3", launcher_checks.CIPHERS_ENV: "NO-SUCH-CIPHER",
               "X_MIN": "TLSv1.3"}
    assert launcher_checks.tls_policy(environ, "X_MIN", "X_CIPHERS")["minimum_version"] == ssl.TLSVersion.TLSv1_3
    assert launcher_checks.tls_policy({"X_MIN": "TLSv1.1"})["version"] == "TLSv1.2"
    with pytest.raises(LauncherError, match="^" + re.escape(launcher_checks.CIPHERS_ENV + "='NO-SUCH-CIPHER'")):
        launcher_checks.tls_policy(environ)
