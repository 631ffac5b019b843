//! plumb over SSH against the lab: real sshd hosts in network namespaces
//! (tests/lab). Many hosts at once, failures isolated per host, host keys,
//! `become`, verified uploads, and the cost of a drift check.

use crate::common;
use crate::support::lab;

use std::fmt::Write as _;
use std::path::Path;

use common::{Outcome, Plumb};
use lab::Lab;

/// Skip (with the reason) when the lab cannot run here; `PLUMB_LAB_REQUIRE=1`
/// (set by CI) makes `Lab::available` fail instead.
fn plumb(lab: &Lab, cmd: &str, plan: &Path, inv: &Path, extra: &[&str]) -> Outcome {
    Plumb::over_ssh(cmd, plan, inv, &lab.ssh_config(), "json")
        .args(extra)
        .run()
}

fn host<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name}: {j}"))
}

const CORE_PLAN: &str = r#"
plan: core-over-ssh
resources:
  - id: base
    directory: {path: /srv/plumb, mode: "0750"}
  - id: conf
    file:
      path: /srv/plumb/app.conf
      content: "name = {{ name | default('app') }}\nhostile = $(touch /tmp/pwned) `id` ; 'q' \"dq\" ünï\n"
      mode: "0640"
      validate: "grep -q '^name = ' %s"
  - id: odd-name
    file: {path: "/srv/plumb/sp ace; $(touch pwned) `touch pwned`", content: "x\n"}
  - id: init
    command: {run: "hostname > /srv/plumb/initialized", creates: /srv/plumb/initialized}
"#;

#[test]
fn the_core_lifecycle_runs_on_five_hosts_at_once() {
    need_lab!();
    let lab = Lab::up(5);
    let (_dir, plan, inv) = lab.job(CORE_PLAN, "");
    let d = plumb(&lab, "diff", &plan, &inv, &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let a = plumb(&lab, "apply", &plan, &inv, &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(a.summary("changed"), 4 * 5);
    for n in &lab.nodes {
        let check = "cat /srv/plumb/initialized; stat -c %a /srv/plumb/app.conf; \
                     ls /tmp/pwned ~/pwned /pwned /srv/plumb/pwned 2>&1 | grep -c 'No such file'";
        let out = lab.ssh(n, check);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("{}\n640\n4\n", n.name),
            "{}: nothing ran from a value",
            n.name
        );
    }
    let again = plumb(&lab, "apply", &plan, &inv, &[]);
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    assert_eq!(plumb(&lab, "diff", &plan, &inv, &[]).code, 0);
    // Drift on one host is reported for that host only.
    lab.ssh(&lab.nodes[2], "echo edited > /srv/plumb/app.conf");
    let d = plumb(&lab, "diff", &plan, &inv, &[]);
    assert_eq!(d.code, 2);
    let j = d.json();
    for n in &lab.nodes {
        let want = if n.name == lab.nodes[2].name { "pending" } else { "ok" };
        assert_eq!(host(&j, &n.name)["status"], want, "{}", n.name);
    }
}

#[test]
fn a_no_op_diff_of_a_hundred_resources_costs_one_remote_execution_per_host() {
    need_lab!();
    let lab = Lab::up(3);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = String::from("resources:\n  - id: base\n    directory: {path: /srv/many}\n");
    for i in 0..99 {
        let _ = writeln!(
            plan,
            "  - id: f{i}\n    file: {{path: /srv/many/f{i}, content: \"file {i}\\n\", mode: \"0644\"}}"
        );
    }
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(&plan_path, plan).unwrap();
    let inv = lab.inventory(dir.path(), "");
    assert_eq!(plumb(&lab, "apply", &plan_path, &inv, &[]).code, 0);
    let d = plumb(&lab, "diff", &plan_path, &inv, &[]);
    assert_eq!(d.code, 0, "{}", d.stdout);
    for h in d.json()["hosts"].as_array().unwrap() {
        let n = h["remote_executions"].as_u64().unwrap();
        assert!(n <= 2, "{}: {n} remote executions", h["name"]);
        assert_eq!(n, 1);
    }
}

#[test]
fn an_unreachable_host_and_a_host_cut_mid_apply_fail_alone() {
    need_lab!();
    let lab = Lab::up(4);
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&payload, &data).unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            r#"
resources:
  - id: base
    directory: {{path: /srv/cut}}
  - id: slow
    command: {{run: "touch /srv/cut/started; sleep 3; touch /srv/cut/slow", creates: /srv/cut/slow, risk: safe}}
  - id: blob
    file: {{path: /srv/cut/blob.bin, source: {}}}
    requires: [slow]
  - id: last
    file: {{path: /srv/cut/last, content: "done\n"}}
    requires: [blob]
"#,
            payload.display()
        ),
    )
    .unwrap();
    let inv = lab.inventory(dir.path(), "");
    let dead = lab.nodes[0].name.clone();
    let cut = lab.nodes[1].name.clone();
    lab.kill_sshd(&dead);
    // The cut host has an old version of the file: afterwards it must hold
    // the old bytes or the new ones, never a mix and never nothing.
    let old_bytes = b"old blob\n";
    let seeded = lab.ssh(
        lab.node(&cut),
        "mkdir -p /srv/cut && printf 'old blob\\n' >/srv/cut/blob.bin && cat /srv/cut/blob.bin",
    );
    assert_eq!(seeded.stdout, old_bytes, "{seeded:?}");
    let child = Plumb::new()
        .arg("apply")
        .arg(&plan)
        .arg("-i")
        .arg(&inv)
        .arg("--ssh-config")
        .arg(lab.ssh_config())
        .args(["--yes", "--format", "json", "--connect-timeout", "5"])
        .spawn();
    // Cut the second host while its slow step runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = lab.ssh(lab.node(&cut), "test -e /srv/cut/started && echo yes");
        if String::from_utf8_lossy(&out.stdout).contains("yes") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow step never started on {cut}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    lab.cut(&cut);
    let o = Outcome::from_output(&child.wait_with_output().unwrap());
    assert_eq!(o.code, 1, "{o:?}");
    let j = o.json();
    let d = host(&j, &dead);
    assert_eq!(d["status"], "unreachable", "{d}");
    assert!(d["error"].as_str().unwrap().contains("refused"), "{d}");
    let c = host(&j, &cut);
    assert_eq!(c["status"], "failed", "{c}");
    assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
    for n in &lab.nodes[2..] {
        assert_eq!(host(&j, &n.name)["status"], "changed", "{}", n.name);
    }
    lab.heal(&cut);
    let out = lab.ssh(
        lab.node(&cut),
        "ls -A /srv/cut; sha256sum /srv/cut/blob.bin 2>/dev/null",
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!listing.contains(".plumb"), "no temp file left behind: {listing}");
    let new = plumb_engine::module::sha256_hex(&data);
    let old = plumb_engine::module::sha256_hex(old_bytes);
    assert!(
        listing.contains(&format!("{new}  /srv/cut/blob.bin"))
            || listing.contains(&format!("{old}  /srv/cut/blob.bin")),
        "a managed file is old or new, never half: {listing}"
    );
}

#[test]
fn host_keys_unknown_refused_accepted_with_the_flag_changed_always_refused() {
    need_lab!();
    let lab = Lab::up(1);
    let (dir, plan, inv) = lab.job("resources:\n  - id: d\n    directory: {path: /srv/keys}\n", "");
    // A client config whose known_hosts is empty: the node is unknown.
    let empty = dir.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let config = std::fs::read_to_string(lab.ssh_config()).unwrap();
    let config = config.replace(&lab.known_hosts().display().to_string(), &empty.display().to_string());
    let cfg = dir.path().join("ssh_config");
    std::fs::write(&cfg, config).unwrap();
    let run = |extra: &[&str]| {
        Plumb::new()
            .arg("diff")
            .arg(&plan)
            .arg("-i")
            .arg(&inv)
            .arg("--ssh-config")
            .arg(&cfg)
            .args(["--format", "json"])
            .args(extra)
            .run()
    };
    let o = run(&[]);
    assert_eq!(o.code, 1);
    let err = o.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("is not known") && err.contains("--accept-new-host-keys"),
        "{err}"
    );
    let o = run(&["--accept-new-host-keys"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(
        std::fs::read_to_string(&empty).unwrap().contains("ssh-ed25519"),
        "the new key was recorded"
    );
    lab.rekey(&lab.nodes[0].name);
    let o = run(&["--accept-new-host-keys"]);
    assert_eq!(o.code, 1);
    let err = o.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(err.contains("CHANGED") && err.contains("ssh-keygen -R"), "{err}");
}

#[test]
fn a_host_with_max_sessions_two_converges_fifty_resources() {
    need_lab!();
    let lab = Lab::up_with(1, Some(2));
    let dir = tempfile::tempdir().unwrap();
    let mut plan = String::from("resources:\n  - id: base\n    directory: {path: /srv/sessions}\n");
    for i in 0..49 {
        let _ = writeln!(
            plan,
            "  - id: f{i}\n    file: {{path: /srv/sessions/f{i}, content: \"{i}\\n\"}}"
        );
    }
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(&plan_path, plan).unwrap();
    let inv = lab.inventory(dir.path(), "    max_sessions: 2\n");
    let a = plumb(&lab, "apply", &plan_path, &inv, &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(a.summary("changed"), 50);
    assert_eq!(plumb(&lab, "diff", &plan_path, &inv, &[]).code, 0);
}

#[test]
fn become_works_with_passwordless_sudo_and_says_so_without() {
    need_lab!();
    let lab = Lab::up(1);
    let (dir, plan, deploy) = lab.job(
        "resources:\n  - id: f\n    become: true\n    file: {path: /root/by-deploy, content: \"x\\n\", owner: root}\n",
        "    user: deploy\n",
    );
    let a = plumb(&lab, "apply", &plan, &deploy, &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(plumb(&lab, "diff", &plan, &deploy, &[]).code, 0);
    let nosudo = lab.inventory(dir.path(), "    user: nosudo\n");
    let a = plumb(&lab, "apply", &plan.clone(), &nosudo, &[]);
    assert_eq!(a.code, 1);
    let text = a.stdout;
    assert!(text.contains("sudo asks for a password"), "{text}");
    // A probe script larger than a command-line argument may be (1,500
    // files): still one execution, through sudo.
    let mut many = String::from("resources:\n");
    for i in 0..1500 {
        many.push_str(&format!(
            "  - id: f{i}\n    become: true\n    file: {{path: /root/many/file-with-a-longish-name-{i:04}, content: \"{i}\\n\"}}\n"
        ));
    }
    let many_plan = dir.path().join("many.yaml");
    std::fs::write(&many_plan, many).unwrap();
    // (`inventory` rewrote the one file for nosudo.)
    let deploy = lab.inventory(dir.path(), "    user: deploy\n");
    let d = plumb(&lab, "diff", &many_plan, &deploy, &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    assert_eq!(d.summary("pending"), 1500, "{}", d.stdout);
    assert_eq!(d.json()["hosts"][0]["remote_executions"], 1, "{}", d.stdout);
    // A sudo that wants a terminal (`Defaults requiretty`) says so.
    let out = lab.ssh(
        &lab.nodes[0],
        "echo 'Defaults:deploy requiretty' > /etc/sudoers.d/zz-tty && chmod 440 /etc/sudoers.d/zz-tty",
    );
    assert!(out.status.success(), "{out:?}");
    let d = plumb(&lab, "diff", &plan, &deploy, &[]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    assert!(d.stdout.contains("sudo requires a terminal here"), "{}", d.stdout);
}

#[test]
fn a_large_upload_is_verified_and_a_corrupted_one_is_refused() {
    need_lab!();
    let lab = Lab::up(2);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "resources:\n  - id: big\n    file: {{path: /srv/big.bin, source: {}}}\n",
            big.display()
        ),
    )
    .unwrap();
    // The second node alters what it receives: a `cat` that appends a byte.
    let bad = &lab.nodes[1];
    lab.ssh(bad, "echo old > /srv/big.bin; printf '#!/bin/sh\\n/bin/cat \"$@\"; printf x\\n' > /usr/local/bin/cat; chmod +x /usr/local/bin/cat");
    let inv = lab.inventory(dir.path(), "");
    let a = plumb(&lab, "apply", &plan, &inv, &[]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    let j = a.json();
    assert_eq!(host(&j, &lab.nodes[0].name)["status"], "changed");
    let good = lab.ssh(&lab.nodes[0], "sha256sum /srv/big.bin");
    assert!(String::from_utf8_lossy(&good.stdout).contains(&plumb_engine::module::sha256_hex(&data)));
    let b = host(&j, &bad.name);
    assert_eq!(b["status"], "failed");
    let err = b["resources"][0]["error"].as_str().unwrap();
    assert!(err.contains("failed verification"), "{err}");
    let left = lab.ssh(bad, "/bin/cat /srv/big.bin; ls -A /srv");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout),
        "old\nbig.bin\n",
        "old file untouched, temp removed"
    );
}

/// The shipped TwisterLab registry part, applied for real to a lab host:
/// every file it writes holds the rendered registry name (in keys too), and
/// no template syntax survives in any of them.
#[test]
fn the_shipped_registry_plan_writes_no_template_syntax() {
    if !Lab::available() {
        return;
    }
    let lab = Lab::up(1);
    let work = tempfile::tempdir().unwrap();
    let twisterlab = common::repo().join("plans/twisterlab");
    // The part as shipped, included by a plan beside its `files/`, as
    // phase1.yaml includes it; no systemd on a tier-1 node.
    let plan = work.path().join("registry.yaml");
    std::fs::write(
        &plan,
        format!(
            "plan: registry-only\ninclude: [{}]\nvars: {{manage_services: false}}\n",
            twisterlab.join("parts/registry.yaml").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(work.path().join("files")).unwrap();
    std::fs::copy(
        twisterlab.join("files/harbor-ca.crt"),
        work.path().join("files/harbor-ca.crt"),
    )
    .unwrap();
    let inv = lab.inventory(work.path(), "");
    let a = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json")
        .env("HARBOR_PASSWORD", "s3cret-for-test")
        .run();
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let node = &lab.nodes[0];
    let written = [
        "/etc/docker/daemon.json",
        "/etc/rancher/k3s/registries.yaml",
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        "/etc/docker/certs.d/harbor.twisterlab.local/ca.crt",
    ];
    for path in written {
        let out = lab.ssh(node, &format!("cat '{path}'"));
        assert!(
            out.status.success(),
            "{path} was not written: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("{{") && !text.contains("{%"),
            "{path} holds template syntax:\n{text}"
        );
    }
    let reg = String::from_utf8_lossy(&lab.ssh(node, "cat /etc/rancher/k3s/registries.yaml").stdout).into_owned();
    let doc: serde_json::Value = serde_saphyr::from_str(&reg).unwrap();
    assert!(
        doc["mirrors"]["harbor.twisterlab.local"].is_object()
            && doc["configs"]["harbor.twisterlab.local"]["tls"].is_object(),
        "the registry's own name is the key:\n{reg}"
    );
    let d = Plumb::over_ssh("diff", &plan, &inv, &lab.ssh_config(), "json")
        .env("HARBOR_PASSWORD", "s3cret-for-test")
        .run();
    assert_eq!(d.code, 0, "converged after one apply: {}", d.stdout);
}
