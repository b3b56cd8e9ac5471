//! The sync executor: gathers the planner's inputs, runs its actions
//! against the remote with bounded concurrency, and records each outcome
//! through the index writer. Also the sync-facing `Bucket` API: remotes,
//! settings, scopes, status, conflicts and their resolution, lazy fetches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::OptionalExtension;

use crate::bucket::Bucket;
use crate::crypto::keyring::{meta_digest, Keyring};
use crate::error::{Error, Result};
use crate::hash::{ContentHash, MetaDigest};
use crate::key::validate_key;
use crate::metadata::Metadata;
use crate::remote::emulated::{probe, Emulated, ProbeResult};
use crate::remote::encrypted::Encrypted;
use crate::remote::retry::{RetryPolicy, Retrying};
use crate::remote::spec::{Credentials, RemoteSpec, Timeouts};
use crate::remote::{
    Precondition, PutRequest, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject, SharedRemote,
};
use crate::state::SyncState;
use crate::store::index;
use crate::store::record::{Pulled, SyncRecord};
use crate::store::writer::{Outcome, WriteOp};
use crate::sync::plan::{
    Action, ConflictPolicy, ConflictReason, Direction, Expect, LocalEntry, PullStrategy,
};

pub mod journal;
pub mod plan;
mod run;
mod spill;

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
            debounce_ms: 300,
            leader_poll_ms: 1000,
            max_cache_size: 1 << 30,
            eviction: crate::bucket::cache::Eviction::Lru,
            max_delete: DeleteLimit::default(),
            connect_timeout_secs: 10,
            io_timeout_secs: 60,
            full_sync_interval_secs: 3600,
            journal_retain: journal::RETAIN,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// Which half to run.
    pub mode: SyncMode,
    /// Plan only: report what would happen, change nothing.
    pub dry_run: bool,
    /// Go on past the safety rails (mass deletes, a suspiciously empty listing).
    pub force: bool,
    /// Retry keys whose last failure was parked (terminal, or backing off).
    pub retry: bool,
    /// This run's delete limit instead of the configured one.
    pub max_delete: Option<DeleteLimit>,
    /// A full reconcile: list the whole remote (finds what writers that
    /// are not ferry changed) instead of reading the journal.
    pub full: bool,
}

/// A replica's place in one remote's journal (setting `journal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct JournalState {
    /// The last record read (`None`: never; a full reconcile comes first).
    pos: Option<u64>,
    /// When the last full reconcile started, ms since the Unix epoch.
    last_full_ms: i64,
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
}

/// How to settle a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Make the remote match the local side.
    KeepLocal,
    /// Make the local side match the remote.
    KeepRemote,
    /// Keep the local copy under `{key}.conflict.{timestamp}` and pull the remote into `key`.
    KeepBoth,
}

/// How far a run is: actions finished of those planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Actions finished.
    pub done: u64,
    /// Actions planned.
    pub total: u64,
}

/// A progress callback (the library does no terminal I/O; front ends draw).
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

impl Bucket {
    // ----- settings -------------------------------------------------------

    pub(crate) fn setting_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>> {
        let raw = self.with_reader(|c| index::setting(c, name))?;
        raw.map(|v| {
            serde_json::from_str(&v).map_err(|e| Error::IndexData(format!("setting {name}: {e}")))
        })
        .transpose()
    }

    pub(crate) async fn set_setting_json<T: serde::Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::IndexData(format!("setting {name}: {e}")))?;
        let path = self.inner.index_path.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = index::open(&path, false)?;
            index::set_setting(&conn, &name, &text)
        })
        .await
        .map_err(|e| Error::task("settings task", e))?
    }

    /// The recorded remote, if any.
    pub fn remote_spec(&self) -> Result<Option<RemoteSpec>> {
        self.setting_json("remote")
    }

    /// Records the remote. The same location spelled differently (see
    /// [`RemoteSpec::same_location`]) keeps every agreement and tombstone.
    /// A different location forgets what was agreed with the old one: every
    /// object is compared afresh (by version) on the next sync, and local
    /// deletes not yet pushed are dropped (the new remote never had them).
    pub async fn set_remote(&self, spec: RemoteSpec) -> Result<()> {
        spec.kind()?;
        let previous = self.remote_spec()?;
        self.set_setting_json("remote", &spec).await?;
        if previous.as_ref().is_some_and(|p| !p.same_location(&spec)) {
            let path = self.inner.index_path.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let conn = index::open(&path, false)?;
                conn.execute(
                    "UPDATE objects SET base_etag = NULL, base_hash = NULL, \
                     state = CASE WHEN present = 1 THEN 'dirty' ELSE state END",
                    [],
                )?;
                conn.execute("DELETE FROM objects WHERE present = 0", [])?;
                Ok(())
            })
            .await
            .map_err(|e| Error::task("settings task", e))??;
        }
        if let Ok(mut r) = self.inner.remote.write() {
            *r = None;
        }
        Ok(())
    }

    /// The sync settings.
    pub fn sync_config(&self) -> Result<SyncConfig> {
        Ok(self.setting_json("sync")?.unwrap_or_default())
    }

    /// Changes the sync settings (takes effect at the next connect for `max_retries`).
    pub async fn set_sync_config(&self, config: SyncConfig) -> Result<()> {
        self.set_setting_json("sync", &config).await
    }

    /// The prefixes that sync (`[""]`, the default, means everything).
    pub fn scopes(&self) -> Result<Vec<String>> {
        Ok(self
            .setting_json("scopes")?
            .unwrap_or_else(|| vec![String::new()]))
    }

    fn effective_scopes(&self) -> Result<Vec<String>> {
        let scopes = self.scopes()?;
        Ok(if scopes.is_empty() {
            vec![NOTHING_IN_SCOPE.to_owned()]
        } else {
            scopes
        })
    }

    /// Adds a prefix to the sync scope and, when connected, pulls it at once.
    /// Adding a prefix when everything syncs narrows the scope to that prefix.
    pub async fn add_scope(&self, prefix: &str) -> Result<SyncReport> {
        let mut scopes = self.scopes()?;
        scopes.retain(|s| !s.is_empty());
        if !scopes.iter().any(|s| s == prefix) {
            scopes.push(prefix.to_owned());
        }
        scopes.sort();
        self.set_setting_json("scopes", &scopes).await?;
        if self.connected_remote().is_ok() {
            // The new prefix's objects predate what the journal tells: list them.
            self.sync(SyncOptions {
                mode: SyncMode::Pull,
                full: true,
                ..Default::default()
            })
            .await
        } else {
            Ok(SyncReport::default())
        }
    }

    /// Removes a prefix from the sync scope; its local objects stay, as orphans.
    pub async fn remove_scope(&self, prefix: &str) -> Result<()> {
        let mut scopes = self.scopes()?;
        scopes.retain(|s| s != prefix);
        self.set_setting_json("scopes", &scopes).await?;
        let effective = self.effective_scopes()?;
        // The removed prefix's rows, a window at a time.
        let mut after = prefix.to_owned();
        loop {
            let page = self.read_page("1 = 1", Some(&after), run::WINDOW)?;
            let Some(last) = page.last().map(|l| l.key.clone()) else {
                break;
            };
            for l in page {
                if !l.key.starts_with(prefix) {
                    return Ok(());
                }
                if l.present && l.state != SyncState::Orphan && !plan::in_scope(&effective, &l.key)
                {
                    self.record(SyncRecord::State {
                        key: l.key,
                        state: SyncState::Orphan,
                    })
                    .await?;
                }
            }
            after = last;
        }
        Ok(())
    }

    // ----- connecting -----------------------------------------------------

    /// Builds the recorded remote with `creds` and connects to it.
    pub async fn connect(&self, creds: &Credentials) -> Result<ProbeResult> {
        let spec = self.remote_spec()?.ok_or(Error::NoRemote)?;
        let remote = spec.build_with(creds, self.sync_config()?.timeouts())?;
        self.attach(remote).await
    }

    /// Connects a remote (any implementation). On first contact with an
    /// endpoint, probes whether it enforces conditional writes and records
    /// the answer; a store that does not gets them emulated by HEAD.
    ///
    /// The remote's encryption mode must match the bucket's (an encrypted
    /// bucket claims an empty remote by writing its key file); an encrypted
    /// bucket must be unlocked.
    pub async fn attach(&self, remote: SharedRemote) -> Result<ProbeResult> {
        let keys = self.keyring()?;
        self.check_remote_mode(remote.as_ref()).await?;
        let endpoint = remote.endpoint();
        let mut probes: BTreeMap<String, ProbeResult> =
            self.setting_json("probes")?.unwrap_or_default();
        let config = self.sync_config()?;
        let retry = RetryPolicy {
            max_retries: config.max_retries,
            base_delay: Duration::from_millis(config.retry_base_delay_ms),
            ..RetryPolicy::default()
        };
        let found = match probes.get(&endpoint) {
            Some(p) => *p,
            None => {
                let retrying = Retrying::new(remote.clone(), retry);
                let p = probe(&retrying, self.device_id()).await?;
                probes.insert(endpoint, p);
                self.set_setting_json("probes", &probes).await?;
                p
            }
        };
        let mut layered = remote;
        if !found.conditional_put || !found.conditional_delete {
            layered = Arc::new(Emulated::new(
                layered,
                !found.conditional_put,
                !found.conditional_delete,
            ));
        }
        let base: SharedRemote = Arc::new(Retrying::new(layered.clone(), retry));
        let full: SharedRemote = match keys {
            Some(k) => Arc::new(Retrying::new(Arc::new(Encrypted::new(layered, k)), retry)),
            None => base.clone(),
        };
        if let Ok(mut r) = self.inner.remote.write() {
            *r = Some(full);
        }
        if let Ok(mut r) = self.inner.base_remote.write() {
            *r = Some(base);
        }
        Ok(found)
    }

    /// The connected remote without the encryption layer (for `.ferry/`).
    pub(crate) fn raw_remote(&self) -> Result<SharedRemote> {
        self.inner
            .base_remote
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or(Error::NoRemote)
    }

    fn connected_remote(&self) -> Result<SharedRemote> {
        self.inner
            .remote
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or(Error::NoRemote)
    }

    // ----- reading the index ------------------------------------------------

    /// At most `limit` rows matching `cond` with keys after `after`, in key
    /// order (every key sorts after the empty string).
    fn read_page(&self, cond: &str, after: Option<&str>, limit: usize) -> Result<Vec<LocalEntry>> {
        self.read_rows(
            &format!("WHERE ({cond}) AND key > ?1 ORDER BY key LIMIT {limit}"),
            Some(after.unwrap_or("")),
        )
    }

    /// Objects synced with the remote (they have a base), under `scopes`.
    fn synced_count(&self, scopes: &[String]) -> Result<u64> {
        let mut prefixes: Vec<&String> = scopes.iter().collect();
        prefixes.sort();
        prefixes.dedup_by(|b, a| b.starts_with(a.as_str()));
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT COUNT(*) FROM objects WHERE base_etag IS NOT NULL \
                 AND substr(key, 1, length(?1)) = ?1",
            )?;
            let mut total = 0u64;
            for prefix in prefixes {
                total += stmt.query_row([prefix], |r| r.get::<_, i64>(0))? as u64;
            }
            Ok(total)
        })
    }

    fn read_rows(&self, filter: &str, key: Option<&str>) -> Result<Vec<LocalEntry>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT key, present, hash, cached, pinned, base_etag, base_hash, state, modified_ms, \
                 meta_digest, base_meta, base_modified_ms, pushed_base \
                 FROM objects {filter}"
            ))?;
            let rows = stmt.query_map([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    (
                        r.get::<_, Option<Vec<u8>>>(9)?,
                        r.get::<_, Option<Vec<u8>>>(10)?,
                        r.get::<_, Option<i64>>(11)?,
                        r.get::<_, Option<String>>(12)?,
                    ),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, present, hash, cached, pinned, base_etag, base_hash, state, modified_ms, v4) = row?;
                let (meta, base_meta, base_modified_ms, pushed_base) = v4;
                let bad = || Error::IndexData(format!("object {key:?} has a malformed row"));
                out.push(LocalEntry {
                    hash: ContentHash::from_slice(&hash).ok_or_else(bad)?,
                    base_hash: base_hash.as_deref().and_then(ContentHash::from_slice),
                    state: state.parse().map_err(|_| bad())?,
                    key,
                    present,
                    cached,
                    pinned,
                    base_etag,
                    modified_ms,
                    meta: meta.as_deref().and_then(MetaDigest::from_slice),
                    base_meta: base_meta.as_deref().and_then(MetaDigest::from_slice),
                    base_modified_ms,
                    pushed_base,
                });
            }
            Ok(out)
        })
    }

    /// Why the remote cannot hold `key` exactly (it would be refused at
    /// every push), or `None`: asks the connected remote's rules, else the
    /// recorded remote's. Makes no request.
    pub fn remote_refuses(&self, key: &str) -> Result<Option<String>> {
        if let Ok(remote) = self.connected_remote() {
            return Ok(remote.refuses(key));
        }
        Ok(self.remote_spec()?.and_then(|s| s.refuses(key)))
    }

    /// Whether `key`'s content is on this device, and whether it is pinned.
    pub fn residency(&self, key: &str) -> Result<Residency> {
        validate_key(key)?;
        let l = self.local_entry(key)?.filter(|l| l.present);
        let l = l.ok_or_else(|| Error::NotFound {
            key: key.to_owned(),
        })?;
        Ok(Residency {
            cached: l.cached,
            pinned: l.pinned,
        })
    }

    /// The row's metadata digest (what a record made against it expects).
    pub(crate) fn local_meta_digest(&self, key: &str) -> Result<Option<MetaDigest>> {
        Ok(self.local_entry(key)?.and_then(|l| l.meta))
    }

    fn local_entry(&self, key: &str) -> Result<Option<LocalEntry>> {
        // `key = ?1` alone: the primary key finds the row (an `OR` would scan).
        Ok(self.read_rows("WHERE key = ?1", Some(key))?.pop())
    }

    pub(crate) async fn record_sync(&self, rec: SyncRecord) -> Result<bool> {
        self.record(rec).await
    }

    async fn record(&self, rec: SyncRecord) -> Result<bool> {
        match self.inner.writer.submit(WriteOp::Record(rec)).await? {
            Outcome::Recorded(applied) => Ok(applied),
            _ => Err(Error::IndexData(
                "writer answered a record with something else".into(),
            )),
        }
    }

    /// Pins objects: they are always downloaded (under every pull strategy).
    /// Returns how many of the keys exist.
    pub async fn pin(&self, keys: &[&str]) -> Result<usize> {
        self.set_pinned(keys, true).await
    }

    /// Unpins objects. Returns how many of the keys exist.
    pub async fn unpin(&self, keys: &[&str]) -> Result<usize> {
        self.set_pinned(keys, false).await
    }

    async fn set_pinned(&self, keys: &[&str], pinned: bool) -> Result<usize> {
        let mut found = 0;
        for key in keys {
            validate_key(key)?;
            if self
                .record(SyncRecord::Pinned {
                    key: (*key).to_owned(),
                    pinned,
                })
                .await?
            {
                found += 1;
            }
        }
        Ok(found)
    }

    /// Counts objects per state and the local cache.
    pub async fn status(&self) -> Result<Status> {
        let mut status = self.with_reader(|c| {
            let mut s = Status::default();
            let mut stmt = c.prepare_cached(
                "SELECT state, present, COUNT(*), COALESCE(SUM(CASE WHEN cached = 1 AND present = 1 THEN size ELSE 0 END), 0) \
                 FROM objects GROUP BY state, present",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })?;
            for row in rows {
                let (state, present, count, bytes) = row?;
                let count = count as u64;
                s.cache_size += bytes as u64;
                if present {
                    s.total += count;
                }
                match state.parse::<SyncState>() {
                    Ok(SyncState::Synced) => s.synced += count,
                    Ok(SyncState::Dirty) => s.dirty += count,
                    Ok(SyncState::Stale) => s.stale += count,
                    Ok(SyncState::Conflict) => s.conflicts += count,
                    Ok(SyncState::PendingDelete) => s.pending_delete += count,
                    Ok(SyncState::Orphan) => s.orphan += count,
                    Err(_) => {}
                }
            }
            s.failed = c
                .prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64;
            Ok(s)
        })?;
        status.remote = self.remote_spec()?.map(|s| s.url);
        status.leader = self.is_leader();
        status.leader_pid = self.leader_pid();
        status.encrypted = self.is_encrypted();
        status.locked = self.is_locked();
        let probes: BTreeMap<String, ProbeResult> =
            self.setting_json("probes")?.unwrap_or_default();
        status.conditional_writes = self
            .connected_remote()
            .ok()
            .and_then(|r| probes.get(&r.endpoint()).map(|p| p.conditional_put));
        Ok(status)
    }

    /// Every key in conflict.
    pub async fn conflicts(&self) -> Result<Vec<ConflictInfo>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, conflict, remote_etag, present FROM objects WHERE state = 'conflict' ORDER BY key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, bool>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, reason, remote_etag, present) = row?;
                out.push(ConflictInfo { key, reason: parse_reason(reason), remote_etag, deleted_locally: !present });
            }
            Ok(out)
        })
    }

    /// Outbox entries whose last attempt failed: key and error.
    pub async fn failures(&self) -> Result<Vec<SyncIssue>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, COALESCE(last_error, '') FROM outbox WHERE state = 'failed' ORDER BY key",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (key, cause) = row?;
                out.push(SyncIssue { key, cause, retryable: true });
            }
            Ok(out)
        })
    }

    // ----- running a sync ----------------------------------------------------

    /// Pushes local changes and pulls remote ones.
    pub async fn sync(&self, opts: SyncOptions) -> Result<SyncReport> {
        self.sync_with_progress(opts, None).await
    }

    /// Where this replica is in `endpoint`'s journal.
    fn journal_state(&self, endpoint: &str) -> Result<JournalState> {
        let all: BTreeMap<String, JournalState> = self.setting_json("journal")?.unwrap_or_default();
        Ok(all.get(endpoint).copied().unwrap_or_default())
    }

    async fn set_journal_state(&self, endpoint: &str, state: JournalState) -> Result<()> {
        let mut all: BTreeMap<String, JournalState> =
            self.setting_json("journal")?.unwrap_or_default();
        if all.get(endpoint) == Some(&state) {
            return Ok(());
        }
        all.insert(endpoint.to_owned(), state);
        self.set_setting_json("journal", &all).await
    }

    /// The sequence numbers of the journal's records (one LIST).
    async fn list_records(&self, raw: &SharedRemote) -> Result<Vec<u64>> {
        Ok(raw
            .list(journal::RECORDS)
            .await?
            .iter()
            .filter_map(|o| journal::parse_name(&o.key))
            .collect())
    }

    /// Reads one journal record.
    async fn read_record(
        &self,
        raw: &SharedRemote,
        seq: u64,
        keys: Option<&Keyring>,
    ) -> Result<journal::Record> {
        use tokio::io::AsyncReadExt;
        let name = journal::record_name(seq);
        let (_, reader) = raw.get(&name).await?;
        let mut bytes = Vec::new();
        reader
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| {
                Error::Remote(RemoteError::new(
                    RemoteErrorKind::Retryable,
                    raw.endpoint(),
                    format!("reading {name}: {e}"),
                ))
            })?;
        journal::decode(&bytes, keys).map_err(|e| {
            Error::Remote(RemoteError::new(
                RemoteErrorKind::Integrity,
                raw.endpoint(),
                format!("{name}: {e}"),
            ))
        })
    }

    /// Appends what this replica wrote to the remote and has not journaled
    /// yet (`journal_pending`, filled in the same transactions that record
    /// the writes) as records after `newest`, each with `If-None-Match: *`
    /// (a number another writer took is skipped). Compacts the journal
    /// when it grew past twice `retain` records. Returns the
    /// first and last sequence numbers written.
    async fn append_journal(
        &self,
        raw: &SharedRemote,
        keys: Option<&Keyring>,
        newest: u64,
        retain: u64,
    ) -> Result<Option<(u64, u64)>> {
        // Read a record's worth of entries at a time, in key order.
        let page = |after: &str| -> Result<Vec<journal::Entry>> {
            self.with_reader(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT key, op, etag, hash FROM journal_pending WHERE key > ?1 \
                     ORDER BY key LIMIT ?2",
                )?;
                let rows =
                    stmt.query_map(rusqlite::params![after, journal::MAX_ENTRIES as i64], |r| {
                        Ok(journal::Entry {
                            key: r.get(0)?,
                            op: if r.get::<_, String>(1)? == "delete" {
                                journal::Op::Delete
                            } else {
                                journal::Op::Put
                            },
                            etag: r.get(2)?,
                            hash: r.get::<_, Option<Vec<u8>>>(3)?.map(hex::encode),
                        })
                    })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        };
        let mut seq = newest + 1;
        let mut first = None;
        let mut after = String::new();
        loop {
            let chunk = page(&after)?;
            let Some(last_key) = chunk.last().map(|e| e.key.clone()) else {
                break;
            };
            let mut tries = 0;
            loop {
                let record = journal::Record {
                    v: journal::FORMAT,
                    seq,
                    device: self.device_id().to_owned(),
                    time_ms: self.now_ms(),
                    entries: chunk.clone(),
                };
                let body = journal::encode(&record, keys);
                let req = PutRequest {
                    key: journal::record_name(seq),
                    content_type: "application/json".into(),
                    metadata: Metadata::new(),
                    hash: ContentHash::of(&body),
                    size: body.len() as u64,
                    mtime_ms: record.time_ms,
                    device: String::new(),
                    base: String::new(),
                    sealed: true,
                };
                match raw
                    .put(&req, RemoteBody::Bytes(body.into()), Precondition::IfAbsent)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.kind == RemoteErrorKind::PreconditionFailed && tries < 10_000 => {
                        // Another writer took this number: the next one.
                        tries += 1;
                        seq += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            first.get_or_insert(seq);
            let done: Vec<(String, Option<String>)> =
                chunk.into_iter().map(|e| (e.key, e.etag)).collect();
            self.record(SyncRecord::Journaled { entries: done }).await?;
            seq += 1;
            after = last_key;
        }
        let Some(first) = first else {
            return Ok(None);
        };
        let last = seq - 1;
        // Compaction: the oldest records go once there are too many.
        let listed = self.list_records(raw).await?;
        for old in journal::to_compact(&listed, last, retain) {
            raw.delete(&journal::record_name(old), Precondition::None)
                .await?;
        }
        Ok(Some((first, last)))
    }

    /// Safety rail: refuses a plan that deletes more than `limit` objects on
    /// either side.
    fn check_deletes(&self, actions: &[Action], synced: u64, limit: DeleteLimit) -> Result<()> {
        let local = actions
            .iter()
            .filter(|a| matches!(a, Action::DeleteLocal { .. }))
            .count() as u64;
        let remote = actions
            .iter()
            .filter(|a| matches!(a, Action::DeleteRemote { .. }))
            .count() as u64;
        for (side, count) in [("locally", local), ("on the remote", remote)] {
            if limit.exceeded(count, synced) {
                return Err(Error::TooManyDeletes {
                    side,
                    count,
                    synced,
                    limit: limit.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Outbox keys whose last attempt failed, and when they may run again.
    fn parked(&self) -> Result<HashMap<String, i64>> {
        self.with_reader(|c| {
            let mut stmt =
                c.prepare_cached("SELECT key, next_attempt_ms FROM outbox WHERE state = 'failed'")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (key, next) = row?;
                out.insert(key, next);
            }
            Ok(out)
        })
    }

    /// The content hash of a foreign remote object `r` (no `ferry-hash`)
    /// where it may equal the local version `l`: `None` when it differs.
    /// Sizes first; then a single-part upload's MD5 ETag against the local
    /// bytes; otherwise the remote bytes are downloaded and hashed.
    async fn establish_hash(
        &self,
        remote: &SharedRemote,
        l: &LocalEntry,
        r: &RemoteObject,
    ) -> Result<Option<ContentHash>> {
        use md5::Digest;
        use tokio::io::AsyncReadExt;
        let stored = self.lookup(&l.key)?;
        if stored.meta.size != r.size {
            return Ok(None);
        }
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(etag_md5) = crate::remote::plain_md5_etag(&r.etag) {
            let object = self.get(&l.key).await?;
            let mut body = object.body;
            let mut md5 = md5::Md5::new();
            loop {
                let n = body.read(&mut buf).await.map_err(|e| Error::Corrupt {
                    key: l.key.clone(),
                    detail: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
            }
            let local_md5: [u8; 16] = md5.finalize().into();
            return Ok((local_md5 == etag_md5).then_some(l.hash));
        }
        let (_, mut body) = remote.get(&r.key).await?;
        let mut hasher = blake3::Hasher::new();
        loop {
            let n = body.read(&mut buf).await.map_err(|e| {
                Error::Remote(RemoteError::new(
                    RemoteErrorKind::Retryable,
                    remote.endpoint(),
                    format!("downloading {}: {e}", r.key),
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Some(ContentHash::from(hasher.finalize())))
    }

    /// Only pushes.
    pub async fn push(&self) -> Result<SyncReport> {
        self.sync(SyncOptions {
            mode: SyncMode::Push,
            dry_run: false,
            ..Default::default()
        })
        .await
    }

    /// Only pulls.
    pub async fn pull(&self) -> Result<SyncReport> {
        self.sync(SyncOptions {
            mode: SyncMode::Pull,
            dry_run: false,
            ..Default::default()
        })
        .await
    }

    /// Runs one action and records its outcome.
    async fn execute(
        &self,
        remote: &SharedRemote,
        action: Action,
        seen: Option<RemoteObject>,
        policy: ConflictPolicy,
    ) -> Done {
        let key = action.key().to_owned();
        let result = self.execute_inner(remote, action, seen, policy).await;
        match result {
            Ok(done) => done,
            Err(e) => Done::Failed(issue(&key, &e)),
        }
    }

    async fn execute_inner(
        &self,
        remote: &SharedRemote,
        action: Action,
        seen: Option<RemoteObject>,
        policy: ConflictPolicy,
    ) -> Result<Done> {
        match action {
            Action::Push {
                key,
                hash,
                cond,
                base,
            } => {
                if let Some(why) = remote.refuses(&key) {
                    let e = RemoteError::new(
                        RemoteErrorKind::Terminal,
                        remote.endpoint(),
                        format!("the remote cannot hold the key {key:?}: {why}"),
                    );
                    return self.fail_attempt(&key, e).await;
                }
                self.push_one(remote, &key, hash, cond, base, policy).await
            }
            Action::DeleteRemote { key, cond } => match remote.delete(&key, cond).await {
                Ok(()) => {
                    self.record(SyncRecord::RemoteDeleted { key }).await?;
                    Ok(Done::DeletedRemote)
                }
                Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => {
                    let current = match remote.head(&key).await {
                        Ok(c) => c,
                        Err(e) => return self.fail_attempt(&key, e).await,
                    };
                    self.conflict(
                        key,
                        ConflictReason::DeletedLocallyModifiedRemotely,
                        current.map(|c| c.etag),
                        policy,
                    )
                    .await
                }
                Err(e) => self.fail_attempt(&key, e).await,
            },
            Action::Pull { key, expect, .. } => {
                if self.fetch(&key, expect).await? {
                    Ok(Done::Pulled)
                } else {
                    Ok(Done::Nothing)
                }
            }
            Action::Learn {
                key,
                remote: obj,
                expect,
            } => {
                // A listing carries no metadata; learn it with a HEAD when needed.
                let mut obj = if obj.has_metadata {
                    *obj
                } else {
                    remote.head(&key).await?.unwrap_or(*obj)
                };
                annotate(self.keyring()?.as_deref(), &mut obj);
                let sealed_meta = self.keyring()?.map(|k| {
                    let content_type = obj.content_type.clone().unwrap_or_else(|| {
                        crate::metadata::content_type_for(&key, None).unwrap_or_default()
                    });
                    k.seal_local_meta(&key, &content_type, &obj.metadata)
                });
                let applied = self
                    .record(SyncRecord::Learned {
                        key,
                        expect,
                        remote: Box::new(obj),
                        sealed_meta,
                    })
                    .await?;
                Ok(if applied { Done::Pulled } else { Done::Nothing })
            }
            Action::DeleteLocal { key, expect } => {
                let applied = self
                    .record(SyncRecord::LocalDeleted { key, expect })
                    .await?;
                Ok(if applied {
                    Done::DeletedLocal
                } else {
                    Done::Nothing
                })
            }
            Action::Adopt {
                key,
                etag,
                hash,
                meta,
                modified_ms,
            } => {
                // Our own push whose answer was lost: it keeps what it was based on.
                let pushed_base = seen
                    .filter(|s| s.device.as_deref() == Some(self.device_id()))
                    .and_then(|s| s.base);
                self.record(SyncRecord::Adopted {
                    key,
                    etag,
                    hash,
                    meta,
                    modified_ms,
                    pushed_base,
                })
                .await?;
                Ok(Done::Nothing)
            }
            Action::Refresh {
                key,
                etag,
                modified_ms,
            } => {
                self.record(SyncRecord::Refreshed {
                    batch: vec![(key, etag, modified_ms)],
                })
                .await?;
                Ok(Done::Nothing)
            }
            Action::Forget { key } => {
                self.record(SyncRecord::Forgot { key }).await?;
                Ok(Done::Nothing)
            }
            Action::Conflict {
                key,
                reason,
                remote_etag,
            } => {
                let etag = remote_etag.or(seen.map(|s| s.etag));
                self.record(SyncRecord::Conflicted {
                    key: key.clone(),
                    reason,
                    remote_etag: etag.clone(),
                })
                .await?;
                let deleted_locally = reason == ConflictReason::DeletedLocallyModifiedRemotely;
                Ok(Done::Conflict(ConflictInfo {
                    key,
                    reason: Some(reason),
                    remote_etag: etag,
                    deleted_locally,
                }))
            }
            Action::SetState { key, state } => {
                self.record(SyncRecord::State { key, state }).await?;
                Ok(Done::Nothing)
            }
        }
    }

    async fn conflict(
        &self,
        key: String,
        reason: ConflictReason,
        remote_etag: Option<String>,
        policy: ConflictPolicy,
    ) -> Result<Done> {
        if policy == ConflictPolicy::Flag {
            self.record(SyncRecord::Conflicted {
                key: key.clone(),
                reason,
                remote_etag: remote_etag.clone(),
            })
            .await?;
            let deleted_locally = reason == ConflictReason::DeletedLocallyModifiedRemotely;
            Ok(Done::Conflict(ConflictInfo {
                key,
                reason: Some(reason),
                remote_etag,
                deleted_locally,
            }))
        } else {
            // An automatic policy settles it on the next run, from a fresh listing.
            self.record(SyncRecord::Attempt {
                key: key.clone(),
                state: "pending",
                error: Some(reason.describe().into()),
                next_attempt_ms: 0,
            })
            .await?;
            Ok(Done::Failed(SyncIssue {
                key,
                cause: format!("{}; the next sync applies the policy", reason.describe()),
                retryable: true,
            }))
        }
    }

    /// Records a failed push-side attempt: a retryable one waits for a
    /// delay that doubles with every failed attempt (1 s up to an hour, with
    /// jitter) across runs; a terminal one is parked until the object
    /// changes or a retry is asked for; an unreachable store parks nothing.
    async fn fail_attempt(&self, key: &str, e: RemoteError) -> Result<Done> {
        let retryable = e.is_retryable();
        let next = if e.kind == RemoteErrorKind::Unreachable {
            // The store was down, not this key's fault: the next run (which
            // the schedule delays while offline) tries it again.
            0
        } else if retryable {
            let attempts = self.with_reader(|c| {
                Ok(
                    c.prepare_cached("SELECT MAX(attempts) FROM outbox WHERE key = ?1")?
                        .query_row([key], |r| r.get::<_, Option<i64>>(0))?
                        .unwrap_or(0),
                )
            })?;
            self.now_ms() + backoff_ms(attempts)
        } else {
            i64::MAX
        };
        self.record(SyncRecord::Attempt {
            key: key.to_owned(),
            state: "failed",
            error: Some(e.to_string()),
            next_attempt_ms: next,
        })
        .await?;
        Ok(Done::Failed(SyncIssue {
            key: key.to_owned(),
            cause: Error::Remote(e).to_string(),
            retryable,
        }))
    }

    /// Uploads the local version of `key` (if it still has `hash`).
    async fn push_one(
        &self,
        remote: &SharedRemote,
        key: &str,
        hash: ContentHash,
        cond: Precondition,
        base: String,
        policy: ConflictPolicy,
    ) -> Result<Done> {
        let stored = match self.lookup(key) {
            Ok(s) if s.meta.hash == hash && s.cached => s,
            // Changed or deleted since planning: the next run takes the new version.
            Ok(_) | Err(Error::NotFound { .. }) => return Ok(Done::Nothing),
            Err(e) => return Err(e),
        };
        let body = if stored.inline && self.is_encrypted() {
            RemoteBody::Bytes(self.read_inline_raw(&stored)?)
        } else if stored.inline {
            RemoteBody::Bytes(self.read_inline(&stored)?)
        } else {
            RemoteBody::File(self.inner.blobs.path(&hash))
        };
        let req = PutRequest {
            key: key.to_owned(),
            content_type: stored.meta.content_type.clone(),
            metadata: stored.meta.metadata.clone(),
            hash,
            size: stored.meta.size,
            mtime_ms: stored
                .meta
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            device: self.device_id().to_owned(),
            base: base.clone(),
            sealed: false,
        };
        let meta = meta_digest(self.keyring()?.as_deref(), &req.content_type, &req.metadata);
        match remote.put(&req, body, cond.clone()).await {
            Ok(etag) => {
                self.record(SyncRecord::Pushed {
                    key: key.to_owned(),
                    hash,
                    meta,
                    etag,
                    base,
                })
                .await?;
                Ok(Done::Pushed)
            }
            Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => {
                // Either someone else wrote, or our own earlier attempt landed
                // and its answer was lost: the version tells them apart.
                let current = match remote.head(key).await {
                    Ok(c) => c,
                    Err(e) => return self.fail_attempt(key, e).await,
                };
                let keys = self.keyring()?;
                if let Some((cond, base)) = current
                    .as_ref()
                    .and_then(|r| plan::own_unrecorded_push(&cond, r, self.device_id()))
                {
                    // Our earlier attempt landed and its answer was lost; the
                    // local version changed since: it replaces our own.
                    return Box::pin(self.push_one(remote, key, hash, cond, base, policy)).await;
                }
                match current {
                    Some(mut r)
                        if r.hash == Some(hash)
                            && r.device.as_deref() == Some(self.device_id())
                            && r.base.as_deref() == Some(base.as_str()) =>
                    {
                        annotate(keys.as_deref(), &mut r);
                        if r.meta != Some(meta) {
                            let reason = ConflictReason::RemoteChangedDuringPush;
                            return self
                                .conflict(key.to_owned(), reason, Some(r.etag), policy)
                                .await;
                        }
                        self.record(SyncRecord::Pushed {
                            key: key.to_owned(),
                            hash,
                            meta,
                            etag: r.etag,
                            base,
                        })
                        .await?;
                        Ok(Done::Pushed)
                    }
                    current => {
                        let reason = ConflictReason::RemoteChangedDuringPush;
                        self.conflict(key.to_owned(), reason, current.map(|c| c.etag), policy)
                            .await
                    }
                }
            }
            Err(e) => self.fail_attempt(key, e).await,
        }
    }

    /// Downloads `key` and records it if the local row still matches
    /// `expect`; returns whether it was recorded.
    /// Fetches `key`'s content, known locally as version (`hash`, `meta`)
    /// but not downloaded (a lazy pull).
    pub(crate) async fn fetch_version(
        &self,
        key: &str,
        hash: ContentHash,
        meta: Option<MetaDigest>,
    ) -> Result<bool> {
        self.fetch(key, Expect::Present(hash, meta)).await
    }

    pub(crate) async fn fetch(&self, key: &str, expect: Expect) -> Result<bool> {
        let remote = self.connected_remote()?;
        let keys = self.keyring()?;
        let (obj, reader) = remote.get(key).await?;
        let threshold = self.inner.config.inline_threshold;
        let read = match keys.clone() {
            Some(k) => self.read_sealed_body(key, reader, threshold, k).await,
            None => self.read_body(key, reader, threshold, None).await,
        };
        let (content, hash, size) = read.map_err(|e| match e {
            Error::Body { key, source } => Error::Remote(RemoteError::new(
                RemoteErrorKind::Retryable,
                remote.endpoint(),
                format!("downloading {key}: {source}"),
            )),
            other => other,
        })?;
        if size != obj.size {
            return Err(Error::Corrupt {
                key: key.to_owned(),
                detail: format!("the remote sent {size} bytes, it lists {}", obj.size),
            });
        }
        if obj.hash.is_some_and(|h| h != hash) {
            return Err(Error::Corrupt {
                key: key.to_owned(),
                detail: "the remote content does not match its ferry-hash".into(),
            });
        }
        let content_type = obj
            .content_type
            .clone()
            .unwrap_or_else(|| crate::metadata::content_type_for(key, None).unwrap_or_default());
        let metadata: Metadata = obj.metadata.clone();
        let meta = meta_digest(keys.as_deref(), &content_type, &metadata);
        let sealed_meta = keys.map(|k| k.seal_local_meta(key, &content_type, &metadata));
        let pulled = Pulled {
            content,
            hash,
            size,
            content_type,
            metadata,
            sealed_meta,
            meta,
            // The version's time from the GET (an HTTP date, whole seconds).
            remote_modified_ms: obj.modified_ms.map(|t| t.div_euclid(1000) * 1000),
            modified_ms: obj
                .ferry_mtime
                .or(obj.modified_ms)
                .unwrap_or_else(|| self.now_ms()),
            etag: obj.etag,
        };
        let size_pulled = size;
        let applied = self
            .record(SyncRecord::Pulled {
                key: key.to_owned(),
                expect,
                pulled: Box::new(pulled),
            })
            .await?;
        if applied {
            self.after_write(size_pulled, Some(key)).await;
        }
        Ok(applied)
    }

    /// `get`, optionally fetching the remote's current version first.
    pub async fn get_with(&self, key: &str, opts: GetOptions) -> Result<crate::bucket::Object> {
        validate_key(key)?;
        if opts.remote {
            let remote = self.connected_remote()?;
            let local = self.local_entry(key)?;
            if let Some(l) = &local {
                let changed = !l.present || l.base_hash != Some(l.hash) || l.base_etag.is_none();
                if changed && l.present {
                    return Err(Error::LocalChanges {
                        key: key.to_owned(),
                    });
                }
            }
            match remote.head(key).await? {
                Some(r)
                    if local.as_ref().is_some_and(|l| {
                        l.base_etag.as_deref() == Some(r.etag.as_str()) && l.cached
                    }) => {}
                Some(_) => {
                    let expect = match &local {
                        Some(l) if l.present => Expect::Present(l.hash, l.meta),
                        Some(l) if l.base_etag.is_some() => Expect::Tombstone,
                        _ => Expect::Absent,
                    };
                    self.fetch(key, expect).await?;
                }
                None => {
                    if let Some(l) = local.filter(|l| l.present) {
                        self.record(SyncRecord::LocalDeleted {
                            key: key.to_owned(),
                            expect: Expect::Present(l.hash, l.meta),
                        })
                        .await?;
                    }
                    return Err(Error::NotFound {
                        key: key.to_owned(),
                    });
                }
            }
        }
        self.get(key).await
    }

    /// Settles a conflict on `key`.
    pub async fn resolve(&self, key: &str, how: Resolution) -> Result<ResolveOutcome> {
        validate_key(key)?;
        let remote = self.connected_remote()?;
        let l = self
            .local_entry(key)?
            .filter(|l| l.state == SyncState::Conflict)
            .ok_or_else(|| Error::NotInConflict {
                key: key.to_owned(),
            })?;
        let r = remote.head(key).await?;
        let mut outcome = ResolveOutcome::default();
        let action = match how {
            Resolution::KeepLocal => plan::keep_local_action(key, Some(&l), r.as_ref()),
            Resolution::KeepRemote => Some(plan::keep_remote_action(key, Some(&l), r.as_ref())),
            Resolution::KeepBoth => {
                if l.present {
                    let copy = self.free_conflict_name(key)?;
                    let object = self.get(key).await?;
                    let opts = crate::bucket::PutOptions {
                        content_type: Some(object.meta.content_type.clone()),
                        metadata: object.meta.metadata.clone(),
                    };
                    self.put(
                        &copy,
                        crate::store::body::Body::from_reader(object.body),
                        opts,
                    )
                    .await?;
                    outcome.renamed_to = Some(copy);
                }
                let l = self.local_entry(key)?;
                Some(plan::keep_remote_action(key, l.as_ref(), r.as_ref()))
            }
        };
        if let Some(action) = action {
            match self.execute_inner(&remote, action, r, ConflictPolicy::Flag).await? {
                Done::Failed(i) => {
                    let kind = if i.retryable {
                        RemoteErrorKind::Retryable
                    } else {
                        RemoteErrorKind::Terminal
                    };
                    return Err(Error::Remote(RemoteError::new(kind, remote.endpoint(), i.cause)));
                }
                Done::Conflict(_) => {
                    return Err(Error::Remote(RemoteError::new(
                        RemoteErrorKind::PreconditionFailed,
                        remote.endpoint(),
                        format!("{key} changed on the remote again while resolving; it is still in conflict"),
                    )))
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// `{key}.conflict.{UTC timestamp}`, with a counter if that exists too.
    fn free_conflict_name(&self, key: &str) -> Result<String> {
        let stamp = conflict_stamp(self.inner.clock.now());
        let base = format!("{key}.conflict.{stamp}");
        let exists = |k: &str| -> Result<bool> {
            self.with_reader(|c| {
                Ok(c.prepare_cached("SELECT 1 FROM objects WHERE key = ?1")?
                    .query_row([k], |_| Ok(()))
                    .optional()?
                    .is_some())
            })
        };
        let mut candidate = base.clone();
        let mut n = 1;
        while exists(&candidate)? {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        validate_key(&candidate)?;
        Ok(candidate)
    }
}

/// The wait before retrying a push that failed `attempts` times: doubling
/// from 1 s up to an hour, the upper half jittered.
fn backoff_ms(attempts: i64) -> i64 {
    use rand::Rng;
    let cap = (1000i64 << attempts.clamp(0, 12)).min(3_600_000);
    cap / 2 + rand::rng().random_range(0..=cap / 2)
}

/// `20261122T031500Z`: sortable, and a valid key segment.
fn conflict_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
