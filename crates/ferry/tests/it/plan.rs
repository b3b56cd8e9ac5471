//! Property tests for the pure sync planner (`ferry::plan`).
//!
//! The inputs come from tiny domains (8 keys, 4 content hashes, 4 etags) so
//! that equal content, unchanged etags and every local/remote combination
//! happen often. The last group of properties runs a plan against a small
//! model of both sides (every remote call succeeds) and plans again.
//!
//! The last two properties pin down two gaps this suite found and that were
//! fixed: uncached rows adopted without download under an eager strategy,
//! and pinned rows learned instead of downloaded under the lazy one.

use std::collections::{BTreeMap, BTreeSet};

use ferry::plan::{
    needs_inspection, plan, Action, ConflictPolicy, ConflictReason, Direction, Expect, LocalEntry,
    Policy, PullStrategy, Scope,
};
use ferry::remote::{Precondition, RemoteObject};
use ferry::{ContentHash, Filter, MetaDigest, Metadata, SyncState};

/// The metadata digest every generated version has: these properties vary
/// content; metadata-only changes have their own tests below.
const M0: MetaDigest = MetaDigest([7; 32]);

/// The device the plans are made for.
const DEVICE: &str = "dev-test";
use proptest::prelude::*;
use proptest::sample::select;

/// Enough cases to hit every combination, few enough to run in seconds.
const CASES: u32 = 512;

/// `CASES` cases; failures are not saved to a regressions file (the tree is shared).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The key space: flat keys and two nested ones (one under the `p/` scope).
const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "p/x", "q/y"];

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

fn h(n: u8) -> ContentHash {
    ContentHash([n; 32])
}

fn hash_s() -> impl Strategy<Value = ContentHash> {
    (0u8..4).prop_map(h)
}

fn etag_s() -> impl Strategy<Value = String> {
    (1u8..=4).prop_map(|n| format!("e{n}"))
}

/// Any state but `conflict`: a flagged conflict is sticky (the planner
/// leaves it to `resolve`, `flagged_conflicts_are_left_alone` pins that),
/// so the properties below start from rows not in conflict.
fn state_s() -> impl Strategy<Value = SyncState> {
    select(
        SyncState::ALL
            .iter()
            .copied()
            .filter(|s| *s != SyncState::Conflict)
            .collect::<Vec<_>>(),
    )
}

fn local_s(key: &'static str) -> impl Strategy<Value = LocalEntry> {
    (
        any::<bool>(),
        hash_s(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of((etag_s(), hash_s())),
        state_s(),
        0i64..100,
    )
        .prop_map(
            move |(present, hash, cached, pinned, base, state, modified_ms)| LocalEntry {
                key: key.to_owned(),
                present,
                hash,
                cached,
                pinned,
                base_etag: base.as_ref().map(|b| b.0.clone()),
                base_meta: base.as_ref().map(|_| M0),
                base_hash: base.map(|b| b.1),
                state,
                modified_ms,
                meta: Some(M0),
                base_modified_ms: None,
                pushed_base: None,
            },
        )
}

fn remote_obj(
    key: &str,
    etag: String,
    hash: Option<ContentHash>,
    modified_ms: Option<i64>,
    ferry_mtime: Option<i64>,
) -> RemoteObject {
    RemoteObject {
        key: key.to_owned(),
        etag,
        size: 0,
        modified_ms,
        hash,
        content_type: None,
        metadata: Metadata::default(),
        ferry_mtime,
        has_metadata: false,
        device: None,
        base: None,
        meta: hash.map(|_| M0),
        stamp: None,
    }
}

/// A remote object; `with_hash` forces a known content hash (listings often lack it).
fn remote_s(key: &'static str, with_hash: bool) -> impl Strategy<Value = RemoteObject> {
    let hash = if with_hash {
        hash_s().prop_map(Some).boxed()
    } else {
        proptest::option::of(hash_s()).boxed()
    };
    (
        etag_s(),
        hash,
        proptest::option::of(0i64..100),
        proptest::option::of(0i64..100),
    )
        .prop_map(move |(etag, hash, modified_ms, ferry_mtime)| {
            remote_obj(key, etag, hash, modified_ms, ferry_mtime)
        })
}

/// Both sides: each key at most once per side, in random order.
///
/// The order comes from a separate seed (not a flat-mapped shuffle) so
/// that failures shrink well.
fn sides_s(with_hash: bool) -> impl Strategy<Value = (Vec<LocalEntry>, Vec<RemoteObject>)> {
    let per_key: Vec<_> = KEYS
        .iter()
        .map(|&k| {
            (
                proptest::option::weighted(0.7, local_s(k)),
                proptest::option::weighted(0.7, remote_s(k, with_hash)),
            )
        })
        .collect();
    (per_key, any::<u64>(), any::<u64>()).prop_map(|(pairs, ls, rs)| {
        let (l, r): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let mut l: Vec<LocalEntry> = l.into_iter().flatten().collect();
        let mut r: Vec<RemoteObject> = r.into_iter().flatten().collect();
        l.sort_by_key(|e| scramble(ls, &e.key));
        r.sort_by_key(|o| scramble(rs, &o.key));
        (l, r)
    })
}

/// A seed-dependent sort key (seed 0 keeps key order).
fn scramble(seed: u64, key: &str) -> (u64, String) {
    let mut x = seed;
    for b in key.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (if seed == 0 { 0 } else { x }, key.to_owned())
}

fn direction_s() -> impl Strategy<Value = Direction> {
    select(vec![
        Direction::Bidirectional,
        Direction::UploadOnly,
        Direction::DownloadOnly,
    ])
}

fn conflict_s() -> impl Strategy<Value = ConflictPolicy> {
    select(vec![
        ConflictPolicy::Flag,
        ConflictPolicy::LastWriterWins,
        ConflictPolicy::KeepLocal,
        ConflictPolicy::KeepRemote,
    ])
}

fn strategy_s() -> impl Strategy<Value = PullStrategy> {
    select(vec![
        PullStrategy::Eager,
        PullStrategy::Lazy,
        PullStrategy::PinnedOnly,
    ])
}

fn policy_s() -> impl Strategy<Value = Policy> {
    (direction_s(), conflict_s(), strategy_s()).prop_map(|(direction, conflict, strategy)| Policy {
        direction,
        conflict,
        strategy,
    })
}

/// Prefix scopes, and filters (a folder excluded, only some keys included).
fn scopes_s() -> impl Strategy<Value = Scope> {
    let filtered = |lines: &[&str]| Scope {
        prefixes: Vec::new(),
        filter: Filter::from_lines(lines).unwrap(),
    };
    prop_oneof![
        Just(Scope::default()),
        Just(Scope::prefixes(["p/"])),
        Just(Scope::prefixes(["a"])),
        Just(filtered(&["- p/"])),
        Just(filtered(&["+ {a,b,q/y}", "- **"])),
    ]
}

/// One planner input.
#[derive(Debug, Clone)]
struct Case {
    local: Vec<LocalEntry>,
    remote: Vec<RemoteObject>,
    scopes: Scope,
    policy: Policy,
}

impl Case {
    fn plan(&self) -> Vec<Action> {
        plan(&self.local, &self.remote, &self.scopes, self.policy, DEVICE)
    }

    fn local(&self, key: &str) -> Option<&LocalEntry> {
        self.local.iter().find(|l| l.key == key)
    }

    fn remote(&self, key: &str) -> Option<&RemoteObject> {
        self.remote.iter().find(|r| r.key == key)
    }

    fn in_scope(&self, key: &str) -> bool {
        self.scopes.contains(key)
    }

    /// The remote object for `key` as the planner sees it (outside scope: none).
    fn listed(&self, key: &str) -> Option<&RemoteObject> {
        self.remote(key).filter(|_| self.in_scope(key))
    }
}

fn case_s(with_hash: bool, policy: impl Strategy<Value = Policy>) -> impl Strategy<Value = Case> {
    (sides_s(with_hash), scopes_s(), policy).prop_map(|((local, remote), scopes, policy)| Case {
        local,
        remote,
        scopes,
        policy,
    })
}

/// Any input: remote hashes sometimes unknown, any scope, any policy.
fn any_case() -> impl Strategy<Value = Case> {
    case_s(false, policy_s())
}

/// Any input under `ConflictPolicy::Flag` (any direction and strategy).
fn flag_case() -> impl Strategy<Value = Case> {
    let policy = (direction_s(), strategy_s()).prop_map(|(direction, strategy)| Policy {
        direction,
        conflict: ConflictPolicy::Flag,
        strategy,
    });
    case_s(false, policy)
}

/// A present row that holds a write the remote has not acknowledged.
fn locally_changed(l: &LocalEntry) -> bool {
    l.present && (l.base_etag.is_none() || l.base_hash != Some(l.hash))
}

/// Makes inputs realistic for the model runs: a row with an unpushed local
/// write has its content on disk (the executor only pushes cached content),
/// and a remote object still at the base etag holds the base content.
fn realistic(mut c: Case) -> Case {
    for l in &mut c.local {
        if locally_changed(l) {
            l.cached = true;
        }
    }
    for r in &mut c.remote {
        let base = c.local.iter().find(|l| l.key == r.key).and_then(|l| {
            l.base_etag
                .as_ref()
                .filter(|e| **e == r.etag)
                .and(l.base_hash)
        });
        if let (Some(b), Some(_)) = (base, r.hash) {
            r.hash = Some(b);
        }
    }
    c
}

fn action_for<'a>(acts: &'a [Action], key: &str) -> Option<&'a Action> {
    acts.iter().find(|a| a.key() == key)
}

// ---------------------------------------------------------------------------
// 1. Shape of the plan
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// At most one action per key, in strictly increasing key order, and only
    /// for keys the input mentions.
    #[test]
    fn plan_has_at_most_one_action_per_key_in_key_order(c in any_case()) {
        let acts = c.plan();
        for w in acts.windows(2) {
            prop_assert!(w[0].key() < w[1].key(), "out of order or duplicate: {:?}", acts);
        }
        for a in &acts {
            prop_assert!(
                c.local(a.key()).is_some() || c.remote(a.key()).is_some(),
                "action for a key nobody mentioned: {:?}", a
            );
        }
    }

    /// The input order of either side does not matter.
    #[test]
    fn plan_does_not_depend_on_input_order(c in any_case()) {
        let mut sorted = c.clone();
        sorted.local.sort_by(|a, b| a.key.cmp(&b.key));
        sorted.remote.sort_by(|a, b| a.key.cmp(&b.key));
        prop_assert_eq!(c.plan(), sorted.plan());
    }
}

proptest! {
    #![proptest_config(config())]

    /// A row in conflict is left alone whatever the remote and the policy
    /// (only `resolve` ends a conflict): a sync never overwrites or
    /// deletes either side of it, and never flags it again.
    #[test]
    fn flagged_conflicts_are_left_alone(c in any_case()) {
        let mut c = c;
        for l in &mut c.local {
            l.state = SyncState::Conflict;
        }
        let rows: BTreeSet<&str> = c.local.iter().map(|l| l.key.as_str()).collect();
        for a in c.plan() {
            let in_conflict = rows.contains(a.key()) && c.scopes.contains(a.key());
            prop_assert!(!in_conflict, "a row in conflict got {:?}", a);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Direction
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// DownloadOnly never changes the remote; UploadOnly never changes local
    /// content from the remote.
    #[test]
    fn direction_is_respected(c in any_case()) {
        let acts = c.plan();
        for a in &acts {
            match c.policy.direction {
                Direction::DownloadOnly => prop_assert!(
                    !matches!(a, Action::Push { .. } | Action::DeleteRemote { .. }),
                    "download-only plan changes the remote: {:?}", a
                ),
                Direction::UploadOnly => prop_assert!(
                    !matches!(a, Action::Pull { .. } | Action::Learn { .. } | Action::DeleteLocal { .. }),
                    "upload-only plan changes local content: {:?}", a
                ),
                Direction::Bidirectional => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3./4./5. Conflicts
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Equal content on both sides is never a conflict, whatever the policy.
    #[test]
    fn equal_content_is_never_a_conflict(c in any_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| l.present) {
            let Some(r) = c.remote(&l.key) else { continue };
            if r.hash != Some(l.hash) {
                continue;
            }
            let a = action_for(&acts, &l.key);
            prop_assert!(
                !matches!(a, Some(Action::Conflict { .. })),
                "equal content flagged: local {:?} remote {:?} -> {:?}", l, r, a
            );
            // Both sides changed to the same bytes: that is agreement, adopted
            // (no transfer either way). (A listed etag equal to the base with a
            // hash unlike the base hash is an impossible input; skipped.)
            if locally_changed(l) && c.in_scope(&l.key) && l.base_etag.as_ref() != Some(&r.etag) {
                prop_assert!(
                    matches!(a, Some(Action::Adopt { .. })),
                    "equal content with a local change should be adopted: {:?} {:?} -> {:?}", l, r, a
                );
            }
        }
    }

    /// Flag: both sides changed the content -> Conflict(BothModified).
    #[test]
    fn flag_both_modified_is_flagged(c in flag_case()) {
        let acts = c.plan();
        for l in &c.local {
            let (Some(base_etag), Some(base_hash)) = (&l.base_etag, l.base_hash) else { continue };
            let Some(r) = c.listed(&l.key) else { continue };
            if l.present && l.hash != base_hash && &r.etag != base_etag
                && r.hash.is_some() && r.hash != Some(l.hash)
            {
                let a = action_for(&acts, &l.key);
                prop_assert_eq!(
                    a,
                    Some(&Action::Conflict {
                        key: l.key.clone(),
                        reason: ConflictReason::BothModified,
                        remote_etag: Some(r.etag.clone()),
                    }),
                    "local {:?} remote {:?}", l, r
                );
            }
        }
    }

    /// Flag: created on both sides with different content -> Conflict(BothCreated).
    #[test]
    fn flag_both_created_is_flagged(c in flag_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| l.present && l.base_etag.is_none()) {
            let Some(r) = c.listed(&l.key) else { continue };
            if r.hash.is_some() && r.hash != Some(l.hash) {
                prop_assert_eq!(
                    action_for(&acts, &l.key),
                    Some(&Action::Conflict {
                        key: l.key.clone(),
                        reason: ConflictReason::BothCreated,
                        remote_etag: Some(r.etag.clone()),
                    }),
                    "local {:?} remote {:?}", l, r
                );
            }
        }
    }

    /// Flag: deleted here, changed there -> Conflict(DeletedLocallyModifiedRemotely).
    #[test]
    fn flag_deleted_locally_modified_remotely_is_flagged(c in flag_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| !l.present) {
            let Some(base_etag) = &l.base_etag else { continue };
            let Some(r) = c.listed(&l.key) else { continue };
            if &r.etag != base_etag {
                prop_assert_eq!(
                    action_for(&acts, &l.key),
                    Some(&Action::Conflict {
                        key: l.key.clone(),
                        reason: ConflictReason::DeletedLocallyModifiedRemotely,
                        remote_etag: Some(r.etag.clone()),
                    }),
                    "local {:?} remote {:?}", l, r
                );
            }
        }
    }

    /// Flag: changed here, deleted there -> Conflict(ModifiedLocallyDeletedRemotely).
    #[test]
    fn flag_modified_locally_deleted_remotely_is_flagged(c in flag_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| l.present && c.in_scope(&l.key)) {
            let (Some(_), Some(base_hash)) = (&l.base_etag, l.base_hash) else { continue };
            if l.hash != base_hash && c.listed(&l.key).is_none() {
                prop_assert_eq!(
                    action_for(&acts, &l.key),
                    Some(&Action::Conflict {
                        key: l.key.clone(),
                        reason: ConflictReason::ModifiedLocallyDeletedRemotely,
                        remote_etag: None,
                    }),
                    "local {:?}", l
                );
            }
        }
    }

    /// Flag: a present row with an unacknowledged local write is never
    /// replaced or deleted by the plan.
    #[test]
    fn flag_never_loses_an_unpushed_local_write(c in flag_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| locally_changed(l)) {
            let a = action_for(&acts, &l.key);
            prop_assert!(
                !matches!(
                    a,
                    Some(Action::DeleteLocal { .. } | Action::Pull { .. } | Action::Learn { .. })
                ),
                "local write lost: local {:?} remote {:?} -> {:?}", l, c.remote(&l.key), a
            );
        }
    }

    /// Only an explicit conflict policy may replace a local write, and only
    /// in its own direction: KeepLocal never, LastWriterWins only for a
    /// remote that is at least as new.
    #[test]
    fn automatic_policies_only_drop_local_writes_when_they_should(c in any_case()) {
        let acts = c.plan();
        for l in c.local.iter().filter(|l| locally_changed(l)) {
            let a = action_for(&acts, &l.key);
            if !matches!(
                a,
                Some(Action::DeleteLocal { .. } | Action::Pull { .. } | Action::Learn { .. })
            ) {
                continue;
            }
            match c.policy.conflict {
                ConflictPolicy::KeepRemote => {}
                ConflictPolicy::LastWriterWins => {
                    let r = c.listed(&l.key);
                    let remote_time = r
                        .and_then(|r| r.ferry_mtime.or(r.modified_ms))
                        .unwrap_or(i64::MIN);
                    prop_assert!(
                        r.is_some() && remote_time >= l.modified_ms,
                        "last-writer-wins dropped a newer local write: {:?} {:?} -> {:?}", l, r, a
                    );
                }
                ConflictPolicy::Flag | ConflictPolicy::KeepLocal => prop_assert!(
                    false,
                    "{:?} dropped a local write: {:?} {:?} -> {:?}",
                    c.policy.conflict, l, c.remote(&l.key), a
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 6./7. Guards: expectations on the local row, preconditions on the remote
// ---------------------------------------------------------------------------

fn expected_expect(l: Option<&LocalEntry>) -> Expect {
    match l {
        Some(l) if l.present => Expect::Present(l.hash, l.meta),
        Some(l) if l.base_etag.is_some() => Expect::Tombstone,
        _ => Expect::Absent,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every action that changes local content expects the row as planned.
    #[test]
    fn local_changes_expect_the_row_as_given(c in any_case()) {
        for a in c.plan() {
            let expect = match &a {
                Action::Pull { expect, .. }
                | Action::Learn { expect, .. }
                | Action::DeleteLocal { expect, .. } => expect,
                _ => continue,
            };
            prop_assert_eq!(expect, &expected_expect(c.local(a.key())), "{:?}", a);
        }
    }

    /// Pull and Learn name the listed remote version.
    #[test]
    fn downloads_name_the_listed_version(c in any_case()) {
        for a in c.plan() {
            match &a {
                Action::Pull { key, etag, .. } => {
                    prop_assert_eq!(Some(etag), c.listed(key).map(|r| &r.etag), "{:?}", a);
                }
                Action::Learn { key, remote, .. } => {
                    prop_assert_eq!(Some(&**remote), c.listed(key), "{:?}", a);
                }
                Action::Adopt { key, etag, hash, .. } => {
                    let r = c.listed(key);
                    prop_assert_eq!(Some(etag), r.map(|r| &r.etag), "{:?}", a);
                    prop_assert_eq!(Some(*hash), r.and_then(|r| r.hash), "{:?}", a);
                }
                _ => {}
            }
        }
    }

    /// Flag: pushes and remote deletes are conditional on the base.
    #[test]
    fn flag_pushes_are_conditional_on_the_base(c in flag_case()) {
        for a in c.plan() {
            let (key, cond) = match &a {
                Action::Push { key, cond, .. } | Action::DeleteRemote { key, cond } => (key, cond),
                _ => continue,
            };
            let l = c.local(key);
            prop_assert!(l.is_some(), "remote change without a local row: {:?}", a);
            let want = match l.and_then(|l| l.base_etag.clone()) {
                Some(b) => Some(Precondition::IfMatch(b)),
                None if matches!(a, Action::Push { .. }) => Some(Precondition::IfAbsent),
                // A remote delete needs a base to be conditional on.
                None => None,
            };
            prop_assert_eq!(Some(cond), want.as_ref(), "{:?}", a);
        }
    }

    /// Flag: the plan never writes over, or deletes, a remote version it has
    /// not agreed on, and never re-creates what the remote deleted.
    #[test]
    fn flag_never_overwrites_or_resurrects_a_remote_change(c in flag_case()) {
        for a in c.plan() {
            if !matches!(a, Action::Push { .. } | Action::DeleteRemote { .. }) {
                continue;
            }
            let base = c.local(a.key()).and_then(|l| l.base_etag.as_ref());
            match c.listed(a.key()) {
                Some(r) => prop_assert_eq!(Some(&r.etag), base, "{:?}", a),
                None => prop_assert!(base.is_none(), "resurrects a remote delete: {:?}", a),
            }
        }
    }

    /// Any policy: a remote write is never unconditional, and its condition
    /// is exactly the listed state (If-Match the listed etag, If-None-Match
    /// when nothing was listed). Pushes carry the local row's hash.
    #[test]
    fn remote_changes_are_conditional_on_the_listing(c in any_case()) {
        for a in c.plan() {
            let (key, cond) = match &a {
                Action::Push { key, cond, .. } | Action::DeleteRemote { key, cond } => (key, cond),
                _ => continue,
            };
            prop_assert_ne!(cond, &Precondition::None, "{:?}", a);
            let want = match c.listed(key) {
                Some(r) => Precondition::IfMatch(r.etag.clone()),
                None => Precondition::IfAbsent,
            };
            prop_assert_eq!(cond, &want, "{:?}", a);
            let l = c.local(key);
            match &a {
                Action::Push { hash, .. } => prop_assert!(
                    l.is_some_and(|l| l.present && l.hash == *hash), "{:?} for {:?}", a, l
                ),
                _ => prop_assert!(l.is_some_and(|l| !l.present), "{:?} for {:?}", a, l),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Scope
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Keys outside the scopes only ever become orphan (present rows not
    /// orphan already); remote objects outside them are ignored.
    #[test]
    fn keys_outside_scope_only_become_orphan(c in any_case()) {
        let acts = c.plan();
        for key in KEYS.iter().filter(|k| !c.in_scope(k)) {
            let a = action_for(&acts, key);
            let want = match c.local(key) {
                Some(l) if l.present && l.state != SyncState::Orphan => Some(Action::SetState {
                    key: (*key).to_owned(),
                    state: SyncState::Orphan,
                }),
                _ => None,
            };
            prop_assert_eq!(a, want.as_ref(), "key {} local {:?}", key, c.local(key));
        }
        // Out-of-scope remote objects do not influence anything.
        let mut only_in_scope = c.clone();
        only_in_scope.remote.retain(|r| c.in_scope(&r.key));
        prop_assert_eq!(acts, only_in_scope.plan());
    }
}

// ---------------------------------------------------------------------------
// 9. needs_inspection
// ---------------------------------------------------------------------------

/// Drops the content hash a Learn carries, to compare decisions.
fn without_learned_hash(a: Option<&Action>) -> Option<Action> {
    a.cloned().map(|a| match a {
        Action::Learn {
            key,
            mut remote,
            expect,
        } => {
            remote.hash = None;
            Action::Learn {
                key,
                remote,
                expect,
            }
        }
        other => other,
    })
}

proptest! {
    #![proptest_config(config())]

    /// A HEAD is only asked for when the answer lacks metadata, and only
    /// for a row that meets the remote object: both sides changed (the
    /// version decides between agreement and conflict), the row never
    /// agreed with the remote (our own unrecorded push?), or our own push
    /// was replaced (a sibling?).
    #[test]
    fn needs_inspection_only_when_the_version_decides(c in any_case()) {
        for r in &c.remote {
            let l = c.local(&r.key);
            let ni = needs_inspection(l, r);
            if ni {
                prop_assert!(!(r.has_metadata && r.meta.is_some()), "{:?} {:?}", l, r);
                let l = l.expect("inspection needs a local row");
                let both_changed = (locally_changed(l) || (!l.present && l.base_etag.is_some()))
                    && l.base_etag.as_ref() != Some(&r.etag);
                prop_assert!(
                    both_changed || l.base_etag.is_none() || l.pushed_base.is_some(),
                    "{:?} {:?}", l, r
                );
            }
        }
    }

    /// When no inspection is asked for, learning the hash would not have
    /// changed the decision, except for an unchanged local row, which
    /// re-fetches (Pull/Learn) identical content, or under upload-only does
    /// nothing, instead of adopting it: both harmless.
    #[test]
    fn skipped_inspection_only_costs_a_redundant_fetch(c in any_case(), n in 0u8..4) {
        let acts = c.plan();
        for (i, r) in c.remote.iter().enumerate() {
            let l = c.local(&r.key);
            if r.hash.is_some() || needs_inspection(l, r) {
                continue;
            }
            let mut informed = c.clone();
            informed.remote[i].hash = Some(h(n));
            let with_hash = informed.plan();
            let before = without_learned_hash(action_for(&acts, &r.key));
            let after = without_learned_hash(action_for(&with_hash, &r.key));
            if before == after {
                continue;
            }
            let unchanged_row = l.is_some_and(|l| l.present && !locally_changed(l));
            prop_assert!(
                unchanged_row
                    && matches!(after, Some(Action::Adopt { .. }))
                    && matches!(before, None | Some(Action::Pull { .. } | Action::Learn { .. })),
                "hash {:?} would have changed {:?} into {:?} for local {:?} remote {:?}",
                h(n), before, after, l, r
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 10. Convergence against a model of both sides
// ---------------------------------------------------------------------------

/// Both sides, as the executor would leave them if every remote call succeeded.
#[derive(Debug, Clone)]
struct Model {
    local: BTreeMap<String, LocalEntry>,
    remote: BTreeMap<String, RemoteObject>,
    next_etag: u32,
}

impl Model {
    fn of(c: &Case) -> Self {
        Model {
            local: c.local.iter().map(|l| (l.key.clone(), l.clone())).collect(),
            remote: c
                .remote
                .iter()
                .map(|r| (r.key.clone(), r.clone()))
                .collect(),
            next_etag: 0,
        }
    }

    fn case(&self, c: &Case) -> Case {
        Case {
            local: self.local.values().cloned().collect(),
            remote: self.remote.values().cloned().collect(),
            scopes: c.scopes.clone(),
            policy: c.policy,
        }
    }

    fn fresh_etag(&mut self) -> String {
        self.next_etag += 1;
        format!("n{}", self.next_etag)
    }

    /// Applies one action the way `sync.rs`/`record.rs` record its success.
    fn apply(&mut self, a: &Action) {
        match a {
            Action::Push { key, hash, .. } => {
                let etag = self.fresh_etag();
                let l = self.local.get_mut(key).expect("push of a row");
                let mtime = l.modified_ms;
                l.base_etag = Some(etag.clone());
                l.base_hash = Some(*hash);
                l.base_meta = l.meta;
                l.base_modified_ms = None;
                if l.present && l.hash == *hash {
                    l.state = SyncState::Synced;
                }
                self.remote.insert(
                    key.clone(),
                    remote_obj(key, etag, Some(*hash), Some(mtime), Some(mtime)),
                );
            }
            Action::Retract { key, .. } => {
                self.remote.remove(key);
                self.local.remove(key);
            }
            Action::DeleteRemote { key, .. } => {
                self.remote.remove(key);
                if self.local.get(key).is_some_and(|l| !l.present) {
                    self.local.remove(key);
                } else if let Some(l) = self.local.get_mut(key) {
                    l.base_etag = None;
                    l.base_hash = None;
                }
            }
            Action::Pull { key, .. } => {
                let r = self
                    .remote
                    .get(key)
                    .expect("pull of a remote object")
                    .clone();
                let hash = r.hash.expect("model remotes carry hashes");
                let pinned = self.local.get(key).is_some_and(|l| l.pinned);
                self.local.insert(
                    key.clone(),
                    LocalEntry {
                        key: key.clone(),
                        present: true,
                        hash,
                        cached: true,
                        pinned,
                        base_etag: Some(r.etag.clone()),
                        base_hash: Some(hash),
                        state: SyncState::Synced,
                        modified_ms: r.ferry_mtime.or(r.modified_ms).unwrap_or(0),
                        meta: r.meta,
                        base_meta: r.meta,
                        base_modified_ms: r.modified_ms,
                        pushed_base: None,
                    },
                );
            }
            Action::Learn { key, remote, .. } => {
                let hash = remote.hash.unwrap_or(ContentHash([0; 32]));
                let pinned = self.local.get(key).is_some_and(|l| l.pinned);
                self.local.insert(
                    key.clone(),
                    LocalEntry {
                        key: key.clone(),
                        present: true,
                        hash,
                        cached: false,
                        pinned,
                        base_etag: Some(remote.etag.clone()),
                        base_hash: Some(hash),
                        state: SyncState::Stale,
                        modified_ms: remote.ferry_mtime.or(remote.modified_ms).unwrap_or(0),
                        meta: remote.meta,
                        base_meta: remote.meta,
                        base_modified_ms: remote.modified_ms,
                        pushed_base: None,
                    },
                );
            }
            Action::DeleteLocal { key, .. } => {
                self.local.remove(key);
            }
            Action::Adopt {
                key,
                etag,
                hash,
                meta,
                modified_ms,
            } => {
                if let Some(l) = self.local.get_mut(key) {
                    if l.present && l.hash == *hash {
                        l.base_etag = Some(etag.clone());
                        l.base_hash = Some(*hash);
                        l.base_meta = *meta;
                        l.base_modified_ms = *modified_ms;
                        // record.rs: synced when cached, stale otherwise.
                        l.state = if l.cached {
                            SyncState::Synced
                        } else {
                            SyncState::Stale
                        };
                    }
                }
            }
            Action::Forget { key } => {
                if self.local.get(key).is_some_and(|l| !l.present) {
                    self.local.remove(key);
                }
            }
            Action::Conflict { key, .. } => {
                if let Some(l) = self.local.get_mut(key) {
                    l.state = SyncState::Conflict;
                }
            }
            Action::SetState { key, state } => {
                if let Some(l) = self.local.get_mut(key) {
                    l.state = *state;
                }
            }
            Action::Refresh {
                key,
                etag,
                modified_ms,
            } => {
                if let Some(l) = self.local.get_mut(key) {
                    if l.base_etag.as_ref() == Some(etag) {
                        l.base_modified_ms = Some(*modified_ms);
                    }
                }
            }
        }
    }

    /// Runs one plan over the model; returns the plan.
    fn round(&mut self, c: &Case) -> Vec<Action> {
        let acts = self.case(c).plan();
        for a in &acts {
            self.apply(a);
        }
        acts
    }
}

/// Bidirectional, eager, one of the automatic conflict policies.
fn auto_eager_case() -> impl Strategy<Value = Case> {
    let policy = select(vec![
        ConflictPolicy::KeepLocal,
        ConflictPolicy::KeepRemote,
        ConflictPolicy::LastWriterWins,
    ])
    .prop_map(|conflict| Policy {
        direction: Direction::Bidirectional,
        conflict,
        strategy: PullStrategy::Eager,
    });
    (sides_s(true), policy).prop_map(|((local, remote), policy)| {
        realistic(Case {
            local,
            remote,
            scopes: Scope::default(),
            policy,
        })
    })
}

/// Bidirectional, eager, Flag.
fn flag_eager_case() -> impl Strategy<Value = Case> {
    sides_s(true).prop_map(|(local, remote)| {
        realistic(Case {
            local,
            remote,
            scopes: Scope::default(),
            policy: Policy {
                direction: Direction::Bidirectional,
                conflict: ConflictPolicy::Flag,
                strategy: PullStrategy::Eager,
            },
        })
    })
}

/// Any policy and scope, remote hashes known.
fn any_hashed_case() -> impl Strategy<Value = Case> {
    case_s(true, policy_s()).prop_map(realistic)
}

/// The second plan.
/// The second plan, without `Refresh` bookkeeping (a version just pushed
/// or adopted is listed with its time once; recording it moves nothing).
fn replan(c: &Case, m: &Model, _first: &[Action]) -> Vec<Action> {
    m.case(c)
        .plan()
        .into_iter()
        .filter(|a| !matches!(a, Action::Refresh { .. }))
        .collect()
}

/// The keys and reasons of a plan's conflicts.
fn conflicts(acts: &[Action]) -> BTreeMap<String, ConflictReason> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Conflict { key, reason, .. } => Some((key.clone(), *reason)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Bidirectional + Eager + an automatic conflict policy: one successful
    /// round brings both sides together, and a second plan has nothing to do.
    #[test]
    fn automatic_policy_converges_in_one_round(c in auto_eager_case()) {
        let mut m = Model::of(&c);
        let first = m.round(&c);
        let second = replan(&c, &m, &first);
        prop_assert!(
            second.is_empty(),
            "second round not quiet.\nfirst: {:?}\nsecond: {:?}\nmodel: {:?}", first, second, m
        );
        let local: BTreeMap<&String, ContentHash> = m
            .local
            .iter()
            .filter(|(_, l)| l.present)
            .map(|(k, l)| (k, l.hash))
            .collect();
        let remote: BTreeMap<&String, ContentHash> = m
            .remote
            .iter()
            .map(|(k, r)| (k, r.hash.expect("hashed")))
            .collect();
        prop_assert_eq!(&local, &remote, "first: {:?}", first);
        // Every row agrees with the remote version it holds.
        for (k, l) in &m.local {
            prop_assert!(l.present, "tombstone left: {:?}", l);
            prop_assert_eq!(l.base_etag.as_ref(), m.remote.get(k).map(|r| &r.etag), "{:?}", l);
            prop_assert_eq!(l.base_hash, Some(l.hash), "{:?}", l);
        }
    }

    /// Bidirectional + Eager + Flag: after one round nothing is left to do
    /// (no ping-pong; flagged conflicts stay as they are), and everything
    /// not in conflict agrees.
    #[test]
    fn flag_policy_is_stable_after_one_round(c in flag_eager_case()) {
        let mut m = Model::of(&c);
        let first = m.round(&c);
        let second = replan(&c, &m, &first);
        let flagged = conflicts(&first);
        // A flagged conflict is sticky: the next round leaves it alone.
        prop_assert!(
            second.is_empty(),
            "second round does something.\nfirst: {:?}\nsecond: {:?}", first, second
        );
        let keys: BTreeSet<&String> = m.local.keys().chain(m.remote.keys()).collect();
        for k in keys.into_iter().filter(|k| !flagged.contains_key(*k)) {
            let l = m.local.get(k).filter(|l| l.present);
            let r = m.remote.get(k);
            prop_assert_eq!(l.map(|l| l.hash), r.and_then(|r| r.hash), "key {} first {:?}", k, first);
        }
    }

    /// Any policy, direction, strategy and scope: applying a plan and
    /// planning again yields nothing (flagged conflicts are sticky).
    #[test]
    fn any_policy_plan_is_idempotent(c in any_hashed_case()) {
        let mut m = Model::of(&c);
        let first = m.round(&c);
        let second = replan(&c, &m, &first);
        // Flagged conflicts are sticky: nothing is left to do.
        prop_assert!(
            second.is_empty(),
            "second round does something.\nfirst: {:?}\nsecond: {:?}", first, second
        );
    }
}

// ---------------------------------------------------------------------------
// Planner gaps found by the properties above (these fail on purpose)
// ---------------------------------------------------------------------------

/// A policy that downloads eagerly (Eager, and a direction that pulls).
fn eager_pulling_case() -> impl Strategy<Value = Case> {
    let policy = (
        select(vec![Direction::Bidirectional, Direction::DownloadOnly]),
        conflict_s(),
    )
        .prop_map(|(direction, conflict)| Policy {
            direction,
            conflict,
            strategy: PullStrategy::Eager,
        });
    case_s(true, policy).prop_map(realistic)
}

proptest! {
    #![proptest_config(config())]

    /// After one eager round (every call succeeding) every present row in
    /// scope has its content local, also when an uncached row (learned
    /// lazily earlier) finds its remote rewritten with the same content.
    /// Rows evicted from the cache (uncached but `synced`, content unchanged
    /// on both sides) stay evicted: they are fetched again when read.
    #[test]
    fn eager_sync_downloads_uncached_rows_even_when_content_is_unchanged(c in eager_pulling_case()) {
        let evicted: BTreeSet<String> = c
            .local
            .iter()
            .filter(|l| l.present && !l.cached && !l.pinned && l.state == SyncState::Synced)
            .filter(|l| {
                c.remote.iter().any(|r| r.key == l.key && l.base_etag.as_deref() == Some(r.etag.as_str()))
                    && l.base_hash == Some(l.hash)
            })
            .map(|l| l.key.clone())
            .collect();
        let mut m = Model::of(&c);
        let first = m.round(&c);
        for l in m.local.values().filter(|l| l.present && c.in_scope(&l.key) && !evicted.contains(&l.key)) {
            prop_assert!(
                l.cached,
                "eager round left {:?} uncached; its action was {:?}",
                l.key, action_for(&first, &l.key)
            );
        }
    }

    /// Pinned objects are always downloaded (`LocalEntry::pinned`), under
    /// `Lazy` too: never a `Learn` that would drop or skip their content.
    #[test]
    fn pinned_rows_are_downloaded_under_every_strategy(c in any_case()) {
        for a in c.plan() {
            if let Action::Learn { key, .. } = &a {
                prop_assert!(
                    !c.local(key).is_some_and(|l| l.pinned && l.present),
                    "pinned row learned, not downloaded: {:?} under {:?} -> {:?}",
                    c.local(key), c.policy, a
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 11. Stores that ignore conditional writes (found by the simulator)
// ---------------------------------------------------------------------------

/// This device's own pushed version of `k`, agreed and still here.
fn own_push() -> LocalEntry {
    LocalEntry {
        key: "k".into(),
        present: true,
        hash: h(1),
        cached: true,
        pinned: false,
        base_etag: Some("e1".into()),
        base_hash: Some(h(1)),
        state: SyncState::Synced,
        modified_ms: 0,
        meta: Some(M0),
        base_meta: Some(M0),
        base_modified_ms: Some(1_000),
        pushed_base: Some(ferry::remote::BASE_NONE.into()),
    }
}

/// Another device's version of `k` that replaced `base`.
fn sibling(base: &str) -> RemoteObject {
    let mut r = remote_obj("k", "e2".into(), Some(h(2)), Some(2_000), None);
    r.has_metadata = true;
    r.device = Some("other".into());
    r.base = Some(base.into());
    r
}

/// Seed 167: two HEAD-then-PUT writers raced; the other device's version
/// names a base other than ours and no journal entry says it saw ours: a
/// lost-update conflict, not a pull over the last copy of our write. A
/// version whose writer saw ours (its base, or a journal entry's) is pulled.
#[test]
fn an_overwrite_that_never_saw_our_push_is_a_conflict_on_emulating_stores() {
    let l = own_push();
    let ours = ferry::version_id(&h(1), Some(&M0));
    let policy = Policy::default();
    let planned = |r: &RemoteObject| {
        let acts = plan(
            std::slice::from_ref(&l),
            std::slice::from_ref(r),
            &Scope::default(),
            policy,
            DEVICE,
        );
        assert_eq!(acts.len(), 1, "{acts:?}");
        acts.into_iter().next().unwrap()
    };
    // Based on the other device's own earlier version (it overwrote ours
    // blind, then wrote again on top of its own).
    let unseen = sibling(&ferry::version_id(&h(3), Some(&M0)));
    let a = planned(&unseen);
    assert!(matches!(a, Action::Pull { .. }), "{a:?}");
    let got = ferry::plan::unseen_overwrite(
        a.clone(),
        Some(&l),
        Some(&unseen),
        &[],
        &[],
        true,
        DEVICE,
        policy,
    );
    assert!(
        matches!(
            got,
            Action::Conflict {
                reason: ConflictReason::LostUpdate,
                ..
            }
        ),
        "{got:?}"
    );
    // Conditions enforced by the store: the overwrite saw ours.
    let got = ferry::plan::unseen_overwrite(
        a.clone(),
        Some(&l),
        Some(&unseen),
        &[],
        &[],
        false,
        DEVICE,
        policy,
    );
    assert_eq!(got, a);
    // A journal entry of the writer names our version as the one replaced.
    let got = ferry::plan::unseen_overwrite(
        a.clone(),
        Some(&l),
        Some(&unseen),
        std::slice::from_ref(&ours),
        &[],
        true,
        DEVICE,
        policy,
    );
    assert_eq!(got, a);
    // Its own base is ours.
    let seen = sibling(&ours);
    let a = planned(&seen);
    let got = ferry::plan::unseen_overwrite(
        a.clone(),
        Some(&l),
        Some(&seen),
        &[],
        &[],
        true,
        DEVICE,
        policy,
    );
    assert_eq!(got, a);
}

/// Seed 104: deleted here, and the remote holds this device's own push
/// whose answer was lost: the delete saw it, so it is deleted (on that
/// version), never flagged and pulled back.
#[test]
fn a_local_delete_removes_our_own_unrecorded_push() {
    let mut l = own_push();
    l.present = false;
    l.state = SyncState::PendingDelete;
    l.pushed_base = None;
    let mut r = sibling("whatever");
    r.device = Some(DEVICE.into());
    let acts = plan(&[l], &[r], &Scope::default(), Policy::default(), DEVICE);
    assert_eq!(
        acts,
        vec![Action::DeleteRemote {
            key: "k".into(),
            cond: Precondition::IfMatch("e2".into()),
        }]
    );
}

/// Seed 1000292: on a store that enforces conditions, a version based on
/// what our push was based on (here: both created the key) was written
/// after a delete of ours, so it is pulled; the planner alone never calls
/// it a lost update (only `unseen_overwrite` does, where conditions are
/// emulated).
#[test]
fn a_version_on_our_base_is_pulled_where_conditions_hold() {
    let l = own_push();
    let r = sibling(ferry::remote::BASE_NONE);
    let acts = plan(&[l], &[r], &Scope::default(), Policy::default(), DEVICE);
    assert!(matches!(acts.as_slice(), [Action::Pull { .. }]), "{acts:?}");
}

/// Seed 1001647: a plain client's version (no `ferry-device`, so no base)
/// over our push that no listing confirmed yet may hide a ferry writer's
/// unseen overwrite: a lost update where conditions are emulated. Once a
/// listing after our push showed ours, the foreign version is an edit.
#[test]
fn a_foreign_version_over_an_unconfirmed_push_is_a_lost_update() {
    let mut l = own_push();
    l.base_modified_ms = None;
    let mut r = sibling("irrelevant");
    r.device = None;
    r.base = None;
    let policy = Policy::default();
    let pull = Action::Pull {
        key: "k".into(),
        etag: "e2".into(),
        expect: Expect::Present(h(1), Some(M0)),
    };
    let got = ferry::plan::unseen_overwrite(
        pull.clone(),
        Some(&l),
        Some(&r),
        &[],
        &[],
        true,
        DEVICE,
        policy,
    );
    assert!(
        matches!(
            got,
            Action::Conflict {
                reason: ConflictReason::LostUpdate,
                ..
            }
        ),
        "{got:?}"
    );
    l.base_modified_ms = Some(1_500);
    let got = ferry::plan::unseen_overwrite(
        pull.clone(),
        Some(&l),
        Some(&r),
        &[],
        &[],
        true,
        DEVICE,
        policy,
    );
    assert_eq!(got, pull);
}

/// Seed 1012280: deleted here, and the remote holds the very version the
/// delete saw under a new ETag (its writer pushed it again, never having
/// learned its first push landed): deleted on that version, not a
/// conflict that would keep it. Other content is still a conflict.
#[test]
fn a_deleted_version_written_again_is_deleted() {
    let mut l = own_push();
    l.present = false;
    l.state = SyncState::PendingDelete;
    let mut again = remote_obj("k", "e3".into(), Some(h(1)), Some(3_000), None);
    again.has_metadata = true;
    again.device = Some("other".into());
    let acts = plan(
        std::slice::from_ref(&l),
        std::slice::from_ref(&again),
        &Scope::default(),
        Policy::default(),
        DEVICE,
    );
    assert_eq!(
        acts,
        vec![Action::DeleteRemote {
            key: "k".into(),
            cond: Precondition::IfMatch("e3".into()),
        }]
    );
    let mut other = again.clone();
    other.hash = Some(h(2));
    let acts = plan(&[l], &[other], &Scope::default(), Policy::default(), DEVICE);
    assert!(
        matches!(
            acts.as_slice(),
            [Action::Conflict {
                reason: ConflictReason::DeletedLocallyModifiedRemotely,
                ..
            }]
        ),
        "{acts:?}"
    );
}

/// Seed 1001701: an `If-Match` push that meets our own earlier push of the
/// key on the same base (its answer lost, the local version replaced
/// since) replaces it, conditional on it; the same version is this very
/// push, landed, and another base is not ours to replace.
#[test]
fn an_if_match_push_replaces_our_own_unrecorded_push_on_its_base() {
    let base = ferry::version_id(&h(0), Some(&M0));
    let mut ours = sibling(&base);
    ours.device = Some(DEVICE.into());
    let cond = Precondition::IfMatch("e1".into());
    let got = ferry::plan::own_unrecorded_push(&cond, &ours, DEVICE, &base, (h(5), M0));
    let (next, next_base) = got.expect("replaces our own unrecorded push");
    assert_eq!(next, Precondition::IfMatch("e2".into()));
    assert_eq!(next_base, ferry::version_id(&h(2), Some(&M0)));
    assert_eq!(
        ferry::plan::own_unrecorded_push(&cond, &ours, DEVICE, &base, (h(2), M0)),
        None,
        "the same version is this push, landed"
    );
    assert_eq!(
        ferry::plan::own_unrecorded_push(&cond, &ours, DEVICE, "other-base", (h(5), M0)),
        None
    );
    let mut theirs = ours.clone();
    theirs.device = Some("other".into());
    assert_eq!(
        ferry::plan::own_unrecorded_push(&cond, &theirs, DEVICE, &base, (h(5), M0)),
        None
    );
}

/// Seed 1012092: our push landed with its answer lost (the row holds the
/// version unagreed); another device saw it there and deleted it, and its
/// delete record names those bytes. The local version is what that delete
/// saw: the key takes what the remote holds now (another device's later
/// create, or nothing) instead of a both-created conflict or a push that
/// brings it back. A local version the delete never saw keeps its action.
#[test]
fn a_landed_push_a_delete_saw_takes_the_remote() {
    let mut l = own_push();
    l.base_etag = None;
    l.base_hash = None;
    l.base_meta = None;
    l.state = SyncState::Dirty;
    let proof = ferry::plan::DeleteProof {
        etag: Some("lost".into()),
        hash: Some(h(1)),
        version: None,
    };
    let policy = Policy::default();
    let later = remote_obj("k", "e9".into(), Some(h(9)), Some(9_000), None);
    let conflict = Action::Conflict {
        key: "k".into(),
        reason: ConflictReason::BothCreated,
        remote_etag: Some("e9".into()),
    };
    let got = ferry::plan::deleted_after_landing(
        conflict.clone(),
        Some(&l),
        Some(&later),
        std::slice::from_ref(&proof),
        policy,
    );
    assert_eq!(
        got,
        Action::Pull {
            key: "k".into(),
            etag: "e9".into(),
            expect: Expect::Present(h(1), Some(M0)),
        }
    );
    let push = Action::Push {
        key: "k".into(),
        hash: h(1),
        cond: Precondition::IfAbsent,
        base: ferry::remote::BASE_NONE.into(),
    };
    let got = ferry::plan::deleted_after_landing(
        push.clone(),
        Some(&l),
        None,
        std::slice::from_ref(&proof),
        policy,
    );
    assert_eq!(
        got,
        Action::DeleteLocal {
            key: "k".into(),
            expect: Expect::Present(h(1), Some(M0)),
        }
    );
    // Other bytes: the delete never saw them.
    let other = ferry::plan::DeleteProof {
        etag: Some("lost".into()),
        hash: Some(h(5)),
        version: None,
    };
    let got = ferry::plan::deleted_after_landing(
        conflict.clone(),
        Some(&l),
        Some(&later),
        std::slice::from_ref(&other),
        policy,
    );
    assert_eq!(got, conflict);
    // No record: the push goes on.
    let got = ferry::plan::deleted_after_landing(push.clone(), Some(&l), None, &[], policy);
    assert_eq!(got, push);
}

/// Seed 5110 (encrypted mode): a replica pushed its version again after a
/// deletion it could not prove yet (the deleter's record was not out); the
/// record then named the deleted version's etag, not the one pushed again,
/// and the replica pushed the same bytes back once more: a delete undone.
/// A delete record names the version id too (content and metadata): the
/// same content and metadata under another etag is what the deleter saw.
#[test]
fn a_delete_record_naming_the_same_content_and_metadata_saw_our_version() {
    let l = own_push();
    let proof = |etag: &str, version: Option<String>| ferry::plan::DeleteProof {
        etag: Some(etag.into()),
        hash: Some(h(1)),
        version,
    };
    let same = ferry::version_id(&h(1), Some(&M0));
    assert!(
        ferry::plan::delete_saw(&l, &[proof("e1", None)]),
        "the etag"
    );
    assert!(ferry::plan::delete_saw(&l, &[proof("e0", Some(same))]));
    let other_meta = ferry::version_id(&h(1), Some(&MetaDigest([8; 32])));
    assert!(
        !ferry::plan::delete_saw(&l, &[proof("e0", Some(other_meta))]),
        "other metadata is another version"
    );
    assert!(
        !ferry::plan::delete_saw(&l, &[proof("e0", None)]),
        "same bytes under another etag, nothing more known (older records)"
    );
}
