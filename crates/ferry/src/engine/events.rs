//! Events: what the bucket and its sync engine tell subscribers.
//!
//! A `tokio::sync::broadcast` channel: `Bucket::subscribe` returns a
//! receiver, dropping it unsubscribes. A subscriber that falls more than the
//! channel's capacity behind misses the oldest events (and is told so by the
//! receiver), it never slows the engine down.
//!
//! Events cross processes through the bucket's event log
//! (`<bucket>/events.log`, JSON lines): every process appends the events
//! it emits (but those about itself: lock state, leadership), and a process
//! with subscribers relays the lines other processes appended, so that a
//! follower (an app, `ferry serve`, a second `ferry watch`) sees the
//! leader's sync events. The log is best-effort and bounded: it is rotated
//! to `events.log.1` past [`LOG_ROTATE`] bytes, and a process that cannot
//! write it loses no data, only the cross-process copies of its events.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use serde::Serialize;

/// A sync run's result, as carried by events and across processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncSummary {
    /// Objects uploaded.
    pub pushed: u64,
    /// Objects downloaded or learned.
    pub pulled: u64,
    /// Remote deletes done.
    pub deleted_remote: u64,
    /// Local deletes done.
    pub deleted_local: u64,
    /// Keys in conflict.
    pub conflicts: Vec<String>,
    /// Keys that failed, with causes.
    pub errors: Vec<(String, String)>,
    /// Keys the remote no longer holds with nothing proving a device
    /// deleted them (encrypted buckets): kept and pushed again
    /// (`SyncReport::missing_on_remote`; not failures). Absent
    /// in lines older processes wrote.
    #[serde(default)]
    pub missing_on_remote: Vec<String>,
    /// Duration in ms.
    pub duration_ms: u64,
    /// Completion, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A sync run started.
    SyncStarted,
    /// The bucket was unlocked in this process.
    Unlocked,
    /// The bucket was locked in this process.
    Locked,
    /// A sync run finished.
    SyncCompleted {
        /// Its result.
        result: SyncSummary,
    },
    /// A sync run failed as a whole.
    SyncFailed {
        /// Why.
        error: String,
    },
    /// An object was uploaded.
    ObjectPushed {
        /// Its key.
        key: String,
    },
    /// An object was downloaded (or learned).
    ObjectPulled {
        /// Its key.
        key: String,
    },
    /// An object is in conflict.
    ObjectConflict {
        /// Its key.
        key: String,
    },
    /// An object's local copy was evicted from the cache.
    ObjectEvicted {
        /// Its key.
        key: String,
    },
    /// The remote became unreachable.
    Offline,
    /// The remote is reachable again.
    Online,
    /// This process now runs the sync engine.
    LeaderPromoted,
    /// This process stopped running the sync engine.
    LeaderDemoted,
    /// The bucket was destroyed (by this or another process): its remote is
    /// detached and this process's engine has stopped; close the bucket.
    Destroyed,
}

/// Capacity of the event channel.
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// The event log's file name, in the bucket directory.
pub const EVENT_LOG: &str = "events.log";
/// The log is rotated (to `events.log.1`) when it grows past this.
pub const LOG_ROTATE: u64 = 1 << 20;
/// How often a relay looks for other processes' events.
const RELAY_POLL: Duration = Duration::from_millis(200);

/// One line of the event log.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Line {
    /// The emitting bucket handle (random per open).
    origin: String,
    event: Event,
}

/// A bucket handle's end of the event log.
#[derive(Debug)]
pub(crate) struct EventLog {
    path: PathBuf,
    origin: String,
    /// The open log file (append) and its inode, when it was opened.
    file: Mutex<Option<(std::fs::File, u64)>>,
    relaying: AtomicBool,
    /// A read-only bucket writes nothing.
    writable: bool,
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    1
}

impl EventLog {
    pub(crate) fn new(dir: &Path, writable: bool) -> Self {
        EventLog {
            path: dir.join(EVENT_LOG),
            origin: format!("{:016x}", rand::random::<u64>()),
            file: Mutex::new(None),
            relaying: AtomicBool::new(false),
            writable,
        }
    }

    /// Whether other processes should see `event`: not what is about this
    /// process only (its lock state, its leadership), nor `Destroyed`,
    /// which every process learns by itself.
    fn shared(event: &Event) -> bool {
        !matches!(
            event,
            Event::Unlocked
                | Event::Locked
                | Event::LeaderPromoted
                | Event::LeaderDemoted
                | Event::Destroyed
        )
    }

    /// Appends `event` for other processes (best-effort).
    pub(crate) fn append(&self, event: &Event) {
        if !self.writable || !Self::shared(event) {
            return;
        }
        let Ok(mut line) = serde_json::to_string(&Line {
            origin: self.origin.clone(),
            event: event.clone(),
        }) else {
            return;
        };
        line.push('\n');
        let Ok(mut held) = self.file.lock() else {
            return;
        };
        // One look at the path: rotate it when too large, reopen it when
        // another process rotated it under us.
        let current = std::fs::metadata(&self.path).ok();
        let rotate = current.as_ref().is_some_and(|m| m.len() > LOG_ROTATE);
        if rotate {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        let stale = rotate
            || match (&*held, &current) {
                (Some((_, ino)), Some(m)) => inode(m) != *ino,
                _ => true,
            };
        if stale {
            *held = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok()
                .and_then(|f| {
                    let ino = f.metadata().ok().map(|m| inode(&m))?;
                    Some((f, ino))
                });
        }
        if let Some((f, _)) = held.as_mut() {
            // One write per line: appends of whole lines do not interleave.
            if f.write_all(line.as_bytes()).is_err() {
                *held = None;
            }
        }
    }

    /// Starts relaying other processes' events into `events` (once per
    /// handle, inside a Tokio runtime; stops when the bucket is dropped).
    pub(crate) fn relay<T: Send + Sync + 'static>(
        &self,
        owner: Weak<T>,
        events: tokio::sync::broadcast::Sender<Event>,
    ) {
        if self.relaying.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.relaying.store(false, Ordering::SeqCst);
            return;
        };
        let mut tail = Tail::at_end(self.path.clone());
        let origin = self.origin.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(RELAY_POLL).await;
                if owner.upgrade().is_none() {
                    return;
                }
                for line in tail.read_new() {
                    if let Ok(l) = serde_json::from_str::<Line>(&line) {
                        if l.origin != origin {
                            let _ = events.send(l.event);
                        }
                    }
                }
            }
        });
    }
}

/// A reader of the log's new lines, across rotations.
struct Tail {
    path: PathBuf,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// Positioned at the log's current end (history is not replayed).
    fn at_end(path: PathBuf) -> Self {
        let m = std::fs::metadata(&path).ok();
        Tail {
            inode: m.as_ref().map_or(0, inode),
            offset: m.map_or(0, |m| m.len()),
            path,
            partial: Vec::new(),
        }
    }

    /// The complete lines appended since the last call.
    fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(m) = std::fs::metadata(&self.path) else {
            return out;
        };
        if inode(&m) != self.inode {
            // Rotated: finish the old file (now `.1`), then start the new one.
            let old = self.path.with_extension("log.1");
            if std::fs::metadata(&old).is_ok_and(|o| inode(&o) == self.inode) {
                self.read_from(&old, &mut out);
            }
            self.inode = inode(&m);
            self.offset = 0;
            self.partial.clear();
        } else if m.len() < self.offset {
            // Truncated in place: start over.
            self.offset = 0;
            self.partial.clear();
        }
        let path = self.path.clone();
        self.read_from(&path, &mut out);
        out
    }

    fn read_from(&mut self, path: &Path, out: &mut Vec<String>) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        // Bounded: a burst larger than this is read over several polls.
        if (&mut f).take(4 << 20).read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(n) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=n).collect();
            out.push(String::from_utf8_lossy(&line[..n]).into_owned());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_whole_lines_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path(), true);
        let mut tail = Tail::at_end(dir.path().join(EVENT_LOG));
        log.append(&Event::SyncStarted);
        log.append(&Event::Locked); // not shared
        let lines = tail.read_new();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l: Line = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(l.event, Event::SyncStarted);
        // A half-written line waits for its end.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(EVENT_LOG))
            .unwrap()
            .write_all(b"{\"origin\":\"x\",")
            .unwrap();
        assert!(tail.read_new().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(EVENT_LOG))
            .unwrap()
            .write_all(b"\"event\":{\"event\":\"online\"}}\n")
            .unwrap();
        let lines = tail.read_new();
        let l: Line = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(l.event, Event::Online);
        // Past the size limit the log rotates; lines written to the old
        // file before it moved are still read, then the new file's.
        let big = "x".repeat(LOG_ROTATE as usize + 1);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(EVENT_LOG))
            .unwrap()
            .write_all(format!("{big}\n").as_bytes())
            .unwrap();
        log.append(&Event::Offline);
        let lines = tail.read_new();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), big.len());
        let l: Line = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(l.event, Event::Offline);
        assert!(dir.path().join("events.log.1").exists());
    }
}
