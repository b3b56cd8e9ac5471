//! Remote URLs and settings: `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`,
//! `az://ACCOUNT/CONTAINER[/PREFIX]`, `webdav://HOST[:PORT]/PATH`
//! (`webdavs://` for HTTPS), `signer+http(s)://HOST/BASE`, `file:///ABS/PATH`, `memory://`, parsed here and turned into a [`Remote`](super::Remote).
//! Credentials come from the caller; the library reads no environment.

use std::sync::Arc;

use super::azure::{AzureAuth, AzureConfig, AzureRemote};
use super::folder::FolderRemote;
use super::gcs::{GcsConfig, GcsRemote};
use super::memory::MemoryRemote;
use super::s3::{S3Config, S3Remote};
use super::signer::{SignerConfig, SignerRemote};
use super::webdav::{WebDavConfig, WebDavRemote};
use super::{RemoteError, RemoteErrorKind, SharedRemote};

/// A remote as recorded in the bucket: its URL and connection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteSpec {
    /// `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`,
    /// `az://ACCOUNT/CONTAINER[/PREFIX]`, `webdav://HOST/PATH`,
    /// `signer+https://HOST/BASE`, `file:///ABS/PATH` or `memory://`.
    pub url: String,
    /// Endpoint URL: an S3-compatible store other than AWS, a GCS or Azure
    /// emulator, or (WebDAV) the scheme and host to use instead of the URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style S3 addressing.
    #[serde(default)]
    pub path_style: bool,
    /// A URL signer reached over plain HTTP at a host that is not loopback
    /// is accepted (its bearer token and the data travel in the clear).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Time limits on every remote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish a connection.
    pub connect: std::time::Duration,
    /// Without any progress (no byte sent or received) once connected.
    pub io: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(10),
            io: std::time::Duration::from_secs(60),
        }
    }
}

/// What a remote URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    /// An S3 bucket and key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix (no surrounding slashes; may be empty).
        prefix: String,
    },
    /// A Google Cloud Storage bucket and key prefix.
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Key prefix (no surrounding slashes; may be empty).
        prefix: String,
    },
    /// An Azure Blob Storage container and key prefix.
    Azure {
        /// Storage account name.
        account: String,
        /// Container name.
        container: String,
        /// Key prefix (no surrounding slashes; may be empty).
        prefix: String,
    },
    /// A WebDAV collection.
    WebDav {
        /// HTTPS (`webdavs://`).
        tls: bool,
        /// `HOST[:PORT]`.
        host: String,
        /// The collection's path (no surrounding slashes; may be empty).
        path: String,
    },
    /// A URL signer (`ferry serve --signer-base`) in front of a store.
    Signer {
        /// HTTPS (`signer+https://`).
        tls: bool,
        /// `HOST[:PORT]`.
        host: String,
        /// The signer's base path (no surrounding slashes; may be empty).
        base: String,
    },
    /// A local folder.
    Folder {
        /// Absolute path.
        path: std::path::PathBuf,
    },
    /// A process-local in-memory store.
    Memory,
}

/// S3 credentials, supplied by the front end.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token.
    pub session_token: Option<String>,
    /// A Google service account's JSON key (GCS); `None`: anonymous.
    pub gcs_service_account: Option<String>,
    /// How Azure requests are authorised (account key or SAS).
    pub azure: AzureAuth,
    /// WebDAV basic-auth user name.
    pub webdav_user: Option<String>,
    /// WebDAV basic-auth password.
    pub webdav_password: Option<String>,
    /// A URL signer's bearer token.
    pub signer_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "gcs_service_account",
                &self.gcs_service_account.as_ref().map(|_| "<redacted>"),
            )
            .field("azure", &self.azure)
            .field("webdav_user", &self.webdav_user)
            .field(
                "webdav_password",
                &self.webdav_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "signer_token",
                &self.signer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Whether the `[USER@]HOST[:PORT]` of a URL names this machine: `localhost`
/// or a loopback address (`127.0.0.0/8`, `[::1]`).
fn loopback(authority: &str) -> bool {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn bad(url: &str, why: &str) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Terminal,
        url,
        format!("invalid remote URL: {why}"),
    )
}

impl RemoteSpec {
    /// The location this spec names, spelled one way: `s3://bucket/prefix`
    /// with its endpoint (no trailing `/`, scheme and host lowercase) and
    /// region, or the folder path with `.` segments and trailing `/` gone.
    /// Two specs with the same location are the same remote however they
    /// were typed.
    pub fn location(&self) -> Result<String, RemoteError> {
        Ok(match self.kind()? {
            RemoteKind::S3 { bucket, prefix } => {
                let endpoint = self
                    .endpoint
                    .as_deref()
                    .map(|e| {
                        let e = e.trim().trim_end_matches('/');
                        match e.split_once("://") {
                            Some((scheme, rest)) => {
                                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                                let mut out = format!(
                                    "{}://{}",
                                    scheme.to_ascii_lowercase(),
                                    host.to_ascii_lowercase()
                                );
                                if !path.is_empty() {
                                    out.push('/');
                                    out.push_str(path);
                                }
                                out
                            }
                            None => e.to_ascii_lowercase(),
                        }
                    })
                    .unwrap_or_else(|| "aws".into());
                let region = self.region.as_deref().unwrap_or("us-east-1");
                format!("s3://{bucket}/{prefix} at {endpoint} in {region}")
            }
            RemoteKind::Gcs { bucket, prefix } => {
                let endpoint = self
                    .endpoint
                    .as_deref()
                    .map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase())
                    .unwrap_or_else(|| "google".into());
                format!("gs://{bucket}/{prefix} at {endpoint}")
            }
            RemoteKind::Azure {
                account,
                container,
                prefix,
            } => {
                let endpoint = self
                    .endpoint
                    .as_deref()
                    .map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase())
                    .unwrap_or_else(|| "azure".into());
                format!("az://{account}/{container}/{prefix} at {endpoint}")
            }
            RemoteKind::WebDav { .. } => self.webdav_url()?,
            RemoteKind::Signer { .. } => format!("signer+{}", self.signer_url()?),
            RemoteKind::Folder { path } => {
                let mut clean = std::path::PathBuf::new();
                for c in path.components() {
                    match c {
                        std::path::Component::CurDir => {}
                        std::path::Component::ParentDir => {
                            clean.pop();
                        }
                        other => clean.push(other),
                    }
                }
                format!("file://{}", clean.display())
            }
            RemoteKind::Memory => "memory://".into(),
        })
    }

    /// True when both specs name the same location (see [`RemoteSpec::location`]).
    pub fn same_location(&self, other: &RemoteSpec) -> bool {
        matches!((self.location(), other.location()), (Ok(a), Ok(b)) if a == b)
    }

    /// A spec for `url` with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        RemoteSpec {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Parses the URL.
    pub fn kind(&self) -> Result<RemoteKind, RemoteError> {
        let url = self.url.as_str();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    url,
                    "s3:// needs a bucket name, as in s3://my-bucket/some/prefix",
                ));
            }
            let prefix = prefix.trim_matches('/').to_owned();
            if prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(bad(url, "the prefix may not contain `.` or `..` segments"));
            }
            Ok(RemoteKind::S3 {
                bucket: bucket.to_owned(),
                prefix,
            })
        } else if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    url,
                    "gs:// needs a bucket name, as in gs://my-bucket/some/prefix",
                ));
            }
            let prefix = prefix.trim_matches('/').to_owned();
            if prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(bad(url, "the prefix may not contain `.` or `..` segments"));
            }
            Ok(RemoteKind::Gcs {
                bucket: bucket.to_owned(),
                prefix,
            })
        } else if let Some(rest) = url.strip_prefix("az://") {
            let mut parts = rest.splitn(3, '/');
            let account = parts.next().unwrap_or_default();
            let container = parts.next().unwrap_or_default();
            if account.is_empty() || container.is_empty() {
                return Err(bad(
                    url,
                    "az:// needs an account and a container, as in az://myaccount/mycontainer/some/prefix",
                ));
            }
            let prefix = parts
                .next()
                .unwrap_or_default()
                .trim_matches('/')
                .to_owned();
            if prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(bad(url, "the prefix may not contain `.` or `..` segments"));
            }
            Ok(RemoteKind::Azure {
                account: account.to_owned(),
                container: container.to_owned(),
                prefix,
            })
        } else if let Some((tls, rest)) = url
            .strip_prefix("webdav://")
            .map(|r| (false, r))
            .or_else(|| url.strip_prefix("webdavs://").map(|r| (true, r)))
        {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(bad(
                    url,
                    "webdav:// needs a host, as in webdav://nas.local:8080/ferry",
                ));
            }
            let path = path.trim_matches('/').to_owned();
            if path.split('/').any(|s| s == "." || s == "..") {
                return Err(bad(url, "the path may not contain `.` or `..` segments"));
            }
            if path.contains("//") {
                return Err(bad(url, "the path may not contain empty segments (`//`)"));
            }
            Ok(RemoteKind::WebDav {
                tls,
                host: host.to_owned(),
                path,
            })
        } else if let Some((tls, rest)) = url
            .strip_prefix("signer+http://")
            .map(|r| (false, r))
            .or_else(|| url.strip_prefix("signer+https://").map(|r| (true, r)))
        {
            let (host, base) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(bad(
                    url,
                    "signer+https:// needs a host, as in signer+https://app.example.com/api",
                ));
            }
            Ok(RemoteKind::Signer {
                tls,
                host: host.to_owned(),
                base: base.trim_matches('/').to_owned(),
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    url,
                    "file:// needs an absolute path, as in file:///srv/ferry",
                ));
            }
            Ok(RemoteKind::Folder { path: path.into() })
        } else if url == "memory://" || url == "memory:" {
            Ok(RemoteKind::Memory)
        } else {
            Err(bad(
                url,
                "use s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://ACCOUNT/CONTAINER[/PREFIX], webdav://HOST[:PORT]/PATH (webdavs:// for HTTPS), signer+https://HOST/BASE (signer+http:// on loopback), file:///ABS/PATH or memory://",
            ))
        }
    }

    /// Builds the remote (no request is made).
    pub fn build(&self, creds: &Credentials) -> Result<SharedRemote, RemoteError> {
        self.build_with(creds, Timeouts::default())
    }

    /// Why the remote this spec names cannot hold `key` (a valid ferry key)
    /// exactly, without contacting it; `None` when it can.
    pub fn refuses(&self, key: &str) -> Option<String> {
        match self.kind().ok()? {
            RemoteKind::Folder { .. } => super::folder::folder_refuses(key),
            RemoteKind::S3 { .. }
            | RemoteKind::Gcs { .. }
            | RemoteKind::Azure { .. }
            | RemoteKind::WebDav { .. }
            | RemoteKind::Signer { .. } => self
                .build(&Credentials::default())
                .ok()
                .and_then(|r| r.refuses(key)),
            RemoteKind::Memory => None,
        }
    }

    /// Builds the remote with these time limits (no request is made).
    pub fn build_with(
        &self,
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<SharedRemote, RemoteError> {
        Ok(match self.kind()? {
            RemoteKind::S3 { bucket, prefix } => Arc::new(S3Remote::new(&S3Config {
                bucket,
                prefix,
                endpoint: self.endpoint.clone(),
                region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
                path_style: self.path_style,
                access_key_id: creds.access_key_id.clone(),
                secret_access_key: creds.secret_access_key.clone(),
                session_token: creds.session_token.clone(),
                connect_timeout: timeouts.connect,
                io_timeout: timeouts.io,
            })?),
            RemoteKind::Gcs { bucket, prefix } => Arc::new(GcsRemote::new(&GcsConfig {
                bucket,
                prefix,
                endpoint: self.endpoint.clone(),
                service_account: creds.gcs_service_account.clone(),
                resumable_above: 0,
                connect_timeout: timeouts.connect,
                io_timeout: timeouts.io,
            })?),
            RemoteKind::Azure {
                account,
                container,
                prefix,
            } => Arc::new(AzureRemote::new(&AzureConfig {
                account,
                container,
                prefix,
                endpoint: self.endpoint.clone(),
                auth: creds.azure.clone(),
                single_put_limit: 0,
                connect_timeout: timeouts.connect,
                io_timeout: timeouts.io,
            })?),
            RemoteKind::WebDav { .. } => Arc::new(WebDavRemote::new(&WebDavConfig {
                url: self.webdav_url()?,
                user: creds.webdav_user.clone(),
                password: creds.webdav_password.clone(),
                connect_timeout: timeouts.connect,
                io_timeout: timeouts.io,
            })?),
            RemoteKind::Signer { .. } => Arc::new(SignerRemote::new(&SignerConfig {
                url: self.checked_signer_url()?,
                token: creds.signer_token.clone(),
                connect_timeout: timeouts.connect,
                io_timeout: timeouts.io,
            })?),
            RemoteKind::Folder { path } => Arc::new(FolderRemote::new(path)?),
            RemoteKind::Memory => Arc::new(MemoryRemote::new()),
        })
    }

    /// The S3 remote this spec names, as its concrete type (for what only
    /// S3 does, such as presigning); `None` for other kinds.
    pub fn build_s3(
        &self,
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Option<S3Remote>, RemoteError> {
        let RemoteKind::S3 { bucket, prefix } = self.kind()? else {
            return Ok(None);
        };
        Ok(Some(S3Remote::new(&S3Config {
            bucket,
            prefix,
            endpoint: self.endpoint.clone(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            path_style: self.path_style,
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
            session_token: creds.session_token.clone(),
            connect_timeout: timeouts.connect,
            io_timeout: timeouts.io,
        })?))
    }

    /// The scheme and host an HTTP remote is reached at: the endpoint's
    /// when one is set, else `http(s)://HOST` from the URL.
    fn origin(&self, tls: bool, host: &str) -> String {
        match &self.endpoint {
            Some(e) => e.trim().trim_end_matches('/').to_owned(),
            None => format!("{}://{host}", if tls { "https" } else { "http" }),
        }
    }

    /// The HTTP URL of a signer remote's base: `https://HOST/BASE` for
    /// `signer+https://HOST/BASE`, or the endpoint's scheme and host in
    /// their place when one is set.
    pub fn signer_url(&self) -> Result<String, RemoteError> {
        let RemoteKind::Signer { tls, host, base } = self.kind()? else {
            return Err(bad(&self.url, "not a signer+http(s):// URL"));
        };
        let origin = self.origin(tls, &host);
        Ok(if base.is_empty() {
            origin
        } else {
            format!("{origin}/{base}")
        })
    }

    /// [`Self::signer_url`], refused when it is plain HTTP to a host that
    /// is not loopback, unless the spec is [`insecure`](Self::insecure): the
    /// bearer token and the data would cross a network in the clear.
    fn checked_signer_url(&self) -> Result<String, RemoteError> {
        let url = self.signer_url()?;
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.split('/').next().unwrap_or("");
            if !self.insecure && !loopback(authority) {
                return Err(bad(
                    &self.url,
                    &format!(
                        "a URL signer over plain HTTP is accepted only on this machine (localhost, \
                         127.0.0.1, [::1]), not at {authority}: its bearer token and the data would \
                         travel in the clear. Use signer+https://, or accept it with --insecure"
                    ),
                ));
            }
        }
        Ok(url)
    }

    /// The HTTP URL of a WebDAV remote's collection: `http://HOST/PATH`
    /// (`https://` for `webdavs://`), or the endpoint's scheme and host in
    /// their place when one is set.
    pub fn webdav_url(&self) -> Result<String, RemoteError> {
        let RemoteKind::WebDav { tls, host, path } = self.kind()? else {
            return Err(bad(&self.url, "not a webdav:// URL"));
        };
        let origin = self.origin(tls, &host);
        Ok(format!("{origin}/{path}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer(url: &str, endpoint: Option<&str>, insecure: bool) -> Result<(), RemoteError> {
        RemoteSpec {
            url: url.into(),
            endpoint: endpoint.map(str::to_owned),
            insecure,
            ..Default::default()
        }
        .build(&Credentials::default())
        .map(|_| ())
    }

    /// Issue 23, item 15: plain HTTP to a signer only on this machine,
    /// unless the spec says insecure; the endpoint, when set, is what is
    /// reached, so it is what is checked.
    #[test]
    fn a_signer_over_plain_http_must_be_loopback_or_insecure() {
        for ok in [
            "signer+http://127.0.0.1:9000/api",
            "signer+http://127.3.4.5/api",
            "signer+http://localhost:8080",
            "signer+http://LOCALHOST/x",
            "signer+http://[::1]:9000/api",
            "signer+https://app.example.com/api",
            "signer+https://10.0.0.5/api",
        ] {
            signer(ok, None, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in [
            "signer+http://app.example.com/api",
            "signer+http://10.0.0.5:9000/api",
            "signer+http://127.0.0.1.example.com/api",
            "signer+http://[::2]/api",
            "signer+http://localhost@evil.example/api",
        ] {
            let e = signer(refused, None, false).unwrap_err();
            assert!(e.to_string().contains("--insecure"), "{refused}: {e}");
            signer(refused, None, true).unwrap_or_else(|e| panic!("{refused}: {e}"));
        }
        let e = signer(
            "signer+https://localhost/api",
            Some("http://app.example.com"),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("app.example.com"), "{e}");
        signer("signer+https://x/api", Some("http://127.0.0.1:1"), false).unwrap();
    }
}
