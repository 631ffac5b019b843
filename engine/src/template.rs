//! Templating with minijinja: strict undefined variables, `env("NAME")` for
//! the workstation's environment, and errors mapped back onto the user's YAML.
//!
//! A string that is exactly one `{{ expression }}` keeps the expression's
//! type (a list stays a list); any other string with `{{ }}` renders to text.

use std::collections::BTreeMap;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};

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
        Self { env }
    }

    fn ctx(vars: &Vars) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(vars))
    }

    /// Render every templated string in `node` with `vars`.
    ///
    /// # Errors
    /// Every template error, located in the YAML.
    pub fn render_node(&self, node: &Node, vars: &Vars, sources: &Sources) -> Result<Node, Vec<Diag>> {
        let mut diags = Vec::new();
        let out = self.render_rec(node, vars, sources, &mut diags);
        if diags.is_empty() {
            Ok(out)
        } else {
            Err(diags)
        }
    }

    fn render_rec(&self, node: &Node, vars: &Vars, sources: &Sources, diags: &mut Vec<Diag>) -> Node {
        match &node.value {
            Value::Str(s) if is_template(s) => match self.render_scalar(s, vars) {
                Ok(v) => Node::from_json(&v, node.span),
                Err(e) => {
                    diags.push(self.locate(&e, s, node.span, sources));
                    node.clone()
                }
            },
            Value::Seq(items) => Node {
                value: Value::Seq(items.iter().map(|n| self.render_rec(n, vars, sources, diags)).collect()),
                span: node.span,
                raw: None,
            },
            Value::Map(entries) => Node {
                value: Value::Map(
                    entries
                        .iter()
                        .map(|e| Entry {
                            key: e.key.clone(),
                            key_span: e.key_span,
                            value: self.render_rec(&e.value, vars, sources, diags),
                        })
                        .collect(),
                ),
                span: node.span,
                raw: None,
            },
            _ => node.clone(),
        }
    }

    fn render_scalar(&self, s: &str, vars: &Vars) -> Result<serde_json::Value, minijinja::Error> {
        if let Some(expr) = single_expression(s) {
            let e = self.env.compile_expression(expr)?;
            let v = e.eval(Self::ctx(vars))?;
            if v.is_undefined() {
                return Err(minijinja::Error::new(ErrorKind::UndefinedError, "undefined value"));
            }
            return serde_json::to_value(&v)
                .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()));
        }
        self.env.render_str(s, Self::ctx(vars)).map(serde_json::Value::String)
    }

    /// Evaluate a `when` condition.
    ///
    /// # Errors
    /// A template error, located.
    pub fn condition(&self, node: &Node, vars: &Vars, sources: &Sources) -> Result<bool, Diag> {
        match &node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) => {
                let expr = single_expression(s).unwrap_or(s);
                self.env
                    .compile_expression(expr)
                    .and_then(|e| e.eval(Self::ctx(vars)))
                    .map(|v| v.is_true())
                    .map_err(|e| self.locate(&e, s, node.span, sources))
            }
            _ => Ok(true),
        }
    }

    /// Render a whole template file's text (registered as `source`).
    ///
    /// # Errors
    /// A template error, located in the template file.
    pub fn render_file(&self, text: &str, source: SourceId, vars: &Vars) -> Result<String, Diag> {
        self.env.render_str(text, Self::ctx(vars)).map_err(|e| {
            let span = e
                .range()
                .map_or(Span::new(source, 0, 0), |r| Span::new(source, r.start, r.len()));
            template_diag(&e, span)
        })
    }

    fn locate(&self, e: &minijinja::Error, template: &str, span: Span, sources: &Sources) -> Diag {
        let file = sources.get(span.source);
        let raw = file.text.get(span.offset..span.offset + span.len).unwrap_or("");
        // The error's range is in the string's value; find the same text in
        // the written scalar (which may carry quotes or indentation).
        let located = e.range().and_then(|r| {
            let piece = template.get(r.clone())?;
            let start = raw.find(piece).or_else(|| {
                // Point at the whole `{{ … }}` holding the error.
                let open = template[..r.start].rfind("{{")?;
                raw.find(&template[open..template[open..].find("}}").map_or(template.len(), |c| open + c + 2)])
            })?;
            Some(span.sub(start, piece.len().max(1)))
        });
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
    let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
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

/// Check the syntax of an expression.
///
/// # Errors
/// The parser's message.
pub fn check_expression(expr: &str) -> Result<(), String> {
    let t = Templates::new();
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
    let t = Templates::new();
    let expr = single_expression(expr).unwrap_or(expr);
    t.env
        .compile_expression(expr)
        .and_then(|e| e.eval(Templates::ctx(vars)))
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
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
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
}
