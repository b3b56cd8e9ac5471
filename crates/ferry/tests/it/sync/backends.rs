//! The remote kinds the suite runs against.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry::remote::folder::FolderRemote;
use ferry::remote::memory::MemoryRemote;
use ferry::remote::{Remote, SharedRemote};
use tokio::io::AsyncReadExt;

use super::{Backend, Plain};

/// `memory://`
pub struct Memory(pub MemoryRemote);

impl Memory {
    pub fn new() -> Self {
        Memory(MemoryRemote::new())
    }
}

async fn plain_get(r: &dyn Remote, key: &str) -> Option<Plain> {
    let (obj, mut body) = r.get(key).await.ok()?;
    let mut data = Vec::new();
    body.read_to_end(&mut data).await.ok()?;
    let mut metadata = obj.metadata.clone();
    if let Some(h) = obj.hash {
        metadata.insert(ferry::remote::META_HASH.into(), h.to_hex());
    }
    Some(Plain {
        data,
        content_type: obj.content_type,
        metadata,
    })
}

#[async_trait::async_trait]
impl Backend for Memory {
    fn remote(&self) -> SharedRemote {
        Arc::new(self.0.clone())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        self.0.put_foreign(key, data.to_vec(), content_type);
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        plain_get(&self.0, key).await
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.retain(|k| !k.starts_with(".ferry/"));
        keys.sort();
        keys
    }
}

/// `file://`
pub struct Folder(pub tempfile::TempDir);

impl Folder {
    pub fn new() -> Self {
        Folder(tempfile::tempdir().unwrap())
    }
}

#[async_trait::async_trait]
impl Backend for Folder {
    fn remote(&self) -> SharedRemote {
        Arc::new(FolderRemote::new(self.0.path()).unwrap())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], _content_type: &str) {
        let path = self.0.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        let data = std::fs::read(self.0.path().join(key)).ok()?;
        let r = FolderRemote::new(self.0.path()).unwrap();
        let obj = r.head(key).await.unwrap()?;
        let mut metadata: BTreeMap<String, String> = obj.metadata.clone();
        if let Some(h) = obj.hash {
            metadata.insert(ferry::remote::META_HASH.into(), h.to_hex());
        }
        Some(Plain {
            data,
            content_type: obj.content_type,
            metadata,
        })
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for e in walkdir(self.0.path()) {
            let rel = e
                .strip_prefix(self.0.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.starts_with(".ferry") {
                keys.push(rel);
            }
        }
        keys.sort();
        keys
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An S3 location: a fresh prefix in a bucket of some S3 server (or a fresh
/// bucket), and a plain `aws-sdk-s3` client on it (it writes no ferry
/// metadata, like any S3 tool). Keys are exact: the object for `k` is
/// `prefix/k`, or `k` when the prefix is empty.
pub struct S3Location {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    plain: aws_sdk_s3::Client,
    /// Keeps an in-process server alive for the test.
    _server: Option<(tempfile::TempDir, tokio::task::JoinHandle<()>)>,
}

pub const ACCESS_KEY: &str = "ferrytest";
pub const SECRET_KEY: &str = "ferrytestsecret";

/// A plain S3 client for `endpoint` (path style, static test credentials).
pub fn plain_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl S3Location {
    pub fn new(
        endpoint: String,
        bucket: &str,
        server: Option<(tempfile::TempDir, tokio::task::JoinHandle<()>)>,
    ) -> Self {
        let prefix = format!("t{:016x}", rand::random::<u64>());
        S3Location {
            plain: plain_client(&endpoint),
            endpoint,
            bucket: bucket.to_owned(),
            prefix,
            _server: server,
        }
    }

    /// A fresh in-process `s3s-fs` server on 127.0.0.1:0.
    pub async fn s3s() -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("ferry-test")).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Location::new(format!("http://{addr}"), "ferry-test", Some((root, handle)))
    }

    fn moto_endpoint() -> String {
        std::env::var("FERRY_TEST_MOTO_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "FERRY_TEST_MOTO_ENDPOINT is not set: run the suite with ./scripts/test.sh, \
                 which installs moto[server] in a venv and starts it"
            )
        })
    }

    /// The moto server the test command started (see scripts/test.sh).
    pub fn moto() -> Self {
        S3Location::new(Self::moto_endpoint(), "ferry-test", None)
    }

    /// A new, empty bucket of its own on the moto server, used with an
    /// empty prefix: for keys at the bucket's root (1,024-byte keys).
    pub async fn fresh_bucket_moto() -> Self {
        let mut me = S3Location::new(
            Self::moto_endpoint(),
            &format!("ferry-t{:016x}", rand::random::<u64>()),
            None,
        );
        me.plain
            .create_bucket()
            .bucket(&me.bucket)
            .send()
            .await
            .unwrap();
        me.prefix = String::new();
        me
    }

    /// The in-process server's storage directory (s3s-fs only).
    pub fn server_root(&self) -> Option<&std::path::Path> {
        self._server.as_ref().map(|(dir, _)| dir.path())
    }

    pub fn config(&self) -> ferry::remote::s3::S3Config {
        ferry::remote::s3::S3Config {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            session_token: None,
            ..Default::default()
        }
    }

    /// Rewrites only `key`'s metadata, as `aws s3 cp --metadata-directive
    /// REPLACE` does: a `CopyObject` onto itself (same bytes, so the same
    /// MD5 ETag; ferry's `x-amz-meta-ferry-*` entries are dropped).
    pub async fn foreign_replace_metadata(
        &self,
        key: &str,
        content_type: &str,
        meta: &[(&str, &str)],
    ) {
        let mut req = self
            .plain
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .copy_source(format!("{}/{}", self.bucket, self.full(key)))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(content_type);
        for (name, value) in meta {
            req = req.metadata(*name, *value);
        }
        req.send().await.unwrap();
    }

    /// Deletes `key` as another S3 client would (`aws s3 rm`).
    pub async fn foreign_delete(&self, key: &str) {
        self.plain
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .unwrap();
    }

    /// The S3 key of `key`: exact.
    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

/// Decodes a listing's `encoding-type=url` key (a space may come as `+`).
fn url_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[async_trait::async_trait]
impl Backend for S3Location {
    fn remote(&self) -> SharedRemote {
        Arc::new(ferry::remote::s3::S3Remote::new(&self.config()).unwrap())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        self.plain
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_type(content_type)
            .body(data.to_vec().into())
            .send()
            .await
            .unwrap();
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        let o = self
            .plain
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .ok()?;
        let metadata: BTreeMap<String, String> = o
            .metadata()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let content_type = o.content_type().map(str::to_owned);
        let data = o.body.collect().await.ok()?.into_bytes().to_vec();
        Some(Plain {
            data,
            content_type,
            metadata,
        })
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let root = self.full("");
        let mut req = self
            .plain
            .list_objects_v2()
            .bucket(&self.bucket)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url);
        if !root.is_empty() {
            req = req.prefix(&root);
        }
        let mut pages = req.into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            let encoded = page.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
            for o in page.contents() {
                let raw = o.key().unwrap();
                let key = if encoded {
                    url_decode(raw)
                } else {
                    raw.to_owned()
                };
                let rel = key.strip_prefix(&root).unwrap().to_owned();
                if !rel.starts_with(".ferry/") {
                    keys.push(rel);
                }
            }
        }
        keys.sort();
        keys
    }
}

/// `gs://ferry-test/<random prefix>` on fake-gcs-server (started by
/// `./scripts/test.sh`); the plain client is its JSON API over HTTP.
pub struct GcsLocation {
    endpoint: String,
    bucket: String,
    prefix: String,
    http: reqwest::Client,
}

impl GcsLocation {
    fn gcs_endpoint() -> String {
        std::env::var("FERRY_TEST_GCS_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "FERRY_TEST_GCS_ENDPOINT is not set: run the suite with ./scripts/test.sh, \
                 which installs fake-gcs-server in a venv and starts it"
            )
        })
    }

    /// A fresh prefix in the shared `ferry-test` bucket.
    pub fn new() -> Self {
        GcsLocation {
            endpoint: Self::gcs_endpoint(),
            bucket: "ferry-test".into(),
            prefix: format!("t{:016x}", rand::random::<u64>()),
            http: reqwest::Client::new(),
        }
    }

    /// A new, empty bucket of its own, used with an empty prefix.
    pub async fn fresh_bucket() -> Self {
        let mut me = Self::new();
        me.bucket = format!("ferry-t{:016x}", rand::random::<u64>());
        me.prefix = String::new();
        let resp = me
            .http
            .post(format!("{}/storage/v1/b?project=ferry", me.endpoint))
            .json(&serde_json::json!({ "name": me.bucket }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        me
    }

    pub fn config(&self) -> ferry::remote::gcs::GcsConfig {
        ferry::remote::gcs::GcsConfig {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: Some(self.endpoint.clone()),
            service_account: None,
            resumable_above: 0,
            connect_timeout: std::time::Duration::from_secs(5),
            io_timeout: std::time::Duration::from_secs(30),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
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
            self.bucket,
            percent_encoding::utf8_percent_encode(
                &self.full(key),
                percent_encoding::NON_ALPHANUMERIC
            )
        )
    }
}

#[async_trait::async_trait]
impl Backend for GcsLocation {
    fn remote(&self) -> SharedRemote {
        Arc::new(ferry::remote::gcs::GcsRemote::new(&self.config()).unwrap())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        // A plain media upload, as `gsutil cp` would make it.
        let resp = self
            .http
            .post(format!(
                "{}/upload/storage/v1/b/{}/o",
                self.endpoint, self.bucket
            ))
            .query(&[("uploadType", "media"), ("name", &self.full(key))])
            .header("content-type", content_type)
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        let described: serde_json::Value = self
            .http
            .get(self.object_url(key))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .json()
            .await
            .ok()?;
        let data = self
            .http
            .get(self.object_url(key))
            .query(&[("alt", "media")])
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .bytes()
            .await
            .ok()?
            .to_vec();
        let metadata: BTreeMap<String, String> = described["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Some(Plain {
            data,
            content_type: described["contentType"].as_str().map(str::to_owned),
            metadata,
        })
    }
    async fn dump_to(&self, dir: &std::path::Path) {
        let root = self.full("");
        let mut names = String::new();
        let mut token: Option<String> = None;
        let mut n = 0;
        loop {
            let mut req = self
                .http
                .get(format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket))
                .query(&[("prefix", root.as_str())]);
            if let Some(t) = &token {
                req = req.query(&[("pageToken", t.as_str())]);
            }
            let page: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap();
                names.push_str(name);
                names.push('\n');
                let rel = name.strip_prefix(&root).unwrap();
                let data = self
                    .http
                    .get(format!(
                        "{}/storage/v1/b/{}/o/{}",
                        self.endpoint,
                        self.bucket,
                        percent_encoding::utf8_percent_encode(
                            name,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    ))
                    .query(&[("alt", "media")])
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                std::fs::write(dir.join(format!("object-{n}")), &data).unwrap();
                if rel.starts_with(".ferry/journal") {
                    std::fs::write(dir.join(format!("journal-{n}")), &data).unwrap();
                }
                n += 1;
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        std::fs::write(dir.join("NAMES"), names).unwrap();
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let root = self.full("");
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket))
                .query(&[("prefix", root.as_str())]);
            if let Some(t) = &token {
                req = req.query(&[("pageToken", t.as_str())]);
            }
            let page: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap();
                let rel = name.strip_prefix(&root).unwrap().to_owned();
                if !rel.starts_with(".ferry/") {
                    keys.push(rel);
                }
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        keys
    }
}

/// The account Azurite serves, with its well-known key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `az://devstoreaccount1/ferry-test/<random prefix>` on Azurite (started
/// by `./scripts/test.sh`). Its plain client is ferry's own REST client
/// writing without ferry's metadata; Microsoft's Python SDK is the second
/// client in `azure_objects_read_and_written_by_microsofts_python_client`.
pub struct AzureLocation {
    endpoint: String,
    container: String,
    prefix: String,
}

impl AzureLocation {
    fn azure_endpoint() -> String {
        std::env::var("FERRY_TEST_AZURE_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "FERRY_TEST_AZURE_ENDPOINT is not set: run the suite with ./scripts/test.sh, \
                 which installs Azurite with npm and starts it"
            )
        })
    }

    /// A fresh prefix in the shared `ferry-test` container (made by the
    /// first test that needs it).
    pub async fn new() -> Self {
        let me = AzureLocation {
            endpoint: Self::azure_endpoint(),
            container: "ferry-test".into(),
            prefix: format!("t{:016x}", rand::random::<u64>()),
        };
        me.plain().create_container().await.unwrap();
        me
    }

    /// A new, empty container of its own, used with an empty prefix.
    pub async fn fresh_container() -> Self {
        let me = AzureLocation {
            endpoint: Self::azure_endpoint(),
            container: format!("ferry-t{:016x}", rand::random::<u64>()),
            prefix: String::new(),
        };
        me.plain().create_container().await.unwrap();
        me
    }

    pub fn config(&self) -> ferry::remote::azure::AzureConfig {
        ferry::remote::azure::AzureConfig {
            account: AZURITE_ACCOUNT.into(),
            container: self.container.clone(),
            prefix: self.prefix.clone(),
            endpoint: Some(self.endpoint.clone()),
            auth: ferry::remote::azure::AzureAuth::SharedKey(AZURITE_KEY.into()),
            // Small, so the suite's larger objects (the 40 MiB encrypted
            // round trip, the 3 MiB blobs) go through staged blocks.
            single_put_limit: 1 << 20,
            connect_timeout: std::time::Duration::from_secs(5),
            io_timeout: std::time::Duration::from_secs(30),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    fn plain(&self) -> ferry::remote::azure::AzureRemote {
        ferry::remote::azure::AzureRemote::new(&self.config()).unwrap()
    }
}

#[async_trait::async_trait]
impl Backend for AzureLocation {
    fn remote(&self) -> SharedRemote {
        Arc::new(self.plain())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        // `sealed` requests carry no ferry entries: a plain client's write.
        let req = ferry::remote::PutRequest {
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            metadata: Default::default(),
            hash: ferry::ContentHash::of(data),
            size: data.len() as u64,
            mtime_ms: 0,
            device: String::new(),
            base: String::new(),
            sealed: true,
            stamp: None,
            progress: Default::default(),
        };
        self.plain()
            .put(
                &req,
                ferry::remote::RemoteBody::Bytes(data.to_vec().into()),
                ferry::remote::Precondition::None,
            )
            .await
            .unwrap();
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        plain_get(&self.plain(), key).await
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .plain()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(".ferry/"))
            .collect();
        keys.sort();
        keys
    }
}

/// The user every WebDAV server `./scripts/test.sh` starts knows.
pub const WEBDAV_USER: &str = "ferry";
pub const WEBDAV_PASSWORD: &str = "secret";

/// `webdav://127.0.0.1:PORT/<random path>` on a WebDAV server
/// `./scripts/test.sh` starts: WsgiDAV ([`WebDavLocation::new`]), Apache
/// `mod_dav` ([`WebDavLocation::apache`]), nginx ([`WebDavLocation::nginx`]). Its plain client writes with
/// bare `MKCOL` and `PUT` requests, as any WebDAV client would; Python's
/// `requests` with `PROPFIND` is the second client in
/// `webdav_objects_read_and_written_by_a_python_client`.
pub struct WebDavLocation {
    endpoint: String,
    path: String,
}

impl WebDavLocation {
    /// The endpoint in `var`, which `./scripts/test.sh` sets.
    pub fn endpoint_from(var: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: run the suite with ./scripts/test.sh, \
                 which installs and starts the WebDAV servers"
            )
        })
    }

    /// A fresh collection on WsgiDAV.
    pub async fn new() -> Self {
        Self::on("FERRY_TEST_WEBDAV_ENDPOINT").await
    }

    /// A fresh collection on Apache `mod_dav`.
    pub async fn apache() -> Self {
        Self::on("FERRY_TEST_APACHE_ENDPOINT").await
    }

    /// A fresh collection on nginx with its DAV modules (no dead
    /// properties: ferry keeps sidecars).
    pub async fn nginx() -> Self {
        Self::on("FERRY_TEST_NGINX_ENDPOINT").await
    }

    /// A fresh collection path on the server in `var`, made as `ferry
    /// init` makes it (a sync never makes it).
    pub async fn on(var: &str) -> Self {
        let location = WebDavLocation {
            endpoint: Self::endpoint_from(var),
            path: format!("t{:016x}/data", rand::random::<u64>()),
        };
        assert!(location.plain().create_base().await.unwrap());
        location
    }

    pub fn config(&self) -> ferry::remote::webdav::WebDavConfig {
        ferry::remote::webdav::WebDavConfig {
            url: format!("{}/{}", self.endpoint, self.path),
            user: Some(WEBDAV_USER.into()),
            password: Some(WEBDAV_PASSWORD.into()),
            connect_timeout: std::time::Duration::from_secs(5),
            io_timeout: std::time::Duration::from_secs(30),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn plain(&self) -> ferry::remote::webdav::WebDavRemote {
        ferry::remote::webdav::WebDavRemote::new(&self.config()).unwrap()
    }

    /// The escaped URL of `key` under this location.
    pub fn key_url(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.endpoint,
            dav_escape(&format!("{}/{key}", self.path))
        )
    }
}

/// A path with every byte but unreserved characters and `/` escaped.
pub fn dav_escape(path: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(path, SET).to_string()
}

#[async_trait::async_trait]
impl Backend for WebDavLocation {
    fn remote(&self) -> SharedRemote {
        Arc::new(self.plain())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        // A plain client: MKCOL down to the parent, then PUT, no properties.
        let http = reqwest::Client::new();
        let full = format!("{}/{key}", self.path);
        let mut dir = String::new();
        for seg in full.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            dir.push_str(seg);
            dir.push('/');
            let _ = http
                .request(
                    reqwest::Method::from_bytes(b"MKCOL").unwrap(),
                    format!("{}/{}", self.endpoint, dav_escape(&dir)),
                )
                .basic_auth(WEBDAV_USER, Some(WEBDAV_PASSWORD))
                .send()
                .await
                .unwrap();
        }
        let resp = http
            .put(self.key_url(key))
            .basic_auth(WEBDAV_USER, Some(WEBDAV_PASSWORD))
            .header("content-type", content_type)
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT {key:?}: {}", resp.status());
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        plain_get(&self.plain(), key).await
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .plain()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(".ferry/"))
            .collect();
        keys.sort();
        keys
    }
}
