# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection.
# Breaking changes can occur at any time.

"""The host package (host/src/mcp_mtls_host) as a reproducible wheel, built on the controller without build tools.

The same sources give the same bytes (sorted entries, fixed timestamps and modes), so the wheel's digest is a
fingerprint of the code that runs on the hosts. Its version carries that fingerprint as a local label
(1.0.0+g0123456789ab): a changed source is a new version that pip installs over the old one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import zipfile

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError

PACKAGE = "mcp_mtls_host"
DIST = "mcp-mtls-host"
# Console scripts pip writes into the venv's bin/ (name -> module:function).
ENTRY_POINTS = {
    "mcp-mtls-probe": "mcp_mtls_host.probe:main",
    "mcp-plugin-launcher": "mcp_mtls_host.launcher:main",
    "mcp-mtls-gateway": "mcp_mtls_host.frontdoor:main",
}
# Modules of the package that run on the controller only (the scheduled rotation's wrapper, installed by role
# rotate_schedule): left out of the wheel, so a change to them restarts no service on the hosts.
CONTROLLER_ONLY = ("mcp_mtls_host/rotate.py",)
# Files at the root of site-packages: a .pth line runs when Python starts in the venv. This one makes cpex's plugin
# client trust only its ca_bundle (mcp_mtls_host.client_trust), in the gateway and in every process it starts.
ROOT_FILES = (
    ("mcp_mtls_host_client_trust.pth",
     b"import mcp_mtls_host.client_trust as _mcp_mtls_trust; _mcp_mtls_trust.install()\n"),
)
_EPOCH = (1980, 1, 1, 0, 0, 0)
_VERSION = re.compile(r'^__version__\s*=\s*"([0-9][0-9A-Za-z.]*)"\s*$', re.M)


def package_dir(collection_root):
    """Where the collection keeps the host package's sources."""
    return os.path.join(collection_root, "host", "src", PACKAGE)


def _sources(src):
    """(archive name, bytes) of every .py file of the package at SRC, sorted."""
    found = []
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(src)).replace(os.sep, "/")
            if name.endswith(".py") and rel not in CONTROLLER_ONLY:
                with open(path, "rb") as handle:
                    found.append((rel, handle.read()))
    if not found:
        raise PKIError("the host package's sources are missing: no .py file in %s" % src)
    return sorted(found)


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def build(src):
    """The wheel of the package at SRC: {'filename', 'version', 'data' (bytes), 'sha256'}."""
    sources = _sources(src)
    init = dict(sources).get(PACKAGE + "/__init__.py", b"").decode("utf-8")
    match = _VERSION.search(init)
    if not match:
        raise PKIError("%s/__init__.py has no __version__ = \"X.Y.Z\" line" % src)
    fingerprint = hashlib.sha256()
    for name, data in sources + list(ROOT_FILES):
        fingerprint.update(name.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
    version = "%s+g%s" % (match.group(1), fingerprint.hexdigest()[:12])
    info = "%s-%s.dist-info" % (PACKAGE, version)
    metadata = [
        ("%s/METADATA" % info, ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: Host-side programs of the "
                                "mcpgateway.mtls collection\nRequires-Python: >=3.9\n" % (DIST, version)).encode()),
        ("%s/WHEEL" % info, b"Wheel-Version: 1.0\nGenerator: mcpgateway.mtls\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        ("%s/entry_points.txt" % info, ("[console_scripts]\n" + "".join(
            "%s = %s\n" % item for item in sorted(ENTRY_POINTS.items()))).encode()),
        ("%s/top_level.txt" % info, (PACKAGE + "\n").encode()),
    ]
    entries = sources + list(ROOT_FILES) + metadata
    record_name = "%s/RECORD" % info
    record = "\n".join([_record_line(n, d) for n, d in entries] + ["%s,," % record_name, ""]).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries + [(record_name, record)]:
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.external_attr = 0o100644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(item, data)
    data = buffer.getvalue()
    return {"filename": "%s-%s-py3-none-any.whl" % (PACKAGE, version), "version": version, "data": data,
            "sha256": hashlib.sha256(data).hexdigest()}
