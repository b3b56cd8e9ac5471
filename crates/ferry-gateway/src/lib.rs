//! `ferry serve`: ferry buckets as a local S3 endpoint.
//!
//! The S3 protocol (SigV4 in headers and presigned URLs, chunked and
//! trailer uploads, XML) is `s3s`; the operations ([`s3::FerryS3`]) run on
//! the library's [`ferry::Bucket`]: every write is durable in the local
//! bucket when it is acknowledged and synced by whatever syncs the bucket.
//! The front end (CLI) reads settings and passes them in; this crate reads
//! no environment and prints nothing.

mod access;
pub mod app;
mod connections;
mod front;
mod reserved;
pub mod s3;
pub mod store;
mod tls;
mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use access::{AppKey, AppKeys, Rights};
pub use connections::Limits;
pub use s3::UploadLimits;
pub use store::{Buckets, Served};
pub use tls::{Tls, TlsError};

/// A gateway failure outside a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A bucket operation failed.
    #[error(transparent)]
    Ferry(#[from] ferry::Error),
    /// A file of the gateway's own could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gateway's ETag database could not be used.
    #[error("{path}: {source}")]
    Db {
        /// The database.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// A bucket operation that only `--buckets DIR` serves.
    #[error("this gateway serves one bucket")]
    NotHere,
    /// No such bucket.
    #[error("no such bucket")]
    NoSuchBucket,
    /// Another process has the bucket open.
    #[error("the bucket is open in another process")]
    InUse,
}

impl GatewayError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        GatewayError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> Self {
        GatewayError::Db {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How a gateway answers.
#[derive(Clone, Default)]
pub struct GatewayConfig {
    /// The access key id clients sign with.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The apps' keys, each limited to its buckets and rights (the pair
    /// above is the owner's and may do everything).
    pub app_keys: Option<Arc<dyn AppKeys>>,
    /// Unsigned GET, HEAD and listings are allowed everywhere.
    pub anonymous_read: bool,
    /// Unsigned GET and HEAD of keys under these prefixes (`BUCKET/PREFIX`
    /// or, serving one bucket, `PREFIX`) are allowed.
    pub public_read: Vec<String>,
    /// Origins answered with CORS headers (`*`: any).
    pub cors_origins: Vec<String>,
    /// `Cache-Control` on object answers.
    pub cache_control: Option<String>,
    /// The app endpoints (signer, status, events), serving one bucket.
    pub app: Option<app::AppConfig>,
    /// Time limits and the connection cap.
    pub limits: Limits,
    /// How long abandoned multipart uploads are kept, and how much they
    /// may hold.
    pub uploads: UploadLimits,
    /// Serve HTTPS with this certificate and key (else plain HTTP).
    pub tls: Option<Tls>,
    /// Host names requests may name (`Host`) beside IP addresses and
    /// `localhost`; `*`: any. A browser reaching the gateway through
    /// another name (DNS rebinding) is refused.
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("access_key_id", &self.access_key_id)
            .field("app_keys", &self.app_keys.as_ref().map(|k| k.current()))
            .field("anonymous_read", &self.anonymous_read)
            .field("public_read", &self.public_read)
            .field("cors_origins", &self.cors_origins)
            .field("app", &self.app)
            .field("limits", &self.limits)
            .field("uploads", &self.uploads)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A running gateway's address and handle.
#[derive(Debug)]
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Stops serving (connections in flight are dropped).
    pub fn stop(self) {
        self.task.abort();
    }

    /// Waits until the gateway stops (it runs until stopped).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts serving `served` on `listener`.
pub fn start(
    listener: tokio::net::TcpListener,
    served: Served,
    config: GatewayConfig,
) -> Result<Gateway, GatewayError> {
    let addr = listener
        .local_addr()
        .map_err(|e| GatewayError::io(Path::new("listener"), e))?;
    let single = match &served {
        Served::One { name, .. } => Some(name.clone()),
        Served::Dir(_) => None,
    };
    let buckets = Arc::new(Buckets::new(served)?);
    let app = match (&config.app, &single, buckets.open_entries().first()) {
        (Some(a), Some(name), Some(entry)) => Some(Arc::new(app::App {
            config: a.clone(),
            name: name.clone(),
            bucket: entry.bucket.clone(),
            entry: entry.clone(),
            access_key_id: config.access_key_id.clone(),
            secret_access_key: config.secret_access_key.clone(),
            local_signers: Default::default(),
        })),
        _ => None,
    };
    let keys = access::Keys {
        owner_id: config.access_key_id.clone(),
        owner_secret: config.secret_access_key.clone(),
        apps: config.app_keys.clone(),
    };
    let s3 = s3::FerryS3 {
        keys: keys.clone(),
        buckets: buckets.clone(),
        cache_control: config.cache_control.clone(),
        uploads: config.uploads.clone(),
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(s3);
    builder.set_auth(keys.clone());
    builder.set_access(access::Access::new(
        config.anonymous_read,
        &config.public_read,
        single.is_some(),
        keys,
    ));
    builder.set_validation(front::Names {
        served: single.clone(),
    });
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        front::s3s_limits(),
    ))));
    let service = builder.build();
    let cors = Arc::new(config.cors_origins.clone());
    let limits = config.limits.clone();
    let task = tokio::spawn(async move {
        // Abandoned uploads go, at start and then every half of their
        // age (at least every second, at most every hour).
        let max_age = config.uploads.max_age;
        let every = (max_age / 2).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        );
        let collector = async move {
            loop {
                for e in buckets.open_entries() {
                    s3::FerryS3::collect_uploads(&e, max_age);
                }
                tokio::time::sleep(every).await;
            }
        };
        let hosts = Arc::new(config.allowed_hosts.clone());
        let handler: connections::Handler = Arc::new(move |req| {
            let service = service.clone();
            let cors = cors.clone();
            let app = app.clone();
            let hosts = hosts.clone();
            Box::pin(async move {
                let unsigned = front::unsigned(&req);
                let mut resp = if front::host_allowed(&hosts, &req) {
                    handle(service, app.as_deref(), &cors, req).await?
                } else {
                    front::s3_error(
                        http::StatusCode::BAD_REQUEST,
                        "InvalidHostHeader",
                        "this gateway does not answer to that host name (see --allowed-host)",
                    )
                };
                front::browser_headers(&mut resp, unsigned);
                Ok(resp)
            })
        });
        let accepting = connections::accept(listener, limits, config.tls.clone(), handler);
        tokio::select! {
            () = collector => {}
            () = accepting => {}
        }
    });
    Ok(Gateway { addr, task })
}

/// The origin to answer with CORS headers, if `req`'s is allowed.
fn allowed_origin(cors: &[String], headers: &http::HeaderMap) -> Option<String> {
    let origin = headers.get("origin")?.to_str().ok()?;
    cors.iter()
        .any(|o| o == "*" || o == origin)
        .then(|| origin.to_owned())
}

async fn handle(
    service: s3s::service::S3Service,
    app: Option<&app::App>,
    cors: &[String],
    req: http::Request<s3s::Body>,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    let origin = allowed_origin(cors, req.headers());
    // A CORS preflight is answered here, never by the S3 layer.
    if req.method() == http::Method::OPTIONS
        && req.headers().contains_key("access-control-request-method")
    {
        let mut resp = http::Response::new(s3s::Body::empty());
        *resp.status_mut() = match origin {
            Some(_) => http::StatusCode::NO_CONTENT,
            None => http::StatusCode::FORBIDDEN,
        };
        if let Some(o) = origin {
            let h = resp.headers_mut();
            insert(h, "access-control-allow-origin", &o);
            insert(
                h,
                "access-control-allow-methods",
                "GET, HEAD, PUT, POST, DELETE",
            );
            let asked = req
                .headers()
                .get("access-control-request-headers")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*")
                .to_owned();
            insert(h, "access-control-allow-headers", &asked);
            insert(h, "access-control-max-age", "600");
            insert(h, "vary", "Origin");
        }
        return Ok(resp);
    }
    let mut resp = match app {
        Some(a) if a.matches(req.uri().path()) => a.handle(req).await,
        _ => match front::refuse(&req) {
            Some(refused) => refused,
            None => {
                let mut req = req;
                front::length_unknown(&mut req);
                service.call(req).await?
            }
        },
    };
    if let Some(o) = origin {
        let h = resp.headers_mut();
        insert(h, "access-control-allow-origin", &o);
        insert(
            h,
            "access-control-expose-headers",
            "ETag, Content-Length, Content-Range, Last-Modified, x-amz-request-id",
        );
        insert(h, "vary", "Origin");
    }
    Ok(resp)
}

fn insert(h: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
