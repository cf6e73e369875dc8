//! The benchmark's modules are imported downward only: no import cycle between them, and no
//! module imports the orchestration on top (`run`) or the crate root (`main`). Each `crate::`
//! path in a module's non-test code is an import of the longest module it starts with; a path
//! that names an item of the root (`crate::Args`) is an import of `main`, and so is every
//! `{…}` group's item. The root imports the modules it names (`run::run(…)`). A self-test
//! plants a cycle in a synthetic source map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crate root's module name.
const ROOT: &str = "main";

/// The modules nothing below may import: the orchestration and the root.
const ROOF: &[&str] = &["run", ROOT];

/// Every `.rs` file under `src`, by its path relative to `src` (`run.rs`).
fn read_sources(src: &Path) -> BTreeMap<String, String> {
    fn walk(src: &Path, dir: &Path, sources: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(src, &path, sources);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read module");
                let relative = path.strip_prefix(src).expect("under src");
                sources.insert(relative.to_string_lossy().replace('\\', "/"), text);
            }
        }
    }
    let mut sources = BTreeMap::new();
    walk(src, src, &mut sources);
    sources
}

/// A file's module path: `report.rs` → `report`, `phases/mod.rs` → `phases`, `main.rs` → `main`.
fn module_of(file: &str) -> String {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    stem.replace('/', "::")
}

/// A module's code without its tests (everything from the first `#[cfg(test)]` on) and
/// without its comment lines, whose prose may name a module it does not import.
fn non_test_code(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Appends to `out` every path that starts at `rest` (after `prefix`), a `{…}` group expanded
/// into one path per item.
fn paths(prefix: &[String], rest: &str, out: &mut Vec<Vec<String>>) {
    let mut segments = prefix.to_vec();
    let mut rest = rest.trim_start();
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                // Split the group at its top-level commas.
                let (mut depth, mut start) = (0usize, 0usize);
                for (at, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            paths(&segments, &group[start..at], out);
                            return;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            paths(&segments, &group[start..at], out);
                            start = at + 1;
                        }
                        _ => {}
                    }
                }
            }
            break;
        }
        segments.push(ident.clone());
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(more) => rest = more.trim_start(),
            None => break,
        }
    }
    out.push(segments);
}

/// Whether the match of a path at `at` in `code` starts a path (it is not the tail of
/// `other_crate::` or `a::b::`).
fn starts_a_path(code: &str, at: usize) -> bool {
    let before = code[..at].chars().next_back();
    !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The modules `module`'s `code` imports: every `crate::` path resolved to the longest known
/// module it starts with, or to the root when it names an item of the root. The root also
/// imports the modules it names without `crate::` (`use context::Settings;`, `run::run(…)`).
fn references(code: &str, module: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if starts_a_path(code, at) {
            paths(&[], &code[at + "crate::".len()..], &mut found);
        }
    }
    if module == ROOT {
        for child in modules.iter().filter(|m| *m != ROOT && !m.contains("::")) {
            let needle = format!("{child}::");
            for (at, _) in code.match_indices(&needle) {
                if starts_a_path(code, at) {
                    paths(&[], &code[at..], &mut found);
                }
            }
        }
    }
    found
        .into_iter()
        .map(|path| {
            (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains(candidate))
                .unwrap_or_else(|| ROOT.to_string())
        })
        .filter(|target| target != module)
        .collect()
}

/// Module → the modules its non-test code imports, for a crate given as file → source.
fn module_graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.keys().map(|file| module_of(file)).collect();
    sources
        .iter()
        .map(|(file, text)| {
            let module = module_of(file);
            let uses = references(&non_test_code(text), &module, &modules);
            (module, uses)
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
    graph
        .keys()
        .find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

/// Every import of the roof (`run`, `main`) from below it, as `importer -> imported`.
fn roof_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    graph
        .iter()
        .filter(|(module, _)| module.as_str() != ROOT)
        .flat_map(|(module, uses)| {
            uses.iter()
                .filter(|used| ROOF.contains(&used.as_str()))
                .map(move |used| format!("{module} -> {used}"))
        })
        .collect()
}

fn bench_graph() -> BTreeMap<String, BTreeSet<String>> {
    module_graph(&read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    ))
}

fn source_map(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(file, text)| (file.to_string(), text.to_string()))
        .collect()
}

#[test]
fn every_module_of_the_bench_is_read() {
    let graph = bench_graph();
    assert!(graph.len() > 15, "the modules were not found: {graph:?}");
    assert!(graph[ROOT].contains("run"), "{graph:?}");
    assert!(graph[ROOT].contains("bare"), "{graph:?}");
    assert!(graph["run"].contains("squall"), "{graph:?}");
    assert!(graph["run"].contains("replicated"), "{graph:?}");
    assert!(graph["cold"].contains("context"), "{graph:?}");
    assert!(graph["replicated"].contains("measure"), "{graph:?}");
}

#[test]
fn the_benchs_modules_import_no_cycle() {
    if let Some(cycle) = find_cycle(&bench_graph()) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn no_module_imports_the_orchestration_or_the_root() {
    let found = roof_imports(&bench_graph());
    assert!(
        found.is_empty(),
        "imports from below:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_planted_cycle_is_found() {
    let sources = source_map(&[
        (
            "main.rs",
            "mod phase;\nmod sink;\npub struct Settings;\nfn main() { phase::measure(); }\n",
        ),
        (
            "phase.rs",
            "use crate::{sink::{self, Sink}, Settings};\npub fn measure() {}\n",
        ),
        (
            "sink.rs",
            "// Not an import: crate::phase.\npub struct Sink;\n#[cfg(test)]\nmod tests { use crate::phase; }\n",
        ),
    ]);
    let graph = module_graph(&sources);
    assert_eq!(graph[ROOT], BTreeSet::from(["phase".to_string()]));
    assert_eq!(
        graph["phase"],
        BTreeSet::from([ROOT.to_string(), "sink".to_string()])
    );
    assert!(graph["sink"].is_empty(), "{graph:?}");
    assert_eq!(
        find_cycle(&graph),
        Some(vec![ROOT.into(), "phase".into(), ROOT.into()])
    );
    assert_eq!(roof_imports(&graph), vec!["phase -> main".to_string()]);
}

#[test]
fn a_cycle_between_modules_below_the_root_is_found() {
    let sources = source_map(&[
        ("main.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        ("b.rs", "fn f() { crate::c::g(); }\n"),
        ("c.rs", "use crate::{a, b as _};\n"),
    ]);
    assert_eq!(
        find_cycle(&module_graph(&sources)),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
