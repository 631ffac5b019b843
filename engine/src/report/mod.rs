//! What a run found and did, as data ([`RunReport`]), and its renderers:
//! [`text`] for people at a terminal, [`json`] for programs (schema in the
//! user docs), [`markdown`] for a change meeting. Renderers only read the
//! report; secrets never reach it (see [`redact`]).

pub mod json;
pub mod markdown;
pub mod text;

use serde::Serialize;

use crate::module::{Change, Changes, Risk};

/// `diff` or `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Probe and report; change nothing.
    Diff,
    /// Converge.
    Apply,
}

/// A resource's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Converged; nothing to do.
    Ok,
    /// Changed by this run (apply).
    Changed,
    /// Would change (diff).
    Pending,
    /// Failed (probe, step, or verification).
    Failed,
    /// Not run: `when` was false, a requirement failed or was skipped, or
    /// the run was interrupted.
    Skipped,
}

/// A host's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Nothing to do.
    Ok,
    /// Changes were made.
    Changed,
    /// Changes are pending (diff).
    Pending,
    /// Something failed on the host.
    Failed,
    /// The host could not be reached.
    Unreachable,
}

/// One change, as printed (values already redacted).
#[derive(Clone, Debug, Serialize)]
pub struct ChangeReport {
    /// What differs.
    pub field: String,
    /// Observed value.
    pub from: Option<String>,
    /// Desired value.
    pub to: Option<String>,
    /// Its risk.
    pub risk: Risk,
}

/// One resource on one host.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceReport {
    /// Its id.
    pub id: String,
    /// Its module.
    pub module: String,
    /// Outcome.
    pub status: Status,
    /// Highest risk of its changes.
    pub risk: Option<Risk>,
    /// The changes (pending in diff, made in apply).
    pub changes: Vec<ChangeReport>,
    /// Unified diff of content, when there is one and it may be shown.
    pub diff: Option<String>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Pending requirements this prediction follows (diff).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Other facts worth printing (backup paths, refreshes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What a failed resource's steps did before it failed (so a failure
    /// never hides a change made on the host).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
    /// Whether values were hidden.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// Hash of the observed state and the changes: what a saved plan
    /// compares at apply time (never printed).
    #[serde(skip)]
    pub fingerprint: Option<String>,
}

/// One host.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Inventory name.
    pub name: String,
    /// Outcome.
    pub status: HostStatus,
    /// Why the host failed as a whole (unreachable, lost).
    pub error: Option<String>,
    /// Remote executions made on this host (probe batches, steps).
    pub remote_executions: u32,
    /// Its resources, in dependency order.
    pub resources: Vec<ResourceReport>,
}

/// Counts over every host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Hosts in the run.
    pub hosts: usize,
    /// Hosts that failed or were unreachable.
    pub hosts_failed: usize,
    /// Resources converged already.
    pub ok: usize,
    /// Resources changed.
    pub changed: usize,
    /// Resources with pending changes.
    pub pending: usize,
    /// Resources failed.
    pub failed: usize,
    /// Resources skipped.
    pub skipped: usize,
    /// Whether Ctrl-C stopped the run early.
    pub interrupted: bool,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The plan's name.
    pub plan: String,
    /// `diff` or `apply`.
    pub mode: Mode,
    /// This run's id (backups are kept under it).
    pub run_id: String,
    /// Every host, in inventory order.
    pub hosts: Vec<HostReport>,
    /// Counts.
    pub summary: Summary,
}

impl RunReport {
    /// Fill in the summary from the hosts.
    pub fn summarize(&mut self, interrupted: bool) {
        let mut s = Summary {
            hosts: self.hosts.len(),
            interrupted,
            ..Summary::default()
        };
        for h in &self.hosts {
            if matches!(h.status, HostStatus::Failed | HostStatus::Unreachable) {
                s.hosts_failed += 1;
            }
            for r in &h.resources {
                match r.status {
                    Status::Ok => s.ok += 1,
                    Status::Changed => s.changed += 1,
                    Status::Pending => s.pending += 1,
                    Status::Failed => s.failed += 1,
                    Status::Skipped => s.skipped += 1,
                }
            }
        }
        self.summary = s;
    }

    /// The process exit code PLAN_FORMAT specifies for this run.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        let s = &self.summary;
        if s.hosts_failed > 0 || s.failed > 0 || s.interrupted {
            return 1;
        }
        match self.mode {
            Mode::Diff if s.pending > 0 => 2,
            _ => 0,
        }
    }
}

/// Text shown in place of a secret value.
pub const HIDDEN: &str = "(sensitive)";

/// The changes as they may be printed: values of a sensitive resource, and
/// of sensitive changes, replaced by [`HIDDEN`]; diffs dropped.
#[must_use]
pub fn redact(changes: &Changes, sensitive: bool) -> (Vec<ChangeReport>, Option<String>) {
    let items = changes
        .items
        .iter()
        .map(|c: &Change| {
            let hide = sensitive || c.sensitive;
            let shown = |v: &Option<String>| {
                if hide {
                    v.as_ref().map(|_| HIDDEN.to_string())
                } else {
                    v.clone()
                }
            };
            ChangeReport {
                field: c.field.clone(),
                from: shown(&c.from),
                to: shown(&c.to),
                risk: c.risk,
            }
        })
        .collect();
    let any_secret = sensitive || changes.items.iter().any(|c| c.sensitive);
    (items, if any_secret { None } else { changes.diff.clone() })
}
