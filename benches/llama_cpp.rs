//! Side by side in one process: llama.cpp's TQ2_0 ternary matrix product against Triton's, one
//! thread: issue 4's GEMV (m=4096 k=14336), and BitNet b1.58 2B4T's four weight shapes (k x m:
//! 2560x2560 attention q/o, 2560x640 k/v, 2560x13824 the FFN's gate and up together, 6912x2560
//! down) at 1 token and at 128 tokens.
//!
//! Off by default (it builds llama.cpp with cmake and needs libclang for bindgen):
//! `apt-get install cmake libclang-dev`, then
//! `cargo bench --bench llama_cpp --features llama-cpp-bench`.
//!
//! - llama.cpp: the weights quantized with `ggml_quantize_chunk` to TQ2_0 (2.06 bits/weight),
//!   the activations with the CPU type traits' `from_float` to Q8_K (its `vec_dot_type`), then
//!   `vec_dot` per output row and token, in ggml's 16 x 16 blocks of rows and tokens: what
//!   `ggml_mul_mat` runs for TQ2_0 x Q8_K on one thread (TQ2_0 has no GEMM path).
//! - Triton: the same graph as `benches/jit.rs`'s `gemv` (int8 activations, tq2 weights, JIT
//!   kernel), compiled at -O3 and run on the calling thread.
//!
//! Both times include quantizing the activations. After criterion's report (issue 4's shape)
//! the bench prints, per shape and token count, the median of each over the same interleaved
//! runs, their ratio and, at 1 token, the weight bytes each streams per second.

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use llama_cpp_sys_2 as ll;

/// Issue 4's GEMV.
const M: usize = 4096;
const K: usize = 14336;

/// BitNet b1.58 2B4T's weight shapes, (k, m) = (inputs, outputs), and what they are.
const BITNET: [(usize, usize, &str); 4] =
    [(2560, 2560, "attn q/o"), (2560, 640, "attn k/v"), (2560, 13824, "ffn gate+up"), (6912, 2560, "ffn down")];

/// `struct ggml_type_traits_cpu` of ggml-cpu.h (not in the crate's bindings, which cover ggml.h).
#[repr(C)]
struct TypeTraitsCpu {
    from_float: Option<unsafe extern "C" fn(*const f32, *mut c_void, i64)>,
    vec_dot: Option<unsafe extern "C" fn(c_int, *mut f32, usize, *const c_void, usize, *const c_void, usize, c_int)>,
    vec_dot_type: ll::ggml_type,
    nrows: i64,
}

unsafe extern "C" {
    fn ggml_get_type_traits_cpu(t: ll::ggml_type) -> *const TypeTraitsCpu;
    fn ggml_cpu_init();
}

/// llama.cpp's TQ2_0 product of `m` rows over `k` inputs with `n` tokens, ready to run.
struct Tq2Gemv {
    m: usize,
    k: usize,
    n: usize,
    w: Vec<u8>,
    row_bytes: usize,
    xq: Vec<u8>,
    xq_bytes: usize,
    y: Vec<f32>,
    traits: &'static TypeTraitsCpu,
}

impl Tq2Gemv {
    fn new(w: &[f32], m: usize, k: usize, n: usize) -> Tq2Gemv {
        // SAFETY: plain C calls on buffers sized by ggml's own row-size function.
        unsafe {
            ggml_cpu_init();
            let ty = ll::GGML_TYPE_TQ2_0;
            let row_bytes = ll::ggml_row_size(ty, k as i64);
            let mut packed = vec![0u8; row_bytes * m];
            ll::ggml_quantize_chunk(
                ty,
                w.as_ptr(),
                packed.as_mut_ptr().cast(),
                0,
                m as i64,
                k as i64,
                std::ptr::null(),
            );
            let traits = &*ggml_get_type_traits_cpu(ty);
            let xq_bytes = ll::ggml_row_size(traits.vec_dot_type, k as i64);
            Tq2Gemv {
                m,
                k,
                n,
                w: packed,
                row_bytes,
                xq: vec![0u8; xq_bytes * n],
                xq_bytes,
                y: vec![0.0; m * n],
                traits,
            }
        }
    }

    /// `y[t, r] = w[r] . x[t]` for `x` of `n` rows of `k`.
    fn run(&mut self, x: &[f32]) -> &[f32] {
        let (from_float, vec_dot) =
            (self.traits.from_float.expect("from_float"), self.traits.vec_dot.expect("vec_dot"));
        let (m, k, n) = (self.m, self.k, self.n);
        // SAFETY: x has n rows of k values, xq room for n Q8_K rows of k, w m rows of
        // row_bytes, y n rows of m floats; every offset below stays within those.
        unsafe {
            for t in 0..n {
                from_float(x.as_ptr().add(t * k), self.xq.as_mut_ptr().add(t * self.xq_bytes).cast(), k as i64);
            }
            // ggml_compute_forward_mul_mat's blocking: 16 rows x 16 tokens at a time.
            for r0 in (0..m).step_by(16) {
                for t0 in (0..n).step_by(16) {
                    for t in t0..(t0 + 16).min(n) {
                        let xq = self.xq.as_ptr().add(t * self.xq_bytes);
                        for r in r0..(r0 + 16).min(m) {
                            let row = self.w.as_ptr().add(r * self.row_bytes);
                            vec_dot(k as c_int, self.y.as_mut_ptr().add(t * m + r), 0, row.cast(), 0, xq.cast(), 0, 1);
                        }
                    }
                }
            }
        }
        &self.y
    }
}

/// A ternary-looking weight (values in {-0.02, 0, 0.02}) so both quantizers keep the trits.
fn ternary_weight(m: usize, k: usize) -> Vec<f32> {
    (0..m * k).map(|i| [0.0, 0.02, -0.02][(i * 2_654_435_761) % 3]).collect()
}

/// Medians of `runs` interleaved runs of each: (llama.cpp, Triton) seconds.
fn interleaved(
    llama: &mut Tq2Gemv,
    model: &triton::runtime::Model,
    xa: &ndarray::ArrayD<f32>,
    runs: usize,
) -> (f64, f64) {
    let x: Vec<f32> = xa.iter().copied().collect();
    let xs = [xa.view()];
    let (mut tl, mut tt) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        black_box(llama.run(&x)[0]);
        tl.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(model.run(&xs).expect("runs"));
        tt.push(t.elapsed().as_secs_f64());
    }
    tl.sort_by(f64::total_cmp);
    tt.sort_by(f64::total_cmp);
    (tl[runs / 2], tt[runs / 2])
}

fn side_by_side(c: &mut Criterion) {
    let xa = common::input(&[1, K]);
    let x: Vec<f32> = xa.iter().copied().collect();
    let mut llama = Tq2Gemv::new(&ternary_weight(M, K), M, K, 1);
    let model = common::gemv_model(M, K);
    let xs = [xa.view()];

    let mut group = c.benchmark_group("tq2_gemv_side_by_side");
    group.throughput(Throughput::Elements((2 * M * K) as u64));
    group.sample_size(30);
    group.bench_function("llama_cpp_tq2_0", |b| b.iter(|| black_box(llama.run(black_box(&x))[0])));
    group.bench_function("triton_tq2", |b| b.iter(|| black_box(model.run(black_box(&xs)).expect("runs"))));
    group.finish();

    let gflops = |t: f64| 2.0 * (M * K) as f64 / t / 1e9;
    let (tl, tt) = interleaved(&mut llama, &model, &xa, 41);
    println!(
        "m={M} k={K}, median of 41 interleaved runs: llama.cpp TQ2_0 {:.3} ms ({:.1} GFLOPS), Triton {:.3} ms ({:.1} GFLOPS): Triton {:.2}x",
        tl * 1e3,
        gflops(tl),
        tt * 1e3,
        gflops(tt),
        tl / tt
    );
    drop(llama);

    // BitNet b1.58 2B4T's shapes at 1 and 128 tokens.
    println!("\nBitNet b1.58 2B4T shapes, one thread, medians of interleaved runs (GB/s: weight bytes per second)");
    println!(
        "| shape (k x m) | tokens | llama.cpp TQ2_0 ms | Triton ms | Triton vs TQ2_0 | TQ2_0 GB/s | Triton GB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (k, m, what) in BITNET {
        let model = common::gemv_model(m, k);
        let wf = ternary_weight(m, k);
        // Bytes each streams per product: TQ2_0 rows; Triton's packed weight (2 bits per trit).
        let tq2_bytes = {
            // SAFETY: a pure size computation.
            unsafe { ll::ggml_row_size(ll::GGML_TYPE_TQ2_0, k as i64) * m }
        };
        let triton_bytes = m * k / 4;
        for n in [1usize, 128] {
            let mut llama = Tq2Gemv::new(&wf, m, k, n);
            let xa = common::input(&[n, k]);
            let runs = if n == 1 { 41 } else { 11 };
            let (tl, tt) = interleaved(&mut llama, &model, &xa, runs);
            let gbs = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
            let (bl, bt) = if n == 1 {
                (format!("{:.1}", gbs(tq2_bytes, tl)), format!("{:.1}", gbs(triton_bytes, tt)))
            } else {
                ("-".into(), "-".into())
            };
            println!("| {k}x{m} ({what}) | {n} | {:.3} | {:.3} | {:.2}x | {bl} | {bt} |", tl * 1e3, tt * 1e3, tl / tt);
        }
    }
}

criterion_group!(benches, side_by_side);
criterion_main!(benches);
