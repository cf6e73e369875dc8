//! The worker's modules form no import cycle: each `crate::` (or `super::`) reference in a
//! module's non-test code points down a layering that never comes back to it. An item named
//! at a crate's root (`crate::Worker`, `crate::run`) counts as an import of the root itself
//! (`lib`, or `main` for the binary), so a module cannot reach up into the roof that declares it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `src`, by its path relative to `src` (`jobs/settle.rs`), with its
/// text up to its first `#[cfg(test)]`.
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

/// A file's module path: `jobs/settle.rs` → `jobs::settle`, `jobs/mod.rs` → `jobs`; the crate
/// roots keep their names (`lib`, `main`).
fn module_of(file: &str) -> String {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    stem.replace('/', "::")
}

/// The modules `crate::`/`super::` paths in `code` name: every path of a `{…}` group, each
/// resolved to the longest known module it starts with, or to `root` when it names an item of
/// the crate root.
fn references(
    code: &str,
    module: &str,
    root: &str,
    modules: &BTreeSet<String>,
) -> BTreeSet<String> {
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

    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // Skip `squall_worker_crate::` and the like: only a bare `crate::` is this crate.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        paths(&[], &code[at + "crate::".len()..], &mut found);
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let parent: Vec<String> = module
            .split("::")
            .map(String::from)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, parent)| parent.to_vec())
            .unwrap_or_default();
        paths(&parent, &code[at + "super::".len()..], &mut found);
    }
    // A module also names its children without `crate::` (the root names every top-level
    // module so: `job::serve_function(…)` in `lib.rs`).
    let own: Vec<String> = match module {
        "lib" | "main" => Vec::new(),
        _ => module.split("::").map(String::from).collect(),
    };
    for child in modules {
        let name = match own.is_empty() {
            true => Some(child.as_str()),
            false => child.strip_prefix(&format!("{}::", own.join("::"))),
        };
        let Some(name) = name else { continue };
        if name.is_empty() || name.contains("::") || name == "lib" || name == "main" {
            continue;
        }
        let needle = format!("{name}::");
        for (at, _) in code.match_indices(&needle) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            paths(&own, &code[at..], &mut found);
        }
    }
    let mut uses = BTreeSet::new();
    for path in found {
        let target = (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|candidate| modules.contains(candidate))
            .unwrap_or_else(|| root.to_string());
        if target != module {
            uses.insert(target);
        }
    }
    uses
}

/// Module → the modules its non-test code names, for a crate given as file → source. The
/// binary's root (`main.rs`) and the modules it declares with `mod x;` are a crate of their
/// own, whose root is `main`; every other file belongs to the library, whose root is `lib`.
fn module_graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let binary: BTreeSet<String> = sources
        .get("main.rs")
        .map(|main| {
            main.lines()
                .filter_map(|line| {
                    let line = line.trim().strip_prefix("pub ").unwrap_or(line.trim());
                    line.strip_prefix("mod ")?
                        .strip_suffix(';')
                        .map(String::from)
                })
                .chain(["main".to_string()])
                .collect()
        })
        .unwrap_or_default();
    let library: BTreeSet<String> = sources
        .keys()
        .map(|file| module_of(file))
        .filter(|m| !binary.contains(m.split("::").next().unwrap_or_default()))
        .collect();
    sources
        .iter()
        .map(|(file, text)| {
            let module = module_of(file);
            let code = text
                .find("#[cfg(test)]")
                .map_or(&text[..], |at| &text[..at]);
            let (root, modules) = if library.contains(&module) {
                ("lib", &library)
            } else {
                ("main", &binary)
            };
            let name = match module.as_str() {
                "lib" | "main" => module.clone(),
                _ if root == "main" => format!("main/{module}"),
                _ => module.clone(),
            };
            let uses = references(code, &module, root, modules)
                .into_iter()
                .map(|m| match m.as_str() {
                    "main" => m,
                    _ if root == "main" => format!("main/{m}"),
                    _ => m,
                })
                .collect();
            (name, uses)
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

fn source_map(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(file, text)| (file.to_string(), text.to_string()))
        .collect()
}

#[test]
fn the_workers_modules_import_no_cycle() {
    let sources = read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let graph = module_graph(&sources);
    assert!(graph.len() > 20, "the modules were not found: {graph:?}");
    assert!(graph["jobs::pull"].contains("jobs::attempt"), "{graph:?}");
    assert!(graph["registry"].contains("jobs::pull"), "{graph:?}");
    assert!(graph["main/fleet"].contains("main/signal"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn a_module_naming_a_type_of_the_root_that_imports_it_is_a_cycle() {
    let sources = source_map(&[
        (
            "lib.rs",
            "//! Roof.\npub mod jobs;\nuse crate::jobs::context;\nfn spawn() { jobs::attempt::run_job(); }\n",
        ),
        ("jobs/mod.rs", "pub mod attempt;\npub mod context;\n"),
        ("jobs/context.rs", "pub struct Jobs;\n"),
        (
            "jobs/attempt.rs",
            "use super::context::Jobs;\nuse crate::{FunctionState, Worker};\n",
        ),
    ]);
    let graph = module_graph(&sources);
    assert_eq!(
        graph["lib"],
        BTreeSet::from(["jobs::attempt".to_string(), "jobs::context".to_string()])
    );
    assert_eq!(
        graph["jobs::attempt"],
        BTreeSet::from(["lib".to_string(), "jobs::context".to_string()])
    );
    assert_eq!(
        find_cycle(&graph),
        Some(vec![
            "jobs::attempt".into(),
            "lib".into(),
            "jobs::attempt".into()
        ])
    );
}

#[test]
fn a_binary_module_calling_into_main_is_a_cycle_and_test_code_is_left_out() {
    let sources = source_map(&[
        (
            "main.rs",
            "mod fleet;\nfn main() { crate::fleet::run(); }\n",
        ),
        ("fleet.rs", "pub fn run() { crate::wait_for_signal(); }\n"),
        ("lib.rs", "pub mod metrics;\npub mod aggregate;\n"),
        ("metrics.rs", "use crate::aggregate::Exposition;\n"),
        (
            "aggregate.rs",
            "pub struct Exposition;\n#[cfg(test)]\nmod tests { use crate::metrics::Metrics; }\n",
        ),
    ]);
    let graph = module_graph(&sources);
    assert_eq!(graph["main/fleet"], BTreeSet::from(["main".to_string()]));
    assert!(graph["aggregate"].is_empty(), "{graph:?}");
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["main".into(), "main/fleet".into(), "main".into()])
    );
}
