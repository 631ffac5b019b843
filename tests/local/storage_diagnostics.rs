//! Plan-load diagnostics of the storage modules, rendered as a user sees
//! them (no color, width 80) and pinned by snapshots: impossible and
//! relative sizes, bad percentages, unknown states, unsupported filesystem
//! types, and several storage errors reported together.

use crate::common;

use common::Plumb;

fn validate(fixture: &str) -> String {
    let path = format!("tests/fixtures/diag/storage/{fixture}.yaml");
    let out = Plumb::new().args(["validate", &path]).run();
    assert_eq!(out.code, 1, "validate must fail for {fixture}: {out:?}");
    assert!(
        out.stderr.contains(&format!("{path}:")),
        "the report names file:line:col:\n{}",
        out.stderr
    );
    out.stderr
}

macro_rules! diagnostic {
    ($name:ident, $($needle:literal),+) => {
        #[test]
        fn $name() {
            let rendered = validate(stringify!($name));
            $(assert!(rendered.contains($needle), "missing {:?}:\n{rendered}", $needle);)+
            insta::assert_snapshot!(stringify!($name), rendered);
        }
    };
}

diagnostic!(
    impossible_size,
    "invalid size `15OG`",
    "did you mean `150G`?",
    "impossible_size.yaml:4:47"
);
diagnostic!(
    relative_size,
    "invalid size `+20G`: relative sizes are not supported",
    "sizes are absolute so that re-runs converge",
    "relative_size.yaml:7:13"
);
diagnostic!(
    bad_percent,
    "unknown percentage base `FREEE`",
    "did you mean `100%FREE`?"
);
diagnostic!(unknown_state, "unknown value `mountd`", "did you mean `mounted`?");
diagnostic!(
    unsupported_fs,
    "unsupported filesystem type `zfs`",
    "unsupported_fs.yaml:6:13"
);
diagnostic!(
    storage_errors,
    "8 errors in",
    "invalid volume group name `vg fast`",
    "only `100%FREE` converges",
    "ext4 labels hold at most 16",
    "missing parameter `src`",
    "`migrate` needs `state: mounted`"
);
