//! Expressions: compile-time evaluation and the types of tensor expressions.

#[allow(unused_imports)]
use super::*;

impl<'p> Elab<'p> {
    pub(super) fn lookup(&self, id: InstId, locals: &[(String, Value)], name: &str) -> Option<Value> {
        if let Some((_, v)) = locals.iter().rev().find(|(n, _)| n == name) {
            return Some(v.clone());
        }
        self.insts[id].scope.get(name).cloned()
    }

    /// Evaluates a type expression; symbolic dimensions must already be bound in `env.locals`.
    /// `None` when it does not evaluate (unknown dtypes were reported by resolve).
    pub(super) fn type_expr(&mut self, ty: &'p ast::TypeExpr, env: &Env<'_>) -> Option<TensorType> {
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
                    self.report(wrong_kind("a dimension", "an int", &other, d.span));
                    return None;
                }
            }
        }
        Some(TensorType::new(dtype, shape))
    }

    pub(super) fn eval_args(&mut self, args: &'p [ast::Arg], env: &Env<'_>) -> Vec<ArgVal> {
        args.iter()
            .map(|a| ArgVal {
                name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                value: self.eval(&a.value, env),
                span: a.value.span,
            })
            .collect()
    }

    pub(super) fn eval(&mut self, e: &'p Expr, env: &Env<'_>) -> Value {
        match &e.kind {
            ExprKind::Int(v) => Value::Int(Dim::known(*v)),
            ExprKind::Float(v) => Value::Float(*v),
            ExprKind::Str(s) => Value::Str(Rc::from(s.as_str())),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Error => Value::Poison,
            ExprKind::Name(n) => match self.lookup(env.inst, env.locals, n) {
                Some(v) => v,
                None => {
                    if let Some(cond) = self.insts[env.inst].absent.get(n).copied() {
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
                    self.report(wrong_kind("an `if` condition", "a compile-time bool", &other, cond.span));
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
                    // `sqrt` of a compile-time number is a compile-time float (an attention
                    // layer's `1.0 / sqrt(head_dim)`).
                    if name == "sqrt"
                        && let [a] = args.as_slice()
                        && let Some(v) = match &a.value {
                            Value::Int(d) => d.as_known().map(|v| v as f64),
                            Value::Float(f) => Some(*f),
                            _ => None,
                        }
                    {
                        if v < 0.0 {
                            self.report(
                                Diag::error(Code::InvalidArgument, format!("`sqrt` of the negative number {v}"))
                                    .at(a.span, "negative"),
                            );
                            return Value::Poison;
                        }
                        return Value::Float(v.sqrt());
                    }
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
                if self.insts[env.inst].absent.contains_key(name) {
                    let cond = self.insts[env.inst].absent[name];
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

    pub(super) fn dim_error(&mut self, err: DimError, span: Span) -> Value {
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

    pub(super) fn binary(&mut self, op: BinOp, a: Value, b: Value, span: Span, a_span: Span, b_span: Span) -> Value {
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
                    Err(other) => {
                        // Broadcasting fails only with `Broadcast` today; any other reason is
                        // still reported, at the operator.
                        self.report(Diag::error(Code::BroadcastMismatch, other.to_string()).at(span, "here"));
                        Value::Poison
                    }
                }
            }
            _ => self.bad_operands(op, &a, &b, span),
        }
    }

    /// Adds a lowered op to the graph (scalar operands become `Const` nodes) and returns its
    /// tensor.
    pub(super) fn emit(&mut self, lowered: Lowered, span: Span) -> Value {
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

    pub(super) fn bad_operands(&mut self, op: BinOp, a: &Value, b: &Value, span: Span) -> Value {
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
