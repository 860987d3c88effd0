//! The convolution kernels' contract: the window geometry and the depthwise element type that
//! the dispatcher (`kernels::conv`) and the AVX-512 depthwise kernel share.

/// A convolution window over one sample.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// The input row tap row `u` of output row `i` reads, if inside the image.
    #[inline(always)]
    pub fn row(&self, i: usize, u: usize) -> Option<usize> {
        (i * self.stride[0] + u * self.dil[0]).checked_sub(self.pad[0]).filter(|y| *y < self.h)
    }

    /// The input column tap column `v` of output column `j` reads, if inside the image.
    #[inline(always)]
    pub fn col(&self, j: usize, v: usize) -> Option<usize> {
        (j * self.stride[1] + v * self.dil[1]).checked_sub(self.pad[1]).filter(|x| *x < self.w)
    }

    /// Calls `f(tap, input pixel)` for every tap of output pixel `p` in `(u, v)` order, with
    /// `None` for a tap outside the image.
    #[inline(always)]
    pub fn for_taps(&self, p: usize, mut f: impl FnMut(usize, Option<usize>)) {
        let (i, j) = (p / self.ow, p % self.ow);
        for u in 0..self.kh {
            let y = self.row(i, u);
            for v in 0..self.kw {
                f(u * self.kw + v, y.zip(self.col(j, v)).map(|(y, x)| y * self.w + x));
            }
        }
    }

    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// A depthwise input element: int8 codes sum exactly in i32, f32 values in f32.
pub trait DepthwiseValue: Copy {
    type Acc: Copy + Default + std::ops::AddAssign;
    fn mul(self, w: Self) -> Self::Acc;
    fn to_f32(acc: Self::Acc) -> f32;
}

impl DepthwiseValue for i8 {
    type Acc = i32;
    #[inline(always)]
    fn mul(self, w: i8) -> i32 {
        i32::from(self) * i32::from(w)
    }
    #[inline(always)]
    fn to_f32(acc: i32) -> f32 {
        acc as f32
    }
}

impl DepthwiseValue for f32 {
    type Acc = f32;
    #[inline(always)]
    fn mul(self, w: f32) -> f32 {
        self * w
    }
    #[inline(always)]
    fn to_f32(acc: f32) -> f32 {
        acc
    }
}
