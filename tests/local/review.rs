//! What a reviewer reads: checks (`assert`) listed apart from changes and
//! never counted as changes, sensitive resources that keep their metadata
//! visible and their secret hidden, in every format. Also how a command
//! runs only when notified, and how templates treat block tags.

use crate::common;

use std::fs;

use common::{expect, resource, Plumb, Scratch};

/// `plumb CMD plan.yaml --var root=… --format FORMAT` in `s`.
fn run_as(s: &Scratch, cmd: &str, format: &str) -> common::Outcome {
    Plumb::new()
        .arg(cmd)
        .arg(s.path().join("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .args(["--format", format])
        .run()
}

const CHECKED_PLAN: &str = r#"
plan: checked
resources:
  - id: conf
    file: {path: "{{ root }}/conf", content: "x\n"}
  - id: go-after
    assert: {that: ["1 + 1 == 2"], message: checked once the file is there}
    requires: [conf]
  - id: go-now
    assert: {that: ["2 > 1"]}
"#;

#[test]
fn checks_are_not_counted_as_changes() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    s.plan(CHECKED_PLAN);
    let d = s.run("diff", &[]);
    expect(&d, 2, "the file is pending");
    let j = d.json();
    assert_eq!(j["summary"]["pending"], 1, "only the file is a change:\n{}", d.stdout);
    assert_eq!(
        j["summary"]["ok"], 0,
        "a passed check is not a converged resource:\n{}",
        d.stdout
    );
    assert_eq!(j["summary"]["checks"]["passed"], 1);
    assert_eq!(j["summary"]["checks"]["pending"], 1);
    let later = resource(&d, "go-after");
    assert_eq!(later["check"], true);
    assert_eq!(later["status"], "pending");
    assert_eq!(later["changes"].as_array().unwrap().len(), 0, "a check changes nothing");
    assert!(later["risk"].is_null());
    assert_eq!(resource(&d, "go-now")["status"], "ok");

    let text = run_as(&s, "diff", "text");
    assert!(
        text.stdout
            .contains("summary: 1 host: 1 pending, 0 ok, 0 failed, 0 skipped; checks: 1 passed, 1 checked after apply"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("known after"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("checks:\n    ? go-after checked once `conf` is applied\n    ✓ go-now passed"),
        "{}",
        text.stdout
    );

    let md = run_as(&s, "diff", "markdown");
    assert!(
        md.stdout
            .contains("| `localhost` | changes pending | 1 | 0 | 0 | 0 | 0 | 0 | 1 passed, 1 checked after apply |"),
        "the safe column counts the file alone:\n{}",
        md.stdout
    );
    assert!(!md.stdout.contains("### `go-after`"), "{}", md.stdout);
    assert!(md.stdout.contains("### GO criteria\n\n| check | criterion | at review |\n|---|---|---|\n| `go-after` | checked once the file is there | checked once `conf` is applied |\n| `go-now` | 2 > 1 | passed |"), "{}", md.stdout);

    let a = s.run("apply", &[]);
    expect(&a, 0, "apply converges and the checks hold");
    assert_eq!(a.json()["summary"]["changed"], 1);
    assert_eq!(a.json()["summary"]["checks"]["passed"], 2);
    let d = s.run("diff", &[]);
    expect(&d, 0, "nothing but checks left: converged");
    assert_eq!(d.json()["summary"]["ok"], 1);
    assert_eq!(d.json()["summary"]["checks"]["passed"], 2);
}

#[test]
fn a_check_skipped_by_when_still_shows_its_criterion_and_its_condition() {
    let s = Scratch::new();
    s.plan(
        r#"
plan: skipped
vars: {has_k3s: false, pods: 3}
resources:
  - id: go-pods
    when: "{{ has_k3s }}"
    assert: {that: ["{{ pods }} > 0"], message: "every one of the {{ pods }} pods is Running"}
  - id: go-secret
    when: false
    sensitive: true
    assert: {that: ["1 == 1"], message: hidden words}
"#,
    );
    let md = run_as(&s, "diff", "markdown");
    assert!(
        md.stdout
            .contains("| `go-pods` | every one of the 3 pods is Running | skipped: `when` is false: `{{ has_k3s }}` |"),
        "the meeting sees what the skipped check verifies and why it is skipped:\n{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("| `go-secret` | — | skipped: `when` is false |"),
        "{}",
        md.stdout
    );
    assert!(!md.stdout.contains("hidden words"), "{}", md.stdout);
}

#[test]
fn a_failing_check_fails_diff_as_a_failure_not_a_change() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: go-false
    assert: {that: ["1 > 2"], message: one is not more than two}
"#,
    );
    let d = s.run("diff", &[]);
    expect(&d, 1, "a failing check fails the run");
    let j = d.json();
    assert_eq!(j["summary"]["checks"]["failed"], 1);
    assert_eq!(
        j["summary"]["failed"], 0,
        "failures of changes and of checks are counted apart"
    );
    assert_eq!(j["summary"]["pending"], 0);
    let text = run_as(&s, "diff", "text");
    assert!(text.stdout.contains("✗ go-false FAILED"), "{}", text.stdout);
    assert!(text.stdout.contains("one is not more than two"), "{}", text.stdout);
    let md = run_as(&s, "diff", "markdown");
    assert!(
        md.stdout.contains(
            "| `go-false` | one is not more than two | **failed**: assertion failed: one is not more than two"
        ),
        "{}",
        md.stdout
    );
}

const SECRET_PLAN: &str = r#"
resources:
  - id: secret
    sensitive: true
    file:
      path: "{{ root }}/secret"
      content: "token={{ env('PLUMB_TEST_SECRET') }}\n"
      mode: "0600"
"#;

#[test]
fn a_sensitive_file_shows_its_metadata_and_hides_its_secret() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    s.plan(SECRET_PLAN);
    let run = |cmd: &str, format: &str| {
        let mut p = Plumb::new()
            .arg(cmd)
            .arg(s.path().join("plan.yaml"))
            .arg("--var")
            .arg(format!("root={}", s.root().display()))
            .args(["--format", format])
            .env("PLUMB_TEST_SECRET", "s3cr3t-value");
        if cmd == "apply" {
            p = p.arg("--yes");
        }
        p.run()
    };
    // Creation: the state and the mode are visible, the content is not.
    let d = run("diff", "json");
    let r = resource(&d, "secret");
    let change = |field: &str| {
        r["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == field)
            .cloned()
            .unwrap_or_else(|| panic!("no `{field}` change in {r}"))
    };
    assert_eq!(change("state")["from"], "absent");
    assert_eq!(change("state")["to"], "file");
    assert_eq!(change("mode")["to"], "0600");
    assert_eq!(change("content")["to"], "(sensitive)");
    assert!(r["diff"].is_null());
    let text = run("diff", "text");
    assert!(text.stdout.contains("state: absent → file"), "{}", text.stdout);
    assert!(text.stdout.contains("mode: (none) → 0600"), "{}", text.stdout);
    assert!(text.stdout.contains("content: (none) → (sensitive)"), "{}", text.stdout);
    let md = run("diff", "markdown");
    assert!(md.stdout.contains("`state: absent → file`"), "{}", md.stdout);
    assert!(md.stdout.contains("`mode: (none) → 0600`"), "{}", md.stdout);
    expect(&run("apply", "json"), 0, "apply");
    // A `chmod 0644` by hand: the reviewer sees the mode, nothing else changes.
    fs::set_permissions(
        s.root().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let text = run("diff", "text");
    assert!(text.stdout.contains("mode: 0644 → 0600"), "{}", text.stdout);
    assert!(
        !text.stdout.contains("(sensitive)"),
        "only the mode changed:\n{}",
        text.stdout
    );
    let md = run("diff", "markdown");
    assert!(md.stdout.contains("`mode: 0644 → 0600`"), "{}", md.stdout);
    let j = run("diff", "json");
    assert_eq!(resource(&j, "secret")["changes"][0]["from"], "0644");
}

#[test]
fn a_command_with_refresh_only_runs_only_when_notified() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: conf
    file: {path: "{{ root }}/app.conf", content: "{{ level }}\n"}
    notify: [reload]
  - id: reload
    command:
      run: echo reloaded >> "{{ root }}/reloads"
      refresh_only: true
      risk: restart
"#,
    );
    fs::create_dir_all(s.root()).unwrap();
    let reloads = || {
        fs::read_to_string(s.root().join("reloads"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let d = s.run("diff", &["--var", "level=1"]);
    expect(&d, 2, "the file is pending, and so is the reload it notifies");
    assert!(
        resource(&d, "reload")["changes"][0]["to"]
            .as_str()
            .unwrap()
            .contains("notified by `conf`"),
        "{}",
        d.stdout
    );
    expect(&s.run("apply", &["--var", "level=1"]), 0, "first apply");
    assert_eq!(reloads(), 1, "notified once: ran once");
    let again = s.run("apply", &["--var", "level=1"]);
    expect(&again, 0, "second apply");
    assert_eq!(again.status_of("reload"), "ok");
    assert_eq!(reloads(), 1, "not notified: did not run");
    expect(&s.run("diff", &["--var", "level=1"]), 0, "a handler alone is converged");
    expect(&s.run("apply", &["--var", "level=2"]), 0, "the file changes");
    assert_eq!(reloads(), 2, "notified again: ran again");
}

#[test]
fn block_tags_leave_no_blank_lines_as_in_ansible() {
    let s = Scratch::new();
    s.write(
        "upstreams.j2",
        "upstreams:\n{% for u in upstreams %}\n  - {{ u }}\n{% endfor %}\nend\n",
    );
    s.plan(
        r#"
vars: {upstreams: [a, b]}
resources:
  - id: conf
    file: {path: "{{ root }}/upstreams", template: upstreams.j2}
"#,
    );
    fs::create_dir_all(s.root()).unwrap();
    expect(&s.run("apply", &[]), 0, "apply");
    assert_eq!(
        fs::read_to_string(s.root().join("upstreams")).unwrap(),
        "upstreams:\n  - a\n  - b\nend\n"
    );
}

#[test]
fn the_review_shows_the_go_criteria_before_and_after_the_change_and_how_each_change_is_undone() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("old"), "old\n").unwrap();
    s.plan(
        r#"
resources:
  - id: conf
    file: {path: "{{ root }}/conf", content: "x\n"}
  - id: old
    file: {path: "{{ root }}/old", content: "new\n"}
  - id: go-conf
    assert: {command: "test -e '{{ root }}/conf'", message: the configuration is in place}
    requires: [conf]
  - id: go-now
    assert: {command: "test -e '{{ root }}/old'"}
"#,
    );
    let saved = s.path().join("review.plan");
    let md = Plumb::new()
        .arg("diff")
        .arg(s.path().join("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .args(["--format", "markdown", "--out"])
        .arg(&saved)
        .run();
    expect(&md, 2, "review");
    let doc = &md.stdout;
    assert!(
        doc.contains("| `go-conf` | the configuration is in place | checked once `conf` is applied |"),
        "{doc}"
    );
    assert!(
        doc.contains(&format!(
            "| `go-now` | `test -e '{}/old'` exits with 0 | passed |",
            s.root().display()
        )),
        "{doc}"
    );
    assert!(
        doc.contains(&format!(
            "Saved as `{0}`: `plumb apply {0}` applies exactly this review",
            saved.display()
        )),
        "{doc}"
    );
    assert!(doc.contains("Plan sha256: `"), "{doc}");
    let conf = &doc[doc.find("### `conf`").unwrap()..];
    assert!(
        conf.contains("_How it is undone:_ `plumb rollback RUN` removes it, while it still holds what this run wrote"),
        "{conf}"
    );
    let old = &doc[doc.find("### `old`").unwrap()..];
    assert!(
        old.contains("_How it is undone:_ `plumb rollback RUN` restores the old file from the backup"),
        "{old}"
    );

    let a = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .args(["--format", "markdown"])
        .run();
    expect(&a, 0, "apply of the reviewed plan");
    assert!(
        a.stdout
            .contains("| check | criterion | at review | after the change |"),
        "{}",
        a.stdout
    );
    assert!(
        a.stdout
            .contains("| `go-conf` | the configuration is in place | checked once `conf` is applied | passed |"),
        "checked after the change at review, passed after it:\n{}",
        a.stdout
    );
}
