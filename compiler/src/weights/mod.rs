//! Weights: the latent f32 value of every parameter, by name.
//!
//! Rules:
//! - Without a weights file, every parameter gets its declared initialisation, seeded and
//!   deterministic: the same seed gives the same values for a parameter name whatever else the
//!   model contains (each name has its own random stream).
//! - A safetensors file must hold exactly the model's parameters with their shapes; anything
//!   missing, extra or mis-shaped is one error listing every offender. f32, f64, f16 and bf16
//!   tensors are accepted (converted to f32).

pub mod quant;

use std::collections::HashMap;
use std::fmt;

use ndarray::{ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::ir::{Init, ParamInfo};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: HashMap<String, ArrayD<f32>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsError {
    Format(String),
    Mismatch { missing: Vec<String>, extra: Vec<String>, wrong_shape: Vec<String>, wrong_dtype: Vec<String> },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Format(e) => write!(f, "not a valid safetensors file: {e}"),
            WeightsError::Mismatch { missing, extra, wrong_shape, wrong_dtype } => {
                writeln!(f, "the weights do not match the model's parameters:")?;
                for m in missing {
                    writeln!(f, "  missing: {m}")?;
                }
                for w in wrong_shape {
                    writeln!(f, "  wrong shape: {w}")?;
                }
                for w in wrong_dtype {
                    writeln!(f, "  unsupported dtype: {w}")?;
                }
                for e in extra {
                    writeln!(f, "  not a parameter of the model: {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for WeightsError {}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A uniform f32 in [-1, 1) from 24 random bits.
#[cfg(test)]
fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    from_bits(rng.next_u32())
}

/// A uniform f32 in [-1, 1) from the top 24 bits of `bits`.
fn from_bits(bits: u32) -> f32 {
    ((bits >> 8) as f32 / (1u32 << 23) as f32) - 1.0
}

impl Weights {
    /// Seeded initialisation of every parameter (He/Kaiming-uniform for `init = "kaiming"`:
    /// U(-b, b) with b = sqrt(6 / fan_in), fan_in = the product of all dimensions but the first).
    pub fn init(params: &[ParamInfo], seed: u64) -> Weights {
        use rayon::prelude::*;
        // Each parameter has its own stream (seeded by its name): parameters fill in parallel
        // with the same values as one after another.
        let tensors = params.par_iter().map(|p| (p.name.clone(), Self::init_one(p, seed))).collect();
        Weights { tensors }
    }

    fn init_one(p: &ParamInfo, seed: u64) -> ArrayD<f32> {
        let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
        let mut a = ArrayD::<f32>::zeros(IxDyn(&shape));
        match p.init {
            Init::Zeros => {}
            Init::Ones => a.fill(1.0),
            Init::Const(v) => a.fill(v as f32),
            Init::Kaiming => {
                let fan_in = if shape.len() > 1 {
                    shape[1..].iter().product::<usize>()
                } else {
                    shape.first().copied().unwrap_or(1)
                };
                let bound = (6.0 / fan_in.max(1) as f32).sqrt();
                let rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(&p.name));
                // Value `i` is word `i` of the parameter's stream (as one `next_u32` per value);
                // chunks of the array seek to their first word and fill in parallel.
                let fill = |start: usize, chunk: &mut [f32]| {
                    let mut rng = rng.clone();
                    rng.set_word_pos(start as u128);
                    let mut buf = [0u8; 4096];
                    for part in chunk.chunks_mut(buf.len() / 4) {
                        let bytes = &mut buf[..part.len() * 4];
                        rng.fill_bytes(bytes);
                        for (d, w) in part.iter_mut().zip(bytes.chunks_exact(4)) {
                            *d = from_bits(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) * bound;
                        }
                    }
                };
                match a.as_slice_mut() {
                    Some(all) => {
                        use rayon::prelude::*;
                        const CHUNK: usize = 1 << 16;
                        all.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| fill(i * CHUNK, c));
                    }
                    None => {
                        // Not reached (a fresh array is contiguous); the same values one by one.
                        let mut one = [0.0f32];
                        for (i, d) in a.iter_mut().enumerate() {
                            fill(i, &mut one);
                            *d = one[0];
                        }
                    }
                }
            }
        }
        a
    }

    /// Reads a safetensors file's bytes, checked against the model's parameters.
    pub fn from_safetensors(bytes: &[u8], params: &[ParamInfo]) -> Result<Weights, WeightsError> {
        use safetensors::{Dtype, SafeTensors};
        let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
        let mut tensors = HashMap::new();
        let (mut missing, mut wrong_shape, mut wrong_dtype) = (Vec::new(), Vec::new(), Vec::new());
        for p in params {
            let Ok(view) = st.tensor(&p.name) else {
                missing.push(format!("{} {}{:?}", p.name, p.dtype, p.shape));
                continue;
            };
            let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            if view.shape() != shape.as_slice() {
                wrong_shape.push(format!("{}: expected {:?}, found {:?}", p.name, shape, view.shape()));
                continue;
            }
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
                other => {
                    wrong_dtype.push(format!("{}: {other:?} (expected F32, F64, F16 or BF16)", p.name));
                    continue;
                }
            };
            let array = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| WeightsError::Format(e.to_string()))?;
            tensors.insert(p.name.clone(), array);
        }
        // Scales of quantized weights (as `triton train` saves them) are derived values: accepted
        // when shaped [out channels], not used.
        let scales: HashMap<String, u64> = params
            .iter()
            .filter(|p| p.quant.is_some())
            .map(|p| (scale_name(params, &p.name), p.shape.first().copied().unwrap_or(1)))
            .collect();
        for (name, n) in &scales {
            if let Ok(view) = st.tensor(name)
                && view.shape() != [*n as usize]
            {
                wrong_shape
                    .push(format!("{name}: expected [{n}] (one scale per output channel), found {:?}", view.shape()));
            }
        }
        let mut extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !params.iter().any(|p| p.name == **n) && !scales.contains_key(*n))
            .map(|s| s.to_string())
            .collect();
        extra.sort();
        if missing.is_empty() && extra.is_empty() && wrong_shape.is_empty() && wrong_dtype.is_empty() {
            Ok(Weights { tensors })
        } else {
            Err(WeightsError::Mismatch { missing, extra, wrong_shape, wrong_dtype })
        }
    }

    /// Serialises the weights as safetensors (f32, names sorted), with metadata.
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>, WeightsError> {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let mut owned: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for n in names {
            let a = &self.tensors[n];
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            owned.push((n.clone(), bytes, a.shape().to_vec()));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, b, s)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| WeightsError::Format(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, metadata).map_err(|e| WeightsError::Format(e.to_string()))
    }
}

/// The name a quantized weight's per-output-channel scale is saved under next to it:
/// `fc1.w` -> `fc1.scale` (unless the layer has a parameter of that name), else `<name>.scale`.
pub fn scale_name(params: &[ParamInfo], param: &str) -> String {
    match param.strip_suffix(".w").map(|p| format!("{p}.scale")) {
        Some(s) if !params.iter().any(|p| p.name == s) => s,
        _ => format!("{param}.scale"),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | ((f << (shift + 13)) & 0x7f_ffff)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    /// Kaiming init reads the stream in bulk: the values are the ones a `next_u32` per value
    /// gives (the seeded weights every test and shipped example relies on).
    #[test]
    fn bulk_init_draws_the_same_values_as_one_word_per_value() {
        let p = ParamInfo {
            name: "fc.w".into(),
            kind: crate::ir::ParamKind::Weight,
            dtype: triton_runtime::DType::Trit,
            // More values than one 4 KB block of the stream holds, twice over.
            shape: vec![3, 700],
            quant: None,
            init: Init::Kaiming,
            span: crate::source::Span::new(crate::source::FileId(0), 0, 0),
        };
        let w = Weights::init(std::slice::from_ref(&p), 42);
        let mut rng = ChaCha8Rng::seed_from_u64(42 ^ fnv1a("fc.w"));
        let bound = (6.0f32 / 700.0).sqrt();
        let want: Vec<f32> = (0..2100).map(|_| uniform(&mut rng) * bound).collect();
        assert_eq!(w.tensors["fc.w"].as_slice().expect("standard layout"), &want[..]);
    }
}
