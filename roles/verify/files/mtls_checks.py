# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Security checks of a deployed MCP mTLS endpoint, run on a target host with only python3, curl and openssl.

Run as `python3 mtls_checks.py MODE ...` (the verify role uses ansible.builtin.script with executable).

Every check records what was expected and what was seen; the role asserts on the JSON this prints.
Every negative check (NEGATIVE_CHECKS) first needs its positive twin on the same address: the same request
with the gateway's certificate must get an HTTP answer there. A refusal only counts when the server refuses
at the TLS level after our ClientHello went out over an established TCP connection; a refused connection, a
name that does not resolve or a client that could not even load its certificate is no refusal.

  mtls_checks.py remote --name N --url URL --cert C --key K --ca CA   (URL: the plugin plan's, as in plugins.yaml)
                        [--foreign-cert F --foreign-key FK [--foreign-ca FCA]] [--health-port P]
  mtls_checks.py local  --name N --port 8000
  mtls_checks.py ca-identities FILE...     (on the controller: the CA certificates and keys of the PKI tree)
  mtls_checks.py ca-key --ca-spki SHA256... [--ca-key-digest SHA256]... [--exclude DIR]... [--root /]
  mtls_checks.py gateway-service --unit mcpgateway.service --plugin NAME...
"""

import argparse
import base64
import errno
import hashlib
import json
import os
import re
import socket
import ssl
import stat
import struct
import subprocess
import sys
import time
import warnings
from urllib.parse import urlsplit

TIMEOUT = 10
HEALTH_TIMEOUT = 3
HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH
WRONG_NAME = "name-not-in-sans.invalid"
ANY_SUITE = "DEFAULT:@SECLEVEL=0"
# Every TLS 1.2 suite without AEAD (CBC, RC4, 3DES ...) plus the AEAD ones with RSA key exchange.
WEAK_TLS12_SUITES = "ALL:-AESGCM:-AESCCM:-CHACHA20:-ARIAGCM:kRSA+AESGCM:!aNULL:!eNULL:@SECLEVEL=0"
NEGATIVE_CHECKS = ("no_client_cert_refused", "foreign_ca_cert_refused", "hostname_mismatch_refused",
                   "tls1_1_refused", "weak_tls1_2_suites_refused", "health_not_reachable_remotely")
# The server's TLS refusals: an alert it sent, or the connection it closed after our ClientHello without an
# HTTP answer. The second is no proof on its own, but the plugins' server cannot do better: uvicorn serves TLS
# through asyncio's (or uvloop's) memory-BIO SSL protocol, which closes the transport on a failed handshake
# without sending the alert OpenSSL wrote (seen with uvicorn 0.55 on Python 3.11 and 3.13, both loops: a client
# without a certificate, with a foreign one, offering TLS 1.1 or only weak suites gets a bare EOF). It only
# counts right after the positive twin got an HTTP answer on the same address, so a closed port, a hung
# server (a timeout), a TLS close_notify, a plain HTTP server or a client-side error can never count.
REFUSALS = ("alert", "closed")
ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13)[ _]alert[ _]([a-z0-9_ ]+)", re.I)


def run(cmd, timeout=20, stdin=b""):
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return 124, "timeout"


def curl(url, *extra):
    rc, out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *extra, url])
    return rc, out.strip()[-300:]


def check(name, ok, expected, seen):
    return {"check": name, "ok": bool(ok), "expected": expected, "seen": seen}


def attempt(target, server_name, request, ca, cert=None, key=None, version=None, ciphers=None):
    """One HTTPS request to TARGET (family, sockaddr): no DNS, the server verified against CA for SERVER_NAME.

    Returns (outcome, detail); outcome is one of: client-error (this side could not be set up: nothing was
    sent), no-connection (no TCP connection), verify-failed (this client refused the server's certificate),
    alert (the server sent a TLS alert), closed (the server closed the connection after our ClientHello,
    before any HTTP answer, without an alert), tls-error (this client stopped the handshake), http (an HTTP
    status line came back) or other (a timeout, a TLS close_notify without an answer, not HTTP)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(ca)
        if cert:
            context.load_cert_chain(cert, key, password="")  # an encrypted key fails here instead of prompting
        if ciphers:
            context.set_ciphers(ciphers)
        if version:
            with warnings.catch_warnings():  # TLS 1.1 is deprecated: offering it is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = context.maximum_version = version
    except (OSError, ValueError) as exc:
        return "client-error", f"client-side error (nothing sent): {exc}"
    stage = "TCP connect"
    answer = b""
    try:
        with socket.socket(target[0], socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(target[1])
            stage = "TLS handshake (after our ClientHello)"
            with context.wrap_socket(sock, server_hostname=server_name, suppress_ragged_eofs=False) as tls:
                # With TLS 1.3 the client's handshake ends before the server has checked the client's
                # certificate: its verdict comes with the first read.
                stage = f"{tls.version()} request"
                tls.sendall(request)
                while b"\n" not in answer and len(answer) < 4096:
                    data = tls.recv(4096)
                    if not data:
                        break
                    answer += data
    except ssl.SSLCertVerificationError as exc:
        return "verify-failed", f"verify code {exc.verify_code}: {exc.verify_message}"
    except ssl.SSLError as exc:
        alert = ALERT.search(str(exc))
        if alert:
            return "alert", f"{stage}: the server sent the TLS alert {alert.group(1).strip().lower()}"
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "closed", f"{stage}: the server closed the connection without an alert and without an HTTP answer"
        return "tls-error", f"{stage}: this client stopped the handshake: {exc}"
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
        if stage != "TCP connect":
            return "closed", f"{stage}: the server reset the connection without an HTTP answer ({exc})"
        return "no-connection", f"{stage}: {exc}"
    except OSError as exc:
        return ("no-connection" if stage == "TCP connect" else "other"), f"{stage}: {str(exc) or type(exc).__name__}"
    if answer.startswith(b"HTTP/"):
        return "http", answer.split(b"\r\n")[0].decode("latin-1")
    if not answer:
        return "other", f"{stage}: the server ended the TLS session (close_notify) without an HTTP answer"
    return "other", f"{stage}: no HTTP answer: {answer[:40]!r}"


def connection_refused(target, port):
    """(refused, detail): no TCP connection to PORT at TARGET's address (refused, timed out or rejected)."""
    sockaddr = (target[1][0], port, *target[1][2:])
    with socket.socket(target[0], socket.SOCK_STREAM) as sock:
        sock.settimeout(HEALTH_TIMEOUT)
        try:
            sock.connect(sockaddr)
        except (ConnectionRefusedError, TimeoutError) as exc:
            return True, f"{sockaddr[0]}:{port}: {str(exc) or 'timed out'}"
        except OSError as exc:  # EHOSTUNREACH: a firewall's reject, the host itself answered the twin
            return exc.errno == errno.EHOSTUNREACH, f"{sockaddr[0]}:{port}: {exc}"
    return False, f"{sockaddr[0]}:{port}: connected"


def foreign_problem(args):
    """Why the foreign certificate is no valid client certificate of the foreign CA (None when it is)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(args.foreign_cert, args.foreign_key, password="")
    except (OSError, ValueError) as exc:
        return f"client-side error: the foreign certificate and key do not load together: {exc}"
    if args.foreign_ca:
        rc, out = run(["openssl", "verify", "-CAfile", args.foreign_ca, "-purpose", "sslclient", args.foreign_cert])
        if rc != 0:
            return f"client-side error: the foreign certificate is no client certificate of --foreign-ca: {' '.join(out.split())[-300:]}"
    return None


def remote(args):
    parts = urlsplit(args.url)
    host, port = parts.hostname, parts.port or 443
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    mine = {"cert": args.cert, "key": args.key}
    try:
        targets = list(dict.fromkeys((info[0], info[4]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        resolved = ", ".join(target[1][0] for target in targets)
    except OSError as exc:
        targets, resolved = [], f"{host} does not resolve: {exc}"
    results = [check("name_resolves", targets, f"{host} resolves", resolved)]

    # The positive twin: the first address where the gateway's certificate gets an HTTP answer.
    twin, tried = None, []
    for target in targets:
        outcome, detail = attempt(target, host, request, args.ca, **mine)
        tried.append(f"{target[1][0]}: {detail}")
        if outcome == "http":
            twin = target
            break
    results.append(check("mtls_handshake_with_gateway_cert", twin,
                         f"an HTTP answer over mTLS with the gateway's certificate, the server verified against the CA for {host}",
                         "; ".join(tried) or f"not tried: {resolved}"))

    def on_twin(name, expected, accept, control=None, server_name=host, **options):
        """A check on the address where the twin (and CONTROL, a check record) succeeded, with the same client."""
        if not twin:
            return check(name, False, expected, "not tried: mtls_handshake_with_gateway_cert failed")
        if control and not control["ok"]:
            return check(name, False, expected, f"not tried: its control {control['check']} failed")
        outcome, detail = attempt(twin, server_name, request, args.ca, **options)
        return check(name, accept(outcome, detail), expected, f"{twin[1][0]}:{port}: {detail}")

    def refused(outcome, _detail):
        return outcome in REFUSALS

    server_refusal = "a TLS alert from the server, or the server closing the connection after our ClientHello without an HTTP answer"
    results.append(on_twin("no_client_cert_refused", f"{server_refusal}, for a client without a certificate", refused))
    if args.foreign_cert:
        expected = f"{server_refusal}, for a valid client certificate of another CA"
        problem = foreign_problem(args)
        results.append(check("foreign_ca_cert_refused", False, expected, problem) if problem else
                       on_twin("foreign_ca_cert_refused", expected, refused, cert=args.foreign_cert, key=args.foreign_key))
    results.append(on_twin("hostname_mismatch_refused",
                           f"this client refuses the server's certificate for {WRONG_NAME} (verify code {HOSTNAME_MISMATCH}, "
                           "hostname mismatch) on the address where the right name succeeds",
                           lambda outcome, detail: outcome == "verify-failed" and detail.startswith(f"verify code {HOSTNAME_MISMATCH}:"),
                           server_name=WRONG_NAME, **mine))
    control = on_twin("tls1_2_accepted", "an HTTP answer over TLS 1.2 (control for the TLS 1.1 and weak suite checks)",
                      lambda outcome, _detail: outcome == "http", version=ssl.TLSVersion.TLSv1_2, ciphers=ANY_SUITE, **mine)
    results.append(control)
    results.append(on_twin("tls1_1_refused", f"{server_refusal}, for a TLS 1.1 ClientHello (TLS 1.2 control succeeds)", refused,
                           control, version=ssl.TLSVersion.TLSv1_1, ciphers=ANY_SUITE, **mine))
    results.append(on_twin("weak_tls1_2_suites_refused",
                           f"{server_refusal}, for a TLS 1.2 ClientHello offering only CBC and RSA-key-exchange suites "
                           "(TLS 1.2 control succeeds)", refused, control, version=ssl.TLSVersion.TLSv1_2, ciphers=WEAK_TLS12_SUITES, **mine))

    health = args.health_port or port + 1000
    expected = f"no TCP connection to port {health} (refused or timed out) at the address where the mTLS request succeeds"
    if twin:
        closed, seen = connection_refused(twin, health)
        results.append(check("health_not_reachable_remotely", closed, expected, seen))
    else:
        results.append(check("health_not_reachable_remotely", False, expected, "not tried: mtls_handshake_with_gateway_cert failed"))
    return results


def listening():
    rc, out = run(["ss", "-ltnH"])
    sockets = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            addr, port = fields[3].rsplit(":", 1)
            sockets.append((addr.strip("[]"), int(port)))
    return sockets


def local(args):
    results = []
    health = args.health_port
    rc, out = curl(f"http://127.0.0.1:{health}/health")
    results.append(check("health_answers_on_loopback", rc == 0 and out.endswith("200"),
                         f"HTTP 200 from http://127.0.0.1:{health}/health", f"exit {rc}: {out}"))
    socks = listening()
    health_addrs = sorted({a for a, p in socks if p == health})
    main_addrs = sorted({a for a, p in socks if p == args.port})
    results.append(check("health_bound_to_loopback_only", health_addrs and all(a.startswith("127.") or a == "::1" for a in health_addrs),
                         f"port {health} listens on loopback only", f"{health_addrs}"))
    results.append(check("mtls_port_listening", bool(main_addrs), f"port {args.port} listens", f"{main_addrs}"))
    return results


KEY_MARK = b"PRIVATE KEY-----"
KEY_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
# A PEM private key block: its body holds no run of five dashes (an unterminated BEGIN cannot swallow a key).
KEY_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[^-]|-(?!----))*-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----")
CHUNK = 1 << 20
OVERLAP = 128  # longer than any BEGIN line: a marker across two chunks is found
MAX_BLOCK = 1 << 20  # no PEM private key is near this long: an unterminated BEGIN is dropped after it


def key_body_digests(data):
    """sha256 of the base64 body of each PEM private key in data (headers and line breaks ignored), so a
    copy of a key is recognised whatever its line endings and even when it is encrypted."""
    digests = []
    for body in re.findall(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----", data, re.S):
        lines = [line.strip() for line in body.splitlines() if line.strip() and b":" not in line]
        digests.append(hashlib.sha256(b"".join(lines)).hexdigest())
    return digests


def key_blocks(handle, counter):
    """Every PEM private key block of an open file of any size, read in chunks (COUNTER[0] += bytes read)."""
    buf = b""
    while True:
        data = handle.read(CHUNK)
        counter[0] += len(data)
        buf += data
        if KEY_MARK not in buf:
            if not data:
                return
            buf = buf[-OVERLAP:]
            continue
        end = 0
        for match in KEY_BLOCK.finditer(buf):
            yield match.group(0)
            end = match.end()
        if not data:
            return
        buf = buf[end:]
        begin = KEY_BEGIN.search(buf)
        buf = buf[begin.start():] if begin and len(buf) - begin.start() <= MAX_BLOCK else buf[-OVERLAP:]


OPENSSH_MAGIC = b"openssh-key-v1\x00"
EC_CURVES = {b"nistp256": "06082a8648ce3d030107", b"nistp384": "06052b81040022", b"nistp521": "06052b81040023"}


def _der(tag, content):
    size = len(content)
    head = bytes([size]) if size < 0x80 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + head + content


def _ssh_fields(data, count, pos=0):
    """COUNT length-prefixed strings of an SSH wire-format buffer from POS, and the position after them."""
    fields = []
    while len(fields) < count:
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 4 + size > len(data):
            raise ValueError("truncated")
        fields.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return fields, pos


def ssh_blob_spki(blob):
    """The DER SubjectPublicKeyInfo of an SSH public key blob (RSA, ECDSA, Ed25519), None for other types."""
    (kind,), _pos = _ssh_fields(blob, 1)
    if kind == b"ssh-rsa":
        _kind, e, n = _ssh_fields(blob, 3)[0]  # SSH mpints are DER INTEGER contents already (minimal, signed)
        key = _der(0x30, _der(0x02, n) + _der(0x02, e))
        return _der(0x30, bytes.fromhex("300d06092a864886f70d0101010500") + _der(0x03, b"\x00" + key))
    if kind.startswith(b"ecdsa-sha2-"):
        _kind, curve, point = _ssh_fields(blob, 3)[0]
        if curve not in EC_CURVES:
            return None
        algorithm = _der(0x30, bytes.fromhex("06072a8648ce3d0201" + EC_CURVES[curve]))
        return _der(0x30, algorithm + _der(0x03, b"\x00" + point))
    if kind == b"ssh-ed25519":
        _kind, key = _ssh_fields(blob, 2)[0]
        return _der(0x30, bytes.fromhex("300506032b6570") + _der(0x03, b"\x00" + key))
    return None


def openssh_public_key_digests(block):
    """sha256 of the SubjectPublicKeyInfo of each key in an OpenSSH-format private key block ("BEGIN OPENSSH
    PRIVATE KEY", what ssh-keygen writes; also a CA key converted to it). The format keeps the public keys in
    clear even when the private part is encrypted, so encrypted keys are compared too. None when unreadable."""
    body = re.search(rb"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", block, re.S)
    try:
        data = base64.b64decode(b"".join(body.group(1).split()), validate=True)
        if not data.startswith(OPENSSH_MAGIC):
            return None
        _header, pos = _ssh_fields(data, 3, len(OPENSSH_MAGIC))  # cipher, kdf, kdf options
        (count,) = struct.unpack(">I", data[pos:pos + 4])
        blobs, _pos = _ssh_fields(data, count, pos + 4)
        spkis = [ssh_blob_spki(blob) for blob in blobs]
    except (AttributeError, ValueError, struct.error, KeyError):
        return None
    return [hashlib.sha256(spki).hexdigest() for spki in spkis if spki] or None


def public_key_digest(block):
    """sha256 of the DER SubjectPublicKeyInfo of an unencrypted PEM private key (None when openssl cannot read it)."""
    proc = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER", "-passin", "pass:"], input=block,
                          capture_output=True, timeout=20, check=False)
    return hashlib.sha256(proc.stdout).hexdigest() if proc.returncode == 0 and proc.stdout else None


def ca_identities(args):
    """On the controller: the SPKI sha256 of every certificate and the body digest of every private key in the
    given files (ca/ca.crt, ca/next/, ca/retired/*/: every CA whose key must not be on a target)."""
    spki, digests = set(), set()
    for path in args.paths:
        with open(path, "rb") as handle:
            data = handle.read()
        digests.update(key_body_digests(data))
        for cert in re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", data, re.S):
            rc, pem = run(["openssl", "x509", "-noout", "-pubkey"], stdin=cert)
            body = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", pem, re.S)
            if rc != 0 or not body:
                raise SystemExit(f"{path}: a certificate openssl cannot read: {pem.strip()[-200:]}")
            spki.add(hashlib.sha256(base64.b64decode(body.group(1))).hexdigest())
    return {"spki": sorted(spki), "key_digests": sorted(digests)}


# Pseudo file systems: the kernel's views of itself (processes, devices, cgroups, tracing, firmware ...).
# They hold no regular file a key could have been written to, and some of their files never end
# (/proc/kcore) or block. devtmpfs and every tmpfs (/run, /tmp, /dev/shm) are searched: they can hold files.
PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore",
             "bpf", "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "nsfs", "rpc_pipefs",
             "selinuxfs", "nfsd"}


def pseudo_devices():
    """The st_dev of every pseudo file system mounted here, and their types (from /proc/self/mountinfo)."""
    devices, kinds = set(), set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            left, _sep, right = line.partition(" - ")
            kind = right.split()[0] if right.split() else ""
            if kind in PSEUDO_FS:
                major, minor = left.split()[2].split(":")
                devices.add(os.makedev(int(major), int(minor)))
                kinds.add(kind)
    return devices, sorted(kinds)


def regular_files(root, skip_devices, excluded, problems):
    """(path, stat) of every regular file below ROOT, and of every file a symlink below ROOT points to.

    Folders on a pseudo file system or in EXCLUDED are not entered; symlinks to folders are not followed (no
    loops; walking from / reaches their targets anyway). A symlink to a file is followed wherever it points:
    that is how a copy outside ROOT or outside an exclusion is found. Only regular files are returned: a
    fifo, socket or device is never opened (a fifo would block, a device could act)."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror}")
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    info = os.stat(entry.path)
                    if stat.S_ISREG(info.st_mode):
                        yield entry.path, info
                elif stat.S_ISDIR(info.st_mode):
                    if info.st_dev not in skip_devices and os.path.normpath(entry.path) not in excluded:
                        folders.append(entry.path)
                elif stat.S_ISREG(info.st_mode):
                    yield entry.path, info
            except OSError:
                continue  # vanished, or a dangling symlink


def open_regular(path, info):
    """PATH opened for reading, if it is still the regular file INFO describes (None otherwise)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))  # a search leaves no atime behind
    except PermissionError:
        fd = os.open(path, flags)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb", buffering=0)


def listed(paths, limit=20):
    return f"{paths[:limit]}" + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def ca_key(args):
    """Look for a private key of any CA of the controller (current, incoming, retired) in every file of the host.

    Walks the whole file system from --root (default /) but the pseudo file systems (PSEUDO_FS: /proc, /sys,
    cgroups, devpts ..., recognised by device number, so a symlink into them is not followed either) and the
    --exclude folders; every regular file is read to its end, whatever its size. Each PEM private key block is
    compared by content with the controller's CA keys (--ca-key-digest; also finds encrypted copies) and,
    when unencrypted or in OpenSSH format (whose public keys are in clear), by public key with the
    controller's CA certificates (--ca-spki)."""
    started = time.monotonic()
    spki, digests = set(args.ca_spki), set(args.ca_key_digest)
    if not spki:
        return [check("no_ca_private_key_on_host", False, "the CA public keys to compare with (--ca-spki)",
                      "none given: the controller holds no CA certificate below ca/")]
    try:
        skip_devices, kinds = pseudo_devices()
    except OSError as exc:
        return [check("no_ca_private_key_on_host", False, "a search of the whole file system", f"/proc/self/mountinfo: {exc}")]
    excluded = {os.path.normpath(path) for path in args.exclude}
    found, encrypted, unparsed, unreadable, problems, seen = [], [], [], [], [], set()
    files, keys, counter = 0, 0, [0]
    for path, info in regular_files(args.root, skip_devices, excluded, problems):
        if info.st_dev in skip_devices or (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            handle = open_regular(path, info)
            if handle is None:
                continue
            with handle:
                files += 1
                for block in key_blocks(handle, counter):
                    keys += 1
                    if digests.intersection(key_body_digests(block)):
                        found.append(path)
                    elif b"BEGIN OPENSSH PRIVATE KEY" in block:
                        publics = openssh_public_key_digests(block)
                        if publics is None:
                            unparsed.append(path)
                        elif spki.intersection(publics):
                            found.append(path)
                    elif b"ENCRYPTED" in block:
                        encrypted.append(path)
                    else:
                        public = public_key_digest(block)
                        if public in spki:
                            found.append(path)
                        elif public is None:
                            unparsed.append(path)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
    found = sorted(set(found))
    seen_text = (f"scanned {files} files ({counter[0] / 2**20:.0f} MiB) below {args.root} in {time.monotonic() - started:.1f} s, "
                 f"{keys} private key(s); compared with {len(spki)} CA public key(s) and {len(digests)} CA key digest(s); "
                 f"CA key found in {found}; encrypted, compared by content only: {listed(sorted(set(encrypted)))}; "
                 f"not readable by openssl, compared by content only: {listed(sorted(set(unparsed)))}; "
                 f"pseudo file systems skipped: {kinds}; excluded: {sorted(excluded)}; "
                 f"unreadable: {listed(sorted(unreadable + problems))}")
    return [check("no_ca_private_key_on_host", not found, "no file holds a private key of a CA", seen_text)]


def gateway_service(args):
    """The gateway unit is active and its current run registered every expected plugin."""
    rc, state = run(["systemctl", "is-active", args.unit])
    results = [check("gateway_service_active", state.strip() == "active", f"{args.unit} active", state.strip())]
    rc, invocation = run(["systemctl", "show", "-p", "InvocationID", "--value", args.unit])
    rc, log = run(["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_INVOCATION_ID={invocation.strip()}"], timeout=30)
    registered = set(re.findall(r"Registered plugin: (\S+)", log))
    for name in args.plugin:
        results.append(check("gateway_registered_plugin", name in registered,
                             f"'Registered plugin: {name}' in this run of {args.unit}",
                             "registered" if name in registered else f"not registered (saw {sorted(registered)})"))
    return results


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("remote")
    r.add_argument("--name", required=True)
    r.add_argument("--url", required=True)
    r.add_argument("--cert", required=True)
    r.add_argument("--key", required=True)
    r.add_argument("--ca", required=True)
    r.add_argument("--foreign-cert")
    r.add_argument("--foreign-key")
    r.add_argument("--foreign-ca", help="the foreign CA: the foreign certificate must be a valid client certificate of it")
    r.add_argument("--health-port", type=int, help="the plugin plan's health port (default: the URL's port + 1000)")
    loc = sub.add_parser("local")
    loc.add_argument("--name", required=True)
    loc.add_argument("--port", type=int, required=True)
    loc.add_argument("--health-port", type=int, required=True, help="the plugin plan's health port")
    g = sub.add_parser("gateway-service")
    g.add_argument("--unit", required=True)
    g.add_argument("--plugin", action="append", default=[])
    c = sub.add_parser("ca-key")
    c.add_argument("--ca-spki", action="append", default=[], help="sha256 of a CA certificate's public key (ca-identities)")
    c.add_argument("--ca-key-digest", action="append", default=[], help="body digest of a CA key (ca-identities)")
    c.add_argument("--exclude", action="append", default=[], help="a folder not to search")
    c.add_argument("--root", default="/", help="where the search starts (tests)")
    d = sub.add_parser("ca-identities")
    d.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.mode == "remote" and bool(args.foreign_cert) != bool(args.foreign_key):
        parser.error("--foreign-cert and --foreign-key go together")
    if args.mode == "ca-identities":
        print(json.dumps(ca_identities(args)))
        return 0
    results = {"remote": remote, "local": local, "ca-key": ca_key, "gateway-service": gateway_service}[args.mode](args)
    for item in results:
        item["target"] = getattr(args, "name", "host")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
