//! Evaluation: accuracy and throughput over a dataset, latency percentiles at a batch size, and
//! [`evaluate_for`]: whole passes repeated until an energy window is long enough to trust.

use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Module, Tensor};
use joulecut_models::Model;
use serde::Serialize;

use crate::data::Dataset;
use crate::{Error, Result};

/// Accuracy and throughput of one pass over a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct EvalStats {
    /// Fraction correct.
    pub accuracy: f64,
    /// Correct predictions.
    pub correct: usize,
    /// Samples evaluated.
    pub samples: usize,
    /// Batch size used.
    pub batch_size: usize,
    /// Seconds in forward passes (data already in memory).
    pub seconds: f64,
    /// Samples per second at `batch_size`.
    pub samples_per_second: f64,
}

/// Latency distribution of single forward calls.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// Batch size of each call.
    pub batch_size: usize,
    /// Calls timed (after warm-up).
    pub iterations: usize,
    /// Median microseconds per call.
    pub median_us: f64,
    /// 10th percentile.
    pub p10_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
}

fn check(model: &Model, data: &Dataset) -> Result<()> {
    let c = model.config();
    if data.dim != c.input_dim() {
        return Err(Error::Mismatch(format!(
            "the data has {} features per sample but {} takes {}",
            data.dim,
            c.name(),
            c.input_dim()
        )));
    }
    if data.is_empty() {
        return Err(Error::BadSetting("the evaluation set is empty".into()));
    }
    Ok(())
}

/// Runs the model over `data` in batches of `batch_size`.
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
) -> Result<EvalStats> {
    check(model, data)?;
    if batch_size == 0 {
        return Err(Error::BadSetting("--batch-size must be at least 1".into()));
    }
    let (xs, ys) = data.tensors(device)?;
    let n = data.len();
    let mut correct = 0usize;
    let t0 = Instant::now();
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let x = xs
            .narrow(0, start, len)
            .map_err(Error::candle("slice batch"))?;
        let y = ys
            .narrow(0, start, len)
            .map_err(Error::candle("slice batch"))?;
        let hits = model
            .forward(&x)
            .and_then(|l| l.argmax(D::Minus1))
            .and_then(|p| p.eq(&y))
            .and_then(|e| e.to_dtype(DType::U32))
            .and_then(|e| e.sum_all())
            .and_then(|e| e.to_scalar::<u32>())
            .map_err(Error::candle("forward pass"))?;
        correct += hits as usize;
        start += len;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(EvalStats {
        accuracy: correct as f64 / n as f64,
        correct,
        samples: n,
        batch_size,
        seconds,
        samples_per_second: n as f64 / seconds.max(1e-9),
    })
}

/// Whole evaluation passes run inside one energy window by [`evaluate_for`].
#[derive(Debug, Clone, Serialize)]
pub struct RepeatedEval {
    /// Each pass, in order (at least one).
    pub passes: Vec<EvalStats>,
    /// Wall seconds from the start of the first pass to the end of the last.
    pub seconds: f64,
}

impl RepeatedEval {
    /// Samples processed over all passes: divide the window's joules by this.
    pub fn samples(&self) -> usize {
        self.passes.iter().map(|p| p.samples).sum()
    }

    /// The first pass.
    pub fn first(&self) -> &EvalStats {
        &self.passes[0]
    }
}

/// Runs whole passes of [`evaluate`] over `data`: at least `min_passes` (and at least one), and more
/// until `min_window` of wall time has passed. Energy counters only step every update period (NVML
/// about every 100 ms), so a window of one 15 ms pass can read 0 J; callers pass
/// [`Meter::min_window`](joulecut_energy::Meter::min_window), which is zero when nothing is measured,
/// so estimate-only runs do exactly `min_passes`. Divide the window's energy by
/// [`RepeatedEval::samples`].
pub fn evaluate_for(
    model: &Model,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
    min_passes: usize,
    min_window: Duration,
) -> Result<RepeatedEval> {
    let t0 = Instant::now();
    let mut passes = Vec::with_capacity(min_passes.max(1));
    while passes.len() < min_passes.max(1) || t0.elapsed() < min_window {
        passes.push(evaluate(model, data, batch_size, device)?);
    }
    Ok(RepeatedEval {
        passes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Times `iterations` forward calls of `batch_size` samples (after `iterations / 10 + 1` warm-up
/// calls), cycling through `data`.
pub fn latency(
    model: &Model,
    data: &Dataset,
    batch_size: usize,
    iterations: usize,
    device: &Device,
) -> Result<LatencyStats> {
    check(model, data)?;
    let bs = batch_size.clamp(1, data.len());
    let (xs, _) = data.tensors(device)?;
    let batches = data.len() / bs;
    let inputs: Vec<Tensor> = (0..batches.min(64))
        .map(|i| xs.narrow(0, i * bs, bs).and_then(|t| t.contiguous()))
        .collect::<candle_core::Result<_>>()
        .map_err(Error::candle("prepare inputs"))?;
    let warm = iterations / 10 + 1;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..warm + iterations {
        let x = &inputs[i % inputs.len()];
        let t0 = Instant::now();
        let y = model.forward(x).map_err(Error::candle("forward pass"))?;
        // Touch the output so lazy backends finish the work inside the timed region.
        let _ = y.dims();
        let dt = t0.elapsed().as_secs_f64() * 1e6;
        if i >= warm {
            times.push(dt);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(LatencyStats {
        batch_size: bs,
        iterations,
        median_us: pct(0.5),
        p10_us: pct(0.1),
        p90_us: pct(0.9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use joulecut_models::{ModelConfig, init_varmap};

    fn setup() -> (Model, Dataset) {
        let splits = crate::data::synthetic(64, 64, 8, 3, 0);
        let cfg = ModelConfig::parse("mlp:8-4-3").unwrap();
        let vm = init_varmap(&cfg, 0, &Device::Cpu).unwrap();
        (Model::from_varmap(&cfg, &vm).unwrap(), splits.test)
    }

    #[test]
    fn evaluate_for_runs_the_minimum_passes_without_a_window() {
        let (m, d) = setup();
        let r = evaluate_for(&m, &d, 16, &Device::Cpu, 3, Duration::ZERO).unwrap();
        assert_eq!(r.passes.len(), 3);
        assert_eq!(r.samples(), 3 * d.len());
        assert_eq!(r.first().samples, d.len());
        // Zero passes asked: still one, so there is something to divide by.
        let r = evaluate_for(&m, &d, 16, &Device::Cpu, 0, Duration::ZERO).unwrap();
        assert_eq!(r.passes.len(), 1);
    }

    #[test]
    fn evaluate_for_repeats_until_the_window_is_long_enough() {
        let (m, d) = setup();
        let window = Duration::from_millis(30);
        let r = evaluate_for(&m, &d, 16, &Device::Cpu, 1, window).unwrap();
        assert!(r.seconds >= window.as_secs_f64());
        assert!(
            r.passes.len() > 1,
            "a 64-sample pass is far shorter than 30 ms"
        );
        assert_eq!(r.samples(), r.passes.len() * d.len());
        let acc = r.first().accuracy;
        assert!(r.passes.iter().all(|p| p.accuracy == acc), "passes agree");
    }
}
