//! Side by side in one process: llama.cpp's TQ2_0 ternary GEMV against Triton's, at issue 4's
//! shape m=4096 k=14336 n=1, one thread.
//!
//! Off by default (it builds llama.cpp with cmake and needs libclang for bindgen):
//! `apt-get install cmake libclang-dev`, then
//! `cargo bench --bench llama_cpp --features llama-cpp-bench`.
//!
//! - llama.cpp: the weights quantized with `ggml_quantize_chunk` to TQ2_0 (2.06 bits/weight),
//!   the activations with the CPU type traits' `from_float` to Q8_K (its `vec_dot_type`), then
//!   `vec_dot` per output row: what `ggml_mul_mat` runs for TQ2_0 x Q8_K on one thread.
//! - Triton: the same graph as `benches/jit.rs`'s `gemv` (int8 activations, tq2 weights, JIT
//!   kernel), compiled at -O3 and run on the calling thread.
//!
//! Both times include quantizing the activations. After criterion's report the bench prints
//! the median of each over the same interleaved runs and their ratio.

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use llama_cpp_sys_2 as ll;

const M: usize = 4096;
const K: usize = 14336;

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

/// llama.cpp's TQ2_0 GEMV, ready to run.
struct Tq2Gemv {
    w: Vec<u8>,
    row_bytes: usize,
    xq: Vec<u8>,
    y: Vec<f32>,
    traits: &'static TypeTraitsCpu,
}

impl Tq2Gemv {
    fn new(w: &[f32]) -> Tq2Gemv {
        // SAFETY: plain C calls on buffers sized by ggml's own row-size function.
        unsafe {
            ggml_cpu_init();
            let ty = ll::GGML_TYPE_TQ2_0;
            let row_bytes = ll::ggml_row_size(ty, K as i64);
            let mut packed = vec![0u8; row_bytes * M];
            ll::ggml_quantize_chunk(
                ty,
                w.as_ptr(),
                packed.as_mut_ptr().cast(),
                0,
                M as i64,
                K as i64,
                std::ptr::null(),
            );
            let traits = &*ggml_get_type_traits_cpu(ty);
            let xq = vec![0u8; ll::ggml_row_size(traits.vec_dot_type, K as i64)];
            Tq2Gemv { w: packed, row_bytes, xq, y: vec![0.0; M], traits }
        }
    }

    fn run(&mut self, x: &[f32]) -> &[f32] {
        let (from_float, vec_dot) =
            (self.traits.from_float.expect("from_float"), self.traits.vec_dot.expect("vec_dot"));
        // SAFETY: x has K values, xq room for one Q8_K row of K, w M rows of row_bytes, y M floats.
        unsafe {
            from_float(x.as_ptr(), self.xq.as_mut_ptr().cast(), K as i64);
            for (r, y) in self.y.iter_mut().enumerate() {
                let row = self.w.as_ptr().add(r * self.row_bytes);
                vec_dot(K as c_int, y, 0, row.cast(), 0, self.xq.as_ptr().cast(), 0, 1);
            }
        }
        &self.y
    }
}

fn side_by_side(c: &mut Criterion) {
    let xa = common::input(&[1, K]);
    let x: Vec<f32> = xa.iter().copied().collect();
    // A ternary-looking weight (values in {-0.02, 0, 0.02}) so both quantizers keep the trits.
    let wf: Vec<f32> = (0..M * K).map(|i| [0.0, 0.02, -0.02][(i * 2_654_435_761) % 3]).collect();
    let mut llama = Tq2Gemv::new(&wf);
    drop(wf);
    let model = common::gemv_model(M, K);
    let xs = [xa.view()];

    let mut group = c.benchmark_group("tq2_gemv_side_by_side");
    group.throughput(Throughput::Elements((2 * M * K) as u64));
    group.sample_size(30);
    group.bench_function("llama_cpp_tq2_0", |b| b.iter(|| black_box(llama.run(black_box(&x))[0])));
    group.bench_function("triton_tq2", |b| b.iter(|| black_box(model.run(black_box(&xs)).expect("runs"))));
    group.finish();

    // Interleaved runs, medians, one ratio.
    let (mut tl, mut tt) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        let t = Instant::now();
        black_box(llama.run(&x)[0]);
        tl.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(model.run(&xs).expect("runs"));
        tt.push(t.elapsed().as_secs_f64());
    }
    tl.sort_by(f64::total_cmp);
    tt.sort_by(f64::total_cmp);
    let gflops = |t: f64| 2.0 * (M * K) as f64 / t / 1e9;
    println!(
        "median of 41 interleaved runs: llama.cpp TQ2_0 {:.3} ms ({:.1} GFLOPS), Triton {:.3} ms ({:.1} GFLOPS): Triton {:.2}x",
        tl[20] * 1e3,
        gflops(tl[20]),
        tt[20] * 1e3,
        gflops(tt[20]),
        tl[20] / tt[20]
    );
}

criterion_group!(benches, side_by_side);
criterion_main!(benches);
