//! Property tests with generated input: the plan and inventory loaders,
//! `--var` values, every module's probe reader and the path batch's parser,
//! fed arbitrary bytes and structure-aware input (plans and inventories
//! built from the real keys and module parameters, then mutated). The
//! properties: nothing panics, and an error about a file points into that
//! file (a label inside its text, rendered as `[file:line:col]`).
//!
//! Every test is in `mod props`, so `cargo test props` selects them all.
//! The default number of cases keeps each property to a few seconds; set
//! `PROPTEST_CASES` to run longer, e.g.
//! `PROPTEST_CASES=20000 cargo test --release props` (see README).
//!
//! A test target of its own (the other targets are folders: `tests/local`,
//! `tests/lab`, `tests/vm`): it is also run alone, in release mode and for
//! long (`PROPTEST_CASES=20000 cargo test --release --test props`), which
//! then builds only this target in release, and it is the only user of
//! proptest: CPU-bound cases in-process, where the others mostly wait on
//! the plumb binary, on ssh or on the disk.

mod common;

mod props {
    use std::collections::BTreeMap;
    use std::path::Path;

    use plumb_engine::compile::{compile, compile_with_facts, CompileOptions};
    use plumb_engine::diag::{render_plain, Diag};
    use plumb_engine::inventory::{self, Inventory};
    use plumb_engine::module::ProbeOutput;
    use plumb_engine::paths::{FileType, PathBatch, PathQuery, PathStat};
    use plumb_engine::source::Sources;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use crate::common::Plumb;

    /// `default` cases unless `PROPTEST_CASES` asks for another number.
    fn cases(default: u32) -> ProptestConfig {
        // Shrunk failures become regression tests named after the bug
        // (below), not files of seeds.
        let mut c = ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = default;
        }
        c
    }

    /// Every diagnostic points into text that was loaded, on character
    /// boundaries, and renders with its file name and line.
    fn located(sources: &Sources, diags: &[Diag]) -> Result<(), TestCaseError> {
        for d in diags {
            prop_assert!(
                !d.labels.is_empty(),
                "an error without a location: {} ({})",
                d.message,
                d.code
            );
            for (span, _) in &d.labels {
                let f = sources.get(span.source);
                let end = span.offset + span.len;
                prop_assert!(
                    end <= f.text.len(),
                    "{} ({}): span {}..{end} past the end of {} ({} bytes)",
                    d.message,
                    d.code,
                    span.offset,
                    f.name,
                    f.text.len()
                );
                prop_assert!(
                    f.text.is_char_boundary(span.offset) && f.text.is_char_boundary(end),
                    "{}: span {}..{end} splits a character",
                    d.message,
                    span.offset
                );
            }
            let one = render_plain(sources, vec![d.clone()]);
            let name = &sources.get(d.labels[0].0.source).name;
            prop_assert!(
                one.contains(&format!("[{name}:")),
                "rendered without `[{name}:line:col]`:\n{one}"
            );
        }
        Ok(())
    }

    /// Load `text` as a plan (and compile it for the local host when it
    /// loads), as `plumb validate` does.
    fn load_plan(dir: &Path, text: &[u8], inv: &Inventory) -> (Sources, Vec<Diag>) {
        let path = dir.join("plan.yaml");
        std::fs::write(&path, text).unwrap();
        let sources = Sources::new();
        let registry = plumb_modules::registry();
        let (raw, mut diags) = plumb_engine::plan::load(&sources, &path, &registry);
        if let Some(raw) = raw {
            if let Err(d) = compile(raw, inv, &registry, &sources, &CompileOptions::default()) {
                diags.extend(d);
            }
        }
        (sources, diags)
    }

    fn load_inventory(dir: &Path, text: &[u8]) -> (Sources, Result<Inventory, Vec<Diag>>) {
        let path = dir.join("inventory.yaml");
        std::fs::write(&path, text).unwrap();
        let sources = Sources::new();
        let r = inventory::load(&sources, &path);
        (sources, r)
    }

    // ------------------------------------------------------------ generators

    /// A YAML scalar as it could be written in a plan.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "x",
                "/tmp/plumb-props/a",
                "/srv/data",
                "docker",
                "curl",
                "ext4",
                "xfs",
                "10G",
                "100%FREE",
                "+5G",
                "1.5T",
                "0644",
                "\"0644\"",
                "root",
                "present",
                "absent",
                "mounted",
                "true",
                "false",
                "null",
                "~",
                "0",
                "-1",
                "1e3",
                "0x10",
                "on",
                "'",
                "\"",
                "{{",
                "}}",
                "{{ x }}",
                "\"{{ x }}\"",
                "\"{{ facts.cpus }}\"",
                "\"{{ undefined_var }}\"",
                "\"{{ x | upper }}\"",
                "\"{% if x %}y{% endif %}\"",
                "\"{{ 1/0 }}\"",
                "&a x",
                "*a",
                "!!str 1",
                "|\n  block",
                ">-",
                "[]",
                "{}",
                "\"\\0\"",
                "\"\\t\"",
                "a b",
                "vg0",
                "lv-data",
                "/dev/vg0/data",
                "/dev/loop99",
                "UUID=abc",
                "defaults",
                "relative/path",
                "../up",
                "sshd",
                "x@y.service",
            ])
            .prop_map(str::to_string),
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z_][a-z0-9_-]{0,8}",
            "\\PC{0,16}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
    }

    /// A YAML value in flow style, nested a little.
    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                    let items: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", items.join(", "))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        let mut names: Vec<String> = vec!["x".into(), "y".into(), "name".into(), "path".into(), "vars".into()];
        for m in plumb_modules::registry().iter() {
            names.extend(m.param_names().into_iter().map(str::to_string));
        }
        prop_oneof![
            4 => prop::sample::select(names),
            1 => "[a-z_]{1,8}",
            1 => scalar(),
        ]
    }

    fn module_name() -> impl Strategy<Value = String> {
        let names: Vec<String> = plumb_modules::registry().names().map(str::to_string).collect();
        prop_oneof![
            8 => prop::sample::select(names),
            1 => Just("fiel".to_string()),
            1 => "[a-z.]{1,8}",
        ]
    }

    /// One resource, in block style, with the module's own parameter
    /// names most of the time.
    fn resource() -> impl Strategy<Value = String> {
        let registry = plumb_modules::registry();
        let params: BTreeMap<String, Vec<String>> = registry
            .iter()
            .map(|m| {
                (
                    m.name().to_string(),
                    m.param_names().into_iter().map(str::to_string).collect(),
                )
            })
            .collect();
        (
            prop_oneof![4 => "[a-z][a-z0-9_-]{0,6}", 1 => scalar()],
            module_name(),
            prop::collection::vec((0usize..64, "[a-z_]{1,8}", value()), 0..6),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "requires",
                        "notify",
                        "when",
                        "hosts",
                        "become",
                        "sensitive",
                        "id",
                        "bogus",
                    ]),
                    value(),
                ),
                0..3,
            ),
        )
            .prop_map(move |(id, module, ps, envelope)| {
                let own = params.get(&module);
                let mut text = format!("  - id: {id}\n    {module}:\n");
                if ps.is_empty() {
                    text.push_str("      {}\n");
                }
                for (pick, other, v) in ps {
                    let k = match own {
                        Some(names) if !names.is_empty() && pick % 5 != 0 => names[pick % names.len()].clone(),
                        _ => other,
                    };
                    text.push_str(&format!("      {k}: {v}\n"));
                }
                for (k, v) in envelope {
                    text.push_str(&format!("    {k}: {v}\n"));
                }
                text
            })
    }

    /// A plan: top-level keys (real and misspelt), vars, includes, and
    /// resources.
    fn plan_text() -> impl Strategy<Value = String> {
        (
            prop::option::of(scalar()),
            prop::collection::vec((key(), value()), 0..4),
            prop::option::of(prop::collection::vec(
                prop::sample::select(vec![
                    "part.yaml",
                    "missing.yaml",
                    "plan.yaml",
                    "../x.yaml",
                    "{{ x }}.yaml",
                ]),
                0..3,
            )),
            prop::collection::vec(resource(), 0..5),
            prop::option::of((
                prop::sample::select(vec!["varz", "resource", "hosts", "description", "plan"]),
                value(),
            )),
        )
            .prop_map(|(name, vars, include, resources, extra)| {
                let mut t = String::new();
                if let Some(n) = name {
                    t.push_str(&format!("plan: {n}\n"));
                }
                if !vars.is_empty() {
                    t.push_str("vars:\n");
                    for (k, v) in vars {
                        t.push_str(&format!("  {k}: {v}\n"));
                    }
                }
                if let Some(inc) = include {
                    t.push_str(&format!("include: [{}]\n", inc.join(", ")));
                }
                if let Some((k, v)) = extra {
                    t.push_str(&format!("{k}: {v}\n"));
                }
                t.push_str("resources:\n");
                for r in resources {
                    t.push_str(&r);
                }
                t
            })
    }

    /// Text with a few random edits: bytes cut out, inserted or replaced.
    fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
        (
            text,
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    0usize..4,
                    prop::collection::vec(any::<u8>(), 0..3),
                ),
                0..3,
            ),
        )
            .prop_map(|(t, edits)| {
                let mut b = t.into_bytes();
                for (at, cut, insert) in edits {
                    let i = at.index(b.len() + 1);
                    let end = (i + cut).min(b.len());
                    b.splice(i..end, insert);
                }
                b
            })
    }

    fn inventory_text() -> impl Strategy<Value = String> {
        let host = (
            prop::option::of(scalar()),
            prop::option::of(prop_oneof![any::<u16>().prop_map(|p| p.to_string()), scalar()]),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "user",
                        "become",
                        "identity",
                        "connection",
                        "max_sessions",
                        "vars",
                        "adress",
                    ]),
                    value(),
                ),
                0..3,
            ),
        )
            .prop_map(|(address, port, rest)| {
                let mut items = Vec::new();
                if let Some(a) = address {
                    items.push(format!("address: {a}"));
                }
                if let Some(p) = port {
                    items.push(format!("port: {p}"));
                }
                items.extend(rest.into_iter().map(|(k, v)| format!("{k}: {v}")));
                format!("{{{}}}", items.join(", "))
            })
            .boxed();
        (
            prop::option::of(host.clone()),
            prop::collection::vec((prop_oneof![3 => "[a-z][a-z0-9.-]{0,6}", 1 => scalar()], host), 0..5),
            prop::collection::vec(
                (
                    "[a-z]{1,5}",
                    prop::collection::vec("[a-z][a-z0-9.-]{0,6}", 0..3),
                    prop::option::of(value()),
                ),
                0..3,
            ),
            prop::option::of((
                prop::sample::select(vec!["host", "group", "defaults", "hosts"]),
                value(),
            )),
        )
            .prop_map(|(defaults, hosts, groups, extra)| {
                let mut t = String::new();
                if let Some(d) = defaults {
                    t.push_str(&format!("defaults: {d}\n"));
                }
                t.push_str("hosts:\n");
                for (name, h) in hosts {
                    t.push_str(&format!("  {name}: {h}\n"));
                }
                if !groups.is_empty() {
                    t.push_str("groups:\n");
                    for (g, members, vars) in groups {
                        t.push_str(&format!("  {g}: {{hosts: [{}]", members.join(", ")));
                        if let Some(v) = vars {
                            t.push_str(&format!(", vars: {v}"));
                        }
                        t.push_str("}\n");
                    }
                }
                if let Some((k, v)) = extra {
                    t.push_str(&format!("{k}: {v}\n"));
                }
                t
            })
    }

    // ------------------------------------------------------------ loaders

    proptest! {
        #![proptest_config(cases(256))]

        #[test]
        fn the_plan_loader_locates_every_error_in_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let (sources, diags) = load_plan(dir.path(), &bytes, &Inventory::local_default());
            located(&sources, &diags)?;
        }

        #[test]
        fn the_plan_loader_locates_every_error_in_generated_plans(text in mutated(plan_text()), part in plan_text()) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("part.yaml"), part).unwrap();
            let (sources, diags) = load_plan(dir.path(), &text, &Inventory::local_default());
            located(&sources, &diags)?;
        }

        #[test]
        fn the_inventory_loader_locates_every_error(text in prop_oneof![
            mutated(inventory_text()),
            prop::collection::vec(any::<u8>(), 0..300),
        ], hosts in prop::collection::vec(prop_oneof!["[a-z]{1,5}", Just("all".to_string()), Just("nosuch".to_string())], 0..3)) {
            let dir = tempfile::tempdir().unwrap();
            let (sources, inv) = load_inventory(dir.path(), &text);
            match inv {
                Err(diags) => located(&sources, &diags)?,
                Ok(inv) => {
                    // A loaded inventory selects hosts for a plan without panicking.
                    let plan = format!(
                        "hosts: [{}]\nresources:\n  - id: d\n    directory: {{path: /tmp/plumb-props/d}}\n",
                        hosts.join(", ")
                    );
                    let (sources, diags) = load_plan(dir.path(), plan.as_bytes(), &inv);
                    located(&sources, &diags)?;
                }
            }
        }
    }

    // ------------------------------------------------------------ --var

    fn validate_with_var(dir: &Path, var: &str) -> crate::common::Outcome {
        let plan = dir.join("v.yaml");
        if !plan.exists() {
            std::fs::write(
                &plan,
                "resources:\n  - id: d\n    directory: {path: \"/tmp/plumb-props/{{ x }}\"}\n",
            )
            .unwrap();
        }
        Plumb::new().arg("validate").arg(&plan).arg("--var").arg(var).run()
    }

    proptest! {
        // Each case runs the binary.
        #![proptest_config(cases(48))]

        #[test]
        fn a_var_value_is_used_or_refused_with_its_location(value in prop_oneof![
            "\\PC{0,24}",
            value(),
            "[\\[\\]{}:,'\"&*!|>%@` -]{1,8}",
        ]) {
            let dir = tempfile::tempdir().unwrap();
            let o = validate_with_var(dir.path(), &format!("x={value}"));
            prop_assert!(o.code == 0 || o.code == 1, "exit {}: {}", o.code, o.stderr);
            prop_assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
            if o.code == 1 {
                // Either the value is not YAML (pointed at inside it), or it
                // makes no path (pointed at in the plan).
                prop_assert!(
                    o.stderr.contains("[--var x:") || o.stderr.contains("v.yaml:"),
                    "an error without a location:\n{}",
                    o.stderr
                );
            }
        }

    }

    // ------------------------------------------------------------ probe readers

    /// Every module's example, compiled for the local host.
    fn examples() -> Vec<(String, std::sync::Arc<dyn plumb_engine::module::Resource>)> {
        let registry = plumb_modules::registry();
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        for m in registry.iter() {
            let text = format!("resources:\n{}", indent(m.doc().example));
            let path = dir.path().join(format!("{}.yaml", m.name()));
            std::fs::write(&path, &text).unwrap();
            let sources = Sources::new();
            let (raw, diags) = plumb_engine::plan::load(&sources, &path, &registry);
            assert!(diags.is_empty(), "{}: {}", m.name(), render_plain(&sources, diags));
            let inv = Inventory::local_default();
            let c = compile(raw.unwrap(), &inv, &registry, &sources, &CompileOptions::default())
                .unwrap_or_else(|d| panic!("{}: {}", m.name(), render_plain(&sources, d)));
            for host in c.hosts {
                // A resource that reads facts compiles once they are known:
                // this machine's own.
                let host = if host.needs_facts {
                    let probe = plumb_engine::facts::probe();
                    let out = std::process::Command::new("sh")
                        .arg("-c")
                        .arg(probe.as_str())
                        .output()
                        .unwrap();
                    let facts = plumb_engine::facts::parse(&out.stdout).unwrap();
                    compile_with_facts(
                        &c.plan,
                        &host.host,
                        &inv,
                        &registry,
                        &sources,
                        &CompileOptions::default(),
                        &facts,
                    )
                    .unwrap_or_else(|d| panic!("{}: {}", m.name(), render_plain(&sources, d)))
                } else {
                    host
                };
                for r in host.resources {
                    if let Some(res) = r.resource {
                        out.push((m.name().to_string(), res));
                    }
                }
            }
        }
        out
    }

    /// The example indented under `resources:`, without its edges to
    /// resources of other examples.
    fn indent(example: &str) -> String {
        example
            .lines()
            .filter(|l| !l.trim_start().starts_with("notify:") && !l.trim_start().starts_with("requires:"))
            // The example reads a secret from the workstation's environment.
            .map(|l| format!("  {}\n", l.replace("{{ env('HARBOR_PASSWORD') }}", "example")))
            .collect()
    }

    /// The words a probe script prints as keys and section names: what its
    /// reader looks for.
    fn probe_words(script: &str) -> Vec<String> {
        let mut words: Vec<String> = script
            .split(|c: char| !(c.is_ascii_alphanumeric() || "_.:".contains(c)))
            .filter(|w| (2..24).contains(&w.len()))
            .map(str::to_string)
            .collect();
        words.extend(["x", "rc", "status", "state"].map(str::to_string));
        words.sort();
        words.dedup();
        words
    }

    /// Probe output built from the probe's own words: `key=value` lines,
    /// `--`, `::section::` markers, JSON, fstab-like and sha256sum-like
    /// lines, numbers; mixed with arbitrary bytes.
    fn probe_output(words: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
        let word = prop::sample::select(words);
        let json_leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            prop_oneof![
                Just("0".to_string()),
                Just("4096".to_string()),
                Just("-1".to_string()),
                "\\PC{0,8}",
                "[0-9]{1,20}"
            ]
            .prop_map(serde_json::Value::from),
        ];
        let json_keys = prop_oneof![
            word.clone(),
            prop::sample::select(vec![
                "filesystems",
                "report",
                "lv",
                "vg",
                "pv",
                "children",
                "target",
                "source",
                "fstype",
                "options",
                "maj:min",
                "fsroot",
                "lv_name",
                "vg_name",
                "lv_size",
                "vg_size",
                "vg_free",
                "vg_extent_size",
                "pv_name",
                "lv_path",
                "blockdevices",
                "name",
                "size",
                "mountpoint",
                "type",
            ])
            .prop_map(str::to_string),
        ];
        let json = json_leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(json_keys.clone(), inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let line = prop_oneof![
            (
                word.clone(),
                prop_oneof!["\\PC{0,12}", "[0-9]{1,20}", Just(String::new()), word.clone()]
            )
                .prop_map(|(k, v)| format!("{k}={v}\n")),
            Just("--\n".to_string()),
            word.clone().prop_map(|w| format!("\n::{w}::\n")),
            json.prop_map(|j| format!("{j}\n")),
            ("/[a-z]{1,6}", "/[a-z ]{1,6}", word.clone()).prop_map(|(a, b, c)| format!("{a} {b} {c} defaults 0 0\n")),
            ("[0-9a-f]{64}", "/[a-z]{1,6}").prop_map(|(h, p)| format!("{h}  {p}\n")),
            "[0-9]{1,4}\n",
            prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ];
        prop_oneof![
            4 => prop::collection::vec(line, 0..12).prop_map(|l| l.concat().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    fn path_observed() -> impl Strategy<Value = Result<Option<PathStat>, String>> {
        prop_oneof![
            Just(Ok(None)),
            Just(Err("permission denied".to_string())),
            (
                prop::sample::select(vec![
                    FileType::File,
                    FileType::Directory,
                    FileType::Symlink,
                    FileType::Other
                ]),
                0u32..0o10000,
                prop::sample::select(vec!["root", "UNKNOWN", "deploy", ""]),
                any::<u64>(),
                prop::option::of("[0-9a-f]{64}|x"),
            )
                .prop_map(|(kind, mode, owner, size, sha256)| {
                    Ok(Some(PathStat {
                        kind,
                        mode,
                        owner: owner.into(),
                        group: owner.into(),
                        size,
                        sha256,
                    }))
                }),
        ]
    }

    #[test]
    fn every_module_reads_any_probe_output_without_panicking() {
        let resources = examples();
        let modules: std::collections::BTreeSet<&str> = resources.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            modules.len(),
            plumb_modules::registry().names().count(),
            "an example per module: {modules:?}"
        );
        for (module, r) in &resources {
            let words = probe_words(r.probe().as_str());
            let paths: Vec<String> = r.inspect().into_iter().map(|q| q.path).collect();
            let strategy = (
                probe_output(words),
                -1i32..130,
                prop::collection::vec(path_observed(), paths.len()),
                prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..64)), paths.len()),
            );
            let mut runner = proptest::test_runner::TestRunner::new(cases(256));
            let result = runner.run(&strategy, |(stdout, status, observed, contents)| {
                let out = ProbeOutput {
                    stdout,
                    status,
                    paths: paths.iter().cloned().zip(observed).collect(),
                    contents: paths
                        .iter()
                        .cloned()
                        .zip(contents)
                        .filter_map(|(p, c)| c.map(|c| (p, c)))
                        .collect(),
                    missing: Vec::new(),
                };
                if let Ok(state) = r.observe(&out) {
                    let planned = r.plan(&state);
                    let _ = r.check(&state);
                    let _ = r.predict(&state);
                    let _ = r.apply(&state, &planned);
                    let _ = r.verify(&state);
                    let _ = r.refresh(&state, &planned);
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("{module}: {e}");
            }
        }
    }

    // ------------------------------------------------------------ path batch

    /// A tree with the files the batch asks about, as real `sh` sees them.
    fn batch_for(root: &Path, names: &[String]) -> PathBatch {
        let mut b = PathBatch::default();
        let queries: Vec<PathQuery> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = root.join(n).display().to_string();
                match i % 3 {
                    0 => PathQuery::stat(p),
                    1 => PathQuery::hashed(p),
                    _ => PathQuery::hashed(p).fetch(plumb_engine::paths::Fetch::Always { limit: 64 }),
                }
            })
            .collect();
        b.add(&queries);
        b
    }

    proptest! {
        #![proptest_config(cases(32))]

        #[test]
        fn the_path_batch_reads_its_real_output_and_never_panics_on_a_damaged_one(
            names in prop::collection::vec("[a-z]{1,4}|\\PC{1,6}|[ '\"\\\\$`\\n\\t*?-]{1,4}", 1..6),
            contents in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 6),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let names: Vec<String> = names
                .into_iter()
                .filter(|n| !n.contains(['/', '\0']) && n != "." && n != ".." && seen.insert(n.clone()))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            for (n, c) in names.iter().zip(&contents) {
                let _ = std::fs::write(dir.path().join(n), c);
            }
            let batch = batch_for(dir.path(), &names);
            let nonce = "c0ffee";
            let out = std::process::Command::new("sh").arg("-c").arg(batch.script(nonce).as_str()).output().unwrap();
            let answers = batch.parse(nonce, &out.stdout);
            prop_assert!(answers.is_some(), "the real output is read: {}", String::from_utf8_lossy(&out.stdout));
            let answers = answers.unwrap();
            for (n, c) in names.iter().zip(&contents) {
                let p = dir.path().join(n).display().to_string();
                let seen = answers.paths.get(&p);
                prop_assert!(seen.is_some(), "{p} observed");
                if let Some(Ok(Some(st))) = seen {
                    prop_assert_eq!(st.kind, FileType::File);
                    prop_assert_eq!(st.size, c.len() as u64);
                }
            }
            // Cut short or with bytes changed: read or refused, never a panic.
            let mut damaged = out.stdout.clone();
            damaged.truncate(cut.index(damaged.len() + 1));
            let _ = batch.parse(nonce, &damaged);
            let mut flipped = out.stdout.clone();
            for (at, b) in flips {
                if !flipped.is_empty() {
                    let i = at.index(flipped.len());
                    flipped[i] = b;
                }
            }
            let _ = batch.parse(nonce, &flipped);
        }

        #[test]
        fn the_facts_reader_never_panics(out in probe_output(probe_words(plumb_engine::facts::probe().as_str()))) {
            let _ = plumb_engine::facts::parse(&out);
        }
    }

    // ------------------------------------------------------------ shell safety

    /// Run `script` with `shell -c` (dash and bash are this machine's real
    /// shells; dash is Debian's `/bin/sh`).
    fn run_in(shell: &str, script: &str) -> Vec<u8> {
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Any text a value can hold: every character but NUL (refused at load
    /// time, see `plumb::plan::nul_byte`), with shell syntax made likely.
    fn shell_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\\x00]{0,40}",
            "[ '\"\\\\$`!*?;&|<>(){}\\[\\]#~=%\\n\\t\\r-]{0,12}",
            "(PLUMB_EOF_[0-9]\\n){0,3}[a-z]{0,3}",
            // dash lost the non-ASCII byte after a start like the terminator.
            "((P|PL|PLUMB_EOF_0|Q|A)[^\\x00-\\x7f][a-z]{0,2}\\n?){1,3}",
            prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..16)
                .prop_map(|c| c.into_iter().collect()),
        ]
    }

    proptest! {
        // Each case starts ten shells.
        #![proptest_config(cases(64))]

        #[test]
        fn every_value_reaches_dash_and_bash_byte_for_byte(v in shell_value()) {
            use plumb_engine::shell::Sh;
            use plumb_engine::plan::Become;
            let want = v.as_bytes();
            for shell in ["dash", "bash"] {
                // An argument (paths, names, options).
                let arg = Sh::raw_start("printf '%s'").arg(&v);
                prop_assert_eq!(run_in(shell, arg.as_str()), want, "{} arg: {}", shell, arg);
                // An assignment (`x=` + value).
                let val = Sh::raw_start("x=").val(&v).raw("\nprintf '%s' \"$x\"");
                prop_assert_eq!(run_in(shell, val.as_str()), want, "{} val: {}", shell, val);
                // A user's command with the value as its argument (`validate`).
                let user = Sh::user_command("printf '%s' \"$1\"", &[Sh::new().val(&v)]);
                prop_assert_eq!(run_in(shell, user.as_str()), want, "{} user command: {}", shell, user);
                // A here-document (file and script bodies).
                let doc = Sh::raw_start("cat").heredoc(&v);
                let mut with_nl = want.to_vec();
                if !v.ends_with('\n') {
                    with_nl.push(b'\n');
                }
                prop_assert_eq!(run_in(shell, doc.as_str()), with_nl, "{} heredoc: {}", shell, doc);
                // A script run through `become` (as root here, so without sudo).
                let become_ = plumb_engine::write::with_become(&arg, &Become::Root, false);
                prop_assert_eq!(run_in(shell, become_.as_str()), want, "{} become: {}", shell, become_);
            }
        }
    }

    // ------------------------------------------------------------ names

    /// The diagnostics of a one-resource plan.
    fn one_resource(resource: &str) -> (Sources, Vec<Diag>) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("resources:\n  - id: r\n    {resource}\n");
        load_plan(dir.path(), text.as_bytes(), &Inventory::local_default())
    }

    /// lvm(8), "VALID NAMES", written out again here as the oracle.
    fn lvm_accepts(name: &str, lv: bool) -> bool {
        let chars = !name.is_empty()
            && name.len() <= 127
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
            && !name.starts_with('-')
            && name != "."
            && name != "..";
        let reserved = lv
            && (name.starts_with("snapshot")
                || name.starts_with("pvmove")
                || [
                    "_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta",
                    "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
                ]
                .iter()
                .any(|r| name.contains(r)));
        chars && !reserved
    }

    /// systemd's unit name rule (unit_name_is_valid) for a name plumb
    /// completes with `.service` when it has no type.
    fn systemd_accepts(name: &str) -> bool {
        let types = [
            ".service",
            ".socket",
            ".timer",
            ".target",
            ".mount",
            ".automount",
            ".path",
            ".slice",
            ".scope",
            ".swap",
            ".device",
        ];
        let full = if types.iter().any(|t| name.ends_with(t)) {
            name.to_string()
        } else {
            format!("{name}.service")
        };
        !name.is_empty()
            && full.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    }

    /// Debian policy 5.6.1: lowercase letters, digits, `+-.`, at least two
    /// characters, starting with a letter or digit; plumb adds `:ARCH`.
    fn dpkg_accepts(name: &str) -> bool {
        let base = name.split_once(':').map_or(name, |(b, _)| b);
        base.len() >= 2
            && base.as_bytes()[0].is_ascii_alphanumeric()
            && base
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    }

    /// A name that is not a template (a template is checked as one first).
    fn name() -> impl Strategy<Value = String> {
        name_or_template().prop_filter("not template syntax", |n| {
            !["{{", "{%", "{#"].iter().any(|t| n.contains(t))
        })
    }

    fn name_or_template() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9+_.-]{1,12}",
            "(snapshot|pvmove|x_tdata|y_cmeta|_rimage)[a-z0-9]{0,3}",
            "[a-z]{1,4}[/ ,;$'\"\\t\\n@:\\\\][a-z]{0,4}",
            "[-.][a-z.]{0,3}",
            "[a-z]{250,260}",
            "\\PC{1,10}",
        ]
    }

    /// Whether some diagnostic points at the value of `param`.
    fn refused(sources: &Sources, diags: &[Diag], value: &str) -> bool {
        diags.iter().any(|d| {
            d.labels.iter().any(|(span, _)| {
                let text = sources.get(span.source).text.clone();
                text.get(span.offset..span.offset + span.len)
                    .is_some_and(|t| t.contains(value) || t.contains(&serde_json::to_string(value).unwrap()))
            })
        })
    }

    proptest! {
        #![proptest_config(cases(256))]

        #[test]
        fn lvm_names_are_refused_at_load_time_exactly_when_lvm_refuses_them(n in name()) {
            let q = serde_json::to_string(&n).unwrap();
            let (sources, diags) = one_resource(&format!("lvm.lv: {{vg: vg0, name: {q}, size: 1G}}"));
            prop_assert_eq!(diags.is_empty(), lvm_accepts(&n, true), "lv `{}`: {}", n, render_plain(&sources, diags.clone()));
            if !diags.is_empty() {
                located(&sources, &diags)?;
                prop_assert!(refused(&sources, &diags, &n) || diags.iter().any(|d| d.message.contains("logical volume name")));
            }
            let (sources, diags) = one_resource(&format!("lvm.vg: {{name: {q}, pvs: [/dev/vdb]}}"));
            prop_assert_eq!(diags.is_empty(), lvm_accepts(&n, false), "vg `{}`: {}", n, render_plain(&sources, diags.clone()));
        }

        #[test]
        fn a_service_or_package_name_plumb_accepts_is_one_the_tool_accepts(n in name()) {
            let q = serde_json::to_string(&n).unwrap();
            let (sources, diags) = one_resource(&format!("service: {{name: {q}}}"));
            if diags.is_empty() {
                prop_assert!(systemd_accepts(&n), "service `{}` accepted, systemd refuses it", n);
            } else {
                located(&sources, &diags)?;
            }
            let (sources, diags) = one_resource(&format!("package: {{name: [{q}]}}"));
            if diags.is_empty() {
                prop_assert!(dpkg_accepts(&n), "package `{}` accepted, dpkg refuses it", n);
            } else {
                located(&sources, &diags)?;
            }
        }

        #[test]
        fn mount_fields_plumb_accepts_fit_one_fstab_field(n in name()) {
            let q = serde_json::to_string(&n).unwrap();
            let one_word = !n.is_empty() && !n.contains(char::is_whitespace);
            // A comma separates options (one per list item); in `fstype` it
            // is mount(8)'s list of types to try, which fstab allows.
            for (resource, fits) in [
                (format!("mount: {{path: /mnt/x, src: {q}, fstype: ext4}}"), one_word),
                (format!("mount: {{path: /mnt/x, src: /dev/vdb, fstype: {q}}}"), one_word),
                (format!("mount: {{path: /mnt/x, src: /dev/vdb, fstype: ext4, opts: [{q}]}}"), one_word && !n.contains(',')),
            ] {
                let (sources, diags) = one_resource(&resource);
                if diags.is_empty() {
                    prop_assert!(fits, "{resource} accepted");
                } else {
                    located(&sources, &diags)?;
                }
            }
        }

        #[test]
        fn a_nul_byte_is_refused_wherever_it_would_reach_a_shell(before in "[a-z/]{0,5}", after in "[a-z]{0,5}") {
            let v = serde_json::to_string(&format!("{before}\0{after}")).unwrap();
            for resource in [
                format!("directory: {{path: {v}}}"),
                format!("command: {{run: {v}, creates: /tmp/x}}"),
                format!("service: {{name: docker}}\n    become: {v}"),
                format!("file: {{path: /tmp/x, content: x, validate: {v}}}"),
            ] {
                let (sources, diags) = one_resource(&resource);
                prop_assert!(!diags.is_empty(), "{resource} accepted");
                located(&sources, &diags)?;
            }
            // A file's content is bytes, sent on standard input: NUL is fine.
            let (sources, diags) = one_resource(&format!("file: {{path: /tmp/x, content: {v}}}"));
            prop_assert!(diags.is_empty(), "{}", render_plain(&sources, diags));
        }
    }
}

/// Regression tests from shrunk property failures, named after the bug.
mod props_regressions {
    use crate::common::Plumb;

    /// Found by `the_plan_loader_locates_every_error_in_generated_plans`:
    /// a plan with a byte that is not UTF-8 was refused with "stream did
    /// not contain valid UTF-8" and no location.
    #[test]
    fn a_plan_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.yaml");
        std::fs::write(&plan, b"resources:\n  - id: d\n    directory: {path: /tmp/\x80x}\n").unwrap();
        let o = Plumb::new().arg("validate").arg(&plan).run();
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("is not UTF-8 text (byte 48)"), "{}", o.stderr);
        assert!(o.stderr.contains("plan.yaml:3:28]"), "{}", o.stderr);
    }

    #[test]
    fn an_inventory_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.yaml");
        std::fs::write(&plan, "resources:\n  - id: d\n    directory: {path: /tmp/x}\n").unwrap();
        let inv = dir.path().join("inv.yaml");
        std::fs::write(&inv, b"hosts:\n  caf\xe9: {}\n").unwrap();
        let o = Plumb::new().arg("validate").arg(&plan).arg("-i").arg(&inv).run();
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("inv.yaml:2:6]"), "{}", o.stderr);
    }
}

mod props_names {
    use crate::common::Plumb;

    fn validate(resource: &str) -> crate::common::Outcome {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.yaml");
        std::fs::write(&plan, format!("resources:\n  - id: r\n    {resource}\n")).unwrap();
        Plumb::new().arg("validate").arg(&plan).run()
    }

    /// Found by `a_nul_byte_is_refused_wherever_it_would_reach_a_shell`: a
    /// `\0` in a path failed every resource of the host at connect time
    /// ("cannot start sh: nul byte found"); over SSH the command would end
    /// at the NUL.
    #[test]
    fn a_nul_byte_in_a_path_is_refused_at_load_time_with_its_location() {
        let o = validate("directory: {path: \"/srv/a\\0b\"}");
        assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("plumb::plan::nul_byte") && o.stderr.contains("plan.yaml:3:23]"),
            "{}",
            o.stderr
        );
        let o = validate("file: {path: /tmp/plumb-props-nul, content: \"a\\0b\"}");
        assert_eq!(o.code, 0, "a file's content may hold NUL: {}", o.stderr);
    }

    /// Found by `a_nul_byte_is_refused_wherever_it_would_reach_a_shell`.
    #[test]
    fn a_become_user_that_is_not_one_word_is_refused() {
        for user in ["\"a\\0b\"", "\"ad min\"", "\"-u\""] {
            let o = validate(&format!("directory: {{path: /tmp/x}}\n    become: {user}"));
            assert_eq!(o.code, 1, "{user}: {}", o.stderr);
            assert!(o.stderr.contains("is not a user name"), "{}", o.stderr);
        }
    }

    /// Found by `lvm_names_are_refused_at_load_time_exactly_when_lvm_refuses_them`:
    /// names lvm(8) reserves passed the load and failed at `lvcreate`.
    #[test]
    fn a_logical_volume_name_lvm_reserves_is_refused_at_load_time() {
        for (name, why) in [
            ("snapshot1", "starting with `snapshot`"),
            ("pvmove", "starting with `pvmove`"),
            ("pool_tdata", "contains `_tdata`"),
        ] {
            let o = validate(&format!("lvm.lv: {{vg: vg0, name: {name}, size: 1G}}"));
            assert_eq!(o.code, 1, "{name}: {}", o.stderr);
            assert!(o.stderr.contains(why), "{}", o.stderr);
        }
    }

    /// Found by `a_service_or_package_name_plumb_accepts_is_one_the_tool_accepts`.
    #[test]
    fn a_unit_name_longer_than_systemd_allows_is_refused() {
        let long = "a".repeat(248);
        let o = validate(&format!("service: {{name: {long}}}"));
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("256 bytes long"), "{}", o.stderr);
        let fits = "a".repeat(247);
        assert_eq!(validate(&format!("service: {{name: {fits}}}")).code, 0);
    }
}
