//! Owners and groups: `diff` says when one does not exist (looked up in the
//! same batched probe), instead of promising a `chown` that `apply` cannot
//! make; a failed resource reports what its steps did before failing.

use crate::common;
use crate::support::lab;

use common::{expect, resource, Plumb, Scratch};
use lab::Lab;

const NO_USER: &str = "plumb-no-such-user";
const NO_GROUP: &str = "plumb-no-such-group";

fn exists(db: &str, name: &str) -> bool {
    std::process::Command::new("getent")
        .args([db, name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_missing_owner_fails_the_diff_and_the_apply_changes_nothing() {
    assert!(!exists("passwd", NO_USER) && !exists("group", NO_GROUP));
    let s = Scratch::new();
    s.plan(&format!(
        r#"
resources:
  - id: base
    directory: {{path: "{{{{ root }}}}", mode: "0755"}}
  - id: d
    directory: {{path: "{{{{ root }}}}/d", owner: {NO_USER}}}
  - id: f
    file: {{path: "{{{{ root }}}}/f", content: "x\n", group: {NO_GROUP}}}
  - id: both
    file: {{path: "{{{{ root }}}}/both", content: "x\n", owner: root, group: {NO_GROUP}}}
"#
    ));
    let d = s.run("diff", &[]);
    expect(&d, 1, "the diff sees the failure");
    let err = |o: &common::Outcome, id: &str| resource(o, id)["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(resource(&d, "d")["status"], "failed");
    assert!(
        err(&d, "d").starts_with(&format!("user `{NO_USER}` does not exist on the host")),
        "{}",
        err(&d, "d")
    );
    assert!(
        err(&d, "f").starts_with(&format!("group `{NO_GROUP}` does not exist")),
        "{}",
        err(&d, "f")
    );
    assert!(!err(&d, "both").contains("user `root`"), "{}", err(&d, "both"));
    assert_eq!(resource(&d, "base")["status"], "pending", "the others are still shown");
    assert_eq!(d.json()["hosts"][0]["remote_executions"], 1, "no extra round trip");
    let text = Plumb::new()
        .arg("diff")
        .arg(s.path().join("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .run();
    assert!(
        text.stdout.contains(&format!("user `{NO_USER}` does not exist")),
        "{}",
        text.stdout
    );

    let a = s.run("apply", &[]);
    expect(&a, 1, "the apply fails");
    assert_eq!(resource(&a, "d")["status"], "failed");
    assert!(err(&a, "d").contains("nothing was changed"), "{}", err(&a, "d"));
    assert!(s.root().is_dir(), "base is independent and applied");
    assert!(!s.root().join("d").exists(), "no directory left half-made");
    assert!(!s.root().join("f").exists());
}

/// A user made by a command earlier in the plan: `diff` cannot know it yet
/// and says so; `apply` looks again once the command ran, in the same
/// round trip that verifies it.
#[test]
fn an_owner_made_by_a_pending_resource_is_unknown_until_apply() {
    need_lab!();
    let lab = Lab::up(1);
    let (_dir, plan, inv) = lab.job(
        r#"
resources:
  - id: app-user
    command: {run: "useradd --system plumbapp", unless: "getent passwd plumbapp"}
  - id: app-dir
    directory: {path: /srv/app, owner: plumbapp, mode: "0750"}
"#,
        "",
    );
    let run = |cmd: &str| Plumb::over_ssh(cmd, &plan, &inv, &lab.ssh_config(), "json").run();
    let d = run("diff");
    expect(&d, 2, "pending, not failed");
    let r = resource(&d, "app-dir");
    assert_eq!(r["status"], "pending", "{r}");
    let note = r["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.starts_with("unknown until apply: user `plumbapp` does not exist on the host yet")
            && note.contains("`app-user`"),
        "{r}"
    );
    let a = run("apply");
    expect(&a, 0, "the user exists once the command ran");
    assert_eq!(resource(&a, "app-dir")["status"], "changed");
    let out = lab.ssh(&lab.nodes[0], "stat -c '%U %a' /srv/app");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plumbapp 750\n");
    // Probe; the command; one round trip that verifies it and looks again
    // at the directory; the directory; its verification.
    assert_eq!(a.json()["hosts"][0]["remote_executions"], 5, "{}", a.stdout);
    expect(&run("diff"), 0, "converged");
}

/// Connected as a user without sudo: the directory is created, then the
/// `chown` to root is refused. The report says what was done.
#[test]
fn a_failed_resource_reports_the_steps_it_completed() {
    need_lab!();
    let lab = Lab::up(1);
    let (_dir, plan, inv) = lab.job(
        "resources:\n  - id: d\n    directory: {path: /tmp/plumb-half, mode: \"0700\", owner: root}\n",
        "    user: nosudo\n",
    );
    let run = |format: &str| Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), format).run();
    let a = run("json");
    expect(&a, 1, "chown is refused");
    let r = resource(&a, "d");
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(
        r["completed"],
        serde_json::json!(["created /tmp/plumb-half", "mode of /tmp/plumb-half set to 0700"]),
        "{r}"
    );
    assert!(r["error"].as_str().unwrap().contains("chown"), "{r}");
    lab.ssh(&lab.nodes[0], "rm -rf /tmp/plumb-half");
    let t = run("text");
    assert!(
        t.stdout
            .contains("completed before it failed:\n        - created /tmp/plumb-half\n"),
        "{}",
        t.stdout
    );
    lab.ssh(&lab.nodes[0], "rm -rf /tmp/plumb-half");
    let m = run("markdown");
    assert!(
        m.stdout
            .contains("Completed before it failed:\n\n- `created /tmp/plumb-half`\n"),
        "{}",
        m.stdout
    );
}
