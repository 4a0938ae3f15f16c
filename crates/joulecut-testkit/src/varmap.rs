//! Copies of a candle `VarMap`'s values, to check which weights a training step changed.

use candle_nn::VarMap;

/// Every variable's name and flattened f32 values, sorted by name.
pub fn snapshot(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, var)| {
            let t = var.as_tensor().flatten_all().unwrap();
            (n.clone(), t.to_vec1::<f32>().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
