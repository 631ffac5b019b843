#!/usr/bin/env bash
# plumb tier-2 test lab: one qemu (TCG) VM with real block devices, LVM,
# ext4/xfs/btrfs, reachable over SSH on a 127.0.0.1 port. See tests/vm/README.md.
# Must run as root.
#
#   vm.sh image [--stack] [--force]               build the cached image (once)
#   vm.sh up DIR [--stack] [--disks N] [--disk-size SIZE]
#                                                 boot a VM (data disks /dev/vdb, /dev/vdc, ...)
#   vm.sh down DIR                                kill it (recorded PID), remove its disks
#   vm.sh resize-disk DIR INDEX NEWSIZE           grow data disk INDEX (0 = /dev/vdb, or "vdb")
#   vm.sh ssh DIR [CMD...]                        ssh into it over one shared connection
#   vm.sh check                                   can a VM run here? (exit 1 and why, if not)
#
# Environment:
#   PLUMB_VM_CACHE        image cache dir                          (/var/cache/plumb-vm)
#   PLUMB_VM_QEMU         qemu binary                              (qemu-system-x86_64)
#   PLUMB_VM_KERNEL_PKG   kernel package      (what linux-image-cloud-amd64 depends on)
#   PLUMB_VM_MEM          guest memory in MiB              (1024; --stack: 1536)
#   PLUMB_VM_SMP          guest CPUs                               (2)
#   PLUMB_VM_MAX_RUNNING  VMs allowed at once; `up` waits for a slot (2)
#   PLUMB_VM_SLOT_TIMEOUT seconds `up` waits for a slot            (900)
#   PLUMB_VM_UP_TIMEOUT   seconds `up` waits for SSH        (120; --stack: 300)
#   PLUMB_VM_KERNEL_ARGS  extra kernel command line arguments
#   PLUMB_VM_OWNER_PID    pid owning the VM: when it is gone, the VM is taken down
#   PLUMB_VM_PORT         host port to try first (default: a random free one)
set -euo pipefail

VM_SH=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${PLUMB_VM_CACHE:-/var/cache/plumb-vm}
# Two images: "small" (v1: a shell script as PID 1, sshd, the storage tools)
# and "stack" (stack-v1: systemd as PID 1, Docker, containerd, a registry
# over HTTPS with a CA made at build time). set_variant picks one.
VARIANT=small
IMAGE=$CACHE/v1
RUNDIR=/run/plumb-vm
QEMU=${PLUMB_VM_QEMU:-qemu-system-x86_64}
MEM=
SMP=${PLUMB_VM_SMP:-2}
MAX_RUNNING=${PLUMB_VM_MAX_RUNNING:-2}
SLOT_TIMEOUT=${PLUMB_VM_SLOT_TIMEOUT:-900}
UP_TIMEOUT=
GUEST_IP=10.0.2.15
GUEST_GW=10.0.2.2
# What the VM's root holds: sshd, LVM and the tools plumb's storage modules use.
PACKAGES=openssh-server,lvm2,dmsetup,e2fsprogs,xfsprogs,btrfs-progs,util-linux,mount,fdisk,iproute2,procps,kmod,udev,acl,attr,rsync,coreutils,findutils,diffutils,sudo
# The full stack on top (--stack): systemd as PID 1, Docker, containerd, the
# distribution registry (the stand-in for Harbor), curl, openssl, htpasswd,
# a static busybox (the root of the test image made inside the VM), AppArmor
# (the cloud kernel enables it, and Docker refuses to start containers when it
# cannot load its profile).
STACK_PACKAGES=systemd,systemd-sysv,dbus,apparmor,docker.io,containerd,runc,iptables,docker-registry,curl,openssl,apache2-utils,ca-certificates,busybox-static,xz-utils
# The stack image's registry: its name (resolved to 127.0.0.1 in the guest),
# the robot account of the inventory, and its password (a test value).
STACK_REGISTRY=harbor.vm.test
STACK_REGISTRY_USER='robot$edge'
STACK_REGISTRY_PASSWORD=plumb-vm-registry-pw
# Modules the initrd needs to reach the root disk (deps resolved by modprobe).
INITRD_MODULES="virtio_pci virtio_blk virtio_net virtio_rng ext4"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "vm.sh: error: $*" >&2; exit 1; }
warn() { echo "vm.sh: warning: $*" >&2; }
note() { echo "vm.sh: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

set_variant() { # small | stack
	VARIANT=$1
	case $1 in
	small) IMAGE=$CACHE/v1 LOCK_NAME=image.lock LOG_NAME=build.log MEM=${PLUMB_VM_MEM:-1024} UP_TIMEOUT=${PLUMB_VM_UP_TIMEOUT:-120} ;;
	stack) IMAGE=$CACHE/stack-v1 LOCK_NAME=stack-image.lock LOG_NAME=stack-build.log MEM=${PLUMB_VM_MEM:-1536} UP_TIMEOUT=${PLUMB_VM_UP_TIMEOUT:-300} ;;
	*) die "unknown image variant $1" ;;
	esac
}

# ---------------------------------------------------------------- image

# apt_sources CODENAME: this machine's Debian sources (see the file).
. "${VM_SH%/*}/../lib/apt-sources.sh"

# The concrete kernel package: the one the linux-image-cloud-amd64 metapackage
# depends on, else the highest versioned linux-image-*-cloud-amd64.
kernel_package() {
	if [ -n "${PLUMB_VM_KERNEL_PKG:-}" ]; then echo "$PLUMB_VM_KERNEL_PKG"; return; fi
	local p
	p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }')
	if [ -z "$p" ]; then
		p=$(apt-cache pkgnames linux-image- 2>/dev/null | grep -E '^linux-image-[0-9].*-cloud-amd64$' | sort -V | tail -n 1)
	fi
	[ -n "$p" ] || return 1
	echo "$p"
}

static_busybox() { # prints the path of a statically linked busybox
	local b
	for b in /bin/busybox /usr/bin/busybox; do
		[ -x "$b" ] || continue
		# ldd fails on a static binary ("not a dynamic executable")
		if ! LC_ALL=C ldd "$b" >/dev/null 2>&1; then echo "$b"; return 0; fi
	done
	return 1
}

# Why the image cannot be built here (empty if it can).
image_missing_tools() {
	local c miss=()
	for c in apt-get apt-cache dpkg-deb mmdebstrap mkfs.ext4 chroot cpio gzip flock; do
		command -v "$c" >/dev/null || miss+=("$c")
	done
	static_busybox >/dev/null || miss+=("busybox (static: busybox-static)")
	((${#miss[@]} == 0)) || echo "${miss[*]}"
}

image_ready() { [ -f "$IMAGE/.plumb-vm-image" ]; }

# Build the cached image once, atomically (temp dir, then rename).
#   auto:  build if missing, but do not retry a build that failed before
#   retry: build if missing (`vm.sh image`)
#   force: rebuild (`vm.sh image --force`); running VMs keep their old backing file
cmd_image() { # MODE
	local mode=${1:-auto}
	need_root
	mkdir -p "$CACHE"
	exec 7>"$CACHE/$LOCK_NAME"
	flock -w 1800 7 || die "timed out waiting for $CACHE/image.lock"
	if [ "$mode" != force ] && image_ready; then exec 7>&-; return 0; fi
	if [ "$mode" = auto ] && [ -e "$IMAGE.failed" ]; then
		exec 7>&-
		die "the image build failed before (log: $CACHE/$LOG_NAME); run 'vm.sh image' to retry"
	fi
	local missing
	missing=$(image_missing_tools)
	[ -z "$missing" ] || { exec 7>&-; die "cannot build the image, missing: $missing (apt-get install mmdebstrap busybox-static cpio e2fsprogs)"; }
	rm -rf "$IMAGE".tmp.* "$IMAGE".old.*
	local tmp t0=$SECONDS
	tmp=$(mktemp -d "$IMAGE.tmp.XXXXXX")
	chmod 0755 "$tmp"
	note "building $IMAGE (log: $CACHE/$LOG_NAME)"
	# A separate process: `set -e` does not apply inside a function called
	# from an `if` condition.
	if "$VM_SH" _build "$VARIANT" "$tmp" >"$CACHE/$LOG_NAME" 2>&1 7>&-; then
		rm -rf "$tmp/work"
		touch "$tmp/.plumb-vm-image"
		[ ! -e "$IMAGE" ] || mv -T "$IMAGE" "$(mktemp -u "$IMAGE.old.XXXXXX")"
		mv -T "$tmp" "$IMAGE"
		rm -rf "$IMAGE".old.*
		rm -f "$IMAGE.failed"
		exec 7>&-
		note "image built in $((SECONDS - t0))s: kernel $(cat "$IMAGE/kernel-version"), root.img $(du -sh "$IMAGE/root.img" | cut -f1) used"
	else
		rm -rf "$tmp"
		date >"$IMAGE.failed"
		exec 7>&-
		tail -n 15 "$CACHE/$LOG_NAME" >&2 || true
		die "image build failed (log: $CACHE/$LOG_NAME)"
	fi
}

build_image() { # VARIANT OUT
	set_variant "$1"
	shift
	local out=$1 work=$1/work codename pkg kver mirrors=() line busybox packages=$PACKAGES size=2G
	if [ "$VARIANT" = stack ]; then packages=$PACKAGES,$STACK_PACKAGES; size=8G; fi
	PS4='+ [${SECONDS}s] '
	set -x
	mkdir -p "$work/kernel" "$work/rootfs" "$work/initrd"

	# --- kernel: the distribution's cloud kernel, unpacked
	pkg=$(kernel_package) || { echo "no linux-image-*-cloud-amd64 package known to apt (run apt-get update)"; return 1; }
	(cd "$work" && apt-get download -o APT::Sandbox::User=root "$pkg") ||
		{ echo "apt-get download $pkg failed (run apt-get update?)"; return 1; }
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kernel"
	kver=$(ls "$work/kernel/lib/modules")
	[ -n "$kver" ] && [ -f "$work/kernel/boot/vmlinuz-$kver" ] || { echo "no kernel in $pkg"; return 1; }
	cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
	cp "$work/kernel/boot/config-$kver" "$out/kernel-config" 2>/dev/null || true
	echo "$kver" >"$out/kernel-version"
	echo "$pkg" >"$out/kernel-package"

	# --- root filesystem: a minbase Debian of this machine's release and mirror
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	if [ -n "$codename" ]; then
		while IFS= read -r line; do mirrors+=("$line"); done < <(apt_sources "$codename")
	fi
	[ -n "$codename" ] || codename=stable
	timeout 1800 mmdebstrap --mode=root --variant=minbase --include="$packages" \
		--dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		"$codename" "$work/rootfs" "${mirrors[@]}"
	local r=$work/rootfs
	mkdir -p "$r/lib/modules"
	cp -a "$work/kernel/lib/modules/$kver" "$r/lib/modules/"
	# the root's own kmod (the host needs none)
	chroot "$r" depmod "$kver"
	customize_rootfs "$r"
	[ "$VARIANT" != stack ] || customize_stack "$r" "$out"
	mkfs.ext4 -q -F -L plumb-root -d "$r" "$out/root.img" "$size"

	# --- initrd: static busybox, the virtio and ext4 modules in dependency order
	busybox=$(static_busybox)
	local i=$work/initrd m path n=0
	mkdir -p "$i/bin" "$i/dev" "$i/proc" "$i/sys" "$i/newroot" "$i/lib/modules"
	cp "$busybox" "$i/bin/busybox"
	ln -s busybox "$i/bin/sh"
	: >"$i/modules.list"
	# --show-depends prints "insmod PATH" (or "builtin NAME") for each module's
	# dependencies first, then the module itself; PATH is inside the root.
	for m in $INITRD_MODULES; do
		chroot "$r" modprobe -S "$kver" --show-depends "$m"
	done | awk -v r="$r" '$1 == "insmod" && !seen[$2]++ { print r $2 }' >"$work/initrd-modules"
	while read -r path; do
		n=$((n + 1))
		local base dest
		base=$(basename "$path")
		dest=$(printf '%02d-%s' "$n" "${base%%.ko*}.ko")
		case $path in
		*.ko) cp "$path" "$i/lib/modules/$dest" ;;
		*.ko.xz) xz -dc "$path" >"$i/lib/modules/$dest" ;;
		*.ko.zst) zstd -qdc "$path" >"$i/lib/modules/$dest" ;;
		*.ko.gz) gzip -dc "$path" >"$i/lib/modules/$dest" ;;
		*) echo "unknown module format: $path"; return 1 ;;
		esac
		echo "$dest" >>"$i/modules.list"
	done <"$work/initrd-modules"
	write_initrd_init "$i/init"
	(cd "$i" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 >"$out/initrd.img"
	cp "$i/modules.list" "$out/initrd-modules"
	set +x
	echo "image: kernel $kver, initrd modules: $(tr '\n' ' ' <"$i/modules.list")"
}

customize_rootfs() { # ROOT
	local r=$1
	# Password field '*' (not useradd's locked '!'): with UsePAM no, sshd refuses
	# public-key logins to accounts whose password starts with '!'.
	chroot "$r" useradd -m -u 1001 -U -s /bin/bash -p '*' deploy
	chroot "$r" useradd -m -u 1002 -U -s /bin/bash -p '*' nosudo
	echo 'deploy ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/deploy"
	chmod 0440 "$r/etc/sudoers.d/deploy"
	rm -f "$r"/etc/ssh/ssh_host_*
	rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*_Packages
	echo vm >"$r/etc/hostname"
	printf '127.0.0.1\tlocalhost\n%s\tvm\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$GUEST_IP" >"$r/etc/hosts"
	printf '# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/vda / ext4 defaults 0 1\n' >"$r/etc/fstab"
	: >"$r/etc/resolv.conf"
	mkdir -p "$r/root/.ssh"
	chmod 0700 "$r/root/.ssh"
	cat >"$r/etc/ssh/plumb_vm_sshd_config" <<'EOF'
# plumb tier-2 VM (tests/vm/vm.sh). Keys come from qemu fw_cfg at boot.
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/plumb_vm_host_key
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/plumb_vm_authorized_keys
MaxStartups 100:30:200
UseDNS no
PidFile none
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
EOF
	cat >"$r/sbin/plumb-vm-init" <<EOF
#!/bin/sh
# PID 1 of the plumb tier-2 VM (written by tests/vm/vm.sh): mount the API
# filesystems, load device-mapper, start udev, configure eth0, exec sshd.
# The initrd has usually mounted /proc /sys /dev /run already (its static
# busybox starts far faster under TCG than util-linux does): only what is
# missing is mounted here. Shell builtins where possible, for the same reason.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { read -r up _ </proc/uptime; echo "plumb-vm-init: [\$up] \$*"; }
mounted() { while read -r _ m _; do [ "\$m" = "\$1" ] && return 0; done </proc/mounts; return 1; }
copy() { while IFS= read -r l || [ -n "\$l" ]; do printf '%s\n' "\$l"; done <"\$1" >"\$2"; }
[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc
mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mounted /dev || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mounted /dev/pts || { mkdir -p /dev/pts; mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts; }
mounted /dev/shm || { mkdir -p /dev/shm; mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm; }
mounted /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
[ -d /run/sshd ] || { mkdir -p /run/sshd /run/lvm /run/lock; chmod 1777 /run/lock; }
echo vm >/proc/sys/kernel/hostname
log "loading modules"
modprobe -a -q qemu_fw_cfg dm_mod dm_snapshot
[ -e /dev/mapper/control ] || log "no /dev/mapper/control: device-mapper (dm_mod) did not load"
log "starting udevd"
/lib/systemd/systemd-udevd --daemon
# Coldplug only block devices (vd*, later dm-*): a full trigger also loads
# drivers for the emulated IDE controller, kvm, input... (about 10 s in TCG).
udevadm trigger --action=add --subsystem-match=block
udevadm settle --timeout=60 || log "udevadm settle timed out"
ip -batch - <<IP
link set lo up
addr add $GUEST_IP/24 dev eth0
link set eth0 up
route add default via $GUEST_GW
IP
log "eth0 is $GUEST_IP"
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/plumb
if [ -r \$fw/host_key/raw ] && [ -r \$fw/authorized_keys/raw ]; then
	umask 077
	copy \$fw/host_key/raw /etc/ssh/plumb_vm_host_key
	umask 022
	copy \$fw/authorized_keys/raw /etc/ssh/plumb_vm_authorized_keys
else
	log "no keys in fw_cfg (\$fw): sshd cannot start"
fi
log "starting sshd"
exec /usr/sbin/sshd -D -e -f /etc/ssh/plumb_vm_sshd_config
EOF
	chmod 0755 "$r/sbin/plumb-vm-init"
}

# The full-stack image (--stack), on top of customize_rootfs: systemd boots
# it; a oneshot unit does what plumb-vm-init does in the small image (keys
# from fw_cfg, eth0), a unit of its own runs sshd with the same config.
# Docker, containerd and the registry start as on any Debian host. The
# registry serves https://$STACK_REGISTRY (port 443) with a certificate of a
# CA made here, and basic auth (htpasswd, bcrypt); the guest keeps the CA in
# /etc/plumb-vm/ca.crt for the tests to fetch (Docker does not trust it yet).
customize_stack() { # ROOT OUT
	local r=$1 out=$2 reg=$STACK_REGISTRY d
	printf '127.0.0.1\t%s\n' "$reg" >>"$r/etc/hosts"
	echo /lib/systemd/systemd >"$r/etc/plumb-vm-init" # (/sbin/init is an absolute symlink)
	mkdir -p "$r/etc/plumb-vm" "$r/etc/docker/registry"
	# --- the CA and the registry's certificate (openssl of the guest's release)
	chroot "$r" sh -ec "
		cd /etc/plumb-vm
		openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj '/CN=plumb VM test CA' \
			-keyout ca.key -out ca.crt 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -sha256 -subj '/CN=$reg' -keyout /etc/docker/registry/server.key \
			-out server.csr 2>/dev/null
		printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' '$reg' >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
			-extfile server.ext -out /etc/docker/registry/server.crt 2>/dev/null
		rm -f server.csr server.ext ca.srl
		chown docker-registry /etc/docker/registry/server.key
		chmod 0600 /etc/docker/registry/server.key"
	# bcrypt: the only hash the distribution registry accepts
	chroot "$r" htpasswd -Bbc /etc/docker/registry/htpasswd "$STACK_REGISTRY_USER" "$STACK_REGISTRY_PASSWORD" 2>/dev/null
	cp "$r/etc/plumb-vm/ca.crt" "$out/ca.crt"
	printf "REGISTRY='%s'\nREGISTRY_USER='%s'\nREGISTRY_PASSWORD='%s'\n" "$reg" "$STACK_REGISTRY_USER" "$STACK_REGISTRY_PASSWORD" \
		>"$r/etc/plumb-vm/registry.env"
	cat >"$r/etc/docker/registry/config.yml" <<EOF
# plumb VM (tests/vm/vm.sh --stack): the stand-in for Harbor.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :443
  tls:
    certificate: /etc/docker/registry/server.crt
    key: /etc/docker/registry/server.key
auth:
  htpasswd:
    realm: plumb-vm
    path: /etc/docker/registry/htpasswd
EOF
	d=$r/etc/systemd/system
	mkdir -p "$d/docker-registry.service.d" "$d/multi-user.target.wants"
	printf '[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n' >"$d/docker-registry.service.d/plumb-vm.conf"
	cat >"$r/usr/local/sbin/plumb-vm-setup" <<EOF
#!/bin/sh
# plumb stack VM (tests/vm/vm.sh --stack): the host key and client key from
# qemu fw_cfg, eth0, then sshd may start.
modprobe -a -q qemu_fw_cfg
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/plumb
umask 077
cat \$fw/host_key/raw >/etc/ssh/plumb_vm_host_key
umask 022
cat \$fw/authorized_keys/raw >/etc/ssh/plumb_vm_authorized_keys
ip link set lo up
ip addr add $GUEST_IP/24 dev eth0
ip link set eth0 up
ip route add default via $GUEST_GW
read -r up _ </proc/uptime
echo "plumb-vm-init: [\$up] starting sshd" >/dev/console
EOF
	chmod 0755 "$r/usr/local/sbin/plumb-vm-setup"
	cat >"$d/plumb-vm-setup.service" <<'EOF'
[Unit]
Description=plumb VM: keys from fw_cfg, eth0
DefaultDependencies=no
After=systemd-udevd.service systemd-modules-load.service
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/plumb-vm-setup

[Install]
WantedBy=multi-user.target
EOF
	cat >"$d/plumb-vm-sshd.service" <<'EOF'
[Unit]
Description=plumb VM: sshd
After=plumb-vm-setup.service
Requires=plumb-vm-setup.service

[Service]
ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh/plumb_vm_sshd_config
KillMode=process
Restart=always

[Install]
WantedBy=multi-user.target
EOF
	ln -sf ../plumb-vm-setup.service "$d/multi-user.target.wants/plumb-vm-setup.service"
	ln -sf ../plumb-vm-sshd.service "$d/multi-user.target.wants/plumb-vm-sshd.service"
	# Debian's own ssh units would read /etc/ssh/sshd_config without host keys.
	rm -f "$d/multi-user.target.wants/ssh.service" "$d/sshd.service" "$d/sockets.target.wants/ssh.socket"
	# Nothing that only costs boot time under TCG (timers, a getty on the
	# console, waiting for a network manager that is not there).
	for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer serial-getty@ttyS0.service \
		getty@tty1.service systemd-networkd-wait-online.service ssh.service ssh.socket \
		systemd-timesyncd.service; do
		ln -sf /dev/null "$d/$u"
	done
	# A unit's own journal is enough; a persistent journal costs writes.
	mkdir -p "$r/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\n' >"$r/etc/systemd/journald.conf.d/plumb-vm.conf"
}

write_initrd_init() { # PATH
	cat >"$1" <<'EOF'
#!/bin/sh
# initrd of the plumb tier-2 VM: load the virtio and ext4 modules, mount
# /dev/vda, switch_root into /sbin/plumb-vm-init.
/bin/busybox --install -s /bin
fail() { echo "initrd: $*"; poweroff -f; }
mount -t devtmpfs devtmpfs /dev
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
while read -r m; do
	insmod "/lib/modules/$m" || echo "initrd: insmod $m failed"
done </modules.list
n=0
while [ ! -b /dev/vda ]; do
	n=$((n + 1))
	[ $n -le 300 ] || fail "no /dev/vda"
	sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
# The root's init: /sbin/plumb-vm-init, or what /etc/plumb-vm-init names
# (the stack image: systemd).
init=/sbin/plumb-vm-init
[ ! -f /newroot/etc/plumb-vm-init ] || read -r init </newroot/etc/plumb-vm-init
[ -x "/newroot$init" ] || fail "no $init on /dev/vda"
# The API filesystems for the real root (cheaper here than with util-linux).
r=/newroot
mount --move /dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts $r/dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $r/dev/shm
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs $r/run
mkdir -p $r/run/sshd $r/run/lvm
mkdir -m 1777 $r/run/lock
mount --move /proc $r/proc
mount --move /sys $r/sys
exec switch_root $r "$init"
EOF
	chmod 0755 "$1"
}

# ---------------------------------------------------------------- helpers

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

alive() { # PID: exists and not a zombie
	local st
	[[ ${1:-} =~ ^[0-9]+$ ]] || return 1
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

# Only trust a recorded pid whose command line names this VM's root overlay
# (qemu) or this DIR after "_watch" (the owner watcher).
is_qemu_pid() { # PID DIR
	alive "$1" || return 1
	tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "file=$2/root.qcow2,"
}
is_watch_pid() { # PID DIR
	alive "$1" || return 1
	local args
	args=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	grep -qxF _watch <<<"$args" && grep -qxF -- "$2" <<<"$args"
}

kill_pid() { # PID CHECK DIR: TERM, then KILL after a bounded wait
	local pid=$1 check=$2 dir=$3 sig i
	for sig in TERM KILL; do
		"$check" "$pid" "$dir" || return 0
		kill -"$sig" "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			alive "$pid" || return 0
			sleep 0.05
		done
	done
	alive "$pid" && warn "pid $pid did not exit"
	return 0
}

# A path for a unix socket: DIR/NAME if at most MAX long, else under
# /run/plumb-vm (sun_path holds 107 bytes).
sock_path() { # DIR NAME MAX
	local p=$1/$2
	if ((${#p} > $3)); then
		mkdir -p "$RUNDIR"
		p=$RUNDIR/$(printf '%s' "$1" | cksum | cut -d' ' -f1)-$2
	fi
	echo "$p"
}

# TCP ports something listens on (IPv4 and IPv6), one per line.
listening_ports() {
	local hex
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A" { n = split($2, a, ":"); print a[n] }' |
		while read -r hex; do echo $((16#$hex)); done | sort -un
}

# Does process PID hold a socket listening on TCP PORT?
pid_listens() { # PID PORT
	local inodes hexport
	inodes=$(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n')
	[ -n "$inodes" ] || return 1
	printf -v hexport '%04X' "$2"
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		awk -v p=":$hexport" -v ino="$inodes" '
			BEGIN { n = split(ino, a, "\n"); for (i = 1; i <= n; i++) if (a[i] != "") want[a[i]] = 1 }
			$4 == "0A" && substr($2, length($2) - 4) == p && ($10 in want) { found = 1 }
			END { exit !found }'
}

pick_port() {
	local used p i
	used=$(listening_ports)
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + (${SRANDOM:-$((RANDOM * 32768 + RANDOM))} % 40000)))
		grep -qx "$p" <<<"$used" || { echo "$p"; return 0; }
	done
	die "no free TCP port found"
}

ssh_base() { # DIR -> argv prefix (one shared connection)
	local dir=$1
	SSH_ARGS=(ssh -F "$dir/ssh_config" -o ControlMaster=auto -o "ControlPath=$(cat "$dir/control_path")" -o ControlPersist=600)
}

# Wait for a free slot (at most MAX_RUNNING VMs). The lock is taken on fd 9,
# which qemu inherits: the slot is held exactly as long as that qemu lives.
take_slot() {
	mkdir -p "$RUNDIR"
	local deadline=$((SECONDS + SLOT_TIMEOUT)) k said=
	while :; do
		for ((k = 1; k <= MAX_RUNNING; k++)); do
			exec 9>"$RUNDIR/slot.$k"
			if flock -n 9; then return 0; fi
			exec 9>&-
		done
		((SECONDS < deadline)) || die "no VM slot free after ${SLOT_TIMEOUT}s ($MAX_RUNNING running; PLUMB_VM_MAX_RUNNING)"
		[ -n "$said" ] || { note "$MAX_RUNNING VMs running; waiting for one to stop"; said=1; }
		sleep 1
	done
}

# ---------------------------------------------------------------- up / down

UP_DIR= UP_OK=0
up_cleanup() {
	if [ "$UP_OK" = 0 ] && [ -n "$UP_DIR" ]; then
		note "up failed, tearing down $UP_DIR"
		cmd_down "$UP_DIR" || true
	fi
}

start_qemu() { # DIR PORT -> sets QEMU_PID
	local dir=$1 port=$2 k args=()
	args=(-name plumb-vm -nodefaults -no-user-config -no-reboot
		-machine pc -accel tcg,thread=multi,tb-size=128 -smp "$SMP" -m "$MEM"
		-display none -vga none -serial "file:$dir/console.log"
		-kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img"
		-append "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 mitigations=off tsc=reliable ${PLUMB_VM_KERNEL_ARGS:-}"
		-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22"
		-device virtio-net-pci,netdev=n0,romfile=,addr=0x2
		-device virtio-rng-pci,addr=0x3
		-drive "file=$dir/root.qcow2,format=qcow2,if=none,id=root,cache=unsafe,discard=unmap"
		-device virtio-blk-pci,drive=root,serial=plumb-root,addr=0x4)
	# Fixed PCI slots in disk order: the guest names virtio disks in PCI order,
	# so the root is vda and data disk K is vd(b+K). (`if=virtio` drives are
	# placed after all -device ones, which made a data disk vda.)
	for ((k = 0; k < DISKS; k++)); do
		args+=(-drive "file=$dir/data$k.qcow2,format=qcow2,if=none,id=data$k,cache=unsafe,discard=unmap"
			-device "virtio-blk-pci,drive=data$k,serial=plumb-data$k,addr=$(printf '0x%x' $((5 + k)))")
	done
	args+=(
		-fw_cfg "name=opt/plumb/host_key,file=$dir/hostkey"
		-fw_cfg "name=opt/plumb/authorized_keys,file=$dir/id_ed25519.pub"
		-qmp "unix:$(cat "$dir/qmp_path"),server=on,wait=off")
	: >"$dir/console.log"
	# Not a process-group leader here, so setsid execs qemu in place: $! is
	# qemu's pid. fd 9 (the slot lock) is inherited on purpose; 7 and 8 are not.
	setsid "$QEMU" "${args[@]}" </dev/null >"$dir/qemu.log" 2>&1 7>&- 8>&- &
	QEMU_PID=$!
	echo "$QEMU_PID" >"$dir/pid"
	echo "$port" >"$dir/port"
}

write_ssh_files() { # DIR PORT
	local dir=$1 port=$2
	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/hostkey.pub")" >"$dir/known_hosts"
	cat >"$dir/ssh_config" <<EOF
Host vm
  HostName 127.0.0.1
  Port $port
Host *
  User root
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  CheckHostIP no
  BatchMode yes
  ConnectTimeout 15
  ServerAliveInterval 15
  ServerAliveCountMax 4
EOF
}

ssh_banner() { # PORT: is an sshd answering (through slirp) on it?
	local b
	b=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 4 <&3' _ "$1" 2>/dev/null || true)
	[ "$b" = SSH- ]
}

console_tail() { # DIR
	echo "--- tail of $1/console.log:" >&2
	tail -n 30 "$1/console.log" >&2 2>/dev/null || true
	if [ -s "$1/qemu.log" ]; then
		echo "--- $1/qemu.log:" >&2
		tail -n 10 "$1/qemu.log" >&2 || true
	fi
}

cmd_up() {
	need_root
	[ $# -ge 1 ] || die "usage: vm.sh up DIR [--disks N] [--disk-size SIZE]"
	local dir
	dir=$(abs_dir "$1")
	shift
	[[ $dir =~ ^[A-Za-z0-9_./+-]+$ ]] || die "state dir must be a plain path (letters, digits, _ . / + -): $dir"
	DISKS=2
	local size=4G
	while [ $# -gt 0 ]; do
		case $1 in
		--disks) DISKS=${2:?--disks N}; shift 2 ;;
		--disk-size) size=${2:?--disk-size SIZE}; shift 2 ;;
		--stack) set_variant stack; shift ;;
		*) die "unknown option $1" ;;
		esac
	done
	[[ $DISKS =~ ^[0-9]+$ ]] && ((DISKS <= 20)) || die "--disks must be 0..20"
	[[ $size =~ ^[0-9]+[KMGT]?$ ]] || die "--disk-size must be a number with an optional K, M, G or T suffix: $size"
	if [ -f "$dir/pid" ] && is_qemu_pid "$(cat "$dir/pid")" "$dir"; then die "$dir already has a running VM"; fi
	local c
	for c in "$QEMU" qemu-img ssh ssh-keygen setsid flock perl timeout; do
		command -v "$c" >/dev/null || die "$c not found (apt-get install qemu-system-x86 qemu-utils openssh-client)"
	done
	image_ready || cmd_image auto

	UP_DIR=$dir
	trap up_cleanup EXIT
	local t0=$SECONDS
	rm -f "$dir"/{root,data*}.qcow2 "$dir"/{pid,port,watch_pid,console.log,qemu.log,known_hosts,ssh_config,disks}
	rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub" "$dir/hostkey" "$dir/hostkey.pub"
	ssh-keygen -q -t ed25519 -N '' -C plumb-vm-client -f "$dir/id_ed25519"
	ssh-keygen -q -t ed25519 -N '' -C plumb-vm -f "$dir/hostkey"
	sock_path "$dir" qmp 100 >"$dir/qmp_path"
	# One shared connection per remote user (%r): a master logged in as root
	# would otherwise run `ssh -l deploy` commands as root. ssh binds the
	# socket under a 17-character temporary suffix first, hence the short MAX.
	sock_path "$dir" 'mux-%r' 72 >"$dir/control_path"
	rm -f "$(cat "$dir/qmp_path")" "$(sed 's/%r/*/' "$dir/control_path")"
	qemu-img create -q -f qcow2 -o compat=1.1 -F raw -b "$IMAGE/root.img" "$dir/root.qcow2"
	local k
	for ((k = 0; k < DISKS; k++)); do
		qemu-img create -q -f qcow2 -o compat=1.1 "$dir/data$k.qcow2" "$size"
	done
	echo "$DISKS" >"$dir/disks"

	take_slot
	local attempt port t_boot=$SECONDS
	for attempt in 1 2 3; do
		if ((attempt == 1)) && [ -n "${PLUMB_VM_PORT:-}" ]; then port=$PLUMB_VM_PORT; else port=$(pick_port); fi
		write_ssh_files "$dir" "$port"
		start_qemu "$dir" "$port"
		# hostfwd binds at start-up: within seconds qemu itself listens on the
		# port (not just anyone: that is how a taken port shows), or has died.
		local i
		for ((i = 0; i < 400; i++)); do
			alive "$QEMU_PID" || break
			pid_listens "$QEMU_PID" "$port" && break
			sleep 0.05
		done
		alive "$QEMU_PID" && break
		if grep -q 'host forwarding' "$dir/qemu.log" && ((attempt < 3)); then
			warn "qemu could not bind 127.0.0.1:$port ($(head -c 300 "$dir/qemu.log")); retrying on another port"
			continue
		fi
		console_tail "$dir"
		die "qemu exited at start-up"
	done
	exec 9>&- # qemu holds the slot now

	# Wait for sshd: first its banner (cheap), then a real login. That login
	# stays open as the shared connection (ControlMaster) that `vm.sh ssh` and
	# the Rust helper reuse; its stdout must not be ours (a caller reading our
	# stdout to EOF would wait for the master to exit).
	local deadline=$((t_boot + UP_TIMEOUT))
	ssh_base "$dir"
	while :; do
		if ! alive "$QEMU_PID"; then
			console_tail "$dir"
			die "qemu (pid $QEMU_PID) died while booting"
		fi
		# (probing before sshd runs only fills the console with slirp's resets)
		if grep -q '^plumb-vm-init: .* starting sshd' "$dir/console.log" && ssh_banner "$port"; then
			if timeout 30 "${SSH_ARGS[@]}" vm true </dev/null >/dev/null 2>"$dir/ssh.err"; then break; fi
		fi
		if ((SECONDS >= deadline)); then
			console_tail "$dir"
			[ -s "$dir/ssh.err" ] && { echo "--- last ssh error:" >&2; cat "$dir/ssh.err" >&2; }
			die "no SSH login on 127.0.0.1:$port after ${UP_TIMEOUT}s"
		fi
		sleep 0.5
	done
	rm -f "$dir/ssh.err"
	UP_OK=1
	if [[ ${PLUMB_VM_OWNER_PID:-} =~ ^[0-9]+$ ]]; then
		setsid "$VM_SH" _watch "$dir" "$PLUMB_VM_OWNER_PID" </dev/null >>"$dir/watch.log" 2>&1 7>&- 8>&- 9>&- &
		echo $! >"$dir/watch_pid"
	fi
	note "VM up in $((SECONDS - t0))s ($((SECONDS - t_boot))s from qemu start): ssh -F $dir/ssh_config vm (127.0.0.1:$port, pid $QEMU_PID)"
	echo "$port"
}

# Takes the VM down when its owner (a test process) is gone without `down`.
cmd_watch() { # DIR OWNER
	local dir=$1 owner=$2 qpid
	qpid=$(cat "$dir/pid" 2>/dev/null) || exit 0
	while is_qemu_pid "$qpid" "$dir"; do
		if ! alive "$owner"; then
			echo "$(date): owner pid $owner is gone; taking the VM down"
			exec "$VM_SH" down "$dir"
		fi
		sleep 2
	done
}

cmd_down() {
	need_root
	[ $# -ge 1 ] || die "usage: vm.sh down DIR"
	[ -d "$1" ] || return 0
	local dir pid cp
	dir=$(cd "$1" && pwd -P)
	if [ -f "$dir/control_path" ]; then
		# stop the shared connections (one per user): ControlPath=%r template
		for cp in $(sed 's/%r/*/' "$dir/control_path"); do
			[ -S "$cp" ] || continue
			timeout 5 ssh -F "$dir/ssh_config" -o "ControlPath=$cp" -O exit vm >/dev/null 2>&1 || true
			rm -f "$cp"
		done
	fi
	if [ -f "$dir/pid" ]; then
		pid=$(cat "$dir/pid")
		kill_pid "$pid" is_qemu_pid "$dir"
	fi
	if [ -f "$dir/watch_pid" ]; then
		pid=$(cat "$dir/watch_pid")
		[ "$pid" = "$$" ] || kill_pid "$pid" is_watch_pid "$dir"
	fi
	[ -f "$dir/qmp_path" ] && rm -f "$(cat "$dir/qmp_path")"
	rm -f "$dir"/root.qcow2 "$dir"/data*.qcow2 "$dir/pid" "$dir/watch_pid"
}

# Exit 0 if `up` can work here, else print why and exit 1. Cheap: no build.
cmd_check() {
	[ "$(id -u)" = 0 ] || die "the VM lab needs root"
	local c miss=()
	for c in "$QEMU" qemu-img ssh ssh-keygen setsid flock perl timeout numfmt; do
		command -v "$c" >/dev/null || miss+=("$c")
	done
	((${#miss[@]} == 0)) || die "the VM lab needs ${miss[*]} (apt-get install qemu-system-x86 qemu-utils openssh-client)"
	image_ready && return 0
	[ ! -e "$IMAGE.failed" ] || die "the VM image build failed before (log: $CACHE/$LOG_NAME); run 'tests/vm/vm.sh image' to retry"
	local missing
	missing=$(image_missing_tools)
	[ -z "$missing" ] || die "no cached VM image, and building one needs: $missing (apt-get install mmdebstrap busybox-static cpio e2fsprogs)"
	kernel_package >/dev/null || die "no cached VM image, and apt knows no linux-image-*-cloud-amd64 package (apt-get update)"
}

# ---------------------------------------------------------------- running VM

running_dir() { # DIR -> prints the absolute dir of a running VM
	[ -d "$1" ] || die "no VM in $1"
	local dir
	dir=$(cd "$1" && pwd -P)
	[ -f "$dir/pid" ] && is_qemu_pid "$(cat "$dir/pid")" "$dir" || die "no running VM in $dir"
	echo "$dir"
}

cmd_ssh() {
	local dir
	dir=$(running_dir "${1:?usage: vm.sh ssh DIR [CMD...]}")
	shift
	ssh_base "$dir"
	exec "${SSH_ARGS[@]}" vm "$@"
}

qmp() { # SOCKET JSON-COMMAND...: run QMP commands, fail on an error reply
	perl -MIO::Socket::UNIX -e '
		use strict; use warnings;
		my $path = shift;
		$SIG{ALRM} = sub { die "QMP: timed out\n" }; alarm 30;
		my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM) or die "QMP: cannot connect to $path: $!\n";
		$s->autoflush(1);
		sub reply { while (defined(my $l = <$s>)) { next if $l =~ /^\{"event"/ || $l =~ /^\{"timestamp"/; return $l } die "QMP: connection closed\n" }
		reply() =~ /"QMP"/ or die "QMP: no greeting\n";
		for my $cmd (q({"execute":"qmp_capabilities"}), @ARGV) {
			print $s "$cmd\n";
			my $r = reply();
			$r =~ /^\{"return"/ or die "QMP: $cmd: $r";
		}' "$@"
}

cmd_resize_disk() { # DIR INDEX NEWSIZE
	[ $# -eq 3 ] || die "usage: vm.sh resize-disk DIR INDEX NEWSIZE"
	local dir idx=$2 size=$3 disks bytes name want got i
	dir=$(running_dir "$1")
	disks=$(cat "$dir/disks")
	if [[ $idx =~ ^vd[b-z]$ ]]; then
		idx=$(($(printf '%d' "'${idx:2:1}") - $(printf '%d' "'b")))
	fi
	[[ $idx =~ ^[0-9]+$ ]] && ((idx < disks)) || die "no data disk $2 (the VM has $disks: index 0 = /dev/vdb)"
	[[ $size =~ ^[0-9]+[KMGT]?$ ]] || die "NEWSIZE must be a number with an optional K, M, G or T suffix: $size"
	bytes=$(numfmt --from=iec "$size")
	qmp "$(cat "$dir/qmp_path")" "{\"execute\":\"block_resize\",\"arguments\":{\"device\":\"data$idx\",\"size\":$bytes}}" ||
		die "block_resize data$idx to $size failed"
	# The guest learns the new capacity asynchronously: wait until it does.
	name=vd$(printf "\\$(printf '%03o' $((98 + idx)))")
	want=$((bytes / 512))
	ssh_base "$dir"
	for ((i = 0; i < 60; i++)); do
		got=$("${SSH_ARGS[@]}" vm cat "/sys/block/$name/size" </dev/null 2>/dev/null || true)
		[ "$got" = "$want" ] && { note "/dev/$name is now $size"; return 0; }
		sleep 0.5
	done
	die "/dev/$name still reports ${got:-?} sectors, want $want"
}

# ---------------------------------------------------------------- main

# One brace group, ending in exit: bash parses it whole before running it, so
# a long-running vm.sh (the owner watcher) never reads an edited file's tail.
{
set_variant small
case ${1:-} in
image)
	shift
	mode=retry
	while [ $# -gt 0 ]; do
		case $1 in
		--force) mode=force ;;
		--stack) set_variant stack ;;
		*) die "usage: vm.sh image [--stack] [--force]" ;;
		esac
		shift
	done
	cmd_image "$mode"
	echo "$IMAGE"
	;;
_build) shift; build_image "$@" ;;
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
resize-disk) shift; cmd_resize_disk "$@" ;;
ssh) shift; cmd_ssh "$@" ;;
check) [ "${2:-}" != --stack ] || set_variant stack; cmd_check ;;
_watch) shift; cmd_watch "$@" ;;
*) sed -n '2,25s/^# \{0,1\}//p' "$VM_SH" >&2; exit 2 ;;
esac
exit
}
