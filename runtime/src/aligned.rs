//! Int8 buffers that start on a cache line.
//!
//! Rules:
//! - The first value of an [`AlignedI8`] sits at a multiple of [`ALIGN`] bytes. Quantized rows
//!   are `k_pad` (a multiple of 64) bytes long, so every row starts on a cache line and the
//!   kernels' 32-byte loads never split one: measured on the AVX2 kernel (784x256, batch 64 and
//!   1024), rows at 16 bytes past a line ran 15-25% slower, and 25-40% with `vpdpbusd`.
//! - The buffer reuses a plain `Vec<i8>` from the arena and hands it back with
//!   [`AlignedI8::into_vec`]; the vector is never grown while aligned, so the offset stays valid.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Alignment of the first value, in bytes.
pub const ALIGN: usize = 64;
/// Readable bytes after the last value (zero when `fill`ed, stale otherwise): kernels that load
/// 4 or 16 bytes at a time may read past a row's end into it ([`AlignedI8::slack_ptr`]).
pub const SLACK: usize = 32;

/// `len` int8 values starting at an [`ALIGN`]-byte boundary inside a reused vector.
pub struct AlignedI8 {
    buf: Vec<i8>,
    off: usize,
    len: usize,
}

impl AlignedI8 {
    /// Capacity a vector needs to hold `len` aligned values.
    pub fn capacity_for(len: usize) -> usize {
        len + ALIGN - 1 + SLACK
    }

    /// A pointer to the first value from which `len + SLACK` bytes may be read.
    pub fn slack_ptr(&self) -> *const i8 {
        self.buf[self.off..].as_ptr()
    }

    /// `len` values in `buf`'s allocation (grown if too small): all `fill` when `fill` is set,
    /// else whatever the vector held (stale values, never uninitialized memory), for callers that
    /// overwrite every value.
    pub fn new_in(mut buf: Vec<i8>, len: usize, fill: Option<i8>) -> AlignedI8 {
        let total = AlignedI8::capacity_for(len);
        match fill {
            Some(v) => {
                buf.clear();
                buf.resize(total, v);
            }
            None => {
                buf.truncate(total);
                buf.resize(total, 0);
            }
        }
        let off = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        AlignedI8 { buf, off, len }
    }

    #[cfg(test)]
    fn readable_after_offset(&self) -> usize {
        self.buf.len() - self.off
    }

    /// The vector behind it, for reuse.
    pub fn into_vec(self) -> Vec<i8> {
        self.buf
    }
}

impl Deref for AlignedI8 {
    type Target = [i8];
    fn deref(&self) -> &[i8] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl DerefMut for AlignedI8 {
    fn deref_mut(&mut self) -> &mut [i8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Clone for AlignedI8 {
    /// A copy in a fresh allocation, aligned again (the offset of the original need not fit).
    fn clone(&self) -> AlignedI8 {
        let mut c = AlignedI8::new_in(Vec::new(), self.len, Some(0));
        c.copy_from_slice(self);
        c
    }
}

impl fmt::Debug for AlignedI8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedI8").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_keeps_the_requested_contents() {
        let mut reused = Vec::new();
        for (len, fill) in [(0, Some(0)), (1, Some(3)), (64, None), (832 * 5, Some(-1)), (100, None)] {
            let a = AlignedI8::new_in(reused, len, fill);
            assert_eq!(a.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(a.len(), len);
            assert!(a.readable_after_offset() >= len + SLACK, "len {len}");
            if let Some(v) = fill {
                assert!(a.iter().all(|x| *x == v), "len {len}");
            }
            let c = a.clone();
            assert_eq!(c.as_ptr() as usize % ALIGN, 0);
            assert_eq!(&c[..], &a[..]);
            reused = a.into_vec();
        }
    }
}
