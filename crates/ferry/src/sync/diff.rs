//! `diff`: what differs between this replica and the remote, three-way,
//! without changing anything (a full listing planned as a dry run, both
//! ways, every conflict flagged whatever the policy).

use std::sync::Arc;

use crate::bucket::Bucket;
use crate::error::Result;
use crate::filter::Filter;
use crate::remote::Precondition;
use crate::sync::plan::{
    Action, ConflictPolicy, ConflictReason, Direction, Expect, LocalEntry, Policy,
};

use super::SyncOptions;

/// How a key differs (here: this replica; there: the remote), measured
/// against the version both last agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    /// Written here, never on the remote.
    NewHere,
    /// Changed here since the agreement.
    ChangedHere,
    /// Deleted here, still on the remote.
    DeletedHere,
    /// On the remote, never here.
    NewThere,
    /// Changed on the remote since the agreement.
    ChangedThere,
    /// Deleted on the remote, still here.
    DeletedThere,
    /// Changed on both sides.
    Conflict,
}

impl DiffKind {
    /// The kind in words (`changed here`, `new there`, …).
    pub fn describe(self) -> &'static str {
        match self {
            DiffKind::NewHere => "new here",
            DiffKind::ChangedHere => "changed here",
            DiffKind::DeletedHere => "deleted here",
            DiffKind::NewThere => "new there",
            DiffKind::ChangedThere => "changed there",
            DiffKind::DeletedThere => "deleted there",
            DiffKind::Conflict => "conflict",
        }
    }
}

/// One key that differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The key.
    pub key: String,
    /// How it differs.
    pub kind: DiffKind,
    /// For a conflict: why.
    pub reason: Option<ConflictReason>,
}

impl Bucket {
    /// What differs between this replica and the remote under `prefix`, in
    /// key order. Lists the remote under the prefix (never the journal
    /// alone) and changes nothing, here or there. Differences are judged
    /// both ways whatever the sync direction, and conflicts are shown as
    /// conflicts whatever the conflict policy; content that is only not
    /// downloaded (lazy, evicted) is no difference.
    pub async fn diff(&self, prefix: &str) -> Result<Vec<Difference>> {
        let config = self.sync_config()?;
        let policy = Policy {
            direction: Direction::Bidirectional,
            conflict: ConflictPolicy::Flag,
            strategy: config.strategy,
        };
        let opts = SyncOptions {
            dry_run: true,
            full: true,
            force: true,
            accept_remote_deletes: true,
            retry: true,
            filter: (!prefix.is_empty()).then(|| Arc::new(Filter::prefix(prefix))),
            ..SyncOptions::default()
        };
        let report = self.run_sync_with(opts, None, Some(policy)).await?;
        Ok(report
            .planned
            .into_iter()
            .filter_map(|action| {
                let (kind, reason) = match &action {
                    Action::Push {
                        cond: Precondition::IfAbsent,
                        ..
                    } => (DiffKind::NewHere, None),
                    Action::Push { .. } => (DiffKind::ChangedHere, None),
                    Action::DeleteRemote { .. } | Action::Retract { .. } => {
                        (DiffKind::DeletedHere, None)
                    }
                    Action::Pull { expect, .. } | Action::Learn { expect, .. } => (
                        if *expect == Expect::Absent {
                            DiffKind::NewThere
                        } else {
                            DiffKind::ChangedThere
                        },
                        None,
                    ),
                    Action::DeleteLocal { .. } => (DiffKind::DeletedThere, None),
                    Action::Conflict { reason, .. } => (DiffKind::Conflict, Some(*reason)),
                    Action::Adopt { .. }
                    | Action::Refresh { .. }
                    | Action::Forget { .. }
                    | Action::SetState { .. } => return None,
                };
                Some(Difference {
                    key: action.key().to_owned(),
                    kind,
                    reason,
                })
            })
            .collect())
    }
}

/// What `verify_remote` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteCheck {
    /// Agreed versions whose remote copy carries the agreed content hash.
    pub verified: u64,
    /// Agreed versions the remote still holds but without a ferry hash to
    /// compare (written by other tools and adopted by ETag).
    pub unverifiable: u64,
    /// Keys whose remote copy is not what this replica agreed on.
    pub mismatched: Vec<Mismatch>,
}

/// A remote copy that is not the agreed version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The key.
    pub key: String,
    /// What differs.
    pub detail: String,
}

/// What `repair` did for one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "why")]
pub enum Repair {
    /// The content was downloaded again from the remote.
    Refetched,
    /// It cannot be repaired here, and why.
    Unrepairable(String),
}

impl Bucket {
    /// Checks, for every object under `prefix` that agrees with the remote,
    /// that the remote still holds that version: the same ETag and the
    /// content hash ferry recorded (its `ferry-hash`, read by HEAD). Keys
    /// that changed on either side since are `diff`'s business and are
    /// not reported here.
    pub async fn verify_remote(&self, prefix: &str) -> Result<RemoteCheck> {
        let remote = self.connected_remote()?;
        let keys = self.keyring()?;
        let concurrency = self.sync_config()?.pull_concurrency;
        let mut check = RemoteCheck::default();
        let cond = "state = 'synced' AND present = 1 AND base_etag IS NOT NULL";
        let mut page = self
            .local_entry(prefix)?
            .filter(|l| {
                !prefix.is_empty()
                    && l.present
                    && l.state == crate::state::SyncState::Synced
                    && l.base_etag.is_some()
            })
            .into_iter()
            .collect::<Vec<_>>();
        let mut after = (!prefix.is_empty()).then(|| prefix.to_owned());
        loop {
            let mut more = self.read_page(cond, after.as_deref(), super::run::WINDOW)?;
            let last = more.last().map(|l| l.key.clone());
            more.retain(|l| l.key.starts_with(prefix));
            let done = last.is_none() || more.is_empty();
            page.append(&mut more);
            let agreed: std::collections::HashMap<String, LocalEntry> =
                page.drain(..).map(|l| (l.key.clone(), l)).collect();
            let ask: Vec<String> = agreed.keys().cloned().collect();
            for (key, found) in self.heads(&remote, ask, concurrency).await {
                let Some(l) = agreed.get(&key) else { continue };
                match found {
                    Ok(Some(mut obj)) => {
                        super::annotate(keys.as_deref(), &mut obj);
                        if Some(&obj.etag) != l.base_etag.as_ref() {
                            continue; // changed there: diff reports it
                        }
                        match (obj.hash, l.base_hash) {
                            (Some(h), Some(b)) if h == b => check.verified += 1,
                            (Some(_), _) => check.mismatched.push(Mismatch {
                                key,
                                detail: "the remote copy's ferry-hash is not the content hash \
                                         agreed at the last sync"
                                    .into(),
                            }),
                            (None, _) => check.unverifiable += 1,
                        }
                    }
                    Ok(None) => {} // deleted there: diff reports it
                    Err(e) => return Err(e.into()),
                }
            }
            if done {
                break;
            }
            after = last;
        }
        check.mismatched.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(check)
    }

    /// Repairs `key`'s damaged local content by downloading the version it
    /// agreed on with the remote (or the remote's newer one, when only the
    /// remote changed). Content changed here and never pushed has no other
    /// copy: that is `Repair::Unrepairable`, and nothing is changed.
    pub async fn repair(&self, key: &str) -> Result<Repair> {
        self.writable()?;
        let Some(l) = self.local_entry(key)? else {
            return Err(crate::error::Error::NotFound {
                key: key.to_owned(),
            });
        };
        if !l.present {
            return Err(crate::error::Error::NotFound {
                key: key.to_owned(),
            });
        }
        if l.base_hash != Some(l.hash) || l.base_meta != l.meta {
            return Ok(Repair::Unrepairable(
                "changed here and not pushed: the damaged copy is the only one (write it again, \
                 or delete it)"
                    .into(),
            ));
        }
        if self.connected_remote().is_err() {
            return Ok(Repair::Unrepairable(
                "no remote is connected to download it from".into(),
            ));
        }
        match self.fetch(key, Expect::Present(l.hash, l.meta)).await {
            Ok(true) => Ok(Repair::Refetched),
            Ok(false) => Ok(Repair::Unrepairable(
                "the object changed while it was being repaired; run the check again".into(),
            )),
            Err(crate::error::Error::Remote(e))
                if e.kind == crate::remote::RemoteErrorKind::NotFound =>
            {
                Ok(Repair::Unrepairable(
                    "the remote no longer holds it (deleted there)".into(),
                ))
            }
            Err(e) => Err(e),
        }
    }
}
