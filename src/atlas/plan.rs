//! The work of an atlas: every unit of its layers in batches, each batch's cost estimated
//! from the network alone, and the share of one shard.
//!
//! A batch is the unit of work: one batched feature visualization for the gallery and each of
//! its units' views. Costs come from the network's shapes and parameters, never from a clock,
//! so every process of a sharded run splits the work the same way.

use crate::error::{Error, Result};
use crate::model::{Layer, Model};

/// Units of one layer computed together.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Index into the atlas's layers.
    pub layer: usize,
    pub units: Vec<usize>,
    /// Estimated cost: units × multiply-adds of a forward pass up to the layer.
    pub cost: f64,
}

/// The batches of `layers`, in order: each layer's units in runs of `size`.
pub fn batches(model: &Model, layers: &[Layer], size: usize) -> Result<Vec<Batch>> {
    let net = model.network();
    let shapes = net.shapes()?;
    // Multiply-adds up to each node (about parameters × output positions for a convolution or
    // a dense layer), plus its output, so that a layer without parameters costs something.
    let mut total = 0.0f64;
    let mut upto = std::collections::HashMap::new();
    for (node, shape) in net.nodes().iter().zip(shapes) {
        let positions: usize = shape.iter().skip(2).product();
        let elements: usize = shape.iter().product();
        total += net.param_count(node) as f64 * positions as f64 + elements as f64;
        upto.insert(node.name.as_str(), total);
    }
    let mut out = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let per_unit = upto.get(layer.name.as_str()).copied().unwrap_or(total);
        let all: Vec<usize> = (0..layer.units).collect();
        for chunk in all.chunks(size.max(1)) {
            out.push(Batch {
                layer: l,
                units: chunk.to_vec(),
                cost: per_unit * chunk.len() as f64,
            });
        }
    }
    Ok(out)
}

/// One of `count` processes that share the work (`index` from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The batch systems' variables that `--shard auto` reads: (index, count, first index) in
/// order. Slurm numbers tasks as the array says (`--array=1-8` starts at 1), so its first
/// index is subtracted; Kubernetes' Indexed Jobs count from 0 and set no count, so the
/// manifest sets `JOB_COMPLETIONS` to the job's `completions`.
pub const AUTO_VARIABLES: [(&str, &str, Option<&str>); 2] = [
    (
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        Some("SLURM_ARRAY_TASK_MIN"),
    ),
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", None),
];

impl Shard {
    /// `I/N` (0 ≤ I < N), or `auto`: the first pair of [`AUTO_VARIABLES`] whose index is set,
    /// read through `var`.
    pub fn parse(text: &str, var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        if text == "auto" {
            return Self::from_variables(var);
        }
        let bad = |why: &str| Error::Message(format!("--shard {text:?}: {why}"));
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (shard I of N, from 0) or auto"))?;
        Self::new(i.trim(), n.trim()).map_err(|why| bad(&why))
    }

    fn new(index: &str, count: &str) -> std::result::Result<Shard, String> {
        let index: usize = index
            .parse()
            .map_err(|_| format!("{index:?} is not a shard index"))?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("{count:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index} of {count}: the index runs from 0 to the count − 1"
            ));
        }
        Ok(Shard { index, count })
    }

    fn from_variables(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        for (index, count, first) in AUTO_VARIABLES {
            let Some(i) = var(index) else { continue };
            let n = var(count).ok_or_else(|| {
                Error::Message(format!(
                    "--shard auto: {index} is set but {count} is not (set it to the number of tasks)"
                ))
            })?;
            let bad = |why: String| {
                Error::Message(format!("--shard auto ({index}={i}, {count}={n}): {why}"))
            };
            let mut i_from_0 = i.trim().to_string();
            if let Some(first) = first.and_then(|f| var(f).map(|v| (f, v))) {
                let (task, start) = (i.trim().parse::<usize>(), first.1.trim().parse::<usize>());
                match (task, start) {
                    (Ok(t), Ok(s)) if t >= s => i_from_0 = (t - s).to_string(),
                    _ => return Err(bad(format!("{}={} does not fit", first.0, first.1))),
                }
            }
            return Self::new(&i_from_0, n.trim()).map_err(bad);
        }
        let names: Vec<String> = AUTO_VARIABLES
            .iter()
            .map(|(i, n, _)| format!("{i} and {n}"))
            .collect();
        Err(Error::Message(format!(
            "--shard auto: none of the batch system's variables is set ({}); give --shard I/N",
            names.join(", or ")
        )))
    }
}

/// The shard of each batch: longest first, each to the shard with the least cost so far (the
/// lowest index among equals), which keeps shards within one batch of each other.
pub fn assign(batches: &[Batch], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..batches.len()).collect();
    order.sort_by(|&a, &b| batches[b].cost.total_cmp(&batches[a].cost).then(a.cmp(&b)));
    let mut load = vec![0.0f64; count];
    let mut shard = vec![0; batches.len()];
    for b in order {
        let least = (0..count)
            .min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y)))
            .expect("at least one shard");
        load[least] += batches[b].cost;
        shard[b] = least;
    }
    shard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(cost: f64) -> Batch {
        Batch {
            layer: 0,
            units: vec![0],
            cost,
        }
    }

    #[test]
    fn shards_are_balanced_by_cost() {
        let batches: Vec<Batch> = [8.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0].map(batch).to_vec();
        let shard = assign(&batches, 2);
        let load = |s| -> f64 {
            (0..batches.len())
                .filter(|&b| shard[b] == s)
                .map(|b| batches[b].cost)
                .sum()
        };
        assert_eq!((load(0), load(1)), (10.0, 10.0));
        assert_eq!(assign(&batches, 2), shard, "not deterministic");
    }

    #[test]
    fn shards_come_from_the_argument_or_the_batch_systems_variables() {
        let none = |_: &str| None;
        assert_eq!(
            Shard::parse("1/3", none).unwrap(),
            Shard { index: 1, count: 3 }
        );
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(Shard::parse(bad, none).is_err(), "{bad}");
        }
        let k8s = |v: &str| match v {
            "JOB_COMPLETION_INDEX" => Some("2".to_string()),
            "JOB_COMPLETIONS" => Some("4".to_string()),
            _ => None,
        };
        assert_eq!(
            Shard::parse("auto", k8s).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let message = Shard::parse("auto", none).unwrap_err().to_string();
        for (i, n, _) in AUTO_VARIABLES {
            assert!(message.contains(i) && message.contains(n), "{message}");
        }
        // `sbatch --array=1-8`: tasks 1 to 8 are shards 0 to 7.
        let slurm = |v: &str| match v {
            "SLURM_ARRAY_TASK_ID" => Some("8".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("8".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            _ => None,
        };
        assert_eq!(
            Shard::parse("auto", slurm).unwrap(),
            Shard { index: 7, count: 8 }
        );
        let half = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "0".to_string());
        let message = Shard::parse("auto", half).unwrap_err().to_string();
        assert!(message.contains("SLURM_ARRAY_TASK_COUNT"), "{message}");
    }
}
