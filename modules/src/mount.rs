//! `mount`: a mount point, both in fstab and live. The two are probed and
//! diffed apart (a `fstab` change and a `mounted`/`options` change), so a
//! review says which of them differs. A different filesystem mounted at the
//! path is reported, never silently mounted over; mounting over a directory
//! that holds data is refused unless `migrate:` moves the data across
//! (see `migrate.rs`). fstab is rewritten atomically with a backup,
//! and only its line for this mount point changes.

use plumb_engine::module::{
    sha256_hex, Change, Changes, Claim, Claims, CompileCx, Failure, FileWrite, Module, ModuleDoc, ParamDoc, Payload,
    ProbeOutput, Risk, Step,
};
use plumb_engine::report::{Downtime, DowntimeKind};
use plumb_engine::shell::Sh;
use plumb_engine::units::count;
use serde::{Deserialize, Serialize};

use crate::fstab::{entries_for, normalize, rewrite, FstabEntry};
use crate::migrate::{self, Migration};
use crate::size::human;
use crate::stat::{fields, section_marker, sections};

/// The `mount` module.
pub struct Mount;

/// The state of a mount point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountState {
    /// In fstab and mounted.
    #[default]
    Mounted,
    /// In fstab; mounted or not, as it is.
    Present,
    /// In fstab, and not mounted.
    Unmounted,
    /// Neither in fstab nor mounted.
    Absent,
}

/// `migrate:`: move what the mount point holds onto the new filesystem.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default = "plumb_engine::module::yes")]
    keep_old: bool,
    stop_command: Option<String>,
}

/// Parameters of `mount`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    path: String,
    src: Option<String>,
    fstype: Option<String>,
    #[serde(default = "defaults")]
    opts: Vec<String>,
    #[serde(default)]
    dump: u32,
    #[serde(default)]
    passno: u32,
    #[serde(default)]
    state: MountState,
    #[serde(default = "etc_fstab")]
    fstab: String,
    migrate: Option<Migrate>,
}

fn defaults() -> Vec<String> {
    vec!["defaults".into()]
}

fn etc_fstab() -> String {
    "/etc/fstab".into()
}

impl Params {
    fn src(&self) -> &str {
        self.src.as_deref().unwrap_or_default()
    }

    fn entry(&self) -> FstabEntry {
        FstabEntry {
            src: self.src().to_string(),
            path: self.path.clone(),
            fstype: self.fstype.clone().unwrap_or_else(|| "auto".into()),
            opts: self.opts.clone(),
            dump: self.dump,
            passno: self.passno,
        }
    }

    /// Whether `src` names a device or a file (so it must exist), rather
    /// than a pseudo filesystem (`tmpfs`) or a network share.
    fn src_is_device(&self) -> bool {
        let s = self.src();
        s.starts_with('/')
            || ["UUID=", "LABEL=", "PARTUUID=", "PARTLABEL="]
                .iter()
                .any(|t| s.starts_with(t))
    }

    fn opts_text(&self) -> String {
        self.opts.join(",")
    }

    /// A bind mount: `src` is a directory shown again at `path`.
    fn is_bind(&self) -> bool {
        is_bind(&self.opts)
    }
}

/// Whether mount options make a bind mount.
fn is_bind(opts: &[String]) -> bool {
    opts.iter().any(|o| o == "bind" || o == "rbind")
}

/// The mount at the path, as findmnt shows it (the top one if several are stacked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveMount {
    source: String,
    fstype: String,
    options: String,
    /// It is the plan's `src`.
    ours: bool,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    fstab_exists: bool,
    fstab_sha256: String,
    #[serde(skip)]
    fstab: Vec<u8>,
    /// The fstab entries for this mount point: (line number, entry, line as written).
    entries: Vec<(usize, FstabEntry, String)>,
    live: Option<LiveMount>,
    /// The source resolved to a path on the host (`None`: it does not exist).
    src_real: Option<String>,
    /// What is at the path: `none`, `dir` or `other`.
    path_kind: String,
    /// Entries in the directory (but `lost+found`).
    path_entries: u64,
    /// Bytes a migration would move (measured only when one would happen;
    /// not part of the fingerprint a saved plan compares: data in use grows).
    #[serde(skip)]
    data_bytes: Option<u64>,
    /// The size of the block device a migration would copy onto (measured
    /// with `data_bytes`).
    src_bytes: Option<u64>,
    /// The disk holding the data now, and how fast it read (bytes per
    /// second), measured with `data_bytes` when it is a block device (a
    /// measurement, not compared by a saved plan).
    #[serde(skip)]
    read: Option<(String, u64)>,
    /// The units of `migrate.stop` and the units that trigger them, as
    /// systemd shows them (read only when a migration would happen, and
    /// empty where systemd does not run).
    units: Vec<UnitState>,
}

/// A systemd unit as `systemctl show` printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitState {
    id: String,
    active: String,
    /// The units that can start it: its sockets, paths and timers.
    triggered_by: Vec<String>,
}

impl UnitState {
    /// It runs, or is on its way up or down: a stop would stop it.
    fn runs(&self) -> bool {
        matches!(
            self.active.as_str(),
            "active" | "activating" | "reloading" | "deactivating"
        )
    }
}

/// `systemctl show -p Id,ActiveState,TriggeredBy` for several units: one
/// block of `Key=value` lines each, blocks apart by an empty line.
fn unit_states(text: &str) -> Vec<UnitState> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut u = UnitState::default();
        for line in block.lines() {
            match line.split_once('=') {
                Some(("Id", v)) => u.id = v.to_string(),
                Some(("ActiveState", v)) => u.active = v.to_string(),
                Some(("TriggeredBy", v)) => u.triggered_by = v.split_whitespace().map(str::to_string).collect(),
                _ => {}
            }
        }
        if !u.id.is_empty() {
            out.push(u);
        }
    }
    out
}

/// The unit a name given to systemctl means: `docker` is `docker.service`.
fn unit_id(name: &str) -> String {
    const KINDS: [&str; 11] = [
        ".service",
        ".socket",
        ".path",
        ".timer",
        ".target",
        ".mount",
        ".automount",
        ".swap",
        ".device",
        ".slice",
        ".scope",
    ];
    if KINDS.iter().any(|k| name.ends_with(k)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// What a migration stops, in words for the review: the listed units that
/// run, the running units that can start them again, and the listed ones
/// that do not run (left alone).
fn stopped_in_words(stop: &[String], units: &[UnitState]) -> String {
    if stop.is_empty() {
        return String::new();
    }
    if units.is_empty() {
        // No systemd to ask (or it did not answer): the plan's list as written.
        return format!("; services stopped meanwhile (those running): {}", stop.join(", "));
    }
    let stopped: Vec<String> = units_stopped(stop, units)
        .into_iter()
        .map(|s| match s.starts {
            Some(listed) => format!("{} (it can start {listed})", s.id),
            None => s.id,
        })
        .collect();
    let idle: Vec<String> = stop
        .iter()
        .map(|name| unit_id(name))
        .filter(|id| !units.iter().any(|u| &u.id == id && u.runs()))
        .collect();
    let mut out = if stopped.is_empty() {
        "; no unit to stop".to_string()
    } else {
        format!("; units stopped meanwhile: {}", stopped.join(", "))
    };
    if !idle.is_empty() {
        out.push_str(&format!("; not running, left alone: {}", idle.join(", ")));
    }
    out
}

/// `read.rate=BYTES SECONDS` (dd's figures) as bytes per second, with the
/// disk it was read from.
fn read_rate(dev: Option<&str>, rate: Option<&str>) -> Option<(String, u64)> {
    let (bytes, secs) = rate?.trim().split_once(' ')?;
    let (bytes, secs): (f64, f64) = (bytes.parse().ok()?, secs.parse().ok()?);
    (bytes > 0.0 && secs > 0.0).then(|| (dev.unwrap_or("?").trim().to_string(), (bytes / secs) as u64))
}

/// A unit a migration stops.
struct Stopped {
    /// Its id.
    id: String,
    /// For a unit not in the list: the listed one it can start again
    /// (a socket, a path unit).
    starts: Option<String>,
}

/// The units a migration stops (those of `stop` that run, and the running
/// units that trigger them), in the order they are named.
fn units_stopped(stop: &[String], units: &[UnitState]) -> Vec<Stopped> {
    let find = |id: &str| units.iter().find(|u| u.id == id);
    let mut out: Vec<Stopped> = Vec::new();
    for name in stop {
        let id = unit_id(name);
        if find(&id).is_some_and(UnitState::runs) && !out.iter().any(|s| s.id == id) {
            out.push(Stopped {
                id: id.clone(),
                starts: None,
            });
        }
        for t in find(&id).map(|u| u.triggered_by.as_slice()).unwrap_or_default() {
            if find(t).is_some_and(UnitState::runs) && !out.iter().any(|s| &s.id == t) {
                out.push(Stopped {
                    id: t.clone(),
                    starts: Some(id.clone()),
                });
            }
        }
    }
    out
}

/// How long a migration is expected to keep its units down: the data is
/// read once by the copy and twice by the check (both trees), at the rate
/// the data's disk reads now. A floor: many small files take longer.
fn expected_downtime(s: &State) -> (Option<u64>, String) {
    let Some(bytes) = s.data_bytes else {
        return (None, "unknown: the size of the data was not measured".into());
    };
    match &s.read {
        Some((dev, rate)) if *rate > 0 => {
            let secs = (bytes.saturating_mul(3) / rate).max(1);
            (
                Some(secs),
                format!(
                    "at least {}: {} read at {}/s from {dev} now, once by the copy and twice by the check \
                     (writing to the new disk, hashing and many small files take longer)",
                    plumb_engine::units::duration(std::time::Duration::from_secs(secs)),
                    human(bytes),
                    human(*rate)
                ),
            )
        }
        _ => (
            None,
            format!(
                "unknown: the time to copy and check {} (the disk holding it is not a block device plumb can read to measure its rate)",
                human(bytes)
            ),
        ),
    }
}

impl State {
    fn mounted_ours(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.ours)
    }

    fn foreign(&self) -> Option<&LiveMount> {
        self.live.as_ref().filter(|l| !l.ours)
    }

    fn holds_data(&self) -> bool {
        self.path_kind == "dir" && self.path_entries > 0
    }
}

/// Options that only mount(8) or the boot reads; the kernel never shows them.
fn userspace_option(o: &str) -> bool {
    matches!(
        o,
        "defaults" | "auto" | "noauto" | "nofail" | "user" | "nouser" | "users" | "owner" | "group" | "_netdev"
    ) || o.starts_with("x-")
        || o.starts_with("X-")
        || o.starts_with("comment=")
}

/// The per-mount flags the kernel always shows, as `opts` set them (later
/// options override earlier ones, as mount(8) reads them).
#[derive(Debug, PartialEq, Eq)]
struct Flags {
    ro: bool,
    nosuid: bool,
    nodev: bool,
    noexec: bool,
    sync: bool,
    atime: &'static str,
}

impl Flags {
    fn wanted(opts: &[String]) -> Self {
        let mut f = Flags {
            ro: false,
            nosuid: false,
            nodev: false,
            noexec: false,
            sync: false,
            atime: "relatime",
        };
        for o in opts {
            match o.as_str() {
                "ro" => f.ro = true,
                "rw" => f.ro = false,
                "nosuid" => f.nosuid = true,
                "suid" => f.nosuid = false,
                "nodev" => f.nodev = true,
                "dev" => f.nodev = false,
                "noexec" => f.noexec = true,
                "exec" => f.noexec = false,
                "sync" => f.sync = true,
                "async" => f.sync = false,
                "user" | "users" | "owner" | "group" => {
                    f.noexec = true;
                    f.nosuid = true;
                    f.nodev = true;
                }
                "noatime" => f.atime = "noatime",
                "relatime" => f.atime = "relatime",
                "strictatime" => f.atime = "strictatime",
                _ => {}
            }
        }
        f
    }

    fn live(options: &str) -> Self {
        let has = |o: &str| options.split(',').any(|x| x == o);
        Flags {
            ro: has("ro"),
            nosuid: has("nosuid"),
            nodev: has("nodev"),
            noexec: has("noexec"),
            sync: has("sync"),
            atime: if has("noatime") {
                "noatime"
            } else if has("relatime") {
                "relatime"
            } else {
                "strictatime"
            },
        }
    }

    /// The flags of the families `named`, spelled out so that a remount
    /// sets exactly them (`atime` before `relatime`:
    /// mount(8) keeps a current `noatime` across a remount otherwise).
    fn spelled_only(&self, named: &Families) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut put = |on: bool, s: &'static str| {
            if on {
                out.push(s);
            }
        };
        put(named.ro, if self.ro { "ro" } else { "rw" });
        put(named.nosuid, if self.nosuid { "nosuid" } else { "suid" });
        put(named.nodev, if self.nodev { "nodev" } else { "dev" });
        put(named.noexec, if self.noexec { "noexec" } else { "exec" });
        put(named.sync, if self.sync { "sync" } else { "async" });
        put(named.atime && self.atime == "relatime", "atime");
        put(named.atime, self.atime);
        out
    }

    /// Whether the families `named` are the same in both.
    fn same_as(&self, other: &Flags, named: &Families) -> bool {
        (!named.ro || self.ro == other.ro)
            && (!named.nosuid || self.nosuid == other.nosuid)
            && (!named.nodev || self.nodev == other.nodev)
            && (!named.noexec || self.noexec == other.noexec)
            && (!named.sync || self.sync == other.sync)
            && (!named.atime || self.atime == other.atime)
    }
}

/// Which flag families a list of options sets. A bind mount takes the flags
/// it does not set from the mount of its source, so only the named ones are
/// compared and remounted.
#[derive(Debug)]
struct Families {
    ro: bool,
    nosuid: bool,
    nodev: bool,
    noexec: bool,
    sync: bool,
    atime: bool,
}

impl Families {
    fn all() -> Self {
        Families {
            ro: true,
            nosuid: true,
            nodev: true,
            noexec: true,
            sync: true,
            atime: true,
        }
    }

    fn named(opts: &[String]) -> Self {
        let any = |names: &[&str]| opts.iter().any(|o| names.contains(&o.as_str()));
        let user = ["user", "users", "owner", "group"];
        Families {
            ro: any(&["ro", "rw"]),
            nosuid: any(&["nosuid", "suid"]) || any(&user),
            nodev: any(&["nodev", "dev"]) || any(&user),
            noexec: any(&["noexec", "exec"]) || any(&user),
            sync: any(&["sync", "async"]),
            atime: any(&["noatime", "relatime", "strictatime"]),
        }
    }

    /// The families that matter for a mount with `opts`.
    fn of(opts: &[String]) -> Self {
        if is_bind(opts) {
            Self::named(opts)
        } else {
            Self::all()
        }
    }
}

/// Options for `mount -o remount,…`: every flag spelled out, then the
/// filesystem's own options from `opts`.
fn remount_options(opts: &[String]) -> String {
    let flags = [
        "ro",
        "rw",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "sync",
        "async",
        "noatime",
        "relatime",
        "strictatime",
    ];
    let mut out: Vec<String> = vec!["remount".into()];
    out.extend(
        Flags::wanted(opts)
            .spelled_only(&Families::of(opts))
            .into_iter()
            .map(str::to_string),
    );
    out.extend(
        opts.iter()
            .filter(|o| !userspace_option(o) && !flags.contains(&o.as_str()))
            .cloned(),
    );
    out.join(",")
}

/// Whether the mount `live` (findmnt's JSON object for the path) shows the
/// directory `src_real`: the same filesystem (MAJ:MIN) as the one holding it
/// (`bindsrc`: findmnt's JSON for `-T src_real`), at the directory's path
/// inside that filesystem (FSROOT).
fn bind_is_ours(live: &serde_json::Value, bindsrc: &str, src_real: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(bindsrc) else {
        return false;
    };
    let Some(holder) = v["filesystems"].as_array().and_then(|a| a.first()) else {
        return false;
    };
    let get = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let (target, root) = (get(holder, "target"), get(holder, "fsroot"));
    let rel = if src_real == target {
        ""
    } else if target == "/" {
        src_real
    } else {
        match src_real.strip_prefix(target.as_str()) {
            Some(r) if r.starts_with('/') => r,
            _ => return false,
        }
    };
    let mut want = format!("{}{rel}", root.trim_end_matches('/'));
    if want.is_empty() {
        want.push('/');
    }
    !src_real.is_empty() && get(live, "maj:min") == get(holder, "maj:min") && get(live, "fsroot") == want
}

/// What to do to a mount point, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountPlan {
    /// The live mount.
    pub live: LiveAction,
    /// The fstab entry.
    pub fstab: FstabEdit,
}

/// What to do to the live mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveAction {
    /// Nothing.
    Keep,
    /// Mount it.
    Mount,
    /// Copy what is at the mount point onto the source, then mount it.
    Migrate,
    /// Mount it again with the wanted options.
    Remount,
    /// Unmount it.
    Unmount,
}

/// What to do to the fstab entry of the mount point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FstabEdit {
    /// Nothing.
    Keep,
    /// Add the entry.
    Add,
    /// Replace the existing entry with the wanted one.
    Replace,
    /// Remove every entry of the mount point.
    Remove,
}

/// The migration, as reported.
fn migrate_change(p: &Params, s: &State) -> Change {
    let size = s
        .data_bytes
        .map_or_else(|| "the data".into(), |b| format!("{} ({b} bytes)", human(b)));
    let from = match s.foreign() {
        Some(f) => format!("{size} in `{}` (mounted from {})", p.path, f.source),
        None => format!("{size} in `{}` ({})", p.path, count(s.path_entries, "entry", "entries")),
    };
    let kept = match (s.foreign(), p.migrate.as_ref().is_some_and(|m| m.keep_old)) {
        (Some(f), _) => format!("old data stays on {}, unmounted", f.source),
        (None, true) => format!("old data kept as {}", migrate::old_name_hint(&p.path)),
        (None, false) => "old data deleted after the verified switch".into(),
    };
    let stop = p
        .migrate
        .as_ref()
        .map(|m| {
            let then = m
                .stop_command
                .as_deref()
                .map(|c| format!("; then `{c}` runs"))
                .unwrap_or_default();
            format!("{}{then}", stopped_in_words(&m.stop, &s.units))
        })
        .unwrap_or_default();
    Change::new(
        "migrate",
        Some(from),
        Some(format!("copied onto {}, verified by checksums; {kept}{stop}", p.src())),
    )
    .risk(Risk::Disruptive)
    .measured()
}

/// The mount, as reported (with what `check` refuses once the
/// requirements are applied, said in the preview too).
fn mounted_change(p: &Params, s: &State) -> Change {
    let from = s.foreign().map(|f| format!("{} ({})", f.source, f.fstype));
    let risk = if s.foreign().is_some() {
        Risk::Disruptive
    } else {
        Risk::Safe
    };
    let refused = match (s.foreign(), s.holds_data(), &p.migrate) {
        (_, _, Some(_)) | (None, false, None) => "",
        (Some(_), _, None) => " (refused: another filesystem is mounted there)",
        (None, true, None) => " (refused: the directory holds data; add `migrate:`)",
    };
    Change::new(
        "mounted",
        from,
        Some(format!("{} on {} ({}){refused}", p.src(), p.path, p.opts_text())),
    )
    .risk(risk)
}

/// fstab rewritten with the wanted entry (or without any, for `absent`).
fn fstab_write(p: &Params, s: &State) -> Step {
    let new = if p.state == MountState::Absent {
        rewrite(&s.fstab, &p.path, None)
    } else {
        rewrite(&s.fstab, &p.path, Some(&p.entry().line()))
    };
    // The staged file must hold the new line as util-linux reads it.
    let validate = (p.state != MountState::Absent && !p.path.contains('%')).then(|| {
        Sh::raw_start("findmnt -n -o TARGET --tab-file %s -M")
            .arg(&p.path)
            .raw(" >/dev/null")
            .as_str()
            .to_string()
    });
    Step::Write(FileWrite {
        path: p.fstab.clone(),
        payload: Payload::bytes(new),
        mode: None,
        owner: None,
        group: None,
        validate,
        backup: s.fstab_exists,
    })
}

impl Module for Mount {
    const NAME: &'static str = "mount";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A mount point, in fstab and live. `mounted`: the fstab line is there and the filesystem \
                      is mounted with its options (a change of options remounts it); `present`: the fstab \
                      line only; `unmounted`: the fstab line, and not mounted; `absent`: neither. fstab is \
                      rewritten atomically with a backup and only this mount point's line changes. A \
                      different filesystem mounted at the path is reported, never mounted over, and so is a \
                      directory that holds data — unless `migrate:` is set: then the listed services are \
                      stopped (with the sockets, paths and timers that could start them again), the data is copied onto the new filesystem (owners, modes, hard links, \
                      symlinks, sparse files, ACLs, xattrs), both trees are compared by sha256 and metadata, \
                      the old data is kept aside as `PATH.plumb-old-<run id>` (printed in the report), the \
                      new filesystem is mounted at the path and the services are started again; a failure \
                      before the switch leaves everything as it was. A mount requires the `filesystem` and \
                      `lvm.lv` of its `src`, and files under the path require the mount.",
            params: &[
                ParamDoc { name: "path", ty: "absolute path", default: "required", doc: "The mount point." },
                ParamDoc { name: "src", ty: "device, UUID=…, LABEL=…, directory", default: "required unless absent", doc: "What to mount; with `opts: [bind]`, the directory to show again at `path` (a bind mount: give `fstype: none`; `migrate` does not apply)." },
                ParamDoc { name: "fstype", ty: "string", default: "required unless absent", doc: "The filesystem type (`ext4`, `xfs`, `tmpfs`, …)." },
                ParamDoc { name: "opts", ty: "list of strings", default: "[defaults]", doc: "Mount options." },
                ParamDoc { name: "dump", ty: "integer", default: "0", doc: "fstab's fifth field." },
                ParamDoc { name: "passno", ty: "integer", default: "0", doc: "fstab's sixth field (fsck order)." },
                ParamDoc { name: "state", ty: "mounted | present | unmounted | absent", default: "mounted", doc: "See above." },
                ParamDoc { name: "fstab", ty: "absolute path", default: "/etc/fstab", doc: "The fstab file to manage." },
                ParamDoc { name: "migrate", ty: "{stop: [units], stop_command: command, keep_old: bool}", default: "none", doc: "Move what the mount point holds onto the new filesystem, verified; `stop` lists systemd units to stop meanwhile (only those running are stopped and started again, with the running sockets, paths and timers that could start them again: `docker.socket` for `docker`); `stop_command` runs once they are stopped, for what they leave running (k3s's pods); `keep_old` (default true) keeps the old data aside, false deletes it after the verified switch." },
            ],
            example: "- id: docker-mount\n  mount:\n    path: /var/lib/docker\n    src: /dev/vg_fast/docker\n    fstype: ext4\n    opts: [defaults, noatime]\n    migrate: {stop: [docker]}\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("path", &p.path);
        cx.require_absolute("fstab", &p.fstab);
        if p.path.chars().any(char::is_control) {
            cx.error(
                "path",
                "plumb::plan::invalid_value",
                "a mount point must not contain control characters",
                None,
            );
        }
        p.path = normalize(&p.path).to_string();
        if p.path == "/" && p.state != MountState::Present {
            cx.error(
                "path",
                "plumb::plan::invalid_value",
                "plumb manages `/` only with `state: present`",
                None,
            );
        }
        if p.state != MountState::Absent {
            for (k, v) in [("src", &p.src), ("fstype", &p.fstype)] {
                match v {
                    None => cx.error(
                        "",
                        "plumb::plan::missing_param",
                        format!("missing parameter `{k}`"),
                        Some(format!("`{k}` is needed unless `state: absent`")),
                    ),
                    Some(s) if s.is_empty() || s.chars().any(char::is_whitespace) => cx.error(
                        k,
                        "plumb::plan::invalid_value",
                        format!("`{k}` must be one word, found `{s}`"),
                        None,
                    ),
                    Some(_) => {}
                }
            }
        }
        for (i, o) in p.opts.iter().enumerate() {
            if o.is_empty() || o.contains(',') || o.contains(char::is_whitespace) {
                cx.error(
                    &format!("opts.{i}"),
                    "plumb::plan::invalid_value",
                    format!("invalid mount option `{o}`"),
                    Some("give one option per list item: `opts: [defaults, noatime]`".into()),
                );
            }
        }
        if p.opts.is_empty() {
            p.opts = defaults();
        }
        if p.is_bind() {
            if let Some(src) = &p.src {
                cx.require_absolute("src", src);
            }
            if p.migrate.is_some() {
                cx.error(
                    "migrate",
                    "plumb::plan::conflicting_params",
                    "`migrate` does not apply to a bind mount",
                    Some("move the data into the bind mount's source directory first".into()),
                );
            }
        }
        if let Some(m) = &p.migrate {
            if p.state != MountState::Mounted {
                cx.error(
                    "migrate",
                    "plumb::plan::conflicting_params",
                    "`migrate` needs `state: mounted`",
                    None,
                );
            }
            if m.stop_command.as_deref().is_some_and(|c| c.trim().is_empty()) {
                cx.error(
                    "migrate.stop_command",
                    "plumb::plan::invalid_value",
                    "`stop_command` is empty",
                    Some("give the command, or leave `stop_command` out".into()),
                );
            }
            for (i, s) in m.stop.iter().enumerate() {
                let ok = !s.is_empty()
                    && !s.starts_with('-')
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "@._:-\\".contains(c));
                if !ok {
                    cx.error(
                        &format!("migrate.stop.{i}"),
                        "plumb::plan::invalid_value",
                        format!("`{s}` is not a systemd unit name"),
                        None,
                    );
                }
            }
        }
    }

    fn claims(p: &Params) -> Claims {
        let mut needs = vec![Claim::Path(p.path.clone())];
        if let Some(s) = &p.src {
            if p.is_bind() {
                // The directory it shows again, and what that lies on.
                needs.push(Claim::Key("dir", normalize(s).to_string()));
                needs.push(Claim::Path(s.clone()));
            } else {
                needs.push(Claim::Key("fs", s.clone()));
                needs.push(Claim::Key("blockdev", s.clone()));
            }
        }
        let mut provides = vec![Claim::Path(p.path.clone())];
        // The units a migration stops run on the data it moves: their
        // `service` resources come after it (and a restart it makes counts
        // for their notifications).
        if let Some(m) = &p.migrate {
            provides.extend(m.stop.iter().map(|u| Claim::Key("data of", unit_id(u))));
        }
        Claims {
            provides,
            needs,
            // Not the path: a `directory` resource may make the mount point.
            manages: vec![Claim::Key("mount point", p.path.clone())],
        }
    }

    fn probe(p: &Params) -> Sh {
        let migrate = p.migrate.is_some() && p.state == MountState::Mounted;
        let mut s = Sh::raw_start("path=")
            .val(&p.path)
            .raw("\nsrc=")
            .val(p.src())
            .raw("\nfstab=")
            .val(&p.fstab)
            .raw("\nmigrate=")
            .val(if migrate { "1" } else { "0" })
            .raw("\nbind=")
            .val(if p.is_bind() { "1" } else { "0" })
            .raw("\nunits=")
            .val(p.migrate.as_ref().map(|m| m.stop.join(" ")).unwrap_or_default());
        s.line(&Sh::raw_start(PROBE));
        s.line(&Sh::raw_start("echo --"));
        s.line(&section_marker("findmnt"));
        s.line(&Sh::raw_start("printf '%s\\n' \"$live\""));
        s.line(&section_marker("bindsrc"));
        s.line(&Sh::raw_start("printf '%s\\n' \"$bindsrc\""));
        s.line(&section_marker("units"));
        s.line(&Sh::raw_start(
            "printf '%s\\n\\n%s\\n' \"$units_info\" \"$triggers_info\"",
        ));
        s.line(&section_marker("fstab"));
        s.line(&Sh::raw_start("if [ -f \"$fstab\" ]; then cat -- \"$fstab\"; fi"));
        s
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let sec = sections(out.body().unwrap_or_default(), "fstab");
        let fstab = sec.get("fstab").cloned().unwrap_or_default();
        let findmnt = String::from_utf8_lossy(sec.get("findmnt").map_or(&[][..], |v| v)).into_owned();
        let live = if findmnt.trim().is_empty() {
            None
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&findmnt).map_err(|e| format!("cannot read findmnt's output ({e})"))?;
            v["filesystems"].as_array().and_then(|a| a.last()).map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                let ours = if p.is_bind() {
                    let bindsrc = String::from_utf8_lossy(sec.get("bindsrc").map_or(&[][..], |v| v)).into_owned();
                    bind_is_ours(m, &bindsrc, f.get("src.real").unwrap_or_default())
                } else {
                    f.get("live.ours") == Some("1")
                };
                LiveMount {
                    source: s("source"),
                    fstype: s("fstype"),
                    options: s("options"),
                    ours,
                }
            })
        };
        let nonempty = |k: &str| f.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let path_kind = f.get("path.kind").unwrap_or("none").to_string();
        if path_kind == "other" {
            return Err(Failure::from(format!("`{}` exists and is not a directory", p.path)));
        }
        Ok(State {
            fstab_exists: f.get("fstab.exists") == Some("1"),
            fstab_sha256: sha256_hex(&fstab),
            entries: entries_for(&fstab, &p.path),
            fstab,
            live,
            src_real: nonempty("src.real"),
            path_kind,
            path_entries: f.get("path.entries").and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            data_bytes: f.get("data.bytes").and_then(|v| v.trim().parse().ok()),
            src_bytes: f.get("src.bytes").and_then(|v| v.trim().parse().ok()),
            read: read_rate(f.get("read.dev"), f.get("read.rate")),
            units: unit_states(&String::from_utf8_lossy(sec.get("units").map_or(&[][..], |v| v))),
        })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        if p.state != MountState::Absent && s.entries.len() > 1 {
            let lines: Vec<String> = s.entries.iter().map(|(n, _, _)| n.to_string()).collect();
            return Err(Failure::from(format!(
                "`{}` has {} entries for `{}` (lines {})",
                p.fstab,
                s.entries.len(),
                p.path,
                lines.join(", ")
            ))
            .with_hint("remove all but one by hand first"));
        }
        if p.state != MountState::Mounted || s.mounted_ours() {
            return Ok(());
        }
        if p.src_is_device() && s.src_real.is_none() {
            return Err(Failure::from(format!(
                "`{}` does not exist: nothing to mount at `{}`",
                p.src(),
                p.path
            )));
        }
        if let (Some(other), None) = (s.foreign(), &p.migrate) {
            return Err(Failure::from(format!(
                "`{}` is mounted from `{}` ({}), not from `{}`: plumb does not mount over another filesystem; \
                 unmount it, or add `migrate:` to move its data onto `{}`",
                p.path,
                other.source,
                other.fstype,
                p.src(),
                p.src()
            )));
        }
        if let (Some(_), Some(data), Some(room)) = (&p.migrate, s.data_bytes, s.src_bytes) {
            if data > room {
                return Err(Failure::from(format!(
                    "`{}` holds {} of data, more than all of `{}` ({}): the migration cannot fit; \
                     make the new volume larger (nothing was stopped or copied)",
                    p.path,
                    crate::size::human(data),
                    p.src(),
                    crate::size::human(room)
                )));
            }
        }
        if s.foreign().is_none() && s.holds_data() && p.migrate.is_none() {
            return Err(Failure::from(format!(
                "`{}` holds {} that mounting over it would hide",
                p.path,
                count(s.path_entries, "entry", "entries")
            ))
            .with_hint(format!(
                "add `migrate:` to move them onto `{}`, or empty it first",
                p.src()
            )));
        }
        Ok(())
    }

    type Plan = MountPlan;

    fn plan(p: &Params, s: &State) -> MountPlan {
        let want = p.entry();
        let fstab_old = s.entries.first();
        let live = match p.state {
            MountState::Mounted => match s.live.as_ref().filter(|l| l.ours) {
                Some(l) => {
                    let options_changed = fstab_old.is_some_and(|(_, e, _)| !e.same_as(&want) && e.opts != want.opts);
                    if !Flags::live(&l.options).same_as(&Flags::wanted(&p.opts), &Families::of(&p.opts))
                        || options_changed
                    {
                        LiveAction::Remount
                    } else {
                        LiveAction::Keep
                    }
                }
                None if p.migrate.is_some() && (s.foreign().is_some() || s.holds_data()) => LiveAction::Migrate,
                None => LiveAction::Mount,
            },
            MountState::Unmounted | MountState::Absent => {
                if s.live.as_ref().is_some_and(|l| l.ours || p.src.is_none()) {
                    LiveAction::Unmount
                } else {
                    LiveAction::Keep
                }
            }
            MountState::Present => LiveAction::Keep,
        };
        let fstab = if p.state == MountState::Absent {
            if s.entries.is_empty() {
                FstabEdit::Keep
            } else {
                FstabEdit::Remove
            }
        } else {
            match fstab_old {
                Some((_, e, _)) if e.same_as(&want) => FstabEdit::Keep,
                Some(_) => FstabEdit::Replace,
                None => FstabEdit::Add,
            }
        };
        MountPlan { live, fstab }
    }

    fn changes(p: &Params, s: &State, plan: &MountPlan) -> Changes {
        let mut c = Changes::none();
        match plan.live {
            LiveAction::Keep => {}
            LiveAction::Remount => {
                let live = s.live.as_ref().map(|l| l.options.clone());
                c.push(
                    Change::new("options", live, Some(format!("{} (remount)", p.opts_text()))).risk(Risk::Disruptive),
                );
            }
            LiveAction::Migrate => {
                c.push(migrate_change(p, s));
                c.push(mounted_change(p, s));
            }
            LiveAction::Mount => c.push(mounted_change(p, s)),
            LiveAction::Unmount => {
                let from = s.live.as_ref().map(|l| format!("{} on {}", l.source, p.path));
                c.push(Change::new("mounted", from, None).risk(Risk::Disruptive));
            }
        }
        let want = p.entry();
        match plan.fstab {
            FstabEdit::Keep => {}
            FstabEdit::Remove => {
                for (n, _, line) in &s.entries {
                    c.push(Change::new(format!("fstab line {n}"), Some(line.clone()), None));
                }
            }
            FstabEdit::Replace => {
                if let Some((n, _, line)) = s.entries.first() {
                    c.push(Change::new(
                        format!("fstab line {n}"),
                        Some(line.clone()),
                        Some(want.line()),
                    ));
                }
            }
            FstabEdit::Add => c.push(Change::new("fstab", None, Some(want.line()))),
        }
        c
    }

    fn apply(p: &Params, s: &State, plan: &MountPlan) -> Vec<Step> {
        let mut steps = Vec::new();
        let src = p.src();
        let fstype = p.fstype.as_deref().unwrap_or("auto");
        match plan.live {
            LiveAction::Keep => {}
            LiveAction::Migrate => {
                if let Some(m) = &p.migrate {
                    steps.push(Step::run(
                        format!("migrate {} onto {src}", p.path),
                        migrate::script(&Migration {
                            path: &p.path,
                            src,
                            fstype,
                            opts: &p.opts_text(),
                            stop: &m.stop,
                            stop_command: m.stop_command.as_deref(),
                            keep_old: m.keep_old,
                        }),
                    ));
                }
            }
            LiveAction::Mount => {
                let mut sh = Sh::raw_start("set -e\n");
                if s.path_kind == "none" {
                    sh.line(&Sh::raw_start("mkdir -p --").arg(&p.path));
                }
                sh.line(
                    &Sh::raw_start("mount -t")
                        .arg(fstype)
                        .raw(" -o")
                        .arg(p.opts_text())
                        .arg(src)
                        .arg(&p.path),
                );
                steps.push(Step::run(format!("mount {src} on {}", p.path), sh));
            }
            LiveAction::Unmount => {
                // An `rbind` carries the mounts under its source: all go.
                let umount = if p.opts.iter().any(|o| o == "rbind") {
                    Sh::raw_start("umount -R --")
                } else {
                    Sh::raw_start("umount --")
                };
                steps.push(Step::run(format!("umount {}", p.path), umount.arg(&p.path)));
            }
            LiveAction::Remount => steps.push(Step::run(
                format!("remount {}", p.path),
                Sh::raw_start("mount -o").arg(remount_options(&p.opts)).arg(&p.path),
            )),
        }
        if plan.fstab != FstabEdit::Keep {
            steps.push(fstab_write(p, s));
        }
        steps
    }

    fn reprobe_after_requirements() -> bool {
        true
    }

    /// A migration keeps the units it stops down for the copy and the check.
    fn downtime(p: &Params, s: &State, plan: &MountPlan) -> Vec<Downtime> {
        let (Some(m), LiveAction::Migrate) = (&p.migrate, plan.live) else {
            return Vec::new();
        };
        let (expected_secs, expected) = expected_downtime(s);
        units_stopped(&m.stop, &s.units)
            .into_iter()
            .map(|stopped| Downtime {
                unit: stopped.id,
                kind: DowntimeKind::Stop,
                expected_secs,
                expected: expected.clone(),
                actual_secs: None,
            })
            .collect()
    }

    /// A migration stops the listed units that run and starts them again
    /// once the data is in place.
    fn starts_units(p: &Params, s: &State, plan: &MountPlan) -> Vec<String> {
        match (&p.migrate, plan.live) {
            (Some(m), LiveAction::Migrate) => m
                .stop
                .iter()
                .map(|name| unit_id(name))
                .filter(|id| s.units.iter().any(|u| &u.id == id && u.runs()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The probe's shell: `$path`, `$src`, `$fstab`, `$migrate` and `$bind`
/// are set before it. It runs few programs (each one is the main cost on a slow
/// host): findmnt once, and the rest with shell builtins where it can.
const PROBE: &str = r#"if [ -f "$fstab" ]; then echo fstab.exists=1; else echo fstab.exists=0; fi
if [ -d "$path" ] && [ ! -L "$path" ]; then path=$(cd -P -- "$path" && pwd -P); fi
case "$src" in
  UUID=*|LABEL=*|PARTUUID=*|PARTLABEL=*) dev=$(blkid -l -o device -t "$src" 2>/dev/null) ;;
  /*) dev=$src ;;
  *) dev= ;;
esac
src_mm=; src_real=
if [ -n "$dev" ] && [ -e "$dev" ]; then
  src_real=$dev
  if [ -b "$dev" ]; then mm=$(stat -L -c '%t %T' -- "$dev"); src_mm=$((0x${mm% *})):$((0x${mm#* })); fi
fi
# A bind mount's source is a directory: the filesystem holding it and where
# inside (compared with what is mounted at the path by the parser, which
# reads findmnt's JSON properly).
bindsrc=
if [ "$bind" = 1 ] && [ -d "$src" ]; then
  src_real=$(cd -P -- "$src" && pwd -P)
  bindsrc=$(findmnt --json -o TARGET,FSROOT,MAJ:MIN -T "$src_real" 2>/dev/null)
fi
echo "src.real=$src_real"
if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then echo path.kind=other
elif [ -d "$path" ]; then
  n=0
  for e in "$path"/* "$path"/.[!.]* "$path"/..?*; do
    if { [ -e "$e" ] || [ -L "$e" ]; } && [ "$e" != "$path/lost+found" ]; then n=$((n + 1)); fi
  done
  echo path.kind=dir; echo "path.entries=$n"
else echo path.kind=none; fi
live=$(findmnt --json -o TARGET,SOURCE,FSTYPE,OPTIONS,MAJ:MIN,FSROOT -M "$path" 2>/dev/null)
vis_src=; vis_mm=
if [ -n "$live" ]; then
  vis_src=${live##*\"source\": \"}; vis_src=${vis_src%%\"*}
  vis_mm=${live##*\"maj:min\": \"}; vis_mm=${vis_mm%%\"*}
fi
ours=0
if [ "$bind" = 1 ]; then :
elif [ -n "$vis_src" ]; then
  if [ "$vis_src" = "$src" ] || { [ -n "$src_mm" ] && [ "$vis_mm" = "$src_mm" ]; }; then ours=1
  elif [ -n "$src_real" ] && [ "$(readlink -e -- "${vis_src%%\[*}" 2>/dev/null)" = "$(readlink -e -- "$src_real")" ]; then ours=1; fi
fi
echo "live.ours=$ours"
if [ "$migrate" = 1 ] && [ "$ours" = 0 ] && [ -d "$path" ]; then
  echo "data.bytes=$(du -sxB1 -- "$path" | cut -f 1)"
  if [ -b "$src_real" ]; then echo "src.bytes=$(blockdev --getsize64 -- "$src_real" 2>/dev/null)"; fi
  # How fast the data's disk reads now (up to 128 MiB, past the page
  # cache), to reckon the downtime: `read.rate=BYTES SECONDS`.
  holder=$(findmnt -n -o SOURCE -T "$path" 2>/dev/null); holder=${holder%%\[*}
  if [ -b "$holder" ]; then
    echo "read.dev=$holder"
    dd if="$holder" of=/dev/null bs=1M count=128 iflag=direct 2>&1 |
      awk '/copied/ { for (i = 2; i <= NF; i++) if ($i == "s," || $i == "s") { print "read.rate=" $1 " " $(i - 1); exit } }'
  fi
fi
# The units a migration would stop: those listed, and what triggers them
# (docker.socket for docker), so the review shows the whole downtime.
units_info=; triggers_info=
if [ "$migrate" = 1 ] && [ "$ours" = 0 ] && [ -n "$units" ] && command -v systemctl >/dev/null 2>&1; then
  units_info=$(systemctl show -p Id,ActiveState,TriggeredBy -- $units 2>/dev/null)
  trig=; rest=$units_info; nl='
'
  while :; do
    case $rest in *TriggeredBy=*) ;; *) break ;; esac
    rest=${rest#*TriggeredBy=}; trig="$trig ${rest%%"$nl"*}"
  done
  if [ -n "$trig" ]; then triggers_info=$(systemctl show -p Id,ActiveState -- $trig 2>/dev/null); fi
fi"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// What the plan changes, as reported.
    fn changes(p: &Params, s: &State) -> Changes {
        Mount::changes(p, s, &Mount::plan(p, s))
    }

    /// The decision is data: a mount point that holds data with `migrate:`
    /// plans a migration and an fstab entry, and apply builds its steps from
    /// that plan alone (the report's wording plays no part).
    #[test]
    fn a_mount_plan_is_data_that_apply_carries_out() {
        let (p, s) = (params(true), state(None, 3));
        let plan = Mount::plan(&p, &s);
        assert_eq!(
            plan,
            MountPlan {
                live: LiveAction::Migrate,
                fstab: FstabEdit::Add
            }
        );
        let labels: Vec<String> = Mount::apply(&p, &s, &plan).iter().map(Step::label).collect();
        assert_eq!(labels.len(), 2, "{labels:?}");
        assert!(labels[0].starts_with("migrate "), "{labels:?}");
        assert!(labels[1].starts_with("write "), "{labels:?}");
        let keep = MountPlan {
            live: LiveAction::Keep,
            fstab: FstabEdit::Keep,
        };
        assert!(Mount::apply(&p, &s, &keep).is_empty());
        assert!(Mount::changes(&p, &s, &keep).is_empty());
    }

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn flags_follow_mount_8_order_and_implications() {
        let w = Flags::wanted(&opts(&["defaults", "noatime", "nosuid"]));
        assert_eq!(w, Flags::live("rw,nosuid,noatime"));
        assert_ne!(w, Flags::live("rw,nosuid,relatime"));
        // `user` implies noexec,nosuid,nodev; a later `exec` takes one back.
        let w = Flags::wanted(&opts(&["user", "exec"]));
        assert!(w.nosuid && w.nodev && !w.noexec);
        // The kernel's default atime is relatime.
        assert_eq!(Flags::wanted(&opts(&["defaults"])), Flags::live("rw,relatime"));
        assert_ne!(Flags::wanted(&opts(&["defaults"])), Flags::live("ro,relatime"));
    }

    #[test]
    fn a_bind_mount_is_ours_when_it_shows_the_source_directory() {
        let live = |mm: &str, root: &str| serde_json::json!({"maj:min": mm, "fsroot": root});
        let holder = |target: &str, root: &str, mm: &str| {
            serde_json::json!({"filesystems": [{"target": target, "fsroot": root, "maj:min": mm}]}).to_string()
        };
        // On the root filesystem, on another mount, the mount point itself.
        assert!(bind_is_ours(&live("8:1", "/srv/a"), &holder("/", "/", "8:1"), "/srv/a"));
        assert!(bind_is_ours(
            &live("7:0", "/docker"),
            &holder("/data", "/", "7:0"),
            "/data/docker"
        ));
        assert!(bind_is_ours(&live("7:0", "/"), &holder("/data", "/", "7:0"), "/data"));
        // A nested bind, a btrfs subvolume, and the subvolume root itself.
        assert!(bind_is_ours(
            &live("7:0", "/real/x"),
            &holder("/b", "/real", "7:0"),
            "/b/x"
        ));
        assert!(bind_is_ours(&live("0:40", "/@"), &holder("/", "/@", "0:40"), "/"));
        assert!(bind_is_ours(
            &live("0:40", "/@/srv"),
            &holder("/", "/@", "0:40"),
            "/srv"
        ));
        // Quotes and backslashes, as findmnt escapes them in JSON.
        assert!(bind_is_ours(
            &live("7:0", "/q\"d\\b"),
            &holder("/m\"x", "/", "7:0"),
            "/m\"x/q\"d\\b"
        ));
        // Another directory, another filesystem, a prefix that is no parent.
        assert!(!bind_is_ours(
            &live("7:0", "/other"),
            &holder("/data", "/", "7:0"),
            "/data/docker"
        ));
        assert!(!bind_is_ours(
            &live("7:1", "/docker"),
            &holder("/data", "/", "7:0"),
            "/data/docker"
        ));
        assert!(!bind_is_ours(
            &live("7:0", "/x"),
            &holder("/data", "/", "7:0"),
            "/datax"
        ));
        assert!(!bind_is_ours(&live("7:0", "/"), "", "/data"));
    }

    #[test]
    fn a_bind_mount_compares_and_remounts_only_the_flags_it_names() {
        // Its source is mounted nosuid,nodev,noatime: a plain bind inherits that.
        let bind = opts(&["bind"]);
        let inherited = Flags::live("rw,nosuid,nodev,noatime");
        assert!(inherited.same_as(&Flags::wanted(&bind), &Families::named(&bind)));
        let ro = opts(&["bind", "ro"]);
        assert!(!inherited.same_as(&Flags::wanted(&ro), &Families::named(&ro)));
        assert_eq!(remount_options(&ro), "remount,ro,bind");
        // Back to relatime from noatime needs `atime` first.
        assert_eq!(
            remount_options(&opts(&["bind", "relatime"])),
            "remount,atime,relatime,bind"
        );
        assert!(remount_options(&opts(&["defaults"])).ends_with(",async,atime,relatime"));
    }

    #[test]
    fn a_remount_spells_every_flag_and_keeps_filesystem_options() {
        assert_eq!(
            remount_options(&opts(&[
                "defaults",
                "noatime",
                "nofail",
                "x-systemd.automount",
                "discard",
                "commit=30"
            ])),
            "remount,rw,suid,dev,exec,async,noatime,discard,commit=30"
        );
    }

    fn state(live: Option<(&str, bool)>, entries: u64) -> State {
        State {
            fstab_exists: true,
            fstab_sha256: String::new(),
            fstab: Vec::new(),
            entries: Vec::new(),
            live: live.map(|(src, ours)| LiveMount {
                source: src.into(),
                fstype: "ext4".into(),
                options: "rw,relatime".into(),
                ours,
            }),
            src_real: Some("/dev/vdb1".into()),
            path_kind: "dir".into(),
            path_entries: entries,
            data_bytes: Some(4096),
            src_bytes: None,
            read: None,
            units: Vec::new(),
        }
    }

    fn params(migrate: bool) -> Params {
        Params {
            path: "/srv".into(),
            src: Some("/dev/vdb1".into()),
            fstype: Some("ext4".into()),
            opts: defaults(),
            dump: 0,
            passno: 0,
            state: MountState::Mounted,
            fstab: etc_fstab(),
            migrate: migrate.then(|| Migrate {
                stop: vec![],
                keep_old: true,
                stop_command: None,
            }),
        }
    }

    #[test]
    fn live_and_fstab_changes_are_reported_apart() {
        let c = changes(&params(false), &state(None, 0));
        let fields: Vec<&str> = c.items.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["mounted", "fstab"]);
        assert_eq!(c.risk(), Some(Risk::Safe));
    }

    #[test]
    fn data_at_the_mount_point_needs_migrate_and_a_migration_is_disruptive() {
        let e = Mount::check(&params(false), &state(None, 3)).unwrap_err().to_string();
        assert!(e.contains("holds 3 entries"), "{e}");
        let c = changes(&params(true), &state(None, 3));
        assert_eq!(c.items[0].field, "migrate");
        assert_eq!(c.risk(), Some(Risk::Disruptive));
        let e = Mount::check(&params(false), &state(Some(("/dev/sdz1", false)), 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounted from `/dev/sdz1`"), "{e}");
        assert!(Mount::check(&params(false), &state(Some(("/dev/vdb1", true)), 5)).is_ok());
    }

    #[test]
    fn a_migration_larger_than_the_new_device_is_refused_before_anything_stops() {
        let mut s = state(None, 3);
        s.data_bytes = Some(64 << 20);
        s.src_bytes = Some(32 << 20);
        let e = Mount::check(&params(true), &s).unwrap_err().to_string();
        assert!(
            e.contains("holds 64 MiB of data, more than all of `/dev/vdb1` (32 MiB)"),
            "{e}"
        );
        s.src_bytes = Some(1 << 30);
        assert!(Mount::check(&params(true), &s).is_ok());
    }

    #[test]
    fn the_review_names_every_unit_a_migration_stops_and_the_sockets_that_would_start_them() {
        let shown = "Id=docker.service\nActiveState=active\nTriggeredBy=docker.socket\n\n\
                     Id=containerd.service\nActiveState=active\nTriggeredBy=\n\n\
                     Id=k3s.service\nActiveState=inactive\nTriggeredBy=k3s.path\n\n\
                     Id=docker.socket\nActiveState=active\n\nId=k3s.path\nActiveState=active\n";
        let units = unit_states(shown);
        assert_eq!(units.len(), 5);
        let stop = opts(&["docker", "containerd", "k3s"]);
        assert_eq!(
            stopped_in_words(&stop, &units),
            "; units stopped meanwhile: docker.service, docker.socket (it can start docker.service), \
             containerd.service, k3s.path (it can start k3s.service); not running, left alone: k3s.service"
        );
        // Where systemd could not be asked, the list as the plan gives it.
        assert_eq!(
            stopped_in_words(&stop, &[]),
            "; services stopped meanwhile (those running): docker, containerd, k3s"
        );
        assert_eq!(stopped_in_words(&[], &units), "");
        // A socket the plan lists itself is named once.
        assert_eq!(
            stopped_in_words(&opts(&["docker.socket", "docker"]), &units),
            "; units stopped meanwhile: docker.socket, docker.service"
        );
    }
}
