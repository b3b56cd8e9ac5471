//! The local cache of synced content: usage, eviction and access tracking.
//!
//! Only content that is safely on the remote can be evicted: present,
//! cached, unpinned objects in state `synced` whose content is the agreed
//! base. An evicted object keeps its row (it is still listed, still
//! `synced`) with `cached = 0`; `get` fetches it again. Reads are counted in
//! memory and written to the index in one batch before each eviction.

use crate::bucket::Bucket;
use crate::engine::events::Event;
use crate::error::Result;
use crate::hash::ContentHash;
use crate::store::record::SyncRecord;

/// Which synced objects go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// Least recently read.
    #[default]
    Lru,
    /// Least often read (then least recently).
    Lfu,
    /// Least recently written.
    Oldest,
}

/// How full the cache is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CacheUsage {
    /// Bytes of content stored locally.
    pub used: u64,
    /// The configured limit.
    pub limit: u64,
    /// `used` as a percentage of `limit`.
    pub percent: f64,
}

impl Bucket {
    /// Bytes of content stored locally, against the limit.
    pub async fn cache_usage(&self) -> Result<CacheUsage> {
        let used = self.with_reader(|c| {
            // Kept by triggers on `objects` (index v5).
            Ok(
                c.prepare_cached("SELECT value FROM totals WHERE name = 'cached_bytes'")?
                    .query_row([], |r| r.get::<_, i64>(0))?
                    .max(0) as u64,
            )
        })?;
        let limit = self.sync_config()?.max_cache_size;
        let percent = if limit == 0 {
            100.0
        } else {
            used as f64 * 100.0 / limit as f64
        };
        Ok(CacheUsage {
            used,
            limit,
            percent,
        })
    }

    /// Evicts synced content until the cache is within `max_cache_size`
    /// (after the limit was lowered); returns the bytes freed.
    pub async fn enforce_cache_limit(&self) -> Result<u64> {
        let usage = self.cache_usage().await?;
        let freed = if usage.used > usage.limit {
            self.evict(usage.used - usage.limit).await?
        } else {
            0
        };
        if let Ok(mut e) = self.inner.cache_estimate.lock() {
            *e = Some(usage.used.saturating_sub(freed));
        }
        Ok(freed)
    }

    /// Evicts eligible objects until at least `bytes` are freed (or none is
    /// left); returns the bytes freed.
    pub async fn evict(&self, bytes: u64) -> Result<u64> {
        self.writable()?;
        self.evict_except(bytes, None).await
    }

    /// [`Bucket::evict`], sparing `keep` (the object just fetched to be
    /// read: a cache smaller than one object must still serve it).
    async fn evict_except(&self, bytes: u64, keep: Option<&str>) -> Result<u64> {
        self.flush_accesses().await?;
        let order = match self.sync_config()?.eviction {
            Eviction::Lru => "last_access_ms ASC, key",
            Eviction::Lfu => "access_count ASC, last_access_ms ASC, key",
            Eviction::Oldest => "modified_ms ASC, key",
        };
        let candidates: Vec<(String, u64, ContentHash, Option<String>)> = self.with_reader(|c| {
            // On a store that ignores conditional puts, a writer that
            // checked by HEAD before our push may have overwritten it
            // unseen: content is evicted only once a listing after our push
            // showed our version still there (`base_modified_ms`, which a
            // push clears), or the local copy could be the last one.
            let emulated = crate::store::index::setting(c, "probes")?
                .and_then(|v| {
                    serde_json::from_str::<
                        std::collections::BTreeMap<
                            String,
                            crate::remote::emulated::ProbeResult,
                        >,
                    >(&v)
                    .ok()
                })
                .is_some_and(|p| p.values().any(|p| p.racy_puts()));
            let confirmed = if emulated {
                "AND base_modified_ms IS NOT NULL"
            } else {
                ""
            };
            let sql = format!(
                "SELECT key, size, hash, base_etag FROM objects WHERE present = 1 AND cached = 1 AND pinned = 0 \
                 AND state = 'synced' AND base_hash = hash {confirmed} ORDER BY {order}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, size, hash, etag) = row?;
                if let Some(hash) = ContentHash::from_slice(&hash) {
                    out.push((key, size as u64, hash, etag));
                }
            }
            Ok(out)
        })?;
        // Keys sharing a blob free its bytes only once the last one goes:
        // what was freed is measured, not summed.
        let start = self.cache_usage().await?.used;
        let mut freed = 0;
        // In an encrypted bucket a remote deletion nothing proves keeps the
        // local data, which is pushed again: content is dropped only while
        // the remote is seen to hold the agreed version (a HEAD), or the
        // local copy could be the last one. Offline, nothing is evicted.
        let sealed = self
            .is_encrypted()
            .then(|| self.inner.remote.read().ok().and_then(|r| r.clone()));
        for (key, _size, hash, etag) in candidates {
            if freed >= bytes {
                break;
            }
            if keep == Some(key.as_str()) {
                continue;
            }
            if let Some(remote) = &sealed {
                let Some(remote) = remote else {
                    break;
                };
                match remote.head(&key).await {
                    Ok(Some(o)) if Some(&o.etag) == etag.as_ref() => {}
                    _ => continue,
                }
            }
            if self.record_evicted(&key, hash).await? {
                freed = start.saturating_sub(self.cache_usage().await?.used);
                self.emit(Event::ObjectEvicted { key });
            }
        }
        Ok(freed)
    }

    async fn record_evicted(&self, key: &str, hash: ContentHash) -> Result<bool> {
        self.record_sync(SyncRecord::Evicted {
            key: key.to_owned(),
            hash,
        })
        .await
    }

    /// Keeps the cache within its limit after `size` bytes arrived locally.
    /// A running estimate avoids summing the index on every write; it is
    /// made exact whenever it crosses the limit.
    pub(crate) async fn after_write(&self, size: u64, keep: Option<&str>) {
        let Ok(config) = self.sync_config() else {
            return;
        };
        let estimate = match self.inner.cache_estimate.lock() {
            Ok(mut e) => e.as_mut().map(|v| {
                *v += size;
                *v
            }),
            Err(_) => return,
        };
        if estimate.is_some_and(|v| v <= config.max_cache_size) {
            return;
        }
        let Ok(usage) = self.cache_usage().await else {
            return;
        };
        let mut used = usage.used;
        if used > config.max_cache_size {
            if let Ok(freed) = self.evict_except(used - config.max_cache_size, keep).await {
                used = used.saturating_sub(freed);
            }
        }
        if let Ok(mut e) = self.inner.cache_estimate.lock() {
            *e = Some(used);
        }
    }

    /// Counts a read for eviction.
    pub(crate) fn note_access(&self, key: &str) {
        if let Ok(mut map) = self.inner.accesses.lock() {
            let e = map.entry(key.to_owned()).or_insert((0, 0));
            e.0 = self.now_ms();
            e.1 += 1;
        }
    }

    /// Writes the counted reads to the index.
    pub(crate) async fn flush_accesses(&self) -> Result<()> {
        let batch: Vec<(String, i64, i64)> = match self.inner.accesses.lock() {
            Ok(mut map) => map.drain().map(|(k, (t, n))| (k, t, n)).collect(),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.record_sync(SyncRecord::Accessed { batch }).await?;
        Ok(())
    }
}
