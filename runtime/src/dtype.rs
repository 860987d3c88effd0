//! Element types and the storage cost of tensors in a compiled artifact.
//!
//! Storage formats (see docs/language.md, "Numeric semantics"):
//! - `trit`: base-3, 5 trits per byte (3^5 = 243 <= 256), rows padded to whole bytes, plus one
//!   f32 scale per output channel (row) - 1.6 bits per weight plus the scales.
//! - `i8`: one byte per element plus one f32 scale per output channel.
//! - `f32` and `i32`: 4 bytes per element.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// Ternary weight: each element is -1, 0 or +1 times a per-output-channel scale.
    Trit,
    /// 8-bit signed integer with a scale (quantized activations and weights).
    I8,
    /// 32-bit signed integer accumulator (results of integer matmul and conv).
    I32,
    /// IEEE 754 single precision.
    F32,
}

impl DType {
    pub const ALL: [DType; 4] = [DType::Trit, DType::I8, DType::I32, DType::F32];

    pub fn name(self) -> &'static str {
        match self {
            DType::Trit => "trit",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::F32 => "f32",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether values of this type carry a scale (per tensor or per channel).
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Trit | DType::I8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Trits stored per byte in the artifact's storage format ([`crate::pack::pack_trit5`]).
pub const TRITS_PER_BYTE: u64 = crate::pack::TRITS_PER_BYTE as u64;

/// Bytes a stored weight tensor takes, split into payload and per-channel scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageSize {
    pub payload: u64,
    pub scales: u64,
}

impl StorageSize {
    pub fn total(self) -> u64 {
        self.payload + self.scales
    }

    /// Storage for a tensor of `dtype` with `shape`, whose first dimension is the output channel.
    /// Returns `None` when the byte count overflows `u64`.
    pub fn of(dtype: DType, shape: &[u64]) -> Option<StorageSize> {
        let rows = shape.first().copied().unwrap_or(1);
        let per_row = shape.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d))?;
        let elems = rows.checked_mul(per_row)?;
        Some(match dtype {
            DType::Trit => StorageSize { payload: elems.div_ceil(TRITS_PER_BYTE), scales: rows.checked_mul(4)? },
            DType::I8 => StorageSize { payload: elems, scales: rows.checked_mul(4)? },
            DType::I32 | DType::F32 => StorageSize { payload: elems.checked_mul(4)?, scales: 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trit_storage_is_five_per_byte_plus_a_scale_per_row() {
        // 3 rows of 11 trits: 33 trits in ceil(33/5) = 7 bytes, one scale per row.
        let s = StorageSize::of(DType::Trit, &[3, 11]).expect("fits");
        assert_eq!(s, StorageSize { payload: 7, scales: 12 });
        // A conv kernel [O, I, KH, KW]: rows are output channels.
        let s = StorageSize::of(DType::Trit, &[64, 64, 3, 3]).expect("fits");
        assert_eq!(s, StorageSize { payload: (64 * 576_u64).div_ceil(5), scales: 64 * 4 });
    }

    #[test]
    fn overflow_is_reported_not_wrapped() {
        assert_eq!(StorageSize::of(DType::F32, &[u64::MAX / 2, 3]), None);
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("f16"), None);
    }
}
