//! The executor: per host, the pipeline
//!
//! 1. **probe** ([`probe`]): one batched remote execution observes every
//!    resource;
//! 2. **decide** ([`decide`]): what each resource needs, or why it cannot
//!    be converged;
//! 3. **apply** ([`apply`]): the steps in dependency order, wave by wave;
//! 4. **verify** ([`verify`]): one batched re-probe per wave settles its
//!    changes, before their dependents start.
//!
//! `diff` is the same pipeline stopped after decide: when a requirement of a
//! resource is itself pending, the resource's prediction is marked as
//! following it (`after`), so a preview never hides that it depends on a
//! change not yet made. Every resource ends with an [`Outcome`]. Hosts run
//! in parallel up to `forks`; one host's failure never stops the others.

mod apply;
mod decide;
pub mod outcome;
pub(crate) mod probe;
mod verify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::compile::HostPlan;
use crate::diag::ticked;
use crate::module::{Account, Changes, Observed};
use crate::plan::Become;
use crate::report::{redact, FailureReport, HostReport, HostStatus, Mode, ResourceReport, RunReport, Status};
use crate::shell::Sh;
use crate::transport::{Connector, Output, Progress, Transport, TransportError};
use crate::write::with_become;

pub use outcome::{Failure, Outcome, Reason};

/// Something that happened, for progress displays.
#[derive(Clone, Debug)]
pub enum Event {
    /// Work on a host started.
    HostStarted(String),
    /// A host's probe finished.
    Probed(String),
    /// A step started on a host: (host, resource id, step label).
    Step(String, String, String),
    /// A running step reported how far it has come: (host, resource id,
    /// progress, its rate in bytes per second once a second of it was seen).
    Progress(String, String, Progress, Option<u64>),
    /// A host finished.
    HostDone(String, HostStatus),
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Diff or apply.
    pub mode: Mode,
    /// Hosts in parallel.
    pub forks: usize,
    /// This run's id (backup folder name).
    pub run_id: String,
    /// Set by Ctrl-C: start nothing new.
    pub cancel: Arc<AtomicBool>,
    /// Progress events.
    pub events: Option<Arc<dyn Fn(Event) + Send + Sync>>,
    /// Compiles a host's plan again with its facts (for plans that read
    /// facts); the error is a rendered diagnostic.
    pub recompile: Option<Recompile>,
}

/// See [`RunOptions::recompile`].
pub type Recompile = Arc<dyn Fn(&crate::inventory::Host, &serde_json::Value) -> Result<HostPlan, String> + Send + Sync>;

impl RunOptions {
    /// Options for `mode` with a fresh run id.
    #[must_use]
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            forks: 32,
            run_id: new_run_id(),
            cancel: Arc::new(AtomicBool::new(false)),
            events: None,
            recompile: None,
        }
    }

    fn emit(&self, e: Event) {
        if let Some(f) = &self.events {
            f(e);
        }
    }
}

/// A run id: UTC time and the fraction of its second (`20261126T211500Z-3f9a`).
#[must_use]
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(now.as_secs());
    // The suffix is the fraction of the second, in 1/65536ths: ids sort in
    // the order runs started, also within one second (pruning keeps the
    // newest by id), and two runs share one only if they start within the
    // same 15 µs.
    let frac = u64::from(now.subsec_nanos()) * 65_536 / 1_000_000_000;
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{frac:04x}")
}

fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Run every host plan and report.
pub async fn run(
    plan_name: &str,
    hosts: Vec<Arc<HostPlan>>,
    connector: Arc<dyn Connector>,
    opts: RunOptions,
) -> RunReport {
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.forks.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let names: Vec<String> = hosts.iter().map(|h| h.host.name.clone()).collect();
    for hp in hosts {
        let sem = sem.clone();
        let connector = connector.clone();
        let opts = opts.clone();
        set.spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore open");
            opts.emit(Event::HostStarted(hp.host.name.clone()));
            let r = run_host(&hp, connector.as_ref(), &opts).await;
            opts.emit(Event::HostDone(hp.host.name.clone(), r.status));
            r
        });
    }
    let mut reports: BTreeMap<String, HostReport> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let r = r.expect("host task does not panic");
        reports.insert(r.name.clone(), r);
    }
    let mut report = RunReport {
        plan: plan_name.to_string(),
        mode: opts.mode,
        run_id: opts.run_id.clone(),
        inventory: crate::report::InventoryUsed::default(),
        hosts: names.iter().filter_map(|n| reports.remove(n)).collect(),
        summary: crate::report::Summary::default(),
    };
    report.summarize(opts.cancel.load(Ordering::SeqCst));
    report
}

/// What the run knows of one resource on the host.
#[derive(Default)]
struct Slot {
    /// `None` while undecided, and while waiting for verification.
    outcome: Option<Outcome>,
    observed: Option<Observed>,
    /// The accounts it needs that the host lacked when it was observed.
    missing: Vec<Account>,
    /// The probe round it was observed in (0: the first probe).
    seen: u32,
    /// The probe round after which its steps ran: probes of later rounds see
    /// its changes.
    changed_in: Option<u32>,
    /// Applied, waiting for its wave's verification.
    unverified: bool,
    /// Observed before a change it may depend on: probe it again first.
    stale: bool,
    changes: Changes,
    after: Vec<String>,
    notes: Vec<String>,
    /// What its steps completed.
    done: Vec<String>,
    /// When it changed (apply) or would change (diff): how many resources of
    /// the host changed before it.
    change_seq: Option<usize>,
    /// The systemd units its steps start again (see
    /// [`crate::module::Module::starts_units`]).
    starts: Vec<String>,
    /// The units its steps take down: expected, then measured.
    downtime: Vec<crate::report::Downtime>,
    /// The backups its steps kept.
    backups: Vec<String>,
    /// What the probes saw at its inspected paths before its steps ran.
    paths_before: std::collections::BTreeMap<String, crate::paths::PathObservation>,
}

/// One host's run: its plan, its connection, and its count of remote
/// executions.
struct HostRun<'a> {
    hp: &'a HostPlan,
    t: Arc<dyn Transport>,
    opts: &'a RunOptions,
    count: AtomicU32,
    nonce: String,
}

impl HostRun<'_> {
    async fn exec(
        &self,
        script: &Sh,
        become_: &Become,
        stdin: Option<&crate::module::Payload>,
    ) -> Result<Output, TransportError> {
        self.exec_watched(script, become_, stdin, &|_| {}).await
    }

    /// [`HostRun::exec`], handing the progress the script reports to `watch`.
    async fn exec_watched(
        &self,
        script: &Sh,
        become_: &Become,
        stdin: Option<&crate::module::Payload>,
        watch: crate::transport::Watch<'_>,
    ) -> Result<Output, TransportError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        // LC_ALL inside the script as well: sudo's env_reset may drop the
        // transport's; probes parse the messages of coreutils.
        let script = Sh::raw_start("LC_ALL=C; export LC_ALL; plumb_run=")
            .val(&self.opts.run_id)
            .raw("\n")
            .then(script);
        let s = with_become(&script, become_, stdin.is_some());
        self.t.run_watched(s.as_str(), stdin, watch).await
    }
}

/// The pipeline: probe, decide, and in apply mode apply and verify wave by
/// wave. Returns the transport error that ended the host's run early.
async fn converge(run: &HostRun<'_>, slots: &mut [Slot], opts: &RunOptions) -> Option<TransportError> {
    let hp = run.hp;
    for (i, r) in hp.resources.iter().enumerate() {
        if let Some(why) = &r.skip {
            slots[i].outcome = Some(Outcome::Skipped(Reason::Plan(why.clone())));
        }
    }
    let active: Vec<usize> = hp
        .order
        .iter()
        .copied()
        .filter(|&i| slots[i].outcome.is_none())
        .collect();
    let probed = match probe::probe(run, &active).await {
        Ok(p) => p,
        Err(e) => {
            for &i in &active {
                slots[i].outcome = Some(Outcome::failed(format!("host failed during the probe: {e}")));
            }
            return Some(e);
        }
    };
    opts.emit(Event::Probed(hp.host.name.clone()));
    probe::record(hp, slots, probed, 0);
    match opts.mode {
        // The same pipeline, stopped after decide.
        Mode::Diff => {
            decide::preview(hp, slots);
            None
        }
        // Decide, apply and verify, wave by wave.
        Mode::Apply => apply::in_waves(run, slots, opts).await,
    }
}

async fn run_host(hp: &HostPlan, connector: &dyn Connector, opts: &RunOptions) -> HostReport {
    let mut report = HostReport {
        name: hp.host.name.clone(),
        status: HostStatus::Ok,
        error: None,
        remote_executions: 0,
        resources: Vec::new(),
    };
    let t = match connector.connect(&hp.host).await {
        Ok(t) => t,
        Err(e) => {
            report.status = HostStatus::Unreachable;
            report.error = Some(e.to_string());
            return report;
        }
    };
    let facts_runs = u32::from(hp.needs_facts);
    let with_facts;
    let hp = if hp.needs_facts {
        match gather_facts(t.as_ref(), hp, opts).await {
            Ok(p) => {
                with_facts = p;
                &with_facts
            }
            Err(e) => {
                t.close().await;
                report.status = HostStatus::Failed;
                report.error = Some(e);
                report.remote_executions = 1;
                return report;
            }
        }
    } else {
        hp
    };
    let run = HostRun {
        hp,
        t: t.clone(),
        opts,
        count: AtomicU32::new(0),
        nonce: probe::nonce(),
    };
    let mut slots: Vec<Slot> = hp.resources.iter().map(|_| Slot::default()).collect();
    let lost = converge(&run, &mut slots, opts).await;
    t.close().await;
    report.remote_executions = run.count.load(Ordering::SeqCst) + facts_runs;
    report.error = lost.map(|e| e.to_string());
    report.resources = hp
        .order
        .iter()
        .map(|&i| resource_report(hp, i, &mut slots[i]))
        .collect();
    let any = |st: Status| report.resources.iter().any(|r| r.status == st);
    report.status = if report.error.is_some() || any(Status::Failed) {
        HostStatus::Failed
    } else if any(Status::Changed) {
        HostStatus::Changed
    } else if any(Status::Pending) {
        HostStatus::Pending
    } else {
        HostStatus::Ok
    };
    report
}

/// What the reports say of resource `i`.
fn resource_report(hp: &HostPlan, i: usize, s: &mut Slot) -> ResourceReport {
    let r = &hp.resources[i];
    let status = s.outcome.as_ref().map_or(Status::Skipped, Outcome::status);
    let (changes, diff) = redact(&s.changes, r.sensitive);
    let fingerprint = s.observed.as_ref().map(|o| {
        // Figures measured now (the size of data in use) move between the
        // review and the apply: the saved plan does not compare them.
        let mut compared = s.changes.clone();
        for c in compared.items.iter_mut().filter(|c| c.measured) {
            c.from = None;
            c.to = None;
        }
        let json = serde_json::to_string(&compared).unwrap_or_default();
        crate::module::sha256_hex(format!("{}\n{json}", o.fingerprint()).as_bytes())
    });
    ResourceReport {
        fingerprint,
        paths_before: std::mem::take(&mut s.paths_before),
        backups: std::mem::take(&mut s.backups),
        id: r.id.clone(),
        module: r.module.to_string(),
        status,
        risk: s.changes.risk(),
        changes,
        diff,
        error: s.outcome.as_ref().and_then(Outcome::error),
        failure: s.outcome.as_ref().and_then(Outcome::failure).map(|f| FailureReport {
            host: hp.host.name.clone(),
            resource: r.id.clone(),
            failure: f.clone(),
        }),
        after: std::mem::take(&mut s.after),
        notes: std::mem::take(&mut s.notes),
        completed: if status == Status::Failed {
            std::mem::take(&mut s.done)
        } else {
            Vec::new()
        },
        sensitive: r.sensitive,
        check: r.check,
        criterion: r
            .resource
            .as_ref()
            .and_then(|x| x.criterion())
            .or_else(|| r.criterion.clone())
            .filter(|_| !r.sensitive),
        downtime: std::mem::take(&mut s.downtime),
    }
}

/// One remote execution for the facts, then the host's plan compiled with them.
async fn gather_facts(t: &dyn Transport, hp: &HostPlan, opts: &RunOptions) -> Result<HostPlan, String> {
    let out = t
        .run(crate::facts::probe().as_str(), None)
        .await
        .map_err(|e| format!("cannot gather facts: {e}"))?;
    if out.status != 0 {
        return Err(format!("cannot gather facts: {}", out.stderr_tail(4)));
    }
    let facts = crate::facts::parse(&out.stdout)?;
    let recompile = opts
        .recompile
        .as_ref()
        .ok_or("this plan reads facts, but this run cannot compile with them")?;
    recompile(&hp.host, &facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_timestamps() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_725_296), (2026, 11, 26, 20, 34, 56));
        let id = new_run_id();
        assert_eq!(id.len(), "20261126T211500Z-3f9a".len(), "{id}");
    }
}
