//! What a run found and did, as data ([`RunReport`]), and its renderers:
//! [`text`] for people at a terminal, [`json`] for programs (schema in the
//! user docs), [`markdown`] for a change meeting. Renderers only read the
//! report; secrets never reach it (see [`redact`]).

pub mod json;
pub mod markdown;
pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::module::{Change, Changes, Risk};
use crate::paths::PathObservation;

/// `diff` or `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Probe and report; change nothing.
    Diff,
    /// Converge.
    Apply,
}

/// A resource's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Why it failed or was skipped, in a sentence (for a failure, its
    /// [`crate::run::Failure`] rendered).
    pub error: Option<String>,
    /// A failure as data: step, exit status, stderr, hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReport>,
    /// Pending requirements this prediction follows (diff).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Other facts worth printing (backup paths, refreshes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What a failed resource's steps did before it failed (so a failure
    /// never hides a change made on the host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
    /// Whether values were hidden.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// A check (`assert`), not a change: `ok` passed, `failed` failed,
    /// `pending` is checked once its pending requirements (`after`) are
    /// applied. A check has no changes and no risk, and is counted in
    /// [`Summary::checks`], never among the changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check: bool,
    /// What a check verifies (its `message`, else its expressions or
    /// command): a GO criterion of the review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criterion: Option<String>,
    /// The systemd units its steps take down for a while (a migration's
    /// stop, a restart): expected in `diff`, and measured by `apply`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downtime: Vec<Downtime>,
    /// Hash of the observed state and the changes: what a saved plan
    /// compares at apply time (never printed).
    #[serde(skip)]
    pub fingerprint: Option<String>,
    /// What the probe saw at each path the resource inspects, before this
    /// run changed anything there: what the run record takes as "created"
    /// and "before" (never printed).
    #[serde(skip)]
    pub paths_before: BTreeMap<String, PathObservation>,
    /// The backups its steps kept, by path on the host (the notes say
    /// them to people; the run record reads them here).
    #[serde(skip)]
    pub backups: Vec<String>,
}

/// A systemd unit that a resource's steps stop and start again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Downtime {
    /// The unit (`docker.service`).
    pub unit: String,
    /// What takes it down.
    #[serde(default)]
    pub kind: DowntimeKind,
    /// How long it is expected to be down, in seconds (`None`: not known,
    /// see [`Downtime::expected`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_secs: Option<u64>,
    /// The expectation in words, with how it was reckoned (`about 5 min:
    /// 3.2 GiB at 120 MiB/s …`, `a restart`, `unknown: …`).
    pub expected: String,
    /// Measured by `apply`: from stopped to active again, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_secs: Option<f64>,
}

/// What takes a unit down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DowntimeKind {
    /// A step stops it, does its work, and starts it again (a migration,
    /// a switch back).
    #[default]
    Stop,
    /// A restart: down for as long as it takes to start.
    Restart,
    /// A step reported it down although the review did not foresee it.
    Unforeseen,
}

impl Downtime {
    /// A restart: down for the time the unit takes to start.
    #[must_use]
    pub fn restart(unit: &str) -> Self {
        Self {
            unit: unit.to_string(),
            kind: DowntimeKind::Restart,
            expected_secs: None,
            expected: "a restart: as long as the unit takes to start".into(),
            actual_secs: None,
        }
    }

    /// The downtime as one line: `docker.service: about 5 min (…); down 4 min 02 s`.
    #[must_use]
    pub fn line(&self) -> String {
        let mut s = format!("{}: {}", self.unit, self.expected);
        if let Some(a) = self.actual_secs {
            s.push_str(&format!("; was down {}", crate::units::duration_f(a)));
        }
        s
    }
}

/// A resource's failure, as data, with where it happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailureReport {
    /// The host.
    pub host: String,
    /// The resource's id.
    pub resource: String,
    /// What failed, how.
    #[serde(flatten)]
    pub failure: crate::run::Failure,
}

/// One host.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    /// The checks (`assert`), which the counts above leave out.
    pub checks: CheckSummary,
}

/// Counts of the checks over every host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Checks that hold.
    pub passed: usize,
    /// Checks that do not hold: the run fails.
    pub failed: usize,
    /// Checks made only once their pending requirements are applied.
    pub pending: usize,
    /// Checks not made (`when` false, a requirement failed).
    pub skipped: usize,
}

/// How the inventory of a run was chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryFrom {
    /// None: the built-in local host.
    #[default]
    None,
    /// Given with `-i`.
    Option,
    /// `inventory.yaml` found in the plan's folder.
    BesidePlan,
    /// `inventory.yaml` found in the current folder.
    CurrentFolder,
    /// The one a saved plan was reviewed with.
    SavedPlan,
}

/// The inventory of a run, as the report tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryUsed {
    /// Its path as given or found (`None`: none, the local host).
    #[serde(rename = "inventory")]
    pub path: Option<String>,
    /// How it was chosen.
    #[serde(rename = "inventory_from")]
    pub from: InventoryFrom,
}

impl InventoryUsed {
    /// How it was chosen, when that is worth saying: `found beside the plan`.
    #[must_use]
    pub fn how(&self) -> Option<&'static str> {
        match self.from {
            InventoryFrom::None | InventoryFrom::Option => None,
            InventoryFrom::BesidePlan => Some("found beside the plan"),
            InventoryFrom::CurrentFolder => Some("found in the current folder"),
            InventoryFrom::SavedPlan => Some("the reviewed one"),
        }
    }

    /// One line for people, each path shown through `code`:
    /// `inventory.yaml (found in the current folder)`, `none, the local host`.
    #[must_use]
    pub fn describe(&self, code: impl Fn(&str) -> String) -> String {
        match (&self.path, self.how()) {
            (None, _) => "none, the local host".to_string(),
            (Some(p), None) => code(p),
            (Some(p), Some(how)) => format!("{} ({how})", code(p)),
        }
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The plan's name.
    pub plan: String,
    /// `diff` or `apply`.
    pub mode: Mode,
    /// This run's id (backups are kept under it).
    pub run_id: String,
    /// The inventory the hosts came from.
    #[serde(flatten)]
    pub inventory: InventoryUsed,
    /// Every host, in inventory order.
    pub hosts: Vec<HostReport>,
    /// Counts.
    pub summary: Summary,
}

impl RunReport {
    /// Fill in the summary from the hosts. Checks are counted apart, and
    /// lose whatever a prediction put in their changes: a check changes
    /// nothing.
    pub fn summarize(&mut self, interrupted: bool) {
        let mut s = Summary {
            hosts: self.hosts.len(),
            interrupted,
            ..Summary::default()
        };
        for h in &mut self.hosts {
            if matches!(h.status, HostStatus::Failed | HostStatus::Unreachable) {
                s.hosts_failed += 1;
            }
            for r in &mut h.resources {
                if r.check {
                    r.changes.clear();
                    r.diff = None;
                    r.risk = None;
                    let c = &mut s.checks;
                    match r.status {
                        Status::Ok | Status::Changed => c.passed += 1,
                        Status::Pending => c.pending += 1,
                        Status::Failed => c.failed += 1,
                        Status::Skipped => c.skipped += 1,
                    }
                    continue;
                }
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
        if s.hosts_failed > 0 || s.failed > 0 || s.checks.failed > 0 || s.interrupted {
            return 1;
        }
        match self.mode {
            Mode::Diff if s.pending > 0 => 2,
            _ => 0,
        }
    }
}

/// The checks' counts in words (`2 passed, 1 failed`), or `None` when
/// the run has no check.
#[must_use]
pub fn checks_line(c: &CheckSummary) -> Option<String> {
    let parts: Vec<String> = [
        (c.passed, "passed"),
        (c.failed, "failed"),
        (c.pending, "checked after apply"),
        (c.skipped, "skipped"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// When a pending check is made: once its pending requirements are applied.
#[must_use]
pub fn check_later(r: &ResourceReport) -> String {
    if r.after.is_empty() {
        "checked during apply".into()
    } else {
        let list = crate::diag::ticked(&r.after);
        let verb = if r.after.len() == 1 { "is" } else { "are" };
        format!("checked once {list} {verb} applied")
    }
}

impl ResourceReport {
    /// Whether the resource is sensitive and some of its values were
    /// hidden (its metadata alone is never hidden).
    #[must_use]
    pub fn hides_values(&self) -> bool {
        let hidden = |v: &Option<String>| v.as_deref() == Some(HIDDEN);
        self.sensitive && self.changes.iter().any(|c| hidden(&c.from) || hidden(&c.to))
    }
}

/// Text shown in place of a secret value.
pub const HIDDEN: &str = "(sensitive)";

/// What a reviewer must see of a sensitive resource: where it is, who may
/// read it, and whether it exists. Every other value of a sensitive
/// resource (its content, a command, a setting) may be or hold the secret.
pub const VISIBLE_WHEN_SENSITIVE: &[&str] = &["path", "mode", "owner", "group", "state"];

/// The changes as they may be printed: the values of a sensitive resource
/// (but its path, mode, owner, group and state) and of secret changes
/// replaced by [`HIDDEN`]; the content diff dropped.
#[must_use]
pub fn redact(changes: &Changes, sensitive: bool) -> (Vec<ChangeReport>, Option<String>) {
    let items = changes
        .items
        .iter()
        .map(|c: &Change| {
            let hide = c.sensitive || (sensitive && !VISIBLE_WHEN_SENSITIVE.contains(&c.field.as_str()));
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
