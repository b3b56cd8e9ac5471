//! `--suite serve`: `ferry serve` against `s3s-fs` (the same S3 server
//! library without ferry's index), each a separate process on loopback,
//! driven by the same AWS SDK client in this process: 4 KiB PUT and GET
//! with 16 clients (requests/s), GET of a 1 GiB object (MB/s), and the
//! gateway's peak RSS during that GET (a fresh `ferry serve` process, so
//! its high-water mark is the GET's). The bucket it makes, `serve-bucket`
//! in the scratch directory, is the one `hostile_load` serves next.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::Row;

const AK: &str = "ferrybench";
const SK: &str = "ferrybenchsecret";
const CLIENTS: usize = 16;

/// A child process, killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(port: u16) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

/// Runs s3s-fs in this process until killed (`ferry-bench --serve-s3s-fs`).
pub fn run_s3s_fs(root: &Path, port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fs =
            s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("starting s3s-fs: {e:?}"))?;
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let http =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}

fn start_s3s_fs(dir: &Path) -> Result<(Proc, String)> {
    let root = dir.join("s3s-fs-root");
    std::fs::create_dir_all(root.join("bench"))?;
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--serve-s3s-fs")
        .arg(&root)
        .args(["--serve-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting s3s-fs")?;
    let p = Proc(child);
    wait_port(port)?;
    Ok((p, format!("http://127.0.0.1:{port}")))
}

/// A `ferry serve` of the bucket at `bucket`, named `bench`, on a free
/// loopback port: the process and its endpoint.
pub(crate) fn start_ferry(ferry: &Path, bucket: &Path) -> Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new(ferry)
        .current_dir(bucket)
        .env_remove("FERRY_BUCKET")
        .env("FERRY_SERVE_ACCESS_KEY_ID", AK)
        .env("FERRY_SERVE_SECRET_ACCESS_KEY", SK)
        .args([
            "-q",
            "serve",
            "--name",
            "bench",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ferry serve")?;
    let p = Proc(child);
    wait_port(port)?;
    Ok((p, format!("http://127.0.0.1:{port}")))
}

/// The peak RSS of a process so far (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

/// The AWS SDK client of every serve figure: path style, the bench's key.
pub(crate) fn client(endpoint: &str) -> Client {
    let creds = aws_sdk_s3::config::Credentials::new(AK, SK, None, None, "bench");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

/// `n` requests spread over [`CLIENTS`] tasks; requests per second.
async fn rate<F, Fut>(n: usize, op: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn small_rates(endpoint: &str, n: usize) -> Result<(f64, f64)> {
    let c = client(endpoint);
    let body = bytes::Bytes::from(vec![5u8; 4096]);
    let put = {
        let c = c.clone();
        rate(n, move |i| {
            let c = c.clone();
            let body = body.clone();
            async move {
                c.put_object()
                    .bucket("bench")
                    .key(format!("small/{i:06}"))
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .context("PUT")?;
                Ok(())
            }
        })
        .await?
    };
    let get = rate(n, move |i| {
        let c = c.clone();
        async move {
            let got = c
                .get_object()
                .bucket("bench")
                .key(format!("small/{:06}", (i * 7919) % n))
                .send()
                .await
                .context("GET")?;
            let body = got.body.collect().await.context("GET body")?.into_bytes();
            anyhow::ensure!(body.len() == 4096, "short body");
            Ok(())
        }
    })
    .await?;
    Ok((put, get))
}

async fn put_big(endpoint: &str, file: &Path) -> Result<()> {
    client(endpoint)
        .put_object()
        .bucket("bench")
        .key("big.bin")
        .body(ByteStream::from_path(file).await?)
        .send()
        .await
        .context("PUT of the large object")?;
    Ok(())
}

/// GET of the large object: MB/s.
async fn get_big(endpoint: &str, size: u64) -> Result<f64> {
    let c = client(endpoint);
    let start = Instant::now();
    let got = c
        .get_object()
        .bucket("bench")
        .key("big.bin")
        .send()
        .await
        .context("GET of the large object")?;
    let mut body = got.body;
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await? {
        n += chunk.len() as u64;
    }
    anyhow::ensure!(n == size, "the large GET returned {n} of {size} bytes");
    Ok(size as f64 / 1e6 / start.elapsed().as_secs_f64())
}

fn row(name: &str, ferry: f64, base: f64, unit: &str, target: f64) -> Row {
    let ratio = ferry / base;
    eprintln!("measured: {name}: ferry serve {ferry:.0} {unit}, s3s-fs {base:.0} {unit}, ratio {ratio:.2}");
    Row {
        name: name.to_owned(),
        ferry: format!("{ferry:.0} {unit}"),
        baseline: format!("{base:.0} {unit} s3s-fs"),
        ratio,
        target: format!("≥ {target}×"),
        ok: ratio >= target,
    }
}

pub async fn run(dir: &Path, n: usize, big_mib: u64) -> Result<Vec<Row>> {
    let ferry = crate::scale_bench::ferry_binary()?;
    let bucket: PathBuf = dir.join("serve-bucket");
    std::fs::create_dir_all(&bucket)?;
    let init = Command::new(&ferry)
        .current_dir(&bucket)
        .env_remove("FERRY_BUCKET")
        .args(["-q", "init"])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "ferry init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let (s3s, s3s_url) = start_s3s_fs(dir)?;
    let (serve, serve_url) = start_ferry(&ferry, &bucket)?;
    let mut rows = Vec::new();
    // Alternate which server goes first, so neither gets a cold cache alone.
    let (b_put, b_get) = small_rates(&s3s_url, n).await?;
    let (f_put, f_get) = small_rates(&serve_url, n).await?;
    rows.push(row(
        &format!("serve: 4 KiB PUT, {CLIENTS} clients"),
        f_put,
        b_put,
        "req/s",
        0.8,
    ));
    rows.push(row(
        &format!("serve: 4 KiB GET, {CLIENTS} clients"),
        f_get,
        b_get,
        "req/s",
        1.0,
    ));

    let big = dir.join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
        let chunk: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for _ in 0..big_mib {
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let size = big_mib << 20;
    put_big(&s3s_url, &big).await?;
    put_big(&serve_url, &big).await?;
    drop(serve);
    std::fs::remove_file(&big)?;
    // A fresh gateway process: its peak RSS is the GET's.
    let (serve, serve_url) = start_ferry(&ferry, &bucket)?;
    let b = get_big(&s3s_url, size).await?;
    let f = get_big(&serve_url, size).await?;
    let rss = peak_rss_mib(serve.0.id())?;
    rows.push(row(
        &format!("serve: GET of {big_mib} MiB"),
        f,
        b,
        "MB/s",
        0.9,
    ));
    eprintln!(
        "measured: serve: peak RSS of ferry serve during the {big_mib} MiB GET: {rss:.1} MiB"
    );
    rows.push(Row {
        name: format!("serve: peak RSS, {big_mib} MiB GET"),
        ferry: format!("{rss:.1} MiB"),
        baseline: "64 MiB budget".into(),
        ratio: rss / 64.0,
        target: "≤ 1.0× budget".into(),
        ok: rss <= 64.0,
    });
    drop(serve);
    drop(s3s);
    Ok(rows)
}
