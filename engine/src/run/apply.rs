//! Phase 3, apply: wave by wave. A wave is every resource whose
//! requirements are settled (converged, or changed *and verified*; a
//! failed or skipped one skips its dependents). Each is decided on its
//! fresh observation and its steps run in dependency order ([`apply_one`]);
//! then one batched re-probe verifies every change of the wave
//! ([`super::verify`]) and looks again at the resources of the next wave
//! whose observation those changes made stale. A no-op apply costs the
//! first probe only; an apply, one verification per level of changes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::decide::{account_makers_before, blocked_by, decide, describe_missing, notify, record_change};
use super::outcome::{Failure, Outcome, Reason};
use super::{ticked, verify, HostRun, RunOptions, Slot};
use crate::compile::{EdgeKind, HostPlan};
use crate::module::Step;
use crate::plan::Become;
use crate::report::Downtime;
use crate::transport::{Output, Progress, TransportError};
use crate::units;
use crate::write::{file_write, EXIT_CHECKSUM, EXIT_NO_SPACE, EXIT_VALIDATE};

/// Apply every resource, wave by wave, until none is left that can start.
/// Returns the transport error that ended the host's run early, if any.
pub(super) async fn in_waves(run: &HostRun<'_>, slots: &mut [Slot], opts: &RunOptions) -> Option<TransportError> {
    let hp = run.hp;
    let mut round = 0;
    loop {
        let to_verify = match wave(run, slots, opts, round).await {
            Ok(v) => v,
            Err(e) => return Some(e),
        };
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
        if let Err(e) = verify::wave(run, slots, &to_verify, &fresh, round).await {
            return Some(e);
        }
    }
}

/// Start every resource whose turn it is; the ones that changed wait for
/// verification.
async fn wave(
    run: &HostRun<'_>,
    slots: &mut [Slot],
    opts: &RunOptions,
    round: u32,
) -> Result<Vec<usize>, TransportError> {
    let hp = run.hp;
    let mut to_verify = Vec::new();
    for &i in &hp.order {
        let s = &slots[i];
        if s.outcome.is_some() || s.unverified || s.stale || !requirements_settled(hp, slots, i) {
            continue;
        }
        if let Some(why) = blocked_by(hp, slots, i) {
            slots[i].outcome = Some(Outcome::Skipped(why));
            continue;
        }
        if opts.cancel.load(Ordering::SeqCst) {
            slots[i].outcome = Some(Outcome::Skipped(Reason::Interrupted));
            continue;
        }
        if needs_fresh_look(hp, slots, i) {
            slots[i].stale = true;
            continue;
        }
        match apply_one(run, slots, i, round).await {
            Ok(true) => to_verify.push(i),
            Ok(false) => {}
            Err(e) => {
                slots[i].outcome = Some(Outcome::Failed(Failure::lost_during(&e)));
                verify::lost(slots, hp, &e);
                return Err(e);
            }
        }
    }
    Ok(to_verify)
}

/// Whether every requirement of `i` (notifiers included) is settled: not
/// pending, not waiting for its verification.
fn requirements_settled(hp: &HostPlan, slots: &[Slot], i: usize) -> bool {
    hp.resources[i]
        .requires
        .iter()
        .all(|(j, _)| slots[*j].outcome.is_some())
}

/// Whether `i` joins the next wave if the changes now waiting for
/// verification verify.
fn next_wave_may_take(hp: &HostPlan, slots: &[Slot], i: usize) -> bool {
    slots[i].outcome.is_none()
        && !slots[i].unverified
        && hp.resources[i].requires.iter().all(|(j, kind)| {
            slots[*j].unverified
                || matches!(slots[*j].outcome, Some(Outcome::Ok | Outcome::Changed))
                || (*kind == EdgeKind::Notify && slots[*j].outcome.is_some())
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
    let reprobes = r.resource.as_ref().is_some_and(|res| res.reprobe_after_requirements());
    let same_module_before = || {
        hp.order
            .iter()
            .take_while(|&&j| j != i)
            .any(|&j| hp.resources[j].module == r.module && changed_since(j))
    };
    (reprobes && (r.requires.iter().any(|(j, _)| changed_since(*j)) || same_module_before()))
        || (!slots[i].missing.is_empty() && account_makers_before(hp, i).any(changed_since))
}

/// Decide and apply resource `i` (its observation is fresh). `Ok(true)`: it
/// changed and waits for verification.
async fn apply_one(run: &HostRun<'_>, slots: &mut [Slot], i: usize, round: u32) -> Result<bool, TransportError> {
    let hp = run.hp;
    let r = &hp.resources[i];
    if !slots[i].missing.is_empty() {
        let what = describe_missing(&slots[i].missing);
        slots[i].outcome = Some(Outcome::failed(format!("{what}: nothing was changed")));
        return Ok(false);
    }
    let notify = notify(hp, slots, i);
    let (Some(res), Some(obs)) = (r.resource.as_deref(), slots[i].observed.as_ref()) else {
        slots[i].outcome = Some(Outcome::failed("probe: not observed"));
        return Ok(false);
    };
    let decision = match decide(res, obs, &notify) {
        Ok(d) => d,
        Err(f) => {
            slots[i].outcome = Some(Outcome::Failed(f));
            return Ok(false);
        }
    };
    let changed = !decision.own.changes.is_empty();
    let mut steps = if changed {
        res.apply(obs, &decision.own)
    } else {
        Vec::new()
    };
    slots[i].changes = decision.changes();
    slots[i].downtime = decision.downtime(res, obs);
    if let Some((_, refresh)) = decision.refresh {
        steps.extend(refresh);
        slots[i]
            .notes
            .push(format!("refreshed (notified by {})", ticked(&notify.by)));
    }
    slots[i].notes.extend(decision.note.clone());
    if steps.is_empty() {
        slots[i].outcome = Some(Outcome::Ok);
        return Ok(false);
    }
    for step in &steps {
        let result = run_step(run, &r.id, step, &r.become_, r.sensitive, &mut slots[i].downtime).await;
        match result {
            Ok(done) => {
                slots[i].notes.extend(done.notes);
                slots[i].backups.extend(done.backups);
                slots[i].done.extend(done.done);
            }
            Err(StepError::Failed(f, done)) => {
                if !done.is_empty() {
                    slots[i].changed_in = Some(round);
                }
                slots[i].done.extend(done);
                slots[i].outcome = Some(Outcome::Failed(f));
                return Ok(false);
            }
            Err(StepError::Lost(e)) => return Err(e),
        }
    }
    slots[i].changed_in = Some(round);
    record_change(slots, i, res.starts_units(obs, &decision.own));
    if changed {
        slots[i].unverified = true;
    } else {
        // Only a refresh (a restart): nothing to verify.
        slots[i].outcome = Some(Outcome::Changed);
    }
    Ok(changed)
}

/// Lines of stderr kept in the error of a failed step: enough for a
/// command's own tail of a log (a unit's `journalctl -n 20`).
const STEP_ERROR_LINES: usize = 24;

/// Run one step on the host. For a `sensitive` resource nothing the step
/// printed reaches the report (a failing command or `validate` may echo the
/// secret), and a command is named `(sensitive command)`.
async fn run_step(
    run: &HostRun<'_>,
    id: &str,
    step: &Step,
    become_: &Become,
    sensitive: bool,
    downtime: &mut Vec<Downtime>,
) -> Result<StepDone, StepError> {
    let label = match step {
        Step::Run(_) if sensitive => HIDDEN_COMMAND.to_string(),
        _ => step.label(),
    };
    run.opts.emit(super::Event::Step(
        run.hp.host.name.clone(),
        id.to_string(),
        label.clone(),
    ));
    let (host, resource) = (run.hp.host.name.as_str(), id);
    // The rate counts from the first report (the step may have stopped
    // services for a while before its copy began).
    let first: std::sync::Mutex<Option<(Instant, u64)>> = std::sync::Mutex::new(None);
    let watch = |p: Progress| {
        let now = Instant::now();
        let rate = {
            let mut f = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (t0, done0) = *f.get_or_insert((now, p.done));
            let ms = u64::try_from(now.duration_since(t0).as_millis()).unwrap_or(u64::MAX);
            (ms >= 1000).then(|| p.done.saturating_sub(done0).saturating_mul(1000) / ms)
        };
        run.opts
            .emit(super::Event::Progress(host.to_string(), resource.to_string(), p, rate));
    };
    let o = match step {
        Step::Run(s) => run.exec_watched(&s.sh, become_, s.stdin.as_ref(), &watch).await,
        Step::Write(w) => run.exec(&file_write(w), become_, Some(&w.payload)).await,
    }
    .map_err(|e| in_step(e, &label))?;
    measured_downtime(&o, downtime);
    if o.status == 0 {
        return Ok(if sensitive && matches!(step, Step::Run(_)) {
            // Only where plumb kept a backup (a path, no secret): a rollback
            // of this run needs it.
            let backups = backups(&o);
            StepDone {
                notes: backups.iter().map(|p| backup_note(p)).collect(),
                backups,
                done: vec![label],
            }
        } else {
            StepDone::of(&o, &label)
        });
    }
    let failure = match step {
        Step::Run(_) if sensitive => Failure {
            what: format!(
                "`{label}` failed (exit {}); its output is hidden because the resource is sensitive",
                o.status
            ),
            exit_status: Some(o.status),
            ..Failure::default()
        },
        Step::Run(_) => {
            let what = format!("`{label}` failed (exit {})", o.status);
            let f = Failure::of_output(&o, become_, &what, STEP_ERROR_LINES).in_step(&label);
            return Err(StepError::Failed(f, done_lines(&o)));
        }
        // A write is all or nothing: it completed nothing unless it
        // succeeded.
        Step::Write(w) => write_failure(&o, become_, &w.path, sensitive),
    };
    Err(StepError::Failed(failure.in_step(&label), Vec::new()))
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

/// Why a file write failed. A sensitive file's failure may only say what
/// plumb's own checks said (paths and sizes), never what a `validate`
/// printed, nor a checksum.
fn write_failure(o: &Output, become_: &Become, path: &str, sensitive: bool) -> Failure {
    let said = |n: usize| {
        if sensitive {
            plumb_lines_only(o, n)
        } else {
            o.stderr_tail(n)
        }
    };
    let untouched = |what: String, lines: usize, below: bool| Failure {
        what,
        exit_status: Some(o.status),
        stderr: Some(said(lines)),
        stderr_below: below,
        ..Failure::default()
    };
    match o.status {
        EXIT_CHECKSUM => untouched(
            format!("upload of `{path}` failed verification; the old file is untouched"),
            2,
            false,
        ),
        EXIT_VALIDATE => untouched(
            format!("validate command rejected the new `{path}`; the old file is untouched"),
            6,
            true,
        ),
        EXIT_NO_SPACE => Failure {
            what: said(1).trim_start_matches("plumb: ").to_string(),
            exit_status: Some(o.status),
            ..Failure::default()
        },
        n if sensitive => Failure {
            what: format!("writing `{path}` failed (exit {n})"),
            exit_status: Some(n),
            stderr: Some(said(3)),
            ..Failure::default()
        },
        n => Failure::of_output(o, become_, &format!("writing `{path}` failed (exit {n})"), 6),
    }
}

/// What a step printed for the report: `plumb-backup=PATH` lines (a file
/// backed up), `plumb-copied=BYTES SECONDS` (a data copy) and
/// `plumb-note=TEXT` lines (anything else the user must read, such as where
/// old data was kept).
fn backup_notes(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            if let Some(p) = l.strip_prefix("plumb-backup=") {
                Some(backup_note(p))
            } else if let Some(c) = l.strip_prefix("plumb-copied=") {
                copied_note(c)
            } else {
                l.strip_prefix("plumb-note=").map(str::to_string)
            }
        })
        .collect()
}

/// The report's words for a backup at `path`.
fn backup_note(path: &str) -> String {
    format!("backup of the old file: {path}")
}

/// The `plumb-backup=PATH` lines of a step: the backups it kept.
fn backups(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("plumb-backup=").map(str::to_string))
        .collect()
}

/// The `plumb-downtime=UNIT SECONDS` lines of a step (a unit it stopped,
/// and how long until it was active again), into the resource's downtime:
/// each beside its expectation, or on its own.
fn measured_downtime(o: &Output, downtime: &mut Vec<Downtime>) {
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some((unit, secs)) = line
            .strip_prefix("plumb-downtime=")
            .and_then(|l| l.trim().split_once(' '))
        else {
            continue;
        };
        let Ok(secs) = secs.trim().parse::<f64>() else {
            continue;
        };
        match downtime.iter_mut().find(|d| d.unit == unit) {
            Some(d) => d.actual_secs = Some(secs),
            None => downtime.push(Downtime {
                unit: unit.to_string(),
                kind: crate::report::DowntimeKind::Unforeseen,
                expected_secs: None,
                expected: "not foreseen by the review".into(),
                actual_secs: Some(secs),
            }),
        }
    }
}

/// `plumb-copied=BYTES SECONDS` (a data copy's size and duration, as a
/// migration prints it) for the report: `copied 1.2 GiB in 43 s (28.5 MiB/s)`.
fn copied_note(line: &str) -> Option<String> {
    let (bytes, secs) = line.trim().split_once(' ')?;
    let (bytes, secs): (u64, u64) = (bytes.parse().ok()?, secs.parse().ok()?);
    let took = Duration::from_secs(secs);
    let rate = units::rate(bytes, took).map(|r| format!(" ({r})")).unwrap_or_default();
    Some(format!(
        "copied {} in {}{rate}",
        units::human(bytes),
        units::duration(took)
    ))
}

/// What a step that succeeded printed for the report.
struct StepDone {
    notes: Vec<String>,
    /// The backups it kept (`plumb-backup=` lines).
    backups: Vec<String>,
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
            backups: backups(o),
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
    /// The step failed, after completing these parts.
    Failed(Failure, Vec<String>),
    Lost(TransportError),
}

impl From<TransportError> for StepError {
    fn from(e: TransportError) -> Self {
        StepError::Lost(e)
    }
}
