//! `lvm.vg`: a volume group and its physical volumes. Missing devices are
//! pvcreated (only when blank) and added; `pvresize: true` grows each PV to
//! fill a device that was enlarged. A PV is never removed: one in the group
//! but not in the plan is reported as drift. Other groups on the host, even
//! broken ones (missing PVs), are left alone and do not disturb the probe.

use plumb_engine::module::{
    Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, ProbeOutput, Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};

use crate::blockdev::{self, BlockDevice};
use crate::lvm::{self, invalid_name, num, rows, text};
use crate::size::{human, Size};
use crate::stat::{fields, sections};

/// The `lvm.vg` module.
pub struct VolumeGroup;

/// Parameters of `lvm.vg`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    name: String,
    pvs: Vec<String>,
    pe_size: Option<Size>,
    #[serde(default)]
    pvresize: bool,
}

/// The group, as `vgs` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    extent: u64,
    missing_pvs: u64,
}

/// A physical volume, as `pvs` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhysicalVolume {
    name: String,
    vg: String,
    majmin: String,
    pe_count: u64,
    pe_start: u64,
    dev_size: u64,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    group: Option<GroupInfo>,
    /// Every PV on the host that is in this group or is one of the planned devices.
    pvs: Vec<PhysicalVolume>,
    /// The planned devices, in plan order.
    devices: Vec<BlockDevice>,
}

impl State {
    /// The PV on the planned device `d`, if it is one.
    fn pv_of(&self, d: &BlockDevice) -> Option<&PhysicalVolume> {
        let mm = d.majmin.as_deref()?;
        self.pvs.iter().find(|pv| pv.majmin == mm)
    }
}

impl PhysicalVolume {
    /// Extents a `pvresize` would add (one metadata area at the start, as
    /// pvcreate makes by default).
    fn growth(&self, extent: u64) -> u64 {
        let usable = self.dev_size.saturating_sub(self.pe_start) / extent.max(1);
        usable.saturating_sub(self.pe_count)
    }
}

/// What to do to the group: the commands, as data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VgPlan {
    /// Devices to make physical volumes first.
    pvcreate: Vec<String>,
    /// Create the group from all of the plan's devices.
    create: bool,
    /// Devices to add to the existing group.
    extend: Vec<String>,
    /// Physical volumes whose disk grew, to resize.
    pvresize: Vec<String>,
}

impl Module for VolumeGroup {
    const NAME: &'static str = "lvm.vg";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "An LVM volume group. Devices in `pvs` that are not physical volumes yet are pvcreated \
                      (only when blank: a device holding a filesystem, a partition table or any other \
                      signature is refused) and added to the group. plumb never removes a PV: one that is in \
                      the group but not in `pvs` is reported as drift. With `pvresize: true`, a PV whose \
                      device was enlarged is grown to fill it. A logical volume of the group implicitly \
                      requires this resource.",
            params: &[
                ParamDoc {
                    name: "name",
                    ty: "string",
                    default: "required",
                    doc: "The group's name (letters, digits, `+_.-`).",
                },
                ParamDoc {
                    name: "pvs",
                    ty: "list of absolute paths",
                    default: "required",
                    doc: "The devices of the group.",
                },
                ParamDoc {
                    name: "pe_size",
                    ty: "size",
                    default: "LVM's (4 MiB)",
                    doc: "The extent size, used when the group is created.",
                },
                ParamDoc {
                    name: "pvresize",
                    ty: "bool",
                    default: "false",
                    doc: "Grow each PV to fill its device when the device is larger.",
                },
            ],
            example: "- id: fast-vg\n  lvm.vg:\n    name: vg_fast\n    pvs: [/dev/nvme0n1]\n    pvresize: true\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        if let Some(why) = invalid_name(&p.name) {
            cx.error(
                "name",
                "plumb::plan::invalid_value",
                format!("invalid volume group name `{}`: {why}", p.name),
                None,
            );
        }
        if p.pvs.is_empty() {
            cx.error(
                "pvs",
                "plumb::plan::invalid_value",
                "a volume group needs at least one device in `pvs`",
                None,
            );
        }
        for (i, d) in p.pvs.iter().enumerate() {
            cx.require_device(&format!("pvs.{i}"), d);
            if d.contains([',', ' ', '\n']) {
                cx.error(
                    &format!("pvs.{i}"),
                    "plumb::plan::invalid_value",
                    format!("invalid device path `{d}`"),
                    None,
                );
            }
            if p.pvs[..i].contains(d) {
                cx.error(
                    &format!("pvs.{i}"),
                    "plumb::plan::invalid_value",
                    format!("`{d}` is listed twice"),
                    None,
                );
            }
        }
        if let Some(Size(s)) = p.pe_size {
            if !s.is_power_of_two() || s < 1024 {
                cx.error(
                    "pe_size",
                    "plumb::plan::invalid_value",
                    format!(
                        "the extent size must be a power of two of at least 1K, found {}",
                        human(s)
                    ),
                    Some("LVM's default is `4M`".into()),
                );
            }
        }
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            provides: vec![Claim::Key("vg", p.name.clone())],
            needs: p.pvs.iter().map(|d| Claim::Key("blockdev", d.clone())).collect(),
            manages: std::iter::once(Claim::Key("volume group", p.name.clone()))
                .chain(p.pvs.iter().map(|d| Claim::Key("physical volume", d.clone())))
                .collect(),
        }
    }

    fn probe(p: &Params) -> Sh {
        let mut s = lvm::env().raw("exec 3>&1\n");
        for (i, d) in p.pvs.iter().enumerate() {
            s.line(&blockdev::probe(&format!("pv{i}"), d));
        }
        s.line(&Sh::raw_start("echo --"));
        // Every PV, with its group's columns: one report for both.
        s.line(&lvm::report_section(
            "pvs",
            "pvs_status",
            &Sh::raw_start(
                "pvs --reportformat json --units b --nosuffix -o pv_name,vg_name,pv_major,pv_minor,pv_pe_count,pe_start,dev_size,vg_extent_size,vg_missing_pv_count",
            ),
        ));
        s
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let devices = (0..p.pvs.len())
            .map(|i| blockdev::parse(&format!("pv{i}"), &f))
            .collect::<Result<Vec<_>, _>>()?;
        let sec = sections(out.body().unwrap_or_default(), "");
        lvm::status(sec.get("pvs_status"))?;
        let report = rows(&String::from_utf8_lossy(sec.get("pvs").map_or(&[][..], |v| v)), "pv")?;
        let group = match report.iter().find(|r| text(r, "vg_name") == p.name) {
            Some(r) => Some(GroupInfo {
                extent: num(r, "vg_extent_size")?,
                missing_pvs: num(r, "vg_missing_pv_count")?,
            }),
            None => None,
        };
        let wanted: Vec<&str> = devices.iter().filter_map(|d| d.majmin.as_deref()).collect();
        let mut pvs = Vec::new();
        for r in report {
            let vg = text(&r, "vg_name");
            // A missing PV of another group has no device numbers: skip it.
            let (Ok(major), Ok(minor)) = (num(&r, "pv_major"), num(&r, "pv_minor")) else {
                continue;
            };
            let majmin = format!("{major}:{minor}");
            if vg != p.name && !wanted.contains(&majmin.as_str()) {
                continue;
            }
            pvs.push(PhysicalVolume {
                name: text(&r, "pv_name"),
                vg,
                majmin,
                pe_count: num(&r, "pv_pe_count")?,
                pe_start: num(&r, "pe_start")?,
                dev_size: num(&r, "dev_size")?,
            });
        }
        Ok(State { group, pvs, devices })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        if let Some(g) = &s.group {
            if g.missing_pvs > 0 {
                return Err(
                    Failure::from(format!("volume group `{}` has {} missing PV(s)", p.name, g.missing_pvs))
                        .with_hint("repair it (vgreduce --removemissing, or bring the disk back) first"),
                );
            }
        }
        for (name, d) in p.pvs.iter().zip(&s.devices) {
            if !d.exists() {
                return Err(Failure::from(format!(
                    "device `{name}` does not exist (or is not a block device)"
                )));
            }
            match s.pv_of(d) {
                Some(pv) if pv.vg == p.name || pv.vg.is_empty() => {}
                Some(pv) => {
                    return Err(Failure::from(format!(
                        "`{name}` is a physical volume of another volume group, `{}`: plumb does not move PVs between groups",
                        pv.vg
                    )))
                }
                None => {
                    if let Some(what) = d.holds() {
                        return Err(Failure::from(format!(
                            "`{name}` holds {what}: refusing to make it a physical volume"
                        ))
                        .with_hint("wipe it yourself if its data is not needed"));
                    }
                    if let Some(m) = &d.mount {
                        return Err(Failure::from(format!("`{name}` is mounted at `{m}`")));
                    }
                }
            }
        }
        Ok(())
    }

    type Plan = VgPlan;

    fn plan(p: &Params, s: &State) -> VgPlan {
        let fresh = p
            .pvs
            .iter()
            .zip(&s.devices)
            .filter(|(_, d)| s.pv_of(d).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let Some(g) = &s.group else {
            return VgPlan {
                pvcreate: fresh,
                create: true,
                extend: Vec::new(),
                pvresize: Vec::new(),
            };
        };
        let extend = p
            .pvs
            .iter()
            .zip(&s.devices)
            .filter(|(_, d)| s.pv_of(d).is_none_or(|pv| pv.vg != p.name))
            .map(|(n, _)| n.clone())
            .collect();
        let pvresize = if p.pvresize {
            p.pvs
                .iter()
                .zip(&s.devices)
                .filter(|(_, d)| s.pv_of(d).is_some_and(|pv| pv.vg == p.name && pv.growth(g.extent) > 0))
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            Vec::new()
        };
        VgPlan {
            pvcreate: fresh,
            create: false,
            extend,
            pvresize,
        }
    }

    /// What apply changes, then the drift plumb only reports.
    fn changes(p: &Params, s: &State, _plan: &VgPlan) -> Changes {
        let mut c = to_converge(p, s);
        c.items.extend(drift(p, s));
        c
    }

    /// Drift that plumb reports but never acts on (a PV outside the plan,
    /// another extent size) does not fail a run.
    fn verify(p: &Params, after: &State) -> Changes {
        to_converge(p, after)
    }

    fn apply(p: &Params, s: &State, plan: &VgPlan) -> Vec<Step> {
        // Every command sees only this group's devices (`--devices`): LVM
        // refuses to change anything while *any* group it sees has lost a
        // PV, and another group on the host is none of this plan's business.
        let mut seen: Vec<String> = p.pvs.clone();
        for pv in s.pvs.iter().filter(|pv| pv.vg == p.name) {
            if !seen.contains(&pv.name) {
                seen.push(pv.name.clone());
            }
        }
        let devices = seen.join(",");
        let mut sh = lvm::env().raw("set -e\n");
        let mut label = Vec::new();
        for d in &plan.pvcreate {
            sh.line(&Sh::raw_start("pvcreate -q --devices").arg(&devices).arg(d));
        }
        if plan.create {
            let mut cmd = Sh::raw_start("vgcreate -q --devices").arg(&devices);
            if let Some(Size(b)) = p.pe_size {
                cmd = cmd.raw(" -s").arg(format!("{b}b"));
            }
            cmd = cmd.arg(&p.name);
            for d in &p.pvs {
                cmd = cmd.arg(d);
            }
            sh.line(&cmd);
            label.push(format!("vgcreate {}", p.name));
        }
        if !plan.extend.is_empty() {
            let mut cmd = Sh::raw_start("vgextend -q --devices").arg(&devices).arg(&p.name);
            for d in &plan.extend {
                cmd = cmd.arg(d);
            }
            sh.line(&cmd);
            label.push(format!("vgextend {}", p.name));
        }
        for name in &plan.pvresize {
            sh.line(&Sh::raw_start("pvresize -q --devices").arg(&devices).arg(name));
            label.push(format!("pvresize {name}"));
        }
        if label.is_empty() {
            return Vec::new();
        }
        vec![Step::run(label.join(", "), sh)]
    }

    fn reprobe_after_requirements() -> bool {
        true
    }
}

/// What apply changes.
fn to_converge(p: &Params, s: &State) -> Changes {
    let mut c = Changes::none();
    let Some(g) = &s.group else {
        let total: u64 = s.devices.iter().map(|d| d.size).sum();
        let pe = p
            .pe_size
            .map(|Size(b)| format!(", extents of {}", human(b)))
            .unwrap_or_default();
        let size = if total > 0 {
            format!(" ({} in all{pe})", human(total))
        } else {
            pe
        };
        c.push(Change::new(
            "vg",
            None,
            Some(format!("{} on {}{size}", p.name, p.pvs.join(", "))),
        ));
        return c;
    };
    for (name, d) in p.pvs.iter().zip(&s.devices) {
        match s.pv_of(d) {
            Some(pv) if pv.vg == p.name => {
                let more = pv.growth(g.extent);
                if p.pvresize && more > 0 {
                    c.push(Change::new(
                        format!("pv {name}"),
                        Some(human(pv.pe_count * g.extent)),
                        Some(format!("{} (pvresize)", human((pv.pe_count + more) * g.extent))),
                    ));
                }
            }
            _ => c.push(Change::new(
                format!("pv {name}"),
                None,
                Some(format!("added to {} ({})", p.name, human(d.size))),
            )),
        }
    }
    c
}

/// What differs and stays: reported, never changed.
fn drift(p: &Params, s: &State) -> Vec<Change> {
    let mut out = Vec::new();
    let Some(g) = &s.group else {
        return out;
    };
    let planned: Vec<&str> = s.devices.iter().filter_map(|d| d.majmin.as_deref()).collect();
    for pv in s
        .pvs
        .iter()
        .filter(|pv| pv.vg == p.name && !planned.contains(&pv.majmin.as_str()))
    {
        out.push(Change::new(
            format!("pv {}", pv.name),
            Some(format!("in {}", p.name)),
            Some("not in `pvs`: kept (plumb never removes a PV; add it to the plan or vgreduce it)".into()),
        ));
    }
    if let Some(Size(want)) = p.pe_size {
        if want != g.extent {
            out.push(Change::new(
                "pe_size",
                Some(human(g.extent)),
                Some(format!(
                    "{} (kept: the extent size is set when the group is created)",
                    human(want)
                )),
            ));
        }
    }
    out
}
