//! Lowers an optimized graph to the runtime's steps (see the module rules in `codegen`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ndarray::Array2;
use triton_runtime::DType;
use triton_runtime::engine::plan::{
    ConvGeom, Epilogue, GEMM_ALIGN, GemmWeight, ModelParts, PoolGeom, Requantize, RtDim, Shape, Src, Step, WeightData,
};
use triton_runtime::ops::UnaryOp;
use triton_runtime::pack;

use super::conv_direct::{self, ConvSpec};
use super::ternary_gemm::{Act, GemmSpec};
use super::{CodegenError, KernelSpec};
use crate::interp::{self, Precision, Value};
use crate::ir::{ConvAttrs, Dim, FusedBase, Graph, NodeId, Op, PoolAttrs};
use crate::passes::kernel_plan::{self, KernelPlan, WeightFormat};
use crate::weights::Weights;

/// A dimension as `batch * B + fixed`, with every symbol standing for the batch size.
fn rt_dim(d: &Dim) -> Result<RtDim, CodegenError> {
    let at = |b: i64| d.substitute(&|_| Some(Dim::known(b))).ok().and_then(|v| v.as_known());
    match (at(1), at(2), at(3)) {
        (Some(v1), Some(v2), Some(v3)) if v2 >= v1 && v1 - (v2 - v1) >= 0 && v3 == v2 + (v2 - v1) => {
            Ok(RtDim { batch: (v2 - v1) as usize, fixed: (v1 - (v2 - v1)) as usize })
        }
        _ => Err(CodegenError::Unsupported(format!("dimension `{d}` (only sizes linear in the batch run yet)"))),
    }
}

fn rt_shape(dims: &[Dim]) -> Result<Shape, CodegenError> {
    Ok(Shape(dims.iter().map(rt_dim).collect::<Result<_, _>>()?))
}

struct Lowering<'a, 'b> {
    g: &'a Graph,
    precision: Precision,
    statics: Vec<Option<Value>>,
    plan: Option<&'a KernelPlan>,
    parts: ModelParts,
    /// Per value slot, its rank.
    ranks: Vec<usize>,
    /// Where each node's value is.
    src: Vec<Option<Src>>,
    consts: HashMap<NodeId, usize>,
    kernels: HashMap<KernelSpec, usize>,
    source: &'a mut KernelSource<'b>,
    report: &'a mut CodegenReport,
}

impl Lowering<'_, '_> {
    fn arg(&mut self, id: NodeId) -> Result<Src, CodegenError> {
        if let Some(s) = self.src[id.index()] {
            return Ok(s);
        }
        // A static value: a constant, made once.
        if let Some(&c) = self.consts.get(&id) {
            return Ok(Src::Const(c));
        }
        let v = self.statics[id.index()]
            .as_ref()
            .ok_or_else(|| CodegenError::Cranelift(format!("%{} used before it is computed", id.index())))?;
        let a = v.to_f32().as_standard_layout().into_owned();
        self.parts.consts.push(a);
        let c = self.parts.consts.len() - 1;
        self.consts.insert(id, c);
        Ok(Src::Const(c))
    }

    fn value_slot(&mut self, id: NodeId) -> Result<usize, CodegenError> {
        match self.arg(id)? {
            Src::Value(v) => Ok(v),
            Src::Const(_) => {
                Err(CodegenError::Unsupported(format!("%{}: a product or activation of constants only", id.index())))
            }
        }
    }

    fn new_slot(&mut self) -> usize {
        self.parts.slots += 1;
        self.parts.slots - 1
    }

    fn const_index(&mut self, id: NodeId) -> Result<usize, CodegenError> {
        match self.arg(id)? {
            Src::Const(c) => Ok(c),
            Src::Value(_) => {
                Err(CodegenError::Unsupported(format!("%{}: a per-channel vector computed at run time", id.index())))
            }
        }
    }

    /// A convolution's geometry from its input, weight and output types (fixed spatial sizes).
    fn conv_geom(&self, id: NodeId, a: &ConvAttrs) -> Result<ConvGeom, CodegenError> {
        let node = self.g.node(id);
        let known = |d: &Dim| -> Result<usize, CodegenError> {
            d.as_known().map(|v| v as usize).ok_or_else(|| {
                CodegenError::Unsupported(format!("%{}: convolution over a spatial size `{d}` not known", id.index()))
            })
        };
        let x = &self.g.node(node.args[0]).ty.shape;
        let w = &self.g.node(node.args[1]).ty.shape;
        let y = &node.ty.shape;
        if x.len() != 4 || w.len() != 4 || y.len() != 4 {
            return Err(CodegenError::Unsupported(format!("%{}: convolution of rank other than 4", id.index())));
        }
        let u = |v: i64| v.max(0) as usize;
        Ok(ConvGeom {
            c: known(&x[1])?,
            h: known(&x[2])?,
            w: known(&x[3])?,
            o: known(&w[0])?,
            kh: known(&w[2])?,
            kw: known(&w[3])?,
            stride: a.stride.map(u),
            pad: a.padding.map(u),
            dil: a.dilation.map(u),
            groups: u(a.groups).max(1),
            oh: known(&y[2])?,
            ow: known(&y[3])?,
        })
    }

    /// The weight of a product, packed for the path it takes; a kernel computes `n / groups`
    /// output channels per call (one group of a grouped convolution).
    fn weight(
        &mut self,
        node: NodeId,
        w: NodeId,
        x_integer: bool,
        epi: &Epilogue,
        conv: bool,
    ) -> Result<usize, CodegenError> {
        let Op::Param { index } = self.g.node(w).op else {
            return Err(CodegenError::Unsupported(format!("%{}: a weight that is not a parameter", node.index())));
        };
        let info = &self.g.params[index];
        let n = info.shape[0] as usize;
        let k = info.shape[1..].iter().product::<u64>() as usize;
        let value = self.statics[w.index()]
            .as_ref()
            .ok_or_else(|| CodegenError::Weights(format!("no value for `{}`", info.name)))?;
        let choice = self.plan.and_then(|p| p.kernels.iter().find(|c| c.node == node));
        let format = choice.map_or_else(|| kernel_plan::format(info.dtype, k as u64), |c| c.format);
        let dense = |codes: Vec<f32>| -> Result<WeightData, CodegenError> {
            let m = Array2::from_shape_vec((n, k), codes).map_err(|e| CodegenError::Weights(e.to_string()))?;
            Ok(WeightData::Dense { w_t: m.t().as_standard_layout().into_owned() })
        };
        let (data, alpha) = match value {
            Value::F32(a) => (dense(flat(a))?, None),
            Value::Trit { codes, alpha } => {
                let codes_flat = flat_ref(codes);
                let alpha = Some(alpha.to_vec());
                if conv {
                    // Convolutions run on the engine's kernels, which re-lay the trits out at
                    // load (`triton_runtime::engine`): no JIT kernel.
                    let start = Instant::now();
                    let packed = pack::pack_tq2(&codes_flat, n, k);
                    self.report.packing += start.elapsed();
                    (WeightData::Trits { packed }, alpha)
                } else if matches!(format, WeightFormat::Tq2 { .. }) {
                    let t =
                        choice.and_then(|c| c.tile).unwrap_or_else(|| kernel_plan::tile(n as u64, format, k as u64));
                    let spec = GemmSpec {
                        n,
                        k,
                        tile: t.channels.clamp(1, 4) as usize,
                        // The add/subtract kernel: one block per iteration, the int8 kernel's rows
                        // (measured on the MNIST MLP: 4x2 tiles at 1 block 3.1 ms at batch 64,
                        // at 4 blocks 6.0 ms: register pressure).
                        unroll: if x_integer { t.unroll.clamp(1, 8) as usize } else { 1 },
                        rows: t.rows.clamp(1, 4) as usize,
                        scale: epi.scale.is_some(),
                        bias: epi.bias.is_some(),
                        residual: epi.residual.is_some(),
                        act: match epi.act {
                            Some(UnaryOp::Relu) => Some(Act::Relu),
                            Some(UnaryOp::Relu6) => Some(Act::Relu6),
                            _ => None,
                        },
                        f32_x: !x_integer,
                    };

                    let kind = if spec.f32_x { "f32 add/sub" } else { "int8" };
                    let kernel = add_kernel(
                        &mut *self.source,
                        &mut self.kernels,
                        &mut self.parts.kernels,
                        self.report,
                        KernelSpec::Gemm(spec),
                        kind,
                    )?;
                    let start = Instant::now();
                    let packed = pack::pack_tq2(&codes_flat, n, k);
                    self.report.packing += start.elapsed();
                    (
                        WeightData::Tq2 {
                            packed,
                            kernel,
                            tile: spec.tile,
                            f32_x: spec.f32_x,
                            dense: Default::default(),
                        },
                        alpha,
                    )
                } else {
                    (dense(codes_flat.iter().map(|c| *c as f32).collect())?, alpha)
                }
            }
            Value::Int { data, scale, .. } => {
                (dense(data.iter().map(|c| *c as f32).collect())?, Some(scale.iter().copied().collect()))
            }
        };
        self.parts.weights.push(GemmWeight { name: info.name.clone(), n, k, data, alpha });
        Ok(self.parts.weights.len() - 1)
    }

    /// The index of `spec`'s kernel in the parts (see [`add_kernel`]).
    fn kernel(&mut self, spec: KernelSpec, kind: &'static str) -> Result<usize, CodegenError> {
        add_kernel(&mut *self.source, &mut self.kernels, &mut self.parts.kernels, self.report, spec, kind)
    }

    /// The direct convolution kernel for an f32 convolution, when the layer is one the
    /// runtime's generic tiles run mostly empty (see [`direct_conv_spec`]).
    fn direct_conv(
        &mut self,
        g: &ConvGeom,
        e: &Epilogue,
        weight: usize,
        int8: bool,
    ) -> Result<Option<usize>, CodegenError> {
        let w = &self.parts.weights[weight];
        let mult = w.alpha.is_some();
        // Int8 kernels take integer codes: ternary trits (or int8 codes with their scales).
        if int8 && !matches!(w.data, WeightData::Trits { .. }) {
            return Ok(None);
        }
        let kind = if int8 { "int8 direct conv" } else { "f32 direct conv" };
        match direct_conv_spec(g, e, mult, int8) {
            Some(spec) => self.kernel(KernelSpec::Conv(spec), kind).map(Some),
            None => Ok(None),
        }
    }

    fn node(&mut self, id: NodeId) -> Result<(), CodegenError> {
        let node = self.g.node(id);
        let step = match &node.op {
            Op::Input { index } => {
                self.src[id.index()] = Some(Src::Value(*index));
                return Ok(());
            }
            Op::Param { .. } | Op::Const { .. } => return Ok(()),
            Op::QuantizeI8 { scale } => {
                let x = self.value_slot(node.args[0])?;
                if self.precision == Precision::Fp32 {
                    self.src[id.index()] = Some(Src::Value(x));
                    return Ok(());
                }
                Step::Quantize { x, out: self.new_slot(), fixed: *scale, align: GEMM_ALIGN }
            }
            Op::Dequantize => {
                let x = self.value_slot(node.args[0])?;
                let arg_ty = self.g.node(node.args[0]).ty.dtype;
                if self.precision == Precision::Fp32 || arg_ty == DType::I32 {
                    // Integer products are produced dequantized already.
                    self.src[id.index()] = Some(Src::Value(x));
                    return Ok(());
                }
                Step::Dequantize { x, out: self.new_slot() }
            }
            Op::Matmul | Op::Fused(_) | Op::Conv2d(_) => {
                let mut epilogue = Epilogue::default();
                let conv = match &node.op {
                    Op::Conv2d(a) => Some(*a),
                    Op::Fused(f) => match f.base {
                        FusedBase::Conv2d(a) => Some(a),
                        FusedBase::Matmul => None,
                    },
                    _ => None,
                };
                if let Op::Fused(f) = &node.op {
                    let mut i = 2;
                    if f.scale {
                        epilogue.scale = Some(self.const_index(node.args[i])?);
                        i += 1;
                    }
                    if f.bias {
                        epilogue.bias = Some(self.const_index(node.args[i])?);
                        i += 1;
                    }
                    if f.residual {
                        epilogue.residual = Some(self.value_slot(node.args[i])?);
                    }
                    epilogue.act = f.act;
                }
                let x = self.value_slot(node.args[0])?;
                let x_integer = self.precision == Precision::Ternary && self.g.node(node.args[0]).ty.dtype == DType::I8;
                let geom = match conv {
                    Some(a) => Some(self.conv_geom(id, &a)?),
                    None => None,
                };
                let weight = self.weight(id, node.args[1], x_integer, &epilogue, geom.is_some())?;
                if let WeightData::Tq2 { .. } = self.parts.weights[weight].data {
                    epilogue.act_in_kernel = matches!(epilogue.act, Some(UnaryOp::Relu | UnaryOp::Relu6));
                }
                match geom {
                    Some(geom) => {
                        let kernel = self.direct_conv(&geom, &epilogue, weight, x_integer)?;
                        Step::Conv { x, out: self.new_slot(), weight, geom, epilogue, kernel }
                    }
                    None => Step::Gemm { x, out: self.new_slot(), weight, epilogue },
                }
            }
            Op::Unary(op) => Step::Unary { x: self.value_slot(node.args[0])?, out: self.new_slot(), op: *op },
            Op::Binary(op) => {
                let (a, b) = (self.arg(node.args[0])?, self.arg(node.args[1])?);
                Step::Binary { a, b, out: self.new_slot(), op: *op }
            }
            Op::Softmax { axis } => {
                Step::Softmax { x: self.value_slot(node.args[0])?, out: self.new_slot(), axis: *axis }
            }
            Op::Reshape { .. } => {
                let x = self.arg(node.args[0])?;
                Step::Reshape { x, out: self.new_slot(), shape: rt_shape(&node.ty.shape)? }
            }
            Op::Concat { axis } => {
                let xs = node.args.iter().map(|a| self.arg(*a)).collect::<Result<_, _>>()?;
                Step::Concat { xs, out: self.new_slot(), axis: *axis }
            }
            Op::BatchNorm { eps } => {
                let x = self.value_slot(node.args[0])?;
                let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| self.const_index(node.args[i]));
                Step::BatchNorm {
                    x,
                    out: self.new_slot(),
                    gamma: gamma?,
                    beta: beta?,
                    mean: mean?,
                    var: var?,
                    eps: *eps,
                    axis: 1,
                }
            }
            Op::Permute { perm } => {
                Step::Permute { x: self.arg(node.args[0])?, out: self.new_slot(), perm: perm.clone() }
            }
            Op::CausalMask => Step::CausalMask { x: self.value_slot(node.args[0])?, out: self.new_slot() },
            Op::Slice { axis, start, end } => Step::Slice {
                x: self.value_slot(node.args[0])?,
                out: self.new_slot(),
                axis: *axis,
                start: *start,
                end: *end,
            },
            Op::Rope { theta } => Step::Rope { x: self.value_slot(node.args[0])?, out: self.new_slot(), theta: *theta },
            Op::Embedding => Step::Embedding {
                ids: self.value_slot(node.args[0])?,
                table: self.const_index(node.args[1])?,
                out: self.new_slot(),
            },
            Op::Reduce { axis, mean } => {
                Step::Reduce { x: self.value_slot(node.args[0])?, out: self.new_slot(), axis: *axis, mean: *mean }
            }
            Op::BatchMatmul => {
                let (a, b) = (self.arg(node.args[0])?, self.arg(node.args[1])?);
                Step::BatchMatmul { a, b, out: self.new_slot() }
            }
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => {
                let rms = matches!(node.op, Op::RmsNorm { .. });
                let x = self.value_slot(node.args[0])?;
                let gamma = self.const_index(node.args[1])?;
                let beta = if rms { None } else { Some(self.const_index(node.args[2])?) };
                Step::Norm { x, out: self.new_slot(), gamma, beta, eps: *eps, rms }
            }
            Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
                let max = matches!(node.op, Op::MaxPool2d(_));
                Step::Pool { x: self.value_slot(node.args[0])?, out: self.new_slot(), geom: pool_geom(a, max)? }
            }
            Op::GlobalAvgPool => Step::GlobalAvgPool { x: self.value_slot(node.args[0])?, out: self.new_slot() },
        };
        let out = step.out();
        self.src[id.index()] = Some(Src::Value(out));
        self.parts.steps.push(step);
        self.ranks.resize(self.parts.slots, node.ty.shape.len());
        Ok(())
    }
}

/// The index of `spec`'s kernel in `code`, compiled (or fetched from `source`) on first use;
/// `kind` names it in the report.
fn add_kernel(
    source: &mut KernelSource<'_>,
    known: &mut HashMap<KernelSpec, usize>,
    code: &mut Vec<Vec<u8>>,
    report: &mut CodegenReport,
    spec: KernelSpec,
    kind: &'static str,
) -> Result<usize, CodegenError> {
    if let Some(&i) = known.get(&spec) {
        return Ok(i);
    }
    let start = Instant::now();
    let (bytes, cached) = source(&spec)?;
    // Empty code: the source left an int8 kernel out (the runtime's wide kernel runs it).
    let kind = if bytes.is_empty() { "int8 (runtime AVX2 kernel)" } else { kind };
    let stats = report.kernels.entry(kind).or_default();
    stats.count += 1;
    stats.cached += usize::from(cached);
    stats.bytes += bytes.len();
    stats.time += start.elapsed();
    code.push(bytes);
    known.insert(spec, code.len() - 1);
    Ok(code.len() - 1)
}

/// Output channels up to which an f32 convolution runs on a direct JIT kernel. Measured
/// (LeNet-5 at batch 16, one thread, Intel Xeon with AVX-512): 6 channels from 1, JIT
/// 0.100 ms against the runtime's panel 0.68 ms; 16 channels from 6, JIT 0.15 ms against the
/// panel 0.11 ms.
pub const DIRECT_MAX_CHANNELS: usize = 8;

/// Output channels up to which an int8 convolution runs on a direct JIT kernel. Measured
/// (LeNet-5's conv2, 6 -> 16 channels, 5x5, at batch 16): JIT 0.073-0.075 ms against the
/// runtime's gather and VNNI panel 0.185-0.19 ms.
pub const DIRECT_MAX_CHANNELS_INT8: usize = 16;

/// The direct convolution kernel for an f32 convolution of geometry `g` (weights with a
/// per-channel multiplier when `mult`), or `None` where the runtime's kernels run it.
///
/// The rule (a cost model, from measurements in docs/kernels.md): one group, at most
/// [`DIRECT_MAX_CHANNELS`] output channels (the runtime's f32 tile holds 16 channels and
/// gathers every pixel's window first; with half of it empty or more, the gather and the empty
/// lanes cost more than the JIT kernel's 128-bit vectors), an activation the kernel fuses
/// (none, relu, relu6), and a reduction that fits the tap table ([`conv_direct::MAX_TAPS`]).
///
/// Int8 input (`int8`, ternary weights): up to [`DIRECT_MAX_CHANNELS_INT8`] channels, on CPUs
/// whose Cranelift ISA has VNNI (`vpdpbusd`; without it the dot-product tree is slower than
/// the runtime's kernels), reductions short enough to unroll, and not pointwise.
pub fn direct_conv_spec(g: &ConvGeom, e: &Epilogue, mult: bool, int8: bool) -> Option<ConvSpec> {
    let act = match e.act {
        None => None,
        Some(UnaryOp::Relu) => Some(Act::Relu),
        Some(UnaryOp::Relu6) => Some(Act::Relu6),
        Some(_) => return None,
    };
    let spec = ConvSpec {
        c: g.c,
        w_pad: g.w + 2 * g.pad[1],
        o: g.o,
        ow: g.ow,
        kh: g.kh,
        kw: g.kw,
        stride: g.stride,
        dil: g.dil,
        pixels: ConvSpec::tile_for(g.o),
        mult,
        scale: e.scale.is_some(),
        bias: e.bias.is_some(),
        residual: e.residual.is_some(),
        act,
        int8,
    };
    let vnni = || super::isa::host_has("has_avx512vnni") || super::isa::host_has("has_avxvnni");
    // A pointwise convolution's int8 rows need no gather on the runtime's VNNI panel, which
    // measured faster (MobileNetV2's 32 -> 16 projection at batch 16: 0.21-0.22 ms against
    // 0.23-0.25 ms).
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pad == [0, 0];
    if int8 && (pointwise || !(mult && spec.unrolled() && vnni())) {
        return None;
    }
    // Few input channels, stride 1, on CPUs with AVX-512: the runtime's planar kernel puts 16
    // output pixels in a vector, where this kernel's 128-bit channel vectors are bound by the
    // multiply-adds (LeNet-5's conv1 at batch 16: see docs/kernels.md).
    if !int8
        && triton_runtime::cpu::best() >= triton_runtime::cpu::Isa::Avx512Vnni
        && triton_runtime::kernels::planar::fits(g.c, g.o, g.stride, g.groups)
    {
        return None;
    }
    let fits = g.groups == 1
        && (1..=if int8 { DIRECT_MAX_CHANNELS_INT8 } else { DIRECT_MAX_CHANNELS }).contains(&g.o)
        && e.quantize.is_none()
        && spec.k() <= conv_direct::MAX_TAPS;
    fits.then_some(spec)
}

fn pool_geom(a: &PoolAttrs, max: bool) -> Result<PoolGeom, CodegenError> {
    let u = |v: i64| usize::try_from(v).map_err(|_| CodegenError::Unsupported(format!("pool window {a:?}")));
    Ok(PoolGeom {
        max,
        kernel: [u(a.kernel[0])?, u(a.kernel[1])?],
        stride: [u(a.stride[0])?, u(a.stride[1])?],
        pad: [u(a.padding[0])?, u(a.padding[1])?],
    })
}

/// The values of `a` in row-major order (one copy when it is laid out so, as weights are).
fn flat<T: Copy>(a: &ndarray::ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    }
}

/// `a`'s values in row-major order, borrowed when it is laid out that way already.
fn flat_ref<T: Copy>(a: &ndarray::ArrayD<T>) -> std::borrow::Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// Folds a quantize step into the product before it when it is that product's only reader: the
/// runtime then quantizes each block of the product's rows while they are in cache (and the f32
/// result never lives whole). Same values: the same quantization runs on the same numbers.
fn fuse_requantize(parts: &mut ModelParts) {
    let mut readers: HashMap<usize, usize> = HashMap::new();
    for s in &parts.steps {
        for r in s.reads() {
            *readers.entry(r).or_default() += 1;
        }
    }
    let is_output = |slot: usize| parts.outputs.contains(&Src::Value(slot));
    let mut i = 0;
    while i + 1 < parts.steps.len() {
        let fold = match (&parts.steps[i], &parts.steps[i + 1]) {
            (Step::Gemm { out, epilogue, .. }, Step::Quantize { x, out: q, fixed, align })
                if x == out && epilogue.quantize.is_none() && readers.get(out) == Some(&1) && !is_output(*out) =>
            {
                Some((*q, *fixed, *align))
            }
            _ => None,
        };
        if let (Some((q, fixed, align)), Step::Gemm { out, epilogue, .. }) = (fold, &mut parts.steps[i]) {
            *out = q;
            epilogue.quantize = Some(Requantize { fixed, align });
            parts.steps.remove(i + 1);
        }
        i += 1;
    }
}

/// Where a kernel's machine code comes from: compiled now, or found in a cache. Returns the code
/// and whether it was cached. Empty code (for an int8 kernel only) means the kernel is left out
/// because the runtime's wide kernel runs every such product on the target.
pub type KernelSource<'a> = dyn FnMut(&KernelSpec) -> Result<(Vec<u8>, bool), CodegenError> + 'a;

/// Kernels of one kind built by a compilation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KindStats {
    pub count: usize,
    /// How many came from a cache.
    pub cached: usize,
    /// Bytes of machine code.
    pub bytes: usize,
    /// Time to compile (or fetch) them.
    pub time: Duration,
}

/// What code generation spent its time on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CodegenReport {
    /// Evaluating the parameter-only values (quantizing weights, folded vectors).
    pub statics: Duration,
    /// Packing ternary weights into the compute layout.
    pub packing: Duration,
    /// Per kernel kind (`int8`, `f32 add/sub`).
    pub kernels: BTreeMap<&'static str, KindStats>,
}

/// Compiles an optimized graph with its weights at a precision into the runtime's model parts.
pub fn compile_graph(
    g: &Graph,
    plan: Option<&KernelPlan>,
    weights: &Weights,
    precision: Precision,
) -> Result<ModelParts, CodegenError> {
    let mut source = |spec: &KernelSpec| spec.compile().map(|code| (code, false));
    compile_graph_with(g, plan, weights, precision, &mut source).map(|(parts, _)| parts)
}

/// [`compile_graph`] with kernels from `source` (a cache, say), reporting where time went.
pub fn compile_graph_with(
    g: &Graph,
    plan: Option<&KernelPlan>,
    weights: &Weights,
    precision: Precision,
    source: &mut KernelSource<'_>,
) -> Result<(ModelParts, CodegenReport), CodegenError> {
    compile_graph_quantized(g, plan, weights, None, precision, source)
}

/// [`compile_graph_with`], with the weights' codes taken from `quantized` (quantized once per
/// compile).
pub fn compile_graph_quantized(
    g: &Graph,
    plan: Option<&KernelPlan>,
    weights: &Weights,
    quantized: Option<&mut crate::weights::quant::QuantCache>,
    precision: Precision,
    source: &mut KernelSource<'_>,
) -> Result<(ModelParts, CodegenReport), CodegenError> {
    let start = Instant::now();
    let prepared =
        interp::prepare_with(g, weights, precision, quantized).map_err(|e| CodegenError::Weights(e.to_string()))?;
    let statics = interp::eval_statics(g, prepared, precision)?;
    let mut report = CodegenReport { statics: start.elapsed(), ..CodegenReport::default() };
    let inputs = g
        .inputs
        .iter()
        .map(|(name, id)| Ok((name.clone(), rt_shape(&g.node(*id).ty.shape)?)))
        .collect::<Result<Vec<_>, CodegenError>>()?;
    let mut l = Lowering {
        g,
        precision,
        statics,
        plan,
        parts: ModelParts {
            name: g.name.clone(),
            slots: inputs.len(),
            inputs,
            outputs: Vec::new(),
            output_sig: Vec::new(),
            consts: Vec::new(),
            weights: Vec::new(),
            steps: Vec::new(),
            frees: Vec::new(),
            layouts: Vec::new(),
            kernels: Vec::new(),
        },
        ranks: g.inputs.iter().map(|(_, id)| g.node(*id).ty.shape.len()).collect(),
        src: vec![None; g.nodes.len()],
        consts: HashMap::new(),
        kernels: HashMap::new(),
        source,
        report: &mut report,
    };
    let statics_mask = g.static_mask();
    for (id, _) in g.nodes.iter() {
        if !statics_mask[id.index()] {
            l.node(id)?;
        }
    }
    let outputs = g.outputs.iter().map(|o| l.arg(*o)).collect::<Result<Vec<_>, _>>()?;
    let output_sig = g
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let name = if g.outputs.len() == 1 { "output".to_string() } else { format!("output{i}") };
            Ok((name, rt_shape(&g.node(*o).ty.shape)?))
        })
        .collect::<Result<Vec<_>, CodegenError>>()?;
    let (mut parts, mut ranks) = (l.parts, l.ranks);
    ranks.resize(parts.slots, 0);
    parts.outputs = outputs;
    parts.output_sig = output_sig;
    super::layout::assign(&mut parts, ranks);
    fuse_requantize(&mut parts);
    // Free every slot after its last reader (outputs are kept). An input freed while still in
    // the caller's array is never copied into the arena (see `Model::run`).
    // Ordered, so that the frees (and the artifact's bytes) do not depend on hashing.
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, s) in parts.steps.iter().enumerate() {
        for r in s.reads() {
            last.insert(r, i);
        }
    }
    let kept: Vec<usize> =
        parts.outputs.iter().filter_map(|s| if let Src::Value(v) = s { Some(*v) } else { None }).collect();
    parts.frees = vec![Vec::new(); parts.steps.len()];
    for (slot, step) in last {
        if !kept.contains(&slot) {
            parts.frees[step].push(slot);
        }
    }
    Ok((parts, report))
}
