//! `joulecut prune`: magnitude pruning of a checkpoint (joulecut or foreign safetensors), with
//! optional structured compaction (`--compact`: physically smaller layers, new dimensions in
//! `joulecut.model`), packed sparse storage (`--pack`: bitmap + non-zeros) and a per-layer
//! sensitivity sweep (`--sensitivity`).
//!
//! The report says which kind of saving the result is: *real* (fewer bytes on disk, smaller dense
//! layers) or *nominal* (zeros stored densely: same bytes, same dense speed).
//!
//! Takes the layouts `quantize` takes (a file, a sharded checkpoint's index, a Hugging Face model
//! directory) and writes through the same streaming writer: a directory input gives a directory
//! output with the same shards, index and sidecar files. Non-float tensors (token ids) are never
//! pruned: they are copied byte for byte and reported as kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::Device;
use clap::{Args, ValueEnum};
use joulecut::checkpoint::{
    Checkpoint, DenseTensor, HistoryEntry, Precomputed, Source, SparseValues, StreamOptions,
    TensorData, check_output, stream,
};
use joulecut::harness;
use joulecut::harness::pipeline::{
    Indivisible, PrunePolicy, compact_model, data_bytes, pack_if_pays,
};
use joulecut::models::{Model, ModelConfig, init_varmap, load_into_varmap};
use joulecut::prune::Method;
use joulecut::prune::{
    Criterion, F32Tensor, Granularity, PruneSpec, Scope, Selection, SensitivityConfig,
    SparsityReport,
};

use super::error::bad_input;
use super::output::{NonFloat, human_bytes, print_json};
use super::progress;

/// What is removed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GranularityArg {
    /// Single weights (magnitude).
    Unstructured,
    /// Output rows / neurons of weight matrices.
    Rows,
    /// Output channels of conv kernels (and rows of matrices).
    Channels,
    /// N of every M weights along the input dimension (see --nm).
    Nm,
    /// Attention heads of a BERT-family model directory, removed (smaller layers).
    Heads,
    /// FFN neurons of a BERT-family model directory, removed (smaller layers).
    Neurons,
}

/// Ranking of rows and channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CriterionArg {
    /// Mean absolute value.
    L1,
    /// Root mean square.
    L2,
}

/// Where the threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScopeArg {
    /// The same fraction in every selected tensor.
    Layer,
    /// One threshold across all selected tensors.
    Global,
}

/// Arguments of `joulecut prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Input checkpoint: a .safetensors file (joulecut or foreign), a sharded checkpoint's
    /// index.json, or a model directory.
    input: PathBuf,
    /// Output checkpoint (never the input; written atomically): a file, or a directory (same
    /// shards, index, sidecar files) for a sharded or directory input.
    #[arg(
        short,
        long,
        value_name = "OUT",
        required_unless_present = "sensitivity"
    )]
    output: Option<PathBuf>,
    /// Write one .safetensors file even when the input is sharded or a directory.
    #[arg(long)]
    single_file: bool,
    #[command(flatten)]
    card: super::card::CardArgs,
    /// Fraction of weights (rows, channels) to remove, in [0, 1). Implied by --nm.
    #[arg(long, allow_negative_numbers = true)]
    sparsity: Option<f64>,
    /// What is removed together [default: unstructured, or nm with --nm].
    #[arg(long, value_enum)]
    granularity: Option<GranularityArg>,
    /// N:M pattern: keep N of every M consecutive weights along the input dimension.
    #[arg(long, value_name = "N:M")]
    nm: Option<String>,
    /// Ranking of rows and channels [default: l1].
    #[arg(long, value_enum)]
    criterion: Option<CriterionArg>,
    /// Per-layer fraction or one global threshold.
    #[arg(long, value_enum, default_value = "layer")]
    scope: ScopeArg,
    /// Prune only tensors matching this glob (repeatable; overrides the default policy: every
    /// weight matrix and conv kernel, the output layer's included — it is usually the most
    /// sensitive, so `--exclude 'fc3.*'` keeps it whole — and never biases, norms or embeddings;
    /// structured pruning keeps the output layer whole unless it is included).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave tensors matching this glob alone (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Remove pruned neurons/channels: physically smaller layers (joulecut models only).
    #[arg(long)]
    compact: bool,
    /// Store pruned tensors packed (bitmap + non-zero values) where that is smaller.
    #[arg(long)]
    pack: bool,
    /// Sweep each layer alone over --sweep sparsities and report test accuracy (needs the data).
    #[arg(long)]
    sensitivity: bool,
    /// Sparsities of the sensitivity sweep.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.7,0.8,0.9,0.95")]
    sweep: Vec<f64>,
    /// Test samples per sensitivity point (0 = the whole test set).
    #[arg(long, default_value_t = 2000)]
    eval_samples: usize,
    /// Fashion-MNIST directory for --sensitivity (default: $JOULECUT_DATA or the system dataset).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// How weights are ranked: `magnitude` (|W|, no data), `wanda` (|W|·‖x‖ per output row) or
    /// `sparsegpt` (second order, with updates of the kept weights). wanda and sparsegpt prune a
    /// Hugging Face BERT-family model directory and need --calibration. With --granularity
    /// heads|neurons: `magnitude` ranks units by their weights, `wanda` by their output change on
    /// the calibration sentences.
    #[arg(long, default_value_t = Method::Magnitude)]
    method: Method,
    /// Calibration sentences, one per line (for --method wanda|sparsegpt).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `N:M`.
fn parse_nm(s: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = s
        .split_once(':')
        .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
    parsed.ok_or_else(|| bad_input(format!("bad --nm `{s}`"), "write N:M, e.g. --nm 2:4"))
}

/// The validated pruning spec from the flags (the sensitivity sweep ignores `--sparsity`).
fn spec_of(a: &PruneArgs, need_sparsity: bool) -> anyhow::Result<PruneSpec> {
    let granularity = match (a.granularity, &a.nm) {
        (None | Some(GranularityArg::Nm), Some(nm)) => {
            let (n, m) = parse_nm(nm)?;
            Granularity::nm(n, m)?
        }
        (Some(GranularityArg::Nm), None) => Granularity::nm(2, 4)?,
        (Some(g), Some(_)) => {
            return Err(bad_input(
                format!("--nm does not apply to --granularity {g:?}"),
                "use --granularity nm --nm N:M, or drop --nm",
            ));
        }
        (None | Some(GranularityArg::Unstructured), None) => Granularity::Unstructured,
        (Some(GranularityArg::Rows), None) => Granularity::Rows,
        (Some(GranularityArg::Channels), None) => Granularity::Channels,
        (Some(GranularityArg::Heads | GranularityArg::Neurons), None) => {
            return Err(bad_input(
                "--granularity heads|neurons is handled by the structured path",
                "this is a bug: please report it",
            ));
        }
    };
    let sparsity = match (a.sparsity, granularity.implied_sparsity()) {
        (Some(s), Some(implied)) if (s - implied).abs() > 1e-9 => {
            return Err(bad_input(
                format!("--sparsity {s} contradicts {granularity} (which is {implied} sparse)"),
                "drop --sparsity with --nm; the pattern fixes it",
            ));
        }
        (_, Some(implied)) => implied,
        (Some(s), None) => s,
        (None, None) if !need_sparsity => 0.0,
        (None, None) => {
            return Err(bad_input(
                "--sparsity is required",
                "e.g. --sparsity 0.9 removes 90% of the selected weights",
            ));
        }
    };
    let selection = Selection {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
    };
    let spec = PruneSpec::new(sparsity)
        .granularity(granularity)
        .criterion(match a.criterion.unwrap_or(CriterionArg::L1) {
            CriterionArg::L1 => Criterion::L1,
            CriterionArg::L2 => Criterion::L2,
        })
        .scope(match a.scope {
            ScopeArg::Layer => Scope::Layer,
            ScopeArg::Global => Scope::Global,
        })
        .selection(selection);
    spec.validate()?;
    Ok(spec)
}

/// Per-layer accuracy sweep on the test set.
fn sensitivity(
    a: &PruneArgs,
    ck: &Checkpoint,
    tensors: &BTreeMap<String, F32Tensor>,
    spec: &PruneSpec,
) -> anyhow::Result<joulecut::prune::SensitivityReport> {
    let cfg = Model::config_of(ck, None)?;
    let splits = harness::data::load_fashion_mnist(a.data.as_deref())?;
    let test = if a.eval_samples == 0 || a.eval_samples >= splits.test.len() {
        splits.test
    } else {
        splits.test.take(a.eval_samples)
    };
    let dev = Device::Cpu;
    let vm = init_varmap(&cfg, 0, &dev)?;
    load_into_varmap(
        &vm,
        tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone(), t.values.clone())),
    )?;
    let model = Model::from_varmap(&cfg, &vm)?;
    let sc = SensitivityConfig {
        sparsities: a.sweep.clone(),
        granularity: spec.granularity,
        criterion: spec.criterion,
        selection: spec.selection.clone(),
    };
    // the baseline, then each layer at each sparsity: the bar names what is being evaluated
    let probes = joulecut::prune::sensitivity_probes(tensors, &sc)?;
    let bar = progress::bar(
        "sensitivity",
        probes.len() as u64 + 1,
        "evaluations",
        a.json,
    );
    let mut done = 0usize;
    let report = joulecut::prune::sensitivity_varmap(&vm, &sc, |_| -> anyhow::Result<f64> {
        bar.set_message(match done.checked_sub(1).and_then(|i| probes.get(i)) {
            Some((layer, s)) => format!("{layer} at {:.0}%", s * 100.0),
            None => "unpruned baseline".into(),
        });
        let s = harness::evaluate(&model, &test, 1000, &dev)?;
        done += 1;
        bar.set_position(done as u64);
        Ok(s.accuracy)
    });
    bar.finish_and_clear();
    report
}

/// The selection handed to the pruner, which sees float tensors only. Globs are checked against
/// every tensor name first; an include glob that takes a non-float tensor is refused, an exclude
/// glob that matches only non-float tensors is dropped (they are never pruned anyway).
fn float_selection(
    selection: &Selection,
    src: &Source,
    non_float: &NonFloat,
) -> anyhow::Result<Selection> {
    let shapes = src
        .names()
        .iter()
        .map(|n| {
            let t = joulecut::checkpoint::TensorRef {
                checkpoint: src.shard_of(n),
                name: n,
            };
            Ok((n.as_str(), t.shape()?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    selection.select(shapes.iter().map(|(n, s)| (*n, s.as_slice())))?;
    if selection.has_includes() {
        if let Some(t) = non_float.find(|n, sh| selection.selects(n, sh)) {
            return Err(joulecut::checkpoint::Error::NotFloat {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                action: "pruning",
            }
            .into());
        }
    }
    let mut out = selection.clone();
    out.exclude.retain(|g| {
        let glob = Selection {
            include: vec![g.clone()],
            exclude: Vec::new(),
        };
        shapes
            .iter()
            .any(|(n, sh)| !non_float.contains(n) && glob.selects(n, sh))
    });
    Ok(out)
}

/// `--granularity heads|neurons`: whole units of a transformer, compacted (prune_structured.rs).
fn run_structured(
    a: &PruneArgs,
    units: super::prune_structured::Units,
) -> anyhow::Result<ExitCode> {
    let Some(output) = &a.output else {
        return Err(bad_input(
            "--granularity heads|neurons needs -o OUTPUT_DIR",
            "--sensitivity sweeps models trained with joulecut only",
        ));
    };
    let unused = [
        (a.nm.is_some(), "--nm"),
        (
            !a.include.is_empty() || !a.exclude.is_empty(),
            "--include/--exclude",
        ),
        (a.compact, "--compact"),
        (a.pack, "--pack"),
        (a.sensitivity, "--sensitivity"),
        (a.single_file, "--single-file"),
        (a.scope == ScopeArg::Global, "--scope global"),
        // heads and neurons are ranked by --method (magnitude or calibrated), not by a norm
        (a.criterion.is_some(), "--criterion"),
    ];
    if let Some((_, flag)) = unused.iter().find(|(set, _)| *set) {
        return Err(bad_input(
            format!("{flag} does not apply to --granularity heads|neurons"),
            "heads and neurons are removed from every encoder layer and always compacted; drop it",
        ));
    }
    let Some(sparsity) = a.sparsity else {
        return Err(bad_input(
            "--sparsity is required",
            "e.g. --sparsity 0.25 removes a quarter of every layer's heads or neurons",
        ));
    };
    super::prune_structured::run(super::prune_structured::StructuredArgs {
        input: &a.input,
        output,
        units,
        sparsity,
        method: a.method,
        calibration: a.calibration.as_deref(),
        json: a.json,
    })
}

pub fn run(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let (card, input, output) = (a.card, a.input.clone(), a.output.clone());
    super::card::metered(
        card,
        "prune",
        &input,
        output.as_deref(),
        "cpu",
        "test accuracy (pruning alone can lose much of it): run `joulecut eval OUT`, and fine-tune with `joulecut train --init OUT`",
        || run_pruning(a),
    )
}

fn run_pruning(a: PruneArgs) -> anyhow::Result<ExitCode> {
    use super::prune_structured::Units;
    match a.granularity {
        Some(GranularityArg::Heads) => return run_structured(&a, Units::Heads),
        Some(GranularityArg::Neurons) => return run_structured(&a, Units::Neurons),
        _ => {}
    }
    let mut spec = spec_of(&a, a.output.is_some())?;
    if a.method != Method::Magnitude {
        let Some(output) = &a.output else {
            return Err(bad_input(
                format!("--method {} needs -o OUTPUT_DIR", a.method),
                "--sensitivity sweeps magnitude pruning only",
            ));
        };
        let unused = !a.include.is_empty()
            || !a.exclude.is_empty()
            || a.compact
            || a.sensitivity
            || a.single_file
            || a.criterion.is_some()
            || a.scope == ScopeArg::Global;
        if unused {
            return Err(bad_input(
                format!(
                    "--method {} prunes every encoder linear layer, per layer, ranked by its own score",
                    a.method
                ),
                "drop --include/--exclude/--compact/--sensitivity/--single-file/--criterion/--scope",
            ));
        }
        return super::prune_calibrated::run(super::prune_calibrated::CalibratedArgs {
            input: &a.input,
            output,
            calibration: a.calibration.as_deref(),
            method: a.method,
            granularity: spec.granularity,
            sparsity: spec.sparsity,
            pack: a.pack,
            json: a.json,
        });
    }
    if let Some(c) = &a.calibration {
        return Err(bad_input(
            format!(
                "--calibration {} is unused by --method magnitude",
                c.display()
            ),
            "use --method wanda or --method sparsegpt to prune with calibration sentences",
        ));
    }
    let src = Source::open(&a.input)?;
    if let Some(out) = &a.output {
        check_output(&src, out, a.single_file)?;
    }
    let non_float = NonFloat::of(&src);
    spec.selection = float_selection(&spec.selection, &src, &non_float)?;
    // A joulecut model is one file: its config is in the (first) shard's metadata.
    let ck = &src.shards()[0].checkpoint;
    let config = match ck.model_config()? {
        Some(v) => Some(ModelConfig::from_json(&v)?),
        None => None,
    };
    if a.compact && config.is_none() {
        return Err(bad_input(
            format!(
                "--compact needs a joulecut model: `{}` has no joulecut.model metadata",
                a.input.display()
            ),
            "compaction must know how layers connect; train the model with joulecut, or prune \
             without --compact",
        ));
    }
    // Original data (to spot int8 tensors) and f32 values of every float tensor.
    let mut original = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for name in src.names() {
        if non_float.contains(name) {
            continue;
        }
        let ck = src.shard_of(name);
        let data = ck.get(name)?;
        let (shape, values) = ck.get_f32(name)?;
        tensors.insert(name.clone(), F32Tensor { shape, values });
        original.insert(name.clone(), data);
    }

    let sens = if a.sensitivity {
        Some(sensitivity(&a, ck, &tensors, &spec)?)
    } else {
        None
    };
    let Some(out) = &a.output else {
        let report = sens.expect("--sensitivity without -o");
        if a.json {
            print_json(&serde_json::json!({ "input": a.input, "sensitivity": report }))?;
        } else {
            println!("{report}");
        }
        return Ok(ExitCode::SUCCESS);
    };

    // Structured pruning of a joulecut model keeps the output layer whole unless asked otherwise;
    // an N:M pattern that does not divide a layer is refused, naming it (the pipeline's policy).
    let policy = PrunePolicy::for_model(config.as_ref(), Indivisible::Refuse);
    let fitted = policy.fit(
        spec,
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice())),
    );
    let (spec, protected) = (fitted.spec, fitted.protected);
    for name in spec.selection.select(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice())),
    )? {
        if matches!(original[&name], TensorData::Int8(_))
            || matches!(&original[&name], TensorData::Sparse(s) if matches!(s.values, SparseValues::Int8(_)))
        {
            return Err(bad_input(
                format!("`{name}` is int8-encoded; pruning it would store it as float again"),
                "prune before quantizing, or --exclude it",
            ));
        }
    }
    let masks = joulecut::prune::prune_tensors(&mut tensors, &spec)?;
    let pruned_report =
        SparsityReport::from_tensors(masks.keys().map(|n| (n.as_str(), &tensors[n])));

    let mut compact_json = serde_json::Value::Null;
    let mut out_config = config.clone();
    let mut final_tensors = tensors.clone();
    if a.compact {
        let c = compact_model(config.as_ref().expect("checked above"), &tensors)?;
        compact_json = c.to_json();
        out_config = Some(c.cfg);
        final_tensors = c.tensors;
    }

    // Only changed tensors are handed to the writer; every other one is copied as stored.
    let mut replaced = BTreeMap::new();
    let mut layers = Vec::new();
    for name in src.names() {
        let Some(t) = final_tensors.get(name) else {
            continue; // a non-float tensor
        };
        if !masks.contains_key(name) && t.shape == tensors[name].shape {
            continue;
        }
        let dtype = original[name].float_type();
        let packed = a
            .pack
            .then(|| pack_if_pays(&t.shape, &t.values, dtype))
            .flatten();
        let data = packed.unwrap_or_else(|| {
            TensorData::Dense(DenseTensor {
                dtype,
                shape: t.shape.clone(),
                bytes: dtype.encode(&t.values),
            })
        });
        if let Some(r) = pruned_report.tensors.iter().find(|r| &r.name == name) {
            layers.push(serde_json::json!({
                "name": name,
                "shape": r.shape,
                "shape_after": t.shape,
                "params": r.numel,
                "zeros": r.zeros,
                "sparsity": r.sparsity,
                "encoding": data.encoding_name(),
                "bytes_before": src.shard_of(name).tensor_bytes(name)?,
                "bytes_after": data_bytes(&data),
            }));
        }
        replaced.insert(name.clone(), data);
    }
    let mut opts = StreamOptions::new(HistoryEntry::new(
        "prune",
        serde_json::json!({
            "spec": spec,
            "compact": a.compact,
            "pack": a.pack,
            "input": a.input,
        }),
    ));
    opts.single_file = a.single_file;
    if let Some(cfg) = &out_config {
        opts.metadata.insert(
            joulecut::checkpoint::meta::MODEL.into(),
            Some(cfg.to_json().to_string()),
        );
    }
    let written = stream(&src, out, &opts, &Precomputed::new(replaced)?)
        .with_context(|| format!("prune {} to {}", a.input.display(), out.display()))?;
    let bytes_after = written.bytes;
    let bytes_before = src.file_bytes();

    let all = SparsityReport::from_tensors(final_tensors.iter().map(|(n, t)| (n.as_str(), t)));
    let real = a.compact && compact_json["removed_units"].as_u64().unwrap_or(0) > 0
        || a.pack && layers.iter().any(|l| l["encoding"] == "sparse");
    let note = if real {
        "real: fewer bytes on disk and/or physically smaller layers"
    } else if spec.granularity == (Granularity::Nm { n: 2, m: 4 }) {
        "nominal on disk: zeros stored densely (same bytes); joulecut runs batches of 1-2 rows of \
         a 2:4 linear layer through its 2:4 kernel, larger batches at dense speed"
    } else if spec.granularity.is_structured() {
        "nominal: zero rows stored densely (same bytes, same dense speed); add --compact for smaller layers"
    } else {
        "nominal: zeros stored densely (same bytes, same dense speed); add --pack for sparse storage"
    };
    // Pruning alone changes accuracy without saying by how much: say so, and how to get it back.
    let unmeasured = (sens.is_none() && pruned_report.zeros > 0).then(|| {
        let o = out.display();
        match &config {
            Some(_) => format!(
                "accuracy was not measured, and pruning without fine-tuning can cost a lot of it (LeNet-300-100 at 90%: 0.86 -> 0.55); check with `joulecut eval {o}` and fine-tune with `joulecut train --init {o} --epochs 2 -o OUT` (it keeps the zeros and the packing)"
            ),
            None => format!(
                "accuracy was not measured; `joulecut compare {} {o}` shows how far each weight moved, and a task evaluation of {o} tells what it cost",
                a.input.display()
            ),
        }
    });
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": out,
            "warning": unmeasured,
            "spec": spec,
            "protected": protected,
            "layers": layers,
            "global": {
                "params": pruned_report.numel,
                "zeros": pruned_report.zeros,
                "sparsity": pruned_report.sparsity,
                "model_params": all.numel,
                "model_zeros": all.zeros,
                "model_sparsity": all.sparsity,
            },
            "bytes": {
                "before": bytes_before,
                "after": bytes_after,
                "ratio": bytes_after as f64 / bytes_before.max(1) as f64,
            },
            "compact": compact_json,
            "layout": if written.is_dir { "directory" } else { "file" },
            "files": written.files,
            "sidecars": written.sidecars,
            "non_float": non_float.json(),
            "saving": if real { "real" } else { "nominal" },
            "note": note,
            "sensitivity": sens,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(s) = &sens {
        println!("{s}\n");
    }
    println!("{pruned_report}");
    if let Some(p) = &protected {
        println!("kept whole: {p} (the output layer; --include it to prune it)");
    }
    if let Some(line) = non_float.line() {
        println!("{line}");
    }
    if !compact_json.is_null() {
        println!(
            "compacted: widths {} -> {}",
            compact_json["widths_before"], compact_json["widths_after"]
        );
    }
    println!(
        "{} -> {}: {} -> {} ({:.2}x); {note}",
        a.input.display(),
        out.display(),
        human_bytes(bytes_before),
        human_bytes(bytes_after),
        bytes_after as f64 / bytes_before.max(1) as f64
    );
    if let Some(w) = unmeasured {
        super::progress::note(format_args!("warning: {w}"), false);
    }
    Ok(ExitCode::SUCCESS)
}
