# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The programs a managed host must have (module_utils/_prereq.py, option prerequisites of modules plugin_host and
gateway_host; their converge tests are in test_hoststate.py and test_gatewaystate.py)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _prereq as P
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError


def test_all_present_passes(only_programs):
    only_programs("curl", "ss", "sha256sum")
    assert P.missing(["curl", "ss", "sha256sum"]) == []
    P.require(["curl", "ss", "sha256sum"])
    P.require([])
    P.require(None)


def test_one_missing_program_is_named_with_its_packages(only_programs):
    only_programs("curl")
    with pytest.raises(PKIError) as error:
        P.require(["curl", "ss"])
    text = str(error.value)
    assert text.startswith("missing on this host: ss (Debian/Ubuntu: apt install iproute2; "
                           "RHEL/Fedora: dnf install iproute).")
    assert "curl" not in text.split(". Nothing", maxsplit=1)[0]
    assert "Nothing was changed" in text and "All at once" not in text


def test_every_missing_program_is_named_once_with_one_install_command(only_programs):
    only_programs("openssl")
    absent = ["curl", "ss", "openssl", "systemctl", "journalctl", "curl"]
    assert P.missing(absent) == ["curl", "ss", "systemctl", "journalctl"]
    with pytest.raises(PKIError) as error:
        P.require(absent)
    text = str(error.value)
    assert ("missing on this host: curl (Debian/Ubuntu: apt install curl; RHEL/Fedora: dnf install curl), "
            "ss (Debian/Ubuntu: apt install iproute2; RHEL/Fedora: dnf install iproute), "
            "systemctl (Debian/Ubuntu: apt install systemd; RHEL/Fedora: dnf install systemd), "
            "journalctl (Debian/Ubuntu: apt install systemd; RHEL/Fedora: dnf install systemd). "
            "All at once: apt install curl iproute2 systemd (Debian/Ubuntu) or dnf install curl iproute systemd "
            "(RHEL/Fedora)") in text
    assert "openssl" not in text


@pytest.mark.parametrize("program, debian, rhel", [
    ("openssl", "openssl", "openssl"), ("curl", "curl", "curl"), ("ss", "iproute2", "iproute"),
    ("sudo", "sudo", "sudo"), ("runuser", "util-linux", "util-linux"), ("sha256sum", "coreutils", "coreutils"),
    ("systemctl", "systemd", "systemd"), ("journalctl", "systemd", "systemd"),
])
def test_each_known_program_names_its_packages(only_programs, program, debian, rhel):
    only_programs()
    with pytest.raises(PKIError, match=r"^missing on this host: %s \(Debian/Ubuntu: apt install %s; "
                                       r"RHEL/Fedora: dnf install %s\)" % (program, debian, rhel)):
        P.require([program])


def test_the_sbin_folders_are_searched_after_path(only_programs, tmp_path, monkeypatch):
    only_programs("curl")
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    (sbin / "runuser").write_text("#!/bin/sh\n")
    (sbin / "runuser").chmod(0o755)
    assert P.missing(["runuser"]) == ["runuser"]
    monkeypatch.setattr(P, "SBIN_DIRS", (str(sbin),))
    assert P.missing(["runuser", "curl"]) == []
    assert P.search_path().split(os.pathsep) == [str(tmp_path / "fakebin"), str(sbin)]


def test_a_file_that_is_not_executable_is_missing(only_programs):
    folder = only_programs("curl")
    (folder / "curl").chmod(0o644)
    with pytest.raises(PKIError, match="missing on this host: curl "):
        P.require(["curl"])


def test_an_absolute_path_and_an_unknown_program(only_programs, tmp_path):
    folder = only_programs("tool")
    assert P.missing([str(folder / "tool")]) == []
    with pytest.raises(PKIError) as error:
        P.require([str(tmp_path / "nowhere" / "ss"), "mcp-unknown-tool"])
    text = str(error.value)
    assert "/nowhere/ss (Debian/Ubuntu: apt install iproute2; RHEL/Fedora: dnf install iproute)" in text
    assert "mcp-unknown-tool (no package known to this collection: install what provides it)" in text


@pytest.mark.parametrize("bad", ["", "bin/curl", "cu rl", "/usr/../bin/curl", 7, None])
def test_a_bad_program_name_is_refused(only_programs, bad):
    only_programs()
    with pytest.raises(PKIError, match="prerequisites: .* is neither a program name nor a normalized absolute path"):
        P.require([bad])
