//! Encryption figures, each beside its baseline in the same run:
//! - seal and open throughput on one core vs plain BLAKE3 hashing of the
//!   same data (target ≥ 1 GB/s), with the bare AEAD primitive's own
//!   throughput as the ceiling;
//! - 10,000 durable 4 KiB puts into an encrypted bucket vs a plaintext one
//!   (target ≤ 1.3× the time);
//! - push of one 1 GiB object from an encrypted bucket vs a plaintext one,
//!   to the same S3 server (target ≤ 1.3× the time).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use ferry::crypto::keyring::Keyring;
use ferry::crypto::keys::Key;
use ferry::remote::s3::{S3Config, S3Remote};
use ferry::{Body, Bucket, BucketConfig, KdfParams, PutOptions, SyncOptions};

use crate::sync_bench::Server;
use crate::Row;

const GB: f64 = 1e9;

fn throughput_row(name: &str, bytes: usize, secs: f64, blake3_secs: f64) -> Row {
    let gbs = bytes as f64 / secs / GB;
    let base = bytes as f64 / blake3_secs / GB;
    Row {
        name: name.into(),
        ferry: format!("{gbs:.2} GB/s"),
        baseline: format!("{base:.2} GB/s BLAKE3"),
        ratio: gbs / base,
        target: "≥ 1 GB/s".into(),
        ok: gbs >= 1.0,
    }
}

fn time_ratio_row(name: String, enc: f64, plain: f64, what: &str) -> Row {
    let ratio = enc / plain;
    Row {
        name,
        ferry: format!("{enc:.2} s"),
        baseline: format!("{plain:.2} s {what}"),
        ratio,
        target: "≤ 1.3×".into(),
        ok: ratio <= 1.3,
    }
}

/// Seal and open throughput of one core over `mib` MiB.
pub fn throughput(mib: usize) -> Result<Vec<Row>> {
    let data = crate::random_bytes(mib << 20);
    let keys = Keyring::new(&Key([3u8; 32]));
    // Best of three of each, the baseline first.
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            f()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let hash = best(&mut || {
        std::hint::black_box(blake3::hash(&data));
        Ok(())
    })?;
    // The AEAD primitive alone, in place on 64 KiB chunks: the ceiling
    // ferry's framing (copies, headers, I/O) is measured against.
    let cipher = XChaCha20Poly1305::new(&[3u8; 32].into());
    let mut scratch = data.clone();
    let primitive = best(&mut || {
        for (i, chunk) in scratch.chunks_mut(64 << 10).enumerate() {
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = cipher
                .encrypt_in_place_detached(&nonce.into(), b"bench", chunk)
                .map_err(|_| anyhow::anyhow!("sealing failed"))?;
            std::hint::black_box(tag);
        }
        Ok(())
    })?;
    drop(scratch);
    let mut sealed = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    let seal = best(&mut || {
        sealed.clear();
        let mut s = keys.blob_sealer(&mut sealed)?;
        for piece in data.chunks(1 << 20) {
            s.write_all(piece)?;
        }
        s.finish()?;
        Ok(())
    })?;
    let open = best(&mut || {
        let mut o = keys.blob_opener(&sealed[..])?;
        let mut buf = vec![0u8; 1 << 20];
        while o.read(&mut buf)? > 0 {}
        Ok(())
    })?;
    let mut ceiling = throughput_row(
        "XChaCha20-Poly1305 alone, in place",
        data.len(),
        primitive,
        hash,
    );
    ceiling.target = "info".into();
    Ok(vec![
        ceiling,
        throughput_row(
            &format!("seal of {mib} MiB, one core"),
            data.len(),
            seal,
            hash,
        ),
        throughput_row(
            &format!("open of {mib} MiB, one core"),
            data.len(),
            open,
            hash,
        ),
    ])
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
