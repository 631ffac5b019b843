//! Every plan diagnostic, rendered as a user sees it (no color, width 80),
//! pinned by a snapshot that shows file:line:col and the underlined text.

mod common;

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
diagnostic!(unknown_plan_key);
diagnostic!(unknown_envelope_key);
diagnostic!(unknown_module);
diagnostic!(no_module);
diagnostic!(two_modules);
diagnostic!(unknown_param);
diagnostic!(wrong_type);
diagnostic!(bad_mode);
diagnostic!(bad_values_of_one_resource);
diagnostic!(relative_path);
diagnostic!(duplicate_id);
diagnostic!(unknown_id);
diagnostic!(cycle);
diagnostic!(undefined_var);
diagnostic!(unknown_host);
diagnostic!(many_errors);
diagnostic!(unknown_inventory_group, "inv/");

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
        rendered.contains("4 errors in tests/fixtures/diag/many_errors.yaml"),
        "{rendered}"
    );
    for code in ["invalid_value", "unknown_module", "unguarded_command", "unknown_id"] {
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
