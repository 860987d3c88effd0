//! Memory planning: assigns every activation a block of one preplanned arena, reusing blocks
//! whose values are dead and computing in place where legal.
//!
//! Rules:
//! - Sizes are per batch sample: a value of shape `[B, d1, ...]` takes `d1 * ... * dtype size`
//!   bytes per sample (the runtime multiplies by the batch). Static values (parameters and what
//!   is computed from them alone) and model inputs are not in the arena; outputs are.
//! - A value lives from its node to its last use. Blocks are 64-byte aligned and allocated first
//!   fit; a freed block is reused by later values.
//! - In place: an elementwise op (and a reshape, or a fused op over its residual) may write into
//!   the block of an argument that dies at this node and has the same size.
//! - Shapes with symbols other than a leading batch dimension cannot be planned ahead: the plan
//!   is then `Err` with the reason (the model is planned when its shapes are known).

use std::fmt;

use triton_runtime::DType;

use crate::ir::{Dim, Graph, Op};

pub const ALIGN: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Per node: its block, or `None` when it is not in the arena.
    pub slots: Vec<Option<Slot>>,
    /// Arena size per batch sample.
    pub arena_bytes: u64,
    /// Sum of every arena value's block: what one buffer per value would take.
    pub naive_bytes: u64,
    /// Values computed in their argument's block.
    pub in_place: usize,
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arena {} bytes per sample (naive {}; {:.1}x smaller), {} in place",
            self.arena_bytes,
            self.naive_bytes,
            self.naive_bytes as f64 / self.arena_bytes.max(1) as f64,
            self.in_place
        )
    }
}

fn dtype_bytes(d: DType) -> u64 {
    match d {
        DType::I8 | DType::Trit => 1,
        DType::I32 | DType::F32 => 4,
    }
}

/// Bytes per sample of a value shaped `[B, ...]`, or why it cannot be planned.
fn per_sample(shape: &[Dim], dtype: DType) -> Result<u64, String> {
    let batch = Dim::sym("B");
    let Some((first, rest)) = shape.split_first() else { return Err("a scalar activation".into()) };
    if *first != batch {
        return Err(format!("an activation whose first dimension is `{first}`, not the batch `B`"));
    }
    let mut n = 1u64;
    for d in rest {
        match d.as_known() {
            Some(v) if v > 0 => n = n.saturating_mul(v as u64),
            _ => return Err(format!("the symbolic dimension `{d}`")),
        }
    }
    Ok(n.saturating_mul(dtype_bytes(dtype)).div_ceil(ALIGN) * ALIGN)
}

/// Whether a node may write its result over argument `i`.
fn may_overwrite(op: &Op, i: usize) -> bool {
    match op {
        Op::Unary(_) | Op::Dequantize | Op::Reshape { .. } | Op::BatchNorm { .. } | Op::Softmax { .. } => i == 0,
        Op::Binary(_) => i < 2,
        Op::Fused(f) => f.residual && i == f.inputs() - 1,
        _ => false,
    }
}

fn live_ranges(g: &Graph) -> Vec<usize> {
    let mut last_use: Vec<usize> = (0..g.nodes.len()).collect();
    for (id, node) in g.nodes.iter() {
        for a in &node.args {
            last_use[a.index()] = last_use[a.index()].max(id.index());
        }
    }
    for o in &g.outputs {
        last_use[o.index()] = usize::MAX;
    }
    last_use
}

pub fn plan(g: &Graph) -> Result<MemoryPlan, String> {
    let statics = g.static_mask();
    let n = g.nodes.len();
    let last_use = live_ranges(g);
    let mut slots: Vec<Option<Slot>> = vec![None; n];
    // Blocks handed to an in-place result are freed with that result, not with the argument.
    let mut handed_over = vec![false; n];
    let mut free: Vec<(u64, u64)> = Vec::new(); // (offset, bytes), sorted, coalesced
    let mut top = 0u64;
    let mut naive = 0u64;
    let mut in_place = 0usize;
    let mut dying: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (id, node) in g.nodes.iter() {
        let i = id.index();
        if !statics[i] && !matches!(node.op, Op::Input { .. }) {
            let bytes = per_sample(&node.ty.shape, node.ty.dtype).map_err(|why| format!("%{i}: {why}"))?;
            naive += bytes;
            let reuse = node.args.iter().enumerate().find_map(|(k, a)| {
                let s = slots[a.index()]?;
                let once = node.args.iter().filter(|b| *b == a).count() == 1;
                let ok = may_overwrite(&node.op, k) && last_use[a.index()] == i && s.bytes == bytes && once;
                ok.then_some((a.index(), s))
            });
            let slot = match reuse {
                Some((arg, s)) => {
                    in_place += 1;
                    handed_over[arg] = true;
                    s
                }
                None => match free.iter().position(|&(_, size)| size >= bytes) {
                    Some(p) => {
                        let (off, size) = free[p];
                        if size == bytes {
                            free.remove(p);
                        } else {
                            free[p] = (off + bytes, size - bytes);
                        }
                        Slot { offset: off, bytes }
                    }
                    None => {
                        top += bytes;
                        Slot { offset: top - bytes, bytes }
                    }
                },
            };
            slots[i] = Some(slot);
            if last_use[i] != usize::MAX {
                dying[last_use[i]].push(i);
            }
        }
        for d in std::mem::take(&mut dying[i]) {
            if handed_over[d] {
                continue;
            }
            if let Some(s) = slots[d] {
                free.push((s.offset, s.bytes));
                free.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(free.len());
                for (o, b) in free.drain(..) {
                    match merged.last_mut() {
                        Some((lo, lb)) if *lo + *lb == o => *lb += b,
                        _ => merged.push((o, b)),
                    }
                }
                free = merged;
            }
        }
    }
    Ok(MemoryPlan { slots, arena_bytes: top, naive_bytes: naive, in_place })
}

impl MemoryPlan {
    /// Checks the plan against the graph: every block fits in the arena, and two values live at
    /// the same time never share bytes, except an in-place result and the argument it replaces.
    pub fn check(&self, g: &Graph) -> Result<(), String> {
        let last_use = live_ranges(g);
        let live: Vec<(usize, Slot)> = self.slots.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s))).collect();
        for &(i, s) in &live {
            if s.offset + s.bytes > self.arena_bytes {
                return Err(format!("%{i} ends past the arena"));
            }
        }
        for (x, &(i, si)) in live.iter().enumerate() {
            for &(j, sj) in &live[x + 1..] {
                // j is defined after i; they are live together when j starts before i ends.
                let overlap_time = j <= last_use[i];
                let overlap_bytes = si.offset < sj.offset + sj.bytes && sj.offset < si.offset + si.bytes;
                if overlap_time && overlap_bytes {
                    let node = &g.nodes[crate::ir::NodeId::new(j)];
                    let in_place = last_use[i] == j
                        && si == sj
                        && node.args.iter().enumerate().any(|(k, a)| a.index() == i && may_overwrite(&node.op, k));
                    if !in_place {
                        return Err(format!("%{i} and %{j} are live together and share bytes"));
                    }
                }
            }
        }
        Ok(())
    }
}
