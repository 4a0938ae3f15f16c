//! `joulecut bench --config`: any bytes as a suite file, either kind, parsed and validated as the
//! CLI does, then expanded into its runs (image suites) or its steps (transformer suites).

use joulecut_harness::bench::{SuiteConfig, TransformerSuite};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if TransformerSuite::is_transformer_text(text) {
            if let Ok(s) = TransformerSuite::parse(text, "fuzz") {
                for v in &s.variants {
                    for step in &v.steps {
                        let _ = (step.prune_spec(), step.recover_lr());
                    }
                }
            }
        } else if let Ok(s) = SuiteConfig::parse(text, "fuzz") {
            // a suite of millions of runs is valid and merely long; expanding it is not the point
            if s.models.len().saturating_mul(s.seeds.len()) <= 4096 {
                let _ = s.runs();
            }
        }
    });
}
