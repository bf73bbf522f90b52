# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""Certificate (plugin) name validation. Pure Python, no third-party import, so that a
filter plugin or the role can reuse it cheaply."""

from __future__ import annotations

import re

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

# A name becomes a folder (plugins/NAME), a DNS SAN (NAME, mcp-plugin-NAME) and part of a CN.
CERT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# One DNS label at most (RFC 1035).
CERT_NAME_MAX = 63


def cert_name_problem(name):
    """Return None when NAME is a valid certificate name, else a short reason."""
    if not isinstance(name, str):
        return "must be a string, got %s" % type(name).__name__
    if name == "":
        return "must not be empty"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\'"
    if ".." in name:
        return "must not contain '..'"
    if not CERT_NAME_RE.match(name):
        return "must match %s" % CERT_NAME_RE.pattern
    if len(name) > CERT_NAME_MAX:
        return "must be at most %d characters (one DNS label), got %d" % (CERT_NAME_MAX, len(name))
    return None


def validate_cert_name(name):
    """Raise PKIError naming NAME when it is not a valid certificate name; return NAME."""
    problem = cert_name_problem(name)
    if problem:
        raise PKIError("invalid certificate name %r: %s" % (name, problem))
    return name


def validate_cert_names(names, what="certificate name"):
    """Validate every name and that none repeats. Raises PKIError naming the first bad one."""
    seen = set()
    for name in names:
        problem = cert_name_problem(name)
        if problem:
            raise PKIError("invalid %s %r: %s" % (what, name, problem))
        if name in seen:
            raise PKIError("duplicate %s %r" % (what, name))
        seen.add(name)
    return list(names)
