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

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use triton_runtime::DType;

use super::model::{CheckedModel, Init, ParamInfo, QuantRule};
use super::ops::{self, ArgVal, Lowered, Operand};
use super::resolve::{LayerRef, Scopes, is_symbol_name, layer_def};
use super::suggest::closest;
use super::value::{InstId, Tensor, TensorType, Value};
use crate::diagnostics::{Code, Diag, Diags};
use crate::ir::dim::{Dim, DimError};
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
    insts: Vec<Inst<'p>>,
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
            insts: Vec::new(),
            graph: Graph::default(),
            stack: Vec::new(),
            current: None,
            reported: HashSet::new(),
            limit_hit: false,
        }
    }

    fn report(&mut self, mut d: Diag) {
        let key = (d.code, d.message.clone(), d.primary_span());
        if !self.reported.insert(key) {
            return;
        }
        let at = self.current.or_else(|| self.stack.last().copied());
        if let Some(id) = at {
            let inst = &self.insts[id.0 as usize];
            if !inst.path.is_empty() && d.code != Code::RecursiveLayer {
                d = d.note(format!("in instance `{}` = {}", abbreviate(&inst.path), inst.display));
            }
            // An error inside another file's layer (the stdlib, say) also points at the line of
            // the model's file that instantiated it.
            if let (Some(primary), Some(root)) = (d.primary_span(), self.insts.first()) {
                let home = root.site.file;
                if primary.file != home {
                    let mut cur = Some(id);
                    while let Some(c) = cur {
                        let i = &self.insts[c.0 as usize];
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
        let def = layer_def(self.program, r);
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
        let inst = &self.insts[root.0 as usize];
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
        let layers = self.insts.iter().filter(|i| i.params > 0).count();
        Some(CheckedModel {
            name: def.name.name.clone(),
            file: self.program.module(r.module).file,
            span: def.name.span,
            layers,
            instances: self.insts.len(),
            graph: std::mem::take(&mut self.graph),
        })
    }

    fn unused_warnings(&mut self, root: InstId) {
        let mut out = Vec::new();
        for (i, inst) in self.insts.iter().enumerate() {
            let parent_called = inst.parent.is_none_or(|p| self.insts[p.0 as usize].called);
            if !inst.called
                && parent_called
                && InstId(i as u32) != root
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

    fn instantiate(
        &mut self,
        r: LayerRef,
        args: &[ArgVal],
        path: String,
        call: Span,
        field: Option<Span>,
    ) -> Option<Value> {
        if self.limit_hit {
            return None;
        }
        let def = layer_def(self.program, r);
        if self.stack.len() >= MAX_INSTANCE_DEPTH {
            self.limit_hit = true;
            let chain: Vec<String> = self.stack.iter().map(|i| self.insts[i.0 as usize].display.clone()).collect();
            let same = self.stack.iter().any(|i| self.insts[i.0 as usize].layer == r);
            let msg = if same {
                format!("layer `{}` contains itself: instantiation never ends", def.name.name)
            } else {
                format!("layer instances are nested more than {MAX_INSTANCE_DEPTH} deep")
            };
            self.report(
                Diag::error(Code::RecursiveLayer, msg)
                    .at(call, "instantiated here")
                    .note(format!("chain: {} -> ...", chain.iter().take(6).cloned().collect::<Vec<_>>().join(" -> "))),
            );
            return None;
        }
        if self.insts.len() >= MAX_INSTANCES {
            self.limit_hit = true;
            self.report(
                Diag::error(
                    Code::TooManyInstances,
                    format!(
                        "the model has more than {} layer instances",
                        crate::diagnostics::group_digits(MAX_INSTANCES as u64)
                    ),
                )
                .at(call, "the limit is reached here"),
            );
            return None;
        }
        let id = InstId(self.insts.len() as u32);
        let parent = self.stack.last().copied();
        self.insts.push(Inst {
            path,
            layer: r,
            display: def.name.name.clone(),
            field,
            site: call,
            scope: HashMap::new(),
            absent: HashMap::new(),
            forward: None,
            called: false,
            parent,
            params: 0,
        });
        self.stack.push(id);
        let ok = self.bind_layer_args(id, def, args, call);
        if ok {
            // Show the arguments as given, evaluated: `TernaryConv2d(64, 128, 3, stride = 2)`.
            let shown: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    None => short(&a.value),
                    Some((n, _)) => format!("{n} = {}", short(&a.value)),
                })
                .collect();
            self.insts[id.0 as usize].display = format!("{}({})", def.name.name, shown.join(", "));
            self.items(id, &def.body);
            let has_parse_errors = def.body.iter().any(|i| matches!(i, LayerItem::Error(_)));
            if self.insts[id.0 as usize].forward.is_none() && !self.limit_hit && !has_parse_errors {
                self.report(
                    Diag::error(Code::MissingForward, format!("layer `{}` has no `fn forward`", def.name.name))
                        .at(def.name.span, "defined without a forward function")
                        .help("add `fn forward(x: f32[B, N]) -> f32[B, M] { ... }`"),
                );
            }
        }
        self.stack.pop();
        Some(if ok { Value::Layer(id) } else { Value::Poison })
    }

    fn bind_layer_args(&mut self, id: InstId, def: &'p ast::LayerDef, args: &[ArgVal], call: Span) -> bool {
        let mut values: Vec<Option<(Value, Span)>> = vec![None; def.params.len()];
        let mut positional = 0;
        for a in args {
            let index = match &a.name {
                None => {
                    if positional >= def.params.len() {
                        self.report(
                            Diag::error(
                                Code::ArgumentCount,
                                format!(
                                    "`{}` takes {}, got {}",
                                    def.name.name,
                                    plural(def.params.len(), "argument"),
                                    args.len()
                                ),
                            )
                            .at(a.span, "extra argument")
                            .also(def.name.span, format!("`{}` is defined here", def.name.name))
                            .help(layer_signature(def)),
                        );
                        return false;
                    }
                    positional += 1;
                    positional - 1
                }
                Some((name, span)) => match def.params.iter().position(|p| p.name.name == *name) {
                    Some(i) => i,
                    None => {
                        let mut d = Diag::error(
                            Code::UnknownArgument,
                            format!("`{}` has no parameter `{name}`", def.name.name),
                        )
                        .at(*span, "unknown keyword argument")
                        .also(def.name.span, format!("`{}` is defined here", def.name.name));
                        d = match closest(name, def.params.iter().map(|p| p.name.name.as_str())) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => d.help(layer_signature(def)),
                        };
                        self.report(d);
                        return false;
                    }
                },
            };
            if values[index].is_some() {
                self.report(
                    Diag::error(
                        Code::DuplicateArgument,
                        format!("argument `{}` is given twice", def.params[index].name.name),
                    )
                    .at(a.span, "given again here"),
                );
                return false;
            }
            values[index] = Some((a.value.clone(), a.span));
        }
        for (i, p) in def.params.iter().enumerate() {
            let (value, span) = match values[i].take() {
                Some(v) => v,
                None => match &p.default {
                    Some(e) => (self.eval(e, &Env { inst: id, locals: &[] }), e.span),
                    None => {
                        let missing: Vec<&str> = def
                            .params
                            .iter()
                            .enumerate()
                            .filter(|(j, q)| *j >= i && q.default.is_none())
                            .map(|(_, q)| q.name.name.as_str())
                            .collect();
                        self.report(
                            Diag::error(
                                Code::ArgumentCount,
                                format!(
                                    "`{}` is missing {}: {}",
                                    def.name.name,
                                    plural(missing.len(), "argument"),
                                    missing.join(", ")
                                ),
                            )
                            .at(call, "not enough arguments")
                            .also(p.name.span, format!("`{}` has no default", p.name.name))
                            .help(layer_signature(def)),
                        );
                        return false;
                    }
                },
            };
            let coerced = match (p.ty.name.as_str(), value) {
                (_, Value::Poison) => Some(Value::Poison),
                ("int", Value::Int(d)) if d.is_known() => Some(Value::Int(d)),
                ("float", Value::Float(v)) => Some(Value::Float(v)),
                ("float", Value::Int(d)) if d.is_known() => d.as_known().map(|v| Value::Float(v as f64)),
                ("bool", Value::Bool(b)) => Some(Value::Bool(b)),
                ("str", Value::Str(s)) => Some(Value::Str(s)),
                (ty, v) if super::resolve::PARAM_TYPES.contains(&ty) => {
                    let symbolic = matches!(&v, Value::Int(d) if !d.is_known());
                    let mut d = Diag::error(
                        if symbolic { Code::NotCompileTime } else { Code::ArgumentKind },
                        format!(
                            "argument `{}` of `{}` must be {} {ty}, found {}",
                            p.name.name,
                            def.name.name,
                            article(ty),
                            v.describe()
                        ),
                    )
                    .at(span, format!("expected {} {ty}", article(ty)))
                    .also(p.ty.span, "parameter type declared here");
                    if symbolic {
                        d = d.help("layer arguments must be known at compile time; symbolic dimensions are only known at run time");
                    }
                    self.report(d);
                    Some(Value::Poison)
                }
                _ => Some(Value::Poison), // unknown type name: reported by resolve
            };
            if let Some(v) = coerced {
                self.insts[id.0 as usize].scope.insert(p.name.name.clone(), v);
            }
        }
        true
    }

    fn items(&mut self, id: InstId, items: &'p [LayerItem]) {
        for item in items {
            if self.limit_hit {
                return;
            }
            match item {
                LayerItem::Decl(d) => self.decl(id, d),
                LayerItem::Const { name, value } => {
                    let v = self.eval(value, &Env { inst: id, locals: &[] });
                    let v = match v {
                        Value::Tensor(_) | Value::Layer(_) | Value::Sequence(_) => {
                            self.report(
                                Diag::error(
                                    Code::NotCompileTime,
                                    format!("`const {}` must be a compile-time value, found {}", name.name, v.kind()),
                                )
                                .at(value.span, "not a compile-time value"),
                            );
                            Value::Poison
                        }
                        v => v,
                    };
                    self.insts[id.0 as usize].scope.insert(name.name.clone(), v);
                }
                LayerItem::Instance { name, value } => {
                    let v = self.instance_field(id, &name.name, name.span, value);
                    self.insts[id.0 as usize].scope.insert(name.name.clone(), v);
                }
                LayerItem::If(i) => {
                    let cond = self.eval(&i.cond, &Env { inst: id, locals: &[] });
                    let taken = match cond {
                        Value::Bool(b) => Some(b),
                        Value::Poison => None,
                        other => {
                            self.report(
                                Diag::error(
                                    Code::ArgumentKind,
                                    format!("an `if` condition must be a bool, found {}", other.describe()),
                                )
                                .at(i.cond.span, "not a bool"),
                            );
                            None
                        }
                    };
                    let (run, skip): (&'p [LayerItem], &'p [LayerItem]) = match taken {
                        Some(true) => (&i.then, &i.otherwise),
                        Some(false) => (&i.otherwise, &i.then),
                        None => (&[], &[]),
                    };
                    let mut absent = Vec::new();
                    collect_names(skip, &mut absent);
                    for n in absent {
                        self.insts[id.0 as usize].absent.entry(n).or_insert(i.cond.span);
                    }
                    self.items(id, run);
                }
                LayerItem::Fn(f) => {
                    if self.insts[id.0 as usize].forward.is_none() {
                        self.insts[id.0 as usize].forward = Some(f);
                    }
                }
                LayerItem::Error(_) => {}
            }
        }
    }

    fn decl(&mut self, id: InstId, d: &'p ast::Decl) {
        let env = Env { inst: id, locals: &[] };
        let dtype = match DType::from_name(&d.ty.dtype.name) {
            Some(t) => t,
            None => {
                // Unknown dtypes are reported by resolve, for every layer.
                self.insts[id.0 as usize].scope.insert(d.name.name.clone(), Value::Poison);
                return;
            }
        };
        let problem = match (d.kind, dtype) {
            (DeclKind::Param | DeclKind::Buffer, DType::F32) => None,
            (DeclKind::Param | DeclKind::Buffer, _) => Some(format!(
                "a `{}` must be f32; quantized tensors ({dtype}) are declared with `weight`",
                d.kind.keyword()
            )),
            (DeclKind::Weight, DType::I32) => {
                Some("i32 is the type of integer results, not of weights (use trit, i8 or f32)".to_string())
            }
            _ => None,
        };
        if let Some(msg) = problem {
            self.report(Diag::error(Code::InvalidDeclaration, msg).at(d.ty.dtype.span, "not allowed here"));
            self.insts[id.0 as usize].scope.insert(d.name.name.clone(), Value::Poison);
            return;
        }
        let Some(ty) = self.type_expr(&d.ty, &env) else {
            self.insts[id.0 as usize].scope.insert(d.name.name.clone(), Value::Poison);
            return;
        };
        let Some(shape) = ty.known_shape() else {
            let sym = ty.shape.iter().find(|x| !x.is_known()).map(|x| x.to_string()).unwrap_or_default();
            self.report(
                Diag::error(
                    Code::NotCompileTime,
                    format!("the shape of `{}` must be known at compile time, but it has `{sym}`", d.name.name),
                )
                .at(d.ty.span, "weights cannot have symbolic dimensions"),
            );
            self.insts[id.0 as usize].scope.insert(d.name.name.clone(), Value::Poison);
            return;
        };
        let elements = shape.iter().try_fold(1u64, |a, &x| a.checked_mul(x));
        if elements.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            self.report(
                Diag::error(
                    Code::SizeOverflow,
                    format!(
                        "`{}` would have {} elements; the limit is 2^36",
                        d.name.name,
                        elements.map_or("more than 2^64".into(), |n| n.to_string())
                    ),
                )
                .at(d.ty.span, format!("{ty}")),
            );
            self.insts[id.0 as usize].scope.insert(d.name.name.clone(), Value::Poison);
            return;
        }
        // Attributes.
        let mut quant = match dtype {
            DType::Trit => Some(QuantRule::Absmean),
            DType::I8 => Some(QuantRule::Absmax),
            _ => None,
        };
        let mut init = match d.kind {
            DeclKind::Weight => Init::Kaiming,
            _ => Init::Zeros,
        };
        for a in &d.attrs {
            let Some(name) = &a.name else {
                self.report(
                    Diag::error(Code::UnknownArgument, "declaration attributes are written `name = value`")
                        .at(a.value.span, "expected `quant = ...` or `init = ...`"),
                );
                continue;
            };
            let v = self.eval(&a.value, &env);
            match (name.name.as_str(), &v) {
                (_, Value::Poison) => {}
                ("quant", Value::Str(s)) => {
                    let rule = match (dtype, s.as_ref()) {
                        (DType::Trit, "absmean") => Some(QuantRule::Absmean),
                        (DType::Trit, "twn") => Some(QuantRule::Twn),
                        (DType::I8, "absmax") => Some(QuantRule::Absmax),
                        _ => None,
                    };
                    match rule {
                        Some(r) => quant = Some(r),
                        None => {
                            let valid = match dtype {
                                DType::Trit => "\"absmean\" or \"twn\"",
                                DType::I8 => "\"absmax\"",
                                _ => "nothing: only trit and i8 weights are quantized",
                            };
                            self.report(
                                Diag::error(
                                    Code::InvalidArgument,
                                    format!("unknown quantization rule \"{s}\" for a {dtype} weight"),
                                )
                                .at(a.value.span, format!("valid: {valid}")),
                            );
                        }
                    }
                }
                ("init", Value::Str(s)) => match s.as_ref() {
                    "kaiming" => init = Init::Kaiming,
                    "zeros" => init = Init::Zeros,
                    "ones" => init = Init::Ones,
                    other => self.report(
                        Diag::error(Code::InvalidArgument, format!("unknown initialiser \"{other}\""))
                            .at(a.value.span, "valid: \"kaiming\", \"zeros\", \"ones\" or a number"),
                    ),
                },
                ("init", Value::Float(x)) => init = Init::Const(*x),
                ("init", Value::Int(x)) if x.is_known() => init = Init::Const(x.as_known().unwrap_or(0) as f64),
                ("quant" | "init", other) => self.report(
                    Diag::error(
                        Code::ArgumentKind,
                        format!("attribute `{}` must be a string, found {}", name.name, other.describe()),
                    )
                    .at(a.value.span, "expected a string"),
                ),
                (other, _) => self.report(
                    Diag::error(Code::UnknownArgument, format!("unknown attribute `{other}`"))
                        .at(name.span, "declarations take `quant` and `init`"),
                ),
            }
        }
        let path = join_path(&self.insts[id.0 as usize].path, &d.name.name);
        let node =
            self.graph.add_param(ParamInfo { name: path, kind: d.kind, dtype, shape, quant, init, span: d.span });
        let inst = &mut self.insts[id.0 as usize];
        inst.params += 1;
        inst.scope.insert(d.name.name.clone(), Value::Tensor(Tensor { ty, decl: Some(d.span), node }));
    }

    fn instance_field(&mut self, id: InstId, name: &str, field: Span, value: &'p Expr) -> Value {
        let base = join_path(&self.insts[id.0 as usize].path, name);
        match &value.kind {
            ExprKind::Call { .. } => self.instance_call(id, value, base, field),
            ExprKind::Repeat { item, count } => {
                let n = match self.eval(count, &Env { inst: id, locals: &[] }) {
                    Value::Int(d) => match d.as_known() {
                        Some(n) if (0..=MAX_REPEAT).contains(&n) => n,
                        Some(n) => {
                            self.report(
                                Diag::error(Code::InvalidArgument, format!("repeat count {n} is out of range"))
                                    .at(count.span, format!("expected 0 to {MAX_REPEAT}")),
                            );
                            return Value::Poison;
                        }
                        None => {
                            self.report(
                                Diag::error(Code::NotCompileTime, "a repeat count must be known at compile time")
                                    .at(count.span, "symbolic"),
                            );
                            return Value::Poison;
                        }
                    },
                    Value::Poison => return Value::Poison,
                    other => {
                        self.report(
                            Diag::error(
                                Code::ArgumentKind,
                                format!("a repeat count must be an int, found {}", other.describe()),
                            )
                            .at(count.span, "not an int"),
                        );
                        return Value::Poison;
                    }
                };
                let mut ids = Vec::new();
                for i in 0..n {
                    match self.instance_call(id, item, format!("{base}.{i}"), field) {
                        Value::Layer(l) => ids.push(l),
                        _ => return Value::Poison,
                    }
                }
                Value::Sequence(ids)
            }
            ExprKind::List(items) => {
                let mut ids = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match self.instance_call(id, item, format!("{base}.{i}"), field) {
                        Value::Layer(l) => ids.push(l),
                        _ => return Value::Poison,
                    }
                }
                Value::Sequence(ids)
            }
            _ => Value::Poison, // reported by resolve
        }
    }

    fn instance_call(&mut self, id: InstId, e: &'p Expr, path: String, field: Span) -> Value {
        let ExprKind::Call { callee, args } = &e.kind else {
            return Value::Poison;
        };
        let module = self.insts[id.0 as usize].layer.module;
        let Some(r) = self.scopes.lookup(module, &callee.name) else {
            return Value::Poison;
        };
        let args = self.eval_args(args, &Env { inst: id, locals: &[] });
        self.instantiate(r, &args, path, e.span, Some(field)).unwrap_or(Value::Poison)
    }

    // ---------------------------------------------------------------- forward

    fn call_value(&mut self, callee: &Value, args: &[ArgVal], call: Span, name: &str) -> Value {
        match callee {
            Value::Layer(id) => self.call_instance(*id, args, call),
            Value::Sequence(ids) => {
                if args.len() != 1 || args[0].name.is_some() {
                    self.report(
                        Diag::error(
                            Code::ArgumentCount,
                            format!("`{name}` is a sequence of layers and takes exactly one input, got {}", args.len()),
                        )
                        .at(call, "a sequence passes one tensor from layer to layer"),
                    );
                    return Value::Poison;
                }
                let mut v = args[0].clone();
                for id in ids {
                    let out = self.call_instance(*id, std::slice::from_ref(&v), call);
                    if out == Value::Poison {
                        return Value::Poison;
                    }
                    v = ArgVal { name: None, value: out, span: call };
                }
                v.value
            }
            _ => Value::Poison,
        }
    }

    fn call_instance(&mut self, id: InstId, args: &[ArgVal], call: Span) -> Value {
        self.insts[id.0 as usize].called = true;
        let Some(f) = self.insts[id.0 as usize].forward else {
            return Value::Poison;
        };
        let layer_name = &layer_def(self.program, self.insts[id.0 as usize].layer).name.name;
        // How the callee is named in messages: the instance path, or the layer for a model.
        let who = match self.insts[id.0 as usize].path.as_str() {
            "" => format!("`{layer_name}`"),
            path => format!("`{path}` ({})", self.insts[id.0 as usize].display),
        };
        // Bind arguments to parameters.
        let mut bound: Vec<Option<&ArgVal>> = vec![None; f.params.len()];
        let mut positional = 0;
        for a in args {
            let index = match &a.name {
                None => {
                    if positional >= f.params.len() {
                        self.report(
                            Diag::error(
                                Code::ArgumentCount,
                                format!("`{layer_name}` takes {}, got {}", plural(f.params.len(), "input"), args.len()),
                            )
                            .at(a.span, "extra input")
                            .also(f.name.span, "forward is declared here"),
                        );
                        return Value::Poison;
                    }
                    positional += 1;
                    positional - 1
                }
                Some((n, span)) => match f.params.iter().position(|p| p.name.name == *n) {
                    Some(i) => i,
                    None => {
                        self.report(
                            Diag::error(Code::UnknownArgument, format!("`{layer_name}` has no input `{n}`"))
                                .at(*span, "unknown keyword argument")
                                .also(f.name.span, "forward is declared here"),
                        );
                        return Value::Poison;
                    }
                },
            };
            if bound[index].is_some() {
                self.report(
                    Diag::error(
                        Code::DuplicateArgument,
                        format!("input `{}` is given twice", f.params[index].name.name),
                    )
                    .at(a.span, "given again here"),
                );
                return Value::Poison;
            }
            bound[index] = Some(a);
        }
        if let Some(i) = bound.iter().position(Option::is_none) {
            self.report(
                Diag::error(
                    Code::ArgumentCount,
                    format!("`{layer_name}` takes {}, got {}", plural(f.params.len(), "input"), args.len()),
                )
                .at(call, format!("missing `{}`", f.params[i].name.name))
                .also(f.name.span, "forward is declared here"),
            );
            return Value::Poison;
        }
        let mut locals: Vec<(String, Value)> = Vec::new();
        let mut poisoned = false;
        let mut tensors = Vec::new();
        for (p, a) in f.params.iter().zip(bound.iter().flatten()) {
            match &a.value {
                Value::Tensor(t) => tensors.push((p, a, t.clone())),
                Value::Poison => poisoned = true,
                other => {
                    self.report(
                        Diag::error(
                            Code::ArgumentKind,
                            format!(
                                "input `{}` of `{layer_name}` must be a tensor, found {}",
                                p.name.name,
                                other.describe()
                            ),
                        )
                        .at(a.span, "not a tensor")
                        .also(p.ty.span, "declared here"),
                    );
                    poisoned = true;
                }
            }
        }
        if poisoned {
            return Value::Poison;
        }
        // Bind bare symbols first, then compare every dimension.
        for (p, _, t) in &tensors {
            if p.ty.dims.len() != t.ty.rank() {
                continue;
            }
            for (d, actual) in p.ty.dims.iter().zip(&t.ty.shape) {
                if let ExprKind::Name(n) = &d.kind
                    && is_symbol_name(n)
                    && self.lookup(id, &locals, n).is_none()
                {
                    locals.push((n.clone(), Value::Int(actual.clone())));
                }
            }
        }
        for (p, a, t) in &tensors {
            if !self.unify(id, &locals, &p.ty, &t.ty, a.span, &format!("{who} input `{}`", p.name.name)) {
                return Value::Poison;
            }
        }
        for (p, _, t) in tensors {
            locals.push((p.name.name.clone(), Value::Tensor(Tensor { ty: t.ty, decl: Some(p.ty.span), node: t.node })));
        }
        let saved = self.current.replace(id);
        let result = self.body(id, f, &mut locals, layer_name);
        self.current = saved;
        result
    }

    /// Checks that `actual` has the declared type; reports and returns false if not.
    fn unify(
        &mut self,
        id: InstId,
        locals: &[(String, Value)],
        declared: &'p ast::TypeExpr,
        actual: &TensorType,
        at: Span,
        what: &str,
    ) -> bool {
        let Some(expected) = self.type_expr(declared, &Env { inst: id, locals }) else {
            return false;
        };
        if expected.dtype != actual.dtype {
            let mut d = Diag::error(Code::DtypeMismatch, format!("{what} expects {expected}, got {actual}"))
                .at(at, format!("this is {}", actual.dtype))
                .also(declared.span, format!("declared as {}", self.program.sources.snippet(declared.span)));
            if actual.dtype == DType::I32 && expected.dtype == DType::F32 {
                d = d.help("convert integer results with `dequantize(...)`");
            }
            self.report(d);
            return false;
        }
        if expected.rank() != actual.rank() {
            self.report(
                Diag::error(
                    Code::RankMismatch,
                    format!("{what} expects {expected} ({} dimensions), got {actual}", expected.rank()),
                )
                .at(at, format!("this has {} dimensions", actual.rank()))
                .also(declared.span, format!("declared as {}", self.program.sources.snippet(declared.span))),
            );
            return false;
        }
        for (i, (e, a)) in expected.shape.iter().zip(&actual.shape).enumerate() {
            if e != a {
                self.report(
                    Diag::error(Code::ShapeMismatch, format!("{what} expects {expected}, got {actual}"))
                        .at(at, format!("dimension {i} is {a}, expected {e}"))
                        .also(declared.span, format!("declared as {}", self.program.sources.snippet(declared.span))),
                );
                return false;
            }
        }
        true
    }

    fn body(&mut self, id: InstId, f: &'p ast::FnDef, locals: &mut Vec<(String, Value)>, layer_name: &str) -> Value {
        let mut result: Option<(Value, Span)> = None;
        for s in &f.body {
            if let Some((_, ret_span)) = &result {
                if !matches!(s, Stmt::Error(_)) {
                    self.report(
                        Diag::error(Code::UnreachableCode, "statement after `return`")
                            .at(s.span(), "never runs")
                            .also(*ret_span, "the function returns here"),
                    );
                }
                break;
            }
            match s {
                Stmt::Let { name, ty, value, .. } => {
                    let v = self.eval(value, &Env { inst: id, locals });
                    if let (Some(ty), Value::Tensor(t)) = (ty, &v) {
                        for (d, actual) in ty.dims.iter().zip(&t.ty.shape) {
                            if let ExprKind::Name(n) = &d.kind
                                && is_symbol_name(n)
                                && self.lookup(id, locals, n).is_none()
                                && ty.dims.len() == t.ty.rank()
                            {
                                locals.push((n.clone(), Value::Int(actual.clone())));
                            }
                        }
                        let ty_copy = t.ty.clone();
                        self.unify(id, locals, ty, &ty_copy, value.span, &format!("`let {}`", name.name));
                    }
                    locals.push((name.name.clone(), v));
                }
                Stmt::Return { value, span } => {
                    let v = self.eval(value, &Env { inst: id, locals });
                    result = Some((v, *span));
                }
                Stmt::Error(_) => {}
            }
        }
        let Some((v, _)) = result else {
            self.report(
                Diag::error(Code::MissingReturn, format!("`forward` of `{layer_name}` has no `return`"))
                    .at(f.name.span, "this function never returns a value")
                    .help("end the function with `return <expression>`"),
            );
            return Value::Poison;
        };
        let t = match v {
            Value::Tensor(t) => t,
            Value::Poison => return Value::Poison,
            other => {
                let ret_span = f.body.iter().rev().find_map(|s| match s {
                    Stmt::Return { value, .. } => Some(value.span),
                    _ => None,
                });
                self.report(
                    Diag::error(
                        Code::ReturnMismatch,
                        format!("`forward` must return a tensor, found {}", other.describe()),
                    )
                    .at(ret_span.unwrap_or(f.name.span), "not a tensor"),
                );
                return Value::Poison;
            }
        };
        if f.ret.dtype.name.is_empty() {
            return Value::Tensor(Tensor { ty: t.ty, decl: None, node: t.node });
        }
        let ret_span = f
            .body
            .iter()
            .rev()
            .find_map(|s| match s {
                Stmt::Return { value, .. } => Some(value.span),
                _ => None,
            })
            .unwrap_or(f.name.span);
        // Symbols that only appear in the return type cannot be inferred.
        for d in &f.ret.dims {
            if let ExprKind::Name(n) = &d.kind
                && is_symbol_name(n)
                && self.lookup(id, locals, n).is_none()
            {
                self.report(
                    Diag::error(
                        Code::CannotInferDim,
                        format!("symbolic dimension `{n}` in the return type is not bound by any input"),
                    )
                    .at(d.span, "cannot be inferred")
                    .help("use it in an input's type, or write the dimension as an expression"),
                );
                return Value::Poison;
            }
        }
        let Some(declared) = self.type_expr(&f.ret, &Env { inst: id, locals }) else {
            return Value::Poison;
        };
        if declared != t.ty {
            self.report(
                Diag::error(
                    Code::ReturnMismatch,
                    format!("`forward` of `{layer_name}` returns {}, but its declared result is {declared}", t.ty),
                )
                .at(ret_span, format!("this is {}", t.ty))
                .also(f.ret.span, format!("declared as {}", self.program.sources.snippet(f.ret.span))),
            );
        }
        Value::Tensor(Tensor { ty: declared, decl: None, node: t.node })
    }

    // ---------------------------------------------------------------- expressions

    fn lookup(&self, id: InstId, locals: &[(String, Value)], name: &str) -> Option<Value> {
        if let Some((_, v)) = locals.iter().rev().find(|(n, _)| n == name) {
            return Some(v.clone());
        }
        self.insts[id.0 as usize].scope.get(name).cloned()
    }

    /// Evaluates a type expression; symbolic dimensions must already be bound in `env.locals`.
    /// `None` when it does not evaluate (unknown dtypes were reported by resolve).
    fn type_expr(&mut self, ty: &'p ast::TypeExpr, env: &Env<'_>) -> Option<TensorType> {
        let dtype = DType::from_name(&ty.dtype.name)?;
        let mut shape = Vec::with_capacity(ty.dims.len());
        for d in &ty.dims {
            match self.eval(d, env) {
                Value::Int(v) => {
                    if let Some(k) = v.as_known()
                        && k < 1
                    {
                        self.report(
                            Diag::error(
                                Code::InvalidDimension,
                                format!("dimension `{}` evaluates to {k}", self.program.sources.snippet(d.span)),
                            )
                            .at(d.span, "dimensions must be at least 1"),
                        );
                        return None;
                    }
                    shape.push(v)
                }
                Value::Poison => return None,
                other => {
                    self.report(
                        Diag::error(
                            Code::ArgumentKind,
                            format!("a dimension must be an int, found {}", other.describe()),
                        )
                        .at(d.span, "not an int"),
                    );
                    return None;
                }
            }
        }
        Some(TensorType::new(dtype, shape))
    }

    fn eval_args(&mut self, args: &'p [ast::Arg], env: &Env<'_>) -> Vec<ArgVal> {
        args.iter()
            .map(|a| ArgVal {
                name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                value: self.eval(&a.value, env),
                span: a.value.span,
            })
            .collect()
    }

    fn eval(&mut self, e: &'p Expr, env: &Env<'_>) -> Value {
        match &e.kind {
            ExprKind::Int(v) => Value::Int(Dim::known(*v)),
            ExprKind::Float(v) => Value::Float(*v),
            ExprKind::Str(s) => Value::Str(Rc::from(s.as_str())),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Error => Value::Poison,
            ExprKind::Name(n) => match self.lookup(env.inst, env.locals, n) {
                Some(v) => v,
                None => {
                    if let Some(cond) = self.insts[env.inst.0 as usize].absent.get(n).copied() {
                        self.report(
                            Diag::error(Code::ConditionalName, format!("`{n}` is not declared in this instance"))
                                .at(e.span, "used here")
                                .also(cond, "it is declared under this condition, which is false here")
                                .help("guard the use with the same condition: `if cond { ... } else { ... }`"),
                        );
                    }
                    Value::Poison
                }
            },
            ExprKind::List(items) => Value::List(items.iter().map(|i| self.eval(i, env)).collect()),
            ExprKind::Repeat { .. } => {
                self.report(
                    Diag::error(
                        Code::InvalidOperands,
                        "`[item; count]` declares a sequence of layers and is only allowed as a field value",
                    )
                    .at(e.span, "not allowed in an expression"),
                );
                Value::Poison
            }
            ExprKind::If { cond, then, otherwise } => match self.eval(cond, env) {
                Value::Bool(true) => self.eval(then, env),
                Value::Bool(false) => self.eval(otherwise, env),
                Value::Poison => Value::Poison,
                other => {
                    self.report(
                        Diag::error(
                            Code::ArgumentKind,
                            format!("an `if` condition must be a compile-time bool, found {}", other.describe()),
                        )
                        .at(cond.span, "not a bool"),
                    );
                    Value::Poison
                }
            },
            ExprKind::Unary { op, operand } => {
                let v = self.eval(operand, env);
                match (op, v) {
                    (_, Value::Poison) => Value::Poison,
                    (UnOp::Neg, Value::Int(d)) => match d.neg() {
                        Ok(d) => Value::Int(d),
                        Err(err) => self.dim_error(err, e.span),
                    },
                    (UnOp::Neg, Value::Float(v)) => Value::Float(-v),
                    (UnOp::Neg, Value::Tensor(t)) if t.ty.dtype == DType::F32 => self.emit(
                        Lowered { op: ir::Op::Unary(ir::UnaryOp::Neg), args: vec![Operand::Node(t.node)], ty: t.ty },
                        e.span,
                    ),
                    (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
                    (op, v) => {
                        let sym = if *op == UnOp::Neg { "-" } else { "!" };
                        self.report(
                            Diag::error(Code::InvalidOperands, format!("cannot apply `{sym}` to {}", v.describe()))
                                .at(e.span, "invalid operand"),
                        );
                        Value::Poison
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(lhs, env);
                let b = self.eval(rhs, env);
                self.binary(*op, a, b, e.span, lhs.span, rhs.span)
            }
            ExprKind::Call { callee, args } => {
                let name = callee.name.as_str();
                if let Some(v) = self.lookup(env.inst, env.locals, name) {
                    let args = self.eval_args(args, env);
                    return self.call_value(&v, &args, e.span, name);
                }
                if let Some(spec) = ops::spec(name) {
                    let args = self.eval_args(args, env);
                    return match ops::bind(spec, &args, e.span) {
                        Ok(None) => Value::Poison,
                        Ok(Some(bound)) => match ops::lower(spec.op, &bound) {
                            Ok(lowered) => self.emit(lowered, e.span),
                            Err(d) => {
                                self.report(d);
                                Value::Poison
                            }
                        },
                        Err(d) => {
                            self.report(d);
                            Value::Poison
                        }
                    };
                }
                if name == "min" || name == "max" {
                    let args = self.eval_args(args, env);
                    return self.min_max(name, &args, e.span);
                }
                if self.insts[env.inst.0 as usize].absent.contains_key(name) {
                    let cond = self.insts[env.inst.0 as usize].absent[name];
                    self.report(
                        Diag::error(
                            Code::ConditionalName,
                            format!("sub-layer `{name}` is not declared in this instance"),
                        )
                        .at(callee.span, "called here")
                        .also(cond, "it is declared under this condition, which is false here"),
                    );
                }
                Value::Poison
            }
        }
    }

    fn min_max(&mut self, name: &str, args: &[ArgVal], call: Span) -> Value {
        if args.len() < 2 || args.iter().any(|a| a.name.is_some()) {
            self.report(
                Diag::error(Code::ArgumentCount, format!("`{name}` takes two or more positional numbers"))
                    .at(call, "wrong arguments"),
            );
            return Value::Poison;
        }
        let mut ints = Vec::new();
        let mut floats = Vec::new();
        for a in args {
            match &a.value {
                Value::Int(d) => match d.as_known() {
                    Some(v) => {
                        ints.push(v);
                        floats.push(v as f64)
                    }
                    None => {
                        self.report(
                            Diag::error(Code::NotCompileTime, format!("`{name}` needs values known at compile time"))
                                .at(a.span, "symbolic"),
                        );
                        return Value::Poison;
                    }
                },
                Value::Float(v) => floats.push(*v),
                Value::Poison => return Value::Poison,
                other => {
                    self.report(
                        Diag::error(Code::ArgumentKind, format!("`{name}` takes numbers, found {}", other.describe()))
                            .at(a.span, "not a number"),
                    );
                    return Value::Poison;
                }
            }
        }
        if ints.len() == args.len() {
            let v = if name == "min" { ints.iter().min() } else { ints.iter().max() };
            return Value::Int(Dim::known(v.copied().unwrap_or(0)));
        }
        let v = floats.iter().copied().fold(if name == "min" { f64::INFINITY } else { f64::NEG_INFINITY }, |a, b| {
            if name == "min" { a.min(b) } else { a.max(b) }
        });
        Value::Float(v)
    }

    fn dim_error(&mut self, err: DimError, span: Span) -> Value {
        let d = match err {
            DimError::Overflow => {
                Diag::error(Code::SizeOverflow, "integer arithmetic overflows 64 bits").at(span, "overflows")
            }
            DimError::DivisionByZero => {
                Diag::error(Code::DivisionByZero, "division by zero").at(span, "the divisor is zero")
            }
        };
        self.report(d);
        Value::Poison
    }

    fn binary(&mut self, op: BinOp, a: Value, b: Value, span: Span, a_span: Span, b_span: Span) -> Value {
        use BinOp::*;
        match (&a, &b) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Int(x), Value::Int(y)) => {
                let r = match op {
                    Add => x.add(y),
                    Sub => x.sub(y),
                    Mul => x.mul(y),
                    Div => x.div(y),
                    Rem => x.rem(y),
                    Eq | Ne | Lt | Le | Gt | Ge => {
                        if matches!(op, Eq | Ne) && x == y {
                            return Value::Bool(op == Eq);
                        }
                        let (Some(p), Some(q)) = (x.as_known(), y.as_known()) else {
                            self.report(
                                Diag::error(
                                    Code::NotCompileTime,
                                    format!("cannot compare `{x}` and `{y}` at compile time"),
                                )
                                .at(span, "depends on a symbolic dimension"),
                            );
                            return Value::Poison;
                        };
                        return Value::Bool(match op {
                            Eq => p == q,
                            Ne => p != q,
                            Lt => p < q,
                            Le => p <= q,
                            Gt => p > q,
                            _ => p >= q,
                        });
                    }
                    And | Or => return self.bad_operands(op, &a, &b, span),
                };
                match r {
                    Ok(d) => Value::Int(d),
                    Err(err) => self.dim_error(err, span),
                }
            }
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                let (Some(x), Some(y)) = (as_f64(&a), as_f64(&b)) else {
                    self.report(
                        Diag::error(
                            Code::NotCompileTime,
                            "a symbolic dimension cannot be mixed with a float at compile time",
                        )
                        .at(span, "symbolic"),
                    );
                    return Value::Poison;
                };
                match op {
                    Add => Value::Float(x + y),
                    Sub => Value::Float(x - y),
                    Mul => Value::Float(x * y),
                    Div => Value::Float(x / y),
                    Rem => Value::Float(x % y),
                    Eq => Value::Bool(x == y),
                    Ne => Value::Bool(x != y),
                    Lt => Value::Bool(x < y),
                    Le => Value::Bool(x <= y),
                    Gt => Value::Bool(x > y),
                    Ge => Value::Bool(x >= y),
                    And | Or => self.bad_operands(op, &a, &b, span),
                }
            }
            (Value::Bool(x), Value::Bool(y)) => match op {
                And => Value::Bool(*x && *y),
                Or => Value::Bool(*x || *y),
                Eq => Value::Bool(x == y),
                Ne => Value::Bool(x != y),
                _ => self.bad_operands(op, &a, &b, span),
            },
            (Value::Str(x), Value::Str(y)) => match op {
                Eq => Value::Bool(x == y),
                Ne => Value::Bool(x != y),
                _ => self.bad_operands(op, &a, &b, span),
            },
            (Value::Tensor(_), _) | (_, Value::Tensor(_)) if matches!(op, Add | Sub | Mul | Div) => {
                let ty = |v: &Value| match v {
                    Value::Tensor(t) => Some(t.ty.clone()),
                    Value::Int(d) if d.is_known() => Some(TensorType::new(DType::F32, Vec::new())),
                    Value::Float(_) => Some(TensorType::new(DType::F32, Vec::new())),
                    _ => None,
                };
                let (Some(ta), Some(tb)) = (ty(&a), ty(&b)) else {
                    return self.bad_operands(op, &a, &b, span);
                };
                for (t, s) in [(&ta, a_span), (&tb, b_span)] {
                    if t.dtype != DType::F32 {
                        let mut d =
                            Diag::error(Code::DtypeMismatch, format!("`{}` needs f32 operands, got {t}", op.symbol()))
                                .at(s, format!("this is {}", t.dtype));
                        d = match t.dtype {
                            DType::Trit => d.help("trit tensors can only be the weight operand of matmul or conv2d"),
                            _ => d.help("convert integer results with `dequantize(...)` first"),
                        };
                        self.report(d);
                        return Value::Poison;
                    }
                }
                let operand = |v: &Value| match v {
                    Value::Tensor(t) => Operand::Node(t.node),
                    other => Operand::Scalar(as_f64(other).unwrap_or(0.0) as f32),
                };
                let binary = match op {
                    Add => ir::BinaryOp::Add,
                    Sub => ir::BinaryOp::Sub,
                    Mul => ir::BinaryOp::Mul,
                    _ => ir::BinaryOp::Div,
                };
                match ir::op::broadcast(&ta, &tb) {
                    Ok(ty) => self
                        .emit(Lowered { op: ir::Op::Binary(binary), args: vec![operand(&a), operand(&b)], ty }, span),
                    Err(ir::OpError::Broadcast { a: x, b: y, dim, x: dx, y: dy }) => {
                        self.report(ops::broadcast_diag(&x, &y, dim, &dx, &dy, span, a_span, b_span));
                        Value::Poison
                    }
                    Err(other) => unreachable!("broadcast only fails with Broadcast, got {other}"),
                }
            }
            _ => self.bad_operands(op, &a, &b, span),
        }
    }

    /// Adds a lowered op to the graph (scalar operands become `Const` nodes) and returns its
    /// tensor.
    fn emit(&mut self, lowered: Lowered, span: Span) -> Value {
        let args: Vec<NodeId> = lowered
            .args
            .iter()
            .map(|a| match *a {
                Operand::Node(n) => n,
                Operand::Scalar(value) => {
                    let ty = ir::TensorType::new(DType::F32, Vec::new());
                    self.graph.add_spanned(ir::Op::Const { value }, Vec::new(), ty, Some(span))
                }
            })
            .collect();
        let node = self.graph.add_spanned(lowered.op, args, lowered.ty.clone(), Some(span));
        Value::Tensor(Tensor { ty: lowered.ty, decl: None, node })
    }

    fn bad_operands(&mut self, op: BinOp, a: &Value, b: &Value, span: Span) -> Value {
        self.report(
            Diag::error(
                Code::InvalidOperands,
                format!("cannot apply `{}` to {} and {}", op.symbol(), a.describe(), b.describe()),
            )
            .at(span, "invalid operands"),
        );
        Value::Poison
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(d) => d.as_known().map(|x| x as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn article(ty: &str) -> &'static str {
    if ty == "int" { "an" } else { "a" }
}

fn short(v: &Value) -> String {
    match v {
        Value::Int(d) => d.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => format!("\"{s}\""),
        other => other.kind().to_string(),
    }
}

/// Shortens deep instance paths for messages: `a.b.….x.y.z`.
fn abbreviate(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() <= 6 {
        return path.to_string();
    }
    format!("{}.….{}", parts[..2].join("."), parts[parts.len() - 3..].join("."))
}

fn join_path(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_string() } else { format!("{base}.{name}") }
}

fn layer_signature(def: &ast::LayerDef) -> String {
    let ps: Vec<String> = def
        .params
        .iter()
        .map(|p| {
            if p.default.is_some() {
                format!("{}: {} = ...", p.name.name, p.ty.name)
            } else {
                format!("{}: {}", p.name.name, p.ty.name)
            }
        })
        .collect();
    format!("signature: {}({})", def.name.name, ps.join(", "))
}

fn collect_names(items: &[LayerItem], out: &mut Vec<String>) {
    for item in items {
        match item {
            LayerItem::Decl(d) => out.push(d.name.name.clone()),
            LayerItem::Const { name, .. } | LayerItem::Instance { name, .. } => out.push(name.name.clone()),
            LayerItem::If(i) => {
                collect_names(&i.then, out);
                collect_names(&i.otherwise, out);
            }
            LayerItem::Fn(_) | LayerItem::Error(_) => {}
        }
    }
}
