//! Tier-2 test lab: one qemu (TCG) VM with real block devices, device-mapper
//! and LVM, reachable over SSH on a 127.0.0.1 port. Driven by
//! `tests/vm/vm.sh`; see `tests/vm/README.md`.
//!
//! ```ignore
//! #[path = "support/vm.rs"]
//! mod vm;
//! use vm::Vm;
//!
//! #[test]
//! fn grows_a_logical_volume() {
//!     if !Vm::available() { return; }
//!     let vm = Vm::up();                      // data disks /dev/vdb, /dev/vdc (4G each)
//!     vm.ssh_ok("pvcreate /dev/vdb && vgcreate vg0 /dev/vdb");
//!     vm.resize_disk(0, "8G");                // /dev/vdb grows while running
//!     vm.ssh_ok("pvresize /dev/vdb");
//! } // Drop runs `vm.sh down`, also when the test panics.
//! ```
//!
//! Std only. Requires root, `qemu-system-x86_64`, `qemu-img`, `ssh`, and, until
//! the image is cached (`vm.sh image`), `mmdebstrap`, `busybox-static` and
//! the Debian mirror. Booting takes about 20–30 s in TCG, each new SSH
//! connection about 1 s: [`Vm::ssh`] reuses one connection. Set
//! `PLUMB_VM_REQUIRE=1` to turn "VM unavailable" into a failure instead of a
//! skip. `PLUMB_VM_SH` overrides the script's path.
#![allow(dead_code, unreachable_pub)]

#[path = "script.rs"]
mod script;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A running VM; taken down (by its recorded qemu PID) when dropped.
#[derive(Debug)]
pub struct Vm {
    /// State dir: `ssh_config`, `id_ed25519`, `known_hosts`, `port`, `pid`,
    /// `console.log` (the guest's serial console), the disk overlays.
    pub dir: PathBuf,
    port: u16,
    disks: usize,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Path of `tests/vm/vm.sh`.
pub fn vm_sh() -> PathBuf {
    script::repo_script("PLUMB_VM_SH", "tests/vm/vm.sh")
}

use script::euid;

fn run_vm_sh(args: &[&str]) -> Output {
    script::run(&vm_sh(), "PLUMB_VM_OWNER_PID", args)
}

fn check(out: &Output, what: &str) {
    script::check(out, "vm.sh", what);
}

/// Name of data disk `i` in the guest: 0 → `vdb`, 1 → `vdc`, ...
fn disk_name(i: usize) -> String {
    assert!(i < 24, "data disk index {i} out of range");
    format!("vd{}", (b'b' + i as u8) as char)
}

impl Vm {
    /// Why the VM cannot run here, or `None` if it can (`vm.sh check`: root,
    /// qemu, ssh, and a cached image or the tools to build one).
    pub fn unavailable_reason() -> Option<String> {
        if euid() != Some(0) {
            return Some("the VM lab needs root".into());
        }
        let script = vm_sh();
        if !script.is_file() {
            return Some(format!("{} not found", script.display()));
        }
        let out = run_vm_sh(&["check"]);
        if out.status.success() {
            None
        } else {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Some(if why.is_empty() {
                format!("vm.sh check failed ({})", out.status)
            } else {
                why
            })
        }
    }

    /// Whether a VM can run here. Prints the reason when it cannot, and
    /// panics instead if `PLUMB_VM_REQUIRE` is set (non-empty, not `0`).
    ///
    /// The tier runs on request only (`tests/vm/run-tests.sh` sets
    /// `PLUMB_VM_REQUIRE=1`; `PLUMB_VM=1` runs it without requiring it): a
    /// plain `cargo test` skips it, so CI does not boot every VM twice.
    pub fn available() -> bool {
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
        if !flag("PLUMB_VM_REQUIRE") && !flag("PLUMB_VM") {
            eprintln!("skipping: the VM tier runs with tests/vm/run-tests.sh (or PLUMB_VM=1 cargo test --test vm)");
            return false;
        }
        match Self::unavailable_reason() {
            None => true,
            Some(reason) => {
                if flag("PLUMB_VM_REQUIRE") {
                    panic!("PLUMB_VM_REQUIRE is set, but the VM cannot run: {reason}");
                }
                eprintln!("skipping: {reason}");
                false
            }
        }
    }

    /// Boots a VM with two empty 4 GiB data disks (`/dev/vdb`, `/dev/vdc`).
    /// Builds the image first if it is not cached (a minute or two, once).
    pub fn up() -> Vm {
        Self::up_with(2, "4G")
    }

    /// Boots a VM with `disks` empty data disks of `size` each (`512M`,
    /// `4G`, ...: binary units), named `/dev/vdb`, `/dev/vdc`, ... in the guest.
    pub fn up_with(disks: usize, size: &str) -> Vm {
        Self::boot(disks, size, false)
    }

    /// Boots the full-stack VM (`vm.sh up --stack`): systemd as PID 1,
    /// Docker, containerd, and a registry at `https://harbor.vm.test` (basic
    /// auth; its CA in the guest's `/etc/plumb-vm/ca.crt`, the account in
    /// `/etc/plumb-vm/registry.env`), with `disks` empty data disks of `size`.
    /// Builds its image first if it is not cached (about 3 minutes, once).
    pub fn up_stack(disks: usize, size: &str) -> Vm {
        Self::boot(disks, size, true)
    }

    /// Boots once more when the guest never let SSH in (vm.sh has torn it
    /// down): on this 2-CPU machine, with qemu's TCG under load, a guest
    /// kernel once hung in its own boot for 261 s (a soft lockup in
    /// `cryptomgr_test`), before plumb ran at all. Any other failure, and a
    /// second hang, fails the test.
    fn boot(disks: usize, size: &str, stack: bool) -> Vm {
        match Self::boot_once(disks, size, stack) {
            Ok(vm) => vm,
            Err(out) if String::from_utf8_lossy(&out.stderr).contains("vm.sh: error: no SSH login") => {
                eprintln!(
                    "vm.sh up: the guest never let SSH in; booting once more. Its output:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Self::boot_once(disks, size, stack).unwrap_or_else(|out| {
                    check(&out, "up");
                    unreachable!("check panics on a failed run")
                })
            }
            Err(out) => {
                check(&out, "up");
                unreachable!("check panics on a failed run")
            }
        }
    }

    fn boot_once(disks: usize, size: &str, stack: bool) -> Result<Vm, Output> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "plumb-vm-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let dir_s = dir.to_str().expect("temp dir is not UTF-8").to_owned();
        let n_s = disks.to_string();
        let mut args = vec!["up", &dir_s, "--disks", &n_s, "--disk-size", size];
        if stack {
            args.push("--stack");
        }
        let out = run_vm_sh(&args);
        if !out.status.success() {
            return Err(out); // vm.sh has already torn itself down
        }
        let port = std::fs::read_to_string(dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("vm.sh up wrote no port in {}", dir.display()));
        Ok(Vm { dir, port, disks })
    }

    /// Client config for `ssh -F`: `Host vm` (127.0.0.1, the VM's port),
    /// `User root`, the key, known_hosts, `StrictHostKeyChecking yes`,
    /// `BatchMode yes`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// The host-side port forwarded to the guest's sshd (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`: where the VM's SSH port is.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Client private key, authorized for root, deploy (passwordless sudo)
    /// and nosudo in the guest.
    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// known_hosts with the VM's host key for `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Number of data disks.
    pub fn disk_count(&self) -> usize {
        self.disks
    }

    /// Guest device of data disk `i`: 0 → `/dev/vdb`, 1 → `/dev/vdc`, ...
    /// (also `/dev/disk/by-id/virtio-plumb-data{i}`).
    pub fn disk(&self, i: usize) -> String {
        assert!(i < self.disks, "the VM has {} data disks", self.disks);
        format!("/dev/{}", disk_name(i))
    }

    /// The guest's serial console so far (kernel log, init, sshd's log).
    pub fn console_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("console.log")).unwrap_or_default()).into_owned()
    }

    fn ssh_command(&self, user: &str, shared: bool) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(self.ssh_config());
        if shared {
            let cp = std::fs::read_to_string(self.dir.join("control_path")).expect("vm.sh up wrote no control_path");
            c.args(["-o", "ControlMaster=auto"])
                .arg("-o")
                .arg(format!("ControlPath={}", cp.trim()))
                .args(["-o", "ControlPersist=600"]);
        }
        c.args(["-l", user, "vm"]).stdin(Stdio::null());
        c
    }

    /// Runs `cmd` (a shell command line) as root over one shared SSH
    /// connection (ControlMaster; about 0.1 s per command instead of about
    /// 1 s for a new connection in TCG).
    pub fn ssh(&self, cmd: &str) -> Output {
        self.ssh_as("root", cmd)
    }

    /// [`Vm::ssh`] as `user` (root, deploy, nosudo).
    pub fn ssh_as(&self, user: &str, cmd: &str) -> Output {
        self.ssh_command(user, true).arg(cmd).output().expect("cannot run ssh")
    }

    /// Runs `cmd` over a new SSH connection of its own.
    pub fn ssh_fresh(&self, cmd: &str) -> Output {
        self.ssh_command("root", false)
            .arg(cmd)
            .output()
            .expect("cannot run ssh")
    }

    /// Runs `cmd` as root; panics (with its stderr) unless it succeeds.
    /// Returns its stdout.
    pub fn ssh_ok(&self, cmd: &str) -> String {
        let out = self.ssh(cmd);
        if !out.status.success() {
            panic!(
                "`{cmd}` failed in the VM ({}):\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Grows data disk `i` (0 = `/dev/vdb`) to `size` (`8G`, binary units)
    /// while the VM runs, and waits until the guest sees the new size, so
    /// `pvresize` / `resize2fs` can follow at once.
    pub fn resize_disk(&self, i: usize, size: &str) {
        assert!(i < self.disks, "the VM has {} data disks", self.disks);
        let dir = self.dir.to_str().expect("UTF-8 dir");
        let idx = i.to_string();
        check(&run_vm_sh(&["resize-disk", dir, &idx, size]), "resize-disk");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let out = run_vm_sh(&["down", &dir]);
        if !out.status.success() {
            eprintln!("vm.sh down {dir} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if std::thread::panicking() {
            eprintln!("VM state (console.log) kept in {dir}");
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
