//! End-to-end encryption, pinned by known-answer tests (see
//! `docs/design.md`, "Encryption").
//!
//! - [`keys`]: a random 256-bit master key wrapped under a passphrase with
//!   Argon2id + XChaCha20-Poly1305; subkeys derived with BLAKE3's KDF mode.
//! - [`stream`]: STREAM-style chunked AEAD for blobs: v2 (a key per blob
//!   from a random salt, AES-256-GCM or ChaCha20-Poly1305, counter nonces)
//!   written, v1 (XChaCha20-Poly1305) read; 64 KiB chunks, last-chunk flag.
//! - [`names`]: deterministic per-segment name encryption (AES-SIV).
//! - [`random`]: every key, salt and nonce seed, from the OS RNG.
//! - [`keyring`]: the key file (wrapped key + key id) and an unlocked
//!   bucket's subkeys with the operations built on them.

pub mod keyring;
pub mod keys;
pub mod names;
pub mod random;
pub mod stream;

/// Why decryption or unwrapping failed. Every failure is an integrity
/// failure: no partial plaintext is ever returned as success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The passphrase does not open the wrapped key.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The data is not in a format this build reads.
    #[error("unrecognized {what} format: {detail}")]
    Format {
        /// What was being decoded.
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
    /// Authentication failed: the data was modified, truncated, reordered or swapped.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A KDF cost outside what ferry accepts (see `KdfParams::check_new`).
    #[error("Argon2id cost out of range: {0}")]
    KdfOutOfRange(String),
    /// The key derivation function failed (bad parameters).
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// The OS random number generator failed (nothing was sealed).
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}
