//! Executing the planner's actions: one action against the remote, its
//! outcome recorded through the index writer; the delete limit; conflicts and
//! failed attempts.

use std::collections::HashMap;

use crate::bucket::Bucket;
use crate::crypto::keyring::meta_digest;
use crate::error::{Error, Result};
use crate::hash::{ContentHash, MetaDigest};
use crate::remote::{
    Precondition, PutRequest, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject, SharedRemote,
    TransferProgress,
};
use crate::store::record::{Removed, SyncRecord};
use crate::sync::plan;
use crate::sync::plan::{Action, ConflictPolicy, ConflictReason, Expect, LocalEntry};

use super::{
    annotate, issue, ConflictInfo, DeleteLimit, Done, SyncIssue, SyncMode, SyncOptions, SyncReport,
};

impl Bucket {
    /// Safety rail: refuses a plan that deletes more than `limit` objects on
    /// either side.
    pub(super) fn check_deletes(
        &self,
        actions: &[Action],
        synced: u64,
        limit: DeleteLimit,
    ) -> Result<()> {
        let local = actions
            .iter()
            .filter(|a| matches!(a, Action::DeleteLocal { .. }))
            .count() as u64;
        let remote = actions
            .iter()
            .filter(|a| matches!(a, Action::DeleteRemote { .. } | Action::Retract { .. }))
            .count() as u64;
        for (side, count) in [("locally", local), ("on the remote", remote)] {
            if limit.exceeded(count, synced) {
                return Err(Error::TooManyDeletes {
                    side,
                    count,
                    synced,
                    limit: limit.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Outbox keys whose last attempt failed, and when they may run again.
    pub(super) fn parked(&self) -> Result<HashMap<String, i64>> {
        self.with_reader(|c| {
            let mut stmt =
                c.prepare_cached("SELECT key, next_attempt_ms FROM outbox WHERE state = 'failed'")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (key, next) = row?;
                out.insert(key, next);
            }
            Ok(out)
        })
    }

    /// The content hash of a foreign remote object `r` (no `ferry-hash`)
    /// where it may equal the local version `l`: `None` when it differs.
    /// Sizes first; then a single-part upload's MD5 ETag against the local
    /// bytes; otherwise the remote bytes are downloaded and hashed.
    pub(super) async fn establish_hash(
        &self,
        remote: &SharedRemote,
        l: &LocalEntry,
        r: &RemoteObject,
    ) -> Result<Option<ContentHash>> {
        use md5::Digest;
        use tokio::io::AsyncReadExt;
        let stored = self.lookup(&l.key)?;
        if stored.meta.size != r.size {
            return Ok(None);
        }
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(etag_md5) = crate::remote::plain_md5_etag(&r.etag) {
            let object = self.get(&l.key).await?;
            let mut body = object.body;
            let mut md5 = md5::Md5::new();
            loop {
                let n = body.read(&mut buf).await.map_err(|e| Error::Corrupt {
                    key: l.key.clone(),
                    detail: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
            }
            let local_md5: [u8; 16] = md5.finalize().into();
            return Ok((local_md5 == etag_md5).then_some(l.hash));
        }
        let (_, mut body) = remote.get(&r.key).await?;
        let mut hasher = blake3::Hasher::new();
        loop {
            let n = body.read(&mut buf).await.map_err(|e| {
                Error::Remote(RemoteError::new(
                    RemoteErrorKind::Retryable,
                    remote.endpoint(),
                    format!("downloading {}: {e}", r.key),
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Some(ContentHash::from(hasher.finalize())))
    }

    /// Only pushes.
    pub async fn push(&self) -> Result<SyncReport> {
        self.sync(SyncOptions {
            mode: SyncMode::Push,
            dry_run: false,
            ..Default::default()
        })
        .await
    }

    /// Only pulls.
    pub async fn pull(&self) -> Result<SyncReport> {
        self.sync(SyncOptions {
            mode: SyncMode::Pull,
            dry_run: false,
            ..Default::default()
        })
        .await
    }

    /// Runs one action and records its outcome; an upload or download
    /// reports its bytes to `progress`.
    pub(super) async fn execute(
        &self,
        remote: &SharedRemote,
        action: Action,
        seen: Option<RemoteObject>,
        expect: Expect,
        policy: ConflictPolicy,
        progress: &TransferProgress,
    ) -> Done {
        let key = action.key().to_owned();
        let result = self
            .execute_inner(remote, action, seen, expect, policy, progress)
            .await;
        match result {
            Ok(done) => done,
            Err(Error::Remote(re)) if re.is_no_answer() => {
                Done::NoAnswer(issue(&key, &Error::Remote(re)))
            }
            Err(e) => Done::Failed(issue(&key, &e)),
        }
    }

    /// Runs one action; `expect` is what the local row looked like when it
    /// was planned (outcomes that only change bookkeeping are recorded
    /// only while it still does).
    pub(super) async fn execute_inner(
        &self,
        remote: &SharedRemote,
        action: Action,
        seen: Option<RemoteObject>,
        expect: Expect,
        policy: ConflictPolicy,
        progress: &TransferProgress,
    ) -> Result<Done> {
        match action {
            Action::Push {
                key,
                hash,
                cond,
                base,
            } => {
                if let Some(why) = remote.refuses(&key) {
                    let e = RemoteError::new(
                        RemoteErrorKind::Terminal,
                        remote.endpoint(),
                        format!("the remote cannot hold the key {key:?}: {why}"),
                    );
                    return self.fail_attempt(&key, Some(hash), e).await;
                }
                // A plan made without the remote's metadata (a listing, or
                // the agreed version assumed) cannot have seen a rewrite
                // that kept the ETag.
                if !seen.as_ref().is_some_and(|s| s.has_metadata) {
                    match self.rewritten_in_place(remote, &key, &cond).await {
                        Ok(None) => {}
                        Ok(Some(current)) => {
                            let reason = ConflictReason::BothModified;
                            let etag = Some(current.etag);
                            return self.conflict(key, reason, etag, expect, policy).await;
                        }
                        Err(Error::Remote(e)) => {
                            return self.fail_attempt(&key, Some(hash), e).await
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.push_one(remote, &key, hash, cond, base, policy, progress)
                    .await
            }
            Action::DeleteRemote { key, cond } => match remote.delete(&key, cond.clone()).await {
                Ok(()) => {
                    let removed = match &cond {
                        Precondition::IfMatch(etag) => Some(Removed {
                            etag: etag.clone(),
                            hash: None,
                            meta: None,
                        }),
                        _ => None,
                    };
                    self.record(SyncRecord::RemoteDeleted { key, removed })
                        .await?;
                    Ok(Done::DeletedRemote)
                }
                Err(e)
                    if e.kind == RemoteErrorKind::PreconditionFailed
                        || (e.kind == RemoteErrorKind::NotFound
                            && matches!(cond, Precondition::IfMatch(_))) =>
                {
                    let mut current = match remote.head(&key).await {
                        Ok(c) => c,
                        Err(e) => return self.fail_attempt(&key, None, e).await,
                    };
                    if let Some(c) = current.as_mut() {
                        annotate(self.keyring()?.as_deref(), c);
                    }
                    let row = self.read_rows("WHERE key = ?1", Some(&key))?.pop();
                    match current {
                        // Gone: our own earlier attempt landed with its
                        // answer lost (or another delete did): deleted.
                        None => {
                            self.record(SyncRecord::RemoteDeleted { key, removed: None })
                                .await?;
                            Ok(Done::DeletedRemote)
                        }
                        // A version this device wrote (a push whose answer
                        // was lost): the local delete came after it, so it
                        // saw it. Or the very version the delete saw, pushed
                        // again by a writer that never learned it landed.
                        // Deleted, conditional on that version.
                        Some(c)
                            if matches!(cond, Precondition::IfMatch(_))
                                && c.hash.is_some()
                                && (c.device.as_deref() == Some(self.device_id())
                                    || row
                                        .as_ref()
                                        .is_some_and(|l| plan::deleted_version_again(l, &c))) =>
                        {
                            match remote
                                .delete(&key, Precondition::IfMatch(c.etag.clone()))
                                .await
                            {
                                Ok(()) => {
                                    let removed = Some(Removed {
                                        etag: c.etag.clone(),
                                        hash: c.hash,
                                        meta: c.meta,
                                    });
                                    self.record(SyncRecord::RemoteDeleted { key, removed })
                                        .await?;
                                    Ok(Done::DeletedRemote)
                                }
                                Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => {
                                    self.conflict(
                                        key,
                                        ConflictReason::DeletedLocallyModifiedRemotely,
                                        None,
                                        Expect::Tombstone,
                                        policy,
                                    )
                                    .await
                                }
                                Err(e) => self.fail_attempt(&key, None, e).await,
                            }
                        }
                        Some(c) => {
                            self.conflict(
                                key,
                                ConflictReason::DeletedLocallyModifiedRemotely,
                                Some(c.etag),
                                Expect::Tombstone,
                                policy,
                            )
                            .await
                        }
                    }
                }
                Err(e) => {
                    if matches!(
                        e.kind,
                        RemoteErrorKind::Retryable | RemoteErrorKind::Unreachable
                    ) {
                        self.record(SyncRecord::DeleteAttempted { key: key.clone() })
                            .await?;
                    }
                    self.fail_attempt(&key, None, e).await
                }
            },
            Action::Retract { key, etag, expect } => {
                match remote.delete(&key, Precondition::IfMatch(etag)).await {
                    Ok(()) => {
                        let applied = self.record(SyncRecord::Retracted { key, expect }).await?;
                        Ok(if applied {
                            Done::DeletedRemote
                        } else {
                            Done::Nothing
                        })
                    }
                    // Replaced or gone since: the next run decides.
                    Err(e)
                        if matches!(
                            e.kind,
                            RemoteErrorKind::PreconditionFailed | RemoteErrorKind::NotFound
                        ) =>
                    {
                        Ok(Done::Nothing)
                    }
                    Err(e) => self.fail_attempt(&key, None, e).await,
                }
            }
            Action::Pull { key, expect, .. } => {
                if self.fetch_reporting(&key, expect, progress).await? {
                    Ok(Done::Pulled)
                } else {
                    Ok(Done::Nothing)
                }
            }
            Action::Learn {
                key,
                remote: obj,
                expect,
            } => {
                // A listing carries no metadata; learn it with a HEAD when needed.
                let mut obj = if obj.has_metadata {
                    *obj
                } else {
                    remote.head(&key).await?.unwrap_or(*obj)
                };
                annotate(self.keyring()?.as_deref(), &mut obj);
                self.check_stamp(&key, obj.stamp)?;
                let sealed_meta = self.keyring()?.map(|k| {
                    let content_type = obj.content_type.clone().unwrap_or_else(|| {
                        crate::metadata::content_type_for(&key, None).unwrap_or_default()
                    });
                    k.seal_local_meta(&key, &content_type, &obj.metadata)
                });
                let sealed_meta = sealed_meta.transpose()?;
                let applied = self
                    .record(SyncRecord::Learned {
                        key,
                        expect,
                        remote: Box::new(obj),
                        sealed_meta,
                    })
                    .await?;
                Ok(if applied { Done::Pulled } else { Done::Nothing })
            }
            Action::DeleteLocal { key, expect } => {
                let applied = self
                    .record(SyncRecord::LocalDeleted { key, expect })
                    .await?;
                Ok(if applied {
                    Done::DeletedLocal
                } else {
                    Done::Nothing
                })
            }
            Action::Adopt {
                key,
                etag,
                hash,
                meta,
                modified_ms,
            } => {
                // Our own push whose answer was lost: it keeps what it was based on.
                let stamp = match &seen {
                    Some(s) if s.etag == etag && s.stamp.is_some() => s.stamp,
                    // A version adopted from a listing: its stamp is read,
                    // so a later push of ours over it seals a larger one.
                    _ if self.is_encrypted() => match remote.head(&key).await {
                        Ok(Some(c)) if c.etag == etag => c.stamp,
                        Ok(_) => None,
                        Err(e) => return Err(Error::Remote(e)),
                    },
                    _ => None,
                };
                let pushed_base = seen
                    .filter(|s| s.device.as_deref() == Some(self.device_id()))
                    .and_then(|s| s.base);
                if let Some(stamp) = stamp {
                    let batch = vec![(key.clone(), stamp)];
                    self.record(SyncRecord::Stamps { batch }).await?;
                }
                self.record(SyncRecord::Adopted {
                    key,
                    etag,
                    hash,
                    meta,
                    modified_ms,
                    pushed_base,
                    stamp,
                })
                .await?;
                Ok(Done::Nothing)
            }
            Action::Refresh {
                key,
                etag,
                modified_ms,
            } => {
                self.record(SyncRecord::Refreshed {
                    batch: vec![(key, etag, modified_ms)],
                })
                .await?;
                Ok(Done::Nothing)
            }
            Action::Forget { key } => {
                self.record(SyncRecord::Forgot { key }).await?;
                Ok(Done::Nothing)
            }
            Action::Conflict {
                key,
                reason,
                remote_etag,
            } => {
                let etag = remote_etag.or(seen.map(|s| s.etag));
                let applied = self
                    .record(SyncRecord::Conflicted {
                        key: key.clone(),
                        reason,
                        remote_etag: etag.clone(),
                        expect,
                    })
                    .await?;
                if !applied {
                    // The row moved since planning: the next run decides.
                    return Ok(Done::Nothing);
                }
                let deleted_locally = reason == ConflictReason::DeletedLocallyModifiedRemotely;
                Ok(Done::Conflict(ConflictInfo {
                    key,
                    reason: Some(reason),
                    remote_etag: etag,
                    deleted_locally,
                }))
            }
            Action::SetState { key, state } => {
                self.record(SyncRecord::State {
                    key,
                    state,
                    expect: Some(expect),
                })
                .await?;
                Ok(Done::Nothing)
            }
        }
    }

    pub(super) async fn conflict(
        &self,
        key: String,
        reason: ConflictReason,
        remote_etag: Option<String>,
        expect: Expect,
        policy: ConflictPolicy,
    ) -> Result<Done> {
        let hash = match &expect {
            Expect::Present(h, _) => Some(*h),
            _ => None,
        };
        if policy == ConflictPolicy::Flag {
            let applied = self
                .record(SyncRecord::Conflicted {
                    key: key.clone(),
                    reason,
                    remote_etag: remote_etag.clone(),
                    expect,
                })
                .await?;
            if !applied {
                return Ok(Done::Nothing);
            }
            let deleted_locally = reason == ConflictReason::DeletedLocallyModifiedRemotely;
            Ok(Done::Conflict(ConflictInfo {
                key,
                reason: Some(reason),
                remote_etag,
                deleted_locally,
            }))
        } else {
            // An automatic policy settles it on the next run, from a fresh listing.
            self.record(SyncRecord::Attempt {
                key: key.clone(),
                hash,
                state: "pending",
                error: Some(reason.describe().into()),
                next_attempt_ms: 0,
            })
            .await?;
            Ok(Done::Failed(SyncIssue {
                key,
                cause: format!("{}; the next sync applies the policy", reason.describe()),
                retryable: true,
            }))
        }
    }

    /// Records a failed push-side attempt: a retryable one waits for a
    /// delay that doubles with every failed attempt (1 s up to an hour, with
    /// jitter) across runs; a terminal one is parked until the object
    /// changes or a retry is asked for; an unreachable store parks nothing.
    /// `hash`: the version whose push failed (`None`: a delete).
    pub(super) async fn fail_attempt(
        &self,
        key: &str,
        hash: Option<ContentHash>,
        e: RemoteError,
    ) -> Result<Done> {
        let retryable = e.is_retryable();
        let next = if e.kind == RemoteErrorKind::Unreachable {
            // The store was down, not this key's fault: the next run (which
            // the schedule delays while offline) tries it again.
            0
        } else if retryable {
            let attempts = self.with_reader(|c| {
                Ok(
                    c.prepare_cached("SELECT MAX(attempts) FROM outbox WHERE key = ?1")?
                        .query_row([key], |r| r.get::<_, Option<i64>>(0))?
                        .unwrap_or(0),
                )
            })?;
            let cap = backoff_cap_ms(attempts);
            self.now_ms() + cap / 2 + self.random_upto(cap / 2)
        } else {
            i64::MAX
        };
        self.record(SyncRecord::Attempt {
            key: key.to_owned(),
            hash,
            state: "failed",
            error: Some(e.to_string()),
            next_attempt_ms: next,
        })
        .await?;
        let no_answer = e.is_no_answer();
        let issue = SyncIssue {
            key: key.to_owned(),
            cause: Error::Remote(e).to_string(),
            retryable,
        };
        Ok(if no_answer {
            Done::NoAnswer(issue)
        } else {
            Done::Failed(issue)
        })
    }

    /// Uploads the local version of `key` (if it still has `hash`),
    /// reporting the bytes sent to `progress`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn push_one(
        &self,
        remote: &SharedRemote,
        key: &str,
        hash: ContentHash,
        cond: Precondition,
        base: String,
        policy: ConflictPolicy,
        progress: &TransferProgress,
    ) -> Result<Done> {
        let stored = match self.lookup(key) {
            Ok(s) if s.meta.hash == hash && s.cached => s,
            // Changed or deleted since planning: the next run takes the new version.
            Ok(_) | Err(Error::NotFound { .. }) => return Ok(Done::Nothing),
            Err(e) => return Err(e),
        };
        let body = if stored.inline && self.is_encrypted() {
            RemoteBody::Bytes(self.read_inline_raw(&stored)?)
        } else if stored.inline {
            RemoteBody::Bytes(self.read_inline(&stored)?)
        } else {
            RemoteBody::File(self.inner.blobs.path(&hash))
        };
        // Encrypted buckets seal a version stamp in the envelope: larger
        // than any this replica has seen for the key.
        let stamp = if self.is_encrypted() {
            let mut seen = self.seen_stamp(key)?.unwrap_or(0);
            // An If-Match push over another version than the one this
            // replica agreed on (a conflict settled by keeping ours) may
            // replace a version whose stamp it never read: read it, or a
            // writer whose clock is behind seals a smaller stamp over it,
            // which every replica that saw it refuses as a rollback.
            if let Precondition::IfMatch(etag) = &cond {
                let agreed = self.local_entry(key)?.and_then(|l| l.base_etag);
                if agreed.as_deref() != Some(etag.as_str()) {
                    match remote.head(key).await {
                        Ok(Some(c)) if c.etag == *etag => seen = seen.max(c.stamp.unwrap_or(0)),
                        Ok(_) => {}
                        Err(e) => return self.fail_attempt(key, Some(hash), e).await,
                    }
                }
            }
            Some((self.now_ms().max(0) as u64).max(seen.saturating_add(1)))
        } else {
            None
        };
        let req = PutRequest {
            key: key.to_owned(),
            content_type: stored.meta.content_type.clone(),
            metadata: stored.meta.metadata.clone(),
            hash,
            size: stored.meta.size,
            mtime_ms: stored
                .meta
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            device: self.device_id().to_owned(),
            base: base.clone(),
            sealed: false,
            stamp,
            progress: progress.clone(),
        };
        let meta = meta_digest(self.keyring()?.as_deref(), &req.content_type, &req.metadata);
        let put = remote.put(&req, body, cond.clone()).await;
        if put.is_err() && !self.still_holds(key, &hash, &meta)? {
            // A newer local version replaced this one while it was being
            // pushed (its blob may be gone already): no failure to record,
            // the next run pushes the new version.
            return Ok(Done::Nothing);
        }
        let expect = Expect::Present(hash, Some(meta));
        match put {
            Ok(etag) => {
                self.record(SyncRecord::Pushed {
                    key: key.to_owned(),
                    hash,
                    meta,
                    etag,
                    base,
                    stamp,
                })
                .await?;
                Ok(Done::Pushed)
            }
            // S3 answers an If-Match on a key deleted meanwhile with 404.
            Err(e)
                if e.kind == RemoteErrorKind::PreconditionFailed
                    || (e.kind == RemoteErrorKind::NotFound
                        && matches!(cond, Precondition::IfMatch(_))) =>
            {
                // Either someone else wrote, or our own earlier attempt landed
                // and its answer was lost: the version tells them apart.
                let mut current = match remote.head(key).await {
                    Ok(c) => c,
                    Err(e) => return self.fail_attempt(key, Some(hash), e).await,
                };
                let keys = self.keyring()?;
                // The base a push names is the version id of content and
                // metadata: the digest first.
                if let Some(c) = current.as_mut() {
                    annotate(keys.as_deref(), c);
                }
                if let Some((cond, base)) = current.as_ref().and_then(|r| {
                    plan::own_unrecorded_push(&cond, r, self.device_id(), &base, (hash, meta))
                }) {
                    // Our earlier attempt landed and its answer was lost; the
                    // local version changed since: it replaces our own.
                    return Box::pin(
                        self.push_one(remote, key, hash, cond, base, policy, progress),
                    )
                    .await;
                }
                match current {
                    // Our own version of these very bytes: this attempt's
                    // earlier try, or an earlier push of ours on top of
                    // another of ours whose answer was lost too (then its
                    // base is that one's).
                    Some(mut r)
                        if r.hash == Some(hash)
                            && r.device.as_deref() == Some(self.device_id())
                            && (r.base.as_deref() == Some(base.as_str())
                                || r.meta == Some(meta)) =>
                    {
                        annotate(keys.as_deref(), &mut r);
                        if r.meta != Some(meta) {
                            let reason = ConflictReason::RemoteChangedDuringPush;
                            return self
                                .conflict(key.to_owned(), reason, Some(r.etag), expect, policy)
                                .await;
                        }
                        self.record(SyncRecord::Pushed {
                            key: key.to_owned(),
                            hash,
                            meta,
                            etag: r.etag,
                            base: r.base.unwrap_or(base),
                            stamp: r.stamp,
                        })
                        .await?;
                        Ok(Done::Pushed)
                    }
                    // Another device wrote the very same content and
                    // metadata (two replicas restoring one version after a
                    // deletion nothing proved): nothing to tell apart.
                    Some(r) if r.hash == Some(hash) && r.meta == Some(meta) => {
                        if let Some(stamp) = r.stamp {
                            let batch = vec![(key.to_owned(), stamp)];
                            self.record(SyncRecord::Stamps { batch }).await?;
                        }
                        self.record(SyncRecord::Adopted {
                            key: key.to_owned(),
                            etag: r.etag,
                            hash,
                            meta: Some(meta),
                            modified_ms: None,
                            pushed_base: None,
                            stamp: r.stamp,
                        })
                        .await?;
                        Ok(Done::Nothing)
                    }
                    current => {
                        let reason = ConflictReason::RemoteChangedDuringPush;
                        let etag = current.map(|c| c.etag);
                        self.conflict(key.to_owned(), reason, etag, expect, policy)
                            .await
                    }
                }
            }
            Err(e) => self.fail_attempt(key, Some(hash), e).await,
        }
    }

    /// True while the local row of `key` holds the version (`hash`, `meta`).
    fn still_holds(&self, key: &str, hash: &ContentHash, meta: &MetaDigest) -> Result<bool> {
        Ok(self
            .local_entry(key)?
            .is_some_and(|l| l.present && l.hash == *hash && l.meta.as_ref() == Some(meta)))
    }

    /// Before an `If-Match` push over an ETag derived from the content
    /// alone (S3's MD5 ETags): the remote version, when it is not the
    /// agreed one although its ETag is. A metadata-only rewrite by another
    /// client (`CopyObject` with `REPLACE`) keeps such an ETag, so the
    /// condition holds, and incremental runs (which list nothing) do not
    /// see it: the push would discard the other client's metadata. `None`
    /// when the remote holds the agreed version, or another ETag (the
    /// condition decides), or the store's ETags change with metadata.
    async fn rewritten_in_place(
        &self,
        remote: &SharedRemote,
        key: &str,
        cond: &Precondition,
    ) -> Result<Option<RemoteObject>> {
        let Precondition::IfMatch(etag) = cond else {
            return Ok(None);
        };
        // Encrypted objects carry their metadata sealed in the body.
        if !crate::remote::content_derived_etag(etag) || self.is_encrypted() {
            return Ok(None);
        }
        let Some(agreed) = self.local_entry(key)? else {
            return Ok(None);
        };
        let Some(mut current) = remote.head(key).await.map_err(Error::Remote)? else {
            return Ok(None);
        };
        if current.etag != *etag {
            return Ok(None);
        }
        annotate(None, &mut current);
        let hash_moved = current.hash.is_some() && current.hash != agreed.base_hash;
        let meta_moved = agreed.base_meta.is_some() && current.meta != agreed.base_meta;
        Ok((hash_moved || meta_moved).then_some(current))
    }
}

/// The longest wait before retrying a push that failed `attempts` times:
/// doubling from 1 s up to an hour (the wait is its upper half, jittered).
pub(super) fn backoff_cap_ms(attempts: i64) -> i64 {
    (1000i64 << attempts.clamp(0, 12)).min(3_600_000)
}
