//! The `lab` test target: the tests that need root and drive real things
//! on this machine: the tier-1 SSH lab (hosts in network namespaces, with
//! sshd or systemd as PID 1, see `tests/lab/README.md`), loop devices,
//! mount namespaces and LVM. Without root (or the lab's programs) each test
//! prints why and passes; with `PLUMB_LAB_REQUIRE=1` or `CI=true` it fails
//! instead.
//!
//! Apart from `local` so that `cargo test --test local` stays quick and
//! needs nothing, and so that a machine without the lab can still run the
//! rest; all lab areas in one target so that they link once.
//!
//! Tests here share one process, two or more at a time across areas: every
//! lab gets its own state folder and addresses (`Lab::up`, torn down when
//! dropped, also on a panic), every loop device, volume group and temporary
//! folder carries a name of its own, and nothing changes the environment or
//! the current folder.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

/// Returns from the test, saying why, when the lab cannot run here (and
/// panics instead under `PLUMB_LAB_REQUIRE=1` or `CI=true`).
macro_rules! need_lab {
    () => {
        if !$crate::support::lab::Lab::available() {
            eprintln!(
                "skipped: {}",
                $crate::support::lab::Lab::unavailable_reason().unwrap_or_default()
            );
            return;
        }
    };
}

mod accounts;
mod faults;
mod journal;
mod lab_selftest;
mod rollback;
mod secrets;
mod services;
mod ssh;
mod storage;
mod storage_lab;
