//! The module contract. A module author writes the parameters, what a probe
//! observes, how to read it, what to change, and nothing else: validation,
//! batching, diff, apply, verify, check mode, risk and reporting are done
//! once, by the engine, for every module.
//!
//! Probes are *data* (shell text and a parser), not code that talks to a host:
//! that is what lets the engine check a whole host in one remote execution.
//! What file-like modules need of their paths (type, metadata, sha256, old
//! content) they declare in [`Module::inspect`] instead of probing it: the
//! engine observes every such path of a host with a constant number of
//! processes ([`crate::paths`]), where a `stat` and a `sha256sum` per
//! resource would grow with the plan.

mod change;
mod contract;
mod erased;
mod params;
mod probe;
mod step;

pub use change::{text_diff, Change, Changes, Risk};
pub use contract::{Claim, Claims, Module, ModuleDoc, ParamDoc, Prediction};
pub use erased::{resource_of, ModuleEntry, Observed, Planned, Predicted, Registry, Resource};
pub use params::{parse_mode, yes, CompileCx, FileMode, Presence, RenderFile};
pub use probe::{Fields, ProbeOutput};
pub use step::{downtime_fn, sha256_hex, Content, FileWrite, Payload, Script, Step};

pub use crate::paths::{Account, Fetch, FileType, PathObservation, PathQuery, PathStat};
pub use crate::run::Failure;
