//! Architecture: data flows one way (import → network → techniques → widgets → kernel), so no
//! two files of `src/`, or of `kernel/src/`, import each other, directly or around a loop.
//!
//! A file's imports are the paths it names through `crate::`, `super::` or `self::` (in `use`
//! declarations and in code, braces expanded), each resolved to the file of the longest module
//! prefix. A binary's root file (`main.rs`) counts as a module too: a submodule that reaches
//! back into it for an item is an import. Comments, string literals and `#[cfg(test)]` modules
//! are left out. Written here rather than taken from a crate: the rule is this project's, and it
//! takes a hundred lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["widget", "gallery"]`, `[]` for the root) → the file's source.
fn modules(root: &Path) -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            (parts, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The source without comments, string and char literals, and the test module at its end.
fn code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('"', '\'', 'x'); a lifetime ('a) stays.
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path of two or more segments in `code`, with `a::{b, c::d}` expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    fn ident(b: &[u8], mut i: usize) -> (String, usize) {
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        (String::from_utf8_lossy(&b[start..i]).into_owned(), i)
    }
    fn skip_space(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }
    /// The path starting at `i` (after `prefix`), and where it ends.
    fn path(b: &[u8], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
        let (first, mut i) = ident(b, i);
        let mut segs = prefix.to_vec();
        segs.push(first);
        while b[i..].starts_with(b"::") {
            i += 2;
            if b.get(i) == Some(&b'{') {
                i += 1;
                loop {
                    i = skip_space(b, i);
                    match b.get(i) {
                        Some(b'}') | None => return i + 1,
                        Some(b',') => i += 1,
                        Some(&c) if is_ident(c) => i = path(b, i, &segs, out),
                        Some(_) => i += 1,
                    }
                }
            }
            if !b.get(i).is_some_and(|&c| is_ident(c)) {
                break;
            }
            let (next, j) = ident(b, i);
            segs.push(next);
            i = j;
        }
        if segs.last().is_some_and(|s| s == "self") {
            segs.pop();
        }
        if segs.len() >= 2 {
            out.push(segs);
        }
        i
    }
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = is_ident(b[i]) && (i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b':');
        i = if starts {
            path(b, i, &[], &mut out).max(i + 1)
        } else {
            i + 1
        };
    }
    out
}

/// Which files each file imports.
fn imports(root: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules(root);
    let resolve = |path: &[String]| -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|p| mods.contains_key(p))
            .unwrap_or_default()
    };
    mods.iter()
        .map(|(module, source)| {
            let targets = paths(&code(source))
                .into_iter()
                .filter_map(|segs| {
                    let (mut base, rest): (Vec<String>, &[String]) = match segs[0].as_str() {
                        "crate" => (Vec::new(), &segs[1..]),
                        "self" => (module.clone(), &segs[1..]),
                        "super" => (
                            module[..module.len().saturating_sub(1)].to_vec(),
                            &segs[1..],
                        ),
                        _ => return None,
                    };
                    let mut rest = rest;
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend_from_slice(rest);
                    Some(resolve(&base))
                })
                .filter(|t| t != module)
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// The import cycles among the files under `root`, each as the files on it.
fn cycles(root: &Path) -> Vec<Vec<String>> {
    let graph = imports(root);
    let name = |m: &Vec<String>| {
        if m.is_empty() {
            "(crate root)".to_string()
        } else {
            m.join("::")
        }
    };
    // A file is on a cycle with each file that it reaches and that reaches it back.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for t in &graph[&m] {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (m, r) in &reached {
        if r.contains(m) {
            let mut on: Vec<String> = r
                .iter()
                .filter(|o| reached[*o].contains(m))
                .map(name)
                .collect();
            on.sort();
            found.insert(on);
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src", "kernel/src"] {
        let found = cycles(&root.join(dir));
        assert!(
            found.is_empty(),
            "import cycles among the files of {dir}/: {found:?}"
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_through_braces_super_and_the_crate_root() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("architecture");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("stage")).unwrap();
    let files = [
        ("main.rs", "mod stage;\nmod leaf;\npub fn helper() {}\n"),
        ("leaf.rs", "// crate::stage::early in a comment is no import\nfn f() { let s = \"crate::stage::x\"; }\n"),
        ("stage/mod.rs", "pub mod early;\npub mod late;\n"),
        ("stage/early.rs", "use super::{late::Thing, super::leaf};\n"),
        ("stage/late.rs", "pub struct Thing;\nfn g() { crate::helper() }\n"),
    ];
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    assert_eq!(cycles(&dir), Vec::<Vec<String>>::new(), "no cycle yet");
    // The root reaching into `stage::early`, which imports `late`, which calls back into the root.
    std::fs::write(
        dir.join("main.rs"),
        "mod stage;\nmod leaf;\npub fn helper() { crate::stage::early::go() }\n",
    )
    .unwrap();
    assert_eq!(
        cycles(&dir),
        vec![vec![
            "(crate root)".to_string(),
            "stage::early".into(),
            "stage::late".into()
        ]]
    );
}
