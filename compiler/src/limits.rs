//! Sizes read from a user's files (a model's parameter shapes, a `.npy` header), checked
//! against the machine before anything of that size is allocated.
//!
//! Rules:
//! - The limit is the memory the system says is available (`MemAvailable` plus free swap on
//!   Linux) when the check runs; `$TRITON_MEMORY_LIMIT` (bytes, or with a K/M/G/T suffix)
//!   overrides it. Where neither is known, nothing is refused here.
//! - A refusal names what needed the memory, the figure, and the limit.
//! - Size arithmetic is checked: a product that overflows is refused like a too-large one.

use crate::ir::ParamInfo;

/// Bytes the process may still allocate, by the rule in the module docs.
pub fn memory_limit() -> Option<u64> {
    if let Some(v) = std::env::var("TRITON_MEMORY_LIMIT").ok().and_then(|s| parse_bytes(&s)) {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// `123`, `64K`, `3M`, `2G`, `1T` (powers of 1024).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// A byte count for messages: `240.0 GB`, `3.1 KB`, `12 B` (powers of 1000).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        n if n >= 1_000_000_000_000 => format!("{:.1} TB", b / 1e12),
        n if n >= 1_000_000_000 => format!("{:.1} GB", b / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", b / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", b / 1e3),
        n => format!("{n} B"),
    }
}

/// Refuses `bytes` for `what` when it exceeds [`memory_limit`].
pub fn check_alloc(what: &str, bytes: Option<u64>) -> Result<(), String> {
    let limit = memory_limit();
    match (bytes, limit) {
        (None, _) => Err(format!("{what} needs more memory than can be counted (its size overflows 64 bits)")),
        (Some(b), Some(l)) if b > l => Err(format!(
            "{what} need{} {} of memory; this machine has {} available (set $TRITON_MEMORY_LIMIT to change the limit)",
            if what.contains(" together") { "" } else { "s" },
            human(b),
            human(l)
        )),
        _ => Ok(()),
    }
}

/// Bytes of `elements` values of `width` bytes.
pub fn tensor_bytes(shape: &[u64], width: u64) -> Option<u64> {
    shape.iter().try_fold(width, |acc, &d| acc.checked_mul(d))
}

/// The model's weights as f32 (what compiling or running holds at least once) must fit.
pub fn check_weights(params: &[ParamInfo]) -> Result<(), String> {
    let total = params.iter().try_fold(0u64, |acc, p| acc.checked_add(tensor_bytes(&p.shape, 4)?));
    let largest = params.iter().max_by_key(|p| tensor_bytes(&p.shape, 4).unwrap_or(u64::MAX));
    let what = match largest {
        Some(p) => format!(
            "the model's {} (the largest, `{}`, is {:?})",
            if params.len() == 1 { "parameter".to_string() } else { format!("{} parameters together", params.len()) },
            p.name,
            p.shape
        ),
        None => return Ok(()),
    };
    check_alloc(&what, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_and_print() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("3 MB"), Some(3 << 20));
        assert_eq!(parse_bytes("1X"), None);
        assert_eq!(parse_bytes("99999999999T"), None);
        assert_eq!(human(240_000_000_000), "240.0 GB");
        assert_eq!(tensor_bytes(&[u64::MAX, 2], 4), None);
    }

    #[test]
    fn overflowing_and_oversized_requests_are_refused_with_figures() {
        assert!(check_alloc("x", None).expect_err("overflow").contains("overflows"));
        if let Some(limit) = memory_limit() {
            let err = check_alloc("the input", Some(limit + 1)).expect_err("too large");
            assert!(err.contains("the input needs") && err.contains("available"), "{err}");
            assert!(check_alloc("the input", Some(1)).is_ok());
        }
    }
}
