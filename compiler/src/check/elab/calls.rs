//! Calls: a layer instance or op called with argument types; `forward` bodies checked per call.

#[allow(unused_imports)]
use super::*;

impl<'p> Elab<'p> {
    pub(super) fn call_value(&mut self, callee: &Value, args: &[ArgVal], call: Span, name: &str) -> Value {
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

    pub(super) fn call_instance(&mut self, id: InstId, args: &[ArgVal], call: Span) -> Value {
        self.insts[id].called = true;
        let Some(f) = self.insts[id].forward else {
            return Value::Poison;
        };
        let Some(def) = layer_def(self.program, self.insts[id].layer) else {
            return Value::Poison;
        };
        let layer_name = &def.name.name;
        // How the callee is named in messages: the instance path, or the layer for a model.
        let who = match self.insts[id].path.as_str() {
            "" => format!("`{layer_name}`"),
            path => format!("`{path}` ({})", self.insts[id].display),
        };
        // Bind arguments to parameters.
        let names: Vec<&str> = f.params.iter().map(|p| p.name.name.as_str()).collect();
        let bound = match assign(&names, args) {
            Ok(bound) => bound,
            Err(m) => {
                self.report(match m {
                    Misfit::Extra { arg } => Diag::error(
                        Code::ArgumentCount,
                        format!("`{layer_name}` takes {}, got {}", plural(f.params.len(), "input"), args.len()),
                    )
                    .at(arg.span, "extra input")
                    .also(f.name.span, "forward is declared here"),
                    Misfit::Unknown { name, span } => {
                        Diag::error(Code::UnknownArgument, format!("`{layer_name}` has no input `{name}`"))
                            .at(span, "unknown keyword argument")
                            .also(f.name.span, "forward is declared here")
                    }
                    Misfit::Twice { index, arg } => Diag::error(
                        Code::DuplicateArgument,
                        format!("input `{}` is given twice", f.params[index].name.name),
                    )
                    .at(arg.span, "given again here"),
                });
                return Value::Poison;
            }
        };
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
    pub(super) fn unify(
        &mut self,
        id: InstId,
        locals: &[(String, Value)],
        declared: &'p ast::TypeExpr,
        actual: &TensorType,
        at: Span,
        what: &str,
    ) -> bool {
        // A rank mismatch first: its symbolic dimensions were never bound, so the declared type
        // cannot be evaluated (and would fail without a word).
        if declared.dims.len() != actual.rank() {
            let text = self.program.sources.snippet(declared.span);
            self.report(
                Diag::error(
                    Code::RankMismatch,
                    format!("{what} expects {text} ({} dimensions), got {actual}", declared.dims.len()),
                )
                .at(at, format!("this has {} dimensions", actual.rank()))
                .also(declared.span, format!("declared as {text}")),
            );
            return false;
        }
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

    pub(super) fn body(
        &mut self,
        id: InstId,
        f: &'p ast::FnDef,
        locals: &mut Vec<(String, Value)>,
        layer_name: &str,
    ) -> Value {
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

    pub(super) fn min_max(&mut self, name: &str, args: &[ArgVal], call: Span) -> Value {
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
}
