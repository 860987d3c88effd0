//! Training support: reverse-mode differentiation of the IR and its evaluation.
//!
//! - [`backward`]: the gradient pass. From a forward graph it builds the backward graph: one
//!   vector-Jacobian product step per node whose value depends on a trained parameter, in
//!   reverse topological order, each naming the arguments it sends a gradient to.
//! - [`kernels`]: the f32 forward and backward kernels (products on the runtime's GEMM,
//!   convolutions as im2col + GEMM, pooling with recorded argmax, training-mode batch norm).
//! - [`exec`]: runs a graph forward in training or evaluation mode, keeping what the backward
//!   graph needs, then runs the backward graph to the gradients of every trained parameter.
//!
//! Rules:
//! - Training runs on the lowered, unoptimized graph (the one weights files are named after);
//!   fused ops, which only the optimizer makes, are rejected.
//! - Quantization is fake in training: a trit weight takes the value `alpha * codes` of its
//!   rule in the forward pass and passes its gradient straight through to the latent f32
//!   weight (the straight-through estimator); `quantize_i8` rounds activations per sample in
//!   the forward pass and is the identity backward.
//! - Every op's gradient is checked against central finite differences (tests/grad.rs).

pub mod backward;
pub mod exec;
pub mod kernels;

pub use backward::{Backward, GradError, Vjp, differentiate};
pub use exec::{
    Mode, Tape, backward_pass, effective_params, effective_values, forward, softmax_cross_entropy,
    softmax_cross_entropy_smoothed,
};
