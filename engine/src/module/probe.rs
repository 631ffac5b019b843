//! What a module reads: the [`ProbeOutput`] of its probe and of the
//! paths it inspects, and the `key=value` [`Fields`] of its own output.

use std::collections::BTreeMap;

use crate::paths::{Account, PathObservation, PathStat};

/// What a probe printed for one resource, and what the engine observed of
/// the paths it asked about ([`Module::inspect`]).
#[derive(Clone, Debug, Default)]
pub struct ProbeOutput {
    /// Standard output of this resource's probe.
    pub stdout: Vec<u8>,
    /// Its exit status.
    pub status: i32,
    /// The observation of each path of [`Module::inspect`].
    pub paths: BTreeMap<String, PathObservation>,
    /// The content fetched for each path of [`Module::inspect`] that asked
    /// for it (absent: not fetched, or larger than the limit).
    pub contents: BTreeMap<String, Vec<u8>>,
    /// The accounts of [`Module::accounts`] that the host does not have
    /// (the engine, not the module, decides what that means).
    pub missing: Vec<Account>,
}

impl ProbeOutput {
    /// What is at `path`, one of the paths of [`Module::inspect`]: `None`
    /// when nothing is there.
    ///
    /// # Errors
    /// The path could not be read, or was not asked about.
    pub fn path(&self, path: &str) -> Result<Option<&PathStat>, String> {
        match self.paths.get(path) {
            Some(Ok(st)) => Ok(st.as_ref()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("`{path}` was not observed (a module did not declare it)")),
        }
    }

    /// The content fetched for `path` (see [`crate::paths::Fetch`]).
    #[must_use]
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.contents.get(path).map(Vec::as_slice)
    }

    /// `key=value` lines up to a line `--` (after which raw content may follow).
    #[must_use]
    pub fn fields(&self) -> Fields {
        let head = self.head();
        Fields(
            String::from_utf8_lossy(head)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn head(&self) -> &[u8] {
        match find(&self.stdout, b"\n--\n") {
            Some(i) => &self.stdout[..=i],
            None => &self.stdout,
        }
    }

    /// The raw bytes after the `--` line, if there is one.
    #[must_use]
    pub fn body(&self) -> Option<&[u8]> {
        if self.stdout.starts_with(b"--\n") {
            return Some(&self.stdout[3..]);
        }
        find(&self.stdout, b"\n--\n").map(|i| &self.stdout[i + 4..])
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parsed `key=value` lines of a probe.
#[derive(Clone, Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The last value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_fields_stop_at_the_content_marker() {
        let out = ProbeOutput {
            stdout: b"exists=1\nsha256=ab\n--\nx=1\nraw\n".to_vec(),
            status: 0,
            ..Default::default()
        };
        assert_eq!(out.fields().get("exists"), Some("1"));
        assert_eq!(out.fields().get("x"), None);
        assert_eq!(out.body(), Some(&b"x=1\nraw\n"[..]));
    }
}
