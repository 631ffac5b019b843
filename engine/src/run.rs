//! The executor: per host, one batched probe, a diff of every resource, and
//! (in apply mode) the steps in dependency order, then one batched re-probe
//! that verifies every change. Hosts run in parallel up to `forks`; one
//! host's failure never stops the others.
//!
//! `diff` is the same pipeline stopped after the diff. When a requirement of
//! a resource is itself pending, the resource's prediction is marked as
//! following it (`after`), so a preview never hides that it depends on a
//! change not yet made.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::compile::{EdgeKind, HostPlan};
use crate::module::{Change, Changes, Observed, Predicted, ProbeOutput, Risk, Step};
use crate::paths::{Answers, PathBatch, PathQuery};
use crate::plan::Become;
use crate::report::{redact, HostReport, HostStatus, Mode, ResourceReport, RunReport, Status};
use crate::shell::Sh;
use crate::transport::{tail, Connector, Output, Transport, TransportError};
use crate::write::{file_write, probe_batch, split_batch, with_become, EXIT_CHECKSUM, EXIT_VALIDATE};

/// Something that happened, for progress displays.
#[derive(Clone, Debug)]
pub enum Event {
    /// Work on a host started.
    HostStarted(String),
    /// A host's probe finished.
    Probed(String),
    /// A step started on a host: (host, resource id, step label).
    Step(String, String, String),
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

/// A run id: UTC time and a random suffix (`20261126T211500Z-3f9a`).
#[must_use]
pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{:04x}", rand::random::<u16>())
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

#[derive(Default)]
struct Slot {
    status: Option<Status>,
    observed: Option<Observed>,
    changes: Changes,
    error: Option<String>,
    after: Vec<String>,
    notes: Vec<String>,
}

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
        self.count.fetch_add(1, Ordering::SeqCst);
        // LC_ALL inside the script as well: sudo's env_reset may drop the
        // transport's; probes parse the messages of coreutils.
        let script = Sh::raw_start("LC_ALL=C; export LC_ALL; plumb_run=")
            .val(&self.opts.run_id)
            .raw("\n")
            .then(script);
        let s = with_become(&script, become_, stdin.is_some());
        self.t.run(s.as_str(), stdin).await
    }

    /// One remote execution per distinct `become` among `which`: the paths
    /// all these resources inspect, observed together, then each resource's
    /// own probe (those that have one).
    async fn probe(&self, which: &[usize]) -> Result<BTreeMap<usize, Result<ProbeOutput, String>>, TransportError> {
        struct Group {
            become_: Become,
            paths: PathBatch,
            /// Each resource with its path queries and its own probe.
            members: Vec<(usize, Vec<PathQuery>, Sh)>,
        }
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for &i in which {
            let r = &self.hp.resources[i];
            let res = r.resource.as_ref().expect("probed resources are compiled");
            let g = groups.entry(format!("{:?}", r.become_)).or_insert_with(|| Group {
                become_: r.become_.clone(),
                paths: PathBatch::default(),
                members: Vec::new(),
            });
            let queries = res.inspect();
            g.paths.add(&queries);
            g.members.push((i, queries, res.probe()));
        }
        let mut out = BTreeMap::new();
        for (_, g) in groups {
            let probes: Vec<(usize, Sh)> = g
                .members
                .iter()
                .filter(|(_, _, sh)| !sh.is_empty())
                .map(|(i, _, sh)| (*i, sh.clone()))
                .collect();
            let mut script = Sh::new();
            if !g.paths.is_empty() {
                script.line(&g.paths.script(&self.nonce));
            }
            script.line(&probe_batch(&self.nonce, &probes));
            let o = self.exec(&script, &g.become_, None).await?;
            let answers = if g.paths.is_empty() {
                Some(Answers::default())
            } else {
                g.paths.parse(&self.nonce, &o.stdout)
            };
            let parts: BTreeMap<usize, (Vec<u8>, i32)> = split_batch(&self.nonce, &o.stdout)
                .into_iter()
                .map(|(i, b, s)| (i, (b, s)))
                .collect();
            for (i, queries, sh) in g.members {
                let own = if sh.is_empty() {
                    Some((Vec::new(), 0))
                } else {
                    parts.get(&i).cloned()
                };
                let r = match (&answers, own) {
                    (Some(a), Some((stdout, status))) => {
                        let mut po = ProbeOutput {
                            stdout,
                            status,
                            ..ProbeOutput::default()
                        };
                        for q in queries {
                            let limit = q.content.limit().and_then(|l| usize::try_from(l).ok());
                            if let (Some(c), Some(limit)) = (a.contents.get(&q.path), limit) {
                                if c.len() <= limit {
                                    po.contents.insert(q.path.clone(), c.clone());
                                }
                            }
                            if let Some(seen) = a.paths.get(&q.path) {
                                po.paths.insert(q.path, seen.clone());
                            }
                        }
                        Ok(po)
                    }
                    _ => Err(explain_failure(&o, &g.become_, "the probe did not run")),
                };
                out.insert(i, r);
            }
        }
        Ok(out)
    }

    async fn step(&self, id: &str, step: &Step, become_: &Become) -> Result<Vec<String>, StepError> {
        match step {
            Step::Run(s) => {
                self.opts
                    .emit(Event::Step(self.hp.host.name.clone(), id.to_string(), s.label.clone()));
                let o = self.exec(&s.sh, become_, s.stdin.as_ref()).await?;
                if o.status != 0 {
                    return Err(StepError::Failed(explain_failure_n(
                        &o,
                        become_,
                        &format!("`{}` failed (exit {})", s.label, o.status),
                        STEP_ERROR_LINES,
                    )));
                }
                Ok(backup_notes(&o))
            }
            Step::Write(w) => {
                self.opts.emit(Event::Step(
                    self.hp.host.name.clone(),
                    id.to_string(),
                    format!("write {}", w.path),
                ));
                let script = file_write(w);
                let o = self.exec(&script, become_, Some(&w.payload)).await?;
                match o.status {
                    0 => Ok(backup_notes(&o)),
                    EXIT_CHECKSUM => Err(StepError::Failed(format!(
                        "upload of `{}` failed verification; the old file is untouched: {}",
                        w.path,
                        o.stderr_tail(2)
                    ))),
                    EXIT_VALIDATE => Err(StepError::Failed(format!(
                        "validate command rejected the new `{}`; the old file is untouched:\n{}",
                        w.path,
                        o.stderr_tail(6)
                    ))),
                    n => Err(StepError::Failed(explain_failure(
                        &o,
                        become_,
                        &format!("writing `{}` failed (exit {n})", w.path),
                    ))),
                }
            }
        }
    }
}

/// What a step printed for the report: `plumb-backup=PATH` lines (a file
/// backed up) and `plumb-note=TEXT` lines (anything else the user must read,
/// such as where old data was kept).
fn backup_notes(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            if let Some(p) = l.strip_prefix("plumb-backup=") {
                Some(format!("backup of the old file: {p}"))
            } else {
                l.strip_prefix("plumb-note=").map(str::to_string)
            }
        })
        .collect()
}

enum StepError {
    Failed(String),
    Lost(TransportError),
}

impl From<TransportError> for StepError {
    fn from(e: TransportError) -> Self {
        StepError::Lost(e)
    }
}

/// Lines of stderr kept in the error of a failed step: enough for a
/// command's own tail of a log (a unit's `journalctl -n 20`).
const STEP_ERROR_LINES: usize = 24;

fn explain_failure(o: &Output, become_: &Become, what: &str) -> String {
    explain_failure_n(o, become_, what, 6)
}

fn explain_failure_n(o: &Output, become_: &Become, what: &str, lines: usize) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    if *become_ != Become::No && (err.contains("a password is required") || err.contains("a terminal is required")) {
        return "sudo asks for a password: `become` needs passwordless sudo (NOPASSWD) for this user, or connect as root".into();
    }
    if *become_ != Become::No && err.contains("must have a tty") {
        return "sudo requires a terminal here (`Defaults requiretty`): `become` needs `Defaults:USER !requiretty` for this user, or connect as root".into();
    }
    let t = tail(&err, lines);
    if t.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {t}")
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
        nonce: format!("{:016x}", rand::random::<u64>()),
    };
    let mut slots: Vec<Slot> = hp.resources.iter().map(|_| Slot::default()).collect();
    let lost = converge(&run, &mut slots, opts).await;
    t.close().await;
    report.remote_executions = run.count.load(Ordering::SeqCst) + facts_runs;
    if let Some(e) = lost {
        report.error = Some(e.to_string());
    }
    for &i in &hp.order {
        let r = &hp.resources[i];
        let s = &mut slots[i];
        let status = s.status.unwrap_or(Status::Skipped);
        let (changes, diff) = redact(&s.changes, r.sensitive);
        let fingerprint = s.observed.as_ref().map(|o| {
            let json = serde_json::to_string(&s.changes).unwrap_or_default();
            crate::module::sha256_hex(format!("{}\n{json}", o.fingerprint()).as_bytes())
        });
        report.resources.push(ResourceReport {
            fingerprint,
            id: r.id.clone(),
            module: r.module.to_string(),
            status,
            risk: s.changes.risk(),
            changes,
            diff,
            error: s.error.take(),
            after: std::mem::take(&mut s.after),
            notes: std::mem::take(&mut s.notes),
            sensitive: r.sensitive,
        });
    }
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

/// Probe, diff, and in apply mode apply and verify. Returns the transport
/// error that ended the host's run early, if any.
async fn converge(run: &HostRun<'_>, slots: &mut [Slot], opts: &RunOptions) -> Option<TransportError> {
    let hp = run.hp;
    let active: Vec<usize> = hp
        .order
        .iter()
        .copied()
        .filter(|&i| hp.resources[i].skip.is_none())
        .collect();
    for (i, r) in hp.resources.iter().enumerate() {
        if let Some(why) = &r.skip {
            slots[i].status = Some(Status::Skipped);
            slots[i].error = Some(why.clone());
        }
    }
    let probed = match run.probe(&active).await {
        Ok(p) => p,
        Err(e) => {
            fail_all(slots, &active, &format!("host failed during the probe: {e}"));
            return Some(e);
        }
    };
    opts.emit(Event::Probed(hp.host.name.clone()));
    for (i, out) in probed {
        let res = hp.resources[i].resource.as_ref().expect("compiled");
        match out.and_then(|o| res.observe(&o)) {
            Ok(obs) => slots[i].observed = Some(obs),
            Err(e) => {
                slots[i].status = Some(Status::Failed);
                slots[i].error = Some(format!("probe: {e}"));
            }
        }
    }
    let mut applied = Vec::new();
    let mut restarts = crate::restarts::Restarts::default();
    for (pos, &i) in hp.order.iter().enumerate() {
        if slots[i].status.is_some() {
            continue;
        }
        if let Some(why) = blocked_by(hp, slots, i) {
            slots[i].status = Some(Status::Skipped);
            slots[i].error = Some(why);
            continue;
        }
        let r = &hp.resources[i];
        let res = r.resource.as_ref().expect("compiled");
        let notifiers: Vec<&str> = r
            .notified_by
            .iter()
            .filter(|&&j| {
                matches!(slots[j].status, Some(Status::Changed | Status::Pending)) && !slots[j].changes.is_empty()
            })
            .map(|&j| hp.resources[j].id.as_str())
            .collect();
        match opts.mode {
            Mode::Diff => {
                let obs = slots[i].observed.as_ref().expect("probed");
                slots[i].after = r
                    .requires
                    .iter()
                    .filter(|(j, kind)| *kind != EdgeKind::Notify && slots[*j].status == Some(Status::Pending))
                    .map(|(j, _)| hp.resources[*j].id.clone())
                    .collect();
                let mut changes = if slots[i].after.is_empty() {
                    if let Err(e) = res.check(obs) {
                        slots[i].status = Some(Status::Failed);
                        slots[i].error = Some(e);
                        continue;
                    }
                    res.diff(obs)
                } else {
                    match res.predict(obs) {
                        Predicted::Changes(c) => c,
                        Predicted::Unknown(why) => {
                            let list = slots[i]
                                .after
                                .iter()
                                .map(|a| format!("`{a}`"))
                                .collect::<Vec<_>>()
                                .join(", ");
                            let mut c = Changes::none();
                            c.push(Change::new(
                                "state",
                                None,
                                Some(format!("known after {list} is applied: {why}")),
                            ));
                            c
                        }
                    }
                };
                if !notifiers.is_empty() {
                    let refresh = res.refresh(obs, &changes);
                    if !refresh.is_empty() && restarts.covers(res.as_ref(), &r.notified_by, &notifiers).is_none() {
                        changes.push(refresh_change(&notifiers, &refresh));
                    }
                }
                if !changes.is_empty() {
                    restarts.record(pos, i, &r.id, res.starts_units(obs, &changes));
                }
                slots[i].status = Some(if changes.is_empty() {
                    Status::Ok
                } else {
                    Status::Pending
                });
                slots[i].changes = changes;
            }
            Mode::Apply => {
                if opts.cancel.load(Ordering::SeqCst) {
                    slots[i].status = Some(Status::Skipped);
                    slots[i].error = Some("interrupted before it started".into());
                    continue;
                }
                let reprobe = res.reprobe_after_requirements()
                    && r.requires
                        .iter()
                        .any(|(j, _)| slots[*j].status == Some(Status::Changed));
                if reprobe {
                    match run.probe(&[i]).await {
                        Ok(mut p) => match p.remove(&i).expect("probed").and_then(|o| res.observe(&o)) {
                            Ok(obs) => slots[i].observed = Some(obs),
                            Err(e) => {
                                slots[i].status = Some(Status::Failed);
                                slots[i].error = Some(format!("probe: {e}"));
                                continue;
                            }
                        },
                        Err(e) => return Some(lose(slots, hp, i, e)),
                    }
                }
                let obs = slots[i].observed.as_ref().expect("probed");
                if let Err(e) = res.check(obs) {
                    slots[i].status = Some(Status::Failed);
                    slots[i].error = Some(e);
                    continue;
                }
                let changes = res.diff(obs);
                let mut steps = if changes.is_empty() {
                    Vec::new()
                } else {
                    res.apply(obs, &changes)
                };
                let changed = !changes.is_empty();
                let mut refresh = if notifiers.is_empty() {
                    Vec::new()
                } else {
                    res.refresh(obs, &changes)
                };
                if let Some(note) = restarts
                    .covers(res.as_ref(), &r.notified_by, &notifiers)
                    .filter(|_| !refresh.is_empty())
                {
                    refresh.clear();
                    slots[i].notes.push(note);
                }
                let starts = res.starts_units(obs, &changes);
                slots[i].changes = changes;
                if !refresh.is_empty() {
                    slots[i].changes.push(refresh_change(&notifiers, &refresh));
                    steps.extend(refresh);
                    slots[i].notes.push(format!(
                        "refreshed (notified by {})",
                        notifiers
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                let mut failed = None;
                for step in &steps {
                    match run.step(&r.id, step, &r.become_).await {
                        Ok(notes) => slots[i].notes.extend(notes),
                        Err(StepError::Failed(msg)) => {
                            failed = Some(msg);
                            break;
                        }
                        Err(StepError::Lost(e)) => return Some(lose(slots, hp, i, e)),
                    }
                }
                if let Some(msg) = failed {
                    slots[i].status = Some(Status::Failed);
                    slots[i].error = Some(msg);
                } else if steps.is_empty() {
                    slots[i].status = Some(Status::Ok);
                } else {
                    slots[i].status = Some(Status::Changed);
                    if changed {
                        applied.push(i);
                        restarts.record(pos, i, &r.id, starts);
                    }
                }
            }
        }
    }
    if applied.is_empty() {
        return None;
    }
    // Verify: one batched re-probe of everything that changed.
    match run.probe(&applied).await {
        Ok(after) => {
            for (i, out) in after {
                let res = hp.resources[i].resource.as_ref().expect("compiled");
                let verdict = out.and_then(|o| res.observe(&o)).map(|obs| res.verify(&obs));
                match verdict {
                    Ok(rest) if rest.is_empty() => {}
                    Ok(rest) => {
                        let (items, _) = redact(&rest, hp.resources[i].sensitive);
                        let what = items
                            .iter()
                            .map(|c| {
                                format!(
                                    "{}: {} → {}",
                                    c.field,
                                    c.from.as_deref().unwrap_or("(none)"),
                                    c.to.as_deref().unwrap_or("(none)")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                        slots[i].status = Some(Status::Failed);
                        slots[i].error = Some(format!("did not converge: after apply, still {what}"));
                    }
                    Err(e) => {
                        slots[i].status = Some(Status::Failed);
                        slots[i].error = Some(format!("verification probe: {e}"));
                    }
                }
            }
            None
        }
        Err(e) => {
            for &i in &applied {
                slots[i].status = Some(Status::Failed);
                slots[i].error = Some(format!("changed, but not verified: connection lost: {e}"));
            }
            Some(e)
        }
    }
}

/// The change a notification makes: what its steps do, and who notified.
fn refresh_change(notifiers: &[&str], steps: &[Step]) -> Change {
    let what = steps
        .iter()
        .map(|s| match s {
            Step::Run(s) => s.label.clone(),
            Step::Write(w) => format!("write {}", w.path),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Change::new(
        "refresh",
        None,
        Some(format!(
            "{what} (notified by {})",
            notifiers
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .risk(Risk::Restart)
}

fn blocked_by(hp: &HostPlan, slots: &[Slot], i: usize) -> Option<String> {
    hp.resources[i]
        .requires
        .iter()
        .filter(|(_, k)| *k != EdgeKind::Notify)
        .find_map(|(j, _)| {
            let id = &hp.resources[*j].id;
            match slots[*j].status {
                Some(Status::Failed) => Some(format!("requirement `{id}` failed")),
                Some(Status::Skipped) => Some(format!("requirement `{id}` was skipped")),
                _ => None,
            }
        })
}

fn fail_all(slots: &mut [Slot], which: &[usize], why: &str) {
    for &i in which {
        if slots[i].status.is_none() {
            slots[i].status = Some(Status::Failed);
            slots[i].error = Some(why.to_string());
        }
    }
}

fn lose(slots: &mut [Slot], hp: &HostPlan, at: usize, e: TransportError) -> TransportError {
    slots[at].status = Some(Status::Failed);
    slots[at].error = Some(format!("connection lost during this resource: {e}"));
    for &j in &hp.order {
        if slots[j].status.is_none() {
            slots[j].status = Some(Status::Skipped);
            slots[j].error = Some("not started: connection to the host lost".into());
        }
    }
    e
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
