//! The ternary GEMM kernels' contract: the row grouping and overflow bounds that the dispatcher
//! (`kernels::tq2`) and every implementation share.

use std::ops::Range;

/// Rows sharing one decode of a channel's codes.
pub(crate) const ROWS: usize = 8;
/// Blocks whose 16-bit sums cannot overflow.
pub(crate) const FLUSH_BLOCKS: usize = 32;

/// Rows in groups of [`ROWS`], each group against every channel of `channels`:
/// `group(r, ch)` for full groups, `one(row, ch)` for the rows left over.
#[inline(always)]
pub(crate) fn walk(rows: usize, channels: Range<usize>, group: impl Fn(usize, usize), one: impl Fn(usize, usize)) {
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(ROWS);
        for ch in channels.clone() {
            if nr == ROWS {
                group(r, ch);
            } else {
                (r..r + nr).for_each(|row| one(row, ch));
            }
        }
        r += nr;
    }
}
