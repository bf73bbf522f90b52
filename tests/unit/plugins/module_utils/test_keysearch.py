# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/_keysearch.py: the search for CA private keys in a whole (temporary) file system tree and the CA
identities it compares with, through module verify_host (options ca_key_search and ca_files) as Ansible runs it;
its pure functions directly."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._keysearch import (
    CHUNK, key_blocks, key_body_digests, openssh_public_key_digests, pseudo_devices)

from test_tlscheck import make_ca, openssl


# --------------------------------------------------------------------------------------- ca_key_search: the search

@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    """The controller's CA folder during a rotation: current, incoming (next) and a retired CA, keys encrypted."""
    ca = tmp_path_factory.mktemp("ctl") / "ca"
    for folder in (ca, ca / "next", ca / "retired" / "20250101T000000Z"):
        make_ca(folder, folder.name, "-passout", "pass:ca-secret")
    return ca


def identities(verify_host, ctl):
    """What role verify computes on the controller: verify_host's ca_files over every ca.crt and ca.key below ca/."""
    paths = sorted(str(path) for pattern in ("**/ca.crt", "**/ca.key") for path in ctl.glob(pattern))
    result = verify_host(ca_files=paths)
    assert "msg" not in result and result["checks"] == [], result
    found = result["ca_identities"]
    assert len(found["spki"]) == 3 and len(found["key_digests"]) == 3, found
    return found


def search(verify_host, root, ids, exclude=(), digests=True):
    """verify_host's ca_key_search below ROOT with the identities IDS: its one record."""
    result = verify_host(ca_key_search={"spki": ids["spki"], "key_digests": ids["key_digests"] if digests else [],
                                        "exclude": list(exclude), "root": str(root)})
    assert "msg" not in result, result
    (record,) = result["checks"]
    assert record["check"] == "no_ca_private_key_on_host" and record["target"] == "host", record
    return record


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


def test_a_host_without_the_ca_key_passes_and_reports_counts(verify_host, ctl, host):
    result = search(verify_host, host, identities(verify_host, ctl))
    assert result["ok"] is True, result
    assert result["seen"].startswith(f"scanned 2 files (0 MiB) below {host} in "), result
    assert "1 private key(s); compared with 3 CA public key(s) and 3 CA key digest(s)" in result["seen"], result


def test_an_encrypted_copy_is_found_by_content(verify_host, ctl, host):
    # The copy with CRLF line endings: the same key all the same.
    write(host / "sub/backup.pem", (ctl / "ca.key").read_bytes().replace(b"\n", b"\r\n"))
    found = search(verify_host, host, identities(verify_host, ctl))
    assert found["ok"] is False and "backup.pem" in found["seen"], found
    # Without the controller's digests an encrypted copy cannot be compared: the check says so.
    blind = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert blind["ok"] is True and "encrypted, compared by content only: ['" in blind["seen"] and "backup.pem" in blind["seen"], blind


def test_a_decrypted_copy_is_found_by_public_key(verify_host, ctl, host):
    write(host / "plain.key", plain(ctl))
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and "plain.key" in found["seen"], found


def test_a_copy_in_a_deep_folder_outside_the_old_list_is_found(verify_host, ctl, host):
    write(host / "var/cache/app/a/b/c/d/e/f/notes.pem", plain(ctl))
    found = search(verify_host, host, identities(verify_host, ctl))
    assert found["ok"] is False and "var/cache/app/a/b/c/d/e/f/notes.pem" in found["seen"], found


def test_a_key_after_100_kib_of_text_is_found(verify_host, ctl, host):
    write(host / "srv/log.txt", b"lorem ipsum dolor\n" * 6000 + plain(ctl))
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and "srv/log.txt" in found["seen"], found


def test_the_ca_key_as_second_key_of_a_file_is_found(verify_host, ctl, host, tmp_path):
    write(host / "etc/bundle.pem", other_key(tmp_path) + plain(ctl))
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and "etc/bundle.pem" in found["seen"], found


def test_a_symlink_to_a_copy_outside_the_root_is_followed(verify_host, ctl, host, tmp_path):
    write(tmp_path / "elsewhere/ca.pem", plain(ctl))
    (host / "etc/tls/link.pem").symlink_to(tmp_path / "elsewhere/ca.pem")
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and "etc/tls/link.pem" in found["seen"], found


def test_the_incoming_and_a_retired_ca_key_are_found(verify_host, ctl, host):
    write(host / "opt/a/next.pem", plain(ctl / "next"))
    write(host / "home/b/old.pem", plain(ctl / "retired/20250101T000000Z"))
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and "opt/a/next.pem" in found["seen"] and "home/b/old.pem" in found["seen"], found


def test_a_fifo_and_a_folder_loop_do_not_block(verify_host, ctl, host):
    os.mkfifo(host / "etc/fifo")
    (host / "etc/fifo-link").symlink_to(host / "etc/fifo")
    (host / "etc/loop").symlink_to(host)
    result = search(verify_host, host, identities(verify_host, ctl))
    assert result["ok"] is True and result["seen"].startswith("scanned 2 files"), result


def test_pseudo_file_systems_are_skipped(verify_host, ctl, host):
    devices, kinds = pseudo_devices()
    assert os.stat("/proc").st_dev in devices and "proc" in kinds
    (host / "etc/status").symlink_to("/proc/self/status")  # a regular file, on proc
    result = search(verify_host, host, identities(verify_host, ctl))
    assert result["ok"] is True and result["seen"].startswith("scanned 2 files") and "'proc'" in result["seen"], result


def test_an_excluded_folder_is_not_searched_and_reported(verify_host, ctl, host):
    write(host / "data/ca.pem", plain(ctl))
    result = search(verify_host, host, identities(verify_host, ctl), exclude=[str(host / "data")])
    assert result["ok"] is True and f"excluded: ['{host / 'data'}']" in result["seen"], result
    assert search(verify_host, host, identities(verify_host, ctl))["ok"] is False


def test_without_ca_public_keys_the_search_fails(verify_host, host):
    result = search(verify_host, host, {"spki": [], "key_digests": []})
    assert result["ok"] is False and result["expected"] == "the CA public keys to compare with (ca_key_search.spki)", result
    assert result["seen"].startswith("none given"), result


@pytest.mark.parametrize("offset", [0, 1, 20, 37, 60, 100, 127, 128, 3000])
def test_key_blocks_finds_a_key_across_a_chunk_boundary(verify_host, ctl, offset):
    key = plain(ctl)
    data = b"x" * (CHUNK - offset) + key + b"tail\n"
    counter = [0]
    assert list(key_blocks(io.BytesIO(data), counter)) == [key.strip()]
    assert counter[0] == len(data)


def test_ca_identities_of_a_rotation_bundle(verify_host, ctl, tmp_path):
    (tmp_path / "bundle.crt").write_bytes((ctl / "ca.crt").read_bytes() + (ctl / "next/ca.crt").read_bytes())
    result = verify_host(ca_files=[str(tmp_path / "bundle.crt")])
    expected = sorted(hashlib.sha256(openssl("pkey", "-pubin", "-outform", "DER", cwd=tmp_path, stdin=openssl(
        "x509", "-noout", "-pubkey", "-in", str(folder / "ca.crt"), cwd=tmp_path))).hexdigest() for folder in (ctl, ctl / "next"))
    assert result["ca_identities"] == {"spki": expected, "key_digests": []}


def test_key_body_digests_ignore_headers_and_line_breaks():
    body = b"QUJD\nREVG\n"
    one = key_body_digests(b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n")
    two = key_body_digests(b"x\r\n-----BEGIN PRIVATE KEY-----\r\nQUJDREVG\r\n-----END PRIVATE KEY-----")
    assert one == two and len(one) == 1
    assert key_body_digests(b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----") == []


# --------------------------------------------------------------------------------------- ca_key_search: OpenSSH-format keys

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
def test_openssh_public_keys_match_their_subject_public_key_info(kind, tmp_path):
    from cryptography.hazmat.primitives import serialization

    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / "k")], check=True)
    block = (tmp_path / "k").read_bytes()
    public = serialization.load_ssh_public_key((tmp_path / "k.pub").read_bytes())
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert openssh_public_key_digests(block) == [hashlib.sha256(spki).hexdigest()]


def test_a_ca_key_converted_to_openssh_format_is_found_even_encrypted(verify_host, ctl, host, tmp_path):
    write(host / "home/admin/.ssh/id_ecdsa", _openssh(plain(ctl), tmp_path))
    write(host / "root/backup/ca_ssh", _openssh(plain(ctl / "next"), tmp_path, password="other secret"))
    found = search(verify_host, host, identities(verify_host, ctl), digests=False)
    assert found["ok"] is False and ".ssh/id_ecdsa" in found["seen"] and "backup/ca_ssh" in found["seen"], found


def test_ssh_host_keys_are_compared_and_pass(verify_host, ctl, host):
    for kind in ("rsa", "ecdsa", "ed25519"):
        path = host / f"etc/ssh/ssh_host_{kind}_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    result = search(verify_host, host, identities(verify_host, ctl))
    assert result["ok"] is True and "4 private key(s)" in result["seen"], result
    assert "not readable by openssl, compared by content only: []" in result["seen"], result


def test_an_unreadable_openssh_block_is_reported_as_compared_by_content_only(verify_host, ctl, host):
    write(host / "etc/broken", b"-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n")
    result = search(verify_host, host, identities(verify_host, ctl))
    assert result["ok"] is True and "compared by content only: ['" in result["seen"] and "etc/broken" in result["seen"], result
