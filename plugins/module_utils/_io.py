# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""File helpers: atomic private writes, backups, directories, owner/group, and the run lock."""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import re
import stat
import tempfile
import time

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

LOCK_NAME = ".lock"


def parse_mode(value, what):
    """Turn '0600', '600', 0o600 (int from YAML) into an int mode. Raises PKIError naming WHAT."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PKIError("%s: invalid mode %r" % (what, value))
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if text.startswith("0o"):
            text = text[2:]
        try:
            mode = int(text, 8)
        except ValueError:
            raise PKIError("%s: invalid mode %r (use an octal string such as '0600')" % (what, value)) from None
    if mode < 0 or mode > 0o7777:
        raise PKIError("%s: invalid mode %r" % (what, value))
    return mode


# (uid_t)-1 means "leave unchanged" to chown(2): the largest id a file can really get is one less.
MAX_ID = 2 ** 32 - 2


def _numeric_id(text, what, kind):
    number = int(text)
    if number > MAX_ID:
        raise PKIError("%s: %s id %s is out of range (0-%d)" % (what, kind, text, MAX_ID))
    return number


def resolve_owner(owner, what="owner"):
    """User name or numeric id -> uid (None stays None). Raises PKIError naming the user."""
    if owner is None or owner == "":
        return None
    text = str(owner)
    if text.isdigit():
        return _numeric_id(text, what, "user")
    try:
        return pwd.getpwnam(text).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise PKIError("%s: unknown user %r" % (what, text)) from None


def resolve_group(group, what="group"):
    """Group name or numeric id -> gid (None stays None). Raises PKIError naming the group."""
    if group is None or group == "":
        return None
    text = str(group)
    if text.isdigit():
        return _numeric_id(text, what, "group")
    try:
        return grp.getgrnam(text).gr_gid
    except (KeyError, ValueError):
        raise PKIError("%s: unknown group %r" % (what, text)) from None


def read_bytes(path):
    """File content, or None when the file does not exist. Other errors raise OSError."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def fsync_dir(path):
    """Make a rename in PATH durable."""
    fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def missing_dirs(path):
    """The folders that would have to be created for PATH (a folder), outermost first."""
    missing = []
    current = os.path.abspath(path)
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return list(reversed(missing))


def ensure_dir(path, mode, uid=None, gid=None):
    """Create folder PATH and missing parents with MODE (not subject to umask). Returns the created ones."""
    created = []
    for folder in missing_dirs(path):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise PKIError("cannot create directory %s: %s" % (folder, exc.strerror)) from None
        os.chmod(folder, mode)
        if uid is not None or gid is not None:
            _chown(folder, uid, gid)
        created.append(folder)
    return created


def _chown(path, uid, gid):
    try:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    except OSError as exc:
        raise PKIError("cannot set owner/group of %s: %s" % (path, exc.strerror)) from None


def backup_name(path, now=None):
    """'file.2026-11-24@01:02:03~' (with '.N' before '~' if that name is taken)."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime(now))
    candidate = "%s.%s~" % (path, stamp)
    counter = 1
    while os.path.lexists(candidate):
        candidate = "%s.%s.%d~" % (path, stamp, counter)
        counter += 1
    return candidate


def backup_file(path):
    """Keep the current PATH under a timestamped name with the same mode and owner.

    A hard link is used: files are only ever replaced by rename, never changed in place, so the
    link keeps the old content. Falls back to a private copy where links are not supported.
    """
    if not os.path.lexists(path):
        return None
    while True:
        target = backup_name(path)
        try:
            os.link(path, target)
            return target
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise PKIError("cannot back up %s: %s" % (path, exc.strerror)) from None
            break
    info = os.stat(path)
    with open(path, "rb") as handle:
        data = handle.read()
    target = backup_name(path)
    _write_new(target, data, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, sync_dir=False, replace=False)
    return target


TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
# What mkstemp adds between prefix and suffix: 8 characters of tempfile's alphabet.
_TEMP_RANDOM = r"[a-z0-9_]{8}"
# The name part of a backup copy (backup_name), which the private-copy fallback writes through a temp file too.
_BACKUP_STAMP = r"\.\d{4}-\d{2}-\d{2}@\d{2}:\d{2}:\d{2}(?:\.\d+)?~"


def _temp_name_re(name):
    """The names of the temp files _write_new makes for file NAME (or for a backup copy of it)."""
    parts = (re.escape(TEMP_PREFIX), re.escape(name), _BACKUP_STAMP, _TEMP_RANDOM, re.escape(TEMP_SUFFIX))
    return re.compile(r"^%s%s(?:%s)?\.%s%s$" % parts)


def stale_temps(path):
    """Temp files that an interrupted write of PATH (killed between mkstemp and rename) left in its folder:
    '.NAME.XXXXXXXX.tmp' (or '.NAME.STAMP~.XXXXXXXX.tmp' of a backup copy), regular files only."""
    folder = os.path.dirname(path) or "."
    pattern = _temp_name_re(os.path.basename(path))
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise PKIError("cannot list %s: %s" % (folder, exc.strerror)) from None
    found = []
    for name in sorted(names):
        if pattern.match(name):
            candidate = os.path.join(folder, name)
            try:
                if stat.S_ISREG(os.lstat(candidate).st_mode):
                    found.append(candidate)
            except FileNotFoundError:
                continue
    return found


def remove_stale_temps(path):
    """Remove the temp files an interrupted write of PATH left (see stale_temps). Returns their paths.

    Call it only while holding the run lock that every writer of PATH holds: then no live writer can
    own one of these files, so only leftovers of a killed run are removed.
    """
    removed = []
    for candidate in stale_temps(path):
        try:
            os.unlink(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PKIError("cannot remove the leftover temp file %s: %s" % (candidate, exc.strerror)) from None
        removed.append(candidate)
    if removed:
        fsync_dir(os.path.dirname(path) or ".")
    return removed


def _write_new(path, data, mode, uid, gid, sync_dir, replace=True):
    folder = os.path.dirname(path) or "."
    # mkstemp creates the file 0600 in the same folder, so the rename below is atomic and a key is
    # never readable by others, not even for a moment. Its name is what stale_temps looks for.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX + os.path.basename(path) + ".", suffix=TEMP_SUFFIX)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            if uid is not None or gid is not None:
                try:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                except OSError as exc:
                    raise PKIError("cannot set owner/group of %s: %s" % (path, exc.strerror)) from None
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        # If anything failed, leave no temp file behind.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(folder)


def write_file(path, data, mode, uid=None, gid=None, backup=False, sync_dir=True):
    """Atomically replace PATH with DATA (temp file 0600 in the same folder, fsync, rename, fsync dir).

    Temp files that an interrupted earlier write of PATH left are removed first: callers hold the run
    lock (see remove_stale_temps). Returns the backup file name when BACKUP is true and PATH existed, else None.
    """
    remove_stale_temps(path)
    backup_path = backup_file(path) if backup else None
    try:
        _write_new(path, data, mode, uid, gid, sync_dir)
    except PKIError:
        raise
    except OSError as exc:
        raise PKIError("cannot write %s: %s" % (path, exc.strerror or exc)) from None
    return backup_path


def attributes_differ(path, mode, uid=None, gid=None):
    """True when existing PATH has another mode, owner or group than wanted."""
    info = os.stat(path)
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        return True
    if uid is not None and info.st_uid != uid:
        return True
    if gid is not None and info.st_gid != gid:
        return True
    return False


def fix_attributes(path, mode, uid=None, gid=None):
    """Set mode, owner and group of PATH when they differ. Returns True when something changed."""
    if not attributes_differ(path, mode, uid, gid):
        return False
    try:
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        if mode is not None:
            os.chmod(path, mode)
    except OSError as exc:
        raise PKIError("cannot set mode/owner of %s: %s" % (path, exc.strerror)) from None
    return True


class RunLock:
    """fcntl.flock on '<folder>/.lock', held for a whole module run.

    Writers take it exclusive. In check mode the lock file is never created: if it exists a shared
    lock is taken (so a report never sees a half-done write), otherwise nothing is locked.
    """

    def __init__(self, folder, timeout=300.0, shared=False, create=True, poll=0.05):
        self.path = os.path.join(folder, LOCK_NAME)
        self.timeout = float(timeout)
        self.shared = shared
        self.create = create
        self.poll = poll
        self.fd = None

    def acquire(self):
        flags = os.O_RDWR | os.O_CREAT if self.create else os.O_RDONLY
        try:
            self.fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            if self.create:
                raise PKIError("cannot create lock file %s: folder missing" % self.path) from None
            return self
        except OSError as exc:
            raise PKIError("cannot open lock file %s: %s" % (self.path, exc.strerror)) from None
        operation = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, operation)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    self.release()
                    raise PKIError("cannot lock %s: %s" % (self.path, exc.strerror)) from None
            if time.monotonic() >= deadline:
                self.release()
                raise PKIError(
                    "timed out after %g s waiting for the lock %s: another run is still working on this PKI "
                    "(raise lock_timeout, or check for a stuck process)" % (self.timeout, self.path))
            time.sleep(self.poll)

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False
