#!/usr/bin/env bash
# Build one lab image from a recipe (lab/images/SUITE.conf), once: skip when the image exists
# with the same recipe hash (image label mcp.lab.recipe). The debootstrap package download is
# cached as lab/cache/debootstrap-SUITE-<hash>.tgz, so a rebuild needs no network.
# Usage: build.sh lab/images/bookworm.conf [--force]
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=lab/env.sh
source "$here/../env.sh"
# shellcheck source=lab/lib/common.sh
source "$here/../lib/common.sh"

conf=$(readlink -f "${1:?recipe file}")
force=${2:-}
IMAGE='' SUITE='' PACKAGES=''
# shellcheck disable=SC1090
source "$conf"
[[ -n "$IMAGE" && -n "$SUITE" && -n "$PACKAGES" ]] || die "$conf must set IMAGE, SUITE and PACKAGES"
MIRROR=${MCP_LAB_MIRROR:-http://deb.debian.org/debian}

# The recipe: the .conf, the trim script, the mirror, and the import format below (bump
# BUILD_FORMAT when the podman import --change lines change; other edits here don't rebuild).
BUILD_FORMAT=1
recipe_hash=$(sha_of "$conf" "$here/trim.sh" "format $BUILD_FORMAT" "$MIRROR")
have=$(podman image inspect --format '{{ index .Labels "mcp.lab.recipe" }}' "$IMAGE" 2>/dev/null || true)
if [[ "$have" == "$recipe_hash" && "$force" != --force ]]; then
    log "$IMAGE is up to date (recipe $recipe_hash)"
    exit 0
fi
log "building $IMAGE (recipe $recipe_hash${have:+, image has ${have}})"

apt_ensure debootstrap debian-archive-keyring

# logged LOGFILE CMD...: run CMD with its output in LOGFILE; show the tail when it fails.
logged() {
    local logfile=$1
    shift
    "$@" > "$logfile" 2>&1 || { tail -20 "$logfile" >&2; return 1; }
}

# 1. Download (cached): only the suite, package list and mirror matter here.
tarball="$MCP_LAB_CACHE_DIR/debootstrap-$SUITE-$(sha_of "$SUITE" "$PACKAGES" "$MIRROR").tgz"
work="$MCP_LAB_STATE_DIR/build-$SUITE"
rm -rf "$work"
mkdir -p "$work"
if [[ ! -s "$tarball" ]]; then
    timed "image $SUITE: debootstrap download" \
        logged "$work/download.log" debootstrap --variant=minbase --include="$PACKAGES" \
        --make-tarball="$work/dl.tgz" "$SUITE" "$work/dl" "$MIRROR" \
        || die "debootstrap download failed (log: $work/download.log)"
    mv "$work/dl.tgz" "$tarball"
    rm -rf "$work/dl"
fi

# 2. Install from the cached tarball, trim, import.
timed "image $SUITE: debootstrap install" \
    logged "$work/install.log" debootstrap --variant=minbase --include="$PACKAGES" \
    --unpack-tarball="$tarball" "$SUITE" "$work/rootfs" "$MIRROR" \
    || die "debootstrap failed (log: $work/install.log)"
timed "image $SUITE: trim" bash "$here/trim.sh" "$work/rootfs" "$MIRROR" "$SUITE"
size=$(du -sm "$work/rootfs" | cut -f1)

import_image() {
    tar -C "$work/rootfs" --numeric-owner --xattrs -cf - . | podman import --quiet \
        --change 'CMD ["/sbin/init"]' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change 'ENV container=podman' \
        --change "LABEL mcp.lab.recipe=$recipe_hash" \
        --change "LABEL mcp.lab.suite=$SUITE" \
        --message "mcpgateway.mtls lab image ($SUITE, recipe $recipe_hash)" \
        - "$IMAGE" > /dev/null
}
# containers/image writes its blob-info cache to /var/lib/containers/cache for root, whatever
# the storage config says (podman 4.3): remove what this import created.
had_varlib=0 had_cache=0
[[ -e /var/lib/containers ]] && had_varlib=1
[[ -e /var/lib/containers/cache ]] && had_cache=1
timed "image $SUITE: podman import" import_image
((had_cache)) || rm -rf /var/lib/containers/cache
((had_varlib)) || rmdir /var/lib/containers 2> /dev/null || true
rm -rf "$work"
podman image prune -f > /dev/null   # the previous build of this tag, now dangling
log "$IMAGE built: rootfs ${size} MB, recipe $recipe_hash"
