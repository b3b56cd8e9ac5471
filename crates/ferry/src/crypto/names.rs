//! Object names on an encrypted remote. Each `/`-separated segment is
//! encrypted on its own with AES-SIV (deterministic, so the same name always
//! maps to the same remote name and listing a prefix of whole segments still
//! works) and written as unpadded base64url.
//!
//! - **v1** (key files of version 1): every segment with the same associated
//!   data, so equal segments encrypt equally at any depth.
//! - **v2** (key files of version 2): a segment's associated data is the
//!   exact plaintext of the key before it (its parent path with the
//!   trailing `/`), so `a/x` and `b/x` end in unrelated ciphertexts; and
//!   the segment is padded with NUL bytes to a multiple of 16 (keys never
//!   hold NUL), so the remote learns a segment's length only to 16 bytes.
//!   A listing always knows the parent (it decrypts left to right).

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::Engine as _;

use super::keys::Key;
use super::CryptoError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const HEADER_V1: &[u8] = b"ferry-name v1";
const HEADER_V2: &[u8] = b"ferry-name v2";
/// Segments are padded to a multiple of this many bytes (v2).
pub const PAD: usize = 16;
/// The SIV tag every encrypted segment carries.
const TAG: usize = 16;

/// How names are encrypted: fixed per key file, see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFormat {
    /// Constant associated data, no padding.
    V1,
    /// The parent path as associated data, segments padded to 16 bytes.
    V2,
}

fn cipher(names_key: &Key) -> Aes256Siv {
    // AES-SIV-256 takes a 512-bit key: expand the 256-bit subkey. The
    // cipher zeroizes its own key schedule when dropped (aes, cmac and
    // ctr are built with their `zeroize` features).
    let mut wide = zeroize::Zeroizing::new([0u8; 64]);
    let mut xof = blake3::Hasher::new_derive_key("ferry 2026 v1 names siv")
        .update(&names_key.0)
        .finalize_xof();
    xof.fill(wide.as_mut());
    Aes256Siv::new((&*wide).into())
}

/// The plaintext of a segment as v2 encrypts it: NUL-padded to [`PAD`].
fn padded(segment: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = segment.as_bytes().to_vec();
    out.resize(segment.len().next_multiple_of(PAD), 0);
    zeroize::Zeroizing::new(out)
}

/// Encrypts a key name segment by segment.
pub fn encrypt_name(
    names_key: &Key,
    format: NameFormat,
    name: &str,
) -> Result<String, CryptoError> {
    let mut c = cipher(names_key);
    let mut out = String::with_capacity(encrypted_name_len(format, name));
    let mut start = 0;
    for segment in name.split('/') {
        let ct = match format {
            NameFormat::V1 => c.encrypt([HEADER_V1], segment.as_bytes()),
            NameFormat::V2 => {
                let parent = &name.as_bytes()[..start];
                c.encrypt([HEADER_V2, parent], padded(segment).as_slice())
            }
        }
        .map_err(|_| CryptoError::Integrity("name encryption failed".into()))?;
        if start > 0 {
            out.push('/');
        }
        B64.encode_string(ct, &mut out);
        start += segment.len() + 1;
    }
    Ok(out)
}

/// Decrypts a remote name; a name that was not produced with this key (and
/// format) fails.
pub fn decrypt_name(
    names_key: &Key,
    format: NameFormat,
    remote: &str,
) -> Result<String, CryptoError> {
    let mut c = cipher(names_key);
    let mut out = String::new();
    for (i, segment) in remote.split('/').enumerate() {
        let ct = B64.decode(segment).map_err(|_| CryptoError::Format {
            what: "encrypted name",
            detail: "not base64url".into(),
        })?;
        let unreadable =
            || CryptoError::Integrity(format!("remote name {remote:?} does not decrypt"));
        if i > 0 {
            out.push('/');
        }
        let pt = match format {
            NameFormat::V1 => c.decrypt([HEADER_V1], &ct).map_err(|_| unreadable())?,
            NameFormat::V2 => {
                let mut pt = c
                    .decrypt([HEADER_V2, out.as_bytes()], &ct)
                    .map_err(|_| unreadable())?;
                let len = pt.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                // Only the canonical padding is accepted: one name, one form.
                if pt.len() != len.next_multiple_of(PAD) {
                    return Err(unreadable());
                }
                pt.truncate(len);
                pt
            }
        };
        let segment = std::str::from_utf8(&pt)
            .map_err(|_| CryptoError::Integrity("decrypted name is not UTF-8".into()))?;
        out.push_str(segment);
    }
    Ok(out)
}

/// How long `name` is once encrypted: each segment grows by its padding
/// (v2) and the SIV tag, then by base64.
pub fn encrypted_name_len(format: NameFormat, name: &str) -> usize {
    name.split('/')
        .map(|s| {
            let plain = match format {
                NameFormat::V1 => s.len(),
                NameFormat::V2 => s.len().next_multiple_of(PAD),
            };
            base64_len(plain + TAG)
        })
        .sum::<usize>()
        + name.matches('/').count()
}

/// Unpadded base64 length of `n` bytes.
fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}
