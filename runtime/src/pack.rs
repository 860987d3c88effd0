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

/// Packs trits (`-1`, `0`, `1`, row-major `[n, k]`) into the tq2 layout.
///
/// Any other value is a caller bug; it is packed as 0 in release builds.
pub fn pack_tq2(trits: &[i8], n: usize, k: usize) -> Vec<u8> {
    debug_assert_eq!(trits.len(), n * k);
    debug_assert!(trits.iter().all(|t| (-1..=1).contains(t)));
    let rb = row_bytes(k);
    let mut out = vec![0u8; n * rb];
    for r in 0..n {
        let row = &trits[r * k..(r + 1) * k];
        let dst = &mut out[r * rb..(r + 1) * rb];
        for (i, byte) in dst.iter_mut().enumerate() {
            let (block, j) = (i / BLOCK_BYTES, i % BLOCK_BYTES);
            let mut b = 0u8;
            for s in 0..4 {
                let kk = block * BLOCK + 16 * s + j;
                let code = match row.get(kk) {
                    Some(&t) if (-1..=1).contains(&t) => (t + 1) as u8,
                    _ => 1,
                };
                b |= code << (2 * s);
            }
            *byte = b;
        }
    }
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
    (0..n).flat_map(|r| (0..k).map(move |kk| (r, kk))).map(|(r, kk)| tq2_at(packed, k, r, kk)).collect()
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

    proptest! {
        #[test]
        fn pack_unpack_round_trips(n in 1usize..6, k in 1usize..300, seed in any::<u64>()) {
            let mut s = seed | 1;
            let trits: Vec<i8> = (0..n * k).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 3) as i8 - 1 }).collect();
            prop_assert_eq!(unpack_tq2(&pack_tq2(&trits, n, k), n, k), trits);
        }
    }
}
