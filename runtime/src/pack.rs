//! Weight packing: the 2-bit compute layout of ternary weights (`tq2`, docs/kernels.md).
//!
//! Rules:
//! - A ternary weight `[N, K]` (a convolution's `[N, C/g, kh, kw]` viewed as `[N, C/g*kh*kw]`)
//!   is stored row by row; each row is padded to `k_pad`, a multiple of [`BLOCK`] weights.
//! - One block of 64 weights is 16 bytes: byte `j` holds the codes `w + 1` of the weights
//!   `16 s + j` of the block in bits `2 s .. 2 s + 2`, for `s` in 0..4. One 16-byte load, a
//!   shift by `2 s` and a mask by 3 give the codes of 16 consecutive weights, one per byte lane,
//!   ready for `pmaddubsw` against 16 consecutive int8 activations.
//! - Padding weights get code 1 (the value 0), and kernels pad activations with zeros, so the
//!   padding contributes nothing to either sum.
//! - Packing is exact for every shape (`K = 1`, `K = 17`, `N = 1`, ...); [`unpack_tq2`] inverts it.

/// Weights per block.
pub const BLOCK: usize = 64;
/// Bytes per block.
pub const BLOCK_BYTES: usize = BLOCK / 4;

/// `K` rounded up to whole blocks.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(BLOCK).max(1) * BLOCK
}

/// Bytes of one packed row.
pub fn row_bytes(k: usize) -> usize {
    padded_k(k) / 4
}

/// Rows per parallel task of the packing functions (rows are independent).
const ROWS_PER_TASK: usize = 64;

/// Packs one row of codes `t + 1`, padded with code 1 to whole blocks, into `dst`.
fn tq2_row(codes: &[u8], dst: &mut [u8]) {
    for (c, d) in codes.chunks_exact(BLOCK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        for (j, byte) in d.iter_mut().enumerate() {
            *byte = c[j] | c[16 + j] << 2 | c[32 + j] << 4 | c[48 + j] << 6;
        }
    }
}

/// Packs trits (`-1`, `0`, `1`, row-major `[n, k]`) into the tq2 layout (rows in parallel).
///
/// Any other value is a caller bug; it is packed as 0 in release builds.
pub fn pack_tq2(trits: &[i8], n: usize, k: usize) -> Vec<u8> {
    use rayon::prelude::*;
    debug_assert_eq!(trits.len(), n * k);
    debug_assert!(trits.iter().all(|t| (-1..=1).contains(t)));
    let (rb, kp) = (row_bytes(k), padded_k(k));
    let mut out = vec![0u8; n * rb];
    out.par_chunks_mut(rb * ROWS_PER_TASK).enumerate().for_each(|(task, dst)| {
        let mut codes = vec![1u8; kp];
        for (i, dst_row) in dst.chunks_exact_mut(rb).enumerate() {
            let r = task * ROWS_PER_TASK + i;
            let row = trits.get(r * k..(r + 1) * k).unwrap_or(&[]);
            for (c, &t) in codes.iter_mut().zip(row) {
                *c = if (-1..=1).contains(&t) { (t + 1) as u8 } else { 1 };
            }
            tq2_row(&codes, dst_row);
        }
    });
    out
}

/// Stores a tq2-packed `[n, k]` weight in the storage format ([`pack_trit5`]) directly, in
/// parallel: the same bytes as `pack_trit5(&unpack_tq2(packed, n, k))`. Tasks of a multiple
/// of five rows start on a group of five; each decodes one row at a time.
pub fn tq2_to_trit5(packed: &[u8], n: usize, k: usize) -> Vec<u8> {
    use rayon::prelude::*;
    const TASK_ROWS: usize = 5 * 16;
    let five = |g: &[u8]| g[0] + 3 * g[1] + 9 * g[2] + 27 * g[3] + 81 * g[4];
    let (rb, kp) = (row_bytes(k), padded_k(k));
    let mut out = vec![0u8; trit5_bytes(n * k)];
    if k == 0 {
        return out;
    }
    // Every task but the last writes exactly `TASK_ROWS * k / 5` bytes.
    out.par_chunks_mut(TASK_ROWS * k / TRITS_PER_BYTE).enumerate().for_each(|(task, dst)| {
        let mut codes = vec![0u8; kp];
        let (mut group, mut filled, mut at) = ([1u8; TRITS_PER_BYTE], 0, 0);
        let rows = (task * TASK_ROWS..((task + 1) * TASK_ROWS).min(n)).filter_map(|r| packed.get(r * rb..(r + 1) * rb));
        for src in rows {
            for (c, bytes) in codes.chunks_exact_mut(BLOCK).zip(src.chunks_exact(BLOCK_BYTES)) {
                for (j, &b) in bytes.iter().enumerate() {
                    c[j] = b & 3;
                    c[16 + j] = (b >> 2) & 3;
                    c[32 + j] = (b >> 4) & 3;
                    c[48 + j] = b >> 6;
                }
            }
            // Complete the group the last row left open, then whole groups, then carry the rest.
            let mut row = &codes[..k];
            if filled > 0 {
                let need = (TRITS_PER_BYTE - filled).min(row.len());
                group[filled..filled + need].copy_from_slice(&row[..need]);
                (filled, row) = (filled + need, &row[need..]);
                if filled == TRITS_PER_BYTE {
                    if let Some(d) = dst.get_mut(at) {
                        *d = five(&group);
                    }
                    (filled, at) = (0, at + 1);
                }
            }
            let groups = row.chunks_exact(TRITS_PER_BYTE);
            let rest = groups.remainder();
            let whole = row.len() / TRITS_PER_BYTE;
            if let Some(d) = dst.get_mut(at..at + whole) {
                for (d, g) in d.iter_mut().zip(groups) {
                    *d = five(g);
                }
            }
            at += whole;
            group[filled..filled + rest.len()].copy_from_slice(rest);
            filled += rest.len();
        }
        if filled > 0 {
            // The tensor's short last group, padded with code 1 (the value 0).
            group[filled..].fill(1);
            if let Some(d) = dst.get_mut(at) {
                *d = five(&group);
            }
        }
    });
    out
}

/// The trit at `(r, kk)` of a packed weight with `k` columns.
pub fn tq2_at(packed: &[u8], k: usize, r: usize, kk: usize) -> i8 {
    let (block, within) = (kk / BLOCK, kk % BLOCK);
    let (s, j) = (within / 16, within % 16);
    let byte = packed[r * row_bytes(k) + block * BLOCK_BYTES + j];
    ((byte >> (2 * s)) & 3) as i8 - 1
}

/// Inverse of [`pack_tq2`].
pub fn unpack_tq2(packed: &[u8], n: usize, k: usize) -> Vec<i8> {
    let (rb, kp) = (row_bytes(k), padded_k(k));
    let mut out = Vec::with_capacity(n * k);
    let mut row = vec![0i8; kp];
    for r in 0..n {
        for (block, bytes) in packed[r * rb..(r + 1) * rb].chunks_exact(BLOCK_BYTES).enumerate() {
            for (j, &byte) in bytes.iter().enumerate() {
                for s in 0..4 {
                    row[block * BLOCK + 16 * s + j] = ((byte >> (2 * s)) & 3) as i8 - 1;
                }
            }
        }
        out.extend_from_slice(&row[..k]);
    }
    out
}

/// Trits per byte of the storage format ([`pack_trit5`]).
pub const TRITS_PER_BYTE: usize = 5;

/// Bytes of `count` trits in the storage format.
pub fn trit5_bytes(count: usize) -> usize {
    count.div_ceil(TRITS_PER_BYTE)
}

/// The storage format of ternary weights (artifacts): the tensor's trits in row-major order,
/// cut into groups of five, a group `t0..t4` being the byte `sum (t_i + 1) * 3^i` (0..=242;
/// 1.6 bits per weight). A short last group is padded with zeros. Values other than -1, 0, 1
/// are a caller bug, stored as 0.
pub fn pack_trit5(trits: &[i8]) -> Vec<u8> {
    trits
        .chunks(TRITS_PER_BYTE)
        .map(|group| {
            (0..TRITS_PER_BYTE).rev().fold(0u8, |byte, i| {
                let code = match group.get(i) {
                    Some(&t) if (-1..=1).contains(&t) => (t + 1) as u8,
                    _ => 1,
                };
                byte * 3 + code
            })
        })
        .collect()
}

/// A byte of the storage format that is not a group of five trits (above 242).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset} is {value}, not five trits (at most 242)")]
pub struct BadTrits {
    pub offset: usize,
    pub value: u8,
}

/// The codes `t + 1` of the five trits of every possible storage byte.
const TRIT5_CODES: [[u8; TRITS_PER_BYTE]; 243] = {
    let mut table = [[0u8; TRITS_PER_BYTE]; 243];
    let mut b = 0;
    while b < 243 {
        let mut v = b;
        let mut i = 0;
        while i < TRITS_PER_BYTE {
            table[b][i] = (v % 3) as u8;
            v /= 3;
            i += 1;
        }
        b += 1;
    }
    table
};

/// The codes `t + 1` of `count` stored trits.
fn trit5_codes(stored: &[u8], count: usize) -> Result<Vec<u8>, BadTrits> {
    debug_assert_eq!(stored.len(), trit5_bytes(count));
    let mut codes = Vec::with_capacity(stored.len() * TRITS_PER_BYTE);
    for (offset, &value) in stored.iter().enumerate() {
        codes.extend_from_slice(TRIT5_CODES.get(usize::from(value)).ok_or(BadTrits { offset, value })?);
    }
    codes.truncate(count);
    Ok(codes)
}

/// Decodes `count` trits of the storage format ([`pack_trit5`]); `stored` must hold
/// [`trit5_bytes`]`(count)` bytes.
pub fn unpack_trit5(stored: &[u8], count: usize) -> Result<Vec<i8>, BadTrits> {
    Ok(trit5_codes(stored, count)?.into_iter().map(|c| c as i8 - 1).collect())
}

/// Expands a stored `[n, k]` weight ([`pack_trit5`]) straight into the compute layout
/// ([`pack_tq2`]); `stored` must hold [`trit5_bytes`]`(n * k)` bytes.
pub fn trit5_to_tq2(stored: &[u8], n: usize, k: usize) -> Result<Vec<u8>, BadTrits> {
    let codes = trit5_codes(stored, n * k)?;
    let (rb, kp) = (row_bytes(k), padded_k(k));
    let mut out = vec![0u8; n * rb];
    // One row's codes, padded with code 1 (the value 0) to whole blocks.
    let mut row = vec![1u8; kp];
    for (r, dst_row) in out.chunks_exact_mut(rb).enumerate() {
        row[..k].copy_from_slice(&codes[r * k..(r + 1) * k]);
        tq2_row(&row, dst_row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_puts_sixteen_consecutive_weights_in_one_bit_plane() {
        // Weight 16 s + j of block 0 lives in byte j at bits 2 s.
        let mut trits = vec![0i8; 64];
        trits[0] = 1; // byte 0, s = 0 -> code 2
        trits[16] = -1; // byte 0, s = 1 -> code 0
        trits[63] = 1; // byte 15, s = 3 -> code 2
        let p = pack_tq2(&trits, 1, 64);
        assert_eq!(p.len(), 16);
        assert_eq!(p[0], 0b01_01_00_10);
        assert_eq!(p[15], 0b10_01_01_01);
        assert!(p[1..15].iter().all(|b| *b == 0b01_01_01_01));
    }

    #[test]
    fn odd_shapes_pad_with_zero_weights() {
        for (n, k) in [(1, 1), (3, 17), (2, 64), (5, 65), (1, 130)] {
            let trits: Vec<i8> = (0..n * k).map(|i| (i % 3) as i8 - 1).collect();
            let p = pack_tq2(&trits, n, k);
            assert_eq!(p.len(), n * padded_k(k) / 4);
            assert_eq!(unpack_tq2(&p, n, k), trits);
            for r in 0..n {
                for kk in k..padded_k(k) {
                    assert_eq!(tq2_at(&p, k, r, kk), 0, "padding of ({n}, {k}) row {r} at {kk}");
                }
            }
        }
    }

    #[test]
    fn trit5_bytes_are_base_three_little_end_first() {
        // (t + 1) = 2, 0, 1, 1, 1 -> 2 + 0 * 3 + 1 * 9 + 1 * 27 + 1 * 81 = 119.
        assert_eq!(pack_trit5(&[1, -1, 0, 0, 0]), vec![119]);
        // Padding is the value 0: one trit `1` alone is 2 + 3 + 9 + 27 + 81 = 122.
        assert_eq!(pack_trit5(&[1]), vec![122]);
        assert_eq!(pack_trit5(&[1; 10]), vec![242, 242]);
        assert_eq!(unpack_trit5(&[243], 5), Err(BadTrits { offset: 0, value: 243 }));
        assert_eq!(trit5_to_tq2(&[0, 255], 2, 3), Err(BadTrits { offset: 1, value: 255 }));
    }

    proptest! {
        #[test]
        fn trit5_round_trips_and_expands_to_tq2(n in 1usize..150, k in 1usize..200, seed in any::<u64>()) {
            let mut s = seed | 1;
            let trits: Vec<i8> = (0..n * k).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 3) as i8 - 1 }).collect();
            let stored = pack_trit5(&trits);
            prop_assert_eq!(stored.len(), trit5_bytes(n * k));
            prop_assert_eq!(unpack_trit5(&stored, n * k).expect("valid"), trits.clone());
            prop_assert_eq!(trit5_to_tq2(&stored, n, k).expect("valid"), pack_tq2(&trits, n, k));
            // Straight from the compute layout (parallel over rows and byte ranges).
            prop_assert_eq!(tq2_to_trit5(&pack_tq2(&trits, n, k), n, k), stored);
        }

        #[test]
        fn pack_unpack_round_trips(n in 1usize..140, k in 1usize..300, seed in any::<u64>()) {
            let mut s = seed | 1;
            let trits: Vec<i8> = (0..n * k).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 3) as i8 - 1 }).collect();
            prop_assert_eq!(unpack_tq2(&pack_tq2(&trits, n, k), n, k), trits);
        }
    }
}
