//! Einsum (opsets 12–28) as permutes, reshapes and batched matrix products on the device.
//!
//! Supported: any number of operands, explicit (`bhqd,bhkd->bhqk`) and implicit (`ij,jk`)
//! outputs, and `...` (numpy's right-aligned, broadcasting batch axes). Operands are contracted
//! pairwise from the left: the labels both share and a later term needs become the batch axes, the
//! labels both share and nothing later needs are summed by the product, and a label only one of
//! them has is summed first unless a later term needs it. Refused, with an error naming the node:
//! a label repeated within one term (a diagonal), which exporters do not emit for vision models.

use super::shape::permute;
use super::{Ctx, Value};
use crate::error::Result;
use crate::network::value::{storage_shape, DynTensor};
use burn::prelude::Backend;

/// An axis label: a letter's code, or `ELLIPSIS + k` for the k-th axis `...` stands for
/// (counted over the widest `...`, so that narrower ones right-align onto it).
type Label = u32;
const ELLIPSIS: Label = 1 << 16;

/// A device tensor with one label per axis.
struct Term<B: Backend> {
    t: DynTensor<B>,
    labels: Vec<Label>,
}

/// The parsed equation: each input's labels and the output's.
struct Equation {
    inputs: Vec<Vec<Label>>,
    output: Vec<Label>,
}

/// Splits a term into letters and at most one `...`: (letters before it, after it), or just the
/// letters when there is none.
fn split_term(term: &str) -> std::result::Result<(Vec<Label>, Option<Vec<Label>>), String> {
    let letters = |s: &str| -> std::result::Result<Vec<Label>, String> {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    Ok(c as Label)
                } else {
                    Err(format!("{c:?} in term {term:?} is not a letter or ..."))
                }
            })
            .collect()
    };
    match term.split_once("...") {
        None => Ok((letters(term)?, None)),
        Some((a, b)) => Ok((letters(a)?, Some(letters(b)?))),
    }
}

fn label_name(l: Label) -> String {
    if l >= ELLIPSIS {
        "...".into()
    } else {
        char::from_u32(l).map_or_else(|| "?".into(), String::from)
    }
}

fn parse(equation: &str, ranks: &[usize]) -> std::result::Result<Equation, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!(
            "the equation has {} input terms for {} inputs",
            terms.len(),
            ranks.len()
        ));
    }
    let split: Vec<_> = terms
        .iter()
        .map(|t| split_term(t))
        .collect::<std::result::Result<_, _>>()?;
    // How many axes each term's `...` stands for, and the widest.
    let mut widths = Vec::with_capacity(ranks.len());
    for (k, ((before, after), &rank)) in split.iter().zip(ranks).enumerate() {
        let named = before.len() + after.as_ref().map_or(0, Vec::len);
        let width = match after {
            None if named == rank => 0,
            Some(_) if named <= rank => rank - named,
            _ => {
                return Err(format!(
                    "term {:?} does not fit input {k} of rank {rank}",
                    terms[k]
                ))
            }
        };
        widths.push(width);
    }
    let widest = widths.iter().copied().max().unwrap_or(0);
    let ellipsis = |width: usize| (widest - width..widest).map(|k| ELLIPSIS + k as Label);
    let mut inputs = Vec::with_capacity(ranks.len());
    for (k, (before, after)) in split.into_iter().enumerate() {
        let mut labels = before;
        if let Some(after) = after {
            labels.extend(ellipsis(widths[k]));
            labels.extend(after);
        }
        if let Some(l) = repeated(&labels) {
            return Err(format!(
                "index {} repeats in term {:?} (a diagonal), which is not supported",
                label_name(l),
                terms[k]
            ));
        }
        inputs.push(labels);
    }
    let output = match rhs {
        Some(r) => {
            let (before, after) = split_term(r)?;
            let mut labels = before;
            if let Some(after) = after {
                labels.extend(ellipsis(widest));
                labels.extend(after);
            }
            if let Some(l) = repeated(&labels) {
                return Err(format!("index {} repeats in the output", label_name(l)));
            }
            if let Some(&l) = labels
                .iter()
                .find(|l| !inputs.iter().any(|t| t.contains(l)))
            {
                return Err(format!("output index {} is in no input", label_name(l)));
            }
            labels
        }
        // Implicit output: the `...` axes, then the letters that occur once, in ASCII order.
        None => {
            let all: Vec<Label> = inputs.iter().flatten().copied().collect();
            let mut once: Vec<Label> = all
                .iter()
                .copied()
                .filter(|&l| l < ELLIPSIS && all.iter().filter(|&&m| m == l).count() == 1)
                .collect();
            once.sort_unstable();
            ellipsis(widest).chain(once).collect()
        }
    };
    Ok(Equation { inputs, output })
}

fn repeated(labels: &[Label]) -> Option<Label> {
    labels
        .iter()
        .enumerate()
        .find(|(i, l)| labels[..*i].contains(l))
        .map(|(_, &l)| l)
}

/// Sums out the axes of `term` whose labels `keep` rejects.
fn sum_out<B: Backend>(term: Term<B>, keep: impl Fn(Label) -> bool) -> Term<B> {
    let Term { t, labels } = term;
    let gone: Vec<usize> = (0..labels.len()).filter(|&a| !keep(labels[a])).collect();
    if gone.is_empty() {
        return Term { t, labels };
    }
    let dims = t.dims();
    let rank = t.rank();
    let axes: Vec<usize> = gone.iter().map(|&a| t.storage_axis(a)).collect();
    let s = axes.iter().fold(t.into_storage(), |s, &a| s.sum_dim(a));
    let kept: Vec<usize> = (0..labels.len()).filter(|a| !gone.contains(a)).collect();
    let shape: Vec<usize> = kept.iter().map(|&a| dims[a]).collect();
    Term {
        t: DynTensor::from_storage(s, rank).reshape(&shape),
        labels: kept.iter().map(|&a| labels[a]).collect(),
    }
}

/// `term` with its axes in the order of `labels` (each of which it has), each of size `size(l)`
/// (an axis of size 1 is broadcast), as one tensor of shape `groups` (products of consecutive
/// runs of `labels`).
fn arrange<B: Backend>(
    term: Term<B>,
    labels: &[Label],
    size: &impl Fn(Label) -> usize,
    groups: &[usize],
) -> DynTensor<B> {
    let perm: Vec<usize> = labels
        .iter()
        .map(|l| {
            term.labels
                .iter()
                .position(|m| m == l)
                .expect("label of the term")
        })
        .collect();
    let t = permute(term.t, &perm);
    let full: Vec<usize> = labels.iter().map(|&l| size(l)).collect();
    let t = if t.dims() == full {
        t
    } else {
        let rank = full.len();
        DynTensor::from_storage(t.into_storage().expand(storage_shape(&full)), rank)
    };
    t.reshape(groups)
}

/// Einsum (opsets 12–28): see the module header for what is supported.
pub fn einsum<B: Backend>(ctx: &Ctx<B>) -> Result<Vec<Value<B>>> {
    let equation = ctx.node.string("equation", "")?;
    let n = ctx.arity();
    let dims: Vec<Vec<usize>> = (0..n).map(|i| ctx.dims(i)).collect::<Result<_>>()?;
    let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
    let eq =
        parse(&equation, &ranks).map_err(|e| ctx.error(format!("equation {equation:?}: {e}")))?;
    // Each label's size: equal in every operand, or 1 there (broadcast).
    let mut sizes: Vec<(Label, usize)> = Vec::new();
    for (k, labels) in eq.inputs.iter().enumerate() {
        for (a, &l) in labels.iter().enumerate() {
            let d = dims[k][a];
            match sizes.iter_mut().find(|(m, _)| *m == l) {
                None => sizes.push((l, d)),
                Some((_, s)) if *s == d || d == 1 => {}
                Some((_, s)) if *s == 1 => *s = d,
                Some((_, s)) => {
                    return Err(ctx.error(format!(
                        "index {} is {s} in one operand and {d} in input {k}",
                        label_name(l)
                    )))
                }
            }
        }
    }
    if sizes.iter().any(|&(_, s)| s == 0) || dims.iter().any(|d| d.contains(&0)) {
        return Err(ctx.error("empty operands are not supported"));
    }
    let size = |l: Label| sizes.iter().find(|(m, _)| *m == l).map_or(1, |&(_, s)| s);
    let out_shape: Vec<usize> = eq.output.iter().map(|&l| size(l)).collect();
    ctx.check_rank("output", &out_shape)?;
    ctx.fits("output", &out_shape, 4)?;
    let mut terms: Vec<Term<B>> = Vec::with_capacity(n);
    for (i, labels) in eq.inputs.iter().enumerate() {
        terms.push(Term {
            t: ctx.float(i)?,
            labels: labels.clone(),
        });
    }
    // Whether the output or an operand not yet contracted (`rest`) needs a label.
    let needed = |rest: &[Term<B>], l: Label| {
        eq.output.contains(&l) || rest.iter().any(|t| t.labels.contains(&l))
    };
    let mut acc = terms.remove(0);
    while !terms.is_empty() {
        let b = terms.remove(0);
        // A label only one side has, and nothing later needs, is summed before the product.
        let a = sum_out(acc, |l| b.labels.contains(&l) || needed(&terms, l));
        let b = sum_out(b, |l| a.labels.contains(&l) || needed(&terms, l));
        let shared = |l: &Label| b.labels.contains(l);
        let batch: Vec<Label> = a
            .labels
            .iter()
            .copied()
            .filter(|l| shared(l) && needed(&terms, *l))
            .collect();
        let summed: Vec<Label> = a
            .labels
            .iter()
            .copied()
            .filter(|l| shared(l) && !batch.contains(l))
            .collect();
        let a_free: Vec<Label> = a.labels.iter().copied().filter(|l| !shared(l)).collect();
        let b_free: Vec<Label> = b
            .labels
            .iter()
            .copied()
            .filter(|l| !a.labels.contains(l))
            .collect();
        let left_labels = [&batch[..], &a_free, &summed].concat();
        let right_labels = [&batch[..], &summed, &b_free].concat();
        let labels: Vec<Label> = [&batch[..], &a_free, &b_free].concat();
        let shape_of = |ls: &[Label]| ls.iter().map(|&l| size(l)).collect::<Vec<usize>>();
        // Broadcast operands are materialized, and two small operands can make a huge product.
        for (what, ls) in [
            ("left operand", &left_labels),
            ("right operand", &right_labels),
            ("product", &labels),
        ] {
            ctx.fits(what, &shape_of(ls), 4)?;
        }
        // Each group is part of a shape that fits, so its product does not overflow.
        let product = |ls: &[Label]| shape_of(ls).iter().product::<usize>();
        let (nb, nk, nm, nn) = (
            product(&batch),
            product(&summed),
            product(&a_free),
            product(&b_free),
        );
        let shape = shape_of(&labels);
        ctx.check_rank("an intermediate product", &shape)?;
        let left = arrange(a, &left_labels, &size, &[nb, nm, nk]);
        let right = arrange(b, &right_labels, &size, &[nb, nk, nn]);
        let y = left.into_storage().matmul(right.into_storage());
        acc = Term {
            t: DynTensor::from_storage(y, 3).reshape(&shape),
            labels,
        };
    }
    let last = sum_out(acc, |l| eq.output.contains(&l));
    let y = arrange(last, &eq.output, &size, &out_shape);
    Ok(vec![Value::Device(y)])
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use crate::network::node::Attr;
    use crate::network::value::{DynTensor, Value};

    /// Deterministic, distinct values.
    fn data(shape: &[usize], seed: usize) -> Vec<f32> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 17) as f32 / 8.0 - 1.0)
            .collect()
    }

    /// Einsum by its definition: over every assignment of the labels, the product of the
    /// operands' elements is added to the output's. An operand's axis of size 1 is broadcast.
    fn direct(equation: &str, operands: &[(&[usize], Vec<f32>)]) -> (Vec<usize>, Vec<f32>) {
        let (lhs, out) = equation.split_once("->").unwrap();
        let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
        let out: Vec<char> = out.chars().collect();
        let mut labels: Vec<(char, usize)> = Vec::new();
        for (term, (shape, _)) in terms.iter().zip(operands) {
            for (&c, &d) in term.iter().zip(shape.iter()) {
                match labels.iter_mut().find(|(l, _)| *l == c) {
                    Some((_, s)) => *s = (*s).max(d),
                    None => labels.push((c, d)),
                }
            }
        }
        let size = |c: char| labels.iter().find(|(l, _)| *l == c).unwrap().1;
        let out_shape: Vec<usize> = out.iter().map(|&c| size(c)).collect();
        let mut y = vec![0.0; out_shape.iter().product()];
        let total: usize = labels.iter().map(|(_, s)| s).product();
        for flat in 0..total {
            let mut rem = flat;
            let at: Vec<(char, usize)> = labels
                .iter()
                .map(|&(c, s)| {
                    let i = rem % s;
                    rem /= s;
                    (c, i)
                })
                .collect();
            let index = |c: char| at.iter().find(|(l, _)| *l == c).unwrap().1;
            let flat_of = |chars: &[char], shape: &[usize]| {
                chars.iter().zip(shape).fold(0, |acc, (&c, &d)| {
                    acc * d + if d == 1 { 0 } else { index(c) }
                })
            };
            let product: f32 = terms
                .iter()
                .zip(operands)
                .map(|(t, (shape, v))| v[flat_of(t, shape)])
                .product();
            y[flat_of(&out, &out_shape)] += product;
        }
        (out_shape, y)
    }

    fn einsum(
        equation: &str,
        operands: &[(&[usize], Vec<f32>)],
    ) -> crate::error::Result<(Vec<usize>, Vec<f32>)> {
        let device = crate::Device::cpu();
        let inputs = operands
            .iter()
            .map(|(s, v)| Value::Device(DynTensor::from_host(v, s, device.burn())))
            .collect();
        let attrs = [("equation", Attr::String(equation.into()))];
        let y = run("Einsum", 12, &attrs, inputs)?.remove(0).to_host();
        Ok((y.shape.clone(), y.to_f32()))
    }

    fn assert_close(got: &(Vec<usize>, Vec<f32>), want: &(Vec<usize>, Vec<f32>), what: &str) {
        assert_eq!(got.0, want.0, "{what}: shape");
        for (k, (a, b)) in got.1.iter().zip(&want.1).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
                "{what}[{k}]: {a}, expected {b}"
            );
        }
    }

    #[test]
    fn the_forms_exporters_emit_match_the_definition() {
        let cases: [(&str, &[&[usize]]); 9] = [
            ("bhqd,bhkd->bhqk", &[&[2, 3, 4, 5], &[2, 3, 6, 5]]),
            ("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 5]]),
            ("bhwc,hkc->bhwk", &[&[2, 3, 4, 5], &[3, 6, 5]]),
            ("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 5]]),
            ("ij->ji", &[&[2, 3]]),
            ("ijk->i", &[&[2, 3, 4]]),
            ("ij,ij->i", &[&[3, 4], &[3, 4]]),
            ("i,j->ij", &[&[3], &[4]]),
            ("xyij,yjk->xyik", &[&[2, 1, 3, 4], &[5, 4, 2]]),
        ];
        for (equation, shapes) in cases {
            let operands: Vec<(&[usize], Vec<f32>)> = shapes
                .iter()
                .enumerate()
                .map(|(k, s)| (*s, data(s, k)))
                .collect();
            let got = einsum(equation, &operands).unwrap();
            assert_close(&got, &direct(equation, &operands), equation);
        }
    }

    #[test]
    fn ellipses_right_align_and_broadcast_and_implicit_outputs_sort() {
        let a: &[usize] = &[2, 1, 3, 4];
        let b: &[usize] = &[5, 4, 2];
        let operands = [(a, data(a, 0)), (b, data(b, 1))];
        let want = direct("xyij,yjk->xyik", &operands);
        let got = einsum("...ij,...jk->...ik", &operands).unwrap();
        assert_close(&got, &want, "explicit ...");
        let got = einsum("... i j , ... j k", &operands).unwrap();
        assert_close(&got, &want, "implicit ...");
        let (p, q): (&[usize], &[usize]) = (&[3, 4], &[4, 2]);
        let operands = [(p, data(p, 0)), (q, data(q, 1))];
        // Implicit: the indices that occur once, in ASCII order (k before z).
        let got = einsum("zj,jk", &operands).unwrap();
        let t = direct("zj,jk->zk", &operands);
        let want = (
            vec![2, 3],
            (0..6).map(|i| t.1[(i % 3) * 2 + i / 3]).collect(),
        );
        assert_close(&got, &want, "zj,jk");
    }

    #[test]
    fn unsupported_or_malformed_equations_are_errors_naming_the_node() {
        let s: &[usize] = &[3, 3];
        for (equation, why) in [
            ("ii->i", "diagonal"),
            ("ij,jk->ik", "2 input terms for 1 inputs"),
            ("ijk->i", "does not fit input 0"),
            ("ij->q", "in no input"),
            ("i1->i", "not a letter"),
        ] {
            let err = einsum(equation, &[(s, data(s, 0))])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("node_under_test") && err.contains(why),
                "{equation}: {err}"
            );
        }
        let (a, b): (&[usize], &[usize]) = (&[2, 3], &[4, 5]);
        let err = einsum("ij,jk->ik", &[(a, data(a, 0)), (b, data(b, 1))]).unwrap_err();
        assert!(err.to_string().contains("index j is 3"), "{err}");
    }
}
