# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The programs a managed host must have (option prerequisites of modules plugin_host and gateway_host).

Checked in the converge call itself, before anything is written: a missing program fails the run at once with
one message naming every missing program and the package that provides it, instead of late and obscurely (a
health check that cannot run curl, a unit whose ExecStartPre lacks sha256sum, a probe without runuser).
"""

from __future__ import annotations

import os
import re
import shutil

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

# Program -> (Debian/Ubuntu package, RHEL/Fedora package).
PACKAGES = {
    "curl": ("curl", "curl"),
    "journalctl": ("systemd", "systemd"),
    "openssl": ("openssl", "openssl"),
    "runuser": ("util-linux", "util-linux"),
    "sha256sum": ("coreutils", "coreutils"),
    "ss": ("iproute2", "iproute"),
    "sudo": ("sudo", "sudo"),
    "systemctl": ("systemd", "systemd"),
}
# Searched after the module's PATH: a PATH without the sbin folders (a non-login shell, some sudo setups) must not
# hide runuser (/usr/sbin on Debian) or ss (/usr/sbin on RHEL).
SBIN_DIRS = ("/usr/sbin", "/sbin")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def search_path():
    """The folders searched: the module's PATH, then SBIN_DIRS (os.pathsep-joined)."""
    dirs = [entry for entry in (os.environ.get("PATH") or os.defpath).split(os.pathsep) if entry]
    dirs += [entry for entry in SBIN_DIRS if entry not in dirs]
    return os.pathsep.join(dirs)


def _validate(programs):
    for program in programs:
        if not isinstance(program, str) or not (_NAME.match(program) or (
                program.startswith("/") and os.path.normpath(program) == program)):
            raise PKIError("prerequisites: %r is neither a program name nor a normalized absolute path" % (program,))


def missing(programs, path=None):
    """The programs of PROGRAMS (names, or absolute paths) that are not installed, in their order, once each."""
    _validate(programs)
    path = search_path() if path is None else path
    out = []
    for program in programs:
        if program in out:
            continue
        if program.startswith("/"):
            found = os.path.isfile(program) and os.access(program, os.X_OK)
        else:
            found = shutil.which(program, path=path) is not None
        if not found:
            out.append(program)
    return out


def _install(program):
    packages = PACKAGES.get(os.path.basename(program))
    if not packages:
        return "no package known to this collection: install what provides it"
    return "Debian/Ubuntu: apt install %s; RHEL/Fedora: dnf install %s" % packages


def message(absent, path):
    """One line naming every program of ABSENT and the package that provides it."""
    text = "missing on this host: %s" % ", ".join("%s (%s)" % (program, _install(program)) for program in absent)
    known = [PACKAGES[os.path.basename(program)] for program in absent if os.path.basename(program) in PACKAGES]
    debian = list(dict.fromkeys(pkg for pkg, _rhel in known))
    rhel = list(dict.fromkeys(pkg for _debian, pkg in known))
    if len(debian) > 1 or len(rhel) > 1:
        text += ". All at once: apt install %s (Debian/Ubuntu) or dnf install %s (RHEL/Fedora)" % (
            " ".join(debian), " ".join(rhel))
    return text + ". Nothing was changed; install them and run again (searched %s)" % path


def require(programs, path=None):
    """Raise PKIError naming every missing program of PROGRAMS and its packages; nothing when all are there."""
    path = search_path() if path is None else path
    absent = missing(programs or [], path)
    if absent:
        raise PKIError(message(absent, path))
