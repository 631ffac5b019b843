//! `plumb`: the command line. Parsing arguments and wiring the engine to the
//! modules, the transports and the renderers; nothing else lives here.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod progress;

// Output goes through these: a reader that went away (`plumb doc | head -1`)
// is not an error, and must not panic as `println!` does. The command goes
// on and ends with its usual status, as it would have with a patient reader.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}
macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
macro_rules! err {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod rollback;
mod runs;

use clap::{Parser, Subcommand, ValueEnum};
use plumb_engine::compile::{compile, to_dot, CompileOptions, Compiled};
use plumb_engine::diag::{Diag, Report};
use plumb_engine::inventory::{self, Inventory};
use plumb_engine::module::Registry;
use plumb_engine::report::{self, InventoryFrom, InventoryUsed, Mode, RunReport};
use plumb_engine::run::{run, RunOptions};
use plumb_engine::saved::{self, SavedPlan};
use plumb_engine::source::{Sources, Span};
use plumb_engine::template::Vars;
use plumb_engine::transport::ssh::{SshConnector, SshOptions};
use plumb_engine::transport::Connector;
use plumb_engine::yaml;

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
    /// `apply`: the runs whose backups and records each host keeps, of
    /// those that changed it (older ones are removed; the newest run, which
    /// a rollback needs next, always stays).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    keep_backups: u64,
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
    /// The runs applied, newest first: from the workstation's records, and
    /// from the hosts' (of PLAN's inventory, or `-i`). `plumb history RUN`
    /// shows one run's report again.
    History {
        /// A plan (its inventory's hosts are asked), or a run id.
        target: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Render a saved plan (`plumb diff --out`) or a run record again,
    /// without connecting.
    Show {
        /// The saved plan or run record.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Review the undoing of run RUN, as a plan: restore what it replaced or
    /// removed from the hosts' backups, remove what it created. Exit 0:
    /// nothing to undo, 2: changes pending, 1: error. Save with `--out FILE`
    /// and apply exactly that with `plumb apply FILE`.
    Rollback {
        /// The run id (`plumb history`).
        run: String,
        /// Save the reviewed rollback here, for `plumb apply FILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also switch migrated mount points back to the old copy of their
        /// data, where the run kept it (disruptive: what was written since
        /// stays on the new filesystem).
        #[arg(long)]
        switch_back: bool,
        /// Also remove the packages the run installed (disruptive: apt
        /// removes what depends on them too; the review names it).
        #[arg(long)]
        remove_packages: bool,
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
        | Command::Graph { common, .. }
        | Command::History { common, .. }
        | Command::Show { common, .. }
        | Command::Rollback { common, .. } => common.no_color,
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
        Command::History { target, common } => runs::history(target.as_deref(), &common, color).await,
        Command::Show { file, common } => runs::show(&file, &common, color),
        Command::Rollback {
            run,
            out,
            switch_back,
            remove_packages,
            common,
        } => {
            let opts = plumb_engine::rollback::Options {
                switch_back,
                remove_packages,
            };
            rollback::review(&run, out.as_deref(), opts, &common, color).await
        }
        Command::Validate { plan, common } => match load(&plan, &common, &registry) {
            Ok(l) => {
                let hosts = l.compiled.hosts.len();
                let n: usize = l.compiled.hosts.iter().map(|h| h.resources.len()).sum();
                outln!(
                    "{}: valid ({} resource{} on {} host{}; inventory: {})",
                    plan.display(),
                    n,
                    if n == 1 { "" } else { "s" },
                    hosts,
                    if hosts == 1 { "" } else { "s" },
                    l.inventory.describe(str::to_string)
                );
                0
            }
            Err(code) => code,
        },
        Command::Graph { plan, common } => match load(&plan, &common, &registry) {
            Ok(l) => {
                out!("{}", to_dot(&l.compiled));
                0
            }
            Err(code) => code,
        },
        Command::Diff { plan, out, common } => {
            let Ok(l) = load(&plan, &common, &registry) else {
                return 1;
            };
            let description = l.compiled.plan.description.clone();
            let (sources, inventory) = (l.sources.clone(), l.inventory.clone());
            let report = execute(l, &common, Mode::Diff, None).await;
            let plan_sha256 = runs::plan_hash(&sources);
            let saved_as = out.as_ref().map(|o| o.display().to_string());
            let cx = report::markdown::Context {
                review: None,
                plan_sha256: Some(&plan_sha256),
                saved_as: saved_as.as_deref(),
            };
            print_report_with(&report, &common, color, description.as_deref(), cx);
            if let Some(out) = out {
                let review = saved::Review {
                    plan: &plan,
                    inventory: inventory.path.as_deref().map(Path::new),
                    limit: &common.limit,
                    vars: &common.vars,
                    sources: &sources,
                };
                let written = SavedPlan::new(&review, &report).and_then(|s| {
                    plumb_engine::journal::write_private(
                        &out,
                        (serde_json::to_string_pretty(&s).expect("serializes") + "\n").as_bytes(),
                    )
                });
                if let Err(e) = written {
                    errln!("error: cannot save the reviewed plan to `{}`: {e}", out.display());
                    return 1;
                }
                errln!(
                    "saved the reviewed plan to `{}`; apply it with `plumb apply {}`{}",
                    out.display(),
                    out.display(),
                    if common.vars.is_empty() {
                        ""
                    } else {
                        " and the same `--var` values"
                    }
                );
            }
            report.exit_code()
        }
        Command::Apply { plan, yes, common } => match SavedPlan::read(&plan) {
            Some(saved) => apply_saved(&plan, saved, common, &registry, color).await,
            None => apply(&plan, yes, &common, &registry, color).await,
        },
    }
}

/// `plumb apply FILE` of a saved plan: the same plan, inventory, limit and
/// variables as the review, whatever the current folder; refused, naming
/// each cause, when anything moved since.
async fn apply_saved(
    file: &Path,
    saved: Result<SavedPlan, String>,
    mut common: Common,
    registry: &Registry,
    color: bool,
) -> i32 {
    let saved = match saved {
        Ok(s) => s,
        Err(e) => {
            errln!("error: `{}` is not a valid saved plan: {e}", file.display());
            return 1;
        }
    };
    let refuse = |problems: &[String], plan_sha256: Option<String>| {
        runs::refused(file, &saved, plan_sha256, problems);
        errln!(
            "error: refusing to apply `{}`: the world moved since the review",
            file.display()
        );
        for p in problems {
            errln!("  - {p}");
        }
        errln!("run `plumb diff --out` again and review the new plan");
        1
    };
    let problems = saved.check_arguments(common.inventory.as_deref(), &common.limit, &common.vars);
    if !problems.is_empty() {
        return refuse(&problems, None);
    }
    if saved.rollback.is_some() {
        return rollback::apply_saved(file, &saved, &common, color).await;
    }
    common.limit.clone_from(&saved.limit);
    let plan = PathBuf::from(&saved.plan);
    let inventory = InventoryUsed {
        path: saved.inventory.clone(),
        from: if saved.inventory.is_some() {
            InventoryFrom::SavedPlan
        } else {
            InventoryFrom::None
        },
    };
    let Ok(l) = load_with(&plan, inventory.clone(), &common, registry) else {
        return 1;
    };
    let mut problems = saved.check_sources(&l.sources);
    let plan_sha256 = runs::plan_hash(&l.sources);
    if problems.is_empty() {
        let check = execute(l, &common, Mode::Diff, None).await;
        problems.extend(saved.check_hosts(&check));
    }
    if !problems.is_empty() {
        return refuse(&problems, Some(plan_sha256));
    }
    let Ok(l) = load_with(&plan, inventory, &common, registry) else {
        return 1;
    };
    let description = l.compiled.plan.description.clone();
    let report = execute(l, &common, Mode::Apply, JournalArgs::apply(&plan, Some(file))).await;
    let cx = report::markdown::Context {
        review: saved.report.as_ref(),
        plan_sha256: Some(&plan_sha256),
        saved_as: None,
    };
    print_report_with(&report, &common, color, description.as_deref(), cx);
    report.exit_code()
}

async fn apply(plan: &Path, yes: bool, common: &Common, registry: &Registry, color: bool) -> i32 {
    let Ok(l) = load(plan, common, registry) else {
        return 1;
    };
    let description = l.compiled.plan.description.clone();
    if !yes {
        if !std::io::stdin().is_terminal() {
            errln!(
                "error: refusing to apply without confirmation: pass --yes, or review with `plumb diff --out FILE` and run `plumb apply FILE`"
            );
            return 1;
        }
        let preview = execute(l, common, Mode::Diff, None).await;
        print_report(&preview, common, color, description.as_deref());
        if preview.exit_code() != 2 {
            return preview.exit_code();
        }
        err!("apply these changes? type `yes` to go on: ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok();
        if answer.trim() != "yes" {
            errln!("nothing applied");
            return 1;
        }
        let Ok(l) = load(plan, common, registry) else {
            return 1;
        };
        let report = execute(l, common, Mode::Apply, JournalArgs::apply(plan, None)).await;
        print_report(&report, common, color, description.as_deref());
        return report.exit_code();
    }
    let report = execute(l, common, Mode::Apply, JournalArgs::apply(plan, None)).await;
    print_report(&report, common, color, description.as_deref());
    report.exit_code()
}

fn print_report(r: &RunReport, common: &Common, color: bool, description: Option<&str>) {
    print_report_with(r, common, color, description, report::markdown::Context::default());
}

fn print_report_with(
    r: &RunReport,
    common: &Common,
    color: bool,
    description: Option<&str>,
    cx: report::markdown::Context<'_>,
) {
    let text = match common.format {
        Format::Json => report::json::render(r),
        Format::Markdown => report::markdown::render_with(r, description, cx),
        Format::Text => report::text::render(
            r,
            report::text::TextOptions {
                color: color && !common.no_color,
                verbose: common.verbose,
            },
        ),
    };
    out!("{text}");
}

fn connector(common: &Common) -> Arc<dyn Connector> {
    Arc::new(SshConnector::new(SshOptions {
        accept_new_host_keys: common.accept_new_host_keys,
        ssh_config: common.ssh_config.clone(),
        connect_timeout: std::time::Duration::from_secs(common.connect_timeout.max(1)),
        ..SshOptions::default()
    }))
}

/// What the journal of an `apply` records of where it came from.
struct JournalArgs {
    kind: plumb_engine::journal::RunKind,
    plan: PathBuf,
    saved_plan: Option<PathBuf>,
    rollback_of: Option<String>,
}

impl JournalArgs {
    fn apply(plan: &Path, saved_plan: Option<&Path>) -> Option<Self> {
        Some(Self {
            kind: plumb_engine::journal::RunKind::Apply,
            plan: plan.to_path_buf(),
            saved_plan: saved_plan.map(Path::to_path_buf),
            rollback_of: None,
        })
    }
}

async fn execute(l: Loaded, common: &Common, mode: Mode, journal: Option<JournalArgs>) -> RunReport {
    let c = l.compiled;
    let mut opts = RunOptions::new(mode);
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
    let journal = journal.map(|j| {
        runs::Journal::begin(
            &opts.run_id,
            &runs::Begin {
                kind: j.kind,
                plan: &j.plan,
                sources: &l.sources,
                inventory: l.inventory.path.as_deref(),
                limit: &common.limit,
                saved_plan: j.saved_plan.as_deref(),
                rollback_of: j.rollback_of.as_deref(),
                keep_backups: usize::try_from(common.keep_backups).unwrap_or(usize::MAX),
            },
            &c.hosts,
        )
    });
    run_hosts(&c.plan.name, c.hosts, common, opts, l.inventory, journal).await
}

/// Run host plans with the progress display, Ctrl-C and SIGTERM (finish
/// the steps under way, start no new one), then finish the journal.
/// The exit status of a run ended at once by a second signal (128 + SIGINT).
const EXIT_ABORTED: i32 = 130;

async fn run_hosts(
    plan_name: &str,
    hosts: Vec<plumb_engine::compile::HostPlan>,
    common: &Common,
    mut opts: RunOptions,
    inventory: InventoryUsed,
    journal: Option<runs::Journal>,
) -> RunReport {
    opts.forks = common.forks;
    let display = (std::io::stderr().is_terminal() && common.format == Format::Text)
        .then(|| progress::Progress::new(hosts.len()));
    if let Some(d) = &display {
        let d = d.clone();
        opts.events = Some(Arc::new(move |e| d.on(e)));
    } else {
        let plain = progress::Plain::default();
        opts.events = Some(Arc::new(move |e| plain.on(e)));
    }
    let cancel = opts.cancel.clone();
    let record = journal.as_ref().map(runs::Journal::record);
    let watcher = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Ctrl-C, SIGTERM and SIGHUP (the terminal went away) alike: the
        // first finishes the steps under way and starts no new one; a
        // second ends plumb at once.
        let (tx, mut signals) = tokio::sync::mpsc::unbounded_channel();
        for kind in [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()] {
            if let Ok(mut s) = signal(kind) {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        drop(tx);
        if signals.recv().await.is_none() {
            return;
        }
        cancel.store(true, Ordering::SeqCst);
        errln!("\ninterrupted: finishing the steps under way, starting no new one (again to abort at once)");
        if signals.recv().await.is_none() {
            return;
        }
        errln!(
            "aborted: the steps under way go on on the hosts until they end, unreported \
             (an upload cut short removes its temporary file); the run's record says `aborted`"
        );
        if let Some(r) = record {
            runs::aborted(r);
        }
        std::process::exit(EXIT_ABORTED);
    });
    let hosts = hosts.into_iter().map(Arc::new).collect();
    // One connection per host for the run and the journal after it.
    let pool = Arc::new(plumb_engine::transport::reuse::Reusing::new(connector(common)));
    let mut report = run(plan_name, hosts, pool.clone(), opts).await;
    report.inventory = inventory;
    watcher.abort();
    if let Some(d) = display {
        d.clear();
    }
    if let Some(j) = journal {
        j.end(&report, pool.clone()).await;
    }
    pool.close_all().await;
    report
}

/// The `--var NAME=VALUE` arguments. Each value is read as YAML; one that is
/// not valid YAML (`[a, b`) is an error. `Err` holds the message to print.
fn parse_vars(vars: &[String]) -> Result<Vars, String> {
    let mut out = Vars::new();
    // The values are parsed as sources of their own, named after their
    // `--var`, so that an error points into the value; they are not the
    // plan's sources (a saved plan hashes `--var` values apart).
    let sources = Sources::new();
    let mut diags = Vec::new();
    for v in vars {
        let Some((k, val)) = v.split_once('=') else {
            return Err(format!("error: `--var {v}`: expected NAME=VALUE"));
        };
        match var_value(&sources, k.trim(), val) {
            Ok(node) => {
                out.insert(k.trim().to_string(), node.to_var_json());
            }
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() {
        return Ok(out);
    }
    Err(match Report::new(&sources, diags).into_single() {
        Ok(one) => format!("{:?}", miette::Report::new(one)),
        Err(many) => format!("{:?}", miette::Report::new(many)),
    })
}

/// One `--var` value as a YAML node (which keeps how a scalar was written).
fn var_value(sources: &Sources, name: &str, value: &str) -> Result<yaml::Node, Diag> {
    if value.trim().is_empty() {
        return Ok(yaml::Node::synthetic(yaml::Value::Str(String::new()), Span::default()));
    }
    let label = format!("--var {name}");
    let id = sources.add(label.clone(), Path::new(&label), value);
    yaml::parse(sources, id).map_err(|mut d| {
        d.message = format!("`--var {name}`: {}", d.message);
        let example = if value.contains(['\'', '"', '\\']) {
            String::new()
        } else {
            format!(": --var '{name}=\"{value}\"'")
        };
        d.with_help(format!(
            "the value is read as YAML; to pass it as text, quote it{example}"
        ))
    })
}

/// A plan compiled for a run, with what it was made of.
struct Loaded {
    compiled: Compiled,
    /// Every file read (the plan, its includes and templates, the inventory).
    sources: Sources,
    inventory: InventoryUsed,
}

/// The inventory for `plan`: the one given with `-i`, else `inventory.yaml`
/// beside the plan, else `inventory.yaml` in the current folder, else none
/// (the local host).
fn choose_inventory(plan: &Path, common: &Common) -> InventoryUsed {
    let (path, from) = match &common.inventory {
        Some(given) => (Some(given.clone()), InventoryFrom::Option),
        None => match inventory::default_path(plan) {
            Some(found) if found == plan.parent().unwrap_or(Path::new("")).join("inventory.yaml") => {
                (Some(found), InventoryFrom::BesidePlan)
            }
            Some(found) => (Some(found), InventoryFrom::CurrentFolder),
            None => (None, InventoryFrom::None),
        },
    };
    InventoryUsed {
        path: path.map(|p| p.display().to_string()),
        from,
    }
}

fn load(plan: &Path, common: &Common, registry: &Registry) -> Result<Loaded, i32> {
    load_with(plan, choose_inventory(plan, common), common, registry)
}

fn load_with(plan: &Path, inventory: InventoryUsed, common: &Common, registry: &Registry) -> Result<Loaded, i32> {
    let sources = Sources::new();
    let vars = parse_vars(&common.vars).map_err(|e| {
        errln!("{e}");
        1
    })?;
    let (raw, mut diags) = plumb_engine::plan::load(&sources, plan, registry);
    let inv = match &inventory.path {
        Some(p) => inventory::load(&sources, Path::new(p)),
        None => Ok(Inventory::local_default()),
    };
    let inv = match inv {
        Ok(i) => i,
        Err(d) => {
            diags.extend(d);
            return Err(report_diags(diags, &sources));
        }
    };
    let Some(raw) = raw else {
        return Err(report_diags(diags, &sources));
    };
    let opts = CompileOptions {
        vars,
        limit: common.limit.clone(),
    };
    // Compile what is sound even when the plan has errors, so that every
    // problem is reported in one go.
    match compile(raw, &inv, registry, &sources, &opts) {
        Ok(compiled) if diags.is_empty() => {
            for w in &compiled.warnings {
                errln!("warning: {w}");
            }
            Ok(Loaded {
                compiled,
                sources,
                inventory,
            })
        }
        Ok(_) => Err(report_diags(diags, &sources)),
        Err(d) => {
            diags.extend(d);
            Err(report_diags(diags, &sources))
        }
    }
}

/// Print `diags` on stderr; the exit code of a run that stops on them.
fn report_diags(diags: Vec<Diag>, sources: &Sources) -> i32 {
    match Report::new(sources, diags).into_single() {
        Ok(one) => errln!("{:?}", miette::Report::new(one)),
        Err(many) => errln!("{:?}", miette::Report::new(many)),
    }
    1
}

fn doc(registry: &Registry, module: Option<&str>) -> i32 {
    let entries: Vec<_> = match module {
        Some(m) => match registry.get(m) {
            Some(e) => vec![e],
            None => {
                let hint = plumb_engine::diag::did_you_mean(m, registry.names()).unwrap_or_default();
                errln!("error: unknown module `{m}` {hint}");
                return 1;
            }
        },
        None => registry.iter().collect(),
    };
    for e in entries {
        let d = e.doc();
        outln!("{}\n{}\n", e.name(), "=".repeat(e.name().len()));
        outln!("{}\n", textwrap(d.summary, 78));
        outln!("Parameters:");
        let names = e.param_names();
        for p in d.params {
            debug_assert!(names.contains(&p.name));
            outln!("  {:<10} {} (default: {})", p.name, p.ty, p.default);
            outln!(
                "{}",
                textwrap(p.doc, 66)
                    .lines()
                    .map(|l| format!("             {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if e.refreshable() {
            outln!("\nCan be the target of `notify`.");
        }
        outln!(
            "\nExample:\n{}",
            d.example
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        outln!();
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
