//! Issue 17, point 2: the crate's layers only point down. Each top-level module of `src/`
//! sits in a tier; a module may name (`crate::…`) modules of its own tier or lower ones,
//! never a higher one. Today's known upward imports are listed in [`KNOWN_UPWARD`] until
//! issue 17 removes them; any new one fails this test, and so does an entry that no
//! longer happens (remove it from the list).
//!
//! Within a tier, and inside each module's folder, the imports form no cycle either:
//! [`modules_import_no_cycle`] checks every folder of `src/` (the top-level modules of
//! `src/` itself, the files of `src/transport/`, …), so each folder reads bottom-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// The tiers, lowest first: `cli → bench/relay/server/client → access/behaviour/obs →
/// transport → endpoint/framing/error` (issue 17), with the modules it does not name
/// placed where they are used: `probe` and `metrics_http` (an HTTP endpoint) are
/// commands, `shutdown`, `idle`, `clock` and `escape` are small helpers below transport.
const TIERS: [&[&str]; 5] = [
    &[
        "endpoint",
        "framing",
        "error",
        "escape",
        "shutdown",
        "idle",
        "clock",
        "build_info",
    ],
    &["transport"],
    &["access", "behaviour", "obs"],
    &[
        "bench",
        "relay",
        "server",
        "client",
        "probe",
        "proxy",
        "metrics_http",
    ],
    &["cli"],
];

/// Upward imports that exist today, each to be removed by issue 17 (`from → to`).
const KNOWN_UPWARD: [(&str, &str); 0] = [];

/// The module behind a name `src/lib.rs` re-exports (`crate::Error` is `error`'s).
fn module_of(name: &str) -> &str {
    match name {
        "Error" | "Result" | "ExitStatus" => "error",
        "Endpoint" => "endpoint",
        "ServeOptions" | "Server" => "server",
        "Shutdown" => "shutdown",
        module => module,
    }
}

/// The tier of a top-level module.
fn tier(module: &str) -> usize {
    TIERS
        .iter()
        .position(|tier| tier.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no tier: add it to TIERS"))
}

#[test]
fn layers_only_point_down() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = BTreeSet::new();
    let mut details = Vec::new();
    for (module, file) in module_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        for named in crate_paths(&code_only(&text)) {
            let named = module_of(&named).to_string();
            if named != module && tier(&named) > tier(&module) {
                upward.insert((module.clone(), named.clone()));
                details.push(format!("{}: {module} → {named}", file.display()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "a lower layer imports a higher one: {new:?}\n{}",
        details.join("\n")
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "these upward imports are gone: remove them from KNOWN_UPWARD: {gone:?}"
    );
}

/// Every `.rs` file under `src/` (but `lib.rs` and `main.rs`, which are above every
/// layer), with the top-level module it belongs to.
fn module_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(src) else {
                continue;
            };
            let first = relative
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            let module = first.trim_end_matches(".rs").to_string();
            if path.extension().is_some_and(|ext| ext == "rs")
                && module != "lib"
                && module != "main"
            {
                files.push((module, path));
            }
        }
    }
    files
}

/// `text` without its comments (line comments and doc comments), so a doc link to a
/// higher module is not an import.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names through `crate::`: `crate::server::X`,
/// `use crate::{obs::Event, transport}` (across lines too).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let single = Regex::new(r"\bcrate::(\w+)").unwrap_or_else(|e| panic!("{e}"));
    let group = Regex::new(r"\bcrate::\{").unwrap_or_else(|e| panic!("{e}"));
    let item = Regex::new(r"^\s*(\w+)").unwrap_or_else(|e| panic!("{e}"));
    let mut named: BTreeSet<String> = single
        .captures_iter(code)
        .map(|c| c[1].to_string())
        .collect();
    for start in group.find_iter(code) {
        let inside = &code[start.end()..];
        let (mut depth, mut from) = (0usize, 0usize);
        for (at, ch) in inside.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    named.extend(item.captures(&inside[from..at]).map(|c| c[1].to_string()));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    named.extend(item.captures(&inside[from..at]).map(|c| c[1].to_string()));
                    from = at + 1;
                }
                _ => {}
            }
        }
    }
    named.retain(|name| name != "self" && name != "super");
    named
}

/// Cycles that stay, each with why.
const KNOWN_CYCLES: [&str; 1] = [
    // Deliberate: an error names its endpoint, and parsing an endpoint fails with an error.
    "crate: endpoint → error → endpoint",
];

#[test]
fn modules_import_no_cycle() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_tree(&src);
    let mut folders: BTreeSet<Vec<String>> = BTreeSet::new();
    folders.insert(Vec::new());
    for module in files.keys() {
        for depth in 1..module.len() {
            folders.insert(module[..depth].to_vec());
        }
    }
    let mut found = Vec::new();
    for folder in &folders {
        let graph = sibling_graph(folder, &files);
        if let Some(cycle) = find_cycle(&graph) {
            found.push(format!("{}: {}", folder_name(folder), cycle.join(" → ")));
        }
    }
    let new: Vec<&String> = found
        .iter()
        .filter(|cycle| !KNOWN_CYCLES.contains(&cycle.as_str()))
        .collect();
    assert!(new.is_empty(), "modules that import each other: {new:#?}");
    let gone: Vec<&&str> = KNOWN_CYCLES
        .iter()
        .filter(|known| !found.iter().any(|cycle| cycle == *known))
        .collect();
    assert!(
        gone.is_empty(),
        "these cycles are gone: remove them from KNOWN_CYCLES: {gone:?}"
    );
}

/// How a folder is named in messages: `crate` for `src/`, else its module path.
fn folder_name(folder: &[String]) -> String {
    if folder.is_empty() {
        "crate".to_string()
    } else {
        folder.join("::")
    }
}

/// Every `.rs` file under `src/` by its module path (`src/a/b.rs` and `src/a/b/mod.rs` are
/// `[a, b]`; `lib.rs` is `[]`; `main.rs`, a separate crate root, is left out), with its
/// code (comments and test modules removed).
fn module_tree(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let Ok(relative) = path.strip_prefix(src) else {
                continue;
            };
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
            tree.insert(module, without_tests(&code_only(&text)));
        }
    }
    tree
}

/// `code` up to its `#[cfg(test)] mod …` block: a test module's `use super::*` names its
/// own file.
fn without_tests(code: &str) -> String {
    let test_module = Regex::new(r"(?m)^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{")
        .unwrap_or_else(|e| panic!("{e}"));
    match test_module.find(code) {
        Some(found) => code[..found.start()].to_string(),
        None => code.to_string(),
    }
}

/// The graph of `folder`'s children (its files and sub-folders): an edge `a → b` when any
/// file in `a` names a path into `b`, directly or through a name `folder` re-exports.
fn sibling_graph(
    folder: &[String],
    files: &BTreeMap<Vec<String>, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let children: BTreeSet<String> = files
        .keys()
        .filter(|m| m.len() > folder.len() && m.starts_with(folder))
        .map(|m| m[folder.len()].clone())
        .collect();
    let aliases = files
        .get(folder)
        .map(|code| reexports(code, &children))
        .unwrap_or_default();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in files {
        if module.len() <= folder.len() || !module.starts_with(folder) {
            continue;
        }
        let from = &module[folder.len()];
        for path in absolute_paths(code, module) {
            if path.len() <= folder.len() || !path.starts_with(folder) {
                continue;
            }
            let named = &path[folder.len()];
            let to = if children.contains(named) {
                Some(named.clone())
            } else {
                aliases.get(named).cloned()
            };
            if let Some(to) = to.filter(|to| to != from) {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// The names a folder's own file (`mod.rs`, `lib.rs`) imports from its children, by the
/// child they come from (`pub use listener::{StdListener, StreamListener}`).
fn reexports(code: &str, children: &BTreeSet<String>) -> BTreeMap<String, String> {
    let statement = Regex::new(r"\buse\s+(?:self::)?(\w+)::(\{[^;]*\}|\w+)(?:\s+as\s+(\w+))?\s*;")
        .unwrap_or_else(|e| panic!("{e}"));
    let name =
        Regex::new(r"(\w+)\s*(?:as\s+(\w+))?\s*(?:,|\}|$)").unwrap_or_else(|e| panic!("{e}"));
    let mut aliases = BTreeMap::new();
    for found in statement.captures_iter(code) {
        let child = found[1].to_string();
        if !children.contains(&child) {
            continue;
        }
        if let Some(renamed) = found.get(3) {
            aliases.insert(renamed.as_str().to_string(), child);
            continue;
        }
        for item in name.captures_iter(&found[2]) {
            let alias = item
                .get(2)
                .unwrap_or_else(|| item.get(1).unwrap_or_else(|| unreachable!()));
            aliases.insert(alias.as_str().to_string(), child.clone());
        }
    }
    aliases
}

/// Every `crate::…`, `super::…` and `self::…` path in the code of `module`, made
/// absolute (without `crate`); a group `a::{b::c, d}` gives `a::b::c` and `a::d`.
fn absolute_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let path =
        Regex::new(r"\b(crate|super|self)((?:::\w+)*)(::\{)?").unwrap_or_else(|e| panic!("{e}"));
    let item = Regex::new(r"^\s*(\w+(?:::\w+)*)").unwrap_or_else(|e| panic!("{e}"));
    // `self::` in `a/b.rs` (or `a/b/mod.rs`) is `a::b`; `super::` is `a`.
    let own: Vec<String> = module.to_vec();
    let mut paths = Vec::new();
    for found in path.captures_iter(code) {
        let mut base: Vec<String> = match &found[1] {
            "crate" => Vec::new(),
            "self" => own.clone(),
            _ => own[..own.len().saturating_sub(1)].to_vec(),
        };
        let mut segments: Vec<String> = found[2]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        while segments.first().is_some_and(|s| s == "super") {
            segments.remove(0);
            base.pop();
        }
        base.extend(segments);
        if found.get(3).is_none() {
            paths.push(base);
            continue;
        }
        let inside = &code[found.get(0).map_or(0, |m| m.end())..];
        for listed in top_level_items(inside) {
            if let Some(named) = item.captures(listed) {
                let mut full = base.clone();
                full.extend(named[1].split("::").map(str::to_string));
                paths.push(full);
            }
        }
    }
    paths
}

/// The comma-separated items of a `{…}` group whose opening brace is just before `inside`.
fn top_level_items(inside: &str) -> Vec<&str> {
    let (mut depth, mut from, mut items) = (0usize, 0usize, Vec::new());
    for (at, ch) in inside.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&inside[from..at]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inside[from..at]);
                from = at + 1;
            }
            _ => {}
        }
    }
    items
}

/// One cycle of `graph` (as the nodes along it, the first repeated at the end), if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    /// Depth-first search from `node`; `path` is the current chain, `done` the nodes
    /// whose every descendant is known to be acyclic.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

/// The module map in `src/lib.rs` tells the truth: it names every module, and its
/// layers line lists [`TIERS`], highest first.
#[test]
fn the_crate_map_names_every_module_and_the_tiers() {
    let lib = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_else(|e| panic!("{e}"));
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    for module in &modules {
        let listed = format!("//! * [`{module}`]");
        let listed_as_mod = format!("//! * [`{module}`](mod@{module})");
        assert!(
            lib.contains(&listed) || lib.contains(&listed_as_mod),
            "src/lib.rs's map does not list `{module}`"
        );
    }
    let layers_line: String = lib
        .lines()
        .skip_while(|line| !line.starts_with("//! `cli` →"))
        .take_while(|line| line.starts_with("//! ") && !line.trim_end().ends_with("//!"))
        .map(|line| line.trim_start_matches("//! "))
        .collect::<Vec<_>>()
        .join(" ");
    let named: Vec<Vec<String>> = layers_line
        .trim_end_matches('.')
        .split('→')
        .map(|tier| {
            let mut names: Vec<String> = tier
                .split_whitespace()
                .map(|name| name.trim_matches('`').to_string())
                .collect();
            names.sort();
            names
        })
        .collect();
    let expected: Vec<Vec<String>> = TIERS
        .iter()
        .rev()
        .map(|tier| {
            let mut names: Vec<String> = tier.iter().map(|name| (*name).to_string()).collect();
            names.sort();
            names
        })
        .collect();
    assert_eq!(named, expected, "src/lib.rs's layers line against TIERS");
    let tiered: BTreeSet<&str> = TIERS.iter().flat_map(|tier| tier.iter().copied()).collect();
    let declared: BTreeSet<&str> = modules.iter().copied().collect();
    assert_eq!(
        tiered, declared,
        "TIERS against the modules src/lib.rs declares"
    );
}
