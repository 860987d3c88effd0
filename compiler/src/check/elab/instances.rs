//! Instances: a layer tree instantiated from its arguments; declarations become parameters.

#[allow(unused_imports)]
use super::*;

impl<'p> Elab<'p> {
    pub(super) fn instantiate(
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
        let def = layer_def(self.program, r)?;
        if self.stack.len() >= MAX_INSTANCE_DEPTH {
            self.limit_hit = true;
            let chain: Vec<String> = self.stack.iter().map(|i| self.insts[*i].display.clone()).collect();
            let same = self.stack.iter().any(|i| self.insts[*i].layer == r);
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
        let id = self.insts.next_id();
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
            self.insts[id].display = format!("{}({})", def.name.name, shown.join(", "));
            self.items(id, &def.body);
            let has_parse_errors = def.body.iter().any(|i| matches!(i, LayerItem::Error(_)));
            if self.insts[id].forward.is_none() && !self.limit_hit && !has_parse_errors {
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

    pub(super) fn bind_layer_args(&mut self, id: InstId, def: &'p ast::LayerDef, args: &[ArgVal], call: Span) -> bool {
        let names: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let slots = match assign(&names, args) {
            Ok(slots) => slots,
            Err(m) => {
                let d = match m {
                    Misfit::Extra { arg } => Diag::error(
                        Code::ArgumentCount,
                        format!(
                            "`{}` takes {}, got {}",
                            def.name.name,
                            plural(def.params.len(), "argument"),
                            args.len()
                        ),
                    )
                    .at(arg.span, "extra argument")
                    .also(def.name.span, format!("`{}` is defined here", def.name.name))
                    .help(layer_signature(def)),
                    Misfit::Unknown { name, span } => {
                        let d = Diag::error(
                            Code::UnknownArgument,
                            format!("`{}` has no parameter `{name}`", def.name.name),
                        )
                        .at(span, "unknown keyword argument")
                        .also(def.name.span, format!("`{}` is defined here", def.name.name));
                        match closest(name, names.iter().copied()) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => d.help(layer_signature(def)),
                        }
                    }
                    Misfit::Twice { index, arg } => Diag::error(
                        Code::DuplicateArgument,
                        format!("argument `{}` is given twice", def.params[index].name.name),
                    )
                    .at(arg.span, "given again here"),
                };
                self.report(d);
                return false;
            }
        };
        let mut values: Vec<Option<(Value, Span)>> =
            slots.into_iter().map(|a| a.map(|a| (a.value.clone(), a.span))).collect();
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
                (ty, v) if crate::check::resolve::PARAM_TYPES.contains(&ty) => {
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
                self.insts[id].scope.insert(p.name.name.clone(), v);
            }
        }
        true
    }

    pub(super) fn items(&mut self, id: InstId, items: &'p [LayerItem]) {
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
                    self.insts[id].scope.insert(name.name.clone(), v);
                }
                LayerItem::Require { cond, message, span } => {
                    let env = Env { inst: id, locals: &[] };
                    match self.eval(cond, &env) {
                        Value::Bool(true) | Value::Poison => {}
                        Value::Bool(false) => {
                            let text = match self.eval(message, &env) {
                                Value::Str(s) => s.to_string(),
                                other => other.describe(),
                            };
                            let (site, display) = (self.insts[id].site, self.insts[id].display.clone());
                            self.report(
                                Diag::error(Code::RequirementFailed, format!("`{display}`: {text}"))
                                    .at(site, "these arguments")
                                    .also(*span, "the layer requires this"),
                            );
                        }
                        other => self.report(
                            Diag::error(
                                Code::ArgumentKind,
                                format!("a `require` condition must be a bool, found {}", other.describe()),
                            )
                            .at(cond.span, "not a bool"),
                        ),
                    }
                }
                LayerItem::Instance { name, value } => {
                    let v = self.instance_field(id, &name.name, name.span, value);
                    self.insts[id].scope.insert(name.name.clone(), v);
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
                        self.insts[id].absent.entry(n).or_insert(i.cond.span);
                    }
                    self.items(id, run);
                }
                LayerItem::Fn(f) => {
                    if self.insts[id].forward.is_none() {
                        self.insts[id].forward = Some(f);
                    }
                }
                LayerItem::Error(_) => {}
            }
        }
    }

    pub(super) fn decl(&mut self, id: InstId, d: &'p ast::Decl) {
        let env = Env { inst: id, locals: &[] };
        let dtype = match DType::from_name(&d.ty.dtype.name) {
            Some(t) => t,
            None => {
                // Unknown dtypes are reported by resolve, for every layer.
                self.insts[id].scope.insert(d.name.name.clone(), Value::Poison);
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
            self.insts[id].scope.insert(d.name.name.clone(), Value::Poison);
            return;
        }
        let Some(ty) = self.type_expr(&d.ty, &env) else {
            self.insts[id].scope.insert(d.name.name.clone(), Value::Poison);
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
            self.insts[id].scope.insert(d.name.name.clone(), Value::Poison);
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
            self.insts[id].scope.insert(d.name.name.clone(), Value::Poison);
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
                        (DType::Trit, "absmean_tensor") => Some(QuantRule::AbsmeanTensor),
                        (DType::Trit, "twn") => Some(QuantRule::Twn),
                        (DType::I8, "absmax") => Some(QuantRule::Absmax),
                        _ => None,
                    };
                    match rule {
                        Some(r) => quant = Some(r),
                        None => {
                            let valid = match dtype {
                                DType::Trit => "\"absmean\", \"absmean_tensor\" or \"twn\"",
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
        let path = join_path(&self.insts[id].path, &d.name.name);
        let node = self.graph.add_param(ParamInfo {
            name: path,
            kind: param_kind(d.kind),
            dtype,
            shape,
            quant,
            init,
            span: d.span,
        });
        let inst = &mut self.insts[id];
        inst.params += 1;
        inst.scope.insert(d.name.name.clone(), Value::Tensor(Tensor { ty, decl: Some(d.span), node }));
    }

    pub(super) fn instance_field(&mut self, id: InstId, name: &str, field: Span, value: &'p Expr) -> Value {
        let base = join_path(&self.insts[id].path, name);
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
                        self.report(wrong_kind("a repeat count", "an int", &other, count.span));
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

    pub(super) fn instance_call(&mut self, id: InstId, e: &'p Expr, path: String, field: Span) -> Value {
        let ExprKind::Call { callee, args } = &e.kind else {
            return Value::Poison;
        };
        let module = self.insts[id].layer.module;
        let Some(r) = self.scopes.lookup(module, &callee.name) else {
            return Value::Poison;
        };
        let args = self.eval_args(args, &Env { inst: id, locals: &[] });
        self.instantiate(r, &args, path, e.span, Some(field)).unwrap_or(Value::Poison)
    }

    // ---------------------------------------------------------------- forward
}
