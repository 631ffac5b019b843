//! Shell text for the engine's own steps: atomic verified file writes, and
//! `become` (the batched probe's framing is in [`crate::run::probe`]). Built with [`crate::shell::Sh`] only.

use crate::module::FileWrite;
use crate::plan::Become;
use crate::shell::Sh;

/// Exit status of a write whose staged file's checksum did not match.
pub const EXIT_CHECKSUM: i32 = 97;
/// Exit status of a write whose `validate` command failed.
pub const EXIT_VALIDATE: i32 = 98;

/// Wrap `script` so that it runs as `become` asks (no sudo when the remote
/// user already is root).
///
/// Without a payload on standard input (probes, most steps), the script
/// reaches the sudo'd shell on its standard input, through a here-document
/// read whole before it runs (its commands then read /dev/null): a command
/// line argument is capped by Linux at 128 KiB, which the probe of about a
/// thousand files exceeds. With a payload (a file upload, whose script is
/// small), standard input carries the payload and the script is the
/// argument of `sh -c`.
#[must_use]
pub fn with_become(script: &Sh, become_: &Become, payload: bool) -> Sh {
    let shell = match become_ {
        Become::No => return script.clone(),
        Become::Root => {
            Sh::raw_start("if [ \"$(id -u)\" = 0 ]; then plumb_sudo=; else plumb_sudo='sudo -n --'; fi\n$plumb_sudo sh")
        }
        Become::User(u) => Sh::raw_start("sudo -n -u").arg(u).raw(" -- sh"),
    };
    if payload {
        shell.raw(" -c").arg(script.as_str())
    } else {
        shell
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
            .val(&w.payload.sha256),
    );
    s.line(&Sh::raw_start(
        "if [ ! -d \"$dir\" ]; then echo \"plumb: the folder $dir does not exist (a directory resource can create it)\" >&2; exit 1; fi\n\
         tmp=$(mktemp \"$dir/.plumb.XXXXXXXX\")\ntrap 'rm -f -- \"$tmp\"' EXIT\ntrap 'rm -f -- \"$tmp\"; exit 1' HUP INT TERM PIPE\ncat > \"$tmp\"\n\
         got=$(sha256sum < \"$tmp\"); got=${got%% *}\n\
         if [ \"$got\" != \"$want\" ]; then echo \"plumb: checksum mismatch for $target: sent $want, host has $got\" >&2; exit 97; fi",
    ));
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
        "sync -- \"$tmp\" 2>/dev/null || sync\nmv -f -- \"$tmp\" \"$target\"\ntrap - EXIT\nsync -- \"$dir\" 2>/dev/null || true",
    ));
    s
}

/// Shell lines that copy `$target` (if it exists) into this run's backup
/// folder and print `plumb-backup=PATH`. The engine sets `$plumb_run` (the
/// run id) at the top of every step script.
#[must_use]
pub fn backup_lines() -> Sh {
    Sh::raw_start("if [ -e \"$target\" ] || [ -L \"$target\" ]; then\n  broot=/var/lib/plumb/backups\n  if ! mkdir -p \"$broot\" 2>/dev/null || [ ! -w \"$broot\" ]; then broot=\"${HOME:-/tmp}/.local/state/plumb/backups\"; fi\n  bdir=\"$broot/${plumb_run:-unknown-run}$(dirname -- \"$target\")\"\n  mkdir -p -- \"$bdir\"\n  cp -a -- \"$target\" \"$bdir/\"\n  echo \"plumb-backup=$bdir/$(basename -- \"$target\")\"\nfi")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        if root {
            assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "20000\n");
        }
    }
}
