//! Shape simplification: reshapes that do nothing disappear, chains of reshapes become one.
//!
//! Rules: `reshape(x, shape of x)` is `x`; `reshape(reshape(x, a), b)` is `reshape(x, b)`
//! (row-major order makes the intermediate shape irrelevant). Shapes are compared in canonical
//! form, so symbolic dimensions simplify too.

use crate::ir::{Graph, Op};

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    g.rebuild(|rb, id, node| {
        if let Op::Reshape { shape } = &node.op {
            let mut src = rb.get(node.args[0]);
            if let Op::Reshape { .. } = rb.new.nodes[src].op {
                src = rb.new.nodes[src].args[0];
            }
            if rb.new.nodes[src].ty.shape == *shape {
                return Some(src);
            }
            let op = Op::Reshape { shape: shape.clone() };
            return Some(rb.emit(op, vec![src], node.ty.clone(), rb.old.spans.get(id).copied()));
        }
        rb.copy(id, node)
    })
}
