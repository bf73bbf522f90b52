# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Security checks of a deployed MCP mTLS endpoint, run on a target host with only python3, curl and openssl.

Run as `python3 mtls_checks.py MODE ...` (the verify role uses ansible.builtin.script with executable).

Every check records what was expected and what was seen; the role asserts on the JSON this prints.
A refusal only counts when it is a TLS refusal by the server (not a refused connection or a client that
would not even offer the protocol), so a down or misconfigured server cannot make a negative check pass.

  mtls_checks.py remote --name N --url https://mcp-plugin-N:8000/mcp --cert C --key K --ca CA [--foreign-cert F --foreign-key FK]
  mtls_checks.py local  --name N --port 8000
  mtls_checks.py ca-key --ca-cert /path/ca.crt(on this host) [--ca-key-digest SHA256]... DIR...
  mtls_checks.py key-digests KEYFILE...   (on the controller: the digests for --ca-key-digest)
  mtls_checks.py gateway-service --unit mcpgateway.service --plugin NAME...
"""

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from urllib.parse import urlsplit

CURL_TLS_FAILURES = {35, 56, 58, 16}  # handshake failed, recv failure, client cert problem, HTTP/2 framing after alert
CURL_NOT_CONNECTED = {6, 7, 28}


def run(cmd, timeout=20, stdin=b""):
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return 124, "timeout"


def curl(url, *extra):
    rc, out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                   "--tlsv1.2", *extra, url])
    return rc, out.strip()[-300:]


def check(name, ok, expected, seen):
    return {"check": name, "ok": bool(ok), "expected": expected, "seen": seen}


# Every TLS 1.2 suite without AEAD (CBC, RC4, 3DES ...) plus the AEAD ones with RSA key exchange.
WEAK_TLS12_SUITES = "ALL:-AESGCM:-AESCCM:-CHACHA20:-ARIAGCM:kRSA+AESGCM:!aNULL:!eNULL:@SECLEVEL=0"


def remote(args):
    parts = urlsplit(args.url)
    host, port = parts.hostname, parts.port or 443
    results = []
    tls = ["--cacert", args.ca]
    mine = ["--cert", args.cert, "--key", args.key]

    rc, out = curl(args.url, *tls, *mine)
    results.append(check("mtls_handshake_with_gateway_cert", rc == 0 and out[-3:].isdigit(),
                         "curl exit 0 and an HTTP status over mTLS, hostname verified", f"exit {rc}: {out}"))
    reachable = rc == 0

    rc, out = curl(args.url, *tls)
    results.append(check("no_client_cert_refused", reachable and rc in CURL_TLS_FAILURES,
                         f"TLS failure (curl exit in {sorted(CURL_TLS_FAILURES)}) while the server is up",
                         f"exit {rc}: {out}"))

    if args.foreign_cert:
        rc, out = curl(args.url, *tls, "--cert", args.foreign_cert, "--key", args.foreign_key)
        results.append(check("foreign_ca_cert_refused", reachable and rc in CURL_TLS_FAILURES,
                             "TLS failure for a client certificate from another CA", f"exit {rc}: {out}"))

    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        address = None
        results.append(check("name_resolves", False, f"{host} resolves", str(exc)))
    if address:
        wrong = "name-not-in-sans.invalid"
        rc, out = curl(f"https://{wrong}:{port}{parts.path}", *tls, *mine, "--resolve", f"{wrong}:{port}:{address}")
        results.append(check("hostname_mismatch_refused", reachable and rc == 60,
                             "curl exit 60 (server certificate not valid for that name)", f"exit {rc}: {out}"))

    base = ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", host, "-CAfile", args.ca,
            "-cert", args.cert, "-key", args.key, "-cipher", "DEFAULT:@SECLEVEL=0"]
    rc12, out12 = run(base + ["-tls1_2", "-verify_return_error"], stdin=b"Q\n")
    results.append(check("tls1_2_accepted", rc12 == 0 and "TLSv1.2" in out12,
                         "a TLS 1.2 handshake succeeds (control for the TLS 1.1 check)", f"exit {rc12}"))
    rc11, out11 = run(base + ["-tls1_1", "-msg"], stdin=b"Q\n")
    # -msg shows the ClientHello really went out as TLS 1.1 (OpenSSL 3 refuses to offer it at the default
    # security level); "Cipher is (NONE)" shows no session was established. The TLS 1.2 control above,
    # with the same client, shows the server was up and would talk to this client.
    offered = ">>> TLS 1.1, Handshake" in out11 and "ClientHello" in out11
    refused = rc11 != 0 and "Cipher is (NONE)" in out11
    results.append(check("tls1_1_refused", offered and refused and rc12 == 0,
                         "a TLS 1.1 ClientHello goes out and no session is established (TLS 1.2 control succeeds)",
                         f"offered={offered} exit {rc11}: " + " | ".join(
                             line for line in out11.splitlines() if "error" in line.lower() or "Cipher is" in line)[:300]))

    # TLS 1.2 offering only suites without forward secrecy or without AEAD (CBC, RSA key exchange):
    # the server must refuse them all (the TLS 1.2 control above shows it talks to this client).
    weak = base[:-1] + [WEAK_TLS12_SUITES, "-tls1_2", "-msg"]
    rcw, outw = run(weak, stdin=b"Q\n")
    offered = ">>> TLS 1.2, Handshake" in outw and "ClientHello" in outw
    refused = rcw != 0 and "Cipher is (NONE)" in outw
    results.append(check("weak_tls1_2_suites_refused", offered and refused and rc12 == 0,
                         "a TLS 1.2 ClientHello offering only CBC and RSA-key-exchange suites gets no session "
                         "(TLS 1.2 control succeeds)",
                         f"offered={offered} exit {rcw}: " + " | ".join(
                             line for line in outw.splitlines() if "Cipher is" in line or "Cipher    :" in line)[:300]))

    health = args.health_port or port + 1000
    rc, out = curl(f"http://{host}:{health}/health")
    results.append(check("health_not_reachable_remotely", rc in CURL_NOT_CONNECTED,
                         f"no connection to {host}:{health} from this host", f"exit {rc}: {out}"))
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
    health = args.port + 1000
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


def key_body_digests(data):
    """sha256 of the base64 body of each PEM private key in data (headers and line breaks ignored), so a
    copy of a key is recognised whatever its line endings and even when it is encrypted."""
    digests = []
    for body in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END [A-Z ]*PRIVATE KEY-----", data, re.S):
        lines = [line.strip() for line in body.splitlines() if line.strip() and b":" not in line]
        digests.append(hashlib.sha256(b"".join(lines)).hexdigest())
    return digests


def key_digests(args):
    """The key body digests of the given files (run on the controller for the CA keys)."""
    out = []
    for path in args.paths:
        with open(path, "rb") as handle:
            out.extend(key_body_digests(handle.read()))
    return out


def ca_key(args):
    """Look for the CA's private key: any PEM private key on the host whose public key is the CA's, or
    whose body is that of a CA key on the controller (--ca-key-digest; this also finds encrypted copies)."""
    rc, ca_pub = run(["openssl", "x509", "-in", args.ca_cert, "-noout", "-pubkey"])
    if rc != 0:
        return [check("ca_certificate_readable", False, f"{args.ca_cert} parses", ca_pub[:200])]
    known = set(args.ca_key_digest or [])
    found, scanned, encrypted = [], 0, []
    for top in args.dirs:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d)) and d not in ("proc", "sys")]
            for name in files:
                path = os.path.join(root, name)
                try:
                    if os.path.islink(path) or os.path.getsize(path) > 65536:
                        continue
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    continue
                if b"PRIVATE KEY-----" not in data:
                    continue
                scanned += 1
                if known.intersection(key_body_digests(data)):
                    found.append(path)
                    continue
                if b"ENCRYPTED" in data:
                    encrypted.append(path)
                    continue
                rc, pub = run(["openssl", "pkey", "-in", path, "-pubout", "-passin", "pass:"])
                if rc == 0 and pub.strip() == ca_pub.strip():
                    found.append(path)
    return [check("no_ca_private_key_on_host", not found, "no file holds the CA private key",
                  f"scanned {scanned} private keys; CA key found in {found}; encrypted, compared by content only "
                  f"({len(known)} CA key(s) known): {encrypted}")]


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
    r.add_argument("--health-port", type=int)
    loc = sub.add_parser("local")
    loc.add_argument("--name", required=True)
    loc.add_argument("--port", type=int, required=True)
    g = sub.add_parser("gateway-service")
    g.add_argument("--unit", required=True)
    g.add_argument("--plugin", action="append", default=[])
    c = sub.add_parser("ca-key")
    c.add_argument("--ca-cert", required=True)
    c.add_argument("--ca-key-digest", action="append", default=[])
    c.add_argument("dirs", nargs="+")
    d = sub.add_parser("key-digests")
    d.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.mode == "key-digests":
        print(json.dumps(key_digests(args)))
        return
    results = {"remote": remote, "local": local, "ca-key": ca_key, "gateway-service": gateway_service}[args.mode](args)
    for item in results:
        item["target"] = getattr(args, "name", "host")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
