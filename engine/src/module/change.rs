//! What differs, as reported: [`Change`], [`Changes`], their [`Risk`], and
//! [`text_diff`] for content.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much can go wrong when a change is made. Ordered: the maximum of a
/// resource's changes is its risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Content and metadata.
    Safe,
    /// A service restarts.
    Restart,
    /// Unmount, data migration, online filesystem growth, an arbitrary command.
    Disruptive,
    /// Data can be lost.
    Destructive,
}

impl Risk {
    /// Every class, lowest first.
    pub const ALL: [Risk; 4] = [Risk::Safe, Risk::Restart, Risk::Disruptive, Risk::Destructive];

    /// The lowercase name used in every output format.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Safe => "safe",
            Risk::Restart => "restart",
            Risk::Disruptive => "disruptive",
            Risk::Destructive => "destructive",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One structured difference between the observed and the desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What differs (`content`, `mode`, `size`, `fstab`, …).
    pub field: String,
    /// Observed value (`None`: absent).
    pub from: Option<String>,
    /// Desired value (`None`: to be removed).
    pub to: Option<String>,
    /// Risk of making this change.
    pub risk: Risk,
    /// Whether `from`/`to` are secret (never printed, whatever the resource says).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// Whether `from`/`to` hold figures measured now that keep moving while
    /// the host runs (the size of data in use): a saved plan compares the
    /// change's field and risk, not those figures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub measured: bool,
}

impl Change {
    /// A safe change of `field`.
    pub fn new(field: impl Into<String>, from: Option<String>, to: Option<String>) -> Self {
        Self {
            field: field.into(),
            from,
            to,
            risk: Risk::Safe,
            sensitive: false,
            measured: false,
        }
    }

    /// The same change with another risk.
    #[must_use]
    pub fn risk(mut self, risk: Risk) -> Self {
        self.risk = risk;
        self
    }

    /// The same change, marked as holding figures measured now (see
    /// [`Change::measured`]).
    #[must_use]
    pub fn measured(mut self) -> Self {
        self.measured = true;
        self
    }

    /// The same change, marked secret.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// Everything that differs for one resource; empty means converged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    /// The structured changes.
    pub items: Vec<Change>,
    /// A unified diff of text content, when content changes.
    pub diff: Option<String>,
}

impl Changes {
    /// No change.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the resource is converged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Add a change.
    pub fn push(&mut self, c: Change) {
        self.items.push(c);
    }

    /// The highest risk among the changes.
    #[must_use]
    pub fn risk(&self) -> Option<Risk> {
        self.items.iter().map(|c| c.risk).max()
    }

    /// Whether a change of `field` is among them.
    #[must_use]
    pub fn has(&self, field: &str) -> bool {
        self.items.iter().any(|c| c.field == field)
    }
}

/// A unified diff of two texts (`None` when either is not UTF-8 text).
#[must_use]
pub fn text_diff(old: Option<&[u8]>, new: &[u8], path: &str) -> Option<String> {
    let new = std::str::from_utf8(new).ok()?;
    let old_text = match old {
        Some(o) => std::str::from_utf8(o).ok()?,
        None => "",
    };
    if new.contains('\0') || old_text.contains('\0') {
        return None;
    }
    let from = if old.is_some() {
        format!("a{path}")
    } else {
        "/dev/null".to_string()
    };
    let d = similar::TextDiff::from_lines(old_text, new);
    let mut s = d
        .unified_diff()
        .context_radius(3)
        .header(&from, &format!("b{path}"))
        .to_string();
    if s.is_empty() {
        return None;
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Some(s)
}
