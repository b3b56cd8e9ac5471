//! Events: what the bucket and its sync engine tell subscribers.
//!
//! A `tokio::sync::broadcast` channel: `Bucket::subscribe` returns a
//! receiver, dropping it unsubscribes. A subscriber that falls more than the
//! channel's capacity behind misses the oldest events (and is told so by the
//! receiver), it never slows the engine down.

use serde::Serialize;

/// A sync run's result, as carried by events and across processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncSummary {
    /// Objects uploaded.
    pub pushed: u64,
    /// Objects downloaded or learned.
    pub pulled: u64,
    /// Remote deletes done.
    pub deleted_remote: u64,
    /// Local deletes done.
    pub deleted_local: u64,
    /// Keys in conflict.
    pub conflicts: Vec<String>,
    /// Keys that failed, with causes.
    pub errors: Vec<(String, String)>,
    /// Duration in ms.
    pub duration_ms: u64,
    /// Completion, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A sync run started.
    SyncStarted,
    /// The bucket was unlocked in this process.
    Unlocked,
    /// The bucket was locked in this process.
    Locked,
    /// A sync run finished.
    SyncCompleted {
        /// Its result.
        result: SyncSummary,
    },
    /// A sync run failed as a whole.
    SyncFailed {
        /// Why.
        error: String,
    },
    /// An object was uploaded.
    ObjectPushed {
        /// Its key.
        key: String,
    },
    /// An object was downloaded (or learned).
    ObjectPulled {
        /// Its key.
        key: String,
    },
    /// An object is in conflict.
    ObjectConflict {
        /// Its key.
        key: String,
    },
    /// An object's local copy was evicted from the cache.
    ObjectEvicted {
        /// Its key.
        key: String,
    },
    /// The remote became unreachable.
    Offline,
    /// The remote is reachable again.
    Online,
    /// This process now runs the sync engine.
    LeaderPromoted,
    /// This process stopped running the sync engine.
    LeaderDemoted,
    /// The bucket was destroyed (by this or another process): its remote is
    /// detached and this process's engine has stopped; close the bucket.
    Destroyed,
}

/// Capacity of the event channel.
pub(crate) const EVENT_CAPACITY: usize = 4096;
