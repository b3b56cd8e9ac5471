//! Listings come in pages, and a sync reads them a window at a time.

use std::collections::BTreeSet;

use ferry::remote::folder::FolderRemote;
use ferry::remote::memory::MemoryRemote;
use ferry::remote::{Precondition, PutRequest, Remote, RemoteBody};
use ferry::{Bucket, BucketConfig, ContentHash, PutOptions, SyncConfig, SyncOptions};

fn request(key: &str) -> PutRequest {
    PutRequest {
        key: key.to_owned(),
        content_type: "text/plain".into(),
        metadata: Default::default(),
        hash: ContentHash::of(b"x"),
        size: 1,
        mtime_ms: 0,
        device: "dev".into(),
        base: "none".into(),
        sealed: false,
        stamp: None,
        progress: Default::default(),
    }
}

/// Names whose order as keys differs from the order of a naive folder walk
/// (`a.b` sorts before `a/x`, `a-b` before both), across many folders.
fn tricky_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for d in 0..23 {
        for f in 0..100 {
            keys.insert(format!("d{d:02}/f{f:03}"));
        }
    }
    for k in [
        "a", "a.b", "a-b", "a/x", "a/x.y", "a/x/z", "a0", "b/c/d/e", "b.c",
    ] {
        keys.insert(k.to_owned());
    }
    keys.remove("a");
    keys.remove("a/x");
    keys
}

async fn pages_in_key_order(remote: &dyn Remote, keys: &BTreeSet<String>, page_max: usize) {
    for key in keys {
        remote
            .put(
                &request(key),
                RemoteBody::Bytes(bytes::Bytes::from_static(b"x")),
                Precondition::IfAbsent,
            )
            .await
            .unwrap();
    }
    for prefix in ["", "d07/", "d1", "a"] {
        let mut seen: Vec<String> = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = remote.list_page(prefix, token).await.unwrap();
            assert!(page.objects.len() <= page_max, "{}", page.objects.len());
            seen.extend(page.objects.into_iter().map(|o| o.key));
            pages += 1;
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let want: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        assert_eq!(
            seen, want,
            "prefix {prefix:?}: every key once, in key order"
        );
        if prefix.is_empty() {
            assert!(pages > 2, "{pages} pages");
        }
    }
    let all = remote.list("").await.unwrap();
    assert_eq!(all.len(), keys.len());
}

#[tokio::test]
async fn folder_listing_pages_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let remote = FolderRemote::new(dir.path().join("r")).unwrap();
    pages_in_key_order(&remote, &tricky_keys(), 1000).await;
}

#[tokio::test]
async fn memory_listing_pages_in_key_order() {
    pages_in_key_order(&MemoryRemote::new(), &tricky_keys(), 1000).await;
}

/// A full reconcile spills the listing to a temp file and removes it; a
/// spill left by a crashed run is collected.
#[tokio::test]
async fn listing_spill_is_removed_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::create(dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    bucket
        .set_sync_config(SyncConfig {
            window_keys: 2,
            ..SyncConfig::default()
        })
        .await
        .unwrap();
    let remote = MemoryRemote::new();
    bucket
        .attach(std::sync::Arc::new(remote.clone()))
        .await
        .unwrap();
    for i in 0..7 {
        bucket
            .put(&format!("k{i}"), vec![i], PutOptions::default())
            .await
            .unwrap();
    }
    let r = bucket
        .sync(SyncOptions {
            full: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.pushed, 7, "{r:?}");
    let tmp = dir.path().join(".ferry/tmp");
    let leftovers: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A crashed run's spill (no process holds its lock) goes at the next
    // garbage collection.
    std::fs::write(tmp.join("listing-1-0000000000000000.tmp"), b"x").unwrap();
    bucket.collect_garbage().await.unwrap();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let r = bucket
        .sync(SyncOptions {
            full: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((r.pushed, r.pulled), (0, 0), "{r:?}");
}
