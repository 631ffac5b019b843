//! The data migration of `mount` with `migrate:`: what is at the mount
//! point moves onto the new filesystem, verified, before the new filesystem
//! is mounted there.
//!
//! The order is what makes it safe: the listed services that are running
//! are stopped; the new filesystem is mounted at a temporary place and must
//! be empty (but for `lost+found`); the tree is copied with `rsync
//! -aHAXSx --numeric-ids` (owners, modes, times, hard links, symlinks, ACLs,
//! xattrs, sparse files; `cp -ax` when rsync is missing); the two trees
//! are compared (every file's sha256, and type, mode, owner, size, mtime,
//! link target, hard-link grouping and xattrs/ACLs of every entry). Only
//! then does the switch happen: the old directory is renamed aside (or the
//! old filesystem unmounted), the new one mounted at the path, and the
//! services started again. A failure at any point before the switch
//! unmounts the temporary mount and starts the services again, leaving the
//! old data where and as it was; a failure to mount at the path undoes the
//! switch the same way.

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
    let mut s = Sh::raw_start("set -u\npath=")
        .val(m.path)
        .raw("; src=")
        .val(m.src)
        .raw("; fstype=")
        .val(m.fstype)
        .raw("; opts=")
        .val(m.opts)
        .raw("; keep=")
        .val(if m.keep_old { "1" } else { "0" })
        .raw("\nset --");
    for svc in m.stop {
        s = s.arg(svc);
    }
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
say() { echo "plumb: $*" >&2; }
restore() {
  if [ "$tmp_mounted" = 1 ]; then umount "$tmp" || say "could not unmount the temporary mount $tmp"; fi
  [ -n "$tmp" ] && rmdir "$tmp" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
  for svc in $active; do systemctl start "$svc" || say "could not start $svc again"; done
}
fail() { say "migration of $path failed: $*"; say "nothing was switched: $path holds its old data as before"; restore; exit 1; }

if [ ! -d "$path" ]; then fail "$path is not a directory"; fi
path=$(cd -P -- "$path" && pwd -P)
old="$path.plumb-old-${plumb_run:-run}"
if [ -e "$old" ] || [ -L "$old" ]; then fail "$old already exists"; fi
below=$(findmnt -ln -o TARGET | awk -v p="$path/" 'index($0, p) == 1' | head -n 3)
if [ -n "$below" ]; then fail "filesystems are mounted below $path ($below): unmount them first"; fi
old_src=$(findmnt -n -o SOURCE -M "$path" | tail -n 1)
old_fstype=$(findmnt -n -o FSTYPE -M "$path" | tail -n 1)
old_opts=$(findmnt -n -o OPTIONS -M "$path" | tail -n 1)

if [ $# -gt 0 ]; then
  command -v systemctl >/dev/null 2>&1 || fail "cannot stop $*: no systemctl on this host"
  for svc in "$@"; do
    if systemctl is-active --quiet "$svc"; then active="$active $svc"; fi
  done
  for svc in $active; do
    systemctl stop "$svc" || fail "could not stop $svc"
  done
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plumb-migrate.XXXXXX") || fail "cannot make a temporary mount point"
work=$(mktemp -d "${TMPDIR:-/tmp}/plumb-verify.XXXXXX") || fail "cannot make a work folder"
mount -t "$fstype" -o "$opts" "$src" "$tmp" || fail "cannot mount $src"
tmp_mounted=1
extra=$(ls -A "$tmp" | grep -vx 'lost+found' | head -n 3)
if [ -n "$extra" ]; then fail "$src is not empty (it holds $(echo $extra)): refusing to copy onto it"; fi
# lost+found of the new filesystem is not part of the data, unless the old tree had one.
prune="-path ./lost+found -prune -o"
if [ -e "$path/lost+found" ]; then prune=; fi

if command -v rsync >/dev/null 2>&1; then
  rsync -aHAXSx --numeric-ids "$path/" "$tmp/" >&2 || fail "the copy failed (rsync exit $?)"
else
  cp -ax --sparse=always "$path/." "$tmp/" >&2 || fail "the copy failed (cp exit $?)"
fi

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
bytes=$(du -sxB1 "$path" | cut -f 1)
command -v getfattr >/dev/null 2>&1 || echo "plumb-note=xattrs and ACLs were copied but not compared: getfattr (package attr) is missing"

# The switch.
umount "$tmp" || fail "cannot unmount the temporary mount"
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
failed=
for svc in $active; do systemctl start "$svc" || failed="$failed $svc"; done
if [ -n "$failed" ]; then say "the data moved, but these services did not start again:$failed"; exit 1; fi
[ -z "$active" ] || echo "plumb-note=services restarted:$active"
"#;
