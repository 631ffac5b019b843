//! Diagnostics: errors in the user's plans and inventories, each a labelled
//! span with a code and, where a fix is known, a help line. They are collected
//! (never only the first) and rendered through miette.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

use crate::source::{Sources, Span};

/// One problem in the user's input.
#[derive(Debug, Clone)]
pub struct Diag {
    /// Stable code, e.g. `plumb::plan::unknown_key`.
    pub code: &'static str,
    /// Lowercase message: what was found and what was expected.
    pub message: String,
    /// Where, with a short label (the first is the primary one).
    pub labels: Vec<(Span, String)>,
    /// How to fix it, when known.
    pub help: Option<String>,
}

impl Diag {
    /// A diagnostic with a primary label.
    pub fn new(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            labels: vec![(span, label.into())],
            help: None,
        }
    }

    /// A diagnostic that points at no text (e.g. a missing file).
    pub fn bare(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    /// Add a help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Add a help line if there is one.
    #[must_use]
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Add a secondary label.
    #[must_use]
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }
}

/// "did you mean `x`?" for the candidate nearest to `name`, if any is close.
#[must_use]
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    nearest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate nearest to `name` by edit distance, if it is close enough to
/// be a likely typo.
#[must_use]
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A diagnostic bound to its source text, ready for miette.
#[derive(Debug)]
pub struct SourcedDiag {
    diag: Diag,
    source: Option<NamedSource<String>>,
}

impl fmt::Display for SourcedDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for SourcedDiag {}

impl Diagnostic for SourcedDiag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let primary = self.diag.labels.first().map(|(s, _)| s.source);
        Some(Box::new(
            self.diag
                .labels
                .iter()
                .enumerate()
                .filter(move |(_, (s, _))| Some(s.source) == primary)
                .map(|(i, (s, l))| {
                    let label = (!l.is_empty()).then(|| l.clone());
                    if i == 0 {
                        LabeledSpan::new_primary_with_span(label, (s.offset, s.len))
                    } else {
                        LabeledSpan::new_with_span(label, (s.offset, s.len))
                    }
                }),
        ))
    }
}

/// Every diagnostic found in one invocation, reported together.
#[derive(Debug)]
pub struct Report {
    summary: String,
    items: Vec<SourcedDiag>,
}

impl Report {
    /// Bind `diags` to their sources. The summary names the file when all of
    /// them are in one file.
    #[must_use]
    pub fn new(sources: &Sources, mut diags: Vec<Diag>) -> Self {
        diags.sort_by_key(|d| d.labels.first().map(|(s, _)| (s.source.0, s.offset)));
        let files: std::collections::BTreeSet<String> = diags
            .iter()
            .filter_map(|d| d.labels.first().map(|(s, _)| sources.get(s.source).name.clone()))
            .collect();
        let n = diags.len();
        let noun = if n == 1 { "error" } else { "errors" };
        let summary = if files.len() == 1 {
            format!("{n} {noun} in {}", files.iter().next().expect("one file"))
        } else {
            format!("{n} {noun}")
        };
        let items = diags
            .into_iter()
            .map(|diag| {
                let source = diag.labels.first().map(|(s, _)| {
                    let f = sources.get(s.source);
                    NamedSource::new(f.name.clone(), f.text.to_string()).with_language("yaml")
                });
                SourcedDiag { diag, source }
            })
            .collect();
        Self { summary, items }
    }

    /// The one diagnostic, when there is exactly one (it reads better alone).
    ///
    /// # Errors
    /// The report itself when there are several.
    pub fn into_single(mut self) -> Result<SourcedDiag, Self> {
        if self.items.len() == 1 {
            return Ok(self.items.remove(0));
        }
        Err(self)
    }

    /// The diagnostics, in file order.
    #[must_use]
    pub fn items(&self) -> &[SourcedDiag] {
        &self.items
    }

    /// How many problems there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Report {}

impl Diagnostic for Report {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.items.iter().map(|d| d as &dyn Diagnostic)))
    }
}

/// Render diagnostics as plain text (no color), e.g. to report a plan
/// error found on one host inside a run's report.
#[must_use]
pub fn render_plain(sources: &Sources, diags: Vec<Diag>) -> String {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    let report = Report::new(sources, diags);
    for d in report.items() {
        let _ = handler.render_report(&mut out, d);
    }
    out
}

/// `` `a`, `b` ``: names in backticks, joined by commas (how messages and
/// reports list names).
pub fn ticked<I>(names: I) -> String
where
    I: IntoIterator,
    I::Item: std::fmt::Display,
{
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_and_ignores_unrelated_names() {
        let mods = ["file", "directory", "command", "lvm.lv", "lvm.vg"];
        assert_eq!(nearest("fiel", mods), Some("file"));
        assert_eq!(nearest("directry", mods), Some("directory"));
        assert_eq!(nearest("zzz", mods), None);
    }
}
