//! The text report: per host, the resources that need attention, their
//! changes and diffs; colored only when asked (a terminal without NO_COLOR).

use std::fmt::Write as _;

use super::{ChangeReport, HostReport, HostStatus, Mode, ResourceReport, RunReport, Status};
use crate::module::Risk;

/// Rendering choices.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// ANSI colors.
    pub color: bool,
    /// Also list converged resources.
    pub verbose: bool,
}

struct Paint(bool);

impl Paint {
    fn p(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.p("1", s)
    }
    fn red(&self, s: &str) -> String {
        self.p("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.p("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.p("33", s)
    }
    fn dim(&self, s: &str) -> String {
        self.p("2", s)
    }
    fn risk(&self, r: Risk) -> String {
        match r {
            Risk::Safe => self.green(r.as_str()),
            Risk::Restart => self.yellow(r.as_str()),
            Risk::Disruptive => self.p("35", r.as_str()),
            Risk::Destructive => self.p("1;31", r.as_str()),
        }
    }
}

/// Render the report as text.
#[must_use]
pub fn render(r: &RunReport, o: TextOptions) -> String {
    let p = Paint(o.color);
    let mut out = String::new();
    let verb = match r.mode {
        Mode::Diff => "diff",
        Mode::Apply => "apply",
    };
    let _ = writeln!(out, "{} {} ({verb})", p.bold("plan"), p.bold(&r.plan));
    let _ = writeln!(out, "inventory: {}", r.inventory.describe(str::to_string));
    for h in &r.hosts {
        host(&mut out, h, r.mode, o, &p);
    }
    let s = &r.summary;
    let mut parts = Vec::new();
    match r.mode {
        Mode::Diff => parts.push(format!("{} pending", s.pending)),
        Mode::Apply => parts.push(format!("{} changed", s.changed)),
    }
    parts.push(format!("{} ok", s.ok));
    parts.push(format!("{} failed", s.failed));
    parts.push(format!("{} skipped", s.skipped));
    let mut hosts = format!("{} host{}", s.hosts, if s.hosts == 1 { "" } else { "s" });
    if s.hosts_failed > 0 {
        let _ = write!(hosts, ", {} failed", s.hosts_failed);
    }
    let checks = super::checks_line(&s.checks)
        .map(|c| format!("; checks: {c}"))
        .unwrap_or_default();
    let _ = writeln!(out, "\n{} {hosts}: {}{checks}", p.bold("summary:"), parts.join(", "));
    if s.interrupted {
        let _ = writeln!(out, "{}", p.red("interrupted: no new step was started after Ctrl-C"));
    }
    out
}

fn host(out: &mut String, h: &HostReport, mode: Mode, o: TextOptions, p: &Paint) {
    let status = match h.status {
        HostStatus::Ok => p.green("ok"),
        HostStatus::Changed => p.yellow("changed"),
        HostStatus::Pending => p.yellow("changes pending"),
        HostStatus::Failed => p.red("FAILED"),
        HostStatus::Unreachable => p.red("UNREACHABLE"),
    };
    let _ = writeln!(out, "\n{} {} — {status}", p.bold("host"), p.bold(&h.name));
    if let Some(e) = &h.error {
        let _ = writeln!(out, "  {} {}", p.red("error:"), indent(e, 4).trim_start());
    }
    let mut hidden = 0;
    for r in h.resources.iter().filter(|r| !r.check) {
        if r.status == Status::Ok && !o.verbose {
            hidden += 1;
            continue;
        }
        resource(out, r, mode, p);
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "  {}",
            p.dim(&format!(
                "{hidden} resource{} already converged",
                if hidden == 1 { "" } else { "s" }
            ))
        );
    }
    checks(out, h, p);
}

/// The host's checks, apart from its changes: every one, passed or not,
/// since a reviewer reads them as the criteria of the change.
fn checks(out: &mut String, h: &HostReport, p: &Paint) {
    let mut any = false;
    for r in h.resources.iter().filter(|r| r.check) {
        if !any {
            let _ = writeln!(out, "  {}", p.bold("checks:"));
            any = true;
        }
        let (mark, word) = match r.status {
            Status::Ok | Status::Changed => (p.green("✓"), p.green("passed")),
            Status::Pending => (p.yellow("?"), p.yellow(&super::check_later(r))),
            Status::Failed => (p.red("✗"), p.red("FAILED")),
            Status::Skipped => (p.dim("-"), p.dim("skipped")),
        };
        let _ = writeln!(out, "    {mark} {} {word}", p.bold(&r.id));
        if let Some(e) = &r.error {
            let label = if r.status == Status::Failed {
                p.red("error:")
            } else {
                p.dim("reason:")
            };
            let _ = writeln!(out, "        {label} {}", indent(e, 10).trim_start());
        }
    }
}

fn resource(out: &mut String, r: &ResourceReport, mode: Mode, p: &Paint) {
    let (mark, word) = match r.status {
        Status::Ok => (p.green("="), p.green("ok")),
        Status::Changed => (p.yellow("~"), p.yellow("changed")),
        Status::Pending => (
            p.yellow("~"),
            p.yellow(if mode == Mode::Diff { "would change" } else { "pending" }),
        ),
        Status::Failed => (p.red("✗"), p.red("failed")),
        Status::Skipped => (p.dim("-"), p.dim("skipped")),
    };
    let risk = r.risk.map(|x| format!(" [{}]", p.risk(x))).unwrap_or_default();
    let _ = writeln!(out, "  {mark} {} ({}) {word}{risk}", p.bold(&r.id), r.module);
    if !r.after.is_empty() {
        let list = crate::diag::ticked(&r.after);
        let _ = writeln!(out, "      {}", p.dim(&format!("follows the pending change of {list}")));
    }
    for c in &r.changes {
        let _ = writeln!(out, "      {}", change_line(c));
    }
    if let Some(d) = &r.diff {
        for line in d.lines() {
            let colored = if line.starts_with("+++") || line.starts_with("---") {
                p.bold(line)
            } else if line.starts_with('+') {
                p.green(line)
            } else if line.starts_with('-') {
                p.red(line)
            } else if line.starts_with("@@") {
                p.p("36", line)
            } else {
                line.to_string()
            };
            let _ = writeln!(out, "      {colored}");
        }
    }
    if r.hides_values() {
        let _ = writeln!(out, "      {}", p.dim("(secret values hidden: sensitive)"));
    }
    for d in &r.downtime {
        let _ = writeln!(out, "      downtime: {}", d.line());
    }
    for n in &r.notes {
        let _ = writeln!(out, "      {}", p.dim(n));
    }
    if !r.completed.is_empty() {
        let _ = writeln!(out, "      completed before it failed:");
        for c in &r.completed {
            let _ = writeln!(out, "        - {}", indent(c, 10).trim_start());
        }
    }
    if let Some(e) = &r.error {
        let label = if r.status == Status::Failed {
            p.red("error:")
        } else {
            p.dim("reason:")
        };
        let _ = writeln!(out, "      {label} {}", indent(e, 8).trim_start());
    }
}

/// `field: from → to` with `(none)` for absent values.
#[must_use]
pub fn change_line(c: &ChangeReport) -> String {
    match (&c.from, &c.to) {
        (None, None) => c.field.clone(),
        (from, to) => format!(
            "{}: {} → {}",
            c.field,
            from.as_deref().unwrap_or("(none)"),
            to.as_deref().unwrap_or("(none)")
        ),
    }
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}
