//! Real block devices and mounts for the storage tests on this machine:
//! loop devices backed by sparse files (always detached again, by the
//! device each test made), and a private mount namespace in which `plumb`
//! runs, so that no mount ever leaks to the machine.
//!
//! The namespace is held by a `sleep` started with `unshare --mount
//! --propagation private`; `plumb` runs inside it through `nsenter`, and the
//! test reads what is mounted there through `/proc/PID/root`, which walks
//! paths in that namespace. Dropping [`MountNs`] kills the holder (by its
//! PID), which tears its mounts down.
//!
//! Needs root, `losetup`, `unshare`, `nsenter` and `mkfs.ext4`. Without them
//! the tests skip, or fail when `PLUMB_LAB_REQUIRE` is set (CI sets it).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::{Digest, Sha256};

/// Why the storage tests cannot run here, if they cannot.
fn unavailable_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("the storage tests need root (loop devices, mounts)".into());
    }
    for tool in ["losetup", "unshare", "nsenter", "mkfs.ext4", "findmnt", "blkid"] {
        if !has(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop device support (/dev/loop-control)".into());
    }
    None
}

/// Whether `tool` is on the PATH.
pub fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether every test must run rather than skip: under CI (`CI=true`) or
/// when `PLUMB_LAB_REQUIRE` is set (non-empty, not `0`).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PLUMB_LAB_REQUIRE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skip (part of) a test for `reason`, printed; under CI this panics
/// instead, so that nothing is skipped there.
pub fn skip(reason: &str) {
    assert!(
        !required(),
        "CI=true or PLUMB_LAB_REQUIRE is set, but this cannot run here: {reason}"
    );
    eprintln!("skipping: {reason}");
}

/// Whether the storage tests can run (prints why they skip otherwise;
/// panics under CI, see [`required`]).
pub fn available() -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) => {
            skip(&format!("the storage tests cannot run: {reason}"));
            false
        }
    }
}

/// Run a command, panicking with its output when it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse file; detached (this device only) on drop.
#[derive(Debug)]
pub struct LoopDev {
    pub dev: String,
    pub image: PathBuf,
}

impl LoopDev {
    /// A new loop device of `size` (`64M`, `1G`) backed by a file in `dir`.
    pub fn new(dir: &Path, name: &str, size: &str) -> LoopDev {
        let image = dir.join(format!("{name}.img"));
        sh(&format!("truncate -s {size} '{}'", image.display()));
        let dev = sh(&format!("losetup -f --show '{}'", image.display()))
            .trim()
            .to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup gave `{dev}`");
        LoopDev { dev, image }
    }

    /// Make the device larger (the file, then the loop device's size).
    pub fn grow(&self, size: &str) {
        sh(&format!(
            "truncate -s {size} '{}' && losetup -c {}",
            self.image.display(),
            self.dev
        ));
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // A device still mounted in a namespace being torn down is detached
        // when it is released (losetup -d sets autoclear on a busy device).
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A test's volume group (name) on loop devices (their paths): removed, and
/// the devices' PV labels cleared, when this is dropped, which must be
/// before the loop devices go.
pub struct VgGuard(pub String, pub Vec<String>);

impl Drop for VgGuard {
    fn drop(&mut self) {
        // `pvremove -ff` also clears a PV of a group that lost another PV.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "export LVM_SUPPRESS_FD_WARNINGS=1; vgremove -q -f {} >/dev/null 2>&1; pvremove -q -ff -y {} >/dev/null 2>&1",
                self.0,
                self.1.join(" ")
            ))
            .status();
    }
}

/// A private mount namespace, alive while this value is.
#[derive(Debug)]
pub struct MountNs {
    holder: Child,
}

impl MountNs {
    pub fn new() -> MountNs {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "86400"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start unshare");
        let ns = MountNs { holder };
        // Wait until the holder runs in its own namespace: for the condition,
        // not a fixed time (a loaded machine can take seconds to exec).
        let own = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid())).is_ok_and(|n| n != own)
                && std::fs::read_to_string(format!("/proc/{}/comm", ns.pid())).is_ok_and(|c| c.trim() == "sleep")
            {
                return ns;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the namespace holder did not start");
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid().to_string()).arg("-m").arg("--").arg(program);
        c
    }

    /// Run a shell script inside the namespace; panics when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self.command("sh").arg("-c").arg(script).output().expect("nsenter");
        assert!(
            out.status.success(),
            "`{script}` failed in the namespace: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `script` succeeds inside the namespace.
    pub fn ok(&self, script: &str) -> bool {
        self.command("sh")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `path` as seen from inside the namespace (through `/proc/PID/root`).
    pub fn view(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }

    /// What is mounted at `path` in the namespace: `SOURCE OPTIONS`, or `None`.
    pub fn mounted(&self, path: &Path) -> Option<String> {
        let out = self
            .command("findmnt")
            .args(["-n", "-o", "SOURCE,OPTIONS", "-M"])
            .arg(path)
            .output()
            .expect("findmnt");
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Everything a migration must keep, read file by file from `root`.
pub fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut first_of_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "lost+found" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push((rel, p, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, p, m) in all {
        let kind = if m.is_dir() {
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(&p).unwrap().display())
        } else {
            let data = fs::read(&p).unwrap();
            let first = first_of_inode.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            format!(
                "file sha256={} size={} mtime={} links-with={first}",
                hex::encode(Sha256::digest(&data)),
                m.len(),
                m.mtime()
            )
        };
        let xattrs = Command::new("getfattr")
            .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", "--"])
            .arg(&p)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.starts_with("# file:") && !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.insert(
            rel,
            format!(
                "{kind} mode={:o} owner={}:{} xattrs=[{xattrs}]",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
    }
    out
}

/// Shell that makes, in `root`, a tree with everything a naive copy gets
/// wrong: hard links, relative and dangling symlinks, a sparse file, random
/// data, setuid and setgid bits, odd names (space, newline, quotes,
/// unicode, a leading dash), another owner, an old mtime, xattrs and ACLs
/// (default ACLs too).
pub fn tricky_tree_script(root: &Path) -> String {
    format!(
        "mkdir -p '{0}/sub/deeper' && cd '{0}' && printf 'hello\\n' > a && ln a sub/hard-link-to-a \
         && ln -s ../a sub/rel-link && ln -s /nonexistent/target dangling \
         && truncate -s 16M sparse && printf end >> sparse \
         && head -c 300000 /dev/urandom > random.bin \
         && printf s > setuid && chmod 4755 setuid \
         && printf g > setgid-dir-file && chmod 2750 setgid-dir-file && chmod 2775 sub/deeper \
         && printf x > 'with space' && printf y > \"$(printf 'new\\nline')\" && printf z > ünïcødé && printf w > -dash \
         && printf q > \"it's \\\"quoted\\\"\" && printf o > owned && chown 4321:8765 owned \
         && touch -d '2001-02-03 04:05:06' random.bin \
         && setfattr -n user.plumb -v kept a && setfattr -n user.bin -v 0x00ff00 random.bin \
         && setfacl -m u:nobody:rx sub && setfacl -d -m g:nogroup:r sub",
        root.display()
    )
}
