//! Per-object sync states, as DESIGN.md defines them.

use std::fmt;
use std::str::FromStr;

/// Where an object stands relative to its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// Local and remote agree.
    Synced,
    /// A local change has not been pushed.
    Dirty,
    /// The remote is newer (or the object is known remotely but not downloaded).
    Stale,
    /// Both sides changed since they last agreed.
    Conflict,
    /// Deleted locally; the remote delete is not done.
    PendingDelete,
    /// Local, outside the sync scope.
    Orphan,
}

impl SyncState {
    /// Every state, in display order.
    pub const ALL: [SyncState; 6] = [
        SyncState::Synced,
        SyncState::Dirty,
        SyncState::Stale,
        SyncState::Conflict,
        SyncState::PendingDelete,
        SyncState::Orphan,
    ];

    /// The state's name as stored in the index and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Dirty => "dirty",
            SyncState::Stale => "stale",
            SyncState::Conflict => "conflict",
            SyncState::PendingDelete => "pending-delete",
            SyncState::Orphan => "orphan",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text names no sync state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sync state {0:?}")]
pub struct ParseStateError(pub String);

impl FromStr for SyncState {
    type Err = ParseStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SyncState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStateError(s.to_owned()))
    }
}
