//! Who may do what: the one access key pair ([`Auth`]), the rule for
//! requests ([`Access`]: unsigned reads, presigned URLs), and what a
//! prefix covers ([`covers`]), which public reads and the app tokens share.
//!
//! Invariants:
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

/// One access key pair.
#[derive(Clone)]
pub(crate) struct Auth {
    pub(crate) key: String,
    pub(crate) secret: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.key {
            Ok(SecretKey::from(self.secret.clone()))
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "the access key id {access_key:?} is not this gateway's"
            ))
        }
    }
}

/// Who may do what unsigned, and what presigned URLs may do.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) anonymous_read: bool,
    /// `(bucket, prefix)`: `None` for the one served bucket.
    pub(crate) public_read: Vec<(Option<String>, String)>,
}

impl Access {
    /// `--public-read` values as rules: serving one bucket, each is a
    /// prefix of its keys; serving a directory, `BUCKET/PREFIX` (a bare
    /// `BUCKET`: all of it).
    pub(crate) fn new(anonymous_read: bool, public_read: &[String], single: bool) -> Self {
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
        if cx.credentials().is_some() {
            return check_presigned(op, cx.uri(), cx.headers());
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
