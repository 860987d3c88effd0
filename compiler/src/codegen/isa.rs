//! The host's Cranelift ISA, built once per process (building one costs 50-190 us).

use std::sync::{Arc, OnceLock};

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

use super::CodegenError;

static HOST: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();

fn build() -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| b.set(k, v).map_err(|e| format!("{k}={v}: {e}"));
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
    // Kernels do not need frame pointers or probes; they are leaf functions.
    set(&mut flags, "preserve_frame_pointers", "false")?;
    let isa = cranelift_native::builder().map_err(|e| e.to_string())?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
}

/// The ISA of this machine (features detected, as `cranelift_native` does).
pub fn host() -> Result<OwnedTargetIsa, CodegenError> {
    HOST.get_or_init(build).as_ref().map(Arc::clone).map_err(|e| CodegenError::Isa(e.clone()))
}

/// The ISA flags the code is specialised for, as `name=value` pairs (recorded in artifacts).
pub fn host_features() -> Result<Vec<String>, CodegenError> {
    Ok(host()?.isa_flags().iter().map(|v| v.to_string()).collect())
}
