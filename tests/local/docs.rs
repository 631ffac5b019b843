//! The documentation tells the truth: every listing that says it shows a
//! file is that file, every YAML block is a valid plan, list of resources
//! or inventory, and real JSON reports follow the published schema.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{expect, repo, Plumb, Scratch};

/// The documents users read.
fn docs() -> Vec<PathBuf> {
    let mut out = vec![repo().join("README.md")];
    let mut guides: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    guides.sort();
    out.extend(guides);
    out
}

/// A fenced block of a document.
struct Block {
    doc: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The last non-blank line before the fence: what it says the block is.
    intro: String,
}

impl Block {
    fn place(&self) -> String {
        format!(
            "{}:{}",
            self.doc.strip_prefix(repo()).unwrap_or(&self.doc).display(),
            self.line
        )
    }

    /// The repository file the block says it shows: its intro ends with
    /// "(`path`):".
    fn listed_file(&self) -> Option<PathBuf> {
        let intro = self.intro.trim_end().strip_suffix("`):")?;
        let path = &intro[intro.rfind("(`")? + 2..];
        let p = repo().join(path);
        assert!(
            p.is_file(),
            "{}: the listing names `{path}`, which is not a file",
            self.place()
        );
        Some(p)
    }
}

fn blocks(doc: &Path) -> Vec<Block> {
    let text = fs::read_to_string(doc).expect("read doc");
    let mut out = Vec::new();
    // The fence, its indentation (a block inside a list item), its line,
    // language and intro.
    let mut open: Option<(String, usize, usize, String, String)> = None;
    let mut intro = String::new();
    let mut body = String::new();
    for (n, line) in text.lines().enumerate() {
        let bare = line.trim_start();
        let indent = line.len() - bare.len();
        match &open {
            None => {
                if let Some(f) = ["```", "~~~"].into_iter().find(|f| bare.starts_with(f)) {
                    let mark = f.chars().next().unwrap();
                    let len = bare.len() - bare.trim_start_matches(mark).len();
                    open = Some((
                        bare[..len].to_string(),
                        indent,
                        n + 1,
                        bare[len..].trim().to_string(),
                        intro.clone(),
                    ));
                    body.clear();
                } else if !bare.is_empty() {
                    intro = line.to_string();
                }
            }
            Some((fence, fence_indent, start, lang, intro_then)) => {
                if bare.trim_end() == fence {
                    out.push(Block {
                        doc: doc.to_path_buf(),
                        line: *start,
                        lang: lang.clone(),
                        text: std::mem::take(&mut body),
                        intro: intro_then.clone(),
                    });
                    open = None;
                    intro.clear();
                } else {
                    body.push_str(line.get(*fence_indent.min(&indent)..).unwrap_or_default());
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "{}: a fence is never closed", doc.display());
    out
}

fn all_blocks() -> Vec<Block> {
    docs().iter().flat_map(|d| blocks(d)).collect()
}

#[test]
fn every_listing_of_a_file_shows_the_file() {
    let mut seen = 0;
    for b in all_blocks() {
        if let Some(file) = b.listed_file() {
            let want = fs::read_to_string(&file).expect("read listed file");
            assert!(
                b.text == want,
                "{}: the listing of `{}` differs from the file; the file is:\n{want}",
                b.place(),
                file.display()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "the README lists the example plan and inventory; found {seen} listings"
    );
}

/// What a YAML block of the docs is.
enum Yaml {
    Plan,
    Resources,
    Inventory,
}

fn classify(b: &Block) -> Yaml {
    let top: Vec<&str> = b
        .text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(' '))
        .collect();
    let key = |k: &str| top.iter().any(|l| l.starts_with(&format!("{k}:")));
    if top.first().is_some_and(|l| l.starts_with("- ")) {
        Yaml::Resources
    } else if key("resources") || key("plan") {
        Yaml::Plan
    } else if key("hosts") {
        Yaml::Inventory
    } else {
        panic!(
            "{}: a YAML block that is neither a plan, a list of resources nor an inventory:\n{}",
            b.place(),
            b.text
        )
    }
}

fn validate(plan: &Path, inventory: &Path) -> common::Outcome {
    Plumb::new()
        .arg("validate")
        .arg(plan)
        .arg("-i")
        .arg(inventory)
        .env("HARBOR_PASSWORD", "not-a-secret")
        .run()
}

#[test]
fn every_yaml_block_of_the_docs_is_valid() {
    let scratch = Scratch::new();
    let example_inventory = repo().join("inventory/example.yaml");
    let example_plan = repo().join("plans/examples/hello.yaml");
    let mut counts = [0; 3];
    for (n, b) in all_blocks().into_iter().filter(|b| b.lang == "yaml").enumerate() {
        let file = b.listed_file().unwrap_or_else(|| {
            let text = match classify(&b) {
                Yaml::Resources => {
                    let indented: String = b.text.lines().map(|l| format!("  {l}\n")).collect();
                    format!("resources:\n{indented}")
                }
                _ => b.text.clone(),
            };
            scratch.write(&format!("block{n}.yaml"), &text)
        });
        let (kind, out) = match classify(&b) {
            Yaml::Plan => (0, validate(&file, &example_inventory)),
            Yaml::Resources => (1, validate(&file, &example_inventory)),
            Yaml::Inventory => (2, validate(&example_plan, &file)),
        };
        assert_eq!(
            out.code,
            0,
            "{}: this YAML block is not valid:\n{}\n{}{}",
            b.place(),
            b.text,
            out.stdout,
            out.stderr
        );
        counts[kind] += 1;
    }
    assert!(
        counts.iter().all(|&c| c > 0),
        "plans, lists of resources and inventories are all checked: {counts:?}"
    );
}

fn schema() -> jsonschema::Validator {
    let text = fs::read_to_string(repo().join("docs/report.schema.json")).expect("docs/report.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn assert_follows(v: &jsonschema::Validator, what: &str, report: &serde_json::Value) {
    let errors: Vec<String> = v
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not follow docs/report.schema.json:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(report).unwrap()
    );
}

#[test]
fn json_reports_follow_the_published_schema() {
    let v = schema();
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    s.plan(
        r#"
plan: schema
resources:
  - id: conf
    file: {path: "{{ root }}/conf", content: "a\nb\n", mode: "0640"}
  - id: secret
    sensitive: true
    file: {path: "{{ root }}/secret", content: "{{ env('PLUMB_TEST_SECRET') }}"}
  - id: go
    assert: {that: ["1 < 2"]}
    requires: [conf]
  - id: go-var
    assert: {that: ["holds"]}
  - id: never
    command: {run: "{{ fail }}", creates: "{{ root }}/never"}
  - id: after-never
    file: {path: "{{ root }}/after", content: "x"}
    requires: [never]
  - id: not-here
    file: {path: "{{ root }}/not-here"}
    when: "false"
"#,
    );
    let run = |cmd: &str, fail: &str, holds: bool| {
        let mut p = Plumb::new()
            .arg(cmd)
            .arg(s.path().join("plan.yaml"))
            .args(["--format", "json", "--var"])
            .arg(format!("root={}", s.root().display()))
            .arg("--var")
            .arg(format!("fail={fail}"))
            .arg("--var")
            .arg(format!("holds={holds}"))
            .env("PLUMB_TEST_SECRET", "s3cr3t");
        if cmd == "apply" {
            p = p.arg("--yes");
        }
        p.run()
    };
    let mut statuses = std::collections::BTreeSet::new();
    let mut check = |what: &str, o: &common::Outcome, code: i32| {
        expect(o, code, what);
        let j = o.json();
        assert_follows(&v, what, &j);
        for r in j["hosts"][0]["resources"].as_array().unwrap() {
            statuses.insert(r["status"].as_str().unwrap().to_string());
        }
    };
    let touch = format!("touch {}", s.root().join("never").display());
    check("a diff with pending changes", &run("diff", "false", true), 2);
    check("a failed diff (a failing check)", &run("diff", "false", false), 1);
    check("a failed apply", &run("apply", "false", true), 1);
    check("a successful apply", &run("apply", &touch, true), 0);
    check("a converged diff", &run("diff", "true", true), 0);
    for st in ["ok", "changed", "pending", "failed", "skipped"] {
        assert!(statuses.contains(st), "no report had a `{st}` resource: {statuses:?}");
    }
    let mut examples = 0;
    for b in all_blocks().into_iter().filter(|b| b.lang == "json") {
        let j: serde_json::Value =
            serde_json::from_str(&b.text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", b.place()));
        assert_follows(&v, &b.place(), &j);
        examples += 1;
    }
    assert!(examples > 0, "the guide shows a JSON report");
}
