//! Code generation: an optimized graph plus its weights become a runnable
//! [`triton_runtime::Model`]: packed weights, JIT kernels compiled with Cranelift, constants for
//! every parameter-only value, and the list of steps the runtime executes.
//!
//! Rules:
//! - The runtime never sees the IR: everything it needs is in `ModelParts`.
//! - Static values (parameters, constants, folded batch-norm vectors) are computed here, once,
//!   by the reference interpreter, so they are bit-identical to what it computes.
//! - Integer products (int8 activations x trit weights) run on JIT kernels when the kernel plan
//!   (or, below -O2, the same rule) chooses the `tq2` format; every other product runs on the
//!   f32 GEMM with codes as exact f32 values. An integer value (`i32`) is represented dequantized.
//! - What the backend cannot run yet is a [`CodegenError::Unsupported`] naming the op, never a
//!   wrong answer.

pub mod conv_direct;
pub mod isa;
mod layout;
pub mod lower;
pub mod ternary_gemm;

use std::fmt;

pub use lower::{CodegenReport, KernelSource, KindStats, compile_graph, compile_graph_quantized, compile_graph_with};

/// The version of the kernel generators and their ABIs: part of every cache key, so cached
/// machine code made by another generator is never used. Bump it whenever a generator's output
/// or an argument block (`triton_runtime::kernel`) changes.
pub const KERNELS_VERSION: u32 = 3;

/// A JIT kernel's specialization: what its machine code is compiled from (and cached by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelSpec {
    /// A ternary matrix product (`ternary_gemm`), ABI `kernel::GemmArgs`.
    Gemm(ternary_gemm::GemmSpec),
    /// A direct f32 convolution (`conv_direct`), ABI `kernel::ConvArgs`.
    Conv(conv_direct::ConvSpec),
}

impl KernelSpec {
    /// The kernel's relocation-free machine code.
    pub fn compile(&self) -> Result<Vec<u8>, CodegenError> {
        match self {
            KernelSpec::Gemm(s) => ternary_gemm::compile(s),
            KernelSpec::Conv(s) => conv_direct::compile(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CodegenError {
    /// The host ISA could not be built.
    Isa(String),
    /// Cranelift rejected a function (a compiler bug).
    Cranelift(String),
    /// The graph uses something the backend does not run yet.
    Unsupported(String),
    /// The weights do not fit the graph.
    Weights(String),
    /// A fact the verifier guarantees did not hold (a compiler bug).
    Internal(crate::invariant::Broken),
}

impl From<crate::invariant::Broken> for CodegenError {
    fn from(b: crate::invariant::Broken) -> Self {
        CodegenError::Internal(b)
    }
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::Isa(e) => write!(f, "cannot target this CPU: {e}"),
            CodegenError::Cranelift(e) => write!(f, "internal compiler error in code generation: {e}"),
            CodegenError::Unsupported(e) => write!(f, "not supported by the JIT backend yet: {e}"),
            CodegenError::Weights(e) => write!(f, "{e}"),
            CodegenError::Internal(b) => write!(f, "{b}"),
        }
    }
}

impl std::error::Error for CodegenError {}
