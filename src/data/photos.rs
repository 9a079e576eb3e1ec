//! Real colour photos for ImageNet models: the sample photos that scikit-image ships in its
//! wheel (`skimage/data/`), read from the fetched wheel ([`crate::zoo::fetch`]).

use std::path::Path;

use super::{Dataset, Image};
use crate::error::Result;
use crate::zoo::fetch;

/// What `microscope zoo fetch` calls the photos.
pub const FETCH_NAME: &str = "sample-photos";

/// One sample photo: its file in `skimage/data/`, and the ImageNet-1k class it shows (index and
/// name) where one fits.
pub struct SamplePhoto {
    pub file: &'static str,
    pub imagenet: Option<(usize, &'static str)>,
}

/// The colour photos of scikit-image's data folder (its test patterns and gray images left
/// out), in this order.
#[rustfmt::skip]
pub const SAMPLE_PHOTOS: &[SamplePhoto] = &[
    SamplePhoto { file: "chelsea.png", imagenet: Some((285, "Egyptian cat")) },
    SamplePhoto { file: "coffee.png", imagenet: Some((967, "espresso")) },
    SamplePhoto { file: "rocket.jpg", imagenet: Some((657, "missile")) },
    SamplePhoto { file: "motorcycle_left.png", imagenet: Some((665, "moped")) },
    SamplePhoto { file: "motorcycle_right.png", imagenet: Some((665, "moped")) },
    SamplePhoto { file: "astronaut.png", imagenet: None },
    SamplePhoto { file: "hubble_deep_field.jpg", imagenet: None },
    SamplePhoto { file: "retina.jpg", imagenet: None },
    SamplePhoto { file: "ihc.png", imagenet: None },
];

/// The label of a photo that shows no ImageNet class.
pub const UNLABELLED: &str = "no ImageNet class";

pub(super) fn load() -> Result<Dataset> {
    let mut wheel = fetch::open(FETCH_NAME, &fetch::SAMPLE_PHOTOS)?;
    let mut classes: Vec<String> = Vec::new();
    let mut images: Vec<Image> = Vec::new();
    let mut labels = Vec::new();
    let mut total = 0;
    for photo in SAMPLE_PHOTOS {
        let member = format!("skimage/data/{}", photo.file);
        let bytes = wheel.read(&member, 16 << 20)?;
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
        images.push(super::folder::decode(
            reader,
            Path::new(&member),
            &mut total,
        )?);
        let class = photo.imagenet.map_or(UNLABELLED, |(_, name)| name);
        let label = match classes.iter().position(|c| c == class) {
            Some(i) => i,
            None => {
                classes.push(class.to_string());
                classes.len() - 1
            }
        };
        labels.push(label);
    }
    Ok(Dataset {
        name: FETCH_NAME.into(),
        images,
        labels,
        classes,
    })
}
