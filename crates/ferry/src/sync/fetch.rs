//! Fetching content the index knows but does not hold (lazy pulls, evicted
//! objects).

use crate::bucket::Bucket;
use crate::crypto::keyring::meta_digest;
use crate::error::{Error, Result};
use crate::hash::{ContentHash, MetaDigest};
use crate::key::validate_key;
use crate::metadata::Metadata;
use crate::remote::{RemoteError, RemoteErrorKind, TransferProgress};
use crate::store::record::{Pulled, SyncRecord};
use crate::sync::plan::Expect;

use super::GetOptions;

impl Bucket {
    /// The newest version stamp this replica has seen for `key`.
    pub(crate) fn seen_stamp(&self, key: &str) -> Result<Option<u64>> {
        self.with_reader(|c| {
            use rusqlite::OptionalExtension;
            Ok(c.prepare_cached("SELECT stamp FROM stamps WHERE key = ?1")?
                .query_row([key], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|s| s.max(0) as u64))
        })
    }

    /// `Error::Rollback` when an encrypted remote offers a version of `key`
    /// older than one seen here (or an unstamped one after a stamped one).
    pub(crate) fn check_stamp(&self, key: &str, found: Option<u64>) -> Result<()> {
        if !self.is_encrypted() {
            return Ok(());
        }
        let Some(seen) = self.seen_stamp(key)? else {
            return Ok(());
        };
        let refused = match found {
            None => true,
            Some(f) => f < seen && !self.stamp_accepted(key, f)?,
        };
        if refused {
            return Err(Error::Rollback {
                key: key.to_owned(),
                seen,
                found,
            });
        }
        Ok(())
    }

    /// Whether a journal record newer than what this replica had read named
    /// `key`'s version with `stamp` (below the floor, yet not a rollback).
    fn stamp_accepted(&self, key: &str, stamp: u64) -> Result<bool> {
        let Ok(stamp) = i64::try_from(stamp) else {
            return Ok(false);
        };
        self.with_reader(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM stamps_accepted WHERE key = ?1 AND stamp = ?2")?
                    .exists(rusqlite::params![key, stamp])?,
            )
        })
    }

    /// Fetches `key`'s content, known locally as version (`hash`, `meta`)
    /// but not downloaded (a lazy pull).
    pub(crate) async fn fetch_version(
        &self,
        key: &str,
        hash: ContentHash,
        meta: Option<MetaDigest>,
    ) -> Result<bool> {
        self.fetch(key, Expect::Present(hash, meta)).await
    }

    /// Downloads `key` and records it if the local row still matches
    /// `expect`; returns whether it was recorded.
    pub(crate) async fn fetch(&self, key: &str, expect: Expect) -> Result<bool> {
        self.fetch_reporting(key, expect, &TransferProgress::none())
            .await
    }

    /// [`Bucket::fetch`], reporting the bytes downloaded to `progress`.
    pub(crate) async fn fetch_reporting(
        &self,
        key: &str,
        expect: Expect,
        progress: &TransferProgress,
    ) -> Result<bool> {
        let remote = self.connected_remote()?;
        let keys = self.keyring()?;
        let (obj, reader) = remote.get(key).await?;
        let reader: crate::remote::RemoteReader = if progress.is_reported() {
            Box::new(progress.reader(reader))
        } else {
            reader
        };
        // Before any byte is downloaded: an older version than one this
        // replica has seen is a rollback or replay, and the local copy stays.
        self.check_stamp(key, obj.stamp)?;
        let threshold = self.inner.config.inline_threshold;
        let read = match keys.clone() {
            Some(k) => self.read_sealed_body(key, reader, threshold, k).await,
            None => self.read_body(key, reader, threshold, None).await,
        };
        let (content, hash, size) = read.map_err(|e| match e {
            Error::Body { key, source } => Error::Remote(RemoteError::new(
                RemoteErrorKind::Retryable,
                remote.endpoint(),
                format!("downloading {key}: {source}"),
            )),
            other => other,
        })?;
        if size != obj.size {
            return Err(Error::Corrupt {
                key: key.to_owned(),
                detail: format!("the remote sent {size} bytes, it lists {}", obj.size),
            });
        }
        if obj.hash.is_some_and(|h| h != hash) {
            return Err(Error::Corrupt {
                key: key.to_owned(),
                detail: "the remote content does not match its ferry-hash".into(),
            });
        }
        let content_type = obj
            .content_type
            .clone()
            .unwrap_or_else(|| crate::metadata::content_type_for(key, None).unwrap_or_default());
        let metadata: Metadata = obj.metadata.clone();
        let meta = meta_digest(keys.as_deref(), &content_type, &metadata);
        let sealed_meta = keys
            .map(|k| k.seal_local_meta(key, &content_type, &metadata))
            .transpose()?;
        let pulled = Pulled {
            content,
            hash,
            size,
            content_type,
            metadata,
            sealed_meta,
            meta,
            // The version's time from the GET (an HTTP date, whole seconds).
            remote_modified_ms: obj.modified_ms.map(|t| t.div_euclid(1000) * 1000),
            modified_ms: obj
                .ferry_mtime
                .or(obj.modified_ms)
                .unwrap_or_else(|| self.now_ms()),
            own_base: obj
                .base
                .clone()
                .filter(|_| obj.device.as_deref() == Some(self.device_id())),
            etag: obj.etag,
            stamp: obj.stamp,
        };
        let size_pulled = size;
        let applied = self
            .record(SyncRecord::Pulled {
                key: key.to_owned(),
                expect,
                pulled: Box::new(pulled),
            })
            .await?;
        if applied {
            self.after_write(size_pulled, Some(key)).await;
        }
        Ok(applied)
    }

    /// `get`, optionally fetching the remote's current version first.
    pub async fn get_with(&self, key: &str, opts: GetOptions) -> Result<crate::bucket::Object> {
        validate_key(key)?;
        if opts.remote {
            let remote = self.connected_remote()?;
            let local = self.local_entry(key)?;
            if let Some(l) = &local {
                let changed = !l.present || l.base_hash != Some(l.hash) || l.base_etag.is_none();
                if changed && l.present {
                    return Err(Error::LocalChanges {
                        key: key.to_owned(),
                    });
                }
            }
            match remote.head(key).await? {
                Some(r)
                    if local.as_ref().is_some_and(|l| {
                        l.base_etag.as_deref() == Some(r.etag.as_str()) && l.cached
                    }) => {}
                Some(_) => {
                    let expect = match &local {
                        Some(l) if l.present => Expect::Present(l.hash, l.meta),
                        Some(l) if l.base_etag.is_some() => Expect::Tombstone,
                        _ => Expect::Absent,
                    };
                    self.fetch(key, expect).await?;
                }
                None => {
                    if let Some(l) = local.filter(|l| l.present) {
                        self.record(SyncRecord::LocalDeleted {
                            key: key.to_owned(),
                            expect: Expect::Present(l.hash, l.meta),
                        })
                        .await?;
                    }
                    return Err(Error::NotFound {
                        key: key.to_owned(),
                    });
                }
            }
        }
        self.get(key).await
    }
}
