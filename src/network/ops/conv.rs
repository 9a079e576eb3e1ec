//! Conv and ConvTranspose over 1, 2 or 3 spatial dimensions (1-D runs as 2-D with height 1), and
//! Col2Im, a transposed convolution in disguise.

use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::TensorData;

use super::{Back, Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

/// Kernel geometry shared by convolutions and pools, per spatial axis.
pub(crate) struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Padding before and after each spatial axis.
    pub begin: Vec<usize>,
    pub end: Vec<usize>,
}

impl Window {
    /// Reads strides, dilations, pads and auto_pad for an input of spatial size `input`, and
    /// checks that the kernel fits and the padded input and output fit the memory budget.
    pub fn read<B: Backend>(ctx: &Ctx<B>, kernel: Vec<usize>, input: &[usize]) -> Result<Window> {
        let window = Self::parse(ctx, kernel, input)?;
        window.check(ctx, input)?;
        Ok(window)
    }

    /// [`Window::read`] without the checks.
    pub fn parse<B: Backend>(ctx: &Ctx<B>, kernel: Vec<usize>, input: &[usize]) -> Result<Window> {
        let n = kernel.len();
        let node = ctx.node;
        let list = |name: &str| -> Result<Vec<usize>> {
            Ok(match node.ints(name)? {
                Some(v) if v.len() == n => v.iter().map(|&x| x.max(0) as usize).collect(),
                Some(v) => {
                    return Err(ctx.error(format!("{name} has {} values, want {n}", v.len())))
                }
                None => vec![1; n],
            })
        };
        let strides = list("strides")?;
        let dilations = list("dilations")?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(ctx.error(format!(
                "strides {strides:?} and dilations {dilations:?} must be at least 1"
            )));
        }
        let auto_pad = node.string("auto_pad", "NOTSET")?;
        let (begin, end) = match auto_pad.as_str() {
            "NOTSET" => match node.ints("pads")? {
                Some(p) if p.len() == 2 * n => {
                    if p.iter().any(|&x| x < 0) {
                        return Err(ctx.error("negative pads are not supported"));
                    }
                    (
                        p[..n].iter().map(|&x| x as usize).collect(),
                        p[n..].iter().map(|&x| x as usize).collect(),
                    )
                }
                Some(p) => {
                    return Err(ctx.error(format!("pads has {} values, want {}", p.len(), 2 * n)))
                }
                None => (vec![0; n], vec![0; n]),
            },
            "VALID" => (vec![0; n], vec![0; n]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut b = vec![0; n];
                let mut e = vec![0; n];
                for i in 0..n {
                    let out = input[i].div_ceil(strides[i]);
                    let span = span(kernel[i], dilations[i]).ok_or_else(|| {
                        ctx.error(format!(
                            "kernel {kernel:?} with dilations {dilations:?} is empty or overflows"
                        ))
                    })?;
                    // `out - 1` strides stay within the input, so only the span can overflow.
                    let total = (out.saturating_sub(1) * strides[i])
                        .checked_add(span)
                        .ok_or_else(|| ctx.error(format!("kernel {kernel:?} overflows")))?
                        .saturating_sub(input[i]);
                    let small = total / 2;
                    if auto_pad == "SAME_UPPER" {
                        (b[i], e[i]) = (small, total - small);
                    } else {
                        (b[i], e[i]) = (total - small, small);
                    }
                }
                (b, e)
            }
            other => return Err(ctx.error(format!("unknown auto_pad {other}"))),
        };
        Ok(Window {
            kernel,
            strides,
            dilations,
            begin,
            end,
        })
    }

    /// Checks that the kernel fits the padded input and that the padded input and the output
    /// fit the memory budget: sizes from the file, checked before anything is padded or
    /// allocated.
    pub fn check<B: Backend>(&self, ctx: &Ctx<B>, input: &[usize]) -> Result<()> {
        let out = self.output(input).map_err(|e| ctx.error(e))?;
        ctx.fits(
            "padded input",
            &self.padded(input).map_err(|e| ctx.error(e))?,
            4,
        )?;
        ctx.fits("output", &out, 4)?;
        Ok(())
    }

    /// The spatial size of the input after padding (checked arithmetic).
    pub fn padded(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        (0..self.kernel.len())
            .map(|i| {
                input[i]
                    .checked_add(self.begin[i])
                    .and_then(|n| n.checked_add(self.end[i]))
                    .ok_or_else(|| {
                        format!(
                            "padding {} + {} overflows axis {i}",
                            self.begin[i], self.end[i]
                        )
                    })
            })
            .collect()
    }

    /// The spatial size of the output: `(padded - span) / stride + 1` per axis, where the span
    /// is the dilated kernel's extent; an error when the kernel does not fit.
    pub fn output(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let padded = self.padded(input)?;
        (0..self.kernel.len())
            .map(|i| {
                let span = span(self.kernel[i], self.dilations[i]).ok_or_else(|| {
                    format!(
                        "kernel {:?} with dilations {:?} is empty or overflows",
                        self.kernel, self.dilations
                    )
                })?;
                if span > padded[i] {
                    return Err(format!(
                        "the kernel spans {span} on axis {i}, more than the padded input's {}",
                        padded[i]
                    ));
                }
                Ok((padded[i] - span) / self.strides[i] + 1)
            })
            .collect()
    }

    pub fn symmetric(&self) -> bool {
        self.begin == self.end
    }
}

/// The extent of a dilated kernel, `(kernel - 1) * dilation + 1`; None for an empty kernel or
/// one whose extent overflows.
pub(crate) fn span(kernel: usize, dilation: usize) -> Option<usize> {
    kernel.checked_sub(1)?.checked_mul(dilation)?.checked_add(1)
}

/// The optional bias of a convolution: one value per output channel.
fn bias<B: Backend>(ctx: &Ctx<B>, channels: usize) -> Result<Option<Tensor<B, 1>>> {
    if !ctx.has(2) {
        return Ok(None);
    }
    let b = ctx.float(2)?;
    if b.dims() != [channels] {
        return Err(ctx.error(format!(
            "bias {:?} does not have one value for each of the {channels} output channels",
            b.dims()
        )));
    }
    Ok(Some(b.to_rank::<1>()?))
}

/// The group count of a convolution over `channels` input channels: a positive divisor of them.
fn groups<B: Backend>(ctx: &Ctx<B>, channels: usize) -> Result<usize> {
    let group = ctx.node.int("group", 1)?;
    usize::try_from(group)
        .ok()
        .filter(|&g| g >= 1 && channels.is_multiple_of(g))
        .ok_or_else(|| {
            ctx.error(format!(
                "group {group} does not divide the input's {channels} channels"
            ))
        })
}

/// Views `[N, C, L]` as `[N, C, 1, L]` so 1-D ops can use the 2-D kernels.
pub(crate) fn lift_tensor_2d<B: Backend>(x: &DynTensor<B>) -> Result<Tensor<B, 4>> {
    let d = x.dims();
    match d.len() {
        3 => Ok(x.clone().reshape(&[d[0], d[1], 1, d[2]]).to_rank::<4>()?),
        _ => x.to_rank::<4>(),
    }
}

/// Pads the spatial axes of an `[N, C, H, W]` tensor with a constant.
pub(crate) fn pad_4d<B: Backend>(
    x: Tensor<B, 4>,
    begin: [usize; 2],
    end: [usize; 2],
    value: f32,
) -> Tensor<B, 4> {
    if begin == [0, 0] && end == [0, 0] {
        return x;
    }
    x.pad(
        (begin[1], end[1], begin[0], end[0]),
        PadMode::Constant(value),
    )
}

/// Lifts per-axis geometry of a 1-D op to 2-D (height 1).
pub(crate) fn lift_2d(v: &[usize], fill: usize) -> [usize; 2] {
    match v.len() {
        1 => [fill, v[0]],
        _ => [v[0], v[1]],
    }
}

pub fn conv<B: Back>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let w = ctx.float(1)?;
    let (xd, wd) = (x.dims(), w.dims());
    if xd.len() < 3 || xd.len() != wd.len() || xd.contains(&0) || wd.contains(&0) {
        return Err(ctx.error(format!(
            "input {xd:?} and weight {wd:?} do not fit a convolution"
        )));
    }
    let out_channels = wd[0];
    let groups = groups(ctx, xd[1])?;
    if xd[1] != wd[1] * groups {
        return Err(ctx.error(format!(
            "input has {} channels but weight {wd:?} with group {groups} expects {}",
            xd[1],
            wd[1] * groups
        )));
    }
    let kernel = wd[2..].to_vec();
    let win = Window::read(ctx, kernel, &xd[2..])?;
    let whole = |c: usize, spatial: Vec<usize>| [vec![xd[0], c], spatial].concat();
    let padded = win.padded(&xd[2..]).map_err(|e| ctx.error(e))?;
    ctx.fits("padded input", &whole(xd[1], padded), 4)?;
    let out = win.output(&xd[2..]).map_err(|e| ctx.error(e))?;
    ctx.fits("output", &whole(wd[0], out), 4)?;
    let bias = bias(ctx, out_channels)?;
    let y = match xd.len() {
        3 | 4 => {
            let (begin, end) = (lift_2d(&win.begin, 0), lift_2d(&win.end, 0));
            let (strides, dilations) = (lift_2d(&win.strides, 1), lift_2d(&win.dilations, 1));
            // burn pads symmetrically inside its kernels (no padded copy of the input, and no
            // strided slice of the gradient on the way back); other cases are padded here.
            let (x4, padding) = if begin == end {
                (lift_tensor_2d(&x)?, begin)
            } else {
                (pad_4d(lift_tensor_2d(&x)?, begin, end, 0.0), [0, 0])
            };
            let opts = ConvOptions::new(strides, padding, dilations, groups);
            let w4 = lift_tensor_2d(&w)?;
            let y = match B::convolution(&x4, &w4, bias.as_ref(), &opts) {
                Some(y) => y,
                None => module::conv2d(x4, w4, bias, opts),
            };
            squeeze_1d(DynTensor::new(y), xd.len())
        }
        5 => {
            if !win.symmetric() {
                return Err(ctx.error("asymmetric padding of a 3-D convolution is not supported"));
            }
            let a3 = |v: &[usize]| [v[0], v[1], v[2]];
            let opts =
                ConvOptions::new(a3(&win.strides), a3(&win.begin), a3(&win.dilations), groups);
            DynTensor::new(module::conv3d(
                x.to_rank::<5>()?,
                w.to_rank::<5>()?,
                bias,
                opts,
            ))
        }
        n => return Err(ctx.error(format!("{}-D convolution is not supported", n - 2))),
    };
    Ok(vec![Value::Device(y)])
}

/// Drops the height-1 axis added by [`lift_tensor_2d`] when the op was 1-D.
pub(crate) fn squeeze_1d<B: Backend>(y: DynTensor<B>, rank: usize) -> DynTensor<B> {
    if rank == 3 {
        let d = y.dims();
        y.reshape(&[d[0], d[1], d[3]])
    } else {
        y
    }
}

/// Col2Im (opset 18), 2-D images: sums the blocks of input `[N, C·kh·kw, L]` into an image
/// `[N, C, H, W]` (`image_shape` input 1, `block_shape` input 2, `strides`, `dilations`,
/// `pads`). PyTorch exports `F.fold` so (VOLO's outlook attention, MobileViTV2's patches).
///
/// It is the grouped transposed convolution (C groups) of the blocks laid out on their grid,
/// with one-hot weights: input channel `c·K + j` adds into channel `c` at block position `j`.
/// burn then gives it a gradient.
pub fn col2im<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let xd = x.dims();
    let sizes = |i: usize, what: &str| -> Result<Vec<usize>> {
        let v = ctx.ints(i)?;
        v.iter()
            .map(|&s| usize::try_from(s).ok().filter(|&s| s >= 1))
            .collect::<Option<Vec<_>>>()
            .filter(|s| s.len() == 2)
            .ok_or_else(|| ctx.error(format!("{what} {v:?} must be two positive sizes (2-D)")))
    };
    let (image, block) = (sizes(1, "image_shape")?, sizes(2, "block_shape")?);
    let k = block[0]
        .checked_mul(block[1])
        .ok_or_else(|| ctx.error(format!("block_shape {block:?} overflows")))?;
    if xd.len() != 3 || xd.contains(&0) || !xd[1].is_multiple_of(k) {
        return Err(ctx.error(format!(
            "input {xd:?} is not [N, C·{k}, blocks] for blocks of {block:?}"
        )));
    }
    let (n, c) = (xd[0], xd[1] / k);
    let win = Window::parse(ctx, block.clone(), &image)?;
    win.check(ctx, &image)?;
    let grid = win.output(&image).map_err(|e| ctx.error(e))?;
    if grid[0].checked_mul(grid[1]) != Some(xd[2]) {
        return Err(ctx.error(format!(
            "input {xd:?} has {} blocks; image {image:?} holds {}×{} of them",
            xd[2], grid[0], grid[1]
        )));
    }
    ctx.fits("output", &[n, c, image[0], image[1]], 4)?;
    let weights = ctx.fits("weights", &[xd[1], k], 4)?;
    let mut w = vec![0.0f32; weights];
    for ch in 0..xd[1] {
        w[ch * k + ch % k] = 1.0;
    }
    let w = Tensor::<B, 4>::from_data(
        TensorData::new(w, [xd[1], 1, block[0], block[1]]),
        ctx.device,
    );
    // The transposed convolution covers `(grid - 1)·stride + span`, which reaches within a
    // stride of the padded image's end; the output padding makes up the rest of the image.
    let mut extra = [0; 2];
    for i in 0..2 {
        let span = span(block[i], win.dilations[i]).expect("checked by the window");
        let full = (grid[i] - 1) * win.strides[i] + span;
        extra[i] = (win.begin[i] + image[i]).saturating_sub(full);
    }
    let opts = ConvTransposeOptions::new(
        lift_2d(&win.strides, 1),
        [0, 0],
        extra,
        lift_2d(&win.dilations, 1),
        c,
    );
    let blocks = x.reshape(&[n, xd[1], grid[0], grid[1]]).to_rank::<4>()?;
    let y = module::conv_transpose2d(blocks, w, None, opts)
        .narrow(2, win.begin[0], image[0])
        .narrow(3, win.begin[1], image[1]);
    Ok(vec![Value::Device(DynTensor::new(y))])
}

pub fn conv_transpose<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let x = ctx.float(0)?;
    let w = ctx.float(1)?;
    let (xd, wd) = (x.dims(), w.dims());
    if xd.len() < 3 || xd.len() != wd.len() || xd[1] != wd[0] || xd.contains(&0) || wd.contains(&0)
    {
        return Err(ctx.error(format!(
            "input {xd:?} and weight {wd:?} do not fit a transposed convolution"
        )));
    }
    let n = xd.len() - 2;
    let groups = groups(ctx, xd[1])?;
    let node = ctx.node;
    // Every size below comes from the file: read as checked, non-negative numbers.
    let list = |name: &str, default: usize, least: usize| -> Result<Vec<usize>> {
        let Some(v) = node.ints(name)? else {
            return Ok(vec![default; n]);
        };
        if v.len() < n {
            return Err(ctx.error(format!("{name} {v:?} has fewer than {n} values")));
        }
        v[v.len() - n..]
            .iter()
            .map(|&x| usize::try_from(x).ok().filter(|&x| x >= least))
            .collect::<Option<_>>()
            .ok_or_else(|| ctx.error(format!("{name} {v:?} must be at least {least}")))
    };
    let kernel = wd[2..].to_vec();
    if let Some(k) = node.ints("kernel_shape")? {
        if k.len() != n || k.iter().zip(&kernel).any(|(&a, &b)| a != b as i64) {
            return Err(ctx.error(format!(
                "kernel_shape {k:?} differs from the weight's {kernel:?}"
            )));
        }
    }
    let strides = list("strides", 1, 1)?;
    let dilations = list("dilations", 1, 1)?;
    let mut out_pad = list("output_padding", 0, 0)?;
    let overflow = || ctx.error("the output size overflows");
    let full: Vec<usize> = (0..n)
        .map(|i| {
            let span = span(kernel[i], dilations[i])?;
            strides[i]
                .checked_mul(xd[2 + i].checked_sub(1)?)?
                .checked_add(span)
        })
        .collect::<Option<_>>()
        .ok_or_else(overflow)?;
    let auto_pad = node.string("auto_pad", "NOTSET")?;
    let (mut begin, mut end) = (vec![0; n], vec![0; n]);
    let output_shape = if node.has_attr("output_shape") {
        Some(list("output_shape", 0, 1)?)
    } else {
        None
    };
    if output_shape.is_some() || auto_pad.starts_with("SAME") {
        let target: Vec<usize> = match &output_shape {
            Some(s) => s.clone(),
            None => (0..n)
                .map(|i| xd[2 + i].checked_mul(strides[i]))
                .collect::<Option<_>>()
                .ok_or_else(overflow)?,
        };
        for i in 0..n {
            let have = full[i].checked_add(out_pad[i]).ok_or_else(overflow)?;
            let Some(total) = have.checked_sub(target[i]) else {
                // The requested output is larger than the full result: extend at the end.
                out_pad[i] += target[i] - have;
                continue;
            };
            if auto_pad == "SAME_UPPER" {
                (begin[i], end[i]) = (total / 2, total - total / 2);
            } else {
                (begin[i], end[i]) = (total - total / 2, total / 2);
            }
        }
    } else if let Some(p) = node.ints("pads")? {
        if p.len() != 2 * n || p.iter().any(|&v| v < 0) {
            return Err(ctx.error(format!("invalid pads {p:?}")));
        }
        begin = p[..n].iter().map(|&v| v as usize).collect();
        end = p[n..].iter().map(|&v| v as usize).collect();
    }
    // What burn computes (uncropped), and what is kept of it: both checked before anything runs.
    let out_channels = wd[1].checked_mul(groups).ok_or_else(overflow)?;
    let mut computed = vec![xd[0], out_channels];
    let mut kept = computed.clone();
    for i in 0..n {
        let size = full[i].checked_add(out_pad[i]).ok_or_else(overflow)?;
        let crop = begin[i].saturating_add(end[i]);
        if crop >= size {
            return Err(ctx.error(format!(
                "pads {} and {} leave nothing of axis {i}'s {size} outputs",
                begin[i], end[i]
            )));
        }
        computed.push(size);
        kept.push(size - crop);
    }
    ctx.fits("output", &computed, 4)?;
    let bias = bias(ctx, out_channels)?;
    // Run without padding (burn pads symmetrically only), then crop each axis to
    // [begin, full + output_padding - end).
    let y = match n {
        1 | 2 => {
            let opts = ConvTransposeOptions::new(
                lift_2d(&strides, 1),
                [0, 0],
                lift_2d(&out_pad, 0),
                lift_2d(&dilations, 1),
                groups,
            );
            let y = module::conv_transpose2d(lift_tensor_2d(&x)?, lift_tensor_2d(&w)?, bias, opts);
            squeeze_1d(DynTensor::new(y), xd.len())
        }
        3 => {
            let a3 = |v: &[usize]| [v[0], v[1], v[2]];
            let opts = ConvTransposeOptions::new(
                a3(&strides),
                [0, 0, 0],
                a3(&out_pad),
                a3(&dilations),
                groups,
            );
            DynTensor::new(module::conv_transpose3d(
                x.to_rank::<5>()?,
                w.to_rank::<5>()?,
                bias,
                opts,
            ))
        }
        _ => return Err(ctx.error(format!("{n}-D transposed convolution is not supported"))),
    };
    let mut storage = y.clone().into_storage();
    for i in 0..n {
        if begin[i] > 0 || end[i] > 0 {
            storage = storage.narrow(y.storage_axis(2 + i), begin[i], kept[2 + i]);
        }
    }
    Ok(vec![Value::Device(DynTensor::from_storage(
        storage,
        y.rank(),
    ))])
}

#[cfg(test)]
mod tests {
    use super::super::testing::run_on;
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, HostTensor, Value};

    #[test]
    fn col2im_sums_overlapping_blocks_and_passes_each_its_gradient() {
        // 2×2 blocks with stride 1 over a 3×3 image, one channel: 4 blocks of 4 values.
        let ad = crate::Device::cpu().autodiff();
        let blocks: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let x = DynTensor::from_host(&blocks, &[1, 4, 4], &ad).require_grad();
        let sizes = |v: &[i64]| Value::Host(HostTensor::i64(vec![2], v.to_vec()));
        let inputs = vec![Value::Device(x.clone()), sizes(&[3, 3]), sizes(&[2, 2])];
        let attrs = [("strides", Attr::Ints(vec![1, 1]))];
        let Value::Device(y) = run_on("Col2Im", 18, &attrs, inputs, &ad).unwrap().remove(0) else {
            panic!("Col2Im runs on the device");
        };
        assert_eq!(y.dims(), [1, 1, 3, 3]);
        // Input channel j holds block position j; the L axis runs over the 2×2 grid of blocks.
        // Pixel (1, 1) is position 3 of block 0, 2 of block 1, 1 of block 2 and 0 of block 3.
        let centre = 12.0 + 9.0 + 6.0 + 3.0;
        assert_eq!(y.to_vec()[4], centre);
        assert_eq!(y.to_vec()[0], 0.0);
        let g = x.grad(&y.backward()).unwrap().to_vec();
        assert_eq!(g, [1.0; 16]);
    }
}
