# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module verify_host end to end as Ansible runs it (fixture verify_host, tests/unit/conftest.py): what the module
adds to the checks of module_utils/_tlscheck.py and _keysearch.py (tested in tests/unit/plugins/module_utils/):
the file_owner_mode records, its input errors, and the foreign key kept out of its output."""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

ME = pwd.getpwuid(os.getuid()).pw_name


def test_file_owner_mode_records(verify_host, tmp_path):
    key = tmp_path / "tls" / "server.key"
    key.parent.mkdir()
    key.write_text("k\n")
    key.chmod(0o600)
    (tmp_path / "tls" / "link.key").symlink_to(key)  # pointing to a file that would pass
    cases = [  # (path, owner, mode, ok, expected, seen)
        (key, ME, "0600", True, f"{ME} 0600", f"{ME} 0600"),
        (key, None, "0600", True, "any owner 0600", f"{ME} 0600"),
        (key, ME, "0644", False, f"{ME} 0644", f"{ME} 0600"),
        (key, "someone-else", "0600", False, "someone-else 0600", f"{ME} 0600"),
        (tmp_path / "tls" / "missing.key", ME, "0600", False, f"{ME} 0600", "missing"),
        (tmp_path / "tls" / "link.key", ME, "0600", False, f"{ME} 0600", f"{ME} 0777 (not a regular file)"),
    ]
    result = verify_host(host="h1", files=[{"path": str(path), "owner": owner, "mode": mode}
                                           for path, owner, mode, *_rest in cases])
    assert "msg" not in result, result
    assert result["checks"] == [{"check": "file_owner_mode", "target": str(path), "ok": ok, "expected": expected, "seen": seen}
                                for path, _owner, _mode, ok, expected, seen in cases]


@pytest.mark.parametrize("args, fragment", [
    ({"local_plugins": [{"name": "a", "health_port": 9000}]}, "local_plugins[0] (a) lacks port"),
    ({"local_plugins": [{"name": "a", "port": 70000, "health_port": 9000}]},
     "local_plugins[0] (a): port must be a port number 1-65535, got 70000"),
    ({"remote_plugins": [{"name": "a", "url": "https://localhost:8443/mcp"}]}, "remote_plugins needs client"),
    ({"ca_files": ["/nonexistent/ca.crt"], "files": [{"path": "/nonexistent/a", "mode": "0600"}]},
     "ca_files runs alone, on the controller; remove files or make a second call"),
], ids=["local-without-port", "local-port-70000", "remote-without-client", "ca-files-with-files"])
def test_bad_input_is_one_clear_error(verify_host, args, fragment):
    result = verify_host(**args)
    assert result["failed"] is True and fragment in result["msg"] and "checks" not in result, result


@pytest.mark.parametrize("content, fragment", [
    (None, "No such file or directory"),
    ("-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", "a certificate openssl cannot read"),
], ids=["missing", "unreadable"])
def test_unreadable_ca_files_are_one_clear_error(verify_host, tmp_path, content, fragment):
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_text(content)
    result = verify_host(ca_files=[str(path)])
    assert result["failed"] is True and result["msg"].startswith("cannot read the CA files: "), result
    assert fragment in result["msg"] and str(path) in result["msg"] and "ca_identities" not in result, result


def _self_signed(folder, name):
    """(certificate, key) PEM texts of a self-signed client certificate."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={name}", "-days", "1", "-addext", "extendedKeyUsage=clientAuth",
                    "-keyout", f"{name}.key", "-out", f"{name}.crt"], cwd=folder, check=True, capture_output=True)
    return (folder / f"{name}.crt").read_text(), (folder / f"{name}.key").read_text()


@pytest.mark.parametrize("mismatched", [False, True], ids=["server-down", "key-of-another-certificate"])
def test_the_foreign_key_never_appears_in_the_output(verify_host, tmp_path, monkeypatch, mismatched):
    cert, key = _self_signed(tmp_path, "foreign")
    other, _other_key = _self_signed(tmp_path, "other")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where the module writes the foreign files for the checks
    result = verify_host(remote_plugins=[{"name": "t", "url": "https://mcp-plugin-t.invalid:8443/mcp"}],
                         client={"cert": str(tmp_path / "foreign.crt"), "key": str(tmp_path / "foreign.key"),
                                 "ca": str(tmp_path / "foreign.crt")},
                         foreign={"cert": other if mismatched else cert, "key": key, "ca": other if mismatched else cert})
    records = {record["check"]: record for record in result["checks"]}
    assert records["foreign_ca_cert_refused"]["ok"] is False, records
    if mismatched:
        assert "do not load together" in records["foreign_ca_cert_refused"]["seen"], records
    text = json.dumps(result)
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert body and not [line for line in body if line in text], text
    assert list(temp.iterdir()) == []  # the foreign files are removed before the module returns


def test_the_foreign_key_never_reaches_the_journal(verify_host, journal):
    """AnsibleModule logs every invocation to the host's journal; a stand-in systemd.journal records what it gets."""
    key = "-----BEGIN PRIVATE KEY-----\nS3CRETFOREIGNKEY\n-----END PRIVATE KEY-----\n"
    result = verify_host(host="h1", remote_plugins=[{"name": "t", "url": "https://127.0.0.1:9/mcp"}],
                         client={"cert": "/nonexistent/c", "key": "/nonexistent/k", "ca": "/nonexistent/ca"},
                         foreign={"cert": "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n", "key": key})
    assert "checks" in result, result
    logged = journal.read_text(encoding="utf-8")
    assert "Invoked with" in logged, logged  # the stand-in really got the invocation
    assert "S3CRETFOREIGNKEY" not in logged and "PRIVATE KEY" not in logged, logged


def test_local_plugin_health_is_awaited_and_the_loaded_files_compared(verify_host, tmp_path):
    """A health endpoint that comes up 2 s after the call starts passes with wait; the instance's record of what
    it loaded is compared with the deployed files (same, changed, missing)."""
    import hashlib
    import socket
    import sys
    import time

    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    health, port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-c", (
        "import time, http.server, socketserver, socket\n"
        "time.sleep(2)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
        "    def log_message(self, *a): pass\n"
        f"main = socket.socket(); main.bind(('127.0.0.1', {port})); main.listen()\n"
        f"http.server.HTTPServer(('127.0.0.1', {health}), H).serve_forever()\n")])
    try:
        config, state = tmp_path / "etc", tmp_path / "run"
        (config / "a" / "tls").mkdir(parents=True)
        (state / "a").mkdir(parents=True)
        files = ("config.yaml", "env", "tls/server.crt", "tls/server.key", "tls/ca.crt")
        for name in files:
            (config / "a" / name).write_text("content of %s\n" % name)
        (state / "a" / "loaded.sha256").write_text("".join(
            "%s  %s\n" % (hashlib.sha256((config / "a" / n).read_bytes()).hexdigest(), n) for n in files))
        plugin = [{"name": "a", "port": port, "health_port": health}]
        started = time.monotonic()
        result = verify_host(local_plugins=plugin, wait=20, loaded_from=str(config), loaded_state_dir=str(state))
        by_check = {r["check"]: r for r in result["checks"]}
        assert by_check["health_answers_on_loopback"]["ok"] and time.monotonic() - started >= 1.5, result
        assert by_check["runs_with_deployed_files"]["ok"] and by_check["mtls_port_listening"]["ok"], result
        (config / "a" / "env").write_text("changed\n")
        result = verify_host(local_plugins=plugin, loaded_from=str(config), loaded_state_dir=str(state))
        loaded = [r for r in result["checks"] if r["check"] == "runs_with_deployed_files"]
        assert loaded == [{"check": "runs_with_deployed_files", "target": "a", "ok": False,
                           "expected": "the files of %s/a" % config, "seen": "runs with another env than deployed"}]
        (state / "a" / "loaded.sha256").unlink()
        result = verify_host(local_plugins=plugin, loaded_from=str(config), loaded_state_dir=str(state))
        assert [r["seen"] for r in result["checks"] if r["check"] == "runs_with_deployed_files"] == [
            "not running (no record of what it loaded)"]
    finally:
        server.kill()
        server.wait()
    result = verify_host(local_plugins=plugin)
    assert not {r["check"]: r for r in result["checks"]}["health_answers_on_loopback"]["ok"], result
