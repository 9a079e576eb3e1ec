//! LSTM: the long short-term memory layer, forward, reverse or both ways over a sequence.
//!
//! Vision networks meet it in Sequencer2D (an LSTM along rows and one along columns in place of
//! attention) and in text recognizers (a CNN, then a bidirectional LSTM). The sequence is run
//! step by step with burn's ops: the input projections of all steps at once, then one matrix
//! product with the recurrent weights per step, so gradients flow through time.

use burn::prelude::*;
use burn::tensor::activation;

use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::DynTensor;

/// A gate's activation function, from the `activations` attribute.
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
/// initial_h, initial_c and the peepholes P; outputs Y, Y_h and Y_c. Gates in ONNX's order
/// (input, output, forget, cell). Sequences shorter than the input (sequence_lens) and
/// activations other than Sigmoid, Tanh and Relu are refused with an error naming the node.
pub fn lstm<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
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
    let w = ctx.float(1)?;
    let r = ctx.float(2)?;
    let hidden = match node.int("hidden_size", 0)? {
        0 => r.dims().last().copied().unwrap_or(0),
        h => usize::try_from(h).map_err(|_| ctx.error(format!("hidden_size {h} is negative")))?,
    };
    let gates = hidden
        .checked_mul(4)
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
    let acts = activations(ctx, dirs)?;
    let clip = node.float("clip", f32::INFINITY)?;
    let couple = node.int("input_forget", 0)? != 0;
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
    let (h0, c0) = (state(5, "initial_h")?, state(6, "initial_c")?);
    let bias = if ctx.has(3) {
        expect(3, "B", &[dirs, 2 * gates])?;
        Some(ctx.float(3)?.to_rank::<2>()?)
    } else {
        None
    };
    let peep = if ctx.has(7) {
        expect(7, "P", &[dirs, 3 * hidden])?;
        Some(ctx.float(7)?.to_rank::<2>()?)
    } else {
        None
    };
    let (w, r) = (w.to_rank::<3>()?, r.to_rank::<3>()?);
    let device = x.device();
    let flat = x.reshape([steps * batch, features]);
    let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for (d, &reverse) in directions.iter().enumerate() {
        let pick3 = |t: &Tensor<B, 3>| t.clone().narrow(0, d, 1).squeeze_dim::<2>(0);
        let pick2 = |t: &Tensor<B, 2>| t.clone().narrow(0, d, 1);
        let (wd, rd) = (pick3(&w), pick3(&r).transpose());
        // Every step's input projection, with both biases: [steps, batch, 4·hidden].
        let mut proj = flat.clone().matmul(wd.transpose());
        if let Some(b) = &bias {
            let b = pick2(b);
            let sum = b.clone().narrow(1, 0, gates) + b.narrow(1, gates, gates);
            proj = proj + sum;
        }
        let proj = proj.reshape([steps, batch, gates]);
        let mut h = h0
            .as_ref()
            .map_or_else(|| Tensor::zeros([batch, hidden], &device), &pick3);
        let mut c = c0
            .as_ref()
            .map_or_else(|| Tensor::zeros([batch, hidden], &device), &pick3);
        let peep = peep.as_ref().map(|p| {
            let p = pick2(p);
            [0, 1, 2].map(|k| p.clone().narrow(1, k * hidden, hidden))
        });
        let [f, g, hact] = acts[d];
        let mut out = vec![None; steps];
        let order: Vec<usize> = if reverse {
            (0..steps).rev().collect()
        } else {
            (0..steps).collect()
        };
        for t in order {
            let z = proj.clone().narrow(0, t, 1).squeeze_dim::<2>(0) + h.matmul(rd.clone());
            let z = if clip.is_finite() {
                z.clamp(-clip, clip)
            } else {
                z
            };
            let part = |k: usize| z.clone().narrow(1, k * hidden, hidden);
            let (mut zi, mut zo, mut zf, zc) = (part(0), part(1), part(2), part(3));
            if let Some([pi, _, pf]) = &peep {
                zi = zi + c.clone() * pi.clone();
                zf = zf + c.clone() * pf.clone();
            }
            let i = f.apply(zi);
            let forget = if couple {
                i.clone().neg().add_scalar(1.0)
            } else {
                f.apply(zf)
            };
            c = forget * c + i * g.apply(zc);
            // The output gate's peephole reads the new cell.
            if let Some([_, po, _]) = &peep {
                zo = zo + c.clone() * po.clone();
            }
            h = f.apply(zo) * hact.apply(c.clone());
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
    Ok(vec![
        Value::Device(DynTensor::new(y)),
        Value::Device(DynTensor::new(yh)),
        Value::Device(DynTensor::new(yc)),
    ])
}

/// The three activations (gates, cell input, output) of each direction.
fn activations<B: Backend>(ctx: &Ctx<B>, dirs: usize) -> Result<Vec<[Act; 3]>> {
    let names = ctx.node.strings("activations")?.unwrap_or_else(|| {
        ["Sigmoid", "Tanh", "Tanh"]
            .repeat(dirs)
            .into_iter()
            .map(String::from)
            .collect()
    });
    if names.len() != 3 * dirs {
        return Err(ctx.error(format!(
            "activations {names:?} are not 3 for each of {dirs} directions"
        )));
    }
    let act = |name: &str| -> Result<Act> {
        Ok(match name {
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
        .chunks(3)
        .map(|c| Ok([act(&c[0])?, act(&c[1])?, act(&c[2])?]))
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
