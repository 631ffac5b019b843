//! Templating with minijinja: strict undefined variables, `env("NAME")` for
//! the workstation's environment, and errors mapped back onto the user's YAML.
//!
//! A string that is exactly one `{{ expression }}` keeps the expression's
//! type (a list stays a list); any other string with `{{ }}` renders to text,
//! even when all it adds is a final newline.
//!
//! What the user wrote is what lands in the file: a number or boolean whose
//! spelling is not its canonical form (`0640`, `04`, `1.10`, `1e3`, `yes`)
//! is kept as a variable's value with its spelling ([`written`]); a template
//! that interpolates that variable (`{{ m }}`, `{{ cfg.m }}`, `{{ l[0] }}`)
//! writes the spelling, while expressions (`when`, `assert`, `{% if w > 3 %}`,
//! filters, arithmetic) see the typed value. Any other number renders without
//! a `.0` when it is integral, and booleans render `true`/`false`.

use std::collections::BTreeMap;

use minijinja::value::{Object, Value as JinjaValue, ValueKind};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};

use crate::diag::Diag;
use crate::source::{SourceId, Sources, Span};
use crate::yaml::{Entry, Node, Value};

/// Variables for one host, in precedence order already merged.
pub type Vars = BTreeMap<String, serde_json::Value>;

/// A template engine configured as plans need it.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

fn env_var(name: &str) -> Result<String, minijinja::Error> {
    std::env::var(name).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("environment variable `{name}` is not set on the workstation"),
        )
    })
}

impl Templates {
    /// The engine.
    #[must_use]
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // As Ansible does: the newline after a block tag (`{% for %}`,
        // `{% endif %}`) is dropped, so a loop adds no blank lines; the
        // spaces before a tag stay (no `lstrip_blocks`).
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .trim_blocks(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.add_function("env", env_var);
        env.add_function(AS_WRITTEN_FN, as_written);
        env.set_formatter(canonical_formatter);
        Self { env }
    }

    fn ctx(vars: &Vars) -> JinjaValue {
        let mut spellings = Spellings::default();
        let mut ctx = BTreeMap::new();
        for (k, v) in vars {
            let plain = unwrap_written(v, k, &mut spellings);
            ctx.insert(k.clone(), JinjaValue::from(minijinja::value::Serde(&plain)));
        }
        ctx.insert(SPELLINGS_VAR.to_string(), JinjaValue::from_object(spellings));
        JinjaValue::from(ctx)
    }

    /// Render every templated string in `node` with `vars`: values, and the
    /// keys of mappings (`"{{ registry }}": …`).
    ///
    /// # Errors
    /// Every template error, located in the YAML.
    pub fn render_node(&self, node: &Node, vars: &Vars, sources: &Sources) -> Result<Node, Vec<Diag>> {
        let mut diags = Vec::new();
        let cx = Cx {
            ctx: Self::ctx(vars),
            vars,
            sources,
        };
        let out = self.render_rec(node, &cx, &mut diags);
        if diags.is_empty() {
            Ok(out)
        } else {
            Err(diags)
        }
    }

    fn render_rec(&self, node: &Node, cx: &Cx<'_>, diags: &mut Vec<Diag>) -> Node {
        match &node.value {
            Value::Str(s) if is_template(s) => match self.render_scalar(s, &cx.ctx) {
                Ok((v, raw)) => {
                    let mut n = Node::from_json(&v, node.span);
                    n.raw = raw;
                    n
                }
                Err(e) => {
                    diags.extend(self.explain(&e, s, node.span, cx));
                    node.clone()
                }
            },
            Value::Seq(items) => Node {
                value: Value::Seq(items.iter().map(|n| self.render_rec(n, cx, diags)).collect()),
                span: node.span,
                raw: None,
            },
            Value::Map(entries) => {
                let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
                for e in entries {
                    let key = if is_template(&e.key) {
                        match self.render_text(&e.key, &cx.ctx) {
                            Ok(k) => k,
                            Err(err) => {
                                diags.extend(self.explain(&err, &e.key, e.key_span, cx));
                                e.key.clone()
                            }
                        }
                    } else {
                        e.key.clone()
                    };
                    if let Some(first) = out.iter().find(|o| o.key == key) {
                        diags.push(
                            Diag::new(
                                "plumb::template::duplicate_key",
                                format!("two keys of this mapping are `{key}` once rendered"),
                                e.key_span,
                                "this key",
                            )
                            .with_label(first.key_span, "renders to the same key as this one"),
                        );
                        continue;
                    }
                    out.push(Entry {
                        key,
                        key_span: e.key_span,
                        value: self.render_rec(&e.value, cx, diags),
                    });
                }
                Node {
                    value: Value::Map(out),
                    span: node.span,
                    raw: None,
                }
            }
            _ => node.clone(),
        }
    }

    /// A templated scalar's value, and the spelling it keeps when it is one
    /// variable written as a non-canonical number or boolean.
    fn render_scalar(&self, s: &str, ctx: &JinjaValue) -> Result<(serde_json::Value, Option<Box<str>>), RenderError> {
        if let Some(expr) = single_expression(s) {
            let e = self.env.compile_expression(expr)?;
            let v = e.eval(ctx.clone())?;
            if v.is_undefined() {
                return Err(minijinja::Error::new(ErrorKind::UndefinedError, "undefined value").into());
            }
            let raw = bare_path(expr)
                .and_then(|path| spelling_of(ctx, &path, &v))
                .map(Into::into);
            let json = serde_json::to_value(&v)
                .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
            return Ok((json, raw));
        }
        self.render_text(s, ctx).map(|t| (serde_json::Value::String(t), None))
    }

    fn render_text(&self, s: &str, ctx: &JinjaValue) -> Result<String, RenderError> {
        let rewritten = Rewritten::new(s);
        self.env
            .render_str(&rewritten.text, ctx.clone())
            .map_err(|e| rewritten.map_error(e))
    }

    /// Evaluate a `when` condition.
    ///
    /// # Errors
    /// A template error, located.
    pub fn condition(&self, node: &Node, vars: &Vars, sources: &Sources) -> Result<bool, Vec<Diag>> {
        match &node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) => {
                let expr = single_expression(s).unwrap_or(s);
                let cx = Cx {
                    ctx: Self::ctx(vars),
                    vars,
                    sources,
                };
                self.env
                    .compile_expression(expr)
                    .and_then(|e| e.eval(cx.ctx.clone()))
                    .and_then(defined)
                    .map(|v| v.is_true())
                    .map_err(|e| self.explain(&e.into(), s, node.span, &cx))
            }
            _ => Ok(true),
        }
    }

    /// Render a whole template file's text (registered as `source`).
    ///
    /// # Errors
    /// Every undefined variable of the file, or the template error, located
    /// in the template file.
    pub fn render_file(&self, text: &str, source: SourceId, vars: &Vars) -> Result<String, Vec<Diag>> {
        let ctx = Self::ctx(vars);
        self.render_text(text, &ctx).map_err(|e| {
            if e.e.kind() == ErrorKind::UndefinedError {
                let found = undefined_names(&self.env, text, false, vars);
                if !found.is_empty() {
                    return found
                        .into_iter()
                        .map(|u| {
                            let span = text
                                .find(&u.name)
                                .map_or(Span::new(source, 0, 0), |o| Span::new(source, o, u.name.len()));
                            u.diag(span)
                        })
                        .collect();
                }
            }
            let span = e
                .range
                .map_or(Span::new(source, 0, 0), |r| Span::new(source, r.start, r.len()));
            vec![template_diag(&e.e, span)]
        })
    }

    /// The diagnostics for a failed template: every undefined variable it
    /// reads (each with a did-you-mean), or the error itself, located.
    fn explain(&self, e: &RenderError, template: &str, span: Span, cx: &Cx<'_>) -> Vec<Diag> {
        if e.e.kind() == ErrorKind::UndefinedError {
            let is_expr = !template.contains("{{") && !template.contains("{%");
            let found = undefined_names(&self.env, template, is_expr, cx.vars);
            if !found.is_empty() {
                let file = cx.sources.get(span.source);
                let raw = file.text.get(span.offset..span.offset + span.len).unwrap_or("");
                return found
                    .into_iter()
                    .map(|u| {
                        let at = raw.find(&u.name).map_or(span, |o| span.sub(o, u.name.len()));
                        u.diag(at)
                    })
                    .collect();
            }
        }
        vec![self.locate(e, template, span, cx.sources)]
    }

    fn locate(&self, e: &RenderError, template: &str, span: Span, sources: &Sources) -> Diag {
        let file = sources.get(span.source);
        let raw = file.text.get(span.offset..span.offset + span.len).unwrap_or("");
        // The error's range is in the string's value; find the same text in
        // the written scalar (which may carry quotes or indentation).
        let located = e.range.clone().and_then(|r| {
            let piece = template.get(r.clone())?;
            let start = raw.find(piece).or_else(|| {
                // Point at the whole `{{ … }}` holding the error.
                let open = template[..r.start].rfind("{{")?;
                raw.find(&template[open..template[open..].find("}}").map_or(template.len(), |c| open + c + 2)])
            })?;
            Some(span.sub(start, piece.len().max(1)))
        });
        let e = &e.e;
        let span = located.unwrap_or_else(|| {
            raw.find("{{").map_or(span, |open| {
                let close = raw[open..].find("}}").map_or(raw.len(), |c| open + c + 2);
                span.sub(open, close - open)
            })
        });
        template_diag(e, span)
    }
}

fn template_diag(e: &minijinja::Error, span: Span) -> Diag {
    let detail = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
    match e.kind() {
        ErrorKind::UndefinedError => Diag::new(
            "plumb::template::undefined",
            format!("undefined variable in template: {detail}"),
            span,
            "undefined here",
        )
        .with_help("define it in the plan's `vars`, the inventory, or with `--var name=value`"),
        ErrorKind::SyntaxError => Diag::new(
            "plumb::template::syntax",
            format!("template syntax error: {detail}"),
            span,
            "here",
        ),
        _ => Diag::new(
            "plumb::template::error",
            format!("template error: {detail}"),
            span,
            "here",
        ),
    }
}

/// What one render needs besides the engine: the context built once from
/// the variables, the variables themselves (for did-you-mean), the sources.
struct Cx<'a> {
    ctx: JinjaValue,
    vars: &'a Vars,
    sources: &'a Sources,
}

/// The function a bare `{{ path }}` in text is rewritten to call.
const AS_WRITTEN_FN: &str = "__plumb_as_written";
/// The context entry holding every variable's spelling.
const SPELLINGS_VAR: &str = "__plumb_spellings";
/// Keys of the JSON object that carries a value with its spelling.
const WRITTEN_KEY: &str = "$plumb:written";
const TYPED_KEY: &str = "$plumb:value";

/// A variable's value that keeps the spelling it was written with (`0640`,
/// `1e3`, `yes`): templates interpolating it write `raw`, expressions see
/// `typed`. Built by [`crate::yaml::Node::to_var_json`].
#[must_use]
pub fn written(typed: serde_json::Value, raw: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(WRITTEN_KEY.into(), raw.into());
    m.insert(TYPED_KEY.into(), typed);
    serde_json::Value::Object(m)
}

/// A variable's value with every kept spelling dropped: what expressions
/// see, and what a report may show.
#[must_use]
pub fn typed_value(v: &serde_json::Value) -> serde_json::Value {
    let mut ignore = Spellings::default();
    unwrap_written(v, "", &mut ignore)
}

/// How a plain scalar renders in text: integers and integral floats without
/// a fraction, booleans as `true`/`false`, strings as they are.
#[must_use]
pub fn canonical_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => float_text(f),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn float_text(f: f64) -> String {
    // Integral floats up to 2^53 are exact integers: print them as such.
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        i.to_string()
    } else {
        f.to_string()
    }
}

/// Every spelling of the variables, by normalized path (`a.b`, `a[0]`).
#[derive(Debug, Default)]
struct Spellings(BTreeMap<String, (String, JinjaValue)>);

impl Object for Spellings {}

fn unwrap_written(v: &serde_json::Value, path: &str, spellings: &mut Spellings) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) if m.len() == 2 && m.contains_key(WRITTEN_KEY) && m.contains_key(TYPED_KEY) => {
            let typed = m[TYPED_KEY].clone();
            if let serde_json::Value::String(raw) = &m[WRITTEN_KEY] {
                spellings.0.insert(
                    path.to_string(),
                    (raw.clone(), JinjaValue::from(minijinja::value::Serde(&typed))),
                );
            }
            typed
        }
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.clone(), unwrap_written(x, &format!("{path}.{k}"), spellings)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| unwrap_written(x, &format!("{path}[{i}]"), spellings))
            .collect(),
        other => other.clone(),
    }
}

/// The spelling of the variable at `path` when `value` is still its value
/// (a loop variable of the same name holding something else is not it).
fn spelling_of(ctx: &JinjaValue, path: &str, value: &JinjaValue) -> Option<String> {
    let table = ctx.get_attr(SPELLINGS_VAR).ok()?;
    lookup_spelling(&table, path, value)
}

fn lookup_spelling(table: &JinjaValue, path: &str, value: &JinjaValue) -> Option<String> {
    let spellings = table.downcast_object_ref::<Spellings>()?;
    let (raw, typed) = spellings.0.get(path)?;
    (typed.kind() == value.kind() && typed == value).then(|| raw.clone())
}

/// `{{ path }}` in text: the variable's spelling if it has one.
fn as_written(state: &State<'_, '_>, value: JinjaValue, path: &str) -> JinjaValue {
    if value.is_undefined() {
        return value;
    }
    state
        .lookup(SPELLINGS_VAR)
        .and_then(|t| lookup_spelling(&t, path, &value))
        .map_or(value, JinjaValue::from)
}

/// Integral numbers without `.0`, booleans as `true`/`false`; the rest as
/// minijinja writes it.
fn canonical_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut State<'_, '_>,
    value: &JinjaValue,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Bool => out
            .write_str(if value.is_true() { "true" } else { "false" })
            .map_err(minijinja::Error::from),
        ValueKind::Number => match value.as_i64() {
            Some(i) => write!(out, "{i}").map_err(minijinja::Error::from),
            None => match f64::try_from(value.clone()) {
                Ok(f) => out.write_str(&float_text(f)).map_err(minijinja::Error::from),
                Err(_) => minijinja::escape_formatter(out, state, value),
            },
        },
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The normalized path of an expression that only names a variable
/// (`a`, `a.b`, `a[0]`, `a['b-c']`), or `None`.
fn bare_path(expr: &str) -> Option<String> {
    let b = expr.trim().as_bytes();
    let ident = |i: usize| -> Option<usize> {
        let start = i;
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        (j > start && !b[start].is_ascii_digit()).then_some(j)
    };
    let t = expr.trim();
    let mut i = ident(0)?;
    let mut out = t[..i].to_string();
    if matches!(out.as_str(), "true" | "false" | "none" | "True" | "False" | "None") {
        return None;
    }
    while i < b.len() {
        match b[i] {
            b'.' => {
                let j = ident(i + 1)?;
                out.push('.');
                out.push_str(&t[i + 1..j]);
                i = j;
            }
            b'[' => {
                let rest = &t[i + 1..];
                let close = rest.find(']')?;
                let inner = &rest[..close];
                if let Ok(n) = inner.parse::<usize>() {
                    out.push_str(&format!("[{n}]"));
                } else {
                    let q = inner.chars().next()?;
                    if !(q == '\'' || q == '"') || inner.len() < 2 || !inner.ends_with(q) {
                        return None;
                    }
                    let key = &inner[1..inner.len() - 1];
                    if key.contains(q) || key.contains('\\') {
                        return None;
                    }
                    out.push('.');
                    out.push_str(key);
                }
                i += 1 + close + 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// One `{{ path }}` rewritten as `{{ __plumb_as_written(path, "path") }}`.
#[derive(Debug)]
struct Edit {
    /// Where the expression starts in the original and rewritten text.
    old_start: usize,
    new_start: usize,
    /// Length of the expression, and of the text put before and after it.
    len: usize,
    prefix: usize,
    suffix: usize,
}

/// A template whose bare `{{ path }}` outputs go through the spelling
/// table, with the map back to the original's offsets for errors.
#[derive(Debug)]
struct Rewritten {
    text: String,
    edits: Vec<Edit>,
}

impl Rewritten {
    fn new(src: &str) -> Self {
        let mut text = String::with_capacity(src.len() + 64);
        let mut edits = Vec::new();
        let mut copied = 0;
        let mut i = 0;
        while let Some(rel) = src[i..].find('{') {
            let at = i + rel;
            let rest = &src[at..];
            if rest.starts_with("{#") {
                i = rest.find("#}").map_or(src.len(), |c| at + c + 2);
            } else if let Some(after) = rest.strip_prefix("{%") {
                let inner = after.trim_start_matches(['-', '+', ' ', '\t', '\n']);
                if inner.starts_with("raw") && !inner[3..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    i = rest
                        .find("endraw")
                        .and_then(|e| rest[e..].find("%}").map(|c| at + e + c + 2))
                        .unwrap_or(src.len());
                } else {
                    i = rest.find("%}").map_or(src.len(), |c| at + c + 2);
                }
            } else if rest.starts_with("{{") {
                let Some(close) = rest.find("}}") else { break };
                let mut start = at + 2;
                if src[start..].starts_with(['-', '+']) {
                    start += 1;
                }
                let mut end = at + close;
                if end > start && src[..end].ends_with(['-', '+']) {
                    end -= 1;
                }
                let inner = &src[start..end];
                if let Some(path) = bare_path(inner) {
                    let lead = inner.len() - inner.trim_start().len();
                    let old_start = start + lead;
                    let expr = inner.trim();
                    text.push_str(&src[copied..old_start]);
                    let prefix = format!("{AS_WRITTEN_FN}(");
                    let suffix = format!(", {})", serde_json::Value::String(path));
                    let new_start = text.len() + prefix.len();
                    text.push_str(&prefix);
                    text.push_str(expr);
                    text.push_str(&suffix);
                    edits.push(Edit {
                        old_start,
                        new_start,
                        len: expr.len(),
                        prefix: prefix.len(),
                        suffix: suffix.len(),
                    });
                    copied = old_start + expr.len();
                }
                i = at + close + 2;
            } else {
                i = at + 1;
            }
        }
        text.push_str(&src[copied..]);
        Self { text, edits }
    }

    /// The original offset of an offset in the rewritten text.
    fn original(&self, pos: usize) -> usize {
        let mut delta = 0usize;
        for e in &self.edits {
            let region = e.new_start - e.prefix;
            if pos < region {
                break;
            }
            if pos < e.new_start {
                return e.old_start;
            }
            if pos < e.new_start + e.len {
                return e.old_start + (pos - e.new_start);
            }
            if pos < e.new_start + e.len + e.suffix {
                return e.old_start + e.len;
            }
            delta += e.prefix + e.suffix;
        }
        pos - delta
    }

    fn map_error(&self, e: minijinja::Error) -> RenderError {
        let range = e.range().map(|r| {
            let start = self.original(r.start);
            start..self.original(r.end).max(start)
        });
        RenderError { e, range }
    }
}

/// A template error with its range in the template as the user wrote it.
#[derive(Debug)]
struct RenderError {
    e: minijinja::Error,
    range: Option<std::ops::Range<usize>>,
}

impl From<minijinja::Error> for RenderError {
    fn from(e: minijinja::Error) -> Self {
        let range = e.range();
        Self { e, range }
    }
}

/// A condition's value, or an error when it is undefined: `when: "{{ nope }}"`
/// must not read as false.
fn defined(v: JinjaValue) -> Result<JinjaValue, minijinja::Error> {
    if v.is_undefined() {
        Err(minijinja::Error::new(ErrorKind::UndefinedError, "undefined value"))
    } else {
        Ok(v)
    }
}

/// One variable a template reads that is not there.
struct Undefined {
    /// As written in the template (`nope`, `cfg.port`).
    name: String,
    suggestion: Option<String>,
}

impl Undefined {
    fn diag(self, span: Span) -> Diag {
        Diag::new(
            "plumb::template::undefined",
            format!("undefined variable in template: `{}`", self.name),
            span,
            "undefined here",
        )
        .with_help(
            self.suggestion
                .unwrap_or_else(|| "define it in the plan's `vars`, the inventory, or with `--var name=value`".into()),
        )
    }
}

/// Every variable `text` reads (dotted paths) that `vars` does not hold,
/// each with the nearest name that exists.
fn undefined_names(env: &Environment<'static>, text: &str, is_expr: bool, vars: &Vars) -> Vec<Undefined> {
    let names = if is_expr {
        let expr = single_expression(text).unwrap_or(text);
        env.compile_expression(expr).map(|e| e.undeclared_variables(true))
    } else {
        env.template_from_str(text).map(|t| t.undeclared_variables(true))
    };
    let Ok(names) = names else { return Vec::new() };
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_by_key(|n| text.find(n.as_str()).unwrap_or(usize::MAX));
    let mut out = Vec::new();
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if matches!(
            root,
            "env" | AS_WRITTEN_FN | SPELLINGS_VAR | "loop" | "range" | "namespace"
        ) {
            continue;
        }
        let Some(mut at) = vars.get(root).map(typed_value) else {
            out.push(Undefined {
                name: root.to_string(),
                suggestion: crate::diag::did_you_mean(root, vars.keys().map(String::as_str)),
            });
            continue;
        };
        let mut walked = root.to_string();
        for key in parts {
            let next = at.get(key).cloned();
            match (next, &at) {
                (Some(n), _) => at = n,
                (None, serde_json::Value::Object(m)) => {
                    out.push(Undefined {
                        name: format!("{walked}.{key}"),
                        suggestion: Some(
                            crate::diag::did_you_mean(key, m.keys().map(String::as_str))
                                .unwrap_or_else(|| format!("`{walked}` has no key `{key}`")),
                        ),
                    });
                    break;
                }
                (None, _) => break,
            }
            walked = format!("{walked}.{key}");
        }
    }
    out
}

/// The names under `facts.` that a host reports.
pub const FACT_NAMES: &[&str] = &[
    "hostname",
    "os",
    "kernel",
    "cpus",
    "memory_bytes",
    "mounts",
    "block_devices",
];

/// One engine for the checks that need no state of their own (building one
/// per call was most of their cost).
fn shared() -> &'static Templates {
    static SHARED: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    SHARED.get_or_init(Templates::new)
}

/// The facts `text` (a template or an expression) reads that no host
/// reports (`facts.mount` for `facts.mounts`), each with a did-you-mean.
#[must_use]
pub fn unknown_facts(text: &str) -> Vec<(String, Option<String>)> {
    let env = &shared().env;
    let names = if is_template(text) {
        env.template_from_str(text).map(|t| t.undeclared_variables(true))
    } else {
        env.compile_expression(text).map(|e| e.undeclared_variables(true))
    };
    let Ok(names) = names else { return Vec::new() };
    let mut out: Vec<(String, Option<String>)> = names
        .iter()
        .filter_map(|n| n.strip_prefix("facts."))
        .filter_map(|rest| rest.split('.').next())
        .filter(|f| !FACT_NAMES.contains(f))
        .map(|f| (f.to_string(), crate::diag::did_you_mean(f, FACT_NAMES.iter().copied())))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Check the syntax of an expression.
///
/// # Errors
/// The parser's message.
pub fn check_expression(expr: &str) -> Result<(), String> {
    let t = shared();
    let expr = single_expression(expr).unwrap_or(expr);
    t.env
        .compile_expression(expr)
        .map(|_| ())
        .map_err(|e| e.detail().map_or_else(|| e.to_string(), str::to_string))
}

/// Evaluate a condition with `vars` (used at run time, e.g. by `assert`
/// with fresh facts).
///
/// # Errors
/// The expression fails (an undefined name, a type error).
pub fn eval_condition(expr: &str, vars: &Vars) -> Result<bool, String> {
    let t = shared();
    let expr = single_expression(expr).unwrap_or(expr);
    t.env
        .compile_expression(expr)
        .and_then(|e| e.eval(Templates::ctx(vars)))
        .and_then(defined)
        .map(|v| v.is_true())
        .map_err(|e| {
            let mut msg = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
            if e.kind() == ErrorKind::UndefinedError && msg.is_empty() {
                msg = "undefined value".into();
            }
            msg
        })
}

/// Whether `s` holds template syntax.
#[must_use]
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The expression of a string that is exactly one `{{ expression }}`.
#[must_use]
pub fn single_expression(s: &str) -> Option<&str> {
    // Exactly one `{{ … }}`: anything around it, even a final newline, makes
    // the string text.
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn node(text: &str) -> (Sources, Node) {
        let s = Sources::new();
        let id = s.add("t.yaml", Path::new("t.yaml"), text);
        let n = crate::yaml::parse(&s, id).unwrap();
        (s, n)
    }

    #[test]
    fn a_single_expression_keeps_its_type() {
        let (s, n) = node("pvs: \"{{ disks }}\"\nname: \"vg-{{ n }}\"\n");
        let mut vars = Vars::new();
        vars.insert("disks".into(), serde_json::json!(["/dev/vdb", "/dev/vdc"]));
        vars.insert("n".into(), serde_json::json!(3));
        let out = Templates::new().render_node(&n, &vars, &s).unwrap();
        assert_eq!(
            out.to_json(),
            serde_json::json!({"pvs": ["/dev/vdb", "/dev/vdc"], "name": "vg-3"})
        );
    }

    #[test]
    fn an_undefined_variable_points_at_its_braces() {
        let text = "path: \"/srv/{{ nope }}/x\"\n";
        let (s, n) = node(text);
        let errs = Templates::new().render_node(&n, &Vars::new(), &s).unwrap_err();
        assert_eq!(errs[0].code, "plumb::template::undefined");
        let sp = errs[0].labels[0].0;
        let shown = &text[sp.offset..sp.offset + sp.len];
        assert!(shown.contains("nope"), "{shown:?}");
    }

    #[test]
    fn conditions_are_expressions() {
        let (s, n) = node("w: \"role == 'edge'\"\n");
        let mut vars = Vars::new();
        vars.insert("role".into(), serde_json::json!("edge"));
        let w = &n.get("w").unwrap().value;
        assert!(Templates::new().condition(w, &vars, &s).unwrap());
        vars.insert("role".into(), serde_json::json!("db"));
        assert!(!Templates::new().condition(w, &vars, &s).unwrap());
    }

    fn plan_vars(text: &str) -> Vars {
        let (_, n) = node(text);
        n.as_map()
            .unwrap()
            .iter()
            .map(|e| (e.key.clone(), e.value.to_var_json()))
            .collect()
    }

    fn render_text(text: &str, vars: &Vars) -> String {
        let (s, n) = node(&format!("t: {}\n", serde_json::Value::String(text.into())));
        let out = Templates::new().render_node(&n, vars, &s).unwrap();
        out.get("t").unwrap().value.scalar_text().unwrap()
    }

    #[test]
    fn a_number_renders_as_written() {
        let vars = plan_vars("m: 0640\nw: 04\nflag: yes\nver: 1.10\nbig: 1e3\nn: 1000\ncfg: {port: 08}\nl: [007]\n");
        assert_eq!(
            render_text(
                "umask {{ m }} workers {{ w }} flag {{ flag }} ver {{ ver }} big {{ big }} n {{ n }} {{ cfg.port }} {{ cfg['port'] }} {{ l[0] }}",
                &vars
            ),
            "umask 0640 workers 04 flag yes ver 1.10 big 1e3 n 1000 08 08 007"
        );
        // Whitespace control and a lone expression keep the spelling too.
        assert_eq!(render_text("[{{- m -}}]", &vars), "[0640]");
        assert_eq!(render_text("{{ big }}", &vars), "1e3");
        assert_eq!(render_text("{{ flag }}", &vars), "yes");
    }

    #[test]
    fn expressions_see_the_typed_value() {
        let vars = plan_vars("w: 04\nflag: no\nbig: 1e3\n");
        assert_eq!(render_text("{% if w > 3 %}many{% endif %}", &vars), "many");
        assert_eq!(render_text("{% if flag %}on{% else %}off{% endif %}", &vars), "off");
        assert_eq!(render_text("{{ w + 1 }} {{ big / 10 }}", &vars), "5 100");
        let (s, n) = node("w: \"w > 3 and not flag\"\n");
        let w = &n.get("w").unwrap().value;
        assert!(Templates::new().condition(w, &vars, &s).unwrap());
        assert!(eval_condition("w == 4 and big == 1000", &vars).unwrap());
    }

    #[test]
    fn computed_values_render_without_python_spellings() {
        let vars = plan_vars("n: 1000\nf: 2.5\n");
        assert_eq!(
            render_text("{{ n / 10 }} {{ n > 3 }} {{ not true }} {{ f * 2 }} {{ f }}", &vars),
            "100 true false 5 2.5"
        );
    }

    #[test]
    fn one_expression_plus_a_newline_is_text() {
        let vars = plan_vars("n: 1000\n");
        let (s, n) = node("a: \"{{ n }}\\n\"\nb: \"{{ n }}\"\n");
        let out = Templates::new().render_node(&n, &vars, &s).unwrap();
        assert_eq!(out.get("a").unwrap().value.value, Value::Str("1000\n".into()));
        assert_eq!(out.get("b").unwrap().value.value, Value::Int(1000));
    }

    #[test]
    fn map_keys_are_templated() {
        let vars = plan_vars("registry: harbor.lan\n");
        let (s, n) = node("mirrors:\n  \"{{ registry }}\": {endpoint: [\"https://{{ registry }}\"]}\n");
        let out = Templates::new().render_node(&n, &vars, &s).unwrap();
        assert_eq!(
            out.to_json(),
            serde_json::json!({"mirrors": {"harbor.lan": {"endpoint": ["https://harbor.lan"]}}})
        );
        // Two keys that render alike are refused, both located.
        let (s, n) = node("m:\n  \"{{ registry }}\": 1\n  harbor.lan: 2\n");
        let errs = Templates::new().render_node(&n, &vars, &s).unwrap_err();
        assert_eq!(errs[0].code, "plumb::template::duplicate_key");
    }

    #[test]
    fn every_undefined_variable_is_reported_with_a_suggestion() {
        let vars = plan_vars("workers: 4\nport: 80\ncfg: {port: 1}\n");
        let text = "t: \"{{ worker }} and {{ prot }} and {{ cfg.prot }}\"\n";
        let (s, n) = node(text);
        let errs = Templates::new().render_node(&n, &vars, &s).unwrap_err();
        let got: Vec<(String, String, String)> = errs
            .iter()
            .map(|d| {
                let sp = d.labels[0].0;
                (
                    d.message.clone(),
                    text[sp.offset..sp.offset + sp.len].to_string(),
                    d.help.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "undefined variable in template: `worker`".into(),
                    "worker".into(),
                    "did you mean `workers`?".into()
                ),
                (
                    "undefined variable in template: `prot`".into(),
                    "prot".into(),
                    "did you mean `port`?".into()
                ),
                (
                    "undefined variable in template: `cfg.prot`".into(),
                    "cfg.prot".into(),
                    "did you mean `port`?".into()
                ),
            ]
        );
    }

    #[test]
    fn an_error_after_a_rewritten_variable_points_at_its_place() {
        let vars = plan_vars("m: 0640\n");
        let text = "t: \"{{ m }} {{ m | nosuchfilter }}\"\n";
        let (s, n) = node(text);
        let errs = Templates::new().render_node(&n, &vars, &s).unwrap_err();
        let sp = errs[0].labels[0].0;
        assert!(
            text[sp.offset..sp.offset + sp.len].contains("nosuchfilter"),
            "{:?}",
            &text[sp.offset..sp.offset + sp.len]
        );
    }

    #[test]
    fn an_undefined_condition_is_an_error_not_false() {
        let vars = plan_vars("manage: true\n");
        for text in ["w: \"{{ manag }}\"\n", "w: \"manag\"\n"] {
            let (s, n) = node(text);
            let w = &n.get("w").unwrap().value;
            let errs = Templates::new().condition(w, &vars, &s).unwrap_err();
            assert_eq!(errs[0].help.as_deref(), Some("did you mean `manage`?"), "{text}");
        }
        assert!(eval_condition("{{ manag }}", &vars).is_err());
    }

    #[test]
    fn a_misspelt_fact_is_named_with_the_right_one() {
        assert_eq!(
            unknown_facts("{{ facts.mount['/'].avail_bytes }}"),
            [("mount".to_string(), Some("did you mean `mounts`?".to_string()))]
        );
        assert!(unknown_facts("facts.mounts['/'].used_pct < 80").is_empty());
    }

    #[test]
    fn raw_blocks_and_comments_are_left_alone() {
        let vars = plan_vars("m: 0640\n");
        assert_eq!(
            render_text("{% raw %}{{ m }}{% endraw %} {# {{ m }} #}{{ m }}", &vars),
            "{{ m }} 0640"
        );
    }
}
