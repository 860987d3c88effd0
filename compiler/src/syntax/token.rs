//! Tokens of the `.tri` language, recognised by a logos-generated DFA.
//!
//! Rules: keywords are reserved; dtype and type names (`f32`, `trit`, `int`, ...) are ordinary
//! identifiers, so a misspelt dtype gets a checker diagnostic that lists the valid ones. Comments
//! run from `#` to the end of the line. Newlines are not significant.

use logos::Logos;
use std::fmt;

/// Why a piece of text is not a token.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LexError {
    #[default]
    InvalidCharacter,
    UnterminatedString,
    IntegerTooLarge,
    InvalidNumber,
}

fn parse_int<'s>(lex: &mut logos::Lexer<'s, Tok<'s>>) -> Result<i64, LexError> {
    let digits: String = lex.slice().chars().filter(|&c| c != '_').collect();
    digits.parse::<i64>().map_err(|_| LexError::IntegerTooLarge)
}

fn parse_float<'s>(lex: &mut logos::Lexer<'s, Tok<'s>>) -> Result<f64, LexError> {
    let digits: String = lex.slice().chars().filter(|&c| c != '_').collect();
    match digits.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(LexError::InvalidNumber),
    }
}

fn unterminated<'s>(_: &mut logos::Lexer<'s, Tok<'s>>) -> Result<(), LexError> {
    Err(LexError::UnterminatedString)
}

#[derive(Logos, Clone, Debug, PartialEq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"#[^\n]*", allow_greedy = true))]
pub enum Tok<'s> {
    #[token("layer")]
    Layer,
    #[token("model")]
    Model,
    #[token("fn")]
    Fn,
    #[token("let")]
    Let,
    #[token("return")]
    Return,
    #[token("use")]
    Use,
    #[token("as")]
    As,
    #[token("weight")]
    Weight,
    #[token("param")]
    Param,
    #[token("buffer")]
    Buffer,
    #[token("const")]
    Const,
    #[token("require")]
    Require,
    #[token("if")]
    If,
    #[token("else")]
    Else,
    #[token("true")]
    True,
    #[token("false")]
    False,

    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Ident(&'s str),
    #[regex(r"[0-9][0-9_]*", parse_int)]
    Int(i64),
    #[regex(r"[0-9][0-9_]*\.[0-9][0-9_]*([eE][+-]?[0-9]+)?", parse_float)]
    #[regex(r"[0-9][0-9_]*[eE][+-]?[0-9]+", parse_float)]
    Float(f64),
    #[regex(r#""([^"\\\n]|\\[^\n])*""#, |lex| { let s = lex.slice(); &s[1..s.len() - 1] })]
    Str(&'s str),
    #[regex(r#""([^"\\\n]|\\[^\n])*"#, unterminated)]
    UnterminatedStr,
    /// Stands in for a literal the lexer rejected (already reported), so the parser does not
    /// report a second error for the hole it leaves. Never produced by the DFA itself.
    BadLiteral,

    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token("::")]
    ColonColon,
    #[token(";")]
    Semi,
    #[token("=")]
    Eq,
    #[token("->")]
    Arrow,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("==")]
    EqEq,
    #[token("!=")]
    NotEq,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,
    #[token("!")]
    Bang,
}

impl Tok<'_> {
    /// How the token is described to users ("expected `)`, found an identifier").
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Int(v) => format!("integer `{v}`"),
            Tok::Float(v) => format!("number `{v}`"),
            Tok::Str(_) | Tok::UnterminatedStr => "a string".to_string(),
            Tok::BadLiteral => "an invalid literal".to_string(),
            other => format!("`{other}`"),
        }
    }
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Layer => "layer",
            Tok::Model => "model",
            Tok::Fn => "fn",
            Tok::Let => "let",
            Tok::Return => "return",
            Tok::Use => "use",
            Tok::As => "as",
            Tok::Weight => "weight",
            Tok::Param => "param",
            Tok::Buffer => "buffer",
            Tok::Const => "const",
            Tok::Require => "require",
            Tok::If => "if",
            Tok::Else => "else",
            Tok::True => "true",
            Tok::False => "false",
            Tok::Ident(s) => s,
            Tok::Int(v) => return write!(f, "{v}"),
            Tok::Float(v) => return write!(f, "{v}"),
            Tok::Str(s) => return write!(f, "\"{s}\""),
            Tok::UnterminatedStr => "\"",
            Tok::BadLiteral => "<invalid literal>",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::ColonColon => "::",
            Tok::Semi => ";",
            Tok::Eq => "=",
            Tok::Arrow => "->",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
        };
        f.write_str(s)
    }
}
