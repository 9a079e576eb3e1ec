//! Training the built-in Fashion-MNIST CNN, seeded and reproducible, on the CPU.
//!
//! The architecture is written as an ONNX graph and trained through the same runtime path every
//! model uses ([`Network::forward_with`] with tracked [`Weights`]), with Adam and cross-entropy;
//! the result is written back as an ONNX file carrying its class names and input spec.
//!
//! ```text
//! image [N,1,28,28] in [0,1] → normalize (x - 0.286) / 0.353
//! conv1 3×3 1→32  → relu → pool1 2×2 → [32,14,14]
//! conv2 3×3 32→64 → relu → pool2 2×2 → [64,7,7]
//! conv3 3×3 64→64 → relu → flatten → fc1 3136→128 → relu → logits 128→10
//! ```

use std::collections::HashMap;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::TensorData;
use burn::Dispatch;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::data::{Dataset, ImageSpec, FASHION_CLASSES};
use crate::device::{on_cpu_pool, Device};
use crate::error::Result;
use crate::import::builder::{AttrValue, OnnxBuilder};
use crate::import::parse_onnx;
use crate::network::{DynTensor, HostTensor, Network, Weights, MAX_RANK};
use crate::optim::Adam;

/// Fashion-MNIST training-set mean and standard deviation of pixels in [0, 1].
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub seed: u64,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f32,
    /// Stop after this many steps (for quick checks); `None` trains all epochs.
    pub max_steps: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            epochs: 5,
            batch: 128,
            learning_rate: 1e-3,
            max_steps: None,
        }
    }
}

/// The weight shapes of the architecture, by initializer name, and each one's fan-in.
fn parameter_shapes() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("conv1.weight", vec![32, 1, 3, 3]),
        ("conv1.bias", vec![32]),
        ("conv2.weight", vec![64, 32, 3, 3]),
        ("conv2.bias", vec![64]),
        ("conv3.weight", vec![64, 64, 3, 3]),
        ("conv3.bias", vec![64]),
        ("fc1.weight", vec![128, 64 * 7 * 7]),
        ("fc1.bias", vec![128]),
        ("logits.weight", vec![10, 128]),
        ("logits.bias", vec![10]),
    ]
}

/// He-initialized weights (zero biases), from `seed`.
fn initial_weights(seed: u64) -> HashMap<String, HostTensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if shape.len() == 1 {
                vec![0.0; n]
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let bound = (6.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            (name.to_string(), HostTensor::f32(shape, data))
        })
        .collect()
}

/// The ONNX model of the architecture with `weights`.
pub fn fashion_onnx(weights: &HashMap<String, HostTensor>, provenance: &str) -> Vec<u8> {
    use AttrValue::{Int, Ints};
    let pad1 = || ("pads", Ints(vec![1, 1, 1, 1]));
    let pool = || {
        [
            ("kernel_shape", Ints(vec![2, 2])),
            ("strides", Ints(vec![2, 2])),
        ]
    };
    let mut b = OnnxBuilder::new();
    b.input("image", &[0, 1, 28, 28]);
    b.initializer("normalize.mean", &HostTensor::f32(vec![1], vec![MEAN]));
    b.initializer("normalize.std", &HostTensor::f32(vec![1], vec![STD]));
    for (name, _) in parameter_shapes() {
        b.initializer(name, &weights[name]);
    }
    b.node("Sub", "normalize/center", &["image", "normalize.mean"], &[])
        .node(
            "Div",
            "normalize",
            &["normalize/center", "normalize.std"],
            &[],
        )
        .node(
            "Conv",
            "conv1",
            &["normalize", "conv1.weight", "conv1.bias"],
            &[pad1()],
        )
        .node("Relu", "conv1/relu", &["conv1"], &[])
        .node("MaxPool", "pool1", &["conv1/relu"], &pool())
        .node(
            "Conv",
            "conv2",
            &["pool1", "conv2.weight", "conv2.bias"],
            &[pad1()],
        )
        .node("Relu", "conv2/relu", &["conv2"], &[])
        .node("MaxPool", "pool2", &["conv2/relu"], &pool())
        .node(
            "Conv",
            "conv3",
            &["pool2", "conv3.weight", "conv3.bias"],
            &[pad1()],
        )
        .node("Relu", "conv3/relu", &["conv3"], &[])
        .node("Flatten", "flatten", &["conv3/relu"], &[("axis", Int(1))])
        .node(
            "Gemm",
            "fc1",
            &["flatten", "fc1.weight", "fc1.bias"],
            &[("transB", Int(1))],
        )
        .node("Relu", "fc1/relu", &["fc1"], &[])
        .node(
            "Gemm",
            "logits",
            &["fc1/relu", "logits.weight", "logits.bias"],
            &[("transB", Int(1))],
        )
        .output("logits")
        .metadata("classes", &FASHION_CLASSES.join("\n"))
        .metadata("input_range", "0,1")
        .metadata("provenance", provenance);
    b.to_bytes("fashion")
}

/// Mean cross-entropy of `logits` [N, 10] against `labels`.
fn cross_entropy(logits: Tensor<Dispatch, 2>, labels: &[usize]) -> Tensor<Dispatch, 1> {
    let [n, k] = logits.dims();
    let mut onehot = vec![0.0f32; n * k];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * k + l] = 1.0;
    }
    let onehot =
        Tensor::<Dispatch, 2>::from_data(TensorData::new(onehot, [n, k]), &logits.device());
    (activation::log_softmax(logits, 1) * onehot)
        .sum()
        .neg()
        .div_scalar(n as f32)
}

/// The fraction of `data` that `net` classifies correctly, evaluated in batches on `device`.
pub fn accuracy(net: &Network, data: &Dataset, device: &Device) -> Result<f32> {
    let spec = ImageSpec::unit(1, 28, 28);
    let input = net.image_input()?.name.clone();
    let mut correct = 0;
    for start in (0..data.len()).step_by(500) {
        let end = (start + 500).min(data.len());
        let x = data.batch(start..end, &spec, device.burn())?;
        let logits = net
            .forward(&[(&input, x)], &["logits"])?
            .remove(0)
            .to_rank::<2>()?;
        let predicted = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap_or_default();
        correct += predicted
            .iter()
            .zip(&data.labels()[start..end])
            .filter(|(p, l)| **p as usize == **l)
            .count();
    }
    Ok(correct as f32 / data.len().max(1) as f32)
}

/// Trains the Fashion-MNIST CNN; returns the ONNX bytes and the test accuracy.
/// `progress` receives one line per reporting step.
pub fn train_fashion(
    config: &TrainConfig,
    mut progress: impl FnMut(&str),
) -> Result<(Vec<u8>, f32)> {
    let train = Dataset::fashion_mnist(crate::data::Split::Train)?;
    let test = Dataset::fashion_mnist(crate::data::Split::Test)?;
    let device = Device::cpu();
    let ad = device.autodiff();
    let init = initial_weights(config.seed);
    let net = parse_onnx(&fashion_onnx(&init, "initial"), "fashion", device.clone())?;
    let mut params = net.weight_tensors();
    params.retain(|k, _| !k.starts_with("normalize"));
    let mut optimizers: HashMap<String, Adam<MAX_RANK>> = params
        .keys()
        .map(|k| (k.clone(), Adam::new(config.learning_rate)))
        .collect();
    let spec = ImageSpec::unit(1, 28, 28);
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5eed);
    let mut step = 0usize;
    let started = Instant::now();
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let mut running = 0.0;
        let limit = config
            .max_steps
            .map_or(usize::MAX, |m| m.saturating_sub(step));
        for (b, chunk) in order.chunks(config.batch).take(limit).enumerate() {
            let x = train.gather(chunk, &spec, &ad)?;
            let labels: Vec<usize> = chunk.iter().map(|&i| train.labels()[i]).collect();
            // The step runs on the CPU pool's thread (see `on_cpu_pool`).
            let loss_value = on_cpu_pool(device.burn(), || -> Result<f32> {
                let weights = Weights::tracked(&params);
                let logits = net
                    .forward_with(&[("image", x)], &["logits"], Some(&weights))?
                    .remove(0);
                let loss = cross_entropy(logits.to_rank::<2>()?, &labels);
                let loss_value = DynTensor::new(loss.clone()).to_vec()[0];
                let grads = loss.backward();
                for (name, p) in params.iter_mut() {
                    let Some(g) = weights.get(name).and_then(|w| w.grad(&grads)) else {
                        continue;
                    };
                    let adam = optimizers
                        .get_mut(name)
                        .expect("an optimizer for every parameter");
                    let rank = p.rank();
                    let next = adam.step(p.clone().into_storage(), g.into_storage());
                    *p = DynTensor::from_storage(next, rank);
                }
                Ok(loss_value)
            })?;
            step += 1;
            running += loss_value;
            if (b + 1) % 100 == 0 {
                progress(&format!(
                    "epoch {} step {} loss {:.4} ({:.0} s)",
                    epoch + 1,
                    b + 1,
                    running / 100.0,
                    started.elapsed().as_secs_f32()
                ));
                running = 0.0;
            }
        }
    }
    let host: HashMap<String, HostTensor> = params
        .iter()
        .map(|(k, t)| (k.clone(), HostTensor::f32(t.dims(), t.to_vec())))
        .collect();
    let provenance = format!(
        "trained by `microscope train-fashion --seed {} --epochs {}` (batch {}, Adam lr {}) on Fashion-MNIST train",
        config.seed, config.epochs, config.batch, config.learning_rate
    );
    let bytes = fashion_onnx(&host, &provenance);
    let trained = parse_onnx(&bytes, "fashion", device.clone())?;
    let acc = accuracy(&trained, &test, &device)?;
    progress(&format!(
        "test accuracy {:.2}% ({:.0} s)",
        acc * 100.0,
        started.elapsed().as_secs_f32()
    ));
    Ok((bytes, acc))
}
