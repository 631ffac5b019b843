#!/usr/bin/env bash
# plumb at size: wall time and peak memory (RSS) of loading and graphing a
# 5,000-resource plan and a 500-host inventory, and of one host's probe of
# 5,000 files (run on this machine through the local connection, so that the
# figure is plumb's parsing, not the network). A measurement, not a test:
# the figures never decide the exit status; a command that fails does.
#
#   bench/limits.sh [--resources N] [--hosts H] [--files F] [--bin PATH]
#
# See bench/README.md ("Limits").
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
RESOURCES=5000
HOSTS=500
FILES=5000
BIN=

while [ $# -gt 0 ]; do
	case $1 in
	--resources) RESOURCES=${2:?}; shift 2 ;;
	--hosts) HOSTS=${2:?}; shift 2 ;;
	--files) FILES=${2:?}; shift 2 ;;
	--bin) BIN=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "limits.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
for n in "$RESOURCES" "$HOSTS" "$FILES"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "limits.sh: sizes are positive integers" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "limits.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [ -z "$BIN" ]; then
	(cd "$REPO" && cargo build --release --quiet)
	BIN=$REPO/target/release/plumb
fi

WORK=$(mktemp -d /tmp/plumb-limits.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

# measure NAME EXPECTED_STATUS CMD...: one row (seconds, peak RSS in MiB).
ROWS=()
measure() {
	local name=$1 want=$2 rc=0
	shift 2
	/usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
	if [ "$rc" != "$want" ]; then
		echo "limits.sh: $name: exit $rc, expected $want" >&2
		tail -n 20 "$WORK/err" >&2
		exit 1
	fi
	local secs kib
	read -r secs kib <"$WORK/time"
	ROWS+=("$(printf '| %s | %s s | %d MiB | %s |' "$name" "$secs" $((kib / 1024)) "$(wc -c <"$WORK/out") bytes out")")
	echo "${ROWS[-1]}" >&2
}

# A plan of N resources: directories and files in chains of ten (`requires`),
# every tenth a command guarded by `creates`, so the graph has edges of every
# kind (explicit, and implicit: a file inside a managed directory).
plan() { # N ROOT
	local n=$1 root=$2 i
	echo "plan: limits"
	echo "resources:"
	for ((i = 0; i < n; i++)); do
		case $((i % 10)) in
		0) printf '  - id: d%d\n    directory: {path: "%s/d%d"}\n' "$i" "$root" "$i" ;;
		9) printf '  - id: c%d\n    command: {run: "true", creates: "%s/d%d/c"}\n    requires: [f%d]\n' "$i" "$root" $((i - 9)) $((i - 1)) ;;
		*) printf '  - id: f%d\n    file: {path: "%s/d%d/f%d", content: "file %d\\n", mode: "0644"}\n' "$i" "$root" $((i - i % 10)) "$i" "$i" ;;
		esac
	done
}

# An inventory of H hosts in ten groups (loopback addresses; validate and
# graph connect to none of them).
inventory() { # H
	local h=$1 i g
	echo "defaults: {user: root}"
	echo "hosts:"
	for ((i = 0; i < h; i++)); do
		printf '  h%d: {address: 127.0.%d.%d, vars: {index: %d}}\n' "$i" $((i / 250)) $((i % 250 + 1)) "$i"
	done
	echo "groups:"
	for ((g = 0; g < 10; g++)); do
		printf '  g%d: {hosts: [' "$g"
		for ((i = g; i < h; i += 10)); do printf 'h%d, ' "$i"; done
		printf '], vars: {group: %d}}\n' "$g"
	done
}

plan "$RESOURCES" "$WORK/root" >"$WORK/big.yaml"
plan 10 /srv/limits >"$WORK/small.yaml"
inventory "$HOSTS" >"$WORK/hosts.yaml"
# The probe of one host: FILES file resources whose files exist and match.
{
	echo "resources:"
	printf '  - id: files\n    directory: {path: "%s/files"}\n' "$WORK"
	for ((i = 0; i < FILES; i++)); do
		printf '  - id: f%d\n    file: {path: "%s/files/f%d", content: "file %d\\n", mode: "0644"}\n' "$i" "$WORK" "$i" "$i"
	done
} >"$WORK/files.yaml"

echo "plumb limits: $("$BIN" --version 2>/dev/null || echo plumb), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
measure "validate: $RESOURCES resources, 1 host" 0 "$BIN" validate "$WORK/big.yaml"
measure "graph: $RESOURCES resources, 1 host" 0 "$BIN" graph "$WORK/big.yaml"
measure "validate: 10 resources, $HOSTS hosts" 0 "$BIN" validate "$WORK/small.yaml" -i "$WORK/hosts.yaml"
measure "graph: 10 resources, $HOSTS hosts" 0 "$BIN" graph "$WORK/small.yaml" -i "$WORK/hosts.yaml"
measure "validate: $RESOURCES resources, $HOSTS hosts" 0 "$BIN" validate "$WORK/big.yaml" -i "$WORK/hosts.yaml"
# The files exist and match (written here: applying 5,000 files one by one
# is not what this measures).
mkdir -p "$WORK/files"
(cd "$WORK/files" && for ((i = 0; i < FILES; i++)); do printf 'file %d\n' "$i" >"f$i"; done && chmod 0644 ./*)
measure "diff: $FILES files, local host (probe parsed, nothing to do)" 0 "$BIN" diff "$WORK/files.yaml" --format json
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "| case | wall | peak RSS | output |"
echo "|---|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "load average after: $load_after"
