//! The workspace's architecture and style rules, kept by a test (in the
//! spirit of TigerBeetle's `tidy.zig`). Method: read every crate's
//! `Cargo.toml` and Rust sources as text (no compiler), and check
//!
//! 1. the crate graph depends downward only: each crate has a rank
//!    (`RANKS`) and may depend only on crates of lower rank; the shipped
//!    `bursar` binary depends on no test kit, benchmark or chaos harness;
//! 2. every crate has its line in ARCHITECTURE.md;
//! 3. library crates return typed errors, never `Result<_, String>`;
//! 4. batch-size literals (8189, 8190, 8191) appear only in a limits module
//!    (or, where an attribute takes only a literal, with `// = BATCH_EVENTS_MAX`);
//! 5. no function in a crate's `src/` is longer than 70 lines, except those
//!    listed in `LONG_FUNCTIONS`, which may not grow (and leave the list
//!    when short); tests may be longer, a scenario reads best in one piece;
//! 6. no crate's top-level modules form a cycle;
//! 7. limits are named `X_MAX`/`X_MIN`, never `MAX_X`.
//!
//! A rule that fails names the file and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Crates by rank: a crate may depend only on crates of a lower rank.
const RANKS: &[(&str, u8)] = &[
    // Foundations: no Bursar dependencies.
    ("core", 0),
    ("store", 0),
    ("runtime", 0),
    ("crypto", 0),
    ("tls", 0),
    ("nats", 0),
    ("testkit", 0),
    ("fuzz", 0),
    // Formats over the core.
    ("log", 1),
    ("proto", 1),
    ("api", 1),
    ("projection", 1),
    // One node's engine, and its client.
    ("server", 2),
    ("client", 2),
    // Around the engine.
    ("cluster", 3),
    ("workflow", 3),
    ("outbound", 3),
    ("http", 4),
    ("node", 5),
    // Binaries and tools.
    ("cli", 6),
    ("chaos", 6),
    ("bench", 7),
    ("tidy", 7),
];

/// What the deployed binary must never link.
const NEVER_IN_THE_BINARY: &[&str] =
    &["bursar-testkit", "bursar-fuzz", "bursar-bench", "bursar-chaos", "hdrhistogram", "rand_distr", "rcgen"];

/// Functions over `FUNCTION_LINES_MAX` lines that predate the rule, with
/// their length then. They may shrink, not grow; once at or under the
/// limit, remove them here.
const LONG_FUNCTIONS: &[(&str, usize)] = &[
    ("crates/bench/src/failover.rs::run", 167),
    ("crates/bench/src/project_postgres.rs::run", 88),
    ("crates/bench/src/rejoin.rs::run", 73),
    ("crates/bench/src/relay_nats.rs::run", 96),
    ("crates/cli/src/http_cli/import.rs::parse_row", 88),
    ("crates/cli/src/http_cli/import.rs::run", 213),
    ("crates/core/src/machine.rs::execute_inner", 97),
    ("crates/core/src/state/transfers.rs::create_new", 72),
    ("crates/core/src/state/transfers.rs::settle_pending", 98),
    ("crates/http/src/routes/webhooks.rs::create", 93),
    ("crates/outbound/src/webhooks/delivery.rs::webhook", 71),
    ("crates/projection/src/apply.rs::add", 110),
    ("crates/server/src/engine.rs::apply_committed", 81),
    ("crates/server/src/node.rs::start_with", 104),
];

const FUNCTION_LINES_MAX: usize = 70;

/// Top-level module cycles still allowed (`crate: a, b, c`: modules that
/// reach each other); they may only go away.
const MODULE_CYCLES_ALLOWED: &[&str] = &[];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

fn crate_dirs() -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<_> = fs::read_dir(workspace().join("crates"))
        .expect("crates/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().expect("a name").to_string_lossy().into_owned(), p))
        .collect();
    dirs.sort();
    dirs
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace()).unwrap_or(path).display().to_string()
}

/// The names in one `[section]` of a manifest (`[dependencies]` etc.).
fn dependencies(manifest: &str, section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.push(name.to_string());
        }
    }
    names
}

fn rank(name: &str) -> Option<u8> {
    RANKS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

#[test]
fn crates_depend_downward_only() {
    let mut problems = Vec::new();
    for (name, dir) in crate_dirs() {
        let Some(own) = rank(&name) else {
            problems.push(format!("crates/{name} has no rank in RANKS (tidy.rs): decide where it sits"));
            continue;
        };
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("a readable manifest");
        for dep in dependencies(&manifest, "[dependencies]") {
            let Some(dep_crate) = dep.strip_prefix("bursar-") else { continue };
            match rank(dep_crate) {
                Some(r) if r < own => {}
                Some(r) => problems.push(format!("crates/{name} (rank {own}) depends on {dep} (rank {r}): upward")),
                None => problems.push(format!("crates/{name} depends on {dep}, which has no rank")),
            }
        }
        if name == "cli" {
            for dep in dependencies(&manifest, "[dependencies]") {
                if NEVER_IN_THE_BINARY.contains(&dep.as_str()) {
                    problems.push(format!("the shipped bursar binary depends on {dep} (a test or benchmark kit)"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "crate graph:\n{}", problems.join("\n"));
}

#[test]
fn every_crate_is_on_the_map() {
    let map = fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let missing: Vec<_> = crate_dirs()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            !map.contains(&format!("| `{n}` "))
                && !map.contains(&format!("`{n}`, "))
                && !map.contains(&format!(", `{n}` |"))
        })
        .collect();
    assert!(missing.is_empty(), "crates without a row in ARCHITECTURE.md's crate table: {missing:?}");
}

/// Library crates: not the binaries and developer tools.
fn is_library(name: &str) -> bool {
    !matches!(name, "cli" | "bench" | "chaos" | "tidy")
}

fn count_string_errors(text: &str) -> usize {
    let mut count = 0;
    for (i, _) in text.match_indices("Result<") {
        // The type's closing `>` at depth 0; a `String>` right before it.
        let rest = &text[i + "Result<".len()..];
        let mut depth = 0usize;
        for (j, c) in rest.char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                ')' | ']' => depth = depth.saturating_sub(1),
                '>' if depth == 0 => {
                    if rest[..j].trim_end().ends_with(", String") {
                        count += 1;
                    }
                    break;
                }
                '>' => depth -= 1,
                ';' | '{' => break,
                _ => {}
            }
        }
    }
    count
}

#[test]
fn library_crates_return_typed_errors() {
    let mut problems = Vec::new();
    for (name, dir) in crate_dirs().into_iter().filter(|(n, _)| is_library(n)) {
        let found: usize =
            rust_files(&dir.join("src")).iter().map(|f| count_string_errors(&fs::read_to_string(f).unwrap())).sum();
        if found > 0 {
            problems.push(format!("crates/{name}: {found} `Result<_, String>`: use a thiserror enum"));
        }
    }
    assert!(problems.is_empty(), "typed errors:\n{}", problems.join("\n"));
}

#[test]
fn batch_size_literals_live_in_limits_modules() {
    let mut problems = Vec::new();
    for (_, dir) in crate_dirs().into_iter().filter(|(n, _)| n != "tidy") {
        for file in rust_files(&dir) {
            if file.file_name().is_some_and(|n| n == "limits.rs") {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let (code, comment) = line.split_once("//").unwrap_or((line, ""));
                // A literal the compiler cannot take as a constant names it (and a test checks it).
                if comment.contains("= BATCH_EVENTS_MAX") {
                    continue;
                }
                for literal in ["8189", "8190", "8191"] {
                    let hit = code.match_indices(literal).any(|(i, _)| {
                        let before = code[..i].chars().next_back();
                        let after = code[i + 4..].chars().next();
                        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !after.is_some_and(|c| c.is_ascii_digit())
                    });
                    if hit {
                        problems.push(format!("{}:{}: {}", relative(&file), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "batch-size literals outside a limits module (use the named limit):\n{}",
        problems.join("\n")
    );
}

#[test]
fn limits_are_named_x_max() {
    let mut problems = Vec::new();
    for (_, dir) in crate_dirs() {
        for file in rust_files(&dir) {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                let code = code.strip_prefix("pub(crate) ").or_else(|| code.strip_prefix("pub ")).unwrap_or(code);
                let Some(name) = code.strip_prefix("const ").or_else(|| code.strip_prefix("static ")) else { continue };
                if name.starts_with("MAX_") || name.starts_with("MIN_") {
                    problems.push(format!("{}:{}: {}", relative(&file), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "limits are named X_MAX / X_MIN, not MAX_X:\n{}", problems.join("\n"));
}

/// `fn name` at the start of a line (after visibility and qualifiers).
fn function_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    for prefix in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

/// Every function with a body: (name, first line, length in lines).
/// rustfmt puts a body's closing brace at the signature's indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = function_name(line) else { continue };
        let indent = &line[..line.len() - line.trim_start().len()];
        let close = format!("{indent}}}");
        let mut end = None;
        for (j, l) in lines.iter().enumerate().skip(i) {
            if j == i && l.trim_end().ends_with('}') && l.contains('{') {
                end = Some(j);
                break;
            }
            if l.trim_end().ends_with(';') && !lines[i..j].iter().any(|s| s.contains('{')) {
                break; // a declaration without a body
            }
            if j > i && *l == close {
                end = Some(j);
                break;
            }
        }
        if let Some(end) = end {
            out.push((name.to_string(), i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn functions_stay_short() {
    let mut problems = Vec::new();
    // The longest function of each `file::name` (a file may have several).
    let mut longest: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (_, dir) in crate_dirs() {
        for file in rust_files(&dir.join("src")) {
            let text = fs::read_to_string(&file).unwrap();
            for (name, line, length) in functions(&text) {
                let entry = longest.entry(format!("{}::{name}", relative(&file))).or_insert((line, length));
                if length > entry.1 {
                    *entry = (line, length);
                }
            }
        }
    }
    for (key, (line, length)) in &longest {
        match LONG_FUNCTIONS.iter().find(|(k, _)| k == key).map(|(_, l)| *l) {
            None if *length > FUNCTION_LINES_MAX => problems
                .push(format!("{key} (line {line}) has {length} lines (at most {FUNCTION_LINES_MAX}): split it")),
            Some(max) if *length > max => {
                problems.push(format!("{key} grew to {length} lines (listed at {max}): shorten it"))
            }
            Some(_) if *length <= FUNCTION_LINES_MAX => {
                problems.push(format!("{key} is {length} lines now: remove it from LONG_FUNCTIONS"))
            }
            _ => {}
        }
    }
    for (key, _) in LONG_FUNCTIONS {
        if !longest.contains_key(*key) {
            problems.push(format!("{key} is listed in LONG_FUNCTIONS but no longer exists: remove it"));
        }
    }
    assert!(problems.is_empty(), "function length:\n{}", problems.join("\n"));
}

/// The crate's top-level modules and, for each, the others it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let stem = path.file_stem().expect("a name").to_string_lossy().into_owned();
        if matches!(stem.as_str(), "lib" | "main") || (path.is_file() && path.extension().is_none_or(|e| e != "rs")) {
            continue;
        }
        let files = if path.is_dir() { rust_files(&path) } else { vec![path.clone()] };
        let entry: &mut BTreeSet<String> = modules.entry(stem.clone()).or_default();
        for file in files {
            // Unit tests may reach anywhere; only the module's own code counts.
            let name = file.file_name().expect("a name").to_string_lossy();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String =
                code.lines().map(|l| l.split_once("//").map_or(l, |(c, _)| c)).collect::<Vec<_>>().join("\n");
            entry.extend(named_modules(&code));
        }
        entry.remove(&stem);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    for refs in modules.values_mut() {
        refs.retain(|r| names.contains(r));
    }
    modules
}

/// The first path segment after each `crate::` (and inside `crate::{...}`).
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// The groups of modules that reach each other (strongly connected
/// components of more than one module), each as "a, b, c".
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut out = BTreeSet::new();
    for (a, from_a) in &reached {
        let mut group: BTreeSet<&str> =
            from_a.iter().filter(|b| reached.get(b).is_some_and(|r| r.contains(*a))).map(String::as_str).collect();
        if !group.is_empty() {
            group.insert(a.as_str());
            out.insert(group.into_iter().collect::<Vec<_>>().join(", "));
        }
    }
    out
}

#[test]
fn modules_do_not_form_cycles() {
    let mut problems = Vec::new();
    let mut allowed_seen = BTreeSet::new();
    for (name, dir) in crate_dirs() {
        for group in cycles(&module_graph(&dir.join("src"))) {
            let key = format!("{name}: {group}");
            if MODULE_CYCLES_ALLOWED.contains(&key.as_str()) {
                allowed_seen.insert(key);
            } else {
                problems.push(format!(
                    "crates/{name}: the modules {group} depend on each other: move what they share into a module of its own"
                ));
            }
        }
    }
    for key in MODULE_CYCLES_ALLOWED {
        if !allowed_seen.contains(*key) {
            problems.push(format!("the cycle {key} is gone: remove it from MODULE_CYCLES_ALLOWED"));
        }
    }
    assert!(problems.is_empty(), "module cycles:\n{}", problems.join("\n"));
}

#[test]
fn the_checks_themselves_work() {
    assert_eq!(count_string_errors("fn f() -> Result<Vec<u8>, String> {}"), 1);
    assert_eq!(count_string_errors("fn f() -> Result<(), MyError> {}"), 0);
    assert_eq!(count_string_errors("fn f() -> Result<HashMap<u8, String>, E> {}"), 0);
    assert_eq!(function_name("    pub(crate) async fn run_it(x: u8) {"), Some("run_it"));
    assert_eq!(function_name("    let f = fn_ptr;"), None);
    let text = "fn a() {\n    1;\n}\n\nfn b() -> u8 { 2 }\ntrait T {\n    fn c(&self);\n}\n";
    let found = functions(text);
    assert_eq!(found, vec![("a".to_string(), 1, 3), ("b".to_string(), 5, 1)]);
    assert_eq!(
        named_modules("use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();"),
        ["a", "b", "c", "f"].into_iter().map(String::from).collect()
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["c".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
        ("d".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), ["a, b, c".to_string()].into(), "d only reaches the cycle");
}
