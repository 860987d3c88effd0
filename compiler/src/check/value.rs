//! Values the checker computes with: compile-time scalars, tensor types and layer instances.
//!
//! Rules: a run-time tensor is only ever known by its [`TensorType`]; everything else
//! (ints, floats, bools, strings, lists, layers) is a compile-time value. [`Value::Poison`] stands
//! for the result of an expression that already produced a diagnostic: every consumer accepts it
//! silently, so one mistake is reported once.

use std::rc::Rc;

pub use crate::ir::{Dim, TensorType};
use crate::source::Span;

/// A run-time tensor as the checker sees it: its type, and where that type was declared (a
/// weight declaration or a function parameter), for "declared here" labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub ty: TensorType,
    pub decl: Option<Span>,
    /// The IR node computing it.
    pub node: crate::ir::NodeId,
}

/// Names the layer instances of a model's elaboration (instances borrow the AST, so their
/// arena is keyed by this tag; see `ir::entity`).
#[derive(Clone, Copy, Debug)]
pub enum InstTag {}

/// A layer instance in a model's instance arena.
pub type InstId = crate::ir::entity::Id<InstTag>;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(Dim),
    Float(f64),
    Bool(bool),
    Str(Rc<str>),
    List(Vec<Value>),
    Tensor(Tensor),
    Layer(InstId),
    /// A sequence of layer instances applied one after another (`[Block(64, 64); 2]`).
    Sequence(Vec<InstId>),
    Poison,
}

impl Value {
    /// The kind of value, as named in messages ("expected an int, found a tensor").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(d) if d.is_known() => "an int",
            Value::Int(_) => "a symbolic int",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Tensor(_) => "a tensor",
            Value::Layer(_) | Value::Sequence(_) => "a layer",
            Value::Poison => "an invalid value",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Value::Int(d) => format!("int `{d}`"),
            Value::Float(v) => format!("float `{v}`"),
            Value::Bool(b) => format!("bool `{b}`"),
            Value::Str(s) => format!("string \"{s}\""),
            Value::List(v) => format!("a list of {} items", v.len()),
            Value::Tensor(t) => format!("tensor {}", t.ty),
            Value::Layer(_) | Value::Sequence(_) => "a layer".to_string(),
            Value::Poison => "an invalid value".to_string(),
        }
    }
}
