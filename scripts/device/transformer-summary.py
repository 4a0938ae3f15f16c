#!/usr/bin/env python3
"""Summarises the reports of scripts/device/transformer-check.sh and checks issue 25's acceptance:

* f32 on CUDA embeds like joulecut's f32 kernels on the CPU: min cosine >= 0.99999;
* bf16 and f16 on CUDA: mean cosine >= 0.9995 against f32 on CUDA, and >= 1.5x its sentences/s at
  batch 256 (the sweep, one run);
* int8 through Q8_0 on CUDA: mean cosine >= 0.998, every linear layer on `int8-q8_0` (no decoding),
  and fewer joules per 1,000 sentences than f32 on CUDA at batch 1 and 32 (same run);
* every GPU window (each model's, each sweep point's, the warm-up's) has an NVML domain with
  provenance `measured`, and no measured domain reads 0 J;
* the transformer bench ran on CUDA with its GPU variants `real`.

Usage: transformer-summary.py REPORTS_DIR > transformer-summary.json   (exit 1 when a check fails)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary_common import failed_steps, finish, gpu_measured, load  # noqa: E402

MIN_F32 = 0.99999
MIN_HALF = 0.9995
MIN_INT8 = 0.998
HALF_SPEEDUP = 1.5
LAYERS = 36


def zero_measured(e):
    return [
        d.get("name")
        for d in (e or {}).get("domains", [])
        if d.get("provenance") == "measured" and not d.get("joules")
    ]


def sweep(side):
    """{batch_size: point} of one side of an eval-embeddings report."""
    return {p["batch_size"]: p for p in (side or {}).get("sweep") or []}


def side_summary(s):
    s = s or {}
    return {
        k: s.get(k)
        for k in (
            "device",
            "engine",
            "precision",
            "kernels",
            "sentences_per_second",
            "batch1_sentences_per_second",
            "joules_per_1000_sentences",
            "energy_provenance",
        )
    } | {
        "sweep": [
            {
                k: p.get(k)
                for k in (
                    "batch_size",
                    "sentences_per_second",
                    "joules_per_1000_sentences",
                    "energy_provenance",
                )
            }
            for p in s.get("sweep") or []
        ]
    }


def main() -> int:
    d = Path(sys.argv[1])
    out = {"checks": {}, "failed_steps": [], "eval": {}}
    out["failed_steps"] = failed_steps(d)
    c = out["checks"]
    gpu_windows, zeros = [], []

    for name in ("f32-cuda-vs-cpu", "bf16-cuda", "f16-cuda", "int8-cuda"):
        r = load(d, name)
        out["eval"][name] = {
            "cosine": r.get("cosine"),
            "neighbour_agreement": r.get("neighbour_agreement"),
            "warmup_seconds": r.get("warmup_seconds"),
            "warmup_joules": (r.get("warmup_energy") or {}).get("joules"),
            "original": side_summary(r.get("original")),
            "compressed": side_summary(r.get("compressed")),
            "error": r.get("error"),
        }
        windows = [(f"{name}:warmup", r.get("warmup_energy"))]
        for s in ("original", "compressed"):
            side = r.get(s) or {}
            if str(side.get("device", "")).startswith("cuda"):
                windows.append((f"{name}:{s}", side.get("energy")))
                windows += [(f"{name}:{s}:b{b}", p.get("energy")) for b, p in sweep(side).items()]
        for label, e in windows:
            gpu_windows.append((label, gpu_measured(e)))
            zeros += [f"{label}:{z}" for z in zero_measured(e)]

    def cos(name, key):
        return ((load(d, name).get("cosine") or {}).get(key))

    f32 = load(d, "f32-cuda-vs-cpu")
    c["f32_cuda_vs_cpu_min_cosine"] = cos("f32-cuda-vs-cpu", "min")
    c[f"f32_cuda_equals_cpu_{MIN_F32}"] = (c["f32_cuda_vs_cpu_min_cosine"] or 0) >= MIN_F32
    c["f32_cuda_runs_dense_f32"] = (f32.get("compressed") or {}).get("kernels") == {
        "dense-f32": LAYERS
    }

    for p in ("bf16", "f16"):
        r = load(d, f"{p}-cuda")
        m = cos(f"{p}-cuda", "mean")
        c[f"{p}_mean_cosine"] = m
        c[f"{p}_cosine_at_least_{MIN_HALF}"] = (m or 0) >= MIN_HALF
        c[f"{p}_runs_as_{p}"] = (r.get("compressed") or {}).get("kernels") == {f"dense-{p}": LAYERS}
        a = sweep(r.get("compressed")).get(256, {}).get("sentences_per_second")
        b = sweep(r.get("original")).get(256, {}).get("sentences_per_second")
        ratio = a / b if a and b else None
        c[f"{p}_speedup_b256"] = ratio
        c[f"{p}_at_least_{HALF_SPEEDUP}x_f32_b256"] = (ratio or 0) >= HALF_SPEEDUP

    r = load(d, "int8-cuda")
    m = cos("int8-cuda", "mean")
    c["int8_mean_cosine"] = m
    c[f"int8_cosine_at_least_{MIN_INT8}"] = (m or 0) >= MIN_INT8
    c["int8_runs_q8_0_without_decoding"] = (r.get("compressed") or {}).get("kernels") == {
        "int8-q8_0": LAYERS
    }
    for b in (1, 32):
        q = sweep(r.get("compressed")).get(b, {}).get("joules_per_1000_sentences")
        f = sweep(r.get("original")).get(b, {}).get("joules_per_1000_sentences")
        c[f"int8_vs_f32_joules_b{b}"] = q / f if q and f else None
        c[f"int8_fewer_joules_than_f32_b{b}"] = bool(q and f and q < f)

    c["every_gpu_window_nvml_measured"] = bool(gpu_windows) and all(ok for _, ok in gpu_windows)
    if not c["every_gpu_window_nvml_measured"]:
        out["gpu_windows_not_measured"] = [l for l, ok in gpu_windows if not ok]
    c["no_zero_measured_domains"] = not zeros
    if zeros:
        out["zero_measured_domains"] = zeros

    if (d / "bench-skipped").exists():
        out["bench"] = "skipped (JOULECUT_CHECK_BENCH=0)"
    else:
        bench = load(d, "bench-transformer-cuda")
        rows = []
        for row in bench.get("rows", []) if isinstance(bench, dict) else []:
            res = row.get("result", row)
            rows.append(
                {
                    k: res.get(k)
                    for k in (
                        "variant",
                        "cosine_mean",
                        "sentences_per_second",
                        "joules_per_1000",
                        "provenance",
                        "kernels",
                        "saving",
                    )
                }
            )
        out["bench"] = {
            "rows": rows,
            "recommendation": bench.get("recommendation") if isinstance(bench, dict) else None,
            "error": bench.get("error") if isinstance(bench, dict) else None,
        }
        c["bench_ran"] = len(rows) > 1
        c["bench_gpu_variants_real"] = len(rows) > 1 and all(
            r.get("saving") == "real" for r in rows if r.get("variant") != "baseline"
        )

    return finish(out)


if __name__ == "__main__":
    sys.exit(main())
