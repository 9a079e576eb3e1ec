//! Ops that run as a few ops of the table ([`ops::OPS`](super::ops::OPS)): the integer ops of
//! quantized models. ONNX's QLinearConv and QLinearMatMul (the "operator" format), ConvInteger
//! and MatMulInteger (onnxruntime's dynamic quantization), and onnxruntime's own QLinear ops
//! (domain `com.microsoft`: QLinearAdd, QLinearConcat, QLinearGlobalAveragePool, …), which its
//! quantizer and Intel's Neural Compressor write beside them (the ONNX Model Zoo's `-int8`
//! models).
//!
//! Each becomes what the QDQ format writes for it: its quantized inputs dequantized, the float
//! op, and the result quantized again. So the quantized weights are dequantized once, when the
//! network loads (constant folding), instead of on every evaluation; the float op keeps the
//! node's name, and its units are the layer's real values before they are rounded to integers;
//! and the gradient through it is the straight-through one of QuantizeLinear.
//!
//! The float sums equal the integer ones as long as they stay below 2^24 in magnitude; larger
//! ones round in the last place, and a value that lands within that of a rounding boundary is
//! quantized one step off onnxruntime's (a few in 10^5 per layer, on the light models).
//!
//! Also onnxruntime's fused transformer ops, which its transformer optimizer (and Hugging Face
//! Optimum's `--optimize`) writes into ViTs and other transformers: Attention,
//! SkipLayerNormalization and the GELUs. Each becomes the ops it fuses, so that its parts are
//! layers of their own: an attention's queries, keys, values and attention weights.
//!
//! And ONNX's own Attention and RMSNormalization (opset 23), which PyTorch's exporter writes
//! from opset 23 on, and RotaryEmbedding ([`transformer`]).

use std::collections::{HashMap, HashSet};

use super::node::{Attr, Node};
use super::value::{Elem, HostTensor};
use super::InputSpec;
use crate::error::{Error, Result};

mod transformer;

/// One op that runs lowered.
pub struct Lowering {
    /// The op's domain: empty for ONNX's own.
    pub domain: &'static str,
    /// The op type.
    pub name: &'static str,
    /// The versions of the op (ONNX opsets) whose semantics the lowering implements.
    pub opsets: &'static str,
    /// The ops of the table it becomes.
    pub into: &'static str,
    lower: fn(&mut Lowerer, &Node) -> Result<Vec<Node>>,
}

impl Lowering {
    /// The op's specification: its page in the ONNX operator documentation, or in
    /// onnxruntime's for its own ops.
    pub fn spec_url(&self) -> String {
        match self.domain {
            "" => format!("https://onnx.ai/onnx/operators/onnx__{}.html", self.name),
            domain => format!(
                "https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#{domain}.{}",
                self.name
            ),
        }
    }
}

/// Every op that runs lowered, by domain and name.
pub static LOWERED: &[Lowering] = &[
    Lowering {
        domain: "",
        name: "Attention",
        opsets: "23–25",
        into: "MatMul, Mul, Add, Softmax, Where, Reshape, Transpose, Shape, Range",
        lower: transformer::onnx_attention,
    },
    Lowering {
        domain: "",
        name: "ConvInteger",
        opsets: "10",
        into: "DequantizeLinear, Conv",
        lower: conv_integer,
    },
    Lowering {
        domain: "",
        name: "MatMulInteger",
        opsets: "10",
        into: "DequantizeLinear, MatMul",
        lower: matmul_integer,
    },
    Lowering {
        domain: "",
        name: "RMSNormalization",
        opsets: "23",
        into: "Mul, ReduceMean, Add, Sqrt, Div",
        lower: transformer::rms_normalization,
    },
    Lowering {
        domain: "",
        name: "RotaryEmbedding",
        opsets: "23",
        into: "Slice, Gather, Mul, Sub, Add, Concat",
        lower: transformer::rotary_embedding,
    },
    Lowering {
        domain: "",
        name: "QLinearConv",
        opsets: "10",
        into: "DequantizeLinear, Conv, QuantizeLinear",
        lower: qlinear_conv,
    },
    Lowering {
        domain: "",
        name: "QLinearMatMul",
        opsets: "10–21",
        into: "DequantizeLinear, MatMul, QuantizeLinear",
        lower: qlinear_matmul,
    },
    Lowering {
        domain: MICROSOFT,
        name: "QGemm",
        opsets: "1",
        into: "DequantizeLinear, Gemm, QuantizeLinear",
        lower: qgemm,
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearAdd",
        opsets: "1",
        into: "DequantizeLinear, Add, QuantizeLinear",
        lower: |l, n| binary(l, n, "Add"),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearAveragePool",
        opsets: "1",
        into: "DequantizeLinear, AveragePool, QuantizeLinear",
        lower: |l, n| unary(l, n, "AveragePool", POOL_ATTRS),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearConcat",
        opsets: "1",
        into: "DequantizeLinear, Concat, QuantizeLinear",
        lower: concat,
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearGlobalAveragePool",
        opsets: "1",
        into: "DequantizeLinear, GlobalAveragePool, QuantizeLinear",
        lower: |l, n| unary(l, n, "GlobalAveragePool", &[]),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearLeakyRelu",
        opsets: "1",
        into: "DequantizeLinear, LeakyRelu, QuantizeLinear",
        lower: |l, n| unary(l, n, "LeakyRelu", &["alpha"]),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearMul",
        opsets: "1",
        into: "DequantizeLinear, Mul, QuantizeLinear",
        lower: |l, n| binary(l, n, "Mul"),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearSigmoid",
        opsets: "1",
        into: "DequantizeLinear, Sigmoid, QuantizeLinear",
        lower: |l, n| unary(l, n, "Sigmoid", &[]),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QLinearSoftmax",
        opsets: "1",
        into: "DequantizeLinear, Softmax, QuantizeLinear",
        lower: softmax,
    },
    Lowering {
        domain: MICROSOFT,
        name: "Attention",
        opsets: "1",
        into: "MatMul, Add, Reshape, Transpose, Mul, Softmax",
        lower: attention,
    },
    Lowering {
        domain: MICROSOFT,
        name: "MultiHeadAttention",
        opsets: "1",
        into: "Split, Add, Transpose, then ONNX's Attention",
        lower: multi_head_attention,
    },
    Lowering {
        domain: MICROSOFT,
        name: "BiasGelu",
        opsets: "1",
        into: "Add, Gelu",
        lower: |l, n| gelu(l, n, "none"),
    },
    Lowering {
        domain: MICROSOFT,
        name: "FastGelu",
        opsets: "1",
        into: "Add, Gelu",
        lower: |l, n| gelu(l, n, "tanh"),
    },
    Lowering {
        domain: MICROSOFT,
        name: "Gelu",
        opsets: "1",
        into: "Gelu",
        lower: |l, n| gelu(l, n, "none"),
    },
    Lowering {
        domain: MICROSOFT,
        name: "QuickGelu",
        opsets: "1",
        into: "Mul, Sigmoid",
        lower: quick_gelu,
    },
    Lowering {
        domain: MICROSOFT,
        name: "SkipLayerNormalization",
        opsets: "1",
        into: "Add, LayerNormalization",
        lower: skip_layer_norm,
    },
];

/// onnxruntime's domain.
const MICROSOFT: &str = "com.microsoft";

/// The lowering of op `op` of `domain` (empty for ONNX's own), if it runs lowered.
pub fn spec(domain: &str, op: &str) -> Option<&'static Lowering> {
    LOWERED.iter().find(|l| l.domain == domain && l.name == op)
}

/// The input of a node that quantizes its output whose element type is the output's: its output
/// zero point. The importer reads that type from the file and gives it to the node as
/// `output_dtype` (QuantizeLinear's attribute for it since opset 21).
pub fn output_zero_point(domain: &str, op: &str) -> Option<usize> {
    Some(match (domain, op) {
        ("", "QuantizeLinear") => 2,
        ("", "QLinearConv" | "QLinearMatMul") | (MICROSOFT, "QLinearAdd" | "QLinearMul") => 7,
        (MICROSOFT, "QLinearConcat") => 1,
        (MICROSOFT, "QGemm") => 8,
        (MICROSOFT, op) if op.starts_with("QLinear") && spec(domain, op).is_some() => 4,
        _ => return None,
    })
}

/// Replaces every node of a lowered op by the nodes it runs as. New tensors and constants are
/// named after the node (`conv1/weight`), apart from every name the file uses.
///
/// A constant that a lowering replaced by its parts (Attention's weights, split into the
/// queries', keys' and values') is dropped when nothing else reads it.
pub(crate) fn lower(
    nodes: Vec<Node>,
    constants: &mut HashMap<String, HostTensor>,
    inputs: &[InputSpec],
    outputs: &[String],
) -> Result<Vec<Node>> {
    if !nodes.iter().any(|n| spec(&n.domain, &n.op).is_some()) {
        return Ok(nodes);
    }
    let mut tensors: HashSet<String> = constants.keys().cloned().collect();
    for n in &nodes {
        tensors.extend(n.inputs.iter().chain(&n.outputs).cloned());
    }
    let mut taken = tensors.clone();
    taken.extend(nodes.iter().map(|n| n.name.clone()));
    // DynamicQuantizeLinear's scale and zero point are scalars.
    let scalars = nodes
        .iter()
        .filter(|n| n.domain.is_empty() && n.op == "DynamicQuantizeLinear")
        .flat_map(|n| n.outputs.iter().skip(1).cloned())
        .collect();
    let booleans = booleans(&nodes, constants, inputs);
    let mut lowerer = Lowerer {
        constants,
        tensors,
        taken,
        scalars,
        booleans,
        replaced: Vec::new(),
    };
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        match spec(&node.domain, &node.op) {
            Some(l) => out.extend((l.lower)(&mut lowerer, &node)?),
            None => out.push(node),
        }
    }
    if !lowerer.replaced.is_empty() {
        let read: HashSet<&String> = out.iter().flat_map(|n| &n.inputs).chain(outputs).collect();
        for name in &lowerer.replaced {
            if !read.contains(name) {
                lowerer.constants.remove(name);
            }
        }
    }
    Ok(out)
}

/// The tensors of a graph that hold booleans, as far as it says: boolean inputs and constants,
/// what comparisons, logic ops and casts to BOOL make, and what ops that move values around make
/// of them. ONNX's Attention takes a boolean mask (which keys to attend to) or a float one (a
/// bias added to the scores), and the runtime's values only say which once they are computed.
fn booleans(
    nodes: &[Node],
    constants: &HashMap<String, HostTensor>,
    inputs: &[InputSpec],
) -> HashSet<String> {
    let mut known: HashSet<String> = constants
        .iter()
        .filter(|(_, c)| c.elem == Elem::Bool)
        .map(|(name, _)| name.clone())
        .chain(
            inputs
                .iter()
                .filter(|i| i.elem == Some(Elem::Bool))
                .map(|i| i.name.clone()),
        )
        .collect();
    for n in nodes.iter().filter(|n| n.domain.is_empty()) {
        let reads = |i: usize| n.inputs.get(i).is_some_and(|t| known.contains(t));
        let boolean = match n.op.as_str() {
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            | "Xor" | "Not" | "IsNaN" | "IsInf" => true,
            "Cast" => n.int("to", 0).ok() == Some(9),
            "Constant" => {
                matches!(n.attrs.get("value"), Some(Attr::Tensor(t)) if t.elem == Elem::Bool)
            }
            "Identity" | "Reshape" | "Unsqueeze" | "Squeeze" | "Expand" | "Transpose"
            | "Flatten" | "Slice" | "Gather" | "Tile" | "Pad" => reads(0),
            "Concat" => (0..n.inputs.len()).any(reads),
            "Where" => reads(1),
            _ => false,
        };
        if boolean {
            known.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    known
}

struct Lowerer<'a> {
    constants: &'a mut HashMap<String, HostTensor>,
    /// The tensor names of the graph.
    tensors: HashSet<String>,
    /// Every node and tensor name in use.
    taken: HashSet<String>,
    /// Tensors known to be scalars without being constants.
    scalars: HashSet<String>,
    /// Tensors known to hold booleans ([`booleans`]).
    booleans: HashSet<String>,
    /// Constants that a lowering replaced by its parts.
    replaced: Vec<String>,
}

impl Lowerer<'_> {
    /// A name not in use, from `base`.
    fn fresh(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 2;
        while !self.taken.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// A node of `op` made for `from`, named `{from}/{role}`, or for the role `""` `from`
    /// itself: unless a tensor has that name (its output, which the node's last op makes), as no
    /// node is named after another's tensor (see `import::naming`): then `{from}/{op}`. It has
    /// one output of its own unless `output` is given.
    fn node(
        &mut self,
        from: &Node,
        op: &str,
        role: &str,
        inputs: Vec<String>,
        output: Option<String>,
        attrs: Vec<(&str, Attr)>,
    ) -> Node {
        let name = match role {
            "" if !self.tensors.contains(&from.name) => from.name.clone(),
            "" => self.fresh(format!("{}/{}", from.name, op.to_lowercase())),
            role => self.fresh(format!("{}/{role}", from.name)),
        };
        let output = output.unwrap_or_else(|| self.fresh(format!("{name}:0")));
        Node {
            name,
            op: op.into(),
            domain: String::new(),
            opset: from.opset,
            inputs,
            outputs: vec![output],
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            source_name: from.source_name.clone(),
        }
    }

    /// A scale of ones for zero point `zero`, shaped like it: a constant where the zero point
    /// is a constant, absent or DynamicQuantizeLinear's (a scalar); else computed from its
    /// shape (Shape, then ConstantOfShape).
    fn ones_like(&mut self, from: &Node, zero: &str, out: &mut Vec<Node>) -> String {
        let known = match self.constants.get(zero) {
            Some(c) => Some(c.shape.clone()),
            None if zero.is_empty() || self.scalars.contains(zero) => Some(vec![]),
            None => None,
        };
        if let Some(shape) = known {
            let name = self.fresh(format!("{}/one", from.name));
            let n = shape.iter().product();
            let ones = HostTensor::f32(shape, vec![1.0; n]);
            self.constants.insert(name.clone(), ones);
            return name;
        }
        let shape = self.node(from, "Shape", "one_shape", vec![zero.into()], None, vec![]);
        let one = Attr::Tensor(HostTensor::f32(vec![1], vec![1.0]));
        let inputs = vec![shape.outputs[0].clone()];
        let ones = self.node(
            from,
            "ConstantOfShape",
            "one",
            inputs,
            None,
            vec![("value", one)],
        );
        let name = ones.outputs[0].clone();
        out.extend([shape, ones]);
        name
    }
}

/// Input `i` of `node`, or `""` (absent) past its end.
fn input(node: &Node, i: usize) -> String {
    node.inputs.get(i).cloned().unwrap_or_default()
}

/// The node's attributes named in `keep`.
fn attrs_of(node: &Node, keep: &[&'static str]) -> Vec<(&'static str, Attr)> {
    keep.iter()
        .filter_map(|&k| node.attrs.get(k).map(|v| (k, v.clone())))
        .collect()
}

const CONV_ATTRS: &[&str] = &[
    "auto_pad",
    "dilations",
    "group",
    "kernel_shape",
    "pads",
    "strides",
];

/// `min` to `max` inputs and one output.
fn check_arity(node: &Node, min: usize, max: usize) -> Result<()> {
    check_counts(node, min..=max, 1..=1)
}

fn check_counts(
    node: &Node,
    inputs: std::ops::RangeInclusive<usize>,
    outputs: std::ops::RangeInclusive<usize>,
) -> Result<()> {
    let (k, m) = (node.inputs.len(), node.outputs.len());
    if inputs.contains(&k) && outputs.contains(&m) {
        return Ok(());
    }
    let count = |r: &std::ops::RangeInclusive<usize>, what: &str| match (r.start(), r.end()) {
        (1, 1) => format!("one {what}"),
        (a, b) if a == b => format!("{a} {what}s"),
        (a, b) => format!("{a} to {b} {what}s"),
    };
    Err(Error::node(
        &node.name,
        &node.op,
        format!(
            "expects {} and {}, has {k} and {m}",
            count(&inputs, "input"),
            count(&outputs, "output")
        ),
    ))
}

/// `y = quantize(conv(dequantize(x), dequantize(w)) + dequantize(B))`; B is INT32 at scale
/// `x_scale · w_scale`.
fn qlinear_conv(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 8, 9)?;
    let [x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias] =
        std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let xf = l.node(
        n,
        dq,
        "input",
        vec![x, x_scale.clone(), x_zero],
        None,
        vec![],
    );
    // One scale per output channel: axis 0 of the weight.
    let per_channel = || vec![("axis", Attr::Int(0))];
    let wf = l.node(
        n,
        dq,
        "weight",
        vec![w, w_scale.clone(), w_zero],
        None,
        per_channel(),
    );
    let mut conv_inputs = vec![xf.outputs[0].clone(), wf.outputs[0].clone()];
    let mut out = vec![xf, wf];
    conv_inputs.extend(bias_of(l, n, bias, x_scale, w_scale, &mut out));
    let conv = l.node(n, "Conv", "", conv_inputs, None, attrs_of(n, CONV_ATTRS));
    let q = quantize(l, n, &conv, y_scale, y_zero);
    out.extend([conv, q]);
    Ok(out)
}

/// An INT32 bias dequantized at the scale of the product it is added to, `input_scale ·
/// weight_scale` (one per output channel where the weight's is), or nothing where it is absent.
fn bias_of(
    l: &mut Lowerer,
    n: &Node,
    bias: String,
    input_scale: String,
    weight_scale: String,
    out: &mut Vec<Node>,
) -> Option<String> {
    if bias.is_empty() {
        return None;
    }
    let scales = vec![input_scale, weight_scale];
    let scale = l.node(n, "Mul", "bias_scale", scales, None, vec![]);
    let inputs = vec![bias, scale.outputs[0].clone()];
    let per_channel = vec![("axis", Attr::Int(0))];
    let dequantized = l.node(n, "DequantizeLinear", "bias", inputs, None, per_channel);
    let name = dequantized.outputs[0].clone();
    out.extend([scale, dequantized]);
    Some(name)
}

/// `y = quantize(dequantize(a) · dequantize(b))`, a per row, b per column.
fn qlinear_matmul(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 8, 8)?;
    let [a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero] =
        std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let rows = vec![("axis", Attr::Int(-2))];
    let af = l.node(n, dq, "input", vec![a, a_scale, a_zero], None, rows);
    let columns = vec![("axis", Attr::Int(-1))];
    let bf = l.node(n, dq, "weight", vec![b, b_scale, b_zero], None, columns);
    let inputs = vec![af.outputs[0].clone(), bf.outputs[0].clone()];
    let product = l.node(n, "MatMul", "", inputs, None, vec![]);
    let q = quantize(l, n, &product, y_scale, y_zero);
    Ok(vec![af, bf, product, q])
}

/// The node's output: `producer`'s quantized by `scale` and `zero`, as the node's type says.
fn quantize(l: &mut Lowerer, n: &Node, producer: &Node, scale: String, zero: String) -> Node {
    let inputs = vec![producer.outputs[0].clone(), scale, zero];
    let output = Some(n.outputs[0].clone());
    let attrs = attrs_of(n, &["output_dtype"]);
    l.node(n, "QuantizeLinear", "quantize", inputs, output, attrs)
}

/// `y = conv(x - x_zero, w - w_zero)`, in INT32.
fn conv_integer(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 2, 4)?;
    let [x, w, x_zero, w_zero] = std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let mut out = Vec::new();
    let ones = l.ones_like(n, &x_zero, &mut out);
    let xf = l.node(n, dq, "input", vec![x, ones, x_zero], None, vec![]);
    let ones = l.ones_like(n, &w_zero, &mut out);
    let per_channel = vec![("axis", Attr::Int(0))];
    let wf = l.node(n, dq, "weight", vec![w, ones, w_zero], None, per_channel);
    let inputs = vec![xf.outputs[0].clone(), wf.outputs[0].clone()];
    let output = Some(n.outputs[0].clone());
    let conv = l.node(n, "Conv", "", inputs, output, attrs_of(n, CONV_ATTRS));
    out.extend([xf, wf, conv]);
    Ok(out)
}

/// `y = (a - a_zero) · (b - b_zero)`, in INT32; a's zero point per row, b's per column.
fn matmul_integer(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 2, 4)?;
    let [a, b, a_zero, b_zero] = std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let mut out = Vec::new();
    let ones = l.ones_like(n, &a_zero, &mut out);
    let rows = vec![("axis", Attr::Int(-2))];
    let af = l.node(n, dq, "input", vec![a, ones, a_zero], None, rows);
    let ones = l.ones_like(n, &b_zero, &mut out);
    let columns = vec![("axis", Attr::Int(-1))];
    let bf = l.node(n, dq, "weight", vec![b, ones, b_zero], None, columns);
    let inputs = vec![af.outputs[0].clone(), bf.outputs[0].clone()];
    let output = Some(n.outputs[0].clone());
    let product = l.node(n, "MatMul", "", inputs, output, vec![]);
    out.extend([af, bf, product]);
    Ok(out)
}

const POOL_ATTRS: &[&str] = &[
    "auto_pad",
    "ceil_mode",
    "count_include_pad",
    "kernel_shape",
    "pads",
    "strides",
];

/// onnxruntime's QLinear ops may take their input channels-last; microscope's models are
/// channels-first (`import::layout` turns a channels-last input around in front).
fn channels_first(n: &Node) -> Result<()> {
    if n.int("channels_last", 0)? != 0 {
        return Err(Error::node(
            &n.name,
            &n.op,
            "channels_last inputs are not supported",
        ));
    }
    Ok(())
}

/// `y = quantize(op(dequantize(x)))`: inputs X, X_scale, X_zero_point, Y_scale, Y_zero_point.
fn unary(l: &mut Lowerer, n: &Node, op: &str, keep: &[&'static str]) -> Result<Vec<Node>> {
    check_arity(n, 4, 5)?;
    channels_first(n)?;
    let [x, x_scale, x_zero, y_scale, y_zero] = std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let xf = l.node(n, dq, "input", vec![x, x_scale, x_zero], None, vec![]);
    let inputs = vec![xf.outputs[0].clone()];
    let float = l.node(n, op, "", inputs, None, attrs_of(n, keep));
    let q = quantize(l, n, &float, y_scale, y_zero);
    Ok(vec![xf, float, q])
}

/// QLinearSoftmax: its `opset` attribute is the Softmax whose axis semantics it follows (before
/// 13 the input is seen as 2-D from `axis` on).
fn softmax(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    let mut nodes = unary(l, n, "Softmax", &["axis"])?;
    let opset = n.int("opset", n.opset)?;
    nodes[1].opset = opset;
    if !nodes[1].attrs.contains_key("axis") {
        // QLinearSoftmax's axis defaults to -1 at every opset, Softmax's to 1 before 13.
        nodes[1].attrs.insert("axis".into(), Attr::Int(-1));
    }
    Ok(nodes)
}

/// `c = quantize(op(dequantize(a), dequantize(b)))`: inputs A, A_scale, A_zero_point, B,
/// B_scale, B_zero_point, C_scale, C_zero_point.
fn binary(l: &mut Lowerer, n: &Node, op: &str) -> Result<Vec<Node>> {
    check_arity(n, 7, 8)?;
    let [a, a_scale, a_zero, b, b_scale, b_zero, c_scale, c_zero] =
        std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let af = l.node(n, dq, "input", vec![a, a_scale, a_zero], None, vec![]);
    let bf = l.node(n, dq, "input", vec![b, b_scale, b_zero], None, vec![]);
    let inputs = vec![af.outputs[0].clone(), bf.outputs[0].clone()];
    let float = l.node(n, op, "", inputs, None, vec![]);
    let q = quantize(l, n, &float, c_scale, c_zero);
    Ok(vec![af, bf, float, q])
}

/// QLinearConcat: inputs Y_scale, Y_zero_point, then X, X_scale, X_zero_point for each input.
fn concat(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    let k = n.inputs.len();
    if k < 5 || !(k - 2).is_multiple_of(3) || n.outputs.len() != 1 {
        return Err(Error::node(
            &n.name,
            &n.op,
            format!("expects Y_scale, Y_zero_point and triples of inputs, has {k} inputs"),
        ));
    }
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for triple in n.inputs[2..].chunks(3) {
        let xf = l.node(
            n,
            "DequantizeLinear",
            "input",
            triple.to_vec(),
            None,
            vec![],
        );
        parts.push(xf.outputs[0].clone());
        out.push(xf);
    }
    let float = l.node(n, "Concat", "", parts, None, attrs_of(n, &["axis"]));
    let q = quantize(l, n, &float, input(n, 0), input(n, 1));
    out.extend([float, q]);
    Ok(out)
}

/// QGemm: `y = alpha · dequantize(a) · dequantize(b) + dequantize(c)`, quantized where it has
/// a y_scale (else float). C is INT32 at scale `a_scale · b_scale`; B's scale is per column of
/// the product (its axis 0 when transposed).
fn qgemm(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 6, 9)?;
    let [a, a_scale, a_zero, b, b_scale, b_zero, c, y_scale, y_zero] =
        std::array::from_fn(|i| input(n, i));
    let dq = "DequantizeLinear";
    let af = l.node(
        n,
        dq,
        "input",
        vec![a, a_scale.clone(), a_zero],
        None,
        vec![],
    );
    let columns = vec![(
        "axis",
        Attr::Int(if n.int("transB", 0)? != 0 { 0 } else { 1 }),
    )];
    let inputs = vec![b, b_scale.clone(), b_zero];
    let bf = l.node(n, dq, "weight", inputs, None, columns);
    let mut gemm_inputs = vec![af.outputs[0].clone(), bf.outputs[0].clone()];
    let mut out = vec![af, bf];
    gemm_inputs.extend(bias_of(l, n, c, a_scale, b_scale, &mut out));
    let attrs = attrs_of(n, &["alpha", "transA", "transB"]);
    if y_scale.is_empty() {
        let output = Some(n.outputs[0].clone());
        out.push(l.node(n, "Gemm", "", gemm_inputs, output, attrs));
        return Ok(out);
    }
    let gemm = l.node(n, "Gemm", "", gemm_inputs, None, attrs);
    let q = quantize(l, n, &gemm, y_scale, y_zero);
    out.extend([gemm, q]);
    Ok(out)
}

/// An input that must be absent (or empty): the error names what the lowering does not run.
fn absent(n: &Node, i: usize, what: &str) -> Result<()> {
    if input(n, i).is_empty() {
        return Ok(());
    }
    Err(Error::node(
        &n.name,
        &n.op,
        format!("its {what} input is not supported"),
    ))
}

/// BiasGelu, FastGelu and onnxruntime's Gelu: `gelu(x + bias)`, the bias optional but for
/// BiasGelu; GELU exact (`"none"`) or tanh-approximated.
fn gelu(l: &mut Lowerer, n: &Node, approximate: &str) -> Result<Vec<Node>> {
    check_arity(n, 1, 2)?;
    let [x, bias] = std::array::from_fn(|i| input(n, i));
    let mut out = Vec::new();
    let x = if bias.is_empty() {
        x
    } else {
        let add = l.node(n, "Add", "bias", vec![x, bias], None, vec![]);
        let sum = add.outputs[0].clone();
        out.push(add);
        sum
    };
    let attrs = vec![("approximate", Attr::String(approximate.into()))];
    let output = Some(n.outputs[0].clone());
    out.push(l.node(n, "Gelu", "", vec![x], output, attrs));
    // Gelu is opset 20's.
    out.last_mut().unwrap().opset = n.opset.max(20);
    Ok(out)
}

/// QuickGelu: `x · sigmoid(alpha · x)`.
fn quick_gelu(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_arity(n, 1, 1)?;
    let x = input(n, 0);
    let alpha = l.fresh(format!("{}/alpha", n.name));
    let value = n.float("alpha", 1.702)?;
    l.constants
        .insert(alpha.clone(), HostTensor::f32(vec![], vec![value]));
    let scaled = l.node(n, "Mul", "scaled", vec![x.clone(), alpha], None, vec![]);
    let inputs = vec![scaled.outputs[0].clone()];
    let gate = l.node(n, "Sigmoid", "gate", inputs, None, vec![]);
    let inputs = vec![x, gate.outputs[0].clone()];
    let output = Some(n.outputs[0].clone());
    let product = l.node(n, "Mul", "", inputs, output, vec![]);
    Ok(vec![scaled, gate, product])
}

/// SkipLayerNormalization: `layer_norm(input + skip + bias)` over the last axis, with gamma and
/// beta; its outputs are the normalized sum, the mean and inverse standard deviation, and the
/// sum itself (which the next one in a chain reads).
fn skip_layer_norm(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 3..=5, 1..=4)?;
    let [x, skip, gamma, beta, bias] = std::array::from_fn(|i| input(n, i));
    let output = |i: usize| n.outputs.get(i).filter(|o| !o.is_empty()).cloned();
    let sum_output = if bias.is_empty() { output(3) } else { None };
    let add = l.node(n, "Add", "skip", vec![x, skip], sum_output, vec![]);
    let mut sum = add.outputs[0].clone();
    let mut out = vec![add];
    if !bias.is_empty() {
        let add = l.node(n, "Add", "bias", vec![sum, bias], output(3), vec![]);
        sum = add.outputs[0].clone();
        out.push(add);
    }
    let mut inputs = vec![sum, gamma];
    if !beta.is_empty() {
        inputs.push(beta);
    }
    // onnxruntime's default epsilon.
    let epsilon = n.float("epsilon", 1e-12)?;
    let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(epsilon))];
    let mut norm = l.node(n, "LayerNormalization", "", inputs, output(0), attrs);
    norm.opset = n.opset.max(17);
    if output(1).is_some() || output(2).is_some() {
        let statistic = |l: &mut Lowerer, i: usize, what: &str| {
            output(i).unwrap_or_else(|| l.fresh(format!("{}/{what}", n.name)))
        };
        let mean = statistic(l, 1, "mean");
        let inv_std = statistic(l, 2, "inv_std_var");
        norm.outputs.extend([mean, inv_std]);
    }
    out.push(norm);
    Ok(out)
}

/// Attention (onnxruntime's, as its transformer optimizer fuses a ViT's or BERT's): the input
/// `[B, S, D]` projected by one weight `[D, Q + K + V]` (and bias) into queries, keys and values,
/// each split into `num_heads` heads; `softmax(q kᵀ · scale)` over the keys; the heads' weighted
/// values joined again, `[B, S, V]`; an attention bias, where there is one, is added to the
/// scores. Without a mask, a cache or rotary embeddings, which vision transformers do not use
/// (each is an error naming the node).
///
/// The weight and bias are split into one per projection, so that the queries, keys and values
/// are layers of their own (`{node}/query`, `/key`, `/value`), as are the attention weights
/// (`{node}/attention`).
fn attention(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 2..=7, 1..=2)?;
    if n.outputs.get(1).is_some_and(|o| !o.is_empty()) {
        return Err(Error::node(
            &n.name,
            &n.op,
            "its present output (a cache) is not supported",
        ));
    }
    for (i, what) in [(3, "mask_index"), (4, "past"), (6, "past_sequence_length")] {
        absent(n, i, what)?;
    }
    let fail = |reason: String| Error::node(&n.name, &n.op, reason);
    for (attr, what) in [
        ("unidirectional", "a causal mask"),
        ("do_rotary", "rotary embeddings"),
    ] {
        if n.int(attr, 0)? != 0 {
            return Err(fail(format!("{attr} ({what}) is not supported")));
        }
    }
    let [x, weight, bias] = std::array::from_fn(|i| input(n, i));
    let heads = n.int("num_heads", 0)?;
    let w = l
        .constants
        .get(&weight)
        .ok_or_else(|| fail(format!("its weights {weight:?} must be a constant")))?;
    let &[rows, columns] = w.shape.as_slice() else {
        return Err(fail(format!("weights of shape {:?}: not 2-D", w.shape)));
    };
    let sizes = match n.ints("qkv_hidden_sizes")? {
        Some(s) => s,
        None => vec![(columns / 3) as i64; 3],
    };
    let usable = |s: i64| s > 0 && heads > 0 && s % heads == 0;
    if sizes.len() != 3
        || !sizes.iter().all(|&s| usable(s))
        || sizes[0] != sizes[1]
        || sizes.iter().try_fold(0i64, |sum, &s| sum.checked_add(s)) != Some(columns as i64)
    {
        return Err(fail(format!(
            "qkv_hidden_sizes {sizes:?} with {heads} heads: the sizes must be whole numbers of \
             heads, equal for queries and keys, and add up to the weights' {columns} columns"
        )));
    }
    let sizes: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
    let w = w.to_f32();
    l.replaced.push(weight.clone());
    let b = match bias.is_empty() {
        true => None,
        false => {
            let b = l
                .constants
                .get(&bias)
                .ok_or_else(|| fail(format!("its bias {bias:?} must be a constant")))?;
            if b.shape != [columns] {
                return Err(fail(format!(
                    "bias of shape {:?} for weights of {columns} columns",
                    b.shape
                )));
            }
            l.replaced.push(bias.clone());
            Some(b.to_f32())
        }
    };
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut start = 0;
    for (role, size) in ["query", "key", "value"].into_iter().zip(&sizes) {
        let columns_of = |row: &[f32]| row[start..start + size].to_vec();
        let weight_part: Vec<f32> = w.chunks_exact(columns).flat_map(columns_of).collect();
        let name = l.fresh(format!("{}/{role}_weight", n.name));
        l.constants.insert(
            name.clone(),
            HostTensor::f32(vec![rows, *size], weight_part),
        );
        let projected = match &b {
            None => l.node(n, "MatMul", role, vec![x.clone(), name], None, vec![]),
            Some(b) => {
                let inputs = vec![x.clone(), name];
                let product = l.node(n, "MatMul", &format!("{role}_matmul"), inputs, None, vec![]);
                let bias_name = l.fresh(format!("{}/{role}_bias", n.name));
                let bias_part = b[start..start + size].to_vec();
                l.constants
                    .insert(bias_name.clone(), HostTensor::f32(vec![*size], bias_part));
                let inputs = vec![product.outputs[0].clone(), bias_name];
                out.push(product);
                l.node(n, "Add", role, inputs, None, vec![])
            }
        };
        // [B, S, size] → [B, S, heads, size / heads] → [B, heads, S, size / heads] (keys:
        // [B, heads, size / heads, S], ready for the product with the queries).
        let shape = l.fresh(format!("{}/{role}_heads_shape", n.name));
        let head = size / heads as usize;
        l.constants.insert(
            shape.clone(),
            HostTensor::i64(vec![4], vec![0, 0, heads, head as i64]),
        );
        let inputs = vec![projected.outputs[0].clone(), shape];
        let split = l.node(n, "Reshape", &format!("{role}_heads"), inputs, None, vec![]);
        let perm = if role == "key" {
            [0, 2, 3, 1]
        } else {
            [0, 2, 1, 3]
        };
        let inputs = vec![split.outputs[0].clone()];
        let perm = vec![("perm", Attr::Ints(perm.to_vec()))];
        let turned = l.node(
            n,
            "Transpose",
            &format!("{role}_by_head"),
            inputs,
            None,
            perm,
        );
        parts.push(turned.outputs[0].clone());
        out.extend([projected, split, turned]);
        start += size;
    }
    let head = (sizes[0] / heads as usize) as f32;
    let scale = n.float("scale", 1.0 / head.sqrt())?;
    let scores = l.node(n, "MatMul", "scores", parts[..2].to_vec(), None, vec![]);
    let scale_name = l.fresh(format!("{}/scale", n.name));
    l.constants
        .insert(scale_name.clone(), HostTensor::f32(vec![], vec![scale]));
    let inputs = vec![scores.outputs[0].clone(), scale_name];
    let scaled = l.node(n, "Mul", "scaled_scores", inputs, None, vec![]);
    let mut logits = scaled.outputs[0].clone();
    out.extend([scores, scaled]);
    // A bias on the scores (BEiT's and Swin's relative positions), `[B or 1, heads, S, S]`.
    let attention_bias = input(n, 5);
    if !attention_bias.is_empty() {
        let inputs = vec![logits, attention_bias];
        let biased = l.node(n, "Add", "biased_scores", inputs, None, vec![]);
        logits = biased.outputs[0].clone();
        out.push(biased);
    }
    let inputs = vec![logits];
    let mut weights = l.node(
        n,
        "Softmax",
        "attention",
        inputs,
        None,
        vec![("axis", Attr::Int(-1))],
    );
    weights.opset = n.opset.max(13);
    let inputs = vec![weights.outputs[0].clone(), parts[2].clone()];
    let context = l.node(n, "MatMul", "context", inputs, None, vec![]);
    let inputs = vec![context.outputs[0].clone()];
    let perm = vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))];
    let joined = l.node(n, "Transpose", "context_by_position", inputs, None, perm);
    let shape = l.fresh(format!("{}/output_shape", n.name));
    l.constants
        .insert(shape.clone(), HostTensor::i64(vec![3], vec![0, 0, -1]));
    let inputs = vec![joined.outputs[0].clone(), shape];
    let output = Some(n.outputs[0].clone());
    let merged = l.node(n, "Reshape", "", inputs, output, vec![]);
    out.extend([weights, context, joined, merged]);
    Ok(out)
}

/// onnxruntime's MultiHeadAttention (what its transformer optimizer writes with
/// `--use_multi_head_attention`, and for SAM's and diffusion models' attention): queries, keys and
/// values projected outside it, `[B, S, D]`, `[B, L, D]`, `[B, L, D_v]`, a bias of the three
/// (split where the network runs, by their widths) and a bias on the scores. With the bias added,
/// it is ONNX's Attention on 3-D inputs with `num_heads` heads, and runs lowered as that.
/// onnxruntime runs packed inputs only on GPUs; they, the key padding mask, the cache and the
/// causal mask are refused. Keys and values already split by head (`[B, heads, L, head]`) are
/// refused when the network runs: the node `{node}/key_as_tokens` (a Transpose that keeps a 3-D
/// tensor as it is) fails on them.
fn multi_head_attention(l: &mut Lowerer, n: &Node) -> Result<Vec<Node>> {
    check_counts(n, 1..=10, 1..=4)?;
    let fail = |reason: &str| Error::node(&n.name, &n.op, reason);
    for (i, what) in [(1, "present_key"), (2, "present_value"), (3, "qk")] {
        if n.outputs.get(i).is_some_and(|o| !o.is_empty()) {
            return Err(fail(&format!("its {what} output is not supported")));
        }
    }
    let [query, key, value, bias, _, scores_bias] = std::array::from_fn(|i| input(n, i));
    if key.is_empty() {
        return Err(fail(
            "packed queries, keys and values (one [B, S, heads, 3, head] input) are not \
             supported",
        ));
    }
    if value.is_empty() {
        return Err(fail(
            "packed keys and values ([B, L, heads, 2, head]) are not supported",
        ));
    }
    for (i, what) in [
        (4, "key_padding_mask"),
        (6, "past_key"),
        (7, "past_value"),
        (8, "past_sequence_length"),
        (9, "cache_indirection"),
    ] {
        absent(n, i, what)?;
    }
    if n.int("unidirectional", 0)? != 0 {
        return Err(fail("unidirectional (a causal mask) is not supported"));
    }
    let heads = n.int("num_heads", 0)?;
    if heads <= 0 {
        return Err(fail(&format!("num_heads {heads}: must be at least 1")));
    }
    // The nodes below are ONNX's, of an opset whose Shape takes `start` and Split its sizes as
    // an input (the node's own opset is its domain's).
    let mut out: Vec<Node> = Vec::new();
    let mut add = |l: &mut Lowerer, op: &str, role: &str, inputs, outputs: Option<Vec<String>>| {
        let attrs = match op {
            "Transpose" => vec![("perm", Attr::Ints(vec![0, 1, 2]))],
            "Shape" => vec![("start", Attr::Int(-1))],
            "Concat" => vec![("axis", Attr::Int(0))],
            _ => vec![],
        };
        let mut node = l.node(n, op, role, inputs, None, attrs);
        node.opset = 17;
        if let Some(outputs) = outputs {
            node.outputs = outputs;
        }
        let first = node.outputs[0].clone();
        out.push(node);
        first
    };
    let roles = ["query", "key", "value"];
    let mut tokens: Vec<String> = roles
        .iter()
        .zip([query, key, value])
        .map(|(role, x)| add(l, "Transpose", &format!("{role}_as_tokens"), vec![x], None))
        .collect();
    if !bias.is_empty() {
        // The bias's parts are as wide as the queries, keys and values.
        let widths = roles
            .iter()
            .zip(&tokens)
            .map(|(role, x)| add(l, "Shape", &format!("{role}_width"), vec![x.clone()], None))
            .collect();
        let sizes = add(l, "Concat", "bias_widths", widths, None);
        let parts: Vec<String> = roles
            .iter()
            .map(|role| l.fresh(format!("{}/{role}_bias", n.name)))
            .collect();
        add(
            l,
            "Split",
            "bias_parts",
            vec![bias, sizes],
            Some(parts.clone()),
        );
        for ((role, x), b) in roles.iter().zip(tokens.iter_mut()).zip(parts) {
            *x = add(l, "Add", role, vec![x.clone(), b], None);
        }
    }
    let mut attrs = vec![
        ("q_num_heads".to_string(), Attr::Int(heads)),
        ("kv_num_heads".to_string(), Attr::Int(heads)),
    ];
    if n.has_attr("scale") {
        attrs.push(("scale".to_string(), Attr::Float(n.float("scale", 1.0)?)));
    }
    let mut inputs = tokens;
    if !scores_bias.is_empty() {
        inputs.push(scores_bias);
    }
    let attention = Node {
        name: n.name.clone(),
        op: "Attention".into(),
        domain: String::new(),
        opset: 23,
        inputs,
        outputs: vec![n.outputs[0].clone()],
        attrs: attrs.into_iter().collect(),
        source_name: n.source_name.clone(),
    };
    out.extend(transformer::onnx_attention(l, &attention)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> Node {
        Node {
            name: name.into(),
            op: op.into(),
            domain: String::new(),
            opset: 23,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
            attrs: Default::default(),
            source_name: name.into(),
        }
    }

    fn input(name: &str, elem: Option<Elem>) -> InputSpec {
        InputSpec {
            name: name.into(),
            shape: vec![],
            elem,
        }
    }

    /// The ops an Attention reading `mask` lowers to.
    fn lowered_ops(before: Vec<Node>, inputs: &[InputSpec]) -> Vec<String> {
        let mut nodes = before;
        nodes.push(node("attn", "Attention", &["q", "k", "v", "mask"], "y"));
        let mut constants = HashMap::new();
        let lowered = lower(nodes, &mut constants, inputs, &["y".into()]).unwrap();
        lowered.iter().map(|n| n.name.clone()).collect()
    }

    /// A boolean mask (which keys to attend to) becomes a bias of 0 and -∞; any other is the
    /// bias. Booleans are known from the inputs' declared types and from the ops that make them.
    #[test]
    fn an_attention_mask_is_a_condition_where_the_graph_says_it_is_boolean() {
        let qkv = ["q", "k", "v"].map(|n| input(n, Some(Elem::Float)));
        let selects = |names: &[String]| names.iter().any(|n| n == "attn/mask_bias");

        let declared = [qkv.as_slice(), &[input("mask", Some(Elem::Bool))]].concat();
        assert!(selects(&lowered_ops(vec![], &declared)));
        let float = [qkv.as_slice(), &[input("mask", Some(Elem::Float))]].concat();
        assert!(!selects(&lowered_ops(vec![], &float)));

        let ids = [qkv.as_slice(), &[input("ids", Some(Elem::Int))]].concat();
        let compared = vec![
            node("pad", "Equal", &["ids", "zero"], "padding"),
            node("keep", "Not", &["padding"], "keep"),
            node("rows", "Unsqueeze", &["keep", "axes"], "mask"),
        ];
        assert!(selects(&lowered_ops(compared, &ids)));
        let scaled = vec![node("scale", "Mul", &["ids", "zero"], "mask")];
        assert!(!selects(&lowered_ops(scaled, &ids)));
    }
}
