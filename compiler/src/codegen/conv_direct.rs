//! Direct convolution kernels for layers with few output channels, f32 or int8 input: every
//! size of the layer is a constant, output channels sit in the lanes, a register tile of
//! several output pixels is summed over the whole reduction, and the epilogue is fused.
//!
//! Why: the runtime's convolutions gather each output pixel's window into a row and run panel
//! kernels whose register tiles hold 16 (f32) or more (int8) output channels. A layer like
//! LeNet-5's first (1 input channel, 6 output channels, 25 taps) spends its time in the gather
//! and runs the tile 6/16 full. Here there is no gather: the input is read in place (the engine
//! pads it once per sample), each input value (f32) or group of 4 input bytes (int8) is
//! broadcast once per tile and multiplied into `ceil(O / 4)` weight vectors.
//!
//! Rules:
//! - Shapes are constants: channels, padded input width, output width, taps, strides,
//!   dilation, the pixel tile and which epilogue steps exist. The kernel reads only
//!   [`ConvArgs`] (ABI in `triton_runtime::kernel`), one sample's rows `[row_begin, row_end)`.
//! - f32: the reduction runs tap by tap, `(u, v, c)` order, one fused multiply-add per weight
//!   (or a multiply and an add on CPUs without FMA); the result differs from the interpreter's
//!   f64 sums by rounding only, as the runtime's f32 kernels do.
//! - int8: exact integer sums of biased inputs (`x + 128`, `vpdpbusd` on VNNI CPUs) minus
//!   `128 * sum(w)`, then `f32(sum) * (sx * alpha)`: bit for bit the interpreter's value.
//! - The epilogue runs in the engine's order, each step rounded in f32: `* mult`, `* scale`,
//!   `+ bias`, `+ residual`, activation (relu, relu6 only).
//! - Partial vectors (the last one when `O % 4 != 0`) are loaded and stored lane by lane, so a
//!   kernel never touches memory outside its pixels' rows.
//! - Unrolled kernels are compiled without the mid-end ([`super::isa::host_in_order`]): the
//!   generator's order is the schedule. Looping kernels use the optimizer with their loads
//!   `notrap readonly` (not hoisted or merged across taps). The code is relocation-free
//!   (checked).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I8X16, I32, I32X4, I64};
use cranelift_codegen::ir::{AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use triton_runtime::kernel::ConvArgs;

use super::CodegenError;
use super::ternary_gemm::{Act, emit_act, le, ro};

/// One direct convolution kernel's specialization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Input channels (values per input pixel).
    pub c: usize,
    /// Width of the padded input (`W + 2 pw`).
    pub w_pad: usize,
    /// Output channels.
    pub o: usize,
    /// Output width.
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    /// Output pixels per register tile.
    pub pixels: usize,
    pub mult: bool,
    pub scale: bool,
    pub bias: bool,
    pub residual: bool,
    pub act: Option<Act>,
    /// Int8 activations (ternary or int8 weights): exact integer sums (`vpdpbusd` where the
    /// CPU has VNNI), then `sum * (sx * alpha)` as the interpreter computes it; `mult` is then
    /// the weight's scale and always present.
    pub int8: bool,
}

/// Output channels up to which a layer may run on a direct kernel (four vectors of four).
pub const MAX_CHANNELS: usize = triton_runtime::engine::plan::DIRECT_CONV_MAX_CHANNELS;
/// The longest reduction (taps times input channels) a kernel takes: byte offsets in the tap
/// table are i32, and beyond this the runtime's blocked kernels keep the weights in cache.
pub const MAX_TAPS: usize = 1 << 16;

impl ConvSpec {
    /// Bytes per input pixel: f32 values, or int8 values (biased to u8) padded to groups of 4.
    pub fn pixel_bytes(&self) -> usize {
        if self.int8 { self.c.div_ceil(4) * 4 } else { 4 * self.c }
    }

    /// Vectors of four output channels.
    pub fn vectors(&self) -> usize {
        self.o.div_ceil(4)
    }

    /// The reduction length: taps times input channels.
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// The pixel tile for `o` output channels: as many pixels as fit the 16 vector registers
    /// beside the weights and a broadcast (`pixels * vectors + vectors + 1 <= 16`), at most 8.
    pub fn tile_for(o: usize) -> usize {
        let v = o.div_ceil(4).max(1);
        ((15 - v.min(14)) / v).clamp(1, 8)
    }

    /// The per-channel vectors the kernel reads from [`ConvArgs::epi`], in order.
    pub fn epi_vectors(&self) -> usize {
        usize::from(self.mult) + usize::from(self.scale) + usize::from(self.bias)
    }
}

/// Pointers of one call.
struct Fields {
    w: Value,
    epi: Value,
    /// Int8 kernels: the sample's activation scale (one f32) and the per-channel corrections.
    sx: Value,
    corr: Value,
    /// The tap table: per tap `(u, v, c)`, its input offset in bytes from the window corner.
    taps: Value,
}

fn zero(b: &mut FunctionBuilder<'_>) -> Value {
    let z = b.ins().f32const(0.0);
    b.ins().splat(F32X4, z)
}

/// `lanes` (1..=4) f32 values at `p + off` as a vector (lanes past them zero).
fn load_lanes(b: &mut FunctionBuilder<'_>, p: Value, off: i32, lanes: usize) -> Value {
    match lanes {
        4 => b.ins().load(F32X4, ro(), p, off),
        1 => {
            let e = b.ins().load(F32, ro(), p, off);
            b.ins().scalar_to_vector(F32X4, e)
        }
        _ => {
            let d = b.ins().load(F64, ro(), p, off);
            let v = b.ins().scalar_to_vector(F64X2, d);
            let mut v = b.ins().bitcast(F32X4, le(), v);
            if lanes == 3 {
                let e = b.ins().load(F32, ro(), p, off + 8);
                v = b.ins().insertlane(v, e, 2);
            }
            v
        }
    }
}

/// Stores the first `lanes` (1..=4) values of `y` at `p + off`.
fn store_lanes(b: &mut FunctionBuilder<'_>, y: Value, p: Value, off: i32, lanes: usize) {
    let st = MemFlagsData::new().with_notrap();
    match lanes {
        4 => {
            b.ins().store(st, y, p, off);
        }
        1 => {
            let e = b.ins().extractlane(y, 0);
            b.ins().store(st, e, p, off);
        }
        _ => {
            let d = b.ins().bitcast(F64X2, le(), y);
            let d = b.ins().extractlane(d, 0);
            b.ins().store(st, d, p, off);
            if lanes == 3 {
                let e = b.ins().extractlane(y, 2);
                b.ins().store(st, e, p, off + 8);
            }
        }
    }
}

/// `x * y + acc`, fused when the CPU has FMA.
fn mul_add(b: &mut FunctionBuilder<'_>, fma: bool, x: Value, y: Value, acc: Value) -> Value {
    if fma {
        b.ins().fma(x, y, acc)
    } else {
        let p = b.ins().fmul(x, y);
        b.ins().fadd(acc, p)
    }
}

/// Instructions of one unrolled tile up to which a kernel is unrolled (compiled in order,
/// [`super::isa::host_in_order`]); longer reductions loop over the taps.
pub const MAX_UNROLLED: usize = 8192;

impl ConvSpec {
    /// Whether the reduction is unrolled (every tap's offset a constant of the code).
    pub fn unrolled(&self) -> bool {
        let (v, p) = (self.vectors(), self.pixels);
        let steps = if self.int8 { self.kh * self.kw * self.c.div_ceil(4) } else { self.k() };
        steps * (p * v + p + v) <= MAX_UNROLLED
    }
}

/// The reduction of one tile, unrolled: per tap `(u, v, c)` its weight vectors, then per
/// pixel the input value's broadcast and its multiply-adds, in that order (the code is
/// compiled without the mid-end, so this order is the machine code's: one tap's values live
/// at a time). Returns the accumulators, `vectors` per pixel.
fn emit_sums_unrolled(
    b: &mut FunctionBuilder<'_>,
    s: &ConvSpec,
    f: &Fields,
    fma: bool,
    xb: Value,
    np: usize,
) -> Vec<Value> {
    let v = s.vectors();
    let mut accs: Vec<Value> = (0..np * v).map(|_| zero(b)).collect();
    for u in 0..s.kh {
        for vv in 0..s.kw {
            for c in 0..s.c {
                let t = (u * s.kw + vv) * s.c + c;
                let ws: Vec<Value> =
                    (0..v).map(|q| b.ins().load(F32X4, ro(), f.w, ((t * v + q) * 16) as i32)).collect();
                let tap = (u * s.dil[0] * s.w_pad + vv * s.dil[1]) * s.c + c;
                for j in 0..np {
                    let off = (j * s.stride[1] * s.c + tap) * 4;
                    let x = b.ins().load(F32, ro(), xb, off as i32);
                    let x = b.ins().splat(F32X4, x);
                    for q in 0..v {
                        accs[j * v + q] = mul_add(b, fma, x, ws[q], accs[j * v + q]);
                    }
                }
            }
        }
    }
    accs
}

/// `c + dot4(a, b)` per 32-bit lane: the sum of the four products of signed bytes of `a` and
/// unsigned bytes of `b`, written as the tree Cranelift folds into one `vpdpbusd` on CPUs with
/// AVX-512 VNNI or AVX-VNNI (elsewhere the tree itself runs: same result).
fn dot4(b: &mut FunctionBuilder<'_>, a: Value, x: Value, c: Value) -> Value {
    let al = b.ins().swiden_low(a);
    let xl = b.ins().uwiden_low(x);
    let lo = b.ins().imul(al, xl);
    let ah = b.ins().swiden_high(a);
    let xh = b.ins().uwiden_high(x);
    let hi = b.ins().imul(ah, xh);
    let (l0, l1) = (b.ins().swiden_low(lo), b.ins().swiden_high(lo));
    let l = b.ins().iadd_pairwise(l0, l1);
    let (h0, h1) = (b.ins().swiden_low(hi), b.ins().swiden_high(hi));
    let h = b.ins().iadd_pairwise(h0, h1);
    let d = b.ins().iadd_pairwise(l, h);
    b.ins().iadd(d, c)
}

/// The int8 reduction of one tile, unrolled like [`emit_sums_unrolled`]: per tap and group of
/// 4 input channels the weight vectors (4 output channels x 4 input channels of signed codes
/// each), per pixel the group's 4 biased bytes (`x + 128`) broadcast and `dot4`-accumulated.
/// Then the bias correction (`-128 * sum w` per channel, from `corr`) and the conversion:
/// `f32(sum) * (sx * alpha)`. Returns the scaled sums, `vectors` per pixel.
fn emit_sums_int8(b: &mut FunctionBuilder<'_>, s: &ConvSpec, f: &Fields, xb: Value, np: usize) -> Vec<Value> {
    let v = s.vectors();
    let groups = s.c.div_ceil(4);
    let pb = s.pixel_bytes();
    let mut accs: Vec<Value> = (0..np * v)
        .map(|_| {
            let z = b.ins().iconst(I32, 0);
            b.ins().splat(I32X4, z)
        })
        .collect();
    for u in 0..s.kh {
        for vv in 0..s.kw {
            for g in 0..groups {
                let t = (u * s.kw + vv) * groups + g;
                let ws: Vec<Value> =
                    (0..v).map(|q| b.ins().load(I8X16, ro(), f.w, ((t * v + q) * 16) as i32)).collect();
                let tap = (u * s.dil[0] * s.w_pad + vv * s.dil[1]) * pb + 4 * g;
                for j in 0..np {
                    let off = j * s.stride[1] * pb + tap;
                    let x = b.ins().load(I32, ro(), xb, off as i32);
                    let x = b.ins().splat(I32X4, x);
                    let x = b.ins().bitcast(I8X16, le(), x);
                    for q in 0..v {
                        accs[j * v + q] = dot4(b, ws[q], x, accs[j * v + q]);
                    }
                }
            }
        }
    }
    let sx = b.ins().load(F32, ro(), f.sx, 0);
    let sx = b.ins().splat(F32X4, sx);
    let mut ys = Vec::with_capacity(accs.len());
    for (i, acc) in accs.into_iter().enumerate() {
        let q = i % v;
        let corr = b.ins().load(I32X4, ro(), f.corr, (16 * q) as i32);
        let acc = b.ins().iadd(acc, corr);
        let accf = b.ins().fcvt_from_sint(F32X4, acc);
        let alpha = b.ins().load(F32X4, ro(), f.epi, (16 * q) as i32);
        let s1 = b.ins().fmul(sx, alpha);
        ys.push(b.ins().fmul(accf, s1));
    }
    ys
}

/// The reduction of one tile as a loop of one tap per iteration: the tap's input offset from
/// the tap table, its weights at `w + t * 16 * vectors`, the accumulators loop-carried.
/// (Unrolled code compiled with the mid-end would let the egraph elaborate one accumulator's
/// whole chain first, with every broadcast and weight vector kept live for the others:
/// measured, a 16 KB spill frame.) Returns the accumulators, `vectors` per pixel.
fn emit_sums_loop(
    b: &mut FunctionBuilder<'_>,
    s: &ConvSpec,
    f: &Fields,
    fma: bool,
    xb: Value,
    np: usize,
) -> Vec<Value> {
    let v = s.vectors();
    let n = np * v;
    let init: Vec<Value> = (0..n).map(|_| zero(b)).collect();
    let head = b.create_block();
    let body = b.create_block();
    let done = b.create_block();
    let t = b.append_block_param(head, I64);
    // The pointers ride along as loop parameters: computed once before the loop (a value
    // first used inside the loop would be elaborated, and recomputed, there).
    let [xp, wp, tp] = [(); 3].map(|_| b.append_block_param(head, I64));
    let params: Vec<Value> = (0..n).map(|_| b.append_block_param(head, F32X4)).collect();
    let results: Vec<Value> = (0..n).map(|_| b.append_block_param(done, F32X4)).collect();
    let t0 = b.ins().iconst(I64, 0);
    let mut args = vec![BlockArg::from(t0), xb.into(), f.w.into(), f.taps.into()];
    args.extend(init.iter().map(|a| BlockArg::from(*a)));
    b.ins().jump(head, &args);
    b.switch_to_block(head);
    let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, t, s.k() as i64);
    let pass: Vec<BlockArg> = params.iter().map(|a| BlockArg::from(*a)).collect();
    b.ins().brif(more, body, &[], done, &pass);
    b.switch_to_block(body);
    let ld = MemFlagsData::new().with_notrap().with_readonly();
    let t4 = b.ins().imul_imm_s(t, 4);
    let tap_at = b.ins().iadd(tp, t4);
    let off = b.ins().sload32(ld, tap_at, 0);
    let xt = b.ins().iadd(xp, off);
    let wo = b.ins().imul_imm_s(t, (v * 16) as i64);
    let wt = b.ins().iadd(wp, wo);
    let ws: Vec<Value> = (0..v).map(|q| b.ins().load(F32X4, ld, wt, (q * 16) as i32)).collect();
    let mut next = params.clone();
    for j in 0..np {
        let x = b.ins().load(F32, ro(), xt, (j * s.stride[1] * s.c * 4) as i32);
        let x = b.ins().splat(F32X4, x);
        for q in 0..v {
            next[j * v + q] = mul_add(b, fma, x, ws[q], next[j * v + q]);
        }
    }
    let t1 = b.ins().iadd_imm_s(t, 1);
    let mut args = vec![BlockArg::from(t1), xp.into(), wp.into(), tp.into()];
    args.extend(next.iter().map(|a| BlockArg::from(*a)));
    b.ins().jump(head, &args);
    b.switch_to_block(done);
    results
}

/// One tile of `np` output pixels starting at input address `xb` (the first pixel's window
/// corner), output address `ob`, residual address `rb`: the whole reduction, the epilogue and
/// the stores.
///
/// The reduction is unrolled ([`emit_sums_unrolled`]) when short enough
/// ([`ConvSpec::unrolled`]), else a loop over the taps ([`emit_sums_loop`]).
fn emit_tile(
    b: &mut FunctionBuilder<'_>,
    s: &ConvSpec,
    f: &Fields,
    fma: bool,
    (xb, ob, rb): (Value, Value, Value),
    np: usize,
) {
    let v = s.vectors();
    let sums = if s.int8 {
        emit_sums_int8(b, s, f, xb, np)
    } else if s.unrolled() {
        emit_sums_unrolled(b, s, f, fma, xb, np)
    } else {
        emit_sums_loop(b, s, f, fma, xb, np)
    };
    let accs: Vec<Vec<Value>> = sums.chunks(v).map(|c| c.to_vec()).collect();
    let o4 = v * 4;
    for (j, acc) in accs.into_iter().enumerate() {
        for (q, mut y) in acc.into_iter().enumerate() {
            let lanes = (s.o - 4 * q).min(4);
            let mut slot = 0;
            for (on, is_mul) in [(s.mult, true), (s.scale, true), (s.bias, false)] {
                if on && s.int8 && slot == 0 {
                    // The weight's scale, applied with the sample's in `emit_sums_int8`.
                    slot += 1;
                } else if on {
                    let e = b.ins().load(F32X4, ro(), f.epi, ((slot * o4 + 4 * q) * 4) as i32);
                    y = if is_mul { b.ins().fmul(y, e) } else { b.ins().fadd(y, e) };
                    slot += 1;
                }
            }
            let off = ((j * s.o + 4 * q) * 4) as i32;
            if s.residual {
                let r = load_lanes(b, rb, off, lanes);
                y = b.ins().fadd(y, r);
            }
            if let Some(act) = s.act {
                y = emit_act(b, y, act);
            }
            store_lanes(b, y, ob, off, lanes);
        }
    }
}

/// Compiles the kernel: `extern "C" fn(*const ConvArgs)`, relocation-free machine code.
pub fn compile(s: &ConvSpec) -> Result<Vec<u8>, CodegenError> {
    compile_with(s, None)
}

/// [`compile`], with fused multiply-adds forced off (`Some(false)`, the code for CPUs without
/// FMA, so tests run it everywhere) or taken from the host (`None`).
pub fn compile_with(s: &ConvSpec, fma: Option<bool>) -> Result<Vec<u8>, CodegenError> {
    let sane = (1..=MAX_CHANNELS).contains(&s.o)
        && s.c >= 1
        && s.kh >= 1
        && s.kw >= 1
        && s.ow >= 1
        && s.stride.iter().chain(&s.dil).all(|v| *v >= 1)
        && (1..=8).contains(&s.pixels)
        && s.k() <= MAX_TAPS
        && (!s.int8 || (s.mult && s.unrolled()));
    if !sane {
        return Err(CodegenError::Unsupported(format!("direct convolution kernel {s:?}")));
    }
    let isa = if s.unrolled() || s.int8 { super::isa::host_in_order()? } else { super::isa::host()? };
    let host_fma = isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    let fma = host_fma && fma != Some(false);
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.push(AbiParam::new(ptr));
    let mut func = Function::with_name_signature(UserFuncName::user(0, 1), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let args = b.block_params(entry)[0];
    let o = ConvArgs::OFFSETS;
    let mut field = |i: usize| b.ins().load(I64, ro(), args, o[i]);
    let (x, w, epi, taps, residual, out, row_begin, row_end, sx, corr) =
        (field(0), field(1), field(2), field(3), field(4), field(5), field(6), field(7), field(8), field(9));
    let f = Fields { w, epi, sx, corr, taps };

    // for oy in row_begin..row_end
    let row_head = b.create_block();
    let row_body = b.create_block();
    let exit = b.create_block();
    let oy = b.append_block_param(row_head, I64);
    b.ins().jump(row_head, &[row_begin.into()]);
    b.switch_to_block(row_head);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, oy, row_end);
    b.ins().brif(more, row_body, &[], exit, &[]);
    b.switch_to_block(row_body);
    let in_row = (s.stride[0] * s.w_pad * s.pixel_bytes()) as i64;
    let out_row = (s.ow * s.o * 4) as i64;
    let xo = b.ins().imul_imm_s(oy, in_row);
    let xrow = b.ins().iadd(x, xo);
    let oo = b.ins().imul_imm_s(oy, out_row);
    let orow = b.ins().iadd(out, oo);
    let rrow = b.ins().iadd(residual, oo);

    let np = s.pixels.min(s.ow);
    let tiles = s.ow / np;
    let rest = s.ow - tiles * np;
    let x_tile = (np * s.stride[1] * s.pixel_bytes()) as i64;
    let o_tile = (np * s.o * 4) as i64;
    if tiles == 1 {
        emit_tile(&mut b, s, &f, fma, (xrow, orow, rrow), np);
    } else {
        // for t in 0..tiles
        let head = b.create_block();
        let body = b.create_block();
        let done = b.create_block();
        let t = b.append_block_param(head, I64);
        let zero = b.ins().iconst(I64, 0);
        b.ins().jump(head, &[zero.into()]);
        b.switch_to_block(head);
        let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, t, tiles as i64);
        b.ins().brif(more, body, &[], done, &[]);
        b.switch_to_block(body);
        let xt = b.ins().imul_imm_s(t, x_tile);
        let xb = b.ins().iadd(xrow, xt);
        let ot = b.ins().imul_imm_s(t, o_tile);
        let ob = b.ins().iadd(orow, ot);
        let rb = b.ins().iadd(rrow, ot);
        emit_tile(&mut b, s, &f, fma, (xb, ob, rb), np);
        let t1 = b.ins().iadd_imm_s(t, 1);
        b.ins().jump(head, &[t1.into()]);
        b.switch_to_block(done);
    }
    if rest > 0 {
        let xb = b.ins().iadd_imm_s(xrow, tiles as i64 * x_tile);
        let ob = b.ins().iadd_imm_s(orow, tiles as i64 * o_tile);
        let rb = b.ins().iadd_imm_s(rrow, tiles as i64 * o_tile);
        emit_tile(&mut b, s, &f, fma, (xb, ob, rb), rest);
    }
    let next = b.ins().iadd_imm_s(oy, 1);
    b.ins().jump(row_head, &[next.into()]);
    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());

    super::isa::compile_kernel(func, &*isa)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use triton_runtime::kernel::{CodeMemory, ConvArgs, conv_taps};

    use super::*;

    /// A layer: the spec, input height and padding.
    #[derive(Clone, Debug)]
    struct Layer {
        s: ConvSpec,
        h: usize,
        w: usize,
        pad: [usize; 2],
    }

    impl Layer {
        fn oh(&self) -> usize {
            (self.h + 2 * self.pad[0] - self.s.dil[0] * (self.s.kh - 1) - 1) / self.s.stride[0] + 1
        }
    }

    fn layer(
        c: usize,
        o: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
    ) -> Option<Layer> {
        let span = |n: usize, k: usize, d: usize, p: usize| (n + 2 * p).checked_sub(d * (k - 1) + 1);
        let ow = span(w, kw, dil[1], pad[1])? / stride[1] + 1;
        span(h, kh, dil[0], pad[0])?;
        let s = ConvSpec {
            c,
            w_pad: w + 2 * pad[1],
            o,
            ow,
            kh,
            kw,
            stride,
            dil,
            pixels: ConvSpec::tile_for(o),
            mult: false,
            scale: false,
            bias: false,
            residual: false,
            act: None,
            int8: false,
        };
        Some(Layer { s, h, w, pad })
    }

    /// The rest of the reference epilogue after the multiplier, in the engine's order: scale,
    /// bias, residual (`res`, when the spec has one), activation. `vecs` holds the multiplier,
    /// scale and bias vectors, `o` values each.
    fn finish(s: &ConvSpec, mut r: f32, vecs: &[f32], oc: usize, res: f32) -> f32 {
        if s.scale {
            r *= vecs[s.o + oc];
        }
        if s.bias {
            r += vecs[2 * s.o + oc];
        }
        if s.residual {
            r += res;
        }
        act(r, s.act)
    }

    /// The engine's activations (`UnaryOp::apply`): `-0.0` and NaN pass relu unchanged.
    fn act(r: f32, a: Option<Act>) -> f32 {
        let relu = if r < 0.0 { 0.0 } else { r };
        match a {
            Some(Act::Relu) => relu,
            Some(Act::Relu6) => {
                if relu > 6.0 {
                    6.0
                } else {
                    relu
                }
            }
            None => r,
        }
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Runs the kernel (FMA as `fma` says) over the whole layer; returns (kernel output,
    /// reference output).
    fn run(l: &Layer, seed: u64, fma: Option<bool>) -> (Vec<f32>, Vec<f32>) {
        let s = &l.s;
        let (oh, ow, o, c) = (l.oh(), s.ow, s.o, s.c);
        let hp = l.h + 2 * l.pad[0];
        let x = values(l.h * l.w * c, seed);
        let w = values(o * s.k(), seed + 1);
        let vecs = values(3 * o, seed + 2);
        let res = values(oh * ow * o, seed + 3);
        // Reference: the definition, f64 sums, the epilogue in order.
        let mut want = vec![0f32; oh * ow * o];
        for y in 0..oh {
            for xo in 0..ow {
                for oc in 0..o {
                    let mut acc = 0f64;
                    for u in 0..s.kh {
                        for v in 0..s.kw {
                            let iy = (y * s.stride[0] + u * s.dil[0]) as isize - l.pad[0] as isize;
                            let ix = (xo * s.stride[1] + v * s.dil[1]) as isize - l.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= l.h as isize || ix >= l.w as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = x[(iy as usize * l.w + ix as usize) * c + ci];
                                // Weight layout [o, c, kh, kw].
                                let wv = w[((oc * c + ci) * s.kh + u) * s.kw + v];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    let r = if s.mult { acc as f32 * vecs[oc] } else { acc as f32 };
                    want[(y * ow + xo) * o + oc] = finish(s, r, &vecs, oc, res[(y * ow + xo) * o + oc]);
                }
            }
        }
        // The kernel's operands, laid out as the engine lays them out.
        let mut xp = vec![0f32; hp * s.w_pad * c];
        for y in 0..l.h {
            let at = ((y + l.pad[0]) * s.w_pad + l.pad[1]) * c;
            xp[at..at + l.w * c].copy_from_slice(&x[y * l.w * c..(y + 1) * l.w * c]);
        }
        let o4 = s.vectors() * 4;
        let taps = s.kh * s.kw;
        let mut wk = vec![0f32; s.k() * o4];
        for t in 0..s.k() {
            for oc in 0..o {
                wk[t * o4 + oc] = w[oc * s.k() + (t % c) * taps + t / c];
            }
        }
        let mut epi = Vec::new();
        for (on, i) in [(s.mult, 0), (s.scale, 1), (s.bias, 2)] {
            if on {
                epi.extend_from_slice(&vecs[i * o..(i + 1) * o]);
                epi.resize(epi.len() + o4 - o, 0.0);
            }
        }
        let table = conv_taps(c, s.w_pad, s.kh, s.kw, s.dil);
        let code = CodeMemory::new(&[compile_with(s, fma).unwrap()]).unwrap();
        let mut out = vec![f32::NAN; oh * ow * o + 1];
        let sentinel = out.len() - 1;
        out[sentinel] = 7.0;
        // Two calls over halves of the rows, as the engine's blocks make them.
        let half = oh / 2;
        for (r0, r1) in [(0, half), (half, oh)] {
            let args = ConvArgs {
                x: xp.as_ptr().cast(),
                w: wk.as_ptr().cast(),
                epi: epi.as_ptr(),
                taps: table.as_ptr(),
                residual: res.as_ptr(),
                out: out.as_mut_ptr(),
                row_begin: r0 as u64,
                row_end: r1 as u64,
                sx: std::ptr::null(),
                corr: std::ptr::null(),
            };
            // SAFETY: every buffer has the sizes the kernel's specialization reads and writes.
            unsafe { code.conv_entry(0)(&args) };
        }
        assert_eq!(out[sentinel], 7.0, "the kernel wrote past its output");
        out.truncate(sentinel);
        (out, want)
    }

    impl ConvSpec {
        /// Whether the int8 form of this spec unrolls (the only form it has).
        fn int8_unrollable(&self) -> bool {
            ConvSpec { int8: true, ..*self }.unrolled()
        }
    }

    /// The kernel, with and without FMA, equals the definition within f32 summation error
    /// (`|x|, |w| < 1`, so every sum of `k` products is off by at most `k eps k`), and writes
    /// every output value and nothing past them.
    fn check(l: &Layer, seed: u64) {
        for fma in [None, Some(false)] {
            let (got, want) = run(l, seed, fma);
            let k = l.s.k() as f32;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let bound = 4.0 * f32::EPSILON * (k * k + 4.0) * (1.0 + w.abs());
                assert!((g - w).abs() <= bound, "{l:?} fma {fma:?}: value {i}: {g} != {w}");
            }
        }
    }

    #[test]
    fn lenet_layers_match_the_definition() {
        // LeNet-5's two convolutions, with every epilogue step.
        let mut a = layer(1, 6, (28, 28), (5, 5), [1, 1], [2, 2], [1, 1]).unwrap();
        a.s.bias = true;
        a.s.act = Some(Act::Relu);
        check(&a, 1);
        let mut b = layer(6, 16, (14, 14), (5, 5), [1, 1], [0, 0], [1, 1]).unwrap();
        (b.s.mult, b.s.scale, b.s.bias, b.s.residual, b.s.act) = (true, true, true, true, Some(Act::Relu6));
        check(&b, 2);
    }

    /// Runs an int8 kernel over the whole layer (codes in `-127..=127`, weights `-lim..=lim`);
    /// returns (kernel output, reference output computed as the interpreter does: the exact
    /// integer sum, then `f32(sum) * (sx * alpha)`, scale, bias, residual, activation, each
    /// rounded in f32).
    fn run_int8(l: &Layer, seed: u64, lim: i32) -> (Vec<f32>, Vec<f32>) {
        let s = &l.s;
        let (oh, ow, o, c) = (l.oh(), s.ow, s.o, s.c);
        let (hp, c4, o4, taps) = (l.h + 2 * l.pad[0], c.div_ceil(4) * 4, s.vectors() * 4, s.kh * s.kw);
        let ints = |n: usize, seed: u64, lim: i32| -> Vec<i32> {
            values(n, seed).iter().map(|v| ((v + 1.0) * 0.5 * (2 * lim + 1) as f32) as i32 - lim).collect()
        };
        let x = ints(l.h * l.w * c, seed, 127);
        let w = ints(o * s.k(), seed + 1, lim);
        let vecs = values(3 * o, seed + 2);
        let res = values(oh * ow * o, seed + 3);
        let sx = 0.0123f32;
        let mut want = vec![0f32; oh * ow * o];
        for y in 0..oh {
            for xo in 0..ow {
                for oc in 0..o {
                    let mut acc = 0i64;
                    for u in 0..s.kh {
                        for v in 0..s.kw {
                            let iy = (y * s.stride[0] + u * s.dil[0]) as isize - l.pad[0] as isize;
                            let ix = (xo * s.stride[1] + v * s.dil[1]) as isize - l.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= l.h as isize || ix >= l.w as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = x[(iy as usize * l.w + ix as usize) * c + ci];
                                acc += i64::from(xv * w[((oc * c + ci) * s.kh + u) * s.kw + v]);
                            }
                        }
                    }
                    let r = acc as f32 * (sx * vecs[oc]);
                    want[(y * ow + xo) * o + oc] = finish(s, r, &vecs, oc, res[(y * ow + xo) * o + oc]);
                }
            }
        }
        let mut xp = vec![128u8; hp * s.w_pad * c4];
        for y in 0..l.h {
            for xi in 0..l.w {
                for ci in 0..c {
                    xp[((y + l.pad[0]) * s.w_pad + xi + l.pad[1]) * c4 + ci] = (x[(y * l.w + xi) * c + ci] + 128) as u8;
                }
            }
        }
        let groups = c4 / 4;
        let mut wk = vec![0i8; taps * c4 * o4];
        let mut corr = vec![0i32; o4];
        for tap in 0..taps {
            for ci in 0..c {
                for oc in 0..o {
                    let code = w[(oc * c + ci) * taps + tap];
                    wk[(((tap * groups + ci / 4) * (o4 / 4) + oc / 4) * 4 + oc % 4) * 4 + ci % 4] = code as i8;
                    corr[oc] -= 128 * code;
                }
            }
        }
        let mut epi = Vec::new();
        for (on, i) in [(true, 0), (s.scale, 1), (s.bias, 2)] {
            if on {
                epi.extend_from_slice(&vecs[i * o..(i + 1) * o]);
                epi.resize(epi.len() + o4 - o, 0.0);
            }
        }
        let code = CodeMemory::new(&[compile(s).unwrap()]).unwrap();
        let mut out = vec![f32::NAN; oh * ow * o + 1];
        let sentinel = out.len() - 1;
        out[sentinel] = 7.0;
        let half = oh / 2;
        for (r0, r1) in [(0, half), (half, oh)] {
            let args = ConvArgs {
                x: xp.as_ptr(),
                w: wk.as_ptr().cast(),
                epi: epi.as_ptr(),
                taps: std::ptr::null(),
                residual: res.as_ptr(),
                out: out.as_mut_ptr(),
                row_begin: r0 as u64,
                row_end: r1 as u64,
                sx: &sx,
                corr: corr.as_ptr(),
            };
            // SAFETY: every buffer has the sizes the kernel's specialization reads and writes.
            unsafe { code.conv_entry(0)(&args) };
        }
        assert_eq!(out[sentinel], 7.0, "the kernel wrote past its output");
        out.truncate(sentinel);
        (out, want)
    }

    /// An int8 kernel equals the interpreter's arithmetic bit for bit.
    fn check_int8(l: &Layer, seed: u64, lim: i32) {
        let mut l = l.clone();
        (l.s.int8, l.s.mult) = (true, true);
        let (got, want) = run_int8(&l, seed, lim);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{l:?}: value {i}: {g} != {w}");
        }
    }

    #[test]
    fn int8_lenet_conv2_is_exact() {
        let mut l = layer(6, 16, (14, 14), (5, 5), [1, 1], [0, 0], [1, 1]).unwrap();
        (l.s.bias, l.s.act) = (true, Some(Act::Relu));
        check_int8(&l, 5, 1);
        // Int8 codes at the extremes (the widest sums), every epilogue step.
        (l.s.scale, l.s.residual, l.s.act) = (true, true, Some(Act::Relu6));
        check_int8(&l, 6, 127);
    }

    #[test]
    fn both_reduction_forms_match_the_definition() {
        // Short: unrolled, compiled in order; long (17 x 7 x 7 taps): the tap loop.
        let mut short = layer(3, 5, (9, 7), (3, 3), [1, 2], [1, 0], [1, 1]).unwrap();
        short.s.residual = true;
        assert!(short.s.unrolled());
        check(&short, 3);
        let mut long = layer(17, 13, (9, 11), (7, 7), [2, 1], [2, 3], [1, 1]).unwrap();
        (long.s.bias, long.s.act) = (true, Some(Act::Relu));
        assert!(!long.s.unrolled());
        check(&long, 4);
    }

    #[test]
    #[ignore = "writes LeNet-5 conv2's kernel to $CONV_DUMP (for objdump -D -b binary -mi386:x86-64)"]
    fn dump() {
        let mut l = layer(6, 16, (14, 14), (5, 5), [1, 1], [0, 0], [1, 1]).unwrap();
        (l.s.bias, l.s.act) = (true, Some(Act::Relu));
        let path = std::env::var("CONV_DUMP").unwrap_or_else(|_| "conv.bin".into());
        std::fs::write(&path, compile(&l.s).unwrap()).unwrap();
        (l.s.int8, l.s.mult) = (true, true);
        std::fs::write(format!("{path}.int8"), compile(&l.s).unwrap()).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn kernels_match_the_definition(
            c in 1usize..18, o in 1usize..=16, h in 1usize..12, w in 1usize..12,
            kh in 1usize..8, kw in 1usize..8, sh in 1usize..4, sw in 1usize..4,
            ph in 0usize..3, pw in 0usize..3, dh in 1usize..3, dw in 1usize..3,
            flags in 0u8..32, relu6 in any::<bool>(), seed in 0u64..1000,
        ) {
            if let Some(mut l) = layer(c, o, (h, w), (kh, kw), [sh, sw], [ph, pw], [dh, dw]) {
                l.s.mult = flags & 1 != 0;
                l.s.scale = flags & 2 != 0;
                l.s.bias = flags & 4 != 0;
                l.s.residual = flags & 8 != 0;
                l.s.act = (flags & 16 != 0).then_some(if relu6 { Act::Relu6 } else { Act::Relu });
                check(&l, seed);
                if l.s.int8_unrollable() {
                    check_int8(&l, seed, 1);
                }
            }
        }
    }
}
