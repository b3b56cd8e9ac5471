//! Google Cloud Storage through its JSON API (`gs://BUCKET/PREFIX`).
//!
//! Plain HTTP (reqwest) rather than a client library: object names travel
//! inside JSON bodies and fully percent-encoded path segments, so every
//! valid ferry key reaches the store byte for byte (the Rust clients
//! measured normalise paths; see `docs/research/remotes-emulators.md`).
//!
//! - Version tag: the object's **generation** (a number that changes at
//!   every write). Conditional writes are `ifGenerationMatch=0` (create)
//!   and `ifGenerationMatch=G` (replace); deletes carry `ifGenerationMatch`
//!   too. Stores that ignore them are caught by the probe.
//! - Writes up to [`GcsConfig::resumable_above`] (256 MiB by default) are
//!   one `uploadType=multipart` request (metadata JSON and the body,
//!   streamed from the file: memory stays bounded), the upload kind on
//!   which the emulator enforces preconditions too. Larger writes are
//!   resumable uploads: a session opened with the metadata and the
//!   precondition, then chunks of [`CHUNK`] bytes, one in memory at a time;
//!   a chunk that fails is sent again from what the session confirmed.
//! - Reads: the object's JSON description, then its bytes pinned to that
//!   generation (`alt=media&generation=G`), so description and body
//!   always belong together.
//! - Authentication: an OAuth2 access token minted from a service-account
//!   key (RS256-signed JWT grant, signed with aws-lc), cached until a
//!   minute before it expires; none for emulators.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Mutex;

use crate::metadata::Metadata;
use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// Everything but unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// GCS's limit on an object name, in bytes.
pub const MAX_NAME: usize = 1024;

const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const PAGE: u32 = 1000;
/// Bytes per chunk of a resumable upload (a multiple of 256 KiB).
pub const CHUNK: usize = 8 << 20;
/// The default largest write sent as one multipart upload.
pub const RESUMABLE_ABOVE: u64 = 256 << 20;
/// Tries per chunk of a resumable upload.
const CHUNK_ATTEMPTS: u32 = 4;

/// A GCS remote's settings.
#[derive(Debug, Clone, Default)]
pub struct GcsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (no surrounding slashes; may be empty).
    pub prefix: String,
    /// API endpoint (`http://127.0.0.1:4443` for an emulator); Google's
    /// when `None`.
    pub endpoint: Option<String>,
    /// A service account's JSON key; `None`: anonymous (emulators, public
    /// buckets).
    pub service_account: Option<String>,
    /// Writes larger than this are resumable uploads (0: the default,
    /// [`RESUMABLE_ABOVE`]).
    pub resumable_above: u64,
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// Without progress once connected.
    pub io_timeout: Duration,
}

#[derive(serde::Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccount({})", self.client_email)
    }
}

/// A remote on a GCS bucket.
#[derive(Debug)]
pub struct GcsRemote {
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    prefix: String,
    account: Option<Arc<ServiceAccount>>,
    token: Mutex<Option<(String, SystemTime)>>,
    resumable_above: u64,
}

/// The JSON description of an object.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Described {
    name: String,
    generation: String,
    #[serde(default)]
    size: String,
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
    updated: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    items: Vec<Described>,
    next_page_token: Option<String>,
}

impl GcsRemote {
    /// A remote for `cfg` (no request is made).
    pub fn new(cfg: &GcsConfig) -> Result<Self, RemoteError> {
        let endpoint = cfg
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_owned();
        let fail = |detail: String| RemoteError::new(RemoteErrorKind::Terminal, &endpoint, detail);
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(fail(format!(
                "the endpoint {endpoint:?} is not an http:// or https:// URL"
            )));
        }
        let account = match &cfg.service_account {
            None => None,
            Some(text) => {
                let a: ServiceAccount = serde_json::from_str(text).map_err(|e| {
                    fail(format!(
                        "the service-account key is not a Google service-account JSON file: {e}"
                    ))
                })?;
                signing_key(&a.private_key).map_err(fail)?;
                Some(Arc::new(a))
            }
        };
        let http = super::http::client(cfg.connect_timeout, cfg.io_timeout).map_err(fail)?;
        Ok(GcsRemote {
            http,
            endpoint,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.trim_matches('/').to_owned(),
            account,
            token: Mutex::new(None),
            resumable_above: if cfg.resumable_above == 0 {
                RESUMABLE_ABOVE
            } else {
                cfg.resumable_above
            },
        })
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            utf8_percent_encode(&self.bucket, SEGMENT),
            utf8_percent_encode(&self.full(key), SEGMENT)
        )
    }

    fn error(&self, kind: RemoteErrorKind, detail: impl Into<String>) -> RemoteError {
        RemoteError::new(kind, self.endpoint(), detail)
    }

    fn send_error(&self, e: reqwest::Error, what: &str) -> RemoteError {
        super::http::transport_error(self.endpoint(), e, what)
    }

    /// An error answer as a typed error (its JSON message included).
    async fn status_error(&self, resp: reqwest::Response, what: &str) -> RemoteError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let kind = match status {
            404 => RemoteErrorKind::NotFound,
            412 => RemoteErrorKind::PreconditionFailed,
            408 | 429 | 500..=599 => RemoteErrorKind::Retryable,
            _ => RemoteErrorKind::Terminal,
        };
        self.error(kind, format!("{what}: HTTP {status}: {message}"))
    }

    /// The `Authorization` header value, minting a token when needed.
    async fn auth(&self) -> Result<Option<String>, RemoteError> {
        let Some(account) = &self.account else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if SystemTime::now() < *until {
                return Ok(Some(format!("Bearer {token}")));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = jwt(account, now).map_err(|e| self.error(RemoteErrorKind::Terminal, e))?;
        let resp = self
            .http
            .post(&account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.send_error(e, "asking for an access token"))?;
        if !resp.status().is_success() {
            let mut e = self.status_error(resp, "asking for an access token").await;
            if e.kind == RemoteErrorKind::NotFound {
                e.kind = RemoteErrorKind::Terminal;
            }
            return Err(e);
        }
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
            #[serde(default = "an_hour")]
            expires_in: u64,
        }
        fn an_hour() -> u64 {
            3600
        }
        let token: Token = resp.json().await.map_err(|e| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("the token answer is not JSON: {e}"),
            )
        })?;
        let until = SystemTime::now() + Duration::from_secs(token.expires_in.saturating_sub(60));
        let header = format!("Bearer {}", token.access_token);
        *cached = Some((token.access_token, until));
        Ok(Some(header))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let req = match self.auth().await? {
            Some(h) => req.header(reqwest::header::AUTHORIZATION, h),
            None => req,
        };
        let resp = req.send().await.map_err(|e| self.send_error(e, what))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(resp, what).await)
        }
    }

    /// The description of `key`, or `None`.
    async fn describe(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        let what = format!("reading {key:?}");
        match self.send(self.http.get(self.object_url(key)), &what).await {
            Ok(resp) => {
                let d: Described = resp
                    .json()
                    .await
                    .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("{what}: {e}")))?;
                Ok(Some(self.object(key, d)))
            }
            Err(e) if e.kind == RemoteErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn object(&self, key: &str, d: Described) -> RemoteObject {
        let mut obj = RemoteObject::listed(key, d.generation, d.size.parse().unwrap_or(0))
            .with_metadata(d.metadata.unwrap_or_default());
        obj.content_type = d.content_type;
        obj.modified_ms = d.updated.as_deref().and_then(super::http::rfc3339_ms);
        obj
    }

    /// The bytes of `key` at `generation`, from byte `range.0` for at most
    /// `range.1` bytes when given.
    async fn media(
        &self,
        key: &str,
        generation: &str,
        range: Option<u64>,
    ) -> Result<reqwest::Response, RemoteError> {
        let mut req = self
            .http
            .get(self.object_url(key))
            .query(&[("alt", "media"), ("generation", generation)]);
        if let Some(len) = range {
            req = req.header(
                reqwest::header::RANGE,
                format!("bytes=0-{}", len.max(1) - 1),
            );
        }
        self.send(req, &format!("reading {key:?}")).await
    }

    /// The `ifGenerationMatch` value of a precondition. A version tag that
    /// is not a generation number (another store's etag) can match no
    /// object: it is sent as the largest generation, which the store then
    /// refuses itself (so the probe still measures the store).
    fn condition(cond: &Precondition) -> Option<String> {
        match cond {
            Precondition::None => None,
            Precondition::IfAbsent => Some("0".into()),
            Precondition::IfMatch(g) => Some(match g.parse::<i64>() {
                Ok(n) if n > 0 => n.to_string(),
                _ => i64::MAX.to_string(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Remote for GcsRemote {
    fn endpoint(&self) -> String {
        let at = if self.endpoint == DEFAULT_ENDPOINT {
            String::new()
        } else {
            format!(" at {}", self.endpoint)
        };
        format!("gs://{}/{}{at}", self.bucket, self.prefix)
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
        let root = self.full("");
        let full = format!("{root}{prefix}");
        let mut req = self
            .http
            .get(format!(
                "{}/storage/v1/b/{}/o",
                self.endpoint,
                utf8_percent_encode(&self.bucket, SEGMENT)
            ))
            .query(&[("prefix", full.as_str()), ("maxResults", &PAGE.to_string())]);
        if let Some(t) = &token {
            req = req.query(&[("pageToken", t.as_str())]);
        }
        let resp = self.send(req, "listing").await?;
        let listing: Listing = resp
            .json()
            .await
            .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("listing: {e}")))?;
        let objects = listing
            .items
            .into_iter()
            .filter_map(|d| {
                let key = d.name.strip_prefix(&root)?.to_owned();
                Some(self.object(&key, d))
            })
            .collect();
        Ok(RemotePage {
            objects,
            next: listing.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.describe(key).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let obj = self.describe(key).await?.ok_or_else(|| {
            self.error(
                RemoteErrorKind::NotFound,
                format!("{key:?}: no such object"),
            )
        })?;
        let resp = match self.media(key, &obj.etag, None).await {
            // Replaced between the two requests: the caller reads again.
            Err(e) if e.kind == RemoteErrorKind::NotFound => {
                return Err(self.error(
                    RemoteErrorKind::Retryable,
                    format!("{key:?} changed while it was read"),
                ))
            }
            other => other?,
        };
        Ok((obj, super::http::response_reader(resp)))
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        let Some(obj) = self.describe(key).await? else {
            return Ok(None);
        };
        if len == 0 || obj.size == 0 {
            return Ok(Some((obj, Bytes::new())));
        }
        let resp = self.media(key, &obj.etag, Some(len)).await?;
        let mut bytes = resp
            .bytes()
            .await
            .map_err(|e| self.send_error(e, &format!("reading {key:?}")))?;
        bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(Some((obj, bytes)))
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        if let Some(why) = self.refuses(&req.key) {
            return Err(self.error(RemoteErrorKind::Terminal, format!("{:?}: {why}", req.key)));
        }
        let what = format!("writing {:?}", req.key);
        let metadata: Metadata = req.all_metadata();
        let resource = serde_json::json!({
            "name": self.full(&req.key),
            "contentType": req.content_type,
            "metadata": metadata,
        });
        // Bytes in memory are small: only file bodies go resumable.
        if !matches!(body, RemoteBody::Bytes(_))
            && super::http::body_len(&body).await > self.resumable_above
        {
            return self.put_resumable(req, resource, body, &cond, &what).await;
        }
        let boundary = format!("ferry-{:032x}", rand::random::<u128>());
        let head = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
            req.content_type
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let (content, length): (reqwest::Body, u64) = match body {
            RemoteBody::Bytes(b) => {
                let mut all = Vec::with_capacity(head.len() + b.len() + tail.len());
                all.extend_from_slice(head.as_bytes());
                all.extend_from_slice(&b);
                all.extend_from_slice(tail.as_bytes());
                let n = all.len() as u64;
                (all.into(), n)
            }
            RemoteBody::File(file) => {
                super::http::file_body(head.into(), &file, tail.into(), &req.progress)
                    .await
                    .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?
            }
            RemoteBody::Framed { head: first, file } => {
                let mut lead = head.into_bytes();
                lead.extend_from_slice(&first);
                super::http::file_body(lead.into(), &file, tail.into(), &req.progress)
                    .await
                    .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?
            }
        };
        let mut request = self
            .http
            .post(format!(
                "{}/upload/storage/v1/b/{}/o",
                self.endpoint,
                utf8_percent_encode(&self.bucket, SEGMENT)
            ))
            .query(&[("uploadType", "multipart")])
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(content);
        if let Some(g) = Self::condition(&cond) {
            request = request.query(&[("ifGenerationMatch", g)]);
        }
        let resp = match self.send(request, &what).await {
            // GCS answers a failed generation match with 412 whether or not
            // the object exists; a 404 on an upload is the bucket missing.
            Err(mut e) if e.kind == RemoteErrorKind::NotFound => {
                e.kind = RemoteErrorKind::Terminal;
                e.detail = format!("{} (does the bucket {:?} exist?)", e.detail, self.bucket);
                return Err(e);
            }
            other => other?,
        };
        let d: Described = resp
            .json()
            .await
            .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("{what}: {e}")))?;
        Ok(d.generation)
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let mut req = self.http.delete(self.object_url(key));
        if let Some(g) = Self::condition(&cond) {
            req = req.query(&[("ifGenerationMatch", g)]);
        }
        match self.send(req, &format!("deleting {key:?}")).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == RemoteErrorKind::NotFound => match cond {
                Precondition::IfMatch(_) => Err(self.error(
                    RemoteErrorKind::PreconditionFailed,
                    format!("{key:?}: precondition failed"),
                )),
                _ => Ok(()),
            },
            Err(e) => Err(e),
        }
    }

    fn refuses(&self, key: &str) -> Option<String> {
        let full = self.full(key);
        if full.len() > MAX_NAME {
            return Some(format!(
                "with the remote prefix it is {} bytes, over GCS's {MAX_NAME}-byte limit on object names",
                full.len()
            ));
        }
        if full.starts_with(".well-known/acme-challenge/") {
            return Some("GCS reserves names under .well-known/acme-challenge/".into());
        }
        None
    }
}

impl GcsRemote {
    /// A resumable upload: a session opened with the resource and the
    /// precondition, then the body in chunks of [`CHUNK`], each sent again
    /// (from the offset the session confirms) when it fails.
    async fn put_resumable(
        &self,
        req: &PutRequest,
        resource: serde_json::Value,
        body: RemoteBody,
        cond: &Precondition,
        what: &str,
    ) -> Result<String, RemoteError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let local = |e: std::io::Error| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: reading the local file: {e}"),
            )
        };
        let (head, path) = match body {
            RemoteBody::File(f) => (Bytes::new(), f),
            RemoteBody::Framed { head, file } => (head, file),
            RemoteBody::Bytes(_) => {
                return Err(self.error(RemoteErrorKind::Terminal, "resumable bytes"))
            }
        };
        let mut file = tokio::fs::File::open(&path).await.map_err(local)?;
        let total = head.len() as u64 + file.metadata().await.map_err(local)?.len();
        let mut open = self
            .http
            .post(format!(
                "{}/upload/storage/v1/b/{}/o",
                self.endpoint,
                utf8_percent_encode(&self.bucket, SEGMENT)
            ))
            .query(&[("uploadType", "resumable")])
            .header("X-Upload-Content-Type", req.content_type.as_str())
            .header("X-Upload-Content-Length", total)
            .json(&resource);
        if let Some(g) = Self::condition(cond) {
            open = open.query(&[("ifGenerationMatch", g)]);
        }
        let session = self.send(open, what).await?;
        let Some(url) = session
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Err(self.error(
                RemoteErrorKind::Retryable,
                format!("{what}: the upload session has no address"),
            ));
        };
        let mut offset = 0u64;
        let mut attempts = 0;
        loop {
            // The chunk at `offset` (the envelope's bytes come first).
            let len = (total - offset).min(CHUNK as u64);
            let mut chunk = vec![0u8; len as usize];
            let mut filled = 0usize;
            let hlen = head.len() as u64;
            if offset < hlen {
                let n = ((hlen - offset) as usize).min(chunk.len());
                chunk[..n].copy_from_slice(&head[offset as usize..offset as usize + n]);
                filled = n;
            }
            if filled < chunk.len() {
                file.seek(std::io::SeekFrom::Start(offset + filled as u64 - hlen))
                    .await
                    .map_err(local)?;
                file.read_exact(&mut chunk[filled..]).await.map_err(local)?;
            }
            let last = offset + len == total;
            let range = if len == 0 {
                format!("bytes */{total}")
            } else {
                format!("bytes {offset}-{}/{total}", offset + len - 1)
            };
            let sent = self
                .http
                .put(&url)
                .header(reqwest::header::CONTENT_RANGE, range)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(chunk)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    attempts += 1;
                    if attempts >= CHUNK_ATTEMPTS {
                        return Err(self.send_error(e, what));
                    }
                    offset = self.confirmed(&url, total).await.unwrap_or(offset);
                    continue;
                }
            };
            match resp.status().as_u16() {
                200 | 201 => {
                    let d: Described = resp.json().await.map_err(|e| {
                        self.error(RemoteErrorKind::Retryable, format!("{what}: {e}"))
                    })?;
                    return Ok(d.generation);
                }
                // Incomplete: the session says how much it holds.
                308 if !last || len == 0 => {
                    offset = range_end(resp.headers()).unwrap_or(offset + len);
                    req.progress.moved(offset);
                    attempts = 0;
                }
                308 => {
                    offset = range_end(resp.headers()).unwrap_or(offset);
                    attempts += 1;
                }
                _ => {
                    let e = self.status_error(resp, what).await;
                    attempts += 1;
                    if !e.is_retryable() || attempts >= CHUNK_ATTEMPTS {
                        return Err(e);
                    }
                    offset = self.confirmed(&url, total).await.unwrap_or(offset);
                }
            }
        }
    }

    /// How many bytes a resumable session holds.
    async fn confirmed(&self, url: &str, total: u64) -> Option<u64> {
        let resp = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_RANGE, format!("bytes */{total}"))
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .ok()?;
        match resp.status().as_u16() {
            308 => Some(range_end(resp.headers()).unwrap_or(0)),
            _ => None,
        }
    }
}

/// The next offset a resumable session expects (its `Range: bytes=0-N`
/// answer, N + 1), if it says.
fn range_end(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let r = headers.get(reqwest::header::RANGE)?.to_str().ok()?;
    let end: u64 = r.rsplit_once('-')?.1.parse().ok()?;
    Some(end + 1)
}

/// The RSA key of a service account (PEM PKCS#8), for signing.
fn signing_key(pem: &str) -> Result<aws_lc_rs::signature::RsaKeyPair, String> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the service account's private_key is not PEM".to_owned())?;
    aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("the service account's private_key is not an RSA PKCS#8 key: {e}"))
}

/// The signed JWT of an OAuth2 service-account grant (RFC 7523), valid
/// for an hour from `now`.
fn jwt(account: &ServiceAccount, now: u64) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let signing_input = format!("{header}.{}", b64.encode(claims.to_string()));
    let key = signing_key(&account.private_key)?;
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the token request failed".to_owned())?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}
