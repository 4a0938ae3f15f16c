//! Cost of opening and closing a window (target: ≤ 1% of a 1-second window, i.e. ≤ 10 ms).
//!
//! `cpu-estimate`: the meter this CI machine gets (no counters). `powercap-fake-2dom`: a fake
//! powercap tree with a package and a dram zone on tmpfs/disk, so each edge also reads two files.

use std::sync::Arc;

use criterion::{Criterion, criterion_main};
use joulecut_energy::{FsReader, Meter, MeterConfig};

fn fake_tree(dir: &std::path::Path) {
    for (zone, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:0:1", "dram")] {
        let z = dir.join(zone);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(z.join("energy_uj"), "123456789\n").unwrap();
        std::fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
    }
}

fn bench_window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window_open_close");

    let cfg = MeterConfig {
        use_nvml: false,
        ..MeterConfig::default()
    };
    let meter = Meter::auto(cfg).unwrap();
    g.bench_function("cpu-estimate", |b| {
        b.iter(|| std::hint::black_box(meter.window("w").finish()))
    });

    let dir = tempfile::tempdir().unwrap();
    fake_tree(dir.path());
    let cfg = MeterConfig {
        powercap_root: dir.path().to_path_buf(),
        reader: Arc::new(FsReader),
        use_perf: false,
        use_nvml: false,
        // The fake counters never move.
        rapl_liveness_timeout: std::time::Duration::ZERO,
        ..MeterConfig::default()
    };
    let meter = Meter::auto(cfg).unwrap();
    g.bench_function("powercap-fake-2dom", |b| {
        b.iter(|| std::hint::black_box(meter.window("w").finish()))
    });
    g.bench_function("powercap-fake-2dom-closure", |b| {
        b.iter(|| std::hint::black_box(meter.measure("w", || 1u32).1))
    });
    g.finish();
}

// The macro generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_window);
}
criterion_main!(group::benches);
