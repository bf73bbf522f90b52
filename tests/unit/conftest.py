# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make `ansible_collections.mcpgateway.mtls` importable when pytest runs from a plain checkout.

Under `ansible-test units` the collection already sits in ansible_collections/mcpgateway/mtls; from a
checkout, `make venv` links it under .build/collections.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))


def _collections_root():
    parent = os.path.dirname(os.path.dirname(os.path.dirname(_ROOT)))
    if os.path.basename(os.path.dirname(os.path.dirname(_ROOT))) == "ansible_collections":
        return parent
    return os.path.join(_ROOT, ".build", "collections")


if _collections_root() not in sys.path:
    sys.path.insert(0, _collections_root())


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def run_module():
    """run(module, tmp_path, check=False, diff=False, **args) of plugins/modules/test_modules.py: a module of the
    collection end to end as Ansible runs it (a JSON args file), for the test files of other folders."""
    return _load("_module_runner", os.path.join(_HERE, "plugins", "modules", "test_modules.py")).run


@pytest.fixture
def verify_host(run_module, tmp_path):
    """verify_host(**args): module verify_host end to end, as Ansible runs it; its result (records in 'checks')."""
    return lambda **args: run_module("verify_host", tmp_path, **args)


@pytest.fixture
def journal(tmp_path, monkeypatch):
    """A stand-in systemd.journal for the modules run by run_module: AnsibleModule logs every invocation to the
    host's journal; this returns the file the stand-in writes each message to."""
    fake = tmp_path / "fake-systemd" / "systemd"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "daemon.py").write_text("def booted():\n    return True\n")
    (fake / "journal.py").write_text(
        "import os\n"
        "def sendv(*args):\n    pass\n"
        "def send(MESSAGE='', **fields):\n"
        "    with open(os.environ['FAKE_JOURNAL'], 'a', encoding='utf-8') as handle:\n"
        "        handle.write(MESSAGE + '\\n')\n")
    logged = tmp_path / "journal.log"
    monkeypatch.setenv("FAKE_JOURNAL", str(logged))
    monkeypatch.setenv("PYTHONPATH", str(fake.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return logged
