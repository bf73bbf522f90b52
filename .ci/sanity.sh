#!/usr/bin/env bash
# ansible-test sanity needs the collection under ansible_collections/<ns>/<name>: copy the tree there.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=${TMPDIR:-/tmp}/mcpgateway-mtls-sanity/ansible_collections/mcpgateway/mtls  # outside any git work tree

# ansible-test bootstraps pip in its venvs with a get-pip script it downloads from a host this machine
# cannot reach; it documents caching that script by hand (ansible/ansible#77304). Our stand-in installs
# the requested pip from PyPI with the project venv's own pip.
pip_version=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11", path="/usr/bin/python3"))["pip"])
PY
)
cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
site=$(python -c 'import pip, os; print(os.path.dirname(os.path.dirname(pip.__file__)))')
cat > "$cache.new" <<PY
# Written by mcpgateway.mtls .ci/sanity.sh: offline stand-in for get-pip.py ${pip_version}.
import sys
sys.path.insert(0, "${site}")
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
PY
mv "$cache.new" "$cache"

rm -rf "$root" && mkdir -p "$root"
tar -c --exclude=./.venv --exclude=./.build --exclude=./.git --exclude=./lab/cache --exclude='certs' \
  --exclude=./tests/output --exclude=__pycache__ --exclude=.pytest_cache . | tar -x -C "$root"
cd "$root"
ansible-test sanity --python 3.11 --venv --color no
