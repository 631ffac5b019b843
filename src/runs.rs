//! The run journal on the command line: the record every `apply` leaves
//! (begun before the first step, finished even when the run fails or is
//! interrupted), `plumb history` and `plumb show`.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use plumb_engine::compile::HostPlan;
use plumb_engine::inventory::{self, Host};
use plumb_engine::journal::{self, Footprint, Keyed, Outcome, RunKind, RunRecord};
use plumb_engine::module::sha256_hex;
use plumb_engine::report::RunReport;
use plumb_engine::saved::{self, SavedPlan};
use plumb_engine::source::Sources;
use plumb_engine::transport::Connector;

use crate::Common;

/// What a record says of the run before it starts.
pub(crate) struct Begin<'a> {
    pub(crate) kind: RunKind,
    /// The plan file (for a rollback: the record rolled back).
    pub(crate) plan: &'a Path,
    pub(crate) sources: &'a Sources,
    pub(crate) inventory: Option<&'a str>,
    pub(crate) limit: &'a [String],
    /// The saved plan applied, if one was.
    pub(crate) saved_plan: Option<&'a Path>,
    pub(crate) rollback_of: Option<&'a str>,
    /// `--keep-backups`: the runs whose backups and records the hosts keep.
    pub(crate) keep_backups: usize,
}

/// A run being journaled.
pub(crate) struct Journal {
    record: RunRecord,
    keep_backups: usize,
    footprint: Footprint,
    hosts: Vec<Host>,
}

/// Hash of a plan: every source file, by canonical path.
pub(crate) fn plan_hash(sources: &Sources) -> String {
    sha256_hex(
        serde_json::to_string(&saved::source_hashes(sources))
            .unwrap_or_default()
            .as_bytes(),
    )
}

fn canonical(p: &Path) -> String {
    saved::identity(p).display().to_string()
}

fn warn(what: &str, e: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "warning: {what}: {e}");
}

impl Journal {
    /// Start the record of run `run_id` over `hosts`, and write it on the
    /// workstation now: a run killed outright still leaves its trace.
    pub(crate) fn begin(run_id: &str, b: &Begin<'_>, hosts: &[HostPlan]) -> Self {
        let mut record = RunRecord::start(run_id, b.kind, canonical(b.plan), plan_hash(b.sources));
        record.inventory = b.inventory.map(|i| canonical(Path::new(i)));
        record.limit = b.limit.to_vec();
        record.rollback_of = b.rollback_of.map(str::to_string);
        if let Some(s) = b.saved_plan {
            record.saved_plan = Some(canonical(s));
            record.saved_plan_sha256 = std::fs::read(s).ok().map(|bytes| sha256_hex(&bytes));
        }
        if let Err(e) = record.save_local() {
            warn("cannot write the run's record", &e);
        }
        Self {
            record,
            keep_backups: b.keep_backups,
            footprint: Footprint::of(hosts),
            hosts: hosts.iter().map(|h| h.host.clone()).collect(),
        }
    }

    /// What to save if the run is aborted by a second signal: the record
    /// as begun, marked aborted (see [`aborted`]).
    pub(crate) fn record(&self) -> RunRecord {
        self.record.clone()
    }

    /// Finish the record with the report, on the workstation and on every
    /// host the run reached.
    pub(crate) async fn end(mut self, report: &RunReport, connector: Arc<dyn Connector>) {
        match Keyed::load() {
            Ok(key) => {
                self.record
                    .finish(
                        report,
                        &self.footprint,
                        &self.hosts,
                        connector,
                        &key,
                        Some(self.keep_backups),
                    )
                    .await;
            }
            Err(e) => {
                // Without the key, hashes of secrets cannot be kept safely:
                // the record keeps the report, and no host is written to.
                warn(
                    "cannot read the workstation's key (state folder); the hosts keep no record of this run",
                    &e,
                );
                self.record.finished = Some(journal::now());
                self.record.outcome = Outcome::of(report);
                self.record.report = Some(report.clone());
            }
        }
        for h in &self.record.hosts {
            if let Some(e) = &h.error {
                warn(
                    &format!("the record of run `{}` on `{}`", self.record.run_id, h.host),
                    e,
                );
            }
        }
        if let Err(e) = self.record.save_local() {
            warn("cannot write the run's record", &e);
        }
    }
}

/// Record a saved plan refused because the world moved (nothing applied,
/// no host touched).
pub(crate) fn refused(file: &Path, saved: &SavedPlan, plan_sha256: Option<String>, problems: &[String]) {
    let id = plumb_engine::run::new_run_id();
    let hash = plan_sha256.unwrap_or_default();
    let mut r = RunRecord::start(&id, RunKind::Apply, saved.plan.clone(), hash);
    r.saved_plan = Some(canonical(file));
    r.saved_plan_sha256 = std::fs::read(file).ok().map(|b| sha256_hex(&b));
    r.inventory.clone_from(&saved.inventory);
    r.limit.clone_from(&saved.limit);
    r.outcome = Outcome::Refused;
    r.refused = problems.to_vec();
    r.finished = Some(journal::now());
    if let Err(e) = r.save_local() {
        warn("cannot write the run's record", &e);
    }
}

/// One line of `plumb history`.
pub(crate) fn history_line(r: &RunRecord) -> String {
    let hosts: Vec<&str> = r.hosts.iter().map(|h| h.host.as_str()).collect();
    let kind = match (r.kind, &r.rollback_of) {
        (RunKind::Rollback, Some(of)) => format!("rollback of {of}"),
        (RunKind::Rollback, None) => "rollback".into(),
        (RunKind::Apply, _) if r.saved_plan.is_some() => "apply (saved plan)".into(),
        (RunKind::Apply, _) => "apply".into(),
    };
    format!(
        "{}  {}  {}@{}  {:<11}  {} changed  {}  {}{}",
        r.run_id,
        r.started,
        r.user,
        r.workstation,
        r.outcome.as_str(),
        r.changed_count(),
        kind,
        r.plan,
        if hosts.is_empty() {
            String::new()
        } else {
            format!("  on {}", hosts.join(","))
        }
    )
}

/// The header `plumb history RUN` and `plumb show RECORD` print above the
/// report.
pub(crate) fn record_header(r: &RunRecord, markdown: bool) -> String {
    let mut lines = vec![
        format!("run {} ({})", r.run_id, r.outcome.as_str()),
        format!("by {} on {}, plumb {}", r.user, r.workstation, r.plumb_version),
        format!(
            "started {}, finished {}",
            r.started,
            r.finished.as_deref().unwrap_or("never (killed, or running)")
        ),
        format!("plan {} (sha256 {})", r.plan, short(&r.plan_sha256)),
    ];
    if let Some(s) = &r.saved_plan {
        lines.push(format!(
            "saved plan {} (sha256 {})",
            s,
            short(r.saved_plan_sha256.as_deref().unwrap_or("?"))
        ));
    }
    if let Some(of) = &r.rollback_of {
        lines.push(format!("rollback of run {of}"));
    }
    for p in &r.refused {
        lines.push(format!("refused: {p}"));
    }
    for h in &r.hosts {
        match (&h.record, &h.error) {
            (_, Some(e)) => lines.push(format!("host {}: {e}", h.host)),
            (Some(p), None) => lines.push(format!("host {}: record kept at {p}", h.host)),
            (None, None) => {}
        }
    }
    if markdown {
        lines.iter().map(|l| format!("- {l}\n")).collect::<String>() + "\n"
    } else {
        lines.join("\n") + "\n\n"
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

/// What `plumb show FILE` can render.
pub(crate) enum Shown {
    Saved(Box<SavedPlan>),
    Record(Box<RunRecord>),
}

/// Read FILE as a saved plan or a run record. `Err`: a message.
pub(crate) fn read_shown(file: &Path) -> Result<Shown, String> {
    if let Some(s) = SavedPlan::read(file) {
        return s.map(|s| Shown::Saved(Box::new(s)));
    }
    if let Some(r) = RunRecord::read(file) {
        return r.map(|r| Shown::Record(Box::new(r)));
    }
    if std::fs::metadata(file).is_err() {
        return Err("no such file".into());
    }
    Err("it is neither a saved plan (`plumb diff --out`) nor a run record (`plumb history`)".into())
}

/// The hosts of an inventory (`-i`, else the one beside `plan`), limited
/// by `-l` (host or group names). `Ok(None)`: no inventory to ask.
pub(crate) fn inventory_hosts(plan: Option<&Path>, common: &Common) -> Result<Option<(String, Vec<Host>)>, i32> {
    let path = match (&common.inventory, plan) {
        (Some(i), _) => i.clone(),
        (None, Some(p)) => match inventory::default_path(p) {
            Some(found) => found,
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let sources = Sources::new();
    let inv = inventory::load(&sources, &path).map_err(|d| crate::report_diags(d, &sources))?;
    let hosts = inv
        .hosts
        .iter()
        .filter(|h| {
            common.limit.is_empty()
                || common
                    .limit
                    .iter()
                    .any(|l| l == "all" || *l == h.name || h.groups.contains(l))
        })
        .cloned()
        .collect();
    Ok(Some((path.display().to_string(), hosts)))
}

/// Every record of the workstation and of `hosts`, merged, newest first.
/// Hosts that cannot be asked are named on stderr.
pub(crate) async fn gather(hosts: &[Host], connector: Arc<dyn Connector>) -> Vec<RunRecord> {
    let mut all = journal::read_local();
    let mut tasks = tokio::task::JoinSet::new();
    for h in hosts {
        let (h, c) = (h.clone(), connector.clone());
        tasks.spawn(async move {
            let t = c.connect(&h).await.map_err(|e| e.to_string());
            let r = match t {
                Ok(t) => {
                    let r = journal::read_host(t.as_ref()).await;
                    t.close().await;
                    r
                }
                Err(e) => Err(e),
            };
            (h.name, r)
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((name, r)) = done {
            match r {
                Ok(records) => all.extend(records),
                Err(e) => warn(&format!("cannot read the run records of `{name}`"), &e),
            }
        }
    }
    journal::merge_all(all)
}

/// Find run `id`: the workstation's record merged with the hosts' copies.
pub(crate) async fn find(id: &str, common: &Common) -> Result<RunRecord, i32> {
    let hosts = inventory_hosts(None, common)?.map(|(_, h)| h).unwrap_or_default();
    let all = gather(&hosts, crate::connector(common)).await;
    all.into_iter().find(|r| r.run_id == id).ok_or_else(|| {
        errln!(
            "error: no record of run `{id}` on this workstation ({}){}",
            journal::runs_dir().display(),
            if common.inventory.is_some() {
                " nor on the inventory's hosts"
            } else {
                "; give the inventory (`-i FILE`) to ask the hosts"
            }
        );
        1
    })
}

/// `plumb history [PLAN | RUN]`.
pub(crate) async fn history(target: Option<&str>, common: &Common, color: bool) -> i32 {
    if let Some(id) = target.filter(|t| journal::is_run_id(t) && !Path::new(t).exists()) {
        return match find(id, common).await {
            Ok(r) => {
                print_record(&r, common, color);
                0
            }
            Err(code) => code,
        };
    }
    let plan = target.map(Path::new);
    if let Some(p) = plan {
        if !p.is_file() {
            errln!("error: `{}` is neither a plan file nor a run id", p.display());
            return 1;
        }
    }
    let hosts = match inventory_hosts(plan, common) {
        Ok(h) => h.map(|(_, h)| h).unwrap_or_default(),
        Err(code) => return code,
    };
    let mut all = gather(&hosts, crate::connector(common)).await;
    if let Some(p) = plan {
        let me = canonical(p);
        let ids: Vec<String> = all.iter().filter(|r| r.plan == me).map(|r| r.run_id.clone()).collect();
        all.retain(|r| r.plan == me || r.rollback_of.as_ref().is_some_and(|of| ids.contains(of)));
    }
    if !common.limit.is_empty() {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        all.retain(|r| r.hosts.iter().any(|h| names.contains(&h.host.as_str())));
    }
    match common.format {
        crate::Format::Json => {
            let list: Vec<serde_json::Value> = all.iter().map(summary_json).collect();
            outln!("{}", serde_json::to_string_pretty(&list).expect("serializes"));
        }
        crate::Format::Text | crate::Format::Markdown => {
            if all.is_empty() {
                outln!("no runs recorded");
            }
            for r in &all {
                outln!("{}", history_line(r));
            }
        }
    }
    0
}

fn summary_json(r: &RunRecord) -> serde_json::Value {
    serde_json::json!({
        "run_id": r.run_id,
        "kind": r.kind,
        "rollback_of": r.rollback_of,
        "started": r.started,
        "finished": r.finished,
        "user": r.user,
        "workstation": r.workstation,
        "outcome": r.outcome,
        "changed": r.changed_count(),
        "plan": r.plan,
        "saved_plan": r.saved_plan,
        "hosts": r.hosts.iter().map(|h| h.host.clone()).collect::<Vec<_>>(),
    })
}

fn print_record(r: &RunRecord, common: &Common, color: bool) {
    if common.format == crate::Format::Json {
        out!("{}", r.to_json());
        return;
    }
    out!("{}", record_header(r, common.format == crate::Format::Markdown));
    if let Some(rep) = &r.report {
        crate::print_report(rep, common, color, None);
    }
}

/// `plumb show FILE`.
pub(crate) fn show(file: &Path, common: &Common, color: bool) -> i32 {
    match read_shown(file) {
        Ok(Shown::Record(r)) => {
            print_record(&r, common, color);
            0
        }
        Ok(Shown::Saved(s)) => match &s.report {
            Some(rep) => {
                crate::print_report(rep, common, color, None);
                if common.format != crate::Format::Json {
                    errln!(
                        "reviewed in run {}; apply exactly this with `plumb apply {}`",
                        s.reviewed_in,
                        file.display()
                    );
                }
                rep.exit_code()
            }
            None => {
                errln!(
                    "error: `{}` was saved without its report (by an older plumb): run `plumb diff --out` again",
                    file.display()
                );
                1
            }
        },
        Err(e) => {
            errln!("error: cannot show `{}`: {e}", file.display());
            1
        }
    }
}

/// Save the record of a run ended at once by a second signal (on the
/// workstation only: there is no time to reach the hosts).
pub(crate) fn aborted(mut record: RunRecord) {
    record.finished = Some(journal::now());
    record.outcome = Outcome::Aborted;
    if let Err(e) = record.save_local() {
        warn("cannot write the run's record", &e);
    }
}
