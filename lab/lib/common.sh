# shellcheck shell=bash
# Shared helpers for lab/*.sh. Source after lab/env.sh.

MCP_LAB_STATE_DIR="${MCP_LAB_REPO:?source lab/env.sh first}/.build/lab"
MCP_LAB_CACHE_DIR="$MCP_LAB_DIR/cache"
MCP_LAB_TIMINGS="$MCP_LAB_STATE_DIR/timings.log"
mkdir -p "$MCP_LAB_STATE_DIR" "$MCP_LAB_CACHE_DIR"

log()  { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# timed LABEL CMD...: run CMD, print and record its wall time (seconds, 1 decimal).
timed() {
    local label=$1 start end rc=0
    shift
    start=$(date +%s.%N)
    "$@" || rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%ss\trc=%s\n' "$(date -u +%FT%TZ)" "$label" "$secs" "$rc" >> "$MCP_LAB_TIMINGS"
    log "$label: ${secs}s (rc=$rc)"
    return "$rc"
}

# record_time LABEL START_EPOCH: log and record the time since START_EPOCH (date +%s.%N).
record_time() {
    local secs
    secs=$(awk -v a="$2" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%ss\trc=0\n' "$(date -u +%FT%TZ)" "$1" "$secs" >> "$MCP_LAB_TIMINGS"
    log "$1: ${secs}s"
}

# apt_ensure PKG...: install the Debian packages that are missing (no-op when all are present).
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
}

# sha_of FILE|STRING...: short sha256 over the files' contents (or the literal strings).
sha_of() {
    local a
    for a in "$@"; do
        if [[ -f "$a" ]]; then cat -- "$a"; else printf '%s' "$a"; fi
        printf '\0'
    done | sha256sum | cut -c1-16
}
