#!/usr/bin/env bash
# Short summary of the deployed lab (run after site.yml): hosts, plugins, units, certificate
# expiry. Reads inventories/lab for what should be there and asks each container with
# podman exec. Exits 1 when a unit is not active or a certificate is missing.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=lab/env.sh
source "$here/env.sh"
PY="$MCP_LAB_REPO/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3

# Runs inside a container: "unit state" and "cert days-left notAfter" lines.
# shellcheck disable=SC2016  # expanded inside the container
probe='
now=$(date +%s)
for u in "$@"; do
  case "$u" in
    unit:*) printf "%s %s\n" "${u#unit:}" "$(systemctl is-active "${u#unit:}" 2>/dev/null || true)" ;;
    cert:*) f=${u#cert:}
      if end=$(openssl x509 -noout -enddate -in "$f" 2>/dev/null); then
        end=${end#notAfter=}; days=$(( ( $(date -d "$end" +%s) - now ) / 86400 ))
        printf "%s %sd (%s)\n" "$f" "$days" "$end"
      else printf "%s missing\n" "$f"; fi ;;
  esac
done'

rows=$("$PY" "$here/lib/inventory.py" hosts)
plugins=$("$PY" "$here/lib/inventory.py" plugins)
bad=0
printf '%-10s %-9s %-40s %s\n' HOST STATE UNIT/CERT STATUS
while IFS=$'\t' read -r host group image _ _; do
    state=$(podman container inspect --format '{{.State.Status}}' "$host" 2> /dev/null || echo absent)
    if [[ "$state" != running ]]; then
        printf '%-10s %-9s (%s)\n' "$host" "$state" "$image"
        bad=1
        continue
    fi
    sys=$(podman exec "$host" systemctl is-system-running 2> /dev/null || true)
    checks=()
    if [[ "$group" == mcp_gateways ]]; then
        checks+=(unit:mcpgateway.service cert:/etc/mcpgateway/tls/client.crt)
    else
        while IFS=$'\t' read -r phost name _; do
            [[ "$phost" == "$host" ]] || continue
            checks+=("unit:mcp-plugin@$name.service" "unit:mcp-plugin-health@$name.timer"
                     "cert:/etc/mcp-plugins/$name/tls/server.crt")
        done <<< "$plugins"
    fi
    printf '%-10s %-9s systemd: %s, %s\n' "$host" "$state" "$sys" "$(podman exec "$host" sh -c '. /etc/os-release; echo "$PRETTY_NAME, $(python3 -V)"')"
    out=$(podman exec "$host" sh -c "$probe" probe "${checks[@]}" 2>&1 || true)
    while read -r what status rest; do
        [[ -n "$what" ]] || continue
        printf '%-10s %-9s %-40s %s %s\n' "" "" "${what#/etc/}" "$status" "$rest"
        case "$status" in active | *d) ;; *) bad=1 ;; esac
    done <<< "$out"
done <<< "$rows"
echo "plugins: $(awk -F'\t' '{ printf "%s%s@%s:%s", sep, $2, $1, $3; sep=", " }' <<< "$plugins")"
if ((bad)); then
    echo "summary: something is not active or missing (see above)" >&2
    exit 1
fi
echo "summary: all units active, all certificates present"
# What the verify role proved in the last `make site` run (make tees ansible's output there).
log="$MCP_LAB_REPO/.build/lab/site.log"
if [[ -f "$log" ]]; then
    grep -Eo '[0-9]+ checks passed on [^ ]+' "$log" | sed 's/^/verified: /'
    grep -Eo '^[^ ]+ +: ok=[0-9]+ +changed=[0-9]+ +unreachable=[0-9]+ +failed=[0-9]+' "$log" | sed 's/^/recap: /'
fi
