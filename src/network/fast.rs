//! Ops of our own on the render loop's CPU backend ([`Fast`]: burn's autodiff over burn-flex),
//! with backward passes that go faster than what burn composes from its own ops.
//!
//! burn-autodiff's `Backward` trait is the extension point burn provides for this; burn-dispatch
//! 0.21 keeps its tensors' backend private, so these exist only on a named backend. Measured
//! with benches/feature_vis_step.rs (GoogLeNet, inception_4a, 8 units, 128 px, 2 cores; the
//! median of 7 runs of 20 steps each): 190.7 ms per step through `Dispatch`, 181.2 on [`Fast`]
//! with [`max_pool`]; then 199.8 against 170.6 with [`lrn`] too.
//!
//! Tried and left out:
//! - a stride-1 convolution's input gradient as a forward convolution with flipped weights
//!   (instead of burn-flex's single-threaded col2im): 188.8 ms with it against 181.2 without.
//!   burn-flex's forward convolution spends more on im2col than the col2im it replaces, and the
//!   render loop already keeps both cores busy with parts of the batch;
//! - the same for 1×1 filters only (one matrix product per image): the transposed
//!   convolution's share of the profile fell from 8.2 % to 6.7 %, within the run-to-run noise
//!   of the step time.

use std::sync::Arc;

use burn::prelude::*;
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
use super::value::{Constant, DynTensor};
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

    fn lrn(x: &Tensor<Self, 3>, p: Lrn) -> Option<Tensor<Self, 3>> {
        // An empty tensor is left to the composed op.
        (x.dims().iter().product::<usize>() > 0).then(|| lrn(x.clone(), p))
    }

    fn constant(c: &Constant, _autodiff: bool) -> Option<DynTensor<Self>> {
        let flex = c.flex.get_or_init(|| {
            c.device
                .as_ref()
                .map(|_| c.host().upload_to::<Flex>(&FlexDevice))
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
    let contiguous;
    let xs: &[f32] = match x.primitive.as_slice::<f32>() {
        Some(s) => s,
        None => {
            contiguous = x.primitive.to_contiguous();
            contiguous.as_slice::<f32>()?
        }
    };
    let (values, argmax) = max_pool_cpu::pool_planes(xs, [h, w], g)?;
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

/// A float tensor's values, borrowed when it is contiguous.
fn contiguous_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
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
