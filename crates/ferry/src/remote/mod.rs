//! Remotes: the object stores a bucket syncs with, behind one small trait.
//!
//! A [`Remote`] stores objects under ferry keys (the remote prefix is the
//! implementation's business) and answers with plain data. Implementations:
//! [`memory::MemoryRemote`] (tests), [`folder::FolderRemote`] (`file://`,
//! the embedded default), [`s3::S3Remote`] (`s3://`, through the AWS
//! SDK, which keeps keys byte for byte), [`gcs::GcsRemote`] (`gs://`,
//! Google's JSON API over plain HTTP, for the same reason),
//! [`azure::AzureRemote`] (`az://`, Azure's REST API over plain HTTP) and
//! [`webdav::WebDavRemote`] (`webdav://`, `webdavs://`, over plain HTTP)
//! and [`signer::SignerRemote`] (`signer+https://`, a store reached through
//! a URL signer's short-lived URLs).
//! Retry with backoff ([`retry::Retrying`]), emulated preconditions
//! ([`emulated::Emulated`]), encryption ([`encrypted::Encrypted`]) and
//! fault injection ([`fault::Faulty`]) wrap any remote as layers, on the
//! forwarding base [`layer::Layer`]: a layer writes only what it changes.

pub mod layer;
pub mod layers;
pub mod progress;
pub mod services;
pub mod spec;

pub use layers::{emulated, encrypted, fault, retry};
pub use progress::TransferProgress;
pub use services::{azure, folder, gcs, memory, s3, signer, webdav};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::hash::{ContentHash, MetaDigest};
use crate::metadata::Metadata;

/// Remote metadata names ferry adds to every object it writes.
pub const META_HASH: &str = "ferry-hash";
/// The writer's modification time (ms since the Unix epoch).
pub const META_MTIME: &str = "ferry-mtime";
/// The writing replica's device id.
pub const META_DEVICE: &str = "ferry-device";
/// The version a pushed version replaced: the version id
/// ([`crate::version_id`]) of the writer's base, or `none` for a key the writer created. Two
/// pushed versions with the same base are siblings: one overwrote the other
/// (see `docs/design.md`, "Lost updates").
pub const META_BASE: &str = "ferry-base";
/// The `ferry-base` value of a version written as a new key.
pub const BASE_NONE: &str = "none";

/// One page of a listing ([`Remote::list_page`]).
#[derive(Debug, Clone, Default)]
pub struct RemotePage {
    /// The objects on this page.
    pub objects: Vec<RemoteObject>,
    /// Where the next page starts, or `None` after the last page.
    pub next: Option<String>,
}

/// Every page of `remote`'s listing under `prefix`, collected.
pub async fn collect_pages<R: Remote + ?Sized>(
    remote: &R,
    prefix: &str,
) -> Result<Vec<RemoteObject>, RemoteError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = remote.list_page(prefix, token).await?;
        out.extend(page.objects);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(out),
        }
    }
}

/// An object as a remote describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// The key relative to the remote prefix (not yet validated as a ferry key).
    pub key: String,
    /// The store's version tag (ETag or equivalent); changes whenever the object does.
    pub etag: String,
    /// Content length.
    pub size: u64,
    /// The store's last-modified time, ms since the Unix epoch, if known.
    pub modified_ms: Option<i64>,
    /// ferry's content hash, when ferry wrote the object and the answer carries metadata.
    pub hash: Option<ContentHash>,
    /// Content type, when the answer carries it.
    pub content_type: Option<String>,
    /// User metadata without ferry's own entries, when the answer carries it.
    pub metadata: Metadata,
    /// ferry's modification time, when ferry wrote it.
    pub ferry_mtime: Option<i64>,
    /// Whether this answer carried metadata at all (listings usually do not).
    pub has_metadata: bool,
    /// The writing device (`ferry-device`), when ferry wrote the object.
    pub device: Option<String>,
    /// What the writer based this version on (`ferry-base`), when ferry wrote it.
    pub base: Option<String>,
    /// The digest of the content type and user metadata, filled in by the
    /// sync executor for answers that carry metadata (never by a store).
    pub meta: Option<MetaDigest>,
    /// The version stamp sealed in an encrypted object's envelope (see
    /// `docs/design.md` §8, rollback): a replica refuses a version older
    /// than one it has seen.
    pub stamp: Option<u64>,
}

impl RemoteObject {
    /// A description from a listing: no metadata yet.
    pub fn listed(key: impl Into<String>, etag: impl Into<String>, size: u64) -> Self {
        RemoteObject {
            key: key.into(),
            etag: etag.into(),
            size,
            modified_ms: None,
            hash: None,
            content_type: None,
            metadata: Metadata::new(),
            ferry_mtime: None,
            has_metadata: false,
            device: None,
            base: None,
            meta: None,
            stamp: None,
        }
    }

    /// Splits a store's user metadata into ferry's entries and the user's.
    pub fn with_metadata(mut self, all: impl IntoIterator<Item = (String, String)>) -> Self {
        self.has_metadata = true;
        for (name, value) in all {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                META_HASH => self.hash = value.parse().ok(),
                META_MTIME => self.ferry_mtime = value.parse().ok(),
                META_DEVICE => self.device = Some(value),
                META_BASE => self.base = Some(value),
                _ => {
                    self.metadata.insert(name, value);
                }
            }
        }
        self
    }
}

/// What a write is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    None,
    /// Only if no object exists (`If-None-Match: *`).
    IfAbsent,
    /// Only if the object's current version is this etag (`If-Match`).
    IfMatch(String),
}

impl Precondition {
    /// Checks the precondition against the current version (`None`: absent);
    /// on failure, the error a store would give.
    pub fn check(
        &self,
        current_etag: Option<&str>,
        endpoint: &str,
        key: &str,
    ) -> Result<(), RemoteError> {
        let holds = match self {
            Precondition::None => true,
            Precondition::IfAbsent => current_etag.is_none(),
            Precondition::IfMatch(etag) => current_etag == Some(etag.as_str()),
        };
        if holds {
            Ok(())
        } else {
            Err(RemoteError::new(
                RemoteErrorKind::PreconditionFailed,
                endpoint,
                format!("{key}: precondition failed"),
            ))
        }
    }
}

/// An object to write, with what travels as the store's headers.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// The ferry key.
    pub key: String,
    /// Content type header.
    pub content_type: String,
    /// User metadata (ferry's entries are added by [`PutRequest::all_metadata`]).
    pub metadata: Metadata,
    /// ferry's content hash.
    pub hash: ContentHash,
    /// Content length.
    pub size: u64,
    /// Modification time, ms since the Unix epoch.
    pub mtime_ms: i64,
    /// Writing device.
    pub device: String,
    /// The `ferry-base` entry: the version this one replaces
    /// ([`BASE_NONE`] for a new key); empty: none written (probes).
    pub base: String,
    /// An encrypted remote's object: ferry's own entries (hash, time,
    /// device) travel inside the sealed body, never as readable headers.
    pub sealed: bool,
    /// The version stamp to seal in an encrypted object's envelope.
    pub stamp: Option<u64>,
    /// Where the service reports how much of the body it has sent
    /// (nowhere by default: [`TransferProgress::none`]).
    pub progress: TransferProgress,
}

impl PutRequest {
    /// User metadata plus ferry's own entries, as the store should hold them.
    pub fn all_metadata(&self) -> Metadata {
        let mut all = self.metadata.clone();
        if self.sealed {
            return all;
        }
        all.insert(META_HASH.into(), self.hash.to_hex());
        all.insert(META_MTIME.into(), self.mtime_ms.to_string());
        all.insert(META_DEVICE.into(), self.device.clone());
        if !self.base.is_empty() {
            all.insert(META_BASE.into(), self.base.clone());
        }
        all
    }
}

/// The content of a write.
#[derive(Debug, Clone)]
pub enum RemoteBody {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A local file (a blob), streamed.
    File(PathBuf),
    /// Bytes followed by a local file (an encrypted remote's envelope and
    /// the sealed blob, sent as they are).
    Framed {
        /// Written first.
        head: Bytes,
        /// Streamed after `head`.
        file: PathBuf,
    },
}

/// A streaming object body from a remote.
pub type RemoteReader = Box<dyn AsyncRead + Send + Unpin>;

/// How a remote request failed, and whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// No such object.
    NotFound,
    /// A conditional write or delete found another version.
    PreconditionFailed,
    /// Worth retrying: 5xx, throttling, timeouts, resets.
    Retryable,
    /// The store could not be reached at all.
    Unreachable,
    /// Retrying will not help: 4xx, bad credentials, bad request.
    Terminal,
    /// The remote's data failed authentication or is malformed (tampering,
    /// corruption, or an object not written under this bucket's key).
    Integrity,
}

/// A failed remote request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {detail}")]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// The store's endpoint (for messages).
    pub endpoint: String,
    /// What happened.
    pub detail: String,
}

impl RemoteError {
    /// A new error.
    pub fn new(
        kind: RemoteErrorKind,
        endpoint: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        RemoteError {
            kind,
            endpoint: endpoint.into(),
            detail: detail.into(),
        }
    }

    /// True for kinds a retry may fix.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            RemoteErrorKind::Retryable | RemoteErrorKind::Unreachable
        )
    }

    /// True when the store gave no answer: not reached, or no progress
    /// within the time limit (a stopped, frozen or unplugged store, not a
    /// refusal of this request).
    pub fn is_no_answer(&self) -> bool {
        match self.kind {
            RemoteErrorKind::Unreachable => true,
            RemoteErrorKind::Retryable => {
                let detail = self.detail.to_ascii_lowercase();
                ["timeout", "timed out", "throughput"]
                    .iter()
                    .any(|w| detail.contains(w))
            }
            _ => false,
        }
    }
}

/// What a store can do, as declared by the implementation and confirmed by the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Claims to support `If-None-Match: *` / `If-Match` on writes.
    pub conditional_put: bool,
    /// Claims to support `If-Match` on deletes.
    pub conditional_delete: bool,
}

/// Where a store keeps ferry's description of each object (content type,
/// user metadata, ferry's hash, time and device): what the probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataPlace {
    /// The store's own object metadata (S3, GCS and Azure headers, the
    /// folder remote's sidecars, memory).
    Native,
    /// A WebDAV dead property on the file.
    DeadProperty,
    /// A WebDAV sidecar file per key under `.ferry/meta/`.
    Sidecar,
}

/// An object store, addressed by ferry keys.
#[async_trait::async_trait]
pub trait Remote: Send + Sync + fmt::Debug {
    /// Where the store is, for messages (`s3://bucket/prefix at http://host`).
    fn endpoint(&self) -> String;

    /// What the implementation claims it can do.
    fn capabilities(&self) -> Capabilities;

    /// Every object under `prefix` (recursive), any order: every page of
    /// [`Remote::list_page`], collected.
    async fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
        collect_pages(self, prefix).await
    }

    /// One page of the objects under `prefix` (recursive), from the
    /// position `token` names (`None`: the first page), and the token of
    /// the next page (`None`: this was the last). Pages hold a bounded
    /// number of objects (about a thousand) on stores that page; the order
    /// across pages is the store's.
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError>;

    /// One object's description with metadata, or `None`.
    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError>;

    /// Reads an object: its description (with metadata) and body.
    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError>;

    /// Reads an object's description and at most its first `len` bytes, or
    /// `None` when it does not exist. The default reads through `get`;
    /// stores that can ask for a range do so.
    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        read_prefix(self, key, len).await
    }

    /// Writes an object if `cond` holds; returns the new etag.
    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError>;

    /// Deletes an object if `cond` holds. Deleting a missing object succeeds.
    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError>;

    /// Writes like [`Remote::put`], but through the store's second write
    /// path whatever the size, for the capability probe: S3 writes objects
    /// over 8 MiB, and rewrites of the same bytes, as multipart uploads,
    /// and a store may enforce conditions on `PutObject` but not on
    /// `CompleteMultipartUpload`. `None`: the store has one write path
    /// (the default).
    async fn put_multipart_probe(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Option<Result<String, RemoteError>> {
        let _ = (req, body, cond);
        None
    }

    /// True when a write whose body is `size` bytes, under `cond`, may take
    /// the second write path ([`Remote::put_multipart_probe`]); the
    /// emulation layer checks those writes by HEAD where the probe found
    /// their conditions ignored. The default: never.
    fn may_write_multipart(&self, size: u64, cond: &Precondition) -> bool {
        let _ = (size, cond);
        false
    }

    /// Why this store cannot hold `key` exactly (a valid ferry key), or
    /// `None` when it can. A remote never renames a key: the keys it cannot
    /// hold are refused by name before any request is made.
    fn refuses(&self, key: &str) -> Option<String> {
        let _ = key;
        None
    }

    /// Removes what `device`'s interrupted writes left behind on the store
    /// (incomplete multipart uploads); returns how many were removed.
    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        let _ = device;
        Ok(0)
    }

    /// Makes the place the remote names when it is missing and a client
    /// can make it (a WebDAV collection and its parents); `Ok(true)` when
    /// something was made. Asked for only when a person names the remote
    /// (`ferry init`, `ferry remote set`), never by a sync: a base folder
    /// that is gone later may be an unmounted share, and a sync against it
    /// fails instead. The default: nothing to make.
    async fn create_base(&self) -> Result<bool, RemoteError> {
        Ok(false)
    }

    /// Where this store keeps ferry's description of each object, as far
    /// as this handle knows (a WebDAV remote learns it at its first write
    /// or read). The default: the store's own metadata.
    fn metadata_place(&self) -> MetadataPlace {
        MetadataPlace::Native
    }
}

/// A shared remote.
pub type SharedRemote = Arc<dyn Remote>;

/// The MD5 a single-part upload's ETag names (32 hex digits, quoted or
/// not, no `-N` part count), on AWS and the stores that follow it.
pub fn plain_md5_etag(etag: &str) -> Option<[u8; 16]> {
    let t = etag.trim_matches('"');
    let mut out = [0u8; 16];
    (t.len() == 32 && hex::decode_to_slice(t, &mut out).is_ok()).then_some(out)
}

/// True for an ETag derived from the content alone, which a metadata-only
/// rewrite keeps: a single-part upload's MD5, or a multipart upload's
/// (`<32 hex digits>-<parts>`), quoted or not.
pub fn content_derived_etag(etag: &str) -> bool {
    let t = etag.trim_matches('"');
    let (md5, parts) = t.split_once('-').unwrap_or((t, "1"));
    md5.len() == 32
        && md5.bytes().all(|b| b.is_ascii_hexdigit())
        && !parts.is_empty()
        && parts.bytes().all(|b| b.is_ascii_digit())
}

/// Reads an object's description and at most its first `len` bytes through
/// `get` (the default of [`Remote::get_prefix`]); `None` when it does not exist.
pub async fn read_prefix<R: Remote + ?Sized>(
    remote: &R,
    key: &str,
    len: u64,
) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
    use tokio::io::AsyncReadExt;
    let (obj, reader) = match remote.get(key).await {
        Ok(found) => found,
        Err(e) if e.kind == RemoteErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    reader.take(len).read_to_end(&mut out).await.map_err(|e| {
        RemoteError::new(
            RemoteErrorKind::Retryable,
            remote.endpoint(),
            format!("reading {key}: {e}"),
        )
    })?;
    Ok(Some((obj, out.into())))
}
