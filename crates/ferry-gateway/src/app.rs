//! What apps use beside S3, under `--signer-base BASE`: the URL signer
//! (`/v1/sign/upload`, `/v1/sign/download`, `/v1/delete`, `/v1/list`),
//! the bucket's state (`/v1/status`, `/v1/objects/{key}/state`), its events
//! (`/v1/events`, Server-Sent Events) and `/health`. Callers present a
//! bearer token; each token may touch its prefixes with its verbs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry::remote::s3::{PresignMethod, S3Remote};
use ferry::remote::Precondition;
use ferry::Bucket;
use http_body_util::BodyExt as _;
use serde_json::json;

/// A bearer token and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret the client sends (`Authorization: Bearer …`).
    pub token: String,
    /// Key prefixes it may touch (`""`: every key).
    pub prefixes: Vec<String>,
    /// `upload`, `download`, `delete`, `list`, `status`; empty: all.
    pub verbs: Vec<String>,
}

impl Token {
    fn may(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }

    fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Where signed URLs point.
#[derive(Debug, Clone)]
pub enum SignerTarget {
    /// At this gateway (SigV4 presigned with its own key pair): works
    /// offline, on a LAN.
    Local,
    /// At the bucket's S3 remote (presigned with its credentials).
    Upstream(Arc<S3Remote>),
}

/// The app endpoints' settings.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The path they live under (`/api`; `""`: the root).
    pub base: String,
    /// The tokens that may call them.
    pub tokens: Vec<Token>,
    /// The longest a signed URL lives (requests may ask for less).
    pub max_expiry: Duration,
    /// Where signed URLs point.
    pub target: SignerTarget,
    /// This gateway's URL (for `Local` URLs when a request names no
    /// `Host`; otherwise they point where the caller reached the gateway).
    pub public_url: String,
}

pub(crate) struct App {
    pub(crate) config: AppConfig,
    pub(crate) name: String,
    pub(crate) bucket: Bucket,
    pub(crate) entry: Arc<crate::store::Entry>,
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    /// `Local` signers by the URL they sign for (made once each: building
    /// an S3 client is not free; at most [`LOCAL_SIGNERS`], as the `Host`
    /// is the caller's to choose).
    pub(crate) local_signers: std::sync::Mutex<std::collections::HashMap<String, Arc<S3Remote>>>,
}

/// How many `Local` signers are kept.
const LOCAL_SIGNERS: usize = 16;

type Resp = http::Response<s3s::Body>;

fn answer(status: u16, body: serde_json::Value) -> Resp {
    let mut r = http::Response::new(s3s::Body::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, message: impl Into<String>) -> Resp {
    answer(status, json!({ "error": message.into() }))
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignRequest {
    key: String,
    content_type: Option<String>,
    #[allow(dead_code)]
    size: Option<u64>,
    /// Seconds; clamped to the maximum.
    expires_in: Option<u64>,
    /// User metadata to sign into an upload.
    #[serde(default)]
    metadata: ferry::Metadata,
    /// A download's method: `GET` (the default) or `HEAD`.
    method: Option<String>,
    /// `*`: an upload that creates the key only (`If-None-Match: *`).
    if_none_match: Option<String>,
    /// An upload that replaces this ETag only (`If-Match`).
    if_match: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteRequest {
    key: String,
    if_match: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
}

impl App {
    /// Whether this request is one of the app endpoints.
    pub(crate) fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.config.base.as_str())
            .is_some_and(|rest| rest == "/health" || rest.starts_with("/v1/"))
    }

    fn token(&self, headers: &http::HeaderMap) -> Option<&Token> {
        let given = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.config
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), given.trim().as_bytes()))
    }

    pub(crate) async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let rest = path
            .strip_prefix(self.config.base.as_str())
            .unwrap_or_default()
            .to_owned();
        if rest == "/health" && req.method() == http::Method::GET {
            return answer(200, json!({ "ok": true, "bucket": self.name }));
        }
        let Some(token) = self.token(req.headers()).cloned() else {
            return if req.headers().contains_key("authorization") {
                error(401, "the bearer token is not one this gateway knows")
            } else {
                error(401, "a bearer token is required (Authorization: Bearer …)")
            };
        };
        let method = req.method().clone();
        // Local URLs point where the caller reached this gateway (a LAN
        // address when it listens on 0.0.0.0).
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.to_string());
        match (method, rest.as_str()) {
            (http::Method::GET, "/v1/status") => {
                if !token.may("status") {
                    return error(403, "this token may not read the status");
                }
                match self.bucket.status().await {
                    Ok(s) => answer(200, serde_json::to_value(s).unwrap_or_default()),
                    Err(e) => error(500, e.to_string()),
                }
            }
            (http::Method::GET, "/v1/events") => {
                if !token.may("status") {
                    return error(403, "this token may not read events");
                }
                self.events()
            }
            (http::Method::GET, r) if r.starts_with("/v1/objects/") && r.ends_with("/state") => {
                let raw = &r["/v1/objects/".len()..r.len() - "/state".len()];
                let key = percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned();
                if !token.may("status") || !token.covers(&key) {
                    return error(403, format!("this token may not read {key:?}"));
                }
                self.state(&key).await
            }
            (http::Method::POST, r) => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return error(400, format!("reading the request: {e}")),
                };
                if body.len() > 64 << 10 {
                    return error(413, "the request body is over 64 KiB");
                }
                self.post(r, &token, body, host.as_deref()).await
            }
            _ => error(404, format!("no endpoint {path}")),
        }
    }

    async fn post(&self, route: &str, token: &Token, body: Bytes, host: Option<&str>) -> Resp {
        macro_rules! parse {
            ($t:ty) => {
                match serde_json::from_slice::<$t>(&body) {
                    Ok(v) => v,
                    Err(e) => return error(400, format!("malformed JSON: {e}")),
                }
            };
        }
        match route {
            "/v1/sign/upload" | "/v1/sign/download" => {
                let upload = route.ends_with("upload");
                let r = parse!(SignRequest);
                let verb = if upload { "upload" } else { "download" };
                if let Err(e) = signable(&r.key) {
                    return error(400, e);
                }
                if !token.may(verb) || !token.covers(&r.key) {
                    return error(403, format!("this token may not {verb} {:?}", r.key));
                }
                let max = self.config.max_expiry;
                let expires = r
                    .expires_in
                    .map(Duration::from_secs)
                    .map_or(max, |e| e.min(max))
                    .max(Duration::from_secs(1));
                let method = match (upload, r.method.as_deref()) {
                    (true, None | Some("PUT")) => PresignMethod::Put,
                    (false, None | Some("GET")) => PresignMethod::Get,
                    (false, Some("HEAD")) => PresignMethod::Head,
                    (_, Some(m)) => {
                        return error(400, format!("{route} does not sign {m} requests"))
                    }
                };
                let cond = match (r.if_none_match.as_deref(), r.if_match) {
                    (None, None) => Precondition::None,
                    (Some("*"), None) => Precondition::IfAbsent,
                    (None, Some(etag)) => {
                        Precondition::IfMatch(format!("\"{}\"", etag.trim_matches('"')))
                    }
                    _ => {
                        return error(
                            400,
                            "ifNoneMatch may only be \"*\", and not together with ifMatch",
                        )
                    }
                };
                match self
                    .presign(
                        method,
                        &r.key,
                        expires,
                        r.content_type.as_deref(),
                        &r.metadata,
                        &cond,
                        host,
                    )
                    .await
                {
                    Ok(p) => {
                        let headers: serde_json::Map<String, serde_json::Value> = p
                            .headers
                            .into_iter()
                            .filter(|(n, _)| n != "host")
                            .map(|(n, v)| (n, json!(v)))
                            .collect();
                        answer(
                            200,
                            json!({
                                "url": p.url,
                                "method": p.method,
                                "headers": headers,
                                "expiresAt": rfc3339(SystemTime::now() + expires),
                            }),
                        )
                    }
                    Err(e) => error(502, e),
                }
            }
            "/v1/delete" => {
                let r = parse!(DeleteRequest);
                if !token.may("delete") || !token.covers(&r.key) {
                    return error(403, format!("this token may not delete {:?}", r.key));
                }
                self.delete(&r.key, r.if_match.as_deref()).await
            }
            "/v1/list" => {
                let r: ListRequest = if body.is_empty() {
                    ListRequest::default()
                } else {
                    parse!(ListRequest)
                };
                if !token.may("list") {
                    return error(403, "this token may not list");
                }
                // The listing is cut to what the token may see.
                let allowed = token
                    .prefixes
                    .iter()
                    .any(|p| r.prefix.starts_with(p.as_str()) || p.starts_with(&r.prefix));
                if !allowed {
                    return error(403, format!("this token may not list {:?}", r.prefix));
                }
                self.list(token, &r.prefix, r.cursor).await
            }
            _ => error(404, format!("no endpoint {route}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn presign(
        &self,
        method: PresignMethod,
        key: &str,
        expires: Duration,
        content_type: Option<&str>,
        metadata: &ferry::Metadata,
        cond: &Precondition,
        host: Option<&str>,
    ) -> Result<ferry::remote::s3::Presigned, String> {
        match &self.config.target {
            SignerTarget::Upstream(remote) => remote
                .presign(method, key, expires, content_type, metadata, cond)
                .await
                .map_err(|e| e.to_string()),
            SignerTarget::Local => {
                let endpoint =
                    host.map_or_else(|| self.config.public_url.clone(), |h| format!("http://{h}"));
                self.local_signer(endpoint)?
                    .presign(method, key, expires, content_type, metadata, cond)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// This gateway as an S3 remote with no prefix, reached at `endpoint`:
    /// the same presigning code, against its own key pair.
    fn local_signer(&self, endpoint: String) -> Result<Arc<S3Remote>, String> {
        let mut made = self
            .local_signers
            .lock()
            .map_err(|_| "the signer cache lock is poisoned".to_owned())?;
        if let Some(s) = made.get(&endpoint) {
            return Ok(s.clone());
        }
        let signer = Arc::new(
            S3Remote::new(&ferry::remote::s3::S3Config {
                bucket: self.name.clone(),
                prefix: String::new(),
                endpoint: Some(endpoint.clone()),
                region: "us-east-1".into(),
                path_style: true,
                access_key_id: Some(self.access_key_id.clone()),
                secret_access_key: Some(self.secret_access_key.clone()),
                session_token: None,
                connect_timeout: Duration::from_secs(10),
                io_timeout: Duration::from_secs(60),
            })
            .map_err(|e| e.to_string())?,
        );
        if made.len() >= LOCAL_SIGNERS {
            made.clear();
        }
        made.insert(endpoint, signer.clone());
        Ok(signer)
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Resp {
        use ferry::remote::Remote as _;
        if let Err(e) = signable(key) {
            return error(400, e);
        }
        match &self.config.target {
            SignerTarget::Upstream(remote) => {
                let cond = if_match.map_or(Precondition::None, |e| {
                    Precondition::IfMatch(format!("\"{}\"", e.trim_matches('"')))
                });
                match remote.delete(key, cond).await {
                    Ok(()) => http_status(204),
                    Err(e) if e.kind == ferry::remote::RemoteErrorKind::PreconditionFailed => {
                        error(412, format!("{key:?} has another ETag"))
                    }
                    Err(e) => error(502, e.to_string()),
                }
            }
            SignerTarget::Local if key.starts_with(ferry::RESERVED_PREFIX) => {
                let cond = if_match.map_or(crate::store::ReservedCondition::None, |e| {
                    crate::store::ReservedCondition::IfMatch(e.trim_matches('"').to_owned())
                });
                match self.entry.reserved_delete(key, &cond) {
                    Ok(()) => http_status(204),
                    Err(crate::store::ReservedError::PreconditionFailed) => {
                        error(412, format!("{key:?} has another ETag"))
                    }
                    Err(crate::store::ReservedError::Db(e)) => error(500, e),
                }
            }
            SignerTarget::Local => {
                if let Some(want) = if_match {
                    // Conditional on the content hash the ETag names, in the
                    // index's transaction.
                    let hash = match self.bucket.head(key).await {
                        Ok(m) if self.entry.etag(key, &m.hash) == want.trim_matches('"') => m.hash,
                        Ok(_) | Err(ferry::Error::NotFound { .. }) => {
                            return error(412, format!("{key:?} has another ETag"))
                        }
                        Err(e) => return error(500, e.to_string()),
                    };
                    return match self.bucket.delete_if(key, hash).await {
                        Ok(()) => http_status(204),
                        Err(ferry::Error::PreconditionFailed { .. }) => {
                            error(412, format!("{key:?} has another ETag"))
                        }
                        Err(e) => error(500, e.to_string()),
                    };
                }
                match self.bucket.delete(key).await {
                    // Deleting what is not there succeeds, as on S3.
                    Ok(_) | Err(ferry::Error::NotFound { .. }) => http_status(204),
                    Err(e) => error(500, e.to_string()),
                }
            }
        }
    }

    async fn list(&self, token: &Token, prefix: &str, cursor: Option<String>) -> Resp {
        use ferry::remote::Remote as _;
        let mut items = Vec::new();
        let next;
        match &self.config.target {
            SignerTarget::Upstream(remote) => match remote.list_page(prefix, cursor).await {
                Ok(page) => {
                    // ferry's own objects only when asked for by prefix
                    // (a replica syncing through the signer reads its
                    // journal so).
                    let own = prefix.starts_with(ferry::RESERVED_PREFIX);
                    for o in page.objects {
                        if (!own && o.key.starts_with(ferry::RESERVED_PREFIX))
                            || !token.covers(&o.key)
                        {
                            continue;
                        }
                        let etag = o.etag.trim_matches('"');
                        items.push(listed(&o.key, o.size, etag, o.modified_ms.map(from_ms)));
                    }
                    next = page.next;
                }
                Err(e) => return error(502, e.to_string()),
            },
            SignerTarget::Local if prefix.starts_with(ferry::RESERVED_PREFIX) => {
                match self.entry.reserved_list(prefix, cursor.as_deref(), 1000) {
                    Ok((rows, more)) => {
                        next = more.then(|| rows.last().map(|r| r.0.clone())).flatten();
                        for (key, size, etag, ms) in rows {
                            if !token.covers(&key) {
                                continue;
                            }
                            items.push(listed(&key, size, &etag, Some(from_ms(ms))));
                        }
                    }
                    Err(crate::store::ReservedError::Db(e)) => return error(500, e),
                    Err(crate::store::ReservedError::PreconditionFailed) => {
                        return error(500, "listing failed")
                    }
                }
            }
            SignerTarget::Local => {
                let mut opts = ferry::ListOptions::prefix(prefix).limit(1000);
                opts.start_after = cursor;
                match self.bucket.list(opts).await {
                    Ok(page) => {
                        for m in page.objects {
                            if !token.covers(&m.key) {
                                continue;
                            }
                            let etag = self.entry.etag(&m.key, &m.hash);
                            items.push(listed(&m.key, m.size, &etag, Some(m.modified)));
                        }
                        next = page.next_start_after;
                    }
                    Err(e) => return error(500, e.to_string()),
                }
            }
        }
        let mut out = json!({ "items": items });
        if let Some(c) = next {
            out["cursor"] = json!(c);
        }
        answer(200, out)
    }

    async fn state(&self, key: &str) -> Resp {
        let meta = match self.bucket.head(key).await {
            Ok(m) => m,
            Err(ferry::Error::NotFound { .. }) => return error(404, format!("no object {key:?}")),
            Err(e) => return error(500, e.to_string()),
        };
        let residency = match self.bucket.residency(key) {
            Ok(r) => r,
            Err(e) => return error(500, e.to_string()),
        };
        let state = meta.state.to_string();
        let uploading = matches!(meta.state, ferry::SyncState::Dirty);
        // Displayable: the bytes are here, or already on the remote.
        let on_remote = matches!(
            meta.state,
            ferry::SyncState::Synced | ferry::SyncState::Stale
        );
        answer(
            200,
            json!({
                "state": state,
                "cached": residency.cached,
                "pinned": residency.pinned,
                "uploading": uploading,
                "canDisplay": residency.cached || on_remote,
            }),
        )
    }

    fn events(&self) -> Resp {
        let mut events = self.bucket.subscribe();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            // A first comment so clients see the stream open.
            if tx
                .send(Bytes::from_static(b": ferry events\n\n"))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let line = match events.recv().await {
                    Ok(e) => match serde_json::to_value(&e) {
                        Ok(mut v) => {
                            if let Some(o) = v.as_object_mut() {
                                o.insert("time".into(), json!(rfc3339(SystemTime::now())));
                            }
                            format!("data: {v}\n\n")
                        }
                        Err(_) => continue,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        format!("event: lagged\ndata: {{\"dropped\":{n}}}\n\n")
                    }
                    Err(_) => return,
                };
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>))
        });
        let mut r = http::Response::new(s3s::Body::from(s3s::dto::StreamingBlob::wrap(stream)));
        let h = r.headers_mut();
        h.insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        h.insert("cache-control", http::HeaderValue::from_static("no-cache"));
        r
    }
}

/// Whether the signer may sign for `key`: a valid ferry key, or one of
/// ferry's own objects under `.ferry/` (a replica syncing through the
/// signer writes its journal and probes there).
fn signable(key: &str) -> Result<(), String> {
    let rest = key.strip_prefix(ferry::RESERVED_PREFIX).unwrap_or(key);
    // The rule alone: the error's own text would say "invalid key" again.
    ferry::validate_key(rest).map_err(|e| format!("invalid key {key:?}: {}", e.rule))
}

/// One item of a `/v1/list` answer.
fn listed(key: &str, size: u64, etag: &str, modified: Option<SystemTime>) -> serde_json::Value {
    json!({ "key": key, "size": size, "etag": etag, "lastModified": modified.map(rfc3339) })
}

fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn http_status(status: u16) -> Resp {
    let mut r = http::Response::new(s3s::Body::empty());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod signable_tests {
    /// Issue 24, 7.11: the signer's refusal said "invalid key" twice.
    #[test]
    fn a_bad_key_says_invalid_key_once() {
        for key in ["a/../b", ".ferry/../x"] {
            let Err(e) = super::signable(key) else {
                panic!("{key:?} was accepted");
            };
            assert_eq!(e.matches("invalid key").count(), 1, "{e}");
            assert!(e.contains(&format!("{key:?}")), "{e}");
        }
    }
}
