#!/usr/bin/env bash
# Trim a debootstrapped Debian rootfs into a container image that boots systemd as PID 1.
# Usage: trim.sh ROOTFS MIRROR SUITE. Runs on the host against the directory (no chroot needed).
set -euo pipefail
root=${1:?rootfs}; mirror=${2:?mirror}; suite=${3:?suite}
[[ -x "$root/sbin/init" ]] || { echo "trim.sh: $root has no /sbin/init" >&2; exit 1; }

# Identity: every container gets its own machine-id at first boot (empty file = "generate").
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
rm -f "$root/etc/hostname"            # podman provides hostname, hosts and resolv.conf
: > "$root/etc/resolv.conf"

# Plain-HTTP apt source (works from containers; the lab itself never uses apt in them).
printf 'deb %s %s main\n' "$mirror" "$suite" > "$root/etc/apt/sources.list"

# Boot to multi-user; mask what has no business in a container (consoles, udev, hardware,
# kernel mounts, distro maintenance timers). Timers the roles install are left alone.
ln -sfn /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
mask=(
    getty.target console-getty.service getty@tty1.service serial-getty@console.service
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
    systemd-udev-trigger.service systemd-udev-settle.service systemd-hwdb-update.service
    systemd-modules-load.service kmod-static-nodes.service systemd-remount-fs.service
    systemd-firstboot.service systemd-journald-audit.socket systemd-binfmt.service
    proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
    sys-fs-fuse-connections.mount dev-hugepages.mount
    systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-pcrphase-initrd.service
    systemd-tpm2-setup.service systemd-tpm2-setup-early.service
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
    e2scrub_reap.service fstrim.timer man-db.timer
)
for u in "${mask[@]}"; do
    ln -sfn /dev/null "$root/etc/systemd/system/$u"
done

# Reached like a fleet host: over ssh, as a non-root admin user with passwordless sudo (Ansible
# becomes root). No password login, no root login; the authorized key is not in the image: each
# container gets the lab's public key mounted read-only at /etc/ssh/authorized_keys/ (lab.sh,
# molecule.yml), so a new key needs no rebuild. Host keys are made at each container's first boot.
useradd --root "$root" --create-home --shell /bin/bash --uid 1000 --user-group mcp-admin
printf 'mcp-admin ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$root/etc/sudoers.d/50-mcp-admin"
chmod 0440 "$root/etc/sudoers.d/50-mcp-admin"
mkdir -p "$root/etc/ssh/sshd_config.d"
cat > "$root/etc/ssh/sshd_config.d/50-lab.conf" <<'CONF'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
CONF
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/systemd/system/mcp-lab-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate this container's ssh host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
UNIT
mkdir -p "$root/etc/systemd/system/ssh.service.wants" "$root/etc/systemd/system/multi-user.target.wants"
ln -sfn /etc/systemd/system/mcp-lab-ssh-hostkeys.service "$root/etc/systemd/system/ssh.service.wants/mcp-lab-ssh-hostkeys.service"
ln -sfn /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"

# Journal in memory only, small.
mkdir -p "$root/etc/systemd/journald.conf.d"
cat > "$root/etc/systemd/journald.conf.d/50-container.conf" <<'CONF'
[Journal]
Storage=volatile
RuntimeMaxUse=16M
ForwardToConsole=no
CONF

# Size: no docs, man pages, locales or apt caches (and keep future dpkg runs from adding them).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/50-container-nodoc" <<'CONF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CONF
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"*
mkdir -p "$root/var/lib/apt/lists/partial"
rm -f "$root/var/log/bootstrap.log" "$root/var/log/dpkg.log" "$root/var/log/alternatives.log"
rm -rf "$root/var/log/apt/"* "$root/tmp/"* "$root/var/tmp/"*
