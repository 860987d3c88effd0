//! The layout pass: chooses each value slot's memory layout and inserts the conversions.
//!
//! Rules:
//! - Convolutions, poolings and global pooling run channels-last ([`Layout::Nhwc`]); a value
//!   they produce stays channels-last through batch norms, activations, element-wise steps and
//!   concats, so a network converts only at its boundary: inputs and outputs are plain, and so
//!   are reshapes and matrix products of rank-4 values (a [`Step::Relayout`] before them).
//! - Int8 values are never converted: a quantize step reads its input in the layout its
//!   readers need (quantization is per sample, so the codes are the same in either order).
//! - Axes become physical axes (softmax, concat, batch norm); constants a binary step reads
//!   against a channels-last value are permuted here, at compile time.
//! - Quantized rows are padded to whole tq2 blocks ([`GEMM_ALIGN`]) when a matrix product or a
//!   pointwise convolution multiplies them in place, else to [`CONV_ALIGN`].
//! - Steps whose results nobody reads (a conversion made redundant) are removed.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use triton_runtime::engine::plan::{CONV_ALIGN, GEMM_ALIGN, Layout, ModelParts, Src, Step};

struct Pass<'a> {
    parts: &'a mut ModelParts,
    ranks: Vec<usize>,
    layouts: Vec<Layout>,
    /// The quantize step that made an int8 slot: its input and fixed scale.
    quantized: HashMap<usize, (usize, Option<f32>)>,
    /// Conversions made: (slot, layout) -> slot.
    made: HashMap<(usize, Layout), usize>,
    /// Channels-last copies of constants.
    nhwc_consts: HashMap<usize, usize>,
    steps: Vec<Step>,
}

impl Pass<'_> {
    fn new_slot(&mut self, rank: usize, layout: Layout) -> usize {
        self.parts.slots += 1;
        self.ranks.push(rank);
        self.layouts.push(layout);
        self.parts.slots - 1
    }

    /// Slot `v` in layout `to`, converted (once) if need be.
    fn convert(&mut self, v: usize, to: Layout) -> usize {
        if self.layouts[v] == to || self.ranks[v] != 4 {
            return v;
        }
        if let Some(&c) = self.made.get(&(v, to)) {
            return c;
        }
        let out = self.new_slot(4, to);
        let step = match self.quantized.get(&v).copied() {
            Some((x, fixed)) => {
                let x = self.convert(x, to);
                self.quantized.insert(out, (x, fixed));
                Step::Quantize { x, out, fixed, align: GEMM_ALIGN }
            }
            None => Step::Relayout { x: v, out, to },
        };
        self.steps.push(step);
        self.made.insert((v, to), out);
        out
    }

    /// Constant `c` (broadcast against a rank-4 value) in channels-last order.
    fn nhwc_const(&mut self, c: usize) -> usize {
        if let Some(&n) = self.nhwc_consts.get(&c) {
            return n;
        }
        let a = &self.parts.consts[c];
        let mut shape = vec![1; 4 - a.ndim().min(4)];
        shape.extend_from_slice(a.shape());
        let a4 = a.to_shape(IxDyn(&shape)).map(|v| v.into_owned()).unwrap_or_else(|_| a.clone());
        let p: ArrayD<f32> = a4.permuted_axes(IxDyn(&[0, 2, 3, 1])).as_standard_layout().into_owned();
        self.parts.consts.push(p);
        let n = self.parts.consts.len() - 1;
        self.nhwc_consts.insert(c, n);
        n
    }

    fn operand(&mut self, s: Src, to: Layout) -> Src {
        match s {
            Src::Value(v) => Src::Value(self.convert(v, to)),
            Src::Const(c) if to == Layout::Nhwc && self.parts.consts[c].ndim() <= 4 => Src::Const(self.nhwc_const(c)),
            s => s,
        }
    }

    /// The layout of an element-wise step over `srcs` with a result of rank `rank`:
    /// channels-last when a rank-4 value operand is and every value operand is rank 4.
    fn joint_layout(&self, srcs: &[Src], rank: usize) -> Layout {
        let values: Vec<usize> = srcs.iter().filter_map(|s| s.value()).collect();
        let any_nhwc = values.iter().any(|v| self.layouts[*v] == Layout::Nhwc);
        let all_rank4 = values.iter().all(|v| self.ranks[*v] == 4);
        let consts_fit = srcs.iter().all(|s| match s {
            Src::Const(c) => self.parts.consts[*c].ndim() <= 4,
            Src::Value(_) => true,
        });
        if rank == 4 && any_nhwc && all_rank4 && consts_fit { Layout::Nhwc } else { Layout::Plain }
    }

    fn step(&mut self, step: Step) {
        let rank_of = |p: &Pass<'_>, v: usize| p.ranks[v];
        let out = step.out();
        let (step, layout) = match step {
            Step::Quantize { x, out, fixed, align } => {
                self.quantized.insert(out, (x, fixed));
                let l = self.layouts[x];
                (Step::Quantize { x, out, fixed, align }, l)
            }
            Step::Dequantize { x, out } => (Step::Dequantize { x, out }, self.layouts[x]),
            Step::Conv { x, out, weight, geom, mut epilogue, kernel } => {
                let x = self.convert(x, Layout::Nhwc);
                epilogue.residual = epilogue.residual.map(|r| self.convert(r, Layout::Nhwc));
                (Step::Conv { x, out, weight, geom, epilogue, kernel }, Layout::Nhwc)
            }
            Step::Pool { x, out, geom } => (Step::Pool { x: self.convert(x, Layout::Nhwc), out, geom }, Layout::Nhwc),
            Step::GlobalAvgPool { x, out } => {
                (Step::GlobalAvgPool { x: self.convert(x, Layout::Nhwc), out }, Layout::Plain)
            }
            Step::Gemm { x, out, weight, mut epilogue } => {
                let x = self.convert(x, Layout::Plain);
                epilogue.residual = epilogue.residual.map(|r| self.convert(r, Layout::Plain));
                (Step::Gemm { x, out, weight, epilogue }, Layout::Plain)
            }
            Step::BatchNorm { x, out, gamma, beta, mean, var, eps, .. } => {
                let l = self.layouts[x];
                let axis = l.physical_axis(1, rank_of(self, x));
                (Step::BatchNorm { x, out, gamma, beta, mean, var, eps, axis }, l)
            }
            Step::Unary { x, out, op } => (Step::Unary { x, out, op }, self.layouts[x]),
            Step::Permute { x, out, perm } => {
                (Step::Permute { x: self.operand(x, Layout::Plain), out, perm }, Layout::Plain)
            }
            Step::CausalMask { x, out } => (Step::CausalMask { x: self.convert(x, Layout::Plain), out }, Layout::Plain),
            Step::Slice { x, out, axis, start, end } => {
                (Step::Slice { x: self.convert(x, Layout::Plain), out, axis, start, end }, Layout::Plain)
            }
            Step::Rope { x, out, theta } => {
                (Step::Rope { x: self.convert(x, Layout::Plain), out, theta }, Layout::Plain)
            }
            Step::Embedding { ids, table, out } => {
                (Step::Embedding { ids: self.convert(ids, Layout::Plain), table, out }, Layout::Plain)
            }
            Step::Reduce { x, out, axis, mean } => {
                let x = self.convert(x, Layout::Plain);
                (Step::Reduce { x, out, axis, mean }, Layout::Plain)
            }
            Step::BatchMatmul { a, b, out } => {
                let (a, b) = (self.operand(a, Layout::Plain), self.operand(b, Layout::Plain));
                (Step::BatchMatmul { a, b, out }, Layout::Plain)
            }
            Step::Norm { x, out, gamma, beta, eps, rms } => {
                let x = self.convert(x, Layout::Plain);
                (Step::Norm { x, out, gamma, beta, eps, rms }, Layout::Plain)
            }
            Step::Softmax { x, out, axis } => {
                let l = self.layouts[x];
                (Step::Softmax { x, out, axis: l.physical_axis(axis, rank_of(self, x)) }, l)
            }
            Step::Binary { a, b, out, op } => {
                let l = self.joint_layout(&[a, b], self.ranks[out]);
                let (a, b) = (self.operand(a, l), self.operand(b, l));
                (Step::Binary { a, b, out, op }, l)
            }
            Step::Concat { xs, out, axis } => {
                let l = self.joint_layout(&xs, self.ranks[out]);
                let xs = xs.into_iter().map(|s| self.operand(s, l)).collect();
                (Step::Concat { xs, out, axis: l.physical_axis(axis, 4) }, l)
            }
            Step::Reshape { x, out, shape } => {
                (Step::Reshape { x: self.operand(x, Layout::Plain), out, shape }, Layout::Plain)
            }
            s @ Step::Relayout { to, .. } => (s, to),
        };
        self.layouts[out] = layout;
        self.steps.push(step);
    }
}

/// Assigns layouts to `parts` (lowered in logical order; `ranks` per slot) and rewrites its
/// steps, outputs and constants accordingly (see the module rules).
pub(super) fn assign(parts: &mut ModelParts, ranks: Vec<usize>) {
    let steps = std::mem::take(&mut parts.steps);
    let slots = parts.slots;
    let mut pass = Pass {
        parts,
        ranks,
        layouts: vec![Layout::Plain; slots],
        quantized: HashMap::new(),
        made: HashMap::new(),
        nhwc_consts: HashMap::new(),
        steps: Vec::new(),
    };
    for s in steps {
        pass.step(s);
    }
    let outputs = pass.parts.outputs.clone();
    let outputs = outputs.into_iter().map(|o| pass.operand(o, Layout::Plain)).collect();
    let (steps, layouts) = (pass.steps, pass.layouts);
    parts.steps = steps;
    parts.outputs = outputs;
    parts.layouts = layouts;
    remove_dead(parts);
    set_alignment(parts);
}

/// Removes steps nobody reads (outputs are read).
fn remove_dead(parts: &mut ModelParts) {
    loop {
        let mut read = vec![false; parts.slots];
        for s in &parts.steps {
            s.reads().into_iter().for_each(|r| read[r] = true);
        }
        parts.outputs.iter().filter_map(|o| o.value()).for_each(|v| read[v] = true);
        let before = parts.steps.len();
        parts.steps.retain(|s| read[s.out()]);
        if parts.steps.len() == before {
            return;
        }
    }
}

/// Row padding of each quantize step from its readers.
fn set_alignment(parts: &mut ModelParts) {
    let mut in_place: HashMap<usize, bool> = HashMap::new();
    for s in &parts.steps {
        let (x, whole_blocks) = match s {
            Step::Gemm { x, .. } => (*x, true),
            Step::Conv { x, geom, .. } => {
                let pointwise =
                    geom.kh == 1 && geom.kw == 1 && geom.stride == [1, 1] && geom.pad == [0, 0] && geom.groups == 1;
                (*x, pointwise)
            }
            _ => continue,
        };
        *in_place.entry(x).or_default() |= whole_blocks;
    }
    for o in parts.outputs.iter().filter_map(|o| o.value()) {
        in_place.entry(o).or_default();
    }
    for s in &mut parts.steps {
        if let Step::Quantize { out, align, .. } = s {
            *align = if in_place.get(out).copied().unwrap_or(true) { GEMM_ALIGN } else { CONV_ALIGN };
        }
    }
}
