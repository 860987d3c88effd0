//! Cache-line aligned storage for re-laid-out weights.
//!
//! Rules:
//! - Every panel a kernel streams with full-width vector loads lives in [`Lines`]: its start
//!   is 64-byte aligned, so a 512-bit load of a 64-byte step never splits across two cache
//!   lines. (On Sapphire Rapids the split loads of a `Vec<f32>` or `Vec<i8>` panel, 16-byte
//!   aligned by the allocator, cost the AVX-512 f32 kernel about a third of its speed.)
//! - The storage is zero-initialized and its length is rounded up to whole lines; the views
//!   ([`Lines::f32s`], [`Lines::i8s`]) have exactly the length asked for.

/// One cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialized, 64-byte aligned buffer of `len` bytes.
#[derive(Clone, Debug)]
pub(crate) struct Lines {
    lines: Vec<Line>,
    len: usize,
}

impl Lines {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Lines {
        Lines { lines: vec![Line([0; 64]); len.div_ceil(64)], len }
    }

    /// `n` zero floats.
    pub(crate) fn zeroed_f32(n: usize) -> Lines {
        Lines::zeroed(4 * n)
    }

    /// Bytes held (the length asked for).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The buffer as floats (`len / 4` of them).
    #[inline(always)]
    pub(crate) fn f32s(&self) -> &[f32] {
        // SAFETY: the lines are `64 * lines.len() >= len` initialized bytes, 64-byte aligned;
        // any bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len / 4) }
    }

    /// The buffer as floats, to fill.
    pub(crate) fn f32s_mut(&mut self) -> &mut [f32] {
        // SAFETY: as `f32s`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len / 4) }
    }

    /// The buffer as signed bytes.
    #[inline(always)]
    pub(crate) fn i8s(&self) -> &[i8] {
        // SAFETY: as `f32s`; any bit pattern is a valid i8.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<i8>(), self.len) }
    }

    /// The buffer as signed bytes, to fill.
    pub(crate) fn i8s_mut(&mut self) -> &mut [i8] {
        // SAFETY: as `i8s`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<i8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn views_are_aligned_zeroed_and_of_the_asked_length() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let mut l = Lines::zeroed(len);
            assert_eq!(l.i8s().len(), len);
            assert_eq!(l.f32s().len(), len / 4);
            assert_eq!(l.i8s().as_ptr() as usize % 64, 0);
            assert!(l.i8s().iter().all(|b| *b == 0));
            if len > 0 {
                l.i8s_mut()[len - 1] = 7;
                assert_eq!(l.i8s()[len - 1], 7);
            }
        }
        let mut f = Lines::zeroed_f32(17);
        f.f32s_mut()[16] = 1.5;
        assert_eq!(f.f32s()[16], 1.5);
        assert_eq!(f.len(), 68);
    }
}
