//! Saved plans: what `plumb diff --out FILE` reviewed, so that `plumb apply
//! FILE` applies exactly that, and refuses when anything moved since. A
//! saved plan holds paths and hashes, never a secret value.

use serde::{Deserialize, Serialize};

use crate::module::sha256_hex;
use crate::report::{RunReport, Status};
use crate::source::Sources;
use crate::template::Vars;

/// Format version.
pub const VERSION: u32 = 1;

/// A reviewed plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Marks the file as a saved plan, and its format.
    pub plumb_saved_plan: u32,
    /// The plan file, absolute.
    pub plan: String,
    /// The inventory file, absolute (`None`: the built-in local one).
    pub inventory: Option<String>,
    /// `--limit` at review time.
    pub limit: Vec<String>,
    /// Hash of the `--var` values (the values themselves may be secret).
    pub vars_sha256: String,
    /// Every file the plan was built from, hashed.
    pub sources: Vec<SourceHash>,
    /// What was observed and what would change, per host and resource.
    pub resources: Vec<ResourceHash>,
    /// The run id of the review.
    pub reviewed_in: String,
}

/// A source file and its hash.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceHash {
    /// Path as loaded.
    pub path: String,
    /// Hex sha256 of its text.
    pub sha256: String,
}

/// One resource's review fingerprint.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceHash {
    /// Host name.
    pub host: String,
    /// Resource id.
    pub id: String,
    /// Observed state and pending changes, hashed (`None`: not probed).
    pub fingerprint: Option<String>,
    /// Whether it had pending changes.
    pub pending: bool,
}

/// Hash of the command-line variables.
#[must_use]
pub fn vars_hash(vars: &Vars) -> String {
    sha256_hex(serde_json::to_string(vars).unwrap_or_default().as_bytes())
}

/// Every loaded source, hashed.
#[must_use]
pub fn source_hashes(sources: &Sources) -> Vec<SourceHash> {
    let mut v: Vec<SourceHash> = sources
        .all()
        .iter()
        .map(|f| SourceHash {
            path: f.path.display().to_string(),
            sha256: sha256_hex(f.text.as_bytes()),
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v.dedup_by(|a, b| a.path == b.path);
    v
}

/// The per-resource fingerprints of a diff run.
#[must_use]
pub fn resource_hashes(r: &RunReport) -> Vec<ResourceHash> {
    r.hosts
        .iter()
        .flat_map(|h| {
            h.resources.iter().map(|x| ResourceHash {
                host: h.name.clone(),
                id: x.id.clone(),
                fingerprint: x.fingerprint.clone(),
                pending: x.status == Status::Pending,
            })
        })
        .collect()
}

/// What differs between a review and now, as sentences naming the resource.
#[must_use]
pub fn compare(saved: &[ResourceHash], now: &[ResourceHash]) -> Vec<String> {
    let mut out = Vec::new();
    for s in saved {
        match now.iter().find(|n| n.host == s.host && n.id == s.id) {
            None => out.push(format!("resource `{}` on `{}` is no longer in the plan", s.id, s.host)),
            Some(n) if n.fingerprint != s.fingerprint => out.push(format!(
                "resource `{}` on `{}` changed since the review (its observed state or its desired state differs)",
                s.id, s.host
            )),
            Some(_) => {}
        }
    }
    for n in now {
        if !saved.iter().any(|s| s.host == n.host && s.id == n.id) {
            out.push(format!("resource `{}` on `{}` was not in the review", n.id, n.host));
        }
    }
    out
}
