//! Syntax: text to AST. `token` (logos lexer DFA) -> `lexer` (errors, nesting bound) ->
//! `parser` (lalrpop LR(1) grammar with recovery) -> `ast`.

pub mod ast;
pub mod lexer;
pub mod parser;
pub mod token;
pub mod unescape;

pub use parser::{parse, parse_expr};
