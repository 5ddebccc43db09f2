//! Issue 17, point 2: the crate's layers only point down. Each top-level module of `src/`
//! sits in a tier; a module may name (`crate::…`) modules of its own tier or lower ones,
//! never a higher one. Today's known upward imports are listed in [`KNOWN_UPWARD`] until
//! issue 17 removes them; any new one fails this test, and so does an entry that no
//! longer happens (remove it from the list).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;

/// The tiers, lowest first: `cli → bench/relay/server/client → access/behaviour/obs →
/// transport → endpoint/framing/error` (issue 17), with the modules it does not name
/// placed where they are used: `probe` is a command, `shutdown`, `idle` and `escape` are
/// small helpers below transport.
const TIERS: [&[&str]; 5] = [
    &[
        "endpoint",
        "framing",
        "error",
        "escape",
        "shutdown",
        "idle",
        "build_info",
    ],
    &["transport"],
    &["access", "behaviour", "obs"],
    &["bench", "relay", "server", "client", "probe", "proxy"],
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
