//! Regression tests for findings of issue 22 (review of the sync engine):
//! copied buckets (10), the index rebuild and the per-scope empty-listing
//! rail (12), rekey's retire (21), conditions on S3 multipart uploads (9),
//! foreign metadata-only rewrites (8), an S3 `If-Match` answered 404 (7), a version written during its
//! predecessor's push (2), a put landing while a state change waits (4) and a
//! delete whose answer was lost (5).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferry::remote::layer::Layer;
use ferry::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind, SharedRemote,
};
use ferry::{Bucket, BucketConfig, PutOptions, SyncConfig, SyncOptions};

use ferry::remote::memory::MemoryRemote;

use super::backends::{Folder, Memory, S3Location};
use super::Backend;

fn journal_config() -> SyncConfig {
    SyncConfig {
        full_sync_interval_secs: 3600,
        retry_base_delay_ms: 5,
        ..SyncConfig::default()
    }
}

async fn put(b: &Bucket, key: &str, data: &[u8]) {
    b.put(key, data.to_vec(), PutOptions::default())
        .await
        .unwrap();
}

async fn sync(b: &Bucket) -> ferry::SyncReport {
    b.sync(SyncOptions::default()).await.unwrap()
}

async fn bytes(b: &Bucket, key: &str) -> Option<Vec<u8>> {
    match b.get_bytes(key).await {
        Ok((_, data)) => Some(data.to_vec()),
        Err(ferry::Error::NotFound { .. }) => None,
        Err(e) => panic!("{key}: {e}"),
    }
}

/// `cp -r`, as a person would copy a bucket directory.
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn journal_bucket(dir: &Path, be: &dyn Backend) -> Bucket {
    journal_bucket_on(dir, be.remote()).await
}

/// Finding 10: a copied bucket directory gets its own device id at open
/// (a moved one keeps its id), and the original, the copy and a third
/// replica all learn each other's changes through the journal.
async fn copied_bucket_gets_its_own_device_id(be: &dyn Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, copy_dir_path, c_dir) = (
        tmp.path().join("a"),
        tmp.path().join("copy"),
        tmp.path().join("c"),
    );
    let a = journal_bucket(&a_dir, be).await;
    put(&a, "shared", b"before the copy").await;
    assert_eq!(sync(&a).await.pushed, 1);
    let original_id = a.device_id().to_owned();
    drop(a);
    copy_dir(&a_dir, &copy_dir_path);

    // A move keeps the index file, and so the id.
    let moved_dir = tmp.path().join("a-moved");
    std::fs::rename(&a_dir, &moved_dir).unwrap();
    let a = Bucket::open(&moved_dir).await.unwrap();
    assert_eq!(a.device_id(), original_id, "a moved bucket keeps its id");
    drop(a);
    std::fs::rename(&moved_dir, &a_dir).unwrap();

    let a = Bucket::open(&a_dir).await.unwrap();
    let copy = Bucket::open(&copy_dir_path).await.unwrap();
    assert_eq!(a.device_id(), original_id, "the original keeps its id");
    assert_ne!(
        copy.device_id(),
        original_id,
        "the copy has an id of its own"
    );
    // Opened again, the copy keeps its new id.
    let copy_id = copy.device_id().to_owned();
    drop(copy);
    let copy = Bucket::open(&copy_dir_path).await.unwrap();
    assert_eq!(copy.device_id(), copy_id);
    a.attach(be.remote()).await.unwrap();
    copy.attach(be.remote()).await.unwrap();
    let c = journal_bucket(&c_dir, be).await;
    sync(&c).await;
    assert_eq!(
        bytes(&c, "shared").await.as_deref(),
        Some(&b"before the copy"[..])
    );

    // Each writes a key; incremental runs carry them everywhere.
    put(&a, "from-a", b"a").await;
    put(&copy, "from-copy", b"copy").await;
    put(&c, "from-c", b"c").await;
    for _ in 0..2 {
        for b in [&a, &copy, &c] {
            let r = sync(b).await;
            assert!(r.errors.is_empty() && r.conflicts.is_empty(), "{r:?}");
        }
    }
    for (name, b) in [("original", &a), ("copy", &copy), ("third", &c)] {
        for (key, want) in [
            ("from-a", &b"a"[..]),
            ("from-copy", b"copy"),
            ("from-c", b"c"),
        ] {
            assert_eq!(bytes(b, key).await.as_deref(), Some(want), "{name}: {key}");
        }
    }
    // And an edit of the shared key on the copy reaches the original.
    put(&copy, "shared", b"edited on the copy").await;
    sync(&copy).await;
    let r = sync(&a).await;
    assert!(!r.full, "{r:?}");
    assert_eq!(
        bytes(&a, "shared").await.as_deref(),
        Some(&b"edited on the copy"[..])
    );
}

/// Refuses journal record writes while `refuse` is set (an outage
/// between an object's write and its journal record).
#[derive(Debug)]
struct NoJournal {
    inner: SharedRemote,
    refuse: AtomicBool,
}

#[async_trait::async_trait]
impl Layer for NoJournal {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        if r.key.starts_with(ferry::journal::STREAMS) && self.refuse.load(Ordering::SeqCst) {
            return Err(RemoteError::new(
                RemoteErrorKind::Terminal,
                self.inner.endpoint(),
                "test: journal writes refused",
            ));
        }
        self.inner.put(r, b, c).await
    }
}

/// Finding 12: a remote write whose journal record was not written yet
/// survives `rebuild_index`, and the record is written by the next sync:
/// another replica learns the change from the journal.
async fn rebuild_keeps_unjournaled_writes(be: &dyn Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let a = journal_bucket(&a_dir, be).await;
    let b = journal_bucket(&tmp.path().join("b"), be).await;
    put(&a, "old", b"o").await;
    sync(&a).await;
    assert!(sync(&b).await.full);
    let gate = Arc::new(NoJournal {
        inner: be.remote(),
        refuse: AtomicBool::new(true),
    });
    a.attach(gate.clone()).await.unwrap();
    put(&a, "new", b"pushed, not journaled").await;
    let r = sync(&a).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    assert!(!r.errors.is_empty(), "the journal write failed: {r:?}");
    drop(a);
    let (a, _report) = Bucket::rebuild_index(&a_dir).await.unwrap();
    a.attach(be.remote()).await.unwrap();
    let r = sync(&a).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let r = sync(&b).await;
    assert!(!r.full, "an incremental run: {r:?}");
    assert_eq!(
        bytes(&b, "new").await.as_deref(),
        Some(&b"pushed, not journaled"[..]),
        "the write was journaled after the rebuild: {r:?}"
    );
}

/// Finding 12: the empty-listing rail checks each scope prefix: a prefix
/// wiped on the remote stops a full run even though another scope lists
/// objects, and nothing is deleted.
async fn empty_listing_rail_checks_each_scope(be: &dyn Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let a = journal_bucket(&tmp.path().join("a"), be).await;
    a.add_scope("docs/").await.unwrap();
    a.add_scope("photos/").await.unwrap();
    for i in 0..6 {
        put(&a, &format!("docs/{i}"), b"d").await;
    }
    for i in 0..2 {
        put(&a, &format!("photos/{i}"), b"p").await;
    }
    assert_eq!(sync(&a).await.pushed, 8);
    // photos/ is wiped on the remote (or its listing comes back empty).
    let remote = be.remote();
    for i in 0..2 {
        remote
            .delete(&format!("photos/{i}"), Precondition::None)
            .await
            .unwrap();
    }
    let err = a
        .sync(SyncOptions {
            full: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    match &err {
        ferry::Error::EmptyRemote { scope, synced, .. } => {
            assert_eq!((scope.as_str(), *synced), ("photos/", 2), "{err}");
        }
        other => panic!("expected EmptyRemote, got {other}"),
    }
    for i in 0..2 {
        assert!(bytes(&a, &format!("photos/{i}")).await.is_some(), "kept");
    }
    // Accepted by name, the deletes go through.
    let r = a
        .sync(SyncOptions {
            full: true,
            accept_remote_deletes: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.deleted_local, 2, "{r:?}");
}

/// Holds the rekey's key-file write until the test lets it go on: after
/// the key file is switched, before the old names are retired.
#[derive(Debug)]
struct PauseAfterKeyFile {
    inner: SharedRemote,
    switched: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    resume: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl Layer for PauseAfterKeyFile {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        let etag = self.inner.put(r, b, c).await?;
        if r.key == ferry::remote::encrypted::KEY_FILE {
            let switched = self.switched.lock().unwrap().take();
            if let Some(tx) = switched {
                let _ = tx.send(());
                if let Some(rx) = self.resume.lock().await.take() {
                    let _ = rx.await;
                }
            }
        }
        Ok(etag)
    }
}

/// Holds a device's first object write (not `.ferry/`) until the test
/// lets it go on: after its run read the key file, before its push.
#[derive(Debug)]
struct PauseBeforeObjectPut {
    inner: SharedRemote,
    reached: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    go: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl Layer for PauseBeforeObjectPut {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        if !r.key.starts_with(".ferry/") {
            let reached = self.reached.lock().unwrap().take();
            if let Some(tx) = reached {
                let _ = tx.send(());
                if let Some(rx) = self.go.lock().await.take() {
                    let _ = rx.await;
                }
            }
        }
        self.inner.put(r, b, c).await
    }
}

/// Finding 21: a device still on the old key pushes between rekey's
/// key-file switch and its retire step (its run read the key file before
/// the switch: every run of an encrypted bucket reads it before its first
/// write, so only a run already past that check can): the retire deletes
/// only the version rekey re-sealed, so the version pushed meanwhile is
/// kept under its old name and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_retire_keeps_a_version_pushed_meanwhile() {
    use ferry::remote::encrypted::{inspect, RemoteMode};
    const PASS: &[u8] = b"correct horse battery staple";
    let kdf = crate::encryption::TEST_KDF;
    let memory = ferry::remote::memory::MemoryRemote::new();
    let remote: SharedRemote = Arc::new(memory.clone());
    let tmp = tempfile::tempdir().unwrap();
    let a = Bucket::create_encrypted(tmp.path().join("a"), BucketConfig::default(), PASS, kdf)
        .await
        .unwrap();
    a.set_sync_config(journal_config()).await.unwrap();
    a.attach(remote.clone()).await.unwrap();
    put(&a, "doc", b"v1 from a").await;
    put(&a, "other", b"untouched").await;
    assert_eq!(sync(&a).await.pushed, 2);
    let RemoteMode::Encrypted(file) = inspect(remote.as_ref()).await.unwrap() else {
        panic!("the remote should be encrypted");
    };
    let b = Bucket::create_joining(
        tmp.path().join("b"),
        BucketConfig::default(),
        file,
        PASS,
        kdf,
    )
    .await
    .unwrap();
    b.set_sync_config(journal_config()).await.unwrap();
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let b_remote = Arc::new(PauseBeforeObjectPut {
        inner: remote.clone(),
        reached: std::sync::Mutex::new(Some(reached_tx)),
        go: tokio::sync::Mutex::new(Some(go_rx)),
    });
    b.attach(b_remote).await.unwrap();
    assert_eq!(sync(&b).await.pulled, 2);
    // B edits; its sync reads the key file (still the old one) and waits
    // at its push while A's rekey runs up to the switch, then pushes while
    // A's rekey is between switch and retire.
    put(&b, "doc", b"v2 from b, on the old key").await;

    let (switched_tx, switched_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let paused = Arc::new(PauseAfterKeyFile {
        inner: remote.clone(),
        switched: std::sync::Mutex::new(Some(switched_tx)),
        resume: tokio::sync::Mutex::new(Some(resume_rx)),
    });
    let rekey = async {
        reached_rx.await.unwrap();
        a.rekey(paused, PASS, b"a new passphrase", kdf, None).await
    };
    let meanwhile = async {
        let run = b.sync(SyncOptions::default());
        let release = async {
            switched_rx.await.unwrap();
            let _ = go_tx.send(());
        };
        let (r, ()) = tokio::join!(run, release);
        let _ = resume_tx.send(());
        r.unwrap()
    };
    let (rekeyed, pushed_meanwhile) = tokio::join!(rekey, meanwhile);
    assert_eq!(pushed_meanwhile.pushed, 1, "{pushed_meanwhile:?}");
    let (_a, report) = rekeyed.unwrap();
    assert_eq!(report.kept, vec!["doc".to_owned()], "{report:?}");
    assert_eq!(report.retired, 1, "only `other` retired: {report:?}");
    // B's version is still on the remote under its old name (readable with
    // the old key): two names for `doc`, one for `other`.
    let names: Vec<String> = remote
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with(".ferry/"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

macro_rules! findings_suite {
    ($backend:ident: $make:expr) => {
        suite!($backend: $make;
            copied_bucket_gets_its_own_device_id,
            rebuild_keeps_unjournaled_writes,
            empty_listing_rail_checks_each_scope,
        );
    };
}

findings_suite!(memory: super::Memory::new());
findings_suite!(folder: super::Folder::new());

/// Finding 9: the conditions of the second write path (S3's
/// `CompleteMultipartUpload`) are probed on their own. A store enforcing
/// them on every path is trusted; one that ignores them only there is
/// found out, and only the writes that may take that path are emulated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_conditions_are_probed_apart_memory() {
    use ferry::remote::emulated::probe;
    let enforcing = MemoryRemote::new();
    let p = probe(&enforcing, "dev").await.unwrap();
    assert!(p.conditional_put && p.conditional_delete, "{p:?}");
    assert_eq!(p.conditional_multipart, Some(true), "{p:?}");
    let ignoring = MemoryRemote::new();
    ignoring.ignore_multipart_conditions(true);
    let p = probe(&ignoring, "dev").await.unwrap();
    assert!(p.conditional_put && p.conditional_delete, "{p:?}");
    assert_eq!(p.conditional_multipart, Some(false), "{p:?}");

    // A replica on the ignoring store: another client overwrites a key;
    // the replica's metadata-only rewrite (the same bytes: the second
    // path, where this store ignores If-Match) is checked by HEAD and
    // becomes a conflict.
    let be = Memory(ignoring.clone());
    let tmp = tempfile::tempdir().unwrap();
    let a = journal_bucket(&tmp.path().join("a"), &be).await;
    put(&a, "doc", b"v1").await;
    assert_eq!(sync(&a).await.pushed, 1);
    ignoring.put_foreign("doc", b"from another client".to_vec(), "text/plain");
    let mut metadata = ferry::Metadata::new();
    metadata.insert("note".into(), "edited".into());
    a.put(
        "doc",
        b"v1".to_vec(),
        PutOptions {
            content_type: None,
            metadata,
        },
    )
    .await
    .unwrap();
    let r = sync(&a).await;
    assert_eq!(r.pushed, 0, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(
        be.foreign_get("doc").await.unwrap().data,
        b"from another client",
        "the other client's write survives"
    );
}

/// Finding 9, on moto (5.2.6 measured): `If-None-Match` is enforced on
/// `CompleteMultipartUpload` but `If-Match` is not (while `PutObject`
/// enforces both). The probe finds it, and a metadata-only rewrite (the
/// multipart path: same bytes) over another client's write is a conflict,
/// not an overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_conditions_are_probed_apart_moto() {
    use ferry::remote::emulated::probe;
    let be = S3Location::moto();
    let p = probe(be.remote().as_ref(), "dev").await.unwrap();
    assert!(p.conditional_put && p.conditional_delete, "{p:?}");
    assert_eq!(p.conditional_multipart, Some(false), "{p:?}");

    let tmp = tempfile::tempdir().unwrap();
    let a = journal_bucket(&tmp.path().join("a"), &be).await;
    put(&a, "doc", b"the same bytes").await;
    assert_eq!(sync(&a).await.pushed, 1);
    be.foreign_put("doc", b"another client's bytes", "text/plain")
        .await;
    // Only the metadata changes here: S3 rewrites the same bytes as a
    // one-part multipart upload (a new ETag).
    let mut metadata = ferry::Metadata::new();
    metadata.insert("note".into(), "edited".into());
    a.put(
        "doc",
        b"the same bytes".to_vec(),
        PutOptions {
            content_type: None,
            metadata,
        },
    )
    .await
    .unwrap();
    let r = sync(&a).await;
    assert_eq!(r.pushed, 0, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(
        be.foreign_get("doc").await.unwrap().data,
        b"another client's bytes",
        "the other client's write survives"
    );
}

/// Finding 8: a foreign metadata-only rewrite on S3 (`CopyObject` with
/// `REPLACE`: same MD5 ETag, so `If-Match` holds, and an incremental run
/// lists nothing) meets a local edit: the push becomes a conflict and the
/// foreign metadata stays on the remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_metadata_rewrite_is_not_overwritten_moto() {
    let be = S3Location::moto();
    let tmp = tempfile::tempdir().unwrap();
    let a = journal_bucket(&tmp.path().join("a"), &be).await;
    let mut metadata = ferry::Metadata::new();
    metadata.insert("owner".into(), "a".into());
    a.put(
        "doc.txt",
        b"content".to_vec(),
        PutOptions {
            content_type: Some("text/plain".into()),
            metadata,
        },
    )
    .await
    .unwrap();
    assert_eq!(sync(&a).await.pushed, 1);
    let r = sync(&a).await;
    assert!(!r.full, "{r:?}");
    be.foreign_replace_metadata("doc.txt", "text/plain", &[("owner", "someone else")])
        .await;
    put(&a, "doc.txt", b"edited here").await;
    let r = sync(&a).await;
    assert!(!r.full, "an incremental run: {r:?}");
    assert_eq!(r.pushed, 0, "{r:?}");
    assert_eq!(
        r.conflicts
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>(),
        ["doc.txt"],
        "{r:?}"
    );
    let remote = be.foreign_get("doc.txt").await.unwrap();
    assert_eq!(remote.data, b"content");
    assert_eq!(
        remote.metadata.get("owner").map(String::as_str),
        Some("someone else"),
        "the foreign metadata is kept: {remote:?}"
    );
    // The full reconcile agrees: still one conflict, nothing pushed.
    let r = a
        .sync(SyncOptions {
            full: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((r.pushed, r.conflicts.len()), (0, 1), "{r:?}");
}

/// Finding 7: S3 answers an `If-Match` PUT on a key deleted meanwhile
/// with 404 NoSuchKey (moto as AWS does). An incremental run pushing a
/// local edit over a key another client deleted makes a conflict (edited
/// here, deleted there), as the delete path does: the edit is not pushed
/// as if nothing happened, nor parked as a terminal failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_over_a_key_deleted_by_another_client_is_a_conflict_moto() {
    let be = S3Location::moto();
    let tmp = tempfile::tempdir().unwrap();
    let a = journal_bucket(&tmp.path().join("a"), &be).await;
    put(&a, "doc.txt", b"agreed").await;
    assert_eq!(sync(&a).await.pushed, 1);
    let r = sync(&a).await;
    assert!(!r.full, "{r:?}");
    be.foreign_delete("doc.txt").await;
    put(&a, "doc.txt", b"edited here").await;
    let r = sync(&a).await;
    assert!(!r.full, "an incremental run (it lists nothing): {r:?}");
    assert_eq!(r.pushed, 0, "{r:?}");
    assert!(r.errors.is_empty(), "no failure is parked: {r:?}");
    assert_eq!(
        r.conflicts
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>(),
        ["doc.txt"],
        "{r:?}"
    );
    let status = a.status().await.unwrap();
    assert_eq!((status.failed, status.conflicts), (0, 1), "{status:?}");
    assert!(be.foreign_get("doc.txt").await.is_none(), "not pushed");
    assert_eq!(
        bytes(&a, "doc.txt").await.as_deref(),
        Some(&b"edited here"[..])
    );
    // Keeping the local version puts it back on the store.
    a.resolve("doc.txt", ferry::Resolution::KeepLocal)
        .await
        .unwrap();
    let r = sync(&a).await;
    assert!(r.conflicts.is_empty() && r.errors.is_empty(), "{r:?}");
    assert!(a.conflicts().await.unwrap().is_empty());
    assert_eq!(
        be.foreign_get("doc.txt").await.unwrap().data,
        b"edited here"
    );
}

/// Runs a one-shot future right before forwarding the first PUT of `key`
/// (and, with `on_delete`, the first DELETE of it instead).
struct BeforeFirst {
    inner: SharedRemote,
    key: String,
    on_delete: bool,
    hook: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for BeforeFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeFirst")
    }
}

impl BeforeFirst {
    fn new(
        inner: SharedRemote,
        key: &str,
        on_delete: bool,
        hook: futures::future::BoxFuture<'static, ()>,
    ) -> BeforeFirst {
        BeforeFirst {
            inner,
            key: key.to_owned(),
            on_delete,
            hook: std::sync::Mutex::new(Some(hook)),
        }
    }

    async fn fire(&self, key: &str, delete: bool) {
        if key != self.key || delete != self.on_delete {
            return;
        }
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
    }
}

#[async_trait::async_trait]
impl Layer for BeforeFirst {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        self.fire(&r.key, false).await;
        self.inner.put(r, b, c).await
    }

    async fn delete(&self, k: &str, c: Precondition) -> Result<(), RemoteError> {
        self.fire(k, true).await;
        self.inner.delete(k, c).await
    }
}

/// Applies the first delete of a key on the store, then reports a reset
/// connection: the answer is lost.
#[derive(Debug)]
struct LoseDeleteAnswer {
    inner: SharedRemote,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Layer for LoseDeleteAnswer {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn delete(&self, k: &str, c: Precondition) -> Result<(), RemoteError> {
        let result = self.inner.delete(k, c).await;
        if result.is_ok() && !k.starts_with(".ferry/") && self.armed.swap(false, Ordering::SeqCst) {
            return Err(RemoteError::new(
                RemoteErrorKind::Retryable,
                self.inner.endpoint(),
                "connection reset (test: answer lost)",
            ));
        }
        result
    }
}

/// A bucket with the journal settings, attached to `remote`.
async fn journal_bucket_on(dir: &Path, remote: SharedRemote) -> Bucket {
    let b = Bucket::create(dir, BucketConfig::default()).await.unwrap();
    b.set_sync_config(journal_config()).await.unwrap();
    b.attach(remote).await.unwrap();
    b
}

/// Finding 2: a new version is written while the previous one is being
/// pushed; the writer removes the old version's blob, so the PUT finds its
/// file gone. That is no failure of the key: the new version is pushed by
/// the next run, never parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_written_during_its_predecessors_push_is_pushed_next() {
    let store = MemoryRemote::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = Bucket::create(tmp.path().join("a"), BucketConfig::default())
        .await
        .unwrap();
    a.set_sync_config(journal_config()).await.unwrap();
    let (v1, v2) = (vec![1u8; 300_000], vec![2u8; 300_000]);
    put(&a, "doc", &v1).await;
    let writer = a.clone();
    let hook = Box::pin(async move { put(&writer, "doc", &v2).await });
    let layer = BeforeFirst::new(Arc::new(store.clone()), "doc", false, hook);
    a.attach(Arc::new(layer)).await.unwrap();

    let r = sync(&a).await;
    assert!(
        r.errors.is_empty(),
        "the replaced version is no failure: {r:?}"
    );
    let r = sync(&a).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    let data = store.snapshot().remove("doc").unwrap().0;
    assert_eq!(&data[..], &vec![2u8; 300_000][..]);
    let status = a.status().await.unwrap();
    assert_eq!((status.failed, status.dirty), (0, 0), "{status:?}");
}

/// Finding 4: a put that lands while a `SetState { Synced }` planned for
/// the key waits its turn must not be marked synced: the record checks the
/// row is still the version planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_landing_while_a_state_change_waits_stays_dirty() {
    let store = MemoryRemote::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = Bucket::create(tmp.path().join("a"), BucketConfig::default())
        .await
        .unwrap();
    a.set_sync_config(journal_config()).await.unwrap();
    a.attach(Arc::new(store.clone())).await.unwrap();
    put(&a, "doc", b"agreed").await;
    sync(&a).await;
    // The same bytes again: dirty, and a run only marks it synced.
    put(&a, "doc", b"agreed").await;
    assert_eq!(a.head("doc").await.unwrap().state, ferry::SyncState::Dirty);
    // While that run pushes another key, a new version of `doc` lands.
    put(&a, "a-first", b"pushed first").await;
    let writer = a.clone();
    let hook = Box::pin(async move { put(&writer, "doc", b"new, unpushed").await });
    let layer = BeforeFirst::new(Arc::new(store.clone()), "a-first", false, hook);
    a.attach(Arc::new(layer)).await.unwrap();
    sync(&a).await;
    assert_eq!(
        a.head("doc").await.unwrap().state,
        ferry::SyncState::Dirty,
        "the new version is not pushed yet"
    );
    let r = sync(&a).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    let data = store.snapshot().remove("doc").unwrap().0;
    assert_eq!(&data[..], b"new, unpushed");
}

/// Finding 5: a remote delete whose answer was lost is no conflict: the
/// next attempt finds the key gone and records the delete, and the journal
/// names it, so another replica's incremental run deletes its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_answer_was_lost_is_journaled_not_a_conflict() {
    let store = MemoryRemote::new();
    let tmp = tempfile::tempdir().unwrap();
    let lose = Arc::new(LoseDeleteAnswer {
        inner: Arc::new(store.clone()),
        armed: AtomicBool::new(false),
    });
    let a = journal_bucket_on(&tmp.path().join("a"), lose.clone()).await;
    let b = journal_bucket(&tmp.path().join("b"), &Memory(store.clone())).await;
    put(&a, "doc", b"shared").await;
    sync(&a).await;
    sync(&b).await;
    assert_eq!(bytes(&b, "doc").await.as_deref(), Some(&b"shared"[..]));

    a.delete("doc").await.unwrap();
    lose.armed.store(true, Ordering::SeqCst);
    let first = sync(&a).await;
    let second = sync(&a).await;
    assert!(
        first.conflicts.is_empty() && second.conflicts.is_empty(),
        "{first:?} {second:?}"
    );
    assert!(a.conflicts().await.unwrap().is_empty());
    assert!(second.errors.is_empty(), "{second:?}");
    assert!(!lose.armed.load(Ordering::SeqCst), "the answer was lost");
    assert_eq!(bytes(&a, "doc").await, None);
    let r = sync(&b).await;
    assert!(!r.full, "an incremental run: {r:?}");
    assert_eq!(
        bytes(&b, "doc").await,
        None,
        "the journal named the delete: {r:?}"
    );
}
