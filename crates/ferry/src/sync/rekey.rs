//! `rekey`: a new master key for an encrypted bucket and its remote, every
//! object re-sealed under it. The answer to a leaked passphrase or key
//! (`passwd` only re-wraps the same master key).
//!
//! The new bucket is built beside the old one and swapped in at the end, so
//! every step is resumable and the old bucket stays whole until the swap:
//!
//! 1. **Prepare** (first run only): sync, and refuse while anything is
//!    unsynced, in conflict, or the bucket is open in another process.
//!    Create the staging bucket `<dir>.rekey-new` under a fresh master key
//!    (key file v3, epoch + 1, wrapped under the **new** passphrase: a
//!    rekey answers a leaked passphrase, so the old one must not open the
//!    new key) with this bucket's settings and device id.
//! 2. **Copy**: every object (lazy ones are fetched) is read as plaintext
//!    and put into the staging bucket, with its content type, metadata,
//!    modification time, pin and version stamps. Keys already copied are
//!    skipped on a resumed run.
//! 3. **Switch the remote's key file** to the new one (If-Match the old
//!    one's etag): from here on, devices holding the old key get
//!    [`Error::Rekeyed`]. The old journal records (sealed under the old
//!    key) are deleted.
//! 4. **Push**: the staging bucket attaches and syncs, uploading every
//!    object under its new names (names v2) and envelopes.
//! 5. **Retire** the old objects: every remote name that decrypts under the
//!    old key is deleted.
//! 6. **Swap**: `<dir>` → `<dir>.rekey-old`, `<dir>.rekey-new` → `<dir>`,
//!    then the old directory is removed. [`Bucket::open`] finishes a swap a
//!    crash interrupted.
//!
//! A crash at any point loses nothing: before step 6 the old bucket is
//! intact and `rekey` runs again from where the staging bucket is (steps 3
//! to 5 are idempotent); the remote holds every object under the old names
//! until step 4 has pushed them under the new.

use std::path::Path;
use std::sync::Arc;

use crate::bucket::{blocking, retired_dir, staging_dir, Bucket, PutOptions};
use crate::crypto::keyring::KeyFile;
use crate::crypto::keys::KdfParams;
use crate::error::{Error, Result};
use crate::remote::encrypted::{self, Encrypted, UNREADABLE_NAME};
use crate::remote::{Precondition, Remote, RemoteErrorKind, SharedRemote};
use crate::store::index;
use crate::store::list::ListOptions;
use crate::sync::SyncOptions;

/// Settings the staging bucket does not take from the old one.
const OWN_SETTINGS: &[&str] = &["encryption", "journal", "created_ms", "origin"];

/// A step of a running rekey, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyStep {
    /// Objects re-sealed locally (done of total).
    Copy,
    /// Objects pushed under the new key.
    Push,
    /// Old remote objects deleted.
    Retire,
}

/// A rekey progress callback: step, done, total.
pub type RekeyProgressFn = Arc<dyn Fn(RekeyStep, u64, u64) + Send + Sync>;

/// What [`Bucket::rekey`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RekeyReport {
    /// The new key epoch.
    pub epoch: u32,
    /// The new master key's id.
    pub key_id: String,
    /// Objects re-sealed in this run (a resumed run skips those done).
    pub copied: u64,
    /// Objects pushed under the new key.
    pub pushed: u64,
    /// Old remote objects deleted.
    pub retired: u64,
    /// True when an interrupted rekey was taken up again.
    pub resumed: bool,
    /// Old remote objects left in place because the new bucket does not
    /// hold their key (written under the old key during the rekey by a
    /// device that had not seen the new key file): readable only with the
    /// old key, never deleted by rekey.
    pub left: Vec<String>,
    /// Old remote objects kept because they are not the version this
    /// bucket re-sealed: a device still on the old key wrote them after
    /// rekey read the bucket (between the key file's switch and the
    /// retire). Readable only with the old key; never deleted by rekey.
    pub kept: Vec<String>,
}

/// What the retire step did.
struct Retired {
    retired: u64,
    left: Vec<String>,
    kept: Vec<String>,
}

fn blocked(reason: impl Into<String>) -> Error {
    Error::RekeyBlocked {
        reason: reason.into(),
    }
}

impl Bucket {
    /// Replaces the bucket's master key (see the module comment): every
    /// object is re-sealed and re-pushed under a new key epoch, the old
    /// remote objects are deleted, and the remote's key file is replaced.
    /// `remote` is the bucket's remote, built by the caller with its
    /// credentials (not attached: after an interrupted run it holds the new
    /// key file, which this bucket's key does not open). `passphrase` is
    /// the bucket's current one (checked first); the new key is wrapped
    /// under `new_passphrase` at cost `kdf`, and other devices join with
    /// it. A new passphrase equal to the current one is refused
    /// ([`Error::RekeyBlocked`]) before anything changes: a rekey answers
    /// a leaked passphrase. Consumes the handle and returns the rekeyed
    /// bucket, attached to `remote`. Resumable: after a crash or an error,
    /// run it again with the same two passphrases.
    pub async fn rekey(
        self,
        remote: SharedRemote,
        passphrase: &[u8],
        new_passphrase: &[u8],
        kdf: KdfParams,
        progress: Option<RekeyProgressFn>,
    ) -> Result<(Bucket, RekeyReport)> {
        self.writable()?;
        let old_file = self.key_file().ok_or(Error::NotEncrypted)?;
        let old_keys = self.keyring()?.ok_or(Error::Locked)?;
        let endpoint = remote.endpoint();
        let dir = self.dir().to_owned();
        let staged = staging_dir(&dir);
        let tell = |step, done, total| {
            if let Some(p) = &progress {
                p(step, done, total);
            }
        };
        let pass = zeroize::Zeroizing::new(passphrase.to_vec());
        let new_pass = zeroize::Zeroizing::new(new_passphrase.to_vec());
        {
            let (file, pass) = (old_file.clone(), pass.clone());
            blocking(move || Ok(file.unlock(&pass)?)).await?;
        }
        if new_pass.is_empty() {
            return Err(blocked("the new passphrase is empty"));
        }
        if *new_pass == *pass {
            return Err(blocked(
                "the new passphrase is the current one; a rekey answers a leaked passphrase, so give a new one (nothing was changed)",
            ));
        }
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

        // 1. Prepare (or take up the staging bucket of an interrupted run).
        let scopes = self.scopes()?;
        let filtered = !self.scope_filter()?.is_empty();
        if scopes.iter().any(|s| !s.is_empty()) || filtered {
            return Err(blocked(format!(
                "this bucket syncs only part of the remote (scope {scopes:?}{}), and rekey must re-seal every object on it; widen the scope to everything first (`ferry scope add ''`, `ferry scope filter --clear`)",
                if filtered { " and a scope filter" } else { "" }
            )));
        }
        let resumed = staged.join(crate::bucket::INDEX_FILE).is_file();
        let remote_file = encrypted::read_key_file(remote.as_ref()).await?;
        let remote_id = remote_file.as_ref().map(|f| f.key_id.clone());
        if remote_id.as_deref() == Some(old_file.key_id.as_str()) {
            self.attach(remote.clone()).await?;
        } else if !resumed {
            return Err(match remote_file {
                Some(f) => Error::DifferentKey {
                    endpoint,
                    remote_key_id: f.key_id,
                    local_key_id: old_file.key_id.clone(),
                },
                None => blocked(format!("the remote {endpoint} has no key file")),
            });
        }
        let new = if resumed {
            let s = Bucket::open(&staged).await?;
            match s.unlock(&new_pass).await {
                Err(Error::WrongPassphrase) => {
                    return Err(blocked(format!(
                        "an interrupted rekey is waiting in {} under another new passphrase; run it again with the new passphrase it started with",
                        staged.display()
                    )))
                }
                done => done?,
            }
            s
        } else {
            let report = self.sync(SyncOptions::default()).await?;
            let status = self.status().await?;
            if !report.errors.is_empty() || status.dirty + status.pending_delete > 0 {
                return Err(blocked(format!(
                    "{} local change(s) are not pushed and the sync reported {} error(s); run `ferry sync` until it is clean",
                    status.dirty + status.pending_delete,
                    report.errors.len()
                )));
            }
            if status.conflicts > 0 {
                return Err(blocked(format!(
                    "{} conflict(s) are open; resolve them first",
                    status.conflicts
                )));
            }
            let epoch = old_file.epoch.saturating_add(1);
            let p = new_pass.clone();
            let (file, keys) =
                blocking(move || Ok(KeyFile::generate_epoch(&p, kdf, epoch)?)).await?;
            let config = self.config().clone();
            let s = Bucket::create_inner(staged.clone(), config, Some(file)).await?;
            drop(s);
            self.copy_settings_to(&staged).await?;
            let s = Bucket::open(&staged).await?;
            s.set_keys(Some(Arc::new(keys)));
            s
        };
        let new_file = new.key_file().ok_or(Error::NotEncrypted)?;
        if let Some(id) = &remote_id {
            if *id != old_file.key_id && *id != new_file.key_id {
                return Err(Error::DifferentKey {
                    endpoint,
                    remote_key_id: id.clone(),
                    local_key_id: old_file.key_id.clone(),
                });
            }
        }
        let mut report = RekeyReport {
            epoch: new_file.epoch,
            key_id: new_file.key_id.clone(),
            resumed,
            ..RekeyReport::default()
        };

        // 2. Copy every object, re-sealed.
        let switched = remote_id.as_deref() == Some(new_file.key_id.as_str());
        if !switched {
            let all = self.list(ListOptions::prefix("")).await?.objects;
            let total = all.len() as u64;
            for (i, meta) in all.iter().enumerate() {
                tell(RekeyStep::Copy, i as u64, total);
                if new.exists(&meta.key).await? {
                    continue;
                }
                let object = self.get(&meta.key).await?;
                new.put(
                    &meta.key,
                    crate::Body::from_reader(object.body),
                    PutOptions {
                        content_type: Some(meta.content_type.clone()),
                        metadata: meta.metadata.clone(),
                    },
                )
                .await?;
                report.copied += 1;
            }
            tell(RekeyStep::Copy, total, total);
            self.copy_rows_to(&new).await?;

            // 3. The remote's key file, then the old journal.
            let cond = match remote.head(encrypted::KEY_FILE).await? {
                Some(current) if remote_id.as_deref() == Some(old_file.key_id.as_str()) => {
                    Precondition::IfMatch(current.etag)
                }
                _ => {
                    return Err(Error::DifferentKey {
                        endpoint,
                        remote_key_id: remote_id.unwrap_or_default(),
                        local_key_id: old_file.key_id.clone(),
                    })
                }
            };
            encrypted::write_key_file(remote.as_ref(), &new_file, cond).await?;
        }
        for record in remote.list(crate::sync::journal::JOURNAL).await? {
            remote.delete(&record.key, Precondition::None).await?;
        }

        // 4. Push under the new key.
        new.attach(remote.clone()).await?;
        let push_progress: crate::sync::ProgressFn = {
            let progress = progress.clone();
            Arc::new(move |p: crate::sync::SyncProgress| {
                if let Some(f) = &progress {
                    f(RekeyStep::Push, p.done, p.total);
                }
            })
        };
        let pushed = new
            .sync_with_progress(SyncOptions::default(), Some(push_progress))
            .await?;
        report.pushed = pushed.pushed;
        let status = new.status().await?;
        if status.dirty + status.pending_delete + status.conflicts > 0 {
            let errors: Vec<String> = pushed
                .errors
                .iter()
                .filter(|e| !e.key.starts_with(UNREADABLE_NAME))
                .map(|e| format!("{:?}: {}", e.key, e.cause))
                .collect();
            return Err(blocked(format!(
                "{} object(s) are not pushed under the new key yet ({}); run `ferry rekey` again to go on",
                status.dirty + status.pending_delete + status.conflicts,
                errors.join("; ")
            )));
        }

        // 5. Retire the old objects (only the versions this bucket copied).
        let retire = self
            .retire_old(&new, remote.clone(), old_keys.clone(), &tell)
            .await?;
        report.retired = retire.retired;
        report.left.extend(retire.left);
        report.kept = retire.kept;

        // 6. Swap the directories.
        self.resign();
        drop(self);
        drop(new);
        let retired = retired_dir(&dir);
        let swapped = dir.clone();
        blocking(move || {
            std::fs::rename(&swapped, &retired).map_err(|e| Error::io("moving", &swapped, e))?;
            std::fs::rename(&staged, &swapped).map_err(|e| Error::io("moving", &staged, e))?;
            std::fs::remove_dir_all(&retired).map_err(|e| Error::io("removing", &retired, e))?;
            Ok(())
        })
        .await?;
        let bucket = Bucket::open(&dir).await?;
        bucket.unlock(&new_pass).await?;
        bucket.attach(remote).await?;
        Ok((bucket, report))
    }

    /// Step 5: deletes the old remote objects, the names `old_keys`
    /// opens, of keys the new bucket holds, each only while it is still
    /// the version this bucket agreed on (the one re-sealed): the agreed
    /// ETag is compared with the listing and the delete is conditional on
    /// it (emulated by HEAD where the store ignores conditional deletes).
    /// A version written meanwhile under the old key is kept and named;
    /// keys the new bucket does not hold are left and named.
    async fn retire_old(
        &self,
        new: &Bucket,
        remote: SharedRemote,
        old_keys: Arc<crate::crypto::keyring::Keyring>,
        tell: &(dyn Fn(RekeyStep, u64, u64) + Send + Sync),
    ) -> Result<Retired> {
        let enforced = self
            .probe_result(&remote.endpoint())?
            .is_none_or(|p| p.conditional_delete);
        let base: SharedRemote = if enforced {
            remote
        } else {
            Arc::new(crate::remote::emulated::Emulated::new(remote, false, true))
        };
        let old_layer = Encrypted::new(base, old_keys);
        let mut out = Retired {
            retired: 0,
            left: Vec::new(),
            kept: Vec::new(),
        };
        let mut old_objects = Vec::new();
        for object in old_layer.list("").await? {
            if object.key.starts_with(UNREADABLE_NAME) {
                continue;
            }
            if !new.exists(&object.key).await? {
                out.left.push(object.key);
                continue;
            }
            let agreed = self.local_entry(&object.key)?.and_then(|l| l.base_etag);
            if agreed.as_deref() == Some(object.etag.as_str()) {
                old_objects.push(object);
            } else {
                out.kept.push(object.key);
            }
        }
        let total = old_objects.len() as u64;
        for (i, object) in old_objects.into_iter().enumerate() {
            tell(RekeyStep::Retire, i as u64, total);
            match old_layer
                .delete(&object.key, Precondition::IfMatch(object.etag))
                .await
            {
                Ok(()) => out.retired += 1,
                Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => {
                    out.kept.push(object.key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        tell(RekeyStep::Retire, total, total);
        out.kept.sort();
        Ok(out)
    }

    /// Copies this bucket's settings (but its own key file, journal
    /// position and creation time) into the index at `staged`.
    pub(super) async fn copy_settings_to(&self, staged: &Path) -> Result<()> {
        let settings: Vec<(String, String)> = self.with_reader(|c| {
            let mut stmt = c.prepare("SELECT name, value FROM settings")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        let path = staged.join(crate::bucket::INDEX_FILE);
        blocking(move || {
            let conn = index::open(&path, false)?;
            for (name, value) in settings {
                if !OWN_SETTINGS.contains(&name.as_str()) {
                    index::set_setting(&conn, &name, &value)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Gives the copied objects in `new` this bucket's modification times
    /// and pins, and copies the version stamps seen, so the re-sealed
    /// versions carry newer stamps than any the replicas saw.
    async fn copy_rows_to(&self, new: &Bucket) -> Result<()> {
        type Row = (String, i64, bool);
        let (rows, stamps): (Vec<Row>, Vec<(String, i64)>) = self.with_reader(|c| {
            let mut stmt =
                c.prepare("SELECT key, modified_ms, pinned FROM objects WHERE present = 1")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = c.prepare("SELECT key, stamp FROM stamps")?;
            let stamps = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, stamps))
        })?;
        let path = new.inner.index_path.clone();
        blocking(move || {
            let mut conn = index::open(&path, false)?;
            let tx = conn.transaction()?;
            for (key, modified, pinned) in rows {
                tx.execute(
                    "UPDATE objects SET modified_ms = ?2, pinned = ?3 WHERE key = ?1",
                    rusqlite::params![key, modified, pinned],
                )?;
            }
            for (key, stamp) in stamps {
                tx.execute(
                    "INSERT OR REPLACE INTO stamps (key, stamp) VALUES (?1, MAX(?2, COALESCE((SELECT stamp FROM stamps WHERE key = ?1), 0)))",
                    rusqlite::params![key, stamp],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
