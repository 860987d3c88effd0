//! The graph IR that checking produces and every later phase consumes: the optimizer passes,
//! the reference interpreter, the trainer and the code generator.
//!
//! Layout: `entity` (typed arenas), `dim` and `types` (shapes), `op` (operations and their
//! type rules), `graph` (nodes, parameters, inputs, outputs), `verify`, and the text form
//! (`print`, `parse`); `specialize` binds symbolic sizes.

pub mod dim;
pub mod entity;
pub mod graph;
pub mod op;
pub mod parse;
pub mod print;
pub mod specialize;
pub mod types;
pub mod verify;

pub use dim::Dim;
pub use graph::{Graph, Init, Node, NodeId, ParamInfo, ParamKind, QuantRule};
pub use op::{BinaryOp, ConvAttrs, Fused, FusedBase, Op, OpError, PoolAttrs, UnaryOp};
pub use parse::{IrParseError, parse};
pub use types::TensorType;
pub use verify::{VerifyError, verify};
