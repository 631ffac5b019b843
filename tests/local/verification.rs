//! Apply verifies level by level: a resource's dependents run only once it
//! is applied *and* verified, and the verification costs one batched
//! re-probe per dependency level, never one per resource.

use crate::common;

use common::{expect, resource, Scratch};

/// `x` runs, but what it promised (`creates`) never appears: `y`, which
/// requires it, must not run.
#[test]
fn dependents_wait_for_verification() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: base
    directory: {path: "{{ root }}"}
  - id: x
    command: {run: "true", creates: "{{ root }}/never"}
    requires: [base]
  - id: y
    command: {run: "touch {{ root }}/y", creates: "{{ root }}/y"}
    requires: [x]
  - id: z
    command: {run: "touch {{ root }}/z", creates: "{{ root }}/z"}
    requires: [y]
  - id: other
    file: {path: "{{ root }}/other", content: "independent\n"}
"#,
    );
    let a = s.run("apply", &[]);
    expect(&a, 1, "x does not converge");
    let x = resource(&a, "x");
    assert_eq!(x["status"], "failed", "{x}");
    let y = resource(&a, "y");
    assert_eq!(y["status"], "skipped", "{y}");
    assert!(
        y["error"].as_str().unwrap().contains("`x`"),
        "the reason names the requirement: {y}"
    );
    let z = resource(&a, "z");
    assert_eq!(z["status"], "skipped", "{z}");
    assert!(z["error"].as_str().unwrap().contains("`y`"), "{z}");
    assert!(!s.root().join("y").exists(), "y ran before x was verified");
    assert!(!s.root().join("z").exists());
    assert_eq!(
        resource(&a, "other")["status"],
        "changed",
        "independent resources carry on"
    );
    assert_eq!(a.summary("changed"), 2, "base and other: {}", a.stdout);
    assert_eq!(a.summary("skipped"), 2);
}

/// `x` failed verification: the plain sentence says what is missing.
#[test]
fn a_command_whose_creates_never_appears_says_so() {
    let s = Scratch::new();
    s.plan("resources:\n  - id: x\n    command: {run: \"true\", creates: /never/plumb-test}\n");
    let a = s.run("apply", &[]);
    expect(&a, 1, "x does not converge");
    let err = resource(&a, "x")["error"].as_str().unwrap().to_string();
    assert_eq!(
        err,
        "did not converge: the command ran, but `/never/plumb-test` (its `creates`) still does not exist"
    );
    s.plan("resources:\n  - id: x\n    command: {run: \"true\", unless: \"false\"}\n");
    let a = s.run("apply", &[]);
    let err = resource(&a, "x")["error"].as_str().unwrap().to_string();
    assert_eq!(
        err,
        "did not converge: the command ran, but its `unless` check (`false`) still fails"
    );
}

/// Three levels: a directory, files in it, a command after the files.
fn levels_plan(s: &Scratch) {
    s.plan(
        r#"
resources:
  - id: base
    directory: {path: "{{ root }}", mode: "0755"}
  - id: a
    file: {path: "{{ root }}/a", content: "a\n"}
  - id: b
    file: {path: "{{ root }}/b", content: "b\n"}
  - id: c
    file: {path: "{{ root }}/c", content: "c\n"}
  - id: done
    command: {run: "cat {{ root }}/a {{ root }}/b {{ root }}/c > {{ root }}/done", creates: "{{ root }}/done"}
    requires: [a, b, c]
"#,
    );
}

fn executions(o: &common::Outcome) -> u64 {
    o.json()["hosts"][0]["remote_executions"].as_u64().unwrap()
}

#[test]
fn an_apply_costs_one_verification_per_dependency_level() {
    let s = Scratch::new();
    levels_plan(&s);
    let a = s.run("apply", &[]);
    expect(&a, 0, "converges");
    assert_eq!(a.summary("changed"), 5);
    assert_eq!(std::fs::read_to_string(s.root().join("done")).unwrap(), "a\nb\nc\n");
    // One probe, five steps, one batched verification per level (three).
    assert_eq!(executions(&a), 1 + 5 + 3, "{}", a.stdout);
}

#[test]
fn a_no_op_drift_check_is_still_one_round_trip() {
    let s = Scratch::new();
    levels_plan(&s);
    expect(&s.run("apply", &[]), 0, "converges");
    let d = s.run("diff", &[]);
    expect(&d, 0, "nothing drifted");
    assert_eq!(executions(&d), 1, "{}", d.stdout);
    let again = s.run("apply", &[]);
    expect(&again, 0, "nothing to do");
    assert_eq!(again.summary("changed"), 0);
    assert_eq!(executions(&again), 1, "a no-op apply is one probe: {}", again.stdout);
}
