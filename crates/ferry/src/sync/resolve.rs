//! Settling a conflict: keep local, keep remote, or keep both under a
//! conflict name.

use std::time::SystemTime;

use rusqlite::OptionalExtension;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::remote::{RemoteError, RemoteErrorKind, TransferProgress};
use crate::state::SyncState;
use crate::store::record::SyncRecord;
use crate::sync::plan;
use crate::sync::plan::ConflictPolicy;

use super::{Done, Resolution, ResolveOutcome};

impl Bucket {
    /// Settles a conflict on `key`.
    pub async fn resolve(&self, key: &str, how: Resolution) -> Result<ResolveOutcome> {
        self.writable()?;
        validate_key(key)?;
        let remote = self.connected_remote()?;
        let l = self
            .local_entry(key)?
            .filter(|l| l.state == SyncState::Conflict)
            .ok_or_else(|| Error::NotInConflict {
                key: key.to_owned(),
            })?;
        // With its metadata digest, as a sync's HEAD has it: the base a
        // push names is the version id of content and metadata.
        let mut r = remote.head(key).await?;
        if let Some(r) = r.as_mut() {
            super::annotate(self.keyring()?.as_deref(), r);
        }
        let mut outcome = ResolveOutcome::default();
        let action = match how {
            Resolution::KeepLocal => plan::keep_local_action(key, Some(&l), r.as_ref()),
            Resolution::KeepRemote => Some(plan::keep_remote_action(key, Some(&l), r.as_ref())),
            Resolution::KeepBoth => {
                // Content that is not here (evicted, or never downloaded)
                // is the remote's copy of the agreed version: it is kept
                // only if the remote still has it.
                if l.present
                    && (l.cached
                        || r.as_ref()
                            .is_some_and(|r| l.base_etag.as_deref() == Some(r.etag.as_str())))
                {
                    let copy = self.free_conflict_name(key)?;
                    let object = self.get(key).await?;
                    let opts = crate::bucket::PutOptions {
                        content_type: Some(object.meta.content_type.clone()),
                        metadata: object.meta.metadata.clone(),
                    };
                    self.put(
                        &copy,
                        crate::store::body::Body::from_reader(object.body),
                        opts,
                    )
                    .await?;
                    outcome.renamed_to = Some(copy);
                }
                let l = self.local_entry(key)?;
                Some(plan::keep_remote_action(key, l.as_ref(), r.as_ref()))
            }
        };
        // Taking the remote's delete of the version this replica agreed on
        // (its own edit over that version kept as a copy, or dropped) is a
        // delete of that version here: journaled as one, as `ferry rm`
        // would be. Otherwise a replica that never saw the delete proven
        // (an encrypted bucket: a deletion nobody journaled proves nothing)
        // pushes that version back.
        if let Some(plan::Action::DeleteLocal { .. }) = &action {
            let now = self.local_entry(key)?;
            if now.as_ref().is_some_and(|l| l.base_etag.is_some()) {
                let expect = plan::expect_of(now.as_ref());
                self.record(SyncRecord::Retracted {
                    key: key.to_owned(),
                    expect,
                })
                .await?;
                return Ok(outcome);
            }
        }
        if let Some(action) = action {
            let expect = plan::expect_of(self.local_entry(key)?.as_ref());
            match self
                .execute_inner(
                    &remote,
                    action,
                    r,
                    expect,
                    ConflictPolicy::Flag,
                    &TransferProgress::none(),
                )
                .await?
            {
                Done::NoAnswer(i) => {
                    return Err(Error::Remote(RemoteError::new(
                        RemoteErrorKind::Unreachable,
                        remote.endpoint(),
                        i.cause,
                    )));
                }
                Done::Failed(i) => {
                    let kind = if i.retryable {
                        RemoteErrorKind::Retryable
                    } else {
                        RemoteErrorKind::Terminal
                    };
                    return Err(Error::Remote(RemoteError::new(kind, remote.endpoint(), i.cause)));
                }
                Done::Conflict(_) => {
                    return Err(Error::Remote(RemoteError::new(
                        RemoteErrorKind::PreconditionFailed,
                        remote.endpoint(),
                        format!("{key} changed on the remote again while resolving; it is still in conflict"),
                    )))
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// `{stem}.conflict.{UTC timestamp}{.ext}` (the extension stays last,
    /// as Dropbox and Syncthing keep it, so the copy opens like the
    /// original), with a counter after the stamp if that exists too.
    pub(super) fn free_conflict_name(&self, key: &str) -> Result<String> {
        let stamp = conflict_stamp(self.inner.clock.now());
        let (stem, ext) = split_extension(key);
        let name = |suffix: &str| format!("{stem}.conflict.{stamp}{suffix}{ext}");
        let exists = |k: &str| -> Result<bool> {
            self.with_reader(|c| {
                Ok(c.prepare_cached("SELECT 1 FROM objects WHERE key = ?1")?
                    .query_row([k], |_| Ok(()))
                    .optional()?
                    .is_some())
            })
        };
        let mut candidate = name("");
        let mut n = 1;
        while exists(&candidate)? {
            n += 1;
            candidate = name(&format!("-{n}"));
        }
        validate_key(&candidate)?;
        Ok(candidate)
    }
}

/// `key` as (everything before its extension, the extension with its dot):
/// `notes/todo.txt` → (`notes/todo`, `.txt`). No extension for a last
/// segment without a dot, a dotfile (`.bashrc`), or a "extension" longer
/// than 16 bytes or holding a space (not an extension, a sentence).
pub(super) fn split_extension(key: &str) -> (&str, &str) {
    let segment_start = key.rfind('/').map_or(0, |i| i + 1);
    match key[segment_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let at = segment_start + dot;
            let ext = &key[at..];
            if ext.len() > 1 && ext.len() <= 17 && !ext.contains(' ') {
                (&key[..at], ext)
            } else {
                (key, "")
            }
        }
        _ => (key, ""),
    }
}

/// `20261122T031500Z`: sortable, and a valid key segment.
pub(super) fn conflict_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::split_extension;

    #[test]
    fn the_extension_stays_last() {
        assert_eq!(split_extension("notes/todo.txt"), ("notes/todo", ".txt"));
        assert_eq!(split_extension("a.tar.gz"), ("a.tar", ".gz"));
        assert_eq!(split_extension("dir.d/readme"), ("dir.d/readme", ""));
        assert_eq!(split_extension(".bashrc"), (".bashrc", ""));
        assert_eq!(split_extension("x/.env"), ("x/.env", ""));
        assert_eq!(split_extension("dir/"), ("dir/", ""));
        assert_eq!(split_extension("end."), ("end.", ""));
        assert_eq!(split_extension("a. b c"), ("a. b c", ""));
    }
}
