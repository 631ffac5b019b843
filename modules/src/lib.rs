//! plumb's modules, one file each, and the [`registry`] that names them.
//!
//! A module implements [`plumb_engine::module::Module`]: its parameters, its
//! probe (shell text, batched by the engine), how to read the probe, what
//! differs, and the steps that converge it. Adding a module is one file here
//! plus one line in [`registry`].

pub mod assert;
mod blockdev;
pub mod command;
mod config_file;
pub mod containerd_hosts;
pub mod directory;
pub mod docker_daemon;
pub mod file;
pub mod filesystem;
mod fstab;
pub mod k3s_registries;
mod lvm;
pub mod lvm_lv;
pub mod lvm_vg;
mod migrate;
pub mod mount;
pub mod package;
pub mod service;
pub mod size;
mod stat;

use plumb_engine::module::Registry;

/// `docs/ARCHITECTURE.md`: its example module is compiled and run as a doc
/// test, so the documented contract cannot drift from the real one.
#[cfg(doctest)]
#[doc = include_str!("../../docs/ARCHITECTURE.md")]
pub struct ArchitectureDoc;

/// Every module plumb ships.
#[must_use]
pub fn registry() -> Registry {
    Registry::new()
        .with::<file::File>()
        .with::<directory::Directory>()
        .with::<command::Command>()
        .with::<docker_daemon::DockerDaemon>()
        .with::<service::Service>()
        .with::<package::Package>()
        .with::<k3s_registries::K3sRegistries>()
        .with::<containerd_hosts::ContainerdHosts>()
        .with::<assert::Assert>()
        .with::<mount::Mount>()
        .with::<filesystem::Filesystem>()
        .with::<lvm_vg::VolumeGroup>()
        .with::<lvm_lv::LogicalVolume>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_documented_and_every_documented_parameter_exists() {
        for m in registry().iter() {
            let doc = m.doc();
            let parsed: Vec<&str> = m.param_names();
            let documented: Vec<&str> = doc.params.iter().map(|p| p.name).collect();
            assert_eq!(
                parsed,
                documented,
                "module `{}`: parser keys vs documented keys",
                m.name()
            );
            assert!(!doc.summary.is_empty());
        }
    }
}
