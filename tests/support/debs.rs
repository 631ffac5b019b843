//! Tiny Debian packages and a flat apt repository, built locally with
//! `dpkg-deb --build`, for `package` tests that must not need the network.
//!
//! ```ignore
//! #[path = "support/debs.rs"]
//! mod debs;
//! let repo = debs::Repo::build(dir, &[debs::Deb::new("plumb-hello", "1.0")]);
//! repo.install_on(&lab, &node);   // copies it to /srv/plumb-repo, adds an apt source
//! ```
#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A package to build: a name, a version, what it depends on, one file.
#[derive(Debug, Clone)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub depends: Vec<String>,
}

impl Deb {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            depends: Vec::new(),
        }
    }

    pub fn depends(mut self, on: &str) -> Self {
        self.depends.push(on.into());
        self
    }
}

/// A flat repository (`deb [trusted=yes] file:/srv/plumb-repo ./`).
#[derive(Debug)]
pub struct Repo {
    pub dir: PathBuf,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_string()
}

impl Repo {
    /// Build every package into `dir/repo`, with `Packages` and `Release`.
    pub fn build(dir: &Path, debs: &[Deb]) -> Repo {
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let mut packages = String::new();
        for d in debs {
            let root = dir.join(format!("build-{}", d.name));
            std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
            std::fs::create_dir_all(root.join("usr/share").join(&d.name)).unwrap();
            std::fs::write(
                root.join("usr/share").join(&d.name).join("hello"),
                format!("{} {}\n", d.name, d.version),
            )
            .unwrap();
            let mut control = format!(
                "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: plumb tests <tests@plumb.invalid>\n\
                 Section: misc\nPriority: optional\n",
                d.name, d.version
            );
            if !d.depends.is_empty() {
                let _ = writeln!(control, "Depends: {}", d.depends.join(", "));
            }
            control.push_str("Description: a package built by plumb's tests\n");
            std::fs::write(root.join("DEBIAN/control"), &control).unwrap();
            let file = format!("{}_{}_all.deb", d.name, d.version);
            run(Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(&root)
                .arg(repo.join(&file)));
            let size = std::fs::metadata(repo.join(&file)).unwrap().len();
            let _ = write!(
                packages,
                "{control}Filename: ./{file}\nSize: {size}\nSHA256: {}\n\n",
                sha256(&repo.join(&file))
            );
        }
        std::fs::write(repo.join("Packages"), &packages).unwrap();
        let psize = packages.len();
        let release = format!(
            "Origin: plumb-tests\nLabel: plumb-tests\nSuite: ./\nDate: Thu, 01 Jan 2026 00:00:00 UTC\nSHA256:\n {} {psize} Packages\n",
            sha256(&repo.join("Packages"))
        );
        std::fs::write(repo.join("Release"), release).unwrap();
        Repo { dir: repo }
    }

    /// Copy the repository to `/srv/plumb-repo` on a lab node and make it
    /// the node's apt source (`ssh` runs `sh -c CMD` there).
    pub fn install_on(&self, ssh: impl Fn(&str, Option<&[u8]>) -> std::process::Output) {
        let tar = run(Command::new("tar")
            .arg("-C")
            .arg(&self.dir)
            .args(["-cf", "-", "."])
            .stdin(Stdio::null()));
        let out = ssh(
            "mkdir -p /srv/plumb-repo && tar -C /srv/plumb-repo -xf - && \
             echo 'deb [trusted=yes] file:/srv/plumb-repo ./' > /etc/apt/sources.list.d/plumb-tests.list",
            Some(&tar.stdout),
        );
        assert!(
            out.status.success(),
            "installing the test repository: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
