//! Compile a `.tri` model with the JIT and run it from Rust.
//!
//! `cargo run --release --example load_model [MODEL.tri]` (default: examples/mnist_mlp.tri)

use ndarray::{ArrayD, IxDyn};
use triton::compiler::passes::OptLevel;
use triton::{Options, compile_file};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "examples/mnist_mlp.tri".into());
    // The weights the command line would use: `<stem>.safetensors` beside the model, else
    // seeded initialisation (said, never silent).
    let weights = triton::weights::Choice::resolve(std::path::Path::new(&path), None, 0);
    eprintln!("{}", weights.line());
    // -O3: fused layers, int8 activations, packed ternary kernels.
    let opts = Options { opt: OptLevel::O3, threads: 1, weights: weights.path().map(Into::into), ..Options::default() };
    let model = compile_file(&path, &opts)?;
    let (name, shape) = &model.model().inputs()[0];
    println!(
        "{}: input `{name}` of shape {shape}, {} bytes of machine code",
        model.model().name(),
        model.model().code_bytes()
    );
    // Any batch size: here 4 samples.
    let dims = shape.eval(4);
    let n: usize = dims.iter().product();
    let x = ArrayD::from_shape_vec(IxDyn(&dims), (0..n).map(|i| (i % 255) as f32 / 255.0).collect())?;
    let y = model.run(&x.view())?;
    println!("output {:?}: {:.4}", y.shape(), y.index_axis(ndarray::Axis(0), 0));
    // A wrong shape is an error naming the expected one, never undefined behaviour.
    let bad = ArrayD::<f32>::zeros(IxDyn(&[4, 3]));
    if let Err(e) = model.run(&bad.view()) {
        println!("as expected: {e}");
    }
    Ok(())
}
