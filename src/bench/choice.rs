//! Which weights each side of the benchmark runs (see the module rules of `bench`).

use super::*;

/// The weights of each side: the file (or `None`: seeded) and a remark.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsChoice {
    pub ternary: Option<PathBuf>,
    pub fp32: Option<PathBuf>,
    pub fp32_note: Option<String>,
}

/// Picks each side's weights (see the module rules).
pub fn resolve_weights(file: &Path, weights: Option<&Path>, fp32_weights: Option<&Path>) -> WeightsChoice {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let shipped = |suffix: &str| Some(crate::weights::beside_with(file, suffix)).filter(|p| p.is_file());
    let ternary = crate::weights::Choice::resolve(file, weights, 0).path().map(Path::to_path_buf);
    let (fp32, fp32_note) = match fp32_weights.map(Path::to_path_buf).or_else(|| shipped(".fp32.safetensors")) {
        Some(p) => (Some(p), None),
        None => match &ternary {
            Some(t) => (
                Some(t.clone()),
                Some(format!(
                    "no FP32-trained weights ({stem}.fp32.safetensors or --fp32-weights): FP32 runs the latent weights of {}",
                    t.display()
                )),
            ),
            None => (None, None),
        },
    };
    WeightsChoice { ternary, fp32, fp32_note }
}

/// A weights file's metadata (empty for none or a file without any).
pub(super) fn metadata(path: &Path) -> Result<HashMap<String, String>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| user(format!("cannot read `{}`: {e}", path.display())))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| user(format!("`{}` is not a safetensors file: {e}", path.display())))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}
