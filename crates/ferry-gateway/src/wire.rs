//! What the S3 operations share, below both the bucket's objects
//! ([`crate::s3`]) and ferry's own `.ferry/` objects ([`crate::reserved`]):
//! request bodies as readers, Content-MD5, metadata names as a bucket keeps
//! them, and the read conditions.

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

/// A bucket's user metadata as S3 serves it.
pub(crate) fn from_metadata(m: &ferry::Metadata) -> Option<Metadata> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (served_name(k).to_owned(), v.clone()))
            .collect()
    })
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
