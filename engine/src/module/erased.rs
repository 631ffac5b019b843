//! Modules with their types erased, as the engine holds them: a compiled
//! [`Resource`], its [`Observed`] state, and the [`Registry`] of
//! [`ModuleEntry`]s.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{
    sha256_hex, Account, Changes, Claims, CompileCx, Module, ModuleDoc, PathQuery, Prediction, ProbeOutput, Step,
};
use crate::diag::Diag;
use crate::run::Failure;
use crate::shell::Sh;
use crate::source::Span;
use crate::yaml;

/// A prediction, type-erased: the plan, or why it is not known yet.
#[derive(Debug)]
pub enum Predicted {
    /// The plan that would be carried out.
    Plan(Planned),
    /// Not known before the pending requirement is applied.
    Unknown(String),
}

/// A module's plan, type-erased, with its changes (the plan explained).
pub struct Planned {
    plan: Box<dyn Any + Send + Sync>,
    /// What the plan changes, for people.
    pub changes: Changes,
}

impl fmt::Debug for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Planned({:?})", self.changes)
    }
}

/// A probed state, type-erased.
pub struct Observed(Box<dyn Any + Send + Sync>, String);

impl Observed {
    /// Hex sha256 of the state's JSON: what a saved plan compares.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.1
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observed({})", &self.1[..12.min(self.1.len())])
    }
}

/// A compiled resource: a module with its typed parameters for one host.
pub trait Resource: Send + Sync {
    /// The module's name.
    fn module(&self) -> &'static str;
    /// See [`Module::claims`].
    fn claims(&self) -> Claims;
    /// See [`Module::inspect`].
    fn inspect(&self) -> Vec<PathQuery>;
    /// See [`Module::probe`].
    fn probe(&self) -> Sh;
    /// See [`Module::parse`].
    ///
    /// # Errors
    /// As [`Module::parse`].
    fn observe(&self, out: &ProbeOutput) -> Result<Observed, Failure>;
    /// See [`Module::plan`]: the typed plan, with its changes.
    fn plan(&self, s: &Observed) -> Planned;
    /// See [`Module::check`].
    ///
    /// # Errors
    /// As [`Module::check`].
    fn check(&self, s: &Observed) -> Result<(), Failure>;
    /// See [`Module::predict`]: the changes predicted while a requirement
    /// is pending.
    fn predict(&self, s: &Observed) -> Predicted;
    /// See [`Module::apply`].
    fn apply(&self, s: &Observed, plan: &Planned) -> Vec<Step>;
    /// See [`Module::verify`].
    fn verify(&self, s: &Observed) -> Changes;
    /// See [`Module::accounts`].
    fn accounts(&self) -> Vec<Account>;
    /// See [`Module::CREATES_ACCOUNTS`].
    fn creates_accounts(&self) -> bool;
    /// See [`Module::unconverged`].
    fn unconverged(&self, s: &Observed, rest: &Changes) -> Option<String>;
    /// See [`Module::refresh`].
    fn refresh(&self, s: &Observed, plan: &Planned) -> Vec<Step>;
    /// See [`Module::reprobe_after_requirements`].
    fn reprobe_after_requirements(&self) -> bool;
    /// See [`Module::starts_units`].
    fn starts_units(&self, s: &Observed, plan: &Planned) -> Vec<String>;
    /// See [`Module::refreshes_unit`].
    fn refreshes_unit(&self) -> Option<String>;
    /// See [`Module::downtime`].
    fn downtime(&self, s: &Observed, plan: &Planned) -> Vec<crate::report::Downtime>;
    /// See [`Module::criterion`].
    fn criterion(&self) -> Option<String>;
    /// Whether compiling it read the host's variables (a template file, an
    /// assertion's context): then each host compiles its own. Otherwise a
    /// resource whose parameters hold no template is compiled once and
    /// shared by every host.
    fn host_specific(&self) -> bool;
}

struct Typed<M: Module> {
    params: M::Params,
    /// Its compiling read the host's variables (see [`Resource::host_specific`]).
    host_specific: bool,
    _m: PhantomData<fn() -> M>,
}

impl<M: Module> Typed<M> {
    fn state<'a>(&self, s: &'a Observed) -> &'a M::State {
        s.0.downcast_ref::<M::State>()
            .expect("state observed by the same module")
    }
}

impl<M: Module> Resource for Typed<M> {
    fn module(&self) -> &'static str {
        M::NAME
    }
    fn claims(&self) -> Claims {
        M::claims(&self.params)
    }
    fn inspect(&self) -> Vec<PathQuery> {
        M::inspect(&self.params)
    }
    fn probe(&self) -> Sh {
        M::probe(&self.params)
    }
    fn observe(&self, out: &ProbeOutput) -> Result<Observed, Failure> {
        let state = M::parse(&self.params, out)?;
        let json = serde_json::to_vec(&state).unwrap_or_default();
        Ok(Observed(Box::new(state), sha256_hex(&json)))
    }
    fn plan(&self, s: &Observed) -> Planned {
        let state = self.state(s);
        let plan = M::plan(&self.params, state);
        Planned {
            changes: M::changes(&self.params, state, &plan),
            plan: Box::new(plan),
        }
    }
    fn check(&self, s: &Observed) -> Result<(), Failure> {
        M::check(&self.params, self.state(s))
    }
    fn predict(&self, s: &Observed) -> Predicted {
        match M::predict(&self.params, self.state(s)) {
            Prediction::Probed => Predicted::Plan(self.plan(s)),
            Prediction::Assume(assumed) => {
                let plan = M::plan(&self.params, &assumed);
                Predicted::Plan(Planned {
                    changes: M::changes(&self.params, &assumed, &plan),
                    plan: Box::new(plan),
                })
            }
            Prediction::Unknown(why) => Predicted::Unknown(why),
        }
    }
    fn apply(&self, s: &Observed, plan: &Planned) -> Vec<Step> {
        plan.plan
            .downcast_ref::<M::Plan>()
            .map(|p| M::apply(&self.params, self.state(s), p))
            .unwrap_or_default()
    }
    fn verify(&self, s: &Observed) -> Changes {
        M::verify(&self.params, self.state(s))
    }
    fn accounts(&self) -> Vec<Account> {
        M::accounts(&self.params)
    }
    fn creates_accounts(&self) -> bool {
        M::CREATES_ACCOUNTS
    }
    fn unconverged(&self, s: &Observed, rest: &Changes) -> Option<String> {
        M::unconverged(&self.params, self.state(s), rest)
    }
    fn refresh(&self, s: &Observed, plan: &Planned) -> Vec<Step> {
        plan.plan
            .downcast_ref::<M::Plan>()
            .map(|p| M::refresh(&self.params, self.state(s), p))
            .unwrap_or_default()
    }
    fn reprobe_after_requirements(&self) -> bool {
        M::reprobe_after_requirements()
    }
    fn starts_units(&self, s: &Observed, plan: &Planned) -> Vec<String> {
        plan.plan
            .downcast_ref::<M::Plan>()
            .map(|p| M::starts_units(&self.params, self.state(s), p))
            .unwrap_or_default()
    }
    fn refreshes_unit(&self) -> Option<String> {
        M::refreshes_unit(&self.params)
    }
    fn downtime(&self, s: &Observed, plan: &Planned) -> Vec<crate::report::Downtime> {
        plan.plan
            .downcast_ref::<M::Plan>()
            .map(|p| M::downtime(&self.params, self.state(s), p))
            .unwrap_or_default()
    }
    fn criterion(&self) -> Option<String> {
        M::criterion(&self.params)
    }
    fn host_specific(&self) -> bool {
        self.host_specific
    }
}

/// A resource of module `M` from parameters made in code, not read from a
/// plan (the engine's own plans: a rollback).
#[must_use]
pub fn resource_of<M: Module>(params: M::Params) -> Arc<dyn Resource> {
    Arc::new(Typed::<M> {
        params,
        host_specific: false,
        _m: PhantomData,
    })
}

/// A module as the registry holds it.
pub trait ModuleEntry: Send + Sync {
    /// See [`Module::NAME`].
    fn name(&self) -> &'static str;
    /// See [`Module::doc`].
    fn doc(&self) -> ModuleDoc;
    /// The parameter keys, as the parser knows them (the same list the
    /// parser checks unknown keys against).
    fn param_names(&self) -> Vec<&'static str>;
    /// Whether a notify can target it.
    fn refreshable(&self) -> bool;
    /// See [`Module::CHECK`].
    fn is_check(&self) -> bool;
    /// Typed parameters from a (templated) node, prepared.
    ///
    /// # Errors
    /// Every problem found, located.
    fn compile(&self, cx: CompileCx<'_>) -> Result<Arc<dyn Resource>, Vec<Diag>>;
}

struct Entry<M>(PhantomData<fn() -> M>);

impl<M: Module> ModuleEntry for Entry<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }
    fn doc(&self) -> ModuleDoc {
        M::doc()
    }
    fn param_names(&self) -> Vec<&'static str> {
        crate::introspect::struct_fields::<M::Params>()
    }
    fn refreshable(&self) -> bool {
        M::REFRESHABLE
    }
    fn is_check(&self) -> bool {
        M::CHECK
    }
    fn compile(&self, cx: CompileCx<'_>) -> Result<Arc<dyn Resource>, Vec<Diag>> {
        let (params, anchor) = (cx.params, cx.anchor);
        // When some parameters are wrong, the others are still checked by
        // `prepare` (a relative path is reported beside a bad mode); only
        // its errors about parameters that were read are kept, since an
        // error about the resource as a whole may come from a left-out one.
        let (p, mut diags, left_out) = yaml::from_node_partial::<M::Params>(params, anchor);
        let Some(mut p) = p else {
            return Err(diags);
        };
        M::prepare(&mut p, &cx);
        let prepared = cx.diags.into_inner();
        if diags.is_empty() {
            diags = prepared;
        } else {
            let kept: Vec<Span> = params
                .as_map()
                .unwrap_or_default()
                .iter()
                .filter(|e| !left_out.contains(&e.key))
                .map(|e| e.value.span)
                .collect();
            diags.extend(prepared.into_iter().filter(|d| {
                d.labels.first().is_some_and(|(at, _)| {
                    kept.iter().any(|k| {
                        k.source == at.source && at.offset >= k.offset && at.offset + at.len <= k.offset + k.len
                    })
                })
            }));
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(Arc::new(Typed::<M> {
            params: p,
            host_specific: cx.host_specific.get(),
            _m: PhantomData,
        }))
    }
}

/// Every module plumb knows, by name.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Box<dyn ModuleEntry>>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register module `M`.
    #[must_use]
    pub fn with<M: Module>(mut self) -> Self {
        self.entries.push(Box::new(Entry::<M>(PhantomData)));
        self
    }

    /// The module named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&dyn ModuleEntry> {
        self.entries.iter().find(|e| e.name() == name).map(AsRef::as_ref)
    }

    /// Every module's name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.name())
    }

    /// Every module.
    pub fn iter(&self) -> impl Iterator<Item = &dyn ModuleEntry> + '_ {
        self.entries.iter().map(AsRef::as_ref)
    }
}
