//! The machine a benchmark ran on, recorded with every report so runs can be compared.

use serde::{Deserialize, Serialize};

/// What the figures depend on: the CPU, its features, the core count and the versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    /// SIMD and bit-manipulation features present (std::arch names).
    pub features: Vec<String>,
    /// Logical cores available to this process.
    pub cores: usize,
    pub os: String,
    pub arch: String,
    pub kernel: Option<String>,
    pub memory_gib: Option<f64>,
    pub triton_version: String,
    pub cranelift_version: String,
    pub rustc_version: String,
    /// The int8 kernel the runtime picked (`Avx512Vnni`, `Avx2`, or none).
    pub int8_kernel: String,
}

const FEATURES: [&str; 14] = [
    "sse4.2",
    "popcnt",
    "avx",
    "avx2",
    "fma",
    "bmi2",
    "f16c",
    "avx512f",
    "avx512vl",
    "avx512bw",
    "avx512dq",
    "avx512vnni",
    "avx512vbmi",
    "avxvnni",
];

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_string();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / (1024.0 * 1024.0));
        Machine {
            cpu,
            features: FEATURES
                .iter()
                .filter(|f| triton_runtime::artifact::cpu_has(f) == Some(true))
                .map(|f| f.to_string())
                .collect(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
            memory_gib,
            triton_version: env!("CARGO_PKG_VERSION").into(),
            cranelift_version: triton_compiler::codegen::isa::CRANELIFT_VERSION.into(),
            rustc_version: env!("TRITON_RUSTC_VERSION").into(),
            int8_kernel: triton_runtime::cpu::best().to_string(),
        }
    }

    /// One line: CPU, cores, the widest features.
    pub fn line(&self) -> String {
        let simd: Vec<&str> = self
            .features
            .iter()
            .map(String::as_str)
            .filter(|f| ["avx2", "fma", "avx512f", "avx512vnni", "avxvnni"].contains(f))
            .collect();
        format!("{} ({} cores; {}; int8 kernel {})", self.cpu, self.cores, simd.join(", "), self.int8_kernel)
    }
}
