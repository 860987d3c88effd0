//! Call arguments to parameters: the one rule for positional and keyword arguments.
//!
//! Rules:
//! - Positional arguments fill parameters in order; keyword arguments fill the parameter of
//!   their name, after or among positional ones; a parameter filled twice is an error.
//! - Every call site (op calls, layer instantiation, `forward` calls) uses [`assign`] and only
//!   words the diagnostic for its own kind of callee; defaults and kinds are the caller's.

use super::ops::ArgVal;
use crate::source::Span;

/// Why arguments could not be assigned to parameters.
#[derive(Debug, PartialEq)]
pub enum Misfit<'a> {
    /// More positional arguments than parameters; `arg` is the first one too many.
    Extra { arg: &'a ArgVal },
    /// A keyword that names no parameter.
    Unknown { name: &'a str, span: Span },
    /// Parameter `index` is given a second time, by `arg`.
    Twice { index: usize, arg: &'a ArgVal },
}

/// Assigns `args` to the parameters named `params`: per parameter, the argument given for it.
pub fn assign<'a, S: AsRef<str>>(params: &[S], args: &'a [ArgVal]) -> Result<Vec<Option<&'a ArgVal>>, Misfit<'a>> {
    let mut slots: Vec<Option<&ArgVal>> = vec![None; params.len()];
    let mut positional = 0usize;
    for a in args {
        let index = match &a.name {
            None => {
                if positional >= params.len() {
                    return Err(Misfit::Extra { arg: a });
                }
                positional += 1;
                positional - 1
            }
            Some((name, span)) => match params.iter().position(|p| p.as_ref() == name) {
                Some(i) => i,
                None => return Err(Misfit::Unknown { name, span: *span }),
            },
        };
        if slots[index].is_some() {
            return Err(Misfit::Twice { index, arg: a });
        }
        slots[index] = Some(a);
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::value::Value;
    use crate::ir::Dim;

    fn arg(name: Option<&str>, v: i64, at: usize) -> ArgVal {
        let span = Span::new(crate::source::FileId(0), at, at + 1);
        ArgVal { name: name.map(|n| (n.to_string(), span)), value: Value::Int(Dim::known(v)), span }
    }

    fn values(slots: &[Option<&ArgVal>]) -> Vec<Option<i64>> {
        slots
            .iter()
            .map(|s| {
                s.map(|a| match &a.value {
                    Value::Int(d) => d.as_known().unwrap_or(-1),
                    _ => -1,
                })
            })
            .collect()
    }

    #[test]
    fn positional_then_keyword() {
        let args = [arg(None, 1, 0), arg(Some("c"), 3, 2)];
        let slots = assign(&["a", "b", "c"], &args).unwrap();
        assert_eq!(values(&slots), vec![Some(1), None, Some(3)]);
    }

    #[test]
    fn misfits() {
        let extra = [arg(None, 1, 0), arg(None, 2, 1)];
        assert_eq!(assign(&["a"], &extra), Err(Misfit::Extra { arg: &extra[1] }));
        let unknown = [arg(Some("z"), 1, 4)];
        assert!(matches!(assign(&["a"], &unknown), Err(Misfit::Unknown { name: "z", .. })));
        let twice = [arg(None, 1, 0), arg(Some("a"), 2, 1)];
        assert_eq!(assign(&["a", "b"], &twice), Err(Misfit::Twice { index: 0, arg: &twice[1] }));
    }
}
