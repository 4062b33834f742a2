//! Tidy: checks that keep the code base honest without anyone remembering to (after
//! rust-analyzer's `xtask/src/tidy.rs`). They walk every `.rs` file of the workspace,
//! skipping `target/`, `.tools/`, `.data/` and hidden directories, and check:
//!
//! 1. **Module docs.** Every file starts with a `//!` line saying what it is for.
//! 2. **File size.** A source file has at most 600 lines before its first `#[cfg(test)]`
//!    line (all its lines when it has none). Files under a crate's `tests/` directory are
//!    test files and exempt; bench programs in `benches/benches/` are not. No file is
//!    exempt by name.
//! 3. **The code map.** In ARCHITECTURE.md's `## Code map` section (up to the next `## `
//!    heading), every backticked token that ends in `.rs` or `/` and contains `/src/` is a
//!    path from the repository root that must exist; and every `.rs` file under
//!    `<crate>/src/` of each workspace member except `lib.rs`, `main.rs` and `build.rs`
//!    must be named there — a `mod.rs` by naming its directory (`substrate/src/nats/`).
//! 4. **No skipped tests.** No `ignore` and no `should_panic` test attribute anywhere
//!    (STYLE.md): a test that cannot run is deleted or fixed, and a failure is asserted
//!    on the `Err` it returns.

use std::path::{Path, PathBuf};

/// The package's directory as the test runner gives it at run time (`cargo test` and
/// nextest set `CARGO_MANIFEST_DIR`), else as it was at build time: a test binary may be
/// reused from a build in another clone that shares the target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

/// Most lines a source file may have before its `#[cfg(test)]`.
const MAX_LINES: usize = 600;

/// Directories the walk never enters, besides hidden ones.
const SKIPPED_DIRS: &[&str] = &["target", ".tools", ".data"];

/// Files under `<crate>/src/` that the code map need not name.
const UNNAMED_FILES: &[&str] = &["lib.rs", "main.rs", "build.rs"];

fn root() -> PathBuf {
    manifest_dir()
        .as_path()
        .parent()
        .expect("the tests crate lives in the workspace root")
        .to_path_buf()
}

/// `path` relative to the repository root, with `/` separators.
fn rel(root: &Path, path: &Path) -> String {
    let p = path.strip_prefix(root).unwrap_or(path);
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `.rs` file below `dir` (relative to `root`), sorted, skipping [`SKIPPED_DIRS`]
/// and hidden directories.
fn rust_files(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let kind = entry
                .file_type()
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            if kind.is_dir() {
                if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_str()) {
                    stack.push(path);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                out.push(rel(root, &path));
            }
        }
    }
    out.sort();
    out
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
}

/// The workspace members, from the root Cargo.toml's `members = [...]` line.
fn crates(root: &Path) -> Vec<String> {
    let manifest = read(root, "Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("Cargo.toml has a `members = [...]` line");
    let list = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inside, _)| inside)
        .expect("the workspace members are listed on one line: members = [\"a\", \"b\"]");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Whether `file` is under the `tests/` directory of one of `crates` (`tests/tests/x.rs`,
/// `flows/tests/x.rs`), so a test file.
fn is_test_file(crates: &[String], file: &str) -> bool {
    crates.iter().any(|c| {
        file.strip_prefix(c.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest.starts_with("tests/"))
    })
}

/// Lines before the first `#[cfg(test)]` line; all lines when there is none.
fn lines_before_tests(text: &str) -> usize {
    text.lines()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or_else(|| text.lines().count())
}

/// The text of the `## Code map` section: from its heading to the next `## ` heading.
fn code_map_section(markdown: &str) -> Option<String> {
    let mut lines = markdown
        .lines()
        .skip_while(|l| l.trim_end() != "## Code map");
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The paths the code map names: its backticked tokens that end in `.rs` or `/` and
/// contain `/src/`, in order of appearance.
fn code_map_paths(markdown: &str) -> Vec<String> {
    let Some(section) = code_map_section(markdown) else {
        return Vec::new();
    };
    section
        .lines()
        .flat_map(|line| {
            // Odd pieces between backticks are the code spans of the line.
            line.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|t| (t.ends_with(".rs") || t.ends_with('/')) && t.contains("/src/"))
        .collect()
}

/// The name under which the code map must list `file` (a `.rs` file under some
/// `<crate>/src/`): its directory for a `mod.rs`, else the file itself; None for the
/// files the map need not name.
fn map_name(file: &str) -> Option<String> {
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    if UNNAMED_FILES.contains(&name) {
        None
    } else if name == "mod.rs" {
        Some(format!("{dir}/"))
    } else {
        Some(file.to_string())
    }
}

fn fail(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "\n{what}:\n\n  {}\n",
        problems.join("\n  ")
    );
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let root = root();
    let problems: Vec<String> = rust_files(&root, &root)
        .into_iter()
        .filter(|f| !read(&root, f).starts_with("//!"))
        .map(|f| format!("{f}: add a first line `//! <what this file is for>`"))
        .collect();
    fail(
        "files without a module doc (`//!` on the first line)",
        &problems,
    );
}

#[test]
fn source_files_stay_under_600_lines_before_their_tests() {
    let root = root();
    let crates = crates(&root);
    let mut problems = Vec::new();
    for f in rust_files(&root, &root) {
        if is_test_file(&crates, &f) {
            continue;
        }
        let n = lines_before_tests(&read(&root, &f));
        if n > MAX_LINES {
            problems.push(format!(
                "{f}: {n} lines before `#[cfg(test)]`, over {MAX_LINES}: split it by concept \
                 into sibling modules (and name them in ARCHITECTURE.md's code map)"
            ));
        }
    }
    fail("source files over the size limit", &problems);
}

#[test]
fn the_code_map_names_every_module_and_only_modules_that_exist() {
    let root = root();
    let architecture = read(&root, "ARCHITECTURE.md");
    assert!(
        code_map_section(&architecture).is_some(),
        "ARCHITECTURE.md has no `## Code map` section: add it back (see tests/tests/tidy.rs)"
    );
    let named = code_map_paths(&architecture);
    let mut problems = Vec::new();
    for p in &named {
        let path = root.join(p);
        let exists = if p.ends_with('/') {
            path.is_dir()
        } else {
            path.is_file()
        };
        if !exists {
            problems.push(format!(
                "ARCHITECTURE.md names `{p}`, which does not exist: fix or remove its row in \
                 the code map"
            ));
        }
    }
    for c in crates(&root) {
        let src = root.join(&c).join("src");
        if !src.is_dir() {
            continue;
        }
        for f in rust_files(&root, &src) {
            if let Some(name) = map_name(&f)
                && !named.contains(&name)
            {
                problems.push(format!(
                    "{f} is not in ARCHITECTURE.md's code map: add a row `{name}` saying \
                     what it is"
                ));
            }
        }
    }
    fail(
        "ARCHITECTURE.md's code map and the tree disagree",
        &problems,
    );
}

#[test]
fn no_ignored_or_should_panic_tests() {
    // Spelt in pieces, so this file does not find itself.
    let ignore = concat!("#[", "ignore");
    let should_panic = concat!("#[", "should_panic");
    let root = root();
    let mut problems = Vec::new();
    for f in rust_files(&root, &root) {
        for (i, line) in read(&root, &f).lines().enumerate() {
            let attr = line.trim_start();
            let ignored = attr
                .strip_prefix(ignore)
                .is_some_and(|rest| rest.starts_with([']', ' ', '=', '(']));
            if ignored {
                problems.push(format!(
                    "{f}:{}: an ignored test: make it pass, or delete it",
                    i + 1
                ));
            }
            if attr.starts_with(should_panic) {
                problems.push(format!(
                    "{f}:{}: a should_panic test: return the error and assert on it instead",
                    i + 1
                ));
            }
        }
    }
    fail("tests that never run or that pass by panicking", &problems);
}

#[test]
fn the_code_map_parser_finds_the_paths_of_a_sample() {
    let sample = "\
# Architecture

A `flows/src/before.rs` above the section is not part of the map.

## Code map

Rule: `a/src/b.rs` and `a/src/dir/`; `lib.rs`, `src/` and `a/tests/t.rs` are not paths.

| module | what it is |
|---|---|
| `substrate/src/nats/` | the JetStream backend |
| `substrate/src/queue.rs` and `substrate/src/store.rs` | two on one row |
| `fstore` | a crate name, not a path |

### A sub-heading stays inside the section

`feature-store/src/metrics.rs` (`server.metrics_listen`)

## Request lifecycle

`feature-store/src/after.rs` is past the section.
";
    assert_eq!(
        code_map_paths(sample),
        [
            "a/src/b.rs",
            "a/src/dir/",
            "substrate/src/nats/",
            "substrate/src/queue.rs",
            "substrate/src/store.rs",
            "feature-store/src/metrics.rs",
        ]
    );
    assert!(code_map_paths("# no map here\n`a/src/b.rs`\n").is_empty());
    assert_eq!(
        map_name("substrate/src/nats/mod.rs").as_deref(),
        Some("substrate/src/nats/")
    );
    assert_eq!(
        map_name("substrate/src/nats/kv.rs").as_deref(),
        Some("substrate/src/nats/kv.rs")
    );
    assert_eq!(map_name("flows/src/lib.rs"), None);
    let crates = ["tests".to_string(), "examples/custom-flow".to_string()];
    assert!(is_test_file(&crates, "tests/tests/tidy.rs"));
    assert!(is_test_file(
        &crates,
        "examples/custom-flow/tests/end_to_end.rs"
    ));
    assert!(!is_test_file(&crates, "tests/src/nats.rs"));
    assert_eq!(lines_before_tests("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(lines_before_tests("a\nb\n"), 2);
}
