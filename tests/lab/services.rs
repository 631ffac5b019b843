//! `service` and `package` against real systemd and real apt: tier-1b lab
//! nodes (systemd as PID 1, see tests/lab/README.md) driven by the plumb
//! binary over SSH, and plain tier-1 nodes (sshd as PID 1, no systemd) for
//! the hosts these modules must refuse.

use crate::common;
use crate::support::debs;
use crate::support::lab;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{Outcome, Plumb};
use lab::{Lab, Node};

/// One lab node and a scratch folder with an inventory naming it.
struct Host {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Host {
    fn new(lab: Lab) -> Self {
        let dir = tempfile::Builder::new().prefix("plumb-svc-").tempdir().unwrap();
        lab.inventory(dir.path(), "    user: root\n");
        Self { lab, dir }
    }

    fn node(&self) -> &Node {
        &self.lab.nodes[0]
    }

    fn plan(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("plan.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `plumb CMD plan.yaml` against the node, JSON output.
    fn plumb(&self, cmd: &str, vars: &[&str]) -> Outcome {
        let (plan, inv) = (
            self.dir.path().join("plan.yaml"),
            self.dir.path().join("inventory.yaml"),
        );
        Plumb::over_ssh(cmd, &plan, &inv, &self.lab.ssh_config(), "json")
            .vars(vars)
            .run()
    }

    /// A command on the node; panics if it fails.
    fn sh(&self, cmd: &str) -> String {
        let o = self.lab.ssh(self.node(), cmd);
        assert!(
            o.status.success(),
            "`{cmd}` on the node: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn ssh_stdin(&self, cmd: &str, input: Option<&[u8]>) -> Output {
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(self.lab.ssh_config())
            .arg(format!("root@{}", self.node().ip))
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

fn resource<'a>(o: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    o["hosts"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no resource `{id}` in {o}"))
}

const DEMO: &str = r#"
plan: services
resources:
  - id: unit
    file:
      path: /etc/systemd/system/plumb-demo.service
      content: |
        [Unit]
        Description=plumb demo {{ d | default(1) }}
        [Service]
        ExecStartPre=/bin/sh -c 'echo started >> /var/log/plumb-demo.starts'
        ExecStart=/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target
    notify: [demo]
  - id: conf-a
    file: {path: /etc/plumb-demo-a.conf, content: "a={{ a | default(1) }}\n"}
    notify: [demo]
  - id: conf-b
    file: {path: /etc/plumb-demo-b.conf, content: "b={{ b | default(1) }}\n"}
    notify: [demo]
  - id: demo
    service: {name: plumb-demo, state: running, enabled: true}
    requires: [unit]
"#;

#[test]
fn a_unit_is_started_enabled_and_restarted_once_after_all_its_notifiers() {
    if !Lab::available() {
        return;
    }
    let h = Host::new(Lab::up_systemd(1));
    assert_eq!(h.sh("systemctl is-system-running --wait || true"), "running");
    h.plan(DEMO);
    let starts = || {
        h.sh("cat /var/log/plumb-demo.starts 2>/dev/null | wc -l")
            .parse::<u32>()
            .unwrap()
    };

    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let demo = resource(&d.json(), "demo").to_string();
    assert!(
        demo.contains("known after `unit`"),
        "the unit does not exist yet: {demo}"
    );

    let a = h.plumb("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(resource(&a.json(), "demo")["status"], "changed");
    assert_eq!(h.sh("systemctl is-active plumb-demo"), "active");
    assert_eq!(h.sh("systemctl is-enabled plumb-demo"), "enabled");
    assert_eq!(
        starts(),
        1,
        "started once: a unit this run starts is not restarted on top"
    );

    let again = h.plumb("apply", &[]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    assert_eq!(
        again.json()["hosts"][0]["remote_executions"],
        1,
        "a converged host costs one round trip"
    );
    assert_eq!(starts(), 1, "nothing changed: no restart");
    assert_eq!(h.plumb("diff", &[]).code, 0);

    // Two notifiers change: the diff says so, apply restarts once, after both.
    let d = h.plumb("diff", &["a=2", "b=2"]);
    assert_eq!(d.code, 2);
    let demo = resource(&d.json(), "demo").clone();
    assert_eq!(demo["risk"], "restart");
    let refresh = demo["changes"][0]["to"].as_str().unwrap_or_default().to_string();
    assert_eq!(refresh, "restart plumb-demo.service (notified by `conf-a`, `conf-b`)");
    // The restart is downtime: expected as a restart, then measured.
    let expected = &demo["downtime"][0];
    assert_eq!(expected["unit"], "plumb-demo.service", "{demo}");
    assert_eq!(expected["kind"], "restart", "{demo}");
    assert!(
        expected["expected"].as_str().unwrap().starts_with("a restart"),
        "{demo}"
    );
    assert!(expected.get("actual_secs").is_none(), "nothing measured in a diff");
    let a = h.plumb("apply", &["a=2", "b=2"]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    assert_eq!(starts(), 2, "restarted exactly once for two notifiers");
    let down = resource(&a.json(), "demo")["downtime"][0].clone();
    assert_eq!(down["unit"], "plumb-demo.service", "{down}");
    let secs = down["actual_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("measured: {down}"));
    assert!((0.0..60.0).contains(&secs), "{down}");
    assert_eq!(h.plumb("apply", &["a=2", "b=2"]).summary("changed"), 0);
    assert_eq!(starts(), 2);

    // A changed unit file: daemon-reload, then the notified restart.
    let a = h.plumb("apply", &["a=2", "b=2", "d=2"]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    let fields: Vec<String> = resource(&a.json(), "demo")["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["daemon-reload", "refresh"]);
    assert_eq!(h.sh("systemctl show -p Description --value plumb-demo"), "plumb demo 2");
    assert_eq!(h.sh("systemctl show -p NeedDaemonReload --value plumb-demo"), "no");
    assert_eq!(starts(), 3);

    // Stopped and disabled by hand: drift, converged again.
    h.sh("systemctl disable --now plumb-demo 2>/dev/null");
    let d = h.plumb("diff", &["a=2", "b=2", "d=2"]);
    assert_eq!(d.code, 2, "a stopped unit is drift: {}", d.stdout);
    assert_eq!(h.plumb("apply", &["a=2", "b=2", "d=2"]).code, 0);
    assert_eq!(h.sh("systemctl is-active plumb-demo"), "active");
    assert_eq!(h.sh("systemctl is-enabled plumb-demo"), "enabled");
    assert_eq!(starts(), 4);

    // state: stopped; a notify does not start it again.
    h.plan(&DEMO.replace("state: running, enabled: true", "state: stopped, enabled: false"));
    let d = h.plumb("diff", &["a=3", "b=2", "d=2"]);
    assert_eq!(resource(&d.json(), "demo")["risk"], "disruptive", "{}", d.stdout);
    let a = h.plumb("apply", &["a=3", "b=2", "d=2"]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    assert!(!a.stdout.contains("restart plumb-demo"), "{}", a.stdout);
    assert_eq!(
        h.lab.ssh(h.node(), "systemctl is-active plumb-demo").stdout,
        b"inactive\n"
    );
    assert_eq!(h.sh("systemctl is-enabled plumb-demo || true"), "disabled");
    assert_eq!(starts(), 4);
}

#[test]
fn a_unit_that_fails_to_start_fails_with_its_journal() {
    if !Lab::available() {
        return;
    }
    let h = Host::new(Lab::up_systemd(1));
    h.plan(
        r#"
resources:
  - id: unit
    file:
      path: /etc/systemd/system/plumb-bad.service
      content: |
        [Service]
        Type=oneshot
        ExecStart=/bin/sh -c 'echo the-bad-unit-says-no >&2; exit 3'
  - id: bad
    service: {name: plumb-bad, state: running}
    requires: [unit]
  - id: after-bad
    file: {path: /etc/plumb-after-bad, content: "x"}
    requires: [bad]
  - id: missing
    service: {name: plumb-no-such-unit, state: running}
"#,
    );
    let a = h.plumb("apply", &[]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    let j = a.json();
    let bad = resource(&j, "bad");
    assert_eq!(bad["status"], "failed");
    let err = bad["error"].as_str().unwrap();
    assert!(err.contains("start plumb-bad.service"), "{err}");
    assert!(
        err.contains("the-bad-unit-says-no"),
        "the journal's tail is in the error: {err}"
    );
    assert_eq!(resource(&j, "after-bad")["status"], "skipped");
    let missing = resource(&j, "missing")["error"].as_str().unwrap().to_string();
    assert!(missing.contains("`plumb-no-such-unit.service` not found"), "{missing}");
    assert!(h.lab.ssh(h.node(), "test -e /etc/plumb-after-bad").status.code() == Some(1));
}

#[test]
fn a_package_is_installed_with_one_apt_get_and_removed_with_its_dependents() {
    if !Lab::available() {
        return;
    }
    let h = Host::new(Lab::up_systemd(1));
    let repo = debs::Repo::build(
        h.dir.path(),
        &[
            debs::Deb::new("plumb-hello", "1.0-1"),
            debs::Deb::new("plumb-hello-extra", "2.0").depends("plumb-hello"),
        ],
    );
    repo.install_on(|cmd, input| h.ssh_stdin(cmd, input));
    let installed = |name: &str| {
        h.lab
            .ssh(h.node(), &format!("dpkg-query -W -f='${{db:Status-Status}}' {name}"))
            .stdout
            == b"installed"
    };

    // apt's lists do not know the packages yet: refused, with the way out.
    h.plan("resources:\n  - id: hello\n    package: {name: [plumb-hello, plumb-hello-extra]}\n");
    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    let err = resource(&d.json(), "hello")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("no installation candidate for `plumb-hello`, `plumb-hello-extra`")
            && err.contains("update_cache"),
        "{err}"
    );

    h.plan("resources:\n  - id: hello\n    package: {name: [plumb-hello, plumb-hello-extra], update_cache: true}\n");
    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 2, "{}", d.stdout);
    let a = h.plumb("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(installed("plumb-hello") && installed("plumb-hello-extra"));
    assert_eq!(
        a.json()["hosts"][0]["remote_executions"],
        3,
        "probe, ONE apt-get step for both packages, verify: {}",
        a.stdout
    );
    let again = h.plumb("apply", &[]);
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    assert_eq!(
        again.json()["hosts"][0]["remote_executions"],
        1,
        "no apt-get update when nothing is missing"
    );

    // The plan now has the apt lists: a name apt has never heard of is refused.
    h.plan("resources:\n  - id: typo\n    package: {name: plumb-helo}\n");
    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 1);
    assert!(d.stdout.contains("`plumb-helo`"), "{}", d.stdout);

    // Removing plumb-hello takes its dependent with it: the diff says so.
    h.plan("resources:\n  - id: hello\n    package: {name: plumb-hello, state: absent}\n");
    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let r = resource(&d.json(), "hello").clone();
    assert_eq!(r["risk"], "disruptive");
    assert_eq!(r["changes"][0]["field"], "plumb-hello");
    assert_eq!(r["changes"][0]["from"], "1.0-1");
    assert_eq!(r["changes"][1]["from"], "plumb-hello-extra", "{r}");
    let a = h.plumb("apply", &[]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    assert!(!installed("plumb-hello") && !installed("plumb-hello-extra"));
    assert_eq!(h.plumb("diff", &[]).code, 0);

    // A run that installs them, rolled back: packages stay unless asked;
    // `--remove-packages` reviews their removal (disruptive) and does it.
    h.plan("resources:\n  - id: hello\n    package: {name: [plumb-hello, plumb-hello-extra]}\n");
    let a = h.plumb("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(installed("plumb-hello") && installed("plumb-hello-extra"));
    let run = a.json()["run_id"].as_str().unwrap().to_string();
    let inv = h.dir.path().join("inventory.yaml");
    let rollback = |extra: &[&str]| {
        Plumb::new()
            .args(["rollback", &run, "--format", "json", "-i"])
            .arg(&inv)
            .arg("--ssh-config")
            .arg(h.lab.ssh_config())
            .args(extra)
            .run()
    };
    let plain = rollback(&[]);
    assert_eq!(plain.code, 0, "nothing else to undo: {}", plain.stdout);
    assert!(
        plain.json()["cannot_undo"].to_string().contains("--remove-packages"),
        "{}",
        plain.stdout
    );
    let saved = h.dir.path().join("rollback.plan");
    let review = rollback(&["--remove-packages", "--out", saved.to_str().unwrap()]);
    assert_eq!(review.code, 2, "{}{}", review.stdout, review.stderr);
    let r = resource(&review.json(), "remove packages of hello").clone();
    assert_eq!(r["risk"], "disruptive", "{r}");
    let fields: Vec<&str> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["plumb-hello", "plumb-hello-extra"], "{r}");
    assert!(installed("plumb-hello"), "a review removes nothing");
    let applied = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .args(["--yes", "--format", "json", "--ssh-config"])
        .arg(h.lab.ssh_config())
        .run();
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    assert!(!installed("plumb-hello") && !installed("plumb-hello-extra"));
}

#[test]
fn hosts_without_systemd_or_apt_are_refused_clearly() {
    if !Lab::available() {
        return;
    }
    // A tier-1 node: sshd is PID 1, the root has apt but no systemd.
    let h = Host::new(Lab::up(1));
    h.plan(
        "resources:\n  - id: svc\n    service: {name: ssh, state: running}\n  - id: pkg\n    package: {name: coreutils}\n",
    );
    let d = h.plumb("diff", &[]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    let j = d.json();
    let svc = resource(&j, "svc")["error"].as_str().unwrap().to_string();
    assert!(svc.contains("systemd"), "{svc}");
    assert_eq!(
        resource(&j, "pkg")["status"],
        "ok",
        "coreutils is installed: {}",
        d.stdout
    );

    // The same host with apt taken away.
    h.sh("rm -f /usr/bin/apt-get /usr/bin/dpkg-query");
    let d = h.plumb("diff", &[]);
    let pkg = resource(&d.json(), "pkg")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(pkg.contains("no supported package manager"), "{pkg}");
}
