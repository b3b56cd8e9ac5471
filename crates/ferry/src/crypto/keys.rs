//! Master key, passphrase wrapping and subkeys.
//!
//! Wrapped key format v1 (JSON, stored in the index and in the remote's
//! `.ferry/key.json`):
//! `{"version":1,"kdf":{"alg":"argon2id","m_kib":65536,"t":3,"p":1,"salt":"<b64>"},
//!   "nonce":"<b64 24 bytes>","ciphertext":"<b64 32+16 bytes>"}`;
//! the ciphertext is XChaCha20-Poly1305(KEK, nonce, master key, aad = "ferry-key v1"),
//! KEK = Argon2id(passphrase, salt, m, t, p) → 32 bytes.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const WRAP_AAD: &[u8] = b"ferry-key v1";

/// A 256-bit key, zeroized when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A fresh random key, from the OS RNG.
    pub fn random() -> Result<Self, CryptoError> {
        super::random::bytes().map(Key)
    }

    /// The subkey for `purpose` (BLAKE3 in key-derivation mode).
    pub fn derive(&self, purpose: Purpose) -> Key {
        Key(blake3::derive_key(purpose.context(), &self.0))
    }
}

/// What a subkey is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sealing blob content.
    Content,
    /// Keyed content hashes.
    Hash,
    /// Sealing content type and user metadata.
    Metadata,
    /// Encrypting object names on the remote.
    Names,
}

impl Purpose {
    fn context(self) -> &'static str {
        match self {
            Purpose::Content => "ferry 2026 v1 content",
            Purpose::Hash => "ferry 2026 v1 hash",
            Purpose::Metadata => "ferry 2026 v1 metadata",
            Purpose::Names => "ferry 2026 v1 names",
        }
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// The least memory a new wrapping may use: 19 MiB (OWASP's Argon2id
    /// minimum).
    pub const MIN_MEMORY_KIB: u32 = 19 * 1024;
    /// The most memory any wrapping may ask for: 1 GiB, which a phone can
    /// give.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// The fewest passes of a new wrapping.
    pub const MIN_PASSES: u32 = 2;
    /// The most passes of any wrapping.
    pub const MAX_PASSES: u32 = 16;
    /// The most lanes of any wrapping (and at least one).
    pub const MAX_LANES: u32 = 16;

    /// Checks the cost of a wrapping about to be made (a new bucket, a new
    /// passphrase): within the floor and the ceiling, so that it protects
    /// the key and every device can meet it. `wrap`, `rewrap` and the
    /// command's arguments all call this, before any work.
    pub fn check_new(&self) -> Result<(), CryptoError> {
        self.check_readable()?;
        if self.m_kib < Self::MIN_MEMORY_KIB {
            return Err(self.out_of_range(format!(
                "memory {} KiB is below the floor of {} KiB (19 MiB)",
                self.m_kib,
                Self::MIN_MEMORY_KIB
            )));
        }
        if self.t < Self::MIN_PASSES {
            return Err(self.out_of_range(format!(
                "{} pass(es) is below the floor of {}",
                self.t,
                Self::MIN_PASSES
            )));
        }
        Ok(())
    }

    /// Checks the cost of a wrapping met in a key file, before any Argon2
    /// work: the ceiling only (a forged file must not make a device spend
    /// gigabytes and minutes; files below the floor, written before it
    /// existed, still open).
    pub fn check_readable(&self) -> Result<(), CryptoError> {
        if self.m_kib > Self::MAX_MEMORY_KIB {
            return Err(self.out_of_range(format!(
                "memory {} KiB is above the ceiling of {} KiB (1 GiB)",
                self.m_kib,
                Self::MAX_MEMORY_KIB
            )));
        }
        if self.t > Self::MAX_PASSES {
            return Err(self.out_of_range(format!(
                "{} passes is above the ceiling of {}",
                self.t,
                Self::MAX_PASSES
            )));
        }
        if self.p == 0 || self.p > Self::MAX_LANES {
            return Err(self.out_of_range(format!(
                "{} lanes is outside 1 to {}",
                self.p,
                Self::MAX_LANES
            )));
        }
        // Argon2 needs at least 8 KiB per lane.
        if self.m_kib < 8 * self.p {
            return Err(
                self.out_of_range(format!("memory {} KiB is below 8 KiB per lane", self.m_kib))
            );
        }
        Ok(())
    }

    /// Work this cost asks for (memory × passes, in KiB): what a key file's
    /// cost is compared by.
    pub fn work(&self) -> u64 {
        u64::from(self.m_kib) * u64::from(self.t)
    }

    fn out_of_range(&self, detail: String) -> CryptoError {
        CryptoError::KdfOutOfRange(detail)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KdfRecord {
    alg: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

/// A master key wrapped under a passphrase (format v1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    version: u32,
    kdf: KdfRecord,
    nonce: String,
    ciphertext: String,
}

fn kek(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let argon_params = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    // The working memory is ours, so it is zeroized when dropped (the
    // crate's own `hash_password_into` frees it as it is; its `zeroize`
    // feature clears only its internal hashes).
    let mut memory = Zeroizing::new(vec![argon2::Block::default(); argon_params.block_count()]);
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into_with_memory(passphrase, salt, out.as_mut(), memory.as_mut_slice())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

impl WrappedKey {
    /// Wraps `master` under `passphrase` with a fresh salt and nonce.
    pub fn wrap(master: &Key, passphrase: &[u8], params: KdfParams) -> Result<Self, CryptoError> {
        params.check_new()?;
        let salt: [u8; 16] = super::random::bytes()?;
        let nonce: [u8; 24] = super::random::bytes()?;
        Self::wrap_with(master, passphrase, params, salt, nonce)
    }

    /// Wraps with the given salt and nonce (known-answer tests); the cost is
    /// not checked against the floor.
    pub fn wrap_with(
        master: &Key,
        passphrase: &[u8],
        params: KdfParams,
        salt: [u8; 16],
        nonce: [u8; 24],
    ) -> Result<Self, CryptoError> {
        let k = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(k.as_ref().into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &master.0,
                    aad: WRAP_AAD,
                },
            )
            .map_err(|_| CryptoError::Integrity("sealing the key failed".into()))?;
        Ok(WrappedKey {
            version: 1,
            kdf: KdfRecord {
                alg: "argon2id".into(),
                m_kib: params.m_kib,
                t: params.t,
                p: params.p,
                salt: B64.encode(salt),
            },
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        })
    }

    /// The Argon2id cost this wrapping asks for.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf.m_kib,
            t: self.kdf.t,
            p: self.kdf.p,
        }
    }

    /// Opens the wrapped key; a wrong passphrase is [`CryptoError::WrongPassphrase`].
    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<Key, CryptoError> {
        let bad = |detail: &str| CryptoError::Format {
            what: "wrapped key",
            detail: detail.to_owned(),
        };
        if self.version != 1 {
            return Err(bad(&format!(
                "version {} (this build reads 1)",
                self.version
            )));
        }
        if self.kdf.alg != "argon2id" {
            return Err(bad(&format!("KDF {:?}", self.kdf.alg)));
        }
        // Refuse absurd costs from a tampered record before spending them.
        self.params().check_readable()?;
        let salt = B64
            .decode(&self.kdf.salt)
            .map_err(|_| bad("salt is not base64"))?;
        let nonce = B64
            .decode(&self.nonce)
            .map_err(|_| bad("nonce is not base64"))?;
        let ct = B64
            .decode(&self.ciphertext)
            .map_err(|_| bad("ciphertext is not base64"))?;
        if salt.len() < 8 || nonce.len() != 24 || ct.len() != 48 {
            return Err(bad("field lengths"));
        }
        let params = KdfParams {
            m_kib: self.kdf.m_kib,
            t: self.kdf.t,
            p: self.kdf.p,
        };
        let k = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(k.as_ref().into());
        let mut pt = cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: WRAP_AAD,
                },
            )
            .map_err(|_| CryptoError::WrongPassphrase)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&pt);
        pt.zeroize();
        Ok(Key(key))
    }

    /// The KDF cost recorded in the wrapped key (as stored; not yet range-checked).
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf.m_kib,
            t: self.kdf.t,
            p: self.kdf.p,
        }
    }

    /// Re-wraps the same master key under a new passphrase (no data changes).
    pub fn rewrap(&self, old: &[u8], new: &[u8], params: KdfParams) -> Result<Self, CryptoError> {
        params.check_new()?;
        let master = self.unwrap_key(old)?;
        Self::wrap(&master, new, params)
    }

    /// Parses the JSON form.
    pub fn from_json(text: &[u8]) -> Result<Self, CryptoError> {
        serde_json::from_slice(text).map_err(|e| CryptoError::Format {
            what: "wrapped key",
            detail: e.to_string(),
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> Result<String, CryptoError> {
        serde_json::to_string(self).map_err(|e| CryptoError::Format {
            what: "wrapped key",
            detail: e.to_string(),
        })
    }
}

/// A keyed content hash: BLAKE3 keyed with the hash subkey, so equal
/// plaintexts cannot be recognized across buckets.
pub fn keyed_hash(hash_key: &Key, data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&hash_key.0, data).as_bytes()
}
