# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import multiprocessing
import os
import stat
import time

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _io
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.mark.parametrize("value, expected", [("0600", 0o600), ("600", 0o600), ("0o644", 0o644), (0o640, 0o640),
                                             (None, None)])
def test_parse_mode(value, expected):
    assert _io.parse_mode(value, "key_mode") == expected


@pytest.mark.parametrize("value", ["rw-r--r--", "0999", True, 0o17777])
def test_parse_mode_errors(value):
    with pytest.raises(PKIError, match="cert_mode"):
        _io.parse_mode(value, "cert_mode")


def test_resolve_owner_group():
    assert _io.resolve_owner("root") == 0
    assert _io.resolve_owner("0") == 0
    assert _io.resolve_group(None) is None
    with pytest.raises(PKIError, match="unknown user 'no-such-user-x'"):
        _io.resolve_owner("no-such-user-x")
    with pytest.raises(PKIError, match="unknown group 'no-such-group-x'"):
        _io.resolve_group("no-such-group-x")


def test_atomic_write_modes_and_no_temp_files(tmp_path):
    target = tmp_path / "server.key"
    assert _io.write_file(str(target), b"one", 0o600) is None
    assert target.read_bytes() == b"one" and _mode(target) == 0o600
    _io.write_file(str(target), b"two", 0o644)
    assert target.read_bytes() == b"two" and _mode(target) == 0o644
    assert sorted(os.listdir(str(tmp_path))) == ["server.key"]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "server.crt"
    target.write_bytes(b"old")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(PKIError, match="cannot write .*server.crt"):
        _io.write_file(str(target), b"new", 0o644)
    assert target.read_bytes() == b"old"
    assert os.listdir(str(tmp_path)) == ["server.crt"]


def test_backup_keeps_content_and_mode(tmp_path):
    target = tmp_path / "ca.key"
    _io.write_file(str(target), b"old", 0o600)
    backup = _io.write_file(str(target), b"new", 0o600, backup=True)
    assert backup.startswith(str(target) + ".") and backup.endswith("~")
    assert "@" in os.path.basename(backup)
    with open(backup, "rb") as handle:
        assert handle.read() == b"old"
    assert _mode(backup) == 0o600
    second = _io.write_file(str(target), b"newer", 0o600, backup=True)
    assert second != backup and os.path.exists(second)
    assert target.read_bytes() == b"newer"


def test_ensure_dir_creates_private_folders(tmp_path):
    created = _io.ensure_dir(str(tmp_path / "a" / "b"), 0o700)
    assert created == [str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    assert _mode(tmp_path / "a" / "b") == 0o700
    assert _io.ensure_dir(str(tmp_path / "a" / "b"), 0o700) == []


def test_fix_attributes(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"x")
    os.chmod(str(target), 0o644)
    assert _io.attributes_differ(str(target), 0o600)
    assert _io.fix_attributes(str(target), 0o600) is True
    assert _io.fix_attributes(str(target), 0o600) is False
    assert _mode(target) == 0o600


def test_lock_check_mode_does_not_create(tmp_path):
    with _io.RunLock(str(tmp_path), shared=True, create=False):
        pass
    assert os.listdir(str(tmp_path)) == []
    with _io.RunLock(str(tmp_path / "missing"), shared=True, create=False):
        pass
    assert not (tmp_path / "missing").exists()


def _hold_lock(folder, hold, started, log):
    with _io.RunLock(folder, timeout=30):
        log.put(("start", time.monotonic()))
        started.set()
        time.sleep(hold)
        log.put(("end", time.monotonic()))


def test_lock_serialises_two_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    log = ctx.Queue()
    first = ctx.Process(target=_hold_lock, args=(str(tmp_path), 0.4, started, log))
    first.start()
    assert started.wait(10)
    second = ctx.Process(target=_hold_lock, args=(str(tmp_path), 0.0, ctx.Event(), log))
    second.start()
    first.join(10)
    second.join(10)
    events = [log.get(timeout=5) for dummy in range(4)]
    assert [kind for kind, stamp in events] == ["start", "end", "start", "end"]
    assert events[2][1] >= events[1][1]


def test_lock_timeout_is_a_clear_error(tmp_path):
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), 1.5, started, ctx.Queue()))
    holder.start()
    try:
        assert started.wait(10)
        begin = time.monotonic()
        with pytest.raises(PKIError, match=r"timed out after 0.2 s waiting for the lock .*\.lock"):
            _io.RunLock(str(tmp_path), timeout=0.2).acquire()
        assert time.monotonic() - begin < 1.2
    finally:
        holder.join(10)
