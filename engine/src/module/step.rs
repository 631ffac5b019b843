//! What apply does: [`Step`]s, each a [`Script`] to run or a [`FileWrite`]
//! with its [`Payload`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::shell::Sh;

/// Bytes to send to a host: held in memory, or streamed from a local file.
#[derive(Clone, Debug)]
pub enum Content {
    /// In memory.
    Bytes(Arc<[u8]>),
    /// A file on the workstation, streamed when sent.
    File(PathBuf),
}

/// Content with its size and sha256, computed on the workstation.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The bytes.
    pub content: Content,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

impl Payload {
    /// A payload of bytes in memory.
    #[must_use]
    pub fn bytes(b: impl Into<Arc<[u8]>>) -> Self {
        let b: Arc<[u8]> = b.into();
        Self {
            sha256: sha256_hex(&b),
            size: b.len() as u64,
            content: Content::Bytes(b),
        }
    }

    /// A payload read from a local file (hashed now, streamed later).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        Ok(Self {
            content: Content::File(path.to_path_buf()),
            sha256: hex::encode(h.finalize()),
            size,
        })
    }

    /// The bytes, when small enough to hold (diffs of text).
    #[must_use]
    pub fn read_small(&self, limit: u64) -> Option<Vec<u8>> {
        if self.size > limit {
            return None;
        }
        match &self.content {
            Content::Bytes(b) => Some(b.to_vec()),
            Content::File(p) => std::fs::read(p).ok(),
        }
    }
}

/// Shell defining `plumb_downtime SINCE UNIT…`, for a step that takes
/// units down: for each unit, a `plumb-downtime=UNIT SECONDS` line on
/// stdout, SECONDS from `SINCE` (a `date +%s.%N` taken at the stop) until
/// now. The engine reads those lines into the report's measured downtime.
#[must_use]
pub fn downtime_fn() -> Sh {
    Sh::raw_start(
        "plumb_downtime() {\n  pd_since=$1; shift\n  pd_now=$(date +%s.%N)\n  for pd_unit in \"$@\"; do\n    \
         echo \"plumb-downtime=$pd_unit $(awk -v a=\"$pd_since\" -v b=\"$pd_now\" 'BEGIN { printf \"%.1f\", b - a }')\"\n  \
         done\n}\n",
    )
}

/// Hex sha256 of `data`.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A script to run on the host, with optional standard input.
#[derive(Clone, Debug)]
pub struct Script {
    /// What to show in reports and errors (`mkdir /srv/app`).
    pub label: String,
    /// The shell text.
    pub sh: Sh,
    /// Sent on standard input.
    pub stdin: Option<Payload>,
}

/// A file to be written atomically and verified: the engine streams it into a
/// temp file beside the target, checks its sha256 on the host, applies
/// metadata, runs the validate command, keeps a backup, fsyncs and renames.
#[derive(Clone, Debug)]
pub struct FileWrite {
    /// Absolute target path.
    pub path: String,
    /// What to write.
    pub payload: Payload,
    /// Octal permission bits to set (`None`: 0644 for a new file, else keep).
    pub mode: Option<u32>,
    /// Owner to set.
    pub owner: Option<String>,
    /// Group to set.
    pub group: Option<String>,
    /// A command with `%s` for the staged file; the old file stays if it fails.
    pub validate: Option<String>,
    /// Keep a copy of the replaced file.
    pub backup: bool,
}

/// One thing to do to converge a resource.
#[derive(Clone, Debug)]
pub enum Step {
    /// Run a script; non-zero exit fails the resource.
    Run(Script),
    /// Write a file (atomic, verified).
    Write(FileWrite),
}

impl Step {
    /// A script to run, labelled `label` in reports and errors.
    #[must_use]
    pub fn run(label: impl Into<String>, sh: Sh) -> Self {
        Step::Run(Script {
            label: label.into(),
            sh,
            stdin: None,
        })
    }

    /// What reports and errors call it (`mkdir /srv/app`, `write /etc/motd`).
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Step::Run(s) => s.label.clone(),
            Step::Write(w) => format!("write {}", w.path),
        }
    }
}
