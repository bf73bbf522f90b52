# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared by tests/unit and tests/integration: the skip policy (skip_policy.py beside this file; pytest puts this
folder on sys.path before it loads this conftest)."""

from __future__ import annotations

pytest_plugins = ["skip_policy"]
