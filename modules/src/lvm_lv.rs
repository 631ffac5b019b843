//! `lvm.lv`: a logical volume and its size. Sizes are absolute (`150G`),
//! `100%FREE` (all the free space of the group, and again when the group
//! grows) or `N%VG`. A volume counts as converged when it is within one
//! extent of its target, so LVM's rounding never makes a run "change"
//! forever. Growing also grows the filesystem on the volume (`grow_fs`,
//! default true); shrinking is refused unless `allow_shrink: true`, and
//! always for XFS, which cannot shrink.

use plumb_engine::module::{
    Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, Prediction, Presence, ProbeOutput,
    Risk, Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};

use crate::blockdev::{self, BlockDevice, FsType};
use crate::lvm::{self, invalid_name, mapper_path, num, rows, text};
use crate::size::{extents_for, human, LvSize};
use crate::stat::{fields, sections};

/// The `lvm.lv` module.
pub struct LogicalVolume;

/// Parameters of `lvm.lv`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    vg: String,
    name: String,
    size: Option<LvSize>,
    #[serde(default = "plumb_engine::module::yes")]
    grow_fs: bool,
    #[serde(default)]
    allow_shrink: bool,
    #[serde(default)]
    state: Presence,
}

impl Params {
    fn path(&self) -> String {
        format!("/dev/{}/{}", self.vg, self.name)
    }
}

/// The group, as `vgs` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupSpace {
    extent: u64,
    extents: u64,
    free_extents: u64,
}

/// The volume, as `lvs` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    extents: u64,
    attr: String,
}

impl VolumeInfo {
    /// The device is open (mounted, or used by a process).
    fn open(&self) -> bool {
        self.attr.chars().nth(5) == Some('o')
    }
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    group: Option<GroupSpace>,
    volume: Option<VolumeInfo>,
    dev: BlockDevice,
}

/// What to do to the volume (sizes in extents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing.
    Converged,
    /// Create it with this many extents (0: the group is still to be
    /// created, so the size is not known yet).
    Create(u64),
    /// Grow it to this many extents (and its filesystem with `grow_fs`).
    Grow(u64),
    /// Shrink it to this many extents (refused without `allow_shrink`).
    Shrink(u64),
    /// Remove it.
    Remove,
}

/// The target size in extents for `size` in group `g` with the volume at
/// `current` extents (0 when it does not exist).
fn target(size: LvSize, g: &GroupSpace, current: u64) -> u64 {
    match size {
        LvSize::Bytes(b) => extents_for(b, g.extent),
        LvSize::AllFree => current + g.free_extents,
        LvSize::PercentVg(pct) => g.extents * u64::from(pct) / 100,
    }
}

fn plan(p: &Params, s: &State) -> Plan {
    if p.state == Presence::Absent {
        return if s.volume.is_some() {
            Plan::Remove
        } else {
            Plan::Converged
        };
    }
    let Some(size) = p.size else {
        return Plan::Converged;
    };
    let Some(g) = &s.group else {
        // The group is still to be created: the volume will be too.
        return Plan::Create(0);
    };
    let Some(v) = &s.volume else {
        return Plan::Create(target(size, g, 0));
    };
    let want = target(size, g, v.extents);
    // Within one extent is converged: LVM rounds sizes to extents, and a
    // percentage may round either way.
    if want.abs_diff(v.extents) <= u64::from(!matches!(size, LvSize::AllFree)) {
        return Plan::Converged;
    }
    if want > v.extents {
        Plan::Grow(want)
    } else {
        Plan::Shrink(want)
    }
}

impl Module for LogicalVolume {
    const NAME: &'static str = "lvm.lv";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "An LVM logical volume and its size. `size` is absolute (`150G`; `+20G` is refused: sizes \
                      are absolute so that re-runs converge), `100%FREE` (every free extent of the group: \
                      converged when less than one extent is free, and grown again when the group grows) or \
                      `N%VG`. A volume within one extent of its target is converged. Growing grows the \
                      filesystem on it too (ext4, XFS, Btrfs) unless `grow_fs: false`. Shrinking is refused \
                      unless `allow_shrink: true` (destructive), never done for XFS, and needs an unmounted \
                      ext4 or a mounted Btrfs. `state: absent` removes the volume, but never an open or \
                      mounted one. Requires its `lvm.vg` implicitly; a `filesystem` or `mount` on \
                      `/dev/VG/LV` or `/dev/mapper/VG-LV` requires it.",
            params: &[
                ParamDoc {
                    name: "vg",
                    ty: "string",
                    default: "required",
                    doc: "The volume group.",
                },
                ParamDoc {
                    name: "name",
                    ty: "string",
                    default: "required",
                    doc: "The volume's name.",
                },
                ParamDoc {
                    name: "size",
                    ty: "size | 100%FREE | N%VG",
                    default: "required with `present`",
                    doc: "The size the volume must have (binary units: `1G` = 1024³ bytes).",
                },
                ParamDoc {
                    name: "grow_fs",
                    ty: "bool",
                    default: "true",
                    doc: "Grow the filesystem on the volume with it.",
                },
                ParamDoc {
                    name: "allow_shrink",
                    ty: "bool",
                    default: "false",
                    doc: "Allow shrinking (the filesystem is shrunk first; destructive).",
                },
                ParamDoc {
                    name: "state",
                    ty: "present | absent",
                    default: "present",
                    doc: "`absent` removes the volume (destructive; refused while it is open or mounted).",
                },
            ],
            example: "- id: docker-lv\n  lvm.lv:\n    vg: vg_fast\n    name: docker\n    size: 400G\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        if let Some(why) = invalid_name(&p.vg) {
            cx.error(
                "vg",
                "plumb::plan::invalid_value",
                format!("invalid volume group name `{}`: {why}", p.vg),
                None,
            );
        }
        if let Some(why) = lvm::invalid_lv_name(&p.name) {
            cx.error(
                "name",
                "plumb::plan::invalid_value",
                format!("invalid logical volume name `{}`: {why}", p.name),
                None,
            );
        }
        match (p.state, p.size) {
            (Presence::Present, None) => cx.error(
                "",
                "plumb::plan::missing_param",
                "missing parameter `size`",
                Some("give the size the volume must have: `150G`, `100%FREE` or `80%VG`".into()),
            ),
            (Presence::Absent, Some(_)) => cx.error(
                "size",
                "plumb::plan::conflicting_params",
                "`size` has no meaning with `state: absent`",
                None,
            ),
            _ => {}
        }
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            provides: vec![
                Claim::Key("blockdev", p.path()),
                Claim::Key("blockdev", mapper_path(&p.vg, &p.name)),
            ],
            needs: vec![Claim::Key("vg", p.vg.clone())],
            manages: vec![Claim::Key("logical volume", format!("{}/{}", p.vg, p.name))],
        }
    }

    fn probe(p: &Params) -> Sh {
        let mut s = lvm::env().raw("exec 3>&1\n");
        s.line(&blockdev::probe("lv", &p.path()));
        s.line(&Sh::raw_start("echo --"));
        // One report for the group and its volumes: `pvs` with volume
        // columns lists every segment (free ones too), so a group without
        // volumes still has rows.
        s.line(&lvm::report_section(
            "pvs",
            "pvs_status",
            &Sh::raw_start(
                "pvs --reportformat json --units b --nosuffix -o vg_name,vg_extent_size,vg_extent_count,vg_free_count,lv_name,lv_size,lv_attr -S",
            )
            .arg(format!("vg_name=\"{}\"", p.vg)),
        ));
        s
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let dev = blockdev::parse("lv", &f)?;
        let sec = sections(out.body().unwrap_or_default(), "");
        let body = |k: &str| String::from_utf8_lossy(sec.get(k).map_or(&[][..], |v| v)).into_owned();
        lvm::status(sec.get("pvs_status"))?;
        let segments = rows(&body("pvs"), "pv")?;
        let group = match segments.first() {
            Some(r) => Some(GroupSpace {
                extent: num(r, "vg_extent_size")?.max(1),
                extents: num(r, "vg_extent_count")?,
                free_extents: num(r, "vg_free_count")?,
            }),
            None => None,
        };
        let volume = match (segments.iter().find(|r| text(r, "lv_name") == p.name), &group) {
            (Some(r), Some(g)) => Some(VolumeInfo {
                extents: num(r, "lv_size")? / g.extent,
                attr: text(r, "lv_attr"),
            }),
            _ => None,
        };
        Ok(State { group, volume, dev })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        let lv = format!("{}/{}", p.vg, p.name);
        let Some(g) = &s.group else {
            if p.state == Presence::Absent {
                return Ok(());
            }
            return Err(Failure::from(format!("volume group `{}` does not exist", p.vg)));
        };
        match plan(p, s) {
            Plan::Converged => Ok(()),
            Plan::Remove => {
                if let Some(m) = &s.dev.mount {
                    return Err(
                        Failure::from(format!("`{lv}` is mounted at `{m}`")).with_hint("unmount it before removing it")
                    );
                }
                if s.volume.as_ref().is_some_and(VolumeInfo::open) {
                    return Err(Failure::from(format!(
                        "`{lv}` is open (in use by a process or another device): refusing to remove it"
                    )));
                }
                Ok(())
            }
            Plan::Create(want) => {
                if want == 0 {
                    return Err(Failure::from(format!(
                        "volume group `{}` has no free space for `{lv}`",
                        p.vg
                    )));
                }
                if want > g.free_extents {
                    return Err(Failure::from(format!(
                        "`{lv}` needs {} but volume group `{}` has {} free",
                        human(want * g.extent),
                        p.vg,
                        human(g.free_extents * g.extent)
                    )));
                }
                Ok(())
            }
            Plan::Grow(want) => {
                let cur = s.volume.as_ref().map_or(0, |v| v.extents);
                if want - cur > g.free_extents {
                    return Err(Failure::from(format!(
                        "growing `{lv}` to {} needs {} more but volume group `{}` has {} free",
                        human(want * g.extent),
                        human((want - cur) * g.extent),
                        p.vg,
                        human(g.free_extents * g.extent)
                    )));
                }
                if p.grow_fs && !s.dev.exists() {
                    return Err(Failure::from(format!(
                        "`{lv}` is not active, so its filesystem cannot be grown with it"
                    ))
                    .with_hint(format!("activate it (lvchange -ay {lv}) or set `grow_fs: false`")));
                }
                if p.grow_fs {
                    if let Some(t) = s.dev.sig_type.as_deref().filter(|t| FsType::growable(t).is_none()) {
                        return Err(Failure::from(format!(
                            "`{lv}` holds {} which plumb cannot grow",
                            s.dev.holds().unwrap_or_else(|| t.to_string())
                        ))
                        .with_hint("set `grow_fs: false` to grow the volume alone"));
                    }
                }
                Ok(())
            }
            Plan::Shrink(want) => {
                let cur = s.volume.as_ref().map_or(0, |v| v.extents);
                let what = format!("{} to {}", human(cur * g.extent), human(want * g.extent));
                if !p.allow_shrink {
                    return Err(Failure::from(format!("`{lv}` would shrink from {what}: refused"))
                        .with_hint("set `allow_shrink: true` if data past the new end may be lost"));
                }
                if !s.dev.exists() {
                    return Err(Failure::from(format!(
                        "`{lv}` is not active, so what it holds cannot be checked: refusing to shrink it from {what}"
                    )));
                }
                match (s.dev.sig_type.as_deref().and_then(FsType::growable), &s.dev.mount) {
                    (Some(FsType::Xfs), _) => Err(Failure::from(format!(
                        "`{lv}` holds XFS, which cannot shrink: refusing to shrink it from {what}"
                    ))),
                    (Some(FsType::Ext4), Some(m)) => Err(Failure::from(format!(
                        "`{lv}` holds ext4 mounted at `{m}`, which cannot shrink while mounted"
                    ))
                    .with_hint("unmount it first")),
                    (Some(FsType::Btrfs), None) => Err(Failure::from(format!(
                        "`{lv}` holds Btrfs, which shrinks only while mounted"
                    ))
                    .with_hint("mount it first")),
                    (None, _) if s.dev.sig_type.is_some() => Err(Failure::from(format!(
                        "`{lv}` holds {}, which plumb cannot shrink",
                        s.dev.holds().unwrap_or_default()
                    ))),
                    _ => Ok(()),
                }
            }
        }
    }

    type Plan = Plan;

    fn plan(p: &Params, s: &State) -> Plan {
        plan(p, s)
    }

    fn changes(p: &Params, s: &State, plan: &Plan) -> Changes {
        let mut c = Changes::none();
        let extent = s.group.as_ref().map_or(1, |g| g.extent);
        let cur = s.volume.as_ref().map_or(0, |v| v.extents);
        let size_text = |ext: u64| match p.size {
            Some(LvSize::Bytes(_)) | None => human(ext * extent),
            Some(other) => format!("{} ({other})", human(ext * extent)),
        };
        let fs = s.dev.sig_type.as_deref().and_then(FsType::growable);
        match *plan {
            Plan::Converged => {}
            Plan::Remove => c.push(
                Change::new(
                    "lv",
                    Some(format!("{}/{} ({})", p.vg, p.name, human(cur * extent))),
                    None,
                )
                .risk(Risk::Destructive),
            ),
            Plan::Create(0) => {
                let size = p.size.map(|s| s.to_string()).unwrap_or_default();
                c.push(Change::new("lv", None, Some(format!("{}/{} ({size})", p.vg, p.name))));
            }
            Plan::Create(want) => c.push(Change::new(
                "lv",
                None,
                Some(format!("{}/{} ({})", p.vg, p.name, size_text(want))),
            )),
            Plan::Grow(want) => {
                let (to, risk) = match fs {
                    Some(t) if p.grow_fs => (
                        format!("{}, {} grown with it", size_text(want), t.as_str()),
                        Risk::Disruptive,
                    ),
                    _ => (size_text(want), Risk::Safe),
                };
                c.push(Change::new("size", Some(human(cur * extent)), Some(to)).risk(risk));
            }
            Plan::Shrink(want) => {
                let to = if p.allow_shrink {
                    format!("{} (shrunk)", size_text(want))
                } else {
                    format!("{} (refused without `allow_shrink: true`)", size_text(want))
                };
                c.push(Change::new("size", Some(human(cur * extent)), Some(to)).risk(Risk::Destructive));
            }
        }
        c
    }

    /// While the group is pending, a size that follows it (`100%FREE`,
    /// `N%VG`) is known only once the group is changed; a group still to be
    /// created means a volume still to be created.
    fn predict(p: &Params, s: &State) -> Prediction<State> {
        let follows = matches!(p.size, Some(LvSize::AllFree | LvSize::PercentVg(_)));
        if s.group.is_some() && s.volume.is_some() && follows && p.state == Presence::Present {
            return Prediction::Unknown(format!(
                "the size of `{}/{}` follows the size of `{}`",
                p.vg, p.name, p.vg
            ));
        }
        Prediction::Probed
    }

    fn apply(p: &Params, s: &State, plan: &Plan) -> Vec<Step> {
        let lv = format!("{}/{}", p.vg, p.name);
        let mut sh = lvm::env().raw("set -e\n");
        let fs = s.dev.sig_type.as_deref().and_then(FsType::growable);
        let label = match *plan {
            Plan::Converged => return Vec::new(),
            Plan::Remove => {
                sh.line(&Sh::raw_start("lvremove -q -y").arg(&lv));
                format!("lvremove {lv}")
            }
            Plan::Create(want) => {
                // -W y: a new volume starts blank even where an old one was.
                sh.line(
                    &Sh::raw_start("lvcreate -q -y -W y -n")
                        .arg(&p.name)
                        .raw(" -l")
                        .arg(want.to_string())
                        .arg(&p.vg),
                );
                format!("lvcreate {lv}")
            }
            Plan::Grow(want) => {
                sh.line(&Sh::raw_start("lvextend -q -l").arg(want.to_string()).arg(&lv));
                if let (Some(t), true) = (fs, p.grow_fs) {
                    sh.line(&blockdev::grow_script(&p.path(), t));
                }
                format!("lvextend {lv}")
            }
            Plan::Shrink(want) => {
                let bytes = want * s.group.as_ref().map_or(1, |g| g.extent);
                let real = Sh::raw_start("real=$(readlink -f --").arg(p.path()).raw(")");
                sh.line(&real);
                match fs {
                    Some(FsType::Ext4) => sh.line(
                        &Sh::raw_start("e2fsck -f -p \"$real\" || [ $? -le 1 ]\nresize2fs \"$real\"")
                            .arg(format!("{}K", bytes / 1024)),
                    ),
                    Some(FsType::Btrfs) => sh.line(
                        &Sh::raw_start(
                            "mnt=$(findmnt -n -o TARGET --first-only -S \"$real\")\nbtrfs filesystem resize",
                        )
                        .arg(bytes.to_string())
                        .raw(" \"$mnt\""),
                    ),
                    _ => {}
                }
                sh.line(&Sh::raw_start("lvreduce -q -f -l").arg(want.to_string()).arg(&lv));
                format!("lvreduce {lv}")
            }
        };
        vec![Step::run(label, sh)]
    }

    fn reprobe_after_requirements() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(extents: u64, free: u64, lv: Option<u64>) -> State {
        State {
            group: Some(GroupSpace {
                extent: 4 << 20,
                extents,
                free_extents: free,
            }),
            volume: lv.map(|e| VolumeInfo {
                extents: e,
                attr: "-wi-a-----".into(),
            }),
            dev: BlockDevice::default(),
        }
    }

    fn params(size: &str) -> Params {
        Params {
            vg: "vg".into(),
            name: "lv".into(),
            size: Some(crate::size::parse_lv_size(size).unwrap()),
            grow_fs: true,
            allow_shrink: false,
            state: Presence::Present,
        }
    }

    #[test]
    fn all_free_is_converged_only_when_no_extent_is_free() {
        let p = params("100%FREE");
        assert_eq!(plan(&p, &state(100, 0, Some(100))), Plan::Converged);
        assert_eq!(plan(&p, &state(125, 25, Some(100))), Plan::Grow(125));
        assert_eq!(plan(&p, &state(100, 100, None)), Plan::Create(100));
    }

    #[test]
    fn absolute_sizes_round_up_to_extents_and_tolerate_one() {
        let p = params("1G");
        assert_eq!(plan(&p, &state(1000, 1000, None)), Plan::Create(256));
        assert_eq!(plan(&p, &state(1000, 0, Some(256))), Plan::Converged);
        assert_eq!(plan(&p, &state(1000, 0, Some(257))), Plan::Converged);
        assert_eq!(plan(&p, &state(1000, 0, Some(255))), Plan::Converged);
        assert_eq!(plan(&p, &state(1000, 10, Some(128))), Plan::Grow(256));
        assert_eq!(plan(&p, &state(1000, 10, Some(512))), Plan::Shrink(256));
    }

    #[test]
    fn percent_of_the_group() {
        let p = params("50%VG");
        assert_eq!(plan(&p, &state(1001, 1001, None)), Plan::Create(500));
        assert_eq!(plan(&p, &state(1001, 0, Some(501))), Plan::Converged);
    }

    #[test]
    fn shrinking_is_refused_by_default() {
        let p = params("1G");
        let e = LogicalVolume::check(&p, &state(1000, 0, Some(512))).unwrap_err();
        assert!(e.what == "`vg/lv` would shrink from 2 GiB to 1 GiB: refused", "{e}");
        assert_eq!(
            e.hint.as_deref(),
            Some("set `allow_shrink: true` if data past the new end may be lost"),
            "what to do is a hint of its own"
        );
    }
}
