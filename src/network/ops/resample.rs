//! Linear resampling of image planes by precomputed taps (the render loop's scale and rotation,
//! technique/transform.rs), and an op for it whose backward pass is a gather.
//!
//! Each output pixel is a weighted sum of [`TAPS`] input pixels (bilinear: the four around its
//! source point). Composed of burn's ops ([`Taps::composed`]) that is a `select` of the input per
//! tap, and burn's gradient of a `select` is a scatter-add. burn's cubecl kernels run a
//! scatter-add in parallel only across the rows it does not index (the batch's planes: 24
//! threads for 8 RGB images) and in sequence along them: on an H200 that was 2.5 ms a call, 20
//! of a 66 ms GoogLeNet step (issue 20). [`gathered`] sends the gradient back as a gather
//! instead: the taps transposed on the host (for each input pixel, the output pixels that read
//! it), then one `select`, a product and a sum over the last axis, each parallel over every
//! element, on any backend. It is for GPU backends: on the CPU, burn-flex's `select` makes it
//! slower than the composed ops, which the CPU keeps ([`super::Back::resample`]).
//! burn-autodiff's `Backward` is the extension point burn offers for an op's own gradient; no
//! library we use has a resampling op with a gathered gradient.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::{TensorData, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

/// Input pixels per output pixel.
pub const TAPS: usize = 4;

/// A linear map from `input`-sized planes to `output`-sized ones: output pixel `p` (row-major)
/// is `Σ_k weight[p·TAPS + k] · input[index[p·TAPS + k]]`, with input pixels as flat positions
/// `y · w + x`. A tap that reads nothing has weight 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Taps {
    pub input: [usize; 2],
    pub output: [usize; 2],
    pub index: Vec<i32>,
    pub weight: Vec<f32>,
}

impl Taps {
    /// The map applied to `x` `[N, C, H, W]` with burn's ops, one `select` per tap, on any
    /// backend (burn's gradient: a scatter-add per tap).
    pub fn composed<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let [ho, wo] = self.output;
        let device = x.device();
        let flat = x.reshape([n * c, h * w]);
        let mut out: Option<Tensor<B, 2>> = None;
        for k in 0..TAPS {
            let tap = |v: &[i32]| v.iter().skip(k).step_by(TAPS).copied().collect::<Vec<_>>();
            let idx = TensorData::new(tap(&self.index), [ho * wo]);
            let wts: Vec<f32> = self.weight.iter().skip(k).step_by(TAPS).copied().collect();
            let idx = Tensor::<B, 1, Int>::from_data(idx, &device);
            let wts = Tensor::<B, 2>::from_data(TensorData::new(wts, [1, ho * wo]), &device);
            let term = flat.clone().select(1, idx) * wts;
            out = Some(match out {
                None => term,
                Some(acc) => acc + term,
            });
        }
        out.expect("taps").reshape([n, c, ho, wo])
    }

    /// The transposed map (output planes back to input ones), as taps: for each input pixel,
    /// the output pixels that read it and their weights, padded with weight-0 taps to the most
    /// any input pixel has. Returns (index, weight, taps per pixel).
    fn transposed(&self) -> (Vec<i32>, Vec<f32>, usize) {
        let [h, w] = self.input;
        let mut count = vec![0usize; h * w];
        for (&q, &wt) in self.index.iter().zip(&self.weight) {
            if wt != 0.0 {
                count[q as usize] += 1;
            }
        }
        let slots = count.iter().copied().max().unwrap_or(0).max(1);
        let mut index = vec![0i32; h * w * slots];
        let mut weight = vec![0.0f32; h * w * slots];
        count.fill(0);
        for (i, (&q, &wt)) in self.index.iter().zip(&self.weight).enumerate() {
            if wt != 0.0 {
                let q = q as usize;
                let at = q * slots + count[q];
                index[at] = (i / TAPS) as i32;
                weight[at] = wt;
                count[q] += 1;
            }
        }
        (index, weight, slots)
    }
}

/// `Σ_k weight[p·taps + k] · x[index[p·taps + k]]` for every plane of `x` and each output pixel
/// `p` of an `out` plane: one `select`, a product and a sum over the last axis.
fn gather_sum<B: Backend>(
    x: Tensor<B, 4>,
    index: &[i32],
    weight: &[f32],
    taps: usize,
    out: [usize; 2],
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let p = out[0] * out[1];
    let device = x.device();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(index.to_vec(), [p * taps]), &device);
    let wts = Tensor::<B, 3>::from_data(TensorData::new(weight.to_vec(), [1, p, taps]), &device);
    (x.reshape([n * c, h * w])
        .select(1, idx)
        .reshape([n * c, p, taps])
        * wts)
        .sum_dim(2)
        .reshape([n, c, out[0], out[1]])
}

/// [`Taps::composed`] as one op of burn's autodiff over `B`, whose gradient is a gather of the
/// output's gradient by the transposed taps.
pub fn gathered<B: Backend>(x: &Tensor<Autodiff<B>, 4>, taps: &Taps) -> Tensor<Autodiff<B>, 4> {
    let dims = x.dims();
    let x = x.clone().into_primitive().tensor();
    let inner = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let y = gather_sum(inner, &taps.index, &taps.weight, TAPS, taps.output);
    let y = y.into_primitive().tensor();
    let out = match GatheredBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Arc::new((taps.clone(), dims)), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The backward step of [`gathered`]: state = (the taps, the input's shape).
#[derive(Debug)]
struct GatheredBackward;

impl<B: Backend> Backward<B, 1> for GatheredBackward {
    type State = Arc<(Taps, [usize; 4])>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let (taps, [n, c, h, w]) = &*ops.state;
        let (index, weight, slots) = taps.transposed();
        let g = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(grad));
        let g = g.reshape([*n, *c, taps.output[0], taps.output[1]]);
        let dx = gather_sum(g, &index, &weight, slots, [*h, *w]);
        grads.register::<B>(node.id, dx.into_primitive().tensor());
    }
}
