#!/usr/bin/env bash
# Molecule scenario on real systemd containers (the lab's images). Prepares what it needs (host tools,
# images, wheelhouses, the lab's ssh key, two --internal networks), and leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lab/env.sh
source lab/env.sh
lab_was_up=$(podman ps -q --filter label=mcp.lab=1 2>/dev/null | wc -l)
bash lab/lab.sh prepare
bash lab/lab.sh network mcp-molecule                        # the service network (plugins' DNS names)
bash lab/lab.sh network mcp-molecule-mgmt 10.89.211.0/24    # ssh from the controller (molecule.yml's addresses)
cleanup() {
  podman rm -f -t 5 mcp-mol-gw mcp-mol-gw2 mcp-mol-plug1 mcp-mol-plug2 >/dev/null 2>&1 || true
  if [[ "$lab_was_up" -eq 0 ]]; then
    bash lab/lab.sh down   # restores the recorded host state (sysctls, firewall, paths)
  else
    podman network rm mcp-molecule mcp-molecule-mgmt >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
molecule test -s default
