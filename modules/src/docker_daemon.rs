//! `docker.daemon`: Docker's `daemon.json`, managed as JSON rather than as
//! text. The keys in `settings` are set; every other key of the file is kept,
//! in its place. Maps merge deeply (`log-opts: {max-size: 100m}` sets that
//! one option and keeps the file's other log options); lists and scalars are
//! replaced whole; `null` removes a key. `replace: true` makes the file
//! exactly `settings`.
//!
//! A file that is not valid JSON is never merged into (it may be a half-made
//! edit: plumb cannot know what it meant) and so never overwritten, except
//! with `replace: true`, which asks for exactly that. When the host has a
//! `dockerd` that knows `--validate`, the new file is checked by it before
//! it replaces the old one.

use plumb_engine::module::{
    text_diff, Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, PathQuery, Prediction,
    ProbeOutput, Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config_file::{compare, inspect_config, leaf_change, parse_config, write_steps, ConfigFile};
use crate::stat::Kind;

/// The `docker.daemon` module.
pub struct DockerDaemon;

/// Parameters of `docker.daemon`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    settings: Map<String, Value>,
    #[serde(default)]
    replace: bool,
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/etc/docker/daemon.json".into()
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    file: ConfigFile,
    /// The file's settings (`Ok(None)`: no file), or why it cannot be read.
    #[serde(skip)]
    doc: Result<Option<Map<String, Value>>, String>,
    /// Whether the host's `dockerd` can check a configuration file.
    dockerd_validate: bool,
}

/// The command that checks a staged `daemon.json`.
const VALIDATE: &str = "dockerd --validate --config-file %s";

fn read_doc(text: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "its top level is {}, not an object",
            match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `settings` merged into `doc`: maps deeply, `null` removes, anything else
/// replaces; existing keys keep their place, new keys go last.
fn merge(doc: &mut Map<String, Value>, settings: &Map<String, Value>) {
    for (k, v) in settings {
        match v {
            Value::Null => {
                doc.shift_remove(k);
            }
            Value::Object(sub) => {
                if !matches!(doc.get(k), Some(Value::Object(_))) {
                    doc.insert(k.clone(), Value::Object(Map::new()));
                }
                if let Some(Value::Object(target)) = doc.get_mut(k) {
                    merge(target, sub);
                }
            }
            other => {
                doc.insert(k.clone(), other.clone());
            }
        }
    }
}

impl Params {
    /// The document the file must hold, given what it holds now.
    fn desired(&self, current: Option<&Map<String, Value>>) -> Map<String, Value> {
        let mut doc = if self.replace {
            Map::new()
        } else {
            current.cloned().unwrap_or_default()
        };
        merge(&mut doc, &self.settings);
        doc
    }
}

fn render(doc: &Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("JSON values serialize");
    s.push('\n');
    s
}

impl State {
    /// The current document, when the file's content can be merged into.
    fn current(&self) -> Option<&Map<String, Value>> {
        self.doc.as_ref().ok().and_then(Option::as_ref)
    }
}

/// What to do: write these settings (the file is missing, not JSON, or
/// differs from them), or nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonPlan {
    /// The settings to write (the plan's, merged into the file's unless
    /// `replace`).
    write: Option<Map<String, Value>>,
}

impl Module for DockerDaemon {
    const NAME: &'static str = "docker.daemon";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "Docker's daemon.json, managed as JSON: the keys in `settings` are set and every other key \
                      of the file is kept where it is. Maps merge deeply (`log-opts: {max-size: 100m}` sets that \
                      option and keeps the file's other log options); lists and scalars are replaced whole; a \
                      `null` value removes the key. The diff names each key that changes \
                      (`log-opts.max-size: (none) → 100m`) and shows the file's unified diff. A file that says \
                      the same in another layout is converged. A file that is not valid JSON is an error and \
                      is left untouched (unless `replace: true`). When the host's `dockerd` knows \
                      `--validate`, the new file is checked with it before it replaces the old one; the old \
                      file is backed up.",
            params: &[
                ParamDoc {
                    name: "settings",
                    ty: "map",
                    default: "required",
                    doc: "The keys plumb manages, as daemon.json spells them; `null` removes a key.",
                },
                ParamDoc {
                    name: "replace",
                    ty: "bool",
                    default: "false",
                    doc: "Make the file exactly `settings` (other keys are removed; an invalid file is overwritten).",
                },
                ParamDoc {
                    name: "path",
                    ty: "absolute path",
                    default: "/etc/docker/daemon.json",
                    doc: "The file on the host (its folder is created if missing).",
                },
            ],
            example: "- id: daemon-json\n  docker.daemon:\n    settings:\n      registry-mirrors: [\"https://harbor.example.net\"]\n      log-driver: json-file\n      log-opts: {max-size: 100m, max-file: \"3\"}\n  notify: [docker]\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("path", &p.path);
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            provides: Vec::new(),
            needs: vec![Claim::Path(p.path.clone())],
            manages: vec![Claim::Path(p.path.clone())],
        }
    }

    fn probe(_p: &Params) -> Sh {
        Sh::raw_start(
            "if command -v dockerd >/dev/null 2>&1 && dockerd --help 2>&1 | grep -q -e '--validate'; then echo dockerd_validate=1; fi",
        )
    }

    fn inspect(p: &Params) -> Vec<PathQuery> {
        inspect_config(&p.path)
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let file = parse_config(&p.path, out)?;
        let doc = file.document(read_doc);
        Ok(State {
            file,
            doc,
            dockerd_validate: out.fields().get("dockerd_validate") == Some("1"),
        })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        match &s.doc {
            Err(e) if !p.replace => Err(Failure::from(format!(
                "`{}` is not valid JSON ({e}); plumb leaves it untouched",
                p.path
            ))
            .with_hint("fix it by hand, or set `replace: true` to overwrite it with exactly `settings`")),
            _ => Ok(()),
        }
    }

    fn predict(p: &Params, s: &State) -> Prediction<State> {
        match (&s.doc, p.replace) {
            (Err(e), false) => Prediction::Unknown(format!("`{}` is not valid JSON now ({e})", p.path)),
            _ => Prediction::Probed,
        }
    }

    type Plan = DaemonPlan;

    fn plan(p: &Params, s: &State) -> DaemonPlan {
        let want = p.desired(s.current());
        let write = s.file.info.kind != Kind::File
            || match &s.doc {
                Err(_) => true,
                Ok(cur) => {
                    let old = cur.clone().map(Value::Object);
                    !compare(old.as_ref(), Some(&Value::Object(want.clone()))).is_empty()
                }
            };
        DaemonPlan {
            write: write.then_some(want),
        }
    }

    fn changes(p: &Params, s: &State, plan: &DaemonPlan) -> Changes {
        let mut c = Changes::none();
        let Some(want) = &plan.write else {
            return c;
        };
        let exists = s.file.info.kind == Kind::File;
        if !exists {
            c.push(Change::new("state", Some("absent".into()), Some("file".into())));
        }
        match &s.doc {
            Err(e) => c.push(Change::new(
                "content",
                Some(format!("not valid JSON ({e})")),
                Some(format!("exactly `settings` ({} keys)", want.len())),
            )),
            Ok(cur) => {
                let old = cur.clone().map(Value::Object);
                let new = Value::Object(want.clone());
                for leaf in compare(old.as_ref(), Some(&new)) {
                    c.push(leaf_change(&leaf));
                }
            }
        }
        let old = if exists { s.file.text.as_deref() } else { None };
        c.diff = text_diff(old, render(want).as_bytes(), &p.path);
        c
    }

    fn apply(p: &Params, s: &State, plan: &DaemonPlan) -> Vec<Step> {
        let Some(want) = &plan.write else {
            return Vec::new();
        };
        write_steps(
            &s.file,
            &p.path,
            render(want),
            None,
            s.dockerd_validate.then(|| VALIDATE.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn params(settings: Value, replace: bool) -> Params {
        Params {
            settings: map(settings),
            replace,
            path: default_path(),
        }
    }

    #[test]
    fn merge_keeps_other_keys_in_their_place_and_appends_new_ones() {
        let p = params(
            json!({"log-opts": {"max-size": "100m"}, "debug": true, "new": 1}),
            false,
        );
        let cur = map(json!({"debug": false, "z": 1, "log-opts": {"max-file": "3"}, "a": 2}));
        let got = render(&p.desired(Some(&cur)));
        assert_eq!(
            got,
            "{\n  \"debug\": true,\n  \"z\": 1,\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"100m\"\n  },\n  \"a\": 2,\n  \"new\": 1\n}\n"
        );
    }

    #[test]
    fn null_removes_a_key_without_moving_the_others() {
        let p = params(json!({"b": null, "log-opts": {"x": null}}), false);
        let cur = map(json!({"a": 1, "b": 2, "c": 3, "log-opts": {"x": "1", "y": "2"}}));
        let keys: Vec<String> = p.desired(Some(&cur)).keys().cloned().collect();
        assert_eq!(keys, ["a", "c", "log-opts"]);
        assert_eq!(p.desired(Some(&cur))["log-opts"], json!({"y": "2"}));
    }

    #[test]
    fn replace_is_exactly_the_settings() {
        let p = params(json!({"b": 1, "a": {"k": null, "j": 2}}), true);
        let cur = map(json!({"a": {"k": 1}, "c": 3}));
        assert_eq!(Value::Object(p.desired(Some(&cur))), json!({"b": 1, "a": {"j": 2}}));
    }

    #[test]
    fn documents_that_are_not_objects_or_json_are_refused() {
        assert!(read_doc(b"[1]").unwrap_err().contains("a list"));
        assert!(read_doc(b"{\"a\": 1,").unwrap_err().contains("line 1"));
        assert!(read_doc(b" \n").unwrap().is_empty());
    }
}
