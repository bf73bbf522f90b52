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
