//! The live progress display on a terminal: one line per host, showing what
//! it is doing. The report is printed after the display is cleared, so
//! nothing else writes to the terminal while it runs.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use plumb_engine::report::HostStatus;
use plumb_engine::run::Event;
use plumb_engine::transport::Progress as TransportProgress;
use plumb_engine::units;

/// A display of every host's progress.
pub(crate) struct Progress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    total: ProgressBar,
}

impl Progress {
    /// A display for `hosts` hosts on stderr.
    pub(crate) fn new(hosts: usize) -> Arc<Self> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(hosts as u64));
        total.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} hosts done  {elapsed}").expect("valid template"),
        );
        Arc::new(Self {
            multi,
            bars: Mutex::new(HashMap::new()),
            total,
        })
    }

    /// Update the display for one event.
    pub(crate) fn on(&self, e: Event) {
        let mut bars = self.bars.lock().expect("progress lock");
        let bar = |bars: &mut HashMap<String, ProgressBar>, host: &str| {
            bars.entry(host.to_string())
                .or_insert_with(|| {
                    let b = self.multi.insert_before(&self.total, ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}").expect("valid template"),
                    );
                    b.set_prefix(host.to_string());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone()
        };
        match e {
            Event::HostStarted(h) => bar(&mut bars, &h).set_message("connecting"),
            Event::Probed(h) => bar(&mut bars, &h).set_message("probed"),
            Event::Step(h, id, label) => bar(&mut bars, &h).set_message(format!("{id}: {label}")),
            Event::Progress(h, id, p, rate) => {
                bar(&mut bars, &h).set_message(format!("{id}: {}", copying(p, rate)));
            }
            Event::HostDone(h, status) => {
                let b = bar(&mut bars, &h);
                let word = match status {
                    HostStatus::Ok => "ok",
                    HostStatus::Changed => "changed",
                    HostStatus::Pending => "changes pending",
                    HostStatus::Failed => "failed",
                    HostStatus::Unreachable => "unreachable",
                };
                b.finish_with_message(word.to_string());
                self.total.inc(1);
            }
        }
    }

    /// Remove the display.
    pub(crate) fn clear(&self) {
        for b in self.bars.lock().expect("progress lock").values() {
            b.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// A copy's progress for people: `copying 1.2 GiB of 3.4 GiB (35 %),
/// 28 MiB/s, about 1 min 20 s left` (the rate once it is known).
pub(crate) fn copying(p: TransportProgress, rate: Option<u64>) -> String {
    let mut text = format!("copying {}", units::human(p.done));
    if p.total > 0 {
        let pct = (u128::from(p.done.min(p.total)) * 100 / u128::from(p.total)).min(100);
        text.push_str(&format!(" of {} ({pct} %)", units::human(p.total)));
    }
    if let Some(rate) = rate.filter(|&r| r > 0) {
        text.push_str(&format!(", {}/s", units::human(rate)));
        if p.total > p.done {
            let left = Duration::from_secs((p.total - p.done) / rate);
            text.push_str(&format!(", about {} left", units::duration(left)));
        }
    }
    text
}

/// Progress without the live display (stderr is not a terminal, or the
/// report is JSON or Markdown): a copy's progress as a plain line on stderr
/// every 30 seconds per resource, so that a long migration is not silent
/// for an hour.
#[derive(Default)]
pub(crate) struct Plain {
    last: Mutex<HashMap<(String, String), Instant>>,
}

impl Plain {
    /// Print what `e` says, when it is time to.
    pub(crate) fn on(&self, e: Event) {
        if let Event::Progress(h, id, p, rate) = e {
            let mut last = self.last.lock().expect("progress lock");
            let now = Instant::now();
            let key = (h, id);
            if last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(30))
            {
                return;
            }
            // A terminal that went away must not end the run.
            let _ = writeln!(std::io::stderr().lock(), "{}: {}: {}", key.0, key.1, copying(p, rate));
            last.insert(key, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shows_its_share_rate_and_time_left() {
        let p = TransportProgress {
            done: 1 << 30,
            total: 4 << 30,
        };
        assert_eq!(
            copying(p, Some(16 << 20)),
            "copying 1 GiB of 4 GiB (25 %), 16 MiB/s, about 3 min 12 s left"
        );
        assert_eq!(
            copying(p, None),
            "copying 1 GiB of 4 GiB (25 %)",
            "no rate before a second of it"
        );
        let unknown = TransportProgress { done: 4096, total: 0 };
        assert_eq!(copying(unknown, None), "copying 4 KiB");
    }
}
