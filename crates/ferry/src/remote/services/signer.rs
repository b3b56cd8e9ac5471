//! `signer+https://HOST/BASE` (`signer+http://` on loopback): a store
//! reached only through a URL signer (`ferry serve --signer-base BASE`, or
//! any service with the same contract), with a bearer token instead of the
//! store's credentials.
//!
//! Every operation is two requests: one to the signer, which checks the
//! token's prefixes and verbs and answers with a short-lived URL, and one
//! to that URL (the upstream store, or the gateway itself):
//! - listings: `POST BASE/v1/list` `{prefix, cursor}` (the signer lists;
//!   `.ferry/` keys only when the prefix asked for is under `.ferry/`);
//! - `head`, `get`: `POST BASE/v1/sign/download` `{key, method}`, then
//!   `HEAD` or `GET` of the URL; metadata comes back as `x-amz-meta-*`;
//! - `put`: `POST BASE/v1/sign/upload` `{key, contentType, size, metadata,
//!   ifNoneMatch | ifMatch}`, then the body sent to the URL with the
//!   headers the signer returned (the metadata and the condition are signed
//!   into it, so the store enforces the condition itself);
//! - `delete`: `POST BASE/v1/delete` `{key, ifMatch}`.
//!
//! Keys travel as JSON strings and in signed URLs, byte for byte. A single
//! signed `PUT` carries an object: stores cap it (S3: 5 GiB), and a larger
//! object is refused by the store with its own error. Whether conditions
//! hold is the probe's finding, as for any remote.

use std::time::Duration;

use bytes::Bytes;

use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// A signer remote's settings.
#[derive(Clone, Default)]
pub struct SignerConfig {
    /// The signer's base URL: `http(s)://HOST[:PORT]/BASE`.
    pub url: String,
    /// The bearer token.
    pub token: Option<String>,
    /// To establish a connection.
    pub connect_timeout: Duration,
    /// Without progress once connected.
    pub io_timeout: Duration,
}

impl std::fmt::Debug for SignerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A remote behind a URL signer.
pub struct SignerRemote {
    http: reqwest::Client,
    /// The base URL, without a trailing `/`.
    base: String,
    /// `signer+http://…`, for messages.
    display: String,
    token: Option<String>,
}

impl std::fmt::Debug for SignerRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerRemote")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

/// A signed request, as the signer describes it.
#[derive(Debug, serde::Deserialize)]
struct Signed {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
struct Listed {
    items: Vec<Item>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    key: String,
    size: u64,
    etag: String,
    #[serde(default)]
    last_modified: Option<String>,
}

/// An ETag as ferry records S3's: quoted.
fn quoted(etag: &str) -> String {
    format!(
        "\"{}\"",
        etag.trim().trim_start_matches("W/").trim_matches('"')
    )
}

impl SignerRemote {
    /// A remote for `cfg` (no request is made).
    pub fn new(cfg: &SignerConfig) -> Result<Self, RemoteError> {
        let url = cfg.url.trim().trim_end_matches('/').to_owned();
        let fail = |detail: String| RemoteError::new(RemoteErrorKind::Terminal, &url, detail);
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| fail(format!("{url:?} is not an http:// or https:// URL")))?;
        if rest.split('/').next().unwrap_or_default().is_empty() {
            return Err(fail("the signer URL needs a host".into()));
        }
        let http = super::http::client(cfg.connect_timeout, cfg.io_timeout).map_err(fail)?;
        Ok(SignerRemote {
            http,
            display: format!("signer+{scheme}://{rest}"),
            base: url,
            token: cfg.token.clone(),
        })
    }

    fn error(&self, kind: RemoteErrorKind, detail: impl Into<String>) -> RemoteError {
        RemoteError::new(kind, self.display.clone(), detail)
    }

    fn send_error(&self, e: reqwest::Error, what: &str) -> RemoteError {
        super::http::transport_error(self.display.clone(), e, what)
    }

    /// The error an answer other than success stands for: the signer's
    /// JSON `error`, or a store's XML `Code` and `Message`.
    async fn status_error(&self, resp: reqwest::Response, what: &str, signer: bool) -> RemoteError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let code = xml_field(&text, "Code").unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .or_else(|| {
                xml_field(&text, "Message").map(|m| {
                    if code.is_empty() {
                        m
                    } else {
                        format!("{code}: {m}")
                    }
                })
            })
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        let kind = match (status, code.as_str()) {
            (_, "PreconditionFailed") | (412, _) => RemoteErrorKind::PreconditionFailed,
            (404, _) => RemoteErrorKind::NotFound,
            (408 | 409 | 429 | 500..=599, _) => RemoteErrorKind::Retryable,
            _ => RemoteErrorKind::Terminal,
        };
        let hint = match (status, signer) {
            (401, true) => " (the signer wants a bearer token: FERRY_SIGNER_TOKEN)",
            (403, true) => " (the token may not do this: see its prefixes and verbs)",
            (403, false) => {
                " (the store refused the signed URL: expired, or signed for other headers)"
            }
            _ => "",
        };
        let from = if signer { "the signer" } else { "the store" };
        self.error(
            kind,
            format!("{what}: {from} answered HTTP {status}: {message}{hint}"),
        )
    }

    /// Calls the signer at `route` with `body`; a JSON answer (`None` for 204).
    async fn call(
        &self,
        route: &str,
        body: serde_json::Value,
        what: &str,
    ) -> Result<Option<serde_json::Value>, RemoteError> {
        let mut req = self
            .http
            .post(format!("{}{route}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.send_error(e, what))?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, what, true).await);
        }
        if resp.status().as_u16() == 204 {
            return Ok(None);
        }
        let text = resp.text().await.map_err(|e| self.send_error(e, what))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            self.error(
                RemoteErrorKind::Terminal,
                format!(
                    "{what}: the signer's answer is not JSON ({e}): is the URL a signer's base?"
                ),
            )
        })
    }

    async fn sign(
        &self,
        route: &str,
        body: serde_json::Value,
        what: &str,
    ) -> Result<Signed, RemoteError> {
        let value = self.call(route, body, what).await?.unwrap_or_default();
        serde_json::from_value(value).map_err(|e| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: the signer's answer has no URL ({e})"),
            )
        })
    }

    /// Sends the signed request, with `extra` headers and a body.
    async fn send(
        &self,
        signed: &Signed,
        method: &str,
        extra: &[(&str, String)],
        body: Option<reqwest::Body>,
        what: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let method = signed.method.as_deref().unwrap_or(method);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
        let mut req = self.http.request(method, &signed.url);
        for (n, v) in &signed.headers {
            req = req.header(n.as_str(), v.as_str());
        }
        for (n, v) in extra {
            req = req.header(*n, v.as_str());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| self.send_error(e, what))
    }

    /// An object as a signed `HEAD` or `GET` answered it.
    fn described(&self, key: &str, resp: &reqwest::Response) -> RemoteObject {
        let h = resp.headers();
        let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // A ranged answer's whole size is after the `/` of Content-Range.
        let size = text("content-range")
            .and_then(|r| r.rsplit_once('/').and_then(|(_, t)| t.parse().ok()))
            .or_else(|| text("content-length").and_then(|l| l.parse().ok()))
            .unwrap_or(0);
        let metadata: Vec<(String, String)> = h
            .iter()
            .filter_map(|(n, v)| {
                let name = n.as_str().strip_prefix("x-amz-meta-")?;
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                Some((name.to_owned(), value))
            })
            .collect();
        let metadata = crate::metadata::from_headers(metadata);
        let mut obj = RemoteObject::listed(key, quoted(&text("etag").unwrap_or_default()), size)
            .with_metadata(metadata);
        obj.content_type = text("content-type");
        obj.modified_ms = text("last-modified")
            .as_deref()
            .and_then(super::http::parse_http_date);
        obj
    }

    async fn download(
        &self,
        key: &str,
        method: &str,
        range: Option<u64>,
    ) -> Result<Option<reqwest::Response>, RemoteError> {
        let what = format!("reading {key:?}");
        let signed = self
            .sign(
                "/v1/sign/download",
                serde_json::json!({ "key": key, "method": method }),
                &what,
            )
            .await?;
        let extra: Vec<(&str, String)> = range
            .map(|len| ("range", format!("bytes=0-{}", len.max(1) - 1)))
            .into_iter()
            .collect();
        let resp = self.send(&signed, method, &extra, None, &what).await?;
        match resp.status().as_u16() {
            200 | 206 => Ok(Some(resp)),
            404 => Ok(None),
            _ => Err(self.status_error(resp, &what, false).await),
        }
    }
}

/// The text of the first `<name>` element of an XML error body.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

#[async_trait::async_trait]
impl Remote for SignerRemote {
    fn endpoint(&self) -> String {
        self.display.clone()
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
        let what = format!("listing {prefix:?}");
        let value = self
            .call(
                "/v1/list",
                serde_json::json!({ "prefix": prefix, "cursor": token }),
                &what,
            )
            .await?
            .unwrap_or_default();
        let listed: Listed = serde_json::from_value(value).map_err(|e| {
            self.error(
                RemoteErrorKind::Terminal,
                format!("{what}: the signer's listing is malformed ({e})"),
            )
        })?;
        let objects = listed
            .items
            .into_iter()
            .filter(|i| i.key.starts_with(prefix))
            .map(|i| {
                let mut o = RemoteObject::listed(i.key, quoted(&i.etag), i.size);
                o.modified_ms = i.last_modified.as_deref().and_then(super::http::rfc3339_ms);
                o
            })
            .collect();
        Ok(RemotePage {
            objects,
            next: listed.cursor.filter(|c| !c.is_empty()),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        Ok(self
            .download(key, "HEAD", None)
            .await?
            .map(|resp| self.described(key, &resp)))
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let resp = self.download(key, "GET", None).await?.ok_or_else(|| {
            self.error(
                RemoteErrorKind::NotFound,
                format!("{key:?}: no such object"),
            )
        })?;
        let obj = self.described(key, &resp);
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
        let resp = match self.download(key, "GET", Some(len)).await {
            // An empty object has no byte 0: stores answer 416.
            Err(e) if e.detail.contains("HTTP 416") => {
                return Ok(self.head(key).await?.map(|o| (o, Bytes::new())))
            }
            other => other?,
        };
        let Some(resp) = resp else {
            return Ok(None);
        };
        let obj = self.described(key, &resp);
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
        let what = format!("writing {:?}", req.key);
        // The body first: its length goes into the signing request.
        let (content, length) = super::http::request_body(&body, &req.progress)
            .await
            .map_err(|e| self.error(RemoteErrorKind::Terminal, format!("{what}: {e}")))?;
        let mut ask = serde_json::json!({
            "key": req.key,
            "contentType": req.content_type,
            "size": length,
            // Signed into headers: values a header cannot hold go encoded.
            "metadata": crate::metadata::to_headers(&req.all_metadata()),
        });
        match &cond {
            Precondition::None => {}
            Precondition::IfAbsent => ask["ifNoneMatch"] = "*".into(),
            Precondition::IfMatch(etag) => ask["ifMatch"] = quoted(etag).into(),
        }
        let signed = self.sign("/v1/sign/upload", ask, &what).await?;
        let resp = self
            .send(
                &signed,
                "PUT",
                &[("content-length", length.to_string())],
                Some(content),
                &what,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what, false).await);
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(quoted);
        match etag {
            Some(e) => Ok(e),
            // No ETag in the answer: ask for it.
            None => self.head(&req.key).await?.map(|o| o.etag).ok_or_else(|| {
                self.error(
                    RemoteErrorKind::Retryable,
                    format!("{what}: written, but gone before its ETag was read"),
                )
            }),
        }
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let what = format!("deleting {key:?}");
        let mut ask = serde_json::json!({ "key": key });
        if let Precondition::IfMatch(etag) = &cond {
            ask["ifMatch"] = quoted(etag).into();
        }
        match self.call("/v1/delete", ask, &what).await {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
        assert_eq!(quoted("W/\"abc\""), "\"abc\"");
    }

    #[test]
    fn store_errors_are_read_from_their_xml() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(xml_field(xml, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_field(xml, "Message").as_deref(),
            Some("Request has expired")
        );
        assert_eq!(xml_field("nothing", "Code"), None);
    }
}
