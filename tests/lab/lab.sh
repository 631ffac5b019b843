#!/usr/bin/env bash
# plumb tier-1 test lab: N isolated SSH hosts, each a network namespace plus a
# mount/uts/pid namespace whose PID 1 is sshd, on an overlay over a cached
# Debian root. See tests/lab/README.md. Must run as root.
#
#   lab.sh rootfs [--systemd]
#   lab.sh up DIR N [--max-sessions M] [--first-ip K] [--systemd]
#   lab.sh down DIR
#   lab.sh cut DIR NAME | heal DIR NAME | kill-sshd DIR NAME | rekey DIR NAME
#
# Environment:
#   PLUMB_LAB_CACHE      rootfs cache dir              (/var/cache/plumb-lab)
#   PLUMB_LAB_ROOTFS     overlay lower dir(s) instead of the cached rootfs, e.g.
#                        / or FIXTURES:/var/cache/plumb-lab/rootfs-v1
#   PLUMB_LAB_OWNER_PID  pid owning the lab; if that process is gone, its IPs
#                        may be reclaimed (nodes killed) by a later `up` that
#                        runs short of addresses. Unset: never reclaimed.
#   PLUMB_LAB_UP_TIMEOUT seconds `up` waits for every sshd (120)
set -euo pipefail

LAB_SH=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${PLUMB_LAB_CACHE:-/var/cache/plumb-lab}
ROOTFS=$CACHE/rootfs-v1
RUNDIR=/run/plumb-lab
IPDIR=$RUNDIR/ip
BRIDGE=plbr0
NET=10.77.0
HOST_IP=$NET.254
PACKAGES=openssh-server,coreutils,procps,iproute2,sudo,acl,attr,e2fsprogs,util-linux,mount,findutils,diffutils
UP_TIMEOUT=${PLUMB_LAB_UP_TIMEOUT:-120}
# Tier 1b (--systemd): nodes whose PID 1 is systemd, in their own cgroup
# namespace; sshd runs as ssh.service. A root of its own, with systemd and dbus.
SYSTEMD_ROOTFS=$CACHE/rootfs-systemd-v1
SYSTEMD_PACKAGES=$PACKAGES,systemd-sysv,dbus
INIT=sshd
MMLOG=$CACHE/mmdebstrap.log
use_systemd() { ROOTFS=$SYSTEMD_ROOTFS; PACKAGES=$SYSTEMD_PACKAGES; INIT=systemd; MMLOG=$CACHE/mmdebstrap-systemd.log; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "lab.sh: error: $*" >&2; exit 1; }
warn() { echo "lab.sh: warning: $*" >&2; }
# Under CI (CI=true, or PLUMB_LAB_REQUIRE set and not 0) a degraded lab is an
# error: what the tests would run against is not what they say.
strict() { [ "${CI:-}" = true ] || { [ -n "${PLUMB_LAB_REQUIRE:-}" ] && [ "${PLUMB_LAB_REQUIRE}" != 0 ]; }; }
# degraded WHY FALLBACK: warn and go on with FALLBACK, or die under CI.
degraded() { if strict; then die "$1 (no fallback under CI: CI=true or PLUMB_LAB_REQUIRE is set)"; fi; warn "$1; $2"; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# ---------------------------------------------------------------- rootfs

# apt_sources CODENAME: this machine's Debian sources (see the file).
. "${LAB_SH%/*}/../lib/apt-sources.sh"

# Build the cached rootfs once (atomically); print the lower dir to use.
# Falls back to "/" (with a warning) if mmdebstrap is missing or fails.
cmd_rootfs() {
	local force=${1:-}
	need_root
	if [ -n "${PLUMB_LAB_ROOTFS:-}" ]; then echo "$PLUMB_LAB_ROOTFS"; return; fi
	mkdir -p "$CACHE"
	exec 7>"$CACHE/rootfs.lock"
	flock -w 1200 7 || die "timed out waiting for $CACHE/rootfs.lock"
	if [ -f "$ROOTFS/.plumb-lab-rootfs" ]; then exec 7>&-; echo "$ROOTFS"; return; fi
	if [ -z "$force" ] && [ -e "$ROOTFS.failed" ]; then
		exec 7>&-
		[ "$INIT" = sshd ] || die "the systemd rootfs build failed before ($ROOTFS.failed); run 'lab.sh rootfs --systemd' to retry"
		degraded "rootfs build failed before ($ROOTFS.failed); run 'lab.sh rootfs' to retry" "using / as lower dir"
		echo /; return
	fi
	local codename mirrors=() tmp line
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	if [ -n "$codename" ]; then
		while IFS= read -r line; do mirrors+=("$line"); done < <(apt_sources "$codename")
	fi
	[ -n "$codename" ] || codename=stable
	echo "lab.sh: building $ROOTFS ($codename from: ${mirrors[*]:-mmdebstrap default})" >&2
	rm -rf "$ROOTFS".tmp.*
	tmp=$(mktemp -d "$ROOTFS.tmp.XXXXXX")
	chmod 0755 "$tmp"
	local t0=$SECONDS
	if command -v mmdebstrap >/dev/null &&
		timeout 1200 mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" \
			"$codename" "$tmp" "${mirrors[@]}" >"$MMLOG" 2>&1 &&
		customize_rootfs "$tmp" >>"$MMLOG" 2>&1; then
		touch "$tmp/.plumb-lab-rootfs"
		mv -T "$tmp" "$ROOTFS"
		rm -f "$ROOTFS.failed"
		exec 7>&-
		echo "lab.sh: rootfs built in $((SECONDS - t0))s" >&2
		echo "$ROOTFS"
	else
		rm -rf "$tmp"
		date >"$ROOTFS.failed"
		exec 7>&-
		[ "$INIT" = sshd ] || die "mmdebstrap failed for the systemd rootfs (see $CACHE/mmdebstrap.log: $(tail -n 3 "$MMLOG" 2>/dev/null | tr '\n' ' '))"
		degraded "mmdebstrap failed (see $CACHE/mmdebstrap.log: $(tail -n 3 "$MMLOG" 2>/dev/null | tr '\n' ' '))" "using / as lower dir"
		echo /
	fi
}

customize_rootfs() {
	local r=$1
	# Password field '*' (not useradd's locked '!'): with UsePAM no, sshd refuses
	# public-key logins to accounts whose password starts with '!'.
	chroot "$r" useradd -m -u 1001 -U -s /bin/bash -p '*' deploy
	chroot "$r" useradd -m -u 1002 -U -s /bin/bash -p '*' nosudo
	echo 'deploy ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/deploy"
	chmod 0440 "$r/etc/sudoers.d/deploy"
	rm -f "$r"/etc/ssh/ssh_host_*
	rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*_Packages
}

# ---------------------------------------------------------------- helpers

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

# The node's top process (session leader) is "ip netns exec ... unshare ...
# lab.sh _node-init DIR NAME K": only trust a pid whose cmdline says so.
is_node_pid() { # PID DIR
	local pid=$1 dir=$2 st
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ] || return 1
	tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$dir"
}

alive() { # PID: exists and not a zombie
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}

pgid_of() { local st; st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; st=${st##*) }; set -- $st; echo "$3"; }

# SIGTERM each node's process group, SIGKILL after a short bounded wait.
# Only pids whose cmdline names DIR are touched. (Dead nodes linger briefly as
# zombies until PID 1 reaps them: alive() counts a zombie as dead.)
kill_nodes() { # DIR PID...
	local dir=$1 pid sig i left
	shift
	local pids=()
	for pid in "$@"; do is_node_pid "$pid" "$dir" && pids+=("$pid"); done
	for sig in TERM KILL; do
		((${#pids[@]})) || return 0
		for pid in "${pids[@]}"; do
			if [ "$(pgid_of "$pid")" = "$pid" ]; then kill -"$sig" -- "-$pid" 2>/dev/null || true; else kill -"$sig" "$pid" 2>/dev/null || true; fi
		done
		# TERM gets 2 s; after KILL, wait until they are gone (a loaded
		# machine can take long to reap), bounded by the start-up timeout.
		local deadline=$((SECONDS + 2))
		[ "$sig" = TERM ] || deadline=$((SECONDS + UP_TIMEOUT))
		while :; do
			left=()
			for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
			pids=("${left[@]+"${left[@]}"}")
			((${#pids[@]})) || return 0
			((SECONDS < deadline)) || break
			sleep 0.05
		done
	done
	warn "pids ${pids[*]} did not exit"
}
kill_node() { kill_nodes "$2" "$1"; } # PID DIR

# Host-side pid of the node's PID 1 (the child of the recorded unshare pid).
inner_pid() { # PID
	local c
	c=$(cat "/proc/$1/task/$1/children" 2>/dev/null) || return 1
	set -- $c
	[ -n "${1:-}" ] && echo "$1"
}

lock_global() { mkdir -p "$IPDIR"; exec 8>"$RUNDIR/lock"; flock -w 60 8 || die "timed out waiting for $RUNDIR/lock"; }
unlock_global() { exec 8>&-; }

ensure_bridge() { # under the global lock
	ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
	ip addr replace "$HOST_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
}

read_lock() { # K -> LDIR LOWNER LPID
	LDIR= LOWNER= LPID=
	{ read -r LDIR || true; read -r LOWNER || true; read -r LPID || true; } <"$IPDIR/$1" 2>/dev/null || true
}

write_lock() { # K DIR OWNER PID
	printf '%s\n%s\n%s\n' "$2" "$3" "$4" >"$IPDIR/$1.tmp.$$" && mv -f "$IPDIR/$1.tmp.$$" "$IPDIR/$1"
}

free_net() { # K: remove netns and root-side veth of address K
	ip netns del "pln$1" 2>/dev/null || true
	ip link del "plv$1" 2>/dev/null || true
}

# A lock is stale if its owner pid is recorded and gone.
lock_stale() { # K
	read_lock "$1"
	[[ $LOWNER =~ ^[0-9]+$ ]] && ! alive "$LOWNER"
}

reclaim() { # K (under the global lock)
	read_lock "$1"
	warn "reclaiming $NET.$1 from $LDIR (owner pid $LOWNER is gone)"
	[ -n "$LPID" ] && [ -n "$LDIR" ] && kill_node "$LPID" "$LDIR"
	[ -n "$LDIR" ] && remove_cgroups "$LDIR" "$1"
	free_net "$1"
	rm -f "$IPDIR/$1"
}

# ---------------------------------------------------------------- nodes

node_field() { # DIR NAME -> "ip pid" of NAME
	local n ip pid
	[ -f "$1/nodes" ] || die "no lab in $1"
	while read -r n ip pid; do
		[ "$n" = "$2" ] && { echo "$ip $pid"; return 0; }
	done <"$1/nodes"
	die "no node $2 in $1/nodes"
}

# The cgroup2 hierarchy: /sys/fs/cgroup, or the unified part of a hybrid setup.
cgroup_root() {
	local m
	for m in /sys/fs/cgroup /sys/fs/cgroup/unified; do
		[ "$(stat -f -c %T "$m" 2>/dev/null)" = cgroup2fs ] && { echo "$m"; return 0; }
	done
	return 1
}

init_of() { cat "$1/init" 2>/dev/null || echo sshd; } # DIR

start_node() { # DIR NAME K -> prints pid
	local dir=$1 name=$2 k=$3
	mkdir -p "$dir/$name.root"
	if [ "$(init_of "$dir")" = systemd ]; then
		# A cgroup of the node's own becomes the root of its cgroup namespace
		# (chosen out here: `ip netns exec` remounts /sys).
		local cg
		cg=$(cgroup_root)/plumb-lab/pl$k
		mkdir -p "$cg"
		echo "$cg" >"$dir/$name.cgroup"
		(
			echo "$BASHPID" >"$cg/cgroup.procs"
			# --kill-child: whoever kills the node's top process (down, rekey,
			# a reclaim) takes systemd and its whole PID namespace with it.
			exec setsid ip netns exec "pln$k" unshare --mount --uts --pid --cgroup --fork --kill-child --propagation private \
				"$LAB_SH" _node-init "$dir" "$name" "$k"
		) </dev/null >>"$dir/$name.log" 2>&1 7>&- 8>&- &
		echo $!
		return
	fi
	# Not a process-group leader here (no job control), so setsid does not
	# fork and $! is the session leader. Lock fds 7/8 must not leak into it.
	setsid ip netns exec "pln$k" unshare --mount --uts --pid --fork --propagation private \
		"$LAB_SH" _node-init "$dir" "$name" "$k" \
		</dev/null >>"$dir/$name.log" 2>&1 7>&- 8>&- &
	echo $!
}

wait_ready() { # DIR then "NAME IP PID" lines on stdin
	local dir=$1 deadline=$((SECONDS + UP_TIMEOUT)) pending=() n ip pid p left banner
	while read -r n ip pid; do pending+=("$n $ip $pid"); done
	while ((${#pending[@]})); do
		left=()
		for p in "${pending[@]}"; do
			set -- $p
			# A generous wait per try: a loaded machine (two TCG VMs, a
			# build) can take seconds to fork and re-exec sshd for the banner.
			banner=$(timeout 10 bash -c 'exec 3<>"/dev/tcp/$1/22" && head -c 4 <&3' _ "$2" 2>/dev/null || true)
			if [ "$banner" = SSH- ]; then continue; fi
			if ! alive "$3"; then
				echo "lab.sh: $1 ($2) died during start-up; tail of $dir/$1.log:" >&2
				tail -n 20 "$dir/$1.log" >&2 || true
				return 1
			fi
			left+=("$p")
		done
		pending=("${left[@]+"${left[@]}"}")
		((${#pending[@]})) || break
		if ((SECONDS >= deadline)); then
			for p in "${pending[@]}"; do
				set -- $p
				echo "lab.sh: $1 ($2) does not accept TCP on port 22 after ${UP_TIMEOUT}s; tail of $dir/$1.log:" >&2
				tail -n 20 "$dir/$1.log" >&2 || true
			done
			return 1
		fi
		sleep 0.05
	done
}

UP_DIR= UP_OK=0
up_cleanup() { if [ "$UP_OK" = 0 ] && [ -n "$UP_DIR" ]; then echo "lab.sh: up failed, tearing down $UP_DIR" >&2; cmd_down "$UP_DIR" || true; fi; }

cmd_up() {
	need_root
	[ $# -ge 2 ] || die "usage: lab.sh up DIR N [--max-sessions M] [--first-ip K] [--systemd]"
	local dir n=$2 max_sessions=10 first=1 lower
	dir=$(abs_dir "$1")
	[[ $dir =~ ^[^[:space:]]+$ ]] || die "state dir must not contain whitespace: $dir"
	shift 2
	while [ $# -gt 0 ]; do
		case $1 in
		--max-sessions) max_sessions=${2:?}; shift 2 ;;
		--first-ip) first=${2:?}; shift 2 ;;
		--systemd) use_systemd; shift ;;
		*) die "unknown option $1" ;;
		esac
	done
	[[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 253)) || die "N must be 1..253"
	[[ $max_sessions =~ ^[0-9]+$ ]] || die "--max-sessions must be a number"
	[[ $first =~ ^[0-9]+$ ]] && ((first >= 1 && first <= 253)) || die "--first-ip must be 1..253"
	if [ -s "$dir/nodes" ]; then
		local _n _ip _pid
		while read -r _n _ip _pid; do is_node_pid "$_pid" "$dir" && die "$dir already has a running lab"; done <"$dir/nodes"
	fi
	for c in ip sshd ssh-keygen unshare setsid flock timeout; do command -v "$c" >/dev/null || die "$c not found"; done

	lower=$(cmd_rootfs)
	local l ok=
	for l in ${lower//:/ }; do [ -x "$l/usr/sbin/sshd" ] && ok=1; done
	[ -n "$ok" ] || die "no /usr/sbin/sshd in lower dir $lower"
	if [ "$INIT" = systemd ]; then
		ok=
		for l in ${lower//:/ }; do [ -x "$l/lib/systemd/systemd" ] && ok=1; done
		[ -n "$ok" ] || die "no /lib/systemd/systemd in lower dir $lower (build it: lab.sh rootfs --systemd)"
		cgroup_root >/dev/null || die "no cgroup2 hierarchy on this machine (needed by --systemd)"
	fi
	[ "$lower" != / ] || [ -x /usr/bin/sudo ] || warn "lower dir is / and it has no sudo: 'deploy' cannot sudo"

	UP_DIR=$dir
	trap up_cleanup EXIT
	rm -f "$dir/nodes" "$dir/known_hosts" "$dir/ips" "$dir"/node*.log
	echo "$lower" >"$dir/lowerdir"
	echo "$INIT" >"$dir/init"
	echo "$max_sessions" >"$dir/max_sessions"
	: >"$dir/nodes"
	: >"$dir/known_hosts"

	# Allocate addresses: free ones first (from --first-ip up), then stale ones.
	local owner=${PLUMB_LAB_OWNER_PID:--} ks=() k pass
	lock_global
	for pass in free stale; do
		for ((k = first; k <= 253 && ${#ks[@]} < n; k++)); do
			if [ -e "$IPDIR/$k" ]; then
				[ $pass = stale ] && lock_stale "$k" || continue
				reclaim "$k"
			fi
			write_lock "$k" "$dir" "$owner" ""
			echo "$k" >>"$dir/ips"
			ks+=("$k")
		done
	done
	if ((${#ks[@]} < n)); then unlock_global; die "only ${#ks[@]} of $n addresses free in $NET.$first-253"; fi
	ensure_bridge
	unlock_global

	[ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C plumb-lab -f "$dir/id_ed25519"
	{
		local i=0
		for k in "${ks[@]}"; do
			i=$((i + 1))
			printf 'Host node%s\n  HostName %s\n' "$i" "$NET.$k"
		done
		cat <<EOF
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
  ConnectTimeout 60
EOF
	} >"$dir/ssh_config"

	local i=0 name pid
	for k in "${ks[@]}"; do
		i=$((i + 1))
		name=node$i
		free_net "$k"
		ip netns add "pln$k"
		ip link add "plv$k" type veth peer name eth0 netns "pln$k"
		ip link set "plv$k" master "$BRIDGE" up
		ip -n "pln$k" addr add "$NET.$k/24" dev eth0
		ip -n "pln$k" link set lo up
		ip -n "pln$k" link set eth0 up
		rm -f "$dir/$name.hostkey" "$dir/$name.hostkey.pub"
		ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/$name.hostkey"
		echo "$NET.$k $(cut -d' ' -f1,2 "$dir/$name.hostkey.pub")" >>"$dir/known_hosts"
		pid=$(start_node "$dir" "$name" "$k")
		echo "$name $NET.$k $pid" >>"$dir/nodes"
		write_lock "$k" "$dir" "$owner" "$pid"
	done
	wait_ready "$dir" <"$dir/nodes" || exit 1
	UP_OK=1
	cat "$dir/nodes"
}

cmd_down() {
	need_root
	[ $# -ge 1 ] || die "usage: lab.sh down DIR"
	local dir n ip pid k
	[ -d "$1" ] || return 0
	dir=$(cd "$1" && pwd -P)
	local pids=()
	if [ -f "$dir/nodes" ]; then
		while read -r n ip pid; do pids+=("$pid"); done <"$dir/nodes"
	fi
	if [ "$(init_of "$dir")" = systemd ]; then
		# systemd as PID 1 re-executes itself on SIGTERM; SIGKILL of a
		# namespace's PID 1 ends every process in it.
		local inner
		for pid in "${pids[@]+"${pids[@]}"}"; do
			is_node_pid "$pid" "$dir" || continue
			inner=$(inner_pid "$pid") && kill -KILL "$inner" 2>/dev/null || true
		done
	fi
	kill_nodes "$dir" "${pids[@]+"${pids[@]}"}"
	remove_cgroups "$dir"
	lock_global
	for f in "$IPDIR"/*; do
		[ -f "$f" ] || continue
		k=${f##*/}
		[[ $k =~ ^[0-9]+$ ]] || continue
		read_lock "$k"
		[ "$LDIR" = "$dir" ] || continue
		free_net "$k"
		rm -f "$f"
	done
	if [ -z "$(ls -A "$IPDIR" 2>/dev/null)" ]; then
		ip link del "$BRIDGE" 2>/dev/null || true
	fi
	unlock_global
}

# Remove the nodes' cgroups (systemd leaves its slices behind), deepest first.
remove_cgroups() { # DIR [K]: every node's, or address K's only
	local f cg i
	for f in "$1"/*.cgroup; do
		[ -f "$f" ] || continue
		cg=$(cat "$f")
		case $cg in */plumb-lab/pl[0-9]*) ;; *) continue ;; esac
		[ -z "${2:-}" ] || [ "${cg##*/}" = "pl$2" ] || continue
		for ((i = 0; i < 40; i++)); do
			[ -d "$cg" ] || break
			find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[ -d "$cg" ] || break
			sleep 0.05
		done
		[ -d "$cg" ] && warn "cgroup $cg could not be removed"
		rmdir "${cg%/*}" 2>/dev/null || true
		rm -f "$f"
	done
}

cmd_cut() { # DIR NAME [up|down]
	need_root
	local f ip
	f=$(node_field "$1" "$2"); ip=${f%% *}
	ip link set "plv${ip##*.}" "${3:-down}"
}

cmd_kill_sshd() {
	need_root
	local dir f pid inner i
	dir=$(cd "$1" && pwd -P)
	f=$(node_field "$dir" "$2"); pid=${f##* }
	is_node_pid "$pid" "$dir" || die "$2 (pid $pid) is not running"
	inner=$(inner_pid "$pid") || die "cannot find PID 1 of $2"
	kill -KILL "$inner"
	# Until the node is gone, port 22 may still answer: wait for that, not
	# for a fixed time (a loaded machine reaps slowly).
	local deadline=$((SECONDS + UP_TIMEOUT))
	while alive "$pid"; do
		((SECONDS < deadline)) || die "$2: pid $pid still alive ${UP_TIMEOUT}s after killing its PID 1 ($inner)"
		sleep 0.05
	done
}

cmd_rekey() {
	need_root
	local dir f ip pid k newpid owner
	dir=$(cd "$1" && pwd -P)
	f=$(node_field "$dir" "$2"); ip=${f%% *}; pid=${f##* }; k=${ip##*.}
	read_lock "$k"
	[ "$LDIR" = "$dir" ] || die "$ip is not allocated to $dir"
	owner=$LOWNER
	kill_node "$pid" "$dir"
	rm -f "$dir/$2.hostkey" "$dir/$2.hostkey.pub"
	ssh-keygen -q -t ed25519 -N '' -C "$2-rekeyed" -f "$dir/$2.hostkey"
	newpid=$(start_node "$dir" "$2" "$k")
	awk -v n="$2" -v p="$newpid" '$1 == n { $3 = p } { print }' "$dir/nodes" >"$dir/nodes.tmp" && mv -f "$dir/nodes.tmp" "$dir/nodes"
	write_lock "$k" "$dir" "$owner" "$newpid"
	echo "$2 $ip $newpid" | wait_ready "$dir"
}

# ---------------------------------------------------------------- inside a node

# Runs as PID 1 of fresh mount/uts/pid namespaces inside the node's netns.
node_init() { # DIR NAME K
	local dir=$1 name=$2 k=$3 lower mnt r max_sessions
	lower=$(cat "$dir/lowerdir")
	max_sessions=$(cat "$dir/max_sessions")
	mnt=$dir/$name.root
	# upper/work on a tmpfs of the node's own (invisible outside this namespace)
	mount -t tmpfs -o size=2g,mode=0755 "plumb-$name" "$mnt"
	mkdir "$mnt/upper" "$mnt/work" "$mnt/merged"
	mount -t overlay overlay -o "lowerdir=$lower,upperdir=$mnt/upper,workdir=$mnt/work" "$mnt/merged"
	r=$mnt/merged
	hostname "$name"
	echo "$name" >"$r/etc/hostname"
	printf '127.0.0.1\tlocalhost\n%s\t%s\n' "$NET.$k" "$name" >"$r/etc/hosts"
	mount -t proc proc "$r/proc"
	mount -t sysfs sysfs "$r/sys"
	mount --rbind /dev "$r/dev"
	mount -t tmpfs -o mode=0755 tmpfs "$r/run"
	mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
	mkdir -p -m 0755 "$r/run/sshd"
	ensure_users "$r"
	if [ "$(init_of "$dir")" = systemd ]; then
		node_init_systemd "$dir" "$name" "$r" "$max_sessions"
	fi
	install -m 0600 "$dir/$name.hostkey" "$r/etc/ssh/plumb_lab_host_key"
	install -m 0644 "$dir/id_ed25519.pub" "$r/etc/ssh/plumb_lab_authorized_keys"
	sshd_config "$max_sessions" >"$r/etc/ssh/plumb_lab_sshd_config"
	cd "$r"
	# pivot_root(".", "."): the old root ends up stacked on "/" and is detached.
	pivot_root . .
	umount -l .
	cd /
	exec /usr/sbin/sshd -D -e -f /etc/ssh/plumb_lab_sshd_config
}

sshd_config() { # MAX_SESSIONS
	local max_sessions=$1
	cat <<EOF
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/plumb_lab_host_key
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/plumb_lab_authorized_keys
MaxStartups 100:30:200
MaxSessions $max_sessions
UseDNS no
PidFile none
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
EOF
}

# The rest of a tier-1b node: sshd becomes ssh.service, systemd PID 1.
node_init_systemd() { # DIR NAME ROOT MAX_SESSIONS
	local dir=$1 name=$2 r=$3 max_sessions=$4
	mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
	install -m 0600 "$dir/$name.hostkey" "$r/etc/ssh/plumb_lab_host_key"
	install -m 0644 "$dir/id_ed25519.pub" "$r/etc/ssh/plumb_lab_authorized_keys"
	sshd_config "$max_sessions" >"$r/etc/ssh/sshd_config"
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$r/etc/machine-id"
	echo >>"$r/etc/machine-id"
	# /dev is the host's, and kernel settings that are not namespaced are
	# the host's too: no getty takes its consoles, no unit loads modules,
	# sets sysctls, creates device nodes or mounts kernel filesystems.
	local unit
	for unit in getty@.service serial-getty@.service console-getty.service \
		systemd-sysctl.service systemd-modules-load.service systemd-binfmt.service \
		systemd-tmpfiles-setup-dev.service systemd-udevd.service systemd-journald-audit.socket \
		dev-hugepages.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
		sys-kernel-config.mount sys-fs-fuse-connections.mount; do
		ln -sf /dev/null "$r/etc/systemd/system/$unit"
	done
	# Offline nodes: apt sees only what a test adds under sources.list.d.
	: >"$r/etc/apt/sources.list"
	rm -f "$r"/etc/apt/sources.list.d/debian.sources
	cd "$r"
	pivot_root . .
	umount -l .
	cd /
	export container=other
	exec /lib/systemd/systemd --system
}

# Adds deploy/nosudo when the lower dir lacks them (the "/" fallback).
ensure_users() { # ROOT
	local r=$1 u uid
	for u in deploy:1001 nosudo:1002; do
		uid=${u#*:}; u=${u%%:*}
		grep -q "^$u:" "$r/etc/passwd" && continue
		echo "$u:x:$uid:$uid::/home/$u:/bin/bash" >>"$r/etc/passwd"
		echo "$u:x:$uid:" >>"$r/etc/group"
		echo "$u:*:19000:0:99999:7:::" >>"$r/etc/shadow"
		mkdir -p "$r/home/$u"
		chown "$uid:$uid" "$r/home/$u"
	done
	if [ -d "$r/etc/sudoers.d" ] && [ ! -e "$r/etc/sudoers.d/deploy" ]; then
		echo 'deploy ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/deploy"
		chmod 0440 "$r/etc/sudoers.d/deploy"
	fi
}

# ---------------------------------------------------------------- main

case ${1:-} in
rootfs)
	shift
	case ${1:-} in --systemd) use_systemd ;; "") ;; *) die "usage: lab.sh rootfs [--systemd]" ;; esac
	cmd_rootfs force
	;;
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
cut) [ $# -eq 3 ] || die "usage: lab.sh cut DIR NAME"; cmd_cut "$2" "$3" down ;;
heal) [ $# -eq 3 ] || die "usage: lab.sh heal DIR NAME"; cmd_cut "$2" "$3" up ;;
kill-sshd) [ $# -eq 3 ] || die "usage: lab.sh kill-sshd DIR NAME"; cmd_kill_sshd "$2" "$3" ;;
rekey) [ $# -eq 3 ] || die "usage: lab.sh rekey DIR NAME"; cmd_rekey "$2" "$3" ;;
_node-init) shift; node_init "$@" ;;
*) sed -n '2,17s/^# \{0,1\}//p' "$LAB_SH" >&2; exit 2 ;;
esac
