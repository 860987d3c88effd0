//! The lexer pass: source text to a token vector plus diagnostics.
//!
//! Rules:
//! - Lexing never stops at an error: a bad character or literal is reported and skipped, so the
//!   parser still sees the rest of the file and can report its own errors.
//! - Bracket nesting deeper than [`MAX_NESTING`] is reported once; each too-deep region (up to
//!   its matching bracket) becomes a single bad-literal token. Everything downstream (parser
//!   actions, checker recursion, drops) relies on this bound instead of growing the stack.

use logos::Logos;

use super::token::{LexError, Tok};
use crate::diagnostics::{Code, Diag, Diags};
use crate::source::{FileId, Span};

/// Deepest bracket nesting accepted (`(`, `[`, `{` together).
pub const MAX_NESTING: usize = 128;

/// A token with its byte range.
pub type Spanned<'s> = (usize, Tok<'s>, usize);

pub fn lex<'s>(file: FileId, text: &'s str, diags: &mut Diags) -> Vec<Spanned<'s>> {
    let mut out = Vec::with_capacity(text.len() / 4);
    let mut lexer = Tok::lexer(text);
    let mut depth = 0usize;
    // A run of adjacent invalid characters is reported once.
    let mut bad_run: Option<Span> = None;
    // While > 0: inside a region nested too deep, skipped up to its closing bracket.
    let mut skipping = 0usize;
    let mut reported_depth = false;
    while let Some(result) = lexer.next() {
        let range = lexer.span();
        let span = Span::new(file, range.start, range.end);
        if skipping > 0 && result.is_err() {
            continue;
        }
        if !matches!(result, Err(LexError::InvalidCharacter))
            && let Some(run) = bad_run.take()
        {
            diags.push(invalid_chars(run, &text[run.lo as usize..run.hi as usize]));
        }
        match result {
            Ok(tok) if skipping > 0 => match tok {
                Tok::LParen | Tok::LBracket | Tok::LBrace => skipping += 1,
                Tok::RParen | Tok::RBracket | Tok::RBrace => skipping -= 1,
                _ => {}
            },
            Ok(tok) => {
                match tok {
                    Tok::LParen | Tok::LBracket | Tok::LBrace if depth >= MAX_NESTING => {
                        if !reported_depth {
                            reported_depth = true;
                            diags.push(
                                Diag::error(
                                    Code::NestingTooDeep,
                                    format!("brackets are nested more than {MAX_NESTING} levels deep"),
                                )
                                .at(span, "this bracket is too deep")
                                .help("split the expression with `let` bindings"),
                            );
                        }
                        // The region up to the matching bracket stands as one bad literal.
                        skipping = 1;
                        out.push((range.start, Tok::BadLiteral, range.end));
                        continue;
                    }
                    Tok::LParen | Tok::LBracket | Tok::LBrace => depth += 1,
                    Tok::RParen | Tok::RBracket | Tok::RBrace => depth = depth.saturating_sub(1),
                    _ => {}
                }
                out.push((range.start, tok, range.end));
            }
            Err(LexError::InvalidCharacter) => {
                bad_run = Some(match bad_run {
                    Some(run) if run.hi == span.lo => run.to(span),
                    Some(run) => {
                        diags.push(invalid_chars(run, &text[run.lo as usize..run.hi as usize]));
                        span
                    }
                    None => span,
                })
            }
            Err(err) => {
                diags.push(lex_error(err, span, lexer.slice()));
                out.push((range.start, Tok::BadLiteral, range.end));
            }
        }
    }
    if let Some(run) = bad_run {
        diags.push(invalid_chars(run, &text[run.lo as usize..run.hi as usize]));
    }
    out
}

fn invalid_chars(span: Span, slice: &str) -> Diag {
    if slice.chars().count() == 1 {
        return lex_error(LexError::InvalidCharacter, span, slice);
    }
    Diag::error(Code::InvalidCharacter, format!("{} unexpected characters", slice.chars().count()))
        .at(span, "not part of any token")
}

fn lex_error(err: LexError, span: Span, slice: &str) -> Diag {
    match err {
        LexError::InvalidCharacter => {
            let ch = slice.chars().next().unwrap_or('?');
            let shown = if ch.is_control() || ch.is_whitespace() { format!("{:?}", ch) } else { format!("`{ch}`") };
            let d = Diag::error(Code::InvalidCharacter, format!("unexpected character {shown}"))
                .at(span, "not part of any token");
            match ch {
                '.' => d.help("numbers need digits on both sides of the point, like `0.5`; paths use `::`"),
                '\'' => d.help("strings use double quotes: \"absmean\""),
                '&' | '|' => d.help("logical operators are `&&` and `||`"),
                _ => d,
            }
        }
        LexError::UnterminatedString => Diag::error(Code::UnterminatedString, "string literal is not terminated")
            .at(span, "this string has no closing `\"` on its line"),
        LexError::IntegerTooLarge => {
            Diag::error(Code::IntegerTooLarge, format!("integer literal `{slice}` is too large"))
                .at(span, "does not fit in a signed 64-bit integer")
                .help(format!("the largest integer is {}", i64::MAX))
        }
        LexError::InvalidNumber => Diag::error(Code::InvalidNumber, format!("number `{slice}` is not a finite value"))
            .at(span, "not representable as a 64-bit float"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> (Vec<Tok<'_>>, Vec<Code>) {
        let mut diags = Diags::new();
        let t = lex(FileId(0), text, &mut diags).into_iter().map(|(_, t, _)| t).collect();
        (t, diags.iter().map(|d| d.code).collect())
    }

    #[test]
    fn tokens_comments_and_literals() {
        let (t, e) = toks("weight w: trit[out, 784] # comment\n let x = 1_024 * 0.5 -> \"twn\" :: <= !=");
        assert!(e.is_empty());
        assert_eq!(
            t,
            vec![
                Tok::Weight,
                Tok::Ident("w"),
                Tok::Colon,
                Tok::Ident("trit"),
                Tok::LBracket,
                Tok::Ident("out"),
                Tok::Comma,
                Tok::Int(784),
                Tok::RBracket,
                Tok::Let,
                Tok::Ident("x"),
                Tok::Eq,
                Tok::Int(1024),
                Tok::Star,
                Tok::Float(0.5),
                Tok::Arrow,
                Tok::Str("twn"),
                Tok::ColonColon,
                Tok::Le,
                Tok::NotEq,
            ]
        );
    }

    #[test]
    fn bad_literals_become_placeholders_and_runs_of_junk_one_error() {
        let (t, e) = toks("a 99999999999999999999 \"open\n b $$$ c 1e400");
        assert_eq!(
            t,
            vec![Tok::Ident("a"), Tok::BadLiteral, Tok::BadLiteral, Tok::Ident("b"), Tok::Ident("c"), Tok::BadLiteral]
        );
        assert_eq!(
            e,
            vec![Code::IntegerTooLarge, Code::UnterminatedString, Code::InvalidCharacter, Code::InvalidNumber]
        );
    }

    #[test]
    fn too_deep_brackets_collapse_to_one_placeholder() {
        let deep = format!("x = {}1{} y", "(".repeat(MAX_NESTING + 50), ")".repeat(MAX_NESTING + 50));
        let (t, e) = toks(&deep);
        assert_eq!(e, vec![Code::NestingTooDeep]);
        assert_eq!(t.iter().filter(|t| **t == Tok::BadLiteral).count(), 1);
        let opens = t.iter().filter(|t| **t == Tok::LParen).count();
        let closes = t.iter().filter(|t| **t == Tok::RParen).count();
        assert_eq!((opens, closes), (MAX_NESTING, MAX_NESTING), "still balanced");
        assert_eq!(t.last(), Some(&Tok::Ident("y")));
    }
}
