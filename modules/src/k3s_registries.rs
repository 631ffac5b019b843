//! `k3s.registries`: k3s's `/etc/rancher/k3s/registries.yaml`, `mirrors`
//! and `configs` as k3s documents them, typed (a misspelt key is an error
//! with a suggestion). The file is managed whole: plumb renders it, and a
//! file that holds the same settings (in any layout) is converged.
//!
//! Credentials (`configs.<registry>.auth`) are secret by nature: their
//! changes are marked secret (hidden in every output), the text diff is
//! made from renderings with credentials masked and is left out whenever a
//! credential changes, and the file is written with mode 0600.

use indexmap::IndexMap;
use plumb_engine::module::{
    text_diff, Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, PathQuery, ProbeOutput,
    Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_file::{
    compare, field_name, inspect_config, leaf_change, parse_config, write_steps, ConfigFile, Leaf,
};
use crate::stat::{metadata_changes, metadata_script, Kind};

/// The `k3s.registries` module.
pub struct K3sRegistries;

/// A mirror: where to pull a registry's images from.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    endpoint: Vec<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    rewrite: IndexMap<String, String>,
}

/// Credentials for a registry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_token: Option<String>,
}

/// TLS settings for a registry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_skip_verify: Option<bool>,
}

/// A registry's credentials and TLS settings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

/// The file's document, as k3s reads it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    mirrors: IndexMap<String, Mirror>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    configs: IndexMap<String, RegistryConfig>,
}

/// Parameters of `k3s.registries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    mirrors: IndexMap<String, Mirror>,
    #[serde(default)]
    configs: IndexMap<String, RegistryConfig>,
    #[serde(default = "default_path")]
    path: String,
    #[serde(skip)]
    doc: Value,
    #[serde(skip)]
    text: String,
}

fn default_path() -> String {
    "/etc/rancher/k3s/registries.yaml".into()
}

/// registries.yaml holds credentials: readable by root only.
const MODE: u32 = 0o600;

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    file: ConfigFile,
    /// The file's document (`Ok(None)`: no file), or where it is not YAML.
    #[serde(skip)]
    doc: Result<Option<Value>, String>,
}

/// Whether a difference at `path` may show a credential.
fn secret_path(path: &[String]) -> bool {
    path.first().is_some_and(|p| p == "configs") && (path.len() < 3 || path[2] == "auth")
}

/// `doc` with every credential replaced by a mask, for diffs.
fn masked(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(configs) = d.get_mut("configs") {
        match configs {
            Value::Object(regs) => {
                for reg in regs.values_mut() {
                    match reg {
                        Value::Object(r) => {
                            if let Some(auth) = r.get_mut("auth") {
                                match auth {
                                    Value::Object(a) => {
                                        for v in a.values_mut() {
                                            *v = Value::String("********".into());
                                        }
                                    }
                                    other => *other = Value::String("********".into()),
                                }
                            }
                        }
                        other => *other = Value::String("********".into()),
                    }
                }
            }
            other => *other = Value::String("********".into()),
        }
    }
    d
}

/// The YAML text of a document.
pub(crate) fn render_yaml(doc: &Value) -> String {
    if doc.as_object().is_some_and(serde_json::Map::is_empty) {
        return "{}\n".into();
    }
    serde_saphyr::to_string(doc).expect("JSON values serialize as YAML")
}

fn read_doc(text: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    // Only the place of a syntax error is reported: the message may quote
    // the file, and the file holds credentials.
    serde_saphyr::from_str::<Value>(text).map_err(|e| match e.location() {
        Some(l) => format!("not valid YAML at line {}, column {}", l.line(), l.column()),
        None => "not valid YAML".to_string(),
    })
}

fn secret_change(l: &Leaf) -> Change {
    let field = field_name(&l.path);
    let mask = |v: &Option<Value>| v.as_ref().map(|_| "(secret)".to_string());
    Change::new(field, mask(&l.from), mask(&l.to)).secret()
}

/// What to do to the registries file, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistriesPlan {
    /// Write it (missing, unreadable, or its registries differ).
    pub write: bool,
    /// Only set its mode to 0600.
    pub chmod: bool,
}

impl Module for K3sRegistries {
    const NAME: &'static str = "k3s.registries";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "k3s's registries.yaml: `mirrors` (endpoint, rewrite) and `configs` (auth: username, \
                      password, auth, identity_token; tls: ca_file, cert_file, key_file, insecure_skip_verify), \
                      as k3s documents them. The file is plumb's whole (mode 0600, backed up when replaced); a \
                      file with the same settings in another layout is converged. Credentials are secret by \
                      nature: never printed, in no report; their changes show as `(sensitive)` and the diff is \
                      made with credentials masked (and left out when a credential changes). k3s reads the \
                      file when it starts: notify the `k3s` service.",
            params: &[
                ParamDoc {
                    name: "mirrors",
                    ty: "map of registry → {endpoint, rewrite}",
                    default: "none",
                    doc: "Mirrors per registry name (`docker.io`): `endpoint` (list of URLs), `rewrite` (regex → replacement).",
                },
                ParamDoc {
                    name: "configs",
                    ty: "map of registry → {auth, tls}",
                    default: "none",
                    doc: "Per registry host: `auth` {username, password, auth, identity_token}, `tls` {ca_file, cert_file, key_file, insecure_skip_verify}.",
                },
                ParamDoc {
                    name: "path",
                    ty: "absolute path",
                    default: "/etc/rancher/k3s/registries.yaml",
                    doc: "The file on the host (its folder is created if missing).",
                },
            ],
            example: "- id: k3s-registries\n  k3s.registries:\n    mirrors:\n      docker.io: {endpoint: [\"https://harbor.example.net\"]}\n    configs:\n      harbor.example.net:\n        auth: {username: robot, password: \"{{ env('HARBOR_PASSWORD') }}\"}\n        tls: {ca_file: /etc/docker/certs.d/harbor.example.net/ca.crt}\n  notify: [k3s]\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("path", &p.path);
        for (name, m) in &p.mirrors {
            for e in &m.endpoint {
                if !(e.starts_with("https://") || e.starts_with("http://")) {
                    cx.error(
                        &format!("mirrors.{name}.endpoint"),
                        "plumb::plan::invalid_value",
                        format!("mirror endpoint `{e}` of `{name}` is not an http(s) URL"),
                        Some(format!("write it with its scheme: `https://{e}`")),
                    );
                }
            }
        }
        let doc = Registries {
            mirrors: std::mem::take(&mut p.mirrors),
            configs: std::mem::take(&mut p.configs),
        };
        p.doc = serde_json::to_value(&doc).expect("registries serialize");
        p.text = render_yaml(&p.doc);
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            provides: Vec::new(),
            needs: vec![Claim::Path(p.path.clone())],
            manages: vec![Claim::Path(p.path.clone())],
        }
    }

    fn inspect(p: &Params) -> Vec<PathQuery> {
        inspect_config(&p.path)
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let file = parse_config(&p.path, out)?;
        let doc = file.document(read_doc);
        Ok(State { file, doc })
    }

    type Plan = RegistriesPlan;

    fn plan(p: &Params, s: &State) -> RegistriesPlan {
        let exists = s.file.info.kind == Kind::File;
        let write = !exists
            || match &s.doc {
                Err(_) => true,
                Ok(old) => compare(old.as_ref(), Some(&p.doc)).into_iter().next().is_some(),
            };
        let mut meta = Changes::none();
        if exists {
            metadata_changes(&s.file.info, Some(MODE), None, None, &mut meta);
        }
        RegistriesPlan {
            write,
            chmod: !meta.is_empty(),
        }
    }

    fn changes(p: &Params, s: &State, _plan: &RegistriesPlan) -> Changes {
        let mut c = Changes::none();
        let exists = s.file.info.kind == Kind::File;
        if !exists {
            c.push(Change::new("state", Some("absent".into()), Some("file".into())));
        }
        match &s.doc {
            Err(e) => c.push(Change::new(
                "content",
                Some(e.clone()),
                Some("the plan's registries".into()),
            )),
            Ok(old) => {
                for leaf in compare(old.as_ref(), Some(&p.doc)) {
                    c.push(if secret_path(&leaf.path) {
                        secret_change(&leaf)
                    } else {
                        leaf_change(&leaf)
                    });
                }
            }
        }
        if !c.is_empty() {
            let old = match &s.doc {
                Ok(Some(d)) => Some(render_yaml(&masked(d))),
                _ => None,
            };
            if exists == old.is_some() {
                let new = render_yaml(&masked(&p.doc));
                c.diff = text_diff(old.as_deref().map(str::as_bytes), new.as_bytes(), &p.path);
            }
        }
        if exists {
            metadata_changes(&s.file.info, Some(MODE), None, None, &mut c);
        }
        c
    }

    fn apply(p: &Params, s: &State, plan: &RegistriesPlan) -> Vec<Step> {
        if plan.write {
            return write_steps(&s.file, &p.path, p.text.clone(), Some(MODE), None);
        }
        if !plan.chmod {
            return Vec::new();
        }
        metadata_script(&p.path, &s.file.info, Some(MODE), None, None)
            .map(|sh| {
                vec![Step::run(
                    format!("chmod 0600 {}", p.path),
                    Sh::raw_start("set -e\n").then(&sh),
                )]
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "mirrors": {"docker.io": {"endpoint": ["https://harbor.example.net"], "rewrite": {"^rancher/(.*)": "mirror/$1"}}},
            "configs": {"harbor.example.net": {
                "auth": {"username": "robot", "password": "yes"},
                "tls": {"ca_file": "/etc/ca.crt", "insecure_skip_verify": false}
            }}
        })
    }

    #[test]
    fn the_rendered_file_reads_back_as_the_same_document() {
        let mut d = doc();
        // Strings YAML would read as something else must stay strings.
        d["configs"]["harbor.example.net"]["auth"]["auth"] = json!("0123");
        d["configs"]["tricky: #x"] = json!({"auth": {"password": "a'b\"c\n: - *x"}});
        let text = render_yaml(&d);
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, d, "{text}");
        let typed: Registries = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), d);
    }

    #[test]
    fn credentials_are_masked_and_their_changes_secret() {
        let text = render_yaml(&masked(&doc()));
        assert!(!text.contains("robot") && !text.contains("yes"), "{text}");
        assert!(text.contains("ca_file"));
        let old = json!({"configs": {"harbor.example.net": {"auth": {"password": "old"}}}});
        let leaves = compare(Some(&old), Some(&doc()));
        let secret: Vec<String> = leaves
            .iter()
            .filter(|l| secret_path(&l.path))
            .map(|l| field_name(&l.path))
            .collect();
        assert_eq!(
            secret,
            [
                "configs.\"harbor.example.net\".auth.username",
                "configs.\"harbor.example.net\".auth.password"
            ]
        );
        let c = secret_change(leaves.iter().find(|l| l.path.last().unwrap() == "password").unwrap());
        assert!(c.sensitive && c.from.as_deref() == Some("(secret)"));
    }

    #[test]
    fn yaml_errors_say_where_and_never_what() {
        let e = read_doc(b"configs:\n  r:\n    auth: {password: hunter2\n").unwrap_err();
        assert!(e.starts_with("not valid YAML"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
