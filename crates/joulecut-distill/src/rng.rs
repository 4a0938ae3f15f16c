//! The seeded generator of the hint projections' initial weights. It is SplitMix64 seeded exactly
//! as `joulecut_models::Rng`, whose sequence the projections were drawn from before this crate
//! stopped depending on the models: a seed keeps giving the same projections (and so the same
//! trained students).

/// SplitMix64.
pub(crate) struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    /// A generator from a seed.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ GOLDEN)
    }

    /// Next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), on a grid of 2^-24.
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    /// The first values of `joulecut_models::Rng` for the same seeds (read from it when this copy
    /// was made): the hint projections depend on them.
    #[test]
    fn same_sequence_as_the_models_generator() {
        let mut r = Rng::new(0);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f,
                0xf88b_b8a8_724c_81ec
            ]
        );
        let mut r = Rng::new(5 ^ 0x4849_4e54);
        let got: Vec<f32> = (0..4).map(|_| r.next_f32()).collect();
        let want =
            [11_820_200u32, 10_521_732, 10_780_801, 13_243_908].map(|k| k as f32 / 16_777_216.0);
        assert_eq!(got, want);
    }
}
