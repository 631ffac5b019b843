//! Command-line behaviour across hosts: `--limit`, groups, inventories found
//! beside the plan, variable precedence between plan, groups, hosts and
//! `--var`.

use crate::common;

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

#[test]
fn invalid_yaml_in_a_var_is_an_error() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file:
      path: "{{ root }}/upstreams"
      content: "{% for u in upstreams %}server {{ u }};{% endfor %}"
"#,
    );
    for bad in ["upstreams=[a, b", "upstreams={a: 1", "upstreams=a: b: c"] {
        let a = s.run("apply", &["--var", bad]);
        assert_eq!(a.code, 1, "{bad}: {}{}", a.stdout, a.stderr);
        assert!(
            a.stderr.contains("--var upstreams") && a.stderr.contains("invalid YAML"),
            "{bad}: the error names the --var and the YAML error:\n{}",
            a.stderr
        );
        assert!(!s.root().exists(), "{bad}: nothing changed");
    }
    // A plain word stays a string (a string is a sequence of characters here).
    let a = s.run("apply", &["--var", "upstreams=ab"]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(
        std::fs::read_to_string(s.root().join("upstreams")).unwrap(),
        "server a;server b;"
    );
    let a = s.run("apply", &["--var", "upstreams=[a, b]"]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
}

#[test]
fn a_misspelt_var_is_refused_and_an_unused_one_is_warned_about() {
    let s = Scratch::new();
    s.plan(
        r#"
vars:
  lv_size: 1G
resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: size
    file: {path: "{{ root }}/size", content: "{{ lv_size }} {{ from_cli }}\n"}
"#,
    );
    // One letter off a declared variable: refused, nothing changed.
    let a = s.run("apply", &["--var", "lv_sise=3G", "--var", "from_cli=x"]);
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    assert!(
        a.stderr.contains("`--var lv_sise` is not used") && a.stderr.contains("did you mean `lv_size`?"),
        "{}",
        a.stderr
    );
    assert!(!s.root().join("size").exists(), "nothing changed");
    // A name the plan reads without declaring it is used; one like nothing
    // at all is said on stderr and the run goes on.
    let a = s.run(
        "apply",
        &[
            "--var",
            "lv_size=3G",
            "--var",
            "from_cli=x",
            "--var",
            "wrapper_env=prod",
        ],
    );
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(
        a.stderr.contains("warning: `--var wrapper_env` is not used"),
        "{}",
        a.stderr
    );
    assert!(!a.stderr.contains("from_cli"), "{}", a.stderr);
    assert_eq!(std::fs::read_to_string(s.root().join("size")).unwrap(), "3G x\n");
}

/// `plumb ARGS` with stdout (and, with `stderr_too`, stderr) writing into a
/// pipe whose reader is already gone, as in `plumb doc | head -1`: the reader
/// is closed while a shell waits, then the shell becomes `plumb`.
fn into_a_closed_pipe(args: &[&str], stderr_too: bool) -> (i32, String) {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 0.3; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_plumb"))
        .args(args)
        .current_dir(common::repo())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plumb");
    drop(child.stdout.take());
    let mut stderr = String::new();
    if stderr_too {
        drop(child.stderr.take());
    } else {
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    }
    let status = child.wait().expect("wait for plumb");
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn every_command_ends_quietly_when_its_reader_goes_away() {
    let s = Scratch::new();
    let plan = s.plan("resources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n");
    let plan = plan.to_str().unwrap();
    let root = format!("root={}", s.root().display());
    let bad = s.write("bad.yaml", "resources:\n  - id: d\n    directroy: {path: /tmp/x}\n");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["doc"], 0),
        (vec!["doc", "file"], 0),
        (vec!["validate", plan, "--var", &root], 0),
        (vec!["validate", bad.to_str().unwrap()], 1),
        (vec!["graph", plan, "--var", &root], 0),
        (vec!["diff", plan, "--var", &root], 2),
        (vec!["diff", plan, "--var", &root, "--format", "json"], 2),
        (vec!["diff", plan, "--var", &root, "--format", "markdown"], 2),
        (vec!["--help"], 0),
    ];
    for (args, code) in &cases {
        let (got, stderr) = into_a_closed_pipe(args, false);
        assert_eq!(got, *code, "plumb {args:?} | head: the usual status\n{stderr}");
        assert!(!stderr.contains("panicked"), "plumb {args:?}: no panic:\n{stderr}");
        if *code != 1 {
            assert!(stderr.is_empty(), "plumb {args:?}: quietly:\n{stderr}");
        }
        let (got, _) = into_a_closed_pipe(args, true);
        assert_eq!(got, *code, "plumb {args:?} 2>&1 | head: the usual status");
    }
    assert!(!s.root().exists());
}

fn local_plan(s: &Scratch) -> std::path::PathBuf {
    s.write(
        "site/plan.yaml",
        "resources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n",
    )
}

#[test]
fn the_report_names_the_inventory_it_used() {
    let s = Scratch::new();
    let plan = local_plan(&s);
    let root = format!("root={}", s.root().display());
    let diff = |dir: &std::path::Path, format: &str| {
        Plumb::new()
            .current_dir(dir)
            .args(["diff", "site/plan.yaml", "--format", format, "--var", &root])
            .run()
    };
    // None: the local host, and the report says so.
    let d = diff(s.path(), "text");
    assert_eq!(d.code, 2, "{}", d.stderr);
    assert!(d.stdout.contains("inventory: none, the local host"), "{}", d.stdout);
    assert_eq!(diff(s.path(), "json").json()["inventory"], serde_json::Value::Null);
    // One in the current folder.
    s.write("inventory.yaml", "hosts:\n  here:\n    connection: local\n");
    let d = diff(s.path(), "text");
    assert!(
        d.stdout
            .contains("inventory: inventory.yaml (found in the current folder)"),
        "{}",
        d.stdout
    );
    let j = diff(s.path(), "json").json();
    assert_eq!(j["inventory"], "inventory.yaml");
    assert_eq!(j["hosts"][0]["name"], "here");
    let md = diff(s.path(), "markdown").stdout;
    assert!(
        md.contains("Inventory: `inventory.yaml` (found in the current folder)"),
        "{md}"
    );
    // One beside the plan wins.
    s.write("site/inventory.yaml", "hosts:\n  beside:\n    connection: local\n");
    let d = diff(s.path(), "text");
    assert!(
        d.stdout
            .contains("inventory: site/inventory.yaml (found beside the plan)"),
        "{}",
        d.stdout
    );
    assert_eq!(diff(s.path(), "json").json()["inventory"], "site/inventory.yaml");
    // Given with -i.
    let d = Plumb::new()
        .current_dir(s.path())
        .args(["diff", plan.to_str().unwrap(), "-i", "inventory.yaml", "--var", &root])
        .run();
    assert!(d.stdout.contains("inventory: inventory.yaml\n"), "{}", d.stdout);
    let v = Plumb::new()
        .current_dir(s.path())
        .args(["validate", "site/plan.yaml", "--var", &root])
        .run();
    assert!(
        v.stdout
            .contains("inventory: site/inventory.yaml (found beside the plan)"),
        "{}",
        v.stdout
    );
}

#[test]
fn the_readme_first_commands_show_the_build_and_run() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a first sh block");
    let commands: Vec<&str> = block.lines().map(|l| l.split('#').next().unwrap().trim()).collect();
    assert_eq!(
        commands,
        ["cargo run -- diff plans/examples/hello.yaml", "cargo test --workspace"],
        "no `-q`: the first build takes a minute, and cargo shows it"
    );
    // The binary cargo runs, with the same arguments, from the repository root.
    let d = Plumb::new().args(["diff", "plans/examples/hello.yaml"]).run();
    assert!(d.code == 2 || d.code == 0, "exit {}:\n{}{}", d.code, d.stdout, d.stderr);
    assert!(d.stdout.contains("plan hello (diff)"), "{}", d.stdout);
}

/// A failed step is reported as data beside its sentence: the host, the
/// resource, the step, its exit status and the last lines of its stderr.
#[test]
fn a_failed_step_is_reported_as_data() {
    let s = Scratch::new();
    s.plan(
        r#"
resources:
  - id: broken
    command: {run: "echo first >&2; echo 'it broke' >&2; exit 3", creates: "{{ root }}/never"}
"#,
    );
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let r = &a.json()["hosts"][0]["resources"][0];
    let f = &r["failure"];
    assert_eq!(f["resource"], "broken", "{r}");
    assert_eq!(f["host"], a.json()["hosts"][0]["name"], "{r}");
    assert_eq!(f["step"], "echo first >&2; echo 'it broke' >&2; exit 3", "{r}");
    assert_eq!(f["exit_status"], 3, "{r}");
    assert_eq!(f["stderr"], "first\nit broke", "{r}");
    assert_eq!(
        r["error"], "`echo first >&2; echo 'it broke' >&2; exit 3` failed (exit 3): first\nit broke",
        "{r}"
    );
}
