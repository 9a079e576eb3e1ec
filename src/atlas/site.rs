//! The pages of an atlas, written from its store alone (so a site does not depend on which
//! process computed what): the graph, a gallery per layer, a page per unit, and the shared
//! assets. Folder names come from [`crate::paths::file_names_avoiding`]: safe and distinct
//! (ignoring case) for any node name; unit pages are named by their index.

use std::collections::HashMap;

use super::{Atlas, RESERVED};
use crate::error::{Error, Result};
use crate::paths::file_names_avoiding;
use crate::widget::gallery::GalleryUnit;
use crate::widget::site::{page, write_assets, Links};
use crate::widget::{GalleryOptions, Widget};

/// The folder of each of the atlas's layers, in its order.
pub fn layer_folders(atlas: &Atlas) -> Vec<String> {
    let names: Vec<String> = atlas.layers.iter().map(|l| l.name.clone()).collect();
    file_names_avoiding(&names, &RESERVED)
}

/// Writes every page and the assets; returns how many pages. Fails, naming it, on a result
/// missing from the store.
pub fn write(atlas: &Atlas) -> Result<usize> {
    let store = atlas.store();
    let dir = &atlas.dir;
    let source = atlas.model.source();
    let folders = layer_folders(atlas);
    write_assets(&dir.join("assets"))?;
    let missing = |what: String| {
        Error::Message(format!(
            "{what} is not in the store {}: run the atlas without --shard to compute it",
            store.dir().display()
        ))
    };

    let graph = atlas.model.graph()?;
    let folder_of: HashMap<&str, &str> = atlas
        .layers
        .iter()
        .zip(&folders)
        .map(|(l, f)| (l.name.as_str(), f.as_str()))
        .collect();
    let links = Links {
        nodes: graph
            .nodes
            .iter()
            .map(|n| {
                (n.op != "Input")
                    .then(|| folder_of.get(n.name.as_str()))
                    .flatten()
                    .map(|f| format!("{f}/index.html"))
            })
            .collect(),
        ..Links::default()
    };
    let mut pages = 0;
    let html = page(&source, graph.component(), graph.props(), &links, "assets/")?;
    crate::widget::write_file(&dir.join("index.html"), html.as_bytes())?;
    pages += 1;

    let batches = atlas.batches()?;
    for (l, (layer, folder)) in atlas.layers.iter().zip(&folders).enumerate() {
        let folder = dir.join(folder);
        std::fs::create_dir_all(&folder).map_err(|source| Error::Io {
            path: folder.clone(),
            source,
        })?;
        let options = GalleryOptions {
            units: Some(Vec::new()),
            ..atlas.gallery.clone()
        };
        let mut gallery = layer.gallery_with(&options, &mut |_| {}, None)?;
        for batch in batches.iter().filter(|b| b.layer == l) {
            let bytes = store.get(&atlas.gallery_key(batch)).ok_or_else(|| {
                missing(format!("the gallery of {} {:?}", layer.name, batch.units))
            })?;
            let cells: Vec<GalleryUnit> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Message(format!("a stored gallery of {}: {e}", layer.name)))?;
            for cell in cells {
                let index = cell.index;
                if let Some(slot) = gallery.units.get_mut(index) {
                    *slot = cell;
                }
            }
        }
        let unit_page = |u: usize| format!("{u}.html");
        let links = Links {
            graph: Some("../index.html".into()),
            units: (0..layer.units).map(unit_page).collect(),
            ..Links::default()
        };
        let title = format!("{} · {source}", layer.name);
        let html = page(
            &title,
            gallery.component(),
            gallery.props(),
            &links,
            "../assets/",
        )?;
        crate::widget::write_file(&folder.join("index.html"), html.as_bytes())?;
        pages += 1;

        for u in 0..layer.units {
            let bytes = store
                .get(&atlas.view_key(layer, u))
                .ok_or_else(|| missing(format!("the view of {}:{u}", layer.name)))?;
            let props: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Message(format!("a stored view of {}:{u}: {e}", layer.name)))?;
            let links = Links {
                graph: Some("../index.html".into()),
                layer: Some("index.html".into()),
                prev: u.checked_sub(1).map(unit_page),
                next: (u + 1 < layer.units).then(|| unit_page(u + 1)),
                ..Links::default()
            };
            let title = format!("{}:{u} · {source}", layer.name);
            let html = page(&title, "UnitView", props, &links, "../assets/")?;
            crate::widget::write_file(&folder.join(unit_page(u)), html.as_bytes())?;
            pages += 1;
        }
    }
    Ok(pages)
}
