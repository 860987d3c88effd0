//! Elaboration: instantiate a model's layer tree and infer the type of every tensor.
//!
//! Rules:
//! - Layers are templates over compile-time arguments. Each sub-layer field creates an instance
//!   with concrete arguments; `if` items and `if` expressions pick one branch at compile time,
//!   and only the taken branch is checked (as `if constexpr`).
//! - A layer's `forward` is checked at every call, with the caller's argument types: symbolic
//!   dimensions in its signature (`B`, `H`) are bound from the arguments and must agree; the
//!   result must match the declared return type.
//! - Weight, param and buffer shapes must be fully known; only activations may carry symbolic
//!   dimensions.
//! - Work is bounded: instantiation depth, instance count and repeat counts have limits that
//!   produce diagnostics, so no input can make the checker run away.
//! - An error found inside an instance is reported once per source location (not once per
//!   instance), with a note naming the first instance path that hit it.

mod calls;
mod exprs;
mod instances;
mod wording;

use wording::*;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use triton_runtime::DType;

use super::args::{Misfit, assign};
use super::model::{CheckedModel, Init, ParamInfo, QuantRule};
use super::ops::{self, ArgVal, Lowered, Operand};
use super::resolve::{LayerRef, Scopes, is_symbol_name, layer_def};
use super::suggest::closest;
use super::value::{InstId, InstTag, Tensor, TensorType, Value};
use crate::diagnostics::{Code, Diag, Diags};
use crate::ir::dim::{Dim, DimError};
use crate::ir::entity::Arena;
use crate::ir::{self, Graph, NodeId};
use crate::load::Program;
use crate::source::Span;
use crate::syntax::ast::{self, BinOp, DeclKind, Expr, ExprKind, LayerItem, Stmt, UnOp};

/// Deepest chain of nested layer instances.
pub const MAX_INSTANCE_DEPTH: usize = 64;
/// Most layer instances in one model.
pub const MAX_INSTANCES: usize = 100_000;
/// Largest `[Layer(...); count]`.
pub const MAX_REPEAT: i64 = 4096;
/// Most elements in one weight, param or buffer (2^36, 64 Gi).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;

struct Inst<'p> {
    path: String,
    layer: LayerRef,
    /// How the instance was written, for notes: `TernaryLinear(784, 256)`.
    display: String,
    /// The field name that declared it (None for the model itself).
    field: Option<Span>,
    /// The expression that created it, e.g. `TernaryLinear(784, 256)`.
    site: Span,
    scope: HashMap<String, Value>,
    /// Names declared under an `if` whose condition was false: name -> the condition's span.
    absent: HashMap<String, Span>,
    forward: Option<&'p ast::FnDef>,
    called: bool,
    parent: Option<InstId>,
    params: usize,
}

pub(crate) struct Elab<'p> {
    program: &'p Program,
    scopes: &'p Scopes,
    diags: &'p mut Diags,
    insts: Arena<Inst<'p>, InstTag>,
    /// The model being lowered: parameters, inputs and every op applied.
    graph: Graph,
    /// The chain of instances being built.
    stack: Vec<InstId>,
    /// The instance whose forward is being checked (for notes).
    current: Option<InstId>,
    reported: HashSet<(Code, String, Option<Span>)>,
    limit_hit: bool,
}

/// Evaluation environment: an instance's scope plus function-local bindings.
struct Env<'a> {
    inst: InstId,
    locals: &'a [(String, Value)],
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

impl<'p> Elab<'p> {
    pub(crate) fn new(program: &'p Program, scopes: &'p Scopes, diags: &'p mut Diags) -> Elab<'p> {
        Elab {
            program,
            scopes,
            diags,
            insts: Arena::new(),
            graph: Graph::default(),
            stack: Vec::new(),
            current: None,
            reported: HashSet::new(),
            limit_hit: false,
        }
    }

    pub(super) fn report(&mut self, mut d: Diag) {
        let key = (d.code, d.message.clone(), d.primary_span());
        if !self.reported.insert(key) {
            return;
        }
        let at = self.current.or_else(|| self.stack.last().copied());
        if let Some(id) = at {
            let inst = &self.insts[id];
            if !inst.path.is_empty() && d.code != Code::RecursiveLayer {
                d = d.note(format!("in instance `{}` = {}", abbreviate(&inst.path), inst.display));
            }
            // An error inside another file's layer (the stdlib, say) also points at the line of
            // the model's file that instantiated it.
            if let (Some(primary), Some(root)) = (d.primary_span(), self.insts.values().next()) {
                let home = root.site.file;
                if primary.file != home {
                    let mut cur = Some(id);
                    while let Some(c) = cur {
                        let i = &self.insts[c];
                        if i.site.file == home && i.parent.is_some() {
                            d = d.also(i.site, format!("`{}` is instantiated here", abbreviate(&i.path)));
                            break;
                        }
                        cur = i.parent;
                    }
                }
            }
        }
        self.diags.push(d);
    }

    /// Checks one model definition end to end.
    pub(crate) fn model(mut self, r: LayerRef) -> Option<CheckedModel> {
        let def = layer_def(self.program, r)?;
        for p in &def.params {
            if p.default.is_none() {
                self.report(
                    Diag::error(
                        Code::ModelArguments,
                        format!("model `{}` has a parameter without a default: `{}`", def.name.name, p.name.name),
                    )
                    .at(p.name.span, "needs a default value")
                    .help(format!(
                        "give it one, e.g. `{}: {} = ...`; a model is compiled with its defaults",
                        p.name.name, p.ty.name
                    )),
                );
                return None;
            }
        }
        let errors_before = self.diags.error_count();
        self.graph.name = def.name.name.clone();
        let root = self.instantiate(r, &[], String::new(), def.name.span, None)?;
        let Value::Layer(root) = root else {
            return None;
        };
        let inst = &self.insts[root];
        let f = inst.forward?;
        // Fresh symbols for the model's inputs.
        let mut symbols: Vec<(String, Value)> = Vec::new();
        let mut args = Vec::new();
        for p in &f.params {
            for d in &p.ty.dims {
                if let ExprKind::Name(n) = &d.kind
                    && is_symbol_name(n)
                    && self.lookup(root, &[], n).is_none()
                    && !symbols.iter().any(|(s, _)| s == n)
                {
                    symbols.push((n.clone(), Value::Int(Dim::sym(n))));
                }
            }
            let ty = self.type_expr(&p.ty, &Env { inst: root, locals: &symbols })?;
            let node = self.graph.add_input(p.name.name.clone(), ty.clone());
            self.graph.spans.insert(node, p.ty.span);
            args.push(ArgVal {
                name: None,
                value: Value::Tensor(Tensor { ty, decl: Some(p.ty.span), node }),
                span: p.ty.span,
            });
        }
        let out = self.call_instance(root, &args, def.name.span);
        if self.diags.error_count() > errors_before {
            return None;
        }
        self.unused_warnings(root);
        // Without errors the body returned a tensor: it is the graph's output.
        let Value::Tensor(t) = out else { return None };
        self.graph.outputs.push(t.node);
        let layers = self.insts.values().filter(|i| i.params > 0).count();
        Some(CheckedModel {
            name: def.name.name.clone(),
            file: self.program.module(r.module).file,
            span: def.name.span,
            layers,
            instances: self.insts.len(),
            graph: std::mem::take(&mut self.graph),
        })
    }

    pub(super) fn unused_warnings(&mut self, root: InstId) {
        let mut out = Vec::new();
        for (i, inst) in self.insts.iter() {
            let parent_called = inst.parent.is_none_or(|p| self.insts[p].called);
            if !inst.called
                && parent_called
                && i != root
                && let Some(field) = inst.field
            {
                let own: u64 = self
                    .graph
                    .params
                    .iter()
                    .filter(|p| p.name.starts_with(&format!("{}.", inst.path)))
                    .map(|p| p.elements())
                    .sum();
                out.push(
                    Diag::warning(Code::UnusedLayer, format!("sub-layer `{}` is never called", inst.path))
                        .at(field, format!("declared here; its {own} parameters are unused")),
                );
            }
        }
        for d in out {
            self.report(d);
        }
    }

    // ---------------------------------------------------------------- instantiation
}
