//! The kernel plan: per matmul and convolution, the layout choices (-O2) and the
//! specialization choices (-O3) the backend honours. An analysis, not a rewrite: the graph's
//! values do not depend on it, only how they are computed.
//!
//! Rules:
//! - Layout (-O2): how each product is lowered (`gemm`; a 1x1 stride-1 unpadded convolution
//!   is a `pointwise` GEMM over the channels with no im2col; a convolution with one input and
//!   one output channel per group is `depthwise`, computed directly; anything else is
//!   `im2col`) and the compute format of its weight: `f32` rows for f32 weights, `i8` codes
//!   for int8 weights and for trit weights whose reduction length K is below
//!   [`TQ2_MIN_K`] (where 2-bit decoding costs more than it saves), else `tq2`: 2-bit codes
//!   `w + 1` in blocks of [`TQ2_BLOCK`] weights (one 16-byte load), rows zero-padded to whole
//!   blocks (docs/ir.md, "Kernel plan").
//! - Specialization (-O3): a tile of output channels per micro-kernel, how many activation
//!   rows share one decode of the tile's weights ([`ROW_BLOCK`]), how many weight blocks one
//!   loop iteration handles ([`LOOP_UNROLL`], the rest straight-line after the loop; the whole
//!   reduction when it is at most [`FULL_UNROLL_BLOCKS`] blocks), and, when the
//!   weights are known at compile time, zero skipping: a `tq2` weight whose blocks are at
//!   least [`ZERO_SKIP_MIN`] all-zero is run block-sparse; all-zero rows (dead channels) are
//!   always listed so their products are never computed.
//! - Decisions are deterministic functions of the graph, the level and the weights.

use std::fmt;

use triton_runtime::DType;

use crate::ir::{ConvAttrs, FusedBase, Graph, NodeId, Op};
use crate::weights::Weights;
use crate::weights::quant::{self, QuantCache};

use super::OptLevel;

/// Weights per 2-bit block: one 16-byte load holds 64 codes.
pub const TQ2_BLOCK: u64 = 64;
/// Below this reduction length trit weights stay unpacked i8 codes.
pub const TQ2_MIN_K: u64 = 32;
/// Reductions of at most this many blocks are fully unrolled.
pub const FULL_UNROLL_BLOCKS: u64 = 8;
/// Fraction of all-zero blocks from which a block-sparse kernel pays.
pub const ZERO_SKIP_MIN: f64 = 0.25;
/// Activation rows a batched kernel multiplies per decode of its weights (measured on the
/// MNIST MLP at batch 1024: 1 row 8.5 ms, 2 rows 7.7 ms, 4 rows 7.9 ms).
pub const ROW_BLOCK: u64 = 2;
/// Blocks per loop iteration of a reduction that is not fully unrolled (the rest of the blocks
/// run straight-line after the loop).
pub const LOOP_UNROLL: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    Gemm,
    Pointwise,
    Depthwise,
    Im2col,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    I8,
    /// 2-bit codes, each row padded to `k_padded` (a multiple of [`TQ2_BLOCK`]).
    Tq2 {
        k_padded: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Output channels computed together (sharing each activation load).
    pub channels: u64,
    /// Weight blocks per loop iteration; equal to the block count when fully unrolled.
    pub unroll: u64,
    pub full_unroll: bool,
    /// Activation rows multiplied per decode of a tile's weights (batched inputs).
    pub rows: u64,
}

/// What the weights showed (only when they are known at compile time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightStats {
    pub zero_trits: u64,
    pub zero_blocks: u64,
    pub blocks: u64,
    /// Output channels whose weights are all zero.
    pub zero_rows: Vec<u64>,
    /// Whether the kernel skips all-zero blocks.
    pub zero_skip: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KernelChoice {
    pub node: NodeId,
    /// The weight's parameter name.
    pub weight: String,
    /// Output channels and reduction length per channel (`C/groups * kh * kw` for a convolution).
    pub n: u64,
    pub k: u64,
    pub lowering: Lowering,
    pub format: WeightFormat,
    /// Activations are int8 (an integer product) or f32.
    pub int8_activations: bool,
    /// -O3 only.
    pub tile: Option<Tile>,
    /// -O3 with known weights only.
    pub stats: Option<WeightStats>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelPlan {
    pub kernels: Vec<KernelChoice>,
}

fn lowering(base: FusedBase, w_shape: &[u64], x_channels: Option<i64>) -> Lowering {
    match base {
        FusedBase::Matmul => Lowering::Gemm,
        FusedBase::Conv2d(ConvAttrs { stride, padding, groups, .. }) => {
            let (out_ch, in_per_group) = (w_shape[0] as i64, w_shape[1] as i64);
            if groups > 1 && in_per_group == 1 && out_ch == groups && x_channels == Some(groups) {
                Lowering::Depthwise
            } else if groups == 1 && w_shape[2] == 1 && w_shape[3] == 1 && stride == [1, 1] && padding == [0, 0] {
                Lowering::Pointwise
            } else {
                Lowering::Im2col
            }
        }
    }
}

/// The compute format of a weight of `dtype` with reduction length `k`.
pub fn format(dtype: DType, k: u64) -> WeightFormat {
    match dtype {
        DType::Trit if k >= TQ2_MIN_K => WeightFormat::Tq2 { k_padded: k.div_ceil(TQ2_BLOCK) * TQ2_BLOCK },
        DType::Trit | DType::I8 => WeightFormat::I8,
        DType::F32 | DType::I32 => WeightFormat::F32,
    }
}

/// The tile of a product with `n` channels of `k` weights in `format`.
pub fn tile(n: u64, format: WeightFormat, k: u64) -> Tile {
    let blocks = match format {
        WeightFormat::Tq2 { k_padded } => k_padded / TQ2_BLOCK,
        // Unpacked rows: count 16-lane vectors instead.
        WeightFormat::I8 | WeightFormat::F32 => k.div_ceil(16),
    };
    let full_unroll = blocks <= FULL_UNROLL_BLOCKS;
    let unroll = if full_unroll { blocks } else { LOOP_UNROLL };
    Tile { channels: n.min(4), unroll, full_unroll, rows: ROW_BLOCK }
}

fn stats(codes: &ndarray::Array2<i8>, format: WeightFormat) -> WeightStats {
    let block = match format {
        WeightFormat::Tq2 { .. } => TQ2_BLOCK as usize,
        WeightFormat::I8 | WeightFormat::F32 => 16,
    };
    use rayon::prelude::*;
    // Per row: its zero trits, zero blocks and blocks (rows in parallel, in row order).
    let per_row: Vec<(u64, u64, u64)> = codes
        .axis_iter(ndarray::Axis(0))
        .into_par_iter()
        .map(|row| {
            let owned;
            let row = match row.as_slice() {
                Some(r) => r,
                None => {
                    owned = row.to_vec();
                    &owned
                }
            };
            let zeros = row.iter().map(|c| u64::from(*c == 0)).sum::<u64>();
            let zero_blocks = row.chunks(block).map(|c| u64::from(c.iter().all(|v| *v == 0))).sum::<u64>();
            (zeros, zero_blocks, row.len().div_ceil(block) as u64)
        })
        .collect();
    let (mut zero_trits, mut zero_blocks, mut blocks) = (0u64, 0u64, 0u64);
    let mut zero_rows = Vec::new();
    for (r, &(zeros, zb, b)) in per_row.iter().enumerate() {
        zero_trits += zeros;
        zero_blocks += zb;
        blocks += b;
        if zeros == codes.ncols() as u64 {
            zero_rows.push(r as u64);
        }
    }
    let zero_skip =
        matches!(format, WeightFormat::Tq2 { .. }) && blocks > 0 && zero_blocks as f64 >= ZERO_SKIP_MIN * blocks as f64;
    WeightStats { zero_trits, zero_blocks, blocks, zero_rows, zero_skip }
}

/// Plans every product of `g` (-O2: layout; -O3: also tiles and, with `weights`, zero skipping).
pub fn plan(g: &Graph, level: OptLevel, weights: Option<&Weights>, quantized: Option<&QuantCache>) -> KernelPlan {
    let mut kernels = Vec::new();
    for (id, node) in g.nodes.iter() {
        let base = match node.op {
            Op::Matmul => FusedBase::Matmul,
            Op::Conv2d(a) => FusedBase::Conv2d(a),
            Op::Fused(f) => f.base,
            _ => continue,
        };
        let (x, w) = (g.node(node.args[0]), g.node(node.args[1]));
        // Products always take their weight from a parameter (the checker's typing rules).
        let Op::Param { index } = w.op else { continue };
        let info = &g.params[index];
        let n = info.shape[0];
        let k = info.shape[1..].iter().product::<u64>();
        let x_channels = x.ty.shape.get(1).and_then(|d| d.as_known());
        let fmt = format(info.dtype, k);
        let tile = (level >= OptLevel::O3).then(|| tile(n, fmt, k));
        let stats = match (level >= OptLevel::O3, weights.and_then(|ws| ws.tensors.get(&info.name)), info.quant) {
            (true, Some(t), Some(rule)) if info.dtype == DType::Trit && t.len() as u64 == n * k => {
                match quantized.and_then(|q| q.get(&info.name)) {
                    Some(q) => Some(stats(&q.codes, fmt)),
                    None => {
                        let rows = t.view().into_shape_with_order((n as usize, k as usize)).ok();
                        rows.map(|r| stats(&quant::quantize(r, rule).codes, fmt))
                    }
                }
            }
            _ => None,
        };
        kernels.push(KernelChoice {
            node: id,
            weight: info.name.clone(),
            n,
            k,
            lowering: lowering(base, &info.shape, x_channels),
            format: fmt,
            int8_activations: x.ty.dtype == DType::I8,
            tile,
            stats,
        });
    }
    KernelPlan { kernels }
}

impl fmt::Display for Lowering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lowering::Gemm => "gemm",
            Lowering::Pointwise => "pointwise",
            Lowering::Depthwise => "depthwise",
            Lowering::Im2col => "im2col",
        })
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightFormat::F32 => f.write_str("f32"),
            WeightFormat::I8 => f.write_str("i8"),
            WeightFormat::Tq2 { k_padded } => write!(f, "tq2(k_pad={k_padded})"),
        }
    }
}

impl fmt::Display for KernelPlan {
    /// One line per product, e.g.
    /// `%8 fc1.w [256 x 784] gemm tq2(k_pad=832) act=i8 tile=4ch x 2rows 4/iter zeros=33.1% zero_blocks=0/3328 skip=no`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.kernels {
            write!(f, "%{} {} [{} x {}] {} {}", c.node.index(), c.weight, c.n, c.k, c.lowering, c.format)?;
            write!(f, " act={}", if c.int8_activations { "i8" } else { "f32" })?;
            if let Some(t) = &c.tile {
                let blocks = if t.full_unroll { "full unroll".to_string() } else { format!("{}/iter", t.unroll) };
                write!(f, " tile={}ch x {}rows {}", t.channels, t.rows, blocks)?;
            }
            if let Some(s) = &c.stats {
                let pct = 100.0 * s.zero_trits as f64 / (c.n * c.k).max(1) as f64;
                write!(f, " zeros={pct:.1}% zero_blocks={}/{}", s.zero_blocks, s.blocks)?;
                if !s.zero_rows.is_empty() {
                    write!(f, " dead_rows={}", s.zero_rows.len())?;
                }
                write!(f, " skip={}", if s.zero_skip { "yes" } else { "no" })?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
