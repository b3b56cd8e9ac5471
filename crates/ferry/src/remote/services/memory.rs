//! `memory://`: an in-process remote for tests, with real conditional-write
//! semantics (or, when asked, a store that ignores them, for the probe).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::clock::{Clock, SharedClock};
use crate::metadata::Metadata;
use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// Keys per listing page (as S3 pages).
const PAGE: usize = 1000;

#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    etag: String,
    content_type: String,
    metadata: Metadata,
    modified_ms: i64,
}

/// An in-memory object store. Clones share the same objects, so two buckets
/// can sync through one `MemoryRemote`.
#[derive(Debug, Clone, Default)]
pub struct MemoryRemote {
    objects: Arc<Mutex<BTreeMap<String, Stored>>>,
    versions: Arc<AtomicU64>,
    ignore_conditions: Arc<AtomicBool>,
    ignore_multipart_conditions: Arc<AtomicBool>,
    /// The content hash of every version written, by etag (what S3 reads
    /// from an MD5 ETag: whether a rewrite keeps the bytes).
    contents: Arc<Mutex<std::collections::HashMap<String, crate::hash::ContentHash>>>,
    requests: Arc<AtomicU64>,
    clock: SharedClock,
    /// Keys per listing page (`0`: [`PAGE`]).
    page: Arc<AtomicU64>,
}

impl MemoryRemote {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps objects with `clock` instead of the system's.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.clock.set(clock);
        self
    }

    /// Makes the store accept conditional headers but ignore them, as some
    /// S3-compatible stores do.
    pub fn ignore_conditions(&self, ignore: bool) {
        self.ignore_conditions.store(ignore, Ordering::SeqCst);
    }

    /// Lists `n` keys per page (at least one), so listings page while
    /// others write.
    pub fn set_page_size(&self, n: usize) {
        self.page.store(n.max(1) as u64, Ordering::SeqCst);
    }

    fn page_size(&self) -> usize {
        match self.page.load(Ordering::SeqCst) {
            0 => PAGE,
            n => n as usize,
        }
    }

    /// Makes the store ignore conditions on its second write path only, as
    /// an S3 store that enforces them on `PutObject` but not on
    /// `CompleteMultipartUpload`: as on S3, that path takes rewrites of the
    /// same bytes (`If-Match` a version whose content the new body
    /// repeats) and [`Remote::put_multipart_probe`].
    pub fn ignore_multipart_conditions(&self, ignore: bool) {
        self.ignore_multipart_conditions
            .store(ignore, Ordering::SeqCst);
    }

    /// Requests served so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Stored>>, RemoteError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.objects
            .lock()
            .map_err(|_| RemoteError::new(RemoteErrorKind::Terminal, "memory://", "store poisoned"))
    }

    /// A write, through the second path when `multipart`.
    fn put_with(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
        multipart: bool,
    ) -> Result<String, RemoteError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                RemoteError::new(
                    RemoteErrorKind::Terminal,
                    "memory://",
                    format!("reading {}: {e}", path.display()),
                )
            })
        };
        let data: Bytes = match body {
            RemoteBody::Bytes(b) => b,
            RemoteBody::File(path) => read(&path)?.into(),
            RemoteBody::Framed { head, file } => {
                let mut v = head.to_vec();
                v.extend_from_slice(&read(&file)?);
                v.into()
            }
        };
        let hash = crate::hash::ContentHash::of(&data);
        req.progress.moved(data.len() as u64);
        let mut contents = self.contents.lock().map_err(|_| {
            RemoteError::new(RemoteErrorKind::Terminal, "memory://", "store poisoned")
        })?;
        let same_bytes = match &cond {
            Precondition::IfMatch(etag) => contents.get(etag) == Some(&hash),
            _ => false,
        };
        let mut objects = self.lock()?;
        self.check(objects.get(&req.key), &cond, multipart || same_bytes)?;
        let etag = format!("\"m{}\"", self.versions.fetch_add(1, Ordering::SeqCst) + 1);
        contents.insert(etag.clone(), hash);
        objects.insert(
            req.key.clone(),
            Stored {
                data,
                etag: etag.clone(),
                content_type: req.content_type.clone(),
                metadata: req.all_metadata(),
                modified_ms: self.clock.now_ms(),
            },
        );
        Ok(etag)
    }

    fn describe(key: &str, s: &Stored) -> RemoteObject {
        RemoteObject {
            key: key.to_owned(),
            etag: s.etag.clone(),
            size: s.data.len() as u64,
            modified_ms: Some(s.modified_ms),
            hash: None,
            content_type: Some(s.content_type.clone()),
            metadata: Metadata::new(),
            ferry_mtime: None,
            has_metadata: false,
            device: None,
            base: None,
            meta: None,
            stamp: None,
        }
        .with_metadata(s.metadata.clone())
    }

    fn check(
        &self,
        current: Option<&Stored>,
        cond: &Precondition,
        multipart: bool,
    ) -> Result<(), RemoteError> {
        if self.ignore_conditions.load(Ordering::SeqCst)
            || (multipart && self.ignore_multipart_conditions.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        cond.check(current.map(|c| c.etag.as_str()), "memory://", "object")
    }
}

#[async_trait::async_trait]
impl Remote for MemoryRemote {
    fn endpoint(&self) -> String {
        "memory://".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_put: true,
            conditional_delete: true,
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError> {
        // Pages of `PAGE` keys in key order; the token is the last key given.
        use std::ops::Bound;
        let objects = self.lock()?;
        let start = match &token {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Included(prefix.to_owned()),
        };
        let page: Vec<RemoteObject> = objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(self.page_size())
            .map(|(k, s)| {
                let mut o = Self::describe(k, s);
                // Listings carry no metadata, as on S3.
                o.hash = None;
                o.content_type = None;
                o.metadata.clear();
                o.ferry_mtime = None;
                o.has_metadata = false;
                o
            })
            .collect();
        let next = (page.len() == self.page_size()).then(|| page[page.len() - 1].key.clone());
        Ok(RemotePage {
            objects: page,
            next,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        Ok(self.lock()?.get(key).map(|s| Self::describe(key, s)))
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let objects = self.lock()?;
        let s = objects.get(key).ok_or_else(|| {
            RemoteError::new(
                RemoteErrorKind::NotFound,
                "memory://",
                format!("no object {key:?}"),
            )
        })?;
        let reader: RemoteReader = Box::new(std::io::Cursor::new(s.data.clone()));
        Ok((Self::describe(key, s), reader))
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        self.put_with(req, body, cond, false)
    }

    async fn put_multipart_probe(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Option<Result<String, RemoteError>> {
        Some(self.put_with(req, body, cond, true))
    }

    fn may_write_multipart(&self, _size: u64, cond: &Precondition) -> bool {
        matches!(cond, Precondition::IfMatch(_))
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let mut objects = self.lock()?;
        if cond != Precondition::None {
            self.check(objects.get(key), &cond, false)?;
        }
        objects.remove(key);
        Ok(())
    }
}

/// Writes an object as a plain client would (no ferry metadata): for tests.
impl MemoryRemote {
    /// Stores `data` at `key` like a foreign S3 client; returns the etag.
    pub fn put_foreign(&self, key: &str, data: impl Into<Bytes>, content_type: &str) -> String {
        let etag = format!("\"m{}\"", self.versions.fetch_add(1, Ordering::SeqCst) + 1);
        let data: Bytes = data.into();
        if let Ok(mut contents) = self.contents.lock() {
            contents.insert(etag.clone(), crate::hash::ContentHash::of(&data));
        }
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(
                key.to_owned(),
                Stored {
                    data,
                    etag: etag.clone(),
                    content_type: content_type.to_owned(),
                    metadata: Metadata::new(),
                    modified_ms: self.clock.now_ms(),
                },
            );
        }
        etag
    }

    /// Replaces the metadata of `key` like a plain client's copy onto
    /// itself with new metadata (ferry's entries are gone); a new etag.
    /// False when there is no such object.
    pub fn rewrite_foreign_metadata(&self, key: &str, metadata: Metadata) -> bool {
        let etag = format!("\"m{}\"", self.versions.fetch_add(1, Ordering::SeqCst) + 1);
        let now = self.clock.now_ms();
        let Ok(mut objects) = self.objects.lock() else {
            return false;
        };
        match objects.get_mut(key) {
            Some(s) => {
                if let Ok(mut contents) = self.contents.lock() {
                    contents.insert(etag.clone(), crate::hash::ContentHash::of(&s.data));
                }
                s.metadata = metadata;
                s.etag = etag;
                s.modified_ms = now;
                true
            }
            None => false,
        }
    }

    /// Deletes `key` as a plain client would; false when it was not there.
    pub fn delete_foreign(&self, key: &str) -> bool {
        self.objects
            .lock()
            .map(|mut o| o.remove(key).is_some())
            .unwrap_or(false)
    }

    /// The content hash of the version `etag` names (every version this
    /// store ever wrote).
    pub fn content_of(&self, etag: &str) -> Option<crate::hash::ContentHash> {
        self.contents.lock().ok().and_then(|c| c.get(etag).copied())
    }

    /// The ETag of the version at `key`, if any.
    pub fn etag_of(&self, key: &str) -> Option<String> {
        self.objects
            .lock()
            .ok()
            .and_then(|o| o.get(key).map(|s| s.etag.clone()))
    }

    /// Every object: key → (bytes, content type, metadata as stored, ferry's
    /// entries included).
    pub fn snapshot(&self) -> BTreeMap<String, (Bytes, String, Metadata)> {
        self.objects
            .lock()
            .map(|o| {
                o.iter()
                    .map(|(k, s)| {
                        (
                            k.clone(),
                            (s.data.clone(), s.content_type.clone(), s.metadata.clone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
