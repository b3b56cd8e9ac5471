//! WebDAV (`webdav://HOST/PATH`, `webdavs://` for HTTPS): Nextcloud,
//! ownCloud, Apache `mod_dav`, a NAS, WsgiDAV.
//!
//! Plain HTTP (reqwest) with basic auth: the WebDAV clients measured
//! rewrite paths (OpenDAL trims whitespace and collapses `//`), and the
//! protocol needs five methods. Every key segment is sent percent-escaped,
//! so the path on the server is the key byte for byte; keys a path cannot
//! hold (empty, `.` or `..` segments, a trailing `/`, segments over 255
//! bytes) are refused by name, as a folder remote refuses them, and so are
//! keys with `?` or `;`, which WsgiDAV cuts a `MOVE` destination at.
//!
//! A write never shows a half-written or metadata-less object:
//! 1. `PUT` the body to `.ferry/tmp/<device>-<random>` under the remote
//!    path (collections are made with `MKCOL` when the server says they
//!    are missing);
//! 2. `PROPPATCH` one dead property, `{urn:x-ferry:}object`, holding the
//!    content type, the metadata (ferry's and the user's), the size, the
//!    server's ETag of the uploaded file and a random version token;
//! 3. `MOVE` it onto the key, with `Overwrite: F` for a create (the server
//!    answers 412 when anything is there) and `Overwrite: T` otherwise.
//!
//! The version tag ferry records is `"<server ETag>+<token>"`: servers
//! whose ETag is a file's mtime in whole seconds (WsgiDAV, Apache) give two
//! same-sized writes within a second the same ETag, and the token tells
//! them apart. The dead property is trusted only while the server's ETag
//! and size still match the ones it records: another client's `PUT` keeps
//! dead properties, and then the object is described as a foreign one.
//!
//! Servers that store no dead properties (nginx's DAV modules, rclone,
//! several NAS boxes) get a **sidecar** instead: step 2 is skipped, and
//! after the `MOVE` the same JSON is written to `.ferry/meta/<key>`
//! (`docs/design.md`, "WebDAV sidecars v1"). The first write that finds
//! `PROPPATCH` refused writes the marker `.ferry/webdav.json`, which tells
//! every reader to look for sidecars.
//!
//! `If-Match` on writes and deletes is checked by a `PROPFIND` just before
//! the `MOVE` or `DELETE` (the check-then-act race of emulated stores,
//! `docs/design.md` §5); creates rely on `Overwrite: F`, which servers
//! enforce. A key that is a collection on the server is never overwritten
//! or deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::remote::{
    Capabilities, MetadataPlace, Precondition, PutRequest, Remote, RemoteBody, RemoteError,
    RemoteErrorKind, RemoteObject, RemotePage, RemoteReader, TransferProgress,
};

/// Everything but unreserved characters and `/` is escaped in a path.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// The namespace of ferry's dead property.
pub const NAMESPACE: &str = "urn:x-ferry:";
/// Where writes are staged, under the remote path.
pub const STAGING: &str = ".ferry/tmp/";
/// Where the sidecars live on servers without dead properties
/// (`.ferry/meta/<key>`).
pub const SIDECARS: &str = ".ferry/meta/";
/// The marker saying that this remote keeps sidecars.
pub const MARKER: &str = ".ferry/webdav.json";
/// The sidecar format's version (`docs/design.md`, "WebDAV sidecars").
pub const SIDECAR_VERSION: u32 = 1;
/// Sidecars read at once while a listing page is described.
const SIDECAR_READS: usize = 8;
/// Objects per listing page (at least; a collection is listed whole).
const PAGE: usize = 1000;
const PROPS: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:F="urn:x-ferry:"><D:prop><D:resourcetype/><D:getetag/><D:getcontentlength/><D:getlastmodified/><D:getcontenttype/><F:object/></D:prop></D:propfind>"#;

/// A WebDAV remote's settings.
#[derive(Clone, Default)]
pub struct WebDavConfig {
    /// The collection's URL: `http(s)://HOST[:PORT]/PATH` (unescaped path).
    pub url: String,
    /// Basic-auth user name (`None`: no authorisation).
    pub user: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// Without progress once connected.
    pub io_timeout: Duration,
}

impl std::fmt::Debug for WebDavConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDavConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What ferry keeps in its dead property, or in a sidecar.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Stamp {
    /// The sidecar format's version (absent in a dead property).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    /// The server's ETag of the uploaded file (unquoted).
    etag: String,
    /// Its size.
    size: u64,
    /// A random token, new at every write.
    token: String,
    content_type: String,
    metadata: BTreeMap<String, String>,
}

/// One `<response>` of a multistatus answer.
#[derive(Debug, Default, Clone)]
struct Entry {
    /// The path, decoded, relative to the remote path (collections end in `/`).
    rel: String,
    collection: bool,
    etag: Option<String>,
    size: Option<u64>,
    modified: Option<String>,
    content_type: Option<String>,
    object: Option<String>,
    /// The first status other than 2xx or 404 a propstat carried.
    refused: Option<String>,
}

/// Where this server keeps ferry's description of each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not known yet: read as dead properties, and the marker is looked
    /// for again at each listing.
    Unknown,
    /// Seen stored (a `PROPPATCH` that succeeded, or a property read back).
    DeadProperty,
    /// The marker is there, or a `PROPPATCH` was refused.
    Sidecar,
}

/// A remote on a WebDAV collection.
pub struct WebDavRemote {
    http: reqwest::Client,
    /// `webdav://host/path`, for messages.
    display: String,
    /// Scheme and authority (`http://host:port`).
    origin: String,
    /// The collection's path segments, unescaped.
    segments: Vec<String>,
    auth: Option<String>,
    /// Collections known to exist (escaped paths).
    made: Mutex<HashSet<String>>,
    /// Held while collections are made.
    making: tokio::sync::Mutex<()>,
    /// Where objects are described.
    place: Mutex<Place>,
}

impl std::fmt::Debug for WebDavRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDavRemote")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

/// An ETag without quotes or the weak marker.
fn bare(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

/// How a version tag made from a file's time and size starts.
const SYNTHESIZED: &str = "lastmod-";

/// The server's tag of a file's version: its ETag, or, from servers whose
/// `PROPFIND` gives none (nginx's dav-ext 3.0.0), `lastmod-<ms>-<size>`
/// from its modification time and size (what nginx's own ETag holds).
fn server_tag(e: &Entry) -> String {
    let etag = bare(e.etag.as_deref().unwrap_or_default());
    if !etag.is_empty() {
        return etag.to_owned();
    }
    match e.modified.as_deref().and_then(super::http::parse_http_date) {
        Some(ms) => format!("{SYNTHESIZED}{ms}-{}", e.size.unwrap_or(0)),
        None => String::new(),
    }
}

impl WebDavRemote {
    /// A remote for `cfg` (no request is made).
    pub fn new(cfg: &WebDavConfig) -> Result<Self, RemoteError> {
        let url = cfg.url.trim().to_owned();
        let fail = |detail: String| RemoteError::new(RemoteErrorKind::Terminal, &url, detail);
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| fail(format!("{url:?} is not an http:// or https:// URL")))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(fail("the WebDAV URL needs a host".into()));
        }
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if segments.iter().any(|s| s == "." || s == "..") {
            return Err(fail("the path may not contain `.` or `..` segments".into()));
        }
        let auth = match (&cfg.user, &cfg.password) {
            (Some(u), p) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{u}:{}", p.as_deref().unwrap_or_default()))
            )),
            (None, Some(_)) => {
                return Err(fail(
                    "a WebDAV password was given without a user name (FERRY_WEBDAV_USER)".into(),
                ))
            }
            (None, None) => None,
        };
        let http = super::http::builder(cfg.connect_timeout, cfg.io_timeout)
            // Below the keep-alive limit of common servers (Apache: 5 s),
            // so a pooled connection is not reused as the server closes it.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| fail(format!("building the HTTP client: {e}")))?;
        let display = format!(
            "{}://{authority}/{}",
            if scheme == "https" {
                "webdavs"
            } else {
                "webdav"
            },
            segments.join("/")
        );
        Ok(WebDavRemote {
            http,
            display,
            origin: format!("{scheme}://{authority}"),
            segments,
            auth,
            made: Mutex::new(HashSet::new()),
            making: tokio::sync::Mutex::new(()),
            place: Mutex::new(Place::Unknown),
        })
    }

    /// The escaped absolute path of `rel` (a key, or a collection ending in `/`).
    fn path(&self, rel: &str) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            out.push_str(&utf8_percent_encode(s, PATH).to_string());
        }
        out.push('/');
        out.push_str(&utf8_percent_encode(rel, PATH).to_string());
        out
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{}", self.origin, self.path(rel))
    }

    /// The collection path, decoded, with a trailing `/`.
    fn root(&self) -> String {
        let mut out = String::from("/");
        for s in &self.segments {
            out.push_str(s);
            out.push('/');
        }
        out
    }

    fn error(&self, kind: RemoteErrorKind, detail: impl Into<String>) -> RemoteError {
        RemoteError::new(kind, self.endpoint(), detail)
    }

    async fn status_error(&self, resp: reqwest::Response, what: &str) -> RemoteError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let code = status.as_u16();
        let kind = match code {
            404 => RemoteErrorKind::NotFound,
            412 => RemoteErrorKind::PreconditionFailed,
            408 | 423 | 429 | 500..=506 | 508..=599 => RemoteErrorKind::Retryable,
            _ => RemoteErrorKind::Terminal,
        };
        let why = match code {
            401 => {
                ": the server refused the credentials (FERRY_WEBDAV_USER, FERRY_WEBDAV_PASSWORD)"
            }
            403 => ": the server forbids it",
            507 => ": the server is out of space",
            _ => "",
        };
        // A short line of the body, when it is text and not a whole page.
        let body = text.trim();
        let body = if body.is_empty() || body.len() > 200 || body.starts_with('<') {
            String::new()
        } else {
            format!(": {body}")
        };
        self.error(kind, format!("{what}: HTTP {status}{why}{body}"))
    }

    fn send_error(&self, e: reqwest::Error, what: &str) -> RemoteError {
        super::http::transport_error(self.endpoint(), e, what)
    }

    /// Sends a request; any answer comes back, success or not.
    async fn raw(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<reqwest::Body>,
        what: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
        let mut req = self.http.request(method, url);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| self.send_error(e, what))
    }

    /// `PROPFIND` of `rel` at `depth`: `None` when nothing is there.
    async fn propfind(&self, rel: &str, depth: u8) -> Result<Option<Vec<Entry>>, RemoteError> {
        let what = if rel.is_empty() {
            "listing the remote path".to_owned()
        } else {
            format!("reading {rel:?}")
        };
        let resp = self
            .raw(
                "PROPFIND",
                &self.url(rel),
                &[
                    ("depth", depth.to_string()),
                    ("content-type", "application/xml".into()),
                ],
                Some(PROPS.into()),
                &what,
            )
            .await?;
        match resp.status().as_u16() {
            207 => {}
            404 => return Ok(None),
            // A file where a collection is asked for (`a/` when `a` is a
            // file: 409 on WsgiDAV, 400 on Apache).
            400 | 409 if rel.ends_with('/') => return Ok(None),
            _ => return Err(self.status_error(resp, &what).await),
        }
        let text = resp.text().await.map_err(|e| self.send_error(e, &what))?;
        self.entries(&text)
            .map(Some)
            .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("{what}: {e}")))
    }

    /// The entries of a multistatus answer, relative to the remote path
    /// (entries outside it are dropped).
    fn entries(&self, xml: &str) -> Result<Vec<Entry>, String> {
        let root = self.root();
        let mut out = Vec::new();
        for (href, mut entry) in parse_multistatus(xml)? {
            // An absolute URL or an absolute path, percent-escaped.
            let path = match href.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
                None => href,
            };
            let Ok(path) = percent_decode_str(&path).decode_utf8() else {
                // Not UTF-8: no ferry key can name it.
                continue;
            };
            let mut path = path.into_owned();
            if entry.collection && !path.ends_with('/') {
                path.push('/');
            }
            if path == root || path == root.trim_end_matches('/') {
                entry.rel = String::new();
            } else if let Some(rel) = path.strip_prefix(&root) {
                entry.rel = rel.to_owned();
            } else {
                continue;
            }
            out.push(entry);
        }
        if out.iter().any(|e| e.object.is_some()) {
            self.learned(Place::DeadProperty);
        }
        Ok(out)
    }

    fn place(&self) -> Place {
        self.place.lock().map(|p| *p).unwrap_or(Place::Unknown)
    }

    /// Records where objects are described; a sidecar remote stays one.
    fn learned(&self, place: Place) {
        if let Ok(mut p) = self.place.lock() {
            if *p != Place::Sidecar {
                *p = place;
            }
        }
    }

    /// Looks for the marker while the place is unknown.
    async fn learn_place(&self) -> Result<Place, RemoteError> {
        if self.place() != Place::Unknown {
            return Ok(self.place());
        }
        if self.small_get(MARKER).await?.is_some() {
            self.learned(Place::Sidecar);
        }
        Ok(self.place())
    }

    /// The body of a small file, `None` when it is not there.
    async fn small_get(&self, rel: &str) -> Result<Option<String>, RemoteError> {
        let what = format!("reading {rel:?}");
        let resp = self.raw("GET", &self.url(rel), &[], None, &what).await?;
        match resp.status().as_u16() {
            200 => resp
                .text()
                .await
                .map(Some)
                .map_err(|e| self.send_error(e, &what)),
            // Not there, or under something that is not a collection.
            404 | 409 => Ok(None),
            _ => Err(self.status_error(resp, &what).await),
        }
    }

    /// Writes a small file with a plain `PUT`, making its collections when
    /// they are missing.
    async fn small_put(&self, rel: &str, body: String, what: &str) -> Result<(), RemoteError> {
        for attempt in 0..2 {
            let resp = self
                .raw(
                    "PUT",
                    &self.url(rel),
                    &[("content-type", "application/json".into())],
                    Some(body.clone().into()),
                    what,
                )
                .await?;
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Ok(());
            }
            if matches!(status, 404 | 409 | 500) && attempt == 0 {
                let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
                self.make_collections(&format!("{dir}/")).await?;
                continue;
            }
            return Err(self.status_error(resp, what).await);
        }
        unreachable!("the loop returns")
    }

    /// Reads the sidecars of the files among `entries` into their
    /// `object`, on a sidecar remote.
    async fn read_sidecars(&self, entries: &mut [Entry]) -> Result<(), RemoteError> {
        if self.place() != Place::Sidecar {
            return Ok(());
        }
        use futures::StreamExt as _;
        let wanted: Vec<(usize, String)> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.collection && !e.rel.is_empty())
            .map(|(i, e)| (i, format!("{SIDECARS}{}", e.rel)))
            .collect();
        let read: Vec<(usize, Result<Option<String>, RemoteError>)> = futures::stream::iter(wanted)
            .map(|(i, rel)| async move { (i, self.small_get(&rel).await) })
            .buffer_unordered(SIDECAR_READS)
            .collect()
            .await;
        for (i, text) in read {
            entries[i].object = text?;
        }
        Ok(())
    }

    /// An entry as ferry describes it (`None` for a collection).
    fn describe(&self, e: &Entry) -> Option<RemoteObject> {
        if e.collection {
            return None;
        }
        let server = server_tag(e);
        let size = e.size.unwrap_or(0);
        let stamp = e
            .object
            .as_deref()
            .and_then(|o| serde_json::from_str::<Stamp>(o).ok())
            .filter(|s| bare(&s.etag) == server && s.size == size && !server.is_empty());
        let mut obj = match &stamp {
            Some(s) => {
                let mut o = RemoteObject::listed(&e.rel, format!("\"{server}+{}\"", s.token), size)
                    .with_metadata(s.metadata.clone());
                o.content_type = Some(s.content_type.clone());
                o
            }
            None => {
                let mut o = RemoteObject::listed(&e.rel, format!("\"{server}\""), size)
                    .with_metadata(Vec::new());
                o.content_type = e.content_type.clone();
                o
            }
        };
        obj.modified_ms = e.modified.as_deref().and_then(super::http::parse_http_date);
        Some(obj)
    }

    /// The entry at `key` itself (`None`: nothing there), with its
    /// sidecar on a sidecar remote.
    async fn entry(&self, key: &str) -> Result<Option<Entry>, RemoteError> {
        self.learn_place().await?;
        let Some(mut entries) = self.propfind(key, 0).await? else {
            return Ok(None);
        };
        entries.truncate(1);
        self.read_sidecars(&mut entries).await?;
        Ok(entries.into_iter().next())
    }

    /// The error for a remote path that is not on the server.
    fn base_missing(&self) -> RemoteError {
        self.error(
            RemoteErrorKind::Terminal,
            format!(
                "the remote folder {} is not on the server (an unmounted share looks like this); ferry makes it only when the remote is set up (`ferry init`, `ferry remote set`), never during a sync",
                self.root()
            ),
        )
    }

    /// Whether the remote path is a collection on the server (remembered
    /// once seen).
    async fn base_exists(&self) -> Result<bool, RemoteError> {
        let base = self.path("");
        if self.made.lock().map(|m| m.contains(&base)).unwrap_or(false) {
            return Ok(true);
        }
        let there = self
            .propfind("", 0)
            .await?
            .is_some_and(|v| v.iter().any(|e| e.rel.is_empty() && e.collection));
        if there {
            if let Ok(mut m) = self.made.lock() {
                m.insert(base);
            }
        }
        Ok(there)
    }

    /// `MKCOL` of each escaped collection path in `wanted` (ending in
    /// `/`), in order, skipping those known to exist.
    async fn mkcols(&self, wanted: Vec<String>) -> Result<bool, RemoteError> {
        // One writer at a time: servers answer two MKCOLs of one path at
        // once with a 500 (WsgiDAV: "File exists").
        let _one = self.making.lock().await;
        let mut made = false;
        for path in wanted {
            if self.made.lock().map(|m| m.contains(&path)).unwrap_or(false) {
                continue;
            }
            let what = format!("making the collection {path}");
            let url = format!("{}{path}", self.origin);
            let resp = self.raw("MKCOL", &url, &[], None, &what).await?;
            match resp.status().as_u16() {
                // Made (rclone also answers 201 for a collection that is
                // there), or something is there already (a file there
                // fails the write that follows, which names the key).
                200..=299 => made = true,
                405 => {}
                // 403 on a collection that is there (the mount point of a
                // share), or a 5xx from another process making it at the
                // same moment: fine if a collection is there now.
                _ => {
                    let there = self
                        .raw("PROPFIND", &url, &[("depth", "0".into())], None, &what)
                        .await?;
                    if there.status().as_u16() != 207 {
                        return Err(self.status_error(resp, &what).await);
                    }
                }
            }
            if let Ok(mut m) = self.made.lock() {
                m.insert(path);
            }
        }
        Ok(made)
    }

    /// Makes every collection below the remote path down to `rel_dir`
    /// (ending in `/`). The remote path itself must be there: it is made
    /// only by [`Remote::create_base`].
    async fn make_collections(&self, rel_dir: &str) -> Result<(), RemoteError> {
        if !self.base_exists().await? {
            return Err(self.base_missing());
        }
        let mut acc = self.path("").trim_end_matches('/').to_owned();
        let mut wanted: Vec<String> = Vec::new();
        for s in rel_dir.split('/').filter(|s| !s.is_empty()) {
            acc.push('/');
            acc.push_str(&utf8_percent_encode(s, PATH).to_string());
            wanted.push(format!("{acc}/"));
        }
        self.mkcols(wanted).await.map(|_| ())
    }

    /// The body as reqwest sends it (reporting to `progress`).
    async fn body(
        &self,
        body: &RemoteBody,
        progress: &TransferProgress,
        what: &str,
    ) -> Result<reqwest::Body, RemoteError> {
        super::http::request_body(body, progress)
            .await
            .map(|(b, _)| b)
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))
    }

    /// Uploads the staged copy; returns the server's ETag of it.
    async fn upload(
        &self,
        tmp: &str,
        body: &RemoteBody,
        req: &PutRequest,
        what: &str,
    ) -> Result<String, RemoteError> {
        let length = super::http::body_len(body).await;
        for attempt in 0..2 {
            let resp = self
                .raw(
                    "PUT",
                    &self.url(tmp),
                    &[
                        ("content-type", req.content_type.clone()),
                        ("content-length", length.to_string()),
                    ],
                    Some(self.body(body, &req.progress, what).await?),
                    what,
                )
                .await?;
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|e| bare(e).to_owned());
                return match etag {
                    Some(e) if !e.is_empty() => Ok(e),
                    // No ETag in the answer: ask for it.
                    _ => self
                        .propfind(tmp, 0)
                        .await?
                        .and_then(|v| v.into_iter().next())
                        .map(|e| server_tag(&e))
                        .filter(|e| !e.is_empty())
                        .ok_or_else(|| {
                            self.error(
                                RemoteErrorKind::Terminal,
                                format!("{what}: the server gives files no ETag, and ferry needs one to tell versions apart"),
                            )
                        }),
                };
            }
            // The staging collection is missing: 409 (RFC 4918, Apache),
            // 404 (rclone's `x/net/webdav`), 500 (nginx). Made (or found
            // there), then once more.
            if matches!(status, 404 | 409 | 500) && attempt == 0 {
                self.made.lock().map(|mut m| m.clear()).ok();
                self.make_collections(STAGING).await?;
                continue;
            }
            return Err(self.status_error(resp, what).await);
        }
        unreachable!("the loop returns")
    }

    /// Sets ferry's dead property on `rel`: `false` when the server
    /// stores none.
    async fn set_stamp(&self, rel: &str, stamp: &Stamp, what: &str) -> Result<bool, RemoteError> {
        let json = serde_json::to_string(stamp)
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
        let xml = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:F="{NAMESPACE}"><D:set><D:prop><F:object>{}</F:object></D:prop></D:set></D:propertyupdate>"#,
            quick_xml::escape::escape(json.as_str())
        );
        let resp = self
            .raw(
                "PROPPATCH",
                &self.url(rel),
                &[("content-type", "application/xml".into())],
                Some(xml.into()),
                what,
            )
            .await?;
        // Refused: a 207 naming a 403 (rclone, WsgiDAV without its
        // property manager), or no PROPPATCH at all (nginx: 405).
        match resp.status().as_u16() {
            207 => {
                let text = resp.text().await.map_err(|e| self.send_error(e, what))?;
                let entries = parse_multistatus(&text)
                    .map_err(|e| self.error(RemoteErrorKind::Retryable, format!("{what}: {e}")))?;
                Ok(entries.into_iter().all(|(_, e)| e.refused.is_none()))
            }
            200 | 204 => Ok(true),
            405 | 501 => Ok(false),
            _ => Err(self.status_error(resp, what).await),
        }
    }

    /// Moves the staged copy onto `key`.
    async fn move_into_place(
        &self,
        tmp: &str,
        key: &str,
        overwrite: bool,
        what: &str,
    ) -> Result<(), RemoteError> {
        for attempt in 0..2 {
            let resp = self
                .raw(
                    "MOVE",
                    &self.url(tmp),
                    &[
                        ("destination", self.url(key)),
                        ("overwrite", if overwrite { "T" } else { "F" }.into()),
                    ],
                    None,
                    what,
                )
                .await?;
            match resp.status().as_u16() {
                200..=299 => return Ok(()),
                412 => {
                    return Err(self.error(
                        RemoteErrorKind::PreconditionFailed,
                        format!("{key:?}: precondition failed"),
                    ))
                }
                // A missing parent: 409 (RFC 4918, WsgiDAV), 403 (rclone's
                // `x/net/webdav`), 500 (Apache), 404 (others). Made (or
                // found there), then once more.
                403 | 404 | 409 | 500 if attempt == 0 => {
                    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                    self.make_collections(&format!("{dir}/")).await?;
                }
                409 => {
                    return Err(self.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: a parent of {key:?} is a file on the server, so it cannot hold this key"),
                    ))
                }
                _ => return Err(self.status_error(resp, what).await),
            }
        }
        unreachable!("the loop returns")
    }

    /// The staged write after the upload: the stamp, the check, the move.
    async fn finish_put(
        &self,
        tmp: &str,
        req: &PutRequest,
        server_etag: String,
        size: u64,
        cond: &Precondition,
        what: &str,
    ) -> Result<String, RemoteError> {
        let stamp = Stamp {
            v: None,
            etag: server_etag,
            size,
            token: format!("{:016x}", rand::random::<u64>()),
            content_type: req.content_type.clone(),
            metadata: req.all_metadata().into_iter().collect(),
        };
        let sidecar = match self.place() {
            Place::Sidecar => true,
            Place::Unknown | Place::DeadProperty => {
                if self.set_stamp(tmp, &stamp, what).await? {
                    self.learned(Place::DeadProperty);
                    false
                } else {
                    // No dead properties: sidecars from now on, for every
                    // reader too.
                    let marker = serde_json::json!({"metadata": "sidecar", "v": SIDECAR_VERSION});
                    self.small_put(MARKER, marker.to_string(), what).await?;
                    self.learned(Place::Sidecar);
                    true
                }
            }
        };
        let overwrite = match cond {
            Precondition::IfAbsent => false,
            Precondition::None | Precondition::IfMatch(_) => {
                let current = self.entry(&req.key).await?;
                if current.as_ref().is_some_and(|e| e.collection) {
                    return Err(self.error(
                        RemoteErrorKind::Terminal,
                        format!("{what}: the server has a collection (folder) named {:?}, which a file cannot replace", req.key),
                    ));
                }
                if let Precondition::IfMatch(_) = cond {
                    let etag = current
                        .as_ref()
                        .and_then(|e| self.describe(e))
                        .map(|o| o.etag);
                    cond.check(etag.as_deref(), &self.endpoint(), &req.key)?;
                }
                true
            }
        };
        let side = format!("{SIDECARS}{}", req.key);
        if sidecar && overwrite {
            // The old version's sidecar goes first: until the new one is
            // written, the object reads as a foreign file, never as the
            // old version with new bytes.
            let _ = self
                .raw("DELETE", &self.url(&side), &[], None, what)
                .await?;
        }
        self.move_into_place(tmp, &req.key, overwrite, what).await?;
        if sidecar {
            let json = serde_json::to_string(&Stamp {
                v: Some(SIDECAR_VERSION),
                ..stamp.clone()
            })
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
            self.small_put(&side, json, what).await?;
        }
        Ok(format!("\"{}+{}\"", stamp.etag, stamp.token))
    }

    /// A fresh staging name for a write by `device`.
    fn staging_name(device: &str) -> String {
        let device: String = device
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        format!("{STAGING}{device}-{:016x}", rand::random::<u64>())
    }

    /// GET of `key` at the version `obj` describes, with extra headers.
    async fn fetch(
        &self,
        key: &str,
        obj: &RemoteObject,
        extra: &[(&str, String)],
        what: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        // The version just described: the answer's ETag must be its tag.
        // Not `If-Match`: Apache's ETag is weak for a second after a write,
        // and a weak ETag never matches one.
        let server = obj
            .etag
            .trim_matches('"')
            .split('+')
            .next()
            .unwrap_or_default();
        let resp = self.raw("GET", &self.url(key), extra, None, what).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, what).await);
        }
        let sent = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|e| bare(e).to_owned());
        match sent {
            Some(sent)
                if !server.is_empty() && !server.starts_with(SYNTHESIZED) && sent != server =>
            {
                Err(self.error(
                    RemoteErrorKind::Retryable,
                    format!("{what}: it changed while it was read"),
                ))
            }
            _ => Ok(resp),
        }
    }
}

#[async_trait::async_trait]
impl Remote for WebDavRemote {
    fn endpoint(&self) -> String {
        format!("{} at {}{}", self.display, self.origin, self.path(""))
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
        let mut pending: Vec<String> = match token {
            Some(t) => serde_json::from_str(&t).map_err(|_| {
                self.error(RemoteErrorKind::Terminal, "listing: a malformed page token")
            })?,
            // Start at the deepest collection the prefix names.
            None => vec![prefix
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"))],
        };
        self.learn_place().await?;
        let mut objects = Vec::new();
        while let Some(dir) = pending.pop() {
            let Some(entries) = self.propfind(&dir, 1).await? else {
                // A missing remote path is not an empty one: it may be a
                // share that is not mounted.
                if dir.is_empty() {
                    return Err(self.base_missing());
                }
                continue;
            };
            let mut files = Vec::new();
            for e in entries {
                if e.rel == dir || e.rel.is_empty() {
                    continue;
                }
                if e.collection {
                    let inside = e.rel.starts_with(prefix) || prefix.starts_with(&e.rel);
                    if inside && e.rel != STAGING && e.rel != SIDECARS {
                        pending.push(e.rel);
                    }
                } else if e.rel.starts_with(prefix) && e.rel != MARKER {
                    files.push(e);
                }
            }
            self.read_sidecars(&mut files).await?;
            objects.extend(files.iter().filter_map(|e| self.describe(e)));
            if objects.len() >= PAGE {
                break;
            }
        }
        let next = if pending.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&pending).unwrap_or_default())
        };
        Ok(RemotePage { objects, next })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        Ok(self.entry(key).await?.and_then(|e| self.describe(&e)))
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let what = format!("reading {key:?}");
        let obj = self.head(key).await?.ok_or_else(|| {
            self.error(RemoteErrorKind::NotFound, format!("{what}: no such object"))
        })?;
        let resp = self.fetch(key, &obj, &[], &what).await?;
        Ok((obj, super::http::response_reader(resp)))
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        let Some(obj) = self.head(key).await? else {
            return Ok(None);
        };
        if len == 0 || obj.size == 0 {
            return Ok(Some((obj, Bytes::new())));
        }
        let what = format!("reading {key:?}");
        let range = [("range", format!("bytes=0-{}", len - 1))];
        let resp = self.fetch(key, &obj, &range, &what).await?;
        // A server that ignores Range sends everything: keep the head.
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.send_error(e, &what))?
        {
            out.extend_from_slice(&chunk);
            if out.len() as u64 >= len {
                break;
            }
        }
        out.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(Some((obj, out.into())))
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
        let tmp = Self::staging_name(&req.device);
        let size = super::http::body_len(&body).await;
        let result = match self.upload(&tmp, &body, req, &what).await {
            Ok(server) => self.finish_put(&tmp, req, server, size, &cond, &what).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Best effort: what is left is removed by `cleanup`.
            let _ = self.raw("DELETE", &self.url(&tmp), &[], None, &what).await;
        }
        result
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let what = format!("deleting {key:?}");
        let current = self.entry(key).await?;
        let obj = current.as_ref().and_then(|e| self.describe(e));
        if let Precondition::IfMatch(_) = cond {
            cond.check(obj.as_ref().map(|o| o.etag.as_str()), &self.endpoint(), key)?;
        }
        // Nothing there, or a collection: no object to delete.
        if obj.is_none() {
            return Ok(());
        }
        let resp = self.raw("DELETE", &self.url(key), &[], None, &what).await?;
        match resp.status().as_u16() {
            200..=299 | 404 => {}
            _ => return Err(self.status_error(resp, &what).await),
        }
        if self.place() == Place::Sidecar {
            // A sidecar left behind describes nothing (its file is gone).
            let side = self.url(&format!("{SIDECARS}{key}"));
            let _ = self.raw("DELETE", &side, &[], None, &what).await;
        }
        Ok(())
    }

    fn metadata_place(&self) -> MetadataPlace {
        match self.place() {
            Place::Sidecar => MetadataPlace::Sidecar,
            Place::Unknown | Place::DeadProperty => MetadataPlace::DeadProperty,
        }
    }

    fn refuses(&self, key: &str) -> Option<String> {
        if let Some(why) = super::folder::folder_refuses(key) {
            return Some(format!("{why}; WebDAV paths are file paths on the server"));
        }
        if key.contains(['?', ';']) {
            // Measured: WsgiDAV 4.4 decodes the Destination header of a
            // MOVE before parsing it as a URL, so `a?b` lands at `a`.
            return Some(
                "it holds `?` or `;`, which some WebDAV servers cut a MOVE destination at (ferry places every write with MOVE)".into(),
            );
        }
        None
    }

    async fn create_base(&self) -> Result<bool, RemoteError> {
        if self.base_exists().await? {
            return Ok(false);
        }
        let mut acc = String::new();
        let mut wanted = Vec::new();
        for s in &self.segments {
            acc.push('/');
            acc.push_str(&utf8_percent_encode(s, PATH).to_string());
            wanted.push(format!("{acc}/"));
        }
        self.mkcols(wanted).await?;
        match self.base_exists().await? {
            true => Ok(true),
            false => Err(self.base_missing()),
        }
    }

    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        let Some(entries) = self.propfind(STAGING, 1).await? else {
            return Ok(0);
        };
        let mine = Self::staging_name(device);
        let mine = &mine[..mine.len() - 16];
        let mut removed = 0;
        for e in entries {
            if !e.collection && e.rel.starts_with(mine) {
                let what = format!("removing the staged write {}", e.rel);
                let resp = self
                    .raw("DELETE", &self.url(&e.rel), &[], None, &what)
                    .await?;
                if resp.status().is_success() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The `(href, entry)` pairs of a multistatus answer, with the properties
/// of the propstats whose status is 200 (others only set `refused`).
fn parse_multistatus(xml: &str) -> Result<Vec<(String, Entry)>, String> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;

    #[derive(Default)]
    struct Props {
        collection: bool,
        etag: Option<String>,
        size: Option<u64>,
        modified: Option<String>,
        content_type: Option<String>,
        object: Option<String>,
        status: String,
    }

    let mut reader = quick_xml::reader::NsReader::from_str(xml);
    let mut out = Vec::new();
    let mut href: Option<String> = None;
    let mut entry = Entry::default();
    let mut props: Option<Props> = None;
    let mut text = String::new();
    let mut ferry_element = false;
    let bad =
        |e: &dyn std::fmt::Display| format!("an answer that is not a WebDAV multistatus: {e}");
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| bad(&e))?;
        let ours = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == NAMESPACE.as_bytes());
        match event {
            Event::Start(s) => {
                text.clear();
                ferry_element = ours;
                match s.local_name().as_ref() {
                    b"response" => {
                        href = None;
                        entry = Entry::default();
                    }
                    b"propstat" => props = Some(Props::default()),
                    _ => {}
                }
            }
            Event::Empty(s) if s.local_name().as_ref() == b"collection" => {
                if let Some(p) = props.as_mut() {
                    p.collection = true;
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content().map_err(|e| bad(&e))?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e))? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| bad(&e))?;
                    let v = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| bad(&format!("unknown entity &{name};")))?;
                    text.push_str(v);
                }
            }
            Event::End(e) => {
                let value = std::mem::take(&mut text);
                match (e.local_name().as_ref(), props.as_mut()) {
                    (b"href", None) => href = Some(value.trim().to_owned()),
                    (b"collection", Some(p)) => p.collection = true,
                    (b"getetag", Some(p)) => p.etag = Some(value.trim().to_owned()),
                    (b"getcontentlength", Some(p)) => p.size = value.trim().parse().ok(),
                    (b"getlastmodified", Some(p)) => p.modified = Some(value.trim().to_owned()),
                    (b"getcontenttype", Some(p)) => p.content_type = Some(value.trim().to_owned()),
                    (b"object", Some(p)) if (ours || ferry_element) && !value.is_empty() => {
                        p.object = Some(value);
                    }
                    (b"status", Some(p)) => p.status = value.trim().to_owned(),
                    (b"propstat", Some(_)) => {
                        let p = props.take().unwrap_or_default();
                        let code = p.status.split_whitespace().nth(1).unwrap_or_default();
                        if code == "200" {
                            entry.collection |= p.collection;
                            entry.etag = entry.etag.or(p.etag);
                            entry.size = entry.size.or(p.size);
                            entry.modified = entry.modified.or(p.modified);
                            entry.content_type = entry.content_type.or(p.content_type);
                            entry.object = entry.object.or(p.object);
                        } else if !code.starts_with('2') && code != "404" && entry.refused.is_none()
                        {
                            entry.refused = Some(p.status);
                        }
                    }
                    (b"response", _) => {
                        if let Some(h) = href.take() {
                            out.push((h, std::mem::take(&mut entry)));
                        }
                    }
                    _ => {}
                }
                ferry_element = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_parses_with_any_prefix_and_entities() {
        let xml = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:x="urn:x-ferry:">
 <d:response><d:href>/dav/a%20b/</d:href>
  <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
  <d:propstat><d:prop><x:object/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>
 </d:response>
 <d:response><d:href>http://h:1/dav/a%20b/c&amp;d</d:href>
  <d:propstat><d:prop><d:getetag>"e1"</d:getetag><d:getcontentlength>5</d:getcontentlength>
   <x:object>{"a":"&lt;&#x41;"}</x:object></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
 </d:response>
</d:multistatus>"#;
        let got = parse_multistatus(xml).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "/dav/a%20b/");
        assert!(got[0].1.collection);
        assert!(got[0].1.refused.is_none());
        assert_eq!(got[1].0, "http://h:1/dav/a%20b/c&d");
        assert_eq!(got[1].1.etag.as_deref(), Some("\"e1\""));
        assert_eq!(got[1].1.size, Some(5));
        assert_eq!(got[1].1.object.as_deref(), Some(r#"{"a":"<A"}"#));
    }

    #[test]
    fn refused_properties_are_reported() {
        let xml = r#"<m:multistatus xmlns:m="DAV:"><m:response><m:href>/x</m:href><m:propstat><m:prop><f:object xmlns:f="urn:x-ferry:"/></m:prop><m:status>HTTP/1.1 403 Forbidden</m:status></m:propstat></m:response></m:multistatus>"#;
        let got = parse_multistatus(xml).unwrap();
        assert_eq!(got[0].1.refused.as_deref(), Some("HTTP/1.1 403 Forbidden"));
    }

    #[test]
    fn hrefs_map_to_keys_under_the_remote_path() {
        let r = WebDavRemote::new(&WebDavConfig {
            url: "http://h:1/dav/a b".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.path("x y/z"), "/dav/a%20b/x%20y/z");
        let xml = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/dav/a%20b/x%20y/z</d:href></d:response><d:response><d:href>/dav/a%20bc/z</d:href></d:response><d:response><d:href>/dav/a%20b</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        let rels: Vec<String> = r.entries(xml).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(rels, ["x y/z", ""]);
    }
}
