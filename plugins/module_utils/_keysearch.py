# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_util is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The search for a CA's private key on a target host (module verify_host), and the CA identities it compares
with, computed on the controller from its PKI tree."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import struct
import subprocess
import time

from ansible_collections.mcpgateway.mtls.plugins.module_utils._tlscheck import check, run

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


def ca_identities(paths):
    """On the controller: the SPKI sha256 of every certificate and the body digest of every private key in
    PATHS (ca/ca.crt, ca/next/, ca/retired/*/: every CA whose key must not be on a target).
    Raises ValueError naming a certificate openssl cannot read."""
    spki, digests = set(), set()
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        digests.update(key_body_digests(data))
        for cert in re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", data, re.S):
            rc, pem = run(["openssl", "x509", "-noout", "-pubkey"], stdin=cert)
            body = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", pem, re.S)
            if rc != 0 or not body:
                raise ValueError(f"{path}: a certificate openssl cannot read: {pem.strip()[-200:]}")
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


def ca_key(ca_spki, ca_key_digests, exclude=(), root="/"):
    """Look for a private key of any CA of the controller (current, incoming, retired) in every file of the host.

    Walks the whole file system from ROOT (default /) but the pseudo file systems (PSEUDO_FS: /proc, /sys,
    cgroups, devpts ..., recognised by device number, so a symlink into them is not followed either) and the
    EXCLUDE folders; every regular file is read to its end, whatever its size. Each PEM private key block is
    compared by content with the controller's CA keys (CA_KEY_DIGESTS; also finds encrypted copies) and,
    when unencrypted or in OpenSSH format (whose public keys are in clear), by public key with the
    controller's CA certificates (CA_SPKI)."""
    started = time.monotonic()
    spki, digests = set(ca_spki), set(ca_key_digests)
    if not spki:
        return [check("no_ca_private_key_on_host", False, "the CA public keys to compare with (ca_key_search.spki)",
                      "none given: the controller holds no CA certificate below ca/")]
    try:
        skip_devices, kinds = pseudo_devices()
    except OSError as exc:
        return [check("no_ca_private_key_on_host", False, "a search of the whole file system", f"/proc/self/mountinfo: {exc}")]
    excluded = {os.path.normpath(path) for path in exclude}
    found, encrypted, unparsed, unreadable, problems, seen = [], [], [], [], [], set()
    files, keys, counter = 0, 0, [0]
    for path, info in regular_files(root, skip_devices, excluded, problems):
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
    seen_text = (f"scanned {files} files ({counter[0] / 2**20:.0f} MiB) below {root} in {time.monotonic() - started:.1f} s, "
                 f"{keys} private key(s); compared with {len(spki)} CA public key(s) and {len(digests)} CA key digest(s); "
                 f"CA key found in {found}; encrypted, compared by content only: {listed(sorted(set(encrypted)))}; "
                 f"not readable by openssl, compared by content only: {listed(sorted(set(unparsed)))}; "
                 f"pseudo file systems skipped: {kinds}; excluded: {sorted(excluded)}; "
                 f"unreadable: {listed(sorted(unreadable + problems))}")
    return [check("no_ca_private_key_on_host", not found, "no file holds a private key of a CA", seen_text)]
