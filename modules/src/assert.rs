//! `assert`: a check that fails its resource (and skips its dependents) when
//! false. Read-only, so `diff` evaluates it too: the GO criteria of a change
//! (free space, usage, a registry answering) are checked before and after.
//!
//! `that` expressions see the plan's variables and `facts`, read fresh by the
//! assertion's own probe, so a check that follows a change (growing a volume)
//! sees the new state. `command` runs a read-only check on the host.

use plumb_engine::module::{Changes, CompileCx, Failure, Module, ModuleDoc, ParamDoc, Prediction, ProbeOutput, Step};
use plumb_engine::shell::Sh;
use plumb_engine::template::Vars;
use serde::{Deserialize, Serialize};

/// The `assert` module.
pub struct Assert;

/// Parameters of `assert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    that: Option<Vec<String>>,
    command: Option<String>,
    #[serde(default)]
    expect_rc: i32,
    expect_stdout: Option<String>,
    message: Option<String>,
    #[serde(skip)]
    vars: Vars,
    #[serde(skip)]
    reads_facts: bool,
    #[serde(skip)]
    stdout_re: Option<regex::Regex>,
}

/// What the check found: the failures, in words.
#[derive(Debug, Serialize)]
pub struct State {
    failures: Vec<String>,
}

const MAX_SHOWN: usize = 2000;

impl Module for Assert {
    const NAME: &'static str = "assert";
    type Params = Params;
    type State = State;
    const CHECK: bool = true;

    fn doc() -> ModuleDoc {
        ModuleDoc {
            summary: "A check that fails its resource, and skips its dependents, when false. Either `that`: \
                      expressions over the variables and `facts` (read fresh on the host by the check \
                      itself), all of which must be true; or `command`: a read-only command run on the host, \
                      whose exit status must be `expect_rc` and whose output must match `expect_stdout`. \
                      Evaluated by `diff` and by `apply`; never changes anything.",
            params: &[
                ParamDoc { name: "that", ty: "list of expressions", default: "-", doc: "E.g. `facts.mounts['/'].used_pct < 80`." },
                ParamDoc { name: "command", ty: "shell command", default: "-", doc: "A read-only check run on the host." },
                ParamDoc { name: "expect_rc", ty: "integer", default: "0", doc: "The exit status `command` must have." },
                ParamDoc { name: "expect_stdout", ty: "regular expression", default: "-", doc: "What `command`'s output must match." },
                ParamDoc { name: "message", ty: "string", default: "-", doc: "Said when the check fails." },
            ],
            example: "- id: go-root-usage\n  assert:\n    that: [\"facts.mounts['/'].used_pct < 80\"]\n    message: the root filesystem must be under 80% full\n",
        }
    }

    fn prepare(p: &mut Params, cx: &CompileCx<'_>) {
        match (&p.that, &p.command) {
            (Some(_), Some(_)) => cx.error(
                "command",
                "plumb::plan::conflicting_params",
                "an assertion has either `that` or `command`, not both",
                Some("split it into two assertions".into()),
            ),
            (None, None) => cx.error(
                "",
                "plumb::plan::missing_param",
                "an assertion needs `that` (expressions) or `command` (a check run on the host)",
                None,
            ),
            (Some(that), None) => {
                if that.is_empty() {
                    cx.error("that", "plumb::plan::invalid_value", "`that` is empty", None);
                }
                for (i, e) in that.iter().enumerate() {
                    cx.check_expression(&format!("that.{i}"), e);
                }
                p.reads_facts = that.iter().any(|e| plumb_engine::facts::mentions_facts(e));
                if p.expect_stdout.is_some() || p.expect_rc != 0 {
                    cx.error(
                        "that",
                        "plumb::plan::conflicting_params",
                        "`expect_rc` and `expect_stdout` go with `command`",
                        None,
                    );
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(re) = &p.expect_stdout {
            match regex::Regex::new(re) {
                Ok(r) => p.stdout_re = Some(r),
                Err(e) => cx.error(
                    "expect_stdout",
                    "plumb::plan::invalid_value",
                    format!("invalid regular expression: {e}"),
                    None,
                ),
            }
        }
        p.vars = cx.vars().clone();
        p.vars.remove("facts");
    }

    fn probe(p: &Params) -> Sh {
        if let Some(cmd) = &p.command {
            return Sh::raw_start("out=$(")
                .then(&Sh::user_command(cmd, &[]))
                .raw(" 2>&1 </dev/null)\necho \"rc=$?\"\necho --\nprintf '%s' \"$out\"");
        }
        if p.reads_facts {
            return plumb_engine::facts::probe();
        }
        Sh::raw_start(":")
    }

    fn parse(p: &Params, out: &ProbeOutput) -> Result<State, Failure> {
        let mut failures = Vec::new();
        if let Some(cmd) = &p.command {
            let rc: i32 = out
                .fields()
                .get("rc")
                .and_then(|r| r.parse().ok())
                .ok_or("the check did not run")?;
            let text = String::from_utf8_lossy(out.body().unwrap_or_default()).into_owned();
            let shown: String = text.chars().take(MAX_SHOWN).collect();
            if rc != p.expect_rc {
                failures.push(format!(
                    "`{cmd}` exited with {rc}, expected {}; its output:\n{}",
                    p.expect_rc,
                    shown.trim_end()
                ));
            } else if let Some(re) = &p.stdout_re {
                if !re.is_match(&text) {
                    failures.push(format!(
                        "the output of `{cmd}` does not match `{}`:\n{}",
                        re.as_str(),
                        shown.trim_end()
                    ));
                }
            }
        }
        if let Some(that) = &p.that {
            let mut vars = p.vars.clone();
            if p.reads_facts {
                vars.insert("facts".into(), plumb_engine::facts::parse(&out.stdout)?);
            }
            for e in that {
                match plumb_engine::template::eval_condition(e, &vars) {
                    Ok(true) => {}
                    Ok(false) => failures.push(format!("`{e}` is false")),
                    Err(err) => failures.push(format!("`{e}` cannot be evaluated: {err}")),
                }
            }
        }
        Ok(State { failures })
    }

    /// A check changes nothing: its verdict is `check`'s.
    type Plan = ();

    fn plan(_p: &Params, _s: &State) {}

    fn changes(_p: &Params, _s: &State, _plan: &()) -> Changes {
        Changes::none()
    }

    fn criterion(p: &Params) -> Option<String> {
        if let Some(m) = &p.message {
            return Some(m.clone());
        }
        match (&p.that, &p.command) {
            (Some(that), _) => Some(that.join(" and ")),
            (None, Some(cmd)) => Some(format!("`{cmd}` exits with {}", p.expect_rc)),
            (None, None) => None,
        }
    }

    fn check(p: &Params, s: &State) -> Result<(), Failure> {
        if s.failures.is_empty() {
            return Ok(());
        }
        let detail = s.failures.join("\n");
        Err(Failure::from(match &p.message {
            Some(m) => format!("assertion failed: {m}\n{detail}"),
            None => format!("assertion failed: {detail}"),
        }))
    }

    fn predict(_p: &Params, _s: &State) -> Prediction<State> {
        Prediction::Unknown("checked then".into())
    }

    fn apply(_p: &Params, _s: &State, _plan: &()) -> Vec<Step> {
        Vec::new()
    }

    fn reprobe_after_requirements() -> bool {
        true
    }
}
