# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that shape the inventory into the PKI plan, the gateway config and verify checks (logic in module_utils)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.mcpgateway.mtls.plugins.module_utils import _gateway, _inventory, _plan, _verify


def _wrap(func):
    def filter_(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except _plan.PlanError as exc:
            raise AnsibleFilterError(str(exc)) from None

    filter_.__name__ = func.__name__
    return filter_


class FilterModule:
    """mcpgateway.mtls PKI planning filters."""

    def filters(self):
        return {
            "external_plugins": _wrap(_inventory.external_plugins),
            "plugin_plan": _wrap(_plan.plugin_plan),
            "host_plan": _wrap(_plan.host_plan),
            "pki_leaves": _wrap(_inventory.pki_leaves),
            "pki_tree": _wrap(_inventory.pki_tree),
            "frontdoor_plan": _wrap(_inventory.frontdoor_plan),
            "client_tree": _wrap(_inventory.client_tree),
            "leaf_passphrases": _wrap(_inventory.leaf_passphrases),
            "tls_file_expectations": _wrap(_verify.tls_file_expectations),
            "probe_summary": _wrap(_verify.probe_summary),
            "certificate_records": _wrap(_verify.certificate_records),
            "openssl_records": _wrap(_verify.openssl_records),
            "gate_problems": _wrap(_verify.gate_problems),
            "port_conflicts": _wrap(_plan.port_conflicts),
            "gateway_client_config": _wrap(_gateway.gateway_client_config),
        }
