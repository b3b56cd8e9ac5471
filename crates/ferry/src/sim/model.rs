//! The history model and the invariants the simulator checks once the
//! replicas settled: convergence, no lost write, no resurrection, and each
//! replica's own bookkeeping (status counts, the index check, garbage).

use std::collections::{BTreeMap, BTreeSet};

use crate::bucket::Bucket;
use crate::hash::ContentHash;
use crate::metadata::Metadata;
use crate::remote::memory::MemoryRemote;
use crate::state::SyncState;

use super::View;

/// Who wrote what, and which versions a later write replaced knowingly.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Acknowledged writes: content → its name in the history.
    written: BTreeMap<ContentHash, String>,
    /// Content replaced by a write or delete that saw it.
    superseded: BTreeSet<ContentHash>,
    /// Content a delete saw (and so must not come back).
    deleted: BTreeSet<ContentHash>,
    /// Content written again (moved, copied, rewritten with other
    /// metadata): it may legitimately live on after a delete saw it.
    rewritten: BTreeSet<ContentHash>,
    /// Foreign writes (no journal, no ferry metadata).
    foreign: BTreeSet<ContentHash>,
    /// Foreign writes a replica's emulated conditional write removed: the
    /// store ignored the condition and the foreign write landed between the
    /// replica's HEAD and its write. No protocol keeps those (the foreign
    /// client leaves nothing to recover from); design.md §"emulated
    /// preconditions" names the race.
    raced: BTreeSet<ContentHash>,
    /// Per content a delete saw: the replicas that deleted it (`None` for
    /// the foreign client, whose delete is on the store at once).
    deleters: BTreeMap<ContentHash, BTreeSet<Option<usize>>>,
    /// Of those, the replicas whose word of the delete has not reached the
    /// store yet: the delete itself not done there, or its journal record
    /// not appended (the replica still holds a tombstone or a pending
    /// journal entry).
    unsent: BTreeMap<ContentHash, BTreeSet<usize>>,
    /// Content a replica kept as a conflict copy while every delete that
    /// saw it was still unsent (no record of it on the store): the copy is
    /// concurrent with the deletes (it could not know of them), and keeping data is the side ferry
    /// takes then. A delete after the copy makes it binding again.
    concurrent: BTreeSet<ContentHash>,
}

impl Model {
    /// An operation of replica `who` (`None`: the foreign client) replaced
    /// `hash` knowingly (`deleted`: by deleting it).
    pub(crate) fn saw(&mut self, who: Option<usize>, hash: ContentHash, deleted: bool) {
        self.superseded.insert(hash);
        if deleted {
            self.deleted.insert(hash);
            self.concurrent.remove(&hash);
            self.deleters.entry(hash).or_default().insert(who);
            if let Some(who) = who {
                self.unsent.entry(hash).or_default().insert(who);
            }
        }
    }

    /// Replica `who` holds no tombstone and no pending journal entry: its
    /// deletes and their records are on the store.
    pub(crate) fn journaled(&mut self, who: usize) {
        for unsent in self.unsent.values_mut() {
            unsent.remove(&who);
        }
    }

    /// Replica `who` kept `hash` as a conflict copy.
    pub(crate) fn copied(&mut self, who: usize, hash: ContentHash) {
        let Some(deleters) = self.deleters.get(&hash) else {
            return;
        };
        let unsent = self.unsent.get(&hash);
        let all_unsent = deleters
            .iter()
            .all(|d| d.is_some_and(|d| d != who && unsent.is_some_and(|u| u.contains(&d))));
        if all_unsent {
            self.concurrent.insert(hash);
        }
    }

    /// An acknowledged write of `hash`, named `name`.
    pub(crate) fn wrote(&mut self, hash: ContentHash, name: String) {
        if self.written.insert(hash, name).is_some() {
            self.rewritten.insert(hash);
        }
    }

    /// A foreign write of `hash`, named `name`.
    pub(crate) fn wrote_foreign(&mut self, hash: ContentHash, name: String) {
        self.foreign.insert(hash);
        self.wrote(hash, name);
    }

    /// Whether `hash` was written by the foreign client.
    pub(crate) fn is_foreign(&self, hash: &ContentHash) -> bool {
        self.foreign.contains(hash)
    }

    /// An emulated conditional write or delete replaced `hash` although the
    /// version its HEAD saw was another: the store ignored the condition.
    pub(crate) fn raced(&mut self, hash: ContentHash) {
        if self.foreign.contains(&hash) {
            self.raced.insert(hash);
        }
    }

    /// Content written again under a key (a move, a metadata change).
    pub(crate) fn rewrote(&mut self, hash: ContentHash) {
        self.rewritten.insert(hash);
    }

    /// Each acknowledged write's name in the history.
    pub(crate) fn names(&self) -> BTreeMap<ContentHash, String> {
        self.written.clone()
    }

    /// No lost write and no resurrection, against the settled view.
    pub(crate) fn check(&self, view: &View) -> Result<(), String> {
        let present: BTreeMap<ContentHash, &str> = view
            .iter()
            .map(|(k, (data, _, _))| (ContentHash::of(data), k.as_str()))
            .collect();
        for (hash, name) in &self.written {
            if !present.contains_key(hash)
                && !self.superseded.contains(hash)
                && !self.raced.contains(hash)
            {
                return Err(format!(
                    "lost write: {name} was acknowledged, no later write or delete saw it, \
                     and no replica holds it"
                ));
            }
        }
        for hash in &self.deleted {
            if let Some(key) = present.get(hash) {
                if !self.rewritten.contains(hash) && !self.concurrent.contains(hash) {
                    let name = self.written.get(hash).map(String::as_str).unwrap_or("?");
                    return Err(format!(
                        "resurrection: {name} was deleted by a delete that saw it, \
                         and is back at {key}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every object of `bucket`: key → (bytes, content type, user metadata).
pub(crate) async fn view(bucket: &Bucket) -> crate::Result<View> {
    let mut out = View::new();
    for meta in bucket.list_all("").await? {
        let (meta, data) = bucket.get_bytes(&meta.key).await?;
        out.insert(meta.key, (data, meta.content_type, meta.metadata));
    }
    Ok(out)
}

/// What the store holds outside `.ferry/`, with user metadata only.
pub(crate) fn remote_view(store: &MemoryRemote) -> View {
    store
        .snapshot()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(crate::key::RESERVED_PREFIX))
        .map(|(k, (data, content_type, metadata))| {
            let user: Metadata = metadata
                .into_iter()
                .filter(|(n, _)| !n.starts_with("ferry-"))
                .collect();
            (k, (data, content_type, user))
        })
        .collect()
}

fn describe(view: &View) -> String {
    view.iter()
        .map(|(k, (data, ct, m))| {
            format!(
                "{k}={}[{ct}]{m:?}",
                String::from_utf8_lossy(&data[..data.len().min(12)])
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every replica holds what the first does, and so does `other` (the
/// store, or a device joining once they settled), named `whom`.
pub(crate) fn check_convergence(views: &[View], other: &View, whom: &str) -> Result<(), String> {
    let Some(first) = views.first() else {
        return Ok(());
    };
    for (i, v) in views.iter().enumerate().skip(1) {
        if v != first {
            return Err(format!(
                "divergence: r0 holds {{{}}} but r{i} holds {{{}}}",
                describe(first),
                describe(v)
            ));
        }
    }
    if other != first {
        return Err(format!(
            "divergence: the replicas hold {{{}}} but {whom} holds {{{}}}",
            describe(first),
            describe(other)
        ));
    }
    Ok(())
}

/// One settled replica's own bookkeeping: nothing left to do, status
/// counts match the rows, the index check finds nothing, and no blob
/// outlives a garbage collection unreferenced.
pub(crate) async fn check_replica(i: usize, bucket: &Bucket) -> Result<(), String> {
    let err = |e: crate::Error| format!("r{i}: {e}");
    let listed = bucket.list_all("").await.map_err(err)?;
    let s = bucket.status().await.map_err(err)?;
    if s.total != listed.len() as u64
        || s.dirty != 0
        || s.conflicts != 0
        || s.pending_delete != 0
        || s.failed != 0
        || s.synced + s.stale != s.total
    {
        let unsettled: Vec<String> = listed
            .iter()
            .filter(|m| !matches!(m.state, SyncState::Synced | SyncState::Stale))
            .map(|m| format!("{} ({})", m.key, m.state))
            .collect();
        let failures = bucket.failures().await.map_err(err)?;
        let rows: Vec<String> = bucket
            .with_reader(|c| {
                let mut st = c.prepare(
                    "SELECT key, state, present, base_etag IS NOT NULL, hash = base_hash \
                     FROM objects WHERE state NOT IN ('synced', 'stale')",
                )?;
                let rows = st.query_map([], |r| {
                    Ok(format!(
                        "{} state {} present {} base {} hash as base {:?}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?
                    ))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap_or_default();
        return Err(format!(
            "r{i}: status after settling is {s:?} with {} objects listed; unsettled: \
             {unsettled:?}; rows: {rows:?}; failures: {failures:?}",
            listed.len()
        ));
    }
    let damage = bucket.check_index().await.map_err(err)?;
    if !damage.is_empty() {
        return Err(format!("r{i}: check found damage: {damage:?}"));
    }
    bucket.collect_garbage().await.map_err(err)?;
    let referenced: BTreeSet<String> = listed.iter().map(|m| m.hash.to_hex()).collect();
    let blobs = bucket.dir().join("blobs");
    let mut stray = Vec::new();
    for dir in std::fs::read_dir(&blobs).map_err(|e| format!("r{i}: {e}"))? {
        let dir = dir.map_err(|e| format!("r{i}: {e}"))?.path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).map_err(|e| format!("r{i}: {e}"))? {
            let name = f.map_err(|e| format!("r{i}: {e}"))?.file_name();
            let name = name.to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                stray.push(name);
            }
        }
    }
    if !stray.is_empty() {
        return Err(format!(
            "r{i}: blobs no row references outlived garbage collection: {stray:?}"
        ));
    }
    Ok(())
}
