//! AVX-512 microkernels (x86-64 with AVX512-F/BW/VL and VNNI). So far the tq2 matrix product
//! on `vpdpbusd`; convolutions and pooling run the AVX2 kernels at this level (see
//! `kernels::conv`).

pub(crate) mod tq2;
