//! Finding and running the lab's scripts (`tests/lab/lab.sh`,
//! `tests/vm/vm.sh`) from any test target: the root package's, the
//! engine's (whose manifest folder is `engine/`), or a self-test compiled on
//! its own with `rustc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// This process's effective user id.
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Run `script` with `args`, telling it our PID in `$owner_env` (it tears
/// down what it started if this process dies).
pub fn run(script: &Path, owner_env: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script)
        .args(args)
        .env(owner_env, std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

/// Panic with the script's output unless it succeeded.
pub fn check(out: &Output, script: &str, what: &str) {
    if !out.status.success() {
        panic!(
            "{script} {what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The script at `rel` (from the repository root), or `$env` when set.
pub fn repo_script(env: &str, rel: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(d) = option_env!("CARGO_MANIFEST_DIR") {
        starts.push(PathBuf::from(d));
    }
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    // this file is tests/support/script.rs (absolute when included by an absolute #[path])
    let here = Path::new(file!());
    if here.is_absolute() {
        if let Some(root) = here.parent().and_then(Path::parent).and_then(Path::parent) {
            starts.push(root.to_path_buf());
        }
    }
    for start in starts {
        let mut dir: Option<&Path> = Some(&start);
        while let Some(d) = dir {
            let p = d.join(rel);
            if p.is_file() {
                return p;
            }
            dir = d.parent();
        }
    }
    PathBuf::from(rel)
}
