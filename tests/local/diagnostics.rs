//! Every plan diagnostic, rendered as a user sees it (no color, width 80),
//! pinned by a snapshot that shows file:line:col and the underlined text.

use crate::common;

use common::Plumb;

fn validate(fixture: &str) -> String {
    let out = Plumb::new()
        .args(["validate", &format!("tests/fixtures/diag/{fixture}.yaml")])
        .run();
    assert_eq!(out.code, 1, "validate must fail for {fixture}: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    out.stderr
}

macro_rules! diagnostic {
    ($name:ident) => {
        diagnostic!($name, "");
    };
    ($name:ident, $dir:literal) => {
        #[test]
        fn $name() {
            let rendered = validate(&format!("{}{}", $dir, stringify!($name)));
            assert!(
                rendered.contains(&format!(
                    "tests/fixtures/diag/{}{}.yaml:",
                    $dir,
                    stringify!($name)
                )),
                "the report names file:line:col:\n{rendered}"
            );
            insta::assert_snapshot!(stringify!($name), rendered);
        }
    };
}

diagnostic!(yaml_syntax);
diagnostic!(unquoted_template);
diagnostic!(unknown_plan_key);
diagnostic!(unknown_envelope_key);
diagnostic!(unknown_module);
diagnostic!(no_module);
diagnostic!(two_modules);
diagnostic!(unknown_param);
diagnostic!(params_beside_module);
diagnostic!(wrong_type);
diagnostic!(bad_envelope_values);
diagnostic!(bad_mode);
diagnostic!(bad_values_of_one_resource);
diagnostic!(relative_path);
diagnostic!(a_relative_path_gets_no_wrong_guess);
diagnostic!(duplicate_id);
diagnostic!(unknown_id);
diagnostic!(cycle);
diagnostic!(undefined_var);
diagnostic!(unknown_host);
diagnostic!(many_errors);
diagnostic!(unknown_inventory_group, "inv/");
diagnostic!(two_resources_on_one_path_are_refused);
diagnostic!(one_path_twice_on_one_host, "inv/");

/// Every kind of thing a module manages alone is refused when two resources
/// manage it: a file and a directory on one path, a file over
/// `docker.daemon`'s file, a PV in two VGs, an LV, a filesystem (named by
/// two aliases of one device), a mount point, a service.
#[test]
fn each_kind_of_thing_managed_twice_is_refused() {
    let rendered = validate("each_kind_of_thing_managed_twice_is_refused");
    for what in [
        "the path `/tmp/plumb-twice/conf`",
        "the path `/tmp/plumb-twice/daemon.json`",
        "the physical volume `/dev/vdb`",
        "the logical volume `fast/docker`",
        "the filesystem on `/dev/mapper/fast-docker`",
        "the mount point `/var/lib/docker`",
        "the service `docker.service`",
    ] {
        assert!(rendered.contains(what), "missing {what}:\n{rendered}");
    }
    assert_eq!(rendered.matches("plumb::plan::managed_twice").count(), 7, "{rendered}");
}

/// `hosts:` narrows first: one path managed by two resources, each for its
/// own host, is one resource per host.
#[test]
fn one_path_for_two_different_hosts_is_accepted() {
    let out = Plumb::new()
        .args(["validate", "tests/fixtures/diag/inv/one_path_on_two_hosts.yaml"])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
}

/// A plan that manages one path twice is refused before anything runs.
#[test]
fn a_plan_managing_one_path_twice_changes_nothing() {
    let s = common::Scratch::new();
    s.plan("resources:\n  - id: a\n    file: {path: \"{{ root }}/f\", content: \"a\"}\n  - id: b\n    file: {path: \"{{ root }}/f\", content: \"b\"}\n");
    for cmd in ["diff", "apply"] {
        let out = s.run(cmd, &[]);
        common::expect(&out, 1, cmd);
        assert!(out.stderr.contains("both manage the path"), "{cmd}: {}", out.stderr);
    }
    assert!(!s.root().exists(), "nothing was created");
}

/// `path: {{ base }}/a` is a YAML flow mapping, not a template: the error
/// says to quote it and shows the quoted line.
#[test]
fn a_value_starting_with_braces_must_be_quoted() {
    let rendered = validate("unquoted_template");
    assert!(
        rendered.contains("a value that starts with `{{` must be quoted"),
        "{rendered}"
    );
    assert!(
        rendered.contains(r#"write it quoted: `path: "{{ base }}/a"`"#),
        "{rendered}"
    );
    assert!(rendered.contains("unquoted_template.yaml:7:13"), "{rendered}");
}

/// Parameters written beside `file:` instead of under it: one error that
/// says `file:` is empty, not an "unknown key" per parameter.
#[test]
fn parameters_beside_their_module_key_are_one_clear_error() {
    let rendered = validate("params_beside_module");
    assert!(
        rendered.contains("`file:` has no parameters; `path`, `content` are written beside it"),
        "{rendered}"
    );
    assert!(rendered.contains("indent them under `file:`"), "{rendered}");
    assert!(
        rendered.contains("`mode` is written beside `directory:` instead of under it"),
        "{rendered}"
    );
    assert!(!rendered.contains("unknown key"), "{rendered}");
}

/// A wrong `hosts:`, a relative path, an undefined variable in `when:` and
/// a cycle are independent: one run reports all four, each at its place.
#[test]
fn errors_of_every_phase_are_reported_together() {
    let rendered = validate("errors_of_every_phase");
    for (code, at) in [
        ("plumb::plan::unknown_host", ":2:9"),
        ("plumb::plan::relative_path", ":5:18"),
        ("plumb::template::undefined", ":8:12"),
        ("plumb::plan::cycle", ":12:9"),
    ] {
        assert!(rendered.contains(code), "missing {code}:\n{rendered}");
        assert!(
            rendered.contains(&format!("errors_of_every_phase.yaml{at}")),
            "missing {at}:\n{rendered}"
        );
    }
    assert!(rendered.contains("4 errors"), "{rendered}");
    let out = Plumb::new()
        .args([
            "validate",
            "tests/fixtures/diag/errors_of_every_phase.yaml",
            "-l",
            "nosuch",
        ])
        .run();
    assert!(out.stderr.contains("5 errors"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--limit: unknown host or group `nosuch`"),
        "{}",
        out.stderr
    );
}

/// With a wrong `hosts:`, the hosts meant are unknown: the resource errors
/// every host has are reported, not those of a host that was not meant
/// (`registry` is defined for `edgeserver` only).
#[test]
fn a_wrong_host_selection_reports_the_errors_every_host_has() {
    let rendered = validate("inv/wrong_selection_and_resource_errors");
    assert!(rendered.contains("unknown host or group `edge-servers`"), "{rendered}");
    assert!(rendered.contains("found `etc/motd`"), "{rendered}");
    assert!(rendered.contains("2 errors"), "{rendered}");
    assert!(!rendered.contains("registry"), "{rendered}");
}

/// The help proposes an absolute path only when it is likely the one meant
/// (`etc/motd`, a device under `/dev`), never `/relative.conf`.
#[test]
fn a_relative_path_is_not_given_a_wrong_absolute_path() {
    let rendered = validate("a_relative_path_gets_no_wrong_guess");
    for wrong in ["`/relative.conf`", "`/newcomer-target", "`/vdc`"] {
        assert!(!rendered.contains(wrong), "proposes {wrong}:\n{rendered}");
    }
    assert!(rendered.contains("`/dev/vdc`"), "{rendered}");
    assert!(validate("relative_path").contains("write it from the root: `/etc/motd`"));
}

/// serde stops at a struct's first bad field; every bad value of one
/// resource is reported anyway, each at its line.
#[test]
fn every_bad_value_of_one_resource_is_reported() {
    let rendered = validate("bad_values_of_one_resource");
    for at in [":7:13", ":8:15", ":9:14"] {
        assert!(rendered.contains(at), "missing {at}:\n{rendered}");
    }
    assert!(rendered.contains("3 errors in "), "{rendered}");
    assert_eq!(rendered.matches("plumb::plan::").count(), 3, "{rendered}");
}

#[test]
fn every_error_of_a_file_is_reported_together() {
    let rendered = validate("many_errors");
    assert!(
        rendered.contains("5 errors in tests/fixtures/diag/many_errors.yaml"),
        "{rendered}"
    );
    // The relative path is reported beside the bad mode of the same resource.
    for code in [
        "invalid_value",
        "relative_path",
        "unknown_module",
        "unguarded_command",
        "unknown_id",
    ] {
        assert!(
            rendered.contains(&format!("plumb::plan::{code}")),
            "missing {code}:\n{rendered}"
        );
    }
}

#[test]
fn a_missing_plan_file_is_a_clear_error() {
    let out = Plumb::new()
        .args(["validate", "tests/fixtures/diag/no_such_plan.yaml"])
        .run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot read `tests/fixtures/diag/no_such_plan.yaml`"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_invalid_plan_is_refused_by_diff_and_apply_too() {
    for cmd in ["diff", "apply"] {
        let mut p = Plumb::new().args([cmd, "tests/fixtures/diag/cycle.yaml"]);
        if cmd == "apply" {
            p = p.arg("--yes");
        }
        let out = p.run();
        assert_eq!(out.code, 1, "{cmd}: {out:?}");
        assert!(out.stderr.contains("dependency cycle"), "{cmd}: {}", out.stderr);
    }
}
