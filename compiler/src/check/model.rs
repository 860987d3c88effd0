//! What checking produces for each model: its parameters, signature and statistics.

use triton_runtime::{DType, StorageSize};

pub use crate::ir::{Init, ParamInfo, QuantRule};

use super::value::TensorType;
use crate::ir::Graph;
use crate::ir::ParamKind;
use crate::source::{FileId, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct CheckedModel {
    pub name: String,
    pub file: FileId,
    pub span: Span,
    /// Layer instances that declare at least one weight or param.
    pub layers: usize,
    /// All layer instances, the model included.
    pub instances: usize,
    /// The model lowered to the graph IR: layers inlined, parameters as named inputs.
    pub graph: Graph,
}

impl CheckedModel {
    /// Every weight, param and buffer, in declaration order (the graph's parameter table).
    pub fn params(&self) -> &[ParamInfo] {
        &self.graph.params
    }

    /// The model's inputs: names and types, in order.
    pub fn inputs(&self) -> Vec<(&str, &TensorType)> {
        self.graph.inputs.iter().map(|(n, id)| (n.as_str(), &self.graph.nodes[*id].ty)).collect()
    }

    /// The type of the model's result.
    pub fn output(&self) -> &TensorType {
        &self.graph.nodes[self.graph.outputs[0]].ty
    }
}

/// Size figures for `triton check` and `triton bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Trainable elements (`weight` and `param`), as PyTorch counts parameters.
    pub parameters: u64,
    /// Elements of trit weights.
    pub ternary: u64,
    /// Elements of i8 weights.
    pub int8: u64,
    /// Elements of `buffer`s (e.g. batch-norm running statistics).
    pub buffers: u64,
    /// Every weight, param and buffer stored as f32.
    pub fp32_bytes: u64,
    /// The same, stored as compiled: trits at 5 per byte plus per-channel scales, i8 at one byte
    /// plus scales, the rest as f32.
    pub packed_bytes: u64,
}

impl ModelStats {
    pub fn of(model: &CheckedModel) -> ModelStats {
        let mut s = ModelStats::default();
        for p in model.params() {
            let n = p.elements();
            match p.kind {
                ParamKind::Buffer => s.buffers += n,
                ParamKind::Weight | ParamKind::Param => s.parameters += n,
            }
            match p.dtype {
                DType::Trit => s.ternary += n,
                DType::I8 => s.int8 += n,
                _ => {}
            }
            s.fp32_bytes += n * 4;
            s.packed_bytes += StorageSize::of(p.dtype, &p.shape).map_or(n * 4, StorageSize::total);
        }
        s
    }

    pub fn compression(&self) -> f64 {
        if self.packed_bytes == 0 { 1.0 } else { self.fp32_bytes as f64 / self.packed_bytes as f64 }
    }
}
