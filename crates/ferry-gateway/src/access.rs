//! Who may do what: the access keys ([`Keys`]: the owner's pair and the
//! apps' keys, each limited to its buckets and its [`Rights`]), the rule
//! for requests ([`Access`]: unsigned reads, presigned URLs, app keys), and
//! what a prefix covers ([`covers`]), which public reads and the app tokens
//! share.
//!
//! Invariants:
//! - The owner's key may do everything. An app key reaches only its
//!   buckets: reads with [`Rights::Read`], reads and object writes with
//!   [`Rights::Write`]; it never creates or deletes a bucket, copies only
//!   from its buckets, and ListBuckets shows it only its buckets. Every
//!   other request of an app key is `AccessDenied`.
//! - App keys are looked up on every signed request ([`AppKeys::current`]),
//!   so a key removed while the gateway runs stops working at once.
//! - A presigned URL does exactly what was signed: GetObject, HeadObject
//!   or PutObject (the operations the signer mints), and every `x-amz-*`
//!   header it arrives with is one of its signed headers. s3s checks only
//!   the signed headers, so without this an unsigned `x-amz-copy-source`
//!   would turn a signed upload into a copy of any key.
//! - ferry's own objects (`.ferry/…`) are never read unsigned, and a
//!   prefix covers them only when it names `.ferry/` itself.
//! - A prefix names a folder (`photos/`: the keys under it), an exact key
//!   (`index.html`), or every key (`""`); it is matched against the key
//!   within its bucket only.

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

/// Whether `prefix` covers `key` (see the module's invariants).
pub(crate) fn covers(prefix: &str, key: &str) -> bool {
    let reserved = key.starts_with(ferry::RESERVED_PREFIX);
    if reserved && !prefix.starts_with(ferry::RESERVED_PREFIX) {
        return false;
    }
    prefix.is_empty() || key == prefix || (prefix.ends_with('/') && key.starts_with(prefix))
}

/// What an app key may do in its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    /// GET, HEAD and listings.
    Read,
    /// Those, and every object write: PUT, copy, DELETE, multipart uploads.
    Write,
}

/// An app's access key: which buckets it reaches and what it may do there.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey {
    /// Its name (what `ferry serve keys` shows).
    pub name: String,
    /// The access key id the app signs with.
    pub access_key_id: String,
    /// Its secret (never in `Debug`).
    pub secret_access_key: String,
    /// The S3 names of the buckets it reaches.
    pub buckets: Vec<String>,
    /// What it may do in them.
    pub rights: Rights,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("buckets", &self.buckets)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

/// Where the app keys come from: asked on every signed request, so it
/// must be cheap (a front end that reads them from a file checks whether
/// the file changed and reads it again only then).
pub trait AppKeys: Send + Sync + 'static {
    /// The app keys as they are now.
    fn current(&self) -> Arc<Vec<AppKey>>;
}

/// A fixed set of app keys.
impl AppKeys for Arc<Vec<AppKey>> {
    fn current(&self) -> Arc<Vec<AppKey>> {
        self.clone()
    }
}

/// The gateway's access keys: the owner's pair and the app keys.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) owner_id: String,
    pub(crate) owner_secret: String,
    pub(crate) apps: Option<Arc<dyn AppKeys>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("owner_id", &self.owner_id)
            .finish_non_exhaustive()
    }
}

/// Who signed a request.
pub(crate) enum Signer {
    /// No one (an unsigned request).
    Anonymous,
    /// The owner's key.
    Owner,
    /// An app key.
    App(AppKey),
    /// A key that is no longer known (removed after s3s checked it).
    Unknown,
}

impl Keys {
    /// Who `credentials` belong to.
    pub(crate) fn signer(&self, credentials: Option<&s3s::auth::Credentials>) -> Signer {
        let Some(c) = credentials else {
            return Signer::Anonymous;
        };
        if c.access_key == self.owner_id {
            return Signer::Owner;
        }
        self.app(&c.access_key).map_or(Signer::Unknown, Signer::App)
    }

    fn app(&self, id: &str) -> Option<AppKey> {
        self.apps
            .as_ref()?
            .current()
            .iter()
            .find(|k| k.access_key_id == id)
            .cloned()
    }

    /// Whether the signer of `credentials` may read `bucket` (a copy's
    /// source).
    pub(crate) fn may_read(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        bucket: &str,
    ) -> S3Result<()> {
        match self.signer(credentials) {
            Signer::Owner => Ok(()),
            Signer::App(k) if k.buckets.iter().any(|b| b == bucket) => Ok(()),
            Signer::App(k) => Err(s3_error!(
                AccessDenied,
                "the key {:?} does not reach the bucket {bucket:?}",
                k.name
            )),
            Signer::Anonymous | Signer::Unknown => {
                Err(s3_error!(AccessDenied, "a signature is required"))
            }
        }
    }

    /// Whether the signer of `credentials` sees `bucket` in ListBuckets.
    pub(crate) fn lists(&self, credentials: Option<&s3s::auth::Credentials>, bucket: &str) -> bool {
        self.may_read(credentials, bucket).is_ok()
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.owner_id {
            return Ok(SecretKey::from(self.owner_secret.clone()));
        }
        match self.app(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret_access_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "the access key id {access_key:?} is not this gateway's"
            )),
        }
    }
}

/// The operations an app key with [`Rights::Read`] may do.
fn reads(op: &str) -> bool {
    matches!(
        op,
        "GetObject"
            | "HeadObject"
            | "GetObjectAttributes"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
            | "HeadBucket"
            | "GetBucketLocation"
            | "GetBucketVersioning"
    )
}

/// Refuses what app key `key` may not do: `op` on `path`.
fn check_app(key: &AppKey, op: &str, path: &s3s::path::S3Path) -> S3Result<()> {
    let bucket = match path {
        // Filtered to the key's buckets by ListBuckets itself.
        s3s::path::S3Path::Root => return Ok(()),
        s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => bucket,
    };
    if matches!(op, "CreateBucket" | "DeleteBucket") {
        return Err(s3_error!(
            AccessDenied,
            "only the owner's key creates and deletes buckets (the key {:?} is an app's)",
            key.name
        ));
    }
    if !key.buckets.iter().any(|b| b == bucket.as_ref()) {
        return Err(s3_error!(
            AccessDenied,
            "the key {:?} does not reach the bucket {bucket:?}",
            key.name
        ));
    }
    if key.rights == Rights::Read && !reads(op) {
        return Err(s3_error!(
            AccessDenied,
            "the key {:?} may only read (this request is {op})",
            key.name
        ));
    }
    Ok(())
}

/// Who may do what unsigned, what presigned URLs may do, and what each
/// app key may do.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) anonymous_read: bool,
    /// `(bucket, prefix)`: `None` for the one served bucket.
    pub(crate) public_read: Vec<(Option<String>, String)>,
    pub(crate) keys: Keys,
}

impl Access {
    /// `--public-read` values as rules: serving one bucket, each is a
    /// prefix of its keys; serving a directory, `BUCKET/PREFIX` (a bare
    /// `BUCKET`: all of it).
    pub(crate) fn new(
        anonymous_read: bool,
        public_read: &[String],
        single: bool,
        keys: Keys,
    ) -> Self {
        let public_read = public_read
            .iter()
            .map(|p| {
                if single {
                    (None, p.clone())
                } else {
                    match p.split_once('/') {
                        Some((b, k)) => (Some(b.to_owned()), k.to_owned()),
                        None => (Some(p.clone()), String::new()),
                    }
                }
            })
            .collect();
        Access {
            anonymous_read,
            public_read,
            keys,
        }
    }

    fn public(&self, bucket: &str, key: &str) -> bool {
        self.public_read
            .iter()
            .any(|(b, p)| b.as_deref().is_none_or(|b| b == bucket) && covers(p, key))
    }
}

/// The query parameter `name` of `uri`, percent-decoded.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Refuses what a presigned URL (SigV4 in the query) was not signed for.
fn check_presigned(op: &str, uri: &http::Uri, headers: &http::HeaderMap) -> S3Result<()> {
    let v4 = query_param(uri, "X-Amz-Signature").is_some();
    // SigV2 signs every x-amz-* header sent, so only the operation needs
    // checking for it.
    let v2 = query_param(uri, "Signature").is_some();
    if !v4 && !v2 {
        return Ok(());
    }
    if !matches!(op, "GetObject" | "HeadObject" | "PutObject") {
        return Err(s3_error!(
            AccessDenied,
            "a presigned URL may only get, head or put the object it names (this request is {op})"
        ));
    }
    if !v4 {
        return Ok(());
    }
    let signed = query_param(uri, "X-Amz-SignedHeaders").unwrap_or_default();
    let signed: Vec<&str> = signed.split(';').collect();
    for name in headers.keys() {
        let name = name.as_str();
        if name.starts_with("x-amz-") && !signed.contains(&name) {
            return Err(s3_error!(
                AccessDenied,
                "there were headers present in the request which were not signed: {name}"
            ));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name();
        match self.keys.signer(cx.credentials()) {
            Signer::Owner => return check_presigned(op, cx.uri(), cx.headers()),
            Signer::App(key) => {
                check_presigned(op, cx.uri(), cx.headers())?;
                return check_app(&key, op, cx.s3_path());
            }
            Signer::Unknown => {
                return Err(s3_error!(
                    AccessDenied,
                    "the access key was removed while the request was checked"
                ))
            }
            Signer::Anonymous => {}
        }
        let reading = matches!(op, "GetObject" | "HeadObject" | "GetObjectAttributes");
        let listing = matches!(
            op,
            "ListObjects"
                | "ListObjectsV2"
                | "ListObjectVersions"
                | "HeadBucket"
                | "GetBucketLocation"
                | "GetBucketVersioning"
                | "ListBuckets"
        );
        // ferry's own objects: never unsigned (they are listed only under
        // a `.ferry/` prefix).
        let own = match cx.s3_path() {
            s3s::path::S3Path::Object { key, .. } => key.starts_with(ferry::RESERVED_PREFIX),
            _ => query_param(cx.uri(), "prefix")
                .is_some_and(|p| p.starts_with(ferry::RESERVED_PREFIX)),
        };
        if own {
            return Err(s3_error!(
                AccessDenied,
                "ferry's own objects (.ferry/) are never served unsigned"
            ));
        }
        if self.anonymous_read && (reading || listing) {
            return Ok(());
        }
        if reading {
            if let s3s::path::S3Path::Object { bucket, key } = cx.s3_path() {
                if self.public(bucket, key) {
                    return Ok(());
                }
            }
        }
        Err(s3_error!(
            AccessDenied,
            "a signature is required (this path is not public)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_folders_exact_keys_or_everything() {
        assert!(covers("", "a/b"));
        assert!(covers("photos/", "photos/cat.jpg"));
        assert!(!covers("photos/", "photos"));
        assert!(!covers("photos", "photos2/x"));
        assert!(covers("photos", "photos"));
        assert!(!covers("pub", "public/x"));
        assert!(!covers("", ".ferry/key.json"));
        assert!(!covers(".ferry", ".ferry/key.json"));
        assert!(covers(".ferry/", ".ferry/key.json"));
        assert!(covers(".ferry/journal/", ".ferry/journal/1"));
    }
}
