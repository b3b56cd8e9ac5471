//! The buckets a gateway serves, and what the gateway keeps beside each:
//! the S3 ETags of objects written through it, multipart uploads in
//! progress, and ferry's own objects (under `<bucket dir>/gateway/`).
//!
//! ferry's own objects are the keys under `.ferry/` that a ferry replica
//! syncing *to* the gateway writes on its remote (journal records, probes,
//! an encrypted remote's key file, multipart markers). A bucket cannot hold
//! them (the prefix is reserved), so the gateway keeps them whole in its
//! database, small and apart from the bucket's objects: conditions on them
//! are checked and applied in one transaction, and they are listed only
//! under a `.ferry/` prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry::{Bucket, BucketConfig, ContentHash};
use rusqlite::OptionalExtension;

use crate::GatewayError;

/// What a gateway serves.
#[derive(Debug, Clone)]
pub enum Served {
    /// One bucket, under this S3 name.
    One {
        /// The S3 bucket name.
        name: String,
        /// The bucket.
        bucket: Bucket,
    },
    /// Every ferry bucket under a directory (`DIR/NAME/.ferry`), by name;
    /// CreateBucket makes new ones there.
    Dir(PathBuf),
}

/// One served bucket with the gateway's state for it.
#[derive(Debug)]
pub struct Entry {
    /// The bucket.
    pub bucket: Bucket,
    etags: Mutex<rusqlite::Connection>,
    /// Where multipart uploads keep their parts.
    pub uploads: PathBuf,
    /// Held shared by every write for as long as it runs, and
    /// exclusively by DeleteBucket, which sets it once the bucket is gone:
    /// a write either ends before the emptiness check (and the bucket is
    /// not empty) or finds the bucket gone (and is refused), never
    /// acknowledged into a deleted bucket.
    gone: tokio::sync::RwLock<bool>,
}

impl Entry {
    fn open(bucket: Bucket) -> Result<Self, GatewayError> {
        let dir = bucket.dir().join("gateway");
        let uploads = dir.join("uploads");
        // The gateway's files are its own: not readable by other users.
        {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&uploads)
                .map_err(|e| GatewayError::io(&uploads, e))?;
            for d in [&dir, &uploads] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| GatewayError::io(d, e))?;
            }
        }
        let db = dir.join("etags.db");
        let conn = rusqlite::Connection::open(&db).map_err(|e| GatewayError::db(&db, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS etags (key TEXT PRIMARY KEY, hash BLOB NOT NULL, etag TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS parts (key TEXT PRIMARY KEY, hash BLOB NOT NULL, sizes TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS reserved (key TEXT PRIMARY KEY, body BLOB NOT NULL, etag TEXT NOT NULL,
                 content_type TEXT NOT NULL, metadata TEXT NOT NULL, modified_ms INTEGER NOT NULL);",
        )
        .map_err(|e| GatewayError::db(&db, e))?;
        Ok(Entry {
            bucket,
            etags: Mutex::new(conn),
            uploads,
            gone: tokio::sync::RwLock::new(false),
        })
    }

    /// Holds off DeleteBucket while a write runs (see `gone`); `None`
    /// when the bucket was deleted.
    pub async fn writing(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let g = self.gone.read().await;
        (!*g).then_some(g)
    }

    /// The S3 ETag (unquoted) of `key` at content `hash`: the one recorded
    /// when it was written through the gateway (an MD5, or MD5s-N for a
    /// multipart upload), else one derived from the BLAKE3 hash in the
    /// multipart form (`<32 hex>-1`), which no client takes for an MD5.
    pub fn etag(&self, key: &str, hash: &ContentHash) -> String {
        let found: Option<String> = self.etags.lock().ok().and_then(|c| {
            c.prepare_cached("SELECT etag FROM etags WHERE key = ?1 AND hash = ?2")
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![key, &hash.0[..]], |r| r.get(0))
                        .optional()
                })
                .ok()
                .flatten()
        });
        found.unwrap_or_else(|| format!("{}-1", &hash.to_hex()[..32]))
    }

    /// Records the ETag of a write through the gateway.
    pub fn record_etag(&self, key: &str, hash: &ContentHash, etag: &str) {
        if let Ok(c) = self.etags.lock() {
            let _ = c.execute(
                "INSERT INTO etags (key, hash, etag) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET hash = ?2, etag = ?3",
                rusqlite::params![key, &hash.0[..], etag],
            );
        }
    }
}

impl Entry {
    /// Records the part sizes of an object completed by a multipart
    /// upload (for `partNumber` reads and `PartsCount`).
    pub fn record_parts(&self, key: &str, hash: &ContentHash, sizes: &[u64]) {
        let sizes = serde_json::to_string(sizes).unwrap_or_else(|_| "[]".into());
        if let Ok(c) = self.etags.lock() {
            let _ = c.execute(
                "INSERT INTO parts (key, hash, sizes) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET hash = ?2, sizes = ?3",
                rusqlite::params![key, &hash.0[..], sizes],
            );
        }
    }

    /// The part sizes of `key` at content `hash`, when a multipart upload
    /// through the gateway made it.
    pub fn parts(&self, key: &str, hash: &ContentHash) -> Option<Vec<u64>> {
        let sizes: String = self.etags.lock().ok().and_then(|c| {
            c.prepare_cached("SELECT sizes FROM parts WHERE key = ?1 AND hash = ?2")
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![key, &hash.0[..]], |r| r.get(0))
                        .optional()
                })
                .ok()
                .flatten()
        })?;
        serde_json::from_str(&sizes).ok()
    }
}

/// The largest object kept under `.ferry/` (journal records and probes
/// are a few hundred bytes, key files a few KiB).
pub const MAX_RESERVED: usize = 16 << 20;

/// One of ferry's own objects, kept by the gateway.
#[derive(Debug, Clone)]
pub struct ReservedObject {
    /// Its content.
    pub body: bytes::Bytes,
    /// Its ETag (unquoted MD5 of the body).
    pub etag: String,
    /// Content type.
    pub content_type: String,
    /// User metadata.
    pub metadata: ferry::Metadata,
    /// When it was written, ms since the Unix epoch.
    pub modified_ms: i64,
}

/// What a write or delete of one of ferry's own objects is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservedCondition {
    /// Nothing.
    None,
    /// No object there (`If-None-Match: *`).
    IfAbsent,
    /// An object there (`If-Match: *`).
    IfPresent,
    /// This ETag there (`If-Match`, unquoted).
    IfMatch(String),
}

impl ReservedCondition {
    fn holds(&self, current: Option<&str>) -> bool {
        match self {
            ReservedCondition::None => true,
            ReservedCondition::IfAbsent => current.is_none(),
            ReservedCondition::IfPresent => current.is_some(),
            ReservedCondition::IfMatch(e) => current == Some(e.as_str()),
        }
    }
}

/// The most objects kept under `.ferry/` per bucket.
pub const MAX_RESERVED_OBJECTS: i64 = 100_000;
/// The most bytes kept under `.ferry/` per bucket, all objects together.
pub const MAX_RESERVED_BYTES: i64 = 1 << 30;

/// A failure on ferry's own objects.
#[derive(Debug)]
pub enum ReservedError {
    /// The condition did not hold.
    PreconditionFailed,
    /// The write would keep more objects or bytes under `.ferry/` than
    /// [`MAX_RESERVED_OBJECTS`] and [`MAX_RESERVED_BYTES`].
    Full,
    /// The database failed.
    Db(String),
}

impl Entry {
    fn db<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ReservedError> {
        let mut c = self
            .etags
            .lock()
            .map_err(|_| ReservedError::Db("the gateway's database lock is poisoned".into()))?;
        f(&mut c).map_err(|e| ReservedError::Db(e.to_string()))
    }

    /// One of ferry's own objects, or `None`.
    pub fn reserved_get(&self, key: &str) -> Result<Option<ReservedObject>, ReservedError> {
        self.db(|c| {
            c.prepare_cached(
                "SELECT body, etag, content_type, metadata, modified_ms FROM reserved WHERE key = ?1",
            )?
            .query_row([key], |r| {
                let body: Vec<u8> = r.get(0)?;
                let metadata: String = r.get(3)?;
                Ok(ReservedObject {
                    body: body.into(),
                    etag: r.get(1)?,
                    content_type: r.get(2)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    modified_ms: r.get(4)?,
                })
            })
            .optional()
        })
    }

    /// Writes one of ferry's own objects if `cond` holds, atomically;
    /// returns its ETag.
    pub fn reserved_put(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
        metadata: &ferry::Metadata,
        cond: &ReservedCondition,
    ) -> Result<String, ReservedError> {
        use md5::Digest as _;
        let etag = hex::encode(md5::Md5::digest(body));
        let meta = serde_json::to_string(metadata).unwrap_or_else(|_| "{}".into());
        let now = now_ms();
        let refused = self.db(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .query_row("SELECT etag FROM reserved WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?;
            if !cond.holds(current.as_deref()) {
                return Ok(Some(ReservedError::PreconditionFailed));
            }
            let (count, bytes): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM reserved WHERE key != ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if count + 1 > MAX_RESERVED_OBJECTS || bytes + body.len() as i64 > MAX_RESERVED_BYTES {
                return Ok(Some(ReservedError::Full));
            }
            tx.execute(
                "INSERT INTO reserved (key, body, etag, content_type, metadata, modified_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE SET \
                 body = ?2, etag = ?3, content_type = ?4, metadata = ?5, modified_ms = ?6",
                rusqlite::params![key, body, etag, content_type, meta, now],
            )?;
            tx.commit()?;
            Ok(None)
        })?;
        match refused {
            None => Ok(etag),
            Some(e) => Err(e),
        }
    }

    /// Deletes one of ferry's own objects if `cond` holds, atomically
    /// (deleting what is not there succeeds unless a condition names it).
    pub fn reserved_delete(
        &self,
        key: &str,
        cond: &ReservedCondition,
    ) -> Result<(), ReservedError> {
        let held = self.db(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .query_row("SELECT etag FROM reserved WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?;
            if *cond != ReservedCondition::None && !cond.holds(current.as_deref()) {
                return Ok(false);
            }
            tx.execute("DELETE FROM reserved WHERE key = ?1", [key])?;
            tx.commit()?;
            Ok(true)
        })?;
        if held {
            Ok(())
        } else {
            Err(ReservedError::PreconditionFailed)
        }
    }

    /// ferry's own objects under `prefix` after `start_after`, in key
    /// order, at most `limit`: `(key, size, etag, modified_ms)`, and whether
    /// more follow.
    #[allow(clippy::type_complexity)]
    pub fn reserved_list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, u64, String, i64)>, bool), ReservedError> {
        let from = start_after.unwrap_or_default().max(prefix).to_owned();
        let mut rows = self.db(|c| {
            let mut st = c.prepare_cached(
                "SELECT key, length(body), etag, modified_ms FROM reserved \
                 WHERE key > ?1 OR (key = ?1 AND ?2) ORDER BY key LIMIT ?3",
            )?;
            let inclusive = start_after.is_none_or(|s| s < prefix);
            let rows = st
                .query_map(
                    rusqlite::params![from, inclusive, (limit + 1) as i64],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)? as u64,
                            r.get(2)?,
                            r.get(3)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.retain(|(k, ..)| k.starts_with(prefix));
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether a process other than this one has the bucket at `dir` open:
/// each holds a lock on its file `open/<pid>-<random>` while it does.
fn other_openers(dir: &Path) -> bool {
    let me = format!("{}-", std::process::id());
    std::fs::read_dir(dir.join("open"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(&me))
        .any(|e| {
            std::fs::File::open(e.path())
                .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
        })
}

/// Removes the files ferry makes in a bucket directory (§2 of
/// docs/design.md), the index last but one and the gateway's state last.
fn remove_made(dir: &Path) -> Result<(), GatewayError> {
    for d in ["blobs", "tmp", "open"] {
        let p = dir.join(d);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GatewayError::io(&p, e)),
        }
    }
    for f in [
        "events.log",
        "events.log.1",
        ferry::INDEX_FILE,
        &format!("{}-wal", ferry::INDEX_FILE),
        &format!("{}-shm", ferry::INDEX_FILE),
    ] {
        let p = dir.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GatewayError::io(&p, e)),
        }
    }
    let p = dir.join("gateway");
    match std::fs::remove_dir_all(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GatewayError::io(&p, e)),
    }
}

/// The served buckets, opened on first use.
#[derive(Debug)]
pub struct Buckets {
    served: Served,
    open: Mutex<HashMap<String, Arc<Entry>>>,
}

/// Whether `name` is a bucket name S3 clients accept (3–63 characters of
/// `a`–`z`, `0`–`9`, `-` and `.`, starting and ending with a letter or digit).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

impl Buckets {
    /// The buckets `served` names.
    pub fn new(served: Served) -> Result<Self, GatewayError> {
        let me = Buckets {
            served,
            open: Mutex::new(HashMap::new()),
        };
        if let Served::One { name, bucket } = &me.served {
            let entry = Arc::new(Entry::open(bucket.clone())?);
            if let Ok(mut m) = me.open.lock() {
                m.insert(name.clone(), entry);
            }
        }
        Ok(me)
    }

    fn dir_of(root: &Path, name: &str) -> PathBuf {
        root.join(name).join(".ferry")
    }

    /// The bucket named `name`, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Entry>>, GatewayError> {
        if let Some(e) = self.open.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(Some(e));
        }
        let Served::Dir(root) = &self.served else {
            return Ok(None);
        };
        if !valid_bucket_name(name) {
            return Ok(None);
        }
        let dir = Self::dir_of(root, name);
        if !dir.join(ferry::INDEX_FILE).is_file() {
            return Ok(None);
        }
        let bucket = Bucket::open(&dir).await.map_err(GatewayError::Ferry)?;
        let entry = Arc::new(Entry::open(bucket)?);
        if let Ok(mut m) = self.open.lock() {
            m.entry(name.to_owned()).or_insert_with(|| entry.clone());
        }
        Ok(Some(entry))
    }

    /// When the bucket `name` was made (its `.ferry` directory's birth
    /// time where the file system keeps one, else its modification time).
    pub fn created(&self, name: &str) -> std::time::SystemTime {
        let dir = match &self.served {
            Served::One { bucket, .. } => bucket.dir().to_path_buf(),
            Served::Dir(root) => Self::dir_of(root, name),
        };
        std::fs::metadata(dir)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// Every served bucket's name, sorted.
    pub fn names(&self) -> Vec<String> {
        match &self.served {
            Served::One { name, .. } => vec![name.clone()],
            Served::Dir(root) => {
                let mut names: Vec<String> = std::fs::read_dir(root)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| {
                        valid_bucket_name(n)
                            && Self::dir_of(root, n).join(ferry::INDEX_FILE).is_file()
                    })
                    .collect();
                names.sort();
                names
            }
        }
    }

    /// Creates a bucket (`--buckets DIR` only): `Ok(false)` when it exists.
    pub async fn create(&self, name: &str) -> Result<bool, GatewayError> {
        let Served::Dir(root) = &self.served else {
            return Err(GatewayError::NotHere);
        };
        if self.get(name).await?.is_some() {
            return Ok(false);
        }
        let dir = Self::dir_of(root, name);
        let bucket = Bucket::create(&dir, BucketConfig::default())
            .await
            .map_err(GatewayError::Ferry)?;
        let entry = Arc::new(Entry::open(bucket)?);
        if let Ok(mut m) = self.open.lock() {
            m.insert(name.to_owned(), entry);
        }
        Ok(true)
    }

    /// Removes an empty bucket (`--buckets DIR` only): `Ok(false)` when
    /// it holds objects (ferry's own `.ferry/` ones too).
    ///
    /// Atomic with the gateway's writes: it waits for those running and
    /// holds off new ones (see `Entry::writing`) from its check to the
    /// end. Another process with the bucket open (a CLI writing) makes it
    /// [`GatewayError::InUse`]. Only what ferry made goes: the bucket's
    /// files (index, blobs, temp, open markers, event log, the gateway's
    /// state), then `NAME/.ferry` and `NAME` if nothing else is in them
    /// (a `ferry.toml` or a file of the user's stays, and the name is no
    /// longer a bucket).
    pub async fn delete(&self, name: &str) -> Result<bool, GatewayError> {
        let Served::Dir(root) = &self.served else {
            return Err(GatewayError::NotHere);
        };
        let Some(entry) = self.get(name).await? else {
            return Err(GatewayError::NoSuchBucket);
        };
        let mut gone = entry.gone.write().await;
        if *gone {
            return Err(GatewayError::NoSuchBucket);
        }
        if other_openers(entry.bucket.dir()) {
            return Err(GatewayError::InUse);
        }
        let any = entry
            .bucket
            .list(ferry::ListOptions::prefix("").limit(1))
            .await
            .map_err(GatewayError::Ferry)?;
        let own = entry
            .reserved_list(ferry::RESERVED_PREFIX, None, 1)
            .map_err(|e| {
                GatewayError::io(
                    Path::new("etags.db"),
                    std::io::Error::other(format!("{e:?}")),
                )
            })?;
        if !any.objects.is_empty() || !own.0.is_empty() {
            return Ok(false);
        }
        *gone = true;
        let dir = entry.bucket.dir().to_owned();
        remove_made(&dir)?;
        // Only now: until the index is gone, a request opening the name
        // again finds this entry, which refuses writes.
        if let Ok(mut m) = self.open.lock() {
            if m.get(name).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                m.remove(name);
            }
        }
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(root.join(name));
        Ok(true)
    }

    /// Every open bucket (for collecting old uploads).
    pub fn open_entries(&self) -> Vec<Arc<Entry>> {
        self.open
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
