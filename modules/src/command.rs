//! `command`: the escape hatch. A command always has a guard (`creates`,
//! `unless`, `onlyif`), so that a second run converges instead of running it
//! again; guards are read-only checks evaluated in the batched probe.

use plumb_engine::module::{Change, Changes, CompileCx, Failure, Module, ModuleDoc, ParamDoc, ProbeOutput, Risk, Step};
use plumb_engine::shell::Sh;
use serde::{Deserialize, Serialize};

use crate::stat::fields;

/// The `command` module.
pub struct Command;

/// Parameters of `command`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    run: String,
    creates: Option<String>,
    unless: Option<String>,
    onlyif: Option<String>,
    #[serde(default = "disruptive")]
    risk: Risk,
    /// Run only when notified (Puppet's `refreshonly`, an Ansible handler).
    #[serde(default)]
    refresh_only: bool,
}

fn disruptive() -> Risk {
    Risk::Disruptive
}

/// What the guards said.
#[derive(Debug, Serialize)]
pub struct State {
    creates_exists: Option<bool>,
    unless_passed: Option<bool>,
    onlyif_passed: Option<bool>,
}

impl State {
    fn needed(&self) -> bool {
        self.creates_exists != Some(true) && self.unless_passed != Some(true) && self.onlyif_passed != Some(false)
    }
}

fn check(cmd: &str, key: &'static str) -> Sh {
    Sh::raw_start("if ")
        .then(&Sh::user_command(cmd, &[]))
        .raw(" >/dev/null 2>&1 </dev/null; then echo ")
        .raw(key)
        .raw("=1; else echo ")
        .raw(key)
        .raw("=0; fi")
}

impl Module for Command {
    const NAME: &'static str = "command";
    type Params = Params;
    type State = State;
    const CREATES_ACCOUNTS: bool = true;
    const REFRESHABLE: bool = true;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "Runs a shell command, guarded: it runs only while `creates` does not exist, `unless` \
                      fails, and `onlyif` succeeds. A command without a guard is refused, because it would \
                      never converge. Guards run in `diff` too, so they must be read-only. A notified \
                      command runs when its notifier changed; with `refresh_only: true` it runs only \
                      then (a handler), and needs no guard. Its risk is `disruptive` unless you say \
                      otherwise.",
            params: &[
                ParamDoc { name: "run", ty: "shell command", default: "required", doc: "Shell code run by `sh` on the host (sent on standard input, never on a command line)." },
                ParamDoc { name: "creates", ty: "absolute path", default: "-", doc: "Done when this path exists." },
                ParamDoc { name: "unless", ty: "shell command", default: "-", doc: "Done when this check succeeds." },
                ParamDoc { name: "onlyif", ty: "shell command", default: "-", doc: "Run only when this check succeeds." },
                ParamDoc { name: "risk", ty: "safe | restart | disruptive | destructive", default: "disruptive", doc: "The risk class shown in reviews." },
                ParamDoc { name: "refresh_only", ty: "boolean", default: "false", doc: "Run only when a resource that notifies it changed (guards, if any, are still checked then)." },
            ],
            example: "- id: init-db\n  command:\n    run: /usr/local/bin/init-db --data /srv/db\n    creates: /srv/db/PG_VERSION\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        if !p.refresh_only && p.creates.is_none() && p.unless.is_none() && p.onlyif.is_none() {
            cx.error(
                "run",
                "plumb::plan::unguarded_command",
                "a command needs a guard, or it runs on every apply and never converges",
                Some(
                    "add `creates: PATH`, `unless: CHECK` or `onlyif: CHECK`, or `refresh_only: true` to run \
                     it only when notified"
                        .into(),
                ),
            );
        }
        if let Some(c) = &p.creates {
            cx.require_absolute("creates", c);
        }
        if p.run.trim().is_empty() {
            cx.error("run", "plumb::plan::invalid_value", "`run` is empty", None);
        }
    }

    fn probe(p: &Params) -> Sh {
        let mut s = Sh::new();
        if let Some(c) = &p.creates {
            s.line(
                &Sh::raw_start("if [ -e")
                    .arg(c)
                    .raw(" ] || [ -L")
                    .arg(c)
                    .raw(" ]; then echo creates=1; else echo creates=0; fi"),
            );
        }
        if let Some(u) = &p.unless {
            s.line(&check(u, "unless"));
        }
        if let Some(o) = &p.onlyif {
            s.line(&check(o, "onlyif"));
        }
        s
    }

    fn parse(_p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let f = fields(out)?;
        let flag = |k: &str| f.get(k).map(|v| v == "1");
        Ok(State {
            creates_exists: flag("creates"),
            unless_passed: flag("unless"),
            onlyif_passed: flag("onlyif"),
        })
    }

    /// Run the command (`true`), or not.
    type Plan = bool;

    fn plan(p: &Params, s: &State) -> bool {
        s.needed() && !p.refresh_only
    }

    fn changes(p: &Params, _s: &State, run: &bool) -> Changes {
        let mut c = Changes::none();
        if *run {
            c.push(Change::new("run", None, Some(p.run.clone())).risk(p.risk));
        }
        c
    }

    fn apply(p: &Params, _s: &State, run: &bool) -> Vec<Step> {
        if *run {
            vec![run_step(p)]
        } else {
            Vec::new()
        }
    }

    fn verify(p: &Params, after: &State) -> Changes {
        // With `onlyif` alone nothing says the command is done: it ran and
        // succeeded, which is all that can be checked.
        if p.creates.is_none() && p.unless.is_none() {
            return Changes::none();
        }
        Self::changes(p, after, &Self::plan(p, after))
    }

    /// Which guard still says "not done", in words.
    fn unconverged(p: &Params, after: &State, _rest: &Changes) -> Option<String> {
        let mut still = Vec::new();
        if let (Some(c), Some(false)) = (&p.creates, after.creates_exists) {
            still.push(format!("`{c}` (its `creates`) still does not exist"));
        }
        if let (Some(u), Some(false)) = (&p.unless, after.unless_passed) {
            still.push(format!("its `unless` check (`{u}`) still fails"));
        }
        (!still.is_empty()).then(|| format!("the command ran, but {}", still.join(", and ")))
    }

    fn refresh(p: &Params, s: &State, _run: &bool) -> Vec<Step> {
        // A handler's guards, when it has some, still say whether it is needed.
        if p.refresh_only && !s.needed() {
            return Vec::new();
        }
        vec![run_step(p)]
    }
}

fn run_step(p: &Params) -> Step {
    Step::run(p.run.clone(), Sh::user_command(&p.run, &[]))
}
