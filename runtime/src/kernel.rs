//! JIT kernels as the runtime sees them: relocation-free machine code mapped executable, and the
//! argument block every ternary GEMM kernel reads.
//!
//! Rules:
//! - A kernel is a leaf function `extern "C" fn(*const GemmArgs)` with no relocations: every
//!   pointer arrives in [`GemmArgs`], constants sit in the function's own RIP-relative pool. So
//!   its bytes can be copied anywhere (from an artifact or the cache) and run.
//! - [`CodeMemory`] owns the executable mapping; it is immutable once made (W^X: written while
//!   anonymous read-write, then switched to read-execute).
//! - Calling a kernel is `unsafe`: the caller guarantees the pointers in [`GemmArgs`] cover
//!   what the kernel's specialization reads and writes (the plan builder checks the sizes).

use std::fmt;

/// Arguments of a ternary GEMM kernel for `rows` consecutive activation rows. Layout is part of
/// the kernel ABI: the code generator reads fields at these offsets (see [`GemmArgs::OFFSETS`]).
/// Row strides are constants of the kernel: `k_pad` bytes for `x`, `N` floats for `out` and
/// `residual`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs {
    /// Int8 activations, `rows` rows of `k_pad` bytes, zero past `K`.
    pub x: *const i8,
    /// Packed weights (tq2), `N` rows of `k_pad / 4` bytes.
    pub w: *const u8,
    /// Per output channel: the weight's scale (alpha).
    pub alpha: *const f32,
    /// Per output channel epilogue scale (read only when the kernel has one).
    pub scale: *const f32,
    /// Per output channel bias (read only when the kernel has one).
    pub bias: *const f32,
    /// Residual rows, `N` values each (read only when the kernel has one).
    pub residual: *const f32,
    /// Output rows, `N` values each.
    pub out: *mut f32,
    /// Per row: the sum of its int8 activations (removes the +1 offset of the codes).
    pub xsum: *const i32,
    /// Per row: its activation scale.
    pub sx: *const f32,
    /// Rows to compute.
    pub rows: u64,
    /// Tiles of output channels to compute: `[tile_begin, tile_end)`; the last tile may be partial.
    pub tile_begin: u64,
    pub tile_end: u64,
}

impl GemmArgs {
    /// Byte offsets of the fields, in declaration order.
    pub const OFFSETS: [i32; 12] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88];
}

const _: () = {
    assert!(std::mem::size_of::<GemmArgs>() == 96);
    assert!(std::mem::offset_of!(GemmArgs, xsum) == 56);
    assert!(std::mem::offset_of!(GemmArgs, rows) == 72);
    assert!(std::mem::offset_of!(GemmArgs, tile_end) == 88);
};

/// A kernel's entry point.
pub type KernelFn = unsafe extern "C" fn(*const GemmArgs);

/// Arguments of a direct convolution kernel (f32, channels-last) for output rows
/// `[row_begin, row_end)` of one sample. Layout is part of the kernel ABI (see
/// [`ConvArgs::OFFSETS`]); every size (channels, widths, taps, strides, dilation) is a constant
/// of the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConvArgs {
    /// The sample's input with its zero padding, `[H + 2 ph, W + 2 pw, C]` f32 values; for
    /// int8 kernels `[H + 2 ph, W + 2 pw, C4]` bytes `x + 128` (`C4 = ceil(C / 4) * 4`; padding
    /// and padded channels hold 128, the biased zero).
    pub x: *const u8,
    /// Weights: f32 `[kh, kw, C, O4]` (per tap and input channel the output channels, padded
    /// with zeros to `O4 = ceil(O / 4) * 4`); int8 `[kh, kw, C4 / 4, O4 / 4, 4, 4]` signed codes
    /// (per tap and group of 4 input channels, per vector of 4 output channels, 4 x 4 bytes:
    /// output channel major).
    pub w: *const u8,
    /// Per output channel vectors, `O4` values each, in this order: the multiplier, the scale,
    /// the bias (each read only when the kernel has it; absent ones take no room).
    pub epi: *const f32,
    /// Per tap `(u, v, c)` of the reduction, the byte offset of its input value from the
    /// window's corner (`((u * dh * (W + 2 pw) + v * dw) * C + c) * 4`).
    pub taps: *const i32,
    /// The sample's residual `[OH, OW, O]` (read only when the kernel has one).
    pub residual: *const f32,
    /// The sample's output `[OH, OW, O]`.
    pub out: *mut f32,
    pub row_begin: u64,
    pub row_end: u64,
    /// Int8 kernels: the sample's activation scale.
    pub sx: *const f32,
    /// Int8 kernels: per output channel `-128 * sum(w)` (`O4` values), removing the bias of
    /// the inputs.
    pub corr: *const i32,
}

impl ConvArgs {
    /// Byte offsets of the fields, in declaration order.
    pub const OFFSETS: [i32; 10] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 72];
}

const _: () = {
    assert!(std::mem::size_of::<ConvArgs>() == 80);
    assert!(std::mem::offset_of!(ConvArgs, corr) == 72);
    assert!(std::mem::offset_of!(ConvArgs, out) == 40);
    assert!(std::mem::offset_of!(ConvArgs, row_end) == 56);
};

/// The tap table of a direct convolution kernel ([`ConvArgs::taps`]): per tap `(u, v, c)` of
/// the reduction, in that order, the byte offset of its input value from the window's corner
/// in an input `w_pad` pixels wide with `c` channels.
pub fn conv_taps(c: usize, w_pad: usize, kh: usize, kw: usize, dil: [usize; 2]) -> Vec<i32> {
    let mut t = Vec::with_capacity(kh * kw * c);
    for u in 0..kh {
        for v in 0..kw {
            for ci in 0..c {
                t.push((((u * dil[0] * w_pad + v * dil[1]) * c + ci) * 4) as i32);
            }
        }
    }
    t
}

/// A direct convolution kernel's entry point.
pub type ConvKernelFn = unsafe extern "C" fn(*const ConvArgs);

/// Machine code of several kernels in one read-execute mapping.
pub struct CodeMemory {
    map: memmap2::Mmap,
    /// Entry offsets, one per kernel.
    offsets: Vec<usize>,
}

impl fmt::Debug for CodeMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeMemory").field("bytes", &self.map.len()).field("kernels", &self.offsets.len()).finish()
    }
}

/// Code memory could not be mapped.
#[derive(Debug, thiserror::Error)]
#[error("cannot map kernel code executable: {0}")]
pub struct MapError(#[from] std::io::Error);

/// Kernels start on 16-byte boundaries.
pub const CODE_ALIGN: usize = 16;

impl CodeMemory {
    /// Copies kernels' code into a fresh mapping and makes it executable.
    pub fn new(kernels: &[Vec<u8>]) -> Result<CodeMemory, MapError> {
        let mut offsets = Vec::with_capacity(kernels.len());
        let mut len = 0;
        for k in kernels {
            offsets.push(len);
            len = (len + k.len()).div_ceil(CODE_ALIGN) * CODE_ALIGN;
        }
        let mut map = memmap2::MmapMut::map_anon(len.max(CODE_ALIGN))?;
        for (k, &off) in kernels.iter().zip(&offsets) {
            map[off..off + k.len()].copy_from_slice(k);
        }
        Ok(CodeMemory { map: map.make_exec()?, offsets })
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn code_bytes(&self) -> usize {
        self.map.len()
    }

    /// The entry point of kernel `i`.
    pub fn entry(&self, i: usize) -> KernelFn {
        let ptr = self.map[self.offsets[i]..].as_ptr();
        // SAFETY: the mapping is executable and kernel `i` starts at this offset with the
        // `KernelFn` ABI (the code generator's contract); it lives as long as `self`.
        unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
    }

    /// The entry point of kernel `i`, a direct convolution kernel.
    pub fn conv_entry(&self, i: usize) -> ConvKernelFn {
        let ptr = self.map[self.offsets[i]..].as_ptr();
        // SAFETY: as for `entry`, with the `ConvKernelFn` ABI (the plan says which kernels are
        // convolution kernels, and the code generator made them so).
        unsafe { std::mem::transmute::<*const u8, ConvKernelFn>(ptr) }
    }
}
