//! The change journal, against every remote kind: an idle replica learns
//! "nothing changed" from one request; ferry writers' changes arrive
//! through it; a writer that is not ferry is caught by the full reconcile;
//! a replica away longer than the kept history reconciles in full; two
//! writers never share a sequence number; a crash between an object's
//! write and its journal record loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ferry::remote::layer::Layer;
use ferry::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject,
    RemoteReader, SharedRemote,
};
use ferry::{Bucket, PutOptions, SyncConfig, SyncOptions};

use super::{replica_with, Backend, Replica};

type Hook = Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Counts requests, and can fail or interpose on the first journal write.
pub struct Watched {
    pub inner: SharedRemote,
    pub requests: AtomicU64,
    /// Fail the next journal record write (a crash or an outage there).
    pub fail_journal: AtomicBool,
    /// Run once before the first journal record write is forwarded.
    pub before_journal: std::sync::Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watched")
    }
}

impl Watched {
    pub fn new(inner: SharedRemote) -> Arc<Self> {
        Arc::new(Watched {
            inner,
            requests: AtomicU64::new(0),
            fail_journal: AtomicBool::new(false),
            before_journal: std::sync::Mutex::new(None),
        })
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn seen(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Layer for Watched {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }
    async fn list_page(
        &self,
        p: &str,
        t: Option<String>,
    ) -> Result<ferry::remote::RemotePage, RemoteError> {
        self.seen();
        self.inner.list_page(p, t).await
    }
    async fn head(&self, k: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.seen();
        self.inner.head(k).await
    }
    async fn get(&self, k: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.seen();
        self.inner.get(k).await
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        self.seen();
        if r.key.starts_with(ferry::journal::STREAMS) {
            let hook = self.before_journal.lock().unwrap().take();
            if let Some(hook) = hook {
                hook().await;
            }
            if self.fail_journal.swap(false, Ordering::SeqCst) {
                return Err(RemoteError::new(
                    RemoteErrorKind::Terminal,
                    self.inner.endpoint(),
                    "test: the process died before the journal record was written",
                ));
            }
        }
        self.inner.put(r, b, c).await
    }
    async fn delete(&self, k: &str, c: Precondition) -> Result<(), RemoteError> {
        self.seen();
        self.inner.delete(k, c).await
    }
}

fn journal_config() -> SyncConfig {
    SyncConfig {
        full_sync_interval_secs: 3600,
        ..SyncConfig::default()
    }
}

async fn journal_replica(be: &dyn Backend) -> (Replica, Arc<Watched>) {
    let r = replica_with(be, journal_config()).await;
    let watched = Watched::new(be.remote());
    r.bucket.attach(watched.clone()).await.unwrap();
    (r, watched)
}

async fn sync(b: &Bucket) -> ferry::SyncReport {
    b.sync(SyncOptions::default()).await.unwrap()
}

async fn put(b: &Bucket, key: &str, data: &[u8]) {
    b.put(key, data.to_vec(), PutOptions::default())
        .await
        .unwrap();
}

async fn full(b: &Bucket) -> ferry::SyncReport {
    b.sync(SyncOptions {
        full: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// After a first (full) sync, a sync with nothing to do is one request
/// (the LIST of the journal); another replica's change arrives through the
/// journal without a full listing, in a few requests.
pub async fn idle_sync_is_one_request_and_changes_arrive_by_journal(be: &dyn Backend) {
    let (a, _) = journal_replica(be).await;
    let (c, watched) = journal_replica(be).await;
    for i in 0..20 {
        put(&a.bucket, &format!("k/{i:02}"), b"v").await;
    }
    let r = sync(&a.bucket).await;
    assert_eq!(r.pushed, 20, "{r:?}");
    let r = sync(&c.bucket).await;
    assert!(r.full, "a replica's first run is a full reconcile: {r:?}");
    assert_eq!(r.pulled, 20, "{r:?}");
    // Idle: one LIST of the journal, nothing else.
    let before = watched.count();
    let r = sync(&c.bucket).await;
    assert!(!r.full, "{r:?}");
    assert_eq!((r.pushed, r.pulled), (0, 0), "{r:?}");
    assert_eq!(watched.count() - before, 1, "an idle sync is one request");
    // One change on the other replica: read from the journal.
    put(&a.bucket, "k/07", b"changed").await;
    assert_eq!(sync(&a.bucket).await.pushed, 1);
    let before = watched.count();
    let r = sync(&c.bucket).await;
    assert!(!r.full, "{r:?}");
    assert_eq!(r.pulled, 1, "{r:?}");
    let spent = watched.count() - before;
    assert!(
        spent <= 4,
        "LIST, GET record, HEAD, GET object: {spent} requests"
    );
    assert_eq!(&c.bucket.get_bytes("k/07").await.unwrap().1[..], b"changed");
    // A delete travels the same way.
    assert!(a.bucket.delete("k/03").await.unwrap());
    sync(&a.bucket).await;
    let r = sync(&c.bucket).await;
    assert_eq!((r.deleted_local, r.full), (1, false), "{r:?}");
    // Its own records do not make a replica do anything.
    let before = watched.count();
    put(&c.bucket, "from-c", b"c").await;
    assert_eq!(sync(&c.bucket).await.pushed, 1);
    let spent_push = watched.count() - before;
    let before = watched.count();
    let r = sync(&c.bucket).await;
    assert_eq!((r.pushed, r.pulled), (0, 0), "{r:?}");
    assert_eq!(
        watched.count() - before,
        1,
        "after a push ({spent_push} requests)"
    );
}

/// A plain client's write is not in the journal: incremental runs do not
/// see it, the full reconcile (on schedule or `full`) does.
pub async fn foreign_writer_is_caught_by_the_full_reconcile(be: &dyn Backend) {
    let (a, _) = journal_replica(be).await;
    put(&a.bucket, "mine", b"m").await;
    sync(&a.bucket).await;
    be.foreign_put("theirs.txt", b"from a plain client", "text/plain")
        .await;
    let r = sync(&a.bucket).await;
    assert!(!r.full && r.pulled == 0, "{r:?}");
    let r = full(&a.bucket).await;
    assert!(r.full, "{r:?}");
    assert_eq!(r.pulled, 1, "{r:?}");
    assert_eq!(
        &a.bucket.get_bytes("theirs.txt").await.unwrap().1[..],
        b"from a plain client"
    );
    // The schedule: with an interval of 0 every run is a full reconcile.
    be.foreign_put("theirs-2.txt", b"again", "text/plain").await;
    let mut cfg = journal_config();
    cfg.full_sync_interval_secs = 0;
    a.bucket.set_sync_config(cfg).await.unwrap();
    let r = sync(&a.bucket).await;
    assert!(r.full && r.pulled == 1, "{r:?}");
}

/// A replica away for longer than the kept history (the journal was
/// compacted past its position) does a full reconcile and misses nothing.
pub async fn replica_away_longer_than_the_history_reconciles_in_full(be: &dyn Backend) {
    let cfg = SyncConfig {
        journal_retain: 2,
        ..journal_config()
    };
    let a = replica_with(be, cfg).await;
    let c = replica_with(be, cfg).await;
    put(&a.bucket, "k/0", b"0").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    for i in 1..8 {
        put(&a.bucket, &format!("k/{i}"), b"x").await;
        assert_eq!(sync(&a.bucket).await.pushed, 1);
    }
    let records = be
        .remote()
        .list(ferry::journal::STREAMS)
        .await
        .unwrap()
        .len();
    assert!(records <= 4, "compacted to at most 2 × retain: {records}");
    let r = sync(&c.bucket).await;
    assert!(r.full, "the history c needs is gone: {r:?}");
    assert_eq!(r.pulled, 7, "{r:?}");
}

/// Two writers append at the same moment: each to its own stream (no
/// number is shared between devices, so none can be lost, whatever the
/// store does with conditions); a third replica sees both changes.
pub async fn two_writers_never_share_a_sequence_number(be: &dyn Backend) {
    let (a, watched_a) = journal_replica(be).await;
    let b = Arc::new(replica_with(be, journal_config()).await);
    let (c, _) = journal_replica(be).await;
    put(&a.bucket, "seed", b"s").await;
    sync(&a.bucket).await;
    sync(&b.bucket).await;
    sync(&c.bucket).await;
    put(&a.bucket, "from-a", b"a").await;
    put(&b.bucket, "from-b", b"b").await;
    // b writes its record at the moment a is about to write its own.
    let other = b.clone();
    *watched_a.before_journal.lock().unwrap() = Some(Box::new(move || {
        let other = other.clone();
        Box::pin(async move {
            assert_eq!(
                other
                    .bucket
                    .sync(SyncOptions::default())
                    .await
                    .unwrap()
                    .pushed,
                1
            );
        })
    }));
    let r = sync(&a.bucket).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let mut seqs: Vec<(String, u64)> = be
        .remote()
        .list(ferry::journal::STREAMS)
        .await
        .unwrap()
        .iter()
        .filter_map(|o| ferry::journal::parse_name(&o.key))
        .collect();
    seqs.sort_unstable();
    let mut want = vec![
        (a.bucket.device_id().to_owned(), 1),
        (a.bucket.device_id().to_owned(), 2),
        (b.bucket.device_id().to_owned(), 1),
    ];
    want.sort_unstable();
    assert_eq!(seqs, want, "each device numbers its own records");
    let r = sync(&c.bucket).await;
    assert!(!r.full, "{r:?}");
    assert_eq!(r.pulled, 2, "{r:?}");
    assert!(c.bucket.exists("from-a").await.unwrap() && c.bucket.exists("from-b").await.unwrap());
}

/// The object is written, the journal record is not (the process died,
/// or the store failed just then): the next run writes the record, and
/// the other replicas get the change from the journal.
pub async fn crash_between_object_and_journal_write_loses_nothing(be: &dyn Backend) {
    let (a, watched) = journal_replica(be).await;
    let (c, _) = journal_replica(be).await;
    put(&a.bucket, "seed", b"s").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    put(&a.bucket, "late", b"written before the crash").await;
    watched.fail_journal.store(true, Ordering::SeqCst);
    let r = sync(&a.bucket).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    assert_eq!(r.errors.len(), 1, "the journal write failed: {r:?}");
    let r = sync(&c.bucket).await;
    assert_eq!(r.pulled, 0, "not journaled yet: {r:?}");
    let r = sync(&a.bucket).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let r = sync(&c.bucket).await;
    assert!(!r.full, "{r:?}");
    assert_eq!(r.pulled, 1, "{r:?}");
}

macro_rules! all_journal {
    ($backend:ident: $make:expr) => {
        suite!($backend: $make;
            idle_sync_is_one_request_and_changes_arrive_by_journal,
            foreign_writer_is_caught_by_the_full_reconcile,
            replica_away_longer_than_the_history_reconciles_in_full,
            two_writers_never_share_a_sequence_number,
            crash_between_object_and_journal_write_loses_nothing,
        );
    };
}

all_journal!(memory: super::super::backends::Memory::new());
all_journal!(folder: super::super::backends::Folder::new());
all_journal!(s3s: super::super::backends::S3Location::s3s().await);
all_journal!(moto: super::super::backends::S3Location::moto());
all_journal!(gcs: super::super::backends::GcsLocation::new());
all_journal!(azure: super::super::backends::AzureLocation::new().await);
all_journal!(webdav: super::super::backends::WebDavLocation::new().await);
all_journal!(webdav_apache: super::super::backends::WebDavLocation::apache().await);
all_journal!(webdav_nginx: super::super::backends::WebDavLocation::nginx().await);
