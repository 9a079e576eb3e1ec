//! Today's vision architectures, small: a ConvNeXt-style and a ViT-style network written with the
//! project's ONNX builder (seeded random weights), as PyTorch exports them op by op.
//!
//! 1. Every node matches onnxruntime (rtol 1e-3, atol 1e-4): the test writes each model and an
//!    input, `tests/support/ort_nodes.py` records onnxruntime's value of every node, and each
//!    node runs here on onnxruntime's values of its inputs.
//! 2. Token layers (`[N, T, C]`) are layers with C units: the layer card, the layer graph and
//!    the gallery count them so, and feature visualization of a token-layer channel (its mean
//!    over tokens) rises.
//! 3. A recurrent layer (a bidirectional LSTM over convolution features) has no units of its
//!    own; the token layer after it does, and its channels can be visualized.
//! 4. A spatial transformer (AffineGrid and GridSample, as PyTorch's `affine_grid` and
//!    `grid_sample` export from opset 20 on) with an L2-normalized embedding and TopK and ArgMax
//!    heads matches onnxruntime node by node, and feature visualization of
//!    a channel behind the warp rises.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use microscope::import::builder::{AttrValue, OnnxBuilder};
use microscope::network::HostTensor;
use microscope::technique::FeatureVis;
use microscope::widget::{GalleryOptions, LayerGraph, Widget};
use microscope::{npy, Model};
use rand::{Rng, SeedableRng};
use support::reference::Reference;

/// Input side and channels of both networks.
const SIZE: usize = 32;
/// Width of both networks' blocks.
const C: usize = 32;
/// ViT: patch side, tokens (patches and the class token), heads and their width.
const PATCH: usize = 8;
const TOKENS: usize = (SIZE / PATCH) * (SIZE / PATCH) + 1;
const HEADS: usize = 2;
const HEAD_DIM: usize = C / HEADS;
/// The ViT's token layer that feature visualization reads: the attention block's residual sum.
const TOKEN_LAYER: &str = "block/attn_residual";

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("transformers")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The builder plus a seeded generator for weights, and helpers for the layers both nets use.
/// Every helper names its output node `name` (its inner nodes `name/...`) and returns it.
struct Net {
    b: OnnxBuilder,
    rng: rand::rngs::StdRng,
}

impl Net {
    fn new(opset: i64, seed: u64) -> Net {
        let mut b = OnnxBuilder::new();
        b.opset(opset)
            .input("image", &[0, 3, SIZE as i64, SIZE as i64]);
        Net {
            b,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// A float initializer `centre ± spread`, uniform.
    fn weight(&mut self, name: &str, dims: &[usize], centre: f32, spread: f32) -> String {
        let n: usize = dims.iter().product();
        let data = (0..n)
            .map(|_| centre + self.rng.random_range(-spread..=spread))
            .collect();
        self.b
            .initializer(name, &HostTensor::f32(dims.to_vec(), data));
        name.to_string()
    }

    /// A weight with fan-in scaling (uniform ±sqrt(3 / fan_in): unit variance out).
    fn fan_in(&mut self, name: &str, dims: &[usize], fan_in: usize) -> String {
        self.weight(name, dims, 0.0, (3.0 / fan_in as f32).sqrt())
    }

    /// A float32 scalar initializer.
    fn scalar(&mut self, name: &str, value: f32) -> String {
        self.b
            .initializer(name, &HostTensor::f32(vec![], vec![value]));
        name.to_string()
    }

    fn ints(&mut self, name: &str, values: &[i64]) -> String {
        self.b.int64_initializer(name, &[values.len()], values);
        name.to_string()
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[(&str, AttrValue)],
    ) -> String {
        self.b.node(op, name, inputs, attrs);
        name.to_string()
    }

    /// A convolution `cin → cout` (`groups` groups) with a `kernel × kernel` window, its stride
    /// and padding, and a bias.
    fn conv(
        &mut self,
        name: &str,
        x: &str,
        [cin, cout, groups]: [usize; 3],
        [kernel, stride, pad]: [usize; 3],
    ) -> String {
        let fan_in = cin / groups * kernel * kernel;
        let w = self.fan_in(
            &format!("{name}.weight"),
            &[cout, cin / groups, kernel, kernel],
            fan_in,
        );
        let b = self.weight(&format!("{name}.bias"), &[cout], 0.0, 0.1);
        let (k, s, p) = (kernel as i64, stride as i64, pad as i64);
        let attrs = [
            ("group", AttrValue::Int(groups as i64)),
            ("kernel_shape", AttrValue::Ints(vec![k, k])),
            ("strides", AttrValue::Ints(vec![s, s])),
            ("pads", AttrValue::Ints(vec![p; 4])),
        ];
        self.node("Conv", name, &[x, &w, &b], &attrs)
    }

    fn transpose(&mut self, name: &str, x: &str, perm: &[i64]) -> String {
        self.node(
            "Transpose",
            name,
            &[x],
            &[("perm", AttrValue::Ints(perm.to_vec()))],
        )
    }

    /// The classifier of both nets: `logits`, 10 classes, a Gemm on `[N, C]` features.
    fn classifier(&mut self, features: &str) -> String {
        let w = self.fan_in("classifier.weight", &[10, C], C);
        let b = self.weight("classifier.bias", &[10], 0.0, 0.1);
        self.node(
            "Gemm",
            "logits",
            &[features, &w, &b],
            &[("transB", AttrValue::Int(1))],
        )
    }

    /// `x · W + b` over the last axis (PyTorch's Linear as exported: MatMul, then Add).
    fn linear(&mut self, name: &str, x: &str, cin: usize, cout: usize) -> String {
        let w = self.fan_in(&format!("{name}.weight"), &[cin, cout], cin);
        let b = self.weight(&format!("{name}.bias"), &[cout], 0.0, 0.1);
        let m = self.node("MatMul", &format!("{name}/matmul"), &[x, &w], &[]);
        self.node("Add", name, &[&m, &b], &[])
    }

    /// LayerNormalization over the last axis, with a scale near 1 and a small bias.
    fn layer_norm(&mut self, name: &str, x: &str, c: usize) -> String {
        let g = self.weight(&format!("{name}.weight"), &[c], 1.0, 0.2);
        let b = self.weight(&format!("{name}.bias"), &[c], 0.0, 0.1);
        let attrs = [
            ("axis", AttrValue::Int(-1)),
            ("epsilon", AttrValue::Float(1e-6)),
        ];
        self.node("LayerNormalization", name, &[x, &g, &b], &attrs)
    }

    /// GELU as PyTorch exports it before opset 20: `x · 0.5 · (1 + erf(x / √2))`.
    fn gelu_erf(&mut self, name: &str, x: &str) -> String {
        let sqrt2 = self.scalar(&format!("{name}/sqrt2"), std::f32::consts::SQRT_2);
        let one = self.scalar(&format!("{name}/one"), 1.0);
        let half = self.scalar(&format!("{name}/half"), 0.5);
        let d = self.node("Div", &format!("{name}/div"), &[x, &sqrt2], &[]);
        let e = self.node("Erf", &format!("{name}/erf"), &[&d], &[]);
        let a = self.node("Add", &format!("{name}/add"), &[&e, &one], &[]);
        let m = self.node("Mul", &format!("{name}/mul"), &[x, &a], &[]);
        self.node("Mul", name, &[&m, &half], &[])
    }

    fn finish(mut self, output: &str, path: &Path) -> Model {
        self.b.output(output);
        std::fs::write(path, self.b.to_bytes("test")).unwrap();
        Model::load(path).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// ConvNeXt-style (opset 17): patchify stem (4×4, stride 4), one block (depthwise 7×7, to
/// channels-last, LayerNorm, Linear, GELU as Erf, Linear, layer scale, back to channels-first,
/// residual), global pool and a Gemm classifier.
fn convnext(path: &Path) -> Model {
    let mut n = Net::new(17, 1);
    let stem = n.conv("stem", "image", [3, C, 1], [4, 4, 0]);
    let dw = n.conv("block/dwconv", &stem, [C, C, C], [7, 1, 3]);
    let last = n.transpose("block/to_channels_last", &dw, &[0, 2, 3, 1]);
    let ln = n.layer_norm("block/norm", &last, C);
    let up = n.linear("block/pwconv1", &ln, C, 4 * C);
    let act = n.gelu_erf("block/gelu", &up);
    let down = n.linear("block/pwconv2", &act, 4 * C, C);
    let gamma = n.weight("block.layer_scale", &[C], 0.5, 0.2);
    let scaled = n.node("Mul", "block/layer_scale", &[&down, &gamma], &[]);
    let first = n.transpose("block/to_channels_first", &scaled, &[0, 3, 1, 2]);
    let block = n.node("Add", "block", &[&stem, &first], &[]);
    let pool = n.node("GlobalAveragePool", "pool", &[&block], &[]);
    let flat = n.node(
        "Flatten",
        "flatten",
        &[&pool],
        &[("axis", AttrValue::Int(1))],
    );
    n.classifier(&flat);
    n.finish("logits", path)
}

/// ViT-style (opset 20): patch embedding (Conv 8×8 stride 8, Reshape, Transpose to
/// `[N, T, C]`), a class token expanded to the batch the way torchvision's export does it
/// (Shape, Gather, Concat, Equal/Where for `expand(n, -1, -1)`, Expand), position embedding,
/// one pre-LN block (attention: q/k/v Linear, heads by Reshape/Transpose, q·kᵀ by Einsum,
/// scale, Softmax, MatMul with v, heads merged, projection, residual; MLP with Gelu, residual),
/// a final LayerNorm, the class token (Gather on axis 1) and a Gemm head.
fn vit(path: &Path) -> Model {
    vit_of(path, 1)
}

/// [`vit`] with `blocks` blocks: the first's nodes are named `block/…`, the others'
/// `block{i}/…`.
fn vit_of(path: &Path, blocks: usize) -> Model {
    let mut n = Net::new(20, 2);
    let patches = n.conv("patch", "image", [3, C, 1], [PATCH, PATCH, 0]);
    let shape = n.ints("patch/flat_shape", &[0, C as i64, -1]);
    let flat = n.node("Reshape", "patch/flatten", &[&patches, &shape], &[]);
    let tokens = n.transpose("patch/tokens", &flat, &[0, 2, 1]);
    // The class token, expanded to the batch as `class_token.expand(n, -1, -1)` exports.
    let cls = n.weight("class_token", &[1, 1, C], 0.0, 0.5);
    let shape = n.node("Shape", "cls/shape", &["image"], &[]);
    n.b.int64_initializer("cls/zero", &[], &[0]);
    let batch = n.node("Gather", "cls/batch", &[&shape, "cls/zero"], &axis(0));
    let axes = n.ints("cls/axes", &[0]);
    let batch = n.node("Unsqueeze", "cls/batch_1d", &[&batch, &axes], &[]);
    let rest = n.ints("cls/minus_ones", &[-1, -1]);
    let wanted = n.node("Concat", "cls/wanted", &[&batch, &rest], &axis(0));
    let minus_one = n.ints("cls/minus_one", &[-1]);
    let keep = n.node("Equal", "cls/is_kept", &[&wanted, &minus_one], &[]);
    let ones = n.ints("cls/ones", &[1, 1, 1]);
    let target = n.node("Where", "cls/target", &[&keep, &ones, &wanted], &[]);
    let cls = n.node("Expand", "cls/expand", &[&cls, &target], &[]);
    let seq = n.node("Concat", "tokens", &[&cls, &tokens], &axis(1));
    let pos = n.weight("pos_embedding", &[1, TOKENS, C], 0.0, 0.5);
    let mut x = n.node("Add", "embed", &[&seq, &pos], &[]);
    for i in 0..blocks {
        let b = if i == 0 {
            "block".to_string()
        } else {
            format!("block{i}")
        };
        x = vit_block(&mut n, &b, &x);
    }
    let ln = n.layer_norm("ln", &x, C);
    n.b.int64_initializer("class/index", &[], &[0]);
    let cls = n.node("Gather", "class", &[&ln, "class/index"], &axis(1));
    n.classifier(&cls);
    n.finish("logits", path)
}

/// One pre-LN block of [`vit`] on tokens `x`, its nodes named `{b}/…`; returns its output, `b`.
fn vit_block(n: &mut Net, b: &str, x: &str) -> String {
    // Attention, pre-LN.
    let ln = n.layer_norm(&format!("{b}/ln_1"), x, C);
    let heads_shape = n.ints(
        &format!("{b}/attn/heads_shape"),
        &[0, 0, HEADS as i64, HEAD_DIM as i64],
    );
    let heads = |n: &mut Net, which: &str| {
        let name = format!("{b}/attn/{which}");
        let t = n.linear(&name, &ln, C, C);
        let split = n.node(
            "Reshape",
            &format!("{name}_split"),
            &[&t, &heads_shape],
            &[],
        );
        n.transpose(&format!("{name}_heads"), &split, &[0, 2, 1, 3])
    };
    let (q, k, v) = (heads(n, "q"), heads(n, "k"), heads(n, "v"));
    let eq = ("equation", AttrValue::String("bhqd,bhkd->bhqk".into()));
    let scores = n.node("Einsum", &format!("{b}/attn/scores"), &[&q, &k], &[eq]);
    let sqrt_d = n.scalar(&format!("{b}/attn/sqrt_d"), (HEAD_DIM as f32).sqrt());
    let scaled = n.node("Div", &format!("{b}/attn/scaled"), &[&scores, &sqrt_d], &[]);
    let attn = n.node(
        "Softmax",
        &format!("{b}/attn/softmax"),
        &[&scaled],
        &axis(-1),
    );
    let mixed = n.node("MatMul", &format!("{b}/attn/mix"), &[&attn, &v], &[]);
    let merged = n.transpose(&format!("{b}/attn/merge_heads"), &mixed, &[0, 2, 1, 3]);
    let shape = n.ints(&format!("{b}/attn/merged_shape"), &[0, 0, C as i64]);
    let merged = n.node(
        "Reshape",
        &format!("{b}/attn/merged"),
        &[&merged, &shape],
        &[],
    );
    let proj = n.linear(&format!("{b}/attn/proj"), &merged, C, C);
    let x = n.node("Add", &format!("{b}/attn_residual"), &[x, &proj], &[]);
    // MLP, pre-LN, with the opset-20 Gelu.
    let ln = n.layer_norm(&format!("{b}/ln_2"), &x, C);
    let up = n.linear(&format!("{b}/mlp/fc1"), &ln, C, 2 * C);
    let exact = ("approximate", AttrValue::String("none".into()));
    let act = n.node("Gelu", &format!("{b}/mlp/gelu"), &[&up], &[exact]);
    let down = n.linear(&format!("{b}/mlp/fc2"), &act, 2 * C, C);
    n.node("Add", b, &[&x, &down], &[])
}

/// A spatial transformer (opset 21): a localization branch (strided convolution, pooled, a
/// Gemm) makes θ, AffineGrid and GridSample warp the image by it (three ways), and a convolution, pooled and L2-normalized, feeds the classifier; TopK and ArgMax read
/// the logits. (GroupNormalization, which onnx's shape inference cannot type, is checked by the
/// ONNX node tests instead.)
fn spatial_transformer(path: &Path) -> Model {
    let mut n = Net::new(21, 3);
    let loc = n.conv("loc/conv", "image", [3, 8, 1], [4, 4, 0]);
    let loc = n.node("Relu", "loc/relu", &[&loc], &[]);
    let loc = n.node("GlobalAveragePool", "loc/pool", &[&loc], &[]);
    let loc = n.node("Flatten", "loc/flat", &[&loc], &[]);
    let w = n.weight("loc/fc.weight", &[6, 8], 0.0, 0.3);
    n.b.initializer(
        "loc/fc.bias",
        &HostTensor::f32(vec![6], vec![1.2, 0.1, 0.05, -0.1, 1.2, 0.0]),
    );
    let fc = n.node(
        "Gemm",
        "loc/fc",
        &[&loc, &w, "loc/fc.bias"],
        &[("transB", AttrValue::Int(1))],
    );
    let shape = n.ints("theta/shape", &[-1, 2, 3]);
    let theta = n.node("Reshape", "theta", &[&fc, &shape], &[]);
    let size = n.node("Shape", "size", &["image"], &[]);
    let grid = n.node("AffineGrid", "grid", &[&theta, &size], &[]);
    // Three samplings of the image by the grid, summed: PyTorch's default (bilinear, zeros),
    // bicubic with border padding and aligned corners, nearest with reflection. θ scales by
    // more than 1, so that points fall outside the image, where the paddings differ.
    let sample = |n: &mut Net, name: &str, mode: &str, padding: &str, align: i64| {
        let attrs = [
            ("mode", AttrValue::String(mode.into())),
            ("padding_mode", AttrValue::String(padding.into())),
            ("align_corners", AttrValue::Int(align)),
        ];
        n.node("GridSample", name, &["image", &grid], &attrs)
    };
    let linear = sample(&mut n, "warped", "linear", "zeros", 0);
    let cubic = sample(&mut n, "warped/cubic", "cubic", "border", 1);
    let nearest = sample(&mut n, "warped/nearest", "nearest", "reflection", 0);
    let warped = n.node("Sum", "warped/sum", &[&linear, &cubic, &nearest], &[]);
    let f = n.conv("features/conv", &warped, [3, C, 1], [4, 4, 0]);
    let act = n.node("Relu", STN_LAYER, &[&f], &[]);
    let pooled = n.node("GlobalAveragePool", "features/pool", &[&act], &[]);
    let flat = n.node("Flatten", "features/flat", &[&pooled], &[]);
    let emb = n.node("LpNormalization", "embedding", &[&flat], &axis(1));
    n.classifier(&emb);
    let k = n.ints("top/k", &[3]);
    n.b.node_outputs("TopK", "top", &["logits", &k], &["top", "top/indices"], &[])
        .node("ArgMax", "prediction", &["logits"], &axis(1))
        .output("top")
        .output("prediction");
    n.finish("logits", path)
}

/// The spatial transformer's channel layer behind the warp.
const STN_LAYER: &str = "features/relu";

fn axis(axis: i64) -> [(&'static str, AttrValue); 1] {
    [("axis", AttrValue::Int(axis))]
}

/// A seeded uniform-noise image batch of one: `[1, 3, SIZE, SIZE]` in [0, 1].
fn input(seed: u64) -> npy::Array {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = vec![1, 3, SIZE, SIZE];
    let data = (0..shape.iter().product())
        .map(|_| rng.random_range(0.0f32..1.0))
        .collect();
    npy::Array { shape, data }
}

/// onnxruntime's value of every node of the model at `path` on `x`, via ort_nodes.py.
fn onnxruntime_nodes(path: &Path, x: &npy::Array) -> Reference {
    let dir = path.with_extension("ort");
    let input = path.with_extension("input.npy");
    npy::write(&input, &x.shape, &x.data).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = support::venv_python();
    let out = Command::new(&python)
        .arg(root.join("tests/support/ort_nodes.py"))
        .args([path, &input, &dir])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "ort_nodes.py {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Reference::read(&dir, x.clone())
}

fn every_node_matches(name: &str, build: fn(&Path) -> Model) {
    let path = tmp("nodes").join(format!("{name}.onnx"));
    let model = build(&path);
    let reference = onnxruntime_nodes(&path, &input(7));
    let ops: std::collections::BTreeSet<&str> =
        reference.rows.iter().map(|r| r[2].as_str()).collect();
    let check = reference.check_every_node(name, model.network());
    let (abs, at) = &check.worst_abs;
    println!(
        "{name}: {} nodes match onnxruntime, {} of them folded at load (worst error {:.3} of tolerance; largest |diff| {abs:.1e}, at {at}); ops: {ops:?}",
        check.nodes, check.folded, check.worst
    );
    assert_eq!(check.nodes, model.network().nodes().len());
    // End to end, from the image alone.
    let net = model.network();
    let x = microscope::DynTensor::from_host(
        &reference.input.data,
        &reference.input.shape,
        net.device().burn(),
    );
    let got = net
        .forward(&[("image", x)], &["logits"])
        .unwrap()
        .remove(0)
        .to_vec();
    let want = reference.value("logits");
    assert!(
        support::reference::mismatch(&got, &want.data, 1e-3, 1e-4).is_none(),
        "{name}: logits {got:?}, onnxruntime {:?}",
        want.data
    );
}

#[test]
fn convnext_style_every_node_matches_onnxruntime() {
    every_node_matches("convnext", convnext);
}

#[test]
fn vit_style_every_node_matches_onnxruntime() {
    every_node_matches("vit", vit);
}

#[test]
fn spatial_transformer_every_node_matches_onnxruntime() {
    every_node_matches("spatial_transformer", spatial_transformer);
}

/// Feature visualization reaches the image through GridSample (both the pixels it reads and the
/// grid θ makes): a channel of the warped image, and one of the convolution behind it, rise.
#[test]
fn feature_visualization_through_a_spatial_transformer_rises() {
    let model = spatial_transformer(&tmp("fv").join("stn.onnx"));
    for (layer, unit) in [("warped", 0), (STN_LAYER, 2)] {
        let mut values = Vec::new();
        let vis = FeatureVis::default()
            .cache(None)
            .steps(64)
            .seed(2)
            .run_with(&model, layer, &[unit], &mut |p| values.push(p.value), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let first = values[0];
        println!(
            "{layer}:{unit}: step 0 {first:.3}, final image {:.3}",
            vis.activations[0]
        );
        assert!(vis.activations[0] > first + 0.1, "{layer}: {values:?}");
    }
}

#[test]
fn token_layers_have_one_unit_per_channel() {
    let model = vit(&tmp("units").join("vit.onnx"));
    let layer = model.layer(TOKEN_LAYER).unwrap();
    assert_eq!(layer.shape, vec![1, TOKENS, C]);
    assert_eq!(layer.units, C);
    assert!(
        layer.card().summary().contains(&format!("{C} units")),
        "{}",
        layer.card().summary()
    );
    assert!(model.unit(TOKEN_LAYER, C - 1).is_ok());
    let err = model.unit(TOKEN_LAYER, C).unwrap_err().to_string();
    assert!(err.contains(&format!("units 0..{C}")), "{err}");
    // The layer graph says so for every token layer, and its props (which the page shows)
    // carry the count.
    let graph = LayerGraph::new(&model).unwrap();
    let node = graph.nodes.iter().find(|n| n.name == TOKEN_LAYER).unwrap();
    assert_eq!((node.shape.clone(), node.units), (vec![1, TOKENS, C], C));
    let tokens = graph.nodes.iter().filter(|n| n.shape.len() == 3).count();
    assert!(graph
        .nodes
        .iter()
        .filter(|n| n.shape.len() == 3)
        .all(|n| n.units == n.shape[2]));
    let props = graph.props();
    let drawn = props["nodes"].as_array().unwrap();
    let drawn = drawn.iter().find(|n| n["name"] == TOKEN_LAYER).unwrap();
    assert_eq!(drawn["units"], C);
    println!(
        "{tokens} token layers in the graph, {TOKEN_LAYER}: {:?}, {} units",
        node.shape, node.units
    );
    // The gallery lists C units and computes those asked for.
    let options = GalleryOptions {
        feature_vis: FeatureVis::default().cache(None).steps(4),
        units: Some(vec![0, 1]),
        ..GalleryOptions::default()
    };
    let gallery = layer.gallery_with(&options, &mut |_| {}, None).unwrap();
    assert_eq!(gallery.units.len(), C);
    assert_eq!(
        gallery.units.iter().filter(|u| u.image.is_some()).count(),
        2
    );
}

#[test]
fn feature_visualization_of_a_token_channel_rises() {
    let model = vit(&tmp("fv").join("vit.onnx"));
    let unit = 5;
    let mut values = Vec::new();
    let vis = FeatureVis::default()
        .cache(None)
        .steps(96)
        .seed(3)
        .run_with(
            &model,
            TOKEN_LAYER,
            &[unit],
            &mut |p| values.push(p.value),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vis.images.dims(), vec![1, 3, SIZE, SIZE]);
    // Each step reports the objective on the image it then updates: the first is the start.
    let (first, last) = (values[0], *values.last().unwrap());
    let tail = &values[values.len() - 8..];
    let late = tail.iter().sum::<f32>() / tail.len() as f32;
    println!(
        "{TOKEN_LAYER}:{unit} (mean over {TOKENS} tokens): step 0 {first:.3}, step {} {last:.3} (mean of the last 8 {late:.3}); final image {:.3}",
        values.len(),
        vis.activations[0]
    );
    // What it maximized is the channel's mean over the tokens, as the layer computes them.
    let x = model.normalize(&vis.images).unwrap();
    let act = model
        .network()
        .forward(&[("image", x)], &[TOKEN_LAYER])
        .unwrap()
        .remove(0);
    let tokens = act.to_vec();
    let mean = (0..TOKENS).map(|t| tokens[t * C + unit]).sum::<f32>() / TOKENS as f32;
    assert!(
        (mean - vis.activations[0]).abs() < 1e-4,
        "{mean} vs {}",
        vis.activations[0]
    );
    assert!(
        late > first + 0.5 && vis.activations[0] > first + 0.5,
        "{values:?}"
    );
}

/// Neuron groups of a token layer lie over its patch grid: the class token is left out, and
/// the groups' maps and directions reproduce the patch tokens' activations as much as they say.
#[test]
fn neuron_groups_of_tokens_lie_over_the_patch_grid() {
    use microscope::technique::NeuronGroups;
    let dir = tmp("groups");
    let data = random_images(&dir);
    let model = vit(&dir.join("vit.onnx"));
    let side = SIZE / PATCH;
    let spec = microscope::data::ImageSpec::unit(3, SIZE, SIZE);
    let image = data
        .batch(0..1, &spec, model.network().device().burn())
        .unwrap();
    let result = NeuronGroups::default()
        .groups(3)
        .steps(4)
        .cache(None)
        .run(&model.layer(TOKEN_LAYER).unwrap(), &image)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((result.rows, result.cols), (side, side));
    let x = model.normalize(&image).unwrap();
    let act = model
        .network()
        .forward(&[("image", x)], &[TOKEN_LAYER])
        .unwrap()[0]
        .to_vec();
    // The patch tokens, 1.., against the groups' reconstruction.
    let (mut error, mut norm) = (0f64, 0f64);
    for p in 0..side * side {
        for c in 0..C {
            let a = act[(1 + p) * C + c].max(0.0) as f64;
            let x: f64 = (0..3)
                .map(|g| (result.maps[g][p] * result.directions[g][c]) as f64)
                .sum();
            error += (a - x).powi(2);
            norm += a * a;
        }
    }
    let explained = 1.0 - error / norm;
    println!(
        "{TOKEN_LAYER}: explained {explained:.4} (said {:.4}), negative {:.3}",
        result.explained, result.negative
    );
    assert!(
        (explained - result.explained as f64).abs() < 1e-3,
        "{explained} vs {}",
        result.explained
    );
    assert!(result.explained > 0.3);
    // After this layer each token goes its own way (LayerNorm and MLP per token) and the head
    // reads only the class token: the patch tokens' groups support no class, and the layer's
    // whole attribution, the class token's, is what the groups leave out.
    let target = microscope::technique::attribution::Target::Logit {
        node: "logits".into(),
        index: 0,
    };
    let support = result.attribution(&model, &target).unwrap();
    println!(
        "logits:0 from the groups {:?}, the rest {}",
        support.groups,
        support.rest()
    );
    assert!(support.groups.iter().all(|g| g.abs() < 1e-9), "{support:?}");
    assert!(support.total.abs() > 1e-3 && support.rest() == support.total);
    // Attention weights are distributions over keys, not activations at positions.
    let err = NeuronGroups::default()
        .run(&model.layer("block/attn/softmax").unwrap(), &image)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neuron groups of block/attn/softmax") && err.contains("softmax"),
        "{err}"
    );
}

/// A small folder of seeded random images, two classes of three, at the models' size.
fn random_images(dir: &Path) -> microscope::data::Dataset {
    let mut rng = 7u64;
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join("images").join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(SIZE as u32, SIZE as u32, |_, _| {
                let mut next = || {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (rng >> 56) as u8
                };
                image::Rgb([next(), next(), next()])
            });
            img.save(dir.join("images").join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    microscope::data::Dataset::image_folder(dir.join("images")).unwrap()
}

/// Every unit-view tab works on a token layer's unit: weights and attribution at the patch
/// embedding (the class token's branch, built from the input's shape, is not a path of the
/// pixels), and whole images as dataset examples, with the unit's heatmap over the patch grid.
#[test]
fn a_token_unit_view_has_every_tab() {
    use microscope::widget::unit_view::Body;
    use microscope::widget::ViewOptions;
    let dir = tmp("view");
    let data = random_images(&dir);
    let model = vit(&dir.join("vit.onnx")).with_dataset(data);
    let view = model
        .unit(TOKEN_LAYER, 5)
        .unwrap()
        .view_with(&ViewOptions {
            feature_vis: FeatureVis::default().cache(None).steps(8),
            diversity_samples: 2,
            examples: 2,
            weights: 4,
            ..ViewOptions::default()
        })
        .unwrap();
    assert!(view.unavailable().is_empty(), "{:?}", view.unavailable());
    for t in &view.tabs {
        match &t.body {
            Body::Weights { from, .. } => assert_eq!(from.as_deref(), Some("patch")),
            Body::Attribution { at, inputs, .. } => {
                assert_eq!(at, "patch");
                // Every method draws, the attention flow ones over the patch grid too.
                support::assert_methods_drawn(inputs, None);
                let rollout = inputs.iter().find(|i| i.id == "attention-rollout").unwrap();
                assert!(
                    rollout.note.contains("the mean row of every token"),
                    "{}",
                    rollout.note
                );
            }
            Body::DatasetExamples { top, heatmap, .. } => {
                assert!(top.iter().all(|e| e.heatmap.starts_with("data:image/png")));
                let side = SIZE / PATCH;
                let said = format!("the unit at each of the {side} × {side} patch tokens");
                assert!(
                    heatmap.as_deref().unwrap().starts_with(&said),
                    "{heatmap:?}"
                );
            }
            _ => {}
        }
    }
}

/// A whole input's heatmap lies over the patch grid: a token unit's values at the patch
/// tokens, and an attention head's weights from the class token to them, read back from the
/// layers' own activations on the example's image.
#[test]
fn dataset_examples_of_tokens_and_attention_heads_lie_over_the_patch_grid() {
    use microscope::technique::dataset_examples::DatasetExamples;
    let dir = tmp("grid");
    let data = random_images(&dir);
    let model = vit(&dir.join("vit.onnx"));
    let side = SIZE / PATCH;
    let settings = DatasetExamples {
        k: 2,
        ..DatasetExamples::default()
    };
    let spec = microscope::data::ImageSpec::unit(3, SIZE, SIZE);
    let device = model.network().device().burn().clone();
    let activation = |layer: &str, index: usize| {
        let x = data.batch(index..index + 1, &spec, &device).unwrap();
        let x = model.normalize(&x).unwrap();
        let act = model.network().forward(&[("image", x)], &[layer]).unwrap();
        act[0].to_vec()
    };
    let unit = 5;
    let found = settings
        .run(&model, &data, TOKEN_LAYER, &[unit])
        .unwrap()
        .remove(0);
    assert!(found
        .heatmap
        .unwrap()
        .contains(&format!("{side} × {side} patch tokens")));
    for e in found.top.iter().chain(&found.bottom) {
        assert_eq!(e.map, (side, side));
        let act = activation(TOKEN_LAYER, e.index);
        let patches: Vec<f32> = (1..TOKENS).map(|t| act[t * C + unit]).collect();
        let close = e
            .heatmap
            .iter()
            .zip(&patches)
            .all(|(a, b)| (a - b).abs() < 1e-4);
        assert!(close, "{:?} vs {patches:?}", e.heatmap);
    }
    let attention = "block/attn/softmax";
    let head = 1;
    let found = settings
        .run(&model, &data, attention, &[head])
        .unwrap()
        .remove(0);
    let said = found.heatmap.unwrap();
    let expected = format!(
        "where the first token (the class token) attends: its weight on each of the {side} × \
         {side} patch tokens"
    );
    assert_eq!(said, expected);
    for e in found.top.iter().chain(&found.bottom) {
        assert_eq!(e.map, (side, side));
        // [N, heads, queries, keys]: the class token's row of this head, patch keys only.
        let act = activation(attention, e.index);
        let row = head * TOKENS * TOKENS;
        let weights = &act[row + 1..row + TOKENS];
        let close = e
            .heatmap
            .iter()
            .zip(weights)
            .all(|(a, b)| (a - b).abs() < 1e-4);
        assert!(close, "{:?} vs {weights:?}", e.heatmap);
        assert!(weights.iter().sum::<f32>() < 1.0);
    }
}

/// A text recognizer's shape: convolution features read as a sequence by a bidirectional LSTM.
/// The LSTM's own output (`[steps, directions, batch, hidden]`) has no units; the token layer
/// the exporter makes of it (`[N, T, directions·hidden]`) does, and feature visualization of
/// one of its channels rises through the recurrence.
#[test]
fn a_recurrent_layer_is_viewed_through_the_token_layer_after_it() {
    use microscope::import::builder::OnnxBuilder;
    const HIDDEN: usize = 3;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut random = |dims: Vec<usize>, spread: f32| {
        let n = dims.iter().product();
        HostTensor::f32(
            dims,
            (0..n).map(|_| rng.random_range(-spread..spread)).collect(),
        )
    };
    let mut o = OnnxBuilder::new();
    o.input("image", &[0, 3, 16, 16])
        .initializer("w", &random(vec![4, 3, 4, 4], 0.5))
        .initializer("lw", &random(vec![2, 4 * HIDDEN, 4], 0.8))
        .initializer("lr", &random(vec![2, 4 * HIDDEN, HIDDEN], 0.8))
        .int64_initializer("seq", &[3], &[-1, 4, 16])
        .int64_initializer("tok", &[3], &[-1, 16, 2 * HIDDEN as i64])
        .node(
            "Conv",
            "features",
            &["image", "w"],
            &[("strides", AttrValue::Ints(vec![4, 4]))],
        )
        .node("Reshape", "columns", &["features", "seq"], &[])
        .node(
            "Transpose",
            "steps",
            &["columns"],
            &[("perm", AttrValue::Ints(vec![2, 0, 1]))],
        )
        .node(
            "LSTM",
            "lstm",
            &["steps", "lw", "lr"],
            &[
                ("hidden_size", AttrValue::Int(HIDDEN as i64)),
                ("direction", AttrValue::String("bidirectional".into())),
            ],
        )
        .node(
            "Transpose",
            "batch_first",
            &["lstm"],
            &[("perm", AttrValue::Ints(vec![2, 0, 1, 3]))],
        )
        .node("Reshape", "tokens", &["batch_first", "tok"], &[])
        .output("tokens");
    let path = tmp("recurrent").join("crnn.onnx");
    std::fs::write(&path, o.to_bytes("crnn")).unwrap();
    let model = Model::load(&path).unwrap();
    assert_eq!(model.layer("lstm").unwrap().units, 0);
    let err = model.unit("lstm", 0).unwrap_err().to_string();
    assert!(
        err.contains("units 0..0") && err.contains("view the layer after it"),
        "{err}"
    );
    assert_eq!(model.layer("tokens").unwrap().units, 2 * HIDDEN);
    let graph = LayerGraph::new(&model).unwrap();
    let units = |name: &str| graph.nodes.iter().find(|n| n.name == name).unwrap().units;
    assert_eq!((units("lstm"), units("tokens")), (0, 2 * HIDDEN));
    let mut values = Vec::new();
    let vis = FeatureVis::default()
        .cache(None)
        .steps(64)
        .seed(1)
        .run_with(&model, "tokens", &[4], &mut |p| values.push(p.value), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let first = values[0];
    assert!(vis.activations[0] > first + 0.1, "{values:?}");
}

/// onnxruntime's fused transformer ops (domain com.microsoft: Attention, SkipLayerNormalization
/// and the GELUs, as its transformer optimizer and Hugging Face Optimum's `--optimize` write
/// them into ViTs) compute what onnxruntime computes: two blocks made of them, written and run
/// by tests/support/transformer_ops.py, every node's output within 1e-5. Each fused op that
/// microscope lowers is in the model, and an attention's parts are layers of their own: its
/// queries (a unit per channel) and its attention weights (a unit per head). And the ViT of
/// `tests/reference/pytorch_export`, run through the optimizer, gives onnxruntime's logits.
#[test]
fn onnxruntimes_fused_transformer_ops_compute_what_onnxruntime_computes() {
    let dir = tmp("transformer_ops");
    let vit = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/pytorch_export/vit.onnx");
    support::run_script("transformer_ops.py", &[dir.as_os_str(), vit.as_os_str()]);
    let model = Model::load(dir.join("model.onnx")).unwrap();
    let net = model.network();
    let file = std::fs::read(dir.join("model.onnx")).unwrap();
    let file = microscope::import::stream::read_model(file.as_slice(), file.len() as u64).unwrap();
    let ops: Vec<String> = file
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect();
    for lowered in microscope::network::lower::LOWERED {
        // The quantized ones are tests/exporters.rs's.
        let quantized = lowered.into.contains("DequantizeLinear");
        if lowered.domain == "com.microsoft" && !quantized {
            assert!(
                ops.iter().any(|o| o == lowered.name),
                "{} is not in the model",
                lowered.name
            );
        }
    }
    let x = npy::read(&dir.join("x.npy")).unwrap();
    let x = microscope::DynTensor::from_host(&x.data, &x.shape, net.device().burn());
    let outputs = net.outputs().to_vec();
    let targets: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let got = net.forward(&[("x", x)], &targets).unwrap();
    for (name, got) in outputs.iter().zip(got) {
        let want = npy::read(&dir.join(format!("{name}.npy"))).unwrap();
        assert_eq!(got.dims(), want.shape, "{name}");
        let got = got.to_vec();
        let off = support::reference::mismatch(&got, &want.data, 1e-5, 1e-5);
        assert!(off.is_none(), "{name}: {off:?}");
    }
    assert_eq!(model.layer("attention/query").unwrap().units, 8);
    let weights = model.layer("attention2/attention").unwrap();
    assert_eq!((weights.op.as_str(), weights.units), ("Softmax", 4));
    let weights = model.layer("mha/attention").unwrap();
    assert_eq!((weights.op.as_str(), weights.units), ("Softmax", 2));
    println!("{} outputs match onnxruntime; ops {ops:?}", outputs.len());

    // MultiHeadAttention on keys and values split by head, [B, heads, L, head], is refused.
    let err = Model::load(dir.join("mha_by_head.onnx"))
        .and_then(|m| m.layer("mha_by_head").map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mha_by_head/key_as_tokens") && err.contains("of 4 axes"),
        "{err}"
    );

    // What the optimizer itself makes of a ViT as PyTorch exports it.
    let vit = Model::load(dir.join("vit_optimized.onnx")).unwrap();
    let net = vit.network();
    let x = npy::read(&dir.join("vit_x.npy")).unwrap();
    let x = microscope::DynTensor::from_host(&x.data, &x.shape, net.device().burn());
    let logits = net.outputs()[0].clone();
    let got = net.forward(&[("image", x)], &[&logits]).unwrap().remove(0);
    let want = npy::read(&dir.join("vit_logits.npy")).unwrap();
    let off = support::reference::mismatch(&got.to_vec(), &want.data, 1e-5, 1e-5);
    assert!(off.is_none(), "optimized ViT logits: {off:?}");
}

/// Attention rollout and gradient-weighted rollout of a three-block ViT, checked against the
/// textbook computation: the full T × T products of the attention layers' own weights (read
/// with `forward`), and for the gradients, each layer's gradient taken on its own by feeding
/// its weights back as a leaf (activation patching), not by the one backward pass the method
/// uses. The class logit's map is the class token's row; a token unit's, the mean row.
#[test]
fn attention_flow_is_the_rollout_of_the_layers_own_weights_and_gradients() {
    use microscope::network::DynTensor;
    use microscope::technique::attention_flow::{attention_flow, attention_layers, Flow};
    use microscope::technique::attribution::Target;
    use microscope::technique::input_attribution::{methods_for, InputAttribution};
    let dir = tmp("flow");
    let model = vit_of(&dir.join("vit3.onnx"), 3);
    let net = model.network();
    let x = input(11);
    let device = net.device().burn().clone();
    let image = DynTensor::from_host(&x.data, &x.shape, &device);
    let layers = [
        "block/attn/softmax",
        "block1/attn/softmax",
        "block2/attn/softmax",
    ];
    let logit = |index| Target::Logit {
        node: "logits".into(),
        index,
    };
    let unit = Target::Unit {
        layer: "block1/attn_residual".into(),
        index: 3,
    };
    assert_eq!(attention_layers(&model, &logit(0)).unwrap(), layers);
    assert_eq!(attention_layers(&model, &unit).unwrap(), &layers[..2]);
    let ids: Vec<&str> = methods_for(&model, &unit).iter().map(|m| m.id).collect();
    assert!(
        ids.ends_with(&["attention-rollout", "gradient-rollout"]),
        "{ids:?}"
    );

    // Each layer's weights [heads, T, T] as the network computes them.
    let normalized = model.normalize(&image).unwrap();
    let weights: Vec<Vec<f32>> = net
        .forward(&[("image", normalized.clone())], &layers)
        .unwrap()
        .iter()
        .map(DynTensor::to_vec)
        .collect();
    // The gradient of `target` with respect to layer k's weights, that layer fed as a leaf.
    let gradient = |target: &Target, k: usize| -> Vec<f32> {
        let leaf = DynTensor::from_host(&weights[k], &[1, HEADS, TOKENS, TOKENS], &device)
            .detached()
            .require_grad();
        let tensor = net.node(layers[k]).unwrap().outputs[0].clone();
        let feeds = [
            ("image", normalized.detached()),
            (tensor.as_str(), leaf.clone()),
        ];
        let out = net.forward(&feeds, &[target.node()]).unwrap().remove(0);
        let value = match target {
            Target::Logit { index, .. } => {
                DynTensor::new(out.to_rank::<2>().unwrap().narrow(1, *index, 1))
            }
            Target::Unit { index, .. } => {
                DynTensor::new(out.to_rank::<3>().unwrap().narrow(2, *index, 1).mean())
            }
        };
        leaf.grad(&value.backward()).unwrap().to_vec()
    };
    // R = M_L ⋯ M_1 as full matrices, M = keep·I + mix·(head mean of f(A, ∇A)).
    let rollout = |target: &Target, count: usize, gradients: bool| -> Vec<f32> {
        let t = TOKENS;
        let mut r: Vec<f32> = (0..t * t).map(|i| f32::from(i % (t + 1) == 0)).collect();
        for (k, a) in weights.iter().enumerate().take(count) {
            let g = gradients.then(|| gradient(target, k));
            let (keep, mix) = if gradients { (1.0, 1.0) } else { (0.5, 0.5) };
            let mut m = vec![0.0f32; t * t];
            for h in 0..HEADS {
                for i in 0..t * t {
                    let v = a[h * t * t + i];
                    let v = g.as_ref().map_or(v, |g| (v * g[h * t * t + i]).max(0.0));
                    m[i] += mix * v / HEADS as f32;
                }
            }
            (0..t).for_each(|i| m[i * t + i] += keep);
            // r ← M · r
            let mut next = vec![0.0f32; t * t];
            for i in 0..t {
                for j in 0..t {
                    next[i * t + j] = (0..t).map(|l| m[i * t + l] * r[l * t + j]).sum();
                }
            }
            r = next;
        }
        r
    };
    let class_row = |r: &[f32]| r[1..TOKENS].to_vec();
    let mean_row = |r: &[f32]| -> Vec<f32> {
        (1..TOKENS)
            .map(|j| (0..TOKENS).map(|i| r[i * TOKENS + j]).sum::<f32>() / TOKENS as f32)
            .collect()
    };
    let close = |what: &str, ours: &[f32], expected: &[f32]| {
        let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(expected)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{what}: max |ours − textbook| = {err:.2e} of {scale:.3}");
        assert_eq!(ours.len(), expected.len());
        assert!(err <= 1e-4 * scale, "{what}: {ours:?} vs {expected:?}");
    };
    let side = SIZE / PATCH;
    for (target, count, class_token) in [(logit(3), 3, true), (unit.clone(), 2, false)] {
        for flow in [Flow::Rollout, Flow::Gradient] {
            let f = attention_flow(&model, &image, &target, flow).unwrap();
            assert_eq!((f.grid.skip, f.grid.rows, f.grid.cols), (1, side, side));
            assert_eq!(f.layers, &layers[..count]);
            assert_eq!(f.class_token, class_token);
            let r = rollout(&target, count, flow == Flow::Gradient);
            let expected = if class_token {
                class_row(&r)
            } else {
                mean_row(&r)
            };
            close(
                &format!("{flow:?} toward {}", target.node()),
                &f.map,
                &expected,
            );
            assert!(f.map.iter().all(|&v| v >= 0.0));
            assert!(f.map.iter().any(|&v| v > 0.0));
        }
    }
    // Rollout knows no target; its gradient-weighted form does.
    let of = |index, flow| {
        attention_flow(&model, &image, &logit(index), flow)
            .unwrap()
            .map
    };
    assert_eq!(of(0, Flow::Rollout), of(5, Flow::Rollout));
    assert_ne!(of(0, Flow::Gradient), of(5, Flow::Gradient));
    // As input attributions: upsampled from the 4 × 4 grid to the image, one line on where.
    let m = InputAttribution::default()
        .run("gradient-rollout", &model, &image, &logit(3))
        .unwrap();
    assert_eq!((m.dims, m.map.len()), ([3, SIZE, SIZE], SIZE * SIZE));
    assert_eq!(
        m.detail.as_deref(),
        Some(
            "3 attention layers, block/attn/softmax to block2/attn/softmax; the class token's \
             row over the 4 × 4 patches"
        )
    );
    // A CNN has no attention: the methods are not offered, and asked for, they say why.
    let convnext = convnext(&dir.join("convnext.onnx"));
    let ids: Vec<&str> = methods_for(&convnext, &logit(0))
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(!ids.contains(&"attention-rollout"), "{ids:?}");
    let err = InputAttribution::default()
        .run("attention-rollout", &convnext, &image, &logit(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("logits is computed from no attention layer"),
        "{err}"
    );
}
