//! The deterministic sync simulator: real buckets (real SQLite, the real
//! planner, executor, recorder and journal) syncing through one simulated
//! store, driven by one seeded scheduler. One `u64` seed decides a whole
//! run; the same seed gives the same history.
//!
//! How determinism is kept:
//! - every replica runs one operation at a time as a task, with one action
//!   in flight (`push_concurrency = pull_concurrency = 1`), so between two
//!   remote requests a replica's work is sequential;
//! - every remote request stops at the gate (`remote::SimRemote`) and the
//!   scheduler, which waits until no replica is running, picks which waiting
//!   request goes next and what happens to it (applied, failed before it
//!   applies, applied with its answer lost, or the replica crashes there);
//! - time is each replica's [`ManualClock`] (skewed by minutes, advanced by
//!   the scheduler), retry jitter comes from a generator seeded per replica,
//!   and the retry layer is off (a fault reaches the sync code).
//!
//! After the operations, faults stop and every replica syncs (resolving
//! conflicts by keeping both) until two passes in a row move nothing; then the
//! invariants are checked (`model`): convergence, no lost write, no
//! resurrection, status counts, index check and garbage collection.
//!
//! This is test support: nothing in ferry's own paths uses it. The tests
//! run it (`FERRY_SIM_SEED=… cargo test -p ferry sim` replays one seed;
//! `FERRY_SIM_TRACE=1` adds every replica's rows while settling,
//! [`SimConfig::trace_rows`]) and `ferry-bench --suite sim` measures seeds
//! per second.

mod model;
mod remote;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bucket::{Bucket, BucketConfig, PutOptions};
use crate::clock::{Clock, ManualClock};
use crate::crypto::keyring::{KeyFile, Keyring};
use crate::crypto::keys::{KdfParams, Key};
use crate::crypto::names::NameFormat;
use crate::hash::ContentHash;
use crate::metadata::Metadata;
use crate::remote::encrypted;
use crate::remote::memory::MemoryRemote;
use crate::sync::plan::PullStrategy;
use crate::sync::{Resolution, SyncConfig, SyncMode, SyncOptions};
use model::Model;
use remote::{Msg, SimRemote, Verdict};

/// The keys operations pick from: few, so replicas meet on them.
const KEYS: [&str; 6] = ["a", "b", "c/d", "c/e", "f.txt", "g/h/i"];

/// The simulated start of time (2026-01-01).
const EPOCH_MS: i64 = 1_767_225_600_000;

/// What one run does; [`SimConfig::from_seed`] derives it from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The seed every choice comes from.
    pub seed: u64,
    /// Replicas (2–4).
    pub replicas: usize,
    /// User operations started, in all.
    pub steps: usize,
    /// Share of requests that fail (half before applying, half with the
    /// answer lost).
    pub fault_rate: f64,
    /// Share of requests at which the replica crashes instead.
    pub crash_rate: f64,
    /// A foreign writer (no journal, no ferry metadata) also writes.
    pub foreign: bool,
    /// The store ignores conditional writes (ferry emulates them by HEAD).
    pub ignore_conditions: bool,
    /// Keys per listing page.
    pub page_size: usize,
    /// The most a replica's clock is off, ms.
    pub skew_ms: i64,
    /// Replicas pull lazily (learn, download on read) instead of eagerly.
    pub lazy: bool,
    /// The bucket is end-to-end encrypted (names and content sealed on the
    /// store). The foreign client then only deletes (it cannot write what
    /// a replica would read), and replicas pull eagerly (`lazy` is not
    /// taken).
    pub encrypted: bool,
    /// Replicas also narrow and widen their sync scope (`scope add/remove`).
    pub scoped: bool,
    /// Journal records each writer keeps before compacting its stream
    /// (small: compaction runs, and readers fall behind it).
    pub journal_retain: u64,
    /// Also logs every replica's rows (key, state, content by its name in
    /// the history, agreed version) after each settling sync: for reading
    /// a failing seed, not drawn from it.
    pub trace_rows: bool,
}

impl SimConfig {
    /// The configuration seed `seed` stands for (about 3 in 10 seeds draw
    /// an encrypted bucket, 3 in 10 a narrowed scope).
    pub fn from_seed(seed: u64) -> SimConfig {
        SimConfig::draw(seed)
    }

    fn draw(seed: u64) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f00d_cafe_d00d);
        SimConfig {
            seed,
            replicas: rng.random_range(2..=4),
            steps: rng.random_range(15..=50),
            fault_rate: [0.0, 0.05, 0.15][rng.random_range(0..3)],
            crash_rate: [0.0, 0.0, 0.03][rng.random_range(0..3)],
            foreign: rng.random_bool(0.25),
            ignore_conditions: rng.random_bool(0.5),
            page_size: [2, 3, 1000][rng.random_range(0..3)],
            skew_ms: rng.random_range(0..=300_000),
            lazy: rng.random_bool(0.2),
            encrypted: false,
            scoped: false,
            journal_retain: crate::sync::journal::RETAIN,
            trace_rows: false,
        }
        .with_extras(seed)
    }

    /// The choices added after the first 20,000 heavy seeds ran clean, from
    /// their own generator: a seed that draws none of them runs the operations
    /// it ran before they existed.
    fn with_extras(mut self, seed: u64) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0e5c_a1ed_5c0b_e5ed);
        self.encrypted = rng.random_bool(0.3);
        self.scoped = rng.random_bool(0.3);
        if rng.random_bool(0.4) {
            self.journal_retain = rng.random_range(2..=6);
        }
        self
    }
}

/// A run that kept every invariant.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// What happened, step by step.
    pub history: Vec<String>,
    /// Faults injected.
    pub faults: u64,
    /// Crashes injected.
    pub crashes: u64,
}

/// A run that broke an invariant (or could not run).
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed that replays it.
    pub seed: u64,
    /// Which invariant broke, in words.
    pub violation: String,
    /// What happened, step by step.
    pub history: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed: {}",
            self.seed, self.violation
        )?;
        writeln!(
            f,
            "replay: FERRY_SIM_SEED={} cargo test -p ferry --test it sim",
            self.seed
        )?;
        writeln!(f, "history ({} lines):", self.history.len())?;
        for line in &self.history {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// What a replica's operation did, for the model.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    text: String,
    /// Versions (content hashes) the operation replaced knowingly, and
    /// whether it deleted them (`true`) or overwrote them.
    saw: Vec<(ContentHash, bool)>,
    /// Content it wrote (acknowledged), with its name.
    wrote: Vec<(ContentHash, String)>,
    /// Content it wrote again (a move, a metadata change).
    rewrote: Vec<ContentHash>,
}

/// A user operation.
#[derive(Debug, Clone)]
enum Op {
    Put {
        key: String,
        value: String,
    },
    Same {
        key: String,
    },
    Meta {
        key: String,
        n: usize,
    },
    Delete {
        key: String,
    },
    Move {
        from: String,
        to: String,
    },
    Sync {
        mode: SyncMode,
        full: bool,
    },
    Resolve,
    Pin {
        key: String,
    },
    Evict,
    /// `scope add PREFIX` (`""` widens to everything).
    ScopeAdd {
        prefix: String,
    },
    /// `scope remove PREFIX`.
    ScopeRemove {
        prefix: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put {key} = {value}"),
            Op::Same { key } => write!(f, "put {key} again (same bytes and metadata)"),
            Op::Meta { key, n } => write!(f, "set metadata of {key} to n={n}"),
            Op::Delete { key } => write!(f, "delete {key}"),
            Op::Move { from, to } => write!(f, "mv {from} {to}"),
            Op::Sync { mode, full } => {
                let name = match mode {
                    SyncMode::Both => "sync",
                    SyncMode::Push => "push",
                    SyncMode::Pull => "pull",
                };
                write!(f, "{name}{}", if *full { " --full" } else { "" })
            }
            Op::Resolve => write!(f, "resolve (keep both)"),
            Op::Pin { key } => write!(f, "pin {key}"),
            Op::Evict => write!(f, "evict"),
            Op::ScopeAdd { prefix } => write!(f, "scope add {prefix:?}"),
            Op::ScopeRemove { prefix } => write!(f, "scope remove {prefix:?}"),
        }
    }
}

/// Errors in a history: paths (temp dirs, random names) left out so a
/// seed's history is the same every time.
fn plain(e: &dyn fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .map(|w| {
            if w.contains('/') && w.len() > 24 {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn value_bytes(value: &str) -> Bytes {
    // Most values are larger than the inline threshold (blobs), some not.
    if value.len().is_multiple_of(2) {
        Bytes::from(format!("{value}:{}", "x".repeat(40)))
    } else {
        Bytes::from(value.to_owned())
    }
}

/// An encrypted bucket addresses content by a keyed hash (the same on
/// every replica: the key is derived from the master key): its plain
/// content hash, learned when the content is written.
type Aliases = Arc<std::sync::Mutex<BTreeMap<ContentHash, ContentHash>>>;

/// Records that replica `b` holds `plain` at `key` under its own hash.
async fn learn_alias(b: &Bucket, aliases: &Aliases, key: &str, plain: ContentHash) {
    if let (Ok(meta), Ok(mut a)) = (b.head(key).await, aliases.lock()) {
        a.insert(meta.hash, plain);
    }
}

/// The content a replica holds at `key`, as the user sees it: a foreign
/// object learned lazily has no known hash until it is read, so it is read;
/// when the read fails, the version the row agreed on (which a write over
/// it replaces knowingly) is looked up in the store's history.
async fn seen_hash(
    b: &Bucket,
    store: &MemoryRemote,
    aliases: &Aliases,
    key: &str,
) -> Option<ContentHash> {
    let meta = b.head(key).await.ok()?;
    if meta.hash != ContentHash([0; 32]) {
        let plain = aliases.lock().ok()?.get(&meta.hash).copied();
        return Some(plain.unwrap_or(meta.hash));
    }
    if let Ok((_, data)) = b.get_bytes(key).await {
        return Some(ContentHash::of(&data));
    }
    let etag: Option<String> = b
        .with_reader(|c| {
            Ok(
                c.query_row("SELECT base_etag FROM objects WHERE key = ?1", [key], |r| {
                    r.get(0)
                })?,
            )
        })
        .ok()
        .flatten();
    store.content_of(&etag?)
}

impl Op {
    async fn run(
        self,
        b: Bucket,
        store: MemoryRemote,
        early: Arc<std::sync::Mutex<Vec<ContentHash>>>,
        aliases: Aliases,
    ) -> Outcome {
        let mut out = Outcome::default();
        let result: crate::Result<String> = async {
            match self {
                Op::Put { key, value } => {
                    let old = seen_hash(&b, &store, &aliases, &key).await;
                    let data = value_bytes(&value);
                    let hash = ContentHash::of(&data);
                    b.put(&key, data, PutOptions::default()).await?;
                    learn_alias(&b, &aliases, &key, hash).await;
                    out.saw.extend(old.map(|h| (h, false)));
                    out.wrote.push((hash, value));
                    Ok("ok".into())
                }
                Op::Same { key } => {
                    let (meta, data) = b.get_bytes(&key).await?;
                    let opts = PutOptions {
                        content_type: Some(meta.content_type),
                        metadata: meta.metadata,
                    };
                    let hash = ContentHash::of(&data);
                    out.rewrote.push(hash);
                    b.put(&key, data, opts).await?;
                    learn_alias(&b, &aliases, &key, hash).await;
                    Ok("ok".into())
                }
                Op::Meta { key, n } => {
                    let (meta, data) = b.get_bytes(&key).await?;
                    let mut metadata = Metadata::new();
                    metadata.insert("n".into(), n.to_string());
                    let opts = PutOptions {
                        content_type: Some(meta.content_type),
                        metadata,
                    };
                    let hash = ContentHash::of(&data);
                    out.rewrote.push(hash);
                    b.put(&key, data, opts).await?;
                    learn_alias(&b, &aliases, &key, hash).await;
                    Ok("ok".into())
                }
                Op::Delete { key } => {
                    let old = seen_hash(&b, &store, &aliases, &key).await;
                    let deleted = b.delete(&key).await?;
                    if deleted {
                        out.saw.extend(old.map(|h| (h, true)));
                    }
                    Ok(if deleted { "deleted" } else { "absent" }.into())
                }
                Op::Move { from, to } => {
                    let (meta, data) = b.get_bytes(&from).await?;
                    let old = seen_hash(&b, &store, &aliases, &to).await;
                    let opts = PutOptions {
                        content_type: Some(meta.content_type),
                        metadata: meta.metadata,
                    };
                    let hash = ContentHash::of(&data);
                    out.rewrote.push(hash);
                    b.put(&to, data, opts).await?;
                    learn_alias(&b, &aliases, &to, hash).await;
                    out.saw.extend(old.map(|h| (h, false)));
                    b.delete(&from).await?;
                    Ok("moved".into())
                }
                Op::Sync { mode, full } => {
                    let r = b
                        .sync(SyncOptions {
                            mode,
                            full,
                            ..Default::default()
                        })
                        .await?;
                    let mut text = format!(
                        "pushed {} pulled {} deleted {}/{} conflicts {} errors {}",
                        r.pushed,
                        r.pulled,
                        r.deleted_remote,
                        r.deleted_local,
                        r.conflicts.len(),
                        r.errors.len()
                    );
                    for e in &r.errors {
                        text.push_str(&format!("; {}: {}", e.key, plain(&e.cause)));
                    }
                    Ok(text)
                }
                Op::Resolve => match b.conflicts().await?.first() {
                    Some(c) => {
                        // Keeping both copies the local version to a new
                        // key, which a later delete of this one does not
                        // touch (also when the resolve fails after it).
                        if let Some(h) = seen_hash(&b, &store, &aliases, &c.key).await {
                            out.rewrote.push(h);
                            if let Ok(mut e) = early.lock() {
                                e.push(h);
                            }
                        }
                        let done = b.resolve(&c.key, Resolution::KeepBoth).await?;
                        Ok(format!("{}: kept both ({:?})", c.key, done.renamed_to))
                    }
                    None => Ok("no conflict".into()),
                },
                Op::Pin { key } => Ok(format!("pinned {}", b.pin(&[key.as_str()]).await?)),
                Op::Evict => Ok(format!("evicted {} bytes", b.evict(1 << 20).await?)),
                Op::ScopeAdd { prefix } => {
                    let r = b.add_scope(&prefix).await?;
                    Ok(format!(
                        "scopes {:?}; pulled {} conflicts {} errors {}",
                        b.scopes()?,
                        r.pulled,
                        r.conflicts.len(),
                        r.errors.len()
                    ))
                }
                Op::ScopeRemove { prefix } => {
                    b.remove_scope(&prefix).await?;
                    Ok(format!("scopes {:?}", b.scopes()?))
                }
            }
        }
        .await;
        out.text = match result {
            Ok(t) => t,
            Err(e) => format!("error: {}", plain(&e)),
        };
        out
    }
}

/// Where a replica is.
enum ActorState {
    Idle,
    Running,
    Blocked {
        what: String,
        reply: oneshot::Sender<Verdict>,
    },
}

struct Actor {
    id: usize,
    dir: PathBuf,
    bucket: Bucket,
    remote: Arc<SimRemote>,
    clock: Arc<ManualClock>,
    task: Option<JoinHandle<()>>,
    state: ActorState,
    op: String,
    /// The key and version the replica's last applied request, a HEAD, saw
    /// (an emulated conditional write checks by HEAD, then writes).
    headed: Option<(String, Option<String>)>,
    /// Content the running operation wrote again before it finished (a
    /// keep-both copy): a crash after it leaves the copy on disk, so the
    /// model learns it from here too.
    early: Arc<std::sync::Mutex<Vec<ContentHash>>>,
}

/// The scheduler: replicas, the store, the model, the seeded choices.
struct Sim {
    config: SimConfig,
    rng: StdRng,
    /// The generator of the choices `SimConfig::with_extras` added (so a
    /// run without them draws from `rng` exactly as before).
    extra: StdRng,
    aliases: Aliases,
    store: MemoryRemote,
    store_clock: Arc<ManualClock>,
    actors: Vec<Actor>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    model: Model,
    history: Vec<String>,
    faults: u64,
    crashes: u64,
    foreign_writes: bool,
    step: usize,
}

/// The sync settings every replica runs with.
fn sync_config(lazy: bool, journal_retain: u64) -> SyncConfig {
    SyncConfig {
        journal_retain,
        push_concurrency: 1,
        pull_concurrency: 1,
        max_retries: 0,
        retry_base_delay_ms: 0,
        strategy: if lazy {
            PullStrategy::Lazy
        } else {
            PullStrategy::Eager
        },
        ..SyncConfig::default()
    }
}

async fn open_replica(
    id: usize,
    dir: &Path,
    create: bool,
    store: &MemoryRemote,
    tx: &mpsc::UnboundedSender<Msg>,
    clock: &Arc<ManualClock>,
    config: &SimConfig,
) -> crate::Result<(Bucket, Arc<SimRemote>)> {
    if create {
        let made = make_replica(dir, store, config).await?;
        drop(made);
        // Device ids are random; a replayed run needs the same ones (they
        // order the journal's listing).
        let mut rng = StdRng::seed_from_u64(config.seed ^ (id as u64 + 1).rotate_left(32));
        let device = hex::encode(rng.random::<[u8; 16]>());
        let conn = crate::store::index::open(&dir.join(crate::bucket::INDEX_FILE), false)?;
        crate::store::index::set_setting(&conn, "device_id", &device)?;
    }
    let bucket = Bucket::open(dir).await?;
    if config.encrypted {
        bucket.unlock(PASSPHRASE).await?;
    }
    bucket.set_clock(clock.clone());
    bucket.set_random_seed(config.seed.wrapping_add(id as u64 + 1));
    if create {
        bucket
            .set_sync_config(sync_config(
                config.lazy && !config.encrypted,
                config.journal_retain,
            ))
            .await?;
    }
    let remote = Arc::new(SimRemote::new(id, store.clone(), tx.clone()));
    bucket.attach(remote.clone()).await?;
    remote.set_gated(true);
    Ok((bucket, remote))
}

/// The keys a replica holds.
async fn keys_of(b: &Bucket) -> Result<std::collections::BTreeSet<String>, String> {
    let listed = b.list_all("").await.map_err(|e| e.to_string())?;
    Ok(listed.into_iter().map(|o| o.key).collect())
}

/// The passphrase of an encrypted run's bucket.
const PASSPHRASE: &[u8] = b"simulated passphrase";

/// Argon2 at a cost below what a new key file may use (the key-file code's
/// own tests pin the floor): a simulated run unlocks at every reopen.
const SIM_KDF: KdfParams = KdfParams {
    m_kib: 1024,
    t: 1,
    p: 1,
};

/// Creates a replica's bucket. Encrypted: replica 0 makes the key (its
/// master key from the seed, so names, and with them listing order, are
/// the same in every replay; nothing else in the sealing needs to be), the
/// others join with the key file the store holds once replica 0 attached.
async fn make_replica(
    dir: &Path,
    store: &MemoryRemote,
    config: &SimConfig,
) -> crate::Result<Bucket> {
    let bucket_config = BucketConfig {
        inline_threshold: 16,
    };
    if !config.encrypted {
        return Bucket::create(dir, bucket_config).await;
    }
    if let Some(file) = encrypted::read_key_file(store).await? {
        return Bucket::create_joining(dir, bucket_config, file, PASSPHRASE, SIM_KDF).await;
    }
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6b65_7973_6565_6421);
    let master = Key(rng.random());
    let file = KeyFile::wrap_v3_with(&master, PASSPHRASE, SIM_KDF, 1, rng.random(), rng.random())?;
    let keys = Keyring::new(&master, NameFormat::V2);
    Bucket::create_unlocked(dir, bucket_config, file, keys).await
}

/// Runs the simulation `config` describes, with replicas in directories
/// under `dir`.
pub async fn run(dir: &Path, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |violation: String, history: Vec<String>| SimFailure {
        seed: config.seed,
        violation,
        history,
    };
    let store_clock = Arc::new(ManualClock::at(EPOCH_MS));
    let store = MemoryRemote::new().with_clock(store_clock.clone());
    store.ignore_conditions(config.ignore_conditions);
    store.set_page_size(config.page_size);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut actors = Vec::new();
    let mut history = vec![format!("config: {config:?}")];
    for id in 0..config.replicas {
        let skew = if config.skew_ms > 0 {
            rng.random_range(-config.skew_ms..=config.skew_ms)
        } else {
            0
        };
        let clock = Arc::new(ManualClock::at(EPOCH_MS + skew));
        let rdir = dir.join(format!("r{id}"));
        let (bucket, remote) = open_replica(id, &rdir, true, &store, &tx, &clock, config)
            .await
            .map_err(|e| fail(format!("setting up replica {id}: {e}"), history.clone()))?;
        history.push(format!("r{id}: clock {skew:+} ms"));
        actors.push(Actor {
            id,
            dir: rdir,
            bucket,
            remote,
            clock,
            task: None,
            state: ActorState::Idle,
            op: String::new(),
            headed: None,
            early: Arc::default(),
        });
    }
    let mut sim = Sim {
        config: config.clone(),
        rng,
        extra: StdRng::seed_from_u64(config.seed ^ 0x0e78_7261_0e78_7261),
        aliases: Aliases::default(),
        store,
        store_clock,
        actors,
        tx,
        rx,
        model: Model::default(),
        history,
        faults: 0,
        crashes: 0,
        foreign_writes: false,
        step: 0,
    };
    match sim.drive().await {
        Ok(()) => Ok(SimReport {
            history: sim.history,
            faults: sim.faults,
            crashes: sim.crashes,
        }),
        Err(violation) => Err(fail(violation, sim.history)),
    }
}

impl Sim {
    fn log(&mut self, line: String) {
        // Device ids are random: a history names replicas instead.
        let mut line = line;
        for a in &self.actors {
            line = line.replace(a.bucket.device_id(), &format!("<r{}>", a.id));
        }
        self.history.push(format!("{:>4} {line}", self.step));
    }

    async fn drive(&mut self) -> Result<(), String> {
        let mut started = 0;
        let mut turns = 0u64;
        loop {
            turns += 1;
            if turns > 100_000 {
                return Err("the run did not finish in 100,000 turns (a livelock)".into());
            }
            self.wait_quiet().await?;
            let idle: Vec<usize> = (0..self.actors.len())
                .filter(|&i| matches!(self.actors[i].state, ActorState::Idle))
                .collect();
            let blocked: Vec<usize> = (0..self.actors.len())
                .filter(|&i| matches!(self.actors[i].state, ActorState::Blocked { .. }))
                .collect();
            if started >= self.config.steps && blocked.is_empty() {
                break;
            }
            self.tick();
            let start_one = started < self.config.steps
                && !idle.is_empty()
                && (blocked.is_empty() || self.rng.random_bool(0.35));
            if start_one {
                started += 1;
                self.step += 1;
                if self.config.foreign && self.rng.random_bool(0.1) {
                    self.foreign_op();
                } else {
                    let who = idle[self.rng.random_range(0..idle.len())];
                    let op = self.pick_op(who);
                    self.start(who, op);
                }
            } else {
                let who = blocked[self.rng.random_range(0..blocked.len())];
                self.answer(who).await?;
            }
        }
        self.settle().await?;
        self.check().await
    }

    /// Whether a replica's index agreed on the version the store holds at
    /// `key` (so its writer, if a replica, knows its push landed).
    fn recorded(&self, key: &str) -> bool {
        let Some(etag) = self.store.etag_of(key) else {
            return false;
        };
        self.actors.iter().any(|a| {
            a.bucket
                .with_reader(|c| {
                    Ok(
                        c.query_row("SELECT base_etag FROM objects WHERE key = ?1", [key], |r| {
                            r.get::<_, Option<String>>(0)
                        })?,
                    )
                })
                .ok()
                .flatten()
                .as_deref()
                == Some(etag.as_str())
        })
    }

    /// Moves every clock forward a little (each replica's by its own step).
    fn tick(&mut self) {
        let base = self.rng.random_range(0..1500);
        self.store_clock.advance(base);
        for a in &self.actors {
            let own = self.rng.random_range(0..200);
            a.clock.advance(base + own);
        }
    }

    fn pick_key(&mut self) -> String {
        KEYS[self.rng.random_range(0..KEYS.len())].to_owned()
    }

    fn pick_op(&mut self, who: usize) -> Op {
        if self.config.scoped && self.extra.random_bool(0.08) {
            let prefix = ["c/", "g/", ""][self.extra.random_range(0..3)].to_owned();
            return if !prefix.is_empty() && self.extra.random_bool(0.4) {
                Op::ScopeRemove { prefix }
            } else {
                Op::ScopeAdd { prefix }
            };
        }
        let roll = self.rng.random_range(0..100);
        let key = self.pick_key();
        match roll {
            0..=27 => Op::Put {
                key,
                value: format!("v{}r{who}", self.step),
            },
            28..=30 => Op::Same { key },
            31..=35 => Op::Meta { key, n: self.step },
            36..=44 => Op::Delete { key },
            45..=48 => Op::Move {
                from: key,
                to: self.pick_key(),
            },
            49..=72 => Op::Sync {
                mode: SyncMode::Both,
                full: false,
            },
            73..=77 => Op::Sync {
                mode: SyncMode::Push,
                full: false,
            },
            78..=82 => Op::Sync {
                mode: SyncMode::Pull,
                full: false,
            },
            83..=85 => Op::Sync {
                mode: SyncMode::Both,
                full: true,
            },
            86..=92 => Op::Resolve,
            93..=96 => Op::Pin { key },
            _ => Op::Evict,
        }
    }

    fn start(&mut self, who: usize, op: Op) {
        let line = format!("r{who} {op}");
        self.log(line.clone());
        let a = &mut self.actors[who];
        a.op = line;
        a.state = ActorState::Running;
        let bucket = a.bucket.clone();
        let store = self.store.clone();
        if let Ok(mut e) = a.early.lock() {
            e.clear();
        }
        let early = a.early.clone();
        let aliases = self.aliases.clone();
        let tx = self.tx.clone();
        let id = a.id;
        a.task = Some(tokio::spawn(async move {
            let outcome = AssertUnwindSafe(op.run(bucket, store, early, aliases))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Outcome {
                    text: format!(
                        "PANIC: {}",
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default()
                    ),
                    ..Outcome::default()
                });
            let _ = tx.send(Msg::Finished {
                actor: id,
                outcome: Box::new(outcome),
            });
        }));
    }

    /// Waits until no replica is running (each waits at the gate or is idle).
    async fn wait_quiet(&mut self) -> Result<(), String> {
        while self
            .actors
            .iter()
            .any(|a| matches!(a.state, ActorState::Running))
        {
            // Real time only guards against a hang; it decides nothing.
            let msg = tokio::time::timeout(Duration::from_secs(120), self.rx.recv())
                .await
                .map_err(|_| "a replica neither finished nor reached the store in 120 s (a hang)")?
                .ok_or("the scheduler's channel closed")?;
            match msg {
                Msg::Blocked { actor, what, reply } => {
                    let a = &mut self.actors[actor];
                    if !matches!(a.state, ActorState::Running) {
                        return Err(format!(
                            "r{actor} sent a second request while one waits ({what}): \
                             the replica is not sequential, the run cannot be replayed"
                        ));
                    }
                    a.state = ActorState::Blocked { what, reply };
                }
                Msg::Finished { actor, outcome } => {
                    let op = std::mem::take(&mut self.actors[actor].op);
                    self.actors[actor].state = ActorState::Idle;
                    self.actors[actor].task = None;
                    let outcome = *outcome;
                    self.log(format!("r{actor} done: {op} → {}", outcome.text));
                    if outcome.text.starts_with("PANIC") {
                        return Err(format!("r{actor} panicked in {op}: {}", outcome.text));
                    }
                    for (hash, deleted) in &outcome.saw {
                        self.model.saw(Some(actor), *hash, *deleted);
                    }
                    for hash in &outcome.rewrote {
                        self.model.rewrote(*hash);
                    }
                    for (hash, name) in outcome.wrote {
                        self.model.wrote(hash, name);
                    }
                    self.note_journaled(actor).await;
                }
            }
        }
        Ok(())
    }

    async fn answer(&mut self, who: usize) -> Result<(), String> {
        let state = std::mem::replace(&mut self.actors[who].state, ActorState::Running);
        let ActorState::Blocked { what, reply } = state else {
            return Err(format!("r{who} was not waiting"));
        };
        let roll: f64 = self.rng.random();
        if roll < self.config.crash_rate {
            self.crashes += 1;
            self.log(format!("r{who} CRASH at {what}"));
            drop(reply);
            return self.crash(who).await;
        }
        let roll = roll - self.config.crash_rate;
        let verdict = if roll < self.config.fault_rate / 2.0 {
            Verdict::FailBefore
        } else if roll < self.config.fault_rate {
            Verdict::LoseAnswer
        } else {
            Verdict::Apply
        };
        self.note_race(who, &what, verdict);
        if verdict != Verdict::Apply {
            self.faults += 1;
            self.log(format!("r{who} {what}: {verdict:?}"));
        } else {
            self.log(format!("r{who} {what}"));
        }
        let _ = reply.send(verdict);
        Ok(())
    }

    /// On a store that ignores conditions, a write or delete right after a
    /// HEAD of its key is an emulated conditional one: when the version it
    /// replaces is not the one the HEAD saw, the store broke the condition,
    /// and a foreign write it removes is lost to the store's race.
    fn note_race(&mut self, who: usize, what: &str, verdict: Verdict) {
        let headed = self.actors[who].headed.take();
        if verdict == Verdict::FailBefore {
            return;
        }
        let mut words = what.split(' ');
        let (verb, key) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if verb == "HEAD" && verdict == Verdict::Apply {
            self.actors[who].headed = Some((key.to_owned(), self.store.etag_of(key)));
            return;
        }
        let Some((headed_key, seen)) = headed else {
            return;
        };
        if !self.config.ignore_conditions
            || !matches!(verb, "PUT" | "DELETE")
            || headed_key != key
            || self.store.etag_of(key) == seen
        {
            return;
        }
        if let Some((data, _, _)) = self.store.snapshot().remove(key) {
            self.model.raced(ContentHash::of(&data));
        }
    }

    /// Drops the replica's running operation where it waits, and opens its
    /// directory again (what a killed process leaves is what is on disk).
    async fn crash(&mut self, who: usize) -> Result<(), String> {
        let a = &mut self.actors[who];
        if let Some(task) = a.task.take() {
            task.abort();
            let _ = task.await;
        }
        a.remote.set_gated(false);
        // The run's own tasks hold handles until they are dropped too.
        for _ in 0..1000 {
            if a.bucket.handles() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        if a.bucket.handles() != 1 {
            return Err(format!(
                "r{who}: the crashed run's handles were not dropped"
            ));
        }
        // The last handle goes before the directory is opened again (its
        // leader lock, open marker and writer thread go with it), as a
        // killed process's do.
        let old = std::mem::take(&mut a.op);
        let early: Vec<ContentHash> = a.early.lock().map(|e| e.clone()).unwrap_or_default();
        for hash in early {
            self.model.rewrote(hash);
        }
        let dead = self.actors.remove(who);
        let Actor {
            id,
            dir,
            clock,
            bucket,
            remote,
            ..
        } = dead;
        drop(remote);
        drop(bucket);
        let config = SimConfig {
            seed: self.config.seed ^ ((self.step as u64) << 8),
            ..self.config.clone()
        };
        let reopened = open_replica(id, &dir, false, &self.store, &self.tx, &clock, &config).await;
        let (bucket, remote) =
            reopened.map_err(|e| format!("r{who}: opening again after the crash: {e}"))?;
        self.actors.insert(
            who,
            Actor {
                id,
                dir,
                bucket,
                remote,
                clock,
                task: None,
                state: ActorState::Idle,
                op: String::new(),
                headed: None,
                early: Arc::default(),
            },
        );
        self.log(format!("r{who} reopened after crashing in {old}"));
        Ok(())
    }

    /// A plain client (no journal, no ferry metadata) writes the store.
    fn foreign_op(&mut self) {
        self.foreign_writes = true;
        if self.config.encrypted {
            // Someone holding storage credentials but not the key can only
            // delete (or garble) sealed objects: a deletion no device
            // proves must not delete any replica's data (finding 15), so
            // the model takes it as seeing nothing, unless it removed the
            // last copy (below).
            let names: Vec<String> = self
                .store
                .snapshot()
                .into_keys()
                .filter(|k| !k.starts_with(crate::key::RESERVED_PREFIX))
                .collect();
            if names.is_empty() {
                self.log("foreign delete: the store holds no object".into());
                return;
            }
            let name = names[self.rng.random_range(0..names.len())].clone();
            if let Some(plain) = self.lost_with(&name) {
                // No replica holds the version's content (evicted, or never
                // pulled): the deleter removed its last copy, which no
                // protocol brings back.
                self.model.saw(None, plain, false);
            }
            self.store.delete_foreign(&name);
            self.log(format!(
                "foreign delete of the sealed object {}…",
                &name[..name.len().min(12)]
            ));
            return;
        }
        let key = self.pick_key();
        let current = self.store.snapshot().remove(&key);
        let roll = self.rng.random_range(0..10);
        if let Some((data, _, _)) = &current {
            match roll {
                0..=4 => {}
                5..=7 => {
                    // On a store that ignores conditions a delete without a
                    // journal record cannot be told from one that raced an
                    // edit: ferry keeps the data (a conflict), so such a
                    // delete is not one that must never be undone. Nor is
                    // the delete of a ferry push whose answer was lost and
                    // that no replica recorded yet: its writer cannot tell
                    // a push that never landed from one deleted since, and
                    // pushes again (the only way not to lose it).
                    let hash = ContentHash::of(data);
                    let binding = !self.config.ignore_conditions
                        && (self.model.is_foreign(&hash) || self.recorded(&key));
                    self.model.saw(None, hash, binding);
                    self.store.delete_foreign(&key);
                    self.log(format!("foreign delete {key}"));
                    return;
                }
                _ => {
                    // A new version of the same bytes, which no delete
                    // that saw the old one saw.
                    self.model.rewrote(ContentHash::of(data));
                    let mut m = Metadata::new();
                    m.insert("foreign".into(), self.step.to_string());
                    self.store.rewrite_foreign_metadata(&key, m);
                    self.log(format!("foreign metadata rewrite {key}"));
                    return;
                }
            }
            self.model.saw(None, ContentHash::of(data), false);
        }
        let value = format!("f{}", self.step);
        let data = value_bytes(&value);
        self.model
            .wrote_foreign(ContentHash::of(&data), value.clone());
        self.store.put_foreign(&key, data, "text/plain");
        self.log(format!("foreign put {key} = {value}"));
    }

    /// The plain content hash of the version at store name `name` when no
    /// replica holds that content locally (so deleting it from the store
    /// deletes its last copy); `None` when one does, or nothing is known.
    fn lost_with(&self, name: &str) -> Option<ContentHash> {
        let etag = self.store.etag_of(name)?;
        // The version's (keyed) hash, from a replica that agreed on it.
        let keyed = self.actors.iter().find_map(|a| {
            a.bucket
                .with_reader(|c| {
                    Ok(c.query_row(
                        "SELECT base_hash FROM objects WHERE base_etag = ?1",
                        [&etag],
                        |r| r.get::<_, Vec<u8>>(0),
                    )
                    .ok())
                })
                .ok()
                .flatten()
        })?;
        let keyed = ContentHash(keyed.try_into().ok()?);
        // Held by a replica under any row.
        let held = self.actors.iter().any(|a| {
            a.bucket
                .with_reader(|c| {
                    Ok(c.query_row(
                        "SELECT EXISTS (SELECT 1 FROM objects WHERE hash = ?1 \
                         AND present = 1 AND cached = 1)",
                        [&keyed.0[..]],
                        |r| r.get(0),
                    )?)
                })
                .unwrap_or(false)
        });
        if held {
            return None;
        }
        self.aliases.lock().ok()?.get(&keyed).copied()
    }

    /// Faults off: every replica syncs (keeping both sides of conflicts)
    /// until two passes in a row move nothing.
    async fn settle(&mut self) -> Result<(), String> {
        for a in &self.actors {
            a.remote.set_gated(false);
        }
        self.log("settling: faults off".into());
        self.trace_rows().await;
        for i in 0..self.actors.len() {
            // A narrowed scope is widened to everything again (`ferry scope
            // add ''`): a replica holds all of the bucket only then.
            let b = self.actors[i].bucket.clone();
            let scopes = b.scopes().map_err(|e| e.to_string())?;
            if scopes.iter().any(|s| s.is_empty()) {
                continue;
            }
            let line = match b.add_scope("").await {
                Ok(r) => format!("pulled {} conflicts {}", r.pulled, r.conflicts.len()),
                // The scope is wide already; its pull stopped at the rail
                // (every key it synced under a prefix is gone), which the
                // passes below answer as the user would.
                Err(e @ crate::error::Error::EmptyRemote { .. }) => plain(&e),
                Err(e) => return Err(format!("settling, r{i} scope add '': {e}")),
            };
            self.log(format!(
                "settle: r{i} scope {scopes:?} widened to everything: {line}"
            ));
        }
        let mut quiet = 0;
        for pass in 0..16 {
            let mut moved = 0;
            for i in 0..self.actors.len() {
                // Only a foreign writer needs a full listing to be seen.
                let full = pass == 0 && self.foreign_writes;
                let b = self.actors[i].bucket.clone();
                let opts = SyncOptions {
                    full,
                    // Time passes while settling: keys waiting out a
                    // retry delay run now.
                    retry: true,
                    ..Default::default()
                };
                let r = match b.sync(opts.clone()).await {
                    // Every key left the store (deleted by the foreign
                    // writer or by replicas): the rail stops the run, and
                    // the user, who deleted them, takes the deletes.
                    Err(crate::error::Error::EmptyRemote { .. }) => {
                        self.log(format!(
                            "settle {pass}: r{i} the store lists nothing it synced: \
                             taking the deletes (--accept-remote-deletes)"
                        ));
                        b.sync(SyncOptions {
                            accept_remote_deletes: true,
                            ..opts
                        })
                        .await
                    }
                    other => other,
                }
                .map_err(|e| format!("settling, r{i} sync failed: {e}"))?;
                // A version sealed with a smaller stamp than one this
                // replica saw is accepted once its writer's journal record
                // names it; that record may still be waiting for the
                // writer's next sync (its append failed before settling).
                // The first pass lets that much through, never a later one.
                let (waiting, errors): (Vec<_>, Vec<_>) = r
                    .errors
                    .iter()
                    .partition(|e| pass == 0 && e.cause.contains("a rollback or replay"));
                if !errors.is_empty() {
                    return Err(format!(
                        "settling, r{i} sync reported errors with faults off: {errors:?}"
                    ));
                }
                for e in &waiting {
                    self.log(format!(
                        "settle {pass}: r{i} refused {} until its writer's journal record names it",
                        e.key
                    ));
                    moved += 1;
                }
                moved += r.pushed + r.pulled + r.deleted_local + r.deleted_remote;
                let line = format!(
                    "settle {pass}: r{i} pushed {} pulled {} deleted {}/{} conflicts {}",
                    r.pushed,
                    r.pulled,
                    r.deleted_remote,
                    r.deleted_local,
                    r.conflicts.len()
                );
                self.log(line);
                self.note_journaled(i).await;
                self.trace_rows().await;
                for c in b.conflicts().await.map_err(|e| e.to_string())? {
                    let before = keys_of(&b).await?;
                    let done = match b.resolve(&c.key, Resolution::KeepBoth).await {
                        Ok(done) => done,
                        // The remote's version is refused until its
                        // writer's journal record names it (as for a sync,
                        // above): in the first pass only. The local copy
                        // may have been made already.
                        Err(e @ crate::error::Error::Rollback { .. }) if pass == 0 => {
                            for copy in keys_of(&b).await?.difference(&before) {
                                let (_, data) = b
                                    .get_bytes(copy)
                                    .await
                                    .map_err(|e| format!("settling, r{i} reading {copy}: {e}"))?;
                                self.model.copied(i, ContentHash::of(&data));
                            }
                            self.log(format!(
                                "settle {pass}: r{i} resolve {} refused until its writer's journal record names it: {}",
                                c.key,
                                plain(&e)
                            ));
                            moved += 1;
                            continue;
                        }
                        Err(e) => return Err(format!("settling, r{i} resolve {}: {e}", c.key)),
                    };
                    self.log(format!(
                        "settle {pass}: r{i} resolved {} ({:?}) keeping both: {:?}",
                        c.key, c.reason, done.renamed_to
                    ));
                    if let Some(copy) = &done.renamed_to {
                        let (_, data) = b
                            .get_bytes(copy)
                            .await
                            .map_err(|e| format!("settling, r{i} reading {copy}: {e}"))?;
                        self.model.copied(i, ContentHash::of(&data));
                    }
                    moved += 1;
                }
            }
            // Two quiet passes: a replica's journal record written late in
            // one pass (its earlier appends failed) is read in the next.
            quiet = if moved == 0 { quiet + 1 } else { 0 };
            if quiet == 2 {
                return Ok(());
            }
        }
        Err("the replicas did not settle in 16 passes".into())
    }

    /// Tells the model when replica `i` holds no tombstone and no pending
    /// journal entry (its deletes and their records reached the store).
    async fn note_journaled(&mut self, i: usize) {
        let idle = self.actors[i]
            .bucket
            .with_reader(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM journal_pending) \
                     + (SELECT count(*) FROM objects WHERE present = 0)",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .is_ok_and(|n| n == 0);
        if idle {
            self.model.journaled(i);
        }
    }

    /// Each replica's rows, when the configuration asks for them
    /// (`trace_rows`).
    async fn trace_rows(&mut self) {
        if !self.config.trace_rows {
            return;
        }
        let names = self.model.names();
        for i in 0..self.actors.len() {
            let b = self.actors[i].bucket.clone();
            type Row = (String, bool, String, Option<String>);
            let rows: Vec<Row> = b
                .with_reader(|c| {
                    let mut st = c.prepare(
                        "SELECT key, present, state, base_etag FROM objects ORDER BY key",
                    )?;
                    let rows = st
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect::<std::result::Result<Vec<Row>, _>>()?;
                    Ok(rows)
                })
                .unwrap_or_default();
            for (key, present, state, base_etag) in rows {
                let name = |h: Option<ContentHash>| {
                    h.map(|h| names.get(&h).cloned().unwrap_or_else(|| h.to_hex()))
                };
                let value = if present {
                    name(seen_hash(&b, &self.store, &self.aliases, &key).await)
                } else {
                    None
                };
                let agreed = name(base_etag.as_deref().and_then(|e| self.store.content_of(e)));
                self.log(format!(
                    "    r{i} row {key}: {state}, holds {}, agreed {} at {}",
                    value.as_deref().unwrap_or("nothing"),
                    agreed.as_deref().unwrap_or("none"),
                    base_etag.as_deref().unwrap_or("no etag"),
                ));
            }
        }
    }

    /// The invariants, once settled.
    async fn check(&mut self) -> Result<(), String> {
        let mut views = Vec::new();
        for (i, a) in self.actors.iter().enumerate() {
            views.push(
                model::view(&a.bucket)
                    .await
                    .map_err(|e| format!("reading r{i}: {e}"))?,
            );
            model::check_replica(i, &a.bucket).await?;
        }
        if !self.config.encrypted {
            let remote = model::remote_view(&self.store);
            model::check_convergence(&views, &remote, "the store")?;
        }
        let fresh = self.fresh_view().await?;
        model::check_convergence(&views, &fresh, "a device joining now")?;
        self.model.check(&views[0])
    }

    /// What a device joining once the replicas settled sees: a new replica
    /// (joining with the passphrase when encrypted) that pulls everything,
    /// straight from the store.
    async fn fresh_view(&mut self) -> Result<View, String> {
        let dir = self.actors[0]
            .dir
            .parent()
            .map(|p| p.join("fresh"))
            .ok_or("no directory for the fresh replica")?;
        let err = |e: crate::Error| format!("a device joining now: {e}");
        let bucket = make_replica(&dir, &self.store, &self.config)
            .await
            .map_err(err)?;
        bucket.set_clock(Arc::new(ManualClock::at(self.store_clock.now_ms())));
        bucket
            .set_sync_config(sync_config(false, self.config.journal_retain))
            .await
            .map_err(err)?;
        bucket
            .attach(Arc::new(self.store.clone()))
            .await
            .map_err(err)?;
        let r = bucket.sync(SyncOptions::default()).await.map_err(err)?;
        if !r.errors.is_empty() || !r.conflicts.is_empty() {
            return Err(format!(
                "a device joining now: its first sync reported errors {:?} and conflicts {:?}",
                r.errors, r.conflicts
            ));
        }
        self.log(format!("a device joining now pulled {}", r.pulled));
        model::view(&bucket).await.map_err(err)
    }
}

/// The view of every replica's objects: key → (bytes, content type, metadata).
pub(crate) type View = BTreeMap<String, (Bytes, String, Metadata)>;
