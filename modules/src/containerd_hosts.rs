//! `containerd.hosts`: containerd's per-registry `hosts.toml`
//! (`<dir>/<registry>/hosts.toml`, the `config_path` registry configuration):
//! the upstream `server` and the `host` entries tried in order, each with its
//! capabilities, CA and TLS verification. The file is managed whole and
//! compared as a document: the same settings in another layout are
//! converged. Rendered as TOML, host entries in the plan's order.

use indexmap::IndexMap;
use plumb_engine::module::{
    text_diff, Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, PathQuery, ProbeOutput,
    Step,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_file::{compare, inspect_config, leaf_change, parse_config, write_steps, ConfigFile};
use crate::stat::Kind;

/// The `containerd.hosts` module.
pub struct ContainerdHosts;

/// What a host may be used for.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Fetch content by digest.
    Pull,
    /// Resolve a name to a digest.
    Resolve,
    /// Push content.
    Push,
}

/// One path or several.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `[host."URL"]` entry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    #[serde(skip_serializing)]
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<Capability>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    override_path: Option<bool>,
}

/// Parameters of `containerd.hosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    registry: String,
    server: Option<String>,
    #[serde(default)]
    hosts: Vec<HostEntry>,
    #[serde(default = "default_dir")]
    dir: String,
    #[serde(skip)]
    path: String,
    #[serde(skip)]
    doc: Value,
    #[serde(skip)]
    text: String,
}

fn default_dir() -> String {
    "/etc/containerd/certs.d".into()
}

/// The file's document, as containerd reads it.
#[derive(Serialize)]
struct HostsToml<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    host: IndexMap<&'a str, &'a HostEntry>,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    file: ConfigFile,
    #[serde(skip)]
    doc: Result<Option<Value>, String>,
}

fn is_url(s: &str) -> bool {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty())
}

/// The TOML text of a document.
pub(crate) fn render_toml(doc: &Value) -> String {
    toml::to_string(doc).expect("a hosts.toml document serializes as TOML")
}

fn read_doc(text: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_string())?;
    toml::from_str::<Value>(text).map_err(|e| format!("not valid TOML: {}", e.message()))
}

/// What to do: write the file (missing, unreadable, or its hosts differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostsPlan {
    /// Write it.
    write: bool,
}

impl Module for ContainerdHosts {
    const NAME: &'static str = "containerd.hosts";
    type Params = Params;
    type State = State;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "containerd's hosts.toml for one registry (`<dir>/<registry>/hosts.toml`, read when \
                      containerd's registry `config_path` points at `dir`): the upstream `server` and the \
                      `host` entries containerd tries in order, each with `capabilities`, `ca`, `skip_verify`. \
                      The file is plumb's whole (backed up when replaced) and compared as a document: the same \
                      settings in another layout are converged. containerd reads it on every pull: no \
                      restart is needed.",
            params: &[
                ParamDoc {
                    name: "registry",
                    ty: "registry host",
                    default: "required",
                    doc: "The registry the file configures (`docker.io`, `harbor.example.net:5000`, `_default`).",
                },
                ParamDoc {
                    name: "server",
                    ty: "URL",
                    default: "none",
                    doc: "The registry's own endpoint, tried after the hosts.",
                },
                ParamDoc {
                    name: "hosts",
                    ty: "list of {url, capabilities, ca, skip_verify, override_path}",
                    default: "none",
                    doc: "Mirrors in order: `url`, `capabilities` (pull, resolve, push), `ca` (path or list), `skip_verify`, `override_path`.",
                },
                ParamDoc {
                    name: "dir",
                    ty: "absolute path",
                    default: "/etc/containerd/certs.d",
                    doc: "containerd's `config_path` (the registry's folder in it is created if missing).",
                },
            ],
            example: "- id: docker-io-mirror\n  containerd.hosts:\n    registry: docker.io\n    server: https://registry-1.docker.io\n    hosts:\n      - url: https://harbor.example.net/v2/dockerhub\n        capabilities: [pull, resolve]\n        ca: /etc/containerd/certs.d/harbor.example.net/ca.crt\n        override_path: true\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        cx.require_absolute("dir", &p.dir);
        let r = &p.registry;
        if r.is_empty() || r == "." || r == ".." || r.contains('/') || r.chars().any(char::is_whitespace) {
            cx.error(
                "registry",
                "plumb::plan::invalid_value",
                format!("`{r}` is not a registry host"),
                Some(
                    "a registry is a host name with an optional port (`harbor.example.net:5000`), or `_default`".into(),
                ),
            );
        }
        if let Some(s) = &p.server {
            if !is_url(s) {
                cx.error(
                    "server",
                    "plumb::plan::invalid_value",
                    format!("`server` `{s}` is not an http(s) URL"),
                    None,
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &p.hosts {
            if !is_url(&h.url) {
                cx.error(
                    "hosts",
                    "plumb::plan::invalid_value",
                    format!("host `{}` is not an http(s) URL", h.url),
                    Some(format!("write it with its scheme: `https://{}`", h.url)),
                );
            }
            if !seen.insert(h.url.as_str()) {
                cx.error(
                    "hosts",
                    "plumb::plan::invalid_value",
                    format!("host `{}` is listed twice", h.url),
                    None,
                );
            }
        }
        p.path = format!("{}/{}/hosts.toml", p.dir.trim_end_matches('/'), p.registry);
        let doc = HostsToml {
            server: p.server.as_deref(),
            host: p.hosts.iter().map(|h| (h.url.as_str(), h)).collect(),
        };
        p.doc = serde_json::to_value(&doc).expect("hosts.toml serializes");
        p.text = render_toml(&p.doc);
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

    type Plan = HostsPlan;

    fn plan(p: &Params, s: &State) -> HostsPlan {
        HostsPlan {
            write: s.file.info.kind != Kind::File
                || match &s.doc {
                    Err(_) => true,
                    Ok(old) => !compare(old.as_ref(), Some(&p.doc)).is_empty(),
                },
        }
    }

    fn changes(p: &Params, s: &State, plan: &HostsPlan) -> Changes {
        let mut c = Changes::none();
        if !plan.write {
            return c;
        }
        let exists = s.file.info.kind == Kind::File;
        if !exists {
            c.push(Change::new("state", Some("absent".into()), Some("file".into())));
        }
        match &s.doc {
            Err(e) => c.push(Change::new("content", Some(e.clone()), Some("the plan's hosts".into()))),
            Ok(old) => {
                for leaf in compare(old.as_ref(), Some(&p.doc)) {
                    c.push(leaf_change(&leaf));
                }
            }
        }
        let old = if exists { s.file.text.as_deref() } else { None };
        c.diff = text_diff(old, p.text.as_bytes(), &p.path);
        c
    }

    fn apply(p: &Params, s: &State, plan: &HostsPlan) -> Vec<Step> {
        if !plan.write {
            return Vec::new();
        }
        write_steps(&s.file, &p.path, p.text.clone(), None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rendered_file_is_containerd_s_layout_and_reads_back() {
        let doc = json!({
            "server": "https://registry-1.docker.io",
            "host": {
                "https://harbor.example.net/v2/dockerhub": {"capabilities": ["pull", "resolve"], "ca": "/etc/ca.crt", "override_path": true},
                "http://10.0.0.1:5000": {"capabilities": ["pull"], "skip_verify": true, "ca": ["/a.crt", "/b.crt"]}
            }
        });
        let text = render_toml(&doc);
        assert!(
            text.starts_with("server = \"https://registry-1.docker.io\"\n"),
            "{text}"
        );
        assert!(
            text.contains("[host.\"https://harbor.example.net/v2/dockerhub\"]"),
            "{text}"
        );
        let first = text.find("harbor.example.net").unwrap();
        let second = text.find("10.0.0.1").unwrap();
        assert!(first < second, "hosts keep their order: {text}");
        assert_eq!(read_doc(text.as_bytes()).unwrap(), doc);
    }

    #[test]
    fn invalid_toml_is_reported() {
        assert!(read_doc(b"server = ").unwrap_err().starts_with("not valid TOML"));
    }
}
