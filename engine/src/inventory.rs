//! Inventories: hosts, groups, connection settings and variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diag::{did_you_mean, Diag};
use crate::plan::{read_source, Become, Located};
use crate::source::{Sources, Span};
use crate::yaml::{self, Value};

/// How plumb reaches a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// OpenSSH.
    #[default]
    Ssh,
    /// This machine, no SSH.
    Local,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    #[serde(rename = "become")]
    become_: Option<serde_json::Value>,
    identity: Option<String>,
    connection: Option<Connection>,
    max_sessions: Option<u32>,
    vars: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    hosts: Vec<String>,
    vars: Option<BTreeMap<String, serde_json::Value>>,
}

/// One host, resolved from the inventory's defaults and its own settings.
#[derive(Clone, Debug)]
pub struct Host {
    /// Inventory name.
    pub name: String,
    /// Address to connect to (default: the name).
    pub address: String,
    /// SSH port (`None`: from `~/.ssh/config`, else 22).
    pub port: Option<u16>,
    /// SSH user (`None`: from `~/.ssh/config`).
    pub user: Option<String>,
    /// Identity file.
    pub identity: Option<PathBuf>,
    /// SSH or local.
    pub connection: Connection,
    /// Whether resources run through sudo by default.
    pub become_: Become,
    /// sshd's MaxSessions for this host (commands in flight stay below it).
    pub max_sessions: u32,
    /// Host variables (already merged: defaults < groups < host).
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Groups the host belongs to.
    pub groups: Vec<String>,
}

/// A loaded inventory.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Where it came from (`None`: the built-in local default).
    pub path: Option<PathBuf>,
    /// Hosts, in file order.
    pub hosts: Vec<Host>,
    /// Groups and their member host names, in file order.
    pub groups: Vec<(String, Vec<String>)>,
}

impl Inventory {
    /// The built-in inventory: one local host named `localhost`.
    #[must_use]
    pub fn local_default() -> Self {
        Self {
            path: None,
            hosts: vec![Host {
                name: "localhost".into(),
                address: "localhost".into(),
                port: None,
                user: None,
                identity: None,
                connection: Connection::Local,
                become_: Become::No,
                max_sessions: 10,
                vars: BTreeMap::new(),
                groups: Vec::new(),
            }],
            groups: Vec::new(),
        }
    }

    /// The host named `name`.
    #[must_use]
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Every host and group name (for did-you-mean).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(self.groups.iter().map(|g| g.0.as_str()))
            .chain(["all"])
    }

    /// The hosts selected by `patterns` (host names, group names or `all`),
    /// in inventory order.
    ///
    /// # Errors
    /// A name that is neither a host nor a group, located.
    pub fn select(&self, patterns: &[Located]) -> Result<Vec<&Host>, Vec<Diag>> {
        let mut names = std::collections::BTreeSet::new();
        let mut diags = Vec::new();
        for p in patterns {
            if p.value == "all" {
                names.extend(self.hosts.iter().map(|h| h.name.as_str()));
            } else if let Some(h) = self.host(&p.value) {
                names.insert(h.name.as_str());
            } else if let Some((_, members)) = self.groups.iter().find(|g| g.0 == p.value) {
                names.extend(members.iter().map(String::as_str));
            } else {
                let where_ = self.path.as_ref().map_or_else(
                    || "the built-in inventory has only `localhost`".to_string(),
                    |p| format!("not in `{}`", p.display()),
                );
                diags.push(
                    Diag::new(
                        "plumb::plan::unknown_host",
                        format!("unknown host or group `{}`", p.value),
                        p.span,
                        where_,
                    )
                    .with_help_opt(did_you_mean(&p.value, self.names())),
                );
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(self.hosts.iter().filter(|h| names.contains(h.name.as_str())).collect())
    }
}

/// Where the inventory is when `-i` is not given: `inventory.yaml` beside the
/// plan, then in the current folder; `None` for the built-in local default.
#[must_use]
pub fn default_path(plan: &Path) -> Option<PathBuf> {
    let beside = plan.parent().unwrap_or(Path::new(".")).join("inventory.yaml");
    if beside.is_file() {
        return Some(beside);
    }
    let here = PathBuf::from("inventory.yaml");
    here.is_file().then_some(here)
}

/// Load an inventory file.
///
/// # Errors
/// Every problem found, located.
///
/// Variables keep the spelling of numbers and booleans as written (see
/// [`crate::template::written`]).
pub fn load(sources: &Sources, path: &Path) -> Result<Inventory, Vec<Diag>> {
    let display = path.display().to_string();
    let id = read_source(sources, path, &display).map_err(|d| vec![d])?;
    let root = yaml::parse(sources, id).map_err(|d| vec![d])?;
    let mut diags = Vec::new();
    let mut defaults = HostSpec::default();
    let mut hosts: Vec<(String, Span, HostSpec)> = Vec::new();
    let mut groups: Vec<(String, GroupSpec, Vec<Located>)> = Vec::new();
    let Some(entries) = root.as_map() else {
        return Err(vec![Diag::new(
            "plumb::inventory::not_a_mapping",
            "an inventory is a mapping with `hosts:`",
            root.span,
            "",
        )]);
    };
    for e in entries {
        match e.key.as_str() {
            "defaults" => match yaml::from_node::<HostSpec>(&e.value, e.key_span) {
                Ok(mut d) => {
                    d.vars = written_vars(&e.value).or(d.vars);
                    defaults = d;
                }
                Err(d) => diags.extend(d),
            },
            "hosts" => match &e.value.value {
                Value::Map(m) => {
                    for h in m {
                        let spec = if h.value.value == Value::Null {
                            Ok(HostSpec::default())
                        } else {
                            yaml::from_node::<HostSpec>(&h.value, h.key_span)
                        };
                        match spec {
                            Ok(mut s) => {
                                s.vars = written_vars(&h.value).or(s.vars);
                                hosts.push((h.key.clone(), h.key_span, s));
                            }
                            Err(d) => diags.extend(d),
                        }
                    }
                }
                Value::Null => {}
                _ => diags.push(Diag::new(
                    "plumb::plan::wrong_type",
                    "`hosts` is a mapping of host names to their settings",
                    e.value.span,
                    "",
                )),
            },
            "groups" => match &e.value.value {
                Value::Map(m) => {
                    for g in m {
                        match yaml::from_node::<GroupSpec>(&g.value, g.key_span) {
                            Ok(mut s) => {
                                s.vars = written_vars(&g.value).or(s.vars);
                                let members = g
                                    .value
                                    .get("hosts")
                                    .and_then(|h| match &h.value.value {
                                        Value::Seq(items) => Some(
                                            items
                                                .iter()
                                                .map(|n| Located {
                                                    value: n.as_str().unwrap_or_default().to_string(),
                                                    span: n.span,
                                                })
                                                .collect(),
                                        ),
                                        _ => None,
                                    })
                                    .unwrap_or_default();
                                groups.push((g.key.clone(), s, members));
                            }
                            Err(d) => diags.extend(d),
                        }
                    }
                }
                Value::Null => {}
                _ => diags.push(Diag::new(
                    "plumb::plan::wrong_type",
                    "`groups` is a mapping of group names",
                    e.value.span,
                    "",
                )),
            },
            other => diags.push(
                Diag::new(
                    "plumb::inventory::unknown_key",
                    format!("unknown key `{other}` in inventory"),
                    e.key_span,
                    "",
                )
                .with_help_opt(did_you_mean(other, ["defaults", "hosts", "groups"])),
            ),
        }
    }
    let host_names: Vec<&str> = hosts.iter().map(|h| h.0.as_str()).collect();
    for (_, _, members) in &groups {
        for m in members {
            if !host_names.contains(&m.value.as_str()) {
                diags.push(
                    Diag::new(
                        "plumb::inventory::unknown_host",
                        format!("group member `{}` is not a host", m.value),
                        m.span,
                        "",
                    )
                    .with_help_opt(did_you_mean(&m.value, host_names.iter().copied())),
                );
            }
        }
    }
    let mut inv = Inventory {
        path: Some(path.to_path_buf()),
        hosts: Vec::new(),
        groups: groups.iter().map(|(n, s, _)| (n.clone(), s.hosts.clone())).collect(),
    };
    for (name, span, spec) in hosts {
        let become_ = match spec.become_.as_ref().or(defaults.become_.as_ref()) {
            None | Some(serde_json::Value::Bool(false)) => Become::No,
            Some(serde_json::Value::Bool(true)) => Become::Root,
            Some(serde_json::Value::String(u)) if u == "root" => Become::Root,
            Some(serde_json::Value::String(u)) => Become::User(u.clone()),
            Some(_) => {
                diags.push(Diag::new(
                    "plumb::plan::wrong_type",
                    "`become` is `true`, `false` or a user name",
                    span,
                    "",
                ));
                Become::No
            }
        };
        let mut vars = defaults.vars.clone().unwrap_or_default();
        let mut member_of = Vec::new();
        for (g, gs, _) in &groups {
            if gs.hosts.contains(&name) {
                member_of.push(g.clone());
                vars.extend(gs.vars.clone().unwrap_or_default());
            }
        }
        vars.extend(spec.vars.clone().unwrap_or_default());
        inv.hosts.push(Host {
            address: spec.address.clone().unwrap_or_else(|| name.clone()),
            port: spec.port.or(defaults.port),
            user: spec.user.clone().or_else(|| defaults.user.clone()),
            identity: spec
                .identity
                .as_ref()
                .or(defaults.identity.as_ref())
                .map(|p| expand_home(p)),
            connection: spec.connection.or(defaults.connection).unwrap_or_default(),
            become_,
            max_sessions: spec.max_sessions.or(defaults.max_sessions).unwrap_or(10).max(1),
            vars,
            groups: member_of,
            name,
        });
    }
    if diags.is_empty() {
        Ok(inv)
    } else {
        Err(diags)
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The `vars:` of a host, group or the defaults, numbers and booleans with
/// their spelling kept.
fn written_vars(spec: &yaml::Node) -> Option<BTreeMap<String, serde_json::Value>> {
    let vars = spec.get("vars")?.value.as_map()?;
    Some(vars.iter().map(|v| (v.key.clone(), v.value.to_var_json())).collect())
}
