//! The S3 operations over ferry buckets.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use ferry::{Bucket, ObjectMeta, PutCondition, PutOptions};
use md5::Digest as _;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::front::LengthUnknown;
use crate::reserved;
use crate::store::{valid_bucket_name, Buckets, Entry};
use crate::wire::{
    body_reader, check_read_conditions, decode_md5, from_metadata, non_ascii_metadata, range_of,
    to_metadata, Checksums, HttpHeaders,
};

/// Parts of a multipart upload may be at most this many.
const MAX_PARTS: i32 = 10_000;
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;
/// DeleteObjects takes at most this many keys, as on S3.
const MAX_DELETE: usize = 1000;
/// S3's largest part.
const MAX_PART: u64 = 5 << 30;

/// What multipart uploads in progress may keep.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// An upload with no part written for this long is removed.
    pub max_age: std::time::Duration,
    /// The parts of all uploads in progress of one bucket hold at most
    /// about this many bytes (uploads running at once may each pass it by
    /// what they are writing): a part past it is refused.
    pub max_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_age: std::time::Duration::from_secs(24 * 3600),
            max_bytes: 64 << 30,
        }
    }
}

/// The file of part `number` with the MD5 `md5` (hex): the name carries
/// the digest, so one rename publishes both (no window where a part and
/// its digest disagree), and CompleteMultipartUpload opens exactly the
/// part whose ETag the client names.
fn part_file(number: i32, md5: &str) -> String {
    format!("{number}-{md5}.part")
}

/// The number and MD5 a part file's name holds.
fn parse_part_file(name: &str) -> Option<(i32, String)> {
    let (n, md5) = name.strip_suffix(".part")?.split_once('-')?;
    (md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Some((n.parse().ok()?, md5.to_owned())))
        .flatten()
}

/// The bytes the parts (and parts being written) of every upload in
/// `uploads` hold.
fn upload_bytes(uploads: &Path) -> u64 {
    std::fs::read_dir(uploads)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The S3 service over the served buckets.
#[derive(Debug, Clone)]
pub struct FerryS3 {
    /// Who may do what (ListBuckets and copy sources are checked here).
    pub(crate) keys: crate::access::Keys,
    pub(crate) buckets: Arc<Buckets>,
    pub(crate) cache_control: Option<String>,
    pub(crate) uploads: UploadLimits,
}

/// A ferry error as the S3 error a client should see for `key`.
pub(crate) fn s3_err(e: ferry::Error, key: &str) -> S3Error {
    use ferry::Error as E;
    match e {
        E::NotFound { .. } => s3_error!(NoSuchKey, "no object {key:?}"),
        E::InvalidKey(k) => s3_error!(InvalidArgument, "invalid key {key:?}: {}", k.rule),
        E::InvalidMetadata(m) => s3_error!(InvalidArgument, "invalid metadata for {key:?}: {m}"),
        E::PreconditionFailed { .. } => {
            s3_error!(PreconditionFailed, "{key:?}: precondition failed")
        }
        E::Locked => {
            let mut e = S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "the bucket is encrypted and locked: start `ferry serve` with its passphrase",
            );
            e.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
            e
        }
        E::Remote(_) | E::NoRemote => {
            let mut e = S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("{key:?} is not stored locally and the remote cannot be reached now: {e}"),
            );
            e.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
            e
        }
        E::DiskFull { .. } => {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                format!("{key:?}: {e}"),
            );
            e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            e
        }
        other => S3Error::with_message(S3ErrorCode::InternalError, format!("{key:?}: {other}")),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

/// Whole seconds (HTTP dates have no more).
fn seconds(t: SystemTime) -> SystemTime {
    let s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
}

/// A reader that computes the MD5 of what passes and, at the end, checks
/// it against Content-MD5 and the length against Content-Length: a
/// mismatch fails the read, so the put it feeds commits nothing.
struct Checked<R> {
    inner: R,
    md5: md5::Md5,
    len: u64,
    want_md5: Option<[u8; 16]>,
    want_len: Option<u64>,
    checksums: Option<Checksums>,
    out: Arc<Mutex<Outcome>>,
}

#[derive(Debug, Default)]
struct Outcome {
    md5: Option<[u8; 16]>,
    failed: Option<S3Error>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if got.is_empty() {
                    let digest: [u8; 16] = me.md5.clone().finalize().into();
                    let fail = if me.want_len.is_some_and(|n| n != me.len) {
                        Some(s3_error!(
                            IncompleteBody,
                            "the body had {} bytes, Content-Length said {}",
                            me.len,
                            me.want_len.unwrap_or_default()
                        ))
                    } else if me.want_md5.is_some_and(|m| m != digest) {
                        Some(s3_error!(
                            BadDigest,
                            "the body does not match its Content-MD5"
                        ))
                    } else {
                        me.checksums.take().and_then(|c| c.verify().err())
                    };
                    if let Ok(mut o) = me.out.lock() {
                        o.md5 = Some(digest);
                        if let Some(f) = fail {
                            o.failed = Some(f);
                            return Poll::Ready(Err(io::Error::other("rejected by the gateway")));
                        }
                    }
                } else {
                    me.len += got.len() as u64;
                    me.md5.update(got);
                    if let Some(c) = &mut me.checksums {
                        c.update(got);
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

fn check_key(key: &str) -> S3Result<()> {
    ferry::validate_key(key).map_err(|e| s3_error!(InvalidArgument, "{e}"))
}

/// The upload's saved request (`meta.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UploadInfo {
    key: String,
    content_type: Option<String>,
    metadata: ferry::Metadata,
    initiated_ms: i64,
}

impl FerryS3 {
    async fn entry(&self, bucket: &str) -> S3Result<Arc<Entry>> {
        self.buckets
            .get(bucket)
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
            .ok_or_else(|| s3_error!(NoSuchBucket, "no bucket {bucket:?} here"))
    }

    /// Stores `reader` at `key` through a [`Checked`] reader; returns the
    /// new object and the body's MD5.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        entry: &Entry,
        key: &str,
        reader: impl AsyncRead + Send + Unpin + 'static,
        opts: PutOptions,
        cond: Option<PutCondition>,
        want_md5: Option<[u8; 16]>,
        want_len: Option<u64>,
        checksums: Option<Checksums>,
    ) -> S3Result<(ObjectMeta, [u8; 16])> {
        let out = Arc::new(Mutex::new(Outcome::default()));
        let checked = Checked {
            inner: reader,
            md5: md5::Md5::new(),
            len: 0,
            want_md5,
            want_len,
            checksums,
            out: out.clone(),
        };
        let body = ferry::Body::from_reader(checked);
        let result = match cond {
            Some(c) => entry.bucket.put_if(key, body, opts, c).await,
            None => entry.bucket.put(key, body, opts).await,
        };
        let mut o = out.lock().map_err(|_| s3_error!(InternalError))?;
        if let Some(f) = o.failed.take() {
            return Err(f);
        }
        let meta = result.map_err(|e| match e {
            ferry::Error::Body { source, .. } => s3_error!(
                IncompleteBody,
                "the body of {key:?} could not be read to its end: {source}"
            ),
            other => s3_err(other, key),
        })?;
        let md5 = o
            .md5
            .ok_or_else(|| s3_error!(InternalError, "the body was not read"))?;
        Ok((meta, md5))
    }

    /// The condition that makes a put honour `If-None-Match: *` / `If-Match`.
    async fn put_condition(
        &self,
        entry: &Entry,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<Option<PutCondition>> {
        if let Some(c) = if_none_match {
            if !c.is_any() {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on a write takes only *"
                ));
            }
            return Ok(Some(PutCondition::IfAbsent));
        }
        let Some(c) = if_match else { return Ok(None) };
        let current = match entry.bucket.head(key).await {
            Ok(m) => m,
            Err(ferry::Error::NotFound { .. }) => {
                return Err(s3_error!(NoSuchKey, "no object {key:?} to match"))
            }
            Err(e) => return Err(s3_err(e, key)),
        };
        let etag = entry.etag(key, &current.hash);
        let holds = c.is_any() || c.as_etag().is_some_and(|e| e.value() == etag);
        if !holds {
            return Err(s3_error!(PreconditionFailed, "{key:?} has another ETag"));
        }
        Ok(Some(PutCondition::IfHash(current.hash)))
    }

    /// The object at `key` and its ETag, checked against the GET/HEAD
    /// conditions (304 and 412 as S3 answers them).
    #[allow(clippy::too_many_arguments)]
    async fn described(
        &self,
        entry: &Entry,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
        if_modified_since: Option<&Timestamp>,
        if_unmodified_since: Option<&Timestamp>,
    ) -> S3Result<(ObjectMeta, String)> {
        check_key(key)?;
        let meta = entry.bucket.head(key).await.map_err(|e| s3_err(e, key))?;
        let etag = entry.etag(key, &meta.hash);
        check_read_conditions(
            key,
            &etag,
            timestamp(seconds(meta.modified)),
            if_match,
            if_none_match,
            if_modified_since,
            if_unmodified_since,
        )?;
        Ok((meta, etag))
    }

    /// `bytes` of `key` as a reader (the whole object when `None`).
    async fn open_range(
        &self,
        bucket: &Bucket,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> S3Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        let object = bucket.get(key).await.map_err(|e| s3_err(e, key))?;
        let mut body = object.body;
        match range {
            None => Ok(Box::new(body)),
            Some(r) => {
                // The verifying stream cannot seek: skip to the start.
                let mut skip = (&mut body).take(r.start);
                tokio::io::copy(&mut skip, &mut tokio::io::sink())
                    .await
                    .map_err(|e| s3_error!(InternalError, "reading {key:?}: {e}"))?;
                Ok(Box::new(body.take(r.end - r.start)))
            }
        }
    }

    fn upload_dir(entry: &Entry, upload_id: &str) -> S3Result<std::path::PathBuf> {
        if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(NoSuchUpload, "no upload {upload_id:?}"));
        }
        let dir = entry.uploads.join(upload_id);
        if !dir.join("meta.json").is_file() {
            return Err(s3_error!(NoSuchUpload, "no upload {upload_id:?}"));
        }
        Ok(dir)
    }

    fn read_upload(dir: &Path) -> S3Result<UploadInfo> {
        let text = std::fs::read(dir.join("meta.json"))
            .map_err(|e| s3_error!(InternalError, "reading the upload: {e}"))?;
        serde_json::from_slice(&text)
            .map_err(|e| s3_error!(InternalError, "reading the upload: {e}"))
    }

    /// Writes a part from `reader` (to a temp file renamed into place);
    /// returns its MD5.
    #[allow(clippy::too_many_arguments)]
    async fn write_part(
        dir: &Path,
        limits: &UploadLimits,
        number: i32,
        mut reader: impl AsyncRead + Send + Unpin,
        want_md5: Option<[u8; 16]>,
        want_len: Option<u64>,
        mut checksums: Option<Checksums>,
    ) -> S3Result<[u8; 16]> {
        use tokio::io::AsyncWriteExt;
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers go from 1 to {MAX_PARTS}"
            ));
        }
        let uploads = dir.parent().unwrap_or(dir);
        let room = limits.max_bytes.saturating_sub(upload_bytes(uploads));
        let full = || {
            s3_error!(
                EntityTooLarge,
                "the uploads in progress hold {} bytes at most: complete or abort some",
                limits.max_bytes
            )
        };
        if room == 0 {
            return Err(full());
        }
        let tmp = dir.join(format!("{number}.{:016x}.tmp", rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| s3_error!(InternalError, "writing a part: {e}"))?;
            let mut md5 = md5::Md5::new();
            let mut len = 0u64;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = reader.read(&mut buf).await.map_err(|e| {
                    s3_error!(IncompleteBody, "the part could not be read to its end: {e}")
                })?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                if let Some(c) = &mut checksums {
                    c.update(&buf[..n]);
                }
                len += n as u64;
                if len > room {
                    return Err(full());
                }
                if len > MAX_PART {
                    return Err(s3_error!(EntityTooLarge, "a part is 5 GiB at most"));
                }
                file.write_all(&buf[..n])
                    .await
                    .map_err(|e| s3_error!(InternalError, "writing a part: {e}"))?;
            }
            file.sync_all()
                .await
                .map_err(|e| s3_error!(InternalError, "writing a part: {e}"))?;
            let digest: [u8; 16] = md5.finalize().into();
            if want_len.is_some_and(|n| n != len) {
                return Err(s3_error!(IncompleteBody, "the part had {len} bytes"));
            }
            if want_md5.is_some_and(|m| m != digest) {
                return Err(s3_error!(
                    BadDigest,
                    "the part does not match its Content-MD5"
                ));
            }
            if let Some(c) = checksums.take() {
                c.verify()?;
            }
            let md5 = hex::encode(digest);
            tokio::fs::rename(&tmp, dir.join(part_file(number, &md5)))
                .await
                .map_err(|e| s3_error!(InternalError, "writing a part: {e}"))?;
            // The part this one replaces (another body, another name).
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name();
                if let Some((n, other)) = name.to_str().and_then(parse_part_file) {
                    if n == number && other != md5 {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            Ok(digest)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Removes uploads with no part written for `max_age` (a directory's
    /// modification time is its last part's); returns how many went.
    pub fn collect_uploads(entry: &Entry, max_age: std::time::Duration) -> usize {
        let now = SystemTime::now();
        let mut removed = 0;
        for e in std::fs::read_dir(&entry.uploads)
            .into_iter()
            .flatten()
            .flatten()
        {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if old && std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Holds off DeleteBucket of `entry`'s bucket while a write runs.
async fn writing(entry: &Entry) -> S3Result<tokio::sync::RwLockReadGuard<'_, bool>> {
    entry
        .writing()
        .await
        .ok_or_else(|| s3_error!(NoSuchBucket, "the bucket was deleted"))
}

/// Who owns every bucket and object: the one gateway.
fn owner() -> Owner {
    Owner {
        display_name: Some("ferry".into()),
        id: Some("ferry".into()),
    }
}

/// The bytes a GET or HEAD answers with: a Range, one part of an object
/// completed by a multipart upload (`partNumber`; part 1 of any other
/// object is all of it), or the whole object; with its Content-Range and,
/// for a part, the object's parts count.
fn selected(
    entry: &Entry,
    meta: &ObjectMeta,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> S3Result<(std::ops::Range<u64>, Option<String>, Option<i32>)> {
    let Some(n) = part_number else {
        let (r, shown) = range_of(range, meta.size)?;
        return Ok((r, shown, None));
    };
    if range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    let bad = || {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    let Some(sizes) = entry.parts(&meta.key, &meta.hash) else {
        return if n == 1 {
            Ok((0..meta.size, None, None))
        } else {
            Err(bad())
        };
    };
    let index = usize::try_from(n)
        .ok()
        .filter(|i| (1..=sizes.len()).contains(i))
        .ok_or_else(bad)?;
    let start: u64 = sizes[..index - 1].iter().sum();
    let r = start..start + sizes[index - 1];
    let shown = format!(
        "bytes {}-{}/{}",
        r.start,
        r.end.saturating_sub(1),
        meta.size
    );
    Ok((r, Some(shown), i32::try_from(sizes.len()).ok()))
}

fn parse_copy_source(src: &CopySource) -> S3Result<(String, String)> {
    match src {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(NotImplemented, "only bucket copy sources")),
    }
}

fn encode_url(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[async_trait::async_trait]
impl s3s::S3 for FerryS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .buckets
            .names()
            .into_iter()
            .filter(|name| self.keys.lists(req.credentials.as_ref(), name))
            .map(|name| s3s::dto::Bucket {
                creation_date: Some(timestamp(seconds(self.buckets.created(&name)))),
                name: Some(name),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.entry(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        // Never enabled: a bucket keeps one version of each key.
        self.entry(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // An unversioned bucket: each current object is version `null`.
        // The version id marker can only be `null`, so the key marker
        // alone says where the page starts.
        let i = &req.input;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };
        let v2 = ListObjectsV2Input {
            bucket: i.bucket.clone(),
            delimiter: i.delimiter.clone(),
            encoding_type: i.encoding_type.clone(),
            max_keys: i.max_keys,
            prefix: i.prefix.clone(),
            start_after: i.key_marker.clone().filter(|m| !m.is_empty()),
            ..Default::default()
        };
        let (key_marker, version_id_marker) = (i.key_marker.clone(), i.version_id_marker.clone());
        let o = self.list_objects_v2(req.map_input(|_| v2)).await?.output;
        let versions: Vec<ObjectVersion> = o
            .contents
            .unwrap_or_default()
            .into_iter()
            .map(|c| ObjectVersion {
                key: c.key,
                e_tag: c.e_tag,
                size: c.size,
                last_modified: c.last_modified,
                is_latest: Some(true),
                version_id: Some("null".into()),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                owner: Some(owner()),
                ..Default::default()
            })
            .collect();
        let more = o.is_truncated == Some(true);
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: o.name,
            prefix: o.prefix,
            delimiter: o.delimiter,
            encoding_type: o.encoding_type,
            max_keys: o.max_keys,
            key_marker: Some(key_marker.map(|m| enc(&m)).unwrap_or_default()),
            version_id_marker: Some(version_id_marker.unwrap_or_default()),
            is_truncated: Some(more),
            next_key_marker: more
                .then(|| o.next_continuation_token.map(|k| enc(&k)))
                .flatten(),
            next_version_id_marker: more.then(|| "null".to_owned()),
            versions: (!versions.is_empty()).then_some(versions),
            common_prefixes: o.common_prefixes,
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.entry(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = &req.input.bucket;
        if !valid_bucket_name(name) {
            return Err(s3_error!(
                InvalidBucketName,
                "{name:?} is not a valid bucket name"
            ));
        }
        match self.buckets.create(name).await {
            Ok(true) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            })),
            Ok(false) => Err(s3_error!(BucketAlreadyOwnedByYou, "{name:?} exists")),
            Err(crate::GatewayError::NotHere) => Err(s3_error!(
                AccessDenied,
                "this gateway serves one bucket; start `ferry serve --buckets DIR` to create buckets"
            )),
            Err(e) => Err(s3_error!(InternalError, "{e}")),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let name = &req.input.bucket;
        match self.buckets.delete(name).await {
            Ok(true) => Ok(S3Response::new(DeleteBucketOutput {})),
            Ok(false) => Err(s3_error!(BucketNotEmpty, "{name:?} holds objects")),
            Err(crate::GatewayError::NotHere) => Err(s3_error!(
                AccessDenied,
                "this gateway serves one bucket and does not delete it"
            )),
            Err(crate::GatewayError::NoSuchBucket) => Err(s3_error!(NoSuchBucket)),
            Err(crate::GatewayError::InUse) => Err(s3_error!(
                OperationAborted,
                "{name:?} is open in another process (a ferry command, a sync): try again when it is done"
            )),
            Err(e) => Err(s3_error!(InternalError, "{e}")),
        }
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let marker = req.input.marker.clone();
        let url = req
            .input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };
        let v2 = self.list_objects_v2(req.map_input(Into::into)).await?;
        let o = v2.output;
        // Both markers are keys, encoded as keys are.
        let marker = Some(marker.map(|m| enc(&m)).unwrap_or_default());
        let next_marker = if o.is_truncated == Some(true) {
            o.next_continuation_token.as_deref().map(enc)
        } else {
            None
        };
        Ok(S3Response::new(ListObjectsOutput {
            contents: o.contents,
            common_prefixes: o.common_prefixes,
            delimiter: o.delimiter,
            encoding_type: o.encoding_type,
            is_truncated: o.is_truncated,
            marker,
            max_keys: o.max_keys,
            name: o.name,
            next_marker,
            prefix: o.prefix,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let entry = self.entry(&input.bucket).await?;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let delimiter = match input.delimiter.as_deref() {
            None | Some("") => None,
            Some(d) => {
                let mut chars = d.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(c),
                    _ => {
                        return Err(s3_error!(
                            InvalidArgument,
                            "ferry groups keys by a one-character delimiter"
                        ))
                    }
                }
            }
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let start = match (&input.continuation_token, &input.start_after) {
            (Some(t), Some(s)) => Some(t.clone().max(s.clone())),
            (Some(t), None) => Some(t.clone()),
            (None, s) => s.clone(),
        };
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };
        if reserved::is_reserved(&prefix) {
            // ferry's own objects, listed flat (no delimiter grouping).
            let (rows, next) =
                reserved::list(&entry, &prefix, start.as_deref(), max_keys.max(0) as usize)?;
            let contents: Vec<Object> = rows
                .iter()
                .map(|r| Object {
                    key: Some(enc(&r.key)),
                    size: Some(r.size as i64),
                    e_tag: Some(ETag::Strong(r.etag.clone())),
                    last_modified: Some(timestamp(seconds(r.modified))),
                    ..Default::default()
                })
                .collect();
            return Ok(S3Response::new(ListObjectsV2Output {
                name: Some(input.bucket),
                prefix: Some(enc(&prefix)),
                max_keys: Some(max_keys),
                key_count: Some(contents.len() as i32),
                is_truncated: Some(next.is_some()),
                continuation_token: input.continuation_token,
                next_continuation_token: next,
                start_after: input.start_after.map(|s| enc(&s)),
                encoding_type: input.encoding_type,
                contents: (!contents.is_empty()).then_some(contents),
                ..Default::default()
            }));
        }
        let page = if max_keys == 0 {
            ferry::ListPage::default()
        } else {
            let mut opts = ferry::ListOptions::prefix(prefix.clone()).limit(max_keys as usize);
            opts.start_after = start;
            opts.delimiter = delimiter;
            entry
                .bucket
                .list(opts)
                .await
                .map_err(|e| s3_err(e, &prefix))?
        };
        let contents: Vec<Object> = page
            .objects
            .iter()
            .map(|m| Object {
                key: Some(enc(&m.key)),
                size: Some(m.size as i64),
                e_tag: Some(ETag::Strong(entry.etag(&m.key, &m.hash))),
                last_modified: Some(timestamp(seconds(m.modified))),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        let key_count = (contents.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(&prefix)),
            delimiter: input.delimiter.map(|d| enc(&d)),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(page.next_start_after.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next_start_after,
            start_after: input.start_after.map(|s| enc(&s)),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        if reserved::is_reserved(&i.key) {
            return reserved::head(&entry, &i).map(S3Response::new);
        }
        let (meta, etag) = self
            .described(
                &entry,
                &i.key,
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            )
            .await?;
        let (r, content_range, parts_count) =
            selected(&entry, &meta, i.range.as_ref(), i.part_number)?;
        let h = HttpHeaders::of(&meta.metadata);
        let mut metadata = from_metadata(&meta.metadata);
        let raw = non_ascii_metadata(&mut metadata);
        let mut resp = S3Response::new(HeadObjectOutput {
            content_length: Some((r.end - r.start) as i64),
            content_range,
            content_type: Some(meta.content_type.clone()),
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(seconds(meta.modified))),
            metadata,
            accept_ranges: Some("bytes".into()),
            cache_control: h
                .cache_control
                .clone()
                .or_else(|| self.cache_control.clone()),
            content_disposition: h.content_disposition.clone(),
            content_encoding: h.content_encoding.clone(),
            content_language: h.content_language.clone(),
            expires: h.expires(),
            parts_count,
            ..Default::default()
        });
        resp.headers.extend(raw);
        Ok(resp)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        if reserved::is_reserved(&i.key) {
            return reserved::get(&entry, &i).map(S3Response::new);
        }
        let (meta, etag) = self
            .described(
                &entry,
                &i.key,
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            )
            .await?;
        let (r, content_range, parts_count) =
            selected(&entry, &meta, i.range.as_ref(), i.part_number)?;
        let len = r.end - r.start;
        let whole = r.start == 0 && r.end == meta.size;
        let reader = self
            .open_range(&entry.bucket, &i.key, (!whole).then_some(r))
            .await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10);
        // A signed GET may name the headers it is answered with.
        let h = HttpHeaders::of(&meta.metadata);
        let mut metadata = from_metadata(&meta.metadata);
        let raw = non_ascii_metadata(&mut metadata);
        let mut resp = S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len as i64),
            content_range,
            content_type: Some(i.response_content_type.unwrap_or(meta.content_type)),
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(seconds(meta.modified))),
            metadata,
            accept_ranges: Some("bytes".into()),
            cache_control: i
                .response_cache_control
                .or(h.cache_control.clone())
                .or_else(|| self.cache_control.clone()),
            content_disposition: i
                .response_content_disposition
                .or(h.content_disposition.clone()),
            content_encoding: i.response_content_encoding.or(h.content_encoding.clone()),
            content_language: i.response_content_language.or(h.content_language.clone()),
            expires: i.response_expires.or_else(|| h.expires()),
            parts_count,
            ..Default::default()
        });
        resp.headers.extend(raw);
        Ok(resp)
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        if reserved::is_reserved(&i.key) {
            return Err(s3_error!(
                InvalidArgument,
                "ferry's own objects (.ferry/) have no attributes to ask for"
            ));
        }
        let (meta, etag) = self
            .described(&entry, &i.key, None, None, None, None)
            .await?;
        // Clients send the list as one comma-separated header.
        let want = |a: &str| {
            i.object_attributes
                .iter()
                .flat_map(|x| x.as_str().split(','))
                .any(|x| x.trim() == a)
        };
        let object_parts = match entry.parts(&i.key, &meta.hash) {
            Some(sizes) if want(ObjectAttributes::OBJECT_PARTS) => Some(GetObjectAttributesParts {
                total_parts_count: i32::try_from(sizes.len()).ok(),
                part_number_marker: i.part_number_marker,
                max_parts: i.max_parts,
                is_truncated: Some(false),
                ..Default::default()
            }),
            _ => None,
        };
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: want(ObjectAttributes::ETAG).then_some(ETag::Strong(etag)),
            object_size: want(ObjectAttributes::OBJECT_SIZE).then_some(meta.size as i64),
            storage_class: want(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            object_parts,
            last_modified: Some(timestamp(seconds(meta.modified))),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let mut i = req.input;
        if req.extensions.get::<LengthUnknown>().is_some() {
            i.content_length = None;
        }
        let checksums = Checksums::new(
            Checksum {
                checksum_crc32: i.checksum_crc32.clone(),
                checksum_crc32c: i.checksum_crc32c.clone(),
                checksum_crc64nvme: i.checksum_crc64nvme.clone(),
                checksum_sha1: i.checksum_sha1.clone(),
                checksum_sha256: i.checksum_sha256.clone(),
                ..Default::default()
            },
            i.checksum_algorithm.as_ref(),
            &req.headers,
            req.trailing_headers.clone(),
        )?;
        let entry = self.entry(&i.bucket).await?;
        let _writing = writing(&entry).await?;
        if reserved::is_reserved(&i.key) {
            return reserved::put(&entry, i, checksums)
                .await
                .map(S3Response::new);
        }
        check_key(&i.key)?;
        let want_md5 = decode_md5(i.content_md5.as_deref())?;
        let cond = self
            .put_condition(
                &entry,
                &i.key,
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
            )
            .await?;
        let mut metadata = to_metadata(i.metadata);
        HttpHeaders::new(
            i.cache_control,
            i.content_disposition,
            i.content_encoding,
            i.content_language,
            i.expires.as_ref(),
        )
        .store(&mut metadata);
        let opts = PutOptions {
            content_type: i.content_type.clone(),
            metadata,
        };
        let want_len = i.content_length.and_then(|n| u64::try_from(n).ok());
        let (meta, md5) = self
            .store(
                &entry,
                &i.key,
                body_reader(i.body),
                opts,
                cond,
                want_md5,
                want_len,
                Some(checksums),
            )
            .await?;
        let etag = hex::encode(md5);
        entry.record_etag(&i.key, &meta.hash, &etag);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(meta.size as i64),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let (src_bucket, src_key) = parse_copy_source(&i.copy_source)?;
        self.keys.may_read(req.credentials.as_ref(), &src_bucket)?;
        let src = self.entry(&src_bucket).await?;
        let dst = self.entry(&i.bucket).await?;
        let _writing = writing(&dst).await?;
        let (meta, _) = self
            .described(
                &src,
                &src_key,
                i.copy_source_if_match.as_ref(),
                i.copy_source_if_none_match.as_ref(),
                i.copy_source_if_modified_since.as_ref(),
                i.copy_source_if_unmodified_since.as_ref(),
            )
            .await
            .map_err(|e| {
                // A copy's unmet source condition is a 412, never a 304.
                if *e.code() == S3ErrorCode::NotModified {
                    s3_error!(PreconditionFailed, "the copy source matched If-None-Match")
                } else {
                    e
                }
            })?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && src_bucket == i.bucket && src_key == i.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
            ));
        }
        let opts = if replace {
            let mut metadata = to_metadata(i.metadata);
            HttpHeaders::new(
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
                i.expires.as_ref(),
            )
            .store(&mut metadata);
            PutOptions {
                content_type: i.content_type.clone(),
                metadata,
            }
        } else {
            PutOptions {
                content_type: Some(meta.content_type.clone()),
                metadata: meta.metadata.clone(),
            }
        };
        let reader = self.open_range(&src.bucket, &src_key, None).await?;
        let (new, md5) = self
            .store(
                &dst,
                &i.key,
                reader,
                opts,
                None,
                None,
                Some(meta.size),
                None,
            )
            .await?;
        let etag = hex::encode(md5);
        dst.record_etag(&i.key, &new.hash, &etag);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(seconds(new.modified))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        if reserved::is_reserved(&i.key) {
            reserved::delete(&entry, &i.key, i.if_match.as_ref())?;
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        check_key(&i.key)?;
        if let Some(c) = &i.if_match {
            // The ETag names a content hash; the delete is conditional on
            // that hash in the index's transaction, so a write in between
            // fails it.
            let current = match entry.bucket.head(&i.key).await {
                Ok(m) => Some((entry.etag(&i.key, &m.hash), m.hash)),
                Err(ferry::Error::NotFound { .. }) => None,
                Err(e) => return Err(s3_err(e, &i.key)),
            };
            let hash = match (c.as_etag(), current) {
                (Some(want), Some((have, hash))) if want.value() == have => hash,
                (None, Some((_, hash))) => hash,
                _ => {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "{:?} has another ETag",
                        i.key
                    ))
                }
            };
            entry
                .bucket
                .delete_if(&i.key, hash)
                .await
                .map_err(|e| s3_err(e, &i.key))?;
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        match entry.bucket.delete(&i.key).await {
            Ok(_) | Err(ferry::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_err(e, &i.key)),
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > MAX_DELETE {
            return Err(s3_error!(
                MalformedXML,
                "DeleteObjects takes at most {MAX_DELETE} keys"
            ));
        }
        let entry = self.entry(&i.bucket).await?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let result = match ferry::validate_key(&o.key) {
                _ if reserved::is_reserved(&o.key) => reserved::delete(&entry, &o.key, None)
                    .map(|()| true)
                    .map_err(|e| {
                        (
                            "InvalidArgument",
                            e.message().unwrap_or_default().to_owned(),
                        )
                    }),
                Err(e) => Err(("InvalidArgument", e.to_string())),
                Ok(()) => entry
                    .bucket
                    .delete(&o.key)
                    .await
                    .map_err(|e| ("InternalError", e.to_string())),
            };
            match result {
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err((code, message)) => errors.push(Error {
                    code: Some(code.into()),
                    key: Some(o.key),
                    message: Some(message),
                    ..Default::default()
                }),
            }
        }
        let quiet = i.delete.quiet == Some(true);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet && !deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        let entry = self.entry(&i.bucket).await?;
        // Metadata is checked now, not after the parts are sent.
        let mut metadata = to_metadata(i.metadata);
        HttpHeaders::new(
            i.cache_control,
            i.content_disposition,
            i.content_encoding,
            i.content_language,
            i.expires.as_ref(),
        )
        .store(&mut metadata);
        ferry::normalize_metadata(&metadata)
            .map_err(|e| s3_error!(InvalidArgument, "invalid metadata: {e}"))?;
        let id = format!("{:032x}", rand::random::<u128>());
        let dir = entry.uploads.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| s3_error!(InternalError, "{e}"))?;
        let info = UploadInfo {
            key: i.key.clone(),
            content_type: i.content_type,
            metadata,
            initiated_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64,
        };
        let json = serde_json::to_vec(&info).map_err(|e| s3_error!(InternalError, "{e}"))?;
        std::fs::write(dir.join("meta.json"), json).map_err(|e| s3_error!(InternalError, "{e}"))?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let mut i = req.input;
        if req.extensions.get::<LengthUnknown>().is_some() {
            i.content_length = None;
        }
        let entry = self.entry(&i.bucket).await?;
        let dir = Self::upload_dir(&entry, &i.upload_id)?;
        let want_md5 = decode_md5(i.content_md5.as_deref())?;
        let want_len = i.content_length.and_then(|n| u64::try_from(n).ok());
        let checksums = Checksums::new(
            Checksum {
                checksum_crc32: i.checksum_crc32.clone(),
                checksum_crc32c: i.checksum_crc32c.clone(),
                checksum_crc64nvme: i.checksum_crc64nvme.clone(),
                checksum_sha1: i.checksum_sha1.clone(),
                checksum_sha256: i.checksum_sha256.clone(),
                ..Default::default()
            },
            i.checksum_algorithm.as_ref(),
            &req.headers,
            req.trailing_headers.clone(),
        )?;
        let md5 = Self::write_part(
            &dir,
            &self.uploads,
            i.part_number,
            body_reader(i.body),
            want_md5,
            want_len,
            Some(checksums),
        )
        .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(md5))),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        let dir = Self::upload_dir(&entry, &i.upload_id)?;
        let (src_bucket, src_key) = parse_copy_source(&i.copy_source)?;
        self.keys.may_read(req.credentials.as_ref(), &src_bucket)?;
        let src = self.entry(&src_bucket).await?;
        let meta = src
            .bucket
            .head(&src_key)
            .await
            .map_err(|e| s3_err(e, &src_key))?;
        let range = match i.copy_source_range.as_deref() {
            None => None,
            Some(r) => {
                let (a, b) = r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidArgument,
                            "x-amz-copy-source-range is bytes=FIRST-LAST"
                        )
                    })?;
                if a > b || b >= meta.size {
                    return Err(s3_error!(InvalidRange, "the range is outside the source"));
                }
                Some(a..b + 1)
            }
        };
        let reader = self.open_range(&src.bucket, &src_key, range).await?;
        let md5 =
            Self::write_part(&dir, &self.uploads, i.part_number, reader, None, None, None).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(hex::encode(md5))),
                last_modified: Some(timestamp(seconds(SystemTime::now()))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        let _writing = writing(&entry).await?;
        let dir = Self::upload_dir(&entry, &i.upload_id)?;
        let info = Self::read_upload(&dir)?;
        if info.key != i.key {
            return Err(s3_error!(NoSuchUpload, "the upload is for another key"));
        }
        let parts = i
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(InvalidRequest, "the upload names no parts"))?;
        let mut files = Vec::new();
        let mut sizes = Vec::new();
        let mut md5s = Vec::new();
        let mut last = 0;
        for (n, p) in parts.iter().enumerate() {
            let number = p.part_number.unwrap_or_default();
            if number <= last {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order"
                ));
            }
            last = number;
            let given = p
                .e_tag
                .as_ref()
                .map(|e| e.value().trim_matches('"').to_ascii_lowercase())
                .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| s3_error!(InvalidPart, "part {number} names no part ETag"))?;
            let file = dir.join(part_file(number, &given));
            let stored = given;
            let size = std::fs::metadata(&file)
                .map_err(|_| {
                    s3_error!(InvalidPart, "part {number} with that ETag was not uploaded")
                })?
                .len();
            if n + 1 < parts.len() && size < MIN_PART {
                return Err(s3_error!(EntityTooSmall, "part {number} is under 5 MiB"));
            }
            let mut raw = [0u8; 16];
            hex::decode_to_slice(stored.trim(), &mut raw)
                .map_err(|_| s3_error!(InternalError, "part {number}'s digest is damaged"))?;
            md5s.extend_from_slice(&raw);
            files.push(file);
            sizes.push(size);
        }
        let cond = self
            .put_condition(
                &entry,
                &i.key,
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
            )
            .await?;
        // The parts, one after another, streamed into the bucket.
        let mut chain: Box<dyn AsyncRead + Send + Unpin> = Box::new(tokio::io::empty());
        for f in files.iter().rev() {
            let file = tokio::fs::File::open(f)
                .await
                .map_err(|e| s3_error!(InternalError, "reading a part: {e}"))?;
            chain = Box::new(file.chain(chain));
        }
        let opts = PutOptions {
            content_type: info.content_type.clone(),
            metadata: info.metadata.clone(),
        };
        let (meta, _) = self
            .store(&entry, &i.key, chain, opts, cond, None, None, None)
            .await?;
        let etag = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), files.len());
        entry.record_etag(&i.key, &meta.hash, &etag);
        entry.record_parts(&i.key, &meta.hash, &sizes);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        let dir = Self::upload_dir(&entry, &i.upload_id)?;
        std::fs::remove_dir_all(&dir).map_err(|e| s3_error!(InternalError, "{e}"))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        let dir = Self::upload_dir(&entry, &i.upload_id)?;
        let marker = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        // Each number's newest part (a replaced one may linger a moment).
        let mut found: std::collections::BTreeMap<i32, (String, std::fs::Metadata)> =
            Default::default();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some((n, md5)) = e.file_name().to_str().and_then(parse_part_file) else {
                continue;
            };
            let Ok(md) = e.metadata() else { continue };
            let newer = found
                .get(&n)
                .is_none_or(|(_, old)| old.modified().ok() <= md.modified().ok());
            if n > marker && newer {
                found.insert(n, (md5, md));
            }
        }
        let truncated = found.len() > max;
        let numbers: Vec<i32> = found.keys().copied().take(max).collect();
        let parts = found
            .into_iter()
            .take(max)
            .map(|(n, (md5, md))| Part {
                part_number: Some(n),
                size: Some(md.len() as i64),
                last_modified: md.modified().ok().map(timestamp),
                e_tag: Some(ETag::Strong(md5)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            parts: Some(parts),
            is_truncated: Some(truncated),
            next_part_number_marker: truncated.then(|| numbers.last().copied()).flatten(),
            max_parts: Some(max as i32),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let entry = self.entry(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let mut uploads: Vec<MultipartUpload> = std::fs::read_dir(&entry.uploads)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().into_string().ok()?;
                let info = Self::read_upload(&e.path()).ok()?;
                info.key.starts_with(&prefix).then(|| MultipartUpload {
                    key: Some(info.key),
                    upload_id: Some(id),
                    initiated: Some(timestamp(
                        SystemTime::UNIX_EPOCH
                            + std::time::Duration::from_millis(info.initiated_ms.max(0) as u64),
                    )),
                    ..Default::default()
                })
            })
            .collect();
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }
}
