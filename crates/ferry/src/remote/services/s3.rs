//! `s3://BUCKET[/PREFIX]`: any S3-compatible store, through the official
//! AWS SDK for Rust (`aws-sdk-s3`).
//!
//! This module owns everything ferry says to an S3 API: the client's
//! settings (built by hand: no environment, no `~/.aws`, no SDK retries, as
//! ferry retries in its own layer), the mapping of [`Remote`] operations to
//! S3 requests, the multipart protocol and its clean-up, and the
//! classification of the SDK's errors into [`RemoteErrorKind`]s.
//!
//! **Keys travel byte for byte.** The object for the ferry key `k` is
//! `PREFIX/k` (just `k` when the prefix is empty), with no trimming,
//! collapsing of `//`, Unicode normalisation or "directory" reading of a
//! trailing `/`: `"x "`, `a//b`, `a/`, `a%2Fb` and NFC `ä` beside NFD `ä` are
//! six different objects, as S3 says they are. OpenDAL, which this module
//! used before, normalises paths by design (apache/opendal#4101, #6577);
//! a storage product cannot, so the plain SDK it is. Listings ask for
//! `encoding-type=url` and decode the answer, so that any key survives XML.
//! A key longer than S3's 1,024 bytes (with the prefix) is refused by name
//! ([`Remote::refuses`]), never shortened.
//!
//! Conditional writes map to `If-None-Match: *` and `If-Match` (on
//! `PutObject`, and on `CompleteMultipartUpload` for large objects);
//! conditional deletes to `If-Match`. Whether the store enforces them is
//! found out by the capability probe, not assumed. ferry's content hash,
//! mtime, device and base travel as `x-amz-meta-*`.
//!
//! Objects up to [`PART`] bytes go in one `PutObject`, larger ones as a
//! multipart upload with up to [`PARALLEL_PARTS`] parts in flight. A
//! multipart upload leaves a small marker object under
//! `PREFIX/.ferry/uploads/DEVICE/` while it runs, naming the upload; any
//! failure (or dropping the write) aborts the upload and removes the
//! marker, and [`Remote::cleanup`] aborts whatever a crashed process left.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, Length, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// Part size for multipart uploads, and the largest object sent in one
/// `PutObject`. Memory per upload is at most `PART * (PARALLEL_PARTS + 1)`.
pub const PART: u64 = 8 << 20;
/// Parts of one multipart upload in flight at once.
pub const PARALLEL_PARTS: usize = 8;
/// S3's limit on the number of parts; objects above `PART * MAX_PARTS`
/// (80 GiB) use larger parts (powers of two times [`PART`]).
const MAX_PARTS: u64 = 10_000;
/// S3's limit on a key's length, in bytes of UTF-8.
pub const MAX_S3_KEY: usize = 1024;
/// The slowest upload a request body is given time for before the read
/// timeout ends it (bytes per second). Stalls are caught sooner, by the
/// stalled-stream protection; this only bounds a server that took the whole
/// body and then fell silent.
const MIN_UPLOAD_RATE: u64 = 32 << 10;
/// Request bodies are handed to the HTTP client in pieces this large, so
/// that the stalled-stream protection sees an upload that stops moving (a
/// body handed over whole counts as sent at once).
const CHUNK: usize = 64 << 10;
/// Concurrent HEADs completing a listing that lacks ETags.
const LIST_HEADS: usize = 16;
/// Where multipart markers live, under the remote prefix.
const UPLOADS_DIR: &str = ".ferry/uploads/";

/// Where and how to reach an S3-compatible store. Credentials are given by
/// the caller (the library reads no environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), may be empty.
    pub prefix: String,
    /// Endpoint URL (`http://127.0.0.1:9000`); `None`: AWS for the region.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unsure).
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    /// Access key id; `None` with no secret: anonymous (unsigned) requests.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// How long establishing a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long a request may make no progress: no response to a request
    /// without a body, or no bytes moving in either direction, before it
    /// fails (and ferry's retry layer decides what next).
    pub io_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: String::new(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// An S3-compatible remote.
#[derive(Debug, Clone)]
pub struct S3Remote {
    client: Client,
    bucket: String,
    /// The remote prefix without surrounding `/`; empty: the bucket's root.
    prefix: String,
    described: String,
    connect_timeout: Duration,
    io_timeout: Duration,
}

/// Which request [`S3Remote::presign`] signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    /// An upload.
    Put,
    /// A download.
    Get,
    /// A description.
    Head,
}

/// A presigned request: anyone holding it may send it until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// The URL, signature in its query.
    pub url: String,
    /// `PUT`, `GET` or `HEAD`.
    pub method: String,
    /// Headers the request must carry as signed (content type, metadata).
    pub headers: Vec<(String, String)>,
}

/// What a multipart marker object holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    /// The upload's full S3 key (prefix included).
    key: String,
    /// The store's upload id.
    upload_id: String,
}

impl S3Remote {
    /// Builds the client (no request is made).
    pub fn new(cfg: &S3Config) -> Result<Self, RemoteError> {
        let described = format!(
            "s3://{}/{} at {}",
            cfg.bucket,
            cfg.prefix,
            cfg.endpoint.as_deref().unwrap_or("AWS")
        );
        let invalid = |why: String| {
            RemoteError::new(
                RemoteErrorKind::Terminal,
                described.clone(),
                format!("invalid S3 settings: {why}"),
            )
        };
        if cfg.bucket.is_empty() {
            return Err(invalid("the bucket name is empty".into()));
        }
        let region = if cfg.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            cfg.region.clone()
        };
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .force_path_style(cfg.path_style)
            // ferry's retry layer decides what is retried, and how often.
            .retry_config(RetryConfig::disabled())
            // Many S3-compatible servers reject the SDK's default trailing
            // CRC checksums (aws-chunked bodies); ferry checks content
            // hashes itself.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .read_timeout(cfg.io_timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(cfg.io_timeout)
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            let host = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if host.is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "the endpoint {endpoint:?} is not an http:// or https:// URL"
                )));
            }
            b = b.endpoint_url(endpoint);
        }
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.credentials_provider(Credentials::new(
                    id,
                    secret,
                    cfg.session_token.clone(),
                    None,
                    "ferry",
                ));
            }
            (None, None) => b = b.allow_no_auth(),
            _ => {
                return Err(invalid(
                    "an access key id needs a secret access key, and the other way round".into(),
                ))
            }
        }
        Ok(S3Remote {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.trim_matches('/').to_owned(),
            described,
            connect_timeout: cfg.connect_timeout,
            io_timeout: cfg.io_timeout,
        })
    }

    /// A presigned request for `key` (under the remote prefix): a PUT
    /// with the given content type, user metadata and condition
    /// (`If-None-Match: *` or `If-Match`, signed in, so the store enforces
    /// it; the headers the client must send are returned), a GET, or a
    /// HEAD, valid for `expires`. Made locally, no request is sent.
    pub async fn presign(
        &self,
        method: PresignMethod,
        key: &str,
        expires: Duration,
        content_type: Option<&str>,
        metadata: &crate::metadata::Metadata,
        cond: &Precondition,
    ) -> Result<Presigned, RemoteError> {
        let fail = |e: String| {
            RemoteError::new(
                RemoteErrorKind::Terminal,
                self.endpoint(),
                format!("presigning {key:?}: {e}"),
            )
        };
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| fail(e.to_string()))?;
        let full = self.full(key);
        let req = match method {
            PresignMethod::Put => {
                let mut b = self.client.put_object().bucket(&self.bucket).key(&full);
                if let Some(ct) = content_type {
                    b = b.content_type(ct);
                }
                for (n, v) in crate::metadata::to_headers(metadata) {
                    b = b.metadata(n, v);
                }
                match cond {
                    Precondition::None => {}
                    Precondition::IfAbsent => b = b.if_none_match("*"),
                    Precondition::IfMatch(etag) => b = b.if_match(etag),
                }
                b.presigned(config).await.map_err(|e| fail(e.to_string()))?
            }
            PresignMethod::Get => self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .presigned(config)
                .await
                .map_err(|e| fail(e.to_string()))?,
            PresignMethod::Head => self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .presigned(config)
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        Ok(Presigned {
            url: req.uri().to_owned(),
            method: req.method().to_owned(),
            headers: req
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// The S3 key of a ferry key (or of a listing prefix): exact.
    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// What every S3 key of this remote starts with.
    fn root(&self) -> String {
        self.full("")
    }

    fn error(&self, kind: RemoteErrorKind, detail: String) -> RemoteError {
        RemoteError::new(kind, self.described.clone(), detail)
    }

    /// An SDK failure as a [`RemoteError`], its text saying what was done.
    fn sdk_err<E>(&self, e: SdkError<E, HttpResponse>, what: &str) -> RemoteError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.error(classify(&e), format!("{what}: {}", error_text(&e)))
    }

    /// Timeouts for a request that sends up to `part` bytes: its response may
    /// come only after the whole body went out.
    fn upload_timeouts(&self, part: u64) -> aws_sdk_s3::config::Builder {
        let sending = Duration::from_secs(part.div_ceil(MIN_UPLOAD_RATE));
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.connect_timeout)
                .read_timeout(self.io_timeout + sending)
                .build(),
        )
    }

    /// Why this remote cannot write `key`, as a [`RemoteError`].
    fn refusal(&self, key: &str) -> Option<RemoteError> {
        self.refuses(key).map(|why| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("the key {key:?} cannot be stored on this S3 remote: {why}"),
            )
        })
    }

    /// One page of the objects whose S3 key starts with `PREFIX/prefix`,
    /// keys relative to the remote prefix, as the listing gives them (ETags
    /// may be missing), and the continuation token of the next page.
    async fn list_raw_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<RemoteObject>, Option<String>), RemoteError> {
        let root = self.root();
        let full = self.full(prefix);
        let what = format!("listing {prefix:?}");
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .encoding_type(EncodingType::Url)
            .set_continuation_token(token);
        if !full.is_empty() {
            req = req.prefix(&full);
        }
        let page = req.send().await.map_err(|e| self.sdk_err(e, &what))?;
        // Decode only what the store says it encoded: a store that
        // ignores `encoding-type` sends keys as they are.
        let encoded = page.encoding_type() == Some(&EncodingType::Url);
        let mut out = Vec::new();
        for o in page.contents() {
            let Some(raw) = o.key() else { continue };
            let key = if encoded {
                url_decode(raw).ok_or_else(|| {
                    self.error(
                        RemoteErrorKind::Terminal,
                        format!(
                            "{what}: the store listed a key that is not URL-encoded UTF-8: {raw:?}"
                        ),
                    )
                })?
            } else {
                raw.to_owned()
            };
            let Some(rel) = key.strip_prefix(&root) else {
                continue;
            };
            let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            let mut obj = RemoteObject::listed(rel, o.e_tag().unwrap_or_default(), size);
            obj.modified_ms = millis(o.last_modified());
            out.push(obj);
        }
        let next = if page.is_truncated() == Some(true) {
            match page.next_continuation_token() {
                Some(t) if !t.is_empty() => Some(t.to_owned()),
                _ => {
                    return Err(self.error(
                        RemoteErrorKind::Terminal,
                        format!(
                        "{what}: the store said the listing goes on but gave no continuation token"
                    ),
                    ))
                }
            }
        } else {
            None
        };
        Ok((out, next))
    }

    /// Every object whose S3 key starts with `PREFIX/prefix`, as
    /// [`S3Remote::list_raw_page`] gives them.
    async fn list_raw(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_raw_page(prefix, token).await?;
            out.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// How to upload: single up to [`PART`], multipart above. But a
    /// rewrite (`If-Match`) must never produce the ETag it replaces: on
    /// stores whose ETag is the content's MD5, a metadata-only rewrite
    /// would otherwise be invisible in listings (same ETag; S3 lists whole
    /// seconds). So when the bytes are those of the replaced single-part
    /// version, the upload is one part of a multipart upload (ETag `...-1`),
    /// and when a multipart version would be rewritten with the same part
    /// count, the part size changes.
    async fn shape(
        &self,
        req: &PutRequest,
        body: &RemoteBody,
        size: u64,
        cond: &Precondition,
    ) -> Result<Shape, RemoteError> {
        let natural = if size <= PART {
            Shape::Single
        } else {
            Shape::Multipart(part_size(size))
        };
        let Precondition::IfMatch(base) = cond else {
            return Ok(natural);
        };
        match natural {
            Shape::Single if size > 0 => {
                let Some(old) = crate::remote::plain_md5_etag(base) else {
                    return Ok(natural);
                };
                let md5 = self.body_md5(req, body).await?;
                Ok(if md5 == old {
                    Shape::Multipart(size)
                } else {
                    natural
                })
            }
            Shape::Multipart(mut part) => {
                if multipart_count(base) == Some(size.div_ceil(part)) {
                    let n = size.div_ceil(part);
                    while size.div_ceil(part) == n {
                        part += 1 << 20;
                    }
                }
                Ok(Shape::Multipart(part))
            }
            Shape::Single => Ok(natural),
        }
    }

    /// `put`, or with `multipart` through a one-part multipart upload
    /// whatever the size (the capability probe's second path).
    async fn put_with(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
        multipart: bool,
    ) -> Result<String, RemoteError> {
        if let Some(e) = self.refusal(&req.key) {
            return Err(e);
        }
        let size = match &body {
            RemoteBody::Bytes(b) => Ok(b.len() as u64),
            RemoteBody::File(file) => file_len(file).await,
            RemoteBody::Framed { head, file } => {
                file_len(file).await.map(|n| n + head.len() as u64)
            }
        }
        .map_err(|(path, e)| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("writing {:?}: reading {}: {e}", req.key, path.display()),
            )
        })?;
        let shape = if multipart {
            Shape::Multipart(size.max(1))
        } else {
            self.shape(req, &body, size, &cond).await?
        };
        let etag = match shape {
            Shape::Single => self.put_single(req, body, size, &cond).await?,
            Shape::Multipart(part) => self.put_multipart(req, body, size, part, &cond).await?,
        };
        match etag.filter(|e| !e.is_empty()) {
            Some(etag) => Ok(etag),
            None => self.head(&req.key).await?.map(|o| o.etag).ok_or_else(|| {
                self.error(
                    RemoteErrorKind::Retryable,
                    format!("{:?} vanished after writing", req.key),
                )
            }),
        }
    }

    /// The MD5 of a body of at most [`PART`] bytes.
    async fn body_md5(&self, req: &PutRequest, body: &RemoteBody) -> Result<[u8; 16], RemoteError> {
        use md5::Digest;
        let mut md5 = md5::Md5::new();
        let read_err = |path: &std::path::Path, e: std::io::Error| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("writing {:?}: reading {}: {e}", req.key, path.display()),
            )
        };
        let (head, file) = match body {
            RemoteBody::Bytes(b) => (Some(b.clone()), None),
            RemoteBody::File(path) => (None, Some(path)),
            RemoteBody::Framed { head, file } => (Some(head.clone()), Some(file)),
        };
        if let Some(h) = head {
            md5.update(&h);
        }
        if let Some(path) = file {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| read_err(path, e))?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| read_err(path, e))?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
            }
        }
        Ok(md5.finalize().into())
    }

    /// Writes a small object (at most [`PART`] bytes) in one `PutObject`.
    async fn put_single(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        size: u64,
        cond: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let what = format!("writing {:?}", req.key);
        let stream = match body {
            RemoteBody::Bytes(b) => chunked(b),
            RemoteBody::File(_) if size == 0 => ByteStream::from(Bytes::new()),
            RemoteBody::File(path) => ByteStream::read_from()
                .path(&path)
                .buffer_size(CHUNK)
                .length(Length::Exact(size))
                .build()
                .await
                .map_err(|e| {
                    self.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: reading {}: {e}", path.display()),
                    )
                })?,
            RemoteBody::Framed { head, file } => {
                // At most PART bytes, and never more than the object.
                let mut buf = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
                let mut reader = framed_reader(head, &file).await.map_err(|e| {
                    self.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: reading {}: {e}", file.display()),
                    )
                })?;
                reader.read_exact(&mut buf).await.map_err(|e| {
                    self.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: reading {}: {e}", file.display()),
                    )
                })?;
                chunked(Bytes::from(buf))
            }
        };
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(&req.key))
            .body(stream)
            .content_length(to_i64(size))
            .set_metadata(Some(header_metadata(req)));
        if !req.content_type.is_empty() {
            put = put.content_type(&req.content_type);
        }
        match cond {
            Precondition::None => {}
            Precondition::IfAbsent => put = put.if_none_match("*"),
            Precondition::IfMatch(etag) => put = put.if_match(etag),
        }
        let out = put
            .customize()
            .config_override(self.upload_timeouts(size))
            .send()
            .await
            .map_err(|e| self.sdk_err(e, &what))?;
        // One request of at most a part: counted when the store has it.
        req.progress.moved(size);
        Ok(out.e_tag().map(str::to_owned))
    }

    /// Writes a large object as a multipart upload.
    async fn put_multipart(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        size: u64,
        part: u64,
        cond: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let what = format!("writing {:?}", req.key);
        let full = self.full(&req.key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .set_metadata(Some(header_metadata(req)));
        if !req.content_type.is_empty() {
            create = create.content_type(&req.content_type);
        }
        // Started in a task of its own: if this write is dropped while the
        // store is still creating the upload, the guard waits for the
        // answer in the background and aborts what was created.
        let mut pending = PendingCreate {
            remote: self.clone(),
            key: full.clone(),
            handle: Some(tokio::spawn(create.send())),
        };
        let created = pending
            .wait()
            .await
            .map_err(|e| self.sdk_err(e, &format!("{what} (starting a multipart upload)")))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        if upload_id.is_empty() {
            return Err(self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: the store started a multipart upload without an upload id"),
            ));
        }
        let mut upload = Upload {
            remote: self.clone(),
            marker: marker_key(&req.device, &full, &upload_id),
            key: full,
            upload_id,
            armed: true,
        };
        let sent = async {
            self.write_marker(&upload).await?;
            self.send_parts(req, &upload, body, size, part, cond).await
        }
        .await;
        match sent {
            Ok(etag) => {
                upload.armed = false;
                // A marker left behind only costs `cleanup` an abort that
                // finds no upload.
                let _ = self.delete_marker(&upload.marker).await;
                Ok(etag)
            }
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    async fn write_marker(&self, upload: &Upload) -> Result<(), RemoteError> {
        let marker = Marker {
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
        };
        let body = serde_json::to_vec(&marker).unwrap_or_default();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(&upload.marker))
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.sdk_err(e, &format!("writing {:?}", upload.marker)))?;
        Ok(())
    }

    async fn delete_marker(&self, marker: &str) -> Result<(), RemoteError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(marker))
            .send()
            .await
            .map_err(|e| self.sdk_err(e, &format!("deleting {marker:?}")))?;
        Ok(())
    }

    /// Aborts a multipart upload; `Ok(false)` when the store knows no such
    /// upload (already completed or aborted). Transient failures are tried
    /// again a few times (an abort racing the upload's last parts can meet
    /// a 500: moto 5.x answers one when parts land during the abort).
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<bool, RemoteError> {
        let mut delay = std::time::Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
            let e = match sent {
                Ok(_) => return Ok(true),
                Err(e) => self.sdk_err(e, &format!("aborting the multipart upload of {key:?}")),
            };
            if e.kind == RemoteErrorKind::NotFound {
                return Ok(false);
            }
            attempt += 1;
            if !e.is_retryable() || attempt >= ABORT_ATTEMPTS {
                return Err(e);
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// Uploads the parts (at most [`PARALLEL_PARTS`] in flight) and
    /// completes the upload under `cond`.
    async fn send_parts(
        &self,
        req: &PutRequest,
        upload: &Upload,
        body: RemoteBody,
        size: u64,
        part: u64,
        cond: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let what = format!("writing {:?}", req.key);
        let read_err = |path: &std::path::Path, e: std::io::Error| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: reading {}: {e}", path.display()),
            )
        };
        let mut source = match body {
            RemoteBody::Bytes(b) => PartSource::Bytes(b),
            RemoteBody::File(path) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| read_err(&path, e))?;
                PartSource::Reader(Box::new(file), path)
            }
            RemoteBody::Framed { head, file } => {
                let reader = framed_reader(head, &file)
                    .await
                    .map_err(|e| read_err(&file, e))?;
                PartSource::Reader(reader, file)
            }
        };
        let mut tasks: tokio::task::JoinSet<Result<CompletedPart, RemoteError>> =
            tokio::task::JoinSet::new();
        let mut done: Vec<CompletedPart> = Vec::new();
        let joined = |r: Result<Result<CompletedPart, RemoteError>, tokio::task::JoinError>| {
            r.map_err(|e| {
                self.error(
                    RemoteErrorKind::Terminal,
                    format!("{what}: a part upload failed: {e}"),
                )
            })?
        };
        // Parts count as sent once the store has them.
        let mut uploaded = req.progress.attempt();
        let counted = |p: CompletedPart, uploaded: &mut crate::remote::progress::Attempt| {
            let index = u64::try_from(p.part_number().unwrap_or(1).max(1) - 1).unwrap_or(0);
            uploaded.add(part.min(size.saturating_sub(index * part)));
            p
        };
        let mut sent = 0u64;
        let mut number = 0i32;
        while sent < size {
            while let Some(r) = tasks.try_join_next() {
                done.push(counted(joined(r)?, &mut uploaded));
            }
            while tasks.len() >= PARALLEL_PARTS {
                if let Some(r) = tasks.join_next().await {
                    done.push(counted(joined(r)?, &mut uploaded));
                }
            }
            let want = part.min(size - sent);
            let data = match &mut source {
                PartSource::Bytes(b) => b.split_to(usize::try_from(want).unwrap_or(usize::MAX)),
                PartSource::Reader(reader, path) => {
                    let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
                    reader
                        .read_exact(&mut buf)
                        .await
                        .map_err(|e| read_err(path, e))?;
                    Bytes::from(buf)
                }
            };
            sent += want;
            number += 1;
            let me = self.clone();
            let key = upload.key.clone();
            let upload_id = upload.upload_id.clone();
            let what = format!("{what} (part {number})");
            tasks.spawn(async move {
                let len = data.len() as u64;
                let out = me
                    .client
                    .upload_part()
                    .bucket(&me.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(to_i64(len))
                    .body(chunked(data))
                    .customize()
                    .config_override(me.upload_timeouts(part))
                    .send()
                    .await
                    .map_err(|e| me.sdk_err(e, &what))?;
                let etag = out.e_tag().unwrap_or_default();
                if etag.is_empty() {
                    return Err(me.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: the store answered without an ETag"),
                    ));
                }
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build())
            });
        }
        while let Some(r) = tasks.join_next().await {
            done.push(counted(joined(r)?, &mut uploaded));
        }
        done.sort_by_key(|p| p.part_number());
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        match cond {
            Precondition::None => {}
            Precondition::IfAbsent => complete = complete.if_none_match("*"),
            Precondition::IfMatch(etag) => complete = complete.if_match(etag),
        }
        let out = complete
            .send()
            .await
            .map_err(|e| self.sdk_err(e, &format!("{what} (completing the upload)")))?;
        Ok(out.e_tag().map(str::to_owned))
    }
}

/// Where a multipart upload's parts come from.
enum PartSource {
    /// An in-memory body, split without copying.
    Bytes(Bytes),
    /// A file (after its head bytes), read part by part; its path for messages.
    Reader(Box<dyn AsyncRead + Send + Unpin>, std::path::PathBuf),
}

/// An in-memory request body, handed over in [`CHUNK`]s (and re-readable).
fn chunked(data: Bytes) -> ByteStream {
    if data.len() <= CHUNK {
        return ByteStream::from(data);
    }
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(Chunked(data.clone()))
    }))
}

/// The body behind [`chunked`].
struct Chunked(Bytes);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = CHUNK.min(self.0.len());
        Poll::Ready(Some(Ok(http_body::Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len() as u64)
    }
}

/// A response body whose read errors say what happened (the SDK's own say
/// only "streaming error", the cause being in their sources).
struct Explained<R>(R);

impl<R: AsyncRead + Unpin> AsyncRead for Explained<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(std::io::Error::new(e.kind(), causes(&e)))),
            other => other,
        }
    }
}

/// An error and its sources, joined by `: `.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `head` followed by the file at `path`.
async fn framed_reader(
    head: Bytes,
    path: &std::path::Path,
) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
    let file = tokio::fs::File::open(path).await?;
    Ok(Box::new(std::io::Cursor::new(head).chain(file)))
}

type CreateResult = Result<
    aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput,
    aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
>;

/// How often an abort is sent before the upload is left to `cleanup`.
const ABORT_ATTEMPTS: u32 = 6;

/// A CreateMultipartUpload request in flight. Dropped before its answer
/// (the write was cancelled), it aborts in the background whatever upload
/// the store creates, so a cancelled write never leaves one behind.
struct PendingCreate {
    remote: S3Remote,
    /// Full S3 key.
    key: String,
    handle: Option<tokio::task::JoinHandle<CreateResult>>,
}

impl PendingCreate {
    async fn wait(&mut self) -> CreateResult {
        let Some(handle) = self.handle.as_mut() else {
            return Err(aws_sdk_s3::error::SdkError::construction_failure(
                "the multipart upload's creation was already awaited",
            ));
        };
        let joined = handle.await;
        self.handle = None;
        match joined {
            Ok(result) => result,
            Err(e) => Err(aws_sdk_s3::error::SdkError::construction_failure(e)),
        }
    }
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let remote = self.remote.clone();
            let key = std::mem::take(&mut self.key);
            rt.spawn(async move {
                if let Ok(Ok(created)) = handle.await {
                    if let Some(id) = created.upload_id() {
                        let _ = remote.abort_upload(&key, id).await;
                    }
                }
            });
        }
    }
}

/// A multipart upload in progress: aborted (and its marker removed) unless
/// disarmed, also when the write is dropped half way.
struct Upload {
    remote: S3Remote,
    /// Full S3 key.
    key: String,
    upload_id: String,
    /// The marker's key, relative to the remote prefix.
    marker: String,
    armed: bool,
}

impl Upload {
    /// Aborts now. The marker stays when the abort itself failed, for
    /// [`Remote::cleanup`] to find.
    async fn abort(&mut self) {
        self.armed = false;
        abort_and_unmark(&self.remote, &self.key, &self.upload_id, &self.marker).await;
    }
}

async fn abort_and_unmark(remote: &S3Remote, key: &str, upload_id: &str, marker: &str) {
    if remote.abort_upload(key, upload_id).await.is_ok() {
        let _ = remote.delete_marker(marker).await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The write was dropped (cancelled) half way: abort in the
        // background. Without a runtime, the marker stays for `cleanup`.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let remote = self.remote.clone();
            let key = std::mem::take(&mut self.key);
            let upload_id = std::mem::take(&mut self.upload_id);
            let marker = std::mem::take(&mut self.marker);
            rt.spawn(async move {
                abort_and_unmark(&remote, &key, &upload_id, &marker).await;
            });
        }
    }
}

/// The marker's directory for `device`, under the remote prefix.
fn uploads_dir(device: &str) -> String {
    let safe = !device.is_empty()
        && device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if safe {
        format!("{UPLOADS_DIR}{device}/")
    } else {
        format!("{UPLOADS_DIR}x{}/", hex::encode(device))
    }
}

/// The marker for one upload: short whatever the key's length (the key and
/// upload id are in its body).
fn marker_key(device: &str, key: &str, upload_id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(upload_id.as_bytes());
    let id = h.finalize().to_hex();
    format!("{}{}", uploads_dir(device), &id[..32])
}

/// How an object is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One `PutObject` (ETag: the content's MD5 on AWS and most stores).
    Single,
    /// A multipart upload with parts of this size (ETag: `<md5 of the
    /// parts' MD5s>-<part count>`).
    Multipart(u64),
}

/// The part count a multipart ETag (`...-N`) names, if `etag` is one.
fn multipart_count(etag: &str) -> Option<u64> {
    let (md5, n) = etag.trim_matches('"').rsplit_once('-')?;
    (md5.len() == 32).then_some(())?;
    n.parse().ok()
}

/// The part size for an object of `size` bytes: [`PART`], doubled until the
/// upload fits in [`MAX_PARTS`] parts.
fn part_size(size: u64) -> u64 {
    let mut part = PART;
    while part.saturating_mul(MAX_PARTS) < size {
        part *= 2;
    }
    part
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(t: Option<&DateTime>) -> Option<i64> {
    t.and_then(|t| t.to_millis().ok())
}

/// Decodes a key from a listing made with `encoding-type=url`. S3 encodes
/// like an HTML form (a space may come as `+`, a `+` always as `%2B`), as
/// the AWS CLI and SDKs decode it.
fn url_decode(raw: &str) -> Option<String> {
    let spaced: Cow<'_, str> = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

/// A write's metadata as S3 headers carry it exactly (values a header
/// cannot hold go RFC 2047 encoded, or exactly in `ferry-exact`: see
/// `metadata::to_headers`).
fn header_metadata(req: &PutRequest) -> HashMap<String, String> {
    crate::metadata::to_headers(&req.all_metadata())
        .into_iter()
        .collect()
}

/// An object description from a HEAD or GET answer.
fn describe(
    key: &str,
    etag: Option<&str>,
    size: Option<i64>,
    modified: Option<&DateTime>,
    content_type: Option<&str>,
    metadata: Option<&HashMap<String, String>>,
) -> RemoteObject {
    let size = size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    let mut obj = RemoteObject::listed(key, etag.unwrap_or_default(), size);
    obj.modified_ms = millis(modified);
    obj.content_type = content_type.map(str::to_owned);
    obj.with_metadata(crate::metadata::from_headers(
        metadata
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    ))
}

/// The total size from a `Content-Range: bytes 0-9/1234` answer.
fn range_total(content_range: Option<&str>) -> Option<u64> {
    content_range?.rsplit_once('/')?.1.trim().parse().ok()
}

/// An SDK failure in plain words: the store's answer (status, code and
/// message), or the chain of causes. (The SDK's own `DisplayErrorContext`
/// appends a `Debug` dump of the whole response, headers and all.)
fn error_text<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(s) = e {
        let status = s.raw().status().as_u16();
        let err = s.err();
        return match (err.code(), err.message()) {
            (Some(code), Some(message)) => {
                format!("the store answered HTTP {status} {code}: {message}")
            }
            (Some(code), None) => format!("the store answered HTTP {status} {code}"),
            _ => format!("the store answered HTTP {status}"),
        };
    }
    causes(e)
}

/// What kind of failure an SDK error is.
fn classify<E>(e: &SdkError<E, HttpResponse>) -> RemoteErrorKind
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use RemoteErrorKind::*;
    match e {
        SdkError::ConstructionFailure(_) => Terminal,
        SdkError::TimeoutError(_) => Unreachable,
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() || d.is_io() {
                Unreachable
            } else if d.is_user() {
                // The body failed while being sent: the stalled-stream
                // protection (no progress), or reading the file.
                if error_text(e).contains("throughput") {
                    Retryable
                } else {
                    Terminal
                }
            } else if d.as_other().is_some() {
                Retryable
            } else {
                Terminal
            }
        }
        // The answer could not be read (cut off mid-body, garbled).
        SdkError::ResponseError(_) => Retryable,
        SdkError::ServiceError(s) => from_status(
            s.raw().status().as_u16(),
            s.err().code().unwrap_or_default(),
        ),
        _ => Terminal,
    }
}

/// What kind of failure an S3 error answer is, by status and error code.
fn from_status(status: u16, code: &str) -> RemoteErrorKind {
    use RemoteErrorKind::*;
    match code {
        // Some servers answer a failed condition with 409: trust the code.
        "PreconditionFailed" => return PreconditionFailed,
        "NoSuchKey" | "NoSuchUpload" => return NotFound,
        "NoSuchBucket" => return Terminal,
        "ConditionalRequestConflict"
        | "OperationAborted"
        | "SlowDown"
        | "RequestTimeout"
        | "InternalError"
        | "ServiceUnavailable"
        | "Throttling"
        | "ThrottlingException" => return Retryable,
        _ => {}
    }
    match status {
        404 => NotFound,
        412 => PreconditionFailed,
        408 | 429 | 500 | 502 | 503 | 504 => Retryable,
        _ => Terminal,
    }
}

#[async_trait::async_trait]
impl Remote for S3Remote {
    fn endpoint(&self) -> String {
        self.described.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // Claimed; the capability probe checks that the store enforces them.
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
        let (mut out, next) = self.list_raw_page(prefix, token).await?;
        // Some stores (s3s-fs among them) list objects without their ETag;
        // a version-less entry would look changed on every run, so ask.
        let missing: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, o)| o.etag.is_empty())
            .map(|(i, _)| i)
            .collect();
        let heads: Vec<(usize, Result<Option<RemoteObject>, RemoteError>)> =
            futures::stream::iter(missing.into_iter().map(|i| {
                let key = out[i].key.clone();
                async move { (i, self.head(&key).await) }
            }))
            .buffer_unordered(LIST_HEADS)
            .collect()
            .await;
        let mut gone = Vec::new();
        for (i, head) in heads {
            match head? {
                Some(obj) => out[i] = obj,
                None => gone.push(i),
            }
        }
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            out.remove(i);
        }
        Ok(RemotePage { objects: out, next })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(describe(
                key,
                o.e_tag(),
                o.content_length(),
                o.last_modified(),
                o.content_type(),
                o.metadata(),
            ))),
            Err(e) => {
                let e = self.sdk_err(e, &format!("reading {key:?}"));
                if e.kind == RemoteErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        // One request: the body is the version the description is of.
        let o = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.sdk_err(e, &format!("reading {key:?}")))?;
        let obj = describe(
            key,
            o.e_tag(),
            o.content_length(),
            o.last_modified(),
            o.content_type(),
            o.metadata(),
        );
        let reader: RemoteReader = Box::new(Explained(Box::pin(o.body.into_async_read())));
        Ok((obj, reader))
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        if len == 0 {
            return Ok(self.head(key).await?.map(|obj| (obj, Bytes::new())));
        }
        let what = format!("reading {key:?}");
        let o = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes=0-{}", len - 1))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let unsatisfiable = e.raw_response().map(|r| r.status().as_u16()) == Some(416)
                    || e.code() == Some("InvalidRange");
                let e = self.sdk_err(e, &what);
                return if unsatisfiable {
                    // A zero-length object has no byte 0.
                    Ok(self.head(key).await?.map(|obj| (obj, Bytes::new())))
                } else if e.kind == RemoteErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let size = range_total(o.content_range())
            .map(to_i64)
            .or(o.content_length());
        let obj = describe(
            key,
            o.e_tag(),
            size,
            o.last_modified(),
            o.content_type(),
            o.metadata(),
        );
        // A store that ignores `Range` sends it all: read only what is asked.
        let mut data = Vec::new();
        Box::pin(o.body.into_async_read())
            .take(len)
            .read_to_end(&mut data)
            .await
            .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("{what}: {e}")))?;
        Ok(Some((obj, data.into())))
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        self.put_with(req, body, cond, false).await
    }

    async fn put_multipart_probe(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Option<Result<String, RemoteError>> {
        Some(self.put_with(req, body, cond, true).await)
    }

    /// Large objects, and rewrites that may keep the bytes (see
    /// `S3Remote::shape`), complete a multipart upload.
    fn may_write_multipart(&self, size: u64, cond: &Precondition) -> bool {
        size > PART || matches!(cond, Precondition::IfMatch(_))
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let what = format!("deleting {key:?}");
        let mut del = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key));
        match &cond {
            Precondition::None => {}
            Precondition::IfMatch(etag) => del = del.if_match(etag),
            Precondition::IfAbsent => {
                // Deleting what must not exist: nothing to do if it holds.
                let current = self.head(key).await?;
                return cond.check(current.map(|o| o.etag).as_deref(), &self.described, key);
            }
        }
        match del.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.sdk_err(e, &what);
                match (e.kind, &cond) {
                    (RemoteErrorKind::NotFound, Precondition::None) => Ok(()),
                    // `If-Match` on a missing object: the version is gone.
                    (RemoteErrorKind::NotFound, _) => Err(RemoteError {
                        kind: RemoteErrorKind::PreconditionFailed,
                        ..e
                    }),
                    _ => Err(e),
                }
            }
        }
    }

    fn refuses(&self, key: &str) -> Option<String> {
        let len = self.full(key).len();
        if len <= MAX_S3_KEY {
            None
        } else if self.prefix.is_empty() {
            Some(format!(
                "it is {len} bytes, and an S3 key may be at most {MAX_S3_KEY} bytes"
            ))
        } else {
            Some(format!(
                "under the remote prefix {:?} ({} bytes with its `/`) it is {len} bytes, \
                 and an S3 key may be at most {MAX_S3_KEY} bytes",
                self.prefix,
                self.prefix.len() + 1
            ))
        }
    }

    /// Aborts the multipart uploads `device` left behind, by their markers.
    /// Call it when no write of `device` is in flight.
    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        let mut aborted = 0;
        for m in self.list_raw(&uploads_dir(device)).await? {
            let marker: Option<Marker> = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(&m.key))
                .send()
                .await
            {
                Ok(o) => match o.body.collect().await {
                    Ok(data) => serde_json::from_slice(&data.into_bytes()).ok(),
                    Err(e) => {
                        return Err(self.error(
                            RemoteErrorKind::Retryable,
                            format!("reading {:?}: {e}", m.key),
                        ))
                    }
                },
                Err(e) => {
                    let e = self.sdk_err(e, &format!("reading {:?}", m.key));
                    if e.kind == RemoteErrorKind::NotFound {
                        continue;
                    }
                    return Err(e);
                }
            };
            // A marker that names nothing readable is removed all the same.
            if let Some(marker) = marker {
                if self.abort_upload(&marker.key, &marker.upload_id).await? {
                    aborted += 1;
                }
            }
            self.delete_marker(&m.key).await?;
        }
        Ok(aborted)
    }
}

async fn file_len(path: &std::path::Path) -> Result<u64, (std::path::PathBuf, std::io::Error)> {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .map_err(|e| (path.to_owned(), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_decode_like_the_aws_sdks() {
        assert_eq!(url_decode("a%2Bb+c").as_deref(), Some("a+b c"));
        assert_eq!(url_decode("x%20").as_deref(), Some("x "));
        assert_eq!(url_decode("a%252Fb").as_deref(), Some("a%2Fb"));
        assert_eq!(url_decode("a//b/").as_deref(), Some("a//b/"));
        assert_eq!(url_decode("a%CC%88").as_deref(), Some("a\u{308}"));
        assert_eq!(url_decode("%FF"), None);
    }

    #[test]
    fn parts_fit_s3s_limit() {
        assert_eq!(part_size(1), PART);
        assert_eq!(part_size(PART * MAX_PARTS), PART);
        assert_eq!(part_size(PART * MAX_PARTS + 1), 2 * PART);
        assert!(part_size(5 << 40).saturating_mul(MAX_PARTS) >= 5 << 40);
    }

    #[test]
    fn errors_are_classified_by_code_then_status() {
        use RemoteErrorKind::*;
        assert_eq!(from_status(404, "NotFound"), NotFound);
        assert_eq!(from_status(404, "NoSuchBucket"), Terminal);
        assert_eq!(from_status(412, "PreconditionFailed"), PreconditionFailed);
        assert_eq!(from_status(409, "PreconditionFailed"), PreconditionFailed);
        assert_eq!(from_status(409, "ConditionalRequestConflict"), Retryable);
        assert_eq!(from_status(409, "BucketNotEmpty"), Terminal);
        assert_eq!(from_status(400, "RequestTimeout"), Retryable);
        assert_eq!(from_status(503, "SlowDown"), Retryable);
        assert_eq!(from_status(403, "AccessDenied"), Terminal);
        assert_eq!(from_status(400, "InvalidArgument"), Terminal);
    }

    #[test]
    fn keys_are_exact_and_long_ones_refused() {
        let r = S3Remote::new(&S3Config {
            bucket: "b".into(),
            prefix: "p".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.full("x "), "p/x ");
        assert_eq!(r.full("a//b/"), "p/a//b/");
        assert!(r.refuses(&"k".repeat(1022)).is_none());
        let why = r.refuses(&"k".repeat(1023)).unwrap();
        assert!(why.contains("1025 bytes"), "{why}");
        let root = S3Remote::new(&S3Config {
            bucket: "b".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(root.refuses(&"k".repeat(1024)).is_none());
        assert!(root.refuses(&"k".repeat(1025)).is_some());
        assert!(marker_key("0123abcd", &"k".repeat(1024), "id").len() < 100);
    }
}
