//! Plans as the user wrote them ([`RawPlan`]): loaded with spans, the resource
//! envelope checked, ids, references and module names validated. Nothing here
//! is templated or typed yet: that happens per host in [`crate::compile`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{did_you_mean, nearest, Diag};
use crate::module::Registry;
use crate::source::{SourceId, Sources, Span};
use crate::yaml::{self, Node, Value};
use serde::de::{self, Visitor};
use serde::Deserialize;

/// Keys of a resource beside its module key.
pub const ENVELOPE_KEYS: &[&str] = &["id", "requires", "notify", "when", "hosts", "become", "sensitive"];

/// Top-level keys of a plan.
pub const PLAN_KEYS: &[&str] = &["plan", "description", "hosts", "vars", "include", "resources"];

/// A string with the place it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The text.
    pub value: String,
    /// Where.
    pub span: Span,
}

impl<'de> Deserialize<'de> for Located {
    /// A scalar as written, with its place (through [`yaml::from_node`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = yaml::Spanned::<String>::deserialize(d)?;
        Ok(Located {
            value: s.value,
            span: s.span,
        })
    }
}

/// How a resource's commands are run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Become {
    /// As the connecting user.
    No,
    /// Through `sudo -n` as root.
    Root,
    /// Through `sudo -n -u USER`.
    User(String),
}

impl<'de> Deserialize<'de> for Become {
    /// `true`, `false` or a user name (one word, not an option), as a
    /// resource's `become:` and an inventory's are written.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Become;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`true`, `false` or a user name")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Become, E> {
                Ok(if b { Become::Root } else { Become::No })
            }
            fn visit_str<E: de::Error>(self, u: &str) -> Result<Become, E> {
                if u == "root" {
                    Ok(Become::Root)
                } else if u.is_empty()
                    || u.starts_with('-')
                    || u.contains(|c: char| c.is_whitespace() || c.is_control())
                {
                    Err(E::custom(format!(
                        "`{}` is not a user name\nhelp: `become` is `true`, `false` or the user to run as (`sudo -u USER`): one word, not starting with `-`",
                        u.escape_debug()
                    )))
                } else {
                    Ok(Become::User(u.to_string()))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys of a resource beside its module key, as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    id: Option<ResourceId>,
    #[serde(default)]
    requires: StringList,
    #[serde(default)]
    notify: StringList,
    #[serde(default, deserialize_with = "present")]
    when: Option<yaml::Spanned<When>>,
    #[serde(default, deserialize_with = "present")]
    hosts: Option<StringList>,
    #[serde(rename = "become", default, deserialize_with = "present")]
    become_: Option<Become>,
    #[serde(default)]
    sensitive: bool,
}

/// A key that is present is read even when its value is null (`hosts:`
/// with nothing after it selects no host, `become:` alone is an error).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A resource id: lowercase letters, digits, `-` and `_`.
struct ResourceId(Located);

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = Located::deserialize(d)?;
        if valid_id(&id.value) {
            Ok(ResourceId(id))
        } else {
            Err(de::Error::custom(format!(
                "invalid id `{}`\nhelp: ids are lowercase letters, digits, `-` and `_`, starting with a letter or digit",
                id.value
            )))
        }
    }
}

/// `when:`: an expression or a boolean.
enum When {
    Expr(String),
    Bool(bool),
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = When;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an expression (a string) or a boolean")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<When, E> {
                Ok(When::Bool(b))
            }
            fn visit_str<E: de::Error>(self, e: &str) -> Result<When, E> {
                Ok(When::Expr(e.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings (null: none).
#[derive(Default)]
struct StringList(Vec<Located>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One scalar, as text, or a list.
        enum Written {
            One(String),
            Many(Vec<Located>),
        }
        impl<'de> Deserialize<'de> for Written {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Written;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string or a list of strings")
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<Written, E> {
                        Ok(Written::One(s.to_string()))
                    }
                    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Written, E> {
                        Ok(Written::One(b.to_string()))
                    }
                    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Written, E> {
                        Ok(Written::One(i.to_string()))
                    }
                    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Written, E> {
                        Ok(Written::One(f.to_string()))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<Written, E> {
                        Ok(Written::Many(Vec::new()))
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Written, A::Error> {
                        let mut items = Vec::new();
                        while let Some(item) = seq.next_element::<Located>()? {
                            items.push(item);
                        }
                        Ok(Written::Many(items))
                    }
                }
                d.deserialize_any(V)
            }
        }
        let w = yaml::Spanned::<Written>::deserialize(d)?;
        Ok(StringList(match w.value {
            Written::One(value) => vec![Located { value, span: w.span }],
            Written::Many(items) => items,
        }))
    }
}

/// One resource as written.
#[derive(Clone, Debug)]
pub struct RawResource {
    /// Its id.
    pub id: Located,
    /// Module key and its place.
    pub module: Located,
    /// The module's parameters (not yet templated).
    pub params: Node,
    /// Explicit requirements.
    pub requires: Vec<Located>,
    /// Resources to refresh when this one changed.
    pub notify: Vec<Located>,
    /// Condition (a minijinja expression, or a boolean).
    pub when: Option<Node>,
    /// Narrower host selection.
    pub hosts: Option<Vec<Located>>,
    /// `become` as written (`None`: inherit from the host).
    pub become_: Option<Become>,
    /// Keep every value out of every output.
    pub sensitive: bool,
    /// The whole list item.
    pub span: Span,
}

/// A plan as written, includes merged.
#[derive(Clone, Debug)]
pub struct RawPlan {
    /// Where the plan file is.
    pub path: PathBuf,
    /// Its folder (relative paths in the plan are relative to it).
    pub dir: PathBuf,
    /// The plan file's source id.
    pub source: SourceId,
    /// `plan:` name (default: the file stem).
    pub name: String,
    /// `description:`.
    pub description: Option<String>,
    /// `hosts:` selection (default `all`).
    pub hosts: Vec<Located>,
    /// `vars:`, as JSON values.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Every resource, plan first, then includes in order.
    pub resources: Vec<RawResource>,
    /// Ids of resources that have errors of their own (and are left out):
    /// references to them are not reported again as unknown.
    pub broken: Vec<String>,
}

impl RawPlan {
    /// The resource with id `id`.
    #[must_use]
    pub fn resource(&self, id: &str) -> Option<&RawResource> {
        self.resources.iter().find(|r| r.id.value == id)
    }
}

/// Read a file into `sources`; a missing file is a diagnostic.
///
/// # Errors
/// The file cannot be read.
pub fn read_source(sources: &Sources, path: &Path, display: &str) -> Result<SourceId, Diag> {
    match std::fs::read(path) {
        Ok(bytes) => source_from_bytes(sources, path, display, bytes),
        Err(e) => Err(Diag::bare("plumb::plan::read", format!("cannot read `{display}`: {e}"))),
    }
}

/// A file's bytes as a source. A file that is not UTF-8 is refused at its
/// first invalid byte: it is added with that byte shown as `�`, so that the
/// error points at its line and column.
fn source_from_bytes(sources: &Sources, path: &Path, display: &str, bytes: Vec<u8>) -> Result<SourceId, Diag> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(sources.add(display, path, text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            // The lossy text keeps every byte before `at`, then a U+FFFD.
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let id = sources.add(display, path, text);
            Err(Diag::new(
                "plumb::plan::not_utf8",
                format!("`{display}` is not UTF-8 text (byte {at})"),
                Span::new(id, at, '\u{FFFD}'.len_utf8()),
                "not UTF-8",
            )
            .with_help("plans and inventories are UTF-8; save the file as UTF-8"))
        }
    }
}

/// Load and check a plan file: the plan with every resource that is sound
/// (`None` when the file cannot be read or parsed at all), and every problem
/// found in the plan and its includes. A plan with problems is only good for
/// finding more problems (compiling what is sound), never for running.
pub fn load(sources: &Sources, path: &Path, registry: &Registry) -> (Option<RawPlan>, Vec<Diag>) {
    let display = path.display().to_string();
    let id = match read_source(sources, path, &display) {
        Ok(id) => id,
        Err(d) => return (None, vec![d]),
    };
    let root = match yaml::parse(sources, id) {
        Ok(r) => r,
        Err(d) => return (None, vec![d]),
    };
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut diags = Vec::new();
    let mut plan = RawPlan {
        path: path.to_path_buf(),
        dir: dir.clone(),
        source: id,
        name: path
            .file_stem()
            .map_or_else(|| "plan".into(), |s| s.to_string_lossy().into_owned()),
        description: None,
        hosts: vec![Located {
            value: "all".into(),
            span: Span::new(id, 0, 0),
        }],
        vars: BTreeMap::new(),
        resources: Vec::new(),
        broken: Vec::new(),
    };
    let Some(entries) = root.as_map() else {
        let d = Diag::new(
            "plumb::plan::not_a_mapping",
            format!("a plan is a mapping with `resources:`, found {}", root.type_name()),
            root.span,
            "",
        );
        return (None, vec![d]);
    };
    let mut has_resources = false;
    // Defaults from included files (with where each was set), under the
    // plan's own `vars:`.
    let mut included_vars: BTreeMap<String, (serde_json::Value, Span)> = BTreeMap::new();
    for e in entries {
        match e.key.as_str() {
            "plan" => match e.value.as_str() {
                Some(s) => plan.name = s.to_string(),
                None => diags.push(wrong_type(&e.value, "a string")),
            },
            "description" => match e.value.as_str() {
                Some(s) => plan.description = Some(s.to_string()),
                None => diags.push(wrong_type(&e.value, "a string")),
            },
            "hosts" => match string_list(&e.value) {
                Ok(h) => plan.hosts = h,
                Err(d) => diags.push(d),
            },
            "vars" => match &e.value.value {
                Value::Map(m) => {
                    for v in m {
                        plan.vars.insert(v.key.clone(), v.value.to_var_json());
                    }
                }
                Value::Null => {}
                _ => diags.push(wrong_type(&e.value, "a mapping of variables")),
            },
            "include" => match string_list(&e.value) {
                Ok(files) => {
                    for f in files {
                        load_include(
                            sources,
                            &dir,
                            &f,
                            &mut Included {
                                resources: &mut plan.resources,
                                vars: &mut included_vars,
                                broken: &mut plan.broken,
                            },
                            registry,
                            &mut diags,
                        );
                    }
                }
                Err(d) => diags.push(d),
            },
            "resources" => {
                has_resources = true;
                let mut found = parse_resources(&e.value, registry, &mut plan.broken, &mut diags);
                // Plan resources come first, includes after, whatever the key order.
                found.append(&mut plan.resources);
                plan.resources = found;
            }
            other => diags.push(
                Diag::new(
                    "plumb::plan::unknown_key",
                    format!("unknown key `{other}` in plan"),
                    e.key_span,
                    "not a plan key",
                )
                .with_help(
                    did_you_mean(other, PLAN_KEYS.iter().copied())
                        .unwrap_or_else(|| format!("a plan has the keys {}", crate::diag::ticked(PLAN_KEYS))),
                ),
            ),
        }
    }
    for (k, (v, _)) in included_vars {
        plan.vars.entry(k).or_insert(v);
    }
    if !has_resources && plan.resources.is_empty() && diags.is_empty() {
        diags.push(
            Diag::new(
                "plumb::plan::no_resources",
                "the plan has no `resources:` list",
                root.span,
                "",
            )
            .with_help("add `resources:` with at least one resource"),
        );
    }
    check_references(&plan, registry, &mut diags);
    (Some(plan), diags)
}

/// Where an included file's content goes.
struct Included<'a> {
    resources: &'a mut Vec<RawResource>,
    vars: &'a mut BTreeMap<String, (serde_json::Value, Span)>,
    broken: &'a mut Vec<String>,
}

fn load_include(
    sources: &Sources,
    dir: &Path,
    file: &Located,
    into: &mut Included<'_>,
    registry: &Registry,
    diags: &mut Vec<Diag>,
) {
    let path = dir.join(&file.value);
    let id = match std::fs::read(&path) {
        Ok(bytes) => match source_from_bytes(sources, &path, &path.display().to_string(), bytes) {
            Ok(id) => id,
            Err(d) => {
                diags.push(d);
                return;
            }
        },
        Err(e) => {
            diags.push(Diag::new(
                "plumb::plan::include",
                format!("cannot read include `{}`: {e}", path.display()),
                file.span,
                "included here",
            ));
            return;
        }
    };
    let root = match yaml::parse(sources, id) {
        Ok(r) => r,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    let list = match &root.value {
        Value::Seq(_) => &root,
        Value::Map(m) => {
            for e in m {
                match e.key.as_str() {
                    "resources" => {}
                    "vars" => include_vars(sources, &e.value, into.vars, diags),
                    other => diags.push(
                        Diag::new(
                            "plumb::plan::unknown_key",
                            format!("unknown key `{other}` in an included file"),
                            e.key_span,
                            "",
                        )
                        .with_help(
                            did_you_mean(other, ["resources", "vars"])
                                .unwrap_or_else(|| "an included file holds `vars:` and `resources:`".into()),
                        ),
                    ),
                }
            }
            match root.get("resources") {
                Some(e) => &e.value,
                None => return,
            }
        }
        _ => {
            diags.push(wrong_type(&root, "a list of resources"));
            return;
        }
    };
    into.resources
        .extend(parse_resources(list, registry, into.broken, diags));
}

/// An included file's `vars:`: defaults under the plan's own. Two included
/// files that give one variable different values are an error (which one
/// was meant cannot be told).
fn include_vars(
    sources: &Sources,
    node: &Node,
    vars: &mut BTreeMap<String, (serde_json::Value, Span)>,
    diags: &mut Vec<Diag>,
) {
    match &node.value {
        Value::Map(m) => {
            for v in m {
                let value = v.value.to_var_json();
                match vars.get(&v.key) {
                    Some((old, _)) if *old == value => {}
                    Some((_, first)) => {
                        let f = sources.get(first.source);
                        let (line, col) = crate::source::line_col(&f.text, first.offset);
                        diags.push(
                            Diag::new(
                                "plumb::plan::include_vars",
                                format!(
                                    "variable `{}` has another default in an earlier included file ({}:{line}:{col})",
                                    v.key, f.name
                                ),
                                v.key_span,
                                "a second default",
                            )
                            .with_help("set it once, or in the plan's own `vars:` (which override included defaults)"),
                        );
                    }
                    None => {
                        vars.insert(v.key.clone(), (value, v.key_span));
                    }
                }
            }
        }
        Value::Null => {}
        _ => diags.push(wrong_type(node, "a mapping of variables")),
    }
}

fn wrong_type(node: &Node, expected: &str) -> Diag {
    Diag::new(
        "plumb::plan::wrong_type",
        format!("wrong type: found {}, expected {expected}", node.type_name()),
        node.span,
        "",
    )
}

/// A string or a list of strings.
fn string_list(node: &Node) -> Result<Vec<Located>, Diag> {
    match &node.value {
        Value::Str(_) | Value::Bool(_) | Value::Int(_) | Value::Float(_) => Ok(vec![Located {
            value: node.scalar_text().unwrap_or_default(),
            span: node.span,
        }]),
        Value::Seq(items) => items
            .iter()
            .map(|n| match n.scalar_text() {
                Some(s) => Ok(Located { value: s, span: n.span }),
                None => Err(wrong_type(n, "a string")),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        Value::Map(_) => Err(wrong_type(node, "a string or a list of strings")),
    }
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn parse_resources(
    node: &Node,
    registry: &Registry,
    broken: &mut Vec<String>,
    diags: &mut Vec<Diag>,
) -> Vec<RawResource> {
    let Value::Seq(items) = &node.value else {
        if node.value != Value::Null {
            diags.push(wrong_type(node, "a list of resources"));
        }
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let r = parse_resource(item, registry, diags);
            if r.is_none() {
                if let Some(id) = item.get("id").and_then(|e| e.value.scalar_text()) {
                    broken.push(id);
                }
            }
            r
        })
        .collect()
}

fn parse_resource(item: &Node, registry: &Registry, diags: &mut Vec<Diag>) -> Option<RawResource> {
    let Some(entries) = item.as_map() else {
        diags.push(wrong_type(item, "a resource (a mapping with `id` and a module key)"));
        return None;
    };
    let before = diags.len();
    // Which key is the module is the one thing read by hand: the envelope
    // around it is a struct.
    let mut envelope = Vec::new();
    let mut modules = Vec::new();
    let mut unknown_module = false;
    // Parameters of the resource's module written beside its key instead
    // of under it (a missing indentation): reported together, below.
    let module_params = entries
        .iter()
        .find_map(|e| registry.get(&e.key))
        .map(crate::module::ModuleEntry::param_names)
        .unwrap_or_default();
    let mut beside = Vec::new();
    for e in entries {
        match e.key.as_str() {
            key if ENVELOPE_KEYS.contains(&key) => envelope.push(e.clone()),
            key if registry.get(key).is_some() => modules.push(e),
            key if module_params.contains(&key) => beside.push(e),
            _ => unknown_module |= unknown_key(e, registry, diags),
        }
    }
    let envelope = Node {
        value: Value::Map(envelope),
        span: item.span,
        raw: None,
    };
    let (envelope, errors, _) = yaml::from_node_partial::<Envelope>(&envelope, item.span);
    diags.extend(errors);
    let Envelope {
        id,
        requires,
        notify,
        when,
        hosts,
        become_,
        sensitive,
    } = envelope.unwrap_or_default();
    let id = id.map(|i| i.0);
    if let (Some(StringList(list)), Some(e)) = (&hosts, item.get("hosts")) {
        if list.is_empty() {
            diags.push(
                Diag::new(
                    "plumb::plan::no_hosts",
                    "`hosts` selects no host: the resource would run nowhere",
                    e.key_span,
                    "empty",
                )
                .with_help("name hosts or groups of the inventory, or remove `hosts:` to run on the plan's hosts"),
            );
        }
    }
    if let (Some(m), Some(first)) = (modules.first(), beside.first()) {
        diags.push(params_beside(m, first, &beside[1..]));
    }
    let span = item.span;
    if id.is_none() && diags.len() == before {
        diags.push(
            Diag::new("plumb::plan::missing_id", "resource has no `id`", span, "this resource")
                .with_help("give every resource a unique `id: name`"),
        );
    }
    if !(modules.is_empty() && unknown_module) {
        diags.extend(module_count(&modules, id.as_ref(), span));
    }
    if diags.len() != before {
        return None;
    }
    let m = modules.into_iter().next()?;
    Some(RawResource {
        id: id?,
        module: Located {
            value: m.key.clone(),
            span: m.key_span,
        },
        params: m.value.clone(),
        requires: requires.0,
        notify: notify.0,
        when: when.map(|w| Node {
            value: match w.value {
                When::Expr(e) => Value::Str(e),
                When::Bool(b) => Value::Bool(b),
            },
            span: w.span,
            raw: None,
        }),
        hosts: hosts.map(|h| h.0),
        become_,
        sensitive,
        span,
    })
}

/// A resource without a module key, or with two: the error (`id`: its
/// id, if it has a valid one).
fn module_count(modules: &[&yaml::Entry], id: Option<&Located>, span: Span) -> Option<Diag> {
    let name = id.map_or_else(String::new, |i| format!(" `{}`", i.value));
    match modules {
        [] => Some(
            Diag::new(
                "plumb::plan::no_module",
                format!("resource{name} has no module key"),
                id.map_or(span, |i| i.span),
                "",
            )
            .with_help("add one module key, such as `file:` or `directory:`; `plumb doc` lists every module"),
        ),
        [_] => None,
        [first, rest @ ..] => {
            let keys: Vec<String> = modules.iter().map(|m| format!("`{}`", m.key)).collect();
            let mut d = Diag::new(
                "plumb::plan::two_modules",
                format!(
                    "resource{name} has {} module keys: {}",
                    modules.len(),
                    keys.join(" and ")
                ),
                first.key_span,
                "one module",
            );
            for m in rest {
                d = d.with_label(m.key_span, "another module");
            }
            Some(d.with_help("a resource manages one thing: split it into two resources with their own ids"))
        }
    }
}

/// A key that is neither the envelope's nor a module's: reported as an
/// unknown module when it looks like one (true), else as an unknown key.
fn unknown_key(e: &yaml::Entry, registry: &Registry, diags: &mut Vec<Diag>) -> bool {
    let key = e.key.as_str();
    let modules_near = nearest(key, registry.names());
    let envelope_near = nearest(key, ENVELOPE_KEYS.iter().copied());
    let looks_like_module = matches!(e.value.value, Value::Map(_)) || key.contains('.');
    if (looks_like_module || modules_near.is_some()) && envelope_near.is_none() {
        let help = modules_near.map_or_else(
            || format!("the modules are {}", crate::diag::ticked(registry.names())),
            |m| format!("did you mean `{m}`?"),
        );
        diags.push(
            Diag::new(
                "plumb::plan::unknown_module",
                format!("unknown module `{key}`"),
                e.key_span,
                "no such module",
            )
            .with_help(help),
        );
        return true;
    }
    let help = envelope_near.map_or_else(
        || {
            format!(
                "a resource has `id`, one module key, and optionally {}",
                crate::diag::ticked(&ENVELOPE_KEYS[1..])
            )
        },
        |k| format!("did you mean `{k}`?"),
    );
    diags.push(
        Diag::new(
            "plumb::plan::unknown_key",
            format!("unknown key `{key}` in resource"),
            e.key_span,
            "not a resource key",
        )
        .with_help(help),
    );
    false
}

/// Parameters of module `m` written beside its key (`first`, `rest`).
fn params_beside(m: &yaml::Entry, first: &yaml::Entry, rest: &[&yaml::Entry]) -> Diag {
    let names = crate::diag::ticked(std::iter::once(first).chain(rest.iter().copied()).map(|e| &e.key));
    let empty = matches!(m.value.value, Value::Null);
    let are = if rest.is_empty() { "is" } else { "are" };
    let message = if empty {
        format!("`{}:` has no parameters; {names} {are} written beside it", m.key)
    } else {
        format!("{names} {are} written beside `{}:` instead of under it", m.key)
    };
    let mut d = Diag::new(
        "plumb::plan::params_beside_module",
        message,
        first.key_span,
        "beside the module key",
    );
    for e in rest {
        d = d.with_label(e.key_span, "beside the module key");
    }
    d.with_label(m.key_span, if empty { "empty" } else { "its parameters" })
        .with_help(if empty {
            format!("indent them under `{}:`", m.key)
        } else {
            format!("move them into `{}:`'s parameters", m.key)
        })
}

fn check_references(plan: &RawPlan, registry: &Registry, diags: &mut Vec<Diag>) {
    let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
    for r in &plan.resources {
        if let Some(first) = seen.get(r.id.value.as_str()) {
            diags.push(
                Diag::new(
                    "plumb::plan::duplicate_id",
                    format!("duplicate id `{}`", r.id.value),
                    r.id.span,
                    "used again here",
                )
                .with_label(*first, "first used here")
                .with_help("ids must be unique across the plan and its includes"),
            );
        } else {
            seen.insert(&r.id.value, r.id.span);
        }
    }
    let ids: Vec<&str> = plan
        .resources
        .iter()
        .map(|r| r.id.value.as_str())
        .chain(plan.broken.iter().map(String::as_str))
        .collect();
    for r in &plan.resources {
        for (kind, list) in [("requires", &r.requires), ("notify", &r.notify)] {
            for target in list {
                let Some(t) = plan.resource(&target.value) else {
                    if plan.broken.contains(&target.value) {
                        continue;
                    }
                    diags.push(
                        Diag::new(
                            "plumb::plan::unknown_id",
                            format!("`{kind}` names an unknown id `{}`", target.value),
                            target.span,
                            "no resource has this id",
                        )
                        .with_help_opt(did_you_mean(&target.value, ids.iter().copied())),
                    );
                    continue;
                };
                if t.id.value == r.id.value {
                    diags.push(Diag::new(
                        "plumb::plan::self_reference",
                        format!("resource `{}` names itself in `{kind}`", r.id.value),
                        target.span,
                        "",
                    ));
                    continue;
                }
                if kind == "notify" && registry.get(&t.module.value).is_some_and(|m| !m.refreshable()) {
                    diags.push(
                        Diag::new(
                            "plumb::plan::not_refreshable",
                            format!(
                                "`{}` cannot be notified: a `{}` resource has nothing to refresh",
                                t.id.value, t.module.value
                            ),
                            target.span,
                            "",
                        )
                        .with_help("notify a `service` or a `command`; use `requires` for ordering"),
                    );
                }
            }
        }
    }
}
