//! The ternary GEMM kernels: activation rows against every output channel of a packed (tq2)
//! weight, with the fused epilogue, specialised per layer shape. Two variants: int8
//! activations (`pmaddubsw`, exact), and f32 activations with no multiplication in the
//! product (`emit_tile_f32`: sign flips and masks, then additions; the runtime uses it up to
//! `ADD_SUB_MAX_ROWS` rows).
//!
//! Rules:
//! - Shapes are constants: `N`, `K` (so the padded row length and the block count), the tile of
//!   output channels, the unroll factor, the row block and the epilogue are baked in; the
//!   kernel reads only [`GemmArgs`] (ABI in `triton_runtime::kernel`).
//! - Rows are taken `rows` at a time (then one at a time for the rest): each tile's weights are
//!   decoded once per block and multiplied into every row of the group, so the decode cost is
//!   shared (the batch kernel); a single row keeps 16-bit sums over up to 8 blocks (the GEMV
//!   kernel).
//! - The product is exact: `pmaddubsw(x, codes)` multiplies int8 activations by the unsigned
//!   codes `w + 1` (at most 2 * 127 * 2 = 508 per pair), sums stay in 16 bits for at most 8
//!   blocks (8 * 4 * 508 = 16256), then widen to 32 bits; finally `sum(code * x) - sum(x)`.
//! - The epilogue runs in the order the interpreter does, each step rounded in f32:
//!   `acc * (sx * alpha)`, `* scale`, `+ bias`, `+ residual`, activation. So on the integer
//!   path the kernel equals the interpreter bit for bit.
//! - Every load is `notrap readonly can_move` (weights, activations, epilogue vectors): without
//!   it Cranelift keeps loaded vectors live and spills (../shared/notes/kernels.md).
//! - The result is relocation-free (checked): all addresses come from the argument block.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8, I8X16, I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, Function, InstBuilder, MemFlagsData, Signature, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use triton_runtime::kernel::GemmArgs;
use triton_runtime::pack;

use super::CodegenError;

/// Activations a kernel applies itself (others run after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    Relu,
    Relu6,
}

/// One kernel's specialization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmSpec {
    pub n: usize,
    pub k: usize,
    /// Output channels per tile: 1..=4.
    pub tile: usize,
    /// Blocks per loop iteration (at most 8); the blocks left over after the loop run once
    /// more, straight-line; the block count itself means no loop.
    pub unroll: usize,
    /// Activation rows multiplied per pass over a tile's weights: 1..=4.
    pub rows: usize,
    pub scale: bool,
    pub bias: bool,
    pub residual: bool,
    pub act: Option<Act>,
    /// f32 activations (the add/subtract kernel) instead of int8 ones.
    pub f32_x: bool,
}

impl GemmSpec {
    pub fn blocks(&self) -> usize {
        pack::padded_k(self.k) / pack::BLOCK
    }

    /// Tiles, counting a partial last one.
    pub fn tiles(&self) -> usize {
        self.n.div_ceil(self.tile)
    }
}

pub(super) fn ro() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly().with_can_move()
}

pub(super) fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Per-call pointers shared by every row.
struct Fields {
    w: Value,
    alpha: Value,
    scale: Value,
    bias: Value,
}

/// One activation row's operands.
struct Row {
    x: Value,
    out: Value,
    residual: Value,
    /// Int8 rows: the row's activation sum and scale (f32 rows have neither).
    xsum: Option<Value>,
    sx: Option<Value>,
}

/// A block group: `(builder, activation bases, weight bases, accumulators, first block,
/// block count)`; it adds the products of blocks `first .. first + count` into the accumulators.
type Group<'g> = dyn FnMut(&mut FunctionBuilder<'_>, &[Value], &[Value], &mut Vec<Value>, usize, usize) + 'g;

/// The reduction over all of a row's blocks: `blocks / unroll` loop iterations of `unroll`
/// blocks (none when that is one iteration: straight-line), then the remaining blocks
/// straight-line. The accumulators (`acc_ty`) are loop-carried block parameters; activation
/// bases advance by `x_block_bytes` per block, weight bases by one packed block.
#[allow(clippy::too_many_arguments)]
fn emit_blocks(
    b: &mut FunctionBuilder<'_>,
    blocks: usize,
    unroll: usize,
    x_block_bytes: usize,
    xs: &[Value],
    ws: &[Value],
    mut accs: Vec<Value>,
    acc_ty: Type,
    group: &mut Group<'_>,
) -> Vec<Value> {
    let unroll = unroll.clamp(1, 8);
    let iters = blocks / unroll;
    let rem = blocks - iters * unroll;
    if iters == 1 {
        group(b, xs, ws, &mut accs, 0, unroll);
    } else if iters > 1 {
        // for j in 0..iters: the accumulators are block parameters.
        let head = b.create_block();
        let body = b.create_block();
        let done = b.create_block();
        let j = b.append_block_param(head, I64);
        let acc_params: Vec<Value> = accs.iter().map(|_| b.append_block_param(head, acc_ty)).collect();
        let done_params: Vec<Value> = accs.iter().map(|_| b.append_block_param(done, acc_ty)).collect();
        let zero = b.ins().iconst(I64, 0);
        let mut args = vec![BlockArg::from(zero)];
        args.extend(accs.iter().map(|a| BlockArg::from(*a)));
        b.ins().jump(head, &args);
        b.switch_to_block(head);
        let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, j, iters as i64);
        let pass: Vec<_> = acc_params.iter().map(|a| BlockArg::from(*a)).collect();
        b.ins().brif(more, body, &[], done, &pass);
        b.switch_to_block(body);
        let xoff = b.ins().imul_imm_s(j, (unroll * x_block_bytes) as i64);
        let xbases: Vec<Value> = xs.iter().map(|x| b.ins().iadd(*x, xoff)).collect();
        let woff = b.ins().imul_imm_s(j, (unroll * pack::BLOCK_BYTES) as i64);
        let wbases: Vec<Value> = ws.iter().map(|r| b.ins().iadd(*r, woff)).collect();
        let mut next = acc_params.clone();
        group(b, &xbases, &wbases, &mut next, 0, unroll);
        let j1 = b.ins().iadd_imm_s(j, 1);
        let mut args = vec![BlockArg::from(j1)];
        args.extend(next.iter().map(|a| BlockArg::from(*a)));
        b.ins().jump(head, &args);
        b.switch_to_block(done);
        accs = done_params;
    }
    if rem > 0 {
        group(b, xs, ws, &mut accs, iters * unroll, rem);
    }
    accs
}

/// The packed weight rows of `channels` channels starting at `row0`.
fn weight_rows(b: &mut FunctionBuilder<'_>, s: &GemmSpec, f: &Fields, row0: Value, channels: usize) -> Vec<Value> {
    let row_bytes = pack::row_bytes(s.k) as i64;
    (0..channels)
        .map(|c| {
            let r = b.ins().iadd_imm_s(row0, c as i64);
            let off = b.ins().imul_imm_s(r, row_bytes);
            b.ins().iadd(f.w, off)
        })
        .collect()
}

/// The codes `w + 1` of the 16 weights `16 q ..` of the block at `wbase + offset`, one per byte.
fn decode(b: &mut FunctionBuilder<'_>, wbase: Value, offset: usize, q: usize, mask: Value) -> Value {
    let wv = b.ins().load(I8X16, ro(), wbase, offset as i32);
    let w16 = b.ins().bitcast(I16X8, le(), wv);
    let shifted = if q == 0 { w16 } else { b.ins().ushr_imm_u(w16, (2 * q) as i64) };
    let bytes = b.ins().bitcast(I8X16, le(), shifted);
    b.ins().band(bytes, mask)
}

fn splat_i8(b: &mut FunctionBuilder<'_>, v: i64) -> Value {
    let m = b.ins().iconst(I8, v);
    b.ins().splat(I8X16, m)
}

fn zero_vec(b: &mut FunctionBuilder<'_>, ty: Type) -> Value {
    if ty == F32X4 {
        let z = b.ins().f32const(0.0);
        b.ins().splat(F32X4, z)
    } else {
        let z = b.ins().iconst(I32, 0);
        b.ins().splat(I32X4, z)
    }
}

/// `[x0 + x1, x2 + x3, y0 + y1, y2 + y3]` for f32x4 `x` and `y`.
fn fadd_pairwise(b: &mut FunctionBuilder<'_>, x: Value, y: Value) -> Value {
    let lanes = |l: [u8; 4]| -> Vec<u8> { l.iter().flat_map(|i| (0..4).map(move |j| 4 * i + j)).collect() };
    let xi = b.ins().bitcast(I8X16, le(), x);
    let yi = b.ins().bitcast(I8X16, le(), y);
    let even = b.func.dfg.immediates.push(lanes([0, 2, 4, 6]).as_slice().into());
    let odd = b.func.dfg.immediates.push(lanes([1, 3, 5, 7]).as_slice().into());
    let e = b.ins().shuffle(xi, yi, even);
    let o = b.ins().shuffle(xi, yi, odd);
    let e = b.ins().bitcast(F32X4, le(), e);
    let o = b.ins().bitcast(F32X4, le(), o);
    b.ins().fadd(e, o)
}

/// One vector whose lane `c` is the sum of the four lanes of `accs[c]` (lanes past
/// `accs.len()` are zero): `(a0 + a1) + (a2 + a3)` per channel.
fn horizontal_sums(b: &mut FunctionBuilder<'_>, mut accs: Vec<Value>, ty: Type) -> Value {
    while accs.len() < 4 {
        accs.push(zero_vec(b, ty));
    }
    if ty == F32X4 {
        let ab = fadd_pairwise(b, accs[0], accs[1]);
        let cd = fadd_pairwise(b, accs[2], accs[3]);
        fadd_pairwise(b, ab, cd)
    } else {
        let ab = b.ins().iadd_pairwise(accs[0], accs[1]);
        let cd = b.ins().iadd_pairwise(accs[2], accs[3]);
        b.ins().iadd_pairwise(ab, cd)
    }
}

/// Sums of `code * x` over the whole row for `channels` rows starting at channel `row0`, as an
/// i32x4 with one lane per channel (lanes past `channels` are zero).
fn emit_tile(b: &mut FunctionBuilder<'_>, s: &GemmSpec, f: &Fields, x: Value, row0: Value, channels: usize) -> Value {
    let rows = weight_rows(b, s, f, row0, channels);
    let mask = splat_i8(b, 3);
    // One group of blocks: 16-bit sums per channel over at most 8 blocks (8 * 4 * 508 = 16256).
    let mut group = |b: &mut FunctionBuilder<'_>,
                     xbases: &[Value],
                     wbases: &[Value],
                     accs: &mut Vec<Value>,
                     first: usize,
                     nb: usize| {
        let mut sums16: Vec<Option<Value>> = vec![None; channels];
        for u in first..first + nb {
            let xv: Vec<Value> =
                (0..4).map(|q| b.ins().load(I8X16, ro(), xbases[0], (u * pack::BLOCK + 16 * q) as i32)).collect();
            for c in 0..channels {
                for (q, x) in xv.iter().enumerate() {
                    let codes = decode(b, wbases[c], u * pack::BLOCK_BYTES, q, mask);
                    let p = b.ins().x86_pmaddubsw(*x, codes);
                    sums16[c] = Some(match sums16[c] {
                        None => p,
                        Some(acc) => b.ins().iadd(acc, p),
                    });
                }
            }
        }
        for c in 0..channels {
            if let Some(v) = sums16[c] {
                let lo = b.ins().swiden_low(v);
                let hi = b.ins().swiden_high(v);
                let pairs = b.ins().iadd_pairwise(lo, hi);
                accs[c] = b.ins().iadd(accs[c], pairs);
            }
        }
    };
    let zero = zero_vec(b, I32X4);
    let accs = emit_blocks(b, s.blocks(), s.unroll, pack::BLOCK, &[x], &rows, vec![zero; channels], I32X4, &mut group);
    horizontal_sums(b, accs, I32X4)
}

/// Applies the epilogue to the sums of `channels` channels starting at `row0` and stores them.
fn emit_epilogue(
    b: &mut FunctionBuilder<'_>,
    s: &GemmSpec,
    f: &Fields,
    row: &Row,
    row0: Value,
    sums: Value,
    channels: usize,
) {
    let byte_off = b.ins().imul_imm_s(row0, 4);
    // A full tile loads and stores vectors; a partial one goes lane by lane.
    let load_vec = |b: &mut FunctionBuilder<'_>, base: Value| -> Value {
        let p = b.ins().iadd(base, byte_off);
        if channels == 4 {
            b.ins().load(F32X4, ro(), p, 0)
        } else {
            let z = b.ins().f32const(0.0);
            let mut v = b.ins().splat(F32X4, z);
            for c in 0..channels {
                let e = b.ins().load(F32, ro(), p, (4 * c) as i32);
                v = b.ins().insertlane(v, e, c as u8);
            }
            v
        }
    };
    let alpha = load_vec(b, f.alpha);
    let mut y = match (row.xsum, row.sx) {
        (Some(xsum), Some(sx)) => {
            let xsum = b.ins().splat(I32X4, xsum);
            let acc = b.ins().isub(sums, xsum);
            let accf = b.ins().fcvt_from_sint(F32X4, acc);
            let sx = b.ins().splat(F32X4, sx);
            let s1 = b.ins().fmul(sx, alpha);
            b.ins().fmul(accf, s1)
        }
        _ => b.ins().fmul(sums, alpha),
    };
    if s.scale {
        let v = load_vec(b, f.scale);
        y = b.ins().fmul(y, v);
    }
    if s.bias {
        let v = load_vec(b, f.bias);
        y = b.ins().fadd(y, v);
    }
    if s.residual {
        let v = load_vec(b, row.residual);
        y = b.ins().fadd(y, v);
    }
    if let Some(act) = s.act {
        y = emit_act(b, y, act);
    }
    let p = b.ins().iadd(row.out, byte_off);
    let st = MemFlagsData::new().with_notrap();
    if channels == 4 {
        b.ins().store(st, y, p, 0);
    } else {
        for c in 0..channels {
            let e = b.ins().extractlane(y, c as u8);
            b.ins().store(st, e, p, (4 * c) as i32);
        }
    }
}

/// `act` on an f32x4, as `UnaryOp::apply` does it: `y < 0 ? 0 : y` (a NaN stays NaN, -0.0
/// stays -0.0), then for relu6 `y > 6 ? 6 : y`.
pub(super) fn emit_act(b: &mut FunctionBuilder<'_>, mut y: Value, act: Act) -> Value {
    let z = b.ins().f32const(0.0);
    let zero = b.ins().splat(F32X4, z);
    let neg = b.ins().fcmp(FloatCC::LessThan, y, zero);
    let neg = b.ins().bitcast(F32X4, le(), neg);
    y = b.ins().bitselect(neg, zero, y);
    if act == Act::Relu6 {
        let six = b.ins().f32const(6.0);
        let six = b.ins().splat(F32X4, six);
        let big = b.ins().fcmp(FloatCC::GreaterThan, y, six);
        let big = b.ins().bitcast(F32X4, le(), big);
        y = b.ins().bitselect(big, six, y);
    }
    y
}

/// Sums of `code * x` for `channels` channels starting at `row0` and several activation rows
/// `xs`: per row an i32x4 with one lane per channel. Each block's codes are decoded once and
/// used for every row; per block and row the four 16-bit products are summed (at most
/// 4 * 508) and widened into 32-bit accumulators.
fn emit_tile_rows(
    b: &mut FunctionBuilder<'_>,
    s: &GemmSpec,
    f: &Fields,
    xs: &[Value],
    row0: Value,
    channels: usize,
) -> Vec<Value> {
    let wrows = weight_rows(b, s, f, row0, channels);
    let mask = splat_i8(b, 3);
    let nrows = xs.len();
    // accs[c * nrows + r]. Within a group of `unroll` (at most 8) blocks the products stay in
    // 16-bit sums (8 * 4 * 508 = 16256), one per (channel, row); 16 activations of every row are
    // loaded once per step and each channel's codes for them are decoded once.
    let mut group = |b: &mut FunctionBuilder<'_>,
                     xbases: &[Value],
                     wbases: &[Value],
                     accs: &mut Vec<Value>,
                     first: usize,
                     nb: usize| {
        let mut sums16: Vec<Option<Value>> = vec![None; channels * nrows];
        for u in first..first + nb {
            for q in 0..4 {
                let xv: Vec<Value> =
                    xbases.iter().map(|xb| b.ins().load(I8X16, ro(), *xb, (u * pack::BLOCK + 16 * q) as i32)).collect();
                for c in 0..channels {
                    let code = decode(b, wbases[c], u * pack::BLOCK_BYTES, q, mask);
                    for (r, x) in xv.iter().enumerate() {
                        let p = b.ins().x86_pmaddubsw(*x, code);
                        let slot = &mut sums16[c * nrows + r];
                        *slot = Some(match *slot {
                            None => p,
                            Some(acc) => b.ins().iadd(acc, p),
                        });
                    }
                }
            }
        }
        for (a, v) in accs.iter_mut().zip(sums16) {
            if let Some(v) = v {
                let lo = b.ins().swiden_low(v);
                let hi = b.ins().swiden_high(v);
                let pairs = b.ins().iadd_pairwise(lo, hi);
                *a = b.ins().iadd(*a, pairs);
            }
        }
    };
    let zero = zero_vec(b, I32X4);
    let accs =
        emit_blocks(b, s.blocks(), s.unroll, pack::BLOCK, xs, &wrows, vec![zero; channels * nrows], I32X4, &mut group);
    (0..nrows).map(|r| horizontal_sums(b, (0..channels).map(|c| accs[c * nrows + r]).collect(), I32X4)).collect()
}

/// The f32-activation variant: sums of `w * x` for f32 rows `xs`, with no multiplication.
/// Per 16 weights a channel's codes become two byte vectors by table lookup (`pshufb`): the
/// sign byte `0x80` where `w = -1`, and `0xff` where `w != 0`; per 4 weights a second `pshufb`
/// places them in f32 lanes (the sign in each lane's top byte), and each row takes
/// `acc += (x ^ sign) & nonzero` (`x`, `-x` or `+0`). Lane `j` of a channel's accumulator sums
/// the weights `k = 4 i + j` in increasing `k`, and the result per channel is
/// `(l0 + l1) + (l2 + l3)` (tests/jit.rs checks this order bit for bit).
fn emit_tile_f32(
    b: &mut FunctionBuilder<'_>,
    s: &GemmSpec,
    f: &Fields,
    xs: &[Value],
    row0: Value,
    channels: usize,
) -> Vec<Value> {
    let wrows = weight_rows(b, s, f, row0, channels);
    let mask = splat_i8(b, 3);
    let nrows = xs.len();
    let vconst = |b: &mut FunctionBuilder<'_>, bytes: [u8; 16]| {
        let c = b.func.dfg.constants.insert(bytes.to_vec().into());
        b.ins().vconst(I8X16, c)
    };
    // Tables indexed by the code w + 1, and per quad d the byte spreads (0x80: zero).
    let mut sign_table = [0u8; 16];
    sign_table[0] = 0x80;
    let mut nz_table = [0u8; 16];
    (nz_table[0], nz_table[2]) = (0xff, 0xff);
    let sign_table = vconst(b, sign_table);
    let nz_table = vconst(b, nz_table);
    let spreads: Vec<(Value, Value)> = (0..4u8)
        .map(|d| {
            let sign: [u8; 16] = std::array::from_fn(|i| if i % 4 == 3 { 4 * d + i as u8 / 4 } else { 0x80 });
            let nz: [u8; 16] = std::array::from_fn(|i| 4 * d + i as u8 / 4);
            (vconst(b, sign), vconst(b, nz))
        })
        .collect();
    let mut group = |b: &mut FunctionBuilder<'_>,
                     xbases: &[Value],
                     wbases: &[Value],
                     accs: &mut Vec<Value>,
                     first: usize,
                     nb: usize| {
        for u in first..first + nb {
            for q in 0..4 {
                let masks: Vec<(Value, Value)> = (0..channels)
                    .map(|c| {
                        let code = decode(b, wbases[c], u * pack::BLOCK_BYTES, q, mask);
                        (b.ins().x86_pshufb(sign_table, code), b.ins().x86_pshufb(nz_table, code))
                    })
                    .collect();
                for (d, (sp_sign, sp_nz)) in spreads.iter().enumerate() {
                    let off = (4 * (u * pack::BLOCK + 16 * q + 4 * d)) as i32;
                    let xv: Vec<Value> = xbases.iter().map(|xb| b.ins().load(I8X16, ro(), *xb, off)).collect();
                    for (c, (sign8, nz8)) in masks.iter().enumerate() {
                        let sign = b.ins().x86_pshufb(*sign8, *sp_sign);
                        let nz = b.ins().x86_pshufb(*nz8, *sp_nz);
                        for (r, x) in xv.iter().enumerate() {
                            let flipped = b.ins().bxor(*x, sign);
                            let v = b.ins().band(flipped, nz);
                            let v = b.ins().bitcast(F32X4, le(), v);
                            let a = &mut accs[c * nrows + r];
                            *a = b.ins().fadd(*a, v);
                        }
                    }
                }
            }
        }
    };
    let zero = zero_vec(b, F32X4);
    let accs = emit_blocks(
        b,
        s.blocks(),
        s.unroll,
        4 * pack::BLOCK,
        xs,
        &wrows,
        vec![zero; channels * nrows],
        F32X4,
        &mut group,
    );
    (0..nrows).map(|r| horizontal_sums(b, (0..channels).map(|c| accs[c * nrows + r]).collect(), F32X4)).collect()
}

/// The rows `r .. r + nrows` of the call: every tile in `[tile_begin, tile_end)`, full tiles in a
/// loop, then the partial last tile. Leaves the builder in a fresh block after the pass.
struct Call {
    x: Value,
    out: Value,
    residual: Value,
    xsum: Value,
    sx: Value,
    tile_begin: Value,
    tile_end: Value,
}

fn emit_pass(b: &mut FunctionBuilder<'_>, s: &GemmSpec, f: &Fields, call: &Call, r: Value, nrows: usize) {
    let k_pad = pack::padded_k(s.k) as i64;
    let rows: Vec<Row> = (0..nrows)
        .map(|i| {
            let ri = b.ins().iadd_imm_s(r, i as i64);
            let xo = b.ins().imul_imm_s(ri, k_pad * if s.f32_x { 4 } else { 1 });
            let oo = b.ins().imul_imm_s(ri, 4 * s.n as i64);
            let (xsum, sx) = if s.f32_x {
                (None, None)
            } else {
                let so = b.ins().imul_imm_s(ri, 4);
                let xsum_p = b.ins().iadd(call.xsum, so);
                let sx_p = b.ins().iadd(call.sx, so);
                (Some(b.ins().load(I32, ro(), xsum_p, 0)), Some(b.ins().load(F32, ro(), sx_p, 0)))
            };
            Row {
                x: b.ins().iadd(call.x, xo),
                out: b.ins().iadd(call.out, oo),
                residual: b.ins().iadd(call.residual, oo),
                xsum,
                sx,
            }
        })
        .collect();
    let xs: Vec<Value> = rows.iter().map(|row| row.x).collect();
    let full = (s.n / s.tile) as i64;
    let rem = s.n % s.tile;
    let full_v = b.ins().iconst(I64, full);
    let end_full = b.ins().umin(call.tile_end, full_v);
    let head = b.create_block();
    let body = b.create_block();
    let tail = b.create_block();
    let after = b.create_block();
    let t = b.append_block_param(head, I64);
    b.ins().jump(head, &[call.tile_begin.into()]);
    b.switch_to_block(head);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, t, end_full);
    b.ins().brif(more, body, &[], tail, &[]);
    b.switch_to_block(body);
    let row0 = b.ins().imul_imm_s(t, s.tile as i64);
    let tile = |b: &mut FunctionBuilder<'_>, row0: Value, channels: usize| {
        let sums = if s.f32_x {
            emit_tile_f32(b, s, f, &xs, row0, channels)
        } else if nrows == 1 {
            vec![emit_tile(b, s, f, xs[0], row0, channels)]
        } else {
            emit_tile_rows(b, s, f, &xs, row0, channels)
        };
        for (row, sum) in rows.iter().zip(sums) {
            emit_epilogue(b, s, f, row, row0, sum, channels);
        }
    };
    tile(b, row0, s.tile);
    let t1 = b.ins().iadd_imm_s(t, 1);
    b.ins().jump(head, &[t1.into()]);
    b.switch_to_block(tail);
    if rem > 0 {
        let partial = b.create_block();
        let wants = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, call.tile_end, full);
        b.ins().brif(wants, partial, &[], after, &[]);
        b.switch_to_block(partial);
        let row0 = b.ins().iconst(I64, full * s.tile as i64);
        tile(b, row0, rem);
    }
    b.ins().jump(after, &[]);
    b.switch_to_block(after);
}

/// Compiles a kernel; returns its machine code (code then constant pool, relocation-free).
pub fn compile(s: &GemmSpec) -> Result<Vec<u8>, CodegenError> {
    if s.n == 0 || s.k == 0 || !(1..=4).contains(&s.tile) || !(1..=4).contains(&s.rows) {
        return Err(CodegenError::Unsupported(format!("kernel shape {s:?}")));
    }
    let isa = super::isa::host()?;
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.push(AbiParam::new(ptr));
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let args = b.block_params(entry)[0];
    let o = GemmArgs::OFFSETS;
    let mut field = |i: usize| b.ins().load(I64, ro(), args, o[i]);
    let call = Call {
        x: field(0),
        out: field(6),
        residual: field(5),
        xsum: field(7),
        sx: field(8),
        tile_begin: field(10),
        tile_end: field(11),
    };
    let f = Fields { w: field(1), alpha: field(2), scale: field(3), bias: field(4) };
    let rows = field(9);
    let zero = b.ins().iconst(I64, 0);
    // Groups of `s.rows` rows, then single rows.
    let one_head = b.create_block();
    let r1 = b.append_block_param(one_head, I64);
    if s.rows > 1 {
        let grp_head = b.create_block();
        let grp_body = b.create_block();
        let r = b.append_block_param(grp_head, I64);
        b.ins().jump(grp_head, &[zero.into()]);
        b.switch_to_block(grp_head);
        let end = b.ins().iadd_imm_s(r, s.rows as i64);
        let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, rows);
        b.ins().brif(fits, grp_body, &[], one_head, &[r.into()]);
        b.switch_to_block(grp_body);
        emit_pass(&mut b, s, &f, &call, r, s.rows);
        b.ins().jump(grp_head, &[end.into()]);
    } else {
        b.ins().jump(one_head, &[zero.into()]);
    }
    let one_body = b.create_block();
    let exit = b.create_block();
    b.switch_to_block(one_head);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, r1, rows);
    b.ins().brif(more, one_body, &[], exit, &[]);
    b.switch_to_block(one_body);
    emit_pass(&mut b, s, &f, &call, r1, 1);
    let next = b.ins().iadd_imm_s(r1, 1);
    b.ins().jump(one_head, &[next.into()]);
    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());

    super::isa::compile_kernel(func, &*isa)
}
