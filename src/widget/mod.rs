//! Widgets: what a user sees. Each widget is typed props (serialized to JSON) plus one front-end
//! component from `widgets/` (embedded at compile time), rendered as self-contained HTML: one
//! root element with a unique id, the props as JSON, images as base64 PNG, and the script. Every
//! widget also has a plain-text summary for front ends that show no HTML.
//!
//! Strings that come from model files (node names, class names) travel only inside the JSON
//! props, which the components put into the page as text, never as markup.
//!
//! Every widget that shows a result carries its [`Provenance`] in its props (`provenance`): the
//! components show it in a footer (widgets/common.js), pages embed it in their head, and text
//! outputs end with it. Each image has a download control, and each widget one that saves it as
//! a standalone page, in the browser; [`Widget::save_html`] and `save_png` do the same here.

pub mod assets;
pub mod export;
pub mod gallery;
mod html;
pub mod image;
pub mod images;
pub mod layer_graph;
pub mod layout;
pub mod live;
pub mod plot;
pub mod progress;
pub mod site;
pub mod unit_view;

pub use gallery::{Gallery, GalleryOptions, LayerCard};
pub use images::{GroupSupport, Images};
pub use layer_graph::LayerGraph;
pub use progress::{Progress, ProgressDisplay};
pub use unit_view::{UnitView, ViewOptions};

use std::path::Path;

use crate::error::{Error, Result};
use crate::provenance::Provenance;

/// A displayable widget: a front-end component and its props.
pub trait Widget {
    /// The component in `widgets/` that draws it.
    fn component(&self) -> &'static str;

    /// The props, as the component reads them.
    fn props(&self) -> serde_json::Value;

    /// A plain-text summary (the `text/plain` fallback), ending with the provenance line.
    fn text(&self) -> String;

    /// What made the widget's content (`None` for a progress bar, which shows no result).
    fn provenance(&self) -> Option<&Provenance> {
        None
    }

    /// An HTML fragment with a fresh unique root id, for a notebook output.
    fn to_html(&self) -> String {
        html::fragment(self.component(), &self.props(), &html::fresh_id())
    }

    /// [`Widget::to_html`] with a given root id (for snapshot tests).
    fn to_html_with_id(&self, id: &str) -> String {
        html::fragment(self.component(), &self.props(), id)
    }

    /// A standalone HTML page holding the widget, its provenance embedded in the head.
    fn to_page(&self, title: &str) -> String {
        html::page(title, &self.to_html(), self.provenance())
    }

    /// Writes [`Widget::to_page`] to `path`, titled by the first line of the text summary.
    fn save_html(&self, path: impl AsRef<Path>) -> Result<()>
    where
        Self: Sized,
    {
        let text = self.text();
        let title: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        write_file(path.as_ref(), self.to_page(&title).as_bytes())
    }
}

/// Writes `bytes` to `path`; a failure names the path.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints a widget the way evcxr front ends read rich output: one block per MIME type.
pub fn evcxr_print(widget: &dyn Widget) {
    println!("{}", content_block("text/html", &widget.to_html()));
    println!("{}", content_block("text/plain", &plain(&widget.text())));
}

/// The variable through which the microscope kernel gives its evaluation process a secret that
/// marks the crate's own output lines (display lines, evcxr content blocks). The evaluation
/// process passes such lines on without the secret and defuses every other line that looks like
/// one (`relay_cell_output` in the kernel), so a model's names or a file's contents, printed,
/// cannot forge a widget or markup. Outside the kernel it is unset and nothing is marked.
pub const DISPLAY_SECRET_ENV: &str = "MICROSCOPE_DISPLAY_SECRET";

/// Set (to `1`) in the microscope kernel's evaluation process: widgets are displayed through the
/// kernel's display lines rather than evcxr's content blocks.
pub const KERNEL_ENV: &str = "MICROSCOPE_KERNEL";

/// The prefix of the crate's own output lines in this process ("" outside the kernel).
fn own_prefix() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| std::env::var(DISPLAY_SECRET_ENV).unwrap_or_default())
}

/// One evcxr content block (`EVCXR_BEGIN_CONTENT mime`, body, `EVCXR_END_CONTENT`), marked as
/// the crate's own. evcxr ends a block at the first line that reads `EVCXR_END_CONTENT`, so such
/// a line inside the body (from a model's strings) gets a zero-width space and ends nothing.
pub(crate) fn content_block(mime: &str, body: &str) -> String {
    let body: Vec<String> = body
        .split('\n')
        .map(|line| {
            if line.trim_end_matches('\r') == "EVCXR_END_CONTENT" {
                format!("{line}\u{200b}")
            } else {
                line.to_string()
            }
        })
        .collect();
    format!(
        "{}EVCXR_BEGIN_CONTENT {mime}\n{}\nEVCXR_END_CONTENT",
        own_prefix(),
        body.join("\n")
    )
}

/// Text for a `text/plain` output or a terminal: control characters other than newline and tab
/// (terminal escape sequences, carriage returns, NULs from a model file) and the characters
/// that reorder text (a right-to-left override shows a name `\u{202e}evil` as "live") become
/// visible escapes such as `\u{1b}` and `\u{202e}`.
pub fn plain(text: &str) -> String {
    escape_controls(text, |c| c == '\n' || c == '\t')
}

/// Text for one line of a terminal: [`plain`], with newlines and tabs escaped too (`\n`).
pub fn one_line(text: &str) -> String {
    escape_controls(text, |_| false)
}

/// Unicode's explicit bidirectional formatting characters (marks, embeddings, overrides and
/// isolates): invisible, and they change the order in which what follows them is shown. The
/// widgets escape the same ones on the page (`microscope.shown` in widgets/common.js).
fn reorders(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_controls(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() || reorders(c)) && !keep(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Implements [`Widget`] for a props type that serializes as the component reads it and has a
/// `summary()` text; with `provenance`, the field holding its [`Provenance`].
macro_rules! widget {
    ($($t:ty => $component:literal $(, $provenance:ident)?);*) => {$(
        impl $crate::widget::Widget for $t {
            fn component(&self) -> &'static str {
                $component
            }

            fn props(&self) -> serde_json::Value {
                serde_json::to_value(self).expect("widget props are plain data")
            }

            fn text(&self) -> String {
                #[allow(unused_mut)]
                let mut text = self.summary();
                $(text.push_str(&self.$provenance.line());)?
                text
            }

            $(fn provenance(&self) -> Option<&Provenance> {
                Some(&self.$provenance)
            })?
        }
    )*};
}

widget!(
    LayerGraph => "LayerGraph", provenance;
    Gallery => "Gallery", provenance;
    UnitView => "UnitView", provenance;
    LayerCard => "LayerCard", provenance;
    Images => "Images", provenance;
    GroupSupport => "GroupSupport", provenance;
    Progress => "Progress"
);

macro_rules! evcxr_display {
    ($($t:ty),*) => {$(
        impl $t {
            /// Rich display in evcxr-based notebooks (HTML with a text fallback).
            pub fn evcxr_display(&self) {
                $crate::widget::evcxr_print(self);
            }
        }
    )*};
}

evcxr_display!(
    LayerGraph,
    Gallery,
    UnitView,
    LayerCard,
    Images,
    GroupSupport
);

/// Shows any `Debug` value the way evcxr shows a cell's last value when it has no rich display
/// (`{:?}` as text/plain). evcxr first compiles a cell as if its last value had an
/// `evcxr_display` method and, when it has none, compiles it again with `{:?}`. With this trait
/// in scope (the prelude imports it) every `Debug` value has the method, so such a cell compiles
/// once: about half the time of a warm cell ending in a number or a string. Widgets' own
/// `evcxr_display` methods are inherent, so they still take precedence.
pub trait DebugDisplay {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> DebugDisplay for T {
    fn evcxr_display(&self) {
        println!(
            "{}",
            content_block("text/plain", &plain(&format!("{self:?}")))
        );
    }
}

/// Shows a widget now, in the middle of a cell. Under the microscope kernel this is a
/// `display_data` message of its own (several per cell are fine); elsewhere it prints the
/// evcxr content block.
pub fn display(widget: &dyn Widget) {
    if let Some(line) = kernel_line(widget, None, false) {
        println!("{line}");
    } else {
        evcxr_print(widget);
    }
}

/// The line the microscope kernel turns into a `display_data` (or, with `update`, an
/// `update_display_data`) message, when running under it (`MICROSCOPE_KERNEL` is set).
pub(crate) fn kernel_line(
    widget: &dyn Widget,
    display_id: Option<&str>,
    update: bool,
) -> Option<String> {
    std::env::var_os(KERNEL_ENV)?;
    let message = serde_json::json!({
        "data": { "text/html": widget.to_html(), "text/plain": plain(&widget.text()) },
        "display_id": display_id,
        "update": update,
    });
    Some(format!("{}{KERNEL_MARKER}{message}", own_prefix()))
}

/// Prefix of the display lines the microscope kernel reads from a cell's stdout.
pub const KERNEL_MARKER: &str = "\u{1b}[microscope-display]";

impl crate::model::Model {
    /// The layer graph of this model.
    pub fn graph(&self) -> crate::error::Result<LayerGraph> {
        LayerGraph::new(self)
    }

    /// Rich display in evcxr-based notebooks: the layer graph (or, if it cannot be drawn, why).
    pub fn evcxr_display(&self) {
        match self.graph() {
            Ok(g) => evcxr_print(&g),
            Err(e) => println!("{}", content_block("text/plain", &plain(&e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_block_ends_only_at_its_own_end_marker() {
        let hostile = "conv\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n<img src=x onerror=alert(1)>\r\nEVCXR_END_CONTENT\r";
        let block = content_block("text/plain", hostile);
        let lines: Vec<&str> = block.lines().collect();
        let ends = lines
            .iter()
            .filter(|l| l.trim_end_matches('\r') == "EVCXR_END_CONTENT")
            .count();
        assert_eq!(ends, 1, "{block:?}");
        assert_eq!(*lines.last().unwrap(), "EVCXR_END_CONTENT");
    }

    #[test]
    fn plain_text_shows_control_characters_as_escapes() {
        assert_eq!(
            plain("a\u{1b}[31mred\u{7}\r\nb\tc"),
            "a\\u{1b}[31mred\\u{7}\\r\nb\tc"
        );
        // What would reorder the rest of the line, too; other letters of any script stay.
        assert_eq!(
            one_line("pool\u{202e}evil\u{2066}x\u{2069} شبكة"),
            "pool\\u{202e}evil\\u{2066}x\\u{2069} شبكة"
        );
    }
}
