//! Saved plans: what `plumb diff --out FILE` reviewed, so that `plumb apply
//! FILE` applies exactly that, and refuses when anything moved since. A
//! saved plan holds paths and hashes, never a secret value.
//!
//! Files are compared by what they are, not by how their paths were spelled:
//! every path in a saved plan is absolute with symbolic links resolved, so a
//! plan reviewed as `site.yaml` applies from any folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::module::sha256_hex;
use crate::report::{RunReport, Status};
use crate::source::Sources;

/// Format version (2: paths are canonical, `--var` values hashed as written).
pub const VERSION: u32 = 2;

/// A reviewed plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Marks the file as a saved plan, and its format.
    pub plumb_saved_plan: u32,
    /// The plan file, canonical.
    pub plan: String,
    /// The inventory file, canonical (`None`: none, the local host).
    pub inventory: Option<String>,
    /// `--limit` at review time.
    pub limit: Vec<String>,
    /// Hash of the `--var` values as written (the values may be secret).
    pub vars_sha256: String,
    /// Every file the plan was built from, hashed.
    pub sources: Vec<SourceHash>,
    /// What was observed and what would change, per host and resource.
    pub resources: Vec<ResourceHash>,
    /// The run id of the review.
    pub reviewed_in: String,
    /// For a rollback (`plumb rollback RUN --out FILE`): the run it undoes;
    /// `plan` is then that run's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// For a rollback: what it was asked to do beyond restoring files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_options: Option<crate::rollback::Options>,
    /// The review's report as it was printed (secret values hidden), less
    /// the content diffs (a saved plan holds hashes, not file contents),
    /// for `plumb show FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
}

/// A source file and its hash.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceHash {
    /// The file, canonical.
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

/// What a review was made of, to save beside its report.
#[derive(Debug)]
pub struct Review<'a> {
    /// The plan file, as given.
    pub plan: &'a Path,
    /// The inventory file used, as given or found (`None`: the local host).
    pub inventory: Option<&'a Path>,
    /// `--limit`.
    pub limit: &'a [String],
    /// The `--var` arguments, `NAME=VALUE` as written.
    pub vars: &'a [String],
    /// Every file loaded for the review.
    pub sources: &'a Sources,
}

impl SavedPlan {
    /// The saved form of a review and its diff report.
    ///
    /// # Errors
    /// When the plan or the inventory cannot be resolved to a file.
    pub fn new(review: &Review<'_>, report: &RunReport) -> std::io::Result<Self> {
        let canonical = |p: &Path| std::fs::canonicalize(p).map(|p| p.display().to_string());
        Ok(Self {
            plumb_saved_plan: VERSION,
            plan: canonical(review.plan)?,
            inventory: review.inventory.map(canonical).transpose()?,
            limit: review.limit.to_vec(),
            vars_sha256: vars_hash(review.vars),
            sources: source_hashes(review.sources),
            resources: resource_hashes(report),
            reviewed_in: report.run_id.clone(),
            rollback: None,
            rollback_options: None,
            report: Some(without_content(report)),
        })
    }

    /// Read `path` as a saved plan. `None`: it is not one (a plan file);
    /// `Some(Err)`: it says it is one but cannot be read as such.
    #[must_use]
    pub fn read(path: &Path) -> Option<Result<Self, String>> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let version = v.get("plumb_saved_plan")?.as_u64();
        if version != Some(u64::from(VERSION)) {
            return Some(Err(format!(
                "it was saved in format {} and this plumb reads format {VERSION}: run `plumb diff --out` again",
                version.map_or_else(|| "?".to_string(), |n| n.to_string())
            )));
        }
        Some(serde_json::from_value(v).map_err(|e| e.to_string()))
    }

    /// What the command line of the apply changes from the review's: another
    /// inventory, other `--limit` or `--var` values. Checked before the plan
    /// is loaded: a difference is reported as such, not as its consequences.
    #[must_use]
    pub fn check_arguments(&self, inventory: Option<&Path>, limit: &[String], vars: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(given) = inventory {
            let given_id = identity(given).display().to_string();
            match &self.inventory {
                Some(reviewed) if *reviewed == given_id => {}
                Some(reviewed) => out.push(format!(
                    "the review used the inventory `{reviewed}`, not `{}` (leave out `-i`)",
                    given.display()
                )),
                None => out.push(format!(
                    "the review used no inventory (the local host), not `{}` (leave out `-i`)",
                    given.display()
                )),
            }
        }
        if !limit.is_empty() && limit != self.limit.as_slice() {
            out.push(format!(
                "the review was limited to `{}`, not `{}` (leave out `--limit`)",
                self.limit.join(","),
                limit.join(",")
            ));
        }
        if vars_hash(vars) != self.vars_sha256 {
            out.push("the `--var` values differ from the review's (give the same ones)".to_string());
        }
        out
    }

    /// Which source files changed, appeared or went away since the review.
    #[must_use]
    pub fn check_sources(&self, sources: &Sources) -> Vec<String> {
        let now = source_hashes(sources);
        let mut out = Vec::new();
        for s in &self.sources {
            match now.iter().find(|n| n.path == s.path) {
                Some(n) if n.sha256 == s.sha256 => {}
                Some(_) => out.push(format!("`{}` changed since the review", s.path)),
                None => out.push(format!("`{}` is no longer part of the plan", s.path)),
            }
        }
        for n in &now {
            if !self.sources.iter().any(|s| s.path == n.path) {
                out.push(format!("`{}` was not part of the review", n.path));
            }
        }
        out
    }

    /// What differs on the hosts between the review and `now`, a diff run of
    /// the same plan.
    #[must_use]
    pub fn check_hosts(&self, now: &RunReport) -> Vec<String> {
        compare(&self.resources, &resource_hashes(now))
    }
}

/// `report` without the content diffs.
#[must_use]
pub fn without_content(report: &RunReport) -> RunReport {
    let mut r = report.clone();
    for h in &mut r.hosts {
        for x in &mut h.resources {
            x.diff = None;
        }
    }
    r
}

/// A file as what it is: its canonical path, or, when it cannot be resolved
/// (it went away), its absolute path.
#[must_use]
pub fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Fingerprint of the `--var` arguments as written (`NAME=VALUE`; the last
/// of one name counts, as it does for the run). The values may be secrets:
/// the fingerprint is keyed with the workstation's key
/// ([`crate::journal::Keyed`]), so that a saved plan left around says
/// nothing about them to someone without the key. (Without a usable state
/// folder: a plain sha256.)
#[must_use]
pub fn vars_hash(vars: &[String]) -> String {
    let map: BTreeMap<&str, &str> = vars
        .iter()
        .map(|v| {
            let (k, val) = v.split_once('=').unwrap_or((v, ""));
            (k.trim(), val)
        })
        .collect();
    let json = serde_json::to_string(&map).unwrap_or_default();
    match crate::journal::Keyed::load() {
        Ok(k) => k.fingerprint(json.as_bytes()),
        Err(_) => sha256_hex(json.as_bytes()),
    }
}

/// Every loaded source, hashed, by canonical path.
#[must_use]
pub fn source_hashes(sources: &Sources) -> Vec<SourceHash> {
    let mut v: Vec<SourceHash> = sources
        .all()
        .iter()
        .map(|f| SourceHash {
            path: identity(&f.path).display().to_string(),
            sha256: sha256_hex(f.text.as_bytes()),
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v.dedup_by(|a, b| a.path == b.path);
    v
}

/// The per-resource fingerprints of a diff run; those of sensitive
/// resources keyed with the workstation's key (they hash what the secret
/// file holds).
#[must_use]
pub fn resource_hashes(r: &RunReport) -> Vec<ResourceHash> {
    let key = crate::journal::Keyed::load().ok();
    r.hosts
        .iter()
        .flat_map(|h| {
            h.resources.iter().map(|x| ResourceHash {
                host: h.name.clone(),
                id: x.id.clone(),
                fingerprint: match (&key, &x.fingerprint) {
                    (Some(k), Some(f)) if x.sensitive => Some(k.fingerprint(f.as_bytes())),
                    _ => x.fingerprint.clone(),
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_known_by_what_it_is_not_by_its_spelling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("site")).unwrap();
        let plan = dir.path().join("site/plan.yaml");
        std::fs::write(&plan, "resources: []\n").unwrap();
        let twice = Sources::new();
        twice.add("a", &plan, "resources: []\n");
        twice.add("b", &dir.path().join("site/../site/./plan.yaml"), "resources: []\n");
        let hashes = source_hashes(&twice);
        assert_eq!(hashes.len(), 1, "{hashes:?}");
        assert_eq!(
            hashes[0].path,
            std::fs::canonicalize(&plan).unwrap().display().to_string()
        );
    }

    #[test]
    fn var_values_are_compared_as_written() {
        let v = |xs: &[&str]| vars_hash(&xs.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_ne!(v(&["w=04"]), v(&["w=4"]));
        assert_eq!(v(&["w=4", "a=1"]), v(&["a=1", "w=4"]));
        assert_eq!(v(&["w=1", "w=4"]), v(&["w=4"]), "the last one counts");
        assert_ne!(v(&[]), v(&["w="]));
    }
}
