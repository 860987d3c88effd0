//! What a compiled model is made of: value slots, steps over them, constants, weights and JIT
//! kernels ([`ModelParts`]), as the code generator builds them and an artifact stores them.
//!
//! Rules:
//! - Values live in slots; a slot is written by one step and holds f32 values or int8 rows
//!   (its kind, [`ModelParts::kinds`], follows from the steps). Rank-4 slots have a memory
//!   [`Layout`]: the compiler keeps activations channels-last ([`Layout::Nhwc`]) through the
//!   network and converts only at the model's boundary (inputs, outputs, reshapes) with
//!   [`Step::Relayout`]. Axes in steps (softmax, concat, batch norm) are physical axes.
//! - [`ModelParts::validate`] checks every index, size and layout rule, so running parts read
//!   from a file cannot index out of bounds or hand a kernel a buffer of another shape.

use std::fmt;

use ndarray::{Array2, ArrayD};

use crate::ops::UnaryOp;
use crate::pack;

/// A dimension as a function of the batch size `B`: `batch * B + fixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtDim {
    pub batch: usize,
    pub fixed: usize,
}

impl RtDim {
    pub fn eval(self, b: usize) -> usize {
        self.batch * b + self.fixed
    }
}

impl fmt::Display for RtDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.batch, self.fixed) {
            (0, n) => write!(f, "{n}"),
            (1, 0) => write!(f, "B"),
            (k, 0) => write!(f, "{k}*B"),
            (1, n) => write!(f, "B + {n}"),
            (k, n) => write!(f, "{k}*B + {n}"),
        }
    }
}

/// A shape in terms of the batch size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape(pub Vec<RtDim>);

impl Shape {
    pub fn eval(&self, b: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.eval(b)).collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

/// An operand: a value computed by a step (or an input), or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Src {
    Value(usize),
    Const(usize),
}

/// How a slot's values are laid out in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// Row-major in the value's logical axis order (`[B, C, H, W]` for images).
    #[default]
    Plain,
    /// A rank-4 `[B, C, H, W]` value stored channels-last, as `[B, H, W, C]`.
    Nhwc,
}

impl Layout {
    /// The physical position of logical axis `axis` of a rank-`rank` value.
    pub fn physical_axis(self, axis: usize, rank: usize) -> usize {
        match (self, rank, axis) {
            (Layout::Nhwc, 4, 1) => 3,
            (Layout::Nhwc, 4, 2 | 3) => axis - 1,
            _ => axis,
        }
    }

    /// The physical shape of a value of logical shape `dims`.
    pub fn physical<T: Copy>(self, dims: &[T]) -> Vec<T> {
        match (self, dims) {
            (Layout::Nhwc, &[b, c, h, w]) => vec![b, h, w, c],
            _ => dims.to_vec(),
        }
    }

    /// The logical shape of a value stored as `dims`.
    pub fn logical<T: Copy>(self, dims: &[T]) -> Vec<T> {
        match (self, dims) {
            (Layout::Nhwc, &[b, h, w, c]) => vec![b, c, h, w],
            _ => dims.to_vec(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Plain => "plain",
            Layout::Nhwc => "nhwc",
        }
    }
}

/// How a product's weight is stored and multiplied.
#[derive(Clone, Debug)]
pub enum WeightData {
    /// tq2-packed trits of a matrix product, multiplied by JIT kernel `kernel`: the int8 kernel,
    /// or the add/subtract kernel for f32 activations when `f32_x`. An f32-activation product
    /// of more than [`ADD_SUB_MAX_ROWS`] rows runs on the f32 GEMM instead, over `dense`: the
    /// codes decoded on first use.
    Tq2 { packed: Vec<u8>, kernel: usize, tile: usize, f32_x: bool, dense: std::sync::OnceLock<Array2<f32>> },
    /// tq2-packed trits of a convolution, re-laid out at load into the panels the engine's
    /// convolution kernels stream (`engine::conv`).
    Trits { packed: Vec<u8> },
    /// Dense `[K, N]` f32 values (trit or int8 codes for quantized weights) for an f32 GEMM.
    Dense { w_t: Array2<f32> },
}

/// Rows up to which an f32-activation ternary product runs on the add/subtract kernel; above,
/// the f32 GEMM (FMA, 256-bit) over decoded codes is faster. Measured on the MNIST MLP, one
/// thread: the kernel takes ~49 us per row, the GEMM ~100 us at one row (weight-bound) and
/// ~8 us per row at 64.
pub const ADD_SUB_MAX_ROWS: usize = 2;

#[derive(Clone, Debug)]
pub struct GemmWeight {
    pub name: String,
    pub n: usize,
    pub k: usize,
    pub data: WeightData,
    /// Per output channel scale of a quantized weight; `None` for f32 weights.
    pub alpha: Option<Vec<f32>>,
}

/// What follows a product, in this order: scale, bias, residual, activation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Epilogue {
    pub scale: Option<usize>,
    pub bias: Option<usize>,
    pub residual: Option<usize>,
    pub act: Option<UnaryOp>,
    /// The kernel applies `act` itself.
    pub act_in_kernel: bool,
    /// The product's result is quantized for the next int8 product (the quantize step fused
    /// in): per-sample absmax, or a fixed scale. Its output is then int8.
    pub quantize: Option<Requantize>,
}

/// Requantization fused into a product's epilogue (see [`Epilogue::quantize`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Requantize {
    /// A fixed activation scale, else the per-sample absmax one.
    pub fixed: Option<f32>,
    /// Rows of the int8 result are padded to a multiple of this many values (see
    /// [`Step::Quantize`]).
    pub align: usize,
}

impl Epilogue {
    /// The activation the kernel applies itself, if any.
    pub(crate) fn kernel_act(&self) -> Option<UnaryOp> {
        self.act.filter(|_| self.act_in_kernel)
    }
}

/// Output channels up to which a direct convolution kernel (`Step::Conv::kernel`) may run a
/// layer: four vectors of four channels (the compiler's `codegen::conv_direct` builds no wider
/// ones).
pub const DIRECT_CONV_MAX_CHANNELS: usize = 16;

/// Row padding of int8 values read by matrix products: whole tq2 blocks.
pub const GEMM_ALIGN: usize = pack::BLOCK;
/// Row (pixel) padding of int8 values read by convolutions only: groups of 4 channels, the
/// unit of the convolution kernels' broadcasts.
pub const CONV_ALIGN: usize = 4;

/// Geometry of a 2-D convolution; the spatial sizes are fixed, the batch is free. The engine
/// runs it channels-last (`[B, H, W, C]` in, `[B, OH, OW, O]` out). The weight is
/// `[o, c / groups, kh, kw]`, flattened to rows of `k()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Reduction length of one output value.
    pub fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// The output size along spatial axis `axis` (0: height, 1: width) that the input size,
    /// kernel, stride, padding and dilation give; `None` when the window does not fit.
    pub fn out_size(&self, axis: usize) -> Option<usize> {
        let (size, k) = if axis == 0 { (self.h, self.kh) } else { (self.w, self.kw) };
        let span = self.dil[axis].checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
        let padded = size.checked_add(self.pad[axis].checked_mul(2)?)?;
        Some(padded.checked_sub(span)? / self.stride[axis].max(1) + 1)
    }

    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }
}

/// Window of a max or average pooling (average divides by `kernel_h * kernel_w`, padding
/// included, as the interpreter does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolGeom {
    pub max: bool,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Step {
    /// Per-sample absmax int8 quantization (or a fixed scale) into rows of the last physical
    /// axis, each padded with zeros to a multiple of `align` values ([`GEMM_ALIGN`] when a
    /// matrix product reads the result, [`CONV_ALIGN`] when only convolutions do).
    Quantize {
        x: usize,
        out: usize,
        fixed: Option<f32>,
        align: usize,
    },
    Dequantize {
        x: usize,
        out: usize,
    },
    /// `x [..., K] . w [N, K]^T` with the epilogue; integer when `x` is quantized.
    Gemm {
        x: usize,
        out: usize,
        weight: usize,
        epilogue: Epilogue,
    },
    /// 2-D convolution, channels-last in and out, with the epilogue (integer when `x` is
    /// quantized; a residual is channels-last too).
    Conv {
        x: usize,
        out: usize,
        weight: usize,
        geom: ConvGeom,
        epilogue: Epilogue,
        /// A direct convolution JIT kernel (an index into [`ModelParts::kernels`], ABI
        /// `kernel::ConvArgs`) that runs this layer: f32 input, one group, at most 16 output
        /// channels, the epilogue's activation none, relu or relu6. `None`: the runtime's kernels.
        kernel: Option<usize>,
    },
    /// Max or average pooling, channels-last in and out.
    Pool {
        x: usize,
        out: usize,
        geom: PoolGeom,
    },
    /// Mean over the spatial axes: channels-last `[B, H, W, C]` -> `[B, C]`.
    GlobalAvgPool {
        x: usize,
        out: usize,
    },
    /// Inference batch norm with constant per-channel vectors along physical axis `axis`.
    BatchNorm {
        x: usize,
        out: usize,
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
        eps: f32,
        axis: usize,
    },
    Unary {
        x: usize,
        out: usize,
        op: UnaryOp,
    },
    /// Element-wise with broadcasting over physical shapes (both operands in one layout).
    Binary {
        a: Src,
        b: Src,
        out: usize,
        op: crate::ops::BinaryOp,
    },
    Softmax {
        x: usize,
        out: usize,
        axis: usize,
    },
    /// The axes of a plain value reordered (result axis `i` is axis `perm[i]`).
    Permute {
        x: Src,
        out: usize,
        perm: Vec<usize>,
    },
    /// Causal masking of plain scores `[..., T, S]` (`ops::causal_mask`).
    CausalMask {
        x: usize,
        out: usize,
    },
    /// Positions `start .. end` of axis `axis` of a plain value (`ops::slice_axis`).
    Slice {
        x: usize,
        out: usize,
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Rotary position embeddings of a plain `[..., T, D]` value (`ops::rope`).
    Rope {
        x: usize,
        out: usize,
        theta: f32,
    },
    /// Embedding lookup (`ops::embedding`): the rows of constant `table` (`[vocab, dim]`)
    /// that the plain value `ids` names (integers in f32), `[...ids, dim]`.
    Embedding {
        ids: usize,
        table: usize,
        out: usize,
    },
    /// The sum (or mean) of a plain value along `axis`, which is removed (`ops::reduce_axis`).
    Reduce {
        x: usize,
        out: usize,
        axis: usize,
        mean: bool,
    },
    /// The batched product of two plain f32 values, `[..., M, K] x [..., K, N]`.
    BatchMatmul {
        a: Src,
        b: Src,
        out: usize,
    },
    /// Layer normalization (`beta` present) or RMS normalization (`rms`) over the last axis
    /// of a plain value, with constant vectors `gamma` and `beta` (`ops::layer_norm_row`,
    /// `ops::rms_norm_row`).
    Norm {
        x: usize,
        out: usize,
        gamma: usize,
        beta: Option<usize>,
        eps: f32,
        rms: bool,
    },
    /// The same values in another shape (logical `shape`), read and written in memory order.
    Reshape {
        x: Src,
        out: usize,
        shape: Shape,
    },
    Concat {
        xs: Vec<Src>,
        out: usize,
        axis: usize,
    },
    /// A rank-4 value converted to layout `to` (from the other one).
    Relayout {
        x: usize,
        out: usize,
        to: Layout,
    },
}

/// Everything a model is made of; the code generator builds it, [`crate::Model::from_parts`]
/// maps it.
#[derive(Clone, Debug)]
pub struct ModelParts {
    pub name: String,
    /// Inputs: name, shape; input `i` is value slot `i`.
    pub inputs: Vec<(String, Shape)>,
    pub outputs: Vec<Src>,
    /// Outputs' names and shapes, one per entry of `outputs`.
    pub output_sig: Vec<(String, Shape)>,
    pub consts: Vec<ArrayD<f32>>,
    pub weights: Vec<GemmWeight>,
    pub steps: Vec<Step>,
    /// Per step, the value slots that die after it.
    pub frees: Vec<Vec<usize>>,
    pub slots: usize,
    /// Per slot, its memory layout (inputs and outputs are [`Layout::Plain`]).
    pub layouts: Vec<Layout>,
    /// Machine code of each kernel.
    pub kernels: Vec<Vec<u8>>,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    F32,
    /// Int8 rows with per-row scales and sums.
    Int8,
}

impl Step {
    /// The value slot the step writes.
    pub fn out(&self) -> usize {
        match *self {
            Step::Quantize { out, .. }
            | Step::Dequantize { out, .. }
            | Step::Gemm { out, .. }
            | Step::Conv { out, .. }
            | Step::Pool { out, .. }
            | Step::GlobalAvgPool { out, .. }
            | Step::BatchNorm { out, .. }
            | Step::Unary { out, .. }
            | Step::Binary { out, .. }
            | Step::Softmax { out, .. }
            | Step::Norm { out, .. }
            | Step::Permute { out, .. }
            | Step::Reduce { out, .. }
            | Step::Embedding { out, .. }
            | Step::Rope { out, .. }
            | Step::Slice { out, .. }
            | Step::CausalMask { out, .. }
            | Step::BatchMatmul { out, .. }
            | Step::Reshape { out, .. }
            | Step::Concat { out, .. }
            | Step::Relayout { out, .. } => out,
        }
    }

    /// The operands the step reads: value slots and constants.
    pub fn operands(&self) -> Vec<Src> {
        let epi = |e: &Epilogue| {
            let consts = e.scale.into_iter().chain(e.bias).map(Src::Const);
            consts.chain(e.residual.map(Src::Value)).collect::<Vec<_>>()
        };
        match self {
            Step::Quantize { x, .. }
            | Step::Dequantize { x, .. }
            | Step::Unary { x, .. }
            | Step::Softmax { x, .. }
            | Step::Reduce { x, .. }
            | Step::CausalMask { x, .. }
            | Step::Rope { x, .. }
            | Step::Slice { x, .. }
            | Step::Pool { x, .. }
            | Step::GlobalAvgPool { x, .. }
            | Step::Relayout { x, .. } => vec![Src::Value(*x)],
            Step::Gemm { x, epilogue, .. } | Step::Conv { x, epilogue, .. } => {
                std::iter::once(Src::Value(*x)).chain(epi(epilogue)).collect()
            }
            Step::Norm { x, gamma, beta, .. } => {
                std::iter::once(Src::Value(*x)).chain(std::iter::once(*gamma).chain(*beta).map(Src::Const)).collect()
            }
            Step::BatchNorm { x, gamma, beta, mean, var, .. } => std::iter::once(Src::Value(*x))
                .chain([gamma, beta, mean, var].into_iter().map(|c| Src::Const(*c)))
                .collect(),
            Step::Embedding { ids, table, .. } => vec![Src::Value(*ids), Src::Const(*table)],
            Step::Binary { a, b, .. } => vec![*a, *b],
            Step::Reshape { x, .. } | Step::Permute { x, .. } => vec![*x],
            Step::BatchMatmul { a, b, .. } => vec![*a, *b],
            Step::Concat { xs, .. } => xs.clone(),
        }
    }

    /// The value slots the step reads.
    pub fn reads(&self) -> Vec<usize> {
        self.operands().into_iter().filter_map(|s| if let Src::Value(v) = s { Some(v) } else { None }).collect()
    }

    /// The weight the step multiplies by, if any.
    pub fn weight(&self) -> Option<usize> {
        match *self {
            Step::Gemm { weight, .. } | Step::Conv { weight, .. } => Some(weight),
            _ => None,
        }
    }

    /// The step's name, as `--emit plan` and errors print it.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Quantize { .. } => "quantize",
            Step::Dequantize { .. } => "dequantize",
            Step::Gemm { .. } => "gemm",
            Step::Conv { .. } => "conv",
            Step::Pool { geom, .. } if geom.max => "max_pool",
            Step::Pool { .. } => "avg_pool",
            Step::GlobalAvgPool { .. } => "global_avg_pool",
            Step::BatchNorm { .. } => "batch_norm",
            Step::Unary { .. } => "unary",
            Step::Binary { .. } => "binary",
            Step::Softmax { .. } => "softmax",
            Step::Permute { .. } => "permute",
            Step::CausalMask { .. } => "causal_mask",
            Step::Embedding { .. } => "embedding",
            Step::Rope { .. } => "rope",
            Step::Slice { .. } => "slice",
            Step::Reduce { mean: true, .. } => "mean",
            Step::Reduce { mean: false, .. } => "sum",
            Step::BatchMatmul { .. } => "bmm",
            Step::Norm { rms: false, .. } => "layer_norm",
            Step::Norm { rms: true, .. } => "rms_norm",
            Step::Reshape { .. } => "reshape",
            Step::Concat { .. } => "concat",
            Step::Relayout { .. } => "relayout",
        }
    }
}

impl ModelParts {
    /// What each slot holds, from the steps that write them (inputs are f32).
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::F32; self.slots];
        for s in &self.steps {
            let kind = match s {
                Step::Quantize { .. } => Kind::Int8,
                Step::Gemm { epilogue, .. } | Step::Conv { epilogue, .. } if epilogue.quantize.is_some() => Kind::Int8,
                _ => Kind::F32,
            };
            if let Some(k) = kinds.get_mut(s.out()) {
                *k = kind;
            }
        }
        kinds
    }

    /// Checks that every index (slot, constant, weight, kernel) is in range, every weight's
    /// data has the size its shape implies, every slot is written once before it is read with
    /// the kind and layout its reader needs. Parts from the code generator always pass; parts
    /// read from a file are checked here.
    pub fn validate(&self) -> Result<(), String> {
        let slot = |what: &str, v: usize| {
            if v < self.slots { Ok(()) } else { Err(format!("{what} uses value slot {v} of {}", self.slots)) }
        };
        let src = |what: &str, s: Src| match s {
            Src::Value(v) => slot(what, v),
            Src::Const(c) if c < self.consts.len() => Ok(()),
            Src::Const(c) => Err(format!("{what} uses constant {c} of {}", self.consts.len())),
        };
        if self.inputs.len() > self.slots {
            return Err(format!("{} inputs but {} value slots", self.inputs.len(), self.slots));
        }
        if self.frees.len() != self.steps.len() {
            return Err(format!("{} free lists for {} steps", self.frees.len(), self.steps.len()));
        }
        if self.output_sig.len() != self.outputs.len() {
            return Err(format!("{} output signatures for {} outputs", self.output_sig.len(), self.outputs.len()));
        }
        if self.layouts.len() != self.slots {
            return Err(format!("{} layouts for {} value slots", self.layouts.len(), self.slots));
        }
        let kinds = self.kinds();
        let mut written = vec![false; self.slots];
        written[..self.inputs.len()].fill(true);
        for (i, step) in self.steps.iter().enumerate() {
            let what = format!("step {i} ({})", step.name());
            slot(&what, step.out())?;
            for s in step.operands() {
                src(&what, s)?;
                if let Some(v) = s.value().filter(|v| !written[*v]) {
                    return Err(format!("{what} reads value slot {v} before it is written"));
                }
            }
            if std::mem::replace(&mut written[step.out()], true) {
                return Err(format!("{what} writes value slot {} a second time", step.out()));
            }
            for &f in &self.frees[i] {
                slot(&what, f)?;
            }
            if let Some(w) = step.weight().filter(|w| *w >= self.weights.len()) {
                return Err(format!("{what} uses weight {w} of {}", self.weights.len()));
            }
            self.check_step(&what, step, &kinds)?;
        }
        for &o in &self.outputs {
            src("an output", o)?;
            if let Some(v) = o.value().filter(|v| self.layouts[*v] != Layout::Plain) {
                return Err(format!("output slot {v} is not in the plain layout"));
            }
        }
        if let Some(i) = (0..self.inputs.len()).find(|i| self.layouts[*i] != Layout::Plain) {
            return Err(format!("input slot {i} is not in the plain layout"));
        }
        for w in &self.weights {
            self.check_weight(w)?;
        }
        Ok(())
    }

    /// The kind, layout and weight rules of one step.
    fn check_step(&self, what: &str, step: &Step, kinds: &[Kind]) -> Result<(), String> {
        let layout = |v: usize| self.layouts[v];
        let out = step.out();
        let need = |cond: bool, why: &str| if cond { Ok(()) } else { Err(format!("{what}: {why}")) };
        let f32_in = |v: usize| need(kinds[v] == Kind::F32, "reads an int8 value where f32 is needed");
        let align_ok = |a: usize| a == GEMM_ALIGN || a == CONV_ALIGN;
        match step {
            Step::Quantize { x, align, .. } => {
                f32_in(*x)?;
                need(align_ok(*align), "row alignment is neither 4 nor 64")?;
                need(layout(out) == layout(*x), "changes the layout")
            }
            Step::Dequantize { x, .. } => {
                need(kinds[*x] == Kind::Int8, "dequantizes a value that is not int8")?;
                need(layout(out) == layout(*x), "changes the layout")
            }
            Step::Gemm { x, weight, epilogue, .. } => {
                need(layout(*x) == Layout::Plain && layout(out) == Layout::Plain, "a product of channels-last values")?;
                need(epilogue.quantize.is_none_or(|q| align_ok(q.align)), "row alignment is neither 4 nor 64")?;
                if let Some(r) = epilogue.residual {
                    f32_in(r)?;
                }
                let w = &self.weights[*weight];
                need(!matches!(w.data, WeightData::Trits { .. }), "a matrix product over convolution weights")
            }
            Step::Conv { x, weight, geom, epilogue, kernel, .. } => {
                need(layout(*x) == Layout::Nhwc && layout(out) == Layout::Nhwc, "a convolution not channels-last")?;
                need(epilogue.quantize.is_none_or(|q| align_ok(q.align)), "row alignment is neither 4 nor 64")?;
                if let Some(r) = epilogue.residual {
                    f32_in(r)?;
                    need(layout(r) == Layout::Nhwc, "a residual not channels-last")?;
                }
                let w = &self.weights[*weight];
                need(!matches!(w.data, WeightData::Tq2 { .. }), "a convolution over matrix-product weights")?;
                if let Some(k) = kernel {
                    need(
                        self.kernels.get(*k).is_some_and(|c| !c.is_empty()),
                        "a convolution kernel that does not exist",
                    )?;
                    need(kinds[*x] == Kind::F32 || w.alpha.is_some(), "an int8 direct convolution of f32 weights")?;
                    let act_ok = matches!(epilogue.act, None | Some(UnaryOp::Relu | UnaryOp::Relu6));
                    let fits = geom.groups == 1
                        && (1..=DIRECT_CONV_MAX_CHANNELS).contains(&geom.o)
                        && act_ok
                        && epilogue.quantize.is_none();
                    need(fits, "a direct convolution kernel on a layer it cannot run")?;
                }
                let g = geom;
                let sane = g.groups >= 1
                    && g.c % g.groups == 0
                    && g.o % g.groups == 0
                    && g.kh >= 1
                    && g.kw >= 1
                    && g.stride.iter().all(|s| *s >= 1)
                    && g.dil.iter().all(|d| *d >= 1)
                    && w.n == g.o
                    && w.k == g.k()
                    && Some(g.oh) == g.out_size(0)
                    && Some(g.ow) == g.out_size(1);
                need(sane, &format!("convolution geometry {g:?} does not fit its weight [{}, {}]", w.n, w.k))
            }
            Step::Pool { x, geom, .. } => {
                f32_in(*x)?;
                let sane = geom.kernel.iter().chain(&geom.stride).all(|v| *v >= 1)
                    && geom.pad[0] < geom.kernel[0]
                    && geom.pad[1] < geom.kernel[1];
                need(sane, &format!("pooling window {geom:?}"))?;
                need(layout(*x) == Layout::Nhwc && layout(out) == Layout::Nhwc, "a pooling not channels-last")
            }
            Step::GlobalAvgPool { x, .. } => {
                f32_in(*x)?;
                need(layout(*x) == Layout::Nhwc && layout(out) == Layout::Plain, "a global pooling not channels-last")
            }
            Step::BatchNorm { x, .. } | Step::Unary { x, .. } | Step::Softmax { x, .. } => {
                f32_in(*x)?;
                need(layout(out) == layout(*x), "changes the layout")
            }
            Step::Permute { .. }
            | Step::BatchMatmul { .. }
            | Step::Reduce { .. }
            | Step::CausalMask { .. }
            | Step::Rope { .. }
            | Step::Slice { .. }
            | Step::Embedding { .. } => {
                let values: Vec<usize> = step.reads();
                values.iter().try_for_each(|v| f32_in(*v))?;
                need(
                    values.iter().all(|v| layout(*v) == Layout::Plain) && layout(out) == Layout::Plain,
                    "a permutation or batched product not over plain values",
                )
            }
            Step::Norm { x, .. } => {
                f32_in(*x)?;
                need(
                    layout(*x) == Layout::Plain && layout(out) == Layout::Plain,
                    "a normalization not over a plain value",
                )
            }
            Step::Binary { a, b, .. } => {
                let values: Vec<usize> = [a, b].into_iter().filter_map(|s| s.value()).collect();
                values.iter().try_for_each(|v| f32_in(*v))?;
                need(values.iter().all(|v| layout(*v) == layout(out)), "operands in another layout than the result")
            }
            Step::Concat { xs, .. } => {
                let values: Vec<usize> = xs.iter().filter_map(|s| s.value()).collect();
                values.iter().try_for_each(|v| f32_in(*v))?;
                need(values.iter().all(|v| layout(*v) == layout(out)), "operands in another layout than the result")
            }
            Step::Reshape { x, shape, .. } => {
                if let Some(v) = x.value() {
                    f32_in(v)?;
                }
                let flat_image = shape.0.len() == 4 && shape.0[2] == RtDim::ONE && shape.0[3] == RtDim::ONE;
                need(layout(out) == Layout::Plain || flat_image, "a channels-last reshape to a non-1x1 image")
            }
            Step::Relayout { x, to, .. } => {
                f32_in(*x)?;
                need(layout(*x) != *to && layout(out) == *to, "a relayout that does not change the layout")
            }
        }
    }

    fn check_weight(&self, w: &GemmWeight) -> Result<(), String> {
        if let Some(a) = w.alpha.as_ref().filter(|a| a.len() != w.n) {
            return Err(format!("weight `{}` has {} scales for {} channels", w.name, a.len(), w.n));
        }
        let packed_ok = |packed: &[u8]| {
            if packed.len() == w.n * pack::row_bytes(w.k) {
                Ok(())
            } else {
                Err(format!("weight `{}` [{}, {}] has {} packed bytes", w.name, w.n, w.k, packed.len()))
            }
        };
        match &w.data {
            WeightData::Tq2 { packed, kernel, tile, .. } => {
                packed_ok(packed)?;
                if *kernel >= self.kernels.len() || *tile == 0 {
                    return Err(format!(
                        "weight `{}` uses kernel {kernel} (tile {tile}) of {}",
                        w.name,
                        self.kernels.len()
                    ));
                }
                if w.alpha.is_none() {
                    return Err(format!("ternary weight `{}` without scales", w.name));
                }
            }
            WeightData::Trits { packed } => {
                packed_ok(packed)?;
                if w.alpha.is_none() {
                    return Err(format!("ternary weight `{}` without scales", w.name));
                }
            }
            WeightData::Dense { w_t } => {
                if w_t.dim() != (w.k, w.n) {
                    return Err(format!("weight `{}` is {:?}, expected [{}, {}]", w.name, w_t.shape(), w.k, w.n));
                }
            }
        }
        Ok(())
    }
}

impl Src {
    /// The value slot, if it is one.
    pub fn value(self) -> Option<usize> {
        match self {
            Src::Value(v) => Some(v),
            Src::Const(_) => None,
        }
    }
}

impl RtDim {
    /// The fixed size 1.
    pub const ONE: RtDim = RtDim { batch: 0, fixed: 1 };
}

/// Rows of `k` values padded to a multiple of `align`: at least one row slot of `align`.
pub fn padded_len(k: usize, align: usize) -> usize {
    k.max(1).next_multiple_of(align.max(1))
}
