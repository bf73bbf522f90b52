#!/usr/bin/env bash
# Integration tests: real ansible-playbook runs of the modules and roles on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest tests/integration -q -rfEs -p no:cacheprovider
