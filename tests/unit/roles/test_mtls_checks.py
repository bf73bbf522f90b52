"""roles/verify/files/mtls_checks.py: the gateway-side checks against real TLS servers on 127.0.0.1, and the
search for CA private keys in a whole (temporary) file system tree."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import warnings

import pytest

STRONG = "ECDHE+AESGCM:ECDHE+CHACHA20"
WRONG_NAME = "name-not-in-sans.invalid"
POSITIVE_CHECKS = {"name_resolves", "mtls_handshake_with_gateway_cert", "tls1_2_accepted"}


def openssl(*args, cwd, stdin=None):
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, check=True, capture_output=True).stdout


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")


def make_ca(folder, name, *passout):
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", *EC, "-subj", f"/CN={name}", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
            *(passout or ("-nodes",)), cwd=folder)


def make_leaf(pki, name, ca, extensions):
    (pki / f"{name}.ext").write_text(extensions)
    openssl("req", *EC, "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}/ca.crt", "-CAkey", f"{ca}/ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A deployed CA with a server certificate for localhost and the gateway's client certificate, a foreign
    CA with its client certificate, and a third CA whose client certificate the foreign CA did not sign."""
    pki = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "foreign", "other"):
        make_ca(pki / ca, f"{ca}-ca")
    server = "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    make_leaf(pki, "server", "ca", server)
    make_leaf(pki, "server-any-name", "ca", f"subjectAltName=DNS:localhost,DNS:{WRONG_NAME}\nextendedKeyUsage=serverAuth\n")
    for name, ca in (("client", "ca"), ("foreign-client", "foreign"), ("other-client", "other")):
        make_leaf(pki, name, ca, "extendedKeyUsage=clientAuth\n")
    (pki / "broken.key").write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    return pki


def server_context(pki, verify=ssl.CERT_REQUIRED, minimum=ssl.TLSVersion.TLSv1_2, ciphers=STRONG, cert="server"):
    """What the plugin launcher configures: client certificates from the CA required, TLS >= 1.2, ECDHE+AEAD."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    context.load_verify_locations(pki / "ca" / "ca.crt")
    context.verify_mode = verify
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
    context.set_ciphers(ciphers)
    return context


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class ThreadedServer(http.server.ThreadingHTTPServer):
    """Blocking TLS sockets: a refused handshake sends its alert (the handshake runs in the request's thread)."""
    daemon_threads = True

    def __init__(self, context):
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get_request(self):
        sock, address = self.socket.accept()
        sock.settimeout(5)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address):
        pass  # refused handshakes are the point

    def shutdown_request(self, request):
        """Half-close, then drain what the client sent before closing: closing with unread bytes sends a TCP
        reset, and a reset that overtakes the alert makes the client see a bare EOF."""
        try:
            request.shutdown(socket.SHUT_WR)
            while socket.socket.recv(request, 65536):  # the raw bytes under TLS
                pass
        except OSError:
            pass
        request.close()

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class AsyncioServer:
    """TLS through asyncio's memory-BIO SSL protocol, as uvicorn serves it: a refused handshake closes the
    connection without sending the alert."""

    def __init__(self, context):
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, details: None)  # "SSL handshake failed" is the point
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    @staticmethod
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self):
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class HangUp:
    """Accepts every connection and closes it at once (a socket unit whose service fails to start)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _address = self.sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def serve():
    """serve(Kind, *args) starts a server; all are stopped (and their threads joined) after the test."""
    started = []

    def start(kind, *args):
        started.append(kind(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def closed_ports():
    """Two ports of 127.0.0.1 that refuse connections: bound but never listening, so nothing takes them meanwhile."""
    socks = [socket.socket() for _port in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    yield [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()


def foreign(pki, cert="foreign-client", key="foreign-client"):
    return ["--foreign-cert", str(pki / f"{cert}.crt"), "--foreign-key", str(pki / f"{key}.key"), "--foreign-ca", str(pki / "foreign/ca.crt")]


def remote(checks, pki, port, health, *extra, host="localhost"):
    """Run `mtls_checks.py remote` as the role does; {check name: record}."""
    cmd = [sys.executable, checks.__file__, "remote", "--name", "t", "--url", f"https://{host}:{port}/mcp",
           "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"), "--ca", str(pki / "ca/ca.crt"),
           "--health-port", str(health), *(extra or foreign(pki))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    records = json.loads(proc.stdout)
    assert all(set(record) == {"check", "ok", "expected", "seen", "target"} for record in records), records
    by_name = {record["check"]: record for record in records}
    assert len(by_name) == len(records) and set(by_name) == POSITIVE_CHECKS | set(checks.NEGATIVE_CHECKS), records
    return by_name


def failed(results):
    return {name for name, record in results.items() if not record["ok"]}


# --------------------------------------------------------------------------------------- remote: the checks

@pytest.mark.parametrize("kind, refusal", [(ThreadedServer, "the server sent the TLS alert"),
                                           (AsyncioServer, "closed the connection without an alert")], ids=["threaded", "asyncio"])
def test_a_correct_server_passes_every_check(checks, pki, serve, closed_ports, kind, refusal):
    server = serve(kind, server_context(pki))
    results = remote(checks, pki, server.port, closed_ports[0])
    assert failed(results) == set(), results
    for name in ("no_client_cert_refused", "foreign_ca_cert_refused", "tls1_1_refused", "weak_tls1_2_suites_refused"):
        assert refusal in results[name]["seen"], results[name]
    assert "verify code 62" in results["hostname_mismatch_refused"]["seen"]


def test_a_down_server_fails_every_negative_check(checks, pki, closed_ports):
    results = remote(checks, pki, closed_ports[0], closed_ports[1])
    assert "Connection refused" in results["mtls_handshake_with_gateway_cert"]["seen"], results
    assert failed(results) == set(checks.NEGATIVE_CHECKS) | {"mtls_handshake_with_gateway_cert", "tls1_2_accepted"}, results


def test_a_port_that_hangs_up_fails_every_negative_check(checks, pki, serve, closed_ports):
    """A connection that is accepted and closed before any TLS (a socket unit whose service fails) is no refusal."""
    server = serve(HangUp)
    results = remote(checks, pki, server.port, closed_ports[0])
    assert failed(results) == set(checks.NEGATIVE_CHECKS) | {"mtls_handshake_with_gateway_cert", "tls1_2_accepted"}, results


def test_a_name_that_does_not_resolve_fails_every_negative_check(checks, pki, closed_ports):
    results = remote(checks, pki, closed_ports[0], closed_ports[1], host="mcp-plugin-t.invalid")
    assert failed(results) == set(checks.NEGATIVE_CHECKS) | POSITIVE_CHECKS, results


@pytest.mark.parametrize("cert, key, ca_problem", [
    ("foreign-client", "client", "do not load together"),  # the key of another certificate
    ("foreign-client", "broken", "do not load together"),  # a key openssl cannot read
    ("other-client", "other-client", "no client certificate of --foreign-ca"),  # valid, but not from the foreign CA
], ids=["mismatched-key", "broken-key", "not-from-the-foreign-ca"])
def test_a_client_side_error_fails_the_foreign_ca_check(checks, pki, serve, closed_ports, cert, key, ca_problem):
    server = serve(ThreadedServer, server_context(pki))
    results = remote(checks, pki, server.port, closed_ports[0], *foreign(pki, cert, key))
    assert failed(results) == {"foreign_ca_cert_refused"}, results
    seen = results["foreign_ca_cert_refused"]["seen"]
    assert seen.startswith("client-side error") and ca_problem in seen, seen
    assert "bm90IGEga2V5" not in json.dumps(results)  # no key material in the output


@pytest.mark.parametrize("weakness, options, expected", [
    ("no client certificate asked for", {"verify": ssl.CERT_NONE}, {"no_client_cert_refused", "foreign_ca_cert_refused"}),
    ("client certificate optional", {"verify": ssl.CERT_OPTIONAL}, {"no_client_cert_refused"}),
    ("TLS 1.1 accepted", {"minimum": ssl.TLSVersion.TLSv1_1, "ciphers": "ALL:@SECLEVEL=0"}, {"tls1_1_refused", "weak_tls1_2_suites_refused"}),
    ("weak TLS 1.2 suites accepted", {"ciphers": "ALL:@SECLEVEL=0"}, {"weak_tls1_2_suites_refused"}),
    ("certificate valid for any name asked", {"cert": "server-any-name"}, {"hostname_mismatch_refused"}),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_weak_server_fails_exactly_its_checks(checks, pki, serve, closed_ports, weakness, options, expected):
    server = serve(ThreadedServer, server_context(pki, **options))
    results = remote(checks, pki, server.port, closed_ports[0])
    assert failed(results) == expected, (weakness, results)


def test_a_health_port_reachable_on_the_same_address_fails(checks, pki, serve):
    server = serve(ThreadedServer, server_context(pki))
    with socket.create_server(("127.0.0.1", 0)) as health:
        results = remote(checks, pki, server.port, health.getsockname()[1])
    assert failed(results) == {"health_not_reachable_remotely"}, results
    assert "connected" in results["health_not_reachable_remotely"]["seen"]


# --------------------------------------------------------------------------------------- ca-key: the search

@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    """The controller's CA folder during a rotation: current, incoming (next) and a retired CA, keys encrypted."""
    ca = tmp_path_factory.mktemp("ctl") / "ca"
    for folder in (ca, ca / "next", ca / "retired" / "20250101T000000Z"):
        make_ca(folder, folder.name, "-passout", "pass:ca-secret")
    return ca


def identities(checks, ctl):
    """What files.yml computes on the controller: ca-identities over every ca.crt and ca.key below ca/."""
    paths = sorted(str(path) for pattern in ("**/ca.crt", "**/ca.key") for path in ctl.glob(pattern))
    proc = subprocess.run([sys.executable, checks.__file__, "ca-identities", *paths], capture_output=True, text=True, check=True)
    found = json.loads(proc.stdout)
    assert len(found["spki"]) == 3 and len(found["key_digests"]) == 3, found
    return found


def search(checks, root, ids, *extra, digests=True):
    args = [f"--ca-spki={value}" for value in ids["spki"]] + [f"--ca-key-digest={value}" for value in ids["key_digests"] if digests]
    proc = subprocess.run([sys.executable, checks.__file__, "ca-key", "--root", str(root), *args, *extra],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(proc.stdout)[0]


def plain(ctl):
    """The decrypted CA key of folder CTL (a CA folder)."""
    return openssl("pkey", "-in", "ca.key", "-passin", "pass:ca-secret", cwd=ctl)


def other_key(cwd):
    return openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", cwd=cwd)


@pytest.fixture
def host(tmp_path):
    """A host's file system: a leaf key in etc/ and some text."""
    root = tmp_path / "host"
    (root / "etc/tls").mkdir(parents=True)
    (root / "etc/tls/leaf.key").write_bytes(other_key(tmp_path))
    (root / "etc/motd").write_text("hello\n")
    return root


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_host_without_the_ca_key_passes_and_reports_counts(checks, ctl, host):
    result = search(checks, host, identities(checks, ctl))
    assert result["ok"] is True, result
    assert result["seen"].startswith(f"scanned 2 files (0 MiB) below {host} in "), result
    assert "1 private key(s); compared with 3 CA public key(s) and 3 CA key digest(s)" in result["seen"], result


def test_an_encrypted_copy_is_found_by_content(checks, ctl, host):
    # The copy with CRLF line endings: the same key all the same.
    write(host / "sub/backup.pem", (ctl / "ca.key").read_bytes().replace(b"\n", b"\r\n"))
    found = search(checks, host, identities(checks, ctl))
    assert found["ok"] is False and "backup.pem" in found["seen"], found
    # Without the controller's digests an encrypted copy cannot be compared: the check says so.
    blind = search(checks, host, identities(checks, ctl), digests=False)
    assert blind["ok"] is True and "encrypted, compared by content only: ['" in blind["seen"] and "backup.pem" in blind["seen"], blind


def test_a_decrypted_copy_is_found_by_public_key(checks, ctl, host):
    write(host / "plain.key", plain(ctl))
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and "plain.key" in found["seen"], found


def test_a_copy_in_a_deep_folder_outside_the_old_list_is_found(checks, ctl, host):
    write(host / "var/cache/app/a/b/c/d/e/f/notes.pem", plain(ctl))
    found = search(checks, host, identities(checks, ctl))
    assert found["ok"] is False and "var/cache/app/a/b/c/d/e/f/notes.pem" in found["seen"], found


def test_a_key_after_100_kib_of_text_is_found(checks, ctl, host):
    write(host / "srv/log.txt", b"lorem ipsum dolor\n" * 6000 + plain(ctl))
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and "srv/log.txt" in found["seen"], found


def test_the_ca_key_as_second_key_of_a_file_is_found(checks, ctl, host, tmp_path):
    write(host / "etc/bundle.pem", other_key(tmp_path) + plain(ctl))
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and "etc/bundle.pem" in found["seen"], found


def test_a_symlink_to_a_copy_outside_the_root_is_followed(checks, ctl, host, tmp_path):
    write(tmp_path / "elsewhere/ca.pem", plain(ctl))
    (host / "etc/tls/link.pem").symlink_to(tmp_path / "elsewhere/ca.pem")
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and "etc/tls/link.pem" in found["seen"], found


def test_the_incoming_and_a_retired_ca_key_are_found(checks, ctl, host):
    write(host / "opt/a/next.pem", plain(ctl / "next"))
    write(host / "home/b/old.pem", plain(ctl / "retired/20250101T000000Z"))
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and "opt/a/next.pem" in found["seen"] and "home/b/old.pem" in found["seen"], found


def test_a_fifo_and_a_folder_loop_do_not_block(checks, ctl, host):
    os.mkfifo(host / "etc/fifo")
    (host / "etc/fifo-link").symlink_to(host / "etc/fifo")
    (host / "etc/loop").symlink_to(host)
    result = search(checks, host, identities(checks, ctl))
    assert result["ok"] is True and result["seen"].startswith("scanned 2 files"), result


def test_pseudo_file_systems_are_skipped(checks, ctl, host):
    devices, kinds = checks.pseudo_devices()
    assert os.stat("/proc").st_dev in devices and "proc" in kinds
    (host / "etc/status").symlink_to("/proc/self/status")  # a regular file, on proc
    result = search(checks, host, identities(checks, ctl))
    assert result["ok"] is True and result["seen"].startswith("scanned 2 files") and "'proc'" in result["seen"], result


def test_an_excluded_folder_is_not_searched_and_reported(checks, ctl, host):
    write(host / "data/ca.pem", plain(ctl))
    result = search(checks, host, identities(checks, ctl), "--exclude", str(host / "data"))
    assert result["ok"] is True and f"excluded: ['{host / 'data'}']" in result["seen"], result
    assert search(checks, host, identities(checks, ctl))["ok"] is False


def test_without_ca_public_keys_the_search_fails(checks, host):
    result = search(checks, host, {"spki": [], "key_digests": []})
    assert result["ok"] is False and "--ca-spki" in result["expected"], result


@pytest.mark.parametrize("offset", [0, 1, 20, 37, 60, 100, 127, 128, 3000])
def test_key_blocks_finds_a_key_across_a_chunk_boundary(checks, ctl, offset):
    key = plain(ctl)
    data = b"x" * (checks.CHUNK - offset) + key + b"tail\n"
    counter = [0]
    assert list(checks.key_blocks(io.BytesIO(data), counter)) == [key.strip()]
    assert counter[0] == len(data)


def test_ca_identities_of_a_rotation_bundle(checks, ctl, tmp_path):
    (tmp_path / "bundle.crt").write_bytes((ctl / "ca.crt").read_bytes() + (ctl / "next/ca.crt").read_bytes())
    proc = subprocess.run([sys.executable, checks.__file__, "ca-identities", str(tmp_path / "bundle.crt")],
                          capture_output=True, text=True, check=True)
    expected = sorted(hashlib.sha256(openssl("pkey", "-pubin", "-outform", "DER", cwd=tmp_path, stdin=openssl(
        "x509", "-noout", "-pubkey", "-in", str(folder / "ca.crt"), cwd=tmp_path))).hexdigest() for folder in (ctl, ctl / "next"))
    assert json.loads(proc.stdout) == {"spki": expected, "key_digests": []}


def test_key_body_digests_ignore_headers_and_line_breaks(checks):
    body = b"QUJD\nREVG\n"
    one = checks.key_body_digests(b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n")
    two = checks.key_body_digests(b"x\r\n-----BEGIN PRIVATE KEY-----\r\nQUJDREVG\r\n-----END PRIVATE KEY-----")
    assert one == two and len(one) == 1
    assert checks.key_body_digests(b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----") == []


# --------------------------------------------------------------------------------------- ca-key: OpenSSH-format keys

def _openssh(pem, tmp_path, password=""):
    """PEM private key -> the same key in OpenSSH format (what ssh-keygen writes), encrypted by ssh-keygen when
    PASSWORD is given."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    path = tmp_path / "converted"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    if password:
        subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", password, "-f", str(path)], check=True)
        assert b"bcrypt" in base64.b64decode(b"".join(path.read_bytes().splitlines()[1:-1])), "not encrypted"
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_openssh_public_keys_match_their_subject_public_key_info(checks, kind, tmp_path):
    from cryptography.hazmat.primitives import serialization

    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / "k")], check=True)
    block = (tmp_path / "k").read_bytes()
    public = serialization.load_ssh_public_key((tmp_path / "k.pub").read_bytes())
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert checks.openssh_public_key_digests(block) == [hashlib.sha256(spki).hexdigest()]


def test_a_ca_key_converted_to_openssh_format_is_found_even_encrypted(checks, ctl, host, tmp_path):
    write(host / "home/admin/.ssh/id_ecdsa", _openssh(plain(ctl), tmp_path))
    write(host / "root/backup/ca_ssh", _openssh(plain(ctl / "next"), tmp_path, password="other secret"))
    found = search(checks, host, identities(checks, ctl), digests=False)
    assert found["ok"] is False and ".ssh/id_ecdsa" in found["seen"] and "backup/ca_ssh" in found["seen"], found


def test_ssh_host_keys_are_compared_and_pass(checks, ctl, host):
    for kind in ("rsa", "ecdsa", "ed25519"):
        path = host / f"etc/ssh/ssh_host_{kind}_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    result = search(checks, host, identities(checks, ctl))
    assert result["ok"] is True and "4 private key(s)" in result["seen"], result
    assert "not readable by openssl, compared by content only: []" in result["seen"], result


def test_an_unreadable_openssh_block_is_reported_as_compared_by_content_only(checks, ctl, host):
    write(host / "etc/broken", b"-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n")
    result = search(checks, host, identities(checks, ctl))
    assert result["ok"] is True and "compared by content only: ['" in result["seen"] and "etc/broken" in result["seen"], result
