//! Saving a widget's images as PNG files, each carrying the widget's provenance as JSON in an
//! iTXt chunk (keyword [`PROVENANCE_KEY`]). Encoding is deterministic (no time chunk), so the
//! same pixels and provenance give the same bytes.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::write_file;
use crate::error::{Error, Result};
use crate::provenance::Provenance;

/// The keyword of the iTXt chunk that holds the provenance in a saved PNG.
pub const PROVENANCE_KEY: &str = "microscope-provenance";

/// Pixels between images on a sheet (transparent).
const GAP: u32 = 4;

/// Decoded RGBA pixels of a PNG data URL.
fn decode(url: &str) -> Result<image::RgbaImage> {
    let bad = |why: String| Error::Message(format!("not a PNG image ({why})"));
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .ok_or_else(|| bad("no data:image/png URL".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| bad(e.to_string()))?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map(|i| i.to_rgba8())
        .map_err(|e| bad(e.to_string()))
}

/// The images side by side, top-aligned, [`GAP`] transparent pixels apart.
fn sheet(images: &[image::RgbaImage]) -> image::RgbaImage {
    let width = images.iter().map(|i| i.width()).sum::<u32>()
        + GAP * (images.len().saturating_sub(1)) as u32;
    let height = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let mut out = image::RgbaImage::new(width.max(1), height.max(1));
    let mut x = 0;
    for i in images {
        image::imageops::replace(&mut out, i, i64::from(x), 0);
        x += i.width() + GAP;
    }
    out
}

/// PNG bytes of `pixels` with `provenance` in an iTXt chunk, in the smallest colour type that
/// holds the pixels exactly (grey, RGB or RGBA).
fn encode(pixels: &image::RgbaImage, provenance: &Provenance) -> Vec<u8> {
    let opaque = pixels.pixels().all(|p| p[3] == 255);
    let grey = opaque && pixels.pixels().all(|p| p[0] == p[1] && p[1] == p[2]);
    let (color, data): (png::ColorType, Vec<u8>) = if grey {
        (
            png::ColorType::Grayscale,
            pixels.pixels().map(|p| p[0]).collect(),
        )
    } else if opaque {
        (
            png::ColorType::Rgb,
            pixels.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect(),
        )
    } else {
        (png::ColorType::Rgba, pixels.as_raw().clone())
    };
    let json = serde_json::to_string(provenance).expect("provenance is plain data");
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, pixels.width(), pixels.height());
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        encoder
            .add_itxt_chunk(PROVENANCE_KEY.into(), json)
            .expect("an iTXt chunk in memory");
        let mut writer = encoder.write_header().expect("writing PNG to memory");
        writer
            .write_image_data(&data)
            .expect("writing PNG to memory");
    }
    out
}

/// The PNG file of `images` (data URLs): the image itself when there is one, else a sheet of
/// them side by side, with `provenance` embedded.
pub fn png_file(images: &[&str], provenance: &Provenance) -> Result<Vec<u8>> {
    let decoded = images
        .iter()
        .map(|url| decode(url))
        .collect::<Result<Vec<_>>>()?;
    if decoded.is_empty() {
        return Err(Error::Message("no images to save".into()));
    }
    Ok(encode(&sheet(&decoded), provenance))
}

/// Saves images (data URLs, each with a name) as PNG files with `provenance` embedded. `path`
/// an existing directory: one file per image, named after it (`[A-Za-z0-9_.-]`, others `_`);
/// otherwise one file at `path` (several images side by side). Returns the files written; a
/// failure names the file.
pub fn save_pngs(
    images: &[(&str, String)],
    provenance: &Provenance,
    path: &Path,
) -> Result<Vec<PathBuf>> {
    let at = |e: Error, file: &Path| match e {
        Error::Io { .. } => e,
        other => Error::Message(format!("{}: {other}", file.display())),
    };
    if !path.is_dir() {
        let urls: Vec<&str> = images.iter().map(|(url, _)| *url).collect();
        let bytes = png_file(&urls, provenance).map_err(|e| at(e, path))?;
        write_file(path, &bytes)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let names: Vec<String> = images.iter().map(|(_, name)| name.clone()).collect();
    let mut written = Vec::with_capacity(images.len());
    for ((url, _), stem) in images.iter().zip(crate::paths::file_names(&names)) {
        let file = path.join(format!("{stem}.png"));
        let bytes = png_file(&[url], provenance).map_err(|e| at(e, &file))?;
        write_file(&file, &bytes)?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widget::image::{png, Planar};

    fn tile(v: f32) -> String {
        png(&Planar {
            data: &[v, 1.0 - v, v, 1.0 - v],
            channels: 1,
            height: 2,
            width: 2,
        })
    }

    #[test]
    fn a_saved_png_holds_its_pixels_and_its_provenance() {
        let p = Provenance::without_model("cpu");
        let one = png_file(&[&tile(0.0)], &p).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(one.clone()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        let text = &info.utf8_text[0];
        assert_eq!(text.keyword, PROVENANCE_KEY);
        let back: serde_json::Value = serde_json::from_str(&text.get_text().unwrap()).unwrap();
        assert_eq!(back, serde_json::to_value(&p).unwrap());
        // Deterministic: the same input, the same bytes.
        assert_eq!(png_file(&[&tile(0.0)], &p).unwrap(), one);
        // Two images: side by side with a transparent gap.
        let two = png_file(&[&tile(0.0), &tile(1.0)], &p).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(two))
            .read_info()
            .unwrap();
        assert_eq!(reader.info().width, 2 + GAP + 2);
        assert_eq!(reader.info().color_type, png::ColorType::Rgba);
        assert!(png_file(&["data:text/html,x"], &p).is_err());
    }
}
