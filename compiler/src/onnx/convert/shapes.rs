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
        let mut dims: Vec<Option<usize>> = Vec::new();
        for (k, &t) in target.iter().enumerate() {
            dims.push(match t {
                0 if !allow_zero => match x.shape.get(k) {
                    Some(Dim::B) => None,
                    Some(Dim::N(v)) => Some(*v),
                    None => return Err(format!("dimension {k} copies an input dimension that does not exist")),
                },
                -1 => None,
                t if t > 0 => Some(t as usize),
                t => return Err(format!("dimension {t}")),
            });
        }
        // The batch stays first: dimension 0 is the batch (copied, or -1 with every other
        // dimension fixed); one other -1 is inferred from the input's per-example size.
        let keep_batch = x.shape.first() == Some(&Dim::B) && dims.first().is_some_and(|d| d.is_none());
        let free: Vec<usize> = (1..dims.len()).filter(|k| dims[*k].is_none()).collect();
        let per_example = x.shape[1..].iter().map(|d| d.known()).product::<Option<usize>>();
        let mut rest: Vec<usize> = dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect();
        match (keep_batch, free.as_slice(), per_example) {
            (true, [], Some(p)) if rest.iter().product::<usize>() == p => {}
            (true, [k], Some(p)) if target[0] == 0 => {
                let known: usize = rest.iter().enumerate().filter(|(j, _)| j + 1 != *k).map(|(_, d)| *d).product();
                if known == 0 || !p.is_multiple_of(known) {
                    return Err(format!("target shape {target:?} does not divide {p} values per example"));
                }
                rest[k - 1] = p / known;
            }
            _ => {
                return Err(format!(
                    "target shape {target:?} of an input {}: only reshapes that keep the batch first and the values per example have an equivalent",
                    shape_text(&x.shape)
                ));
            }
        }
        let text: Vec<String> = std::iter::once("-1".to_string()).chain(rest.iter().map(|d| d.to_string())).collect();
        let shape = std::iter::once(Dim::B).chain(rest.iter().map(|d| Dim::N(*d))).collect();
        // [B, ...] to [B, everything else] is a flatten.
        let expr = if rest.len() == 1 && x.shape.len() > 2 {
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
            "Gather" | "Unsqueeze" | "Squeeze" | "Cast" if !self.shapes.contains_key(&first) => return Ok(false),
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
