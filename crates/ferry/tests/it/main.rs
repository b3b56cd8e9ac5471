//! Integration tests for the `ferry` library: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api;
mod crypto;
mod encryption;
mod full_disk;
mod integrity;
mod keys;
mod list;
mod live;
mod plan;
mod sim;
mod streaming;
mod sync;

use std::fs;
use std::path::{Path, PathBuf};

use ferry::{Bucket, BucketConfig};
use tempfile::TempDir;

/// The default inline threshold: objects larger than this are blob files.
pub const INLINE: usize = 64 * 1024;

/// A fresh bucket in a temp dir; the bucket lives in `<tempdir>/bucket`.
pub async fn new_bucket() -> (TempDir, Bucket) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::create(tmp.path().join("bucket"), BucketConfig::default())
        .await
        .expect("create bucket");
    (tmp, bucket)
}

/// Closes `bucket` (waiting for its writer thread) and opens its directory again.
pub async fn reopen(bucket: Bucket) -> Bucket {
    let dir = bucket.dir().to_owned();
    drop(bucket);
    Bucket::open(&dir).await.expect("reopen bucket")
}

/// Every regular file below `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The blob files of the bucket in `dir`.
pub fn blob_files(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("blobs"))
}

/// The temp files of the bucket in `dir`.
pub fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("tmp"))
}

/// Where the blob for `hash` lives in the bucket in `dir`.
pub fn blob_path(dir: &Path, hash: &ferry::ContentHash) -> PathBuf {
    let hex = hash.to_hex();
    dir.join("blobs").join(&hex[..2]).join(hex)
}

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// A tiny deterministic generator, so tests need no seeded RNG crate.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }
}
