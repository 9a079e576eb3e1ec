//! Cooperative interruption. A front end (the microscope kernel) asks long computations to stop
//! by creating the file named by `MICROSCOPE_INTERRUPT_FILE`; the render loop, dataset scans and
//! DeepDream check [`requested`] every step and return [`crate::Error::Cancelled`], so the
//! process, and every variable in it, lives on.
//!
//! Work run in the background for a live widget ([`crate::widget::live`]) has its own flag
//! instead ([`with_cancel`]): the interrupt file stops the cell being run, never a widget's
//! request, and cancelling a request never stops a cell.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The variable naming the interrupt file.
pub const ENV: &str = "MICROSCOPE_INTERRUPT_FILE";

fn file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
        .as_ref()
}

thread_local! {
    static SCOPE: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Whether the computation running on this thread should stop: its [`with_cancel`] flag is set,
/// or (outside such a scope) the front end asked to stop. One `stat` call at most; cheap enough
/// for every step.
pub fn requested() -> bool {
    match SCOPE.with(|s| s.borrow().clone()) {
        Some(flag) => flag.load(Ordering::Relaxed),
        None => file().is_some_and(|f| f.exists()),
    }
}

/// This thread's cancel flag inside [`with_cancel`]. Work moved to another thread takes it along
/// through [`within`], so that the move changes nothing about what stops it.
pub(crate) fn scope() -> Option<Arc<AtomicBool>> {
    SCOPE.with(|s| s.borrow().clone())
}

/// Runs `f` under `scope` (taken with [`scope`] on another thread), or as is when there is none.
pub(crate) fn within<R>(scope: Option<Arc<AtomicBool>>, f: impl FnOnce() -> R) -> R {
    match scope {
        Some(flag) => with_cancel(flag, f),
        None => f(),
    }
}

/// Runs `f` with `flag` as this thread's cancel signal (in place of the interrupt file).
pub fn with_cancel<R>(flag: Arc<AtomicBool>, f: impl FnOnce() -> R) -> R {
    let previous = SCOPE.with(|s| s.borrow_mut().replace(flag));
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_flag_decides_inside_and_only_inside() {
        let flag = Arc::new(AtomicBool::new(false));
        assert!(!with_cancel(flag.clone(), requested));
        flag.store(true, Ordering::Relaxed);
        assert!(with_cancel(flag.clone(), requested));
        assert!(!requested() || file().is_some());
    }

    #[test]
    fn a_scope_flag_travels_with_work_moved_to_the_cpu_pool() {
        let flag = Arc::new(AtomicBool::new(true));
        let device = crate::device::Device::cpu();
        let seen = with_cancel(flag, || {
            crate::device::on_cpu_pool(device.burn(), || {
                (std::thread::current().name().map(String::from), requested())
            })
        });
        assert!(seen.0.is_some_and(|n| n.starts_with("microscope-cpu-")));
        assert!(
            seen.1,
            "the cancel flag set on the calling thread is seen in the pool"
        );
    }
}
