//! The "Examples:" section of each command's `--help` (clap's long help): the commands a new user
//! types first, in one place so they stay consistent with each other and with README.md.

pub const TRAIN: &str = "Examples:
  joulecut train --model lenet-300-100 --epochs 5 -o mlp.safetensors
  joulecut train --model lenet-300-100 --prune-schedule agp --target-sparsity 0.9 -o sparse.safetensors
  joulecut train --init pruned.safetensors --epochs 2 -o finetuned.safetensors   # keeps the packing";

pub const BENCH: &str = "Examples:
  joulecut bench -o bench-out                        # the quick suite: report.md, report.csv, pareto.svg
  joulecut bench --suite transformer -o bench-transformer
  joulecut bench --print-config > my-suite.json && joulecut bench --config my-suite.json
  sbatch --array=0-7 scripts/slurm-bench.sh full /shared/sweep   # --shard auto in each task";

pub const REPORT: &str = "Examples:
  joulecut report merge sweep/shard-* -o sweep/report";

pub const EVAL: &str = "Examples:
  joulecut eval mlp.safetensors
  joulecut eval int8.safetensors --batch-size 1 --json";

pub const EVAL_EMBEDDINGS: &str = "Examples:
  joulecut text wordnet -o text
  joulecut eval-embeddings MiniLM/ MiniLM-int8/ --sentences text/eval.txt";

pub const INSPECT: &str = "Examples:
  joulecut inspect mlp.safetensors
  joulecut inspect MiniLM/ --json | jq '.tensors[] | select(.encoding != \"dense\")'";

pub const PRUNE: &str = "Examples:
  joulecut prune mlp.safetensors -o p90.safetensors --sparsity 0.9 --pack
  joulecut prune mlp.safetensors -o rows50.safetensors --sparsity 0.5 --granularity rows --compact
  joulecut prune mlp.safetensors --sensitivity
  joulecut prune MiniLM/ -o MiniLM-sgpt50/ --method sparsegpt --sparsity 0.5 --calibration text/calib.txt";

pub const DISTILL: &str = "Examples:
  joulecut distill --teacher teacher.safetensors --student mlp:784-64-10 -o student.safetensors
  joulecut distill --teacher MiniLM/ --keep-layers 0,2,4 --corpus text/corpus.txt --held-out text/eval.txt -o MiniLM-3l/";

pub const QUANTIZE: &str = "Examples:
  joulecut quantize mlp.safetensors -o int8.safetensors --dtype int8
  joulecut quantize mlp.safetensors -o qat.safetensors --dtype int8 --qat --epochs 1
  joulecut quantize MiniLM/ -o MiniLM-int8/ --dtype int8 --calibration text/calib.txt";

pub const DECOMPRESS: &str = "Examples:
  joulecut decompress int8.safetensors -o dense.safetensors";

pub const COMPARE: &str = "Examples:
  joulecut compare mlp.safetensors int8.safetensors
  joulecut compare MiniLM/ MiniLM-int8/ --json";

pub const ENERGY: &str = "Examples:
  joulecut energy -- python train.py
  joulecut energy --interval 1s --csv runs.csv --append -- ./my-benchmark";

pub const TEXT: &str = "Examples:
  joulecut text wordnet -o text    # calib.txt, eval.txt, corpus.txt";

pub const EXPORT: &str = "Examples:
  joulecut export int8.safetensors -o int8-ct --format compressed-tensors
  joulecut export MiniLM-int8/ -o MiniLM-int8-ct --format compressed-tensors   # loads in transformers
  joulecut export int8.safetensors -o int8.onnx --format onnx                   # QDQ, runs in ONNX Runtime";

pub const IMPORT: &str = "Examples:
  joulecut import MiniLM-int8-ct -o MiniLM-int8/";
