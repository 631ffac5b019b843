//! `service`: a systemd unit, running or stopped, enabled or not. A notify
//! restarts it, once per run, after every notifier (the engine orders and
//! deduplicates notifications); a unit that this run starts anyway is not
//! restarted on top, and a unit meant to be stopped is never started by a
//! notify. When systemd says a unit file changed on disk
//! (`NeedDaemonReload`), `systemctl daemon-reload` runs first.
//!
//! A unit that fails to start fails the resource with the tail of its
//! journal, both when `systemctl start` fails and when the unit dies right
//! after (seen by the verifying probe).

use plumb_engine::module::{
    downtime_fn, Change, Changes, Claim, Claims, CompileCx, Failure, Module, ModuleDoc, ParamDoc, Prediction,
    ProbeOutput, Risk, Step,
};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};

use crate::stat::fields;

/// The `service` module.
pub struct Service;

/// `running` or `stopped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Running {
    /// Active.
    Running,
    /// Inactive.
    Stopped,
}

/// Parameters of `service`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    name: String,
    state: Option<Running>,
    enabled: Option<bool>,
    #[serde(skip)]
    unit: String,
}

/// Whether the host has systemd as its init.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Systemd {
    /// systemd runs the host.
    Running,
    /// No `systemctl` at all.
    Absent,
    /// `systemctl` exists but systemd is not PID 1 (a container, a chroot).
    Offline,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct State {
    systemd: Systemd,
    /// `LoadState`: loaded, not-found, masked, …
    load: String,
    /// `ActiveState`: active, inactive, failed, activating, …
    active: String,
    /// `systemctl is-enabled`: enabled, disabled, static, masked, …
    enabled: String,
    /// `NeedDaemonReload`: the unit file changed since systemd read it.
    need_reload: bool,
    /// The journal's tail when the unit has failed (not fingerprinted).
    #[serde(skip)]
    journal: Option<String>,
}

/// The unit name as systemd spells it: `docker` is `docker.service`.
/// The longest unit name systemd accepts (its `UNIT_NAME_MAX` less the NUL).
const UNIT_NAME_MAX: usize = 255;

fn unit_name(name: &str) -> String {
    const TYPES: [&str; 11] = [
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".mount",
        ".automount",
        ".path",
        ".slice",
        ".scope",
        ".swap",
        ".device",
    ];
    if TYPES.iter().any(|t| name.ends_with(t)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

fn valid_unit(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
}

/// `is-enabled` states that count as enabled (systemctl's exit 0, less
/// `enabled-runtime`, which is gone at the next boot).
fn counts_as_enabled(s: &str) -> bool {
    matches!(
        s,
        "enabled" | "alias" | "static" | "indirect" | "generated" | "transient"
    )
}

/// `is-enabled` states that `systemctl disable` changes.
fn can_disable(s: &str) -> bool {
    matches!(s, "enabled" | "enabled-runtime" | "linked" | "linked-runtime")
}

fn is_running(active: &str) -> bool {
    matches!(active, "active" | "reloading")
}

fn is_stopped(active: &str) -> bool {
    matches!(active, "inactive" | "failed" | "")
}

impl State {
    fn journal_note(&self) -> String {
        match &self.journal {
            Some(j) if !j.trim().is_empty() => format!("; last journal lines:\n{}", j.trim_end()),
            _ => String::new(),
        }
    }
}

/// `u=UNIT` and a `daemon-reload` when systemd asks for one, at the top of
/// every step: a unit file written earlier in the run is read before use.
fn prelude(unit: &str) -> Sh {
    Sh::raw_start("set -e\nu=").val(unit).raw(
        "\nif [ \"$(systemctl show -p NeedDaemonReload --value -- \"$u\")\" = yes ]; then systemctl daemon-reload; fi\n",
    )
}

/// Shell that runs `systemctl VERB` and, if the unit is not running after
/// it, prints the journal's tail to stderr and fails.
/// A restart prints how long the unit was down (`plumb-downtime=UNIT SECS`:
/// from the restart's start until it is active again).
fn start_like(unit: &str, verb: &'static str) -> Sh {
    let mut sh = prelude(unit);
    if verb == "restart" {
        sh.line(&downtime_fn());
        sh = sh.raw("plumb_t0=$(date +%s.%N)\n");
    }
    sh = sh
        .raw("if ! systemctl ")
        .raw(verb)
        .raw(" -- \"$u\" || ! systemctl is-active --quiet -- \"$u\"; then\n  echo \"plumb: $u did not start; journalctl -u $u -n 20:\" >&2\n  journalctl -u \"$u\" -n 20 --no-pager -q >&2 || true\n  exit 1\nfi");
    if verb == "restart" {
        sh = sh.raw("\nplumb_downtime \"$plumb_t0\" \"$u\"");
    }
    sh
}

fn step(label: String, sh: Sh) -> Step {
    Step::run(label, sh)
}

/// What to do to a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServicePlan {
    /// systemd reads its unit files again first (one changed on disk).
    daemon_reload: bool,
    /// Enable (`true`) or disable it.
    enable: Option<bool>,
    /// Start or stop it.
    state: Option<Running>,
}

impl Module for Service {
    const NAME: &'static str = "service";
    type Params = Params;
    type State = State;
    const REFRESHABLE: bool = true;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A systemd unit: running or stopped, enabled at boot or not. A `notify` restarts it once \
                      per run, after all of its notifiers (a unit this run starts anyway is not restarted on \
                      top; with `state: stopped` a notify does nothing; without `state` it restarts the unit \
                      only if it runs). `systemctl daemon-reload` runs first when systemd says a unit file \
                      changed. A unit that fails to start fails the resource with the tail of its journal. \
                      Starting and restarting are `restart` risk, stopping is `disruptive`. Hosts without \
                      systemd as init are refused with a clear error.",
            params: &[
                ParamDoc {
                    name: "name",
                    ty: "unit name",
                    default: "required",
                    doc: "The unit; `.service` is implied (`docker` = `docker.service`).",
                },
                ParamDoc {
                    name: "state",
                    ty: "running | stopped",
                    default: "not managed",
                    doc: "Whether the unit runs now.",
                },
                ParamDoc {
                    name: "enabled",
                    ty: "bool",
                    default: "not managed",
                    doc: "Whether the unit starts at boot (`static` units count as enabled).",
                },
            ],
            example: "- id: docker\n  service: {name: docker, state: running, enabled: true}\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        if !valid_unit(&p.name) {
            cx.error(
                "name",
                "plumb::plan::invalid_value",
                format!("`{}` is not a systemd unit name", p.name),
                Some("unit names are letters, digits and `:_.@-\\` (`docker`, `getty@tty1.service`)".into()),
            );
        }
        p.unit = unit_name(&p.name);
        if p.unit.len() > UNIT_NAME_MAX {
            cx.error(
                "name",
                "plumb::plan::invalid_value",
                format!("the unit name `{}` is {} bytes long", p.unit, p.unit.len()),
                Some(format!(
                    "systemd unit names are at most {UNIT_NAME_MAX} bytes, their type (`.service`) included"
                )),
            );
        }
    }

    fn claims(p: &Params) -> Claims {
        Claims {
            manages: vec![Claim::Key("service", p.unit.clone())],
            // A `mount` that migrates this unit's data (migrate.stop) goes first.
            needs: vec![Claim::Key("data of", p.unit.clone())],
            ..Claims::default()
        }
    }

    fn probe(p: &Params) -> Sh {
        Sh::raw_start(
            "if ! command -v systemctl >/dev/null 2>&1; then echo systemd=absent; exit 0; fi\n\
             if [ ! -d /run/systemd/system ]; then echo systemd=offline; exit 0; fi\n\
             echo systemd=running\nu=",
        )
        .val(&p.unit)
        .raw(
            "\nsystemctl show -p LoadState -p ActiveState -p NeedDaemonReload -- \"$u\"\n\
             echo \"enabled=$(systemctl is-enabled -- \"$u\" 2>/dev/null)\"\n\
             if [ \"$(systemctl show -p ActiveState --value -- \"$u\")\" = failed ]; then\n  \
             echo --; journalctl -u \"$u\" -n 20 --no-pager -q 2>/dev/null || true\nfi",
        )
    }

    fn parse(_p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let systemd = match f.get("systemd") {
            Some("running") => Systemd::Running,
            Some("absent") => Systemd::Absent,
            Some("offline") => Systemd::Offline,
            other => return Err(Failure::from(format!("unexpected probe output (systemd {other:?})"))),
        };
        let get = |k: &str| f.get(k).unwrap_or_default().to_string();
        Ok(State {
            systemd,
            load: get("LoadState"),
            active: get("ActiveState"),
            enabled: get("enabled"),
            need_reload: f.get("NeedDaemonReload") == Some("yes"),
            journal: out.body().map(|b| String::from_utf8_lossy(b).into_owned()),
        })
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        match s.systemd {
            Systemd::Absent => {
                return Err(Failure::from(
                    "this host has no systemd (`systemctl` not found): the `service` module manages systemd units only",
                ))
            }
            Systemd::Offline => {
                return Err(Failure::from(
                    "systemd is not this host's init (no /run/systemd/system, e.g. a container or chroot): units cannot be started or enabled here",
                ))
            }
            Systemd::Running => {}
        }
        match s.load.as_str() {
            "not-found" => Err(Failure::from(format!(
                "unit `{}` not found: is its package installed, or its unit file written?",
                p.unit
            ))),
            "masked" if p.state == Some(Running::Running) || p.enabled == Some(true) => Err(Failure::from(format!(
                "unit `{}` is masked: it can be neither started nor enabled",
                p.unit
            ))
            .with_hint("`systemctl unmask` it first")),
            _ => Ok(()),
        }
    }

    fn predict(p: &Params, s: &State) -> Prediction<State> {
        if s.systemd == Systemd::Running && s.load == "not-found" {
            return Prediction::Unknown(format!("unit `{}` does not exist yet", p.unit));
        }
        Prediction::Probed
    }

    type Plan = ServicePlan;

    fn plan(p: &Params, s: &State) -> ServicePlan {
        let enable = p.enabled.filter(|&e| {
            if e {
                !counts_as_enabled(&s.enabled)
            } else {
                can_disable(&s.enabled)
            }
        });
        let state = match p.state {
            Some(Running::Running) if !is_running(&s.active) => Some(Running::Running),
            Some(Running::Stopped) if !is_stopped(&s.active) => Some(Running::Stopped),
            _ => None,
        };
        ServicePlan {
            daemon_reload: s.need_reload,
            enable,
            state,
        }
    }

    fn changes(_p: &Params, s: &State, plan: &ServicePlan) -> Changes {
        describe(s, plan, "")
    }

    fn apply(p: &Params, _s: &State, plan: &ServicePlan) -> Vec<Step> {
        let u = &p.unit;
        let mut steps = Vec::new();
        if plan.daemon_reload {
            steps.push(step(
                "systemctl daemon-reload".into(),
                Sh::raw_start("systemctl daemon-reload"),
            ));
        }
        if let Some(e) = plan.enable {
            let (verb, label) = if e {
                ("systemctl enable -- \"$u\"", format!("enable {u}"))
            } else {
                ("systemctl disable -- \"$u\"", format!("disable {u}"))
            };
            steps.push(step(label, prelude(u).raw(verb)));
        }
        match plan.state {
            Some(Running::Running) => steps.push(step(format!("start {u}"), start_like(u, "start"))),
            Some(Running::Stopped) => steps.push(step(format!("stop {u}"), Sh::raw_start("systemctl stop --").arg(u))),
            None => {}
        }
        steps
    }

    fn verify(p: &Params, after: &State) -> Changes {
        let plan = Self::plan(p, after);
        // A unit that died right after `start` returned: say why.
        let note = if plan.state == Some(Running::Running) {
            after.journal_note()
        } else {
            String::new()
        };
        describe(after, &plan, &note)
    }

    fn refresh(p: &Params, s: &State, plan: &ServicePlan) -> Vec<Step> {
        let u = &p.unit;
        match p.state {
            Some(Running::Stopped) => Vec::new(),
            // Started by this run: it reads its notifiers' changes already.
            Some(Running::Running) if plan.state.is_some() => Vec::new(),
            Some(Running::Running) => vec![step(format!("restart {u}"), start_like(u, "restart"))],
            None if is_running(&s.active) => vec![step(format!("restart {u}"), start_like(u, "restart"))],
            None => Vec::new(),
        }
    }

    fn reprobe_after_requirements() -> bool {
        // A package or a unit file written earlier in the run changes what
        // systemd knows of the unit.
        true
    }

    fn refreshes_unit(p: &Params) -> Option<String> {
        Some(p.unit.clone())
    }
}

/// What `plan` changes, for people; `note` follows the unit's state where a
/// start is planned (verification adds why a started unit died).
fn describe(s: &State, plan: &ServicePlan, note: &str) -> Changes {
    let mut c = Changes::none();
    if plan.daemon_reload {
        c.push(Change::new(
            "daemon-reload",
            None,
            Some("the unit file changed on disk".into()),
        ));
    }
    if let Some(e) = plan.enable {
        c.push(Change::new(
            "enabled",
            Some(if s.enabled.is_empty() {
                "unknown".into()
            } else {
                s.enabled.clone()
            }),
            Some(if e { "enabled" } else { "disabled" }.into()),
        ));
    }
    match plan.state {
        Some(Running::Running) => {
            c.push(
                Change::new("state", Some(format!("{}{note}", s.active)), Some("running".into())).risk(Risk::Restart),
            );
        }
        Some(Running::Stopped) => {
            c.push(Change::new("state", Some(s.active.clone()), Some("stopped".into())).risk(Risk::Disruptive));
        }
        None => {}
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: &str, enabled: &str) -> State {
        State {
            systemd: Systemd::Running,
            load: "loaded".into(),
            active: active.into(),
            enabled: enabled.into(),
            need_reload: false,
            journal: None,
        }
    }

    fn params(state: Option<Running>, enabled: Option<bool>) -> Params {
        Params {
            name: "demo".into(),
            state,
            enabled,
            unit: "demo.service".into(),
        }
    }

    #[test]
    fn unit_names_get_their_type() {
        assert_eq!(unit_name("docker"), "docker.service");
        assert_eq!(unit_name("k3s.service"), "k3s.service");
        assert_eq!(unit_name("fstrim.timer"), "fstrim.timer");
        assert!(valid_unit("getty@tty1.service"));
        assert!(!valid_unit("a b") && !valid_unit("-x") && !valid_unit("a/b") && !valid_unit(""));
    }

    #[test]
    fn starting_is_a_restart_risk_and_stopping_is_disruptive() {
        let changes = |p: &Params, s: &State| Service::changes(p, s, &Service::plan(p, s));
        let c = changes(
            &params(Some(Running::Running), Some(true)),
            &state("inactive", "disabled"),
        );
        assert_eq!(
            c.items.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            ["enabled", "state"]
        );
        assert_eq!(c.risk(), Some(Risk::Restart));
        let c = changes(&params(Some(Running::Stopped), None), &state("active", "enabled"));
        assert_eq!(c.risk(), Some(Risk::Disruptive));
        assert!(changes(&params(Some(Running::Running), Some(true)), &state("active", "static")).is_empty());
    }

    #[test]
    fn a_notify_restarts_only_what_runs_and_was_not_just_started() {
        let nothing = ServicePlan::default();
        let running = params(Some(Running::Running), None);
        assert_eq!(
            Service::refresh(&running, &state("active", "enabled"), &nothing).len(),
            1
        );
        let starting = Service::plan(&running, &state("inactive", "enabled"));
        assert!(Service::refresh(&running, &state("inactive", "enabled"), &starting).is_empty());
        let stopped = params(Some(Running::Stopped), None);
        assert!(Service::refresh(&stopped, &state("inactive", "enabled"), &nothing).is_empty());
        let unmanaged = params(None, Some(true));
        assert!(Service::refresh(&unmanaged, &state("inactive", "enabled"), &nothing).is_empty());
        assert_eq!(
            Service::refresh(&unmanaged, &state("active", "enabled"), &nothing).len(),
            1
        );
    }

    #[test]
    fn hosts_without_systemd_are_refused_clearly() {
        let mut s = state("", "");
        s.systemd = Systemd::Absent;
        assert!(Service::check(&params(None, None), &s)
            .unwrap_err()
            .to_string()
            .contains("no systemd"));
        s.systemd = Systemd::Offline;
        assert!(Service::check(&params(None, None), &s)
            .unwrap_err()
            .to_string()
            .contains("not this host's init"));
    }
}
