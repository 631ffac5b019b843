//! Helpers of the test targets that drive real things: the SSH lab
//! (`lab`), loop devices and mount namespaces (`storage`), local Debian
//! packages and repositories (`debs`), qemu VMs (`vm`). A target declares
//! `#[path = "../support/mod.rs"] mod support;` and a test module
//! `use crate::support::lab;`. Each file also works on its own behind a
//! `#[path]` attribute (the engine's `ssh_transport` test and
//! `tests/vm/selftest.rs` use them so).
#![allow(dead_code, unreachable_pub)]
// `lab.rs` and `vm.rs` each load `script.rs` as their own module, so that each
// works alone too: here it is loaded twice, which is harmless.
#![allow(clippy::duplicate_mod)]

pub mod debs;
pub mod lab;
pub mod storage;
pub mod vm;
