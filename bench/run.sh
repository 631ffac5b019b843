#!/usr/bin/env bash
# plumb benchmark: the same job for plumb, ansible-core and pyinfra on the same
# lab of real sshd hosts (tests/lab/lab.sh), plus the floor (`ssh host true` on
# every host in parallel). Prints wall times and plumb's ratios. This is a
# measurement, not a test: timings never decide the exit status.
#
#   bench/run.sh [--hosts N] [--files M] [--runs K] [--skip-ansible] [--skip-pyinfra]
#
# See bench/README.md. Must run as root (the lab uses network namespaces).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$BENCH_DIR/.." && pwd -P)
LAB_SH=$REPO/tests/lab/lab.sh
VENV=$BENCH_DIR/.venv
PYTHON=${PYTHON:-python3}

HOSTS=10
FILES=50
RUNS=3
SKIP_ANSIBLE=0
SKIP_PYINFRA=0
SKIP_PLUMB=0

usage() {
	cat <<'EOF'
usage: bench/run.sh [options]

  --hosts N        lab hosts (default 10)
  --files M        file resources per host (default 50)
  --runs K         repeat each no-op measurement (b, c, floor) K times, report the median (default 3)
  --skip-ansible   do not run ansible-core (about 4 min per run at 10 hosts x 50 files)
  --skip-pyinfra   do not run pyinfra
  --skip-plumb     do not build or run plumb
  -h, --help       this text

Columns: (a) apply from scratch, (b) apply with nothing to do, (c) diff/check
with nothing to do; floor = `ssh -F ssh_config root@IP true` on every host in
parallel. Logs and the generated job go to bench/out/RUN/.
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--hosts) HOSTS=${2:?--hosts needs a value}; shift 2 ;;
	--hosts=*) HOSTS=${1#*=}; shift ;;
	--files) FILES=${2:?--files needs a value}; shift 2 ;;
	--files=*) FILES=${1#*=}; shift ;;
	--runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
	--runs=*) RUNS=${1#*=}; shift ;;
	--skip-ansible) SKIP_ANSIBLE=1; shift ;;
	--skip-pyinfra) SKIP_PYINFRA=1; shift ;;
	--skip-plumb) SKIP_PLUMB=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done
[[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 1 && HOSTS <= 253)) || { echo "run.sh: --hosts must be 1..253" >&2; exit 2; }
[[ $FILES =~ ^[0-9]+$ ]] && ((FILES >= 1)) || { echo "run.sh: --files must be >= 1" >&2; exit 2; }
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS >= 1)) || { echo "run.sh: --runs must be >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (the lab uses network namespaces)" >&2; exit 2; }

# EPOCHREALTIME and awk must agree on the decimal point.
export LC_NUMERIC=C
# ansible-core refuses to run without a UTF-8 locale.
case $(locale charmap 2>/dev/null || true) in UTF-8) ;; *) export LANG=C.UTF-8 LC_ALL=C.UTF-8 ;; esac

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
WARNINGS=()
warn() { WARNINGS+=("$*"); printf 'WARNING: %s\n' "$*" >&2; }

# ------------------------------------------------------------ state, cleanup

STATE= # lab state dir (short path: ssh control sockets live under it)
LAB_UP=0
cleanup() {
	local rc=$?
	set +e
	close_ansible_masters
	if [ "$LAB_UP" = 1 ]; then
		log "tearing down the lab"
		"$LAB_SH" down "$STATE/lab" || echo "run.sh: lab.sh down $STATE/lab failed" >&2
	fi
	[ -n "$STATE" ] && rm -rf "$STATE"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ansible keeps one ControlMaster per host alive for ControlPersist seconds
# after a run. Each run gets a fresh control dir (every tool starts cold) and
# its masters are told to exit afterwards, by socket.
close_ansible_masters() {
	local s
	[ -n "$STATE" ] && [ -d "$STATE/cp" ] || return 0
	for s in "$STATE"/cp/*/*; do
		[ -S "$s" ] || continue
		ssh -F /dev/null -o ControlPath="$s" -O exit bench-mux >/dev/null 2>&1 || true
	done
}

# ------------------------------------------------------------ timing helpers

LAST_SECS=0
LAST_RC=0
# timed LOG CMD...: run CMD with stdin closed, output to LOG; sets LAST_SECS, LAST_RC.
timed() {
	local logf=$1 t0 t1
	shift
	t0=$EPOCHREALTIME
	set +e
	"$@" <&- >"$logf" 2>&1
	LAST_RC=$?
	set -e
	t1=$EPOCHREALTIME
	LAST_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }

declare -A RES=()    # RES[tool.col] = median seconds
declare -A ALLRUNS=() # ALLRUNS[tool.col] = every run's seconds

# ------------------------------------------------------------ plumb

PLUMB=
build_plumb() {
	log "building plumb (cargo build --release)"
	(cd "$REPO" && cargo build --release --quiet) || { echo "run.sh: cargo build --release failed" >&2; exit 1; }
	local target
	target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
		"$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) || target=$REPO/target
	PLUMB=$target/release/plumb
	[ -x "$PLUMB" ] || { echo "run.sh: no binary at $PLUMB" >&2; exit 1; }
	if ! "$PLUMB" diff --help 2>/dev/null | grep -q -- '--ssh-config'; then
		warn "this plumb build has no --ssh-config (SSH transport not merged yet): plumb is skipped"
		SKIP_PLUMB=1
	fi
}

# ------------------------------------------------------------ venv

ensure_venv() {
	if [ -x "$VENV/bin/ansible-playbook" ] && [ -x "$VENV/bin/pyinfra" ] &&
		"$VENV/bin/python" -c 'import ansible, pyinfra' 2>/dev/null; then
		return 0
	fi
	log "installing ansible-core and pyinfra into $VENV"
	[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
	"$VENV/bin/pip" install --quiet --disable-pip-version-check ansible-core pyinfra
}

# ------------------------------------------------------------ lab root

# ansible needs Python on the targets; the lab's Debian root (minbase) has none.
# Build an overlay layer with this machine's Debian python3 packages (same
# release as the lab root) and stack it on top, so every tool sees the same
# hosts. Cached under bench/out/cache/.
python_layer() { # LOWER -> prints the layer dir (or nothing)
	local lower=$1 layer=$BENCH_DIR/out/cache/node-python pyver tmp pkgs f d l lib
	[ -f "$layer/.plumb-bench-layer" ] && { echo "$layer"; return 0; }
	command -v dpkg >/dev/null && [ -x /usr/bin/python3 ] || return 1
	pyver=$(basename "$(readlink -f /usr/bin/python3)") # python3.11
	[[ $pyver =~ ^python3\.[0-9]+$ ]] || return 1
	pkgs=(python3-minimal python3 libpython3-stdlib "$pyver-minimal" "$pyver" "lib$pyver-minimal" "lib$pyver-stdlib")
	for f in "${pkgs[@]}"; do dpkg -s "$f" >/dev/null 2>&1 || return 1; done
	log "building the Python layer for the lab nodes ($pyver from this machine's packages)"
	mkdir -p "$BENCH_DIR/out/cache"
	rm -rf "$layer".tmp.*
	tmp=$(mktemp -d "$layer.tmp.XXXXXX")
	chmod 0755 "$tmp"
	# Files go under their canonical directory (/lib -> /usr/lib on merged-/usr
	# systems): a real /lib in the layer would hide the root's /lib symlink.
	while IFS= read -r f; do
		[ -d "$f" ] && [ ! -L "$f" ] && continue
		[ -e "$f" ] || [ -L "$f" ] || continue
		d=$(readlink -f "$(dirname "$f")")
		mkdir -p "$tmp$d"
		cp -a "$f" "$tmp$d/"
	done < <(dpkg -L "${pkgs[@]}" | sort -u)
	cp -a "/usr/lib/$pyver" "$tmp/usr/lib/" # with the compiled __pycache__
	# shared libraries the lab root lacks
	while IFS= read -r lib; do
		[ -e "$lower$lib" ] && continue
		d=$(readlink -f "$(dirname "$lib")")
		mkdir -p "$tmp$d"
		cp -L "$lib" "$tmp$d/$(basename "$lib")"
	done < <({ ldd "/usr/bin/$pyver"; for l in "/usr/lib/$pyver"/lib-dynload/*.so; do ldd "$l"; done; } 2>/dev/null |
		awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u)
	touch "$tmp/.plumb-bench-layer"
	mv -T "$tmp" "$layer"
	echo "$layer"
}

# ------------------------------------------------------------ job generation

OUT=
NAMES=()
IPS=()
content_of() { printf 'plumb bench file %02d\n' "$1"; }
fname() { printf 'f%02d' "$1"; }

gen_expected() { # the tree every tool must produce, as a fingerprint
	local d=$OUT/expected/srv/bench i
	mkdir -p "$d"
	chmod 0755 "$d"
	for ((i = 1; i <= FILES; i++)); do
		content_of "$i" >"$d/$(fname "$i")"
		chmod 0644 "$d/$(fname "$i")"
	done
	(cd "$d" && fingerprint_cmd) >"$OUT/expected/fingerprint"
}
# shellcheck disable=SC2016
FINGERPRINT='stat -c "%a %U %n" . && stat -c "%a %U %s %n" f* && sha256sum f*'
fingerprint_cmd() { sh -c "$FINGERPRINT"; }

gen_plumb() {
	local d=$OUT/plumb i n
	mkdir -p "$d"
	{
		echo "plan: bench"
		echo "description: $FILES small files under /srv/bench (bench/run.sh)"
		echo "hosts: [all]"
		echo "resources:"
		echo "  - id: bench-dir"
		echo "    directory: {path: /srv/bench, mode: \"0755\"}"
		for ((i = 1; i <= FILES; i++)); do
			n=$(fname "$i")
			echo "  - id: $n"
			echo "    file: {path: /srv/bench/$n, content: \"plumb bench file $(printf %02d "$i")\\n\", mode: \"0644\"}"
		done
	} >"$d/plan.yaml"
	{
		echo "hosts:"
		for i in "${!NAMES[@]}"; do echo "  ${NAMES[$i]}: {address: ${IPS[$i]}, user: root}"; done
	} >"$d/inventory.yaml"
}

gen_ansible() {
	local d=$OUT/ansible i forks=$((HOSTS > 5 ? HOSTS : 5))
	mkdir -p "$d"
	cat >"$d/ansible.cfg" <<EOF
[defaults]
inventory = $d/inventory.ini
forks = $forks
host_key_checking = True
gathering = explicit
interpreter_python = /usr/bin/python3
retry_files_enabled = False
deprecation_warnings = False

[ssh_connection]
pipelining = True
ssh_args = -C -o ControlMaster=auto -o ControlPersist=60s
EOF
	{
		echo "[bench]"
		for i in "${!NAMES[@]}"; do echo "${NAMES[$i]} ansible_host=${IPS[$i]}"; done
		echo
		echo "[bench:vars]"
		echo "ansible_user=root"
		echo "ansible_ssh_common_args='-F $STATE/lab/ssh_config'"
		echo "ansible_python_interpreter=/usr/bin/python3"
	} >"$d/inventory.ini"
	{
		echo "- name: bench"
		echo "  hosts: bench"
		echo "  gather_facts: false"
		echo "  tasks:"
		echo "    - name: bench dir"
		echo "      ansible.builtin.file: {path: /srv/bench, state: directory, mode: \"0755\"}"
		echo "    - name: bench files"
		echo "      ansible.builtin.copy:"
		echo "        dest: \"/srv/bench/{{ item.name }}\""
		echo "        content: \"{{ item.content }}\""
		echo "        mode: \"0644\""
		echo "      loop_control: {label: \"{{ item.name }}\"}"
		echo "      loop:"
		for ((i = 1; i <= FILES; i++)); do
			echo "        - {name: $(fname "$i"), content: \"plumb bench file $(printf %02d "$i")\\n\"}"
		done
	} >"$d/playbook.yml"
}

gen_pyinfra() {
	local d=$OUT/pyinfra i
	mkdir -p "$d"
	{
		echo "_data = {"
		echo "    \"ssh_user\": \"root\","
		echo "    \"ssh_key\": \"$STATE/lab/id_ed25519\","
		echo "    \"ssh_known_hosts_file\": \"$STATE/lab/known_hosts\","
		echo "    \"ssh_strict_host_key_checking\": \"yes\","
		echo "    \"ssh_config_file\": \"$STATE/lab/ssh_config\","
		echo "    \"ssh_allow_agent\": False,"
		echo "    \"ssh_look_for_keys\": False,"
		echo "}"
		echo "bench = ["
		for i in "${!NAMES[@]}"; do echo "    (\"${NAMES[$i]}\", {\"ssh_hostname\": \"${IPS[$i]}\", **_data}),"; done
		echo "]"
	} >"$d/inventory.py"
	cat >"$d/deploy.py" <<EOF
import io

from pyinfra.operations import files

files.directory(name="bench dir", path="/srv/bench", mode="755")

for i in range(1, $FILES + 1):
    files.put(
        name=f"f{i:02d}",
        src=io.StringIO(f"plumb bench file {i:02d}\n"),
        dest=f"/srv/bench/f{i:02d}",
        mode="644",
    )
EOF
}

# ------------------------------------------------------------ lab actions

ssh_lab() { ssh -F "$STATE/lab/ssh_config" "root@$1" "${@:2}"; }

# ssh IP true on every host at once, wait for all; fails if any fails.
floor_once() {
	local ip pids=() p rc=0
	for ip in "${IPS[@]}"; do
		ssh -F "$STATE/lab/ssh_config" "root@$ip" true </dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return $rc
}

reset_nodes() {
	local ip pids=() p rc=0
	for ip in "${IPS[@]}"; do
		ssh_lab "$ip" 'rm -rf /srv/bench' </dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	((rc == 0)) || warn "could not remove /srv/bench on every node"
}

# Compare every node's /srv/bench with the expected tree (not timed).
verify_tree() { # TOOL WHEN
	local i bad=()
	for i in "${!IPS[@]}"; do
		if ! ssh_lab "${IPS[$i]}" "cd /srv/bench && $FINGERPRINT" </dev/null 2>/dev/null |
			cmp -s - "$OUT/expected/fingerprint"; then
			bad+=("${NAMES[$i]}")
		fi
	done
	((${#bad[@]} == 0)) || warn "$1 $2: /srv/bench differs from the expected tree on: ${bad[*]}"
}

# ------------------------------------------------------------ measurements

record() { # TOOL COL SECS...
	local key=$1.$2
	shift 2
	ALLRUNS[$key]="$*"
	RES[$key]=$(median "$@")
}

measure_floor() {
	local r secs=()
	for ((r = 1; r <= RUNS; r++)); do
		timed "$OUT/logs/floor.$r.log" floor_once
		((LAST_RC == 0)) || warn "floor run $r: some ssh failed (see $OUT/logs/floor.$r.log)"
		secs+=("$LAST_SECS")
	done
	record floor - "${secs[@]}"
	log "floor: ${secs[*]} s"
}

PLUMB_EXEC=
run_plumb() {
	local d=$OUT/plumb cfg=$STATE/lab/ssh_config r secs=() extra=()
	((HOSTS > 32)) && extra=(--forks "$HOSTS")
	local apply=("$PLUMB" apply "$d/plan.yaml" -i "$d/inventory.yaml" --ssh-config "$cfg" --yes "${extra[@]}")
	local diff=("$PLUMB" diff "$d/plan.yaml" -i "$d/inventory.yaml" --ssh-config "$cfg" --format json "${extra[@]}")
	reset_nodes
	timed "$OUT/logs/plumb.a.log" "${apply[@]}"
	((LAST_RC == 0)) || warn "plumb (a) apply exited $LAST_RC (see $OUT/logs/plumb.a.log)"
	record plumb a "$LAST_SECS"
	log "plumb (a): $LAST_SECS s"
	verify_tree plumb "after (a)"
	for ((r = 1; r <= RUNS; r++)); do
		timed "$OUT/logs/plumb.b.$r.log" "${apply[@]}"
		((LAST_RC == 0)) || warn "plumb (b) run $r: apply exited $LAST_RC (see $OUT/logs/plumb.b.$r.log)"
		secs+=("$LAST_SECS")
	done
	record plumb b "${secs[@]}"
	log "plumb (b): ${secs[*]} s"
	secs=()
	local floors=() ratios=()
	for ((r = 1; r <= RUNS; r++)); do
		# Each diff right after a floor run of its own: the pair sees the
		# same machine, so their ratio does not drift with the load.
		timed "$OUT/logs/floor.c.$r.log" floor_once
		floors+=("$LAST_SECS")
		timed "$OUT/logs/plumb.c.$r.json" "${diff[@]}"
		# after an apply, a diff must find nothing to do: exit 0 (2 = drift)
		((LAST_RC == 0)) || warn "plumb (c) run $r: diff exited $LAST_RC, expected 0 (see $OUT/logs/plumb.c.$r.json)"
		secs+=("$LAST_SECS")
		ratios+=("$(awk -v a="$LAST_SECS" -v b="${floors[-1]}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')")
	done
	record plumb c "${secs[@]}"
	record floor c "${floors[@]}"
	record ratio c "${ratios[@]}"
	log "plumb (c): ${secs[*]} s; paired floor: ${floors[*]} s"
	PLUMB_EXEC=$("$PYTHON" - "$OUT/logs/plumb.c.$RUNS.json" <<'EOF' 2>/dev/null || echo "(unreadable JSON report)"
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])
per = {h["name"]: h.get("remote_executions") for h in doc["hosts"]}
vals = sorted(set(per.values()), key=str)
pend = sum(1 for h in doc["hosts"] for r in h.get("resources", []) if r.get("status") != "ok")
out = ", ".join(f"{k}={v}" for k, v in per.items()) if len(vals) > 1 else f"{vals[0]} on every host ({len(per)} hosts)"
print(out + (f"; {pend} resources not ok" if pend else ""))
EOF
)
	verify_tree plumb "at the end"
}

# ansible RECAP check: every host present, failed=0 unreachable=0, and (if asked) changed=0
ansible_recap_ok() { # LOG WANT_CHANGED0
	awk -v n="$HOSTS" -v want0="$2" '
		/PLAY RECAP/ { r = 1; next }
		r && / ok=/ {
			hosts++
			for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			if (v["failed"] != 0 || v["unreachable"] != 0) bad++
			if (want0 && v["changed"] != 0) bad++
		}
		END { exit !(hosts == n && bad == 0) }' "$1"
}

ANSIBLE_RUN=0
ansible_run() { # LOG ARGS...
	local logf=$1
	shift
	ANSIBLE_RUN=$((ANSIBLE_RUN + 1))
	mkdir -p "$STATE/cp/$ANSIBLE_RUN"
	ANSIBLE_CONFIG=$OUT/ansible/ansible.cfg ANSIBLE_HOME=$STATE/ansible-home \
		ANSIBLE_SSH_CONTROL_PATH_DIR=$STATE/cp/$ANSIBLE_RUN ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
		timed "$logf" "$VENV/bin/ansible-playbook" "$@" "$OUT/ansible/playbook.yml"
	close_ansible_masters
}

run_ansible() {
	local r secs=()
	reset_nodes
	ansible_run "$OUT/logs/ansible.a.log"
	{ ((LAST_RC == 0)) && ansible_recap_ok "$OUT/logs/ansible.a.log" 0; } ||
		warn "ansible (a) exited $LAST_RC or a host failed (see $OUT/logs/ansible.a.log)"
	record ansible a "$LAST_SECS"
	log "ansible (a): $LAST_SECS s"
	verify_tree ansible "after (a)"
	for ((r = 1; r <= RUNS; r++)); do
		ansible_run "$OUT/logs/ansible.b.$r.log"
		{ ((LAST_RC == 0)) && ansible_recap_ok "$OUT/logs/ansible.b.$r.log" 1; } ||
			warn "ansible (b) run $r: not changed=0 on every host, or exit $LAST_RC (see $OUT/logs/ansible.b.$r.log)"
		secs+=("$LAST_SECS")
		log "ansible (b) run $r: $LAST_SECS s"
	done
	record ansible b "${secs[@]}"
	secs=()
	for ((r = 1; r <= RUNS; r++)); do
		ansible_run "$OUT/logs/ansible.c.$r.log" --check --diff
		{ ((LAST_RC == 0)) && ansible_recap_ok "$OUT/logs/ansible.c.$r.log" 1; } ||
			warn "ansible (c) run $r: --check not changed=0 on every host, or exit $LAST_RC (see $OUT/logs/ansible.c.$r.log)"
		secs+=("$LAST_SECS")
		log "ansible (c) run $r: $LAST_SECS s"
	done
	record ansible c "${secs[@]}"
	verify_tree ansible "at the end"
}

# pyinfra reported nothing to do: every host connected, and either the
# results table (apply) shows only "No Change", or the detected-changes table
# (--dry) shows no change for any operation.
pyinfra_nochange() { # LOG results|detected
	awk -v n="$HOSTS" -v ops="$((FILES + 1))" -v mode="$2" '
		/^ *\[[^]]+\] +Connected *$/ { conn++ }
		/^--> Detected changes:/ { det = 1; next }
		/^--> Results:/ { res = 1; next }
		det && NF == 0 { det = 0 }
		det && $1 != "Operation" && NF >= 3 { rows++; if ($(NF - 1) != "-" || $NF != "-") bad++ }
		res && /Grand total/ { tot = 1; if ($3 != n * ops || $4 != "-" || $5 != "-" || $6 != n * ops) bad++ }
		END {
			ok = conn == n && bad == 0
			if (mode == "detected") ok = ok && rows == ops
			else ok = ok && tot
			exit !ok
		}' "$1"
}

run_pyinfra() {
	local d=$OUT/pyinfra r secs=() base
	base=("$VENV/bin/pyinfra" --parallel "$HOSTS" "$d/inventory.py" "$d/deploy.py")
	reset_nodes
	timed "$OUT/logs/pyinfra.a.log" "${base[@]}" -y
	((LAST_RC == 0)) || warn "pyinfra (a) exited $LAST_RC (see $OUT/logs/pyinfra.a.log)"
	record pyinfra a "$LAST_SECS"
	log "pyinfra (a): $LAST_SECS s"
	verify_tree pyinfra "after (a)"
	for ((r = 1; r <= RUNS; r++)); do
		timed "$OUT/logs/pyinfra.b.$r.log" "${base[@]}" -y
		{ ((LAST_RC == 0)) && pyinfra_nochange "$OUT/logs/pyinfra.b.$r.log" results; } ||
			warn "pyinfra (b) run $r: changes reported or exit $LAST_RC (see $OUT/logs/pyinfra.b.$r.log)"
		secs+=("$LAST_SECS")
	done
	record pyinfra b "${secs[@]}"
	log "pyinfra (b): ${secs[*]} s"
	secs=()
	for ((r = 1; r <= RUNS; r++)); do
		# a real dry run: --dry without -y (with -y it skips change detection)
		timed "$OUT/logs/pyinfra.c.$r.log" "${base[@]}" --dry
		{ ((LAST_RC == 0)) && pyinfra_nochange "$OUT/logs/pyinfra.c.$r.log" detected; } ||
			warn "pyinfra (c) run $r: changes detected or exit $LAST_RC (see $OUT/logs/pyinfra.c.$r.log)"
		secs+=("$LAST_SECS")
	done
	record pyinfra c "${secs[@]}"
	log "pyinfra (c): ${secs[*]} s"
	verify_tree pyinfra "at the end"
}

# ------------------------------------------------------------ main

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "plumb benchmark: $HOSTS hosts x $FILES files, $RUNS runs per no-op measurement"
((SKIP_PLUMB)) || build_plumb
if ((!SKIP_ANSIBLE || !SKIP_PYINFRA)); then ensure_venv; fi

lower=$("$LAB_SH" rootfs | tail -n 1)
if [ "$lower" != / ] && [ ! -e "${lower%%:*}/usr/bin/python3" ]; then
	if layer=$(python_layer "${lower##*:}"); then
		export PLUMB_LAB_ROOTFS=$layer:$lower
	else
		warn "no Python for the lab nodes (needs this machine's Debian python3 packages): ansible will fail"
	fi
fi

STATE=$(mktemp -d /tmp/plumb-bench.XXXXXX)
OUT=$BENCH_DIR/out/$(date +%Y%m%d-%H%M%S)-${HOSTS}x$FILES
mkdir -p "$OUT/logs"
log "starting $HOSTS lab hosts (state $STATE, lower dir ${PLUMB_LAB_ROOTFS:-$lower})"
export PLUMB_LAB_OWNER_PID=$$
LAB_UP=1
"$LAB_SH" up "$STATE/lab" "$HOSTS" >"$OUT/logs/lab-up.log" 2>&1 || { cat "$OUT/logs/lab-up.log" >&2; exit 1; }
while read -r n ip _; do NAMES+=("$n"); IPS+=("$ip"); done <"$STATE/lab/nodes"

gen_expected
((SKIP_PLUMB)) || gen_plumb
((SKIP_ANSIBLE)) || gen_ansible
((SKIP_PYINFRA)) || gen_pyinfra

floor_once || warn "warm-up: some ssh to the lab failed"
LOAD_START=$(loadavg)
measure_floor
((SKIP_PLUMB)) || run_plumb
((SKIP_PYINFRA)) || run_pyinfra
((SKIP_ANSIBLE)) || run_ansible

# ------------------------------------------------------------ report

versions() {
	((SKIP_PLUMB)) || echo "  plumb        $("$PLUMB" --version 2>/dev/null || echo '?') ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
	((SKIP_ANSIBLE)) || echo "  ansible-core $("$VENV/bin/python" -c 'import ansible.release as r; print(r.__version__)' 2>/dev/null || echo '?')"
	((SKIP_PYINFRA)) || echo "  pyinfra      $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pyinfra"))' 2>/dev/null || echo '?')"
	echo "  OpenSSH      $(ssh -V 2>&1)"
	echo "  machine      $(nproc) CPUs; load average $LOAD_START before the measurements, $(loadavg) after"
}

cell() { [ -n "${RES[$1]:-}" ] && printf '%.2f' "${RES[$1]}" || printf -- '-'; }

{
	echo
	echo "== plumb benchmark: $HOSTS hosts x $FILES files (+1 directory) per host; median of $RUNS for (b), (c) and the floor =="
	versions
	echo
	printf '%-10s %12s %12s %12s\n' tool "(a) scratch" "(b) no-op" "(c) diff"
	for t in plumb pyinfra ansible; do
		case $t in plumb) ((SKIP_PLUMB)) && continue ;; pyinfra) ((SKIP_PYINFRA)) && continue ;; ansible) ((SKIP_ANSIBLE)) && continue ;; esac
		printf '%-10s %12s %12s %12s\n' "$t" "$(cell "$t.a")" "$(cell "$t.b")" "$(cell "$t.c")"
	done
	printf '%-10s %12s   (ssh IP true on all %d hosts in parallel)\n' floor "$(cell floor.-)" "$HOSTS"
	echo
	if ((!SKIP_PLUMB)); then
		echo "plumb (c) / floor: $(ratio "${RES[plumb.c]}" "${RES[floor.-]}")   (target: <= 1.2x)"
		echo "plumb (c) / floor, paired runs: $(printf '%.2fx' "${RES[ratio.c]}")   (median of each diff over a floor run just before it)"
		echo "plumb (b) / floor: $(ratio "${RES[plumb.b]}" "${RES[floor.-]}")"
		for t in pyinfra ansible; do
			[ -n "${RES[$t.a]:-}" ] || continue
			echo "$t / plumb:  (a) $(ratio "${RES[$t.a]}" "${RES[plumb.a]}")  (b) $(ratio "${RES[$t.b]}" "${RES[plumb.b]}")  (c) $(ratio "${RES[$t.c]}" "${RES[plumb.c]}")"
		done
		echo "plumb remote_executions per host for (c): $PLUMB_EXEC"
	fi
	echo
	echo "every run (seconds):"
	for k in floor.- plumb.a plumb.b plumb.c floor.c ratio.c pyinfra.a pyinfra.b pyinfra.c ansible.a ansible.b ansible.c; do
		[ -n "${ALLRUNS[$k]:-}" ] && printf '  %-10s %s\n' "${k%.-}" "${ALLRUNS[$k]}"
	done
	echo "logs and generated job: $OUT"
	if ((${#WARNINGS[@]})); then
		echo
		for w in "${WARNINGS[@]}"; do echo "WARNING: $w"; done
	fi
} | tee "$OUT/summary.txt"
