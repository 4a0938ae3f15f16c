//! The x86 instruction-set extensions joulecut's kernels use, detected once per process.
//!
//! Every SIMD kernel in the workspace chooses its code path from one [`Isa`] value instead of
//! probing the CPU itself: an entry point takes [`Isa::detected`] once and passes it down to the
//! loops that branch on it. An `Isa` never claims a feature the running CPU lacks (it comes from
//! detection and can only be lowered, with [`Isa::capped`]), so a function compiled with
//! `#[target_feature(enable = ...)]` for the features it reports is sound to call.
//!
//! Tests and benchmarks reach the slower paths on a fast machine in two ways:
//! * pass `Isa::detected().capped(IsaLevel::Avx2)` (or [`Isa::PORTABLE`]) to a kernel that takes
//!   an `Isa`;
//! * set `JOULECUT_ISA` to `portable`, `avx2` or `avx512` before the first detection: the whole
//!   process then runs as if the CPU stopped at that level. Other values are ignored. (Kernel
//!   families with their own switch, such as `JOULECUT_INT8_KERNEL`, keep it.)
//!
//! Targets other than x86-64 report no features, so every kernel takes its portable loop.
//!
//! ```
//! use joulecut_ops::{Isa, IsaLevel};
//! let isa = Isa::detected();
//! assert!(!isa.capped(IsaLevel::Avx2).avx512f());
//! assert!(!Isa::PORTABLE.avx2_fma());
//! ```

use std::sync::OnceLock;

/// Environment variable that caps [`Isa::detected`] at an [`IsaLevel`].
pub const ISA_ENV: &str = "JOULECUT_ISA";

/// The CPU features the kernels branch on. Copy it around freely; it is six booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Isa {
    avx2: bool,
    fma: bool,
    f16c: bool,
    avx512f: bool,
    avx512bw: bool,
    avx512vnni: bool,
}

/// A ceiling for [`Isa::capped`]: the features above it are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum IsaLevel {
    /// No SIMD extension: the portable loops.
    Portable,
    /// AVX2, FMA and F16C; no AVX-512.
    Avx2,
    /// Everything detected.
    Avx512,
}

impl IsaLevel {
    /// The level named `portable`, `avx2` or `avx512` (the values of `JOULECUT_ISA`).
    pub fn from_name(name: &str) -> Option<IsaLevel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(IsaLevel::Portable),
            "avx2" => Some(IsaLevel::Avx2),
            "avx512" => Some(IsaLevel::Avx512),
            _ => None,
        }
    }
}

impl Isa {
    /// No extension at all: what non-x86 targets report, and the portable paths everywhere.
    pub const PORTABLE: Isa = Isa {
        avx2: false,
        fma: false,
        f16c: false,
        avx512f: false,
        avx512bw: false,
        avx512vnni: false,
    };

    /// This CPU's features, capped by `JOULECUT_ISA` when it names a level. Probed on the first
    /// call and cached.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let cap = std::env::var(ISA_ENV)
                .ok()
                .and_then(|v| IsaLevel::from_name(&v));
            match cap {
                Some(level) => Isa::probe().capped(level),
                None => Isa::probe(),
            }
        })
    }

    /// What the CPU reports now, ignoring `JOULECUT_ISA` (uncached).
    #[cfg(target_arch = "x86_64")]
    fn probe() -> Isa {
        use std::arch::is_x86_feature_detected as has;
        Isa {
            avx2: has!("avx2"),
            fma: has!("fma"),
            f16c: has!("f16c"),
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw"),
            avx512vnni: has!("avx512vnni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn probe() -> Isa {
        Isa::PORTABLE
    }

    /// The same features without those above `level`.
    #[must_use]
    pub fn capped(self, level: IsaLevel) -> Isa {
        match level {
            IsaLevel::Portable => Isa::PORTABLE,
            IsaLevel::Avx2 => Isa {
                avx512f: false,
                avx512bw: false,
                avx512vnni: false,
                ..self
            },
            IsaLevel::Avx512 => self,
        }
    }

    /// AVX2.
    pub fn avx2(self) -> bool {
        self.avx2
    }

    /// FMA (3-operand fused multiply-add).
    pub fn fma(self) -> bool {
        self.fma
    }

    /// F16C (f16 <-> f32 conversions).
    pub fn f16c(self) -> bool {
        self.f16c
    }

    /// AVX-512 Foundation.
    pub fn avx512f(self) -> bool {
        self.avx512f
    }

    /// AVX-512 byte and word instructions.
    pub fn avx512bw(self) -> bool {
        self.avx512bw
    }

    /// AVX-512 VNNI (`vpdpbusd`), as the flag alone.
    pub fn avx512vnni(self) -> bool {
        self.avx512vnni
    }

    /// AVX2 and FMA: what the f32 kernels compiled for `"avx2,fma"` need.
    pub fn avx2_fma(self) -> bool {
        self.avx2 && self.fma
    }

    /// AVX-512F and FMA: what the f32 kernels compiled for `"avx512f,fma"` need.
    pub fn avx512f_fma(self) -> bool {
        self.avx512f && self.fma
    }

    /// AVX-512F, BW and VNNI: what the int8 kernels compiled for
    /// `"avx512f,avx512bw,avx512vnni"` need.
    pub fn avx512_vnni(self) -> bool {
        self.avx512f && self.avx512bw && self.avx512vnni
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_only_lowers() {
        let all = Isa::detected();
        for level in [IsaLevel::Portable, IsaLevel::Avx2, IsaLevel::Avx512] {
            let c = all.capped(level);
            assert!(!c.avx2 || all.avx2);
            assert!(!c.fma || all.fma);
            assert!(!c.f16c || all.f16c);
            assert!(!c.avx512_vnni() || all.avx512_vnni());
            assert!(!c.avx512f || all.avx512f);
            assert_eq!(c.capped(level), c);
        }
        assert_eq!(all.capped(IsaLevel::Portable), Isa::PORTABLE);
        assert!(!all.capped(IsaLevel::Avx2).avx512f());
        assert_eq!(all.capped(IsaLevel::Avx2).avx2_fma(), all.avx2_fma());
    }

    #[test]
    fn detection_matches_the_cpu_without_the_env_var() {
        if std::env::var_os(ISA_ENV).is_none() {
            assert_eq!(Isa::detected(), Isa::probe());
        }
    }

    #[test]
    fn level_names() {
        assert_eq!(IsaLevel::from_name("AVX2"), Some(IsaLevel::Avx2));
        assert_eq!(IsaLevel::from_name("portable"), Some(IsaLevel::Portable));
        assert_eq!(IsaLevel::from_name("avx512"), Some(IsaLevel::Avx512));
        assert_eq!(IsaLevel::from_name("sse9"), None);
    }
}
