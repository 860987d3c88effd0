//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// Every `.tri` file in examples/, sorted.
pub fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tri"))
        .collect();
    v.sort();
    v
}
