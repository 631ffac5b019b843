//! `plumb rollback RUN`: the undoing of a run, reviewed as a plan (a diff,
//! `--out FILE`), and `plumb apply FILE` of such a saved rollback.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use plumb_engine::inventory::{self, Inventory};
use plumb_engine::journal::{self, Keyed, RunKind, RunRecord};
use plumb_engine::module::sha256_hex;
use plumb_engine::report::{InventoryFrom, InventoryUsed, Mode, RunReport};
use plumb_engine::rollback::{self, Built, CannotUndo};
use plumb_engine::run::RunOptions;
use plumb_engine::saved::{self, SavedPlan, SourceHash};
use plumb_engine::source::Sources;

use crate::{Common, Format};

/// A rollback ready to run.
struct Prepared {
    record: RunRecord,
    built: Built,
    inventory: InventoryUsed,
    /// Hash of the run's record: a saved rollback is refused when it changed.
    record_sha256: String,
}

fn record_source(run: &str) -> String {
    format!("the record of run {run}")
}

/// Find the run's record, read the hosts, and build the rollback.
async fn prepare(run: &str, opts: rollback::Options, common: &Common) -> Result<Prepared, i32> {
    if !journal::is_run_id(run) {
        errln!("error: `{run}` is not a run id (`plumb history` lists them, such as 20261126T211500Z-3f9a)");
        return Err(1);
    }
    let record = crate::runs::find(run, common).await?;
    if record.outcome == journal::Outcome::Refused {
        errln!("error: run {run} was refused (the world moved): it changed nothing, there is nothing to undo");
        return Err(1);
    }
    let (inv_path, from) = match (&common.inventory, &record.inventory) {
        (Some(i), _) => (Some(i.clone()), InventoryFrom::Option),
        (None, Some(i)) => (Some(PathBuf::from(i)), InventoryFrom::SavedPlan),
        (None, None) => (None, InventoryFrom::None),
    };
    let sources = Sources::new();
    let inv = match &inv_path {
        Some(p) => inventory::load(&sources, p).map_err(|d| crate::report_diags(d, &sources))?,
        None => Inventory::local_default(),
    };
    let mut record = record;
    if !common.limit.is_empty() {
        let keep: Vec<String> = inv
            .hosts
            .iter()
            .filter(|h| {
                common
                    .limit
                    .iter()
                    .any(|l| l == "all" || *l == h.name || h.groups.contains(l))
            })
            .map(|h| h.name.clone())
            .collect();
        record.hosts.retain(|h| keep.contains(&h.host));
    }
    let key = Keyed::load().map_err(|e| {
        errln!("error: cannot read the workstation's key: {e}");
        1
    })?;
    let connector = crate::connector(common);
    let mut seen = BTreeMap::new();
    for h in &record.hosts {
        let Some(host) = inv.host(&h.host) else {
            errln!(
                "error: run {run} changed host `{}`, which is not in the inventory",
                h.host
            );
            return Err(1);
        };
        let items = rollback::items(&h.paths);
        let stats = match connector.connect(host).await {
            Ok(t) => {
                let r = journal::stat_paths(t.as_ref(), &items).await;
                t.close().await;
                r
            }
            Err(e) => Err(e.to_string()),
        };
        match stats {
            Ok(s) => {
                seen.insert(h.host.clone(), s);
            }
            Err(e) => {
                errln!("error: cannot read the paths of run {run} on `{}`: {e}", h.host);
                return Err(1);
            }
        }
    }
    let mut whole = record.clone();
    whole.hosts.sort_by(|a, b| a.host.cmp(&b.host));
    let record_sha256 = sha256_hex(whole.to_json().as_bytes());
    let built =
        rollback::build(&record, &inv.hosts, &seen, &key, opts, &plumb_modules::package::removal).map_err(|e| {
            errln!("error: {e}");
            1
        })?;
    Ok(Prepared {
        record,
        built,
        inventory: InventoryUsed {
            path: inv_path.map(|p| p.display().to_string()),
            from,
        },
        record_sha256,
    })
}

fn print(report: &RunReport, run: &str, cannot: &[CannotUndo], common: &Common, color: bool) {
    if common.format == Format::Json {
        out!("{}", rollback::json(report, run, cannot));
        return;
    }
    if common.format == Format::Markdown {
        // What is not undone goes before the decision, which ends the document.
        let doc = plumb_engine::report::markdown::render(report, None);
        let extra = rollback::cannot_undo_text(cannot, true);
        match doc.find("\n## Decision") {
            Some(at) => out!("{}{}{}", &doc[..at], extra, &doc[at..]),
            None => out!("{doc}{extra}"),
        }
        return;
    }
    crate::print_report(report, common, color, None);
    out!("{}", rollback::cannot_undo_text(cannot, false));
}

/// `plumb rollback RUN [--out FILE]`: the review.
pub(crate) async fn review(
    run: &str,
    out: Option<&Path>,
    opts: rollback::Options,
    common: &Common,
    color: bool,
) -> i32 {
    let p = match prepare(run, opts, common).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let name = format!("rollback of {run}");
    let cannot = p.built.cannot_undo.clone();
    let report = crate::run_hosts(
        &name,
        p.built.hosts,
        common,
        RunOptions::new(Mode::Diff),
        p.inventory.clone(),
        None,
    )
    .await;
    print(&report, run, &cannot, common, color);
    if let Some(out) = out {
        let saved = SavedPlan {
            plumb_saved_plan: saved::VERSION,
            plan: record_source(run),
            inventory: p
                .inventory
                .path
                .as_deref()
                .map(|i| saved::identity(Path::new(i)).display().to_string()),
            limit: common.limit.clone(),
            vars_sha256: saved::vars_hash(&[]),
            sources: vec![SourceHash {
                path: record_source(run),
                sha256: p.record_sha256.clone(),
            }],
            resources: saved::resource_hashes(&report),
            reviewed_in: report.run_id.clone(),
            rollback: Some(run.to_string()),
            rollback_options: Some(opts),
            report: Some(saved::without_content(&report)),
        };
        let text = serde_json::to_string_pretty(&saved).expect("serializes") + "\n";
        if let Err(e) = journal::write_private(out, text.as_bytes()) {
            errln!("error: cannot save the reviewed rollback to `{}`: {e}", out.display());
            return 1;
        }
        errln!(
            "saved the reviewed rollback to `{}`; apply it with `plumb apply {}`",
            out.display(),
            out.display()
        );
    }
    report.exit_code()
}

/// `plumb apply FILE` of a saved rollback: rebuilt from the run's record,
/// compared with the review, applied, and journaled as a run of its own.
pub(crate) async fn apply_saved(file: &Path, saved: &SavedPlan, common: &Common, color: bool) -> i32 {
    let run = saved.rollback.clone().unwrap_or_default();
    let mut common = common.clone();
    common.limit.clone_from(&saved.limit);
    if common.inventory.is_none() {
        common.inventory = saved.inventory.as_ref().map(PathBuf::from);
    }
    let opts = saved.rollback_options.unwrap_or_default();
    let p = match prepare(&run, opts, &common).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    if saved.sources.first().map(|s| &s.sha256) != Some(&p.record_sha256) {
        problems.push(format!("the record of run {run} changed since the review"));
    }
    if problems.is_empty() {
        let check = crate::run_hosts(
            "check",
            p.built.hosts,
            &common,
            RunOptions::new(Mode::Diff),
            p.inventory.clone(),
            None,
        )
        .await;
        problems.extend(saved.check_hosts(&check));
    }
    if !problems.is_empty() {
        crate::runs::refused(file, saved, Some(p.record_sha256.clone()), &problems);
        errln!(
            "error: refusing to apply `{}`: the world moved since the review",
            file.display()
        );
        for p in &problems {
            errln!("  - {p}");
        }
        errln!("run `plumb rollback {run} --out FILE` again and review the new plan");
        return 1;
    }
    let p = match prepare(&run, opts, &common).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let record_path = journal::runs_dir().join(format!("{run}.json"));
    let sources = Sources::new();
    sources.add(record_source(&run), &record_path, p.record.to_json());
    let opts = RunOptions::new(Mode::Apply);
    let journal = crate::runs::Journal::begin(
        &opts.run_id,
        &crate::runs::Begin {
            kind: RunKind::Rollback,
            plan: &record_path,
            sources: &sources,
            inventory: p.inventory.path.as_deref(),
            limit: &common.limit,
            saved_plan: Some(file),
            rollback_of: Some(&run),
            keep_backups: usize::try_from(common.keep_backups).unwrap_or(usize::MAX),
        },
        &p.built.hosts,
    );
    let cannot = p.built.cannot_undo.clone();
    let report = crate::run_hosts(
        &format!("rollback of {run}"),
        p.built.hosts,
        &common,
        opts,
        p.inventory,
        Some(journal),
    )
    .await;
    print(&report, &run, &cannot, &common, color);
    report.exit_code()
}
