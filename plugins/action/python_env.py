# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of module python_env: builds the host package's wheel, and ships the wheels only when pip must run.

A no-op costs one remote call (the module reads the venv's stamp). When the stamp differs and the host's wheelhouse
lacks the wanted wheels, one tar archive (the local wheelhouse's wheels plus the host package) is sent and the module
runs again to unpack it and install.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.mcpgateway.mtls.plugins.module_utils import _wheel
from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

MODULE = "mcpgateway.mtls.python_env"
_COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wheels(folder):
    """The wheel files of the controller folder FOLDER, sorted ('' = none)."""
    if not folder:
        return []
    if not os.path.isdir(folder):
        raise AnsibleActionFail("local_wheelhouse %s is not a folder on the controller" % folder)
    found = sorted(glob.glob(os.path.join(glob.escape(folder), "*.whl")))
    if not found:
        raise AnsibleActionFail("local_wheelhouse %s holds no wheel (*.whl)" % folder)
    return found


def _archive(path, wheels, package):
    """Write the tar PATH: every file of WHEELS and the host PACKAGE's wheel, flat."""
    with tarfile.open(path, "w") as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=os.path.basename(wheel), recursive=False)
        info = tarfile.TarInfo(package["filename"])
        info.size = len(package["data"])
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(package["data"]))


class ActionModule(ActionBase):
    # No early remote temp folder: a no-op is the module's one (pipelined) call; the folder is made only to send.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        for internal in ("wheelhouse_stamp", "archive"):
            if internal in args:
                raise AnsibleActionFail("%s is set by the action itself; leave it out" % internal)
        try:
            package = _wheel.build(_wheel.package_dir(_COLLECTION))
        except PKIError as exc:
            raise AnsibleActionFail(str(exc)) from None
        wheels = _wheels(args.get("local_wheelhouse") or "")
        fingerprint = {"wheels": [os.path.basename(w) for w in wheels], "host_package": package["sha256"]}
        args["wheelhouse_stamp"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        args["requirements"] = list(args.get("requirements") or []) + ["%s==%s" % (_wheel.DIST, package["version"])]
        result = self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        if result.get("failed") or not result.pop("wheelhouse_needed", False):
            result["host_package"] = package["version"]
            return result
        if self._task.check_mode:
            return dict(result, changed=True, host_package=package["version"],
                        reasons=["the venv's packages or the wheelhouse changed"])
        scratch = tempfile.mkdtemp(prefix="mcp-python-env-")
        try:
            local = os.path.join(scratch, "wheelhouse.tar")
            _archive(local, wheels, package)
            remote_tmp = self._make_tmp_path()
            remote = self._connection._shell.join_path(remote_tmp, "wheelhouse.tar")
            self._transfer_file(local, remote)
            self._fixup_perms2((remote_tmp, remote))
            args["archive"] = remote
            result = self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        finally:
            for name in os.listdir(scratch):
                os.unlink(os.path.join(scratch, name))
            os.rmdir(scratch)
            self._remove_tmp_path(self._connection._shell.tmpdir)
        result["host_package"] = package["version"]
        return result
