"""Unit tests for mcp_mtls_host.launcher_tls: the plugin launcher's reloadable TLS context. Real OpenSSL
handshakes in memory (ssl.MemoryBIO) with certificates made here; no cpex, no network."""

from __future__ import annotations

import json
import os
import signal
import ssl
import types

import pytest
from host_certs import der, key_pem, make_ca, make_leaf, pem

from mcp_mtls_host import launcher, launcher_checks, launcher_tls

POLICY = launcher_checks.tls_policy({})


class Instance:
    """An instance folder like plugin_host writes it: DIR/tls -> tls.d/ID/{server.key,server.crt,ca.crt}."""

    def __init__(self, root):
        self.dir = root / "plugin"
        (self.dir / "tls.d").mkdir(parents=True)
        self.run = root / "run"
        self.run.mkdir()
        (self.dir / "config.yaml").write_text("plugins: []\n")
        (self.run / "loaded.sha256").write_text("%s  config.yaml\n%s  tls/server.crt\n" % ("a" * 64, "b" * 64))
        self.tls = {field: str(self.dir / "tls" / name) for field, name in
                    (("certfile", "server.crt"), ("keyfile", "server.key"), ("ca_bundle", "ca.crt"))}
        self.sets = 0

    def deploy(self, key, cert, bundle, password=None):
        self.sets += 1
        folder = self.dir / "tls.d" / str(self.sets)
        folder.mkdir()
        (folder / "server.key").write_bytes(key if isinstance(key, bytes) else key_pem(key, password))
        (folder / "server.crt").write_bytes(pem(cert))
        (folder / "ca.crt").write_bytes(b"".join(pem(c) for c in bundle))
        temp = self.dir / ".tls.new"
        os.symlink(f"tls.d/{self.sets}", temp)
        os.replace(temp, self.dir / "tls")

    def material(self, password=None):
        return launcher_tls.TLSMaterial(self.tls, password, POLICY, str(self.dir), str(self.run))

    def status(self):
        return json.loads((self.run / "reload.json").read_text())

    def record(self):
        return dict(reversed(line.split("  ", 1)) for line in (self.run / "loaded.sha256").read_text().splitlines())


def handshake(server_context, client_leaf, trust):
    """A TLS handshake in memory: the server side wrapped by SERVER_CONTEXT, the client presenting CLIENT_LEAF
    (key, cert) and trusting TRUST (certificates). Returns (served certificate DER, server object) or raises the
    server's ssl.SSLError."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata="".join(pem(c).decode() for c in trust))
    if client_leaf:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "c.crt"), os.path.join(tmp, "c.key")
            open(cert, "wb").write(pem(client_leaf[1]))
            open(key, "wb").write(key_pem(client_leaf[0]))
            client.load_cert_chain(cert, key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _attempt in range(4))
    cside = client.wrap_bio(c_in, c_out, server_side=False)
    sside = server_context.wrap_bio(s_in, s_out, server_side=True)
    server_done = False
    for _attempt in range(10):
        try:
            cside.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                sside.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if server_done:
            return cside.getpeercert(binary_form=True), sside
    raise AssertionError("the handshake did not complete")


@pytest.fixture()
def pki():
    ca1, ca2 = make_ca("CA one"), make_ca("CA two")
    return {"ca1": ca1, "ca2": ca2,
            "server1": make_leaf(ca1, "mcp-plugin-a", True), "server2": make_leaf(ca2, "mcp-plugin-a", True),
            "gateway1": make_leaf(ca1, "mcp-gateway-client", False),
            "gateway2": make_leaf(ca2, "mcp-gateway-client", False)}


def test_reload_switches_certificate_and_trust_for_new_handshakes_only(tmp_path, pki):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    proxy = material.start()
    assert isinstance(proxy, ssl.SSLContext) and proxy.verify_mode == ssl.CERT_REQUIRED
    served, established = handshake(proxy, pki["gateway1"], [pki["ca1"][1]])
    assert served == der(pki["server1"][1])
    assert inst.status()["ok"] and inst.status()["generation"] == 1

    # A CA rotation's last step: the new CA only. The old CA's clients are refused from now on.
    inst.deploy(pki["server2"][0], pki["server2"][1], [pki["ca2"][1]])
    old_context = established.context
    assert material.reload() is True
    served = handshake(proxy, pki["gateway2"], [pki["ca2"][1]])[0]
    assert served == der(pki["server2"][1])
    with pytest.raises(ssl.SSLError, match="certificate verify failed|unknown ca"):
        handshake(proxy, pki["gateway1"], [pki["ca1"][1], pki["ca2"][1]])
    assert established.context is old_context  # the connection made before the reload keeps its context
    status = inst.status()
    assert status["ok"] and status["generation"] == 2 and status["pid"] == os.getpid()
    assert "tls.d/2" in status["message"]


def test_loaded_record_names_what_is_served_and_keeps_the_other_lines(tmp_path, pki):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    material.start()
    import hashlib

    record = inst.record()
    assert record["config.yaml"] == "a" * 64  # written by the unit at start, kept
    for name in ("server.crt", "server.key", "ca.crt"):
        assert record[f"tls/{name}"] == hashlib.sha256((inst.dir / "tls" / name).read_bytes()).hexdigest()
    assert len((inst.run / "loaded.sha256").read_text().splitlines()) == 4


@pytest.mark.parametrize("fault, message", [
    ("mismatch", "key and certificate do not match"),
    ("foreign_bundle", "does not verify the certificate"),
    ("garbage_key", "cannot use key"),
    ("encrypted_no_password", "is encrypted but no password is set"),
    ("missing", "No such file"),
])
def test_a_set_that_does_not_load_is_refused_and_the_old_one_keeps_serving(tmp_path, pki, fault, message):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    proxy = material.start()
    record = inst.record()
    key, cert, bundle = pki["server2"][0], pki["server2"][1], [pki["ca2"][1]]
    if fault == "mismatch":
        key = pki["server1"][0]
    elif fault == "foreign_bundle":
        bundle = [pki["ca1"][1]]
    elif fault == "garbage_key":
        key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    if fault == "encrypted_no_password":
        inst.deploy(key, cert, bundle, password="secret")
    else:
        inst.deploy(key, cert, bundle)
    if fault == "missing":
        os.unlink(inst.dir / "tls" / "ca.crt")
    assert material.reload() is False
    status = inst.status()
    assert not status["ok"] and message in status["message"] and "still serving the previous set" in status["message"]
    served = handshake(proxy, pki["gateway1"], [pki["ca1"][1]])[0]
    assert served == der(pki["server1"][1])
    assert inst.record() == record  # the record still names the set in use


def test_encrypted_key_with_its_password(tmp_path, pki):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]], password="s3cret")
    proxy = inst.material("s3cret").start()
    assert handshake(proxy, pki["gateway1"], [pki["ca1"][1]])[0] == der(pki["server1"][1])
    with pytest.raises(launcher_checks.LauncherError, match="cannot use key"):
        inst.material("wrong").start()


def test_policy_and_no_resumption(tmp_path, pki):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    material.start()
    context = material.current
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_TICKET and context.num_tickets == 0
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)
    with pytest.raises(ssl.SSLError):  # no client certificate
        handshake(material.start(), None, [pki["ca1"][1]])


def test_the_proxy_itself_holds_no_certificate(tmp_path, pki):
    """A path around the delegation (the bare SSLContext.wrap_bio of the proxy) finds no certificate: it fails
    closed instead of serving without the instance's set."""
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    proxy = inst.material().start()
    bypass = types.SimpleNamespace(wrap_bio=lambda *args, **kwargs: ssl.SSLContext.wrap_bio(proxy, *args, **kwargs))
    with pytest.raises(ssl.SSLError):
        handshake(bypass, pki["gateway1"], [pki["ca1"][1]])
    assert handshake(proxy, pki["gateway1"], [pki["ca1"][1]])[0] == der(pki["server1"][1])


def test_sighup_reloads_and_the_request_waits_for_the_answer(tmp_path, pki, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    material.start()
    previous = signal.getsignal(signal.SIGHUP)
    material.install_signal_handler()
    try:
        inst.deploy(pki["server2"][0], pki["server2"][1], [pki["ca2"][1]])
        # The request is answered from another thread while this one waits (the launcher's event loop).
        assert launcher_tls.request(os.getpid(), str(inst.run), timeout=10) == (True, inst.status()["message"])
        assert inst.status()["generation"] == 2 and "tls.d/2" in inst.status()["message"]
        inst.deploy(pki["server1"][0], pki["server2"][1], [pki["ca2"][1]])  # mismatched key
        taken, message = launcher_tls.request(os.getpid(), str(inst.run), timeout=10)
        assert not taken and "do not match" in message
        assert launcher.main(["--reload", str(os.getpid())]) == 1  # no RUNTIME_DIRECTORY in this environment
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_request_to_a_process_that_reported_nothing_is_refused(tmp_path):
    (tmp_path / "reload.json").write_text(json.dumps({"pid": 1, "generation": 3, "ok": True, "message": "x"}))
    taken, message = launcher_tls.request(os.getpid(), str(tmp_path), timeout=1)
    assert not taken and "restart the instance instead" in message
    assert launcher_tls.request(os.getpid(), None)[0] is False


def test_the_metrics_name_the_served_certificate_and_count_reloads(tmp_path, pki):
    inst = Instance(tmp_path)
    inst.deploy(pki["server1"][0], pki["server1"][1], [pki["ca1"][1]])
    material = inst.material()
    material.start()
    metrics = inst.run / "tls.prom"

    def sample(name):
        return [line.rsplit(" ", 1)[1] for line in metrics.read_text().splitlines() if line.startswith(name)]

    expiry = int(pki["server1"][1].not_valid_after_utc.timestamp())
    assert sample('mcp_plugin_tls_certificate_expiry_timestamp_seconds{plugin="plugin"}') == [str(expiry)]
    inst.deploy(pki["server2"][0], pki["server1"][1], [pki["ca1"][1]])  # refused
    material.reload()
    inst.deploy(pki["server2"][0], pki["server2"][1], [pki["ca2"][1]])
    material.reload()
    material.telemetry.write()
    assert sample('mcp_plugin_tls_reloads_total{plugin="plugin",result="refused"}') == ["1"]
    assert sample('mcp_plugin_tls_reloads_total{plugin="plugin",result="ok"}') == ["1"]
    assert sample("mcp_plugin_tls_certificate_expiry_timestamp_seconds") == [
        str(int(pki["server2"][1].not_valid_after_utc.timestamp()))]
