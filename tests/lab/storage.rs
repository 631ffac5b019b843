//! The storage modules on real block devices: loop devices made for each
//! test, `plumb` run through the local connection inside a private mount
//! namespace (see `support/storage.rs`), fstab in a temporary file.
//!
//! Covers the mount states and their transitions, fstab lines kept byte for
//! byte, a different device at the mount point, remounts, a missing device,
//! data migration (a tricky tree verified file by file, and a copy that
//! fails midway), filesystem creation, refusal and growth, a volume group
//! from two disks (LVM metadata works without device-mapper), and the
//! predicted chain of a fresh host.

use crate::common;
use crate::support::storage;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{expect, resource, Outcome};
use storage::{has, manifest, sh, tricky_tree_script, LoopDev, MountNs, VgGuard};

/// A test's machine: a temp folder, a mount namespace, and the fstab file.
struct Rig {
    dir: tempfile::TempDir,
    ns: MountNs,
    /// A `systemctl` stub on the PATH, for migrations (no systemd runs here).
    stub_path: Option<String>,
}

const FSTAB: &str = "# /etc/fstab: static file system information.\n#\n# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=0a1b2c3d-0000-4000-8000-000000000001 /  ext4  errors=remount-ro 0  1\n\n/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\n# tail comment, no newline at the end";

impl Rig {
    fn new() -> Option<Rig> {
        if !storage::available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("plumb-storage-").tempdir().unwrap();
        fs::write(dir.path().join("fstab"), FSTAB).unwrap();
        Some(Rig {
            dir,
            ns: MountNs::new(),
            stub_path: None,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn fstab(&self) -> String {
        fs::read_to_string(self.path("fstab")).unwrap()
    }

    fn disk(&self, name: &str, size: &str) -> LoopDev {
        LoopDev::new(self.dir.path(), name, size)
    }

    /// Write the plan; `{{ root }}` is the temp folder, `{{ fstab }}` the fstab file.
    fn plan(&self, text: &str) {
        fs::write(self.path("plan.yaml"), text).unwrap();
    }

    /// `plumb CMD plan.yaml --format json` inside the namespace.
    fn plumb(&self, cmd: &str, vars: &[(&str, &str)]) -> Outcome {
        self.plumb_as(cmd, "json", vars)
    }

    /// `plumb CMD plan.yaml --format FORMAT` inside the namespace.
    fn plumb_as(&self, cmd: &str, format: &str, vars: &[(&str, &str)]) -> Outcome {
        let mut c = self.ns.command(env!("CARGO_BIN_EXE_plumb"));
        c.arg(cmd)
            .arg(self.path("plan.yaml"))
            .args(["--format", format, "--var"])
            .arg(format!("root={}", self.dir.path().display()))
            .arg("--var")
            .arg(format!("fstab={}", self.path("fstab").display()))
            .env("NO_COLOR", "1");
        for (k, v) in vars {
            c.arg("--var").arg(format!("{k}={v}"));
        }
        if cmd == "apply" {
            c.arg("--yes");
        }
        if let Some(p) = &self.stub_path {
            c.env("PATH", p);
        }
        let out = c.output().expect("run plumb");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn mounted(&self, rel: &str) -> Option<String> {
        self.ns.mounted(&self.path(rel))
    }

    /// Install a `systemctl` stub that keeps services as marker files
    /// (`svc/NAME.up`) and logs every call. No systemd can run in this test
    /// environment (no systemd as PID 1, and the namespace is not a node),
    /// so the migration's service handling is driven through this stub.
    fn stub_systemctl(&mut self, running: &[&str]) {
        let bin = self.path("stub-bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(self.path("svc")).unwrap();
        let svc = self.path("svc");
        fs::write(
            bin.join("systemctl"),
            format!(
                "#!/bin/sh\n# test stub: no systemd runs here\ncmd=$1; shift; units=; prop=\n\
                 while [ $# -gt 0 ]; do case $1 in --|--value|--quiet) ;; -p) shift; prop=$1 ;; *) units=\"$units $1\" ;; esac; shift; done\n\
                 [ \"$cmd\" = show ] || echo \"$cmd$units\" >> '{d}/log'\n\
                 for u in $units; do case $cmd in\n\
                 is-active) [ -e \"{d}/$u.up\" ] || exit 3 ;;\n\
                 show) case $prop in *,*) for k in $(echo $prop | tr , ' '); do case $k in Id) echo \"Id=$u.service\" ;; ActiveState) if [ -e \"{d}/$u.up\" ]; then echo ActiveState=active; else echo ActiveState=inactive; fi ;; *) echo \"$k=\" ;; esac; done; echo ;;\n\
                 Id) echo \"$u\" ;; ActiveState) if [ -e \"{d}/$u.up\" ]; then echo active; else echo inactive; fi ;; *) echo ;; esac ;;\n\
                 stop) rm -f \"{d}/$u.up\" ;;\n\
                 start) touch \"{d}/$u.up\" ;;\n\
                 *) exit 1 ;;\nesac; done\n",
                d = svc.display()
            ),
        )
        .unwrap();
        sh(&format!("chmod +x '{}'", bin.join("systemctl").display()));
        for r in running {
            fs::write(svc.join(format!("{r}.up")), "").unwrap();
        }
        self.stub_path = Some(format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ));
    }

    fn service_up(&self, name: &str) -> bool {
        self.path(&format!("svc/{name}.up")).exists()
    }

    fn service_log(&self) -> String {
        fs::read_to_string(self.path("svc/log")).unwrap_or_default()
    }
}

fn changes(o: &Outcome, id: &str) -> String {
    resource(o, id)["changes"].to_string()
}

fn mount_plan(state: &str, opts: &str) -> String {
    format!(
        r#"
resources:
  - id: data-fs
    filesystem: {{dev: "{{{{ dev }}}}", type: ext4, label: data}}
  - id: data-mount
    mount:
      path: "{{{{ root }}}}/srv data"
      src: "{{{{ dev }}}}"
      fstype: ext4
      opts: {opts}
      passno: 2
      state: {state}
      fstab: "{{{{ fstab }}}}"
"#
    )
}

#[test]
fn mount_states_and_transitions_keep_the_rest_of_fstab_byte_for_byte() {
    let Some(rig) = Rig::new() else { return };
    let disk = rig.disk("data", "64M");
    let dev = [("dev", disk.dev.as_str())];
    let mp = rig.path("srv data");

    rig.plan(&mount_plan("mounted", "[defaults, noatime]"));
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "a fresh device: filesystem and mount pending");
    assert_eq!(
        resource(&d, "data-mount")["after"][0],
        "data-fs",
        "the mount follows the filesystem"
    );
    let a = rig.plumb("apply", &dev);
    expect(&a, 0, "mounted");
    let line = format!(
        "{}\t{}\text4\tdefaults,noatime\t0\t2\n",
        disk.dev,
        mp.display().to_string().replace(' ', "\\040")
    );
    assert_eq!(
        rig.fstab(),
        format!("{FSTAB}\n{line}"),
        "one line added, every other byte kept"
    );
    let live = rig.mounted("srv data").expect("mounted in the namespace");
    assert!(live.starts_with(&disk.dev) && live.contains("noatime"), "{live}");
    assert!(
        Command::new("findmnt")
            .arg("-M")
            .arg(&mp)
            .status()
            .is_ok_and(|s| !s.success()),
        "the mount never leaks out of the namespace"
    );
    let notes = resource(&a, "data-mount")["notes"].to_string();
    assert!(notes.contains("backup of the old file"), "fstab backed up: {notes}");
    expect(&rig.plumb("apply", &dev), 0, "re-apply");
    assert_eq!(rig.plumb("apply", &dev).summary("changed"), 0);
    expect(&rig.plumb("diff", &dev), 0, "converged");

    // unmounted: the line stays, the filesystem is unmounted.
    rig.plan(&mount_plan("unmounted", "[defaults, noatime]"));
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "unmount pending");
    assert_eq!(resource(&d, "data-mount")["risk"], "disruptive");
    assert!(
        changes(&d, "data-mount").contains("\"field\":\"mounted\""),
        "{}",
        d.stdout
    );
    assert!(
        !changes(&d, "data-mount").contains("fstab"),
        "fstab is already right: {}",
        d.stdout
    );
    expect(&rig.plumb("apply", &dev), 0, "unmounted");
    assert_eq!(rig.mounted("srv data"), None);
    assert_eq!(rig.fstab(), format!("{FSTAB}\n{line}"));
    expect(&rig.plumb("diff", &dev), 0, "unmounted is converged");

    // present: fstab only, whatever the live state.
    rig.plan(&mount_plan("present", "[defaults, noatime]"));
    expect(&rig.plumb("diff", &dev), 0, "present: not mounted is fine");

    // mounted again, then absent: unmounted and the line removed.
    rig.plan(&mount_plan("mounted", "[defaults, noatime]"));
    expect(&rig.plumb("apply", &dev), 0, "mounted again");
    assert!(rig.mounted("srv data").is_some());
    rig.plan(&mount_plan("absent", "[defaults, noatime]"));
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "absent pending");
    let c = changes(&d, "data-mount");
    assert!(
        c.contains("mounted") && c.contains("fstab line 8"),
        "live and fstab changes apart: {c}"
    );
    expect(&rig.plumb("apply", &dev), 0, "absent");
    assert_eq!(rig.mounted("srv data"), None);
    assert_eq!(
        rig.fstab(),
        format!("{FSTAB}\n"),
        "only the line went (the newline it mended stays)"
    );
    expect(&rig.plumb("diff", &dev), 0, "absent is converged");
}

#[test]
fn an_option_change_remounts_in_place() {
    let Some(rig) = Rig::new() else { return };
    let disk = rig.disk("data", "64M");
    let dev = [("dev", disk.dev.as_str())];
    rig.plan(&mount_plan("mounted", "[defaults]"));
    expect(&rig.plumb("apply", &dev), 0, "mounted");
    fs::write(rig.ns.view(&rig.path("srv data/marker")), "on the mounted fs").unwrap();

    rig.plan(&mount_plan("mounted", "[defaults, noatime, nosuid, nodev]"));
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "options pending");
    let c = changes(&d, "data-mount");
    assert!(c.contains("\"field\":\"options\"") && c.contains("(remount)"), "{c}");
    assert!(c.contains("fstab line 8"), "{c}");
    expect(&rig.plumb("apply", &dev), 0, "remounted");
    let live = rig.mounted("srv data").unwrap();
    for o in ["nosuid", "nodev", "noatime"] {
        assert!(live.contains(o), "{o} in {live}");
    }
    assert_eq!(
        fs::read_to_string(rig.ns.view(&rig.path("srv data/marker"))).unwrap(),
        "on the mounted fs",
        "remounted, not replaced"
    );
    expect(&rig.plumb("diff", &dev), 0, "converged after the remount");

    // Drift made by hand on the live mount only is seen and fixed.
    rig.ns.sh(&format!(
        "mount -o remount,exec,suid '{}'",
        rig.path("srv data").display()
    ));
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "hand-made live drift");
    assert!(!changes(&d, "data-mount").contains("fstab"), "{}", d.stdout);
    expect(&rig.plumb("apply", &dev), 0, "fixed");
    assert!(rig.mounted("srv data").unwrap().contains("nosuid"));
}

#[test]
fn a_different_device_at_the_mount_point_is_reported_not_mounted_over() {
    let Some(rig) = Rig::new() else { return };
    let ours = rig.disk("ours", "64M");
    let other = rig.disk("other", "64M");
    sh(&format!("mkfs.ext4 -q {}", other.dev));
    fs::create_dir_all(rig.path("srv data")).unwrap();
    rig.ns
        .sh(&format!("mount {} '{}'", other.dev, rig.path("srv data").display()));
    rig.plan(&mount_plan("mounted", "[defaults]"));
    // While the filesystem is still to be made, the preview says the mount
    // will be refused.
    let d = rig.plumb("diff", &[("dev", ours.dev.as_str())]);
    expect(&d, 2, "filesystem pending");
    let c = changes(&d, "data-mount");
    assert!(
        c.contains("refused: another filesystem is mounted there") && c.contains(&other.dev),
        "{c}"
    );
    sh(&format!("mkfs.ext4 -q -L data {}", ours.dev));
    let dev = [("dev", ours.dev.as_str())];
    for cmd in ["diff", "apply"] {
        let o = rig.plumb(cmd, &dev);
        expect(&o, 1, "a foreign mount is an error");
        let err = resource(&o, "data-mount")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(err.contains(&format!("is mounted from `{}`", other.dev)), "{err}");
        assert!(err.contains("migrate"), "{err}");
    }
    assert!(
        rig.mounted("srv data").unwrap().starts_with(&other.dev),
        "left as it was"
    );
    assert_eq!(rig.fstab(), FSTAB, "fstab untouched");
}

/// A bind mount of a directory on another filesystem: mounted, recognised
/// as ours on the next run (the kernel shows the filesystem's device and the
/// directory's path inside it), and a bind of another directory is foreign.
/// The source's filesystem is mounted nosuid,nodev,noatime, which the bind
/// inherits (not a drift), and its name holds a quote (findmnt escapes it).
#[test]
fn a_bind_mount_is_made_once_and_recognised_by_its_directory() {
    let Some(rig) = Rig::new() else { return };
    let disk = rig.disk("store", "64M");
    sh(&format!("mkfs.ext4 -q {}", disk.dev));
    fs::create_dir_all(rig.path("store")).unwrap();
    fs::create_dir_all(rig.path("docker data")).unwrap();
    rig.ns.sh(&format!(
        "mount -o nosuid,nodev,noatime {} '{}'",
        disk.dev,
        rig.path("store").display()
    ));
    rig.plan(
        r#"
resources:
  - id: src-dir
    directory: {path: '{{ root }}/store/dock"er'}
  - id: docker-bind
    mount:
      path: "{{ root }}/docker data"
      src: '{{ root }}/store/dock"er'
      fstype: none
      opts: [bind]
      fstab: "{{ fstab }}"
"#,
    );
    let d = rig.plumb("diff", &[]);
    expect(&d, 2, "a bind mount to make");
    assert!(
        resource(&d, "docker-bind")["changes"].to_string().contains("mounted"),
        "{}",
        d.stdout
    );
    let a = rig.plumb("apply", &[]);
    expect(&a, 0, "apply");
    let live = rig.mounted("docker data").expect("bind mounted");
    assert!(live.starts_with(&format!("{}[/dock\"er]", disk.dev)), "{live}");
    assert!(live.contains("nosuid") && live.contains("noatime"), "{live}");
    rig.ns
        .sh(&format!("echo through > '{}'", rig.path("docker data/seen").display()));
    assert_eq!(
        rig.ns
            .sh(&format!("cat '{}'", rig.path("store/dock\"er/seen").display())),
        "through\n"
    );
    let line = format!(
        "{}\t{}\tnone\tbind\t0\t0",
        rig.path("store/dock\"er").display(),
        rig.path("docker data").display().to_string().replace(' ', "\\040")
    );
    assert!(rig.fstab().contains(&line), "{}", rig.fstab());
    let again = rig.plumb("apply", &[]);
    expect(&again, 0, "re-apply");
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    expect(&rig.plumb("diff", &[]), 0, "converged");
    // Another directory bound there instead: reported, not mounted over.
    // (The store is mounted in the namespace only: make the folder there.)
    rig.ns.sh(&format!(
        "mkdir '{o}' && umount '{p}' && mount --bind '{o}' '{p}'",
        o = rig.path("store/other").display(),
        p = rig.path("docker data").display()
    ));
    let d = rig.plumb("diff", &[]);
    expect(&d, 1, "a foreign bind mount is an error");
    let err = resource(&d, "docker-bind")["error"].to_string();
    assert!(err.contains("[/other]"), "{err}");
}

#[test]
fn mounting_a_missing_device_is_refused_before_anything_changes() {
    let Some(rig) = Rig::new() else { return };
    rig.plan(
        r#"
resources:
  - id: m
    mount: {path: "{{ root }}/mnt", src: /dev/plumb-no-such-disk, fstype: ext4, fstab: "{{ fstab }}"}
  - id: m2
    mount: {path: "{{ root }}/mnt2", src: "UUID=00000000-dead-beef-0000-000000000000", fstype: ext4, fstab: "{{ fstab }}"}
"#,
    );
    for cmd in ["diff", "apply"] {
        let o = rig.plumb(cmd, &[]);
        expect(&o, 1, "refused");
        let err = resource(&o, "m")["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            err,
            format!(
                "`/dev/plumb-no-such-disk` does not exist: nothing to mount at `{}`",
                rig.path("mnt").display()
            )
        );
        let err = resource(&o, "m2")["error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains("UUID=00000000-dead-beef-0000-000000000000` does not exist"),
            "{err}"
        );
    }
    assert_eq!(rig.fstab(), FSTAB, "fstab untouched");
    assert!(!rig.path("mnt").exists(), "no mount point made");
}

#[test]
fn a_mount_point_holding_data_is_not_mounted_over_without_migrate() {
    let Some(rig) = Rig::new() else { return };
    let disk = rig.disk("data", "64M");
    fs::create_dir_all(rig.path("srv data")).unwrap();
    fs::write(rig.path("srv data/precious"), "x").unwrap();
    rig.plan(&mount_plan("mounted", "[defaults]"));
    let o = rig.plumb("apply", &[("dev", disk.dev.as_str())]);
    expect(&o, 1, "refused");
    let err = resource(&o, "data-mount")["error"].to_string();
    assert!(
        err.contains("holds 1 entry that mounting over it would hide") && err.contains("migrate"),
        "{err}"
    );
    assert_eq!(rig.mounted("srv data"), None);
    assert_eq!(rig.fstab(), FSTAB);
}

#[test]
fn migration_moves_a_tricky_tree_verified_and_keeps_the_old_copy() {
    let Some(mut rig) = Rig::new() else { return };
    for tool in ["rsync", "getfattr", "setfacl"] {
        assert!(has(tool), "`{tool}` is needed (apt-get install rsync attr acl)");
    }
    let disk = rig.disk("new", "256M");
    sh(&format!("mkfs.ext4 -q {}", disk.dev));
    let data = rig.path("var lib docker");
    sh(&tricky_tree_script(&data));
    let before = manifest(&data);
    assert!(before.len() >= 15, "{before:?}");
    rig.stub_systemctl(&["docker"]);
    rig.plan(
        r#"
resources:
  - id: docker-mount
    mount:
      path: "{{ root }}/var lib docker"
      src: "{{ dev }}"
      fstype: ext4
      opts: [defaults, noatime]
      fstab: "{{ fstab }}"
      migrate: {stop: [docker, k3s]}
"#,
    );
    let dev = [("dev", disk.dev.as_str())];
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "migration pending");
    let r = resource(&d, "docker-mount");
    assert_eq!(r["risk"], "disruptive");
    let m = r["changes"][0].clone();
    assert_eq!(m["field"], "migrate");
    assert!(
        m["from"].as_str().unwrap().contains("bytes)"),
        "the data size is shown: {m}"
    );
    assert!(m["to"].as_str().unwrap().contains("verified by checksums"), "{m}");
    assert!(rig.service_up("docker"), "diff stops nothing");

    let a = rig.plumb("apply", &dev);
    expect(&a, 0, "migrated");
    let notes = resource(&a, "docker-mount")["notes"].to_string();
    let kept = notes
        .split("old data kept at ")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("the report prints where the old data is: {notes}"));
    assert!(kept.starts_with(&format!("{}.plumb-old-", data.display())), "{kept}");
    assert!(rig.mounted("var lib docker").unwrap().starts_with(&disk.dev));

    let after = manifest(&rig.ns.view(&data));
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "`{k}` differs after the migration");
    }
    assert_eq!(before.len(), after.len(), "{after:?}");
    let sparse = fs::metadata(rig.ns.view(&data.join("sparse"))).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "the sparse file stayed sparse ({} blocks)",
        sparse.blocks()
    );
    assert_eq!(manifest(Path::new(kept)), before, "the old copy is intact");
    let acl = sh(&format!("getfacl -p '{}'", rig.ns.view(&data.join("sub")).display()));
    assert!(
        acl.contains("user:nobody:r-x") && acl.contains("default:group:nogroup:r--"),
        "{acl}"
    );

    assert!(rig.service_up("docker"), "docker runs again");
    assert!(!rig.service_up("k3s"), "k3s was not running and is not started");
    let log = rig.service_log();
    let stop = log.find("stop docker").expect("docker stopped");
    let start = log.find("start docker").expect("docker started");
    assert!(stop < start, "{log}");
    assert!(
        rig.fstab().contains(&format!("{}\t", disk.dev)),
        "fstab line written after the switch"
    );

    let again = rig.plumb("apply", &dev);
    expect(&again, 0, "re-apply");
    assert_eq!(again.summary("changed"), 0, "nothing to migrate twice");
    expect(&rig.plumb("diff", &dev), 0, "converged");
}

/// A migration of a few hundred MB: the copy's progress reaches the user
/// while it runs (here stderr is a pipe: plain lines), and the report says
/// how long the copy took and at what rate. A disk too small for the data
/// is refused before anything stops.
#[test]
fn a_long_copy_shows_its_progress_and_a_disk_too_small_is_refused_first() {
    let Some(mut rig) = Rig::new() else { return };
    assert!(has("rsync"), "`rsync` is needed (apt-get install rsync)");
    let data = rig.path("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..6 {
        sh(&format!("head -c 50M /dev/urandom > '{}/blob{i}'", data.display()));
    }
    rig.stub_systemctl(&["web"]);
    rig.plan(
        r#"
resources:
  - id: data-mount
    mount:
      path: "{{ root }}/data"
      src: "{{ dev }}"
      fstype: ext4
      fstab: "{{ fstab }}"
      migrate: {stop: [web]}
"#,
    );
    let small = rig.disk("small", "64M");
    sh(&format!("mkfs.ext4 -q {}", small.dev));
    let refused = rig.plumb("diff", &[("dev", small.dev.as_str())]);
    expect(&refused, 1, "the data cannot fit");
    let why = resource(&refused, "data-mount")["error"].to_string();
    assert!(
        why.contains("of data, more than all of") && why.contains("the migration cannot fit"),
        "{why}"
    );
    let fstab = rig.fstab();
    let failed = rig.plumb("apply", &[("dev", small.dev.as_str())]);
    expect(&failed, 1, "refused at apply too");
    assert!(
        rig.service_up("web") && !rig.service_log().contains("stop"),
        "nothing stopped"
    );
    assert_eq!(rig.fstab(), fstab);

    let disk = rig.disk("new", "512M");
    sh(&format!("mkfs.ext4 -q {}", disk.dev));
    // The expected downtime is reckoned from the read rate of the disk the
    // data is on now (this machine's own: a block device).
    let d = rig.plumb("diff", &[("dev", disk.dev.as_str())]);
    expect(&d, 2, "the migration pending");
    let down = resource(&d, "data-mount")["downtime"][0].clone();
    assert_eq!(down["unit"], "web.service", "{down}");
    if down["expected_secs"].is_u64() {
        assert!(
            down["expected"].as_str().unwrap().contains("300 MiB read at "),
            "{down}"
        );
    } else {
        // The data's disk is not a block device here (a container's overlay).
        assert!(down["expected"].as_str().unwrap().starts_with("unknown: "), "{down}");
    }
    let a = rig.plumb_as("apply", "text", &[("dev", disk.dev.as_str())]);
    expect(&a, 0, "migrated");
    let shown: Vec<&str> = a
        .stderr
        .lines()
        .filter(|l| l.contains("data-mount: copying "))
        .collect();
    assert!(
        shown
            .iter()
            .any(|l| l.contains(" of 300 MiB (") && !l.contains("(100 %)")),
        "the copy's progress is shown while it runs: {}",
        a.stderr
    );
    assert!(
        a.stdout.contains("copied 300 MiB in "),
        "the report records the copy's size and time: {}",
        a.stdout
    );
    assert!(rig.service_up("web"));
}

#[test]
fn a_copy_that_fails_midway_leaves_the_old_data_in_place_and_the_services_up() {
    let Some(mut rig) = Rig::new() else { return };
    assert!(has("rsync"), "`rsync` is needed");
    // The bytes fit (64 MiB for 24 MiB: the size checks before the copy
    // pass), the files do not: a filesystem made with a handful of inodes
    // runs out of them in the middle of the copy (ENOSPC, as a disk sized
    // by bytes alone does for Docker's many small files).
    let disk = rig.disk("small", "64M");
    sh(&format!("mkfs.ext4 -q -N 16 {}", disk.dev));
    let data = rig.path("data");
    sh(&tricky_tree_script(&data));
    sh(&format!("head -c 25165824 /dev/urandom > '{}/big'", data.display()));
    sh(&format!(
        "mkdir '{d}/many' && for i in $(seq 600); do echo $i > '{d}/many/'f$i; done",
        d = data.display()
    ));
    let before = manifest(&data);
    rig.stub_systemctl(&["web"]);
    rig.plan(
        r#"
resources:
  - id: data-mount
    mount:
      path: "{{ root }}/data"
      src: "{{ dev }}"
      fstype: ext4
      fstab: "{{ fstab }}"
      migrate: {stop: [web]}
  - id: after-it
    file: {path: "{{ root }}/data/new-file", content: "x"}
"#,
    );
    let a = rig.plumb("apply", &[("dev", disk.dev.as_str())]);
    expect(&a, 1, "the migration fails");
    let r = resource(&a, "data-mount");
    assert_eq!(r["status"], "failed");
    let err = r["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("the copy failed") && err.contains("holds its old data as before"),
        "{err}"
    );
    assert_eq!(
        resource(&a, "after-it")["status"],
        "skipped",
        "a file under the mount waits for it"
    );

    assert_eq!(
        rig.mounted("data"),
        None,
        "the new filesystem is not mounted at the path"
    );
    assert_eq!(
        rig.ns.sh("findmnt -ln -o TARGET | grep plumb-migrate || true").trim(),
        "",
        "no temporary mount left"
    );
    assert_eq!(
        manifest(&rig.ns.view(&data)),
        before,
        "the old data is intact, in place"
    );
    assert!(!rig.path("data/new-file").exists());
    let leftovers: Vec<_> = fs::read_dir(rig.dir.path())
        .unwrap()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("plumb-old"))
        .collect();
    assert!(leftovers.is_empty(), "nothing was moved aside: {leftovers:?}");
    assert!(rig.service_up("web"), "web runs again: {}", rig.service_log());
    assert!(rig.service_log().contains("stop web"), "{}", rig.service_log());
    assert_eq!(rig.fstab(), FSTAB, "fstab untouched");
}

#[test]
fn a_filesystem_is_made_only_on_a_blank_device_unless_forced() {
    let Some(rig) = Rig::new() else { return };
    let disk = rig.disk("d", "320M");
    let plan = |force: bool| {
        format!("resources:\n  - id: fs\n    filesystem: {{dev: \"{{{{ dev }}}}\", type: ext4, label: fresh, force: {force}}}\n")
    };
    let dev = [("dev", disk.dev.as_str())];
    assert!(has("mkfs.xfs"), "`mkfs.xfs` is needed (apt-get install xfsprogs)");
    {
        sh(&format!("mkfs.xfs -q {}", disk.dev));
        rig.plan(&plan(false));
        for cmd in ["diff", "apply"] {
            let o = rig.plumb(cmd, &dev);
            expect(&o, 1, "an xfs device is not formatted");
            let err = resource(&o, "fs")["error"].to_string();
            assert!(
                err.contains("holds an xfs filesystem (UUID") && err.contains("force: true"),
                "{err}"
            );
        }
        assert_eq!(sh(&format!("blkid -p -o value -s TYPE {}", disk.dev)).trim(), "xfs");
        rig.plan(&plan(true));
        let d = rig.plumb("diff", &dev);
        expect(&d, 2, "forced: pending");
        assert_eq!(resource(&d, "fs")["risk"], "destructive");
        expect(&rig.plumb("apply", &dev), 0, "forced");
        assert_eq!(sh(&format!("blkid -p -o value -s TYPE {}", disk.dev)).trim(), "ext4");
        assert_eq!(sh(&format!("blkid -p -o value -s LABEL {}", disk.dev)).trim(), "fresh");
        expect(
            &rig.plumb("diff", &dev),
            0,
            "force does not reformat a matching filesystem",
        );
    }
    // A partition table is a signature too.
    let other = rig.disk("pt", "64M");
    if has("sfdisk") {
        sh(&format!("printf 'label: gpt\\n' | sfdisk -q {} >/dev/null", other.dev));
        assert_eq!(
            sh(&format!("blkid -p -o value -s PTTYPE {}", other.dev)).trim(),
            "gpt",
            "sfdisk wrote a partition table"
        );
        rig.plan(&plan(false));
        let o = rig.plumb("diff", &[("dev", other.dev.as_str())]);
        expect(&o, 1, "a partitioned disk is not formatted");
        assert!(
            resource(&o, "fs")["error"].to_string().contains("gpt partition table"),
            "{}",
            o.stdout
        );
    } else {
        storage::skip("`sfdisk` is not installed (apt-get install fdisk): partition tables untested");
    }
    // A label change is made in place.
    rig.plan("resources:\n  - id: fs\n    filesystem: {dev: \"{{ dev }}\", type: ext4, label: renamed}\n");
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, "label pending");
    assert!(changes(&d, "fs").contains("\"field\":\"label\""), "{}", d.stdout);
    expect(&rig.plumb("apply", &dev), 0, "relabelled");
    assert_eq!(
        sh(&format!("blkid -p -o value -s LABEL {}", disk.dev)).trim(),
        "renamed"
    );
}

/// Online ext4 resizing needs CAP_SYS_RESOURCE, which some sandboxes drop
/// even for root.
fn can_resize_online() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn grow_case(rig: &Rig, fstype: &str, small: &str, large: &str, mounted: bool) {
    let disk = rig.disk(&format!("grow-{fstype}-{mounted}"), small);
    let dev = [("dev", disk.dev.as_str())];
    let mp = rig.path(&format!("m-{fstype}-{mounted}"));
    rig.plan(&format!(
        "resources:\n  - id: fs\n    filesystem: {{dev: \"{{{{ dev }}}}\", type: {fstype}, grow: true}}\n"
    ));
    expect(&rig.plumb("apply", &dev), 0, &format!("{fstype} made"));
    expect(&rig.plumb("diff", &dev), 0, &format!("{fstype} fills its new device"));
    if mounted {
        fs::create_dir_all(&mp).unwrap();
        rig.ns.sh(&format!(
            "mount {} '{}' && echo kept > '{}/f'",
            disk.dev,
            mp.display(),
            mp.display()
        ));
    }
    disk.grow(large);
    let d = rig.plumb("diff", &dev);
    expect(&d, 2, &format!("{fstype}: the device grew"));
    let r = resource(&d, "fs");
    assert_eq!(r["risk"], "disruptive", "{r}");
    assert_eq!(r["changes"][0]["field"], "size", "{r}");
    let a = rig.plumb("apply", &dev);
    expect(&a, 0, &format!("{fstype} grown (mounted: {mounted})"));
    let again = rig.plumb("diff", &dev);
    expect(&again, 0, &format!("{fstype}: grown once, then converged"));
    assert_eq!(rig.plumb("apply", &dev).summary("changed"), 0);
    if mounted {
        assert_eq!(fs::read_to_string(rig.ns.view(&mp.join("f"))).unwrap(), "kept\n");
        let size: u64 = rig
            .ns
            .sh(&format!("df -B1 --output=size '{}' | tail -n 1", mp.display()))
            .trim()
            .parse()
            .unwrap();
        let small_bytes: u64 = sh(&format!("numfmt --from=iec {small}")).trim().parse().unwrap();
        assert!(size > small_bytes, "{fstype}: df says {size}");
    }
}

#[test]
fn filesystems_grow_to_fill_their_device_once() {
    let Some(rig) = Rig::new() else { return };
    grow_case(&rig, "ext4", "64M", "96M", false);
    if can_resize_online() {
        grow_case(&rig, "ext4", "64M", "128M", true);
    } else {
        // Not a missing package but a sandbox that drops the capability even
        // for root; the VM tier, which CI always runs, grows a mounted ext4
        // (storage_vm: logical_volumes_grow_with_their_filesystems_...).
        eprintln!("not growing a mounted ext4 here: no CAP_SYS_RESOURCE (the VM tier does)");
    }
    for (fstype, tool, small, large) in [
        ("xfs", "mkfs.xfs", "320M", "400M"),
        ("btrfs", "mkfs.btrfs", "256M", "384M"),
    ] {
        if has(tool) {
            grow_case(&rig, fstype, small, large, false);
            grow_case(&rig, fstype, small, large, true);
        } else {
            storage::skip(&format!("`{tool}` is not installed: {fstype} growth untested"));
        }
    }
}

#[test]
fn a_volume_group_from_two_disks_grows_and_never_loses_a_pv() {
    let Some(rig) = Rig::new() else { return };
    if !has("vgcreate") {
        storage::skip("lvm2 is not installed (the VM tier covers LVM)");
        return;
    }
    let a = rig.disk("pv-a", "64M");
    let b = rig.disk("pv-b", "64M");
    let c = rig.disk("pv-c", "64M");
    let name = format!("plumbtest{}", std::process::id());
    let _guard = VgGuard(name.clone(), vec![a.dev.clone(), b.dev.clone(), c.dev.clone()]);
    // Another group on the host has lost a disk: it must not disturb this one.
    let broken_name = format!("plumbbroken{}", std::process::id());
    let broken = rig.disk("broken-a", "64M");
    let _broken_guard = VgGuard(broken_name.clone(), vec![broken.dev.clone()]);
    {
        let lost = rig.disk("broken-b", "64M");
        sh(&format!(
            "LVM_SUPPRESS_FD_WARNINGS=1 vgcreate -q {broken_name} {} {} >/dev/null 2>&1",
            broken.dev, lost.dev
        ));
    }
    assert!(
        sh(&format!(
            "LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o vg_missing_pv_count {broken_name} 2>/dev/null"
        ))
        .trim()
            == "1",
        "a group with a missing PV is on the host"
    );
    let plan =
        |pvs: &str| format!("resources:\n  - id: vg\n    lvm.vg: {{name: {name}, pvs: [{pvs}], pvresize: true}}\n");
    rig.plan(&plan(&format!("{}, {}", a.dev, b.dev)));
    let d = rig.plumb("diff", &[]);
    expect(&d, 2, "VG pending");
    assert!(changes(&d, "vg").contains("128 MiB in all"), "{}", d.stdout);
    expect(&rig.plumb("apply", &[]), 0, "VG created");
    let vgs = |f: &str| {
        sh(&format!(
            "LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings --units b --nosuffix -o {f} {name} 2>/dev/null"
        ))
        .trim()
        .to_string()
    };
    assert_eq!(vgs("pv_count"), "2");
    expect(&rig.plumb("diff", &[]), 0, "converged");

    // A grown disk: pvresize, once.
    b.grow("128M");
    let d = rig.plumb("diff", &[]);
    expect(&d, 2, "pvresize pending");
    assert!(changes(&d, "vg").contains("(pvresize)"), "{}", d.stdout);
    expect(&rig.plumb("apply", &[]), 0, "pvresized");
    expect(&rig.plumb("diff", &[]), 0, "converged after pvresize");

    // A third disk added to the plan is added; removed from the plan it stays.
    rig.plan(&plan(&format!("{}, {}, {}", a.dev, b.dev, c.dev)));
    expect(&rig.plumb("apply", &[]), 0, "extended");
    assert_eq!(vgs("pv_count"), "3");
    rig.plan(&plan(&format!("{}, {}", a.dev, b.dev)));
    let d = rig.plumb("diff", &[]);
    expect(&d, 2, "an extra PV is drift");
    assert!(changes(&d, "vg").contains("plumb never removes a PV"), "{}", d.stdout);
    let ap = rig.plumb("apply", &[]);
    expect(&ap, 0, "apply reports it and removes nothing");
    assert_eq!(vgs("pv_count"), "3");

    // A device holding a filesystem is never pvcreated.
    let e = rig.disk("pv-ext4", "64M");
    sh(&format!("mkfs.ext4 -q {}", e.dev));
    rig.plan(&plan(&format!("{}, {}, {}, {}", a.dev, b.dev, c.dev, e.dev)));
    let o = rig.plumb("apply", &[]);
    expect(&o, 1, "refused");
    assert!(
        resource(&o, "vg")["error"]
            .to_string()
            .contains("holds an ext4 filesystem"),
        "{}",
        o.stdout
    );
    assert_eq!(vgs("pv_count"), "3");
}

#[test]
fn a_fresh_host_diff_predicts_the_whole_storage_chain() {
    let Some(rig) = Rig::new() else { return };
    if !has("vgs") {
        storage::skip("lvm2 is not installed (the VM tier covers LVM)");
        return;
    }
    let a = rig.disk("ssd", "2G");
    let data = rig.path("var/lib/docker");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("existing"), "data to move").unwrap();
    rig.plan(
        r#"
resources:
  - id: fast-vg
    lvm.vg: {name: plumb_fresh_vg, pvs: ["{{ ssd }}"]}
  - id: docker-lv
    lvm.lv: {vg: plumb_fresh_vg, name: docker, size: 1G}
  - id: rest-lv
    lvm.lv: {vg: plumb_fresh_vg, name: rest, size: 100%FREE}
  - id: docker-fs
    filesystem: {dev: /dev/plumb_fresh_vg/docker, type: ext4}
  - id: docker-mount
    mount:
      path: "{{ root }}/var/lib/docker"
      src: /dev/mapper/plumb_fresh_vg-docker
      fstype: ext4
      fstab: "{{ fstab }}"
      migrate: {stop: [docker]}
  - id: daemon-json
    file: {path: "{{ root }}/var/lib/docker/plumb.json", content: "{}"}
"#,
    );
    let d = rig.plumb("diff", &[("ssd", a.dev.as_str())]);
    expect(&d, 2, "the whole chain is pending");
    let after = |id: &str| resource(&d, id)["after"].to_string();
    assert_eq!(resource(&d, "fast-vg")["status"], "pending");
    assert_eq!(after("docker-lv"), "[\"fast-vg\"]");
    assert_eq!(after("rest-lv"), "[\"fast-vg\"]");
    assert_eq!(after("docker-fs"), "[\"docker-lv\"]");
    assert!(after("docker-mount").contains("docker-fs") && after("docker-mount").contains("docker-lv"));
    assert!(
        after("daemon-json").contains("docker-mount"),
        "files under a mount follow it"
    );
    assert!(
        changes(&d, "docker-lv").contains("plumb_fresh_vg/docker (1 GiB)"),
        "{}",
        d.stdout
    );
    assert!(changes(&d, "rest-lv").contains("100%FREE"), "{}", d.stdout);
    assert!(
        changes(&d, "docker-fs").contains("ext4 on the new device"),
        "{}",
        d.stdout
    );
    let m = resource(&d, "docker-mount");
    assert_eq!(m["risk"], "disruptive");
    assert!(m["changes"][0]["field"] == "migrate", "{m}");
    for id in [
        "fast-vg",
        "docker-lv",
        "rest-lv",
        "docker-fs",
        "docker-mount",
        "daemon-json",
    ] {
        assert!(
            resource(&d, id)["error"].is_null(),
            "`{id}` predicted, not failed: {}",
            d.stdout
        );
    }
    // diff changed nothing.
    assert!(sh(&format!("blkid -p {} || true", a.dev)).trim().is_empty());
    assert_eq!(rig.fstab(), FSTAB);
    // The text report says what follows what.
    let mut c = rig.ns.command(env!("CARGO_BIN_EXE_plumb"));
    let text = c
        .args(["diff", "--no-color"])
        .arg(rig.path("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", rig.dir.path().display()))
        .arg("--var")
        .arg(format!("fstab={}", rig.path("fstab").display()))
        .arg("--var")
        .arg(format!("ssd={}", a.dev))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("follows the pending change of `docker-lv`"), "{text}");
    assert!(text.contains("[disruptive]"), "{text}");
}
