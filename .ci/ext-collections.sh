#!/usr/bin/env bash
# Unpack the collections we need (containers.podman, ansible.posix, community.crypto) from the
# `ansible` wheel on PyPI into DEST (an ansible_collections folder). Idempotent.
set -euo pipefail
pkg=$1 dest=$2
want=(containers/podman ansible/posix community/crypto)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$pkg"
whl=$(ls "$tmp"/ansible-*.whl)
mkdir -p "$dest"
for c in "${want[@]}"; do
  rm -rf "${dest:?}/$c"
  python3 - "$whl" "ansible_collections/$c/" "$dest/.." <<'PY'
import sys, zipfile
whl, prefix, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix)]
    if not names:
        sys.exit(f"{prefix} not found in {whl}")
    z.extractall(out, names)
PY
done
