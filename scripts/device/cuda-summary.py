#!/usr/bin/env python3
"""Summarises the reports of scripts/device/cuda-check.sh and checks issue 10's acceptance:

* CUDA accuracy matches the CPU path within 0.3 points: the same checkpoint evaluated on both
  devices (f32, f16, int8), and the model trained on each device with the same seed;
* the GPU's joules are NVML-measured (domain provenance `measured`) in training and inference.

Usage: cuda-summary.py REPORTS_DIR > summary.json   (exit 1 when a check fails)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary_common import failed_steps, finish, gpu_measured, load  # noqa: E402

TOL_PT = 0.3


def energy(e):
    """Total, provenance and per-domain joules of a Measurement."""
    if not isinstance(e, dict):
        return None
    return {
        "joules": e.get("joules"),
        "provenance": e.get("provenance"),
        "wall_seconds": e.get("wall_seconds"),
        "flags": e.get("flags"),
        "domains": [
            {k: d.get(k) for k in ("name", "joules", "provenance", "source", "flags")}
            for d in e.get("domains", [])
        ],
    }


def pt(a, b):
    if a is None or b is None:
        return None
    return round(100.0 * (a - b), 4)


def main() -> int:
    d = Path(sys.argv[1])
    out = {"checks": {}, "failed_steps": []}
    out["failed_steps"] = failed_steps(d)

    train = {dev: load(d, f"train-{dev}") for dev in ("cuda", "cpu")}
    out["train"] = {
        dev: {
            "accuracy": t.get("accuracy"),
            "train_seconds": t.get("train_seconds"),
            "samples_per_second": t.get("samples_per_second"),
            "warmup_seconds": t.get("warmup_seconds"),
            "warmup_energy": energy(t.get("warmup_energy")),
            "energy": energy(t.get("energy")),
            "error": t.get("error"),
        }
        for dev, t in train.items()
    }
    out["eval"] = {}
    for v in ("f32", "f16", "int8"):
        for dev in ("cuda", "cpu"):
            e = load(d, f"eval-{v}-{dev}")
            out["eval"][f"{v}-{dev}"] = {
                "accuracy": e.get("accuracy"),
                "samples_per_second": e.get("samples_per_second"),
                "joules_per_10k": e.get("joules_per_10k"),
                "energy_passes": e.get("energy_passes"),
                "layers": e.get("layers"),
                "fallbacks": e.get("fallbacks"),
                "energy": energy(e.get("energy")),
                "error": e.get("error"),
            }

    c = out["checks"]
    for v in ("f32", "f16", "int8"):
        a, b = out["eval"][f"{v}-cuda"]["accuracy"], out["eval"][f"{v}-cpu"]["accuracy"]
        diff = pt(a, b)
        c[f"eval_{v}_cuda_vs_cpu_pt"] = diff
        c[f"eval_{v}_within_{TOL_PT}pt"] = diff is not None and abs(diff) <= TOL_PT
    diff = pt(train["cuda"].get("accuracy"), train["cpu"].get("accuracy"))
    c["train_cuda_vs_cpu_pt"] = diff
    c[f"train_within_{TOL_PT}pt"] = diff is not None and abs(diff) <= TOL_PT
    c["train_gpu_joules_measured"] = gpu_measured(train["cuda"].get("energy"))
    c["eval_gpu_joules_measured"] = all(
        gpu_measured(load(d, f"eval-{v}-cuda").get("energy")) for v in ("f32", "f16", "int8")
    )

    # Honest energy: no measured domain may report 0 J (a dead counter, or a window shorter than
    # the counter's update period, shows up exactly like that).
    zero = []
    for name in ["train-cuda", "train-cpu"] + [f"eval-{v}-{dev}" for v in ("f32", "f16", "int8") for dev in ("cuda", "cpu")]:
        e = load(d, name).get("energy")
        for dom in (e or {}).get("domains", []):
            if dom.get("provenance") == "measured" and not dom.get("joules"):
                zero.append(f"{name}:{dom.get('name')}")
    c["no_zero_measured_domains"] = not zero
    if zero:
        out["zero_measured_domains"] = zero

    if (d / "bench-skipped").exists():
        out["bench"] = "skipped (JOULECUT_CHECK_BENCH=0)"
    else:
        bench = load(d, "bench-cuda")
        rows = []
        for r in bench.get("rows", []) if isinstance(bench, dict) else []:
            run = r.get("run", r)
            rows.append(
                {
                    "variant": run.get("variant"),
                    "accuracy": run.get("accuracy"),
                    "accuracy_delta_pt": r.get("accuracy_delta_pt"),
                    "inference_joules_per_10k": run.get("inference_joules_per_10k"),
                    "provenance": run.get("provenance"),
                    "saving": run.get("saving"),
                }
            )
        out["bench"] = {
            "rows": rows,
            "host": bench.get("host") if isinstance(bench, dict) else None,
            "error": bench.get("error") if isinstance(bench, dict) else None,
        }
        c["bench_ran"] = bool(rows)
        c["bench_no_zero_joules"] = bool(rows) and all(
            (r.get("inference_joules_per_10k") or 0) > 0 for r in rows
        )

    return finish(out)


if __name__ == "__main__":
    sys.exit(main())
