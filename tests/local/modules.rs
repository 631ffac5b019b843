//! Each module's whole lifecycle on the local host, on real files: diff on a
//! fresh root shows the change and exits 2, apply converges, a second apply
//! changes nothing, diff exits 0, and a hand edit is drift again.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{resource, Scratch};

/// Every path under `dir` with its mode and content (a symlink's target).
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, (u32, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
            } else {
                fs::read(&p).unwrap()
            };
            out.insert(p, (m.permissions().mode(), body));
        }
    }
    out
}

/// The lifecycle every module must follow; `edit` makes drift by hand.
fn lifecycle(s: &Scratch, plan: &str, edit: impl FnOnce(&Scratch)) {
    s.plan(plan);
    let before = tree(s.path());
    let d = s.run("diff", &[]);
    assert_eq!(
        d.code, 2,
        "diff on a fresh root: changes pending\n{}{}",
        d.stdout, d.stderr
    );
    assert!(d.summary("pending") > 0);
    assert_eq!(tree(s.path()), before, "diff writes nothing");
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "apply converges\n{}{}", a.stdout, a.stderr);
    assert!(a.summary("changed") > 0);
    let again = s.run("apply", &[]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert_eq!(
        again.summary("changed"),
        0,
        "re-apply changes nothing\n{}",
        again.stdout
    );
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 0, "diff after apply: converged\n{}", d.stdout);
    edit(s);
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "a hand edit is drift\n{}", d.stdout);
}

#[test]
fn file_lifecycle() {
    let s = Scratch::new();
    lifecycle(
        &s,
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: motd
    file:
      path: "{{ root }}/motd"
      content: "hello\n"
      mode: "0640"
"#,
        |s| fs::write(s.root().join("motd"), "edited\n").unwrap(),
    );
    let d = s.run("diff", &[]);
    let diff = d.json()["hosts"][0]["resources"][1]["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(diff.contains("-edited") && diff.contains("+hello"), "{diff}");
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0);
    assert_eq!(fs::read_to_string(s.root().join("motd")).unwrap(), "hello\n");
    let notes = a.json()["hosts"][0]["resources"][1]["notes"].to_string();
    assert!(notes.contains("backup of the old file"), "{notes}");
}

/// YAML 1.1 reads an unquoted `0640` as a number; where a string is
/// expected plumb takes it as written, as the guide says.
#[test]
fn an_unquoted_mode_means_what_it_looks_like() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: root\n    directory: {path: \"{{ root }}\"}\n  - id: f\n    file: {path: \"{{ root }}/f\", content: \"x\", mode: 0640}\n");
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let mode = fs::metadata(s.root().join("f")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
}

#[test]
fn file_metadata_drift_is_detected_and_fixed() {
    let s = Scratch::new();
    lifecycle(
        &s,
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file: {path: "{{ root }}/f", content: "x", mode: "0600"}
"#,
        |s| fs::set_permissions(s.root().join("f"), fs::Permissions::from_mode(0o644)).unwrap(),
    );
    let d = s.run("diff", &[]);
    let c = &d.json()["hosts"][0]["resources"][1]["changes"][0];
    assert_eq!(c["field"], "mode");
    assert_eq!(c["from"], "0644");
    assert_eq!(c["to"], "0600");
    assert_eq!(s.run("apply", &[]).code, 0);
    assert_eq!(
        fs::metadata(s.root().join("f")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}

#[test]
fn file_from_source_and_template() {
    let s = Scratch::new();
    s.write("files/blob.bin", "\u{0}\u{1}binary\u{2}");
    s.write("templates/app.conf.j2", "name = {{ name }}\nroot = {{ root }}\n");
    lifecycle(
        &s,
        r#"
vars: {name: demo}
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: blob
    file: {path: "{{ root }}/blob.bin", source: files/blob.bin}
  - id: conf
    file: {path: "{{ root }}/app.conf", template: templates/app.conf.j2}
"#,
        |s| fs::write(s.root().join("blob.bin"), "other").unwrap(),
    );
    let conf = fs::read_to_string(s.root().join("app.conf")).unwrap();
    assert_eq!(conf, format!("name = demo\nroot = {}\n", s.root().display()));
}

#[test]
fn file_absent_removes_and_backs_up() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("old"), "precious").unwrap();
    s.plan("resources:\n  - id: gone\n    file: {path: \"{{ root }}/old\", state: absent}\n");
    assert_eq!(s.run("diff", &[]).code, 2);
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    assert!(!s.root().join("old").exists());
    let notes = a.json()["hosts"][0]["resources"][0]["notes"][0]
        .as_str()
        .unwrap()
        .to_string();
    let backup = notes.split(": ").nth(1).unwrap();
    assert_eq!(fs::read_to_string(backup).unwrap(), "precious");
    assert_eq!(s.run("diff", &[]).code, 0);
}

#[test]
fn directory_lifecycle() {
    let s = Scratch::new();
    lifecycle(
        &s,
        r#"
resources:
  - id: a
    directory: {path: "{{ root }}/a/b/c", mode: "0750"}
"#,
        |s| fs::set_permissions(s.root().join("a/b/c"), fs::Permissions::from_mode(0o755)).unwrap(),
    );
}

#[test]
fn directory_absent_needs_recursive_for_contents() {
    let s = Scratch::new();
    fs::create_dir_all(s.root().join("d/sub")).unwrap();
    fs::write(s.root().join("d/sub/f"), "x").unwrap();
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}/d\", state: absent}\n");
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    assert!(d.stdout.contains("recursive: true"), "{}", d.stdout);
    let failure = &d.json()["hosts"][0]["resources"][0]["failure"];
    assert_eq!(
        failure["hint"], "set `recursive: true` to remove it with its contents",
        "{failure}"
    );
    assert!(
        failure["what"].as_str().unwrap().ends_with("is not empty (1 entry)"),
        "{failure}"
    );
    assert!(s.root().join("d/sub/f").exists());
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}/d\", state: absent, recursive: true}\n");
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2);
    assert_eq!(d.json()["hosts"][0]["resources"][0]["risk"], "destructive");
    assert_eq!(s.run("apply", &[]).code, 0);
    assert!(!s.root().join("d").exists());
    assert_eq!(s.run("diff", &[]).code, 0);
}

#[test]
fn command_lifecycle() {
    let s = Scratch::new();
    lifecycle(
        &s,
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: init
    command:
      run: "echo ran >> '{{ root }}/log'; touch '{{ root }}/done'"
      creates: "{{ root }}/done"
"#,
        |s| fs::remove_file(s.root().join("done")).unwrap(),
    );
    assert_eq!(
        fs::read_to_string(s.root().join("log")).unwrap(),
        "ran\n",
        "ran exactly once"
    );
}

#[test]
fn a_command_whose_guard_stays_false_does_not_verify() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: c\n    command: {run: \"true\", unless: \"false\"}\n");
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert_eq!(a.status_of("c"), "failed");
    assert!(a.stdout.contains("did not converge"), "{}", a.stdout);
}

#[test]
fn hostile_values_reach_files_literally_and_run_nothing() {
    let s = Scratch::new();
    let tag = format!("plumb-canary-{}", std::process::id());
    let canary_abs = s.path().join("pwned");
    // Names become path components (no `/`); contents may hold anything.
    let names = [
        format!("$(touch {tag})"),
        format!("`touch {tag}`"),
        format!("semi;touch {tag}"),
        "quote'double\"".to_string(),
        "new\nline".to_string(),
        "sp ace".to_string(),
        "ünïcødé ✓".to_string(),
        "-rf".to_string(),
        "$HOME".to_string(),
        "*".to_string(),
        "back\\slash".to_string(),
        "a: OK".to_string(),
        "b: FAILED".to_string(),
        "two  spaces  ".to_string(),
    ];
    let mut plan = String::from("resources:\n  - id: root\n    directory: {path: \"{{ root }}\"}\n");
    for (i, n) in names.iter().enumerate() {
        let content = format!("{n}\n$(touch {c}) `touch {c}`; touch {c}\n", c = canary_abs.display());
        let path = serde_json::to_string(&format!("{{{{ root }}}}/{n}")).unwrap();
        plan.push_str(&format!(
            "  - id: f{i}\n    file:\n      path: {path}\n      content: {}\n  - id: c{i}\n    command: {{run: \"true\", creates: {path}}}\n    requires: [f{i}]\n",
            serde_json::to_string(&content).unwrap()
        ));
    }
    s.plan(&plan);
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "{}\n{}", d.stdout, d.stderr);
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    for n in &names {
        let got = fs::read_to_string(s.root().join(n)).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        assert!(got.starts_with(&format!("{n}\n$(touch ")), "{n:?}: {got:?}");
    }
    assert_eq!(
        fs::read_dir(s.root()).unwrap().count(),
        names.len(),
        "exactly the named files"
    );
    for canary in [
        common::repo().join(&tag),
        s.path().join(&tag),
        s.root().join(&tag),
        canary_abs,
    ] {
        assert!(!canary.exists(), "a hostile value was executed: {}", canary.display());
    }
    assert_eq!(s.run("apply", &[]).summary("changed"), 0);
    // Drift on every one of them is seen, with the old content in the diff.
    for n in &names {
        fs::write(s.root().join(n), format!("edited {n}\n")).unwrap();
    }
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "{}\n{}", d.stdout, d.stderr);
    let resources = d.json()["hosts"][0]["resources"].as_array().unwrap().clone();
    for (i, n) in names.iter().enumerate() {
        let r = resources.iter().find(|r| r["id"] == format!("f{i}")).unwrap();
        let diff = r["diff"].as_str().unwrap_or_default();
        let first = n.lines().next().unwrap_or_default();
        assert!(diff.contains(&format!("-edited {first}")), "{n:?}: {r}");
    }
}

#[test]
fn a_failing_validate_leaves_the_old_file_untouched() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("conf"), "good = 1\n").unwrap();
    s.plan(
        r#"
resources:
  - id: conf
    file:
      path: "{{ root }}/conf"
      content: "broken\n"
      validate: "grep -q '=' %s"
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 1);
    assert_eq!(a.status_of("conf"), "failed");
    assert!(a.stdout.contains("validate command rejected"), "{}", a.stdout);
    assert_eq!(fs::read_to_string(s.root().join("conf")).unwrap(), "good = 1\n");
    let leftovers: Vec<_> = fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
}

#[test]
fn a_failure_skips_dependents_but_not_neighbours() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: broken
    command: {run: "st=3; exit $st", creates: "{{ root }}/never"}
  - id: dependent
    file: {path: "{{ root }}/dependent", content: "x"}
    requires: [broken]
  - id: transitive
    file: {path: "{{ root }}/transitive", content: "x"}
    requires: [dependent]
  - id: neighbour
    file: {path: "{{ root }}/neighbour", content: "x"}
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 1);
    assert_eq!(a.status_of("broken"), "failed");
    assert_eq!(a.status_of("dependent"), "skipped");
    assert_eq!(a.status_of("transitive"), "skipped");
    assert_eq!(a.status_of("neighbour"), "changed");
    assert!(s.root().join("neighbour").exists());
    assert!(!s.root().join("dependent").exists());
    // The status comes from the host, not from the plan's text.
    let err = resource(&a, "broken")["error"].as_str().unwrap_or_default().to_string();
    assert!(err.ends_with("failed (exit 3)"), "{err}");
}

#[test]
fn a_cycle_is_refused_before_anything_runs() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: a
    directory: {path: "{{ root }}/a"}
    requires: [b]
  - id: b
    directory: {path: "{{ root }}/b"}
    requires: [a]
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 1);
    assert!(a.stderr.contains("dependency cycle"), "{}", a.stderr);
    assert!(!s.root().exists());
}

#[test]
fn notify_refreshes_once_after_all_notifiers() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: one
    file: {path: "{{ root }}/one", content: "1"}
    notify: [reload]
  - id: two
    file: {path: "{{ root }}/two", content: "2"}
    notify: [reload]
  - id: reload
    command:
      run: "ls '{{ root }}' | tr '\n' ' ' >> '{{ root }}/reloads'; echo >> '{{ root }}/reloads'"
      onlyif: "false"
"#,
    );
    let d = s.run("diff", &[]);
    assert_eq!(d.status_of("reload"), "pending");
    assert!(d.stdout.contains("notified by `one`, `two`"), "{}", d.stdout);
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    let log = fs::read_to_string(s.root().join("reloads")).unwrap();
    assert_eq!(log.lines().count(), 1, "refreshed once: {log:?}");
    assert!(
        log.contains("one") && log.contains("two"),
        "after both notifiers: {log:?}"
    );
    let again = s.run("apply", &[]);
    assert_eq!(again.status_of("reload"), "ok");
    assert_eq!(fs::read_to_string(s.root().join("reloads")).unwrap().lines().count(), 1);
}

#[test]
fn when_skips_per_host_and_vars_take_precedence() {
    let s = Scratch::new();
    s.plan(
        r#"
vars: {enabled: false, name: plan}
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: maybe
    file: {path: "{{ root }}/maybe", content: "{{ name }}"}
    when: "enabled"
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.status_of("maybe"), "skipped");
    assert!(!s.root().join("maybe").exists());
    let a = s.run("apply", &["--var", "enabled=true", "--var", "name=cli"]);
    assert_eq!(a.status_of("maybe"), "changed");
    assert_eq!(fs::read_to_string(s.root().join("maybe")).unwrap(), "cli");
}

#[test]
fn sensitive_values_never_reach_any_output() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("secret"), "old-hunter2\n").unwrap();
    s.plan(
        r#"
resources:
  - id: secret
    sensitive: true
    file: {path: "{{ root }}/secret", content: "new-{{ env('PLUMB_TEST_SECRET') }}\n", mode: "0600"}
"#,
    );
    let root = s.root();
    let saved = s.path().join("reviewed.plan");
    for format in ["text", "json", "markdown"] {
        for cmd in ["diff", "apply"] {
            for verbose in [false, true] {
                let mut p = common::Plumb::new()
                    .arg(cmd)
                    .arg(s.path().join("plan.yaml"))
                    .arg("--var")
                    .arg(format!("root={}", root.display()))
                    .args(["--format", format])
                    .env("PLUMB_TEST_SECRET", "s3cr3t-value");
                if cmd == "apply" {
                    p = p.arg("--yes");
                } else {
                    p = p.arg("--out").arg(&saved);
                }
                if verbose {
                    p = p.arg("-v");
                }
                let out = p.run();
                assert!(
                    out.stdout.contains("0600"),
                    "{cmd} {format}: the mode stays visible:\n{}{}",
                    out.stdout,
                    out.stderr
                );
                let saved_text = fs::read_to_string(&saved).unwrap_or_default();
                for leak in ["s3cr3t-value", "hunter2"] {
                    assert!(
                        !out.stdout.contains(leak) && !out.stderr.contains(leak),
                        "{cmd} {format} leaked {leak}:\n{}",
                        out.stdout
                    );
                    assert!(!saved_text.contains(leak), "the saved plan leaked {leak}");
                }
                if cmd == "apply" {
                    fs::write(root.join("secret"), "old-hunter2\n").unwrap();
                    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
                }
            }
        }
    }
    assert!(saved.exists(), "a saved plan was written");
}

#[test]
fn a_saved_plan_applies_what_was_reviewed_and_refuses_when_the_host_moved() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file: {path: "{{ root }}/f", content: "reviewed\n"}
"#,
    );
    let saved = s.path().join("reviewed.plan");
    let d = s.run("diff", &["--out", saved.to_str().unwrap()]);
    assert_eq!(d.code, 2);
    let text = fs::read_to_string(&saved).unwrap();
    assert!(!text.contains("reviewed\\n"), "a saved plan holds hashes, not values");
    // The host moves: someone creates the directory by hand.
    fs::create_dir_all(s.root()).unwrap();
    let a = common::Plumb::new()
        .args(["apply", saved.to_str().unwrap(), "--var"])
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    assert!(a.stderr.contains("resource `root`"), "{}", a.stderr);
    assert!(!s.root().join("f").exists());
    // Review again, then apply the saved plan.
    let d = s.run("diff", &["--out", saved.to_str().unwrap()]);
    assert_eq!(d.code, 2);
    let a = common::Plumb::new()
        .args(["apply", saved.to_str().unwrap(), "--format", "json", "--var"])
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(fs::read_to_string(s.root().join("f")).unwrap(), "reviewed\n");
    // The plan's sources changed after a review: refused.
    let d = s.run("diff", &["--out", saved.to_str().unwrap()]);
    assert_eq!(d.code, 0);
    s.plan("resources:\n  - id: root\n    directory: {path: \"{{ root }}\"}\n");
    let a = common::Plumb::new()
        .args(["apply", saved.to_str().unwrap(), "--var"])
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(a.code, 1);
    assert!(a.stderr.contains("changed since the review"), "{}", a.stderr);
}

#[test]
fn apply_without_yes_and_without_a_terminal_is_refused() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n");
    let out = common::Plumb::new()
        .arg("apply")
        .arg(s.path().join("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(!s.root().exists());
}

#[test]
fn ctrl_c_stops_starting_new_steps_and_reports() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: slow
    command: {run: "sleep 2; touch '{{ root }}/slow'", creates: "{{ root }}/slow", risk: safe}
  - id: after
    file: {path: "{{ root }}/after", content: "x"}
    requires: [slow]
"#,
    );
    let child = common::Plumb::new()
        .arg("apply")
        .arg(s.path().join("plan.yaml"))
        .args(["--yes", "--format", "json", "--var"])
        .arg(format!("root={}", s.root().display()))
        .spawn();
    // Wait until the slow step runs, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.root().exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = common::Outcome::from_output(&child.wait_with_output().unwrap());
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(o.status_of("slow"), "changed", "the running step finished");
    assert_eq!(o.status_of("after"), "skipped");
    assert!(s.root().join("slow").exists());
    assert!(!s.root().join("after").exists());
    assert_eq!(o.json()["summary"]["interrupted"], true);
}
