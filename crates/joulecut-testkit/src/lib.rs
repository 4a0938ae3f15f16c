//! Test support for the joulecut workspace, in one place: the deterministic generators the tests
//! and benches draw their data from, and the file fixtures they write.
//!
//! A dev-dependency only: no joulecut crate depends on it outside `[dev-dependencies]`, and it
//! depends on no joulecut crate, so every crate's own tests can use it.
//!
//! - [`rng`]: [`XorShift64`] (the tests' generator), with [`XorShift32`] and [`Lcg32`] for the
//!   few tests whose data was drawn from those. Production code draws from
//!   `joulecut_models::Rng` (SplitMix64); these are for test data only.
//! - [`fixture`]: safetensors files written by hand ([`write_safetensors`]), the foreign
//!   (PyTorch-named) MLP checkpoint ([`ForeignMlp`]) and random MLP parameters ([`mlp_params`]).
//! - [`varmap`]: a sorted copy of a `VarMap`'s values, to compare weights before and after.
//!
//! ```
//! use joulecut_testkit::{ForeignMlp, Values, XorShift64};
//! let dir = std::env::temp_dir().join(format!("testkit-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("foreign.safetensors");
//! ForeignMlp::new(&[784, 32, 10], Values::Random(XorShift64::new(1)))
//!     .pytorch_format()
//!     .write(&path);
//! let bytes = std::fs::read(&path)?;
//! let st = safetensors::SafeTensors::deserialize(&bytes)?;
//! assert_eq!(st.tensor("fc1.weight")?.shape(), &[32, 784]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod fixture;
pub mod rng;
pub mod varmap;

pub use fixture::{
    ForeignMlp, Stored, Values, f32_bytes, mlp_params, pytorch_metadata, write_safetensors,
};
pub use rng::{Lcg32, XorShift32, XorShift64};
