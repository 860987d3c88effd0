//! A compiled model and how it runs: a list of steps over value slots, with constants (the
//! parameter-only values, computed at compile time), packed weights and JIT kernels.
//!
//! Rules:
//! - [`Model::run`] validates every input against the signature before any step runs; a wrong
//!   rank, size or batch is a [`RunError`] naming the expected shape, never undefined behaviour.
//! - Steps compute exactly what the interpreter's ops compute, in the same order of f32
//!   operations where the result is meant to be bit-exact (integer products and their
//!   epilogues); float GEMMs run on [`crate::sgemm`] and differ from the interpreter's f64
//!   accumulation by rounding only.
//! - Before a kernel is called, every buffer it reads or writes is checked against the sizes its
//!   specialization implies; a mismatch is an internal error, not a call.
//! - A `Model` is `Send + Sync`: `run` takes `&self` and keeps its values in a per-call
//!   [`Arena`], so many threads may run one model at once. Arenas are kept in the model between
//!   calls (one per concurrent caller) and their buffers are reused, so a steady stream of calls
//!   allocates nothing but its outputs.

use std::fmt;

use std::sync::Mutex;

use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn};
use rayon::prelude::*;

use crate::aligned::AlignedI8;
use crate::kernel::{CodeMemory, GemmArgs, MapError};
use crate::ops::{BinaryOp, UnaryOp, absmax_scale, quantize_into};
use crate::pack;
use crate::sgemm::sgemm;

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

/// How a GEMM's weight is stored and multiplied.
#[derive(Clone, Debug)]
pub enum WeightData {
    /// tq2-packed trits, multiplied by JIT kernel `kernel`: the int8 kernel, or the
    /// add/subtract kernel for f32 activations when `f32_x`. An f32-activation product of more
    /// than [`ADD_SUB_MAX_ROWS`] rows runs on the f32 GEMM instead, over `dense`: the codes
    /// decoded on first use.
    Tq2 { packed: Vec<u8>, kernel: usize, tile: usize, f32_x: bool, dense: std::sync::OnceLock<Array2<f32>> },
    /// Dense `[K, N]` f32 values (trit or int8 codes for quantized weights) for an f32 GEMM.
    Dense { w_t: Array2<f32> },
}

/// Rows up to which an f32-activation ternary product runs on the add/subtract kernel; above,
/// the f32 GEMM (FMA, 256-bit) over decoded codes is faster. Measured on the MNIST MLP, one
/// thread: the kernel takes ~49 us per row, the GEMM ~100 us at one row (weight-bound) and
/// ~8 us per row at 64.
pub const ADD_SUB_MAX_ROWS: usize = 2;

/// Rows per block when a product's rows are handed on as soon as they are written (fused
/// requantization): 16 rows of 256 floats are 16 KB, half of L1.
const AFTER_ROWS: usize = 16;

#[derive(Clone, Debug)]
pub struct GemmWeight {
    pub name: String,
    pub n: usize,
    pub k: usize,
    pub data: WeightData,
    /// Per output channel scale of a quantized weight; `None` for f32 weights.
    pub alpha: Option<Vec<f32>>,
}

impl GemmWeight {
    /// The dense `[K, N]` f32 matrix a product of `rows` rows runs on, if it runs on the f32
    /// GEMM: the weight's own, or for an f32-activation ternary product of more than
    /// [`ADD_SUB_MAX_ROWS`] rows, its codes (decoded once, on first use).
    fn dense(&self, rows: usize) -> Option<&Array2<f32>> {
        match &self.data {
            WeightData::Dense { w_t } => Some(w_t),
            WeightData::Tq2 { packed, f32_x: true, dense, .. } if rows > ADD_SUB_MAX_ROWS => {
                Some(dense.get_or_init(|| {
                    let codes = pack::unpack_tq2(packed, self.n, self.k);
                    Array2::from_shape_fn((self.k, self.n), |(kk, c)| f32::from(codes[c * self.k + kk]))
                }))
            }
            WeightData::Tq2 { .. } => None,
        }
    }
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
    /// in): per-row absmax, or this fixed scale. Only on `Step::Gemm`; its output is then int8.
    pub quantize: Option<Requantize>,
}

/// Requantization fused into a product's epilogue (see [`Epilogue::quantize`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Requantize {
    /// A fixed activation scale, else the per-sample absmax one.
    pub fixed: Option<f32>,
}

impl Epilogue {
    /// The activation the kernel applies itself, if any.
    fn kernel_act(&self) -> Option<UnaryOp> {
        self.act.filter(|_| self.act_in_kernel)
    }
}

/// Geometry of a 2-D convolution over NCHW activations; the spatial sizes are fixed, the batch
/// is free. The weight is `[o, c / groups, kh, kw]`, flattened to rows of `k()`.
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

    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// im2col of sample-group `(c0..c0 + cg)`: row `i * ow + j` of `dst` (stride `row_len`)
    /// gets the `k()` inputs of output pixel `(i, j)` in weight order `(c, u, v)`, zero where the
    /// window leaves the image; `at(c, y, x)` reads the input.
    pub fn im2col<T: Copy + Default>(
        &self,
        c0: usize,
        at: impl Fn(usize, usize, usize) -> T,
        dst: &mut [T],
        row_len: usize,
    ) {
        for i in 0..self.oh {
            for j in 0..self.ow {
                let row = &mut dst[(i * self.ow + j) * row_len..][..self.k()];
                let mut idx = 0;
                for c in 0..self.cg() {
                    for u in 0..self.kh {
                        let y = (i * self.stride[0] + u * self.dil[0]).checked_sub(self.pad[0]).filter(|y| *y < self.h);
                        for v in 0..self.kw {
                            let x =
                                (j * self.stride[1] + v * self.dil[1]).checked_sub(self.pad[1]).filter(|x| *x < self.w);
                            row[idx] = match (y, x) {
                                (Some(y), Some(x)) => at(c0 + c, y, x),
                                _ => T::default(),
                            };
                            idx += 1;
                        }
                    }
                }
            }
        }
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
    /// Per-sample absmax int8 quantization (or a fixed scale) of the last axis' rows.
    Quantize {
        x: usize,
        out: usize,
        fixed: Option<f32>,
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
    /// 2-D convolution (im2col rows, then the GEMM path of the weight) with the epilogue.
    Conv {
        x: usize,
        out: usize,
        weight: usize,
        geom: ConvGeom,
        epilogue: Epilogue,
    },
    Pool {
        x: usize,
        out: usize,
        geom: PoolGeom,
    },
    /// Mean over the spatial axes: `[B, C, H, W] -> [B, C]`.
    GlobalAvgPool {
        x: usize,
        out: usize,
    },
    /// Inference batch norm with constant per-channel vectors.
    BatchNorm {
        x: usize,
        out: usize,
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
        eps: f32,
    },
    Unary {
        x: usize,
        out: usize,
        op: UnaryOp,
    },
    Binary {
        a: Src,
        b: Src,
        out: usize,
        op: BinaryOp,
    },
    Softmax {
        x: usize,
        out: usize,
        axis: usize,
    },
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
}

/// Everything a model is made of; the code generator builds it, [`Model::from_parts`] maps it.
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
    /// Machine code of each kernel.
    pub kernels: Vec<Vec<u8>>,
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
            | Step::Reshape { out, .. }
            | Step::Concat { out, .. } => out,
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
            | Step::Pool { x, .. }
            | Step::GlobalAvgPool { x, .. } => vec![Src::Value(*x)],
            Step::Gemm { x, epilogue, .. } | Step::Conv { x, epilogue, .. } => {
                std::iter::once(Src::Value(*x)).chain(epi(epilogue)).collect()
            }
            Step::BatchNorm { x, gamma, beta, mean, var, .. } => std::iter::once(Src::Value(*x))
                .chain([gamma, beta, mean, var].into_iter().map(|c| Src::Const(*c)))
                .collect(),
            Step::Binary { a, b, .. } => vec![*a, *b],
            Step::Reshape { x, .. } => vec![*x],
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
}

impl ModelParts {
    /// Checks that every index (slot, constant, weight, kernel) is in range and every weight's
    /// data has the size its shape implies, so running the parts cannot index out of bounds.
    /// Parts from the code generator always pass; parts read from a file are checked here.
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
        for (i, step) in self.steps.iter().enumerate() {
            let what = format!("step {i}");
            slot(&what, step.out())?;
            for s in step.operands() {
                src(&what, s)?;
            }
            for &f in &self.frees[i] {
                slot(&what, f)?;
            }
            if let Some(w) = step.weight().filter(|w| *w >= self.weights.len()) {
                return Err(format!("{what} uses weight {w} of {}", self.weights.len()));
            }
        }
        for &o in &self.outputs {
            src("an output", o)?;
        }
        for w in &self.weights {
            if let Some(a) = w.alpha.as_ref().filter(|a| a.len() != w.n) {
                return Err(format!("weight `{}` has {} scales for {} channels", w.name, a.len(), w.n));
            }
            match &w.data {
                WeightData::Tq2 { packed, kernel, tile, .. } => {
                    if packed.len() != w.n * pack::row_bytes(w.k) {
                        return Err(format!(
                            "weight `{}` [{}, {}] has {} packed bytes",
                            w.name,
                            w.n,
                            w.k,
                            packed.len()
                        ));
                    }
                    if *kernel >= self.kernels.len() || *tile == 0 {
                        return Err(format!(
                            "weight `{}` uses kernel {kernel} (tile {tile}) of {}",
                            w.name,
                            self.kernels.len()
                        ));
                    }
                }
                WeightData::Dense { w_t } => {
                    if w_t.dim() != (w.k, w.n) {
                        return Err(format!("weight `{}` is {:?}, expected [{}, {}]", w.name, w_t.shape(), w.k, w.n));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parts that cannot become a model.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error(transparent)]
    Map(#[from] MapError),
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("the model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input `{name}` must have shape f32{expected}, got f32{got:?}: {why}")]
    InputShape { name: String, expected: String, got: Vec<usize>, why: String },
    #[error("internal error in step {step}: {why}")]
    Internal { step: usize, why: String },
}

/// A runnable model.
pub struct Model {
    parts: ModelParts,
    code: CodeMemory,
    pool: Option<rayon::ThreadPool>,
    /// Scratch storage of finished calls, reused by the next ones.
    arenas: Mutex<Vec<Arena>>,
    /// Int8 products run on the AVX2 kernel ([`crate::wide`]).
    wide: Option<crate::wide::Isa>,
    /// Work (multiply-adds) from which a step may split over the pool.
    parallel_min: usize,
}

/// Reusable buffers of one call: values that die go back here and the next step that needs a
/// buffer of at most that size takes one, so repeated runs do not page-fault fresh memory.
#[derive(Debug, Default)]
struct Arena {
    f32s: Vec<Vec<f32>>,
    i8s: Vec<Vec<i8>>,
    i32s: Vec<Vec<i32>>,
}

/// Takes the smallest pooled buffer that holds `len` values (or a new one), as `len` copies of
/// `fill`.
fn take<T: Copy>(pool: &mut Vec<Vec<T>>, len: usize, fill: T) -> Vec<T> {
    let mut v = pick(pool, len);
    v.clear();
    v.resize(len, fill);
    v
}

/// The smallest pooled buffer with room for `len` values (else any, else a new one).
fn pick<T>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let best = pool.iter().enumerate().filter(|(_, v)| v.capacity() >= len).min_by_key(|(_, v)| v.capacity());
    match best {
        Some((i, _)) => pool.swap_remove(i),
        None => pool.pop().unwrap_or_default(),
    }
}

/// Like [`take`], but the first values keep whatever an earlier use left there (only growth is
/// filled): for buffers the caller overwrites entirely, so the arena costs no memset.
fn take_overwritten<T: Copy + Default>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut v = pick(pool, len);
    v.truncate(len);
    v.resize(len, T::default());
    v
}

impl Arena {
    fn bytes(&self) -> usize {
        let f = self.f32s.iter().map(|v| v.capacity() * 4).sum::<usize>();
        let i = self.i8s.iter().map(Vec::capacity).sum::<usize>();
        f + i + self.i32s.iter().map(|v| v.capacity() * 4).sum::<usize>()
    }

    /// A zero-filled buffer.
    fn f32(&mut self, len: usize) -> Vec<f32> {
        take(&mut self.f32s, len, 0.0)
    }

    /// A buffer of unspecified (stale, never uninitialized) contents that the caller overwrites.
    fn f32_overwritten(&mut self, len: usize) -> Vec<f32> {
        take_overwritten(&mut self.f32s, len)
    }

    /// Int8 values on a cache line: `fill`ed, or stale ones for a caller that overwrites them.
    fn i8_aligned(&mut self, len: usize, fill: Option<i8>) -> AlignedI8 {
        AlignedI8::new_in(pick(&mut self.i8s, AlignedI8::capacity_for(len)), len, fill)
    }

    fn recycle(&mut self, v: Val) {
        match v {
            Val::F32(a) => self.f32s.push(a.into_raw_vec_and_offset().0),
            Val::Q(q) => {
                self.i8s.push(q.data.into_vec());
                self.f32s.push(q.row_scale);
                self.i32s.push(q.row_sum);
            }
        }
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.parts.name)
            .field("steps", &self.parts.steps.len())
            .field("code", &self.code)
            .finish()
    }
}

/// Quantized rows: `rows` of `k` values padded to `k_pad`, with a scale and a sum per row.
#[derive(Clone, Debug)]
struct QTensor {
    shape: Vec<usize>,
    k: usize,
    k_pad: usize,
    data: AlignedI8,
    row_scale: Vec<f32>,
    row_sum: Vec<i32>,
}

#[derive(Clone, Debug)]
enum Val {
    F32(ArrayD<f32>),
    Q(QTensor),
}

/// A product's per-channel epilogue scale and bias.
type ScaleBias<'a> = (Option<&'a [f32]>, Option<&'a [f32]>);

fn internal(step: usize, why: impl Into<String>) -> RunError {
    RunError::Internal { step, why: why.into() }
}

impl Model {
    /// Maps the kernels and prepares a thread pool of `threads` threads (0: all cores; 1: run
    /// on the calling thread).
    pub fn from_parts(parts: ModelParts, threads: usize) -> Result<Model, PartsError> {
        parts.validate().map_err(PartsError::Invalid)?;
        let code = CodeMemory::new(&parts.kernels)?;
        let pool = match threads {
            1 => None,
            n => rayon::ThreadPoolBuilder::new().num_threads(n).build().ok(),
        };
        Ok(Model {
            parts,
            code,
            pool,
            arenas: Mutex::new(Vec::new()),
            wide: crate::wide::best(),
            parallel_min: crate::sgemm::PARALLEL_MIN_MACS,
        })
    }

    /// Which kernel runs int8 x ternary products: the hand-written wide kernel
    /// ([`crate::wide`]) for an instruction set (by default the best the CPU has), or, with
    /// `None`, the JIT kernels. All give the same bits; this is for benchmarks and tests. A
    /// request above what the CPU has gets the best it has (none without AVX2).
    ///
    /// A model loaded from an artifact built for an AVX2 CPU has no int8 JIT kernels (they would
    /// never run): it keeps the wide kernel when asked for `None`.
    pub fn set_wide_kernel(&mut self, isa: Option<crate::wide::Isa>) {
        let best = crate::wide::best();
        self.wide = match isa {
            None if !self.has_int8_jit_kernels() => best,
            _ => isa.and_then(|want| best.map(|has| want.min(has))),
        };
    }

    /// Sets the work (multiply-adds) from which a product splits over the model's threads
    /// (default [`crate::sgemm::PARALLEL_MIN_MACS`]); 0 splits every product, so tests can reach
    /// the split paths on small models. Results are the same either way.
    pub fn set_parallel_threshold(&mut self, macs: usize) {
        self.parallel_min = macs;
    }

    /// The model's pool, when it has more than one thread and `work` reaches the threshold.
    fn pool_for(&self, work: usize) -> Option<&rayon::ThreadPool> {
        self.pool.as_ref().filter(|p| work >= self.parallel_min && p.current_num_threads() > 1)
    }

    /// Whether every int8 product has its JIT kernel.
    pub fn has_int8_jit_kernels(&self) -> bool {
        self.parts.weights.iter().all(|w| match &w.data {
            WeightData::Tq2 { kernel, f32_x: false, .. } => {
                self.parts.kernels.get(*kernel).is_some_and(|k| !k.is_empty())
            }
            _ => true,
        })
    }

    /// The wide kernel's instruction set in use, if any.
    pub fn wide_kernel(&self) -> Option<crate::wide::Isa> {
        self.wide
    }

    pub fn name(&self) -> &str {
        &self.parts.name
    }

    pub fn parts(&self) -> &ModelParts {
        &self.parts
    }

    /// Inputs' names and shapes (`B` is the free batch size).
    pub fn inputs(&self) -> &[(String, Shape)] {
        &self.parts.inputs
    }

    /// Outputs' names and shapes (`B` is the batch size of the inputs).
    pub fn outputs(&self) -> &[(String, Shape)] {
        &self.parts.output_sig
    }

    /// Bytes of machine code mapped.
    pub fn code_bytes(&self) -> usize {
        self.code.code_bytes()
    }

    /// Bytes of scratch buffers kept between calls (the arenas of finished calls): after a call
    /// at batch `B`, what running again at `B` needs beyond the weights, inputs and outputs.
    pub fn arena_bytes(&self) -> usize {
        let arenas = self.arenas.lock().unwrap_or_else(|e| e.into_inner());
        arenas.iter().map(Arena::bytes).sum()
    }

    fn batch_of(&self, inputs: &[ArrayViewD<'_, f32>]) -> Result<usize, RunError> {
        if inputs.len() != self.parts.inputs.len() {
            return Err(RunError::InputCount { expected: self.parts.inputs.len(), got: inputs.len() });
        }
        let mut batch = None;
        for ((name, shape), x) in self.parts.inputs.iter().zip(inputs) {
            let fail = |why: String| RunError::InputShape {
                name: name.clone(),
                expected: shape.to_string(),
                got: x.shape().to_vec(),
                why,
            };
            if shape.0.len() != x.ndim() {
                return Err(fail(format!("expected {} dimensions, got {}", shape.0.len(), x.ndim())));
            }
            for (i, (d, &n)) in shape.0.iter().zip(x.shape()).enumerate() {
                if d.batch == 0 {
                    if n != d.fixed {
                        return Err(fail(format!("dimension {i} is {n}, expected {}", d.fixed)));
                    }
                    continue;
                }
                let b = n.checked_sub(d.fixed).filter(|r| r % d.batch == 0).map(|r| r / d.batch);
                match (b, batch) {
                    (Some(b), None) if b >= 1 => batch = Some(b),
                    (Some(b), Some(prev)) if b == prev => {}
                    (Some(0), _) => return Err(fail("the batch `B` must be at least 1".into())),
                    (_, Some(prev)) => {
                        return Err(fail(format!("dimension {i} is {n}, expected {} with B = {prev}", d.eval(prev))));
                    }
                    (None, None) => return Err(fail(format!("dimension {i} is {n}, not of the form {d}"))),
                    (Some(b), None) => return Err(fail(format!("dimension {i} gives B = {b}"))),
                }
            }
        }
        Ok(batch.unwrap_or(1))
    }

    /// Runs the model on f32 inputs (batch dimension free); returns its outputs.
    pub fn run(&self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        let batch = self.batch_of(inputs)?;
        let lock = || self.arenas.lock().unwrap_or_else(|e| e.into_inner());
        let mut arena = lock().pop().unwrap_or_default();
        // Steps run on the calling thread; only products and passes big enough to gain from a
        // second core enter the pool (`Model::sgemm`, `call_tq2`, `quantize_rows`): entering it
        // wakes a worker and the caller, which cost more than a small model's whole run.
        let result = self.run_steps(inputs, batch, &mut arena);
        lock().push(arena);
        result
    }

    fn run_steps(
        &self,
        inputs: &[ArrayViewD<'_, f32>],
        batch: usize,
        arena: &mut Arena,
    ) -> Result<Vec<ArrayD<f32>>, RunError> {
        let p = &self.parts;
        let mut vals: Vec<Option<Val>> = vec![None; p.slots];
        // Inputs stay in the caller's arrays while only quantize steps read them (the int8 rows
        // are made straight from the caller's values); they are copied into the arena before the
        // first other step, unless already freed. Saves a copy of the whole input per call
        // (3.2 MB for the MNIST MLP at batch 1024).
        let mut borrowed = vec![true; inputs.len()];
        let copy_inputs = |vals: &mut [Option<Val>], borrowed: &mut [bool], arena: &mut Arena| {
            for (i, x) in inputs.iter().enumerate() {
                if !borrowed[i] {
                    continue;
                }
                let mut buf = arena.f32_overwritten(x.len());
                copy_into(&mut buf, x);
                let a = ArrayD::from_shape_vec(x.raw_dim(), buf).map_err(|e| internal(0, e.to_string()))?;
                vals[i] = Some(Val::F32(a));
                borrowed[i] = false;
            }
            Ok::<(), RunError>(())
        };
        for (si, step) in p.steps.iter().enumerate() {
            let (out, v) = match *step {
                Step::Quantize { x, out, fixed } if borrowed.get(x) == Some(&true) => {
                    (out, Val::Q(quantize_rows(inputs[x].view(), fixed, arena, |n| self.pool_for(n * QUANTIZE_WORK))))
                }
                _ => {
                    copy_inputs(&mut vals, &mut borrowed, arena)?;
                    self.step(si, step, &vals, batch, arena)?
                }
            };
            vals[out] = Some(v);
            for &f in &p.frees[si] {
                if let Some(b) = borrowed.get_mut(f) {
                    *b = false;
                }
                if let Some(v) = vals[f].take() {
                    arena.recycle(v);
                }
            }
        }
        copy_inputs(&mut vals, &mut borrowed, arena)?;
        let result = p
            .outputs
            .iter()
            .map(|o| match *o {
                Src::Const(c) => Ok(p.consts[c].clone()),
                Src::Value(v) => match vals[v].take() {
                    Some(Val::F32(a)) => Ok(a),
                    Some(Val::Q(q)) => Ok(dequantize(&q)),
                    None => Err(internal(p.steps.len(), format!("output slot {v} was not computed"))),
                },
            })
            .collect();
        for v in vals.into_iter().flatten() {
            arena.recycle(v);
        }
        result
    }

    fn f32_of<'a>(&'a self, si: usize, vals: &'a [Option<Val>], s: Src) -> Result<&'a ArrayD<f32>, RunError> {
        match s {
            Src::Const(c) => self.parts.consts.get(c).ok_or_else(|| internal(si, format!("no constant {c}"))),
            Src::Value(v) => match vals.get(v) {
                Some(Some(Val::F32(a))) => Ok(a),
                _ => Err(internal(si, format!("slot {v} holds no f32 value"))),
            },
        }
    }

    fn step(
        &self,
        si: usize,
        step: &Step,
        vals: &[Option<Val>],
        batch: usize,
        arena: &mut Arena,
    ) -> Result<(usize, Val), RunError> {
        let f32v = |s: Src| self.f32_of(si, vals, s);
        // An f32 result of `shape` computed into a pooled buffer by `fill`.
        let mut pooled = |shape: &[usize], fill: &mut dyn FnMut(&mut [f32])| -> Result<Val, RunError> {
            let mut buf = arena.f32_overwritten(shape.iter().product());
            fill(&mut buf);
            Ok(Val::F32(ArrayD::from_shape_vec(IxDyn(shape), buf).map_err(|e| internal(si, e.to_string()))?))
        };
        Ok(match step {
            Step::Quantize { x, out, fixed } => (
                *out,
                Val::Q(quantize_rows(f32v(Src::Value(*x))?.view(), *fixed, arena, |n| {
                    self.pool_for(n * QUANTIZE_WORK)
                })),
            ),
            Step::Dequantize { x, out } => match &vals[*x] {
                Some(Val::Q(q)) => (*out, pooled(&q.shape, &mut |o| dequantize_into(q, o))?),
                _ => return Err(internal(si, "dequantize of a value that is not quantized")),
            },
            Step::Gemm { x, out, weight, epilogue } => {
                let w = self.parts.weights.get(*weight).ok_or_else(|| internal(si, "no such weight"))?;
                let y = match &vals[*x] {
                    Some(Val::Q(q)) => self.gemm_q(si, q, w, epilogue, vals, arena)?,
                    Some(Val::F32(a)) => Val::F32(self.gemm_f32(si, a, w, epilogue, vals, arena)?),
                    None => return Err(internal(si, "gemm input missing")),
                };
                // Fused requantization that the product's path did not do itself.
                let y = match (y, epilogue.quantize) {
                    (Val::F32(a), Some(rq)) => {
                        let q = quantize_rows(a.view(), rq.fixed, arena, |n| self.pool_for(n * QUANTIZE_WORK));
                        arena.recycle(Val::F32(a));
                        Val::Q(q)
                    }
                    (y, _) => y,
                };
                (*out, y)
            }
            Step::Conv { x, out, weight, geom, epilogue } => {
                let w = self.parts.weights.get(*weight).ok_or_else(|| internal(si, "no such weight"))?;
                let x = vals[*x].as_ref().ok_or_else(|| internal(si, "conv input missing"))?;
                (*out, Val::F32(self.conv(si, x, w, geom, epilogue, vals, arena)?))
            }
            Step::Pool { x, out, geom } => {
                let x = f32v(Src::Value(*x))?;
                let (b, c, h, w) = dims4(si, x)?;
                let oh = (h + 2 * geom.pad[0] - geom.kernel[0]) / geom.stride[0] + 1;
                let ow = (w + 2 * geom.pad[1] - geom.kernel[1]) / geom.stride[1] + 1;
                let xs = x.as_slice().ok_or_else(|| internal(si, "pool input not contiguous"))?;
                (*out, pooled(&[b, c, oh, ow], &mut |o| pool(xs, [b * c, h, w], geom, [oh, ow], o))?)
            }
            Step::GlobalAvgPool { x, out } => {
                let x = f32v(Src::Value(*x))?;
                let (b, c) = (x.shape()[0], x.shape().get(1).copied().unwrap_or(1));
                let flat = x
                    .view()
                    .into_shape_with_order((b, c, x.len() / (b * c).max(1)))
                    .map_err(|e| internal(si, e.to_string()))?;
                // The interpreter's own reduction (ndarray's mean), so the result is identical.
                let mean = flat.mean_axis(Axis(2)).ok_or_else(|| internal(si, "empty spatial axes"))?;
                let ms = mean.as_slice().ok_or_else(|| internal(si, "mean not contiguous"))?;
                (*out, pooled(&[b, c], &mut |o| o.copy_from_slice(ms))?)
            }
            Step::BatchNorm { x, out, gamma, beta, mean, var, eps } => {
                let x = f32v(Src::Value(*x))?;
                let (b, c) = (x.shape()[0], x.shape().get(1).copied().unwrap_or(1));
                let per = x.len() / (b * c).max(1);
                let vec = |i: usize| -> Result<&[f32], RunError> {
                    self.parts
                        .consts
                        .get(i)
                        .and_then(|a| a.as_slice())
                        .filter(|v| v.len() == c)
                        .ok_or_else(|| internal(si, format!("batch-norm vector of another size than {c} channels")))
                };
                let (g, be, m, v) = (vec(*gamma)?, vec(*beta)?, vec(*mean)?, vec(*var)?);
                let fill = &mut |o: &mut [f32]| {
                    copy_into(o, &x.view());
                    for (i, ch) in o.chunks_mut(per.max(1)).enumerate() {
                        let k = i % c;
                        let inv = 1.0 / (v[k] + eps).sqrt();
                        ch.iter_mut().for_each(|t| *t = (*t - m[k]) * inv * g[k] + be[k]);
                    }
                };
                (*out, pooled(x.shape(), fill)?)
            }
            Step::Unary { x, out, op } => {
                let x = f32v(Src::Value(*x))?;
                let fill = &mut |o: &mut [f32]| {
                    copy_into(o, &x.view());
                    o.iter_mut().for_each(|v| *v = op.apply(*v));
                };
                (*out, pooled(x.shape(), fill)?)
            }
            Step::Binary { a, b, out, op } => {
                let (a, b) = (f32v(*a)?, f32v(*b)?);
                if let (true, Some(bs)) = (a.shape() == b.shape(), b.as_slice()) {
                    let fill = &mut |o: &mut [f32]| {
                        copy_into(o, &a.view());
                        o.iter_mut().zip(bs).for_each(|(d, y)| *d = op.apply(*d, *y));
                    };
                    return Ok((*out, pooled(a.shape(), fill)?));
                }
                let y = match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                };
                (*out, Val::F32(y))
            }
            Step::Softmax { x, out, axis } => (*out, Val::F32(crate::ops::softmax(f32v(Src::Value(*x))?, *axis))),
            Step::Reshape { x, out, shape } => {
                let a = f32v(*x)?;
                let dims = shape.eval(batch);
                if dims.iter().product::<usize>() != a.len() {
                    return Err(internal(si, format!("reshape of {:?} to {dims:?}", a.shape())));
                }
                (*out, pooled(&dims, &mut |o| copy_into(o, &a.view()))?)
            }
            Step::Concat { xs, out, axis } => {
                let views: Vec<_> = xs.iter().map(|s| f32v(*s).map(|a| a.view())).collect::<Result<_, _>>()?;
                let y = ndarray::concatenate(Axis(*axis), &views).map_err(|e| internal(si, e.to_string()))?;
                (*out, Val::F32(y))
            }
        })
    }

    fn epilogue_vectors<'a>(&'a self, si: usize, w: &GemmWeight, e: &Epilogue) -> Result<ScaleBias<'a>, RunError> {
        let vector = |c: Option<usize>| -> Result<Option<&'a [f32]>, RunError> {
            match c {
                None => Ok(None),
                Some(c) => {
                    let a = self.parts.consts.get(c).ok_or_else(|| internal(si, "no such constant"))?;
                    match a.as_slice() {
                        Some(s) if s.len() == w.n => Ok(Some(s)),
                        _ => Err(internal(si, format!("epilogue vector of {} values, expected {}", a.len(), w.n))),
                    }
                }
            }
        };
        Ok((vector(e.scale)?, vector(e.bias)?))
    }

    fn residual<'a>(
        &self,
        si: usize,
        e: &Epilogue,
        vals: &'a [Option<Val>],
        len: usize,
    ) -> Result<Option<&'a [f32]>, RunError> {
        match e.residual {
            None => Ok(None),
            Some(r) => match &vals[r] {
                Some(Val::F32(a)) if a.len() == len => {
                    Ok(Some(a.as_slice().ok_or_else(|| internal(si, "residual not contiguous"))?))
                }
                _ => Err(internal(si, "residual missing or of another size")),
            },
        }
    }

    /// Calls kernel `kernel` on `args` (all its rows and tiles), split between the pool's
    /// threads: chunks of rows, or, for one row, ranges of channel tiles. `after(r0, r1)` runs
    /// on the thread that computed rows r0..r1 (all channels), right after it did.
    ///
    /// # Safety
    /// `args` must be valid for the kernel's specialization: `x` holds `rows` rows of
    /// `x_row_bytes` bytes (`k_pad` int8 or f32 values), `out` (and `residual` when the kernel reads it) `rows` rows of `n` floats, `xsum`
    /// and `sx` `rows` values, `w`, `alpha` (and `scale`, `bias` when read) `n` channels.
    ///
    /// `wide`: for an int8 kernel (rows of `x_row_bytes = k_pad` bytes), the activation it
    /// applies and its channel tile, so the AVX2 kernel may run instead (same results).
    unsafe fn call_tq2(
        &self,
        kernel: usize,
        args: GemmArgs,
        x_row_bytes: usize,
        n: usize,
        wide: Option<(Option<UnaryOp>, usize)>,
        after: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> Result<(), &'static str> {
        let wide = self.wide.zip(wide);
        // An artifact leaves out int8 JIT kernels where the wide kernel always runs.
        if wide.is_none() && self.parts.kernels.get(kernel).is_none_or(Vec::is_empty) {
            return Err("the kernel is not in this model (an int8 product needs the AVX2 kernel)");
        }
        /// The argument block crosses threads; each call writes disjoint rows or channels.
        #[derive(Clone, Copy)]
        struct Shared(GemmArgs);
        // SAFETY: the pointers are only read, except `out`, where every call writes its own
        // rows (or its own channel tiles of the one row).
        unsafe impl Send for Shared {}
        unsafe impl Sync for Shared {}
        impl Shared {
            // A method, so closures capture the whole `Shared` (not its non-`Sync` field).
            fn get(&self) -> GemmArgs {
                self.0
            }
        }
        let f = self.code.entry(kernel);
        let (rows, tiles) = (args.rows as usize, args.tile_end as usize);
        let shared = Shared(args);
        let run = move |r0: usize, r1: usize, t0: usize, t1: usize| {
            let a = shared.get();
            let sub = GemmArgs {
                x: a.x.wrapping_add(r0 * x_row_bytes),
                // Null stays null: the wide kernel reads presence from it.
                residual: if a.residual.is_null() { a.residual } else { a.residual.wrapping_add(r0 * n) },
                out: a.out.wrapping_add(r0 * n),
                xsum: a.xsum.wrapping_add(r0),
                sx: a.sx.wrapping_add(r0),
                rows: (r1 - r0) as u64,
                tile_begin: t0 as u64,
                tile_end: t1 as u64,
                ..a
            };
            match wide {
                // SAFETY: the CPU has `isa` (capped at construction and in `set_wide_kernel`); a sub-range of the rows
                // and of the channel tiles (cut at n) the caller vouched for, as an int8 kernel
                // for n channels.
                Some((isa, (act, tile))) => unsafe {
                    crate::wide::gemm(isa, &sub, n, x_row_bytes, act, (t0 * tile).min(n)..(t1 * tile).min(n))
                },
                // SAFETY: a sub-range of the rows and tiles the caller vouched for.
                _ => unsafe { f(&sub) },
            }
        };
        // Rows r0..r1, all tiles; with `after`, in pieces of AFTER_ROWS rows, each handed to
        // `after` as soon as the kernel wrote it (still in L1).
        let rows_then_after = |r0: usize, r1: usize| match after {
            Some(after) => {
                for p in (r0..r1).step_by(AFTER_ROWS) {
                    let p1 = (p + AFTER_ROWS).min(r1);
                    run(p, p1, 0, tiles);
                    after(p, p1);
                }
            }
            None => run(r0, r1, 0, tiles),
        };
        let split = |threads: usize| {
            if rows == 1 && tiles >= 2 * threads {
                let per = tiles.div_ceil(threads);
                (0..threads).into_par_iter().for_each(|i| run(0, 1, (i * per).min(tiles), ((i + 1) * per).min(tiles)));
                if let Some(after) = after {
                    after(0, 1);
                }
            } else if rows > 1 {
                // Chunks of whole row groups (the kernels take 2 or 8 rows per pass).
                let chunk = rows.div_ceil(4 * threads).next_multiple_of(8);
                (0..rows.div_ceil(chunk))
                    .into_par_iter()
                    .for_each(|c| rows_then_after(c * chunk, ((c + 1) * chunk).min(rows)));
            } else {
                rows_then_after(0, rows);
            }
        };
        // A small product stays on this thread (see `sgemm::PARALLEL_MIN_MACS`, counted in f32
        // multiply-adds). An int8 multiply-add costs about a quarter of one (4 per lane of a
        // dot-product instruction), as does an f32 activation's add of a trit: a row of
        // `x_row_bytes` counts as `x_row_bytes / 4`. Measured on the MNIST MLP with 2 threads:
        // splitting its int8 784x256 layer at batch 64 and 128 (13M and 26M int8 multiply-adds)
        // made the model 1.6-1.7x slower than one thread.
        match self.pool_for(rows * n * x_row_bytes / 4) {
            Some(pool) => pool.install(|| split(rayon::current_num_threads())),
            None => rows_then_after(0, rows),
        }
        Ok(())
    }

    /// `out = x . w` on the f32 GEMM: in the model's pool when it has one and the product is
    /// big enough to gain from it (`sgemm::PARALLEL_MIN_MACS`), else on this thread.
    fn sgemm(
        &self,
        x: &ndarray::ArrayView2<'_, f32>,
        w: &ndarray::ArrayView2<'_, f32>,
        out: &mut ndarray::ArrayViewMut2<'_, f32>,
    ) {
        let ((m, k), n) = (x.dim(), w.dim().1);
        match self.pool_for(m * n * k) {
            Some(pool) => pool.install(|| sgemm(x, w, out, true)),
            None => sgemm(x, w, out, false),
        }
    }

    /// A convolution: per sample and group, im2col rows of the input, the product on the
    /// weight's path (JIT kernel for int8 x tq2, else an f32 GEMM), then NCHW output.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        si: usize,
        x: &Val,
        w: &GemmWeight,
        g: &ConvGeom,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<ArrayD<f32>, RunError> {
        let (og, k, p) = (g.og(), g.k(), g.pixels());
        let in_shape = match x {
            Val::F32(a) => a.shape().to_vec(),
            Val::Q(q) => q.shape.clone(),
        };
        let b = in_shape.first().copied().unwrap_or(0);
        if in_shape != [b, g.c, g.h, g.w] || w.n != g.o || w.k != k || g.groups == 0 || !g.o.is_multiple_of(g.groups) {
            return Err(internal(
                si,
                format!("conv input {in_shape:?} or weight [{}, {}] does not fit {g:?}", w.n, w.k),
            ));
        }
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, b * g.o * p)?;
        let mut out = arena.f32(b * g.o * p);
        let mut tmp = arena.f32(p * og);
        match (x, w.dense(p), &w.data) {
            (x, None, WeightData::Tq2 { packed, kernel, tile, f32_x, .. }) => {
                let alpha = w.alpha.as_deref().ok_or_else(|| internal(si, "ternary conv without alpha"))?;
                let (k_pad, row_bytes) = (pack::padded_k(k), pack::row_bytes(k));
                let x_fits = match x {
                    Val::Q(q) => !f32_x && q.data.len() == b * g.c * g.h * q.k_pad,
                    Val::F32(a) => *f32_x && a.is_standard_layout(),
                };
                let sizes_ok =
                    x_fits && packed.len() == g.o * row_bytes && alpha.len() == g.o && *kernel < self.code.len();
                if !sizes_ok {
                    return Err(internal(si, "conv kernel buffers do not match its specialization"));
                }
                // int8 columns with their sums and scales, or f32 columns; both k_pad per row.
                let mut cols_q = arena.i8_aligned(if *f32_x { 0 } else { p * k_pad }, Some(0));
                let mut cols_f = arena.f32(if *f32_x { p * k_pad } else { 0 });
                let mut xsum = take(&mut arena.i32s, p, 0);
                let mut sx = arena.f32(p);
                let mut res = arena.f32(if residual.is_some() { p * og } else { 0 });
                for n in 0..b {
                    for gi in 0..g.groups {
                        let c0 = gi * og;
                        match x {
                            Val::Q(q) => {
                                let base = n * g.c * g.h;
                                let at = |c: usize, y: usize, xx: usize| q.data[(base + c * g.h + y) * q.k_pad + xx];
                                sx.iter_mut().for_each(|v| *v = q.row_scale[base]);
                                g.im2col(gi * g.cg(), at, &mut cols_q, k_pad);
                                for (r, s) in xsum.iter_mut().enumerate() {
                                    *s = cols_q[r * k_pad..r * k_pad + k].iter().map(|v| *v as i32).sum();
                                }
                            }
                            Val::F32(a) => {
                                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                                let base = n * g.c * g.h * g.w;
                                let at = |c: usize, y: usize, xx: usize| xs[base + (c * g.h + y) * g.w + xx];
                                g.im2col(gi * g.cg(), at, &mut cols_f, k_pad);
                            }
                        }
                        if let Some(rs) = residual {
                            for c in 0..og {
                                let src = &rs[(n * g.o + c0 + c) * p..][..p];
                                src.iter().enumerate().for_each(|(pix, v)| res[pix * og + c] = *v);
                            }
                        }
                        let (xp, x_row_bytes) =
                            if *f32_x { (cols_f.as_ptr().cast::<i8>(), 4 * k_pad) } else { (cols_q.as_ptr(), k_pad) };
                        let args = GemmArgs {
                            x: xp,
                            w: packed[c0 * row_bytes..].as_ptr(),
                            alpha: alpha[c0..].as_ptr(),
                            scale: scale.map_or(std::ptr::null(), |s| s[c0..].as_ptr()),
                            bias: bias.map_or(std::ptr::null(), |s| s[c0..].as_ptr()),
                            residual: if residual.is_some() { res.as_ptr() } else { std::ptr::null() },
                            out: tmp.as_mut_ptr(),
                            xsum: xsum.as_ptr(),
                            sx: sx.as_ptr(),
                            rows: p as u64,
                            tile_begin: 0,
                            tile_end: og.div_ceil(*tile) as u64,
                        };
                        let wide = (!f32_x).then_some((e.kernel_act(), *tile));
                        // SAFETY: the kernel was specialised for (og, k, tile), this epilogue and
                        // this activation type (checked); the columns hold p rows of k_pad
                        // values, tmp and res p rows of og floats, xsum and sx p values, and the
                        // weight, alpha, scale and bias slices start at channel c0 of
                        // o = groups * og (sizes checked above).
                        unsafe { self.call_tq2(*kernel, args, x_row_bytes, og, wide, None) }
                            .map_err(|e| internal(si, e))?;
                        scatter(&tmp, &mut out[(n * g.o + c0) * p..][..og * p], p, og);
                    }
                }
                arena.i8s.push(cols_q.into_vec());
                arena.f32s.push(cols_f);
                arena.i32s.push(xsum);
                arena.f32s.push(sx);
                arena.f32s.push(res);
                if let (Some(act), false) = (e.act, e.act_in_kernel) {
                    out.iter_mut().for_each(|v| *v = act.apply(*v));
                }
            }
            (_, None, WeightData::Dense { .. }) => return Err(internal(si, "a dense weight without its matrix")),
            (_, Some(w_t), _) => {
                let mut cols = arena.f32(p * k);
                for n in 0..b {
                    for gi in 0..g.groups {
                        let c0 = gi * og;
                        let sx = match x {
                            Val::F32(a) => {
                                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                                let base = n * g.c * g.h * g.w;
                                g.im2col(gi * g.cg(), |c, y, xx| xs[base + (c * g.h + y) * g.w + xx], &mut cols, k);
                                1.0
                            }
                            Val::Q(q) => {
                                let base = n * g.c * g.h;
                                let at =
                                    |c: usize, y: usize, xx: usize| q.data[(base + c * g.h + y) * q.k_pad + xx] as f32;
                                g.im2col(gi * g.cg(), at, &mut cols, k);
                                q.row_scale[base]
                            }
                        };
                        let wg = w_t.slice(ndarray::s![.., c0..c0 + og]);
                        let xm = ndarray::ArrayView2::from_shape((p, k), &cols[..])
                            .map_err(|e| internal(si, e.to_string()))?;
                        let mut acc = ndarray::ArrayViewMut2::from_shape((p, og), &mut tmp[..])
                            .map_err(|e| internal(si, e.to_string()))?;
                        if og * k <= 64 {
                            // Depthwise-sized products: a plain loop beats a GEMM call per group.
                            for (xr, mut yr) in xm.outer_iter().zip(acc.outer_iter_mut()) {
                                for (c, y) in yr.iter_mut().enumerate() {
                                    *y = xr.iter().zip(wg.column(c)).fold(0.0, |s, (a, b)| s + a * b);
                                }
                            }
                        } else {
                            self.sgemm(&xm, &wg, &mut acc);
                        }
                        if let Some(alpha) = &w.alpha {
                            let is_q = matches!(x, Val::Q(_));
                            for row in tmp.chunks_mut(og) {
                                for (v, a) in row.iter_mut().zip(&alpha[c0..c0 + og]) {
                                    *v *= if is_q { sx * a } else { *a };
                                }
                            }
                        }
                        scatter(&tmp, &mut out[(n * g.o + c0) * p..][..og * p], p, og);
                    }
                }
                arena.f32s.push(cols);
                finish_nchw(&mut out, g.o, p, scale, bias, residual, e.act);
            }
        }
        arena.f32s.push(tmp);
        ArrayD::from_shape_vec(IxDyn(&[b, g.o, g.oh, g.ow]), out).map_err(|e| internal(si, e.to_string()))
    }

    /// Integer product of quantized rows.
    fn gemm_q(
        &self,
        si: usize,
        q: &QTensor,
        w: &GemmWeight,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<Val, RunError> {
        let rows = q.row_scale.len();
        let n = w.n;
        if q.k != w.k {
            return Err(internal(si, format!("activations have {} features, the weight {}", q.k, w.k)));
        }
        let alpha = w.alpha.as_deref().ok_or_else(|| internal(si, "integer product with an f32 weight"))?;
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, rows * n)?;
        let mut shape = q.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = n;
        }
        let mut out = arena.f32_overwritten(rows * n);
        // Requantization fused in: each block of rows is quantized as soon as the kernel wrote
        // it, while it is in L1. Needs the whole epilogue in the kernel and one row per sample
        // (a 2-D result) or a fixed scale; otherwise the step quantizes the finished result.
        let fused = e.quantize.filter(|rq| {
            matches!(w.data, WeightData::Tq2 { .. })
                && (e.act.is_none() || e.act_in_kernel)
                && (shape.len() == 2 || rq.fixed.is_some())
        });
        let mut fused_q = fused.map(|_| {
            let k_pad = pack::padded_k(n);
            QTensor {
                shape: shape.clone(),
                k: n,
                k_pad,
                data: arena.i8_aligned(rows * k_pad, None),
                row_scale: arena.f32_overwritten(rows),
                row_sum: take_overwritten(&mut arena.i32s, rows),
            }
        });
        match &w.data {
            WeightData::Tq2 { packed, kernel, tile, f32_x, .. } => {
                let (k_pad, tiles) = (pack::padded_k(w.k), n.div_ceil(*tile));
                let sizes_ok = !f32_x
                    && q.k_pad == k_pad
                    && q.data.len() == rows * k_pad
                    && packed.len() == n * pack::row_bytes(w.k)
                    && alpha.len() == n
                    && q.row_sum.len() == rows
                    && *kernel < self.code.len();
                if !sizes_ok {
                    return Err(internal(si, "kernel buffers do not match its specialization"));
                }
                let args = GemmArgs {
                    x: q.data.as_ptr(),
                    w: packed.as_ptr(),
                    alpha: alpha.as_ptr(),
                    scale: scale.map_or(std::ptr::null(), |s| s.as_ptr()),
                    bias: bias.map_or(std::ptr::null(), |s| s.as_ptr()),
                    residual: residual.map_or(std::ptr::null(), |s| s.as_ptr()),
                    out: out.as_mut_ptr(),
                    xsum: q.row_sum.as_ptr(),
                    sx: q.row_scale.as_ptr(),
                    rows: rows as u64,
                    tile_begin: 0,
                    tile_end: tiles as u64,
                };
                /// Where fused requantization writes: rows of `q`, read from rows of `out`.
                struct Requant {
                    out: *const f32,
                    data: *mut i8,
                    scale: *mut f32,
                    sum: *mut i32,
                    n: usize,
                    k_pad: usize,
                    fixed: Option<f32>,
                }
                // SAFETY: each call reads and writes only its own rows (disjoint across threads).
                unsafe impl Sync for Requant {}
                impl Requant {
                    /// Quantizes rows r0..r1 of `out` into the int8 rows.
                    ///
                    /// # Safety
                    /// The kernel has written rows r0..r1 of `out`; no other thread touches them.
                    unsafe fn rows(&self, r0: usize, r1: usize) {
                        for r in r0..r1 {
                            // SAFETY: r < rows: `out` holds rows * n values, `data` rows * k_pad,
                            // `scale` and `sum` rows (allocated so above); rows are disjoint.
                            unsafe {
                                quantize_sample(
                                    std::slice::from_raw_parts(self.out.add(r * self.n), self.n),
                                    self.n,
                                    self.fixed,
                                    std::slice::from_raw_parts_mut(self.data.add(r * self.k_pad), self.k_pad),
                                    std::slice::from_raw_parts_mut(self.scale.add(r), 1),
                                    std::slice::from_raw_parts_mut(self.sum.add(r), 1),
                                )
                            };
                        }
                    }
                }
                let requant = fused_q.as_mut().map(|t| Requant {
                    out: out.as_ptr(),
                    data: t.data.as_mut_ptr(),
                    scale: t.row_scale.as_mut_ptr(),
                    sum: t.row_sum.as_mut_ptr(),
                    n,
                    k_pad: t.k_pad,
                    fixed: fused.and_then(|rq| rq.fixed),
                });
                // SAFETY: `call_tq2` calls it per block of rows right after the kernel wrote them.
                let after = requant.as_ref().map(|rq| move |r0: usize, r1: usize| unsafe { rq.rows(r0, r1) });
                let after = after.as_ref().map(|f| f as &(dyn Fn(usize, usize) + Sync));
                // SAFETY: the kernel was specialised for (n, k, tile) and this epilogue; the
                // sizes of x (k_pad per row), w (n rows), alpha/scale/bias (n), residual and out
                // (n per row), xsum and sx (one per row) were checked above for all rows.
                unsafe { self.call_tq2(*kernel, args, k_pad, n, Some((e.kernel_act(), *tile)), after) }
                    .map_err(|e| internal(si, e))?;
            }
            WeightData::Dense { w_t } => {
                let x = Array2::from_shape_fn((rows, w.k), |(r, c)| q.data[r * q.k_pad + c] as f32);
                let mut acc = Array2::zeros((rows, n));
                self.sgemm(&x.view(), &w_t.view(), &mut acc.view_mut());
                for (r, (o, a)) in out.chunks_mut(n).zip(acc.outer_iter()).enumerate() {
                    let sx = q.row_scale[r];
                    for c in 0..n {
                        o[c] = a[c] * (sx * alpha[c]);
                    }
                }
                finish(&mut out, n, scale, bias, residual, e.act);
            }
        }
        if let Some(q) = fused_q {
            arena.f32s.push(out);
            return Ok(Val::Q(q));
        }
        if let (Some(act), false, WeightData::Tq2 { .. }) = (e.act, e.act_in_kernel, &w.data) {
            out.iter_mut().for_each(|v| *v = act.apply(*v));
        }
        Ok(Val::F32(ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| internal(si, e.to_string()))?))
    }

    /// Float product: f32 activations with f32 weights, trit/int8 codes scaled by alpha, or
    /// packed trits on the add/subtract kernel.
    fn gemm_f32(
        &self,
        si: usize,
        x: &ArrayD<f32>,
        w: &GemmWeight,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<ArrayD<f32>, RunError> {
        let rows = x.len() / w.k.max(1);
        let x2 = x
            .view()
            .into_shape_with_order((rows, w.k))
            .map_err(|_| internal(si, format!("activations of shape {:?} are not rows of {}", x.shape(), w.k)))?;
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, rows * w.n)?;
        let mut out = arena.f32_overwritten(rows * w.n);
        match (w.dense(rows), &w.data) {
            (Some(w_t), _) => {
                let mut acc = ndarray::ArrayViewMut2::from_shape((rows, w.n), &mut out[..])
                    .map_err(|e| internal(si, e.to_string()))?;
                self.sgemm(&x2, &w_t.view(), &mut acc);
                if let Some(alpha) = &w.alpha {
                    for mut row in acc.outer_iter_mut() {
                        row.zip_mut_with(&ndarray::ArrayView1::from(alpha.as_slice()), |v, a| *v *= a);
                    }
                }
                finish(&mut out, w.n, scale, bias, residual, e.act);
            }
            (None, WeightData::Dense { .. }) => return Err(internal(si, "a dense weight without its matrix")),
            (None, WeightData::Tq2 { packed, kernel, tile, f32_x, .. }) => {
                let alpha = w.alpha.as_deref().ok_or_else(|| internal(si, "ternary product without alpha"))?;
                let k_pad = pack::padded_k(w.k);
                let sizes_ok = *f32_x
                    && packed.len() == w.n * pack::row_bytes(w.k)
                    && alpha.len() == w.n
                    && *kernel < self.code.len();
                if !sizes_ok {
                    return Err(internal(si, "kernel buffers do not match its specialization"));
                }
                // Rows padded with zeros to k_pad.
                let mut xp = arena.f32(rows * k_pad);
                for (dst, src) in xp.chunks_mut(k_pad).zip(x2.outer_iter()) {
                    dst[..w.k].iter_mut().zip(src).for_each(|(d, v)| *d = *v);
                }
                let args = GemmArgs {
                    x: xp.as_ptr().cast::<i8>(),
                    w: packed.as_ptr(),
                    alpha: alpha.as_ptr(),
                    scale: scale.map_or(std::ptr::null(), |s| s.as_ptr()),
                    bias: bias.map_or(std::ptr::null(), |s| s.as_ptr()),
                    residual: residual.map_or(std::ptr::null(), |s| s.as_ptr()),
                    out: out.as_mut_ptr(),
                    xsum: std::ptr::null(),
                    sx: std::ptr::null(),
                    rows: rows as u64,
                    tile_begin: 0,
                    tile_end: w.n.div_ceil(*tile) as u64,
                };
                // SAFETY: the kernel was specialised for (n, k, tile), this epilogue and f32
                // activations (checked); xp holds `rows` rows of k_pad floats, out and residual
                // `rows` rows of n, w/alpha/scale/bias n channels (sizes checked above).
                unsafe { self.call_tq2(*kernel, args, 4 * k_pad, w.n, None, None) }.map_err(|e| internal(si, e))?;
                arena.f32s.push(xp);
                if let (Some(act), false) = (e.act, e.act_in_kernel) {
                    out.iter_mut().for_each(|v| *v = act.apply(*v));
                }
            }
        }
        let mut shape = x.shape().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = w.n;
        }
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| internal(si, e.to_string()))
    }
}

/// `[pixels, channels]` rows into `[channels, pixels]` planes.
fn scatter(tmp: &[f32], dst: &mut [f32], p: usize, og: usize) {
    for (pix, row) in tmp.chunks(og).enumerate().take(p) {
        for (c, v) in row.iter().enumerate() {
            dst[c * p + pix] = *v;
        }
    }
}

/// The epilogue of an NCHW product, per channel, in the interpreter's order.
fn finish_nchw(
    out: &mut [f32],
    o: usize,
    p: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    for (i, plane) in out.chunks_mut(p.max(1)).enumerate() {
        let c = i % o;
        if let Some(s) = scale {
            plane.iter_mut().for_each(|v| *v *= s[c]);
        }
        if let Some(b) = bias {
            plane.iter_mut().for_each(|v| *v += b[c]);
        }
        if let Some(r) = residual {
            plane.iter_mut().zip(&r[i * p..(i + 1) * p]).for_each(|(v, x)| *v += x);
        }
        if let Some(a) = act {
            plane.iter_mut().for_each(|v| *v = a.apply(*v));
        }
    }
}

/// Max or average pooling of `planes` images of `h x w` (the interpreter's loop order).
fn pool(x: &[f32], [planes, h, w]: [usize; 3], g: &PoolGeom, [oh, ow]: [usize; 2], out: &mut [f32]) {
    let [kh, kw] = g.kernel;
    for pl in 0..planes {
        let img = &x[pl * h * w..(pl + 1) * h * w];
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = if g.max { f32::NEG_INFINITY } else { 0.0 };
                for u in 0..kh {
                    for v in 0..kw {
                        let y = (i * g.stride[0] + u).checked_sub(g.pad[0]).filter(|y| *y < h);
                        let z = (j * g.stride[1] + v).checked_sub(g.pad[1]).filter(|z| *z < w);
                        let val = match (y, z) {
                            (Some(y), Some(z)) => img[y * w + z],
                            _ if g.max => f32::NEG_INFINITY,
                            _ => 0.0,
                        };
                        if g.max {
                            acc = acc.max(val);
                        } else {
                            acc += val;
                        }
                    }
                }
                out[(pl * oh + i) * ow + j] = if g.max { acc } else { acc / (kh * kw) as f32 };
            }
        }
    }
}

fn dims4(si: usize, x: &ArrayD<f32>) -> Result<(usize, usize, usize, usize), RunError> {
    match *x.shape() {
        [b, c, h, w] => Ok((b, c, h, w)),
        ref s => Err(internal(si, format!("expected an NCHW tensor, got shape {s:?}"))),
    }
}

/// Copies `a` in logical (row-major) order into `dst` of the same length.
fn copy_into(dst: &mut [f32], a: &ArrayViewD<'_, f32>) {
    match a.as_slice() {
        Some(s) => dst.copy_from_slice(s),
        None => dst.iter_mut().zip(a.iter()).for_each(|(d, v)| *d = *v),
    }
}

/// The epilogue after the product's own scaling, in the interpreter's order.
fn finish(
    out: &mut [f32],
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    for (r, row) in out.chunks_mut(n).enumerate() {
        if let Some(s) = scale {
            row.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
        }
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        if let Some(res) = residual {
            row.iter_mut().zip(&res[r * n..(r + 1) * n]).for_each(|(v, x)| *v += x);
        }
        if let Some(a) = act {
            row.iter_mut().for_each(|v| *v = a.apply(*v));
        }
    }
}

/// Quantizes per sample (dimension 0; per tensor below rank 2) into rows of the last axis.
/// What quantizing one value weighs against an f32 multiply-add when deciding to split
/// (`Model::pool_for`): a pass over memory, so 512k values reach the default threshold.
/// (Splitting the MNIST MLP's 100k-value batch-128 input made it slower, measured.)
const QUANTIZE_WORK: usize = 16;

/// `pool(values)`: the pool to split over, if the batch is worth it.
fn quantize_rows<'p>(
    x: ArrayViewD<'_, f32>,
    fixed: Option<f32>,
    arena: &mut Arena,
    pool: impl FnOnce(usize) -> Option<&'p rayon::ThreadPool>,
) -> QTensor {
    let shape = x.shape().to_vec();
    let k = shape.last().copied().unwrap_or(1).max(1);
    let k_pad = pack::padded_k(k);
    let x = x.as_standard_layout();
    let all = x.as_slice().unwrap_or(&[]);
    let rows = all.len() / k;
    let samples = if shape.len() >= 2 { shape[0].max(1) } else { 1 };
    let per_sample = (all.len() / samples).max(1);
    let sample_rows = per_sample.div_ceil(k);
    // Every row's k values, scale and sum are written below; only the padding is zeroed.
    let mut data = arena.i8_aligned(rows * k_pad, None);
    let mut row_scale = arena.f32_overwritten(rows);
    let mut row_sum = take_overwritten(&mut arena.i32s, rows);
    // One sample: its values, then its rows' codes, scales and sums.
    type Sample<'a> = (((&'a [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [i32]);
    let one = |(((sample, data), scales), sums): Sample<'_>| quantize_sample(sample, k, fixed, data, scales, sums);
    // Quantizing is a pass over memory: only large batches are worth a second thread.
    if let Some(pool) = pool(all.len()).filter(|_| samples > 1) {
        pool.install(|| {
            (all.par_chunks(per_sample).zip(data.par_chunks_mut(sample_rows * k_pad)))
                .zip(row_scale.par_chunks_mut(sample_rows))
                .zip(row_sum.par_chunks_mut(sample_rows))
                .for_each(one)
        });
    } else {
        (all.chunks(per_sample).zip(data.chunks_mut(sample_rows * k_pad)))
            .zip(row_scale.chunks_mut(sample_rows))
            .zip(row_sum.chunks_mut(sample_rows))
            .for_each(one);
    }
    QTensor { shape, k, k_pad, data, row_scale, row_sum }
}

/// Quantizes one sample (rows of `k` values) with its absmax scale or `fixed` into rows of
/// `data` (each `data.len() / rows` long, zero past `k`), one scale and code sum per row.
fn quantize_sample(
    sample: &[f32],
    k: usize,
    fixed: Option<f32>,
    data: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let (scale, factor) = match fixed {
        Some(f) => (f, 1.0 / f),
        None => absmax_scale(sample),
    };
    let k_pad = data.len() / scales.len().max(1);
    for (((row, dst), s), sum) in sample.chunks(k).zip(data.chunks_mut(k_pad)).zip(scales).zip(sums) {
        *sum = quantize_into(row, factor, &mut dst[..k]);
        dst[k..].fill(0);
        *s = scale;
    }
}

fn dequantize_into(q: &QTensor, out: &mut [f32]) {
    for (r, o) in out.chunks_mut(q.k).enumerate() {
        let s = q.row_scale[r];
        o.iter_mut().zip(&q.data[r * q.k_pad..r * q.k_pad + q.k]).for_each(|(d, v)| *d = *v as f32 * s);
    }
}

fn dequantize(q: &QTensor) -> ArrayD<f32> {
    let mut out = vec![0.0; q.row_scale.len() * q.k];
    dequantize_into(q, &mut out);
    ArrayD::from_shape_vec(IxDyn(&q.shape), out).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&q.shape)))
}
