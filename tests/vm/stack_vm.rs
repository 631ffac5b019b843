//! Tier 2, the full stack: the TwisterLab phase-1 plan, as shipped, on a VM
//! that runs what the edge server runs (`vm.sh up --stack`: systemd, Docker,
//! containerd, and a registry over HTTPS with its own CA and basic auth
//! standing in for Harbor), with real data in use before the change. The
//! test follows the meeting's runbook: review, saved plan, apply, checks
//! from outside plumb, drift, an LVM extension of a disk grown while the VM
//! runs; and the failure rehearsal: a new disk too small for Docker's data.
//!
//! What cannot be here: k3s is not packaged for Debian and nothing can be
//! downloaded, so `has_k3s: false` skips the k3s service and the pod and
//! DiskPressure checks (the plan keeps them), and `registries.yaml` is
//! checked as a file. Each step's time is printed.

use crate::common;
use crate::support::vm;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{expect, resource, Outcome, Plumb};
use vm::Vm;

const REGISTRY: &str = "harbor.vm.test";
const IMAGE: &str = "harbor.vm.test/library/plumbbox:v1";
/// systemd's "unit started" journal message.
const STARTED: &str = "MESSAGE_ID=39f53479d3a045ac8e11786248231fbf";

/// The stack VM, its seeded data, an inventory for it, and a step clock.
struct Stack {
    vm: Vm,
    dir: tempfile::TempDir,
    password: String,
    clock: Instant,
}

impl Stack {
    /// Boots the stack VM and seeds it (tests/vm/stack-seed.sh).
    fn up(disks: usize, size: &str, inventory_vars: &str) -> Stack {
        let t = Instant::now();
        let vm = Vm::up_stack(disks, size);
        eprintln!("[step] stack VM booted to SSH in {:.1?}", t.elapsed());
        let dir = tempfile::Builder::new().prefix("plumb-stack-vm-").tempdir().unwrap();
        let mut s = Stack {
            vm,
            dir,
            password: String::new(),
            clock: Instant::now(),
        };
        // Docker, containerd and the registry start after sshd.
        s.sh("systemctl is-system-running --wait >/dev/null || true; systemctl is-active docker containerd docker-registry");
        s.step("services up");
        let seed = std::fs::read_to_string(common::repo().join("tests/vm/stack-seed.sh")).unwrap();
        s.sh(&format!(
            "cat > /root/stack-seed.sh <<'PLUMB_SEED'\n{seed}PLUMB_SEED\nsh /root/stack-seed.sh"
        ));
        s.step("real data seeded (image, registry push, container, volume, bind, containerd content)");
        s.password = s.sh(". /etc/plumb-vm/registry.env && printf %s \"$REGISTRY_PASSWORD\"");
        let ca = s.dir.path().join("harbor-ca.crt");
        std::fs::write(&ca, s.sh("cat /etc/plumb-vm/ca.crt")).unwrap();
        std::fs::write(
            s.dir.path().join("inventory.yaml"),
            format!(
                "hosts:\n  vm:\n    vars:\n      registry: {REGISTRY}\n      harbor_ca_file: {}\n      has_k3s: false\n{inventory_vars}\
                 groups:\n  edge:\n    hosts: [vm]\n",
                ca.display()
            ),
        )
        .unwrap();
        s
    }

    fn step(&mut self, what: &str) {
        eprintln!("[step] {what}: {:.1?}", self.clock.elapsed());
        self.clock = Instant::now();
    }

    fn sh(&self, cmd: &str) -> String {
        self.vm.ssh_ok(cmd)
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.yaml")
    }

    fn plumb(&self, cmd: &str, plan: &Path, format: &str, vars: &[&str]) -> Outcome {
        Plumb::over_ssh(cmd, plan, &self.inventory(), &self.vm.ssh_config(), format)
            .vars(vars)
            .env("HARBOR_PASSWORD", &self.password)
            .run()
    }

    /// Waits (up to 120 s) for the container `name` to run: Docker starts
    /// a container with a restart policy again after dockerd starts, not
    /// before `systemctl start docker` returns (it restarts one whose task
    /// a forced shutdown left behind through its restart manager, with a
    /// back-off).
    fn running(&self, name: &str) {
        let state = self.sh(&format!(
            "for i in $(seq 240); do [ \"$(docker inspect -f '{{{{.State.Running}}}}' {name})\" = true ] && break; sleep 0.5; done; \
             docker inspect -f '{{{{.State.Running}}}} {{{{.State.Status}}}} {{{{.State.Error}}}} restarts={{{{.RestartCount}}}}' {name}"
        ));
        if !state.starts_with("true ") {
            let log = self.sh("docker ps -a; journalctl -b -o cat -u docker.service | tail -n 25");
            panic!("container {name} runs again: {state}\n{log}");
        }
    }

    /// How many times systemd has started docker.service since boot.
    fn docker_starts(&self) -> usize {
        self.sh(&format!("journalctl -b -q -o cat -u docker.service {STARTED} | wc -l"))
            .trim()
            .parse()
            .unwrap()
    }
}

fn phase1() -> PathBuf {
    common::repo().join("plans/twisterlab/phase1.yaml")
}

/// Where the rehearsal's review document is kept: target/stack-vm/.
fn artifacts() -> PathBuf {
    let d = common::repo().join("target/stack-vm");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn notes(o: &Outcome, id: &str) -> String {
    resource(o, id)["notes"].to_string()
}

#[test]
fn the_phase1_runbook_moves_a_running_docker_host_onto_the_new_disk() {
    need_vm!();
    let t_all = Instant::now();
    // vdb: the new SSD; vdc: the disk of the existing data volume group.
    let mut s = Stack::up(
        2,
        "4G",
        "      ssd_disks: [/dev/vdb]\n      data_disks: [/dev/vdc]\n      docker_size: 1G\n      rancher_size: 100%FREE\n\
         \x20     data_size: 2G\n      min_free_docker_gib: 0.5\n",
    );
    s.sh(
        "export LVM_SUPPRESS_FD_WARNINGS=1; vgcreate -q vg_data /dev/vdc && lvcreate -q -y -n data -L 1G vg_data \
         && mkfs.ext4 -q /dev/vg_data/data",
    );
    // Before: Docker on the root disk, the registry not trusted by Docker.
    assert_eq!(s.sh("findmnt -n -o TARGET -T /var/lib/docker").trim(), "/");
    s.sh(&format!("test ! -e /etc/docker/certs.d/{REGISTRY}"));
    let images_before = s.sh("docker images --format '{{.Repository}}:{{.Tag}}' | sort");
    let volumes_before = s.sh("docker volume ls -q | sort");
    let containerd_before = s.sh("ctr -n plumb images ls -q");
    assert!(containerd_before.contains(IMAGE), "{containerd_before}");
    s.step("state before recorded");
    if std::env::var_os("PLUMB_STACK_DEBUG").is_some() {
        eprintln!(
            "{}",
            s.sh("docker ps -a; systemctl list-units --type=socket --no-legend docker*")
        );
    }

    // 1. The review document, for the meeting.
    let review = s.plumb("diff", &phase1(), "markdown", &[]);
    expect(&review, 2, "changes pending on the Docker host");
    std::fs::write(artifacts().join("phase1-review.md"), &review.stdout).unwrap();
    eprintln!("review document: {}", artifacts().join("phase1-review.md").display());
    assert!(!review.stdout.contains(&s.password), "the password leaked");
    assert!(review.stdout.contains("docker.socket"), "{}", review.stdout);
    s.step("diff --format markdown");

    // 2. The saved plan, applied.
    let saved = s.dir.path().join("review.plan");
    let out = Plumb::over_ssh("diff", &phase1(), &s.inventory(), &s.vm.ssh_config(), "text")
        .arg("--out")
        .arg(&saved)
        .env("HARBOR_PASSWORD", &s.password)
        .run();
    expect(&out, 2, "the saved plan");
    s.step("diff --out review.plan");
    let starts = s.docker_starts();
    let applied = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .args(["--yes", "--format", "json", "--ssh-config"])
        .arg(s.vm.ssh_config())
        .env("HARBOR_PASSWORD", &s.password)
        .run();
    s.step("apply review.plan");
    expect(&applied, 0, "phase 1 applied on the Docker host");
    eprintln!("docker-mount: {}", notes(&applied, "docker-mount"));
    // The copy's progress reached the terminal while it ran (a plain line
    // on stderr, which is a pipe here), and the report has its figures.
    assert!(
        applied
            .stderr
            .lines()
            .any(|l| l.starts_with("vm: docker-mount: copying ") && l.contains(" of ")),
        "progress of the copy: {}",
        applied.stderr
    );
    assert!(
        notes(&applied, "docker-mount").contains("copied "),
        "{}",
        notes(&applied, "docker-mount")
    );
    eprintln!("docker: {}", notes(&applied, "docker"));

    // 3. Checked from outside plumb.
    assert_eq!(
        s.sh("findmnt -n -o SOURCE /var/lib/docker").trim(),
        "/dev/mapper/vg_fast-docker"
    );
    assert_eq!(
        s.sh("docker info --format '{{.DockerRootDir}}'").trim(),
        "/var/lib/docker"
    );
    assert_eq!(
        s.sh("docker images --format '{{.Repository}}:{{.Tag}}' | sort"),
        images_before
    );
    assert_eq!(s.sh("docker volume ls -q | sort"), volumes_before);
    s.running("app");
    s.sh("cd /var/lib/docker/volumes/appdata/_data && sha256sum -c --quiet /root/seed.sha256");
    s.sh("docker exec app cat /host/hello.txt | grep -q 'bound from the host'");
    assert!(s
        .sh("ls -d /var/lib/docker.plumb-old-*")
        .contains("/var/lib/docker.plumb-old-"));
    // fstab's fields, one blank between them (plumb writes tabs).
    let fstab = s
        .sh("cat /etc/fstab")
        .split('\n')
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(fstab.contains("/dev/vg_fast/docker /var/lib/docker ext4"), "{fstab}");
    assert!(fstab.contains("/dev/vg_fast/rancher /var/lib/rancher xfs"), "{fstab}");
    assert!(
        s.sh("ctr -n plumb images ls -q").contains(IMAGE),
        "containerd's content is kept"
    );
    let mirrors = s.sh("docker info --format '{{json .RegistryConfig.Mirrors}}'");
    assert!(mirrors.contains("https://harbor.vm.test/"), "{mirrors}");
    assert_eq!(s.sh("docker info --format '{{.LoggingDriver}}'").trim(), "json-file");
    let logs = s.sh(&format!(
        "docker create --name logprobe {IMAGE} true >/dev/null && docker inspect -f '{{{{json .HostConfig.LogConfig}}}}' logprobe; docker rm logprobe >/dev/null"
    ));
    assert!(
        logs.contains("\"max-size\":\"100m\"") && logs.contains("\"max-file\":\"3\""),
        "{logs}"
    );
    s.sh(&format!("docker pull -q {IMAGE}"));
    s.sh(
        ". /etc/plumb-vm/registry.env; ctr -n pulltest images pull --hosts-dir /etc/containerd/certs.d \
         --user \"$REGISTRY_USER:$REGISTRY_PASSWORD\" docker.io/library/plumbbox:v1 >/dev/null",
    );
    let registries = s.sh("cat /etc/rancher/k3s/registries.yaml");
    for want in [
        "mirrors:",
        "docker.io:",
        "endpoint:",
        "https://harbor.vm.test",
        "configs:",
        "auth:",
        "tls:",
        "ca_file:",
    ] {
        assert!(
            registries.contains(want),
            "registries.yaml as k3s documents it: {want}\n{registries}"
        );
    }
    assert_eq!(s.docker_starts(), starts + 1, "docker started once: {}", applied.stdout);
    for id in ["go-root-usage", "go-docker-space", "go-registry-answers"] {
        assert_eq!(resource(&applied, id)["status"], "ok", "{id}");
    }
    for id in ["go-pods-running", "go-no-disk-pressure", "k3s"] {
        assert_eq!(resource(&applied, id)["status"], "skipped", "{id}");
    }
    eprintln!("skipped here, kept in the plan: k3s, go-pods-running, go-no-disk-pressure (k3s is not packaged for Debian and nothing can be downloaded into the VM)");
    s.step("checks from outside plumb");

    // 4. Converged; a hand edit is drift, named; re-apply restarts once.
    expect(&s.plumb("diff", &phase1(), "text", &[]), 0, "no drift after apply");
    s.sh("sed -i 's/100m/500m/' /etc/docker/daemon.json");
    let drift = s.plumb("diff", &phase1(), "text", &[]);
    expect(&drift, 2, "a hand edit of daemon.json");
    assert!(drift.stdout.contains("log-opts.max-size"), "{}", drift.stdout);
    let starts = s.docker_starts();
    let fix = s.plumb("apply", &phase1(), "json", &[]);
    expect(&fix, 0, "re-applied");
    assert!(s.sh("cat /etc/docker/daemon.json").contains("\"100m\""));
    assert_eq!(s.docker_starts(), starts + 1, "docker restarted once for the fix");
    s.running("app");
    s.step("drift found and repaired");

    // 5. The LVM extension: the disk grows while the VM runs, the volume
    // group with it (pvresize), Docker's volume raised with --var.
    let before = s
        .sh("df -B1 --output=size /var/lib/docker | tail -n 1")
        .trim()
        .parse::<u64>()
        .unwrap();
    s.vm.resize_disk(0, "8G");
    let grow = s.plumb("apply", &phase1(), "json", &["docker_size=3G", "min_free_docker_gib=2"]);
    expect(&grow, 0, "the docker volume grown");
    let after = s
        .sh("df -B1 --output=size /var/lib/docker | tail -n 1")
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(after > before + (3 << 29), "{before} → {after}");
    assert_eq!(resource(&grow, "go-docker-space")["status"], "ok");
    s.sh("cd /var/lib/docker/volumes/appdata/_data && sha256sum -c --quiet /root/seed.sha256");
    s.running("app");
    s.step("LVM extension (block_resize, pvresize, LV and filesystem grown online)");
    eprintln!("[step] rehearsal total: {:.1?}", t_all.elapsed());
}

#[test]
fn phase1_on_a_disk_too_small_fails_before_the_switch_and_docker_keeps_running() {
    need_vm!();
    let t_all = Instant::now();
    let mut s = Stack::up(
        2,
        "256M",
        "      ssd_disks: [/dev/vdb]\n      data_disks: [/dev/vdc]\n      docker_size: 32M\n      rancher_size: 100%FREE\n\
         \x20     data_size: 128M\n      min_free_docker_gib: 0\n",
    );
    // More data than the new volume holds.
    s.sh("head -c 64M /dev/urandom > /var/lib/docker/volumes/appdata/_data/big && cp /etc/fstab /root/fstab.before");
    let applied = s.plumb("apply", &phase1(), "json", &[]);
    s.step("apply on a disk too small");
    expect(&applied, 1, "the migration cannot fit");
    let why = resource(&applied, "docker-mount")["error"].to_string();
    eprintln!("docker-mount: {why}");
    assert_eq!(resource(&applied, "docker-mount")["status"], "failed");
    assert!(
        why.contains("space") || why.contains("fit"),
        "the report says why: {why}"
    );
    assert_eq!(s.sh("findmnt -n -o TARGET -T /var/lib/docker").trim(), "/");
    assert_eq!(
        s.sh("docker info --format '{{.DockerRootDir}}'").trim(),
        "/var/lib/docker"
    );
    s.running("app");
    s.sh("cd /var/lib/docker/volumes/appdata/_data && sha256sum -c --quiet /root/seed.sha256");
    s.sh("cmp /etc/fstab /root/fstab.before");
    s.step("checked: Docker on the old data, container running, fstab unchanged");
    eprintln!("[step] failure rehearsal total: {:.1?}", t_all.elapsed());
}
