//! plumb's engine: plans and inventories loaded with their locations
//! ([`plan`], [`inventory`], [`yaml`]), templating ([`template`]), the
//! dependency graph ([`compile`]), the module contract ([`module`]), transports
//! ([`transport`]), the executor ([`run`]) and the renderers ([`report`]).
//!
//! The engine knows no particular module: modules implement [`module::Module`]
//! and are handed to the engine in a [`module::Registry`].

pub mod compile;
pub mod diag;
pub mod facts;
pub mod introspect;
pub mod inventory;
pub mod journal;
pub mod module;
pub mod paths;
pub mod plan;
pub mod report;
pub mod rollback;
pub mod run;
pub mod saved;
pub mod shell;
pub mod source;
pub mod template;
pub mod transport;
pub mod units;
pub mod write;
pub mod yaml;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// Whether the tests run as root (some need to own files as another
    /// user or read as root; CI runs them as root).
    pub(crate) fn running_as_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }
}
