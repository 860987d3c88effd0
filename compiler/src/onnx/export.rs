//! ONNX export: a checked model's graph (unoptimized) to an ONNX model any runtime reads.
//!
//! Rules:
//! - One ONNX node (or a fixed small pattern) per IR op, opset 17, a dynamic batch `B`: `x .
//!   w^T` is `Gemm` (rank 2) or `MatMul` by the transposed weight, relu6 is `Clip(0, 6)`, SiLU
//!   is `x * Sigmoid(x)`, `global_avg_pool` is `GlobalAveragePool` + `Flatten`, a reshape keeps
//!   the batch as `-1`; parameters are initializers under their dotted paths.
//! - Precision: `Fp32` writes the latent weights; `Ternary` writes each quantized weight
//!   dequantized (`codes * alpha`, exactly what the engine multiplies by), so any runtime runs
//!   the ternary model in f32.
//! - Int8 activations (`quantize_i8`) have no per-sample int8 op in ONNX: at `Fp32` they are the
//!   identity (as the interpreter runs them), at `Ternary` the export is refused.

use std::collections::HashMap;

use prost::Message;

use super::proto::{self, tensor_proto::DataType};
use crate::interp::{self, Precision};
use crate::ir::{BinaryOp, Dim, Graph, NodeId, Op, UnaryOp};
use crate::weights::Weights;

/// The opset exported models declare.
pub const OPSET: i64 = 17;

/// The producer name exported models carry (how `triton export` knows a file it may replace).
pub const PRODUCER: &str = "triton";

/// The producer an ONNX file names, when it decodes.
pub fn producer(bytes: &[u8]) -> Option<String> {
    proto::ModelProto::decode(bytes).ok().and_then(|m| m.producer_name)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Weights(String),
    #[error("`{op}` cannot be exported: {why}")]
    Op { op: String, why: String },
}

struct Writer<'g> {
    g: &'g Graph,
    /// Each parameter's value at the export's precision, and whether it is written yet.
    values: Vec<ndarray::ArrayD<f32>>,
    written: Vec<bool>,
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    names: HashMap<NodeId, String>,
    counter: usize,
}

fn attr_int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[usize], values: impl Iterator<Item = f32>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.flat_map(f32::to_le_bytes).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, ty: &crate::ir::TensorType) -> proto::ValueInfoProto {
    let shape = &ty.shape;
    let elem = if ty.dtype == triton_runtime::DType::I32 { DataType::Int32 } else { DataType::Float };
    use proto::tensor_shape_proto::{Dimension, dimension::Value as D};
    let dim = |d: &Dim| Dimension {
        value: Some(match d.as_known() {
            Some(n) => D::DimValue(n),
            None => D::DimParam(d.to_string()),
        }),
        ..Default::default()
    };
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(proto::TensorShapeProto { dim: shape.iter().map(dim).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Writer<'_> {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// A new int64 initializer holding `values` (a 1-d tensor), by name.
    fn i64s(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(proto::TensorProto {
            name: Some(name.clone()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// `Slice(x, [start], [end], [axis])`.
    fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let inputs =
            vec![x.to_string(), self.i64s("starts", &[start]), self.i64s("ends", &[end]), self.i64s("axes", &[axis])];
        self.emit("Slice", inputs, vec![])
    }

    fn emit(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<proto::AttributeProto>) -> String {
        let out = self.fresh(op);
        self.nodes.push(proto::NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(format!("/{out}")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("const");
        self.inits.push(f32_tensor(&name, &[], std::iter::once(v)));
        name
    }

    /// Parameter `index` as an initializer (written once; `flat`: as a vector, for a bias).
    fn param(&mut self, index: usize, flat: bool) -> String {
        let name = self.g.params[index].name.clone();
        if !self.written[index] {
            let a = &self.values[index];
            let dims = if flat { vec![a.len()] } else { a.shape().to_vec() };
            self.inits.push(f32_tensor(&name, &dims, a.iter().copied()));
            self.written[index] = true;
        }
        name
    }

    /// The bias parameter fused into product node `id`, if any, as an initializer.
    fn bias(&mut self, fused: &HashMap<NodeId, (NodeId, NodeId)>, id: NodeId) -> Result<Option<String>, ExportError> {
        let Some(&(_, b)) = fused.get(&id) else { return Ok(None) };
        match self.g.nodes[b].op {
            Op::Param { index } => Ok(Some(self.param(index, true))),
            _ => Err(ExportError::Op { op: "bias".into(), why: "a bias that is not a parameter".into() }),
        }
    }

    fn arg(&self, id: NodeId) -> String {
        self.names.get(&id).cloned().unwrap_or_default()
    }
}

/// Products followed only by their bias (the std layers' `conv2d(x, w) + reshape(b, [O, 1, 1])`
/// and `matmul(x, w) + b`): product -> (the add, the bias parameter node), and the nodes the
/// Conv or Gemm with a bias replaces (the reshape and the add).
fn conv_biases(g: &Graph) -> (std::collections::HashSet<NodeId>, HashMap<NodeId, (NodeId, NodeId)>) {
    let uses = g.use_counts();
    let mut skip = std::collections::HashSet::new();
    let mut fused = HashMap::new();
    for (id, n) in g.nodes.iter() {
        let (Op::Binary(BinaryOp::Add), [a, b]) = (&n.op, n.args.as_slice()) else { continue };
        // `matmul(x, w) + b` (rank-2 x): one Gemm with a bias.
        let linear = match (&g.nodes[*a].op, &g.nodes[*b].op) {
            (Op::Matmul, Op::Param { .. }) => Some((*a, *b)),
            (Op::Param { .. }, Op::Matmul) => Some((*b, *a)),
            _ => None,
        };
        if let Some((mm, bias)) = linear {
            let m = &g.nodes[mm];
            let n_out = m.ty.shape.last().and_then(|d| d.as_known());
            let ok = m.ty.rank() == 2
                && matches!(g.nodes[m.args[1]].op, Op::Param { .. })
                && g.nodes[bias].ty.rank() == 1
                && g.nodes[bias].ty.shape[0].as_known() == n_out;
            if ok && uses[mm.index()] == 1 && !fused.contains_key(&mm) {
                fused.insert(mm, (id, bias));
                skip.insert(id);
            }
            continue;
        }
        let (conv, r) = match (&g.nodes[*a].op, &g.nodes[*b].op) {
            (Op::Conv2d(_), Op::Reshape { .. }) => (*a, *b),
            (Op::Reshape { .. }, Op::Conv2d(_)) => (*b, *a),
            _ => continue,
        };
        let rn = &g.nodes[r];
        let Some(&bias) = rn.args.first() else { continue };
        let out_channels = g.nodes[conv].ty.shape.get(1).and_then(|d| d.as_known());
        let bias_ok = matches!(g.nodes[bias].op, Op::Param { .. })
            && g.nodes[bias].ty.rank() == 1
            && g.nodes[bias].ty.shape[0].as_known() == out_channels
            && rn.ty.rank() == 3;
        if bias_ok && uses[conv.index()] == 1 && uses[r.index()] == 1 && !fused.contains_key(&conv) {
            fused.insert(conv, (id, bias));
            skip.insert(r);
            skip.insert(id);
        }
    }
    (skip, fused)
}

/// Writes `graph` with `weights` at `precision` as ONNX bytes.
pub fn export(graph: &Graph, weights: &Weights, precision: Precision) -> Result<Vec<u8>, ExportError> {
    let prepared = interp::prepare(graph, weights, precision).map_err(|e| ExportError::Weights(e.to_string()))?;
    let values: Vec<ndarray::ArrayD<f32>> = (0..graph.params.len()).map(|i| prepared.value(i).to_f32()).collect();
    let written = vec![false; graph.params.len()];
    let mut w =
        Writer { g: graph, values, written, nodes: Vec::new(), inits: Vec::new(), names: HashMap::new(), counter: 0 };
    let (skip, conv_bias) = conv_biases(graph);
    for (id, node) in graph.nodes.iter() {
        if skip.contains(&id) {
            continue;
        }
        let mut args: Vec<String> = node.args.iter().map(|a| w.arg(*a)).collect();
        let unsupported = |why: &str| ExportError::Op { op: node.op.name().to_string(), why: why.to_string() };
        let name = match &node.op {
            Op::Input { index } => {
                graph.inputs.get(*index).map(|(n, _)| n.clone()).ok_or_else(|| unsupported("no such input"))?
            }
            Op::Param { index } => w.param(*index, false),
            Op::Const { value } => w.scalar(*value),
            Op::Matmul => {
                args.extend(w.bias(&conv_bias, id)?);
                let x_rank = graph.nodes[node.args[0]].ty.rank();
                let wnode = &w.g.nodes[node.args[1]];
                match (&wnode.op, x_rank) {
                    (Op::Param { .. }, 2) => w.emit("Gemm", args.clone(), vec![attr_int("transB", 1)]),
                    (Op::Param { index }, _) => {
                        // MatMul by the transposed weight, stored transposed.
                        let t = w.values[*index].t().as_standard_layout().into_owned();
                        let tname = format!("{}_t", graph.params[*index].name);
                        w.inits.push(f32_tensor(&tname, t.shape(), t.iter().copied()));
                        w.emit("MatMul", vec![args[0].clone(), tname], vec![])
                    }
                    _ => {
                        let t = w.emit("Transpose", vec![args[1].clone()], vec![attr_ints("perm", &[1, 0])]);
                        w.emit("MatMul", vec![args[0].clone(), t], vec![])
                    }
                }
            }
            Op::Conv2d(a) => {
                // `conv2d(x, w) + reshape(b, [O, 1, 1])` is one Conv with a bias.
                args.extend(w.bias(&conv_bias, id)?);
                let wshape = &graph.nodes[node.args[1]].ty.shape;
                let k: Vec<i64> = wshape[2..].iter().map(|d| d.as_known().unwrap_or(1)).collect();
                let attrs = vec![
                    attr_ints("kernel_shape", &k),
                    attr_ints("strides", &a.stride),
                    attr_ints("pads", &[a.padding[0], a.padding[1], a.padding[0], a.padding[1]]),
                    attr_ints("dilations", &a.dilation),
                    attr_int("group", a.groups),
                ];
                w.emit("Conv", args.clone(), attrs)
            }
            Op::BatchNorm { eps } => w.emit("BatchNormalization", args.clone(), vec![attr_float("epsilon", *eps)]),
            Op::Permute { perm } => {
                let perm: Vec<i64> = perm.iter().map(|a| *a as i64).collect();
                w.emit("Transpose", args.clone(), vec![attr_ints("perm", &perm)])
            }
            Op::BatchMatmul => w.emit("MatMul", args.clone(), vec![]),
            // x * C + swap(x) * S: C = [cos, cos], S = [-sin, sin] over [T, D], swap exchanging
            // the halves (two Slices and a Concat); T and D must be known.
            Op::Rope { theta } => {
                let r = node.ty.rank();
                let (t, d) = match (node.ty.shape[r - 2].as_known(), node.ty.shape[r - 1].as_known()) {
                    (Some(t), Some(d)) => (t as usize, d as usize),
                    _ => return Err(unsupported("rotary embeddings over symbolic sizes")),
                };
                let h = d / 2;
                let (cos, sin) = triton_runtime::ops::rope_tables(t, h, *theta);
                let (mut c, mut s) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
                for p in 0..t {
                    let row = p * h..(p + 1) * h;
                    c.extend(cos[row.clone()].iter().chain(&cos[row.clone()]));
                    s.extend(sin[row.clone()].iter().map(|v| -v).chain(sin[row].iter().copied()));
                }
                let (cn, sn) = (w.fresh("rope_cos"), w.fresh("rope_sin"));
                w.inits.push(f32_tensor(&cn, &[t, d], c.into_iter()));
                w.inits.push(f32_tensor(&sn, &[t, d], s.into_iter()));
                let x = args[0].clone();
                let x1 = w.slice(&x, -1, 0, h as i64);
                let x2 = w.slice(&x, -1, h as i64, d as i64);
                let swapped = w.emit("Concat", vec![x2, x1], vec![attr_int("axis", -1)]);
                let a = w.emit("Mul", vec![x.clone(), cn], vec![]);
                let b = w.emit("Mul", vec![swapped, sn], vec![]);
                w.emit("Add", vec![a, b], vec![])
            }
            Op::Slice { axis, start, end } => w.slice(&args[0], *axis as i64, *start as i64, *end as i64),
            Op::Embedding => w.emit("Gather", vec![args[1].clone(), args[0].clone()], vec![attr_int("axis", 0)]),
            // x + M with M[i][j] = 0 where kept, -inf where masked (T and S must be known).
            Op::CausalMask => {
                let r = node.ty.rank();
                let (t, s) = match (node.ty.shape[r - 2].as_known(), node.ty.shape[r - 1].as_known()) {
                    (Some(t), Some(s)) => (t as usize, s as usize),
                    _ => return Err(unsupported("a causal mask over symbolic sizes")),
                };
                let mut m = vec![0f32; t * s];
                triton_runtime::ops::causal_mask(&mut m, &[t, s]);
                let name = w.fresh("causal");
                w.inits.push(f32_tensor(&name, &[t, s], m.into_iter()));
                w.emit("Add", vec![args[0].clone(), name], vec![])
            }
            // Opset 17: ReduceMean takes its axes as an attribute, ReduceSum (from 13) as an input.
            Op::Reduce { axis, mean: true } => {
                w.emit("ReduceMean", args.clone(), vec![attr_ints("axes", &[*axis as i64]), attr_int("keepdims", 0)])
            }
            Op::Reduce { axis, mean: false } => {
                let aname = w.fresh("axes");
                w.inits.push(proto::TensorProto {
                    name: Some(aname.clone()),
                    dims: vec![1],
                    data_type: Some(DataType::Int64 as i32),
                    int64_data: vec![*axis as i64],
                    ..Default::default()
                });
                w.emit("ReduceSum", vec![args[0].clone(), aname], vec![attr_int("keepdims", 0)])
            }
            Op::LayerNorm { eps } => {
                w.emit("LayerNormalization", args.clone(), vec![attr_int("axis", -1), attr_float("epsilon", *eps)])
            }
            // Opset 17 has no RMSNormalization: x * (1 / sqrt(mean(x^2) + eps)) * gamma.
            Op::RmsNorm { eps } => {
                let x = args[0].clone();
                let x2 = w.emit("Mul", vec![x.clone(), x.clone()], vec![]);
                let ms = w.emit("ReduceMean", vec![x2], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
                let e = w.scalar(*eps);
                let a = w.emit("Add", vec![ms, e], vec![]);
                let s = w.emit("Sqrt", vec![a], vec![]);
                let r = w.emit("Reciprocal", vec![s], vec![]);
                let xr = w.emit("Mul", vec![x, r], vec![]);
                w.emit("Mul", vec![xr, args[1].clone()], vec![])
            }
            Op::Unary(u) => match u {
                UnaryOp::Relu => w.emit("Relu", args.clone(), vec![]),
                UnaryOp::Sigmoid => w.emit("Sigmoid", args.clone(), vec![]),
                UnaryOp::Tanh => w.emit("Tanh", args.clone(), vec![]),
                UnaryOp::Neg => w.emit("Neg", args.clone(), vec![]),
                UnaryOp::Sqrt => w.emit("Sqrt", args.clone(), vec![]),
                UnaryOp::Relu6 => {
                    let (lo, hi) = (w.scalar(0.0), w.scalar(6.0));
                    w.emit("Clip", vec![args[0].clone(), lo, hi], vec![])
                }
                UnaryOp::Silu => {
                    let s = w.emit("Sigmoid", args.clone(), vec![]);
                    w.emit("Mul", vec![args[0].clone(), s], vec![])
                }
                UnaryOp::Exp => w.emit("Exp", args.clone(), vec![]),
                // Opset 17 has no Gelu: PyTorch's pattern, x * (erf(x / sqrt 2) + 1) * 0.5.
                UnaryOp::Gelu => {
                    let x = args[0].clone();
                    let d = w.scalar(std::f32::consts::SQRT_2);
                    let d = w.emit("Div", vec![x.clone(), d], vec![]);
                    let e = w.emit("Erf", vec![d], vec![]);
                    let one = w.scalar(1.0);
                    let a = w.emit("Add", vec![e, one], vec![]);
                    let m = w.emit("Mul", vec![x, a], vec![]);
                    let half = w.scalar(0.5);
                    w.emit("Mul", vec![m, half], vec![])
                }
                // x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))).
                UnaryOp::GeluTanh => {
                    use triton_runtime::ops::{GELU_TANH_CUBIC, GELU_TANH_SCALE};
                    let x = args[0].clone();
                    let x2 = w.emit("Mul", vec![x.clone(), x.clone()], vec![]);
                    let x3 = w.emit("Mul", vec![x2, x.clone()], vec![]);
                    let c = w.scalar(GELU_TANH_CUBIC);
                    let cx3 = w.emit("Mul", vec![x3, c], vec![]);
                    let inner = w.emit("Add", vec![x.clone(), cx3], vec![]);
                    let k = w.scalar(GELU_TANH_SCALE);
                    let u = w.emit("Mul", vec![inner, k], vec![]);
                    let t = w.emit("Tanh", vec![u], vec![]);
                    let one = w.scalar(1.0);
                    let a = w.emit("Add", vec![t, one], vec![]);
                    let m = w.emit("Mul", vec![x, a], vec![]);
                    let half = w.scalar(0.5);
                    w.emit("Mul", vec![m, half], vec![])
                }
            },
            Op::Binary(b) => {
                let op = match b {
                    BinaryOp::Add => "Add",
                    BinaryOp::Sub => "Sub",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Div => "Div",
                };
                w.emit(op, args.clone(), vec![])
            }
            Op::Softmax { axis } => w.emit("Softmax", args.clone(), vec![attr_int("axis", *axis as i64)]),
            Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
                let mut attrs = vec![
                    attr_ints("kernel_shape", &a.kernel),
                    attr_ints("strides", &a.stride),
                    attr_ints("pads", &[a.padding[0], a.padding[1], a.padding[0], a.padding[1]]),
                ];
                let op = if matches!(node.op, Op::MaxPool2d(_)) {
                    "MaxPool"
                } else {
                    attrs.push(attr_int("count_include_pad", 1));
                    "AveragePool"
                };
                w.emit(op, args.clone(), attrs)
            }
            Op::GlobalAvgPool => {
                let p = w.emit("GlobalAveragePool", args.clone(), vec![]);
                w.emit("Flatten", vec![p], vec![attr_int("axis", 1)])
            }
            Op::Reshape { shape } => {
                let mut dims = Vec::with_capacity(shape.len());
                let mut free = 0;
                for d in shape {
                    dims.push(match d.as_known() {
                        Some(n) => n,
                        None => {
                            free += 1;
                            -1
                        }
                    });
                }
                if free > 1 {
                    return Err(unsupported("a reshape to a shape with more than one symbolic dimension"));
                }
                let sname = w.fresh("shape");
                w.inits.push(proto::TensorProto {
                    name: Some(sname.clone()),
                    dims: vec![dims.len() as i64],
                    data_type: Some(DataType::Int64 as i32),
                    int64_data: dims,
                    ..Default::default()
                });
                w.emit("Reshape", vec![args[0].clone(), sname], vec![])
            }
            Op::Concat { axis } => w.emit("Concat", args.clone(), vec![attr_int("axis", *axis as i64)]),
            Op::QuantizeI8 { .. } | Op::Dequantize => match precision {
                Precision::Fp32 => args[0].clone(),
                Precision::Ternary => {
                    return Err(unsupported(
                        "ONNX has no per-sample int8 activation quantization; export with --precision fp32, or use layers with f32 activations (int8 = false)",
                    ));
                }
            },
            Op::Fused(_) => {
                return Err(unsupported("fused ops exist only in optimized graphs; export the checked model"));
            }
        };
        if let Some(&(add, _)) = conv_bias.get(&id) {
            w.names.insert(add, name.clone());
        }
        w.names.insert(id, name);
    }
    let inputs: Vec<proto::ValueInfoProto> =
        graph.inputs.iter().map(|(n, id)| value_info(n, &graph.nodes[*id].ty)).collect();
    let mut outputs = Vec::new();
    for (k, o) in graph.outputs.iter().enumerate() {
        // Each output gets its own name (an Identity when the value is an input or a weight).
        let oname = if graph.outputs.len() == 1 { "output".to_string() } else { format!("output_{k}") };
        let src = w.arg(*o);
        w.nodes.push(proto::NodeProto {
            input: vec![src],
            output: vec![oname.clone()],
            name: Some(format!("/{oname}")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        outputs.push(value_info(&oname, &graph.nodes[*o].ty));
    }
    let model = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some(PRODUCER.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(proto::GraphProto {
            name: Some(graph.name.clone()),
            node: w.nodes,
            initializer: w.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
