"""roles/verify/files/mtls_checks.py: the CA key search finds plain and encrypted copies of the CA key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tree(tmp_path):
    """A CA (encrypted key) on the 'controller' and a 'host' folder to search."""
    ctl, target = tmp_path / "ctl", tmp_path / "host"
    ctl.mkdir()
    target.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-subj", "/CN=t-ca", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.crt", "-passout", "pass:ca-secret", cwd=ctl)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "leaf.key", cwd=target)
    return ctl, target


def search(checks, tree, *digests):
    ctl, target = tree
    args = ["ca-key", "--ca-cert", str(ctl / "ca.crt")]
    for digest in digests:
        args += ["--ca-key-digest", digest]
    run = subprocess.run([sys.executable, checks.__file__, *args, str(target)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)[0]


def digests(checks, tree):
    run = subprocess.run([sys.executable, checks.__file__, "key-digests", str(tree[0] / "ca.key")],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def test_a_host_without_the_ca_key_passes(checks, tree):
    result = search(checks, tree, *digests(checks, tree))
    assert result["ok"] is True and "scanned 1 private keys" in result["seen"], result


def test_an_encrypted_copy_is_found_by_content(checks, tree):
    ctl, target = tree
    (target / "sub").mkdir()
    # The copy with CRLF line endings: the same key all the same.
    (target / "sub/backup.pem").write_bytes((ctl / "ca.key").read_bytes().replace(b"\n", b"\r\n"))
    found = search(checks, tree, *digests(checks, tree))
    assert found["ok"] is False and "backup.pem" in found["seen"], found
    # Without the controller's digests an encrypted copy cannot be compared: the check says so.
    blind = search(checks, tree)
    assert blind["ok"] is True and "backup.pem" in blind["seen"] and "compared by content only" in blind["seen"], blind


def test_a_decrypted_copy_is_found_by_public_key(checks, tree):
    ctl, target = tree
    openssl("pkey", "-in", "ca.key", "-passin", "pass:ca-secret", "-out", str(target / "plain.key"), cwd=ctl)
    found = search(checks, tree)
    assert found["ok"] is False and "plain.key" in found["seen"], found


def test_key_body_digests_ignore_headers_and_line_breaks(checks):
    body = b"QUJD\nREVG\n"
    one = checks.key_body_digests(b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n")
    two = checks.key_body_digests(b"x\r\n-----BEGIN PRIVATE KEY-----\r\nQUJDREVG\r\n-----END PRIVATE KEY-----")
    assert one == two and len(one) == 1
    assert checks.key_body_digests(b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----") == []
