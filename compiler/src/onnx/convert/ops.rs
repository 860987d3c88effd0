//! Built-in ops with attributes to check: pooling windows and broadcasting arithmetic.

use super::*;

impl Converter<'_> {
    pub(super) fn pool(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let x = self.input(n, 0)?;
        let k = n.ints("kernel_shape").ok_or("no kernel_shape")?.to_vec();
        if k.len() != 2 || k[0] != k[1] {
            return Err(format!("kernel {k:?}: only square 2-d windows have an equivalent"));
        }
        let one = |name: &str, default: i64| -> Result<i64, String> {
            match n.ints(name) {
                None => Ok(default),
                Some(v) if !v.is_empty() && v.iter().all(|x| *x == v[0]) => Ok(v[0]),
                Some(v) => Err(format!("{name} {v:?}: only equal values on every side have an equivalent")),
            }
        };
        let (stride, pad) = (one("strides", 1)?, one("pads", 0)?);
        if one("dilations", 1)? != 1 {
            return Err("dilated pooling".into());
        }
        if n.int("ceil_mode").unwrap_or(0) != 0 {
            return Err("ceil_mode 1 (the language rounds output sizes down)".into());
        }
        let avg = n.op == "AveragePool";
        if avg && pad > 0 && n.int("count_include_pad").unwrap_or(0) == 0 {
            return Err(
                "average pooling that leaves padding out of the count (the language counts it: count_include_pad = 1)"
                    .into(),
            );
        }
        let kk = k[0];
        let size = |d: Dim| -> Result<Dim, String> {
            let d = d.known().ok_or("a symbolic spatial dimension")? as i64;
            let out = (d + 2 * pad - kk) / stride + 1;
            if out < 1 { Err("the window does not fit".into()) } else { Ok(Dim::N(out as usize)) }
        };
        if x.shape.len() != 4 {
            return Err("an input that is not [B, C, H, W]".into());
        }
        let shape = vec![x.shape[0], x.shape[1], size(x.shape[2])?, size(x.shape[3])?];
        let f = if avg { "avg_pool2d" } else { "max_pool2d" };
        let mut args = vec![x.expr.clone(), kk.to_string()];
        if stride != kk {
            args.push(format!("stride = {stride}"));
        }
        if pad != 0 {
            args.push(format!("padding = {pad}"));
        }
        Ok(Val { expr: format!("{f}({})", args.join(", ")), shape, atomic: true, pooled: false })
    }

    pub(super) fn binary(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let operand = |c: &mut Self, k: usize| -> Result<Val, String> {
            let name = n.inputs.get(k).filter(|s| !s.is_empty()).ok_or("an operand is missing")?;
            match c.init(name) {
                Some(t) if t.len() == 1 => {
                    Ok(Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false })
                }
                Some(t) => {
                    let t = t.clone();
                    Ok(c.param(name, &t))
                }
                None => c.input(n, k),
            }
        };
        let (a, b) = (operand(self, 0)?, operand(self, 1)?);
        let sym = match n.op.as_str() {
            "Add" => "+",
            "Sub" => "-",
            "Mul" => "*",
            _ => "/",
        };
        // numpy broadcasting of the two shapes.
        let rank = a.shape.len().max(b.shape.len());
        let at = |s: &[Dim], k: usize| if k + s.len() >= rank { s[k + s.len() - rank] } else { Dim::N(1) };
        let mut shape = Vec::with_capacity(rank);
        for k in 0..rank {
            shape.push(match (at(&a.shape, k), at(&b.shape, k)) {
                (x, y) if x == y => x,
                (Dim::N(1), y) => y,
                (x, Dim::N(1)) => x,
                (x, y) => return Err(format!("operands {x:?} and {y:?} do not broadcast")),
            });
        }
        let right = if (sym == "-" || sym == "/") && !b.atomic { format!("({})", b.expr) } else { paren_if(&b, sym) };
        Ok(Val { expr: format!("{} {sym} {right}", paren_if(&a, sym)), shape, atomic: false, pooled: false })
    }
}
