//! An unlocked bucket's keys, and the key file that stores the master key.
//!
//! - [`KeyFile`] (JSON): what the index's `encryption` setting and the
//!   remote's `.ferry/key.json` hold: the wrapped master key and a key id,
//!   so two buckets can tell whether they share a master key without a
//!   passphrase. Version 1 files encrypt names as v1; versions 2 and 3
//!   encrypt names as v2 and count key epochs; version 3 (all new buckets,
//!   every `rekey`, and a v2 file's `passwd`) binds its header (format,
//!   version, epoch, key id) into the wrapping's associated data, so none
//!   of them can be edited without the key failing to unwrap.
//! - [`Keyring`]: the four subkeys derived from the master key (content,
//!   hash, metadata, names), zeroized when dropped, with the operations an
//!   encrypted bucket needs: keyed hashes, sealing blobs and metadata,
//!   encrypting names.

use base64::Engine as _;
use zeroize::Zeroizing;

use super::keys::{KdfParams, Key, Purpose, WrappedKey};
use super::names::{self, NameFormat};
use super::stream::{self, Opener, Sealer};
use super::CryptoError;
use crate::hash::ContentHash;
use crate::metadata::Metadata;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The AAD context of every sealed blob (local files, inline content and the
/// body part of remote objects). Blobs are content-addressed and shared by
/// keys, so the context names no key; a blob is bound to its object by the
/// object's sealed metadata (keyed hash and nonce prefix).
pub const BLOB_CONTEXT: &[u8] = b"ferry blob v1";
/// Prefix of a sealed metadata column in the index.
pub const SEALED_META_PREFIX: &str = "sealed:v1:";
const LOCAL_META_CONTEXT: &[u8] = b"ferry local metadata v1\0";
const KEY_ID_CONTEXT: &str = "ferry 2026 v1 key id";
/// The `format` field of a key file.
pub const KEY_FILE_FORMAT: &str = "ferry-key";

/// The newest key file version, written for new buckets, by `rekey`, and
/// by `passwd` over a version 2 file.
pub const KEY_FILE_VERSION: u32 = 3;
/// The first key file version whose wrapping is bound to its header.
const BOUND_VERSION: u32 = 3;
/// The start of a bound wrapping's associated data.
const HEADER_CONTEXT: &[u8] = b"ferry-key v3\0";

/// The master key wrapped under a passphrase, with the key's id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyFile {
    /// Always [`KEY_FILE_FORMAT`].
    pub format: String,
    /// Format version: 1 (names v1), 2 (names v2) or 3 (names v2, header
    /// bound into the wrapping).
    pub version: u32,
    /// 32 hex digits derived from the master key (not secret).
    pub key_id: String,
    /// The key epoch: 1 for a bucket's first master key, one more at every
    /// `rekey` (absent in version 1 files, where it is 1).
    #[serde(default = "first_epoch")]
    pub epoch: u32,
    /// The wrapped master key.
    pub wrapped: WrappedKey,
}

fn first_epoch() -> u32 {
    1
}

/// A bound wrapping's associated data (key file v3): `"ferry-key v3\0"` ‖
/// format ‖ 0 ‖ version (u32 BE) ‖ epoch (u32 BE) ‖ key id (ASCII).
fn header(format: &str, version: u32, epoch: u32, key_id: &str) -> Vec<u8> {
    let mut aad = HEADER_CONTEXT.to_vec();
    aad.extend_from_slice(format.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

fn key_id(master: &Key) -> String {
    hex::encode(&blake3::derive_key(KEY_ID_CONTEXT, &master.0)[..16])
}

impl KeyFile {
    /// A fresh random master key wrapped under `passphrase`, and its keyring.
    pub fn generate(
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<(KeyFile, Keyring), CryptoError> {
        KeyFile::generate_epoch(passphrase, params, first_epoch())
    }

    /// A fresh random master key for key epoch `epoch` (what `rekey` makes).
    pub fn generate_epoch(
        passphrase: &[u8],
        params: KdfParams,
        epoch: u32,
    ) -> Result<(KeyFile, Keyring), CryptoError> {
        let master = Key::random()?;
        let file = KeyFile::wrap(&master, passphrase, params, KEY_FILE_VERSION, epoch)?;
        Ok((file, Keyring::new(&master, NameFormat::V2)))
    }

    /// A version 2 key file (names v2, its header not bound), as releases
    /// before key file v3 wrote it: kept so tests can build the files this
    /// build must still read and upgrade.
    #[doc(hidden)]
    pub fn generate_v2(
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<(KeyFile, Keyring), CryptoError> {
        let master = Key::random()?;
        let file = KeyFile::wrap(&master, passphrase, params, 2, first_epoch())?;
        Ok((file, Keyring::new(&master, NameFormat::V2)))
    }

    /// A version 3 key file from fixed parts (the known-answer test that
    /// pins the format).
    #[doc(hidden)]
    pub fn wrap_v3_with(
        master: &Key,
        passphrase: &[u8],
        params: KdfParams,
        epoch: u32,
        salt: [u8; 16],
        nonce: [u8; 24],
    ) -> Result<KeyFile, CryptoError> {
        let id = key_id(master);
        let aad = header(KEY_FILE_FORMAT, BOUND_VERSION, epoch, &id);
        Ok(KeyFile {
            format: KEY_FILE_FORMAT.into(),
            version: BOUND_VERSION,
            key_id: id,
            epoch,
            wrapped: WrappedKey::wrap_bound_with(master, passphrase, params, salt, nonce, &aad)?,
        })
    }

    /// This file's header as a bound wrapping's associated data, with
    /// `version` in place of the file's (its own, or the bound version a
    /// downgraded file was written as).
    fn header(&self, version: u32) -> Vec<u8> {
        header(&self.format, version, self.epoch, &self.key_id)
    }

    /// A version 1 key file, as releases before format v2 wrote it: kept
    /// so tests can build the v1 buckets that this build must still read.
    #[doc(hidden)]
    pub fn generate_v1(
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<(KeyFile, Keyring), CryptoError> {
        let master = Key::random()?;
        let file = KeyFile::wrap(&master, passphrase, params, 1, first_epoch())?;
        Ok((file, Keyring::new(&master, NameFormat::V1)))
    }

    fn wrap(
        master: &Key,
        passphrase: &[u8],
        params: KdfParams,
        version: u32,
        epoch: u32,
    ) -> Result<KeyFile, CryptoError> {
        let id = key_id(master);
        let wrapped = if version >= BOUND_VERSION {
            let aad = header(KEY_FILE_FORMAT, version, epoch, &id);
            WrappedKey::wrap_bound(master, passphrase, params, &aad)?
        } else {
            WrappedKey::wrap(master, passphrase, params)?
        };
        Ok(KeyFile {
            format: KEY_FILE_FORMAT.into(),
            version,
            key_id: id,
            epoch,
            wrapped,
        })
    }

    /// How this file's key encrypts names.
    pub fn name_format(&self) -> NameFormat {
        if self.version >= 2 {
            NameFormat::V2
        } else {
            NameFormat::V1
        }
    }

    /// The Argon2id cost of unwrapping this file's key.
    pub fn kdf(&self) -> KdfParams {
        self.wrapped.params()
    }

    /// Opens the master key; a wrong passphrase is [`CryptoError::WrongPassphrase`].
    pub fn unlock(&self, passphrase: &[u8]) -> Result<Keyring, CryptoError> {
        let master = self.unwrap_master(passphrase)?;
        Ok(Keyring::new(&master, self.name_format()))
    }

    /// The master key, checked against the file's header and key id.
    fn unwrap_master(&self, passphrase: &[u8]) -> Result<Key, CryptoError> {
        self.check_format()?;
        let master = if self.version >= BOUND_VERSION {
            self.wrapped
                .unwrap_bound(passphrase, &self.header(self.version))?
        } else {
            // An older version: the constant associated data. A key that
            // opens only under this header as version 3 was written as
            // version 3 and edited down (which would make a joining device
            // fall back to names v1, say): refused by name.
            match self
                .wrapped
                .unwrap_key_or_bound(passphrase, &self.header(BOUND_VERSION))?
            {
                (master, false) => master,
                (_, true) => return Err(self.downgraded(BOUND_VERSION)),
            }
        };
        if key_id(&master) != self.key_id {
            return Err(CryptoError::Integrity(
                "the key file's id does not match its key (the file was altered)".into(),
            ));
        }
        Ok(master)
    }

    fn downgraded(&self, written: u32) -> CryptoError {
        CryptoError::Integrity(format!(
            "the key file says version {} but was written as version {written} (its header is \
             bound into the wrapped key): it was altered, and is refused",
            self.version
        ))
    }

    /// The same master key wrapped under `new`. A version 2 file becomes
    /// version 3 (its header bound); a version 1 file stays version 1 (the
    /// version decides its names, which only `rekey` changes).
    pub fn rewrap(
        &self,
        old: &[u8],
        new: &[u8],
        params: KdfParams,
    ) -> Result<KeyFile, CryptoError> {
        self.check_format()?;
        params.check_new()?;
        let master = self.unwrap_master(old)?;
        let version = if self.version == 1 {
            1
        } else {
            KEY_FILE_VERSION
        };
        KeyFile::wrap(&master, new, params, version, self.epoch)
    }

    fn check_format(&self) -> Result<(), CryptoError> {
        if self.format != KEY_FILE_FORMAT || !(1..=KEY_FILE_VERSION).contains(&self.version) {
            return Err(CryptoError::Format {
                what: "key file",
                detail: format!(
                    "{:?} version {} (this build reads {KEY_FILE_FORMAT:?} 1 to {KEY_FILE_VERSION})",
                    self.format, self.version
                ),
            });
        }
        if self.epoch == 0 {
            return Err(CryptoError::Format {
                what: "key file",
                detail: "key epoch 0".into(),
            });
        }
        // A bound wrapping inside an older version: edited down.
        let bound = self.wrapped.version() >= 2;
        if bound != (self.version >= BOUND_VERSION) {
            if bound {
                return Err(self.downgraded(BOUND_VERSION));
            }
            return Err(CryptoError::Format {
                what: "key file",
                detail: format!(
                    "version {} needs a bound wrapping (wrapped key version 2), this one is \
                     version {}",
                    self.version,
                    self.wrapped.version()
                ),
            });
        }
        Ok(())
    }

    /// Parses the JSON form.
    pub fn from_json(text: &[u8]) -> Result<KeyFile, CryptoError> {
        let file: KeyFile = serde_json::from_slice(text).map_err(|e| CryptoError::Format {
            what: "key file",
            detail: e.to_string(),
        })?;
        file.check_format()?;
        Ok(file)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Result<String, CryptoError> {
        serde_json::to_string(self).map_err(|e| CryptoError::Format {
            what: "key file",
            detail: e.to_string(),
        })
    }
}

/// The subkeys of an unlocked bucket. Zeroized when dropped.
pub struct Keyring {
    content: Key,
    hash: Key,
    metadata: Key,
    names: Key,
    name_format: NameFormat,
    /// Seal blobs and records as format v1 (tests that build v1 buckets).
    seal_v1: bool,
    id: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.id)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LocalMeta {
    content_type: String,
    metadata: Metadata,
}

impl Keyring {
    /// Derives the subkeys of `master`; names are encrypted as `name_format`.
    pub fn new(master: &Key, name_format: NameFormat) -> Keyring {
        Keyring {
            content: master.derive(Purpose::Content),
            hash: master.derive(Purpose::Hash),
            metadata: master.derive(Purpose::Metadata),
            names: master.derive(Purpose::Names),
            name_format,
            seal_v1: false,
            id: key_id(master),
        }
    }

    /// Makes this keyring seal blobs and records as format v1 did: kept so
    /// tests can build the v1 buckets this build must still read.
    #[doc(hidden)]
    pub fn sealing_v1(mut self) -> Keyring {
        self.seal_v1 = true;
        self
    }

    /// How this keyring encrypts names.
    pub fn name_format(&self) -> NameFormat {
        self.name_format
    }

    /// The master key's id (as in [`KeyFile::key_id`]).
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// A hasher for keyed content hashes; its state (which holds the key)
    /// is zeroized when dropped.
    pub fn hasher(&self) -> Zeroizing<blake3::Hasher> {
        Zeroizing::new(blake3::Hasher::new_keyed(&self.hash.0))
    }

    /// The keyed content hash of `data`.
    pub fn hash(&self, data: &[u8]) -> ContentHash {
        ContentHash(super::keys::keyed_hash(&self.hash, data))
    }

    /// Seals a blob held in memory.
    pub fn seal_blob(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.seal_v1 {
            return stream::seal_v1(&self.content, BLOB_CONTEXT, data);
        }
        stream::seal(&self.content, BLOB_CONTEXT, data)
    }

    /// Opens a blob held in memory.
    pub fn open_blob(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        stream::open(&self.content, BLOB_CONTEXT, sealed)
    }

    /// A streaming blob sealer writing to `out`.
    pub fn blob_sealer<W: std::io::Write>(&self, out: W) -> std::io::Result<Sealer<W>> {
        if self.seal_v1 {
            let prefix = super::random::bytes().map_err(std::io::Error::other)?;
            return Sealer::v1_with_prefix(&self.content, BLOB_CONTEXT, prefix, out);
        }
        Sealer::new(&self.content, BLOB_CONTEXT, out)
    }

    /// A streaming blob opener reading from `inner`.
    pub fn blob_opener<R: std::io::Read>(&self, inner: R) -> std::io::Result<Opener<R>> {
        Opener::new(&self.content, BLOB_CONTEXT, inner)
    }

    /// Seals a record with the metadata key, bound to `context`.
    pub(crate) fn seal_record(&self, context: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.seal_v1 {
            return stream::seal_v1(&self.metadata, context, data);
        }
        stream::seal(&self.metadata, context, data)
    }

    /// Opens a record sealed by [`Keyring::seal_record`].
    pub(crate) fn open_record(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        stream::open(&self.metadata, context, sealed).map(Zeroizing::new)
    }

    /// The index's metadata column for an object: its content type and user
    /// metadata sealed together, bound to its key.
    pub fn seal_local_meta(
        &self,
        key: &str,
        content_type: &str,
        metadata: &Metadata,
    ) -> Result<String, CryptoError> {
        let record = LocalMeta {
            content_type: content_type.to_owned(),
            metadata: metadata.clone(),
        };
        let json = sealed_json(&record, "sealed metadata")?;
        let sealed = self.seal_record(&local_context(key), &json)?;
        Ok(format!("{SEALED_META_PREFIX}{}", B64.encode(sealed)))
    }

    /// Opens a metadata column sealed by [`Keyring::seal_local_meta`] for `key`.
    pub fn open_local_meta(
        &self,
        key: &str,
        column: &str,
    ) -> Result<(String, Metadata), CryptoError> {
        let bad = |detail: &str| CryptoError::Format {
            what: "sealed metadata",
            detail: detail.to_owned(),
        };
        let text = column
            .strip_prefix(SEALED_META_PREFIX)
            .ok_or_else(|| bad("no prefix"))?;
        let sealed = B64.decode(text).map_err(|_| bad("not base64"))?;
        let json = self.open_record(&local_context(key), &sealed)?;
        let record: LocalMeta = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
        Ok((record.content_type, record.metadata))
    }

    /// Encrypts a key name for the remote.
    pub fn encrypt_name(&self, name: &str) -> Result<String, CryptoError> {
        names::encrypt_name(&self.names, self.name_format, name)
    }

    /// Decrypts a remote name.
    pub fn decrypt_name(&self, remote: &str) -> Result<String, CryptoError> {
        names::decrypt_name(&self.names, self.name_format, remote)
    }

    /// How long `name` is once encrypted by this keyring.
    pub fn encrypted_name_len(&self, name: &str) -> usize {
        names::encrypted_name_len(self.name_format, name)
    }
}

/// The JSON of `value` in a buffer that leaves no copy behind: it is
/// written into a `Zeroizing` buffer that, when it must grow, moves to a
/// bigger one and clears the old (`serde_json::to_vec` grows a plain
/// `Vec`, freeing plaintext as it goes). For whatever is sealed next.
pub fn sealed_json<T: serde::Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    struct Out(Zeroizing<Vec<u8>>);
    impl std::io::Write for Out {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let need = self.0.len() + data.len();
            if need > self.0.capacity() {
                let mut bigger =
                    Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
                bigger.extend_from_slice(&self.0);
                self.0 = bigger;
            }
            self.0.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Out(Zeroizing::new(Vec::with_capacity(512)));
    serde_json::to_writer(&mut out, value).map_err(|e| CryptoError::Format {
        what,
        detail: e.to_string(),
    })?;
    Ok(out.0)
}

fn local_context(key: &str) -> Vec<u8> {
    let mut c = LOCAL_META_CONTEXT.to_vec();
    c.extend_from_slice(key.as_bytes());
    c
}

/// The longest encrypted name accepted (S3's key limit).
pub const MAX_ENCRYPTED_KEY_LEN: usize = 1024;

/// The digest of an object's content type and metadata (keyed with the
/// bucket's hash key when encrypted).
pub(crate) fn meta_digest(
    keys: Option<&Keyring>,
    content_type: &str,
    metadata: &Metadata,
) -> crate::hash::MetaDigest {
    match keys {
        Some(k) => crate::hash::MetaDigest::with(&mut k.hasher(), content_type, metadata),
        None => crate::hash::MetaDigest::of(content_type, metadata),
    }
}
