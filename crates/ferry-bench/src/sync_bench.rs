//! Sync figures: ferry against `rclone` (Debian's package) on the same S3
//! server in the same run.
//!
//! The default server is moto (`target/test-venv`, installed by
//! `scripts/test.sh`) on loopback. `--server s3s-fs` uses the `s3s-fs`
//! binary instead, but s3s-fs 0.14.1 breaks rclone's recursive listings
//! (it treats an empty `delimiter=` as a delimiter) and omits ETags from
//! listings (so ferry must HEAD every object), so neither tool can be
//! measured fairly on it. `--endpoint` measures any other store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry::remote::s3::{S3Config, S3Remote};
use ferry::{Body, Bucket, BucketConfig, PutOptions, SyncOptions};

use crate::Row;

pub(crate) const ACCESS: &str = "ferrybench";
pub(crate) const SECRET: &str = "ferrybenchsecret";

/// Where the S3 server is, and the process if we started it.
pub struct Server {
    pub endpoint: String,
    pub bucket: String,
    child: Option<Child>,
}

impl Server {
    /// True when this run started the server (it goes away with the run).
    pub(crate) fn started_here(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `s3s-fs` on a free loopback port with a `bench` bucket.
pub fn start_s3s(dir: &Path) -> Result<Server> {
    let bin = ["target/tools/bin/s3s-fs", "s3s-fs"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() || which(p))
        .context("no s3s-fs binary: run `cargo install s3s-fs --version 0.14.1 --features binary --root target/tools`")?;
    let root = dir.join("s3s-root");
    std::fs::create_dir_all(root.join("bench"))?;
    let port = free_port()?;
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            ACCESS,
            "--secret-key",
            SECRET,
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting s3s-fs")?;
    let server = Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "bench".into(),
        child: Some(child),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("s3s-fs did not start")
}

/// Starts moto on a free loopback port with a `bench` bucket.
pub fn start_moto(dir: &Path) -> Result<Server> {
    let bin = PathBuf::from("target/test-venv/bin/moto_server");
    if !bin.is_file() {
        bail!(
            "no moto: run ./scripts/test.sh once (it installs moto[server] into target/test-venv)"
        );
    }
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("moto.log"))?;
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting moto")?;
    let server = Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "bench".into(),
        child: Some(child),
    };
    for _ in 0..100 {
        let made = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{}/bench", server.endpoint)])
            .output()
            .is_ok_and(|o| o.status.success());
        if made {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("moto did not start")
}

pub fn external(endpoint: &str, bucket: &str) -> Server {
    Server {
        endpoint: endpoint.to_owned(),
        bucket: bucket.to_owned(),
        child: None,
    }
}

fn which(p: &Path) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {}", p.display()))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Configures an rclone command for `server` as the remote `bench:`
/// (no config file; AWS_CA_BUNDLE unset, which rclone would try to load).
pub(crate) fn rclone_env(cmd: &mut Command, server: &Server) {
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", &server.endpoint)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", ACCESS)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", SECRET)
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1");
}

fn rclone(server: &Server, args: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let mut cmd = Command::new("rclone");
    cmd.args(args);
    rclone_env(&mut cmd, server);
    let out = cmd
        .output()
        .context("running rclone (apt-get install rclone)")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "rclone {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// Overrides for ferry's push concurrency (0: the default), set from the command line.
pub static PUSH_CONCURRENCY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

async fn ferry_bucket(server: &Server, dir: &Path, name: &str) -> Result<Bucket> {
    let bucket = Bucket::create(dir.join(name), BucketConfig::default()).await?;
    let push = PUSH_CONCURRENCY.load(std::sync::atomic::Ordering::Relaxed);
    if push > 0 {
        let config = ferry::SyncConfig {
            push_concurrency: push,
            ..bucket.sync_config()?
        };
        bucket.set_sync_config(config).await?;
    }
    let remote = S3Remote::new(&S3Config {
        bucket: server.bucket.clone(),
        prefix: name.to_owned(),
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: Some(ACCESS.into()),
        secret_access_key: Some(SECRET.into()),
        session_token: None,
        ..Default::default()
    })?;
    bucket
        .attach(Arc::new(crate::counting::Counting(Arc::new(remote))))
        .await?;
    Ok(bucket)
}

async fn fill(bucket: &Bucket, dir: &Path, n: usize, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tasks = tokio::task::JoinSet::new();
    let per = n.div_ceil(16);
    for w in 0..16 {
        let b = bucket.clone();
        let data = data.to_vec();
        let dir = dir.to_owned();
        tasks.spawn(async move {
            for i in (w * per)..((w + 1) * per).min(n) {
                let name = format!("f{i:06}");
                std::fs::write(dir.join(&name), &data)?;
                b.put(&name, data.clone(), PutOptions::default()).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

pub(crate) fn time_row(
    name: String,
    ferry: Duration,
    rclone: Duration,
    target: f64,
    what: &str,
) -> Row {
    let ratio = ferry.as_secs_f64() / rclone.as_secs_f64();
    // Shown as soon as measured: the large figures can take many minutes.
    eprintln!(
        "measured: {name}: ferry {:.2} s, {what} {:.2} s, ratio {ratio:.2}",
        ferry.as_secs_f64(),
        rclone.as_secs_f64()
    );
    Row {
        name,
        ferry: format!("{:.2} s", ferry.as_secs_f64()),
        baseline: format!("{:.2} s {what}", rclone.as_secs_f64()),
        ratio,
        target: format!("≤ {target}× time"),
        ok: ratio <= target,
    }
}

async fn timed_sync(bucket: &Bucket) -> Result<(Duration, ferry::SyncReport)> {
    let start = Instant::now();
    let report = bucket.sync(SyncOptions::default()).await?;
    if !report.errors.is_empty() {
        bail!(
            "sync errors: {:?}",
            &report.errors[..report.errors.len().min(3)]
        );
    }
    Ok((start.elapsed(), report))
}

/// Which figures a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Push of many small objects and of one large one (`rclone copy`).
    pub push: bool,
    /// No-op and one-change syncs, large listings, RSS (`rclone bisync`).
    pub sync: bool,
}

pub async fn run(
    server: &Server,
    dir: &Path,
    small: usize,
    many: usize,
    big_mib: u64,
    parts: Parts,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = &dir.join(server.endpoint.replace([':', '/', '.'], "_"));
    std::fs::create_dir_all(dir)?;
    let data = vec![7u8; 4096];
    let bkt = &server.bucket;

    // Push of `small` × 4 KiB.
    let a = ferry_bucket(server, dir, "ferry-small").await?;
    let src = dir.join("rclone-small");
    fill(&a, &src, small, &data).await?;
    let rc = rclone(
        server,
        &[
            "copy",
            src.to_str().unwrap_or_default(),
            &format!("bench:{bkt}/rclone-small"),
            "--transfers",
            "16",
            "--checkers",
            "16",
        ],
    )?;
    let (fy, r) = timed_sync(&a).await?;
    anyhow::ensure!(r.pushed as usize == small, "pushed {} of {small}", r.pushed);
    rows.push(time_row(
        format!("push of {small} × 4 KiB"),
        fy,
        rc,
        0.5,
        "rclone copy",
    ));

    if !parts.push {
        rows.clear();
    }
    if !parts.sync {
        return push_big(server, dir, big_mib, rows).await;
    }

    // No-op sync of `small` objects.
    rclone(
        server,
        &[
            "bisync",
            src.to_str().unwrap_or_default(),
            &format!("bench:{bkt}/rclone-small"),
            "--resync",
            "--workdir",
            dir.join("bisync-small").to_str().unwrap_or_default(),
        ],
    )?;
    let rc = rclone(
        server,
        &[
            "bisync",
            src.to_str().unwrap_or_default(),
            &format!("bench:{bkt}/rclone-small"),
            "--workdir",
            dir.join("bisync-small").to_str().unwrap_or_default(),
        ],
    )?;
    let (fy, r) = timed_sync(&a).await?;
    anyhow::ensure!(r.pushed + r.pulled == 0, "no-op sync moved data: {r:?}");
    rows.push(time_row(
        format!("no-op sync of {small} objects"),
        fy,
        rc,
        0.1,
        "rclone bisync",
    ));

    // One changed object among `small`.
    std::fs::write(src.join("f000042"), b"changed")?;
    a.put("f000042", b"changed".to_vec(), PutOptions::default())
        .await?;
    let rc = rclone(
        server,
        &[
            "bisync",
            src.to_str().unwrap_or_default(),
            &format!("bench:{bkt}/rclone-small"),
            "--workdir",
            dir.join("bisync-small").to_str().unwrap_or_default(),
        ],
    )?;
    let (fy, r) = timed_sync(&a).await?;
    anyhow::ensure!(r.pushed == 1, "expected one push: {r:?}");
    rows.push(time_row(
        format!("sync of 1 changed among {small}"),
        fy,
        rc,
        0.1,
        "rclone bisync",
    ));
    drop(a);

    if parts.push {
        rows = push_big(server, dir, big_mib, rows).await?;
    }
    many_objects(server, dir, many, rows).await
}

async fn push_big(
    server: &Server,
    dir: &Path,
    big_mib: u64,
    mut rows: Vec<Row>,
) -> Result<Vec<Row>> {
    let bkt = &server.bucket;
    // Push of one large object.
    let big = dir.join("big-src");
    std::fs::create_dir_all(&big)?;
    let chunk = vec![0x5au8; 1 << 20];
    {
        use std::io::Write;
        let mut f = std::fs::File::create(big.join("big.bin"))?;
        for i in 0..big_mib {
            let mut c = chunk.clone();
            c[0] = i as u8;
            f.write_all(&c)?;
        }
    }
    let rc = rclone(
        server,
        &[
            "copy",
            big.to_str().unwrap_or_default(),
            &format!("bench:{bkt}/rclone-big"),
            "--s3-upload-concurrency",
            "4",
            "--s3-chunk-size",
            "8M",
        ],
    )?;
    let b = ferry_bucket(server, dir, "ferry-big").await?;
    let file = tokio::fs::File::open(big.join("big.bin")).await?;
    b.put("big.bin", Body::from_reader(file), PutOptions::default())
        .await?;
    let (fy, _) = timed_sync(&b).await?;
    rows.push(time_row(
        format!("push of one {big_mib} MiB object"),
        fy,
        rc,
        0.6,
        "rclone copy",
    ));
    drop(b);
    std::fs::remove_dir_all(&big)?;

    Ok(rows)
}

async fn many_objects(
    server: &Server,
    dir: &Path,
    many: usize,
    mut rows: Vec<Row>,
) -> Result<Vec<Row>> {
    let bkt = &server.bucket;
    // `many` objects: peak RSS while syncing, and a no-op sync.
    if many > 0 {
        let m = ferry_bucket(server, dir, "ferry-many").await?;
        let msrc = dir.join("rclone-many");
        fill(&m, &msrc, many, b"x").await?;
        crate::reset_peak_rss();
        let (_, r) = timed_sync(&m).await?;
        anyhow::ensure!(r.pushed as usize == many, "pushed {} of {many}", r.pushed);
        // The first sync after the push reads the journal (the push's own
        // records): the idle sync is the one after.
        timed_sync(&m).await?;
        let calls = crate::counting::requests();
        let (fy, r) = timed_sync(&m).await?;
        let idle_calls = crate::counting::requests() - calls;
        anyhow::ensure!(
            !r.full && r.pushed + r.pulled == 0,
            "not an idle journal sync: {r:?}"
        );
        let calls = crate::counting::requests();
        let full_start = Instant::now();
        let r = m
            .sync(SyncOptions {
                full: true,
                ..Default::default()
            })
            .await?;
        let full_time = full_start.elapsed();
        let full_calls = crate::counting::requests() - calls;
        anyhow::ensure!(
            r.full && r.pushed + r.pulled == 0,
            "not a no-op full sync: {r:?}"
        );
        let peak = crate::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
        rclone(
            server,
            &[
                "copy",
                msrc.to_str().unwrap_or_default(),
                &format!("bench:{bkt}/rclone-many"),
                "--transfers",
                "16",
                "--checkers",
                "16",
            ],
        )?;
        let wd = dir.join("bisync-many");
        rclone(
            server,
            &[
                "bisync",
                msrc.to_str().unwrap_or_default(),
                &format!("bench:{bkt}/rclone-many"),
                "--resync",
                "--workdir",
                wd.to_str().unwrap_or_default(),
            ],
        )?;
        let rc = rclone(
            server,
            &[
                "bisync",
                msrc.to_str().unwrap_or_default(),
                &format!("bench:{bkt}/rclone-many"),
                "--workdir",
                wd.to_str().unwrap_or_default(),
            ],
        )?;
        rows.push(time_row(
            format!("no-op sync of {many} objects (journal, {idle_calls} request(s))"),
            fy,
            rc,
            0.1,
            "rclone bisync",
        ));
        rows.push(time_row(
            format!(
                "no-op full reconcile of {many} objects ({full_calls} call(s), {} LIST page(s))",
                many.div_ceil(1000)
            ),
            full_time,
            rc,
            0.1,
            "rclone bisync",
        ));
        rows.push(Row {
            name: format!("peak RSS while syncing {many} objects"),
            ferry: format!("{peak:.1} MiB"),
            baseline: "-".into(),
            ratio: peak / 128.0,
            target: "≤ 128 MiB".into(),
            ok: peak <= 128.0,
        });
    }
    Ok(rows)
}
