//! The front-end components from `widgets/`, embedded at compile time.

/// Styles shared by every widget (scoped under `.microscope-root`).
pub const CSS: &str = include_str!("../../widgets/microscope.css");

const COMMON: &str = include_str!("../../widgets/common.js");
const LIVE: &str = include_str!("../../widgets/live.js");
const LAYER_GRAPH: &str = include_str!("../../widgets/layer_graph.js");
const GALLERY: &str = include_str!("../../widgets/gallery.js");
const UNIT_VIEW: &str = include_str!("../../widgets/unit_view.js");

/// The component library: defines `window.microscope` once per page (per version), with every
/// component registered.
pub fn library() -> String {
    format!(
        "(function () {{\n\
         if (window.microscope && window.microscope.version === \"{v}\") return;\n\
         const microscope = {{ version: \"{v}\", components: {{}} }};\n\
         {COMMON}\n{LIVE}\n{LAYER_GRAPH}\n{GALLERY}\n{UNIT_VIEW}\n\
         window.microscope = microscope;\n}})();",
        v = env!("CARGO_PKG_VERSION"),
    )
}
