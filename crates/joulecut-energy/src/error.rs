//! The crate's error type. Probes that cannot be used are *not* errors: they are reported as
//! [`Unavailable`](crate::Unavailable) reasons next to the probes that work. Errors are for the things
//! that stop a measurement: a bad configuration value, a command that cannot be started.

use std::path::PathBuf;

/// Errors of `joulecut-energy`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (environment variable or flag) is not acceptable.
    #[error("invalid energy setting {name}={value:?}: {reason}")]
    InvalidConfig {
        /// The variable or flag.
        name: String,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// No command was given to meter.
    #[error("no command to meter")]
    NoCommand,
    /// The metered command could not be started.
    #[error("failed to start `{program}`")]
    Spawn {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the metered command failed.
    #[error("failed to wait for `{program}`")]
    Wait {
        /// The program as given.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file that should have been readable could not be read (e.g. a fake powercap tree).
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The wrap-guard thread could not be started.
    #[error("failed to start the RAPL wrap-guard thread")]
    GuardThread(#[source] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// True when the user's input or command line is at fault (the CLI exits with 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::InvalidConfig { .. } | Error::NoCommand => true,
            Error::Spawn { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            Error::Wait { .. } | Error::Read { .. } | Error::GuardThread(_) => false,
        }
    }

    /// A one-line suggestion for fixing the error, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::InvalidConfig { .. } => Some(
                "energy settings take a finite, non-negative number (e.g. JOULECUT_CPU_WATTS_PER_CORE=10)"
                    .into(),
            ),
            Error::NoCommand => Some("usage: joulecut energy [--json] -- CMD [ARGS...]".into()),
            Error::Spawn { source, program } => match source.kind() {
                std::io::ErrorKind::NotFound => {
                    Some(format!("`{program}` was not found; check the name and your PATH"))
                }
                std::io::ErrorKind::PermissionDenied => {
                    Some(format!("`{program}` is not executable (chmod +x?)"))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(Error::NoCommand.is_bad_input());
        assert!(Error::NoCommand.hint().is_some());
        let nf = Error::Spawn {
            program: "nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(nf.is_bad_input());
        assert!(nf.hint().unwrap().contains("PATH"));
        let w = Error::Wait {
            program: "x".into(),
            source: std::io::Error::other("boom"),
        };
        assert!(!w.is_bad_input());
    }
}
