//! The std layers: `Conv2d`/`TernaryConv2d`, `BatchNorm2d`/`BatchNorm1d`, `Linear`/
//! `TernaryLinear` (from `Conv`, `BatchNormalization`, `Gemm`, `MatMul` by a constant), with
//! their weights under the layers' parameter names.

use super::*;

impl Converter<'_> {
    pub(super) fn conv(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let x = self.input(n, 0)?;
        let w = self.constant(n, 1)?.clone();
        let bias = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            Some(_) => Some(self.constant(n, 2)?.clone()),
            None => None,
        };
        if w.dims.len() != 4 || x.shape.len() != 4 {
            return Err(format!(
                "a {}-d convolution; only 2-d convolutions are imported",
                w.dims.len().saturating_sub(2)
            ));
        }
        let (o, cg, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        if kh != kw {
            return Err(format!("kernel {kh}x{kw}: only square kernels have an equivalent"));
        }
        let one = |name: &str, default: i64| -> Result<i64, String> {
            match n.ints(name) {
                None => Ok(default),
                Some(v) if v.iter().all(|x| *x == v[0]) && !v.is_empty() => Ok(v[0]),
                Some(v) => Err(format!("{name} {v:?}: only equal values on every side have an equivalent")),
            }
        };
        if n.string("auto_pad").is_some_and(|p| p != "NOTSET" && p != "VALID") {
            return Err(format!(
                "auto_pad {}: give explicit pads (re-export without auto padding)",
                n.string("auto_pad").unwrap_or("")
            ));
        }
        let (stride, pad, dil, groups) =
            (one("strides", 1)?, one("pads", 0)?, one("dilations", 1)?, n.int("group").unwrap_or(1));
        let c = x.shape[1].known().ok_or("the channel dimension is symbolic")?;
        if groups < 1 || c != cg * groups as usize {
            return Err(format!("{c} input channels for a weight of {cg} per group in {groups} groups"));
        }
        let ternary = self.ternary_nodes.contains(&i);
        let layer = if ternary { "TernaryConv2d" } else { "Conv2d" };
        self.uses_std.insert(layer);
        self.ternary += usize::from(ternary);
        let name = self.layer_name(i, &n.inputs[1], "conv");
        let mut args = vec![c.to_string(), o.to_string(), kh.to_string()];
        for (key, v, default) in
            [("stride", stride, 1), ("padding", pad, 0), ("dilation", dil, 1), ("groups", groups, 1)]
        {
            if v != default {
                args.push(format!("{key} = {v}"));
            }
        }
        if bias.is_none() {
            args.push("bias = false".into());
        }
        self.layers.push(format!("{name} = {layer}({})", args.join(", ")));
        self.weights.insert(format!("{name}.w"), array(&w, &w.dims));
        if let Some(b) = &bias {
            self.weights.insert(format!("{name}.b"), array(b, &[o]));
        }
        let size = |d: Dim, k: usize| -> Result<Dim, String> {
            let d = d.known().ok_or("a symbolic spatial dimension")? as i64;
            let out = (d + 2 * pad - dil * (k as i64 - 1) - 1) / stride + 1;
            if out < 1 { Err(format!("the window does not fit a {d}-pixel input")) } else { Ok(Dim::N(out as usize)) }
        };
        let shape = vec![Dim::B, Dim::N(o), size(x.shape[2], kh)?, size(x.shape[3], kw)?];
        Ok(Val { expr: format!("{name}({})", x.expr), shape, atomic: true, pooled: false })
    }

    pub(super) fn batch_norm(&mut self, i: usize, x: Val) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if n.int("training_mode").unwrap_or(0) != 0 {
            return Err("training mode".into());
        }
        let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|k| self.constant(n, k).cloned());
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let c = x.shape.get(1).and_then(|d| d.known()).ok_or("no channel dimension")?;
        if [&gamma, &beta, &mean, &var].iter().any(|t| t.len() != c) {
            return Err(format!("statistics that do not have {c} values"));
        }
        let layer = match x.shape.len() {
            4 => "BatchNorm2d",
            2 => "BatchNorm1d",
            r => return Err(format!("a rank-{r} input; [B, C, H, W] or [B, C] expected")),
        };
        self.uses_std.insert(layer);
        let name = self.layer_name(i, &n.inputs[1], "bn");
        let eps = n.float("epsilon").unwrap_or(1e-5);
        let args = if (eps - 1e-5).abs() > 1e-12 { format!("{c}, eps = {}", float(eps)) } else { c.to_string() };
        self.layers.push(format!("{name} = {layer}({args})"));
        for (p, t) in [("gamma", &gamma), ("beta", &beta), ("mean", &mean), ("var", &var)] {
            self.weights.insert(format!("{name}.{p}"), array(t, &[c]));
        }
        Ok(Val { expr: format!("{name}({})", x.expr), shape: x.shape, atomic: true, pooled: false })
    }

    /// `LayerNormalization` over the last axis (opset 17): `LayerNorm` for `[B, T, D]` tokens,
    /// `LayerNorm1d` for `[B, D]` vectors; a missing bias is zeros.
    pub(super) fn layer_norm(&mut self, i: usize, x: Val) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let rank = x.shape.len() as i64;
        let axis = n.int("axis").unwrap_or(-1);
        if axis != -1 && axis != rank - 1 {
            return Err(format!(
                "normalization over axis {axis} of a rank-{rank} input; only the last axis is supported"
            ));
        }
        let d = x.shape.last().and_then(|d| d.known()).ok_or("no known last dimension")?;
        let gamma = self.constant(n, 1)?.clone();
        let beta = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            Some(_) => Some(self.constant(n, 2)?.clone()),
            None => None,
        };
        if gamma.len() != d || beta.as_ref().is_some_and(|b| b.len() != d) {
            return Err(format!("scale or bias that do not have {d} values"));
        }
        let layer = match rank {
            3 => "LayerNorm",
            2 => "LayerNorm1d",
            r => return Err(format!("a rank-{r} input; [B, T, D] or [B, D] expected")),
        };
        self.uses_std.insert(layer);
        let name = self.layer_name(i, &n.inputs[1], "ln");
        let eps = n.float("epsilon").unwrap_or(1e-5);
        let args = if (eps - 1e-5).abs() > 1e-12 { format!("{d}, eps = {}", float(eps)) } else { d.to_string() };
        self.layers.push(format!("{name} = {layer}({args})"));
        self.weights.insert(format!("{name}.gamma"), array(&gamma, &[d]));
        let beta = match beta {
            Some(b) => array(&b, &[d]),
            None => ArrayD::zeros(ndarray::IxDyn(&[d])),
        };
        self.weights.insert(format!("{name}.beta"), beta);
        Ok(Val { expr: format!("{name}({})", x.expr), shape: x.shape, atomic: true, pooled: false })
    }

    /// A linear layer: `x [B, K]`, weight as `[N, K]`, optional bias `[N]`.
    pub(super) fn linear(
        &mut self,
        i: usize,
        x: Val,
        w: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        weight_name: &str,
    ) -> Result<Val, String> {
        let (nn, k) = (w.shape()[0], w.shape()[1]);
        // Tokens `[B, T, K]` (PyTorch's nn.Linear on a sequence): the layer on `[B * T, K]` rows.
        let tokens = match x.shape[..] {
            [b, Dim::N(t), Dim::N(kk)] if kk == k && b.batch_factor().is_some() => Some(t),
            _ => None,
        };
        if let Some(t) = tokens {
            let rows = Val {
                expr: format!("reshape({}, [-1, {k}])", x.expr),
                shape: vec![Dim::batch_times(x.shape[0].batch_factor().unwrap_or(1) * t), Dim::N(k)],
                atomic: true,
                pooled: false,
            };
            let y = self.linear(i, rows, w, bias, weight_name)?;
            return Ok(Val {
                expr: format!("reshape({}, [-1, {t}, {nn}])", y.expr),
                shape: vec![x.shape[0], Dim::N(t), Dim::N(nn)],
                atomic: true,
                pooled: false,
            });
        }
        if x.shape.len() != 2 || x.shape[1] != Dim::N(k) || x.shape[0].batch_factor().is_none() {
            return Err(format!("input {} for a [{nn}, {k}] weight; [B, {k}] expected", shape_text(&x.shape)));
        }
        let ternary = self.ternary_nodes.contains(&i);
        let layer = if ternary { "TernaryLinear" } else { "Linear" };
        self.uses_std.insert(layer);
        self.ternary += usize::from(ternary);
        let name = self.layer_name(i, weight_name, "fc");
        let no_bias = if bias.is_none() { ", bias = false" } else { "" };
        self.layers.push(format!("{name} = {layer}({k}, {nn}{no_bias})"));
        self.weights.insert(format!("{name}.w"), w);
        if let Some(b) = bias {
            self.weights.insert(format!("{name}.b"), b);
        }
        Ok(Val {
            expr: format!("{name}({})", x.expr),
            shape: vec![x.shape[0], Dim::N(nn)],
            atomic: true,
            pooled: false,
        })
    }

    pub(super) fn gemm(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if n.float("alpha").unwrap_or(1.0) != 1.0
            || n.float("beta").unwrap_or(1.0) != 1.0
            || n.int("transA").unwrap_or(0) != 0
        {
            return Err("alpha, beta other than 1 or transA: only x W^T + b has an equivalent".into());
        }
        let x = self.input(n, 0)?;
        let w = self.constant(n, 1)?.clone();
        if w.dims.len() != 2 {
            return Err("a weight that is not a matrix".into());
        }
        let w = if n.int("transB").unwrap_or(0) == 1 {
            array(&w, &w.dims)
        } else {
            array(&w, &w.dims).reversed_axes().as_standard_layout().into_owned()
        };
        let nn = w.shape()[0];
        let bias = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            Some(_) => {
                let b = self.constant(n, 2)?;
                if b.len() != nn {
                    return Err(format!(
                        "a bias of {} values for {nn} outputs (only a per-output bias has an equivalent)",
                        b.len()
                    ));
                }
                Some(array(b, &[nn]))
            }
            None => None,
        };
        let wname = n.inputs[1].clone();
        self.linear(i, x, w, bias, &wname)
    }

    /// `MatMul` of two computed values: `bmm` over equal leading dimensions (attention's
    /// `q k^T` and `softmax(...) v`).
    fn batched_product(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let (a, b) = (self.input(n, 0)?, self.input(n, 1)?);
        let r = a.shape.len();
        if r < 3 || b.shape.len() != r || a.shape[..r - 2] != b.shape[..r - 2] || a.shape[r - 1] != b.shape[r - 2] {
            return Err(format!(
                "a product of {} and {}: only [..., M, K] x [..., K, N] with the same leading dimensions has an equivalent",
                shape_text(&a.shape),
                shape_text(&b.shape)
            ));
        }
        let mut shape = a.shape[..r - 1].to_vec();
        shape.push(b.shape[r - 1]);
        Ok(Val { expr: format!("bmm({}, {})", a.expr, b.expr), shape, atomic: true, pooled: false })
    }

    /// A product by a constant, and the node whose output it defines (the bias `Add` that
    /// joins it, or itself).
    pub(super) fn matmul(&mut self, i: usize) -> Result<(usize, Val), String> {
        let n = &self.g.nodes[i];
        let Some(b) = n.inputs.get(1).and_then(|b| self.init(b)).cloned() else {
            return Ok((i, self.batched_product(i)?));
        };
        if b.dims.len() != 2 {
            return Err("a weight that is not a matrix".into());
        }
        let x = self.input(n, 0)?;
        let w = array(&b, &b.dims).reversed_axes().as_standard_layout().into_owned();
        let nn = w.shape()[0];
        // A bias added right after (and only there) joins the layer.
        let out = n.outputs[0].clone();
        let mut bias = None;
        if let Some(r) = self.only_reader(&out)
            && self.g.nodes[r].op == "Add"
            && let Some(other) = self.g.nodes[r].inputs.iter().find(|v| **v != out)
            && let Some(t) = self.init(other).filter(|t| t.len() == nn)
        {
            bias = Some((r, array(t, &[nn])));
        }
        let wname = n.inputs[1].clone();
        match bias {
            Some((r, b)) => {
                self.consumed.insert(r);
                Ok((r, self.linear(i, x, w, Some(b), &wname)?))
            }
            None => Ok((i, self.linear(i, x, w, None, &wname)?)),
        }
    }
}
