# shellcheck shell=bash
# Source me: `source lab/env.sh` (bash). Points podman (and everything that runs it: lab.sh,
# ansible's containers.podman connection, molecule's podman driver) at the project-owned
# config and storage under <repo>/.build/podman. Nothing in the machine's global config is
# read for engine/storage settings or changed.
# Safe to source repeatedly and under `set -eu`; it never exits the calling shell.

_mcp_lab_env() {
    local lab_dir repo podman_dir f tmp
    lab_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
    repo=$(dirname -- "$lab_dir")
    podman_dir="$repo/.build/podman"
    mkdir -p "$podman_dir/tmp" "$podman_dir/run" "$podman_dir/storage" "$podman_dir/networks" || return 1
    # Render the templates only when their output changes (cheap, idempotent).
    for f in containers.conf storage.conf; do
        tmp=$(sed "s#@PODMAN_DIR@#${podman_dir}#g" "$lab_dir/podman/$f.in") || return 1
        if [[ ! -f "$podman_dir/$f" ]] || [[ "$(cat "$podman_dir/$f")" != "$tmp" ]]; then
            printf '%s\n' "$tmp" > "$podman_dir/$f" || return 1
        fi
    done
    export MCP_LAB_REPO="$repo"
    export MCP_LAB_DIR="$lab_dir"
    export MCP_LAB_PODMAN_DIR="$podman_dir"
    export CONTAINERS_CONF="$podman_dir/containers.conf"
    export CONTAINERS_STORAGE_CONF="$podman_dir/storage.conf"
    export CONTAINERS_REGISTRIES_CONF="$lab_dir/podman/registries.conf"
}
_mcp_lab_env || echo "lab/env.sh: could not prepare the podman config under .build/podman" >&2
unset -f _mcp_lab_env
