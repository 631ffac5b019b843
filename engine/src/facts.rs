//! Facts: what plumb reads from a host (hostname, OS, kernel, CPUs, memory,
//! mounts with their usage, block devices), gathered with one script and
//! only when a plan uses them.
//!
//! Templates and `when` see them as `facts.…`; the `assert` module reads them
//! fresh in its own probe (so a check after a change sees the new state).

use serde_json::{json, Map, Value};

use crate::shell::Sh;

/// The script that prints every fact (POSIX sh, util-linux, coreutils).
#[must_use]
pub fn probe() -> Sh {
    Sh::raw_start(
        "echo \"hostname=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)\"\n\
         if [ -r /etc/os-release ]; then . /etc/os-release; fi\n\
         echo \"os_id=${ID:-unknown}\"\n\
         echo \"os_version=${VERSION_ID:-}\"\n\
         echo \"kernel=$(uname -r)\"\n\
         echo \"cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)\"\n\
         while read -r k v _; do [ \"$k\" = MemTotal: ] && echo \"memory_kb=$v\"; done < /proc/meminfo\n\
         echo @@facts:mounts\n\
         findmnt -J -b -l -o TARGET,SOURCE,FSTYPE,SIZE,AVAIL,USED 2>/dev/null || echo '{}'\n\
         echo @@facts:blockdevs\n\
         lsblk -J -b -o NAME,PATH,SIZE,TYPE,FSTYPE,MOUNTPOINT 2>/dev/null || echo '{}'\n\
         echo @@facts:end",
    )
}

/// Read the probe's output into the `facts` value.
///
/// # Errors
/// The output is not what [`probe`] prints.
pub fn parse(out: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(out);
    let (head, rest) = text.split_once("@@facts:mounts\n").ok_or("facts: no mounts section")?;
    let (mounts, rest) = rest
        .split_once("@@facts:blockdevs\n")
        .ok_or("facts: no block devices section")?;
    let (blockdevs, _) = rest.split_once("@@facts:end").ok_or("facts: truncated output")?;
    let field = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let num = |s: &str| s.parse::<u64>().ok();
    let mut facts = Map::new();
    facts.insert("hostname".into(), field("hostname").into());
    facts.insert(
        "os".into(),
        json!({"id": field("os_id"), "version": field("os_version")}),
    );
    facts.insert("kernel".into(), field("kernel").into());
    facts.insert("cpus".into(), num(&field("cpus")).map_or(Value::Null, Into::into));
    facts.insert(
        "memory_bytes".into(),
        num(&field("memory_kb")).map_or(Value::Null, |kb| (kb * 1024).into()),
    );
    facts.insert("mounts".into(), parse_mounts(mounts)?);
    facts.insert("block_devices".into(), parse_blockdevs(blockdevs)?);
    Ok(Value::Object(facts))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_mounts(json_text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(json_text.trim()).map_err(|e| format!("facts: findmnt output: {e}"))?;
    let mut mounts = Map::new();
    for fs in v["filesystems"].as_array().into_iter().flatten() {
        let Some(target) = fs["target"].as_str() else { continue };
        let size = as_u64(&fs["size"]);
        let avail = as_u64(&fs["avail"]);
        let used = as_u64(&fs["used"]);
        // df's Use%: used / (used + avail), rounded up.
        let used_pct = match (used, avail) {
            (Some(u), Some(a)) if u + a > 0 => Value::from((u * 100).div_ceil(u + a)),
            _ => Value::Null,
        };
        mounts.insert(
            target.to_string(),
            json!({
                "device": fs["source"],
                "fstype": fs["fstype"],
                "size_bytes": size,
                "avail_bytes": avail,
                "used_pct": used_pct,
            }),
        );
    }
    Ok(Value::Object(mounts))
}

fn parse_blockdevs(json_text: &str) -> Result<Value, String> {
    fn walk(list: &Value, out: &mut Vec<Value>) {
        for d in list.as_array().into_iter().flatten() {
            out.push(json!({
                "name": d["name"],
                "path": d["path"],
                "size_bytes": as_u64(&d["size"]),
                "type": d["type"],
                "fstype": d["fstype"],
                "mountpoint": d["mountpoint"],
            }));
            walk(&d["children"], out);
        }
    }
    let v: Value = serde_json::from_str(json_text.trim()).map_err(|e| format!("facts: lsblk output: {e}"))?;
    let mut out = Vec::new();
    walk(&v["blockdevices"], &mut out);
    Ok(Value::Array(out))
}

/// Whether `text` (a template or an expression) reads facts.
#[must_use]
pub fn mentions_facts(text: &str) -> bool {
    text.match_indices("facts").any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + 5..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_host_has_facts() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe().as_str())
            .output()
            .unwrap();
        let f = parse(&out.stdout).unwrap();
        assert!(f["cpus"].as_u64().unwrap() >= 1, "{f}");
        assert!(f["memory_bytes"].as_u64().unwrap() > 1 << 20);
        assert!(!f["kernel"].as_str().unwrap().is_empty());
        let root = &f["mounts"]["/"];
        assert!(root["size_bytes"].as_u64().unwrap() > 0, "{root}");
        assert!(root["used_pct"].as_u64().unwrap() <= 100);
    }

    #[test]
    fn mentions_are_whole_words() {
        assert!(mentions_facts("{{ facts.hostname }}"));
        assert!(mentions_facts("facts['mounts']"));
        assert!(!mentions_facts("{{ artifacts }}"));
        assert!(!mentions_facts("{{ facts_dir }}"));
    }
}
