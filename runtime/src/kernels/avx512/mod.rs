//! AVX-512 microkernels (x86-64 with AVX512-F/BW/VL and VNNI): the tq2 matrix product on
//! `vpdpbusd` and the convolution product over int8 weight panels ([`conv`]); gathers,
//! depthwise and pooling run the AVX2 code at this level (see `kernels::conv`).

pub(crate) mod conv;
pub(crate) mod tq2;
