//! Deterministic generators for test data. Every sequence here is fixed forever: tests compare
//! against numbers drawn from them, so changing a shift or a seeding rule changes their data.
//!
//! [`XorShift64`] is the one the tests use; [`XorShift32`] and [`Lcg32`] reproduce the data of
//! the few tests that were written with those.
//!
//! ```
//! use joulecut_testkit::XorShift64;
//! let mut a = XorShift64::new(7);
//! let v = a.signed_vec(4, 0.5);
//! assert!(v.iter().all(|x| (-0.5..0.5).contains(x)));
//! assert_eq!(XorShift64::new(1).next_u64(), XorShift64::from_state(0x9E37_79B9_7F4A_7C15).next_u64());
//! ```

/// The golden-ratio constant `new` multiplies seeds by, so nearby seeds start far apart.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Marsaglia's xorshift64 (shifts 13, 7, 17). Fast and good enough for test data; not for
/// statistics or cryptography.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from a seed mixed by a golden-ratio multiply: state `seed * φ | 1`.
    pub fn new(seed: u64) -> Self {
        XorShift64(seed.wrapping_mul(GOLDEN) | 1)
    }

    /// A generator whose state is `state | 1` as given (the low bit keeps it off xorshift's
    /// all-zero fixed point, so seeds `2k` and `2k + 1` give the same sequence).
    pub fn from_state(state: u64) -> Self {
        XorShift64(state | 1)
    }

    /// The next 64 bits (the new state).
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// Uniform in [0, 1) from the top 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, 1) from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A byte from the top 8 bits, as a signed value.
    pub fn next_i8(&mut self) -> i8 {
        (self.next_u64() >> 56) as u8 as i8
    }

    /// Uniform in [-scale, scale).
    pub fn signed_f32(&mut self, scale: f32) -> f32 {
        (self.next_f32() * 2.0 - 1.0) * scale
    }

    /// `n` values uniform in [-scale, scale).
    pub fn signed_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.signed_f32(scale)).collect()
    }

    /// `n` bytes from [`next_i8`](Self::next_i8).
    pub fn i8_vec(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next_i8()).collect()
    }
}

/// Marsaglia's 32-bit xorshift (shifts 13, 17, 5), started from `seed | 1`.
#[derive(Debug, Clone)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator whose state is `seed | 1`.
    pub fn new(seed: u32) -> Self {
        XorShift32(seed | 1)
    }

    /// The next 32 bits (the new state).
    pub fn next_u32(&mut self) -> u32 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }

    /// Uniform in [0, 1] (the whole state over `u32::MAX`).
    pub fn next_f32(&mut self) -> f32 {
        self.next_u32() as f32 / u32::MAX as f32
    }
}

/// The 32-bit linear congruential generator of Numerical Recipes (`s * 1664525 + 1013904223`),
/// started from the seed as given.
#[derive(Debug, Clone)]
pub struct Lcg32(u32);

impl Lcg32 {
    /// A generator whose state is `seed`.
    pub fn new(seed: u32) -> Self {
        Lcg32(seed)
    }

    /// The next 32 bits (the new state).
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// Uniform in [0, 1) from the top 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequences the tests' data came from, written out as the copies computed them.
    #[test]
    fn sequences_match_the_inline_copies() {
        let mut s = 5u64.wrapping_mul(GOLDEN) | 1;
        let mut r = XorShift64::new(5);
        let mut q = XorShift64::from_state(5);
        let mut t = 5u64 | 1;
        for _ in 0..100 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            assert_eq!(r.next_u64(), s);
            t ^= t << 13;
            t ^= t >> 7;
            t ^= t << 17;
            assert_eq!(q.next_u64(), t);
        }
        let (mut s32, mut x32) = (9u32 | 1, XorShift32::new(9));
        let (mut l, mut lcg) = (7u32, Lcg32::new(7));
        for _ in 0..100 {
            s32 ^= s32 << 13;
            s32 ^= s32 >> 17;
            s32 ^= s32 << 5;
            assert_eq!(x32.next_u32(), s32);
            l = l.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            assert_eq!(lcg.next_u32(), l);
        }
    }

    #[test]
    fn floats_stay_in_range() {
        let mut r = XorShift64::new(3);
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&r.next_f32()));
            assert!((0.0..1.0).contains(&r.next_f64()));
            assert!((-2.0..2.0).contains(&r.signed_f32(2.0)));
        }
    }
}
