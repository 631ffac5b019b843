//! plumb's engine: plans and inventories loaded with their locations
//! ([`plan`], [`inventory`], [`yaml`]), templating ([`template`]), the
//! dependency graph ([`graph`]), the module contract ([`module`]), transports
//! ([`transport`]), the executor ([`run`]) and the renderers ([`report`]).
//!
//! The engine knows no particular module: modules implement [`module::Module`]
//! and are handed to the engine in a [`module::Registry`].

pub mod diag;
pub mod source;
pub mod yaml;
pub mod introspect;
pub mod module;
pub mod shell;
pub mod inventory;
pub mod plan;
pub mod template;
pub mod compile;
pub mod transport;
pub mod write;
pub mod report;
pub mod run;
pub mod saved;
