//! Metering a child process: [`Meter::run_command`] waits with `wait4` so the estimate uses the
//! child's own CPU time and peak RSS, and ignores SIGINT/SIGQUIT meanwhile (like `time`) so Ctrl-C
//! stops the child but the measurement is still reported.

use std::ffi::OsStr;
use std::process::Command;

use serde::Serialize;

use super::Meter;
use super::edges::Snapshot;
use crate::error::{Error, Result};
use crate::estimate;
use crate::measurement::Measurement;

impl Meter {
    /// Runs a command to completion and meters it: measured domains over its wall time, the
    /// estimate from the child's own CPU time and peak RSS (`wait4` rusage). SIGINT and SIGQUIT
    /// are ignored by this process while the child runs (like `time`), so Ctrl-C stops the child and
    /// the measurement is still reported.
    pub fn run_command(&self, label: &str, cmd: &mut Command) -> Result<CommandOutcome> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let a = self.edge();
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = libc::pid_t::try_from(child.id()).map_err(|_| Error::Wait {
            program: program.clone(),
            source: std::io::Error::other("pid out of range"),
        })?;
        let _ignore = IgnoreInterrupts::new();
        // SAFETY: all-zero is a valid rusage / status.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: valid pointers to locals; pid is our own un-reaped child.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Wait {
                    program,
                    source: err,
                });
            }
        }
        // The child is reaped; std's handle only closes its pipes now.
        drop(child);
        Ok(self.finish_command(label, &a, &ru, status))
    }

    /// The outcome of a reaped child: measured domains since `a`, the estimate from its `wait4`
    /// rusage (CPU time and peak RSS), and its status.
    pub(super) fn finish_command(
        &self,
        label: &str,
        a: &Snapshot,
        ru: &libc::rusage,
        status: libc::c_int,
    ) -> CommandOutcome {
        let b = self.edge();
        let wall = b.at.saturating_duration_since(a.at);
        let cpu = estimate::rusage_cpu(ru);
        let mut domains = self.measured_domains(a, &b, wall);
        self.estimated_domains(cpu, estimate::rusage_peak_rss(ru), true, wall, &mut domains);
        CommandOutcome {
            status: ChildStatus::decode(status),
            measurement: self.assemble(label.to_string(), wall, cpu, domains),
        }
    }

    /// Convenience: [`Meter::run_command`] for a program and its arguments.
    pub fn run_argv<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<CommandOutcome> {
        let (program, args) = argv.split_first().ok_or(Error::NoCommand)?;
        let label = program.as_ref().to_string_lossy().into_owned();
        self.run_command(&label, Command::new(program).args(args))
    }
}

/// Ignores SIGINT/SIGQUIT for its lifetime (restores the previous handlers on drop).
pub(super) struct IgnoreInterrupts {
    prev: [(libc::c_int, libc::sighandler_t); 2],
}

impl IgnoreInterrupts {
    pub(super) fn new() -> Self {
        let mut prev = [
            (libc::SIGINT, libc::SIG_DFL),
            (libc::SIGQUIT, libc::SIG_DFL),
        ];
        for (sig, old) in &mut prev {
            // SAFETY: installing SIG_IGN is async-signal-safe and has no preconditions.
            *old = unsafe { libc::signal(*sig, libc::SIG_IGN) };
        }
        IgnoreInterrupts { prev }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (sig, old) in self.prev {
            if old != libc::SIG_ERR {
                // SAFETY: restores the handler that was installed before.
                unsafe { libc::signal(sig, old) };
            }
        }
    }
}

/// How a metered command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ChildStatus {
    /// A `wait4` status.
    fn decode(status: libc::c_int) -> ChildStatus {
        if libc::WIFEXITED(status) {
            ChildStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            ChildStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ChildStatus {
                code: None,
                signal: None,
            }
        }
    }

    /// The code a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => (128 + (s & 0x7f)) as u8,
            _ => 1,
        }
    }
}

/// A metered command's exit status and energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    /// How it ended.
    pub status: ChildStatus,
    /// Its energy.
    pub measurement: Measurement,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_codes() {
        assert_eq!(
            ChildStatus {
                code: Some(3),
                signal: None
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ChildStatus {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
    }
}
