//! `rejoin`: the way back for a device after another device rekeyed the
//! remote ([`Bucket::rekey`]). This bucket's key no longer opens the remote
//! ([`Error::Rekeyed`]); its own changes that never reached the new key
//! must not be lost, and nothing the others wrote since may be overwritten
//! unseen.
//!
//! 1. **Join** (first run only): a staging bucket at `<dir>.rekey-new`
//!    joins the remote under its new key file (the new passphrase), with
//!    this bucket's settings and device id but none of its version stamps
//!    (the new key's versions carry their own). A resumed run opens it.
//! 2. **Pull**: the staging bucket syncs.
//! 3. **Carry** this bucket's own changes over, as local writes of the
//!    staging bucket:
//!    - an unpushed edit (or a version in conflict) is put over the key
//!      when the remote's version there is the one the edit was based on
//!      (or the key is gone), and kept beside it as a conflict copy
//!      (`{stem}.conflict.{stamp}{.ext}`) otherwise;
//!    - an unpushed delete is carried when the remote still holds the
//!      version it deleted, and dropped when the key changed since (the
//!      delete never saw that version);
//!    - a version of ours the rekey did not re-seal (written under the old
//!      key while the rekey ran: its `kept` or `left`) is carried the same
//!      way: put where the key is gone, a conflict copy where the remote
//!      holds another version.
//!
//!    Carrying is idempotent: a version already there (or already kept as
//!    a conflict copy) is not written again, so a resumed run does not
//!    duplicate copies.
//! 4. **Push**: the staging bucket syncs again. The old-key objects of ours
//!    that were carried (or that the new key holds already) are deleted
//!    from the remote, each conditional on its ETag.
//! 5. **Swap** the directories, as `rekey` does ([`Bucket::open`] finishes
//!    a swap a crash interrupted).
//!
//! A crash at any point loses nothing: until the swap this bucket is
//! intact and `rejoin` runs again from where the staging bucket is.

use std::collections::BTreeMap;
use tokio::io::AsyncReadExt;

use crate::bucket::{blocking, retired_dir, staging_dir, Bucket, PutOptions};
use crate::crypto::keyring::Keyring;
use crate::crypto::keys::KdfParams;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::remote::encrypted::{self, Encrypted, UNREADABLE_NAME};
use crate::remote::{Precondition, Remote, RemoteErrorKind, RemoteObject, SharedRemote};
use crate::state::SyncState;
use crate::store::list::ListOptions;
use crate::sync::plan::LocalEntry;
use crate::sync::SyncOptions;

/// What [`Bucket::rejoin`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RejoinReport {
    /// The key epoch joined.
    pub epoch: u32,
    /// Objects the first sync under the new key pulled (or learned).
    pub pulled: u64,
    /// Keys whose local version was carried over the remote's (an edit
    /// of the version the remote still holds, or a key gone there).
    pub carried: Vec<String>,
    /// Conflict copies made: a local version kept beside another version
    /// the remote holds now (`(key, copy)`).
    pub copies: Vec<(String, String)>,
    /// Local deletes carried over.
    pub deleted: Vec<String>,
    /// Local deletes dropped: the key changed on the remote since.
    pub dropped_deletes: Vec<String>,
    /// Old-key objects of ours deleted from the remote once carried.
    pub retired: u64,
    /// Local versions not carried because their content is not on this
    /// device (evicted): readable with the old key on the remote only.
    pub not_carried: Vec<String>,
    /// Local changes carried but not pushed yet (the next sync pushes
    /// them).
    pub unpushed: u64,
    /// True when an interrupted rejoin was taken up again.
    pub resumed: bool,
}

fn blocked(reason: impl Into<String>) -> Error {
    Error::RekeyBlocked {
        reason: reason.into(),
    }
}

/// The content hash of `key` in `bucket` under `keys` (another key's
/// hash of the same bytes): read and hashed, fetched first when lazy.
async fn hash_under(bucket: &Bucket, key: &str, keys: &Keyring) -> Result<ContentHash> {
    let mut object = bucket.get(key).await?;
    let mut hasher = keys.hasher();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = object
            .body
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("reading", bucket.dir(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(ContentHash(*hasher.finalize().as_bytes()))
}

/// The row at `key` of `bucket`, when it holds the object.
async fn present(bucket: &Bucket, key: &str) -> Result<Option<crate::store::index::ObjectMeta>> {
    match bucket.head(key).await {
        Ok(meta) => Ok(Some(meta)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Bucket {
    /// Joins the remote again after another device rekeyed it (see the
    /// module comment), carrying this bucket's unpushed changes and its
    /// versions the rekey did not re-seal over to the new key. This bucket
    /// must be unlocked (its own content is read with its old key);
    /// `new_passphrase` opens the remote's new key file, whose cost is
    /// checked against `afford` first (as [`Bucket::create_joining`]
    /// does). `remote` is the bucket's remote, built by the caller with
    /// its credentials. Consumes the handle and returns the rejoined
    /// bucket, attached to `remote`. Resumable: after a crash or an error,
    /// run it again with the same new passphrase.
    pub async fn rejoin(
        self,
        remote: SharedRemote,
        new_passphrase: &[u8],
        afford: KdfParams,
    ) -> Result<(Bucket, RejoinReport)> {
        self.writable()?;
        let old_file = self.key_file().ok_or(Error::NotEncrypted)?;
        let old_keys = self.keyring()?.ok_or(Error::Locked)?;
        let endpoint = remote.endpoint();
        let dir = self.dir().to_owned();
        let staged = staging_dir(&dir);
        let new_pass = zeroize::Zeroizing::new(new_passphrase.to_vec());
        let others = self
            .inner
            .blobs
            .other_openers(self.inner.open_marker.as_ref())?;
        if !others.is_empty() {
            return Err(blocked(format!(
                "the bucket is open in process(es) {others:?} (stop `ferry watch` and `ferry serve` first)"
            )));
        }
        self.stop_sync().await?;
        if !self.try_lead()? {
            return Err(blocked("another process runs the sync engine"));
        }

        // 1. Join (or take up the staging bucket of an interrupted run).
        let remote_file = encrypted::read_key_file(remote.as_ref())
            .await?
            .ok_or_else(|| blocked(format!("the remote {endpoint} has no key file")))?;
        if remote_file.key_id == old_file.key_id {
            return Err(blocked(format!(
                "the remote {endpoint} was not rekeyed: this bucket's key opens it (sync as usual)"
            )));
        }
        if remote_file.epoch <= old_file.epoch {
            return Err(Error::DifferentKey {
                endpoint,
                remote_key_id: remote_file.key_id,
                local_key_id: old_file.key_id,
            });
        }
        let resumed = staged.join(crate::bucket::INDEX_FILE).is_file();
        let new = if resumed {
            let s = Bucket::open(&staged).await?;
            if s.key_file().map(|f| f.key_id) != Some(remote_file.key_id.clone()) {
                return Err(blocked(format!(
                    "{} holds another key's staging bucket (an interrupted rekey of this device?); run `ferry rekey` to finish it, or move it away",
                    staged.display()
                )));
            }
            s.unlock(&new_pass).await?;
            s
        } else {
            let s = Bucket::create_joining(
                &staged,
                self.config().clone(),
                remote_file.clone(),
                &new_pass,
                afford,
            )
            .await?;
            drop(s);
            self.copy_settings_to(&staged).await?;
            let s = Bucket::open(&staged).await?;
            s.unlock(&new_pass).await?;
            s
        };
        let new_keys = new.keyring()?.ok_or(Error::Locked)?;
        let mut report = RejoinReport {
            epoch: remote_file.epoch,
            resumed,
            ..RejoinReport::default()
        };

        // 2. Pull under the new key.
        new.attach(remote.clone()).await?;
        let pulled = new.sync(SyncOptions::default()).await?;
        if let Some(e) = pulled.errors.first() {
            return Err(blocked(format!(
                "the first sync under the new key reported {} error(s) (first: {:?}: {}); run it again",
                pulled.errors.len(),
                e.key,
                e.cause
            )));
        }
        report.pulled = pulled.pulled;

        // 3. Carry this bucket's own changes over.
        let old_layer = Encrypted::new(remote.clone(), old_keys.clone());
        let mut old_objects: BTreeMap<String, RemoteObject> = BTreeMap::new();
        for object in old_layer.list("").await? {
            if !object.key.starts_with(UNREADABLE_NAME) && !object.key.starts_with(".ferry/") {
                old_objects.insert(object.key.clone(), object);
            }
        }
        let mut rows = self.read_rows(
            "WHERE state <> 'synced' AND key >= ?1 ORDER BY key",
            Some(""),
        )?;
        for key in old_objects.keys() {
            if let Some(l) = self.local_entry(key)? {
                if l.state == SyncState::Synced {
                    rows.push(l);
                }
            }
        }
        let mut retire: Vec<RemoteObject> = Vec::new();
        for l in rows {
            let ours_on_remote = old_objects
                .get(&l.key)
                .filter(|o| l.base_etag.as_deref() == Some(o.etag.as_str()));
            let edited = l.present
                && (l.base_etag.is_none()
                    || l.base_hash != Some(l.hash)
                    || l.base_meta != l.meta
                    || l.state == SyncState::Conflict);
            let handled = if !l.present {
                self.carry_delete(&new, &l, &old_keys, &mut report).await?
            } else if edited || ours_on_remote.is_some() {
                self.carry_version(&new, &l, &old_keys, &new_keys, &mut report)
                    .await?
            } else {
                false
            };
            if handled {
                if let Some(o) = ours_on_remote {
                    retire.push(o.clone());
                }
            }
        }

        // 4. Push, then retire the old-key objects carried.
        let pushed = new.sync(SyncOptions::default()).await?;
        let status = new.status().await?;
        report.unpushed = status.dirty + status.pending_delete;
        let enforced = self
            .probe_result(&remote.endpoint())?
            .is_none_or(|p| p.conditional_delete);
        let base: SharedRemote = if enforced {
            remote.clone()
        } else {
            std::sync::Arc::new(crate::remote::emulated::Emulated::new(
                remote.clone(),
                false,
                true,
            ))
        };
        let old_layer = Encrypted::new(base, old_keys.clone());
        for object in retire {
            let synced = new
                .local_entry(&object.key)?
                .is_none_or(|n| n.state == SyncState::Synced);
            if !synced || pushed.errors.iter().any(|e| e.key == object.key) {
                continue;
            }
            match old_layer
                .delete(&object.key, Precondition::IfMatch(object.etag))
                .await
            {
                Ok(()) => report.retired += 1,
                Err(e)
                    if e.kind == RemoteErrorKind::PreconditionFailed
                        || e.kind == RemoteErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }

        // 5. Swap the directories.
        self.resign();
        drop(self);
        drop(new);
        let retired = retired_dir(&dir);
        let swapped = dir.clone();
        let from = staged.clone();
        blocking(move || {
            std::fs::rename(&swapped, &retired).map_err(|e| Error::io("moving", &swapped, e))?;
            std::fs::rename(&from, &swapped).map_err(|e| Error::io("moving", &from, e))?;
            std::fs::remove_dir_all(&retired).map_err(|e| Error::io("removing", &retired, e))?;
            Ok(())
        })
        .await?;
        let bucket = Bucket::open(&dir).await?;
        bucket.unlock(&new_pass).await?;
        bucket.attach(remote).await?;
        Ok((bucket, report))
    }

    /// Carries the present version of row `l` into `new`: over the key
    /// when the key is gone there or holds the version `l` agreed on,
    /// beside it as a conflict copy otherwise. True when it is in `new`
    /// now (carried, or there already).
    async fn carry_version(
        &self,
        new: &Bucket,
        l: &LocalEntry,
        old_keys: &Keyring,
        new_keys: &Keyring,
        report: &mut RejoinReport,
    ) -> Result<bool> {
        if !l.cached {
            report.not_carried.push(l.key.clone());
            return Ok(false);
        }
        let ours = hash_under(self, &l.key, new_keys).await?;
        let there = present(new, &l.key).await?;
        let over = match &there {
            None => true,
            Some(n) if n.hash == ours => {
                let mine = self.head(&l.key).await?;
                if mine.content_type == n.content_type && mine.metadata == n.metadata {
                    return Ok(true);
                }
                l.base_hash.is_some()
                    && Some(hash_under(new, &l.key, old_keys).await?) == l.base_hash
            }
            Some(_) => {
                l.base_hash.is_some()
                    && l.base_etag.is_some()
                    && l.state != SyncState::Synced
                    && Some(hash_under(new, &l.key, old_keys).await?) == l.base_hash
            }
        };
        let target = if over {
            report.carried.push(l.key.clone());
            l.key.clone()
        } else {
            // Kept already by an interrupted run?
            let (stem, _) = super::resolve::split_extension(&l.key);
            let copies = new
                .list(ListOptions::prefix(format!("{stem}.conflict.")))
                .await?
                .objects;
            if copies.iter().any(|c| c.hash == ours) {
                return Ok(true);
            }
            let copy = new.free_conflict_name(&l.key)?;
            report.copies.push((l.key.clone(), copy.clone()));
            copy
        };
        let object = self.get(&l.key).await?;
        new.put(
            &target,
            crate::Body::from_reader(object.body),
            PutOptions {
                content_type: Some(object.meta.content_type.clone()),
                metadata: object.meta.metadata.clone(),
            },
        )
        .await?;
        Ok(true)
    }

    /// Carries the unpushed delete of row `l` into `new` when the key
    /// there still holds the version it deleted. True when the key is
    /// gone from `new` now.
    async fn carry_delete(
        &self,
        new: &Bucket,
        l: &LocalEntry,
        old_keys: &Keyring,
        report: &mut RejoinReport,
    ) -> Result<bool> {
        if l.base_hash.is_none() || present(new, &l.key).await?.is_none() {
            return Ok(true);
        }
        if Some(hash_under(new, &l.key, old_keys).await?) == l.base_hash {
            new.delete(&l.key).await?;
            report.deleted.push(l.key.clone());
            Ok(true)
        } else {
            report.dropped_deletes.push(l.key.clone());
            Ok(false)
        }
    }
}
