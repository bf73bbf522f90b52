#!/usr/bin/env bash
# Unit tests: pure module_utils, filters, launcher logic (no Ansible process, no hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest tests/unit -q -rfEs -p no:cacheprovider
