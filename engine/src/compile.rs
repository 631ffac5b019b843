//! From a [`RawPlan`] and an [`Inventory`] to one [`HostPlan`] per host:
//! variables merged, parameters templated and typed, `when` evaluated, and the
//! dependency graph built (explicit `requires`/`notify` edges plus the
//! implicit edges that modules' claims imply), checked for cycles and sorted.
//!
//! Everything here runs on the workstation, before any connection: a plan
//! that compiles for every host is one the executor can run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::Diag;
use crate::inventory::{Host, Inventory};
use crate::module::{Claim, Claims, CompileCx, Registry, Resource};
use crate::plan::{Become, RawPlan, RawResource};
use crate::source::Sources;
use crate::template::{Templates, Vars};
use crate::yaml;

/// Why one resource runs after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// `requires:` in the plan.
    Requires,
    /// `notify:` (the target runs after its notifier).
    Notify,
    /// Implied by what the two manage (the text says what).
    Implicit(String),
}

impl EdgeKind {
    fn describe(&self) -> String {
        match self {
            EdgeKind::Requires => "requires".into(),
            EdgeKind::Notify => "is notified by".into(),
            EdgeKind::Implicit(why) => format!("implicitly requires ({why})"),
        }
    }
}

/// One resource compiled for one host.
pub struct HostResource {
    /// Its id.
    pub id: String,
    /// Its module's name.
    pub module: &'static str,
    /// It is a check (`assert`), not a change.
    pub check: bool,
    /// The typed resource (`None` when skipped by `when`).
    pub resource: Option<Arc<dyn Resource>>,
    /// Why it is skipped before anything runs (`when` was false).
    pub skip: Option<String>,
    /// Resources that must converge first (indices into the host's list), and why.
    pub requires: Vec<(usize, EdgeKind)>,
    /// Resources whose change refreshes this one.
    pub notified_by: Vec<usize>,
    /// How its commands run.
    pub become_: Become,
    /// Keep its values out of every output.
    pub sensitive: bool,
    /// It reads facts, which are known only once connected: compiled then.
    pub deferred: bool,
    /// What a check that `when` skips would verify (for the review's GO
    /// criteria; a compiled check says it itself).
    pub criterion: Option<String>,
}

/// Everything to do on one host.
pub struct HostPlan {
    /// The host.
    pub host: Host,
    /// Its resources, in plan order.
    pub resources: Vec<HostResource>,
    /// Indices of `resources` in dependency order.
    pub order: Vec<usize>,
    /// Some resource reads `facts`: gather them, then compile again.
    pub needs_facts: bool,
}

/// Options that come from the command line.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// `--var k=v` values (highest precedence).
    pub vars: Vars,
    /// `--limit` host or group names.
    pub limit: Vec<String>,
}

/// A plan compiled for each selected host.
pub struct Compiled {
    /// The plan as written.
    pub plan: RawPlan,
    /// One plan per host, in inventory order.
    pub hosts: Vec<HostPlan>,
    /// The inventory it was compiled against.
    pub inventory: Arc<Inventory>,
    /// Its sources.
    pub sources: Sources,
    /// The options it was compiled with.
    pub options: CompileOptions,
    /// What is worth saying but does not stop the run (a `--var` that
    /// nothing reads), one sentence each.
    pub warnings: Vec<String>,
}

/// Where a string in `node` (its keys included) holds a NUL byte: the
/// strings that reach a shell or a system call end there, so the text run
/// would not be the text reviewed. `top` skips the `content` parameter,
/// which travels as a file's bytes, never through a shell.
fn nul_byte(node: &yaml::Node, top: bool) -> Option<crate::source::Span> {
    match &node.value {
        yaml::Value::Str(s) if s.contains('\0') => Some(node.span),
        yaml::Value::Seq(items) => items.iter().find_map(|n| nul_byte(n, false)),
        yaml::Value::Map(entries) => entries.iter().find_map(|e| {
            if e.key.contains('\0') {
                Some(e.key_span)
            } else if top && e.key == "content" {
                None
            } else {
                nul_byte(&e.value, false)
            }
        }),
        _ => None,
    }
}

/// Compile `plan` for every host it selects.
///
/// # Errors
/// Every problem found, deduplicated across hosts.
pub fn compile(
    plan: RawPlan,
    inventory: &Inventory,
    registry: &Registry,
    sources: &Sources,
    opts: &CompileOptions,
) -> Result<Compiled, Vec<Diag>> {
    let mut diags = Vec::new();
    // When the host selection itself is wrong, the hosts meant are unknown:
    // the plan is still compiled for every candidate host, and the errors
    // that every one of them has (they do not depend on the host) are
    // reported with the selection's, so that one run shows all of them.
    let mut exact = true;
    let mut selected = match inventory.select(&plan.hosts) {
        Ok(s) => s,
        Err(d) => {
            diags.extend(d);
            exact = false;
            inventory.hosts.iter().collect()
        }
    };
    if !opts.limit.is_empty() {
        let limit: Vec<crate::plan::Located> = opts
            .limit
            .iter()
            .map(|l| crate::plan::Located {
                value: l.clone(),
                span: crate::source::Span::default(),
            })
            .collect();
        match inventory.select(&limit) {
            Ok(l) => {
                let names: BTreeSet<&str> = l.iter().map(|h| h.name.as_str()).collect();
                selected.retain(|h| names.contains(h.name.as_str()));
            }
            Err(d) => {
                exact = false;
                diags.extend(d.into_iter().map(|mut d| {
                    d.labels.clear();
                    d.code = "plumb::cli::unknown_limit";
                    d.message = format!("--limit: {}", d.message);
                    d
                }));
            }
        }
    }
    // Resource-level host selections, checked once.
    let mut narrowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in &plan.resources {
        if let Some(h) = &r.hosts {
            match inventory.select(h) {
                Ok(hs) => {
                    narrowed.insert(&r.id.value, hs.iter().map(|h| h.name.clone()).collect());
                }
                Err(d) => diags.extend(d),
            }
        }
    }
    let mut hosts = Vec::new();
    let mut per_host = Vec::new();
    let env = Env::new(registry, sources);
    for host in &selected {
        match compile_for(&plan, host, &narrowed, &env, opts, None) {
            Ok(hp) => {
                hosts.push(hp);
                per_host.push(Vec::new());
            }
            Err(d) => per_host.push(dedup(d)),
        }
    }
    let (unused, warnings) = unused_vars(&plan, inventory, sources, opts);
    diags.extend(unused);
    if exact {
        diags.extend(per_host.into_iter().flatten());
    } else if let Some((first, others)) = per_host.split_first() {
        diags.extend(
            first
                .iter()
                .filter(|d| others.iter().all(|o| o.iter().any(|x| same(x, d))))
                .cloned(),
        );
    }
    if !diags.is_empty() {
        return Err(dedup(diags));
    }
    Ok(Compiled {
        plan,
        hosts,
        inventory: Arc::new(inventory.clone()),
        sources: sources.clone(),
        options: opts.clone(),
        warnings,
    })
}

/// The `--var` names that nothing reads: neither a variable the plan or the
/// inventory declares, nor a name written in the plan, its includes or the
/// templates it read (as a word: `{{ docker_size }}`, `when: "docker_size"`).
/// One spelt like a declared variable is an error: a misspelt
/// `--var docker_sise=150G` would otherwise change nothing, and the diff
/// would say so as if the volume were already that size. Any other is a
/// warning (a wrapper may pass the same values to every plan).
fn unused_vars(
    plan: &RawPlan,
    inventory: &Inventory,
    sources: &Sources,
    opts: &CompileOptions,
) -> (Vec<Diag>, Vec<String>) {
    let declared: BTreeSet<&str> = plan
        .vars
        .keys()
        .chain(inventory.hosts.iter().flat_map(|h| h.vars.keys()))
        .map(String::as_str)
        .collect();
    let texts = sources.all();
    let written = |name: &str| {
        texts.iter().any(|f| {
            let t = f.text.as_bytes();
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
            f.text.match_indices(name).any(|(at, _)| {
                let end = at + name.len();
                (at == 0 || !word(t[at - 1])) && (end == t.len() || !word(t[end]))
            })
        })
    };
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for name in opts
        .vars
        .keys()
        .filter(|n| !declared.contains(n.as_str()) && !written(n))
    {
        let unused = format!(
            "`--var {name}` is not used: the plan does not read it, and neither the plan nor the inventory declares it"
        );
        match crate::diag::did_you_mean(name, declared.iter().copied()) {
            Some(near) => errors.push(
                Diag {
                    code: "plumb::cli::unused_var",
                    message: unused,
                    labels: Vec::new(),
                    help: None,
                }
                .with_help(near),
            ),
            None => warnings.push(unused),
        }
    }
    (errors, warnings)
}

/// Compile `plan` for one host again, now that its facts are known.
///
/// # Errors
/// Every problem found (e.g. a template reading a fact the host lacks).
pub fn compile_with_facts(
    plan: &RawPlan,
    host: &Host,
    inventory: &Inventory,
    registry: &Registry,
    sources: &Sources,
    opts: &CompileOptions,
    facts: &serde_json::Value,
) -> Result<HostPlan, Vec<Diag>> {
    let mut narrowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in &plan.resources {
        if let Some(h) = &r.hosts {
            narrowed.insert(
                &r.id.value,
                inventory.select(h)?.iter().map(|h| h.name.clone()).collect(),
            );
        }
    }
    compile_for(plan, host, &narrowed, &Env::new(registry, sources), opts, Some(facts)).map_err(dedup)
}

/// What every host's compiling shares.
struct Env<'a> {
    registry: &'a Registry,
    sources: &'a Sources,
    /// Resources compiled once for every host, by the place of their
    /// list item (ids may clash in a plan with errors): those whose
    /// parameters hold no template and whose module read no variable.
    shared: RefCell<HashMap<crate::source::Span, Arc<dyn Resource>>>,
}

impl<'a> Env<'a> {
    fn new(registry: &'a Registry, sources: &'a Sources) -> Self {
        Env {
            registry,
            sources,
            shared: RefCell::new(HashMap::new()),
        }
    }
}

/// Whether a string of `node` (a key included) is a template.
fn templated(node: &yaml::Node) -> bool {
    match &node.value {
        yaml::Value::Str(s) => crate::template::is_template(s),
        yaml::Value::Seq(items) => items.iter().any(templated),
        yaml::Value::Map(entries) => entries
            .iter()
            .any(|e| crate::template::is_template(&e.key) || templated(&e.value)),
        _ => false,
    }
}

fn compile_for(
    plan: &RawPlan,
    host: &Host,
    narrowed: &BTreeMap<&str, BTreeSet<String>>,
    env: &Env<'_>,
    opts: &CompileOptions,
    facts: Option<&serde_json::Value>,
) -> Result<HostPlan, Vec<Diag>> {
    let mut vars = plan.vars.clone();
    vars.extend(host.vars.clone());
    vars.extend(opts.vars.clone());
    if let Some(f) = facts {
        vars.insert("facts".into(), f.clone());
    }
    let on_host: Vec<&RawResource> = plan
        .resources
        .iter()
        .filter(|r| narrowed.get(r.id.value.as_str()).is_none_or(|s| s.contains(&host.name)))
        .collect();
    compile_host(plan, host, &on_host, &vars, env, facts.is_some())
}

/// Whether a resource reads facts anywhere (parameters or `when`).
fn reads_facts(r: &RawResource) -> bool {
    fn walk(n: &crate::yaml::Node) -> bool {
        match &n.value {
            crate::yaml::Value::Str(s) => crate::facts::mentions_facts(s),
            crate::yaml::Value::Seq(items) => items.iter().any(walk),
            crate::yaml::Value::Map(m) => m.iter().any(|e| walk(&e.value)),
            _ => false,
        }
    }
    walk(&r.params) || r.when.as_ref().is_some_and(walk)
}

/// A `facts.…` name no host reports (`facts.mount`), found at load time
/// rather than when the facts arrive.
fn unknown_facts(r: &RawResource, sources: &Sources) -> Vec<Diag> {
    fn walk(n: &crate::yaml::Node, sources: &Sources, out: &mut Vec<Diag>) {
        match &n.value {
            crate::yaml::Value::Str(s) if crate::facts::mentions_facts(s) => {
                for (name, suggestion) in crate::template::unknown_facts(s) {
                    let file = sources.get(n.span.source);
                    let written = file.text.get(n.span.offset..n.span.offset + n.span.len).unwrap_or("");
                    let needle = format!("facts.{name}");
                    let span = written.find(&needle).map_or(n.span, |o| n.span.sub(o, needle.len()));
                    out.push(
                        Diag::new(
                            "plumb::template::unknown_fact",
                            format!("unknown fact `facts.{name}`"),
                            span,
                            "no host reports this fact",
                        )
                        .with_help(
                            suggestion
                                .unwrap_or_else(|| format!("facts are: {}", crate::template::FACT_NAMES.join(", "))),
                        ),
                    );
                }
            }
            crate::yaml::Value::Seq(items) => items.iter().for_each(|i| walk(i, sources, out)),
            crate::yaml::Value::Map(m) => m.iter().for_each(|e| walk(&e.value, sources, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&r.params, sources, &mut out);
    if let Some(w) = &r.when {
        walk(w, sources, &mut out);
    }
    out
}

/// What makes two diagnostics the same problem (seen on several hosts).
fn problem(d: &Diag) -> (&'static str, String, Option<(u32, usize)>) {
    (
        d.code,
        d.message.clone(),
        d.labels.first().map(|l| (l.0.source.0, l.0.offset)),
    )
}

fn same(a: &Diag, b: &Diag) -> bool {
    problem(a) == problem(b)
}

fn dedup(diags: Vec<Diag>) -> Vec<Diag> {
    let mut seen = BTreeSet::new();
    diags.into_iter().filter(|d| seen.insert(problem(d))).collect()
}

/// One resource's parameters templated with `vars` and read by its module.
fn compile_resource(
    plan: &RawPlan,
    raw: &RawResource,
    module: &dyn crate::module::ModuleEntry,
    templates: &Templates,
    vars: &Vars,
    sources: &Sources,
) -> Result<Arc<dyn Resource>, Vec<Diag>> {
    let params = templates.render_node(&raw.params, vars, sources)?;
    if let Some(span) = nul_byte(&params, true) {
        return Err(vec![Diag::new(
            "plumb::plan::nul_byte",
            "a value holds a NUL byte (`\\0`), which no command, path or name can carry",
            span,
            "NUL byte in here",
        )
        .with_help(
            "a file's `content` may hold one; elsewhere remove it (for binary files use `source:`)",
        )]);
    }
    let render = |text: &str, id| templates.render_file(text, id, vars);
    let cx = CompileCx::new(
        &params,
        raw.module.span,
        &plan.dir,
        sources,
        &render,
        raw.sensitive,
        vars,
    );
    module.compile(cx)
}

fn compile_host(
    plan: &RawPlan,
    host: &Host,
    raws: &[&RawResource],
    vars: &Vars,
    env: &Env<'_>,
    have_facts: bool,
) -> Result<HostPlan, Vec<Diag>> {
    let (registry, sources) = (env.registry, env.sources);
    let templates = &Templates::new();
    let mut diags = Vec::new();
    let mut resources = Vec::new();
    let mut needs_facts = false;
    for raw in raws {
        let become_ = raw.become_.clone().unwrap_or_else(|| host.become_.clone());
        let module = registry
            .get(&raw.module.value)
            .expect("module names are checked at load");
        let mut hr = HostResource {
            id: raw.id.value.clone(),
            module: module.name(),
            check: module.is_check(),
            resource: None,
            skip: None,
            requires: Vec::new(),
            notified_by: Vec::new(),
            become_,
            sensitive: raw.sensitive,
            deferred: false,
            criterion: None,
        };
        let reads = reads_facts(raw);
        if reads {
            diags.extend(unknown_facts(raw, sources));
        }
        if !have_facts && reads {
            // Known once connected; the executor compiles it again then.
            needs_facts = true;
            hr.deferred = true;
            resources.push(hr);
            continue;
        }
        if let Some(w) = &raw.when {
            match templates.condition(w, vars, sources) {
                Ok(false) => {
                    hr.skip = Some(match &w.value {
                        yaml::Value::Str(expr) => format!("`when` is false: `{}`", expr.trim()),
                        _ => "`when` is false".into(),
                    });
                    // The review still says what a skipped check verifies.
                    if hr.check && !raw.sensitive {
                        hr.criterion = compile_resource(plan, raw, module, templates, vars, sources)
                            .ok()
                            .and_then(|r| r.criterion());
                    }
                    resources.push(hr);
                    continue;
                }
                Ok(true) => {}
                Err(d) => {
                    // Kept (without a resource) so that the graph's other
                    // problems are still found.
                    diags.extend(d);
                    resources.push(hr);
                    continue;
                }
            }
        }
        // Parameters without a template read the same on every host: their
        // resource is compiled once (unless its module read the variables).
        let shareable = !templated(&raw.params);
        let cached = if shareable {
            env.shared.borrow().get(&raw.span).cloned()
        } else {
            None
        };
        match cached.map_or_else(|| compile_resource(plan, raw, module, templates, vars, sources), Ok) {
            Ok(r) => {
                if shareable && !r.host_specific() {
                    env.shared
                        .borrow_mut()
                        .entry(raw.span)
                        .or_insert_with(|| Arc::clone(&r));
                }
                hr.resource = Some(r);
            }
            Err(d) => diags.extend(d),
        }
        resources.push(hr);
    }
    // A resource with errors has no claims: the checks below see the
    // rest, so that independent problems are reported together.
    diags.extend(shared_identities(&resources, raws, sources));
    let index: BTreeMap<String, usize> = resources.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    let mut edges: Vec<(usize, usize, EdgeKind)> = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        for req in &raw.requires {
            // A requirement that is not on this host (narrowed by `hosts:`)
            // orders nothing here.
            if let Some(&j) = index.get(req.value.as_str()) {
                edges.push((j, i, EdgeKind::Requires));
            }
        }
        for n in &raw.notify {
            if let Some(&j) = index.get(n.value.as_str()) {
                edges.push((i, j, EdgeKind::Notify));
                resources[j].notified_by.push(i);
            }
        }
    }
    implicit_edges(&resources, &mut edges);
    let mut graph: DiGraph<usize, EdgeKind> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..resources.len()).map(|i| graph.add_node(i)).collect();
    for (from, to, kind) in &edges {
        if !graph.contains_edge(nodes[*from], nodes[*to]) {
            graph.add_edge(nodes[*from], nodes[*to], kind.clone());
        }
        let r = &mut resources[*to];
        match r.requires.iter_mut().find(|(j, _)| j == from) {
            None => r.requires.push((*from, kind.clone())),
            // Notified *and* required: a requirement (a failure skips it,
            // a pending change makes its diff a prediction).
            Some(existing) if existing.1 == EdgeKind::Notify && *kind != EdgeKind::Notify => existing.1 = kind.clone(),
            Some(_) => {}
        }
    }
    if toposort(&graph, None).is_err() {
        diags.extend(cycle_diags(&graph, raws));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let order = stable_order(&resources);
    Ok(HostPlan {
        host: host.clone(),
        resources,
        order,
        needs_facts,
    })
}

/// Dependency order that keeps the plan's order wherever the graph allows
/// (Kahn's algorithm, always taking the earliest ready resource), so that
/// reports read like the plan.
fn stable_order(resources: &[HostResource]) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut indegree: Vec<usize> = resources.iter().map(|r| r.requires.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); resources.len()];
    for (i, r) in resources.iter().enumerate() {
        for (j, _) in &r.requires {
            dependents[*j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..resources.len())
        .filter(|&i| indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(resources.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

/// Edges from claims: every need is met by every provider of the same key
/// (for paths: of an ancestor path). Providers are indexed, so the cost
/// grows with the number of claims and the depth of paths, not with the
/// square of the number of resources.
fn implicit_edges(resources: &[HostResource], edges: &mut Vec<(usize, usize, EdgeKind)>) {
    let claims: Vec<_> = resources
        .iter()
        .map(|r| r.resource.as_ref().map(|x| x.claims()).unwrap_or_default())
        .collect();
    edges_from_claims(&claims, edges);
}

fn edges_from_claims(claims: &[Claims], edges: &mut Vec<(usize, usize, EdgeKind)>) {
    // (namespace, value) → (resource, index of the claim); paths under the
    // namespace "" without their trailing slashes (`/srv/app/` provides what
    // `/srv/app` does).
    let mut providers: HashMap<(&str, &str), Vec<(usize, usize)>> = HashMap::new();
    for (j, c) in claims.iter().enumerate() {
        for (k, p) in c.provides.iter().enumerate() {
            let key = match p {
                Claim::Path(path) => ("", path.trim_end_matches('/')),
                Claim::Key(ns, v) => (*ns, v.as_str()),
            };
            providers.entry(key).or_default().push((j, k));
        }
    }
    for (i, c) in claims.iter().enumerate() {
        for need in &c.needs {
            let mut found: Vec<(usize, usize)> = Vec::new();
            match need {
                // Every proper ancestor of `n`: each prefix that a `/` ends,
                // with something after that `/`.
                Claim::Path(n) => {
                    for (at, _) in n.match_indices('/').filter(|(at, _)| n.len() > at + 1) {
                        found.extend(providers.get(&("", &n[..at])).into_iter().flatten());
                    }
                }
                Claim::Key(ns, v) => found.extend(providers.get(&(*ns, v.as_str())).into_iter().flatten()),
            }
            found.sort_unstable();
            found.dedup();
            for (j, k) in found {
                if j == i {
                    continue;
                }
                if let Some(why) = meets(&claims[j].provides[k], need) {
                    edges.push((j, i, EdgeKind::Implicit(why)));
                }
            }
        }
    }
}

/// Two resources of one host that manage the same thing (one path, one
/// mount point, one logical volume, …) would undo each other on every
/// apply: each such pair is an error at the second, naming the first.
fn shared_identities(resources: &[HostResource], raws: &[&RawResource], sources: &Sources) -> Vec<Diag> {
    let mut owners: HashMap<(&'static str, String), usize> = HashMap::new();
    let mut reported = BTreeSet::new();
    let mut diags = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let Some(res) = &r.resource else { continue };
        for claim in res.claims().manages {
            // The module contract: a managed path is inspected (the run
            // record reads "created" and "before" from its observation).
            debug_assert!(
                !matches!(&claim, Claim::Path(p) if !res.inspect().iter().any(|q| &q.path == p)),
                "module `{}` manages {claim:?} without inspecting it",
                r.module
            );
            let (what, value) = match claim {
                Claim::Path(p) => ("path", p),
                Claim::Key(ns, v) => (ns, v),
            };
            let value = if value.starts_with('/') {
                normal_path(&value)
            } else {
                value
            };
            let j = *owners.entry((what, value.clone())).or_insert(i);
            if j == i || !reported.insert((j, i)) {
                continue;
            }
            let (first, second) = (raws[j], raws[i]);
            let file = sources.get(first.id.span.source);
            let (line, col) = crate::source::line_col(&file.text, first.id.span.offset);
            diags.push(
                Diag::new(
                    "plumb::plan::managed_twice",
                    format!(
                        "`{}` ({}:{line}:{col}) and `{}` both manage the {what} `{value}`",
                        first.id.value, file.name, second.id.value
                    ),
                    second.id.span,
                    format!("manages the {what} `{value}` again"),
                )
                .with_label(first.id.span, "first manages it here")
                .with_help(
                    "each apply would undo the other's work: keep one resource, or give them different hosts with `hosts:`",
                ),
            );
        }
    }
    diags
}

/// `path` with repeated slashes, `.` segments and trailing slashes removed.
fn normal_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    format!("/{}", parts.join("/"))
}

fn meets(provided: &Claim, need: &Claim) -> Option<String> {
    match (provided, need) {
        (Claim::Path(p), Claim::Path(n)) => {
            let p = p.trim_end_matches('/');
            let under = n
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
                || (p.is_empty() && n.len() > 1);
            under.then(|| format!("`{n}` is under `{}`", if p.is_empty() { "/" } else { p }))
        }
        (Claim::Key(k1, v1), Claim::Key(k2, v2)) if k1 == k2 && v1 == v2 => Some(format!("{k1} `{v1}`")),
        _ => None,
    }
}

fn cycle_diags(graph: &DiGraph<usize, EdgeKind>, raws: &[&RawResource]) -> Vec<Diag> {
    let mut diags = Vec::new();
    for scc in tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        // Walk the cycle in edge order for a readable message.
        let mut path = vec![scc[0]];
        let mut steps = Vec::new();
        let mut cur = scc[0];
        loop {
            let next = graph
                .edges(cur)
                .find(|e| members.contains(&petgraph::visit::EdgeRef::target(e)))
                .expect("a member of a cycle has an edge inside it");
            let t = petgraph::visit::EdgeRef::target(&next);
            steps.push(next.weight().describe());
            if t == scc[0] || path.contains(&t) {
                path.push(t);
                break;
            }
            path.push(t);
            cur = t;
        }
        // Edges point from a requirement to what requires it: read the walk
        // backwards, "a requires b, which requires c".
        path.reverse();
        steps.reverse();
        let mut msg = String::from("dependency cycle: ");
        for (k, n) in path.iter().enumerate() {
            let _ = write!(msg, "`{}`", raws[graph[*n]].id.value);
            if k < steps.len() {
                let _ = write!(
                    msg,
                    " {} ",
                    if k == 0 {
                        steps[k].clone()
                    } else {
                        format!("which {}", steps[k])
                    }
                );
            }
        }
        let first = raws[graph[path[0]]];
        let mut d = Diag::new("plumb::plan::cycle", msg, first.id.span, "part of the cycle");
        for n in &path[1..path.len() - 1] {
            d = d.with_label(raws[graph[*n]].id.span, "part of the cycle");
        }
        diags.push(
            d.with_help("remove one of these `requires`/`notify` edges; implicit edges follow paths and devices"),
        );
    }
    diags
}

/// The host plans as Graphviz DOT.
#[must_use]
pub fn to_dot(c: &Compiled) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&c.plan.name));
    let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];");
    for (h, hp) in c.hosts.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{h} {{\n    label={};", dot_id(&hp.host.name));
        for r in &hp.resources {
            let style = if r.skip.is_some() { ", style=dashed" } else { "" };
            let _ = writeln!(
                out,
                "    {} [label={}{style}];",
                dot_id(&format!("{}/{}", hp.host.name, r.id)),
                dot_id(&format!("{}\n{}", r.id, r.module))
            );
        }
        for r in &hp.resources {
            for (from, kind) in &r.requires {
                let attrs = match kind {
                    EdgeKind::Requires => String::new(),
                    EdgeKind::Notify => " [style=dashed, label=\"notify\"]".into(),
                    EdgeKind::Implicit(why) => format!(" [style=dotted, label={}]", dot_id(why)),
                };
                let _ = writeln!(
                    out,
                    "    {} -> {}{attrs};",
                    dot_id(&format!("{}/{}", hp.host.name, hp.resources[*from].id)),
                    dot_id(&format!("{}/{}", hp.host.name, r.id))
                );
            }
        }
        let _ = writeln!(out, "  }}");
    }
    out.push_str("}\n");
    out
}

fn dot_id(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index finds exactly the edges that comparing every provider with
    /// every need finds, in the same order.
    #[test]
    fn indexed_claims_give_the_edges_of_the_pairwise_comparison() {
        let paths = [
            "/",
            "/srv",
            "/srv/",
            "/srv/app",
            "/srv/app/",
            "/srv/app/x",
            "/srv//app",
            "/srv/apple",
            "/etc",
            "/",
        ];
        let keys = [("fs", "/dev/a"), ("fs", "LABEL=a"), ("vg", "a"), ("blockdev", "/dev/a")];
        let mut claims = Vec::new();
        for i in 0..40usize {
            let pick = |n: usize, salt: usize| (i * 7 + salt * 13) % n;
            let mut c = Claims::default();
            c.provides.push(Claim::Path(paths[pick(paths.len(), 1)].to_string()));
            c.needs.push(Claim::Path(paths[pick(paths.len(), 2)].to_string()));
            if i % 3 == 0 {
                let (k, v) = keys[pick(keys.len(), 3)];
                c.provides.push(Claim::Key(k, v.to_string()));
            }
            if i % 2 == 0 {
                let (k, v) = keys[pick(keys.len(), 4)];
                c.needs.push(Claim::Key(k, v.to_string()));
            }
            claims.push(c);
        }
        let mut want = Vec::new();
        for (i, c) in claims.iter().enumerate() {
            for need in &c.needs {
                for (j, other) in claims.iter().enumerate() {
                    for p in other.provides.iter().filter(|_| i != j) {
                        if let Some(why) = meets(p, need) {
                            want.push((j, i, why));
                        }
                    }
                }
            }
        }
        let mut got = Vec::new();
        edges_from_claims(&claims, &mut got);
        let got: Vec<(usize, usize, String)> = got
            .into_iter()
            .map(|(j, i, k)| match k {
                EdgeKind::Implicit(why) => (j, i, why),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }

    #[test]
    fn a_path_needs_every_managed_ancestor_but_not_a_sibling() {
        let dir = Claim::Path("/srv/app".into());
        assert!(meets(&dir, &Claim::Path("/srv/app/conf/x".into())).is_some());
        assert!(meets(&dir, &Claim::Path("/srv/app2".into())).is_none());
        assert!(meets(&dir, &Claim::Path("/srv/app".into())).is_none());
        assert!(meets(&Claim::Path("/".into()), &Claim::Path("/etc".into())).is_some());
        assert!(meets(&Claim::Key("vg", "a".into()), &Claim::Key("vg", "a".into())).is_some());
        assert!(meets(&Claim::Key("vg", "a".into()), &Claim::Key("lv", "a".into())).is_none());
    }
}
