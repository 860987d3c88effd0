//! Broken invariants as typed errors, never panics.
//!
//! Rules:
//! - The interpreter, the trainer and the passes run only graphs the verifier accepted
//!   (`ir::verify`), so an operand's kind, a reshape's element count or a broadcast is a fact
//!   there, not something a user's file decides. Each place that relies on such a fact names it
//!   with [`Invariant::invariant`] instead of `unwrap`/`unreachable!`.
//! - A broken fact becomes a [`Broken`] error that travels up like any other error and is shown
//!   as an "internal error" naming the fact: a bug in Triton to report, never a panic (exit 101)
//!   and never blamed on the user's input.
//! - This is the one helper for such facts in the compiler; no `unreachable!` elsewhere.

/// A fact the code relied on did not hold (a bug in Triton).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("internal error: {0} did not hold (a bug in Triton; please report it with the model)")]
pub struct Broken(pub &'static str);

/// Turns a missing value or failed step into [`Broken`] naming the fact that should have held.
pub trait Invariant<T> {
    fn invariant(self, fact: &'static str) -> Result<T, Broken>;
}

impl<T> Invariant<T> for Option<T> {
    fn invariant(self, fact: &'static str) -> Result<T, Broken> {
        self.ok_or(Broken(fact))
    }
}

impl<T, E> Invariant<T> for Result<T, E> {
    fn invariant(self, fact: &'static str) -> Result<T, Broken> {
        self.map_err(|_| Broken(fact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_fact() {
        let none: Option<u8> = None;
        let e = none.invariant("a weight has rows").unwrap_err();
        assert_eq!(e, Broken("a weight has rows"));
        assert!(e.to_string().contains("internal error: a weight has rows did not hold"));
        assert_eq!(Some(3).invariant("x"), Ok(3));
        let r: Result<u8, ()> = Err(());
        assert_eq!(r.invariant("y"), Err(Broken("y")));
    }
}
