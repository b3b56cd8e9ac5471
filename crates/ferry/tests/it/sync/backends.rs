//! The remote kinds the suite runs against.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry::remote::folder::FolderRemote;
use ferry::remote::memory::MemoryRemote;
use ferry::remote::{Remote, SharedRemote};
use tokio::io::AsyncReadExt;

use super::{Backend, Plain};

/// `memory://`
pub struct Memory(pub MemoryRemote);

impl Memory {
    pub fn new() -> Self {
        Memory(MemoryRemote::new())
    }
}

async fn plain_get(r: &dyn Remote, key: &str) -> Option<Plain> {
    let (obj, mut body) = r.get(key).await.ok()?;
    let mut data = Vec::new();
    body.read_to_end(&mut data).await.ok()?;
    let mut metadata = obj.metadata.clone();
    if let Some(h) = obj.hash {
        metadata.insert(ferry::remote::META_HASH.into(), h.to_hex());
    }
    Some(Plain {
        data,
        content_type: obj.content_type,
        metadata,
    })
}

#[async_trait::async_trait]
impl Backend for Memory {
    fn remote(&self) -> SharedRemote {
        Arc::new(self.0.clone())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str) {
        self.0.put_foreign(key, data.to_vec(), content_type);
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        plain_get(&self.0, key).await
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.retain(|k| !k.starts_with(".ferry/"));
        keys.sort();
        keys
    }
}

/// `file://`
pub struct Folder(pub tempfile::TempDir);

impl Folder {
    pub fn new() -> Self {
        Folder(tempfile::tempdir().unwrap())
    }
}

#[async_trait::async_trait]
impl Backend for Folder {
    fn remote(&self) -> SharedRemote {
        Arc::new(FolderRemote::new(self.0.path()).unwrap())
    }
    async fn foreign_put(&self, key: &str, data: &[u8], _content_type: &str) {
        let path = self.0.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    async fn foreign_get(&self, key: &str) -> Option<Plain> {
        let data = std::fs::read(self.0.path().join(key)).ok()?;
        let r = FolderRemote::new(self.0.path()).unwrap();
        let obj = r.head(key).await.unwrap()?;
        let mut metadata: BTreeMap<String, String> = obj.metadata.clone();
        if let Some(h) = obj.hash {
            metadata.insert(ferry::remote::META_HASH.into(), h.to_hex());
        }
        Some(Plain {
            data,
            content_type: obj.content_type,
            metadata,
        })
    }
    async fn foreign_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for e in walkdir(self.0.path()) {
            let rel = e
                .strip_prefix(self.0.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.starts_with(".ferry") {
                keys.push(rel);
            }
        }
        keys.sort();
        keys
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
