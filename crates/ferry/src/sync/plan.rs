//! The sync planner: a pure function from the local index rows, the remote
//! listing and the policy to the actions that bring both sides together.
//!
//! No I/O happens here. The executor (`sync`) gathers the inputs, asks
//! [`needs_inspection`] which remote objects it must HEAD first (to learn
//! their content hash), calls [`plan`], runs the actions, and records each
//! outcome only if the local row still matches what the plan assumed.
//! The state table this implements is in `docs/design.md` ("Sync state machine").

use std::collections::BTreeMap;

use crate::hash::{version_id, ContentHash, MetaDigest};
use crate::remote::{Precondition, RemoteObject, BASE_NONE};
use crate::state::SyncState;

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Push and pull.
    #[default]
    Bidirectional,
    /// Only push local changes; remote changes are left alone.
    UploadOnly,
    /// Only pull remote changes; local changes stay dirty.
    DownloadOnly,
}

/// What to do when both sides changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Mark the object `conflict` and wait for `resolve`.
    #[default]
    Flag,
    /// The side written last wins (ties go to the remote).
    LastWriterWins,
    /// The local side wins.
    KeepLocal,
    /// The remote side wins.
    KeepRemote,
}

/// When remote objects are downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullStrategy {
    /// Download everything in scope.
    #[default]
    Eager,
    /// Learn about remote objects; download on first `get`.
    Lazy,
    /// Download only pinned objects; learn about the rest.
    PinnedOnly,
}

/// The policy a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Which way changes flow.
    pub direction: Direction,
    /// Automatic conflict handling.
    pub conflict: ConflictPolicy,
    /// When to download.
    pub strategy: PullStrategy,
}

/// One local index row, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// The key.
    pub key: String,
    /// False for a tombstone (deleted locally, not yet deleted remotely).
    pub present: bool,
    /// Content hash (of the last known content for tombstones).
    pub hash: ContentHash,
    /// Whether the content is on local disk.
    pub cached: bool,
    /// Pinned objects are always downloaded.
    pub pinned: bool,
    /// The remote version both sides last agreed on.
    pub base_etag: Option<String>,
    /// The content hash both sides last agreed on.
    pub base_hash: Option<ContentHash>,
    /// The row's current state.
    pub state: SyncState,
    /// Last local write, ms since the epoch.
    pub modified_ms: i64,
    /// Digest of the content type and metadata (`None`: rows older than
    /// schema v4, compared as equal to an unknown base).
    pub meta: Option<MetaDigest>,
    /// The metadata digest both sides last agreed on.
    pub base_meta: Option<MetaDigest>,
    /// The remote listing time of the agreed version, ms (`None`: not yet
    /// seen in a listing). With the ETag it tells a remote version apart
    /// from a metadata-only rewrite that kept the same ETag (S3's ETag is
    /// the content's MD5).
    pub base_modified_ms: Option<i64>,
    /// When the agreed version is our own push: the `ferry-base` it carried.
    pub pushed_base: Option<String>,
}

/// What the local row must still look like for an outcome to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No row, or a tombstone that never reached the remote.
    Absent,
    /// A present row with this content hash and metadata digest.
    Present(ContentHash, Option<MetaDigest>),
    /// A tombstone.
    Tombstone,
}

/// Why a key is in conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictReason {
    /// Both sides changed the content.
    BothModified,
    /// Both sides created the key with different content.
    BothCreated,
    /// Modified here, deleted on the remote.
    ModifiedLocallyDeletedRemotely,
    /// Deleted here, modified on the remote.
    DeletedLocallyModifiedRemotely,
    /// A conditional write found a version it did not expect.
    RemoteChangedDuringPush,
    /// Our pushed version was overwritten by one based on the same version
    /// (a sibling): a store that ignores conditional writes lost our update.
    LostUpdate,
}

impl ConflictReason {
    /// A short description for people.
    pub fn describe(self) -> &'static str {
        match self {
            ConflictReason::BothModified => "changed on both sides",
            ConflictReason::BothCreated => "created on both sides with different content",
            ConflictReason::ModifiedLocallyDeletedRemotely => "changed here, deleted on the remote",
            ConflictReason::DeletedLocallyModifiedRemotely => "deleted here, changed on the remote",
            ConflictReason::RemoteChangedDuringPush => "the remote changed while pushing",
            ConflictReason::LostUpdate => {
                "our pushed version was overwritten by a concurrent write (the store ignores conditional writes)"
            }
        }
    }
}

/// One step of a plan.
// The fields are named for what they hold; each variant's doc says what the step does.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Upload the local version (content hash `hash`) if `cond` holds;
    /// `base` is the `ferry-base` it carries (the version it replaces).
    Push {
        key: String,
        hash: ContentHash,
        cond: Precondition,
        base: String,
    },
    /// Delete the remote object if `cond` holds.
    DeleteRemote { key: String, cond: Precondition },
    /// Take back our own restore (a version pushed again after a deletion
    /// nothing proved) once a delete record names that very version: delete
    /// the remote object if it is still `etag`, then the local row.
    Retract {
        key: String,
        etag: String,
        expect: Expect,
    },
    /// Download the remote object into the key.
    Pull {
        key: String,
        etag: String,
        expect: Expect,
    },
    /// Record a remote object without downloading it (lazy).
    Learn {
        key: String,
        remote: Box<RemoteObject>,
        expect: Expect,
    },
    /// Delete the local object (the remote deleted it).
    DeleteLocal { key: String, expect: Expect },
    /// Both sides hold the same content: record the remote version
    /// (`etag`, `meta`, listing time `modified_ms`) as the agreement.
    Adopt {
        key: String,
        etag: String,
        hash: ContentHash,
        meta: Option<MetaDigest>,
        modified_ms: Option<i64>,
    },
    /// The agreed remote version is unchanged: remember its listing time.
    Refresh {
        key: String,
        etag: String,
        modified_ms: i64,
    },
    /// Drop a tombstone (both sides are gone).
    Forget { key: String },
    /// Flag a conflict.
    Conflict {
        key: String,
        reason: ConflictReason,
        remote_etag: Option<String>,
    },
    /// Set a row's state without other change.
    SetState { key: String, state: SyncState },
}

impl Action {
    /// The key the action is about.
    pub fn key(&self) -> &str {
        match self {
            Action::Push { key, .. }
            | Action::DeleteRemote { key, .. }
            | Action::Retract { key, .. }
            | Action::Pull { key, .. }
            | Action::Learn { key, .. }
            | Action::DeleteLocal { key, .. }
            | Action::Adopt { key, .. }
            | Action::Refresh { key, .. }
            | Action::Forget { key }
            | Action::Conflict { key, .. }
            | Action::SetState { key, .. } => key,
        }
    }

    /// True for actions that change the remote.
    pub fn is_push_side(&self) -> bool {
        matches!(
            self,
            Action::Push { .. } | Action::DeleteRemote { .. } | Action::Retract { .. }
        )
    }

    /// True for actions that bring remote changes here.
    pub fn is_pull_side(&self) -> bool {
        matches!(
            self,
            Action::Pull { .. } | Action::Learn { .. } | Action::DeleteLocal { .. }
        )
    }
}

impl Action {
    /// The action's name in a plan shown to people or scripts (`upload`,
    /// `delete remotely`, `retract`, `download`, `learn`, `delete locally`,
    /// `adopt`, `refresh`, `forget`, `conflict`, `set state`).
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Push { .. } => "upload",
            Action::DeleteRemote { .. } => "delete remotely",
            Action::Retract { .. } => "retract",
            Action::Pull { .. } => "download",
            Action::Learn { .. } => "learn",
            Action::DeleteLocal { .. } => "delete locally",
            Action::Adopt { .. } => "adopt",
            Action::Refresh { .. } => "refresh",
            Action::Forget { .. } => "forget",
            Action::Conflict { .. } => "conflict",
            Action::SetState { .. } => "set state",
        }
    }
}

/// A plan step in words: `upload notes/x`, `delete locally notes/y`,
/// `conflict doc (changed on both sides)`.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb(), self.key())?;
        match self {
            Action::Push {
                cond: Precondition::IfMatch(_),
                ..
            } => f.write_str(" (replacing the remote version)"),
            Action::Push {
                cond: Precondition::IfAbsent,
                ..
            } => f.write_str(" (new on the remote)"),
            Action::Conflict { reason, .. } => write!(f, " ({})", reason.describe()),
            Action::SetState { state, .. } => write!(f, " ({state})"),
            Action::Learn { .. } => f.write_str(" (known, downloaded when read)"),
            Action::Adopt { .. } => f.write_str(" (same on both sides)"),
            _ => Ok(()),
        }
    }
}

/// How the local side differs from the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalSide {
    Absent,
    Unchanged,
    Changed,
    Deleted,
}

/// How the remote side differs from the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteSide {
    Absent,
    Unchanged,
    Changed,
    Deleted,
}

/// Whether the present row `l` still holds the version it agreed on with
/// the remote (content and metadata).
pub fn unchanged_since_agreed(l: &LocalEntry) -> bool {
    l.base_etag.is_some() && l.base_hash == Some(l.hash) && l.base_meta == l.meta
}

fn local_side(l: Option<&LocalEntry>) -> LocalSide {
    match l {
        None => LocalSide::Absent,
        Some(l) if l.present => {
            if unchanged_since_agreed(l) {
                LocalSide::Unchanged
            } else {
                LocalSide::Changed
            }
        }
        Some(l) if l.base_etag.is_some() => LocalSide::Deleted,
        Some(_) => LocalSide::Absent,
    }
}

fn remote_side(l: Option<&LocalEntry>, r: Option<&RemoteObject>) -> RemoteSide {
    let base = l.and_then(|l| l.base_etag.as_deref());
    match (r, base) {
        (None, None) => RemoteSide::Absent,
        (None, Some(_)) => RemoteSide::Deleted,
        (Some(r), Some(b))
            if r.etag == b
                && same_listing_time(r.modified_ms, l.and_then(|l| l.base_modified_ms))
                && !answer_differs(l, r) =>
        {
            RemoteSide::Unchanged
        }
        (Some(_), _) => RemoteSide::Changed,
    }
}

/// True when an answer that carries metadata names metadata other than the
/// agreed version's though its ETag is the same: S3 keeps the ETag (the content's
/// MD5) when only the content type or metadata change, and the listing
/// time alone misses such a change when the agreed time is unknown (our
/// own push) or within the same second.
fn answer_differs(l: Option<&LocalEntry>, r: &RemoteObject) -> bool {
    let Some(l) = l else {
        return false;
    };
    r.has_metadata && matches!((&r.meta, &l.base_meta), (Some(a), Some(b)) if a != b)
}

/// A listing time against the agreed one. A time from a GET or HEAD
/// (an HTTP date: whole seconds, so a multiple of 1,000 ms) is compared at
/// that precision; listing times exactly. Unknown on either side: no
/// difference.
fn same_listing_time(listed: Option<i64>, base: Option<i64>) -> bool {
    match (listed, base) {
        (Some(a), Some(b)) if b % 1000 == 0 => a.div_euclid(1000) == b.div_euclid(1000),
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// True when `r` is a version this device wrote (its `ferry-device`).
fn is_ours(r: &RemoteObject, device: &str) -> bool {
    !device.is_empty() && r.device.as_deref() == Some(device) && r.hash.is_some()
}

/// The local and remote versions are the same: content, content type and
/// metadata (a remote answer without metadata is never the same version).
fn same_version(l: &LocalEntry, r: &RemoteObject) -> bool {
    l.present && r.hash == Some(l.hash) && r.meta.is_some() && r.meta == l.meta
}

/// The same bytes on both sides, created or changed independently: adopted
/// when the remote was not written by ferry (its metadata carries no ferry
/// version) or the local row predates metadata digests; two ferry versions
/// with different metadata are a conflict.
fn adoptable(l: &LocalEntry, r: &RemoteObject) -> bool {
    same_version(l, r)
        || (l.present && r.hash == Some(l.hash) && (r.device.is_none() || l.meta.is_none()))
}

/// The `ferry-base` a push under `cond` carries: the id of the version it
/// replaces.
fn base_value(cond: &Precondition, l: Option<&LocalEntry>, r: Option<&RemoteObject>) -> String {
    if matches!(cond, Precondition::IfAbsent) {
        return BASE_NONE.to_owned();
    }
    if let Some(h) = r.and_then(|r| r.hash) {
        return version_id(&h, r.and_then(|r| r.meta.as_ref()));
    }
    match l.and_then(|l| l.base_hash.map(|h| (h, l.base_meta))) {
        Some((h, m)) => version_id(&h, m.as_ref()),
        None => BASE_NONE.to_owned(),
    }
}

/// True when the planner needs the remote object's metadata (from a HEAD)
/// to decide:
/// - the remote changed and so did the local side: equal versions must be
///   told apart from a conflict, and a local delete from one that meets
///   this device's own unrecorded push;
/// - a row that never agreed with the remote (a new key or a local delete)
///   meets a remote object: it may be our own push whose answer was lost
///   (`ferry-device`);
/// - our own push was replaced: by a sibling (a lost update) or not
///   (`ferry-base`), or is listed for the first time (its listing time is
///   not known yet, and the same ETag may carry a sibling's new metadata).
pub fn needs_inspection(l: Option<&LocalEntry>, r: &RemoteObject) -> bool {
    if r.has_metadata && r.meta.is_some() {
        return false;
    }
    let Some(e) = l else {
        return false;
    };
    let ls = local_side(l);
    let rs = remote_side(l, Some(r));
    // Our own push, listed for the first time: its listing time is not
    // known yet, and a store that keeps the ETag across a metadata-only
    // rewrite (S3) shows a sibling's such change by its metadata only.
    let unseen_push = e.base_modified_ms.is_none() && r.modified_ms.is_some();
    (matches!(ls, LocalSide::Changed | LocalSide::Deleted) && rs == RemoteSide::Changed)
        || e.base_etag.is_none()
        || (ls == LocalSide::Unchanged
            && e.pushed_base.is_some()
            && (rs == RemoteSide::Changed || unseen_push))
}

/// What syncs: keys under one of the prefixes that the filter includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Key prefixes (none: every key; `""` also means every key).
    pub prefixes: Vec<String>,
    /// Rules over whole keys (empty: all).
    pub filter: crate::filter::Filter,
}

impl Scope {
    /// Every key under `prefixes`, no filter.
    pub fn prefixes<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Scope {
        Scope {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
            filter: crate::filter::Filter::default(),
        }
    }

    /// True when `key` falls under one of the prefixes (no prefixes:
    /// everything) and the filter includes it.
    pub fn contains(&self, key: &str) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|s| key.starts_with(s.as_str())))
            && self.filter.matches(key)
    }
}

/// Plans a sync of `local` rows against the `remote` listing, for the
/// replica whose device id is `device`.
///
/// Both inputs may be in any order; each key appears at most once in each.
/// Remote objects outside `scope` are ignored; local rows outside them
/// become `orphan`. The result holds at most one action per key, in key order.
pub fn plan(
    local: &[LocalEntry],
    remote: &[RemoteObject],
    scope: &Scope,
    policy: Policy,
    device: &str,
) -> Vec<Action> {
    let mut keys: BTreeMap<&str, (Option<&LocalEntry>, Option<&RemoteObject>)> = BTreeMap::new();
    for l in local {
        keys.entry(&l.key).or_default().0 = Some(l);
    }
    for r in remote {
        if scope.contains(&r.key) {
            keys.entry(&r.key).or_default().1 = Some(r);
        }
    }
    keys.into_iter()
        .filter_map(|(key, (l, r))| plan_key(key, l, r, scope, policy, device))
        .collect()
}

/// What a row must still look like for an outcome planned against `l`
/// to be recorded.
pub fn expect_of(l: Option<&LocalEntry>) -> Expect {
    match l {
        Some(l) if l.present => Expect::Present(l.hash, l.meta),
        Some(l) if l.base_etag.is_some() => Expect::Tombstone,
        _ => Expect::Absent,
    }
}

fn plan_key(
    key: &str,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
    scope: &Scope,
    policy: Policy,
    device: &str,
) -> Option<Action> {
    let key_s = key.to_owned();
    if !scope.contains(key) {
        return match l {
            Some(l) if l.present && l.state != SyncState::Orphan => Some(Action::SetState {
                key: key_s,
                state: SyncState::Orphan,
            }),
            _ => None,
        };
    }
    // A key in conflict stays as it is, both sides kept, until `resolve`
    // ends it: no sync overwrites or deletes it (a later local write
    // takes it out of conflict).
    if l.is_some_and(|l| l.state == SyncState::Conflict) {
        return None;
    }
    let can_push = policy.direction != Direction::DownloadOnly;
    let can_pull = policy.direction != Direction::UploadOnly;
    if let (Some(lo), Some(ro)) = (l, r) {
        if lo.base_etag.is_none() && is_ours(ro, device) {
            // Our own push landed but was never recorded (a crash, or every
            // answer lost): the remote version is the base we agreed on.
            let adopt = Action::Adopt {
                key: key_s.clone(),
                etag: ro.etag.clone(),
                hash: ro.hash?,
                meta: ro.meta,
                modified_ms: ro.modified_ms,
            };
            let cond = Precondition::IfMatch(ro.etag.clone());
            return if same_version(lo, ro) {
                Some(adopt)
            } else if !can_push {
                None
            } else if lo.present {
                Some(Action::Push {
                    key: key_s,
                    hash: lo.hash,
                    base: base_value(&cond, l, r),
                    cond,
                })
            } else {
                Some(Action::DeleteRemote { key: key_s, cond })
            };
        }
    }
    let ls = local_side(l);
    let rs = remote_side(l, r);
    // Deleted here, and the remote holds a version this device wrote (a
    // push whose answer was lost): the delete came after every version this
    // device had, so it saw that one. The delete goes through, conditional
    // on that version.
    if let (Some(lo), Some(ro)) = (l, r) {
        if !lo.present && rs == RemoteSide::Changed && is_ours(ro, device) {
            return can_push.then(|| Action::DeleteRemote {
                key: key_s,
                cond: Precondition::IfMatch(ro.etag.clone()),
            });
        }
    }
    let same = match (l, r) {
        (Some(l), Some(r)) => same_version(l, r),
        _ => false,
    };
    let adopt_changed = match (l, r) {
        (Some(l), Some(r)) => adoptable(l, r),
        _ => false,
    };
    let adopt = |r: &RemoteObject| -> Option<Action> {
        Some(Action::Adopt {
            key: key_s.clone(),
            etag: r.etag.clone(),
            hash: r.hash?,
            meta: r.meta,
            modified_ms: r.modified_ms,
        })
    };
    let fetch = |r: &RemoteObject| -> Option<Action> {
        if !can_pull {
            return None;
        }
        // Pinned objects are always downloaded, whatever the strategy.
        let eager = policy.strategy == PullStrategy::Eager || l.is_some_and(|l| l.pinned);
        let expect = expect_of(l);
        Some(if eager {
            Action::Pull {
                key: key_s.clone(),
                etag: r.etag.clone(),
                expect,
            }
        } else {
            Action::Learn {
                key: key_s.clone(),
                remote: Box::new(r.clone()),
                expect,
            }
        })
    };
    let conflict =
        |reason: ConflictReason| -> Option<Action> { resolve_conflict(key, l, r, reason, policy) };
    match (ls, rs) {
        (LocalSide::Absent, RemoteSide::Absent | RemoteSide::Deleted) => match l {
            Some(l) if !l.present => Some(Action::Forget { key: key_s }),
            _ => None,
        },
        (LocalSide::Absent, RemoteSide::Changed | RemoteSide::Unchanged) => r.and_then(fetch),
        (LocalSide::Unchanged, RemoteSide::Unchanged) => {
            let l = l?;
            let refresh = match (l.base_modified_ms, r) {
                (None, Some(ro)) => ro.modified_ms.map(|modified_ms| Action::Refresh {
                    key: key_s.clone(),
                    etag: ro.etag.clone(),
                    modified_ms,
                }),
                _ => None,
            };
            // A synced row without local content was evicted: it stays
            // synced and is fetched again only when read (or pinned).
            let evicted = !l.cached && l.state == SyncState::Synced;
            let want = if l.cached || evicted {
                SyncState::Synced
            } else {
                SyncState::Stale
            };
            if !l.cached
                && can_pull
                && (l.pinned || (policy.strategy == PullStrategy::Eager && !evicted))
            {
                r.and_then(fetch)
            } else if l.state != want {
                Some(Action::SetState {
                    key: key_s,
                    state: want,
                })
            } else {
                refresh
            }
        }
        (LocalSide::Unchanged, RemoteSide::Changed) => {
            let r = r?;
            let lo = l?;
            let wants_content = !lo.cached && (policy.strategy == PullStrategy::Eager || lo.pinned);
            // A version that overwrote our push unseen (a store that
            // ignores conditional writes) is `unseen_overwrite`'s to catch:
            // where conditions hold, a version based on what ours was based
            // on was written after a delete of ours.
            if same && !wants_content {
                adopt(r)
            } else {
                fetch(r)
            }
        }
        (LocalSide::Unchanged, RemoteSide::Deleted) => can_pull.then_some(Action::DeleteLocal {
            key: key_s,
            expect: expect_of(l),
        }),
        (LocalSide::Unchanged, RemoteSide::Absent) => None, // unreachable: Unchanged needs a base
        (LocalSide::Changed, RemoteSide::Unchanged) => {
            let lo = l?;
            let cond = Precondition::IfMatch(lo.base_etag.clone()?);
            can_push.then(|| Action::Push {
                key: key_s,
                hash: lo.hash,
                base: base_value(&cond, l, None),
                cond,
            })
        }
        (LocalSide::Changed, RemoteSide::Absent) => {
            let lo = l?;
            can_push.then(|| Action::Push {
                key: key_s,
                hash: lo.hash,
                cond: Precondition::IfAbsent,
                base: BASE_NONE.to_owned(),
            })
        }
        (LocalSide::Changed, RemoteSide::Changed) => {
            let r = r?;
            if adopt_changed {
                adopt(r)
            } else if l.is_some_and(|l| l.base_etag.is_none()) {
                conflict(ConflictReason::BothCreated)
            } else {
                conflict(ConflictReason::BothModified)
            }
        }
        (LocalSide::Changed, RemoteSide::Deleted) => {
            conflict(ConflictReason::ModifiedLocallyDeletedRemotely)
        }
        (LocalSide::Deleted, RemoteSide::Unchanged) => {
            let base = l?.base_etag.clone()?;
            can_push.then_some(Action::DeleteRemote {
                key: key_s,
                cond: Precondition::IfMatch(base),
            })
        }
        (LocalSide::Deleted, RemoteSide::Changed) => {
            let (lo, ro) = (l?, r?);
            if ro.has_metadata && deleted_version_again(lo, ro) {
                can_push.then(|| Action::DeleteRemote {
                    key: key_s,
                    cond: Precondition::IfMatch(ro.etag.clone()),
                })
            } else {
                conflict(ConflictReason::DeletedLocallyModifiedRemotely)
            }
        }
        (LocalSide::Deleted, RemoteSide::Deleted | RemoteSide::Absent) => {
            Some(Action::Forget { key: key_s })
        }
    }
}

/// A deletion of a key on the remote as a journal record names it: the
/// version the deleter agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteProof {
    /// The remote version the deleter removed.
    pub etag: Option<String>,
    /// Its content hash.
    pub hash: Option<ContentHash>,
    /// Its version id (content and metadata; none in records before
    /// stop 33).
    pub version: Option<String>,
}

/// True when one of `proofs` (journal records of deletes of `l`'s key)
/// names the version `l` agreed on: the deleter saw it.
pub fn delete_saw(l: &LocalEntry, proofs: &[DeleteProof]) -> bool {
    proofs.iter().any(|p| {
        (p.etag.is_some() && p.etag == l.base_etag)
            || (p.etag.is_none() && p.hash.is_some() && p.hash == l.base_hash)
            // The same content and metadata under another etag (pushed
            // again after a deletion this replica could not prove yet):
            // the deleter saw what this version holds.
            || p.version.as_ref().is_some_and(|v| {
                l.base_hash
                    .is_some_and(|h| *v == version_id(&h, l.base_meta.as_ref()))
            })
    })
}

/// Our own restore (`unproven_delete`: the agreed version pushed again,
/// its base naming itself) that a delete record names by its content and
/// metadata (`proofs`, another etag): the deletion was real, only not yet
/// journaled when we restored. Taken back while the remote still holds
/// our restore (`r`) and nothing changed here since.
pub fn restore_retracted(
    l: &LocalEntry,
    r: Option<&RemoteObject>,
    proofs: &[DeleteProof],
) -> Option<Action> {
    let etag = l.base_etag.as_ref()?;
    let version = version_id(&l.hash, l.meta.as_ref());
    let restored = l.present
        && unchanged_since_agreed(l)
        && l.pushed_base.as_deref() == Some(version.as_str())
        && r.is_some_and(|r| r.etag == *etag);
    let named = proofs
        .iter()
        .any(|p| p.version.as_deref() == Some(version.as_str()) && p.etag.as_ref() != Some(etag));
    (restored && named).then(|| Action::Retract {
        key: l.key.clone(),
        etag: etag.clone(),
        expect: expect_of(Some(l)),
    })
}

/// True when a put entry of another device names `l`'s agreed version as
/// the one it replaced (`bases`): that writer saw it, so what became of
/// the key afterwards (an edit, a delete) follows a version that saw ours.
pub fn superseded(l: &LocalEntry, bases: &[String]) -> bool {
    l.base_hash.is_some_and(|h| {
        bases
            .iter()
            .any(|b| *b == version_id(&h, l.base_meta.as_ref()))
    })
}

/// A remote deletion of `l`'s agreed version that nothing proves saw it,
/// where that matters, turned into what keeps the local data:
/// - `sealed` (an encrypted bucket): whoever holds storage credentials can
///   delete objects, but only a device holding the key writes journal
///   records, so an unproven deletion pushes the local version again;
/// - `emulated` (a store that ignores conditional deletes, whose deleter
///   checked by HEAD and may have removed a newer version unseen): when
///   the agreed version is our own push, a conflict (modified here,
///   deleted there), settled by `policy`.
///
/// Otherwise (and for actions other than a local delete) `action` as it is.
pub fn unproven_delete(
    action: Action,
    l: Option<&LocalEntry>,
    proofs: &[DeleteProof],
    bases: &[String],
    sealed: bool,
    emulated: bool,
    policy: Policy,
) -> Action {
    let (Action::DeleteLocal { key, .. }, Some(l)) = (&action, l) else {
        return action;
    };
    if !l.present || delete_saw(l, proofs) || superseded(l, bases) {
        return action;
    }
    if sealed && l.cached && policy.direction != Direction::DownloadOnly {
        // A restore: its base names the very version it pushes again, so
        // replicas holding that version keep it, and a delete record that
        // names it later takes it back (`restore_retracted`).
        return Action::Push {
            key: key.clone(),
            hash: l.hash,
            cond: Precondition::IfAbsent,
            base: version_id(&l.hash, l.meta.as_ref()),
        };
    }
    if emulated && l.pushed_base.is_some() {
        let reason = ConflictReason::ModifiedLocallyDeletedRemotely;
        return resolve_conflict(key, Some(l), None, reason, policy).unwrap_or(action);
    }
    action
}

/// A pull over this replica's own pushed version, on a store whose
/// conditional writes are only emulated (HEAD, then PUT): the version that
/// replaced ours must have been written by a device that saw ours (its
/// `ferry-base`, or the base a journal entry of its names, is our version).
/// When nothing shows that, two HEAD-then-PUT writers raced and ours was
/// overwritten unseen: a lost-update conflict, settled by `policy`, never a
/// pull that would drop the last copy of our write. `bases` are the bases
/// other devices' new journal entries name for this key, `proofs` the
/// deletes they name (a delete that saw ours explains it). A version from a
/// writer that is not ferry (no `ferry-device`) carries no base: it
/// replaces ours as an edit once a listing after our push showed ours there
/// (`base_modified_ms`); before that, a ferry writer may have overwritten
/// ours unseen and the foreign write then hid the evidence, so it is a
/// lost-update conflict too.
///
/// Otherwise (and for actions other than a pull) `action` as it is.
#[allow(clippy::too_many_arguments)]
pub fn unseen_overwrite(
    action: Action,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
    bases: &[String],
    proofs: &[DeleteProof],
    emulated: bool,
    device: &str,
    policy: Policy,
) -> Action {
    if !emulated || !matches!(action, Action::Pull { .. } | Action::Learn { .. }) {
        return action;
    }
    let (Some(l), Some(r)) = (l, r) else {
        return action;
    };
    let Some(base_hash) = l.base_hash else {
        return action;
    };
    if !l.present
        || !l.cached
        || l.pushed_base.is_none()
        || local_side(Some(l)) != LocalSide::Unchanged
        || !r.has_metadata
        || r.device.as_deref() == Some(device)
        || (r.device.is_none() && l.base_modified_ms.is_some())
    {
        return action;
    }
    let ours = version_id(&base_hash, l.base_meta.as_ref());
    // A delete that saw ours came first (the new version was written on
    // the key it left empty): ours was deleted, not lost.
    if r.base.as_deref() == Some(ours.as_str()) || superseded(l, bases) || delete_saw(l, proofs) {
        return action;
    }
    resolve_conflict(
        action.key(),
        Some(l),
        Some(r),
        ConflictReason::LostUpdate,
        policy,
    )
    .unwrap_or(action)
}

/// In an encrypted bucket (`sealed`): a version another device created
/// anew (its sealed base is none) over this replica's unchanged agreed
/// version. The key was emptied between the two; unless a delete record
/// proves a device saw our version (`proofs`) or a put names it as its
/// base (`bases`), whoever emptied it held storage credentials only (see
/// [`unproven_delete`]) and the creator never saw ours: both were created,
/// a conflict settled by `policy`, never a pull that drops what may be the
/// last copy of ours. Otherwise (and for actions other than a pull or a
/// learn) `action` as it is.
#[allow(clippy::too_many_arguments)]
pub fn unproven_create(
    action: Action,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
    bases: &[String],
    proofs: &[DeleteProof],
    sealed: bool,
    device: &str,
    policy: Policy,
) -> Action {
    if !sealed || !matches!(action, Action::Pull { .. } | Action::Learn { .. }) {
        return action;
    }
    let (Some(l), Some(r)) = (l, r) else {
        return action;
    };
    // A restore (a version pushed again after a deletion nothing proved,
    // its base naming itself) was created anew as much as a create: its
    // writer never saw ours either.
    let restored = r
        .hash
        .is_some_and(|h| r.base.as_deref() == Some(version_id(&h, r.meta.as_ref()).as_str()));
    if !created_over_ours(l, r)
        || !r.has_metadata
        || (r.base.as_deref() != Some(BASE_NONE) && !restored)
        || r.device.is_none()
        || r.device.as_deref() == Some(device)
        || superseded(l, bases)
        || delete_saw(l, proofs)
    {
        return action;
    }
    resolve_conflict(
        action.key(),
        Some(l),
        Some(r),
        ConflictReason::BothCreated,
        policy,
    )
    .unwrap_or(action)
}

/// Whether `r`, another version than the one `l` agreed on, meets `l`
/// unchanged and cached: the case [`unproven_create`] decides, once the
/// remote object's sealed base is known (a HEAD where a listing gave none).
pub fn created_over_ours(l: &LocalEntry, r: &RemoteObject) -> bool {
    l.present
        && l.cached
        && l.base_etag.as_deref() != Some(r.etag.as_str())
        && unchanged_since_agreed(l)
}

/// Our own push landed with its answer lost, so the local row still
/// holds it unagreed; another device saw it there and deleted it, and its
/// delete record names those very bytes (`proofs`). The local version is
/// what that delete saw: the key takes what the remote holds now (a later
/// write, or nothing), never a conflict that would bring back what the
/// user deleted. Otherwise (a local version the delete never saw, or no
/// such record) `action` as it is.
pub fn deleted_after_landing(
    action: Action,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
    proofs: &[DeleteProof],
    policy: Policy,
) -> Action {
    let Some(l) = l else {
        return action;
    };
    if !l.present
        || local_side(Some(l)) != LocalSide::Changed
        || l.base_hash == Some(l.hash)
        || policy.direction == Direction::UploadOnly
        || !proofs.iter().any(|p| p.hash == Some(l.hash))
        || !matches!(action, Action::Push { .. } | Action::Conflict { .. })
    {
        return action;
    }
    if r.is_some_and(|r| r.hash == Some(l.hash)) {
        return action;
    }
    keep_remote_action(action.key(), Some(l), r)
}

/// Whether `r` is the very version (content and metadata) that `l` agreed
/// on, written again under another ETag: the version a local delete of `l`
/// saw, pushed again by a writer that never learned its first push landed
/// (its answer lost) and then found the key empty. Deleting it removes
/// nothing the user did not delete.
pub fn deleted_version_again(l: &LocalEntry, r: &RemoteObject) -> bool {
    r.hash.is_some() && r.hash == l.base_hash && r.meta.is_some() && r.meta == l.base_meta
}

/// A push's condition failed on an object that is our own earlier push
/// whose answer was lost (`ferry-device` is ours), of a version the local
/// one has replaced since: the write that replaces it (`If-Match` on it,
/// and the `ferry-base` naming it). For a push on a new key (`If-None-Match:
/// *`) any such object; for an `If-Match` push, one written on the same
/// base as this push (`base`) with other content or metadata (the same
/// version is this very push, landed).
pub fn own_unrecorded_push(
    cond: &Precondition,
    r: &RemoteObject,
    device: &str,
    base: &str,
    version: (ContentHash, MetaDigest),
) -> Option<(Precondition, String)> {
    if !is_ours(r, device) {
        return None;
    }
    let replaces = match cond {
        Precondition::IfAbsent => true,
        Precondition::IfMatch(_) => {
            r.base.as_deref() == Some(base)
                && (r.hash != Some(version.0) || r.meta != Some(version.1))
        }
        Precondition::None => false,
    };
    if !replaces {
        return None;
    }
    let next = Precondition::IfMatch(r.etag.clone());
    let base = base_value(&next, None, Some(r));
    Some((next, base))
}

/// Turns a detected conflict into the policy's action.
pub fn resolve_conflict(
    key: &str,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
    reason: ConflictReason,
    policy: Policy,
) -> Option<Action> {
    let can_push = policy.direction != Direction::DownloadOnly;
    let can_pull = policy.direction != Direction::UploadOnly;
    let keep_local = match policy.conflict {
        ConflictPolicy::Flag => None,
        ConflictPolicy::KeepLocal => Some(true),
        ConflictPolicy::KeepRemote => Some(false),
        ConflictPolicy::LastWriterWins => {
            let local_time = l.map(|l| l.modified_ms).unwrap_or(i64::MIN);
            // A remote deletion has no time: keeping the data is the safe side.
            let remote_time = r
                .map(|r| r.ferry_mtime.or(r.modified_ms).unwrap_or(i64::MIN))
                .unwrap_or(i64::MIN);
            Some(local_time > remote_time)
        }
    };
    let flag = Action::Conflict {
        key: key.to_owned(),
        reason,
        remote_etag: r.map(|r| r.etag.clone()),
    };
    match keep_local {
        None => Some(flag),
        Some(true) if can_push => Some(keep_local_action(key, l, r)?),
        Some(false) if can_pull => Some(keep_remote_action(key, l, r)),
        Some(_) => Some(flag),
    }
}

/// The action that makes the remote match the local side.
pub fn keep_local_action(
    key: &str,
    l: Option<&LocalEntry>,
    r: Option<&RemoteObject>,
) -> Option<Action> {
    let l = l?;
    let cond = match r {
        Some(r) => Precondition::IfMatch(r.etag.clone()),
        None => Precondition::IfAbsent,
    };
    Some(if l.present {
        Action::Push {
            key: key.to_owned(),
            hash: l.hash,
            base: base_value(&cond, Some(l), r),
            cond,
        }
    } else if r.is_some() {
        Action::DeleteRemote {
            key: key.to_owned(),
            cond,
        }
    } else {
        Action::Forget {
            key: key.to_owned(),
        }
    })
}

/// The action that makes the local side match the remote.
pub fn keep_remote_action(key: &str, l: Option<&LocalEntry>, r: Option<&RemoteObject>) -> Action {
    match r {
        Some(r) => Action::Pull {
            key: key.to_owned(),
            etag: r.etag.clone(),
            expect: expect_of(l),
        },
        None => Action::DeleteLocal {
            key: key.to_owned(),
            expect: expect_of(l),
        },
    }
}
