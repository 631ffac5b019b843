//! The data migration of `mount` with `migrate:`: what is at the mount
//! point moves onto the new filesystem, verified, before the new filesystem
//! is mounted there.
//!
//! The order is what makes it safe: the listed services that are running
//! are stopped in one transaction with the running units that could start
//! them again (their `TriggeredBy=` sockets, paths and timers: a client of
//! `docker.socket` starts Docker again at once), they must stay stopped
//! (one that comes back is named, with the units that can start it), and
//! only then must nothing be mounted below the path (nor built on files
//! there, as k3s's pods' overlays are: `stop_command` stops what the units
//! leave running); the new filesystem is mounted at a temporary place and must
//! be empty (but for `lost+found`); the tree is copied with `rsync
//! -aHAXSx --numeric-ids` (owners, modes, times, hard links, symlinks, ACLs,
//! xattrs, sparse files; `cp -ax` when rsync is missing); the two trees
//! are compared (every file's sha256, and type, mode, owner, size, mtime,
//! link target, hard-link grouping and xattrs/ACLs of every entry). Only
//! then does the switch happen: the old directory is renamed aside (or the
//! old filesystem unmounted), the new one mounted at the path, and the
//! stopped units started again (one transaction, so each socket listens
//! again before its service runs). A failure at any point before the switch
//! unmounts the temporary mount and starts the services again, leaving the
//! old data where and as it was; a failure to mount at the path undoes the
//! switch the same way.

use plumb_engine::module::downtime_fn;
use plumb_engine::shell::Sh;

/// What the migration needs to know.
pub(crate) struct Migration<'a> {
    /// The mount point (canonical).
    pub(crate) path: &'a str,
    /// The new filesystem's source.
    pub(crate) src: &'a str,
    /// Its type.
    pub(crate) fstype: &'a str,
    /// Its mount options (as for `mount -o`).
    pub(crate) opts: &'a str,
    /// Services to stop during the copy.
    pub(crate) stop: &'a [String],
    /// A command run once they are stopped, for what they leave running.
    pub(crate) stop_command: Option<&'a str>,
    /// Keep the old data (renamed aside) rather than delete it after the
    /// verified switch.
    pub(crate) keep_old: bool,
}

/// The name the old data is kept under: `PATH.plumb-old-RUN`.
pub(crate) fn old_name_hint(path: &str) -> String {
    format!("{path}.plumb-old-<run id>")
}

/// The migration script (one step: it must hold its own rollback).
pub(crate) fn script(m: &Migration<'_>) -> Sh {
    // The script holds its own rollback, so it runs to its end even when
    // the connection to plumb is gone: a hangup or a closed pipe (a `say`
    // to a stderr nobody reads any more) must not kill it between stopping
    // the services and starting them again.
    let mut s = Sh::raw_start("set -u\ntrap '' HUP PIPE\npath=")
        .val(m.path)
        .raw("; src=")
        .val(m.src)
        .raw("; fstype=")
        .val(m.fstype)
        .raw("; opts=")
        .val(m.opts)
        .raw("; keep=")
        .val(if m.keep_old { "1" } else { "0" })
        .raw("; stop_command=")
        .val(m.stop_command.unwrap_or_default())
        .raw("\nset --");
    for svc in m.stop {
        s = s.arg(svc);
    }
    s.line(&downtime_fn());
    s.then(&Sh::raw_start(BODY))
}

/// The body; `$@` holds the services. Service names are checked at plan
/// load (no spaces), so `$active` can be a space-separated list.
const BODY: &str = r#"
# A dropped connection must not stop a migration halfway: finish, or roll back.
trap '' HUP PIPE
old="$path.plumb-old-${plumb_run:-run}"
tab=$(printf '\t')
active=
work=
tmp=
tmp_mounted=0
copying=0
say() { echo "plumb: $*" >&2; }
# A copy that failed may leave a process of it exiting with files open on
# the temporary mount for a moment: wait for it, and detach the mount (it
# holds nothing of the old data) if it stays busy.
release() {
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    umount "$1" 2>/dev/null && return 0
    sleep 0.25
  done
  umount -l "$1"
}
# The units that go down: the listed ones that run, and every running unit
# that can start a listed one again (`TriggeredBy=`: its sockets, paths and
# timers; docker.socket for docker). They stop in one transaction, so
# systemd orders the stops and no socket is left to start its service again
# (a connection waiting on it would, at once).
live() {
  case $(systemctl show -p ActiveState --value -- "$1" 2>/dev/null) in
    active|activating|reloading|deactivating) return 0 ;;
    *) return 1 ;;
  esac
}
add() { case " $active " in *" $1 "*) ;; *) active="$active $1" ;; esac; }
start_again() {
  [ -n "$active" ] || return 0
  # One transaction: each socket is listening again before its service runs.
  if systemctl start -- $active; then downtime; return 0; fi
  for u in $active; do live "$u" || say "could not start $u again"; done
  downtime
  return 1
}
# How long each stopped unit was down (from the stop to active again), for
# the report: `plumb-downtime=UNIT SECONDS`.
t_stop=
downtime() {
  [ -n "$t_stop" ] || return 0
  up=
  for u in $active; do live "$u" && up="$up $u"; done
  plumb_downtime "$t_stop" $up
}
# A unit that runs again after it was stopped, named with the units that
# can start it (that trigger it, or pull it in when they start) and were
# not stopped with it: those that run, or else all of them with their state
# (one that restarts in a loop may have just hit its start limit).
restarted() {
  first=
  for u in $active; do
    if live "$u"; then first=$u; break; fi
  done
  [ -n "$first" ] || return 1
  # Name the running unit that starts it. Look at every stopped unit, live
  # or not yet: what came back may be what a unit pulls in before that
  # unit's own start job runs (the socket of a service a keeper wants), and
  # by now the service may be starting too.
  all=
  for u in $active; do
    for d in $(systemctl show -p TriggeredBy,WantedBy,RequiredBy,BoundBy,UpheldBy --value -- "$u" 2>/dev/null); do
      case $d in *.target|*.slice) continue ;; esac
      case " $active " in *" $d "*) continue ;; esac
      if live "$d"; then
        echo "$u started again after it was stopped: it is started by $d, which runs (stop it too: list it in migrate.stop)"
        return 0
      fi
      [ "$u" != "$first" ] || all="$all $d ($(systemctl show -p ActiveState --value -- "$d" 2>/dev/null))"
    done
  done
  echo "$first started again after it was stopped; ${all:+units that can start it:$all; }see \`journalctl -u $first\`"
}
restore() {
  # A copy that failed part-way (the new filesystem full) leaves a partial
  # tree on the new filesystem, which was empty before: remove it, so that
  # the next run finds it empty again and copies anew.
  if [ "$tmp_mounted" = 1 ] && [ "$copying" = 1 ]; then
    find "$tmp" -xdev -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf -- {} + 2>/dev/null \
      && say "the partial copy on $src was removed" \
      || say "the partial copy on $src could not be removed: it holds only plumb's copy of $path and can be emptied"
  fi
  if [ "$tmp_mounted" = 1 ]; then release "$tmp" || say "could not unmount the temporary mount $tmp"; fi
  [ -n "$tmp" ] && rmdir "$tmp" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
  if start_again && [ -n "$active" ]; then say "started again:$active"; fi
}
fail() { say "migration of $path failed: $*"; say "nothing was switched: $path holds its old data as before"; restore; exit 1; }
# Filesystems mounted below the path, and overlays elsewhere built on files
# below it (lowerdir/upperdir: the containers of a runtime that keeps
# running when its service stops), one a line: target, type, maj:min,
# peer group (`shared:N`, or `-` for a private mount). findmnt escapes
# blanks in targets (`\x20`).
mounts_below() {
  findmnt -ln -o TARGET,FSTYPE,MAJ:MIN,OPTIONS,OPT-FIELDS | awk -v p="$path/" '
    { peer = "-"; if (match($5, /shared:[0-9]+/)) peer = substr($5, RSTART + 7, RLENGTH - 7) }
    index($1, p) == 1 { print $1, $2, $3, peer; next }
    { n = split($4, o, ","); for (i = 1; i <= n; i++) if (index(o[i], "=" p) || index(o[i], ":" p)) { print $1, $2, $3, peer; break } }'
}
below() { mounts_below | cut -d ' ' -f 1 | head -n 3; }
# Processes that use one of the mounts listed on stdin (as mounts_below
# prints them): rooted in it (a container), with their cwd or an open file
# there, or in a mount namespace of their own holding a copy of it that
# does not follow an unmount here (a private copy: not a slave of its peer
# group, as the copies in systemd-udevd's and systemd-logind's namespaces
# are, which go away with it). nsfs mounts share one device number: only
# their cwd and open files count.
users() {
  self=$(readlink /proc/self/ns/mnt)
  list=$(cat)
  devs=$(echo "$list" | awk '$2 != "nsfs" { printf "%s%s=%s", sep, $3, $4; sep = " " }')
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    ns=$(readlink "$d/ns/mnt" 2>/dev/null) || continue
    other=0; [ "$ns" = "$self" ] || other=1
    use=$(awk -v devs="$devs" -v other="$other" '
      BEGIN { n = split(devs, a, " "); for (i = 1; i <= n; i++) { split(a[i], kv, "="); peer[kv[1]] = kv[2] } }
      !($3 in peer) { next }
      $5 == "/" { print "root"; exit }
      other == 1 {
        follows = 0
        for (i = 7; i <= NF && $i != "-"; i++) if ($i == "master:" peer[$3] || $i == "shared:" peer[$3]) follows = 1
        if (!follows) { print "copy"; exit }
      }' "$d/mountinfo" 2>/dev/null)
    if [ -z "$use" ]; then
      for f in "$d/cwd" "$d"/fd/*; do
        l=$(readlink "$f" 2>/dev/null) || continue
        for t in $(echo "$list" | cut -d ' ' -f 1); do
          case $l in "$t"|"$t"/*) use=files; break 2 ;; esac
        done
      done
    fi
    [ -n "$use" ] && echo "$pid ($(cat "$d/comm" 2>/dev/null))"
  done | head -n 3 | tr '\n' ' '
}
# What a runtime leaves mounted when it gives up waiting for a container at
# shutdown (dockerd does after 15 s, the container killed but its overlay,
# shm and network namespace still mounted): overlay, tmpfs and nsfs mounts
# that no process uses are unmounted, and named in the report. Any other
# filesystem (one the user mounted below the path) is left to the user.
runtime_only() {
  echo "$1" | awk '$2 != "overlay" && $2 != "tmpfs" && $2 != "nsfs" { bad = 1 } index($1, "\\") { bad = 1 } END { exit bad }'
}

if [ ! -d "$path" ]; then fail "$path is not a directory"; fi
path=$(cd -P -- "$path" && pwd -P)
old="$path.plumb-old-${plumb_run:-run}"
if [ -e "$old" ] || [ -L "$old" ]; then fail "$old already exists"; fi
old_src=$(findmnt -n -o SOURCE -M "$path" | tail -n 1)
old_fstype=$(findmnt -n -o FSTYPE -M "$path" | tail -n 1)
old_opts=$(findmnt -n -o OPTIONS -M "$path" | tail -n 1)

if [ $# -gt 0 ]; then
  command -v systemctl >/dev/null 2>&1 || fail "cannot stop $*: no systemctl on this host"
  for svc in "$@"; do
    id=$(systemctl show -p Id --value -- "$svc" 2>/dev/null)
    [ -n "$id" ] || id=$svc
    if live "$id"; then add "$id"; fi
    for t in $(systemctl show -p TriggeredBy --value -- "$id" 2>/dev/null); do
      if live "$t"; then add "$t"; fi
    done
  done
  if [ -n "$active" ]; then
    t_stop=$(date +%s.%N)
    if ! timeout 300 systemctl stop -- $active; then
      # A unit that starts one of them again cancels the stop job: name it
      # (its start may still be queued for a moment).
      for i in 1 2 3 4 5 6 7 8 9 10; do
        why=$(restarted) && fail "$why"
        sleep 0.2
      done
      fail "could not stop$active (systemctl stop failed, or took more than 300 s)"
    fi
    # Each unit is inactive, and stays so: a unit that something starts
    # again (a socket, a unit that pulls it in) would write into the data
    # while it is copied.
    for i in 1 2 3 4 5 6 7 8 9 10; do
      sleep 0.2
      why=$(restarted) && fail "$why"
    done
  fi
fi
# What the units leave running when they stop (k3s leaves its pods).
if [ -n "$stop_command" ]; then
  sh -c "$stop_command" >&2 || fail "the stop command failed (exit $?): $stop_command"
  why=$(restarted) && fail "$why"
fi
# Whatever the stopped units held is unmounted by now (a moment's grace for
# a process that is still exiting).
for i in 1 2 3 4 5 6 7 8 9 10; do
  held=$(below)
  [ -z "$held" ] && break
  sleep 0.5
done
left=
if [ -n "$held" ]; then
  why=$(restarted) && fail "$why; filesystems are mounted below $path ($(echo $held))"
  list=$(mounts_below)
  procs=$(echo "$list" | users)
  if [ -z "$procs" ] && runtime_only "$list"; then
    # Deepest first; a plain umount, which the kernel refuses while the
    # mount (or a copy of it that follows) is busy.
    for t in $(echo "$list" | cut -d ' ' -f 1 | sort -r); do
      umount -- "$t" || fail "cannot unmount $t, left mounted by the stopped units"
      left="$left $t"
    done
    held=$(below)
  fi
fi
if [ -n "$held" ]; then
  [ -n "${procs-}" ] || procs=$(mounts_below | users)
  [ -z "$procs" ] || procs=", held by processes that still run: $procs(containers left running when their service stopped, as Docker's are with live-restore and k3s's pods are: stop them first, e.g. with migrate.stop_command)"
  fail "filesystems are mounted below $path or use files there ($(echo $held))$procs: stop what holds them (list it in migrate.stop) or unmount them first"
fi
[ -z "$left" ] || echo "plumb-note=unmounted what the stopped units left mounted, used by no process:$left"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plumb-migrate.XXXXXX") || fail "cannot make a temporary mount point"
work=$(mktemp -d "${TMPDIR:-/tmp}/plumb-verify.XXXXXX") || fail "cannot make a work folder"
mount -t "$fstype" -o "$opts" "$src" "$tmp" || fail "cannot mount $src"
tmp_mounted=1
extra=$(ls -A "$tmp" | grep -vx 'lost+found' | head -n 3)
if [ -n "$extra" ]; then fail "$src is not empty (it holds $(echo $extra)): refusing to copy onto it"; fi
# lost+found of the new filesystem is not part of the data, unless the old tree had one.
prune="-path ./lost+found -prune -o"
if [ -e "$path/lost+found" ]; then prune=; fi

# What is to copy, and whether it fits: `du` counts blocks, as `df` does.
bytes=$(du -sxB1 "$path" | cut -f 1)
avail=$(df -P -B1 "$tmp" | awk 'NR == 2 { print $4 }')
if [ -n "$bytes" ] && [ -n "$avail" ] && [ "$bytes" -gt "$avail" ]; then
  fail "$path holds $bytes bytes, more than the $avail bytes free on $src: nothing was copied"
fi

copying=1
t0=$(date +%s)
if command -v rsync >/dev/null 2>&1; then
  # rsync reports the bytes it copied (`--info=progress2`, lines ended by
  # CR), read here into plumb-progress lines that plumb shows while the copy
  # runs; its messages go to stderr, its exit status ends the pipe.
  { rsync -aHAXSx --numeric-ids --info=progress2 "$path/" "$tmp/" 2>&3; echo "plumb-rsync-exit $?"; } 3>&2 |
    tr '\r' '\n' |
    awk -v total="$bytes" '
      $1 == "plumb-rsync-exit" { exit $2 }
      { n = $1; gsub(/,/, "", n); if (n ~ /^[0-9]+$/ && n != last) { print "plumb-progress=" n " " total; fflush(); last = n } }' ||
    fail "the copy failed (rsync exit $?)"
else
  cp -ax --sparse=always "$path/." "$tmp/" >&2 || fail "the copy failed (cp exit $?)"
fi
echo "plumb-copied=$bytes $(( $(date +%s) - t0 ))"

manifest() {
  (cd "$1" && find . -xdev $prune \( \
      -type f -printf "%p\t%i\tf %m %U %G %s %T@\t\n" -o \
      -type l -printf "%p\t%i\tl %U %G\t%l\n" -o \
      -type d -printf "%p\t%i\td %m %U %G\t\n" -o \
      -printf "%p\t%i\t%y %m %U %G\t\n" \) ) |
    LC_ALL=C sort -t "$tab" -k1,1 |
    awk -F "$tab" -v OFS="$tab" '{ t = $3; sub(/\.[0-9]*$/, "", t); if (!($2 in first)) first[$2] = $1; print $1, first[$2], t, $4 }'
}
sums() { (cd "$1" && find . -xdev $prune -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum --); }
attrs() {
  if command -v getfattr >/dev/null 2>&1; then
    (cd "$1" && find . -xdev $prune -print0 | LC_ALL=C sort -z | xargs -0r getfattr -h -d -m - -e hex --absolute-names 2>/dev/null)
  fi
  return 0
}
for check in manifest sums attrs; do
  $check "$path" > "$work/old.$check" || fail "cannot read the old tree ($check)"
  $check "$tmp" > "$work/new.$check" || fail "cannot read the copy ($check)"
  if ! cmp -s "$work/old.$check" "$work/new.$check"; then
    diff "$work/old.$check" "$work/new.$check" | head -n 6 >&2
    fail "the copy differs from the original ($check)"
  fi
done
files=$(grep -c '' "$work/old.sums")
command -v getfattr >/dev/null 2>&1 || echo "plumb-note=xattrs and ACLs were copied but not compared: getfattr (package attr) is missing"

# A unit that came back during the copy may have written into the data.
why=$(restarted) && fail "$why, during the copy"

# The switch.
release "$tmp" || fail "cannot unmount the temporary mount"
tmp_mounted=0
if [ -n "$old_src" ]; then
  umount "$path" || fail "cannot unmount the old filesystem $old_src from $path"
else
  mv -- "$path" "$old" || fail "cannot move $path aside"
  if ! mkdir -- "$path"; then mv -- "$old" "$path"; fail "cannot make the mount point"; fi
  chown --reference="$old" -- "$path" && chmod --reference="$old" -- "$path" || true
fi
if ! mount -t "$fstype" -o "$opts" "$src" "$path"; then
  if [ -n "$old_src" ]; then
    mount -t "$old_fstype" -o "$old_opts" "$old_src" "$path" || say "could not mount $old_src at $path again"
  else
    rmdir -- "$path" && mv -- "$old" "$path"
  fi
  fail "cannot mount $src at $path"
fi

rm -rf "$work"; work=
rmdir "$tmp"; tmp=
echo "plumb-note=moved $files files ($bytes bytes) from $path onto $src, verified by sha256 and metadata"
if [ -n "$old_src" ]; then
  echo "plumb-note=old data stays on $old_src, unmounted and untouched"
elif [ "$keep" = 1 ]; then
  echo "plumb-note=old data kept at $old"
else
  rm -rf -- "$old" && echo "plumb-note=old data deleted after the verified switch"
fi
if ! start_again; then say "the data moved, but not all of these units started again:$active"; exit 1; fi
[ -z "$active" ] || echo "plumb-note=units stopped and started again:$active"
"#;
