//! The remote listing of a full reconcile, spilled to a temporary SQLite
//! file (`tmp/listing-<pid>-<random>.tmp` in the bucket) and read back in
//! key order a window at a time, so a sync holds a window of keys, never
//! the whole bucket. Stores list in their own order (an encrypted remote
//! in the order of its ciphertext names), so the listing is sorted here.
//!
//! The file is locked by its writer like every temp file (a collector
//! removes it only once its process is gone) and deleted when dropped.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::hash::{ContentHash, MetaDigest};
use crate::remote::RemoteObject;

/// A spilled listing.
pub(crate) struct Spill {
    conn: Connection,
    path: PathBuf,
    _lock: File,
    inserted: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("path", &self.path)
            .field("inserted", &self.inserted)
            .finish()
    }
}

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::IndexData(format!("listing spill {}: {e}", path.display()))
}

impl Spill {
    /// A new, empty spill file under `tmp`.
    pub(crate) fn create(tmp: &Path) -> Result<Spill> {
        std::fs::create_dir_all(tmp).map_err(|e| Error::io("creating", tmp, e))?;
        let name = format!(
            "listing-{}-{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = tmp.join(name);
        let lock = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("creating", &path, e))?;
        lock.try_lock()
            .map_err(|e| Error::io("locking", &path, std::io::Error::other(e.to_string())))?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_err(&path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -4096;
             CREATE TABLE listing (
                 key          TEXT PRIMARY KEY NOT NULL,
                 etag         TEXT NOT NULL,
                 size         INTEGER NOT NULL,
                 modified_ms  INTEGER,
                 hash         BLOB,
                 content_type TEXT,
                 metadata     TEXT NOT NULL,
                 ferry_mtime  INTEGER,
                 has_metadata INTEGER NOT NULL,
                 device       TEXT,
                 base         TEXT,
                 meta         BLOB
             ) WITHOUT ROWID;",
        )
        .map_err(|e| db_err(&path, e))?;
        Ok(Spill {
            conn,
            path,
            _lock: lock,
            inserted: 0,
        })
    }

    /// Whether a spilled key starts with `prefix`.
    pub(crate) fn holds_prefix(&self, prefix: &str) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM listing WHERE key >= ?1 ORDER BY key LIMIT 1")
            .map_err(|e| db_err(&self.path, e))?;
        let first: Option<String> =
            stmt.query_row([prefix], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(db_err(&self.path, e)),
                })?;
        Ok(first.is_some_and(|k| k.starts_with(prefix)))
    }

    /// Adds a page of objects (a key listed twice keeps its last description).
    pub(crate) fn insert(&mut self, objects: &[RemoteObject]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| db_err(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO listing VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|e| db_err(&path, e))?;
            for o in objects {
                let metadata = serde_json::to_string(&o.metadata)
                    .map_err(|e| Error::IndexData(format!("listing spill: {e}")))?;
                stmt.execute(params![
                    o.key,
                    o.etag,
                    o.size as i64,
                    o.modified_ms,
                    o.hash.map(|h| h.0.to_vec()),
                    o.content_type,
                    metadata,
                    o.ferry_mtime,
                    o.has_metadata,
                    o.device,
                    o.base,
                    o.meta.map(|m| m.0.to_vec()),
                ])
                .map_err(|e| db_err(&path, e))?;
            }
        }
        tx.commit().map_err(|e| db_err(&path, e))?;
        self.inserted += objects.len() as u64;
        Ok(())
    }

    /// At most `limit` objects with keys after `after`, in key order.
    pub(crate) fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RemoteObject>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, etag, size, modified_ms, hash, content_type, metadata, ferry_mtime, \
                 has_metadata, device, base, meta FROM listing \
                 WHERE key > ?1 ORDER BY key LIMIT ?2",
            )
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map(params![after.unwrap_or(""), limit as i64], |r| {
                let metadata: String = r.get(6)?;
                Ok(RemoteObject {
                    key: r.get(0)?,
                    etag: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    modified_ms: r.get(3)?,
                    hash: r
                        .get::<_, Option<Vec<u8>>>(4)?
                        .as_deref()
                        .and_then(ContentHash::from_slice),
                    content_type: r.get(5)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    ferry_mtime: r.get(7)?,
                    has_metadata: r.get(8)?,
                    device: r.get(9)?,
                    base: r.get(10)?,
                    meta: r
                        .get::<_, Option<Vec<u8>>>(11)?
                        .as_deref()
                        .and_then(MetaDigest::from_slice),
                    stamp: None,
                })
            })
            .map_err(|e| db_err(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_err(&self.path, e))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
