# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rules of the roles' preflight checks (module_utils/_rules.py, test plugin rules.py)."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _rules as R
from ansible_collections.mcpgateway.mtls.plugins.test import rules as jinja_tests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
TESTS = jinja_tests.TestModule().tests()

# Values no rule accepts: not text, or text that would break a unit file, an env file or a command line.
NOT_TEXT = [None, True, False, [], ["a"], {}, {"a": 1}]
HOSTILE = ["", " ", "\n", "$(touch /tmp/pwned)", ";rm -rf x", "a b", "a\nb", "a\tb", "a\rb"]

# The patterns the preflight checks used with Jinja's `match` before (re.match, `$` also matches before a
# trailing newline). The rules must agree with them, but for the differences listed in test_agrees_with_...
OLD = {
    "service_account": (r"^[a-z_][a-z0-9_-]{0,31}$", R.service_account),
    "absolute_path": (r"^(/[^/\s]+)+/?$", R.absolute_path),
    "pip_version": (r"^[0-9][0-9A-Za-z.+!_-]*$", R.pip_version),
    "http_url": (r"^https?://[^\s]+$", R.http_url),
    "env_name": (r"^[A-Za-z_][A-Za-z0-9_]*$", R.env_name),
    "host_address": (r"^[A-Za-z0-9.:_-]+$", R.host_address),
    "time_span": (r"^[0-9][0-9a-z. ]*$", R.time_span),
    "dns_prefix": (r"^([A-Za-z0-9][A-Za-z0-9-]*)?$", R.dns_prefix),  # pki_plugin_subject_prefix
    "dns_prefix_dots": (r"^([A-Za-z0-9][A-Za-z0-9.-]*)?$",  # gateway_plugin_host_prefix
                        lambda value: R.dns_prefix(value, dots=True)),
    "openssl_subject": (r"^/[A-Za-z]+=", R.openssl_subject),
}
CORPUS = [
    "", "a", "_", "A", "0", "mcpgateway", "mcp-plugin", "Mcp", "_svc", "-x", "a" * 32, "a" * 33, "1.1.0", "0.1.4",
    "1.0+local.1", "1!2.0", "1.0rc1", "v1.0", "1.0 ", "/", "//", "/opt", "/opt/", "/opt//x", "/opt/x", "/opt/x y",
    "/etc/mcp-plugins", "opt/x", "./x", "../x", "/opt/.hidden", "/opt/...", "https://pypi.org/simple",
    "http://mirror/simple/", "https://", "https://x y", "ftp://x", "file:///etc/passwd", "HTTPS://x", "PATH",
    "MY_VAR1", "1VAR", "BAD-NAME", "BAD KEY", "0.0.0.0", "127.0.0.1", "::", "::1", "[::1]", "fe80::1%eth0",
    "host.example.com", "under_score", "30s", "1min 30s", "1.5h", "s30", "30S", "mcp-plugin-", "a.b.", ".a",
    "../", "/CN=x", "/CN=x/O=y", "CN=x", "/=x", "/C N=x", "$(reboot)", ";rm -rf x", "plügin", "\u00a0",
]


def old(rule, value):
    """What the preflight's regex accepted."""
    return re.match(OLD[rule][0], value) is not None


def test_every_rule_is_a_jinja_test_with_documentation():
    names = {"service_account", "absolute_path", "pip_version", "http_url", "env_name", "host_address", "time_span",
             "single_line", "dns_prefix", "openssl_subject"}
    assert set(TESTS) == names
    for name, function in TESTS.items():
        assert function is getattr(R, name)
        with open(os.path.join(ROOT, "plugins", "test", name + ".yml"), encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
        assert doc["DOCUMENTATION"]["name"] == name
        assert "mcpgateway.mtls.%s" % name in doc["EXAMPLES"]


@pytest.mark.parametrize("rule", sorted(OLD))
@pytest.mark.parametrize("value", CORPUS)
def test_agrees_with_the_regex_the_roles_used(rule, value):
    """Same verdict as before for every value, except paths with a '.' or '..' component (refused now)."""
    if rule == "absolute_path" and any(part in (".", "..") for part in value.split("/")):
        assert R.absolute_path(value) is False
        return
    assert OLD[rule][1](value) is old(rule, value)


@pytest.mark.parametrize("value", CORPUS + ["/etc/mcp-plugins/x", "/etc/", "/a/b/"])
def test_min_depth_agrees_with_the_depth_check_the_role_used(value):
    """plugin_server_config_dir: the path regex and `regex_findall('[^/]+') | length >= 2`."""
    if any(part in (".", "..") for part in value.split("/")):
        return
    before = old("absolute_path", value) and len(re.findall("[^/]+", value)) >= 2
    assert R.absolute_path(value, min_depth=2) is before


@pytest.mark.parametrize("rule", sorted(OLD))
@pytest.mark.parametrize("value", ["mcpgateway", "/opt/x", "1.1.0", "https://x/simple", "PATH", "0.0.0.0", "30s",
                                   "mcp-plugin-"])
def test_a_trailing_newline_is_refused_where_match_let_it_through(rule, value):
    """`x is match('^...$')` accepted 'x\\n' ($ matches before a final newline); the rules match whole values."""
    if rule != "openssl_subject":  # a prefix rule, as before ('/CN=x' then anything)
        assert OLD[rule][1](value + "\n") is False
        assert OLD[rule][1](value + "\r\n") is False


@pytest.mark.parametrize("rule", sorted(TESTS))
@pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
def test_what_is_not_text_is_refused(rule, value):
    if rule == "single_line":
        assert R.single_line(value) is True  # as `value | string is not search('[\r\n]')`: no line break
    else:
        assert TESTS[rule](value) is False


@pytest.mark.parametrize("rule", sorted(set(TESTS) - {"single_line"}))
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_text_is_refused(rule, value):
    if rule == "dns_prefix" and value == "":
        assert R.dns_prefix(value) is True  # no prefix
    else:
        assert TESTS[rule](value) is False


# --- one rule at a time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("mcpgateway", True), ("mcp-plugin", True), ("_svc", True), ("a", True), ("a1_b-c", True), ("a" * 32, True),
    ("a" * 33, False), ("Mcp", False), ("1mcp", False), ("-mcp", False), ("mcp.user", False), ("mcp user", False),
    ("mcp\n", False), ("", False), ("root:x", False), ("plügin", False),
])
def test_service_account(value, expected):
    assert R.service_account(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("/opt", True), ("/opt/", True), ("/usr/bin/python3", True), ("/opt/.hidden", True), ("/opt/...", True),
    ("/opt/x;rm", True), ("/opt/x:y@z", True),
    ("/", False), ("", False), ("opt", False), ("opt/x", False), ("./x", False), ("../x", False), ("~/x", False),
    ("//opt", False), ("/opt//x", False), ("/opt/x//", False), ("/opt/x y", False), ("/opt/x\ty", False),
    ("/opt/x\n", False), ("/opt/x\nExecStart=/bin/true", False), ("/opt/x\u00a0y", False),
    ("/opt/..", False), ("/opt/../etc", False), ("/../etc", False), ("/opt/.", False), ("/opt/./x", False),
    ("/..", False), ("/.", False), ("/opt/../", False),
])
def test_absolute_path(value, expected):
    assert R.absolute_path(value) is expected


@pytest.mark.parametrize("value, min_depth, expected", [
    ("/etc/mcp-plugins", 2, True), ("/etc/mcp-plugins/", 2, True), ("/a/b/c", 3, True), ("/etc", 2, False),
    ("/etc/", 2, False), ("/etc/.", 2, False), ("/etc/mcp-plugins/..", 2, False), ("/etc/./", 2, False),
    ("/etc", 1, True), ("/etc", 0, True), ("/", 0, False), ("/etc", "2", False),
])
def test_absolute_path_min_depth(value, min_depth, expected):
    assert R.absolute_path(value, min_depth=min_depth) is expected


@pytest.mark.parametrize("value, expected", [
    ("1.1.0", True), ("0.1.4", True), ("1.0rc1", True), ("1.0.post1", True), ("1!2.0", True), ("1.0+local.7", True),
    ("2.0_beta-1", True), (1, True), (1.1, True),
    ("v1.0", False), ("", False), ("1.0 ", False), (" 1.0", False), ("1.0;rm", False), ("1.0,<2", False),
    (">=1.0", False), ("1.0 --index-url x", False), ("1.0\n", False), ("==1.0", False), ("1.*", False),
])
def test_pip_version(value, expected):
    assert R.pip_version(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("https://pypi.org/simple", True), ("http://mirror:8080/simple/", True), ("https://u:p@host/s?a=b#c", True),
    ("https://", False), ("http:/x", False), ("HTTPS://x", False), ("ftp://x", False), ("file:///etc/passwd", False),
    ("https://x --trusted-host evil", False), ("https://x\n", False), ("https://x\tb", False), ("", False),
    (" https://x", False),
])
def test_http_url(value, expected):
    assert R.http_url(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("PATH", True), ("_", True), ("my_var_1", True), ("A1", True),
    ("1A", False), ("BAD-NAME", False), ("BAD KEY", False), ("A=B", False), ("", False), ("A\n", False),
    ("ÄPFEL", False), (1, False),
])
def test_env_name(value, expected):
    assert R.env_name(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("0.0.0.0", True), ("127.0.0.1", True), ("::", True), ("::1", True), ("localhost", True),
    ("plugin-1.example.com", True), ("under_score", True),
    ("[::1]", False), ("fe80::1%eth0", False), ("", False), ("a b", False), ("127.0.0.1\nUser=root", False),
    ("127.0.0.1\n", False), ("a/b", False), ("host:8000/x", False), ("$(touch /tmp/pwned)", False),
])
def test_host_address(value, expected):
    assert R.host_address(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("30s", True), ("1s", True), ("1min 30s", True), ("1.5h", True), ("500ms", True), ("5", True), (30, True),
    ("s", False), ("", False), (" 30s", False), ("30S", False), ("30s\n", False), ("30s\nOnBootSec=1", False),
    ("-1s", False), ("30s;", False), ("infinity", False),
])
def test_time_span(value, expected):
    assert R.time_span(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("x", True), ("", True), ("a b\tc", True), (42, True), (None, True), ("daily", True),
    ("a\nb", False), ("a\rb", False), ("a\r\n", False), ("\n", False), ("daily\nPersistent=false", False),
])
def test_single_line(value, expected):
    assert R.single_line(value) is expected


@pytest.mark.parametrize("value, dots, expected", [
    ("", False, True), ("mcp-plugin-", False, True), ("a", False, True), ("1-", False, True),
    ("mcp.plugin-", False, False), ("-a", False, False), ("../", False, False), ("a_b", False, False),
    ("a b", False, False), ("a\n", False, False), (1, False, False),
    ("", True, True), ("mcp-plugin-", True, True), ("plugins.example.", True, True), ("a..b", True, True),
    (".a", True, False), ("../", True, False), ("a/b", True, False), ("a\n", True, False), (None, True, False),
])
def test_dns_prefix(value, dots, expected):
    assert R.dns_prefix(value, dots=dots) is expected


@pytest.mark.parametrize("value, expected", [
    ("/CN=x", True), ("/CN=MCP Gateway CA/O=Org", True), ("/emailAddress=a@b", True),
    ("CN=x", False), ("ContextForge", False), ("/=x", False), ("/C N=x", False), ("/1=x", False), ("", False),
    ("$(touch /tmp/pwned)", False), (["/CN=x"], False),
])
def test_openssl_subject(value, expected):
    assert R.openssl_subject(value) is expected


# --- the roles use the rules, not copies of them -----------------------------------------------------------


def _preflight_files():
    roles = os.path.join(ROOT, "roles")
    for role in sorted(os.listdir(roles)):
        path = os.path.join(roles, role, "tasks", "preflight.yml")
        if os.path.isfile(path):
            yield role, path


@pytest.mark.parametrize("role, path", list(_preflight_files()))
def test_no_preflight_repeats_a_rule_as_a_regex(role, path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for rule, (pattern, _function) in OLD.items():
        body = pattern.strip("^$")
        assert body not in text, "%s: %s repeats the rule %s; use `is mcpgateway.mtls.%s`" % (role, path, rule, rule)
    assert "[\\r\\n]" not in text, "%s: use `is mcpgateway.mtls.single_line`" % path
