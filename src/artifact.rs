//! `build_artifact`: a `.tri` model to `.tcm` artifact bytes, through the cache, timed phase by
//! phase (what `triton compile` runs).
//!
//! Keys (blake3, see [`crate::cache::KeyBuilder`]), each over the environment (compiler and
//! Cranelift versions, artifact format, target, every ISA flag, the embedded standard library)
//! and the options (-O level, precision, int8 activations, model name, the seed when there is
//! no weights file):
//! - manifest key: + the main file's folder and bytes + the weights file's bytes. Looked up
//!   before parsing: the manifest names every other file the source read, with its hash, and
//!   the model key; when all still hash the same, the model entry is the answer.
//! - model key: + the weights' bytes + every file read (name and bytes, in load order).
//! - kernel key: + the kernel's specialization.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use triton_compiler::codegen::KernelSpec;
use triton_compiler::codegen::{CodegenError, CodegenReport, isa};
use triton_compiler::driver;
use triton_compiler::interp::Precision;
use triton_compiler::passes::Timings;
use triton_compiler::source::Origin;
use triton_runtime::artifact::{self, Meta, SizeReport};

use crate::cache::{self, Blob, Cache, Key, KeyBuilder, Kind, Level};
use crate::compile::{CompileError, Options};

/// What [`build_artifact`] made or found.
#[derive(Debug)]
pub struct Build {
    /// The artifact.
    pub bytes: Arc<Blob>,
    /// Phases in order, with their wall time.
    pub timings: Timings,
    /// Kernel and packing figures (a compilation, not a hit).
    pub codegen: Option<CodegenReport>,
    /// Where the cache had it, or `None` when it was compiled.
    pub hit: Option<Level>,
    pub summary: Summary,
    /// The model key (hex).
    pub key: String,
}

/// Facts about a compiled model kept with it in the cache, so a hit reports them too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    /// Source lines of every file read (the standard library included).
    pub lines: usize,
    /// Bytes of the model's parameters as FP32.
    pub fp32_bytes: u64,
    pub artifact_bytes: usize,
    pub trit_bytes: usize,
    pub trit_count: usize,
    pub tensor_bytes: usize,
    pub code_bytes: usize,
    pub kernels: usize,
}

impl Summary {
    /// FP32 weights over artifact size.
    pub fn ratio(&self) -> f64 {
        self.fp32_bytes as f64 / self.artifact_bytes.max(1) as f64
    }
}

/// What the manifest of a source remembers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    /// Files read besides the main one: path, blake3 (hex).
    deps: Vec<(String, String)>,
    model_key: String,
    summary: Summary,
}

fn env_key(k: &mut KeyBuilder) -> Result<(), CompileError> {
    static STD: OnceLock<Key> = OnceLock::new();
    let std_key = STD.get_or_init(|| {
        let mut s = KeyBuilder::new("stdlib");
        for (name, text) in triton_compiler::load::STDLIB {
            s.str(name).str(text);
        }
        s.finish()
    });
    let flags = isa::host_features().map_err(CompileError::Codegen)?;
    k.str(env!("CARGO_PKG_VERSION"))
        .str(isa::CRANELIFT_VERSION)
        .part(&artifact::FORMAT_VERSION.to_le_bytes())
        .part(&triton_compiler::codegen::KERNELS_VERSION.to_le_bytes())
        .str(&artifact::host_target())
        .str(&flags.join(","))
        .part(std_key);
    Ok(())
}

fn options_key(k: &mut KeyBuilder, opts: &Options, weights: Option<&Key>) {
    k.str(opts.opt.name())
        .str(precision_name(opts.precision))
        .part(&[u8::from(opts.int8_activations)])
        .str(opts.model.as_deref().unwrap_or("\0"));
    for (name, size) in &opts.shapes {
        k.str("shape").str(name).part(&size.to_le_bytes());
    }
    match weights {
        Some(w) => k.str("weights").part(w),
        None => k.str("seed").part(&opts.seed.to_le_bytes()),
    };
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Ternary => "ternary",
        Precision::Fp32 => "fp32",
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CompileError> {
    std::fs::read(path).map_err(|e| CompileError::Io(format!("cannot read `{}`: {e}", path.display())))
}

fn verify_artifact(bytes: &[u8]) -> Result<(), String> {
    artifact::read_meta(bytes).map(|_| ()).map_err(|e| e.to_string())
}

/// Builds the artifact of the model in `path` (or finds it in `cache`).
pub fn build_artifact(path: &Path, opts: &Options, cache: &Cache) -> Result<Build, CompileError> {
    let mut t = Timings::new();
    let lookup = Instant::now();
    let main = read(path)?;
    let weights_bytes = opts.weights.as_deref().map(read).transpose()?;
    let weights_key = weights_bytes.as_deref().map(|b| *blake3::hash(b).as_bytes());
    let main_path = path.canonicalize().unwrap_or_default();
    let dir = main_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut mk = KeyBuilder::new("triton-manifest-v1");
    env_key(&mut mk)?;
    options_key(&mut mk, opts, weights_key.as_ref());
    mk.str(&dir.to_string_lossy()).part(&main);
    let manifest_key = mk.finish();
    if let Some(found) = (cache.enabled() && !opts.verify_each).then(|| lookup_manifest(cache, &manifest_key)).flatten()
    {
        t.add("cache lookup", lookup.elapsed());
        return Ok(Build { timings: t, codegen: None, ..found });
    }
    t.add("cache lookup", lookup.elapsed());

    let settings = opts.settings();
    let checked = driver::check(path, &mut t);
    if checked.has_errors() {
        return Err(CompileError::Source(checked.render_plain()));
    }
    let mut lines = 0;
    let mut deps = Vec::new();
    let mut model_key = KeyBuilder::new("triton-model-v1");
    env_key(&mut model_key)?;
    options_key(&mut model_key, opts, weights_key.as_ref());
    for (_, f) in checked.program.sources.files() {
        lines += f.text.lines().count();
        model_key.str(&f.name).str(&f.text);
        if let Origin::Disk(p) = &f.origin
            && *p != main_path
        {
            deps.push((p.to_string_lossy().into_owned(), blake3::hash(f.text.as_bytes()).to_hex().to_string()));
        }
    }
    let model = driver::select(path, checked, &settings)?;
    let key = model_key.finish();
    let fp32_bytes: u64 = model.params().iter().map(|p| p.shape.iter().product::<u64>() * 4).sum();

    // `--verify-each` asks for the passes to run: a cached model would skip them.
    if cache.enabled() && !opts.verify_each {
        let start = Instant::now();
        if let Some((bytes, level)) = cache.get(Kind::Model, &key, verify_artifact) {
            t.add("cache lookup", start.elapsed());
            // The manifest was missing or stale: the model was built from other files' bytes
            // than the manifest remembered; describe it afresh.
            let summary = summarize(&model.name, lines, fp32_bytes, &bytes)?;
            store_manifest(cache, &manifest_key, deps, &key, &summary);
            return Ok(Build { bytes, timings: t, codegen: None, hit: Some(level), summary, key: cache::hex(&key) });
        }
        t.add("cache lookup", start.elapsed());
    }

    let weights = crate::compile::load_weights(&model, opts, weights_bytes.as_deref(), &mut t)?;
    let quantized = driver::quantize(&model.graph, &weights, &mut t);
    let optimized = driver::optimize(&model.graph, Some((&weights, &quantized)), &settings, &mut t)?;
    let cpu_features = isa::host_cpu_features().map_err(CompileError::Codegen)?;
    // The artifact only loads on CPUs with every recorded feature; with AVX2 among them the
    // runtime's wide kernel runs every int8 product, so their JIT kernels would be dead code.
    let wide_runs_int8 = cpu_features.iter().any(|f| f == "avx2");
    let mut source = |spec: &KernelSpec| match spec {
        KernelSpec::Gemm(g) if wide_runs_int8 && !g.f32_x => Ok((Vec::new(), false)),
        _ => kernel(cache, spec),
    };
    let (parts, report) = driver::codegen(&optimized, (&weights, quantized), opts.precision, &mut source, &mut t)?;
    let meta = Meta {
        compiler_version: env!("CARGO_PKG_VERSION").into(),
        cranelift_version: isa::CRANELIFT_VERSION.into(),
        target: artifact::host_target(),
        target_triple: isa::host_triple().map_err(CompileError::Codegen)?,
        cpu_features,
        isa_flags: isa::host_features().map_err(CompileError::Codegen)?,
        opt_level: opts.opt.name().into(),
        precision: precision_name(opts.precision).into(),
        source_key: cache::hex(&key),
    };
    let (bytes, sizes) =
        t.time("artifact encode", || artifact::to_bytes(&parts, &meta)).map_err(CompileError::Internal)?;
    let summary = summary_of(&model.name, lines, fp32_bytes, &sizes, kernel_count(&parts));
    let bytes = Arc::new(Blob::from(bytes));
    if cache.enabled() {
        t.time("cache store", || {
            cache.put(Kind::Model, &key, Arc::clone(&bytes));
            store_manifest(cache, &manifest_key, deps, &key, &summary);
        });
    }
    Ok(Build { bytes, timings: t, codegen: Some(report), hit: None, summary, key: cache::hex(&key) })
}

/// Kernels with machine code in the artifact.
fn kernel_count(parts: &triton_runtime::engine::plan::ModelParts) -> usize {
    parts.kernels.iter().filter(|k| !k.is_empty()).count()
}

fn summary_of(model: &str, lines: usize, fp32_bytes: u64, s: &SizeReport, kernels: usize) -> Summary {
    Summary {
        model: model.into(),
        lines,
        fp32_bytes,
        artifact_bytes: s.total,
        trit_bytes: s.trits,
        trit_count: s.trit_count,
        tensor_bytes: s.tensors,
        code_bytes: s.code,
        kernels,
    }
}

/// Sizes of an artifact found in the cache (read off its plan).
fn summarize(model: &str, lines: usize, fp32_bytes: u64, bytes: &[u8]) -> Result<Summary, CompileError> {
    let (sizes, kernels) = artifact::size_report(bytes).map_err(|e| CompileError::Internal(e.to_string()))?;
    Ok(summary_of(model, lines, fp32_bytes, &sizes, kernels))
}

fn lookup_manifest(cache: &Cache, manifest_key: &Key) -> Option<Build> {
    let (entry, _) = cache.get(Kind::Manifest, manifest_key, cache::verify_sealed)?;
    let manifest: Manifest = serde_json::from_slice(cache::unseal(&entry).ok()?).ok()?;
    for (dep, hash) in &manifest.deps {
        let bytes = std::fs::read(dep).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return None;
        }
    }
    let key: Key = (0..32)
        .map(|i| manifest.model_key.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()?
        .try_into()
        .ok()?;
    let (bytes, level) = cache.get(Kind::Model, &key, verify_artifact)?;
    Some(Build {
        bytes,
        timings: Timings::new(),
        codegen: None,
        hit: Some(level),
        summary: manifest.summary,
        key: manifest.model_key,
    })
}

fn store_manifest(cache: &Cache, manifest_key: &Key, deps: Vec<(String, String)>, key: &Key, summary: &Summary) {
    let manifest = Manifest { deps, model_key: cache::hex(key), summary: summary.clone() };
    if let Ok(json) = serde_json::to_vec(&manifest) {
        cache.put(Kind::Manifest, manifest_key, Arc::new(cache::seal(&json).into()));
    }
}

/// A kernel's machine code from the cache, or compiled and stored.
fn kernel(cache: &Cache, spec: &KernelSpec) -> Result<(Vec<u8>, bool), CodegenError> {
    if !cache.enabled() {
        return spec.compile().map(|c| (c, false));
    }
    let mut k = KeyBuilder::new("triton-kernel-v1");
    env_key(&mut k).map_err(|e| CodegenError::Isa(e.to_string()))?;
    k.str(&format!("{spec:?}"));
    let key = k.finish();
    if let Some((entry, _)) = cache.get(Kind::Kernel, &key, cache::verify_sealed)
        && let Ok(code) = cache::unseal(&entry)
    {
        return Ok((code.to_vec(), true));
    }
    let code = spec.compile()?;
    cache.put(Kind::Kernel, &key, Arc::new(cache::seal(&code).into()));
    Ok((code, false))
}
