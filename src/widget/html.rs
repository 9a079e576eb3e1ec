//! The HTML around a component: root element, JSON props, the embedded scripts and styles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::assets;
use crate::provenance::Provenance;

/// A root id unique within a page and across kernel restarts: process start time, process id
/// and a counter.
pub fn fresh_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("microscope-{:x}-{n}", start & 0xffff_ffff_ffff)
}

/// JSON that is safe inside a `<script>` element: `<`, `>` and `&` become `\u` escapes, so no
/// string can close the element or open a comment.
pub fn script_json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).expect("JSON values always serialize");
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text escaped for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One widget: its root, its props, and the script that draws it. Self-contained: the styles and
/// the component library travel with every output, so an output still works alone in exported
/// HTML; the library loads once per page.
pub fn fragment(component: &str, props: &serde_json::Value, id: &str) -> String {
    let id = escape(id);
    format!(
        "<div id=\"{id}\" class=\"microscope-root\" data-component=\"{component}\">\
         <div class=\"ms-loading\">microscope widget: needs JavaScript (trust the notebook)</div></div>\n\
         <style>{css}</style>\n\
         <script type=\"application/json\" id=\"{id}-props\">{props}</script>\n\
         <script>{lib}\n\
         window.microscope.mount(\"{id}\", \"{component}\");</script>\n",
        css = assets::CSS,
        props = script_json(props),
        lib = assets::library(),
    )
}

/// A standalone page with one or more fragments. With `provenance`, the head carries it as JSON
/// (`<script type="application/json" id="microscope-provenance">`), for tools that read pages.
pub fn page(title: &str, body: &str, provenance: Option<&Provenance>) -> String {
    let provenance = provenance.map(|p| serde_json::to_value(p).expect("provenance is plain data"));
    let head = format!("<style>{}</style>\n", assets::PAGE_CSS);
    document(title, provenance.as_ref(), &head, body)
}

/// A page of a static site (an atlas): one widget's root and props, with its provenance (from
/// the props) in the head, and the component library and styles as the site's shared files
/// ([`assets::site_files`]) under `assets`, a relative path such as `../assets/`.
pub fn site_page(
    title: &str,
    component: &str,
    props: &serde_json::Value,
    id: &str,
    assets: &str,
) -> String {
    let head: String = assets::site_files()
        .iter()
        .map(|(name, _)| {
            let href = escape(&format!("{assets}{name}"));
            if name.ends_with(".css") {
                format!("<link rel=\"stylesheet\" href=\"{href}\">\n")
            } else {
                format!("<script src=\"{href}\"></script>\n")
            }
        })
        .collect();
    let id = escape(id);
    let body = format!(
        "<div id=\"{id}\" class=\"microscope-root\" data-component=\"{component}\">\
         <div class=\"ms-loading\">microscope page: needs JavaScript</div></div>\n\
         <script type=\"application/json\" id=\"{id}-props\">{props}</script>\n\
         <script>window.microscope.mount(\"{id}\", \"{component}\");</script>\n",
        props = script_json(props),
    );
    document(title, props.get("provenance"), &head, &body)
}

/// An HTML document: `title`, the provenance as JSON and `head` in the head, then `body`.
fn document(title: &str, provenance: Option<&serde_json::Value>, head: &str, body: &str) -> String {
    let provenance = provenance
        .map(|json| {
            format!(
                "<script type=\"application/json\" id=\"microscope-provenance\">{}</script>\n",
                script_json(json)
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"microscope {version}\">\n\
         <title>{title}</title>\n{provenance}{head}\
         </head>\n<body>\n{body}</body>\n</html>\n",
        version = env!("CARGO_PKG_VERSION"),
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cannot_close_its_script_element() {
        let v = serde_json::json!({"name": "</script><script>alert(1)</script><!--"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>'));
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(fresh_id(), fresh_id());
    }
}
