//! Every plan shipped in `plans/` validates, and the local examples apply and
//! then re-apply with nothing to do.

use crate::common;

use common::Plumb;

fn plans() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![common::repo().join("plans")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name()
                    .is_some_and(|n| n != "templates" && n != "files" && n != "parts")
                {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "yaml") && p.file_name().is_none_or(|n| n != "inventory.yaml")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty());
    out
}

/// The inventory of a plan folder, `inventory/FOLDER.yaml`, when there is
/// one (`plans/twisterlab/*.yaml` → `inventory/twisterlab.yaml`).
fn folder_inventory(plan: &std::path::Path) -> Option<std::path::PathBuf> {
    let folder = plan.parent()?.file_name()?;
    let inv = common::repo()
        .join("inventory")
        .join(format!("{}.yaml", folder.to_string_lossy()));
    inv.is_file().then_some(inv)
}

#[test]
fn every_plan_validates() {
    for p in plans() {
        // The TwisterLab plan reads Harbor's password from the environment.
        let mut cmd = Plumb::new()
            .arg("validate")
            .arg(&p)
            .env("HARBOR_PASSWORD", "validate-only");
        if let Some(inv) = folder_inventory(&p) {
            cmd = cmd.arg("-i").arg(inv);
        }
        let out = cmd.run();
        assert_eq!(out.code, 0, "{}:\n{}", p.display(), out.stderr);
    }
}

#[test]
fn the_hello_example_applies_then_converges() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("root={}", dir.path().join("hello").display());
    let plan = "plans/examples/hello.yaml";
    let d = Plumb::new().args(["diff", plan, "--var", &root]).run();
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let a = Plumb::new().args(["apply", plan, "--yes", "--var", &root]).run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let again = Plumb::new()
        .args(["apply", plan, "--yes", "--format", "json", "--var", &root])
        .run();
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
    let d = Plumb::new().args(["diff", plan, "--var", &root]).run();
    assert_eq!(d.code, 0, "{}", d.stdout);
}

#[test]
fn graph_prints_dot_with_implicit_edges() {
    let out = Plumb::new().args(["graph", "plans/examples/hello.yaml"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("digraph \"hello\" {"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("\"localhost/app-dir\" -> \"localhost/conf-dir\" [style=dotted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"localhost/app-dir\" -> \"localhost/marker\";"),
        "{}",
        out.stdout
    );
}

#[test]
fn storage_resources_chain_by_themselves_labels_included() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("storage.yaml");
    std::fs::write(
        &plan,
        r#"
resources:
  - id: data-mount
    mount: {path: /srv/data, src: "LABEL=data", fstype: ext4}
  - id: logs-mount
    mount: {path: /srv/logs, src: /dev/vg0/logs, fstype: xfs}
  - id: data-fs
    filesystem: {dev: /dev/vg0/data, type: ext4, label: data}
  - id: logs-fs
    filesystem: {dev: /dev/mapper/vg0-logs, type: xfs}
  - id: data-lv
    lvm.lv: {vg: vg0, name: data, size: 1G}
  - id: logs-lv
    lvm.lv: {vg: vg0, name: logs, size: 1G}
  - id: vg
    lvm.vg: {name: vg0, pvs: [/dev/vdb]}
  - id: conf
    file: {path: /srv/data/app.conf, content: "x"}
  - id: docker-dir
    directory: {path: /srv/data/docker}
  - id: docker-bind
    mount: {path: /var/lib/docker, src: /srv/data/docker/, fstype: none, opts: [bind]}
"#,
    )
    .unwrap();
    let out = Plumb::new().args(["graph", plan.to_str().unwrap()]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (from, to) in [
        ("data-fs", "data-mount"),
        ("logs-fs", "logs-mount"),
        ("data-lv", "data-fs"),
        ("logs-lv", "logs-fs"),
        ("vg", "data-lv"),
        ("vg", "logs-lv"),
        ("data-mount", "conf"),
        ("docker-dir", "docker-bind"),
        ("data-mount", "docker-bind"),
    ] {
        let edge = format!("\"localhost/{from}\" -> \"localhost/{to}\" [style=dotted");
        assert!(out.stdout.contains(&edge), "missing {from} -> {to}:\n{}", out.stdout);
    }
    // Nothing ties the data filesystem to the logs mount.
    assert!(!out.stdout.contains("\"localhost/data-fs\" -> \"localhost/logs-mount\""));
}

#[test]
fn a_bind_mount_cannot_migrate_and_needs_an_absolute_source() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("bind.yaml");
    std::fs::write(
        &plan,
        "resources:\n  - id: b\n    mount: {path: /var/lib/docker, src: data/docker, fstype: none, opts: [bind], migrate: {stop: [docker]}}\n",
    )
    .unwrap();
    let out = Plumb::new().args(["validate", plan.to_str().unwrap()]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("`migrate` does not apply to a bind mount"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("absolute"), "{}", out.stderr);
}

/// An included file carries the defaults of its resources; the plan's own
/// `vars:` and `--var` override them; two includes disagreeing is an error
/// that points at both.
#[test]
fn included_files_carry_variable_defaults_under_the_plans_own() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    w(
        "part.yaml",
        "vars:\n  greeting: from-part\n  who: part\nresources:\n  - id: f\n    file: {path: \"{{ root }}/f\", content: \"{{ greeting }} {{ who }}\\n\"}\n",
    );
    w(
        "plan.yaml",
        "vars:\n  who: plan\ninclude: [part.yaml]\nresources:\n  - id: d\n    directory: {path: \"{{ root }}\"}\n",
    );
    let plan = dir.path().join("plan.yaml");
    let root_var = format!("root={}", root.display());
    let a = Plumb::new()
        .args(["apply", plan.to_str().unwrap(), "--yes", "--var", &root_var])
        .run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "from-part plan\n");
    let a = Plumb::new()
        .args([
            "apply",
            plan.to_str().unwrap(),
            "--yes",
            "--var",
            &root_var,
            "--var",
            "greeting=cli",
        ])
        .run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "cli plan\n");
    w("other.yaml", "vars:\n  greeting: from-other\nresources: []\n");
    w(
        "two.yaml",
        "include: [part.yaml, other.yaml]\nresources:\n  - id: d\n    directory: {path: /tmp}\n",
    );
    let v = Plumb::new()
        .args(["validate", dir.path().join("two.yaml").to_str().unwrap()])
        .run();
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(
        v.stderr.contains("variable `greeting` has another default"),
        "{}",
        v.stderr
    );
    assert!(
        v.stderr.contains("other.yaml:2:3") && v.stderr.contains("part.yaml"),
        "{}",
        v.stderr
    );
    w("typo.yaml", "varz: {}\nresources: []\n");
    w(
        "three.yaml",
        "include: [typo.yaml]\nresources:\n  - id: d\n    directory: {path: /tmp}\n",
    );
    let v = Plumb::new()
        .args(["validate", dir.path().join("three.yaml").to_str().unwrap()])
        .run();
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("did you mean `vars`?"), "{}", v.stderr);
}

#[test]
fn doc_lists_every_module_and_refuses_unknown_ones() {
    let out = Plumb::new().arg("doc").run();
    assert_eq!(out.code, 0);
    let registry = plumb_modules::registry();
    let names: Vec<&str> = registry.names().collect();
    assert!(names.len() >= 13, "{names:?}");
    for m in &names {
        let heading = format!("{m}\n{}\n", "=".repeat(m.len()));
        assert!(
            out.stdout.starts_with(&heading) || out.stdout.contains(&format!("\n{heading}")),
            "`{m}` missing"
        );
        let one = Plumb::new().args(["doc", m]).run();
        assert_eq!(one.code, 0, "plumb doc {m}: {}", one.stderr);
        assert!(one.stdout.starts_with(&heading), "plumb doc {m}:\n{}", one.stdout);
    }
    let headings = out
        .stdout
        .lines()
        .filter(|l| !l.is_empty() && l.chars().all(|c| c == '='))
        .count();
    assert_eq!(
        headings,
        names.len(),
        "one section per module and no other:\n{}",
        out.stdout
    );
    let out = Plumb::new().args(["doc", "fiel"]).run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("did you mean `file`?"), "{}", out.stderr);
}

#[test]
fn markdown_review_has_a_summary_table_and_fenced_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("root={}", dir.path().join("md").display());
    let out = Plumb::new()
        .args([
            "diff",
            "plans/examples/hello.yaml",
            "--format",
            "markdown",
            "--var",
            &root,
        ])
        .run();
    assert_eq!(out.code, 2);
    let md = out.stdout;
    assert!(md.starts_with("# Change review: `hello`"), "{md}");
    assert!(md.contains("| host | status | safe | restart | disruptive | destructive | failed | unchanged |"));
    assert!(
        md.contains("| `localhost` | changes pending | 5 | 0 | 0 | 0 | 0 | 0 |"),
        "{md}"
    );
    assert!(md.contains("```diff\n--- /dev/null"), "{md}");
    assert!(md.contains("## Decision"));
}

/// A resource whose parameters hold no template is compiled once for every
/// host (500 hosts of a 5,000-resource plan took 2 GiB when each host had
/// its own copy); one with a template, or whose module reads the host's
/// variables (an assertion), is compiled per host, with its own values.
#[test]
fn a_resource_without_templates_is_compiled_once_for_every_host() {
    use plumb_engine::compile::{compile, CompileOptions};
    use plumb_engine::source::Sources;
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        r#"
resources:
  - id: same
    file: {path: /etc/motd, content: "hello\n"}
  - id: per-host
    file: {path: /etc/hostname-note, content: "{{ who }}\n"}
  - id: check
    assert: {that: ["who != ''"]}
"#,
    )
    .unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        "defaults: {connection: local}\nhosts:\n  a: {vars: {who: a}}\n  b: {vars: {who: b}}\n  c: {vars: {who: c}}\n",
    )
    .unwrap();
    let sources = Sources::new();
    let registry = plumb_modules::registry();
    let (raw, diags) = plumb_engine::plan::load(&sources, &plan, &registry);
    assert!(diags.is_empty(), "{diags:?}");
    let inventory = plumb_engine::inventory::load(&sources, &inv).unwrap();
    let c = compile(
        raw.unwrap(),
        &inventory,
        &registry,
        &sources,
        &CompileOptions::default(),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(c.hosts.len(), 3);
    let of = |h: usize, id: &str| {
        let r = c.hosts[h].resources.iter().find(|r| r.id == id).unwrap();
        std::sync::Arc::clone(r.resource.as_ref().unwrap())
    };
    assert!(std::sync::Arc::ptr_eq(&of(0, "same"), &of(1, "same")));
    assert!(std::sync::Arc::ptr_eq(&of(0, "same"), &of(2, "same")));
    assert!(!std::sync::Arc::ptr_eq(&of(0, "per-host"), &of(1, "per-host")));
    assert!(
        !std::sync::Arc::ptr_eq(&of(0, "check"), &of(1, "check")),
        "an assertion reads the host's variables"
    );
}
