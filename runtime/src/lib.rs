//! Triton runtime: loads and runs compiled Triton models.
//!
//! Rules: this crate depends on neither the compiler front end nor Cranelift, so a program that
//! only runs models links nothing of the compiler. Facts both sides must agree on (element types,
//! how many bytes a stored tensor takes, the packed weight layout, the kernel ABI, element-wise
//! semantics) live here and the compiler imports them.
//!
//! Modules: [`engine`] (a model's parts and how they run), [`kernels`] (microkernels per
//! instruction set), [`cpu`] (feature detection, the one place), [`artifact`] (files),
//! [`ops`] (element-wise and quantization semantics), [`pack`] (weight formats), [`kernel`]
//! (JIT kernel ABI and code memory).

pub mod aligned;
pub mod artifact;
pub mod cpu;
pub mod dtype;
pub mod engine;
pub mod kernel;
pub mod kernels;
pub mod ops;
pub mod pack;

pub use artifact::{LoadError, Meta};
pub use dtype::{DType, StorageSize};
pub use engine::{ADD_SUB_MAX_ROWS, Model, PartsError, RunError};
