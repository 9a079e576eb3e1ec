//! `Progress`: a progress bar that updates in place while a gallery or unit view is computed.
//! Under the microscope kernel it is one display (a `display_id`) that each update replaces
//! (`update_display_data`); elsewhere it shows nothing.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::kernel_line;

/// The bar's props.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub label: String,
    /// Done, in [0, 1].
    pub fraction: f32,
    pub detail: String,
}

impl Progress {
    pub fn summary(&self) -> String {
        format!(
            "{}: {:.0}% {}\n",
            self.label,
            100.0 * self.fraction,
            self.detail
        )
    }
}

/// A live progress display.
pub struct ProgressDisplay {
    id: String,
    bar: Progress,
    start: Instant,
    shown: Instant,
}

impl ProgressDisplay {
    /// Shows an empty bar labelled `label`.
    pub fn start(label: &str) -> ProgressDisplay {
        let bar = Progress {
            label: label.to_string(),
            fraction: 0.0,
            detail: String::new(),
        };
        let id = super::html::fresh_id();
        if let Some(line) = kernel_line(&bar, Some(&id), false) {
            println!("{line}");
        }
        ProgressDisplay {
            id,
            bar,
            start: Instant::now(),
            shown: Instant::now(),
        }
    }

    /// Moves the bar (at most five redraws a second).
    pub fn set(&mut self, fraction: f32, detail: &str) {
        self.bar.fraction = fraction.clamp(0.0, 1.0);
        self.bar.detail = detail.to_string();
        if self.shown.elapsed() >= Duration::from_millis(200) {
            self.shown = Instant::now();
            self.show();
        }
    }

    /// Fills the bar and says how long it took.
    pub fn finish(mut self, detail: &str) {
        self.bar.fraction = 1.0;
        self.bar.detail = format!("{detail} in {:.1} s", self.start.elapsed().as_secs_f32());
        self.show();
    }

    fn show(&self) {
        if let Some(line) = kernel_line(&self.bar, Some(&self.id), true) {
            println!("{line}");
        }
    }
}
