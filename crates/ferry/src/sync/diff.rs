//! `diff`: what differs between this replica and the remote, three-way,
//! without changing anything (a full listing planned as a dry run, both
//! ways, every conflict flagged whatever the policy).

use std::sync::Arc;

use crate::bucket::Bucket;
use crate::error::Result;
use crate::filter::Filter;
use crate::remote::Precondition;
use crate::sync::plan::{Action, ConflictPolicy, ConflictReason, Direction, Expect, Policy};

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
                    Action::DeleteRemote { .. } => (DiffKind::DeletedHere, None),
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
