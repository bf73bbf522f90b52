# shellcheck shell=bash
# Record and restore the parts of this machine that a podman bridge network touches:
# sysctls (net.ipv4.ip_forward and friends), iptables/ip6tables/nftables rules, network links,
# and machine-wide runtime paths podman creates on first use. Source after lib/common.sh.

# Paths podman/netavark/runc/debootstrap create outside the project on first use. The lab
# keeps config and storage in .build/podman, but these are fixed for rootful podman 4.3:
# netavark's shared IPAM dir, runc's state root, the netns bind mount and the
# utab dir of libmount; the rest only appear if podman ran without lab/env.sh (images/build.sh
# removes the blob-info cache that `podman import` leaves in /var/lib/containers/cache).
HOSTSTATE_PATHS=(
    /run/containers /run/netns /run/runc /run/mount /run/libpod
    /var/lib/containers /etc/containers/networks /etc/cni/net.d/cni.lock /dev/shm/libpod_lock
)
HOSTSTATE_SYSCTL_RE='^net\.ipv4\.ip_forward |^net\.ipv[46]\.conf\.[^.]+\.(forwarding|route_localnet|rp_filter|proxy_arp) |^net\.bridge\.|^net\.ipv4\.(ping_group_range|ip_unprivileged_port_start) '

hoststate_snapshot() {
    local dir=$1 p
    mkdir -p "$dir"
    sysctl -a 2>/dev/null | grep -E "$HOSTSTATE_SYSCTL_RE" | sort > "$dir/sysctl.txt" || true
    # Rules without counters or timestamps, so equal states compare equal.
    { iptables-save 2>/dev/null || true; } | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//' > "$dir/iptables.txt"
    { ip6tables-save 2>/dev/null || true; } | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//' > "$dir/ip6tables.txt"
    { nft list ruleset 2>/dev/null || true; } > "$dir/nft.txt"
    ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort > "$dir/links.txt"
    for p in "${HOSTSTATE_PATHS[@]}"; do
        if [[ -e "$p" ]]; then echo "$p present"; else echo "$p absent"; fi
    done > "$dir/paths.txt"
}

# Other containers of this podman store on a bridge network still need forwarding.
_hoststate_bridge_users() {
    podman ps --format '{{.Names}} {{.Networks}}' 2>/dev/null | awk '$2 != "" && $2 !~ /^(slirp4netns|host|none|private)$/ { print $1 }'
}

# Remove NETAVARK chains (and the jumps into them) that were not there before.
_hoststate_iptables_clean() {
    local tool=$1 before=$2 table chain rule
    command -v "$tool" > /dev/null || return 0
    for table in filter nat mangle raw; do
        "$tool" -t "$table" -S > /dev/null 2>&1 || continue
        while IFS= read -r chain; do
            grep -q -- "^:$chain " "$before" && continue
            # Jumps into the chain from any other chain.
            while IFS= read -r rule; do
                # `-S` quotes arguments shell-style (e.g. --comment "netavark firewall plugin rules"):
                # xargs splits them back the same way.
                xargs "$tool" -t "$table" <<< "${rule/#-A /-D }" || true
            done < <("$tool" -t "$table" -S | grep -E -- "-j $chain( |$)")
            "$tool" -t "$table" -F "$chain" 2> /dev/null || true
        done < <("$tool" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^NETAVARK/ { print $2 }')
        while IFS= read -r chain; do
            grep -q -- "^:$chain " "$before" && continue
            "$tool" -t "$table" -X "$chain" 2> /dev/null || log "could not delete $tool -t $table chain $chain"
        done < <("$tool" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^NETAVARK/ { print $2 }')
    done
}

# nftables tables that did not exist before: delete them when they are netavark's or hold no
# rule any more (iptables-nft leaves empty `ip filter`/`ip nat` tables behind).
_hoststate_nft_clean() {
    local before=$1 fam name body
    command -v nft > /dev/null || return 0
    while read -r _ fam name; do
        grep -q -- "^table $fam $name {" "$before" && continue
        body=$(nft list table "$fam" "$name" 2> /dev/null) || continue
        if [[ "$name" == netavark ]] || ! grep -vE '^\s*(table|chain|type|policy|\}|$)' <<< "$body" | grep -q .; then
            nft delete table "$fam" "$name" && log "deleted nftables table $fam $name"
        else
            log "nftables table $fam $name is new but holds rules that are not the lab's: left alone"
        fi
    done < <(nft list tables 2> /dev/null)
}

_hoststate_paths_clean() {
    local before=$1 p state
    while read -r p state; do
        if [[ "$state" != absent || ! -e "$p" ]]; then
            continue
        fi
        case "$p" in
            /run/containers)            # netavark's IPAM + aardvark state (shared by rootful podman)
                if [[ -z "$(podman ps -aq 2> /dev/null)" ]]; then rm -rf "$p"; fi ;;
            /run/netns)                 # podman bind-mounts it onto itself
                if [[ -z "$(ls -A "$p")" ]]; then
                    if mountpoint -q "$p"; then umount "$p"; fi
                    rmdir "$p"
                fi ;;
            /run/runc | /run/mount)     # runc state root; libmount's utab dir (debootstrap)
                rmdir "$p" 2> /dev/null || true ;;
            *)
                log "$p appeared, but not through the lab: podman ran WITHOUT lab/env.sh (left alone)"
                continue ;;
        esac
        if [[ -e "$p" ]]; then
            log "$p did not exist before the lab and is still in use: left alone"
        fi
    done < "$before/paths.txt"
    return 0
}

# hoststate_restore BEFORE_DIR
hoststate_restore() {
    local before=$1 key value current users
    _hoststate_iptables_clean iptables "$before/iptables.txt"
    _hoststate_iptables_clean ip6tables "$before/ip6tables.txt"
    _hoststate_nft_clean "$before/nft.txt"
    users=$(_hoststate_bridge_users | tr '\n' ' ')
    if [[ -n "$users" ]]; then
        log "containers on bridge networks still run ($users): sysctls left as they are"
    else
        # ip_forward first: writing it resets every conf.*.forwarding, then fix the rest.
        for pass in 1 2; do
            while IFS=' = ' read -r key value; do
                [[ $pass == 1 && $key != net.ipv4.ip_forward ]] && continue
                current=$(sysctl -n "$key" 2> /dev/null) || continue
                [[ "$current" == "$value" ]] && continue
                sysctl -q -w "$key=$value" || log "could not restore $key=$value"
            done < "$before/sysctl.txt"
        done
    fi
    _hoststate_paths_clean "$before"
}
