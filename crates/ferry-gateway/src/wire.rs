//! What the S3 operations share, below both the bucket's objects
//! ([`crate::s3`]) and ferry's own `.ferry/` objects ([`crate::reserved`]):
//! request bodies as readers, Content-MD5, metadata names as a bucket keeps
//! them, the stored HTTP headers ([`HttpHeaders`]), and the read conditions.

use std::io;

use futures::TryStreamExt as _;
use s3s::dto::*;
use s3s::{s3_error, S3Result};
use tokio::io::AsyncRead;

/// A request body as a reader.
pub(crate) fn body_reader(body: Option<StreamingBlob>) -> impl AsyncRead + Send + Unpin + 'static {
    let stream = body
        .map(|b| {
            futures::future::Either::Left(
                b.map_err(|e| io::Error::other(format!("reading the request body: {e}"))),
            )
        })
        .unwrap_or_else(|| futures::future::Either::Right(futures::stream::empty()));
    tokio_util::io::StreamReader::new(stream)
}

/// The MD5 a Content-MD5 header names (base64).
pub(crate) fn decode_md5(b64: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    use base64::Engine as _;
    let Some(s) = b64 else { return Ok(None) };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
    <[u8; 16]>::try_from(raw.as_slice())
        .map(Some)
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not an MD5"))
}

/// An S3 metadata name as the bucket keeps it. ferry's own entries
/// (`ferry-hash`, … sent by a replica syncing to the gateway) cannot be user
/// metadata in a bucket, so names starting with `ferry-` or `_` are kept
/// with one `_` before them, and given back without it: a bijection.
fn stored_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(ferry::RESERVED_METADATA_PREFIX) || lower.starts_with('_') {
        format!("_{lower}")
    } else {
        lower
    }
}

/// The S3 metadata name of a name kept in the bucket ([`stored_name`]).
fn served_name(name: &str) -> &str {
    name.strip_prefix('_').unwrap_or(name)
}

/// A request's user metadata as the bucket keeps it.
pub(crate) fn to_metadata(m: Option<Metadata>) -> ferry::Metadata {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (stored_name(&k), v))
        .collect()
}

/// A bucket's user metadata as S3 serves it (the stored HTTP headers,
/// [`HttpHeaders`], are not user metadata).
pub(crate) fn from_metadata(m: &ferry::Metadata) -> Option<Metadata> {
    let user: Metadata = m
        .iter()
        .filter(|(k, _)| !k.starts_with(HTTP_PREFIX))
        .map(|(k, v)| (served_name(k).to_owned(), v.clone()))
        .collect();
    (!user.is_empty()).then_some(user)
}

/// Where the stored HTTP headers live in a bucket's metadata: under names
/// [`stored_name`] never makes (it puts `_` only before `ferry-` and `_`),
/// so no user metadata name can collide with them.
const HTTP_PREFIX: &str = "_http.";

/// The object headers S3 stores with an object and serves back, beside
/// its content type. A bucket's object has content type and user metadata
/// only, so the gateway keeps these in its metadata as `_http.NAME`
/// (they travel with the object to every replica, and a library or CLI
/// write can set them too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HttpHeaders {
    pub(crate) cache_control: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) content_encoding: Option<String>,
    pub(crate) content_language: Option<String>,
    /// An HTTP date, as sent.
    pub(crate) expires: Option<String>,
}

impl HttpHeaders {
    /// The headers of a write. `aws-chunked` (how the body was sent, not
    /// what it is) is no part of a stored `Content-Encoding`.
    pub(crate) fn new(
        cache_control: Option<String>,
        content_disposition: Option<String>,
        content_encoding: Option<String>,
        content_language: Option<String>,
        expires: Option<&Timestamp>,
    ) -> Self {
        let content_encoding = content_encoding
            .map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|t| !t.eq_ignore_ascii_case("aws-chunked") && !t.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|e| !e.is_empty());
        let expires = expires.and_then(|t| {
            let mut buf = Vec::new();
            t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
            String::from_utf8(buf).ok()
        });
        HttpHeaders {
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            expires,
        }
    }

    fn fields(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("cache-control", &self.cache_control),
            ("content-disposition", &self.content_disposition),
            ("content-encoding", &self.content_encoding),
            ("content-language", &self.content_language),
            ("expires", &self.expires),
        ]
    }

    /// Adds these headers to metadata as the bucket keeps it.
    pub(crate) fn store(&self, m: &mut ferry::Metadata) {
        for (name, value) in self.fields() {
            if let Some(v) = value {
                m.insert(format!("{HTTP_PREFIX}{name}"), v.clone());
            }
        }
    }

    /// The headers kept in a bucket's metadata.
    pub(crate) fn of(m: &ferry::Metadata) -> Self {
        let get = |name: &str| m.get(&format!("{HTTP_PREFIX}{name}")).cloned();
        HttpHeaders {
            cache_control: get("cache-control"),
            content_disposition: get("content-disposition"),
            content_encoding: get("content-encoding"),
            content_language: get("content-language"),
            expires: get("expires"),
        }
    }

    /// `Expires` as a timestamp (a stored value that is no HTTP date is
    /// not served).
    pub(crate) fn expires(&self) -> Option<Timestamp> {
        let e = self.expires.as_deref()?;
        Timestamp::parse(TimestampFormat::HttpDate, e).ok()
    }
}

/// User metadata whose values are not ASCII, as header values: a value
/// of ISO-8859-1 characters as those bytes (HTTP's own header charset,
/// which Python's and most HTTP clients decode), any other one
/// RFC 2047-encoded (as AWS serves them). s3s would encode every non-ASCII
/// value, and a client sent it as text: `Hello Worldé` must come back so.
pub(crate) fn non_ascii_metadata(
    m: &mut Option<Metadata>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let Some(map) = m else { return Vec::new() };
    let mut out = Vec::new();
    map.retain(|k, v| {
        if v.is_ascii() || v.chars().any(|c| u32::from(c) > 0xff) {
            return true;
        }
        let bytes: Vec<u8> = v.chars().map(|c| c as u8).collect();
        let name = http::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes());
        match (name, http::HeaderValue::from_bytes(&bytes)) {
            (Ok(n), Ok(v)) => {
                out.push((n, v));
                false
            }
            _ => true,
        }
    });
    if map.is_empty() {
        *m = None;
    }
    out
}

/// The `x-amz-checksum-*` values a write names, in headers or in
/// trailers after an `aws-chunked` body, and their digests over the body
/// as it passes: [`Checksums::verify`] at the end says `BadDigest` for
/// any that differs, so the write it feeds commits nothing.
pub(crate) struct Checksums {
    hasher: s3s::checksum::ChecksumHasher,
    given: Checksum,
    trailers: Option<s3s::TrailingHeaders>,
}

/// The names of the checksum headers and trailers, as S3 spells them.
const CHECKSUM_NAMES: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

impl Checksums {
    /// The checksums of a write: the values `given` in headers, the
    /// algorithm an SDK names (`x-amz-sdk-checksum-algorithm`), and the
    /// trailers `x-amz-trailer` announces.
    pub(crate) fn new(
        given: Checksum,
        algorithm: Option<&ChecksumAlgorithm>,
        headers: &http::HeaderMap,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<Self> {
        let mut want = [
            given.checksum_crc32.is_some(),
            given.checksum_crc32c.is_some(),
            given.checksum_crc64nvme.is_some(),
            given.checksum_sha1.is_some(),
            given.checksum_sha256.is_some(),
        ];
        if let Some(a) = algorithm {
            let i = match a.as_str().to_ascii_uppercase().as_str() {
                "CRC32" => 0,
                "CRC32C" => 1,
                "CRC64NVME" => 2,
                "SHA1" => 3,
                "SHA256" => 4,
                other => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "unknown checksum algorithm {other:?}"
                    ))
                }
            };
            want[i] = true;
        }
        for v in headers.get_all("x-amz-trailer") {
            for name in v.to_str().unwrap_or_default().split(',') {
                let name = name.trim().to_ascii_lowercase();
                if let Some(i) = CHECKSUM_NAMES.iter().position(|n| *n == name) {
                    want[i] = true;
                }
            }
        }
        let hasher = s3s::checksum::ChecksumHasher {
            crc32: want[0].then(Default::default),
            crc32c: want[1].then(Default::default),
            crc64nvme: want[2].then(Default::default),
            sha1: want[3].then(Default::default),
            sha256: want[4].then(Default::default),
        };
        Ok(Checksums {
            hasher,
            given,
            trailers,
        })
    }

    /// Takes in the next bytes of the body.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// Compares the digests with the values given (headers, then the
    /// trailers, which the body's end has made ready).
    pub(crate) fn verify(self) -> S3Result<()> {
        let mut given = self.given;
        if let Some(t) = self.trailers.and_then(|t| t.take()) {
            let slots = [
                &mut given.checksum_crc32,
                &mut given.checksum_crc32c,
                &mut given.checksum_crc64nvme,
                &mut given.checksum_sha1,
                &mut given.checksum_sha256,
            ];
            for (name, slot) in CHECKSUM_NAMES.iter().zip(slots) {
                if let Some(v) = t.get(*name) {
                    let v = v.to_str().map_err(|_| {
                        s3_error!(InvalidArgument, "the trailer {name} is not text")
                    })?;
                    *slot = Some(v.trim().to_owned());
                }
            }
        }
        let got = self.hasher.finalize();
        let pairs = [
            (&given.checksum_crc32, &got.checksum_crc32),
            (&given.checksum_crc32c, &got.checksum_crc32c),
            (&given.checksum_crc64nvme, &got.checksum_crc64nvme),
            (&given.checksum_sha1, &got.checksum_sha1),
            (&given.checksum_sha256, &got.checksum_sha256),
        ];
        for (name, (want, got)) in CHECKSUM_NAMES.iter().zip(pairs) {
            if let Some(want) = want {
                if got.as_deref() != Some(want.trim()) {
                    return Err(s3_error!(
                        BadDigest,
                        "the body does not match its {name} ({want}; it is {})",
                        got.as_deref().unwrap_or("not computed")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a GET's or HEAD's conditions against an object's ETag and
/// modification time (304 and 412 as S3 answers them).
pub(crate) fn check_read_conditions(
    key: &str,
    etag: &str,
    modified: Timestamp,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.value() == etag);
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed, "{key:?} has another ETag"));
        }
    } else if let Some(t) = if_unmodified_since {
        if modified > *t {
            return Err(s3_error!(PreconditionFailed, "{key:?} was modified since"));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = if_modified_since {
        if modified <= *t {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

/// The bytes a GET or HEAD answers with (the whole object without a
/// Range) and its `Content-Range`, checked against the object's size (416
/// when it cannot be met).
pub(crate) fn range_of(
    range: Option<&Range>,
    size: u64,
) -> S3Result<(std::ops::Range<u64>, Option<String>)> {
    match range {
        None => Ok((0..size, None)),
        Some(r) => {
            let r = r.check(size)?;
            let shown = format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1));
            Ok((r, Some(shown)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_map_both_ways() {
        for name in ["owner", "ferry-hash", "_x", "__y", "ferry", "x_ferry-"] {
            let kept = stored_name(name);
            assert!(!kept.starts_with("ferry-"), "{kept}");
            assert_eq!(served_name(&kept), name);
        }
        assert_eq!(stored_name("Owner"), "owner");
    }
}
