#!/usr/bin/env bash
# The lab of systemd hosts for mcpgateway.mtls: podman containers that boot Debian with
# systemd, on their own bridge network, described by inventories/lab (single source of truth).
#
#   lab.sh up       install host tools, build images and wheelhouses (cached), record the host
#                   state, create network + containers, wait for systemd. Idempotent.
#   lab.sh down     remove containers and network, restore the recorded host state (sysctls,
#                   firewall, runtime paths) and show the difference (empty = restored).
#   lab.sh status   containers, network, images.
#   lab.sh purge    down, then remove the lab images too (caches in lab/cache stay).
#   lab.sh prepare  up without the containers (for molecule, which makes its own).
#   lab.sh network NAME [SUBNET]   an --internal bridge network labelled as the lab's (down removes it).
#
# Two networks, like a fleet with a management network: the service network (the plugins' DNS
# names, traffic between gateway and plugins) and the management network, on which the controller
# reaches each host over ssh as the non-root admin user mcp-admin (key in .build/lab/ssh/), at the
# fixed address of its inventory ansible_host. A fault on the service network leaves Ansible's path.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=lab/env.sh
source "$here/env.sh"
# shellcheck source=lab/lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=lab/lib/hoststate.sh
source "$here/lib/hoststate.sh"

PY="$MCP_LAB_REPO/.venv/bin/python"
STATE="$MCP_LAB_STATE_DIR/host-state"
BOOT_TIMEOUT=${MCP_LAB_BOOT_TIMEOUT:-120}
HOST_PACKAGES=(podman runc netavark aardvark-dns debootstrap debian-archive-keyring slirp4netns iptables nftables openssh-client)
SSH_DIR="$MCP_LAB_STATE_DIR/ssh"
SSH_TIMEOUT=${MCP_LAB_SSH_TIMEOUT:-60}

# podman for commands that leave daemons behind (conmon, aardvark-dns): they inherit every
# open fd >= 3 of this shell (Go does not close inherited fds), so a pipe the caller reads
# (`lab.sh up | tee`, make's jobserver, a process substitution) would never see EOF. Close them
# first. Also drops netavark's "failed to connect to syslog" noise (the host has no syslog).
pm() {
    local err rc=0 fd
    err=$(mktemp)
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-"
        done 2> /dev/null
        exec podman "$@" < /dev/null
    ) 2> "$err" || rc=$?
    grep -v 'failed to connect to syslog' "$err" >&2 || true
    rm -f "$err"
    return "$rc"
}

inventory_hosts() {
    [[ -x "$PY" ]] || PY=python3
    "$PY" "$here/lib/inventory.py" hosts
}

wait_booted() {
    local host=$1 state
    state=$(timeout "$BOOT_TIMEOUT" podman exec "$host" systemctl is-system-running --wait 2> /dev/null) || true
    case "$state" in
        running) log "$host: systemd $state" ;;
        degraded)
            log "$host: systemd degraded; failed units:"
            podman exec "$host" systemctl --failed --no-legend --plain >&2 || true ;;
        *) podman exec "$host" systemctl --failed --no-legend --plain >&2 || true
           die "$host: systemd did not finish booting within ${BOOT_TIMEOUT}s (state: ${state:-unknown})" ;;
    esac
}

ensure_network() {
    local net=$1 subnet=${2:-} args=()
    [[ -n "$subnet" ]] && args+=(--subnet "$subnet")
    if podman network exists "$net"; then
        [[ "$(podman network inspect --format '{{.Internal}}' "$net")" == true ]] \
            || log "network $net exists but is not --internal (made outside lab.sh?)"
        return 0
    fi
    # --internal: no route out, so netavark adds no NAT/forward firewall rules (measured: none
    # at all); it still turns on net.ipv4.ip_forward, which `down` restores.
    pm network create --internal --label mcp.lab=1 "${args[@]}" "$net" > /dev/null
    log "network $net created ($(podman network inspect --format '{{range .Subnets}}{{.Subnet}}{{end}}' "$net"), internal)"
}

# The lab's ssh key pair (the admin user's only way in) and the authorized_keys folder every
# container mounts read-only at /etc/ssh/authorized_keys (sshd: AuthorizedKeysFile .../%u).
ensure_ssh_key() {
    mkdir -p "$SSH_DIR"
    chmod 0700 "$SSH_DIR"
    if [[ ! -s "$SSH_DIR/id_ed25519" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C mcp-lab-admin -f "$SSH_DIR/id_ed25519"
        log "ssh key pair for the lab's admin user created in ${SSH_DIR#"$MCP_LAB_REPO"/}"
    fi
    install -d -m 0755 "$SSH_DIR/authorized_keys"
    install -m 0644 "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys/mcp-admin"
}

# wait_ssh HOST ADDRESS: until the admin user gets in over ssh and sudo works (what Ansible needs).
wait_ssh() {
    local host=$1 address=$2 deadline=$((SECONDS + SSH_TIMEOUT))
    until ssh -n -i "$SSH_DIR/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 \
        "mcp-admin@$address" sudo -n true 2> /dev/null; do
        ((SECONDS < deadline)) || die "$host: no ssh as mcp-admin with sudo at $address within ${SSH_TIMEOUT}s"
        sleep 1
    done
    log "$host: ssh as mcp-admin (sudo) at $address"
}

# ensure_container HOST IMAGE NETWORK ALIASES(comma-separated) MGMT_NETWORK ADDRESS
ensure_container() {
    local host=$1 image=$2 net=$3 aliases=$4 mgmt=$5 address=$6 image_id spec have state a net_opts
    image_id=$(podman image inspect --format '{{.Id}}' "$image")
    spec=$(sha_of "$image_id" "$net" "$aliases" "$mgmt" "$address")
    if podman container exists "$host"; then
        have=$(podman container inspect --format '{{ index .Config.Labels "mcp.lab.spec" }}' "$host")
        if [[ "$have" == "$spec" ]]; then
            state=$(podman container inspect --format '{{.State.Status}}' "$host")
            if [[ "$state" == running ]]; then
                return 0
            fi
            log "$host: $state -> starting"
            pm start "$host" > /dev/null
            return 0
        fi
        log "$host: image or aliases changed in the inventory/recipe: recreating (deployed state is lost)"
        pm rm -f -t 10 "$host" > /dev/null
    fi
    local opts=()
    IFS=, read -ra alias_list <<< "$aliases"
    for a in "${alias_list[@]}"; do
        [[ -n "$a" ]] && opts+=("alias=$a")
    done
    net_opts=$net
    ((${#opts[@]})) && net_opts+=":$(IFS=,; echo "${opts[*]}")"
    # Only the admin user's authorized key is mounted: installs come from wheelhouses copied by the roles.
    # SYS_ADMIN: units with PrivateTmp/ProtectSystem need mount namespaces (else 226/NAMESPACE).
    pm run -d --name "$host" --hostname "$host" \
        --systemd=always --cap-add SYS_ADMIN --stop-timeout 10 \
        --network "$net_opts" --network "$mgmt:ip=$address" \
        -v "$SSH_DIR/authorized_keys:/etc/ssh/authorized_keys:ro" \
        --label mcp.lab=1 --label "mcp.lab.spec=$spec" \
        "$image" > /dev/null
    log "$host: started ($image${aliases:+, aliases ${aliases//,/ }})"
}

# Everything but the containers: host tools, host-state record, images, wheelhouses.
cmd_prepare() {
    [[ $EUID -eq 0 ]] || die "the lab needs root (rootful podman)"
    apt_ensure "${HOST_PACKAGES[@]}"
    ensure_ssh_key
    # Record the machine before the lab touches it (only once: a second `up` keeps the first record).
    if [[ ! -f "$STATE/before/paths.txt" ]]; then
        if [[ -n "$(podman ps -aq --filter label=mcp.lab=1 2> /dev/null)" ]]; then
            log "lab containers exist but no host state was recorded: recording the current state"
        fi
        hoststate_snapshot "$STATE/before"
        date -u +%FT%TZ > "$STATE/before/recorded-at"
        log "host state recorded in ${STATE#"$MCP_LAB_REPO"/}/before"
    fi
    bash "$here/images/build.sh" "$here/images/bookworm.conf"
    bash "$here/images/build.sh" "$here/images/trixie.conf"
    bash "$here/wheelhouse.sh" all
}

cmd_up() {
    local t0 host image net aliases mgmt subnet address hosts=() addresses=()
    t0=$(date +%s.%N)
    cmd_prepare
    # Read the inventory first: no pipe may be open while containers start (see pm).
    local rows
    rows=$(inventory_hosts) || die "cannot read inventories/lab"
    while IFS=$'\t' read -r host _ image net mgmt subnet address aliases; do
        ensure_network "$net"
        ensure_network "$mgmt" "$subnet"
        ensure_container "$host" "$image" "$net" "$aliases" "$mgmt" "$address"
        hosts+=("$host")
        addresses+=("$address")
    done <<< "$rows"
    local i
    for i in "${!hosts[@]}"; do
        wait_booted "${hosts[$i]}"
        wait_ssh "${hosts[$i]}" "${addresses[$i]}"
    done
    record_time "lab up" "$t0"
    log "lab hosts: ${hosts[*]}"
}

cmd_down() {
    local ids nets t0
    t0=$(date +%s.%N)
    ids=$(podman ps -a --filter label=mcp.lab=1 --format '{{.Names}}' 2> /dev/null || true)
    # Also containers named after inventory hosts that lost their label somehow.
    while IFS=$'\t' read -r host _; do
        podman container exists "$host" 2> /dev/null && ids+=$'\n'"$host"
    done < <(inventory_hosts 2> /dev/null || true)
    ids=$(sort -u <<< "$ids" | sed '/^$/d')
    if [[ -n "$ids" ]]; then
        # shellcheck disable=SC2086
        pm rm -f -t 10 $ids > /dev/null
        log "containers removed: $(tr '\n' ' ' <<< "$ids")"
    fi
    nets=$(podman network ls -q --filter label=mcp.lab=1 2> /dev/null || true)
    if [[ -n "$nets" ]]; then
        # shellcheck disable=SC2086
        pm network rm $nets > /dev/null
        log "networks removed: $(tr '\n' ' ' <<< "$nets")"
    fi
    if [[ -f "$STATE/before/paths.txt" ]]; then
        hoststate_restore "$STATE/before"
        rm -rf "$STATE/after"
        hoststate_snapshot "$STATE/after"
        if diff -ru "$STATE/before" "$STATE/after" --exclude=recorded-at > "$STATE/last-down.diff"; then
            log "host state restored: no difference to before 'up' (sysctls, iptables, ip6tables, nft, links, paths)"
        else
            log "host state differs from before 'up' (see ${STATE#"$MCP_LAB_REPO"/}/last-down.diff):"
            cat "$STATE/last-down.diff" >&2
        fi
        rm -rf "$STATE/last-before"
        mv "$STATE/before" "$STATE/last-before"
    else
        log "no recorded host state (lab was not up): nothing to restore"
    fi
    record_time "lab down" "$t0"
}

cmd_status() {
    podman ps -a --filter label=mcp.lab=1 --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}\t{{.Networks}}'
    podman network ls --filter label=mcp.lab=1
    podman images --filter 'reference=localhost/mcp-lab-*'
}

case "${1:-}" in
    prepare) cmd_prepare ;;
    network) ensure_network "${2:?usage: lab.sh network NAME [SUBNET]}" "${3:-}" ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    purge)
        cmd_down
        pm rmi -f localhost/mcp-lab-bookworm:1 localhost/mcp-lab-trixie:1 2> /dev/null || true
        ;;
    *) echo "usage: lab.sh up|down|status|purge|prepare|network NAME" >&2; exit 2 ;;
esac
