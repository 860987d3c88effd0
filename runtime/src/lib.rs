//! Triton runtime: loads and runs compiled Triton models.
//!
//! Rules: this crate depends on neither the compiler front end nor Cranelift, so a program that
//! only runs models links nothing of the compiler. Facts both sides must agree on (element types,
//! how many bytes a stored tensor takes, the packed weight layout, the kernel ABI, element-wise
//! semantics) live here and the compiler imports them.

pub mod aligned;
pub mod artifact;
pub mod dtype;
pub mod kernel;
pub mod model;
pub mod ops;
pub mod pack;
pub mod sgemm;
pub mod wide;

pub use artifact::{LoadError, Meta};
pub use dtype::{DType, StorageSize};
pub use model::{ADD_SUB_MAX_ROWS, Model, PartsError, RunError};
