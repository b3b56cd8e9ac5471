//! Randomized convergence of three replicas, and sync under injected faults.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferry::remote::fault::Faulty;
use ferry::remote::memory::MemoryRemote;
use ferry::remote::Remote;
use ferry::{Bucket, PutOptions, Resolution, SyncConfig, SyncOptions};
use rand::{Rng, SeedableRng};

use super::backends::{Folder, Memory};
use super::{replica, replica_with, Backend, Replica};

/// Key → content of every object a bucket lists.
async fn contents(b: &Bucket) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for meta in b.list_all("").await.unwrap() {
        let (_, data) = b.get_bytes(&meta.key).await.unwrap();
        out.insert(meta.key, String::from_utf8(data.to_vec()).unwrap());
    }
    out
}

/// Syncs every replica, resolving conflicts with keep-both, until a whole
/// pass moves nothing.
async fn settle(replicas: &[Replica]) {
    for _ in 0..20 {
        let mut moved = 0;
        for r in replicas {
            let report = r.bucket.sync(SyncOptions::default()).await.unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            moved += report.pushed + report.pulled + report.deleted_local + report.deleted_remote;
            for c in r.bucket.conflicts().await.unwrap() {
                r.bucket
                    .resolve(&c.key, Resolution::KeepBoth)
                    .await
                    .unwrap();
                moved += 1;
            }
        }
        if moved == 0 {
            return;
        }
    }
    panic!("replicas did not settle in 20 passes");
}

async fn converge(backend: &dyn Backend, seed: u64, ops: usize) {
    let replicas = vec![
        replica(backend).await,
        replica(backend).await,
        replica(backend).await,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keys = ["a", "b", "c", "d/e", "d/f", "g"];
    let mut written: BTreeSet<String> = BTreeSet::new();
    // Values their writer replaced knowingly (it held them when it wrote or deleted).
    let mut superseded: BTreeSet<String> = BTreeSet::new();
    for n in 0..ops {
        let i = rng.random_range(0..replicas.len());
        let b = &replicas[i].bucket;
        let roll: f64 = rng.random();
        if roll < 0.35 {
            let report = b.sync(SyncOptions::default()).await.unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            continue;
        }
        let key = keys[rng.random_range(0..keys.len())];
        if let Ok((_, old)) = b.get_bytes(key).await {
            superseded.insert(String::from_utf8(old.to_vec()).unwrap());
        }
        if roll < 0.85 {
            let value = format!("r{i}-{n}");
            b.put(key, value.clone().into_bytes(), PutOptions::default())
                .await
                .unwrap();
            written.insert(value);
        } else {
            b.delete(key).await.unwrap();
        }
    }
    settle(&replicas).await;
    let first = contents(&replicas[0].bucket).await;
    for r in &replicas[1..] {
        assert_eq!(
            contents(&r.bucket).await,
            first,
            "seed {seed}: replicas differ"
        );
    }
    let mut remote_keys = backend.foreign_keys().await;
    remote_keys.sort();
    assert_eq!(
        remote_keys,
        first.keys().cloned().collect::<Vec<_>>(),
        "seed {seed}: remote differs"
    );
    for (k, v) in &first {
        assert_eq!(
            backend.foreign_get(k).await.unwrap().data,
            v.as_bytes(),
            "seed {seed}: {k}"
        );
    }
    let present: BTreeSet<&String> = first.values().collect();
    for v in &written {
        assert!(
            present.contains(v) || superseded.contains(v),
            "seed {seed}: acknowledged write {v} was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_converge_on_memory() {
    for seed in 1..=4 {
        converge(&Memory::new(), seed, 300).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_converge_on_folder() {
    for seed in 11..=12 {
        converge(&Folder::new(), seed, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sync_completes_with_20_percent_faults() {
    let store = MemoryRemote::new();
    let backend = Memory(store.clone());
    let config = SyncConfig {
        max_retries: 10,
        retry_base_delay_ms: 1,
        ..Default::default()
    };
    let a = replica_with(&backend, config).await;
    let c = replica_with(&backend, config).await;
    let faulty_a = Arc::new(Faulty::new(Arc::new(store.clone()), 0.2, 42));
    let faulty_c = Arc::new(Faulty::new(Arc::new(store.clone()), 0.2, 43));
    a.bucket.attach(faulty_a.clone()).await.unwrap();
    c.bucket.attach(faulty_c.clone()).await.unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..300 {
        let value = if i % 50 == 0 {
            format!("{i}:").repeat(30_000)
        } else {
            format!("value {i}")
        };
        a.bucket
            .put(
                &format!("f/{i:03}"),
                value.clone().into_bytes(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        expected.insert(format!("f/{i:03}"), value);
    }
    // Keep syncing until quiet; each run may leave some keys for the next.
    for bucket in [&a.bucket, &c.bucket] {
        let mut quiet = false;
        for _ in 0..10 {
            match bucket.sync(SyncOptions::default()).await {
                Ok(r)
                    if r.errors.is_empty()
                        && r.conflicts.is_empty()
                        && r.pushed == 0
                        && r.pulled == 0 =>
                {
                    quiet = true;
                    break;
                }
                Ok(r) => assert!(
                    r.conflicts.is_empty(),
                    "faults must never look like conflicts: {r:?}"
                ),
                Err(_) => {} // a listing can fail after all retries: run again
            }
        }
        assert!(quiet, "sync did not complete");
    }
    assert!(
        faulty_a.injected() > 50,
        "only {} faults injected",
        faulty_a.injected()
    );
    assert!(
        faulty_c.injected() > 20,
        "only {} faults injected",
        faulty_c.injected()
    );
    assert_eq!(contents(&a.bucket).await, expected);
    assert_eq!(contents(&c.bucket).await, expected);
    let listed = store.list("f/").await.unwrap();
    assert_eq!(listed.len(), 300);
    let s = a.bucket.status().await.unwrap();
    assert_eq!((s.synced, s.dirty, s.failed), (300, 0, 0), "{s:?}");
}
