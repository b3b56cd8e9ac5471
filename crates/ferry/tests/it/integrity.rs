//! Integrity: corrupt content is detected, never returned; crash garbage is collected.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;

use ferry::{Bucket, BucketConfig, Error, ObjectMeta, PutOptions, INDEX_FILE};
use tokio::io::AsyncReadExt;

use crate::{blob_files, blob_path, new_bucket, pseudo_random, reopen, tmp_files};

const KEY: &str = "photos/big.raw";

/// A bucket holding one 300 KiB object stored as a blob file.
async fn bucket_with_blob() -> (tempfile::TempDir, Bucket, ObjectMeta, Vec<u8>) {
    let (tmp, bucket) = new_bucket().await;
    let data = pseudo_random(300 * 1024, 42);
    let meta = bucket
        .put(KEY, data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert!(blob_path(bucket.dir(), &meta.hash).is_file());
    (tmp, bucket, meta, data)
}

/// `get_bytes` fails with `Corrupt` naming the key.
async fn assert_get_bytes_corrupt(bucket: &Bucket, key: &str) {
    match bucket.get_bytes(key).await {
        Err(Error::Corrupt { key: k, detail }) => {
            assert_eq!(k, key);
            assert!(!detail.is_empty());
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok((_, data)) => panic!("corrupt object read back as {} bytes", data.len()),
    }
    let err = bucket.get_bytes(key).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(err.to_string().contains(key), "{err}");
}

/// Streaming `get` either fails up front with `Corrupt`, or its body ends
/// with an `InvalidData` error carrying `Corrupt`; it never ends cleanly.
async fn assert_stream_corrupt(bucket: &Bucket, key: &str) {
    let mut obj = match bucket.get(key).await {
        Ok(obj) => obj,
        Err(Error::Corrupt { key: k, .. }) => {
            assert_eq!(k, key);
            return;
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
    };
    let mut out = Vec::new();
    let err = obj
        .body
        .read_to_end(&mut out)
        .await
        .expect_err("a corrupt stream must not end with Ok");
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    match Error::from_body_io(err) {
        Error::Corrupt { key: k, .. } => assert_eq!(k, key),
        other => panic!("expected Corrupt inside the io error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_blob_is_detected() {
    let (_tmp, bucket, meta, data) = bucket_with_blob().await;
    let path = blob_path(bucket.dir(), &meta.hash);
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes == data, "the blob file holds the content as is");
    bytes[150 * 1024] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    assert_get_bytes_corrupt(&bucket, KEY).await;
    // The stream must fail (the data is delivered before the hash check at
    // the end, but the read as a whole must not succeed).
    let mut obj = bucket.get(KEY).await.unwrap();
    let mut out = Vec::new();
    let err = obj
        .body
        .read_to_end(&mut out)
        .await
        .expect_err("must not be Ok");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains(KEY), "{err}");
    assert_stream_corrupt(&bucket, KEY).await;
    // head still works: the metadata is fine, only the content is not.
    assert_eq!(bucket.head(KEY).await.unwrap(), meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_last_byte_in_blob_is_detected() {
    let (_tmp, bucket, meta, _) = bucket_with_blob().await;
    let path = blob_path(bucket.dir(), &meta.hash);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&path, &bytes).unwrap();
    assert_get_bytes_corrupt(&bucket, KEY).await;
    assert_stream_corrupt(&bucket, KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_is_detected() {
    let (_tmp, bucket, meta, _) = bucket_with_blob().await;
    let path = blob_path(bucket.dir(), &meta.hash);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(meta.size - 1000).unwrap();
    drop(file);
    assert_get_bytes_corrupt(&bucket, KEY).await;
    assert_stream_corrupt(&bucket, KEY).await;
    // Truncated to nothing.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_get_bytes_corrupt(&bucket, KEY).await;
    assert_stream_corrupt(&bucket, KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_blob_is_detected() {
    let (_tmp, bucket, meta, _) = bucket_with_blob().await;
    let path = blob_path(bucket.dir(), &meta.hash);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, b"extra").unwrap();
    drop(file);
    assert_get_bytes_corrupt(&bucket, KEY).await;
    assert_stream_corrupt(&bucket, KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_blob_is_detected() {
    let (_tmp, bucket, meta, _) = bucket_with_blob().await;
    fs::remove_file(blob_path(bucket.dir(), &meta.hash)).unwrap();
    match bucket.get(KEY).await {
        Err(Error::Corrupt { key, detail }) => {
            assert_eq!(key, KEY);
            assert!(detail.contains("missing"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_get_bytes_corrupt(&bucket, KEY).await;
}

/// Replaces the content of every small blob in the index with `data`.
fn corrupt_index_content(bucket: &Bucket, data: &[u8]) {
    let conn = rusqlite::Connection::open(bucket.dir().join(INDEX_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let n = conn
        .execute("UPDATE small_blobs SET data = ?1", [data])
        .unwrap();
    assert!(n >= 1, "the inline object has a row in small_blobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_inline_content_in_the_index_is_detected() {
    let (_tmp, bucket) = new_bucket().await;
    let meta = bucket
        .put("small.txt", "the original text", PutOptions::default())
        .await
        .unwrap();
    assert!(
        blob_files(bucket.dir()).is_empty(),
        "small content lives in the index"
    );

    // Same length, one character changed.
    corrupt_index_content(&bucket, b"the original texT");
    assert_get_bytes_corrupt(&bucket, "small.txt").await;
    assert_stream_corrupt(&bucket, "small.txt").await;

    // Different length.
    corrupt_index_content(&bucket, b"short");
    assert_get_bytes_corrupt(&bucket, "small.txt").await;
    assert_eq!(bucket.head("small.txt").await.unwrap(), meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inline_content_in_the_index_is_detected() {
    let (_tmp, bucket) = new_bucket().await;
    bucket
        .put("small.txt", "text", PutOptions::default())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(bucket.dir().join(INDEX_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(conn.execute("DELETE FROM small_blobs", []).unwrap(), 1);
    assert_get_bytes_corrupt(&bucket, "small.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_collected_at_open() {
    let (_tmp, bucket, meta, data) = bucket_with_blob().await;
    let dir = bucket.dir().to_owned();
    bucket
        .put("small", "s", PutOptions::default())
        .await
        .unwrap();
    drop(bucket);

    // What a crashed writer leaves: an unlocked temp file, and a blob that
    // was renamed into place but never committed.
    let stray_tmp = dir.join("tmp").join("12345-00000000deadbeef.tmp");
    fs::write(&stray_tmp, vec![1u8; 4096]).unwrap();
    let stray_name = format!("ab{}", "0123456789abcdef".repeat(4).split_at(2).1);
    assert_eq!(stray_name.len(), 64);
    let stray_blob = dir.join("blobs").join("ab").join(&stray_name);
    fs::create_dir_all(stray_blob.parent().unwrap()).unwrap();
    fs::write(&stray_blob, vec![2u8; 100 * 1024]).unwrap();
    // A file whose name is not a hash is not the collector's business.
    let not_a_hash = dir.join("blobs").join("ab").join("README");
    fs::write(&not_a_hash, b"keep").unwrap();
    // Without a crash (every opener closed), an open does not walk the
    // blobs: the stray blob stays until a crash or `collect_garbage`.
    let bucket = Bucket::open(&dir).await.unwrap();
    assert!(stray_blob.exists(), "a clean open is cheap");
    drop(bucket);
    // The crashed process's open marker (unlocked: nobody holds it).
    fs::write(dir.join("open").join("12345-00000000deadbeef"), b"").unwrap();

    let bucket = Bucket::open(&dir).await.unwrap();
    assert!(!stray_tmp.exists(), "stray temp file must be collected");
    assert!(!stray_blob.exists(), "unreferenced blob must be collected");
    assert!(not_a_hash.exists());
    assert!(tmp_files(&dir).is_empty());
    assert_eq!(
        fs::read_dir(dir.join("open")).unwrap().count(),
        1,
        "ours only"
    );
    // Referenced content is untouched.
    assert!(blob_path(&dir, &meta.hash).is_file());
    assert!(bucket.get_bytes(KEY).await.unwrap().1[..] == data[..]);
    assert_eq!(&bucket.get_bytes("small").await.unwrap().1[..], b"s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_garbage_reports_what_it_removed() {
    let (_tmp, bucket, meta, _) = bucket_with_blob().await;
    let dir = bucket.dir().to_owned();
    fs::write(dir.join("tmp").join("1-1.tmp"), b"t").unwrap();
    fs::write(dir.join("tmp").join("2-2.tmp"), b"t").unwrap();
    let stray = dir
        .join("blobs")
        .join("cd")
        .join(format!("cd{}", "e".repeat(62)));
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, b"x").unwrap();
    let report = bucket.collect_garbage().await.unwrap();
    assert_eq!(report, ferry::GarbageReport { blobs: 1, temps: 2 });
    assert!(!stray.exists());
    assert!(blob_path(&dir, &meta.hash).is_file());
    assert_eq!(
        bucket.collect_garbage().await.unwrap(),
        ferry::GarbageReport::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_passes_integrity_check() {
    let (_tmp, bucket, _, _) = bucket_with_blob().await;
    for i in 0..50 {
        bucket
            .put(&format!("k/{i}"), format!("v{i}"), PutOptions::default())
            .await
            .unwrap();
    }
    for i in 0..25 {
        bucket.delete(&format!("k/{i}")).await.unwrap();
    }
    let bucket = reopen(bucket).await;
    let dir = bucket.dir().to_owned();
    drop(bucket);
    let conn = rusqlite::Connection::open(dir.join(INDEX_FILE)).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, ferry::SCHEMA_VERSION);
    let present: i64 = conn
        .query_row("SELECT count(*) FROM objects WHERE present = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(present, 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_the_same_bytes_again_repairs_a_damaged_blob() {
    let (_tmp, bucket, meta, data) = bucket_with_blob().await;
    let path = blob_path(bucket.dir(), &meta.hash);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0x80;
    fs::write(&path, &bytes).unwrap();
    assert_get_bytes_corrupt(&bucket, KEY).await;
    bucket
        .put(KEY, data.clone(), ferry::PutOptions::default())
        .await
        .unwrap();
    let (_, back) = bucket.get_bytes(KEY).await.unwrap();
    assert!(back[..] == data[..]);
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The outbox holds only work not yet done: a pushed version's entry goes
/// (v4 kept every one as `acked`, so each run scanned one row per key ever
/// pushed). An index left at v4 is migrated: its acked rows dropped, its
/// small objects moved to a rowid table, their content intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_versions_leave_the_outbox_and_a_v4_index_migrates() {
    let (_tmp, bucket) = new_bucket().await;
    let remote = std::sync::Arc::new(ferry::remote::memory::MemoryRemote::new());
    bucket.attach(remote.clone()).await.unwrap();
    for i in 0..20 {
        bucket
            .put(
                &format!("k/{i}"),
                vec![i as u8; 1500],
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let r = bucket.sync(Default::default()).await.unwrap();
    assert_eq!(r.pushed, 20, "{r:?}");
    bucket
        .put("waiting", "w", PutOptions::default())
        .await
        .unwrap();
    let dir = bucket.dir().to_owned();
    drop(bucket);
    let conn = rusqlite::Connection::open(dir.join(INDEX_FILE)).unwrap();
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM outbox"),
        1,
        "only the unpushed put"
    );

    // Back to what v4 left: acked rows, small_blobs WITHOUT ROWID, no totals.
    conn.execute_batch(
        "INSERT INTO outbox (key, op, hash, state, created_ms) \
           SELECT key, 'put', hash, 'acked', 0 FROM objects WHERE key LIKE 'k/%';
         CREATE TABLE old_small (hash BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
         INSERT INTO old_small SELECT hash, data FROM small_blobs;
         DROP TABLE small_blobs;
         ALTER TABLE old_small RENAME TO small_blobs;
         DROP TRIGGER cached_bytes_insert;
         DROP TRIGGER cached_bytes_delete;
         DROP TRIGGER cached_bytes_update;
         DROP TABLE totals;
         ALTER TABLE sync_requests DROP COLUMN filter;
         DROP TABLE stamps;
         DROP TABLE blob_salts;
         ALTER TABLE journal_pending DROP COLUMN base;
         ALTER TABLE journal_pending DROP COLUMN stamp;
         DROP TABLE stamps_accepted;
         PRAGMA user_version = 4;",
    )
    .unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM outbox"), 21);
    drop(conn);

    let bucket = Bucket::open(&dir).await.unwrap();
    for i in 0..20 {
        let (_, data) = bucket.get_bytes(&format!("k/{i}")).await.unwrap();
        assert_eq!(&data[..], &vec![i as u8; 1500][..]);
    }
    drop(bucket);
    let conn = rusqlite::Connection::open(dir.join(INDEX_FILE)).unwrap();
    assert_eq!(count(&conn, "PRAGMA user_version"), ferry::SCHEMA_VERSION);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM outbox"), 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM small_blobs"), 21);
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'small_blobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
    // The cached-bytes total the triggers keep starts from the sum.
    // (each blob once: keys that share content share its bytes)
    let sum = "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM objects \
               WHERE present = 1 AND cached = 1 GROUP BY hash)";
    let total = "SELECT value FROM totals WHERE name = 'cached_bytes'";
    assert_eq!(count(&conn, total), count(&conn, sum));
    assert_eq!(count(&conn, sum), 20 * 1500 + 1);
    drop(conn);

    // ... and follows puts, overwrites, deletes and evictions.
    let bucket = Bucket::open(&dir).await.unwrap();
    bucket.attach(remote.clone()).await.unwrap();
    bucket
        .put("k/0", vec![1u8; 10], PutOptions::default())
        .await
        .unwrap();
    bucket.delete("k/1").await.unwrap();
    bucket
        .put("new", vec![1u8; 700], PutOptions::default())
        .await
        .unwrap();
    bucket.sync(Default::default()).await.unwrap();
    let freed = bucket.evict(3000).await.unwrap();
    assert!(freed >= 3000, "{freed}");
    let used = bucket.cache_usage().await.unwrap().used;
    drop(bucket);
    let conn = rusqlite::Connection::open(dir.join(INDEX_FILE)).unwrap();
    assert_eq!(count(&conn, total), count(&conn, sum));
    assert_eq!(used as i64, count(&conn, sum));
    assert_eq!(used as i64, 18 * 1500 + 1 + 10 + 700 - freed as i64);
}

/// Keys with the same content share one blob, and the cache counts its
/// bytes once: added with the first reference, removed with the last.
#[tokio::test]
async fn shared_content_is_counted_once_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::create(dir.path().join("b"), BucketConfig::default())
        .await
        .unwrap();
    let used = |b: &Bucket| {
        let b = b.clone();
        async move { b.cache_usage().await.unwrap().used }
    };
    let big = vec![7u8; 100_000];
    for key in ["a", "b", "c"] {
        bucket
            .put(key, big.clone(), PutOptions::default())
            .await
            .unwrap();
    }
    bucket
        .put("s1", "small", PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("s2", "small", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(used(&bucket).await, 100_000 + 5);
    assert_eq!(bucket.status().await.unwrap().cache_size, 100_000 + 5);
    bucket.delete("a").await.unwrap();
    bucket.delete("s1").await.unwrap();
    assert_eq!(used(&bucket).await, 100_000 + 5, "still referenced");
    // Overwriting one sharer with other content keeps the shared blob.
    bucket
        .put("b", vec![8u8; 10], PutOptions::default())
        .await
        .unwrap();
    assert_eq!(used(&bucket).await, 100_000 + 5 + 10);
    bucket.delete("c").await.unwrap();
    assert_eq!(used(&bucket).await, 5 + 10, "the last reference is gone");
    // A second key taking the remaining content of another.
    bucket
        .put("d", vec![8u8; 10], PutOptions::default())
        .await
        .unwrap();
    assert_eq!(used(&bucket).await, 5 + 10);
}
