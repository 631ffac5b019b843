//! Self-test of the SSH lab (tests/lab) and its Rust helper: isolation,
//! users, fault injection, concurrent labs.
use crate::support::lab;
use lab::Lab;

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn five_nodes_isolation_users_faults() {
    if !Lab::available() {
        eprintln!("skipped: {}", Lab::unavailable_reason().unwrap_or_default());
        return;
    }
    let lab = Lab::up(5);
    assert_eq!(lab.nodes.len(), 5);
    for n in &lab.nodes {
        let o = lab.ssh(n, "hostname");
        assert!(o.status.success(), "{}: {}", n.name, String::from_utf8_lossy(&o.stderr));
        assert_eq!(text(&o), n.name);
    }
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
    assert!(lab
        .ssh(a, "echo hi > /root/marker && mkdir -p /srv/x && touch /srv/x/y")
        .status
        .success());
    assert!(lab.ssh(a, "test -f /root/marker && test -f /srv/x/y").status.success());
    assert!(!lab.ssh(b, "test -e /root/marker || test -e /srv/x").status.success());
    assert!(!std::path::Path::new("/srv/x/y").exists());

    let o = lab.ssh_as("deploy", a, "id -u && sudo -n true && echo sudo-ok");
    assert_eq!(text(&o), "1001\nsudo-ok", "{}", String::from_utf8_lossy(&o.stderr));
    let o = lab.ssh_as("nosudo", a, "id -u; sudo -n true");
    assert_eq!(text(&o), "1002");
    assert!(!o.status.success());

    // cut: connection fails (bounded by ConnectTimeout), heal: works again
    lab.cut("node3");
    let o = lab.ssh(lab.node("node3"), "true");
    assert_eq!(o.status.code(), Some(255));
    lab.heal("node3");
    assert!(lab.ssh(lab.node("node3"), "true").status.success());

    // kill-sshd: refused
    lab.kill_sshd("node4");
    let o = lab.ssh(lab.node("node4"), "true");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // rekey: host key changed
    lab.rekey("node5");
    let o = lab.ssh(lab.node("node5"), "true");
    assert_eq!(o.status.code(), Some(255));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{err}");
}

#[test]
fn concurrent_labs_do_not_collide() {
    if !Lab::available() {
        eprintln!("skipped: {}", Lab::unavailable_reason().unwrap_or_default());
        return;
    }
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| Lab::up_with(3, Some(4)))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<&str> = labs
        .iter()
        .flat_map(|l| l.nodes.iter().map(|n| n.ip.as_str()))
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 9);
    for l in &labs {
        for n in &l.nodes {
            let o = l.ssh(n, "hostname; grep -i '^maxsessions' /etc/ssh/plumb_lab_sshd_config");
            assert_eq!(text(&o), format!("{}\nMaxSessions 4", n.name));
        }
    }
}

/// Under CI the lab never stands in this machine's own root for a root
/// filesystem it could not build: `up` fails, naming why, and starts nothing.
#[test]
fn under_ci_the_lab_never_falls_back_to_the_machine_s_root() {
    if !Lab::available() {
        eprintln!("skipped: {}", Lab::unavailable_reason().unwrap_or_default());
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("rootfs-v1.failed"), "an earlier build failed\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    for (k, v) in [("CI", "true"), ("PLUMB_LAB_REQUIRE", "1")] {
        let out = std::process::Command::new("bash")
            .arg(lab::lab_sh())
            .args(["up", &state.path().display().to_string(), "1"])
            .env("PLUMB_LAB_CACHE", cache.path())
            .env_remove("PLUMB_LAB_ROOTFS")
            .env_remove(if k == "CI" { "PLUMB_LAB_REQUIRE" } else { "CI" })
            .env(k, v)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{k}={v}: {err}");
        assert!(
            err.contains("rootfs build failed before") && err.contains("no fallback under CI"),
            "{k}={v}: {err}"
        );
        assert!(!state.path().join("nodes").exists(), "{k}={v}: no node started");
    }
}
