//! The execution engine: a compiled model ([`plan::ModelParts`]) made runnable, and the loop
//! that runs its steps over value slots.
//!
//! Rules:
//! - [`Model::run`] validates every input against the signature before any step runs; a wrong
//!   rank, size or batch is a [`RunError`] naming the expected shape, never undefined behaviour.
//! - Steps compute exactly what the interpreter's ops compute, in the same order of f32
//!   operations where the result is meant to be bit-exact (integer products and their
//!   epilogues, pooling, element-wise steps); float products (f32 panels of
//!   [`crate::kernels::fconv`], f32 depthwise, or [`crate::kernels::sgemm`]) differ from the
//!   interpreter's f64 accumulation by rounding only. Sigmoid and SiLU are `ops::exp`'s,
//!   which the AVX-512 epilogues compute in 16 lanes bit for bit (`kernels::avx512::exp16`),
//!   so integer paths keep the interpreter's bits with vector activations.
//! - Values are kept in their slot's physical layout ([`plan::Layout`]): channels-last between
//!   convolutions, plain at the model's boundary; the compiler inserts the conversions.
//! - Weights are re-laid out once, in [`Model::from_parts`], into the order the kernels stream
//!   (`conv::Prepared`: convolutions, and f32 matrix products of f32 activations); the parts
//!   are ISA-independent (artifacts store them), and a model drops the parts' copy of each
//!   weight it re-laid out, so it holds every weight once.
//! - Before a kernel is called, every buffer it reads or writes is checked against the sizes
//!   its contract implies; a mismatch is an internal error, not a call.
//! - A `Model` is `Send + Sync`: `run` takes `&self` and keeps its values in a per-call
//!   [`arena::Arena`], so many threads may run one model at once.
//! - Submodules: [`plan`] (what a model is made of), `arena`, `value`, `quant`, `gemm` (matrix
//!   products), `conv` (convolutions), `pool` (pooling), `elementwise` (the other steps).

mod arena;
mod conv;
mod direct;
mod elementwise;
mod gemm;
pub mod plan;
mod pool;
mod product;
mod quant;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Mutex;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::cpu::{self, Isa};
use crate::kernel::{CodeMemory, MapError};
use crate::kernels::fconv::F32Panel;
use arena::Arena;
use plan::{Kind, ModelParts, Shape, Src, Step, WeightData};
use quant::{QUANTIZE_WORK, quantize_rows};
use value::Val;

pub use plan::ADD_SUB_MAX_ROWS;

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
    #[error("{0}")]
    TokenId(#[from] crate::ops::TokenIdError),
    #[error("internal error in step {step}: {why}")]
    Internal { step: usize, why: String },
}

pub(crate) fn internal(step: usize, why: impl Into<String>) -> RunError {
    RunError::Internal { step, why: why.into() }
}

/// A runnable model.
pub struct Model {
    parts: ModelParts,
    code: CodeMemory,
    pool: Option<rayon::ThreadPool>,
    /// Scratch storage of finished calls, reused by the next ones.
    arenas: Mutex<Vec<Arena>>,
    /// The microkernels' instruction-set level.
    isa: Isa,
    /// Int8 matrix products run on their JIT kernels instead of the runtime's.
    jit_gemm: bool,
    /// Work (multiply-adds) from which a step may split over the pool.
    parallel_min: usize,
    /// Per step: a convolution's (or an f32 matrix product's) weights in the kernels' order.
    convs: Vec<Option<conv::Prepared>>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.parts.name)
            .field("steps", &self.parts.steps.len())
            .field("isa", &self.isa)
            .field("code", &self.code)
            .finish()
    }
}

impl Model {
    /// Checks the parts, maps the kernels, re-lays out convolution weights and prepares a
    /// thread pool of `threads` threads (0: all cores; 1: run on the calling thread).
    pub fn from_parts(parts: ModelParts, threads: usize) -> Result<Model, PartsError> {
        parts.validate().map_err(PartsError::Invalid)?;
        let code = CodeMemory::new(&parts.kernels)?;
        let pool = match threads {
            1 => None,
            n => rayon::ThreadPoolBuilder::new().num_threads(n).build().ok(),
        };
        let kinds = parts.kinds();
        let mut parts = parts;
        let mut prepared = Vec::with_capacity(parts.steps.len());
        for s in &parts.steps {
            prepared.push(match s {
                Step::Conv { x, weight, geom, epilogue, kernel: Some(k), .. } => {
                    let vector = |c: Option<usize>| c.and_then(|c| parts.consts.get(c)).and_then(|a| a.as_slice());
                    let vecs = (vector(epilogue.scale), vector(epilogue.bias));
                    if epilogue.scale.is_some() != vecs.0.is_some() || epilogue.bias.is_some() != vecs.1.is_some() {
                        return Err(PartsError::Invalid("a convolution's epilogue vector is missing".into()));
                    }
                    let (w, entry) = (&parts.weights[*weight], code.conv_entry(*k));
                    let prep = match kinds[*x] {
                        Kind::Int8 => conv::Prepared::direct_i8(w, geom, vecs, entry),
                        Kind::F32 => conv::Prepared::direct(w, geom, vecs, entry),
                    };
                    Some(prep.map_err(PartsError::Invalid)?)
                }
                Step::Conv { x, weight, geom, .. } => {
                    Some(conv::Prepared::new(&parts.weights[*weight], geom, kinds[*x]).map_err(PartsError::Invalid)?)
                }
                Step::Gemm { x, weight, .. } if kinds[*x] == Kind::F32 => match &parts.weights[*weight].data {
                    WeightData::Dense { w_t } => Some(conv::Prepared::Panel {
                        panel: F32Panel::new(1, w_t.ncols(), w_t.nrows(), |t, c| w_t[[t, c]]),
                        pointwise: true,
                    }),
                    _ => None,
                },
                Step::Gemm { weight, .. } => conv::Prepared::rows(&parts.weights[*weight]),
                _ => None,
            });
        }
        // The re-laid-out copy is the one the kernels read: the parts' own goes (a model holds
        // each weight once).
        for (s, p) in parts.steps.iter().zip(&prepared) {
            if let (Some(w), Some(_)) = (s.weight(), p) {
                let data = &mut parts.weights[w].data;
                match data {
                    WeightData::Dense { w_t } => *w_t = ndarray::Array2::zeros((0, 0)),
                    WeightData::Trits { packed } => *packed = Vec::new(),
                    WeightData::Tq2 { .. } => {}
                }
            }
        }
        let convs = prepared;
        let mut model = Model {
            parts,
            code,
            pool,
            arenas: Mutex::new(Vec::new()),
            isa: cpu::best(),
            jit_gemm: false,
            parallel_min: crate::kernels::sgemm::PARALLEL_MIN_MACS,
            convs,
        };
        model.jit_gemm = cpu::best() == Isa::Generic && model.has_int8_jit_kernels();
        Ok(model)
    }

    /// Runs the microkernels at instruction-set level `isa`, capped at what the CPU has
    /// ([`cpu::best`], the default). Every level gives the same bits on integer paths; this is
    /// for tests and benchmarks.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa.min(cpu::best());
    }

    /// The microkernels' level in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs int8 matrix products on their JIT kernels (when the model has them all) instead of
    /// the runtime's kernels at [`Model::isa`]. Same bits either way. Default: only on a CPU
    /// without AVX2, where the JIT's 128-bit kernels beat the portable ones.
    pub fn set_jit_gemm(&mut self, on: bool) {
        self.jit_gemm = on && self.has_int8_jit_kernels();
    }

    /// Whether int8 matrix products run on JIT kernels.
    pub fn jit_gemm(&self) -> bool {
        self.jit_gemm
    }

    /// Sets the work (multiply-adds) from which a product splits over the model's threads
    /// (default [`crate::kernels::sgemm::PARALLEL_MIN_MACS`]); 0 splits every product, so
    /// tests can reach the split paths on small models. Results are the same either way.
    pub fn set_parallel_threshold(&mut self, macs: usize) {
        self.parallel_min = macs;
    }

    /// The model's pool, when it has more than one thread and `work` reaches the threshold.
    pub(crate) fn pool_for(&self, work: usize) -> Option<&rayon::ThreadPool> {
        self.pool.as_ref().filter(|p| work >= self.parallel_min && p.current_num_threads() > 1)
    }

    /// Whether every int8 matrix product has its JIT kernel.
    pub fn has_int8_jit_kernels(&self) -> bool {
        self.parts.weights.iter().all(|w| match &w.data {
            WeightData::Tq2 { kernel, f32_x: false, .. } => {
                self.parts.kernels.get(*kernel).is_some_and(|k| !k.is_empty())
            }
            _ => true,
        })
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

    /// Per step, how it runs: the kernel (and level) of products, for `--emit plan`.
    pub fn step_kernels(&self) -> Vec<String> {
        self.parts
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| match (s, &self.convs[i]) {
                (Step::Conv { .. }, Some(p)) => p.kernel_name(self.isa),
                (Step::Gemm { .. }, Some(p @ conv::Prepared::Rows { .. })) if self.isa >= Isa::Avx512Vnni => {
                    p.kernel_name(self.isa)
                }
                (Step::Gemm { .. }, Some(conv::Prepared::Panel { .. })) => {
                    format!("f32 gemm ({})", crate::kernels::fconv::kernel_name(self.isa))
                }
                (Step::Gemm { weight, .. }, _) => match &self.parts.weights[*weight].data {
                    WeightData::Tq2 { f32_x: true, .. } => "f32 add/sub (jit) or sgemm".into(),
                    WeightData::Tq2 { .. } if self.jit_gemm => "int8 tq2 (jit)".into(),
                    WeightData::Tq2 { .. } => format!("int8 tq2 ({})", self.isa),
                    _ => "sgemm".into(),
                },
                _ => s.name().into(),
            })
            .collect()
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
        // second core enter the pool: entering it wakes a worker and the caller, which cost
        // more than a small model's whole run.
        let result = self.run_steps(inputs, batch, &mut arena, None);
        lock().push(arena);
        result
    }

    /// Runs the model like [`Model::run`] and also returns how long each step took (one entry
    /// per step of [`ModelParts::steps`], in order), for `triton run --timing`. The outputs are
    /// the same bits as `run`'s.
    pub fn run_profiled(
        &self,
        inputs: &[ArrayViewD<'_, f32>],
    ) -> Result<(Vec<ArrayD<f32>>, Vec<std::time::Duration>), RunError> {
        let batch = self.batch_of(inputs)?;
        let lock = || self.arenas.lock().unwrap_or_else(|e| e.into_inner());
        let mut arena = lock().pop().unwrap_or_default();
        let mut times = vec![std::time::Duration::ZERO; self.parts.steps.len()];
        let result = self.run_steps(inputs, batch, &mut arena, Some(&mut times));
        lock().push(arena);
        result.map(|outs| (outs, times))
    }

    fn run_steps(
        &self,
        inputs: &[ArrayViewD<'_, f32>],
        batch: usize,
        arena: &mut Arena,
        mut times: Option<&mut [std::time::Duration]>,
    ) -> Result<Vec<ArrayD<f32>>, RunError> {
        let p = &self.parts;
        let mut vals: Vec<Option<Val>> = vec![None; p.slots];
        // Inputs stay in the caller's arrays while only quantize steps read them (the int8 rows
        // are made straight from the caller's values); they are copied into the arena before the
        // first other step, unless already freed. Saves a copy of the whole input per call.
        let mut borrowed = vec![true; inputs.len()];
        let copy_inputs = |vals: &mut [Option<Val>], borrowed: &mut [bool], arena: &mut Arena| {
            for (i, x) in inputs.iter().enumerate() {
                if !borrowed[i] {
                    continue;
                }
                let mut buf = arena.f32_overwritten(x.len());
                elementwise::copy_into(&mut buf, x);
                let a = ArrayD::from_shape_vec(x.raw_dim(), buf).map_err(|e| internal(0, e.to_string()))?;
                vals[i] = Some(Val::F32(a));
                borrowed[i] = false;
            }
            Ok::<(), RunError>(())
        };
        for (si, step) in p.steps.iter().enumerate() {
            let start = times.as_ref().map(|_| std::time::Instant::now());
            let (out, v) = match *step {
                Step::Quantize { x, out, fixed, align } if borrowed.get(x) == Some(&true) => {
                    let pool = |n| self.pool_for(n * QUANTIZE_WORK);
                    (out, Val::Q(quantize_rows(inputs[x].view(), fixed, align, arena, pool)))
                }
                // A reshape of a value read for the last time takes its buffer: no copy.
                Step::Reshape { x: Src::Value(x), out, ref shape }
                    if p.frees[si].contains(&x)
                        && borrowed.get(x) != Some(&true)
                        && matches!(&vals[x], Some(Val::F32(a)) if a.is_standard_layout()) =>
                {
                    let Some(Val::F32(a)) = vals[x].take() else {
                        return Err(internal(si, "a reshaped value vanished"));
                    };
                    let dims = shape.eval(batch);
                    if dims.iter().product::<usize>() != a.len() {
                        return Err(internal(si, format!("reshape of {:?} to {dims:?}", a.shape())));
                    }
                    let a = a.into_shape_with_order(IxDyn(&dims)).map_err(|e| internal(si, e.to_string()))?;
                    (out, Val::F32(a))
                }
                _ => {
                    copy_inputs(&mut vals, &mut borrowed, arena)?;
                    (step.out(), self.step(si, step, &vals, batch, arena)?)
                }
            };
            vals[out] = Some(v);
            if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
                t[si] = start.elapsed();
            }
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
            .enumerate()
            .map(|(i, o)| match *o {
                Src::Const(c) => Ok(p.consts[c].clone()),
                // A value returned twice (outputs the optimizer found equal) is copied for all
                // but its last place.
                Src::Value(v) => match if p.outputs[i + 1..].contains(o) { vals[v].clone() } else { vals[v].take() } {
                    Some(Val::F32(a)) => Ok(a),
                    Some(Val::Q(q)) => Ok(q.dequantize()),
                    None => Err(internal(p.steps.len(), format!("output slot {v} was not computed"))),
                },
            })
            .collect();
        for v in vals.into_iter().flatten() {
            arena.recycle(v);
        }
        result
    }

    pub(crate) fn f32_of<'a>(
        &'a self,
        si: usize,
        vals: &'a [Option<Val>],
        s: Src,
    ) -> Result<&'a ArrayD<f32>, RunError> {
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
    ) -> Result<Val, RunError> {
        let f32v = |s: Src| self.f32_of(si, vals, s);
        Ok(match step {
            Step::Quantize { x, fixed, align, .. } => {
                let pool = |n| self.pool_for(n * QUANTIZE_WORK);
                Val::Q(quantize_rows(f32v(Src::Value(*x))?.view(), *fixed, *align, arena, pool))
            }
            Step::Dequantize { x, .. } => match &vals[*x] {
                Some(Val::Q(q)) => {
                    let mut buf = arena.f32_overwritten(q.rows() * q.k);
                    q.dequantize_into(&mut buf);
                    Val::F32(shaped(si, &q.shape, buf)?)
                }
                _ => return Err(internal(si, "dequantize of a value that is not quantized")),
            },
            Step::Gemm { x, weight, epilogue, .. } => {
                let w = self.parts.weights.get(*weight).ok_or_else(|| internal(si, "no such weight"))?;
                let x = vals[*x].as_ref().ok_or_else(|| internal(si, "gemm input missing"))?;
                self.gemm(si, x, w, self.convs[si].as_ref(), epilogue, vals, arena)?
            }
            Step::Conv { x, weight, geom, epilogue, .. } => {
                let w = self.parts.weights.get(*weight).ok_or_else(|| internal(si, "no such weight"))?;
                let prep = self.convs[si].as_ref().ok_or_else(|| internal(si, "convolution not prepared"))?;
                let x = vals[*x].as_ref().ok_or_else(|| internal(si, "conv input missing"))?;
                self.conv(si, x, w, prep, geom, epilogue, vals, arena)?
            }
            Step::Pool { x, geom, .. } => Val::F32(pool::pool(si, f32v(Src::Value(*x))?, geom, self.isa, arena)?),
            Step::GlobalAvgPool { x, .. } => Val::F32(pool::global_avg(si, f32v(Src::Value(*x))?, self.isa, arena)?),
            Step::BatchNorm { x, gamma, beta, mean, var, eps, axis, .. } => {
                let vecs = [*gamma, *beta, *mean, *var].map(|c| self.parts.consts.get(c));
                Val::F32(elementwise::batch_norm(si, f32v(Src::Value(*x))?, vecs, *eps, *axis, arena)?)
            }
            Step::Unary { x, op, .. } => Val::F32(elementwise::unary(si, f32v(Src::Value(*x))?, *op, arena)?),
            Step::Binary { a, b, op, .. } => Val::F32(elementwise::binary(si, f32v(*a)?, f32v(*b)?, *op, arena)?),
            Step::Softmax { x, axis, .. } => {
                let x = f32v(Src::Value(*x))?;
                if *axis >= x.ndim() {
                    return Err(internal(si, format!("softmax over axis {axis} of a rank-{} value", x.ndim())));
                }
                if *axis + 1 == x.ndim() {
                    let mut y = elementwise::pooled_copy(si, &x.view(), arena)?;
                    let n = x.shape()[*axis].max(1);
                    let data = y.as_slice_mut().ok_or_else(|| internal(si, "pooled buffer not contiguous"))?;
                    data.chunks_exact_mut(n).for_each(crate::ops::softmax_row);
                    return Ok(Val::F32(y));
                }
                let y = crate::ops::softmax(x, *axis);
                let mut buf = arena.f32_overwritten(y.len());
                elementwise::copy_into(&mut buf, &y.view());
                Val::F32(shaped(si, y.shape(), buf)?)
            }
            Step::Permute { x, perm, .. } => Val::F32(elementwise::permute(si, f32v(*x)?, perm, arena)?),
            Step::BatchMatmul { a, b, .. } => Val::F32(self.batch_matmul(si, f32v(*a)?, f32v(*b)?, arena)?),
            Step::CausalMask { x, .. } => {
                let x = f32v(Src::Value(*x))?;
                if x.ndim() < 2 {
                    return Err(internal(si, "causal mask of a value of rank below 2"));
                }
                let mut y = elementwise::pooled_copy(si, &x.view(), arena)?;
                let shape = y.shape().to_vec();
                let data = y.as_slice_mut().ok_or_else(|| internal(si, "pooled buffer not contiguous"))?;
                crate::ops::causal_mask(data, &shape);
                Val::F32(y)
            }
            Step::Slice { x, axis, start, end, .. } => {
                let x = f32v(Src::Value(*x))?;
                if *axis >= x.ndim() || start >= end || *end > x.shape()[*axis] {
                    return Err(internal(
                        si,
                        format!("slice {start}..{end} of axis {axis} of a {:?} value", x.shape()),
                    ));
                }
                let x = x.as_standard_layout();
                let data = x.as_slice().ok_or_else(|| internal(si, "standard layout not contiguous"))?;
                let mut shape = x.shape().to_vec();
                shape[*axis] = end - start;
                let mut buf = arena.f32_overwritten(shape.iter().product());
                crate::ops::slice_axis(data, x.shape(), *axis, *start, *end, &mut buf);
                Val::F32(shaped(si, &shape, buf)?)
            }
            Step::Rope { x, theta, .. } => {
                let x = f32v(Src::Value(*x))?;
                if x.ndim() < 2 || x.shape()[x.ndim() - 1] % 2 != 0 {
                    return Err(internal(si, format!("rotary embeddings of a {:?} value", x.shape())));
                }
                let mut y = elementwise::pooled_copy(si, &x.view(), arena)?;
                let shape = y.shape().to_vec();
                let data = y.as_slice_mut().ok_or_else(|| internal(si, "pooled buffer not contiguous"))?;
                crate::ops::rope(data, &shape, *theta, false);
                Val::F32(y)
            }
            Step::Embedding { ids, table, .. } => {
                let ids = f32v(Src::Value(*ids))?;
                let table = f32v(Src::Const(*table))?;
                let [_, dim] = *table.shape() else {
                    return Err(internal(si, "an embedding table of rank other than 2"));
                };
                let (ids, table) = (ids.as_standard_layout(), table.as_standard_layout());
                let (Some(idv), Some(tv)) = (ids.as_slice(), table.as_slice()) else {
                    return Err(internal(si, "standard-layout values not contiguous"));
                };
                let mut buf = arena.f32_overwritten(idv.len() * dim);
                crate::ops::embedding(idv, tv, dim, &mut buf)?;
                let mut shape = ids.shape().to_vec();
                shape.push(dim);
                Val::F32(shaped(si, &shape, buf)?)
            }
            Step::Reduce { x, axis, mean, .. } => {
                let x = f32v(Src::Value(*x))?;
                let y = crate::ops::reduce_axis(x, *axis, *mean)
                    .ok_or_else(|| internal(si, format!("reduction over axis {axis} of a rank-{} value", x.ndim())))?;
                Val::F32(elementwise::pooled_copy(si, &y.view(), arena)?)
            }
            Step::Norm { x, gamma, beta, eps, rms, .. } => {
                let x = f32v(Src::Value(*x))?;
                let vector = |c: usize| self.parts.consts.get(c).and_then(|a| a.as_slice());
                let (Some(g), Some(b)) = (vector(*gamma), beta.map_or(Some(None), |c| vector(c).map(Some))) else {
                    return Err(internal(si, "normalization vectors missing"));
                };
                let xs = x.as_standard_layout();
                let xs = xs.as_slice().ok_or_else(|| internal(si, "normalization input not contiguous"))?;
                let mut buf = arena.f32_overwritten(xs.len());
                if x.shape().last() != Some(&g.len()) || !crate::ops::norm_rows_into(xs, g, b, *eps, *rms, &mut buf) {
                    arena.f32s.push(buf);
                    return Err(internal(
                        si,
                        format!("normalization vectors of {} values over {:?}", g.len(), x.shape()),
                    ));
                }
                Val::F32(shaped(si, x.shape(), buf)?)
            }
            Step::Reshape { x, shape, .. } => {
                let a = f32v(*x)?;
                let dims = shape.eval(batch);
                if dims.iter().product::<usize>() != a.len() {
                    return Err(internal(si, format!("reshape of {:?} to {dims:?}", a.shape())));
                }
                let mut buf = arena.f32_overwritten(a.len());
                elementwise::copy_into(&mut buf, &a.view());
                Val::F32(shaped(si, &dims, buf)?)
            }
            Step::Concat { xs, axis, .. } => {
                let views: Vec<_> = xs.iter().map(|s| f32v(*s).map(|a| a.view())).collect::<Result<_, _>>()?;
                Val::F32(elementwise::concat(si, &views, *axis, arena)?)
            }
            Step::Relayout { x, to, .. } => Val::F32(elementwise::relayout(si, f32v(Src::Value(*x))?, *to, arena)?),
        })
    }
}

/// A pooled buffer as an array of `shape`.
pub(crate) fn shaped(si: usize, shape: &[usize], buf: Vec<f32>) -> Result<ArrayD<f32>, RunError> {
    ArrayD::from_shape_vec(IxDyn(shape), buf).map_err(|e| internal(si, e.to_string()))
}
