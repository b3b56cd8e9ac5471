//! Regression tests for the sync findings of the simulation round (each
//! failed before its fix): a flagged conflict is never overwritten or
//! deleted by a sync, and the journal position consumes only what a run
//! applied.

use ferry::remote::memory::MemoryRemote;
use ferry::remote::{Precondition, PutRequest, Remote, RemoteBody};
use ferry::{ContentHash, PutOptions, SyncConfig, SyncMode, SyncOptions, SyncState};

use super::backends::{Folder, Memory};
use super::{replica_with, Backend};

fn journal_config() -> SyncConfig {
    SyncConfig {
        full_sync_interval_secs: 3600,
        ..SyncConfig::default()
    }
}

/// Finding 1: B's push is overwritten by a sibling (a store that ignores
/// conditions lost B's update): B flags `lost-update`. The other writer
/// then deletes the key; B's syncs, full ones included, keep B's version
/// and the conflict until `resolve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_update_conflict_is_never_deleted_by_a_sync() {
    let store = MemoryRemote::new();
    store.ignore_conditions(true);
    let be = Memory(store.clone());
    let b = replica_with(&be, journal_config()).await;
    for key in ["k", "other"] {
        b.bucket
            .put(key, b"v1".to_vec(), PutOptions::default())
            .await
            .unwrap();
    }
    b.bucket.sync(SyncOptions::default()).await.unwrap();
    b.bucket
        .put("k", b"mine".to_vec(), PutOptions::default())
        .await
        .unwrap();
    b.bucket.sync(SyncOptions::default()).await.unwrap();
    // Another device's version based on the same v1 overwrites B's push.
    let head = store.head("k").await.unwrap().unwrap();
    let sibling = PutRequest {
        key: "k".into(),
        content_type: "application/octet-stream".into(),
        metadata: Default::default(),
        hash: ContentHash::of(b"theirs"),
        size: 6,
        mtime_ms: 0,
        device: "0ther".into(),
        // The base B's push carried (the same v1 version): a sibling.
        base: head.base.clone().unwrap(),
        sealed: false,
        stamp: None,
    };
    store
        .put(
            &sibling,
            RemoteBody::Bytes(bytes::Bytes::from_static(b"theirs")),
            Precondition::None,
        )
        .await
        .unwrap();
    let full = SyncOptions {
        full: true,
        ..Default::default()
    };
    let r = b.bucket.sync(full.clone()).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(b.bucket.head("k").await.unwrap().state, SyncState::Conflict);
    // The other writer deletes the key; B syncs, twice, in full.
    store.delete_foreign("k");
    for _ in 0..2 {
        b.bucket.sync(full.clone()).await.unwrap();
        let (meta, data) = b.bucket.get_bytes("k").await.unwrap();
        assert_eq!(&data[..], b"mine", "B's acknowledged version is kept");
        assert_eq!(meta.state, SyncState::Conflict, "only resolve ends it");
    }
}

/// Finding 3 (measured through the CLI on a folder remote): B changes `k`
/// and syncs; A runs `push`, then `sync`: A gets `k`. A push consumes no
/// journal record whose change it did not pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_does_not_consume_the_changes_it_did_not_pull() {
    let be = Folder::new();
    let a = replica_with(&be, journal_config()).await;
    let b = replica_with(&be, journal_config()).await;
    a.bucket
        .put("k", b"1".to_vec(), PutOptions::default())
        .await
        .unwrap();
    a.bucket.sync(SyncOptions::default()).await.unwrap();
    b.bucket.sync(SyncOptions::default()).await.unwrap();
    b.bucket
        .put("k", b"2".to_vec(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        b.bucket.sync(SyncOptions::default()).await.unwrap().pushed,
        1
    );
    let r = a
        .bucket
        .sync(SyncOptions {
            mode: SyncMode::Push,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.pulled, 0, "{r:?}");
    let r = a.bucket.sync(SyncOptions::default()).await.unwrap();
    assert!(!r.full, "read from the journal: {r:?}");
    assert_eq!(r.pulled, 1, "{r:?}");
    assert_eq!(&a.bucket.get_bytes("k").await.unwrap().1[..], b"2");
    let _ = be.remote();
}

/// Sim seed 1000015: on a store that ignores conditional puts, a racing
/// HEAD-then-PUT writer can overwrite our push unseen, so our local copy
/// may be the last one of that write: it is evicted only once a listing
/// after the push showed our version still there. Where conditions hold,
/// a pushed version can go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_waits_for_a_listing_after_the_push_where_conditions_are_emulated() {
    let data = vec![b'x'; 64 * 1024];
    let full = SyncOptions {
        full: true,
        ..Default::default()
    };
    // Conditions enforced: evictable right after the push.
    let enforced = replica_with(&Memory(MemoryRemote::new()), journal_config()).await;
    enforced
        .bucket
        .put("k", data.clone(), PutOptions::default())
        .await
        .unwrap();
    enforced.bucket.sync(full.clone()).await.unwrap();
    assert!(enforced.bucket.evict(1 << 20).await.unwrap() > 0);

    let store = MemoryRemote::new();
    store.ignore_conditions(true);
    let b = replica_with(&Memory(store.clone()), journal_config()).await;
    assert_eq!(
        b.bucket.status().await.unwrap().conditional_writes,
        Some(false)
    );
    b.bucket
        .put("k", data, PutOptions::default())
        .await
        .unwrap();
    let r = b.bucket.sync(full.clone()).await.unwrap();
    assert_eq!(r.pushed, 1, "{r:?}");
    assert_eq!(
        b.bucket.evict(1 << 20).await.unwrap(),
        0,
        "no listing showed our push yet: the local copy stays"
    );
    assert!(
        b.bucket.residency("k").unwrap().cached,
        "the content is still here"
    );
    // A listing after the push shows our version: now it may go.
    b.bucket.sync(full).await.unwrap();
    assert!(b.bucket.evict(1 << 20).await.unwrap() > 0);
    assert!(!b.bucket.residency("k").unwrap().cached);
}

/// Seeds 1007242 and 1010170: on a store that ignores conditions, a
/// foreign client overwrites A's pushed version; B, which holds that
/// version, deletes it and meets the foreign one (a conflict). B's journal
/// still says which version its delete saw, so A learns its version was
/// deleted, not lost: A takes the foreign version without a lost-update
/// conflict (whose copy would bring back what B deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_meets_a_later_version_still_names_the_one_it_saw() {
    let store = MemoryRemote::new();
    store.ignore_conditions(true);
    let be = Memory(store.clone());
    let a = replica_with(&be, journal_config()).await;
    let b = replica_with(&be, journal_config()).await;
    a.bucket
        .put("k", b"v1".to_vec(), PutOptions::default())
        .await
        .unwrap();
    a.bucket.sync(SyncOptions::default()).await.unwrap();
    b.bucket.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(&b.bucket.get_bytes("k").await.unwrap().1[..], b"v1");
    store.put_foreign("k", b"foreign".to_vec(), "text/plain");
    b.bucket.delete("k").await.unwrap();
    let r = b.bucket.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "B's delete met the foreign version: {r:?}");
    let full = SyncOptions {
        full: true,
        ..Default::default()
    };
    let r = a.bucket.sync(full).await.unwrap();
    assert!(r.conflicts.is_empty(), "{r:?}");
    let (meta, data) = a.bucket.get_bytes("k").await.unwrap();
    assert_eq!(&data[..], b"foreign");
    assert_eq!(meta.state, SyncState::Synced);
}
