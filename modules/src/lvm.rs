//! What `lvm.vg` and `lvm.lv` share: LVM's JSON reports (sizes in bytes, as
//! strings), the rules for names, and the two paths of a logical volume.

use plumb_engine::shell::Sh;
use serde_json::{Map, Value};

use crate::stat::section_marker;

/// The prefix of every LVM command: no "File descriptor leaked" noise, and
/// reports in bytes.
pub(crate) fn env() -> Sh {
    Sh::raw_start("export LVM_SUPPRESS_FD_WARNINGS=1\n")
}

/// Shell that runs an LVM report command `cmd` with its JSON in section
/// `name` of the probe's body and its exit status and stderr in section
/// `NAME_status` (see [`status`]). Needs `exec 3>&1` before it.
pub(crate) fn report_section(name: &'static str, status_name: &'static str, cmd: &Sh) -> Sh {
    section_marker(name)
        .raw("\nerr=$(")
        .then(cmd)
        .raw(" 2>&1 >&3); rc=$?\n")
        .then(&section_marker(status_name))
        .raw("\nprintf '%s\\n%s\\n' \"$rc\" \"$err\"\n")
}

/// The exit status of a report command and, when it failed, why.
pub(crate) fn status(section: Option<&Vec<u8>>) -> Result<(), String> {
    let text = section
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next().map(str::trim) {
        Some("0") => Ok(()),
        Some("127") => Err("the LVM tools are not installed on the host (no `vgs`/`lvs`; install `lvm2`)".into()),
        rc => {
            let err: Vec<&str> = lines.map(str::trim).collect();
            Err(format!(
                "LVM report failed (exit {}): {}",
                rc.unwrap_or("?"),
                err[err.len().saturating_sub(4)..].join("; ")
            ))
        }
    }
}

/// The rows of a `--reportformat json` report (`kind` is `vg`, `pv` or `lv`).
pub(crate) fn rows(json: &str, kind: &str) -> Result<Vec<Map<String, Value>>, String> {
    let v: Value = serde_json::from_str(json.trim())
        .map_err(|e| format!("cannot read the LVM {kind} report ({e}): {}", json.trim()))?;
    let mut out = Vec::new();
    for r in v["report"].as_array().into_iter().flatten() {
        for row in r[kind].as_array().into_iter().flatten() {
            if let Some(m) = row.as_object() {
                out.push(m.clone());
            }
        }
    }
    Ok(out)
}

/// A text column of a report row.
pub(crate) fn text(row: &Map<String, Value>, key: &str) -> String {
    row.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A numeric column (LVM prints numbers as strings with `--nosuffix`).
pub(crate) fn num(row: &Map<String, Value>, key: &str) -> Result<u64, String> {
    let v = row.get(key).ok_or_else(|| format!("the LVM report has no `{key}`"))?;
    match v {
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("the LVM report's `{key}` is `{s}`")),
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("the LVM report's `{key}` is `{n}`")),
        other => Err(format!("the LVM report's `{key}` is `{other}`")),
    }
}

/// Why `name` cannot name a volume group or logical volume, if it cannot.
pub(crate) fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 127 {
        return Some("must be 1 to 127 characters long".into());
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return Some("must not be `.`, `..` or start with `-`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+_.-".contains(*c)))
    {
        return Some(format!("contains `{c}`; LVM names use letters, digits and `+_.-`"));
    }
    None
}

/// Why `name` cannot name a logical volume, if it cannot: the rules of
/// every LVM name, and the names lvm(8) reserves for its own volumes.
pub(crate) fn invalid_lv_name(name: &str) -> Option<String> {
    const RESERVED: [&str; 14] = [
        "_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata",
        "_tmeta", "_vdata", "_vorigin", "_wcorig",
    ];
    if let Some(why) = invalid_name(name) {
        return Some(why);
    }
    if let Some(prefix) = ["snapshot", "pvmove"].into_iter().find(|p| name.starts_with(p)) {
        return Some(format!("names starting with `{prefix}` are reserved by LVM"));
    }
    RESERVED
        .into_iter()
        .find(|r| name.contains(r))
        .map(|r| format!("contains `{r}`, which LVM reserves for its internal volumes"))
}

/// The device-mapper path of a logical volume: dashes inside each name are
/// doubled, and one dash joins them (`vg-fast`/`my-lv` →
/// `/dev/mapper/vg--fast-my--lv`).
pub(crate) fn mapper_path(vg: &str, lv: &str) -> String {
    format!("/dev/mapper/{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Split a device-mapper name made by [`mapper_path`] back into VG and LV.
fn split_mapper(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// Every path that names the same device, as far as the text tells: a
/// logical volume's `/dev/VG/LV` and `/dev/mapper/VG-LV`. Other paths are
/// their own only alias.
pub(crate) fn device_aliases(dev: &str) -> Vec<String> {
    let mut out = vec![dev.to_string()];
    if let Some(name) = dev.strip_prefix("/dev/mapper/") {
        if let Some((vg, lv)) = split_mapper(name) {
            out.push(format!("/dev/{vg}/{lv}"));
        }
    } else if let Some(rest) = dev.strip_prefix("/dev/") {
        if let Some((vg, lv)) = rest.split_once('/') {
            if invalid_name(vg).is_none() && invalid_name(lv).is_none() {
                out.push(mapper_path(vg, lv));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_report_is_read_or_refused_without_panicking(json in "\\PC{0,80}", kind in "lv|vg|pv") {
            if let Ok(rows) = rows(&json, &kind) {
                for r in &rows {
                    let _ = text(r, "lv_name");
                    let _ = num(r, "lv_size");
                }
            }
            let _ = status(Some(&json.clone().into_bytes()));
            let _ = device_aliases(&json);
        }

        #[test]
        fn a_volume_s_two_paths_name_each_other(vg in "[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]{0,10}", lv in "[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]{0,10}") {
            prop_assume!(invalid_name(&vg).is_none() && invalid_name(&lv).is_none());
            let mapper = mapper_path(&vg, &lv);
            prop_assert!(device_aliases(&mapper).contains(&format!("/dev/{vg}/{lv}")), "{}", mapper);
            let short = format!("/dev/{vg}/{lv}");
            prop_assert!(device_aliases(&short).contains(&mapper), "{}", short);
        }
    }

    #[test]
    fn mapper_names_double_their_dashes() {
        assert_eq!(mapper_path("vg_fast", "docker"), "/dev/mapper/vg_fast-docker");
        assert_eq!(mapper_path("vg-fast", "my-lv"), "/dev/mapper/vg--fast-my--lv");
        assert_eq!(
            device_aliases("/dev/mapper/vg--fast-my--lv"),
            vec!["/dev/mapper/vg--fast-my--lv", "/dev/vg-fast/my-lv"]
        );
        assert_eq!(
            device_aliases("/dev/vg-fast/my-lv"),
            vec!["/dev/vg-fast/my-lv", "/dev/mapper/vg--fast-my--lv"]
        );
        assert_eq!(device_aliases("/dev/sdb1"), vec!["/dev/sdb1"]);
        assert_eq!(device_aliases("/dev/disk/by-id/x"), vec!["/dev/disk/by-id/x"]);
    }

    #[test]
    fn names() {
        assert!(invalid_name("vg_fast").is_none());
        assert!(invalid_name("a b").is_some());
        assert!(invalid_name("-x").is_some());
        assert!(invalid_name("x;rm").is_some());
        assert!(invalid_lv_name("data").is_none());
        assert!(invalid_lv_name("snapshot1").unwrap().contains("reserved"));
        assert!(invalid_lv_name("pvmove").unwrap().contains("reserved"));
        assert!(invalid_lv_name("pool_tdata").unwrap().contains("`_tdata`"));
    }

    #[test]
    fn reports_read_sizes_from_strings() {
        let j = r#"{"report": [{"vg": [{"vg_name":"v", "vg_size":"62914560"}]}]}"#;
        let r = rows(j, "vg").unwrap();
        assert_eq!(text(&r[0], "vg_name"), "v");
        assert_eq!(num(&r[0], "vg_size"), Ok(62_914_560));
    }
}
