//! Tier-1 multi-host SSH test lab for integration tests: N isolated hosts
//! (network namespace + sshd as PID 1 on an overlay root), driven by
//! `tests/lab/lab.sh`. See `tests/lab/README.md`.
//!
//! ```ignore
//! #[path = "support/lab.rs"]
//! mod lab;
//! use lab::Lab;
//!
//! #[test]
//! fn converges_three_hosts() {
//!     if !Lab::available() { return; }
//!     let lab = Lab::up(3);
//!     let out = lab.ssh(&lab.nodes[0], "hostname");
//!     assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node1");
//! } // Drop runs `lab.sh down`, also when the test panics.
//! ```
//!
//! Std only. Requires root, `ip`, `sshd`, `ssh`, `ssh-keygen`, `unshare`.
//! Set `PLUMB_LAB_REQUIRE=1` (CI does) to turn "lab unavailable" into a
//! failure instead of a skip. `PLUMB_LAB_SH` overrides the script's path.
#![allow(dead_code, unreachable_pub)]

#[path = "script.rs"]
mod script;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One lab host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `node1`, `node2`, ... (also the host's hostname).
    pub name: String,
    /// `10.77.0.K`, reachable from the test process over SSH port 22.
    pub ip: String,
}

/// A running lab; torn down (by recorded PIDs) when dropped.
#[derive(Debug)]
pub struct Lab {
    /// State dir: `ssh_config`, `id_ed25519`, `known_hosts`, `nodes`, `nodeK.log`.
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Path of `tests/lab/lab.sh`.
pub fn lab_sh() -> PathBuf {
    script::repo_script("PLUMB_LAB_SH", "tests/lab/lab.sh")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

use script::euid;

fn run_lab_sh(args: &[&str]) -> Output {
    script::run(&lab_sh(), "PLUMB_LAB_OWNER_PID", args)
}

fn check(out: &Output, what: &str) {
    script::check(out, "lab.sh", what);
}

impl Lab {
    /// Why the lab cannot run here, or `None` if it can.
    pub fn unavailable_reason() -> Option<String> {
        if euid() != Some(0) {
            return Some("the SSH lab needs root (network namespaces, mounts)".into());
        }
        for prog in ["ip", "sshd", "ssh", "ssh-keygen", "unshare", "setsid", "flock"] {
            if find_program(prog).is_none() {
                return Some(format!(
                    "the SSH lab needs `{prog}` (apt-get install openssh-server openssh-client iproute2 util-linux)"
                ));
            }
        }
        if !lab_sh().is_file() {
            return Some(format!("{} not found", lab_sh().display()));
        }
        None
    }

    /// Whether the lab can run here. Prints the reason when it cannot, and
    /// panics instead under CI: `CI=true`, or `PLUMB_LAB_REQUIRE` set
    /// (non-empty, not `0`).
    pub fn available() -> bool {
        match Self::unavailable_reason() {
            None => true,
            Some(reason) => {
                let required = std::env::var("CI").is_ok_and(|v| v == "true")
                    || std::env::var("PLUMB_LAB_REQUIRE").is_ok_and(|v| !v.is_empty() && v != "0");
                if required {
                    panic!("CI=true or PLUMB_LAB_REQUIRE is set, but the lab cannot run: {reason}");
                }
                eprintln!("skipping: {reason}");
                false
            }
        }
    }

    /// Brings up `n` nodes with the default `MaxSessions` (10).
    pub fn up(n: usize) -> Lab {
        Self::up_with(n, None)
    }

    /// Brings up `n` nodes; `max_sessions` sets sshd's `MaxSessions`.
    pub fn up_with(n: usize, max_sessions: Option<u32>) -> Lab {
        Self::start(n, max_sessions, false)
    }

    /// Brings up `n` tier-1b nodes: systemd is PID 1 and sshd runs as
    /// `ssh.service`, so units can be started, enabled and restarted for
    /// real. Their apt sees no Debian mirror, only sources a test adds.
    /// About 1 s per node; the first call builds the systemd root (about 2
    /// minutes, needs the Debian mirror).
    pub fn up_systemd(n: usize) -> Lab {
        Self::start(n, None, true)
    }

    fn start(n: usize, max_sessions: Option<u32>, systemd: bool) -> Lab {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "plumb-lab-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let dir_s = dir.to_str().expect("temp dir is not UTF-8").to_owned();
        let n_s = n.to_string();
        let ms_s = max_sessions.map(|m| m.to_string());
        let mut args = vec!["up", dir_s.as_str(), n_s.as_str()];
        if let Some(m) = &ms_s {
            args.extend(["--max-sessions", m.as_str()]);
        }
        if systemd {
            args.push("--systemd");
        }
        let out = run_lab_sh(&args);
        check(&out, "up"); // on failure lab.sh has already torn itself down
        let nodes = std::fs::read_to_string(dir.join("nodes"))
            .expect("lab.sh up wrote no nodes file")
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some(Node {
                    name: f.next()?.to_owned(),
                    ip: f.next()?.to_owned(),
                })
            })
            .collect::<Vec<_>>();
        assert_eq!(nodes.len(), n, "nodes file of {}", dir.display());
        Lab { dir, nodes }
    }

    /// A plumb inventory naming every node by its address, each with the
    /// inventory lines `extra` (indented under the host), written to
    /// `dir/inventory.yaml`.
    pub fn inventory(&self, dir: &Path, extra: &str) -> PathBuf {
        let mut inv = String::from("hosts:\n");
        for n in &self.nodes {
            inv.push_str(&format!("  {}:\n    address: {}\n{extra}", n.name, n.ip));
        }
        let p = dir.join("inventory.yaml");
        std::fs::write(&p, inv).expect("write inventory");
        p
    }

    /// A job for the lab: a fresh folder holding `plan.yaml` (`plan`) and an
    /// `inventory.yaml` of every node with the host lines `extra` (see
    /// [`Lab::inventory`]). The folder lives as long as the returned
    /// `TempDir`.
    pub fn job(&self, plan: impl AsRef<[u8]>, extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, plan).expect("write plan");
        let inventory = self.inventory(dir.path(), extra);
        (dir, path, inventory)
    }

    /// Client config for `ssh -F`: key, known_hosts, `StrictHostKeyChecking yes`,
    /// `BatchMode yes`, `User root`, and `Host nodeK` aliases.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// Client private key, authorized for root, deploy and nosudo on every node.
    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// known_hosts with every node's host key, keyed by IP.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The node called `name` (`node1`, ...).
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in lab {}", self.dir.display()))
    }

    fn lab_cmd(&self, verb: &str, name: &str) {
        let dir = self.dir.to_str().expect("UTF-8 dir");
        check(&run_lab_sh(&[verb, dir, name]), verb);
    }

    /// Takes the node's link down (connections time out / fail).
    pub fn cut(&self, name: &str) {
        self.lab_cmd("cut", name);
    }

    /// Undoes [`Lab::cut`].
    pub fn heal(&self, name: &str) {
        self.lab_cmd("heal", name);
    }

    /// SIGKILLs the node's sshd (its PID 1): the whole node dies, the address
    /// stays, so connections are refused.
    pub fn kill_sshd(&self, name: &str) {
        self.lab_cmd("kill-sshd", name);
    }

    /// Restarts the node with a new host key (known_hosts keeps the old one,
    /// so ssh refuses). The node's filesystem changes are lost.
    pub fn rekey(&self, name: &str) {
        self.lab_cmd("rekey", name);
    }

    /// `ssh -F ssh_config root@IP CMD`.
    pub fn ssh(&self, node: &Node, cmd: &str) -> Output {
        self.ssh_as("root", node, cmd)
    }

    /// `ssh -F ssh_config USER@IP CMD` (users: root, deploy, nosudo).
    pub fn ssh_as(&self, user: &str, node: &Node, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(format!("{user}@{}", node.ip))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ssh")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let out = run_lab_sh(&["down", &dir]);
        if !out.status.success() {
            eprintln!("lab.sh down {dir} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if std::thread::panicking() {
            eprintln!("lab state (sshd logs) kept in {dir}");
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
