//! The parser pass: tokens to an AST, with error recovery and errors described in words.
//!
//! Rules:
//! - The grammar (`grammar.lalrpop`) is generated into an LR(1) table parser by `build.rs`, so
//!   parsing uses an explicit stack and cannot overflow the native one.
//! - Parse errors never abort the file early when recovery is possible: each bad item,
//!   layer item or statement becomes an `Error` node and a diagnostic, and parsing continues.
//! - Messages name tokens the way a person would ("expected `)` or `,`, found identifier `x`"),
//!   never by internal terminal ids.

use lalrpop_util::{ErrorRecovery, ParseError};

use super::ast::*;
use super::lexer;
use super::token::{LexError, Tok};
use crate::diagnostics::{Code, Diag, Diags};
use crate::source::{FileId, Span};

#[allow(clippy::all, clippy::unwrap_used, unused_parens, dead_code, missing_debug_implementations)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/syntax/grammar.rs"));
}

/// Parser state shared with grammar actions.
#[derive(Debug)]
pub struct Ctx {
    file: FileId,
    text_len: usize,
    diags: Vec<Diag>,
    depth_reported: bool,
}

/// One segment after `::` in a `use` path.
#[derive(Debug)]
pub enum UseSeg {
    Name(UseName),
    Group(Vec<UseName>),
    Glob(Span),
}

impl Ctx {
    pub fn span(&self, lo: usize, hi: usize) -> Span {
        Span::new(self.file, lo, hi)
    }

    pub fn recovered<'s>(&mut self, e: ErrorRecovery<usize, Tok<'s>, LexError>) {
        let d = self.parse_error(e.error);
        self.diags.push(d);
    }

    fn parse_error(&self, e: ParseError<usize, Tok<'_>, LexError>) -> Diag {
        match e {
            ParseError::UnrecognizedEof { location, expected } => {
                let at = self.span(location.min(self.text_len), location.min(self.text_len));
                Diag::error(
                    Code::UnexpectedEof,
                    format!("unexpected end of file; expected {}", describe_expected(&expected)),
                )
                .at(at, "the file ends here")
            }
            ParseError::UnrecognizedToken { token: (lo, tok, hi), expected } => {
                let found = tok.describe();
                let mut d = Diag::error(
                    Code::UnexpectedToken,
                    format!("expected {}, found {found}", describe_expected(&expected)),
                )
                .at(self.span(lo, hi), format!("unexpected {found}"));
                if let Some(h) = hint(&tok, &expected) {
                    d = d.help(h);
                }
                d
            }
            ParseError::ExtraToken { token: (lo, tok, hi) } => {
                Diag::error(Code::UnexpectedToken, format!("unexpected {}", tok.describe()))
                    .at(self.span(lo, hi), "not expected here")
            }
            ParseError::InvalidToken { location } => {
                Diag::error(Code::InvalidCharacter, "invalid token").at(self.span(location, location + 1), "here")
            }
            ParseError::User { error } => Diag::error(Code::InvalidCharacter, format!("invalid token: {error:?}")),
        }
    }

    /// Builds a node whose children are given, enforcing [`MAX_EXPR_DEPTH`].
    fn node(&mut self, kind: ExprKind, children_depth: u32, span: Span) -> Expr {
        let depth = children_depth + 1;
        if depth > MAX_EXPR_DEPTH {
            if !self.depth_reported {
                self.depth_reported = true;
                self.diags.push(
                    Diag::error(
                        Code::NestingTooDeep,
                        format!("expression is nested more than {MAX_EXPR_DEPTH} levels deep"),
                    )
                    .at(span, "this expression is too deep")
                    .help("split it with `let` bindings"),
                );
            }
            return Expr::error(span);
        }
        Expr { kind, span, depth }
    }

    pub fn binary(&mut self, op: BinOp, lhs: Expr, rhs: Expr, span: Span) -> Expr {
        if lhs.kind == ExprKind::Error || rhs.kind == ExprKind::Error {
            return Expr::error(span);
        }
        let d = lhs.depth.max(rhs.depth);
        self.node(ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, d, span)
    }

    pub fn unary(&mut self, op: UnOp, operand: Expr, span: Span) -> Expr {
        if operand.kind == ExprKind::Error {
            return Expr::error(span);
        }
        let d = operand.depth;
        self.node(ExprKind::Unary { op, operand: Box::new(operand) }, d, span)
    }

    /// A string literal (`text` is between the quotes at `lo..hi`), with its escapes decoded.
    pub fn string(&mut self, text: &str, lo: usize, hi: usize) -> Expr {
        match super::unescape::unescape(text) {
            Ok(s) => Expr::leaf(ExprKind::Str(s), self.span(lo, hi)),
            Err((at, why)) => {
                let start = lo + 1 + at;
                let end = (start + 2).min(hi);
                self.diags.push(
                    Diag::error(Code::InvalidEscape, format!("invalid string: {why}"))
                        .at(self.span(start, end), "here")
                        .help(r#"escapes are \\, \", \n, \t, \r, \0 and \u{HEX}"#),
                );
                Expr::error(self.span(lo, hi))
            }
        }
    }

    pub fn call(&mut self, callee: Ident, args: Vec<Arg>, span: Span) -> Expr {
        let d = args.iter().map(|a| a.value.depth).max().unwrap_or(0);
        self.node(ExprKind::Call { callee, args }, d, span)
    }

    pub fn list(&mut self, items: Vec<Expr>, span: Span) -> Expr {
        let d = items.iter().map(|e| e.depth).max().unwrap_or(0);
        self.node(ExprKind::List(items), d, span)
    }

    pub fn repeat(&mut self, item: Expr, count: Expr, span: Span) -> Expr {
        let d = item.depth.max(count.depth);
        self.node(ExprKind::Repeat { item: Box::new(item), count: Box::new(count) }, d, span)
    }

    pub fn if_expr(&mut self, cond: Expr, then: Expr, otherwise: Expr, span: Span) -> Expr {
        let d = cond.depth.max(then.depth).max(otherwise.depth);
        self.node(ExprKind::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) }, d, span)
    }

    pub fn fn_def(
        &mut self,
        name: Ident,
        params: Vec<FnParam>,
        ret: Option<TypeExpr>,
        body: Vec<Stmt>,
        span: Span,
    ) -> FnDef {
        let ret = ret.unwrap_or_else(|| TypeExpr {
            // No declared result: the checker infers it. Marked by an empty dtype name.
            dtype: Ident { name: String::new(), span: name.span },
            dims: Vec::new(),
            span: name.span,
        });
        FnDef { name, params, ret, body, span }
    }

    pub fn use_decl(&mut self, head: Ident, segs: Vec<UseSeg>, span: Span) -> UseDecl {
        let mut path = vec![head];
        let n = segs.len();
        let errors_before = self.diags.len();
        let mut items = UseItems::Names(Vec::new());
        for (i, seg) in segs.into_iter().enumerate() {
            let last = i + 1 == n;
            match seg {
                UseSeg::Name(u) if last => items = UseItems::Names(vec![u]),
                UseSeg::Name(u) => {
                    if let Some(alias) = &u.alias {
                        self.diags.push(
                            Diag::error(Code::InvalidUse, "only the last name of a `use` path can be renamed")
                                .at(alias.span, "this rename is not at the end of the path"),
                        );
                    }
                    path.push(u.name);
                }
                UseSeg::Group(names) if last => items = UseItems::Names(names),
                UseSeg::Glob(s) if last => items = UseItems::Glob(s),
                UseSeg::Group(_) | UseSeg::Glob(_) => {
                    self.diags.push(
                        Diag::error(Code::InvalidUse, "`{...}` and `*` may only end a `use` path")
                            .at(span, "this path continues after a group or `*`"),
                    );
                }
            }
        }
        if matches!(&items, UseItems::Names(v) if v.is_empty()) && n > 0 {
            self.diags.push(Diag::error(Code::InvalidUse, "this `use` imports nothing").at(span, "empty import list"));
        }
        if self.diags.len() > errors_before {
            // Reported; an empty path makes the loader skip it.
            path.clear();
        }
        UseDecl { path, items, span }
    }
}

/// Turns lalrpop's expected-terminal list into words.
fn describe_expected(expected: &[String]) -> String {
    let names: Vec<&str> = expected.iter().map(|s| s.trim_matches('"')).collect();
    let has = |t: &str| names.contains(&t);
    let mut words: Vec<String> = Vec::new();
    let expression = has("integer") && has("identifier") && has("(") && has("[");
    const OPERATORS: &[&str] = &["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||"];
    let operators = names.iter().filter(|n| OPERATORS.contains(n)).count() >= 3;
    for &t in &names {
        let w = match t {
            t if operators && OPERATORS.contains(&t) => "an operator".to_string(),
            // Stands for a literal the lexer already rejected; never worth suggesting.
            "invalid literal" => continue,
            "identifier" if expression => continue,
            "integer" | "number" | "string" | "(" | "[" | "-" | "!" | "true" | "false" | "if" if expression => {
                continue;
            }
            "identifier" => "a name".to_string(),
            "integer" => "an integer".to_string(),
            "number" => "a number".to_string(),
            "string" => "a string".to_string(),
            other => format!("`{other}`"),
        };
        if !words.contains(&w) {
            words.push(w);
        }
    }
    if expression {
        words.push("an expression".to_string());
    }
    match words.len() {
        0 => "nothing more".to_string(),
        1 => words.remove(0),
        2 => format!("{} or {}", words[0], words[1]),
        n if n <= 8 => format!("one of {}, or {}", words[..n - 1].join(", "), words[n - 1]),
        _ => format!("one of {}, ...", words[..7].join(", ")),
    }
}

fn hint(found: &Tok<'_>, expected: &[String]) -> Option<String> {
    let expects = |t: &str| expected.iter().any(|e| e.trim_matches('"') == t);
    match found {
        Tok::Semi => Some("statements end at the end of a line; `;` is only used in `[item; count]`".into()),
        Tok::Ident(name) if matches!(*name, "def" | "function" | "func") => {
            Some("functions are declared with `fn`".into())
        }
        Tok::Ident(name) if matches!(*name, "class" | "struct" | "module") => {
            Some("define layers with `layer Name(...) { ... }` and models with `model Name { ... }`".into())
        }
        Tok::Eq if expects("==") => Some("compare with `==`".into()),
        Tok::Let | Tok::Return | Tok::Fn | Tok::Weight | Tok::Param | Tok::Buffer | Tok::Const if expects(")") => {
            Some("a `(` before this is not closed".into())
        }
        Tok::Let | Tok::Return | Tok::Fn | Tok::Weight | Tok::Param | Tok::Buffer | Tok::Const if expects("]") => {
            Some("a `[` before this is not closed".into())
        }
        Tok::Colon if expects("=") => Some("keyword arguments are written `name = value`".into()),
        _ => None,
    }
}

/// Lexes and parses one file. Always returns a module (possibly with `Error` nodes); problems
/// go to `diags`.
pub fn parse(file: FileId, text: &str, diags: &mut Diags) -> Module {
    let tokens = lexer::lex(file, text, diags);
    let mut ctx = Ctx { file, text_len: text.len(), diags: Vec::new(), depth_reported: false };
    let result = generated::ModuleParser::new().parse(&mut ctx, tokens.into_iter().map(Ok::<_, LexError>));
    let items = match result {
        Ok(items) => items,
        Err(e) => {
            let d = ctx.parse_error(e);
            ctx.diags.push(d);
            Vec::new()
        }
    };
    diags.extend(ctx.diags);
    Module { file, items }
}

/// Parses a single expression (used by tests and the IR text parser).
pub fn parse_expr(file: FileId, text: &str, diags: &mut Diags) -> Option<Expr> {
    let tokens = lexer::lex(file, text, diags);
    let mut ctx = Ctx { file, text_len: text.len(), diags: Vec::new(), depth_reported: false };
    let result = generated::ExprParser::new().parse(&mut ctx, tokens.into_iter().map(Ok::<_, LexError>));
    let out = match result {
        Ok(e) => Some(e),
        Err(e) => {
            let d = ctx.parse_error(e);
            ctx.diags.push(d);
            None
        }
    };
    diags.extend(ctx.diags);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    /// Prints an expression fully parenthesised, to check precedence and associativity.
    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Int(v) => v.to_string(),
            ExprKind::Float(v) => format!("{v:?}"),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Name(n) => n.clone(),
            ExprKind::Call { callee, args } => {
                let a: Vec<String> = args
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{}={}", n.name, show(&a.value)),
                        None => show(&a.value),
                    })
                    .collect();
                format!("{}({})", callee.name, a.join(", "))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                format!("({} {} {})", show(lhs), op.symbol(), show(rhs))
            }
            ExprKind::Unary { op: UnOp::Neg, operand } => format!("(-{})", show(operand)),
            ExprKind::Unary { op: UnOp::Not, operand } => format!("(!{})", show(operand)),
            ExprKind::List(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
            ExprKind::Repeat { item, count } => format!("[{}; {}]", show(item), show(count)),
            ExprKind::If { cond, then, otherwise } => {
                format!("if {} {{ {} }} else {{ {} }}", show(cond), show(then), show(otherwise))
            }
            ExprKind::Error => "<error>".to_string(),
        }
    }

    fn parsed(text: &str) -> String {
        let mut diags = Diags::new();
        let e = parse_expr(FileId(0), text, &mut diags).expect("parses");
        assert!(diags.is_empty(), "{diags:?}");
        show(&e)
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(parsed("1 + 2 * 3"), "(1 + (2 * 3))");
        assert_eq!(parsed("1 - 2 - 3"), "((1 - 2) - 3)");
        assert_eq!(parsed("(h - k + 2*p) / s + 1"), "((((h - k) + (2 * p)) / s) + 1)");
        assert_eq!(parsed("-a * b"), "((-a) * b)");
        assert_eq!(parsed("a == 1 || b != 2 && !c"), "((a == 1) || ((b != 2) && (!c)))");
        assert_eq!(parsed("a % b * c"), "((a % b) * c)");
    }

    #[test]
    fn calls_lists_repeats_and_conditionals() {
        assert_eq!(parsed("conv2d(x, w, stride = 2, padding = [1, 0])"), "conv2d(x, w, stride=2, padding=[1, 0])");
        assert_eq!(parsed("[Block(64, 64); n - 1]"), "[Block(64, 64); (n - 1)]");
        assert_eq!(parsed("[a, b,]"), "[a, b]");
        assert_eq!(parsed("[]"), "[]");
        assert_eq!(
            parsed("if s != 1 { a } else if t { b } else { c }"),
            "if (s != 1) { a } else { if t { b } else { c } }"
        );
        assert_eq!(parsed("1_000 + 2.5e-3 + 1e5"), "((1000 + 0.0025) + 100000.0)");
    }

    #[test]
    fn comparisons_do_not_chain() {
        let mut diags = Diags::new();
        assert!(parse_expr(FileId(0), "a < b < c", &mut diags).is_none() || diags.has_errors());
        assert!(diags.has_errors());
    }

    #[test]
    fn expression_depth_is_bounded() {
        let mut diags = Diags::new();
        let long = vec!["1"; 1000].join(" + ");
        let e = parse_expr(FileId(0), &long, &mut diags).expect("parses into an error node");
        assert_eq!(e.kind, ExprKind::Error);
        assert_eq!(diags.iter().filter(|d| d.code == Code::NestingTooDeep).count(), 1);
        let mut diags = Diags::new();
        let ok = vec!["1"; 200].join(" + ");
        let e = parse_expr(FileId(0), &ok, &mut diags).expect("parses");
        assert!(diags.is_empty());
        assert_eq!(e.depth, 200);
    }

    #[test]
    fn several_errors_are_reported_in_one_parse() {
        let mut diags = Diags::new();
        let text = "model M {\n fn forward(x: f32[B, 4]) -> f32[B, 4] {\n let a = relu(x))\n let b = x + * x\n return x\n }\n}\nlayer L { @ }\n";
        let m = parse(FileId(0), text, &mut diags);
        let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
        // Lexer diagnostics come first (phase order), then the parser's.
        assert_eq!(codes, vec![Code::InvalidCharacter, Code::UnexpectedToken, Code::UnexpectedToken]);
        assert_eq!(m.items.len(), 2, "both definitions survive recovery");
    }
}
