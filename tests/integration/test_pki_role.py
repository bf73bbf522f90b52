"""The pki role and the PKI modules, run for real with ansible-playbook, checked with openssl and ssl."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integration_support import PLAYBOOKS, run_playbook, tree_digest

PKI = PLAYBOOKS / "pki.yml"
FAST = {"pki_key_type": "ecdsa"}  # P-256 keeps most tests quick; RSA-4096 (the default) has its own test


def pki(tmp_path, check=False, diff=False, **extra):
    vars_ = {"pki_dir": str(tmp_path / "certs/mcp"), "pki_plugins": ["PluginA", "PluginB"], **FAST, **extra}
    return run_playbook(PKI, vars_, check=check, diff=diff)


def cert(path):
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def openssl_verify(ca, leaf, purpose):
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(ca), str(leaf)],
        capture_output=True, text=True, check=False,
    )


def test_four_step_idempotence_and_byte_identical_second_run(tmp_path):
    root = tmp_path / "certs/mcp"
    first_check = pki(tmp_path, check=True)
    assert first_check.rc == 0, first_check.out
    assert first_check.changed() == 2, first_check.out  # CA and leaves would be created
    assert not root.exists(), "check mode wrote to disk"

    first = pki(tmp_path)
    assert first.rc == 0, first.out
    assert first.changed() == 3  # CA, its revocation list, leaves
    before = tree_digest(root)
    assert set(before) == {
        "ca/ca.key", "ca/ca.crt", "ca/ca.crl", "gateway/client.key", "gateway/client.crt", "gateway/ca.crt",
        "plugins/PluginA/server.key", "plugins/PluginA/server.crt", "plugins/PluginA/ca.crt",
        "plugins/PluginB/server.key", "plugins/PluginB/server.crt", "plugins/PluginB/ca.crt",
    } | ({"ca/.lock"} if "ca/.lock" in before else set())

    second_check = pki(tmp_path, check=True)
    assert second_check.rc == 0 and second_check.changed() == 0, second_check.out
    second = pki(tmp_path)
    assert second.rc == 0 and second.changed() == 0, second.out
    assert tree_digest(root) == before, "a run that changes nothing rewrote files"


def test_upstream_defaults_rsa4096_layout_modes_subjects_sans(tmp_path):
    root = tmp_path / "certs/mcp"
    res = run_playbook(PKI, {"pki_dir": str(root), "pki_plugins": ["MyPlugin"]})
    assert res.rc == 0, res.out
    for key in ("ca/ca.key", "gateway/client.key", "plugins/MyPlugin/server.key"):
        assert oct((root / key).stat().st_mode & 0o777) == "0o600", key
        k = serialization.load_pem_private_key((root / key).read_bytes(), None)
        assert k.key_size == 4096
    for crt in ("ca/ca.crt", "gateway/client.crt", "gateway/ca.crt", "plugins/MyPlugin/server.crt"):
        assert oct((root / crt).stat().st_mode & 0o777) == "0o644", crt
    assert (root / "gateway/ca.crt").read_bytes() == (root / "ca/ca.crt").read_bytes()
    assert (root / "plugins/MyPlugin/ca.crt").read_bytes() == (root / "ca/ca.crt").read_bytes()

    ca, client, server = cert(root / "ca/ca.crt"), cert(root / "gateway/client.crt"), cert(root / "plugins/MyPlugin/server.crt")
    assert ca.subject.rfc4514_string() == "OU=Plugins,O=ContextForge,CN=ContextForge-CA"
    assert client.subject.rfc4514_string() == "OU=Gateway,O=MCPGateway,CN=mcp-gateway-client"
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mcp-plugin-MyPlugin"
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(sans) == sorted(["MyPlugin", "mcp-plugin-MyPlugin", "localhost"])
    days = (server.not_valid_after_utc - server.not_valid_before_utc).days
    assert 824 <= days <= 825
    assert client.version == x509.Version.v3
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert client.serial_number != server.serial_number and server.serial_number > 2**64


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa", "ed25519"])
def test_openssl_x509_strict_accepts_every_chain(tmp_path, key_type):
    root = tmp_path / "certs/mcp"
    extra = {"pki_key_type": key_type}
    if key_type == "rsa":
        extra["pki_key_size"] = 2048
    res = pki(tmp_path, **extra)
    assert res.rc == 0, res.out
    ca = root / "ca/ca.crt"
    for leaf, purpose in [(root / "gateway/client.crt", "sslclient"), (root / "plugins/PluginA/server.crt", "sslserver"),
                          (root / "plugins/PluginB/server.crt", "sslserver")]:
        out = openssl_verify(ca, leaf, purpose)
        assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr
    # the wrong purpose must be refused, or the EKU check means nothing
    wrong = openssl_verify(ca, root / "gateway/client.crt", "sslserver")
    assert wrong.returncode != 0


def _strict_ctx(purpose, cafile, certfile, keyfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def handshake(server_dir: Path, client_dir: Path, server_name: str):
    """A real TLS handshake over loopback; returns (client_error, server_error, peer subject seen by server)."""
    server_ctx = _strict_ctx("server", server_dir / "ca.crt", server_dir / "server.crt", server_dir / "server.key")
    client_ctx = _strict_ctx("client", client_dir / "ca.crt", client_dir / "client.crt", client_dir / "client.key")
    client_ctx.check_hostname = True
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result = {}

    def serve():
        conn = listener.accept()[0]
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result["peer"] = tls.getpeercert()
                tls.sendall(b"pong")
        except (ssl.SSLError, OSError) as exc:
            result["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_error = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                assert tls.recv(4) == b"pong"
                result["version"] = tls.version()
    except (ssl.SSLError, OSError, AssertionError) as exc:
        client_error = exc
    thread.join(10)
    listener.close()
    return client_error, result


def test_real_mtls_handshake_strict_and_foreign_ca_refused(tmp_path):
    ours = tmp_path / "ours"
    res = pki(ours)
    assert res.rc == 0, res.out
    root = ours / "certs/mcp"
    error, result = handshake(root / "plugins/PluginA", root / "gateway", "mcp-plugin-PluginA")
    assert error is None, error
    assert result["version"] in ("TLSv1.2", "TLSv1.3")
    assert dict(x[0] for x in result["peer"]["subject"])["commonName"] == "mcp-gateway-client"

    # hostname verification is real: a name outside the SANs fails
    error = handshake(root / "plugins/PluginA", root / "gateway", "mcp-plugin-PluginB")[0]
    assert isinstance(error, ssl.SSLCertVerificationError), error

    # a gateway client certificate from a foreign CA is refused by the server
    foreign = tmp_path / "foreign"
    res = pki(foreign)
    assert res.rc == 0, res.out
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("client.crt", "client.key"):
        (mixed / name).write_bytes((foreign / "certs/mcp/gateway" / name).read_bytes())
    (mixed / "ca.crt").write_bytes((root / "ca/ca.crt").read_bytes())  # the client trusts our server
    error, result = handshake(root / "plugins/PluginA", mixed, "mcp-plugin-PluginA")
    assert "peer" not in result
    assert isinstance(result.get("server_error"), ssl.SSLError), result


def test_renewal_happens_when_the_window_is_reached(tmp_path):
    root = tmp_path / "certs/mcp"
    # The CA has its own validity (pki_ca_days, longer than the leaves'): 6 days here, to be renewed with them.
    short = pki(tmp_path, pki_cert_days=5, pki_ca_days=6, pki_renew_before_days=1)
    assert short.rc == 0, short.out
    ca_key = (root / "ca/ca.key").read_bytes()
    old_ca, old_leaf = cert(root / "ca/ca.crt"), cert(root / "plugins/PluginA/server.crt")
    old_leaf_key = (root / "plugins/PluginA/server.key").read_bytes()

    outside = pki(tmp_path, pki_cert_days=5, pki_ca_days=6, pki_renew_before_days=3)  # 5 days left > 3: nothing to do
    assert outside.rc == 0 and outside.changed() == 0, outside.out

    inside = pki(tmp_path, pki_cert_days=825, pki_ca_days=900, pki_renew_before_days=30, diff=True)  # 5 days left < 30: renew
    assert inside.rc == 0 and inside.changed() == 2, inside.out
    new_ca, new_leaf = cert(root / "ca/ca.crt"), cert(root / "plugins/PluginA/server.crt")
    assert (root / "ca/ca.key").read_bytes() == ca_key, "the CA key must survive a CA renewal"
    assert new_ca.public_key() == old_ca.public_key()
    assert new_ca.not_valid_after_utc > old_ca.not_valid_after_utc + dt.timedelta(days=800)
    assert new_leaf.serial_number != old_leaf.serial_number
    assert new_leaf.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=800)
    assert (root / "plugins/PluginA/server.key").read_bytes() != old_leaf_key, "renewal makes a new key by default"
    assert (root / "plugins/PluginA/ca.crt").read_bytes() == (root / "ca/ca.crt").read_bytes()
    assert "BEGIN" not in inside.out.replace("BEGIN CERTIFICATE", ""), "diff output must not show key material"
    assert openssl_verify(root / "ca/ca.crt", root / "plugins/PluginA/server.crt", "sslserver").returncode == 0

    again = pki(tmp_path, pki_cert_days=825, pki_ca_days=900, pki_renew_before_days=30)
    assert again.rc == 0 and again.changed() == 0, again.out


def test_keep_key_reuses_the_key_on_forced_renewal(tmp_path):
    root = tmp_path / "certs/mcp"
    assert pki(tmp_path).rc == 0
    key = (root / "plugins/PluginA/server.key").read_bytes()
    serial = cert(root / "plugins/PluginA/server.crt").serial_number
    res = pki(tmp_path, pki_force_renew=True, pki_keep_key=True)
    assert res.rc == 0 and res.changed() == 1, res.out
    assert (root / "plugins/PluginA/server.key").read_bytes() == key
    assert cert(root / "plugins/PluginA/server.crt").serial_number != serial


def test_new_plugin_added_only_it_is_issued(tmp_path):
    root = tmp_path / "certs/mcp"
    assert pki(tmp_path).rc == 0
    before = tree_digest(root)
    res = pki(tmp_path, pki_plugins=["PluginA", "PluginB", "PluginC"])
    assert res.rc == 0 and res.changed() == 1, res.out
    after = tree_digest(root)
    assert {k: v for k, v in after.items() if "PluginC" not in k and k != "ca/.lock"} == \
        {k: v for k, v in before.items() if k != "ca/.lock"}
    assert (root / "plugins/PluginC/server.crt").exists()


def test_sans_change_reissues_with_extra_san(tmp_path):
    root = tmp_path / "certs/mcp"
    assert pki(tmp_path).rc == 0
    res = pki(tmp_path, pki_plugins=[{"name": "PluginA", "sans": ["DNS:a.example.test", "IP:10.1.2.3"]}, "PluginB"])
    assert res.rc == 0 and res.changed() == 1, res.out
    ext = cert(root / "plugins/PluginA/server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "a.example.test" in ext.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]


def test_plugins_from_an_upstream_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"plugins": [
        {"name": "MyPlugin", "kind": "external", "mcp": {"proto": "STREAMABLEHTTP", "url": "http://127.0.0.1:8000/mcp"}},
        {"name": "Internal", "kind": "plugins.regex.Plugin"},
        {"name": "AnotherPlugin", "kind": "external", "mcp": {"proto": "STREAMABLEHTTP", "url": "http://127.0.0.1:8001/mcp"}},
    ]}))
    res = run_playbook(PKI, {"pki_dir": str(tmp_path / "certs/mcp"), "pki_plugin_config": str(config), **FAST})
    assert res.rc == 0, res.out
    assert sorted(p.name for p in (tmp_path / "certs/mcp/plugins").iterdir()) == ["AnotherPlugin", "MyPlugin"]


def test_plugins_from_the_inventory(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"mcp_plugin_servers": {"hosts": {
        "p1": {"ansible_connection": "local", "plugin_server_plugins": [{"name": "Alpha", "port": 8000}]},
        "p2": {"ansible_connection": "local", "plugin_server_plugins": [
            {"name": "Beta", "port": 8000, "sans": ["DNS:p2.example.test"]}, {"name": "Gamma", "port": 8001}]},
    }}}}}))
    res = run_playbook(PLAYBOOKS / "pki_inventory.yml", {"pki_dir": str(tmp_path / "certs/mcp"), **FAST}, inventory=inv)
    assert res.rc == 0, res.out
    assert sorted(p.name for p in (tmp_path / "certs/mcp/plugins").iterdir()) == ["Alpha", "Beta", "Gamma"]
    sans = cert(tmp_path / "certs/mcp/plugins/Beta/server.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "p2.example.test" in sans


def test_the_controller_side_never_runs_under_become(tmp_path):
    """Fleet inventories set ansible_become: true for the hosts; the PKI work is delegated to the controller and
    must run as the controller user, not under sudo there. The hosts here demand become with a become program
    that always fails, to another user (become to the user one already is would be skipped), and an address
    nothing answers on: any task that used become, or reached the host, fails."""
    inv = tmp_path / "hosts.yml"
    become = {"ansible_connection": "ssh", "ansible_host": "192.0.2.1", "ansible_become": True,
              "ansible_become_exe": "/bin/false", "ansible_become_method": "sudo", "ansible_become_user": "nobody"}
    # The controller is in the inventory too (local connection), as many users list it: group all's
    # ansible_become then applies to it.
    inv.write_text(yaml.safe_dump({"all": {"vars": become, "hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
        "children": {"mcp_plugin_servers": {"hosts": {"p1": {"plugin_server_plugins": [{"name": "Alpha", "port": 8000}]}}}}}}))
    res = run_playbook(PLAYBOOKS / "pki_inventory.yml", {"pki_dir": str(tmp_path / "certs/mcp"), **FAST},
                       inventory=inv, args=["--limit", "p1"])
    assert res.rc == 0 and res.changed("p1") == 3, res.out  # CA, its revocation list, leaves
    assert (tmp_path / "certs/mcp/plugins/Alpha/server.key").stat().st_uid == os.getuid()


@pytest.mark.parametrize("plugins, needle", [
    (["../evil"], "'../evil'"),
    (["a/b"], "'a/b'"),
    ([""], "empty"),
    (["Same", "same"], "repeats"),
    (["x" * 60], "not a valid certificate name"),
    (["bad name;rm"], "not a valid certificate name"),
    ([{"sans": ["DNS:x"]}], "needs a 'name'"),
])
def test_bad_plugin_names_fail_before_anything_is_written(tmp_path, plugins, needle):
    res = pki(tmp_path, pki_plugins=plugins)
    assert res.rc != 0
    assert needle in res.out, res.out
    assert not (tmp_path / "certs").exists(), "a failed preflight must not write anything"


@pytest.mark.parametrize("extra, needle", [
    ({"pki_cert_days": 0}, "pki_cert_days must be > 0"),
    ({"pki_renew_before_days": 900}, "smaller than pki_cert_days"),
    ({"pki_key_type": "dsa"}, "pki_key_type"),
    ({"pki_plugin_config": "/nonexistent/config.yaml"}, "/nonexistent/config.yaml"),
])
def test_bad_settings_fail_with_a_message_naming_them(tmp_path, extra, needle):
    res = pki(tmp_path, **({"pki_plugins": []} if "pki_plugin_config" in extra else {}), **extra)
    assert res.rc != 0
    assert needle in res.out, res.out
    assert not (tmp_path / "certs").exists()


def test_corrupt_ca_key_is_an_error_naming_the_file_and_nothing_is_replaced(tmp_path):
    root = tmp_path / "certs/mcp"
    assert pki(tmp_path).rc == 0
    (root / "ca/ca.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    before = tree_digest(root)
    res = pki(tmp_path, pki_force_renew=True)
    assert res.rc != 0
    assert str(root / "ca/ca.key") in res.out, res.out
    assert {k: v for k, v in tree_digest(root).items() if k != "ca/.lock"} == \
        {k: v for k, v in before.items() if k != "ca/.lock"}


def test_passphrases_encrypt_keys_and_never_appear_in_output(tmp_path):
    root = tmp_path / "certs/mcp"
    secrets = {"pki_ca_passphrase": "ca-Secret-4711", "pki_gateway_key_passphrase": "gw-Secret-4712",
               "pki_plugin_key_passphrase": "plug-Secret-4713"}
    res = run_playbook(PKI, {"pki_dir": str(root), "pki_plugins": ["PluginA"], **FAST, **secrets}, verbosity=3, diff=True)
    assert res.rc == 0, res.out
    for secret in secrets.values():
        assert secret not in res.out
    for key, secret in [("ca/ca.key", "ca-Secret-4711"), ("gateway/client.key", "gw-Secret-4712"),
                        ("plugins/PluginA/server.key", "plug-Secret-4713")]:
        data = (root / key).read_bytes()
        assert b"ENCRYPTED" in data
        serialization.load_pem_private_key(data, secret.encode())
    assert "PRIVATE KEY" not in res.out
    wrong = run_playbook(PKI, {"pki_dir": str(root), "pki_plugins": ["PluginA"], **FAST, **secrets,
                               "pki_ca_passphrase": "wrong"})
    assert wrong.rc != 0 and str(root / "ca/ca.key") in wrong.out, wrong.out
