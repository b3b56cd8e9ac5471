//! `Bucket`: the public object API over the blob store, the index and the writer.

pub mod cache;
pub(crate) mod encryption;
pub(crate) mod origin;
pub mod rebuild;
pub mod setup;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rusqlite::Connection;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::clock::{Clock, SharedClock};
use crate::crypto::keyring::{KeyFile, Keyring};
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::key::validate_key;
use crate::metadata::{content_type_for, normalize_metadata, Metadata};
use crate::store::blobs::{self, BlobStore, TempBlob, CHUNK};
use crate::store::body::{corrupt, Body, BodyInner, ObjectReader};
use crate::store::index::{self, ObjectMeta, StoredObject};
use crate::store::list::{ListOptions, ListPage};
use crate::store::rows::Content;
use crate::store::writer::{NewObject, Outcome, WriteOp, Writer};

/// The index file's name inside the bucket directory.
pub const INDEX_FILE: &str = "index.db";

/// Settings fixed when a bucket is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// Objects up to this many bytes are stored inside the index rather than
    /// as blob files: one fsync per write instead of three.
    pub inline_threshold: u64,
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig {
            inline_threshold: 64 * 1024,
        }
    }
}

/// Options for `put`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type; guessed from the key's extension when `None`.
    pub content_type: Option<String>,
    /// User metadata (ASCII names, 2 KiB total).
    pub metadata: Metadata,
}

pub use crate::store::writer::PutCondition;

/// An object read with `get`: its metadata and a verifying body stream.
#[derive(Debug)]
pub struct Object {
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// Its content.
    pub body: ObjectReader,
}

/// What [`Bucket::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GarbageReport {
    /// Unreferenced blob files deleted.
    pub blobs: usize,
    /// Temp files left by dead writers deleted.
    pub temps: usize,
}

/// A local bucket: objects in a directory, readable and writable offline.
///
/// Cheap to clone; clones share one index writer. Any number of processes
/// may open the same directory at once.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) config: BucketConfig,
    pub(crate) device_id: String,
    pub(crate) readers: Mutex<Vec<Connection>>,
    pub(crate) writer: Writer,
    /// The connected remote (with its retry and emulation layers), if any.
    pub(crate) remote: std::sync::RwLock<Option<crate::remote::SharedRemote>>,
    /// The same remote without the encryption layer (for its `.ferry/` files).
    pub(crate) base_remote: std::sync::RwLock<Option<crate::remote::SharedRemote>>,
    /// One sync run at a time per process.
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    /// Event subscribers.
    pub(crate) events: tokio::sync::broadcast::Sender<crate::engine::events::Event>,
    /// The event log shared with other processes.
    pub(crate) event_log: crate::engine::events::EventLog,
    /// Woken by every local write of this process (the engine debounces).
    pub(crate) local_write: tokio::sync::Notify,
    /// The leader lock, while this process leads.
    pub(crate) leader: Mutex<Option<std::fs::File>>,
    /// The background engine, while running.
    pub(crate) engine: Mutex<Option<crate::engine::handle::EngineHandle>>,
    /// Running estimate of cached bytes (exact after each eviction check).
    pub(crate) cache_estimate: Mutex<Option<u64>>,
    /// Reads not yet recorded for cache eviction: key -> (last ms, count).
    pub(crate) accesses: Mutex<std::collections::HashMap<String, (i64, i64)>>,
    /// Encrypted buckets: the wrapped master key (as stored in the index).
    pub(crate) key_file: std::sync::RwLock<Option<crate::crypto::keyring::KeyFile>>,
    /// Encrypted buckets: the subkeys, while unlocked.
    pub(crate) keys: std::sync::RwLock<Option<Arc<Keyring>>>,
    /// Wall-clock time for what the bucket stamps and decides.
    pub(crate) clock: SharedClock,
    /// This process has the bucket open (a crash leaves it behind).
    /// This process's open marker (none when the bucket is read-only here).
    pub(crate) open_marker: Option<blobs::OpenMarker>,
    /// How the index was opened: writable, or read-only because this user
    /// cannot write the directory or index, or because the disk is full.
    pub(crate) access: index::Access,
    /// The seeded source of the bucket's random choices (retry jitter),
    /// when one was set (the simulator replays them); else the thread's.
    pub(crate) random: Mutex<Option<rand::rngs::StdRng>>,
}

impl Bucket {
    /// Creates a bucket in `dir` (made if missing) and opens it.
    pub async fn create(dir: impl AsRef<Path>, config: BucketConfig) -> Result<Bucket> {
        Bucket::create_inner(dir.as_ref().to_owned(), config, None).await
    }

    pub(crate) async fn create_inner(
        dir: PathBuf,
        config: BucketConfig,
        key_file: Option<KeyFile>,
    ) -> Result<Bucket> {
        blocking(move || {
            let index_path = dir.join(INDEX_FILE);
            if index_path.exists() {
                return Err(Error::AlreadyExists { path: dir });
            }
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", &dir, e))?;
            BlobStore::new(&dir).create_dirs()?;
            let mut conn = index::open(&index_path, true)?;
            index::migrate(&mut conn, &index_path)?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if index::setting(&tx, "device_id")?.is_none() {
                index::set_setting(&tx, "device_id", &origin::new_device_id())?;
                let here = origin::Origin::observe(&dir, &index_path)?;
                origin::settle(&tx, &here, &here)?;
                index::set_setting(
                    &tx,
                    "inline_threshold",
                    &config.inline_threshold.to_string(),
                )?;
                index::set_setting(
                    &tx,
                    "created_ms",
                    &crate::clock::SystemClock.now_ms().to_string(),
                )?;
                if let Some(file) = &key_file {
                    index::set_setting(&tx, crate::bucket::encryption::SETTING, &file.to_json()?)?;
                }
            }
            tx.commit()?;
            drop(conn);
            blobs::sync_dir(&dir)?;
            Bucket::open_sync(dir)
        })
        .await
    }

    /// Opens the bucket in `dir`, collecting garbage a crash may have left.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Bucket> {
        let dir = dir.as_ref().to_owned();
        blocking(move || Bucket::open_sync(dir)).await
    }

    fn open_sync(dir: PathBuf) -> Result<Bucket> {
        let index_path = dir.join(INDEX_FILE);
        if !index_path.is_file() && !finish_interrupted_swap(&dir)? {
            return Err(Error::NoBucket { path: dir });
        }
        let damaged = |detail: String| Error::DamagedIndex {
            path: index_path.clone(),
            detail,
        };
        // An emptied index would otherwise be "migrated" into a new, empty
        // catalogue: refuse it untouched.
        let len = std::fs::metadata(&index_path)
            .map_err(|e| Error::io("reading", &index_path, e))?
            .len();
        if len == 0 {
            return Err(damaged("the file is empty (0 bytes)".into()));
        }
        let blobs = BlobStore::new(&dir);
        let corrupt = |e: Error| match e {
            Error::Index(rusqlite::Error::SqliteFailure(f, msg))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                damaged(msg.unwrap_or_else(|| f.to_string()))
            }
            other => other,
        };
        let (mut conn, access) = index::open_as(&index_path, false).map_err(corrupt)?;
        // A bucket this user cannot write, or on a full disk: reads work,
        // writes say why not.
        let read_only = access != index::Access::Write || conn.is_readonly(rusqlite::MAIN_DB)?;
        let access = match access {
            index::Access::Write if read_only => index::Access::NoPermission,
            a => a,
        };
        if !read_only {
            blobs.create_dirs()?;
        }
        index::migrate(&mut conn, &index_path)
            .map_err(|e| match e {
                Error::ReadOnly { .. } if access == index::Access::DiskFull => {
                    Error::DiskFull { path: dir.clone() }
                }
                e => e,
            })
            .map_err(corrupt)?;
        if !read_only {
            settle_origin(&mut conn, &dir, &index_path).map_err(corrupt)?;
        }
        let device_id = index::setting(&conn, "device_id")
            .map_err(corrupt)?
            .ok_or_else(|| damaged("it has no device id (not a ferry index, or damaged)".into()))?;
        let inline_threshold = index::setting(&conn, "inline_threshold")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(BucketConfig::default().inline_threshold);
        let key_file = index::setting(&conn, crate::bucket::encryption::SETTING)?
            .map(|text| KeyFile::from_json(text.as_bytes()))
            .transpose()?;
        // Unreferenced blobs exist only after a crash: the whole
        // collection runs when a process died with the bucket open (its
        // marker is unlocked), else only dead writers' temp files go.
        let open_marker = if read_only {
            None
        } else {
            if blobs.crashed_openers()? {
                collect_all(&mut conn, &blobs)?;
            } else {
                blobs.collect_temps()?;
            }
            Some(blobs.open_marker()?)
        };
        let clock = SharedClock::default();
        let writer = Writer::spawn(conn, blobs.clone(), clock.clone())?;
        let event_log = crate::engine::events::EventLog::new(&dir, !read_only);
        Ok(Bucket {
            inner: Arc::new(Inner {
                dir,
                index_path,
                blobs,
                config: BucketConfig { inline_threshold },
                device_id,
                readers: Mutex::new(Vec::new()),
                writer,
                remote: std::sync::RwLock::new(None),
                base_remote: std::sync::RwLock::new(None),
                sync_lock: tokio::sync::Mutex::new(()),
                events: tokio::sync::broadcast::channel(crate::engine::events::EVENT_CAPACITY).0,
                event_log,
                local_write: tokio::sync::Notify::new(),
                leader: Mutex::new(None),
                engine: Mutex::new(None),
                accesses: Mutex::new(std::collections::HashMap::new()),
                cache_estimate: Mutex::new(None),
                key_file: std::sync::RwLock::new(key_file),
                keys: std::sync::RwLock::new(None),
                clock,
                open_marker,
                access,
                random: Mutex::new(None),
            }),
        })
    }

    /// Replaces the bucket's clock (tests make time jump with a
    /// [`crate::clock::ManualClock`]): it stamps modification times, outbox,
    /// request and journal times, paces retries of failed keys and names
    /// conflict copies.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.inner.clock.set(clock);
    }

    /// Makes the bucket's random choices (the jitter of retry delays) come
    /// from a generator seeded with `seed`, so a run can be replayed.
    pub fn set_random_seed(&self, seed: u64) {
        use rand::SeedableRng;
        if let Ok(mut r) = self.inner.random.lock() {
            *r = Some(rand::rngs::StdRng::seed_from_u64(seed));
        }
    }

    /// A random number in `0..=max`, from the seeded source when one is set.
    pub(crate) fn random_upto(&self, max: i64) -> i64 {
        use rand::Rng;
        let max = max.max(0);
        match self.inner.random.lock() {
            Ok(mut r) => match r.as_mut() {
                Some(rng) => rng.random_range(0..=max),
                None => rand::rng().random_range(0..=max),
            },
            Err(_) => max / 2,
        }
    }

    /// How many handles on this bucket are alive (the simulator waits for
    /// a crashed replica's to be gone before reopening its directory).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Milliseconds since the Unix epoch, by the bucket's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The bucket's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// This replica's random device id.
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// The settings the bucket was created with.
    pub fn config(&self) -> &BucketConfig {
        &self.inner.config
    }

    /// True when the bucket was opened read-only: this user cannot write
    /// its directory or index (writes fail with [`Error::ReadOnly`]), or
    /// the disk holding it is full ([`Bucket::is_disk_full`]). Reads work.
    pub fn is_read_only(&self) -> bool {
        self.inner.access != index::Access::Write
    }

    /// True when the bucket was opened read-only because the disk holding
    /// it is full (SQLite could not even size its shared-memory file):
    /// reads work, writes fail with [`Error::DiskFull`]. Opening it again
    /// once space is free makes it writable.
    pub fn is_disk_full(&self) -> bool {
        self.inner.access == index::Access::DiskFull
    }

    /// `Error::ReadOnly` (or `Error::DiskFull`) when the bucket was opened
    /// read-only.
    pub(crate) fn writable(&self) -> Result<()> {
        match self.inner.access {
            index::Access::Write => Ok(()),
            index::Access::NoPermission => Err(Error::ReadOnly {
                dir: self.inner.dir.clone(),
            }),
            index::Access::DiskFull => Err(Error::DiskFull {
                path: self.inner.dir.clone(),
            }),
        }
    }

    /// Stores `body` under `key`; returns once the write is durable.
    pub async fn put(
        &self,
        key: &str,
        body: impl Into<Body>,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.put_checked(key, body.into(), opts, None).await
    }

    /// `put` only if `cond` holds for the key's current version, checked
    /// atomically with the write; otherwise [`Error::PreconditionFailed`]
    /// and nothing is written.
    pub async fn put_if(
        &self,
        key: &str,
        body: impl Into<Body>,
        opts: PutOptions,
        cond: PutCondition,
    ) -> Result<ObjectMeta> {
        self.put_checked(key, body.into(), opts, Some(cond)).await
    }

    async fn put_checked(
        &self,
        key: &str,
        body: Body,
        opts: PutOptions,
        condition: Option<PutCondition>,
    ) -> Result<ObjectMeta> {
        validate_key(key)?;
        self.writable()?;
        let metadata = normalize_metadata(&opts.metadata)?;
        let content_type = content_type_for(key, opts.content_type.as_deref())?;
        let keys = self.keyring()?;
        if let Some(k) = &keys {
            check_name_length(k, key)?;
        }
        let sealed_meta = keys
            .as_ref()
            .map(|k| k.seal_local_meta(key, &content_type, &metadata))
            .transpose()?;
        let modified_ms = self.now_ms();
        let threshold = self.inner.config.inline_threshold;
        let (content, hash, size) = match body.0 {
            BodyInner::Bytes(data) if data.len() as u64 <= threshold => {
                inline_content(keys.as_deref(), data)?
            }
            BodyInner::Bytes(data) => {
                let blobs = self.inner.blobs.clone();
                let keys = keys.clone();
                let (temp, hash, size) = blocking(move || {
                    let mut temp = blobs.temp(keys.as_deref())?;
                    for piece in data.chunks(CHUNK) {
                        temp.write(piece)?;
                    }
                    let (hash, size) = temp.finish()?;
                    Ok((temp, hash, size))
                })
                .await?;
                (Content::Blob(Box::new(temp)), hash, size)
            }
            BodyInner::Reader(reader) => {
                self.read_body(key, reader, threshold, keys.clone()).await?
            }
        };
        let meta_digest =
            crate::crypto::keyring::meta_digest(keys.as_deref(), &content_type, &metadata);
        let op = WriteOp::Put(NewObject {
            key: key.to_owned(),
            size,
            hash,
            content,
            content_type,
            metadata,
            sealed_meta,
            meta_digest,
            modified_ms,
            condition,
        });
        self.writable()?;
        match self.inner.writer.submit(op).await? {
            Outcome::Put(meta) => {
                self.inner.local_write.notify_one();
                self.after_write(meta.size, None).await;
                Ok(meta)
            }
            _ => Err(Error::IndexData(
                "writer answered a put with a delete".into(),
            )),
        }
    }

    /// Reads a stream: small ones into memory, larger ones into a temp blob
    /// through a bounded pipeline (the stream is read here while a blocking
    /// task hashes and writes).
    pub(crate) async fn read_body(
        &self,
        key: &str,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        threshold: u64,
        keys: Option<Arc<Keyring>>,
    ) -> Result<(Content, ContentHash, u64)> {
        let body_err = |source: io::Error| Error::Body {
            key: key.to_owned(),
            source,
        };
        // Read up to threshold + 1 bytes to decide where the content goes.
        let mut head = BytesMut::with_capacity((threshold as usize + 1).min(CHUNK));
        while (head.len() as u64) <= threshold {
            if reader.read_buf(&mut head).await.map_err(body_err)? == 0 {
                return inline_content(keys.as_deref(), head.freeze());
            }
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let blobs = self.inner.blobs.clone();
        let writer =
            tokio::task::spawn_blocking(move || -> Result<(TempBlob, ContentHash, u64)> {
                let mut temp = blobs.temp(keys.as_deref())?;
                while let Some(chunk) = rx.blocking_recv() {
                    temp.write(&chunk)?;
                }
                let (hash, size) = temp.finish()?;
                Ok((temp, hash, size))
            });
        let mut pending = Some(head.freeze());
        let mut read_result = Ok(());
        loop {
            if let Some(chunk) = pending.take() {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            let mut buf = BytesMut::with_capacity(CHUNK);
            match fill(&mut reader, &mut buf).await {
                Ok(0) => break,
                Ok(_) => pending = Some(buf.freeze()),
                Err(e) => {
                    read_result = Err(body_err(e));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::io("writing blob", PathBuf::new(), io::Error::other(e)))?;
        read_result?;
        let (temp, hash, size) = written?;
        Ok((Content::Blob(Box::new(temp)), hash, size))
    }

    /// Reads an object: its metadata and a streaming, verifying body.
    pub async fn get(&self, key: &str) -> Result<Object> {
        validate_key(key)?;
        let keys = self.keyring()?;
        // A concurrent overwrite may delete the blob between the lookup and
        // the open; look again before calling the blob missing.
        for _ in 0..3 {
            let stored = self.lookup(key)?;
            self.note_access(key);
            if !stored.cached {
                // Known from the remote but not downloaded (lazy pull): fetch it now.
                let meta = self.local_meta_digest(key)?;
                self.fetch_version(key, stored.meta.hash, meta).await?;
                continue;
            }
            if stored.inline {
                let data = self.read_inline(&stored)?;
                return Ok(Object {
                    meta: stored.meta,
                    body: ObjectReader::memory(data),
                });
            }
            let path = self.inner.blobs.path(&stored.meta.hash);
            match fs::File::open(&path) {
                Ok(file) => {
                    if keys.is_some() {
                        self.check_blob_salt(key, &stored.meta.hash, &file, &path)?;
                    }
                    let body = ObjectReader::file(
                        file,
                        path,
                        key.to_owned(),
                        stored.meta.hash,
                        stored.meta.size,
                        keys.clone(),
                    );
                    return Ok(Object {
                        meta: stored.meta,
                        body,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.lookup(key)?.meta == stored.meta {
                        return Err(Error::Corrupt {
                            key: key.to_owned(),
                            detail: format!("its blob file {} is missing", path.display()),
                        });
                    }
                }
                Err(e) => return Err(Error::io("opening blob", path, e)),
            }
        }
        Err(Error::Corrupt {
            key: key.to_owned(),
            detail: "its blob kept disappearing".into(),
        })
    }

    /// Refuses a blob file whose sealed header is not the one recorded for
    /// its hash (another object's blob put in its place): caught before any
    /// plaintext streams, not at the end of the stream.
    fn check_blob_salt(
        &self,
        key: &str,
        hash: &ContentHash,
        file: &fs::File,
        path: &Path,
    ) -> Result<()> {
        let recorded: Option<Vec<u8>> = self.with_reader(|c| {
            use rusqlite::OptionalExtension;
            Ok(
                c.prepare_cached("SELECT salt FROM blob_salts WHERE hash = ?1")?
                    .query_row([&hash.0[..]], |r| r.get(0))
                    .optional()?,
            )
        })?;
        let Some(recorded) = recorded else {
            return Ok(()); // written before index v6
        };
        let found = blobs::sealed_salt_of(file).map_err(|e| Error::io("reading blob", path, e))?;
        if found.as_ref().map(|s| &s[..]) != Some(&recorded[..]) {
            return Err(Error::Corrupt {
                key: key.to_owned(),
                detail: "its blob file holds another sealed blob (swapped or replaced); \
                         nothing of it was read"
                    .into(),
            });
        }
        Ok(())
    }

    /// Reads a whole object into memory (verified).
    pub async fn get_bytes(&self, key: &str) -> Result<(ObjectMeta, Bytes)> {
        let Object { meta, mut body } = self.get(key).await?;
        let mut data = Vec::with_capacity(meta.size.min(1 << 30) as usize);
        body.read_to_end(&mut data)
            .await
            .map_err(Error::from_body_io)?;
        Ok((meta, data.into()))
    }

    /// An object's metadata.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        self.keyring()?;
        Ok(self.lookup(key)?.meta)
    }

    /// True when an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        self.with_reader(|c| Ok(index::head(c, key)?.is_some()))
    }

    /// One page of objects and common prefixes, in key order.
    ///
    /// A locked encrypted bucket still lists (names, sizes, hashes, times
    /// and states); its content types are empty and its metadata maps empty
    /// until it is unlocked.
    pub async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        let keys = self.current_keys();
        self.with_reader(|c| crate::store::list::list(c, &opts, &|s| reveal(s, keys.as_deref())))
    }

    /// SQLite's own check of the index file: empty when it is sound, else
    /// what it found (`PRAGMA integrity_check`).
    pub async fn check_index(&self) -> Result<Vec<String>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
    }

    /// Rebuilds the index's indexes (`REINDEX`, which repairs what SQLite's
    /// check most often finds: an index out of step with its table) and
    /// checks again; returns what is still wrong.
    pub async fn repair_index(&self) -> Result<Vec<String>> {
        self.writable()?;
        let path = self.inner.index_path.clone();
        blocking(move || {
            let conn = index::open(&path, false)?;
            conn.execute_batch("REINDEX")?;
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
        .await
    }

    /// Every object under `prefix`, in key order.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self.list(ListOptions::prefix(prefix)).await?.objects)
    }

    /// Deletes `key`; returns whether it existed. Durable when it returns.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.delete_checked(key, None).await
    }

    /// Deletes `key` only if its current content has `hash`, checked in
    /// the index transaction that records the delete (as `put_if` checks
    /// its condition): `Error::PreconditionFailed` when the key is absent
    /// or holds other content.
    pub async fn delete_if(&self, key: &str, hash: ContentHash) -> Result<()> {
        self.delete_checked(key, Some(hash)).await.map(|_| ())
    }

    async fn delete_checked(&self, key: &str, if_hash: Option<ContentHash>) -> Result<bool> {
        validate_key(key)?;
        self.writable()?;
        self.keyring()?;
        match self
            .inner
            .writer
            .submit(WriteOp::Delete {
                key: key.to_owned(),
                if_hash,
            })
            .await?
        {
            Outcome::Deleted(existed) => {
                self.inner.local_write.notify_one();
                Ok(existed)
            }
            _ => Err(Error::IndexData(
                "writer answered a delete with a put".into(),
            )),
        }
    }

    /// Deletes blob files no object references and temp files of dead writers.
    pub async fn collect_garbage(&self) -> Result<GarbageReport> {
        self.writable()?;
        let path = self.inner.index_path.clone();
        let blobs = self.inner.blobs.clone();
        blocking(move || {
            let mut conn = index::open(&path, false)?;
            collect_all(&mut conn, &blobs)
        })
        .await
    }

    /// A present object's row, its metadata opened when the bucket is
    /// unlocked (left empty when it is locked).
    pub(crate) fn lookup(&self, key: &str) -> Result<StoredObject> {
        let mut stored =
            self.with_reader(|c| index::head(c, key))?
                .ok_or_else(|| Error::NotFound {
                    key: key.to_owned(),
                })?;
        let keys = self.current_keys();
        stored.meta = reveal(stored.clone(), keys.as_deref())?;
        Ok(stored)
    }

    pub(crate) fn read_inline(&self, stored: &StoredObject) -> Result<Bytes> {
        let key = &stored.meta.key;
        let data = self
            .with_reader(|c| index::small_blob(c, &stored.meta.hash))?
            .ok_or_else(|| Error::Corrupt {
                key: key.clone(),
                detail: "its content is missing from the index".into(),
            })?;
        let data = match self.keyring()? {
            None => data,
            Some(k) => k.open_blob(&data).map_err(|e| Error::Corrupt {
                key: key.clone(),
                detail: e.to_string(),
            })?,
        };
        if data.len() as u64 != stored.meta.size || self.hash_of(&data)? != stored.meta.hash {
            return Err(Error::from_body_io(corrupt(
                key,
                "content does not match its hash",
            )));
        }
        Ok(data.into())
    }

    /// An inline object's stored bytes as they are (sealed in an encrypted bucket).
    pub(crate) fn read_inline_raw(&self, stored: &StoredObject) -> Result<Bytes> {
        self.with_reader(|c| index::small_blob(c, &stored.meta.hash))?
            .map(Bytes::from)
            .ok_or_else(|| Error::Corrupt {
                key: stored.meta.key.clone(),
                detail: "its content is missing from the index".into(),
            })
    }

    /// Runs a short index read on a pooled connection, on the caller's thread:
    /// WAL reads never wait for writers, so these are bounded and fast.
    pub(crate) fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.inner.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => index::open_like(&self.inner.index_path, self.inner.access)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.inner.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        out
    }
}

/// Small content as it is stored inline: its hash and (sealed in an encrypted
/// bucket) bytes.
fn inline_content(keys: Option<&Keyring>, data: Bytes) -> Result<(Content, ContentHash, u64)> {
    let size = data.len() as u64;
    Ok(match keys {
        None => (Content::Inline(data.clone()), ContentHash::of(&data), size),
        Some(k) => (
            Content::Inline(k.seal_blob(&data)?.into()),
            k.hash(&data),
            size,
        ),
    })
}

/// A row's metadata as the caller may see it: opened with `keys`, or
/// (locked) with an empty content type and metadata.
pub(crate) fn reveal(stored: StoredObject, keys: Option<&Keyring>) -> Result<ObjectMeta> {
    let mut meta = stored.meta;
    if let (Some(sealed), Some(k)) = (stored.sealed_meta, keys) {
        let (content_type, metadata) =
            k.open_local_meta(&meta.key, &sealed)
                .map_err(|e| Error::Corrupt {
                    key: meta.key.clone(),
                    detail: format!("its sealed metadata does not open: {e}"),
                })?;
        meta.content_type = content_type;
        meta.metadata = metadata;
    }
    Ok(meta)
}

/// Collects temp files of dead writers, then unreferenced blobs, the latter
/// under the index write lock.
/// Gives a copied or restored bucket its own device id (see [`origin`]).
fn settle_origin(conn: &mut Connection, dir: &Path, index_path: &Path) -> Result<()> {
    let here = origin::Origin::observe(dir, index_path)?;
    if origin::is_recorded(conn, &here)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let settled = origin::settle(&tx, &here, &here)?;
    tx.commit()?;
    if let origin::Settled::Renewed { old } = settled {
        tracing::info!(
            dir = %dir.display(),
            old = old.as_deref().unwrap_or(""),
            "the bucket was copied or restored: it has a new device id"
        );
    }
    Ok(())
}

fn collect_all(conn: &mut Connection, blobs: &BlobStore) -> Result<GarbageReport> {
    let temps = blobs.collect_temps()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let referenced = index::file_hashes(&tx)?;
    let mut removed = 0;
    for hash in blobs.list()? {
        if !referenced.contains(&hash) {
            blobs.remove(&hash)?;
            tx.execute("DELETE FROM blob_salts WHERE hash = ?1", [&hash.0[..]])?;
            removed += 1;
        }
    }
    tx.execute(
        "DELETE FROM small_blobs WHERE hash NOT IN \
         (SELECT hash FROM objects WHERE present = 1 AND cached = 1 AND inline = 1)",
        [],
    )?;
    tx.commit()?;
    Ok(GarbageReport {
        blobs: removed,
        temps,
    })
}

/// Fills `buf` (up to its capacity) from `reader`; returns bytes read.
pub(crate) async fn fill(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let mut total = 0;
    while buf.len() < buf.capacity() {
        let n = reader.read_buf(buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// Runs blocking file-system or index work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::task("blocking", e))?
}

/// Refuses keys whose encrypted name no object store would take.
fn check_name_length(keys: &crate::crypto::keyring::Keyring, key: &str) -> Result<()> {
    let len = keys.encrypted_name_len(key);
    if len > crate::crypto::keyring::MAX_ENCRYPTED_KEY_LEN {
        return Err(Error::EncryptedKeyTooLong {
            key: key.to_owned(),
            len,
            max: crate::crypto::keyring::MAX_ENCRYPTED_KEY_LEN,
        });
    }
    Ok(())
}

// Where `rekey` (in `sync`) builds the new bucket and parks the old one.

/// `<dir>` with `suffix` appended to its last component.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

pub(crate) fn staging_dir(dir: &Path) -> PathBuf {
    sibling(dir, ".rekey-new")
}

pub(crate) fn retired_dir(dir: &Path) -> PathBuf {
    sibling(dir, ".rekey-old")
}

/// Finishes a swap a crash interrupted between its two renames: `dir` is
/// gone, the new bucket waits at `<dir>.rekey-new` and the old one at
/// `<dir>.rekey-old`. True when it did.
pub(crate) fn finish_interrupted_swap(dir: &Path) -> Result<bool> {
    let (staged, retired) = (staging_dir(dir), retired_dir(dir));
    if dir.exists() || !retired.is_dir() || !staged.join(INDEX_FILE).is_file() {
        return Ok(false);
    }
    std::fs::rename(&staged, dir).map_err(|e| Error::io("finishing a rekey", dir, e))?;
    std::fs::remove_dir_all(&retired).map_err(|e| Error::io("removing", &retired, e))?;
    Ok(true)
}
