//! Source files loaded for a run (plans, includes, inventories, templates) and
//! byte spans into them, so that every diagnostic can point at the user's text.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Index of a file in [`Sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file the range is in.
    pub source: SourceId,
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (may be 0: a point).
    pub len: usize,
}

impl Span {
    /// A span in `source` starting at `offset`, `len` bytes long.
    #[must_use]
    pub fn new(source: SourceId, offset: usize, len: usize) -> Self {
        Self { source, offset, len }
    }

    /// A sub-range of this span, clamped to it (used to point inside a scalar,
    /// e.g. at one `{{ }}` of a templated string).
    #[must_use]
    pub fn sub(&self, start: usize, len: usize) -> Self {
        let start = start.min(self.len);
        Self {
            source: self.source,
            offset: self.offset + start,
            len: len.min(self.len - start),
        }
    }
}

/// One loaded file: its name as the user should read it, and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// Display name (the path as given, relative where the user gave it so).
    pub name: String,
    /// Absolute or as-given path on the workstation.
    pub path: PathBuf,
    /// The file's text.
    pub text: Arc<str>,
}

/// Every file loaded during one invocation; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Arc<RwLock<Vec<Arc<SourceFile>>>>,
}

impl Sources {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `text` as the content of `path`, displayed as `name`.
    pub fn add(&self, name: impl Into<String>, path: &Path, text: impl Into<Arc<str>>) -> SourceId {
        let mut files = self.files.write().expect("sources lock");
        files.push(Arc::new(SourceFile {
            name: name.into(),
            path: path.to_path_buf(),
            text: text.into(),
        }));
        SourceId(u32::try_from(files.len() - 1).expect("fewer than 2^32 sources"))
    }

    /// The file registered as `id`.
    #[must_use]
    pub fn get(&self, id: SourceId) -> Arc<SourceFile> {
        self.files.read().expect("sources lock")[id.0 as usize].clone()
    }

    /// Every registered file, in load order.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<SourceFile>> {
        self.files.read().expect("sources lock").clone()
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
#[must_use]
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of a 1-based line and character column in `text`.
#[must_use]
pub fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let within: usize = l.chars().take(col.saturating_sub(1)).map(char::len_utf8).sum();
            return offset + within;
        }
        offset += l.len();
    }
    text.len()
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let t = "a: é\nb: x\n";
        assert_eq!(line_col(t, 0), (1, 1));
        let x = t.find('x').unwrap();
        assert_eq!(line_col(t, x), (2, 4));
        assert_eq!(offset_of(t, 2, 4), x);
        assert_eq!(offset_of(t, 1, 4), t.find('é').unwrap());
    }
}
