//! The module contract. A module author writes the parameters, what a probe
//! observes, how to read it, what to change, and nothing else: validation,
//! batching, diff, apply, verify, check mode, risk and reporting are done
//! once, by the engine, for every module.
//!
//! Probes are *data* (shell text and a parser), not code that talks to a host:
//! that is what lets the engine check a whole host in one remote execution.
//! What file-like modules need of their paths (type, metadata, sha256, old
//! content) they declare in [`Module::inspect`] instead of probing it: the
//! engine observes every such path of a host with a constant number of
//! processes ([`crate::paths`]), where a `stat` and a `sha256sum` per
//! resource would grow with the plan.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diag::Diag;
use crate::paths::Observed as PathObserved;
pub use crate::paths::{Fetch, FileType, PathQuery, PathStat};
use crate::shell::Sh;
use crate::source::{Sources, Span};
use crate::yaml::{self, Node};

/// Renders a template file's text (registered as the given source) with
/// the host's variables; every error located in that file.
pub type RenderFile<'a> = dyn Fn(&str, crate::source::SourceId) -> Result<String, Vec<Diag>> + 'a;

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
        }
    }

    /// The same change with another risk.
    #[must_use]
    pub fn risk(mut self, risk: Risk) -> Self {
        self.risk = risk;
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

/// Bytes to send to a host: held in memory, or streamed from a local file.
#[derive(Clone, Debug)]
pub enum Content {
    /// In memory.
    Bytes(Arc<[u8]>),
    /// A file on the workstation, streamed when sent.
    File(PathBuf),
}

/// Content with its size and sha256, computed on the workstation.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The bytes.
    pub content: Content,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

impl Payload {
    /// A payload of bytes in memory.
    #[must_use]
    pub fn bytes(b: impl Into<Arc<[u8]>>) -> Self {
        let b: Arc<[u8]> = b.into();
        Self {
            sha256: sha256_hex(&b),
            size: b.len() as u64,
            content: Content::Bytes(b),
        }
    }

    /// A payload read from a local file (hashed now, streamed later).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        Ok(Self {
            content: Content::File(path.to_path_buf()),
            sha256: hex::encode(h.finalize()),
            size,
        })
    }

    /// The bytes, when small enough to hold (diffs of text).
    #[must_use]
    pub fn read_small(&self, limit: u64) -> Option<Vec<u8>> {
        if self.size > limit {
            return None;
        }
        match &self.content {
            Content::Bytes(b) => Some(b.to_vec()),
            Content::File(p) => std::fs::read(p).ok(),
        }
    }
}

/// Hex sha256 of `data`.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A script to run on the host, with optional standard input.
#[derive(Clone, Debug)]
pub struct Script {
    /// What to show in reports and errors (`mkdir /srv/app`).
    pub label: String,
    /// The shell text.
    pub sh: Sh,
    /// Sent on standard input.
    pub stdin: Option<Payload>,
}

/// A file to be written atomically and verified: the engine streams it into a
/// temp file beside the target, checks its sha256 on the host, applies
/// metadata, runs the validate command, keeps a backup, fsyncs and renames.
#[derive(Clone, Debug)]
pub struct FileWrite {
    /// Absolute target path.
    pub path: String,
    /// What to write.
    pub payload: Payload,
    /// Octal permission bits to set (`None`: 0644 for a new file, else keep).
    pub mode: Option<u32>,
    /// Owner to set.
    pub owner: Option<String>,
    /// Group to set.
    pub group: Option<String>,
    /// A command with `%s` for the staged file; the old file stays if it fails.
    pub validate: Option<String>,
    /// Keep a copy of the replaced file.
    pub backup: bool,
}

/// One thing to do to converge a resource.
#[derive(Clone, Debug)]
pub enum Step {
    /// Run a script; non-zero exit fails the resource.
    Run(Script),
    /// Write a file (atomic, verified).
    Write(FileWrite),
}

/// What a probe printed for one resource, and what the engine observed of
/// the paths it asked about ([`Module::inspect`]).
#[derive(Clone, Debug, Default)]
pub struct ProbeOutput {
    /// Standard output of this resource's probe.
    pub stdout: Vec<u8>,
    /// Its exit status.
    pub status: i32,
    /// The observation of each path of [`Module::inspect`].
    pub paths: BTreeMap<String, PathObserved>,
    /// The content fetched for each path of [`Module::inspect`] that asked
    /// for it (absent: not fetched, or larger than the limit).
    pub contents: BTreeMap<String, Vec<u8>>,
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

/// Something a resource manages (`provides`) or relies on (`needs`), from
/// which the engine adds implicit edges to the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// A filesystem path. A need of `/a/b/c` is met by a provider of `/a` or
    /// `/a/b` (every managed ancestor).
    Path(String),
    /// An exact key in a namespace: `("vg", "vg_fast")`,
    /// `("blockdev", "/dev/vg_fast/docker")`, `("fs", "/dev/…")`.
    Key(&'static str, String),
}

/// A resource's claims.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// What it manages, for the resources that rely on it.
    pub provides: Vec<Claim>,
    /// What it relies on.
    pub needs: Vec<Claim>,
    /// What it alone may manage on a host: its identities. Two resources of
    /// one host with a common identity would undo each other's work on every
    /// apply, so the engine refuses the plan. A path here is the path
    /// itself (its ancestors are not involved), compared after removing
    /// repeated and trailing slashes; so is a key value that starts with `/`.
    pub manages: Vec<Claim>,
}

/// Documentation of a module, shown by `plumb doc`.
#[derive(Debug)]
pub struct ModuleDoc {
    /// One paragraph: what the module manages.
    pub summary: &'static str,
    /// Every parameter, documented.
    pub params: &'static [ParamDoc],
    /// A resource in YAML.
    pub example: &'static str,
}

/// Documentation of one parameter.
#[derive(Debug)]
pub struct ParamDoc {
    /// The key.
    pub name: &'static str,
    /// Its type, as a user reads it (`string`, `"0644"`, `list of strings`).
    pub ty: &'static str,
    /// Default, or `required`.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// The folders of a Linux root that a relative path may have meant
/// (`etc/motd` was likely `/etc/motd`).
const ROOT_FOLDERS: &[&str] = &[
    "boot", "dev", "etc", "home", "mnt", "media", "opt", "proc", "root", "run", "srv", "sys", "tmp", "usr", "var",
];

/// What a module's `prepare` may use: the plan's folder for local files, the
/// templating of local template files, and a place for errors that point at
/// the user's parameters.
pub struct PrepareCx<'a> {
    pub(crate) params: &'a Node,
    pub(crate) anchor: Span,
    pub(crate) plan_dir: &'a Path,
    pub(crate) sources: &'a Sources,
    pub(crate) render: &'a RenderFile<'a>,
    pub(crate) diags: RefCell<Vec<Diag>>,
    pub(crate) sensitive: bool,
    pub(crate) vars: &'a crate::template::Vars,
}

impl PrepareCx<'_> {
    /// Whether the resource is `sensitive` (its old content must not even be
    /// fetched for a diff).
    #[must_use]
    pub fn sensitive(&self) -> bool {
        self.sensitive
    }

    /// The host's variables (with `facts` once they are known).
    #[must_use]
    pub fn vars(&self) -> &crate::template::Vars {
        self.vars
    }

    /// Check that `expr` (the parameter at `path`) is a valid expression;
    /// an error points at it.
    pub fn check_expression(&self, path: &str, expr: &str) -> bool {
        match crate::template::check_expression(expr) {
            Ok(()) => true,
            Err(e) => {
                self.error(
                    path,
                    "plumb::template::syntax",
                    format!("invalid expression: {e}"),
                    None,
                );
                false
            }
        }
    }

    /// Report a problem with the parameter at `path` (dotted; `""` for the
    /// resource as a whole).
    pub fn error(&self, path: &str, code: &'static str, message: impl Into<String>, help: Option<String>) {
        let span = if path.is_empty() {
            self.anchor
        } else {
            self.params.at_path(path).map_or(self.anchor, |n| n.span)
        };
        self.diags
            .borrow_mut()
            .push(Diag::new(code, message, span, "").with_help_opt(help));
    }

    /// Require `value` of parameter `path` to be an absolute path. The help
    /// proposes a path only when the value's first folder is one of the
    /// root's usual folders (`etc/motd` → `/etc/motd`): any other guess
    /// (`/app.conf` for `app.conf`) would likely be wrong.
    pub fn require_absolute(&self, path: &str, value: &str) {
        if value.starts_with('/') {
            return;
        }
        let rel = value.trim_start_matches("./");
        let top = rel.split('/').next().unwrap_or_default();
        let help = if ROOT_FOLDERS.contains(&top) && rel.len() > top.len() {
            format!("write it from the root: `/{rel}`")
        } else {
            format!(
                "write the whole path on the host, from `/`: plumb cannot tell which folder `{rel}` was meant to be in"
            )
        };
        self.error(
            path,
            "plumb::plan::relative_path",
            format!("`{path}` must be an absolute path, found `{value}`"),
            Some(help),
        );
    }

    /// Require `value` of parameter `path` to be a device's absolute path;
    /// a bare name (`vdc`) is proposed under `/dev`.
    pub fn require_device(&self, path: &str, value: &str) {
        if value.starts_with('/') {
            return;
        }
        let help = if value.is_empty() || value.contains('/') {
            "name the device by its path: `/dev/vdb`, `/dev/disk/by-id/…`".to_string()
        } else {
            format!("name the device by its path: `/dev/{value}`")
        };
        self.error(
            path,
            "plumb::plan::relative_path",
            format!("`{path}` must be a device's absolute path, found `{value}`"),
            Some(help),
        );
    }

    /// A local file named by parameter `path`, relative to the plan's folder.
    pub fn local_path(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.plan_dir.join(p)
        }
    }

    /// Read a local file (parameter `path` names it) as a payload.
    pub fn read_local(&self, path: &str, rel: &str) -> Option<Payload> {
        let full = self.local_path(rel);
        match Payload::file(&full) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(
                    path,
                    "plumb::plan::local_file",
                    format!("cannot read local file `{}`: {e}", full.display()),
                    None,
                );
                None
            }
        }
    }

    /// Render a local minijinja template file (parameter `path` names it)
    /// with the host's variables; its errors point into the template file.
    pub fn render_local(&self, path: &str, rel: &str) -> Option<String> {
        let full = self.local_path(rel);
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    path,
                    "plumb::plan::local_file",
                    format!("cannot read template `{}`: {e}", full.display()),
                    None,
                );
                return None;
            }
        };
        let id = self.sources.add(full.display().to_string(), &full, text.as_str());
        match (self.render)(&text, id) {
            Ok(s) => Some(s),
            Err(d) => {
                self.diags.borrow_mut().extend(d);
                None
            }
        }
    }
}

/// A module: a kind of thing plumb manages. See the crate docs.
pub trait Module: Send + Sync + 'static {
    /// The key that names it in plans (`file`, `lvm.lv`).
    const NAME: &'static str;
    /// Its parameters (`#[serde(deny_unknown_fields)]`).
    type Params: DeserializeOwned + Send + Sync + 'static;
    /// What a probe observes.
    type State: Serialize + Send + Sync + 'static;

    /// Its reference documentation.
    fn doc() -> ModuleDoc;

    /// Check and complete the parameters on the workstation (read local
    /// files, check paths), reporting problems through `cx`.
    fn prepare(_p: &mut Self::Params, _cx: &PrepareCx<'_>) {}

    /// What it manages and relies on (implicit graph edges), and what it
    /// alone may manage (see [`Claims::manages`]).
    fn claims(_p: &Self::Params) -> Claims {
        Claims::default()
    }

    /// Paths whose type, metadata, sha256 or content `parse` needs. The
    /// engine observes the paths of all of a host's resources together (one
    /// `stat` and one `sha256sum` for all of them, see [`crate::paths`]) and
    /// hands the answers to `parse` in [`ProbeOutput::path`].
    fn inspect(_p: &Self::Params) -> Vec<PathQuery> {
        Vec::new()
    }

    /// Shell text whose output describes the rest of the current state
    /// (what [`Module::inspect`] does not cover). Read-only. Empty: nothing
    /// to run (no process is spent on it).
    fn probe(_p: &Self::Params) -> Sh {
        Sh::new()
    }

    /// Read the probe's output.
    ///
    /// # Errors
    /// The output cannot be understood, or shows a problem that blocks the
    /// resource (a message for the user).
    fn parse(p: &Self::Params, out: &ProbeOutput) -> Result<Self::State, String>;

    /// What differs from the desired state.
    fn diff(p: &Self::Params, current: &Self::State) -> Changes;

    /// Preconditions on the observed state (a device that must exist, a
    /// filesystem that must not be foreign). Checked before apply, and in
    /// `diff` unless a requirement is pending (which may make them true).
    ///
    /// # Errors
    /// Why the resource cannot be converged, for the user.
    fn check(_p: &Self::Params, _current: &Self::State) -> Result<(), String> {
        Ok(())
    }

    /// In `diff`, when a requirement has pending changes, the probed state
    /// may be stale: the state to predict from instead. The default keeps the
    /// probed state (right for a file whose folder is about to be created).
    fn predict(_p: &Self::Params, _probed: &Self::State) -> Prediction<Self::State> {
        Prediction::Probed
    }

    /// The steps that make `changes` true.
    fn apply(p: &Self::Params, current: &Self::State, changes: &Changes) -> Vec<Step>;

    /// After apply, whether the re-probed state counts as converged (by
    /// default: no difference remains).
    fn verify(p: &Self::Params, after: &Self::State) -> Changes {
        Self::diff(p, after)
    }

    /// Whether a `notify` may target this module (then [`Module::refresh`]
    /// says what a refresh does).
    const REFRESHABLE: bool = false;

    /// What to do when notified (only called when [`Module::REFRESHABLE`]),
    /// given the observed state and the changes `apply` makes in the same run
    /// (a service that `apply` starts needs no restart on top). No steps:
    /// the notification needs nothing done, and none is reported.
    fn refresh(_p: &Self::Params, _current: &Self::State, _changes: &Changes) -> Vec<Step> {
        Vec::new()
    }

    /// Whether the probe must be run again before apply when a requirement
    /// changed in the same run (its observation depends on it).
    fn reprobe_after_requirements() -> bool {
        false
    }

    /// The systemd units (`docker.service`) that the steps making `changes`
    /// stop and start again, so that they start last: a data migration
    /// restarts its services. A notified service whose unit one of these
    /// started after its notifiers changed reads their changes already and
    /// is not restarted again.
    fn starts_units(_p: &Self::Params, _current: &Self::State, _changes: &Changes) -> Vec<String> {
        Vec::new()
    }

    /// The systemd unit a refresh restarts (`docker.service`), if any.
    fn refreshes_unit(_p: &Self::Params) -> Option<String> {
        None
    }
}

/// What a module predicts from when a requirement is pending.
#[derive(Debug)]
pub enum Prediction<S> {
    /// The probed state is still the right basis.
    Probed,
    /// Predict from this state instead (an absent volume group means an
    /// absent logical volume).
    Assume(S),
    /// Nothing sensible can be said until the requirement is applied; the
    /// text says what will be known then.
    Unknown(String),
}

/// A prediction, type-erased: the changes, or why they are not known yet.
#[derive(Debug)]
pub enum Predicted {
    /// The changes that would be made.
    Changes(Changes),
    /// Not known before the pending requirement is applied.
    Unknown(String),
}

/// A probed state, type-erased.
pub struct Observed(Box<dyn Any + Send + Sync>, String);

impl Observed {
    /// Hex sha256 of the state's JSON: what a saved plan compares.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.1
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observed({})", &self.1[..12.min(self.1.len())])
    }
}

/// A compiled resource: a module with its typed parameters for one host.
pub trait Resource: Send + Sync {
    /// The module's name.
    fn module(&self) -> &'static str;
    /// See [`Module::claims`].
    fn claims(&self) -> Claims;
    /// See [`Module::inspect`].
    fn inspect(&self) -> Vec<PathQuery>;
    /// See [`Module::probe`].
    fn probe(&self) -> Sh;
    /// See [`Module::parse`].
    ///
    /// # Errors
    /// As [`Module::parse`].
    fn observe(&self, out: &ProbeOutput) -> Result<Observed, String>;
    /// See [`Module::diff`].
    fn diff(&self, s: &Observed) -> Changes;
    /// See [`Module::check`].
    ///
    /// # Errors
    /// As [`Module::check`].
    fn check(&self, s: &Observed) -> Result<(), String>;
    /// See [`Module::predict`]: the changes predicted while a requirement
    /// is pending.
    fn predict(&self, s: &Observed) -> Predicted;
    /// See [`Module::apply`].
    fn apply(&self, s: &Observed, c: &Changes) -> Vec<Step>;
    /// See [`Module::verify`].
    fn verify(&self, s: &Observed) -> Changes;
    /// See [`Module::refresh`].
    fn refresh(&self, s: &Observed, c: &Changes) -> Vec<Step>;
    /// See [`Module::reprobe_after_requirements`].
    fn reprobe_after_requirements(&self) -> bool;
    /// See [`Module::starts_units`].
    fn starts_units(&self, s: &Observed, c: &Changes) -> Vec<String>;
    /// See [`Module::refreshes_unit`].
    fn refreshes_unit(&self) -> Option<String>;
}

struct Typed<M: Module> {
    params: M::Params,
    _m: PhantomData<fn() -> M>,
}

impl<M: Module> Typed<M> {
    fn state<'a>(&self, s: &'a Observed) -> &'a M::State {
        s.0.downcast_ref::<M::State>()
            .expect("state observed by the same module")
    }
}

impl<M: Module> Resource for Typed<M> {
    fn module(&self) -> &'static str {
        M::NAME
    }
    fn claims(&self) -> Claims {
        M::claims(&self.params)
    }
    fn inspect(&self) -> Vec<PathQuery> {
        M::inspect(&self.params)
    }
    fn probe(&self) -> Sh {
        M::probe(&self.params)
    }
    fn observe(&self, out: &ProbeOutput) -> Result<Observed, String> {
        let state = M::parse(&self.params, out)?;
        let json = serde_json::to_vec(&state).unwrap_or_default();
        Ok(Observed(Box::new(state), sha256_hex(&json)))
    }
    fn diff(&self, s: &Observed) -> Changes {
        M::diff(&self.params, self.state(s))
    }
    fn check(&self, s: &Observed) -> Result<(), String> {
        M::check(&self.params, self.state(s))
    }
    fn predict(&self, s: &Observed) -> Predicted {
        match M::predict(&self.params, self.state(s)) {
            Prediction::Probed => Predicted::Changes(M::diff(&self.params, self.state(s))),
            Prediction::Assume(assumed) => Predicted::Changes(M::diff(&self.params, &assumed)),
            Prediction::Unknown(why) => Predicted::Unknown(why),
        }
    }
    fn apply(&self, s: &Observed, c: &Changes) -> Vec<Step> {
        M::apply(&self.params, self.state(s), c)
    }
    fn verify(&self, s: &Observed) -> Changes {
        M::verify(&self.params, self.state(s))
    }
    fn refresh(&self, s: &Observed, c: &Changes) -> Vec<Step> {
        M::refresh(&self.params, self.state(s), c)
    }
    fn reprobe_after_requirements(&self) -> bool {
        M::reprobe_after_requirements()
    }
    fn starts_units(&self, s: &Observed, c: &Changes) -> Vec<String> {
        M::starts_units(&self.params, self.state(s), c)
    }
    fn refreshes_unit(&self) -> Option<String> {
        M::refreshes_unit(&self.params)
    }
}

/// A module as the registry holds it.
pub trait ModuleEntry: Send + Sync {
    /// See [`Module::NAME`].
    fn name(&self) -> &'static str;
    /// See [`Module::doc`].
    fn doc(&self) -> ModuleDoc;
    /// The parameter keys, as the parser knows them (the same list the
    /// parser checks unknown keys against).
    fn param_names(&self) -> Vec<&'static str>;
    /// Whether a notify can target it.
    fn refreshable(&self) -> bool;
    /// Typed parameters from a (templated) node, prepared.
    ///
    /// # Errors
    /// Every problem found, located.
    fn compile(&self, params: &Node, anchor: Span, cx: CompileCx<'_>) -> Result<Box<dyn Resource>, Vec<Diag>>;
}

/// What [`ModuleEntry::compile`] needs from the engine.
#[derive(Clone, Copy)]
pub struct CompileCx<'a> {
    /// The plan's folder.
    pub plan_dir: &'a Path,
    /// All loaded sources (templates are added).
    pub sources: &'a Sources,
    /// Renders a template file's text (registered as the given source).
    pub render: &'a RenderFile<'a>,
    /// Whether the resource is `sensitive`.
    pub sensitive: bool,
    /// The host's variables (facts included once known).
    pub vars: &'a crate::template::Vars,
}

struct Entry<M>(PhantomData<fn() -> M>);

impl<M: Module> ModuleEntry for Entry<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }
    fn doc(&self) -> ModuleDoc {
        M::doc()
    }
    fn param_names(&self) -> Vec<&'static str> {
        crate::introspect::struct_fields::<M::Params>()
    }
    fn refreshable(&self) -> bool {
        M::REFRESHABLE
    }
    fn compile(&self, params: &Node, anchor: Span, cx: CompileCx<'_>) -> Result<Box<dyn Resource>, Vec<Diag>> {
        // When some parameters are wrong, the others are still checked by
        // `prepare` (a relative path is reported beside a bad mode); only
        // its errors about parameters that were read are kept, since an
        // error about the resource as a whole may come from a left-out one.
        let (p, mut diags, left_out) = yaml::from_node_partial::<M::Params>(params, anchor);
        let Some(mut p) = p else {
            return Err(diags);
        };
        let pcx = PrepareCx {
            params,
            anchor,
            plan_dir: cx.plan_dir,
            sources: cx.sources,
            render: cx.render,
            diags: RefCell::new(Vec::new()),
            sensitive: cx.sensitive,
            vars: cx.vars,
        };
        M::prepare(&mut p, &pcx);
        let prepared = pcx.diags.into_inner();
        if diags.is_empty() {
            diags = prepared;
        } else {
            let kept: Vec<Span> = params
                .as_map()
                .unwrap_or_default()
                .iter()
                .filter(|e| !left_out.contains(&e.key))
                .map(|e| e.value.span)
                .collect();
            diags.extend(prepared.into_iter().filter(|d| {
                d.labels.first().is_some_and(|(at, _)| {
                    kept.iter().any(|k| {
                        k.source == at.source && at.offset >= k.offset && at.offset + at.len <= k.offset + k.len
                    })
                })
            }));
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(Box::new(Typed::<M> {
            params: p,
            _m: PhantomData,
        }))
    }
}

/// Every module plumb knows, by name.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Box<dyn ModuleEntry>>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register module `M`.
    #[must_use]
    pub fn with<M: Module>(mut self) -> Self {
        self.entries.push(Box::new(Entry::<M>(PhantomData)));
        self
    }

    /// The module named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&dyn ModuleEntry> {
        self.entries.iter().find(|e| e.name() == name).map(AsRef::as_ref)
    }

    /// Every module's name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.name())
    }

    /// Every module.
    pub fn iter(&self) -> impl Iterator<Item = &dyn ModuleEntry> + '_ {
        self.entries.iter().map(AsRef::as_ref)
    }
}

/// An octal permission mode, written as a quoted string (`"0644"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_mode(&s).map(Mode).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid mode `{s}`: expected an octal string like \"0644\" or \"0755\""
            ))
        })
    }
}

/// Parse an octal mode string (`"0644"`, `"644"`, `"1777"`).
#[must_use]
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// `present` or `absent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// It exists.
    #[default]
    Present,
    /// It does not.
    Absent,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal_strings_only() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("1777"), Some(0o1777));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        for bad in ["", "abc", "0999", "12345", "rwxr-xr-x", "-644"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }

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
