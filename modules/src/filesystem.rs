//! `filesystem`: a filesystem on a block device. A blank device (no
//! signature at all, as blkid's low-level probe sees it) is formatted; a
//! device that holds anything else is refused unless `force: true`, which
//! makes the change destructive. `grow: true` grows the filesystem to fill
//! its device, and does nothing when it already does (within the
//! filesystem's own rounding).

use plumb_engine::module::{
    Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, Prediction, ProbeOutput, Risk,
    Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Deserializer, Serialize};

use crate::blockdev::{self, BlockDevice, FsType};
use crate::lvm::device_aliases;
use crate::size::human;
use crate::stat::fields;

/// The `filesystem` module.
pub struct Filesystem;

/// Parameters of `filesystem`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    dev: String,
    #[serde(rename = "type")]
    fstype: FsType,
    label: Option<String>,
    #[serde(default)]
    mkfs_opts: MkfsOpts,
    #[serde(default)]
    grow: bool,
    #[serde(default)]
    force: bool,
}

/// Extra `mkfs` arguments: a list, or one string split at spaces (never
/// given to a shell as text).
#[derive(Debug, Default)]
pub struct MkfsOpts(Vec<String>);

impl<'de> Deserialize<'de> for MkfsOpts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MkfsOpts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MkfsOpts, E> {
                Ok(MkfsOpts(v.split_whitespace().map(str::to_string).collect()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<MkfsOpts, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(MkfsOpts(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    dev: BlockDevice,
}

/// The longest label each filesystem accepts, in bytes.
fn max_label(t: FsType) -> usize {
    match t {
        FsType::Ext4 => 16,
        FsType::Xfs => 12,
        FsType::Btrfs => 255,
    }
}

impl Params {
    fn matches(&self, d: &BlockDevice) -> bool {
        d.sig_type.as_deref() == Some(self.fstype.as_str()) && !d.ambivalent
    }
}

/// What to do to the device's filesystem, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsPlan {
    /// Make the filesystem (the device is new, blank, or holds another
    /// one that `force` may erase).
    Make,
    /// Keep it: relabel it, grow it to fill the device (both false:
    /// converged).
    Adjust {
        /// Set the wanted label.
        label: bool,
        /// Grow it.
        grow: bool,
    },
}

impl Module for Filesystem {
    const NAME: &'static str = "filesystem";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A filesystem on a block device. A device with no signature at all (as `blkid -p` reads \
                      it from the device itself) is formatted. A device that holds another filesystem, a \
                      partition table, an LVM or RAID member or any other signature is refused unless \
                      `force: true`, which erases it (a destructive change). With `grow: true` the filesystem \
                      is grown to fill its device (ext4 online or offline, XFS and Btrfs online: plumb mounts \
                      them at a temporary place when they are not mounted), and a filesystem that already \
                      fills its device is left alone: XFS may leave up to 16 MiB unused and ext4 a last block \
                      group too small for its metadata, as their own tools do. A mount of the same device \
                      implicitly requires this resource; this resource requires the `lvm.lv` that provides \
                      the device.",
            params: &[
                ParamDoc { name: "dev", ty: "absolute path", default: "required", doc: "The block device (`/dev/vg_fast/docker`, `/dev/sdb1`)." },
                ParamDoc { name: "type", ty: "ext4 | xfs | btrfs", default: "required", doc: "The filesystem." },
                ParamDoc { name: "label", ty: "string", default: "none", doc: "The filesystem label (at most 16 bytes for ext4, 12 for XFS); changed in place when it differs." },
                ParamDoc { name: "mkfs_opts", ty: "list of strings, or a string", default: "none", doc: "Extra arguments to mkfs when the filesystem is created (a string is split at spaces)." },
                ParamDoc { name: "grow", ty: "bool", default: "false", doc: "Grow the filesystem to fill its device when the device is larger." },
                ParamDoc { name: "force", ty: "bool", default: "false", doc: "Format the device even when it holds another signature (destructive). Never formats a mounted device." },
            ],
            example: "- id: docker-fs\n  filesystem:\n    dev: /dev/vg_fast/docker\n    type: ext4\n    label: docker\n    grow: true\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_device("dev", &p.dev);
        if let Some(l) = &p.label {
            let max = max_label(p.fstype);
            if l.len() > max {
                cx.error(
                    "label",
                    "plumb::plan::invalid_value",
                    format!(
                        "label `{l}` is {} bytes long; {} labels hold at most {max}",
                        l.len(),
                        p.fstype.as_str()
                    ),
                    None,
                );
            }
            if l.is_empty() || l.contains(['\n', '\0']) {
                cx.error(
                    "label",
                    "plumb::plan::invalid_value",
                    "a label must be a non-empty line",
                    None,
                );
            }
        }
    }

    fn claims(p: &Params) -> Claims {
        let aliases = device_aliases(&p.dev);
        let manages = aliases.iter().map(|d| Claim::Key("filesystem on", d.clone())).collect();
        let mut provides: Vec<Claim> = aliases.into_iter().map(|d| Claim::Key("fs", d)).collect();
        // A mount of `LABEL=x` needs the filesystem labelled x. (A UUID is
        // made by mkfs, so a plan cannot name it before.)
        if let Some(l) = &p.label {
            provides.push(Claim::Key("fs", format!("LABEL={l}")));
        }
        Claims {
            provides,
            needs: vec![Claim::Key("blockdev", p.dev.clone())],
            manages,
        }
    }

    fn probe(p: &Params) -> Sh {
        blockdev::probe("dev", &p.dev)
    }

    fn parse(_p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        Ok(State {
            dev: blockdev::parse("dev", &f)?,
        })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        let d = &s.dev;
        if !d.exists() {
            return Err(Failure::from(format!(
                "device `{}` does not exist (or is not a block device)",
                p.dev
            )));
        }
        if p.matches(d) {
            return Ok(());
        }
        if let Some(what) = d.holds() {
            if let Some(m) = &d.mount {
                return Err(Failure::from(format!(
                    "`{}` holds {what} and is mounted at `{m}`: plumb never formats a mounted device",
                    p.dev
                )));
            }
            if !p.force {
                return Err(Failure::from(format!(
                    "`{}` holds {what}, not {}: refusing to format it",
                    p.dev,
                    p.fstype.as_str()
                ))
                .with_hint("set `force: true` to erase it (destructive)"));
            }
        }
        Ok(())
    }

    type Plan = FsPlan;

    fn plan(p: &Params, s: &State) -> FsPlan {
        let d = &s.dev;
        if !d.exists() || !p.matches(d) {
            return FsPlan::Make;
        }
        FsPlan::Adjust {
            label: p.label.as_ref().is_some_and(|l| d.label.as_deref() != Some(l.as_str())),
            grow: p.grow && d.growth_line().is_some(),
        }
    }

    fn changes(p: &Params, s: &State, plan: &FsPlan) -> Changes {
        let d = &s.dev;
        let mut c = Changes::none();
        let want = match &p.label {
            Some(l) => format!("{} labelled `{l}`", p.fstype.as_str()),
            None => p.fstype.as_str().to_string(),
        };
        let (label, grow) = match *plan {
            FsPlan::Make if !d.exists() => {
                c.push(Change::new(
                    "filesystem",
                    None,
                    Some(format!("{want} on the new device")),
                ));
                return c;
            }
            FsPlan::Make => {
                c.push(match d.holds() {
                    None => Change::new(
                        "filesystem",
                        Some(format!("blank device ({})", human(d.size))),
                        Some(want),
                    ),
                    Some(what) => {
                        let to = if p.force {
                            format!("{want} (erases what is there)")
                        } else {
                            format!("{want} (refused without `force: true`)")
                        };
                        Change::new("filesystem", Some(what), Some(to)).risk(Risk::Destructive)
                    }
                });
                return c;
            }
            FsPlan::Adjust { label, grow } => (label, grow),
        };
        if let (true, Some(l)) = (label, &p.label) {
            c.push(Change::new("label", d.label.clone(), Some(l.clone())));
        }
        if let (true, Some((from, to))) = (grow, d.growth_line()) {
            c.push(
                Change::new("size", Some(from), Some(format!("{to} (grown to fill the device)")))
                    .risk(Risk::Disruptive),
            );
        }
        c
    }

    /// A device its requirement has not created yet will be blank. A grow
    /// depends on the device's size after the requirement is applied.
    fn predict(p: &Params, s: &State) -> Prediction<State> {
        if !s.dev.exists() {
            return Prediction::Assume(State {
                dev: BlockDevice::default(),
            });
        }
        if p.grow && p.matches(&s.dev) {
            return Prediction::Unknown(format!(
                "whether the filesystem on `{}` must grow depends on the device's new size",
                p.dev
            ));
        }
        Prediction::Probed
    }

    fn apply(p: &Params, s: &State, plan: &FsPlan) -> Vec<Step> {
        let mut steps = Vec::new();
        let FsPlan::Adjust { label, grow } = *plan else {
            steps.push(Step::run(
                format!("mkfs.{} {}", p.fstype.as_str(), p.dev),
                mkfs_script(p),
            ));
            return steps;
        };
        if let (true, Some(l)) = (label, &p.label) {
            steps.push(Step::run(
                format!("label {} `{l}`", p.dev),
                label_script(&p.dev, p.fstype, l, s.dev.mount.as_deref()),
            ));
        }
        if grow {
            steps.push(Step::run(
                format!("grow the {} filesystem on {}", p.fstype.as_str(), p.dev),
                Sh::raw_start("set -e\n").then(&blockdev::grow_script(&p.dev, p.fstype)),
            ));
        }
        steps
    }

    fn reprobe_after_requirements() -> bool {
        true
    }
}

fn mkfs_script(p: &Params) -> Sh {
    let mut s = Sh::raw_start("set -e\nreal=$(readlink -f --").arg(&p.dev).raw(")\n");
    if p.force {
        s.line(&Sh::raw_start(
            "if findmnt -S \"$real\" >/dev/null 2>&1; then echo \"plumb: $real is mounted; not formatting it\" >&2; exit 1; fi\nwipefs -a -q \"$real\"",
        ));
    } else {
        // The probe saw a blank device; check again right before formatting
        // so that nothing written since is ever lost.
        s.line(&Sh::raw_start(
            "if blkid -p \"$real\" >/dev/null 2>&1 || [ $? -ne 2 ]; then echo \"plumb: $real is no longer blank; not formatting it\" >&2; exit 1; fi",
        ));
    }
    let mut cmd = match p.fstype {
        FsType::Ext4 => Sh::raw_start("mkfs.ext4 -q -F"),
        FsType::Xfs => Sh::raw_start("mkfs.xfs -q"),
        FsType::Btrfs => Sh::raw_start("mkfs.btrfs -q"),
    };
    if p.force && p.fstype != FsType::Ext4 {
        cmd = cmd.raw(" -f");
    }
    if let Some(l) = &p.label {
        cmd = cmd.raw(" -L").arg(l);
    }
    for o in &p.mkfs_opts.0 {
        cmd = cmd.arg(o);
    }
    s.line(&cmd.raw(" \"$real\""));
    s
}

fn label_script(dev: &str, fs: FsType, label: &str, mount: Option<&str>) -> Sh {
    let s = Sh::raw_start("set -e\nreal=$(readlink -f --").arg(dev).raw(")\n");
    match (fs, mount) {
        (FsType::Ext4, _) => s.then(&Sh::raw_start("e2label \"$real\"").arg(label)),
        (FsType::Xfs, Some(m)) => s.then(&Sh::raw_start("xfs_io -c").arg(format!("label -s {label}")).arg(m)),
        (FsType::Xfs, None) => s.then(&Sh::raw_start("xfs_admin -L").arg(label).raw(" \"$real\"")),
        (FsType::Btrfs, Some(m)) => s.then(&Sh::raw_start("btrfs filesystem label").arg(m).arg(label)),
        (FsType::Btrfs, None) => s.then(&Sh::raw_start("btrfs filesystem label \"$real\"").arg(label)),
    }
}
