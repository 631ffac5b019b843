//! The SSH transport against the real lab (tests/lab): skipped, with the
//! reason printed, only when the lab cannot run here.

#[path = "../../tests/support/lab.rs"]
mod lab;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::{Lab, Node};
use plumb_engine::inventory::{Connection, Host, Inventory};
use plumb_engine::module::Payload;
use plumb_engine::transport::ssh::{SshConnector, SshOptions, SshTransport};
use plumb_engine::transport::{Connector, Transport, TransportError};

fn host(node: &Node, user: &str, max_sessions: u32) -> Host {
    let mut h = Inventory::local_default().hosts.remove(0);
    h.name = node.name.clone();
    h.address = node.ip.clone();
    h.user = Some(user.to_string());
    h.connection = Connection::Ssh;
    h.max_sessions = max_sessions;
    h
}

/// A lab, saying how long it took to come up (the machine may be busy).
fn up(n: usize, max_sessions: Option<u32>) -> Lab {
    let t0 = Instant::now();
    let lab = Lab::up_with(n, max_sessions);
    eprintln!("lab of {n} up in {:?}", t0.elapsed());
    lab
}

fn opts(lab: &Lab) -> SshOptions {
    SshOptions {
        ssh_config: Some(lab.ssh_config()),
        connect_timeout: Duration::from_secs(10),
        ..SshOptions::default()
    }
}

/// Fail instead of hanging.
async fn bounded<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test took over {secs}s"))
}

async fn connect(h: &Host, o: &SshOptions) -> Arc<dyn Transport> {
    let t0 = Instant::now();
    let t = SshConnector::new(o.clone())
        .connect(h)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", h.name));
    eprintln!("connected to {} as {:?} in {:?}", h.name, h.user, t0.elapsed());
    t
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_scripts_and_returns_output_and_status() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let h = host(&lab.nodes[0], "root", 10);
    bounded(60, async {
        let t = connect(&h, &opts(&lab)).await;
        assert_eq!(t.max_parallel(), 9);

        let out = t.run("echo out; echo err >&2; exit 3", None).await.unwrap();
        assert_eq!(
            (text(&out.stdout).as_str(), text(&out.stderr).as_str(), out.status),
            ("out\n", "err\n", 3)
        );

        // Quoting survives the remote login shell; the locale is C; stdin is empty.
        let script = "x='it'\\''s \"$HOME\" `a` $(b) \\ *'\nprintf '%s\\n' \"$x\" \"$LC_ALL\" \"$(hostname)\"; cat";
        let out = t.run(script, None).await.unwrap();
        assert_eq!(
            text(&out.stdout),
            "it's \"$HOME\" `a` $(b) \\ *\nC\nnode1\n",
            "{}",
            text(&out.stderr)
        );
        assert_eq!(out.status, 0);

        // 127 (a command not found inside the script) is a status, not an error.
        let out = t.run("no-such-command-here", None).await.unwrap();
        assert_eq!(out.status, 127);
        assert!(text(&out.stderr).contains("not found"));

        // A script killed by a signal has no exit status: -1, and the connection stays.
        let out = t.run("echo before; kill -9 $$", None).await.unwrap();
        assert_eq!((text(&out.stdout).as_str(), out.status), ("before\n", -1));
        assert!(text(&out.stderr).contains("killed"), "{}", text(&out.stderr));
        assert_eq!(t.run("true", None).await.unwrap().status, 0);

        // Large input and large output at once (no deadlock); stdin is closed at the end.
        let input: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let out = t
            .run(
                "cat; head -c 3000000 /dev/zero >&2",
                Some(&Payload::bytes(input.clone())),
            )
            .await
            .unwrap();
        assert_eq!(out.status, 0);
        assert!(out.stdout == input, "stdout differs ({} bytes)", out.stdout.len());
        assert_eq!(out.stderr.len(), 3_000_000);

        // A script that stops reading early just fails by itself.
        let out = t
            .run("head -c 10 >/dev/null; exit 4", Some(&Payload::bytes(input.clone())))
            .await
            .unwrap();
        assert_eq!(out.status, 4);

        // Scripts too long for a command line (128 KiB) are staged, with or without stdin.
        let long = format!("# {}\nwc -c; echo done", "x".repeat(300_000));
        let out = t.run(&long, None).await.unwrap();
        assert_eq!(
            (text(&out.stdout).as_str(), out.status),
            ("0\ndone\n", 0),
            "{}",
            text(&out.stderr)
        );
        let out = t.run(&long, Some(&Payload::bytes(b"12345".to_vec()))).await.unwrap();
        assert_eq!(
            (text(&out.stdout).as_str(), out.status),
            ("5\ndone\n", 0),
            "{}",
            text(&out.stderr)
        );
        let left = t.run("ls /tmp | wc -l", None).await.unwrap();
        assert_eq!(text(&left.stdout).trim(), "0", "staged scripts are removed");

        t.close().await;
        match t.run("true", None).await {
            Err(TransportError::Lost(m)) => assert!(m.contains("closed"), "{m}"),
            other => panic!("run after close: {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_stops_the_master_and_removes_the_control_dir() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let h = host(&lab.nodes[0], "root", 10);
    let dir = tempfile::Builder::new().prefix("pl").tempdir_in("/tmp").unwrap();
    bounded(60, async {
        let o = SshOptions {
            control_dir: Some(dir.path().to_path_buf()),
            ..opts(&lab)
        };
        let t = SshTransport::connect(&h, &o).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "one session dir");
        let masters = || {
            let out = std::process::Command::new("pgrep")
                .arg("-f")
                .arg(dir.path())
                .output()
                .unwrap();
            text(&out.stdout).lines().count()
        };
        assert_eq!(masters(), 1, "one ssh master");
        t.close().await;
        let t0 = Instant::now();
        while masters() > 0 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(masters(), 0, "the master exited");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "session dir removed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_64_mib_of_stdin_from_a_file() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let h = host(&lab.nodes[0], "root", 10);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
    let p = Payload::file(f.path()).unwrap();
    assert_eq!(p.size, 64 << 20);
    bounded(120, async {
        let t = connect(&h, &opts(&lab)).await;
        let t0 = Instant::now();
        let out = t.run("sha256sum | cut -d' ' -f1", Some(&p)).await.unwrap();
        let took = t0.elapsed();
        eprintln!(
            "64 MiB over stdin + remote sha256sum: {took:?} ({:.0} MiB/s)",
            64.0 / took.as_secs_f64()
        );
        assert_eq!(out.status, 0, "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), p.sha256);
        t.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runs_stay_below_max_sessions() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, Some(2));
    let h = host(&lab.nodes[0], "root", 2);
    bounded(60, async {
        let t = connect(&h, &opts(&lab)).await;
        assert_eq!(t.max_parallel(), 1);
        let t0 = Instant::now();
        let runs = (0..20).map(|i| {
            let t = t.clone();
            tokio::spawn(async move { (i, t.run(&format!("sleep 0.05; echo {i}"), None).await) })
        });
        for r in futures_join(runs).await {
            let (i, out) = r;
            let out = out.unwrap_or_else(|e| panic!("run {i}: {e}"));
            assert_eq!(
                (text(&out.stdout), out.status),
                (format!("{i}\n"), 0),
                "run {i}: {}",
                text(&out.stderr)
            );
        }
        eprintln!("20 runs with MaxSessions 2: {:?}", t0.elapsed());
        t.close().await;

        // Why the semaphore matters: an inventory that overstates MaxSessions
        // gets sessions refused, with a message that says so.
        let t = connect(&host(&lab.nodes[0], "root", 10), &opts(&lab)).await;
        let runs = (0..9).map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.run("sleep 0.3", None).await })
        });
        let errors: Vec<String> = futures_join(runs)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert!(!errors.is_empty(), "sshd accepted 9 sessions with MaxSessions 2");
        assert!(
            errors[0].contains("MaxSessions") && errors[0].contains("max_sessions = 10"),
            "{}",
            errors[0]
        );
        t.close().await;
    })
    .await;
}

async fn futures_join<T: Send + 'static>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_keys_are_refused_unless_accepted() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let node = &lab.nodes[0];
    let h = host(node, "root", 10);
    let empty = tempfile::NamedTempFile::new().unwrap();
    bounded(60, async {
        let strict = SshOptions { known_hosts: Some(empty.path().to_path_buf()), ..opts(&lab) };
        match SshConnector::new(strict.clone()).connect(&h).await {
            Err(TransportError::HostKey(m)) => assert_eq!(
                m,
                format!(
                    "host key of node1 ({}) is not known: verify it and connect once with `ssh`, or pass --accept-new-host-keys",
                    node.ip
                )
            ),
            Err(e) => panic!("wrong error: {e:?}"),
            Ok(_) => panic!("an unknown host key was accepted"),
        }
        let accept = SshOptions { accept_new_host_keys: true, ..strict.clone() };
        let t = connect(&h, &accept).await;
        assert_eq!(t.run("hostname", None).await.unwrap().stdout, b"node1\n");
        t.close().await;
        // The key was recorded: strict checking now passes.
        let recorded = std::fs::read_to_string(empty.path()).unwrap();
        assert!(recorded.starts_with(&node.ip), "{recorded}");
        let t = connect(&h, &strict).await;
        t.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_keys_are_always_refused() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let node = lab.nodes[0].clone();
    lab.rekey(&node.name);
    let h = host(&node, "root", 10);
    bounded(60, async {
        for accept in [false, true] {
            let o = SshOptions { accept_new_host_keys: accept, ..opts(&lab) };
            match SshConnector::new(o).connect(&h).await {
                Err(TransportError::HostKey(m)) => assert_eq!(
                    m,
                    format!(
                        "host key of node1 ({0}) has CHANGED: this may be an attack; if the server was reinstalled, remove the old key with `ssh-keygen -R {0}`",
                        node.ip
                    )
                ),
                Err(e) => panic!("accept_new={accept}: wrong error: {e:?}"),
                Ok(_) => panic!("accept_new={accept}: a changed host key was accepted"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_refused_and_unauthorized_hosts_are_connect_errors() {
    if !Lab::available() {
        return;
    }
    let lab = up(2, None);
    let (n1, n2) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    bounded(60, async {
        // Wrong user: the key is not authorized.
        let bad = host(&n1, "nosuchuser", 10);
        match SshConnector::new(opts(&lab)).connect(&bad).await {
            Err(TransportError::Connect(m)) => {
                assert!(m.contains("authentication failed as `nosuchuser`"), "{m}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Cut link: times out within the connect timeout.
        lab.cut(&n1.name);
        let o = SshOptions {
            connect_timeout: Duration::from_secs(2),
            ..opts(&lab)
        };
        let t0 = Instant::now();
        let r = SshConnector::new(o.clone()).connect(&host(&n1, "root", 10)).await;
        let took = t0.elapsed();
        match r {
            Err(TransportError::Connect(m)) => {
                assert!(
                    m.starts_with(&format!("node1 ({}): connection timed out; ssh said:", n1.ip)),
                    "{m}"
                );
                eprintln!("unreachable: {took:?}: {m}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // The 2 s given, not the 10 s default; the margin is for a loaded
        // machine, which starts `ssh` late.
        assert!(took < Duration::from_secs(8), "took {took:?}");
        // sshd gone: the host answers with a reset, which is "refused" (with
        // the ordinary connect timeout, so that a loaded machine cannot turn
        // it into a timeout).
        lab.kill_sshd(&n2.name);
        match SshConnector::new(opts(&lab)).connect(&host(&n2, "root", 10)).await {
            Err(TransportError::Connect(m)) => {
                eprintln!("killed sshd: {m}");
                assert!(
                    m.starts_with(&format!("node2 ({}): connection refused (is sshd running", n2.ip)),
                    "{m}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_while_a_script_runs_is_lost() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let node = lab.nodes[0].clone();
    bounded(60, async {
        let o = SshOptions {
            connect_timeout: Duration::from_secs(1),
            ..opts(&lab)
        };
        // A 1 s timeout makes the loss quick to detect, and can be too short
        // for the key exchange on a loaded machine: try again until connected.
        let h = host(&node, "root", 10);
        let t = loop {
            match SshConnector::new(o.clone()).connect(&h).await {
                Ok(t) => break t,
                Err(e) => eprintln!("connect with a 1 s timeout failed, again: {e}"),
            }
        };
        let running = {
            let t = t.clone();
            tokio::spawn(async move { t.run("sleep 30", None).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        lab.cut(&node.name);
        match running.await.unwrap() {
            Err(TransportError::Lost(m)) => eprintln!("lost after {:?}: {m}", t0.elapsed()),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(15));
        t.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sudo_works_for_deploy_and_asks_a_password_for_nosudo() {
    if !Lab::available() {
        return;
    }
    let lab = up(1, None);
    let node = &lab.nodes[0];
    bounded(60, async {
        let t = connect(&host(node, "deploy", 10), &opts(&lab)).await;
        let out = t.run("sudo -n true && id -un && sudo -n id -un", None).await.unwrap();
        assert_eq!(
            (text(&out.stdout).as_str(), out.status),
            ("deploy\nroot\n", 0),
            "{}",
            text(&out.stderr)
        );
        t.close().await;

        let t = connect(&host(node, "nosudo", 10), &opts(&lab)).await;
        let out = t.run("sudo -n true", None).await.unwrap();
        assert_ne!(out.status, 0);
        assert!(
            text(&out.stderr).contains("a password is required"),
            "{}",
            text(&out.stderr)
        );
        t.close().await;
    })
    .await;
}
