//! Rollback: a run's record turned into a plan that undoes it, so that the
//! undoing goes through the same review as any change (a diff, a saved
//! plan applied exactly, refused when the world moved).
//!
//! From a record ([`crate::journal`]) and what is on the hosts now, each
//! path the run touched becomes one resource of the `rollback` module:
//! restore it from the run's backup (verified against the hash the record
//! holds), remove what the run created when it still holds what the run
//! wrote, or set its mode and owner back. Services that a restored file
//! notified are restarted once (`rollback.restart`, notified by those
//! resources). What cannot be undone is listed with the reason
//! ([`CannotUndo`]). The rollback backs up what it replaces or removes
//! under its own run id, so that a rollback can itself be rolled back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compile::{EdgeKind, HostPlan, HostResource};
use crate::inventory::Host;
use crate::journal::{parse_stats, stat_script, Keyed, PathRecord, PathState, RunRecord, Stat};
use crate::module::{resource_of, Change, Changes, Claim, Claims, Failure, Module, ModuleDoc, ProbeOutput, Risk, Step};
use crate::paths::PathQuery;
use crate::plan::Become;
use crate::report::{Downtime, DowntimeKind, Status};
use crate::shell::Sh;
use crate::write::backup_lines;

/// Something a run did that its rollback does not undo, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CannotUndo {
    /// Host name.
    pub host: String,
    /// The resource of the run.
    pub resource: String,
    /// Its module.
    pub module: String,
    /// What stays as the run left it.
    pub what: String,
    /// Why it is not undone (and what can be done by hand).
    pub why: String,
}

/// What the `rollback` module does to a path.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Put the run's backup back.
    Restore {
        /// The backup on the host.
        backup: String,
        /// Its hash as the run's record holds it.
        sha256: Option<String>,
    },
    /// Remove what the run created.
    Remove {
        /// What the run left: `file`, `directory`, `symlink`.
        kind: String,
    },
    /// Set metadata back.
    Meta {
        /// `mode`, `owner`, `group` before the run.
        before: BTreeMap<String, String>,
    },
}

/// Parameters of one `rollback` resource.
#[derive(Clone, Debug, Deserialize)]
pub struct UndoParams {
    /// The path.
    pub path: String,
    /// What to do.
    pub action: Action,
    /// The run undone.
    pub run: String,
    /// Its hashes are keyed.
    pub sensitive: bool,
    /// The workstation's key, for keyed hashes.
    #[serde(skip)]
    pub key: Option<Keyed>,
}

impl UndoParams {
    fn seal(&self, st: Option<PathState>) -> Option<PathState> {
        st.map(|mut s| {
            if let (Some(k), Some(h)) = (&self.key, &s.sha256) {
                s.sha256 = Some(k.seal(h, self.sensitive));
            }
            s
        })
    }

    fn backup(&self) -> Option<&str> {
        match &self.action {
            Action::Restore { backup, .. } => Some(backup),
            _ => None,
        }
    }
}

/// What is at the path, and at its backup (hashes keyed when sensitive).
#[derive(Clone, Debug, Serialize)]
pub struct UndoState {
    now: Option<PathState>,
    backup: Option<PathState>,
}

/// The `rollback` module (made by `plumb rollback`, never written in a plan).
#[derive(Debug)]
pub struct Undo;

fn short(h: &str) -> String {
    match h.strip_prefix("hmac:") {
        Some(rest) => format!("hmac:{}", &rest[..rest.len().min(12)]),
        None => format!("sha256:{}", &h[..h.len().min(12)]),
    }
}

fn octal(m: &str) -> Option<u32> {
    u32::from_str_radix(m, 8).ok()
}

fn meta_changes(c: &mut Changes, now: &PathState, want: &BTreeMap<String, String>) {
    for (field, have) in [("mode", &now.mode), ("owner", &now.owner), ("group", &now.group)] {
        let Some(w) = want.get(field) else { continue };
        if now.differs(field, w) {
            // A mode as the host's `stat` writes it, as `have` is (the
            // record may hold `0644`): `mode: 600 → 644`.
            let w = match octal(w) {
                Some(m) if field == "mode" => format!("{m:o}"),
                _ => w.clone(),
            };
            c.push(Change::new(field, Some(have.clone()), Some(w)));
        }
    }
}

impl Module for Undo {
    const NAME: &'static str = "rollback";
    type Params = UndoParams;
    type State = UndoState;

    fn doc() -> ModuleDoc {
        ModuleDoc::internal("Undoes what a run did to one path (made by `plumb rollback`).")
    }

    fn claims(p: &UndoParams) -> Claims {
        Claims::managing(Claim::Path(p.path.clone()))
    }

    /// The path it manages, observed by the engine too: the rollback's own
    /// record takes from it what was there before (so that a rollback can
    /// be rolled back).
    fn inspect(p: &UndoParams) -> Vec<PathQuery> {
        vec![PathQuery::stat(p.path.clone())]
    }

    fn probe(p: &UndoParams) -> Sh {
        let mut items = vec![(p.path.clone(), None)];
        if let Some(b) = p.backup() {
            items.push((b.to_string(), None));
        }
        stat_script(&items)
    }

    fn parse(p: &UndoParams, out: &ProbeOutput) -> Result<UndoState, Failure> {
        let n = if p.backup().is_some() { 2 } else { 1 };
        let mut stats = parse_stats(&out.stdout, n).into_iter();
        let now = stats
            .next()
            .flatten()
            .ok_or_else(|| format!("cannot read `{}` on the host", p.path))?;
        let backup = match p.backup() {
            Some(b) => {
                stats
                    .next()
                    .flatten()
                    .ok_or_else(|| format!("cannot read `{b}` on the host"))?
                    .state
            }
            None => None,
        };
        Ok(UndoState {
            now: p.seal(now.state),
            backup: p.seal(backup),
        })
    }

    fn check(p: &UndoParams, s: &UndoState) -> Result<(), Failure> {
        if let Action::Restore { backup, sha256 } = &p.action {
            let Some(b) = &s.backup else {
                return Err(Failure::from(format!(
                    "the backup `{backup}` of `{}` is missing: cannot restore it",
                    p.path
                )));
            };
            if b.kind == "directory" {
                // A folder the rollback removed (empty): its metadata is
                // all there is to restore.
                return if s.now.as_ref().is_some_and(|n| n.kind != "directory") {
                    Err(Failure::from(format!(
                        "`{}` is a {} now: not replaced by a folder",
                        p.path,
                        s.now.as_ref().map_or("", |n| n.kind.as_str())
                    )))
                } else {
                    Ok(())
                };
            }
            let Some(want) = sha256 else {
                return Err(Failure::from(format!(
                    "the record of run {} holds no hash of the backup `{backup}`: it cannot be verified, so it is not used",
                    p.run
                )));
            };
            if b.kind != "file" || b.sha256.as_ref() != Some(want) {
                return Err(Failure::from(format!(
                    "the backup `{backup}` of `{}` was altered since run {} (its sha256 differs from the run's record): refusing to restore from it",
                    p.path, p.run
                )));
            }
            if s.now.as_ref().is_some_and(|n| n.kind == "directory") {
                return Err(Failure::from(format!(
                    "`{}` is a directory now: not replaced by the backup",
                    p.path
                )));
            }
        }
        Ok(())
    }

    type Plan = Changes;

    fn changes(_p: &UndoParams, _s: &UndoState, plan: &Changes) -> Changes {
        plan.clone()
    }

    fn plan(p: &UndoParams, s: &UndoState) -> Changes {
        let mut c = Changes::none();
        match &p.action {
            Action::Restore { backup, .. } => {
                let Some(want) = &s.backup else { return c };
                match &s.now {
                    None => c.push(Change::new("state", Some("absent".into()), Some(want.kind.clone()))),
                    Some(n) if n.kind != want.kind => {
                        c.push(Change::new("state", Some(n.kind.clone()), Some(want.kind.clone())));
                    }
                    Some(_) => {}
                }
                let have = s.now.as_ref().and_then(|n| n.sha256.clone());
                if want.kind == "file" && have != want.sha256 {
                    c.push(Change::new(
                        "content",
                        have.as_deref().map(short),
                        Some(format!(
                            "{} (the backup `{backup}` of run {})",
                            want.sha256.as_deref().map(short).unwrap_or_default(),
                            p.run
                        )),
                    ));
                }
                if let Some(n) = &s.now {
                    let meta = [("mode", &want.mode), ("owner", &want.owner), ("group", &want.group)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    meta_changes(&mut c, n, &meta);
                }
            }
            Action::Remove { .. } => {
                if let Some(n) = &s.now {
                    c.push(Change::new("state", Some(n.kind.clone()), Some("absent".into())));
                }
            }
            Action::Meta { before } => {
                if let Some(n) = &s.now {
                    meta_changes(&mut c, n, before);
                }
            }
        }
        c
    }

    fn apply(p: &UndoParams, s: &UndoState, _changes: &Changes) -> Vec<Step> {
        let start = Sh::raw_start("set -e\numask 077\ntarget=").val(&p.path);
        let sh = match &p.action {
            Action::Restore { backup, .. } if s.backup.as_ref().is_some_and(|b| b.kind == "directory") => {
                let mut sh = start.raw("; b=").val(backup);
                sh.line(&Sh::raw_start(
                    "if [ ! -e \"$target\" ]; then mkdir -- \"$target\"; fi\nchmod \"$(stat -c %a -- \"$b\")\" -- \"$target\"\nchown \"$(stat -c %u:%g -- \"$b\")\" -- \"$target\"",
                ));
                sh
            }
            Action::Restore { backup, .. } => {
                let mut sh = start.raw("; b=").val(backup);
                sh.line(&Sh::raw_start(
                    "dir=$(dirname -- \"$target\")\nif [ ! -d \"$dir\" ]; then echo \"plumb: the folder $dir does not exist\" >&2; exit 1; fi",
                ));
                sh.line(&backup_lines());
                sh.line(&Sh::raw_start(
                    "tmp=$(mktemp \"$dir/.plumb-${plumb_run:-run}.XXXXXXXX\")\ntrap 'rm -f -- \"$tmp\"' EXIT\ncp -p -- \"$b\" \"$tmp\"\nsync -- \"$tmp\" 2>/dev/null || sync\nrm -f -- \"$target\" 2>/dev/null || true\nmv -f -- \"$tmp\" \"$target\"\ntrap - EXIT",
                ));
                sh
            }
            Action::Remove { .. } if s.now.as_ref().is_some_and(|n| n.kind == "directory") => {
                // The folder is kept (empty, with its metadata) for a
                // rollback of this rollback.
                let mut sh = start;
                sh.line(&Sh::raw_start("if [ -n \"$(ls -A -- \"$target\")\" ]; then echo \"plumb: $target is not empty: it holds files the run did not write\" >&2; exit 1; fi"));
                sh.line(&backup_lines());
                sh.line(&Sh::raw_start("rmdir -- \"$target\""));
                sh
            }
            Action::Remove { .. } => {
                let mut sh = start;
                sh.line(&backup_lines());
                sh.line(&Sh::raw_start("rm -f -- \"$target\""));
                sh
            }
            Action::Meta { before } => {
                let mut sh = start;
                if let Some(m) = before.get("mode") {
                    sh.line(&Sh::raw_start("chmod").arg(m).raw(" -- \"$target\""));
                }
                if let Some(o) = before.get("owner") {
                    sh.line(&Sh::raw_start("chown").arg(o).raw(" -- \"$target\""));
                }
                if let Some(g) = before.get("group") {
                    sh.line(&Sh::raw_start("chgrp").arg(g).raw(" -- \"$target\""));
                }
                sh
            }
        };
        let label = match &p.action {
            Action::Restore { .. } => format!("restore {} from the backup", p.path),
            Action::Remove { .. } => format!("remove {}", p.path),
            Action::Meta { .. } => format!("set the metadata of {} back", p.path),
        };
        vec![Step::run(label, sh)]
    }
}

/// Parameters of a `rollback.switch_back`: a migrated mount point, the old
/// copy of its data the migration kept, and the units it stopped.
#[derive(Clone, Debug, Deserialize)]
pub struct SwitchParams {
    /// The mount point (`/var/lib/docker`).
    pub path: String,
    /// The old data, kept aside (`/var/lib/docker.plumb-old-RUN`).
    pub old: String,
    /// The units the migration stopped and started again.
    pub units: Vec<String>,
}

/// What is at the mount point and the old copy now.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchState {
    /// What is mounted at the path (`None`: nothing).
    mounted: Option<String>,
    /// Whether the old copy is still a folder.
    old_there: bool,
}

/// Switches a migrated mount point back to the old copy of its data: stop
/// the units, unmount the new filesystem (kept as it is), move the old copy
/// back, start the units.
#[derive(Debug)]
pub struct SwitchBack;

impl Module for SwitchBack {
    const NAME: &'static str = "rollback.switch_back";
    type Params = SwitchParams;
    type State = SwitchState;

    fn doc() -> ModuleDoc {
        ModuleDoc::internal("Switches a migrated mount point back to the old copy of its data (made by `plumb rollback --switch-back`).")
    }

    fn claims(p: &SwitchParams) -> Claims {
        Claims::managing(Claim::Key("switch back", p.path.clone()))
    }

    fn probe(p: &SwitchParams) -> Sh {
        Sh::raw_start("path=")
            .val(&p.path)
            .raw("; old=")
            .val(&p.old)
            .raw("\necho \"mounted=$(findmnt -n -o SOURCE --mountpoint \"$path\" 2>/dev/null | head -n 1)\"\nif [ -d \"$old\" ] && [ ! -L \"$old\" ]; then echo old=1; else echo old=0; fi")
    }

    fn parse(_p: &SwitchParams, out: &ProbeOutput) -> Result<SwitchState, Failure> {
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        Ok(SwitchState {
            mounted: get("mounted=").filter(|m| !m.is_empty()).map(str::to_string),
            old_there: get("old=") == Some("1"),
        })
    }

    fn check(p: &SwitchParams, s: &SwitchState) -> Result<(), Failure> {
        if s.mounted.is_some() && !s.old_there {
            return Err(Failure::from(format!(
                "the old copy `{}` is gone: `{}` cannot be switched back to it",
                p.old, p.path
            )));
        }
        Ok(())
    }

    type Plan = Changes;

    fn plan(p: &SwitchParams, s: &SwitchState) -> Changes {
        let mut c = Changes::none();
        if let (Some(src), true) = (&s.mounted, s.old_there) {
            let units = if p.units.is_empty() {
                String::new()
            } else {
                format!("; units stopped meanwhile: {}", p.units.join(", "))
            };
            c.push(
                Change::new(
                    "data",
                    Some(format!("{src} mounted at {}", p.path)),
                    Some(format!(
                        "the old copy `{}` back at `{}`{units}; {src} is unmounted and kept as it is: \
                         what was written since the migration stays there, not copied back",
                        p.old, p.path
                    )),
                )
                .risk(Risk::Disruptive),
            );
        }
        c
    }

    fn changes(_p: &SwitchParams, _s: &SwitchState, plan: &Changes) -> Changes {
        plan.clone()
    }

    fn downtime(p: &SwitchParams, _s: &SwitchState, _plan: &Changes) -> Vec<Downtime> {
        p.units
            .iter()
            .map(|u| Downtime {
                unit: u.clone(),
                kind: DowntimeKind::Stop,
                expected_secs: None,
                expected: "as long as stopping and starting it takes: the data is not copied (a rename)".into(),
                actual_secs: None,
            })
            .collect()
    }

    fn apply(p: &SwitchParams, _s: &SwitchState, _plan: &Changes) -> Vec<Step> {
        let mut sh = Sh::raw_start("set -u\npath=")
            .val(&p.path)
            .raw("; old=")
            .val(&p.old)
            .raw("; units=")
            .val(p.units.join(" "));
        sh.line(&crate::module::downtime_fn());
        sh.line(&Sh::raw_start(SWITCH_BACK));
        vec![Step::run(format!("switch {} back to {}", p.path, p.old), sh)]
    }
}

/// The switch back: `$path`, `$old`, `$units` (space-separated ids).
const SWITCH_BACK: &str = r#"say() { echo "plumb: $*" >&2; }
active=
for u in $units; do
  case $(systemctl show -p ActiveState --value -- "$u" 2>/dev/null) in
    active|activating|reloading) active="$active $u" ;;
  esac
done
t_stop=$(date +%s.%N)
again() {
  [ -n "$active" ] || return 0
  systemctl start -- $active || say "could not start again:$active"
  plumb_downtime "$t_stop" $active
}
if [ -n "$active" ] && ! timeout 300 systemctl stop -- $active; then
  again; say "could not stop$active: nothing was switched"; exit 1
fi
src=$(findmnt -n -o SOURCE --mountpoint "$path" | head -n 1)
if ! umount -- "$path"; then
  again; say "cannot unmount $src from $path (busy: $(fuser -vm "$path" 2>&1 | tail -n +2 | tr -s ' 
' ' ')): nothing was switched"; exit 1
fi
echo "plumb-done=unmounted $src from $path"
if ! rmdir -- "$path" 2>/dev/null; then
  aside="$path.plumb-rollback-${plumb_run:-run}"
  mv -- "$path" "$aside" || { mount -- "$path"; again; say "cannot move $path aside"; exit 1; }
  echo "plumb-note=files written into the mount point below the mount were kept at $aside"
fi
if ! mv -- "$old" "$path"; then
  mkdir -p -- "$path"; mount -- "$path" 2>/dev/null || say "could not mount $src at $path again"
  again; say "cannot move $old back to $path"; exit 1
fi
echo "plumb-done=moved $old back to $path"
again
echo "plumb-note=$src is unmounted and kept as it is"
"#;

/// Parameters of a `rollback.restart`: the unit.
#[derive(Clone, Debug, Deserialize)]
pub struct RestartParams {
    /// The systemd unit.
    pub unit: String,
}

/// A unit's `is-active` answer.
#[derive(Clone, Debug, Serialize)]
pub struct RestartState {
    active: String,
}

/// Restarts a service when a rollback resource that notifies it changes.
#[derive(Debug)]
pub struct Restart;

impl Module for Restart {
    const NAME: &'static str = "rollback.restart";
    type Params = RestartParams;
    type State = RestartState;
    const REFRESHABLE: bool = true;

    fn doc() -> ModuleDoc {
        ModuleDoc::internal("Restarts a service that a rolled-back file notifies (made by `plumb rollback`).")
    }

    fn claims(p: &RestartParams) -> Claims {
        Claims::managing(Claim::Key("service", p.unit.clone()))
    }

    fn probe(p: &RestartParams) -> Sh {
        Sh::raw_start("systemctl is-active --")
            .arg(&p.unit)
            .raw(" 2>/dev/null || true")
    }

    fn parse(_p: &RestartParams, out: &ProbeOutput) -> Result<RestartState, Failure> {
        Ok(RestartState {
            active: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }

    type Plan = Changes;

    fn changes(_p: &RestartParams, _s: &RestartState, plan: &Changes) -> Changes {
        plan.clone()
    }

    fn plan(_p: &RestartParams, _s: &RestartState) -> Changes {
        Changes::none()
    }

    fn apply(_p: &RestartParams, _s: &RestartState, _c: &Changes) -> Vec<Step> {
        Vec::new()
    }

    fn refresh(p: &RestartParams, _s: &RestartState, _c: &Changes) -> Vec<Step> {
        vec![Step::run(
            format!("restart {}", p.unit),
            Sh::raw_start("systemctl restart --").arg(&p.unit),
        )]
    }
}

/// The paths of a host's record to look at before the rollback is built:
/// each path with its backup (the order of [`build`]'s `seen`).
#[must_use]
pub fn items(paths: &[PathRecord]) -> Vec<(String, Option<String>)> {
    paths
        .iter()
        .map(|p| (p.path.clone(), p.backup.as_ref().map(|b| b.path.clone())))
        .collect()
}

/// A rollback: its host plans and what it leaves as it is.
pub struct Built {
    /// One plan per host.
    pub hosts: Vec<HostPlan>,
    /// What is not undone, with the reasons.
    pub cannot_undo: Vec<CannotUndo>,
}

/// Why a module's changes are not undone, when they are not.
fn why_not(module: &str, notes: &[String]) -> Option<(String, String)> {
    let old = notes
        .iter()
        .find_map(|n| n.strip_prefix("old data kept at ").map(str::to_string));
    Some(match module {
        "lvm.lv" => (
            "the logical volume's size".into(),
            "a logical volume is not shrunk back: shrinking it (and its filesystem) can lose data".into(),
        ),
        "lvm.vg" => (
            "the volume group".into(),
            "a volume group created or extended stays, with its disks: `plumb rollback` does not remove it or take a disk back (`vgreduce`, `vgremove`, `pvremove` by hand, once nothing uses it)".into(),
        ),
        "filesystem" => (
            "the filesystem".into(),
            "a filesystem made by mkfs or grown stays: what mkfs erased cannot be brought back, and a filesystem is not shrunk".into(),
        ),
        "mount" => match old {
            Some(o) => (
                "the mount, and the data migrated onto it".into(),
                format!(
                    "the old copy of the data is still at `{o}`: `plumb rollback RUN --switch-back` switches back to it (disruptive; what was written since stays on the new filesystem); the fstab line is restored from its backup"
                ),
            ),
            None => (
                "the mount".into(),
                "a mount (and any data migrated onto it, whose old copy was removed) is not undone; the fstab line is restored from its backup".into(),
            ),
        },
        "package" => (
            "the packages installed or removed".into(),
            "packages are left as they are: removing one can remove what depends on it (`plumb rollback RUN --remove-packages` removes those the run installed, reviewed with their dependents; or a `package` resource with `state: absent`)".into(),
        ),
        "command" => (
            "what the command did".into(),
            "plumb does not know what a command changed".into(),
        ),
        "service" => (
            "the service's state (started, stopped, enabled)".into(),
            "service states are left as they are; a restored file restarts the services it notifies".into(),
        ),
        _ => return None,
    })
}

/// The packages a `package` resource of the run installed (a change from
/// nothing to a version).
fn installed_packages(r: &crate::report::ResourceReport) -> Option<Vec<String>> {
    if r.module != "package" {
        return None;
    }
    let names: Vec<String> = r
        .changes
        .iter()
        .filter(|c| c.from.is_none() && c.to.is_some())
        .map(|c| c.field.clone())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The switch back of a migrated mount, when asked and its old copy was
/// kept (the record's notes say where, and which units were stopped).
fn switch_back(r: &crate::report::ResourceReport, opts: Options) -> Option<HostResource> {
    if !opts.switch_back || r.module != "mount" || r.status != Status::Changed {
        return None;
    }
    let old = r.notes.iter().find_map(|n| n.strip_prefix("old data kept at "))?.trim();
    let path = old.rsplit_once(".plumb-old-")?.0.to_string();
    let units = r
        .notes
        .iter()
        .find_map(|n| n.strip_prefix("units stopped and started again:"))
        .map(|u| u.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Some(HostResource {
        id: format!("switch back {path}"),
        module: SwitchBack::NAME,
        check: false,
        resource: Some(resource_of::<SwitchBack>(SwitchParams {
            path,
            old: old.to_string(),
            units,
        })),
        skip: None,
        requires: Vec::new(),
        notified_by: Vec::new(),
        become_: Become::Root,
        sensitive: false,
        deferred: false,
        criterion: None,
    })
}

/// How deep the path a resource manages is (`/a/b` is 2).
fn depth_of(c: &Claims) -> usize {
    c.manages
        .iter()
        .find_map(|m| match m {
            Claim::Path(p) => Some(p.trim_end_matches('/').matches('/').count()),
            Claim::Key(..) => None,
        })
        .unwrap_or(0)
}

/// What a rollback does beyond restoring files, when asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Switch a migrated mount point back to the old copy of its data
    /// (`--switch-back`): disruptive, and what was written since stays on
    /// the new filesystem.
    #[serde(default)]
    pub switch_back: bool,
    /// Remove the packages the run installed (`--remove-packages`):
    /// disruptive, and apt removes what depends on them too (the review
    /// names it).
    #[serde(default)]
    pub remove_packages: bool,
}

/// Makes a resource that removes packages (the `package` module lives
/// with the other modules; the command line hands its constructor in).
pub type PackageRemoval<'a> = &'a dyn Fn(Vec<String>) -> std::sync::Arc<dyn crate::module::Resource>;

/// Build the rollback of `record` on `hosts` (the inventory's, by name):
/// `seen` holds, per host, the state of [`items`] read on the host now.
///
/// # Errors
/// A host of the record is not among `hosts`.
pub fn build(
    record: &RunRecord,
    hosts: &[Host],
    seen: &BTreeMap<String, Vec<Option<Stat>>>,
    key: &Keyed,
    opts: Options,
    remove_packages: PackageRemoval<'_>,
) -> Result<Built, String> {
    let mut out = Built {
        hosts: Vec::new(),
        cannot_undo: Vec::new(),
    };
    let run = &record.run_id;
    let report_hosts = record.report.as_ref().map(|r| r.hosts.as_slice()).unwrap_or_default();
    for hr in &record.hosts {
        let Some(host) = hosts.iter().find(|h| h.name == hr.host) else {
            return Err(format!(
                "run {run} changed host `{}`, which is not in the inventory",
                hr.host
            ));
        };
        let states = seen.get(&hr.host).cloned().unwrap_or_default();
        let mut resources: Vec<HostResource> = Vec::new();
        let mut removals: Vec<(String, HostResource)> = Vec::new();
        let mut undone_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut paths_done: Vec<&str> = Vec::new();
        let mut cannot = |resource: &str, module: &str, what: String, why: String| {
            out.cannot_undo.push(CannotUndo {
                host: hr.host.clone(),
                resource: resource.to_string(),
                module: module.to_string(),
                what,
                why,
            });
        };
        for (i, p) in hr.paths.iter().enumerate() {
            if paths_done.contains(&p.path.as_str()) {
                continue;
            }
            paths_done.push(&p.path);
            let now = states.get(i).cloned().flatten();
            let now_state = now.as_ref().and_then(|s| s.state.clone()).map(|mut s| {
                s.sha256 = s.sha256.map(|h| key.seal(&h, p.sensitive));
                s
            });
            let action = if let Some(b) = &p.backup {
                Action::Restore {
                    backup: b.path.clone(),
                    sha256: b.sha256.clone(),
                }
            } else if p.created {
                match (&now_state, &p.after) {
                    (None, _) => continue,
                    (Some(n), Some(a)) if n.kind == a.kind && (n.kind == "directory" || n.sha256 == a.sha256) => {
                        Action::Remove { kind: n.kind.clone() }
                    }
                    _ => {
                        cannot(
                            &p.resource,
                            &p.module,
                            format!("`{}`, created by run {run}", p.path),
                            "it changed since (it no longer holds what the run wrote): left in place".into(),
                        );
                        continue;
                    }
                }
            } else if !p.before.is_empty() {
                Action::Meta {
                    before: p.before.clone(),
                }
            } else {
                cannot(
                    &p.resource,
                    &p.module,
                    format!("`{}`", p.path),
                    "it was changed without a backup (`backup: false`)".into(),
                );
                continue;
            };
            let id = if hr.paths.iter().filter(|q| q.resource == p.resource).count() > 1 {
                format!("{}:{}", p.resource, p.path)
            } else {
                p.resource.clone()
            };
            undone_by.entry(p.resource.clone()).or_default().push(id.clone());
            let remove = matches!(action, Action::Remove { .. });
            let r = HostResource {
                id,
                module: Undo::NAME,
                check: false,
                resource: Some(resource_of::<Undo>(UndoParams {
                    path: p.path.clone(),
                    action,
                    run: run.clone(),
                    sensitive: p.sensitive,
                    key: Some(key.clone()),
                })),
                skip: None,
                requires: Vec::new(),
                notified_by: Vec::new(),
                become_: Become::Root,
                sensitive: p.sensitive,
                deferred: false,
                criterion: None,
            };
            if remove {
                removals.push((p.path.clone(), r));
            } else {
                resources.push(r);
            }
        }
        // Folders are put back before what goes in them; what a run created
        // inside what it created is removed first.
        resources.sort_by_key(|r| r.resource.as_ref().map_or(0, |x| depth_of(&x.claims())));
        removals.sort_by_key(|(path, _)| std::cmp::Reverse(path.trim_end_matches('/').matches('/').count()));
        resources.extend(removals.into_iter().map(|(_, r)| r));
        // Modules whose changes are not undone, and changed resources with
        // no path to restore.
        if let Some(rh) = report_hosts.iter().find(|h| h.name == hr.host) {
            for r in &rh.resources {
                if r.check || !matches!(r.status, Status::Changed | Status::Failed) {
                    continue;
                }
                let refresh_only = r.changes.iter().all(|c| c.field == "refresh");
                if refresh_only {
                    continue;
                }
                if let Some(switch) = switch_back(r, opts) {
                    // Before the fstab line is restored: a switch back that
                    // fails leaves the fstab naming the new filesystem.
                    for res in &mut resources {
                        for (j, _) in &mut res.requires {
                            *j += 1;
                        }
                        if undone_by.get(&r.id).is_some_and(|ids| ids.contains(&res.id)) {
                            res.requires.push((0, EdgeKind::Requires));
                        }
                    }
                    resources.insert(0, switch);
                } else if let Some(names) = installed_packages(r).filter(|_| opts.remove_packages) {
                    resources.push(HostResource {
                        id: format!("remove packages of {}", r.id),
                        module: "package",
                        check: false,
                        resource: Some(remove_packages(names)),
                        skip: None,
                        requires: Vec::new(),
                        notified_by: Vec::new(),
                        become_: Become::Root,
                        sensitive: false,
                        deferred: false,
                        criterion: None,
                    });
                } else if let Some((what, why)) = why_not(&r.module, &r.notes) {
                    cannot(&r.id, &r.module, what, why);
                } else if !undone_by.contains_key(&r.id) && !hr.paths.iter().any(|p| p.resource == r.id) {
                    cannot(
                        &r.id,
                        &r.module,
                        format!("what `{}` changed", r.module),
                        "the run's record holds no backup of it".into(),
                    );
                }
            }
        }
        // Services that the undone files notify, restarted once after them.
        for s in &hr.services {
            let notifiers: Vec<usize> = s
                .notified_by
                .iter()
                .flat_map(|n| undone_by.get(n).cloned().unwrap_or_default())
                .filter_map(|id| resources.iter().position(|r| r.id == id))
                .collect();
            if notifiers.is_empty() {
                continue;
            }
            resources.push(HostResource {
                id: format!("restart {}", s.unit),
                module: Restart::NAME,
                check: false,
                resource: Some(resource_of::<Restart>(RestartParams { unit: s.unit.clone() })),
                skip: None,
                requires: notifiers.iter().map(|&j| (j, EdgeKind::Notify)).collect(),
                notified_by: notifiers,
                become_: Become::Root,
                sensitive: false,
                deferred: false,
                criterion: None,
            });
        }
        let order = (0..resources.len()).collect();
        out.hosts.push(HostPlan {
            host: host.clone(),
            resources,
            order,
            needs_facts: false,
        });
    }
    Ok(out)
}

/// The rollback's JSON: the report's, with `rollback_of` and `cannot_undo`.
#[must_use]
pub fn json(report: &crate::report::RunReport, run: &str, cannot: &[CannotUndo]) -> String {
    let mut v = serde_json::to_value(report).expect("a report serializes");
    if let Some(o) = v.as_object_mut() {
        o.insert("rollback_of".into(), serde_json::Value::String(run.to_string()));
        o.insert("cannot_undo".into(), serde_json::to_value(cannot).expect("serializes"));
    }
    serde_json::to_string_pretty(&v).expect("serializes") + "\n"
}

/// What cannot be undone, as text (or Markdown).
#[must_use]
pub fn cannot_undo_text(cannot: &[CannotUndo], markdown: bool) -> String {
    if cannot.is_empty() {
        return String::new();
    }
    let mut s = if markdown {
        "\n## What this rollback does not undo\n\n| host | resource | what stays | why |\n|---|---|---|---|\n"
            .to_string()
    } else {
        "\nnot undone by this rollback:\n".to_string()
    };
    for c in cannot {
        if markdown {
            s.push_str(&format!(
                "| `{}` | `{}` ({}) | {} | {} |\n",
                c.host, c.resource, c.module, c.what, c.why
            ));
        } else {
            s.push_str(&format!(
                "  {} / {} ({}): {} stays: {}\n",
                c.host, c.resource, c.module, c.what, c.why
            ));
        }
    }
    s
}

/// How a change is undone, in one sentence for the review (before the
/// meeting says GO): from the backup, by removal, by setting metadata back,
/// by switching back to the old data, or why it cannot be.
#[must_use]
pub fn undo_line(module: &str, changes: &[crate::report::ChangeReport], notes: &[String]) -> String {
    let has = |f: &str| {
        changes
            .iter()
            .any(|c| c.field == f || c.field.starts_with(&format!("{f} ")))
    };
    if changes.iter().all(|c| c.field == "refresh") {
        return "nothing to undo (a refresh); `plumb rollback` restarts it again when it restores what notifies it"
            .into();
    }
    if module == "mount" {
        let mut parts = Vec::new();
        if has("fstab") {
            parts.push("the fstab line is restored from its backup by `plumb rollback RUN`".to_string());
        }
        if has("migrate") {
            parts.push(
                "switch back to the old data, kept aside as `PATH.plumb-old-RUN` (unless `keep_old: false`): `plumb rollback RUN --switch-back` (disruptive: what was written since stays on the new filesystem)"
                    .to_string(),
            );
        }
        if has("mounted") || parts.is_empty() {
            parts.push("the mount itself is not undone (unmount by hand)".into());
        }
        return parts.join("; ");
    }
    if let Some((_, why)) = why_not(module, notes) {
        return format!("cannot be undone: {why}");
    }
    if changes
        .iter()
        .any(|c| c.field == "state" && c.from.as_deref() == Some("absent"))
    {
        return "`plumb rollback RUN` removes it, while it still holds what this run wrote".into();
    }
    if has("content") || has("state") {
        return "`plumb rollback RUN` restores the old file from the backup this run keeps under /var/lib/plumb/backups/RUN/ (verified by sha256)".into();
    }
    "`plumb rollback RUN` sets the values shown back".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ChangeReport;

    fn change(field: &str, from: Option<&str>, to: &str) -> ChangeReport {
        ChangeReport {
            field: field.into(),
            from: from.map(str::to_string),
            to: Some(to.into()),
            risk: Risk::Safe,
        }
    }

    /// The review's undo line never promises what `plumb rollback` does
    /// not do: a volume group it made stays (the Phase-1 review said
    /// "sets the values shown back" for `fast-vg`).
    #[test]
    fn an_undo_line_says_what_rollback_cannot_undo() {
        let vg = undo_line("lvm.vg", &[change("vg", None, "vg_fast on /dev/vdb")], &[]);
        assert!(
            vg.starts_with("cannot be undone: a volume group created or extended stays"),
            "{vg}"
        );
        let lv = undo_line("lvm.lv", &[change("size", Some("1 GiB"), "2 GiB")], &[]);
        assert!(lv.starts_with("cannot be undone"), "{lv}");
        let created = undo_line("file", &[change("state", Some("absent"), "file")], &[]);
        assert!(created.contains("removes it"), "{created}");
        let mode = undo_line("file", &[change("mode", Some("0644"), "0600")], &[]);
        assert!(mode.contains("sets the values shown back"), "{mode}");
    }

    /// Setting a mode back reads as the host writes modes, whatever the
    /// record holds.
    #[test]
    fn a_mode_set_back_reads_like_the_mode_it_replaces() {
        let now = PathState {
            kind: "file".into(),
            sha256: None,
            mode: "600".into(),
            owner: "root".into(),
            group: "root".into(),
        };
        let mut c = Changes::none();
        meta_changes(
            &mut c,
            &now,
            &BTreeMap::from([("mode".to_string(), "0644".to_string())]),
        );
        assert_eq!(
            (c.items[0].from.as_deref(), c.items[0].to.as_deref()),
            (Some("600"), Some("644"))
        );
        let mut same = Changes::none();
        meta_changes(
            &mut same,
            &now,
            &BTreeMap::from([("mode".to_string(), "0600".to_string())]),
        );
        assert!(same.items.is_empty());
    }
}
