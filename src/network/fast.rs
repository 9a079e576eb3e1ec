//! Ops of our own on the render loop's CPU backend ([`Fast`]: burn's autodiff over burn-flex),
//! with backward passes that go faster than what burn composes from its own ops.
//!
//! burn-autodiff's `Backward` trait is the extension point burn provides for this; burn-dispatch
//! 0.21 keeps its tensors' backend private, so these exist only on a named backend. Measured
//! with benches/feature_vis_step.rs (GoogLeNet, inception_4a, 8 units, 128 px, 2 cores; the
//! median of 7 runs of 20 steps each): 190.7 ms per step through `Dispatch`, 181.2 on [`Fast`]
//! with [`max_pool`].
//!
//! Tried and left out: a stride-1 convolution's input gradient as a forward convolution with
//! flipped weights (instead of burn-flex's single-threaded col2im) measured 188.8 ms with it
//! against 181.2 without. burn-flex's forward convolution spends more on im2col than the
//! col2im it replaces, and the render loop already keeps both cores busy with parts of the batch.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{TensorData, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::backend::Fast;
use super::ops::max_pool_cpu::{self, Geometry};

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
        let contiguous;
        let gs: &[f32] = match grad.as_slice::<f32>() {
            Some(s) => s,
            None => {
                contiguous = grad.to_contiguous();
                contiguous
                    .as_slice::<f32>()
                    .expect("a contiguous f32 tensor")
            }
        };
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
        for (kernel, strides, dilations, begin) in [
            ([3, 3], [1, 1], [1, 1], [1, 1]),
            ([3, 3], [2, 2], [1, 1], [0, 0]),
            ([2, 3], [2, 3], [1, 1], [1, 0]),
            ([3, 2], [1, 2], [2, 2], [2, 1]),
        ] {
            let out = [0, 1].map(|i| {
                let span = (kernel[i] - 1) * dilations[i] + 1;
                ([h, w][i] + 2 * begin[i] - span) / strides[i] + 1
            });
            let g = Geometry {
                kernel,
                strides,
                dilations,
                begin,
                out,
            };
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
}
