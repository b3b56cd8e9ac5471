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

/// A 2 GiB object sealed by one encrypted device streams to the remote and
/// back to a second device that joins with the passphrase, intact, on a
/// folder remote and on moto (the default suite checks this at 40 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_multi_gib_round_trip_folder_and_moto() {
    use ferry::remote::encrypted::{inspect, RemoteMode};
    use ferry::remote::SharedRemote;
    use tokio::io::AsyncReadExt;
    const LEN: u64 = (2 << 30) + 12345;
    const PASS: &[u8] = b"correct horse battery staple";
    let kdf = ferry::KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let source = || Repeating {
        block: block.clone(),
        pos: 0,
        len: LEN,
    };
    async fn digest(mut r: impl tokio::io::AsyncRead + Unpin) -> (blake3::Hash, u64) {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        (hasher.finalize(), total)
    }
    let want = digest(source()).await;

    let folder = tempfile::tempdir().unwrap();
    let endpoint = std::env::var("FERRY_TEST_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!("FERRY_TEST_MOTO_ENDPOINT is not set: run ./scripts/test.sh --heavy")
    });
    let moto = ferry::remote::s3::S3Config {
        bucket: "ferry-test".into(),
        prefix: format!("heavy-{:016x}/", rand::random::<u64>()),
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        ..Default::default()
    };
    let remotes: Vec<(&str, SharedRemote)> = vec![
        (
            "folder",
            Arc::new(ferry::remote::folder::FolderRemote::new(folder.path()).unwrap()),
        ),
        (
            "moto",
            Arc::new(ferry::remote::s3::S3Remote::new(&moto).unwrap()),
        ),
    ];
    for (name, remote) in remotes {
        let a_dir = tempfile::tempdir().unwrap();
        let a =
            Bucket::create_encrypted(a_dir.path().join("b"), BucketConfig::default(), PASS, kdf)
                .await
                .unwrap();
        a.attach(remote.clone()).await.unwrap();
        let meta = a
            .put(
                "big/object",
                ferry::Body::from_reader(source()),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(meta.size, LEN, "{name}");
        let report = a.sync(SyncOptions::default()).await.unwrap();
        assert!(
            report.errors.is_empty() && report.conflicts.is_empty(),
            "{name}: {report:?}"
        );
        drop(a);
        drop(a_dir); // the local copy goes: only the remote holds the object

        let RemoteMode::Encrypted(file) = inspect(remote.as_ref()).await.unwrap() else {
            panic!("{name}: the remote should be encrypted");
        };
        let b_dir = tempfile::tempdir().unwrap();
        let b = Bucket::create_joining(
            b_dir.path().join("b"),
            BucketConfig::default(),
            file,
            PASS,
            ferry::KdfParams::default(),
        )
        .await
        .unwrap();
        b.attach(remote).await.unwrap();
        let report = b.sync(SyncOptions::default()).await.unwrap();
        assert!(
            report.errors.is_empty() && report.conflicts.is_empty(),
            "{name}: {report:?}"
        );
        let object = b.get("big/object").await.unwrap();
        assert_eq!(digest(object.body).await, want, "{name}");
        // Leave the servers without 2 GiB to hold.
        b.delete("big/object").await.unwrap();
        let report = b.sync(SyncOptions::default()).await.unwrap();
        assert!(
            report.errors.is_empty() && report.conflicts.is_empty(),
            "{name}: {report:?}"
        );
    }
}

/// The simulator over many seeds (`FERRY_HEAVY_SIM_SEEDS`, default
/// 20,000, from `FERRY_HEAVY_SIM_FROM`, default 1,000,000 so they are not
/// the default suite's), two seeds at a time on two threads; every failing
/// seed is printed with its replay line. `FERRY_HEAVY_SIM_LIST` (seeds
/// separated by commas or spaces) runs those seeds instead.
#[test]
fn simulator_many_seeds_keep_every_invariant() {
    let n: u64 = std::env::var("FERRY_HEAVY_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let from: u64 = std::env::var("FERRY_HEAVY_SIM_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seeds: Vec<u64> = match std::env::var("FERRY_HEAVY_SIM_LIST") {
        Ok(list) => list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("FERRY_HEAVY_SIM_LIST holds u64 seeds"))
            .collect(),
        Err(_) => (from..from + n).collect(),
    };
    let n = seeds.len();
    let seeds = std::sync::Arc::new(seeds);
    let threads: Vec<_> = (0..2usize)
        .map(|t| {
            let seeds = seeds.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut failed = Vec::new();
                for (i, &seed) in seeds.iter().skip(t).step_by(2).enumerate() {
                    if i > 0 && i % 1000 == 0 {
                        eprintln!(
                            "simulator thread {t}: {i} seeds run, {} failed",
                            failed.len()
                        );
                    }
                    let dir = tempfile::tempdir().unwrap();
                    let config = ferry::sim::SimConfig::from_seed(seed);
                    if let Err(f) = rt.block_on(ferry::sim::run(dir.path(), &config)) {
                        eprintln!("{f}");
                        failed.push(seed);
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    failed.sort_unstable();
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed: {failed:?}",
        failed.len()
    );
    eprintln!("{n} simulator seeds ran without a violation");
}
