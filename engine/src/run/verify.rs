//! Phase 4, verify: after a wave's steps, one batched re-probe of every
//! resource that changed (and of those whose observation went stale); each
//! changed resource is settled from it ([`settle`]): changed, or failed
//! with what is still not as wanted.

use super::outcome::{Failure, Outcome, Reason};
use super::probe::{probe, record, Probed};
use super::{HostRun, Slot};
use crate::compile::HostPlan;
use crate::module::{Changes, ProbeOutput};
use crate::report::redact;
use crate::transport::TransportError;

/// Verify the changes of resources `changed` and look again at `stale`,
/// in one probe (of round `round`).
pub(super) async fn wave(
    run: &HostRun<'_>,
    slots: &mut [Slot],
    changed: &[usize],
    stale: &[usize],
    round: u32,
) -> Result<(), TransportError> {
    let hp = run.hp;
    let mut which = changed.to_vec();
    which.extend(stale);
    let mut after: Probed = match probe(run, &which).await {
        Ok(p) => p,
        Err(e) => {
            lost(slots, hp, &e);
            return Err(e);
        }
    };
    for &i in changed {
        slots[i].unverified = false;
        let outcome = settle(hp, i, after.remove(&i));
        slots[i].outcome = Some(outcome);
    }
    for &i in stale {
        slots[i].stale = false;
    }
    record(hp, slots, after, round);
    Ok(())
}

/// The connection is gone: the changes waiting for verification failed
/// unverified, and nothing else starts.
pub(super) fn lost(slots: &mut [Slot], hp: &HostPlan, e: &TransportError) {
    for &j in &hp.order {
        if slots[j].unverified {
            slots[j].unverified = false;
            slots[j].outcome = Some(Outcome::Failed(Failure::unverified(e)));
        } else if slots[j].outcome.is_none() {
            slots[j].outcome = Some(Outcome::Skipped(Reason::ConnectionLost));
        }
    }
}

/// Resource `i`'s outcome from its verification probe.
fn settle(hp: &HostPlan, i: usize, out: Option<Result<ProbeOutput, Failure>>) -> Outcome {
    let r = &hp.resources[i];
    let Some(res) = r.resource.as_deref() else {
        return Outcome::failed("verification probe: not compiled");
    };
    let out = out.unwrap_or_else(|| Err(Failure::new("no answer")));
    let obs = match out.and_then(|o| res.observe(&o)) {
        Ok(obs) => obs,
        Err(f) => return Outcome::Failed(f.during("verification probe")),
    };
    let rest = res.verify(&obs);
    if rest.is_empty() {
        return Outcome::Changed;
    }
    let plain = if r.sensitive {
        None
    } else {
        res.unconverged(&obs, &rest)
    };
    Outcome::failed(match plain {
        Some(sentence) => format!("did not converge: {sentence}"),
        None => still_differs(&rest, r.sensitive),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Change;

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
}
