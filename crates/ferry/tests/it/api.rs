//! The object API: round trips, metadata, errors, persistence, dedup, GC, concurrency.

use ferry::{
    Body, Bucket, BucketConfig, ContentHash, Error, Metadata, MetadataError, PutOptions, SyncState,
    DEFAULT_CONTENT_TYPE, MAX_METADATA_BYTES,
};
use tokio::io::AsyncReadExt;

use crate::{blob_files, blob_path, new_bucket, pseudo_random, reopen, INLINE};

fn meta_of(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_metadata(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions {
        metadata: meta_of(pairs),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_exists_delete_round_trip() {
    let (_tmp, bucket) = new_bucket().await;
    let put = bucket
        .put("docs/hello.txt", "hello, world", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.key, "docs/hello.txt");
    assert_eq!(put.size, 12);
    assert_eq!(put.hash, ContentHash::of(b"hello, world"));
    assert_eq!(
        put.hash.to_hex(),
        blake3::hash(b"hello, world").to_hex().as_str()
    );

    let (meta, data) = bucket.get_bytes("docs/hello.txt").await.unwrap();
    assert_eq!(&data[..], b"hello, world");
    assert_eq!(meta, put);
    assert_eq!(bucket.head("docs/hello.txt").await.unwrap(), put);
    assert!(bucket.exists("docs/hello.txt").await.unwrap());

    // The streaming get gives the same bytes and metadata.
    let mut obj = bucket.get("docs/hello.txt").await.unwrap();
    assert_eq!(obj.meta, put);
    let mut streamed = Vec::new();
    obj.body.read_to_end(&mut streamed).await.unwrap();
    assert_eq!(streamed, b"hello, world");

    assert!(bucket.delete("docs/hello.txt").await.unwrap());
    assert!(!bucket.exists("docs/hello.txt").await.unwrap());
    assert!(matches!(
        bucket.head("docs/hello.txt").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_object_round_trips_as_a_blob_file() {
    let (_tmp, bucket) = new_bucket().await;
    let data = pseudo_random(3 * 1024 * 1024 + 17, 1);
    let put = bucket
        .put("big.bin", data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.size, data.len() as u64);
    assert_eq!(put.hash, ContentHash::of(&data));
    assert!(blob_path(bucket.dir(), &put.hash).is_file());
    assert_eq!(blob_files(bucket.dir()).len(), 1);
    let (meta, got) = bucket.get_bytes("big.bin").await.unwrap();
    assert_eq!(meta, put);
    assert!(got[..] == data[..], "content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_object_round_trips() {
    let (_tmp, bucket) = new_bucket().await;
    let put = bucket
        .put("empty", Body::empty(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.size, 0);
    assert_eq!(put.hash, ContentHash::of(b""));
    let (meta, data) = bucket.get_bytes("empty").await.unwrap();
    assert_eq!(meta.size, 0);
    assert!(data.is_empty());
    let put2 = bucket
        .put("empty2", Vec::new(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put2.hash, put.hash);
    assert!(bucket.get_bytes("empty2").await.unwrap().1.is_empty());
    assert!(bucket.exists("empty").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_keys_round_trip() {
    let (_tmp, bucket) = new_bucket().await;
    let keys = [
        "données/日本語/😀.txt",
        "Ünïcödé",
        "日本語/ファイル",
        "emoji/🦀/🚀",
    ];
    for (i, key) in keys.iter().enumerate() {
        bucket
            .put(key, format!("content {i}"), PutOptions::default())
            .await
            .unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        let (meta, data) = bucket.get_bytes(key).await.unwrap();
        assert_eq!(meta.key, *key);
        assert_eq!(data, format!("content {i}").as_bytes());
    }
    assert_eq!(
        bucket
            .head("données/日本語/😀.txt")
            .await
            .unwrap()
            .content_type,
        "text/plain"
    );
    let listed: Vec<String> = bucket
        .list_all("données/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["données/日本語/😀.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_is_guessed_from_the_extension() {
    let (_tmp, bucket) = new_bucket().await;
    for (key, expected) in [
        ("a.txt", "text/plain"),
        ("dir/data.json", "application/json"),
        ("page.html", "text/html"),
        ("noext", DEFAULT_CONTENT_TYPE),
        ("dir.d/noext", DEFAULT_CONTENT_TYPE),
    ] {
        let put = bucket.put(key, "x", PutOptions::default()).await.unwrap();
        assert_eq!(put.content_type, expected, "{key}");
        assert_eq!(
            bucket.head(key).await.unwrap().content_type,
            expected,
            "{key}"
        );
    }
    assert_eq!(DEFAULT_CONTENT_TYPE, "application/octet-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_content_type_is_kept() {
    let (_tmp, bucket) = new_bucket().await;
    let opts = PutOptions {
        content_type: Some("application/x-custom; charset=utf-8".into()),
        ..Default::default()
    };
    let put = bucket.put("a.txt", "x", opts).await.unwrap();
    assert_eq!(put.content_type, "application/x-custom; charset=utf-8");
    let got = bucket.get("a.txt").await.unwrap().meta;
    assert_eq!(got.content_type, "application/x-custom; charset=utf-8");

    // An empty or control-laden content type is rejected, not stored.
    for bad in ["", "  ", "text/plain\n"] {
        let opts = PutOptions {
            content_type: Some(bad.into()),
            ..Default::default()
        };
        match bucket.put("b.txt", "x", opts).await {
            Err(Error::InvalidMetadata(MetadataError::BadContentType { value })) => {
                assert_eq!(value, bad)
            }
            other => panic!("content type {bad:?}: expected BadContentType, got {other:?}"),
        }
    }
    assert!(!bucket.exists("b.txt").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_metadata_round_trips_with_lowercased_names() {
    let (tmp, bucket) = new_bucket().await;
    let opts = with_metadata(&[
        ("X-Author", "Ada Lovelace"),
        ("color", "blue"),
        ("Cache.Key_1", "é ü"),
    ]);
    let put = bucket.put("m.txt", "x", opts).await.unwrap();
    let expected = meta_of(&[
        ("x-author", "Ada Lovelace"),
        ("color", "blue"),
        ("cache.key_1", "é ü"),
    ]);
    assert_eq!(put.metadata, expected);
    assert_eq!(bucket.head("m.txt").await.unwrap().metadata, expected);
    assert_eq!(
        bucket.get_bytes("m.txt").await.unwrap().0.metadata,
        expected
    );
    let bucket = reopen(bucket).await;
    assert_eq!(bucket.head("m.txt").await.unwrap().metadata, expected);
    drop(tmp);
}

/// Puts with `pairs` as metadata, expecting the error `check` accepts and a
/// message containing `needle`; nothing may be stored.
async fn metadata_rejected(
    bucket: &Bucket,
    pairs: &[(&str, &str)],
    check: impl Fn(&MetadataError) -> bool,
    needle: &str,
) {
    match bucket.put("meta-reject", "x", with_metadata(pairs)).await {
        Err(Error::InvalidMetadata(e)) => {
            assert!(check(&e), "wrong metadata error for {pairs:?}: {e:?}");
            assert!(
                e.to_string().contains(needle),
                "message should mention {needle:?}: {e}"
            );
        }
        other => panic!("metadata {pairs:?}: expected InvalidMetadata, got {other:?}"),
    }
    assert!(!bucket.exists("meta-reject").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_rules_are_enforced_with_messages() {
    let (_tmp, bucket) = new_bucket().await;
    metadata_rejected(
        &bucket,
        &[("näme", "v")],
        |e| matches!(e, MetadataError::BadName { name } if name == "näme"),
        "ASCII",
    )
    .await;
    metadata_rejected(
        &bucket,
        &[("my name", "v")],
        |e| matches!(e, MetadataError::BadName { name } if name == "my name"),
        "\"my name\"",
    )
    .await;
    metadata_rejected(
        &bucket,
        &[("", "v")],
        |e| matches!(e, MetadataError::EmptyName),
        "empty",
    )
    .await;
    metadata_rejected(
        &bucket,
        &[("Color", "red"), ("color", "blue")],
        |e| matches!(e, MetadataError::DuplicateName { name } if name == "color"),
        "twice",
    )
    .await;
    metadata_rejected(
        &bucket,
        &[("note", "line1\nline2")],
        |e| matches!(e, MetadataError::BadValue { name } if name == "note"),
        "control",
    )
    .await;
    metadata_rejected(
        &bucket,
        &[("note", "nul\0")],
        |e| matches!(e, MetadataError::BadValue { .. }),
        "control",
    )
    .await;
    // Names and values together: 1 + 1792 = 1793 bytes.
    let big = "v".repeat(MAX_METADATA_BYTES);
    metadata_rejected(
        &bucket,
        &[("a", &big)],
        |e| matches!(e, MetadataError::TooLarge { size: 1793 }),
        "1792",
    )
    .await;
    // Spread over several entries, multibyte values counted in bytes: 3 * (2 + 300*2) = 1806.
    let wide = "é".repeat(300);
    metadata_rejected(
        &bucket,
        &[("k1", &wide), ("k2", &wide), ("k3", &wide)],
        |e| matches!(e, MetadataError::TooLarge { size: 1806 }),
        "too large",
    )
    .await;
    // ferry's own names are reserved, in any case.
    metadata_rejected(
        &bucket,
        &[("Ferry-Hash", "0")],
        |e| matches!(e, MetadataError::Reserved { .. }),
        "reserved",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_exactly_the_limit_is_accepted() {
    let (_tmp, bucket) = new_bucket().await;
    assert_eq!(MAX_METADATA_BYTES, 1792);
    let value = "v".repeat(1792 - 4);
    let put = bucket
        .put("k", "x", with_metadata(&[("Name", &value)]))
        .await
        .unwrap();
    assert_eq!(put.metadata, meta_of(&[("name", &value)]));
    // Two entries summing to 1792.
    let a = "a".repeat(1000);
    let b = "b".repeat(790);
    let put = bucket
        .put("k2", "x", with_metadata(&[("x", &a), ("y", &b)]))
        .await
        .unwrap();
    assert_eq!(put.metadata.len(), 2);
    assert_eq!(bucket.head("k2").await.unwrap().metadata, put.metadata);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_content_and_metadata() {
    let (_tmp, bucket) = new_bucket().await;
    bucket
        .put("k.txt", "first", with_metadata(&[("v", "1")]))
        .await
        .unwrap();
    let second = bucket
        .put("k.txt", "second!", with_metadata(&[("w", "2")]))
        .await
        .unwrap();
    let (meta, data) = bucket.get_bytes("k.txt").await.unwrap();
    assert_eq!(&data[..], b"second!");
    assert_eq!(meta, second);
    assert_eq!(meta.size, 7);
    assert_eq!(meta.metadata, meta_of(&[("w", "2")]));
    // Inline -> blob -> inline.
    let large = pseudo_random(INLINE * 2, 9);
    bucket
        .put("k.txt", large.clone(), PutOptions::default())
        .await
        .unwrap();
    assert!(bucket.get_bytes("k.txt").await.unwrap().1[..] == large[..]);
    bucket
        .put("k.txt", "small again", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        &bucket.get_bytes("k.txt").await.unwrap().1[..],
        b"small again"
    );
    assert_eq!(bucket.list_all("").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_true_then_false() {
    let (_tmp, bucket) = new_bucket().await;
    assert!(!bucket.delete("never").await.unwrap());
    bucket.put("k", "v", PutOptions::default()).await.unwrap();
    assert!(bucket.delete("k").await.unwrap());
    assert!(!bucket.delete("k").await.unwrap());
    assert!(!bucket.exists("k").await.unwrap());
    // A deleted key can be written again.
    bucket
        .put("k", "again", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(&bucket.get_bytes("k").await.unwrap().1[..], b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_missing_key_is_not_found() {
    let (_tmp, bucket) = new_bucket().await;
    match bucket.get("missing/key").await {
        Err(Error::NotFound { key }) => assert_eq!(key, "missing/key"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        bucket.get_bytes("missing/key").await,
        Err(Error::NotFound { .. })
    ));
    let err = bucket.head("missing/key").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(err.to_string().contains("missing/key"), "{err}");
    assert!(!bucket.exists("missing/key").await.unwrap());
    // A deleted object is missing too.
    bucket
        .put("gone", "x", PutOptions::default())
        .await
        .unwrap();
    bucket.delete("gone").await.unwrap();
    assert!(matches!(
        bucket.get("gone").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_object_state_is_dirty() {
    let (_tmp, bucket) = new_bucket().await;
    let put = bucket.put("k", "v", PutOptions::default()).await.unwrap();
    assert_eq!(put.state, SyncState::Dirty);
    assert_eq!(bucket.head("k").await.unwrap().state, SyncState::Dirty);
    let large = bucket
        .put("big", vec![1u8; INLINE + 1], PutOptions::default())
        .await
        .unwrap();
    assert_eq!(large.state, SyncState::Dirty);
    assert_eq!(
        bucket.list_all("").await.unwrap()[0].state,
        SyncState::Dirty
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_persists_across_reopen() {
    let (_tmp, bucket) = new_bucket().await;
    let large = pseudo_random(200 * 1024, 3);
    let small = bucket
        .put("small.txt", "small", with_metadata(&[("a", "b")]))
        .await
        .unwrap();
    let big = bucket
        .put("big.bin", large.clone(), PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("deleted", "x", PutOptions::default())
        .await
        .unwrap();
    bucket.delete("deleted").await.unwrap();
    let device = bucket.device_id().to_owned();

    let bucket = reopen(bucket).await;
    assert_eq!(bucket.device_id(), device);
    assert_eq!(bucket.config(), &BucketConfig::default());
    let (meta, data) = bucket.get_bytes("small.txt").await.unwrap();
    assert_eq!((meta, &data[..]), (small, &b"small"[..]));
    let (meta, data) = bucket.get_bytes("big.bin").await.unwrap();
    assert_eq!(meta, big);
    assert!(data[..] == large[..]);
    assert!(!bucket.exists("deleted").await.unwrap());
    assert_eq!(bucket.list_all("").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_threshold_is_kept_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let bucket = Bucket::create(
        &dir,
        BucketConfig {
            inline_threshold: 10,
        },
    )
    .await
    .unwrap();
    let put = bucket
        .put("k", "eleven byte", PutOptions::default())
        .await
        .unwrap();
    assert!(
        blob_path(&dir, &put.hash).is_file(),
        "11 bytes > threshold 10: a blob file"
    );
    let bucket = reopen(bucket).await;
    assert_eq!(bucket.config().inline_threshold, 10);
    let put = bucket
        .put("k2", "twelve bytes", PutOptions::default())
        .await
        .unwrap();
    assert!(blob_path(&dir, &put.hash).is_file());
    assert_eq!(&bucket.get_bytes("k").await.unwrap().1[..], b"eleven byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_on_an_existing_bucket_is_already_exists() {
    let (_tmp, bucket) = new_bucket().await;
    bucket.put("k", "v", PutOptions::default()).await.unwrap();
    let dir = bucket.dir().to_owned();
    match Bucket::create(&dir, BucketConfig::default()).await {
        Err(Error::AlreadyExists { path }) => assert_eq!(path, dir),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // Also once the first handle is closed, and the data is untouched.
    drop(bucket);
    assert!(matches!(
        Bucket::create(&dir, BucketConfig::default()).await,
        Err(Error::AlreadyExists { .. })
    ));
    let bucket = Bucket::open(&dir).await.unwrap();
    assert_eq!(&bucket.get_bytes("k").await.unwrap().1[..], b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_of_an_empty_dir_is_no_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    match Bucket::open(tmp.path()).await {
        Err(Error::NoBucket { path }) => assert_eq!(path, tmp.path()),
        other => panic!("expected NoBucket, got {other:?}"),
    }
    // Opening did not turn the directory into a bucket.
    assert!(!tmp.path().join(ferry::INDEX_FILE).exists());
    assert!(matches!(
        Bucket::open(tmp.path().join("does-not-exist")).await,
        Err(Error::NoBucket { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_under_two_keys_is_stored_once() {
    let (_tmp, bucket) = new_bucket().await;
    let data = pseudo_random(100 * 1024, 5);
    let a = bucket
        .put("a.bin", data.clone(), PutOptions::default())
        .await
        .unwrap();
    let b = bucket
        .put("b.bin", data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(
        blob_files(bucket.dir()),
        vec![blob_path(bucket.dir(), &a.hash)]
    );
    assert!(
        crate::tmp_files(bucket.dir()).is_empty(),
        "the duplicate temp file is dropped"
    );

    // Deleting one key keeps the other readable, also after collection and reopen.
    assert!(bucket.delete("a.bin").await.unwrap());
    assert!(bucket.get_bytes("b.bin").await.unwrap().1[..] == data[..]);
    bucket.collect_garbage().await.unwrap();
    assert!(bucket.get_bytes("b.bin").await.unwrap().1[..] == data[..]);
    let bucket = reopen(bucket).await;
    assert_eq!(blob_files(bucket.dir()).len(), 1);
    assert!(bucket.get_bytes("b.bin").await.unwrap().1[..] == data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_small_content_under_two_keys_survives_deleting_one() {
    let (_tmp, bucket) = new_bucket().await;
    bucket
        .put("a", "shared", PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("b", "shared", PutOptions::default())
        .await
        .unwrap();
    bucket.delete("a").await.unwrap();
    assert_eq!(&bucket.get_bytes("b").await.unwrap().1[..], b"shared");
    bucket
        .put("b", "changed", PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("c", "shared", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(&bucket.get_bytes("c").await.unwrap().1[..], b"shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_of_overwritten_or_deleted_object_is_collected() {
    let (_tmp, bucket) = new_bucket().await;
    let dir = bucket.dir().to_owned();
    let v1 = pseudo_random(300 * 1024, 11);
    let v2 = pseudo_random(300 * 1024, 12);
    let other = pseudo_random(150 * 1024, 13);
    let m1 = bucket
        .put("x.bin", v1, PutOptions::default())
        .await
        .unwrap();
    let mo = bucket
        .put("y.bin", other, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(blob_files(&dir).len(), 2);

    // Overwrite: the writer collects the old blob right after the commit,
    // after answering; any later write is answered only once that is done.
    let m2 = bucket
        .put("x.bin", v2.clone(), PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("barrier-1", "b", PutOptions::default())
        .await
        .unwrap();
    assert!(
        !blob_path(&dir, &m1.hash).exists(),
        "old blob must be collected"
    );
    assert!(blob_path(&dir, &m2.hash).is_file());
    assert!(bucket.get_bytes("x.bin").await.unwrap().1[..] == v2[..]);

    // Delete: same guarantee, observed through an explicit collection (which
    // takes the index write lock) rather than another write.
    assert!(bucket.delete("y.bin").await.unwrap());
    let report = bucket.collect_garbage().await.unwrap();
    assert_eq!(report.temps, 0);
    assert!(
        !blob_path(&dir, &mo.hash).exists(),
        "deleted object's blob must be collected"
    );

    // Delete the last large object; closing the bucket waits for the writer.
    assert!(bucket.delete("x.bin").await.unwrap());
    drop(bucket);
    assert!(
        blob_files(&dir).is_empty(),
        "blobs left: {:?}",
        blob_files(&dir)
    );
    let bucket = Bucket::open(&dir).await.unwrap();
    assert_eq!(bucket.list_all("").await.unwrap().len(), 1);
    assert_eq!(
        bucket.collect_garbage().await.unwrap(),
        ferry::GarbageReport::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_garbage_removes_every_unreferenced_blob() {
    let (_tmp, bucket) = new_bucket().await;
    let dir = bucket.dir().to_owned();
    let mut hashes = Vec::new();
    for i in 0..4 {
        let m = bucket
            .put(
                &format!("o{i}"),
                pseudo_random(70 * 1024, 100 + i),
                PutOptions::default(),
            )
            .await
            .unwrap();
        hashes.push(m.hash);
    }
    for i in 0..4 {
        bucket.delete(&format!("o{i}")).await.unwrap();
    }
    bucket.collect_garbage().await.unwrap();
    assert!(
        blob_files(&dir).is_empty(),
        "blobs left: {:?}",
        blob_files(&dir)
    );
    assert!(bucket.list_all("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_from_32_tasks_all_land() {
    let (_tmp, bucket) = new_bucket().await;
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            // Every fourth task writes a blob-sized object.
            let len = if i % 4 == 0 {
                INLINE + 1000 + i as usize
            } else {
                100 + i as usize
            };
            let data = pseudo_random(len, 1000 + i);
            let meta = bucket
                .put(&format!("task/{i:02}"), data.clone(), PutOptions::default())
                .await
                .unwrap();
            (i, data, meta)
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    let listed = bucket.list_all("task/").await.unwrap();
    assert_eq!(listed.len(), 32);
    for (i, data, meta) in written {
        assert_eq!(listed[i as usize], meta);
        let (got_meta, got) = bucket.get_bytes(&format!("task/{i:02}")).await.unwrap();
        assert_eq!(got_meta, meta);
        assert!(got[..] == data[..], "task {i} content differs");
    }
    assert_eq!(blob_files(bucket.dir()).len(), 8);
    // And they are all durable.
    let bucket = reopen(bucket).await;
    assert_eq!(bucket.list_all("task/").await.unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_directory_see_each_others_writes() {
    let (_tmp, a) = new_bucket().await;
    let b = Bucket::open(a.dir()).await.unwrap();
    a.put("from-a", "1", PutOptions::default()).await.unwrap();
    b.put("from-b", "2", PutOptions::default()).await.unwrap();
    assert_eq!(&b.get_bytes("from-a").await.unwrap().1[..], b"1");
    assert_eq!(&a.get_bytes("from-b").await.unwrap().1[..], b"2");
}

/// `delete_if`: only the current content's hash deletes; an absent key or
/// another version fails the condition and deletes nothing; a put racing a
/// conditional delete always stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_deletes_hold_against_the_index() {
    let (_tmp, bucket) = new_bucket().await;
    let first = bucket
        .put("k", b"one".to_vec(), PutOptions::default())
        .await
        .unwrap();
    let second = bucket
        .put("k", b"two".to_vec(), PutOptions::default())
        .await
        .unwrap();
    // Another version's hash: refused, nothing deleted.
    let stale = bucket.delete_if("k", first.hash).await.unwrap_err();
    assert!(
        matches!(stale, Error::PreconditionFailed { ref key } if key == "k"),
        "{stale}"
    );
    assert_eq!(&bucket.get_bytes("k").await.unwrap().1[..], b"two");
    // An absent key fails the condition too.
    let absent = bucket.delete_if("none", first.hash).await.unwrap_err();
    assert!(
        matches!(absent, Error::PreconditionFailed { .. }),
        "{absent}"
    );
    // The current hash: deleted.
    bucket.delete_if("k", second.hash).await.unwrap();
    assert!(!bucket.exists("k").await.unwrap());
    // Of racing conditional deletes and a put, the put either lands after
    // the delete or makes the delete fail: never a delete of the new content.
    for round in 0..20u8 {
        let v = bucket
            .put("r", vec![round], PutOptions::default())
            .await
            .unwrap();
        let (b1, b2) = (bucket.clone(), bucket.clone());
        let del = tokio::spawn(async move { b1.delete_if("r", v.hash).await });
        let put =
            tokio::spawn(async move { b2.put("r", vec![round, 1], PutOptions::default()).await });
        let deleted = del.await.unwrap();
        put.await.unwrap().unwrap();
        // The put always stands: it came before the delete (which then
        // failed) or after it.
        assert_eq!(&bucket.get_bytes("r").await.unwrap().1[..], &[round, 1]);
        if let Err(e) = deleted {
            assert!(matches!(e, Error::PreconditionFailed { .. }), "{e}");
        }
    }
}

/// `put_if`: a create succeeds once, a replace must name the current
/// content, and of many racing replaces of one version exactly one wins;
/// a failed condition writes nothing (no row, no blob).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_puts_are_atomic_against_the_index() {
    use ferry::PutCondition;
    let (_tmp, bucket) = new_bucket().await;
    let big = pseudo_random(INLINE * 4, 9);
    let first = bucket
        .put_if(
            "k",
            big.clone(),
            PutOptions::default(),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    let blobs = blob_files(bucket.dir()).len();
    let again = bucket
        .put_if(
            "k",
            pseudo_random(INLINE * 4, 10),
            PutOptions::default(),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::PreconditionFailed { ref key } if key == "k"),
        "{again}"
    );
    let stale = bucket
        .put_if(
            "k",
            b"x".to_vec(),
            PutOptions::default(),
            PutCondition::IfHash(ContentHash::of(b"not it")),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed { .. }), "{stale}");
    assert_eq!(bucket.head("k").await.unwrap().hash, first.hash);
    assert_eq!(
        blob_files(bucket.dir()).len(),
        blobs,
        "a refused put leaves no blob"
    );
    let missing = bucket
        .put_if(
            "absent",
            b"x".to_vec(),
            PutOptions::default(),
            PutCondition::IfHash(first.hash),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, Error::PreconditionFailed { .. }),
        "{missing}"
    );
    assert!(!bucket.exists("absent").await.unwrap());

    let mut racers = Vec::new();
    for i in 0..16u8 {
        let b = bucket.clone();
        let base = first.hash;
        racers.push(tokio::spawn(async move {
            b.put_if(
                "k",
                vec![i; 100],
                PutOptions::default(),
                PutCondition::IfHash(base),
            )
            .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::PreconditionFailed { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}
