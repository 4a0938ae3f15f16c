//! Exit codes and hints (DESIGN.md: 0 success, 1 failure of the work, 2 bad usage or bad input).
//!
//! Commands return `anyhow::Result`. Bad input is recognised in two ways: a [`BadInput`] raised by the
//! command itself, or a library error somewhere in the chain whose type says the input was at fault.

use std::fmt;

/// A user error raised by the CLI layer itself (bad option value, bad combination of flags).
#[derive(Debug)]
pub struct BadInput {
    /// What was wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BadInput {}

/// Builds a [`BadInput`] error with a hint.
pub fn bad_input(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput {
        message: message.into(),
        hint: Some(hint.into()),
    })
}

/// How `main` reports an error.
pub struct Report {
    /// Process exit code.
    pub code: u8,
    /// The hint printed after the error, if any.
    pub hint: Option<String>,
}

/// Walks the error chain: the first error that knows whether it is the user's fault decides.
pub fn classify(err: &anyhow::Error) -> Report {
    for cause in err.chain() {
        if let Some(b) = cause.downcast_ref::<BadInput>() {
            return Report {
                code: 2,
                hint: b.hint.clone(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::checkpoint::SelectionError>() {
            return Report {
                code: 2,
                hint: Some(e.hint()),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::checkpoint::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::models::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::harness::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::prune::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::distill::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::quant::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::embed::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::interop::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
        if let Some(e) = cause.downcast_ref::<joulecut::energy::Error>() {
            return Report {
                code: if e.is_bad_input() { 2 } else { 1 },
                hint: e.hint(),
            };
        }
    }
    Report {
        code: 1,
        hint: None,
    }
}
