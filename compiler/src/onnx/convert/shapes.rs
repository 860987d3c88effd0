//! Reshapes: constant targets, targets computed from shapes (`Shape` -> `Gather` -> ...), and
//! reshaped constants.

use super::*;

impl Converter<'_> {
    pub(super) fn reshape(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if let Some(c) = n.inputs.first().and_then(|v| self.init(v)).cloned() {
            return self.reshape_constant(n, &c);
        }
        let x = self.input(n, 0)?;
        // A constant shape, or one computed from shapes (PyTorch's `x.view(x.size(0), -1)`:
        // Shape -> Gather -> Unsqueeze -> Concat), where the batch reads as 0 (copy it).
        let target = match n.inputs.get(1).and_then(|s| self.shapes.get(s)) {
            Some(s) => s.iter().enumerate().map(|(k, d)| match d {
                Some(v) => Ok(*v),
                None if k == 0 => Ok(0),
                None => Err("a computed shape with the batch size away from dimension 0".to_string()),
            }).collect::<Result<Vec<i64>, String>>()?,
            None => self
                .constant(n, 1)
                .map_err(|_| "its shape is computed from values other than shapes; only constant and shape-derived shapes are imported".to_string())?
                .i64s()
                .ok_or("a shape that is not integers")?,
        };
        let allow_zero = n.int("allowzero").unwrap_or(0) == 1;
        // The values per batch element: the batch dimension's multiplier times the known sizes.
        let carriers: Vec<usize> = (0..x.shape.len()).filter(|k| x.shape[*k].batch_factor().is_some()).collect();
        let [carrier] = carriers[..] else {
            return Err(format!("an input {} without exactly one batch dimension", shape_text(&x.shape)));
        };
        let per_batch =
            x.shape[carrier].batch_factor().unwrap_or(1) * x.shape.iter().filter_map(|d| d.known()).product::<usize>();
        // Each target dimension: copied (0), inferred (-1, `None`) or known.
        let mut dims: Vec<Option<Dim>> = Vec::new();
        for (k, &t) in target.iter().enumerate() {
            dims.push(match t {
                0 if !allow_zero => Some(
                    *x.shape.get(k).ok_or(format!("dimension {k} copies an input dimension that does not exist"))?,
                ),
                -1 => None,
                t if t > 0 => Some(Dim::N(t as usize)),
                t => return Err(format!("dimension {t}")),
            });
        }
        // The first dimension carries the batch: a copied batch dimension (and at most one -1
        // among the others, inferred) or the -1 (every other dimension known).
        let known: usize = dims.iter().filter_map(|d| d.and_then(|d| d.known())).product();
        let free: Vec<usize> = (1..dims.len()).filter(|k| dims[*k].is_none()).collect();
        let carried = dims.iter().skip(1).any(|d| d.is_some_and(|d| d.batch_factor().is_some()));
        let refuse = || {
            format!(
                "target shape {target:?} of an input {}: only reshapes that keep the batch first (alone or times a known size) and the values per example have an equivalent",
                shape_text(&x.shape)
            )
        };
        let (first, inferred) = match (dims.first(), free.as_slice()) {
            _ if carried || known == 0 => return Err(refuse()),
            (Some(None), []) if per_batch.is_multiple_of(known) => (Dim::batch_times(per_batch / known), None),
            (Some(Some(d)), []) if d.batch_factor().is_some_and(|m| m * known == per_batch) => (*d, None),
            (Some(Some(d)), [k]) => match d.batch_factor() {
                Some(m) if per_batch.is_multiple_of(m * known) => (*d, Some((*k, per_batch / (m * known)))),
                _ => return Err(refuse()),
            },
            _ => return Err(refuse()),
        };
        let mut rest: Vec<usize> = dims[1..].iter().map(|d| d.and_then(|d| d.known()).unwrap_or(0)).collect();
        if let Some((k, v)) = inferred {
            rest[k - 1] = v;
        }
        let lead = if first == Dim::B { "-1".to_string() } else { dim_text(&first) };
        let text: Vec<String> = std::iter::once(lead).chain(rest.iter().map(|d| d.to_string())).collect();
        let shape = std::iter::once(first).chain(rest.iter().map(|d| Dim::N(*d))).collect();
        // [B, ...] to [B, everything else] is a flatten.
        let expr = if rest.len() == 1 && x.shape.len() > 2 && first == Dim::B && x.shape[0] == Dim::B {
            format!("flatten({})", x.expr)
        } else {
            format!("reshape({}, [{}])", x.expr, text.join(", "))
        };
        Ok(Val { expr, shape, atomic: true, pooled: false })
    }

    /// The integer vectors computed from shapes (`None`: the batch size). Returns whether node
    /// `i` was such an op (its output is then a shape, not a tensor).
    pub(super) fn shape_op(&mut self, i: usize) -> Result<bool, String> {
        let n = &self.g.nodes[i];
        let ints = |c: &Self, v: &str| -> Option<Vec<Option<i64>>> {
            if let Some(s) = c.shapes.get(v) {
                return Some(s.clone());
            }
            c.init(v).and_then(|t| t.i64s()).map(|v| v.into_iter().map(Some).collect())
        };
        let first = n.inputs.first().cloned().unwrap_or_default();
        let out: Vec<Option<i64>> = match n.op.as_str() {
            "Shape" => {
                let x = self.input(n, 0)?;
                let dims: Vec<Option<i64>> = x.shape.iter().map(|d| d.known().map(|v| v as i64)).collect();
                let rank = dims.len() as i64;
                let at = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let (start, end) = (at(n.int("start").unwrap_or(0)), at(n.int("end").unwrap_or(rank)));
                dims.get(start..end.max(start)).unwrap_or(&[]).to_vec()
            }
            "Gather" | "Unsqueeze" | "Squeeze" | "Cast" | "Slice" | "Div" if !self.shapes.contains_key(&first) => {
                return Ok(false);
            }
            "Gather" => {
                let src = self.shapes[&first].clone();
                let idx = self.constant(n, 1)?.i64s().ok_or("indices that are not integers")?;
                if n.int("axis").unwrap_or(0) != 0 {
                    return Err("a gather along another axis than 0 of a shape".into());
                }
                let len = src.len() as i64;
                idx.iter()
                    .map(|&k| {
                        let k = if k < 0 { k + len } else { k };
                        src.get(k as usize).copied().ok_or_else(|| format!("index {k} of a shape of rank {len}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "Unsqueeze" | "Squeeze" | "Cast" => self.shapes[&first].clone(),
            // PyTorch's `x.flatten(2)`: the shape's leading entries.
            "Slice" if self.shapes.contains_key(&first) => {
                let src = self.shapes[&first].clone();
                let one = |k: usize| -> Result<Option<i64>, String> {
                    match n.inputs.get(k).filter(|s| !s.is_empty()) {
                        None => Ok(None),
                        Some(_) => Ok(self.constant(n, k)?.i64s().and_then(|v| v.first().copied())),
                    }
                };
                let len = src.len() as i64;
                let at = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
                if one(3)?.is_some_and(|a| a != 0) || one(4)?.is_some_and(|s| s != 1) {
                    return Err("a slice of a shape other than along its one axis, step 1".into());
                }
                let (s, e) = (at(one(1)?.unwrap_or(0)), at(one(2)?.unwrap_or(len)));
                src.get(s..e.max(s)).unwrap_or(&[]).to_vec()
            }
            // `C // heads`: integer division of known sizes (the batch stays unknown).
            "Div" if self.shapes.contains_key(&first) => {
                let src = self.shapes[&first].clone();
                let d = ints(self, &n.inputs[1]).ok_or("a divisor that is not an integer constant")?;
                let [Some(d)] = d[..] else { return Err("a divisor that is not one integer".into()) };
                if d == 0 {
                    return Err("a shape divided by zero".into());
                }
                src.iter().map(|v| v.map(|v| v / d)).collect()
            }
            "Concat" => {
                if !n.inputs.iter().any(|v| self.shapes.contains_key(v)) {
                    return Ok(false);
                }
                let mut out = Vec::new();
                for v in &n.inputs {
                    out.extend(
                        ints(self, v).ok_or_else(|| format!("`{v}` is neither a shape nor an integer constant"))?,
                    );
                }
                out
            }
            _ => return Ok(false),
        };
        self.shapes.insert(n.outputs[0].clone(), out);
        Ok(true)
    }

    /// A reshaped constant: a parameter of the new shape.
    pub(super) fn reshape_constant(&mut self, n: &Node, c: &Tensor) -> Result<Val, String> {
        let target = self.constant(n, 1)?.i64s().ok_or("a shape that is not integers")?;
        let mut dims: Vec<usize> = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &t) in target.iter().enumerate() {
            dims.push(match t {
                0 => *c.dims.get(k).ok_or("a copied dimension that does not exist")?,
                -1 if infer.is_none() => {
                    infer = Some(k);
                    1
                }
                t if t > 0 => t as usize,
                t => return Err(format!("dimension {t}")),
            });
        }
        if let Some(k) = infer {
            let known: usize = dims.iter().product();
            if known == 0 || !c.len().is_multiple_of(known) {
                return Err(format!("target shape {target:?} does not fit {} values", c.len()));
            }
            dims[k] = c.len() / known;
        }
        if dims.iter().product::<usize>() != c.len() {
            return Err(format!("target shape {target:?} does not hold {} values", c.len()));
        }
        let t = Tensor { dims, data: c.data.clone() };
        Ok(self.param(&n.outputs[0], &t))
    }
}
