//! Command-line behaviour across hosts: `--limit`, groups, inventories found
//! beside the plan, variable precedence between plan, groups, hosts and
//! `--var`.

mod common;

use common::{Plumb, Scratch};

fn two_local_hosts(s: &Scratch) -> std::path::PathBuf {
    s.write(
        "inventory.yaml",
        r#"
defaults:
  connection: local
  vars: {who: defaults}
hosts:
  alpha:
    vars: {who: alpha-host}
  beta: {}
  gamma: {}
groups:
  pair:
    hosts: [alpha, beta]
    vars: {who: pair-group}
"#,
    )
}

#[test]
fn limit_narrows_the_hosts_and_unknown_names_are_refused() {
    let s = Scratch::new();
    two_local_hosts(&s);
    s.plan("hosts: [pair]\nresources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n");
    let d = s.run("diff", &[]);
    let names: Vec<String> = d.json()["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "the plan's group, in inventory order");
    let d = s.run("diff", &["--limit", "beta"]);
    assert_eq!(d.json()["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(d.json()["hosts"][0]["name"], "beta");
    let d = s.run("diff", &["--limit", "betta"]);
    assert_eq!(d.code, 1);
    assert!(
        d.stderr.contains("--limit: unknown host or group `betta`") && d.stderr.contains("did you mean `beta`?"),
        "{}",
        d.stderr
    );
}

#[test]
fn variables_follow_the_documented_precedence() {
    let s = Scratch::new();
    two_local_hosts(&s);
    s.plan(
        r#"
vars: {who: plan}
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file: {path: "{{ root }}/{{ inventory_name }}", content: "{{ who }}"}
"#,
    );
    // Each host writes its own file: the host name comes from a per-host var.
    for (host, want) in [("alpha", "alpha-host"), ("beta", "pair-group"), ("gamma", "defaults")] {
        let a = Plumb::new()
            .arg("apply")
            .arg(s.path().join("plan.yaml"))
            .args(["--yes", "--limit", host, "--var"])
            .arg(format!("root={}", s.root().display()))
            .arg("--var")
            .arg(format!("inventory_name={host}"))
            .run();
        assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
        assert_eq!(std::fs::read_to_string(s.root().join(host)).unwrap(), want, "{host}");
    }
    let a = Plumb::new()
        .arg("apply")
        .arg(s.path().join("plan.yaml"))
        .args([
            "--yes",
            "--limit",
            "alpha",
            "--var",
            "who=cli",
            "--var",
            "inventory_name=alpha",
            "--var",
        ])
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(a.code, 0);
    assert_eq!(
        std::fs::read_to_string(s.root().join("alpha")).unwrap(),
        "cli",
        "--var wins"
    );
}

#[test]
fn var_values_are_read_as_yaml() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file: {path: "{{ root }}/list", content: "{{ items | join(',') }} {{ n + 1 }}"}
"#,
    );
    let a = s.run("apply", &["--var", "items=[a, b, c]", "--var", "n=41"]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(std::fs::read_to_string(s.root().join("list")).unwrap(), "a,b,c 42");
}

#[test]
fn a_usage_error_exits_1_never_2() {
    let out = Plumb::new()
        .args(["diff", "plans/examples/hello.yaml", "--format", "yaml"])
        .run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("invalid value 'yaml'"), "{}", out.stderr);
    let out = Plumb::new().args(["--help"]).run();
    assert_eq!(out.code, 0);
}

/// What the user wrote is what lands in the file: numbers and booleans from
/// the plan, the inventory and `--var` keep their spelling where a template
/// interpolates them, computed values never read like Python, and `when`
/// still compares the typed value.
#[test]
fn a_number_renders_as_written() {
    let s = Scratch::new();
    s.write(
        "inventory.yaml",
        "hosts:\n  here:\n    connection: local\n    vars: {mode_h: 0750, ratio: 1.50}\n",
    );
    s.plan(
        r#"
vars: {m: 0640, w: 04, flag: yes, ver: 1.10, big: 1e3}
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: out
    file:
      path: "{{ root }}/out"
      content: "umask {{ m }} workers {{ w }} flag {{ flag }} ver {{ ver }} big {{ big }} h {{ mode_h }} r {{ ratio }} cli {{ workers }} sum {{ w + 1 }} {{ w > 3 }}\n"
  - id: lone
    file: {path: "{{ root }}/lone", content: "{{ big }}\n"}
  - id: only-when-many
    file: {path: "{{ root }}/many", content: "many\n"}
    when: "w > 3 and workers > 3"
"#,
    );
    let a = Plumb::new()
        .arg("apply")
        .arg(s.path().join("plan.yaml"))
        .args(["--yes", "--var", "workers=05", "--var"])
        .arg(format!("root={}", s.root().display()))
        .run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(
        std::fs::read_to_string(s.root().join("out")).unwrap(),
        "umask 0640 workers 04 flag yes ver 1.10 big 1e3 h 0750 r 1.50 cli 05 sum 5 true\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.root().join("lone")).unwrap(),
        "1e3\n",
        "one expression and a newline is text, newline kept"
    );
    assert!(s.root().join("many").is_file(), "`when` compared 04 and 05 as numbers");
}
