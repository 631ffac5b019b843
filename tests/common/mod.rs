//! A small builder for running the `plumb` binary in tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a run of `plumb` gave.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The outcome of a spawned `plumb` that has finished.
    pub fn from_output(out: &std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stdout as JSON (for `--format json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// The status of resource `id` on the first host.
    pub fn status_of(&self, id: &str) -> String {
        let j = self.json();
        for r in j["hosts"][0]["resources"].as_array().expect("resources") {
            if r["id"] == id {
                return r["status"].as_str().unwrap_or_default().to_string();
            }
        }
        panic!("no resource `{id}` in report:\n{}", self.stdout)
    }

    pub fn summary(&self, key: &str) -> u64 {
        self.json()["summary"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary.{key} in {}", self.stdout))
    }
}

/// `plumb` with arguments, run from the repository root.
/// The JSON report's resource `id` on its first host.
pub fn resource(o: &Outcome, id: &str) -> serde_json::Value {
    o.json()["hosts"][0]["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources:\n{}\n{}", o.stdout, o.stderr))
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no `{id}` in {}", o.stdout))
}

/// Assert the exit code, showing both outputs when it is another.
pub fn expect(o: &Outcome, code: i32, what: &str) {
    assert_eq!(o.code, code, "{what}\nstdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
}

pub struct Plumb {
    cmd: Command,
}

impl Plumb {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumb"));
        cmd.current_dir(repo())
            .env("NO_COLOR", "1")
            // Run records go to a state folder of the test process, not the
            // user's (a test that cares sets its own).
            .env(
                "XDG_STATE_HOME",
                std::env::temp_dir().join(format!("plumb-test-state-{}", std::process::id())),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Self { cmd }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    /// `plumb CMD PLAN -i INVENTORY --ssh-config CONFIG --format FORMAT`,
    /// with `--yes` for `apply`: a run against lab or VM hosts.
    pub fn over_ssh(cmd: &str, plan: &Path, inventory: &Path, ssh_config: &Path, format: &str) -> Self {
        let p = Self::new()
            .arg(cmd)
            .arg(plan)
            .arg("-i")
            .arg(inventory)
            .arg("--ssh-config")
            .arg(ssh_config)
            .args(["--format", format]);
        if cmd == "apply" {
            p.arg("--yes")
        } else {
            p
        }
    }

    /// `--var V` for each of `vars`.
    pub fn vars<S: AsRef<std::ffi::OsStr>>(mut self, vars: &[S]) -> Self {
        for v in vars {
            self.cmd.arg("--var").arg(v);
        }
        self
    }

    /// Run from `dir` instead of the repository root.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn run(mut self) -> Outcome {
        let out = self.cmd.output().expect("run plumb");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plumb")
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary folder holding a plan, with the `root` variable pointing at a
/// fresh target folder inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("plumb-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The target root for plans (`{{ root }}`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Write `plan.yaml` (and return its path).
    pub fn plan(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("plan.yaml");
        std::fs::write(&p, text).expect("write plan");
        p
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `plumb CMD plan.yaml --var root=… --format json` plus `extra`.
    pub fn run(&self, cmd: &str, extra: &[&str]) -> Outcome {
        let root = self.root();
        let mut p = Plumb::new()
            .arg(cmd)
            .arg(self.dir.path().join("plan.yaml"))
            .arg("--var")
            .arg(format!("root={}", root.display()))
            .args(["--format", "json"]);
        if cmd == "apply" {
            p = p.arg("--yes");
        }
        p.args(extra).run()
    }
}
