//! Parsing and validation of transformer suite files.

use super::*;

#[test]
fn builtin_suite_parses_and_round_trips() {
    let s = TransformerSuite::builtin();
    assert!(TransformerSuite::is_transformer_text(
        TransformerSuite::builtin_text()
    ));
    assert!(s.variants.len() >= 12);
    assert!(s.text.has_corpus());
    let steps = |name: &str| {
        &s.variants
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no variant `{name}`"))
            .steps
    };
    for name in [
        "sparsegpt50-recovered",
        "layers3-recovered",
        "neurons50-recovered",
    ] {
        assert!(
            matches!(
                steps(name).last(),
                Some(TransformerStep::Recover { epochs: 1, .. })
            ),
            "{name}"
        );
        let int8 = steps(&format!("{name}-int8"));
        assert_eq!(&int8[..int8.len() - 1], steps(name).as_slice());
    }
    assert!(matches!(
        steps("heads25")[..],
        [TransformerStep::Structured { .. }]
    ));
    let again: TransformerSuite =
        serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
    // the MLP suites are not transformer suites
    assert!(!TransformerSuite::is_transformer_text(
        super::super::super::SuiteConfig::builtin_text("quick").unwrap()
    ));
}

fn with_steps(steps: &str) -> Result<TransformerSuite> {
    with_text(
        r#"{"source": "files", "calibration": "c", "evaluation": "e", "corpus": "t"}"#,
        steps,
    )
}

fn with_text(text: &str, steps: &str) -> Result<TransformerSuite> {
    let text = format!(
        r#"{{"kind": "transformer", "name": "t", "text": {text},
            "eval": {{"batch_size": 8}}, "variants": [{{"name": "v", "steps": [{steps}]}}]}}"#
    );
    TransformerSuite::parse(&text, "t")
}

#[test]
fn structured_and_recover_steps_parse_with_their_defaults() {
    let s = with_steps(
        r#"{"op": "structured", "granularity": "neurons", "sparsity": 0.5, "method": "wanda"},
           {"op": "recover"},
           {"op": "quantize", "dtype": "int8"}"#,
    )
    .unwrap();
    let steps = &s.variants[0].steps;
    assert_eq!(
        steps[0],
        TransformerStep::Structured {
            granularity: Units::Neurons,
            sparsity: 0.5,
            method: Method::Wanda
        }
    );
    assert_eq!(
        steps[1],
        TransformerStep::Recover {
            epochs: 1,
            lr: None,
            keep_layers: None
        }
    );
    assert_eq!(steps[1].recover_lr(), Some(1e-4));
    assert_eq!(steps[0].recover_lr(), None);
    assert_eq!(steps[0].prune_spec(), None);
    // structured ranks by magnitude unless told; a layer-dropping recover may come first,
    // and its learning rate defaults higher
    let s = with_steps(
        r#"{"op": "recover", "keep_layers": [0, 2, 4], "epochs": 3},
           {"op": "structured", "granularity": "heads", "sparsity": 0.25}"#,
    )
    .unwrap();
    let steps = &s.variants[0].steps;
    assert_eq!(
        steps[0],
        TransformerStep::Recover {
            epochs: 3,
            lr: None,
            keep_layers: Some(vec![0, 2, 4])
        }
    );
    assert_eq!(steps[0].recover_lr(), Some(5e-4));
    assert!(matches!(
        steps[1],
        TransformerStep::Structured {
            granularity: Units::Heads,
            method: Method::Magnitude,
            ..
        }
    ));
    let s = with_steps(r#"{"op": "recover", "keep_layers": [1], "lr": 0.002}"#).unwrap();
    assert_eq!(s.variants[0].steps[0].recover_lr(), Some(0.002));
    // the fields round-trip (the report stores the suite as run)
    let again: TransformerSuite =
        serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn a_recover_step_needs_a_corpus() {
    let steps = r#"{"op": "prune", "method": "wanda", "sparsity": 0.5}, {"op": "recover"}"#;
    for text in [
        r#"{"source": "files", "calibration": "c", "evaluation": "e"}"#,
        r#"{"source": "wordnet", "calibration": 8, "evaluation": 8}"#,
        r#"{"source": "wordnet", "calibration": 8, "evaluation": 8, "corpus": 0}"#,
    ] {
        let e = with_text(text, steps).unwrap_err().to_string();
        assert!(
            e.contains("v: a recover step trains on the suite's corpus")
                && e.contains("\"corpus\""),
            "{text}: {e}"
        );
    }
    for text in [
        r#"{"source": "files", "calibration": "c", "evaluation": "e", "corpus": "t"}"#,
        r#"{"source": "wordnet", "calibration": 8, "evaluation": 8, "corpus": 100}"#,
    ] {
        with_text(text, steps).unwrap();
    }
    // without a recover step no corpus is needed
    with_text(
        r#"{"source": "wordnet", "calibration": 8, "evaluation": 8}"#,
        r#"{"op": "structured", "granularity": "heads", "sparsity": 0.5}"#,
    )
    .unwrap();
}

#[test]
fn steps_parse_into_their_specs() {
    let s = with_steps(r#"{"op": "prune", "method": "sparsegpt", "granularity": "2:4"}"#).unwrap();
    let spec = s.variants[0].steps[0].prune_spec().unwrap();
    assert_eq!(spec.method, Method::SparseGpt);
    assert_eq!(spec.granularity, Granularity::nm(2, 4).unwrap());
    assert_eq!(spec.sparsity, 0.5);
    let s = with_steps(
        r#"{"op": "prune", "method": "wanda", "sparsity": 0.3},
           {"op": "quantize", "dtype": "int8", "activations": "u7"}"#,
    )
    .unwrap();
    assert!(matches!(
        s.variants[0].steps[1],
        TransformerStep::Quantize {
            activations: Some(GridChoice::U7),
            ..
        }
    ));
    assert_eq!(s.min_cosine, 0.99);
}

#[test]
fn bad_steps_are_refused() {
    for bad in [
        r#"{"op": "prune", "method": "magnitude", "sparsity": 0.5}"#,
        r#"{"op": "prune", "method": "wanda"}"#,
        r#"{"op": "prune", "method": "wanda", "sparsity": 1.5}"#,
        r#"{"op": "prune", "method": "wanda", "sparsity": 0.3, "granularity": "2:4"}"#,
        r#"{"op": "prune", "method": "wanda", "sparsity": 0.3, "granularity": "rows"}"#,
        r#"{"op": "prune", "method": "obs", "sparsity": 0.3}"#,
        r#"{"op": "quantize", "dtype": "f16", "activations": "s8"}"#,
        r#"{"op": "quantize", "dtype": "int8", "activations": "u6", "max_error": 0.001}"#,
        r#"{"op": "quantize", "dtype": "int8", "max_error": -1}"#,
        r#"{"op": "quantize", "dtype": "int4"}"#,
        r#"{"op": "quantize", "dtype": "int8"}, {"op": "prune", "method": "wanda", "sparsity": 0.3}"#,
        r#"{"op": "finetune", "epochs": 1}"#,
        r#"{"op": "structured", "granularity": "neurons", "sparsity": 0}"#,
        r#"{"op": "structured", "granularity": "neurons", "sparsity": 1}"#,
        r#"{"op": "structured", "granularity": "neurons"}"#,
        r#"{"op": "structured", "granularity": "rows", "sparsity": 0.5}"#,
        r#"{"op": "structured", "granularity": "heads", "sparsity": 0.5, "method": "sparsegpt"}"#,
        r#"{"op": "recover", "keep_layers": [0], "epochs": 0}"#,
        r#"{"op": "recover", "keep_layers": [0], "lr": 1.5}"#,
        r#"{"op": "recover", "keep_layers": [0], "lr": 0}"#,
        r#"{"op": "recover", "keep_layers": []}"#,
        r#"{"op": "recover", "keep_layers": [2, 1]}"#,
        r#"{"op": "recover", "keep_layers": [0], "batch_size": 8}"#,
        r#"{"op": "recover"}"#,
        r#"{"op": "quantize", "dtype": "int8"}, {"op": "recover"}"#,
        r#"{"op": "quantize", "dtype": "f16"}, {"op": "structured", "granularity": "heads", "sparsity": 0.5}"#,
    ] {
        assert!(with_steps(bad).is_err(), "{bad}");
    }
    assert!(with_steps("").is_err(), "a variant without steps");
}
