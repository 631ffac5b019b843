//! The run journal against the lab: every `apply` leaves a record on the
//! workstation and on the hosts (also when it fails or is stopped), records
//! hold no secret, `plumb history` lists runs from another workstation's
//! view, and `plumb show` renders saved plans and records offline.

use crate::common;
use crate::support::lab;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Outcome, Plumb};
use lab::Lab;
use sha2::Digest;

const SECRET: &str = "s3cr3t-Horse-Battery";

/// A lab of `n` nodes, a scratch folder with an inventory, and a
/// workstation state folder of its own.
struct Site {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(n: usize) -> Self {
        let lab = Lab::up(n);
        let dir = tempfile::Builder::new().prefix("plumb-journal-").tempdir().unwrap();
        lab.inventory(dir.path(), "    user: root\n");
        Self { lab, dir }
    }

    fn plan(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("plan.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.yaml")
    }

    /// A workstation: its plumb state folder.
    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `plumb ARGS` as workstation `ws`, with the lab's ssh config.
    fn plumb(&self, ws: &str, args: &[&str]) -> Outcome {
        self.command(ws, args).run()
    }

    fn command(&self, ws: &str, args: &[&str]) -> Plumb {
        let mut p = Plumb::new()
            .env("XDG_STATE_HOME", self.state(ws).to_str().unwrap())
            .args(args)
            .arg("--ssh-config")
            .arg(self.lab.ssh_config());
        if ["apply", "diff", "history", "rollback"].contains(&args[0]) && !args.contains(&"-i") {
            p = p.arg("-i").arg(self.inventory());
        }
        p
    }

    fn sh(&self, node: usize, cmd: &str) -> String {
        let o = self.lab.ssh(&self.lab.nodes[node], cmd);
        assert!(o.status.success(), "`{cmd}`: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The workstation's records, by run id.
    fn records(&self, ws: &str) -> Vec<(PathBuf, serde_json::Value)> {
        let dir = self.state(ws).join("plumb/runs");
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let j = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                (p, j)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn sha(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn plan_with_a_secret() -> String {
    format!(
        r#"
plan: journal
resources:
  - id: conf
    file: {{path: /etc/plumb-app.conf, content: "level = 2\n"}}
  - id: token
    file: {{path: /etc/plumb-token, content: "{SECRET}\n", mode: "0600"}}
    sensitive: true
"#
    )
}

#[test]
fn every_apply_leaves_a_record_on_the_workstation_and_on_the_host_without_secrets() {
    need_lab!();
    let s = Site::new(1);
    s.sh(
        0,
        "printf 'level = 1\\n' > /etc/plumb-app.conf; printf 'old-token\\n' > /etc/plumb-token",
    );
    let plan = s.plan(&plan_with_a_secret());
    let saved = s.dir.path().join("review.plan");
    let d = s.plumb(
        "ws1",
        &["diff", plan.to_str().unwrap(), "--out", saved.to_str().unwrap()],
    );
    common::expect(&d, 2, "diff --out");
    let a = s.plumb("ws1", &["apply", saved.to_str().unwrap(), "--format", "json"]);
    common::expect(&a, 0, "apply of the saved plan");
    let run_id = a.json()["run_id"].as_str().unwrap().to_string();

    let records = s.records("ws1");
    assert_eq!(records.len(), 1, "one record: {records:?}");
    let (path, rec) = &records[0];
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("{run_id}.json"));
    assert_eq!(mode_of(path), 0o600, "the record is its owner's only");
    assert_eq!(mode_of(path.parent().unwrap()), 0o700);
    assert_eq!(rec["outcome"], "changed");
    assert_eq!(
        rec["saved_plan"],
        std::fs::canonicalize(&saved).unwrap().to_str().unwrap()
    );
    let saved_hash = sha2::Sha256::digest(std::fs::read(&saved).unwrap());
    assert_eq!(rec["saved_plan_sha256"], hex::encode(saved_hash));
    assert_eq!(rec["plan"], std::fs::canonicalize(&plan).unwrap().to_str().unwrap());
    assert!(
        !rec["user"].as_str().unwrap().is_empty() && rec["user"] != "unknown",
        "{rec}"
    );
    let conf = rec["hosts"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "/etc/plumb-app.conf")
        .unwrap_or_else(|| panic!("the conf's path is recorded: {rec}"));
    let backup = conf["backup"]["path"].as_str().unwrap();
    assert!(
        backup.starts_with(&format!("/var/lib/plumb/backups/{run_id}/")),
        "{backup}"
    );
    assert_eq!(
        conf["backup"]["sha256"],
        sha("level = 1\n"),
        "the backup's hash, read on the host"
    );
    assert_eq!(conf["after"]["sha256"], sha("level = 2\n"));

    let on_host = s.sh(
        0,
        &format!("stat -c %a /var/lib/plumb/runs/{run_id}.json; cat /var/lib/plumb/runs/{run_id}.json"),
    );
    assert!(on_host.starts_with("600\n"), "the host's record is 0600: {on_host}");
    assert!(on_host.contains(&run_id) && on_host.contains("/etc/plumb-app.conf"));

    let local = std::fs::read_to_string(path).unwrap();
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    for (what, text) in [
        ("workstation record", &local),
        ("host record", &on_host),
        ("saved plan", &saved_text),
    ] {
        for secret in [SECRET.to_string(), sha(&format!("{SECRET}\n")), sha("old-token\n")] {
            assert!(!text.contains(&secret), "the {what} holds `{secret}`:\n{text}");
        }
    }
    let token = rec["hosts"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "/etc/plumb-token")
        .unwrap();
    assert!(
        token["after"]["sha256"].as_str().unwrap().starts_with("hmac:"),
        "{token}"
    );
    let key = s.state("ws1").join("plumb/key");
    assert_eq!(mode_of(&key), 0o600, "the fingerprint key is its owner's only");
}

#[test]
fn a_failed_run_and_a_refused_saved_plan_are_recorded() {
    need_lab!();
    let s = Site::new(1);
    let plan = s.plan(
        r#"
resources:
  - id: first
    file: {path: /etc/plumb-first, content: "1\n"}
  - id: boom
    command: {run: "echo no >&2; exit 3", creates: /etc/plumb-never}
    requires: [first]
"#,
    );
    let a = s.plumb("ws", &["apply", plan.to_str().unwrap(), "--yes"]);
    common::expect(&a, 1, "apply with a failing command");
    let recs = s.records("ws");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1["outcome"], "failed", "{}", recs[0].1);
    assert!(recs[0].1["finished"].is_string());
    let host = s.sh(0, "ls /var/lib/plumb/runs");
    assert!(host.contains(recs[0].1["run_id"].as_str().unwrap()), "{host}");

    // A saved plan refused because the host moved leaves a record too.
    let saved = s.dir.path().join("r.plan");
    s.sh(0, "rm /etc/plumb-first");
    common::expect(
        &s.plumb(
            "ws",
            &["diff", plan.to_str().unwrap(), "--out", saved.to_str().unwrap()],
        ),
        2,
        "diff",
    );
    s.sh(0, "echo moved > /etc/plumb-first");
    let r = s.plumb("ws", &["apply", saved.to_str().unwrap()]);
    common::expect(&r, 1, "refused");
    let recs = s.records("ws");
    let refused: Vec<_> = recs.iter().filter(|(_, r)| r["outcome"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{recs:?}");
    assert!(
        refused[0].1["refused"][0].as_str().unwrap().contains("first"),
        "{}",
        refused[0].1
    );
}

#[test]
fn an_apply_stopped_by_sigterm_is_recorded_as_interrupted() {
    need_lab!();
    let s = Site::new(1);
    let plan = s.plan(
        r#"
resources:
  - id: slow
    command: {run: "touch /tmp/plumb-slow-started; sleep 3", creates: /tmp/plumb-slow-done}
  - id: later
    file: {path: /etc/plumb-later, content: "x\n"}
    requires: [slow]
"#,
    );
    let child = s
        .command("ws", &["apply", plan.to_str().unwrap(), "--yes", "--format", "json"])
        .spawn();
    let start = std::time::Instant::now();
    while s
        .lab
        .ssh(&s.lab.nodes[0], "test -e /tmp/plumb-slow-started")
        .status
        .code()
        != Some(0)
    {
        assert!(start.elapsed().as_secs() < 30, "the slow command never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = s.records("ws");
    assert_eq!(recs.len(), 1);
    let rec = &recs[0].1;
    assert_eq!(rec["outcome"], "interrupted", "{rec}");
    let later = rec["report"]["hosts"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "later")
        .unwrap();
    assert_eq!(later["status"], "skipped", "nothing new started after SIGTERM: {rec}");
    assert!(s
        .sh(0, "ls /var/lib/plumb/runs")
        .contains(rec["run_id"].as_str().unwrap()));
}

/// SIGHUP (the terminal went away) is handled as Ctrl-C and SIGTERM are;
/// a second signal ends plumb at once (exit 130, record `aborted`), and the
/// upload it cut short leaves no temporary file on the host: the target is
/// the old file or the whole new one.
#[test]
fn a_second_signal_aborts_at_once_and_the_cut_upload_leaves_no_temp_file() {
    need_lab!();
    let s = Site::new(1);
    let node = &s.lab.nodes[0];
    let blob = s.dir.path().join("big.bin");
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, &data).unwrap();
    s.sh(0, "mkdir -p /srv/up && echo old > /srv/up/big.bin");
    let plan = s.plan(&format!(
        "resources:\n  - id: big\n    file: {{path: /srv/up/big.bin, source: {}}}\n",
        blob.display()
    ));
    let child = s
        .command(
            "ws",
            &[
                "apply",
                plan.to_str().unwrap(),
                "--yes",
                "--format",
                "json",
                "--connect-timeout",
                "2",
            ],
        )
        .spawn();
    let start = std::time::Instant::now();
    while !s.sh(0, "ls -A /srv/up").contains(".plumb") {
        assert!(start.elapsed().as_secs() < 60, "the upload never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The upload stalls: the link is cut (packets dropped, nothing closed).
    s.lab.cut(&node.name);
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = std::time::Instant::now();
    signal("-INT");
    let out = child.wait_with_output().unwrap();
    let took = second.elapsed();
    s.lab.heal(&node.name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        took.as_secs() < 5,
        "aborted at once, not after the stalled upload: {took:?}"
    );
    assert!(
        stderr.contains("interrupted: finishing the steps under way"),
        "{stderr}"
    );
    assert!(stderr.contains("aborted: "), "{stderr}");
    let recs = s.records("ws");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1["outcome"], "aborted", "{}", recs[0].1);
    // The host's script ends when its connection does, and its trap removes
    // the temporary file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = s.lab.ssh(node, "ls -A /srv/up");
        let listing = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && !listing.contains(".plumb") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a temporary file stayed: {listing}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let now = s.sh(0, "sha256sum /srv/up/big.bin");
    assert!(
        now.starts_with(&plumb_engine::module::sha256_hex(&data)) || now.starts_with(&sha("old\n")),
        "old or new, never half: {now}"
    );
}

#[test]
fn history_from_a_second_workstation_lists_the_run_from_the_host_record() {
    need_lab!();
    let s = Site::new(2);
    let plan = s.plan(&plan_with_a_secret());
    let a = s.plumb("ws1", &["apply", plan.to_str().unwrap(), "--yes", "--format", "json"]);
    common::expect(&a, 0, "apply");
    let run_id = a.json()["run_id"].as_str().unwrap().to_string();

    let h = s.plumb("ws2", &["history", plan.to_str().unwrap()]);
    common::expect(&h, 0, "history on another workstation");
    let line = h
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("the run is listed from the hosts' records:\n{}", h.stdout));
    assert!(line.contains("changed") && line.contains("4 changed"), "{line}");
    assert!(line.contains("node1") && line.contains("node2"), "both hosts: {line}");
    assert!(!s.state("ws2").join("plumb/runs").exists(), "history writes nothing");

    let j = s.plumb("ws2", &["history", "-l", "node2", "--format", "json"]);
    common::expect(&j, 0, "history -l --format json");
    let list: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(list[0]["run_id"], run_id.as_str());
    assert_eq!(list[0]["hosts"], serde_json::json!(["node2"]), "{list}");

    let one = s.plumb("ws2", &["history", &run_id]);
    common::expect(&one, 0, "history RUN");
    assert!(
        one.stdout.contains(&format!("run {run_id} (changed)")),
        "{}",
        one.stdout
    );
    assert!(one.stdout.contains("conf (file) changed"), "{}", one.stdout);
    assert!(!one.stdout.contains(SECRET));
}

#[test]
fn show_renders_a_saved_plan_and_a_record_without_connecting() {
    need_lab!();
    let s = Site::new(1);
    let plan = s.plan(&plan_with_a_secret());
    let saved = s.dir.path().join("review.plan");
    common::expect(
        &s.plumb(
            "ws",
            &["diff", plan.to_str().unwrap(), "--out", saved.to_str().unwrap()],
        ),
        2,
        "diff --out",
    );
    s.lab.cut("node1");
    let md = s.plumb("ws", &["show", saved.to_str().unwrap(), "--format", "markdown"]);
    common::expect(&md, 2, "show of a saved plan with changes pending");
    assert!(md.stdout.starts_with("# Change review"), "{}", md.stdout);
    assert!(
        md.stdout.contains("`conf`") && !md.stdout.contains(SECRET),
        "{}",
        md.stdout
    );
    s.lab.heal("node1");
    let a = s.plumb("ws", &["apply", saved.to_str().unwrap(), "--format", "json"]);
    common::expect(&a, 0, "apply");
    s.lab.cut("node1");
    let (record, _) = &s.records("ws")[0];
    let t = s.plumb("ws", &["show", record.to_str().unwrap()]);
    common::expect(&t, 0, "show of a record");
    assert!(
        t.stdout.contains("(changed)") && t.stdout.contains("token (file) changed"),
        "{}",
        t.stdout
    );
    let j = s.plumb("ws", &["show", record.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["plumb_run_record"], 1);
    let bad = s.plumb("ws", &["show", plan.to_str().unwrap()]);
    common::expect(&bad, 1, "show of a plan file");
    assert!(bad.stderr.contains("neither a saved plan"), "{}", bad.stderr);
}

#[test]
fn hosts_keep_the_backups_and_records_of_the_last_runs_only() {
    need_lab!();
    let s = Site::new(1);
    s.sh(0, "echo 0 > /etc/plumb-kept");
    let plan = s.plan("resources:\n  - id: f\n    file: {path: /etc/plumb-kept, content: \"{{ n }}\\n\"}\n");
    // Apply the plan with `n`, keeping 2 runs: its run id.
    let apply = |n: u32| {
        let vars = format!("n={n}");
        let args = [
            "apply",
            plan.to_str().unwrap(),
            "--yes",
            "--format",
            "json",
            "--keep-backups",
            "2",
            "--var",
            &vars,
        ];
        let a = s.plumb("ws", &args);
        common::expect(&a, 0, "apply");
        a.json()["run_id"].as_str().unwrap().to_string()
    };
    let runs: Vec<String> = (1..=4).map(apply).collect();
    let backups = s.sh(0, "ls /var/lib/plumb/backups");
    let records = s.sh(0, "ls /var/lib/plumb/runs");
    for old in &runs[..2] {
        assert!(!backups.contains(old.as_str()), "{old} pruned: {backups}");
        assert!(!records.contains(old.as_str()), "{old} pruned: {records}");
    }
    for kept in &runs[2..] {
        assert!(backups.contains(kept.as_str()), "{kept} kept: {backups}");
        assert!(records.contains(kept.as_str()), "{kept} kept: {records}");
    }
    // Applies that find the host converged (a drift check re-run as an
    // apply) leave it no record and prune nothing: the last changes stay
    // undoable however often the plan is re-applied.
    for _ in 0..3 {
        let id = apply(4);
        assert!(
            !s.sh(0, "ls /var/lib/plumb/runs").contains(id.as_str()),
            "no host record of {id}"
        );
        assert!(
            s.records("ws").iter().any(|(_, r)| r["run_id"] == id.as_str()),
            "the workstation records {id}"
        );
    }
    assert_eq!(s.sh(0, "ls /var/lib/plumb/backups"), backups);
    assert_eq!(s.sh(0, "ls /var/lib/plumb/runs"), records);
    // The newest run can still be rolled back.
    let d = s.plumb("ws", &["rollback", &runs[3]]);
    common::expect(&d, 2, "rollback of the newest run");
    let bad = s.plumb("ws", &["apply", plan.to_str().unwrap(), "--yes", "--keep-backups", "0"]);
    common::expect(&bad, 1, "--keep-backups 0");
    assert!(bad.stderr.contains("--keep-backups"), "{}", bad.stderr);
}
