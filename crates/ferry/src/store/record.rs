//! Recording sync outcomes in the index, each only if the local row still
//! looks the way the plan assumed (`Expect`). A local write that lands
//! between planning and recording therefore wins: the record is skipped and
//! the next sync sees the new local version. This is what keeps a sync from
//! ever overwriting an acknowledged local write.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;
use crate::hash::{version_id, ContentHash, MetaDigest};
use crate::metadata::Metadata;
use crate::remote::RemoteObject;
use crate::state::SyncState;
use crate::store::blobs::BlobStore;
use crate::store::rows::{current, release_old, store_content, Content};
use crate::sync::plan::{ConflictReason, Expect};

/// Content pulled from the remote, ready to store.
#[derive(Debug)]
pub(crate) struct Pulled {
    pub content: Content,
    pub hash: ContentHash,
    pub size: u64,
    pub content_type: String,
    pub metadata: Metadata,
    /// Encrypted buckets: the sealed metadata column.
    pub sealed_meta: Option<String>,
    /// Digest of `content_type` and `metadata`.
    pub meta: MetaDigest,
    pub modified_ms: i64,
    pub etag: String,
    /// The remote's last-modified time of this version, in whole seconds
    /// (from the GET), when known.
    pub remote_modified_ms: Option<i64>,
    /// The version stamp from its envelope (encrypted buckets).
    pub stamp: Option<u64>,
    /// The version's `ferry-base` when this device wrote it (its
    /// `ferry-device`): our own push whose answer was lost, now pulled
    /// (a conflict kept both). It may never have been journaled.
    pub own_base: Option<String>,
}

/// The outcome of one sync action.
#[derive(Debug)]
pub(crate) enum SyncRecord {
    /// A push of version (`hash`, `meta`) carrying `ferry-base` `base`
    /// succeeded with `etag`.
    Pushed {
        key: String,
        hash: ContentHash,
        meta: MetaDigest,
        etag: String,
        base: String,
        /// The version stamp sealed in its envelope (encrypted buckets).
        stamp: Option<u64>,
    },
    /// The remote object was deleted; `removed` names the version the
    /// delete was conditional on, where the row agreed on none (our own
    /// push whose answer was lost): the journal entry names that one.
    RemoteDeleted {
        key: String,
        removed: Option<Removed>,
    },
    /// A delete of the remote object failed in a way that may have applied
    /// it (the answer was lost): the journal names the delete anyway, with
    /// the version it was conditional on, so other replicas that find the
    /// key gone know a device that saw their version deleted it. Harmless
    /// when it did not apply: a record of a delete only proves, it never
    /// deletes a version that is still there.
    DeleteAttempted { key: String },
    /// A remote version was downloaded.
    Pulled {
        key: String,
        expect: Expect,
        pulled: Box<Pulled>,
    },
    /// A remote object was learned without its content.
    Learned {
        key: String,
        expect: Expect,
        remote: Box<RemoteObject>,
        /// Encrypted buckets: the sealed metadata column.
        sealed_meta: Option<String>,
    },
    /// The remote deleted the object; delete it here.
    LocalDeleted { key: String, expect: Expect },
    /// Our restore was taken back from the remote (a delete record named
    /// the version): delete it here, journaled as a delete of it.
    Retracted { key: String, expect: Expect },
    /// Both sides agree on `hash` at `etag` (remote metadata digest
    /// `meta`, listing time `modified_ms`); `pushed_base` when the remote
    /// version is our own push.
    Adopted {
        key: String,
        etag: String,
        hash: ContentHash,
        meta: Option<MetaDigest>,
        modified_ms: Option<i64>,
        pushed_base: Option<String>,
        /// The version stamp sealed in the adopted version (encrypted
        /// buckets, where known): its journal entry names it.
        stamp: Option<u64>,
    },
    /// These (key, etag) journal entries were appended to the remote journal.
    Journaled {
        entries: Vec<(String, Option<String>)>,
    },
    /// Each (key, etag, modified_ms): the agreed version `etag` was listed
    /// at `modified_ms`.
    Refreshed { batch: Vec<(String, String, i64)> },
    /// Drop a tombstone.
    Forgot { key: String },
    /// Flag a conflict, if the row still looks as planned.
    Conflicted {
        key: String,
        reason: ConflictReason,
        remote_etag: Option<String>,
        expect: Expect,
    },
    /// Set the state, if the row still looks as planned (`None`: any row,
    /// for settings that change every row's state).
    State {
        key: String,
        state: SyncState,
        expect: Option<Expect>,
    },
    /// Evict a synced object's local content.
    Evicted { key: String, hash: ContentHash },
    /// Raise the newest version stamp seen for each key to at least the
    /// one given (floors read from other devices' delete records).
    Stamps { batch: Vec<(String, u64)> },
    /// Versions of these keys whose stamps, though below the key's floor,
    /// a journal record newer than what this replica had read names (a
    /// device wrote them without seeing the newer version): not rollbacks.
    AcceptedStamps { batch: Vec<(String, u64)> },
    /// Reads counted in memory: (key, last read ms, count).
    Accessed { batch: Vec<(String, i64, i64)> },
    /// Pin or unpin a present object.
    Pinned { key: String, pinned: bool },
    /// Outbox attempts of these keys start (one transaction for a whole run).
    Starting { keys: Vec<String> },
    /// An outbox attempt changed state: the key's entry for the version
    /// `hash` (`None`: a delete's entry).
    Attempt {
        key: String,
        hash: Option<ContentHash>,
        state: &'static str,
        error: Option<String>,
        next_attempt_ms: i64,
    },
}

fn matches(conn: &Connection, key: &str, expect: &Expect) -> Result<bool> {
    type Row = (bool, Vec<u8>, Option<String>, Option<Vec<u8>>);
    let row: Option<Row> = conn
        .prepare_cached("SELECT present, hash, base_etag, meta_digest FROM objects WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(match (expect, row) {
        (Expect::Absent, None) => true,
        (Expect::Absent, Some((present, _, base, _))) => !present && base.is_none(),
        (Expect::Present(h, m), Some((true, hash, _, meta))) => {
            hash == h.0 && meta.as_deref() == m.as_ref().map(|m| &m.0[..])
        }
        (Expect::Tombstone, Some((false, _, base, _))) => base.is_some(),
        _ => false,
    })
}

/// Queues a journal entry for a version this replica wrote to the remote.
/// Raises the newest version stamp seen for `key` to `stamp`; smaller
/// stamps accepted on a journal record's word stop counting (a newer
/// version came).
fn note_stamp(conn: &Connection, key: &str, stamp: Option<u64>) -> Result<()> {
    if let Some(stamp) = stamp.and_then(|s| i64::try_from(s).ok()) {
        conn.prepare_cached(
            "INSERT INTO stamps (key, stamp) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET stamp = max(stamp, excluded.stamp)",
        )?
        .execute(params![key, stamp])?;
        conn.prepare_cached("DELETE FROM stamps_accepted WHERE key = ?1 AND stamp < ?2")?
            .execute(params![key, stamp])?;
    }
    Ok(())
}

/// A version stamp below `key`'s floor that a journal record newer than
/// what this replica had read names: that version is not a rollback.
fn accept_stamp(conn: &Connection, key: &str, stamp: u64) -> Result<()> {
    if let Ok(stamp) = i64::try_from(stamp) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO stamps_accepted (key, stamp) \
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM stamps WHERE key = ?1 AND stamp > ?2)",
        )?
        .execute(params![key, stamp])?;
    }
    Ok(())
}

/// Deletes `key`'s row and its queued outbox entries (not one in flight),
/// releasing its content.
fn drop_row(conn: &Connection, key: &str, garbage: &mut Vec<ContentHash>) -> Result<()> {
    let old = current(conn, key)?;
    conn.prepare_cached("DELETE FROM objects WHERE key = ?1")?
        .execute([key])?;
    conn.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND state <> 'inflight'")?
        .execute([key])?;
    release_old(conn, old, garbage)
}

/// A deletion: newer than every version seen so far.
fn bump_stamp(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("UPDATE stamps SET stamp = stamp + 1 WHERE key = ?1")?
        .execute([key])?;
    conn.prepare_cached("DELETE FROM stamps_accepted WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// A remote version a delete removed, as the delete's condition named it.
#[derive(Debug, Clone)]
pub(crate) struct Removed {
    pub etag: String,
    pub hash: Option<ContentHash>,
    pub meta: Option<MetaDigest>,
}

/// Queues a journal entry for a delete of `key` on the remote, naming the
/// version it deleted (the row's agreed version): a replica whose own
/// version was removed by a delete that never saw it tells the two apart.
fn journal_delete(conn: &Connection, key: &str) -> Result<()> {
    journal_delete_of(conn, key, None)
}

/// [`journal_delete`], naming `removed` where the row agreed on no version
/// or `removed` is known in full (our own push, its answer lost, deleted
/// by a delete conditional on it).
fn journal_delete_of(conn: &Connection, key: &str, removed: Option<&Removed>) -> Result<()> {
    let (etag, hash, version) = match (agreed_version(conn, key, false)?, removed) {
        // The version the delete removed, known in full (its HEAD after
        // a lost answer): that one, even where the row agreed on an older
        // one (our own push over it, its answer lost, deleted by us).
        (_, Some(r)) if r.hash.is_some() => (
            Some(r.etag.clone()),
            r.hash.map(|h| h.0.to_vec()),
            r.hash.map(|h| version_id(&h, r.meta.as_ref())),
        ),
        (Some(a), _) if a.0.is_some() => a,
        (_, Some(r)) => (
            Some(r.etag.clone()),
            r.hash.map(|h| h.0.to_vec()),
            r.hash.map(|h| version_id(&h, r.meta.as_ref())),
        ),
        (a, None) => a.unwrap_or_default(),
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO journal_pending (key, op, etag, hash, base) \
         VALUES (?1, 'delete', ?2, ?3, ?4)",
    )?
    .execute(params![key, etag, hash, version])?;
    Ok(())
}

/// A row's agreed version as a journal entry names it: ETag, content hash,
/// version id.
type Agreed = (Option<String>, Option<Vec<u8>>, Option<String>);

/// The agreed version of `key`: its etag, content hash and version id
/// (content and metadata). With `replaced`, only when a local edit
/// replaced it (content or metadata differ).
fn agreed_version(conn: &Connection, key: &str, replaced: bool) -> Result<Option<Agreed>> {
    type Row = (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>, bool);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT base_etag, base_hash, base_meta, \
             (present = 1 AND (base_hash IS NOT hash OR base_meta IS NOT meta_digest)) \
             FROM objects WHERE key = ?1",
        )?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(row
        .filter(|(_, _, _, edited)| !replaced || *edited)
        .map(|(etag, hash, meta, _)| {
            let version = hash.as_deref().and_then(|h| {
                let h = ContentHash(h.try_into().ok()?);
                let m = meta
                    .as_deref()
                    .and_then(|m| Some(MetaDigest(m.try_into().ok()?)));
                Some(version_id(&h, m.as_ref()))
            });
            (etag, hash, version)
        }))
}

/// Queues a delete entry naming the agreed version of `key`, which a local
/// edit replaced and a conflict keeps from the key (its copy goes on under
/// another key), unless an entry for `key` waits already: other writers
/// learn that a device saw that version. It carries no stamp (`stamp` 0
/// here): nothing was deleted, and a floor would make readers refuse the
/// version the remote still holds (found by the simulator, seed 1001377).
fn journal_superseded(conn: &Connection, key: &str) -> Result<()> {
    let Some((Some(etag), hash, version)) = agreed_version(conn, key, true)? else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO journal_pending (key, op, etag, hash, base, stamp) \
         VALUES (?1, 'delete', ?2, ?3, ?4, 0)",
    )?
    .execute(params![key, etag, hash, version])?;
    Ok(())
}

/// Queues a journal entry for a put of `key` on the remote, naming the
/// version it replaced (`base`, its `ferry-base`). Consecutive puts not
/// journaled yet keep the first one's base: the newest version descends
/// from it through this device's own writes.
fn journal_put(
    conn: &Connection,
    key: &str,
    etag: &str,
    (hash, meta): (&ContentHash, Option<&MetaDigest>),
    base: Option<&str>,
    stamp: Option<u64>,
) -> Result<()> {
    // A restore names its own version as its base (the key was gone: it
    // replaced nothing): its entry names none, or a reader would take the
    // restored version for superseded by it (`plan::superseded`).
    let own = version_id(hash, meta);
    let base = base.filter(|b| *b != own);
    let stamp = stamp.and_then(|s| i64::try_from(s).ok());
    conn.prepare_cached(
        "INSERT INTO journal_pending (key, op, etag, hash, base, stamp) \
         VALUES (?1, 'put', ?2, ?3, ?4, ?5) \
         ON CONFLICT(key) DO UPDATE SET etag = excluded.etag, hash = excluded.hash, \
         base = CASE WHEN op = 'put' AND base IS NOT NULL THEN base ELSE excluded.base END, \
         op = 'put', stamp = excluded.stamp",
    )?
    .execute(params![key, etag, &hash.0[..], base, stamp])?;
    Ok(())
}

/// The key's pushed version is recorded: its outbox entry is done.
fn ack(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Applies one record; returns whether it applied.
pub(crate) fn apply(
    conn: &Connection,
    blobs: &BlobStore,
    rec: SyncRecord,
    now: i64,
    garbage: &mut Vec<ContentHash>,
) -> Result<bool> {
    match rec {
        SyncRecord::Pushed {
            key,
            hash,
            meta,
            etag,
            base,
            stamp,
        } => {
            note_stamp(conn, &key, stamp)?;
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET state = 'synced', base_etag = ?2, base_hash = ?3, \
                     base_meta = ?4, base_modified_ms = NULL, pushed_base = ?5, \
                     conflict = NULL, remote_etag = NULL \
                     WHERE key = ?1 AND present = 1 AND hash = ?3 AND meta_digest IS ?4",
                )?
                .execute(params![key, etag, &hash.0[..], &meta.0[..], base])?;
            journal_put(conn, &key, &etag, (&hash, Some(&meta)), Some(&base), stamp)?;
            if n == 0 {
                // Changed again meanwhile: the remote now holds what we pushed.
                conn.prepare_cached(
                    "UPDATE objects SET base_etag = ?2, base_hash = ?3, base_meta = ?4, \
                     base_modified_ms = NULL, pushed_base = ?5 WHERE key = ?1",
                )?
                .execute(params![key, etag, &hash.0[..], &meta.0[..], base])?;
            } else {
                ack(conn, &key)?;
            }
            Ok(n > 0)
        }
        SyncRecord::DeleteAttempted { key } => {
            let tombstone = conn
                .prepare_cached("SELECT 1 FROM objects WHERE key = ?1 AND present = 0")?
                .query_row([&key], |_| Ok(()))
                .optional()?
                .is_some();
            if tombstone {
                journal_delete(conn, &key)?;
            }
            Ok(tombstone)
        }
        SyncRecord::RemoteDeleted { key, removed } => {
            // A deletion is newer than the version it removed: replaying
            // that version later is a rollback too.
            bump_stamp(conn, &key)?;
            journal_delete_of(conn, &key, removed.as_ref())?;
            let n = conn
                .prepare_cached("DELETE FROM objects WHERE key = ?1 AND present = 0")?
                .execute([&key])?;
            if n == 0 {
                conn.prepare_cached(
                    "UPDATE objects SET base_etag = NULL, base_hash = NULL WHERE key = ?1",
                )?
                .execute([&key])?;
            } else {
                ack(conn, &key)?;
            }
            Ok(n > 0)
        }
        SyncRecord::Pulled {
            key,
            expect,
            pulled,
        } => {
            if !matches(conn, &key, &expect)? {
                // A temp blob in `pulled` is deleted when it drops.
                return Ok(false);
            }
            let old = current(conn, &key)?;
            let p = *pulled;
            note_stamp(conn, &key, p.stamp)?;
            let inline = store_content(conn, blobs, p.content, &p.hash, garbage)?;
            let (content_type, metadata) = crate::store::index::meta_columns(
                &p.content_type,
                &p.metadata,
                p.sealed_meta.as_deref(),
            )?;
            conn.prepare_cached(
                "INSERT INTO objects (key, present, size, hash, inline, content_type, metadata, \
                     modified_ms, state, base_etag, base_hash, cached, last_access_ms, access_count, \
                     meta_digest, base_meta, base_modified_ms, pushed_base) \
                 VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, 'synced', ?8, ?3, 1, ?9, 0, ?10, ?10, ?11, NULL) \
                 ON CONFLICT (key) DO UPDATE SET present = 1, size = ?2, hash = ?3, inline = ?4, \
                     content_type = ?5, metadata = ?6, modified_ms = ?7, state = 'synced', \
                     base_etag = ?8, base_hash = ?3, cached = 1, last_access_ms = ?9, \
                     conflict = NULL, remote_etag = NULL, meta_digest = ?10, base_meta = ?10, \
                     base_modified_ms = ?11, pushed_base = NULL",
            )?
            .execute(params![
                key,
                p.size as i64,
                &p.hash.0[..],
                inline,
                content_type,
                metadata,
                p.modified_ms,
                p.etag,
                now,
                &p.meta.0[..],
                p.remote_modified_ms,
            ])?;
            conn.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND state <> 'inflight'")?
                .execute([&key])?;
            if let Some(base) = p.own_base.as_deref() {
                // Our own push, pulled back: other replicas learn of it
                // from the journal, which may never have named it.
                journal_put(
                    conn,
                    &key,
                    &p.etag,
                    (&p.hash, Some(&p.meta)),
                    Some(base),
                    p.stamp,
                )?;
            }
            if old.is_some_and(|(h, i, _)| h != p.hash || i != inline) {
                release_old(conn, old, garbage)?;
            }
            Ok(true)
        }
        SyncRecord::Learned {
            key,
            expect,
            remote,
            sealed_meta,
        } => {
            if !matches(conn, &key, &expect)? {
                return Ok(false);
            }
            let old = current(conn, &key)?;
            note_stamp(conn, &key, remote.stamp)?;
            let hash = remote.hash.unwrap_or(ContentHash([0; 32]));
            let content_type = remote.content_type.clone().unwrap_or_else(|| {
                crate::metadata::content_type_for(&key, None).unwrap_or_default()
            });
            let (content_type, metadata) = crate::store::index::meta_columns(
                &content_type,
                &remote.metadata,
                sealed_meta.as_deref(),
            )?;
            let modified = remote.ferry_mtime.or(remote.modified_ms).unwrap_or(now);
            let meta = remote.meta.map(|m| m.0.to_vec());
            // Whole seconds: compared at that precision (see `plan`).
            let remote_modified = remote.modified_ms.map(|t| t.div_euclid(1000) * 1000);
            conn.prepare_cached(
                "INSERT INTO objects (key, present, size, hash, inline, content_type, metadata, \
                     modified_ms, state, base_etag, base_hash, cached, last_access_ms, access_count, \
                     meta_digest, base_meta, base_modified_ms, pushed_base) \
                 VALUES (?1, 1, ?2, ?3, 0, ?4, ?5, ?6, 'stale', ?7, ?3, 0, ?8, 0, ?9, ?9, ?10, NULL) \
                 ON CONFLICT (key) DO UPDATE SET present = 1, size = ?2, hash = ?3, inline = 0, \
                     content_type = ?4, metadata = ?5, modified_ms = ?6, state = 'stale', \
                     base_etag = ?7, base_hash = ?3, cached = 0, conflict = NULL, remote_etag = NULL, \
                     meta_digest = ?9, base_meta = ?9, base_modified_ms = ?10, pushed_base = NULL",
            )?
            .execute(params![key, remote.size as i64, &hash.0[..], content_type, metadata, modified, remote.etag, now, meta, remote_modified])?;
            conn.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND state <> 'inflight'")?
                .execute([&key])?;
            release_old(conn, old, garbage)?;
            Ok(true)
        }
        SyncRecord::Retracted { key, expect } => {
            // The remote delete happened: other replicas learn it named
            // the version, whatever became of the row since.
            journal_delete(conn, &key)?;
            bump_stamp(conn, &key)?;
            if !matches(conn, &key, &expect)? {
                return Ok(false);
            }
            drop_row(conn, &key, garbage)?;
            Ok(true)
        }
        SyncRecord::LocalDeleted { key, expect } => {
            if !matches(conn, &key, &expect)? {
                return Ok(false);
            }
            bump_stamp(conn, &key)?;
            drop_row(conn, &key, garbage)?;
            Ok(true)
        }
        SyncRecord::Adopted {
            key,
            etag,
            hash,
            meta,
            modified_ms,
            pushed_base,
            stamp,
        } => {
            // The row's own metadata may differ from the adopted remote
            // version's (a foreign copy of the same bytes): then it stays
            // dirty and the next run pushes it.
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET state = CASE WHEN meta_digest IS NOT ?4 THEN 'dirty' \
                         WHEN cached = 1 THEN 'synced' ELSE 'stale' END, \
                     base_etag = ?2, base_hash = ?3, base_meta = ?4, base_modified_ms = ?5, \
                     pushed_base = ?6, conflict = NULL, remote_etag = NULL \
                     WHERE key = ?1 AND present = 1 AND hash = ?3",
                )?
                .execute(params![
                    key,
                    etag,
                    &hash.0[..],
                    meta.map(|m| m.0.to_vec()),
                    modified_ms,
                    pushed_base
                ])?;
            if n > 0 {
                ack(conn, &key)?;
                if pushed_base.is_some() {
                    // Our own push, recognised: it may never have been journaled.
                    journal_put(
                        conn,
                        &key,
                        &etag,
                        (&hash, meta.as_ref()),
                        pushed_base.as_deref(),
                        stamp,
                    )?;
                }
            }
            Ok(n > 0)
        }
        SyncRecord::Journaled { entries } => {
            let mut stmt =
                conn.prepare_cached("DELETE FROM journal_pending WHERE key = ?1 AND etag IS ?2")?;
            for (key, etag) in &entries {
                stmt.execute(params![key, etag])?;
            }
            Ok(true)
        }
        SyncRecord::Refreshed { batch } => {
            let mut stmt = conn.prepare_cached(
                "UPDATE objects SET base_modified_ms = ?3 WHERE key = ?1 AND base_etag = ?2",
            )?;
            let mut n = 0;
            for (key, etag, modified_ms) in &batch {
                n += stmt.execute(params![key, etag, modified_ms])?;
            }
            Ok(n > 0)
        }
        SyncRecord::Forgot { key } => {
            // A tombstone of a version the remote held: its delete may have
            // landed with the answer lost, unjournaled; journal it now
            // (other replicas learn of it from the journal, not a listing).
            let agreed: Option<Option<String>> = conn
                .prepare_cached("SELECT base_etag FROM objects WHERE key = ?1 AND present = 0")?
                .query_row([&key], |r| r.get(0))
                .optional()?;
            if matches!(agreed, Some(Some(_))) {
                journal_delete(conn, &key)?;
            }
            let n = conn
                .prepare_cached("DELETE FROM objects WHERE key = ?1 AND present = 0")?
                .execute([&key])?;
            if n > 0 {
                conn.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND state <> 'inflight'")?
                    .execute([&key])?;
            }
            Ok(n > 0)
        }
        SyncRecord::Conflicted {
            key,
            reason,
            remote_etag,
            expect,
        } => {
            if !matches(conn, &key, &expect)? {
                return Ok(false);
            }
            let deleted_here = reason == ConflictReason::DeletedLocallyModifiedRemotely;
            let edited_here = matches!(
                reason,
                ConflictReason::BothModified | ConflictReason::RemoteChangedDuringPush
            );
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET state = 'conflict', conflict = ?2, remote_etag = ?3 WHERE key = ?1",
                )?
                .execute(params![key, reason, remote_etag])?;
            if n > 0 && deleted_here && matches!(expect, Expect::Tombstone) {
                // The user deleted the version this replica agreed on; the
                // journal says so although the remote holds another one: a
                // writer whose push of that version was overwritten unseen
                // (a store that ignores conditions) learns it was deleted,
                // not lost. A delete record never deletes what is there.
                journal_delete(conn, &key)?;
            } else if n > 0 && edited_here && matches!(expect, Expect::Present(..)) {
                // The user replaced the agreed version (the replacement
                // goes on as this conflict's copy): the same record, unless
                // a put of ours waits to be journaled (it names its base).
                journal_superseded(conn, &key)?;
            }
            Ok(n > 0)
        }
        SyncRecord::State { key, state, expect } => {
            if let Some(expect) = expect {
                if !matches(conn, &key, &expect)? {
                    return Ok(false);
                }
            }
            let n = conn
                .prepare_cached("UPDATE objects SET state = ?2 WHERE key = ?1")?
                .execute(params![key, state.as_str()])?;
            Ok(n > 0)
        }
        SyncRecord::Evicted { key, hash } => {
            let old = current(conn, &key)?;
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET cached = 0 WHERE key = ?1 AND present = 1 AND cached = 1 \
                     AND pinned = 0 AND state = 'synced' AND hash = ?2 AND base_hash = ?2",
                )?
                .execute(params![key, &hash.0[..]])?;
            if n > 0 {
                release_old(conn, old, garbage)?;
            }
            Ok(n > 0)
        }
        SyncRecord::Stamps { batch } => {
            for (key, stamp) in batch {
                note_stamp(conn, &key, Some(stamp))?;
            }
            Ok(true)
        }
        SyncRecord::AcceptedStamps { batch } => {
            for (key, stamp) in batch {
                accept_stamp(conn, &key, stamp)?;
            }
            Ok(true)
        }
        SyncRecord::Accessed { batch } => {
            apply_accesses(conn, &batch)?;
            Ok(true)
        }
        SyncRecord::Pinned { key, pinned } => {
            let n = conn
                .prepare_cached("UPDATE objects SET pinned = ?2 WHERE key = ?1 AND present = 1")?
                .execute(params![key, pinned])?;
            Ok(n > 0)
        }
        SyncRecord::Starting { keys } => {
            let mut stmt = conn.prepare_cached(
                "UPDATE outbox SET state = 'inflight', attempts = attempts + 1 \
                 WHERE key = ?1",
            )?;
            for key in &keys {
                stmt.execute([key])?;
            }
            Ok(true)
        }
        SyncRecord::Attempt {
            key,
            hash,
            state,
            error,
            next_attempt_ms,
        } => {
            let bump = i64::from(state == "inflight");
            let n = conn
                .prepare_cached(
                    "UPDATE outbox SET state = ?2, attempts = attempts + ?3, \
                     last_error = COALESCE(?4, last_error), next_attempt_ms = ?5 \
                     WHERE key = ?1 AND hash IS ?6",
                )?
                .execute(params![
                    key,
                    state,
                    bump,
                    error,
                    next_attempt_ms,
                    hash.map(|h| h.0.to_vec())
                ])?;
            Ok(n > 0)
        }
    }
}

/// Applies an access batch (called from `record`).
fn apply_accesses(conn: &rusqlite::Connection, batch: &[(String, i64, i64)]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE objects SET last_access_ms = MAX(last_access_ms, ?2), access_count = access_count + ?3 WHERE key = ?1",
    )?;
    for (key, t, n) in batch {
        stmt.execute(params![key, t, n])?;
    }
    Ok(())
}
