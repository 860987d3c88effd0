//! Dead-code elimination: drops every node the outputs do not depend on.
//!
//! Rules: model inputs are kept even when unused (they are the graph's interface); parameter
//! nodes go when unused, but the parameter table is untouched (weights files still name them).

use crate::ir::{Graph, Op};

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    let mut live = vec![false; g.nodes.len()];
    for o in &g.outputs {
        live[o.index()] = true;
    }
    for (id, node) in g.nodes.iter().rev() {
        if matches!(node.op, Op::Input { .. }) {
            live[id.index()] = true;
        }
        if live[id.index()] {
            for a in &node.args {
                live[a.index()] = true;
            }
        }
    }
    g.rebuild(|rb, id, node| if live[id.index()] { rb.copy(id, node) } else { None })
}
