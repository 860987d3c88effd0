//! The host's Cranelift ISA, built once per process (building one costs 50-190 us).

use std::sync::{Arc, OnceLock};

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

use super::CodegenError;

static HOST: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();
static HOST_IN_ORDER: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();

fn build(opt_level: &str) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| b.set(k, v).map_err(|e| format!("{k}={v}: {e}"));
    set(&mut flags, "opt_level", opt_level)?;
    set(&mut flags, "is_pic", "false")?;
    // Kernels do not need frame pointers or probes; they are leaf functions.
    set(&mut flags, "preserve_frame_pointers", "false")?;
    let isa = cranelift_native::builder().map_err(|e| e.to_string())?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
}

/// The ISA of this machine (features detected, as `cranelift_native` does).
pub fn host() -> Result<OwnedTargetIsa, CodegenError> {
    HOST.get_or_init(|| build("speed")).as_ref().map(Arc::clone).map_err(|e| CodegenError::Isa(e.clone()))
}

/// The host ISA without the mid-end optimizer (`opt_level=none`): instructions are emitted in
/// the order the generator wrote them (no egraph elaboration, GVN or code motion), for
/// unrolled kernels whose generator already orders and schedules every value (register
/// allocation and instruction selection, load folding included, still run).
pub fn host_in_order() -> Result<OwnedTargetIsa, CodegenError> {
    HOST_IN_ORDER.get_or_init(|| build("none")).as_ref().map(Arc::clone).map_err(|e| CodegenError::Isa(e.clone()))
}

/// The ISA flags the code is specialised for, as `name=value` pairs (recorded in artifacts).
pub fn host_features() -> Result<Vec<String>, CodegenError> {
    Ok(host()?.isa_flags().iter().map(|v| v.to_string()).collect())
}

/// The Cranelift version the code generator is built with (pinned in the workspace manifest; a
/// test checks the two agree). Recorded in artifacts and cache keys.
pub const CRANELIFT_VERSION: &str = "0.135.8";

/// The host's target triple.
pub fn host_triple() -> Result<String, CodegenError> {
    Ok(host()?.triple().to_string())
}

/// CPU features the generated code may use, by their `std::arch` names: the ISA flags
/// `has_*` that are on (`has_sse41` is `sse4.1`). Loading an artifact requires each.
pub fn host_cpu_features() -> Result<Vec<String>, CodegenError> {
    let isa = host()?;
    Ok(isa
        .isa_flags()
        .iter()
        .filter(|v| v.as_bool() == Some(true))
        .filter_map(|v| v.name.strip_prefix("has_").map(feature_name))
        .collect())
}

fn feature_name(flag: &str) -> String {
    match flag {
        "sse41" => "sse4.1".into(),
        "sse42" => "sse4.2".into(),
        "avx_vnni" => "avxvnni".into(),
        f => f.into(),
    }
}

/// Whether the host ISA has Cranelift flag `name` on (`has_fma`, `has_avx512vnni`, ...).
pub fn host_has(name: &str) -> bool {
    host().is_ok_and(|isa| isa.isa_flags().iter().any(|f| f.name == name && f.as_bool() == Some(true)))
}

/// Compiles a finished kernel function for `isa` into its machine code (code, then constant
/// pool), refusing any relocation: a kernel is a leaf function that gets every address as an
/// argument (`triton_runtime::kernel`), so its bytes run wherever they are copied.
pub fn compile_kernel(
    func: cranelift_codegen::ir::Function,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) -> Result<Vec<u8>, CodegenError> {
    let mut ctx = cranelift_codegen::Context::for_function(func);
    let code = ctx
        .compile(isa, &mut cranelift_codegen::control::ControlPlane::default())
        .map_err(|e| CodegenError::Cranelift(format!("{:?}", e.inner)))?;
    if !code.buffer.relocs().is_empty() {
        return Err(CodegenError::Cranelift(format!("kernel has {} relocations", code.buffer.relocs().len())));
    }
    Ok(code.code_buffer().to_vec())
}
