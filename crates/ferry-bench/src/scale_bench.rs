//! Scale figures: `N` objects of 1 KiB through the `ferry` command, run as
//! child processes of the release binary (`target/release/ferry`, next to
//! this one), each beside a baseline measured in the same run: `cp -r` for
//! the import, `rclone copy` to the same kind of remote for the syncs (a
//! local folder, or the same S3 server).
//!
//! Each child's peak RSS is its `ru_maxrss`, read by GNU time
//! (`/usr/bin/time -f %M`, which waits for it with `wait4`): the workspace
//! forbids `unsafe`, so this crate cannot call `wait4` itself. Request
//! counts come from this process: once a child sync has exited, the bucket
//! is opened here, its remote wrapped in the counting layer, and a sync of
//! the same kind run again (connecting, as the command does, then syncing).

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use ferry::remote::spec::Credentials;
use ferry::{Bucket, SyncOptions};
use rand::RngCore;

use crate::counting::{requests, Counting};
use crate::sync_bench::{rclone_env, Server, ACCESS, SECRET};
use crate::Row;

/// GNU time: runs a command and writes its peak RSS (KiB) to a file.
const GNU_TIME: &str = "/usr/bin/time";

/// Size of each object.
const OBJECT_SIZE: usize = 1024;

/// Most files per folder of the source tree.
const PER_FOLDER: usize = 1000;

/// The issue's targets.
const RSS_LIMIT_MIB: f64 = 64.0;
const NOOP_LIMIT: Duration = Duration::from_millis(100);
const NOOP_REQUEST_LIMIT: u64 = 3;
const ONE_CHANGE_LIMIT: Duration = Duration::from_millis(300);
/// Daemon put-to-remote latency at `n` objects over the latency at 1k.
const LATENCY_RATIO_LIMIT: f64 = 1.2;
/// Objects in the small bucket the daemon latency is compared with.
const SMALL: usize = 1000;
/// Puts timed per daemon-latency figure (the median is reported).
const LATENCY_SAMPLES: usize = 7;

/// rclone's parallelism, as in the sync figures.
const RCLONE_PARALLEL: [&str; 4] = ["--transfers", "16", "--checkers", "16"];

/// The `ferry` binary next to this one (`cargo build --release -p ferry-cli`).
pub fn ferry_binary() -> Result<PathBuf> {
    let next_to_us = std::env::current_exe()
        .context("finding ferry-bench's own path")?
        .with_file_name("ferry");
    ensure!(
        next_to_us.is_file(),
        "no ferry binary at {}: build it with `cargo build --release -p ferry-bench -p ferry-cli`",
        next_to_us.display()
    );
    ensure!(
        Path::new(GNU_TIME).is_file(),
        "no GNU time at {GNU_TIME} (it reads the children's peak RSS): apt-get install time"
    );
    Ok(next_to_us)
}

/// What a child process took.
struct Measured {
    time: Duration,
    rss_mib: f64,
    stdout: String,
}

/// Runs `program` under GNU time; fails if it fails.
fn measure(
    rss_file: &Path,
    program: impl Into<OsString>,
    args: &[OsString],
    env: impl FnOnce(&mut Command),
) -> Result<Measured> {
    let program = program.into();
    let mut cmd = Command::new(GNU_TIME);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file)
        .arg(&program)
        .args(args)
        .stdin(Stdio::null());
    env(&mut cmd);
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    let time = start.elapsed();
    let shown = || {
        std::iter::once(&program)
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // GNU time writes "Command exited with non-zero status" lines first
    // when the child fails: the figure is the last line.
    let text = fs::read_to_string(rss_file).context("reading GNU time's output")?;
    let kib: f64 = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .with_context(|| {
            format!(
                "no peak RSS in GNU time's output for `{}`: {text:?}",
                shown()
            )
        })?;
    Ok(Measured {
        time,
        rss_mib: kib / 1024.0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn os(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_owned()).collect()
}

/// What `ferry sync --json` reported.
#[derive(Debug)]
struct Report {
    pushed: u64,
    pulled: u64,
    full: bool,
}

fn parse_report(stdout: &str) -> Result<Report> {
    let v: serde_json::Value =
        serde_json::from_str(stdout).with_context(|| format!("sync --json printed {stdout:?}"))?;
    let n = |f: &str| v.get(f).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let errors = v
        .get("errors")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let conflicts = v
        .get("conflicts")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    ensure!(
        errors == 0 && conflicts == 0,
        "sync reported {errors} error(s) and {conflicts} conflict(s): {stdout}"
    );
    Ok(Report {
        pushed: n("pushed"),
        pulled: n("pulled"),
        full: v.get("full").and_then(serde_json::Value::as_bool) == Some(true),
    })
}

/// Where both tools sync to, and how the commands reach it.
struct Setup<'a> {
    ferry: PathBuf,
    s3: Option<&'a Server>,
    /// `ferry init --remote` arguments.
    ferry_remote: Vec<OsString>,
    /// `ferry init --remote` arguments of the small bucket (daemon latency).
    ferry_remote_small: Vec<OsString>,
    /// rclone's destination (a folder, or `bench:BUCKET/PREFIX`).
    rclone_remote: String,
    rss_file: PathBuf,
}

impl Setup<'_> {
    fn ferry(&self, bucket: &Path, args: &[OsString]) -> Result<Measured> {
        let mut all = os(&[&"--bucket", &bucket, &"--quiet"]);
        all.extend_from_slice(args);
        measure(&self.rss_file, &self.ferry, &all, |cmd| self.ferry_env(cmd))
    }

    /// A `ferry` child's environment: nothing of ours leaks in; the S3
    /// server's keys when syncing to it.
    fn ferry_env(&self, cmd: &mut Command) {
        for var in [
            "FERRY_BUCKET",
            "FERRY_PASSPHRASE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_CA_BUNDLE",
        ] {
            cmd.env_remove(var);
        }
        if self.s3.is_some() {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS)
                .env("AWS_SECRET_ACCESS_KEY", SECRET);
        }
    }

    fn ferry_sync(&self, bucket: &Path, full: bool) -> Result<(Measured, Report)> {
        let mut args = os(&[&"sync", &"--json"]);
        if full {
            args.push("--full".into());
        }
        let m = self.ferry(bucket, &args)?;
        let r = parse_report(&m.stdout)?;
        Ok((m, r))
    }

    fn init(&self, bucket: &Path) -> Result<Measured> {
        self.init_with(bucket, &self.ferry_remote)
    }

    fn init_with(&self, bucket: &Path, remote: &[OsString]) -> Result<Measured> {
        // --plaintext: the second replica joins a remote that holds objects.
        let mut args = os(&[&"init", &"--plaintext", &"--remote"]);
        args.extend_from_slice(remote);
        self.ferry(bucket, &args)
    }

    /// The `ferry` command for a child that is not measured (`watch`).
    fn ferry_command(&self, bucket: &Path) -> Command {
        let mut cmd = Command::new(&self.ferry);
        cmd.arg("--bucket").arg(bucket).arg("--quiet");
        self.ferry_env(&mut cmd);
        cmd
    }

    /// The daemon's put-to-remote latency in `bucket` (median of
    /// [`LATENCY_SAMPLES`]): `ferry watch` runs as a child; each sample is
    /// a `ferry put` in another process, timed from its start until the
    /// object is on the remote (HEAD through the bucket's own remote spec).
    async fn daemon_latency(&self, bucket: &Path, scratch: &Path) -> Result<Duration> {
        let opened = Bucket::open(bucket).await?;
        let spec = opened.remote_spec()?.context("the bucket has no remote")?;
        let remote = spec.build_with(&self.credentials(), opened.sync_config()?.timeouts())?;
        drop(opened);
        let mut watch = self
            .ferry_command(bucket)
            .args(["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting ferry watch")?;
        let result = async {
            // Ready once the engine's first run (a full reconcile) is done.
            let stdout = watch.stdout.take().context("watch's stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            loop {
                let line = lines
                    .next()
                    .context("ferry watch exited before its first sync")??;
                if line.contains("\"sync-completed\"") {
                    break;
                }
                ensure!(
                    !line.contains("\"sync-failed\""),
                    "ferry watch's first sync failed: {line}"
                );
            }
            // Drain the rest of its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            let body = scratch.join("latency.bin");
            let mut samples = Vec::new();
            for i in 0..LATENCY_SAMPLES {
                rewrite(&body)?;
                let key = format!("latency/{}-{i}", std::process::id());
                let start = Instant::now();
                let status = self
                    .ferry_command(bucket)
                    .args(["put", &key])
                    .arg(&body)
                    .status()?;
                ensure!(status.success(), "ferry put {key}: {status}");
                loop {
                    if remote.head(&key).await?.is_some() {
                        break;
                    }
                    ensure!(
                        start.elapsed() < Duration::from_secs(120),
                        "{key} did not reach the remote in 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                samples.push(start.elapsed());
            }
            samples.sort();
            Ok(samples[samples.len() / 2])
        }
        .await;
        // SIGTERM: watch stops cleanly (a SIGKILL would mark a crash, and
        // the next open would collect garbage over the whole bucket).
        let stopped = Command::new("kill")
            .args(["-TERM", &watch.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = watch.kill();
        }
        let _ = watch.wait();
        result
    }

    fn rclone_cmd(&self, args: &[OsString]) -> Result<Measured> {
        measure(&self.rss_file, "rclone", args, |cmd| match self.s3 {
            Some(server) => rclone_env(cmd, server),
            None => {
                cmd.env_remove("AWS_CA_BUNDLE")
                    .env("RCLONE_CONFIG", "/dev/null");
            }
        })
    }

    /// `rclone copy FROM TO` with the sync figures' parallelism.
    fn rclone_copy(
        &self,
        from: &dyn AsRef<std::ffi::OsStr>,
        to: &dyn AsRef<std::ffi::OsStr>,
    ) -> Result<Measured> {
        let mut args = os(&[&"copy", from, to]);
        args.extend(RCLONE_PARALLEL.iter().map(OsString::from));
        self.rclone_cmd(&args)
    }

    /// HTTP requests of `rclone copy FROM TO` (S3 only: a folder takes none).
    fn rclone_requests(&self, from: &Path, log: &Path) -> Result<Option<u64>> {
        if self.s3.is_none() {
            return Ok(None);
        }
        let _ = fs::remove_file(log);
        let mut args = os(&[&"copy", &from, &self.rclone_remote]);
        args.extend(RCLONE_PARALLEL.iter().map(OsString::from));
        args.extend(os(&[&"--dump", &"headers", &"--log-file", &log]));
        self.rclone_cmd(&args)?;
        let mut count = 0;
        for line in BufReader::new(fs::File::open(log)?).lines() {
            if line?.contains("HTTP REQUEST") {
                count += 1;
            }
        }
        fs::remove_file(log)?;
        Ok(Some(count))
    }

    fn credentials(&self) -> Credentials {
        match self.s3 {
            Some(_) => Credentials {
                access_key_id: Some(ACCESS.into()),
                secret_access_key: Some(SECRET.into()),
                ..Default::default()
            },
            None => Credentials::default(),
        }
    }
}

/// Requests of one sync run in this process: (connect, sync).
async fn counted_sync(
    setup: &Setup<'_>,
    dir: &Path,
    full: bool,
) -> Result<(u64, u64, ferry::SyncReport)> {
    let bucket = Bucket::open(dir).await?;
    let spec = bucket.remote_spec()?.context("the bucket has no remote")?;
    let remote = spec.build_with(&setup.credentials(), bucket.sync_config()?.timeouts())?;
    let before = requests();
    bucket.attach(Arc::new(Counting(remote))).await?;
    let connect = requests() - before;
    let before = requests();
    let report = bucket
        .sync(SyncOptions {
            full,
            ..Default::default()
        })
        .await?;
    let sync = requests() - before;
    ensure!(
        report.errors.is_empty() && report.conflicts.is_empty(),
        "in-process sync: {report:?}"
    );
    drop(bucket);
    Ok((connect, sync, report))
}

/// `n` files of random bytes, at most [`PER_FOLDER`] per folder:
/// `d0042/f042123.bin`.
fn generate(src: &Path, n: usize) -> Result<()> {
    let mut rng = rand::rng();
    let mut data = vec![0u8; OBJECT_SIZE];
    for i in 0..n {
        let folder = src.join(format!("d{:04}", i / PER_FOLDER));
        if i % PER_FOLDER == 0 {
            fs::create_dir_all(&folder)?;
        }
        rng.fill_bytes(&mut data);
        fs::write(folder.join(format!("f{i:06}.bin")), &data)?;
    }
    Ok(())
}

fn rewrite(path: &Path) -> Result<()> {
    let mut data = vec![0u8; OBJECT_SIZE];
    rand::rng().fill_bytes(&mut data);
    fs::write(path, &data).with_context(|| format!("writing {}", path.display()))
}

fn show_time(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn report_row(row: Row) -> Row {
    // Shown as soon as measured: the large runs take many minutes.
    eprintln!(
        "measured: {}: ferry {}, baseline {}",
        row.name, row.ferry, row.baseline
    );
    row
}

fn time_row(
    name: String,
    ferry: Duration,
    base: Duration,
    what: &str,
    limit: Option<Duration>,
) -> Row {
    report_row(Row {
        name,
        ferry: show_time(ferry),
        baseline: format!("{} {what}", show_time(base)),
        ratio: ferry.as_secs_f64() / base.as_secs_f64(),
        target: limit.map_or_else(|| "info".into(), |l| format!("≤ {}", show_time(l))),
        ok: limit.is_none_or(|l| ferry <= l),
    })
}

fn rss_row(name: String, ferry: f64, base: f64, what: &str, limit: Option<f64>) -> Row {
    report_row(Row {
        name,
        ferry: format!("{ferry:.1} MiB"),
        baseline: format!("{base:.1} MiB {what}"),
        ratio: ferry / base,
        target: limit.map_or_else(|| "info".into(), |l| format!("≤ {l:.0} MiB")),
        ok: limit.is_none_or(|l| ferry <= l),
    })
}

fn requests_row(name: String, ferry: u64, base: Option<u64>, limit: Option<u64>) -> Row {
    report_row(Row {
        name,
        ferry: format!("{ferry}"),
        baseline: base.map_or_else(|| "- (local folder)".into(), |b| format!("{b} rclone copy")),
        ratio: base.map_or(f64::NAN, |b| ferry as f64 / b as f64),
        target: limit.map_or_else(|| "info".into(), |l| format!("≤ {l} req")),
        ok: limit.is_none_or(|l| ferry <= l),
    })
}

/// Measures the scale figures for `n` objects against a folder remote
/// (`s3` is `None`) or the S3 server.
pub async fn run(dir: &Path, n: usize, s3: Option<&Server>) -> Result<Vec<Row>> {
    ensure!(n >= 2, "--objects must be at least 2");
    let ferry = ferry_binary()?;
    let dir = &dir.join("scale");
    fs::create_dir_all(dir)?;
    let (ferry_remote, ferry_remote_small, rclone_remote, s3_prefix) = match s3 {
        None => {
            let abs = std::path::absolute(dir)?;
            let rclone = abs.join("remote-rclone");
            fs::create_dir_all(&rclone)?;
            let folder = |name: &str| {
                vec![OsString::from(format!(
                    "file://{}",
                    abs.join(name).display()
                ))]
            };
            (
                folder("remote-ferry"),
                folder("remote-small"),
                rclone.to_string_lossy().into_owned(),
                None,
            )
        }
        Some(server) => {
            // Unique per run: an external store keeps what earlier runs left.
            let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let prefix = format!("scale-{stamp}-{}", std::process::id());
            let s3_args = |name: &str| {
                os(&[
                    &format!("s3://{}/{prefix}/{name}", server.bucket),
                    &"--endpoint",
                    &server.endpoint,
                    &"--region",
                    &"us-east-1",
                    &"--path-style",
                ])
            };
            (
                s3_args("ferry"),
                s3_args("small"),
                format!("bench:{}/{prefix}/rclone", server.bucket),
                Some(prefix),
            )
        }
    };
    let setup = Setup {
        ferry,
        s3,
        ferry_remote,
        ferry_remote_small,
        rclone_remote,
        rss_file: dir.join("rss.txt"),
    };
    let result = figures(&setup, dir, n).await;
    if let (Some(server), Some(prefix)) = (s3, s3_prefix) {
        if server.started_here() {
            return result;
        }
        // Best effort: what both tools wrote on an external store.
        let purge = os(&[&"purge", &format!("bench:{}/{prefix}", server.bucket)]);
        if let Err(e) = setup.rclone_cmd(&purge) {
            eprintln!("could not remove {prefix} from the S3 bucket: {e:#}");
        }
    }
    result
}

async fn figures(setup: &Setup<'_>, dir: &Path, n: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let src = dir.join("src");
    eprintln!("scale: writing {n} source files of {OBJECT_SIZE} bytes");
    generate(&src, n)?;
    let replica_a = dir.join("replica-a");
    let replica_b = dir.join("replica-b");
    let rclone_log = dir.join("rclone.log");

    // 1. Import: `ferry cp -r` against `cp -r`.
    setup.init(&replica_a)?;
    let ferry = setup.ferry(&replica_a, &os(&[&"cp", &"-r", &src, &"ferry:data/"]))?;
    let copy = dir.join("cp-copy");
    let base = measure(&setup.rss_file, "cp", &os(&[&"-r", &src, &copy]), |_| {})?;
    fs::remove_dir_all(&copy)?;
    let what = format!("import of {n} × 1 KiB (ferry cp -r)");
    rows.push(time_row(
        format!("{what}: time"),
        ferry.time,
        base.time,
        "cp -r",
        None,
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        base.rss_mib,
        "cp -r",
        Some(RSS_LIMIT_MIB),
    ));

    // 2. First push to an empty remote.
    let (ferry, r) = setup.ferry_sync(&replica_a, false)?;
    ensure!(
        r.pushed as usize == n,
        "first push pushed {} of {n}: {r:?}",
        r.pushed
    );
    let base = setup.rclone_copy(&src, &setup.rclone_remote)?;
    let what = format!("first push of {n}");
    rows.push(time_row(
        format!("{what}: time"),
        ferry.time,
        base.time,
        "rclone copy",
        None,
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        base.rss_mib,
        "rclone copy",
        Some(RSS_LIMIT_MIB),
    ));

    // 3. No-op sync: time and RSS from the command, requests counted here.
    let (ferry, r) = setup.ferry_sync(&replica_a, false)?;
    ensure!(r.pushed + r.pulled == 0, "no-op sync moved data: {r:?}");
    let noop_was_full = r.full;
    let (connect, sync, report) = counted_sync(setup, &replica_a, false).await?;
    ensure!(
        report.pushed + report.pulled == 0,
        "in-process no-op sync moved data: {report:?}"
    );
    let noop_base = setup.rclone_copy(&src, &setup.rclone_remote)?;
    let noop_base_requests = setup.rclone_requests(&src, &rclone_log)?;
    let what = format!("no-op sync of {n}");
    let full_note = if noop_was_full {
        " (ran a full listing)"
    } else {
        ""
    };
    rows.push(time_row(
        format!("{what}: time{full_note}"),
        ferry.time,
        noop_base.time,
        "rclone copy",
        Some(NOOP_LIMIT),
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        noop_base.rss_mib,
        "rclone copy",
        Some(RSS_LIMIT_MIB),
    ));
    rows.push(requests_row(
        format!(
            "{what}: requests ({connect} connect + {sync} sync{})",
            if report.full { ", full" } else { "" }
        ),
        connect + sync,
        noop_base_requests,
        Some(NOOP_REQUEST_LIMIT),
    ));

    // 4. One changed object. The command's run is timed; a second change
    // is synced here to count requests.
    let changed = dir.join("changed.bin");
    rewrite(&changed)?;
    setup.ferry(
        &replica_a,
        &os(&[&"put", &"data/d0000/f000000.bin", &changed]),
    )?;
    let (ferry, r) = setup.ferry_sync(&replica_a, false)?;
    ensure!(r.pushed == 1 && r.pulled == 0, "one change: {r:?}");
    rewrite(&changed)?;
    setup.ferry(
        &replica_a,
        &os(&[&"put", &"data/d0000/f000001.bin", &changed]),
    )?;
    let (connect, sync, report) = counted_sync(setup, &replica_a, false).await?;
    ensure!(
        report.pushed == 1 && report.pulled == 0,
        "in-process one change: {report:?}"
    );
    rewrite(&src.join("d0000").join("f000000.bin"))?;
    let base = setup.rclone_copy(&src, &setup.rclone_remote)?;
    rewrite(&src.join("d0000").join("f000001.bin"))?;
    let base_requests = setup.rclone_requests(&src, &rclone_log)?;
    let what = format!("sync of 1 changed among {n}");
    rows.push(time_row(
        format!("{what}: time"),
        ferry.time,
        base.time,
        "rclone copy",
        Some(ONE_CHANGE_LIMIT),
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        base.rss_mib,
        "rclone copy",
        None,
    ));
    rows.push(requests_row(
        format!("{what}: requests ({connect} connect + {sync} sync)"),
        connect + sync,
        base_requests,
        None,
    ));

    // 5. Full reconcile with nothing changed (baseline: 3's rclone no-op).
    let (ferry, r) = setup.ferry_sync(&replica_a, true)?;
    ensure!(r.full && r.pushed + r.pulled == 0, "full reconcile: {r:?}");
    let (connect, sync, report) = counted_sync(setup, &replica_a, true).await?;
    ensure!(
        report.full && report.pushed + report.pulled == 0,
        "in-process full reconcile: {report:?}"
    );
    let what = format!("full reconcile of {n}, no change");
    rows.push(time_row(
        format!("{what}: time"),
        ferry.time,
        noop_base.time,
        "rclone copy",
        None,
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        noop_base.rss_mib,
        "rclone copy",
        None,
    ));
    rows.push(requests_row(
        format!("{what}: requests ({connect} connect + {sync} sync)"),
        connect + sync,
        noop_base_requests,
        None,
    ));

    // 6. First pull into a second replica of the same remote.
    let join = setup.init(&replica_b)?;
    let (ferry, r) = setup.ferry_sync(&replica_b, false)?;
    ensure!(
        r.pulled as usize == n && r.pushed == 0,
        "first pull pulled {} of {n}: {r:?}",
        r.pulled
    );
    let pulled = dir.join("rclone-pull");
    let base = setup.rclone_copy(&setup.rclone_remote, &pulled)?;
    fs::remove_dir_all(&pulled)?;
    rows.push(report_row(Row {
        name: format!("  (info) ferry init joining the remote of {n}: time, RSS"),
        ferry: show_time(join.time),
        baseline: format!("RSS {:.1} MiB, no baseline", join.rss_mib),
        ratio: f64::NAN,
        target: "info".into(),
        ok: true,
    }));
    let what = format!("first pull of {n} (2nd replica)");
    rows.push(time_row(
        format!("{what}: time"),
        ferry.time,
        base.time,
        "rclone copy",
        None,
    ));
    rows.push(rss_row(
        format!("{what}: peak RSS"),
        ferry.rss_mib,
        base.rss_mib,
        "rclone copy",
        Some(RSS_LIMIT_MIB),
    ));

    // 7. The daemon's put-to-remote latency at n objects against the same
    // at 1k objects (a bucket made here for it).
    let small = dir.join("replica-small");
    let small_src = dir.join("src-small");
    generate(&small_src, SMALL)?;
    setup.init_with(&small, &setup.ferry_remote_small)?;
    setup.ferry(&small, &os(&[&"cp", &"-r", &small_src, &"ferry:data/"]))?;
    let (_, r) = setup.ferry_sync(&small, false)?;
    ensure!(r.pushed as usize == SMALL, "small bucket push: {r:?}");
    let at_small = setup.daemon_latency(&small, dir).await?;
    let at_n = setup.daemon_latency(&replica_a, dir).await?;
    let ratio = at_n.as_secs_f64() / at_small.as_secs_f64();
    rows.push(report_row(Row {
        name: format!(
            "daemon put-to-remote latency at {n} (median of {LATENCY_SAMPLES}, `ferry put` beside `ferry watch`)"
        ),
        ferry: show_time(at_n),
        baseline: format!("{} at {SMALL} objects", show_time(at_small)),
        ratio,
        target: format!("≤ {LATENCY_RATIO_LIMIT}× the 1k figure"),
        ok: ratio <= LATENCY_RATIO_LIMIT,
    }));
    Ok(rows)
}
