//! The background engine, its schedule, events, and the cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry::remote::memory::MemoryRemote;
use ferry::remote::Remote;
use ferry::schedule::{Connectivity, RunOutcome, Schedule, ScheduleConfig};
use ferry::{
    Bucket, BucketConfig, Error, Event, Eviction, PutOptions, SyncConfig, SyncOptions, SyncState,
};
use tokio::time::Instant;

use crate::sync::backends::Memory;
use crate::sync::Backend;

fn cfg() -> ScheduleConfig {
    ScheduleConfig {
        interval: Some(Duration::from_secs(30)),
        debounce: Duration::from_millis(300),
        max_delay: Duration::from_secs(2),
        idle_cap: Duration::from_secs(240),
        offline_min: Duration::from_secs(1),
        offline_max: Duration::from_secs(16),
    }
}

#[tokio::test(start_paused = true)]
async fn schedule_runs_at_start_then_on_the_interval() {
    let t0 = Instant::now();
    let mut s = Schedule::new(cfg(), t0);
    assert!(s.is_due(t0));
    s.on_sync_start();
    s.on_sync_done(t0, RunOutcome::Changed);
    assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_secs(30)));
    assert!(!s.is_due(t0 + Duration::from_secs(29)));
    assert!(s.is_due(t0 + Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn schedule_takes_new_settings_while_running() {
    let t0 = Instant::now();
    let mut s = Schedule::new(cfg(), t0);
    s.on_sync_start();
    s.on_sync_done(t0, RunOutcome::Changed);
    assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_secs(30)));
    // A shorter interval restarts the period from now.
    let t1 = t0 + Duration::from_secs(5);
    let faster = ScheduleConfig {
        interval: Some(Duration::from_secs(2)),
        ..cfg()
    };
    s.set_config(faster, t1);
    assert_eq!(s.next_wakeup(), Some(t1 + Duration::from_secs(2)));
    // No interval: only writes and requests wake it.
    let manual = ScheduleConfig {
        interval: None,
        ..cfg()
    };
    s.set_config(manual, t1);
    assert_eq!(s.next_wakeup(), None);
    s.on_local_write(t1);
    assert_eq!(s.next_wakeup(), Some(t1 + Duration::from_millis(300)));
    // A shorter debounce brings a waiting push forward, never back.
    let quick = ScheduleConfig {
        debounce: Duration::from_millis(50),
        ..manual
    };
    s.set_config(quick, t1);
    assert_eq!(s.next_wakeup(), Some(t1 + Duration::from_millis(50)));
}

#[tokio::test(start_paused = true)]
async fn schedule_debounces_a_burst_of_writes_into_one_push() {
    let t0 = Instant::now();
    let mut s = Schedule::new(cfg(), t0);
    s.on_sync_start();
    s.on_sync_done(t0, RunOutcome::Changed);
    // Ten writes 100 ms apart: the push waits for 300 ms of quiet...
    for i in 0..10 {
        s.on_local_write(t0 + Duration::from_millis(100 * i));
        assert!(!s.is_due(t0 + Duration::from_millis(100 * i + 150)));
    }
    assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_millis(900 + 300)));
    // ...but never more than max_delay after the first write of the burst.
    let mut s2 = Schedule::new(cfg(), t0);
    s2.on_sync_start();
    s2.on_sync_done(t0, RunOutcome::Changed);
    for i in 0..100 {
        s2.on_local_write(t0 + Duration::from_millis(100 * i));
    }
    assert_eq!(s2.next_wakeup(), Some(t0 + Duration::from_secs(2)));
    s2.on_sync_start();
    assert_eq!(
        s2.next_wakeup(),
        Some(t0 + Duration::from_secs(30)),
        "the push covered the burst"
    );
}

#[tokio::test(start_paused = true)]
async fn schedule_backs_off_while_idle_and_resets_on_change() {
    let t0 = Instant::now();
    let mut s = Schedule::new(cfg(), t0);
    let mut now = t0;
    let mut periods = Vec::new();
    for _ in 0..6 {
        s.on_sync_start();
        s.on_sync_done(now, RunOutcome::Idle);
        periods.push(s.period().unwrap().as_secs());
        now = s.next_wakeup().unwrap();
    }
    assert_eq!(periods, [60, 120, 240, 240, 240, 240]);
    s.on_local_write(now);
    assert_eq!(
        s.period(),
        Some(Duration::from_secs(30)),
        "a write resets the backoff"
    );
    s.on_sync_start();
    s.on_sync_done(now, RunOutcome::Changed);
    assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn schedule_retries_offline_with_backoff_and_reports_the_return() {
    let t0 = Instant::now();
    let mut s = Schedule::new(cfg(), t0);
    let mut now = t0;
    let mut delays = Vec::new();
    let mut changes = Vec::new();
    for _ in 0..6 {
        s.on_sync_start();
        changes.push(s.on_sync_done(now, RunOutcome::Offline));
        let next = s.next_wakeup().unwrap();
        delays.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 16]);
    assert_eq!(changes[0], Connectivity::WentOffline);
    assert!(changes[1..].iter().all(|c| *c == Connectivity::Same));
    assert!(s.is_offline());
    assert_eq!(
        s.on_sync_done(now, RunOutcome::Idle),
        Connectivity::CameOnline
    );
    assert!(!s.is_offline());
}

#[tokio::test(start_paused = true)]
async fn manual_mode_never_wakes_on_its_own() {
    let t0 = Instant::now();
    let mut s = Schedule::new(
        ScheduleConfig {
            interval: None,
            ..cfg()
        },
        t0,
    );
    s.on_sync_start();
    s.on_sync_done(t0, RunOutcome::Changed);
    assert_eq!(s.next_wakeup(), None);
    s.on_local_write(t0);
    assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_millis(300)));
}

async fn live_bucket(remote: Arc<dyn Remote>, config: SyncConfig) -> (tempfile::TempDir, Bucket) {
    let dir = tempfile::tempdir().unwrap();
    let b = Bucket::create(dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    b.set_sync_config(config).await.unwrap();
    b.attach(remote).await.unwrap();
    (dir, b)
}

fn fast() -> SyncConfig {
    SyncConfig {
        interval_secs: 1,
        debounce_ms: 50,
        leader_poll_ms: 50,
        retry_base_delay_ms: 5,
        max_retries: 1,
        ..Default::default()
    }
}

async fn next_matching(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for an event")
            .unwrap();
        let done = pred(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_engine_pushes_local_writes_without_a_manual_sync() {
    let store = MemoryRemote::new();
    let (_d, b) = live_bucket(Arc::new(store.clone()), fast()).await;
    let mut rx = b.subscribe();
    b.start_sync().await.unwrap();
    let first = next_matching(&mut rx, |e| matches!(e, Event::SyncCompleted { .. })).await;
    assert_eq!(first[0], Event::LeaderPromoted, "{first:?}");
    assert!(b.is_leader());
    let st = b.status().await.unwrap();
    assert!(
        st.leader && st.leader_pid == Some(std::process::id()),
        "{st:?}"
    );
    b.put("live/a", b"A".to_vec(), PutOptions::default())
        .await
        .unwrap();
    let seen = next_matching(
        &mut rx,
        |e| matches!(e, Event::ObjectPushed { key } if key == "live/a"),
    )
    .await;
    assert!(seen.contains(&Event::SyncStarted), "{seen:?}");
    assert_eq!(store.list("live/").await.unwrap().len(), 1);
    // A burst becomes one push run.
    let puts = (0..20).map(|i| {
        let b = b.clone();
        async move {
            b.put(&format!("burst/{i}"), vec![i as u8], PutOptions::default())
                .await
        }
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    let mut pushed = 0;
    let mut runs = 0;
    while pushed < 20 {
        let e = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match e {
            Event::SyncStarted => runs += 1,
            Event::ObjectPushed { .. } => pushed += 1,
            _ => {}
        }
    }
    assert_eq!(runs, 1, "a burst of 20 puts took {runs} runs");
    assert_eq!(store.list("burst/").await.unwrap().len(), 20);
    b.stop_sync().await.unwrap();
    let tail = next_matching(&mut rx, |e| *e == Event::LeaderDemoted).await;
    assert_eq!(tail.last(), Some(&Event::LeaderDemoted));
    assert!(!b.is_leader());
}

/// The remote goes away: writes continue locally, `offline` then `online`
/// fire, and everything is pushed once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_then_online_pushes_everything() {
    let store = MemoryRemote::new();
    let (_d, b) = live_bucket(Arc::new(store.clone()), fast()).await;
    let mut rx = b.subscribe();
    b.start_sync().await.unwrap();
    next_matching(&mut rx, |e| matches!(e, Event::SyncCompleted { .. })).await;
    // The remote goes down: every request fails until healed.
    let down = Arc::new(crate::sync::layers::Outage {
        inner: Arc::new(store.clone()),
        after: 0,
        seen: AtomicU64::new(0),
        healed: AtomicBool::new(false),
    });
    b.attach(down.clone()).await.unwrap();
    for i in 0..5 {
        b.put(&format!("off/{i}"), vec![i], PutOptions::default())
            .await
            .unwrap();
    }
    next_matching(&mut rx, |e| *e == Event::Offline).await;
    assert_eq!(b.status().await.unwrap().dirty, 5, "writes go on offline");
    down.healed.store(true, Ordering::SeqCst);
    next_matching(&mut rx, |e| *e == Event::Online).await;
    next_matching(&mut rx, |e| matches!(e, Event::SyncCompleted { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.list("off/").await.unwrap().len(), 5);
    assert_eq!(b.status().await.unwrap().dirty, 0);
    b.stop_sync().await.unwrap();
}

/// Two handles on one bucket directory in one process stand in for two
/// processes: only one leads; the other's one-shot sync is run by the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_sync_while_another_leads_is_run_by_the_leader() {
    let store = MemoryRemote::new();
    let (d, leader) = live_bucket(
        Arc::new(store.clone()),
        SyncConfig {
            interval_secs: 0,
            ..fast()
        },
    )
    .await;
    leader.start_sync().await.unwrap();
    let mut rx = leader.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(leader.is_leader());
    let other = Bucket::open(d.path().join(".ferry")).await.unwrap();
    other.attach(Arc::new(store.clone())).await.unwrap();
    other
        .put("via/other", b"x".to_vec(), PutOptions::default())
        .await
        .unwrap();
    let report = other.sync(SyncOptions::default()).await.unwrap();
    assert!(
        !other.is_leader(),
        "the one-shot must not lead while another does"
    );
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(store.list("via/").await.unwrap().len(), 1);
    let seen = next_matching(&mut rx, |e| matches!(e, Event::SyncCompleted { .. })).await;
    assert!(seen.contains(&Event::SyncStarted));
    leader.stop_sync().await.unwrap();
}

/// A follower (another handle on the directory, as another process would
/// be) receives the leader's sync events through the bucket's event log,
/// once each, and not its own twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_see_the_leaders_events() {
    let store = MemoryRemote::new();
    let (d, leader) = live_bucket(
        Arc::new(store.clone()),
        SyncConfig {
            interval_secs: 0,
            ..fast()
        },
    )
    .await;
    leader.start_sync().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(leader.is_leader());
    let follower = Bucket::open(d.path().join(".ferry")).await.unwrap();
    follower.attach(Arc::new(store.clone())).await.unwrap();
    let mut rx = follower.subscribe();
    assert!(!follower.is_leader());
    leader
        .put("from/leader", b"x".to_vec(), PutOptions::default())
        .await
        .unwrap();
    let seen = next_matching(
        &mut rx,
        |e| matches!(e, Event::SyncCompleted { result } if result.pushed == 1),
    )
    .await;
    let pushed: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, Event::ObjectPushed { key } if key == "from/leader"))
        .collect();
    assert_eq!(pushed.len(), 1, "{seen:?}");
    assert!(seen.contains(&Event::SyncStarted), "{seen:?}");
    // Events about the leader process itself stay there.
    assert!(!seen.contains(&Event::LeaderPromoted), "{seen:?}");
    leader.stop_sync().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_evicts_only_safe_objects_in_strategy_order() {
    for (strategy, expect_first) in [
        (Eviction::Lru, "c/1"),
        (Eviction::Lfu, "c/3"),
        (Eviction::Oldest, "c/0"),
    ] {
        let be = Memory::new();
        let limit = 10_000u64;
        let config = SyncConfig {
            max_cache_size: u64::MAX,
            eviction: strategy,
            ..SyncConfig::default()
        };
        let (_d, b) = live_bucket(be.remote(), config).await;
        for i in 0..4 {
            b.put(
                &format!("c/{i}"),
                vec![i as u8; 3000],
                PutOptions::default(),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.sync(SyncOptions::default()).await.unwrap();
        // Reads: c/0 read last; c/3 read once; others twice.
        for k in ["c/1", "c/2", "c/1", "c/2", "c/3", "c/0", "c/0"] {
            b.get_bytes(k).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Unsafe objects: a pinned one, a dirty one.
        b.put("pinned", vec![9; 3000], PutOptions::default())
            .await
            .unwrap();
        b.sync(SyncOptions::default()).await.unwrap();
        b.pin(&["pinned"]).await.unwrap();
        b.put("dirty", vec![8; 3000], PutOptions::default())
            .await
            .unwrap();
        let mut rx = b.subscribe();
        let freed = b.evict(1).await.unwrap();
        assert_eq!(freed, 3000, "{strategy:?}");
        let e = rx.recv().await.unwrap();
        assert_eq!(
            e,
            Event::ObjectEvicted {
                key: expect_first.into()
            },
            "{strategy:?}"
        );
        // Everything evictable goes; pinned and dirty stay.
        let freed = b.evict(u64::MAX).await.unwrap();
        assert_eq!(freed, 9000, "{strategy:?}");
        let usage = b.cache_usage().await.unwrap();
        assert_eq!(usage.used, 6000, "{strategy:?}: pinned + dirty remain");
        // Evicted objects stay listed and synced, and read back correctly.
        assert_eq!(b.list_all("c/").await.unwrap().len(), 4);
        assert_eq!(b.head("c/1").await.unwrap().state, SyncState::Synced);
        assert_eq!(
            &b.get_bytes("c/1").await.unwrap().1[..],
            &vec![1u8; 3000][..]
        );
        // A later sync does not download evicted content again.
        b.sync(SyncOptions::default()).await.unwrap();
        assert_eq!(b.cache_usage().await.unwrap().used, 9000);
        let _ = limit;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_limit_holds_while_writing_and_pulling() {
    let be = Memory::new();
    let config = SyncConfig {
        max_cache_size: 20_000,
        ..SyncConfig::default()
    };
    let (_d, writer) = live_bucket(be.remote(), SyncConfig::default()).await;
    for i in 0..20 {
        writer
            .put(
                &format!("w/{i:02}"),
                vec![i as u8; 2000],
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    writer.sync(SyncOptions::default()).await.unwrap();
    // Pulling 40 KB into a 20 KB cache.
    let (_d2, reader) = live_bucket(be.remote(), config).await;
    reader.sync(SyncOptions::default()).await.unwrap();
    let used = reader.cache_usage().await.unwrap().used;
    assert!(used <= 20_000 + 2000, "cache at {used} after pulling");
    assert_eq!(reader.list_all("w/").await.unwrap().len(), 20);
    for i in 0..20 {
        assert_eq!(
            &reader.get_bytes(&format!("w/{i:02}")).await.unwrap().1[..],
            &vec![i as u8; 2000][..]
        );
        let used = reader.cache_usage().await.unwrap().used;
        assert!(used <= 20_000 + 2000, "cache at {used} while reading");
    }
    // Writing synced content past the limit evicts as it goes.
    for i in 0..10 {
        reader
            .put(&format!("r/{i}"), vec![1; 3000], PutOptions::default())
            .await
            .unwrap();
        reader.sync(SyncOptions::default()).await.unwrap();
    }
    let used = reader.cache_usage().await.unwrap().used;
    assert!(used <= 20_000 + 3000, "cache at {used} after writing");
}

/// A cache smaller than one object still serves that object: fetching it to
/// be read must not evict it before the read opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_larger_than_the_cache_can_still_be_read() {
    let be = Memory::new();
    let (_d, writer) = live_bucket(be.remote(), SyncConfig::default()).await;
    let big = vec![7u8; 50_000];
    writer
        .put("big", big.clone(), PutOptions::default())
        .await
        .unwrap();
    writer.sync(SyncOptions::default()).await.unwrap();
    let config = SyncConfig {
        max_cache_size: 10_000,
        ..SyncConfig::default()
    };
    let (_d2, reader) = live_bucket(be.remote(), config).await;
    reader.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(&reader.get_bytes("big").await.unwrap().1[..], &big[..]);
    // It stays over the limit only until the next write makes room.
    reader
        .put("small", vec![1u8; 100], PutOptions::default())
        .await
        .unwrap();
    reader.sync(SyncOptions::default()).await.unwrap();
    reader
        .put("small2", vec![2u8; 100], PutOptions::default())
        .await
        .unwrap();
    assert!(reader.cache_usage().await.unwrap().used <= 10_000);
    assert_eq!(&reader.get_bytes("big").await.unwrap().1[..], &big[..]);
}

/// Another handle (as another process would) running the engine stops at
/// its next tick once the bucket is destroyed; a handle that keeps the
/// bucket open stops `--clear-local` with `BucketInUse` after the wait,
/// and nothing local is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_waits_for_other_openers_and_stops_their_engines() {
    let store = MemoryRemote::new();
    let (d, b) = live_bucket(Arc::new(store.clone()), fast()).await;
    let dir = d.path().join(".ferry");
    let other = Bucket::open(&dir).await.unwrap();
    other.attach(Arc::new(store.clone())).await.unwrap();
    let mut events = other.subscribe();
    other.start_sync().await.unwrap();
    let err = b.destroy(true).await.unwrap_err();
    match &err {
        Error::BucketInUse { pids } => assert_eq!(pids, &[std::process::id()]),
        e => panic!("{e}"),
    }
    assert!(dir.join(ferry::INDEX_FILE).exists(), "nothing deleted");
    // The other handle's engine saw the mark and stopped.
    let saw = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(Event::Destroyed) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(saw, Ok(true));
    drop(other);
    Bucket::open(&dir)
        .await
        .unwrap()
        .destroy(true)
        .await
        .unwrap();
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_stops_sync_and_clears_local_data() {
    let store = MemoryRemote::new();
    let (d, b) = live_bucket(Arc::new(store.clone()), fast()).await;
    b.put("k", b"v".to_vec(), PutOptions::default())
        .await
        .unwrap();
    b.start_sync().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = d.path().join(".ferry");
    b.destroy(true).await.unwrap();
    assert!(!dir.exists());
    assert_eq!(
        store
            .list("")
            .await
            .unwrap()
            .iter()
            .filter(|o| !o.key.starts_with(".ferry/"))
            .count(),
        1
    );
}

/// Serves s3s-fs on `addr` until the returned task is aborted (which also
/// drops every open connection).
async fn serve_s3s(
    root: std::path::PathBuf,
    addr: std::net::SocketAddr,
) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    let fs = s3s_fs::FileSystem::new(&root).unwrap();
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(
            crate::sync::backends::ACCESS_KEY,
            crate::sync::backends::SECRET_KEY,
        ));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            conns.spawn(async move {
                let _ = conn.await;
            });
        }
    })
}

/// The S3 server stops: puts go on locally, `offline` then `online` fire,
/// and everything is pushed once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_s3_server_goes_offline_and_back() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("ferry-test")).unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let server = serve_s3s(root.path().to_owned(), addr).await;
    let location =
        crate::sync::backends::S3Location::new(format!("http://{addr}"), "ferry-test", None);
    let (_d, b) = live_bucket(location.remote(), fast()).await;
    let mut rx = b.subscribe();
    b.start_sync().await.unwrap();
    next_matching(&mut rx, |e| matches!(e, Event::SyncCompleted { .. })).await;
    server.abort();
    let _ = server.await;
    for i in 0..4 {
        b.put(&format!("gone/{i}"), vec![i; 100], PutOptions::default())
            .await
            .unwrap();
    }
    next_matching(&mut rx, |e| *e == Event::Offline).await;
    assert_eq!(b.status().await.unwrap().dirty, 4);
    let server = serve_s3s(root.path().to_owned(), addr).await;
    next_matching(&mut rx, |e| *e == Event::Online).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.status().await.unwrap().dirty > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.status().await.unwrap().dirty, 0);
    assert_eq!(location.foreign_keys().await.len(), 4);
    b.stop_sync().await.unwrap();
    server.abort();
}
