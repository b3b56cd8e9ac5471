//! Wall-clock time, injected where decisions read it.
//!
//! The bucket's clock stamps what it writes (modification times, outbox and
//! request times, journal record times), decides when a failed key is
//! retried (its backoff) and names conflict copies. The memory remote stamps
//! its objects with its own clock. Tests set a [`ManualClock`] to make time
//! jump without sleeping; everything else uses [`SystemClock`].

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The same instant as a `SystemTime`.
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(self.now_ms().max(0) as u64)
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `ms` since the Unix epoch.
    pub fn at(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock a bucket and its writer thread share; replaceable while open.
#[derive(Debug, Clone)]
pub(crate) struct SharedClock(Arc<RwLock<Arc<dyn Clock>>>);

impl Default for SharedClock {
    fn default() -> Self {
        SharedClock(Arc::new(RwLock::new(Arc::new(SystemClock))))
    }
}

impl SharedClock {
    pub(crate) fn set(&self, clock: Arc<dyn Clock>) {
        if let Ok(mut c) = self.0.write() {
            *c = clock;
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        match self.0.read() {
            Ok(c) => c.now_ms(),
            Err(_) => SystemClock.now_ms(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        match self.0.read() {
            Ok(c) => c.now(),
            Err(_) => SystemTime::now(),
        }
    }
}
