# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The one domain error of the PKI code: modules turn it into fail_json in one place."""

from __future__ import annotations


class PKIError(Exception):
    """A bad input or an unusable file. The message names the input or the file.

    Messages never contain passphrases or key bytes.
    """
