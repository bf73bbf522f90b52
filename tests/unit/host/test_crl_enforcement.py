"""CRLs on both ends of the plugin hop: mcp_mtls_host.crlfile (reading nextUpdate without cryptography), the plugin
launcher's context (client certificates) and the gateway's plugin client (server certificates). Real handshakes with
certificates and CRLs made here."""

from __future__ import annotations

import calendar
import datetime
import importlib
import os

import pytest
from host_certs import key_pem, make_ca, make_crl, make_leaf, pem
from test_client_trust import config, fake_cpex, fake_digest  # noqa: F401  # pylint: disable=unused-import
from test_launcher_tls import Instance, handshake

from mcp_mtls_host import client_trust, crlfile, trustcheck


def _epoch(moment):
    return calendar.timegm(moment.utctimetuple())


def test_next_update_is_read_from_the_der(tmp_path):
    ca = make_ca("CA")
    path = tmp_path / "ca.crl"
    path.write_bytes(make_crl(ca, next_update_days=40) + make_crl(ca, next_update_days=20))
    expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=20)
    assert abs(crlfile.read(str(path)) - _epoch(expected)) < 5  # the earliest of the two
    # Beyond 2049 the time is a GeneralizedTime.
    path.write_bytes(make_crl(ca, next_update_days=365 * 30))
    assert crlfile.read(str(path)) > _epoch(datetime.datetime(2050, 1, 1))


@pytest.mark.parametrize("content, message", [
    (b"not a crl\n", "holds no PEM CRL"),
    (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "a CRL that cannot be read"),
])
def test_a_file_that_is_no_crl_is_refused(tmp_path, content, message):
    path = tmp_path / "ca.crl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        crlfile.read(str(path))


def test_an_expired_crl_is_refused(tmp_path):
    path = tmp_path / "ca.crl"
    path.write_bytes(make_crl(make_ca("CA"), next_update_days=-1, last_update_days=-3))
    with pytest.raises(ValueError, match="expired at .*every peer would be refused"):
        crlfile.current(str(path))


def _deploy_with_crl(inst, server, ca, crl):
    inst.deploy(server[0], server[1], [ca[1]])
    (inst.dir / "tls" / "ca.crl").write_bytes(crl)


def test_the_launcher_refuses_a_revoked_client_and_reports_the_crl(tmp_path):
    ca = make_ca("CA")
    server, good, bad = make_leaf(ca, "mcp-plugin-a", True), make_leaf(ca, "gw", False), make_leaf(ca, "gw", False)
    inst = Instance(tmp_path)
    _deploy_with_crl(inst, server, ca, make_crl(ca, revoked=[bad[1]]))
    material = inst.material()
    proxy = material.start()
    assert handshake(proxy, good, [ca[1]])[0]
    with pytest.raises(Exception, match="certificate revoked"):
        handshake(proxy, bad, [ca[1]])
    assert "with its CRL" in inst.status()["message"] and "tls/ca.crl" in inst.record()
    text = (inst.run / "tls.prom").read_text()
    assert 'mcp_plugin_tls_crl_enforced{plugin="plugin"} 1' in text
    assert "mcp_plugin_tls_crl_next_update_timestamp_seconds" in text


def test_a_reload_with_an_expired_crl_is_refused_and_the_old_set_keeps_serving(tmp_path):
    ca = make_ca("CA")
    server, good = make_leaf(ca, "mcp-plugin-a", True), make_leaf(ca, "gw", False)
    inst = Instance(tmp_path)
    _deploy_with_crl(inst, server, ca, make_crl(ca))
    material = inst.material()
    proxy = material.start()
    _deploy_with_crl(inst, server, ca, make_crl(ca, next_update_days=-1, last_update_days=-3))
    assert material.reload() is False
    assert "cannot use the CRL" in inst.status()["message"] and "expired" in inst.status()["message"]
    assert handshake(proxy, good, [ca[1]])[0]


def test_without_a_crl_nothing_is_checked(tmp_path):
    ca = make_ca("CA")
    server, client = make_leaf(ca, "mcp-plugin-a", True), make_leaf(ca, "gw", False)
    inst = Instance(tmp_path)
    inst.deploy(server[0], server[1], [ca[1]])
    inst.material().start()
    assert 'mcp_plugin_tls_crl_enforced{plugin="plugin"} 0' in (inst.run / "tls.prom").read_text()
    assert "without a CRL" in inst.status()["message"]


def test_the_gateway_client_refuses_a_revoked_server_certificate(fake_cpex, monkeypatch, tmp_path):  # noqa: F811
    fake_digest(monkeypatch)
    client_trust.install()
    tls_utils = importlib.import_module(client_trust.TARGET)
    ca = make_ca("CA")
    revoked, other = make_leaf(ca, "mcp-plugin-a", True), make_leaf(ca, "mcp-plugin-a", True)
    (tmp_path / "ca.crt").write_bytes(pem(ca[1]))
    (tmp_path / "ca.crl").write_bytes(make_crl(ca, revoked=[revoked[1]]))
    for name, leaf in (("revoked", revoked), ("other", other)):
        (tmp_path / f"{name}.crt").write_bytes(pem(leaf[1]))
        (tmp_path / f"{name}.key").write_bytes(key_pem(leaf[0]))
    tls = config(str(tmp_path / "ca.crt"))
    record = trustcheck.revoked("a", "mcp-plugin-a", lambda: tls_utils.create_ssl_context(tls, "a"),
                                str(tmp_path / "revoked.crt"), str(tmp_path / "revoked.key"))
    assert record["ok"] and "certificate revoked" in record["seen"], record
    server = trustcheck._Server(str(tmp_path / "other.crt"), str(tmp_path / "other.key"))
    try:
        assert trustcheck._connect(tls_utils.create_ssl_context(tls, "a"), server.port, "mcp-plugin-a", 5) is None
    finally:
        server.close()
    # Without the CRL the revoked certificate is accepted, and the check says so.
    os.unlink(tmp_path / "ca.crl")
    record = trustcheck.revoked("a", "mcp-plugin-a", lambda: tls_utils.create_ssl_context(tls, "a"),
                                str(tmp_path / "revoked.crt"), str(tmp_path / "revoked.key"))
    assert not record["ok"] and record["seen"] == "accepted the revoked certificate", record
