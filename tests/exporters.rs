//! Networks as the exporters users have write them, in tests/reference:
//! - pytorch_export, written by tests/support/pytorch_export.py (torch 2.15): `torch.onnx.export`
//!   with its defaults since PyTorch 2.9 (the `dynamo=True` exporter). Such a file names its
//!   nodes after counters (`node_Conv_292`), notes each node's module path in its metadata, and
//!   keeps the weights in `tiny.onnx.data` beside it. The classic exporter's file of the same
//!   network is there too, a transformer whose export fixed its batch at 1, and two transformers
//!   exported at opset 23 (ONNX's Attention and RMSNormalization), SegNet's unpooling, DCNv2's
//!   deformable convolution and GFNet's global filter (DFT).
//! - keras_export, written by tests/support/keras_export.py (TensorFlow 2.21, tf2onnx 1.17): a
//!   Keras network that takes images channels-last.
//! - detector_export, written by tests/support/detector_export.py (torch 2.15, torchvision
//!   0.29): a small torchvision Faster R-CNN by the classic exporter, whose post-processing
//!   microscope does not run.
//! - quantized, written by tests/support/quantized_export.py (onnxruntime 1.32): the built-in
//!   Fashion-MNIST CNN quantized to 8 bits by onnxruntime's quantizer, in its three formats
//!   (QDQ, QOperator, dynamic), and to 8-bit floats (QDQ with FLOAT8E4M3FN).

mod support;

use std::path::{Path, PathBuf};

use microscope::import::proto::ModelProto;
use microscope::network::DynTensor;
use microscope::npy;
use microscope::prelude::*;
use prost::Message;

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/pytorch_export")
}

fn detector() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/detector_export")
}

fn quantized() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/quantized")
}

fn keras() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/keras_export")
}

/// The layer names, in the graph's order.
fn names(model: &Model) -> Vec<&str> {
    model
        .network()
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect()
}

/// The layer graph's boxes (groups) and how many layers each holds.
fn boxes(model: &Model) -> Vec<(String, usize)> {
    LayerGraph::new(model)
        .unwrap()
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.members.len()))
        .collect()
}

/// `model`'s `targets` on x.npy of `dir` (a batch of 2), and that input.
fn run_on_x(model: &Model, dir: &Path, targets: &[&str]) -> (DynTensor, Vec<DynTensor>) {
    let x = npy::read(&dir.join("x.npy")).unwrap();
    assert_eq!(x.shape, [2, 3, 32, 32]);
    let input = DynTensor::from_host(&x.data, &x.shape, model.network().device().burn());
    let out = model
        .network()
        .forward(&[("image", input.clone())], targets)
        .unwrap();
    (input, out)
}

/// Checks logits against the exporting framework's (`file`, an .npy), within 1e-5.
fn assert_as_exported(logits: &DynTensor, file: &Path) {
    assert_within(logits, file, 1e-5);
}

/// Checks `got` against the exporting framework's values (`file`, an .npy), within `tolerance`.
fn assert_within(got: &DynTensor, file: &Path, tolerance: f32) {
    let want = npy::read(file).unwrap();
    assert_eq!(got.dims(), want.shape);
    let worst = got
        .to_vec()
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < tolerance, "values differ from {file:?} by {worst}");
}

/// The layers of tiny (tests/support/pytorch_export.py), as torchvision's feature extraction
/// names them. The exporters count a module's second call differently (`relu_2`, `relu_1`)
/// and see `torch.flatten` as a `view` or a `Flatten`.
fn tiny_layers(second_relu: &str, flatten: &str) -> Vec<String> {
    let block =
        |b: &str| ["conv1", "relu", "conv2", "add", second_relu].map(|l| format!("layer1.{b}.{l}"));
    ["conv1", "relu", "maxpool"]
        .into_iter()
        .map(String::from)
        .chain(block("0"))
        .chain(block("1"))
        .chain(["avgpool", flatten, "fc"].map(String::from))
        .collect()
}

/// Its layers have the names a PyTorch user knows them by (the module paths, as torchvision's
/// feature extraction names them), its layer graph draws a module as one box, and the
/// exporter's own names still find the layers.
#[test]
fn a_pytorch_export_is_named_after_its_modules() {
    let path = reference().join("tiny.onnx");
    let model = Model::load(&path).unwrap();
    let names = names(&model);
    assert_eq!(names, tiny_layers("relu_2", "view"));
    // Parameters are weights, not the shape or axes constants the exporter adds.
    let params = |name: &str| model.layer(name).unwrap().params;
    assert_eq!(
        [
            params("layer1.0.conv1"),
            params("avgpool"),
            params("view"),
            params("fc")
        ],
        [8 * 8 * 9 + 8, 0, 0, 8 * 10 + 10]
    );
    // The layer graph draws a block as one box (layer1 holds most of this network: its blocks).
    assert_eq!(
        boxes(&model),
        [("layer1.0".into(), 5), ("layer1.1".into(), 5)]
    );
    let file = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = file.graph.unwrap();
    for (node, name) in graph.node.iter().zip(&names) {
        assert!(node.name.starts_with("node_"), "{}", node.name);
        assert_eq!(model.layer(&node.name).unwrap().name, *name);
    }
}

/// The same network by the classic exporter (`dynamo=False`), which writes each node's module
/// path into its name (`/layer1/layer1.0/conv1/Conv`) and keeps no notes: the layers have the
/// same names (a second call of a module is `relu_1`, as the exporter counts it), the graph the
/// same boxes, the exporter's names find them, and it computes what PyTorch computed.
#[test]
fn a_classic_pytorch_export_is_named_after_its_modules() {
    let model = Model::load(reference().join("tiny_classic.onnx")).unwrap();
    assert_eq!(names(&model), tiny_layers("relu_1", "flatten"));
    assert_eq!(
        boxes(&model),
        [("layer1.0".into(), 5), ("layer1.1".into(), 5)]
    );
    assert_eq!(
        model.layer("/layer1/layer1.0/conv1/Conv").unwrap().name,
        "layer1.0.conv1"
    );
    let (_, out) = run_on_x(&model, &reference(), &["fc"]);
    assert_as_exported(&out[0], &reference().join("logits.npy"));
}

/// It computes what PyTorch computed, at a batch of 2 (the export's batch axis is dynamic, its
/// example had 1), and feature visualization lifts every unit of the last block above what the
/// two inputs give it.
#[test]
fn a_pytorch_export_computes_as_pytorch_did() {
    let model = Model::load(reference().join("tiny.onnx")).unwrap();
    let (_, out) = run_on_x(&model, &reference(), &["fc", "layer1.1.relu_2"]);
    assert_as_exported(&out[0], &reference().join("logits.npy"));

    lifts_every_unit(&model, "layer1.1.relu_2", &out[1], 32);
}

/// Checks that feature visualization (128 steps at `size` px) lifts every unit of `layer` that the
/// inputs reach above the larger of its mean activations on them (`maps`, `[N, C, H, W]`).
fn lifts_every_unit(model: &Model, layer: &str, maps: &DynTensor, size: usize) {
    let [n, c, h, w] = maps.dims()[..] else {
        panic!("{:?}", maps.dims())
    };
    let values = maps.to_vec();
    let best: Vec<f32> = (0..c)
        .map(|u| {
            (0..n)
                .map(|i| {
                    let at = (i * c + u) * h * w;
                    values[at..at + h * w].iter().sum::<f32>() / (h * w) as f32
                })
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let units: Vec<usize> = (0..c).collect();
    let vis = FeatureVis::default()
        .cache(None)
        .steps(128)
        .size(size)
        .run_units(model, layer, &units)
        .unwrap();
    // A unit the inputs leave at 0 may be dead (Keras's conv2:11 with its untrained weights).
    for u in units.into_iter().filter(|&u| best[u] > 0.0) {
        assert!(
            vis.activations[u] > best[u],
            "{layer}:{u}: feature visualization {} against the inputs' {}",
            vis.activations[u],
            best[u]
        );
    }
}

/// A Keras network as tf2onnx writes it names nodes after TensorFlow's scopes
/// (`functional_1/conv2_1/Relu`) and takes images channels-last (`[N, 32, 32, 3]`), turning them
/// channels-first itself. Its layers have the names Keras gave them. microscope declares that input channels-first, as every other
/// model's (a Transpose in front turns it back), so the same images and techniques work: it
/// computes what Keras computed, and feature visualization lifts the units of conv2 above what the
/// two inputs give them (the file's metadata says its pixels are in [0, 255]).
#[test]
fn a_keras_export_takes_images_channels_first() {
    let model = Model::load(keras().join("keras.onnx")).unwrap();
    let input = model.network().image_input().unwrap();
    assert_eq!(input.shape, [None, Some(3), Some(32), Some(32)]);
    // Layers have their Keras names; a layer's ops but the last, and the Transpose in front,
    // are named under it.
    assert_eq!(
        names(&model),
        [
            "image/channels_last",
            "rescale/mul",
            "rescale",
            "conv1/convolution",
            "conv1/convolution_2",
            "conv1",
            "pool1",
            "conv2/convolution",
            "conv2",
            "gap/mean",
            "gap",
            "logits"
        ]
    );
    assert_eq!(
        model.layer("functional_1/conv2_1/Relu").unwrap().name,
        "conv2"
    );
    let (_, out) = run_on_x(&model, &keras(), &["logits", "conv2"]);
    assert_as_exported(&out[0], &keras().join("logits.npy"));
    lifts_every_unit(&model, "conv2", &out[1], 32);
}

/// SegNet's unpooling and DCNv2's deformable convolution as PyTorch exports them (its default
/// exporter): MaxPool with its Indices output, made per-plane by a second MaxPool and a Sub, and
/// MaxUnpool as a ScatterND of them; `deform_conv2d` as ONNX's DeformConv in a file that says
/// opset 18 (DeformConv came with 19; onnxruntime refuses the file, microscope runs it). Each
/// computes what PyTorch computed; the index arithmetic is neither drawn nor a layer before the
/// decoder (whose previous layer is the one whose values the unpooling reads); and feature
/// visualization lifts the decoder's and the deformable convolution's units above what the
/// inputs give them, through the unpooling and the sampling at learned offsets.
#[test]
fn unpooling_and_deformable_convolution_as_pytorch_exports_them() {
    use microscope::technique::weights::previous_layer;
    let segnet = Model::load(reference().join("segnet.onnx")).unwrap();
    let (_, out) = run_on_x(&segnet, &reference(), &["logits", "decoder.1"]);
    assert_as_exported(&out[0], &reference().join("segnet_logits.npy"));
    let net = segnet.network();
    assert!(net
        .nodes()
        .iter()
        .any(|n| n.op == "MaxPool" && n.outputs.len() == 2));
    assert!(net.nodes().iter().any(|n| n.op == "ScatterND"));
    assert_eq!(
        previous_layer(&segnet, "decoder.0").unwrap().as_deref(),
        Some("middle.0")
    );
    let graph = LayerGraph::new(&segnet).unwrap();
    let drawn: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let computed = net.computed_from(&["image"]);
    for (node, computed) in net.nodes().iter().zip(computed) {
        // The Sub of the pooling's indices, and what the scatter's indices are made of.
        if node.op == "Sub" || node.op == "Range" {
            assert!(
                !computed && !drawn.contains(&node.name.as_str()),
                "{}",
                node.name
            );
        }
    }
    lifts_every_unit(&segnet, "decoder.1", &out[1], 32);

    let dcn = Model::load(reference().join("dcn.onnx")).unwrap();
    let (_, out) = run_on_x(&dcn, &reference(), &["logits", "deform"]);
    assert_as_exported(&out[0], &reference().join("dcn_logits.npy"));
    assert_eq!(
        previous_layer(&dcn, "relu/relu").unwrap().as_deref(),
        Some("stem.0")
    );
    // The convolution's own output: behind its ReLU, some units of these random weights are
    // all but dead (relu/relu:10 is above 0 at one position of the two images, by 6e-5).
    lifts_every_unit(&dcn, "deform", &out[1], 32);
}

/// GFNet's global filter as PyTorch's exporter writes it (module_exports.py's GlobalFilter at
/// 32 px): `rfft2` and `irfft2` as four DFT nodes, the complex filter as real arithmetic on the
/// parts between them. It computes what PyTorch computed, and feature visualization lifts every
/// unit behind the filter above what the inputs give it: the gradient passes through the
/// spectrum and back.
#[test]
fn a_fourier_layer_as_pytorch_exports_it() {
    let gfnet = Model::load(reference().join("gfnet.onnx")).unwrap();
    let dfts = gfnet.network().nodes().iter().filter(|n| n.op == "DFT");
    assert_eq!(dfts.count(), 4);
    let (_, out) = run_on_x(&gfnet, &reference(), &["logits", "add"]);
    assert_as_exported(&out[0], &reference().join("gfnet_logits.npy"));
    lifts_every_unit(&gfnet, "add", &out[1], 32);
}

/// A transformer as PyTorch exports it: `nn.MultiheadAttention` folds the batch into its heads'
/// axis, and the file keeps that axis as it was for the one example image, although the batch
/// axis was asked to be dynamic (onnxruntime refuses a batch of 2). Here a batch runs one image
/// at a time: it computes what PyTorch computed for two images, and feature visualization
/// renders a layer's units in one batch, each lifted above what the inputs give it.
#[test]
fn a_transformer_whose_export_fixed_its_batch_runs_a_batch() {
    assert!(!Model::load(reference().join("tiny.onnx"))
        .unwrap()
        .network()
        .batch_fixed());
    let model = Model::load(reference().join("vit.onnx")).unwrap();
    let net = model.network();
    let (input, out) = run_on_x(&model, &reference(), &["logits", "encoder.linear1"]);
    assert_as_exported(&out[0], &reference().join("vit_logits.npy"));
    // The batch of 2 failed, and a pass on zeros told why.
    assert!(net.batch_fixed());

    // Inside the attention, where batch and heads share an axis, there is no batch to gather.
    let err = net
        .forward(&[("image", input)], &["encoder.self_attn.view_2"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.self_attn.view_2") && err.contains("fixes its batch at 1"),
        "{err}"
    );

    lifts_token_units(&model, "encoder.linear1", &out[1], 8);
}

/// Checks that feature visualization (64 steps at 32 px, in one batch) lifts each of the first
/// `count` units of token layer `layer` (`[N, T, C]`: a unit's value is its channel's mean over
/// the tokens) above the larger of its values on the inputs (`tokens`).
fn lifts_token_units(model: &Model, layer: &str, tokens: &DynTensor, count: usize) {
    let [n, t, c] = tokens.dims()[..] else {
        panic!("{:?}", tokens.dims())
    };
    let values = tokens.to_vec();
    let best = |u: usize| {
        (0..n)
            .map(|i| (0..t).map(|k| values[(i * t + k) * c + u]).sum::<f32>() / t as f32)
            .fold(f32::NEG_INFINITY, f32::max)
    };
    let units: Vec<usize> = (0..count).collect();
    let vis = FeatureVis::default()
        .cache(None)
        .steps(64)
        .size(32)
        .run_units(model, layer, &units)
        .unwrap();
    assert_eq!(vis.images.dims(), [count, 3, 32, 32]);
    for u in units {
        assert!(
            vis.activations[u] > best(u),
            "{layer}:{u}: feature visualization {} against the inputs' {}",
            vis.activations[u],
            best(u)
        );
    }
}

/// From opset 23 PyTorch's exporter writes ONNX's Attention for `scaled_dot_product_attention`
/// and RMSNormalization for `nn.RMSNorm`. A block as recent ViTs build it (RMSNorm,
/// grouped-query attention: 4 query heads share 2 key/value heads) computes what PyTorch
/// computed; its attention weights are a layer, one unit per head, each query's weights summing
/// to 1; and feature visualization, whose gradient runs back through both ops, makes each head
/// attend more sharply than the inputs do and lifts the units after them. The ViT of `nn.MultiheadAttention` exported at opset 23 computes what it did at 18.
#[test]
fn a_pytorch_export_at_opset_23_runs_attention_and_rms_norm() {
    let model = Model::load(reference().join("modern_vit.onnx")).unwrap();
    let attention = "scaled_dot_product_attention/attention";
    let (_, out) = run_on_x(&model, &reference(), &["logits", attention, "mlp.0"]);
    assert_as_exported(&out[0], &reference().join("modern_vit_logits.npy"));

    assert_eq!(out[1].dims(), [2, 4, 17, 17]);
    let layer = model.layer(attention).unwrap();
    assert_eq!(layer.units, 4);
    // Every query's weights sum to 1, so a head's mean is 1/17 on every image: a head is read
    // by how concentrated its weights are, Σ w² per query, averaged over the queries.
    let mut concentration = [[0.0f32; 4]; 2];
    for (row, weights) in out[1].to_vec().chunks(17).enumerate() {
        let sum: f32 = weights.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5 && weights.iter().all(|&w| w >= 0.0),
            "row {row} of {attention}: {weights:?}"
        );
        let squares: f32 = weights.iter().map(|w| w * w).sum();
        concentration[row / (4 * 17)][row / 17 % 4] += squares / 17.0;
    }
    let note = layer.unit_value().unwrap();
    assert!(
        note.contains("concentrated") && note.contains("1/17"),
        "{note}"
    );
    let heads: Vec<usize> = (0..4).collect();
    let vis = FeatureVis::default()
        .cache(None)
        .steps(64)
        .size(32)
        .run_units(&model, attention, &heads)
        .unwrap();
    for h in heads {
        let best = concentration[0][h].max(concentration[1][h]);
        assert!(
            vis.activations[h] > best && vis.activations[h] <= 1.0,
            "{attention}:{h}: feature visualization {} against the inputs' {best}",
            vis.activations[h]
        );
    }
    lifts_token_units(&model, "mlp.0", &out[2], 8);

    let model = Model::load(reference().join("vit_opset23.onnx")).unwrap();
    assert!(model
        .network()
        .nodes()
        .iter()
        .any(|n| n.name.ends_with("/attention") && n.op == "Softmax"));
    let (_, out) = run_on_x(&model, &reference(), &["logits"]);
    assert_as_exported(&out[0], &reference().join("vit_logits.npy"));
}

/// A torchvision detector as its users export it (the classic exporter: the `dynamo=True` one
/// cannot export torchvision's detectors). Its post-processing drops boxes with NonZero, pools
/// regions with RoiAlign and branches with If, none of which microscope runs: loading it
/// whole is an error that names the first such node and says how to load the rest. Loaded in
/// part, its backbone, feature pyramid and region proposal head compute what PyTorch computed,
/// keep torchvision's module names (the shared head's second and third calls too), say what
/// was left out wherever the model is shown, and feature visualization lifts the pyramid's
/// units.
#[test]
fn a_detector_loads_in_part_up_to_its_post_processing() {
    let file = detector().join("detector.onnx");
    let err = Model::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("detector.onnx")
            && err.contains("NonZero")
            && err.contains("rpn.nonzero")
            && err.contains("Model::load_partial"),
        "{err}"
    );

    let model = Model::load_partial(&file).unwrap();
    let left = model.left_out().expect("loaded in part");
    let ops: std::collections::BTreeSet<&str> =
        left.unsupported.iter().map(|u| u.op.as_str()).collect();
    assert_eq!(ops, ["If", "NonZero", "RoiAlign"].into());
    assert_eq!(left.unsupported[0].node, "rpn.nonzero");
    // The box head was left out: asking for it says why.
    let err = model
        .layer("roi_heads.box_head.fc6")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("left out") && err.contains("NonZero (node rpn.nonzero)"),
        "{err}"
    );
    // Moved to another device, it is loaded the same way.
    assert_eq!(model.to(Device::cpu()).unwrap().left_out(), Some(left));
    assert!(
        left.nodes > 0 && left.nodes < left.total,
        "{} of {}",
        left.nodes,
        left.total
    );
    // Nothing left in the network reads what a left-out node makes.
    let net = model.network();
    let made: std::collections::HashSet<&str> = net
        .nodes()
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    for n in net.nodes() {
        for t in n.inputs.iter().filter(|t| !t.is_empty()) {
            assert!(
                made.contains(t.as_str())
                    || net.constant_shape(t).is_some()
                    || net.inputs().iter().any(|i| &i.name == t),
                "{} reads {t}",
                n.name
            );
        }
    }
    let names = names(&model);
    for layer in [
        "backbone.body.layer1.0",
        "backbone.fpn.layer_blocks.0.0",
        "backbone.fpn.extra_blocks",
        "rpn.head.conv.0.0",
        "rpn.head.conv.0.0_1",
        "rpn.head.conv.0.0_2",
        "rpn.head.cls_logits_2",
    ] {
        assert!(names.contains(&layer), "{layer} is not among {names:?}");
    }
    // The pyramid's output, which the left-out region pooling read, is an output now.
    assert!(net
        .outputs()
        .contains(&net.node("backbone.fpn.layer_blocks.0.0").unwrap().outputs[0]));

    let x = npy::read(&detector().join("x.npy")).unwrap();
    let input = DynTensor::from_host(&x.data, &x.shape, net.device().burn());
    let out = net
        .forward(
            &[("image", input)],
            &[
                "backbone.fpn.layer_blocks.0.0",
                "backbone.fpn.extra_blocks",
                "rpn.head.cls_logits",
            ],
        )
        .unwrap();
    assert_within(&out[0], &detector().join("fpn_0.npy"), 1e-5);
    assert_within(&out[1], &detector().join("fpn_pool.npy"), 1e-5);
    // torchvision starts the head's weights at a hundredth: its logits are that small.
    assert_within(&out[2], &detector().join("objectness_0.npy"), 1e-7);

    let graph = LayerGraph::new(&model).unwrap();
    // The exporter's shape arithmetic (Shape → Gather → Unsqueeze → Concat, anchor grids) is not
    // drawn; every convolution is.
    assert!(
        graph.shape_nodes > net.nodes().len() / 2,
        "{}",
        graph.shape_nodes
    );
    assert_eq!(graph.nodes.len() + graph.shape_nodes, net.nodes().len() + 1);
    assert!(graph.nodes.iter().all(|n| n.op != "Shape"));
    let convs = |ops: &mut dyn Iterator<Item = &str>| ops.filter(|&op| op == "Conv").count();
    assert_eq!(
        convs(&mut graph.nodes.iter().map(|n| n.op.as_str())),
        convs(&mut net.nodes().iter().map(|n| n.op.as_str()))
    );
    let line = graph
        .provenance
        .model_left_out
        .as_deref()
        .expect("the layer graph says so");
    assert!(
        line.starts_with("stops before NonZero (node rpn.nonzero)"),
        "{line}"
    );
    assert!(graph.summary().contains(line));
    assert_eq!(line, left.to_string());

    lifts_every_unit(&model, "backbone.fpn.layer_blocks.0.0", &out[0], 64);
}

/// Quantized models as onnxruntime's quantizer writes them compute what onnxruntime computes
/// and classify Fashion-MNIST as well as the float model they came from:
/// - QDQ (`quantize_static`): INT8 weights per channel, each with a DequantizeLinear; UINT8
///   activations, each through a QuantizeLinear and a DequantizeLinear;
/// - QOperator (`quantize_static`): QLinearConv, and onnxruntime's QGemm (com.microsoft);
/// - dynamic (`quantize_dynamic`): DynamicQuantizeLinear, ConvInteger and MatMulInteger;
/// - float8 (`quantize_static`, QFLOAT8E4M3FN): QDQ with 8-bit floats (FLOAT8E4M3FN) for the
///   weights, per channel, and the activations.
///
/// Their weights fold into float constants when they load; their layers keep the float model's
/// names; and feature visualization sees through the quantizers.
#[test]
fn quantized_models_compute_what_onnxruntime_computes_and_can_be_visualized() {
    let x = npy::read(&quantized().join("x.npy")).unwrap();
    let x = DynTensor::from_host(&x.data, &x.shape, Device::cpu().burn());
    let test = Dataset::fashion_mnist(Split::Test).unwrap();
    let accuracy =
        |net: &Network| microscope::zoo::train::accuracy(net, &test, &Device::cpu()).unwrap();
    let float = zoo::fashion().unwrap();
    let float_accuracy = accuracy(float.network());
    let load = |kind: &str| Model::load(quantized().join(format!("{kind}.onnx"))).unwrap();
    for kind in ["qdq", "qoperator", "dynamic", "float8"] {
        let model = load(kind);
        let net = model.network();
        let input = net.image_input().unwrap().name.clone();
        let out = net.forward(&[(&input, x.clone())], &["logits"]).unwrap();
        // onnxruntime's logits are integers times the output scale (0.152 for QDQ): rounding
        // one way or the other would differ by a whole step. They are the same.
        let want = quantized().join(format!("{kind}_logits.npy"));
        assert_within(&out[0], &want, 1e-5);
        let quantized = accuracy(net);
        println!("{kind}: Fashion-MNIST test accuracy {quantized:.4}, float {float_accuracy:.4}");
        assert!(quantized > float_accuracy - 0.01, "{kind}: {quantized}");
        // No integer op is left: each ran lowered to float ops, and its weights were
        // dequantized once, at load.
        for n in net.nodes() {
            assert!(n.domain.is_empty(), "{kind}: {} is {}", n.name, n.domain);
            assert!(
                microscope::network::ops::spec(&n.op).is_some(),
                "{kind}: {}",
                n.op
            );
        }
        let conv1 = net
            .nodes()
            .iter()
            .find(|n| n.op == "Conv" && n.name.starts_with("conv1"))
            .unwrap_or_else(|| panic!("{kind}: no conv1 in {:?}", names(&model)));
        let weight = net.constant(&conv1.inputs[1]).unwrap();
        assert_eq!(weight.elem, microscope::network::Elem::Float, "{kind}");
        assert_eq!(weight.shape[0], 32, "{kind}");
        // Once dequantized, the integer weights are not kept beside their float values: each
        // is dropped, and asking for one says which node took its place.
        let path = self::quantized().join(format!("{kind}.onnx"));
        let file = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let integer_weights: Vec<_> = file
            .graph
            .unwrap()
            .initializer
            .into_iter()
            .filter(|t| [2, 3, 17].contains(&t.data_type) && t.dims.iter().product::<i64>() > 64)
            .collect();
        assert!(
            integer_weights.len() >= 4,
            "{kind}: {}",
            integer_weights.len()
        );
        for t in &integer_weights {
            assert!(
                net.constant(&t.name).is_none(),
                "{kind}: {} is kept",
                t.name
            );
            let message = net.node(&t.name).unwrap_err().to_string();
            assert!(
                message.contains("which ran when the model was loaded"),
                "{kind}: {message}"
            );
        }
    }

    // QDQ: the layers keep the float model's names; the Gemm that the quantizer left named
    // `logits`, whose output it renamed, is `logits/gemm`: `logits` is the graph's output.
    let model = load("qdq");
    let net = model.network();
    let ops = |op: &str| net.nodes().iter().filter(|n| n.op == op).count();
    assert_eq!((ops("QuantizeLinear"), ops("DequantizeLinear")), (9, 9));
    let names = names(&model);
    for layer in ["conv1", "conv2", "conv3", "fc1", "logits/gemm"] {
        assert!(names.contains(&layer), "{layer} is not among {names:?}");
    }
    assert_eq!(net.node("logits").unwrap().op, "DequantizeLinear");
    // The layer graph draws the float model's layers with a DequantizeLinear after each, where
    // its rounded values are real numbers again; the QuantizeLinear between is passed through.
    let graph = LayerGraph::new(&model).unwrap();
    assert_eq!(graph.quantizers, 9);
    assert_eq!(graph.nodes.len(), net.nodes().len() + 1 - 9);
    let drawn = |name: &str| graph.nodes.iter().position(|n| n.name == name).unwrap();
    let dequantized = &graph.nodes[drawn("conv1/relu_DequantizeLinear")];
    assert_eq!(dequantized.inputs, [drawn("conv1")]);
    assert!(graph.summary().contains("9 QuantizeLinear nodes not drawn"));
    // QOperator: each QLinearConv is its Conv, named after the float one (`conv1_quant`).
    let qoperator = load("qoperator");
    let names = self::names(&qoperator);
    for layer in [
        "conv1/input",
        "conv1",
        "conv1/quantize",
        "conv2",
        "conv3",
        "fc1",
    ] {
        assert!(names.contains(&layer), "{layer} is not among {names:?}");
    }

    lifts_as_the_float_model_does(&model, "conv2/relu_DequantizeLinear", &float, x.clone());

    // Float8: each weight is an 8-bit float times its output channel's scale, and the weights
    // tab shows those values: each of conv1's over its channel's scale is a FLOAT8E4M3FN value
    // (to f32's rounding of the product), and none of them equals the float model's.
    let model = load("float8");
    let net = model.network();
    let e4m3 = microscope::network::minifloat::format(17).unwrap();
    let conv1 = net.nodes().iter().find(|n| n.name == "conv1").unwrap();
    let weight = net.constant(&conv1.inputs[1]).unwrap();
    let file = std::fs::read(quantized().join("float8.onnx")).unwrap();
    let file = ModelProto::decode(file.as_slice()).unwrap().graph.unwrap();
    let scale = file
        .initializer
        .iter()
        .find(|t| t.name == "conv1.weight_scale");
    let scale = microscope::import::tensor::decode(scale.unwrap())
        .unwrap()
        .to_f32();
    let float_weight = float.network().constant("conv1.weight").unwrap().to_f32();
    assert_eq!(weight.shape, [32, 1, 3, 3]);
    for (k, w) in weight.to_f32().into_iter().enumerate() {
        let v = w / scale[k / 9];
        let nearest = e4m3.round(v, true);
        assert!(
            (v - nearest).abs() <= 1e-6 * v.abs(),
            "conv1.weight[{k}] = {v} × scale"
        );
        assert_ne!(w, float_weight[k], "conv1.weight[{k}]");
    }
    let ops = |op: &str| net.nodes().iter().filter(|n| n.op == op).count();
    assert_eq!((ops("QuantizeLinear"), ops("Relu")), (13, 4));

    // The float8 quantizers pass the gradient straight through too: each conv2 unit's gradient
    // with respect to the image points where the float model's does (cosine 0.63 to 0.91,
    // averaged over the first 4 test images; 0 if rounding stopped it), apart from what
    // rounding and saturation change.
    let on = Device::cpu().autodiff();
    let gradient = |model: &Model, layer: &str, unit: usize, image: usize| {
        let pixels = &x.to_vec()[image * 784..][..784];
        let image = DynTensor::from_host(pixels, &[1, 1, 28, 28], &on).require_grad();
        let net = model.network();
        let input = net.image_input().unwrap().name.clone();
        let maps = net.forward(&[(&input, image.clone())], &[layer]).unwrap();
        let mean = maps[0].to_rank::<4>().unwrap().narrow(1, unit, 1).mean();
        image.grad(&mean.backward()).unwrap().to_vec()
    };
    for unit in 0..64 {
        let cosine = (0..4)
            .map(|i| {
                let a = gradient(&float, "conv2/relu", unit, i);
                let b = gradient(&model, "conv2/relu_DequantizeLinear", unit, i);
                let dot: f32 = a.iter().zip(&b).map(|(a, b)| a * b).sum();
                let norm = |v: &[f32]| v.iter().map(|v| v * v).sum::<f32>().sqrt();
                dot / (norm(&a) * norm(&b)).max(1e-12)
            })
            .sum::<f32>()
            / 4.0;
        assert!(cosine > 0.5, "conv2:{unit}: cosine {cosine}");
    }
    // So feature visualization lifts the units above what the test images give them, but not
    // all: onnxruntime's calibration by distribution saturates conv1 at 2.7 and conv2 at 2.2
    // (the float model reaches 6.9 and 8.1 on the calibration images), where the gradient
    // stops, and 7 of conv2's 64 units stay below the images after 128 steps.
    let layer = "conv2/relu_DequantizeLinear";
    let (vis, best) = (conv2_vis(&model, layer), best_of_images(&model, layer, x));
    let lifted: Vec<usize> = (0..64).filter(|&u| vis[u] > best[u]).collect();
    assert!(
        lifted.len() >= 56,
        "{} units lifted: {lifted:?}",
        lifted.len()
    );
}

/// Rounding has no gradient: only the straight-through gradient of the quantizers lets feature
/// visualization lift the units of a quantized layer. It lifts each one above what the test
/// images `x` give it, as it does in the float model (where one unit of conv2, 11, stays below
/// them after 128 steps: it is left out).
fn lifts_as_the_float_model_does(model: &Model, layer: &str, float: &Model, x: DynTensor) {
    let best = best_of_images(model, layer, x);
    let (quantized, float) = (conv2_vis(model, layer), conv2_vis(float, "conv2/relu"));
    for (u, best) in best.into_iter().enumerate() {
        if float[u] > best {
            assert!(
                quantized[u] > best,
                "{layer}:{u}: feature visualization {} against the inputs' {best} (float: {})",
                quantized[u],
                float[u]
            );
        }
    }
}

/// Feature visualization's value (128 steps) of each of the 64 units of `layer`, the
/// Fashion-MNIST CNN's conv2.
fn conv2_vis(model: &Model, layer: &str) -> Vec<f32> {
    let units: Vec<usize> = (0..64).collect();
    FeatureVis::default()
        .cache(None)
        .steps(128)
        .size(28)
        .run_units(model, layer, &units)
        .unwrap()
        .activations
}

/// The largest value each unit of `layer` (conv2, 64 units of 14 × 14) takes on the test
/// images `x` (16).
fn best_of_images(model: &Model, layer: &str, x: DynTensor) -> Vec<f32> {
    let net = model.network();
    let input = net.image_input().unwrap().name.clone();
    let maps = net.forward(&[(&input, x)], &[layer]).unwrap()[0].to_vec();
    let plane = 14 * 14;
    (0..64)
        .map(|u| {
            (0..16)
                .map(|i| maps[(i * 64 + u) * plane..][..plane].iter().sum::<f32>() / plane as f32)
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

/// onnxruntime's own quantized ops (domain com.microsoft, which its QOperator format and the ONNX
/// Model Zoo's `-int8` models use beside QLinearConv) compute what onnxruntime computes: a model
/// that chains each of them, written and run by tests/support/quantized_ops.py.
#[test]
fn onnxruntimes_quantized_ops_compute_what_onnxruntime_computes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantized_ops");
    support::run_script("quantized_ops.py", &[dir.as_os_str()]);
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let file = ModelProto::decode(bytes.as_slice()).unwrap();
    let ops: Vec<String> = file.graph.unwrap().node[1..]
        .iter()
        .map(|n| format!("{}.{}", n.domain, n.op_type))
        .collect();
    for lowered in microscope::network::lower::LOWERED {
        let name = format!("{}.{}", lowered.domain, lowered.name);
        // The fused transformer ops are tests/transformers.rs's.
        let quantized = lowered.into.contains("DequantizeLinear");
        let covered = lowered.domain.is_empty() || lowered.name == "QGemm" || !quantized;
        assert!(covered || ops.contains(&name), "{name} is not in the model");
    }
    let net = microscope::import::parse_onnx(&bytes, "quantized_ops", Device::cpu()).unwrap();
    let x = npy::read(&dir.join("x.npy")).unwrap();
    let x = DynTensor::from_host(&x.data, &x.shape, Device::cpu().burn());
    let outputs = net.outputs().to_vec();
    let targets: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let got = net.forward(&[("x", x)], &targets).unwrap();
    for (name, got) in outputs.iter().zip(got) {
        assert_within(&got, &dir.join(format!("{name}.npy")), 1e-3);
    }
    println!("{} ops match onnxruntime: {ops:?}", outputs.len());
}
