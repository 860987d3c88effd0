//! The compiled-model artifact (`.tcm`, "Triton compiled model"): one file with everything a
//! [`Model`] needs, written by the compiler and loaded here without it.
//!
//! Layout (little-endian throughout):
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..8 | magic `\x89TCM\r\n\x1a\n` (catches text-mode transfers, like PNG's) |
//! | 8..12 | format version ([`FORMAT_VERSION`]) |
//! | 12..16 | zero (reserved) |
//! | 16..24 | payload length in bytes |
//! | 24..56 | blake3 hash of the payload |
//! | 56..64 | zero (reserved) |
//! | 64.. | payload: `u32` length + [`Meta`] (postcard), `u32` length + plan (postcard), zero padding to a multiple of 64, then the data section |
//!
//! The plan is the model's steps, signature and tensor descriptions; every tensor and kernel
//! is a byte range of the data section, which starts on a 64-byte boundary and holds each range
//! on a 16-byte (code) or 64-byte (tensors) boundary.
//!
//! Rules:
//! - Loading checks, in this order, and stops at the first failure with its own
//!   [`LoadError`]: the magic, the format version, the length (truncated or trailing bytes), the
//!   checksum, the target (architecture and OS: the calling convention), the CPU features the
//!   machine code was built for, then the plan's structure ([`ModelParts::validate`]). Nothing
//!   of a file is executed before all of these pass.
//! - Ternary weights are stored 5 trits per byte ([`pack::pack_trit5`], 1.6 bits per weight)
//!   and expanded to the compute layout at load. Other tensors are stored exactly: f32 bytes as
//!   they are, or, when every value is equal or every value is a small integer (the codes of a
//!   quantized weight kept dense), one value or one byte per value. Re-encoding is lossless
//!   bit for bit (checked on the bits, so `-0.0` and NaN payloads survive).
//! - The file is read, not memory-mapped: a mapped file truncated by another process while in
//!   use would crash the reader (SIGBUS), and every byte is decoded once anyway.

use std::path::Path;

use ndarray::{Array2, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::engine::plan::{GemmWeight, Layout, ModelParts, Shape, Src, Step, WeightData};
use crate::engine::{Model, PartsError};
use crate::kernel::CODE_ALIGN;
use crate::pack;

/// Version of the layout above and of the plan's encoding; bumped on any change (4: the
/// normalization, permutation and batched-product steps; 5: the reduction step; 6: the causal
/// mask step).
pub const FORMAT_VERSION: u32 = 8;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"\x89TCM\r\n\x1a\n";

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 64;

/// Alignment of the data section and of each tensor in it.
const DATA_ALIGN: usize = 64;

/// What the machine code was built by and for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Version of the compiler that wrote the file.
    pub compiler_version: String,
    /// Version of Cranelift that generated the machine code.
    pub cranelift_version: String,
    /// `arch-os` (see [`host_target`]): the instruction set and calling convention.
    pub target: String,
    /// The full target triple, for the record.
    pub target_triple: String,
    /// CPU features the machine code may use, by their `std::arch` names (`avx2`, `sse4.1`);
    /// loading requires every one.
    pub cpu_features: Vec<String>,
    /// The code generator's ISA flags (`name=value`), for the record.
    pub isa_flags: Vec<String>,
    /// Optimization level, `O0`..`O3`.
    pub opt_level: String,
    /// `ternary` or `fp32`.
    pub precision: String,
    /// The key the model was compiled under (blake3 of its sources, weights and options), hex.
    pub source_key: String,
}

/// An input or output: name, shape (`B` is the free batch size) and element type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSig {
    pub name: String,
    pub shape: Shape,
    pub dtype: DType,
}

/// The architecture and OS this runtime was built for, as artifacts record it.
pub fn host_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Whether this CPU has the feature `name` (a `std::arch` name); `None` for a name this runtime
/// does not know (an artifact from a newer compiler, or another architecture).
pub fn cpu_has(name: &str) -> Option<bool> {
    crate::cpu::has_feature(name)
}

/// Why an artifact could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a Triton compiled model (expected a file starting with the `.tcm` magic bytes)")]
    NotAnArtifact,
    #[error(
        "artifact format version {found}, but this runtime reads version {supported}; recompile the model with `triton compile`"
    )]
    Version { found: u32, supported: u32 },
    #[error("truncated artifact: {expected} bytes expected, {got} present")]
    Truncated { expected: u64, got: u64 },
    #[error("corrupted artifact: {0} unexpected bytes after the payload")]
    Trailing(u64),
    #[error("corrupted artifact: checksum mismatch (blake3 of the payload is {actual}, the header says {recorded})")]
    Checksum { recorded: String, actual: String },
    #[error("the artifact was compiled for {built_for}, this machine is {host}")]
    Target { built_for: String, host: String },
    #[error("this CPU lacks features the artifact's machine code uses: {}; recompile on this machine", missing.join(", "))]
    CpuFeatures { missing: Vec<String> },
    #[error("corrupted artifact: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Parts(#[from] PartsError),
}

/// Sizes of an artifact's parts, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeReport {
    pub total: usize,
    /// Ternary weights (5 trits per byte).
    pub trits: usize,
    /// Trits stored.
    pub trit_count: usize,
    /// Other tensors: f32 weights, scales, biases, constants.
    pub tensors: usize,
    /// Machine code of the kernels.
    pub code: usize,
    /// Header, metadata, plan and padding.
    pub other: usize,
}

impl SizeReport {
    /// Bits per ternary weight in storage.
    pub fn bits_per_trit(&self) -> f64 {
        if self.trit_count == 0 { 0.0 } else { self.trits as f64 * 8.0 / self.trit_count as f64 }
    }
}

/// A byte range of the data section.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Range {
    offset: u64,
    len: u64,
}

/// How a stored tensor's bytes encode its f32 values.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Encoding {
    /// 4 bytes per value.
    F32,
    /// Every value has these bits; nothing in the data section.
    Splat(u32),
    /// One signed byte per value (values that are small integers).
    I8,
    /// Trits, 5 per byte ([`pack::pack_trit5`]).
    Trit5,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tensor {
    shape: Vec<usize>,
    enc: Encoding,
    at: Range,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum StoredData {
    Tq2 {
        trits: Range,
        kernel: usize,
        tile: usize,
        f32_x: bool,
    },
    /// A convolution's trits (re-laid out at load).
    Trits {
        trits: Range,
    },
    Dense {
        w_t: Tensor,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredWeight {
    name: String,
    n: usize,
    k: usize,
    alpha: Option<Tensor>,
    data: StoredData,
}

/// The plan: [`ModelParts`] with every tensor and kernel replaced by its place in the data.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plan {
    name: String,
    inputs: Vec<TensorSig>,
    outputs: Vec<TensorSig>,
    output_srcs: Vec<Src>,
    consts: Vec<Tensor>,
    weights: Vec<StoredWeight>,
    steps: Vec<Step>,
    frees: Vec<Vec<usize>>,
    slots: usize,
    layouts: Vec<Layout>,
    kernels: Vec<Range>,
}

/// The data section under construction.
#[derive(Default)]
struct Data {
    bytes: Vec<u8>,
    sizes: SizeReport,
}

impl Data {
    fn push(&mut self, b: &[u8], align: usize) -> Range {
        self.bytes.resize(self.bytes.len().next_multiple_of(align), 0);
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(b);
        Range { offset, len: b.len() as u64 }
    }

    /// Stores f32 values with the smallest exact encoding.
    fn tensor(&mut self, shape: &[usize], values: impl Iterator<Item = f32> + Clone) -> Tensor {
        let shape = shape.to_vec();
        let mut it = values.clone();
        let first = it.next().map(f32::to_bits);
        let exact =
            |f: fn(f32) -> Option<f32>| values.clone().all(|v| f(v).is_some_and(|d| d.to_bits() == v.to_bits()));
        let none = Range { offset: 0, len: 0 };
        if let Some(bits) = first.filter(|b| it.all(|v| v.to_bits() == *b)) {
            return Tensor { shape, enc: Encoding::Splat(bits), at: none };
        }
        let as_trit = |v: f32| (v == v.round() && v.abs() <= 1.0).then_some(v);
        let as_i8 = |v: f32| (v == v.round() && (-128.0..=127.0).contains(&v)).then_some(v);
        if exact(as_trit) && !shape.is_empty() {
            let trits: Vec<i8> = values.clone().map(|v| v as i8).collect();
            let packed = pack::pack_trit5(&trits);
            self.sizes.trits += packed.len();
            self.sizes.trit_count += trits.len();
            return Tensor { shape, enc: Encoding::Trit5, at: self.push(&packed, DATA_ALIGN) };
        }
        if exact(as_i8) {
            let bytes: Vec<u8> = values.map(|v| v as i8 as u8).collect();
            self.sizes.tensors += bytes.len();
            return Tensor { shape, enc: Encoding::I8, at: self.push(&bytes, DATA_ALIGN) };
        }
        let bytes: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
        self.sizes.tensors += bytes.len();
        Tensor { shape, enc: Encoding::F32, at: self.push(&bytes, DATA_ALIGN) }
    }
}

/// Serializes a compiled model into artifact bytes; also returns their sizes by part.
pub fn to_bytes(parts: &ModelParts, meta: &Meta) -> Result<(Vec<u8>, SizeReport), String> {
    parts.validate()?;
    let mut data = Data::default();
    let sig = |v: &[(String, Shape)]| {
        v.iter()
            .map(|(name, shape)| TensorSig { name: name.clone(), shape: shape.clone(), dtype: DType::F32 })
            .collect()
    };
    let kernels = parts
        .kernels
        .iter()
        .map(|k| {
            data.sizes.code += k.len();
            data.push(k, CODE_ALIGN)
        })
        .collect();
    let consts = parts.consts.iter().map(|c| data.tensor(c.shape(), c.iter().copied())).collect();
    let weights = parts
        .weights
        .iter()
        .map(|w| {
            let alpha = w.alpha.as_ref().map(|a| data.tensor(&[a.len()], a.iter().copied()));
            let stored = match &w.data {
                WeightData::Tq2 { packed, kernel, tile, f32_x, .. } => {
                    let stored = pack::tq2_to_trit5(packed, w.n, w.k);
                    data.sizes.trits += stored.len();
                    data.sizes.trit_count += w.n * w.k;
                    let trits = data.push(&stored, DATA_ALIGN);
                    StoredData::Tq2 { trits, kernel: *kernel, tile: *tile, f32_x: *f32_x }
                }
                WeightData::Trits { packed } => {
                    let stored = pack::tq2_to_trit5(packed, w.n, w.k);
                    data.sizes.trits += stored.len();
                    data.sizes.trit_count += w.n * w.k;
                    StoredData::Trits { trits: data.push(&stored, DATA_ALIGN) }
                }
                WeightData::Dense { w_t } => StoredData::Dense { w_t: data.tensor(&[w.k, w.n], w_t.iter().copied()) },
            };
            StoredWeight { name: w.name.clone(), n: w.n, k: w.k, alpha, data: stored }
        })
        .collect();
    let plan = Plan {
        name: parts.name.clone(),
        inputs: sig(&parts.inputs),
        outputs: sig(&parts.output_sig),
        output_srcs: parts.outputs.clone(),
        consts,
        weights,
        steps: parts.steps.clone(),
        frees: parts.frees.clone(),
        slots: parts.slots,
        layouts: parts.layouts.clone(),
        kernels,
    };
    let meta_bytes = postcard::to_allocvec(meta).map_err(|e| format!("cannot encode the metadata: {e}"))?;
    let plan_bytes = postcard::to_allocvec(&plan).map_err(|e| format!("cannot encode the plan: {e}"))?;
    let mut payload = Vec::with_capacity(8 + meta_bytes.len() + plan_bytes.len() + DATA_ALIGN + data.bytes.len());
    for section in [&meta_bytes, &plan_bytes] {
        let len = u32::try_from(section.len()).map_err(|_| "the plan is larger than 4 GiB".to_string())?;
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(section);
    }
    // The data section starts on a 64-byte boundary of the file.
    payload.resize((HEADER_LEN + payload.len()).next_multiple_of(DATA_ALIGN) - HEADER_LEN, 0);
    payload.extend_from_slice(&data.bytes);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(checksum(&payload).as_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&payload);
    let mut sizes = data.sizes;
    sizes.total = out.len();
    sizes.other = sizes.total - sizes.trits - sizes.tensors - sizes.code;
    Ok((out, sizes))
}

/// blake3 of a payload; large ones hashed on every core (a cache hit of a ResNet-50 spends most
/// of its time here).
fn checksum(payload: &[u8]) -> blake3::Hash {
    if payload.len() < 1 << 20 {
        return blake3::hash(payload);
    }
    let mut h = blake3::Hasher::new();
    h.update_rayon(payload);
    h.finalize()
}

/// Checks an artifact's header, length and checksum; returns its payload.
fn payload(bytes: &[u8]) -> Result<&[u8], LoadError> {
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(LoadError::NotAnArtifact);
    }
    if bytes.len() < HEADER_LEN {
        return Err(LoadError::Truncated { expected: HEADER_LEN as u64, got: bytes.len() as u64 });
    }
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(LoadError::Version { found: version, supported: FORMAT_VERSION });
    }
    let len = u64::from(u32_at(16)) | (u64::from(u32_at(20)) << 32);
    let expected = len.saturating_add(HEADER_LEN as u64);
    let got = bytes.len() as u64;
    if got < expected {
        return Err(LoadError::Truncated { expected, got });
    }
    if got > expected {
        return Err(LoadError::Trailing(got - expected));
    }
    let payload = &bytes[HEADER_LEN..];
    let actual = checksum(payload);
    if actual.as_bytes()[..] != bytes[24..56] {
        let recorded: String = bytes[24..56].iter().map(|b| format!("{b:02x}")).collect();
        return Err(LoadError::Checksum { recorded, actual: actual.to_hex().to_string() });
    }
    Ok(payload)
}

/// Splits a length-prefixed section off the front of `rest`.
fn section<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8], LoadError> {
    let corrupt = || LoadError::Corrupt(format!("the {what} section overruns the payload"));
    let len_bytes: [u8; 4] = rest.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let body = rest.get(4..4 + len).ok_or_else(corrupt)?;
    *rest = &rest[4 + len..];
    Ok(body)
}

/// The metadata of an artifact (after checking its header and checksum), without decoding the
/// model or checking that this machine can run it.
pub fn read_meta(bytes: &[u8]) -> Result<Meta, LoadError> {
    let mut rest = payload(bytes)?;
    let meta = section(&mut rest, "metadata")?;
    postcard::from_bytes(meta).map_err(|e| LoadError::Corrupt(format!("metadata: {e}")))
}

/// Checks that this machine can run code built for `meta`.
pub fn check_host(meta: &Meta) -> Result<(), LoadError> {
    let host = host_target();
    if meta.target != host {
        return Err(LoadError::Target { built_for: meta.target.clone(), host });
    }
    let missing: Vec<String> = meta
        .cpu_features
        .iter()
        .filter(|f| cpu_has(f) != Some(true))
        .map(|f| if cpu_has(f).is_none() { format!("{f} (unknown to this runtime)") } else { f.clone() })
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(LoadError::CpuFeatures { missing }) }
}

/// The metadata, the plan and the data section's offset of a checked artifact.
fn sections(bytes: &[u8]) -> Result<(Meta, Plan, usize), LoadError> {
    let mut rest = payload(bytes)?;
    let meta: Meta = postcard::from_bytes(section(&mut rest, "metadata")?)
        .map_err(|e| LoadError::Corrupt(format!("metadata: {e}")))?;
    let plan: Plan =
        postcard::from_bytes(section(&mut rest, "plan")?).map_err(|e| LoadError::Corrupt(format!("plan: {e}")))?;
    Ok((meta, plan, (bytes.len() - rest.len()).next_multiple_of(DATA_ALIGN)))
}

/// The sizes of an artifact's parts (as [`to_bytes`] reported them) and how many kernels have
/// machine code in it, from its plan alone (no weight is decoded).
pub fn size_report(bytes: &[u8]) -> Result<(SizeReport, usize), LoadError> {
    let (_, plan, _) = sections(bytes)?;
    let mut s = SizeReport { total: bytes.len(), ..SizeReport::default() };
    let tensor = |s: &mut SizeReport, t: &Tensor| match t.enc {
        Encoding::Trit5 => {
            s.trits += t.at.len as usize;
            s.trit_count += t.shape.iter().product::<usize>();
        }
        Encoding::F32 | Encoding::I8 => s.tensors += t.at.len as usize,
        Encoding::Splat(_) => {}
    };
    for c in &plan.consts {
        tensor(&mut s, c);
    }
    for w in &plan.weights {
        if let Some(a) = &w.alpha {
            tensor(&mut s, a);
        }
        match &w.data {
            StoredData::Tq2 { trits, .. } | StoredData::Trits { trits } => {
                s.trits += trits.len as usize;
                s.trit_count += w.n * w.k;
            }
            StoredData::Dense { w_t } => tensor(&mut s, w_t),
        }
    }
    s.code = plan.kernels.iter().map(|k| k.len as usize).sum();
    s.other = s.total.saturating_sub(s.trits + s.tensors + s.code);
    Ok((s, plan.kernels.iter().filter(|k| k.len > 0).count()))
}

/// Decodes an artifact into its metadata and model parts, checking everything listed in the
/// module rules.
pub fn from_bytes(bytes: &[u8]) -> Result<(Meta, ModelParts), LoadError> {
    let (meta, plan, data_start) = sections(bytes)?;
    check_host(&meta)?;
    let data = bytes.get(data_start..).unwrap_or(&[]);
    let parts = decode(plan, data).map_err(LoadError::Corrupt)?;
    parts.validate().map_err(LoadError::Corrupt)?;
    Ok((meta, parts))
}

fn range<'a>(data: &'a [u8], r: Range, what: &str) -> Result<&'a [u8], String> {
    let start = usize::try_from(r.offset).map_err(|_| format!("{what} lies outside the data"))?;
    let len = usize::try_from(r.len).map_err(|_| format!("{what} lies outside the data"))?;
    start.checked_add(len).and_then(|end| data.get(start..end)).ok_or_else(|| format!("{what} lies outside the data"))
}

fn tensor_values(data: &[u8], t: &Tensor, what: &str) -> Result<Vec<f32>, String> {
    let count =
        t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("{what}: shape overflows"))?;
    let bytes = range(data, t.at, what)?;
    let wrong = |got: usize, want: usize| format!("{what} {:?} holds {got} bytes, expected {want}", t.shape);
    match t.enc {
        Encoding::Splat(bits) => Ok(vec![f32::from_bits(bits); count]),
        Encoding::F32 => {
            if bytes.len() != count * 4 {
                return Err(wrong(bytes.len(), count * 4));
            }
            Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        Encoding::I8 => {
            if bytes.len() != count {
                return Err(wrong(bytes.len(), count));
            }
            Ok(bytes.iter().map(|&b| f32::from(b as i8)).collect())
        }
        Encoding::Trit5 => {
            if bytes.len() != pack::trit5_bytes(count) {
                return Err(wrong(bytes.len(), pack::trit5_bytes(count)));
            }
            let trits = pack::unpack_trit5(bytes, count).map_err(|e| format!("{what}: {e}"))?;
            Ok(trits.into_iter().map(f32::from).collect())
        }
    }
}

fn decode(plan: Plan, data: &[u8]) -> Result<ModelParts, String> {
    let sig = |v: Vec<TensorSig>, what: &str| {
        v.into_iter()
            .map(|s| match s.dtype {
                DType::F32 => Ok((s.name, s.shape)),
                d => Err(format!("{what} `{}` is {d}; this runtime takes f32 inputs and outputs", s.name)),
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let consts = plan
        .consts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let what = format!("constant {i}");
            let values = tensor_values(data, t, &what)?;
            ArrayD::from_shape_vec(IxDyn(&t.shape), values).map_err(|e| format!("{what}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let weights = plan
        .weights
        .into_iter()
        .map(|w| {
            let what = format!("weight `{}`", w.name);
            let alpha = w.alpha.as_ref().map(|a| tensor_values(data, a, &format!("{what}'s scales"))).transpose()?;
            let stored = match w.data {
                StoredData::Tq2 { trits, kernel, tile, f32_x } => {
                    let bytes = range(data, trits, &what)?;
                    let expected = w.n.checked_mul(w.k).map(pack::trit5_bytes);
                    if expected != Some(bytes.len()) {
                        return Err(format!("{what} [{}, {}] holds {} bytes", w.n, w.k, bytes.len()));
                    }
                    let packed = pack::trit5_to_tq2(bytes, w.n, w.k).map_err(|e| format!("{what}: {e}"))?;
                    WeightData::Tq2 { packed, kernel, tile, f32_x, dense: std::sync::OnceLock::new() }
                }
                StoredData::Trits { trits } => {
                    let bytes = range(data, trits, &what)?;
                    let expected = w.n.checked_mul(w.k).map(pack::trit5_bytes);
                    if expected != Some(bytes.len()) {
                        return Err(format!("{what} [{}, {}] holds {} bytes", w.n, w.k, bytes.len()));
                    }
                    WeightData::Trits {
                        packed: pack::trit5_to_tq2(bytes, w.n, w.k).map_err(|e| format!("{what}: {e}"))?,
                    }
                }
                StoredData::Dense { w_t } => {
                    let values = tensor_values(data, &w_t, &what)?;
                    let w_t = Array2::from_shape_vec((w.k, w.n), values).map_err(|e| format!("{what}: {e}"))?;
                    WeightData::Dense { w_t }
                }
            };
            Ok(GemmWeight { name: w.name, n: w.n, k: w.k, data: stored, alpha })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let kernels = plan
        .kernels
        .iter()
        .enumerate()
        .map(|(i, r)| range(data, *r, &format!("kernel {i}")).map(<[u8]>::to_vec))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ModelParts {
        name: plan.name,
        inputs: sig(plan.inputs, "input")?,
        outputs: plan.output_srcs,
        output_sig: sig(plan.outputs, "output")?,
        consts,
        weights,
        steps: plan.steps,
        frees: plan.frees,
        slots: plan.slots,
        layouts: plan.layouts,
        kernels,
    })
}

impl Model {
    /// Loads a compiled model (`.tcm`) and prepares it to run on all cores. Every failure (a
    /// missing or unreadable file, another format version, truncation, a checksum mismatch, a
    /// CPU without a feature the code uses) is a [`LoadError`] saying which.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, LoadError> {
        Model::load_with_threads(path, 0)
    }

    /// [`Model::load`] with `threads` worker threads (0: all cores; 1: the calling thread).
    pub fn load_with_threads(path: impl AsRef<Path>, threads: usize) -> Result<Model, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
        Model::from_artifact(&bytes, threads)
    }

    /// A model from artifact bytes (see [`Model::load`]).
    pub fn from_artifact(bytes: &[u8], threads: usize) -> Result<Model, LoadError> {
        let (_, parts) = from_bytes(bytes)?;
        Ok(Model::from_parts(parts, threads)?)
    }
}
