//! Which systemd units a host's run starts again, and when: a notified
//! service whose unit a resource (a data migration) stopped and started
//! after the last of its notifiers changed already reads their changes, and
//! is not restarted on top of it.

use std::collections::HashMap;

use crate::module::Resource;

/// What a host's run changed so far, by position in its order.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    /// Per unit: the position of the resource that last started it, and its id.
    started: HashMap<String, (usize, String)>,
    /// Per resource (index in the host plan): the position at which it changed.
    changed: HashMap<usize, usize>,
}

impl Restarts {
    /// Resource `i`, at position `pos` of the order, changed (in `diff`: will
    /// change), and its steps started `units` again.
    pub(crate) fn record(&mut self, pos: usize, i: usize, id: &str, units: Vec<String>) {
        self.changed.insert(i, pos);
        for u in units {
            self.started.insert(u, (pos, id.to_string()));
        }
    }

    /// Why `res`, notified by `notifiers` (the ids of those that changed,
    /// among the resources `notified_by`), needs no refresh: the note for
    /// the report, when its unit was started after the last of them changed.
    pub(crate) fn covers(&self, res: &dyn Resource, notified_by: &[usize], notifiers: &[&str]) -> Option<String> {
        let unit = res.refreshes_unit()?;
        let (pos, by) = self.started.get(&unit)?;
        let last = notified_by.iter().filter_map(|j| self.changed.get(j)).max()?;
        (pos > last).then(|| {
            let list = notifiers
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("not restarted again: `{by}` started {unit} after {list} changed")
        })
    }
}
