//! Cooperative interruption. A front end (the microscope kernel) asks long computations to stop
//! by creating the file named by `MICROSCOPE_INTERRUPT_FILE`; the render loop, dataset scans and
//! DeepDream check [`requested`] every step and return [`crate::Error::Cancelled`], so the
//! process, and every variable in it, lives on.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The variable naming the interrupt file.
pub const ENV: &str = "MICROSCOPE_INTERRUPT_FILE";

fn file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
        .as_ref()
}

/// Whether the front end asked to stop (one `stat` call; cheap enough for every step).
pub fn requested() -> bool {
    file().is_some_and(|f| f.exists())
}
