# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# This module_util is private to mcpgateway.mtls: it may change without notice.
"""Plan of the TLS file sets that role tls_files deploys (pure functions, unit-tested).

A set (a service's key, certificate and CA bundle) goes into DIR/tls.d/ID/, ID derived from the
checksums of its files, and DIR/tls is a symlink to it: switching the link switches key, certificate
and CA bundle at once, so no reader ever sees a key with another certificate.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

from ansible_collections.mcpgateway.mtls.plugins.module_utils._plan import PlanError

_DEST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LINK = "tls"
VERSIONS = "tls.d"
LEGACY = "legacy"


def set_id(checksums):
    """ID of a set from {dest: sha256 checksum}: 16 hex digits, the same for the same contents."""
    text = "".join("%s:%s\n" % (dest, checksums[dest]) for dest in sorted(checksums))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tls_sets(sets, stats):
    """SETS (role input) + STATS (the stat results of each set's source files on the controller,
    as registered by a loop over `sets | subelements('files')`) -> the sets with id, link, version
    folder and each file's destination path."""
    checksums = {}
    for result in stats or []:
        item = result.get("item") or [{}, {}]
        name, src = item[0].get("name"), item[1].get("src")
        stat = result.get("stat") or {}
        if not stat.get("exists"):
            raise PlanError("TLS set %s: %s does not exist on the controller (run the pki role first)" % (name, src))
        if not stat.get("isreg"):
            raise PlanError("TLS set %s: %s is not a regular file" % (name, src))
        checksums.setdefault(name, {})[item[1].get("dest")] = stat.get("checksum")
    out, names = [], set()
    for entry in sets or []:
        name, folder = entry.get("name"), entry.get("dir")
        if not name or name in names:
            raise PlanError("TLS sets need unique names, got %r" % (name,))
        names.add(name)
        if not isinstance(folder, str) or not posixpath.isabs(folder) or ".." in folder.split("/"):
            raise PlanError("TLS set %s: dir must be an absolute path without '..', got %r" % (name, folder))
        files = entry.get("files") or []
        dests = [f.get("dest") for f in files]
        if not files or len(set(dests)) != len(dests) or not all(isinstance(d, str) and _DEST.match(d) for d in dests):
            raise PlanError("TLS set %s: files need distinct plain file names as dest, got %r" % (name, dests))
        sums = checksums.get(name, {})
        missing = [d for d in dests if not sums.get(d)]
        if missing:
            raise PlanError("TLS set %s: no checksum for %s" % (name, ", ".join(missing)))
        ident = set_id({d: sums[d] for d in dests})
        version = posixpath.join(folder, VERSIONS, ident)
        out.append(dict(entry, id=ident, link=posixpath.join(folder, LINK), versions=posixpath.join(folder, VERSIONS),
                        version_dir=version, link_src=posixpath.join(VERSIONS, ident),
                        files=[dict(f, path=posixpath.join(version, f["dest"])) for f in files]))
    return out


def tls_prune(plan, links, found):
    """Version folders to remove: all but the current one and the newest other one (the previous
    set, kept for a rollback). LINKS: stat results of each set's link before the switch (a plain
    folder there is version 0.1's, moved aside to tls.d/legacy: then that is the previous set),
    FOUND: find results (path, mtime) of the version folders."""
    current = {entry["versions"]: entry["id"] for entry in plan}
    legacy = set()
    for result in links or []:
        stat = result.get("stat") or {}
        entry = result.get("item") or {}
        if stat.get("isdir") and not stat.get("islnk") and entry.get("versions") in current:
            legacy.add(entry["versions"])
    others = {}
    for item in found or []:
        path = item.get("path", "")
        parent, base = posixpath.dirname(path), posixpath.basename(path)
        if parent in current and base != current[parent]:
            others.setdefault(parent, []).append((float(item.get("mtime") or 0), path))
    remove = []
    for parent, folders in others.items():
        folders.sort(reverse=True)
        keep = posixpath.join(parent, LEGACY) if parent in legacy else folders[0][1]
        remove.extend(path for _mtime, path in folders if path != keep)
    return sorted(remove)
