//! Triton: a compiler for ternary neural networks.
//!
//! This facade re-exports the compiler ([`compiler`]) and the runtime ([`runtime`]) so programs
//! depend on one crate. Programs that only load compiled models depend on `triton-runtime`
//! alone.
//!
//! ```
//! let checked = triton::check_source("m.tri", "
//!     use std::nn::{TernaryLinear}
//!     model Tiny {
//!         fc = TernaryLinear(4, 2)
//!         fn forward(x: f32[B, 4]) -> f32[B, 2] { return fc(x) }
//!     }", None);
//! assert!(!checked.has_errors());
//! let stats = triton::ModelStats::of(&checked.models[0]);
//! assert_eq!(stats.parameters, 4 * 2 + 2);
//! assert_eq!(stats.ternary, 8);
//! ```

pub use triton_compiler as compiler;
pub use triton_compiler::{CheckedModel, ModelStats, check_file, check_source};
pub use triton_compiler::{driver, limits};
pub use triton_runtime as runtime;

mod compile;
pub use compile::{
    CompileError, CompiledModel, Options, compile_file, compile_model, pick_model, read_weights, sources_blake3,
    specialized,
};

pub mod artifact;
pub mod bench;
pub mod cache;
pub mod data;
pub mod files;
pub mod train;
pub mod weights;
pub use artifact::{Build, Summary, build_artifact};
pub use cache::Cache;
