//! The heavy tier: runs too large for the default suite (`./scripts/test.sh
//! --heavy` runs it, in release mode). Each test asserts behaviour at scale,
//! never a time (speed and memory are the benchmark's).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use ferry::remote::memory::MemoryRemote;
use ferry::{Bucket, BucketConfig, PutOptions, SyncConfig, SyncOptions};

/// Objects of the scale run (override with `FERRY_HEAVY_OBJECTS`).
fn objects() -> usize {
    std::env::var("FERRY_HEAVY_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

async fn replica(store: &MemoryRemote) -> (tempfile::TempDir, Bucket) {
    let dir = tempfile::tempdir().unwrap();
    let b = Bucket::create(dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    b.set_sync_config(SyncConfig {
        push_concurrency: 64,
        ..SyncConfig::default()
    })
    .await
    .unwrap();
    b.attach(Arc::new(store.clone())).await.unwrap();
    (dir, b)
}

/// N objects pushed by one replica arrive whole at a second; then an idle
/// sync of either is one request (the journal's LIST) at this size, and one
/// change among N costs a handful of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_keeps_idle_syncs_at_one_request_at_scale() {
    let n = objects();
    let store = MemoryRemote::new();
    let (_a_dir, a) = replica(&store).await;
    let (_c_dir, c) = replica(&store).await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let a = a.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(8) {
                a.put(
                    &format!("o/{i:07}"),
                    vec![(i % 251) as u8; 64],
                    PutOptions::default(),
                )
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let r = a.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        r.pushed as usize,
        n,
        "{:?}",
        &r.errors[..r.errors.len().min(3)]
    );
    let r = c.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(r.pulled as usize, n);
    for b in [&a, &c] {
        let before = store.request_count();
        let r = b.sync(SyncOptions::default()).await.unwrap();
        assert!(!r.full && r.pushed + r.pulled == 0, "{r:?}");
        assert!(
            store.request_count() - before <= 2,
            "idle sync at {n} objects"
        );
    }
    let before = store.request_count();
    let r = c.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(store.request_count() - before, 1, "idle: one LIST");
    assert!(!r.full);
    a.put("o/0000042", b"changed".to_vec(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(a.sync(SyncOptions::default()).await.unwrap().pushed, 1);
    let before = store.request_count();
    let r = c.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(r.pulled, 1);
    assert!(store.request_count() - before <= 4, "one change among {n}");
    // Full reconciles find nothing to move (the pusher's also records
    // every key's listing time once, in batches).
    for b in [&a, &c] {
        let started = std::time::Instant::now();
        let full = b
            .sync(SyncOptions {
                full: true,
                ..Default::default()
            })
            .await
            .unwrap();
        eprintln!(
            "full reconcile of {n} objects: {:?} (not asserted)",
            started.elapsed()
        );
        assert!(full.full && full.pushed + full.pulled == 0, "{full:?}");
        assert_eq!(b.status().await.unwrap().synced as usize, n);
    }
}

/// A stream of `len` bytes: one pseudo-random MiB repeated, cut at `len`.
struct Repeating {
    block: Vec<u8>,
    pos: u64,
    len: u64,
}

impl tokio::io::AsyncRead for Repeating {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let left = self.len - self.pos;
        let at = (self.pos % self.block.len() as u64) as usize;
        let n = (self.block.len() - at)
            .min(buf.remaining())
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        buf.put_slice(&self.block[at..at + n]);
        self.pos += n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A 4 GiB object streams in and out with bounded memory and its hash
/// matches the bytes (what the default suite checks at 48 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gib_stream_round_trips_with_matching_hash() {
    use tokio::io::AsyncReadExt;
    const LEN: u64 = (4 << 30) + 123;
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut expected = blake3::Hasher::new();
    let mut left = LEN;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        expected.update(&block[..n]);
        left -= n as u64;
    }
    let expected = ferry::ContentHash::from(expected.finalize());
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::create(dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    let meta = bucket
        .put(
            "huge/stream.bin",
            ferry::Body::from_reader(Repeating {
                block: block.clone(),
                pos: 0,
                len: LEN,
            }),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((meta.size, meta.hash), (LEN, expected));
    let mut object = bucket.get("huge/stream.bin").await.unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = object.body.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    assert_eq!(total, LEN);
    assert_eq!(ferry::ContentHash::from(hasher.finalize()), expected);
}
