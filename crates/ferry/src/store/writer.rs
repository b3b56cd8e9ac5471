//! The index writer: one thread per open bucket that applies writes in
//! groups, one SQLite transaction (and so one fsync) per group.
//!
//! Callers send a [`WriteOp`] and wait for its outcome; the thread takes
//! every op that is queued, applies each inside its own savepoint (so one
//! failure does not sink its neighbours), commits once, and only then
//! answers. An answer therefore means the write is durable. Blob files are
//! renamed into place inside the transaction, and blobs whose last reference
//! went away are deleted in a second transaction after the answers, both
//! under the index write lock (see `blobs`).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::metadata::Metadata;
use crate::state::SyncState;
use crate::store::blobs::BlobStore;
use crate::store::index::{self, ObjectMeta};
use crate::store::rows::{collect, current, enqueue, release_old, store_content, Content};

/// Most ops committed in one transaction.
const MAX_GROUP: usize = 512;

/// A new version of an object.
#[derive(Debug)]
pub(crate) struct NewObject {
    pub key: String,
    pub size: u64,
    pub hash: ContentHash,
    pub content: Content,
    pub content_type: String,
    pub metadata: Metadata,
    /// Encrypted buckets: the sealed metadata column (the plaintext above
    /// is only returned to the caller).
    pub sealed_meta: Option<String>,
    /// Digest of the content type and metadata (keyed when encrypted).
    pub meta_digest: crate::hash::MetaDigest,
    pub modified_ms: i64,
    /// Checked against the current row before anything is stored.
    pub condition: Option<PutCondition>,
}

/// One write.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Put(NewObject),
    Delete {
        key: String,
        /// Only if the key's current content has this hash.
        if_hash: Option<ContentHash>,
    },
    /// The outcome of a sync action (see `record`).
    Record(crate::store::record::SyncRecord),
}

/// What a conditional put ([`crate::Bucket::put_if`]) requires of the
/// key's current version; checked in the same index transaction that
/// records the write, so two conditional puts never both succeed against
/// one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Only if the key holds no object.
    IfAbsent,
    /// Only if the key's current content has this hash.
    IfHash(ContentHash),
}

/// What a write did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Put(ObjectMeta),
    Deleted(bool),
    /// Whether a sync record applied (false: the row changed meanwhile).
    Recorded(bool),
}

type Request = (WriteOp, oneshot::Sender<Result<Outcome>>);

/// Handle to the writer thread; dropping the bucket's last handle stops it.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection, blobs: BlobStore, clock: SharedClock) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let handle = thread::Builder::new()
            .name("ferry-index-writer".into())
            .spawn(move || run(conn, blobs, clock, rx))
            .map_err(|e| Error::io("starting the index writer", PathBuf::new(), e))?;
        Ok(Writer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Queues `op` and waits until it is durable (or failed).
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        {
            let guard = self.tx.lock().map_err(|_| Error::Closed)?;
            let tx = guard.as_ref().ok_or(Error::Closed)?;
            tx.send((op, reply)).map_err(|_| Error::Closed)?;
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Stops accepting writes and waits for the queued ones to finish.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(mut conn: Connection, blobs: BlobStore, clock: SharedClock, rx: mpsc::Receiver<Request>) {
    let path = conn.path().map(PathBuf::from).unwrap_or_default();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let mut garbage = Vec::new();
        let results = apply_group(&mut conn, &blobs, &clock, ops, &mut garbage, &path);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result.map_err(|e| on_full_disk(e, &path)));
        }
        if !garbage.is_empty() {
            // Failure here only leaves unreferenced blobs, which the next
            // open collects; it must not fail writes that are already durable.
            let _ = collect(&mut conn, &blobs, &garbage);
        }
    }
}

/// Applies a group in one transaction; returns one result per op.
fn apply_group(
    conn: &mut Connection,
    blobs: &BlobStore,
    clock: &SharedClock,
    ops: Vec<WriteOp>,
    garbage: &mut Vec<ContentHash>,
    path: &std::path::Path,
) -> Vec<Result<Outcome>> {
    let count = ops.len();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(count, on_full_disk(e.into(), path)),
    };
    let now = clock.now_ms();
    let mut results = Vec::with_capacity(count);
    for op in ops {
        let result = (|| {
            let sp = tx.savepoint()?;
            let out = apply(&sp, blobs, op, now, garbage)?;
            sp.commit()?;
            Ok(out)
        })();
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(count, on_full_disk(e.into(), path)),
    }
}

/// SQLite's answers to a full disk as [`Error::DiskFull`] (the transaction
/// rolled back: nothing of the group was written).
fn on_full_disk(err: Error, index: &std::path::Path) -> Error {
    if index::disk_full(index, &err) {
        Error::DiskFull {
            path: index.to_owned(),
        }
    } else {
        err
    }
}

fn fail_all(count: usize, err: Error) -> Vec<Result<Outcome>> {
    if let Error::DiskFull { path } = &err {
        return (0..count)
            .map(|_| Err(Error::DiskFull { path: path.clone() }))
            .collect();
    }
    let text = err.to_string();
    let mut out = vec![Err(err)];
    out.extend((1..count).map(|_| Err(Error::IndexData(format!("group commit failed: {text}")))));
    out
}

fn apply(
    conn: &Connection,
    blobs: &BlobStore,
    op: WriteOp,
    now: i64,
    garbage: &mut Vec<ContentHash>,
) -> Result<Outcome> {
    match op {
        WriteOp::Put(obj) => put(conn, blobs, obj, now, garbage).map(Outcome::Put),
        WriteOp::Delete { key, if_hash } => {
            delete(conn, &key, if_hash, now, garbage).map(Outcome::Deleted)
        }
        WriteOp::Record(rec) => {
            crate::store::record::apply(conn, blobs, rec, now, garbage).map(Outcome::Recorded)
        }
    }
}

fn put(
    conn: &Connection,
    blobs: &BlobStore,
    obj: NewObject,
    now: i64,
    garbage: &mut Vec<ContentHash>,
) -> Result<ObjectMeta> {
    let old = current(conn, &obj.key)?;
    let holds = match obj.condition {
        None => true,
        Some(PutCondition::IfAbsent) => old.is_none(),
        Some(PutCondition::IfHash(h)) => old.is_some_and(|(o, _, _)| o == h),
    };
    if !holds {
        return Err(crate::error::Error::PreconditionFailed { key: obj.key });
    }
    let inline = store_content(conn, blobs, obj.content, &obj.hash, garbage)?;
    let (content_type, metadata) =
        index::meta_columns(&obj.content_type, &obj.metadata, obj.sealed_meta.as_deref())?;
    conn.prepare_cached(
        "INSERT INTO objects (key, present, size, hash, inline, content_type, metadata, \
             modified_ms, state, last_access_ms, access_count, meta_digest) \
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, 'dirty', ?8, 0, ?9) \
         ON CONFLICT (key) DO UPDATE SET present = 1, size = ?2, hash = ?3, inline = ?4, \
             content_type = ?5, metadata = ?6, modified_ms = ?7, state = 'dirty', \
             cached = 1, last_access_ms = ?8, conflict = NULL, remote_etag = NULL, meta_digest = ?9",
    )?
    .execute(params![
        obj.key,
        obj.size as i64,
        &obj.hash.0[..],
        inline,
        content_type,
        metadata,
        obj.modified_ms,
        now,
        &obj.meta_digest.0[..]
    ])?;
    enqueue(conn, &obj.key, "put", Some(&obj.hash), now)?;
    if old.is_some_and(|(h, i, _)| h != obj.hash || i != inline) {
        release_old(conn, old, garbage)?;
    }
    Ok(ObjectMeta {
        key: obj.key,
        size: obj.size,
        hash: obj.hash,
        content_type: obj.content_type,
        metadata: obj.metadata,
        modified: std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(obj.modified_ms.max(0) as u64),
        state: SyncState::Dirty,
    })
}

fn delete(
    conn: &Connection,
    key: &str,
    if_hash: Option<ContentHash>,
    now: i64,
    garbage: &mut Vec<ContentHash>,
) -> Result<bool> {
    let old = current(conn, key)?;
    if let Some(want) = if_hash {
        if old.is_none_or(|(h, _, _)| h != want) {
            return Err(crate::error::Error::PreconditionFailed {
                key: key.to_owned(),
            });
        }
    }
    let Some(old) = old else {
        return Ok(false);
    };
    conn.prepare_cached(
        "UPDATE objects SET present = 0, state = 'pending-delete', modified_ms = ?2, \
         conflict = NULL, remote_etag = NULL WHERE key = ?1",
    )?
    .execute(params![key, now])?;
    enqueue(conn, key, "delete", None, now)?;
    release_old(conn, Some(old), garbage)?;
    Ok(true)
}
