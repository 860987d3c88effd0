//! One file per command; `main.rs` only parses arguments and dispatches.

pub mod bench;
pub mod cache;
pub mod check;
pub mod common;
pub mod compile;
pub mod export;
pub mod import;
pub mod opts;
pub mod quantize;
pub mod run;
pub mod train;
