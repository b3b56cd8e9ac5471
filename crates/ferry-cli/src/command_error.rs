//! The one place library errors become messages, hints and exit codes.
//!
//! Exit codes: 0 success (and a closed output pipe, as `head` expects),
//! 1 failure, 2 usage errors (bad arguments, invalid keys or metadata),
//! 3 a sync that finished with conflicts left to resolve, 4 the disk holding
//! the bucket is full (nothing was half-written; reads still work).

use std::io;
use std::process::ExitCode;

/// `sync`, `push`, `pull`: everything else synced, and conflicts are left
/// for `ferry resolve` (the summary listed them).
pub const EXIT_CONFLICTS: u8 = 3;

/// The disk holding the bucket is full: the write was refused whole (no
/// half-written object, temp files removed); reading commands still work.
pub const EXIT_DISK_FULL: u8 = 4;

/// A failed command: the error, an optional hint, and its exit code.
#[derive(Debug)]
pub struct CommandError {
    error: anyhow::Error,
    hint: Option<String>,
    exit: u8,
    /// The command already said everything (e.g. `diff` found differences).
    silent: bool,
}

impl CommandError {
    /// A failure caused by the user's input or environment, with a hint.
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CommandError {
            error: anyhow::anyhow!(message.into()),
            hint: Some(hint.into()),
            exit: 1,
            silent: false,
        }
    }

    /// The error's message, without the hint.
    pub fn message(&self) -> String {
        format!("{:#}", self.error)
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError {
            error: anyhow::anyhow!(message.into()),
            hint: None,
            exit: 2,
            silent: false,
        }
    }

    /// True when the cause is a damaged index (`check --repair` rebuilds it).
    pub fn is_damaged_index(&self) -> bool {
        self.error
            .chain()
            .any(|e| e.downcast_ref::<ferry::Error>().is_some_and(damaged_index))
    }

    /// Exit with `code` and print nothing more (the output said it).
    pub fn exit_quietly(code: u8) -> Self {
        CommandError {
            error: anyhow::anyhow!("exit {code}"),
            hint: None,
            exit: code,
            silent: true,
        }
    }
}

/// A damaged index: refused at open, or found damaged while reading.
fn damaged_index(err: &ferry::Error) -> bool {
    err.is_damaged_index()
}

fn classify(err: &ferry::Error) -> (u8, Option<String>) {
    use ferry::Error as E;
    if damaged_index(err) && !matches!(err, E::DamagedIndex { .. }) {
        return (1, Some("the bucket's index is damaged: `ferry check --repair` rebuilds it from what can still be read (the damaged file is kept); what was synced comes back from the remote".into()));
    }
    if err.is_disk_full() && !matches!(err, E::DiskFull { .. }) {
        return (EXIT_DISK_FULL, Some("free space on the file system holding the bucket (`df -h` shows it), or move the bucket to a larger disk, then run the command again; nothing was half-written".into()));
    }
    match err {
        E::InvalidKey(_) | E::InvalidMetadata(_) => (2, None),
        E::NotFound { .. } => (1, Some("`ferry ls` lists the keys this bucket holds".into())),
        E::NoBucket { .. } => (
            1,
            Some("run `ferry init` to create one, or pass --bucket DIR (or set FERRY_BUCKET)".into()),
        ),
        E::AlreadyExists { .. } => (1, Some("use it as it is, or choose another directory".into())),
        E::Corrupt { .. } => (
            1,
            Some("the local copy is damaged; nothing wrong was returned. Restore it by writing the object again".into()),
        ),
        E::UnsupportedSchema { .. } => (1, Some("upgrade ferry to open this bucket".into())),
        E::Remote(e) if e.kind == ferry::remote::RemoteErrorKind::Unreachable => (
            1,
            Some("the remote could not be reached or did not answer in time (limits: connect_timeout_secs and io_timeout_secs in ferry.toml's [sync]); check the endpoint and the network; nothing was changed locally".into()),
        ),
        E::Remote(r) => {
            // The credentials to check depend on the kind of store.
            let creds = if r.endpoint.starts_with("gs://") {
                "GOOGLE_APPLICATION_CREDENTIALS, or ferry.toml; the bucket must exist"
            } else if r.endpoint.starts_with("az://") {
                "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, or ferry.toml; the container must exist"
            } else if r.endpoint.starts_with("webdav") {
                "FERRY_WEBDAV_USER, FERRY_WEBDAV_PASSWORD, or ferry.toml"
            } else if r.endpoint.starts_with("signer+") {
                "FERRY_SIGNER_TOKEN, or signer_token in ferry.toml's [credentials]; the token's prefixes must cover the keys and .ferry/"
            } else {
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or ferry.toml"
            };
            (
                1,
                Some(format!("check the remote URL, endpoint and credentials ({creds}); nothing was changed locally")),
            )
        }
        E::RemoteDown { .. } => (1, Some("what was done before is recorded; the next `ferry sync` (or a running `ferry watch`, once the remote answers) goes on from there; check the endpoint and the network (time limits: connect_timeout_secs and io_timeout_secs in ferry.toml's [sync])".into())),
        E::NoRemote => (1, Some("set one with `ferry remote set s3://BUCKET/PREFIX` (or gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX, webdav://HOST/PATH, signer+https://HOST/BASE, file:///PATH)".into())),
        E::LeaderBusy { .. } => (1, Some("another process (`ferry watch` or an app) runs the sync engine; it may be busy or stuck".into())),
        E::NotInConflict { .. } => (1, Some("`ferry conflicts` lists the keys in conflict".into())),
        E::LocalChanges { .. } => (1, Some("run `ferry sync` first".into())),
        E::DiskFull { path } => {
            // The file written may be gone (a removed temp file): name the
            // nearest folder that is there.
            let place = path.ancestors().find(|p| p.is_dir()).unwrap_or(path);
            (EXIT_DISK_FULL, Some(format!("free space on that file system (`df -h {}` shows how much is left), or move the bucket to a larger disk, then run the command again; nothing was half-written, and reading commands (ls, cat, get, stat, status, check) still work meanwhile", place.display())))
        }
        E::Locked => (1, Some("give the passphrase with FERRY_PASSPHRASE, --passphrase-file FILE, or at a terminal prompt".into())),
        E::WrongPassphrase => (1, Some("nothing was changed; check FERRY_PASSPHRASE or --passphrase-file (a passphrase changed with `ferry passwd` on another device is learned by `ferry sync` while the remote is reachable)".into())),
        E::RemoteMode { remote: ferry::StorageMode::Encrypted, .. } => (1, Some("to sync with an encrypted remote, create a bucket with `ferry init --remote URL`: it detects the encryption and asks for the passphrase".into())),
        E::RemoteMode { .. } => (1, Some("an encrypted bucket needs an empty remote or one it encrypted itself; choose another prefix".into())),
        E::DamagedIndex { .. } => (1, Some("the index is the bucket's catalogue and cannot be rebuilt from the blob files alone (names and metadata live only there): `ferry check --repair` rebuilds it from what can still be read (the damaged file is kept), the rest comes back from the remote at the next sync; or restore index.db from a backup".into())),
        E::Rekeyed { .. } => (1, Some("run `ferry rejoin` here with the new passphrase: it joins the new key and carries this folder's unpushed changes over (this folder's data stays as it is until then)".into())),
        E::RekeyBlocked { .. } => (1, None),
        E::Crypto(ferry::crypto::CryptoError::KdfOutOfRange(_)) => (1, Some("nothing was changed; a key file that asks for far more Argon2 work than this device affords is refused before any work. If the bucket was made with such a cost on purpose and this device can afford it, join with --kdf-memory MIB --kdf-passes N at least 1/8 of it".into())),
        E::JournalRewritten { .. } => (1, Some("if the store was restored from a backup on purpose, `ferry sync --full` re-reads it as it now is (versions older than ones this device saw are still refused); otherwise someone with write access rewrote it".into())),
        E::ReadOnly { .. } => (1, Some("nothing was changed; reading commands (ls, cat, get, stat, status, du, check) work here; to change it, run as a user who can write the bucket directory".into())),
        E::BucketInUse { .. } => (1, Some("stop those processes (a `ferry watch` stops by itself within a second; other programs must close the bucket), then run `ferry destroy --clear-local` again".into())),
        E::UnconfirmedPlaintext { .. } => (1, Some("if it is a plaintext remote (objects written by other tools, or by a plaintext ferry bucket), run the command again with --plaintext; if it was an encrypted ferry remote, do not: someone removed its key file, restore .ferry/key.json from a backup first".into())),
        E::DifferentKey { .. } => (1, Some("this remote belongs to another encrypted bucket; choose another prefix, or join it with `ferry init --remote URL`".into())),
        E::EncryptedKeyTooLong { .. } => (2, None),
        E::TooManyDeletes { side: "locally", .. } => (1, Some("`ferry sync --dry-run` lists what would be deleted; if the remote lost these objects (a wiped bucket, an old backup), `ferry sync --restore-remote` puts this device's copies back; if the deletes are wanted, `--max-delete N|P%` sets the limit for one run, `--force` lifts it".into())),
        E::TooManyDeletes { .. } => (1, Some("`ferry sync --dry-run` lists what would be deleted; `--max-delete N|P%` sets the limit for one run, `--force` lifts it".into())),
        E::EmptyRemote { synced, .. } => (1, Some(format!("check the remote first (`ferry remote show`: mounted? the right prefix and credentials?). If it was wiped or recreated, `ferry sync --restore-remote` (or `ferry push`) uploads this device's {synced} object(s) again and deletes nothing here. Only if it was emptied on purpose, `ferry sync --accept-remote-deletes` deletes them here too (it says how many and asks)"))),
        _ => (1, None),
    }
}

impl From<ferry::Error> for CommandError {
    fn from(err: ferry::Error) -> Self {
        let (exit, hint) = classify(&err);
        CommandError {
            error: anyhow::Error::new(err),
            hint,
            exit,
            silent: false,
        }
    }
}

impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        let (exit, hint) = error
            .chain()
            .find_map(|e| e.downcast_ref::<ferry::Error>())
            .map(classify)
            .unwrap_or((1, None));
        CommandError {
            error,
            hint,
            exit,
            silent: false,
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints the error (unless it is a closed pipe) and returns its exit code.
pub fn report(err: &CommandError) -> ExitCode {
    if is_broken_pipe(&err.error) {
        return ExitCode::SUCCESS;
    }
    if err.silent {
        return ExitCode::from(err.exit);
    }
    let mut message = format!("error: {}", err.error);
    for cause in err.error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(&format!("\n  caused by: {text}"));
        }
    }
    if let Some(hint) = &err.hint {
        message.push_str(&format!("\nhint: {hint}"));
    }
    eprintln!("{message}");
    ExitCode::from(err.exit)
}
