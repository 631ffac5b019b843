//! The local transport: scripts run by `sh` on the workstation itself.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::process::Command;

use super::{read_capped, send_payload, Output, Transport, TransportError, Watch};
use crate::module::Payload;

/// The most a script may print on standard output or error.
const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// Runs scripts here, with `sh`, from a temp file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

#[async_trait]
impl Transport for Local {
    async fn run_watched(
        &self,
        script: &str,
        stdin: Option<&Payload>,
        watch: Watch<'_>,
    ) -> Result<Output, TransportError> {
        // Every script runs from a temp file (mode 0600, removed after):
        // one argument to execve is limited to 128 KiB on Linux (the
        // batched probe of many resources is longer), and a command line
        // is readable by every user (`/proc/*/cmdline`) while a script may
        // hold a secret.
        let staged = tempfile::Builder::new()
            .prefix("plumb-script-")
            .suffix(".sh")
            .tempfile()?;
        std::fs::write(staged.path(), script)?;
        let mut cmd = Command::new("sh");
        cmd.arg(staged.path());
        let mut child = cmd
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Connect(format!("cannot start sh: {e}")))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let input = child.stdin.take();
        let send = async {
            match (stdin, input) {
                (Some(p), Some(mut i)) => match send_payload(p, &mut i).await {
                    // The script may stop reading early (and fail by itself).
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    r => r,
                },
                _ => Ok(()),
            }
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (sent, (), ()) = tokio::try_join!(
            async { Ok::<_, std::io::Error>(send.await) },
            read_capped(&mut out, &mut stdout, MAX_OUTPUT, "standard output", Some(watch)),
            read_capped(&mut err, &mut stderr, MAX_OUTPUT, "standard error", None),
        )
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::FileTooLarge {
                TransportError::TooMuch(format!("localhost: {e}"))
            } else {
                TransportError::Io(e)
            }
        })?;
        sent?;
        let status = child.wait().await?;
        Ok(Output {
            stdout,
            stderr,
            status: status.code().unwrap_or(-1),
        })
    }

    fn max_parallel(&self) -> usize {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_scripts_with_stdin_and_reports_status() {
        let p = Payload::bytes(b"hello\n".to_vec());
        let out = Local.run("cat; echo err >&2; exit 3", Some(&p)).await.unwrap();
        assert_eq!(out.stdout, b"hello\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status, 3);
    }

    #[tokio::test]
    async fn a_script_larger_than_one_argument_can_hold_still_runs() {
        let mut script = String::new();
        for i in 0..20_000 {
            script.push_str(&format!("x{i}=\"value number {i}\"\n"));
        }
        script.push_str("echo \"$x19999\"\n");
        assert!(script.len() > 256 * 1024);
        let out = Local.run(&script, None).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "value number 19999\n");
    }
}
