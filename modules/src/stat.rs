//! What the file-like modules observe about a path, read with `stat`.

use plumb_engine::module::{Account, Fields, FileType, ProbeOutput};
use plumb_engine::shell::Sh;
use serde::Serialize;

/// What is at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    None,
    File,
    Directory,
    Link,
    Other,
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::None => "absent",
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Link => "symlink",
            Kind::Other => "special file",
        }
    }
}

/// Type, permissions and ownership of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct PathInfo {
    pub(crate) kind: Kind,
    pub(crate) mode: Option<u32>,
    pub(crate) owner: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) size: Option<u64>,
}

/// What the engine observed of `path` (one of the module's
/// [`plumb_engine::module::Module::inspect`] paths), and its sha256 if it was
/// asked for and is a regular file.
pub(crate) fn observed(out: &ProbeOutput, path: &str) -> Result<(PathInfo, Option<String>), String> {
    Ok(match out.path(path)? {
        None => (
            PathInfo {
                kind: Kind::None,
                mode: None,
                owner: None,
                group: None,
                size: None,
            },
            None,
        ),
        Some(st) => (
            PathInfo {
                kind: match st.kind {
                    FileType::File => Kind::File,
                    FileType::Directory => Kind::Directory,
                    FileType::Symlink => Kind::Link,
                    FileType::Other => Kind::Other,
                },
                mode: Some(st.mode),
                owner: Some(st.owner.clone()),
                group: Some(st.group.clone()),
                size: Some(st.size),
            },
            st.sha256.clone(),
        ),
    })
}

/// Parse a probe's fields, failing on a non-zero probe status.
pub(crate) fn fields(out: &ProbeOutput) -> Result<Fields, String> {
    if out.status != 0 {
        return Err(format!(
            "probe exited with status {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(out.fields())
}

/// `chmod`/`chown`/`chgrp` lines for `$p`, for what differs, each followed
/// by the line that tells the engine it was done (see [`done`]). Run under
/// `set -e`.
pub(crate) fn metadata_script(
    path: &str,
    info: &PathInfo,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Option<Sh> {
    let mut s = Sh::new();
    if let Some(m) = mode.filter(|m| info.mode != Some(*m)) {
        s.line(&Sh::raw_start("chmod").arg(format!("{m:o}")).raw(" --").arg(path));
        s.line(&done(&format!("mode of {path} set to {m:04o}")));
    }
    if let Some(o) = owner.filter(|o| info.owner.as_deref() != Some(*o)) {
        s.line(&Sh::raw_start("chown").raw(" --").arg(o).arg(path));
        s.line(&done(&format!("owner of {path} set to {o}")));
    }
    if let Some(g) = group.filter(|g| info.group.as_deref() != Some(*g)) {
        s.line(&Sh::raw_start("chgrp").raw(" --").arg(g).arg(path));
        s.line(&done(&format!("group of {path} set to {g}")));
    }
    (!s.is_empty()).then_some(s)
}

/// The line a step prints once part of it is done, so that a step that
/// fails half-way still reports what it changed (`plumb-done=TEXT`).
pub(crate) fn done(what: &str) -> Sh {
    Sh::raw_start("printf 'plumb-done=%s\\n'").arg(what.replace('\n', " "))
}

/// The owner and group a path must get, as accounts the host must have.
pub(crate) fn accounts(owner: Option<&str>, group: Option<&str>) -> Vec<Account> {
    owner
        .map(|o| Account::User(o.to_string()))
        .into_iter()
        .chain(group.map(|g| Account::Group(g.to_string())))
        .collect()
}

/// Changes of mode, owner and group.
pub(crate) fn metadata_changes(
    info: &PathInfo,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
    out: &mut plumb_engine::module::Changes,
) {
    use plumb_engine::module::Change;
    if let Some(m) = mode.filter(|m| info.mode != Some(*m)) {
        out.push(Change::new(
            "mode",
            info.mode.map(|x| format!("{x:04o}")),
            Some(format!("{m:04o}")),
        ));
    }
    if let Some(o) = owner.filter(|o| info.owner.as_deref() != Some(*o)) {
        out.push(Change::new("owner", info.owner.clone(), Some(o.to_string())));
    }
    if let Some(g) = group.filter(|g| info.group.as_deref() != Some(*g)) {
        out.push(Change::new("group", info.group.clone(), Some(g.to_string())));
    }
}

/// The line that starts section `name` of a probe's body (see [`sections`]).
pub(crate) fn section_marker(name: &'static str) -> Sh {
    Sh::raw_start("printf '\\n::%s::\\n'").arg(name)
}

/// Split a probe's body into the sections that [`section_marker`] started.
/// Everything after the marker of `last` belongs to it, whatever it holds:
/// put content the host controls (a file) there, so that it cannot forge a
/// marker.
pub(crate) fn sections(body: &[u8], last: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = body;
    let mut current: Option<String> = None;
    loop {
        let next = find_marker(rest);
        let (chunk, after) = match next {
            Some((start, name, end)) => {
                let chunk = &rest[..start];
                if current.as_deref() == Some(last) {
                    out.insert(last.to_string(), rest.to_vec());
                    return out;
                }
                if let Some(c) = current.take() {
                    out.insert(c, chunk.to_vec());
                }
                current = Some(name);
                (None, &rest[end..])
            }
            None => (Some(rest), &rest[rest.len()..]),
        };
        if let Some(chunk) = chunk {
            if let Some(c) = current.take() {
                out.insert(c, chunk.to_vec());
            }
            return out;
        }
        rest = after;
    }
}

/// The next `\n::name::\n` in `hay`: (start, name, end).
fn find_marker(hay: &[u8]) -> Option<(usize, String, usize)> {
    let mut from = 0;
    while let Some(i) = hay[from..].windows(3).position(|w| w == b"\n::").map(|i| i + from) {
        let tail = &hay[i + 3..];
        if let Some(j) = tail.windows(3).position(|w| w == b"::\n") {
            let name = &tail[..j];
            if !name.is_empty() && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                return Some((i, String::from_utf8_lossy(name).into_owned(), i + 3 + j + 3));
            }
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_and_the_last_one_takes_the_rest() {
        let body = b"\n::a::\n{\"x\":1}\n\n::file::\nline\n::a::\nforged\n";
        let s = sections(body, "file");
        assert_eq!(s["a"], b"{\"x\":1}\n");
        assert_eq!(s["file"], b"line\n::a::\nforged\n");
    }
}
