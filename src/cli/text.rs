//! `joulecut text wordnet --out DIR`: writes the WordNet sentence sets transformers are calibrated,
//! evaluated and distilled on — `calib.txt`, `eval.txt`, `corpus.txt`, one sentence a line — so
//! `prune --calibration`, `eval-embeddings --sentences` and `distill --corpus` read the same text
//! on every machine. The directory appears complete or not at all.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use joulecut::checkpoint::atomic::DirCommit;
use joulecut::embed::wordnet::{WordnetConfig, WordnetSplit};

use super::output::print_json;

/// Arguments of `joulecut text`.
#[derive(Debug, Args)]
pub struct TextArgs {
    #[command(subcommand)]
    command: TextCommand,
}

#[derive(Debug, Subcommand)]
enum TextCommand {
    /// WordNet glosses (Debian `wordnet-base`) split into disjoint calibration, evaluation and
    /// corpus sets: calib.txt, eval.txt, corpus.txt.
    Wordnet(WordnetArgs),
}

/// Arguments of `joulecut text wordnet`.
#[derive(Debug, Args)]
struct WordnetArgs {
    /// Output directory (must not exist, or be empty; written atomically).
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "out",
        value_name = "DIR"
    )]
    out: PathBuf,
    /// The WordNet database directory (data.noun, data.verb, data.adj, data.adv).
    #[arg(long, value_name = "DIR", default_value = joulecut::embed::wordnet::DEFAULT_DIR)]
    wordnet: PathBuf,
    /// Sentences in calib.txt.
    #[arg(long, default_value_t = WordnetConfig::default().calibration)]
    calibration: usize,
    /// Sentences in eval.txt.
    #[arg(long, default_value_t = WordnetConfig::default().evaluation)]
    evaluation: usize,
    /// Sentences in corpus.txt.
    #[arg(long, default_value_t = WordnetConfig::default().corpus)]
    corpus: usize,
    /// Shortest sentence kept, in words.
    #[arg(long, default_value_t = WordnetConfig::default().min_words)]
    min_words: usize,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = WordnetConfig::default().seed)]
    seed: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: TextArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        TextCommand::Wordnet(w) => wordnet(w),
    }
}

fn wordnet(a: WordnetArgs) -> anyhow::Result<ExitCode> {
    let cfg = WordnetConfig {
        dir: a.wordnet.clone(),
        calibration: a.calibration,
        evaluation: a.evaluation,
        corpus: a.corpus,
        min_words: a.min_words,
        seed: a.seed,
    };
    // Refuse a busy output before the work; nothing is created until the sets exist.
    joulecut::checkpoint::atomic::check_dir_dest(&a.out).map_err(|_| {
        joulecut::checkpoint::Error::OutputNotEmpty {
            path: a.out.clone(),
        }
    })?;
    let split = WordnetSplit::load(&cfg)?;
    let sets = [
        ("calibration", "calib.txt", &split.calibration),
        ("evaluation", "eval.txt", &split.evaluation),
        ("corpus", "corpus.txt", &split.corpus),
    ];
    let werr = || format!("write {}", a.out.display());
    let commit = DirCommit::new(&a.out).with_context(werr)?;
    for (_, file, lines) in &sets {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(commit.path_of(file), text).with_context(werr)?;
    }
    commit.commit().with_context(werr)?;
    if a.json {
        let files: serde_json::Map<String, serde_json::Value> = sets
            .iter()
            .map(|(set, file, lines)| {
                (
                    set.to_string(),
                    serde_json::json!({ "path": a.out.join(file), "sentences": lines.len() }),
                )
            })
            .collect();
        print_json(&serde_json::json!({
            "out": a.out,
            "source": "wordnet",
            "config": cfg,
            "files": files,
        }))?;
    } else {
        for (set, file, lines) in &sets {
            println!(
                "{set:<12} {:>6} sentences  {}",
                lines.len(),
                a.out.join(file).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
