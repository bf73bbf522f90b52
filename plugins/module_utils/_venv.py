# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""One install mechanism for every service venv (module python_env): a stamp decides, pip runs only on change.

The stamp is a sha256 of what the venv must hold: the requirements, where pip takes them from, the Python that
made the venv and the fingerprint of the wheelhouse (the wheels' names and the host package's digest). A no-op
run reads one small file. Changes made by hand inside the venv are not seen: remove the stamp to force pip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tarfile
import tempfile

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._io import write_file

STAMP = ".mcp-requirements.sha256"
WHEELHOUSE_STAMP = ".stamp"


def stamp(params):
    """The fingerprint of the venv's wanted content (no secret goes into it: the environment stays out)."""
    wanted = {key: params.get(key) for key in ("python", "index_url", "no_index", "extra_args", "wheelhouse_stamp")}
    wanted["requirements"] = sorted(params["requirements"])
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode("utf-8")).hexdigest()


def read_text(path):
    """The stripped content of PATH, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def pip_argv(params):
    """The pip command that installs the requirements into the venv."""
    argv = [os.path.join(params["path"], "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input"]
    if params.get("no_index"):
        argv.append("--no-index")
    if params.get("wheelhouse"):
        argv += ["--find-links", params["wheelhouse"]]
    if params.get("index_url"):
        argv += ["--index-url", params["index_url"]]
    return argv + shlex.split(params.get("extra_args") or "") + list(params["requirements"])


def unpack(archive, wheelhouse, wheelhouse_stamp):
    """Replace the folder WHEELHOUSE with the wheels of the tar ARCHIVE (flat *.whl files only), then stamp it."""
    parent = os.path.dirname(wheelhouse.rstrip("/")) or "/"
    os.makedirs(parent, mode=0o755, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=".wheelhouse-", dir=parent)
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                name = member.name
                if not member.isfile() or "/" in name or name.startswith(".") or not name.endswith(".whl"):
                    raise PKIError("the wheelhouse archive holds %r: only wheel files (*.whl) at its top are "
                                   "accepted" % name)
                source = tar.extractfile(member)
                with open(os.path.join(fresh, name), "wb") as handle:
                    shutil.copyfileobj(source, handle)
                os.chmod(os.path.join(fresh, name), 0o644)
        write_file(os.path.join(fresh, WHEELHOUSE_STAMP), (wheelhouse_stamp + "\n").encode(), 0o644)
        os.chmod(fresh, 0o755)
        old = None
        if os.path.lexists(wheelhouse):
            old = tempfile.mkdtemp(prefix=".wheelhouse-old-", dir=parent)
            os.rename(wheelhouse, os.path.join(old, "w"))
        os.rename(fresh, wheelhouse)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def python_problem(params, run_command):
    """Raise PKIError naming the fix when PARAMS['python'] cannot make the venv: missing, older than
    PARAMS['min_python'], or without the venv module and ensurepip (Debian's python3-venv)."""
    minimum = params.get("min_python") or "3.9"
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    try:
        rc, out, err = run_command([params["python"], "-c", probe])
    except OSError as exc:
        rc, out, err = 127, "", str(exc)
    have = out.strip()
    wanted = tuple(int(part) for part in minimum.split("."))
    if rc != 0 or not have or tuple(int(part) for part in have.split(".")) < wanted:
        raise PKIError("%s cannot make the venv %s: it must be Python >= %s with the venv module and ensurepip "
                       "(Debian, Ubuntu: apt install python3-venv); it is %s. %s" % (
                           params["python"], params["path"], minimum, have or "not usable", (err or "").strip()[-300:]))


def converge(params, run_command, check_mode):
    """Bring the venv to PARAMS. Returns the module's result; run_command(argv, environ_update=...) runs programs.

    When the venv's stamp differs and the host's wheelhouse does not hold PARAMS['wheelhouse_stamp'], nothing is
    done and the result says wheelhouse_needed (the action plugin then sends the archive and calls again)."""
    wanted = stamp(params)
    stamp_path = os.path.join(params["path"], STAMP)
    python = os.path.join(params["path"], "bin", "python")
    if read_text(stamp_path) == wanted and os.path.exists(python):
        return {"changed": False, "stamp": wanted}
    reasons = ["the venv has no stamp" if read_text(stamp_path) is None else "the wanted packages changed"]
    if not os.path.exists(python):
        python_problem(params, run_command)
    wheelhouse = params.get("wheelhouse")
    if wheelhouse and read_text(os.path.join(wheelhouse, WHEELHOUSE_STAMP)) != params.get("wheelhouse_stamp"):
        if not params.get("archive"):
            return {"changed": False, "wheelhouse_needed": True, "stamp": wanted}
        reasons.append("the wheelhouse changed")
        if not check_mode:
            unpack(params["archive"], wheelhouse, params["wheelhouse_stamp"])
    if check_mode:
        return {"changed": True, "stamp": wanted, "reasons": reasons}
    if not os.path.exists(python):
        rc, _out, err = run_command([params["python"], "-m", "venv", params["path"]])
        if rc != 0:
            raise PKIError("cannot create the venv %s with %s (is python3-venv installed?): %s"
                           % (params["path"], params["python"], err.strip()[-2000:]))
    rc, out, err = run_command(pip_argv(params), environ_update=dict(params.get("environment") or {}))
    if rc != 0:
        raise PKIError("pip could not install %s into %s (exit %d): %s"
                       % (" ".join(params["requirements"]), params["path"], rc, (err or out).strip()[-3000:]))
    write_file(stamp_path, (wanted + "\n").encode(), 0o644)
    return {"changed": True, "stamp": wanted, "reasons": reasons}
