//! The content-addressed blob store: large object content as files named by hash.
//!
//! Layout under the bucket directory:
//! - `blobs/<first two hex digits>/<64 hex digits>`: one file per distinct content;
//! - `tmp/<pid>-<random>.tmp`: content being written, locked by its writer;
//! - `open/<pid>-<random>`: one per process with the bucket open, locked
//!   while it is (an unlocked one is a crash: the next open collects).
//!
//! A blob is written to a temp file (hashed as it streams), fsynced, and only
//! renamed into `blobs/` by the index writer while it holds the index write
//! lock; the rename's directory is fsynced before the index commit. Because
//! renames and unlinks both happen under that lock, the garbage collector can
//! never delete a blob that a commit is about to reference. A temp file is
//! held under an exclusive OS file lock by its writer, so a collector can tell
//! a live writer's file (lock held) from a crashed one's (lock free).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::crypto::keyring::Keyring;
use crate::crypto::stream::Sealer;
use crate::error::{Error, Result};
use crate::hash::ContentHash;

/// Size of the chunks blobs are streamed in.
pub(crate) const CHUNK: usize = 1 << 20;

/// The blob directory of one bucket.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    open: PathBuf,
}

/// A blob being written: an open, locked temp file and the running hash.
/// In an encrypted bucket the hash is keyed and the bytes are sealed on
/// their way to the file, so no plaintext reaches the disk.
pub(crate) struct TempBlob {
    file: File,
    path: PathBuf,
    hasher: zeroize::Zeroizing<blake3::Hasher>,
    sealer: Option<Sealer<File>>,
    size: u64,
    installed: bool,
}

impl std::fmt::Debug for TempBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempBlob")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("sealed", &self.sealer.is_some())
            .finish()
    }
}

/// Whether the blob file at `dest` is whole: a plaintext blob hashes to
/// `hash`; a sealed one (which only the keyring can verify) has the length
/// the new sealed temp has (same plaintext, same sealed length).
fn intact(dest: &Path, temp: &Path, hash: &ContentHash) -> bool {
    use std::io::{Read, Seek};
    let Ok(mut f) = fs::File::open(dest) else {
        return false;
    };
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_ok() && &magic == b"FRYB" {
        let len = |p: &Path| fs::metadata(p).map(|m| m.len()).ok();
        return len(dest).is_some() && len(dest) == len(temp);
    }
    let mut hasher = blake3::Hasher::new();
    f.seek(io::SeekFrom::Start(0)).is_ok()
        && io::copy(&mut f, &mut hasher).is_ok()
        && ContentHash::from(hasher.finalize()) == *hash
}

impl BlobStore {
    /// The store under `root` (the bucket directory); directories must exist.
    pub(crate) fn new(root: &Path) -> Self {
        BlobStore {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            open: root.join("open"),
        }
    }

    /// Creates the store's directories.
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for dir in [&self.blobs, &self.tmp, &self.open] {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
        }
        Ok(())
    }

    /// Where the blob with `hash` lives.
    pub(crate) fn path(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// Starts a temp blob, locked against collection while this process lives.
    ///
    /// Creating and locking are two steps; a collector may take the lock in
    /// between and unlink the file. So after locking, check that the path
    /// still names the file we hold, and start over if it does not.
    pub(crate) fn temp(&self, keys: Option<&Keyring>) -> Result<TempBlob> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let name = format!("{}-{:016x}.tmp", std::process::id(), rand::random::<u64>());
            let path = self.tmp.join(name);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io("creating temp file", &path, e))?;
            file.lock()
                .map_err(|e| Error::io("locking temp file", &path, e))?;
            let held = file
                .metadata()
                .map_err(|e| Error::io("reading temp file", &path, e))?;
            match fs::metadata(&path) {
                Ok(named) if named.ino() == held.ino() && named.dev() == held.dev() => {
                    let (hasher, sealer) = match keys {
                        None => (zeroize::Zeroizing::new(blake3::Hasher::new()), None),
                        Some(k) => {
                            let out = file
                                .try_clone()
                                .and_then(|f| k.blob_sealer(f))
                                .map_err(|e| Error::io("writing temp file", &path, e))?;
                            (k.hasher(), Some(out))
                        }
                    };
                    return Ok(TempBlob {
                        file,
                        path,
                        hasher,
                        sealer,
                        size: 0,
                        installed: false,
                    });
                }
                _ => continue, // collected between create and lock
            }
        }
    }

    /// Moves a finished temp blob into place under its hash, fsyncing the directory.
    ///
    /// Must be called by the index writer while it holds the write lock. An
    /// existing blob of the same hash is replaced, so writing the same bytes
    /// again repairs a damaged copy.
    pub(crate) fn install(&self, temp: &mut TempBlob, hash: &ContentHash) -> Result<()> {
        let dest = self.path(hash);
        let Some(dir) = dest.parent() else {
            return Err(Error::IndexData(format!(
                "blob path without parent: {}",
                dest.display()
            )));
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating blob directory", dir, e))?;
            sync_dir(&self.blobs)?;
        }
        if intact(&dest, &temp.path, hash) {
            // The same content is already stored: keep that file (a push may
            // be streaming it; in an encrypted bucket its sealed bytes, nonce
            // included, differ from the new temp's). The temp goes when
            // dropped. A damaged file is replaced: writing again repairs it.
            return Ok(());
        }
        fs::rename(&temp.path, &dest).map_err(|e| Error::io("moving blob into place", &dest, e))?;
        temp.installed = true;
        sync_dir(dir)
    }

    /// The salt (or v1 nonce prefix) in the sealed header of the blob file
    /// for `hash`: `None` when the file is not a sealed blob or is missing.
    pub(crate) fn sealed_salt(&self, hash: &ContentHash) -> Result<Option<[u8; 16]>> {
        let path = self.path(hash);
        match File::open(&path) {
            Ok(file) => sealed_salt_of(&file).map_err(|e| Error::io("reading blob", path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("opening blob", path, e)),
        }
    }

    /// Deletes the blob with `hash` (the caller checked it is unreferenced).
    pub(crate) fn remove(&self, hash: &ContentHash) -> Result<()> {
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting blob", path, e)),
        }
    }

    /// Whether a process that had the bucket open died without closing it
    /// (its `open/<pid>-<rand>` marker is there and unlocked): only then
    /// can unreferenced blobs be left behind. Such markers are removed.
    pub(crate) fn crashed_openers(&self) -> Result<bool> {
        let entries = fs::read_dir(&self.open).map_err(|e| Error::io("listing", &self.open, e))?;
        let mut crashed = false;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.open, e))?;
            let Ok(file) = OpenOptions::new().write(true).open(entry.path()) else {
                continue;
            };
            if file.try_lock().is_ok() {
                crashed = true;
                // Its collection is about to run: the marker has done its job.
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(crashed)
    }

    /// Processes other than the holder of `mine` that have the bucket open
    /// (their marker is locked), by pid.
    pub(crate) fn other_openers(&self, mine: Option<&OpenMarker>) -> Result<Vec<u32>> {
        let entries = fs::read_dir(&self.open).map_err(|e| Error::io("listing", &self.open, e))?;
        let mut pids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.open, e))?;
            if mine.is_some_and(|m| entry.path() == m.path) {
                continue;
            }
            let Ok(file) = OpenOptions::new().write(true).open(entry.path()) else {
                continue;
            };
            if file.try_lock().is_err() {
                let name = entry.file_name().to_string_lossy().into_owned();
                pids.extend(name.split('-').next().and_then(|p| p.parse::<u32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Marks the bucket open by this process until the marker is dropped.
    pub(crate) fn open_marker(&self) -> Result<OpenMarker> {
        let name = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = self.open.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("creating", &path, e))?;
        file.try_lock()
            .map_err(|e| Error::io("locking", &path, io::Error::other(e.to_string())))?;
        Ok(OpenMarker { _file: file, path })
    }

    /// Deletes temp files whose writer is gone (their lock is free).
    pub(crate) fn collect_temps(&self) -> Result<usize> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.tmp).map_err(|e| Error::io("listing", &self.tmp, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.tmp, e))?;
            let path = entry.path();
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("deleting temp file", path, e)),
                }
            }
        }
        Ok(removed)
    }

    /// Every blob hash on disk (files with names that are not hashes are ignored).
    pub(crate) fn list(&self) -> Result<HashSet<ContentHash>> {
        let mut out = HashSet::new();
        let dirs = fs::read_dir(&self.blobs).map_err(|e| Error::io("listing", &self.blobs, e))?;
        for dir in dirs {
            let dir = dir
                .map_err(|e| Error::io("listing", &self.blobs, e))?
                .path();
            if !dir.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
                if let Some(hash) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.insert(hash);
                }
            }
        }
        Ok(out)
    }
}

impl TempBlob {
    /// Appends bytes, hashing them.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        match &mut self.sealer {
            Some(s) => s.write_all(data),
            None => self.file.write_all(data),
        }
        .map_err(|e| Error::io("writing temp file", &self.path, e))
    }

    /// Appends bytes as they are (already sealed content being pulled;
    /// the caller verifies it).
    pub(crate) fn write_raw(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io("writing temp file", &self.path, e))
    }

    /// Flushes the content to stable storage and returns its hash and size.
    pub(crate) fn finish(&mut self) -> Result<(ContentHash, u64)> {
        if let Some(sealer) = self.sealer.take() {
            sealer
                .finish()
                .map_err(|e| Error::io("writing temp file", &self.path, e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing temp file", &self.path, e))?;
        Ok((self.hasher.finalize().into(), self.size))
    }

    fn discard(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.installed {
            self.discard();
        }
    }
}

/// Fsyncs a directory so a rename or create inside it is durable.
/// The salt in the sealed header of an open blob file, read in place (the
/// file's position does not move): `None` when it is not a sealed blob.
pub(crate) fn sealed_salt_of(file: &File) -> io::Result<Option<[u8; 16]>> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; crate::crypto::stream::HEADER];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if &header[..4] != b"FRYB" {
        return Ok(None);
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&header[8..24]);
    Ok(Some(salt))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// A locked marker saying "this bucket is open in a live process"; removed
/// when dropped (a crash leaves it unlocked, see `crashed_openers`).
#[derive(Debug)]
pub(crate) struct OpenMarker {
    _file: File,
    path: PathBuf,
}

impl Drop for OpenMarker {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
