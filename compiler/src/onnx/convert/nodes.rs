//! One ONNX node at a time: the dispatch from op type to what it becomes, and the patterns
//! folded while reading (conv + batch norm, x * sigmoid(x), matmul + bias, shapes).

use super::*;

impl Converter<'_> {
    /// PyTorch's exact GELU at opset 17 from the `Div` node `i`: `Div(x, sqrt(2))`, `Erf`,
    /// `Add(1)`, `Mul(x, .)`, `Mul(., 0.5)` (each read only by the next): the nodes after
    /// the `Div` and the last one's output.
    fn gelu_pattern(&self, i: usize) -> Option<(Vec<usize>, String)> {
        let n = &self.g.nodes[i];
        let x = n.inputs.first()?;
        let scalar = |v: &str| self.init(v).filter(|t| t.len() == 1).map(|t| t.f32s()[0]);
        let other = |r: usize, v: &str| self.g.nodes[r].inputs.iter().find(|u| *u != v).cloned();
        if (scalar(n.inputs.get(1)?)? - std::f32::consts::SQRT_2).abs() > 1e-4 {
            return None;
        }
        let erf = self.only_reader(&n.outputs[0]).filter(|r| self.g.nodes[*r].op == "Erf")?;
        let add = self.only_reader(&self.g.nodes[erf].outputs[0]).filter(|r| self.g.nodes[*r].op == "Add")?;
        if scalar(&other(add, &self.g.nodes[erf].outputs[0])?)? != 1.0 {
            return None;
        }
        let mul = self.only_reader(&self.g.nodes[add].outputs[0]).filter(|r| self.g.nodes[*r].op == "Mul")?;
        if other(mul, &self.g.nodes[add].outputs[0])? != *x {
            return None;
        }
        let half = self.only_reader(&self.g.nodes[mul].outputs[0]).filter(|r| self.g.nodes[*r].op == "Mul")?;
        if scalar(&other(half, &self.g.nodes[mul].outputs[0])?)? != 0.5 {
            return None;
        }
        Some((vec![erf, add, mul, half], self.g.nodes[half].outputs[0].clone()))
    }

    /// ONNX `Slice` bounds on one axis of `x`, clamped as ONNX does (negative ones count
    /// from the end): the axis and the range, which must be a non-empty part of a known axis
    /// other than the batch.
    fn slice_bounds(&self, x: &Val, axis: i64, start: i64, end: i64) -> Result<(usize, usize, usize), String> {
        let rank = x.shape.len() as i64;
        let axis = if axis < 0 { axis + rank } else { axis };
        let len = x
            .shape
            .get(axis.max(0) as usize)
            .and_then(|d| d.known())
            .filter(|_| axis > 0)
            .ok_or("a slice along the batch or a symbolic axis")? as i64;
        let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
        let (s, e) = (clamp(start), clamp(end));
        if s >= e {
            return Err(format!("an empty slice {start}..{end} of an axis of {len}"));
        }
        Ok((axis as usize, s, e))
    }

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
            "Identity" if self.init(&n.inputs[0]).is_some() => {
                let target = self.aliases.get(&n.inputs[0]).cloned().unwrap_or_else(|| n.inputs[0].clone());
                self.aliases.insert(out, target);
                return Ok(());
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
            // `unbind` after a split: axes of length 1 removed (a reshape).
            "Squeeze" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len() as i64;
                let axes: Vec<i64> = match (n.ints("axes"), n.inputs.get(1).filter(|s| !s.is_empty())) {
                    (Some(a), _) => a.to_vec(),
                    (None, Some(_)) => self.constant(n, 1)?.i64s().ok_or("axes that are not integers")?,
                    (None, None) => (0..rank).filter(|k| x.shape[*k as usize] == Dim::N(1)).collect(),
                };
                let axes: Vec<usize> = axes.iter().map(|a| (if *a < 0 { a + rank } else { *a }) as usize).collect();
                if axes.iter().any(|a| x.shape.get(*a) != Some(&Dim::N(1))) {
                    return Err(format!("squeezing axes {axes:?} of {}: only axes of length 1", shape_text(&x.shape)));
                }
                let shape: Vec<Dim> =
                    x.shape.iter().enumerate().filter(|(k, _)| !axes.contains(k)).map(|(_, d)| *d).collect();
                let dims: Vec<String> = shape.iter().map(dim_text).collect();
                Val { expr: format!("reshape({}, [{}])", x.expr, dims.join(", ")), shape, atomic: true, pooled: false }
            }
            "Concat" | "Slice" | "Div" if self.shape_op(i)? => return Ok(()),
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
            "Div" if self.gelu_pattern(i).is_some() => {
                let (nodes, last) = self.gelu_pattern(i).ok_or("the GELU pattern")?;
                self.consumed.extend(nodes);
                out = last;
                unary(self, "gelu")?
            }
            "Erf" => {
                return Err(
                    "`Erf` outside GELU's pattern (Div by sqrt(2), Erf, Add 1, Mul by x, Mul by 0.5) has no equivalent"
                        .into(),
                );
            }
            "Add" | "Sub" | "Mul" | "Div" => self.binary(i)?,
            "Transpose" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len();
                let perm: Vec<usize> = match n.ints("perm") {
                    Some(p) => p
                        .iter()
                        .map(|a| usize::try_from(*a).map_err(|_| format!("axis {a}")))
                        .collect::<Result<_, _>>()?,
                    None => (0..rank).rev().collect(),
                };
                let mut seen = vec![false; rank];
                if perm.len() != rank || perm.iter().any(|a| *a >= rank || std::mem::replace(&mut seen[*a], true)) {
                    return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
                }
                let shape = perm.iter().map(|a| x.shape[*a]).collect();
                let list: Vec<String> = perm.iter().map(|a| a.to_string()).collect();
                Val { expr: format!("permute({}, [{}])", x.expr, list.join(", ")), shape, atomic: true, pooled: false }
            }
            "Slice" => {
                let x = self.input(n, 0)?;
                let ints = |c: &Self, k: usize| -> Result<Option<Vec<i64>>, String> {
                    match n.inputs.get(k).filter(|s| !s.is_empty()) {
                        None => Ok(None),
                        Some(_) => Ok(Some(c.constant(n, k)?.i64s().ok_or("bounds that are not integers")?)),
                    }
                };
                let (starts, ends) = (ints(self, 1)?.ok_or("no starts")?, ints(self, 2)?.ok_or("no ends")?);
                let axes = ints(self, 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                if ints(self, 4)?.is_some_and(|s| s.iter().any(|v| *v != 1)) {
                    return Err("steps other than 1".into());
                }
                let ([start], [end], [axis]) = (&starts[..], &ends[..], &axes[..]) else {
                    return Err("a slice along several axes (one axis has an equivalent)".into());
                };
                let (axis, start, end) = self.slice_bounds(&x, *axis, *start, *end)?;
                let mut shape = x.shape.clone();
                shape[axis] = Dim::N(end - start);
                Val { expr: format!("slice({}, {axis}, {start}, {end})", x.expr), shape, atomic: true, pooled: false }
            }
            "Split" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len() as i64;
                let axis = n.int("axis").unwrap_or(0);
                let axis = if axis < 0 { axis + rank } else { axis };
                let len =
                    x.shape.get(axis.max(0) as usize).and_then(|d| d.known()).ok_or(
                        "a split along the batch or a symbolic axis (an axis of known length has an equivalent)",
                    )?;
                let parts = n.outputs.len();
                let sizes: Vec<usize> = match (n.inputs.get(1).filter(|s| !s.is_empty()), n.ints("split")) {
                    (Some(_), _) => self
                        .constant(n, 1)?
                        .i64s()
                        .ok_or("sizes that are not integers")?
                        .iter()
                        .map(|v| *v as usize)
                        .collect(),
                    (None, Some(s)) => s.iter().map(|v| *v as usize).collect(),
                    // Equal parts (opset 18's num_outputs rounds the last one down).
                    (None, None) => {
                        let each = len.div_ceil(parts.max(1));
                        (0..parts).map(|k| each.min(len.saturating_sub(k * each))).collect()
                    }
                };
                if sizes.len() != parts || sizes.iter().sum::<usize>() != len || sizes.contains(&0) {
                    return Err(format!("sizes {sizes:?} for {parts} outputs of an axis of {len}"));
                }
                let mut at = 0;
                for (o, size) in n.outputs.iter().zip(sizes) {
                    let mut shape = x.shape.clone();
                    shape[axis as usize] = Dim::N(size);
                    let expr = format!("slice({}, {axis}, {at}, {})", x.expr, at + size);
                    self.define(o, Val { expr, shape, atomic: true, pooled: false });
                    at += size;
                }
                return Ok(());
            }
            "ReduceMean" | "ReduceSum" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len() as i64;
                // Opset 18 moved ReduceMean's axes (13 ReduceSum's) from an attribute to an input.
                let axes: Vec<i64> = match (n.ints("axes"), n.inputs.get(1).filter(|s| !s.is_empty())) {
                    (Some(a), _) => a.to_vec(),
                    (None, Some(_)) => self.constant(n, 1)?.i64s().ok_or("axes that are not integers")?,
                    (None, None) => return Err("a reduction over every axis".into()),
                };
                let [axis] = axes[..] else {
                    return Err(format!("a reduction over axes {axes:?}; one axis has an equivalent"));
                };
                let axis = if axis < 0 { axis + rank } else { axis };
                if axis <= 0 || axis >= rank {
                    return Err(format!(
                        "a reduction over axis {axis} of a rank-{rank} tensor (the batch axis 0 stays)"
                    ));
                }
                if n.int("keepdims").unwrap_or(1) != 0 {
                    return Err("keepdims = 1 (the language's mean and sum remove the axis: reshape after)".into());
                }
                let f = if n.op == "ReduceMean" { "mean" } else { "sum" };
                let mut shape = x.shape.clone();
                shape.remove(axis as usize);
                Val { expr: format!("{f}({}, {axis})", x.expr), shape, atomic: true, pooled: false }
            }
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
            // Read as initializers are (collected before the first node, so patterns can look
            // ahead): scalars inline, a larger constant a parameter where a value is used, shapes
            // and bounds where those are.
            "Constant" => {
                return match n.attrs.get("value") {
                    Some(crate::onnx::read::Attr::Tensor(_)) => Ok(()),
                    _ => Err("only `value` tensors are imported".into()),
                };
            }
            other => return Err(no_equivalent(other)),
        };
        self.define(&out, v);
        Ok(())
    }
}
