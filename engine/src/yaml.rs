//! A YAML document as a tree of [`Node`]s that remember where they came from,
//! and a serde [`Deserializer`](serde::Deserializer) over that tree whose
//! errors carry the span of the offending key or value.
//!
//! We parse with serde-saphyr into this tree once, then do everything else
//! (envelope checks, templating, typed module parameters) on the tree. This is
//! what lets plumb report *every* error of a file, each at its exact place:
//! serde alone stops at the first error, and loses spans through flattened or
//! untagged types.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned as SaphyrSpanned;

use crate::diag::{did_you_mean, Diag};
use crate::source::{offset_of, SourceId, Sources, Span};

/// A YAML value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it is written.
    pub span: Span,
    /// For a scalar that YAML typed as a boolean or number, the text as
    /// written: `on`, `0644` and `1e3` stay themselves where a string is
    /// expected (YAML 1.1 would have made them `true`, 644 and 1000).
    pub raw: Option<Box<str>>,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// One key of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is written.
    pub key_span: Span,
    /// Its value.
    pub value: Node,
}

impl Node {
    /// A node that is not written anywhere in particular (computed values).
    #[must_use]
    pub fn synthetic(value: Value, span: Span) -> Self {
        Self { value, span, raw: None }
    }

    /// The text of a scalar as a string: strings as they are, other scalars
    /// as written in the file.
    #[must_use]
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(self.raw.as_deref().map_or_else(
                || match &self.value {
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    _ => unreachable!(),
                },
                str::to_string,
            )),
            _ => None,
        }
    }

    /// The string, if this is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    #[must_use]
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of key `key`, if this is a mapping that has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// The node at a dotted path of keys (`hosts.0.url` style indices too).
    #[must_use]
    pub fn at_path(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            node = match &node.value {
                Value::Map(m) => &m.iter().find(|e| e.key == part)?.value,
                Value::Seq(s) => s.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The span of the key at `path`, falling back to its value's span.
    #[must_use]
    pub fn key_span_at(&self, path: &str) -> Option<Span> {
        let (parent, last) = match path.rsplit_once('.') {
            Some((p, l)) => (self.at_path(p)?, l),
            None => (self, path),
        };
        match &parent.value {
            Value::Map(m) => m.iter().find(|e| e.key == last).map(|e| e.key_span),
            Value::Seq(s) => s.get(last.parse::<usize>().ok()?).map(|n| n.span),
            _ => None,
        }
    }

    /// A short name of the value's type, for messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// This node as JSON (spans dropped).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Value::Str(s) => s.clone().into(),
            Value::Seq(s) => s.iter().map(Node::to_json).collect(),
            Value::Map(m) => m
                .iter()
                .map(|e| (e.key.clone(), e.value.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// This node as a variable's value: like [`Node::to_json`], but a number
    /// or boolean written in a form other than its canonical one (`0640`,
    /// `04`, `1.10`, `1e3`, `yes`) keeps its spelling, so that a template
    /// interpolating it writes what the user wrote (see
    /// [`crate::template::written`]).
    #[must_use]
    pub fn to_var_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                let typed = self.to_json();
                match self.raw.as_deref() {
                    Some(raw) if raw != crate::template::canonical_text(&typed) => crate::template::written(typed, raw),
                    _ => typed,
                }
            }
            Value::Seq(s) => s.iter().map(Node::to_var_json).collect(),
            Value::Map(m) => m
                .iter()
                .map(|e| (e.key.clone(), e.value.to_var_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            _ => self.to_json(),
        }
    }

    /// A node from JSON, every part placed at `span`.
    #[must_use]
    pub fn from_json(v: &serde_json::Value, span: Span) -> Self {
        let value = match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::Seq(a.iter().map(|x| Node::from_json(x, span)).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, x)| Entry {
                        key: k.clone(),
                        key_span: span,
                        value: Node::from_json(x, span),
                    })
                    .collect(),
            ),
        };
        Self { value, span, raw: None }
    }
}

/// The value of a decimal integer written with an optional sign and any
/// number of leading zeros (`0640`, `-04`, `+7`), or `None`.
#[must_use]
pub fn integer_text(t: &str) -> Option<i64> {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Parse `text` (registered in `sources` as `id`) into a node tree.
///
/// # Errors
/// A YAML syntax error (or a duplicate key) as a diagnostic at its place.
pub fn parse(sources: &Sources, id: SourceId) -> Result<Node, Diag> {
    let file = sources.get(id);
    let text: &str = &file.text;
    if text.trim().is_empty() {
        return Ok(Node::synthetic(Value::Map(Vec::new()), Span::new(id, 0, 0)));
    }
    match serde_saphyr::from_str::<SaphyrSpanned<Raw>>(text) {
        Ok(raw) => Ok(convert(raw, id, text)),
        Err(e) => {
            let msg = e
                .without_snippet()
                .render_with_options(serde_saphyr::render_options! {snippets: serde_saphyr::SnippetMode::Off});
            let msg = clean_saphyr_message(&msg);
            let (offset, len) = e.location().map_or((0, 0), |l| {
                let s = l.span();
                match s.byte_offset() {
                    Some(o) => (o as usize, s.byte_len().unwrap_or(0) as usize),
                    None => (offset_of(text, l.line() as usize, l.column() as usize), 0),
                }
            });
            let len = if len == 0 {
                text[offset.min(text.len())..].chars().next().map_or(0, char::len_utf8)
            } else {
                len
            };
            let code = if msg.contains("duplicate mapping key") {
                "plumb::yaml::duplicate_key"
            } else {
                "plumb::yaml::syntax"
            };
            let label = if code == "plumb::yaml::duplicate_key" {
                "this key is already set above"
            } else {
                "here"
            };
            if let Some((at, quoted)) = unquoted_template(text, offset) {
                return Err(Diag::new(
                    "plumb::yaml::unquoted_template",
                    "invalid YAML: a value that starts with `{{` must be quoted (unquoted, YAML reads `{` as the start of a mapping)",
                    Span::new(id, at, 2),
                    "this value starts with `{{`",
                )
                .with_help(format!("write it quoted: {quoted}")));
            }
            Err(Diag::new(code, msg, Span::new(id, offset, len), label))
        }
    }
}

/// For a syntax error on a line (or just after a line) whose value starts
/// with `{{`: where that value starts, and the line written with it quoted.
fn unquoted_template(text: &str, offset: usize) -> Option<(usize, String)> {
    let offset = offset.min(text.len());
    if !text.is_char_boundary(offset) {
        return None;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    // The error may be reported at the start of the next line.
    let starts = [
        line_start,
        text[..line_start.saturating_sub(1)].rfind('\n').map_or(0, |i| i + 1),
    ];
    starts.into_iter().find_map(|start| {
        let line = text[start..].lines().next()?;
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map_or(body, str::trim_start);
        let value_at = if body.starts_with("{{") {
            0
        } else {
            let (_, after) = body.split_once(": ")?;
            let after = after.trim_start();
            after.starts_with("{{").then(|| body.len() - after.len())?
        };
        let indent = line.len() - body.len();
        let value = body[value_at..].trim_end();
        let quoted = if value.contains('"') || value.contains('\\') {
            format!("'{}'", value.replace('\'', "''"))
        } else {
            format!("\"{value}\"")
        };
        Some((start + indent + value_at, format!("`{}{quoted}`", &body[..value_at])))
    })
}

fn clean_saphyr_message(msg: &str) -> String {
    let mut m = msg.trim().trim_start_matches("error:").trim().to_string();
    // "line 2 column 2: illegal ..." → "illegal ..." (miette shows the place)
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            m = after.to_string();
        }
    }
    if let Some((head, _)) = m.split_once(" at line ") {
        m = head.to_string();
    }
    if let Some((head, _)) = m.split_once(", set DuplicateKeyPolicy") {
        m = head.to_string();
    }
    format!("invalid YAML: {m}")
}

/// What serde-saphyr gives us before spans are turned into ours.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<SaphyrSpanned<Raw>>),
    Map(Vec<(SaphyrSpanned<String>, SaphyrSpanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                i64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Raw::Seq(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_entry()? {
                    v.push(e);
                }
                Ok(Raw::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn span_of<T>(s: &SaphyrSpanned<T>, id: SourceId, text: &str) -> Span {
    let loc = s.referenced;
    let sp = loc.span();
    let offset = sp.byte_offset().map_or_else(
        || offset_of(text, loc.line() as usize, loc.column() as usize),
        |o| o as usize,
    );
    let len = sp.byte_len().unwrap_or(0) as usize;
    Span::new(id, offset.min(text.len()), len)
}

fn convert(raw: SaphyrSpanned<Raw>, id: SourceId, text: &str) -> Node {
    let span = span_of(&raw, id, text);
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|n| convert(n, id, text)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Entry {
                    key_span: span_of(&k, id, text),
                    key: k.value,
                    value: convert(v, id, text),
                })
                .collect(),
        ),
    };
    let raw = match value {
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => text.get(span.offset..span.offset + span.len).map(|t| {
            let t = t.trim();
            t.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| t.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(t)
                .into()
        }),
        _ => None,
    };
    // serde-saphyr reads a decimal integer with a leading zero (`0640`, `04`)
    // as a float; it is an integer as written.
    let value = match (&value, raw.as_deref().and_then(integer_text)) {
        (Value::Float(_), Some(i)) => Value::Int(i),
        _ => value,
    };
    let mut node = Node { value, span, raw };
    // Flow collections come with a span of their opening bracket only.
    if node.span.len == 1 && matches!(node.value, Value::Seq(_) | Value::Map(_)) {
        if let Some(len) = flow_len(&text[node.span.offset..]) {
            node.span.len = len;
        }
    }
    // Block collections come with an empty span at their start: point at
    // their first key or item instead, which is what a reader looks for.
    if node.span.len == 0 {
        match &node.value {
            Value::Map(m) if !m.is_empty() => node.span = m[0].key_span,
            Value::Seq(s) if !s.is_empty() => node.span = s[0].span,
            _ => {}
        }
    }
    node
}

/// Length of a flow collection (`[..]` or `{..}`) at the start of `text`.
fn flow_len(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q && !(q == '"' && prev == '\\') => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            },
        }
        prev = c;
    }
    None
}

// ---------------------------------------------------------------------------
// Typed deserialization from a node tree, with spans on every error.

/// Deserialize `T` from `node`; `anchor` is where to point when the error has
/// no better place (e.g. a missing key: the mapping's owner key).
///
/// # Errors
/// Every unknown key (with did-you-mean) and every type error that can be
/// pinned to a mapping entry, nested ones included (a bad port of two
/// hosts: both), each as a diagnostic at its place.
pub fn from_node<T: DeserializeOwned>(node: &Node, anchor: Span) -> Result<T, Vec<Diag>> {
    match read(node, anchor, true) {
        (Some(v), diags, _) if diags.is_empty() => Ok(v),
        (_, diags, _) => Err(diags),
    }
}

/// As [`from_node`], and also what could be read: the value without the
/// entries that hold errors, when the rest reads.
pub fn from_node_lenient<T: DeserializeOwned>(node: &Node, anchor: Span) -> (Option<T>, Vec<Diag>) {
    let (v, diags, _) = read(node, anchor, true);
    (v, diags)
}

/// As [`from_node`] for a mapping of parameters, and also what could be
/// read: the value without the top-level entries that hold errors (their
/// keys are the third item), when the rest reads.
pub fn from_node_partial<T: DeserializeOwned>(node: &Node, anchor: Span) -> (Option<T>, Vec<Diag>, Vec<String>) {
    read(node, anchor, false)
}

fn read<T: DeserializeOwned>(node: &Node, anchor: Span, deep: bool) -> (Option<T>, Vec<Diag>, Vec<String>) {
    // serde stops at a struct's first bad field. To report every bad
    // entry at once, the entry that holds the error is left out (`deep`:
    // the innermost one) and the rest is read again, until it reads or an
    // error cannot be pinned to an entry.
    let mut current: Option<Node> = None;
    let mut diags = Vec::new();
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let extra = RefCell::new(Vec::new());
        let result = T::deserialize(NodeDe {
            node: current.as_ref().unwrap_or(node),
            anchor,
            extra: &extra,
        });
        // Unknown keys and the like: the first reading finds those of the
        // top level; nested ones (`deep`) may show up only once an entry
        // before them is left out.
        for d in extra.into_inner() {
            if (current.is_none() || deep) && !diags.iter().any(|k: &Diag| k.code == d.code && k.labels == d.labels) {
                diags.push(d);
            }
        }
        let e = match result {
            Ok(v) => return (Some(v), diags, left_out),
            Err(e) => e,
        };
        let missing_because_left_out = e.code == "plumb::plan::missing_param"
            && left_out.iter().any(|k| e.message == format!("missing parameter `{k}`"));
        let at = e.span;
        if !missing_because_left_out {
            diags.push(e.into_diag(anchor));
        }
        let next = current.get_or_insert_with(|| node.clone());
        match at.and_then(|at| remove_entry_at(next, at, deep)) {
            Some(key) => left_out.push(key),
            None => return (None, diags, left_out),
        }
    }
}

/// Remove the mapping entry of `node` whose key or value holds `at` (`deep`:
/// the innermost such entry, through nested mappings and lists); its key.
fn remove_entry_at(node: &mut Node, at: Span, deep: bool) -> Option<String> {
    if !deep {
        let inside = |outer: Span| {
            at.source == outer.source && at.offset >= outer.offset && at.offset + at.len <= outer.offset + outer.len
        };
        let Value::Map(entries) = &mut node.value else {
            return None;
        };
        let i = entries
            .iter()
            .position(|en| inside(en.value.span) || inside(en.key_span))?;
        return Some(entries.remove(i).key);
    }
    // A block collection's span does not cover its items: an entry runs
    // from its key to the next one.
    let within = |value: &Node| at.offset > value.span.offset && matches!(value.value, Value::Map(_) | Value::Seq(_));
    match &mut node.value {
        Value::Map(entries) => {
            let i = entries
                .iter()
                .rposition(|en| en.key_span.source == at.source && en.key_span.offset <= at.offset)?;
            if within(&entries[i].value) {
                if let Some(key) = remove_entry_at(&mut entries[i].value, at, true) {
                    return Some(key);
                }
            }
            Some(entries.remove(i).key)
        }
        Value::Seq(items) => items
            .iter_mut()
            .rev()
            .find(|n| n.span.source == at.source && n.span.offset <= at.offset)
            .filter(|n| within(n))
            .and_then(|n| remove_entry_at(n, at, true)),
        _ => None,
    }
}

/// A value with the place it is written. Read through [`from_node`] it
/// carries the span of its node (of its key, as a mapping's key);
/// elsewhere, an empty span.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it is written.
    pub span: Span,
}

/// The newtype name by which [`Spanned`] asks [`NodeDe`] for its span.
const SPANNED: &str = "$plumb::yaml::Spanned";
/// The newtype name by which [`Written`] asks for the value as a variable.
const WRITTEN: &str = "$plumb::yaml::Written";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Spanned<T>, D::Error> {
                Ok(Spanned {
                    value: T::deserialize(d)?,
                    span: Span::default(),
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Spanned<T>, A::Error> {
                let mut n = || -> Result<usize, A::Error> {
                    let v: u64 = seq.next_element()?.ok_or_else(|| de::Error::custom("span expected"))?;
                    usize::try_from(v).map_err(de::Error::custom)
                };
                let (source, offset, len) = (n()?, n()?, n()?);
                let source = SourceId(u32::try_from(source).map_err(de::Error::custom)?);
                let value = seq.next_element()?.ok_or_else(|| de::Error::custom("value expected"))?;
                Ok(Spanned {
                    value,
                    span: Span::new(source, offset, len),
                })
            }
        }
        d.deserialize_newtype_struct(SPANNED, V(std::marker::PhantomData))
    }
}

/// A variable's value as written: numbers and booleans keep their spelling
/// (see [`Node::to_var_json`]) when read through [`from_node`].
#[derive(Clone, Debug, PartialEq)]
pub struct Written(pub serde_json::Value);

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Written;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Written, D::Error> {
                serde_json::Value::deserialize(d).map(Written)
            }
        }
        d.deserialize_newtype_struct(WRITTEN, V)
    }
}

/// The three numbers of a span, then the value: what [`Spanned`] reads.
struct SpanSeq<D> {
    span: Span,
    step: u8,
    value: Option<D>,
}

impl<'de, D: serde::Deserializer<'de, Error = DeError>> de::SeqAccess<'de> for SpanSeq<D> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        self.step += 1;
        let number = match self.step {
            1 => u64::from(self.span.source.0),
            2 => self.span.offset as u64,
            3 => self.span.len as u64,
            _ => {
                return match self.value.take() {
                    Some(d) => seed.deserialize(d).map(Some),
                    None => Ok(None),
                }
            }
        };
        seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(number))
            .map(Some)
    }
}

/// A mapping's key, which may be read as a [`Spanned`] string.
struct KeyDe<'a> {
    key: &'a str,
    span: Span,
}

impl<'de> serde::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.key)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        if name == SPANNED {
            let value: de::value::StrDeserializer<'_, DeError> = self.key.into_deserializer();
            visitor.visit_seq(SpanSeq {
                span: self.span,
                step: 0,
                value: Some(value),
            })
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A deserialization error, located once the innermost node that knows its
/// place sees it.
#[derive(Debug)]
pub struct DeError {
    message: String,
    span: Option<Span>,
    code: &'static str,
    help: Option<String>,
}

impl DeError {
    fn at(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    fn into_diag(self, anchor: Span) -> Diag {
        let span = self.span.unwrap_or(anchor);
        Diag::new(self.code, self.message, span, "").with_help_opt(self.help)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    /// A parameter type's own error. By convention a line `help: …` after
    /// the message becomes the diagnostic's help (a `Deserialize` impl has
    /// no other way to pass one).
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let msg = msg.to_string();
        let (message, help) = match msg.split_once("\nhelp: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (msg, None),
        };
        Self {
            message,
            span: None,
            code: "plumb::plan::invalid_value",
            help,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let expected = plain_expected(exp.to_string());
        let scalar = matches!(
            unexp,
            de::Unexpected::Bool(_)
                | de::Unexpected::Signed(_)
                | de::Unexpected::Unsigned(_)
                | de::Unexpected::Float(_)
        );
        let help = if scalar && (expected.contains("string") || expected.contains("path")) {
            Some("quote the value to make it a string".to_string())
        } else {
            None
        };
        Self {
            message: format!("wrong type: found {unexp}, expected {expected}"),
            span: None,
            code: "plumb::plan::wrong_type",
            help,
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self {
            message: format!("invalid value: {unexp}, expected {}", plain_expected(exp.to_string())),
            span: None,
            code: "plumb::plan::invalid_value",
            help: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let list = crate::diag::ticked(expected);
        Self {
            message: format!("unknown value `{variant}`, expected one of {list}"),
            span: None,
            code: "plumb::plan::unknown_value",
            help: did_you_mean(variant, expected.iter().copied()),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            message: format!("missing parameter `{field}`"),
            span: None,
            code: "plumb::plan::missing_param",
            help: None,
        }
    }
}

/// What serde calls a Rust type (`u16`), as a user reads it.
fn plain_expected(expected: String) -> String {
    let range = |max: u64| format!("a whole number from 0 to {max}");
    match expected.as_str() {
        "u8" => range(u8::MAX.into()),
        "u16" => range(u16::MAX.into()),
        "u32" => range(u32::MAX.into()),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        _ => expected,
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    anchor: Span,
    extra: &'a RefCell<Vec<Diag>>,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node) -> Self {
        NodeDe {
            node,
            anchor: node.span,
            extra: self.extra,
        }
    }

    /// A scalar where a string is expected: as written (`0644`, `on`).
    fn scalar_string(&self) -> Option<String> {
        self.node.scalar_text()
    }

    fn unexpected(&self) -> de::Unexpected<'a> {
        match &self.node.value {
            Value::Null => de::Unexpected::Other("null"),
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => de::Unexpected::Signed(*i),
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Str(s) => de::Unexpected::Str(s),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }
}

impl<'de> serde::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                iter: items.iter(),
                parent: &self,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                iter: entries.iter(),
                value: None,
                parent: &self,
                skip: &[],
            }),
        };
        r.map_err(|e| e.at(span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.value == Value::Null {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match self.scalar_string() {
            Some(s) => visitor.visit_string(s).map_err(|e: DeError| e.at(span)),
            None => Err(<DeError as de::Error>::invalid_type(self.unexpected(), &visitor).at(span)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let Value::Map(entries) = &self.node.value else {
            return Err(<DeError as de::Error>::invalid_type(self.unexpected(), &visitor).at(span));
        };
        // Report every unknown key here (serde would stop at the first), and
        // hide them from the visitor so that the other keys are still checked.
        let mut skip = Vec::new();
        for e in entries {
            if !fields.contains(&e.key.as_str()) {
                let expected = crate::diag::ticked(fields);
                let help = did_you_mean(&e.key, fields.iter().copied())
                    .unwrap_or_else(|| format!("the parameters here are {expected}"));
                self.extra.borrow_mut().push(
                    Diag::new(
                        "plumb::plan::unknown_param",
                        format!("unknown parameter `{}`", e.key),
                        e.key_span,
                        "not a parameter here",
                    )
                    .with_help(help),
                );
                skip.push(e.key.clone());
            }
        }
        let anchor = self.anchor;
        visitor
            .visit_map(MapDe {
                iter: entries.iter(),
                value: None,
                parent: &self,
                skip: &skip,
            })
            .map_err(|e| e.at(anchor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.value {
            Value::Str(s) => visitor
                .visit_enum(de::value::StrDeserializer::<DeError>::new(s))
                .map_err(|e| e.at(span)),
            Value::Map(m) if m.len() == 1 => visitor
                .visit_enum(EnumDe {
                    entry: &m[0],
                    parent: &self,
                })
                .map_err(|e| e.at(m[0].key_span)),
            _ => Err(<DeError as de::Error>::invalid_type(self.unexpected(), &visitor).at(span)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match name {
            SPANNED => visitor.visit_seq(SpanSeq {
                span,
                step: 0,
                value: Some(self),
            }),
            WRITTEN => visitor
                .visit_newtype_struct(self.node.to_var_json())
                .map_err(|e| <DeError as de::Error>::custom(e).at(span)),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct SeqDe<'a, 'p> {
    iter: std::slice::Iter<'a, Node>,
    parent: &'p NodeDe<'a>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_, '_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(n) => seed
                .deserialize(self.parent.child(n))
                .map(Some)
                .map_err(|e| e.at(n.span)),
            None => Ok(None),
        }
    }
}

struct MapDe<'a, 'p> {
    iter: std::slice::Iter<'a, Entry>,
    value: Option<&'a Node>,
    parent: &'p NodeDe<'a>,
    skip: &'p [String],
}

impl<'de> de::MapAccess<'de> for MapDe<'_, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        for e in self.iter.by_ref() {
            if self.skip.contains(&e.key) {
                continue;
            }
            self.value = Some(&e.value);
            let key = KeyDe {
                key: &e.key,
                span: e.key_span,
            };
            return seed.deserialize(key).map(Some).map_err(|err| err.at(e.key_span));
        }
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let n = self.value.take().expect("value after key");
        seed.deserialize(self.parent.child(n)).map_err(|e| e.at(n.span))
    }
}

struct EnumDe<'a, 'p> {
    entry: &'a Entry,
    parent: &'p NodeDe<'a>,
}

impl<'de, 'a, 'p> de::EnumAccess<'de> for EnumDe<'a, 'p> {
    type Error = DeError;
    type Variant = VariantDe<'a, 'p>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), DeError> {
        let key: de::value::StrDeserializer<'_, DeError> = self.entry.key.as_str().into_deserializer();
        let v = seed.deserialize(key).map_err(|e| e.at(self.entry.key_span))?;
        Ok((
            v,
            VariantDe {
                node: &self.entry.value,
                parent: self.parent,
            },
        ))
    }
}

struct VariantDe<'a, 'p> {
    node: &'a Node,
    parent: &'p NodeDe<'a>,
}

impl<'de> de::VariantAccess<'de> for VariantDe<'_, '_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self.parent.child(self.node))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        serde::Deserializer::deserialize_any(self.parent.child(self.node), visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        serde::Deserializer::deserialize_struct(self.parent.child(self.node), "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> (Sources, Node) {
        let s = Sources::new();
        let id = s.add("t.yaml", Path::new("t.yaml"), text);
        let n = parse(&s, id).unwrap();
        (s, n)
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        path: String,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        state: Option<St>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum St {
        Present,
        Absent,
    }

    #[test]
    fn every_unknown_key_is_reported_at_its_place() {
        let text = "path: /x\nmod: '0644'\nstae: absent\n";
        let (_, n) = load(text);
        let errs = from_node::<P>(&n, n.span).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].labels[0].0.offset, text.find("mod").unwrap());
        assert_eq!(errs[0].help.as_deref(), Some("did you mean `mode`?"));
        assert_eq!(errs[1].help.as_deref(), Some("did you mean `state`?"));
    }

    #[test]
    fn a_wrong_value_points_at_the_value() {
        let text = "path: /x\nstate: absnt\n";
        let (_, n) = load(text);
        let errs = from_node::<P>(&n, n.span).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].labels[0].0.offset, text.find("absnt").unwrap());
        assert_eq!(errs[0].code, "plumb::plan::unknown_value");
        assert_eq!(errs[0].help.as_deref(), Some("did you mean `absent`?"));
    }

    #[test]
    fn a_custom_error_carries_its_help_line_as_help() {
        #[derive(Debug)]
        struct Even;
        impl<'de> Deserialize<'de> for Even {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = i64::deserialize(d)?;
                if n % 2 == 0 {
                    Ok(Even)
                } else {
                    Err(de::Error::custom(format!("`{n}` is odd\nhelp: add one")))
                }
            }
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Q {
            n: Even,
        }
        let text = "n: 3\n";
        let (_, node) = load(text);
        let errs = from_node::<Q>(&node, node.span).unwrap_err();
        assert_eq!(errs[0].message, "`3` is odd");
        assert_eq!(errs[0].help.as_deref(), Some("add one"));
        assert_eq!(errs[0].labels[0].0.offset, text.find('3').unwrap());
    }

    #[test]
    fn a_list_where_a_string_is_expected_is_a_type_error() {
        let text = "path: [a, b]\n";
        let (_, n) = load(text);
        let errs = from_node::<P>(&n, n.span).unwrap_err();
        assert_eq!(errs[0].code, "plumb::plan::wrong_type");
        assert_eq!(errs[0].labels[0].0.offset, text.find('[').unwrap());
    }

    #[test]
    fn spans_survive_multibyte_text() {
        let text = "a: \"é\"\npath: /é/x\n";
        let (_, n) = load(text);
        let e = n.get("path").unwrap();
        assert_eq!(e.value.span.offset, text.find("/é").unwrap());
        assert_eq!(e.value.as_str(), Some("/é/x"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let s = Sources::new();
        let text = "a: [1, 2\nb: c\n";
        let id = s.add("t.yaml", Path::new("t.yaml"), text);
        let d = parse(&s, id).unwrap_err();
        assert_eq!(d.code, "plumb::yaml::syntax");
        assert!(d.message.starts_with("invalid YAML"), "{}", d.message);
    }
}
