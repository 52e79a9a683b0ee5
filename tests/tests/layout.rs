//! The layout rules of `docs/architecture.md`, checked on the source: no module imports
//! one that imports it back (at the crate's top level, and among the files of each
//! directory module), and the crates depend one way (storage ← raft ← node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The source of a file without comments and without its `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Returns the identifiers right after each `prefix` in `code`, and in the braces of
/// `prefix{...}`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        let group = if let Some(inner) = rest.strip_prefix('{') {
            &inner[..inner.find('}').unwrap_or(inner.len())]
        } else {
            rest
        };
        for (index, word) in group.split(|c: char| !(c.is_alphanumeric() || c == '_')).enumerate() {
            if !word.is_empty() {
                names.insert(word.to_string());
            }
            if !rest.starts_with('{') && index == 0 {
                break;
            }
        }
    }
    names
}

/// The names `lib.rs` re-exports, by the module they come from.
fn reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = code(&src.join("lib.rs"));
    let mut owners = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(used) = statement.trim().strip_prefix("pub use ") else { continue };
        let Some((module, names)) = used.split_once("::") else { continue };
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() {
                owners.insert(name.to_string(), module.to_string());
            }
        }
    }
    owners
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// Test-only files (checked-in format fixtures, the streaming path's comparison): they
/// may use anything.
fn is_test_only(path: &Path) -> bool {
    let name = path.file_stem().unwrap().to_string_lossy();
    matches!(name.as_ref(), "fixtures" | "same_bytes" | "fuzzing" | "main")
}

/// Returns a cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// The imports between the top-level modules of the crate in `src`.
fn top_level_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let owners = reexports(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src).into_iter().filter(|file| !is_test_only(file)) {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let text = code(&file);
        let mut used = names_after(&text, "crate::");
        if relative.components().count() == 1 {
            used.extend(names_after(&text, "super::"));
        }
        for name in used {
            let module = owners.get(&name).cloned().unwrap_or(name);
            let is_module = src.join(format!("{module}.rs")).exists() || src.join(&module).is_dir();
            if module != top && is_module {
                edges.entry(top.clone()).or_default().insert(module);
            }
        }
    }
    edges
}

/// The imports between the files of directory module `dir` (`super::x`, `crate::m::x`).
fn sibling_imports(src: &Path, dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let module = dir.strip_prefix(src).unwrap().to_string_lossy().replace('/', "::");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()) {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        if file.is_dir() || name == "mod" || is_test_only(&file) {
            continue;
        }
        let text = code(&file);
        let mut used = names_after(&text, "super::");
        used.extend(names_after(&text, &format!("crate::{module}::")));
        for sibling in used {
            if sibling != name && dir.join(format!("{sibling}.rs")).exists() {
                edges.entry(name.clone()).or_default().insert(sibling);
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut cycles = Vec::new();
    for krate in ["storage", "raft", "node"] {
        let src = workspace().join(krate).join("src");
        if let Some(cycle) = find_cycle(&top_level_imports(&src)) {
            cycles.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
        let dirs = rust_files(&src).into_iter().filter_map(|file| {
            (file.file_name().unwrap() == "mod.rs").then(|| file.parent().unwrap().to_path_buf())
        });
        for dir in dirs {
            if let Some(cycle) = find_cycle(&sibling_imports(&src, &dir)) {
                let at = dir.strip_prefix(&src).unwrap().display();
                cycles.push(format!("{krate}/{at}: {}", cycle.join(" -> ")));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other (move what both need to a leaf):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("jobs".to_string(), BTreeSet::from(["reports".to_string()])),
        ("reports".to_string(), BTreeSet::from(["search".to_string(), "jobs".to_string()])),
    ]
    .into();
    let cycle = find_cycle(&edges).expect("jobs and reports import each other");
    assert_eq!(cycle.first(), cycle.last());
    let mut acyclic = edges.clone();
    acyclic.get_mut("reports").unwrap().remove("jobs");
    assert_eq!(find_cycle(&acyclic), None);
    let owners =
        names_after("use crate::{jobs::Searches, reports};\nuse crate::sse::Hub;", "crate::");
    assert_eq!(
        owners,
        BTreeSet::from(["Searches".into(), "jobs".into(), "reports".into(), "sse".into()])
    );
}

#[test]
fn crates_depend_one_way() {
    let manifest =
        |krate: &str| std::fs::read_to_string(workspace().join(krate).join("Cargo.toml")).unwrap();
    let normal =
        |text: &str| text.split("[dev-dependencies]").next().unwrap_or_default().to_string();
    assert!(!normal(&manifest("storage")).contains("shoal-raft"));
    assert!(!normal(&manifest("storage")).contains("shoal-node"));
    assert!(!normal(&manifest("raft")).contains("shoal-node"));
}
