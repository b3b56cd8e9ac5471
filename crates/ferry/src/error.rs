//! The library's error type: one enum, structured fields, no strings to parse.

use std::io;
use std::path::PathBuf;

use crate::key::KeyError;
use crate::metadata::MetadataError;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a bucket operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key broke a naming rule.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The user metadata or content type broke a rule.
    #[error(transparent)]
    InvalidMetadata(#[from] MetadataError),
    /// No object exists at the key.
    #[error("no object at key {key:?}")]
    NotFound {
        /// The key looked up.
        key: String,
    },
    /// The stored content does not match its hash, or is missing.
    #[error("object {key:?} is corrupt: {detail}")]
    Corrupt {
        /// The object whose content failed verification.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// There is no bucket at the path.
    #[error("no ferry bucket at {}", path.display())]
    NoBucket {
        /// The directory that was opened.
        path: PathBuf,
    },
    /// An encrypted remote offered a version of `key` older than one this
    /// replica has already seen: a rollback or a replay by someone with
    /// write access to the store. Nothing was changed locally.
    #[error("the remote's version of {key:?} is older than one this replica has already seen (stamp {} < {seen}): a rollback or replay of the store; the local copy is kept", found.map_or("none".to_owned(), |f| f.to_string()))]
    Rollback {
        /// The key.
        key: String,
        /// The newest stamp seen here.
        seen: u64,
        /// The stamp the remote offered (none: an unstamped envelope).
        found: Option<u64>,
    },
    /// The remote's change journal is not the one this replica read: it
    /// ends below the record read last (rolled back), or a record follows
    /// another predecessor (forked). Nothing was changed.
    #[error("the change journal on {remote} was rewritten below what this replica has read ({detail}): the store was rolled back or forked; nothing was changed")]
    JournalRewritten {
        /// The remote.
        remote: String,
        /// What was found.
        detail: String,
    },
    /// The bucket can only be read by this user (its directory or index
    /// is not writable): it was opened read-only and this call writes.
    #[error("the bucket at {} is read-only for this user (no write permission); reading works, changes need write access", dir.display())]
    ReadOnly {
        /// The bucket directory.
        dir: PathBuf,
    },
    /// `create` found a bucket already there.
    #[error("a ferry bucket already exists at {}", path.display())]
    AlreadyExists {
        /// The directory that was to be created.
        path: PathBuf,
    },
    /// The index was written by a newer ferry.
    #[error(
        "the bucket index at {} has schema version {found}; this ferry reads versions up to {supported}",
        path.display()
    )]
    UnsupportedSchema {
        /// The index file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The disk is full: nothing was acknowledged, nothing half-written
    /// stays (temp files are removed, the index transaction rolled back).
    /// Also what every write of a bucket opened on a full disk (read-only,
    /// [`crate::Bucket::is_disk_full`]) fails with.
    #[error("disk full: no space left on the device holding {}", path.display())]
    DiskFull {
        /// The file being written, or the bucket directory.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A body stream given to `put` failed while it was read.
    #[error("reading the body for {key:?} failed: {source}")]
    Body {
        /// The key being written.
        key: String,
        /// The reader's error.
        source: io::Error,
    },
    /// The index database failed.
    #[error("bucket index error: {0}")]
    Index(#[from] rusqlite::Error),
    /// The index holds something this build cannot read.
    #[error("bucket index is inconsistent: {0}")]
    IndexData(String),
    /// The index file is damaged (emptied, truncated, overwritten): the
    /// bucket cannot be opened, and it was not modified.
    #[error("the bucket index {} is damaged: {detail}", path.display())]
    DamagedIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A background task of the library panicked or was cancelled (a bug,
    /// or the runtime shutting down); what it was doing is not known to
    /// have happened.
    #[error("internal task {task} did not finish: {cause}")]
    Task {
        /// What the task did.
        task: &'static str,
        /// The runtime's answer.
        cause: String,
    },
    /// A remote request failed.
    #[error("remote {0}")]
    Remote(#[from] crate::remote::RemoteError),
    /// The bucket has no remote, or it is not connected.
    #[error("this bucket has no connected remote")]
    NoRemote,
    /// Safety rail: the run would delete more objects than allowed.
    #[error(
        "this sync would delete {count} of {synced} synced objects {side}, more than the limit ({limit}); \
         nothing was deleted. Check the remote and scope; run with --force to go on"
    )]
    TooManyDeletes {
        /// `locally` or `on the remote`.
        side: &'static str,
        /// Deletes planned on that side.
        count: u64,
        /// Objects synced before the run.
        synced: u64,
        /// The limit, as configured (`50%`, `1000`).
        limit: String,
    },
    /// The remote stopped answering during a run, which stopped early (what
    /// was done is recorded; the rest waits for the next run).
    #[error(
        "the remote {remote} stopped answering during the sync ({cause}); the run stopped early, \
         {left} key(s) left for the next sync"
    )]
    RemoteDown {
        /// The remote.
        remote: String,
        /// The first failure that showed it.
        cause: String,
        /// Actions planned and not done.
        left: u64,
    },
    /// Safety rail: the remote listed nothing where objects were synced.
    #[error(
        "the remote {remote} lists no objects under the sync scope {scope:?}, but {synced} objects were synced \
         with it; a wiped bucket, a wrong prefix, an unmounted folder or credentials that list nothing \
         would look like this. Nothing was deleted"
    )]
    EmptyRemote {
        /// The remote.
        remote: String,
        /// The scope prefix that lists nothing (`""`: the whole remote).
        scope: String,
        /// Objects synced before the run.
        synced: u64,
    },
    /// `resolve` was asked about a key that is not in conflict.
    #[error("{key:?} is not in conflict")]
    NotInConflict {
        /// The key.
        key: String,
    },
    /// A conditional put found another version (or none, or one) of the key.
    #[error("{key:?}: precondition failed (the object changed, or exists, or does not)")]
    PreconditionFailed {
        /// The key.
        key: String,
    },
    /// A fresh remote copy was requested for a key with unpushed local changes.
    #[error("{key:?} has local changes that are not pushed yet; sync first")]
    LocalChanges {
        /// The key.
        key: String,
    },
    /// Another process leads the sync engine and did not answer in time.
    #[error("the sync engine of this bucket is run by another process{}, which did not answer", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    LeaderBusy {
        /// The leader's pid, when known.
        pid: Option<u32>,
    },
    /// The leading process ran the requested sync and it failed.
    #[error("the sync run by the leading process{} failed: {error}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    LeaderFailed {
        /// The leader's pid, when known.
        pid: Option<u32>,
        /// Its error.
        error: String,
    },
    /// The bucket's background writer has stopped (the bucket is shutting down).
    #[error("the bucket is closed")]
    Closed,
    /// The bucket is encrypted and locked: content and metadata need the passphrase.
    #[error("the bucket is encrypted and locked; unlock it with its passphrase first")]
    Locked,
    /// An encryption operation was asked of a plaintext bucket.
    #[error("the bucket is not encrypted")]
    NotEncrypted,
    /// The passphrase does not open the bucket's key.
    #[error("wrong passphrase: it does not open this bucket's key")]
    WrongPassphrase,
    /// Key material is unreadable or was altered.
    #[error("encryption: {0}")]
    Crypto(crate::crypto::CryptoError),
    /// The remote's encryption mode differs from the bucket's.
    #[error("the remote {endpoint} is {remote}, but this bucket is {local}; they cannot sync")]
    RemoteMode {
        /// The remote.
        endpoint: String,
        /// What the remote holds.
        remote: StorageMode,
        /// What the bucket is.
        local: StorageMode,
    },
    /// A remote holds objects and no key file: plaintext, or encrypted with
    /// its key file deleted. Joining it in the clear needs an explicit
    /// choice.
    #[error("the remote {endpoint} holds objects but no .ferry/key.json: it is a plaintext remote, or an encrypted one whose key file was removed; joining it in the clear needs an explicit choice")]
    UnconfirmedPlaintext {
        /// The remote.
        endpoint: String,
    },
    /// Other processes still have the bucket open, so its local data was
    /// not deleted (the remote is detached and their engines told to stop).
    #[error("the bucket is still open in process(es) {pids:?}; its local data was not deleted (the remote is already detached)")]
    BucketInUse {
        /// The processes, by pid.
        pids: Vec<u32>,
    },
    /// The remote is encrypted under another master key.
    #[error("the remote {endpoint} is encrypted under a different key (key id {remote_key_id}, this bucket's is {local_key_id}); they cannot sync")]
    DifferentKey {
        /// The remote.
        endpoint: String,
        /// The remote key file's id.
        remote_key_id: String,
        /// This bucket's key id.
        local_key_id: String,
    },
    /// The remote was rekeyed on another device: it holds a newer master key
    /// (a later key epoch) than this bucket.
    #[error("the remote {endpoint} was rekeyed (key epoch {remote_epoch}, this bucket has epoch {local_epoch}): this bucket's key no longer opens it; join it again with its new passphrase (`ferry rejoin`, which carries this bucket's unpushed changes over; this folder keeps its data until then)")]
    Rekeyed {
        /// The remote.
        endpoint: String,
        /// The remote key file's epoch.
        remote_epoch: u32,
        /// This bucket's epoch.
        local_epoch: u32,
    },
    /// `rekey` cannot start or go on; nothing was lost.
    #[error("rekey cannot go on: {reason}")]
    RekeyBlocked {
        /// Why, and what to do.
        reason: String,
    },
    /// A key is too long to store on a remote once encrypted.
    #[error("invalid key {key:?}: encrypted, it is {len} bytes, over the {max}-byte limit of object stores (encrypted names grow by about a third)")]
    EncryptedKeyTooLong {
        /// The key.
        key: String,
        /// Its encrypted length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether a bucket or a remote holds plaintext or ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// Names and content in the clear.
    Plaintext,
    /// Sealed with a bucket's keys (a `.ferry/key.json` on the remote).
    Encrypted,
}

impl std::fmt::Display for StorageMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageMode::Plaintext => "plaintext",
            StorageMode::Encrypted => "encrypted",
        })
    }
}

impl Error {
    /// True for a damaged index: refused when opened (`DamagedIndex`), or
    /// found corrupt while reading (SQLite's "malformed" errors).
    pub fn is_damaged_index(&self) -> bool {
        match self {
            Error::DamagedIndex { .. } => true,
            Error::Index(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ),
            _ => false,
        }
    }

    /// True for a full disk: [`Error::DiskFull`], or SQLite's "database or
    /// disk is full" where it was not turned into one.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Index(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }

    /// The error of a blocking or spawned task that did not finish.
    pub(crate) fn task(task: &'static str, e: tokio::task::JoinError) -> Self {
        Error::Task {
            task,
            cause: e.to_string(),
        }
    }
}

impl From<crate::crypto::CryptoError> for Error {
    fn from(e: crate::crypto::CryptoError) -> Self {
        match e {
            crate::crypto::CryptoError::WrongPassphrase => Error::WrongPassphrase,
            other => Error::Crypto(other),
        }
    }
}

impl Error {
    /// Wraps an I/O error with what was being done, spotting a full disk.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull { path }
        } else {
            Error::Io {
                context,
                path,
                source,
            }
        }
    }

    /// True when the error is about the caller's input rather than the store.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidKey(_) | Error::InvalidMetadata(_) | Error::EncryptedKeyTooLong { .. }
        )
    }

    /// Recovers a ferry error carried inside an `io::Error` by an object body.
    pub fn from_body_io(err: io::Error) -> Self {
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            match err.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(e)) => *e,
                Some(Err(other)) => Error::Io {
                    context: "reading object body",
                    path: PathBuf::new(),
                    source: io::Error::other(other),
                },
                None => Error::Closed,
            }
        } else {
            Error::Io {
                context: "reading object body",
                path: PathBuf::new(),
                source: err,
            }
        }
    }
}
