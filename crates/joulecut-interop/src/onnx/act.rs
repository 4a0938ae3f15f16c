//! joulecut's run-time quantization of an int8 layer's input, written as standard ONNX ops so an
//! exported graph computes what `joulecut eval` runs (joulecut-quant's `gemm/act.rs`): per row
//! (linear layers) or per image (convolutions), over `[min(x, 0), max(x, 0)]`,
//!
//! ```text
//! scale = range == 0 ? 1 : max(range / levels, f32::MIN_POSITIVE)        (f32)
//! zp    = clamp(round_half_even(code_lo − lo / scale), code_lo, code_hi)  (rounded in f64, as joulecut)
//! q     = clamp(round_half_even(x · (1 / scale)) + zp, code_lo, code_hi)  (f32)
//! x'    = (q − zp) · scale
//! ```
//!
//! with `(code_lo, code_hi)` = (−128, 127) for `s8`, (0, 127) for `u7`, (0, 63) for `u6`, and
//! `levels = code_hi − code_lo`. ONNX `Round` rounds half to even, like joulecut. The int8 GEMM
//! then sums `(q − zp)·q_w` exactly in integers; the graph sums `x'·w'` in f32, so the two differ
//! only by f32 rounding.

use joulecut_quant::ActivationGrid;

use super::graph::{Attr, Graph};
use super::proto::tensor_proto::DataType;

/// Quantizes and dequantizes `x` on `grid`, one grid per slice over `axes` (kept as size-1
/// dimensions for broadcasting); returns the dequantized value's name. `p` prefixes node names.
pub(crate) fn quantize_input(
    g: &mut Graph,
    x: &str,
    grid: ActivationGrid,
    axes: &[i64],
    p: &str,
) -> String {
    let (lo_code, hi_code) = grid.mode().code_range();
    let levels = (hi_code - lo_code) as f32;
    let zero = g.scalar_f32(&format!("{p}_act_zero"), 0.0);
    let one = g.scalar_f32(&format!("{p}_act_one"), 1.0);
    let levels = g.scalar_f32(&format!("{p}_act_levels"), levels);
    let tiny = g.scalar_f32(&format!("{p}_act_min_positive"), f32::MIN_POSITIVE);
    let (lo_f, hi_f) = (
        g.scalar_f32(&format!("{p}_act_code_lo"), lo_code as f32),
        g.scalar_f32(&format!("{p}_act_code_hi"), hi_code as f32),
    );
    let lo_d = g.scalar_f64(&format!("{p}_act_code_lo64"), f64::from(lo_code));
    let (half, neg_half) = (
        g.scalar_f64(&format!("{p}_act_half64"), 0.5),
        g.scalar_f64(&format!("{p}_act_neg_half64"), -0.5),
    );
    let reduce = || {
        vec![
            ("axes", Attr::Ints(axes.to_vec())),
            ("keepdims", Attr::Int(1)),
        ]
    };
    let n = |s: &str| format!("{p}_act_{s}");

    let lo = g.node("ReduceMin", &n("row_min"), &[x], reduce());
    let lo = g.node("Min", &n("lo"), &[&lo, &zero], vec![]);
    let hi = g.node("ReduceMax", &n("row_max"), &[x], reduce());
    let hi = g.node("Max", &n("hi"), &[&hi, &zero], vec![]);
    let range = g.node("Sub", &n("range"), &[&hi, &lo], vec![]);
    let step = g.node("Div", &n("step"), &[&range, &levels], vec![]);
    let step = g.node("Max", &n("step_floor"), &[&step, &tiny], vec![]);
    let flat = g.node("Equal", &n("flat"), &[&range, &zero], vec![]);
    let scale = g.node("Where", &n("scale"), &[&flat, &one, &step], vec![]);

    let to = |t: DataType| vec![("to", Attr::Int(t as i64))];
    let lo64 = g.node("Cast", &n("lo64"), &[&lo], to(DataType::Double));
    let scale64 = g.node("Cast", &n("scale64"), &[&scale], to(DataType::Double));
    let t = g.node("Div", &n("lo_steps"), &[&lo64, &scale64], vec![]);
    let t = g.node("Sub", &n("zp_raw"), &[&lo_d, &t], vec![]);
    // round half to even in f64 from standard ops tract also runs on f64 (it has no f64
    // `Round`): round the f32 nearest, then step by one where the f64 remainder says so
    let t32 = g.node("Cast", &n("zp_raw32"), &[&t], to(DataType::Float));
    let r = g.node("Round", &n("zp_round32"), &[&t32], vec![]);
    let r = g.node("Cast", &n("zp_round64"), &[&r], to(DataType::Double));
    let d = g.node("Sub", &n("zp_rest"), &[&t, &r], vec![]);
    let up = g.node("Greater", &n("zp_up"), &[&d, &half], vec![]);
    let down = g.node("Less", &n("zp_down"), &[&d, &neg_half], vec![]);
    let up = g.node("Cast", &n("zp_up64"), &[&up], to(DataType::Double));
    let down = g.node("Cast", &n("zp_down64"), &[&down], to(DataType::Double));
    let step = g.node("Sub", &n("zp_step"), &[&up, &down], vec![]);
    let r = g.node("Add", &n("zp_round"), &[&r, &step], vec![]);
    let r = g.node("Cast", &n("zp_rounded"), &[&r], to(DataType::Float));
    let r = g.node("Max", &n("zp_low"), &[&r, &lo_f], vec![]);
    let zp = g.node("Min", &n("zp"), &[&r, &hi_f], vec![]);

    let inv = g.node("Div", &n("inv_scale"), &[&one, &scale], vec![]);
    let q = g.node("Mul", &n("scaled"), &[x, &inv], vec![]);
    let q = g.node("Round", &n("round"), &[&q], vec![]);
    let q = g.node("Add", &n("shift"), &[&q, &zp], vec![]);
    let q = g.node("Max", &n("clamp_low"), &[&q, &lo_f], vec![]);
    let q = g.node("Min", &n("clamp_high"), &[&q, &hi_f], vec![]);
    let q = g.node("Sub", &n("centred"), &[&q, &zp], vec![]);
    g.node("Mul", &n("dequantized"), &[&q, &scale], vec![])
}
