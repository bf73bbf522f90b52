# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures (helpers live in pki_helpers.py, importable because this folder has no __init__.py)."""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _x509 as X

from pki_helpers import PKI


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


@pytest.fixture(scope="session")
def rsa_key():
    return X.generate_private_key("rsa", 2048)


@pytest.fixture
def only_programs(tmp_path, monkeypatch):
    """only_programs(*names): PATH is a temp folder holding only these (fake, executable) programs, and the sbin
    folders module_utils/_prereq.py also searches are left out. Returns the folder."""
    from ansible_collections.mcpgateway.mtls.plugins.module_utils import _prereq

    def make(*names):
        folder = tmp_path / "fakebin"
        folder.mkdir(exist_ok=True)
        for name in names:
            (folder / name).write_text("#!/bin/sh\nexit 0\n")
            (folder / name).chmod(0o755)
        monkeypatch.setenv("PATH", str(folder))
        monkeypatch.setattr(_prereq, "SBIN_DIRS", ())
        return folder
    return make
