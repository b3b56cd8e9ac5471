//! Sync: the types of its API and, one job per file, the `Bucket` methods
//! that run it.
//!
//! - `plan`: the pure planner (one key's row and remote description in,
//!   one action out); `journal`: the change journal's format.
//! - `run`: a run, window by window (gather, plan, queue, record);
//!   `spill`: a full listing spilled to a temp file in key order;
//!   `journal_io`: reading and appending the journal on the remote.
//! - `execute`: one action against the remote and its recorded outcome.
//! - `fetch`: lazy pulls; `resolve`: settling conflicts.
//! - `rekey`: a new master key for the bucket and its remote; `rejoin`:
//!   another device's way back after it, carrying its own changes over.
//! - `connect`: attaching a remote (probe, layers, mode check);
//!   `settings`: sync settings and scopes; `status`: what the index says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::crypto::keyring::{meta_digest, Keyring};
use crate::error::Error;
use crate::remote::spec::Timeouts;
use crate::remote::{RemoteErrorKind, RemoteObject};
use crate::sync::plan::{Action, ConflictPolicy, ConflictReason, Direction, PullStrategy};

mod connect;
mod diff;
pub use diff::{DiffKind, Difference, Mismatch, RemoteCheck, Repair};
mod execute;
mod fetch;
pub mod journal;
mod journal_io;
mod meter;
pub mod plan;
pub mod rejoin;
pub mod rekey;
mod resolve;
mod run;
mod settings;
pub(crate) use settings::DESTROYED;
mod spill;
mod status;

/// A scope list that matches no key (no valid key starts with NUL).
const NOTHING_IN_SCOPE: &str = "\0";

/// Sync settings, stored in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// Which way changes flow.
    pub direction: Direction,
    /// Automatic conflict handling.
    pub conflict: ConflictPolicy,
    /// When remote objects are downloaded.
    pub strategy: PullStrategy,
    /// Uploads in flight at once.
    pub push_concurrency: usize,
    /// Downloads in flight at once.
    pub pull_concurrency: usize,
    /// Retries of a retryable failure before it is reported.
    pub max_retries: u32,
    /// The first retry backoff, in milliseconds (doubling, with full jitter, up to 10 s).
    pub retry_base_delay_ms: u64,
    /// Background sync period in seconds; 0: only after local writes and on request.
    pub interval_secs: u64,
    /// While runs find nothing to do, the background period doubles up to
    /// this many seconds (never below `interval_secs`); any change brings
    /// it back. An idle run costs one request (the journal listing).
    pub idle_interval_max_secs: u64,
    /// Quiet time after local writes before the background engine pushes, ms.
    pub debounce_ms: u64,
    /// How often a waiting process checks whether the leader is gone, ms
    /// (the takeover time after a leader dies).
    pub leader_poll_ms: u64,
    /// Most bytes of synced content kept locally before eviction.
    pub max_cache_size: u64,
    /// Which synced objects are evicted first.
    pub eviction: crate::bucket::cache::Eviction,
    /// Most deletes one run makes on either side before it stops and asks
    /// for `force`.
    pub max_delete: DeleteLimit,
    /// Seconds to wait for a connection to the remote.
    pub connect_timeout_secs: u64,
    /// Seconds a remote request may go without progress.
    pub io_timeout_secs: u64,
    /// Seconds between full reconciles (a whole listing, which finds what
    /// writers that are not ferry changed); in between, runs read the
    /// journal. 0: every run lists everything.
    pub full_sync_interval_secs: u64,
    /// Journal records kept on the remote: a replica away for longer (in
    /// records) does a full reconcile.
    pub journal_retain: u64,
    /// A remote whose last full listing took at most this many pages is
    /// cheap to list: a sync a person asks for (`SyncOptions::full_if_cheap`)
    /// lists it in full, and runs list it in full every
    /// `cheap_full_sync_interval_secs`. 0: never.
    pub cheap_listing_pages: u64,
    /// Seconds between full listings of a cheap remote.
    pub cheap_full_sync_interval_secs: u64,
    /// Keys planned at once: a sync holds about this many index rows and
    /// remote descriptions in memory (and the tasks in flight), whatever
    /// the bucket's size.
    pub window_keys: usize,
}

impl SyncConfig {
    /// The time limits on remote requests.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(self.connect_timeout_secs.max(1)),
            io: Duration::from_secs(self.io_timeout_secs.max(1)),
        }
    }
}

/// The safety rail on deletes: a count, or a share of the synced objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteLimit {
    /// At most this many deletes per side.
    Count(u64),
    /// At most this percentage of the synced objects per side, when more
    /// than 100 objects would go.
    Percent(u32),
}

impl Default for DeleteLimit {
    fn default() -> Self {
        DeleteLimit::Percent(50)
    }
}

impl DeleteLimit {
    /// Whether `count` deletes out of `synced` objects break the limit.
    pub fn exceeded(self, count: u64, synced: u64) -> bool {
        match self {
            DeleteLimit::Count(n) => count > n,
            DeleteLimit::Percent(p) => {
                count > 100 && u128::from(count) * 100 > u128::from(p) * u128::from(synced)
            }
        }
    }
}

impl std::fmt::Display for DeleteLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeleteLimit::Count(n) => write!(f, "{n}"),
            DeleteLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for DeleteLimit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let bad =
            || format!("{s:?} is not a delete limit: use a count (1000) or a percentage (50%)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(bad());
                }
                Ok(DeleteLimit::Percent(p))
            }
            None => s.parse().map(DeleteLimit::Count).map_err(|_| bad()),
        }
    }
}

impl serde::Serialize for DeleteLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            DeleteLimit::Count(n) => s.serialize_u64(*n),
            DeleteLimit::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeleteLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(DeleteLimit::Count(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            direction: Direction::Bidirectional,
            conflict: ConflictPolicy::Flag,
            strategy: PullStrategy::Eager,
            push_concurrency: 64,
            pull_concurrency: 32,
            max_retries: 5,
            retry_base_delay_ms: 100,
            interval_secs: 30,
            idle_interval_max_secs: 60,
            debounce_ms: 300,
            leader_poll_ms: 1000,
            max_cache_size: 1 << 30,
            eviction: crate::bucket::cache::Eviction::Lru,
            max_delete: DeleteLimit::default(),
            connect_timeout_secs: 10,
            io_timeout_secs: 60,
            full_sync_interval_secs: 3600,
            journal_retain: journal::RETAIN,
            cheap_listing_pages: 10,
            cheap_full_sync_interval_secs: 300,
            window_keys: run::WINDOW,
        }
    }
}

/// Which half of a sync to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Push and pull.
    #[default]
    Both,
    /// Only push local changes (and record agreements and conflicts).
    Push,
    /// Only pull remote changes (and record agreements and conflicts).
    Pull,
}

/// Options for one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// Which half to run.
    pub mode: SyncMode,
    /// Plan only: report what would happen, change nothing.
    pub dry_run: bool,
    /// Go on past the delete limit (`max_delete`) and a journal that moved
    /// back. Not past an empty listing: that takes one of the two explicit
    /// choices below.
    pub force: bool,
    /// Put this replica's copy back where the remote lost an object both
    /// sides had agreed on (a wiped, recreated or restored-from-backup
    /// remote): such keys are pushed again as new objects instead of being
    /// deleted here. The run lists the whole remote, and an empty listing
    /// does not stop it. Keys whose content is not on this device (evicted)
    /// cannot be put back and are reported as errors.
    pub restore_remote: bool,
    /// Take an empty listing where objects were synced as the remote's
    /// deletes: every synced object in scope is deleted here. The delete
    /// limit still applies unless `force` lifts it.
    pub accept_remote_deletes: bool,
    /// Retry keys whose last failure was parked (terminal, or backing off).
    pub retry: bool,
    /// This run's delete limit instead of the configured one.
    pub max_delete: Option<DeleteLimit>,
    /// A full reconcile: list the whole remote (finds what writers that
    /// are not ferry changed) instead of reading the journal.
    pub full: bool,
    /// List in full when the last full listing was cheap
    /// (`SyncConfig::cheap_listing_pages`): what a person asking for a sync
    /// expects (writes by other tools show up).
    pub full_if_cheap: bool,
    /// Only keys this filter includes take part in the run; the others
    /// are left as they are on both sides (unlike the scope filter, which
    /// makes them orphans). The journal is not marked read by a filtered
    /// run, so the next run still sees what it skipped.
    pub filter: Option<Arc<crate::filter::Filter>>,
}

/// A replica's place in one remote's journal (setting `journal`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct JournalState {
    /// The journal format these positions are in ([`journal::FORMAT`]; a
    /// state of another format is read as none: a full reconcile first).
    #[serde(default)]
    v: u32,
    /// `Some` once a full reconcile established the positions in
    /// `streams` (`None`: never; a full reconcile comes first).
    pos: Option<u64>,
    /// When the last full reconcile started, ms since the Unix epoch.
    last_full_ms: i64,
    /// The position in each device's stream (this device's own included:
    /// the last record it wrote).
    #[serde(default)]
    streams: std::collections::BTreeMap<String, StreamPos>,
    /// Listing pages the last full reconcile read (`None`: not known).
    #[serde(default)]
    full_pages: Option<u64>,
}

/// Setting: the keys the last sync found missing on the remote
/// ([`MissingOnRemote`]); absent when it found none.
const MISSING_ON_REMOTE: &str = "missing_on_remote";

/// Keys of [`MissingOnRemote`] kept in the setting (the count is exact).
const MISSING_KEYS_KEPT: usize = 1000;

/// What the last complete sync (not a dry run, not a filtered one) found
/// missing on the remote, unproven deleted (setting `missing_on_remote`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct MissingOnRemote {
    /// How many keys.
    count: u64,
    /// The first [`MISSING_KEYS_KEPT`] of them, in key order.
    keys: Vec<String>,
}

/// How far a replica read (or wrote) one device's stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StreamPos {
    /// The last record read.
    pos: u64,
    /// Its digest as read (`None`: not known without a request).
    #[serde(default)]
    digest: Option<[u8; 32]>,
}

/// Where an object's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Residency {
    /// The content is on this device.
    pub cached: bool,
    /// The object is pinned (always downloaded, never evicted).
    pub pinned: bool,
}

/// The content type a remote object is stored with locally: its own, or
/// the one its key's extension suggests.
fn remote_content_type(r: &RemoteObject) -> String {
    r.content_type
        .clone()
        .unwrap_or_else(|| crate::metadata::content_type_for(&r.key, None).unwrap_or_default())
}

/// Fills in `r.meta` for answers that carry metadata.
fn annotate(keys: Option<&Keyring>, r: &mut RemoteObject) {
    if r.has_metadata {
        r.meta = Some(meta_digest(keys, &remote_content_type(r), &r.metadata));
    }
}

/// A key that could not be synced, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncIssue {
    /// The key (or the remote name that is not a valid key).
    pub key: String,
    /// What went wrong.
    pub cause: String,
    /// Whether a later run may succeed without anyone changing anything.
    pub retryable: bool,
}

/// A key in conflict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConflictInfo {
    /// The key.
    pub key: String,
    /// Why, when known.
    pub reason: Option<ConflictReason>,
    /// The remote version seen when the conflict was found.
    pub remote_etag: Option<String>,
    /// True when the local side is a delete.
    pub deleted_locally: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Objects uploaded (or found already uploaded).
    pub pushed: u64,
    /// Objects downloaded or learned.
    pub pulled: u64,
    /// Remote objects deleted.
    pub deleted_remote: u64,
    /// Local objects deleted because the remote deleted them.
    pub deleted_local: u64,
    /// Keys left in conflict.
    pub conflicts: Vec<ConflictInfo>,
    /// Keys that failed, with their causes.
    pub errors: Vec<SyncIssue>,
    /// Keys of an encrypted bucket the remote no longer holds with no
    /// delete record sealed by the bucket's key proving a device deleted
    /// them (`plan::unproven_delete`): kept here and pushed again. Not
    /// failures (they are not in `errors`); `Status::missing_on_remote`
    /// counts them after the run.
    pub missing_on_remote: Vec<String>,
    /// Pushes not attempted: their key's last failure is parked (see
    /// `failures`; `SyncOptions::retry` tries them now).
    pub parked: u64,
    /// Whether the run listed the whole remote (else it read the journal).
    pub full: bool,
    /// With `dry_run`: the plan.
    pub planned: Vec<Action>,
    /// How long the run took.
    pub duration: Duration,
    /// When it completed.
    pub timestamp: Option<SystemTime>,
}

/// Counts of objects per state, and the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Objects (not counting local deletes).
    pub total: u64,
    /// In agreement with the remote.
    pub synced: u64,
    /// Local changes not pushed.
    pub dirty: u64,
    /// Remote changes not pulled (includes objects not downloaded).
    pub stale: u64,
    /// In conflict.
    pub conflicts: u64,
    /// Deleted locally, not yet remotely.
    pub pending_delete: u64,
    /// Outside the sync scope.
    pub orphan: u64,
    /// Bytes of content stored locally.
    pub cache_size: u64,
    /// Outbox operations whose last attempt failed.
    pub failed: u64,
    /// Objects the last sync found missing on the remote with nothing
    /// proving a device deleted them (encrypted buckets): kept and pushed
    /// again (`SyncReport::missing_on_remote`; `Bucket::missing_on_remote`
    /// lists them).
    pub missing_on_remote: u64,
    /// The remote URL, if one is set.
    pub remote: Option<String>,
    /// Whether the remote enforces conditional writes (after the probe).
    pub conditional_writes: Option<bool>,
    /// Whether this process runs the sync engine.
    pub leader: bool,
    /// The pid of the process that runs it, when one does.
    pub leader_pid: Option<u32>,
    /// Whether the bucket is encrypted end to end.
    pub encrypted: bool,
    /// Whether it is encrypted and locked in this process.
    pub locked: bool,
    /// When the last full listing of the remote started (what tools other
    /// than ferry wrote shows up at the next one).
    pub last_full_listing: Option<SystemTime>,
}

/// How to settle a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Make the remote match the local side.
    KeepLocal,
    /// Make the local side match the remote.
    KeepRemote,
    /// Keep the local copy under `{stem}.conflict.{timestamp}{.ext}` (the
    /// extension stays last) and pull the remote into `key`.
    KeepBoth,
}

/// How far a run is: actions finished of those planned, and the bytes of
/// their uploads and downloads moved of those planned. Totals grow as a
/// run plans window after window; a transfer that ends (done, failed or
/// found unneeded) counts whole, so `bytes_done` reaches `bytes_total`
/// when `done` reaches `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Actions finished.
    pub done: u64,
    /// Actions planned.
    pub total: u64,
    /// Bytes uploaded and downloaded so far (sent to the store, or read
    /// from it), of those planned.
    pub bytes_done: u64,
    /// Bytes of the planned uploads (local sizes) and downloads (listed
    /// sizes).
    pub bytes_total: u64,
}

/// A progress callback (the library does no terminal I/O; front ends draw).
/// Called from the tasks that move the bytes, about every 256 KiB and at
/// the end of each action.
pub type ProgressFn = Arc<dyn Fn(SyncProgress) + Send + Sync>;

/// Options for `get_with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetOptions {
    /// Fetch the remote's current version first.
    pub remote: bool,
}

/// What `resolve` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolveOutcome {
    /// With `KeepBoth`: where the local copy went.
    pub renamed_to: Option<String>,
}

/// The result of one action.
enum Done {
    Pushed,
    Pulled,
    DeletedRemote,
    DeletedLocal,
    Conflict(ConflictInfo),
    Nothing,
    Failed(SyncIssue),
    /// Failed because the remote gave no answer (see `RemoteError::is_no_answer`).
    NoAnswer(SyncIssue),
    /// Not tried: the remote had stopped answering.
    NotTried,
}

impl Done {
    /// Whether the action changed or recorded anything.
    fn did_something(&self) -> bool {
        !matches!(
            self,
            Done::Nothing | Done::Failed(_) | Done::NoAnswer(_) | Done::NotTried
        )
    }
}

fn issue(key: &str, err: &Error) -> SyncIssue {
    let retryable = match err {
        Error::Remote(e) => e.is_retryable() || e.kind == RemoteErrorKind::PreconditionFailed,
        Error::Body { .. } | Error::Io { .. } => true,
        _ => false,
    };
    SyncIssue {
        key: key.to_owned(),
        cause: err.to_string(),
        retryable,
    }
}

fn parse_reason(s: Option<String>) -> Option<ConflictReason> {
    s.and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
}
