//! [`Int8Kernel`]: which int8 GEMM implementation runs (detected once per process, or forced by
//! `JOULECUT_INT8_KERNEL`), and the per-call choice of inner loop from the activations' signs.
//!
//! ```
//! use joulecut_quant::Int8Kernel;
//! let k = Int8Kernel::detect();
//! assert!(k.is_available());
//! assert_eq!(k.name().parse::<Int8Kernel>().unwrap(), k);
//! ```

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{ActivationQuant, PackedWeights};
use crate::error::{Error, Result};

/// An int8 GEMM implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Int8Kernel {
    /// Scalar triple loop (the test oracle; slow).
    Reference,
    /// Portable Rust over the packed layout.
    Portable,
    /// AVX2 `vpmaddubsw`/`vpmaddwd`.
    Avx2,
    /// AVX-512 VNNI `vpdpbusd`.
    Avx512Vnni,
}

impl Int8Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Int8Kernel; 4] = [
        Int8Kernel::Reference,
        Int8Kernel::Portable,
        Int8Kernel::Avx2,
        Int8Kernel::Avx512Vnni,
    ];

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Int8Kernel::Reference | Int8Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => joulecut_ops::Isa::detected().avx2(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni => joulecut_ops::Isa::detected().avx512_vnni(),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Kernel::Avx2 | Int8Kernel::Avx512Vnni => false,
        }
    }

    /// The kernels this CPU can run.
    pub fn available() -> Vec<Int8Kernel> {
        Int8Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest available kernel, or the one named by `JOULECUT_INT8_KERNEL`
    /// (`reference`, `portable`, `avx2`, `avx512vnni`) when that is available. Cached.
    pub fn detect() -> Int8Kernel {
        static DETECTED: OnceLock<Int8Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let forced = std::env::var("JOULECUT_INT8_KERNEL")
                .ok()
                .and_then(|v| v.parse::<Int8Kernel>().ok());
            match forced {
                Some(k) if k.is_available() => k,
                _ => *Int8Kernel::available()
                    .last()
                    .unwrap_or(&Int8Kernel::Portable),
            }
        })
    }

    /// Short lowercase name (`avx512vnni`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Reference => "reference",
            Int8Kernel::Portable => "portable",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Avx512Vnni => "avx512vnni",
        }
    }
}

impl std::fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Int8Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Int8Kernel> {
        Int8Kernel::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| Error::BadConfig(format!("unknown int8 kernel `{s}`")))
    }
}

/// Whether the activations have negative values: picks the AVX2 inner loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signs {
    /// Any int8 value.
    Mixed,
    /// Every value in `0..=127` (the AVX2 kernel pairs groups before widening when the weights
    /// allow it: [`PackedWeights::pairs_u7`]).
    NonNegative,
    /// Every value in `0..=63` (the AVX2 kernel pairs groups before widening, for any weights).
    SixBit,
}

impl Signs {
    /// Scans `a` (a few µs for a 256 × 784 batch, against the GEMM's milliseconds).
    pub(super) fn of(kernel: Int8Kernel, a: &[i8]) -> Signs {
        #[cfg(target_arch = "x86_64")]
        // The scan is AVX2 code; every AVX-512 VNNI CPU has AVX2 too.
        if matches!(kernel, Int8Kernel::Avx2 | Int8Kernel::Avx512Vnni)
            && Int8Kernel::Avx2.is_available()
        {
            // SAFETY: AVX2 checked.
            let bits = unsafe { x86::or_all_avx2(a) };
            // Bit 7 set: some value is negative. Otherwise the OR bounds every value from above
            // and is at most 63 exactly when every value is.
            return if bits & 0x80 != 0 {
                Signs::Mixed
            } else {
                Signs::of_range(0, i32::from(bits))
            };
        }
        let _ = (kernel, a);
        Signs::Mixed
    }

    /// The loop values in `lo..=hi` allow.
    fn of_range(lo: i32, hi: i32) -> Signs {
        match (lo >= 0, hi <= 63) {
            (true, true) => Signs::SixBit,
            (true, false) => Signs::NonNegative,
            (false, _) => Signs::Mixed,
        }
    }

    /// What every value a `mode` produces is known to satisfy.
    pub(super) fn of_mode(mode: ActivationQuant) -> Signs {
        let (lo, hi) = mode.code_range();
        Signs::of_range(lo, hi)
    }
}

/// The kernel that actually runs: unavailable ones fall back to portable code, and AVX2 with
/// signed activations can't take -128 weights exactly.
pub(super) fn effective(kernel: Int8Kernel, w: &PackedWeights, signs: Signs) -> Int8Kernel {
    match kernel {
        Int8Kernel::Avx2 if w.has_min && signs == Signs::Mixed => Int8Kernel::Portable,
        k if !k.is_available() => Int8Kernel::Portable,
        k => k,
    }
}
