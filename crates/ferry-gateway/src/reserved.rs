//! S3 operations on ferry's own objects (`.ferry/…` keys), which a ferry
//! replica syncing to the gateway writes on its remote and the gateway
//! keeps in its database (see [`crate::store`]): put (with `If-None-Match:
//! *` and `If-Match`, atomic), head and get (with the read conditions and
//! ranges), delete (with `If-Match`, atomic), and listings under a
//! `.ferry/` prefix. Copies and multipart uploads of them are refused.

use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{s3_error, S3Result};
use tokio::io::AsyncReadExt as _;

use crate::store::{Entry, ReservedCondition, ReservedError, ReservedObject, MAX_RESERVED};

/// Whether `key` names one of ferry's own objects.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(ferry::RESERVED_PREFIX)
}

/// Checks a `.ferry/` key: what follows the prefix must be a valid key.
fn check(key: &str) -> S3Result<()> {
    let rest = &key[ferry::RESERVED_PREFIX.len()..];
    ferry::validate_key(rest)
        .map_err(|e| s3_error!(InvalidArgument, "invalid key {key:?}: {}", e.rule))
}

fn failed(e: ReservedError, key: &str) -> s3s::S3Error {
    match e {
        ReservedError::PreconditionFailed => {
            s3_error!(PreconditionFailed, "{key:?}: precondition failed")
        }
        ReservedError::Db(m) => s3_error!(InternalError, "{key:?}: {m}"),
        ReservedError::Full => {
            let mut e = s3s::S3Error::with_message(
                s3s::S3ErrorCode::Custom("InsufficientStorage".into()),
                format!(
                    "{key:?}: ferry's own objects are at most {} and {} bytes together",
                    crate::store::MAX_RESERVED_OBJECTS,
                    crate::store::MAX_RESERVED_BYTES
                ),
            );
            e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            e
        }
    }
}

fn modified(o: &ReservedObject) -> SystemTime {
    // Whole seconds, as HTTP dates carry them.
    SystemTime::UNIX_EPOCH + Duration::from_secs((o.modified_ms.max(0) / 1000) as u64)
}

fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<ReservedCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(ReservedCondition::None),
        (None, Some(c)) if c.is_any() => Ok(ReservedCondition::IfAbsent),
        (None, Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on a write takes only *"
        )),
        (Some(c), None) => Ok(match c.as_etag() {
            Some(e) => ReservedCondition::IfMatch(e.value().to_owned()),
            None => ReservedCondition::IfPresent,
        }),
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidArgument,
            "If-Match and If-None-Match together on a write"
        )),
    }
}

/// `PutObject` of a `.ferry/` key.
pub(crate) async fn put(
    entry: &Entry,
    i: PutObjectInput,
    mut checksums: crate::wire::Checksums,
) -> S3Result<PutObjectOutput> {
    use md5::Digest as _;
    check(&i.key)?;
    let cond = write_condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
    let mut body = Vec::new();
    let mut reader = crate::wire::body_reader(i.body).take(MAX_RESERVED as u64 + 1);
    reader.read_to_end(&mut body).await.map_err(|e| {
        s3_error!(
            IncompleteBody,
            "the body of {:?} could not be read to its end: {e}",
            i.key
        )
    })?;
    if body.len() > MAX_RESERVED {
        return Err(s3_error!(
            EntityTooLarge,
            "{:?}: ferry's own objects are at most {MAX_RESERVED} bytes",
            i.key
        ));
    }
    if let Some(n) = i.content_length {
        if n != body.len() as i64 {
            return Err(s3_error!(
                IncompleteBody,
                "the body had {} bytes, Content-Length said {n}",
                body.len()
            ));
        }
    }
    if let Some(want) = crate::wire::decode_md5(i.content_md5.as_deref())? {
        let got: [u8; 16] = md5::Md5::digest(&body).into();
        if got != want {
            return Err(s3_error!(
                BadDigest,
                "the body does not match its Content-MD5"
            ));
        }
    }
    checksums.update(&body);
    checksums.verify()?;
    let metadata = crate::wire::to_metadata(i.metadata);
    let content_type = i
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let etag = entry
        .reserved_put(&i.key, &body, &content_type, &metadata, &cond)
        .map_err(|e| failed(e, &i.key))?;
    Ok(PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        size: Some(body.len() as i64),
        ..Default::default()
    })
}

/// The object at a `.ferry/` key, checked against the read conditions.
fn found(
    entry: &Entry,
    key: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<ReservedObject> {
    check(key)?;
    let o = entry
        .reserved_get(key)
        .map_err(|e| failed(e, key))?
        .ok_or_else(|| s3_error!(NoSuchKey, "no object {key:?}"))?;
    crate::wire::check_read_conditions(
        key,
        &o.etag,
        Timestamp::from(modified(&o)),
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
    )?;
    Ok(o)
}

/// `HeadObject` of a `.ferry/` key.
pub(crate) fn head(entry: &Entry, i: &HeadObjectInput) -> S3Result<HeadObjectOutput> {
    let o = found(
        entry,
        &i.key,
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
        i.if_modified_since.as_ref(),
        i.if_unmodified_since.as_ref(),
    )?;
    let (r, content_range) = crate::wire::range_of(i.range.as_ref(), o.body.len() as u64)?;
    Ok(HeadObjectOutput {
        content_length: Some((r.end - r.start) as i64),
        content_range,
        content_type: Some(o.content_type.clone()),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        last_modified: Some(Timestamp::from(modified(&o))),
        metadata: crate::wire::from_metadata(&o.metadata),
        accept_ranges: Some("bytes".into()),
        ..Default::default()
    })
}

/// `GetObject` of a `.ferry/` key.
pub(crate) fn get(entry: &Entry, i: &GetObjectInput) -> S3Result<GetObjectOutput> {
    let o = found(
        entry,
        &i.key,
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
        i.if_modified_since.as_ref(),
        i.if_unmodified_since.as_ref(),
    )?;
    let (r, content_range) = crate::wire::range_of(i.range.as_ref(), o.body.len() as u64)?;
    let part = o.body.slice(r.start as usize..r.end as usize);
    let len = part.len();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(part) });
    Ok(GetObjectOutput {
        body: Some(StreamingBlob::wrap(stream)),
        content_length: Some(len as i64),
        content_range,
        content_type: Some(o.content_type.clone()),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        last_modified: Some(Timestamp::from(modified(&o))),
        metadata: crate::wire::from_metadata(&o.metadata),
        accept_ranges: Some("bytes".into()),
        ..Default::default()
    })
}

/// `DeleteObject` of a `.ferry/` key (`If-Match` honoured atomically).
pub(crate) fn delete(entry: &Entry, key: &str, if_match: Option<&ETagCondition>) -> S3Result<()> {
    check(key)?;
    let cond = write_condition(if_match, None)?;
    entry
        .reserved_delete(key, &cond)
        .map_err(|e| failed(e, key))
}

/// A listing of `.ferry/` keys under `prefix` after `start`: the objects
/// and the last key when more follow.
pub(crate) fn list(
    entry: &Entry,
    prefix: &str,
    start: Option<&str>,
    max_keys: usize,
) -> S3Result<(Vec<Listed>, Option<String>)> {
    let (rows, more) = entry
        .reserved_list(prefix, start, max_keys)
        .map_err(|e| failed(e, prefix))?;
    let next = more.then(|| rows.last().map(|r| r.0.clone())).flatten();
    let items = rows
        .into_iter()
        .map(|(key, size, etag, ms)| Listed {
            key,
            size,
            etag,
            modified: SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
        })
        .collect();
    Ok((items, next))
}

/// One row of a listing of `.ferry/` objects.
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) modified: SystemTime,
}
