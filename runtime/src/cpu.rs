//! CPU features: the one place the runtime asks what the processor can do.
//!
//! Rules:
//! - Every microkernel is selected from an [`Isa`] level, never by asking for a feature
//!   elsewhere; [`best`] is detected once per process (cached).
//! - A level names what a kernel may use; a model runs at the level it is given
//!   (`Model::set_isa`), capped at [`best`], so tests can force every lower path the machine
//!   runs and compare them with the reference interpreter.
//! - [`Isa::Generic`] is portable Rust (any target); it is the definition the others must equal
//!   bit for bit on integer paths.

use std::sync::OnceLock;

/// Instruction-set levels of the runtime's microkernels, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable code, no target features.
    Generic,
    /// x86-64 with AVX2 and FMA: 256-bit integer and float vectors (`vpmaddubsw`, `vfmadd`).
    Avx2,
    /// AVX2 plus AVX512-F/BW/VL and AVX512-VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX-512 VNNI plus AMX-INT8 tiles (`tdpbusd` / `tdpbssd` on 16 x 64-byte tiles), with
    /// the operating system's permission to use them (Linux `arch_prctl`).
    Amx,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Generic, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
        }
    }

    /// The levels this CPU runs, weakest first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|i| *i <= best())
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU runs.
pub fn best() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(detect)
}

fn detect() -> Isa {
    let has = |f: &str| has_feature(f) == Some(true);
    if !(has("avx2") && has("fma")) {
        Isa::Generic
    } else if ["avx512f", "avx512bw", "avx512vl", "avx512vnni"].iter().all(|f| has(f)) {
        if amx_int8() { Isa::Amx } else { Isa::Avx512Vnni }
    } else {
        Isa::Avx2
    }
}

/// Whether this CPU has AMX tiles with int8 products (CPUID leaf 7: AMX-TILE and AMX-INT8) and
/// the kernel lets this process use them: Linux enables the tiles' 8 KB of register state per
/// process on request (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); a refused request
/// (an older kernel, a hypervisor that hides the state) leaves the process at AVX-512 VNNI.
fn amx_int8() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const AMX_TILE: u32 = 1 << 24;
        const AMX_INT8: u32 = 1 << 25;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // CPUID leaf 7 exists on every x86-64 CPU with AVX-512 (the caller checked it).
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf7.edx & (AMX_TILE | AMX_INT8) != AMX_TILE | AMX_INT8 {
            return false;
        }
        // SAFETY: a plain system call with integer arguments; it changes only which register
        // state the kernel saves for this process.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Whether this CPU has AVX2 and FMA (the 256-bit paths).
pub fn has_avx2() -> bool {
    best() >= Isa::Avx2
}

/// Whether this CPU has the feature `name` (as `is_x86_feature_detected!` spells it), or `None`
/// for a feature this runtime does not know (or on another architecture).
pub fn has_feature(name: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! known {
            ($($f:tt),*) => {
                match name {
                    $($f => Some(std::arch::is_x86_feature_detected!($f)),)*
                    _ => None,
                }
            };
        }
        known!(
            "sse2",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "f16c",
            "cmpxchg16b",
            "avx512f",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512bitalg",
            "avx512vnni",
            "avxvnni"
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_detected_consistently() {
        assert!(Isa::Generic < Isa::Avx2 && Isa::Avx2 < Isa::Avx512Vnni && Isa::Avx512Vnni < Isa::Amx);
        let levels: Vec<Isa> = Isa::available().collect();
        assert_eq!(levels.first(), Some(&Isa::Generic));
        assert_eq!(levels.last(), Some(&best()));
        assert_eq!(has_avx2(), has_feature("avx2") == Some(true) && has_feature("fma") == Some(true));
        assert_eq!(has_feature("no-such-feature"), None);
    }
}
