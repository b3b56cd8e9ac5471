//! End-to-end encryption of a bucket: creating an encrypted bucket, the
//! lock state, changing the passphrase, checking a remote's mode, and
//! storing sealed content pulled from the remote as it is.
//!
//! An encrypted bucket keeps its [`KeyFile`] in the index (`encryption`
//! setting) and on the remote (`.ferry/key.json`). It opens locked: it lists
//! and reports status, but refuses content and metadata until
//! [`Bucket::unlock`] derives the [`Keyring`] from the passphrase.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bucket::{blocking, Bucket, BucketConfig};
use crate::crypto::keyring::{KeyFile, Keyring};
use crate::crypto::keys::KdfParams;
use crate::engine::events::Event;
use crate::error::{Error, Result, StorageMode};
use crate::hash::ContentHash;
use crate::remote::encrypted::{self, RemoteMode};
use crate::remote::{Precondition, Remote, RemoteErrorKind, RemoteReader};
use crate::store::blobs::{TempBlob, CHUNK};
use crate::store::rows::Content;

/// The index setting holding the key file.
pub(crate) const SETTING: &str = "encryption";

/// Setting: the endpoints whose encryption mode was verified on attach.
const MODES_VERIFIED: &str = "modes_verified";

impl Bucket {
    /// Creates an encrypted bucket: a fresh random master key wrapped under
    /// `passphrase` with Argon2id at cost `kdf`. Returns it unlocked.
    pub async fn create_encrypted(
        dir: impl AsRef<Path>,
        config: BucketConfig,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<Bucket> {
        let passphrase = zeroize::Zeroizing::new(passphrase.to_vec());
        let (file, keys) = blocking(move || Ok(KeyFile::generate(&passphrase, kdf)?)).await?;
        Bucket::create_unlocked(dir.as_ref(), config, file, keys).await
    }

    /// A new bucket holding `file`, unlocked with its `keys`.
    pub(crate) async fn create_unlocked(
        dir: &Path,
        config: BucketConfig,
        file: KeyFile,
        keys: Keyring,
    ) -> Result<Bucket> {
        let bucket = Bucket::create_inner(dir.to_owned(), config, Some(file)).await?;
        bucket.set_keys(Some(Arc::new(keys)));
        Ok(bucket)
    }

    /// Creates an encrypted bucket as releases before format v2 did: a
    /// version 1 key file (names v1), blobs and records sealed as v1 while
    /// this handle is open (a reopened bucket writes v2 blobs, keeps v1
    /// names until `rekey`). Kept to test that v1 buckets stay readable.
    #[doc(hidden)]
    pub async fn create_encrypted_v1(
        dir: impl AsRef<Path>,
        config: BucketConfig,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<Bucket> {
        let passphrase = zeroize::Zeroizing::new(passphrase.to_vec());
        let (file, keys) = blocking(move || Ok(KeyFile::generate_v1(&passphrase, kdf)?)).await?;
        Bucket::create_unlocked(dir.as_ref(), config, file, keys.sealing_v1()).await
    }

    /// Creates a bucket that joins an encrypted remote: `key_file` is the
    /// remote's (see [`encrypted::inspect`]). Its cost is checked first,
    /// before any Argon2 work, against `afford`, what this device affords
    /// (the cost it would wrap a new key with: [`KdfParams::default`], or
    /// the user's choice): more than [`KdfParams::MAX_COST_RISE`] times
    /// its work is refused ([`crate::crypto::CryptoError::KdfOutOfRange`]),
    /// as a forged file could ask for 1 GiB × 16 passes. Then the
    /// passphrase; a wrong one creates nothing. Returns it unlocked.
    pub async fn create_joining(
        dir: impl AsRef<Path>,
        config: BucketConfig,
        key_file: KeyFile,
        passphrase: &[u8],
        afford: KdfParams,
    ) -> Result<Bucket> {
        key_file.kdf().check_affordable(afford)?;
        let passphrase = zeroize::Zeroizing::new(passphrase.to_vec());
        let file = key_file.clone();
        let keys = blocking(move || Ok(file.unlock(&passphrase)?)).await?;
        let bucket = Bucket::create_inner(dir.as_ref().to_owned(), config, Some(key_file)).await?;
        bucket.set_keys(Some(Arc::new(keys)));
        Ok(bucket)
    }

    /// True when the bucket is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.key_file().is_some()
    }

    /// True when the bucket is encrypted and not unlocked in this process.
    pub fn is_locked(&self) -> bool {
        self.is_encrypted() && self.current_keys().is_none()
    }

    /// The bucket's key file (encrypted buckets).
    pub fn key_file(&self) -> Option<KeyFile> {
        self.inner.key_file.read().ok().and_then(|k| k.clone())
    }

    /// Unlocks an encrypted bucket. A wrong passphrase is
    /// [`Error::WrongPassphrase`] and changes nothing.
    pub async fn unlock(&self, passphrase: &[u8]) -> Result<()> {
        let file = self.key_file().ok_or(Error::NotEncrypted)?;
        let passphrase = zeroize::Zeroizing::new(passphrase.to_vec());
        let keys = blocking(move || Ok(file.unlock(&passphrase)?)).await?;
        self.set_keys(Some(Arc::new(keys)));
        self.emit(Event::Unlocked);
        Ok(())
    }

    /// Locks an encrypted bucket: stops this process's sync engine and drops
    /// the keys (zeroized once no read in flight holds them).
    pub async fn lock(&self) -> Result<()> {
        if !self.is_encrypted() {
            return Err(Error::NotEncrypted);
        }
        self.stop_sync().await?;
        self.set_keys(None);
        if let Ok(mut r) = self.inner.remote.write() {
            *r = None;
        }
        self.emit(Event::Locked);
        Ok(())
    }

    /// Re-wraps the master key under `new` (no data is rewritten). With a
    /// connected remote, its `.ferry/key.json` is replaced first, so a new
    /// device joins with the new passphrase; if that fails nothing changes.
    pub async fn change_passphrase(&self, old: &[u8], new: &[u8], kdf: KdfParams) -> Result<()> {
        self.writable()?;
        let file = self.key_file().ok_or(Error::NotEncrypted)?;
        let (old, new) = (
            zeroize::Zeroizing::new(old.to_vec()),
            zeroize::Zeroizing::new(new.to_vec()),
        );
        let rewrapped = blocking(move || Ok(file.rewrap(&old, &new, kdf)?)).await?;
        if let Ok(remote) = self.raw_remote() {
            let current = remote.head(encrypted::KEY_FILE).await?;
            let cond = match current {
                Some(c) => Precondition::IfMatch(c.etag),
                None => Precondition::IfAbsent,
            };
            encrypted::write_key_file(remote.as_ref(), &rewrapped, cond).await?;
        }
        self.store_key_file(rewrapped).await
    }

    /// Unlocks like [`Bucket::unlock`], and when this device's copy of the
    /// key file refuses the passphrase, tries the remote's copy: after
    /// `passwd` on another device, the remote holds the same master key
    /// under the new passphrase. That copy is taken only if it unwraps to
    /// the same master key (its id is checked after unwrapping); it then
    /// replaces this device's copy, so the old passphrase stops working here
    /// too. A passphrase neither copy takes is [`Error::WrongPassphrase`]
    /// and changes nothing; so is an unreachable remote.
    pub async fn unlock_with_remote(&self, passphrase: &[u8], remote: &dyn Remote) -> Result<()> {
        match self.unlock(passphrase).await {
            Err(Error::WrongPassphrase) => {}
            done => return done,
        }
        let local = self.key_file().ok_or(Error::NotEncrypted)?;
        let passphrase = zeroize::Zeroizing::new(passphrase.to_vec());
        let newer = match encrypted::read_key_file(remote).await {
            Ok(Some(file)) if file.key_id == local.key_id && file != local => file,
            _ => return Err(Error::WrongPassphrase),
        };
        // A key file anyone with write access could have forged: refused
        // before any Argon2 work when it asks for far more than ours.
        newer.kdf().check_affordable(local.kdf())?;
        let file = newer.clone();
        let keys = blocking(move || Ok(file.unlock(&passphrase)?)).await?;
        self.store_key_file(newer).await?;
        self.set_keys(Some(Arc::new(keys)));
        self.emit(Event::Unlocked);
        Ok(())
    }

    /// An encrypted bucket's key against the remote's key file, read now:
    /// [`Error::Rekeyed`] or [`Error::DifferentKey`] when another master key
    /// holds the remote (checked where a sync meets a journal or a listing
    /// it cannot read). A missing key file is left to the mode checks.
    pub(crate) async fn check_remote_key(&self, raw: &dyn Remote) -> Result<()> {
        let Some(mine) = self.key_file() else {
            return Ok(());
        };
        match encrypted::read_key_file(raw).await? {
            Some(file) => crate::bucket::setup::mode_matches(
                Some(&mine),
                &RemoteMode::Encrypted(file),
                &raw.endpoint(),
            ),
            None => Ok(()),
        }
    }

    /// Makes `file` this device's key file (index and memory). The old
    /// wrapping is overwritten, not left behind: `secure_delete` zeroes the
    /// freed bytes and a truncating checkpoint empties the WAL, so neither
    /// free pages nor old WAL frames keep it.
    async fn store_key_file(&self, file: KeyFile) -> Result<()> {
        let text = file.to_json()?;
        let path = self.inner.index_path.clone();
        blocking(move || {
            let conn = crate::store::index::open(&path, false)?;
            conn.pragma_update(None, "secure_delete", true)?;
            crate::store::index::set_setting(&conn, SETTING, &text)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        if let Ok(mut k) = self.inner.key_file.write() {
            *k = Some(file);
        }
        Ok(())
    }

    pub(crate) fn set_keys(&self, keys: Option<Arc<Keyring>>) {
        if let Ok(mut k) = self.inner.keys.write() {
            *k = keys;
        }
    }

    /// The keys while unlocked (None for plaintext buckets and locked ones).
    pub(crate) fn current_keys(&self) -> Option<Arc<Keyring>> {
        self.inner.keys.read().ok().and_then(|k| k.clone())
    }

    /// The keys an operation on content needs: `None` for a plaintext
    /// bucket, [`Error::Locked`] for a locked one.
    pub(crate) fn keyring(&self) -> Result<Option<Arc<Keyring>>> {
        if !self.is_encrypted() {
            return Ok(None);
        }
        self.current_keys().map(Some).ok_or(Error::Locked)
    }

    /// The content hash of `data` (keyed in an encrypted bucket).
    pub(crate) fn hash_of(&self, data: &[u8]) -> Result<ContentHash> {
        Ok(match self.keyring()? {
            Some(k) => k.hash(data),
            None => ContentHash::of(data),
        })
    }

    /// Checks that `remote` (raw, before any layer) is in the bucket's mode;
    /// claims an empty remote for an encrypted bucket by writing its key file.
    ///
    /// An endpoint whose mode was verified before may be attached while it
    /// cannot be reached (offline work goes on); the check is repeated on
    /// the next attach that reaches it.
    /// The endpoints whose mode this bucket verified on attach.
    pub(crate) fn verified_modes(&self) -> Result<BTreeSet<String>> {
        Ok(self.setting_json(MODES_VERIFIED)?.unwrap_or_default())
    }

    pub(crate) async fn check_remote_mode(&self, remote: &dyn Remote) -> Result<()> {
        let endpoint = remote.endpoint();
        let mut verified: BTreeSet<String> = self.setting_json(MODES_VERIFIED)?.unwrap_or_default();
        match self.verify_remote_mode(remote).await {
            Ok(()) => {
                if verified.insert(endpoint) {
                    self.set_setting_json(MODES_VERIFIED, &verified).await?;
                }
                Ok(())
            }
            Err(Error::Remote(e))
                if matches!(
                    e.kind,
                    RemoteErrorKind::Unreachable | RemoteErrorKind::Retryable
                ) && verified.contains(&endpoint) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn verify_remote_mode(&self, remote: &dyn Remote) -> Result<()> {
        let endpoint = remote.endpoint();
        let Some(local) = self.key_file() else {
            return match encrypted::read_key_file(remote).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(Error::RemoteMode {
                    endpoint,
                    remote: StorageMode::Encrypted,
                    local: StorageMode::Plaintext,
                }),
                // A key file that is there but unreadable still marks the
                // remote as ferry-encrypted (or damaged): refuse either way.
                Err(e) if e.kind == RemoteErrorKind::Integrity => Err(Error::RemoteMode {
                    endpoint,
                    remote: StorageMode::Encrypted,
                    local: StorageMode::Plaintext,
                }),
                Err(e) => Err(e.into()),
            };
        };
        loop {
            match encrypted::inspect(remote).await? {
                RemoteMode::Empty => {
                    match encrypted::write_key_file(remote, &local, Precondition::IfAbsent).await {
                        Ok(_) => return Ok(()),
                        // Someone claimed it meanwhile: look again.
                        Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                mode => return super::setup::mode_matches(Some(&local), &mode, &endpoint),
            }
        }
    }

    /// Reads sealed content pulled from an encrypted remote and stores it as
    /// it is (no second encryption), verifying it on the way: every chunk is
    /// opened and the plaintext's keyed hash and size computed. Tampered
    /// content is [`Error::Corrupt`] naming `key`, and nothing is kept.
    pub(crate) async fn read_sealed_body(
        &self,
        key: &str,
        mut reader: RemoteReader,
        threshold: u64,
        keys: Arc<Keyring>,
    ) -> Result<(Content, ContentHash, u64)> {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let blobs = self.inner.blobs.clone();
        let owned_key = key.to_owned();
        let verifier = tokio::task::spawn_blocking(move || -> Result<Verified> {
            let mut tee = Tee {
                rx,
                current: Bytes::new(),
                memory: Vec::new(),
                temp: None,
                limit: sealed_limit(threshold),
                blobs,
                failed: None,
            };
            let mut opener = keys
                .blob_opener(&mut tee)
                .map_err(|e| tee_error(&owned_key, e))?;
            let mut hasher = keys.hasher();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match opener.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        drop(opener);
                        return Err(tee
                            .failed
                            .take()
                            .unwrap_or_else(|| tee_error(&owned_key, e)));
                    }
                };
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            drop(opener);
            let hash: ContentHash = hasher.finalize().into();
            let content = match tee.temp.take() {
                Some(mut temp) => {
                    temp.finish()?;
                    Content::Blob(Box::new(temp))
                }
                None if size > threshold => {
                    let mut temp = tee.blobs.temp(None)?;
                    temp.write_raw(&tee.memory)?;
                    temp.finish()?;
                    Content::Blob(Box::new(temp))
                }
                None => Content::Inline(std::mem::take(&mut tee.memory).into()),
            };
            Ok(Verified {
                content,
                hash,
                size,
            })
        });
        let mut read_result = Ok(());
        loop {
            let mut buf = bytes::BytesMut::with_capacity(CHUNK);
            match super::fill(&mut reader, &mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(buf.freeze()).await.is_err() {
                        break; // the verifier stopped; its error is reported below
                    }
                }
                Err(e) => {
                    read_result = Err(Error::Body {
                        key: key.to_owned(),
                        source: e,
                    });
                    break;
                }
            }
        }
        drop(tx);
        let verified = verifier
            .await
            .map_err(|e| Error::task("verifying task", e))?;
        read_result?;
        let v = verified?;
        Ok((v.content, v.hash, v.size))
    }
}

struct Verified {
    content: Content,
    hash: ContentHash,
    size: u64,
}

/// The most sealed bytes that content of `threshold` bytes takes.
fn sealed_limit(threshold: u64) -> usize {
    let chunks = threshold as usize / crate::crypto::stream::CHUNK + 1;
    threshold as usize + crate::crypto::stream::HEADER + 16 * chunks
}

fn tee_error(key: &str, e: io::Error) -> Error {
    Error::from_body_io(crate::store::body::sealed_error(key, e))
}

/// Reads the pulled stream for the opener, keeping every byte as it came:
/// in memory while it could still be inline content, then in a temp file.
struct Tee {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    memory: Vec<u8>,
    temp: Option<TempBlob>,
    limit: usize,
    blobs: crate::store::blobs::BlobStore,
    failed: Option<Error>,
}

impl Tee {
    fn keep(&mut self, data: &[u8]) -> Result<()> {
        if let Some(t) = &mut self.temp {
            return t.write_raw(data);
        }
        self.memory.extend_from_slice(data);
        if self.memory.len() > self.limit {
            let mut t = self.blobs.temp(None)?;
            t.write_raw(&self.memory)?;
            self.memory = Vec::new();
            self.temp = Some(t);
        }
        Ok(())
    }
}

impl Read for Tee {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            let Some(chunk) = self.rx.blocking_recv() else {
                return Ok(0);
            };
            if let Err(e) = self.keep(&chunk) {
                let text = e.to_string();
                self.failed = Some(e);
                return Err(io::Error::other(text));
            }
            self.current = chunk;
        }
        let n = self.current.len().min(out.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
