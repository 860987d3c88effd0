//! String escapes, shared by `.tri` string literals and the IR text form.
//!
//! Accepted: `\\`, `\"`, `\'`, `\n`, `\t`, `\r`, `\0` and `\u{HEX}` (a Unicode scalar value): a
//! superset of what Rust's `{:?}` writes, so anything printed that way reads back unchanged.

/// Decodes the escapes in the text between a string's quotes. On error: the byte offset of the
/// bad escape within `s` and what is wrong.
pub fn unescape(s: &str) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { return Err((i, "a string cannot end with `\\`".into())) };
        match e {
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'u' => {
                let rest = &s[i + 2..];
                let hex = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(h, _)| h);
                let Some(hex) = hex else { return Err((i, "expected `\\u{HEX}`".into())) };
                let ch = u32::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| !hex.is_empty() && hex.len() <= 6)
                    .and_then(char::from_u32);
                let Some(ch) = ch else { return Err((i, format!("`\\u{{{hex}}}` is not a Unicode scalar value"))) };
                out.push(ch);
                for _ in 0..hex.len() + 2 {
                    chars.next();
                }
            }
            other => return Err((i, format!("unknown escape `\\{other}`"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_rust_debug_writes() {
        for s in ["plain", "a\"b\\c", "tab\tnl\nnul\0", "\u{1b}esc", "e\u{301}", "日本"] {
            let printed = format!("{s:?}");
            assert_eq!(unescape(&printed[1..printed.len() - 1]).as_deref(), Ok(s), "{printed}");
        }
    }

    #[test]
    fn rejects_unknown_and_broken_escapes() {
        assert_eq!(unescape(r"ab\q").map_err(|e| e.0), Err(2));
        assert!(unescape(r"\u{110000}").is_err());
        assert!(unescape(r"\u{}").is_err());
        assert!(unescape(r"\u12").is_err());
    }
}
