//! A run's progress: actions and bytes planned and done, told to the
//! caller's [`ProgressFn`]. The bytes come from the transfers themselves
//! (each upload or download reports through a [`TransferProgress`] the run
//! hands it), from whichever task or thread moves them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{ProgressFn, SyncProgress};
use crate::remote::TransferProgress;

/// Bytes between two reports of a transfer in flight.
const STEP: u64 = 256 << 10;

/// The counts of one run.
pub(super) struct Meter {
    sink: Option<ProgressFn>,
    done: AtomicU64,
    total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
}

impl Meter {
    /// A meter telling `sink` (none: counts nothing anyone reads).
    pub(super) fn new(sink: Option<ProgressFn>) -> Arc<Meter> {
        Arc::new(Meter {
            sink,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
        })
    }

    /// True when someone listens (sizes are worth looking up).
    pub(super) fn is_told(&self) -> bool {
        self.sink.is_some()
    }

    /// Tells the sink where the run is.
    pub(super) fn tell(&self) {
        if let Some(sink) = &self.sink {
            sink(SyncProgress {
                done: self.done.load(Ordering::SeqCst),
                total: self.total.load(Ordering::SeqCst),
                bytes_done: self.bytes_done.load(Ordering::SeqCst),
                bytes_total: self.bytes_total.load(Ordering::SeqCst),
            });
        }
    }

    /// `n` more actions planned.
    pub(super) fn plan(&self, n: u64) {
        self.total.fetch_add(n, Ordering::SeqCst);
    }

    /// One more action finished.
    pub(super) fn finished(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
        self.tell();
    }

    /// A transfer of `size` bytes planned (none for an action that moves no
    /// content: `size` 0).
    pub(super) fn transfer(self: &Arc<Self>, size: u64) -> Transfer {
        self.bytes_total.fetch_add(size, Ordering::SeqCst);
        Transfer {
            meter: self.clone(),
            size,
            counted: Arc::new(AtomicU64::new(0)),
        }
    }

    fn add_bytes(&self, n: u64) {
        let before = self.bytes_done.fetch_add(n, Ordering::SeqCst);
        if before / STEP != (before + n) / STEP {
            self.tell();
        }
    }
}

/// One planned upload or download and the bytes of it counted so far.
pub(super) struct Transfer {
    meter: Arc<Meter>,
    size: u64,
    /// The most the transfer reported in any attempt, at most `size`.
    counted: Arc<AtomicU64>,
}

impl Transfer {
    /// What the service reports to: the largest count of any attempt (a
    /// retry starts from 0), up to the planned size (an encrypted body is a
    /// little larger than its plaintext; a changed file may differ), is
    /// added to the run's bytes.
    pub(super) fn progress(&self) -> TransferProgress {
        if self.size == 0 || !self.meter.is_told() {
            return TransferProgress::none();
        }
        let meter = self.meter.clone();
        let counted = self.counted.clone();
        let size = self.size;
        TransferProgress::new(move |moved| {
            let now = moved.min(size);
            let before = counted.fetch_max(now, Ordering::SeqCst);
            if now > before {
                meter.add_bytes(now - before);
            }
        })
    }

    /// The action ended (whatever its outcome): the rest of its planned
    /// bytes count as done, as the action counts as done.
    pub(super) fn end(self) {
        let before = self.counted.swap(self.size, Ordering::SeqCst);
        if self.size > before {
            self.meter
                .bytes_done
                .fetch_add(self.size - before, Ordering::SeqCst);
        }
    }
}
