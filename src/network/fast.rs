//! Ops of our own on the render loop's CPU backend ([`Fast`]: burn's autodiff over burn-flex),
//! with backward passes that go faster than what burn composes from its own ops.
//!
//! burn-autodiff's `Backward` trait is the extension point burn provides for this; burn-dispatch
//! 0.21 keeps its tensors' backend private, so these exist only on a named backend. Measured
//! with benches/feature_vis_step.rs (GoogLeNet, inception_4a, 8 units, 128 px, 2 cores; the
//! median of 7 runs of 20 steps each): 190.7 ms per step through `Dispatch`, 181.2 on [`Fast`]
//! with [`max_pool`]; then 199.8 against 170.6 with [`lrn`] too.
//!
//! Then [`conv2d`], against the same build without it (3 runs each, alternating): 176.2 ms per
//! step without, 143.4 with it. burn-flex's im2col, its transposed write-back of the product and
//! the col2im of its input gradient (21 % of the samples before) are gone from the profile; the
//! GEMM kernels' share rose from 41 % to 48 %.
//!
//! Then [`relu`] (6 runs each, alternating, on a machine without AVX-512): median 160.7 ms per
//! step without it, 153.8 with it; `StridedIter`'s share of the samples fell from 6.4 % to 0.8 %.
//!
//! Tried and left out (before [`conv2d`]):
//! - a stride-1 convolution's input gradient as a forward convolution with flipped weights
//!   (instead of burn-flex's single-threaded col2im): 188.8 ms with it against 181.2 without.
//!   burn-flex's forward convolution spends more on im2col than the col2im it replaces, and the
//!   render loop already keeps both cores busy with parts of the batch;
//! - the same for 1×1 filters only (one matrix product per image): the transposed
//!   convolution's share of the profile fell from 8.2 % to 6.7 %, within the run-to-run noise
//!   of the step time.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{TensorData, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexDevice, FlexTensor};
use rayon::prelude::*;

use super::ops::max_pool_cpu::{self, Geometry};
use super::ops::norm::Lrn;
use super::ops::{Back, Fast, OpFn, OpSpec};
use super::value::{Constant, DynTensor, MAX_RANK};
use crate::device::Device;

impl Back for Fast {
    fn kernel(spec: &OpSpec) -> OpFn<Self> {
        spec.kernel.fast
    }

    fn device_of(_: &Device) -> Self::Device {
        FlexDevice
    }

    fn is_cpu(_: &Self::Device) -> bool {
        true
    }

    fn max_pool(x: &Tensor<Self, 4>, g: &Geometry) -> Option<Tensor<Self, 4>> {
        max_pool(x, g)
    }

    fn convolution(
        x: &Tensor<Self, 4>,
        w: &Tensor<Self, 4>,
        bias: Option<&Tensor<Self, 1>>,
        o: &ConvOptions<2>,
    ) -> Option<Tensor<Self, 4>> {
        conv2d(x, w, bias, o).or_else(|| depthwise2d(x, w, bias, o))
    }

    fn lrn(x: &Tensor<Self, 3>, p: Lrn) -> Option<Tensor<Self, 3>> {
        // An empty tensor is left to the composed op.
        (x.dims().iter().product::<usize>() > 0).then(|| lrn(x.clone(), p))
    }

    fn rectified(x: &Tensor<Self, MAX_RANK>) -> Option<Tensor<Self, MAX_RANK>> {
        relu(x)
    }

    fn constant(c: &Constant, _autodiff: bool) -> Option<DynTensor<Self>> {
        let flex = c.flex.get_or_init(|| {
            c.device.as_ref().map(|_| match &c.shared {
                Some(values) => DynTensor::from_shared_on(values, &c.shape, &FlexDevice),
                None => c.host().into_device::<Flex>(&FlexDevice),
            })
        });
        flex.clone().map(DynTensor::<Fast>::from_inner)
    }
}

/// 2-D max pooling on [`Fast`] by our CPU kernel ([`max_pool_cpu::pool_planes`]), whose
/// backward pass sends each output's gradient to the input element that won its window, plane
/// by plane on the thread pool. Through `Dispatch` the same kernel's output has to be a `gather`
/// of the input at the winners (burn's gradient of a gather is the right scatter): an index
/// upload, a gather and a scatter through burn's generic index ops, where here the window
/// maxima are the output as they are. `None` where the kernel does not apply (see
/// [`max_pool_cpu::max_pool`]).
pub(crate) fn max_pool(x: &Tensor<Fast, 4>, g: &Geometry) -> Option<Tensor<Fast, 4>> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = g.out;
    if n * c * h * w == 0 {
        // Nothing to pool; burn's op defines the empty cases.
        return None;
    }
    let x = x.clone().into_primitive().tensor();
    let xs = f32_values(&x.primitive)?;
    let (values, argmax) = max_pool_cpu::pool_planes(&xs, [h, w], g)?;
    let out = FlexTensor::from_data(TensorData::new(values, [n, c, oh, ow]));
    let out = match MaxPoolBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((Arc::new(argmax), [n, c, h, w]), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// The backward step of [`max_pool`]: state = (each output's winner, as a flat position in its
/// plane; the input's shape).
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = (Arc<Vec<i32>>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let (argmax, [n, c, h, w]) = ops.state;
        let gs = contiguous_f32(&grad);
        let plane_out = gs.len() / (n * c);
        let mut dx = vec![0.0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(gs.par_chunks(plane_out))
            .zip(argmax.par_chunks(plane_out))
            .for_each(|((d, g), a)| {
                for (&v, &i) in g.iter().zip(a) {
                    d[i as usize] += v;
                }
            });
        let dx = FlexTensor::from_data(TensorData::new(dx, [n, c, h, w]));
        grads.register::<Flex>(node.id, dx);
    }
}

/// ReLU on [`Fast`]: burn-flex's forward op, and a backward pass that makes the incoming
/// gradient contiguous before it masks it.
///
/// The gradient that reaches a ReLU from a `Concat` (every branch of an inception module ends
/// in one) is burn-autodiff's slice of the concatenated gradient: a view, strided along the
/// batch. burn-flex's `relu_backward` walks such a view element by element (`StridedIter`,
/// 4.8 % of a GoogLeNet step's CPU samples, in 2026-12-03's profile), where its contiguous copy
/// is a tiled block copy, and the mask over contiguous slices vectorizes.
pub(crate) fn relu<const D: usize>(x: &Tensor<Fast, D>) -> Option<Tensor<Fast, D>> {
    let x = x.clone().into_primitive().tensor();
    // Other element types are left to burn's op.
    if x.primitive.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let out = <Flex as burn::tensor::ops::ActivationOps<Flex>>::relu(x.primitive.clone());
    // (`compute_bound`: under `NoCheckpointing` the bound only matters to burn's recomputation,
    // which a memory-bound op would need a retro-forward for.)
    let out = match ReluBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x.primitive, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// The backward step of [`relu`]: state = the input (the gradient passes where it is > 0, as in
/// burn's op; a NaN input passes none).
#[derive(Debug)]
struct ReluBackward;

impl Backward<Flex, 1> for ReluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let x = ops.state;
        let shape = x.layout().shape().clone();
        let xs = contiguous_f32(&x);
        let gs = contiguous_f32(&grad);
        let dx: Vec<f32> = xs
            .iter()
            .zip(gs.iter())
            .map(|(&x, &g)| if x > 0.0 { g } else { 0.0 })
            .collect();
        let dx = FlexTensor::from_data(TensorData::new(dx, shape));
        grads.register::<Flex>(node.id, dx);
    }
}

/// ONNX LRN on [`Fast`] of `x` `[N, C, R]` (its spatial axes flattened to `R`), with the window
/// sums and the backward pass written out over the channels.
///
/// Through `Dispatch` the window sums are a 1×1 convolution with a `C × C` band matrix, which
/// multiplies by every zero of the band: for GoogLeNet's second LRN (192 channels, window 5),
/// 38 times the work of the five additions per element here, in the forward pass and again in
/// the backward one; and the power is `exp(beta · ln d)`. The gradient, with `d = bias +
/// alpha / size · Σ_window x²` and `y = x · d^-beta`:
/// `dx_j = g_j · d_j^-beta - 2 · alpha · beta / size · x_j · Σ_{c: j in window(c)} g_c · x_c ·
/// d_c^(-beta-1)`.
pub(crate) fn lrn(x: Tensor<Fast, 3>, p: Lrn) -> Tensor<Fast, 3> {
    let [n, c, r] = x.dims();
    let x = x.into_primitive().tensor();
    let xs = contiguous_f32(&x.primitive);
    let scale = p.alpha / p.size as f32;
    let len = c * r;
    let mut y = vec![0.0f32; n * len];
    // d^-beta and d, kept for the backward pass.
    let mut inv = vec![0.0f32; n * len];
    let mut base = vec![0.0f32; n * len];
    y.par_chunks_mut(len)
        .zip(inv.par_chunks_mut(len))
        .zip(base.par_chunks_mut(len))
        .zip(xs.par_chunks(len))
        .for_each(|(((y, inv), base), x)| {
            let mut sum = vec![0.0f32; r];
            for ch in 0..c {
                sum.fill(0.0);
                for i in p.window(ch, c) {
                    for (s, v) in sum.iter_mut().zip(&x[i * r..(i + 1) * r]) {
                        *s += v * v;
                    }
                }
                let at = ch * r..(ch + 1) * r;
                for ((((y, inv), base), &x), &s) in y[at.clone()]
                    .iter_mut()
                    .zip(&mut inv[at.clone()])
                    .zip(&mut base[at.clone()])
                    .zip(&x[at.clone()])
                    .zip(&sum)
                {
                    let d = p.bias + scale * s;
                    *base = d;
                    *inv = p.inverse_power(d);
                    *y = x * *inv;
                }
            }
        });
    let out = FlexTensor::from_data(TensorData::new(y, [n, c, r]));
    let out = match LrnBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LrnState {
                x: Arc::new(xs.into_owned()),
                inv: Arc::new(inv),
                base: Arc::new(base),
                shape: [n, c, r],
                p,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// A 2-D convolution's shape: input `[n, c, h, w]`, filters `[co, c, kh, kw]` (one group), its
/// strides, symmetric padding and dilations, and the output's `[oh, ow]`.
#[derive(Clone, Copy, Debug)]
struct ConvShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
}

impl ConvShape {
    /// The shape of convolving `x` `[n, c, h, w]` with filters `w` `[co, _, kh, kw]` under `o`;
    /// `None` where our ops leave the convolution to burn's: a filter or bias that requires a
    /// gradient (a network's weights are constants, so ours never compute one), an empty
    /// tensor (burn's op defines those cases), a zero stride or dilation, or sizes that
    /// overflow.
    fn of(
        x: &Tensor<Fast, 4>,
        w: &Tensor<Fast, 4>,
        bias: Option<&Tensor<Fast, 1>>,
        o: &ConvOptions<2>,
    ) -> Option<Self> {
        if w.is_require_grad() || bias.is_some_and(|b| b.is_require_grad()) {
            return None;
        }
        let [n, c, h, wd] = x.dims();
        let [co, _, kh, kw] = w.dims();
        if [n, c, h, wd, co, kh, kw].contains(&0)
            || o.stride.contains(&0)
            || o.dilation.contains(&0)
        {
            return None;
        }
        let out = |len: usize, k: usize, a: usize| -> Option<usize> {
            let reach = o.dilation[a].checked_mul(k - 1)?.checked_add(1)?;
            let padded = len.checked_add(o.padding[a].checked_mul(2)?)?;
            Some(padded.checked_sub(reach)? / o.stride[a] + 1)
        };
        let s = ConvShape {
            n,
            c,
            h,
            w: wd,
            co,
            kh,
            kw,
            oh: out(h, kh, 0)?,
            ow: out(wd, kw, 1)?,
            stride: o.stride,
            pad: o.padding,
            dil: o.dilation,
        };
        n.checked_mul(co)?.checked_mul(s.positions())?;
        Some(s)
    }

    /// Rows of the column matrix: one per input channel and filter tap.
    fn taps(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1×1 filter at stride 1 without padding: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// For filter tap `k` on axis `a` (0: height, 1: width): the output positions `lo..hi` whose
    /// input position `o · stride + off` falls inside the input, and `off`.
    fn span(&self, a: usize, k: usize) -> (usize, usize, isize) {
        let (out, len) = if a == 0 {
            (self.oh, self.h)
        } else {
            (self.ow, self.w)
        };
        let s = self.stride[a];
        let off = (k * self.dil[a]) as isize - self.pad[a] as isize;
        let lo = if off >= 0 {
            0
        } else {
            off.unsigned_abs().div_ceil(s)
        };
        let hi = (len as isize - off).max(0) as usize;
        let hi = hi.div_ceil(s).min(out);
        (lo.min(hi), hi, off)
    }

    /// Pairs each entry of an image's column matrix `[taps, positions]` that lies inside the
    /// input with its input pixel, in runs: `f(entry, pixel, len)` for entries `entry..entry +
    /// len` and pixels `pixel..pixel + len` (whole output rows at stride 1 along the width, single
    /// pixels otherwise). Entries under the padding are never visited.
    fn walk(&self, mut f: impl FnMut(usize, usize, usize)) {
        let p = self.positions();
        let plane = self.h * self.w;
        for ci in 0..self.c {
            for ky in 0..self.kh {
                let (ylo, yhi, yoff) = self.span(0, ky);
                for kx in 0..self.kw {
                    let (xlo, xhi, xoff) = self.span(1, kx);
                    let row = ((ci * self.kh + ky) * self.kw + kx) * p;
                    for oy in ylo..yhi {
                        let iy = ((oy * self.stride[0]) as isize + yoff) as usize;
                        let at = row + oy * self.ow;
                        let from = ci * plane + iy * self.w;
                        if self.stride[1] == 1 {
                            let ix = (xlo as isize + xoff) as usize;
                            f(at + xlo, from + ix, xhi - xlo);
                        } else {
                            for ox in xlo..xhi {
                                let ix = ((ox * self.stride[1]) as isize + xoff) as usize;
                                f(at + ox, from + ix, 1);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One image's column matrix `col` `[taps, positions]` (zeros where a tap falls in the padding,
/// as `col` comes) from its input `x` `[c, h, w]`.
fn im2col(x: &[f32], col: &mut [f32], s: &ConvShape) {
    s.walk(|at, from, len| col[at..at + len].copy_from_slice(&x[from..from + len]));
}

/// The transpose of [`im2col`]: each column matrix entry added to the input pixel it came from.
fn col2im(col: &[f32], dx: &mut [f32], s: &ConvShape) {
    s.walk(|at, from, len| {
        for (d, v) in dx[from..from + len].iter_mut().zip(&col[at..at + len]) {
            *d += v;
        }
    });
}

/// 2-D convolution (one group, constant filters and bias) on [`Fast`]: per image, a column
/// matrix `[c·kh·kw, oh·ow]` built by row copies and one matrix product with the filters; the
/// input gradient is the filters' transpose times the output gradient, added back by rows.
///
/// burn-flex builds its column matrix one value at a time, tap-major, and writes the product
/// back transposed (a strided store per value); its input gradient is a transposed convolution
/// whose col2im runs value by value too. In a GoogLeNet feature-visualization step those three
/// loops took 21 % of the CPU samples (perf, inception_4a, batch 8). The filters' own gradient
/// is never needed here (a network's weights are constants), so a filter or bias that requires
/// one, a grouped convolution or a non-f32 input is left to burn's op (`None`).
pub(crate) fn conv2d(
    x: &Tensor<Fast, 4>,
    w: &Tensor<Fast, 4>,
    bias: Option<&Tensor<Fast, 1>>,
    o: &ConvOptions<2>,
) -> Option<Tensor<Fast, 4>> {
    if o.groups != 1 {
        return None;
    }
    let s = ConvShape::of(x, w, bias, o)?;
    if w.dims()[1] != s.c {
        return None;
    }
    let [n, c, h, wd, co] = [s.n, s.c, s.h, s.w, s.co];
    let (k, p) = (s.taps(), s.positions());
    // An image's column matrix, which burn-flex never holds whole (it goes through 512 output
    // positions at a time): over the memory budget, burn's op does the work.
    if crate::budget::fits(&[k, p], 4).is_err() {
        return None;
    }
    let x = x.clone().into_primitive().tensor();
    let xs = f32_values(&x.primitive)?;
    let filters = w.clone().inner().into_primitive().tensor();
    let ws = f32_values(&filters)?;
    let mut y = vec![0.0f32; n * co * p];
    // One image's column matrix at a time; the entries under the padding stay zero, as every
    // image has them at the same places.
    let mut col = vec![0.0f32; if s.pointwise() { 0 } else { k * p }];
    for (image, out) in xs.chunks(c * h * wd).zip(y.chunks_mut(co * p)) {
        let cols = if s.pointwise() {
            image
        } else {
            im2col(image, &mut col, &s);
            &col
        };
        matmul_into(out, &ws, [k, 1], cols, [co, k, p]);
    }
    if let Some(b) = bias {
        let b: Vec<f32> = b.clone().inner().into_data().to_vec().ok()?;
        for out in y.chunks_mut(co * p) {
            for (plane, b) in out.chunks_mut(p).zip(&b) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    }
    let y = FlexTensor::from_data(TensorData::new(y, [n, co, s.oh, s.ow]));
    let y = match ConvBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((filters, s), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// A depthwise 2-D convolution's shape: [`ConvShape`] with `c` input channels, `co` = `c · m`
/// output channels, and filters `[co, 1, kh, kw]`: output channel `o` reads input channel `o / m`.
#[derive(Clone, Copy, Debug)]
struct DepthwiseShape {
    s: ConvShape,
    m: usize,
}

impl DepthwiseShape {
    /// Adds `wt[tap] · src`, for each filter tap, to the output positions that tap reaches:
    /// `src` an input plane and `dst` an output plane (`back`: false), or `src` an output plane
    /// and `dst` an input plane, the transpose (`back`: true). A row of outputs at a time
    /// ([`axpy`]): at a stride of `sx` > 1 along the width, the input plane is read (or its
    /// gradient gathered) as `sx` planes of every `sx`-th column, in which each tap's inputs for
    /// a row of outputs lie side by side.
    fn taps(&self, wt: &[f32], src: &[f32], dst: &mut [f32], back: bool) {
        let s = &self.s;
        let sx = s.stride[1];
        if sx == 1 {
            let (from, to) = (src, dst);
            return self.runs(s.w, |t, o, i, len| {
                if back {
                    axpy(wt[t], &from[o..o + len], &mut to[i..i + len]);
                } else {
                    axpy(wt[t], &from[i..i + len], &mut to[o..o + len]);
                }
            });
        }
        // Phase r's row iy, entry j: column j · sx + r of the input's row iy.
        let pw = s.w.div_ceil(sx);
        let mut phases = vec![0.0f32; sx * s.h * pw];
        let at = |r: usize, iy: usize| (r * s.h + iy) * pw;
        if back {
            self.runs(pw, |t, o, i, len| {
                axpy(wt[t], &src[o..o + len], &mut phases[i..i + len])
            });
            for r in 0..sx {
                for iy in 0..s.h {
                    let row = &phases[at(r, iy)..at(r, iy) + pw];
                    let cols = dst[iy * s.w..(iy + 1) * s.w].iter_mut().skip(r).step_by(sx);
                    cols.zip(row).for_each(|(d, v)| *d += v);
                }
            }
        } else {
            for r in 0..sx {
                for iy in 0..s.h {
                    let cols = src[iy * s.w..(iy + 1) * s.w].iter().skip(r).step_by(sx);
                    phases[at(r, iy)..at(r, iy) + pw]
                        .iter_mut()
                        .zip(cols)
                        .for_each(|(p, v)| *p = *v);
                }
            }
            self.runs(pw, |t, o, i, len| {
                axpy(wt[t], &phases[i..i + len], &mut dst[o..o + len])
            });
        }
    }

    /// For each filter tap `t` and row of outputs: `f(t, o, i, len)`, the outputs `o..o + len`
    /// of the output plane reading inputs `i..i + len` of the input plane read as phase planes
    /// of rows `pw` long (see [`DepthwiseShape::taps`]; at stride 1, the plane itself).
    fn runs(&self, pw: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let s = &self.s;
        let sx = s.stride[1] as isize;
        for ky in 0..s.kh {
            let (ylo, yhi, yoff) = s.span(0, ky);
            for kx in 0..s.kw {
                let (xlo, xhi, xoff) = s.span(1, kx);
                // Output ox reads column ox · sx + xoff: phase xoff mod sx, entry ox + q.
                let (r, q) = (xoff.rem_euclid(sx) as usize, xoff.div_euclid(sx));
                let first = (xlo as isize + q) as usize;
                for oy in ylo..yhi {
                    let iy = ((oy * s.stride[0]) as isize + yoff) as usize;
                    let i = (r * s.h + iy) * pw + first;
                    f(ky * s.kw + kx, oy * s.ow + xlo, i, xhi - xlo);
                }
            }
        }
    }
}

/// `dst[i] += a · src[i]`.
///
/// (Tried with AVX2 and FMA intrinsics, 8 lanes at a time, since the test profile builds this
/// crate at opt-level 1, where LLVM does not vectorize. On EfficientNet-Lite0's depthwise layers,
/// 16 images forward and backward, it was faster only on rows 112 wide (76 ms against 96),
/// slower on rows 14 wide (84 against 52), about even elsewhere: the rows are short, and the pass
/// spends as much on memory and on the call per row as on the products.)
fn axpy(a: f32, src: &[f32], dst: &mut [f32]) {
    dst.iter_mut().zip(src).for_each(|(d, v)| *d += a * v);
}

/// Depthwise 2-D convolution on [`Fast`] (one input channel per group, `groups` = the input's
/// channels, filters `[c · m, 1, kh, kw]`, constant filters and bias), as in MobileNet's and
/// EfficientNet's blocks: each output plane the sum of its filter's taps times shifted rows of
/// its input plane, planes in parallel; the input gradient the same sums sent back, each input
/// plane by one thread.
///
/// burn-flex runs a grouped convolution as a matrix product per image and group (here `1 ×
/// taps`, one row), and the input gradient as a transposed convolution that does the same and
/// then adds the columns back one value at a time, image after image and group after group on
/// one thread: in an EfficientNet-Lite0 unit view (tests/imagenet.rs, 2 cores) that transposed
/// convolution took 32 % of the CPU samples. `None` for any other grouping, a filter or bias
/// that requires a gradient, or non-f32 values: burn's op.
pub(crate) fn depthwise2d(
    x: &Tensor<Fast, 4>,
    w: &Tensor<Fast, 4>,
    bias: Option<&Tensor<Fast, 1>>,
    o: &ConvOptions<2>,
) -> Option<Tensor<Fast, 4>> {
    let s = ConvShape::of(x, w, bias, o)?;
    let [n, c, co, kh, kw] = [s.n, s.c, s.co, s.kh, s.kw];
    if o.groups != c || w.dims()[1] != 1 || co % c != 0 {
        return None;
    }
    let d = DepthwiseShape { s, m: co / c };
    let (h, wd) = (s.h, s.w);
    let p = s.positions();
    let x = x.clone().into_primitive().tensor();
    let xs = f32_values(&x.primitive)?;
    let filters = w.clone().inner().into_primitive().tensor();
    let ws = f32_values(&filters)?;
    let b: Option<Vec<f32>> = match bias {
        Some(b) => Some(b.clone().inner().into_data().to_vec().ok()?),
        None => None,
    };
    if b.as_ref().is_some_and(|b| b.len() != co) {
        // Not one bias per output channel: burn's op says what it says about that.
        return None;
    }
    let (taps, plane) = (kh * kw, h * wd);
    let mut y = vec![0.0f32; n * co * p];
    y.par_chunks_mut(p).enumerate().for_each(|(at, out)| {
        let (image, oc) = (at / co, at % co);
        if let Some(b) = &b {
            out.fill(b[oc]);
        }
        let input = (image * c + oc / d.m) * plane;
        d.taps(
            &ws[oc * taps..(oc + 1) * taps],
            &xs[input..input + plane],
            out,
            false,
        );
    });
    let y = FlexTensor::from_data(TensorData::new(y, [n, co, d.s.oh, d.s.ow]));
    let y = match DepthwiseBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((filters, d), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// The backward step of [`depthwise2d`]: state = (the filters, the shape).
#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 1> for DepthwiseBackward {
    type State = (FlexTensor, DepthwiseShape);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let (filters, d) = ops.state;
        let ConvShape {
            n,
            c,
            h,
            w,
            co,
            kh,
            kw,
            ..
        } = d.s;
        let (p, taps, plane) = (d.s.positions(), kh * kw, h * w);
        let ws = contiguous_f32(&filters);
        let dys = contiguous_f32(&grad);
        let mut dx = vec![0.0f32; n * c * plane];
        // Input plane (image, channel) gets the gradients of the channel's `m` outputs.
        dx.par_chunks_mut(plane).enumerate().for_each(|(at, dx)| {
            let (image, ch) = (at / c, at % c);
            for oc in ch * d.m..(ch + 1) * d.m {
                let from = (image * co + oc) * p;
                d.taps(
                    &ws[oc * taps..(oc + 1) * taps],
                    &dys[from..from + p],
                    dx,
                    true,
                );
            }
        });
        let dx = FlexTensor::from_data(TensorData::new(dx, [n, c, h, w]));
        grads.register::<Flex>(node.id, dx);
    }
}

/// `dst` `[m, n]` = `a` `[m, k]` · `b` `[k, n]`, with `dst` and `b` row-major and `a` read
/// through its (row, column) strides, by the gemm crate (burn-flex's own GEMM). burn-flex's
/// matmul copied the transposed filters of the input gradient into a contiguous tensor at every
/// call (17 % of a GoogLeNet step's samples); gemm reads a strided operand where it lies.
fn matmul_into(
    dst: &mut [f32],
    a: &[f32],
    a_strides: [usize; 2],
    b: &[f32],
    [m, k, n]: [usize; 3],
) {
    let reach = (m - 1) * a_strides[0] + (k - 1) * a_strides[1];
    assert!(
        m * k * n > 0 && dst.len() == m * n && b.len() == k * n && reach < a.len(),
        "matmul_into: operands do not fit [{m}, {k}] · [{k}, {n}]"
    );
    let parallelism = if rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assertion above: every element the sizes and strides reach lies inside its
    // slice, and `dst`, borrowed mutably, overlaps neither operand. `read_dst` is false, so
    // `dst`'s old values are never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_strides[1] as isize,
            a_strides[0] as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The backward step of [`conv2d`]: state = (the filters, the shape).
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 1> for ConvBackward {
    type State = (FlexTensor, ConvShape);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let (filters, s) = ops.state;
        let ConvShape { n, c, h, w, co, .. } = s;
        let (k, p) = (s.taps(), s.positions());
        let ws = contiguous_f32(&filters);
        let dys = contiguous_f32(&grad);
        let mut dx = vec![0.0f32; n * c * h * w];
        let mut dcol = vec![0.0f32; if s.pointwise() { 0 } else { k * p }];
        // Per image: the filters' transpose (`[taps, co]`, read through strides) times the
        // output gradient `[co, positions]`, added back to the pixels it came from.
        for (dy, dx) in dys.chunks(co * p).zip(dx.chunks_mut(c * h * w)) {
            if s.pointwise() {
                matmul_into(dx, &ws, [1, k], dy, [k, co, p]);
            } else {
                matmul_into(&mut dcol, &ws, [1, k], dy, [k, co, p]);
                col2im(&dcol, dx, &s);
            }
        }
        let dx = FlexTensor::from_data(TensorData::new(dx, [n, c, h, w]));
        grads.register::<Flex>(node.id, dx);
    }
}

/// A float tensor's values, borrowed when it is contiguous; `None` unless its values are f32.
fn f32_values(t: &FlexTensor) -> Option<std::borrow::Cow<'_, [f32]>> {
    Some(match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>()?.to_vec()),
    })
}

/// [`f32_values`] of a tensor known to hold f32 (a gradient of one of our f32 ops).
fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    f32_values(t).expect("an f32 tensor")
}

#[derive(Clone, Debug)]
struct LrnState {
    x: Arc<Vec<f32>>,
    inv: Arc<Vec<f32>>,
    base: Arc<Vec<f32>>,
    shape: [usize; 3],
    p: Lrn,
}

#[derive(Debug)]
struct LrnBackward;

impl Backward<Flex, 1> for LrnBackward {
    type State = LrnState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let LrnState {
            x,
            inv,
            base,
            shape: [n, c, r],
            p,
        } = ops.state;
        let gs = contiguous_f32(&grad);
        let k = 2.0 * p.alpha * p.beta / p.size as f32;
        let len = c * r;
        let mut dx = vec![0.0f32; n * len];
        dx.par_chunks_mut(len)
            .zip(gs.par_chunks(len))
            .zip(x.par_chunks(len))
            .zip(inv.par_chunks(len).zip(base.par_chunks(len)))
            .for_each(|(((dx, g), x), (inv, base))| {
                // t_c = g_c · x_c · d_c^(-beta-1), then each input channel j gathers the t of
                // the outputs whose window holds it.
                let t: Vec<f32> = g
                    .iter()
                    .zip(x)
                    .zip(inv.iter().zip(base))
                    .map(|((g, x), (inv, d))| g * x * inv / d)
                    .collect();
                let mut sum = vec![0.0f32; r];
                for j in 0..c {
                    sum.fill(0.0);
                    for o in p.readers(j, c) {
                        for (s, t) in sum.iter_mut().zip(&t[o * r..(o + 1) * r]) {
                            *s += t;
                        }
                    }
                    let at = j * r..(j + 1) * r;
                    for ((((dx, &g), &inv), &x), &s) in dx[at.clone()]
                        .iter_mut()
                        .zip(&g[at.clone()])
                        .zip(&inv[at.clone()])
                        .zip(&x[at.clone()])
                        .zip(&sum)
                    {
                        *dx = g * inv - k * x * s;
                    }
                }
            });
        let dx = FlexTensor::from_data(TensorData::new(dx, [n, c, r]));
        grads.register::<Flex>(node.id, dx);
    }
}

#[cfg(test)]
mod tests {
    use burn::Dispatch;
    use burn_flex::FlexDevice;

    use super::*;

    /// A large weight on the CPU is held once: the render backend's tensor reads the buffer
    /// that the `Dispatch` tensor was made from, in place, and both give its values.
    #[test]
    fn a_large_weight_is_read_in_place_by_the_render_backend() {
        let n = 4 * crate::network::HOST_COPY_LIMIT;
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
        let device = crate::Device::cpu().burn().clone();
        let host = crate::network::HostTensor::f32(vec![4, n / 4], values.clone());
        let c = Constant::new(host, &device);
        let shared = c
            .shared
            .as_ref()
            .expect("a large weight on the CPU is shared");
        assert_eq!(c.device.as_ref().unwrap().to_vec(), values);
        let fast = Fast::constant(&c, false).unwrap();
        let flex = fast.into_storage().inner().into_primitive().tensor();
        let read = flex.as_slice::<f32>().unwrap();
        assert_eq!(read, &values[..]);
        assert_eq!(
            read.as_ptr(),
            shared.values().as_ptr(),
            "the values were copied"
        );
    }

    /// [`relu`] gives exactly burn's values and input gradients: for zeros, negatives and NaN;
    /// for a gradient that arrives as a slice of a concatenation (a view strided along the
    /// batch, as after an inception module's `Concat`); and for a strided input.
    #[test]
    fn relu_matches_burns_relu() {
        let (n, c, h, w) = (3, 4, 5, 6);
        let len = n * c * h * w;
        let x: Vec<f32> = (0..len)
            .map(|i| match i % 11 {
                0 => 0.0,
                5 => f32::NAN,
                _ => (i as f32 * 0.7).sin(),
            })
            .collect();
        let g: Vec<f32> = (0..2 * len).map(|i| (i as f32 * 0.31).cos()).collect();
        let bits = |t: Tensor<Flex, 4>| -> Vec<u32> {
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            v.iter().map(|v| v.to_bits()).collect()
        };
        let run = |ours: bool| {
            let a =
                Tensor::<Fast, 4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &FlexDevice)
                    .require_grad();
            // A transposed view: strided.
            let rev: Vec<f32> = x.iter().rev().copied().collect();
            let b = Tensor::<Fast, 4>::from_data(TensorData::new(rev, [n, c, w, h]), &FlexDevice)
                .require_grad();
            let f = |t: Tensor<Fast, 4>| {
                if ours {
                    relu(&t).expect("f32")
                } else {
                    burn::tensor::activation::relu(t)
                }
            };
            let y = Tensor::cat(vec![f(a.clone()), f(b.clone().swap_dims(2, 3))], 1);
            let gt = Tensor::<Fast, 4>::from_data(
                TensorData::new(g.clone(), [n, 2 * c, h, w]),
                &FlexDevice,
            );
            let grads = (y.clone() * gt).sum().backward();
            [
                bits(y.inner()),
                bits(a.grad(&grads).unwrap()),
                bits(b.grad(&grads).unwrap()),
            ]
        };
        let (ours, burns) = (run(true), run(false));
        for (what, (o, b)) in ["values", "gradient of a", "gradient of b"]
            .iter()
            .zip(ours.iter().zip(&burns))
        {
            let differ = o.iter().zip(b).filter(|(o, b)| o != b).count();
            assert!(
                o.len() == b.len() && differ == 0,
                "{what}: {differ} of {} values differ",
                b.len()
            );
        }
    }

    /// The values and the input gradient of [`max_pool`] on [`Fast`] are those of the same
    /// kernel through `Dispatch` (a gather, whose gradient burn computes), with ties, padding,
    /// strides and dilations, for a gradient that differs at every output.
    #[test]
    fn max_pool_gradient_matches_the_gather_through_dispatch() {
        let (n, c, h, w) = (2, 3, 9, 11);
        // Values from a small set, so that windows often tie.
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 13) as f32)
            .collect();
        for g in max_pool_cpu::test_geometries::all([h, w]) {
            let out = g.out;
            let dy: Vec<f32> = (0..n * c * out[0] * out[1])
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let dy_shape = [n, c, out[0], out[1]];
            // Ours, on Fast.
            let xf =
                Tensor::<Fast, 4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &FlexDevice)
                    .require_grad();
            let yf = max_pool(&xf, &g).expect("finite windows");
            let gf =
                Tensor::<Fast, 4>::from_data(TensorData::new(dy.clone(), dy_shape), &FlexDevice);
            let grads = (yf.clone() * gf).sum().backward();
            let dxf: Vec<f32> = xf.grad(&grads).unwrap().into_data().to_vec().unwrap();
            // The gather through Dispatch.
            let ad = crate::Device::cpu().autodiff();
            let xd =
                Tensor::<Dispatch, 4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &ad)
                    .require_grad();
            let yd = max_pool_cpu::max_pool(&xd, &g).expect("finite windows");
            let gd = Tensor::<Dispatch, 4>::from_data(TensorData::new(dy, dy_shape), &ad);
            let grads = (yd.clone() * gd).sum().backward();
            let dxd: Vec<f32> = xd.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let yf: Vec<f32> = yf.inner().into_data().to_vec().unwrap();
            let yd: Vec<f32> = yd.inner().into_data().to_vec().unwrap();
            assert_eq!(yf, yd, "{g:?}: values");
            // Overlapping windows add several gradients into one input, maybe in another order.
            let close = dxf.iter().zip(&dxd).all(|(a, b)| (a - b).abs() <= 1e-5);
            assert!(close && dxf.len() == dxd.len(), "{g:?}: input gradients");
            assert!(dxf.iter().any(|&v| v != 0.0), "{g:?}: some gradient");
        }
    }

    /// One convolution of [`conv2d_matches_burns_conv`] and [`depthwise2d_matches_burns_grouped_conv`]:
    /// images, channels in, channels out (per input channel, for a depthwise one), image and
    /// filter size, stride, padding, dilation, bias.
    type ConvCase = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        bool,
    );

    /// One of our convolutions on [`Fast`].
    type ConvOp = fn(
        &Tensor<Fast, 4>,
        &Tensor<Fast, 4>,
        Option<&Tensor<Fast, 1>>,
        &ConvOptions<2>,
    ) -> Option<Tensor<Fast, 4>>;

    /// Checks that `ours` gives the values and input gradient of burn's `conv2d` on the same
    /// backend for each case, `depthwise` or with one group.
    fn matches_burns_conv(ours: ConvOp, cases: &[ConvCase], depthwise: bool) {
        let values = |len: usize, seed: f32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as f32 + seed) * 0.731).sin())
                .collect()
        };
        for (case, &(n, c, co, [h, w], [kh, kw], stride, pad, dil, with_bias)) in
            cases.iter().enumerate()
        {
            let (co, ci, groups) = if depthwise {
                (c * co, 1, c)
            } else {
                (co, c, 1)
            };
            let o = ConvOptions::new(stride, pad, dil, groups);
            let x = values(n * c * h * w, 0.0);
            let wt = values(co * ci * kh * kw, 11.0);
            let b = values(co, 23.0);
            let run = |by_us: bool| {
                let d = &FlexDevice;
                let x = Tensor::<Fast, 4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), d)
                    .require_grad();
                let f =
                    Tensor::<Fast, 4>::from_data(TensorData::new(wt.clone(), [co, ci, kh, kw]), d);
                let bias = with_bias.then(|| Tensor::<Fast, 1>::from_data(b.as_slice(), d));
                let y = if by_us {
                    ours(&x, &f, bias.as_ref(), &o).expect("our op applies")
                } else {
                    burn::tensor::module::conv2d(x.clone(), f, bias, o.clone())
                };
                let dy = values(y.dims().iter().product(), 5.0);
                let dy = Tensor::<Fast, 4>::from_data(TensorData::new(dy, y.dims()), d);
                let grads = (y.clone() * dy).sum().backward();
                let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
                let dims = y.dims();
                let y: Vec<f32> = y.inner().into_data().to_vec().unwrap();
                (dims, y, dx)
            };
            let (dims, y, dx) = run(true);
            let (dims_burn, y_burn, dx_burn) = run(false);
            assert_eq!(dims, dims_burn, "case {case}: shape");
            // Sums of up to 42 products, in another order.
            let far = |a: &[f32], b: &[f32]| {
                a.len() != b.len() || a.iter().zip(b).any(|(a, b)| (a - b).abs() > 1e-4)
            };
            assert!(!far(&y, &y_burn), "case {case}: values");
            assert!(!far(&dx, &dx_burn), "case {case}: input gradients");
            assert!(dx.iter().any(|&v| v != 0.0), "case {case}: some gradient");
        }
    }

    /// [`conv2d`] on [`Fast`] gives the values and input gradient of burn's `conv2d` on the same
    /// backend, for filters from 1×1 to 7×7 (and as large as the image), with and without
    /// padding and bias, at strides 1 to 3 and dilation 2, on non-square images; and leaves
    /// grouped convolutions to burn.
    #[test]
    fn conv2d_matches_burns_conv() {
        let cases: [ConvCase; 9] = [
            (3, 3, 4, [9, 11], [3, 3], [1, 1], [1, 1], [1, 1], true),
            (3, 2, 3, [8, 7], [5, 5], [1, 1], [2, 2], [1, 1], false),
            (3, 3, 5, [13, 12], [7, 7], [2, 2], [3, 3], [1, 1], true),
            (3, 4, 6, [6, 5], [1, 1], [1, 1], [0, 0], [1, 1], true),
            (3, 4, 2, [7, 9], [1, 1], [2, 2], [0, 0], [1, 1], false),
            (3, 2, 3, [10, 9], [3, 3], [2, 3], [0, 1], [2, 2], true),
            (3, 3, 2, [9, 10], [3, 2], [3, 1], [2, 0], [1, 2], true),
            (3, 2, 2, [5, 5], [3, 3], [1, 1], [4, 4], [1, 1], false),
            (3, 1, 1, [4, 6], [4, 6], [1, 1], [0, 0], [1, 1], true),
        ];
        matches_burns_conv(conv2d, &cases, false);
        // A grouped convolution is burn's.
        let d = &FlexDevice;
        let x = Tensor::<Fast, 4>::zeros([1, 4, 5, 5], d);
        let f = Tensor::<Fast, 4>::zeros([4, 2, 3, 3], d);
        assert!(conv2d(&x, &f, None, &ConvOptions::new([1, 1], [1, 1], [1, 1], 2)).is_none());
    }

    /// [`depthwise2d`] on [`Fast`] gives the values and input gradient of burn's grouped
    /// `conv2d` on the same backend: 3×3 and 5×5 filters (EfficientNet's), one to three outputs
    /// per channel, strides 1 to 3, padding, dilation, a filter as large as the padded image,
    /// non-square images, with and without bias; and leaves other groupings to burn.
    #[test]
    fn depthwise2d_matches_burns_grouped_conv() {
        let cases: [ConvCase; 7] = [
            (2, 5, 1, [9, 11], [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 4, 1, [14, 13], [5, 5], [2, 2], [2, 2], [1, 1], false),
            (3, 3, 2, [8, 7], [3, 3], [2, 2], [1, 1], [1, 1], true),
            (2, 3, 1, [10, 9], [3, 2], [1, 3], [2, 0], [2, 1], true),
            (1, 2, 3, [6, 5], [5, 5], [1, 1], [0, 0], [1, 1], false),
            (2, 2, 1, [4, 4], [6, 6], [1, 1], [1, 1], [1, 1], true),
            (2, 3, 1, [7, 8], [1, 1], [2, 1], [0, 0], [1, 1], true),
        ];
        matches_burns_conv(depthwise2d, &cases, true);
        // Two input channels per group, and one group: not depthwise.
        let d = &FlexDevice;
        let x = Tensor::<Fast, 4>::zeros([1, 4, 5, 5], d);
        let f = Tensor::<Fast, 4>::zeros([4, 2, 3, 3], d);
        let o = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
        assert!(depthwise2d(&x, &f, None, &o).is_none());
        let f = Tensor::<Fast, 4>::zeros([4, 4, 3, 3], d);
        let o = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        assert!(depthwise2d(&x, &f, None, &o).is_none());
    }

    /// [`lrn`] on [`Fast`] gives the values and input gradient of the LRN composed of burn's
    /// ops (through `Dispatch`, ops/norm.rs) for even and odd windows, edge channels, and the
    /// betas that take square roots or `powf`.
    #[test]
    fn lrn_matches_the_composed_op() {
        let (n, c, r) = (2, 7, 10);
        let x: Vec<f32> = (0..n * c * r)
            .map(|i| 3.0 * ((i as f32) * 0.61).sin())
            .collect();
        let g: Vec<f32> = (0..n * c * r).map(|i| ((i as f32) * 0.23).cos()).collect();
        for (size, beta) in [(5, 0.75), (4, 0.75), (3, 0.5), (1, 0.6)] {
            let p = Lrn {
                size,
                alpha: 0.3,
                beta,
                bias: 1.5,
            };
            let xf =
                Tensor::<Fast, 3>::from_data(TensorData::new(x.clone(), [n, c, r]), &FlexDevice)
                    .require_grad();
            let yf = lrn(xf.clone(), p);
            let gf =
                Tensor::<Fast, 3>::from_data(TensorData::new(g.clone(), [n, c, r]), &FlexDevice);
            let grads = (yf.clone() * gf).sum().backward();
            let dxf: Vec<f32> = xf.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let yf: Vec<f32> = yf.inner().into_data().to_vec().unwrap();
            // The composed op, run as a graph node through Dispatch.
            let ad = crate::Device::cpu().autodiff();
            let xd = crate::network::DynTensor::<Dispatch>::from_host_on(&x, &[n, c, r], &ad)
                .require_grad();
            let attrs = [
                ("size", crate::network::Attr::Int(size as i64)),
                ("alpha", crate::network::Attr::Float(p.alpha)),
                ("beta", crate::network::Attr::Float(beta)),
                ("bias", crate::network::Attr::Float(p.bias)),
            ];
            let out = crate::network::ops::testing::run_on(
                "LRN",
                13,
                &attrs,
                vec![crate::network::Value::Device(xd.clone())],
                &ad,
            )
            .unwrap();
            let crate::network::Value::Device(yd) = &out[0] else {
                panic!("LRN gave a host value")
            };
            let gd = crate::network::DynTensor::<Dispatch>::from_host_on(&g, &[n, c, r], &ad);
            let grads = (yd.to_rank::<3>().unwrap() * gd.to_rank::<3>().unwrap())
                .sum()
                .backward();
            let dxd = xd.grad(&grads).unwrap().to_vec();
            let yd = yd.to_vec();
            let close = |a: &[f32], b: &[f32]| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()))
            };
            assert!(close(&yf, &yd), "size {size}, beta {beta}: values");
            assert!(close(&dxf, &dxd), "size {size}, beta {beta}: gradients");
        }
    }
}
