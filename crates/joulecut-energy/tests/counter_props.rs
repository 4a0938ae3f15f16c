//! Property tests of the wraparound accounting.

use std::time::Duration;

use joulecut_energy::counter::WrappingCounter;
use proptest::prelude::*;

proptest! {
    /// For any sequence of counter readings with wraps (at most one wrap between two readings, the
    /// case the wrap guard guarantees), the sum of window deltas equals the total energy.
    #[test]
    fn window_deltas_sum_to_total(
        modulus in 2u64..=1_000_000_000_000,
        start_frac in 0.0f64..1.0,
        steps in prop::collection::vec((0.0f64..1.0, any::<bool>()), 1..200),
    ) {
        let start = ((modulus - 1) as f64 * start_frac) as u64;
        // Effectively unbounded power, so no decrease is mistaken for a reset.
        let mut c = WrappingCounter::new(start, Some(modulus), 1e30);
        let mut raw = start;
        let mut truth: u64 = 0;
        let mut window_start = c.total();
        let mut window_sum: u64 = 0;
        for (frac, cut) in steps {
            let inc = ((modulus - 1) as f64 * frac) as u64; // < modulus: at most one wrap
            truth += inc;
            raw = (raw + inc) % modulus;
            c.observe(raw, Duration::from_millis(1));
            prop_assert!(c.total().0 >= window_start.0, "never a negative delta");
            if cut {
                window_sum += c.total().since(window_start).0;
                window_start = c.total();
            }
        }
        window_sum += c.total().since(window_start).0;
        prop_assert_eq!(c.total().0, truth);
        prop_assert_eq!(window_sum, truth);
    }

    /// Any raw values at all (garbage, resets, unknown range, odd power bounds): no panic, and the
    /// total never decreases.
    #[test]
    fn arbitrary_readings_never_panic(
        first in any::<u64>(),
        modulus in prop::option::of(any::<u64>()),
        watts in prop::num::f64::ANY,
        raws in prop::collection::vec((any::<u64>(), any::<u32>()), 0..100),
    ) {
        let mut c = WrappingCounter::new(first, modulus, watts);
        let mut last = c.total();
        for (raw, us) in raws {
            c.observe(raw, Duration::from_micros(u64::from(us)));
            prop_assert!(c.total() >= last);
            last = c.total();
        }
    }
}
