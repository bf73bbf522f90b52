"""Unit tests for the launcher's gRPC mode (mcp_mtls_host.launcher_grpc), the gRPC parts of its checks
(launcher_checks), the TLS set's extra_loader (launcher_tls.TLSMaterial) and the gateway's gRPC client trust
(client_trust). Real certificates, CRLs and TLS handshakes on 127.0.0.1; grpcio and cpex are not in the controller
venv, so small stand-ins take their place where the code calls them (a fake `grpc` object or module, the cpex
stand-in package of test_client_trust)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import importlib
import inspect
import json
import logging
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from host_certs import NOW, key_pem, make_ca, make_crl, make_leaf, pem
from test_client_trust import fake_cpex  # noqa: F401  # pylint: disable=unused-import
from test_launcher_tls import Instance

from mcp_mtls_host import client_trust, launcher_checks, launcher_grpc, launcher_telemetry
from mcp_mtls_host.launcher_checks import LauncherError

HOST_SRC = os.path.dirname(os.path.dirname(os.path.abspath(launcher_grpc.__file__)))  # host/src, for subprocesses
POLICY = launcher_checks.tls_policy({})
LINE_PREFIX = b"I1207 18:25:50.524075     283 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "


# --- helpers ---------------------------------------------------------------------------------------------------


def leaf_with_serial(ca, cn, serial, server=False):
    """(key, certificate) of a leaf of CA with the given SERIAL (make_leaf draws a random one)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write(path, data):
    path.write_bytes(data)
    return str(path)


def refusal_line(code, word, detail):
    return LINE_PREFIX + b"error:%s:SSL routines:OPENSSL_internal:%s: %s" % (code, word, detail)


class FakeGrpc:
    """What launcher_grpc and client_trust call of grpcio, recording the calls."""

    class StatusCode:
        UNAUTHENTICATED = "UNAUTHENTICATED"
        UNIMPLEMENTED = "UNIMPLEMENTED"

    def __init__(self):
        self.calls = []
        self.aio = types.SimpleNamespace(ServerInterceptor=type("ServerInterceptor", (), {}),
                                         secure_channel=self._secure_channel)

    def ssl_server_certificate_configuration(self, pairs, root_certificates=None):
        config = types.SimpleNamespace(pairs=pairs, roots=root_certificates)
        self.calls.append(("config", config))
        return config

    def dynamic_ssl_server_credentials(self, initial, fetcher, require_client_authentication=False):
        self.calls.append(("dynamic", initial, fetcher, require_client_authentication))
        return "server-credentials"

    @staticmethod
    def unary_unary_rpc_method_handler(behavior, request_deserializer=None, response_serializer=None):
        return types.SimpleNamespace(unary_unary=behavior, request_deserializer=request_deserializer,
                                     response_serializer=response_serializer)

    def ssl_channel_credentials(self, root_certificates=None, private_key=None, certificate_chain=None):
        self.calls.append(("channel_credentials", root_certificates, private_key, certificate_chain))
        return "channel-credentials"

    def _secure_channel(self, target, credentials):
        self.calls.append(("secure_channel", target, credentials))
        return "channel"

    def named(self, kind):
        return [call for call in self.calls if call[0] == kind]


class TLSServer:
    """A TLS server on 127.0.0.1 presenting CERTFILE/KEYFILE, offering ALPN h2, asking for an optional client
    certificate (trusting CAFILE when given); records each connection's (ALPN, whether a client cert came)."""

    def __init__(self, certfile, keyfile, cafile=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        if cafile:
            self.context.load_verify_locations(cafile)
            self.context.verify_mode = ssl.CERT_OPTIONAL
        self.seen = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        self.seen.append((tls.selected_alpn_protocol(), bool(tls.getpeercert())))
                        tls.sendall(b"ok")
                except (OSError, ssl.SSLError):
                    pass

    def close(self):
        self.sock.close()


def eventually(condition, timeout=5.0):
    """True as soon as CONDITION() is (the servers record from their own thread), False after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- TLS policy and grpcio --------------------------------------------------------------------------------------


def test_cipher_suites_are_the_policys_tls12_names_only():
    names = launcher_grpc.cipher_suites(POLICY).split(":")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers(POLICY["ciphers"])
    expected = [c["name"] for c in probe.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert names == expected and names
    assert not any(name.startswith("TLS_") for name in names)  # no TLS 1.3 suite names
    assert all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in names)
    narrow = launcher_grpc.cipher_suites(dict(POLICY, ciphers="ECDHE+CHACHA20"))
    assert narrow.split(":") == ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]


def test_prepare_environment_sets_the_suites_and_refuses_tls13_minimum(monkeypatch):
    env = {}
    launcher_grpc.prepare_environment(POLICY, env)
    assert env == {launcher_grpc.CIPHER_ENV: launcher_grpc.cipher_suites(POLICY)}
    strict = launcher_checks.tls_policy({launcher_checks.MIN_VERSION_ENV: "TLSv1.3"})
    env = {}
    with pytest.raises(LauncherError, match="MCP_PLUGIN_TLS_MIN_VERSION=TLSv1.3 cannot be enforced for a gRPC plugin"):
        launcher_grpc.prepare_environment(strict, env)
    assert env == {}
    # Without ENV: the process environment (read by grpcio when it is imported).
    monkeypatch.delenv(launcher_grpc.CIPHER_ENV, raising=False)
    launcher_grpc.prepare_environment(dict(POLICY, ciphers="ECDHE+AESGCM"))
    assert os.environ[launcher_grpc.CIPHER_ENV].split(":") == [
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256"]


@pytest.mark.parametrize("version, ok", [("1.70.0", False), ("1.77.9", False), ("1.78.0", True), ("1.85.4", True),
                                         ("2.0.0", True), ("dev", False)])
def test_import_grpc_checks_the_version(monkeypatch, version, ok):
    fake = types.ModuleType("grpc")
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "grpc", fake)
    if ok:
        assert launcher_grpc.import_grpc() is fake
    else:
        with pytest.raises(LauncherError, match="grpcio %s is older than 1.78" % version) as info:
            launcher_grpc.import_grpc()
        assert info.value.code == 3


def test_import_grpc_without_grpcio_is_a_refusal(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc raises ImportError
    with pytest.raises(LauncherError, match="grpcio is not installed in this venv") as info:
        launcher_grpc.import_grpc()
    assert info.value.code == 3


def test_unencrypted_key_decrypts_in_memory(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "server.key", key_pem(key, "s3cret"))
    plain = launcher_grpc._unencrypted_key(path, "s3cret")
    assert plain.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(plain, None)
    assert loaded.private_numbers() == key.private_numbers()
    assert open(path, "rb").read().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")  # the file is unchanged
    with pytest.raises(LauncherError, match="cannot decrypt .*server.key with the configured password"):
        launcher_grpc._unencrypted_key(path, "wrong")
    # Without a password: the file's bytes as they are.
    assert launcher_grpc._unencrypted_key(path, None) == open(path, "rb").read()


# --- revocations ------------------------------------------------------------------------------------------------


@pytest.fixture()
def two_cas(tmp_path):
    """Two CAs, a revoked and a good client of the first, a client of the second with the revoked serial, and the
    CRL file of both CAs (the first revoking the serial)."""
    ca1, ca2 = make_ca("CA one"), make_ca("CA two")
    serial = x509.random_serial_number()
    revoked = leaf_with_serial(ca1, "gw", serial)
    twin = leaf_with_serial(ca2, "gw", serial)
    good = make_leaf(ca1, "gw", False)
    crl = write(tmp_path / "ca.crl", make_crl(ca1, revoked=[revoked[1]]) + make_crl(ca2))
    return types.SimpleNamespace(ca1=ca1, ca2=ca2, revoked=revoked, twin=twin, good=good, crl=crl, serial=serial)


def test_revocations_refuse_the_issuing_cas_serial_only(two_cas):
    revocations = launcher_grpc.Revocations(two_cas.crl, time.time() + 3600)
    assert revocations.revoked == {(two_cas.ca1[1].subject.public_bytes(), two_cas.serial)}
    reason, detail = revocations.problem(pem(two_cas.revoked[1]))
    assert reason == "revoked" and "serial %x (CN=gw) is revoked" % two_cas.serial in detail
    assert revocations.problem(pem(two_cas.twin[1])) is None  # same serial, another issuer
    assert revocations.problem(pem(two_cas.good[1])) is None


def test_revocations_without_a_certificate_or_with_an_expired_crl(two_cas):
    revocations = launcher_grpc.Revocations(two_cas.crl, 1000.0)
    assert revocations.problem(None, now=10.0)[0] == "no_certificate"
    assert revocations.problem(b"", now=10.0)[0] == "no_certificate"
    assert revocations.problem(pem(two_cas.good[1]), now=999.0) is None
    reason, detail = revocations.problem(pem(two_cas.good[1]), now=1000.0)
    assert reason == "crl" and "has expired" in detail
    # Without now: the clock (1000 s after the epoch is long past).
    assert revocations.problem(pem(two_cas.good[1]))[0] == "crl"
    # A set without a CRL: nothing is revoked, nothing expires.
    none = launcher_grpc.Revocations(None, None)
    assert none.revoked == set() and none.problem(pem(two_cas.revoked[1])) is None


def test_revocations_cache_their_verdict_per_certificate_but_not_the_crl_expiry(two_cas):
    revocations = launcher_grpc.Revocations(two_cas.crl, 5000.0)
    assert revocations.problem(pem(two_cas.revoked[1]), now=1.0)[0] == "revoked"
    assert revocations.problem(pem(two_cas.good[1]), now=1.0) is None
    revocations.revoked.clear()  # the verdicts were cached: the list is not read again for these certificates
    assert revocations.problem(pem(two_cas.revoked[1]), now=1.0)[0] == "revoked"
    revocations.revoked.add((two_cas.ca1[1].subject.public_bytes(), two_cas.good[1].serial_number))
    assert revocations.problem(pem(two_cas.good[1]), now=1.0) is None
    assert revocations.problem(pem(two_cas.good[1]), now=5000.0)[0] == "crl"
    # A certificate not seen before is judged against the list as it is now.
    other = leaf_with_serial(two_cas.ca1, "gw2", two_cas.good[1].serial_number)
    assert revocations.problem(pem(other[1]), now=1.0)[0] == "revoked"


def test_a_crl_file_that_does_not_parse_raises(tmp_path):
    path = write(tmp_path / "ca.crl", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    with pytest.raises(ValueError):
        launcher_grpc.Revocations(path, None)


# --- grpcio's refused handshakes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code, word, detail, reason", [
    (b"100000c0", b"PEER_DID_NOT_RETURN_A_CERTIFICATE", b"Invalid certificate verification context", "no_certificate"),
    (b"1000007d", b"CERTIFICATE_VERIFY_FAILED", b"unable to get local issuer certificate", "unknown_ca"),
    (b"1000007d", b"CERTIFICATE_VERIFY_FAILED", b"self-signed certificate in certificate chain", "unknown_ca"),
    (b"1000007d", b"CERTIFICATE_VERIFY_FAILED", b"certificate has expired", "expired"),
    (b"1000007d", b"CERTIFICATE_VERIFY_FAILED", b"certificate is not yet valid", "not_yet_valid"),
    (b"1000007d", b"CERTIFICATE_VERIFY_FAILED", b"unsupported certificate purpose", "bad_certificate"),
    (b"10000070", b"BAD_PACKET_LENGTH", b"Invalid certificate verification context", "other"),
    (b"100000f0", b"UNSUPPORTED_PROTOCOL", b"Invalid certificate verification context", "protocol"),
    (b"100000b8", b"NO_SHARED_CIPHER", b"Invalid certificate verification context", "cipher"),
    (b"1000009c", b"HTTP_REQUEST", b"Invalid certificate verification context", "not_tls"),
    (b"10000418", b"TLSV1_ALERT_UNKNOWN_CA", b"ok", "client_refused_server"),
])
def test_handshake_refusal_reads_grpcios_line(code, word, detail, reason):
    line = refusal_line(code, word, detail)
    assert reason in launcher_telemetry.REASONS
    got = launcher_grpc.handshake_refusal(line + b"\n")
    assert got == (reason, "%s: %s" % (word.decode().lower().replace("_", " "), detail.decode()))
    assert launcher_grpc.handshake_refusal(line + b"\r\n") == got


@pytest.mark.parametrize("line", [
    b"E1207 18:25:50.524075     283 ssl_utils.cc:123] No match found for server name: x",
    b"I1207 18:25:50.524075     283 server.cc:400] Handshake failed",
    b"",
    b"Handshake failed with error SSL_ERROR_SSL without an error string",
])
def test_handshake_refusal_ignores_other_lines(line):
    assert launcher_grpc.handshake_refusal(line) is None


def test_count_refusals_counts_by_reason_without_logging(caplog):
    telemetry = launcher_telemetry.Telemetry("guard", None)
    on_line = launcher_grpc.count_refusals(telemetry)
    with caplog.at_level(logging.DEBUG, logger="mcp_plugin_launcher"):
        on_line(refusal_line(b"100000c0", b"PEER_DID_NOT_RETURN_A_CERTIFICATE", b"x"))
        on_line(refusal_line(b"100000c0", b"PEER_DID_NOT_RETURN_A_CERTIFICATE", b"x"))
        on_line(refusal_line(b"1000009c", b"HTTP_REQUEST", b"x"))
        on_line(b"E1207 18:25:50.524075     283 ssl_utils.cc:123] No match found for server name: x")
    assert caplog.records == []  # grpcio's own line is in the journal already
    counted = {reason: count for reason, count in telemetry.failures.items() if count}
    assert counted == {"no_certificate": 2, "not_tls": 1}
    assert telemetry.handshakes == 0


TAP_SCRIPT = textwrap.dedent('''
    import json, os, sys, threading
    from mcp_mtls_host import launcher_grpc, launcher_telemetry

    seen = []
    telemetry = launcher_telemetry.Telemetry("guard", None)
    count = launcher_grpc.count_refusals(telemetry)

    def on_line(line):
        seen.append(line.decode("latin-1"))
        count(line)
        if line == b"boom":
            raise RuntimeError("a failing callback never stops the copying")

    launcher_grpc.StderrTap(on_line)
    os.write(2, b"first line\\nsecond ")
    os.write(2, b"half\\nboom\\n")
    os.write(2, sys.argv[1].encode() + b"\\n")
    os.write(2, b"".join(b"bulk %05d %s\\n" % (i, b"x" * 90) for i in range(3000)))  # more than the pipe holds
    os.write(2, b"\\xff\\xfe binary\\n")
    sys.stderr.write("via sys.stderr\\n")
    sys.stderr.flush()
    os.write(2, b"no newline at the end")
    os.close(2)  # the pipe's only writer: the tap reads to its end and stops
    for thread in threading.enumerate():
        if thread.name == "grpc-stderr-tap":
            thread.join(10)
    print(json.dumps({"seen": seen, "failures": {k: v for k, v in telemetry.failures.items() if v}}))
''')


def test_stderr_tap_copies_every_byte_and_hands_on_complete_lines():
    grpc_line = refusal_line(b"100000c0", b"PEER_DID_NOT_RETURN_A_CERTIFICATE",
                             b"Invalid certificate verification context").decode()
    env = dict(os.environ, PYTHONPATH=HOST_SRC)
    proc = subprocess.run([sys.executable, "-c", TAP_SCRIPT, grpc_line], capture_output=True, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bulk = [b"bulk %05d %s" % (i, b"x" * 90) for i in range(3000)]
    lines = [b"first line", b"second half", b"boom", grpc_line.encode()] + bulk + [b"\xff\xfe binary", b"via sys.stderr"]
    assert proc.stderr == b"\n".join(lines) + b"\nno newline at the end"  # unchanged, in order, to the last byte
    result = json.loads(proc.stdout)
    assert result["seen"] == [line.decode("latin-1") for line in lines]  # the unfinished last line is not handed on
    assert result["failures"] == {"no_certificate": 1}


# --- grpcio's credentials and the per-call CRL check ------------------------------------------------------------


@pytest.fixture()
def grpc_set(tmp_path):
    """An instance folder with a TLS set (encrypted server key, CA bundle, CRL revoking one client)."""
    ca = make_ca("CA")
    server = make_leaf(ca, "mcp-plugin-a", True)
    good, revoked = make_leaf(ca, "gw", False), make_leaf(ca, "gw", False)
    inst = Instance(tmp_path)
    inst.deploy(server[0], server[1], [ca[1]], password="pw")
    (inst.dir / "tls" / "ca.crl").write_bytes(make_crl(ca, revoked=[revoked[1]]))
    return types.SimpleNamespace(inst=inst, ca=ca, server=server, good=good, revoked=revoked)


def test_credentials_load_the_set_for_grpcio(grpc_set):
    grpc = FakeGrpc()
    material = types.SimpleNamespace(password="pw", extra=None)
    creds = launcher_grpc.GrpcCredentials(grpc, material)
    folder = os.path.realpath(grpc_set.inst.dir / "tls")
    files = {field: os.path.join(folder, name) for field, name in (
        ("certfile", "server.crt"), ("keyfile", "server.key"), ("ca_bundle", "ca.crt"), ("crl", "ca.crl"))}
    config, revocations = creds.load(files, {"crl_next_update": time.time() + 3600, "not_after": 0})
    (key, chain), = config.pairs
    assert serialization.load_pem_private_key(key, None).private_numbers() == grpc_set.server[0].private_numbers()
    assert chain == pem(grpc_set.server[1]) and config.roots == pem(grpc_set.ca[1])
    assert revocations.problem(pem(grpc_set.revoked[1]))[0] == "revoked"
    assert revocations.problem(pem(grpc_set.good[1])) is None
    # Without a CRL: nothing revoked. A CRL that does not parse: refused, naming it.
    del files["crl"]
    assert creds.load(files, {"crl_next_update": None})[1].revoked == set()
    files["crl"] = write(grpc_set.inst.dir / "bad.crl", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    with pytest.raises(LauncherError, match="cannot read the CRL .*bad.crl"):
        creds.load(files, {"crl_next_update": None})


def test_fetch_hands_grpcio_a_new_configuration_only_after_a_reload(grpc_set):
    grpc = FakeGrpc()
    material = grpc_set.inst.material("pw")
    creds = launcher_grpc.GrpcCredentials(grpc, material)
    material.extra_loader = creds.load
    material.start()
    first = material.extra[0]
    assert first.pairs[0][1] == pem(grpc_set.server[1])
    assert creds.credentials() == "server-credentials"
    (_kind, initial, fetcher, required), = grpc.named("dynamic")
    assert initial is first and required is True
    assert fetcher() is None and creds.fetch() is None  # nothing changed
    # A new set: the next connection's fetch gets its configuration, once.
    ca2 = make_ca("CA two")
    server2 = make_leaf(ca2, "mcp-plugin-a", True)
    grpc_set.inst.deploy(server2[0], server2[1], [ca2[1]], password="pw")
    assert material.reload() is True
    second = fetcher()
    assert second is material.extra[0] and second is not first
    assert second.pairs[0][1] == pem(server2[1]) and second.roots == pem(ca2[1])
    assert fetcher() is None
    # A set that does not load is refused: grpcio keeps the configuration it has.
    grpc_set.inst.deploy(grpc_set.server[0], server2[1], [ca2[1]], password="pw")  # key of another certificate
    assert material.reload() is False
    assert fetcher() is None and material.extra[0] is second


class Aborted(Exception):
    """What grpcio's context.abort raises."""


class CallContext:
    """grpc.aio's ServicerContext as the guard uses it: the handshake's auth context, the peer, abort."""

    def __init__(self, pem_cert):
        self.pem_cert = pem_cert
        self.aborted = None

    def auth_context(self):
        return {"x509_pem_cert": [self.pem_cert]} if self.pem_cert else {}

    @staticmethod
    def peer():
        return "ipv4:127.0.0.1:40000"

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise Aborted(details)


def _guard(material, handler):
    """The guard's handler for a method whose own handler is HANDLER (None: no such method)."""
    grpc = FakeGrpc()
    guard = launcher_grpc.guard_interceptor(grpc, material)
    assert isinstance(guard, grpc.aio.ServerInterceptor)

    async def continuation(details):
        assert details == "details"
        return handler

    return asyncio.run(guard.intercept_service(continuation, "details"))


def _call(guarded, pem_cert):
    """One call through GUARDED with PEM_CERT as the peer's certificate: (its outcome or "aborted", context)."""
    context = CallContext(pem_cert)
    try:
        return asyncio.run(guarded.unary_unary("request", context)), context
    except Aborted:
        return "aborted", context


def _drive_guard(material, handler, pem_cert):
    guarded = _guard(material, handler)
    return (guarded,) + _call(guarded, pem_cert)


@pytest.fixture()
def guarded_material(two_cas):
    return types.SimpleNamespace(extra=("config", launcher_grpc.Revocations(two_cas.crl, time.time() + 3600)),
                                 telemetry=launcher_telemetry.Telemetry("guard", None))


def _inner():
    calls = []

    async def inner(request, context):
        calls.append((request, context))
        return "response"

    return calls, types.SimpleNamespace(unary_unary=inner, request_deserializer="deserialize",
                                        response_serializer="serialize")


def test_the_guard_refuses_a_revoked_certificate_before_the_servicer(two_cas, guarded_material, caplog):
    calls, handler = _inner()
    with caplog.at_level(logging.WARNING, logger="mcp_plugin_launcher"):
        guarded, outcome, context = _drive_guard(guarded_material, handler, pem(two_cas.revoked[1]))
    assert outcome == "aborted" and calls == []
    assert context.aborted[0] == "UNAUTHENTICATED" and "is revoked by its CA's CRL" in context.aborted[1]
    assert {r: n for r, n in guarded_material.telemetry.failures.items() if n} == {"revoked": 1}
    assert "refused call (after its TLS handshake) from ipv4:127.0.0.1:40000: revoked" in caplog.text
    assert (guarded.request_deserializer, guarded.response_serializer) == ("deserialize", "serialize")


def test_the_guard_lets_a_good_certificate_through(two_cas, guarded_material):
    calls, handler = _inner()
    _guarded, outcome, context = _drive_guard(guarded_material, handler, pem(two_cas.good[1]))
    assert outcome == "response" and calls == [("request", context)] and context.aborted is None
    assert not any(guarded_material.telemetry.failures.values())


def test_the_guard_refuses_a_call_without_a_certificate_and_reads_the_current_set(two_cas, guarded_material):
    calls, handler = _inner()
    guarded, outcome, context = _drive_guard(guarded_material, handler, None)
    assert outcome == "aborted" and context.aborted[0] == "UNAUTHENTICATED" and calls == []
    assert guarded_material.telemetry.failures["no_certificate"] == 1
    assert _call(guarded, pem(two_cas.good[1]))[0] == "response" and len(calls) == 1
    # A reload makes a new set current: the next call of the same method is judged by its CRL.
    crl = write(pathlib.Path(two_cas.crl).with_name("new.crl"), make_crl(two_cas.ca1, revoked=[two_cas.good[1]]))
    guarded_material.extra = ("config", launcher_grpc.Revocations(crl, None))
    outcome, context = _call(guarded, pem(two_cas.good[1]))
    assert outcome == "aborted" and len(calls) == 1 and guarded_material.telemetry.failures["revoked"] == 1


def test_the_guard_refuses_streams_and_passes_unknown_methods_on(two_cas, guarded_material):
    stream = types.SimpleNamespace(unary_unary=None, unary_stream="x", request_deserializer=None,
                                   response_serializer=None)
    _guarded, outcome, context = _drive_guard(guarded_material, stream, pem(two_cas.good[1]))
    assert outcome == "aborted" and context.aborted == ("UNIMPLEMENTED", "only unary calls are served")
    assert _guard(guarded_material, None) is None  # no such method: grpcio answers UNIMPLEMENTED itself


# --- health -----------------------------------------------------------------------------------------------------


def _health(state, request):
    async def scenario():
        server = await asyncio.start_server(lambda r, w: launcher_grpc._health(state, r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return answer

    answer = asyncio.run(scenario())
    head, _sep, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert int(headers[b"Content-Length"]) == len(body) and headers[b"Connection"] == b"close"
    return lines[0], body


def test_health_answers_200_once_serving():
    status, body = _health({"serving": True}, b"GET /health HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK" and body == launcher_grpc.HEALTH_BODY
    assert json.loads(body) == {"status": "healthy", "transport": "grpc"}


def test_health_answers_503_before_serving_and_404_elsewhere():
    status, body = _health({"serving": False}, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == b"HTTP/1.1 503 Service Unavailable" and json.loads(body) == {"status": "unavailable"}
    for request in (b"GET /metrics HTTP/1.1\r\n\r\n", b"POST /health HTTP/1.1\r\n\r\n", b"GET / HTTP/1.0\n\n"):
        status, body = _health({"serving": True}, request)
        assert status == b"HTTP/1.1 404 Not Found" and json.loads(body) == {"status": "unavailable"}


# --- launcher_checks: a gRPC instance's config ------------------------------------------------------------------


def grpc_config(**tls):
    return {
        "plugins": [{"name": "guard", "kind": "mcp_lab_plugins.guard.GrpcGuard", "hooks": ["tool_pre_invoke"]}],
        "grpc_server_settings": {
            "host": "0.0.0.0", "port": 50051,
            "tls": dict({"certfile": "/etc/p/tls/server.crt", "keyfile": "/etc/p/tls/server.key",
                         "ca_bundle": "/etc/p/tls/ca.crt", "client_auth": "require"}, **tls),
        },
    }


def test_a_grpc_config_passes():
    assert launcher_checks.check_config(grpc_config(), "c.yaml", check_files=False) == []
    assert launcher_checks.check_config(grpc_config(client_auth="REQUIRE"), "c.yaml", check_files=False) == []
    data = grpc_config()
    del data["grpc_server_settings"]["tls"]["client_auth"]  # cpex's default is 'require' too
    assert launcher_checks.check_config(data, "c.yaml", check_files=False) == []


@pytest.mark.parametrize("auth", ["optional", "none", "", None, True])
def test_a_grpc_config_without_required_client_certificates_is_refused(auth):
    errors = launcher_checks.check_config(grpc_config(client_auth=auth), "c.yaml", check_files=False)
    assert len(errors) == 1 and "grpc_server_settings.tls.client_auth is %r" % (auth,) in errors[0]
    assert "'require'" in errors[0]


def test_a_grpc_config_without_tls_or_with_both_sections_is_refused():
    data = grpc_config()
    del data["grpc_server_settings"]["tls"]
    errors = launcher_checks.check_config(data, "c.yaml", check_files=False)
    assert errors == ["c.yaml: grpc_server_settings.tls is missing; cpex would serve without TLS (refusing)"]
    data = grpc_config()
    data["server_settings"] = dict(data["grpc_server_settings"])
    errors = launcher_checks.check_config(data, "c.yaml", check_files=False)
    assert len(errors) == 1 and "both 'server_settings' (HTTP) and 'grpc_server_settings' (gRPC)" in errors[0]
    data = grpc_config(keyfile="server.key")
    data["grpc_server_settings"]["port"] = 65000
    errors = launcher_checks.check_config(data, "c.yaml", check_files=False)
    assert any("grpc_server_settings.port must be an integer 1-64535" in e for e in errors)
    assert any("grpc_server_settings.tls.keyfile must be an absolute path" in e for e in errors)


def test_settings_key_names_the_section():
    assert launcher_checks.settings_key(grpc_config()) == "grpc_server_settings"
    assert launcher_checks.settings_key({"server_settings": {}}) == "server_settings"
    assert launcher_checks.settings_key({}) == "server_settings"
    assert launcher_checks.settings_key(["grpc_server_settings"]) == "server_settings"


# --- launcher_tls: the set's extra form ------------------------------------------------------------------------


@pytest.fixture()
def tls_pki():
    ca1, ca2 = make_ca("CA one"), make_ca("CA two")
    return {"ca1": ca1, "ca2": ca2, "server1": make_leaf(ca1, "mcp-plugin-a", True),
            "server2": make_leaf(ca2, "mcp-plugin-a", True)}


def test_extra_loader_gets_the_resolved_files_and_its_result_is_kept(tmp_path, tls_pki):
    inst = Instance(tmp_path)
    inst.deploy(tls_pki["server1"][0], tls_pki["server1"][1], [tls_pki["ca1"][1]])
    material = inst.material()
    calls = []

    def loader(files, info):
        calls.append((dict(files), dict(info)))
        return ("extra", len(calls))

    material.extra_loader = loader
    assert material.extra is None
    material.start()
    assert material.extra == ("extra", 1)
    (files, info), = calls
    folder = str(inst.dir / "tls.d" / "1")
    assert files == {"certfile": folder + "/server.crt", "keyfile": folder + "/server.key",
                     "ca_bundle": folder + "/ca.crt"}  # resolved: the set's folder, not the link; no CRL here
    assert info["crl_next_update"] is None
    assert abs(info["not_after"] - tls_pki["server1"][1].not_valid_after_utc.timestamp()) < 2
    # The next set, with its CRL.
    inst.deploy(tls_pki["server2"][0], tls_pki["server2"][1], [tls_pki["ca2"][1]])
    (inst.dir / "tls" / "ca.crl").write_bytes(make_crl(tls_pki["ca2"]))
    assert material.reload() is True and material.extra == ("extra", 2)
    files, info = calls[-1]
    assert files["crl"] == str(inst.dir / "tls.d" / "2" / "ca.crl") and info["crl_next_update"] > time.time()


def test_a_broken_set_keeps_the_previous_extra(tmp_path, tls_pki):
    inst = Instance(tmp_path)
    inst.deploy(tls_pki["server1"][0], tls_pki["server1"][1], [tls_pki["ca1"][1]])
    material = inst.material()
    calls = []
    material.extra_loader = lambda files, info: calls.append(files) or "first"
    material.start()
    inst.deploy(tls_pki["server1"][0], tls_pki["server2"][1], [tls_pki["ca2"][1]])  # key of another certificate
    assert material.reload() is False
    assert material.extra == "first" and len(calls) == 1  # build_context refused it before the loader
    assert not inst.status()["ok"]


def test_a_loader_refusal_refuses_the_reload_and_keeps_the_previous_extra(tmp_path, tls_pki):
    inst = Instance(tmp_path)
    inst.deploy(tls_pki["server1"][0], tls_pki["server1"][1], [tls_pki["ca1"][1]])
    material = inst.material()
    answers = iter(["first", LauncherError("grpcio cannot use this set")])

    def loader(_files, _info):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    material.extra_loader = loader
    material.start()
    before = material.current
    inst.deploy(tls_pki["server2"][0], tls_pki["server2"][1], [tls_pki["ca2"][1]])
    assert material.reload() is False
    assert material.extra == "first" and material.current is before
    status = inst.status()
    assert not status["ok"] and "grpcio cannot use this set" in status["message"]
    # At start, the loader's refusal is the launcher's.
    fresh = inst.material()

    def refuse(_files, _info):
        raise LauncherError("refused at start")

    fresh.extra_loader = refuse
    with pytest.raises(LauncherError, match="refused at start"):
        fresh.start()


# --- client_trust: the gateway's gRPC channel -------------------------------------------------------------------


@pytest.mark.parametrize("target, expected", [("h:1", ("h", 1)), ("[::1]:5", ("::1", 5)),
                                              ("mcp-plugin-a:50051", ("mcp-plugin-a", 50051)),
                                              ("10.0.0.1:443", ("10.0.0.1", 443))])
def test_split_target(target, expected):
    assert client_trust.split_target(target) == expected


@pytest.mark.parametrize("target", ["h", "h:", ":5", "h:x", "h:-1", "[::1]", "", None])
def test_split_target_refuses_what_is_no_host_port(target):
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        client_trust.split_target(target)


@pytest.fixture()
def channel_pki(tmp_path):
    """Our CA (bundle in tls/), a good and a revoked server certificate for localhost, a server of another CA, and
    the gateway's client certificate with an encrypted key."""
    ca, other_ca = make_ca("CA"), make_ca("Other CA")
    good, revoked = make_leaf(ca, "localhost", True), make_leaf(ca, "localhost", True)
    foreign = make_leaf(other_ca, "localhost", True)
    client = make_leaf(ca, "mcp-gateway-client", False)
    tls = tmp_path / "tls"
    tls.mkdir()
    paths = {"bundle": write(tls / "ca.crt", pem(ca[1])), "other_ca": write(tmp_path / "other-ca.crt", pem(other_ca[1])),
             "client_cert": write(tls / "client.crt", pem(client[1])),
             "client_key": write(tls / "client.key", key_pem(client[0], "gw-pass"))}
    for name, leaf in (("good", good), ("revoked", revoked), ("foreign", foreign)):
        paths[name] = (write(tmp_path / (name + ".crt"), pem(leaf[1])), write(tmp_path / (name + ".key"), key_pem(leaf[0])))
    servers = []

    def serve(name, cafile=None):
        server = TLSServer(*paths[name], cafile=cafile)
        servers.append(server)
        return server

    def with_crl():
        (tls / "ca.crl").write_bytes(make_crl(ca, revoked=[revoked[1]]))

    yield types.SimpleNamespace(ca=ca, client=client, paths=paths, serve=serve, with_crl=with_crl, crl=tls / "ca.crl")
    for server in servers:
        server.close()


def channel_config(pki, verify=True, certfile=True, password="gw-pass"):
    return types.SimpleNamespace(ca_bundle=pki.paths["bundle"], verify=verify,
                                 certfile=pki.paths["client_cert"] if certfile else None,
                                 keyfile=pki.paths["client_key"] if certfile else None, keyfile_password=password)


def test_grpc_ssl_context_trusts_only_the_bundle_and_offers_h2(channel_pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", channel_pki.paths["other_ca"])  # a "system store" that is never read
    context = client_trust.grpc_ssl_context(channel_config(channel_pki))
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "CA"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and context.verify_flags & ssl.VERIFY_X509_STRICT
    assert not context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF  # no CRL beside the bundle
    server = channel_pki.serve("good", cafile=channel_pki.paths["bundle"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(2) == b"ok" and tls.selected_alpn_protocol() == "h2"
    assert eventually(lambda: server.seen) and server.seen == [("h2", True)]  # the server saw ALPN h2 and the (decrypted) client certificate
    foreign = channel_pki.serve("foreign")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        with socket.create_connection(("127.0.0.1", foreign.port), timeout=5) as raw:
            context.wrap_socket(raw, server_hostname="localhost")


def test_grpc_ssl_context_checks_the_crl_beside_the_bundle(channel_pki):
    channel_pki.with_crl()
    context = client_trust.grpc_ssl_context(channel_config(channel_pki))
    assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    channel_pki.crl.write_bytes(make_crl(channel_pki.ca, next_update_days=-1, last_update_days=-3))
    with pytest.raises(ValueError, match="expired"):
        client_trust.grpc_ssl_context(channel_config(channel_pki))


def test_grpc_server_problem(channel_pki):
    good, revoked, foreign = (channel_pki.serve(name) for name in ("good", "revoked", "foreign"))
    tls = channel_config(channel_pki)
    # Without a CRL the revoked certificate is one more good one.
    assert client_trust.grpc_server_problem("localhost:%d" % revoked.port, tls) is None
    channel_pki.with_crl()
    assert client_trust.grpc_server_problem("localhost:%d" % good.port, tls) is None
    assert client_trust.grpc_server_problem("localhost:%d" % revoked.port, tls) == \
        "server certificate refused: certificate revoked"
    assert client_trust.grpc_server_problem("localhost:%d" % foreign.port, tls) == \
        "server certificate refused: unable to get local issuer certificate"
    assert client_trust.grpc_server_problem("127.0.0.1:%d" % good.port, tls).startswith(
        "server certificate refused: ")  # the name is checked: the certificate has no IP SAN
    assert client_trust.grpc_server_problem("localhost:%d" % free_port(), tls, timeout=2) is None


def test_client_key_is_decrypted_in_memory(channel_pki):
    key, chain = client_trust._client_key(channel_config(channel_pki))
    assert serialization.load_pem_private_key(key, None).private_numbers() == channel_pki.client[0].private_numbers()
    assert chain == pem(channel_pki.client[1])
    raw = open(channel_pki.paths["client_key"], "rb").read()
    assert client_trust._client_key(channel_config(channel_pki, password=None)) == (raw, chain)
    assert client_trust._client_key(channel_config(channel_pki, certfile=False)) == (None, None)
    with pytest.raises(ValueError):
        client_trust._client_key(channel_config(channel_pki, password="wrong"))


def test_grpc_restricted_builds_the_channel_from_the_bundle(fake_cpex, channel_pki, monkeypatch):  # noqa: F811
    grpc = FakeGrpc()
    monkeypatch.setitem(sys.modules, "grpc", grpc)
    originals = []

    def original(target, tls_config, plugin_name="unknown"):
        originals.append((target, tls_config, plugin_name))
        return "cpex's channel"

    create = client_trust.grpc_restricted(original)
    assert getattr(create, client_trust.MARK) and create.__wrapped__ is original
    channel_pki.with_crl()
    good = channel_pki.serve("good", cafile=channel_pki.paths["bundle"])
    target = "localhost:%d" % good.port
    assert create(target, channel_config(channel_pki), "guard") == "channel"
    (_kind, roots, key, chain), = grpc.named("channel_credentials")
    assert roots == pem(channel_pki.ca[1]) and chain == pem(channel_pki.client[1])
    assert serialization.load_pem_private_key(key, None).private_numbers() == channel_pki.client[0].private_numbers()
    assert grpc.named("secure_channel") == [("secure_channel", target, "channel-credentials")]
    assert originals == [] and eventually(lambda: len(good.seen) == 1)  # one handshake checked the server first
    # Nothing to restrict: cpex's own function.
    off = channel_config(channel_pki, verify=False)
    assert create(target, off, "guard") == "cpex's channel"
    no_bundle = channel_config(channel_pki)
    no_bundle.ca_bundle = None
    assert create(target, no_bundle) == "cpex's channel"
    assert originals == [(target, off, "guard"), (target, no_bundle, "unknown")]
    assert len(grpc.named("secure_channel")) == 1


def test_grpc_restricted_refuses_a_revoked_server_naming_the_plugin(fake_cpex, channel_pki, monkeypatch):  # noqa: F811
    grpc = FakeGrpc()
    monkeypatch.setitem(sys.modules, "grpc", grpc)
    errors = importlib.import_module("cpex.framework.errors")
    create = client_trust.grpc_restricted(lambda *args: pytest.fail("cpex's function was called"))
    channel_pki.with_crl()
    revoked = channel_pki.serve("revoked")
    target = "localhost:%d" % revoked.port
    with pytest.raises(errors.PluginError) as info:
        create(target, channel_config(channel_pki), "guard")
    assert info.value.error.plugin_name == "guard"
    assert info.value.error.message == ("gRPC plugin 'guard' at %s: server certificate refused: certificate revoked"
                                        % target)
    # A client key that does not decrypt: a configuration error naming the plugin.
    with pytest.raises(errors.PluginError, match="Failed to configure gRPC TLS for plugin 'guard'") as info:
        create(target, channel_config(channel_pki, password="wrong"), "guard")
    assert info.value.error.plugin_name == "guard"
    assert grpc.named("secure_channel") == [] and grpc.named("channel_credentials") == []


FAKE_GRPC_TLS_UTILS = textwrap.dedent('''
    import grpc


    def create_secure_channel(target, tls_config, plugin_name="unknown"):
        return ("cpex 0.1.4 stand-in", target, plugin_name)
''')


@pytest.fixture()
def fake_cpex_grpc(fake_cpex):  # noqa: F811
    """The cpex stand-in with framework.external.grpc.tls_utils and a client importing its function by name."""
    folder = fake_cpex / "framework" / "external" / "grpc"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "tls_utils.py").write_text(FAKE_GRPC_TLS_UTILS)
    (folder / "client.py").write_text("from cpex.framework.external.grpc.tls_utils import create_secure_channel\n")
    return folder


def test_patch_leaves_other_grpc_code_alone_and_patches_the_tested_one(fake_cpex_grpc, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "grpc", FakeGrpc())
    tls_utils = importlib.import_module(client_trust.GRPC_TARGET)
    client = importlib.import_module(client_trust.GRPC_CLIENT)
    original = tls_utils.create_secure_channel
    with caplog.at_level(logging.WARNING, logger=client_trust.LOGGER):
        assert client_trust.patch(tls_utils) is False
    assert tls_utils.create_secure_channel is original and client.create_secure_channel is original
    assert "create_secure_channel is not the cpex 0.1.4 code" in caplog.text
    assert "gRPC plugin channels keep cpex's credentials" in caplog.text
    source = FAKE_GRPC_TLS_UTILS[FAKE_GRPC_TLS_UTILS.index("def create_secure_channel"):]
    assert inspect.getsource(original) == source
    monkeypatch.setattr(client_trust, "GRPC_TESTED_DIGEST", hashlib.sha256(source.encode()).hexdigest())
    assert client_trust.patch(tls_utils) is True
    replaced = tls_utils.create_secure_channel
    assert getattr(replaced, client_trust.MARK) and replaced.__wrapped__ is original
    assert client.create_secure_channel is replaced  # the copy cpex's client imported
    assert client_trust.patch(tls_utils) is True and tls_utils.create_secure_channel is replaced  # once
    # verify off: the replacement hands over to cpex's function.
    assert replaced("t:1", types.SimpleNamespace(verify=False), "p") == ("cpex 0.1.4 stand-in", "t:1", "p")
    assert client_trust.grpc_active()


def test_the_finder_patches_the_grpc_module_when_cpex_loads_it(fake_cpex_grpc, monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", FakeGrpc())
    source = FAKE_GRPC_TLS_UTILS[FAKE_GRPC_TLS_UTILS.index("def create_secure_channel"):]
    monkeypatch.setattr(client_trust, "GRPC_TESTED_DIGEST", hashlib.sha256(source.encode()).hexdigest())
    client_trust.install()
    client = importlib.import_module(client_trust.GRPC_CLIENT)  # imports tls_utils through the finder
    assert getattr(client.create_secure_channel, client_trust.MARK, False)
    assert sys.modules[client_trust.GRPC_TARGET].create_secure_channel is client.create_secure_channel


@pytest.mark.parametrize("request_line, serving, expected", [
    (b"GET /health?probe=1 HTTP/1.1", True, 200),
    (b"GET /healthz HTTP/1.1", True, 404),
    (b"GET /health/live HTTP/1.1", False, 404),
    (b"POST /health HTTP/1.1", True, 404),
])
def test_health_matches_the_path_exactly(request_line, serving, expected):
    status, _body = _health({"serving": serving}, request_line + b"\r\nHost: localhost\r\n\r\n")
    assert status.split()[1] == str(expected).encode(), status


def test_a_password_for_a_plain_key_is_ignored_as_openssl_does(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    plain = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "k.pem").write_bytes(plain)
    assert launcher_grpc._unencrypted_key(str(tmp_path / "k.pem"), "unused") == plain
