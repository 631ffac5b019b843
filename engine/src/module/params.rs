//! Reading parameters: the [`CompileCx`] a module's `prepare` checks and
//! completes them with, and the parameter types modules share
//! ([`FileMode`], [`Presence`]).

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Payload;
use crate::diag::Diag;
use crate::source::{Sources, Span};
use crate::yaml::Node;

/// Renders a template file's text (registered as the given source) with
/// the host's variables; every error located in that file.
pub type RenderFile<'a> = dyn Fn(&str, crate::source::SourceId) -> Result<String, Vec<Diag>> + 'a;

/// The folders of a Linux root that a relative path may have meant
/// (`etc/motd` was likely `/etc/motd`).
const ROOT_FOLDERS: &[&str] = &[
    "boot", "dev", "etc", "home", "mnt", "media", "opt", "proc", "root", "run", "srv", "sys", "tmp", "usr", "var",
];

/// What compiling one resource needs from the engine, and what a module's
/// `prepare` may use: the plan's folder for local files, the templating of
/// local template files, the host's variables, and a place for errors that
/// point at the user's parameters.
pub struct CompileCx<'a> {
    pub(crate) params: &'a Node,
    pub(crate) anchor: Span,
    pub(crate) plan_dir: &'a Path,
    pub(crate) sources: &'a Sources,
    pub(crate) render: &'a RenderFile<'a>,
    pub(crate) diags: RefCell<Vec<Diag>>,
    pub(crate) sensitive: bool,
    pub(crate) vars: &'a crate::template::Vars,
    /// Set when the host's variables are read (the result is then not
    /// shared between hosts).
    pub(crate) host_specific: std::cell::Cell<bool>,
}

impl<'a> CompileCx<'a> {
    /// The context of compiling the resource whose parameters are `params`
    /// (errors about the resource as a whole point at `anchor`), for the
    /// plan in `plan_dir`.
    #[must_use]
    pub fn new(
        params: &'a Node,
        anchor: Span,
        plan_dir: &'a Path,
        sources: &'a Sources,
        render: &'a RenderFile<'a>,
        sensitive: bool,
        vars: &'a crate::template::Vars,
    ) -> Self {
        Self {
            params,
            anchor,
            plan_dir,
            sources,
            render,
            diags: RefCell::new(Vec::new()),
            sensitive,
            vars,
            host_specific: std::cell::Cell::new(false),
        }
    }
}

impl CompileCx<'_> {
    /// Whether the resource is `sensitive` (its old content must not even be
    /// fetched for a diff).
    #[must_use]
    pub fn sensitive(&self) -> bool {
        self.sensitive
    }

    /// The host's variables (with `facts` once they are known).
    #[must_use]
    pub fn vars(&self) -> &crate::template::Vars {
        self.host_specific.set(true);
        self.vars
    }

    /// Check that `expr` (the parameter at `path`) is a valid expression;
    /// an error points at it.
    pub fn check_expression(&self, path: &str, expr: &str) -> bool {
        match crate::template::check_expression(expr) {
            Ok(()) => true,
            Err(e) => {
                self.error(
                    path,
                    "plumb::template::syntax",
                    format!("invalid expression: {e}"),
                    None,
                );
                false
            }
        }
    }

    /// Report a problem with the parameter at `path` (dotted; `""` for the
    /// resource as a whole).
    pub fn error(&self, path: &str, code: &'static str, message: impl Into<String>, help: Option<String>) {
        let span = if path.is_empty() {
            self.anchor
        } else {
            self.params.at_path(path).map_or(self.anchor, |n| n.span)
        };
        self.diags
            .borrow_mut()
            .push(Diag::new(code, message, span, "").with_help_opt(help));
    }

    /// Require `value` of parameter `path` to be an absolute path. The help
    /// proposes a path only when the value's first folder is one of the
    /// root's usual folders (`etc/motd` → `/etc/motd`): any other guess
    /// (`/app.conf` for `app.conf`) would likely be wrong.
    pub fn require_absolute(&self, path: &str, value: &str) {
        if value.starts_with('/') {
            return;
        }
        let rel = value.trim_start_matches("./");
        let top = rel.split('/').next().unwrap_or_default();
        let help = if ROOT_FOLDERS.contains(&top) && rel.len() > top.len() {
            format!("write it from the root: `/{rel}`")
        } else {
            format!(
                "write the whole path on the host, from `/`: plumb cannot tell which folder `{rel}` was meant to be in"
            )
        };
        self.error(
            path,
            "plumb::plan::relative_path",
            format!("`{path}` must be an absolute path, found `{value}`"),
            Some(help),
        );
    }

    /// Require `value` of parameter `path` to be a device's absolute path;
    /// a bare name (`vdc`) is proposed under `/dev`.
    pub fn require_device(&self, path: &str, value: &str) {
        if value.starts_with('/') {
            return;
        }
        let help = if value.is_empty() || value.contains('/') {
            "name the device by its path: `/dev/vdb`, `/dev/disk/by-id/…`".to_string()
        } else {
            format!("name the device by its path: `/dev/{value}`")
        };
        self.error(
            path,
            "plumb::plan::relative_path",
            format!("`{path}` must be a device's absolute path, found `{value}`"),
            Some(help),
        );
    }

    /// A local file named by parameter `path`, relative to the plan's folder.
    pub fn local_path(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.plan_dir.join(p)
        }
    }

    /// Read a local file (parameter `path` names it) as a payload.
    pub fn read_local(&self, path: &str, rel: &str) -> Option<Payload> {
        let full = self.local_path(rel);
        match Payload::file(&full) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(
                    path,
                    "plumb::plan::local_file",
                    format!("cannot read local file `{}`: {e}", full.display()),
                    None,
                );
                None
            }
        }
    }

    /// Render a local minijinja template file (parameter `path` names it)
    /// with the host's variables; its errors point into the template file.
    pub fn render_local(&self, path: &str, rel: &str) -> Option<String> {
        self.host_specific.set(true);
        let full = self.local_path(rel);
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    path,
                    "plumb::plan::local_file",
                    format!("cannot read template `{}`: {e}", full.display()),
                    None,
                );
                return None;
            }
        };
        let id = self.sources.add(full.display().to_string(), &full, text.as_str());
        match (self.render)(&text, id) {
            Ok(s) => Some(s),
            Err(d) => {
                self.diags.borrow_mut().extend(d);
                None
            }
        }
    }
}

/// An octal permission mode, written as a quoted string (`"0644"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_mode(&s).map(FileMode).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid mode `{s}`: expected an octal string like \"0644\" or \"0755\""
            ))
        })
    }
}

/// Parse an octal mode string (`"0644"`, `"644"`, `"1777"`).
#[must_use]
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// `present` or `absent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// It exists.
    #[default]
    Present,
    /// It does not.
    Absent,
}

/// `true`: the serde default of a parameter that is on unless turned off
/// (`#[serde(default = "plumb_engine::module::yes")]`).
#[must_use]
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal_strings_only() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("1777"), Some(0o1777));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        for bad in ["", "abc", "0999", "12345", "rwxr-xr-x", "-644"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }
}
