//! `triton cache stats|clean`: the on-disk compilation cache.

use std::path::PathBuf;
use std::process::ExitCode;

use triton::Cache;
use triton::cache::Kind;

use super::common::user_error;

pub fn run(action: crate::CacheAction, dir: Option<PathBuf>) -> ExitCode {
    let Some(dir) = dir.or_else(Cache::default_dir) else {
        return user_error("no cache folder: set $TRITON_CACHE_DIR or pass --cache-dir");
    };
    let cache = Cache::at(&dir);
    match action {
        crate::CacheAction::Stats => match cache.stats() {
            Ok(stats) => {
                println!("cache folder: {}", stats.dir.display());
                let mut total = (0, 0);
                for (kind, n, bytes) in &stats.entries {
                    let name = match kind {
                        Kind::Model => "compiled models",
                        Kind::Kernel => "kernels",
                        Kind::Manifest => "source manifests",
                    };
                    println!("{name:<18} {n:>8} entries {bytes:>14} bytes");
                    total = (total.0 + n, total.1 + bytes);
                }
                println!("{:<18} {:>8} entries {:>14} bytes", "total", total.0, total.1);
                ExitCode::SUCCESS
            }
            Err(e) => user_error(e),
        },
        crate::CacheAction::Clean => match cache.clean() {
            Ok((n, bytes)) => {
                println!("removed {n} entries ({bytes} bytes) from {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => user_error(e),
        },
    }
}
