//! Master key, passphrase wrapping and subkeys.
//!
//! Wrapped key (JSON, inside a key file: the index's `encryption` setting
//! and the remote's `.ferry/key.json`):
//! `{"version":2,"kdf":{"alg":"argon2id","m_kib":65536,"t":3,"p":1,"salt":"<b64>"},
//!   "nonce":"<b64 24 bytes>","ciphertext":"<b64 32+16 bytes>","check":"<b64 16 bytes>"}`;
//! KEK = Argon2id(passphrase, salt, m, t, p) → 32 bytes, and
//! - version 2 (key files v3): ciphertext = XChaCha20-Poly1305(KEK, nonce,
//!   master key, aad = the key file's header, see `KeyFile`), check = the
//!   first 16 bytes of BLAKE3-derive-key("ferry 2026 v3 passphrase check",
//!   KEK): a wrong passphrase fails the check, an altered header (format,
//!   version, epoch, key id) fails the AEAD;
//! - version 1 (key files v1 and v2, read): aad = "ferry-key v1", no check.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const WRAP_AAD: &[u8] = b"ferry-key v1";
const CHECK_CONTEXT: &str = "ferry 2026 v3 passphrase check";

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

    /// How much more work (memory × passes) a key file met from elsewhere
    /// may ask for than this device affords.
    pub const MAX_COST_RISE: u64 = 8;

    /// Checks the cost of a key file met from elsewhere (a remote's, one
    /// being joined), before any Argon2 work: within the ceiling, and at
    /// most [`Self::MAX_COST_RISE`] times the work of `afford`, what this
    /// device affords (its own copy's cost, or for a device joining, the
    /// cost it would wrap a new key with). A forged file must not cost a
    /// device gigabytes and minutes before anything else is checked.
    pub fn check_affordable(&self, afford: KdfParams) -> Result<(), CryptoError> {
        self.check_readable()?;
        if self.work() > Self::MAX_COST_RISE * afford.work().max(1) {
            return Err(self.out_of_range(format!(
                "the key file asks for {} KiB × {} passes, more than {}× the work of the {} KiB × {} \
                 this device affords (a forged key file, or one made with a far higher cost: if \
                 this device can afford it, say so with a cost at least 1/{} of it)",
                self.m_kib,
                self.t,
                Self::MAX_COST_RISE,
                afford.m_kib,
                afford.t,
                Self::MAX_COST_RISE
            )));
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

/// A master key wrapped under a passphrase: version 1 (a constant
/// associated data) or 2 (bound to the caller's associated data, with a
/// passphrase check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    version: u32,
    kdf: KdfRecord,
    nonce: String,
    ciphertext: String,
    /// Version 2: tells a wrong passphrase from altered associated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<String>,
}

/// The passphrase check of a version 2 wrapping.
fn passphrase_check(kek: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::derive_key(CHECK_CONTEXT, kek)[..16]);
    out
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
    /// Wraps `master` under `passphrase` with a fresh salt and nonce
    /// (version 1: what key files v1 and v2 hold).
    pub fn wrap(master: &Key, passphrase: &[u8], params: KdfParams) -> Result<Self, CryptoError> {
        params.check_new()?;
        let salt: [u8; 16] = super::random::bytes()?;
        let nonce: [u8; 24] = super::random::bytes()?;
        Self::wrap_with(master, passphrase, params, salt, nonce)
    }

    /// Wraps `master` under `passphrase` bound to `aad` (version 2), with a
    /// fresh salt and nonce.
    pub fn wrap_bound(
        master: &Key,
        passphrase: &[u8],
        params: KdfParams,
        aad: &[u8],
    ) -> Result<Self, CryptoError> {
        params.check_new()?;
        let salt: [u8; 16] = super::random::bytes()?;
        let nonce: [u8; 24] = super::random::bytes()?;
        Self::wrap_bound_with(master, passphrase, params, salt, nonce, aad)
    }

    /// [`WrappedKey::wrap_bound`] with the given salt and nonce
    /// (known-answer tests); the cost is not checked against the floor.
    pub fn wrap_bound_with(
        master: &Key,
        passphrase: &[u8],
        params: KdfParams,
        salt: [u8; 16],
        nonce: [u8; 24],
        aad: &[u8],
    ) -> Result<Self, CryptoError> {
        let k = kek(passphrase, &salt, params)?;
        let mut wrapped = Self::seal(&k, master, params, salt, nonce, aad)?;
        wrapped.version = 2;
        wrapped.check = Some(B64.encode(passphrase_check(&k)));
        Ok(wrapped)
    }

    fn seal(
        k: &[u8; 32],
        master: &Key,
        params: KdfParams,
        salt: [u8; 16],
        nonce: [u8; 24],
        aad: &[u8],
    ) -> Result<Self, CryptoError> {
        let cipher = XChaCha20Poly1305::new(k.into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &master.0,
                    aad,
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
            check: None,
        })
    }

    /// The wrapping's version: 1 (constant associated data) or 2 (bound).
    pub fn version(&self) -> u32 {
        self.version
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
        Self::seal(&k, master, params, salt, nonce, WRAP_AAD)
    }

    /// The Argon2id cost this wrapping asks for.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf.m_kib,
            t: self.kdf.t,
            p: self.kdf.p,
        }
    }

    /// Opens a version 1 wrapping; a wrong passphrase is
    /// [`CryptoError::WrongPassphrase`]. A version 2 wrapping is refused
    /// (it opens only with what it is bound to: [`WrappedKey::unwrap_bound`]).
    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<Key, CryptoError> {
        match self.open(passphrase, &[WRAP_AAD], 1)? {
            Some((key, _)) => Ok(key),
            None => Err(CryptoError::WrongPassphrase),
        }
    }

    /// Opens a version 1 wrapping, and when its constant associated data
    /// does not open it, tries `bound` (one more AEAD, no more Argon2):
    /// `Ok((key, true))` when only `bound` opens it. Tells a key file
    /// edited down to an older version from a wrong passphrase.
    pub fn unwrap_key_or_bound(
        &self,
        passphrase: &[u8],
        bound: &[u8],
    ) -> Result<(Key, bool), CryptoError> {
        match self.open(passphrase, &[WRAP_AAD, bound], 1)? {
            Some((key, which)) => Ok((key, which == 1)),
            None => Err(CryptoError::WrongPassphrase),
        }
    }

    /// Opens a version 2 wrapping bound to `aad`: a wrong passphrase is
    /// [`CryptoError::WrongPassphrase`], other associated data (an altered
    /// key file header) [`CryptoError::Integrity`].
    pub fn unwrap_bound(&self, passphrase: &[u8], aad: &[u8]) -> Result<Key, CryptoError> {
        match self.open(passphrase, &[aad], 2)? {
            Some((key, _)) => Ok(key),
            None => Err(CryptoError::Integrity(
                "the key file's header (format, version, epoch or key id) is not the one its key \
                 was wrapped with: the file was altered"
                    .into(),
            )),
        }
    }

    /// Derives the KEK once and opens the key with the first of `aads`
    /// that opens it (`Some` with its index; `None`: none does). Version 2
    /// checks the passphrase first (a wrong one is
    /// [`CryptoError::WrongPassphrase`]), so there `None` means other
    /// associated data.
    fn open(
        &self,
        passphrase: &[u8],
        aads: &[&[u8]],
        version: u32,
    ) -> Result<Option<(Key, usize)>, CryptoError> {
        let bad = |detail: &str| CryptoError::Format {
            what: "wrapped key",
            detail: detail.to_owned(),
        };
        if self.version != version {
            return Err(bad(&format!(
                "version {} where version {version} was expected",
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
        let check = match (&self.check, version) {
            (Some(c), 2) => Some(B64.decode(c).map_err(|_| bad("check is not base64"))?),
            (None, 2) => return Err(bad("version 2 without its check")),
            (Some(_), _) => return Err(bad("a check in a version 1 wrapping")),
            (None, _) => None,
        };
        if salt.len() < 8
            || nonce.len() != 24
            || ct.len() != 48
            || check.as_ref().is_some_and(|c| c.len() != 16)
        {
            return Err(bad("field lengths"));
        }
        let k = kek(passphrase, &salt, self.params())?;
        // The check is public (it is in the file), so a plain comparison
        // leaks nothing a guesser does not already have.
        if check.is_some_and(|c| c[..] != passphrase_check(&k)) {
            return Err(CryptoError::WrongPassphrase);
        }
        let cipher = XChaCha20Poly1305::new(k.as_ref().into());
        for (i, aad) in aads.iter().enumerate() {
            if let Ok(mut pt) =
                cipher.decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad })
            {
                let mut key = [0u8; 32];
                key.copy_from_slice(&pt);
                pt.zeroize();
                return Ok(Some((Key(key), i)));
            }
        }
        Ok(None)
    }

    /// The KDF cost recorded in the wrapped key (as stored; not yet range-checked).
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf.m_kib,
            t: self.kdf.t,
            p: self.kdf.p,
        }
    }

    /// Re-wraps the same master key under a new passphrase (version 1 to
    /// version 1; no data changes).
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
