//! The wrap guard: a background thread that reads wrapping counters (powercap `energy_uj`) often
//! enough that no wrap between two window edges goes unseen.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::probe::Probe;

/// Background thread that reads wrapping counters often enough that no wrap goes unseen.
#[derive(Debug)]
pub(super) struct WrapGuard {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    pub(super) period: Duration,
}

impl Drop for WrapGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub(super) fn start_guard(probes: Vec<Arc<dyn Probe>>, period: Duration) -> Result<WrapGuard> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("joulecut-wrap-guard".into())
        .spawn(move || {
            let mut scratch = Vec::new();
            // Any message or a disconnect (the meter dropped) stops the guard.
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                for p in &probes {
                    scratch.clear();
                    p.read(&mut scratch);
                }
            }
        })
        .map_err(Error::GuardThread)?;
    Ok(WrapGuard {
        stop: Some(tx),
        handle: Some(handle),
        period,
    })
}
