//! Common-subexpression elimination: two nodes with the same op, attributes and arguments
//! compute the same tensor; the later one is replaced by the earlier.
//!
//! Rules: every op is pure, so everything but model inputs may be merged (a parameter read
//! twice is one node; two equal constants are one node). Arguments are compared after
//! remapping, so chains of duplicates collapse in one sweep.

use std::collections::HashMap;

use crate::ir::print::attrs;
use crate::ir::{Graph, NodeId, Op};

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    let mut seen: HashMap<(String, Vec<NodeId>), NodeId> = HashMap::new();
    g.rebuild(|rb, id, node| {
        if matches!(node.op, Op::Input { .. }) {
            return rb.copy(id, node);
        }
        let args: Vec<NodeId> = node.args.iter().map(|a| rb.get(*a)).collect();
        let leaf = match &node.op {
            Op::Param { index } => format!(" {index}"),
            Op::Const { value } => format!(" {:08x}", value.to_bits()),
            _ => String::new(),
        };
        let key = (format!("{}{leaf}{}", node.op.name(), attrs(&node.op)), args);
        if let Some(&existing) = seen.get(&key) {
            return Some(existing);
        }
        let new = rb.copy(id, node)?;
        seen.insert(key, new);
        Some(new)
    })
}
