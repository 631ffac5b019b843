//! The local transport: scripts run by `sh` on the workstation itself.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{send_payload, Output, Transport, TransportError};
use crate::module::Payload;

/// Scripts longer than this run from a temp file instead of `sh -c`.
const LARGE_SCRIPT: usize = 64 * 1024;

/// Runs scripts here, with `sh -c`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

#[async_trait]
impl Transport for Local {
    async fn run(&self, script: &str, stdin: Option<&Payload>) -> Result<Output, TransportError> {
        // One argument to execve is limited to 128 KiB on Linux: a large
        // script (the batched probe of many resources) runs from a file.
        let staged = if script.len() > LARGE_SCRIPT {
            let f = tempfile::Builder::new()
                .prefix("plumb-script-")
                .suffix(".sh")
                .tempfile()?;
            std::fs::write(f.path(), script)?;
            Some(f)
        } else {
            None
        };
        let mut cmd = Command::new("sh");
        match &staged {
            Some(f) => cmd.arg(f.path()),
            None => cmd.arg("-c").arg(script),
        };
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
