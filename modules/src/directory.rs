//! `directory`: a directory and its metadata. Removing a non-empty directory
//! needs `recursive: true` and is a destructive change.

use plumb_engine::module::{
    Account, Change, Changes, Claim, Claims, CompileCx, Failure, FileMode, Module, ModuleDoc, ParamDoc, PathQuery,
    Presence, ProbeOutput, Risk, Step,
};
use plumb_engine::shell::Sh;
use plumb_engine::units::count;
use serde::{Deserialize, Serialize};

use crate::stat::{accounts, done, fields, metadata_changes, metadata_script, observed, Kind, PathInfo};

/// The `directory` module.
pub struct Directory;

/// Parameters of `directory`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    path: String,
    mode: Option<FileMode>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    state: Presence,
    #[serde(default)]
    recursive: bool,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    info: PathInfo,
    entries: u64,
}

/// What to do to the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirPlan {
    /// Nothing.
    Keep,
    /// Make the folder (with its metadata).
    Create,
    /// Set its mode, owner or group.
    Metadata,
    /// Remove what is there (a folder with its contents only with
    /// `recursive`, which `parse` checked).
    Remove,
}

impl Module for Directory {
    const NAME: &'static str = "directory";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A directory and its metadata. Missing parents are created. Files and directories under \
                      a managed directory implicitly require it. `state: absent` removes it; a non-empty \
                      directory is removed only with `recursive: true` (a destructive change).",
            params: &[
                ParamDoc {
                    name: "path",
                    ty: "absolute path",
                    default: "required",
                    doc: "The directory on the host.",
                },
                ParamDoc {
                    name: "mode",
                    ty: "\"0755\"",
                    default: "kept; umask for a new one",
                    doc: "Permission bits, as a quoted octal string.",
                },
                ParamDoc {
                    name: "owner",
                    ty: "user name",
                    default: "kept",
                    doc: "Owner (a user that exists on the host: `diff` checks it).",
                },
                ParamDoc {
                    name: "group",
                    ty: "group name",
                    default: "kept",
                    doc: "Group (one that exists on the host: `diff` checks it).",
                },
                ParamDoc {
                    name: "state",
                    ty: "present | absent",
                    default: "present",
                    doc: "Whether it exists.",
                },
                ParamDoc {
                    name: "recursive",
                    ty: "bool",
                    default: "false",
                    doc: "With `absent`: also remove what it contains.",
                },
            ],
            example: "- id: app-dir\n  directory:\n    path: /srv/app\n    mode: \"0750\"\n    owner: root\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("path", &p.path);
        if p.path.trim_end_matches('/').is_empty() {
            cx.error(
                "path",
                "plumb::plan::invalid_value",
                "`/` cannot be managed as a directory",
                None,
            );
        }
        if p.recursive && p.state == Presence::Present {
            cx.error(
                "recursive",
                "plumb::plan::conflicting_params",
                "`recursive` only has a meaning with `state: absent`",
                None,
            );
        }
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            // `dir`: what a bind mount of this very directory needs.
            provides: vec![
                Claim::Path(p.path.clone()),
                Claim::Key("dir", crate::fstab::normalize(&p.path).to_string()),
            ],
            needs: vec![Claim::Path(p.path.clone())],
            manages: vec![Claim::Path(p.path.clone())],
        }
    }

    fn inspect(p: &Params) -> Vec<PathQuery> {
        vec![PathQuery::stat(&p.path)]
    }

    fn accounts(p: &Params) -> Vec<Account> {
        match p.state {
            Presence::Present => accounts(p.owner.as_deref(), p.group.as_deref()),
            Presence::Absent => Vec::new(),
        }
    }

    fn probe(p: &Params) -> Sh {
        // Whether it is empty only matters to a removal.
        if p.state == Presence::Absent {
            Sh::raw_start("if [ -d")
                .arg(&p.path)
                .raw(" ] && [ ! -L")
                .arg(&p.path)
                .raw(" ]; then echo \"entries=$(ls -A --")
                .arg(&p.path)
                .raw(" | wc -l)\"; fi")
        } else {
            Sh::new()
        }
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let (info, _) = observed(out, &p.path)?;
        let entries = f.get("entries").and_then(|e| e.trim().parse().ok()).unwrap_or(0);
        match info.kind {
            Kind::None | Kind::Directory => {}
            k if p.state == Presence::Present => {
                return Err(Failure::from(format!(
                    "`{}` exists and is a {}, not a directory",
                    p.path,
                    k.describe()
                )))
            }
            _ => {}
        }
        if p.state == Presence::Absent && entries > 0 && !p.recursive {
            return Err(Failure::from(format!(
                "`{}` is not empty ({})",
                p.path,
                count(entries, "entry", "entries")
            ))
            .with_hint("set `recursive: true` to remove it with its contents"));
        }
        Ok(State { info, entries })
    }

    type Plan = DirPlan;

    fn plan(p: &Params, s: &State) -> DirPlan {
        if p.state == Presence::Absent {
            return if s.info.kind == Kind::None {
                DirPlan::Keep
            } else {
                DirPlan::Remove
            };
        }
        if s.info.kind == Kind::None {
            return DirPlan::Create;
        }
        let mut meta = Changes::none();
        metadata_changes(
            &s.info,
            p.mode.map(|m| m.0),
            p.owner.as_deref(),
            p.group.as_deref(),
            &mut meta,
        );
        if meta.is_empty() {
            DirPlan::Keep
        } else {
            DirPlan::Metadata
        }
    }

    fn changes(p: &Params, s: &State, plan: &DirPlan) -> Changes {
        let mut c = Changes::none();
        match plan {
            DirPlan::Keep => {}
            DirPlan::Remove => {
                let risk = if s.entries > 0 { Risk::Destructive } else { Risk::Safe };
                let from = if s.entries > 0 {
                    format!(
                        "{} with {}",
                        s.info.kind.describe(),
                        count(s.entries, "entry", "entries")
                    )
                } else {
                    s.info.kind.describe().to_string()
                };
                c.push(Change::new("state", Some(from), Some("absent".into())).risk(risk));
            }
            DirPlan::Create | DirPlan::Metadata => {
                if *plan == DirPlan::Create {
                    c.push(Change::new("state", Some("absent".into()), Some("directory".into())));
                }
                metadata_changes(
                    &s.info,
                    p.mode.map(|m| m.0),
                    p.owner.as_deref(),
                    p.group.as_deref(),
                    &mut c,
                );
            }
        }
        c
    }

    fn apply(p: &Params, s: &State, plan: &DirPlan) -> Vec<Step> {
        let mut sh = Sh::raw_start("set -e\n");
        match plan {
            DirPlan::Keep => Vec::new(),
            DirPlan::Remove => {
                let cmd = match (s.info.kind == Kind::Directory, s.entries) {
                    (true, 0) => "rmdir --",
                    (true, _) => "rm -rf --",
                    (false, _) => "rm -f --",
                };
                sh.line(&Sh::raw_start(cmd).arg(&p.path));
                vec![Step::run(format!("remove {}", p.path), sh)]
            }
            DirPlan::Create | DirPlan::Metadata => {
                if *plan == DirPlan::Create {
                    sh.line(&Sh::raw_start("mkdir -p --").arg(&p.path));
                    sh.line(&done(&format!("created {}", p.path)));
                }
                if let Some(m) = metadata_script(
                    &p.path,
                    &s.info,
                    p.mode.map(|m| m.0),
                    p.owner.as_deref(),
                    p.group.as_deref(),
                ) {
                    sh.line(&m);
                }
                vec![Step::run(
                    if *plan == DirPlan::Create {
                        format!("create {}", p.path)
                    } else {
                        format!("set metadata of {}", p.path)
                    },
                    sh,
                )]
            }
        }
    }
}
