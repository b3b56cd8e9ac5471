//! Scenarios, each run against every backend (see the `suite!` invocation at the end).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use ferry::plan::{ConflictPolicy, ConflictReason, PullStrategy};
use ferry::{Bucket, Error, PutOptions, Resolution, SyncConfig, SyncOptions, SyncState};

use super::layers::{Interposer, LoseAnswer, Outage};
use super::{replica, replica_with, Backend};

async fn put(b: &Bucket, key: &str, data: &[u8]) {
    b.put(key, data.to_vec(), PutOptions::default())
        .await
        .unwrap();
}

async fn read(b: &Bucket, key: &str) -> Vec<u8> {
    b.get_bytes(key).await.unwrap().1.to_vec()
}

async fn sync(b: &Bucket) -> ferry::SyncReport {
    b.sync(SyncOptions::default()).await.unwrap()
}

fn big(seed: u8) -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub async fn puts_metadata_and_deletes_propagate(be: &dyn Backend) {
    let a = replica(be).await;
    let c = replica(be).await;
    let mut opts = PutOptions {
        content_type: Some("text/x-note".into()),
        ..Default::default()
    };
    opts.metadata.insert("owner".into(), "ann".into());
    a.bucket
        .put("notes/one", b"first note".to_vec(), opts)
        .await
        .unwrap();
    put(&a.bucket, "media/big.bin", &big(1)).await;
    let r = sync(&a.bucket).await;
    assert_eq!((r.pushed, r.pulled), (2, 0), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(
        a.bucket.head("notes/one").await.unwrap().state,
        SyncState::Synced
    );

    let r = sync(&c.bucket).await;
    assert_eq!((r.pushed, r.pulled), (0, 2), "{r:?}");
    let (meta, data) = c.bucket.get_bytes("notes/one").await.unwrap();
    assert_eq!(&data[..], b"first note");
    assert_eq!(meta.content_type, "text/x-note");
    assert_eq!(meta.metadata.get("owner").map(String::as_str), Some("ann"));
    assert_eq!(meta.state, SyncState::Synced);
    assert_eq!(read(&c.bucket, "media/big.bin").await, big(1));

    // A second sync on each side does nothing.
    let r = sync(&a.bucket).await;
    assert_eq!(
        (r.pushed, r.pulled, r.deleted_local, r.deleted_remote),
        (0, 0, 0, 0),
        "{r:?}"
    );

    assert!(a.bucket.delete("notes/one").await.unwrap());
    assert_eq!(a.bucket.status().await.unwrap().pending_delete, 1);
    let r = sync(&a.bucket).await;
    assert_eq!(r.deleted_remote, 1, "{r:?}");
    assert_eq!(a.bucket.status().await.unwrap().pending_delete, 0);
    let r = sync(&c.bucket).await;
    assert_eq!(r.deleted_local, 1, "{r:?}");
    assert!(!c.bucket.exists("notes/one").await.unwrap());
    assert_eq!(be.foreign_keys().await, ["media/big.bin"]);
}

async fn make_conflict(
    be: &dyn Backend,
    key: &str,
    a_val: &[u8],
    c_val: &[u8],
) -> (super::Replica, super::Replica) {
    let a = replica(be).await;
    let c = replica(be).await;
    put(&a.bucket, key, b"v0").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    put(&a.bucket, key, a_val).await;
    put(&c.bucket, key, c_val).await;
    let r = sync(&a.bucket).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    let r = sync(&c.bucket).await;
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(r.conflicts[0].key, key);
    assert_eq!(r.conflicts[0].reason, Some(ConflictReason::BothModified));
    assert_eq!(c.bucket.status().await.unwrap().conflicts, 1);
    assert_eq!(
        read(&c.bucket, key).await,
        c_val,
        "a conflict keeps the local version"
    );
    (a, c)
}

pub async fn concurrent_edits_conflict_and_resolve_keep_local(be: &dyn Backend) {
    let (a, c) = make_conflict(be, "doc", b"from a", b"from c").await;
    c.bucket
        .resolve("doc", Resolution::KeepLocal)
        .await
        .unwrap();
    assert_eq!(c.bucket.status().await.unwrap().conflicts, 0);
    assert_eq!(be.foreign_get("doc").await.unwrap().data, b"from c");
    sync(&a.bucket).await;
    assert_eq!(read(&a.bucket, "doc").await, b"from c");
}

pub async fn concurrent_edits_resolve_keep_remote(be: &dyn Backend) {
    let (_a, c) = make_conflict(be, "doc", b"from a", b"from c").await;
    c.bucket
        .resolve("doc", Resolution::KeepRemote)
        .await
        .unwrap();
    assert_eq!(read(&c.bucket, "doc").await, b"from a");
    assert_eq!(c.bucket.head("doc").await.unwrap().state, SyncState::Synced);
    let r = sync(&c.bucket).await;
    assert!(r.conflicts.is_empty() && r.pushed == 0, "{r:?}");
}

pub async fn concurrent_edits_resolve_keep_both(be: &dyn Backend) {
    let (a, c) = make_conflict(be, "dir/doc.txt", b"from a", b"from c").await;
    let out = c
        .bucket
        .resolve("dir/doc.txt", Resolution::KeepBoth)
        .await
        .unwrap();
    let copy = out.renamed_to.expect("keep-both names the copy");
    // The extension stays last (issue 24, 7.11): the copy opens like the original.
    assert!(copy.starts_with("dir/doc.conflict."), "{copy}");
    assert!(copy.ends_with(".txt"), "{copy}");
    assert_eq!(read(&c.bucket, &copy).await, b"from c");
    assert_eq!(read(&c.bucket, "dir/doc.txt").await, b"from a");
    sync(&c.bucket).await;
    sync(&a.bucket).await;
    assert_eq!(read(&a.bucket, &copy).await, b"from c");
    // A second keep-both in the same second never overwrites the first copy.
    put(&a.bucket, "dir/doc.txt", b"a again").await;
    put(&c.bucket, "dir/doc.txt", b"c again").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    let out2 = c
        .bucket
        .resolve("dir/doc.txt", Resolution::KeepBoth)
        .await
        .unwrap();
    let copy2 = out2.renamed_to.unwrap();
    assert_ne!(copy, copy2);
    assert_eq!(read(&c.bucket, &copy).await, b"from c");
    assert_eq!(read(&c.bucket, &copy2).await, b"c again");
}

pub async fn automatic_policies_settle_conflicts(be: &dyn Backend) {
    for (policy, expect_c_wins) in [
        (ConflictPolicy::KeepLocal, true),
        (ConflictPolicy::KeepRemote, false),
        (ConflictPolicy::LastWriterWins, true),
    ] {
        let key = format!("auto/{policy:?}");
        let a = replica(be).await;
        let c = replica_with(
            be,
            SyncConfig {
                conflict: policy,
                ..Default::default()
            },
        )
        .await;
        put(&a.bucket, &key, b"v0").await;
        sync(&a.bucket).await;
        sync(&c.bucket).await;
        put(&a.bucket, &key, b"from a").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        put(&c.bucket, &key, b"from c (later)").await;
        sync(&a.bucket).await;
        let r = sync(&c.bucket).await;
        assert!(r.conflicts.is_empty(), "{policy:?}: {r:?}");
        let winner: &[u8] = if expect_c_wins {
            b"from c (later)"
        } else {
            b"from a"
        };
        assert_eq!(read(&c.bucket, &key).await, winner, "{policy:?}");
        assert_eq!(
            be.foreign_get(&key).await.unwrap().data,
            winner,
            "{policy:?}"
        );
        sync(&a.bucket).await;
        assert_eq!(read(&a.bucket, &key).await, winner, "{policy:?}");
    }
}

pub async fn equal_content_on_both_sides_is_not_a_conflict(be: &dyn Backend) {
    let a = replica(be).await;
    let c = replica(be).await;
    put(&a.bucket, "same", b"identical").await;
    put(&c.bucket, "same", b"identical").await;
    sync(&a.bucket).await;
    let r = sync(&c.bucket).await;
    assert!(r.conflicts.is_empty(), "{r:?}");
    assert_eq!(
        c.bucket.head("same").await.unwrap().state,
        SyncState::Synced
    );
}

pub async fn edit_versus_delete_is_a_conflict_both_ways(be: &dyn Backend) {
    // Deleted remotely, edited here.
    let a = replica(be).await;
    let c = replica(be).await;
    put(&a.bucket, "k1", b"v0").await;
    put(&a.bucket, "k2", b"v0").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    a.bucket.delete("k1").await.unwrap();
    put(&c.bucket, "k1", b"edited by c").await;
    // Edited remotely, deleted here.
    put(&a.bucket, "k2", b"edited by a").await;
    c.bucket.delete("k2").await.unwrap();
    sync(&a.bucket).await;
    let r = sync(&c.bucket).await;
    let mut reasons: Vec<(String, Option<ConflictReason>)> = r
        .conflicts
        .iter()
        .map(|c| (c.key.clone(), c.reason))
        .collect();
    reasons.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        reasons,
        [
            (
                "k1".to_string(),
                Some(ConflictReason::ModifiedLocallyDeletedRemotely)
            ),
            (
                "k2".to_string(),
                Some(ConflictReason::DeletedLocallyModifiedRemotely)
            ),
        ],
        "{r:?}"
    );
    // Nothing was silently deleted.
    assert_eq!(read(&c.bucket, "k1").await, b"edited by c");
    assert_eq!(be.foreign_get("k2").await.unwrap().data, b"edited by a");
    c.bucket.resolve("k1", Resolution::KeepLocal).await.unwrap();
    assert_eq!(be.foreign_get("k1").await.unwrap().data, b"edited by c");
    c.bucket
        .resolve("k2", Resolution::KeepRemote)
        .await
        .unwrap();
    assert_eq!(read(&c.bucket, "k2").await, b"edited by a");
    assert!(c.bucket.conflicts().await.unwrap().is_empty());
}

pub async fn third_party_write_between_listing_and_push_is_a_conflict(be: &dyn Backend) {
    let a = super::replica(be).await;
    put(&a.bucket, "raced-new", b"ours").await;
    put(&a.bucket, "raced-old", b"v0").await;
    sync(&a.bucket).await;
    put(&a.bucket, "raced-old", b"ours too").await;
    let b2 = Arc::new(be.remote());
    let writer = b2.clone();
    let hook: Box<dyn Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync> =
        Box::new(move |key: String| {
            let w = writer.clone();
            Box::pin(async move {
                let req = ferry::remote::PutRequest {
                    key: key.clone(),
                    content_type: "text/plain".into(),
                    metadata: Default::default(),
                    hash: ferry::ContentHash::of(b"theirs"),
                    size: 6,
                    mtime_ms: 0,
                    device: "third-party".into(),
                    base: String::new(),
                    sealed: false,
                    stamp: None,
                    progress: Default::default(),
                };
                w.put(
                    &req,
                    ferry::remote::RemoteBody::Bytes(bytes::Bytes::from_static(b"theirs")),
                    ferry::remote::Precondition::None,
                )
                .await
                .unwrap();
            })
        });
    put(&a.bucket, "raced-new2", b"ours").await;
    let layer = Interposer {
        inner: be.remote(),
        keys: Mutex::new(vec!["raced-new2".into(), "raced-old".into()]),
        hook,
    };
    a.bucket.attach(Arc::new(layer)).await.unwrap();
    let r = sync(&a.bucket).await;
    let keys: Vec<&str> = r.conflicts.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["raced-new2", "raced-old"], "{r:?}");
    assert!(r
        .conflicts
        .iter()
        .all(|c| c.reason == Some(ConflictReason::RemoteChangedDuringPush)));
    // Neither write was lost: theirs on the remote, ours here.
    assert_eq!(be.foreign_get("raced-new2").await.unwrap().data, b"theirs");
    assert_eq!(be.foreign_get("raced-old").await.unwrap().data, b"theirs");
    assert_eq!(read(&a.bucket, "raced-old").await, b"ours too");
    assert_eq!(read(&a.bucket, "raced-new2").await, b"ours");
}

pub async fn push_that_landed_but_was_not_recorded_is_recognised(be: &dyn Backend) {
    // Without retries: the run fails, the next one must adopt, not conflict, not re-upload.
    let a = replica_with(
        be,
        SyncConfig {
            max_retries: 0,
            ..Default::default()
        },
    )
    .await;
    put(&a.bucket, "landed", &big(7)).await;
    let layer = LoseAnswer {
        inner: be.remote(),
        armed: AtomicBool::new(true),
    };
    a.bucket.attach(Arc::new(layer)).await.unwrap();
    let r = sync(&a.bucket).await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(
        a.bucket.head("landed").await.unwrap().state,
        SyncState::Dirty
    );
    let etag_before = be.remote().head("landed").await.unwrap().unwrap().etag;
    let r = sync(&a.bucket).await;
    assert!(r.conflicts.is_empty() && r.errors.is_empty(), "{r:?}");
    assert_eq!(
        a.bucket.head("landed").await.unwrap().state,
        SyncState::Synced
    );
    let etag_after = be.remote().head("landed").await.unwrap().unwrap().etag;
    assert_eq!(etag_before, etag_after, "the object was uploaded again");

    // With retries: the retry meets its own earlier write and adopts it in the same run.
    let c = replica(be).await;
    put(&c.bucket, "landed-2", b"small").await;
    c.bucket
        .attach(Arc::new(LoseAnswer {
            inner: be.remote(),
            armed: AtomicBool::new(true),
        }))
        .await
        .unwrap();
    let r = sync(&c.bucket).await;
    assert!(r.conflicts.is_empty() && r.errors.is_empty(), "{r:?}");
    assert_eq!(
        c.bucket.head("landed-2").await.unwrap().state,
        SyncState::Synced
    );
}

pub async fn plain_client_objects_round_trip(be: &dyn Backend) {
    be.foreign_put("in/table.csv", b"a,b\n1,2\n", "text/csv")
        .await;
    let a = replica(be).await;
    let r = sync(&a.bucket).await;
    assert_eq!(r.pulled, 1, "{r:?}");
    let (meta, data) = a.bucket.get_bytes("in/table.csv").await.unwrap();
    assert_eq!(&data[..], b"a,b\n1,2\n");
    // The media type (a WebDAV server names it from the file name and may
    // add a charset).
    assert_eq!(meta.content_type.split(';').next(), Some("text/csv"));
    let mut opts = PutOptions::default();
    opts.metadata.insert("owner".into(), "ann".into());
    a.bucket
        .put("out/report.json", b"{\"ok\":true}".to_vec(), opts)
        .await
        .unwrap();
    sync(&a.bucket).await;
    // A later run lists the pushed version: on a store whose conditional
    // puts race (s3s-fs), an edit that comes before any listing showed
    // ours is a lost-update conflict instead (`plan::unseen_overwrite`).
    sync(&a.bucket).await;
    let plain = be.foreign_get("out/report.json").await.unwrap();
    assert_eq!(plain.data, b"{\"ok\":true}");
    assert_eq!(plain.content_type.as_deref(), Some("application/json"));
    assert_eq!(plain.metadata.get("owner").map(String::as_str), Some("ann"));
    assert_eq!(
        plain.metadata.get("ferry-hash").map(String::as_str),
        Some(ferry::ContentHash::of(b"{\"ok\":true}").to_hex().as_str())
    );
    // A plain client's edit of a ferry object is pulled like any other change.
    be.foreign_put("out/report.json", b"{\"ok\":false}", "application/json")
        .await;
    let r = sync(&a.bucket).await;
    assert_eq!(r.pulled, 1, "{r:?}");
    assert_eq!(read(&a.bucket, "out/report.json").await, b"{\"ok\":false}");
}

pub async fn lazy_pull_downloads_on_first_get(be: &dyn Backend) {
    let a = replica(be).await;
    for i in 0..3 {
        put(
            &a.bucket,
            &format!("lazy/{i}"),
            format!("value {i}").as_bytes(),
        )
        .await;
    }
    put(&a.bucket, "lazy/big", &big(3)).await;
    sync(&a.bucket).await;
    let c = replica_with(
        be,
        SyncConfig {
            strategy: PullStrategy::Lazy,
            ..Default::default()
        },
    )
    .await;
    let r = sync(&c.bucket).await;
    assert_eq!(r.pulled, 4, "{r:?}");
    let s = c.bucket.status().await.unwrap();
    assert_eq!((s.total, s.stale, s.cache_size), (4, 4, 0), "{s:?}");
    assert_eq!(
        c.bucket.list_all("lazy/").await.unwrap().len(),
        4,
        "lazy objects are listed"
    );
    assert_eq!(read(&c.bucket, "lazy/1").await, b"value 1");
    assert_eq!(read(&c.bucket, "lazy/big").await, big(3));
    let s = c.bucket.status().await.unwrap();
    assert_eq!((s.stale, s.synced), (2, 2), "{s:?}");
    // `remote: true` forces a fresh copy.
    put(&a.bucket, "lazy/1", b"newer").await;
    sync(&a.bucket).await;
    assert_eq!(
        read(&c.bucket, "lazy/1").await,
        b"value 1",
        "cached copy until asked"
    );
    let mut o = c
        .bucket
        .get_with("lazy/1", ferry::GetOptions { remote: true })
        .await
        .unwrap();
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut o.body, &mut data)
        .await
        .unwrap();
    assert_eq!(data, b"newer");
}

pub async fn scopes_add_pulls_and_remove_orphans(be: &dyn Backend) {
    let a = replica(be).await;
    put(&a.bucket, "a/1", b"a1").await;
    put(&a.bucket, "b/1", b"b1").await;
    sync(&a.bucket).await;
    let c = replica(be).await;
    let r = c.bucket.add_scope("a/").await.unwrap();
    assert_eq!(r.pulled, 1, "{r:?}");
    assert_eq!(c.bucket.scopes().unwrap(), ["a/"]);
    assert!(c.bucket.exists("a/1").await.unwrap());
    assert!(!c.bucket.exists("b/1").await.unwrap());
    c.bucket.add_scope("b/").await.unwrap();
    assert!(c.bucket.exists("b/1").await.unwrap());
    c.bucket.remove_scope("a/").await.unwrap();
    assert_eq!(c.bucket.head("a/1").await.unwrap().state, SyncState::Orphan);
    assert_eq!(
        read(&c.bucket, "a/1").await,
        b"a1",
        "orphans keep their data"
    );
    put(&a.bucket, "a/2", b"a2").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    assert!(!c.bucket.exists("a/2").await.unwrap());
    assert_eq!(c.bucket.status().await.unwrap().orphan, 1);
}

/// An edit made while its key was out of the scope is pushed once the
/// scope holds the key again (found by the simulator: the key stayed
/// `orphan` and its edit never left the device).
pub async fn an_edit_made_out_of_scope_is_pushed_when_the_scope_grows(be: &dyn Backend) {
    let a = replica(be).await;
    put(&a.bucket, "a/1", b"a1").await;
    put(&a.bucket, "b/1", b"b1").await;
    sync(&a.bucket).await;
    let c = replica(be).await;
    sync(&c.bucket).await;
    c.bucket.add_scope("a/").await.unwrap();
    put(&c.bucket, "b/1", b"b2 edited out of scope").await;
    sync(&c.bucket).await;
    assert_eq!(c.bucket.head("b/1").await.unwrap().state, SyncState::Orphan);
    c.bucket.add_scope("b/").await.unwrap();
    assert_eq!(c.bucket.head("b/1").await.unwrap().state, SyncState::Dirty);
    sync(&c.bucket).await;
    let s = c.bucket.status().await.unwrap();
    assert_eq!((s.orphan, s.dirty, s.synced), (0, 0, 2), "{s:?}");
    sync(&a.bucket).await;
    assert_eq!(read(&a.bucket, "b/1").await, b"b2 edited out of scope");
}

pub async fn unreachable_remote_mid_sync_loses_nothing(be: &dyn Backend) {
    let a = replica_with(
        be,
        SyncConfig {
            max_retries: 0,
            push_concurrency: 2,
            ..Default::default()
        },
    )
    .await;
    for i in 0..40 {
        put(&a.bucket, &format!("o/{i:02}"), format!("{i}").as_bytes()).await;
    }
    let outage = Arc::new(Outage {
        inner: be.remote(),
        after: 15,
        seen: AtomicU64::new(0),
        healed: AtomicBool::new(false),
    });
    a.bucket.attach(outage.clone()).await.unwrap();
    // The run stops once the remote stopped answering (issue 24, 7.3): one
    // error naming how many keys are left, not one failure per key.
    let err = a.bucket.sync(SyncOptions::default()).await.unwrap_err();
    let Error::RemoteDown { left, .. } = err else {
        panic!("{err}");
    };
    assert!(left > 0, "{err}");
    let tried = outage.seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tried < 15 + 10,
        "{tried} requests: the run kept trying each key"
    );
    let s = a.bucket.status().await.unwrap();
    assert!(s.synced < 40, "{s:?}");
    assert!(s.failed < 10, "{s:?}");
    // Local work goes on.
    put(&a.bucket, "o/late", b"written offline").await;
    for i in 0..40 {
        assert_eq!(
            read(&a.bucket, &format!("o/{i:02}")).await,
            format!("{i}").as_bytes()
        );
    }
    assert!(a.bucket.status().await.unwrap().failed > 0);
    // While it is down, a sync fails cleanly and changes nothing.
    let err = a.bucket.sync(SyncOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Remote(_)), "{err}");
    outage
        .healed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = sync(&a.bucket).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let s = a.bucket.status().await.unwrap();
    assert_eq!((s.synced, s.dirty, s.failed), (41, 0, 0), "{s:?}");
    assert_eq!(be.foreign_keys().await.len(), 41);
}

pub async fn remote_names_that_are_not_keys_are_reported_and_skipped(be: &dyn Backend) {
    be.foreign_put("fine.txt", b"ok", "text/plain").await;
    be.foreign_put("bad\u{7f}name", b"x", "text/plain").await;
    let a = replica(be).await;
    let r = sync(&a.bucket).await;
    assert_eq!(r.pulled, 1, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(r.errors[0].key, "bad\u{7f}name");
    assert!(r.errors[0].cause.contains("control"), "{r:?}");
    assert_eq!(read(&a.bucket, "fine.txt").await, b"ok");
}

pub async fn dry_run_changes_nothing(be: &dyn Backend) {
    let a = replica(be).await;
    put(&a.bucket, "d/1", b"x").await;
    let r = a
        .bucket
        .sync(SyncOptions {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.planned.len(), 1, "{r:?}");
    assert_eq!(r.pushed, 0);
    assert!(be.foreign_keys().await.is_empty());
    assert_eq!(a.bucket.head("d/1").await.unwrap().state, SyncState::Dirty);
}

/// Issue 24, 7.9: a run reports the bytes of its uploads and downloads
/// as they move, not only objects ("0/1 objects" for 45 s of a 2 GiB
/// push): the last report has every planned byte done, and a large object
/// is reported in pieces on the way (downloads on every store; uploads on
/// every store that sends in pieces: all but the memory store, which takes
/// a body whole).
pub async fn sync_reports_byte_progress_of_uploads_and_downloads(be: &dyn Backend) {
    let a = replica(be).await;
    let b = replica(be).await;
    let size = 20u64 << 20;
    let data: Vec<u8> = (0..size as u32).map(|i| (i % 251) as u8).collect();
    put(&a.bucket, "big.bin", &data).await;
    put(&a.bucket, "small.txt", b"small").await;
    let total = size + 5;
    let run = |bucket: Bucket| async move {
        let seen = Arc::new(Mutex::new(Vec::<ferry::SyncProgress>::new()));
        let sink = seen.clone();
        let progress: ferry::ProgressFn = Arc::new(move |p| sink.lock().unwrap().push(p));
        let report = bucket
            .sync_with_progress(SyncOptions::default(), Some(progress))
            .await
            .unwrap();
        let events = seen.lock().unwrap().clone();
        (report, events)
    };
    let in_pieces = |events: &[ferry::SyncProgress]| {
        events
            .iter()
            .any(|p| p.bytes_done >= 256 << 10 && p.bytes_done < size)
    };
    let (report, events) = run(a.bucket.clone()).await;
    assert_eq!(report.pushed, 2, "{report:?}");
    let last = events.last().copied().unwrap_or_default();
    assert_eq!((last.done, last.total), (2, 2), "{events:?}");
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (total, total),
        "{last:?}"
    );
    assert!(
        events.iter().all(|p| p.bytes_done <= p.bytes_total),
        "{events:?}"
    );
    if !be.remote().endpoint().starts_with("memory") {
        assert!(
            in_pieces(&events),
            "no upload progress on the way: {events:?}"
        );
    }

    let (report, events) = run(b.bucket.clone()).await;
    assert_eq!(report.pulled, 2, "{report:?}");
    let last = events.last().copied().unwrap_or_default();
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (total, total),
        "{last:?}"
    );
    assert!(
        in_pieces(&events),
        "no download progress on the way: {events:?}"
    );
    assert_eq!(read(&b.bucket, "big.bin").await, data);
}

macro_rules! all_scenarios {
    ($backend:ident: $make:expr) => {
        suite!($backend: $make;
            puts_metadata_and_deletes_propagate,
            concurrent_edits_conflict_and_resolve_keep_local,
            concurrent_edits_resolve_keep_remote,
            concurrent_edits_resolve_keep_both,
            automatic_policies_settle_conflicts,
            equal_content_on_both_sides_is_not_a_conflict,
            edit_versus_delete_is_a_conflict_both_ways,
            third_party_write_between_listing_and_push_is_a_conflict,
            push_that_landed_but_was_not_recorded_is_recognised,
            plain_client_objects_round_trip,
            lazy_pull_downloads_on_first_get,
            scopes_add_pulls_and_remove_orphans,
            an_edit_made_out_of_scope_is_pushed_when_the_scope_grows,
            unreachable_remote_mid_sync_loses_nothing,
            remote_names_that_are_not_keys_are_reported_and_skipped,
            dry_run_changes_nothing,
            sync_reports_byte_progress_of_uploads_and_downloads,
        );
    };
}

all_scenarios!(memory: super::super::backends::Memory::new());
all_scenarios!(folder: super::super::backends::Folder::new());
all_scenarios!(s3s: super::super::backends::S3Location::s3s().await);
all_scenarios!(moto: super::super::backends::S3Location::moto());
all_scenarios!(gcs: super::super::backends::GcsLocation::new());
all_scenarios!(azure: super::super::backends::AzureLocation::new().await);
all_scenarios!(webdav: super::super::backends::WebDavLocation::new().await);
all_scenarios!(webdav_apache: super::super::backends::WebDavLocation::apache().await);
all_scenarios!(webdav_nginx: super::super::backends::WebDavLocation::nginx().await);

/// The probe tells a store that enforces preconditions from one that only
/// accepts the headers; the latter still gets conflicts (by HEAD emulation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_detects_stores_that_ignore_conditional_writes() {
    let honest = super::backends::Memory::new();
    let a = replica(&honest).await;
    assert!(
        a.bucket
            .attach(honest.remote())
            .await
            .unwrap()
            .conditional_put
    );

    let liar = super::backends::Memory::new();
    liar.0.ignore_conditions(true);
    let b = replica(&liar).await;
    let probe = b.bucket.attach(liar.remote()).await.unwrap();
    assert!(
        !probe.conditional_put && !probe.conditional_delete,
        "{probe:?}"
    );
    assert_eq!(
        b.bucket.status().await.unwrap().conditional_writes,
        Some(false)
    );
    // The race still ends as a conflict, never a lost update.
    third_party_write_between_listing_and_push_is_a_conflict(&liar).await;

    let moto = super::backends::S3Location::moto();
    let m = replica(&moto).await;
    let probe = m.bucket.attach(moto.remote()).await.unwrap();
    assert!(
        probe.conditional_put,
        "moto enforces If-None-Match / If-Match: {probe:?}"
    );
}

/// Directions: upload-only never pulls, download-only never pushes; the
/// held-back changes stay visible in the states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directions_hold_back_one_side() {
    use ferry::plan::Direction;
    let be = super::backends::Memory::new();
    let a = replica(&be).await;
    put(&a.bucket, "shared", b"v0").await;
    sync(&a.bucket).await;
    let up = replica_with(
        &be,
        SyncConfig {
            direction: Direction::UploadOnly,
            ..Default::default()
        },
    )
    .await;
    let down = replica_with(
        &be,
        SyncConfig {
            direction: Direction::DownloadOnly,
            ..Default::default()
        },
    )
    .await;
    let r = sync(&up.bucket).await;
    assert_eq!(r.pulled, 0, "upload-only pulled: {r:?}");
    assert!(!up.bucket.exists("shared").await.unwrap());
    put(&up.bucket, "from-up", b"u").await;
    let r = sync(&up.bucket).await;
    assert_eq!(r.pushed, 1, "{r:?}");
    let r = sync(&down.bucket).await;
    assert_eq!(r.pulled, 2, "{r:?}");
    put(&down.bucket, "from-down", b"d").await;
    let r = sync(&down.bucket).await;
    assert_eq!(r.pushed, 0, "download-only pushed: {r:?}");
    assert_eq!(
        down.bucket.head("from-down").await.unwrap().state,
        SyncState::Dirty
    );
    assert!(be.foreign_get("from-down").await.is_none());
}

/// Pinned objects are downloaded under pinned-only; the rest are only learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_only_downloads_just_the_pinned() {
    let be = super::backends::Memory::new();
    let a = replica(&be).await;
    put(&a.bucket, "p/keep", b"keep me").await;
    put(&a.bucket, "p/skip", b"not me").await;
    sync(&a.bucket).await;
    let c = replica_with(
        &be,
        SyncConfig {
            strategy: PullStrategy::PinnedOnly,
            ..Default::default()
        },
    )
    .await;
    sync(&c.bucket).await;
    assert_eq!(c.bucket.status().await.unwrap().stale, 2);
    assert_eq!(c.bucket.pin(&["p/keep", "p/missing"]).await.unwrap(), 1);
    sync(&c.bucket).await;
    let s = c.bucket.status().await.unwrap();
    assert_eq!((s.synced, s.stale, s.cache_size), (1, 1, 7), "{s:?}");
    // A remote change to a pinned object is downloaded, not just learned.
    put(&a.bucket, "p/keep", b"keep me 2").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    assert_eq!(
        c.bucket.head("p/keep").await.unwrap().state,
        SyncState::Synced
    );
    assert_eq!(c.bucket.status().await.unwrap().cache_size, 9);
}

/// Objects written by boto3 (a stock S3 client, from the test venv) are
/// picked up with their content type and metadata, and ferry's objects read
/// back through boto3 with the right bytes, content type and metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_objects_round_trip_on_moto() {
    let be = super::backends::S3Location::moto();
    let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("FERRY_TEST_PYTHON is not set: run the suite with ./scripts/test.sh (it provides boto3)")
    });
    let boto = |script: &str| -> String {
        let prelude = format!(
            "import boto3, json, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='x', \
             aws_secret_access_key='y', region_name='us-east-1')\n\
             P = '{}/'\n",
            be.endpoint, be.prefix
        );
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    boto("s3.put_object(Bucket='ferry-test', Key=P+'in/boto.txt', Body=b'from boto3', ContentType='text/x-boto', Metadata={'origin': 'boto3'})");
    let a = replica(&be).await;
    let r = sync(&a.bucket).await;
    assert_eq!(r.pulled, 1, "{r:?}");
    let (meta, data) = a.bucket.get_bytes("in/boto.txt").await.unwrap();
    assert_eq!(&data[..], b"from boto3");
    assert_eq!(meta.content_type, "text/x-boto");
    assert_eq!(
        meta.metadata.get("origin").map(String::as_str),
        Some("boto3")
    );

    let mut opts = PutOptions {
        content_type: Some("application/x-ferry".into()),
        ..Default::default()
    };
    opts.metadata.insert("owner".into(), "ann".into());
    a.bucket
        .put("out/f.bin", b"from ferry".to_vec(), opts)
        .await
        .unwrap();
    sync(&a.bucket).await;
    let got = boto(
        "o = s3.get_object(Bucket='ferry-test', Key=P+'out/f.bin')\n\
         print(json.dumps({'body': o['Body'].read().decode(), 'type': o['ContentType'], 'meta': o['Metadata']}))",
    );
    let v: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(v["body"], "from ferry");
    assert_eq!(v["type"], "application/x-ferry");
    assert_eq!(v["meta"]["owner"], "ann");
    assert_eq!(
        v["meta"]["ferry-hash"],
        ferry::ContentHash::of(b"from ferry").to_hex().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_clock_stamps_writes_and_names_conflict_copies() {
    use std::time::{Duration, UNIX_EPOCH};
    let be = super::backends::Memory::new();
    let (a, c) = make_conflict(&be, "doc", b"from a", b"from c").await;
    // 2030-01-02T03:04:05Z, far from the machine's time.
    let at = 1_893_553_445_000;
    let clock = Arc::new(ferry::clock::ManualClock::at(at));
    c.bucket.set_clock(clock.clone());
    put(&c.bucket, "stamped", b"x").await;
    assert_eq!(
        c.bucket.head("stamped").await.unwrap().modified,
        UNIX_EPOCH + Duration::from_millis(at as u64)
    );
    let out = c.bucket.resolve("doc", Resolution::KeepBoth).await.unwrap();
    assert_eq!(
        out.renamed_to.as_deref(),
        Some("doc.conflict.20300102T030405Z")
    );
    // A second keep-both at the same instant takes the next free name.
    put(&a.bucket, "doc", b"a again").await;
    put(&c.bucket, "doc", b"c again").await;
    sync(&a.bucket).await;
    sync(&c.bucket).await;
    let out = c.bucket.resolve("doc", Resolution::KeepBoth).await.unwrap();
    assert_eq!(
        out.renamed_to.as_deref(),
        Some("doc.conflict.20300102T030405Z-2")
    );
    // The sync report is stamped by the same clock.
    clock.advance(60_000);
    let r = sync(&c.bucket).await;
    assert_eq!(
        r.timestamp,
        Some(UNIX_EPOCH + Duration::from_millis(at as u64 + 60_000))
    );
}
