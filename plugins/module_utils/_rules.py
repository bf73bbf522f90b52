# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""The rules the roles' preflight checks apply to their settings, each written once (pure functions).

These values end up in unit files, env files, command lines, URLs and paths the roles manage (and prune): a
line break, a blank or a path that is not what it looks like there is an injection, or a write or a deletion
in the wrong place. Each rule is a whole-value match (re.fullmatch): unlike Jinja's `match` test with a
pattern ending in `$`, a trailing newline is refused too. The Jinja tests of plugins/test/rules.py expose
them to the roles (`gateway_user is mcpgateway.mtls.service_account`); a value that is not a string is
refused, except a number where the rule allows digits, which is read as its text (as `match` did:
`pip_version` accepts 1.1 from YAML); dns_prefix and openssl_subject want a string.
"""

from __future__ import annotations

import re

# A system user or group name (useradd's default rule, at most 32 characters).
SERVICE_ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# One component of an absolute path: no '/' and no white space ('.' and '..' are refused apart).
PATH_PART = re.compile(r"[^/\s]+")
# A version pin for pip (PEP 440 and local versions): no blank, no shell or pip option character.
PIP_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]*")
# A package index URL: http or https, one word.
HTTP_URL = re.compile(r"https?://\S+")
# An environment variable (and shell variable) name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An address to bind to or a host name: IPv4, IPv6 (unbracketed) or DNS name characters.
HOST_ADDRESS = re.compile(r"[A-Za-z0-9.:_-]+")
# A systemd time span (systemd.time(7)) such as 30s, 1min 30s or 1.5h.
TIME_SPAN = re.compile(r"[0-9][0-9a-z. ]*")
# The start of a name that a plugin name completes into a DNS name: empty, or starting with a letter or digit.
DNS_PREFIX = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9-]*)?")
DNS_PREFIX_DOTS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]*)?")
# An openssl-style subject starts /ATTRIBUTE= (/CN=name/O=org).
OPENSSL_SUBJECT = re.compile(r"/[A-Za-z]+=")


def _text(value):
    """VALUE as text when it is a string or a number (not a boolean), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _full(pattern, value):
    text = _text(value)
    return text is not None and pattern.fullmatch(text) is not None


def service_account(value):
    """True when VALUE is a user or group name: a-z or '_', then up to 31 of a-z, 0-9, '_', '-'."""
    return _full(SERVICE_ACCOUNT, value)


def absolute_path(value, min_depth=1):
    """True when VALUE is an absolute path of at least MIN_DEPTH components, none of them empty, '.' or '..'
    and none with white space (one trailing '/' is allowed): '/' alone, '//x', '/a b', '/a/../b' are refused."""
    text = _text(value)
    if text is None or not text.startswith("/"):
        return False
    parts = text[1:].split("/")
    if parts[-1] == "":
        parts.pop()
    if len(parts) < max(int(min_depth), 1):
        return False
    return all(part not in (".", "..") and PATH_PART.fullmatch(part) for part in parts)


def pip_version(value):
    """True when VALUE is a version to pin with pip: a digit, then letters, digits and . + ! _ -."""
    return _full(PIP_VERSION, value)


def http_url(value):
    """True when VALUE is an http:// or https:// URL without white space."""
    return _full(HTTP_URL, value)


def env_name(value):
    """True when VALUE is an environment variable name: letters, digits and '_', not starting with a digit."""
    return _full(ENV_NAME, value)


def host_address(value):
    """True when VALUE is an address or host name: letters, digits and . : _ - (no blank, no brackets)."""
    return _full(HOST_ADDRESS, value)


def time_span(value):
    """True when VALUE looks like a systemd time span: a digit, then digits, a-z, '.' and blanks, one line."""
    return _full(TIME_SPAN, value)


def single_line(value):
    """True when VALUE, as text (a non-string as Jinja's `string` filter writes it), has no CR or LF."""
    text = value if isinstance(value, str) else str(value)
    return "\n" not in text and "\r" not in text


def dns_prefix(value, dots=False):
    """True when VALUE can start a DNS name that a plugin name completes: empty, or a letter or digit
    followed by letters, digits and '-' (and '.' when DOTS). A string only."""
    return isinstance(value, str) and (DNS_PREFIX_DOTS if dots else DNS_PREFIX).fullmatch(value) is not None


def openssl_subject(value):
    """True when VALUE is a string in openssl's subject form, /ATTRIBUTE=value... (/CN=name/O=org)."""
    return isinstance(value, str) and OPENSSL_SUBJECT.match(value) is not None
