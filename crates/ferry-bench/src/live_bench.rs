//! Live-sync figures: put-to-remote latency with the background engine
//! running, and the CPU an idle engine uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry::remote::folder::FolderRemote;
use ferry::remote::Remote;
use ferry::{Bucket, BucketConfig, PutOptions, SyncConfig};

use crate::Row;

/// CPU seconds (user + system) this process has used (Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after ") ".
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

pub async fn run(dir: &std::path::Path, idle_secs: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let remote_dir = dir.join("live-remote");
    let remote = Arc::new(FolderRemote::new(&remote_dir)?);
    let bucket = Bucket::create(dir.join("live"), BucketConfig::default()).await?;
    let debounce_ms = 300;
    bucket
        .set_sync_config(SyncConfig {
            interval_secs: 30,
            debounce_ms,
            ..SyncConfig::default()
        })
        .await?;
    bucket.attach(remote.clone()).await?;
    bucket.start_sync().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Put -> readable on the remote.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let key = format!("lat/{i}");
        let start = Instant::now();
        bucket
            .put(&key, vec![1u8; 4096], PutOptions::default())
            .await?;
        loop {
            if remote.head(&key).await?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let budget = Duration::from_millis(1000 + debounce_ms);
    rows.push(Row {
        name: format!("put → readable on the remote, daemon running (median of 20, debounce {debounce_ms} ms)"),
        ferry: format!("{} ms", median.as_millis()),
        baseline: format!("{} ms budget", budget.as_millis()),
        ratio: median.as_secs_f64() / budget.as_secs_f64(),
        target: "≤ 1 s + debounce".into(),
        ok: median <= budget,
    });

    // An idle engine: CPU over `idle_secs`.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    rows.push(Row {
        name: format!("CPU of an idle daemon over {idle_secs} s"),
        ferry: format!("{cpu:.2} s CPU"),
        baseline: format!("{wall:.0} s wall"),
        ratio: cpu / wall,
        target: "≈ 0 (< 1% core)".into(),
        ok: cpu / wall < 0.01,
    });
    bucket.stop_sync().await?;
    Ok(rows)
}
