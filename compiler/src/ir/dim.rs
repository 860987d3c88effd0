//! Compile-time integers that may be symbolic: `784`, `B`, `B * 784`, `(H - 1) / 2 + 1`.
//!
//! Rules:
//! - A [`Dim`] is a canonical polynomial with `i64` coefficients over atoms; atoms are symbols
//!   (`B`, `H`) and opaque floor-divisions / remainders that could not be simplified. Two dims are
//!   equal exactly when their canonical forms are equal, so `H - 1 + 1 == H` and
//!   `(H + 2 - 3) / 2 + 1 == (H - 1) / 2 + 1`, however the expression was written.
//! - All arithmetic is checked: overflow is an error value, never a wrap or a panic.
//! - Division is floor division (rounds towards negative infinity), as documented for the
//!   language; division by zero is an error.

use std::fmt;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    Sym(Arc<str>),
    Div(Box<Dim>, Box<Dim>),
    Rem(Box<Dim>, Box<Dim>),
}

/// A canonical polynomial: sorted terms (monomial, coefficient), no zero coefficients; the
/// constant term has the empty monomial.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dim {
    terms: Vec<(Vec<Atom>, i64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimError {
    Overflow,
    DivisionByZero,
}

type R = Result<Dim, DimError>;

pub fn floor_div(a: i64, b: i64) -> Result<i64, DimError> {
    if b == 0 {
        return Err(DimError::DivisionByZero);
    }
    let q = a.checked_div(b).ok_or(DimError::Overflow)?;
    let r = a.checked_rem(b).ok_or(DimError::Overflow)?;
    Ok(if r != 0 && ((r < 0) != (b < 0)) { q - 1 } else { q })
}

pub fn floor_rem(a: i64, b: i64) -> Result<i64, DimError> {
    if b == 0 {
        return Err(DimError::DivisionByZero);
    }
    if b == -1 {
        return Ok(0); // also avoids the i64::MIN % -1 overflow
    }
    let r = a % b;
    // |r| < |b| and r, b of opposite signs here, so r + b cannot overflow.
    Ok(if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r })
}

impl Dim {
    pub fn known(v: i64) -> Dim {
        if v == 0 { Dim { terms: Vec::new() } } else { Dim { terms: vec![(Vec::new(), v)] } }
    }

    pub fn sym(name: &str) -> Dim {
        Dim { terms: vec![(vec![Atom::Sym(name.into())], 1)] }
    }

    fn atom(a: Atom) -> Dim {
        Dim { terms: vec![(vec![a], 1)] }
    }

    /// The value, when the dim does not depend on any symbol.
    pub fn as_known(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(m, c)] if m.is_empty() => Some(*c),
            _ => None,
        }
    }

    pub fn is_known(&self) -> bool {
        self.as_known().is_some()
    }

    fn from_terms(mut terms: Vec<(Vec<Atom>, i64)>) -> R {
        for (m, _) in terms.iter_mut() {
            m.sort();
        }
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Vec<Atom>, i64)> = Vec::with_capacity(terms.len());
        for (m, c) in terms {
            match out.last_mut() {
                Some((lm, lc)) if *lm == m => *lc = lc.checked_add(c).ok_or(DimError::Overflow)?,
                _ => out.push((m, c)),
            }
        }
        out.retain(|(_, c)| *c != 0);
        Ok(Dim { terms: out })
    }

    pub fn add(&self, other: &Dim) -> R {
        Dim::from_terms(self.terms.iter().chain(other.terms.iter()).cloned().collect())
    }

    pub fn neg(&self) -> R {
        let terms = self
            .terms
            .iter()
            .map(|(m, c)| c.checked_neg().map(|c| (m.clone(), c)).ok_or(DimError::Overflow))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dim { terms })
    }

    pub fn sub(&self, other: &Dim) -> R {
        self.add(&other.neg()?)
    }

    pub fn mul(&self, other: &Dim) -> R {
        let mut terms = Vec::with_capacity(self.terms.len() * other.terms.len());
        for (m1, c1) in &self.terms {
            for (m2, c2) in &other.terms {
                let mut m = m1.clone();
                m.extend(m2.iter().cloned());
                terms.push((m, c1.checked_mul(*c2).ok_or(DimError::Overflow)?));
            }
        }
        Dim::from_terms(terms)
    }

    /// Floor division.
    pub fn div(&self, other: &Dim) -> R {
        if let Some(d) = other.as_known() {
            if d == 0 {
                return Err(DimError::DivisionByZero);
            }
            if let Some(n) = self.as_known() {
                return Ok(Dim::known(floor_div(n, d)?));
            }
            if d == 1 {
                return Ok(self.clone());
            }
            // Exact when every coefficient is a multiple of the divisor.
            if self.terms.iter().all(|(_, c)| c % d == 0) {
                let terms = self.terms.iter().map(|(m, c)| (m.clone(), c / d)).collect();
                return Dim::from_terms(terms);
            }
        }
        if self == other && !self.terms.is_empty() {
            return Ok(Dim::known(1));
        }
        Ok(Dim::atom(Atom::Div(Box::new(self.clone()), Box::new(other.clone()))))
    }

    /// Floor remainder.
    pub fn rem(&self, other: &Dim) -> R {
        if let Some(d) = other.as_known() {
            if d == 0 {
                return Err(DimError::DivisionByZero);
            }
            if let Some(n) = self.as_known() {
                return Ok(Dim::known(floor_rem(n, d)?));
            }
            if d == 1 || self.terms.iter().all(|(_, c)| c % d == 0) {
                return Ok(Dim::known(0));
            }
        }
        Ok(Dim::atom(Atom::Rem(Box::new(self.clone()), Box::new(other.clone()))))
    }

    /// The symbols this dim mentions (for messages).
    pub fn symbols(&self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        fn walk(d: &Dim, out: &mut Vec<Arc<str>>) {
            for (m, _) in &d.terms {
                for a in m {
                    match a {
                        Atom::Sym(s) => {
                            if !out.contains(s) {
                                out.push(s.clone())
                            }
                        }
                        Atom::Div(x, y) | Atom::Rem(x, y) => {
                            walk(x, out);
                            walk(y, out);
                        }
                    }
                }
            }
        }
        walk(self, &mut out);
        out
    }

    /// Replaces symbols by dims (used to bind a layer's symbolic dims to a caller's values).
    pub fn substitute(&self, lookup: &dyn Fn(&str) -> Option<Dim>) -> R {
        let mut acc = Dim::known(0);
        for (m, c) in &self.terms {
            let mut term = Dim::known(*c);
            for a in m {
                let v = match a {
                    Atom::Sym(s) => lookup(s).unwrap_or_else(|| Dim::sym(s)),
                    Atom::Div(x, y) => x.substitute(lookup)?.div(&y.substitute(lookup)?)?,
                    Atom::Rem(x, y) => x.substitute(lookup)?.rem(&y.substitute(lookup)?)?,
                };
                term = term.mul(&v)?;
            }
            acc = acc.add(&term)?;
        }
        Ok(acc)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, d: &Dim| {
            if d.terms.len() > 1 || d.terms.first().is_some_and(|(m, c)| m.len() > 1 || (!m.is_empty() && *c != 1)) {
                write!(f, "({d})")
            } else {
                write!(f, "{d}")
            }
        };
        match self {
            Atom::Sym(s) => f.write_str(s),
            Atom::Div(a, b) => {
                operand(f, a)?;
                f.write_str(" / ")?;
                operand(f, b)
            }
            Atom::Rem(a, b) => {
                operand(f, a)?;
                f.write_str(" % ")?;
                operand(f, b)
            }
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first (in canonical order), the constant last: `B * 784`, `H - 1`.
        let mut order: Vec<&(Vec<Atom>, i64)> = self.terms.iter().filter(|(m, _)| !m.is_empty()).collect();
        order.extend(self.terms.iter().filter(|(m, _)| m.is_empty()));
        for (i, (m, c)) in order.into_iter().enumerate() {
            let (neg, mag) = if *c < 0 { (true, c.unsigned_abs()) } else { (false, *c as u64) };
            if i == 0 {
                if neg {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(if neg { " - " } else { " + " })?;
            }
            let atoms = m.iter().map(|a| a.to_string()).collect::<Vec<_>>();
            match (atoms.is_empty(), mag) {
                (true, _) => write!(f, "{mag}")?,
                (false, 1) => f.write_str(&atoms.join(" * "))?,
                (false, _) => write!(f, "{} * {mag}", atoms.join(" * "))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: i64) -> Dim {
        Dim::known(v)
    }

    #[test]
    fn constants_fold_with_floor_semantics() {
        assert_eq!(k(7).div(&k(2)), Ok(k(3)));
        assert_eq!(k(-7).div(&k(2)), Ok(k(-4)));
        assert_eq!(k(-7).rem(&k(2)), Ok(k(1)));
        assert_eq!(k(7).div(&k(0)), Err(DimError::DivisionByZero));
        assert_eq!(k(i64::MAX).add(&k(1)), Err(DimError::Overflow));
        assert_eq!(k(i64::MIN).div(&k(-1)), Err(DimError::Overflow));
    }

    #[test]
    fn symbolic_forms_are_canonical() {
        let h = Dim::sym("H");
        let a = h.add(&k(2)).unwrap().sub(&k(3)).unwrap().div(&k(2)).unwrap().add(&k(1)).unwrap();
        let b = h.sub(&k(1)).unwrap().div(&k(2)).unwrap().add(&k(1)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "(H - 1) / 2 + 1");
        assert_eq!(h.sub(&k(1)).unwrap().add(&k(1)).unwrap(), h);
        let bsym = Dim::sym("B");
        assert_eq!(bsym.mul(&k(784)).unwrap().to_string(), "B * 784");
        assert_eq!(k(784).mul(&bsym).unwrap(), bsym.mul(&k(784)).unwrap());
        // Exact division by a constant simplifies.
        assert_eq!(bsym.mul(&k(4)).unwrap().div(&k(2)).unwrap(), bsym.mul(&k(2)).unwrap());
    }

    use proptest::prelude::*;

    fn reference(op: u8, a: i64, b: i64) -> Option<i128> {
        let (a, b) = (a as i128, b as i128);
        let r = match op {
            0 => a + b,
            1 => a - b,
            2 => a * b,
            3 if b != 0 => {
                let q = a / b;
                if a % b != 0 && ((a % b < 0) != (b < 0)) { q - 1 } else { q }
            }
            4 if b != 0 => a - b * reference(3, a as i64, b as i64)?,
            _ => return None,
        };
        (i64::MIN as i128..=i64::MAX as i128).contains(&r).then_some(r)
    }

    proptest! {
        /// Constant arithmetic agrees with exact 128-bit arithmetic, and overflow is reported
        /// exactly when the true result does not fit.
        #[test]
        fn constant_arithmetic_is_exact_or_an_error(op in 0..5u8, a in any::<i64>(), b in prop_oneof![any::<i64>(), -5..5i64]) {
            let (x, y) = (k(a), k(b));
            let got = match op { 0 => x.add(&y), 1 => x.sub(&y), 2 => x.mul(&y), 3 => x.div(&y), _ => x.rem(&y) };
            match reference(op, a, b) {
                Some(r) => prop_assert_eq!(got.map(|d| d.as_known()), Ok(Some(r as i64))),
                None if b == 0 && op >= 3 => prop_assert_eq!(got, Err(DimError::DivisionByZero)),
                None => prop_assert_eq!(got, Err(DimError::Overflow)),
            }
        }

        /// Symbolic polynomials (+, -, * over B and H) evaluate, after substitution, to the same
        /// value as direct evaluation: canonicalisation loses nothing.
        #[test]
        fn polynomials_substitute_to_direct_values(
            ops in proptest::collection::vec((0..3u8, 0..4u8, -20..20i64), 1..12),
            bv in 1..50i64, hv in 1..50i64,
        ) {
            let mut sym = Dim::sym("B");
            let mut val = bv;
            for (op, operand, c) in ops {
                let (od, ov) = match operand { 0 => (Dim::sym("B"), bv), 1 => (Dim::sym("H"), hv), _ => (k(c), c) };
                let (next, nv) = match op {
                    0 => (sym.add(&od), val + ov),
                    1 => (sym.sub(&od), val - ov),
                    _ => (sym.mul(&od), val * ov),
                };
                sym = next.expect("small values do not overflow");
                val = nv;
                if val.abs() > 1 << 40 { break; }
            }
            let lookup = |s: &str| match s { "B" => Some(k(bv)), "H" => Some(k(hv)), _ => None };
            prop_assert_eq!(sym.substitute(&lookup).expect("fits").as_known(), Some(val));
        }
    }

    #[test]
    fn substitution_makes_dims_known() {
        let h = Dim::sym("H");
        let e = h.sub(&k(1)).unwrap().div(&k(2)).unwrap().add(&k(1)).unwrap();
        let v = e.substitute(&|s| (s == "H").then(|| k(32))).unwrap();
        assert_eq!(v.as_known(), Some(16));
    }
}
