//! What the storage modules observe about a block device: whether it exists,
//! its size, its signature (blkid's low-level probe, which reads the device
//! itself rather than a cache), where it is mounted, and how big the
//! filesystem on it is. Also the shell that grows a filesystem to fill its
//! device, shared by `filesystem` (`grow: true`) and `lvm.lv` (`grow_fs`).

use plumb_engine::module::Fields;
use plumb_engine::shell::Sh;
use serde::Serialize;

use crate::size::human;

/// Filesystems plumb creates and grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FsType {
    /// ext4 (grown online or offline with resize2fs).
    Ext4,
    /// XFS (grown online only; plumb mounts it at a temporary place if needed; never shrunk).
    Xfs,
    /// Btrfs (grown online; plumb mounts it at a temporary place if needed).
    Btrfs,
}

impl<'de> serde::Deserialize<'de> for FsType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        match s.as_str() {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            "btrfs" => Ok(FsType::Btrfs),
            other => {
                let names = ["ext4", "xfs", "btrfs"];
                let help = plumb_engine::diag::did_you_mean(other, names)
                    .unwrap_or_else(|| "plumb creates and grows `ext4`, `xfs` and `btrfs`".into());
                Err(serde::de::Error::custom(format!(
                    "unsupported filesystem type `{other}`: expected `ext4`, `xfs` or `btrfs`\nhelp: {help}"
                )))
            }
        }
    }
}

impl FsType {
    /// The name blkid and mount use.
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }

    /// The type of a blkid `TYPE`, when plumb can grow it (ext2 and ext3
    /// are grown like ext4).
    #[must_use]
    pub(crate) fn growable(blkid_type: &str) -> Option<FsType> {
        match blkid_type {
            "ext2" | "ext3" | "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            "btrfs" => Some(FsType::Btrfs),
            _ => None,
        }
    }
}

/// A block device as a probe saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct BlockDevice {
    /// The canonical path (`/dev/dm-3` for `/dev/vg/lv`); `None`: no such block device.
    pub(crate) real: Option<String>,
    /// Size in bytes.
    pub(crate) size: u64,
    /// `major:minor`.
    pub(crate) majmin: Option<String>,
    /// Where it is mounted (the first mount point), if it is.
    pub(crate) mount: Option<String>,
    /// blkid's `TYPE` (`ext4`, `LVM2_member`, …).
    pub(crate) sig_type: Option<String>,
    /// blkid's `PTTYPE` (a partition table).
    pub(crate) pt_type: Option<String>,
    /// blkid found several signatures and would not choose.
    pub(crate) ambivalent: bool,
    /// blkid's `LABEL`.
    pub(crate) label: Option<String>,
    /// blkid's `UUID`.
    pub(crate) uuid: Option<String>,
    /// The filesystem's own size, for the types plumb grows.
    pub(crate) fs_bytes: Option<u64>,
    /// Bytes of the device the filesystem does not use that a grow would
    /// not claim either (the filesystem's own rounding).
    pub(crate) fs_tolerance: u64,
}

impl BlockDevice {
    /// Whether the device exists.
    #[must_use]
    pub(crate) fn exists(&self) -> bool {
        self.real.is_some()
    }

    /// What the device holds, in words (`an ext4 filesystem`, `a gpt
    /// partition table`, `several signatures`), or `None` when blank.
    #[must_use]
    pub(crate) fn holds(&self) -> Option<String> {
        if self.ambivalent {
            return Some("several signatures (blkid would not choose)".into());
        }
        if let Some(t) = &self.sig_type {
            let what = match t.as_str() {
                "LVM2_member" => "an LVM physical volume".to_string(),
                "swap" => "a swap area".to_string(),
                "crypto_LUKS" => "a LUKS encrypted volume".to_string(),
                "linux_raid_member" => "a RAID member".to_string(),
                other => format!("{} {other} filesystem", article(other)),
            };
            let uuid = self.uuid.as_ref().map(|u| format!(" (UUID {u})")).unwrap_or_default();
            return Some(format!("{what}{uuid}"));
        }
        self.pt_type.as_ref().map(|p| format!("a {p} partition table"))
    }

    /// How much a grow would add, when it would add anything.
    #[must_use]
    pub(crate) fn growth(&self) -> Option<u64> {
        let fs = self.fs_bytes?;
        let slack = self.size.saturating_sub(fs);
        (slack > self.fs_tolerance).then_some(slack)
    }

    /// `1.5 GiB → 2 GiB` for a change line.
    #[must_use]
    pub(crate) fn growth_line(&self) -> Option<(String, String)> {
        self.growth()
            .map(|_| (human(self.fs_bytes.unwrap_or(0)), human(self.size)))
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) {
        "an"
    } else {
        "a"
    }
}

/// Shell that prints `P.real=`, `P.size=`, `P.majmin=`, `P.mount=`, blkid's fields as
/// `P.blkid.KEY=` and the filesystem's size fields as `P.fs.KEY=`, for
/// device `dev`, with `P` = `prefix`. Read-only.
pub(crate) fn probe(prefix: &str, dev: &str) -> Sh {
    Sh::raw_start("pfx=")
        .val(prefix)
        .raw("; dev=")
        .val(dev)
        .raw("\n")
        .raw(PROBE)
}

/// The probe's shell (`$pfx` and `$dev` set). Few programs run: on a slow
/// host (or an emulated one) each costs more than everything else, so the
/// device's numbers, canonical name and size come from stat and sysfs, and
/// outputs are split with shell builtins.
const PROBE: &str = r#"if [ -b "$dev" ]; then
  mm=$(stat -L -c '%t %T' -- "$dev")
  maj=$((0x${mm% *})); min=$((0x${mm#* }))
  sys=/sys/dev/block/$maj:$min
  echo "$pfx.majmin=$maj:$min"
  real=
  while IFS== read -r k v; do [ "$k" = DEVNAME ] && real=/dev/$v; done < "$sys/uevent"
  echo "$pfx.real=${real:-$dev}"
  read -r sectors < "$sys/size" && echo "$pfx.size=$((sectors * 512))"
  mnt=$(findmnt -n -o TARGET --first-only -S "${real:-$dev}" 2>/dev/null)
  echo "$pfx.mount=$mnt"
  sig=$(blkid -p -o export -- "$dev" 2>/dev/null); echo "$pfx.blkid.rc=$?"
  type=
  saved_ifs=$IFS; IFS='
'; set -f
  for line in $sig; do
    case $line in [A-Z_]*=*) echo "$pfx.blkid.$line" ;; esac
    case $line in TYPE=*) type=${line#TYPE=} ;; esac
  done
  IFS=$saved_ifs; set +f
  case "$type" in
  ext2|ext3|ext4) dumpe2fs -h -- "$dev" 2>/dev/null | while IFS=: read -r k v; do
      case $k in "Block count"|"Block size"|"First block"|"Blocks per group"|"Inode blocks per group"|"Reserved GDT blocks"|"Filesystem features")
        v=${v#"${v%%[! ]*}"}; echo "$pfx.fs.$k=$v" ;;
      esac
    done ;;
  xfs) { if [ -n "$mnt" ]; then xfs_spaceman -p xfs_info -c info "$mnt"; else xfs_db -r -p xfs_info -c info "${real:-$dev}"; fi; } 2>/dev/null |
    while read -r first rest; do
      [ "$first" = data ] || continue
      for w in $rest; do case $w in bsize=*) echo "$pfx.fs.bsize=${w#bsize=}" ;; blocks=*) w=${w#blocks=}; echo "$pfx.fs.blocks=${w%,}" ;; esac; done
      break
    done ;;
  btrfs) btrfs filesystem show --raw "${real:-$dev}" 2>/dev/null | while read -r w1 id w3 bytes rest; do
      [ "$w1" = devid ] || continue
      if [ "$(stat -L -c '%t %T' -- "${rest##* }" 2>/dev/null)" = "$mm" ]; then echo "$pfx.fs.devid=$id"; echo "$pfx.fs.bytes=$bytes"; fi
    done ;;
  esac
fi"#;

/// Read what [`probe`] printed under `prefix`.
///
/// # Errors
/// The output is not what the probe prints.
pub(crate) fn parse(prefix: &str, f: &Fields) -> Result<BlockDevice, String> {
    let get = |k: &str| f.get(&format!("{prefix}.{k}")).map(str::to_string);
    let Some(real) = get("real") else {
        return Ok(BlockDevice::default());
    };
    let num = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("unexpected probe output: {prefix}.{k}={v}"))
            })
            .transpose()
    };
    let size = num("size")?.ok_or_else(|| format!("unexpected probe output: no size for {real}"))?;
    let rc = num("blkid.rc")?.unwrap_or(0);
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let sig_type = nonempty(get("blkid.TYPE"));
    let mut d = BlockDevice {
        size,
        mount: nonempty(get("mount")),
        majmin: nonempty(get("majmin")),
        pt_type: nonempty(get("blkid.PTTYPE")),
        ambivalent: rc == 8,
        label: nonempty(get("blkid.LABEL")),
        uuid: nonempty(get("blkid.UUID")),
        fs_bytes: None,
        fs_tolerance: 0,
        sig_type: sig_type.clone(),
        real: Some(real),
    };
    match sig_type.as_deref().and_then(FsType::growable) {
        Some(FsType::Ext4) => {
            if let (Some(count), Some(bsize)) = (num("fs.Block count")?, num("fs.Block size")?) {
                d.fs_bytes = Some(count * bsize);
                let first = num("fs.First block")?.unwrap_or(0);
                let per_group = num("fs.Blocks per group")?.unwrap_or(8 * bsize);
                let inode_blocks = num("fs.Inode blocks per group")?.unwrap_or(0);
                let gdt = num("fs.Reserved GDT blocks")?.unwrap_or(0);
                let wide = get("fs.Filesystem features").is_some_and(|x| x.split_whitespace().any(|w| w == "64bit"));
                let target = ext_resize_target(size / bsize, first, per_group, inode_blocks, gdt, wide, bsize);
                d.fs_tolerance = (size / bsize).saturating_sub(target) * bsize + bsize - 1;
            }
        }
        Some(FsType::Xfs) => {
            if let (Some(blocks), Some(bsize)) = (num("fs.blocks")?, num("fs.bsize")?) {
                d.fs_bytes = Some(blocks * bsize);
                d.fs_tolerance = XFS_TOLERANCE;
            }
        }
        Some(FsType::Btrfs) => {
            d.fs_bytes = num("fs.bytes")?;
            d.fs_tolerance = BTRFS_TOLERANCE;
        }
        None => {}
    }
    Ok(d)
}

/// XFS leaves the end of a device unused when it is smaller than its
/// smallest allocation group (mkfs.xfs drops a last group under 16 MiB), so
/// less than that is not worth a grow: the filesystem counts as filling its
/// device.
const XFS_TOLERANCE: u64 = 16 << 20;

/// Btrfs rounds the device down to its sector size; a grow of less than this
/// gains nothing worth a change.
const BTRFS_TOLERANCE: u64 = 1 << 20;

/// The block count resize2fs (and mke2fs) give an ext2/3/4 filesystem on a
/// device of `dev_blocks` blocks: a last block group too small to hold its
/// own metadata and 50 blocks is left out. The metadata of the last group
/// is counted as if it held a superblock backup (the larger case), so the
/// target is never above what resize2fs would reach.
fn ext_resize_target(
    dev_blocks: u64,
    first: u64,
    per_group: u64,
    inode_blocks: u64,
    reserved_gdt: u64,
    wide_descriptors: bool,
    bsize: u64,
) -> u64 {
    if per_group == 0 || dev_blocks <= first {
        return dev_blocks;
    }
    let groups = (dev_blocks - first).div_ceil(per_group);
    let desc_size = if wide_descriptors { 64 } else { 32 };
    let desc_blocks = (groups * desc_size).div_ceil(bsize.max(1));
    let overhead = 2 + inode_blocks + 1 + desc_blocks + reserved_gdt;
    let rem = (dev_blocks - first) % per_group;
    if groups > 1 && rem != 0 && rem < overhead + 50 {
        dev_blocks - rem
    } else {
        dev_blocks
    }
}

/// Shell that grows the filesystem of type `fs` on `dev` to fill the
/// device: online when it is mounted, else offline (ext4, after a forced
/// check) or mounted at a temporary place for the time of the grow (XFS and
/// Btrfs grow only while mounted). Fails on any error.
pub(crate) fn grow_script(dev: &str, fs: FsType) -> Sh {
    let head = Sh::raw_start("real=$(readlink -f --")
        .arg(dev)
        .raw(")\nmnt=$(findmnt -n -o TARGET --first-only -S \"$real\" 2>/dev/null || true)\n");
    let body = match fs {
        FsType::Ext4 => {
            "if [ -n \"$mnt\" ]; then resize2fs \"$real\"\n\
             else\n  e2fsck -f -p \"$real\" || [ $? -le 1 ]\n  resize2fs \"$real\"\nfi"
        }
        FsType::Xfs => {
            "tmpmnt=\nif [ -z \"$mnt\" ]; then tmpmnt=$(mktemp -d \"${TMPDIR:-/tmp}/plumb-grow.XXXXXX\"); mount -t xfs \"$real\" \"$tmpmnt\"; mnt=$tmpmnt; fi\n\
             rc=0; xfs_growfs \"$mnt\" >/dev/null || rc=$?\n\
             if [ -n \"$tmpmnt\" ]; then umount \"$tmpmnt\"; rmdir \"$tmpmnt\"; fi\n\
             [ \"$rc\" = 0 ]"
        }
        FsType::Btrfs => {
            "tmpmnt=\nif [ -z \"$mnt\" ]; then tmpmnt=$(mktemp -d \"${TMPDIR:-/tmp}/plumb-grow.XXXXXX\"); mount -t btrfs \"$real\" \"$tmpmnt\"; mnt=$tmpmnt; fi\n\
             devid=$(btrfs filesystem show --raw \"$real\" | awk '$1 == \"devid\" {print $2, $NF}' | while read -r id path; do if [ \"$(readlink -f -- \"$path\")\" = \"$real\" ]; then echo \"$id\"; fi; done)\n\
             rc=0; btrfs filesystem resize \"${devid:-1}:max\" \"$mnt\" >/dev/null || rc=$?\n\
             if [ -n \"$tmpmnt\" ]; then umount \"$tmpmnt\"; rmdir \"$tmpmnt\"; fi\n\
             [ \"$rc\" = 0 ]"
        }
    };
    head.then(&Sh::raw_start(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_leaves_out_a_last_group_too_small_for_its_metadata() {
        // 4 KiB blocks, 32768 per group, 512 inode blocks: a 40-block tail is dropped.
        let t = ext_resize_target(3 * 32768 + 40, 0, 32768, 512, 1024, true, 4096);
        assert_eq!(t, 3 * 32768);
        // A tail big enough for its metadata is used.
        let t = ext_resize_target(3 * 32768 + 4000, 0, 32768, 512, 1024, true, 4096);
        assert_eq!(t, 3 * 32768 + 4000);
        // A single group is never cut.
        assert_eq!(ext_resize_target(5000, 0, 32768, 512, 0, true, 4096), 5000);
    }

    #[test]
    fn blank_and_foreign_devices_are_described() {
        let mut d = BlockDevice {
            real: Some("/dev/loop0".into()),
            ..BlockDevice::default()
        };
        assert_eq!(d.holds(), None);
        d.sig_type = Some("xfs".into());
        d.uuid = Some("u-1".into());
        assert_eq!(d.holds().as_deref(), Some("an xfs filesystem (UUID u-1)"));
        d.sig_type = Some("LVM2_member".into());
        assert_eq!(d.holds().as_deref(), Some("an LVM physical volume (UUID u-1)"));
    }
}
