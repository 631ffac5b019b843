//! What the structured configuration modules (`docker.daemon`,
//! `k3s.registries`, `containerd.hosts`) share: a probe that reads a small
//! configuration file whole, the comparison of two documents key by key
//! (`log-opts.max-size: (none) → 100m`), and the write that replaces the file.
//!
//! These modules compare documents, not bytes: a file that says the same
//! thing in another layout is converged and is not rewritten.

use plumb_engine::module::{Change, Fetch, FileWrite, PathQuery, Payload, ProbeOutput, Step};
use plumb_engine::shell::Sh;
use serde::Serialize;
use serde_json::Value;

use crate::stat::{observed, Kind, PathInfo};

/// Configuration files larger than this are refused (they are read whole).
pub(crate) const MAX_CONFIG: u64 = 1024 * 1024;

/// What the probe saw of a configuration file.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigFile {
    pub(crate) info: PathInfo,
    /// Whether the file's folder exists.
    pub(crate) dir_exists: bool,
    pub(crate) sha256: Option<String>,
    /// The content (not serialized: fingerprints use the hash).
    #[serde(skip)]
    pub(crate) text: Option<Vec<u8>>,
}

impl ConfigFile {
    /// The file's document as `read` understands it (`Ok(None)`: there is no
    /// regular file), or why it cannot be read.
    pub(crate) fn document<T>(&self, read: impl Fn(&[u8]) -> Result<T, String>) -> Result<Option<T>, String> {
        match &self.text {
            Some(t) if self.info.kind == Kind::File => read(t).map(Some),
            _ => Ok(None),
        }
    }
}

/// The folder of an absolute path.
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// What the configuration modules inspect: the file (with its sha256, and
/// its content when it is no larger than [`MAX_CONFIG`]) and its folder.
pub(crate) fn inspect_config(path: &str) -> Vec<PathQuery> {
    vec![
        PathQuery::hashed(path).fetch(Fetch::Always { limit: MAX_CONFIG }),
        PathQuery::stat(parent(path)),
    ]
}

/// Read what [`inspect_config`] observed.
pub(crate) fn parse_config(path: &str, out: &ProbeOutput) -> Result<ConfigFile, String> {
    let (info, sha256) = observed(out, path)?;
    match info.kind {
        Kind::None | Kind::File => {}
        other => {
            return Err(format!(
                "`{path}` is a {}, not a regular file; plumb does not replace it",
                other.describe()
            ))
        }
    }
    // A symlinked folder counts as there: the write fails clearly if it
    // leads nowhere.
    let dir_exists = matches!(observed(out, parent(path))?.0.kind, Kind::Directory | Kind::Link);
    let text = out.content(path).map(<[u8]>::to_vec);
    if info.kind == Kind::File && text.is_none() {
        return Err(format!(
            "`{path}` is larger than {} KiB: not a configuration file plumb reads",
            MAX_CONFIG / 1024
        ));
    }
    Ok(ConfigFile {
        info,
        dir_exists,
        sha256,
        text,
    })
}

/// Steps that write `content` to `path` atomically (with a backup of the old
/// file), creating the folder first when it is missing.
pub(crate) fn write_steps(
    file: &ConfigFile,
    path: &str,
    content: String,
    mode: Option<u32>,
    validate: Option<String>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if !file.dir_exists {
        let dir = parent(path);
        steps.push(Step::run(
            format!("mkdir {dir}"),
            Sh::raw_start("mkdir -p -m 0755 --").arg(dir),
        ));
    }
    steps.push(Step::Write(FileWrite {
        path: path.to_string(),
        payload: Payload::bytes(content.into_bytes()),
        mode,
        owner: None,
        group: None,
        validate,
        backup: true,
    }));
    steps
}

/// One difference between two documents: the keys leading to it, and the
/// old and new values (`None`: absent).
#[derive(Debug, PartialEq)]
pub(crate) struct Leaf {
    pub(crate) path: Vec<String>,
    pub(crate) from: Option<Value>,
    pub(crate) to: Option<Value>,
}

/// Every difference between `old` and `new`, key by key: maps are compared
/// member by member (in `new`'s order, then the members only `old` has), so
/// a key added inside a new map is reported as that key; anything else
/// (strings, numbers, lists) is compared whole.
pub(crate) fn compare(old: Option<&Value>, new: Option<&Value>) -> Vec<Leaf> {
    let mut out = Vec::new();
    walk(old, new, &mut Vec::new(), &mut out);
    out
}

/// `Some(Some(map))` for a map, `Some(None)` for nothing, `None` for another value.
fn as_map(v: Option<&Value>) -> Option<Option<&serde_json::Map<String, Value>>> {
    match v {
        Some(Value::Object(m)) => Some(Some(m)),
        None => Some(None),
        Some(_) => None,
    }
}

fn walk(old: Option<&Value>, new: Option<&Value>, path: &mut Vec<String>, out: &mut Vec<Leaf>) {
    match (as_map(old), as_map(new)) {
        (Some(o), Some(n)) if o.is_some() || n.is_some() => {
            let mut keys: Vec<&String> = n.map(|m| m.keys().collect()).unwrap_or_default();
            if let Some(o) = o {
                keys.extend(o.keys().filter(|k| !n.is_some_and(|n| n.contains_key(*k))));
            }
            for k in keys {
                path.push(k.clone());
                walk(o.and_then(|m| m.get(k)), n.and_then(|m| m.get(k)), path, out);
                path.pop();
            }
        }
        _ => {
            if old != new {
                out.push(Leaf {
                    path: path.clone(),
                    from: old.cloned(),
                    to: new.cloned(),
                });
            }
        }
    }
}

/// A value as a reader expects it: strings bare, anything else as compact
/// JSON. When both sides of a change would read the same (`3` and `"3"`),
/// both are shown as JSON so that the difference shows.
pub(crate) fn show_pair(from: Option<&Value>, to: Option<&Value>) -> (Option<String>, Option<String>) {
    let bare = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let a = from.map(bare);
    let b = to.map(bare);
    if a.is_some() && a == b {
        return (from.map(Value::to_string), to.map(Value::to_string));
    }
    (a, b)
}

/// A leaf as a change, its field the dotted keys (`log-opts.max-size`).
pub(crate) fn leaf_change(l: &Leaf) -> Change {
    let (from, to) = show_pair(l.from.as_ref(), l.to.as_ref());
    Change::new(field_name(&l.path), from, to)
}

/// Dotted keys, a key that holds a dot or a space quoted
/// (`mirrors."docker.io".endpoint`); `content` for the whole document.
pub(crate) fn field_name(path: &[String]) -> String {
    if path.is_empty() {
        return "content".into();
    }
    path.iter()
        .map(|k| {
            if k.is_empty() || k.contains(['.', ' ', '"']) {
                format!("{k:?}")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(leaves: &[Leaf]) -> Vec<String> {
        leaves.iter().map(|l| l.path.join(".")).collect()
    }

    #[test]
    fn nested_maps_are_compared_key_by_key() {
        let old = json!({"a": 1, "log-opts": {"max-size": "10m", "keep": "x"}, "gone": true});
        let new = json!({"a": 1, "log-opts": {"max-size": "100m", "max-file": "3", "keep": "x"}});
        let l = compare(Some(&old), Some(&new));
        assert_eq!(fields(&l), ["log-opts.max-size", "log-opts.max-file", "gone"]);
        assert_eq!(l[1].from, None);
        assert_eq!(l[2].to, None);
    }

    #[test]
    fn keys_inside_a_new_map_are_named_one_by_one() {
        let l = compare(Some(&json!({})), Some(&json!({"log-opts": {"max-size": "100m"}})));
        assert_eq!(fields(&l), ["log-opts.max-size"]);
        let c = leaf_change(&l[0]);
        assert_eq!((c.from, c.to), (None, Some("100m".into())));
    }

    #[test]
    fn lists_and_type_changes_compare_whole() {
        let l = compare(
            Some(&json!({"m": ["a"], "t": {"x": 1}})),
            Some(&json!({"m": ["a", "b"], "t": 5})),
        );
        assert_eq!(fields(&l), ["m", "t"]);
        let c = leaf_change(&l[0]);
        assert_eq!(c.to.as_deref(), Some(r#"["a","b"]"#));
    }

    #[test]
    fn keys_with_dots_are_quoted_in_field_names() {
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(field_name(&p(&["log-opts", "max-size"])), "log-opts.max-size");
        assert_eq!(
            field_name(&p(&["mirrors", "docker.io", "endpoint"])),
            "mirrors.\"docker.io\".endpoint"
        );
    }

    #[test]
    fn values_that_read_the_same_are_shown_as_json() {
        assert_eq!(
            show_pair(Some(&json!(3)), Some(&json!("3"))),
            (Some("3".into()), Some("\"3\"".into()))
        );
        assert_eq!(
            show_pair(Some(&json!("10m")), Some(&json!("100m"))),
            (Some("10m".into()), Some("100m".into()))
        );
    }

    #[test]
    fn equal_documents_have_no_leaves_whatever_their_order() {
        let a = json!({"x": 1, "y": {"p": 1, "q": 2}});
        let b = json!({"y": {"q": 2, "p": 1}, "x": 1});
        assert!(compare(Some(&a), Some(&b)).is_empty());
    }
}
