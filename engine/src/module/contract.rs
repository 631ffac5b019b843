//! The contract a module implements: [`Module`], with its documentation
//! ([`ModuleDoc`]), its [`Claims`] and its [`Prediction`]s.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Account, Changes, CompileCx, Failure, PathQuery, ProbeOutput, Step};
use crate::shell::Sh;

/// Something a resource manages (`provides`) or relies on (`needs`), from
/// which the engine adds implicit edges to the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// A filesystem path. A need of `/a/b/c` is met by a provider of `/a` or
    /// `/a/b` (every managed ancestor).
    Path(String),
    /// An exact key in a namespace: `("vg", "vg_fast")`,
    /// `("blockdev", "/dev/vg_fast/docker")`, `("fs", "/dev/…")`.
    Key(&'static str, String),
}

/// A resource's claims.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// What it manages, for the resources that rely on it.
    pub provides: Vec<Claim>,
    /// What it relies on.
    pub needs: Vec<Claim>,
    /// What it alone may manage on a host: its identities. Two resources of
    /// one host with a common identity would undo each other's work on every
    /// apply, so the engine refuses the plan. A path here is the path
    /// itself (its ancestors are not involved), compared after removing
    /// repeated and trailing slashes; so is a key value that starts with `/`.
    pub manages: Vec<Claim>,
}

impl Claims {
    /// A file's: it needs its folder (a path's managed ancestors) and
    /// alone manages the path itself.
    #[must_use]
    pub fn file(path: &str) -> Self {
        Claims {
            provides: Vec::new(),
            needs: vec![Claim::Path(path.to_string())],
            manages: vec![Claim::Path(path.to_string())],
        }
    }

    /// Only what it alone manages.
    #[must_use]
    pub fn managing(claim: Claim) -> Self {
        Claims {
            manages: vec![claim],
            ..Claims::default()
        }
    }
}

/// Documentation of a module, shown by `plumb doc`.
#[derive(Debug)]
pub struct ModuleDoc {
    /// One paragraph: what the module manages.
    pub summary: &'static str,
    /// Every parameter, documented.
    pub params: &'static [ParamDoc],
    /// A resource in YAML.
    pub example: &'static str,
}

impl ModuleDoc {
    /// A module plumb makes for itself (a rollback's steps): not written in
    /// plans, so without parameters or an example.
    #[must_use]
    pub fn internal(summary: &'static str) -> Self {
        ModuleDoc {
            summary,
            params: &[],
            example: "",
        }
    }
}

/// Documentation of one parameter.
#[derive(Debug)]
pub struct ParamDoc {
    /// The key.
    pub name: &'static str,
    /// Its type, as a user reads it (`string`, `"0644"`, `list of strings`).
    pub ty: &'static str,
    /// Default, or `required`.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// A module: a kind of thing plumb manages. See the crate docs.
pub trait Module: Send + Sync + 'static {
    /// The key that names it in plans (`file`, `lvm.lv`).
    const NAME: &'static str;
    /// Its parameters (`#[serde(deny_unknown_fields)]`).
    type Params: DeserializeOwned + Send + Sync + 'static;
    /// What a probe observes.
    type State: Serialize + Send + Sync + 'static;

    /// Its reference documentation.
    fn doc() -> ModuleDoc;

    /// Check and complete the parameters on the workstation (read local
    /// files, check paths), reporting problems through `cx`.
    fn prepare(_p: &mut Self::Params, _cx: &CompileCx<'_>) {}

    /// What it manages and relies on (implicit graph edges), and what it
    /// alone may manage (see [`Claims::manages`]).
    fn claims(_p: &Self::Params) -> Claims {
        Claims::default()
    }

    /// Paths whose type, metadata, sha256 or content `parse` needs. The
    /// engine observes the paths of all of a host's resources together (one
    /// `stat` and one `sha256sum` for all of them, see [`crate::paths`]) and
    /// hands the answers to `parse` in [`ProbeOutput::path`]. A module
    /// that manages a path ([`Claim::Path`](crate::module::Claim::Path) in
    /// its `manages`) inspects it: the run record takes from that
    /// observation whether the run created the path and its metadata
    /// before, which a rollback sets back.
    fn inspect(_p: &Self::Params) -> Vec<PathQuery> {
        Vec::new()
    }

    /// Users and groups that must exist on the host for `apply` to work
    /// (an owner to `chown` to). The engine looks them up in the batched
    /// probe and fails the resource in `diff` already when one is missing,
    /// unless a pending change before it may create it.
    fn accounts(_p: &Self::Params) -> Vec<Account> {
        Vec::new()
    }

    /// Whether applying it may create users or groups (a package's
    /// maintainer scripts, a command): an owner missing on the host is then
    /// "unknown until apply" for the resources after a pending one.
    const CREATES_ACCOUNTS: bool = false;

    /// Shell text whose output describes the rest of the current state
    /// (what [`Module::inspect`] does not cover). Read-only. Empty: nothing
    /// to run (no process is spent on it).
    fn probe(_p: &Self::Params) -> Sh {
        Sh::new()
    }

    /// Read the probe's output.
    ///
    /// # Errors
    /// The output cannot be understood, or shows a problem that blocks the
    /// resource: what, for the user, and what to do about it
    /// ([`Failure::with_hint`]); the engine adds where it happened.
    fn parse(p: &Self::Params, out: &ProbeOutput) -> Result<Self::State, Failure>;

    /// What to do, as data: the decision that [`Module::apply`] carries
    /// out and [`Module::changes`] explains. The engine never reads the
    /// explanation to act, and a module's `apply` reads only its plan.
    type Plan: Send + Sync + 'static;

    /// Decide what to do to reach the desired state from `current` (its
    /// preconditions are [`Module::check`]'s).
    fn plan(p: &Self::Params, current: &Self::State) -> Self::Plan;

    /// The plan, for people: what differs, field by field; empty when the
    /// plan does nothing.
    fn changes(p: &Self::Params, current: &Self::State, plan: &Self::Plan) -> Changes;

    /// Preconditions on the observed state (a device that must exist, a
    /// filesystem that must not be foreign). Checked before apply, and in
    /// `diff` unless a requirement is pending (which may make them true):
    /// a prediction plans without them.
    ///
    /// # Errors
    /// Why the resource cannot be converged, and what to do about it, for
    /// the user.
    fn check(_p: &Self::Params, _current: &Self::State) -> Result<(), Failure> {
        Ok(())
    }

    /// In `diff`, when a requirement has pending changes, the probed state
    /// may be stale: the state to predict from instead. The default keeps the
    /// probed state (right for a file whose folder is about to be created).
    fn predict(_p: &Self::Params, _probed: &Self::State) -> Prediction<Self::State> {
        Prediction::Probed
    }

    /// The steps that carry out `plan` (called only when it changes
    /// something).
    fn apply(p: &Self::Params, current: &Self::State, plan: &Self::Plan) -> Vec<Step>;

    /// After apply, whether the re-probed state counts as converged (by
    /// default: planning again finds nothing to do).
    fn verify(p: &Self::Params, after: &Self::State) -> Changes {
        Self::changes(p, after, &Self::plan(p, after))
    }

    /// A plain sentence for a change that did not verify: what is still
    /// not as wanted after the steps ran (`rest`, from [`Module::verify`]).
    /// `None`: the engine says it field by field.
    fn unconverged(_p: &Self::Params, _after: &Self::State, _rest: &Changes) -> Option<String> {
        None
    }

    /// Whether a `notify` may target this module (then [`Module::refresh`]
    /// says what a refresh does).
    const REFRESHABLE: bool = false;

    /// Whether the module is a check (`assert`), not a change: reports list
    /// it apart, and it is never counted among changes.
    const CHECK: bool = false;

    /// What to do when notified (only called when [`Module::REFRESHABLE`]),
    /// given the observed state and the plan `apply` carries out in the same
    /// run (a service that `apply` starts needs no restart on top). No
    /// steps: the notification needs nothing done, and none is reported.
    fn refresh(_p: &Self::Params, _current: &Self::State, _plan: &Self::Plan) -> Vec<Step> {
        Vec::new()
    }

    /// Whether the probe must be run again before apply when a requirement
    /// changed in the same run (its observation depends on it).
    fn reprobe_after_requirements() -> bool {
        false
    }

    /// The systemd units (`docker.service`) that the steps carrying out
    /// `plan` stop and start again, so that they run last: a data migration
    /// restarts its services. A notified service whose unit such a step
    /// started after the last of its notifiers changed already reads their
    /// changes, and is not restarted on top of it.
    fn starts_units(_p: &Self::Params, _current: &Self::State, _plan: &Self::Plan) -> Vec<String> {
        Vec::new()
    }

    /// The systemd units that the steps carrying out `plan` take down for a
    /// while, and for how long that is expected to last (a migration's
    /// stop: the data to copy at the rate the probe measured). A refresh's
    /// restart is added by the engine ([`Module::refreshes_unit`]).
    fn downtime(_p: &Self::Params, _current: &Self::State, _plan: &Self::Plan) -> Vec<crate::report::Downtime> {
        Vec::new()
    }

    /// The systemd unit a refresh restarts (`docker.service`), if any.
    fn refreshes_unit(_p: &Self::Params) -> Option<String> {
        None
    }

    /// What a check verifies, in the user's words, for the review's GO
    /// criteria (`None`: nothing to say).
    fn criterion(_p: &Self::Params) -> Option<String> {
        None
    }
}

/// What a module predicts from when a requirement is pending.
#[derive(Debug)]
pub enum Prediction<S> {
    /// The probed state is still the right basis.
    Probed,
    /// Predict from this state instead (an absent volume group means an
    /// absent logical volume).
    Assume(S),
    /// Nothing sensible can be said until the requirement is applied; the
    /// text says what will be known then.
    Unknown(String),
}
