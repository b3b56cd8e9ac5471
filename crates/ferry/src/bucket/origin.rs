//! Which directory a bucket's device id belongs to.
//!
//! The device id names one replica: its journal records are skipped by
//! itself, its `ferry-device` marks its own unrecorded pushes, its upload
//! markers are aborted by its own clean-up. A bucket directory copied
//! (`cp -r`) or restored from a backup carries the same id into a second
//! replica, and the two would then skip each other's journal records and
//! take each other's pushes for their own.
//!
//! So the index file's identity is recorded beside the id (the `origin`
//! setting: the bucket's path, the file's device and inode numbers and,
//! where the file system keeps it, its birth time). A copy or a restore is
//! a new file: when the recorded identity is not the index file's at open,
//! the bucket takes a new device id. A bucket moved (renamed) on its file
//! system keeps its file, so its id; only the recorded path is updated.
//! The rules and what a new id leaves untouched are in `docs/design.md`
//! ("Device id and copied buckets").

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::index;

/// The setting holding the recorded [`Origin`] (JSON).
pub(crate) const SETTING: &str = "origin";

/// Where an index file is and which file it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Origin {
    /// The bucket directory, canonical where it can be made so.
    path: String,
    /// The file system's device number of the index file (0 where unknown).
    dev: u64,
    /// The index file's inode number (0 where unknown).
    ino: u64,
    /// The index file's birth time, ns since the epoch, where the file
    /// system records one.
    #[serde(default)]
    born_ns: Option<u64>,
}

impl Origin {
    /// The identity of the index file `index_path` of the bucket in `dir`.
    pub(crate) fn observe(dir: &Path, index_path: &Path) -> Result<Origin> {
        let meta =
            std::fs::metadata(index_path).map_err(|e| Error::io("reading", index_path, e))?;
        let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        Ok(Origin {
            path: path.to_string_lossy().into_owned(),
            dev,
            ino,
            born_ns,
        })
    }

    /// True when `self` (as recorded) and `other` (as seen) are one file:
    /// the same inode on the same device, or at the same path (a file
    /// system mounted again may get another device number), and the same
    /// birth time where both are known (an inode number can be reused by a
    /// file restored after the original was deleted).
    pub(crate) fn same_file(&self, other: &Origin) -> bool {
        self.ino == other.ino
            && (self.dev == other.dev || self.path == other.path)
            && match (self.born_ns, other.born_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// What [`settle`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The recorded file is this one (or none was recorded yet): the id stays.
    Kept,
    /// The index is a copy: it got a new device id (the old one given).
    Renewed { old: Option<String> },
}

/// Compares the recorded origin with `seen` (the identity of the file
/// the settings were read from) and records `now` (the index file's
/// identity from here on; the same as `seen` except after a rebuild,
/// which writes a new file). When the recorded origin is another file, a
/// new device id is written. Runs inside the caller's write transaction,
/// so two processes opening a copy at once agree on one new id.
pub(crate) fn settle(conn: &Connection, seen: &Origin, now: &Origin) -> Result<Settled> {
    let recorded: Option<Origin> =
        index::setting(conn, SETTING)?.and_then(|text| serde_json::from_str(&text).ok());
    let settled = match &recorded {
        // Indexes made before the origin was recorded: trusted once.
        None => Settled::Kept,
        Some(r) if r.same_file(seen) => Settled::Kept,
        Some(_) => {
            let old = index::setting(conn, "device_id")?;
            index::set_setting(conn, "device_id", &new_device_id())?;
            Settled::Renewed { old }
        }
    };
    if recorded.as_ref() != Some(now) {
        let text = serde_json::to_string(now).map_err(|e| Error::DamagedIndex {
            path: now.path.clone().into(),
            detail: format!("recording the bucket's origin: {e}"),
        })?;
        index::set_setting(conn, SETTING, &text)?;
    }
    Ok(settled)
}

/// True when `here` is recorded as it is (the common open: nothing to
/// write, no write lock taken).
pub(crate) fn is_recorded(conn: &Connection, here: &Origin) -> Result<bool> {
    Ok(index::setting(conn, SETTING)?
        .and_then(|text| serde_json::from_str::<Origin>(&text).ok())
        .is_some_and(|r| r == *here))
}

/// A fresh random device id.
pub(crate) fn new_device_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, dev: u64, ino: u64, born_ns: Option<u64>) -> Origin {
        Origin {
            path: path.into(),
            dev,
            ino,
            born_ns,
        }
    }

    #[test]
    fn moves_keep_the_file_and_copies_do_not() {
        let home = at("/b", 1, 10, Some(5));
        assert!(home.same_file(&home.clone()), "reopened");
        assert!(home.same_file(&at("/moved", 1, 10, Some(5))), "renamed");
        assert!(home.same_file(&at("/b", 2, 10, Some(5))), "remounted");
        assert!(!home.same_file(&at("/copy", 1, 11, Some(7))), "copied");
        assert!(!home.same_file(&at("/b", 1, 11, Some(7))), "restored");
        assert!(
            !home.same_file(&at("/b", 1, 10, Some(9))),
            "restored on a reused inode"
        );
        assert!(
            !home.same_file(&at("/elsewhere", 2, 10, None)),
            "another disk"
        );
        assert!(home.same_file(&at("/b", 1, 10, None)), "no birth time");
    }
}
