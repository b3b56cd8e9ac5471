//! `file:///ABS/PATH`: a local folder as a remote, the embedded default.
//!
//! Objects are plain files at `<root>/<key>`, so any tool can read them.
//! ferry keeps each object's version tag, content type and metadata in a
//! sidecar `<root>/.ferry/meta/<key>.json`, which also records the content
//! file's size and mtime: a sidecar that does not match its file (a crash
//! between the two renames, or another tool rewrote the file) is ignored and
//! the file is described as a foreign object. Conditional writes and
//! deletes are enforced under an exclusive lock on `<root>/.ferry/lock`, so
//! several processes (or replicas) sharing the folder never lose an update.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// Objects per listing page.
const PAGE: usize = 1000;

/// A folder remote rooted at an absolute path.
#[derive(Debug, Clone)]
pub struct FolderRemote {
    root: PathBuf,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    etag: String,
    size: u64,
    mtime_ns: i128,
    content_type: String,
    metadata: BTreeMap<String, String>,
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// Longest file name most file systems allow (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// Why a folder cannot hold `key` as a file path, if it cannot.
pub(crate) fn folder_refuses(key: &str) -> Option<String> {
    for segment in key.split('/') {
        if segment.is_empty() {
            return Some(if key.ends_with('/') {
                "it ends with `/`, and a folder cannot hold a file whose name is empty".into()
            } else {
                "it has an empty segment (`//` or a leading `/`), which a file path cannot hold"
                    .into()
            });
        }
        if segment == "." || segment == ".." {
            return Some("it has a `.` or `..` segment".into());
        }
        if segment.len() > NAME_MAX {
            return Some(format!(
                "its segment of {} bytes is longer than a file name may be ({NAME_MAX} bytes)",
                segment.len()
            ));
        }
    }
    None
}

impl FolderRemote {
    /// A remote in `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, RemoteError> {
        let root = root.into();
        let me = FolderRemote { root };
        for dir in [me.root.join(".ferry/meta"), me.root.join(".ferry/tmp")] {
            fs::create_dir_all(&dir)
                .map_err(|e| me.err(&e, &format!("creating {}", dir.display())))?;
        }
        Ok(me)
    }

    fn err(&self, e: &io::Error, what: &str) -> RemoteError {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => RemoteErrorKind::NotFound,
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                RemoteErrorKind::Retryable
            }
            _ => RemoteErrorKind::Terminal,
        };
        RemoteError::new(kind, self.endpoint(), format!("{what}: {e}"))
    }

    /// The file for `key`, refusing keys a folder cannot hold faithfully.
    fn path(&self, key: &str) -> Result<PathBuf, RemoteError> {
        if let Some(why) = folder_refuses(key) {
            return Err(RemoteError::new(
                RemoteErrorKind::Terminal,
                self.endpoint(),
                format!("the key {key:?} cannot be stored in a folder remote: {why}"),
            ));
        }
        Ok(self.root.join(key))
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.root.join(".ferry/meta").join(format!("{key}.json"))
    }

    fn lock(&self) -> Result<File, RemoteError> {
        let path = self.root.join(".ferry/lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.err(&e, "opening the folder lock"))?;
        f.lock()
            .map_err(|e| self.err(&e, "taking the folder lock"))?;
        Ok(f)
    }

    /// Describes the object at `key` from its file and (valid) sidecar.
    fn describe(&self, key: &str, with_meta: bool) -> Result<Option<RemoteObject>, RemoteError> {
        let path = self.path(key)?;
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.err(&e, "reading object")),
        };
        let mtime = mtime_ns(&meta);
        let sidecar: Option<Sidecar> = fs::read(self.sidecar_path(key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &Sidecar| s.size == meta.len() && s.mtime_ns == mtime);
        let mut obj = RemoteObject {
            key: key.to_owned(),
            etag: format!("\"f{}-{}\"", meta.len(), mtime),
            size: meta.len(),
            modified_ms: Some((mtime / 1_000_000) as i64),
            hash: None,
            content_type: None,
            metadata: BTreeMap::new(),
            ferry_mtime: None,
            has_metadata: false,
            device: None,
            base: None,
            meta: None,
            stamp: None,
        };
        if let Some(s) = sidecar {
            obj.etag = s.etag;
            if with_meta {
                obj.content_type = Some(s.content_type);
                obj = obj.with_metadata(s.metadata);
            }
        } else if with_meta {
            obj.content_type =
                Some(crate::metadata::content_type_for(key, None).unwrap_or_default());
            obj.has_metadata = true;
        }
        Ok(Some(obj))
    }

    /// Appends to `out`, in key order, the objects under the folder `dir`
    /// (keys starting with `rel/`) whose key is after `after`, until `out`
    /// holds `limit`. Folders whose keys all sort at or before `after` are
    /// not read; entries are visited as their keys sort (a folder `a` as
    /// `a/`, so `a.b` comes before `a/x`).
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<RemoteObject>,
    ) -> Result<(), RemoteError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(())
            }
            Err(e) => return Err(self.err(&e, "listing")),
        };
        let mut names: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.err(&e, "listing"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".ferry" {
                continue;
            }
            let ft = entry.file_type().map_err(|e| self.err(&e, "listing"))?;
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() {
                let folder = format!("{key}/");
                // Every key in it sorts before `after` when the folder's
                // name does and `after` is not inside it.
                if after.is_some_and(|a| folder.as_str() < a && !a.starts_with(&folder)) {
                    continue;
                }
                names.push((folder, true));
            } else {
                if after.is_some_and(|a| key.as_str() <= a) {
                    continue;
                }
                names.push((key, false));
            }
        }
        names.sort_unstable();
        for (name, is_dir) in names {
            if out.len() >= limit {
                break;
            }
            if is_dir {
                let key = &name[..name.len() - 1];
                self.walk(
                    &dir.join(&key[key.rfind('/').map_or(0, |i| i + 1)..]),
                    key,
                    after,
                    limit,
                    out,
                )?;
            } else if let Some(obj) = self.describe(&name, false)? {
                out.push(obj);
            }
        }
        Ok(())
    }

    fn check(&self, key: &str, cond: &Precondition) -> Result<(), RemoteError> {
        let current = self.describe(key, false)?;
        cond.check(
            current.as_ref().map(|c| c.etag.as_str()),
            &self.endpoint(),
            key,
        )
    }

    fn put_sync(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: &Precondition,
    ) -> Result<String, RemoteError> {
        let dest = self.path(&req.key)?;
        let tmp = self
            .root
            .join(".ferry/tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        let write = || -> io::Result<()> {
            match &body {
                RemoteBody::Bytes(b) => {
                    let mut f = File::create(&tmp)?;
                    f.write_all(b)?;
                    f.sync_all()
                }
                // The system's copy (copy_file_range) when nobody counts.
                RemoteBody::File(src) if !req.progress.is_reported() => {
                    fs::copy(src, &tmp)?;
                    File::open(&tmp)?.sync_all()
                }
                RemoteBody::File(src) => {
                    let mut f = File::create(&tmp)?;
                    copy_counted(&mut File::open(src)?, &mut f, &req.progress)?;
                    f.sync_all()
                }
                RemoteBody::Framed { head, file } => {
                    let mut f = File::create(&tmp)?;
                    f.write_all(head)?;
                    copy_counted(&mut File::open(file)?, &mut f, &req.progress)?;
                    f.sync_all()
                }
            }
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(&e, "writing object"));
        }
        let _lock = self.lock()?;
        let result = (|| {
            self.check(&req.key, cond)?;
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| self.err(&e, "creating folder"))?;
            }
            fs::rename(&tmp, &dest).map_err(|e| self.err(&e, "moving object into place"))?;
            let meta = fs::metadata(&dest).map_err(|e| self.err(&e, "reading object"))?;
            let etag = format!("\"{:032x}\"", rand::random::<u128>());
            let sidecar = Sidecar {
                etag: etag.clone(),
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                content_type: req.content_type.clone(),
                metadata: req.all_metadata(),
            };
            let side = self.sidecar_path(&req.key);
            if let Some(parent) = side.parent() {
                fs::create_dir_all(parent).map_err(|e| self.err(&e, "creating folder"))?;
            }
            let side_tmp = tmp.with_extension("json");
            let bytes = serde_json::to_vec(&sidecar)
                .map_err(|e| self.err(&io::Error::other(e), "encoding sidecar"))?;
            fs::write(&side_tmp, bytes)
                .and_then(|()| File::open(&side_tmp)?.sync_all())
                .and_then(|()| fs::rename(&side_tmp, &side))
                .map_err(|e| self.err(&e, "writing sidecar"))?;
            Ok(etag)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn delete_sync(&self, key: &str, cond: &Precondition) -> Result<(), RemoteError> {
        let path = self.path(key)?;
        let _lock = self.lock()?;
        self.check(key, cond)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err(&e, "deleting object")),
        }
        let _ = fs::remove_file(self.sidecar_path(key));
        // Remove now-empty parent folders up to the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        RemoteError::new(
            RemoteErrorKind::Terminal,
            "file://",
            format!("task failed: {e}"),
        )
    })?
}

#[async_trait::async_trait]
impl Remote for FolderRemote {
    fn endpoint(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_put: true,
            conditional_delete: true,
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError> {
        let me = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Walk only the folder the prefix names (its part up to the last
            // `/`), in key order from the token (the last key given).
            let dir_part = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
            let mut out = Vec::new();
            me.walk(
                &me.root.join(dir_part),
                dir_part,
                token.as_deref(),
                PAGE,
                &mut out,
            )?;
            let next = (out.len() >= PAGE).then(|| out[out.len() - 1].key.clone());
            out.retain(|o| o.key.starts_with(&prefix));
            Ok(RemotePage { objects: out, next })
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        let me = self.clone();
        let key = key.to_owned();
        blocking(move || me.describe(&key, true)).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let me = self.clone();
        let key = key.to_owned();
        blocking(move || {
            // Open under the lock so the file and its description agree.
            let _lock = me.lock()?;
            let obj = me.describe(&key, true)?.ok_or_else(|| {
                RemoteError::new(
                    RemoteErrorKind::NotFound,
                    me.endpoint(),
                    format!("no object {key:?}"),
                )
            })?;
            let file = File::open(me.path(&key)?).map_err(|e| me.err(&e, "opening object"))?;
            let reader: RemoteReader = Box::new(tokio::fs::File::from_std(file));
            Ok((obj, reader))
        })
        .await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        let me = self.clone();
        let req = req.clone();
        blocking(move || me.put_sync(&req, body, &cond)).await
    }

    fn refuses(&self, key: &str) -> Option<String> {
        folder_refuses(key)
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let me = self.clone();
        let key = key.to_owned();
        blocking(move || me.delete_sync(&key, &cond)).await
    }
}

/// Copies `from` to `to` a chunk at a time, reporting the bytes copied.
fn copy_counted(
    from: &mut File,
    to: &mut File,
    progress: &crate::remote::TransferProgress,
) -> io::Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    let mut attempt = progress.attempt();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        attempt.add(n as u64);
    }
}
