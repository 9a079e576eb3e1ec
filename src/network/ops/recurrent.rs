//! The recurrent layers LSTM, GRU and RNN, forward, reverse or both ways over a sequence.
//!
//! Vision networks meet them in Sequencer2D (an LSTM along rows and one along columns in place
//! of attention) and in text recognizers (a CNN, then a bidirectional LSTM or GRU). One driver
//! reads what the three share (layout, directions, weights, biases, initial state), projects
//! every step's input at once, then runs the cells step by step with burn's ops: one matrix
//! product with the recurrent weights per step, so gradients flow through time.

use burn::prelude::*;
use burn::tensor::activation;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

/// Which layer: its gate count and default activations are ONNX's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Gates input, output, forget, cell; activations f, g, h.
    Lstm,
    /// Gates update, reset, hidden; activations f, g.
    Gru,
    /// One gate; activation f.
    Rnn,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }

    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Rnn => &["Tanh"],
        }
    }
}

/// An activation function, from the `activations` attribute.
#[derive(Clone, Copy)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
}

impl Act {
    fn apply<B: Backend>(self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Act::Sigmoid => activation::sigmoid(x),
            Act::Tanh => x.tanh(),
            Act::Relu => activation::relu(x),
        }
    }
}

/// LSTM (opsets 7–22; 14 added `layout`): inputs X, W, R, and optionally B, sequence_lens,
/// initial_h, initial_c and the peepholes P; outputs Y, Y_h and Y_c.
pub fn lstm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    recurrent(ctx, Cell::Lstm)
}

/// GRU (opsets 7–22): inputs X, W, R, and optionally B, sequence_lens and initial_h; outputs Y
/// and Y_h. `linear_before_reset` (PyTorch's GRU exports set it) applies the reset gate after
/// the recurrent product.
pub fn gru<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    recurrent(ctx, Cell::Gru)
}

/// RNN (opsets 7–22): `H = f(X·Wᵀ + H·Rᵀ + biases)`; outputs Y and Y_h.
pub fn rnn<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    recurrent(ctx, Cell::Rnn)
}

/// The shared driver. Sequences shorter than the input (sequence_lens) and activations other
/// than Sigmoid, Tanh and Relu are refused with an error naming the node.
fn recurrent<B: Backend>(ctx: &Ctx<B>, cell: Cell) -> Result<Vec<Value<B>>> {
    let node = ctx.node;
    let batch_first = node.int("layout", 0)? != 0;
    let directions: &[bool] = match node.string("direction", "forward")?.as_str() {
        "forward" => &[false],
        "reverse" => &[true],
        "bidirectional" => &[false, true],
        other => {
            return Err(ctx.error(format!(
                "direction {other:?} is not forward, reverse or bidirectional"
            )))
        }
    };
    let dirs = directions.len();
    let x = ctx.float(0)?.to_rank::<3>()?;
    let x = if batch_first { x.swap_dims(0, 1) } else { x };
    let [steps, batch, features] = x.dims();
    let r = ctx.float(2)?;
    let hidden = match node.int("hidden_size", 0)? {
        0 => r.dims().last().copied().unwrap_or(0),
        h => usize::try_from(h).map_err(|_| ctx.error(format!("hidden_size {h} is negative")))?,
    };
    let gates = hidden
        .checked_mul(cell.gates())
        .ok_or_else(|| ctx.error(format!("hidden_size {hidden} overflows")))?;
    let expect = |i: usize, what: &str, want: &[usize]| -> Result<()> {
        let got = ctx.dims(i)?;
        if got != want {
            return Err(ctx.error(format!("{what} {got:?} is not {want:?}")));
        }
        Ok(())
    };
    expect(1, "W", &[dirs, gates, features])?;
    expect(2, "R", &[dirs, gates, hidden])?;
    if steps == 0 || batch == 0 || hidden == 0 {
        return Err(ctx.error(format!(
            "input [{steps}, {batch}, {features}] or hidden_size {hidden} is empty"
        )));
    }
    ctx.fits("output", &[steps, dirs, batch, hidden], 4)?;
    ctx.fits("input projections", &[steps, batch, gates], 4)?;
    if ctx.has(4) {
        let lens = ctx.ints(4)?;
        if lens.iter().any(|&l| l != steps as i64) {
            return Err(ctx.error(format!(
                "sequence_lens {lens:?} shorter than the {steps} steps are not supported"
            )));
        }
    }
    let acts = activations(ctx, cell, dirs)?;
    let clip = node.float("clip", f32::INFINITY)?;
    if clip.is_nan() || clip <= 0.0 {
        return Err(ctx.error(format!("clip {clip} must be positive")));
    }
    let couple = cell == Cell::Lstm && node.int("input_forget", 0)? != 0;
    let after_product = cell == Cell::Gru && node.int("linear_before_reset", 0)? != 0;
    let state = |i: usize, what: &str| -> Result<Option<Tensor<B, 3>>> {
        if !ctx.has(i) {
            return Ok(None);
        }
        let want = if batch_first {
            [batch, dirs, hidden]
        } else {
            [dirs, batch, hidden]
        };
        expect(i, what, &want)?;
        let s = ctx.float(i)?.to_rank::<3>()?;
        Ok(Some(if batch_first { s.swap_dims(0, 1) } else { s }))
    };
    let h0 = state(5, "initial_h")?;
    let lstm = cell == Cell::Lstm;
    let c0 = if lstm { state(6, "initial_c")? } else { None };
    let bias = if ctx.has(3) {
        expect(3, "B", &[dirs, 2 * gates])?;
        Some(ctx.float(3)?.to_rank::<2>()?)
    } else {
        None
    };
    let peep = if lstm && ctx.has(7) {
        expect(7, "P", &[dirs, 3 * hidden])?;
        Some(ctx.float(7)?.to_rank::<2>()?)
    } else {
        None
    };
    let (w, r) = (ctx.float(1)?.to_rank::<3>()?, r.to_rank::<3>()?);
    let device = x.device();
    let flat = x.reshape([steps * batch, features]);
    let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for (d, &reverse) in directions.iter().enumerate() {
        let pick3 = |t: &Tensor<B, 3>| t.clone().narrow(0, d, 1).squeeze_dim::<2>(0);
        let pick2 = |t: &Tensor<B, 2>| t.clone().narrow(0, d, 1);
        let (wd, rd) = (pick3(&w), pick3(&r).transpose());
        // Every step's input projection with its bias: [steps, batch, gates]; the recurrent
        // bias goes with the recurrent product (GRU's reset gate may come between).
        let mut proj = flat.clone().matmul(wd.transpose());
        let mut rbias = None;
        if let Some(b) = &bias {
            let b = pick2(b);
            proj = proj + b.clone().narrow(1, 0, gates);
            rbias = Some(b.narrow(1, gates, gates));
        }
        let proj = proj.reshape([steps, batch, gates]);
        let zeros = || Tensor::zeros([batch, hidden], &device);
        let mut h = h0.as_ref().map_or_else(zeros, &pick3);
        let mut c = c0.as_ref().map_or_else(zeros, &pick3);
        let peep = peep.as_ref().map(|p| {
            let p = pick2(p);
            [0, 1, 2].map(|k| p.clone().narrow(1, k * hidden, hidden))
        });
        let act = &acts[d];
        let clipped = |z: Tensor<B, 2>| {
            if clip.is_finite() {
                z.clamp(-clip, clip)
            } else {
                z
            }
        };
        let mut out = vec![None; steps];
        let order: Vec<usize> = if reverse {
            (0..steps).rev().collect()
        } else {
            (0..steps).collect()
        };
        for t in order {
            let xt = proj.clone().narrow(0, t, 1).squeeze_dim::<2>(0);
            let mut rec = h.clone().matmul(rd.clone());
            if let Some(b) = &rbias {
                rec = rec + b.clone();
            }
            let part = |z: &Tensor<B, 2>, k: usize| z.clone().narrow(1, k * hidden, hidden);
            h = match cell {
                Cell::Rnn => act[0].apply(clipped(xt + rec)),
                Cell::Lstm => {
                    let z = clipped(xt + rec);
                    let (mut zi, mut zo, mut zf, zc) =
                        (part(&z, 0), part(&z, 1), part(&z, 2), part(&z, 3));
                    if let Some([pi, _, pf]) = &peep {
                        zi = zi + c.clone() * pi.clone();
                        zf = zf + c.clone() * pf.clone();
                    }
                    let i = act[0].apply(zi);
                    let forget = if couple {
                        i.clone().neg().add_scalar(1.0)
                    } else {
                        act[0].apply(zf)
                    };
                    c = forget * c + i * act[1].apply(zc);
                    // The output gate's peephole reads the new cell.
                    if let Some([_, po, _]) = &peep {
                        zo = zo + c.clone() * po.clone();
                    }
                    act[0].apply(zo) * act[2].apply(c.clone())
                }
                Cell::Gru => {
                    let update = act[0].apply(clipped(part(&xt, 0) + part(&rec, 0)));
                    let reset = act[0].apply(clipped(part(&xt, 1) + part(&rec, 1)));
                    let candidate = if after_product {
                        part(&xt, 2) + reset * part(&rec, 2)
                    } else {
                        let rh = rd.clone().narrow(1, 2 * hidden, hidden);
                        let mut z = part(&xt, 2) + (reset * h.clone()).matmul(rh);
                        if let Some(b) = &rbias {
                            z = z + b.clone().narrow(1, 2 * hidden, hidden);
                        }
                        z
                    };
                    let candidate = act[1].apply(clipped(candidate));
                    update.clone().neg().add_scalar(1.0) * candidate + update * h
                }
            };
            out[t] = Some(h.clone());
        }
        let out: Vec<Tensor<B, 2>> = out
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        ys.push(Tensor::stack::<3>(out, 0));
        hs.push(h);
        cs.push(c);
    }
    // Y: [steps, dirs, batch, hidden]; Y_h and Y_c: [dirs, batch, hidden] (batch first with
    // layout 1).
    let y = Tensor::stack::<4>(ys, 1);
    let (yh, yc) = (Tensor::stack::<3>(hs, 0), Tensor::stack::<3>(cs, 0));
    let (y, yh, yc) = if batch_first {
        (
            y.permute([2, 0, 1, 3]),
            yh.swap_dims(0, 1),
            yc.swap_dims(0, 1),
        )
    } else {
        (y, yh, yc)
    };
    let mut outs = vec![
        Value::Device(DynTensor::new(y)),
        Value::Device(DynTensor::new(yh)),
    ];
    if lstm {
        outs.push(Value::Device(DynTensor::new(yc)));
    }
    Ok(outs)
}

/// The activations of each direction (3 for LSTM, 2 for GRU, 1 for RNN).
fn activations<B: Backend>(ctx: &Ctx<B>, cell: Cell, dirs: usize) -> Result<Vec<Vec<Act>>> {
    let per = cell.default_activations();
    let names = ctx
        .node
        .strings("activations")?
        .unwrap_or_else(|| per.repeat(dirs).into_iter().map(String::from).collect());
    if names.len() != per.len() * dirs {
        return Err(ctx.error(format!(
            "activations {names:?} are not {} for each of {dirs} directions",
            per.len()
        )));
    }
    let act = |name: &String| -> Result<Act> {
        Ok(match name.as_str() {
            "Sigmoid" => Act::Sigmoid,
            "Tanh" => Act::Tanh,
            "Relu" => Act::Relu,
            other => {
                return Err(ctx.error(format!(
                    "activation {other:?} is not supported (Sigmoid, Tanh and Relu are)"
                )))
            }
        })
    };
    names
        .chunks(per.len())
        .map(|c| c.iter().map(act).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::run_on;
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Value};

    /// One step, one unit: c = σ(a_i·x)·tanh(a_c·x), h = σ(a_o·x)·tanh(c).
    fn by_hand(x: f32) -> f32 {
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        let c = s(0.5 * x) * (2.0 * x).tanh();
        s(-x) * c.tanh()
    }

    #[test]
    fn one_step_matches_the_equations_and_its_gradient_reaches_the_input() {
        let ad = crate::Device::cpu().autodiff();
        let x0 = 0.7;
        let x = DynTensor::from_host(&[x0], &[1, 1, 1], &ad).require_grad();
        // Gates in ONNX's order: input, output, forget, cell.
        let w = DynTensor::from_host(&[0.5, -1.0, 3.0, 2.0], &[1, 4, 1], &ad);
        let r = DynTensor::from_host(&[0.0; 4], &[1, 4, 1], &ad);
        let inputs = vec![Value::Device(x.clone()), Value::Device(w), Value::Device(r)];
        let attrs = [("hidden_size", Attr::Int(1))];
        let outs = run_on("LSTM", 14, &attrs, inputs, &ad).unwrap();
        let Value::Device(y) = &outs[0] else {
            panic!("LSTM runs on the device");
        };
        assert_eq!(y.dims(), [1, 1, 1, 1]);
        assert!((y.to_vec()[0] - by_hand(x0)).abs() < 1e-6);
        assert_eq!(
            outs[1].to_host().to_f32(),
            y.to_vec(),
            "Y_h is the last step of Y"
        );
        let g = x.grad(&y.backward()).unwrap().to_vec()[0];
        let numeric = (by_hand(x0 + 1e-3) - by_hand(x0 - 1e-3)) / 2e-3;
        assert!((g - numeric).abs() < 1e-3, "{g} vs {numeric}");
    }
}
