//! Pages of a static site of widgets (an atlas): each page holds one widget whose props carry
//! `links` ([`Links`], relative hrefs to the other pages), and loads the component library and
//! styles from the site's shared files ([`super::assets::site_files`]), so a site works from
//! `file://` and from any static host. In a notebook, props carry no `links` and the widgets
//! keep their own behaviour (a gallery opens a clicked unit below its grid).

use std::path::Path;

use serde::Serialize;

use super::{assets, html, write_file};
use crate::error::{Error, Result};

/// Where a site page's widget links to; each href is relative to the page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Links {
    /// The model's graph page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    /// The gallery page of the unit's layer (on a unit's page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The previous and next unit's pages (on a unit's page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// On a layer graph, per node (in the order of its `nodes`): its layer's page, if the site
    /// has one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Option<String>>,
    /// On a gallery, per unit (in the order of its `units`): the unit's page.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
}

/// The root id of a site page's widget: fixed, so that a page's bytes depend on its content only.
pub const ROOT_ID: &str = "microscope-page";

/// A site page holding the widget drawn by `component` from `props` (a widget's
/// [`super::Widget::props`]), with `links`, and without a kernel link; `assets` is the relative
/// path of the site's assets folder (`assets/`, `../assets/`).
pub fn page(
    title: &str,
    component: &str,
    mut props: serde_json::Value,
    links: &Links,
    assets: &str,
) -> Result<String> {
    let object = props.as_object_mut().ok_or_else(|| {
        Error::Message(format!("{component} props are not a JSON object: {title}"))
    })?;
    object.insert(
        "links".into(),
        serde_json::to_value(links).expect("links are plain data"),
    );
    object.insert("live".into(), serde_json::Value::Null);
    Ok(html::site_page(title, component, &props, ROOT_ID, assets))
}

/// Writes the site's shared files into `dir` (its assets folder).
pub fn write_assets(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, content) in assets::site_files() {
        write_file(&dir.join(name), content.as_bytes())?;
    }
    Ok(())
}
