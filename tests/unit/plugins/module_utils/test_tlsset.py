"""Plan of atomic TLS file sets (module_utils/_tlsset.py, role tls_files)."""

from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _tlsset as T
from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError


def _stats(sets, checksums):
    out = []
    for entry in sets:
        for item in entry["files"]:
            sum_ = checksums.get(item["dest"])
            out.append({"item": [entry, item], "stat": {"exists": sum_ is not None, "isreg": True, "checksum": sum_}})
    return out


SETS = [{"name": "A", "dir": "/etc/mcp-plugins/A", "group": "grp", "files": [
    {"src": "/pki/plugins/A/server.key", "dest": "server.key", "owner": "svc", "group": "grp", "mode": "0600"},
    {"src": "/pki/plugins/A/server.crt", "dest": "server.crt", "owner": "root", "group": "root", "mode": "0644"},
    {"src": "/pki/plugins/A/ca.crt", "dest": "ca.crt", "owner": "root", "group": "root", "mode": "0644"},
]}]
SUMS = {"server.key": "1" * 64, "server.crt": "2" * 64, "ca.crt": "3" * 64}


def test_plan_puts_files_in_a_version_folder_named_by_content():
    (plan,) = T.tls_sets(SETS, _stats(SETS, SUMS))
    assert plan["link"] == "/etc/mcp-plugins/A/tls" and plan["link_src"] == "tls.d/" + plan["id"]
    assert [f["path"] for f in plan["files"]] == ["/etc/mcp-plugins/A/tls.d/%s/%s" % (plan["id"], d)
                                                  for d in ("server.key", "server.crt", "ca.crt")]
    again = T.tls_sets(SETS, _stats(SETS, dict(SUMS)))[0]["id"]
    other = T.tls_sets(SETS, _stats(SETS, dict(SUMS, **{"ca.crt": "4" * 64})))[0]["id"]
    assert again == plan["id"] != other and len(other) == 16


@pytest.mark.parametrize("sets, sums, needle", [
    (SETS, dict(SUMS, **{"server.key": None}), "does not exist on the controller"),
    (SETS + SETS, SUMS, "unique names"),
    ([dict(SETS[0], dir="relative/A")], SUMS, "absolute path"),
    ([dict(SETS[0], dir="/etc/../A")], SUMS, "without '..'"),
    ([dict(SETS[0], files=[dict(SETS[0]["files"][0], dest="../key")])], {"../key": "1" * 64}, "plain file names"),
])
def test_plan_refuses_bad_sets(sets, sums, needle):
    with pytest.raises(PlanError, match=needle):
        T.tls_sets(sets, _stats(sets, sums))


def test_prune_keeps_current_and_the_newest_other():
    (plan,) = T.tls_sets(SETS, _stats(SETS, SUMS))
    versions = plan["versions"]
    link = [{"item": plan, "stat": {"islnk": True, "lnk_source": versions + "/" + plan["id"]}}]
    found = [{"path": "%s/%s" % (versions, name), "mtime": mtime}
             for name, mtime in ((plan["id"], 30), ("0000000000000001", 20), ("0000000000000002", 10), ("legacy", 5))]
    assert T.tls_prune([plan], link, found) == [versions + "/0000000000000002", versions + "/legacy"]
    # A run that changes nothing removes nothing more: the previous set stays the newest other one.
    assert T.tls_prune([plan], link, found[:2]) == []
    # A plain folder of version 0.1 (moved aside to legacy in this run) is the previous one.
    plain = [{"item": plan, "stat": {"isdir": True, "islnk": False}}]
    assert T.tls_prune([plan], plain, found) == [versions + "/0000000000000001", versions + "/0000000000000002"]
    # Other folders' versions are never touched.
    assert T.tls_prune([plan], link, [{"path": "/etc/other/tls.d/0000000000000009", "mtime": 1}]) == []
