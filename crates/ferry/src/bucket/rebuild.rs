//! Rebuilding a damaged index: what can be read of the old one is kept,
//! the rest comes back from the remote at the next sync, and content no
//! row names any more is set aside, never deleted.
//!
//! The old file is renamed (`index.db.damaged-<ms>`), never modified. From
//! it, table by table and row by row until the first unreadable row, the
//! settings (remote, key file, device id, scopes, sync settings), object
//! rows, inline content, outbox, version stamps and the remote writes not
//! yet journaled (`journal_pending`) are copied into a new
//! index. Rows whose content is missing are kept as not downloaded when the
//! remote holds their agreed version, else dropped and named. Blob files no
//! row references go to `lost+found/` under their hash. The journal
//! position is forgotten, so the next sync lists the whole remote.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::bucket::origin::{self, Origin};
use crate::bucket::{blocking, Bucket, INDEX_FILE};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::blobs::BlobStore;
use crate::store::index;

/// What `rebuild_index` recovered and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    /// Where the damaged index was moved.
    pub damaged_copy: PathBuf,
    /// Settings read back (names: `remote`, `encryption`, `device_id`, ...).
    pub settings: Vec<String>,
    /// Object rows read back.
    pub objects: u64,
    /// Rows kept without local content (the remote holds their version:
    /// the next sync or read downloads it).
    pub refetch: Vec<String>,
    /// Rows dropped: their content was neither here nor on the remote.
    pub lost: Vec<String>,
    /// Blob files no row references, moved under `lost+found/`.
    pub set_aside: Vec<PathBuf>,
    /// Tables that could not be read to the end (rows after the damage are
    /// gone from the index; the remote has what was synced).
    pub partial_tables: Vec<String>,
}

/// An object row and where its content should be: (key, hash, inline,
/// base hash, whether `small_blobs` has the hash).
type ContentRow = (String, Vec<u8>, bool, Option<Vec<u8>>, bool);

/// Tables copied from the damaged index, in order.
/// `journal_pending` holds remote writes no journal record names yet:
/// dropped, other replicas would learn of them only at a full reconcile.
const TABLES: [&str; 7] = [
    "settings",
    "objects",
    "small_blobs",
    "outbox",
    "stamps",
    "stamps_accepted",
    "journal_pending",
];

/// Copies what can be read of `table` from `old` into `new` (same
/// columns by name); returns the rows copied and whether it read to the end.
fn salvage_table(old: &Connection, new: &Connection, table: &str) -> (u64, bool) {
    let Ok(mut stmt) = old.prepare(&format!("SELECT * FROM {table}")) else {
        return (0, false);
    };
    let columns: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    // Only the columns the new schema has.
    let known: Vec<String> = match new.prepare(&format!("SELECT * FROM {table} LIMIT 0")) {
        Ok(s) => s.column_names().iter().map(|c| (*c).to_owned()).collect(),
        Err(_) => return (0, false),
    };
    let keep: Vec<usize> = (0..columns.len())
        .filter(|i| known.contains(&columns[*i]))
        .collect();
    let names: Vec<&str> = keep.iter().map(|i| columns[*i].as_str()).collect();
    let marks: Vec<String> = (1..=keep.len()).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    );
    let Ok(mut rows) = stmt.query([]) else {
        return (0, false);
    };
    let mut copied = 0;
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let values: Vec<rusqlite::types::Value> = keep
                    .iter()
                    .map(|i| row.get(*i).unwrap_or(rusqlite::types::Value::Null))
                    .collect();
                if new
                    .execute(&insert, rusqlite::params_from_iter(values))
                    .is_ok()
                {
                    copied += 1;
                }
            }
            Ok(None) => return (copied, true),
            Err(_) => return (copied, false),
        }
    }
}

fn rebuild(dir: &Path) -> Result<RebuildReport> {
    let path = dir.join(INDEX_FILE);
    if !path.exists() {
        return Err(Error::NoBucket {
            path: dir.to_owned(),
        });
    }
    // The damaged file's identity: the recorded origin is checked against
    // it (a rebuilt copy still gets its own device id).
    let seen = Origin::observe(dir, &path)?;
    let stamp = crate::clock::SystemClock.now_ms();
    let damaged_copy = dir.join(format!("{}.damaged-{stamp}", INDEX_FILE));
    std::fs::rename(&path, &damaged_copy).map_err(|e| Error::io("moving aside", &path, e))?;
    for suffix in ["-wal", "-shm"] {
        let side = dir.join(format!("{}{suffix}", INDEX_FILE));
        if side.exists() {
            let to = dir.join(format!("{}.damaged-{stamp}{suffix}", INDEX_FILE));
            std::fs::rename(&side, &to).map_err(|e| Error::io("moving aside", &side, e))?;
        }
    }
    let mut report = RebuildReport {
        damaged_copy: damaged_copy.clone(),
        ..RebuildReport::default()
    };

    let mut new = index::open(&path, true)?;
    index::migrate(&mut new, &path)?;
    let old = Connection::open_with_flags(
        format!("file:{}?immutable=1", damaged_copy.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .ok();
    if let Some(old) = &old {
        for table in TABLES {
            let (n, whole) = salvage_table(old, &new, table);
            if !whole {
                report.partial_tables.push(table.to_owned());
            }
            if table == "objects" {
                report.objects = n;
            }
        }
    } else {
        report.partial_tables = TABLES.iter().map(|t| (*t).to_owned()).collect();
    }
    // The cached-bytes total is recomputed by its definition (v6).
    new.execute_batch(
        "INSERT OR REPLACE INTO totals (name, value) VALUES ('cached_bytes', (
            SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM objects
            WHERE present = 1 AND cached = 1 GROUP BY hash)));
         DELETE FROM settings WHERE name IN ('journal', 'leader');
         UPDATE outbox SET state = 'pending' WHERE state = 'inflight';",
    )?;
    let mut stmt = new.prepare("SELECT name FROM settings ORDER BY name")?;
    report.settings = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    if index::setting(&new, "device_id")?.is_none() {
        index::set_setting(&new, "device_id", &origin::new_device_id())?;
    }
    // The new file is this bucket's index from now on.
    origin::settle(&new, &seen, &Origin::observe(dir, &path)?)?;

    // Rows whose content is gone.
    let blobs = BlobStore::new(dir);
    blobs.create_dirs()?;
    let on_disk = blobs.list()?;
    let rows: Vec<ContentRow> = {
        let mut stmt = new.prepare(
            "SELECT key, hash, inline, base_hash, \
             EXISTS (SELECT 1 FROM small_blobs s WHERE s.hash = objects.hash) \
             FROM objects WHERE present = 1 AND cached = 1",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    for (key, hash, inline, base_hash, has_inline) in rows {
        let present = if inline {
            has_inline
        } else {
            crate::hash::ContentHash::from_slice(&hash).is_some_and(|h| on_disk.contains(&h))
        };
        if present {
            continue;
        }
        if base_hash.as_deref() == Some(&hash[..]) {
            new.execute(
                "UPDATE objects SET cached = 0, state = 'synced' WHERE key = ?1",
                [&key],
            )?;
            report.refetch.push(key);
        } else {
            new.execute("DELETE FROM objects WHERE key = ?1", [&key])?;
            new.execute("DELETE FROM outbox WHERE key = ?1", [&key])?;
            report.lost.push(key);
        }
    }
    // Blob files no row references: set aside.
    let referenced: std::collections::HashSet<Vec<u8>> = {
        let mut stmt =
            new.prepare("SELECT DISTINCT hash FROM objects WHERE present = 1 AND inline = 0")?;
        let set = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<_>>()?;
        set
    };
    let lost_found = dir.join("lost+found");
    for hash in on_disk {
        if referenced.contains(&hash.0[..]) {
            continue;
        }
        std::fs::create_dir_all(&lost_found).map_err(|e| Error::io("creating", &lost_found, e))?;
        let to = lost_found.join(hash.to_hex());
        let from = blobs.path(&hash);
        std::fs::rename(&from, &to).map_err(|e| Error::io("moving aside", &from, e))?;
        report.set_aside.push(to);
    }
    // The cached total again, after the changes above.
    new.execute_batch(
        "UPDATE totals SET value = (
            SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM objects
            WHERE present = 1 AND cached = 1 GROUP BY hash)) WHERE name = 'cached_bytes';",
    )?;
    report.refetch.sort();
    report.lost.sort();
    report.set_aside.sort();
    Ok(report)
}

impl Bucket {
    /// Replaces the damaged index of the bucket at `dir` with a rebuilt one
    /// (see the module documentation) and opens the bucket. The damaged
    /// file is kept beside it, unchanged.
    pub async fn rebuild_index(dir: impl AsRef<Path>) -> Result<(Bucket, RebuildReport)> {
        let dir = dir.as_ref().to_owned();
        let report = {
            let dir = dir.clone();
            blocking(move || rebuild(&dir)).await?
        };
        let bucket = Bucket::open(&dir).await?;
        Ok((bucket, report))
    }
}
