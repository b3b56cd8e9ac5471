//! Issue 24, 7.8: a bucket on a full disk, on a real full file system (a
//! small tmpfs this test mounts; the test suite runs as root, as CI does).
//! Reads keep working, writes fail as "disk full" with exit code 4 and
//! leave nothing half-written, `check` finds nothing damaged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{ok, stderr, stdout, FERRY};

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
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "this test needs a small real file system to fill: `mount -t tmpfs` failed \
                 ({}); it runs as root, as scripts/test.sh does on CI: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs `mount` (util-linux) to make a small tmpfs: {e}"),
        }
        SmallDisk { mount, _dir: dir }
    }

    /// Fills the file system with `filler`: writes until it is refused as
    /// full.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
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

/// Runs ferry in `root` (its bucket is `root/.ferry`).
fn ferry(root: &Path, args: &[&str]) -> Output {
    Command::new(FERRY)
        .current_dir(root)
        .env_remove("FERRY_BUCKET")
        .env("XDG_CONFIG_HOME", root.join("no-user-config"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts `o` failed as a full disk: exit 4, the message and the way out.
fn assert_disk_full(o: &Output, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(4), "{what}: {err}");
    assert!(err.contains("error: disk full"), "{what}: {err}");
    assert!(
        err.contains("hint: free space on that file system"),
        "{what}: {err}"
    );
    assert!(err.contains("nothing was half-written"), "{what}: {err}");
}

#[test]
fn full_disk_keeps_reads_and_refuses_writes_as_disk_full() {
    let disk = SmallDisk::mount("8m");
    let root = disk.mount.as_path();
    let bucket = root.join(".ferry");
    let outside = tempfile::tempdir().unwrap();
    let file = |name: &str, data: &[u8]| {
        let p = outside.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_owned()
    };
    ok(ferry(root, &["init"]));
    let small = file("small.txt", b"small");
    let big_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let big = file("big.bin", &big_bytes);
    ok(ferry(root, &["put", "small.txt", &small]));
    ok(ferry(root, &["put", "big.bin", &big]));
    let listed = "big.bin\nsmall.txt\n";

    // A blob larger than the disk: the temp file hits ENOSPC.
    let huge = file("huge.bin", &vec![7u8; 16 << 20]);
    let o = ferry(root, &["put", "huge.bin", &huge]);
    assert_disk_full(&o, "a blob larger than the disk");
    let temps: Vec<_> = std::fs::read_dir(bucket.join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert_eq!(stdout(&ok(ferry(root, &["ls"]))), listed);

    // Room for SQLite's shared memory, none for the write-ahead log: the
    // index transaction itself fails (SQLITE_FULL) and rolls back.
    let filler = disk.fill();
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len((len / 4096 * 4096).saturating_sub(36 << 10))
        .unwrap();
    let o = ferry(root, &["put", "new.txt", &small]);
    assert_disk_full(&o, "an index commit on a nearly full disk");
    assert!(
        !stderr(&o).contains("open for reading only"),
        "the index opened for writing: {}",
        stderr(&o)
    );

    // Full to the last byte: SQLite cannot even size its shared-memory
    // file (what the issue saw as "disk I/O error ... xShmMap").
    std::fs::remove_file(&filler).unwrap();
    let filler = disk.fill();
    for args in [
        &["ls"][..],
        &["ls", "-l"],
        &["stat", "big.bin"],
        &["status"],
        &["du"],
        &["cache"],
    ] {
        let o = ferry(root, args);
        assert!(
            o.status.success(),
            "{args:?} on a full disk: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("is full: the bucket is open for reading only"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(stdout(&ok(ferry(root, &["ls"]))), listed);
    assert_eq!(ok(ferry(root, &["cat", "small.txt"])).stdout, b"small");
    assert_eq!(ok(ferry(root, &["cat", "big.bin"])).stdout, big_bytes);
    let o = ferry(root, &["check"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "check on a full disk: {}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("2 objects, 2 verified on this device, 0 damaged; index ok"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("damaged:"), "{}", stdout(&o));
    for args in [
        &["put", "new.txt", &small][..],
        &["rm", "small.txt"],
        &["mv", "small.txt", "moved.txt"],
        &["pin", "big.bin"],
    ] {
        assert_disk_full(&ferry(root, args), &format!("{args:?}"));
    }
    assert_eq!(stdout(&ok(ferry(root, &["ls"]))), listed);

    // Space freed: writable again, nothing lost.
    std::fs::remove_file(&filler).unwrap();
    ok(ferry(root, &["put", "new.txt", &small]));
    assert_eq!(
        stdout(&ok(ferry(root, &["ls"]))),
        "big.bin\nnew.txt\nsmall.txt\n"
    );
    assert_eq!(ok(ferry(root, &["cat", "big.bin"])).stdout, big_bytes);
    let o = ok(ferry(root, &["check"]));
    assert!(stdout(&o).contains("0 damaged; index ok"), "{}", stdout(&o));
}
