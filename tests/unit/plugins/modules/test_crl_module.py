# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module crl end to end as Ansible runs it (a JSON args file): argument spec, check mode, diff, no_log, errors."""
from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def tree(run_module, tmp_path):
    """An encrypted ECDSA CA and two client certificates made by the modules ca and certificate."""
    pki = tmp_path / "pki"
    ca = {"ca_cert": str(pki / "ca" / "ca.crt"), "ca_key": str(pki / "ca" / "ca.key"), "ca_passphrase": "ca-secret"}
    made = run_module("ca", tmp_path, key_path=ca["ca_key"], cert_path=ca["ca_cert"], key_type="ecdsa",
                      passphrase="ca-secret")
    assert made["changed"], made
    clients = []
    for name in ("lost", "kept"):
        args = dict(ca, key_type="ecdsa", profile="client", subject="/CN=%s/O=MCPGateway" % name,
                    key_path=str(pki / name / "client.key"), cert_path=str(pki / name / "client.crt"))
        assert run_module("certificate", tmp_path, **args)["changed"]
        clients.append(args["cert_path"])
    return dict(ca, path=str(pki / "ca" / "ca.crl"), clients=clients)


def _crl_args(tree, **extra):
    args = {key: tree[key] for key in ("path", "ca_cert", "ca_key", "ca_passphrase")}
    args.update(extra)
    return args


def test_check_create_idempotent_revoke(run_module, tmp_path, tree):
    predicted = run_module("crl", tmp_path, check=True, diff=True, **_crl_args(tree))
    assert predicted["changed"] and predicted["reasons"] == ["CRL missing"] and predicted["crl_number"] == 1
    assert predicted["diff"]["before"] == {} and not os.path.exists(tree["path"])
    first = run_module("crl", tmp_path, **_crl_args(tree))
    assert first["changed"] and first["crl_number"] == 1 and first["revoked"] == [] and "diff" not in first
    assert first["days_left"] == 30 and first["issuer"] == "/CN=ContextForge-CA/O=ContextForge/OU=Plugins"
    assert oct(os.stat(tree["path"]).st_mode & 0o777) == "0o644"
    assert not run_module("crl", tmp_path, **_crl_args(tree))["changed"]
    with open(tree["path"], "rb") as handle:
        before = handle.read()
    check = run_module("crl", tmp_path, check=True, **_crl_args(tree, revoke=[tree["clients"][0]]))
    assert check["changed"] and check["crl_number"] == 2 and len(check["added"]) == 1
    with open(tree["path"], "rb") as handle:
        assert handle.read() == before
    revoked = run_module("crl", tmp_path, diff=True,
                         **_crl_args(tree, revoke=[tree["clients"][0]], reason="superseded"))
    assert revoked["changed"] and revoked["crl_number"] == 2 and revoked["added"] == check["added"]
    assert [entry["reason"] for entry in revoked["revoked"]] == ["superseded"]
    assert revoked["diff"]["after"]["revoked"] == revoked["revoked"]
    again = run_module("crl", tmp_path, **_crl_args(tree, revoke=[tree["clients"][0]]))
    assert not again["changed"] and again["revoked"] == revoked["revoked"]
    everything = json.dumps([predicted, first, check, revoked, again])
    assert "ca-secret" not in everything and "PRIVATE KEY" not in everything


@pytest.mark.parametrize("extra, fragment", [
    ({"renew_before_days": 40}, "renew_before_days (40) must be smaller than next_update_days (30)"),
    ({"next_update_days": 0, "renew_before_days": 0}, "next_update_days must be >= 1"),
    ({"ca_passphrase": "wrong"}, "cannot open CA key"),
    ({"revoke": ["CA"]}, "is the CA certificate itself"),
])
def test_errors_are_one_clear_message_and_write_nothing(run_module, tmp_path, tree, extra, fragment):
    if extra.get("revoke") == ["CA"]:
        extra = {"revoke": [tree["ca_cert"]]}
    result = run_module("crl", tmp_path, **_crl_args(tree, **extra))
    assert result["failed"] and fragment in result["msg"], result
    assert "ca-secret" not in json.dumps(result) and not os.path.exists(tree["path"])


def test_a_bad_reason_is_refused_by_the_argument_spec(run_module, tmp_path, tree):
    result = run_module("crl", tmp_path, **_crl_args(tree, reason="cACompromise"))
    assert result["failed"] and "reason" in result["msg"] and "keyCompromise" in result["msg"]
