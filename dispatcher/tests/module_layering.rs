//! The dispatcher's folders are imported downward only, as ARCHITECTURE.md's map says: no
//! import cycle between modules; a handler (`api/`, `compat/`) never imports another handler;
//! nothing below the handlers (`core/`, `index/`, `events/`, `http/`) names a handler or the
//! roof (`state`, `start`, `routes`, the crate root's `AppState`); the services (`core/`,
//! `index/`, `events/`) never import the HTTP edge (`http/`, where the API's error type lives);
//! a handler takes the substates it uses, not `AppState`, but in the fronts' invoke modules.
//! The rules read the source text of every module; self-tests plant a violation of each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules of `compat/` that serve a front without being one: they may be imported by a
/// handler, and import no handler themselves.
const FRONT_HELPERS: &[&str] = &["compat::eventstream", "compat::sigv4", "compat::web_stream"];

/// The fronts whose invoke handlers take the whole `AppState`: they use most of it on the hot
/// path, where one count of its `Arc` is cheaper than a substate each. Every other handler
/// takes the substates it uses.
const WHOLE_STATE: &[&str] = &["api::invocations", "compat::lambda", "compat::web"];

/// The folders below the handlers, and the modules on top of everything.
const BELOW_HANDLERS: &[&str] = &["core", "index", "events", "http"];
const SERVICES: &[&str] = &["core", "index", "events"];
const ROOF: &[&str] = &["state", "start", "routes", ""];

/// Module path (`api::invocations`; `""` for the crate root) → its non-test source.
fn sources(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read a source folder") {
            let path = entry.expect("dir entry").path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(stem);
                walk(&path, &inner, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || (prefix.is_empty() && stem == "main") {
                continue;
            }
            let mut segments = prefix.to_vec();
            if stem != "mod" && stem != "lib" {
                segments.push(stem);
            }
            let text = std::fs::read_to_string(&path).expect("read a module");
            let code = match text.find("#[cfg(test)]") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            out.insert(segments.join("::"), code);
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// What the crate root re-exports (`pub use state::{AppState, …};`): name → module.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in root
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
    {
        let line = line.trim_end_matches(';');
        let (module, items) = match line.split_once("::{") {
            Some((module, items)) => (module, items.trim_end_matches('}')),
            None => match line.rsplit_once("::") {
                Some((module, item)) => (module, item),
                None => continue,
            },
        };
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            names.insert(item.to_string(), module.replace("crate::", ""));
        }
    }
    names
}

/// The paths named after each `crate::` in `code`, a `{…}` group expanded into its items.
fn crate_paths(code: &str) -> Vec<String> {
    fn path_at(text: &str) -> Vec<String> {
        let mut head = String::new();
        for (at, c) in text.char_indices() {
            if c.is_alphanumeric() || c == '_' || c == ':' {
                head.push(c);
            } else if c == '{' {
                // A group: split its items at top-level commas, each relative to the head.
                let mut depth = 1;
                let mut item_start = at + 1;
                let mut items = Vec::new();
                for (i, c) in text[at + 1..].char_indices() {
                    let i = at + 1 + i;
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                items.push(&text[item_start..i]);
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            items.push(&text[item_start..i]);
                            item_start = i + 1;
                        }
                        _ => {}
                    }
                }
                return items
                    .into_iter()
                    .flat_map(|item| path_at(item.trim()))
                    .map(|rest| format!("{head}{rest}"))
                    .collect();
            } else {
                break;
            }
        }
        vec![head]
    }
    code.match_indices("crate::")
        .flat_map(|(at, _)| path_at(&code[at + "crate::".len()..]))
        .collect()
}

/// Module → the modules its non-test code names through `crate::`.
fn module_graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let exported = sources
        .get("")
        .map(|root| reexports(root))
        .unwrap_or_default();
    sources
        .iter()
        .map(|(module, code)| {
            let mut uses = BTreeSet::new();
            for path in crate_paths(code) {
                let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                // The longest prefix that is a module, or what the root re-exports.
                let named = (1..=segments.len())
                    .rev()
                    .map(|n| segments[..n].join("::"))
                    .find(|candidate| sources.contains_key(candidate))
                    .or_else(|| segments.first().and_then(|s| exported.get(*s).cloned()))
                    .or_else(|| segments.first().map(|_| String::new()));
                if let Some(named) = named.filter(|n| n != module) {
                    uses.insert(named);
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

/// A cycle of `graph`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    // The root only declares and re-exports modules: it is above everything, not a cycle.
    graph
        .keys()
        .filter(|m| !m.is_empty())
        .find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

fn folder(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

fn is_handler(module: &str) -> bool {
    matches!(folder(module), "api" | "compat")
        && module.contains("::")
        && !FRONT_HELPERS.contains(&module)
}

/// Every import that breaks a layering rule, as `importer -> imported: rule`.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (module, uses) in graph {
        for used in uses {
            let rule = if (is_handler(module) || FRONT_HELPERS.contains(&module.as_str()))
                && is_handler(used)
            {
                Some("a handler imports a handler")
            } else if BELOW_HANDLERS.contains(&folder(module))
                && (is_handler(used) || ROOF.contains(&used.as_str()))
            {
                Some("a module below the handlers imports a handler or the roof (AppState)")
            } else if SERVICES.contains(&folder(module)) && folder(used) == "http" {
                Some("a service imports the HTTP edge")
            } else {
                None
            };
            if let Some(rule) = rule {
                found.push(format!("{module} -> {used}: {rule}"));
            }
        }
    }
    found
}

fn dispatcher_graph() -> BTreeMap<String, BTreeSet<String>> {
    module_graph(&sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")))
}

#[test]
fn every_folder_of_the_dispatcher_is_read() {
    let graph = dispatcher_graph();
    for module in [
        "api::invocations",
        "compat::lambda",
        "core::invoke",
        "events::destinations",
        "http::error",
        "index::store",
        "state",
        "routes",
    ] {
        assert!(
            graph.contains_key(module),
            "{module} not found in {graph:?}"
        );
    }
    assert!(graph["routes"].contains("api::invocations"), "{graph:?}");
    assert!(
        graph["api::invocations"].contains("core::invoke"),
        "{graph:?}"
    );
    assert!(
        graph["api::invocations"].contains("state"),
        "`crate::AppState` counts as an import of state: {graph:?}"
    );
}

#[test]
fn the_dispatchers_modules_import_no_cycle() {
    if let Some(cycle) = find_cycle(&dispatcher_graph()) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_dispatchers_modules_import_downward_only() {
    let graph = dispatcher_graph();
    let below = graph
        .iter()
        .filter(|(m, uses)| BELOW_HANDLERS.contains(&folder(m)) && uses.contains("state"))
        .count();
    assert_eq!(below, 0, "modules below the handlers that import AppState");
    let found = violations(&graph);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// The handlers that name `AppState` although they are not among `WHOLE_STATE`.
fn whole_state_takers(sources: &BTreeMap<String, String>) -> Vec<String> {
    sources
        .iter()
        .filter(|(module, code)| {
            is_handler(module)
                && !WHOLE_STATE.contains(&module.as_str())
                && code.contains("AppState")
        })
        .map(|(module, _)| module.clone())
        .collect()
}

#[test]
fn handlers_take_the_substates_they_use() {
    let sources = sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert_eq!(whole_state_takers(&sources), Vec::<String>::new());
    let planted: BTreeMap<String, String> = [(
        "api::versions".to_string(),
        "pub async fn list(State(state): State<Arc<AppState>>) {}".to_string(),
    )]
    .into();
    assert_eq!(
        whole_state_takers(&planted),
        vec!["api::versions".to_string()]
    );
}

/// A source map of `(module, code)` pairs, with a root that re-exports `AppState`.
fn planted(modules: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut sources: BTreeMap<String, String> = modules
        .iter()
        .map(|(m, code)| (m.to_string(), code.to_string()))
        .collect();
    sources.insert(String::new(), "pub use state::{AppState, Config};".into());
    module_graph(&sources)
}

#[test]
fn a_planted_handler_to_handler_import_is_found() {
    let graph = planted(&[
        ("state", ""),
        ("core::invoke", ""),
        ("compat::sigv4", ""),
        ("api::invocations", "use crate::core::invoke::Call;"),
        (
            "compat::lambda",
            "use crate::{compat::sigv4, api::invocations::invoke};",
        ),
    ]);
    assert_eq!(
        violations(&graph),
        vec!["compat::lambda -> api::invocations: a handler imports a handler".to_string()]
    );
}

#[test]
fn a_planted_import_of_the_roof_from_below_is_found() {
    let graph = planted(&[
        ("state", ""),
        ("core::submit", "fn submit(state: &crate::AppState) {}"),
        (
            "events::triggers",
            "use crate::http::error::ApiError; use crate::core::submit;",
        ),
        ("http::error", ""),
    ]);
    assert_eq!(
        violations(&graph),
        vec![
            "core::submit -> state: a module below the handlers imports a handler or the roof (AppState)".to_string(),
            "events::triggers -> http::error: a service imports the HTTP edge".to_string(),
        ]
    );
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let graph = planted(&[
        ("core::a", "use crate::core::b;"),
        ("core::b", "use crate::core::c::X;"),
        ("core::c", "use crate::core::a;"),
        ("core::d", ""),
    ]);
    assert_eq!(
        find_cycle(&graph),
        Some(vec![
            "core::a".into(),
            "core::b".into(),
            "core::c".into(),
            "core::a".into()
        ])
    );
}
