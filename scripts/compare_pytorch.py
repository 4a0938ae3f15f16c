#!/usr/bin/env python3
"""Side-by-side speed of PyTorch, ONNX Runtime and joulecut on the same models, data and threads.

Issues 9 and 5: LeNet-300-100 (784-300-100-10) and LeNet-5 on Fashion-MNIST, Adam lr 1e-3 with a
constant learning rate, batch 128, cross-entropy; f32 inference at batch 256 and batch 1; ONNX
Runtime fp32 and dynamic int8 (per-tensor, U8S8 MatMulInteger / ConvInteger) against joulecut's f32
and per-channel int8 (`joulecut quantize --dtype int8 --granularity channel`). Every arm runs with
the same thread count (torch.set_num_threads, ORT intra_op_num_threads, RAYON_NUM_THREADS), arms
run interleaved (A B A B) for --repeats rounds, and the report holds per-round values and medians.

Run it through scripts/compare.sh (venv + release build); docs/COMPARE.md explains the columns.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from joulecut_cli import JoulecutCli

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
REPO = Path(__file__).resolve().parent.parent
ARCH = {"mlp": "lenet-300-100", "lenet5": "lenet5"}
LABEL = {"mlp": "MLP 784-300-100-10", "lenet5": "LeNet-5"}
ARMS = ["pytorch", "ort_fp32", "ort_int8", "joulecut_f32", "joulecut_int8"]
ARM_TITLE = {
    "pytorch": "PyTorch f32",
    "ort_fp32": "ORT fp32",
    "ort_int8": "ORT int8",
    "joulecut_f32": "joulecut f32",
    "joulecut_int8": "joulecut int8",
}


class BadInput(Exception):
    """A problem with the user's input (exit code 2)."""


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Data: IDX files (gzip or raw), scaled to [0, 1] and standardised with the training statistics,
# exactly as joulecut's harness does.


def read_idx(path: Path):
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise BadInput(f"{path}: not an unsigned-byte IDX file (hint: expected magic 0x0000080N)")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != count:
        raise BadInput(f"{path}: header says {dims} ({count} bytes) but holds {data.size}")
    return data.reshape(dims)


def find_idx(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        p = data_dir / name
        if p.is_file():
            return p
    raise BadInput(
        f"{data_dir}/{stem}[.gz] not found (hint: --data DIR with the four Fashion-MNIST IDX files)"
    )


def load_fashion_mnist(data_dir: Path):
    import numpy as np

    split = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        imgs = read_idx(find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if imgs.ndim != 3 or labels.ndim != 1 or imgs.shape[0] != labels.shape[0]:
            raise BadInput(f"{data_dir}: {prefix} images {imgs.shape} and labels {labels.shape} disagree")
        split[part] = (imgs.reshape(imgs.shape[0], -1).astype(np.float32) / 255.0, labels.astype(np.int64))
    x_train = split["train"][0]
    mean = float(x_train.astype(np.float64).mean())
    std = float(x_train.astype(np.float64).std())
    norm = lambda x: ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)
    return {
        "x_train": norm(x_train),
        "y_train": split["train"][1],
        "x_test": norm(split["test"][0]),
        "y_test": split["test"][1],
        "mean": mean,
        "std": std,
    }


# ---------------------------------------------------------------------------------------------
# PyTorch models, named like joulecut's parameters (fc1.weight [out, in], conv1.weight, ...), so a
# state dict is a valid joulecut `eval --model` input.


def torch_model(kind: str):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 300)
            self.fc2 = nn.Linear(300, 100)
            self.fc3 = nn.Linear(100, 10)

        def forward(self, x):
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(400, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = x.view(-1, 1, 28, 28)
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return {"mlp": Mlp, "lenet5": LeNet5}[kind]()


def torch_train(kind: str, data, args):
    """Adam at a constant lr, in-memory batches gathered from a per-epoch permutation (what
    joulecut's harness does); samples/s over all steps after the first --warmup-steps."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    model = torch_model(kind)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    n = x.shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    step, warm_samples, all_samples = 0, 0, 0
    t_all = time.perf_counter()
    t_warm = None
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            all_samples += len(idx)
            if step == args.warmup_steps:
                t_warm = time.perf_counter()
            elif step > args.warmup_steps:
                warm_samples += len(idx)
    t_end = time.perf_counter()
    if not torch.isfinite(loss):
        raise RuntimeError(f"PyTorch {kind} training diverged (loss {loss.item()})")
    sps_all = all_samples / (t_end - t_all)
    sps = warm_samples / (t_end - t_warm) if t_warm is not None and warm_samples else sps_all
    model.eval()
    return model, {"samples_per_second": sps, "samples_per_second_all_steps": sps_all, "steps": step}


def torch_state(model) -> dict:
    return {k: v.detach().cpu().numpy().astype("float32") for k, v in model.state_dict().items()}


def write_safetensors(path: Path, tensors: dict) -> None:
    """Minimal safetensors writer (F32 only): 8-byte little-endian header length, JSON header,
    raw little-endian data."""
    import numpy as np

    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# ONNX: the graph is built with onnx.helper from the trained weights (MatMul + Add rather than
# Gemm, so dynamic quantisation turns every linear layer into MatMulInteger, and no dependency on
# which exporter a torch version ships).


def build_onnx(kind: str, state: dict, path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    h = "x"
    if kind == "lenet5":
        nodes.append(helper.make_node("Reshape", [h, init("img_shape", np.array([-1, 1, 28, 28], np.int64))], ["img"]))
        h = "img"
        for i, pad in ((1, 2), (2, 0)):
            w = init(f"conv{i}.weight", state[f"conv{i}.weight"])
            b = init(f"conv{i}.bias", state[f"conv{i}.bias"])
            nodes.append(
                helper.make_node("Conv", [h, w, b], [f"c{i}"], kernel_shape=[5, 5], pads=[pad] * 4, strides=[1, 1])
            )
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            nodes.append(helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            h = f"p{i}"
        nodes.append(helper.make_node("Flatten", [h], ["flat"], axis=1))
        h = "flat"
    layers = sorted(k[: -len(".weight")] for k in state if k.startswith("fc") and k.endswith(".weight"))
    for j, name in enumerate(layers):
        w = init(f"{name}.weight_t", state[f"{name}.weight"].T)  # [in, out] for MatMul
        b = init(f"{name}.bias", state[f"{name}.bias"])
        nodes.append(helper.make_node("MatMul", [h, w], [f"{name}_mm"]))
        last = j == len(layers) - 1
        out = "logits" if last else f"{name}_add"
        nodes.append(helper.make_node("Add", [f"{name}_mm", b], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"]))
            h = f"{name}_relu"
    graph = helper.make_graph(
        nodes,
        f"joulecut-compare-{kind}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    opset = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opset, producer_name="joulecut compare_pytorch.py")
    model.ir_version = helper.find_min_ir_version_for(opset)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_onnx(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Dynamic int8 as users get it: per-tensor weights (QInt8), activations quantised at run time
    # to QUInt8 (U8S8 MatMulInteger / ConvInteger).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quiet its "consider pre-processing" advice (shape inference only)
    try:
        quantize_dynamic(str(src), str(dst), per_channel=False, reduce_range=False, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def ort_session(path: Path, threads: int, spin: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_op_types(path: Path) -> list[str]:
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


# ---------------------------------------------------------------------------------------------
# Inference timing, the same procedure as joulecut's harness (crates/joulecut-harness/src/eval.rs):
# one pass over the test set at the batch size (accuracy + samples/s, no warm-up), then the median
# of single forward calls at batch 1 and at the batch size (iters/10 + 1 warm-up calls, cycling
# through up to 64 contiguous batches of the test set).


def time_calls(fwd, inputs, iters: int) -> dict:
    warm = iters // 10 + 1
    times = []
    for i in range(warm + iters):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fwd(x)
        dt = (time.perf_counter() - t0) * 1e6
        if i >= warm:
            times.append(dt)
    times.sort()
    pct = lambda p: times[round((len(times) - 1) * p)]
    return {"iterations": iters, "median_us": pct(0.5), "p10_us": pct(0.1), "p90_us": pct(0.9)}


def infer_metrics(fwd, to_input, argmax, data, args) -> dict:
    import numpy as np

    x, y = data["x_test"], data["y_test"]
    n, bs = x.shape[0], args.eval_batch
    correct = 0
    t0 = time.perf_counter()
    for s in range(0, n, bs):
        correct += int((argmax(fwd(to_input(x[s : s + bs]))) == y[s : s + bs]).sum())
    pass_s = time.perf_counter() - t0
    per_batch = lambda b: [to_input(np.ascontiguousarray(x[i * b : (i + 1) * b])) for i in range(min(64, n // b))]
    lat1 = time_calls(fwd, per_batch(1), args.latency_iters)
    latb = time_calls(fwd, per_batch(bs), max(args.latency_iters // 10, 5))
    return metrics(correct / n, n / pass_s, lat1["median_us"], latb["median_us"], bs, {"batch_1": lat1, "batch": latb})


def metrics(acc, pass_sps, b1_us, bb_us, bs, latency) -> dict:
    return {
        "accuracy": acc,
        "pass_samples_per_second": pass_sps,
        "b1_median_us": b1_us,
        "batch_median_us": bb_us,
        "batch_samples_per_second": bs * 1e6 / bb_us,
        "latency": latency,
    }


def torch_infer(model, data, args) -> dict:
    import torch

    with torch.inference_mode():
        return infer_metrics(
            model, torch.from_numpy, lambda logits: logits.argmax(1).numpy(), data, args
        )


def ort_infer(sess, data, args) -> dict:
    inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return infer_metrics(
        lambda x: sess.run([out], {inp: x})[0], lambda a: a, lambda logits: logits.argmax(1), data, args
    )


# ---------------------------------------------------------------------------------------------
# joulecut through its CLI.


class Joulecut(JoulecutCli):
    """joulecut's CLI (scripts/joulecut_cli.py) with the Fashion-MNIST steps."""

    def __init__(self, binary: Path, threads: int, data_dir: Path):
        super().__init__(binary, threads)
        self.data_dir = data_dir

    def train(self, kind: str, out: Path, args) -> dict:
        j = self.run(
            "train", "--model", ARCH[kind], "--epochs", args.epochs, "--batch-size", args.batch_size,
            "--lr", args.lr, "--lr-schedule", "constant", "--optimizer", "adam", "--seed", args.seed,
            "--data", self.data_dir, "-o", out, "--json", "-q",
        )  # fmt: skip
        return {"samples_per_second": j["samples_per_second"], "accuracy": j["accuracy"], "raw": j}

    def quantize(self, src: Path, dst: Path) -> dict:
        return self.run("quantize", src, "-o", dst, "--dtype", "int8", "--granularity", "channel", "--json")

    def eval(self, path: Path, args, arch: str | None = None, latency_iters: int | None = None) -> dict:
        extra = ["--model", arch] if arch else []
        j = self.run(
            "eval", path, *extra, "--data", self.data_dir, "--batch-size", args.eval_batch,
            "--latency-iters", latency_iters or args.latency_iters, "--json",
        )  # fmt: skip
        lat = j["latency"]
        m = metrics(
            j["accuracy"], j["samples_per_second"], lat["batch_1"]["median_us"], lat["batch"]["median_us"],
            lat["batch"]["batch_size"], lat,
        )  # fmt: skip
        m["layers"] = j.get("layers")
        m["saving"] = j.get("saving")
        m["energy"] = j.get("energy")
        return m


# ---------------------------------------------------------------------------------------------
# Host description.


def host_info(jc: Joulecut) -> dict:
    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "onnx", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 — recorded, not fatal
            versions[mod] = f"unavailable ({e})"
    versions["joulecut"] = jc.version()
    try:
        blob = jc.binary.read_bytes()
        versions["joulecut_binary"] = {
            "path": str(jc.binary),
            "sha256": hashlib.sha256(blob).hexdigest()[:16],
            "modified": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(jc.binary.stat().st_mtime)),
        }
    except OSError:
        pass

    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=REPO).stdout.strip()
        except OSError:
            return ""

    versions["rustc"] = cmd("rustc", "--version")
    commit = cmd("git", "rev-parse", "--short", "HEAD")
    if commit and cmd("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (uncommitted changes in the tree)"
    versions["git"] = commit
    info = {
        "cpu": cpu,
        "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": platform.release(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins, then sleeps)"),
        "versions": versions,
    }
    try:
        import torch

        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        pass
    return info


# ---------------------------------------------------------------------------------------------
# Report.

# (key, description, numerator arm, denominator arm, metric, model, target, sense) — sense "ge":
# the ratio should be >= target; "le": <= target.
RATIOS = [
    ("mlp_train", "MLP train samples/s, joulecut / PyTorch", "joulecut_f32", "pytorch", "train", "mlp", 1.2, "ge"),
    ("lenet5_train", "LeNet-5 train samples/s, joulecut / PyTorch", "joulecut_f32", "pytorch", "train", "lenet5", 1.0, "ge"),
    ("mlp_b256_f32_vs_ort", "MLP b256 samples/s, joulecut f32 / ORT fp32", "joulecut_f32", "ort_fp32", "batch_samples_per_second", "mlp", 1.0, "ge"),
    ("mlp_b1_latency_vs_ort", "MLP b1 latency, joulecut f32 / ORT fp32", "joulecut_f32", "ort_fp32", "b1_median_us", "mlp", 1.0, "le"),
    ("mlp_int8_b256_vs_ort_int8", "MLP b256 samples/s, joulecut int8 / ORT int8", "joulecut_int8", "ort_int8", "batch_samples_per_second", "mlp", 1.2, "ge"),
    ("mlp_int8_vs_f32_b256", "MLP b256 samples/s, joulecut int8 / joulecut f32", "joulecut_int8", "joulecut_f32", "batch_samples_per_second", "mlp", 2.0, "ge"),
    ("mlp_int8_vs_f32_b1_latency", "MLP b1 latency, joulecut int8 / joulecut f32", "joulecut_int8", "joulecut_f32", "b1_median_us", "mlp", 1.0, "le"),
    ("lenet5_b256_f32_vs_pytorch", "LeNet-5 b256 samples/s, joulecut f32 / PyTorch", "joulecut_f32", "pytorch", "batch_samples_per_second", "lenet5", None, "ge"),
]  # fmt: skip

ROWS = [  # (metric key, row label, format)
    ("train", "train samples/s (b{bs})", "{:,.0f}"),
    ("train_accuracy", "test accuracy after training", "{:.4f}"),
    ("accuracy", "test accuracy (inference arm)", "{:.4f}"),
    ("batch_samples_per_second", "b{eb} samples/s (median call)", "{:,.0f}"),
    ("pass_samples_per_second", "b{eb} samples/s (one test pass)", "{:,.0f}"),
    ("b1_median_us", "b1 median latency µs", "{:.1f}"),
]


def median_or_none(xs):
    # Only numeric metrics have a median; per-round details (dicts, labels) stay in "rounds".
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return statistics.median(xs) if xs else None


def summarise(rounds: list, models: list) -> dict:
    """rounds[r][model][arm][metric] -> medians[model][arm][metric] (and per-round lists)."""
    out = {}
    for m in models:
        out[m] = {}
        for arm in ARMS:
            keys = sorted({k for r in rounds for k in r.get(m, {}).get(arm, {})})
            out[m][arm] = {k: median_or_none([r[m][arm].get(k) for r in rounds if arm in r.get(m, {})]) for k in keys}
    return out


def ratios(rounds: list, models: list) -> dict:
    res = {}
    for key, desc, num, den, metric, model, target, sense in RATIOS:
        if model not in models:
            continue
        per_round = []
        for r in rounds:
            a = r.get(model, {}).get(num, {}).get(metric)
            b = r.get(model, {}).get(den, {}).get(metric)
            if a is not None and b:
                per_round.append(a / b)
        value = statistics.median(per_round) if per_round else None
        met = None
        if value is not None and target is not None:
            met = value >= target if sense == "ge" else value <= target
        res[key] = {
            "description": desc,
            "value": value,
            "per_round": per_round,
            "target": target,
            "sense": ">=" if sense == "ge" else "<=",
            "met": met,
        }
    return res


def markdown(report: dict) -> str:
    a = report["settings"]
    lines = [
        f"## PyTorch / ONNX Runtime / joulecut side by side — {a['threads']} threads, "
        f"{a['epochs']} epoch(s), {a['repeats']} round(s), medians"
        + (" — --no-spin: PyTorch with OMP_WAIT_POLICY=PASSIVE, ORT without spinning (not their defaults)" if a["no_spin"] else ""),
        "",
    ]
    for m in a["models"]:
        med = report["medians"][m]
        lines += [f"### {LABEL[m]}", "", "| metric | " + " | ".join(ARM_TITLE[x] for x in ARMS) + " |"]
        lines.append("|---|" + "---:|" * len(ARMS))
        for key, label, fmt in ROWS:
            cells = [med[arm].get(key) for arm in ARMS]
            if all(c is None for c in cells):
                continue
            label = label.format(bs=a["batch_size"], eb=a["eval_batch"])
            lines.append(
                f"| {label} | " + " | ".join("–" if c is None else fmt.format(c) for c in cells) + " |"
            )
        lines.append("")
    lines += ["### Ratios (median over rounds of the per-round ratio)", "", "| ratio | value | target | met |", "|---|---:|---:|:-:|"]
    for r in report["ratios"].values():
        v = "–" if r["value"] is None else f"{r['value']:.2f}x"
        t = "–" if r["target"] is None else f"{r['sense']} {r['target']}"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(f"| {r['description']} | {v} | {t} | {met} |")
    h = report["host"]
    flags = ", ".join(f for f, on in h["flags"].items() if on) or "none of avx2/avx512/vnni"
    v = h["versions"]
    bin_ = v.get("joulecut_binary", {})
    lines += [
        "",
        f"Host: {h['cpu']} ({flags}), {h['usable_cpus']} usable CPUs; load average before "
        f"{report['load']['before']}, after {report['load']['after']}.",
        f"Versions: torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, onnx {v.get('onnx')}, "
        f"numpy {v.get('numpy')}, python {v.get('python')}, {v.get('rustc')}; {v.get('joulecut')} "
        f"(binary sha256 {bin_.get('sha256', '?')}, modified {bin_.get('modified', '?')}; "
        f"source tree {v.get('git') or 'unknown'}).",
    ]
    if report["warnings"]:
        lines += [""] + [f"**Warning:** {w}" for w in report["warnings"]]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Driver.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("JOULECUT_DATA", DEFAULT_DATA)), help="Fashion-MNIST IDX directory")
    p.add_argument("--threads", type=int, default=2, help="threads for every arm")
    p.add_argument("--epochs", type=int, default=1, help="training epochs per arm (0: skip training, compare inference on PyTorch's initial weights)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the report takes medians")
    p.add_argument("--models", default="mlp,lenet5", help="comma-separated: mlp, lenet5")
    p.add_argument("--batch-size", type=int, default=128, help="training batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-steps", type=int, default=20, help="PyTorch training steps excluded from samples/s")
    p.add_argument("--eval-batch", type=int, default=256, help="inference batch for throughput")
    p.add_argument("--latency-iters", type=int, default=1000, help="timed batch-1 calls (batch calls: a tenth, at least 5)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of idle between arms (lets spinning OpenMP/ORT threads sleep)")
    p.add_argument(
        "--no-spin",
        action="store_true",
        help="idle worker threads sleep instead of spin-waiting: OMP_WAIT_POLICY=PASSIVE for PyTorch, "
        "session.intra_op.allow_spinning=0 for ORT (neither is their default; a diagnostic for loaded machines)",
    )
    p.add_argument("--load-threshold", type=float, default=1.2, help="warn when the 1-minute load average is above this")
    p.add_argument("--joulecut", type=Path, default=Path(os.environ.get("JOULECUT", REPO / "target/release/joulecut")), help="joulecut binary")
    p.add_argument("--workdir", type=Path, help="keep checkpoints and ONNX files here (default: a temporary directory)")
    p.add_argument("--out", type=Path, help="write the JSON report here (atomically)")
    p.add_argument("--markdown", type=Path, help="also write the markdown table here")
    a = p.parse_args(argv)
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in a.models:
        if m not in ARCH:
            p.error(f"unknown model `{m}` in --models (use mlp, lenet5)")
    for name in ("threads", "repeats", "batch_size", "eval_batch", "latency_iters"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.epochs < 0 or a.warmup_steps < 0 or a.settle < 0:
        p.error("--epochs, --warmup-steps and --settle must be >= 0")
    if not a.models:
        p.error("--models is empty")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    # Thread pools are sized at import: set them before torch/onnxruntime load.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.no_spin:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if not args.data.is_dir():
        raise BadInput(f"{args.data}: no such directory (hint: --data DIR with the Fashion-MNIST IDX files)")
    if not (args.joulecut.is_file() and os.access(args.joulecut, os.X_OK)):
        raise BadInput(f"{args.joulecut}: no joulecut binary (hint: cargo build --release, or --joulecut PATH)")

    warnings = []
    before = loadavg()
    if before and before[0] > args.load_threshold:
        msg = (
            f"load average {before[0]} > {args.load_threshold} before starting: another process is busy. "
            "PyTorch's OpenMP threads spin and its throughput collapses when a core is taken "
            "(issue 9 saw 25x), which flatters joulecut. Re-run on a quiet machine before quoting."
        )
        warnings.append(msg)
        bar = "!" * 100
        print(f"\n{bar}\n!! WARNING: {msg}\n{bar}\n", file=sys.stderr, flush=True)

    import numpy as np
    import torch
    import onnxruntime  # noqa: F401 — fail early if missing

    torch.set_num_threads(args.threads)
    jc = Joulecut(args.joulecut, args.threads, args.data)
    host = host_info(jc)
    log(f"host: {host['cpu']}, threads {args.threads}, load {before}")
    data = load_fashion_mnist(args.data)
    log(f"data: {len(data['y_train'])} train / {len(data['y_test'])} test, mean {data['mean']:.6f} std {data['std']:.6f}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="joulecut-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = [{m: {} for m in args.models} for _ in range(args.repeats)]
    arm_load = []

    def settle():
        if args.settle:
            time.sleep(args.settle)

    def note(r, m, arm, phase):
        arm_load.append({"round": r + 1, "model": m, "arm": arm, "phase": phase, "load": loadavg()})

    try:
        # Phase 1: training, PyTorch and joulecut alternating per model and round.
        torch_models, jc_files, checks = {}, {}, {}
        for r in range(args.repeats):
            for m in args.models if args.epochs else []:
                note(r, m, "pytorch", "train")
                model, t = torch_train(m, data, args)
                with torch.inference_mode():
                    logits = model(torch.from_numpy(data["x_test"]))
                acc = float((logits.argmax(1).numpy() == data["y_test"]).mean())
                rounds[r][m]["pytorch"] = {"train": t["samples_per_second"], "train_accuracy": acc, "train_detail": t}
                log(f"round {r + 1} {m} PyTorch train: {t['samples_per_second']:,.0f} samples/s, acc {acc:.4f}")
                torch_models.setdefault(m, model)
                settle()
                note(r, m, "joulecut_f32", "train")
                out = workdir / f"{m}-joulecut-r{r + 1}.safetensors"
                j = jc.train(m, out, args)
                rounds[r][m]["joulecut_f32"] = {"train": j["samples_per_second"], "train_accuracy": j["accuracy"]}
                log(f"round {r + 1} {m} joulecut train: {j['samples_per_second']:,.0f} samples/s, acc {j['accuracy']:.4f}")
                jc_files.setdefault(m, out)
                settle()

        # Phase 2: artefacts for inference, from round 1's models.
        sessions, quant, jc_arch = {}, {}, {}
        for m in args.models:
            if m not in torch_models:  # --epochs 0: PyTorch's initial weights everywhere
                torch.manual_seed(args.seed)
                torch_models[m] = torch_model(m).eval()
            state = torch_state(torch_models[m])
            pt_file = workdir / f"{m}-pytorch.safetensors"
            write_safetensors(pt_file, state)
            if m not in jc_files:
                jc_files[m] = pt_file
            # Files without joulecut metadata (PyTorch's weights) need the architecture named.
            jc_arch[m] = ARCH[m] if jc_files[m] == pt_file else None
            fp32, int8 = workdir / f"{m}-fp32.onnx", workdir / f"{m}-int8.onnx"
            build_onnx(m, state, fp32)
            quantize_onnx(fp32, int8)
            spin = not args.no_spin
            sessions[m] = {
                "ort_fp32": ort_session(fp32, args.threads, spin),
                "ort_int8": ort_session(int8, args.threads, spin),
            }
            # Same weights, three runtimes: the logits must agree (catches a wrong graph or layout).
            x = data["x_test"][:256]
            with torch.inference_mode():
                ref = torch_models[m](torch.from_numpy(x)).numpy()
            ort_out = sessions[m]["ort_fp32"].run(None, {"x": x})[0]
            jc_on_pt = jc.eval(pt_file, args, arch=ARCH[m], latency_iters=10)
            checks[m] = {
                "ort_fp32_max_abs_diff_vs_pytorch": float(np.abs(ort_out - ref).max()),
                "joulecut_accuracy_on_pytorch_weights": jc_on_pt["accuracy"],
                "ort_int8_ops": ort_op_types(int8),
            }
            jq = jc_files[m].with_name(jc_files[m].stem + "-int8.safetensors")
            quant[m] = jq
            checks[m]["joulecut_quantize"] = jc.quantize(jc_files[m], jq)
            if checks[m]["ort_fp32_max_abs_diff_vs_pytorch"] > 1e-3:
                warnings.append(f"{m}: ONNX fp32 logits differ from PyTorch's by {checks[m]['ort_fp32_max_abs_diff_vs_pytorch']:.2e}")
            log(f"{m}: ONNX graphs built (int8 ops {checks[m]['ort_int8_ops']}), joulecut int8 at {jq.name}")

        # Phase 3: inference, every arm in turn, per round.
        for r in range(args.repeats):
            for m in args.models:
                arms = {
                    "pytorch": lambda: torch_infer(torch_models[m], data, args),
                    "ort_fp32": lambda: ort_infer(sessions[m]["ort_fp32"], data, args),
                    "ort_int8": lambda: ort_infer(sessions[m]["ort_int8"], data, args),
                    "joulecut_f32": lambda: jc.eval(jc_files[m], args, arch=jc_arch[m]),
                    "joulecut_int8": lambda: jc.eval(quant[m], args, arch=jc_arch[m]),
                }
                for arm, fn in arms.items():
                    note(r, m, arm, "infer")
                    res = fn()
                    rounds[r][m].setdefault(arm, {}).update(res)
                    log(
                        f"round {r + 1} {m} {ARM_TITLE[arm]}: acc {res['accuracy']:.4f}, "
                        f"b{args.eval_batch} {res['batch_samples_per_second']:,.0f}/s, b1 {res['b1_median_us']:.1f} µs"
                    )
                    settle()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    after = loadavg()
    if after and after[0] > args.load_threshold and not warnings:
        warnings.append(f"load average rose to {after[0]} during the run: numbers may be noisy")
    report = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out", "markdown")
        },
        "host": host,
        "load": {"before": before, "after": after, "per_arm": arm_load},
        "data": {"dir": str(args.data), "mean": data["mean"], "std": data["std"]},
        "medians": summarise(rounds, args.models),
        "ratios": ratios(rounds, args.models),
        "rounds": rounds,
        "checks": checks,
        "warnings": warnings,
        "notes": [
            "train: PyTorch samples/s excludes the first --warmup-steps steps; joulecut's (`train --json`) counts every step and excludes its per-epoch test pass",
            "batch samples/s (median call) = eval batch / median forward-call latency; one test pass includes argmax and the first (cold) call",
            "ORT int8 = quantize_dynamic per-tensor QInt8 weights, QUInt8 dynamic activations; joulecut int8 = per-channel symmetric weights, per-row dynamic activations on the grid the file records (u6: 6-bit unsigned, the quantize default since session 5)",
            "energy figures in the raw joulecut entries carry their provenance (estimated where no RAPL counter is readable)",
        ],
    }
    text = markdown(report)
    print(text)
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
        log(f"wrote {args.out}")
    if args.markdown:
        write_atomic(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
