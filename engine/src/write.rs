//! Shell text for the engine's own steps: atomic verified file writes, and
//! `become` (the batched probe's framing is in [`crate::run::probe`]). Built with [`crate::shell::Sh`] only.

use crate::module::FileWrite;
use crate::plan::Become;
use crate::shell::{stdin_script, Sh};

/// Exit status of a write whose staged file's checksum did not match.
pub const EXIT_CHECKSUM: i32 = 97;
/// Exit status of a write whose `validate` command failed.
pub const EXIT_VALIDATE: i32 = 98;

/// Wrap `script` so that it runs as `become` asks (no sudo when the remote
/// user already is root).
///
/// The script never becomes an argument of `sudo` or of the sudo'd shell
/// (command lines are readable by every user of the host, and a script may
/// hold a secret). Without a payload on standard input (probes, most
/// steps), it reaches the sudo'd shell on its standard input, through a
/// here-document read whole before it runs (its commands then read
/// /dev/null); this also lifts Linux's 128 KiB cap on one argument, which
/// the probe of about a thousand files exceeds. With a payload (a file
/// upload), the script, a terminator line and then the payload are piped
/// into the sudo'd shell, which reads the script line by line (see
/// [`crate::shell::stdin_script`]).
#[must_use]
pub fn with_become(script: &Sh, become_: &Become, payload: bool) -> Sh {
    let (prelude, runner) = match become_ {
        Become::No => return script.clone(),
        Become::Root => (
            Sh::raw_start("if [ \"$(id -u)\" = 0 ]; then plumb_sudo=; else plumb_sudo='sudo -n --'; fi\n"),
            Sh::raw_start("$plumb_sudo sh"),
        ),
        Become::User(u) => (Sh::new(), Sh::raw_start("sudo -n -u").arg(u).raw(" -- sh")),
    };
    if payload {
        let (boot, prefix) = stdin_script(script.as_str());
        let prefix = String::from_utf8(prefix).expect("a script is text");
        prelude
            .raw("{ cat")
            .heredoc(&prefix)
            .raw("\ncat; } | ")
            .then(&runner)
            .raw(" -c")
            .arg(boot)
    } else {
        prelude
            .then(&runner)
            .raw(" -c 'plumb_script=$(cat) && exec </dev/null && eval \"$plumb_script\"'")
            .heredoc(script.as_str())
    }
}

/// The script that writes `w` atomically from standard input: a temp file in
/// the target's folder, sha256 checked on the host, metadata set, `validate`
/// run, the old file backed up, fsync, rename. On any failure the temp file
/// is removed and the target is untouched.
#[must_use]
pub fn file_write(w: &FileWrite) -> Sh {
    let dir = match w.path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => w.path[..i].to_string(),
        None => ".".to_string(),
    };
    let mut s = Sh::raw_start("set -e\numask 077\n");
    s.line(
        &Sh::raw_start("target=")
            .val(&w.path)
            .raw("; dir=")
            .val(&dir)
            .raw("; want=")
            .val(&w.payload.sha256)
            .raw("; size=")
            .val(w.payload.size.to_string()),
    );
    s.line(&Sh::raw_start(WRITE_CHECKS));
    match w.mode {
        Some(m) => s.line(&Sh::raw_start("chmod").arg(format!("{m:o}")).raw(" \"$tmp\"")),
        None => s.line(&Sh::raw_start(
            "if [ -e \"$target\" ]; then chmod \"$(stat -c %a \"$target\")\" \"$tmp\"; chown \"$(stat -c %u:%g \"$target\")\" \"$tmp\" 2>/dev/null || true; else chmod 644 \"$tmp\"; fi",
        )),
    }
    if let Some(o) = &w.owner {
        s.line(&Sh::raw_start("chown").arg(o).raw(" \"$tmp\""));
    }
    if let Some(g) = &w.group {
        s.line(&Sh::raw_start("chgrp").arg(g).raw(" \"$tmp\""));
    }
    if let Some(v) = &w.validate {
        // `%s` becomes "$1": the staged path reaches the user's command as an
        // argument, never as text spliced into it.
        let cmd = v.replace("%s", "\"$1\"");
        s.line(
            &Sh::raw_start("if ! ")
                .then(&Sh::user_command(&cmd, &[Sh::raw_start("\"$tmp\"")]))
                .raw(" >&2; then echo \"plumb: validate command failed; $target left as it was\" >&2; exit 98; fi"),
        );
    }
    if w.backup {
        s.line(&backup_lines());
    }
    s.line(&Sh::raw_start(
        "sync -- \"$tmp\" 2>/dev/null || sync\nmv -f -- \"$tmp\" \"$plumb_dest\"\ntrap - EXIT\nsync -- \"$dir\" 2>/dev/null || true",
    ));
    s
}

/// Exit status of a write that ran out of space on the target's filesystem.
pub const EXIT_NO_SPACE: i32 = 96;

/// The first lines of a write: what is at the target and its folder is
/// checked again (the probe saw it earlier; it may have changed since), the
/// temp file is staged and its checksum compared. Every failure says what
/// is wrong in words and leaves the target as it was; the temp file is
/// removed on every exit but the final rename.
const WRITE_CHECKS: &str = r#"plumb_why() {
  case $1 in
  *"No space left"*)
    rm -f -- "$tmp"
    plumb_fs=$(df -P -- "$dir" 2>/dev/null | { read -r _; read -r _ _ _ plumb_av _ plumb_mnt; printf '%s KiB free on %s' "$plumb_av" "$plumb_mnt"; }) || true
    plumb_mnt=${plumb_fs#* KiB free on }
    echo "plumb: no space left on ${plumb_mnt:-the filesystem of $dir} ($target): $size bytes to write, ${plumb_fs%% on *} with the staged copy removed; $target left as it was" >&2
    exit 96;;
  *"Read-only file system"*)
    echo "plumb: read-only filesystem at $dir: $target cannot be written" >&2
    exit 1;;
  esac
  printf '%s\n' "$1" >&2
  exit 1
}
if [ ! -d "$dir" ]; then
  plumb_up=$dir
  while [ ! -e "$plumb_up" ] && [ ! -L "$plumb_up" ]; do plumb_up=$(dirname -- "$plumb_up"); done
  if [ -d "$plumb_up" ]; then
    echo "plumb: the folder $dir does not exist (a directory resource can create it)" >&2
  else
    echo "plumb: $plumb_up is not a folder, so $target cannot be written below it" >&2
  fi
  exit 1
fi
plumb_me=$(id -u); plumb_p=; plumb_rest=${dir#/}
while [ -n "$plumb_rest" ]; do
  plumb_c=${plumb_rest%%/*}
  case $plumb_rest in */*) plumb_rest=${plumb_rest#*/};; *) plumb_rest=;; esac
  plumb_p=$plumb_p/$plumb_c
  if [ -L "$plumb_p" ]; then
    plumb_o=$(stat -c %u -- "$plumb_p" 2>/dev/null) || plumb_o=unknown
    if [ "$plumb_o" != 0 ] && [ "$plumb_o" != "$plumb_me" ]; then
      echo "plumb: refused to write $target: $plumb_p is a symlink owned by uid $plumb_o, who could point it anywhere (only symlinks owned by root or by the writing user are followed)" >&2
      exit 1
    fi
  fi
done
dir=$(cd -P -- "$dir" && pwd -P)
plumb_dest=$dir/${target##*/}
if [ -d "$target" ] && [ ! -L "$target" ]; then echo "plumb: $target is a folder, not a file; left as it was" >&2; exit 1; fi
if [ -e "$target" ] && [ ! -L "$target" ] && [ ! -f "$target" ]; then echo "plumb: $target is a special file (a FIFO, device or socket), not a regular file; left as it was" >&2; exit 1; fi
tmp=
trap 'rm -f -- "$tmp"' EXIT
trap 'rm -f -- "$tmp"; exit 1' HUP INT TERM PIPE
# Temporary files of earlier runs cut off outright (plumb killed, the host
# lost its power) before their traps could remove them: plumb's own names,
# not of this run, untouched for 10 minutes (an upload under way writes).
for plumb_old in "$dir"/.plumb-*.???????? "$dir"/.plumb.????????; do
  [ -f "$plumb_old" ] && [ ! -L "$plumb_old" ] || continue
  case ${plumb_old##*/} in .plumb-"${plumb_run:-}".*) continue ;; esac
  [ -n "$(find "$plumb_old" -maxdepth 0 -mmin +10 2>/dev/null)" ] || continue
  rm -f -- "$plumb_old" && echo "plumb-note=removed a temporary file an interrupted run left: $plumb_old"
done
plumb_err=$(mktemp "$dir/.plumb-${plumb_run:-run}.XXXXXXXX" 2>&1) || plumb_why "$plumb_err"
tmp=$plumb_err
plumb_err=$(cat 2>&1 >"$tmp") || plumb_why "$plumb_err"
got=$(sha256sum < "$tmp"); got=${got%% *}
if [ "$got" != "$want" ]; then echo "plumb: checksum mismatch for $target: sent $want, host has $got" >&2; exit 97; fi"#;

/// Shell lines that copy `$target` (if it exists) into this run's backup
/// folder and print `plumb-backup=PATH`. The copy keeps the file's own mode
/// and owner (a rollback puts exactly those back); the run's folder is 0700,
/// so no other user can reach the copy of a secret. The engine sets `$plumb_run` (the
/// run id) at the top of every step script.
#[must_use]
pub fn backup_lines() -> Sh {
    Sh::raw_start("if [ -e \"$target\" ] || [ -L \"$target\" ]; then\n  broot=/var/lib/plumb/backups\n  if ! mkdir -p \"$broot\" 2>/dev/null || [ ! -w \"$broot\" ]; then broot=\"${HOME:-/tmp}/.local/state/plumb/backups\"; fi\n  bdir=\"$broot/${plumb_run:-unknown-run}$(dirname -- \"$target\")\"\n  mkdir -p -- \"$bdir\"\n  chmod 700 -- \"$broot/${plumb_run:-unknown-run}\"\n  cp -a -- \"$target\" \"$bdir/\"\n  echo \"plumb-backup=$bdir/$(basename -- \"$target\")\"\nfi")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    /// A script larger than one command-line argument may be (128 KiB on
    /// Linux) runs through `become`, with its exit status, and its commands
    /// do not read the script as their input. (As root, `become: true`
    /// runs no sudo; sudo itself is tested on the SSH lab's nodes.)
    #[test]
    fn a_large_script_becomes_root_without_an_argument_limit() {
        let mut script = Sh::raw_start("n=0");
        for _ in 0..20_000 {
            script.line(&Sh::raw_start("n=$((n + 1)) # one line of a long script"));
        }
        script.line(&Sh::raw_start("echo \"$n\"; cat; exit 3"));
        assert!(script.as_str().len() > 256 * 1024);
        let full = with_become(&script, &Become::Root, false);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.sh");
        std::fs::write(&f, full.as_str()).unwrap();
        let out = std::process::Command::new("sh").arg(&f).output().unwrap();
        let root = crate::testing::running_as_root();
        if root {
            assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "20000\n");
        }
    }

    /// Run `file_write` here with `content` on its standard input, as a
    /// transport would: (exit status, stderr).
    fn write_here(path: &str, content: &[u8]) -> (i32, String) {
        use std::io::Write as _;
        let w = FileWrite {
            path: path.to_string(),
            payload: crate::module::Payload::bytes(content.to_vec()),
            mode: None,
            owner: None,
            group: None,
            validate: None,
            backup: false,
        };
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(file_write(&w).as_str())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(content);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".plumb"))
            .collect()
    }

    /// The write checks the target and its folder again when it runs (the
    /// probe saw them earlier; they may have changed since): a FIFO, a
    /// folder, a regular file in the path and a missing folder are refused
    /// in words, and nothing is left behind.
    #[test]
    fn a_write_rechecks_what_is_at_the_target_when_it_runs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        let fifo = format!("{root}/fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let (code, err) = write_here(&fifo, b"x\n");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("is a special file"), "{err}");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // A device node (made here, never a real one: a regression must
        // not replace the machine's /dev/null).
        if std::process::Command::new("mknod")
            .args([&format!("{root}/null"), "c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success())
        {
            let (code, err) = write_here(&format!("{root}/null"), b"x\n");
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("is a special file"), "{err}");
            assert!(std::fs::symlink_metadata(format!("{root}/null"))
                .unwrap()
                .file_type()
                .is_char_device());
        }
        std::fs::create_dir(format!("{root}/folder")).unwrap();
        let (code, err) = write_here(&format!("{root}/folder"), b"x\n");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("is a folder, not a file"), "{err}");
        std::fs::write(format!("{root}/plain"), "keep\n").unwrap();
        let (code, err) = write_here(&format!("{root}/plain/below/x"), b"x\n");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("{root}/plain is not a folder")), "{err}");
        assert_eq!(std::fs::read_to_string(format!("{root}/plain")).unwrap(), "keep\n");
        let (code, err) = write_here(&format!("{root}/missing/x"), b"x\n");
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("the folder {root}/missing does not exist")),
            "{err}"
        );
        assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
    }

    /// A symlink in the target's folder path is followed when root or the
    /// writing user owns it (so `/lib/...` on a merged-/usr system works),
    /// and refused when anybody else does: they could point it anywhere,
    /// also between the probe and the write.
    #[test]
    fn a_write_through_a_symlink_owned_by_another_user_is_refused() {
        let root_user = crate::testing::running_as_root();
        if !root_user {
            eprintln!("skipped: needs root to own a symlink as another user");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        std::fs::create_dir(format!("{root}/real")).unwrap();
        std::os::unix::fs::symlink(format!("{root}/real"), format!("{root}/mine")).unwrap();
        let (code, err) = write_here(&format!("{root}/mine/a"), b"through mine\n");
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            std::fs::read_to_string(format!("{root}/real/a")).unwrap(),
            "through mine\n"
        );
        std::os::unix::fs::symlink(format!("{root}/real"), format!("{root}/theirs")).unwrap();
        std::os::unix::fs::lchown(format!("{root}/theirs"), Some(65534), Some(65534)).unwrap();
        let (code, err) = write_here(&format!("{root}/theirs/b"), b"through theirs\n");
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("{root}/theirs is a symlink owned by uid 65534")),
            "{err}"
        );
        assert!(!std::path::Path::new(&format!("{root}/real/b")).exists());
        assert!(leftovers(&d.path().join("real")).is_empty());
    }
}
