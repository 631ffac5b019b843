//! The local transport: scripts run by `sh` on the workstation itself.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{send_payload, Output, Transport, TransportError};
use crate::module::Payload;

/// Runs scripts here, with `sh -c`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

#[async_trait]
impl Transport for Local {
    async fn run(&self, script: &str, stdin: Option<&Payload>) -> Result<Output, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
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
        let (sent, r1, r2) = tokio::join!(send, out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
        sent?;
        r1?;
        r2?;
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
}
