//! Facts are read from the host only when a plan uses them, and assertions
//! (over facts or a read-only command) gate their dependents in diff and
//! apply alike.

use crate::common;

use common::Scratch;

#[test]
fn facts_are_not_gathered_when_unused() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n");
    let d = s.run("diff", &[]);
    assert_eq!(
        d.json()["hosts"][0]["remote_executions"],
        1,
        "one execution: the batched probe"
    );
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}/{{ facts.os.id }}\"}\n");
    let d = s.run("diff", &[]);
    assert_eq!(d.json()["hosts"][0]["remote_executions"], 2, "facts, then the probe");
}

#[test]
fn facts_feed_templates() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: info
    file:
      path: "{{ root }}/info"
      content: "{{ facts.cpus }} cpus, kernel {{ facts.kernel }}, / is {{ facts.mounts['/'].fstype }}\n"
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let text = std::fs::read_to_string(s.root().join("info")).unwrap();
    // `nproc` counts the CPUs this process may run on; the Rust standard
    // library's available_parallelism() also honours a cgroup CPU quota,
    // so the two differ under a limit. The fact is what `nproc` prints.
    let nproc = std::process::Command::new("nproc").output().unwrap();
    let cpus = String::from_utf8(nproc.stdout).unwrap().trim().to_string();
    assert!(text.starts_with(&format!("{cpus} cpus, kernel ")), "{text}");
    assert_eq!(s.run("diff", &[]).code, 0);
}

#[test]
fn a_misspelt_fact_is_refused_at_load_time_and_a_missing_one_is_a_host_error() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}/{{ facts.mount }}\"}\n");
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 1);
    assert!(
        d.stderr.contains("unknown fact `facts.mount`") && d.stderr.contains("did you mean `mounts`?"),
        "{}",
        d.stderr
    );
    assert!(d.stderr.contains("plan.yaml:3:"), "located: {}", d.stderr);
    // A known fact without the key asked for is known only on the host.
    s.plan(
        "resources:\n  - id: d\n    directory: {path: \"{{ root }}/{{ facts.mounts['/no/such/mount'].device }}\"}\n",
    );
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 1);
    let err = d.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("`facts.mounts['/no/such/mount']` is undefined") && err.contains("plan.yaml:3:"),
        "{err}"
    );
}

#[test]
fn a_false_assertion_fails_and_skips_its_dependents_in_diff_and_apply() {
    let s = Scratch::new();
    s.plan(
        r#"
vars: {min_cpus: 1}
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: go-cpus
    assert:
      that: ["facts.cpus >= min_cpus", "facts.mounts['/'].used_pct <= 100"]
  - id: go-impossible
    assert:
      that: ["facts.memory_bytes > 1024 ** 5"]
      message: a petabyte of memory
  - id: guarded
    file: {path: "{{ root }}/guarded", content: "x"}
    requires: [go-impossible]
  - id: free
    file: {path: "{{ root }}/free", content: "x"}
    requires: [go-cpus]
"#,
    );
    for cmd in ["diff", "apply"] {
        let o = s.run(cmd, &[]);
        assert_eq!(o.code, 1, "{cmd}: {}", o.stdout);
        assert_eq!(o.status_of("go-cpus"), "ok");
        assert_eq!(o.status_of("go-impossible"), "failed");
        assert_eq!(o.status_of("guarded"), "skipped");
        assert!(o.stdout.contains("a petabyte of memory"), "{}", o.stdout);
    }
    assert!(s.root().join("free").exists());
    assert!(!s.root().join("guarded").exists());
}

#[test]
fn command_assertions_check_status_and_output() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: answers
    assert: {command: "echo 'registry: ok'", expect_stdout: "registry: ok"}
  - id: wrong-output
    assert: {command: "echo 'registry: down'", expect_stdout: "registry: ok", message: the registry must answer}
  - id: wrong-status
    assert: {command: "exit 3"}
  - id: expected-status
    assert: {command: "exit 3", expect_rc: 3}
"#,
    );
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 1);
    assert_eq!(d.status_of("answers"), "ok");
    assert_eq!(d.status_of("wrong-output"), "failed");
    assert_eq!(d.status_of("wrong-status"), "failed");
    assert_eq!(d.status_of("expected-status"), "ok");
    assert!(d.stdout.contains("the registry must answer"));
}
