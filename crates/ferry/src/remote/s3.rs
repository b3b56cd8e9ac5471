//! `s3://BUCKET[/PREFIX]`: any S3-compatible store, through OpenDAL.
//!
//! Conditional writes map to `If-None-Match: *` (OpenDAL's `if_not_exists`)
//! and `If-Match`; conditional deletes to `If-Match`. Whether the store
//! enforces them is found out by the capability probe (`crate::probe`), not
//! assumed. ferry's content hash, mtime and device travel as `x-amz-meta-*`.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};
use tokio::io::AsyncReadExt;

use super::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemoteReader,
};

/// Part size for multipart uploads; memory per upload is about
/// `PART * (PARALLEL_PARTS + 1)`.
const PART: usize = 8 << 20;
const PARALLEL_PARTS: usize = 8;

/// Where and how to reach an S3-compatible store. Credentials are given by
/// the caller (the library reads no environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Access key id; `None` with no secret: anonymous requests.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
}

/// An S3-compatible remote.
#[derive(Debug, Clone)]
pub struct S3Remote {
    op: Operator,
    described: String,
}

impl S3Remote {
    /// Builds the client (no request is made).
    pub fn new(cfg: &S3Config) -> Result<Self, RemoteError> {
        opendal::install_default();
        let described = format!(
            "s3://{}/{} at {}",
            cfg.bucket,
            cfg.prefix,
            cfg.endpoint.as_deref().unwrap_or("AWS")
        );
        let config_err = |e: opendal::Error| {
            RemoteError::new(
                RemoteErrorKind::Terminal,
                described.clone(),
                format!("invalid S3 settings: {e}"),
            )
        };
        let mut b = opendal::services::S3::default()
            .bucket(&cfg.bucket)
            .root(&format!("/{}", cfg.prefix.trim_matches('/')))
            .region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            })
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint(endpoint);
        }
        if !cfg.path_style {
            b = b.enable_virtual_host_style();
        }
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.access_key_id(id).secret_access_key(secret);
                if let Some(token) = &cfg.session_token {
                    b = b.session_token(token);
                }
            }
            _ => b = b.skip_signature(),
        }
        let op = Operator::new(b).map_err(config_err)?;
        Ok(S3Remote { op, described })
    }

    fn err(&self, e: opendal::Error, what: &str) -> RemoteError {
        let kind = match e.kind() {
            ErrorKind::NotFound => RemoteErrorKind::NotFound,
            ErrorKind::ConditionNotMatch => RemoteErrorKind::PreconditionFailed,
            ErrorKind::RateLimited | ErrorKind::Conflict => RemoteErrorKind::Retryable,
            _ if e.is_temporary() => RemoteErrorKind::Retryable,
            ErrorKind::Unexpected if looks_unreachable(&e) => RemoteErrorKind::Unreachable,
            _ => RemoteErrorKind::Terminal,
        };
        RemoteError::new(kind, self.described.clone(), format!("{what}: {e}"))
    }

    fn describe(&self, key: String, meta: &opendal::Metadata, with_meta: bool) -> RemoteObject {
        let obj = RemoteObject {
            key,
            etag: meta.etag().unwrap_or_default().to_owned(),
            size: meta.content_length(),
            modified_ms: meta
                .last_modified()
                .map(|t| t.into_inner().as_millisecond()),
            hash: None,
            content_type: meta.content_type().map(str::to_owned),
            metadata: Default::default(),
            ferry_mtime: None,
            has_metadata: false,
        };
        if with_meta {
            let pairs: Vec<(String, String)> = meta
                .user_metadata()
                .map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            obj.with_metadata(pairs)
        } else {
            obj
        }
    }
}

fn looks_unreachable(e: &opendal::Error) -> bool {
    let text = format!("{e:?}").to_ascii_lowercase();
    [
        "connect",
        "connection",
        "dns",
        "error sending request",
        "timed out",
        "reset",
    ]
    .iter()
    .any(|w| text.contains(w))
}

#[async_trait::async_trait]
impl Remote for S3Remote {
    fn endpoint(&self) -> String {
        self.described.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let cap = self.op.info().capability();
        Capabilities {
            conditional_put: cap.write_with_if_not_exists && cap.write_with_if_match,
            conditional_delete: cap.delete_with_if_match,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
        let mut lister = self
            .op
            .lister_with(prefix)
            .recursive(true)
            .await
            .map_err(|e| self.err(e, "listing"))?;
        let mut out = Vec::new();
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|e| self.err(e, "listing"))?
        {
            let path = entry.path();
            if path.ends_with('/') {
                continue;
            }
            out.push(self.describe(path.to_owned(), entry.metadata(), false));
        }
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
            .buffer_unordered(16)
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
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        match self.op.stat(key).await {
            Ok(meta) => Ok(Some(self.describe(key.to_owned(), &meta, true))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e, &format!("reading {key}"))),
        }
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let meta = self
            .op
            .stat(key)
            .await
            .map_err(|e| self.err(e, &format!("reading {key}")))?;
        let obj = self.describe(key.to_owned(), &meta, true);
        let mut reader = self.op.reader_with(key).chunk(PART).concurrent(2);
        if !obj.etag.is_empty() {
            // The body must be the version the description is of.
            reader = reader.if_match(&obj.etag);
        }
        let reader = reader
            .await
            .map_err(|e| self.err(e, &format!("reading {key}")))?;
        let stream = reader
            .into_bytes_stream(0..obj.size)
            .await
            .map_err(|e| self.err(e, &format!("reading {key}")))?;
        let body: RemoteReader = Box::new(tokio_util::io::StreamReader::new(stream));
        Ok((obj, body))
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        let meta = match self.op.stat(key).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e, &format!("reading {key}"))),
        };
        let obj = self.describe(key.to_owned(), &meta, true);
        let end = len.min(obj.size);
        if end == 0 {
            return Ok(Some((obj, Bytes::new())));
        }
        let mut read = self.op.read_with(key).range(0..end);
        if !obj.etag.is_empty() {
            read = read.if_match(&obj.etag);
        }
        let data = read
            .await
            .map_err(|e| self.err(e, &format!("reading {key}")))?;
        Ok(Some((obj, data.to_bytes())))
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        let what = format!("writing {}", req.key);
        let metadata: Vec<(String, String)> = req.all_metadata().into_iter().collect();
        let mut w = self
            .op
            .writer_with(&req.key)
            .chunk(PART)
            .concurrent(PARALLEL_PARTS)
            .content_type(&req.content_type)
            .user_metadata(metadata);
        match &cond {
            Precondition::None => {}
            Precondition::IfAbsent => w = w.if_not_exists(true),
            Precondition::IfMatch(etag) => w = w.if_match(etag),
        }
        let mut writer = w.await.map_err(|e| self.err(e, &what))?;
        let written: Result<(), RemoteError> = async {
            let (head, file) = match body {
                RemoteBody::Bytes(b) => (Some(b), None),
                RemoteBody::File(path) => (None, Some(path)),
                RemoteBody::Framed { head, file } => (Some(head), Some(file)),
            };
            if let Some(b) = head {
                writer.write(b).await.map_err(|e| self.err(e, &what))?;
            }
            let Some(path) = file else {
                return Ok(());
            };
            let read_err = |e: std::io::Error| {
                RemoteError::new(
                    RemoteErrorKind::Terminal,
                    self.endpoint(),
                    format!("reading {}: {e}", path.display()),
                )
            };
            let mut file = tokio::fs::File::open(&path).await.map_err(read_err)?;
            loop {
                let mut buf = vec![0u8; PART];
                let mut filled = 0;
                while filled < PART {
                    let n = file.read(&mut buf[filled..]).await.map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                writer
                    .write(Bytes::from(buf))
                    .await
                    .map_err(|e| self.err(e, &what))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = writer.abort().await;
            return Err(e);
        }
        let meta = writer.close().await.map_err(|e| self.err(e, &what))?;
        match meta.etag() {
            Some(etag) => Ok(etag.to_owned()),
            None => self.head(&req.key).await?.map(|o| o.etag).ok_or_else(|| {
                RemoteError::new(
                    RemoteErrorKind::Retryable,
                    self.endpoint(),
                    format!("{} vanished after writing", req.key),
                )
            }),
        }
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let mut d = self.op.delete_with(key);
        if let Precondition::IfMatch(etag) = &cond {
            d = d.if_match(etag);
        }
        d.await.map_err(|e| self.err(e, &format!("deleting {key}")))
    }
}
