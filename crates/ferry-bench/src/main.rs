//! `ferry-bench`: every figure beside its baseline, measured in one run on
//! the same disk, printed as a ratio with its target.
//!
//! Run with `cargo run --release -p ferry-bench -- [--dir DIR] [--big-mib N]`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use ferry::{Body, Bucket, BucketConfig, PutOptions};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

mod counting;
mod crypto_bench;
mod hostile_load;
mod live_bench;
mod remotes_bench;
mod scale_bench;
mod serve_bench;
mod sync_bench;

#[derive(Debug, Parser)]
#[command(about = "ferry's benchmarks, each beside its baseline")]
struct Args {
    /// Scratch directory (on the disk to measure); default: target/bench-scratch.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of small writes.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Size of the large object, in MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Concurrent writers for the concurrent-put figure.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Which figures: local, live, sync, crypto, scale, remotes, serve, or all (`scale`:
    /// `--objects` × 1 KiB through the release `ferry` binary, which must
    /// be built: `cargo build --release -p ferry-bench -p ferry-cli`).
    #[arg(long, default_value = "all")]
    suite: String,
    /// S3 endpoint for the sync figures (default: start `--server` on loopback).
    #[arg(long)]
    endpoint: Option<String>,
    /// Which loopback server to start: moto or s3s-fs (see sync_bench.rs for why moto).
    #[arg(long, default_value = "moto")]
    server: String,
    /// Bucket on `--endpoint` (must exist; credentials ferrybench/ferrybenchsecret).
    #[arg(long, default_value = "bench")]
    s3_bucket: String,
    /// ferry's push concurrency for the sync figures (0: its default).
    #[arg(long, default_value_t = 0)]
    push_concurrency: usize,
    /// Seconds to watch an idle engine's CPU.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Objects for the large no-op sync and the RSS figure (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    many: usize,
    /// Objects (4 KiB each) for the remote figures.
    #[arg(long, default_value_t = 2_000)]
    remote_objects: usize,
    /// Objects (1 KiB each) for the scale figures.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Remote of the scale figures: folder (a local folder, rclone to a
    /// local folder) or s3 (`--endpoint`, else moto on loopback). Default:
    /// s3 when `--endpoint` is given, else folder.
    #[arg(long, value_parser = ["folder", "s3"])]
    remote: Option<String>,
    /// Size in MiB of the large object of the serve figures.
    #[arg(long, default_value_t = 1024)]
    serve_big_mib: u64,
    /// Requests of each small figure of the serve suite.
    #[arg(long, default_value_t = 4000)]
    serve_requests: usize,
    /// Simulator seeds for `--suite sim` (from `--seed-from`).
    #[arg(long, default_value_t = 500)]
    seeds: u64,
    /// First simulator seed of `--suite sim`.
    #[arg(long, default_value_t = 0)]
    seed_from: u64,
    /// Internal: run s3s-fs on this root (the serve suite's baseline).
    #[arg(long, hide = true)]
    serve_s3s_fs: Option<PathBuf>,
    /// Internal: its port.
    #[arg(long, hide = true, default_value_t = 0)]
    serve_port: u16,
}

/// `--suite sim`: the deterministic simulator over `--seeds` seeds, one at
/// a time on one thread; prints seeds per second and every failing seed.
fn sim_suite(args: &Args, dir: &std::path::Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let (mut faults, mut crashes) = (0, 0);
    for seed in args.seed_from..args.seed_from + args.seeds {
        let scratch = tempfile::tempdir_in(dir)?;
        let config = ferry::sim::SimConfig::from_seed(seed);
        match rt.block_on(ferry::sim::run(scratch.path(), &config)) {
            Ok(r) => {
                faults += r.faults;
                crashes += r.crashes;
            }
            Err(f) => {
                eprintln!("{f}");
                failed.push(seed);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "
simulator: {} seeds from {} in {secs:.1} s: {:.1} seeds/s, {faults} faults and \
         {crashes} crashes injected, {} seeds failed {failed:?}",
        args.seeds,
        args.seed_from,
        args.seeds as f64 / secs.max(1e-9),
        failed.len()
    );
    anyhow::ensure!(failed.is_empty(), "{} seeds failed", failed.len());
    Ok(())
}

/// One line of the result table.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) ferry: String,
    pub(crate) baseline: String,
    pub(crate) ratio: f64,
    pub(crate) target: String,
    pub(crate) ok: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(root) = &args.serve_s3s_fs {
        return serve_bench::run_s3s_fs(root, args.serve_port);
    }
    let suites = [
        "local", "live", "sync", "crypto", "scale", "remotes", "serve", "sim", "all",
    ];
    anyhow::ensure!(
        suites.contains(&args.suite.as_str()),
        "--suite {}: use one of {}",
        args.suite,
        suites.join(", ")
    );
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-scratch"));
    fs::create_dir_all(&root)?;
    let scratch = tempfile::tempdir_in(&root)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    if args.suite == "local" || args.suite == "all" {
        rows.extend(rt.block_on(run(&args, scratch.path()))?);
        print_table(&rows);
    }
    sync_bench::PUSH_CONCURRENCY.store(args.push_concurrency, std::sync::atomic::Ordering::Relaxed);
    if args.suite == "live" || args.suite == "all" {
        println!("\nlive sync figures (background engine, file:// remote)");
        let live_rows = rt.block_on(live_bench::run(scratch.path(), args.idle_secs))?;
        print_table(&live_rows);
    }
    if args.suite == "crypto" || args.suite == "all" {
        println!("\nencryption figures (same run, same disk, same server)");
        let mut crypto_rows = crypto_bench::throughput(1024)?;
        crypto_rows.extend(rt.block_on(crypto_bench::puts(scratch.path(), args.count))?);
        let server = match &args.endpoint {
            Some(e) => sync_bench::external(e, &args.s3_bucket),
            None => sync_bench::start_s3s(scratch.path())
                .or_else(|_| sync_bench::start_moto(scratch.path()))?,
        };
        crypto_rows.extend(rt.block_on(crypto_bench::push(
            &server,
            scratch.path(),
            args.big_mib,
        ))?);
        print_table(&crypto_rows);
    }
    if args.suite == "sync" || args.suite == "all" {
        let both = sync_bench::Parts {
            push: true,
            sync: true,
        };
        let mut sync_rows = Vec::new();
        if let Some(e) = &args.endpoint {
            let server = sync_bench::external(e, &args.s3_bucket);
            println!("\nsync figures against {e} (ferry vs rclone, same server, same run)");
            sync_rows = rt.block_on(sync_bench::run(
                &server,
                scratch.path(),
                args.count,
                args.many,
                args.big_mib,
                both,
            ))?;
        } else {
            // Pushes on s3s-fs (fast, Rust); syncs on moto, because s3s-fs
            // breaks rclone's listings and omits ETags from its own.
            let s3s = sync_bench::start_s3s(scratch.path());
            let moto = sync_bench::start_moto(scratch.path())?;
            let push_on = if s3s.is_ok() {
                "s3s-fs"
            } else {
                "moto (no s3s-fs binary)"
            };
            println!("\nsync figures (ferry vs rclone, same server, same run): pushes on {push_on}, syncs on moto");
            match &s3s {
                Ok(server) => {
                    let p = sync_bench::Parts {
                        push: true,
                        sync: false,
                    };
                    sync_rows.extend(rt.block_on(sync_bench::run(
                        server,
                        scratch.path(),
                        args.count,
                        0,
                        args.big_mib,
                        p,
                    ))?);
                    let p = sync_bench::Parts {
                        push: false,
                        sync: true,
                    };
                    sync_rows.extend(rt.block_on(sync_bench::run(
                        &moto,
                        scratch.path(),
                        args.count,
                        args.many,
                        args.big_mib,
                        p,
                    ))?);
                }
                Err(_) => {
                    sync_rows = rt.block_on(sync_bench::run(
                        &moto,
                        scratch.path(),
                        args.count,
                        args.many,
                        args.big_mib,
                        both,
                    ))?;
                }
            }
        }
        print_table(&sync_rows);
    }
    if args.suite == "remotes" || args.suite == "all" {
        println!(
            "\nremote figures (ferry vs rclone, same server, same run): GCS on fake-gcs-server, Azure on Azurite"
        );
        let mut rows = rt.block_on(remotes_bench::gcs(scratch.path(), args.remote_objects))?;
        rows.extend(rt.block_on(remotes_bench::azure(scratch.path(), args.remote_objects))?);
        rows.extend(rt.block_on(remotes_bench::webdav(scratch.path(), args.remote_objects))?);
        print_table(&rows);
    }
    if args.suite == "sim" {
        return sim_suite(&args, scratch.path());
    }
    if args.suite == "serve" || args.suite == "all" {
        println!(
            "\nserve figures (ferry serve vs s3s-fs, separate processes, same client, same run)"
        );
        let mut rows = rt.block_on(serve_bench::run(
            scratch.path(),
            args.serve_requests,
            args.serve_big_mib,
        ))?;
        // Last, another fresh gateway of the same bucket under hostile load.
        let ferry = scale_bench::ferry_binary()?;
        let bucket = scratch.path().join("serve-bucket");
        rows.extend(rt.block_on(hostile_load::run(&ferry, &bucket))?);
        print_table(&rows);
    }
    if args.suite == "scale" || args.suite == "all" {
        match scale_bench::ferry_binary() {
            Err(e) if args.suite == "all" => eprintln!("\nskipping the scale figures: {e:#}"),
            found => {
                let bin = found?;
                let s3 = match &args.remote {
                    Some(kind) => kind == "s3",
                    None => args.endpoint.is_some(),
                };
                let server = match (s3, &args.endpoint) {
                    (false, _) => None,
                    (true, Some(e)) => Some(sync_bench::external(e, &args.s3_bucket)),
                    (true, None) => Some(sync_bench::start_moto(scratch.path())?),
                };
                let remote = match &server {
                    Some(s) => format!("S3 at {} (rclone on the same server)", s.endpoint),
                    None => "a folder remote (rclone to a local folder)".into(),
                };
                println!(
                    "\nscale figures: {} × 1 KiB through {} (child processes), {remote}",
                    args.objects,
                    bin.display()
                );
                let scale_rows = rt.block_on(scale_bench::run(
                    scratch.path(),
                    args.objects,
                    server.as_ref(),
                ))?;
                print_table(&scale_rows);
            }
        }
    }
    Ok(())
}

async fn run(args: &Args, dir: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let small = random_bytes(4096);
    let n = args.count;

    // Raw baselines: one file per write, write + fsync each.
    let raw_dir = dir.join("raw-small");
    fs::create_dir_all(&raw_dir)?;
    let raw_seq = timed(|| {
        for i in 0..n {
            let mut f = File::create(raw_dir.join(format!("{i}")))?;
            f.write_all(&small)?;
            f.sync_all()?;
        }
        Ok(())
    })?;
    let raw_rate = n as f64 / raw_seq.as_secs_f64();

    // Sequential durable puts.
    let bucket = Bucket::create(dir.join("seq"), BucketConfig::default()).await?;
    let start = Instant::now();
    for i in 0..n {
        let body = bytes::Bytes::copy_from_slice(&small);
        bucket
            .put(&format!("k/{i}"), body, PutOptions::default())
            .await?;
    }
    let seq_rate = n as f64 / start.elapsed().as_secs_f64();
    rows.push(rate_row(
        format!("{n} durable 4 KiB puts, sequential"),
        seq_rate,
        raw_rate,
        0.7,
        "raw write+fsync",
    ));

    // The same through blob files instead of inline storage: what inline buys.
    let files = Bucket::create(
        dir.join("seq-files"),
        BucketConfig {
            inline_threshold: 0,
        },
    )
    .await?;
    let m = n.min(2000);
    let start = Instant::now();
    for i in 0..m {
        let body = bytes::Bytes::copy_from_slice(&small);
        files
            .put(&format!("k/{i}"), body, PutOptions::default())
            .await?;
    }
    let file_rate = m as f64 / start.elapsed().as_secs_f64();
    rows.push(Row {
        name: format!("  (for comparison) {m} 4 KiB puts as blob files, no inlining"),
        ferry: format!("{file_rate:.0}/s"),
        baseline: format!("{raw_rate:.0}/s"),
        ratio: file_rate / raw_rate,
        target: "info".into(),
        ok: true,
    });
    drop(files);

    // Concurrent durable puts: group commit.
    let conc = Bucket::create(dir.join("conc"), BucketConfig::default()).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.writers {
        let b = conc.clone();
        let data = small.clone();
        let per = n / args.writers;
        tasks.spawn(async move {
            for i in 0..per {
                b.put(
                    &format!("w{w}/{i}"),
                    bytes::Bytes::copy_from_slice(&data),
                    PutOptions::default(),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let conc_rate = (n / args.writers * args.writers) as f64 / start.elapsed().as_secs_f64();
    rows.push(rate_row(
        format!(
            "{n} durable 4 KiB puts, {} concurrent writers",
            args.writers
        ),
        conc_rate,
        raw_rate,
        2.0,
        "raw single writer",
    ));

    // Cached 4 KiB get vs reading a 4 KiB file.
    let reads = n.min(10_000);
    let raw_get = timed(|| {
        let mut buf = Vec::with_capacity(4096);
        for i in 0..reads {
            buf.clear();
            File::open(raw_dir.join(format!("{}", i % n)))?.read_to_end(&mut buf)?;
        }
        Ok(())
    })?;
    let start = Instant::now();
    for i in 0..reads {
        let (_, data) = bucket.get_bytes(&format!("k/{}", i % n)).await?;
        std::hint::black_box(data);
    }
    let ferry_get = start.elapsed();
    let per_ferry = ferry_get.as_secs_f64() / reads as f64 * 1e6;
    let per_raw = raw_get.as_secs_f64() / reads as f64 * 1e6;
    rows.push(Row {
        name: "get of a cached 4 KiB object (time per get)".into(),
        ferry: format!("{per_ferry:.1} µs"),
        baseline: format!("{per_raw:.1} µs raw read"),
        ratio: per_ferry / per_raw,
        target: "≤ 3.0× time".into(),
        ok: per_ferry / per_raw <= 3.0,
    });
    drop(bucket);
    drop(conc);

    // Large object: put and get vs a sequential fsync'd write and a plain read.
    let big = args.big_mib << 20;
    let chunk = random_bytes(1 << 20);
    let raw_big = dir.join("raw-big");
    let raw_write = timed(|| {
        let mut f = File::create(&raw_big)?;
        for _ in 0..args.big_mib {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        Ok(())
    })?;
    let raw_read = timed(|| {
        let mut f = File::open(&raw_big)?;
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf)? > 0 {}
        Ok(())
    })?;
    fs::remove_file(&raw_big)?;
    let large = Bucket::create(dir.join("large"), BucketConfig::default()).await?;
    reset_peak_rss();
    let start = Instant::now();
    large
        .put(
            "big.bin",
            Body::from_reader(Repeat::new(chunk.clone(), big)),
            PutOptions::default(),
        )
        .await?;
    let put_time = start.elapsed();
    let start = Instant::now();
    let mut obj = large.get("big.bin").await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = obj.body.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let get_time = start.elapsed();
    anyhow::ensure!(got == big, "read back {got} of {big} bytes");
    let peak = peak_rss_kib();
    let mib = args.big_mib as f64;
    rows.push(rate_row(
        format!("put of a {} MiB object (MiB/s)", args.big_mib),
        mib / put_time.as_secs_f64(),
        mib / raw_write.as_secs_f64(),
        0.7,
        "raw write+fsync",
    ));
    rows.push(rate_row(
        format!("get of a {} MiB object (MiB/s)", args.big_mib),
        mib / get_time.as_secs_f64(),
        mib / raw_read.as_secs_f64(),
        0.7,
        "raw read",
    ));
    if let Some(peak) = peak {
        let peak_mib = peak as f64 / 1024.0;
        rows.push(Row {
            name: "peak RSS during the large put and get".into(),
            ferry: format!("{peak_mib:.1} MiB"),
            baseline: format!("{} MiB object", args.big_mib),
            ratio: peak_mib / 64.0,
            target: "≤ 64 MiB".into(),
            ok: peak_mib <= 64.0,
        });
    }
    Ok(rows)
}

fn rate_row(name: String, ferry: f64, baseline: f64, target: f64, what: &str) -> Row {
    let ratio = ferry / baseline;
    Row {
        name,
        ferry: format!("{ferry:.0}/s"),
        baseline: format!("{baseline:.0}/s {what}"),
        ratio,
        target: format!("≥ {target}×"),
        ok: ratio >= target,
    }
}

fn print_table(rows: &[Row]) {
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(10);
    println!(
        "{:w$}  {:>14}  {:>26}  {:>7}  {:>12}  ",
        "figure", "ferry", "baseline", "ratio", "target"
    );
    for r in rows {
        let verdict = if r.target == "info" {
            ""
        } else if r.ok {
            "ok"
        } else {
            "MISSED"
        };
        let ratio = if r.ratio.is_finite() {
            format!("{:.2}×", r.ratio)
        } else {
            "-".into()
        };
        println!(
            "{:w$}  {:>14}  {:>26}  {ratio:>7}  {:>12}  {verdict}",
            r.name, r.ferry, r.baseline, r.target
        );
    }
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Resets the kernel's peak-RSS counter for this process (Linux).
pub(crate) fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in KiB (Linux).
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status")
        .context("reading /proc")
        .ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// An `AsyncRead` of `total` bytes repeating one buffer: a large body with no large allocation.
pub(crate) struct Repeat {
    chunk: Vec<u8>,
    pos: usize,
    left: u64,
}

impl Repeat {
    pub(crate) fn new(chunk: Vec<u8>, total: u64) -> Self {
        Repeat {
            chunk,
            pos: 0,
            left: total,
        }
    }
}

impl AsyncRead for Repeat {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let avail = (self.chunk.len() - self.pos)
            .min(buf.remaining())
            .min(self.left as usize);
        let start = self.pos;
        buf.put_slice(&self.chunk[start..start + avail]);
        self.pos = (self.pos + avail) % self.chunk.len();
        self.left -= avail as u64;
        Poll::Ready(Ok(()))
    }
}
