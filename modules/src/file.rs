//! `file`: a file's content and metadata. Content comes from the plan
//! (`content`), a local file (`source`) or a local minijinja template
//! (`template`); it is written atomically and verified by sha256 on the host.

use plumb_engine::module::{
    text_diff, Account, Change, Changes, Claim, Claims, CompileCx, Failure, Fetch, FileMode, FileWrite, Module,
    ModuleDoc, ParamDoc, PathQuery, Payload, Presence, ProbeOutput, Risk, Step,
};
use plumb_engine::shell::Sh;
use plumb_engine::write::backup_lines;
use serde::{Deserialize, Serialize};

use crate::stat::{accounts, metadata_changes, metadata_script, observed, Kind, PathInfo};

/// Old content up to this size is fetched by the probe to show a diff.
const DIFF_LIMIT: u64 = 256 * 1024;

/// The `file` module.
pub struct File;

/// Parameters of `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    path: String,
    content: Option<String>,
    source: Option<String>,
    template: Option<String>,
    mode: Option<FileMode>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    state: Presence,
    #[serde(default = "plumb_engine::module::yes")]
    backup: bool,
    validate: Option<String>,
    #[serde(skip)]
    payload: Option<Payload>,
    #[serde(skip)]
    fetch_old: bool,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    info: PathInfo,
    sha256: Option<String>,
    #[serde(skip)]
    old: Option<Vec<u8>>,
}

impl Params {
    fn want_sha(&self) -> Option<&str> {
        self.payload.as_ref().map(|p| p.sha256.as_str())
    }
}

fn short(sha: &str) -> String {
    format!("sha256:{}", &sha[..12.min(sha.len())])
}

/// What to do to the file, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilePlan {
    /// Nothing.
    Keep,
    /// Write its content (and metadata) atomically.
    Write,
    /// Set its metadata only.
    Metadata,
    /// Remove it.
    Remove,
}

/// What nothing at a path looks like.
const BLANK: PathInfo = PathInfo {
    kind: Kind::None,
    mode: None,
    owner: None,
    group: None,
    size: None,
};

impl Module for File {
    const NAME: &'static str = "file";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A file's content and metadata. The new content is streamed into a temp file beside the \
                      target, its sha256 is checked on the host, the `validate` command (if any) runs on it, the \
                      old file is backed up under /var/lib/plumb/backups/<run>/, and it is renamed over the \
                      target: the file is always either the old one or the new one. Without content, the file \
                      is created empty if missing and only its metadata is managed.",
            params: &[
                ParamDoc { name: "path", ty: "absolute path", default: "required", doc: "The file on the host." },
                ParamDoc { name: "content", ty: "string", default: "-", doc: "The exact content (templated like every value)." },
                ParamDoc { name: "source", ty: "local path", default: "-", doc: "A local file to copy, relative to the plan's folder." },
                ParamDoc { name: "template", ty: "local path", default: "-", doc: "A local minijinja template, rendered with the host's variables." },
                ParamDoc { name: "mode", ty: "\"0644\"", default: "kept; 0644 for a new file", doc: "Permission bits, as a quoted octal string." },
                ParamDoc { name: "owner", ty: "user name", default: "kept", doc: "Owner (a user that exists on the host: `diff` checks it)." },
                ParamDoc { name: "group", ty: "group name", default: "kept", doc: "Group (one that exists on the host: `diff` checks it)." },
                ParamDoc { name: "state", ty: "present | absent", default: "present", doc: "`absent` removes the file (backed up first)." },
                ParamDoc { name: "backup", ty: "bool", default: "true", doc: "Keep a copy of a replaced or removed file." },
                ParamDoc { name: "validate", ty: "command with %s", default: "-", doc: "Run on the staged file (%s is its path) before it replaces the old one; a failure leaves the old file untouched." },
            ],
            example: "- id: motd\n  file:\n    path: /etc/motd\n    content: \"Managed by plumb\\n\"\n    mode: \"0644\"\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("path", &p.path);
        let given: Vec<&str> = [
            ("content", p.content.is_some()),
            ("source", p.source.is_some()),
            ("template", p.template.is_some()),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
        if given.len() > 1 {
            cx.error(
                given[1],
                "plumb::plan::conflicting_params",
                format!("`{}` and `{}` both give the file's content", given[0], given[1]),
                Some("use one of `content`, `source` or `template`".into()),
            );
        }
        if p.state == Presence::Absent {
            if let Some(k) = given.first() {
                cx.error(
                    k,
                    "plumb::plan::conflicting_params",
                    format!("`{k}` has no meaning with `state: absent`"),
                    None,
                );
            }
        }
        if let Some(v) = &p.validate {
            if !v.contains("%s") {
                cx.error(
                    "validate",
                    "plumb::plan::invalid_value",
                    "`validate` must contain `%s`, the path of the staged file",
                    Some(format!("for example: `{v} %s`")),
                );
            }
        }
        p.payload = if let Some(c) = &p.content {
            Some(Payload::bytes(c.as_bytes().to_vec()))
        } else if let Some(s) = &p.source {
            cx.read_local("source", s)
        } else if let Some(t) = &p.template {
            cx.render_local("template", t)
                .map(|text| Payload::bytes(text.into_bytes()))
        } else {
            None
        };
        p.fetch_old = !cx.sensitive();
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            provides: Vec::new(),
            needs: vec![Claim::Path(p.path.clone())],
            manages: vec![Claim::Path(p.path.clone())],
        }
    }

    fn inspect(p: &Params) -> Vec<PathQuery> {
        vec![match (p.want_sha(), p.fetch_old) {
            // The old content, for the diff, only when it is to be replaced.
            (Some(want), true) => PathQuery::hashed(&p.path).fetch(Fetch::UnlessSha256 {
                sha256: want.to_string(),
                limit: DIFF_LIMIT,
            }),
            (Some(_), false) => PathQuery::hashed(&p.path),
            // Without content, only the metadata is managed.
            (None, _) => PathQuery::stat(&p.path),
        }]
    }

    fn accounts(p: &Params) -> Vec<Account> {
        match p.state {
            Presence::Present => accounts(p.owner.as_deref(), p.group.as_deref()),
            Presence::Absent => Vec::new(),
        }
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let (info, sha256) = observed(out, &p.path)?;
        match (info.kind, p.state) {
            (Kind::Directory, _) => return Err(Failure::from(format!("`{}` is a directory, not a file", p.path))),
            (Kind::Other, Presence::Present) => {
                return Err(Failure::from(format!(
                    "`{}` is a special file, not a regular file",
                    p.path
                )))
            }
            _ => {}
        }
        Ok(State {
            sha256,
            old: out.content(&p.path).map(<[u8]>::to_vec),
            info,
        })
    }

    type Plan = FilePlan;

    fn plan(p: &Params, s: &State) -> FilePlan {
        let exists = s.info.kind != Kind::None;
        if p.state == Presence::Absent {
            return if exists { FilePlan::Remove } else { FilePlan::Keep };
        }
        let content = p
            .payload
            .as_ref()
            .is_some_and(|want| s.sha256.as_deref() != Some(want.sha256.as_str()));
        if !exists || s.info.kind == Kind::Link || content {
            return FilePlan::Write;
        }
        let mut c = Changes::none();
        let info = if s.info.kind == Kind::File { &s.info } else { &BLANK };
        metadata_changes(
            info,
            p.mode.map(|m| m.0),
            p.owner.as_deref(),
            p.group.as_deref(),
            &mut c,
        );
        if c.is_empty() {
            FilePlan::Keep
        } else {
            FilePlan::Metadata
        }
    }

    fn changes(p: &Params, s: &State, _plan: &FilePlan) -> Changes {
        let mut c = Changes::none();
        if p.state == Presence::Absent {
            if s.info.kind != Kind::None {
                let risk = if p.backup { Risk::Safe } else { Risk::Destructive };
                c.push(Change::new("state", Some(s.info.kind.describe().into()), Some("absent".into())).risk(risk));
            }
            return c;
        }
        let exists = s.info.kind != Kind::None;
        if !exists {
            c.push(Change::new("state", Some("absent".into()), Some("file".into())));
        } else if s.info.kind == Kind::Link {
            c.push(Change::new("state", Some("symlink".into()), Some("file".into())));
        }
        match &p.payload {
            Some(want) if s.sha256.as_deref() != Some(want.sha256.as_str()) => {
                let from = s
                    .sha256
                    .as_ref()
                    .map(|h| format!("{} ({} bytes)", short(h), s.info.size.unwrap_or(0)));
                c.push(Change::new(
                    "content",
                    from,
                    Some(format!("{} ({} bytes)", short(&want.sha256), want.size)),
                ));
                if p.fetch_old {
                    let old = if exists { s.old.as_deref() } else { None };
                    if !exists || old.is_some() {
                        c.diff = want
                            .read_small(DIFF_LIMIT)
                            .and_then(|new| text_diff(old, &new, &p.path));
                    }
                }
            }
            _ => {}
        }
        let mode = p.mode.map(|m| m.0).or(if exists { None } else { Some(0o644) });
        let info = if exists && s.info.kind == Kind::File {
            &s.info
        } else {
            &BLANK
        };
        metadata_changes(info, mode, p.owner.as_deref(), p.group.as_deref(), &mut c);
        c
    }

    fn apply(p: &Params, s: &State, plan: &FilePlan) -> Vec<Step> {
        if *plan == FilePlan::Keep {
            return Vec::new();
        }
        if *plan == FilePlan::Remove {
            let mut sh = Sh::raw_start("set -e\ntarget=").val(&p.path).raw("\n");
            if p.backup {
                sh.line(&backup_lines());
            }
            sh.line(&Sh::raw_start("rm -f -- \"$target\""));
            return vec![Step::run(format!("remove {}", p.path), sh)];
        }
        if *plan == FilePlan::Write {
            let payload = p.payload.clone().unwrap_or_else(|| Payload::bytes(Vec::new()));
            return vec![Step::Write(FileWrite {
                path: p.path.clone(),
                payload,
                mode: p.mode.map(|m| m.0),
                owner: p.owner.clone(),
                group: p.group.clone(),
                validate: p.validate.clone(),
                backup: p.backup,
            })];
        }
        metadata_script(
            &p.path,
            &s.info,
            p.mode.map(|m| m.0),
            p.owner.as_deref(),
            p.group.as_deref(),
        )
        .map(|sh| {
            vec![Step::run(
                format!("set metadata of {}", p.path),
                Sh::raw_start("set -e\n").then(&sh),
            )]
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumb_engine::module::sha256_hex;

    #[test]
    fn sha_is_shortened_for_display() {
        assert_eq!(short(&sha256_hex(b"")), "sha256:e3b0c44298fc");
    }
}
