//! Images for widgets: planar float pixels → PNG → `data:` URL. Full-size images are true
//! colour; gallery thumbnails use a 256-colour palette (NeuQuant), which keeps a 512-unit
//! gallery at 64 px within a few megabytes. Heatmaps map values through a colour scale.

use base64::Engine;

use crate::network::DynTensor;

/// Pixels `[C, H, W]` in [0, 1], planar. One channel is grey, three are RGB; other channel
/// counts show their first channel.
#[derive(Clone, Debug)]
pub struct Planar<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Planar<'_> {
    /// Interleaved RGB bytes.
    fn rgb(&self) -> Vec<u8> {
        let plane = self.height * self.width;
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let mut out = Vec::with_capacity(plane * 3);
        for i in 0..plane {
            for c in 0..3 {
                let ch = if self.channels == 3 { c } else { 0 };
                out.push(byte(self.data[ch * plane + i]));
            }
        }
        out
    }

    /// Nearest-neighbour resize to `size`×`size` (thumbnails).
    fn resized_rgb(&self, size: usize) -> Vec<u8> {
        let rgb = self.rgb();
        let mut out = Vec::with_capacity(size * size * 3);
        for y in 0..size {
            let sy = y * self.height / size;
            for x in 0..size {
                let sx = x * self.width / size;
                let at = (sy * self.width + sx) * 3;
                out.extend_from_slice(&rgb[at..at + 3]);
            }
        }
        out
    }
}

fn data_url(png: Vec<u8>) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

fn encode(
    width: usize,
    height: usize,
    color: png::ColorType,
    palette: Option<Vec<u8>>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        if let Some(p) = palette {
            encoder.set_palette(p);
        }
        let mut writer = encoder.write_header().expect("writing PNG to memory");
        writer
            .write_image_data(data)
            .expect("writing PNG to memory");
    }
    out
}

/// A true-colour (or grey) PNG data URL.
pub fn png(image: &Planar) -> String {
    if image.channels == 1 {
        let grey: Vec<u8> = image
            .data
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        return data_url(encode(
            image.width,
            image.height,
            png::ColorType::Grayscale,
            None,
            &grey,
        ));
    }
    data_url(encode(
        image.width,
        image.height,
        png::ColorType::Rgb,
        None,
        &image.rgb(),
    ))
}

/// Every image of a tensor of images in [0, 1] as a PNG data URL: `[N, C, H, W]` (leading axes
/// beyond N are folded into N), `[C, H, W]` or `[H, W]` for one image. Other ranks hold no image.
pub fn pngs(images: &DynTensor) -> Vec<String> {
    let d = images.dims();
    let (n, c, h, w) = match d[..] {
        [h, w] => (1, 1, h, w),
        [.., c, h, w] => (d[..d.len() - 3].iter().product(), c, h, w),
        _ => return Vec::new(),
    };
    let pixels = images.to_vec();
    let per = c * h * w;
    (0..n)
        .map(|i| {
            png(&Planar {
                data: &pixels[i * per..(i + 1) * per],
                channels: c,
                height: h,
                width: w,
            })
        })
        .collect()
}

/// A thumbnail PNG data URL, `size`×`size`, with a 256-colour palette (grey images stay grey).
pub fn thumbnail(image: &Planar, size: usize) -> String {
    let rgb = image.resized_rgb(size);
    if image.channels != 3 {
        let grey: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
        return data_url(encode(size, size, png::ColorType::Grayscale, None, &grey));
    }
    let rgba: Vec<u8> = rgb
        .chunks(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    let quant = color_quant::NeuQuant::new(10, 256, &rgba);
    let palette = quant.color_map_rgb();
    let indices: Vec<u8> = rgba.chunks(4).map(|p| quant.index_of(p) as u8).collect();
    data_url(encode(
        size,
        size,
        png::ColorType::Indexed,
        Some(palette),
        &indices,
    ))
}

/// Colour scales for heatmaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// 0 → transparent, max → opaque warm colour: activations overlaid on an image.
    Heat,
    /// Negative blue, zero white, positive red (symmetric around zero): weights, attributions.
    Diverging,
}

/// A `[h, w]` map (row-major) as a PNG data URL under `scale`, normalized by the largest
/// magnitude in the map.
pub fn heatmap(values: &[f32], height: usize, width: usize, scale: Scale) -> String {
    let m = values.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let mut rgba = Vec::with_capacity(values.len() * 4);
    for &v in values {
        let t = (v / m).clamp(-1.0, 1.0);
        let px = match scale {
            Scale::Heat => {
                let a = t.max(0.0);
                [255, (200.0 - 120.0 * a) as u8, 40, (a * 220.0) as u8]
            }
            Scale::Diverging => {
                let k = (255.0 * (1.0 - t.abs())) as u8;
                if t >= 0.0 {
                    [255, k, k, 255]
                } else {
                    [k, k, 255, 255]
                }
            }
        };
        rgba.extend_from_slice(&px);
    }
    data_url(encode(width, height, png::ColorType::Rgba, None, &rgba))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(url: &str) -> (png::OutputInfo, Vec<u8>) {
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn rgb_pixels_round_trip() {
        // [3, 1, 2]: red then blue.
        let data = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let url = png(&Planar {
            data: &data,
            channels: 3,
            height: 1,
            width: 2,
        });
        let (info, px) = decode(&url);
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(px, vec![255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn thumbnails_have_the_asked_size_and_close_colours() {
        let (h, w) = (16, 16);
        let data: Vec<f32> = (0..3 * h * w).map(|i| (i % 7) as f32 / 6.0).collect();
        let url = thumbnail(
            &Planar {
                data: &data,
                channels: 3,
                height: h,
                width: w,
            },
            8,
        );
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (8, 8));
        // Pixel (0, 0) of the thumbnail is pixel (0, 0) of the image: (0, 256 % 7, 512 % 7) / 6.
        let want = [0.0, (256 % 7) as f32 / 6.0, (512 % 7) as f32 / 6.0];
        for c in 0..3 {
            assert!(
                (buf[c] as f32 / 255.0 - want[c]).abs() < 0.05,
                "{:?}",
                &buf[..3]
            );
        }
    }

    #[test]
    fn tensors_of_any_image_rank_become_pngs_and_others_none() {
        let device = crate::Device::cpu();
        let t = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            DynTensor::from_host(&vec![0.5; n], shape, device.burn())
        };
        assert_eq!(pngs(&t(&[3, 1, 4, 4])).len(), 3);
        assert_eq!(pngs(&t(&[2, 3, 1, 4, 4])).len(), 6);
        assert_eq!(pngs(&t(&[3, 4, 4])).len(), 1);
        assert_eq!(pngs(&t(&[4, 4])).len(), 1);
        assert!(pngs(&t(&[16])).is_empty());
    }

    #[test]
    fn diverging_scale_is_symmetric() {
        let (_, px) = decode(&heatmap(&[-2.0, 0.0, 2.0], 1, 3, Scale::Diverging));
        assert_eq!(&px[0..4], &[0, 0, 255, 255]);
        assert_eq!(&px[4..8], &[255, 255, 255, 255]);
        assert_eq!(&px[8..12], &[255, 0, 0, 255]);
    }
}
