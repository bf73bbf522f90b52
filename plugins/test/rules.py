# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rules of the roles' preflight checks as Jinja tests, each written once (logic in module_utils/_rules.py)."""

from __future__ import annotations

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _rules


class TestModule:
    """mcpgateway.mtls tests of settings."""

    def tests(self):
        return {
            "service_account": _rules.service_account,
            "absolute_path": _rules.absolute_path,
            "pip_version": _rules.pip_version,
            "http_url": _rules.http_url,
            "env_name": _rules.env_name,
            "host_address": _rules.host_address,
            "time_span": _rules.time_span,
            "single_line": _rules.single_line,
            "dns_prefix": _rules.dns_prefix,
            "openssl_subject": _rules.openssl_subject,
        }
