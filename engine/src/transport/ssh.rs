//! The SSH transport: scripts run by `sh` on a remote host, through one
//! OpenSSH ControlMaster per host (the `openssh` crate, native mux).
//!
//! Settings the inventory leaves unset (user, port, identity, ...) come from
//! the user's `~/.ssh/config` (or [`SshOptions::ssh_config`]). Host keys are
//! checked strictly: an unknown key is refused unless
//! [`SshOptions::accept_new_host_keys`], a changed key always is.
//!
//! Every command opens one session on the master; sshd caps sessions per
//! connection (`MaxSessions`, default 10) and fails the ones beyond with
//! misleading errors, so a per-host semaphore keeps commands in flight below
//! the inventory's `max_sessions`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::sync::{RwLock, Semaphore};

use super::{local, read_capped, send_prefixed, tail, Connector, Output, Transport, TransportError, Watch};
use crate::inventory::{Connection, Host};
use crate::module::Payload;
use crate::shell::{quote, stdin_script, STDIN_SCRIPT_ALONE};

/// How the SSH connector connects.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// Accept and record the key of a host not in `known_hosts`
    /// (`StrictHostKeyChecking=accept-new`). A changed key is always refused.
    pub accept_new_host_keys: bool,
    /// `known_hosts` file to use instead of the user's
    /// (`-o UserKnownHostsFile=`).
    pub known_hosts: Option<PathBuf>,
    /// Client configuration to use instead of `~/.ssh/config` (`-F`).
    pub ssh_config: Option<PathBuf>,
    /// TCP connect timeout (whole seconds, at least 1; `ConnectTimeout`). A
    /// broken connection is also detected after about three times this (at
    /// most 45 s) through `ServerAliveInterval`.
    pub connect_timeout: Duration,
    /// Where the control sockets go. Unix socket paths are short (about 100
    /// bytes): keep it short. Default: a fresh directory under `/tmp`.
    pub control_dir: Option<PathBuf>,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            accept_new_host_keys: false,
            known_hosts: None,
            ssh_config: None,
            connect_timeout: Duration::from_secs(10),
            control_dir: None,
        }
    }
}

/// Opens an SSH transport per host (a local one for `connection: local`).
#[derive(Clone, Debug, Default)]
pub struct SshConnector {
    opts: SshOptions,
}

impl SshConnector {
    /// A connector with these options.
    #[must_use]
    pub fn new(opts: SshOptions) -> Self {
        Self { opts }
    }

    /// The options it connects with.
    #[must_use]
    pub fn options(&self) -> &SshOptions {
        &self.opts
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        match host.connection {
            Connection::Local => Ok(Arc::new(local::Local)),
            Connection::Ssh => Ok(Arc::new(SshTransport::connect(host, &self.opts).await?)),
        }
    }
}

/// Scripts over one SSH ControlMaster to one host.
///
/// Call [`Transport::close`] when done: dropping it instead stops the master
/// with a blocking `ssh -O exit`-like request.
#[derive(Debug)]
pub struct SshTransport {
    name: String,
    address: String,
    /// `None` once closed. Runs hold a read guard while their command is in
    /// flight, so `close` (the writer) waits for them.
    session: RwLock<Option<Session>>,
    slots: Semaphore,
    parallel: usize,
    /// Our fresh control directory, if we made it; declared after `session`
    /// so that it is removed after the session's own sub-directory.
    _control_dir: Option<tempfile::TempDir>,
}

/// Longest control directory path that leaves room for what ssh adds
/// (`/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX`, 46 bytes) within the
/// 108-byte `sun_path`.
const MAX_CONTROL_DIR: usize = 60;

/// Scripts with a payload up to this size reach the host line by line
/// ahead of the payload (the shell reads them a byte at a time); longer
/// ones are staged in a remote temp file first.
const MAX_LINE_SCRIPT: usize = 64 * 1024;

/// The most a script may print on standard output (a probe of thousands
/// of files with their diffs stays far below): past it, the run fails
/// instead of holding whatever a broken host sends.
const MAX_STDOUT: usize = 64 * 1024 * 1024;
/// The most a script may print on standard error.
const MAX_STDERR: usize = 4 * 1024 * 1024;

impl SshTransport {
    /// Open the ControlMaster to `host` (`host.connection` is not looked at).
    ///
    /// # Errors
    /// [`TransportError::HostKey`] when the host's key is unknown (and not
    /// accepted) or changed; [`TransportError::Connect`] when the host is
    /// unreachable, refuses, times out or refuses the login.
    pub async fn connect(host: &Host, opts: &SshOptions) -> Result<Self, TransportError> {
        let addr = host.address.as_str();
        if addr.is_empty() || addr.starts_with('-') {
            return Err(TransportError::Connect(format!(
                "{}: invalid address `{addr}`",
                host.name
            )));
        }
        let (control_dir, fresh) = match &opts.control_dir {
            Some(d) => (d.clone(), None),
            None => {
                let d = tempfile::Builder::new()
                    .prefix("plumb-")
                    .tempdir_in("/tmp")
                    .map_err(|e| TransportError::Connect(format!("cannot create a control directory in /tmp: {e}")))?;
                (d.path().to_path_buf(), Some(d))
            }
        };
        if control_dir.as_os_str().len() > MAX_CONTROL_DIR {
            return Err(TransportError::Connect(format!(
                "control directory `{}` is too long for a Unix socket path (at most {MAX_CONTROL_DIR} bytes)",
                control_dir.display()
            )));
        }
        let timeout = opts.connect_timeout.max(Duration::from_secs(1));
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(timeout)
        .server_alive_interval(timeout.min(Duration::from_secs(15)))
        .control_directory(&control_dir)
        // A master left behind by a killed plumb goes away by itself.
        .control_persist(ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(600).expect("non-zero"),
        ));
        if let Some(f) = &opts.ssh_config {
            b.config_file(f);
        }
        if let Some(f) = &opts.known_hosts {
            b.user_known_hosts_file(f);
        }
        if let Some(u) = &host.user {
            b.user(u.clone());
        }
        if let Some(p) = host.port {
            b.port(p);
        }
        if let Some(k) = &host.identity {
            b.keyfile(k);
        }
        // ConnectTimeout covers TCP and the banner; a server that stalls later
        // in the handshake is cut off here.
        let limit = timeout * 2 + Duration::from_secs(10);
        let session = match tokio::time::timeout(limit, b.connect_mux(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_error(host, &e)),
            Err(_) => {
                return Err(TransportError::Connect(format!(
                    "{} ({addr}): no SSH session after {}s (the server accepted the connection but stalled)",
                    host.name,
                    limit.as_secs()
                )))
            }
        };
        let parallel = usize::try_from(host.max_sessions.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .max(1);
        Ok(Self {
            name: host.name.clone(),
            address: addr.to_string(),
            session: RwLock::new(Some(session)),
            slots: Semaphore::new(parallel),
            parallel,
            _control_dir: fresh,
        })
    }

    fn closed(&self) -> TransportError {
        TransportError::Lost(format!("the connection to {} ({}) was closed", self.name, self.address))
    }

    /// Why the master connection is gone: its log's last lines.
    fn master_said(session: &Session) -> String {
        let log = session.control_socket().parent().map(|d| d.join("log"));
        let text = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
        let t = tail(&text, 3);
        if t.is_empty() {
            String::new()
        } else {
            format!("; ssh said: {}", t.replace(['\r', '\n'], " "))
        }
    }

    fn lost(&self, session: &Session, what: &str) -> TransportError {
        TransportError::Lost(format!(
            "{} ({}): {what}{}",
            self.name,
            self.address,
            Self::master_said(session)
        ))
    }

    async fn run_in(
        &self,
        session: &Session,
        command: &str,
        stdin: Option<(&[u8], Option<&Payload>)>,
        watch: Watch<'_>,
    ) -> Result<Output, TransportError> {
        let mut cmd = session.raw_command(command);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn().await {
            Ok(c) => c,
            Err(openssh::Error::InvalidCommand) => {
                return Err(TransportError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the script contains a NUL byte",
                )))
            }
            Err(openssh::Error::ChildIo(e)) => return Err(TransportError::Io(e)),
            Err(e) => {
                let e = error_chain(&e);
                let hint = if e.contains("Session open refused") {
                    format!(
                        " - the host's sshd allows fewer sessions per connection (MaxSessions) than max_sessions = {} in the inventory",
                        self.parallel + 1
                    )
                } else {
                    String::new()
                };
                return Err(self.lost(session, &format!("cannot start a command ({e}){hint}")));
            }
        };
        let mut out = child.stdout().take().expect("piped");
        let mut err = child.stderr().take().expect("piped");
        let input = child.stdin().take();
        let send = async {
            match (stdin, input) {
                (Some((prefix, payload)), Some(mut i)) => {
                    let r = match send_prefixed(prefix, payload, &mut i).await {
                        // The script may stop reading early (and fail by itself).
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                        r => r,
                    };
                    // A pipe's shutdown does not close it: only dropping does,
                    // which is what gives the remote script its EOF.
                    drop(i);
                    r
                }
                _ => Ok(()),
            }
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        // Read both outputs to their end before waiting: `wait` stops them.
        // Each is read up to a bound: past it, the reads stop at once (the
        // command is dropped, which closes its channel) and the run fails.
        let read = tokio::try_join!(
            async { Ok::<_, io::Error>(send.await) },
            read_capped(&mut out, &mut stdout, MAX_STDOUT, "standard output", Some(watch)),
            read_capped(&mut err, &mut stderr, MAX_STDERR, "standard error", None),
        );
        let sent = match read {
            Ok((sent, (), ())) => sent,
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                return Err(TransportError::TooMuch(format!(
                    "{} ({}): {e}",
                    self.name, self.address
                )));
            }
            Err(e) => return Err(TransportError::Io(e)),
        };
        let status = child.wait().await;
        sent?;
        let status = match status {
            Ok(s) => s.code().unwrap_or(-1),
            // The crate turns exit status 127 into this; `sh` itself exists, so
            // it is the script's own 127 (a command it ran was not found).
            Err(openssh::Error::Remote(e)) if e.kind() == io::ErrorKind::NotFound => 127,
            Err(openssh::Error::RemoteProcessTerminated) => {
                // No exit status: the connection died, or the script was
                // killed by a signal (ssh cannot tell them apart; the master
                // exits when the connection dies, so ask it).
                if session.check().await.is_err() {
                    return Err(self.lost(session, "the connection dropped while a script ran"));
                }
                stderr.extend_from_slice(b"\nplumb: the remote script was killed (ssh reported no exit status)\n");
                -1
            }
            Err(e) => return Err(self.lost(session, &format!("no exit status ({})", error_chain(&e)))),
        };
        Ok(Output { stdout, stderr, status })
    }
}

#[async_trait]
impl Transport for SshTransport {
    async fn run_watched(
        &self,
        script: &str,
        stdin: Option<&Payload>,
        watch: Watch<'_>,
    ) -> Result<Output, TransportError> {
        let _slot = self.slots.acquire().await.map_err(|_| self.closed())?;
        let guard = self.session.read().await;
        let session = guard.as_ref().ok_or_else(|| self.closed())?;
        let text = format!("LC_ALL=C; export LC_ALL\n{script}");
        // The script always reaches the host on standard input, never on
        // the command line: any user of the host can read command lines
        // (`/proc/*/cmdline`), and a script may hold a secret (a sensitive
        // command, a validate check templated from one). The command line
        // is a fixed bootstrap.
        let Some(payload) = stdin else {
            return self
                .run_in(session, STDIN_SCRIPT_ALONE, Some((text.as_bytes(), None)), watch)
                .await;
        };
        if text.len() <= MAX_LINE_SCRIPT {
            // Script lines, a terminator, then the payload, on one stream.
            let (boot, prefix) = stdin_script(&text);
            let boot = format!("sh -c {}", quote(&boot));
            return self.run_in(session, &boot, Some((&prefix, Some(payload))), watch).await;
        }
        // A long script with a payload (rare: an upload's script is small):
        // stage the script in a remote temp file (mode 0600, sent over
        // stdin), then run it, with the payload as its stdin.
        let staged = self
            .run_in(
                session,
                &format!("sh -c {}", quote(STAGE)),
                Some((text.as_bytes(), None)),
                &|_| {},
            )
            .await?;
        let path = String::from_utf8_lossy(&staged.stdout).trim().to_string();
        if staged.status != 0 || !path.starts_with('/') {
            return Ok(staged);
        }
        let run = format!("sh -c {} plumb {}", quote(RUN_STAGED), quote(&path));
        self.run_in(session, &run, Some((&[], Some(payload))), watch).await
    }

    fn max_parallel(&self) -> usize {
        self.parallel
    }

    async fn close(&self) {
        // Waiting runs fail; running ones finish (they hold read guards).
        self.slots.close();
        let session = self.session.write().await.take();
        if let Some(s) = session {
            // Errors here mean the master is already gone: nothing to release.
            let _ = s.close().await;
        }
    }
}

/// Stage a long script from stdin into a temp file, print its path.
const STAGE: &str = "f=$(mktemp) && cat >\"$f\" && printf '%s\\n' \"$f\"";
/// Run a staged script (`$1`) and remove it.
const RUN_STAGED: &str = "trap 'rm -f \"$1\"' EXIT; sh \"$1\"";

/// An error with its sources, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Map a failed connection onto a message the user can act on.
fn connect_error(host: &Host, e: &openssh::Error) -> TransportError {
    let (name, addr) = (host.name.as_str(), host.address.as_str());
    if let openssh::Error::Connect(io) = e {
        // The crate maps what ssh prints onto other kinds: this one is ours.
        if io.kind() == io::ErrorKind::NotFound {
            return TransportError::Connect(format!(
                "{name} ({addr}): cannot run `ssh` (is the OpenSSH client installed?): {io}"
            ));
        }
    }
    let said = match e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => error_chain(other),
    };
    let lower = said.to_lowercase();
    if lower.contains("remote host identification has changed")
        || (lower.contains("host key for") && lower.contains("has changed"))
    {
        let entry = match host.port {
            Some(p) if p != 22 => format!("'[{addr}]:{p}'"),
            _ => addr.to_string(),
        };
        return TransportError::HostKey(format!(
            "host key of {name} ({addr}) has CHANGED: this may be an attack; if the server was reinstalled, remove the old key with `ssh-keygen -R {entry}`"
        ));
    }
    if lower.contains("host key verification failed") {
        return TransportError::HostKey(format!(
            "host key of {name} ({addr}) is not known: verify it and connect once with `ssh`, or pass --accept-new-host-keys"
        ));
    }
    let what = if lower.contains("connection refused") {
        "connection refused (is sshd running, on this port?)".to_string()
    } else if lower.contains("timed out") {
        "connection timed out".to_string()
    } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
        "host unreachable (no route)".to_string()
    } else if lower.contains("could not resolve hostname") || lower.contains("name or service not known") {
        "cannot resolve the host name".to_string()
    } else if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        let user = host
            .user
            .as_deref()
            .map_or_else(|| "the user from ssh_config".to_string(), |u| format!("`{u}`"));
        format!(
            "authentication failed as {user} (key-based login only: check `identity` and the host's authorized_keys)"
        )
    } else if lower.contains("connection closed") || lower.contains("connection reset") {
        "the server closed the connection during the handshake".to_string()
    } else {
        "ssh failed".to_string()
    };
    let t = tail(&said, 3);
    let t = if t.is_empty() {
        error_chain(e)
    } else {
        t.replace(['\r', '\n'], " ")
    };
    TransportError::Connect(format!("{name} ({addr}): {what}; ssh said: {t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        crate::inventory::Inventory::local_default().hosts.remove(0)
    }

    fn err(text: &str) -> String {
        let e = openssh::Error::Connect(io::Error::other(text.to_string()));
        connect_error(
            &Host {
                name: "web".into(),
                address: "10.0.0.5".into(),
                ..host()
            },
            &e,
        )
        .to_string()
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let unknown = err("No ED25519 host key is known for 10.0.0.5 and you have requested strict checking.\r\nHost key verification failed.");
        assert!(
            unknown.starts_with("host key of web (10.0.0.5) is not known"),
            "{unknown}"
        );
        let changed = err("@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n@@@@\r\nHost key verification failed.");
        assert!(
            changed.contains("has CHANGED") && changed.contains("ssh-keygen -R 10.0.0.5"),
            "{changed}"
        );
        let refused = err("ssh: connect to host 10.0.0.5 port 22: Connection refused");
        assert!(
            refused.contains("connection refused") && refused.contains("port 22: Connection refused"),
            "{refused}"
        );
        let denied = err("root@10.0.0.5: Permission denied (publickey).");
        assert!(denied.contains("authentication failed"), "{denied}");
    }

    #[test]
    fn stage_scripts_are_valid_sh() {
        for s in [STAGE, RUN_STAGED] {
            let out = std::process::Command::new("sh").args(["-n", "-c", s]).output().unwrap();
            assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
