//! The index: a SQLite database (WAL mode) holding every object's metadata,
//! small objects' content, sync bookkeeping and the outbox.
//!
//! The schema is versioned with `PRAGMA user_version`; [`migrate`] brings an
//! older index up to [`SCHEMA_VERSION`] and refuses a newer one. The exact
//! schema is pinned in `docs/design.md`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::metadata::Metadata;
use crate::state::SyncState;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 9;

/// How long a writer waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// Migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the initial schema.
    r#"
    CREATE TABLE settings (
        name  TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE objects (
        key            TEXT PRIMARY KEY NOT NULL,
        present        INTEGER NOT NULL,
        size           INTEGER NOT NULL,
        hash           BLOB NOT NULL,
        inline         INTEGER NOT NULL,
        content_type   TEXT NOT NULL,
        metadata       TEXT NOT NULL,
        modified_ms    INTEGER NOT NULL,
        state          TEXT NOT NULL,
        base_etag      TEXT,
        base_hash      BLOB,
        pinned         INTEGER NOT NULL DEFAULT 0,
        cached         INTEGER NOT NULL DEFAULT 1,
        last_access_ms INTEGER NOT NULL,
        access_count   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX objects_by_hash ON objects(hash) WHERE present = 1;
    CREATE INDEX objects_by_state ON objects(state) WHERE state <> 'synced';
    CREATE TABLE small_blobs (
        hash BLOB PRIMARY KEY NOT NULL,
        data BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        key             TEXT NOT NULL,
        op              TEXT NOT NULL,
        hash            BLOB,
        state           TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        created_ms      INTEGER NOT NULL
    );
    CREATE INDEX outbox_by_key ON outbox(key);
    "#,
    // 1 -> 2: sync bookkeeping for conflicts.
    r#"
    ALTER TABLE objects ADD COLUMN remote_etag TEXT;
    ALTER TABLE objects ADD COLUMN conflict TEXT;
    "#,
    // 2 -> 3: one-shot sync requests answered by the leading process.
    r#"
    CREATE TABLE sync_requests (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        mode         TEXT NOT NULL,
        dry_run      INTEGER NOT NULL,
        requested_ms INTEGER NOT NULL,
        state        TEXT NOT NULL,
        result       TEXT,
        error        TEXT
    );
    "#,
    // 3 -> 4: versions are content and metadata; remote listing times;
    // what our own last push was based on; one-shot options; the journal queue.
    r#"
    ALTER TABLE objects ADD COLUMN meta_digest BLOB;
    ALTER TABLE objects ADD COLUMN base_meta BLOB;
    ALTER TABLE objects ADD COLUMN base_modified_ms INTEGER;
    ALTER TABLE objects ADD COLUMN pushed_base TEXT;
    ALTER TABLE sync_requests ADD COLUMN force INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_requests ADD COLUMN retry INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_requests ADD COLUMN max_delete TEXT;
    ALTER TABLE sync_requests ADD COLUMN full INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX objects_pinned ON objects(key) WHERE pinned = 1;
    CREATE TABLE journal_pending (
        key  TEXT PRIMARY KEY NOT NULL,
        op   TEXT NOT NULL,
        etag TEXT,
        hash BLOB
    ) WITHOUT ROWID;
    "#,
    // 4 -> 5: a pushed version's outbox entry is deleted, not kept as
    // 'acked' (the outbox held one row per key ever pushed, scanned by
    // every run); small_blobs becomes a rowid table (in a WITHOUT ROWID
    // table every row over about 1 KiB took an overflow page of its own:
    // 4 KiB on disk per small object); the bytes of cached content are a
    // total kept by triggers (summing them read every row: seconds at 1M,
    // in every process's first put).
    r#"
    DELETE FROM outbox WHERE state = 'acked';
    CREATE TABLE small_blobs_v5 (
        hash BLOB PRIMARY KEY NOT NULL,
        data BLOB NOT NULL
    );
    INSERT INTO small_blobs_v5 (hash, data) SELECT hash, data FROM small_blobs;
    DROP TABLE small_blobs;
    ALTER TABLE small_blobs_v5 RENAME TO small_blobs;
    CREATE TABLE totals (
        name  TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO totals (name, value)
        SELECT 'cached_bytes', COALESCE(SUM(size), 0) FROM objects
        WHERE present = 1 AND cached = 1;
    CREATE TRIGGER cached_bytes_insert AFTER INSERT ON objects
        WHEN new.present = 1 AND new.cached = 1
    BEGIN
        UPDATE totals SET value = value + new.size WHERE name = 'cached_bytes';
    END;
    CREATE TRIGGER cached_bytes_delete AFTER DELETE ON objects
        WHEN old.present = 1 AND old.cached = 1
    BEGIN
        UPDATE totals SET value = value - old.size WHERE name = 'cached_bytes';
    END;
    CREATE TRIGGER cached_bytes_update AFTER UPDATE OF present, cached, size ON objects
    BEGIN
        UPDATE totals SET value = value
            - (CASE WHEN old.present = 1 AND old.cached = 1 THEN old.size ELSE 0 END)
            + (CASE WHEN new.present = 1 AND new.cached = 1 THEN new.size ELSE 0 END)
        WHERE name = 'cached_bytes';
    END;
    "#,
    // 5 -> 6: a sync request may carry a filter (the JSON array of its
    // rule lines; NULL: none). `stamps` holds, per key, the newest version
    // stamp an encrypted bucket has seen (rows outlive deletions);
    // `blob_salts` the header salt of each sealed blob file, checked before
    // a byte of it is opened. The cached bytes count each blob once: keys
    // that share content share one blob (the first reference adds its
    // size, the last one gone removes it; objects_by_hash answers the
    // EXISTS).
    r#"
    ALTER TABLE sync_requests ADD COLUMN filter TEXT;
    CREATE TABLE stamps (
        key   TEXT PRIMARY KEY NOT NULL,
        stamp INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE blob_salts (
        hash BLOB PRIMARY KEY NOT NULL,
        salt BLOB NOT NULL
    ) WITHOUT ROWID;
    DROP TRIGGER cached_bytes_insert;
    DROP TRIGGER cached_bytes_delete;
    DROP TRIGGER cached_bytes_update;
    UPDATE totals SET value = (
        SELECT COALESCE(SUM(size), 0) FROM (
            SELECT MAX(size) AS size FROM objects
            WHERE present = 1 AND cached = 1 GROUP BY hash
        )
    ) WHERE name = 'cached_bytes';
    CREATE TRIGGER cached_bytes_insert AFTER INSERT ON objects
        WHEN new.present = 1 AND new.cached = 1 AND NOT EXISTS (
            SELECT 1 FROM objects WHERE hash = new.hash AND present = 1 AND cached = 1
            AND key <> new.key)
    BEGIN
        UPDATE totals SET value = value + new.size WHERE name = 'cached_bytes';
    END;
    CREATE TRIGGER cached_bytes_delete AFTER DELETE ON objects
        WHEN old.present = 1 AND old.cached = 1 AND NOT EXISTS (
            SELECT 1 FROM objects WHERE hash = old.hash AND present = 1 AND cached = 1)
    BEGIN
        UPDATE totals SET value = value - old.size WHERE name = 'cached_bytes';
    END;
    CREATE TRIGGER cached_bytes_update AFTER UPDATE OF present, cached, size, hash ON objects
    BEGIN
        UPDATE totals SET value = value
            - (CASE WHEN old.present = 1 AND old.cached = 1 AND NOT EXISTS (
                   SELECT 1 FROM objects WHERE hash = old.hash AND present = 1 AND cached = 1
                   AND key <> old.key)
               THEN old.size ELSE 0 END)
            + (CASE WHEN new.present = 1 AND new.cached = 1 AND NOT EXISTS (
                   SELECT 1 FROM objects WHERE hash = new.hash AND present = 1 AND cached = 1
                   AND key <> new.key)
               THEN new.size ELSE 0 END)
        WHERE name = 'cached_bytes';
    END;
    "#,
    // 6 -> 7: a queued journal put names the version its writer replaced
    // (the `ferry-base` of the first of its un-journaled pushes), so a
    // replica whose own push was overwritten on a store that ignores
    // conditions tells a writer that saw it from one that did not.
    r#"
    ALTER TABLE journal_pending ADD COLUMN base TEXT;
    "#,
    // 7 -> 8: version stamps below a key's floor that a journal record
    // newer than what this replica had read names (a version written by a
    // device that never saw the newer one: a create racing a delete, two
    // writers racing on a store that ignores conditions). Not a rollback.
    r#"
    CREATE TABLE stamps_accepted (
        key   TEXT NOT NULL,
        stamp INTEGER NOT NULL,
        PRIMARY KEY (key, stamp)
    ) WITHOUT ROWID;
    "#,
    // 8 -> 9: a queued journal put names the stamp sealed into the version
    // it pushed (the key's floor may rise past it before the record is
    // written: a reader then accepts the version on the record's word); a
    // queued delete naming a version a local edit superseded has stamp 0
    // (none: nothing was deleted); other deletes NULL (the key's floor).
    r#"
    ALTER TABLE journal_pending ADD COLUMN stamp INTEGER;
    "#,
];

/// How a connection to the index was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads and writes.
    Write,
    /// Read-only: this user cannot write the index or its directory.
    NoPermission,
    /// Read-only: the file system holding the index is full, so SQLite
    /// could not size its shared-memory file (or write at all).
    DiskFull,
}

/// Opens a connection to the index at `path` with ferry's pragmas; an
/// existing index this user cannot write (read-only file or directory), or
/// on a full disk, is opened read-only (`Connection::is_readonly` tells).
pub(crate) fn open(path: &Path, create: bool) -> Result<Connection> {
    open_as(path, create).map(|(conn, _)| conn)
}

/// [`open`], saying how the connection was opened.
pub(crate) fn open_as(path: &Path, create: bool) -> Result<(Connection, Access)> {
    match open_writable(path, create) {
        Err(e) if !create && lacks_write_access(&e) => {
            Ok((open_read_only(path)?, Access::NoPermission))
        }
        Err(e) if !create && disk_full(path, &e) => {
            Ok((open_on_full_disk(path)?, Access::DiskFull))
        }
        Err(e) if disk_full(path, &e) => Err(Error::DiskFull {
            path: path.to_owned(),
        }),
        Ok(conn) => Ok((conn, Access::Write)),
        Err(e) => Err(e),
    }
}

/// A connection like the one a bucket opened with `access` (a read-only
/// bucket's readers go straight to the read-only way that worked).
pub(crate) fn open_like(path: &Path, access: Access) -> Result<Connection> {
    match access {
        Access::Write => open(path, false),
        Access::NoPermission => open(path, false),
        Access::DiskFull => open_on_full_disk(path),
    }
}

fn open_writable(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // SQLite quietly opens a write-protected file read-only.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            None,
        )
        .into());
    }
    // WAL lets readers in any process run beside one writer; FULL makes every
    // commit durable (NORMAL can lose the last commits on power loss).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A directory that is not writable shows at the first read (the WAL
    // index cannot be created).
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn lacks_write_access(e: &Error) -> bool {
    matches!(
        e,
        Error::Index(rusqlite::Error::SqliteFailure(f, _)) if matches!(
            f.code,
            rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::PermissionDenied
        )
    )
}

/// Free space below which a failed open or write is taken as a full disk
/// (SQLite's shared-memory file alone takes 32 KiB).
const FULL_BELOW: u64 = 1 << 20;

/// True when `e` is what SQLite answers when it cannot write (a full
/// database or journal, or an I/O error where its shared-memory file grows)
/// and the file system holding `path` has less than [`FULL_BELOW`] bytes
/// free for this user.
pub(crate) fn disk_full(path: &Path, e: &Error) -> bool {
    let Error::Index(rusqlite::Error::SqliteFailure(f, _)) = e else {
        return false;
    };
    match f.code {
        rusqlite::ErrorCode::DiskFull => true,
        rusqlite::ErrorCode::SystemIoFailure => free_space(path).is_some_and(|n| n < FULL_BELOW),
        _ => false,
    }
}

/// Bytes this user may still write on the file system holding `path`.
#[cfg(unix)]
fn free_space(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
fn free_space(_path: &Path) -> Option<u64> {
    None
}

/// A read-only connection on a full disk. A WAL database needs its
/// shared-memory file (`-shm`) sized to 32 KiB, which a full disk refuses
/// (`SQLITE_IOERR_SHMMAP`); with `readonly_shm` SQLite maps an existing
/// `-shm` read-only and, with no writer attached, builds the WAL index in
/// heap memory instead (it reads the WAL, so nothing committed is missed).
/// That needs the `-shm` to exist: an empty file takes no data blocks, so
/// it is made if missing. Where even that fails and no WAL is left over,
/// the file is read `immutable`.
fn open_on_full_disk(path: &Path) -> Result<Connection> {
    let shm = sibling(path, "-shm");
    let has_shm = shm.exists()
        || std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&shm)
            .is_ok();
    let has_wal = std::fs::metadata(sibling(path, "-wal")).is_ok_and(|m| m.len() > 0);
    let params = match (has_shm, has_wal) {
        (true, _) => "?mode=ro&readonly_shm=1",
        (false, false) => "?immutable=1",
        (false, true) => {
            return Err(Error::DiskFull {
                path: path.to_owned(),
            })
        }
    };
    read_only_uri(path, params)
}

/// `path` with `suffix` appended to its file name (`index.db-wal`).
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A read-only connection. Without a write-ahead log left over (a clean
/// close removes it) the file is opened `immutable`: SQLite then needs no
/// shared-memory file, which a read-only directory could not hold.
fn open_read_only(path: &Path) -> Result<Connection> {
    let has_wal = std::fs::metadata(sibling(path, "-wal")).is_ok_and(|m| m.len() > 0);
    read_only_uri(path, if has_wal { "?mode=ro" } else { "?immutable=1" })
}

/// A read-only connection to `path` with these URI parameters.
fn read_only_uri(path: &Path, params: &str) -> Result<Connection> {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str(params);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing newer indexes.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(Error::ReadOnly {
            dir: path.parent().map(Path::to_owned).unwrap_or_default(),
        });
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
    }
    tx.commit()?;
    // 4 -> 5 rewrote small_blobs: give the old table's pages back to the
    // file system (1M small objects: 5 GB of index became 1.7 GB). An index
    // with content needs it; a new one (found 0) does not. Best effort: a
    // VACUUM that fails (a full disk: it needs a copy's room) leaves a
    // correct, larger index, and the next open does not try again.
    if (1..5).contains(&found) {
        let _ = conn.execute_batch("VACUUM");
    }
    Ok(())
}

/// Reads a setting.
pub(crate) fn setting(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// Writes a setting.
pub(crate) fn set_setting(conn: &Connection, name: &str, value: &str) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)")?
        .execute([name, value])?;
    Ok(())
}

/// An object's metadata as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Content length in bytes.
    pub size: u64,
    /// BLAKE3 hash of the content.
    pub hash: ContentHash,
    /// MIME content type.
    pub content_type: String,
    /// User metadata (lowercase names).
    pub metadata: Metadata,
    /// When the object was last written.
    pub modified: SystemTime,
    /// Its sync state.
    pub state: SyncState,
}

/// An object's row with where its content lives.
#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub meta: ObjectMeta,
    pub inline: bool,
    /// False when only the remote holds the content (lazy pull, eviction).
    pub cached: bool,
    /// In an encrypted bucket: the sealed content type and metadata
    /// (`meta` then holds them only once the bucket has opened them).
    pub sealed_meta: Option<String>,
}

/// The `content_type` and `metadata` columns of a row: plaintext JSON, or
/// (encrypted buckets) an empty content type and the sealed record.
pub(crate) fn meta_columns(
    content_type: &str,
    metadata: &Metadata,
    sealed: Option<&str>,
) -> Result<(String, String)> {
    match sealed {
        Some(s) => Ok((String::new(), s.to_owned())),
        None => Ok((
            content_type.to_owned(),
            serde_json::to_string(metadata)
                .map_err(|e| Error::IndexData(format!("encoding metadata: {e}")))?,
        )),
    }
}

pub(crate) const OBJECT_COLUMNS: &str =
    "key, size, hash, content_type, metadata, modified_ms, state, inline, cached";

pub(crate) fn object_from_row(row: &Row<'_>) -> rusqlite::Result<StoredObject> {
    let key: String = row.get(0)?;
    let size: i64 = row.get(1)?;
    let hash: Vec<u8> = row.get(2)?;
    let content_type: String = row.get(3)?;
    let metadata: String = row.get(4)?;
    let modified_ms: i64 = row.get(5)?;
    let state: String = row.get(6)?;
    let inline: bool = row.get(7)?;
    let cached: bool = row.get(8)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("object {key:?} has an unreadable {what}").into(),
        )
    };
    let hash = ContentHash::from_slice(&hash).ok_or_else(|| bad("hash"))?;
    let sealed =
        content_type.is_empty() && metadata.starts_with(crate::crypto::keyring::SEALED_META_PREFIX);
    let (metadata, sealed_meta) = if sealed {
        (Metadata::new(), Some(metadata))
    } else {
        (
            serde_json::from_str(&metadata).map_err(|_| bad("metadata"))?,
            None,
        )
    };
    let state: SyncState = state.parse().map_err(|_| bad("state"))?;
    Ok(StoredObject {
        meta: ObjectMeta {
            key,
            size: size as u64,
            hash,
            content_type,
            metadata,
            modified: UNIX_EPOCH + Duration::from_millis(modified_ms.max(0) as u64),
            state,
        },
        inline,
        cached,
        sealed_meta,
    })
}

/// The sizes of the present objects among `keys` (one indexed lookup each).
pub(crate) fn sizes(
    conn: &Connection,
    keys: &[String],
) -> Result<std::collections::HashMap<String, u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT size FROM objects WHERE key = ?1 AND present = 1")?;
    let mut out = std::collections::HashMap::with_capacity(keys.len());
    for key in keys {
        if let Some(size) = stmt.query_row([key], |r| r.get::<_, i64>(0)).optional()? {
            out.insert(key.clone(), size.max(0) as u64);
        }
    }
    Ok(out)
}

/// Looks up a present object.
pub(crate) fn head(conn: &Connection, key: &str) -> Result<Option<StoredObject>> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE key = ?1 AND present = 1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([key], object_from_row)
        .optional()?)
}

/// Reads a small object's content.
pub(crate) fn small_blob(conn: &Connection, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT data FROM small_blobs WHERE hash = ?1")?
        .query_row([&hash.0[..]], |r| r.get(0))
        .optional()?)
}

/// True when some present object stores its content as `hash` (inline or not).
pub(crate) fn is_referenced(conn: &Connection, hash: &ContentHash, inline: bool) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM objects WHERE hash = ?1 AND present = 1 AND cached = 1 AND inline = ?2 LIMIT 1",
        )?
        .query_row(params![&hash.0[..], inline], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every hash of a present object whose content is a blob file.
pub(crate) fn file_hashes(conn: &Connection) -> Result<std::collections::HashSet<ContentHash>> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT hash FROM objects WHERE present = 1 AND cached = 1 AND inline = 0",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = std::collections::HashSet::new();
    for row in rows {
        let bytes = row?;
        let hash = ContentHash::from_slice(&bytes)
            .ok_or_else(|| Error::IndexData("a stored hash is not 32 bytes".into()))?;
        out.insert(hash);
    }
    Ok(out)
}
