//! Transports run shell scripts on a host and return what they printed.
//!
//! A transport is deliberately small: run one `sh` script with optional
//! standard input (streamed, so large uploads never sit in memory twice), say
//! how many scripts may run at once, and close. Everything else (batching,
//! uploads with verification, `become`) is built by the engine on top of
//! `run`, so every transport gets it for free.

pub mod local;
pub mod reuse;
pub mod ssh;

use std::sync::Arc;

use async_trait::async_trait;

use crate::inventory::{Connection, Host};
use crate::module::{Content, Payload};

/// What a script printed, and how it ended.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit status (`-1` when killed by a signal).
    pub status: i32,
}

impl Output {
    /// The last `lines` lines of stderr, for error messages.
    #[must_use]
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&String::from_utf8_lossy(&self.stderr), lines)
    }
}

/// The last `n` non-empty lines of `text`.
#[must_use]
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why a host could not be reached or a script could not be run.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The host's key is unknown or changed.
    #[error("{0}")]
    HostKey(String),
    /// The connection broke while a script ran.
    #[error("connection lost: {0}")]
    Lost(String),
    /// A script printed more than the transport holds.
    #[error("{0}")]
    TooMuch(String),
    /// Sending standard input failed.
    #[error("cannot send data: {0}")]
    Io(#[from] std::io::Error),
}

/// How far a long step has come, as its script reports it: a
/// `plumb-progress=DONE TOTAL` line on standard output (bytes copied of the
/// bytes to copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Done so far.
    pub done: u64,
    /// Of this many (0: unknown).
    pub total: u64,
}

impl Progress {
    /// The line's prefix.
    pub const PREFIX: &'static [u8] = b"plumb-progress=";

    /// Read a `plumb-progress=DONE TOTAL` line (without its newline).
    #[must_use]
    pub fn parse(line: &[u8]) -> Option<Progress> {
        let rest = std::str::from_utf8(line.strip_prefix(Self::PREFIX)?).ok()?;
        let (done, total) = rest.trim().split_once(' ')?;
        Some(Progress {
            done: done.parse().ok()?,
            total: total.trim().parse().ok()?,
        })
    }
}

/// Receives the progress a running script reports, as it reports it.
pub type Watch<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Runs scripts on one host.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Run `script` with `sh`, feeding `stdin` (or nothing) to it.
    ///
    /// # Errors
    /// The script could not be run or the connection broke; a script that
    /// ran and failed is an `Ok` with a non-zero status.
    async fn run(&self, script: &str, stdin: Option<&Payload>) -> Result<Output, TransportError> {
        self.run_watched(script, stdin, &|_| {}).await
    }

    /// [`Transport::run`], handing each [`Progress`] line the script prints
    /// to `watch` while it runs (the lines are left out of its output).
    ///
    /// # Errors
    /// As [`Transport::run`].
    async fn run_watched(
        &self,
        script: &str,
        stdin: Option<&Payload>,
        watch: Watch<'_>,
    ) -> Result<Output, TransportError>;

    /// How many scripts may run at once on this host.
    fn max_parallel(&self) -> usize {
        1
    }

    /// Release the connection.
    async fn close(&self) {}
}

/// Opens transports for hosts.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Connect to `host`.
    ///
    /// # Errors
    /// The host cannot be reached (the message says why).
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError>;
}

/// The connector for hosts whose connection is `local`; SSH hosts are
/// refused (the SSH connector wraps this one).
#[derive(Debug, Default)]
pub struct LocalOnly;

#[async_trait]
impl Connector for LocalOnly {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        match host.connection {
            Connection::Local => Ok(Arc::new(local::Local)),
            Connection::Ssh => Err(TransportError::Connect(format!(
                "host `{}` needs SSH, which this build cannot use",
                host.name
            ))),
        }
    }
}

/// Copy a payload into an async writer (a child's stdin).
///
/// # Errors
/// Reading the local file or writing failed.
pub async fn send_payload<W: tokio::io::AsyncWrite + Unpin>(p: &Payload, w: &mut W) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match &p.content {
        Content::Bytes(b) => w.write_all(b).await?,
        Content::File(path) => {
            let mut f = tokio::fs::File::open(path).await?;
            tokio::io::copy(&mut f, w).await?;
        }
    }
    w.flush().await?;
    w.shutdown().await
}

/// Send `prefix` (a script's text), then the payload if any, into an async
/// writer (a child's stdin), and close it.
///
/// # Errors
/// Reading the local file or writing failed.
pub async fn send_prefixed<W: tokio::io::AsyncWrite + Unpin>(
    prefix: &[u8],
    payload: Option<&Payload>,
    w: &mut W,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(prefix).await?;
    match payload {
        Some(p) => send_payload(p, w).await,
        None => {
            w.flush().await?;
            w.shutdown().await
        }
    }
}

/// Read `r` to its end into `buf`, failing (with `ErrorKind::FileTooLarge`)
/// as soon as it holds more than `cap` bytes: a host that prints without
/// end (a replaced `stat`, a probe gone wrong) costs bounded memory. With
/// `watch`, each [`Progress`] line is handed to it as soon as it arrives,
/// and left out of `buf`.
///
/// # Errors
/// Reading failed, or the output is longer than `cap`.
pub async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
    what: &str,
    watch: Option<Watch<'_>>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let too_much = |buf: &mut Vec<u8>| {
        buf.clear();
        buf.shrink_to_fit();
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "a script printed more than {} MiB on its {what}; plumb stopped reading it \
                 (a probe that prints without end, or a tool on the host's PATH that is not what it should be)",
                cap / (1024 * 1024)
            ),
        )
    };
    let Some(watch) = watch else {
        let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
        (&mut *r).take(limit).read_to_end(buf).await?;
        return if buf.len() > cap { Err(too_much(buf)) } else { Ok(()) };
    };
    // Where the first line not yet looked at starts.
    let mut scanned = buf.len();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf[scanned..].iter().position(|&b| b == b'\n') {
            match Progress::parse(&buf[scanned..scanned + end]) {
                Some(p) => {
                    watch(p);
                    buf.drain(scanned..=scanned + end);
                }
                None => scanned += end + 1,
            }
        }
        if buf.len() > cap {
            return Err(too_much(buf));
        }
    }
}
