//! Inventories: hosts, groups, connection settings and variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diag::{did_you_mean, Diag};
use crate::plan::{read_source, Become, Located};
use crate::source::Sources;
use crate::yaml;

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
    become_: Option<Become>,
    identity: Option<String>,
    connection: Option<Connection>,
    max_sessions: Option<u32>,
    #[serde(default)]
    vars: Vars,
}

/// Variables as written (see [`crate::template::written`]).
type Vars = BTreeMap<String, yaml::Written>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    hosts: Vec<Located>,
    #[serde(default)]
    vars: Vars,
}

/// An inventory file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    defaults: Option<HostSpec>,
    #[serde(default)]
    hosts: Named<Option<HostSpec>>,
    #[serde(default)]
    groups: Named<Option<GroupSpec>>,
}

/// A mapping of names to settings, in file order, each name with its place.
struct Named<T>(Vec<(Located, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of names to their settings")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Named<T>, E> {
                Ok(Named::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = map.next_entry()? {
                    items.push(item);
                }
                Ok(Named(items))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
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
    if root.as_map().is_none() {
        return Err(vec![Diag::new(
            "plumb::inventory::not_a_mapping",
            "an inventory is a mapping with `hosts:`",
            root.span,
            "",
        )]);
    }
    let (file, mut diags) = yaml::from_node_lenient::<InventoryFile>(&root, root.span);
    let Some(file) = file else {
        return Err(diags);
    };
    let defaults = file.defaults.unwrap_or_default();
    let groups: Vec<(String, GroupSpec)> = file
        .groups
        .0
        .into_iter()
        .map(|(name, spec)| (name.value, spec.unwrap_or_default()))
        .collect();
    let host_names: Vec<&str> = file.hosts.0.iter().map(|h| h.0.value.as_str()).collect();
    diags.extend(
        groups
            .iter()
            .flat_map(|g| &g.1.hosts)
            .filter(|m| !host_names.contains(&m.value.as_str()))
            .map(|m| {
                Diag::new(
                    "plumb::inventory::unknown_host",
                    format!("group member `{}` is not a host", m.value),
                    m.span,
                    "",
                )
                .with_help_opt(did_you_mean(&m.value, host_names.iter().copied()))
            }),
    );
    if !diags.is_empty() {
        return Err(diags);
    }
    let hosts = file.hosts.0.into_iter().map(|(name, spec)| {
        let spec = spec.unwrap_or_default();
        let name = name.value;
        let mut vars = defaults.vars.clone();
        let mut member_of = Vec::new();
        for (g, gs) in &groups {
            if gs.hosts.iter().any(|m| m.value == name) {
                member_of.push(g.clone());
                vars.extend(gs.vars.clone());
            }
        }
        vars.extend(spec.vars);
        Host {
            address: spec.address.unwrap_or_else(|| name.clone()),
            port: spec.port.or(defaults.port),
            user: spec.user.or_else(|| defaults.user.clone()),
            identity: spec
                .identity
                .as_ref()
                .or(defaults.identity.as_ref())
                .map(|p| expand_home(p)),
            connection: spec.connection.or(defaults.connection).unwrap_or_default(),
            become_: spec.become_.or_else(|| defaults.become_.clone()).unwrap_or(Become::No),
            max_sessions: spec.max_sessions.or(defaults.max_sessions).unwrap_or(10).max(1),
            vars: vars.into_iter().map(|(k, v)| (k, v.0)).collect(),
            groups: member_of,
            name,
        }
    });
    Ok(Inventory {
        path: Some(path.to_path_buf()),
        hosts: hosts.collect(),
        groups: groups
            .iter()
            .map(|(n, s)| (n.clone(), s.hosts.iter().map(|m| m.value.clone()).collect()))
            .collect(),
    })
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<Inventory, Vec<Diag>> {
        let dir = std::env::temp_dir().join(format!("plumb-inventory-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inventory.yaml");
        std::fs::write(&path, text).unwrap();
        let r = load(&Sources::new(), &path);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn every_bad_setting_of_every_host_and_every_unknown_member_is_reported_at_its_place() {
        let text = "hosts:\n  a:\n    port: eighty\n  b:\n    port: 99999\n    adress: x\ngroups:\n  web:\n    hosts: [a, c]\n";
        let errs = load_text("bad", text).unwrap_err();
        let at = |d: &Diag| d.labels[0].0.offset;
        let mut found: Vec<(usize, &str)> = errs.iter().map(|d| (at(d), d.code)).collect();
        found.sort_unstable();
        assert_eq!(
            found,
            [
                (text.find("eighty").unwrap(), "plumb::plan::wrong_type"),
                (text.find("99999").unwrap(), "plumb::plan::invalid_value"),
                (text.find("adress").unwrap(), "plumb::plan::unknown_param"),
                (text.find("c]").unwrap(), "plumb::inventory::unknown_host"),
            ],
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|d| d.message == "wrong type: found string \"eighty\", expected a whole number from 0 to 65535"),
            "a port is said as a user reads it: {errs:#?}"
        );
    }

    #[test]
    fn settings_and_variables_merge_in_order_and_keep_their_spelling() {
        let text = "defaults:\n  user: ops\n  become: true\n  vars: {mode: 0640, who: d}\n\
                    hosts:\n  a:\n    vars: {who: h}\n  b:\n    become: deploy\n    port: 2222\n\
                    groups:\n  web:\n    hosts: [b]\n    vars: {who: g, n: 1e3}\n";
        let inv = load_text("merge", text).unwrap();
        let (a, b) = (inv.host("a").unwrap(), inv.host("b").unwrap());
        assert_eq!(
            (a.user.as_deref(), &a.become_, a.port),
            (Some("ops"), &Become::Root, None)
        );
        assert_eq!((&b.become_, b.port), (&Become::User("deploy".into()), Some(2222)));
        assert_eq!(a.vars["who"], "h");
        assert_eq!(b.vars["who"], "g");
        assert_eq!(b.groups, ["web"]);
        assert_eq!(inv.groups, [("web".to_string(), vec!["b".to_string()])]);
        let spelled = |v: &serde_json::Value| crate::template::written(v.clone(), "");
        assert_ne!(a.vars["mode"], spelled(&640.into()), "the spelling 0640 is kept");
        assert_eq!(crate::template::typed_value(&a.vars["mode"]), 640);
        assert_eq!(crate::template::typed_value(&b.vars["n"]), 1000.0);
    }

    #[test]
    fn a_become_that_is_not_a_user_name_is_refused_at_its_value() {
        let text = "hosts:\n  a:\n    become: \"-oProxyCommand=x\"\n";
        let errs = load_text("become", text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].message.contains("is not a user name"), "{}", errs[0].message);
        assert_eq!(errs[0].labels[0].0.offset, text.find("\"-o").unwrap());
    }
}
