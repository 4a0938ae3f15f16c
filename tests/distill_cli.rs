//! End-to-end: `joulecut distill` on real files; bad input (teacher/student width mismatch, T <= 0,
//! alpha outside [0, 1], bad student ARCH, stale logit cache) exits 2 with one error line and a hint.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Writes a small PyTorch-style MLP checkpoint (`fc1`, `fc2`; no joulecut metadata) with
/// deterministic weights: `widths[0]` inputs, `widths[last]` outputs.
fn teacher_file(name: &str, widths: &[usize], salt: f32) -> PathBuf {
    let p = scratch().join(name);
    ForeignMlp::new(widths, Values::Golden { salt }).write(&p);
    p
}

fn distill(teacher: &Path, extra: &[&str]) -> std::process::Output {
    joulecut()
        .args(["distill", "--teacher"])
        .arg(teacher)
        .args(["-o"])
        .arg(scratch().join("student.safetensors"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn teacher_output_width_must_match_student() {
    let t = teacher_file("t5.safetensors", &[784, 16, 5], 0.1);
    let out = distill(&t, &["--student", "mlp:784-32-10"]);
    assert_bad_input(&out, "output width 5");
    let out = distill(&t, &["--student", "lenet-300-100"]);
    assert_bad_input(&out, "output width");
    // And the input width.
    let t = teacher_file("t100.safetensors", &[100, 16, 10], 0.2);
    let out = distill(&t, &["--student", "mlp:784-32-10"]);
    assert_bad_input(&out, "input width 100");
    assert!(!scratch().join("student.safetensors").exists());
}

#[test]
fn temperature_must_be_positive() {
    let t = teacher_file("t10a.safetensors", &[784, 16, 10], 0.3);
    for v in ["0", "-1", "-0.5", "nan"] {
        let out = distill(&t, &["--student", "mlp:784-32-10", "--temperature", v]);
        assert_bad_input(&out, "temperature must be > 0");
    }
}

#[test]
fn alpha_must_be_in_unit_interval() {
    let t = teacher_file("t10b.safetensors", &[784, 16, 10], 0.4);
    for v in ["1.5", "-0.1", "2"] {
        let out = distill(&t, &["--student", "mlp:784-32-10", "--alpha", v]);
        assert_bad_input(&out, "alpha must be in [0, 1]");
    }
}

#[test]
fn bad_student_arch_and_flags() {
    let t = teacher_file("t10c.safetensors", &[784, 16, 10], 0.5);
    for arch in ["mlp:784-x-10", "resnet50", "mlp:784"] {
        let out = distill(&t, &["--student", arch]);
        assert_bad_input(&out, arch);
    }
    let out = distill(&t, &["--student", "mlp:784-32-10", "--hint", "0:0"]);
    assert_bad_input(&out, "--hint needs the live teacher");
    let out = distill(&t, &["--student", "mlp:784-32-10", "--epochs", "0"]);
    assert_bad_input(&out, "--epochs");
    let out = distill(
        &scratch().join("missing.safetensors"),
        &["--student", "mlp:784-32-10"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn distills_on_real_data_with_cached_logits_and_reports_energy() {
    let t = teacher_file("t10d.safetensors", &[784, 24, 10], 0.6);
    let logits = scratch().join("logits.safetensors");
    let o = scratch().join("distilled.safetensors");
    let run = |teacher: &Path| {
        joulecut()
            .args(["distill", "--teacher"])
            .arg(teacher)
            .args([
                "--student",
                "mlp:784-8-10",
                "--epochs",
                "1",
                "--json",
                "--teacher-logits",
            ])
            .arg(&logits)
            .arg("-o")
            .arg(&o)
            .output()
            .unwrap()
    };
    let out = run(&t);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["accuracy"].as_f64().unwrap() > 0.3, "{v}");
    assert!(v["teacher_accuracy"].as_f64().is_some());
    assert_eq!(v["epochs"], 1);
    assert!(v["samples_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["teacher_logits"]["source"], "computed-and-saved");
    for e in [&v["energy"], &v["teacher_logits_energy"]] {
        assert!(e["joules"].as_f64().unwrap() > 0.0, "{e}");
        assert!(
            e["provenance"].is_string() && e["domains"].is_array(),
            "{e}"
        );
    }
    assert!(logits.exists());
    // The student checkpoint evaluates to the reported accuracy.
    let ev = json(&["eval", o.to_str().unwrap(), "--json"]);
    assert_eq!(ev["accuracy"], v["accuracy"]);

    // Second run reuses the cache; a different teacher refuses it.
    let out = run(&t);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v2["teacher_logits"]["source"], "loaded");
    assert_eq!(
        v2["accuracy"], v["accuracy"],
        "same seed, same logits: same student"
    );
    let other = teacher_file("t10e.safetensors", &[784, 24, 10], 0.7);
    assert_bad_input(&run(&other), "different teacher");
}

/// The `logits` tensor of a teacher-logit cache file, as f32s.
fn cached_logits(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("logits").unwrap();
    let vals = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (v.shape().to_vec(), vals)
}

/// `joulecut distill` with one `--teacher` per file, 1 epoch, caching the logits in `logits`.
fn distill_from(teachers: &[&Path], logits: &Path, out: &str) -> serde_json::Value {
    let mut c = joulecut();
    c.arg("distill");
    for t in teachers {
        c.arg("--teacher").arg(t);
    }
    let o = c
        .args(["--student", "mlp:784-8-10", "--epochs", "1", "--json"])
        .arg("--teacher-logits")
        .arg(logits)
        .arg("-o")
        .arg(scratch().join(out))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn several_teachers_teach_the_mean_of_their_logits() {
    let a = teacher_file("ens-a.safetensors", &[784, 24, 10], 0.11);
    let b = teacher_file("ens-b.safetensors", &[784, 32, 10], 0.37);
    let (la, lb, lab) = (
        scratch().join("ens-logits-a.safetensors"),
        scratch().join("ens-logits-b.safetensors"),
        scratch().join("ens-logits-ab.safetensors"),
    );
    let va = distill_from(&[&a], &la, "ens-sa.safetensors");
    distill_from(&[&b], &lb, "ens-sb.safetensors");
    let v = distill_from(&[&a, &b], &lab, "ens-sab.safetensors");
    let ((sa, xa), (sb, xb), (sab, xab)) =
        (cached_logits(&la), cached_logits(&lb), cached_logits(&lab));
    assert_eq!(sa, vec![60_000, 10]);
    assert_eq!((&sb, &sab), (&sa, &sa));
    assert_ne!(xa, xb, "two different teachers");
    for (i, ((p, q), m)) in xa.iter().zip(&xb).zip(&xab).enumerate() {
        let want = (p + q) / 2.0;
        assert!(
            (m - want).abs() <= 1e-6 * want.abs().max(1.0),
            "logit {i}: {m} is not the mean of {p} and {q}"
        );
    }
    // The report names both teachers; the teacher accuracy is the ensemble's.
    let ts = v["teachers"].as_array().unwrap();
    assert_eq!(ts.len(), 2, "{v}");
    assert_eq!(ts[0]["accuracy"], va["teacher_accuracy"]);
    assert!(ts[1]["accuracy"].as_f64().is_some());
    assert!(v["teacher_accuracy"].as_f64().is_some());
    assert!(v["teacher"].is_null() && va["teacher"].is_string());
    assert_eq!(v["teacher_logits"]["source"], "computed-and-saved");
    // The saved ensemble cache is reused for the same teachers and refused for one of them alone.
    let v2 = distill_from(&[&a, &b], &lab, "ens-sab2.safetensors");
    assert_eq!(v2["teacher_logits"]["source"], "loaded");
    assert_eq!(v2["accuracy"], v["accuracy"]);
    let out = joulecut()
        .args(["distill", "--teacher"])
        .arg(&a)
        .args(["--student", "mlp:784-8-10", "--teacher-logits"])
        .arg(&lab)
        .arg("-o")
        .arg(scratch().join("ens-sx.safetensors"))
        .output()
        .unwrap();
    assert_bad_input(&out, "different teacher");
}

#[test]
fn several_teachers_must_share_the_output_width() {
    let t10 = teacher_file("ens-t10.safetensors", &[784, 16, 10], 0.21);
    let t5 = teacher_file("ens-t5.safetensors", &[784, 16, 5], 0.23);
    let run = |ts: &[&Path], extra: &[&str]| {
        let mut c = joulecut();
        c.arg("distill");
        for t in ts {
            c.arg("--teacher").arg(t);
        }
        c.args(["--student", "mlp:784-32-10"])
            .args(extra)
            .arg("-o")
            .arg(scratch().join("ens-bad.safetensors"))
            .output()
            .unwrap()
    };
    assert_bad_input(&run(&[&t10, &t5], &[]), "output width 5");
    assert_bad_input(&run(&[&t5, &t10], &[]), "output width 5");
    assert_bad_input(
        &run(&[&t10, &t10], &["--live-teacher"]),
        "several --teacher files need cached logits",
    );
    assert!(!scratch().join("ens-bad.safetensors").exists());
}
