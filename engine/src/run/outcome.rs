//! What became of a resource: [`Outcome`], with a failure as data
//! ([`Failure`]) and the reason a resource was not run ([`Reason`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::Become;
use crate::report::Status;
use crate::transport::{tail, Output, TransportError};

/// A resource's outcome, once it is settled.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Converged: nothing to do.
    Ok,
    /// Would change (diff).
    Pending,
    /// Changed by this run, and verified.
    Changed,
    /// Failed: probe, precondition, step or verification.
    Failed(Failure),
    /// Not run.
    Skipped(Reason),
}

impl Outcome {
    /// The status the reports show.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            Outcome::Ok => Status::Ok,
            Outcome::Pending => Status::Pending,
            Outcome::Changed => Status::Changed,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Skipped(_) => Status::Skipped,
        }
    }

    /// The failure, if it failed.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// Why it failed or was not run, as the reports say it.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Failed(f) => Some(f.to_string()),
            Outcome::Skipped(r) => Some(r.to_string()),
            _ => None,
        }
    }

    /// A failure with only a sentence.
    pub(crate) fn failed(what: impl Into<String>) -> Self {
        Outcome::Failed(Failure::new(what))
    }
}

/// Why a resource was not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The plan says so (`when` is false).
    Plan(String),
    /// A requirement failed.
    RequirementFailed(String),
    /// A requirement was not run.
    RequirementSkipped(String),
    /// Ctrl-C came before it started.
    Interrupted,
    /// The connection was lost before it started.
    ConnectionLost,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Plan(why) => f.write_str(why),
            Reason::RequirementFailed(id) => write!(f, "requirement `{id}` failed"),
            Reason::RequirementSkipped(id) => write!(f, "requirement `{id}` was skipped"),
            Reason::Interrupted => f.write_str("interrupted before it started"),
            Reason::ConnectionLost => f.write_str("not started: connection to the host lost"),
        }
    }
}

/// A runtime error, as data: what failed, in which step, with which exit
/// status, what the command said on stderr (its last lines), and what to do
/// about it. The reports render it ([`fmt::Display`] gives the sentence);
/// the JSON report also carries the fields, with the host and the resource
/// ([`crate::report::FailureReport`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong, in a sentence (without the command's own words).
    pub what: String,
    /// The step that failed (its label), if a step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Its exit status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The last lines it printed on stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether the stderr lines are shown below the sentence rather than
    /// after it on the same line.
    #[serde(skip)]
    pub(crate) stderr_below: bool,
}

impl Failure {
    /// A failure said in a sentence.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            ..Self::default()
        }
    }

    /// The same failure, with what to do about it.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same failure, said as part of `phase` (`probe: …`).
    #[must_use]
    pub fn during(mut self, phase: &str) -> Self {
        self.what = format!("{phase}: {}", self.what);
        self
    }

    /// The same failure, in step `label`.
    #[must_use]
    pub fn in_step(mut self, label: &str) -> Self {
        self.step = Some(label.to_string());
        self
    }

    /// A remote execution that failed (`what`), with the last `lines` of
    /// its stderr; a sudo that asked for a password or a terminal is said
    /// as such, with the fix.
    pub(crate) fn of_output(o: &Output, become_: &Become, what: &str, lines: usize) -> Self {
        let err = String::from_utf8_lossy(&o.stderr);
        let mut f = Failure {
            exit_status: Some(o.status),
            ..Failure::default()
        };
        if *become_ != Become::No && (err.contains("a password is required") || err.contains("a terminal is required"))
        {
            f.what = "sudo asks for a password".into();
            f.hint = Some("`become` needs passwordless sudo (NOPASSWD) for this user, or connect as root".into());
            return f;
        }
        if *become_ != Become::No && err.contains("must have a tty") {
            f.what = "sudo requires a terminal here (`Defaults requiretty`)".into();
            f.hint = Some("`become` needs `Defaults:USER !requiretty` for this user, or connect as root".into());
            return f;
        }
        f.what = what.to_string();
        f.stderr = Some(tail(&err, lines)).filter(|t| !t.is_empty());
        f
    }

    /// The connection broke while this resource ran.
    pub(crate) fn lost_during(e: &TransportError) -> Self {
        Failure::new(format!("connection lost during this resource: {e}"))
    }

    /// Its changes were made, but the connection broke before they were
    /// verified.
    pub(crate) fn unverified(e: &TransportError) -> Self {
        Failure::new(format!("changed, but not verified: connection lost: {e}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if let Some(err) = &self.stderr {
            f.write_str(if self.stderr_below { ":\n" } else { ": " })?;
            f.write_str(err)?;
        }
        if let Some(h) = &self.hint {
            write!(f, ": {h}")?;
        }
        Ok(())
    }
}

impl From<String> for Failure {
    fn from(what: String) -> Self {
        Failure::new(what)
    }
}

impl From<&str> for Failure {
    fn from(what: &str) -> Self {
        Failure::new(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed step reads as one sentence with the command's last words,
    /// and keeps them apart as data.
    #[test]
    fn a_failure_is_data_rendered_as_a_sentence() {
        let o = Output {
            stdout: Vec::new(),
            stderr: b"\nfirst\nE: no such package\n".to_vec(),
            status: 100,
        };
        let f = Failure::of_output(&o, &Become::No, "`apt-get install x` failed (exit 100)", 1)
            .in_step("apt-get install x");
        assert_eq!(
            f.to_string(),
            "`apt-get install x` failed (exit 100): E: no such package"
        );
        assert_eq!(f.exit_status, Some(100));
        assert_eq!(f.stderr.as_deref(), Some("E: no such package"));
        assert_eq!(f.step.as_deref(), Some("apt-get install x"));
        let sudo = Output {
            stdout: Vec::new(),
            stderr: b"sudo: a password is required\n".to_vec(),
            status: 1,
        };
        let f = Failure::of_output(&sudo, &Become::Root, "the probe did not run", 6).during("probe");
        assert_eq!(
            f.to_string(),
            "probe: sudo asks for a password: `become` needs passwordless sudo (NOPASSWD) for this user, or connect as root"
        );
        assert!(f.hint.is_some() && f.stderr.is_none());
    }
}
