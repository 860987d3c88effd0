//! What checking produces for each model: its parameters, signature and statistics.

use triton_runtime::{DType, StorageSize};

use super::value::TensorType;
use crate::source::{FileId, Span};
use crate::syntax::ast::DeclKind;

/// Ternary quantization rule of a trit weight, or the rule of an i8 weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantRule {
    /// BitNet b1.58: gamma = mean|W| per output channel, w = round(clip(W / gamma, -1, 1)).
    Absmean,
    /// Ternary weight networks: delta = 0.7 mean|W|, alpha = mean of |W| above delta.
    Twn,
    /// Int8 weights: scale = max|W| / 127 per output channel, w = round(W / scale).
    Absmax,
}

impl QuantRule {
    pub fn name(self) -> &'static str {
        match self {
            QuantRule::Absmean => "absmean",
            QuantRule::Twn => "twn",
            QuantRule::Absmax => "absmax",
        }
    }
}

/// Deterministic initialisation used when no weights file is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Kaiming-uniform over fan-in (dims after the first), as PyTorch initialises conv/linear.
    Kaiming,
    Zeros,
    Ones,
    Const(f64),
}

/// One named parameter of a model: a `weight`, `param` or `buffer` of some instance.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Dotted path, e.g. `layer1.0.conv1.w`: the name used in weights files and the IR.
    pub name: String,
    pub kind: DeclKind,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub quant: Option<QuantRule>,
    pub init: Init,
    pub span: Span,
}

impl ParamInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckedModel {
    pub name: String,
    pub file: FileId,
    pub span: Span,
    pub params: Vec<ParamInfo>,
    pub inputs: Vec<(String, TensorType)>,
    pub output: Option<TensorType>,
    /// Layer instances that declare at least one weight or param.
    pub layers: usize,
    /// All layer instances, the model included.
    pub instances: usize,
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
        for p in &model.params {
            let n = p.elements();
            match p.kind {
                DeclKind::Buffer => s.buffers += n,
                DeclKind::Weight | DeclKind::Param => s.parameters += n,
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
        if self.packed_bytes == 0 {
            1.0
        } else {
            self.fp32_bytes as f64 / self.packed_bytes as f64
        }
    }
}
