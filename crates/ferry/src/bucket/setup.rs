//! Creating a bucket over a remote, switching a bucket to another remote,
//! and connecting one: the decisions front ends would otherwise each make
//! (does the remote answer, does it honour conditional writes, does it hold
//! ciphertext or plaintext, may this bucket sync with it).
//!
//! A front end first asks [`check_remote`] what a remote holds (nothing is
//! written locally), then asks the person what that answer needs (the
//! existing passphrase of an encrypted remote, a new one), then calls
//! [`Bucket::create_over`] or [`Bucket::switch_remote`], which refuse a
//! mismatch with [`Error::RemoteMode`] or [`Error::DifferentKey`].

use std::path::Path;

use crate::bucket::{Bucket, BucketConfig};
use crate::crypto::keyring::KeyFile;
use crate::crypto::keys::KdfParams;
use crate::error::{Error, Result, StorageMode};
use crate::remote::emulated::probe;
use crate::remote::encrypted::{self, RemoteMode};
use crate::remote::retry::{RetryPolicy, Retrying};
use crate::remote::spec::RemoteSpec;
use crate::remote::{Remote, SharedRemote};

/// The encryption a new bucket gets.
#[derive(Debug, Clone, Copy)]
pub enum NewKey<'a> {
    /// No encryption, over an empty remote (refused over an encrypted
    /// one, and over one holding objects: see [`NewKey::PlaintextOverObjects`]).
    Plaintext,
    /// No encryption, over a remote that already holds objects and no key
    /// file. An explicit choice: an encrypted remote whose `.ferry/key.json`
    /// was deleted (by anyone who can write to the store) looks the same,
    /// and joining it in the clear would upload names and content readable
    /// to the store.
    PlaintextOverObjects,
    /// A fresh master key wrapped under `passphrase` (refused over a remote
    /// that holds plaintext objects).
    Encrypt {
        /// The new passphrase.
        passphrase: &'a [u8],
        /// Argon2id cost of wrapping it.
        kdf: KdfParams,
    },
    /// The encrypted remote's master key, unwrapped with its passphrase
    /// (a wrong one creates nothing).
    Join {
        /// The remote's passphrase.
        passphrase: &'a [u8],
        /// The Argon2id cost this device affords: a key file asking for
        /// more than 8× its work is refused before any work (see
        /// [`Bucket::create_joining`]).
        afford: KdfParams,
    },
}

/// Checks a remote before anything is written locally: that it answers
/// (with at most `max_retries` retries, so a store that never answers costs
/// the no-progress timeout that many times plus one, then an error), how it
/// treats conditional writes (the probe, whose answer the bucket records
/// when it first attaches), and what it holds.
pub async fn check_remote(remote: SharedRemote, max_retries: u32) -> Result<RemoteMode> {
    let retrying = Retrying::new(
        remote.clone(),
        RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        },
    );
    probe(&retrying, "ferry-check").await?;
    Ok(encrypted::inspect(&retrying).await?)
}

/// Makes the place a remote names (a WebDAV collection) when it is missing
/// and the store lets a client make it, with at most `max_retries`
/// retries; `true` when something was made. For a person naming a remote
/// (`ferry init`, `ferry remote set`) before [`check_remote`]; a sync
/// never makes it (see [`Remote::create_base`]).
pub async fn create_remote_base(remote: SharedRemote, max_retries: u32) -> Result<bool> {
    let retrying = Retrying::new(
        remote,
        RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        },
    );
    Ok(retrying.create_base().await?)
}

/// Refuses a remote holding `mode` for a bucket whose key file is `local`
/// (`None`: plaintext). An empty remote suits either.
pub(crate) fn mode_matches(
    local: Option<&KeyFile>,
    mode: &RemoteMode,
    endpoint: &str,
) -> Result<()> {
    let clash = |remote, local| Error::RemoteMode {
        endpoint: endpoint.to_owned(),
        remote,
        local,
    };
    match (local, mode) {
        (_, RemoteMode::Empty) | (None, RemoteMode::Plaintext | RemoteMode::PlaintextByFerry) => {
            Ok(())
        }
        (Some(_), RemoteMode::Plaintext | RemoteMode::PlaintextByFerry) => {
            Err(clash(StorageMode::Plaintext, StorageMode::Encrypted))
        }
        (None, RemoteMode::Encrypted(_)) => {
            Err(clash(StorageMode::Encrypted, StorageMode::Plaintext))
        }
        (Some(mine), RemoteMode::Encrypted(file))
            if file.key_id != mine.key_id && file.epoch > mine.epoch =>
        {
            Err(Error::Rekeyed {
                endpoint: endpoint.to_owned(),
                remote_epoch: file.epoch,
                local_epoch: mine.epoch,
            })
        }
        (Some(mine), RemoteMode::Encrypted(file)) if file.key_id != mine.key_id => {
            Err(Error::DifferentKey {
                endpoint: endpoint.to_owned(),
                remote_key_id: file.key_id.clone(),
                local_key_id: mine.key_id.clone(),
            })
        }
        (Some(_), RemoteMode::Encrypted(_)) => Ok(()),
    }
}

/// Refuses a new bucket of mode `local` over a remote holding `mode` that
/// it could never sync with, before any passphrase is asked for: a new
/// encrypted bucket over plaintext objects, a plaintext bucket over an
/// encrypted remote (which is joined, with its passphrase, instead).
pub fn check_new_bucket(endpoint: &str, mode: &RemoteMode, local: StorageMode) -> Result<()> {
    let remote = match mode {
        RemoteMode::Empty => return Ok(()),
        RemoteMode::Plaintext | RemoteMode::PlaintextByFerry => StorageMode::Plaintext,
        RemoteMode::Encrypted(_) => StorageMode::Encrypted,
    };
    if remote == local {
        return Ok(());
    }
    Err(Error::RemoteMode {
        endpoint: endpoint.to_owned(),
        remote,
        local,
    })
}

impl Bucket {
    /// Creates a bucket in `dir` that syncs with `spec`, a remote that
    /// [`check_remote`] found holding `mode`. `key` must suit it: joining
    /// an encrypted remote takes its passphrase ([`NewKey::Join`]); a new
    /// encrypted bucket needs a remote without plaintext objects; a
    /// plaintext bucket needs one without a key file. A mismatch creates
    /// nothing.
    pub async fn create_over(
        dir: impl AsRef<Path>,
        config: BucketConfig,
        spec: RemoteSpec,
        mode: RemoteMode,
        key: NewKey<'_>,
    ) -> Result<Bucket> {
        let endpoint = spec.url.clone();
        let bucket = match (mode, key) {
            (RemoteMode::Encrypted(file), NewKey::Join { passphrase, afford }) => {
                Bucket::create_joining(dir, config, file, passphrase, afford).await?
            }
            (RemoteMode::Encrypted(_), NewKey::Plaintext | NewKey::PlaintextOverObjects) => {
                return Err(Error::RemoteMode {
                    endpoint,
                    remote: StorageMode::Encrypted,
                    local: StorageMode::Plaintext,
                })
            }
            // A new key over someone else's encrypted remote: a different key.
            (RemoteMode::Encrypted(file), NewKey::Encrypt { .. }) => {
                return Err(Error::DifferentKey {
                    endpoint,
                    remote_key_id: file.key_id,
                    local_key_id: "(a new key)".into(),
                })
            }
            (
                RemoteMode::Plaintext | RemoteMode::PlaintextByFerry,
                NewKey::Encrypt { .. } | NewKey::Join { .. },
            ) => {
                return Err(Error::RemoteMode {
                    endpoint,
                    remote: StorageMode::Plaintext,
                    local: StorageMode::Encrypted,
                })
            }
            (RemoteMode::Plaintext, NewKey::Plaintext) => {
                return Err(Error::UnconfirmedPlaintext { endpoint })
            }
            (RemoteMode::Empty, NewKey::Join { .. }) => return Err(Error::NotEncrypted),
            (RemoteMode::Empty, NewKey::Encrypt { passphrase, kdf }) => {
                Bucket::create_encrypted(dir, config, passphrase, kdf).await?
            }
            // A remote a plaintext ferry bucket recorded as its own needs no
            // explicit choice.
            (RemoteMode::Empty | RemoteMode::PlaintextByFerry, NewKey::Plaintext)
            | (
                RemoteMode::Empty | RemoteMode::Plaintext | RemoteMode::PlaintextByFerry,
                NewKey::PlaintextOverObjects,
            ) => Bucket::create(dir, config).await?,
        };
        bucket.set_remote(spec).await?;
        Ok(bucket)
    }

    /// Makes `spec` the bucket's remote, after [`check_remote`] found
    /// `remote` (built from it) holding `mode`: refused, changing nothing, when its encryption is
    /// not the bucket's. A plaintext bucket moving to a remote that holds
    /// objects and no key file needs `plaintext_confirmed` (see
    /// [`NewKey::PlaintextOverObjects`]) unless it is the bucket's remote
    /// already (however spelled) or one it verified as plaintext before.
    pub async fn switch_remote(
        &self,
        spec: RemoteSpec,
        remote: &dyn Remote,
        mode: &RemoteMode,
        plaintext_confirmed: bool,
    ) -> Result<()> {
        mode_matches(self.key_file().as_ref(), mode, &spec.url)?;
        if *mode == RemoteMode::Plaintext && !plaintext_confirmed {
            let same = self
                .remote_spec()?
                .is_some_and(|old| old.same_location(&spec));
            if !same && !self.verified_modes()?.contains(&remote.endpoint()) {
                return Err(Error::UnconfirmedPlaintext { endpoint: spec.url });
            }
        }
        self.set_remote(spec).await
    }

    /// Connects `remote` (built from the bucket's spec by the caller, with
    /// its credentials). A locked encrypted bucket is unlocked first with
    /// `passphrase`, learning a passphrase changed on another device from
    /// the remote's key file; a locked bucket without one is
    /// [`Error::Locked`].
    pub async fn connect_remote(
        &self,
        remote: SharedRemote,
        passphrase: Option<&[u8]>,
    ) -> Result<crate::remote::emulated::ProbeResult> {
        if self.is_locked() {
            let passphrase = passphrase.ok_or(Error::Locked)?;
            self.unlock_with_remote(passphrase, remote.as_ref() as &dyn Remote)
                .await?;
        }
        self.attach(remote).await
    }
}
