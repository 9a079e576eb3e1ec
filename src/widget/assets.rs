//! The front-end components from `widgets/`, embedded at compile time.

/// Styles shared by every widget (scoped under `.microscope-root`).
pub const CSS: &str = include_str!("../../widgets/microscope.css");

/// The style of a standalone page (`Widget::to_page`, a widget's "save page"): a margin, and
/// the light/dark preference for the background.
pub const PAGE_CSS: &str = "body { margin: 16px; font-family: system-ui, sans-serif; }\n\
     @media (prefers-color-scheme: dark) { body { background: #111; color: #ddd; } }";

const COMMON: &str = include_str!("../../widgets/common.js");
const LIVE: &str = include_str!("../../widgets/live.js");
const LAYER_GRAPH: &str = include_str!("../../widgets/layer_graph.js");
const GALLERY: &str = include_str!("../../widgets/gallery.js");
const UNIT_VIEW: &str = include_str!("../../widgets/unit_view.js");

/// The component library: defines `window.microscope` once per page (per version), with every
/// component registered, and the style of a standalone page (for the widgets' "save page").
pub fn library() -> String {
    format!(
        "(function () {{\n\
         if (window.microscope && window.microscope.version === \"{v}\") return;\n\
         const microscope = {{ version: \"{v}\", components: {{}}, pageCss: {page_css} }};\n\
         {COMMON}\n{LIVE}\n{LAYER_GRAPH}\n{GALLERY}\n{UNIT_VIEW}\n\
         window.microscope = microscope;\n}})();",
        v = env!("CARGO_PKG_VERSION"),
        page_css = serde_json::to_string(PAGE_CSS).expect("a string is JSON"),
    )
}

/// The shared files of a static site of widget pages (an atlas), under its `assets/` folder:
/// the component library and the styles, written once and referenced by every page
/// (`super::site`), which then carries only its root element and props.
pub fn site_files() -> [(&'static str, String); 2] {
    [
        ("microscope.css", format!("{CSS}\n{PAGE_CSS}\n")),
        ("microscope.js", library()),
    ]
}
