//! Reading and editing `/etc/fstab` as bytes: one entry is replaced, added
//! or removed, and every other byte of the file (comments, spacing, other
//! entries, a missing final newline) is kept exactly as it was.

/// One fstab entry, with its fields unescaped (`\040` is a space).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FstabEntry {
    pub(crate) src: String,
    pub(crate) path: String,
    pub(crate) fstype: String,
    pub(crate) opts: Vec<String>,
    pub(crate) dump: u32,
    pub(crate) passno: u32,
}

impl FstabEntry {
    /// The entry as an fstab line (no newline), fields separated by a tab.
    pub(crate) fn line(&self) -> String {
        let opts = if self.opts.is_empty() {
            "defaults".to_string()
        } else {
            self.opts.join(",")
        };
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            escape(&self.src),
            escape(&self.path),
            escape(&self.fstype),
            escape(&opts),
            self.dump,
            self.passno
        )
    }

    /// Whether two entries mean the same (options compared as a set, so a
    /// hand-written line in another order is not rewritten).
    pub(crate) fn same_as(&self, other: &FstabEntry) -> bool {
        fn set(o: &[String]) -> Vec<&str> {
            let mut v: Vec<&str> = o.iter().map(String::as_str).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        self.src == other.src
            && normalize(&self.path) == normalize(&other.path)
            && self.fstype == other.fstype
            && set(&self.opts) == set(&other.opts)
            && self.dump == other.dump
            && self.passno == other.passno
    }
}

/// A mount point without trailing slashes (`/` stays `/`).
pub(crate) fn normalize(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// Escape a field the way fstab(5) and libmount read it.
pub(crate) fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            '#' if out.is_empty() => out.push_str("\\043"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`escape`] (any `\NNN` octal escape).
pub(crate) fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one line; `None` for blank lines, comments and lines too short to
/// be entries.
pub(crate) fn parse_line(line: &[u8]) -> Option<FstabEntry> {
    let text = String::from_utf8_lossy(line);
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = t.split_whitespace().collect();
    if f.len() < 2 {
        return None;
    }
    Some(FstabEntry {
        src: unescape(f[0]),
        path: unescape(f[1]),
        fstype: f.get(2).map_or_else(|| "auto".to_string(), |s| unescape(s)),
        opts: f
            .get(3)
            .map(|o| unescape(o).split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        dump: f.get(4).and_then(|d| d.parse().ok()).unwrap_or(0),
        passno: f.get(5).and_then(|d| d.parse().ok()).unwrap_or(0),
    })
}

/// The lines of `text`, each with its newline (the last may have none).
fn lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.iter().position(|c| *c == b'\n').map_or(rest.len(), |i| i + 1);
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// The entries for mount point `path`: (line number from 1, entry, line as written).
pub(crate) fn entries_for(text: &[u8], path: &str) -> Vec<(usize, FstabEntry, String)> {
    lines(text)
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let e = parse_line(l)?;
            (normalize(&e.path) == normalize(path))
                .then(|| (i + 1, e, String::from_utf8_lossy(l).trim_end().to_string()))
        })
        .collect()
}

/// `text` with the entries for `path` replaced by `new` (in place of the
/// first one), or removed when `new` is `None`; `new` is appended when
/// there was no entry. Every other line is kept byte for byte.
pub(crate) fn rewrite(text: &[u8], path: &str, new: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 128);
    let mut placed = false;
    for l in lines(text) {
        let ours = parse_line(l).is_some_and(|e| normalize(&e.path) == normalize(path));
        if !ours {
            out.extend_from_slice(l);
            continue;
        }
        if let (Some(n), false) = (new, placed) {
            out.extend_from_slice(n.as_bytes());
            out.push(b'\n');
            placed = true;
        }
    }
    if let (Some(n), false) = (new, placed) {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FSTAB: &[u8] = b"# /etc/fstab: static file system information.\n\
UUID=abc /               ext4    errors=remount-ro 0       1\n\
\n\
/dev/sdb1  /srv\\040data  xfs  defaults,noatime  0 2   # trailing comment\n\
tmpfs /tmp tmpfs nosuid,nodev 0 0";

    fn entry(path: &str) -> FstabEntry {
        FstabEntry {
            src: "/dev/vg/docker".into(),
            path: path.into(),
            fstype: "ext4".into(),
            opts: vec!["defaults".into(), "noatime".into()],
            dump: 0,
            passno: 2,
        }
    }

    #[test]
    fn escaped_paths_are_found() {
        let e = entries_for(FSTAB, "/srv data/");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 4);
        assert_eq!(e[0].1.fstype, "xfs");
        assert_eq!(e[0].1.opts, vec!["defaults", "noatime"]);
        assert_eq!(e[0].1.passno, 2);
    }

    #[test]
    fn adding_keeps_every_other_byte_and_the_missing_newline_is_mended() {
        let line = entry("/var/lib/docker").line();
        let out = rewrite(FSTAB, "/var/lib/docker", Some(&line));
        assert!(out.starts_with(FSTAB));
        assert_eq!(&out[FSTAB.len()..], format!("\n{line}\n").as_bytes());
    }

    #[test]
    fn replacing_and_removing_touch_only_that_line() {
        let line = entry("/srv data").line();
        assert_eq!(line, "/dev/vg/docker\t/srv\\040data\text4\tdefaults,noatime\t0\t2");
        let out = rewrite(FSTAB, "/srv data", Some(&line));
        let want = String::from_utf8_lossy(FSTAB).replace(
            "/dev/sdb1  /srv\\040data  xfs  defaults,noatime  0 2   # trailing comment",
            &line,
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        let out = rewrite(FSTAB, "/srv data", None);
        let want = String::from_utf8_lossy(FSTAB).replace(
            "/dev/sdb1  /srv\\040data  xfs  defaults,noatime  0 2   # trailing comment\n",
            "",
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn option_order_does_not_matter() {
        let a = entry("/x");
        let mut b = entry("/x/");
        b.opts.reverse();
        assert!(a.same_as(&b));
        b.passno = 0;
        assert!(!a.same_as(&b));
    }

    proptest! {
        #[test]
        fn escape_round_trips(s in "\\PC{1,20}") {
            prop_assert_eq!(unescape(&escape(&s)), s);
        }

        #[test]
        fn any_line_reads_back(path in "/[a-z \\t\\\\#]{1,12}", src in "/dev/[a-z]{1,5}") {
            let e = FstabEntry { src, path: path.clone(), fstype: "ext4".into(), opts: vec!["defaults".into()], dump: 0, passno: 0 };
            let back = parse_line(e.line().as_bytes()).unwrap();
            prop_assert_eq!(back, e);
        }

        #[test]
        fn other_lines_survive_any_rewrite(lines in prop::collection::vec("[ -~]{0,30}", 0..8), path in "/[a-z]{1,6}") {
            let text = lines.join("\n");
            let others: Vec<&str> = text.lines()
                .filter(|l| parse_line(l.as_bytes()).is_none_or(|e| normalize(&e.path) != path)).collect();
            let out = rewrite(text.as_bytes(), &path, Some("new /x ext4 defaults 0 0"));
            let out = String::from_utf8(out).unwrap();
            let kept: Vec<&str> = out.lines().filter(|l| *l != "new /x ext4 defaults 0 0").collect();
            prop_assert_eq!(kept, others);
        }

        #[test]
        fn any_bytes_are_read_and_rewritten_once_and_for_all(
            text in prop::collection::vec(any::<u8>(), 0..400),
            path in "/[a-z \\\\]{0,6}",
            add in any::<bool>(),
        ) {
            let _ = entries_for(&text, &path);
            for l in lines(&text) {
                let _ = parse_line(l);
            }
            // What the mount module does: the line for `path`, or none.
            let line = entry(&path).line();
            let new = add.then_some(line.as_str());
            let once = rewrite(&text, &path, new);
            prop_assert_eq!(rewrite(&once, &path, new), once.clone(), "a second rewrite changes nothing");
            if new.is_none() {
                prop_assert!(entries_for(&once, &path).is_empty(), "no line for `{}` is left", path);
            }
        }
    }
}
