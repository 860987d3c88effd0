//! Numeric semantics shared by the runtime and the compiler's reference interpreter, so both
//! compute the very same thing: activations, arithmetic, int8 quantization, normalizations,
//! softmax, masks and position embeddings, slices, embeddings and reductions.
//!
//! Rules: each function here is the definition docs/language.md ("Numeric semantics") states;
//! the interpreter and the runtime call these, never a copy.
//!
//! One file per concern: [`elementwise`] (activations, arithmetic), [`quant`] (int8
//! activations), [`norm`] (layer and RMS normalization), [`sequence`] (softmax, causal mask,
//! RoPE), [`tensor`] (slice, embedding, reductions). Everything is re-exported here, so
//! callers name `ops::X`.

pub mod elementwise;
pub mod norm;
pub mod quant;
pub mod sequence;
pub mod tensor;

pub use elementwise::*;
pub use norm::*;
pub use quant::*;
pub use sequence::*;
pub use tensor::*;

pub(crate) use norm::SumTerm;
// The portable paths the vector kernels' tests compare against.
#[cfg(test)]
pub(crate) use norm::{scale_row_portable, striped_sum_portable};
#[cfg(test)]
pub(crate) use sequence::softmax_row_portable;
