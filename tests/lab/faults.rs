//! Target faults on real lab hosts (tests/lab): a filesystem that runs out
//! of space while a file or fstab is staged, a read-only filesystem, a
//! missing folder, a regular file in the path, a connection cut in the
//! middle of an upload, a host whose `sh` is dash, `bash --posix` or
//! busybox, a host whose `stat`/`sha256sum` print nonsense, and a probe
//! that prints without end. Each checks that the old files are intact, no
//! staged temp file is left, the error says what happened, the other hosts
//! converge and the next run finishes the job.

use crate::common;
use crate::support::lab;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Outcome, Plumb};
use lab::{Lab, Node};

fn plumb(lab: &Lab, cmd: &str, plan: &Path, inv: &Path) -> Outcome {
    Plumb::over_ssh(cmd, plan, inv, &lab.ssh_config(), "json").run()
}

/// Run `cmd` on `node` as root; its stdout. Panics when it fails.
fn on(lab: &Lab, node: &Node, cmd: &str) -> String {
    let out = lab.ssh(node, cmd);
    assert!(
        out.status.success(),
        "{}: `{cmd}` failed: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name}: {j}"))
}

fn resource<'a>(h: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    h["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no resource {id}: {h}"))
}

fn error_of(h: &serde_json::Value, id: &str) -> String {
    resource(h, id)["error"].as_str().unwrap_or_default().to_string()
}

/// The names of plumb's staged temp files (`.plumb-RUN.*`) under `dir` on
/// `node`, waiting up to 30 s for a script still running there to remove
/// them (a cut connection ends its remote script late).
fn temp_files_left(lab: &Lab, node: &Node, dir: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Right after `heal` the first connections may still fail: retry.
        let out = lab.ssh(node, &format!("find '{dir}' -name '.plumb[.-]*' 2>/dev/null; echo end"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let left = text
            .strip_suffix(
                "end
",
            )
            .map(str::to_string);
        match left {
            Some(l) if l.trim().is_empty() => return l,
            Some(l) if Instant::now() > deadline => return l,
            None if Instant::now() > deadline => panic!("{} unreachable: {out:?}", node.name),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Disk full while a large `source` file and an fstab are staged: on the
/// full host both fail with "no space left on <fs> (<path>)", the old
/// files are intact and no temp file is left; the other host converges;
/// once space is freed the next run converges.
#[test]
fn a_full_disk_while_staging_keeps_the_old_files_and_the_next_run_converges() {
    need_lab!();
    let lab = Lab::up(2);
    let (full, roomy) = (&lab.nodes[0], &lab.nodes[1]);
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("blob.bin");
    let data = pseudo_random(3 * 1024 * 1024, 7);
    std::fs::write(&blob, &data).unwrap();
    let old_fstab = "# old fstab\n/dev/vdx /mnt/old ext4 defaults 0 0\n";
    for n in [full, roomy] {
        on(
            &lab,
            n,
            &format!(
                "mkdir -p /srv/small && mount -t tmpfs -o size=1m tmpfs /srv/small && \
                 echo old > /srv/small/blob.bin && printf '{}' > /srv/small/fstab",
                old_fstab.replace('\n', "\\n")
            ),
        );
    }
    // Fill the first host's filesystem to the last block.
    on(
        &lab,
        full,
        "dd if=/dev/zero of=/srv/small/filler bs=4k 2>/dev/null || true",
    );
    on(&lab, roomy, "mount -o remount,size=16m /srv/small");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            r#"
resources:
  - id: blob
    file: {{path: /srv/small/blob.bin, source: {}}}
  - id: fstab
    mount: {{path: /mnt/data, src: /dev/vdz, fstype: ext4, state: present, fstab: /srv/small/fstab}}
"#,
            blob.display()
        ),
    )
    .unwrap();
    let inv = lab.inventory(dir.path(), "");
    let a = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let j = a.json();
    let h = host(&j, &full.name);
    assert_eq!(h["status"], "failed", "{h}");
    for (id, path) in [("blob", "/srv/small/blob.bin"), ("fstab", "/srv/small/fstab")] {
        let err = error_of(h, id);
        assert!(
            err.contains(&format!("no space left on /srv/small ({path})")) && err.contains("left as it was"),
            "{id}: {err}"
        );
    }
    assert_eq!(on(&lab, full, "cat /srv/small/blob.bin"), "old\n", "old file intact");
    assert_eq!(on(&lab, full, "cat /srv/small/fstab"), old_fstab, "old fstab intact");
    assert_eq!(temp_files_left(&lab, full, "/srv/small"), "", "no temp file left");
    assert_eq!(host(&j, &roomy.name)["status"], "changed", "the other host converges");
    let want = plumb_engine::module::sha256_hex(&data);
    assert!(on(&lab, roomy, "sha256sum /srv/small/blob.bin").contains(&want));
    // Space freed: the next run finishes the job.
    on(
        &lab,
        full,
        "rm /srv/small/filler && mount -o remount,size=16m /srv/small",
    );
    let again = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(on(&lab, full, "sha256sum /srv/small/blob.bin").contains(&want));
    assert!(on(&lab, full, "cat /srv/small/fstab").contains("/dev/vdz\t/mnt/data"));
    assert_eq!(plumb(&lab, "diff", &plan, &inv).code, 0);
}

/// A read-only filesystem at the target, a missing folder and a regular
/// file where a folder should be: each fails its resource with the reason
/// in words, creates nothing, and the rest of the plan converges.
#[test]
fn a_read_only_filesystem_a_missing_folder_and_a_file_in_the_path_fail_in_words() {
    need_lab!();
    let lab = Lab::up(1);
    let n = &lab.nodes[0];
    on(
        &lab,
        n,
        "mkdir -p /srv/ro && mount -t tmpfs -o size=1m tmpfs /srv/ro && echo old > /srv/ro/conf && \
         mount -o remount,ro /srv/ro && echo keep > /srv/afile",
    );
    let (_dir, plan, inv) = lab.job(
        r#"
resources:
  - id: ro
    file: {path: /srv/ro/conf, content: "new\n"}
  - id: missing
    file: {path: /srv/nope/conf, content: "new\n"}
  - id: under-a-file
    file: {path: /srv/afile/conf, content: "new\n"}
  - id: fine
    file: {path: /srv/fine, content: "fine\n"}
"#,
        "",
    );
    let a = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let j = a.json();
    let h = host(&j, &n.name);
    let ro = error_of(h, "ro");
    assert!(ro.contains("read-only filesystem at /srv/ro"), "{ro}");
    let missing = error_of(h, "missing");
    assert!(missing.contains("the folder /srv/nope does not exist"), "{missing}");
    let under = error_of(h, "under-a-file");
    assert!(under.contains("/srv/afile is not a folder"), "{under}");
    assert_eq!(resource(h, "fine")["status"], "changed");
    assert_eq!(on(&lab, n, "cat /srv/ro/conf /srv/afile"), "old\nkeep\n");
    assert_eq!(on(&lab, n, "ls -A /srv | grep -c plumb || true"), "0\n");
    assert_eq!(
        on(&lab, n, "test -e /srv/nope && echo there || echo absent"),
        "absent\n"
    );
}

/// The connection to a host is cut in the middle of a 64 MiB upload: the
/// host is failed with the step it was in, the other host converges, the
/// target is either the old file or the whole new one (never half), no
/// temp file is left, and the next run finishes the job.
#[test]
fn a_connection_cut_mid_upload_names_the_step_and_the_next_run_finishes() {
    need_lab!();
    let lab = Lab::up(2);
    let (cut, fine) = (&lab.nodes[0], &lab.nodes[1]);
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("big.bin");
    let data = pseudo_random(64 * 1024 * 1024, 11);
    std::fs::write(&blob, &data).unwrap();
    for n in [cut, fine] {
        on(&lab, n, "mkdir -p /srv/up && echo old > /srv/up/big.bin");
    }
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "resources:\n  - id: big\n    file: {{path: /srv/up/big.bin, source: {}}}\n",
            blob.display()
        ),
    )
    .unwrap();
    let inv = lab.inventory(dir.path(), "");
    let child = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json")
        .args(["--connect-timeout", "2"])
        .spawn();
    // Cut the link as soon as the staged temp file appears on the host.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = on(&lab, cut, "ls -A /srv/up");
        if seen.contains(".plumb") {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started: {seen}");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.cut(&cut.name);
    let o = Outcome::from_output(&child.wait_with_output().unwrap());
    lab.heal(&cut.name);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let j = o.json();
    let h = host(&j, &cut.name);
    assert_eq!(h["status"], "failed", "{h}");
    let err = error_of(h, "big");
    assert!(
        err.contains("in step `write /srv/up/big.bin`"),
        "the step it was in: {err}"
    );
    assert_eq!(host(&j, &fine.name)["status"], "changed");
    assert_eq!(temp_files_left(&lab, cut, "/srv/up"), "", "no temp file left");
    let want = plumb_engine::module::sha256_hex(&data);
    let now = on(&lab, cut, "sha256sum /srv/up/big.bin");
    assert!(
        now.contains(&want) || now.starts_with(&plumb_engine::module::sha256_hex(b"old\n")),
        "old or new, never half: {now}"
    );
    let again = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(on(&lab, cut, "sha256sum /srv/up/big.bin").contains(&want));
}

/// What a run cut off outright leaves (plumb SIGKILLed, or the host losing
/// its power mid-upload, before the script's trap could run): temporary
/// files in the target's folder. The next write there removes plumb's own
/// (by name: `.plumb-RUN.XXXXXXXX`, or the older `.plumb.XXXXXXXX`) once
/// untouched for 10 minutes, and reports each; a fresh one (an upload of
/// another run under way) and other files stay.
#[test]
fn a_write_removes_the_stale_temp_files_of_interrupted_runs_and_says_so() {
    need_lab!();
    let lab = Lab::up(1);
    let n = &lab.nodes[0];
    on(
        &lab,
        n,
        "mkdir -p /srv/stale && cd /srv/stale && \
         echo half > .plumb-20261201T101010Z-dead.Ab3dEf9h && echo half > .plumb.Zx81Qw02 && \
         touch -d '1 hour ago' .plumb-20261201T101010Z-dead.Ab3dEf9h .plumb.Zx81Qw02 && \
         echo live > .plumb-20261204T090000Z-live.Qq11Ww22 && \
         echo mine > .plumbing && touch -d '1 hour ago' .plumbing",
    );
    let (_dir, plan, inv) = lab.job(
        "resources:\n  - id: conf\n    file: {path: /srv/stale/app.conf, content: \"x = 1\\n\"}\n",
        "",
    );
    let o = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let notes = resource(host(&o.json(), &n.name), "conf")["notes"].to_string();
    for gone in [".plumb-20261201T101010Z-dead.Ab3dEf9h", ".plumb.Zx81Qw02"] {
        assert!(
            notes.contains(&format!(
                "removed a temporary file an interrupted run left: /srv/stale/{gone}"
            )),
            "{notes}"
        );
    }
    assert_eq!(
        on(&lab, n, "ls -A /srv/stale | sort"),
        ".plumb-20261204T090000Z-live.Qq11Ww22\n.plumbing\napp.conf\n"
    );
}

const SHELL_PLAN: &str = r#"
resources:
  - id: base
    directory: {path: /srv/shells, mode: "0750"}
  - id: conf
    file:
      path: /srv/shells/app.conf
      content: "name = x\nhostile = $(touch /tmp/pwned) `id` ; 'q' \"dq\" \\ ünï\n"
      mode: "0640"
      validate: "grep -q '^name = ' %s"
      backup: true
  - id: which-shell
    command:
      run: "tr '\\0' ' ' < /proc/$$/cmdline > /srv/shells/shell; readlink /proc/$$/exe >> /srv/shells/shell"
      creates: /srv/shells/shell
  - id: as-root
    become: true
    file: {path: /srv/shells/by-sudo, content: "sudo\n", owner: root}
"#;

/// Probe and apply on a host whose `sh` is dash (Debian's), `bash
/// --posix`, or busybox's ash (the static busybox of this machine, copied
/// in): the same plan converges on each, including a validate, a backup, a
/// command and `become` through sudo (as `deploy`).
#[test]
fn probe_and_apply_work_when_sh_is_dash_bash_posix_or_busybox() {
    need_lab!();
    let busybox = Path::new("/usr/bin/busybox");
    let static_busybox = busybox.is_file()
        && std::process::Command::new("ldd")
            .arg(busybox)
            .output()
            .is_ok_and(|o| !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic"));
    if !static_busybox {
        let required = std::env::var("PLUMB_LAB_REQUIRE").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "PLUMB_LAB_REQUIRE is set but /usr/bin/busybox (static) is missing: apt-get install busybox-static"
        );
        eprintln!("skipped: needs a static /usr/bin/busybox (apt-get install busybox-static)");
        return;
    }
    let lab = Lab::up(3);
    let (dash, posix, bb) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    assert_eq!(on(&lab, dash, "readlink -f \"$(command -v sh)\""), "/usr/bin/dash\n");
    on(
        &lab,
        posix,
        "printf '#!/bin/bash\\nexec /bin/bash --posix \"$@\"\\n' > /usr/local/bin/sh && chmod 755 /usr/local/bin/sh",
    );
    let copy = std::process::Command::new("ssh")
        .arg("-F")
        .arg(lab.ssh_config())
        .arg(format!("root@{}", bb.ip))
        .arg("cat > /usr/local/bin/busybox && chmod 755 /usr/local/bin/busybox && ln -s busybox /usr/local/bin/sh")
        .stdin(std::fs::File::open(busybox).unwrap())
        .output()
        .unwrap();
    assert!(copy.status.success(), "{copy:?}");
    for n in [dash, posix, bb] {
        // What `sh` is for sudo too (its secure_path puts /usr/local/bin first).
        let as_deploy = lab.ssh_as("deploy", n, "sudo -n sh -c 'readlink /proc/$$/exe'");
        assert!(as_deploy.status.success(), "{as_deploy:?}");
    }
    let (_dir, plan, inv) = lab.job(SHELL_PLAN, "    user: deploy\n");
    for n in [dash, posix, bb] {
        on(
            &lab,
            n,
            "mkdir -p /srv/shells && chown deploy /srv/shells && echo old > /srv/shells/app.conf",
        );
    }
    let d = plumb(&lab, "diff", &plan, &inv);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let a = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(plumb(&lab, "diff", &plan, &inv).code, 0, "converged");
    let want_conf = "name = x\nhostile = $(touch /tmp/pwned) `id` ; 'q' \"dq\" \\ ünï\n";
    for (n, shell) in [
        (dash, "/usr/bin/dash"),
        (posix, "--posix"),
        (bb, "/usr/local/bin/busybox"),
    ] {
        assert_eq!(on(&lab, n, "cat /srv/shells/app.conf"), want_conf, "{}", n.name);
        assert_eq!(on(&lab, n, "stat -c %a /srv/shells/app.conf"), "640\n", "{}", n.name);
        assert_eq!(on(&lab, n, "cat /srv/shells/by-sudo"), "sudo\n", "{}", n.name);
        let ran = on(&lab, n, "cat /srv/shells/shell");
        assert!(ran.contains(shell), "{}: the command ran under {ran}", n.name);
        assert_eq!(on(&lab, n, "test -e /tmp/pwned && echo pwned || echo clean"), "clean\n");
        let backups = on(&lab, n, "find /var/lib/plumb/backups /home/deploy/.local/state/plumb/backups -name app.conf -exec cat {} + 2>/dev/null || true");
        assert_eq!(backups, "old\n", "{}: the old file was backed up", n.name);
    }
}

/// A host whose `stat` and `sha256sum` print unexpected text (wrapper
/// scripts that shadow them on the PATH): the host fails with an error
/// that says so, nothing is written, the old file stays; the other host
/// converges.
#[test]
fn a_host_whose_stat_and_sha256sum_print_nonsense_fails_and_writes_nothing() {
    need_lab!();
    let lab = Lab::up(2);
    let (odd, fine) = (&lab.nodes[0], &lab.nodes[1]);
    on(
        &lab,
        odd,
        "mkdir -p /srv/odd && echo old > /srv/odd/conf && \
         printf '#!/bin/sh\\necho \"this is not stat: $*\"\\n' > /usr/local/bin/stat && \
         printf '#!/bin/sh\\necho \"sums are for other tools\"\\n' > /usr/local/bin/sha256sum && \
         chmod 755 /usr/local/bin/stat /usr/local/bin/sha256sum",
    );
    on(&lab, fine, "mkdir -p /srv/odd && echo old > /srv/odd/conf");
    let (_dir, plan, inv) = lab.job(
        "resources:\n  - id: conf\n    file: {path: /srv/odd/conf, content: \"new\\n\", mode: \"0644\"}\n",
        "",
    );
    let a = plumb(&lab, "apply", &plan, &inv);
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let j = a.json();
    let h = host(&j, &odd.name);
    assert_eq!(h["status"], "failed", "{h}");
    let said = format!("{} {}", h["error"], error_of(h, "conf"));
    assert!(
        said.contains("stat") || said.contains("unexpected") || said.contains("checksum"),
        "the error says what is wrong: {said}"
    );
    assert_eq!(on(&lab, odd, "/bin/cat /srv/odd/conf"), "old\n", "nothing written");
    assert_eq!(temp_files_left(&lab, odd, "/srv/odd"), "");
    assert_eq!(host(&j, &fine.name)["status"], "changed");
}

/// Peak resident memory of a running process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A probe that prints without end (a `stat` that is really `yes`): the
/// host fails with a clear error once the output passes plumb's bound, in
/// bounded memory and time; the other host converges.
#[test]
fn a_probe_that_prints_without_end_fails_in_bounded_memory() {
    need_lab!();
    let lab = Lab::up(2);
    let (loud, fine) = (&lab.nodes[0], &lab.nodes[1]);
    on(
        &lab,
        loud,
        "printf '#!/bin/sh\\nexec yes this-is-not-stat\\n' > /usr/local/bin/stat && chmod 755 /usr/local/bin/stat",
    );
    let (_dir, plan, inv) = lab.job(
        "resources:\n  - id: f\n    file: {path: /srv/loud, content: \"x\\n\"}\n",
        "",
    );
    let mut child = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json").spawn();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    let stdout = std::thread::spawn({
        let mut out = child.stdout.take().unwrap();
        move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut out, &mut s).unwrap();
            s
        }
    });
    loop {
        if let Some(k) = peak_kib(pid) {
            peak = peak.max(k);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plumb still reading an endless probe after 120 s (peak {peak} KiB)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let out = stdout.join().unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let h = host(&j, &loud.name);
    let err = format!("{} {}", h["error"], h["resources"]);
    assert!(err.contains("printed more than 64 MiB on its standard output"), "{err}");
    assert!(peak < 512 * 1024, "peak memory {peak} KiB");
    assert_eq!(host(&j, &fine.name)["status"], "changed");
    eprintln!("peak resident memory of plumb: {peak} KiB");
}

use crate::support::storage;

/// A filesystem on `{{ dev }}` and `/srv/app` migrated onto it, stopping
/// `plumb-holder` meanwhile.
const MIGRATION_PLAN: &str = r#"
resources:
  - id: app-fs
    filesystem: {dev: "{{ dev }}", type: ext4}
  - id: app-mount
    mount:
      path: /srv/app
      src: "{{ dev }}"
      fstype: ext4
      migrate: {stop: [plumb-holder]}
"#;

/// A systemd lab node running `plumb-holder` over the data that `data`
/// (shell) makes in `/srv/app`, with a loop device of `size` for it.
fn holder_node(size: &str, data: &str) -> (Lab, tempfile::TempDir, storage::LoopDev) {
    let lab = Lab::up_systemd(1);
    let n = &lab.nodes[0];
    assert_eq!(on(&lab, n, "systemctl is-system-running --wait || true"), "running\n");
    let dir = tempfile::tempdir().unwrap();
    let disk = storage::LoopDev::new(dir.path(), "data", size);
    on(
        &lab,
        n,
        &format!(
            "{data} && printf '[Service]\\nExecStart=/bin/sleep 100000\\n' > /etc/systemd/system/plumb-holder.service && \
             systemctl daemon-reload && systemctl start plumb-holder"
        ),
    );
    (lab, dir, disk)
}

/// The new volume fills up in the middle of a data migration (mount +
/// migrate): the resource fails (exit 1) saying so, nothing is mounted at
/// the path, the old data is there and untouched, the stopped service runs
/// again, and the partial copy on the new volume is removed, so that once
/// the data fits the next run finishes the job (before, the next run
/// refused: the new volume "is not empty").
#[test]
fn a_migration_that_fills_the_new_volume_removes_its_partial_copy_and_the_next_run_finishes() {
    need_lab!();
    if !storage::available() {
        return;
    }
    let (lab, dir, disk) = holder_node(
        "16M",
        "mkdir -p /srv/app/conf && echo keep > /srv/app/conf/a && echo also > /srv/app/b && \
         head -c 25000000 /dev/urandom > /srv/app/big",
    );
    let n = &lab.nodes[0];
    let sums = "cd /srv/app && find . -type f | sort | xargs sha256sum";
    let before = on(&lab, n, sums);
    let (plan, inv) = (dir.path().join("plan.yaml"), lab.inventory(dir.path(), ""));
    std::fs::write(&plan, MIGRATION_PLAN).unwrap();
    let run = |cmd: &str| {
        Plumb::over_ssh(cmd, &plan, &inv, &lab.ssh_config(), "json")
            .vars(&[format!("dev={}", disk.dev)])
            .run()
    };
    let a = run("apply");
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let j = a.json();
    let err = error_of(host(&j, &n.name), "app-mount");
    assert!(
        err.contains("the copy failed") && err.contains("holds its old data as before"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the partial copy on {} was removed", disk.dev)),
        "{err}"
    );
    assert_eq!(
        on(&lab, n, "findmnt -n -o SOURCE /srv/app || true"),
        "",
        "nothing mounted"
    );
    assert_eq!(on(&lab, n, sums), before, "the old data is untouched");
    assert_eq!(on(&lab, n, "systemctl is-active plumb-holder"), "active\n", "restarted");
    let left = on(
        &lab,
        n,
        &format!(
            "mkdir -p /mnt/chk && mount '{}' /mnt/chk && ls -A /mnt/chk; umount /mnt/chk",
            disk.dev
        ),
    );
    assert_eq!(left, "lost+found\n", "the new volume holds no partial copy");
    // The data fits once the big file is gone: the next run finishes.
    on(&lab, n, "rm /srv/app/big");
    let after = on(&lab, n, sums);
    let again = run("apply");
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(on(&lab, n, "findmnt -n -o SOURCE /srv/app"), format!("{}\n", disk.dev));
    assert_eq!(on(&lab, n, sums), after, "the data moved whole");
    assert_eq!(on(&lab, n, "systemctl is-active plumb-holder"), "active\n");
}

/// The connection is cut in the middle of a multi-step resource (the
/// filesystem made, then mount + migrate copying): the host is failed with
/// the step it was in; the migration, which holds its own rollback, runs
/// to its end on the host regardless (a hangup or a closed pipe does not
/// stop it between stopping the service and starting it again), so
/// nothing is left half-done; the next run finishes the job.
#[test]
fn a_connection_cut_mid_migration_names_the_step_and_the_next_run_finishes() {
    need_lab!();
    if !storage::available() {
        return;
    }
    let (lab, dir, disk) = holder_node(
        "256M",
        "mkdir -p /srv/app && for i in 1 2 3 4 5 6; do head -c 20000000 /dev/urandom > /srv/app/f$i; done",
    );
    let n = &lab.nodes[0];
    let sums = "cd /srv/app && find . -type f ! -path './lost+found/*' | sort | xargs sha256sum";
    let before = on(&lab, n, sums);
    let (plan, inv) = (dir.path().join("plan.yaml"), lab.inventory(dir.path(), ""));
    std::fs::write(&plan, MIGRATION_PLAN).unwrap();
    let vars = [format!("dev={}", disk.dev)];
    let child = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json")
        .vars(&vars)
        .args(["--connect-timeout", "2"])
        .spawn();
    // Cut the link as soon as the copy runs (its temporary mount is there).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = on(&lab, n, "findmnt -ln -o TARGET | grep -c plumb-migrate || true");
        if seen.trim() != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the migration never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.cut(&n.name);
    let o = Outcome::from_output(&child.wait_with_output().unwrap());
    lab.heal(&n.name);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let j = o.json();
    let h = host(&j, &n.name);
    assert_eq!(h["status"], "failed", "{h}");
    let err = error_of(h, "app-mount");
    assert!(
        err.contains(&format!("in step `migrate /srv/app onto {}`", disk.dev)),
        "the step it was in: {err}"
    );
    // The migration on the host ends by itself: no temporary mount left,
    // the service runs again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while on(&lab, n, "findmnt -ln -o TARGET | grep -c plumb-migrate || true").trim() != "0" {
        assert!(Instant::now() < deadline, "the migration on the host never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(on(&lab, n, "systemctl is-active plumb-holder"), "active\n", "restarted");
    let again = Plumb::over_ssh("apply", &plan, &inv, &lab.ssh_config(), "json")
        .vars(&vars)
        .run();
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(on(&lab, n, "findmnt -n -o SOURCE /srv/app"), format!("{}\n", disk.dev));
    assert_eq!(on(&lab, n, sums), before, "the data moved whole");
    assert_eq!(on(&lab, n, "systemctl is-active plumb-holder"), "active\n");
}

/// A folder in the target's path is a symlink that another user (`deploy`,
/// who owns `/srv/app`) swapped in between the reviewed diff and the apply,
/// pointing into `/etc`: the write refuses it, naming the link and its
/// owner, and nothing lands in `/etc`. A symlink owned by root is followed.
#[test]
fn a_folder_swapped_for_a_symlink_into_etc_after_the_diff_is_refused() {
    need_lab!();
    let lab = Lab::up(1);
    let n = &lab.nodes[0];
    on(
        &lab,
        n,
        "mkdir -p /srv/app/conf && chown -R deploy /srv/app && mkdir -p /srv/real && ln -s /srv/real /srv/by-root",
    );
    let (dir, plan, inv) = lab.job(
        r#"
resources:
  - id: evil
    file: {path: /srv/app/conf/plumb-evil.conf, content: "x\n"}
  - id: via-root-link
    file: {path: /srv/by-root/ok.conf, content: "ok\n"}
"#,
        "",
    );
    let saved = dir.path().join("reviewed.plan");
    let d = Plumb::over_ssh("diff", &plan, &inv, &lab.ssh_config(), "json")
        .arg("--out")
        .arg(&saved)
        .run();
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    // deploy swaps its folder for a symlink into /etc.
    let swap = lab.ssh_as("deploy", n, "rmdir /srv/app/conf && ln -s /etc /srv/app/conf");
    assert!(swap.status.success(), "{swap:?}");
    let a = Plumb::new()
        .arg("apply")
        .arg(&saved)
        .args(["--format", "json", "--yes", "--ssh-config"])
        .arg(lab.ssh_config())
        .run();
    assert_eq!(a.code, 1, "{}{}", a.stdout, a.stderr);
    let j = a.json();
    let h = host(&j, &n.name);
    let err = error_of(h, "evil");
    assert!(
        err.contains("refused to write /srv/app/conf/plumb-evil.conf")
            && err.contains("/srv/app/conf is a symlink owned by uid 1001"),
        "{err}"
    );
    assert_eq!(
        on(&lab, n, "test -e /etc/plumb-evil.conf && echo LANDED || echo absent"),
        "absent\n"
    );
    assert_eq!(on(&lab, n, "ls -A /etc | grep -c '^.plumb' || true"), "0\n");
    assert_eq!(resource(h, "via-root-link")["status"], "changed");
    assert_eq!(on(&lab, n, "cat /srv/real/ok.conf"), "ok\n");
}
