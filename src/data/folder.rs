//! Image-folder datasets: `root/<class>/<image>.{png,jpg,jpeg}`.

use std::path::Path;

use super::{Dataset, Image};
use crate::error::{Error, Result};

pub fn load(root: &Path) -> Result<Dataset> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut classes: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    // Bytes of pixels decoded so far (see `decode`).
    let mut total: u64 = 0;
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // Regular files only (links followed): opening a named pipe would wait for ever.
            .filter(|p| p.is_file())
            .filter(|p| {
                let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase());
                matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
            })
            .collect();
        files.sort();
        for file in files {
            let reader = image::ImageReader::open(&file).map_err(|e| io(&file, e))?;
            images.push(decode(reader, &file, &mut total)?);
            labels.push(label);
        }
    }
    if images.is_empty() {
        return Err(Error::Message(format!(
            "{}: no PNG or JPEG images in class sub-folders (expected {}/<class>/<image>.png)",
            root.display(),
            root.display()
        )));
    }
    Ok(Dataset {
        name: root.display().to_string(),
        images,
        labels,
        classes,
    })
}

/// One image file as a dataset of one image (see [`Dataset::image_file`]).
pub fn load_file(file: &Path) -> Result<Dataset> {
    let io = |source| Error::Io {
        path: file.to_path_buf(),
        source,
    };
    // A named pipe or a device would be read (or waited on) for ever.
    if !std::fs::metadata(file).map_err(io)?.is_file() {
        return Err(Error::Message(format!(
            "{}: not a file (a PNG or JPEG file was expected)",
            file.display()
        )));
    }
    let reader = image::ImageReader::open(file).map_err(io)?;
    let image = decode(reader, file, &mut 0)?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Dataset {
        name: file.display().to_string(),
        images: vec![image],
        labels: vec![0],
        classes: vec![name],
    })
}

/// Decodes one image (PNG or JPEG) from `reader`, naming `file` in errors, to RGB or gray bytes.
/// Every decoded image of a dataset stays in memory, so their pixels together get the one
/// budget: `total` is what earlier images took, and the decoder itself is held to what is left,
/// so an image whose header declares 100000 × 100000 pixels is refused before its pixels are
/// allocated.
pub(super) fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    file: &Path,
    total: &mut u64,
) -> Result<Image> {
    let budget = crate::budget::budget().bytes;
    let format = |reason: String| Error::Format {
        path: file.to_path_buf(),
        reason,
    };
    let mut reader = reader.with_guessed_format().map_err(|e| Error::Io {
        path: file.to_path_buf(),
        source: e,
    })?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget - *total);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => format(format!(
            "cannot decode image: it needs more memory than is left of the {} for this \
             dataset ({} used by earlier images)",
            crate::budget::budget(),
            crate::budget::human(*total)
        )),
        e => format(format!("cannot decode image: {e}")),
    })?;
    let (channels, pixels) = if decoded.color().has_color() {
        (3, decoded.to_rgb8().into_raw())
    } else {
        (1, decoded.to_luma8().into_raw())
    };
    *total = total
        .checked_add(pixels.len() as u64)
        .filter(|&t| t <= budget)
        .ok_or_else(|| {
            format(format!(
                "the dataset's images together need more than the {}",
                crate::budget::budget()
            ))
        })?;
    Ok(Image {
        width: decoded.width() as usize,
        height: decoded.height() as usize,
        channels,
        pixels,
    })
}
