//! Tier 2: the storage modules against real LVM, in a qemu VM reached over
//! SSH (tests/vm). A volume group from two disks; a logical volume grown
//! from 1 GiB to 2 GiB with its mounted ext4 and its data intact; XFS
//! grown, mounted and not; `100%FREE` that converges and grows again when a
//! disk grows or is added; shrinking refused (and, when allowed, done to an
//! unmounted ext4 without loss); a mounted volume never removed; and the TwisterLab
//! phase-1 storage plan previewed on a fresh VM (the whole chain), applied,
//! then re-applied with nothing to do.
//!
//! Each test boots its own VM (about 20–30 s in TCG); `tests/vm/run-tests.sh`
//! runs this tier with `PLUMB_VM_REQUIRE=1`.

use crate::common;
use crate::support::vm;

use std::path::PathBuf;
use std::time::Instant;

use common::{expect, resource, Outcome, Plumb};
use vm::Vm;

/// A VM with a folder for plans and its inventory (host `vm`, in group `edge`).
struct VmRig {
    vm: Vm,
    dir: tempfile::TempDir,
}

impl VmRig {
    fn up(disks: usize) -> VmRig {
        let t = Instant::now();
        let vm = Vm::up_with(disks, "4G");
        eprintln!("VM up in {:.1?}", t.elapsed());
        let dir = tempfile::Builder::new().prefix("plumb-storage-vm-").tempdir().unwrap();
        std::fs::write(
            dir.path().join("inventory.yaml"),
            "hosts:\n  vm: {}\ngroups:\n  edge:\n    hosts: [vm]\n",
        )
        .unwrap();
        VmRig { vm, dir }
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.yaml")
    }

    fn write_plan(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("plan.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `plumb CMD PLAN` against the VM, JSON out.
    fn run(&self, cmd: &str, plan: &std::path::Path, vars: &[&str]) -> Outcome {
        self.run_format(cmd, plan, vars, "json")
    }

    fn run_format(&self, cmd: &str, plan: &std::path::Path, vars: &[&str], format: &str) -> Outcome {
        let p = Plumb::over_ssh(cmd, plan, &self.inventory(), &self.vm.ssh_config(), format).vars(vars);
        let t = Instant::now();
        let out = p.run();
        eprintln!("plumb {cmd}: {:.1?} (exit {})", t.elapsed(), out.code);
        out
    }

    fn sh(&self, cmd: &str) -> String {
        self.vm.ssh_ok(cmd)
    }

    /// A logical volume's size in bytes.
    fn lv_bytes(&self, lv: &str) -> u64 {
        self.sh(&format!(
            "LVM_SUPPRESS_FD_WARNINGS=1 lvs --noheadings --units b --nosuffix -o lv_size {lv}"
        ))
        .trim()
        .parse()
        .unwrap()
    }

    /// The size of the filesystem mounted at `path`, in bytes.
    fn df_bytes(&self, path: &str) -> u64 {
        self.sh(&format!("df -B1 --output=size {path} | tail -n 1"))
            .trim()
            .parse()
            .unwrap()
    }
}

const GIB: u64 = 1 << 30;

fn volumes_plan(data: &str, logs: &str, extra: &str) -> String {
    format!(
        r#"
plan: volumes
hosts: [edge]
resources:
  - id: vg
    lvm.vg: {{name: vg0, pvs: [/dev/vdb, /dev/vdc], pvresize: true}}
  - id: data-lv
    lvm.lv: {{vg: vg0, name: data, size: {data}}}
  - id: data-fs
    filesystem: {{dev: /dev/vg0/data, type: ext4}}
  - id: data-mount
    mount: {{path: /srv/data, src: /dev/vg0/data, fstype: ext4, opts: [defaults, noatime]}}
  - id: logs-lv
    lvm.lv: {{vg: vg0, name: logs, size: {logs}}}
  - id: logs-fs
    filesystem: {{dev: /dev/mapper/vg0-logs, type: xfs}}
  - id: logs-mount
    mount: {{path: /srv/logs, src: /dev/mapper/vg0-logs, fstype: xfs}}
{extra}"#
    )
}

#[test]
fn logical_volumes_grow_with_their_filesystems_and_never_shrink_by_surprise() {
    need_vm!();
    let rig = VmRig::up(3);

    // A volume group from two disks, two volumes with their filesystems
    // (and a configuration file that follows the sizes).
    let conf = |size: &str| {
        format!("  - id: app-conf\n    file: {{path: /etc/plumb-app.conf, content: \"data = {size}\\n\"}}\n")
    };
    let plan = rig.write_plan(&volumes_plan("1G", "1G", &conf("1G")));
    let d = rig.run("diff", &plan, &[]);
    expect(&d, 2, "fresh VM: everything pending");
    expect(&rig.run("apply", &plan, &[]), 0, "created");
    assert_eq!(
        rig.sh("LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o pv_count vg0")
            .trim(),
        "2",
        "a volume group from two disks"
    );
    assert_eq!(rig.lv_bytes("vg0/data"), GIB);
    rig.sh("head -c 50000000 /dev/urandom > /srv/data/blob && sync && sha256sum /srv/data/blob > /root/blob.sum");
    rig.sh("head -c 1000000 /dev/urandom > /srv/logs/log && sha256sum /srv/logs/log > /root/log.sum");
    expect(&rig.run("diff", &plan, &[]), 0, "converged");

    // 1G → 2G: the mounted ext4 grows with it, the data stays.
    let plan = rig.write_plan(&volumes_plan("2G", "1536M", &conf("2G")));
    let d = rig.run("diff", &plan, &[]);
    expect(&d, 2, "growth pending");
    let r = resource(&d, "data-lv");
    assert_eq!(r["risk"], "disruptive", "growing a mounted filesystem online: {r}");
    assert_eq!(r["changes"][0]["from"], "1 GiB");
    assert_eq!(r["changes"][0]["to"], "2 GiB, ext4 grown with it");
    assert_eq!(
        resource(&d, "logs-lv")["changes"][0]["to"],
        "1.5 GiB, xfs grown with it"
    );
    let a = rig.run("apply", &plan, &[]);
    expect(&a, 0, "grown");
    assert_eq!(rig.lv_bytes("vg0/data"), 2 * GIB);
    let df = rig.df_bytes("/srv/data");
    assert!(df > 1900 << 20, "ext4 grown online to fill 2 GiB: {df}");
    let df = rig.df_bytes("/srv/logs");
    assert!(df > 1400 << 20, "xfs grown online to fill 1.5 GiB: {df}");
    rig.sh("sha256sum -c /root/blob.sum && sha256sum -c /root/log.sum");
    // Its rollback restores the configuration and says that the volumes
    // are not shrunk back (nor their filesystems).
    let run = a.json()["run_id"].as_str().unwrap().to_string();
    let saved = rig.dir.path().join("rollback.plan");
    let review = Plumb::new()
        .args(["rollback", &run, "--format", "json", "-i"])
        .arg(rig.inventory())
        .arg("--ssh-config")
        .arg(rig.vm.ssh_config())
        .arg("--out")
        .arg(&saved)
        .run();
    expect(&review, 2, "the configuration to restore");
    let cannot = review.json()["cannot_undo"].to_string();
    assert!(
        cannot.contains("data-lv") && cannot.contains("logs-lv") && cannot.contains("not shrunk back"),
        "{cannot}"
    );
    let undone = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .args(["--yes", "--format", "json", "--ssh-config"])
        .arg(rig.vm.ssh_config())
        .run();
    expect(&undone, 0, "rolled back");
    assert_eq!(rig.sh("cat /etc/plumb-app.conf"), "data = 1G\n");
    assert_eq!(rig.lv_bytes("vg0/data"), 2 * GIB, "the volume stays grown");
    rig.sh("sha256sum -c /root/blob.sum");
    let plan = rig.write_plan(&volumes_plan("2G", "1536M", ""));
    let again = rig.run("apply", &plan, &[]);
    expect(&again, 0, "re-apply");
    assert_eq!(
        again.summary("changed"),
        0,
        "converged within one extent: {}",
        again.stdout
    );

    // An unmounted XFS is grown too (plumb mounts it at a temporary place).
    rig.sh("umount /srv/logs && lvextend -q -L 1792M vg0/logs");
    // (`grow` on the filesystem resource itself: a second `filesystem` on
    // the same device is refused.)
    let plan = rig.write_plan(&volumes_plan("2G", "1792M", "").replace(
        "filesystem: {dev: /dev/mapper/vg0-logs, type: xfs}",
        "filesystem: {dev: /dev/mapper/vg0-logs, type: xfs, grow: true}",
    ));
    assert!(std::fs::read_to_string(&plan)
        .unwrap()
        .contains("type: xfs, grow: true"));
    let d = rig.run("diff", &plan, &[]);
    expect(&d, 2, "the volume grew by hand, its xfs did not");
    assert_eq!(resource(&d, "logs-fs")["changes"][0]["field"], "size");
    expect(&rig.run("apply", &plan, &[]), 0, "xfs grown and mounted again");
    assert!(rig.df_bytes("/srv/logs") > 1700 << 20);
    rig.sh("sha256sum -c /root/log.sum");
    expect(&rig.run("diff", &plan, &[]), 0, "converged (xfs slack tolerated)");

    // 100%FREE: takes the rest, converges, and grows again with the group.
    let rest = "  - id: rest-lv\n    lvm.lv: {vg: vg0, name: rest, size: 100%FREE}\n";
    let plan = rig.write_plan(&volumes_plan("2G", "1792M", rest));
    expect(&rig.run("apply", &plan, &[]), 0, "rest created");
    assert_eq!(
        rig.sh("LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o vg_free_count vg0")
            .trim(),
        "0"
    );
    let again = rig.run("apply", &plan, &[]);
    expect(&again, 0, "100%FREE re-applied");
    assert_eq!(again.summary("changed"), 0, "100%FREE converges: {}", again.stdout);
    expect(&rig.run("diff", &plan, &[]), 0, "diff: converged");
    let before = rig.lv_bytes("vg0/rest");
    rig.vm.resize_disk(1, "6G");
    let d = rig.run("diff", &plan, &[]);
    expect(&d, 2, "the disk grew");
    assert!(
        resource(&d, "vg")["changes"].to_string().contains("(pvresize)"),
        "{}",
        d.stdout
    );
    assert!(
        resource(&d, "rest-lv")["changes"]
            .to_string()
            .contains("known after `vg` is applied"),
        "100%FREE follows the pending group, honestly: {}",
        d.stdout
    );
    expect(&rig.run("apply", &plan, &[]), 0, "pvresize, then rest grows");
    let after = rig.lv_bytes("vg0/rest");
    assert!(
        after >= before + 2 * GIB - (4 << 20),
        "rest grew by the new 2 GiB: {before} → {after}"
    );
    let again = rig.run("apply", &plan, &[]);
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);

    // A third disk added to the group: 100%FREE takes it too.
    let three = |plan: String| plan.replace("pvs: [/dev/vdb, /dev/vdc]", "pvs: [/dev/vdb, /dev/vdc, /dev/vdd]");
    let plan = rig.write_plan(&three(volumes_plan("2G", "1792M", rest)));
    let d = rig.run("diff", &plan, &[]);
    expect(&d, 2, "a disk to add");
    assert!(
        resource(&d, "vg")["changes"].to_string().contains("pv /dev/vdd"),
        "{}",
        d.stdout
    );
    expect(&rig.run("apply", &plan, &[]), 0, "vgextend, then rest grows");
    let grown = rig.lv_bytes("vg0/rest");
    assert!(
        grown >= after + 4 * GIB - (8 << 20),
        "rest took the new disk: {after} → {grown}"
    );
    assert_eq!(rig.run("apply", &plan, &[]).summary("changed"), 0);

    // Shrinking is refused unless allowed, and always for XFS.
    let plan = rig.write_plan(&three(volumes_plan("1G", "1792M", rest)));
    let o = rig.run("apply", &plan, &[]);
    expect(&o, 1, "shrink refused");
    let err = resource(&o, "data-lv")["error"].to_string();
    assert!(
        err.contains("would shrink from 2 GiB to 1 GiB") && err.contains("allow_shrink"),
        "{err}"
    );
    assert_eq!(rig.lv_bytes("vg0/data"), 2 * GIB, "untouched");
    let plan = rig.write_plan(
        &three(volumes_plan("2G", "1G", rest))
            .replace("name: logs, size: 1G}", "name: logs, size: 1G, allow_shrink: true}"),
    );
    let o = rig.run("apply", &plan, &[]);
    expect(&o, 1, "xfs never shrinks");
    let err = resource(&o, "logs-lv")["error"].to_string();
    assert!(err.contains("XFS, which cannot shrink"), "{err}");
    rig.sh("sha256sum -c /root/blob.sum && sha256sum -c /root/log.sum");

    // With allow_shrink, an unmounted ext4 is shrunk first, then its volume.
    rig.sh(
        "export LVM_SUPPRESS_FD_WARNINGS=1; lvremove -q -y vg0/rest && lvcreate -q -y -n scratch -L 1G vg0 \
         && mkfs.ext4 -q /dev/vg0/scratch && mkdir -p /mnt/s && mount /dev/vg0/scratch /mnt/s \
         && head -c 100000000 /dev/urandom > /mnt/s/f && sha256sum /mnt/s/f > /root/s.sum && umount /mnt/s",
    );
    let shrink = "  - id: scratch\n    lvm.lv: {vg: vg0, name: scratch, size: 512M, allow_shrink: true}\n";
    let plan = rig.write_plan(&three(volumes_plan("2G", "1792M", shrink)));
    let d = rig.run("diff", &plan, &[]);
    let s = resource(&d, "scratch");
    assert_eq!(s["risk"], "destructive", "{s}");
    assert_eq!(s["changes"][0]["to"], "512 MiB (shrunk)");
    expect(&rig.run("apply", &plan, &[]), 0, "shrunk");
    assert_eq!(rig.lv_bytes("vg0/scratch"), 512 << 20);
    rig.sh(
        "e2fsck -f -n /dev/vg0/scratch && mount /dev/vg0/scratch /mnt/s && sha256sum -c /root/s.sum && umount /mnt/s",
    );

    // A mounted volume is never removed.
    let plan = rig.write_plan(
        "plan: rm\nhosts: [edge]\nresources:\n  - id: data-lv\n    lvm.lv: {vg: vg0, name: data, state: absent}\n",
    );
    let o = rig.run("apply", &plan, &[]);
    expect(&o, 1, "refused");
    assert!(
        resource(&o, "data-lv")["error"]
            .to_string()
            .contains("is mounted at `/srv/data`"),
        "{}",
        o.stdout
    );
    rig.sh("sha256sum -c /root/blob.sum");
}

#[test]
fn the_phase1_storage_plan_previews_the_whole_chain_applies_then_converges() {
    need_vm!();
    let rig = VmRig::up(2);
    // The server as phase 1 finds it: an existing data volume group with a
    // 1 GiB ext4 volume, and Docker's and Rancher's data on the root disk.
    rig.sh(
        "export LVM_SUPPRESS_FD_WARNINGS=1; vgcreate -q vg_data /dev/vdc && lvcreate -q -y -n data -L 1G vg_data \
         && mkfs.ext4 -q /dev/vg_data/data && mkdir -p /srv/data && mount /dev/vg_data/data /srv/data \
         && head -c 20000000 /dev/urandom > /srv/data/archive \
         && mkdir -p /var/lib/docker/overlay2/abc /var/lib/rancher/k3s/server \
         && head -c 30000000 /dev/urandom > /var/lib/docker/overlay2/abc/layer.tar \
         && ln /var/lib/docker/overlay2/abc/layer.tar /var/lib/docker/hardlink \
         && ln -s overlay2/abc /var/lib/docker/current && truncate -s 256M /var/lib/docker/sparse.img \
         && echo token > /var/lib/rancher/k3s/server/token && chmod 600 /var/lib/rancher/k3s/server/token \
         && setfattr -n user.plumb -v kept /var/lib/rancher/k3s/server/token \
         && (cd /var/lib && find docker rancher -type f -exec sha256sum {} + | sort > /root/before.sum)",
    );
    let plan = common::repo().join("plans/twisterlab/phase1-storage.yaml");
    // No systemd runs in the VM: nothing to stop. The SSD is /dev/vdb, the
    // data disk /dev/vdc.
    let vars = [
        "ssd_disks=[/dev/vdb]",
        "data_disks=[/dev/vdc]",
        "docker_size=1G",
        "rancher_size=100%FREE",
        "data_size=2G",
        "docker_services=[]",
        "rancher_services=[]",
    ];

    let text = rig.run_format("diff", &plan, &vars, "text");
    expect(&text, 2, "changes pending on a fresh VM");
    eprintln!("{}", text.stdout);
    for line in [
        "fast-vg (lvm.vg) would change [safe]",
        "docker-lv (lvm.lv) would change [safe]",
        "follows the pending change of `fast-vg`",
        "docker-fs (filesystem) would change [safe]",
        "follows the pending change of `docker-lv`",
        "docker-mount (mount) would change [disruptive]",
        "rancher-mount (mount) would change [disruptive]",
        "data-lv (lvm.lv) would change [disruptive]",
        "size: 1 GiB → 2 GiB, ext4 grown with it",
    ] {
        assert!(text.stdout.contains(line), "missing `{line}`:\n{}", text.stdout);
    }
    let d = rig.run("diff", &plan, &vars);
    for id in ["docker-lv", "rancher-lv"] {
        assert_eq!(resource(&d, id)["after"][0], "fast-vg");
    }
    assert_eq!(resource(&d, "docker-fs")["after"][0], "docker-lv");
    assert_eq!(resource(&d, "rancher-fs")["after"][0], "rancher-lv");
    let m = resource(&d, "docker-mount");
    assert!(m["after"].to_string().contains("docker-fs"), "{m}");
    assert_eq!(m["changes"][0]["field"], "migrate", "{m}");
    assert!(m["changes"][0]["from"].as_str().unwrap().contains("bytes)"), "{m}");
    assert!(
        resource(&d, "data-vg")["changes"].as_array().unwrap().is_empty(),
        "the data group is as declared"
    );
    assert!(
        rig.vm.ssh("test -e /dev/vg_fast").status.code() != Some(0),
        "diff created nothing"
    );

    let a = rig.run("apply", &plan, &vars);
    expect(&a, 0, "phase 1 storage applied");
    let notes = resource(&a, "docker-mount")["notes"].to_string();
    assert!(notes.contains("old data kept at /var/lib/docker.plumb-old-"), "{notes}");
    assert!(rig
        .sh("findmnt -n -o SOURCE /var/lib/docker")
        .contains("vg_fast-docker"));
    assert!(rig.sh("findmnt -n -o SOURCE,FSTYPE /var/lib/rancher").contains("xfs"));
    rig.sh("cd /var/lib && find docker rancher -type f -exec sha256sum {} + | sort | diff - /root/before.sum");
    assert_eq!(
        rig.sh("getfattr -n user.plumb --only-values /var/lib/rancher/k3s/server/token"),
        "kept"
    );
    assert_eq!(
        rig.sh("stat -c %h /var/lib/docker/hardlink").trim(),
        "2",
        "hard link kept"
    );
    let sparse: u64 = rig
        .sh("du -B1 /var/lib/docker/sparse.img | cut -f1")
        .trim()
        .parse()
        .unwrap();
    assert!(sparse < 1 << 20, "sparse file stayed sparse: {sparse}");
    assert_eq!(rig.lv_bytes("vg_data/data"), 2 * GIB);
    assert!(rig.df_bytes("/srv/data") > 1900 << 20);
    rig.sh("sha256sum /srv/data/archive >/dev/null");
    let fstab = rig.sh("cat /etc/fstab");
    assert!(
        fstab.contains("/dev/vg_fast/docker\t/var/lib/docker\text4\tdefaults,noatime\t0\t2"),
        "{fstab}"
    );
    assert!(
        fstab.contains("/dev/vg_fast/rancher\t/var/lib/rancher\txfs\tdefaults,noatime\t0\t2"),
        "{fstab}"
    );
    assert_eq!(
        rig.sh("LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o vg_free_count vg_fast")
            .trim(),
        "0"
    );

    let again = rig.run("apply", &plan, &vars);
    expect(&again, 0, "re-applied");
    assert_eq!(
        again.summary("changed"),
        0,
        "nothing to do the second time: {}",
        again.stdout
    );
    let text = rig.run_format("diff", &plan, &vars, "text");
    expect(&text, 0, "diff after apply: no changes");
    eprintln!("{}", text.stdout);
}

/// The complete phase-1 plan (storage, private registry, GO checks) on a
/// fresh VM: previewed, applied, re-applied with nothing to do, and a hand
/// edit of daemon.json reported as drift. The VM runs no systemd, Docker or
/// k3s: `manage_services=false` skips the service resources and the pod
/// check (the services are tested on real systemd in tests/lab/services.rs), and
/// there is no Harbor to answer (`check_registry=false`).
#[test]
fn the_complete_phase1_plan_applies_converges_and_reports_drift() {
    need_vm!();
    let rig = VmRig::up(2);
    rig.sh(
        "export LVM_SUPPRESS_FD_WARNINGS=1; vgcreate -q vg_data /dev/vdc && lvcreate -q -y -n data -L 1G vg_data \
         && mkfs.ext4 -q /dev/vg_data/data && mkdir -p /srv/data && mount /dev/vg_data/data /srv/data \
         && mkdir -p /var/lib/docker/volumes /etc/docker && echo data > /var/lib/docker/volumes/v1 \
         && printf '{\\n  \"debug\": true,\\n  \"log-opts\": {\"max-size\": \"10m\"}\\n}\\n' > /etc/docker/daemon.json",
    );
    let plan = common::repo().join("plans/twisterlab/phase1.yaml");
    let vars = [
        "ssd_disks=[/dev/vdb]",
        "data_disks=[/dev/vdc]",
        "docker_size=1G",
        "rancher_size=100%FREE",
        "data_size=2G",
        "docker_services=[]",
        "rancher_services=[]",
        "manage_services=false",
        "check_registry=false",
        "min_free_docker_gib=0",
    ];
    let secret = "harbor-s3cret-pw";
    let run = |cmd: &str, format: &str| {
        Plumb::over_ssh(cmd, &plan, &rig.inventory(), &rig.vm.ssh_config(), format)
            .vars(&vars)
            .env("HARBOR_PASSWORD", secret)
            .run()
    };
    let review = run("diff", "markdown");
    expect(&review, 2, "a fresh VM: changes pending");
    assert!(
        review.stdout.contains("| `vm` | changes pending |"),
        "{}",
        review.stdout
    );
    assert!(
        review.stdout.contains("log-opts.max-size: 10m → 100m"),
        "{}",
        review.stdout
    );
    assert!(
        review
            .stdout
            .contains("| `go-docker-space` | /var/lib/docker must have at least 0 GiB free | checked once `docker-mount`, `docker-lv` are applied |"),
        "a GO check is listed with the checks:\n{}",
        review.stdout
    );
    assert!(
        !review.stdout.contains("### `go-docker-space`"),
        "a GO check is not a change:\n{}",
        review.stdout
    );
    assert!(
        !review.stdout.contains(secret) && !review.stderr.contains(secret),
        "the password leaked"
    );
    let a = run("apply", "json");
    expect(&a, 0, "phase 1 applied");
    assert!(!a.stdout.contains(secret));
    for id in ["go-root-usage", "go-docker-space"] {
        assert_eq!(resource(&a, id)["status"], "ok", "{id}");
    }
    let daemon: serde_json::Value = serde_json::from_str(&rig.sh("cat /etc/docker/daemon.json")).unwrap();
    assert_eq!(daemon["debug"], true, "an unmanaged key is kept");
    assert_eq!(daemon["log-opts"]["max-size"], "100m");
    assert_eq!(daemon["registry-mirrors"][0], "https://harbor.twisterlab.local");
    let registries = rig.sh("cat /etc/rancher/k3s/registries.yaml");
    assert!(registries.contains(secret), "the host gets the credential it needs");
    assert!(rig
        .sh("cat /etc/containerd/certs.d/docker.io/hosts.toml")
        .contains("https://harbor.twisterlab.local"));
    assert!(rig
        .sh("cat /etc/docker/certs.d/harbor.twisterlab.local/ca.crt")
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(
        rig.sh("cat /var/lib/docker/volumes/v1"),
        "data\n",
        "data moved onto the SSD"
    );

    let again = run("apply", "json");
    expect(&again, 0, "re-applied");
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    expect(&run("diff", "text"), 0, "no drift after apply");

    rig.sh("sed -i 's/100m/500m/' /etc/docker/daemon.json");
    let drift = run("diff", "json");
    expect(&drift, 2, "a hand edit of daemon.json is drift");
    assert_eq!(resource(&drift, "daemon-json")["status"], "pending");
    assert_eq!(drift.summary("pending"), 1, "{}", drift.stdout);
}
