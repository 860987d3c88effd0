//! Tensor types of the IR (and of the checker): a dtype and a shape of [`Dim`]s.

use std::fmt;

use triton_runtime::DType;

use super::dim::Dim;

#[derive(Clone, Debug, PartialEq)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The element count when every dimension is known.
    pub fn known_elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |acc, d| {
            let v = u64::try_from(d.as_known()?).ok()?;
            acc.checked_mul(v)
        })
    }

    pub fn known_shape(&self) -> Option<Vec<u64>> {
        self.shape.iter().map(|d| d.as_known().and_then(|v| u64::try_from(v).ok())).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
