//! Saved plans (`plumb diff --out FILE`, then `plumb apply FILE`): they apply
//! however the paths were spelled and from whichever folder, and they are
//! refused, naming the cause, when a source, the inventory, a variable or the
//! host changed since the review.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Outcome, Plumb, Scratch};

/// A folder holding `inventory.yaml` (host `box`, this machine),
/// `site/plan.yaml` with its template, and `elsewhere/` whose own
/// `inventory.yaml` names another host (a decoy: a saved plan must not pick it
/// up).
fn site() -> Scratch {
    let s = Scratch::new();
    s.write(
        "inventory.yaml",
        "hosts:\n  box:\n    connection: local\n    vars: {greeting: hello}\n",
    );
    s.write(
        "site/plan.yaml",
        r#"resources:
  - id: root
    directory: {path: "{{ root }}"}
  - id: f
    file: {path: "{{ root }}/f", template: templates/f.j2}
"#,
    );
    s.write("site/templates/f.j2", "{{ greeting }} from the template\n");
    s.write("elsewhere/inventory.yaml", "hosts:\n  other:\n    connection: local\n");
    s
}

/// `plumb ARGS --var root=…` run from `dir`.
fn plumb_in(s: &Scratch, dir: &Path, args: &[&str]) -> Outcome {
    Plumb::new()
        .current_dir(dir)
        .args(args)
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .run()
}

/// Review `site/plan.yaml` from the scratch folder, with relative paths.
fn review(s: &Scratch) {
    let d = plumb_in(s, s.path(), &["diff", "site/plan.yaml", "--out", "r.plan"]);
    common::expect(&d, 2, "diff --out");
}

fn elsewhere(s: &Scratch) -> PathBuf {
    s.path().join("elsewhere")
}

fn assert_refused(a: &Outcome, cause: &str, s: &Scratch) {
    common::expect(a, 1, "apply of a saved plan");
    assert!(
        a.stderr.contains("the world moved since the review") && a.stderr.contains(cause),
        "the refusal names `{cause}`:\n{}",
        a.stderr
    );
    assert!(
        !a.stderr.contains("plan.yaml` changed"),
        "the plan did not change:\n{}",
        a.stderr
    );
    assert!(!s.root().join("f").exists(), "nothing was applied");
}

#[test]
fn a_saved_plan_made_from_a_relative_path_applies() {
    let s = site();
    review(&s);
    let a = plumb_in(&s, s.path(), &["apply", "r.plan", "--yes"]);
    common::expect(&a, 0, "apply r.plan");
    assert_eq!(
        fs::read_to_string(s.root().join("f")).unwrap(),
        "hello from the template\n"
    );
}

#[test]
fn a_saved_plan_applies_from_another_folder() {
    let s = site();
    review(&s);
    let a = plumb_in(&s, &elsewhere(&s), &["apply", "../r.plan", "--yes", "--format", "json"]);
    common::expect(&a, 0, "apply ../r.plan from elsewhere/");
    assert_eq!(
        a.json()["hosts"][0]["name"],
        "box",
        "the reviewed inventory, not the decoy"
    );
    assert_eq!(
        fs::read_to_string(s.root().join("f")).unwrap(),
        "hello from the template\n"
    );
}

#[test]
fn a_saved_plan_made_from_absolute_paths_applies_from_another_folder() {
    let s = site();
    let plan = s.path().join("site/plan.yaml");
    let saved = s.path().join("abs.plan");
    // From the repository root: no inventory beside the plan or there, so the
    // review is of the local host.
    let d = Plumb::new()
        .args(["diff", plan.to_str().unwrap(), "--out", saved.to_str().unwrap()])
        .args(["--var", "greeting=hi", "--var"])
        .arg(format!("root={}", s.root().display()))
        .run();
    common::expect(&d, 2, "diff with absolute paths");
    let a = plumb_in(&s, &elsewhere(&s), &["apply", saved.to_str().unwrap(), "--yes"]);
    assert_refused(&a, "`--var` values differ", &s);
    let a = plumb_in(
        &s,
        &elsewhere(&s),
        &[
            "apply",
            saved.to_str().unwrap(),
            "--yes",
            "--format",
            "json",
            "--var",
            "greeting=hi",
        ],
    );
    common::expect(&a, 0, "apply from elsewhere/, which has an inventory.yaml of its own");
    assert_eq!(
        a.json()["hosts"][0]["name"],
        "localhost",
        "reviewed without an inventory: the local host, not elsewhere/inventory.yaml"
    );
    assert_eq!(
        fs::read_to_string(s.root().join("f")).unwrap(),
        "hi from the template\n"
    );
}

#[test]
fn a_saved_plan_is_refused_when_a_source_changed() {
    let s = site();
    review(&s);
    s.write("site/templates/f.j2", "{{ greeting }} from another template\n");
    let a = plumb_in(&s, &elsewhere(&s), &["apply", "../r.plan", "--yes"]);
    assert_refused(&a, "f.j2` changed since the review", &s);
}

#[test]
fn a_saved_plan_is_refused_when_the_inventory_changed() {
    let s = site();
    review(&s);
    s.write(
        "inventory.yaml",
        "hosts:\n  box:\n    connection: local\n    vars: {greeting: bye}\n",
    );
    let a = plumb_in(&s, &elsewhere(&s), &["apply", "../r.plan", "--yes"]);
    assert_refused(&a, "inventory.yaml` changed since the review", &s);
}

#[test]
fn a_saved_plan_is_refused_when_another_inventory_is_given() {
    let s = site();
    review(&s);
    let a = plumb_in(
        &s,
        &elsewhere(&s),
        &["apply", "../r.plan", "--yes", "-i", "inventory.yaml"],
    );
    assert_refused(&a, "the review used the inventory", &s);
}

#[test]
fn a_saved_plan_is_refused_when_a_variable_changed() {
    let s = site();
    review(&s);
    let a = plumb_in(
        &s,
        &elsewhere(&s),
        &["apply", "../r.plan", "--yes", "--var", "greeting=bye"],
    );
    assert_refused(&a, "`--var` values differ", &s);
}

#[test]
fn a_saved_plan_is_refused_when_the_host_changed() {
    let s = site();
    review(&s);
    fs::create_dir_all(s.root()).unwrap();
    let a = plumb_in(&s, &elsewhere(&s), &["apply", "../r.plan", "--yes"]);
    assert_refused(&a, "resource `root` on `box` changed since the review", &s);
    assert!(!a.stderr.contains("` changed since the review\n"), "{}", a.stderr);
}

/// A saved plan says nothing of a secret to someone without the
/// workstation's key: `--var` values and the state of sensitive resources
/// are fingerprinted with an HMAC keyed by the key in the plumb state
/// folder (0600); a plain sha256 of a weak secret could be guessed offline.
#[test]
fn a_saved_plan_holds_keyed_fingerprints_of_secret_values_and_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    s.write("inventory.yaml", "hosts:\n  box:\n    connection: local\n");
    s.write(
        "plan.yaml",
        "resources:\n  - id: token\n    sensitive: true\n    file: {path: \"{{ root }}/token\", content: \"{{ token }}\\n\"}\n",
    );
    std::fs::create_dir_all(s.root()).unwrap();
    std::fs::write(s.root().join("token"), "weak\n").unwrap();
    let state = s.path().join("state");
    let run = |args: &[&str]| {
        Plumb::new()
            .current_dir(s.path())
            .env("XDG_STATE_HOME", state.to_str().unwrap())
            .args(args)
            .arg("--var")
            .arg(format!("root={}", s.root().display()))
            .args(["--var", "token=hunter2"])
            .run()
    };
    common::expect(&run(&["diff", "plan.yaml", "--out", "r.plan"]), 2, "diff --out");
    let saved = s.path().join("r.plan");
    assert_eq!(fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&saved).unwrap()).unwrap();
    assert!(v["vars_sha256"].as_str().unwrap().starts_with("hmac:"), "{v}");
    let fp = v["resources"][0]["fingerprint"].as_str().unwrap();
    assert!(
        fp.starts_with("hmac:"),
        "the sensitive resource's fingerprint is keyed: {v}"
    );
    let text = fs::read_to_string(&saved).unwrap();
    for plain in [
        "hunter2",
        &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"weak\n")),
    ] {
        assert!(!text.contains(plain), "`{plain}` in the saved plan:\n{text}");
    }
    let key = state.join("plumb/key");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    common::expect(&run(&["apply", "r.plan"]), 0, "the same workstation applies it");
    assert_eq!(fs::read_to_string(s.root().join("token")).unwrap(), "hunter2\n");
}
