//! The storage modules over SSH on tier-1 lab nodes (tests/lab): loop
//! devices made on this machine are visible in every node (loop devices are
//! global), and each node mounts them in its own mount namespace, with its
//! own /etc/fstab.
//!
//! Data migration runs on a tier-1b node, whose PID 1 is systemd: the
//! service that writes into the data is a real unit, really stopped and
//! started. The lab's root has no rsync, so these migrations also exercise
//! the `cp -ax` path, verified the same way.

mod common;
#[path = "support/lab.rs"]
mod lab;
#[path = "support/storage.rs"]
mod storage;

use std::path::{Path, PathBuf};

use common::{expect, resource, Outcome, Plumb};
use lab::Lab;
use storage::{manifest, tricky_tree_script, LoopDev};

/// One lab node, a scratch folder with an inventory naming it, and the
/// node's root as this machine sees it (through `/proc/PID/root`).
struct Node {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(lab: Lab) -> Node {
        let dir = tempfile::Builder::new().prefix("plumb-storage-lab-").tempdir().unwrap();
        lab.inventory(dir.path(), "    user: root\n");
        Node { lab, dir }
    }

    fn plan(&self, text: &str) {
        std::fs::write(self.dir.path().join("plan.yaml"), text).unwrap();
    }

    fn plumb(&self, cmd: &str, vars: &[String]) -> Outcome {
        let (plan, inv) = (
            self.dir.path().join("plan.yaml"),
            self.dir.path().join("inventory.yaml"),
        );
        Plumb::over_ssh(cmd, &plan, &inv, &self.lab.ssh_config(), "json")
            .vars(vars)
            .run()
    }

    fn sh(&self, cmd: &str) -> String {
        let o = self.lab.ssh(&self.lab.nodes[0], cmd);
        assert!(
            o.status.success(),
            "`{cmd}` on the node failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `path` on the node, as this machine sees it.
    fn view(&self, path: &str) -> PathBuf {
        let nodes = std::fs::read_to_string(self.lab.dir.join("nodes")).unwrap();
        let pid = nodes
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&self.lab.nodes[0].name.as_str())).then(|| f[2].to_string())
            })
            .expect("the node's pid");
        // The recorded pid is the node's `unshare`; its child is the node's
        // PID 1, whose root is the node's own.
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let init = children.split_whitespace().next().expect("the node's PID 1");
        PathBuf::from(format!("/proc/{init}/root")).join(path.trim_start_matches('/'))
    }
}

/// A real unit that appends to a log in the data folder, and records its
/// starts and stops outside it.
const WRITER_UNIT: &str = "[Unit]\nDescription=plumb test writer\n[Service]\n\
    ExecStartPre=/bin/sh -c 'echo started >> /var/log/plumb-writer.events'\n\
    ExecStart=/bin/sh -c 'while :; do date +%%s.%%N >> /srv/app/log/writer.log; sleep 0.1; done'\n\
    ExecStopPost=/bin/sh -c 'echo stopped >> /var/log/plumb-writer.events'\n";

const MIGRATION_PLAN: &str = r#"
resources:
  - id: app-fs
    filesystem: {dev: "{{ dev }}", type: ext4, label: app}
  - id: app-mount
    mount:
      path: /srv/app
      src: "{{ dev }}"
      fstype: ext4
      opts: [defaults, noatime]
      migrate: {stop: [plumb-writer, plumb-not-running]}
"#;

fn node_with_writer() -> Option<Node> {
    if !Lab::available() || !storage::available() {
        return None;
    }
    let node = Node::new(Lab::up_systemd(1));
    assert_eq!(node.sh("systemctl is-system-running --wait || true"), "running");
    node.sh(&format!(
        "mkdir -p /srv/app/log && {} && printf '%b' \"{}\" > /etc/systemd/system/plumb-writer.service \
         && printf '[Service]\\nExecStart=/bin/sleep 1000\\n' > /etc/systemd/system/plumb-not-running.service \
         && systemctl daemon-reload && systemctl start plumb-writer",
        tricky_tree_script(Path::new("/srv/app")),
        WRITER_UNIT.replace('\n', "\\n").replace('"', "\\\"")
    ));
    assert_eq!(node.sh("systemctl is-active plumb-writer"), "active");
    Some(node)
}

/// The data without the writer's log, which keeps growing.
fn data(node: &Node) -> std::collections::BTreeMap<String, String> {
    let mut m = manifest(&node.view("/srv/app"));
    m.retain(|k, _| !k.starts_with("log"));
    m
}

#[test]
fn a_migration_over_ssh_stops_and_starts_a_real_service_and_verifies_the_copy() {
    let Some(node) = node_with_writer() else { return };
    let disk = LoopDev::new(node.dir.path(), "app", "128M");
    let vars = [format!("dev={}", disk.dev)];
    let before = data(&node);
    node.plan(MIGRATION_PLAN);

    let d = node.plumb("diff", &vars);
    expect(&d, 2, "migration pending");
    let m = resource(&d, "app-mount");
    assert_eq!(m["risk"], "disruptive");
    assert_eq!(m["after"][0], "app-fs");
    assert!(m["changes"][0]["to"]
        .as_str()
        .unwrap()
        .contains("services stopped meanwhile: plumb-writer, plumb-not-running"));

    let a = node.plumb("apply", &vars);
    expect(&a, 0, "migrated over SSH");
    let notes = resource(&a, "app-mount")["notes"].to_string();
    assert!(
        notes.contains("verified by sha256") && notes.contains("old data kept at /srv/app.plumb-old-"),
        "{notes}"
    );
    assert!(notes.contains("services restarted: plumb-writer"), "{notes}");
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    assert_eq!(
        data(&node),
        before,
        "every file, mode, owner, link, xattr and ACL came across"
    );
    let old = notes
        .split("old data kept at ")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut kept = manifest(&node.view(&old));
    kept.retain(|k, _| !k.starts_with("log"));
    assert_eq!(kept, before, "the old copy is intact");

    // The real service was stopped for the copy and runs again, on the new filesystem.
    assert_eq!(node.sh("systemctl is-active plumb-writer"), "active");
    assert_eq!(node.sh("cat /var/log/plumb-writer.events"), "started\nstopped\nstarted");
    assert_eq!(
        node.sh("systemctl is-active plumb-not-running || true"),
        "inactive",
        "a stopped unit stays stopped"
    );
    // The writer appends every 0.1 s; wait for its next line rather than a
    // fixed time (a loaded machine schedules it late).
    let old_log: u64 = node.sh(&format!("wc -l < '{old}/log/writer.log'")).parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let new_log: u64 = node.sh("wc -l < /srv/app/log/writer.log").parse().unwrap();
        if new_log > old_log {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service writes on the new filesystem: still {new_log} lines after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let fstab = node.sh("cat /etc/fstab");
    assert!(
        fstab.contains(&format!("{}\t/srv/app\text4\tdefaults,noatime\t0\t0", disk.dev)),
        "{fstab}"
    );

    let again = node.plumb("apply", &vars);
    expect(&again, 0, "re-apply");
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    assert_eq!(
        node.sh("cat /var/log/plumb-writer.events"),
        "started\nstopped\nstarted",
        "not stopped again"
    );
}

#[test]
fn a_failed_migration_over_ssh_restarts_the_real_service_and_leaves_the_data() {
    let Some(node) = node_with_writer() else { return };
    let disk = LoopDev::new(node.dir.path(), "small", "16M");
    node.sh("head -c 25000000 /dev/urandom > /srv/app/big");
    let before = data(&node);
    node.plan(MIGRATION_PLAN);
    let a = node.plumb("apply", &[format!("dev={}", disk.dev)]);
    expect(&a, 1, "the copy cannot fit");
    let err = resource(&a, "app-mount")["error"].to_string();
    assert!(
        err.contains("the copy failed") && err.contains("holds its old data as before"),
        "{err}"
    );
    assert_eq!(
        node.sh("findmnt -n -o SOURCE /srv/app || true"),
        "",
        "nothing mounted at the path"
    );
    assert_eq!(
        node.sh("findmnt -ln -o TARGET | grep -c plumb-migrate || true"),
        "0",
        "no temporary mount left"
    );
    assert_eq!(data(&node), before, "the data is intact, in place");
    assert_eq!(node.sh("ls -d /srv/app.plumb-old-* 2>/dev/null || true"), "");
    assert_eq!(
        node.sh("systemctl is-active plumb-writer"),
        "active",
        "the service runs again"
    );
    assert_eq!(node.sh("cat /var/log/plumb-writer.events"), "started\nstopped\nstarted");
    assert!(!node.sh("cat /etc/fstab").contains("/srv/app"), "fstab untouched");
}

#[test]
fn mount_states_over_ssh_use_the_node_s_own_fstab() {
    if !Lab::available() || !storage::available() {
        return;
    }
    let node = Node::new(Lab::up(1));
    let disk = LoopDev::new(node.dir.path(), "m", "64M");
    let fstab_before = node.sh("cat /etc/fstab");
    let plan = |state: &str| {
        format!(
            "resources:\n  - id: fs\n    filesystem: {{dev: \"{{{{ dev }}}}\", type: ext4}}\n  - id: m\n    mount: {{path: /mnt/data, src: \"{{{{ dev }}}}\", fstype: ext4, state: {state}}}\n"
        )
    };
    let vars = [format!("dev={}", disk.dev)];
    node.plan(&plan("mounted"));
    expect(&node.plumb("apply", &vars), 0, "mounted");
    assert!(node.sh("findmnt -n -o SOURCE /mnt/data").starts_with(&disk.dev));
    assert!(
        std::process::Command::new("findmnt")
            .arg("/mnt/data")
            .status()
            .is_ok_and(|s| !s.success()),
        "mounted in the node only"
    );
    let fstab = node.sh("cat /etc/fstab");
    assert!(fstab.starts_with(&fstab_before), "the node's fstab kept its lines");
    expect(&node.plumb("diff", &vars), 0, "converged");
    node.plan(&plan("absent"));
    expect(&node.plumb("apply", &vars), 0, "absent");
    assert_eq!(node.sh("findmnt -n /mnt/data || true"), "");
    assert_eq!(node.sh("cat /etc/fstab"), fstab_before, "back to the bytes it had");
    expect(&node.plumb("diff", &vars), 0, "converged");
}
