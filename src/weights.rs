//! Which weights a model runs with: one rule for every command.
//!
//! Rules:
//! - `--weights FILE` when given (a file that cannot be read is an error, never a fallback);
//! - else `<stem>.safetensors` beside the `.tri` file (as `triton train` writes it);
//! - else seeded initialisation from `--seed`: a model that runs, but has learnt nothing.
//! - Every command says which on stderr in one line ([`Choice::line`]), so random weights are
//!   never mistaken for trained ones.
//! - The library's [`crate::Options`] take no part: a program names its weights file itself.

use std::fmt;
use std::path::{Path, PathBuf};

/// `<stem>.safetensors` beside `model`.
pub fn beside(model: &Path) -> PathBuf {
    beside_with(model, ".safetensors")
}

/// `<stem><suffix>` beside `model` (e.g. `.fp32.safetensors`).
pub fn beside_with(model: &Path, suffix: &str) -> PathBuf {
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}{suffix}"))
}

/// The weights a command uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// A weights file: given with `--weights` (`explicit`) or found beside the model.
    File { path: PathBuf, explicit: bool },
    /// Seeded initialisation; `missing` is the file that was looked for.
    Seeded { seed: u64, missing: PathBuf },
}

impl Choice {
    /// Follows the rule in the module docs.
    pub fn resolve(model: &Path, explicit: Option<&Path>, seed: u64) -> Choice {
        if let Some(p) = explicit {
            return Choice::File { path: p.to_path_buf(), explicit: true };
        }
        let found = beside(model);
        if found.is_file() {
            Choice::File { path: found, explicit: false }
        } else {
            Choice::Seeded { seed, missing: found }
        }
    }

    /// The file, if one was chosen.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Choice::File { path, .. } => Some(path),
            Choice::Seeded { .. } => None,
        }
    }

    /// Whether the weights were trained (read from a file) rather than seeded.
    pub fn is_file(&self) -> bool {
        matches!(self, Choice::File { .. })
    }

    /// The line every command prints on stderr.
    pub fn line(&self) -> String {
        format!("weights: {self}")
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::File { path, .. } => write!(f, "{}", path.display()),
            Choice::Seeded { seed, missing } => write!(
                f,
                "seeded random (seed {seed}): no {} (train with `triton train`, or give --weights)",
                missing.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_beside_then_seeded() {
        let dir = tempfile::tempdir().expect("temp");
        let model = dir.path().join("net.tri");
        let given = dir.path().join("other.safetensors");
        assert_eq!(Choice::resolve(&model, Some(&given), 0), Choice::File { path: given.clone(), explicit: true });
        let seeded = Choice::resolve(&model, None, 7);
        assert_eq!(seeded, Choice::Seeded { seed: 7, missing: dir.path().join("net.safetensors") });
        assert!(seeded.line().starts_with("weights: seeded random (seed 7): no "), "{}", seeded.line());
        std::fs::write(dir.path().join("net.safetensors"), b"x").expect("write");
        let found = Choice::resolve(&model, None, 7);
        assert_eq!(found.path(), Some(dir.path().join("net.safetensors").as_path()));
        assert_eq!(beside_with(&model, ".fp32.safetensors"), dir.path().join("net.fp32.safetensors"));
    }
}
