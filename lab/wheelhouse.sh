#!/usr/bin/env bash
# Build the wheelhouses the lab installs from (the containers cannot reach PyPI: outbound TLS
# is re-signed by a CA only this host trusts). Built once; rebuilt only when the requirement
# list (file + inventory plugin packages), a local package's source, the interpreter or
# WHEELHOUSE_FORMAT changes (stamp: lab/cache/wheelhouse-*/.stamp).
# Usage: wheelhouse.sh [py311|py313|all]     (default all)
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=lab/env.sh
source "$here/env.sh"
# shellcheck source=lab/lib/common.sh
source "$here/lib/common.sh"

# Bump when the way a wheelhouse is built changes (the stamp then forces a rebuild).
WHEELHOUSE_FORMAT=1
PY311=${MCP_LAB_PY311:-python3.11}
PY313=${MCP_LAB_PY313:-/root/.pyenv/versions/3.13.0/bin/python}
# Our own plugin package (pure Python): built into the plugin hosts' wheelhouse, so the lab
# inventory can name it in a plugin's `packages` like any package from an index.
LOCAL_PY311=("$MCP_LAB_REPO/roles/plugin_server/files/mcp_lab_plugins")

# pip, minus the warning this machine's pip config adds for every package (its extra
# file:// indexes only hold a few projects).
pip_q() {
    local py=$1
    shift
    "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# Hash of a source tree, ignoring build leftovers.
tree_sha() {
    (cd "$1" && find . -type f ! -path '*/build/*' ! -path '*.egg-info/*' ! -path '*/__pycache__/*' \
        ! -path '*/dist/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

# build NAME PYTHON REQFILE LOCALDIRS(space-separated) [EXTRA_REQ...]
build() {
    local name=$1 py=$2 reqfile=$3 locals=$4
    shift 4
    local dest="$MCP_LAB_CACHE_DIR/wheelhouse-$name" reqs stamp pyver src srcs="" tmpsrc
    command -v "$py" > /dev/null || die "wheelhouse-$name needs $py"
    pyver=$("$py" -c 'import sys; print(sys.version.split()[0])')
    case "$name" in
        py311) [[ $pyver == 3.11.* ]] || die "$py is $pyver, wheelhouse-$name needs 3.11" ;;
        py313) [[ $pyver == 3.13.* ]] || die "$py is $pyver, wheelhouse-$name needs 3.13" ;;
    esac
    for src in $locals; do
        [[ -f "$src/pyproject.toml" ]] && srcs+=" $(basename "$src")=$(tree_sha "$src")"
    done
    reqs="$MCP_LAB_STATE_DIR/requirements-$name.txt"
    { grep -v '^\s*#' "$reqfile" | sed '/^\s*$/d'; printf '%s\n' "$@" | sed '/^\s*$/d'; } | sort -u > "$reqs"
    stamp="$(sha_of "$reqs" "format $WHEELHOUSE_FORMAT" "$srcs") python $pyver"
    if [[ -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
        log "wheelhouse-$name is up to date ($(grep -c . "$dest/wheels.txt") wheels)"
        return 0
    fi
    log "building wheelhouse-$name with Python $pyver: $(tr '\n' ' ' < "$reqs")$srcs"
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    # Local packages first, each from a scratch copy (an in-tree build would leave build/ and
    # *.egg-info in the role's files).
    for src in $locals; do
        [[ -f "$src/pyproject.toml" ]] || continue
        tmpsrc=$(mktemp -d)
        cp -a "$src/." "$tmpsrc/"
        rm -rf "$tmpsrc/build" "$tmpsrc"/src/*.egg-info "$tmpsrc"/*.egg-info "$tmpsrc/dist"
        timed "wheelhouse-$name: local $(basename "$src")" \
            pip_q "$py" wheel --quiet --disable-pip-version-check --no-deps \
            --wheel-dir "$dest.tmp" "$tmpsrc" || die "building $src failed"
        rm -rf "$tmpsrc"
    done
    # pip wheel (not download): anything only published as an sdist is built into a wheel here,
    # so the hosts never need a compiler or a build backend from the network.
    timed "wheelhouse-$name: pip wheel" \
        pip_q "$py" wheel --quiet --disable-pip-version-check --prefer-binary \
        --find-links "$dest.tmp" --wheel-dir "$dest.tmp" -r "$reqs" \
        || die "pip wheel for wheelhouse-$name failed"
    # Prove the set is complete and consistent offline (resolves against the wheelhouse only).
    pip_q "$py" install --quiet --disable-pip-version-check --dry-run --ignore-installed \
        --no-index --find-links "$dest.tmp" -r "$reqs" \
        || die "wheelhouse-$name does not resolve offline"
    cp "$reqs" "$dest.tmp/requirements.txt"
    find "$dest.tmp" -maxdepth 1 -name '*.whl' -printf '%f\n' | sort > "$dest.tmp/wheels.txt"
    printf '%s\n' "$stamp" > "$dest.tmp/.stamp"
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
    log "wheelhouse-$name: $(grep -c . "$dest/wheels.txt") wheels, $(du -sh "$dest" | cut -f1)"
}

# Extra pip requirements the lab inventory gives its plugins (plugin_server_plugins[].packages).
inventory_packages() {
    "$MCP_LAB_REPO/.venv/bin/python" "$here/lib/inventory.py" packages
}

what=${1:-all}
case "$what" in py311 | py313 | all) ;; *) die "usage: wheelhouse.sh [py311|py313|all]" ;; esac
if [[ $what == py311 || $what == all ]]; then
    mapfile -t extra < <(inventory_packages)
    build py311 "$PY311" "$here/requirements-plugin.txt" "${LOCAL_PY311[*]}" "${extra[@]}"
fi
if [[ $what == py313 || $what == all ]]; then
    build py313 "$PY313" "$here/requirements-gateway.txt" ""
fi
