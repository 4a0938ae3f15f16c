//! Metering a child process interval by interval, like `perf stat -I`:
//! [`Meter::run_command_every`] reports a [`Measurement`] for each period while the command runs
//! (measured counters read at the interval's edges; the estimate from the child's CPU time and
//! resident set read from `/proc/PID`), then the whole command's measurement exactly as
//! [`Meter::run_command`] gives it (from `wait4`).
//!
//! The last interval ends when the child does (it is shorter than the period); its CPU time is
//! the child's total from `wait4` minus what the earlier intervals saw, so the intervals' CPU
//! joules add up to the total's. `/proc/PID` counts the child and the descendants it has waited
//! for, `wait4` every descendant reaped by then, so a command that leaves grandchildren running
//! can show less in its intervals than in its total.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Meter;
use super::child::{CommandOutcome, IgnoreInterrupts};
use crate::error::{Error, Result};
use crate::estimate;
use crate::measurement::Measurement;

/// One interval of a metered command.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// 0-based.
    pub index: usize,
    /// When it started, after the command did.
    pub start: Duration,
    /// Its energy (`wall_seconds` is its length; the last one is shorter than the period).
    pub measurement: Measurement,
}

/// CPU time (the child and its waited-for children) and resident set of a running process.
fn proc_usage(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses: state is field 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = (11..=14)
        .map(|i| rest.get(i).and_then(|t| t.parse::<u64>().ok()))
        .sum::<Option<u64>>()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    let cpu = Duration::from_micros(ticks.saturating_mul(1_000_000) / hz);
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: as above.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    Some((cpu, pages.saturating_mul(page)))
}

impl Meter {
    /// [`Meter::run_command`], calling `on_interval` every `period` while the command runs and
    /// once more for the part after the last full period. Returns the whole command's outcome.
    pub fn run_command_every(
        &self,
        label: &str,
        cmd: &mut Command,
        period: Duration,
        on_interval: &mut dyn FnMut(&Interval),
    ) -> Result<CommandOutcome> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if period.is_zero() {
            return Err(Error::Wait {
                program,
                source: std::io::Error::other("interval period must be positive"),
            });
        }
        let start = self.edge();
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        let id = child.id();
        let pid = libc::pid_t::try_from(id).map_err(|_| Error::Wait {
            program: program.clone(),
            source: std::io::Error::other("pid out of range"),
        })?;
        let _ignore = IgnoreInterrupts::new();
        // A thread blocks in wait4 so this one can wake at each interval's edge.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: all-zero is a valid rusage / status.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let mut status: libc::c_int = 0;
            let r = loop {
                // SAFETY: valid pointers to locals; pid is our own un-reaped child.
                let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
                if r == pid {
                    break Ok((status, ru));
                }
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    break Err(err);
                }
            };
            let _ = tx.send(r);
        });
        let mut edge = start.clone();
        let (mut cpu_seen, mut rss) = (Duration::ZERO, 0u64);
        let mut index = 0;
        let mut next = Instant::now() + period;
        let (status, ru) = loop {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(done) => {
                    break done.map_err(|source| Error::Wait {
                        program: program.clone(),
                        source,
                    })?;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let b = self.edge();
                    if let Some((cpu, r)) = proc_usage(id) {
                        rss = r;
                        let m = self.child_interval(label, index, &edge, &b, cpu, cpu_seen, rss);
                        cpu_seen = cpu_seen.max(cpu);
                        on_interval(&Interval {
                            index,
                            start: edge.at.saturating_duration_since(start.at),
                            measurement: m,
                        });
                        index += 1;
                        edge = b;
                    }
                    // else: the child just exited; its status is about to arrive
                    next += period;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Wait {
                        program,
                        source: std::io::Error::other("the waiting thread ended"),
                    });
                }
            }
        };
        drop(child);
        let outcome = self.finish_command(label, &start, &ru, status);
        // The tail: from the last edge to the exit, with the CPU time wait4 saw beyond /proc's.
        let b = self.edge();
        let total_cpu = estimate::rusage_cpu(&ru);
        let m = self.child_interval(label, index, &edge, &b, total_cpu, cpu_seen, rss);
        on_interval(&Interval {
            index,
            start: edge.at.saturating_duration_since(start.at),
            measurement: m,
        });
        Ok(outcome)
    }

    /// One interval between edges `a` and `b` in which the child's CPU time went from `cpu_before`
    /// to `cpu_now` with `rss` resident.
    #[allow(clippy::too_many_arguments)]
    fn child_interval(
        &self,
        label: &str,
        index: usize,
        a: &super::edges::Snapshot,
        b: &super::edges::Snapshot,
        cpu_now: Duration,
        cpu_before: Duration,
        rss: u64,
    ) -> Measurement {
        let wall = b.at.saturating_duration_since(a.at);
        let cpu = cpu_now.saturating_sub(cpu_before);
        let mut domains = self.measured_domains(a, b, wall);
        self.estimated_domains(cpu, rss, false, wall, &mut domains);
        self.assemble(format!("{label}/interval-{index}"), wall, cpu, domains)
    }
}
