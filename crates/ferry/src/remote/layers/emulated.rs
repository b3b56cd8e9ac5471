//! For stores that accept conditional headers but do not enforce them: the
//! same protocol, with the check done by a HEAD just before an
//! unconditional write. The race this leaves (a write landing between our
//! HEAD and our PUT is overwritten) is written down in `docs/design.md`.
//!
//! A store's second write path (S3's multipart uploads, taken by large
//! objects and same-bytes rewrites) is probed on its own: where only its
//! conditions are ignored, only the writes that may take it are emulated
//! ([`Remote::may_write_multipart`]).

use std::sync::Arc;

use crate::remote::layer::Layer;
use crate::remote::{Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind};

/// Checks preconditions by HEAD instead of trusting the store.
#[derive(Debug)]
pub struct Emulated {
    inner: Arc<dyn Remote>,
    put: bool,
    delete: bool,
    multipart: bool,
}

impl Emulated {
    /// Emulates conditional puts and/or deletes on `inner`.
    pub fn new(inner: Arc<dyn Remote>, emulate_put: bool, emulate_delete: bool) -> Self {
        Emulated {
            inner,
            put: emulate_put,
            delete: emulate_delete,
            multipart: false,
        }
    }

    /// Also emulates the conditions of writes that may take the store's
    /// second write path (when the probe found them ignored there).
    pub fn emulating_multipart(mut self, emulate: bool) -> Self {
        self.multipart = emulate;
        self
    }

    /// Whether the write of `body` under `cond` is checked here.
    async fn emulates_put(
        &self,
        body: &RemoteBody,
        cond: &Precondition,
    ) -> Result<bool, RemoteError> {
        if self.put {
            return Ok(true);
        }
        if !self.multipart || *cond == Precondition::None {
            return Ok(false);
        }
        let file_len = |path: &std::path::Path| {
            let path = path.to_owned();
            async move {
                tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .map_err(|e| {
                        RemoteError::new(
                            RemoteErrorKind::Terminal,
                            self.inner.endpoint(),
                            format!("reading {}: {e}", path.display()),
                        )
                    })
            }
        };
        let size = match body {
            RemoteBody::Bytes(b) => b.len() as u64,
            RemoteBody::File(path) => file_len(path).await?,
            RemoteBody::Framed { head, file } => head.len() as u64 + file_len(file).await?,
        };
        Ok(self.inner.may_write_multipart(size, cond))
    }

    async fn check(&self, key: &str, cond: &Precondition) -> Result<(), RemoteError> {
        let current = match cond {
            Precondition::None => return Ok(()),
            _ => self.inner.head(key).await?,
        };
        cond.check(
            current.as_ref().map(|c| c.etag.as_str()),
            &self.inner.endpoint(),
            key,
        )
    }
}

#[async_trait::async_trait]
impl Layer for Emulated {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        if self.emulates_put(&body, &cond).await? {
            self.check(&req.key, &cond).await?;
            self.inner.put(req, body, Precondition::None).await
        } else {
            self.inner.put(req, body, cond).await
        }
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        if self.delete {
            self.check(key, &cond).await?;
            self.inner.delete(key, Precondition::None).await
        } else {
            self.inner.delete(key, cond).await
        }
    }
}

/// What the capability probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// `If-None-Match: *` and `If-Match` on writes are enforced.
    pub conditional_put: bool,
    /// `If-Match` on deletes is enforced.
    pub conditional_delete: bool,
    /// `If-None-Match: *` and `If-Match` are enforced on the store's second
    /// write path ([`Remote::put_multipart_probe`]: S3's
    /// `CompleteMultipartUpload`), or on its only one. `None`: recorded
    /// before ferry probed it (connecting probes again).
    #[serde(default)]
    pub conditional_multipart: Option<bool>,
    /// Where the store keeps ferry's description of each object (a WebDAV
    /// server: a dead property, or a sidecar where it stores none).
    /// `None`: recorded before ferry reported it.
    #[serde(default)]
    pub metadata_place: Option<crate::remote::MetadataPlace>,
}

impl ProbeResult {
    /// Whether a conditional put may overwrite a version it never saw: the
    /// store ignores conditional puts, or ignores conditional deletes,
    /// which ferry takes as a sign that it checks a put's condition and
    /// then writes, not at once (s3s-fs 0.14.1 checks the ETag, then
    /// streams the body: two `If-Match` puts on one version both succeed,
    /// measured). Sync then trusts a pull over its own push only when
    /// something shows the writer saw it. (A store that ignores conditions
    /// only on its multipart path, as moto 5.2.6 does, is not counted:
    /// most pushes and every plain client's edit take the single path.)
    pub fn racy_puts(&self) -> bool {
        !self.conditional_put || !self.conditional_delete
    }
}

/// Finds out whether `remote` enforces conditional writes, using scratch
/// objects under `.ferry/probe/`. Fails (with the endpoint named) when the
/// store cannot be reached or refuses the credentials.
pub async fn probe(remote: &dyn Remote, device: &str) -> Result<ProbeResult, RemoteError> {
    let key = format!(".ferry/probe/{device}-{:016x}", rand::random::<u64>());
    let req = PutRequest {
        key: key.clone(),
        content_type: "application/octet-stream".into(),
        metadata: Default::default(),
        hash: crate::hash::ContentHash::of(b"probe"),
        sealed: false,
        size: 5,
        // The probe object lives for two requests; it carries no time.
        mtime_ms: 0,
        device: device.to_owned(),
        base: String::new(),
        stamp: None,
        progress: crate::remote::TransferProgress::none(),
    };
    let body = || RemoteBody::Bytes(bytes::Bytes::from_static(b"probe"));
    let first = remote.put(&req, body(), Precondition::IfAbsent).await;
    let etag = match first {
        Ok(etag) => etag,
        // Some stores reject conditional headers outright.
        Err(e) if e.kind == RemoteErrorKind::Terminal && e.detail.contains("nsupported") => {
            remote.put(&req, body(), Precondition::None).await?
        }
        Err(e) => return Err(e),
    };
    // ferry's metadata must come back as written, or no version can be
    // told from another (a WebDAV server that drops dead properties, or
    // changes an ETag when a file is moved, fails here).
    let written = remote.head(&key).await?;
    if written.as_ref().is_none_or(|w| w.hash != Some(req.hash)) {
        let _ = remote.delete(&key, Precondition::None).await;
        return Err(RemoteError::new(
            RemoteErrorKind::Terminal,
            remote.endpoint(),
            "the store does not give back the metadata ferry writes with an object, so ferry cannot sync with it",
        ));
    }
    let metadata_place = remote.metadata_place();
    let again = remote.put(&req, body(), Precondition::IfAbsent).await;
    let wrong = remote
        .put(
            &req,
            body(),
            Precondition::IfMatch("\"ferry-probe-no-such-etag\"".into()),
        )
        .await;
    // A transient failure says nothing about the store: never record "not
    // enforced" because of a 503 or a timeout (the caller's retry layer has
    // already tried again).
    for answer in [&again, &wrong] {
        if let Err(e) = answer {
            if e.is_retryable() {
                return Err(e.clone());
            }
        }
    }
    let put_enforced = matches!(again, Err(ref e) if e.kind == RemoteErrorKind::PreconditionFailed)
        && matches!(wrong, Err(ref e) if e.kind == RemoteErrorKind::PreconditionFailed);
    let _ = etag;
    let multipart_enforced = probe_multipart(remote, &req, body)
        .await?
        .unwrap_or(put_enforced);
    let del = remote
        .delete(
            &key,
            Precondition::IfMatch("\"ferry-probe-no-such-etag\"".into()),
        )
        .await;
    if let Err(e) = &del {
        if e.is_retryable() {
            return Err(e.clone());
        }
    }
    let still_there = remote.head(&key).await?.is_some();
    let delete_enforced =
        still_there && matches!(del, Err(ref e) if e.kind == RemoteErrorKind::PreconditionFailed);
    remote.delete(&key, Precondition::None).await?;
    Ok(ProbeResult {
        conditional_put: put_enforced,
        conditional_delete: delete_enforced,
        conditional_multipart: Some(multipart_enforced),
        metadata_place: Some(metadata_place),
    })
}

/// Whether the second write path enforces conditions, on the probe
/// object `req` (which exists): `If-None-Match: *` and a wrong `If-Match`
/// must both fail. `None`: the store has no second path.
async fn probe_multipart(
    remote: &dyn Remote,
    req: &PutRequest,
    body: impl Fn() -> RemoteBody,
) -> Result<Option<bool>, RemoteError> {
    let Some(again) = remote
        .put_multipart_probe(req, body(), Precondition::IfAbsent)
        .await
    else {
        return Ok(None);
    };
    let wrong = remote
        .put_multipart_probe(
            req,
            body(),
            Precondition::IfMatch("\"ferry-probe-no-such-etag\"".into()),
        )
        .await
        .unwrap_or_else(|| Ok(String::new()));
    for answer in [&again, &wrong] {
        if let Err(e) = answer {
            if e.is_retryable() {
                return Err(e.clone());
            }
        }
    }
    let failed = |a: &Result<String, RemoteError>| matches!(a, Err(e) if e.kind == RemoteErrorKind::PreconditionFailed);
    Ok(Some(failed(&again) && failed(&wrong)))
}
