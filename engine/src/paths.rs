//! Paths observed for many resources at once.
//!
//! File-like modules need the same few facts about their paths: type,
//! permissions, owner, size, the content's sha256, and sometimes the old
//! content (to show a diff). Asking each resource's probe to run `stat` and
//! `sha256sum` costs two processes per resource on the host, which grows with
//! the plan and dominates a no-op `plumb diff`. Instead a module declares its
//! [`PathQuery`]s and the engine reads all of a host's paths in one `stat` and
//! one `sha256sum` at the top of the batched probe; the results reach the
//! module's `parse` through [`crate::module::ProbeOutput::path`].
//!
//! Names that `stat -c %n` and `sha256sum` would not print back verbatim
//! (control characters, backslashes) are read one by one instead, so any
//! path works; only the common case is batched.
//!
//! The users and groups that resources want their paths to belong to are
//! looked up in the same script ([`Account`]: one `getent passwd` and one
//! `getent group` for all of them), so that `diff` can say that an owner does
//! not exist instead of promising a `chown` that cannot work.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::shell::Sh;

/// What a module wants to know about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathQuery {
    /// Absolute path on the host.
    pub path: String,
    /// Whether to compute the sha256 of a regular file's content.
    pub sha256: bool,
    /// Whether to fetch the content itself.
    pub content: Fetch,
}

impl PathQuery {
    /// Type, permissions, owner, group and size only.
    #[must_use]
    pub fn stat(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            sha256: false,
            content: Fetch::No,
        }
    }

    /// The same, with the sha256 of a regular file's content.
    #[must_use]
    pub fn hashed(path: impl Into<String>) -> Self {
        Self {
            sha256: true,
            ..Self::stat(path)
        }
    }

    /// Also fetch the content, as `content` says.
    #[must_use]
    pub fn fetch(mut self, content: Fetch) -> Self {
        self.content = content;
        self
    }
}

/// When to fetch a regular file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Never.
    No,
    /// Whenever it is at most `limit` bytes.
    Always {
        /// Larger files are not fetched.
        limit: u64,
    },
    /// When its sha256 is not `sha256` (the content is about to be replaced
    /// and a diff will be shown) and it is at most `limit` bytes.
    UnlessSha256 {
        /// Hex sha256 of the wanted content.
        sha256: String,
        /// Larger files are not fetched.
        limit: u64,
    },
}

impl Fetch {
    /// The largest content this fetch takes.
    #[must_use]
    pub fn limit(&self) -> Option<u64> {
        match self {
            Fetch::No => None,
            Fetch::Always { limit } | Fetch::UnlessSha256 { limit, .. } => Some(*limit),
        }
    }
}

/// The type of what is at a path (symlinks are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// What is at an existing path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathStat {
    /// Its type.
    pub kind: FileType,
    /// Permission bits, with setuid, setgid and sticky (`0o4755`).
    pub mode: u32,
    /// Owner's name (`UNKNOWN` when the uid has none).
    pub owner: String,
    /// Group's name (`UNKNOWN` when the gid has none).
    pub group: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of a regular file's content, when asked for.
    pub sha256: Option<String>,
}

/// A user or a group that a resource needs on the host (the owner or the
/// group of a path it manages).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// A user name (or a numeric uid, which always exists for `chown`).
    User(String),
    /// A group name (or a numeric gid).
    Group(String),
}

impl Account {
    /// The name as written.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Account::User(n) | Account::Group(n) => n,
        }
    }

    /// `user` or `group`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Account::User(_) => "user",
            Account::Group(_) => "group",
        }
    }

    /// Whether the name must be looked up: a numeric id needs no entry
    /// (`chown 1234` works without one); a name starting with `-` is never
    /// an account (and would be read as an option), so it is missing.
    fn looked_up(&self) -> bool {
        let n = self.name();
        !n.is_empty() && !n.starts_with('-') && !n.bytes().all(|b| b.is_ascii_digit())
    }
}

/// What a batch observed of one path: `Ok(None)` when nothing is there,
/// `Err` when it could not be read (a regular file that could not be
/// checksummed).
pub type PathObservation = Result<Option<PathStat>, String>;

/// The queries of one host's batch, deduplicated, with the script that
/// answers them and the parser of its output.
#[derive(Debug, Default)]
pub struct PathBatch {
    /// Distinct paths, each with whether any query wants its sha256.
    paths: Vec<(String, bool)>,
    /// Index of each path in `paths`.
    index: HashMap<String, usize>,
    /// What to fetch of each path, queries of the same path merged.
    fetches: BTreeMap<String, Fetch>,
    /// Users and groups to look up.
    accounts: BTreeSet<Account>,
}

/// Paths per `stat`/`find` command, well below any `ARG_MAX`.
const CHUNK: usize = 256;

/// Whether the path can be batched: `stat -c %n` and `sha256sum` print it
/// back byte for byte on one line, and `find` cannot take it for an option
/// or an expression.
fn plain(path: &str) -> bool {
    path.starts_with('/') && !path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\')
}

/// Two fetches of one path as one: the content is needed when either needs it.
fn merge(a: &Fetch, b: &Fetch) -> Fetch {
    match (a, b) {
        (Fetch::No, x) | (x, Fetch::No) => x.clone(),
        (Fetch::UnlessSha256 { sha256: x, limit: l }, Fetch::UnlessSha256 { sha256: y, limit: m }) if x == y => {
            Fetch::UnlessSha256 {
                sha256: x.clone(),
                limit: *l.max(m),
            }
        }
        _ => Fetch::Always {
            limit: a.limit().unwrap_or(0).max(b.limit().unwrap_or(0)),
        },
    }
}

impl PathBatch {
    /// Collect queries.
    pub fn add(&mut self, queries: &[PathQuery]) {
        for q in queries {
            // Whether the content differs is told by its sha256.
            let hashed = q.sha256 || matches!(q.content, Fetch::UnlessSha256 { .. });
            match self.index.get(&q.path) {
                Some(&i) => self.paths[i].1 |= hashed,
                None => {
                    self.index.insert(q.path.clone(), self.paths.len());
                    self.paths.push((q.path.clone(), hashed));
                }
            }
            if q.content != Fetch::No {
                let merged = match self.fetches.get(&q.path) {
                    Some(f) => merge(f, &q.content),
                    None => q.content.clone(),
                };
                self.fetches.insert(q.path.clone(), merged);
            }
        }
    }

    /// Collect users and groups to look up.
    pub fn add_accounts(&mut self, accounts: &[Account]) {
        self.accounts.extend(accounts.iter().cloned());
    }

    /// Whether there is nothing to observe.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.accounts.is_empty()
    }

    /// One `getent` per database for every name to look up (or, on a host
    /// without `getent`, the local files), printing the names found.
    fn accounts_script(&self, mark: &dyn Fn(&str) -> Sh) -> Sh {
        let mut s = Sh::new();
        for (kind, db, file) in [("user", "passwd", "/etc/passwd"), ("group", "group", "/etc/group")] {
            let names: Vec<&str> = self
                .accounts
                .iter()
                .filter(|a| a.kind() == kind && a.looked_up())
                .map(Account::name)
                .collect();
            if names.is_empty() {
                continue;
            }
            s.line(&names.iter().fold(Sh::raw_start("set --"), Sh::arg));
            s.line(&mark(&format!("{kind}s")));
            s.line(
                &Sh::raw_start("if command -v getent >/dev/null 2>&1; then getent")
                    .arg(db)
                    .raw(" \"$@\" 2>/dev/null | cut -d: -f1; else cut -d: -f1")
                    .arg(file)
                    .raw("; fi"),
            );
        }
        s
    }

    /// Shell that prints every observation between markers made with
    /// `nonce`, ending with an end marker (its absence means the batch did
    /// not run to the end). The number of processes does not grow with the
    /// number of paths: per 256 of them one `stat`; one `sha256sum -c` for
    /// every file whose content is compared with a wanted sha256, one `find`
    /// (running `sha256sum`) for the other files to checksum; then two per
    /// file whose content differs or is fetched, and two per path with an
    /// unusual name.
    #[must_use]
    pub fn script(&self, nonce: &str) -> Sh {
        let mark = |what: &str| crate::run::probe::marker(nonce, &format!("p:{what}"));
        let mut s = Sh::raw_start("plumb_nl='\n'\nplumb_sums=");
        s.line(&self.accounts_script(&mark));
        // Plain paths whose content is wanted unless it has a given sha256:
        // `sha256sum -c` tells which match, so their sha256 is known without
        // printing it.
        let checked: BTreeMap<&str, (&str, u64)> = self
            .fetches
            .iter()
            .filter_map(|(p, how)| match how {
                Fetch::UnlessSha256 { sha256, limit } if plain(p) => Some((p.as_str(), (sha256.as_str(), *limit))),
                _ => None,
            })
            .collect();
        let plain_paths: Vec<&(String, bool)> = self.paths.iter().filter(|(p, _)| plain(p)).collect();
        for chunk in plain_paths.chunks(CHUNK) {
            s.line(&chunk.iter().fold(Sh::raw_start("set --"), |sh, (p, _)| sh.arg(p)));
            s.line(&mark("stat"));
            // Tabs between the fields: a group may be called `domain users`.
            // The lines go out as they come, the errors are kept apart: a
            // path that is missing is absent, one that cannot be looked at
            // is not.
            s.line(&Sh::raw_start(
                "{ plumb_e=$(stat -c '%f\t%s\t%U\t%G\t%n' -- \"$@\" 2>&1 >&3); } 3>&1",
            ));
            s.line(&mark("staterr"));
            s.line(&Sh::raw_start("printf '%s\\n' \"$plumb_e\""));
            let hashed: Vec<&str> = chunk
                .iter()
                .filter(|(p, h)| *h && !checked.contains_key(p.as_str()))
                .map(|(p, _)| p.as_str())
                .collect();
            if !hashed.is_empty() {
                s.line(&hashed.iter().fold(Sh::raw_start("set --"), Sh::arg));
                // `-type f` without following symlinks: never a FIFO or a
                // device, which `sha256sum` would block on or read whole.
                s.line(&Sh::raw_start(
                    "plumb_sums=\"$plumb_sums$(find \"$@\" -maxdepth 0 -type f -exec sha256sum -- {} + 2>/dev/null)$plumb_nl\"",
                ));
            }
        }
        s.line(&mark("sums"));
        s.line(&Sh::raw_start("printf '%s' \"$plumb_sums\""));
        if !checked.is_empty() {
            // The regular files among them (never a FIFO or a device) as
            // `sha256  path` lines into `sha256sum -c`, whose verdicts are
            // printed; then, only if some file differs, its sha256 and its
            // content. (A `read` loop over every verdict would cost more
            // than all the rest: the shell reads a pipe byte by byte.)
            let limit = checked.values().map(|(_, l)| *l).max().unwrap_or(0);
            s.line(&mark("check"));
            s.line(&Sh::raw_start("plumb_check=$({"));
            let list: Vec<(&&str, &(&str, u64))> = checked.iter().collect();
            for chunk in list.chunks(CHUNK) {
                s.line(
                    &chunk
                        .iter()
                        .fold(Sh::raw_start("set --"), |sh, (p, (want, _))| sh.arg(want).arg(p)),
                );
                s.line(&Sh::raw_start(
                    "while [ $# -gt 1 ]; do if [ -f \"$2\" ] && [ ! -L \"$2\" ]; then printf '%s  %s\\n' \"$1\" \"$2\"; fi; shift 2; done",
                ));
            }
            s.line(
                &Sh::raw_start(
                    "} | sha256sum -c 2>/dev/null; echo \"plumb_rc=$?\")\n\
                     printf '%s\\n' \"$plumb_check\"\n\
                     case \"$plumb_check$plumb_nl\" in *\": FAILED$plumb_nl\"*)\n\
                     while IFS= read -r plumb_l; do\n  \
                     case $plumb_l in\n  \
                     *': FAILED') plumb_p=${plumb_l%': FAILED'}\n    \
                     sha256sum -- \"$plumb_p\" 2>/dev/null\n    \
                     printf '\\n%s\\n'",
                )
                .arg(format!("@@{nonce}:p:cat:"))
                .raw("\"$plumb_p\"\n    head -c")
                .arg((limit + 1).to_string())
                .raw(" -- \"$plumb_p\"\n    ")
                .then(&mark("check"))
                .raw(" ;;\n  esac\ndone <<PLUMB_CHECK\n$plumb_check\nPLUMB_CHECK\n;; esac"),
            );
        }
        let read = |p: &str, limit: u64| {
            Sh::raw_start("if [ -f")
                .arg(p)
                .raw(" ] && [ ! -L")
                .arg(p)
                .raw(" ]; then ")
                .then(&mark(&format!("cat:{}", self.index[p])))
                .raw("; head -c")
                .arg((limit + 1).to_string())
                .raw(" --")
                .arg(p)
                .raw("; fi")
        };
        for (p, hashed) in &self.paths {
            if plain(p) {
                continue;
            }
            s.line(&mark(&format!("one:{}", self.index[p])));
            s.line(&Sh::raw_start("{ plumb_e=$(stat -c '%f\t%s\t%U\t%G' --").arg(p).raw(
                " 2>&1 >&3); } 3>&1
[ -z \"$plumb_e\" ] || printf 'err=%s\\n' \"$plumb_e\"",
            ));
            if *hashed {
                // Read only a regular file (never a FIFO or a device); its
                // content too when it differs from the wanted one.
                let mut sh = Sh::raw_start("if [ -f")
                    .arg(p)
                    .raw(" ] && [ ! -L")
                    .arg(p)
                    .raw(
                        " ]; then
  plumb_s=$(sha256sum <",
                    )
                    .arg(p)
                    .raw(" 2>/dev/null) && printf 'sha256=%s\\n' \"${plumb_s%% *}\"");
                if let Some(Fetch::UnlessSha256 { sha256, limit }) = self.fetches.get(p) {
                    sh = sh
                        .raw("\n  if [ \"${plumb_s%% *}\" != ")
                        .val(sha256)
                        .raw(" ]; then ")
                        .then(&read(p, *limit))
                        .raw("; fi");
                }
                s.line(&sh.raw("\nfi"));
            }
        }
        for (p, how) in &self.fetches {
            // The others: in `sha256sum -c`'s pass, or one by one above.
            if let Fetch::Always { limit } = how {
                s.line(&read(p, *limit));
            }
        }
        // Leave nothing behind for the probes that follow in the same shell.
        s.line(&Sh::raw_start(
            "set --; unset plumb_nl plumb_sums plumb_check plumb_e plumb_s plumb_l plumb_p",
        ));
        s.line(&mark("end"));
        s
    }

    /// Read the script's output: every path's observation and every
    /// fetched content (by path; content larger than the query's limit is
    /// the caller's to drop, see [`Fetch::limit`]). `None` when the output
    /// is cut short.
    #[must_use]
    pub fn parse(&self, nonce: &str, stdout: &[u8]) -> Option<Answers> {
        let sections = split(nonce, stdout)?;
        let mut plain_stat: BTreeMap<String, PathStat> = BTreeMap::new();
        let mut sums: BTreeMap<String, String> = BTreeMap::new();
        let mut one: BTreeMap<usize, &[u8]> = BTreeMap::new();
        let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut found: BTreeSet<Account> = BTreeSet::new();
        // `sha256sum -c`: files that match, that could not be read, and its
        // exit statuses.
        let mut matched: HashSet<String> = HashSet::new();
        let mut unreadable: HashSet<String> = HashSet::new();
        let mut check_ok = true;
        // `stat`'s messages other than "there is nothing there".
        let mut stat_errors: Vec<String> = Vec::new();
        for (name, body) in &sections {
            match name.as_str() {
                "stat" => {
                    for line in String::from_utf8_lossy(body).lines() {
                        let f: Vec<&str> = line.splitn(5, '\t').collect();
                        if let [m, sz, u, g, n] = f[..] {
                            if let Some(st) = stat_fields(m, sz, u, g) {
                                plain_stat.insert(n.to_string(), st);
                            }
                        }
                    }
                }
                "users" | "groups" => {
                    for line in String::from_utf8_lossy(body).lines().filter(|l| !l.is_empty()) {
                        found.insert(if name == "users" {
                            Account::User(line.to_string())
                        } else {
                            Account::Group(line.to_string())
                        });
                    }
                }
                "staterr" => stat_errors.extend(
                    String::from_utf8_lossy(body)
                        .lines()
                        .filter(|l| !l.is_empty() && !nothing_there(l))
                        .map(str::to_string),
                ),
                "sums" => {
                    for line in String::from_utf8_lossy(body).lines() {
                        if let Some((n, h)) = sum_line(line) {
                            sums.insert(n.to_string(), h.to_string());
                        }
                    }
                }
                "check" => {
                    for line in String::from_utf8_lossy(body).lines() {
                        // A sum line first: its name may end in ": OK" (a
                        // verdict's name starts with `/`, never a sum).
                        if let Some((n, h)) = sum_line(line) {
                            sums.insert(n.to_string(), h.to_string());
                        } else if let Some(rc) = line.strip_prefix("plumb_rc=") {
                            // 1: some file differs or could not be read.
                            check_ok &= rc == "0" || rc == "1";
                        } else if let Some(p) = line.strip_suffix(": OK") {
                            matched.insert(p.to_string());
                        } else if let Some(p) = line.strip_suffix(": FAILED open or read") {
                            unreadable.insert(p.to_string());
                        }
                    }
                }
                other => {
                    if let Some(k) = other.strip_prefix("one:").and_then(|k| k.parse().ok()) {
                        one.insert(k, body);
                    } else if let Some(what) = other.strip_prefix("cat:") {
                        // A plain path, or the index of an unusual one.
                        let path = match what.parse::<usize>() {
                            Ok(k) => self.paths.get(k).map(|(p, _)| p.clone()),
                            Err(_) => self.index.contains_key(what).then(|| what.to_string()),
                        };
                        if let Some(path) = path {
                            contents.insert(path, body.to_vec());
                        }
                    }
                }
            }
        }
        let mut paths = BTreeMap::new();
        for (k, (p, hashed)) in self.paths.iter().enumerate() {
            let (stat, sum) = if plain(p) {
                let sum = match self.fetches.get(p) {
                    Some(Fetch::UnlessSha256 { sha256, .. }) if check_ok && !unreadable.contains(p) => {
                        if matched.contains(p) {
                            Some(sha256.clone())
                        } else {
                            sums.get(p).cloned()
                        }
                    }
                    Some(Fetch::UnlessSha256 { .. }) => None,
                    _ => sums.get(p).cloned(),
                };
                (plain_stat.remove(p), sum)
            } else {
                let text = one
                    .get(&k)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let mut stat = None;
                let mut sum = None;
                let mut error = None;
                for line in text.lines() {
                    if let Some(h) = line.strip_prefix("sha256=") {
                        sum = Some(h.to_string());
                    } else if let Some(e) = line.strip_prefix("err=") {
                        error = Some(e.to_string()).filter(|e| !nothing_there(e));
                    } else {
                        let f: Vec<&str> = line.splitn(4, '\t').collect();
                        if let [m, sz, u, g] = f[..] {
                            stat = stat_fields(m, sz, u, g);
                        }
                    }
                }
                if let (None, Some(e)) = (&stat, error) {
                    paths.insert(p.clone(), Err(format!("cannot look at `{p}`: {e}")));
                    continue;
                }
                (stat, sum)
            };
            let observed = match stat {
                // Missing, unless `stat` said why it could not look: by name,
                // or in a message that names none of the paths.
                None if plain(p) => match stat_errors.iter().find(|e| e.contains(&format!("'{p}':"))).or_else(|| {
                    stat_errors
                        .iter()
                        .find(|e| !self.index.keys().any(|k| e.contains(k.as_str())))
                }) {
                    Some(e) => Err(format!("cannot look at `{p}`: {e}")),
                    None => Ok(None),
                },
                None => Ok(None),
                Some(mut st) => {
                    if *hashed && st.kind == FileType::File {
                        match sum {
                            Some(h) => st.sha256 = Some(h),
                            None => {
                                paths.insert(p.clone(), Err(format!("cannot read `{p}` to checksum it")));
                                continue;
                            }
                        }
                    }
                    Ok(Some(st))
                }
            };
            paths.insert(p.clone(), observed);
        }
        let missing = self
            .accounts
            .iter()
            .filter(|a| (!a.looked_up() && a.name().starts_with('-')) || (a.looked_up() && !found.contains(a)))
            .cloned()
            .collect();
        Some(Answers {
            paths,
            contents,
            missing,
        })
    }
}

/// The parsed output of a [`PathBatch`] script.
#[derive(Debug, Default)]
pub struct Answers {
    /// Every queried path's observation.
    pub paths: BTreeMap<String, PathObservation>,
    /// Fetched contents, by path (up to the largest limit asked for it, plus
    /// one byte: longer than a query's limit means larger than it).
    pub contents: BTreeMap<String, Vec<u8>>,
    /// The users and groups asked about that the host does not have.
    pub missing: BTreeSet<Account>,
}

/// A `sha256sum` line: the name and the sum.
fn sum_line(line: &str) -> Option<(&str, &str)> {
    let (h, n) = line.split_once("  ")?;
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some((n, h))
}

/// Whether a `stat` message says only that nothing is at the path (the
/// transports run scripts with `LC_ALL=C`).
fn nothing_there(message: &str) -> bool {
    message.ends_with(": No such file or directory") || message.ends_with(": Not a directory")
}

fn stat_fields(raw_mode: &str, size: &str, owner: &str, group: &str) -> Option<PathStat> {
    let raw = u32::from_str_radix(raw_mode, 16).ok()?;
    let kind = match raw & 0o170_000 {
        0o100_000 => FileType::File,
        0o040_000 => FileType::Directory,
        0o120_000 => FileType::Symlink,
        _ => FileType::Other,
    };
    Some(PathStat {
        kind,
        mode: raw & 0o7777,
        owner: owner.to_string(),
        group: group.to_string(),
        size: size.parse().ok()?,
        sha256: None,
    })
}

/// The sections named `p:NAME` (by [`crate::run::probe::sections`], the
/// one parser of a batch's output), up to the `p:end` marker; `None` if
/// there is none (the batch was cut short).
fn split<'o>(nonce: &str, out: &'o [u8]) -> Option<Vec<(String, &'o [u8])>> {
    let all = crate::run::probe::sections(nonce, out);
    let end = all.iter().position(|(n, _)| n == "p:end")?;
    Some(
        all.into_iter()
            .take(end)
            .filter_map(|(n, body)| Some((n.strip_prefix("p:")?.to_string(), body)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(script: &Sh) -> Vec<u8> {
        let out = Command::new("sh").arg("-c").arg(script.as_str()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn sha(b: &[u8]) -> String {
        crate::module::sha256_hex(b)
    }

    /// A temp folder holding one file `f` with `content`, and its path.
    fn one_file(content: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, content).unwrap();
        let f = f.to_str().unwrap().to_string();
        (dir, f)
    }

    /// Real files in a temp dir, read by the real script with the real
    /// `stat` and `sha256sum`: plain names, odd names, a directory, a
    /// symlink, a missing path, and content fetched only when it differs.
    #[test]
    fn one_batch_observes_every_kind_of_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let odd = format!("{d}/new\nline \\ 'q' $(x)");
        let spaced = format!("{d}/two  spaces  ");
        std::fs::write(format!("{d}/a"), b"alpha\n").unwrap();
        std::fs::write(&odd, b"odd").unwrap();
        std::fs::write(&spaced, b"no newline at end").unwrap();
        std::fs::create_dir(format!("{d}/sub")).unwrap();
        std::os::unix::fs::symlink("a", format!("{d}/link")).unwrap();
        let a = format!("{d}/a");
        let same = format!("{d}/same");
        std::fs::write(&same, b"same").unwrap();
        let mut b = PathBatch::default();
        b.add(&[
            PathQuery::hashed(&a).fetch(Fetch::UnlessSha256 {
                sha256: sha(b"alpha\n"),
                limit: 100,
            }),
            PathQuery::hashed(&odd).fetch(Fetch::UnlessSha256 {
                sha256: sha(b"other"),
                limit: 100,
            }),
            PathQuery::hashed(&spaced).fetch(Fetch::UnlessSha256 {
                sha256: sha(b"other"),
                limit: 100,
            }),
            PathQuery::hashed(format!("{d}/sub")),
            PathQuery::hashed(format!("{d}/link")).fetch(Fetch::Always { limit: 100 }),
            PathQuery::stat(format!("{d}/missing")),
            PathQuery::hashed(&same).fetch(Fetch::UnlessSha256 {
                sha256: sha(b"same"),
                limit: 100,
            }),
        ]);
        let out = run(&b.script("n0nce"));
        let ans = b.parse("n0nce", &out).expect("complete");
        let st = |p: &str| ans.paths[p].clone().unwrap().unwrap();
        assert_eq!(st(&a).kind, FileType::File);
        assert_eq!(st(&a).size, 6);
        assert_eq!(st(&a).owner, "root");
        assert_eq!(st(&a).sha256.as_deref(), Some(sha(b"alpha\n").as_str()));
        assert_eq!(st(&odd).sha256.as_deref(), Some(sha(b"odd").as_str()));
        assert_eq!(st(&spaced).sha256.as_deref(), Some(sha(b"no newline at end").as_str()));
        assert_eq!(st(&format!("{d}/sub")).kind, FileType::Directory);
        assert_eq!(st(&format!("{d}/sub")).sha256, None);
        assert_eq!(st(&format!("{d}/link")).kind, FileType::Symlink);
        assert_eq!(st(&format!("{d}/link")).sha256, None);
        assert_eq!(ans.paths[&format!("{d}/missing")], Ok(None));
        // Content as wanted: not fetched. Different: fetched byte for byte
        // (batched and one by one). A symlink: never read.
        let got = |p: &str| ans.contents.get(p).map(Vec::as_slice);
        assert_eq!(got(&a), None);
        assert_eq!(got(&same), None);
        assert_eq!(got(&odd), Some(&b"odd"[..]));
        assert_eq!(got(&spaced), Some(&b"no newline at end"[..]));
        assert_eq!(got(&format!("{d}/link")), None);
        assert_eq!(ans.contents.len(), 2);
    }

    /// More paths than one command takes: every chunk is observed, and only
    /// the files that differ are fetched.
    #[test]
    fn many_paths_are_observed_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let n = CHUNK * 2 + 7;
        let mut queries = Vec::new();
        for i in 0..n {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, format!("{i}")).unwrap();
            let p = p.to_str().unwrap().to_string();
            queries.push(match i % 3 {
                0 => PathQuery::hashed(&p).fetch(Fetch::UnlessSha256 {
                    sha256: sha(format!("{i}").as_bytes()),
                    limit: 10,
                }),
                1 => PathQuery::hashed(&p).fetch(Fetch::UnlessSha256 {
                    sha256: sha(b"other"),
                    limit: 10,
                }),
                _ => PathQuery::hashed(&p),
            });
        }
        let mut b = PathBatch::default();
        b.add(&queries);
        let ans = b.parse("n", &run(&b.script("n"))).unwrap();
        for (i, q) in queries.iter().enumerate() {
            let st = ans.paths[&q.path].clone().unwrap().unwrap();
            assert_eq!(st.sha256, Some(sha(format!("{i}").as_bytes())), "{}", q.path);
            assert_eq!(ans.contents.contains_key(&q.path), i % 3 == 1, "{}", q.path);
        }
    }

    #[test]
    fn one_path_asked_twice_is_read_once_with_both_needs() {
        let (_dir, p) = one_file(b"0123456789");
        let p = p.as_str();
        let mut b = PathBatch::default();
        b.add(&[
            PathQuery::stat(p),
            PathQuery::hashed(p).fetch(Fetch::UnlessSha256 {
                sha256: sha(b"0123456789"),
                limit: 4,
            }),
            PathQuery::stat(p).fetch(Fetch::Always { limit: 20 }),
        ]);
        let out = run(&b.script("n"));
        assert_eq!(
            out.windows(5).filter(|w| w == b"@@n:p").count(),
            5,
            "stat, its errors, sums, one content, end"
        );
        let ans = b.parse("n", &out).unwrap();
        assert_eq!(ans.paths[p].clone().unwrap().unwrap().sha256, Some(sha(b"0123456789")));
        assert_eq!(ans.contents[p], b"0123456789");
    }

    #[test]
    fn a_fifo_or_a_device_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let fifo = fifo.to_str().unwrap();
        let mut b = PathBatch::default();
        b.add(&[
            PathQuery::hashed(fifo).fetch(Fetch::UnlessSha256 {
                sha256: sha(b""),
                limit: 10,
            }),
            PathQuery::hashed("/dev/zero").fetch(Fetch::Always { limit: 10 }),
        ]);
        let out = run(&b.script("n"));
        let ans = b.parse("n", &out).unwrap();
        assert_eq!(ans.paths[fifo].clone().unwrap().unwrap().kind, FileType::Other);
        assert_eq!(ans.paths["/dev/zero"].clone().unwrap().unwrap().kind, FileType::Other);
        assert!(ans.contents.is_empty());
    }

    #[test]
    fn a_differing_file_over_the_limit_has_its_sha256_but_no_content() {
        let (_dir, big) = one_file(&vec![b'x'; 5000]);
        let big = big.as_str();
        let mut b = PathBatch::default();
        b.add(&[PathQuery::hashed(big).fetch(Fetch::UnlessSha256 {
            sha256: sha(b"y"),
            limit: 100,
        })]);
        let ans = b.parse("n", &run(&b.script("n"))).unwrap();
        assert_eq!(
            ans.paths[big].clone().unwrap().unwrap().sha256,
            Some(sha(&[b'x'; 5000]))
        );
        // Fetched up to the limit and one byte: the caller drops it.
        assert_eq!(ans.contents[big].len(), 101);
    }

    /// A `sha256sum` that fails as a broken or missing one would: nothing
    /// may be taken for a match.
    #[test]
    fn a_failing_checksum_command_is_an_error_not_a_match() {
        let (dir, f) = one_file(b"same");
        let f = f.as_str();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("sha256sum");
        std::fs::write(&fake, "#!/bin/sh\necho \"$@: OK\"\nexit 2\n").unwrap();
        assert!(Command::new("chmod").arg("755").arg(&fake).status().unwrap().success());
        let mut b = PathBatch::default();
        b.add(&[PathQuery::hashed(f).fetch(Fetch::UnlessSha256 {
            sha256: sha(b"same"),
            limit: 100,
        })]);
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = Command::new("sh")
            .arg("-c")
            .arg(b.script("n").as_str())
            .env("PATH", path)
            .output()
            .unwrap();
        let ans = b.parse("n", &out.stdout).unwrap();
        assert!(ans.paths[f].is_err(), "{:?}", ans.paths[f]);
    }

    /// The real `getent` of this machine: `root` exists as a user and a
    /// group; made-up names do not; a numeric id needs no entry.
    #[test]
    fn users_and_groups_are_looked_up_in_the_same_batch() {
        let mut b = PathBatch::default();
        b.add(&[PathQuery::stat("/")]);
        b.add_accounts(&[
            Account::User("root".into()),
            Account::User("plumb-no-such-user".into()),
            Account::User("4242".into()),
            Account::User("-x".into()),
            Account::Group("root".into()),
            Account::Group("plumb-no-such-group".into()),
        ]);
        let ans = b.parse("n", &run(&b.script("n"))).unwrap();
        let missing: Vec<&Account> = ans.missing.iter().collect();
        assert_eq!(
            missing,
            [
                &Account::User("-x".into()),
                &Account::User("plumb-no-such-user".into()),
                &Account::Group("plumb-no-such-group".into()),
            ]
        );
        assert!(ans.paths["/"].is_ok());
    }

    #[test]
    fn a_cut_output_is_not_an_answer() {
        let mut b = PathBatch::default();
        b.add(&[PathQuery::stat("/")]);
        let out = run(&b.script("n0nce"));
        assert!(b.parse("n0nce", &out).is_some());
        let cut = &out[..out.len() - 5];
        assert!(b.parse("n0nce", cut).is_none());
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_not_an_absence() {
        let mut b = PathBatch::default();
        b.add(&[PathQuery::hashed("/x/y")]);
        let out = b"\n@@n:p:stat\n81a4\t3\troot\troot\t/x/y\n@@n:p:sums\n\n@@n:p:end\n";
        let ans = b.parse("n", out).unwrap();
        assert!(ans.paths["/x/y"].as_ref().unwrap_err().contains("cannot read"));
    }

    /// Names with spaces (`domain users` from a directory service) are
    /// fields, not separators.
    #[test]
    fn an_owner_or_group_with_a_space_is_read_whole() {
        let mut b = PathBatch::default();
        b.add(&[PathQuery::stat("/x/y")]);
        let out = b"\n@@n:p:stat\n81a4\t3\tjo smith\tdomain users\t/x/y\n@@n:p:staterr\n\n@@n:p:sums\n\n@@n:p:end\n";
        let st = b.parse("n", out).unwrap().paths["/x/y"].clone().unwrap().unwrap();
        assert_eq!(
            (st.owner.as_str(), st.group.as_str(), st.size),
            ("jo smith", "domain users", 3)
        );
    }

    /// Only "no such file" means absent: a path that cannot be looked at
    /// (a folder without permission) is an error, named in the message or not.
    #[test]
    fn a_path_that_cannot_be_looked_at_is_an_error_not_an_absence() {
        let mut b = PathBatch::default();
        b.add(&[PathQuery::stat("/root/x"), PathQuery::stat("/srv/new")]);
        let out = b"\n@@n:p:stat\n\n@@n:p:staterr\nstat: cannot statx '/root/x': Permission denied\nstat: cannot statx '/srv/new': No such file or directory\n\n@@n:p:sums\n\n@@n:p:end\n";
        let ans = b.parse("n", out).unwrap();
        assert!(ans.paths["/root/x"].as_ref().unwrap_err().contains("Permission denied"));
        assert_eq!(ans.paths["/srv/new"], Ok(None));
        // For real, as a user who may not enter the folder.
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("f"), b"x").unwrap();
        let f = locked.join("f").to_str().unwrap().to_string();
        let odd = locked.join("o\\dd").to_str().unwrap().to_string();
        let mut b = PathBatch::default();
        b.add(&[PathQuery::stat(&f), PathQuery::stat(&odd)]);
        let sh = format!(
            "chmod 700 '{}' && chmod 755 '{}' && setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"$0\"",
            locked.display(),
            dir.path().display()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&sh)
            .arg(b.script("n").as_str())
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let ans = b.parse("n", &out.stdout).unwrap();
        assert!(
            ans.paths[&f].as_ref().unwrap_err().contains("Permission denied"),
            "{:?}",
            ans.paths
        );
        assert!(
            ans.paths[&odd].as_ref().unwrap_err().contains("Permission denied"),
            "{:?}",
            ans.paths
        );
    }

    /// A FIFO with an unusual name, compared with a wanted content: never
    /// opened (opening it would block the whole probe).
    #[test]
    fn an_unusual_fifo_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fi\\fo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let fifo = fifo.to_str().unwrap();
        let mut b = PathBatch::default();
        b.add(&[PathQuery::hashed(fifo).fetch(Fetch::UnlessSha256 {
            sha256: sha(b"x"),
            limit: 10,
        })]);
        let out = Command::new("timeout")
            .args(["20", "sh", "-c", b.script("n").as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "the probe blocked or failed: {out:?}");
        let ans = b.parse("n", &out.stdout).unwrap();
        assert_eq!(ans.paths[fifo].clone().unwrap().unwrap().kind, FileType::Other);
    }

    #[test]
    fn file_content_cannot_forge_a_marker_without_the_nonce() {
        let (_dir, p) = one_file(b"x\n@@guess:p:end\n@@guess:p:stat\n0 a b 1 /etc/shadow\n");
        let p = p.as_str();
        let mut b = PathBatch::default();
        b.add(&[PathQuery::hashed(p).fetch(Fetch::Always { limit: 1000 })]);
        let out = run(&b.script("s3cret"));
        let ans = b.parse("s3cret", &out).unwrap();
        assert_eq!(ans.paths.len(), 1);
        assert!(ans.contents[p].starts_with(b"x\n@@guess"));
    }
}
