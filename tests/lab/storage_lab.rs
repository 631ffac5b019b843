//! The storage modules over SSH on tier-1 lab nodes (tests/lab): loop
//! devices made on this machine are visible in every node (loop devices are
//! global), and each node mounts them in its own mount namespace, with its
//! own /etc/fstab.
//!
//! Data migration runs on a tier-1b node, whose PID 1 is systemd: the
//! service that writes into the data is a real unit, really stopped and
//! started. The lab's root has no rsync, so these migrations also exercise
//! the `cp -ax` path, verified the same way.

use crate::common;
use crate::support::lab;
use crate::support::storage;

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
    let to = m["changes"][0]["to"].as_str().unwrap();
    assert!(
        to.contains(
            "units stopped meanwhile: plumb-writer.service; not running, left alone: plumb-not-running.service"
        ),
        "{to}"
    );

    let a = node.plumb("apply", &vars);
    expect(&a, 0, "migrated over SSH");
    let notes = resource(&a, "app-mount")["notes"].to_string();
    assert!(
        notes.contains("verified by sha256") && notes.contains("old data kept at /srv/app.plumb-old-"),
        "{notes}"
    );
    assert!(
        notes.contains("units stopped and started again: plumb-writer.service\""),
        "{notes}"
    );
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

/// A daemon in the manner of dockerd: socket-activated (`plumb-dockerd.socket`
/// listens on a unix socket and the service `Requires=` it), and while it
/// runs it holds a filesystem mounted below the data it keeps (as dockerd
/// holds its containers' overlays under /var/lib/docker), unmounted when it
/// stops. It never accepts a connection, so one that arrives while it runs
/// is still waiting when it stops — and systemd starts it again at once,
/// as it does dockerd for a client of /run/docker.sock.
const DOCKERD_SOCKET: &str = "[Unit]\nDescription=plumb test daemon socket\n\
    [Socket]\nListenStream=/run/plumb-dockerd.sock\n";
const DOCKERD_SERVICE: &str = "[Unit]\nDescription=plumb test daemon\n\
    Requires=plumb-dockerd.socket\nAfter=plumb-dockerd.socket\n\
    [Service]\n\
    ExecStartPre=/bin/sh -c 'echo started >> /var/log/plumb-dockerd.events'\n\
    ExecStartPre=/bin/mkdir -p /srv/app/overlay2/c1/merged\n\
    ExecStartPre=/bin/mount -t tmpfs plumb-overlay /srv/app/overlay2/c1/merged\n\
    ExecStart=/bin/sleep infinity\n\
    ExecStopPost=-/bin/umount /srv/app/overlay2/c1/merged\n\
    ExecStopPost=/bin/sh -c 'echo stopped >> /var/log/plumb-dockerd.events'\n";
/// A client of the daemon's socket, as a monitoring agent polls Docker's:
/// not in the plan's `stop` list.
const DOCKERD_CLIENT: &str = "[Service]\n\
    ExecStart=/usr/bin/perl -MIO::Socket::UNIX -e \"while (1) { IO::Socket::UNIX->new(Peer => '/run/plumb-dockerd.sock'); select(undef, undef, undef, 0.1) }\"\n";

const DAEMON_PLAN: &str = r#"
resources:
  - id: app-fs
    filesystem: {dev: "{{ dev }}", type: ext4, label: app}
  - id: app-mount
    mount:
      path: /srv/app
      src: "{{ dev }}"
      fstype: ext4
      migrate: {stop: [plumb-dockerd]}
"#;

/// A node running the socket-activated daemon over /srv/app, and its client.
fn node_with_daemon(extra_units: &[(&str, &str)]) -> Option<Node> {
    if !Lab::available() || !storage::available() {
        return None;
    }
    let node = Node::new(Lab::up_systemd(1));
    assert_eq!(node.sh("systemctl is-system-running --wait || true"), "running");
    node.sh("mkdir -p /srv/app/volumes/v1 && echo precious > /srv/app/volumes/v1/data");
    let units = [
        ("plumb-dockerd.socket", DOCKERD_SOCKET),
        ("plumb-dockerd.service", DOCKERD_SERVICE),
        ("plumb-dockerd-client.service", DOCKERD_CLIENT),
    ];
    for (name, text) in units.iter().chain(extra_units) {
        std::fs::write(node.view(&format!("/etc/systemd/system/{name}")), text).unwrap();
    }
    node.sh(
        "systemctl daemon-reload && systemctl start plumb-dockerd.service plumb-dockerd-client.service && sleep 0.5",
    );
    assert_eq!(
        node.sh("systemctl is-active plumb-dockerd.socket plumb-dockerd.service"),
        "active\nactive"
    );
    assert_eq!(
        node.sh("findmnt -n -o SOURCE /srv/app/overlay2/c1/merged"),
        "plumb-overlay"
    );
    Some(node)
}

#[test]
fn a_migration_stops_the_socket_that_would_start_the_service_again() {
    let Some(node) = node_with_daemon(&[]) else { return };
    let disk = LoopDev::new(node.dir.path(), "app", "64M");
    let vars = [format!("dev={}", disk.dev)];
    node.plan(DAEMON_PLAN);

    // The review names every unit that goes down, the socket found by itself.
    let d = node.plumb("diff", &vars);
    expect(&d, 2, "migration pending");
    let to = resource(&d, "app-mount")["changes"][0]["to"].to_string();
    assert!(
        to.contains(
            "units stopped meanwhile: plumb-dockerd.service, plumb-dockerd.socket (it can start plumb-dockerd.service)"
        ),
        "{to}"
    );

    let a = node.plumb("apply", &vars);
    expect(&a, 0, "migrated with the socket stopped");
    let notes = resource(&a, "app-mount")["notes"].to_string();
    assert!(
        notes.contains("units stopped and started again: plumb-dockerd.service plumb-dockerd.socket"),
        "{notes}"
    );
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    assert_eq!(node.sh("cat /srv/app/volumes/v1/data"), "precious");
    // Stopped once and started once, with its socket, on the new filesystem.
    assert_eq!(
        node.sh("cat /var/log/plumb-dockerd.events"),
        "started\nstopped\nstarted"
    );
    assert_eq!(
        node.sh("systemctl is-active plumb-dockerd.socket plumb-dockerd.service"),
        "active\nactive"
    );
    assert_eq!(
        node.sh("findmnt -n -o SOURCE /srv/app/overlay2/c1/merged"),
        "plumb-overlay",
        "the daemon's mount is back, on the new filesystem"
    );
}

/// A unit that pulls the daemon in each time it restarts, as a container's
/// unit with `Wants=docker.service` and `Restart=always` does.
const KEEPER: &str = "[Unit]\nWants=plumb-dockerd.service\nAfter=plumb-dockerd.service\nStartLimitIntervalSec=0\n\
    [Service]\nExecStart=/bin/sleep 0.3\nRestart=always\nRestartSec=200ms\n";

#[test]
fn a_migration_names_the_unit_that_started_a_stopped_service_again() {
    let Some(node) = node_with_daemon(&[("plumb-keeper.service", KEEPER)]) else {
        return;
    };
    node.sh("systemctl start plumb-keeper.service");
    let disk = LoopDev::new(node.dir.path(), "app", "64M");
    node.plan(DAEMON_PLAN);
    let a = node.plumb("apply", &[format!("dev={}", disk.dev)]);
    expect(&a, 1, "the daemon comes back during the migration");
    let err = resource(&a, "app-mount")["error"].to_string();
    assert!(
        err.contains("plumb-dockerd.service started again after it was stopped")
            && err.contains("plumb-keeper.service")
            && err.contains("holds its old data as before"),
        "{err}"
    );
    assert_eq!(node.sh("findmnt -n -o SOURCE /srv/app || true"), "", "nothing switched");
    assert_eq!(node.sh("cat /srv/app/volumes/v1/data"), "precious");
    assert_eq!(
        node.sh("systemctl is-active plumb-dockerd.socket plumb-dockerd.service"),
        "active\nactive",
        "the daemon and its socket run again"
    );
    assert!(!node.sh("cat /etc/fstab").contains("/srv/app"), "fstab untouched");
}

/// A runtime in the manner of k3s: `KillMode=process`, so stopping its unit
/// leaves its pods running, on overlays mounted elsewhere (here
/// /run/plumb-pod/rootfs) that are built from files below the data
/// (`lowerdir=/srv/app/k3s/…`). Its killall script stops the unit and
/// the pods, as `k3s-killall.sh` does.
const K3S_SERVICE: &str = "[Service]\nKillMode=process\n\
    ExecStartPre=/bin/mkdir -p /srv/app/k3s/snapshots/1 /run/plumb-pod/upper /run/plumb-pod/work /run/plumb-pod/rootfs\n\
    ExecStartPre=/bin/sh -c 'mountpoint -q /run/plumb-pod/rootfs || mount -t overlay plumb-pod -o lowerdir=/srv/app/k3s/snapshots/1,upperdir=/run/plumb-pod/upper,workdir=/run/plumb-pod/work /run/plumb-pod/rootfs'\n\
    ExecStart=/bin/sh -c 'unshare -m --propagation private /bin/sleep infinity & echo $$! > /run/plumb-pod/pid; exec /bin/sleep infinity'\n";
const K3S_KILLALL: &str =
    "#!/bin/sh\nsystemctl stop plumb-k3s.service\nkill $(cat /run/plumb-pod/pid)\numount /run/plumb-pod/rootfs\n";

#[test]
fn a_migration_refuses_while_pods_use_the_data_and_its_stop_command_stops_them() {
    if !Lab::available() || !storage::available() {
        return;
    }
    let node = Node::new(Lab::up_systemd(1));
    assert_eq!(node.sh("systemctl is-system-running --wait || true"), "running");
    std::fs::write(node.view("/etc/systemd/system/plumb-k3s.service"), K3S_SERVICE).unwrap();
    std::fs::write(node.view("/usr/local/bin/plumb-k3s-killall.sh"), K3S_KILLALL).unwrap();
    node.sh(
        "chmod 755 /usr/local/bin/plumb-k3s-killall.sh && mkdir -p /srv/app/k3s/snapshots/1 \
         && echo layer > /srv/app/k3s/snapshots/1/file && systemctl daemon-reload && systemctl start plumb-k3s",
    );
    assert_eq!(
        node.sh("cat /run/plumb-pod/rootfs/file"),
        "layer",
        "the pod runs on the data"
    );
    let pod = node.sh("sleep 0.2; cat /run/plumb-pod/pid");
    let disk = LoopDev::new(node.dir.path(), "app", "64M");
    let vars = [format!("dev={}", disk.dev)];
    let plan = |extra: &str| {
        format!(
            "resources:\n  - id: app-fs\n    filesystem: {{dev: \"{{{{ dev }}}}\", type: ext4}}\n  - id: app-mount\n    mount:\n      path: /srv/app\n      src: \"{{{{ dev }}}}\"\n      fstype: ext4\n      migrate: {{stop: [plumb-k3s]{extra}}}\n"
        )
    };

    // Stopping the unit is not enough: the pod still uses the data.
    node.plan(&plan(""));
    let a = node.plumb("apply", &vars);
    expect(&a, 1, "pods still use the data");
    let err = resource(&a, "app-mount")["error"].to_string();
    assert!(
        err.contains("use files there (/run/plumb-pod/rootfs)")
            && err.contains(&format!("held by processes that still run: {pod} (sleep)"))
            && err.contains("started again: plumb-k3s.service")
            && err.contains("holds its old data as before"),
        "{err}"
    );
    assert_eq!(node.sh("findmnt -n -o SOURCE /srv/app || true"), "", "nothing switched");
    assert_eq!(node.sh("systemctl is-active plumb-k3s"), "active", "started again");

    // With the killall script as its stop command, it moves.
    node.plan(&plan(", stop_command: /usr/local/bin/plumb-k3s-killall.sh"));
    let d = node.plumb("diff", &vars);
    let to = resource(&d, "app-mount")["changes"][0]["to"].to_string();
    assert!(
        to.contains("units stopped meanwhile: plumb-k3s.service; then `/usr/local/bin/plumb-k3s-killall.sh` runs"),
        "{to}"
    );
    let a = node.plumb("apply", &vars);
    expect(&a, 0, "migrated with the pods stopped");
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    assert_eq!(node.sh("systemctl is-active plumb-k3s"), "active", "started again");
    assert_eq!(
        node.sh("cat /run/plumb-pod/rootfs/file"),
        "layer",
        "the pod runs again, on the new filesystem"
    );
    assert!(node
        .sh("findmnt -n -o OPTIONS /run/plumb-pod/rootfs")
        .contains("lowerdir=/srv/app/k3s/snapshots/1"));
}

/// The daemon as dockerd is when its shutdown gives up on a container
/// (dockerd waits 15 s, then exits — "Force shutdown daemon" — with the
/// container killed but its overlay and shm still mounted below
/// /var/lib/docker, used by no process): it stops without unmounting its
/// container's tmpfs, nor an overlay built on a layer below the data.
const FORCED_SHUTDOWN: &str = "[Service]\n\
    ExecStartPre=/bin/mkdir -p /srv/app/overlay2/c2/lower /srv/app/overlay2/c2/merged /run/plumb-c2/upper /run/plumb-c2/work\n\
    ExecStartPre=/bin/sh -c 'echo layer > /srv/app/overlay2/c2/lower/file; mountpoint -q /srv/app/overlay2/c2/merged || mount -t overlay plumb-c2 -o lowerdir=/srv/app/overlay2/c2/lower,upperdir=/run/plumb-c2/upper,workdir=/run/plumb-c2/work /srv/app/overlay2/c2/merged'\n\
    ExecStopPost=\n\
    ExecStopPost=/bin/sh -c 'echo stopped >> /var/log/plumb-dockerd.events'\n";

#[test]
fn a_migration_unmounts_what_a_stopped_daemon_left_mounted_unless_something_uses_it() {
    let Some(node) = node_with_daemon(&[]) else { return };
    node.sh("mkdir -p /etc/systemd/system/plumb-dockerd.service.d");
    std::fs::write(
        node.view("/etc/systemd/system/plumb-dockerd.service.d/forced.conf"),
        FORCED_SHUTDOWN,
    )
    .unwrap();
    // The tmpfs of the fixture is mounted again only when it is not there.
    node.sh(
        "sed -i 's|^ExecStartPre=/bin/mount -t tmpfs plumb-overlay /srv/app/overlay2/c1/merged$|ExecStartPre=/bin/sh -c \"mountpoint -q /srv/app/overlay2/c1/merged \\|\\| mount -t tmpfs plumb-overlay /srv/app/overlay2/c1/merged\"|' \
         /etc/systemd/system/plumb-dockerd.service && systemctl daemon-reload && systemctl restart plumb-dockerd.service && sleep 0.3",
    );
    assert_eq!(node.sh("cat /srv/app/overlay2/c2/merged/file"), "layer");
    node.sh("systemctl stop plumb-dockerd.service plumb-dockerd.socket && systemctl start plumb-dockerd.service");
    assert_eq!(
        node.sh("findmnt -n -o FSTYPE /srv/app/overlay2/c1/merged; findmnt -n -o FSTYPE /srv/app/overlay2/c2/merged"),
        "tmpfs\noverlay",
        "mounted once each, and left mounted by a stop"
    );
    let disk = LoopDev::new(node.dir.path(), "app", "64M");
    let vars = [format!("dev={}", disk.dev)];
    node.plan(DAEMON_PLAN);

    // A filesystem the user mounted below the path is the user's: refused.
    let own = LoopDev::new(node.dir.path(), "own", "16M");
    node.sh(&format!(
        "mkfs.ext4 -q {} && mkdir -p /srv/app/volumes/v2 && mount {} /srv/app/volumes/v2",
        own.dev, own.dev
    ));
    let a = node.plumb("apply", &vars);
    expect(&a, 1, "a real filesystem below the path");
    let err = resource(&a, "app-mount")["error"].to_string();
    assert!(
        err.contains("filesystems are mounted below /srv/app") && err.contains("/srv/app/volumes/v2"),
        "{err}"
    );
    assert_eq!(node.sh("findmnt -n -o SOURCE /srv/app || true"), "", "nothing switched");
    node.sh("umount /srv/app/volumes/v2");

    // A leftover mount that a live process uses (its cwd is there): refused,
    // the process named.
    node.sh("systemd-run -q --unit plumb-holder -p WorkingDirectory=/srv/app/overlay2/c1/merged /bin/sleep infinity && sleep 0.3");
    let holder = node.sh("systemctl show -p MainPID --value plumb-holder");
    let a = node.plumb("apply", &vars);
    expect(&a, 1, "a live process uses the leftover mount");
    let err = resource(&a, "app-mount")["error"].to_string();
    assert!(
        err.contains(&format!("held by processes that still run: {holder} (sleep)"))
            && err.contains("holds its old data as before"),
        "{err}"
    );
    assert_eq!(node.sh("findmnt -n -o SOURCE /srv/app || true"), "", "nothing switched");
    assert_eq!(node.sh("findmnt -n -o FSTYPE /srv/app/overlay2/c1/merged"), "tmpfs");
    node.sh("systemctl stop plumb-holder");

    // Used by nothing: unmounted, named, and the data moves.
    let a = node.plumb("apply", &vars);
    expect(&a, 0, "migrated, the leftovers unmounted");
    let notes = resource(&a, "app-mount")["notes"].to_string();
    assert!(
        notes.contains(
            "unmounted what the stopped units left mounted, used by no process: /srv/app/overlay2/c2/merged /srv/app/overlay2/c1/merged"
        ),
        "{notes}"
    );
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    assert_eq!(node.sh("cat /srv/app/volumes/v1/data"), "precious");
    assert_eq!(
        node.sh("cat /srv/app/overlay2/c2/merged/file"),
        "layer",
        "the daemon mounts them again, on the new filesystem"
    );
    assert_eq!(node.sh("findmnt -n -o FSTYPE /srv/app/overlay2/c1/merged"), "tmpfs");
    assert!(node
        .sh("findmnt -n -o OPTIONS /srv/app/overlay2/c2/merged")
        .contains("lowerdir=/srv/app/overlay2/c2/lower"));
}

/// A configuration file that notifies the service, placed before the
/// migration of the service's data: the migration stops and starts the
/// service after the file changed, so it already reads it.
const CONF_AND_MIGRATION_PLAN: &str = r#"
resources:
  - id: app-conf
    file: {path: /etc/plumb-writer.conf, content: "level=2\n"}
    notify: [writer]
  - id: app-fs
    filesystem: {dev: "{{ dev }}", type: ext4, label: app}
  - id: app-mount
    mount:
      path: /srv/app
      src: "{{ dev }}"
      fstype: ext4
      migrate: {stop: [plumb-writer]}
  - id: writer
    service: {name: plumb-writer, state: running}
"#;

#[test]
fn a_service_notified_before_its_data_migrates_is_restarted_once() {
    let Some(node) = node_with_writer() else { return };
    let disk = LoopDev::new(node.dir.path(), "app", "128M");
    let vars = [format!("dev={}", disk.dev)];
    node.plan(CONF_AND_MIGRATION_PLAN);
    assert_eq!(node.sh("cat /var/log/plumb-writer.events"), "started");

    let d = node.plumb("diff", &vars);
    expect(&d, 2, "the file and the migration pending");
    // The migration's downtime: the unit it stops, and why its length is
    // not known here (the lab's data sits on an overlay, not a disk).
    let down = resource(&d, "app-mount")["downtime"].clone();
    assert_eq!(down[0]["unit"], "plumb-writer.service", "{down}");
    assert!(
        down[0]["expected"]
            .as_str()
            .unwrap()
            .starts_with("unknown: the time to copy and check"),
        "{down}"
    );
    // The review says why the notified service restarts with the migration
    // only: every restart the apply makes is in it.
    let review = Plumb::over_ssh(
        "diff",
        &node.dir.path().join("plan.yaml"),
        &node.dir.path().join("inventory.yaml"),
        &node.lab.ssh_config(),
        "markdown",
    )
    .vars(&vars)
    .run();
    expect(&review, 2, "the review");
    assert!(
        review.stdout.contains("### `writer` (service): no change of its own")
            && review
                .stdout
                .contains("not restarted again: `app-mount` started plumb-writer.service after `app-conf` changed")
            && review.stdout.contains("### Expected downtime")
            && review
                .stdout
                .contains("| `plumb-writer.service` | unknown (see the steps) | 1 |"),
        "{}",
        review.stdout
    );
    let a = node.plumb("apply", &vars);
    expect(&a, 0, "applied");
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    assert_eq!(
        node.sh("cat /var/log/plumb-writer.events"),
        "started\nstopped\nstarted",
        "stopped and started once, by the migration, after the file changed: {}",
        a.stdout
    );
    let measured = resource(&a, "app-mount")["downtime"][0]["actual_secs"].as_f64();
    assert!(
        measured.is_some_and(|s| s > 0.0),
        "the migration measured how long the unit was down: {}",
        a.stdout
    );
    let notes = resource(&a, "writer")["notes"].to_string();
    assert!(
        notes.contains("not restarted again: `app-mount` started plumb-writer.service after `app-conf` changed"),
        "{notes}"
    );
    assert_eq!(node.sh("systemctl is-active plumb-writer"), "active");
    expect(&node.plumb("diff", &vars), 0, "converged");
}

/// `plumb rollback RUN --switch-back` of a migration: the review shows the
/// switch back as a disruptive step with its downtime, before the fstab
/// line is restored; applied, the mount point holds the old copy again
/// (every file as before), the new filesystem is unmounted and fstab is as
/// it was. Without the flag the migration is listed as not undone, naming
/// the flag.
#[test]
fn a_rollback_switches_a_migrated_mount_back_to_the_old_copy_when_asked() {
    let Some(node) = node_with_writer() else { return };
    let disk = LoopDev::new(node.dir.path(), "app", "128M");
    let vars = [format!("dev={}", disk.dev)];
    let before = data(&node);
    let fstab_before = node.sh("cat /etc/fstab");
    node.plan(MIGRATION_PLAN);
    let inv = node.dir.path().join("inventory.yaml");
    // Reviewed and saved first: the writer keeps adding to the data, and a
    // saved plan does not count the bytes it holds as the world moving.
    let reviewed = node.dir.path().join("migration.plan");
    let d = Plumb::over_ssh(
        "diff",
        &node.dir.path().join("plan.yaml"),
        &inv,
        &node.lab.ssh_config(),
        "json",
    )
    .vars(&vars)
    .arg("--out")
    .arg(&reviewed)
    .run();
    expect(&d, 2, "the migration reviewed");
    let grown = node.sh("sleep 1; du -sb /srv/app | cut -f 1");
    let a = Plumb::new()
        .arg("apply")
        .arg(&reviewed)
        .args(["--yes", "--format", "json", "--ssh-config"])
        .arg(node.lab.ssh_config())
        .vars(&vars)
        .run();
    expect(
        &a,
        0,
        &format!("the saved migration applies though the data grew to {grown} bytes"),
    );
    let run = a.json()["run_id"].as_str().unwrap().to_string();
    assert!(node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev));
    let rollback = |extra: &[&str]| {
        Plumb::new()
            .args(["rollback", &run, "--format", "json", "-i"])
            .arg(&inv)
            .arg("--ssh-config")
            .arg(node.lab.ssh_config())
            .args(extra)
            .run()
    };

    let plain = rollback(&[]);
    expect(&plain, 2, "the fstab line is restored");
    let cannot = plain.json()["cannot_undo"].to_string();
    assert!(cannot.contains("--switch-back"), "{cannot}");

    let saved = node.dir.path().join("rollback.plan");
    let review = rollback(&["--switch-back", "--out", saved.to_str().unwrap()]);
    expect(&review, 2, "the switch back pending");
    let sw = resource(&review, "switch back /srv/app");
    assert_eq!(sw["risk"], "disruptive", "{sw}");
    assert!(
        sw["changes"][0]["to"]
            .as_str()
            .unwrap()
            .contains("what was written since the migration stays there"),
        "{sw}"
    );
    assert_eq!(sw["downtime"][0]["unit"], "plumb-writer.service", "{sw}");
    assert_eq!(sw["downtime"][0]["kind"], "stop", "{sw}");
    assert!(!review.json()["cannot_undo"]
        .to_string()
        .contains("the mount, and the data"));
    assert!(
        node.sh("findmnt -n -o SOURCE /srv/app").starts_with(&disk.dev),
        "a review changes nothing"
    );

    let applied = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .args(["--yes", "--format", "json", "--ssh-config"])
        .arg(node.lab.ssh_config())
        .run();
    expect(&applied, 0, "switched back");
    assert_eq!(
        node.sh("findmnt -n -o SOURCE --mountpoint /srv/app || true"),
        "",
        "unmounted"
    );
    assert_eq!(
        data(&node),
        before,
        "the old copy is back at /srv/app, every file as it was"
    );
    assert_eq!(node.sh("cat /etc/fstab"), fstab_before, "fstab as before the run");
    assert_eq!(node.sh("systemctl is-active plumb-writer"), "active");
    assert!(node.sh("ls -d /srv/app.plumb-old-* 2>/dev/null || true").is_empty());
    let down = resource(&applied, "switch back /srv/app")["downtime"][0]["actual_secs"].as_f64();
    // Measured (a fast switch may take under 0.05 s: it prints 0.0).
    assert!(down.is_some_and(|s| (0.0..60.0).contains(&s)), "{}", applied.stdout);

    let again = rollback(&["--switch-back"]);
    expect(&again, 0, "nothing left to undo");
}
