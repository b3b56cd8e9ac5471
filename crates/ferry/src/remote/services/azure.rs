//! Azure Blob Storage through its REST API (`az://ACCOUNT/CONTAINER/PREFIX`).
//!
//! Plain HTTP (reqwest) with Shared Key signing (HMAC-SHA256 from aws-lc)
//! or a SAS token: Microsoft's Rust SDK has no Shared Key credential, and
//! every other client measured rewrites paths. Blob names are sent as fully
//! percent-escaped paths, so every key ferry accepts arrives exactly.
//!
//! - Version tag: the blob's ETag. Conditional writes are
//!   `If-None-Match: *` (create; Azure answers 409 BlobAlreadyExists) and
//!   `If-Match` (replace, and on delete).
//! - Metadata: Azure's names must be C# identifiers, so each ferry name is
//!   stored as `m_` + the name with every character other than a–z and
//!   0–9 written `_xx` (its hex code): `ferry-hash` → `m_ferry_2dhash`.
//!   Values are percent-encoded outside printable ASCII. Names another
//!   client wrote without the `m_` form are read as they are, lowercased.
//! - Keys with `\` are refused: Azure turns it into `/`.
//! - Writes up to [`AzureConfig::single_put_limit`] (256 MiB by default)
//!   are one Put Blob streamed from the local file; larger ones are staged
//!   as blocks of [`BLOCK`] bytes, one in memory at a time, and committed
//!   by a Put Block List that carries the content type, metadata and
//!   precondition (so the object appears whole or not at all). Blocks a
//!   failed write staged are never committed; Azure drops them after a
//!   week.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// Everything but unreserved characters and `/` is escaped in a blob path.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// Query values: everything but unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Azure's limit on a blob name, in characters.
pub const MAX_NAME: usize = 1024;
const API_VERSION: &str = "2021-08-06";
const PAGE: u32 = 1000;
/// Bytes per staged block of a large write.
pub const BLOCK: usize = 8 << 20;
/// The default largest write sent as one Put Blob.
pub const SINGLE_PUT_LIMIT: u64 = 256 << 20;

/// How requests are authorised.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum AzureAuth {
    /// No authorisation (a public container).
    #[default]
    Anonymous,
    /// The account key (base64), for Shared Key signing.
    SharedKey(String),
    /// A SAS token (the query string, with or without a leading `?`).
    Sas(String),
}

impl std::fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AzureAuth::Anonymous => "Anonymous",
            AzureAuth::SharedKey(_) => "SharedKey(<redacted>)",
            AzureAuth::Sas(_) => "Sas(<redacted>)",
        })
    }
}

/// An Azure remote's settings.
#[derive(Debug, Clone, Default)]
pub struct AzureConfig {
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
    /// Key prefix (no surrounding slashes; may be empty).
    pub prefix: String,
    /// Blob service URL (`http://127.0.0.1:10000/devstoreaccount1` for
    /// Azurite); `https://ACCOUNT.blob.core.windows.net` when `None`.
    pub endpoint: Option<String>,
    /// How requests are authorised.
    pub auth: AzureAuth,
    /// Writes larger than this are staged as blocks (0: the default,
    /// [`SINGLE_PUT_LIMIT`]).
    pub single_put_limit: u64,
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// Without progress once connected.
    pub io_timeout: Duration,
}

/// A remote on an Azure Blob container.
#[derive(Debug)]
pub struct AzureRemote {
    http: reqwest::Client,
    /// Blob service URL, no trailing `/`.
    service: String,
    /// The service URL's path (`/devstoreaccount1` on Azurite, else empty).
    service_path: String,
    account: String,
    container: String,
    prefix: String,
    key: Option<aws_lc_rs::hmac::Key>,
    sas: Option<String>,
    single_put_limit: u64,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<BlobItem>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlobItem {
    name: String,
    properties: Properties,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, serde::Deserialize)]
struct Properties {
    #[serde(rename = "Last-Modified", default)]
    last_modified: Option<String>,
    #[serde(rename = "Etag")]
    etag: String,
    #[serde(rename = "Content-Length", default)]
    content_length: u64,
    #[serde(rename = "Content-Type", default)]
    content_type: Option<String>,
}

impl AzureRemote {
    /// A remote for `cfg` (no request is made).
    pub fn new(cfg: &AzureConfig) -> Result<Self, RemoteError> {
        let service = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", cfg.account))
            .trim_end_matches('/')
            .to_owned();
        let fail = |detail: String| RemoteError::new(RemoteErrorKind::Terminal, &service, detail);
        let Some(rest) = service
            .strip_prefix("http://")
            .or_else(|| service.strip_prefix("https://"))
        else {
            return Err(fail(format!(
                "the endpoint {service:?} is not an http:// or https:// URL"
            )));
        };
        let service_path = rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default();
        if cfg.account.is_empty() || cfg.container.is_empty() {
            return Err(fail("az:// needs an account and a container".into()));
        }
        let (key, sas) = match &cfg.auth {
            AzureAuth::Anonymous => (None, None),
            AzureAuth::SharedKey(k) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .map_err(|_| fail("the storage account key is not base64".into()))?;
                (
                    Some(aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA256,
                        &raw,
                    )),
                    None,
                )
            }
            AzureAuth::Sas(t) => (None, Some(t.trim_start_matches('?').to_owned())),
        };
        let http = super::http::client(cfg.connect_timeout, cfg.io_timeout).map_err(fail)?;
        Ok(AzureRemote {
            http,
            service,
            service_path,
            account: cfg.account.clone(),
            container: cfg.container.clone(),
            prefix: cfg.prefix.trim_matches('/').to_owned(),
            key,
            sas,
            single_put_limit: if cfg.single_put_limit == 0 {
                SINGLE_PUT_LIMIT
            } else {
                cfg.single_put_limit
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

    /// The escaped path of a blob (from the service URL on).
    fn blob_path(&self, key: &str) -> String {
        // `/` inside the name stays a `/`: Azure keeps it, and escaping it
        // would not change the name.
        format!(
            "{}/{}/{}",
            self.service_path,
            utf8_percent_encode(&self.container, QUERY),
            utf8_percent_encode(&self.full(key), PATH)
        )
    }

    fn error(&self, kind: RemoteErrorKind, detail: impl Into<String>) -> RemoteError {
        RemoteError::new(kind, self.endpoint(), detail)
    }

    fn send_error(&self, e: reqwest::Error, what: &str) -> RemoteError {
        super::http::transport_error(self.endpoint(), e, what)
    }

    async fn status_error(&self, resp: reqwest::Response, what: &str) -> RemoteError {
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        let message = text
            .split_once("<Message>")
            .and_then(|(_, m)| m.split_once("</Message>"))
            .map(|(m, _)| m.lines().next().unwrap_or(m).to_owned())
            .unwrap_or_default();
        let kind = match (status, code.as_str()) {
            (404, _) => RemoteErrorKind::NotFound,
            (412, _) | (409, "BlobAlreadyExists") => RemoteErrorKind::PreconditionFailed,
            (408 | 429 | 500..=599, _) => RemoteErrorKind::Retryable,
            _ => RemoteErrorKind::Terminal,
        };
        self.error(kind, format!("{what}: HTTP {status} {code}: {message}"))
    }

    /// Sends a request to `path` (escaped, from the host on) with `query`
    /// (unescaped pairs) and `headers`, signed.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        mut headers: Vec<(String, String)>,
        body: Option<(reqwest::Body, u64)>,
        what: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        headers.push(("x-ms-date".into(), http_date(SystemTime::now())));
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        let length = body.as_ref().map(|(_, n)| *n);
        if let Some(n) = length {
            headers.push(("content-length".into(), n.to_string()));
        }
        let mut url = format!(
            "{}{path}",
            self.service.trim_end_matches(&self.service_path)
        );
        let mut pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY)))
            .collect();
        if let Some(sas) = &self.sas {
            pairs.push(sas.clone());
        }
        if !pairs.is_empty() {
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        if let Some(key) = &self.key {
            let signature = self.sign(key, &method, path, query, &headers, length);
            headers.push((
                "authorization".into(),
                format!("SharedKey {}:{signature}", self.account),
            ));
        }
        let mut req = self.http.request(method, url);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some((b, _)) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| self.send_error(e, what))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(resp, what).await)
        }
    }

    /// The Shared Key signature of a request (Azure's "Shared Key
    /// authorization" string-to-sign, version 2009-09-19 and later).
    fn sign(
        &self,
        key: &aws_lc_rs::hmac::Key,
        method: &reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(String, String)],
        length: Option<u64>,
    ) -> String {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        ms.sort();
        let mut canonical = String::new();
        for (n, v) in ms {
            canonical.push_str(&format!("{n}:{v}\n"));
        }
        canonical.push_str(&format!("/{}{path}", self.account));
        let mut params: Vec<(String, &str)> = query
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        params.sort();
        for (k, v) in params {
            canonical.push_str(&format!("\n{k}:{v}"));
        }
        let content_length = match length {
            Some(0) | None => String::new(),
            Some(n) => n.to_string(),
        };
        let to_sign = format!(
            "{}\n\n\n{content_length}\n\n{}\n\n\n{}\n{}\n\n{}\n{canonical}",
            method.as_str(),
            header("content-type"),
            header("if-match"),
            header("if-none-match"),
            header("range"),
        );
        let tag = aws_lc_rs::hmac::sign(key, to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    fn describe_headers(&self, key: &str, resp: &reqwest::Response) -> RemoteObject {
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let size = get("x-ms-blob-content-length")
            .or_else(|| {
                get("content-range").and_then(|r| r.rsplit_once('/').map(|(_, t)| t.to_owned()))
            })
            .or_else(|| get("content-length"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let meta = h.iter().filter_map(|(n, v)| {
            let name = n.as_str().strip_prefix("x-ms-meta-")?;
            Some((name.to_owned(), v.to_str().ok()?.to_owned()))
        });
        let mut obj = RemoteObject::listed(key, quoted(&get("etag").unwrap_or_default()), size)
            .with_metadata(from_azure_metadata(meta));
        obj.content_type = get("content-type");
        obj.modified_ms = get("last-modified")
            .as_deref()
            .and_then(super::http::parse_http_date);
        obj
    }

    /// Stages the body as blocks and commits them with the write's
    /// headers (content type, metadata, precondition) in one Put Block List.
    async fn put_blocks(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        headers: Vec<(String, String)>,
        what: &str,
    ) -> Result<String, RemoteError> {
        use tokio::io::AsyncReadExt;
        let local = |e: std::io::Error| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: reading the local file: {e}"),
            )
        };
        let (head, file) = match body {
            RemoteBody::Bytes(b) => (b, None),
            RemoteBody::File(f) => (Bytes::new(), Some(f)),
            RemoteBody::Framed { head, file } => (head, Some(file)),
        };
        let file: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match file {
            Some(f) => Box::new(tokio::fs::File::open(&f).await.map_err(local)?),
            None => Box::new(tokio::io::empty()),
        };
        let mut reader = std::io::Cursor::new(head).chain(file);
        let path = self.blob_path(&req.key);
        let mut ids = Vec::new();
        let mut sent = req.progress.attempt();
        loop {
            let mut block = vec![0u8; BLOCK];
            let mut filled = 0;
            while filled < BLOCK {
                let n = reader.read(&mut block[filled..]).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 && !ids.is_empty() {
                break;
            }
            block.truncate(filled);
            // Ids of one blob must all have the same length.
            let id = base64::engine::general_purpose::STANDARD
                .encode(format!("ferry-block-{:08}", ids.len()));
            let query = [("blockid", id.clone()), ("comp", "block".to_owned())];
            self.send(
                reqwest::Method::PUT,
                &path,
                &query,
                vec![],
                Some((reqwest::Body::from(block), filled as u64)),
                what,
            )
            .await?;
            sent.add(filled as u64);
            ids.push(id);
            if filled < BLOCK {
                break;
            }
        }
        let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in &ids {
            list.push_str(&format!("<Latest>{id}</Latest>"));
        }
        list.push_str("</BlockList>");
        // The object's own headers move to their Put Block List names.
        let committed: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(n, _)| n != "x-ms-blob-type")
            .map(|(n, v)| {
                if n == "content-type" {
                    ("x-ms-blob-content-type".to_owned(), v)
                } else {
                    (n, v)
                }
            })
            .collect();
        let n = list.len() as u64;
        let resp = self
            .send(
                reqwest::Method::PUT,
                &path,
                &[("comp", "blocklist".to_owned())],
                committed,
                Some((reqwest::Body::from(list), n)),
                what,
            )
            .await?;
        Ok(quoted(
            resp.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        ))
    }

    /// Creates the container; one that exists already is fine.
    pub async fn create_container(&self) -> Result<(), RemoteError> {
        let path = format!(
            "{}/{}",
            self.service_path,
            utf8_percent_encode(&self.container, QUERY)
        );
        let query = [("restype", "container".to_owned())];
        match self
            .send(
                reqwest::Method::PUT,
                &path,
                &query,
                vec![],
                Some((reqwest::Body::from(Vec::new()), 0)),
                "creating the container",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.detail.contains("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn conditions(cond: &Precondition) -> Vec<(String, String)> {
        match cond {
            Precondition::None => vec![],
            Precondition::IfAbsent => vec![("if-none-match".into(), "*".into())],
            Precondition::IfMatch(etag) => vec![("if-match".into(), etag.clone())],
        }
    }
}

#[async_trait::async_trait]
impl Remote for AzureRemote {
    fn endpoint(&self) -> String {
        format!(
            "az://{}/{}/{} at {}",
            self.account, self.container, self.prefix, self.service
        )
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
        let mut query = vec![
            ("comp", "list".to_owned()),
            ("include", "metadata".to_owned()),
            ("maxresults", PAGE.to_string()),
            ("prefix", format!("{root}{prefix}")),
            ("restype", "container".to_owned()),
        ];
        if let Some(t) = token {
            query.push(("marker", t));
        }
        let path = format!(
            "{}/{}",
            self.service_path,
            utf8_percent_encode(&self.container, QUERY)
        );
        let resp = self
            .send(reqwest::Method::GET, &path, &query, vec![], None, "listing")
            .await?;
        let text = resp
            .text()
            .await
            .map_err(|e| self.send_error(e, "listing"))?;
        let listing: EnumerationResults = quick_xml::de::from_str(&text).map_err(|e| {
            self.error(
                RemoteErrorKind::Retryable,
                format!("listing: an answer that is not a blob listing: {e}"),
            )
        })?;
        let objects = listing
            .blobs
            .blob
            .into_iter()
            .filter_map(|b| {
                let key = b.name.strip_prefix(&root)?.to_owned();
                let mut obj = RemoteObject::listed(
                    &key,
                    quoted(&b.properties.etag),
                    b.properties.content_length,
                )
                .with_metadata(from_azure_metadata(b.metadata.unwrap_or_default()));
                obj.content_type = b.properties.content_type;
                obj.modified_ms = b
                    .properties
                    .last_modified
                    .as_deref()
                    .and_then(super::http::parse_http_date);
                Some(obj)
            })
            .collect();
        Ok(RemotePage {
            objects,
            next: listing.next_marker.filter(|m| !m.is_empty()),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        let what = format!("reading {key:?}");
        match self
            .send(
                reqwest::Method::HEAD,
                &self.blob_path(key),
                &[],
                vec![],
                None,
                &what,
            )
            .await
        {
            Ok(resp) => Ok(Some(self.describe_headers(key, &resp))),
            Err(e) if e.kind == RemoteErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let what = format!("reading {key:?}");
        let resp = self
            .send(
                reqwest::Method::GET,
                &self.blob_path(key),
                &[],
                vec![],
                None,
                &what,
            )
            .await?;
        let obj = self.describe_headers(key, &resp);
        Ok((obj, super::http::response_reader(resp)))
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        if len == 0 {
            return Ok(self.head(key).await?.map(|o| (o, Bytes::new())));
        }
        let what = format!("reading {key:?}");
        let range = vec![("x-ms-range".to_owned(), format!("bytes=0-{}", len - 1))];
        let resp = match self
            .send(
                reqwest::Method::GET,
                &self.blob_path(key),
                &[],
                range,
                None,
                &what,
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.kind == RemoteErrorKind::NotFound => return Ok(None),
            // An empty blob has no byte 0.
            Err(e) if e.detail.contains("HTTP 416") => {
                return Ok(self.head(key).await?.map(|o| (o, Bytes::new())))
            }
            Err(e) => return Err(e),
        };
        let obj = self.describe_headers(key, &resp);
        let mut bytes = resp.bytes().await.map_err(|e| self.send_error(e, &what))?;
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
        let mut headers = vec![
            ("x-ms-blob-type".to_owned(), "BlockBlob".to_owned()),
            ("content-type".to_owned(), req.content_type.clone()),
        ];
        for (name, value) in req.all_metadata() {
            headers.push((
                format!("x-ms-meta-{}", to_azure_name(&name)),
                to_azure_value(&value),
            ));
        }
        headers.extend(Self::conditions(&cond));
        if super::http::body_len(&body).await > self.single_put_limit {
            return self.put_blocks(req, body, headers, &what).await;
        }
        let content = match body {
            RemoteBody::Bytes(b) => {
                let n = b.len() as u64;
                Ok((reqwest::Body::from(b), n))
            }
            RemoteBody::File(file) => {
                super::http::file_body(Bytes::new(), &file, Bytes::new(), &req.progress).await
            }
            RemoteBody::Framed { head, file } => {
                super::http::file_body(head, &file, Bytes::new(), &req.progress).await
            }
        }
        .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
        let resp = self
            .send(
                reqwest::Method::PUT,
                &self.blob_path(&req.key),
                &[],
                headers,
                Some(content),
                &what,
            )
            .await?;
        Ok(quoted(
            resp.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        ))
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let what = format!("deleting {key:?}");
        match self
            .send(
                reqwest::Method::DELETE,
                &self.blob_path(key),
                &[],
                Self::conditions(&cond),
                None,
                &what,
            )
            .await
        {
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
        if key.contains('\\') {
            return Some("Azure Blob Storage turns `\\` into `/` in blob names".into());
        }
        let full = self.full(key);
        let chars = full.chars().count();
        if chars > MAX_NAME {
            return Some(format!(
                "with the remote prefix it is {chars} characters, over Azure's {MAX_NAME}-character limit on blob names"
            ));
        }
        None
    }
}

/// An ETag as HTTP headers carry it: quoted (listings give it bare).
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

/// A ferry metadata name as an Azure one (a C# identifier): `m_` and the
/// name with every character but `a`–`z` and `0`–`9` as `_xx`.
pub fn to_azure_name(name: &str) -> String {
    let mut out = String::from("m_");
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The ferry name of an Azure metadata name (`None`: not in ferry's form).
pub fn from_azure_name(name: &str) -> Option<String> {
    let rest = name.to_ascii_lowercase();
    let rest = rest.strip_prefix("m_")?;
    let mut out = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = rest.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Values travel percent-encoded outside printable ASCII (and `%` itself).
fn to_azure_value(value: &str) -> String {
    const VALUE: &AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    // Header parsing trims spaces and tabs at either end: those go escaped.
    let body = value.trim_matches([' ', '\t']);
    let start = value.len() - value.trim_start_matches([' ', '\t']).len();
    let escape = |s: &str| s.replace(' ', "%20").replace('\t', "%09");
    if body.is_empty() {
        return escape(value);
    }
    format!(
        "{}{}{}",
        escape(&value[..start]),
        utf8_percent_encode(body, VALUE),
        escape(&value[start + body.len()..])
    )
}

fn from_azure_metadata(
    all: impl IntoIterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    all.into_iter()
        .map(|(name, value)| match from_azure_name(&name) {
            Some(ferry_name) => (
                ferry_name,
                percent_encoding::percent_decode_str(&value)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .unwrap_or(value),
            ),
            None => (name.to_ascii_lowercase(), value),
        })
}

/// An HTTP date (`Tue, 01 Dec 2026 10:00:00 GMT`).
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = super::http::civil_from_days(days);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_map_both_ways() {
        for name in ["ferry-hash", "owner", "a.b_c-d", "x1"] {
            let az = to_azure_name(name);
            assert!(az.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert_eq!(from_azure_name(&az).as_deref(), Some(name));
        }
        assert_eq!(to_azure_name("ferry-hash"), "m_ferry_2dhash");
        assert_eq!(from_azure_name("Mtime"), None);
    }

    #[test]
    fn http_dates_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_169_600 + 3_723);
        let s = http_date(t);
        assert_eq!(s, "Wed, 02 Dec 2026 01:02:03 GMT");
        assert_eq!(
            super::super::http::parse_http_date(&s),
            Some((1_796_169_600 + 3_723) * 1000)
        );
    }
}
