//! The `local` test target: everything that needs no lab, no loop device
//! and no VM. Each module runs the plumb binary on this machine (the local
//! connection, real files in temporary folders) or reads the repository:
//! the command line, plan diagnostics pinned by snapshots (in
//! `tests/local/snapshots`, named `local__MODULE__NAME.snap`), the docs, the
//! shipped plans, every module's lifecycle, saved plans, review output.
//!
//! One target, so that the test code links once (`just` does the same);
//! `cargo test --test local` runs it all, `cargo test --test local cli::`
//! one area. Lab tests are in `tests/lab`, VM tests in `tests/vm`, the
//! property tests in `tests/props.rs` (see there why each is apart).
//!
//! Tests here share one process: none may change the environment, the
//! current folder or other process-wide state (each run of plumb is a child
//! process with its own environment, see `common::Plumb`).

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod config_modules;
mod diagnostics;
mod docs;
mod facts;
mod modules;
mod plans;
mod review;
mod saved_plans;
mod storage_diagnostics;
mod verification;
