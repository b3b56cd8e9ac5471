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
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret the client sends (`Authorization: Bearer …`).
    pub token: String,
    /// What it may touch, each a folder (`photos/`), an exact key, or
    /// `""` (every key but ferry's own); ferry's own objects only through
    /// a prefix naming `.ferry/`.
    pub prefixes: Vec<String>,
    /// `upload`, `download`, `delete`, `list`, `status`; empty: all.
    pub verbs: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("prefixes", &self.prefixes)
            .field("verbs", &self.verbs)
            .finish_non_exhaustive()
    }
}

impl Token {
    fn may(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }

    fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| crate::access::covers(p, key))
    }

    /// Whether it covers every key of the bucket (ferry's own aside).
    fn whole(&self) -> bool {
        self.prefixes.iter().any(String::is_empty)
    }

    /// What a listing of `prefix` walks for this token, in key order: the
    /// parts of `prefix` its prefixes cover, none inside another. Keys
    /// under `.ferry/` are listed only when `prefix` names them.
    fn scopes(&self, prefix: &str) -> Vec<Scope> {
        let own = prefix.starts_with(ferry::RESERVED_PREFIX);
        let mut scopes: Vec<Scope> = Vec::new();
        for t in &self.prefixes {
            if t.starts_with(ferry::RESERVED_PREFIX) != own {
                continue;
            }
            if t.is_empty() || (t.ends_with('/') && prefix.starts_with(t.as_str())) {
                scopes.push(Scope::Folder(prefix.to_owned()));
            } else if t.starts_with(prefix) {
                scopes.push(if t.ends_with('/') {
                    Scope::Folder(t.clone())
                } else {
                    Scope::Key(t.clone())
                });
            }
        }
        scopes.sort();
        scopes.dedup();
        let folders: Vec<String> = scopes
            .iter()
            .filter_map(|s| match s {
                Scope::Folder(f) => Some(f.clone()),
                Scope::Key(_) => None,
            })
            .collect();
        scopes.retain(|s| {
            !folders.iter().any(|f| match s {
                Scope::Folder(g) => g != f && g.starts_with(f.as_str()),
                Scope::Key(k) => k.starts_with(f.as_str()),
            })
        });
        scopes.sort_by(|a, b| a.name().cmp(b.name()));
        scopes
    }
}

/// A part of a listing a token may see.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Every key under this prefix.
    Folder(String),
    /// This key.
    Key(String),
}

impl Scope {
    fn name(&self) -> &str {
        match self {
            Scope::Folder(s) | Scope::Key(s) => s,
        }
    }
}

/// Where a `/v1/list` continues: the scope and the cursor within it
/// (opaque to callers: base64 of JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    scope: usize,
    inner: Option<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(s: &str) -> Option<Self> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        serde_json::from_slice(&raw).ok()
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

    pub(crate) async fn handle(&self, req: http::Request<s3s::Body>) -> Resp {
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
                self.status(&token).await
            }
            (http::Method::GET, "/v1/events") => {
                if !token.may("status") {
                    return error(403, "this token may not read events");
                }
                self.events(token)
            }
            (http::Method::GET, r) if object_state_key(r).is_some() => {
                let raw = object_state_key(r).unwrap_or_default();
                let key = match percent_encoding::percent_decode_str(raw).decode_utf8() {
                    Ok(k) => k.into_owned(),
                    Err(_) => return error(400, "the key is not UTF-8"),
                };
                if let Err(e) = signable(&key) {
                    return error(400, e);
                }
                if !token.may("status") || !token.covers(&key) {
                    return error(403, format!("this token may not read {key:?}"));
                }
                self.state(&key).await
            }
            (http::Method::POST, r) => {
                // Read at most the limit: a larger body is refused as it
                // arrives, not after.
                let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
                let body = match limited.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e)
                        if e.downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some() =>
                    {
                        return closing(error(413, "the request body is over 64 KiB"))
                    }
                    Err(e) => return error(400, format!("reading the request: {e}")),
                };
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
                // The listing walks only what the token may see.
                let scopes = token.scopes(&r.prefix);
                if scopes.is_empty() {
                    return error(403, format!("this token may not list {:?}", r.prefix));
                }
                let cursor = match r.cursor.as_deref().filter(|c| !c.is_empty()) {
                    None => Cursor {
                        scope: 0,
                        inner: None,
                    },
                    Some(c) => match Cursor::decode(c) {
                        Some(c) if c.scope < scopes.len() => c,
                        _ => return error(400, "the cursor is not one this gateway gave"),
                    },
                };
                self.list(token, &scopes, cursor).await
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
                    Err(crate::store::ReservedError::Full) => error(507, "full"),
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

    /// One page of a token's listing: the scope the cursor is in, from
    /// where it stopped; the cursor names the next page, if any.
    async fn list(&self, token: &Token, scopes: &[Scope], cursor: Cursor) -> Resp {
        let Some(scope) = scopes.get(cursor.scope) else {
            return error(400, "the cursor is not one this gateway gave");
        };
        let (prefix, exact) = match scope {
            Scope::Folder(p) => (p.as_str(), false),
            Scope::Key(k) => (k.as_str(), true),
        };
        let (rows, inner) = match self.page(prefix, cursor.inner).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let items: Vec<serde_json::Value> = rows
            .into_iter()
            .filter(|(key, ..)| token.covers(key) && (!exact || key == prefix))
            .map(|(key, size, etag, modified)| listed(&key, size, &etag, modified))
            .collect();
        let next = match inner.filter(|_| !exact) {
            Some(inner) => Some(Cursor {
                scope: cursor.scope,
                inner: Some(inner),
            }),
            None => (cursor.scope + 1 < scopes.len()).then_some(Cursor {
                scope: cursor.scope + 1,
                inner: None,
            }),
        };
        let mut out = json!({ "items": items });
        if let Some(c) = next {
            out["cursor"] = json!(c.encode());
        }
        answer(200, out)
    }

    /// One page of the target's keys under `prefix` after `cursor`:
    /// `(key, size, etag, modified)` and where the next page starts.
    #[allow(clippy::type_complexity)]
    async fn page(
        &self,
        prefix: &str,
        cursor: Option<String>,
    ) -> Result<
        (
            Vec<(String, u64, String, Option<SystemTime>)>,
            Option<String>,
        ),
        Resp,
    > {
        use ferry::remote::Remote as _;
        let own = prefix.starts_with(ferry::RESERVED_PREFIX);
        match &self.config.target {
            SignerTarget::Upstream(remote) => match remote.list_page(prefix, cursor).await {
                Ok(page) => Ok((
                    page.objects
                        .into_iter()
                        // ferry's own objects only when asked for by prefix.
                        .filter(|o| own || !o.key.starts_with(ferry::RESERVED_PREFIX))
                        .map(|o| {
                            let etag = o.etag.trim_matches('"').to_owned();
                            (o.key, o.size, etag, o.modified_ms.map(from_ms))
                        })
                        .collect(),
                    page.next,
                )),
                Err(e) => Err(error(502, e.to_string())),
            },
            SignerTarget::Local if own => {
                match self.entry.reserved_list(prefix, cursor.as_deref(), 1000) {
                    Ok((rows, more)) => {
                        let next = more.then(|| rows.last().map(|r| r.0.clone())).flatten();
                        Ok((
                            rows.into_iter()
                                .map(|(k, size, etag, ms)| (k, size, etag, Some(from_ms(ms))))
                                .collect(),
                            next,
                        ))
                    }
                    Err(crate::store::ReservedError::Db(e)) => Err(error(500, e)),
                    Err(_) => Err(error(500, "listing failed")),
                }
            }
            SignerTarget::Local => {
                let mut opts = ferry::ListOptions::prefix(prefix).limit(1000);
                opts.start_after = cursor;
                match self.bucket.list(opts).await {
                    Ok(page) => Ok((
                        page.objects
                            .into_iter()
                            .map(|m| {
                                let etag = self.entry.etag(&m.key, &m.hash);
                                (m.key, m.size, etag, Some(m.modified))
                            })
                            .collect(),
                        page.next_start_after,
                    )),
                    Err(e) => Err(error(500, e.to_string())),
                }
            }
        }
    }

    /// The bucket's status as a token may see it: whole for a token
    /// covering every key (without the remote's URL); else the counts of
    /// the keys it covers.
    async fn status(&self, token: &Token) -> Resp {
        let status = match self.bucket.status().await {
            Ok(s) => s,
            Err(e) => return error(500, e.to_string()),
        };
        let mut out = serde_json::to_value(&status).unwrap_or_default();
        let Some(o) = out.as_object_mut() else {
            return error(500, "the status could not be encoded");
        };
        o.remove("remote");
        if token.whole() {
            return answer(200, out);
        }
        for k in [
            "pending_delete",
            "orphan",
            "cache_size",
            "failed",
            "missing_on_remote",
        ] {
            o.remove(k);
        }
        let mut counts = [0u64; 5];
        for scope in token.scopes("") {
            let (prefix, exact) = match &scope {
                Scope::Folder(p) => (p.clone(), false),
                Scope::Key(k) => (k.clone(), true),
            };
            let mut after = None;
            loop {
                let mut opts = ferry::ListOptions::prefix(prefix.clone()).limit(1000);
                opts.start_after = after.take();
                let page = match self.bucket.list(opts).await {
                    Ok(p) => p,
                    Err(e) => return error(500, e.to_string()),
                };
                for m in &page.objects {
                    if exact && m.key != prefix {
                        continue;
                    }
                    counts[0] += 1;
                    match m.state {
                        ferry::SyncState::Synced => counts[1] += 1,
                        ferry::SyncState::Dirty => counts[2] += 1,
                        ferry::SyncState::Stale => counts[3] += 1,
                        ferry::SyncState::Conflict => counts[4] += 1,
                        _ => {}
                    }
                }
                match page.next_start_after {
                    Some(n) if !exact => after = Some(n),
                    _ => break,
                }
            }
        }
        for (name, n) in ["total", "synced", "dirty", "stale", "conflicts"]
            .into_iter()
            .zip(counts)
        {
            o.insert(name.into(), json!(n));
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

    fn events(&self, token: Token) -> Resp {
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
                            if !visible(&token, &mut v) {
                                continue;
                            }
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

/// The key of `/v1/objects/{key}/state` (still percent-encoded), or
/// `None` for another route.
fn object_state_key(route: &str) -> Option<&str> {
    route
        .strip_prefix("/v1/objects/")?
        .strip_suffix("/state")
        .filter(|k| !k.is_empty() && !k.contains('/'))
}

/// Whether an event (as JSON) is one `token` may see, cut to what it
/// covers: anything naming a key it does not cover goes (the event, or
/// the entry of a list in it); a token that does not cover every key sees
/// no error text (it may name other keys).
fn visible(token: &Token, v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::String(k)) = o.get("key") {
                if !token.covers(k) {
                    return false;
                }
            }
            if !token.whole() {
                for (name, value) in o.iter_mut() {
                    if name.contains("error") && value.is_string() {
                        *value = json!("(hidden from this token)");
                    }
                }
            }
            for value in o.values_mut() {
                if let serde_json::Value::Array(items) = value {
                    items.retain_mut(|i| visible(token, i));
                } else {
                    visible(token, value);
                }
            }
            true
        }
        serde_json::Value::Array(items) => {
            items.retain_mut(|i| visible(token, i));
            true
        }
        _ => true,
    }
}

/// The largest body the app endpoints read.
const MAX_BODY: usize = 64 << 10;

/// `r` with `Connection: close` (its request body was not read to the end).
fn closing(mut r: Resp) -> Resp {
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
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
