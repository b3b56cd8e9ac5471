//! Reading the index for sync: windows of rows, residency, pins, status,
//! conflicts, failures and what the last sync found missing on the remote.

use std::collections::BTreeMap;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::hash::{ContentHash, MetaDigest};
use crate::key::validate_key;
use crate::remote::emulated::ProbeResult;
use crate::state::SyncState;
use crate::store::record::SyncRecord;
use crate::store::writer::{Outcome, WriteOp};
use crate::sync::plan::LocalEntry;

use super::{parse_reason, ConflictInfo, Residency, Status, SyncIssue};

impl Bucket {
    /// At most `limit` rows matching `cond` with keys after `after`, in key
    /// order (every key sorts after the empty string).
    pub(super) fn read_page(
        &self,
        cond: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LocalEntry>> {
        self.read_rows(
            &format!("WHERE ({cond}) AND key > ?1 ORDER BY key LIMIT {limit}"),
            Some(after.unwrap_or("")),
        )
    }

    /// Objects synced with the remote (they have a base), under `scopes`.
    pub(super) fn synced_count(&self, scopes: &[String]) -> Result<u64> {
        let mut prefixes: Vec<&String> = scopes.iter().collect();
        prefixes.sort();
        prefixes.dedup_by(|b, a| b.starts_with(a.as_str()));
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT COUNT(*) FROM objects WHERE base_etag IS NOT NULL \
                 AND substr(key, 1, length(?1)) = ?1",
            )?;
            let mut total = 0u64;
            for prefix in prefixes {
                total += stmt.query_row([prefix], |r| r.get::<_, i64>(0))? as u64;
            }
            Ok(total)
        })
    }

    /// Safety rail of a full reconcile: a scope prefix under which the
    /// listing (`spill`) holds nothing while objects under it were synced
    /// stops the run ([`Error::EmptyRemote`]), whatever the other scopes
    /// list.
    pub(super) fn check_scopes_listed(
        &self,
        spill: &super::spill::Spill,
        prefixes: &[String],
        endpoint: &str,
    ) -> Result<()> {
        for prefix in prefixes {
            if prefix == super::NOTHING_IN_SCOPE || spill.holds_prefix(prefix)? {
                continue;
            }
            let synced = self.synced_count(std::slice::from_ref(prefix))?;
            if synced > 0 {
                return Err(Error::EmptyRemote {
                    remote: endpoint.to_owned(),
                    scope: prefix.clone(),
                    synced,
                });
            }
        }
        Ok(())
    }

    pub(super) fn read_rows(&self, filter: &str, key: Option<&str>) -> Result<Vec<LocalEntry>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT key, present, hash, cached, pinned, base_etag, base_hash, state, modified_ms, \
                 meta_digest, base_meta, base_modified_ms, pushed_base \
                 FROM objects {filter}"
            ))?;
            let rows = stmt.query_map([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    (
                        r.get::<_, Option<Vec<u8>>>(9)?,
                        r.get::<_, Option<Vec<u8>>>(10)?,
                        r.get::<_, Option<i64>>(11)?,
                        r.get::<_, Option<String>>(12)?,
                    ),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, present, hash, cached, pinned, base_etag, base_hash, state, modified_ms, v4) = row?;
                let (meta, base_meta, base_modified_ms, pushed_base) = v4;
                let bad = || Error::IndexData(format!("object {key:?} has a malformed row"));
                out.push(LocalEntry {
                    hash: ContentHash::from_slice(&hash).ok_or_else(bad)?,
                    base_hash: base_hash.as_deref().and_then(ContentHash::from_slice),
                    state: state.parse().map_err(|_| bad())?,
                    key,
                    present,
                    cached,
                    pinned,
                    base_etag,
                    modified_ms,
                    meta: meta.as_deref().and_then(MetaDigest::from_slice),
                    base_meta: base_meta.as_deref().and_then(MetaDigest::from_slice),
                    base_modified_ms,
                    pushed_base,
                });
            }
            Ok(out)
        })
    }

    /// Why the remote cannot hold `key` exactly (it would be refused at
    /// every push), or `None`: asks the connected remote's rules, else the
    /// recorded remote's. Makes no request.
    pub fn remote_refuses(&self, key: &str) -> Result<Option<String>> {
        if let Ok(remote) = self.connected_remote() {
            return Ok(remote.refuses(key));
        }
        Ok(self.remote_spec()?.and_then(|s| s.refuses(key)))
    }

    /// Whether `key`'s content is on this device, and whether it is pinned.
    pub fn residency(&self, key: &str) -> Result<Residency> {
        validate_key(key)?;
        let l = self.local_entry(key)?.filter(|l| l.present);
        let l = l.ok_or_else(|| Error::NotFound {
            key: key.to_owned(),
        })?;
        Ok(Residency {
            cached: l.cached,
            pinned: l.pinned,
        })
    }

    /// The row's metadata digest (what a record made against it expects).
    pub(crate) fn local_meta_digest(&self, key: &str) -> Result<Option<MetaDigest>> {
        Ok(self.local_entry(key)?.and_then(|l| l.meta))
    }

    pub(super) fn local_entry(&self, key: &str) -> Result<Option<LocalEntry>> {
        // `key = ?1` alone: the primary key finds the row (an `OR` would scan).
        Ok(self.read_rows("WHERE key = ?1", Some(key))?.pop())
    }

    pub(crate) async fn record_sync(&self, rec: SyncRecord) -> Result<bool> {
        self.record(rec).await
    }

    pub(super) async fn record(&self, rec: SyncRecord) -> Result<bool> {
        self.writable()?;
        match self.inner.writer.submit(WriteOp::Record(rec)).await? {
            Outcome::Recorded(applied) => Ok(applied),
            _ => Err(Error::IndexData(
                "writer answered a record with something else".into(),
            )),
        }
    }

    /// Pins objects: they are always downloaded (under every pull strategy).
    /// Returns how many of the keys exist.
    pub async fn pin(&self, keys: &[&str]) -> Result<usize> {
        self.writable()?;
        self.set_pinned(keys, true).await
    }

    /// Unpins objects. Returns how many of the keys exist.
    pub async fn unpin(&self, keys: &[&str]) -> Result<usize> {
        self.writable()?;
        self.set_pinned(keys, false).await
    }

    pub(super) async fn set_pinned(&self, keys: &[&str], pinned: bool) -> Result<usize> {
        let mut found = 0;
        for key in keys {
            validate_key(key)?;
            if self
                .record(SyncRecord::Pinned {
                    key: (*key).to_owned(),
                    pinned,
                })
                .await?
            {
                found += 1;
            }
        }
        Ok(found)
    }

    /// Counts objects per state and the local cache.
    pub async fn status(&self) -> Result<Status> {
        let mut status = self.with_reader(|c| {
            let mut s = Status::default();
            let mut stmt = c.prepare_cached(
                "SELECT state, present, COUNT(*) FROM objects GROUP BY state, present",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (state, present, count) = row?;
                let count = count as u64;
                if present {
                    s.total += count;
                }
                match state.parse::<SyncState>() {
                    Ok(SyncState::Synced) => s.synced += count,
                    Ok(SyncState::Dirty) => s.dirty += count,
                    Ok(SyncState::Stale) => s.stale += count,
                    Ok(SyncState::Conflict) => s.conflicts += count,
                    Ok(SyncState::PendingDelete) => s.pending_delete += count,
                    Ok(SyncState::Orphan) => s.orphan += count,
                    Err(_) => {}
                }
            }
            s.failed = c
                .prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64;
            Ok(s)
        })?;
        // Each blob once (shared content counts once).
        status.cache_size = self.cache_usage().await?.used;
        status.remote = self.remote_spec()?.map(|s| s.url);
        status.leader = self.is_leader();
        status.leader_pid = self.leader_pid();
        status.encrypted = self.is_encrypted();
        status.locked = self.is_locked();
        let journals: std::collections::BTreeMap<String, super::JournalState> =
            self.setting_json("journal")?.unwrap_or_default();
        status.last_full_listing = journals
            .values()
            .map(|j| j.last_full_ms)
            .filter(|ms| *ms > 0)
            .max()
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64));
        status.missing_on_remote = self
            .setting_json::<super::MissingOnRemote>(super::MISSING_ON_REMOTE)?
            .map_or(0, |m| m.count);
        let probes: BTreeMap<String, ProbeResult> =
            self.setting_json("probes")?.unwrap_or_default();
        status.conditional_writes = self
            .connected_remote()
            .ok()
            .and_then(|r| probes.get(&r.endpoint()).map(|p| p.conditional_put));
        Ok(status)
    }

    /// The keys the last sync found missing on the remote with nothing
    /// proving a device deleted them (an encrypted bucket: no delete record
    /// sealed by its key names the version), which it kept and pushed
    /// again; in key order, at most the first 1,000
    /// ([`Status::missing_on_remote`] counts them all). A dry run or a
    /// filtered sync leaves what the last complete one found.
    pub fn missing_on_remote(&self) -> Result<Vec<String>> {
        Ok(self
            .setting_json::<super::MissingOnRemote>(super::MISSING_ON_REMOTE)?
            .map(|m| m.keys)
            .unwrap_or_default())
    }

    /// What the capability probe found for `endpoint` (a remote's
    /// [`Remote::endpoint`](crate::remote::Remote::endpoint)), if it ran.
    pub fn probe_result(&self, endpoint: &str) -> Result<Option<ProbeResult>> {
        let probes: BTreeMap<String, ProbeResult> =
            self.setting_json("probes")?.unwrap_or_default();
        Ok(probes.get(endpoint).copied())
    }

    /// Every key in conflict.
    pub async fn conflicts(&self) -> Result<Vec<ConflictInfo>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, conflict, remote_etag, present FROM objects WHERE state <> 'synced' AND state = 'conflict' ORDER BY key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, bool>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, reason, remote_etag, present) = row?;
                out.push(ConflictInfo { key, reason: parse_reason(reason), remote_etag, deleted_locally: !present });
            }
            Ok(out)
        })
    }

    /// Outbox entries whose last attempt failed: key and error.
    pub async fn failures(&self) -> Result<Vec<SyncIssue>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, COALESCE(last_error, '') FROM outbox WHERE state = 'failed' ORDER BY key",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (key, cause) = row?;
                out.push(SyncIssue { key, cause, retryable: true });
            }
            Ok(out)
        })
    }
}
