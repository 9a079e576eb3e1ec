//! Widgets: what a user sees. Each widget is typed props (serialized to JSON) plus one front-end
//! component from `widgets/` (embedded at compile time), rendered as self-contained HTML: one
//! root element with a unique id, the props as JSON, images as base64 PNG, and the script. Every
//! widget also has a plain-text summary for front ends that show no HTML.
//!
//! Strings that come from model files (node names, class names) travel only inside the JSON
//! props, which the components put into the page as text, never as markup.

pub mod assets;
pub mod gallery;
mod html;
pub mod image;
pub mod images;
pub mod layer_graph;
pub mod layout;
pub mod live;
pub mod plot;
pub mod progress;
pub mod unit_view;

pub use gallery::{Gallery, GalleryOptions, LayerCard};
pub use images::Images;
pub use layer_graph::LayerGraph;
pub use progress::{Progress, ProgressDisplay};
pub use unit_view::{UnitView, ViewOptions};

/// A displayable widget: a front-end component and its props.
pub trait Widget {
    /// The component in `widgets/` that draws it.
    fn component(&self) -> &'static str;

    /// The props, as the component reads them.
    fn props(&self) -> serde_json::Value;

    /// A plain-text summary (the `text/plain` fallback).
    fn text(&self) -> String;

    /// An HTML fragment with a fresh unique root id, for a notebook output.
    fn to_html(&self) -> String {
        html::fragment(self.component(), &self.props(), &html::fresh_id())
    }

    /// [`Widget::to_html`] with a given root id (for snapshot tests).
    fn to_html_with_id(&self, id: &str) -> String {
        html::fragment(self.component(), &self.props(), id)
    }

    /// A standalone HTML page holding the widget.
    fn to_page(&self, title: &str) -> String {
        html::page(title, &self.to_html())
    }
}

/// Prints a widget the way evcxr front ends read rich output: one block per MIME type.
pub fn evcxr_print(widget: &dyn Widget) {
    println!(
        "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
        widget.to_html()
    );
    println!(
        "EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT",
        widget.text()
    );
}

/// Implements [`Widget`] for a props type that serializes as the component reads it and has a
/// `summary()` text.
macro_rules! widget {
    ($($t:ty => $component:literal),*) => {$(
        impl $crate::widget::Widget for $t {
            fn component(&self) -> &'static str {
                $component
            }

            fn props(&self) -> serde_json::Value {
                serde_json::to_value(self).expect("widget props are plain data")
            }

            fn text(&self) -> String {
                self.summary()
            }
        }
    )*};
}

widget!(
    LayerGraph => "LayerGraph",
    Gallery => "Gallery",
    UnitView => "UnitView",
    LayerCard => "LayerCard",
    Images => "Images",
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

evcxr_display!(LayerGraph, Gallery, UnitView, LayerCard, Images);

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
        println!("EVCXR_BEGIN_CONTENT text/plain\n{self:?}\nEVCXR_END_CONTENT");
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
    std::env::var_os("MICROSCOPE_KERNEL")?;
    let message = serde_json::json!({
        "data": { "text/html": widget.to_html(), "text/plain": widget.text() },
        "display_id": display_id,
        "update": update,
    });
    Some(format!("{KERNEL_MARKER}{message}"))
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
            Err(e) => println!("EVCXR_BEGIN_CONTENT text/plain\n{e}\nEVCXR_END_CONTENT"),
        }
    }
}
