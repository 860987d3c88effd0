//! Reusable buffers of one call: values that die go back here and the next step that needs a
//! buffer of at most that size takes one, so repeated runs do not page-fault fresh memory.
//!
//! Rules:
//! - A buffer handed out is either filled (`f32`, `take`) or holds stale values of an earlier
//!   use (`*_overwritten`, for callers that overwrite every value): never uninitialized memory.
//! - Arenas live in the model between calls (one per concurrent caller), so a steady stream of
//!   calls allocates nothing but its outputs.

use crate::aligned::AlignedI8;

use super::value::Val;

#[derive(Debug, Default)]
pub(crate) struct Arena {
    pub f32s: Vec<Vec<f32>>,
    pub i8s: Vec<Vec<i8>>,
    pub i32s: Vec<Vec<i32>>,
}

/// Takes the smallest pooled buffer that holds `len` values (or a new one), as `len` copies of
/// `fill`.
pub(crate) fn take<T: Copy>(pool: &mut Vec<Vec<T>>, len: usize, fill: T) -> Vec<T> {
    let mut v = pick(pool, len);
    v.clear();
    v.resize(len, fill);
    v
}

/// The smallest pooled buffer with room for `len` values (else any, else a new one).
fn pick<T>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let best = pool.iter().enumerate().filter(|(_, v)| v.capacity() >= len).min_by_key(|(_, v)| v.capacity());
    match best {
        Some((i, _)) => pool.swap_remove(i),
        None => pool.pop().unwrap_or_default(),
    }
}

/// Like [`take`], but the first values keep whatever an earlier use left there (only growth is
/// filled): for buffers the caller overwrites entirely, so the arena costs no memset.
pub(crate) fn take_overwritten<T: Copy + Default>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut v = pick(pool, len);
    v.truncate(len);
    v.resize(len, T::default());
    v
}

impl Arena {
    pub fn bytes(&self) -> usize {
        let f = self.f32s.iter().map(|v| v.capacity() * 4).sum::<usize>();
        let i = self.i8s.iter().map(Vec::capacity).sum::<usize>();
        f + i + self.i32s.iter().map(|v| v.capacity() * 4).sum::<usize>()
    }

    /// A zero-filled buffer.
    pub fn f32(&mut self, len: usize) -> Vec<f32> {
        take(&mut self.f32s, len, 0.0)
    }

    /// A buffer of unspecified (stale, never uninitialized) contents that the caller overwrites.
    pub fn f32_overwritten(&mut self, len: usize) -> Vec<f32> {
        take_overwritten(&mut self.f32s, len)
    }

    /// An i32 buffer of stale contents that the caller overwrites.
    pub fn i32_overwritten(&mut self, len: usize) -> Vec<i32> {
        take_overwritten(&mut self.i32s, len)
    }

    /// Int8 values on a cache line: `fill`ed, or stale ones for a caller that overwrites them.
    pub fn i8_aligned(&mut self, len: usize, fill: Option<i8>) -> AlignedI8 {
        AlignedI8::new_in(pick(&mut self.i8s, AlignedI8::capacity_for(len)), len, fill)
    }

    pub fn recycle(&mut self, v: Val) {
        match v {
            Val::F32(a) => self.f32s.push(a.into_raw_vec_and_offset().0),
            Val::Q(q) => {
                self.i8s.push(q.data.into_vec());
                self.f32s.push(q.row_scale);
                self.i32s.push(q.row_sum);
            }
        }
    }
}
