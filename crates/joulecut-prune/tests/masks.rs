//! Property tests of the masks: exact sparsity, N:M in every group, structure, ordering.

use std::collections::BTreeMap;

use joulecut_prune::{
    Criterion, F32Tensor, Granularity, Mask, PruneSpec, Scope, Selection, compute_masks,
};
use proptest::prelude::*;

/// Values drawn from a small set so that ties are common.
fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![(-4i32..=4).prop_map(|v| v as f32 * 0.5), -3.0f32..3.0],
        n,
    )
}

fn tensor(max_rows: usize, max_cols: usize) -> impl Strategy<Value = F32Tensor> {
    (1..=max_rows, 1..=max_cols).prop_flat_map(|(r, c)| {
        values(r * c).prop_map(move |v| F32Tensor::new(vec![r, c], v).unwrap())
    })
}

fn model(tensors: Vec<F32Tensor>) -> BTreeMap<String, F32Tensor> {
    tensors
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("l{i}.weight"), t))
        .collect()
}

fn target_units(s: f64, n: usize) -> usize {
    ((s * n as f64).round() as usize).min(n)
}

/// Every pruned magnitude is <= every kept magnitude.
fn threshold_holds(values: &[f32], keep: &[bool]) -> bool {
    let max_pruned = values
        .iter()
        .zip(keep)
        .filter(|(_, k)| !**k)
        .map(|(v, _)| v.abs())
        .fold(0.0f32, f32::max);
    let min_kept = values
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(v, _)| v.abs())
        .fold(f32::INFINITY, f32::min);
    max_pruned <= min_kept
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn layer_sparsity_is_exact_to_one_element(ts in prop::collection::vec(tensor(12, 40), 1..4), s in 0.0f64..0.999) {
        let m = model(ts);
        let masks = compute_masks(&m, &PruneSpec::new(s)).unwrap();
        for (name, t) in &m {
            let mask = &masks[name];
            prop_assert_eq!(mask.pruned(), target_units(s, t.numel()));
            prop_assert!((mask.sparsity() - s).abs() <= 0.5 / t.numel() as f64 + 1e-12);
            prop_assert!(threshold_holds(&t.values, mask.keep()));
        }
    }

    #[test]
    fn global_sparsity_is_exact_and_uses_one_threshold(ts in prop::collection::vec(tensor(10, 30), 1..5), s in 0.0f64..0.999) {
        let m = model(ts);
        let masks = compute_masks(&m, &PruneSpec::new(s).scope(Scope::Global)).unwrap();
        let total: usize = m.values().map(F32Tensor::numel).sum();
        let pruned: usize = masks.values().map(Mask::pruned).sum();
        prop_assert_eq!(pruned, target_units(s, total));
        let all_values: Vec<f32> = m.values().flat_map(|t| t.values.clone()).collect();
        let all_keep: Vec<bool> = masks.values().flat_map(|k| k.keep().to_vec()).collect();
        prop_assert!(threshold_holds(&all_values, &all_keep));
    }

    #[test]
    fn masks_are_deterministic(ts in prop::collection::vec(tensor(8, 20), 1..3), s in 0.0f64..0.999) {
        let m = model(ts);
        let spec = PruneSpec::new(s).scope(Scope::Global);
        prop_assert_eq!(compute_masks(&m, &spec).unwrap(), compute_masks(&m, &spec).unwrap());
    }

    #[test]
    fn rows_prune_whole_rows_exactly(t in tensor(20, 16), s in 0.0f64..0.999, l2 in any::<bool>(), channels in any::<bool>()) {
        let rows = t.rows();
        let mut m = BTreeMap::new();
        m.insert("fc.bias".to_string(), F32Tensor::new(vec![rows], vec![1.0; rows]).unwrap());
        m.insert("fc.weight".to_string(), t);
        let g = if channels { Granularity::Channels } else { Granularity::Rows };
        let c = if l2 { Criterion::L2 } else { Criterion::L1 };
        let masks = compute_masks(&m, &PruneSpec::new(s).granularity(g).criterion(c)).unwrap();
        let w = &masks["fc.weight"];
        let kept_rows = w.rows_kept();
        prop_assert_eq!(kept_rows.iter().filter(|k| !**k).count(), target_units(s, rows));
        for (row, kept) in w.keep().chunks(w.numel() / rows).zip(&kept_rows) {
            prop_assert!(row.iter().all(|k| k == kept));
        }
        prop_assert_eq!(masks["fc.bias"].keep(), kept_rows.as_slice());
    }

    #[test]
    fn nm_holds_in_every_group(
        (n, m) in (2usize..9).prop_flat_map(|m| (1..m, Just(m))),
        rows in 1usize..6, groups in 1usize..6, conv in any::<bool>(), seed in any::<u64>(),
    ) {
        let spatial = if conv { 3 } else { 1 };
        let shape = if conv { vec![rows, groups * m, 1, 3] } else { vec![rows, groups * m] };
        let numel: usize = shape.iter().product();
        let v: Vec<f32> = (0..numel).map(|i| (((i as u64 + 1).wrapping_mul(seed | 1) >> 40) % 7) as f32 - 3.0).collect();
        let t = F32Tensor::new(shape, v).unwrap();
        let mut model = BTreeMap::new();
        model.insert("x.weight".to_string(), t.clone());
        let masks = compute_masks(&model, &PruneSpec::new(0.0).granularity(Granularity::nm(n, m).unwrap())).unwrap();
        let keep = masks["x.weight"].keep();
        for r in 0..rows {
            for g in 0..groups {
                for s in 0..spatial {
                    let idx: Vec<usize> = (0..m).map(|j| (r * groups * m + g * m + j) * spatial + s).collect();
                    let kept: Vec<usize> = idx.iter().copied().filter(|i| keep[*i]).collect();
                    prop_assert_eq!(kept.len(), n);
                    let group_vals: Vec<f32> = idx.iter().map(|i| t.values[*i]).collect();
                    let group_keep: Vec<bool> = idx.iter().map(|i| keep[*i]).collect();
                    prop_assert!(threshold_holds(&group_vals, &group_keep));
                }
            }
        }
        prop_assert!((masks["x.weight"].sparsity() - (1.0 - n as f64 / m as f64)).abs() < 1e-12);
    }
}

#[test]
fn per_layer_map_overrides_the_default() {
    let mut m = BTreeMap::new();
    m.insert(
        "a.weight".to_string(),
        F32Tensor::new(vec![10, 10], (0..100).map(|i| i as f32).collect()).unwrap(),
    );
    m.insert(
        "b.weight".to_string(),
        F32Tensor::new(vec![10, 10], (0..100).map(|i| i as f32).collect()).unwrap(),
    );
    let masks = compute_masks(&m, &PruneSpec::new(0.5).layer_sparsity("b.weight", 0.9)).unwrap();
    assert_eq!(masks["a.weight"].pruned(), 50);
    assert_eq!(masks["b.weight"].pruned(), 90);
    let e = compute_masks(
        &m,
        &PruneSpec::new(0.5)
            .layer_sparsity("b.weight", 0.9)
            .scope(Scope::Global),
    )
    .unwrap_err();
    assert!(e.is_bad_input() && e.hint().is_some(), "{e}");
}

#[test]
fn default_selection_never_touches_biases_or_norms() {
    let mut m = BTreeMap::new();
    m.insert(
        "fc.weight".to_string(),
        F32Tensor::new(vec![2, 2], vec![1., 2., 3., 4.]).unwrap(),
    );
    m.insert(
        "fc.bias".to_string(),
        F32Tensor::new(vec![2], vec![0.1, 0.2]).unwrap(),
    );
    m.insert(
        "norm.weight".to_string(),
        F32Tensor::new(vec![2, 2], vec![0.1; 4]).unwrap(),
    );
    let masks = compute_masks(&m, &PruneSpec::new(0.5).scope(Scope::Global)).unwrap();
    assert_eq!(masks.keys().collect::<Vec<_>>(), ["fc.weight"]);
    let sel = Selection::default().include("*");
    let masks = compute_masks(&m, &PruneSpec::new(0.5).selection(sel)).unwrap();
    assert_eq!(masks.len(), 3);
}
