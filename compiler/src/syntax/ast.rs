//! The abstract syntax tree produced by the parser.
//!
//! Rules:
//! - The AST is what the user wrote, nothing resolved or evaluated; every node carries a
//!   [`Span`]. Names are plain strings; resolution happens in `check`.
//! - A construct that failed to parse becomes an `Error` node, so later phases can skip it
//!   without reporting follow-on errors.
//! - Expression trees are bounded in depth by the parser ([`MAX_EXPR_DEPTH`]), so recursive
//!   walks over them cannot overflow the stack.

use crate::source::{FileId, Span};

/// Deepest expression tree the parser builds (operators and calls included, not just brackets).
pub const MAX_EXPR_DEPTH: u32 = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub file: FileId,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Use(UseDecl),
    Layer(LayerDef),
    Error(Span),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `use std::nn::{TernaryLinear, Linear as Dense}`, `use blocks::Stem`, `use std::nn::*`.
#[derive(Clone, Debug, PartialEq)]
pub struct UseDecl {
    /// The module path, e.g. `std`, `nn`.
    pub path: Vec<Ident>,
    pub items: UseItems,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UseItems {
    Glob(Span),
    Names(Vec<UseName>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct UseName {
    pub name: Ident,
    pub alias: Option<Ident>,
}

impl UseName {
    /// The name the import is visible under.
    pub fn local(&self) -> &Ident {
        self.alias.as_ref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Layer,
    Model,
}

/// `layer Name(params) { items }` or `model Name { items }`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    pub kind: LayerKind,
    pub name: Ident,
    pub params: Vec<ParamDef>,
    pub body: Vec<LayerItem>,
    pub span: Span,
}

/// A compile-time parameter of a layer: `stride: int = 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub name: Ident,
    pub ty: Ident,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerItem {
    Decl(Decl),
    Const {
        name: Ident,
        value: Expr,
    },
    /// `require dim % heads == 0, "heads must divide dim"`: a condition on the layer's
    /// arguments, checked per instance (the message is the error).
    Require {
        cond: Expr,
        message: Expr,
        span: Span,
    },
    /// `fc1 = TernaryLinear(784, 256)`, `blocks = [BasicBlock(64, 64); 2]`.
    Instance {
        name: Ident,
        value: Expr,
    },
    If(IfItems),
    Fn(FnDef),
    Error(Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct IfItems {
    pub cond: Expr,
    pub then: Vec<LayerItem>,
    pub otherwise: Vec<LayerItem>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclKind {
    /// A large, possibly quantized tensor (the matrix of a linear layer, a conv kernel).
    Weight,
    /// A small trainable tensor (bias, batch-norm affine).
    Param,
    /// Non-trainable state (batch-norm running statistics).
    Buffer,
}

impl DeclKind {
    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Weight => "weight",
            DeclKind::Param => "param",
            DeclKind::Buffer => "buffer",
        }
    }
}

/// `weight w: trit[out_features, in_features] (quant = "twn")`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub kind: DeclKind,
    pub name: Ident,
    pub ty: TypeExpr,
    pub attrs: Vec<Arg>,
    pub span: Span,
}

/// `f32[B, in_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: Ident,
    pub dims: Vec<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<FnParam>,
    pub ret: TypeExpr,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnParam {
    pub name: Ident,
    pub ty: TypeExpr,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Let { name: Ident, ty: Option<TypeExpr>, value: Expr, span: Span },
    Return { value: Expr, span: Span },
    Error(Span),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Let { span, .. } | Stmt::Return { span, .. } | Stmt::Error(span) => *span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// Height of this expression tree (a leaf is 1).
    pub depth: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Name(String),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Unary {
        op: UnOp,
        operand: Box<Expr>,
    },
    /// `[a, b, c]`
    List(Vec<Expr>),
    /// `[item; count]`
    Repeat {
        item: Box<Expr>,
        count: Box<Expr>,
    },
    /// `if cond { a } else { b }` (the condition is evaluated at compile time)
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Error,
}

/// A call argument, positional (`name == None`) or keyword (`stride = 2`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Expr {
    pub fn leaf(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span, depth: 1 }
    }

    pub fn error(span: Span) -> Expr {
        Expr::leaf(ExprKind::Error, span)
    }
}
