//! Encryption figures (sealed blobs v2), each beside its baseline in the
//! same run:
//! - seal and open on one core vs the bare AEAD (AES-256-GCM from aws-lc,
//!   in place on 64 KiB chunks: the ceiling), target ≥ 2.5 GB/s;
//! - seal and open of 1 GiB on every core vs one core, target ≥ 1.6× on two;
//! - 10,000 durable 4 KiB puts into an encrypted bucket vs a plaintext one
//!   (target ≤ 1.1× the time);
//! - push of one 1 GiB object from an encrypted bucket vs a plaintext one,
//!   to the same S3 server (target ≤ 1.1× the time).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ferry::crypto::keys::Key;
use ferry::crypto::stream::{Aead, Opener, Sealer};
use ferry::remote::s3::{S3Config, S3Remote};
use ferry::{Body, Bucket, BucketConfig, KdfParams, PutOptions, SyncOptions};

use crate::sync_bench::Server;
use crate::Row;

const GB: f64 = 1e9;

fn time_ratio_row(name: String, enc: f64, plain: f64, what: &str) -> Row {
    let ratio = enc / plain;
    Row {
        name,
        ferry: format!("{enc:.2} s"),
        baseline: format!("{plain:.2} s {what}"),
        ratio,
        target: "≤ 1.1×".into(),
        ok: ratio <= 1.1,
    }
}

/// Best of three runs of `f`, in seconds.
fn best(f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn seal_all(data: &[u8], out: &mut Vec<u8>, aead: Aead, one_core: bool) -> Result<()> {
    out.clear();
    let s = Sealer::with_salt(&Key([3u8; 32]), b"bench", aead, [7; 16], out)?;
    let mut s = if one_core {
        s.single_threaded()
    } else {
        s.multi_threaded()
    };
    for piece in data.chunks(1 << 20) {
        s.write_all(piece)?;
    }
    s.finish()?;
    Ok(())
}

fn open_all(sealed: &[u8], one_core: bool) -> Result<()> {
    let o = Opener::new(&Key([3u8; 32]), b"bench", sealed)?;
    let mut o = if one_core {
        o.single_threaded()
    } else {
        o.multi_threaded()
    };
    let mut buf = vec![0u8; 1 << 20];
    while o.read(&mut buf)? > 0 {}
    Ok(())
}

/// Seal and open throughput over `mib` MiB: one core against the bare
/// AEAD, and every core against one.
pub fn throughput(mib: usize) -> Result<Vec<Row>> {
    let data = crate::random_bytes(mib << 20);
    // The AEAD primitive alone, in place on 64 KiB chunks: the ceiling
    // ferry's framing (key derivation, copies, headers) is measured against.
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[3u8; 32])
            .map_err(|_| anyhow::anyhow!("AES-256-GCM key setup failed"))?,
    );
    let mut scratch = data.clone();
    let primitive = best(&mut || {
        for (i, chunk) in scratch.chunks_mut(64 << 10).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(b"bench"),
                    chunk,
                )
                .map_err(|_| anyhow::anyhow!("sealing failed"))?;
            let _ = std::hint::black_box(tag);
        }
        Ok(())
    })?;
    drop(scratch);
    let mut sealed = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gbs = |secs: f64| data.len() as f64 / secs / GB;
    let ceiling = gbs(primitive);
    let mut rows = vec![Row {
        name: "AES-256-GCM alone (aws-lc), in place, one core".into(),
        ferry: format!("{ceiling:.2} GB/s"),
        baseline: "-".into(),
        ratio: 1.0,
        target: "info".into(),
        ok: true,
    }];
    for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
        let seal1 = best(&mut || seal_all(&data, &mut sealed, aead, true))?;
        let open1 = best(&mut || open_all(&sealed, true))?;
        let seal_n = best(&mut || seal_all(&data, &mut sealed, aead, false))?;
        let open_n = best(&mut || open_all(&sealed, false))?;
        let used = if aead == Aead::preferred() {
            " (used here)"
        } else {
            ""
        };
        for (what, one, many) in [("seal", seal1, seal_n), ("open", open1, open_n)] {
            rows.push(Row {
                name: format!("{what} of {mib} MiB, {aead:?}{used}, one core"),
                ferry: format!("{:.2} GB/s", gbs(one)),
                baseline: format!("{ceiling:.2} GB/s bare AES-GCM"),
                ratio: gbs(one) / ceiling,
                target: if aead == Aead::Aes256Gcm {
                    "≥ 2.5 GB/s".into()
                } else {
                    "info".into()
                },
                ok: aead != Aead::Aes256Gcm || gbs(one) >= 2.5,
            });
            rows.push(Row {
                name: format!("{what} of {mib} MiB, {aead:?}, {cores} cores"),
                ferry: format!("{:.2} GB/s", gbs(many)),
                baseline: format!("{:.2} GB/s one core", gbs(one)),
                ratio: one / many,
                target: "≥ 1.6× on 2 cores".into(),
                ok: one / many >= 1.6,
            });
        }
    }
    Ok(rows)
}

/// Cheap KDF: the figures are about data, not unlocking.
const KDF: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};

/// Sequential durable 4 KiB puts, encrypted vs plaintext.
pub async fn puts(dir: &Path, n: usize) -> Result<Vec<Row>> {
    let small = crate::random_bytes(4096);
    let mut secs = Vec::new();
    for encrypted in [false, true] {
        let path = dir.join(if encrypted { "enc-puts" } else { "plain-puts" });
        let bucket = if encrypted {
            Bucket::create_encrypted(&path, BucketConfig::default(), b"bench", KDF).await?
        } else {
            Bucket::create(&path, BucketConfig::default()).await?
        };
        let start = Instant::now();
        for i in 0..n {
            bucket
                .put(
                    &format!("k/{i}"),
                    bytes::Bytes::copy_from_slice(&small),
                    PutOptions::default(),
                )
                .await?;
        }
        secs.push(start.elapsed().as_secs_f64());
    }
    Ok(vec![time_ratio_row(
        format!("{n} durable 4 KiB puts, encrypted"),
        secs[1],
        secs[0],
        "plaintext",
    )])
}

async fn attached(server: &Server, dir: &Path, name: &str, encrypted: bool) -> Result<Bucket> {
    let path = dir.join(name);
    let bucket = if encrypted {
        Bucket::create_encrypted(&path, BucketConfig::default(), b"bench", KDF).await?
    } else {
        Bucket::create(&path, BucketConfig::default()).await?
    };
    let remote = S3Remote::new(&S3Config {
        bucket: server.bucket.clone(),
        prefix: name.to_owned(),
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: Some(crate::sync_bench::ACCESS.into()),
        secret_access_key: Some(crate::sync_bench::SECRET.into()),
        session_token: None,
        ..Default::default()
    })?;
    bucket.attach(Arc::new(remote)).await?;
    Ok(bucket)
}

/// Push of one `mib` MiB object, encrypted vs plaintext, same server.
pub async fn push(server: &Server, dir: &Path, mib: u64) -> Result<Vec<Row>> {
    let mut secs = Vec::new();
    for (i, encrypted) in [false, true].into_iter().enumerate() {
        let b = attached(server, dir, &format!("crypto-push-{i}"), encrypted).await?;
        let body = Body::from_reader(crate::Repeat::new(crate::random_bytes(1 << 20), mib << 20));
        b.put("big.bin", body, PutOptions::default()).await?;
        let start = Instant::now();
        let r = b.sync(SyncOptions::default()).await?;
        anyhow::ensure!(
            r.errors.is_empty() && r.pushed == 1,
            "push failed: {:?}",
            r.errors
        );
        secs.push(start.elapsed().as_secs_f64());
        let d = b.dir().to_owned();
        drop(b);
        std::fs::remove_dir_all(d)?;
    }
    Ok(vec![time_ratio_row(
        format!("push of one {mib} MiB object, encrypted"),
        secs[1],
        secs[0],
        "plaintext",
    )])
}
