//! The live progress display on a terminal: one line per host, showing what
//! it is doing. The report is printed after the display is cleared, so
//! nothing else writes to the terminal while it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use plumb_engine::report::HostStatus;
use plumb_engine::run::Event;

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
