//! Object names on an encrypted remote (format v1): each `/`-separated
//! segment is encrypted on its own with AES-SIV (deterministic, so the same
//! name always maps to the same remote name and prefix scopes on whole
//! segments still work) and written as unpadded base64url.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::Engine as _;

use super::keys::Key;
use super::CryptoError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const HEADER: &[u8] = b"ferry-name v1";

fn cipher(names_key: &Key) -> Aes256Siv {
    // AES-SIV-256 takes a 512-bit key: expand the 256-bit subkey.
    let mut wide = [0u8; 64];
    let mut xof = blake3::Hasher::new_derive_key("ferry 2026 v1 names siv")
        .update(&names_key.0)
        .finalize_xof();
    xof.fill(&mut wide);
    let c = Aes256Siv::new((&wide).into());
    zeroize::Zeroize::zeroize(&mut wide);
    c
}

/// Encrypts a key name segment by segment.
pub fn encrypt_name(names_key: &Key, name: &str) -> Result<String, CryptoError> {
    let mut c = cipher(names_key);
    let mut out = Vec::new();
    for segment in name.split('/') {
        let ct = c
            .encrypt([HEADER], segment.as_bytes())
            .map_err(|_| CryptoError::Integrity("name encryption failed".into()))?;
        out.push(B64.encode(ct));
    }
    Ok(out.join("/"))
}

/// Decrypts a remote name; a name that was not produced with this key fails.
pub fn decrypt_name(names_key: &Key, remote: &str) -> Result<String, CryptoError> {
    let mut c = cipher(names_key);
    let mut out = Vec::new();
    for segment in remote.split('/') {
        let ct = B64.decode(segment).map_err(|_| CryptoError::Format {
            what: "encrypted name",
            detail: "not base64url".into(),
        })?;
        let pt = c.decrypt([HEADER], &ct).map_err(|_| {
            CryptoError::Integrity(format!("remote name {remote:?} does not decrypt"))
        })?;
        out.push(
            String::from_utf8(pt)
                .map_err(|_| CryptoError::Integrity("decrypted name is not UTF-8".into()))?,
        );
    }
    Ok(out.join("/"))
}
