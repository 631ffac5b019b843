//! The executor: per host, one batched probe, a diff of every resource, and
//! (in apply mode) the steps in dependency order, wave by wave: a wave is
//! every resource whose requirements are settled, and ends with one batched
//! re-probe that verifies its changes. A resource's dependents start only
//! once it is applied *and* verified, so an apply costs one verification
//! per level of changes, and a no-op run one probe. Hosts run in parallel up
//! to `forks`; one host's failure never stops the others.
//!
//! The stages are separate functions: [`HostRun::probe`], `decide` (diff),
//! `apply_one` (apply), `verify`, driven by `apply_in_waves`.
//!
//! `diff` is the same pipeline stopped after the diff. When a requirement of
//! a resource is itself pending, the resource's prediction is marked as
//! following it (`after`), so a preview never hides that it depends on a
//! change not yet made.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::compile::{EdgeKind, HostPlan};
use crate::module::{Account, Change, Changes, Observed, Predicted, ProbeOutput, Risk, Step};
use crate::paths::{Answers, PathBatch, PathQuery};
use crate::plan::Become;
use crate::report::{redact, HostReport, HostStatus, Mode, ResourceReport, RunReport, Status};
use crate::shell::Sh;
use crate::transport::{tail, Connector, Output, Transport, TransportError};
use crate::write::{file_write, probe_batch, split_batch, with_become, EXIT_CHECKSUM, EXIT_NO_SPACE, EXIT_VALIDATE};

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

/// What the run knows of one resource on the host.
#[derive(Default)]
struct Slot {
    /// `None` while undecided, and while waiting for verification.
    status: Option<Status>,
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
    error: Option<String>,
    after: Vec<String>,
    notes: Vec<String>,
    /// What its steps completed.
    done: Vec<String>,
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
            /// Each resource with its path queries, its accounts and its own probe.
            members: Vec<(usize, Vec<PathQuery>, Vec<Account>, Sh)>,
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
            let accounts = res.accounts();
            g.paths.add(&queries);
            g.paths.add_accounts(&accounts);
            g.members.push((i, queries, accounts, res.probe()));
        }
        let mut out = BTreeMap::new();
        for (_, g) in groups {
            let probes: Vec<(usize, Sh)> = g
                .members
                .iter()
                .filter(|(_, _, _, sh)| !sh.is_empty())
                .map(|(i, _, _, sh)| (*i, sh.clone()))
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
            for (i, queries, accounts, sh) in g.members {
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
                            missing: accounts.into_iter().filter(|x| a.missing.contains(x)).collect(),
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

    /// Run one step. For a `sensitive` resource nothing the step printed
    /// reaches the report (a failing command or `validate` may echo the
    /// secret), and a command is named `(sensitive command)`.
    async fn step(&self, id: &str, step: &Step, become_: &Become, sensitive: bool) -> Result<StepDone, StepError> {
        match step {
            Step::Run(s) => {
                let label = if sensitive { HIDDEN_COMMAND } else { s.label.as_str() };
                self.opts.emit(Event::Step(
                    self.hp.host.name.clone(),
                    id.to_string(),
                    label.to_string(),
                ));
                let o = self
                    .exec(&s.sh, become_, s.stdin.as_ref())
                    .await
                    .map_err(|e| in_step(e, label))?;
                if sensitive {
                    if o.status != 0 {
                        return Err(StepError::Failed(
                            format!(
                                "`{label}` failed (exit {}); its output is hidden because the resource is sensitive",
                                o.status
                            ),
                            Vec::new(),
                        ));
                    }
                    return Ok(StepDone {
                        notes: Vec::new(),
                        done: vec![label.to_string()],
                    });
                }
                if o.status != 0 {
                    return Err(StepError::Failed(
                        explain_failure_n(
                            &o,
                            become_,
                            &format!("`{}` failed (exit {})", s.label, o.status),
                            STEP_ERROR_LINES,
                        ),
                        done_lines(&o),
                    ));
                }
                Ok(StepDone::of(&o, &s.label))
            }
            Step::Write(w) => {
                let label = format!("write {}", w.path);
                self.opts
                    .emit(Event::Step(self.hp.host.name.clone(), id.to_string(), label.clone()));
                let script = file_write(w);
                let o = self
                    .exec(&script, become_, Some(&w.payload))
                    .await
                    .map_err(|e| in_step(e, &label))?;
                // A sensitive file's step may only say what plumb's own
                // checks said (paths and sizes), never what a `validate`
                // printed, nor a checksum.
                let said = |n: usize| {
                    if sensitive {
                        plumb_lines_only(&o, n)
                    } else {
                        o.stderr_tail(n)
                    }
                };
                // A write is all or nothing: it completed nothing unless it
                // succeeded.
                match o.status {
                    0 => Ok(StepDone::of(&o, &label)),
                    EXIT_CHECKSUM => Err(StepError::Failed(
                        format!(
                            "upload of `{}` failed verification; the old file is untouched: {}",
                            w.path,
                            said(2)
                        ),
                        Vec::new(),
                    )),
                    EXIT_VALIDATE => Err(StepError::Failed(
                        format!(
                            "validate command rejected the new `{}`; the old file is untouched:\n{}",
                            w.path,
                            said(6)
                        ),
                        Vec::new(),
                    )),
                    EXIT_NO_SPACE => Err(StepError::Failed(
                        said(1).trim_start_matches("plumb: ").to_string(),
                        Vec::new(),
                    )),
                    n if sensitive => Err(StepError::Failed(
                        format!("writing `{}` failed (exit {n}): {}", w.path, said(3)),
                        Vec::new(),
                    )),
                    n => Err(StepError::Failed(
                        explain_failure(&o, become_, &format!("writing `{}` failed (exit {n})", w.path)),
                        Vec::new(),
                    )),
                }
            }
        }
    }
}

/// How a step of a sensitive resource that runs a command is named.
const HIDDEN_COMMAND: &str = "(sensitive command)";

/// A connection lost during a step says which step it was.
fn in_step(e: TransportError, label: &str) -> StepError {
    StepError::Lost(match e {
        TransportError::Lost(m) => TransportError::Lost(format!("in step `{label}`: {m}")),
        other => other,
    })
}

/// The last `n` lines of stderr that plumb's own scripts printed (`plumb:
/// ...`), with every sha256 in them hidden: what a sensitive step may show.
fn plumb_lines_only(o: &Output, n: usize) -> String {
    let text = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("plumb: "))
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    if w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                        crate::report::HIDDEN
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let kept = lines[lines.len().saturating_sub(n)..].join("\n");
    if kept.is_empty() {
        "its output is hidden because the resource is sensitive".to_string()
    } else {
        kept
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

/// What a step that succeeded printed for the report.
struct StepDone {
    notes: Vec<String>,
    /// What it completed: its `plumb-done=` lines, or else its label.
    done: Vec<String>,
}

impl StepDone {
    fn of(o: &Output, label: &str) -> Self {
        let mut done = done_lines(o);
        if done.is_empty() {
            done.push(label.to_string());
        }
        Self {
            notes: backup_notes(o),
            done,
        }
    }
}

/// The `plumb-done=TEXT` lines of a step: the parts of it that completed
/// (so that a step that fails half-way says what it changed).
fn done_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("plumb-done=").map(str::to_string))
        .collect()
}

enum StepError {
    /// The step failed (the message), after completing these parts.
    Failed(String, Vec<String>),
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
            completed: if status == Status::Failed {
                std::mem::take(&mut s.done)
            } else {
                Vec::new()
            },
            sensitive: r.sensitive,
            check: r.check,
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
    record(hp, slots, probed, 0);
    match opts.mode {
        Mode::Diff => {
            for &i in &hp.order {
                if slots[i].status.is_none() {
                    decide(hp, slots, i);
                }
            }
            None
        }
        Mode::Apply => apply_in_waves(run, slots, opts).await,
    }
}

/// Keep what a probe (of round `round`) observed of each resource.
fn record(hp: &HostPlan, slots: &mut [Slot], probed: BTreeMap<usize, Result<ProbeOutput, String>>, round: u32) {
    for (i, out) in probed {
        let res = hp.resources[i].resource.as_ref().expect("compiled");
        let observed = out.and_then(|o| res.observe(&o).map(|obs| (obs, o.missing)));
        match observed {
            Ok((obs, missing)) => {
                slots[i].observed = Some(obs);
                slots[i].missing = missing;
                slots[i].seen = round;
            }
            Err(e) => {
                slots[i].status = Some(Status::Failed);
                slots[i].error = Some(format!("probe: {e}"));
            }
        }
    }
}

/// The resources before `i` in dependency order that may create an account.
fn account_makers_before(hp: &HostPlan, i: usize) -> impl Iterator<Item = usize> + '_ {
    hp.order
        .iter()
        .copied()
        .take_while(move |&j| j != i)
        .filter(|&j| hp.resources[j].resource.as_ref().is_some_and(|r| r.creates_accounts()))
}

/// `user `a` and group `b``: the accounts a resource needs that the host lacks.
fn describe_missing(missing: &[Account]) -> String {
    let list = missing
        .iter()
        .map(|a| format!("{} `{}`", a.kind(), a.name()))
        .collect::<Vec<_>>()
        .join(" and ");
    let verb = if missing.len() == 1 { "does" } else { "do" };
    format!("{list} {verb} not exist on the host")
}

/// `diff`: what would change for resource `i`, against its probed state, or
/// against the state predicted once its pending requirements are applied.
fn decide(hp: &HostPlan, slots: &mut [Slot], i: usize) {
    if let Some(why) = blocked_by(hp, slots, i) {
        slots[i].status = Some(Status::Skipped);
        slots[i].error = Some(why);
        return;
    }
    let r = &hp.resources[i];
    let res = r.resource.as_ref().expect("compiled");
    let notifiers = notifiers(hp, slots, i);
    slots[i].after = r
        .requires
        .iter()
        .filter(|(j, kind)| *kind != EdgeKind::Notify && slots[*j].status == Some(Status::Pending))
        .map(|(j, _)| hp.resources[*j].id.clone())
        .collect();
    if !slots[i].missing.is_empty() {
        let what = describe_missing(&slots[i].missing);
        let before: Vec<String> = account_makers_before(hp, i)
            .filter(|&j| slots[j].status == Some(Status::Pending))
            .map(|j| hp.resources[j].id.clone())
            .collect();
        if before.is_empty() {
            slots[i].status = Some(Status::Failed);
            slots[i].error = Some(format!(
                "{what}: apply would fail (create it first, or with a resource this one requires)"
            ));
            return;
        }
        // A package or a command before it may create the account.
        let shown = before.iter().take(3).map(|n| format!("`{n}`")).collect::<Vec<_>>();
        let more = before.len().saturating_sub(3);
        let list = if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        };
        slots[i].notes.push(format!(
            "unknown until apply: {what} yet; the pending change of {list} may create it"
        ));
    }
    let obs = slots[i].observed.as_ref().expect("probed");
    let mut changes = if slots[i].after.is_empty() {
        if let Err(e) = res.check(obs) {
            slots[i].status = Some(Status::Failed);
            slots[i].error = Some(e);
            return;
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
        if !refresh.is_empty() {
            changes.push(refresh_change(&notifiers, &refresh));
        }
    }
    slots[i].status = Some(if changes.is_empty() {
        Status::Ok
    } else {
        Status::Pending
    });
    slots[i].changes = changes;
}

/// The notifiers of `i` that changed (apply) or would change (diff).
fn notifiers<'a>(hp: &'a HostPlan, slots: &[Slot], i: usize) -> Vec<&'a str> {
    hp.resources[i]
        .notified_by
        .iter()
        .filter(|&&j| {
            matches!(slots[j].status, Some(Status::Changed | Status::Pending)) && !slots[j].changes.is_empty()
        })
        .map(|&j| hp.resources[j].id.as_str())
        .collect()
}

/// `apply`, wave by wave: a wave is every resource whose requirements are
/// settled (converged, or changed *and verified*; a failed or skipped one
/// skips its dependents). Its steps run in dependency order, then one batched
/// re-probe verifies every change of the wave, and also looks again at the
/// resources of the next wave whose observation those changes made stale.
/// A no-op apply costs the first probe only; an apply costs one
/// verification per level of changes, not one per resource.
async fn apply_in_waves(run: &HostRun<'_>, slots: &mut [Slot], opts: &RunOptions) -> Option<TransportError> {
    let hp = run.hp;
    let mut round = 0;
    loop {
        let mut to_verify = Vec::new();
        for &i in &hp.order {
            if slots[i].status.is_some() || slots[i].unverified || slots[i].stale || !requirements_settled(hp, slots, i)
            {
                continue;
            }
            if let Some(why) = blocked_by(hp, slots, i) {
                slots[i].status = Some(Status::Skipped);
                slots[i].error = Some(why);
                continue;
            }
            if opts.cancel.load(Ordering::SeqCst) {
                slots[i].status = Some(Status::Skipped);
                slots[i].error = Some("interrupted before it started".into());
                continue;
            }
            if needs_fresh_look(hp, slots, i) {
                slots[i].stale = true;
                continue;
            }
            match apply_one(run, slots, i, round).await {
                Ok(true) => to_verify.push(i),
                Ok(false) => {}
                Err(e) => return Some(lose(slots, hp, i, e)),
            }
        }
        for &i in &hp.order {
            if !slots[i].stale && next_wave_may_take(hp, slots, i) && needs_fresh_look(hp, slots, i) {
                slots[i].stale = true;
            }
        }
        let fresh: Vec<usize> = hp.order.iter().copied().filter(|&i| slots[i].stale).collect();
        if to_verify.is_empty() && fresh.is_empty() {
            return None;
        }
        round += 1;
        let mut which = to_verify.clone();
        which.extend(&fresh);
        match run.probe(&which).await {
            Ok(mut after) => {
                for &i in &to_verify {
                    verify(hp, slots, i, after.remove(&i));
                }
                for &i in &fresh {
                    slots[i].stale = false;
                }
                record(hp, slots, after, round);
            }
            Err(e) => {
                for &i in &to_verify {
                    slots[i].unverified = false;
                    slots[i].status = Some(Status::Failed);
                    slots[i].error = Some(format!("changed, but not verified: connection lost: {e}"));
                }
                for &j in &hp.order {
                    if slots[j].status.is_none() {
                        slots[j].status = Some(Status::Skipped);
                        slots[j].error = Some("not started: connection to the host lost".into());
                    }
                }
                return Some(e);
            }
        }
    }
}

/// Whether every requirement of `i` (notifiers included) is settled: not
/// pending, not waiting for its verification.
fn requirements_settled(hp: &HostPlan, slots: &[Slot], i: usize) -> bool {
    hp.resources[i].requires.iter().all(|(j, _)| slots[*j].status.is_some())
}

/// Whether `i` joins the next wave if the changes now waiting for
/// verification verify.
fn next_wave_may_take(hp: &HostPlan, slots: &[Slot], i: usize) -> bool {
    slots[i].status.is_none()
        && !slots[i].unverified
        && hp.resources[i].requires.iter().all(|(j, kind)| {
            slots[*j].unverified
                || matches!(slots[*j].status, Some(Status::Ok | Status::Changed))
                || (*kind == EdgeKind::Notify && slots[*j].status.is_some())
        })
}

/// Whether what was observed of `i` may be stale because of this run's
/// changes: a module that says its probe depends on its requirements, after
/// one of them or another resource of the same module changed (two mounts
/// rewrite one fstab, two volumes share a group's free space); or an owner
/// missing at the probe, after something before it changed (a package or a
/// command may have created it).
fn needs_fresh_look(hp: &HostPlan, slots: &[Slot], i: usize) -> bool {
    let seen = slots[i].seen;
    let changed_since = |j: usize| slots[j].changed_in.is_some_and(|r| r >= seen);
    let r = &hp.resources[i];
    let res = r.resource.as_ref().expect("compiled");
    let same_module_before = || {
        hp.order
            .iter()
            .take_while(|&&j| j != i)
            .any(|&j| hp.resources[j].module == r.module && changed_since(j))
    };
    (res.reprobe_after_requirements() && (r.requires.iter().any(|(j, _)| changed_since(*j)) || same_module_before()))
        || (!slots[i].missing.is_empty() && account_makers_before(hp, i).any(changed_since))
}

/// Decide and apply resource `i` (its observation is fresh). `Ok(true)`: it
/// changed and waits for verification.
async fn apply_one(run: &HostRun<'_>, slots: &mut [Slot], i: usize, round: u32) -> Result<bool, TransportError> {
    let hp = run.hp;
    let r = &hp.resources[i];
    let res = r.resource.as_ref().expect("compiled");
    if !slots[i].missing.is_empty() {
        slots[i].status = Some(Status::Failed);
        slots[i].error = Some(format!("{}: nothing was changed", describe_missing(&slots[i].missing)));
        return Ok(false);
    }
    let notifiers = notifiers(hp, slots, i);
    let obs = slots[i].observed.as_ref().expect("probed");
    if let Err(e) = res.check(obs) {
        slots[i].status = Some(Status::Failed);
        slots[i].error = Some(e);
        return Ok(false);
    }
    let changes = res.diff(obs);
    let mut steps = if changes.is_empty() {
        Vec::new()
    } else {
        res.apply(obs, &changes)
    };
    let changed = !changes.is_empty();
    let refresh = if notifiers.is_empty() {
        Vec::new()
    } else {
        res.refresh(obs, &changes)
    };
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
    if steps.is_empty() {
        slots[i].status = Some(Status::Ok);
        return Ok(false);
    }
    for step in &steps {
        match run.step(&r.id, step, &r.become_, r.sensitive).await {
            Ok(done) => {
                slots[i].notes.extend(done.notes);
                slots[i].done.extend(done.done);
            }
            Err(StepError::Failed(msg, done)) => {
                if !done.is_empty() {
                    slots[i].changed_in = Some(round);
                }
                slots[i].done.extend(done);
                slots[i].status = Some(Status::Failed);
                slots[i].error = Some(msg);
                return Ok(false);
            }
            Err(StepError::Lost(e)) => return Err(e),
        }
    }
    slots[i].changed_in = Some(round);
    if changed {
        slots[i].unverified = true;
        Ok(true)
    } else {
        // Only a refresh (a restart): nothing to verify.
        slots[i].status = Some(Status::Changed);
        Ok(false)
    }
}

/// Settle resource `i` from its verification probe: changed, or failed with
/// what is still not as wanted.
fn verify(hp: &HostPlan, slots: &mut [Slot], i: usize, out: Option<Result<ProbeOutput, String>>) {
    let r = &hp.resources[i];
    let res = r.resource.as_ref().expect("compiled");
    slots[i].unverified = false;
    let out = out.unwrap_or_else(|| Err("no answer".into()));
    match out.and_then(|o| res.observe(&o)) {
        Ok(obs) => {
            let rest = res.verify(&obs);
            if rest.is_empty() {
                slots[i].status = Some(Status::Changed);
                return;
            }
            let plain = if r.sensitive {
                None
            } else {
                res.unconverged(&obs, &rest)
            };
            slots[i].status = Some(Status::Failed);
            slots[i].error = Some(match plain {
                Some(sentence) => format!("did not converge: {sentence}"),
                None => still_differs(&rest, r.sensitive),
            });
        }
        Err(e) => {
            slots[i].status = Some(Status::Failed);
            slots[i].error = Some(format!("verification probe: {e}"));
        }
    }
}

/// What still differs after apply, in a sentence per change.
fn still_differs(rest: &Changes, sensitive: bool) -> String {
    let (items, _) = redact(rest, sensitive);
    let what = items
        .iter()
        .map(|c| match (&c.from, &c.to) {
            (Some(f), Some(t)) => format!("`{}` is {f}, not {t}", c.field),
            (None, Some(t)) => format!("`{}` is still missing (wanted: {t})", c.field),
            (Some(f), None) => format!("`{}` is still {f} (it should be gone)", c.field),
            (None, None) => format!("`{}` still differs", c.field),
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("did not converge: after apply, {what}")
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
        if slots[j].unverified {
            slots[j].unverified = false;
            slots[j].status = Some(Status::Failed);
            slots[j].error = Some(format!("changed, but not verified: connection lost: {e}"));
        } else if slots[j].status.is_none() {
            slots[j].status = Some(Status::Skipped);
            slots[j].error = Some("not started: connection to the host lost".into());
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a change that did not verify says, field by field, in words
    /// (and without the values of a sensitive resource).
    #[test]
    fn what_still_differs_reads_as_a_sentence() {
        let mut c = Changes::none();
        c.push(Change::new("state", Some("failed".into()), Some("running".into())));
        c.push(Change::new("fstab", None, Some("/dev/x /srv ext4".into())));
        c.push(Change::new("fstab line 3", Some("old".into()), None));
        assert_eq!(
            still_differs(&c, false),
            "did not converge: after apply, `state` is failed, not running; \
             `fstab` is still missing (wanted: /dev/x /srv ext4); `fstab line 3` is still old (it should be gone)"
        );
        // A sensitive resource keeps its metadata visible and its secret
        // hidden.
        c.push(Change::new(
            "content",
            Some("old-secret".into()),
            Some("new-secret".into()),
        ));
        let hidden = still_differs(&c, true);
        assert!(hidden.contains("`state` is failed, not running"), "{hidden}");
        assert!(!hidden.contains("secret"), "{hidden}");
    }

    #[test]
    fn run_ids_are_utc_timestamps() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_725_296), (2026, 11, 26, 20, 34, 56));
        let id = new_run_id();
        assert_eq!(id.len(), "20261126T211500Z-3f9a".len(), "{id}");
    }
}
