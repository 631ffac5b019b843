//! Secrets, everywhere a value can go: a `sensitive` value (and what is
//! templated from it) never reaches a report in any format, `-v`, an error
//! message (a failing command or `validate` that echoes it), a saved plan,
//! a command line on the host or on the workstation (`/proc/*/cmdline`,
//! sampled while plumb runs), nor a temp or backup file others can read.

use crate::common;
use crate::support::lab;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Plumb, Scratch};
use lab::Lab;

const SECRET: &str = "s3cr3t-Zq81x";

/// A failing sensitive command that prints its secret on stdout and
/// stderr, and a sensitive file whose `validate` echoes the staged content
/// and fails: the report (text, JSON, Markdown, with and without `-v`),
/// stderr and the saved plan hold no trace of the secret, and the errors
/// still say which step failed.
#[test]
fn failing_sensitive_steps_never_echo_their_secret() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.root()).unwrap();
    s.plan(
        r#"
resources:
  - id: cmd
    sensitive: true
    command:
      run: "echo token={{ env('PLUMB_TEST_SECRET') }}; echo err {{ env('PLUMB_TEST_SECRET') }} >&2; exit 3"
      creates: "{{ root }}/never"
  - id: f
    sensitive: true
    file:
      path: "{{ root }}/f"
      content: "pw={{ env('PLUMB_TEST_SECRET') }}\n"
      validate: "cat %s; cat %s >&2; false"
"#,
    );
    let saved = s.path().join("reviewed.plan");
    for format in ["text", "json", "markdown"] {
        for verbose in [false, true] {
            for cmd in ["diff", "apply"] {
                let mut p = Plumb::new()
                    .arg(cmd)
                    .arg(s.path().join("plan.yaml"))
                    .arg("--var")
                    .arg(format!("root={}", s.root().display()))
                    .args(["--format", format])
                    .env("PLUMB_TEST_SECRET", SECRET);
                p = if cmd == "apply" {
                    p.arg("--yes")
                } else {
                    p.arg("--out").arg(&saved)
                };
                if verbose {
                    p = p.arg("-v");
                }
                let out = p.run();
                let all = format!("{}{}", out.stdout, out.stderr);
                assert!(!all.contains(SECRET), "{cmd} {format} -v={verbose} leaked:\n{all}");
                if cmd == "apply" {
                    assert_eq!(out.code, 1, "{all}");
                    assert!(
                        all.contains("(sensitive command)` failed (exit 3)"),
                        "the failing step is still named: {all}"
                    );
                    assert!(
                        all.contains("validate command rejected the new"),
                        "the failing validate is still named: {all}"
                    );
                }
            }
        }
    }
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    assert!(!saved_text.contains(SECRET), "the saved plan leaked the secret");
    assert!(!s.root().join("f").exists(), "a rejected file is not written");
}

/// Every command line of every process, as text (arguments joined by
/// spaces), read from `/proc` of the machine this runs on.
fn local_cmdlines() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
                out.push(String::from_utf8_lossy(&b).replace('\0', " "));
            }
        }
    }
    out
}

/// A sensitive command with the secret templated into it, a sensitive file
/// (uploaded through `become`) whose validate sleeps, and a sensitive
/// file replacing an old secret, applied on a lab host as `deploy`: while
/// it runs, every command line on the host and on the workstation is
/// sampled, and none holds the secret; the backup of the old secret and
/// its folder are readable by root only; no other copy of the secret is
/// left on the host.
#[test]
fn a_secret_never_shows_in_a_process_list_or_a_file_others_can_read() {
    if !Lab::available() {
        eprintln!("skipped: {}", Lab::unavailable_reason().unwrap_or_default());
        return;
    }
    let lab = Lab::up(1);
    let n = &lab.nodes[0];
    let setup = lab.ssh(
        n,
        "mkdir -p /srv/sec && echo 'pw=old-Xq77' > /srv/sec/app.pw && chmod 644 /srv/sec/app.pw",
    );
    assert!(setup.status.success(), "{setup:?}");
    let (_dir, plan, inv) = lab.job(
        r#"
resources:
  - id: token
    sensitive: true
    become: true
    command:
      run: "umask 077; echo {{ env('PLUMB_TEST_SECRET') }} > /srv/sec/token; sleep 3"
      creates: /srv/sec/token
  - id: pw
    sensitive: true
    become: true
    file:
      path: /srv/sec/app.pw
      content: "pw={{ env('PLUMB_TEST_SECRET') }}\n"
      validate: "grep -q '^pw=' %s && sleep 2"
"#,
        "    user: deploy\n",
    );
    // Sample the host's command lines (as an unprivileged user, as any
    // user of the host could) for the whole run.
    let sampler = std::process::Command::new("ssh")
        .arg("-F")
        .arg(lab.ssh_config())
        .arg(format!("nosudo@{}", n.ip))
        .arg(
            "end=$(( $(date +%s) + 25 )); while [ \"$(date +%s)\" -lt \"$end\" ]; do \
             for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done; \
             [ -e /tmp/plumb-sampling-done ] && break; sleep 0.05; done",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen_here = Arc::new(Mutex::new(BTreeSet::new()));
    let local = std::thread::spawn({
        let (stop, seen) = (stop.clone(), seen_here.clone());
        move || {
            while !stop.load(Ordering::SeqCst) {
                seen.lock().unwrap().extend(local_cmdlines());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let a = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json")
        .env("PLUMB_TEST_SECRET", SECRET)
        .run();
    let _ = lab.ssh(n, "touch /tmp/plumb-sampling-done");
    let remote = String::from_utf8_lossy(&sampler.wait_with_output().unwrap().stdout).into_owned();
    stop.store(true, Ordering::SeqCst);
    local.join().unwrap();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(!a.stdout.contains(SECRET) && !a.stderr.contains(SECRET));
    // The sampling ran while the steps did: it saw their sleeps.
    assert!(
        remote.lines().any(|l| l.trim() == "sleep 3") && remote.lines().any(|l| l.trim() == "sleep 2"),
        "the host was sampled during the run"
    );
    let leaked: Vec<&str> = remote.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(
        leaked.is_empty(),
        "the secret is on a command line of the host: {leaked:?}"
    );
    let here = seen_here.lock().unwrap();
    assert!(
        here.iter().any(|l| l.contains("ssh")),
        "the workstation was sampled during the run"
    );
    let leaked: Vec<&String> = here.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "the secret is on a command line here: {leaked:?}");
    // The backup of the old secret: a copy that keeps the file's own mode
    // (what a rollback puts back) in a 0700 run folder, so that another
    // user cannot read it.
    let out = lab.ssh(
        n,
        "f=$(find /var/lib/plumb/backups -name app.pw); echo \"$f\"; stat -c %a \"$f\"; \
         stat -c %a \"$(dirname \"$(dirname \"$(dirname \"$f\")\")\")\"; cat \"$f\"",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[1], "644", "the backup keeps the old file's mode: {text}");
    assert_eq!(lines[2], "700", "the run's backup folder: {text}");
    assert_eq!(lines[3], "pw=old-Xq77");
    let other = lab.ssh_as("nosudo", n, &format!("cat '{}'", lines[0]));
    assert!(!other.status.success(), "another user read the backup");
    // No other copy of the secret on the host: only the two managed files.
    let out = lab.ssh(
        n,
        &format!("grep -rlsF -- '{SECRET}' /srv /tmp /var/tmp /var/lib/plumb /root /home || true"),
    );
    let copies: BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let want: BTreeSet<String> = ["/srv/sec/app.pw", "/srv/sec/token"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(copies, want, "copies of the secret on the host");
    let mode = lab.ssh(n, "stat -c %a /srv/sec/app.pw");
    assert_eq!(
        String::from_utf8_lossy(&mode.stdout),
        "644\n",
        "the file keeps its mode"
    );
}
