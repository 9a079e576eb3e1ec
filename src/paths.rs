//! Where microscope keeps files between runs, how it names the files it writes, and which files
//! it will open. A leaf (it knows only the error type): the technique cache and the zoo's
//! downloads both live under [`cache_root`]; the CLI's outputs and saved images are named by
//! [`file_names`]; models, arrays and images are checked by [`regular_file`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable that sets the cache folder.
pub const CACHE_ENV: &str = "MICROSCOPE_CACHE";

/// `$MICROSCOPE_CACHE`, else `$XDG_CACHE_HOME/microscope` (the desktop's cache folder), else
/// `~/.cache/microscope`; `None` when none can be found.
pub fn cache_root() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    set(CACHE_ENV)
        .map(PathBuf::from)
        .or_else(|| set("XDG_CACHE_HOME").map(|d| Path::new(&d).join("microscope")))
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache/microscope")))
}

/// The size of the file at `path`, checked to be a regular file (links followed) before anything
/// opens it: opening a named pipe waits for a writer, which would hang a notebook cell, and a
/// folder or a device is not what a user meant to read.
pub fn regular_file(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: NOT_REGULAR.into(),
        });
    }
    Ok(meta.len())
}

/// What [`regular_file`] says of anything else.
pub const NOT_REGULAR: &str = "not a regular file (a folder, a pipe or a device)";

/// A name (a node's, an image's caption) as a file name: `[A-Za-z0-9_.-]` kept, anything else
/// becomes `_`, at most [`MAX_FILE_STEM`] characters.
pub fn file_name(name: &str) -> String {
    name.chars()
        .take(MAX_FILE_STEM)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Longer names are cut (file systems take 255 bytes; room is left for a suffix and `.npy`).
pub const MAX_FILE_STEM: usize = 200;

/// One file stem per name, all different: a name whose file name is already taken (`a/b` and
/// `a_b` both give `a_b`) gets the first free `_2`, `_3`, … suffix, so no output silently
/// overwrites another.
pub fn file_names(names: &[String]) -> Vec<String> {
    file_names_avoiding(names, &[])
}

/// [`file_names`] that also avoids the stems in `reserved` (a site's own `index.html` and
/// `assets`). Stems differ even ignoring case (`Conv` and `conv` share a file on macOS and
/// Windows), none is empty or starts with a dot (`..`, hidden files), and none is a name that
/// Windows reserves (`CON`, `nul.txt`): such a stem gets a `_` in front.
pub fn file_names_avoiding(names: &[String], reserved: &[&str]) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> =
        reserved.iter().map(|r| r.to_lowercase()).collect();
    names
        .iter()
        .map(|name| {
            let mut base = file_name(name);
            if base.is_empty() || base.starts_with('.') || windows_reserved(&base) {
                base.insert(0, '_');
            }
            let mut stem = base.clone();
            let mut k = 2;
            while !taken.insert(stem.to_lowercase()) {
                stem = format!("{base}_{k}");
                k += 1;
            }
            stem
        })
        .collect()
}

/// Whether Windows refuses `stem` as a file name (`CON`, `aux.npy`, `COM1`), in any case.
fn windows_reserved(stem: &str) -> bool {
    let head = stem.split('.').next().unwrap_or(stem).to_ascii_uppercase();
    matches!(head.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((head.starts_with("COM") || head.starts_with("LPT"))
            && head.len() == 4
            && head.as_bytes()[3].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_files_never_collide() {
        let names: Vec<String> = ["a/b", "a_b", "a b", "a_b_2", "a/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let stems = file_names(&names);
        assert_eq!(stems, ["a_b", "a_b_2", "a_b_3", "a_b_2_2", "a_b_4"]);
        let long = "x".repeat(5000);
        assert_eq!(file_name(&long).len(), MAX_FILE_STEM);
    }

    #[test]
    fn site_names_are_safe_and_differ_ignoring_case() {
        let names: Vec<String> = [
            "..",
            ".",
            "",
            "Conv",
            "conv",
            "index.html",
            "CON",
            "é/x",
            "../a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let stems = file_names_avoiding(&names, &["index.html", "assets"]);
        assert_eq!(
            stems,
            [
                "_..",
                "_.",
                "_",
                "Conv",
                "conv_2",
                "index.html_2",
                "_CON",
                "__x",
                "_.._a"
            ]
        );
    }
}
