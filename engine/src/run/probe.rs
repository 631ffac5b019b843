//! Phase 1, probe: one remote execution per host (per distinct `become`)
//! observes every resource asked about, and [`record`] keeps what each
//! resource's module read of it.
//!
//! The framing of a batch lives here, once: every section of a batch's
//! output starts with a marker line `@@NONCE:NAME` printed by [`marker`]
//! (after a newline, so the section before need not end with one), and
//! [`sections`] is the one parser that cuts an output back into named
//! sections. The nonce is drawn per host run, so nothing a probe prints (a
//! file's content) can forge a marker. The paths' observation
//! ([`crate::paths::PathBatch`]) uses sections `p:…` up to `p:end`; each
//! module's own probe is section `b:I`, followed by `e:I:STATUS`.

use std::collections::BTreeMap;

use super::{HostRun, Outcome, Slot};
use crate::compile::HostPlan;
use crate::module::{Account, ProbeOutput};
use crate::paths::{Answers, PathBatch, PathQuery};
use crate::plan::Become;
use crate::shell::Sh;
use crate::transport::{Output, TransportError};

use super::outcome::Failure;

/// What a probe of some resources gave: for each, what it printed and what
/// was observed of its paths, or why it could not be observed.
pub(super) type Probed = BTreeMap<usize, Result<ProbeOutput, Failure>>;

/// A fresh nonce for the markers of one batch: nothing a probe prints can
/// forge a marker it does not know.
pub(crate) fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Shell that prints the marker of section `name`.
pub(crate) fn marker(nonce: &str, name: &str) -> Sh {
    Sh::raw_start("printf '\\n%s\\n'").arg(format!("@@{nonce}:{name}"))
}

/// The sections of `out`, in order: each marker's name and the bytes up to
/// the next marker (whose leading newline is the marker's, not the body's).
pub(crate) fn sections<'o>(nonce: &str, out: &'o [u8]) -> Vec<(String, &'o [u8])> {
    let prefix = format!("\n@@{nonce}:");
    let prefix = prefix.as_bytes();
    let mut marks: Vec<(usize, String, usize)> = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&out[from..], prefix).map(|i| i + from) {
        let name_start = at + prefix.len();
        let Some(nl) = out[name_start..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let name = String::from_utf8_lossy(&out[name_start..name_start + nl]).into_owned();
        marks.push((at, name, name_start + nl + 1));
        from = name_start + nl + 1;
    }
    let ends: Vec<usize> = marks.iter().skip(1).map(|m| m.0).chain([out.len()]).collect();
    marks
        .into_iter()
        .zip(ends)
        .map(|((_, name, start), end)| (name, &out[start..end.max(start)]))
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One script that runs every module probe, each in its own section.
#[must_use]
pub(crate) fn probe_batch(nonce: &str, probes: &[(usize, Sh)]) -> Sh {
    let mut s = Sh::new();
    for (i, p) in probes {
        s.line(&marker(nonce, &format!("b:{i}")));
        s.line(&Sh::raw_start("(\n").then(p).raw("\n) </dev/null"));
        s.line(
            &Sh::raw_start("printf '\\n%s:%d\\n'")
                .arg(format!("@@{nonce}:e:{i}"))
                .raw(" \"$?\""),
        );
    }
    s
}

/// Each module probe's output and exit status, from a batch's output: a
/// probe whose end marker is missing (the batch was cut short) is left out.
#[must_use]
pub(crate) fn split_batch(nonce: &str, stdout: &[u8]) -> Vec<(usize, Vec<u8>, i32)> {
    let all = sections(nonce, stdout);
    all.iter()
        .zip(all.iter().skip(1))
        .filter_map(|((name, body), (end, _))| {
            let i: usize = name.strip_prefix("b:")?.parse().ok()?;
            let status = end.strip_prefix(&format!("e:{i}:"))?.parse().unwrap_or(-1);
            Some((i, body.to_vec(), status))
        })
        .collect()
}

/// The resources of one `become`, probed together.
struct Group {
    become_: Become,
    paths: PathBatch,
    /// Each resource with its path queries, its accounts and its own probe.
    members: Vec<(usize, Vec<PathQuery>, Vec<Account>, Sh)>,
}

/// Probe resources `which`: one remote execution per distinct `become`
/// among them, observing the paths all of them inspect together, then each
/// resource's own probe (those that have one).
pub(super) async fn probe(run: &HostRun<'_>, which: &[usize]) -> Result<Probed, TransportError> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for &i in which {
        let r = &run.hp.resources[i];
        let Some(res) = r.resource.as_deref() else {
            continue;
        };
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
    let mut out = Probed::new();
    for g in groups.into_values() {
        let probes: Vec<(usize, Sh)> = g
            .members
            .iter()
            .filter(|(_, _, _, sh)| !sh.is_empty())
            .map(|(i, _, _, sh)| (*i, sh.clone()))
            .collect();
        let mut script = Sh::new();
        if !g.paths.is_empty() {
            script.line(&g.paths.script(&run.nonce));
        }
        script.line(&probe_batch(&run.nonce, &probes));
        let o = run.exec(&script, &g.become_, None).await?;
        out.extend(answer(&run.nonce, g, &o));
    }
    Ok(out)
}

/// Each member's share of its group's output.
fn answer(nonce: &str, g: Group, o: &Output) -> Probed {
    let answers = if g.paths.is_empty() {
        Some(Answers::default())
    } else {
        g.paths.parse(nonce, &o.stdout)
    };
    let mut parts: BTreeMap<usize, (Vec<u8>, i32)> = split_batch(nonce, &o.stdout)
        .into_iter()
        .map(|(i, b, s)| (i, (b, s)))
        .collect();
    let mut out = Probed::new();
    for (i, queries, accounts, sh) in g.members {
        let own = if sh.is_empty() {
            Some((Vec::new(), 0))
        } else {
            parts.remove(&i)
        };
        let r = match (&answers, own) {
            (Some(a), Some((stdout, status))) => Ok(share(a, queries, accounts, stdout, status)),
            _ => Err(Failure::of_output(o, &g.become_, "the probe did not run", 6)),
        };
        out.insert(i, r);
    }
    out
}

/// One resource's probe output: its own probe's, and the answers about its
/// paths and accounts.
fn share(a: &Answers, queries: Vec<PathQuery>, accounts: Vec<Account>, stdout: Vec<u8>, status: i32) -> ProbeOutput {
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
    po
}

/// Keep what a probe (of round `round`) observed of each resource: its
/// module reads the output, or the resource fails.
pub(super) fn record(hp: &HostPlan, slots: &mut [Slot], probed: Probed, round: u32) {
    for (i, out) in probed {
        let Some(res) = hp.resources[i].resource.as_deref() else {
            continue;
        };
        let observed = out.and_then(|o| res.observe(&o).map(|obs| (obs, o)));
        match observed {
            Ok((obs, o)) => {
                slots[i].observed = Some(obs);
                slots[i].missing = o.missing;
                slots[i].seen = round;
                // Until its steps run: what the run record calls "before".
                if slots[i].changed_in.is_none() {
                    slots[i].paths_before = o.paths;
                }
            }
            Err(e) => slots[i].outcome = Some(Outcome::Failed(e.during("probe"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_back_into_its_probes() {
        let probes = vec![
            (0, Sh::raw_start("printf 'a=1\\n'")),
            (3, Sh::raw_start("printf 'no newline'; exit 4")),
            (7, Sh::raw_start("printf '@@fake:e:7:0\\n'")),
        ];
        let script = probe_batch("n0nce", &probes);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.as_str())
            .output()
            .unwrap();
        let parts = split_batch("n0nce", &out.stdout);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], (0, b"a=1\n".to_vec(), 0));
        assert_eq!(parts[1], (3, b"no newline".to_vec(), 4));
        assert_eq!(parts[2], (7, b"@@fake:e:7:0\n".to_vec(), 0));
    }

    /// The paths' sections and the module probes' sections of one batch
    /// are cut by the same parser; a probe cut short (no end marker) is no
    /// answer.
    #[test]
    fn one_parser_reads_every_section_of_a_batch() {
        let out = b"\n@@n:p:stat\nx\n@@n:p:end\n\n@@n:b:2\nk=v\n\n@@n:e:2:0\n\n@@n:b:5\ncut";
        let names: Vec<String> = sections("n", out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["p:stat", "p:end", "b:2", "e:2:0", "b:5"]);
        assert_eq!(split_batch("n", out), vec![(2, b"k=v\n".to_vec(), 0)]);
    }
}
