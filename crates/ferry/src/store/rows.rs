//! Row-level content bookkeeping shared by the writer and the sync
//! records: where an object's content is, storing and releasing it, the
//! outbox, and collecting blobs nothing references.

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::blobs::{BlobStore, TempBlob};
use crate::store::index;

/// Where a new object's content is.
#[derive(Debug)]
pub(crate) enum Content {
    /// Small content, stored in the index.
    Inline(Bytes),
    /// A finished, fsynced temp blob waiting to be renamed into place.
    Blob(Box<TempBlob>),
}

/// The current content of a present object, if any: hash, inline, cached.
pub(crate) fn current(conn: &Connection, key: &str) -> Result<Option<(ContentHash, bool, bool)>> {
    let row: Option<(Vec<u8>, bool, bool)> = conn
        .prepare_cached("SELECT hash, inline, cached FROM objects WHERE key = ?1 AND present = 1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match row {
        None => Ok(None),
        Some((hash, inline, cached)) => ContentHash::from_slice(&hash)
            .map(|h| Some((h, inline, cached)))
            .ok_or_else(|| Error::IndexData(format!("object {key:?} has a malformed hash"))),
    }
}

/// Stores new content (inline row or blob file); returns whether it is inline.
pub(crate) fn store_content(
    conn: &Connection,
    blobs: &BlobStore,
    content: Content,
    hash: &ContentHash,
    garbage: &mut Vec<ContentHash>,
) -> Result<bool> {
    Ok(match content {
        Content::Inline(ref data) => {
            conn.prepare_cached("INSERT OR IGNORE INTO small_blobs (hash, data) VALUES (?1, ?2)")?
                .execute(params![&hash.0[..], &data[..]])?;
            true
        }
        Content::Blob(mut temp) => {
            blobs.install(&mut temp, hash)?;
            // A sealed blob's header names it: remember the salt of the file
            // now in place (an existing file is kept), so a read can refuse
            // another blob's file before opening any of it.
            if let Some(salt) = blobs.sealed_salt(hash)? {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO blob_salts (hash, salt) VALUES (?1, ?2)",
                )?
                .execute(params![&hash.0[..], &salt[..]])?;
            }
            // Should a later statement fail, the blob is unreferenced: collect it.
            garbage.push(*hash);
            false
        }
    })
}

/// Records the op in the outbox, replacing the key's entries that are not in flight.
pub(crate) fn enqueue(
    conn: &Connection,
    key: &str,
    op: &str,
    hash: Option<&ContentHash>,
    now: i64,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND state <> 'inflight'")?
        .execute([key])?;
    conn.prepare_cached(
        "INSERT INTO outbox (key, op, hash, state, created_ms) VALUES (?1, ?2, ?3, 'pending', ?4)",
    )?
    .execute(params![key, op, hash.map(|h| h.0.to_vec()), now])?;
    Ok(())
}

/// Drops content no present object uses any more.
pub(crate) fn release(
    conn: &Connection,
    hash: &ContentHash,
    inline: bool,
    garbage: &mut Vec<ContentHash>,
) -> Result<()> {
    if index::is_referenced(conn, hash, inline)? {
        return Ok(());
    }
    if inline {
        conn.prepare_cached("DELETE FROM small_blobs WHERE hash = ?1")?
            .execute([&hash.0[..]])?;
    } else {
        garbage.push(*hash);
    }
    Ok(())
}

/// Deletes the blob files among `candidates` that no object references,
/// holding the index write lock so no commit can start referencing them.
pub(crate) fn collect(
    conn: &mut Connection,
    blobs: &BlobStore,
    candidates: &[ContentHash],
) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut removed = 0;
    for hash in candidates {
        if !index::is_referenced(&tx, hash, false)? {
            blobs.remove(hash)?;
            tx.prepare_cached("DELETE FROM blob_salts WHERE hash = ?1")?
                .execute([&hash.0[..]])?;
            removed += 1;
        }
    }
    tx.commit()?;
    Ok(removed)
}

/// Releases the content of a row that had (hash, inline, cached).
pub(crate) fn release_old(
    conn: &Connection,
    old: Option<(ContentHash, bool, bool)>,
    garbage: &mut Vec<ContentHash>,
) -> Result<()> {
    match old {
        Some((hash, inline, true)) => release(conn, &hash, inline, garbage),
        _ => Ok(()),
    }
}
