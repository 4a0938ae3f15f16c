//! The portable encoder against joulecut's own kernels (f32), against itself on decoded weights
//! (int8 through Q8_0, smoothed or not), and in half precision.

use std::collections::BTreeMap;

use candle_core::Device;
use joulecut_checkpoint::{DenseTensor, TensorData};
use joulecut_quant::{Int8Config, quantize_tensor};

use super::super::structured_tests::{Mem, batch, cfg, dense_mem, load, tensors, tensors_for};
use super::super::{BertConfig, Workspace};
use super::{PortableEncoder, PortableKind, Precision, q8_0_blocks};

type Raw = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Widths that are multiples of 32, as Q8_0 needs.
fn wide() -> BertConfig {
    BertConfig {
        hidden: 64,
        intermediate: 128,
        ..cfg()
    }
}

/// Every encoder weight int8 per output channel (`smooth`: with per-input factors too).
fn int8(t: &Raw, smooth: bool) -> Mem {
    let mut m = dense_mem(t);
    for (n, (s, v)) in t {
        if n.starts_with("encoder.") && n.ends_with(".weight") && s.len() == 2 {
            let q = if smooth {
                let f: Vec<f32> = (0..s[1]).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
                joulecut_quant::quantize_smoothed(n, v, s, &f, &Int8Config::default()).unwrap()
            } else {
                quantize_tensor(n, v, s, &Int8Config::default()).unwrap()
            };
            m.0.insert(n.clone(), TensorData::Int8(q));
        }
    }
    m
}

/// The same tensors decoded to f32.
fn decoded(m: &Mem) -> Mem {
    Mem(m
        .0
        .iter()
        .map(|(n, t)| {
            let d = DenseTensor::from_f32(t.shape().to_vec(), &t.to_f32());
            (n.clone(), TensorData::Dense(d))
        })
        .collect())
}

fn encode(c: BertConfig, m: &Mem, p: Precision) -> Vec<f32> {
    PortableEncoder::load(c, m, &Device::Cpu, p)
        .unwrap()
        .encode(&batch())
        .unwrap()
}

/// The smallest cosine between matching rows.
fn min_cosine(a: &[f32], b: &[f32], width: usize) -> f64 {
    a.chunks(width)
        .zip(b.chunks(width))
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(1.0, f64::min)
}

#[test]
fn f32_equals_joulecut_kernels() {
    let t = tensors(11);
    let want = load(&t)
        .encode(&batch(), &mut Workspace::default())
        .unwrap();
    let enc = PortableEncoder::load(cfg(), &dense_mem(&t), &Device::Cpu, Precision::F32).unwrap();
    assert!(enc.routes().iter().all(|(_, k)| *k == PortableKind::Dense));
    let got = enc.encode(&batch()).unwrap();
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        d < 1e-4,
        "portable f32 differs from joulecut's kernels by {d}"
    );
}

#[test]
fn int8_runs_as_q8_0_and_matches_its_decoded_weights() {
    let c = wide();
    let t = tensors_for(&c, 5);
    for smooth in [false, true] {
        let m = int8(&t, smooth);
        let enc = PortableEncoder::load(c, &m, &Device::Cpu, Precision::F32).unwrap();
        assert_eq!(enc.routes().len(), 6 * c.layers);
        assert!(
            enc.routes()
                .iter()
                .all(|(_, k)| *k == PortableKind::Int8Q8_0)
        );
        let got = enc.encode(&batch()).unwrap();
        let want = encode(c, &decoded(&m), Precision::F32);
        // the weights are the same integers; only the inputs' int8 rounding differs
        let cos = min_cosine(&got, &want, c.hidden);
        assert!(cos > 0.999, "smooth={smooth}: min cosine {cos}");
    }
}

#[test]
fn q8_0_blocks_keep_the_integers_and_refuse_what_they_cannot_hold() {
    let v: Vec<f32> = (0..2 * 64).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    let q = quantize_tensor("w", &v, &[2, 64], &Int8Config::default()).unwrap();
    let b = q8_0_blocks(&q).unwrap();
    assert_eq!(b.len(), 4 * 34);
    for (i, block) in b.chunks(34).enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        assert!((d - q.scales[i / 2]).abs() <= 1e-3 * q.scales[i / 2]);
        let ints: Vec<i8> = block[2..].iter().map(|&x| x as i8).collect();
        assert_eq!(ints, q.values[i * 32..(i + 1) * 32]);
    }
    // 48 inputs: not whole 32-wide blocks
    let odd = quantize_tensor("w", &v[..96], &[2, 48], &Int8Config::default()).unwrap();
    assert!(q8_0_blocks(&odd).is_none());
    // asymmetric grids have zero points Q8_0 cannot hold
    let mut asym = q.clone();
    asym.zero_points = Some(vec![3, -2]);
    assert!(q8_0_blocks(&asym).is_none());
}

#[test]
fn int8_that_q8_0_cannot_hold_is_decoded_and_says_so() {
    // cfg()'s 16-wide layers are not whole Q8_0 blocks
    let c = cfg();
    let m = int8(&tensors(2), false);
    let enc = PortableEncoder::load(c, &m, &Device::Cpu, Precision::F32).unwrap();
    assert!(
        enc.routes()
            .iter()
            .all(|(_, k)| *k == PortableKind::Decoded)
    );
    let got = enc.encode(&batch()).unwrap();
    let want = encode(c, &decoded(&m), Precision::F32);
    assert!(min_cosine(&got, &want, c.hidden) > 0.99999);
}

#[test]
fn half_precisions_stay_close_to_f32() {
    let c = wide();
    let m = dense_mem(&tensors_for(&c, 9));
    let f32s = encode(c, &m, Precision::F32);
    for (p, bound) in [(Precision::F16, 0.9999), (Precision::BF16, 0.999)] {
        let got = encode(c, &m, p);
        let cos = min_cosine(&got, &f32s, c.hidden);
        assert!(cos > bound, "{p}: min cosine {cos}");
    }
}

#[test]
fn precision_parses_and_prints() {
    for p in [Precision::F32, Precision::F16, Precision::BF16] {
        assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
    }
    assert!("int4".parse::<Precision>().is_err());
}
