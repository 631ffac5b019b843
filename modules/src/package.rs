//! `package`: distribution packages, installed or absent. apt first: the
//! probe asks `dpkg-query` what is installed (and, for what is missing,
//! whether apt has a candidate to install); one `apt-get install -y` then
//! installs every missing name of the resource, one `apt-get remove -y`
//! removes every present one. `apt-get` runs with
//! `DEBIAN_FRONTEND=noninteractive`, keeps changed configuration files, and
//! waits for the dpkg lock instead of failing on it.
//!
//! Removal is `disruptive`: apt also removes what depends on a removed
//! package; the probe simulates the removal and the diff names them.

use plumb_engine::module::{
    Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, Presence, ProbeOutput, Risk, Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};

use crate::stat::fields;

/// The `package` module.
pub struct Package;

/// One name or a list of names.
#[derive(Debug)]
pub struct Names(Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a package name or a list of package names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Names, E> {
                Ok(Names(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Names(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parameters of `package`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    name: Names,
    #[serde(default)]
    state: Presence,
    #[serde(default)]
    update_cache: bool,
}

/// A `package` resource that removes `names` (what `plumb rollback
/// --remove-packages` adds for the packages a run installed).
#[must_use]
pub fn removal(names: Vec<String>) -> std::sync::Arc<dyn plumb_engine::module::Resource> {
    plumb_engine::module::resource_of::<Package>(Params {
        name: Names(names),
        state: Presence::Absent,
        update_cache: false,
    })
}

/// What to do: install the missing packages, or remove those present (apt
/// removes their dependents with them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackagePlan {
    /// Install these.
    Install(Vec<String>),
    /// Remove these; apt takes `dependents` too.
    Remove {
        /// The named packages that are installed.
        present: Vec<String>,
        /// What depends on them (`apt-get -s remove` says).
        dependents: Vec<String>,
    },
}

/// One package as the host has it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Installed {
    name: String,
    /// Installed version (`None`: not installed).
    version: Option<String>,
    /// apt's install candidate (probed for missing packages only).
    candidate: Option<String>,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    /// `apt`, another package manager's name, or `none`.
    manager: String,
    packages: Vec<Installed>,
    /// What `apt-get remove` would remove besides the named packages.
    also_removed: Vec<String>,
}

/// Debian package names (policy 5.6.7), with an optional `:arch`.
fn valid_name(n: &str) -> bool {
    let (name, arch) = match n.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (n, None),
    };
    let ok_name = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let ok_arch = arch.is_none_or(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    ok_name && ok_arch
}

/// `apt-get` with the options every call needs.
fn apt_get(verb: &'static str) -> Sh {
    Sh::raw_start(
        "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ",
    )
    .raw(verb)
}

impl State {
    fn missing(&self) -> impl Iterator<Item = &Installed> {
        self.packages.iter().filter(|p| p.version.is_none())
    }

    fn present(&self) -> impl Iterator<Item = &Installed> {
        self.packages.iter().filter(|p| p.version.is_some())
    }
}

impl Module for Package {
    const NAME: &'static str = "package";
    type Params = Params;
    type State = State;
    const CREATES_ACCOUNTS: bool = true;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "Distribution packages, installed or absent. apt for now (Debian, Ubuntu): `dpkg-query` \
                      probes what is installed, one `apt-get install -y` installs every missing name of the \
                      resource (DEBIAN_FRONTEND=noninteractive, changed configuration files kept, the dpkg \
                      lock waited for), `state: absent` runs one `apt-get remove -y` (configuration files \
                      stay; a package left with only them counts as absent). `diff` says when apt has no \
                      candidate for a name (a typo, or package lists to update) and, for a removal, what else \
                      apt would remove with it. Name real packages, not virtual ones. Hosts without apt are \
                      refused with a clear error.",
            params: &[
                ParamDoc {
                    name: "name",
                    ty: "string or list of strings",
                    default: "required",
                    doc: "Package names (`nginx`, `libc6:amd64`).",
                },
                ParamDoc {
                    name: "state",
                    ty: "present | absent",
                    default: "present",
                    doc: "Installed, or not.",
                },
                ParamDoc {
                    name: "update_cache",
                    ty: "bool",
                    default: "false",
                    doc: "Run `apt-get update` before installing (only when something is to be installed).",
                },
            ],
            example: "- id: tools\n  package: {name: [curl, jq]}\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        if p.name.0.is_empty() {
            cx.error("name", "plumb::plan::invalid_value", "`name` lists no package", None);
        }
        for n in &p.name.0 {
            if !valid_name(n) {
                cx.error(
                    "name",
                    "plumb::plan::invalid_value",
                    format!("`{n}` is not a package name"),
                    Some("package names are lowercase letters, digits and `+-.`, optionally with `:arch`".into()),
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        p.name.0.retain(|n| seen.insert(n.clone()));
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            manages: p.name.0.iter().map(|n| Claim::Key("package", n.clone())).collect(),
            ..Claims::default()
        }
    }

    fn probe(p: &Params) -> Sh {
        let mut names = Sh::new();
        for n in &p.name.0 {
            names = names.arg(n);
        }
        let mut s = Sh::raw_start(
            "if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then echo manager=apt\n\
             else for m in dnf yum zypper apk pacman; do if command -v \"$m\" >/dev/null 2>&1; then echo \"manager=$m\"; exit 0; fi; done; echo manager=none; exit 0; fi\n\
             for n in ",
        )
        .then(&names)
        .raw(
            "; do\n  \
             v=$(dpkg-query -W -f='${db:Status-Status} ${Version}\\n' -- \"$n\" 2>/dev/null | sed -n 's/^installed //p' | head -n 1)\n  \
             if [ -n \"$v\" ]; then echo \"installed=$n $v\"; else\n    \
             c=$(apt-cache policy -- \"$n\" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n 1)\n    \
             echo \"missing=$n ${c:-(none)}\"\n  fi\ndone",
        );
        if p.state == Presence::Absent {
            // A simulation: what apt would remove (read-only, no lock taken).
            s = s.raw("\nset -- ").then(&names).raw(
                "\nkeep=\nfor n in \"$@\"; do if dpkg-query -W -f='${db:Status-Status}' -- \"$n\" 2>/dev/null | grep -q '^installed'; then keep=\"$keep $n\"; fi; done\n\
                 if [ -n \"$keep\" ]; then apt-get -s -q remove -- $keep 2>/dev/null | sed -n 's/^Remv \\([^ ]*\\) .*/removes=\\1/p'; fi",
            );
        }
        s
    }

    fn parse(_p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let manager = f.get("manager").unwrap_or("none").to_string();
        let mut packages = Vec::new();
        for line in f.all("installed") {
            let (name, version) = line.split_once(' ').unwrap_or((line, ""));
            packages.push(Installed {
                name: name.to_string(),
                version: Some(version.to_string()),
                candidate: None,
            });
        }
        for line in f.all("missing") {
            let (name, cand) = line.split_once(' ').unwrap_or((line, "(none)"));
            packages.push(Installed {
                name: name.to_string(),
                version: None,
                candidate: (cand != "(none)" && !cand.is_empty()).then(|| cand.to_string()),
            });
        }
        Ok(State {
            manager,
            packages,
            also_removed: f.all("removes").map(str::to_string).collect(),
        })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        match s.manager.as_str() {
            "apt" => {}
            "none" => {
                return Err(Failure::from(
                    "this host has no supported package manager: the `package` module uses apt (dpkg-query, apt-get)",
                ))
            }
            other => {
                return Err(Failure::from(format!(
                    "this host uses `{other}`, which the `package` module does not support yet: it uses apt (dpkg-query, apt-get)"
                )))
            }
        }
        if p.state == Presence::Present && !p.update_cache {
            let unknown: Vec<&str> = s
                .missing()
                .filter(|m| m.candidate.is_none())
                .map(|m| m.name.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(Failure::from(format!(
                    "apt has no installation candidate for {}: check the name, or set `update_cache: true` to run `apt-get update` first",
                    plumb_engine::diag::ticked(&unknown)
                )));
            }
        }
        Ok(())
    }

    type Plan = PackagePlan;

    fn plan(p: &Params, s: &State) -> PackagePlan {
        match p.state {
            Presence::Present => PackagePlan::Install(s.missing().map(|m| m.name.clone()).collect()),
            Presence::Absent => {
                let present: Vec<String> = s.present().map(|i| i.name.clone()).collect();
                let named: Vec<&str> = p.name.0.iter().map(|n| n.split(':').next().unwrap_or(n)).collect();
                let dependents = if present.is_empty() {
                    Vec::new()
                } else {
                    s.also_removed
                        .iter()
                        .filter(|r| !named.contains(&r.as_str()))
                        .cloned()
                        .collect()
                };
                PackagePlan::Remove { present, dependents }
            }
        }
    }

    fn changes(_p: &Params, s: &State, plan: &PackagePlan) -> Changes {
        let mut c = Changes::none();
        let find = |n: &str| s.packages.iter().find(|i| i.name == n);
        match plan {
            PackagePlan::Install(missing) => {
                for n in missing {
                    let to = find(n)
                        .and_then(|m| m.candidate.clone())
                        .unwrap_or_else(|| "latest".into());
                    c.push(Change::new(n.clone(), None, Some(to)));
                }
            }
            PackagePlan::Remove { present, dependents } => {
                for n in present {
                    let from = find(n).and_then(|i| i.version.clone());
                    c.push(Change::new(n.clone(), from, None).risk(Risk::Disruptive));
                }
                if !dependents.is_empty() {
                    c.push(
                        Change::new("also removed (dependents)", Some(dependents.join(", ")), None)
                            .risk(Risk::Disruptive),
                    );
                }
            }
        }
        c
    }

    fn apply(p: &Params, _s: &State, plan: &PackagePlan) -> Vec<Step> {
        match plan {
            PackagePlan::Install(missing) if !missing.is_empty() => {
                let mut sh = Sh::raw_start("set -e\n");
                if p.update_cache {
                    sh = sh.then(&apt_get("update")).raw("\n");
                }
                sh = sh.then(&apt_get("install")).raw(" --");
                for n in missing {
                    sh = sh.arg(n);
                }
                let label = format!(
                    "{}apt-get install {}",
                    if p.update_cache { "apt-get update; " } else { "" },
                    missing.join(" ")
                );
                vec![Step::run(label, sh)]
            }
            PackagePlan::Remove { present, .. } if !present.is_empty() => {
                let mut sh = apt_get("remove").raw(" --");
                for n in present {
                    sh = sh.arg(n);
                }
                vec![Step::run(format!("apt-get remove {}", present.join(" ")), sh)]
            }
            _ => Vec::new(),
        }
    }

    fn reprobe_after_requirements() -> bool {
        // An apt source or another package installed earlier in the run
        // changes what is installed and what can be.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in ["nginx", "libc6:amd64", "g++", "python3.11", "0ad"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-o", "Nginx", "a b", "x;y", "pkg:", "--purge"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_probe_output_reads_back() {
        let out = ProbeOutput {
            stdout: b"manager=apt\ninstalled=curl 7.88.1-10\nmissing=jq 1.6-2.1\nmissing=nope (none)\n".to_vec(),
            status: 0,
            ..Default::default()
        };
        let s = Package::parse(
            &Params {
                name: Names(vec![]),
                state: Presence::Present,
                update_cache: false,
            },
            &out,
        )
        .unwrap();
        assert_eq!(s.present().count(), 1);
        assert_eq!(
            s.missing().map(|m| m.candidate.as_deref()).collect::<Vec<_>>(),
            [Some("1.6-2.1"), None]
        );
    }
}
