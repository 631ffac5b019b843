//! `plumb`: the command line. Parsing arguments and wiring the engine to the
//! modules, the transports and the renderers; nothing else lives here.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod progress;

use clap::{Parser, Subcommand, ValueEnum};
use plumb_engine::compile::{compile, to_dot, CompileOptions, Compiled};
use plumb_engine::diag::{Diag, Report};
use plumb_engine::inventory::{self, Inventory};
use plumb_engine::module::Registry;
use plumb_engine::report::{self, Mode, RunReport};
use plumb_engine::run::{run, RunOptions};
use plumb_engine::saved::{self, SavedPlan};
use plumb_engine::source::Sources;
use plumb_engine::template::Vars;
use plumb_engine::transport::ssh::{SshConnector, SshOptions};
use plumb_engine::transport::Connector;

#[derive(Parser)]
#[command(
    name = "plumb",
    version,
    about = "Declarative state convergence over SSH: plans, diffs, verified applies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Inventory file (default: inventory.yaml beside the plan, then ./inventory.yaml, else the local host).
    #[arg(short = 'i', long = "inventory")]
    inventory: Option<PathBuf>,
    /// Only these hosts or groups (comma-separated).
    #[arg(short = 'l', long = "limit", value_delimiter = ',')]
    limit: Vec<String>,
    /// A variable, `name=value` (the value is read as YAML); highest precedence.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Hosts in parallel.
    #[arg(short = 'j', long = "forks", default_value_t = 32)]
    forks: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// No colors (also: the NO_COLOR environment variable).
    #[arg(long)]
    no_color: bool,
    /// Also list resources that are already converged.
    #[arg(short, long)]
    verbose: bool,
    /// Accept the host key of hosts never seen before (a changed key is always refused).
    #[arg(long)]
    accept_new_host_keys: bool,
    /// An OpenSSH client config to use instead of ~/.ssh/config (`ssh -F`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// Seconds to wait for a host to answer.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, template and graph a plan; no connection.
    Validate {
        /// The plan file.
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Show what `apply` would change; change nothing. Exit 0: converged, 2: changes pending, 1: error.
    Diff {
        /// The plan file.
        plan: PathBuf,
        /// Save the reviewed plan here, for `plumb apply FILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Converge the hosts, then verify every change.
    Apply {
        /// A plan file, or a plan saved by `plumb diff --out`.
        plan: PathBuf,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// The dependency graph as Graphviz DOT.
    Graph {
        /// The plan file.
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Module reference.
    Doc {
        /// A module name (all modules when omitted).
        module: Option<String>,
    },
}

fn main() -> ExitCode {
    // A usage error exits 1, not clap's 2: 2 means "changes pending".
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let color = wants_color(match &cli.command {
        Command::Validate { common, .. }
        | Command::Diff { common, .. }
        | Command::Apply { common, .. }
        | Command::Graph { common, .. } => common.no_color,
        Command::Doc { .. } => false,
    });
    let width = if std::io::stderr().is_terminal() {
        None
    } else {
        Some(80)
    };
    miette::set_hook(Box::new(move |_| {
        let mut o = miette::MietteHandlerOpts::new().color(color).terminal_links(false);
        if let Some(w) = width {
            o = o.width(w);
        }
        if !color {
            o = o.graphical_theme(miette::GraphicalTheme::unicode_nocolor());
        }
        Box::new(o.build())
    }))
    .ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(dispatch(cli, color));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn wants_color(no_color_flag: bool) -> bool {
    !no_color_flag && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

async fn dispatch(cli: Cli, color: bool) -> i32 {
    let registry = plumb_modules::registry();
    match cli.command {
        Command::Doc { module } => doc(&registry, module.as_deref()),
        Command::Validate { plan, common } => match load(&plan, &common, &registry) {
            Ok((c, _)) => {
                let n: usize = c.hosts.iter().map(|h| h.resources.len()).sum();
                println!(
                    "{}: valid ({} resource{} on {} host{})",
                    plan.display(),
                    n,
                    if n == 1 { "" } else { "s" },
                    c.hosts.len(),
                    if c.hosts.len() == 1 { "" } else { "s" }
                );
                0
            }
            Err(code) => code,
        },
        Command::Graph { plan, common } => match load(&plan, &common, &registry) {
            Ok((c, _)) => {
                print!("{}", to_dot(&c));
                0
            }
            Err(code) => code,
        },
        Command::Diff { plan, out, common } => {
            let Ok((c, sources)) = load(&plan, &common, &registry) else {
                return 1;
            };
            let description = c.plan.description.clone();
            let plan_path = c.plan.path.clone();
            let report = execute(c, &common, Mode::Diff).await;
            print_report(&report, &common, color, description.as_deref());
            if let Some(out) = out {
                if let Err(e) = save(&out, &plan_path, &common, &sources, &report) {
                    eprintln!("error: cannot save the reviewed plan to `{}`: {e}", out.display());
                    return 1;
                }
                eprintln!(
                    "saved the reviewed plan to `{}`; apply it with `plumb apply {}`",
                    out.display(),
                    out.display()
                );
            }
            report.exit_code()
        }
        Command::Apply { plan, yes, common } => apply(&plan, yes, common, &registry, color).await,
    }
}

async fn apply(plan: &Path, yes: bool, mut common: Common, registry: &Registry, color: bool) -> i32 {
    // A saved plan: re-check everything it reviewed, then apply.
    if let Some(saved) = read_saved(plan) {
        let saved = match saved {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: `{}` is not a valid saved plan: {e}", plan.display());
                return 1;
            }
        };
        common.inventory = saved.inventory.as_ref().map(PathBuf::from).or(common.inventory);
        if common.limit.is_empty() {
            common.limit.clone_from(&saved.limit);
        }
        let plan_path = PathBuf::from(&saved.plan);
        let Ok((c, sources)) = load(&plan_path, &common, registry) else {
            return 1;
        };
        let mut problems = Vec::new();
        if saved::vars_hash(&parse_vars(&common.vars).unwrap_or_default()) != saved.vars_sha256 {
            problems.push("the `--var` values differ from the review's (give the same ones)".to_string());
        }
        let now_sources = saved::source_hashes(&sources);
        for s in &saved.sources {
            if !now_sources.iter().any(|n| n == s) {
                problems.push(format!("`{}` changed since the review", s.path));
            }
        }
        if problems.is_empty() {
            let check = execute(c, &common, Mode::Diff).await;
            problems.extend(saved::compare(&saved.resources, &saved::resource_hashes(&check)));
        }
        if !problems.is_empty() {
            eprintln!(
                "error: refusing to apply `{}`: the world moved since the review",
                plan.display()
            );
            for p in &problems {
                eprintln!("  - {p}");
            }
            eprintln!("run `plumb diff --out` again and review the new plan");
            return 1;
        }
        let Ok((c, _)) = load(&plan_path, &common, registry) else {
            return 1;
        };
        let description = c.plan.description.clone();
        let report = execute(c, &common, Mode::Apply).await;
        print_report(&report, &common, color, description.as_deref());
        return report.exit_code();
    }
    let Ok((c, _)) = load(plan, &common, registry) else {
        return 1;
    };
    let description = c.plan.description.clone();
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: refusing to apply without confirmation: pass --yes, or review with `plumb diff --out FILE` and run `plumb apply FILE`"
            );
            return 1;
        }
        let preview = execute(c, &common, Mode::Diff).await;
        print_report(&preview, &common, color, description.as_deref());
        if preview.exit_code() != 2 {
            return preview.exit_code();
        }
        eprint!("apply these changes? type `yes` to go on: ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok();
        if answer.trim() != "yes" {
            eprintln!("nothing applied");
            return 1;
        }
        let Ok((c, _)) = load(plan, &common, registry) else {
            return 1;
        };
        let report = execute(c, &common, Mode::Apply).await;
        print_report(&report, &common, color, description.as_deref());
        return report.exit_code();
    }
    let report = execute(c, &common, Mode::Apply).await;
    print_report(&report, &common, color, description.as_deref());
    report.exit_code()
}

fn read_saved(path: &Path) -> Option<Result<SavedPlan, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("plumb_saved_plan")?;
    Some(serde_json::from_value(v).map_err(|e| e.to_string()))
}

fn save(out: &Path, plan: &Path, common: &Common, sources: &Sources, report: &RunReport) -> std::io::Result<()> {
    let abs = |p: &Path| std::fs::canonicalize(p).map(|p| p.display().to_string());
    let inventory = match &common.inventory {
        Some(i) => Some(abs(i)?),
        None => inventory::default_path(plan).map(|p| abs(&p)).transpose()?,
    };
    let s = SavedPlan {
        plumb_saved_plan: saved::VERSION,
        plan: abs(plan)?,
        inventory,
        limit: common.limit.clone(),
        vars_sha256: saved::vars_hash(&parse_vars(&common.vars).unwrap_or_default()),
        sources: saved::source_hashes(sources),
        resources: saved::resource_hashes(report),
        reviewed_in: report.run_id.clone(),
    };
    std::fs::write(out, serde_json::to_string_pretty(&s).expect("serializes") + "\n")
}

fn print_report(r: &RunReport, common: &Common, color: bool, description: Option<&str>) {
    let text = match common.format {
        Format::Json => report::json::render(r),
        Format::Markdown => report::markdown::render(r, description),
        Format::Text => report::text::render(
            r,
            report::text::TextOptions {
                color: color && !common.no_color,
                verbose: common.verbose,
            },
        ),
    };
    print!("{text}");
}

fn connector(common: &Common) -> Arc<dyn Connector> {
    Arc::new(SshConnector::new(SshOptions {
        accept_new_host_keys: common.accept_new_host_keys,
        ssh_config: common.ssh_config.clone(),
        connect_timeout: std::time::Duration::from_secs(common.connect_timeout.max(1)),
        ..SshOptions::default()
    }))
}

async fn execute(c: Compiled, common: &Common, mode: Mode) -> RunReport {
    let mut opts = RunOptions::new(mode);
    opts.forks = common.forks;
    if c.hosts.iter().any(|h| h.needs_facts) {
        let plan = Arc::new(c.plan.clone());
        let inventory = c.inventory.clone();
        let sources = c.sources.clone();
        let copts = c.options.clone();
        let registry = Arc::new(plumb_modules::registry());
        opts.recompile = Some(Arc::new(move |host, facts| {
            plumb_engine::compile::compile_with_facts(&plan, host, &inventory, &registry, &sources, &copts, facts)
                .map_err(|d| {
                    format!(
                        "the plan does not compile with this host's facts:\n{}",
                        plumb_engine::diag::render_plain(&sources, d)
                    )
                })
        }));
    }
    let display = (std::io::stderr().is_terminal() && common.format == Format::Text)
        .then(|| progress::Progress::new(c.hosts.len()));
    if let Some(d) = &display {
        let d = d.clone();
        opts.events = Some(Arc::new(move |e| d.on(e)));
    }
    let cancel = opts.cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupted: finishing the steps under way, starting no new one");
        }
    });
    let hosts = c.hosts.into_iter().map(Arc::new).collect();
    let report = run(&c.plan.name, hosts, connector(common), opts).await;
    watcher.abort();
    if let Some(d) = display {
        d.clear();
    }
    report
}

fn parse_vars(vars: &[String]) -> Result<Vars, String> {
    let mut out = Vars::new();
    for v in vars {
        let Some((k, val)) = v.split_once('=') else {
            return Err(format!("`--var {v}`: expected NAME=VALUE"));
        };
        let parsed = if val.trim().is_empty() {
            serde_json::Value::String(String::new())
        } else {
            serde_saphyr::from_str::<serde_json::Value>(val)
                .unwrap_or_else(|_| serde_json::Value::String(val.to_string()))
        };
        // `--var workers=04` is the integer 4, and writes `04` where a
        // template interpolates it.
        let parsed = match plumb_engine::yaml::integer_text(val.trim()) {
            Some(i) if parsed.is_f64() => serde_json::Value::from(i),
            _ => parsed,
        };
        let parsed = match &parsed {
            serde_json::Value::Bool(_) | serde_json::Value::Number(_)
                if val.trim() != plumb_engine::template::canonical_text(&parsed) =>
            {
                plumb_engine::template::written(parsed, val.trim())
            }
            _ => parsed,
        };
        out.insert(k.trim().to_string(), parsed);
    }
    Ok(out)
}

fn load(plan: &Path, common: &Common, registry: &Registry) -> Result<(Compiled, Sources), i32> {
    let sources = Sources::new();
    let fail = |diags: Vec<Diag>, sources: &Sources| {
        match Report::new(sources, diags).into_single() {
            Ok(one) => eprintln!("{:?}", miette::Report::new(one)),
            Err(many) => eprintln!("{:?}", miette::Report::new(many)),
        }
        1
    };
    let vars = match parse_vars(&common.vars) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(1);
        }
    };
    let (raw, mut diags) = plumb_engine::plan::load(&sources, plan, registry);
    let inv_path = common.inventory.clone().or_else(|| inventory::default_path(plan));
    let inv = match &inv_path {
        Some(p) => inventory::load(&sources, p),
        None => Ok(Inventory::local_default()),
    };
    let inv = match inv {
        Ok(i) => i,
        Err(d) => {
            diags.extend(d);
            return Err(fail(diags, &sources));
        }
    };
    let Some(raw) = raw else {
        return Err(fail(diags, &sources));
    };
    let opts = CompileOptions {
        vars,
        limit: common.limit.clone(),
    };
    // Compile what is sound even when the plan has errors, so that every
    // problem is reported in one go.
    match compile(raw, &inv, registry, &sources, &opts) {
        Ok(c) if diags.is_empty() => Ok((c, sources)),
        Ok(_) => Err(fail(diags, &sources)),
        Err(d) => {
            diags.extend(d);
            Err(fail(diags, &sources))
        }
    }
}

fn doc(registry: &Registry, module: Option<&str>) -> i32 {
    let entries: Vec<_> = match module {
        Some(m) => match registry.get(m) {
            Some(e) => vec![e],
            None => {
                let hint = plumb_engine::diag::did_you_mean(m, registry.names()).unwrap_or_default();
                eprintln!("error: unknown module `{m}` {hint}");
                return 1;
            }
        },
        None => registry.iter().collect(),
    };
    for e in entries {
        let d = e.doc();
        println!("{}\n{}\n", e.name(), "=".repeat(e.name().len()));
        println!("{}\n", textwrap(d.summary, 78));
        println!("Parameters:");
        let names = e.param_names();
        for p in d.params {
            debug_assert!(names.contains(&p.name));
            println!("  {:<10} {} (default: {})", p.name, p.ty, p.default);
            println!(
                "{}",
                textwrap(p.doc, 66)
                    .lines()
                    .map(|l| format!("             {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if e.refreshable() {
            println!("\nCan be the target of `notify`.");
        }
        println!(
            "\nExample:\n{}",
            d.example
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        println!();
    }
    0
}

fn textwrap(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in s.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out
}
