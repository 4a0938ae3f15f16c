//! The estimate is proportional to CPU time. Alone in its own test binary: the in-process estimate
//! uses the whole process's CPU time, so parallel tests in the same process would blur it.

use std::time::Duration;

use joulecut_energy::{Meter, MeterConfig};

#[test]
fn busy_window_costs_at_least_ten_times_a_sleeping_one() {
    let dir = std::env::temp_dir().join("joulecut-energy-no-powercap");
    let meter = Meter::auto(MeterConfig {
        powercap_root: dir.clone(),
        perf_pmu_dir: dir,
        use_nvml: false,
        ..MeterConfig::default()
    })
    .unwrap();
    let (_, idle) = meter.measure("sleep", || std::thread::sleep(Duration::from_millis(200)));
    let (_, busy) = meter.measure("busy", || {
        // Burn CPU time, not wall time: the machine may be shared.
        let t = joulecut_energy::estimate::process_cpu_time();
        let mut x = 0u64;
        while joulecut_energy::estimate::process_cpu_time() - t < Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    });
    let (i, b) = (
        idle.domain("cpu").unwrap().joules.0,
        busy.domain("cpu").unwrap().joules.0,
    );
    assert!(b >= 10 * i.max(1), "busy {b} µJ vs idle {i} µJ");
    assert!(busy.cpu >= Duration::from_millis(150), "{:?}", busy.cpu);
}
