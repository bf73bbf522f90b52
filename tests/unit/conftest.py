# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make `ansible_collections.mcpgateway.mtls` importable when pytest runs from a plain checkout.

Under `ansible-test units` the collection already sits in ansible_collections/mcpgateway/mtls; from a
checkout, `make venv` links it under .build/collections.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))


def _collections_root():
    parent = os.path.dirname(os.path.dirname(os.path.dirname(_ROOT)))
    if os.path.basename(os.path.dirname(os.path.dirname(_ROOT))) == "ansible_collections":
        return parent
    return os.path.join(_ROOT, ".build", "collections")


if _collections_root() not in sys.path:
    sys.path.insert(0, _collections_root())
