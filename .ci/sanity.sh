#!/usr/bin/env bash
# ansible-test sanity needs the collection under ansible_collections/<ns>/<name>: copy the tree there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.build/sanity/ansible_collections/mcpgateway/mtls
rm -rf "$root" && mkdir -p "$root"
tar -c --exclude=./.venv --exclude=./.build --exclude=./.git --exclude=./lab/cache --exclude='certs' \
  --exclude=./tests/output --exclude=__pycache__ --exclude=.pytest_cache . | tar -x -C "$root"
cd "$root"
ansible-test sanity --python 3.11 --venv --color no
