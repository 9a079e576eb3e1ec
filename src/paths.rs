//! Where microscope keeps files between runs. A leaf: the technique cache and the zoo's
//! downloads both live under [`cache_root`].

use std::path::{Path, PathBuf};

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
