//! Phase 2, decide: from what was observed of a resource, what to change
//! ([`Decision`]), or why it cannot be converged ([`Failure`]). Apply
//! decides each resource when its turn comes (its observation is fresh
//! then); diff ([`preview`]) decides every resource at once, and predicts
//! those that follow a pending change of a requirement.

use super::outcome::{Failure, Outcome, Reason};
use super::{ticked, Slot};
use crate::compile::{EdgeKind, HostPlan};
use crate::module::{Account, Change, Changes, Observed, Planned, Predicted, Resource, Risk, Step};
use crate::report::Downtime;

/// What to do to one resource.
pub(super) struct Decision {
    /// What its module plans (what `apply` carries out), with its changes.
    pub own: Planned,
    /// What a notification adds: the change as reported, and its steps.
    pub refresh: Option<(Change, Vec<Step>)>,
    /// Why a notification restarts nothing (for the report).
    pub note: Option<String>,
}

impl Decision {
    /// The units its steps take down: the module's own (a migration's
    /// stop), then a refresh's restart.
    pub(super) fn downtime(&self, res: &dyn Resource, obs: &Observed) -> Vec<Downtime> {
        let mut d = if self.own.changes.is_empty() {
            Vec::new()
        } else {
            res.downtime(obs, &self.own)
        };
        if self.refresh.is_some() {
            if let Some(u) = res.refreshes_unit() {
                if !d.iter().any(|x| x.unit == u) {
                    d.push(Downtime::restart(&u));
                }
            }
        }
        d
    }

    /// Every change, as reported: its own, then the refresh.
    pub(super) fn changes(&self) -> Changes {
        let mut c = self.own.changes.clone();
        if let Some((change, _)) = &self.refresh {
            c.push(change.clone());
        }
        c
    }
}

/// Decide one resource from its fresh observation: its preconditions, then
/// what differs, then what its notifiers ask of it.
pub(super) fn decide(res: &dyn Resource, obs: &Observed, notify: &Notify<'_>) -> Result<Decision, Failure> {
    res.check(obs)?;
    let own = res.plan(obs);
    Ok(with_refresh(res, obs, own, notify))
}

/// What notifications ask of a resource: who notified it, and what already
/// restarted its unit since (then they ask nothing).
pub(super) struct Notify<'a> {
    /// The notifiers that changed (apply) or would change (diff).
    pub by: Vec<&'a str>,
    /// Why no refresh is needed although notified: the note for the report.
    pub covered: Option<String>,
}

fn with_refresh(res: &dyn Resource, obs: &Observed, own: Planned, notify: &Notify<'_>) -> Decision {
    let steps = if notify.by.is_empty() {
        Vec::new()
    } else {
        res.refresh(obs, &own)
    };
    if steps.is_empty() {
        return Decision {
            own,
            refresh: None,
            note: None,
        };
    }
    match &notify.covered {
        Some(why) => Decision {
            own,
            refresh: None,
            note: Some(why.clone()),
        },
        None => Decision {
            own,
            refresh: Some((refresh_change(&notify.by, &steps), steps)),
            note: None,
        },
    }
}

/// What notifications ask of `i`: its notifiers that changed, and whether
/// a resource (a data migration) started its unit again after the last of
/// them changed, so that the unit already reads their changes.
pub(super) fn notify<'a>(hp: &'a HostPlan, slots: &[Slot], i: usize) -> Notify<'a> {
    let by = notifiers(hp, slots, i);
    let covered = hp.resources[i]
        .resource
        .as_ref()
        .and_then(|res| res.refreshes_unit())
        .filter(|_| !by.is_empty())
        .and_then(|unit| {
            let last = hp.resources[i]
                .notified_by
                .iter()
                .filter_map(|&j| slots[j].change_seq)
                .max()?;
            let (seq, starter) = hp
                .order
                .iter()
                .filter(|&&j| slots[j].starts.contains(&unit))
                .filter_map(|&j| slots[j].change_seq.map(|s| (s, j)))
                .max()?;
            (seq > last).then(|| {
                format!(
                    "not restarted again: `{}` started {unit} after {} changed",
                    hp.resources[starter].id,
                    ticked(&by)
                )
            })
        });
    Notify { by, covered }
}

/// Record that `i` changed (apply) or would change (diff), and the units
/// its steps start again.
pub(super) fn record_change(slots: &mut [Slot], i: usize, starts: Vec<String>) {
    let seq = slots.iter().filter(|s| s.change_seq.is_some()).count();
    slots[i].change_seq = Some(seq);
    slots[i].starts = starts;
}

/// `diff`: decide every resource not settled yet, in dependency order. This
/// is the pipeline of `apply` stopped after this phase.
pub(super) fn preview(hp: &HostPlan, slots: &mut [Slot]) {
    for &i in &hp.order {
        if slots[i].outcome.is_none() {
            let outcome = preview_one(hp, slots, i);
            slots[i].outcome = Some(outcome);
        }
    }
}

/// What would change for resource `i`, against its probed state, or
/// against the state predicted once its pending requirements are applied.
fn preview_one(hp: &HostPlan, slots: &mut [Slot], i: usize) -> Outcome {
    if let Some(why) = blocked_by(hp, slots, i) {
        return Outcome::Skipped(why);
    }
    let r = &hp.resources[i];
    let notify = notify(hp, slots, i);
    slots[i].after = r
        .requires
        .iter()
        .filter(|(j, kind)| *kind != EdgeKind::Notify && matches!(slots[*j].outcome, Some(Outcome::Pending)))
        .map(|(j, _)| hp.resources[*j].id.clone())
        .collect();
    if !slots[i].missing.is_empty() {
        let before: Vec<String> = account_makers_before(hp, i)
            .filter(|&j| matches!(slots[j].outcome, Some(Outcome::Pending)))
            .map(|j| hp.resources[j].id.clone())
            .collect();
        let what = describe_missing(&slots[i].missing);
        if before.is_empty() {
            return Outcome::failed(format!(
                "{what}: apply would fail (create it first, or with a resource this one requires)"
            ));
        }
        // A package or a command before it may create the account.
        slots[i].notes.push(format!(
            "unknown until apply: {what} yet; the pending change of {} may create it",
            first_three(&before)
        ));
    }
    let (Some(res), Some(obs)) = (r.resource.as_deref(), slots[i].observed.as_ref()) else {
        return Outcome::failed("probe: not observed");
    };
    let decision = if slots[i].after.is_empty() {
        match decide(res, obs, &notify) {
            Ok(d) => d,
            Err(f) => return Outcome::Failed(f),
        }
    } else {
        match res.predict(obs) {
            Predicted::Plan(plan) => with_refresh(res, obs, plan, &notify),
            Predicted::Unknown(why) => {
                let mut d = with_refresh(res, obs, res.plan(obs), &notify);
                d.own.changes = unknown_until(&slots[i].after, &why);
                d
            }
        }
    };
    slots[i].changes = decision.changes();
    slots[i].downtime = decision.downtime(res, obs);
    slots[i].notes.extend(decision.note.clone());
    if slots[i].changes.is_empty() {
        Outcome::Ok
    } else {
        record_change(slots, i, res.starts_units(obs, &decision.own));
        Outcome::Pending
    }
}

/// A prediction that cannot be made before requirements `after` are
/// applied, as a change.
fn unknown_until(after: &[String], why: &str) -> Changes {
    let mut c = Changes::none();
    c.push(Change::new(
        "state",
        None,
        Some(format!("known after {} is applied: {why}", ticked(after))),
    ));
    c
}

/// `` `a`, `b`, `c` and 2 more ``.
fn first_three(ids: &[String]) -> String {
    let shown = ticked(&ids[..ids.len().min(3)]);
    match ids.len().saturating_sub(3) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The notifiers of `i` that changed (apply) or would change (diff).
pub(super) fn notifiers<'a>(hp: &'a HostPlan, slots: &[Slot], i: usize) -> Vec<&'a str> {
    hp.resources[i]
        .notified_by
        .iter()
        .filter(|&&j| {
            matches!(slots[j].outcome, Some(Outcome::Changed | Outcome::Pending)) && !slots[j].changes.is_empty()
        })
        .map(|&j| hp.resources[j].id.as_str())
        .collect()
}

/// Why `i` cannot run: a requirement (not a mere notifier) failed or was
/// not run.
pub(super) fn blocked_by(hp: &HostPlan, slots: &[Slot], i: usize) -> Option<Reason> {
    hp.resources[i]
        .requires
        .iter()
        .filter(|(_, k)| *k != EdgeKind::Notify)
        .find_map(|(j, _)| {
            let id = hp.resources[*j].id.clone();
            match slots[*j].outcome {
                Some(Outcome::Failed(_)) => Some(Reason::RequirementFailed(id)),
                Some(Outcome::Skipped(_)) => Some(Reason::RequirementSkipped(id)),
                _ => None,
            }
        })
}

/// The resources before `i` in dependency order that may create an account.
pub(super) fn account_makers_before(hp: &HostPlan, i: usize) -> impl Iterator<Item = usize> + '_ {
    hp.order
        .iter()
        .copied()
        .take_while(move |&j| j != i)
        .filter(|&j| hp.resources[j].resource.as_ref().is_some_and(|r| r.creates_accounts()))
}

/// `user `a` and group `b``: the accounts a resource needs that the host lacks.
pub(super) fn describe_missing(missing: &[Account]) -> String {
    let list = missing
        .iter()
        .map(|a| format!("{} `{}`", a.kind(), a.name()))
        .collect::<Vec<_>>()
        .join(" and ");
    let verb = if missing.len() == 1 { "does" } else { "do" };
    format!("{list} {verb} not exist on the host")
}

/// The change a notification makes: what its steps do, and who notified.
fn refresh_change(notifiers: &[&str], steps: &[Step]) -> Change {
    let what = steps.iter().map(Step::label).collect::<Vec<_>>().join(", ");
    Change::new(
        "refresh",
        None,
        Some(format!("{what} (notified by {})", ticked(notifiers))),
    )
    .risk(Risk::Restart)
}
