//! Self-test of the tier-2 VM lab and its Rust helper. Not a cargo test
//! target, nor a module of the `vm` target beside it (tests/vm/main.rs does
//! not declare it); run it standalone, as root:
//!
//!   rustc --edition 2021 --test tests/vm/selftest.rs -o /tmp/vm-selftest && /tmp/vm-selftest --nocapture
#[path = "../support/vm.rs"]
mod vm;
use std::time::Instant;
use vm::Vm;

fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => st
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[test]
fn lvm_filesystems_resize_and_teardown() {
    if !Vm::available() {
        return;
    }
    let t = Instant::now();
    let vm = Vm::up();
    eprintln!("boot to ssh: {:.1?}", t.elapsed());
    let pid = std::fs::read_to_string(vm.dir.join("pid")).unwrap();
    let pid = pid.trim().to_owned();
    assert!(alive(&pid));
    assert!(vm.port() > 0);
    assert_eq!(vm.disk(0), "/dev/vdb");
    assert_eq!(vm.disk(1), "/dev/vdc");
    assert_eq!(vm.ssh_ok("hostname").trim(), "vm");

    // latency: shared connection vs a fresh one each time
    let t = Instant::now();
    for _ in 0..5 {
        assert!(vm.ssh("true").status.success());
    }
    let shared = t.elapsed() / 5;
    let t = Instant::now();
    for _ in 0..3 {
        assert!(vm.ssh_fresh("true").status.success());
    }
    let fresh = t.elapsed() / 3;
    eprintln!("ssh true: {shared:.2?} shared connection, {fresh:.2?} fresh connection");

    // users
    let o = vm.ssh_as("deploy", "id -u && sudo -n true && echo sudo-ok");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1001\nsudo-ok");
    assert!(!vm.ssh_as("nosudo", "sudo -n true").status.success());

    // the data disks are empty and distinct from the root
    let o = vm.ssh_ok("lsblk -dno NAME,SIZE,SERIAL /dev/vda /dev/vdb /dev/vdc");
    eprintln!("{o}");
    assert!(o.contains("vdb") && o.contains("plumb-data0") && o.contains("plumb-root"));
    assert!(!vm.ssh("blkid /dev/vdb").status.success());

    let lvm = "export LVM_SUPPRESS_FD_WARNINGS=1; ";
    let step = |what: &str, cmd: &str| -> String {
        let t = Instant::now();
        let out = vm.ssh_ok(&format!("{lvm}{cmd}"));
        eprintln!("{:>7.2?}  {what}", t.elapsed());
        out
    };
    step("pvcreate", "pvcreate -q /dev/vdb /dev/vdc");
    step("vgcreate", "vgcreate -q vg0 /dev/vdb /dev/vdc");
    step("lvcreate 1G", "lvcreate -q -L 1G -n lv0 vg0");
    step("mkfs.ext4", "mkfs.ext4 -q /dev/vg0/lv0");
    step("mount", "mount /dev/vg0/lv0 /mnt");
    step("lvextend -r to 2G", "lvextend -q -r -L 2G vg0/lv0");
    let df = step("df", "df -B1 --output=size /mnt | tail -1");
    let size: u64 = df.trim().parse().unwrap();
    assert!(size > 1_900_000_000, "ext4 did not grow: {size}");

    let vgs = step("vgs json", "vgs --reportformat json --units b --nosuffix");
    assert!(vgs.contains("\"vg_name\":\"vg0\""), "{vgs}");
    assert!(vgs.contains("\"vg_size\":\"8581545984\""), "{vgs}"); // 2 x (4G - 1 MiB metadata)
    let lvs = step(
        "lvs json",
        "lvs --reportformat json --units b --nosuffix -o lv_name,lv_size",
    );
    assert!(lvs.contains("\"lv_size\":\"2147483648\""), "{lvs}");

    let fm = step("findmnt --json", "findmnt --json /mnt");
    assert!(fm.contains("\"source\": \"/dev/mapper/vg0-lv0\""), "{fm}");
    assert!(fm.contains("\"fstype\": \"ext4\""), "{fm}");
    let b = step("blkid", "blkid /dev/vdb /dev/mapper/vg0-lv0");
    assert!(b.contains("LVM2_member") && b.contains("TYPE=\"ext4\""), "{b}");
    assert!(vm.ssh_ok("readlink -f /dev/vg0/lv0").starts_with("/dev/dm-"));

    // xfs: create, grow with the LV
    step("lvcreate 512M", "lvcreate -q -L 512M -n x vg0");
    step(
        "mkfs.xfs",
        "mkfs.xfs -q /dev/vg0/x && mkdir -p /srv/x && mount /dev/vg0/x /srv/x",
    );
    step("lvextend 1G", "lvextend -q -L 1G vg0/x");
    step("xfs_growfs", "xfs_growfs /srv/x >/dev/null");
    let x: u64 = vm
        .ssh_ok("df -B1 --output=size /srv/x | tail -1")
        .trim()
        .parse()
        .unwrap();
    assert!(x > 1_000_000_000, "xfs did not grow: {x}");
    let fm = vm.ssh_ok("findmnt -J -o TARGET,SOURCE,FSTYPE,SIZE -b /srv/x");
    assert!(fm.contains("xfs"), "{fm}");

    // grow /dev/vdb from the host while running, then pvresize
    let t = Instant::now();
    vm.resize_disk(0, "6G");
    eprintln!("{:>7.2?}  resize-disk vdb to 6G", t.elapsed());
    assert_eq!(
        vm.ssh_ok("blockdev --getsize64 /dev/vdb").trim(),
        (6u64 << 30).to_string()
    );
    step("pvresize", "pvresize -q /dev/vdb");
    let pv = vm.ssh_ok(&format!(
        "{lvm}pvs --reportformat json --units b --nosuffix -o pv_name,pv_size /dev/vdb"
    ));
    assert!(pv.contains("\"pv_size\":\"6438256640\""), "{pv}"); // 6G - 1 MiB

    let dir = vm.dir.clone();
    drop(vm);
    for _ in 0..50 {
        if !alive(&pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive(&pid), "qemu {pid} still running after drop");
    assert!(!dir.exists(), "state dir kept after a clean drop");
}
