//! Issue 24, 7.8: the library on a real full file system (a small tmpfs
//! this test mounts; the suite runs as root, as CI does). A write the disk
//! refuses is `Error::DiskFull` and leaves nothing behind; a bucket opened
//! on a full disk opens read-only and reads work.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use ferry::{Body, Bucket, BucketConfig, Error, ListOptions, PutOptions};
use tokio::io::AsyncReadExt;

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts it, or fails the test saying why: never skipped silently.
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .unwrap_or_else(|e| panic!("this test needs `mount` to make a small tmpfs: {e}"));
        assert!(
            out.status.success(),
            "this test needs a small real file system to fill: `mount -t tmpfs` failed ({}); \
             it runs as root, as scripts/test.sh does on CI: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { mount, _dir: dir }
    }

    /// Writes a filler file until the file system refuses it as full.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}

async fn keys(bucket: &Bucket) -> Vec<String> {
    let page = bucket.list(ListOptions::prefix("")).await.unwrap();
    page.objects.into_iter().map(|m| m.key).collect()
}

async fn read(bucket: &Bucket, key: &str) -> Vec<u8> {
    let mut object = bucket.get(key).await.unwrap();
    let mut out = Vec::new();
    object.body.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_disk_full_for_writes_and_read_only_for_reads() {
    let disk = SmallDisk::mount("4m");
    let dir = disk.mount.join("bucket");
    let bucket = Bucket::create(&dir, BucketConfig::default()).await.unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    bucket
        .put("a.txt", "hello", PutOptions::default())
        .await
        .unwrap();
    bucket
        .put("big.bin", big.clone(), PutOptions::default())
        .await
        .unwrap();

    // Blob writes the disk refuses, from bytes and from a reader.
    let huge = vec![9u8; 8 << 20];
    let e = bucket
        .put("huge", huge.clone(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    assert!(e.to_string().starts_with("disk full: "), "{e}");
    let reader = Body::from_reader(std::io::Cursor::new(huge));
    let e = bucket
        .put("huge", reader, PutOptions::default())
        .await
        .unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    assert_eq!(
        std::fs::read_dir(dir.join("tmp")).unwrap().count(),
        0,
        "temp files left"
    );
    assert_eq!(keys(&bucket).await, ["a.txt", "big.bin"]);

    // Opened again on a disk full to the last byte.
    drop(bucket);
    let filler = disk.fill();
    let bucket = Bucket::open(&dir).await.unwrap();
    assert!(bucket.is_read_only() && bucket.is_disk_full());
    assert_eq!(keys(&bucket).await, ["a.txt", "big.bin"]);
    assert_eq!(read(&bucket, "a.txt").await, b"hello");
    assert_eq!(read(&bucket, "big.bin").await, big);
    assert!(bucket.check_index().await.unwrap().is_empty());
    let e = bucket
        .put("b.txt", "x", PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    let e = bucket.delete("a.txt").await.unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");

    // Space again: writable once opened again.
    drop(bucket);
    std::fs::remove_file(filler).unwrap();
    let bucket = Bucket::open(&dir).await.unwrap();
    assert!(!bucket.is_read_only() && !bucket.is_disk_full());
    bucket
        .put("b.txt", "x", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(keys(&bucket).await, ["a.txt", "b.txt", "big.bin"]);
}
