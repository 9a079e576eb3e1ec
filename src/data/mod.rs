//! Datasets of labelled images: Fashion-MNIST (IDX files) and image folders (class = sub-folder).
//!
//! Images are kept as bytes in memory; [`Dataset::batch`] converts a range of them to a model's
//! [`ImageSpec`] (channels, size, normalization) as a float tensor `[N, C, H, W]`.

mod folder;
mod idx;
mod photos;

pub use photos::{SamplePhoto, SAMPLE_PHOTOS};

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::DispatchDevice;

use crate::error::{Error, Result};
use crate::network::DynTensor;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The environment variable that overrides [`FASHION_MNIST_DIR`].
pub const FASHION_MNIST_ENV: &str = "MICROSCOPE_FASHION_MNIST";

/// The ten Fashion-MNIST classes, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

/// One image: bytes in `[height, width, channels]` order (as decoders produce them).
#[derive(Clone, Debug)]
struct Image {
    width: usize,
    height: usize,
    channels: usize,
    pixels: Vec<u8>,
}

/// What a model expects as input: channels, size, and per-channel normalization applied to
/// pixels in [0, 1] as `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImageSpec {
    /// Pixels in [0, 1], no normalization.
    pub fn unit(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }
}

/// A labelled image dataset held in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    name: String,
    images: Vec<Image>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl Dataset {
    /// Fashion-MNIST from `$MICROSCOPE_FASHION_MNIST`, else `/usr/share/datasets/fashion-mnist`.
    pub fn fashion_mnist(split: Split) -> Result<Dataset> {
        let dir = std::env::var_os(FASHION_MNIST_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
        Self::fashion_mnist_in(&dir, split)
    }

    /// Fashion-MNIST from the IDX files (gzipped or not) in `dir`.
    pub fn fashion_mnist_in(dir: &Path, split: Split) -> Result<Dataset> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let hint = |e: Error| {
            Error::Message(format!(
                "{e}. Fashion-MNIST is read from {} (Debian: `apt-get install dataset-fashion-mnist`; \
                 or set {FASHION_MNIST_ENV} to a folder with the four IDX files)",
                dir.display()
            ))
        };
        let images = idx::read(&dir.join(format!("{prefix}-images-idx3-ubyte"))).map_err(hint)?;
        let labels = idx::read(&dir.join(format!("{prefix}-labels-idx1-ubyte"))).map_err(hint)?;
        let (n, h, w) = match images.dims[..] {
            [n, h, w] => (n, h, w),
            _ => {
                return Err(hint(Error::Message(format!(
                    "images have dims {:?}, want [N, H, W]",
                    images.dims
                ))))
            }
        };
        if labels.dims != [n] || labels.data.iter().any(|&l| l >= 10) {
            return Err(hint(Error::Message(format!(
                "labels {:?} do not fit {n} images of 10 classes",
                labels.dims
            ))));
        }
        let images = images
            .data
            .chunks_exact(h * w)
            .map(|px| Image {
                width: w,
                height: h,
                channels: 1,
                pixels: px.to_vec(),
            })
            .collect();
        Ok(Dataset {
            name: format!("fashion-mnist/{prefix}"),
            images,
            labels: labels.data.iter().map(|&l| l as usize).collect(),
            classes: FASHION_CLASSES.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// PNG/JPEG images under `root/<class>/`, classes in sorted folder order.
    pub fn image_folder(root: impl AsRef<Path>) -> Result<Dataset> {
        folder::load(root.as_ref())
    }

    /// One PNG or JPEG file as a dataset of one image, its class the file's name; decoded under
    /// the memory budget, as a folder's images are.
    pub fn image_file(path: impl AsRef<Path>) -> Result<Dataset> {
        folder::load_file(path.as_ref())
    }

    /// Real colour photos for ImageNet models: scikit-image's sample photos (a cat, an
    /// espresso, a rocket, motorcycles, an astronaut, …), labelled with the ImageNet class they
    /// show where one fits ([`SAMPLE_PHOTOS`]). They come from the scikit-image wheel, fetched
    /// once with `microscope zoo fetch sample-photos`.
    pub fn sample_photos() -> Result<Dataset> {
        photos::load()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The first `n` items (or all of them).
    pub fn take(mut self, n: usize) -> Dataset {
        self.images.truncate(n);
        self.labels.truncate(n);
        self
    }

    /// Images `range` as a tensor `[N, C, H, W]` shaped and normalized to `spec`.
    pub fn batch(
        &self,
        range: Range<usize>,
        spec: &ImageSpec,
        device: &DispatchDevice,
    ) -> Result<DynTensor> {
        let indices: Vec<usize> = range.collect();
        self.gather(&indices, spec, device)
    }

    /// The images at `indices` as a tensor `[N, C, H, W]` shaped and normalized to `spec`.
    pub fn gather(
        &self,
        indices: &[usize],
        spec: &ImageSpec,
        device: &DispatchDevice,
    ) -> Result<DynTensor> {
        let (c, h, w) = (spec.channels, spec.height, spec.width);
        let mut data = Vec::with_capacity(indices.len() * c * h * w);
        for &i in indices {
            let img = self.images.get(i).ok_or_else(|| {
                Error::Message(format!(
                    "{}: item {i} out of {} images",
                    self.name,
                    self.len()
                ))
            })?;
            data.extend(to_spec(img, spec));
        }
        Ok(DynTensor::from_host(
            &data,
            &[indices.len(), c, h, w],
            device,
        ))
    }
}

/// Converts one image to `spec`, laid out `[C, H, W]` as `(x/255 - mean) / std`: the largest
/// centred crop of the image with the input's aspect ratio, resized with a triangle filter whose
/// support grows with the reduction (antialiased, as PIL's bilinear is), then converted to the
/// input's channels. Stretching a 640×427 photo to a square distorts what an ImageNet network
/// sees (the rocket became an offshore rig), and plain bilinear sampling of a 3× reduction
/// aliases; this is the usual evaluation preprocessing's crop and filter. An image already at
/// the input's size is used as it is.
fn to_spec(img: &Image, spec: &ImageSpec) -> Vec<f32> {
    let (h, w) = (spec.height, spec.width);
    let resized;
    let (pixels, channels) = if (img.height, img.width) == (h, w) {
        (&img.pixels, img.channels)
    } else {
        // The crop: as high as the image where the image is relatively wider than the input,
        // else as wide.
        let (cw, ch) = if img.width * h > w * img.height {
            ((img.height * w).div_ceil(h).min(img.width), img.height)
        } else {
            (img.width, (img.width * h).div_ceil(w).min(img.height))
        };
        let (x0, y0) = ((img.width - cw) / 2, (img.height - ch) / 2);
        let (cw, ch, x0, y0) = (cw as u32, ch as u32, x0 as u32, y0 as u32);
        resized = if img.channels == 3 {
            crop_resize::<image::Rgb<u8>>(img, [x0, y0, cw, ch], [w as u32, h as u32])
        } else {
            crop_resize::<image::Luma<u8>>(img, [x0, y0, cw, ch], [w as u32, h as u32])
        };
        (&resized, img.channels)
    };
    let gray = spec.channels == 1 && channels >= 3;
    let mut out = vec![0.0; spec.channels * h * w];
    for y in 0..h {
        for x in 0..w {
            let at = |ch: usize| pixels[(y * w + x) * channels + ch.min(channels - 1)] as f32;
            for ch in 0..spec.channels {
                let v = if gray {
                    0.299 * at(0) + 0.587 * at(1) + 0.114 * at(2)
                } else {
                    at(ch)
                };
                out[(ch * h + y) * w + x] = (v / 255.0 - spec.mean[ch]) / spec.std[ch];
            }
        }
    }
    out
}

/// The window `[x, y, width, height]` of `img` resized to `[width, height]` with a triangle
/// filter (its support grows with the reduction), as bytes of pixel type `P`.
fn crop_resize<P: image::Pixel<Subpixel = u8> + 'static>(
    img: &Image,
    [x, y, cw, ch]: [u32; 4],
    [ow, oh]: [u32; 2],
) -> Vec<u8> {
    // Only the window is copied (the image crate's crop of a borrowed buffer cannot be resized).
    let c = img.channels;
    let (x, y, cw, ch) = (x as usize, y as usize, cw as usize, ch as usize);
    let mut window = Vec::with_capacity(cw * ch * c);
    for row in y..y + ch {
        let start = (row * img.width + x) * c;
        window.extend_from_slice(&img.pixels[start..start + cw * c]);
    }
    let crop = image::ImageBuffer::<P, Vec<u8>>::from_raw(cw as u32, ch as u32, window)
        .expect("the window's size");
    image::imageops::resize(&crop, ow, oh, image::imageops::FilterType::Triangle).into_raw()
}
