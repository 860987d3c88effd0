//! One ONNX node at a time: the dispatch from op type to what it becomes, and the patterns
//! folded while reading (conv + batch norm, x * sigmoid(x), matmul + bias, shapes).

use super::*;

impl Converter<'_> {
    pub(super) fn node(&mut self, i: usize) -> Result<(), String> {
        let n = &self.g.nodes[i];
        // A node reading what an unsupported node made is reported only when its own op has
        // no equivalent (its shapes are unknown).
        if n.inputs.iter().any(|v| self.failed.contains(v)) {
            self.failed.extend(n.outputs.iter().cloned());
            let op = n.op.as_str();
            return if SUPPORTED.contains(&op) && !SHAPES_ONLY.contains(&op) { Ok(()) } else { Err(no_equivalent(op)) };
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(format!("domain `{}` is not ONNX's", n.domain));
        }
        let mut out = n.outputs.first().cloned().ok_or("no output")?;
        let unary = |c: &Self, f: &str| -> Result<Val, String> {
            let x = c.input(n, 0)?;
            Ok(Val { expr: format!("{f}({})", x.expr), shape: x.shape, atomic: true, pooled: false })
        };
        let v = match n.op.as_str() {
            "Conv" => {
                let v = self.conv(i)?;
                // A batch norm that only reads this convolution joins it.
                match self.only_reader(&out).filter(|r| self.g.nodes[*r].op == "BatchNormalization") {
                    Some(r) => {
                        self.consumed.insert(r);
                        out = self.g.nodes[r].outputs[0].clone();
                        self.batch_norm(r, v)?
                    }
                    None => v,
                }
            }
            "Gemm" => self.gemm(i)?,
            "MatMul" => {
                let (definer, v) = self.matmul(i)?;
                out = self.g.nodes[definer].outputs[0].clone();
                v
            }
            "BatchNormalization" => {
                let x = self.input(n, 0)?;
                self.batch_norm(i, x)?
            }
            "LayerNormalization" => {
                let x = self.input(n, 0)?;
                self.layer_norm(i, x)?
            }
            "Relu" => unary(self, "relu")?,
            "Sigmoid" => {
                // x * sigmoid(x) -> silu(x)
                if let Some(r) = self.only_reader(&out)
                    && self.g.nodes[r].op == "Mul"
                    && self.g.nodes[r].inputs.contains(&n.inputs[0])
                {
                    self.consumed.insert(r);
                    out = self.g.nodes[r].outputs[0].clone();
                    unary(self, "silu")?
                } else {
                    unary(self, "sigmoid")?
                }
            }
            "Tanh" => unary(self, "tanh")?,
            "Exp" => unary(self, "exp")?,
            "Sqrt" => unary(self, "sqrt")?,
            // Opset 20's Gelu: the erf form, or `approximate = "tanh"`.
            "Gelu" => match n.string("approximate") {
                None | Some("none") => unary(self, "gelu")?,
                Some("tanh") => unary(self, "gelu_tanh")?,
                Some(other) => {
                    return Err(format!("Gelu with approximate = \"{other}\" (expected \"none\" or \"tanh\")"));
                }
            },
            "Neg" => {
                let x = self.input(n, 0)?;
                Val { expr: format!("-{}", paren(&x)), shape: x.shape, atomic: false, pooled: false }
            }
            "Clip" => {
                let bound = |k: usize, attr: &str| -> Result<Option<f32>, String> {
                    if let Some(v) = n.float(attr) {
                        return Ok(Some(v));
                    }
                    match n.inputs.get(k).filter(|s| !s.is_empty()) {
                        None => Ok(None),
                        Some(_) => self.constant(n, k).map(|t| t.f32s().first().copied()),
                    }
                };
                match (bound(1, "min")?, bound(2, "max")?) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => unary(self, "relu6")?,
                    (Some(0.0), None) => unary(self, "relu")?,
                    (lo, hi) => {
                        return Err(format!(
                            "Clip to [{lo:?}, {hi:?}]: only [0, 6] (relu6) and [0, inf) (relu) have an equivalent"
                        ));
                    }
                }
            }
            "HardSwish" => {
                let x = self.input(n, 0)?;
                let x = self.bind(x);
                Val {
                    expr: format!("{} * relu6({} + 3.0) / 6.0", x.expr, x.expr),
                    shape: x.shape,
                    atomic: false,
                    pooled: false,
                }
            }
            "HardSigmoid" => {
                let (a, b) = (n.float("alpha").unwrap_or(0.2), n.float("beta").unwrap_or(0.5));
                let x = self.input(n, 0)?;
                Val {
                    expr: format!("relu6({} * {} + {}) / 6.0", paren(&x), float(6.0 * a), float(6.0 * b)),
                    shape: x.shape,
                    atomic: false,
                    pooled: false,
                }
            }
            "Softmax" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len() as i64;
                let default = if self.g.opset >= 13 { -1 } else { 1 };
                let axis = n.int("axis").unwrap_or(default);
                let axis = if axis < 0 { axis + rank } else { axis };
                if self.g.opset < 13 && axis != rank - 1 {
                    return Err(format!(
                        "Softmax before opset 13 over axis {axis} of a rank-{rank} tensor flattens it first; only the last axis has an equivalent"
                    ));
                }
                Val { expr: format!("softmax({}, axis = {axis})", x.expr), shape: x.shape, atomic: true, pooled: false }
            }
            "Identity" | "Dropout" => {
                if n.op == "Dropout" && n.outputs.get(1).is_some_and(|m| !m.is_empty() && self.uses.contains_key(m)) {
                    return Err("its mask output is read; in inference Dropout has no mask".into());
                }
                self.val(&n.inputs[0])?
            }
            "Flatten" => {
                let x = self.val(&n.inputs[0])?;
                if n.int("axis").unwrap_or(1) != 1 {
                    return Err(format!(
                        "Flatten at axis {}: only axis 1 has an equivalent",
                        n.int("axis").unwrap_or(1)
                    ));
                }
                if x.pooled {
                    Val { pooled: false, ..x }
                } else {
                    let rest = x.shape[1..]
                        .iter()
                        .map(|d| d.known().ok_or("a symbolic dimension"))
                        .product::<Result<usize, _>>()?;
                    Val {
                        expr: format!("flatten({})", x.expr),
                        shape: vec![Dim::B, Dim::N(rest)],
                        atomic: true,
                        pooled: false,
                    }
                }
            }
            "Reshape" => self.reshape(i)?,
            "Shape" | "Gather" | "Unsqueeze" | "Squeeze" | "Cast" if self.shape_op(i)? => return Ok(()),
            "Concat" if self.shape_op(i)? => return Ok(()),
            "GlobalAveragePool" => {
                let x = self.input(n, 0)?;
                if x.shape.len() != 4 {
                    return Err(format!("input of rank {}; [B, C, H, W] expected", x.shape.len()));
                }
                Val {
                    expr: format!("global_avg_pool({})", x.expr),
                    shape: x.shape[..2].to_vec(),
                    atomic: true,
                    pooled: true,
                }
            }
            "MaxPool" | "AveragePool" => self.pool(i)?,
            "Add" | "Sub" | "Mul" | "Div" => self.binary(i)?,
            "Concat" => {
                let xs: Vec<Val> = (0..n.inputs.len()).map(|k| self.input(n, k)).collect::<Result<_, _>>()?;
                let rank = xs.first().map_or(0, |x| x.shape.len()) as i64;
                let axis = n.int("axis").ok_or("no axis")?;
                let axis = if axis < 0 { axis + rank } else { axis };
                if axis == 0 {
                    return Err("concatenation along the batch axis".into());
                }
                let mut shape = xs[0].shape.clone();
                let mut sum = 0;
                for x in &xs {
                    sum += x
                        .shape
                        .get(axis as usize)
                        .and_then(|d| d.known())
                        .ok_or("a symbolic dimension along the axis")?;
                }
                shape[axis as usize] = Dim::N(sum);
                let list: Vec<&str> = xs.iter().map(|x| x.expr.as_str()).collect();
                Val {
                    expr: format!("concat([{}], axis = {axis})", list.join(", ")),
                    shape,
                    atomic: true,
                    pooled: false,
                }
            }
            "Constant" => {
                // Only scalars are used inline; a larger constant becomes a model parameter.
                let t = match n.attrs.get("value") {
                    Some(crate::onnx::read::Attr::Tensor(t)) => t.clone(),
                    _ => return Err("only `value` tensors are imported".into()),
                };
                if t.len() == 1 {
                    Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false }
                } else {
                    self.param(&out, &t)
                }
            }
            other => return Err(no_equivalent(other)),
        };
        self.define(&out, v);
        Ok(())
    }
}
