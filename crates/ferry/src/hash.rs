//! Content hashes: BLAKE3 digests that name blobs and detect changes.

use std::fmt;
use std::str::FromStr;

/// A 32-byte BLAKE3 digest of an object's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hashes `data` in one call.
    pub fn of(data: &[u8]) -> Self {
        ContentHash(*blake3::hash(data).as_bytes())
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a digest from the 32 raw bytes stored in the index.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(ContentHash)
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        ContentHash(*h.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

/// The text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a content hash (expected 64 hex digits): {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for ContentHash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError(s.to_owned()))?;
        Ok(ContentHash(out))
    }
}

/// A digest of an object's content type and user metadata: with the
/// content hash, it names a *version* (a change of either is a change).
/// Keyed like content hashes in an encrypted bucket, so the index holds
/// nothing that confirms a guessed plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetaDigest(pub [u8; 32]);

impl MetaDigest {
    /// The digest of `content_type` and `metadata`, with `hasher` (a plain
    /// BLAKE3 hasher, or the bucket's keyed one).
    pub fn with(
        hasher: &mut blake3::Hasher,
        content_type: &str,
        metadata: &crate::metadata::Metadata,
    ) -> Self {
        hasher.update(b"ferry meta v1\0");
        let mut field = |s: &str| {
            hasher.update(&(s.len() as u64).to_le_bytes());
            hasher.update(s.as_bytes());
        };
        field(content_type);
        for (name, value) in metadata {
            field(name);
            field(value);
        }
        MetaDigest(*hasher.finalize().as_bytes())
    }

    /// The unkeyed digest (plaintext buckets).
    pub fn of(content_type: &str, metadata: &crate::metadata::Metadata) -> Self {
        Self::with(&mut blake3::Hasher::new(), content_type, metadata)
    }

    /// Reads a digest from the 32 raw bytes stored in the index.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(MetaDigest)
    }
}

impl fmt::Debug for MetaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetaDigest({})", &hex::encode(self.0)[..16])
    }
}

/// The id of a version (content hash and metadata digest) as it travels in
/// `ferry-base`: 32 hex digits. A version whose metadata digest is unknown
/// (rows older than schema v4) uses zeros for it.
pub fn version_id(hash: &ContentHash, meta: Option<&MetaDigest>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"ferry version v1\0");
    h.update(&hash.0);
    h.update(&meta.map(|m| m.0).unwrap_or([0; 32]));
    hex::encode(&h.finalize().as_bytes()[..16])
}
