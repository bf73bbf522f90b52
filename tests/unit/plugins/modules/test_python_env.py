# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host package's wheel (module_utils/_wheel) and module python_env end to end: a real venv, real pip,
offline (--no-index, the wheelhouse only). The action plugin's transfer is exercised by every role run."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _venv, _wheel
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
SOURCES = _wheel.package_dir(ROOT)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel():
    return _wheel.build(SOURCES)


def test_wheel_is_reproducible_and_versioned_by_content(wheel, tmp_path):
    assert _wheel.build(SOURCES)["sha256"] == wheel["sha256"]
    assert wheel["filename"] == "mcp_mtls_host-%s-py3-none-any.whl" % wheel["version"]
    copy = tmp_path / "mcp_mtls_host"
    subprocess.run(["cp", "-r", SOURCES, str(copy)], check=True)
    (copy / "launcher.py").write_text((copy / "launcher.py").read_text() + "\n# changed\n")
    changed = _wheel.build(str(copy))
    assert changed["version"] != wheel["version"] and changed["version"].split("+")[0] == wheel["version"].split("+")[0]


def test_wheel_record_matches_its_content(wheel):
    with zipfile.ZipFile(io.BytesIO(wheel["data"])) as archive:
        names = archive.namelist()
        record = archive.read(next(n for n in names if n.endswith("/RECORD"))).decode().splitlines()
        assert "mcp_mtls_host/launcher.py" in names and "mcp_mtls_host/probe.py" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert "mcp_mtls_host/rotate.py" not in names  # the controller's wrapper restarts nothing on the hosts
        listed = {line.split(",")[0] for line in record if line}
        assert listed == set(names)
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        assert "mcp-mtls-probe = mcp_mtls_host.probe:main" in entry_points


def test_wheel_without_sources_or_version_is_refused(tmp_path):
    with pytest.raises(PKIError, match="sources are missing"):
        _wheel.build(str(tmp_path))
    (tmp_path / "__init__.py").write_text("VERSION = 1\n")
    with pytest.raises(PKIError, match="__version__"):
        _wheel.build(str(tmp_path))


def test_stamp_ignores_the_environment_and_the_order():
    base = {"requirements": ["a==1", "b==2"], "python": "python3", "wheelhouse_stamp": "x"}
    assert _venv.stamp(base) == _venv.stamp(dict(base, requirements=["b==2", "a==1"], environment={"P": "s"}))
    assert _venv.stamp(base) != _venv.stamp(dict(base, requirements=["a==1", "b==3"]))
    assert _venv.stamp(base) != _venv.stamp(dict(base, wheelhouse_stamp="y"))


def _archive(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_accepts_only_flat_wheels(tmp_path):
    bad = tmp_path / "bad.tar"
    _archive(bad, [("../evil.whl", b"x")])
    with pytest.raises(PKIError, match="only wheel files"):
        _venv.unpack(str(bad), str(tmp_path / "wh"), "s")
    assert not (tmp_path / "wh").exists() and not (tmp_path / "evil.whl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar"]  # no scratch folder left behind


def test_python_env_end_to_end(run_module, wheel, tmp_path):
    """Needs the wheelhouse -> archive sent -> installed (console scripts work) -> no-op -> check mode on change."""
    archive = tmp_path / "wheels.tar"
    _archive(archive, [(wheel["filename"], wheel["data"])])
    args = {"path": str(tmp_path / "venv"), "python": sys.executable, "wheelhouse": str(tmp_path / "wheelhouse"),
            "no_index": True, "wheelhouse_stamp": "stamp-1", "environment": {"PIP_PROXY_SECRET": "hush-1234"},
            "requirements": ["mcp-mtls-host==%s" % wheel["version"]]}
    first = run_module("python_env", tmp_path, **args)
    assert first["wheelhouse_needed"] is True and first["changed"] is False, first
    assert not (tmp_path / "venv").exists()
    installed = run_module("python_env", tmp_path, archive=str(archive), **args)
    assert installed["changed"] is True and not installed.get("failed"), installed
    assert "hush-1234" not in json.dumps(installed)
    assert (tmp_path / "wheelhouse" / ".stamp").read_text().strip() == "stamp-1"
    policy = subprocess.run([str(tmp_path / "venv/bin/mcp-plugin-launcher"), "--check-tls-policy"],
                            capture_output=True, text=True, check=False)
    assert policy.returncode == 0, policy.stderr
    again = run_module("python_env", tmp_path, **args)
    assert again["changed"] is False and "wheelhouse_needed" not in again, again
    check = run_module("python_env", tmp_path, check=True, **dict(args, requirements=args["requirements"] + ["x==1"]))
    assert check["changed"] is True and "the wanted packages changed" in check["reasons"]
    assert (tmp_path / "venv" / _venv.STAMP).read_text().strip() == again["stamp"]


def test_python_env_pip_failure_names_the_requirement(run_module, tmp_path):
    (tmp_path / "wheelhouse").mkdir()
    (tmp_path / "wheelhouse" / ".stamp").write_text("s\n")
    result = run_module("python_env", tmp_path, path=str(tmp_path / "venv"), python=sys.executable,
                        wheelhouse=str(tmp_path / "wheelhouse"), no_index=True, wheelhouse_stamp="s",
                        requirements=["no-such-package-mcp==9.9"])
    assert result.get("failed") and "pip could not install no-such-package-mcp==9.9" in result["msg"], result
    assert not (tmp_path / "venv" / _venv.STAMP).exists()


@pytest.mark.parametrize("python, minimum, needle", [
    ("/nonexistent/python3", "3.9", "it is not usable"),
    (sys.executable, "9.0", "must be Python >= 9.0"),
])
def test_python_env_names_an_unusable_python(run_module, tmp_path, python, minimum, needle):
    for check in (True, False):
        result = run_module("python_env", tmp_path, check=check, path=str(tmp_path / "venv"), python=python,
                            min_python=minimum, wheelhouse=str(tmp_path / "wheelhouse"), requirements=["x==1"],
                            wheelhouse_stamp="s", archive=str(tmp_path / "none.tar"))
        assert result.get("failed") and needle in result["msg"] and "python3-venv" in result["msg"], result
        assert not (tmp_path / "venv").exists()
