//! The `vm` test target, tier 2: each test boots its own qemu VM
//! (`tests/vm/vm.sh`, about 20-30 s in TCG) and drives it over SSH: the
//! storage modules on real LVM and the full TwisterLab stack.
//!
//! Apart because it is slow and takes both cores: in a plain `cargo test`
//! every test here returns at once (it runs only with `PLUMB_VM=1` or
//! `PLUMB_VM_REQUIRE=1`); `tests/vm/run-tests.sh` runs this target with
//! `PLUMB_VM_REQUIRE=1 ... -- --test-threads=2 --nocapture`.
//!
//! `selftest.rs` in this folder is not part of it: it is compiled on its own
//! with `rustc` (see `tests/vm/README.md`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

/// Returns from the test unless the VM tier was asked for (see
/// `Vm::available`).
macro_rules! need_vm {
    () => {
        if !$crate::support::vm::Vm::available() {
            return;
        }
    };
}

mod stack_vm;
mod storage_vm;
