//! `plumb rollback RUN` against real hosts: lab nodes (systemd ones where a
//! service is restarted), real loop devices for fstab, real LVM for a
//! growth that cannot be undone. The rollback is a plan: reviewed, saved,
//! applied exactly, refused when a backup was tampered with, and itself
//! rolled back.

use crate::common;
use crate::support::lab;
use crate::support::storage;

use std::path::PathBuf;

use common::{expect, Outcome, Plumb};
use lab::Lab;

const SECRET: &str = "tok-Correct-Horse-42";

struct Site {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(lab: Lab) -> Self {
        let dir = tempfile::Builder::new().prefix("plumb-rollback-").tempdir().unwrap();
        lab.inventory(dir.path(), "    user: root\n");
        Self { lab, dir }
    }

    fn plan(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("plan.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn plumb(&self, args: &[&str]) -> Outcome {
        let mut p = Plumb::new()
            .env("XDG_STATE_HOME", &self.file("state"))
            .args(args)
            .arg("--ssh-config")
            .arg(self.lab.ssh_config());
        if ["apply", "diff", "rollback"].contains(&args[0]) && !args.contains(&"-i") {
            p = p.arg("-i").arg(self.dir.path().join("inventory.yaml"));
        }
        p.run()
    }

    fn sh(&self, cmd: &str) -> String {
        let o = self.lab.ssh(&self.lab.nodes[0], cmd);
        assert!(o.status.success(), "`{cmd}`: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Contents, mode and owner of every path, and the listing of a folder.
    fn snapshot(&self, paths: &[&str]) -> String {
        let mut s = String::new();
        for p in paths {
            s.push_str(&self.sh(&format!(
                "if [ -e {p} ]; then stat -c '%n %F %a %U:%G' {p}; [ -f {p} ] && sha256sum < {p} || ls -A {p}; else echo '{p} absent'; fi"
            )));
        }
        s
    }

    fn apply_json(&self, args: &[&str]) -> String {
        let mut all = vec!["apply"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let a = self.plumb(&all);
        expect(&a, 0, "apply");
        a.json()["run_id"].as_str().unwrap().to_string()
    }
}

const DEMO: &str = r#"
plan: demo
resources:
  - id: unit
    file:
      path: /etc/systemd/system/plumb-demo.service
      content: |
        [Unit]
        Description=plumb demo
        [Service]
        ExecStartPre=/bin/sh -c 'echo started >> /var/log/plumb-demo.starts'
        ExecStart=/bin/sleep infinity
  - id: conf
    file: {path: /etc/plumb-demo.conf, content: "level={{ level }}\n", mode: "{{ mode }}", owner: "{{ owner }}"}
    notify: [demo]
  - id: token
    file: {path: /etc/plumb-demo.token, content: "{{ token }}\n", mode: "0600"}
    sensitive: true
    notify: [demo]
  - id: perm
    file: {path: /etc/plumb-demo.perm, content: "p\n", mode: "{{ mode }}"}
  - id: confd
    directory: {path: "{{ dir }}"}
  - id: drop
    file: {path: "{{ dir }}/x.conf", content: "x\n"}
  - id: demo
    service: {name: plumb-demo, state: running}
    requires: [unit]
"#;

const PATHS: &[&str] = &[
    "/etc/plumb-demo.conf",
    "/etc/plumb-demo.token",
    "/etc/plumb-demo.d",
    "/etc/plumb-demo.perm",
];

fn starts(s: &Site) -> usize {
    s.sh("cat /var/log/plumb-demo.starts 2>/dev/null | wc -l")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_rollback_restores_every_file_restarts_the_notified_service_once_and_can_itself_be_rolled_back() {
    if !Lab::available() {
        return;
    }
    let s = Site::new(Lab::up_systemd(1));
    let plan = s.plan(DEMO);
    let plan = plan.to_str().unwrap();
    // Before: the service runs with level 1; /etc/plumb-demo.d does not exist
    // (the baseline keeps its directory elsewhere).
    s.apply_json(&[
        plan,
        "--yes",
        "--var",
        "level=1",
        "--var",
        "mode=0644",
        "--var",
        "owner=root",
        "--var",
        "token=old-token",
        "--var",
        "dir=/etc/plumb-base.d",
    ]);
    let before = s.snapshot(PATHS);
    let starts_before = starts(&s);
    assert_eq!(starts_before, 1);

    let run = s.apply_json(&[
        plan,
        "--yes",
        "--var",
        "level=2",
        "--var",
        "mode=0600",
        "--var",
        "owner=deploy",
        "--var",
        &format!("token={SECRET}"),
        "--var",
        "dir=/etc/plumb-demo.d",
    ]);
    assert_eq!(starts(&s), 2, "the run restarted the service");
    s.sh("echo 'level=edited-by-hand' > /etc/plumb-demo.conf");
    let edited = s.snapshot(PATHS);

    let d = s.plumb(&["rollback", &run]);
    expect(&d, 2, "the rollback is pending changes");
    for want in [
        "conf (rollback)",
        "token (rollback)",
        "drop (rollback)",
        "confd (rollback)",
        // Only its mode changed (no content written, no backup): the mode
        // is set back from what the probe saw before the run.
        "perm (rollback)",
        "restart plumb-demo",
    ] {
        assert!(d.stdout.contains(want), "`{want}` in:\n{}", d.stdout);
    }
    assert!(
        d.stdout.contains("owner: deploy → root") && d.stdout.contains("mode: 600 → 644"),
        "{}",
        d.stdout
    );
    let md = s.plumb(&["rollback", &run, "--format", "markdown"]);
    let js = s.plumb(&["rollback", &run, "--format", "json"]);
    assert_eq!(js.json()["rollback_of"], run.as_str());
    let saved = s.file("rollback.plan");
    let r = s.plumb(&["rollback", &run, "--out", &saved]);
    expect(&r, 2, "rollback --out");
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    for (what, text) in [
        ("text", &d.stdout),
        ("markdown", &md.stdout),
        ("json", &js.stdout),
        ("saved", &saved_text),
    ] {
        assert!(!text.contains(SECRET), "the secret in the rollback's {what}:\n{text}");
    }
    assert_eq!(s.snapshot(PATHS), edited, "a review changes nothing");

    let a = s.plumb(&["apply", &saved, "--format", "json"]);
    expect(&a, 0, "apply of the saved rollback");
    assert_eq!(
        s.snapshot(PATHS),
        before,
        "every path as before the run: bytes, mode, owner"
    );
    assert_eq!(starts(&s), 3, "the notified service restarted once");
    let rollback_run = a.json()["run_id"].as_str().unwrap().to_string();
    let again = s.plumb(&["rollback", &run]);
    expect(&again, 0, "nothing left to undo");

    // The history names the rollback, and the rollback rolls back.
    let h = s.plumb(&["history", "-i", &s.file("inventory.yaml")]);
    assert!(h.stdout.contains(&format!("rollback of {run}")), "{}", h.stdout);
    let out2 = s.file("rollback2.plan");
    expect(
        &s.plumb(&["rollback", &rollback_run, "--out", &out2]),
        2,
        "rollback of the rollback",
    );
    expect(&s.plumb(&["apply", &out2]), 0, "apply it");
    assert_eq!(s.snapshot(PATHS), edited, "back to what the rollback replaced");
}

#[test]
fn a_rollback_is_refused_when_a_backup_was_tampered_with_or_the_host_moved() {
    if !Lab::available() {
        return;
    }
    let s = Site::new(Lab::up(1));
    s.sh("echo 'a=1' > /etc/plumb-a.conf; echo 'b=1' > /etc/plumb-b.conf");
    let plan = s.plan("resources:\n  - id: a\n    file: {path: /etc/plumb-a.conf, content: \"a=2\\n\"}\n  - id: b\n    file: {path: /etc/plumb-b.conf, content: \"b=2\\n\"}\n");
    let run = s.apply_json(&[plan.to_str().unwrap(), "--yes"]);
    let saved = s.file("rb.plan");
    expect(&s.plumb(&["rollback", &run, "--out", &saved]), 2, "review");

    // The host moved since the review: the saved rollback is refused.
    s.sh("echo 'b=3' > /etc/plumb-b.conf");
    let r = s.plumb(&["apply", &saved]);
    expect(&r, 1, "refused");
    assert!(
        r.stderr.contains("the world moved") && r.stderr.contains("resource `b`"),
        "{}",
        r.stderr
    );
    assert_eq!(s.sh("cat /etc/plumb-a.conf"), "a=2\n", "nothing applied");

    // A tampered backup is named, and nothing is restored.
    let backup = format!("/var/lib/plumb/backups/{run}/etc/plumb-a.conf");
    s.sh(&format!("echo 'a=evil' > {backup}"));
    let d = s.plumb(&["rollback", &run]);
    expect(&d, 1, "rollback with a tampered backup");
    assert!(
        d.stdout
            .contains(&format!("the backup `{backup}` of `/etc/plumb-a.conf` was altered")),
        "{}",
        d.stdout
    );
    s.sh(&format!("rm {backup}"));
    let d = s.plumb(&["rollback", &run]);
    expect(&d, 1, "rollback with a missing backup");
    assert!(
        d.stdout
            .contains(&format!("the backup `{backup}` of `/etc/plumb-a.conf` is missing")),
        "{}",
        d.stdout
    );
    assert_eq!(s.sh("cat /etc/plumb-a.conf /etc/plumb-b.conf"), "a=2\nb=3\n");
}

#[test]
fn a_rollback_restores_the_fstab_and_says_it_does_not_undo_mkfs_and_the_mount() {
    if !Lab::available() || !storage::available() {
        return;
    }
    let s = Site::new(Lab::up(1));
    let disk = storage::LoopDev::new(s.dir.path(), "m", "64M");
    let fstab_before = s.sh("cat /etc/fstab");
    let plan = s.plan(&format!(
        "resources:\n  - id: fs\n    filesystem: {{dev: \"{0}\", type: ext4}}\n  - id: m\n    mount: {{path: /mnt/data, src: \"{0}\", fstype: ext4}}\n",
        disk.dev
    ));
    let run = s.apply_json(&[plan.to_str().unwrap(), "--yes"]);
    assert_ne!(s.sh("cat /etc/fstab"), fstab_before);
    let d = s.plumb(&["rollback", &run, "--format", "json"]);
    expect(&d, 2, "rollback review");
    let j = d.json();
    let cannot: Vec<(String, String)> = j["cannot_undo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["resource"].as_str().unwrap().to_string(),
                c["why"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        cannot.iter().any(|(r, why)| r == "fs" && why.contains("mkfs")),
        "{cannot:?}"
    );
    assert!(
        cannot
            .iter()
            .any(|(r, why)| r == "m" && why.contains("fstab line is restored")),
        "{cannot:?}"
    );
    let md = s.plumb(&["rollback", &run, "--format", "markdown"]);
    assert!(
        md.stdout.contains("## What this rollback does not undo"),
        "{}",
        md.stdout
    );
    let saved = s.file("rb.plan");
    expect(&s.plumb(&["rollback", &run, "--out", &saved]), 2, "save");
    expect(&s.plumb(&["apply", &saved]), 0, "apply");
    assert_eq!(s.sh("cat /etc/fstab"), fstab_before, "fstab byte for byte");
    s.sh("umount /mnt/data || true");
}

#[test]
fn a_rollback_reports_an_lv_growth_as_not_undoable_and_still_restores_the_configs() {
    if !storage::available() || !storage::has("vgcreate") {
        eprintln!("skipping: lvm2 or loop devices unavailable");
        return;
    }
    let dm = std::process::Command::new("dmsetup").arg("targets").output();
    if !dm.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("linear")) {
        eprintln!("skipping: no device-mapper in this kernel (the VM tier has one)");
        return;
    }
    let dir = tempfile::Builder::new().prefix("plumb-rollback-lv-").tempdir().unwrap();
    let disk = storage::LoopDev::new(dir.path(), "pv", "64M");
    let vg = format!("plumb_rb_{}", std::process::id());
    let _guard = storage::VgGuard(vg.clone(), vec![disk.dev.clone()]);
    storage::sh(&format!(
        "export LVM_SUPPRESS_FD_WARNINGS=1; vgcreate -q {vg} {0} >/dev/null && lvcreate -q -y -L 8M -n data {vg} >/dev/null",
        disk.dev
    ));
    let conf = dir.path().join("app.conf");
    std::fs::write(&conf, "size=small\n").unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "hosts:\n  box:\n    connection: local\n").unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "resources:\n  - id: lv\n    lvm.lv: {{vg: {vg}, name: data, size: 16M}}\n  - id: conf\n    file: {{path: \"{}\", content: \"size=large\\n\"}}\n",
            conf.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let plumb = |args: &[&str]| {
        Plumb::new()
            .env("XDG_STATE_HOME", state.to_str().unwrap())
            .args(args)
            .arg("-i")
            .arg(&inv)
            .run()
    };
    let a = plumb(&["apply", plan.to_str().unwrap(), "--yes", "--format", "json"]);
    expect(&a, 0, "apply");
    let run = a.json()["run_id"].as_str().unwrap().to_string();
    let d = plumb(&["rollback", &run]);
    expect(&d, 2, "rollback review");
    assert!(d.stdout.contains("not undone by this rollback"), "{}", d.stdout);
    assert!(
        d.stdout.contains("lv (lvm.lv)") && d.stdout.contains("not shrunk back"),
        "{}",
        d.stdout
    );
    let saved = dir.path().join("rb.plan");
    expect(&plumb(&["rollback", &run, "--out", saved.to_str().unwrap()]), 2, "save");
    expect(&plumb(&["apply", saved.to_str().unwrap()]), 0, "apply");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "size=small\n");
    let size = storage::sh(&format!(
        "LVM_SUPPRESS_FD_WARNINGS=1 lvs --noheadings --units b --nosuffix -o lv_size {vg}/data"
    ));
    assert_eq!(size.trim(), (16 * 1024 * 1024).to_string(), "the growth stays");
}
