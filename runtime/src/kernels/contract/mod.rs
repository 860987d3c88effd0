//! Each kernel family's contract: the argument structs, tile constants and loops that its
//! dispatcher (`kernels::X`) and its per-ISA implementations (`avx2::X`, `avx512::X`) share.
//! Implementations import the contract, never their dispatcher, so the arrows run one way:
//! dispatcher -> implementation -> contract.

pub mod conv;
pub mod fconv;
pub mod tq2;
