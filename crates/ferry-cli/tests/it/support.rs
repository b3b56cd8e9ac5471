//! Running the real binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// The `ferry-torture` test driver: an example (so `cargo install` leaves
/// it out), which `cargo test` builds next to the test binaries' folder.
pub fn torture() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/examples/
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .join("examples")
        .join("ferry-torture");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p ferry-cli` (or nextest) builds it",
        path.display()
    );
    path
}

/// A scratch directory with a bucket at `<root>/.ferry`.
pub struct Scratch {
    pub root: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let s = Scratch {
            root: tempfile::tempdir().unwrap(),
        };
        let out = s.ferry(&["init"]);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    pub fn empty() -> Self {
        Scratch {
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn bucket(&self) -> PathBuf {
        self.root.path().join(".ferry")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(FERRY);
        // No user config from the machine running the tests.
        c.current_dir(self.root.path())
            .env_remove("FERRY_BUCKET")
            .env("XDG_CONFIG_HOME", self.root.path().join("no-user-config"));
        c
    }

    pub fn ferry(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs with `stdin` piped in.
    pub fn ferry_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Runs ferry in `root` on the bucket `root/<bucket>`, with `stdin` fed
/// in, and no user config from the machine running the tests.
pub fn ferry_in(root: &Path, bucket: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    ferry_in_env(root, bucket, &[], args, stdin)
}

/// [`ferry_in`] with these environment variables set (credentials,
/// endpoints); the machine's own store credentials and endpoints are not
/// passed on.
pub fn ferry_in_env(
    root: &Path,
    bucket: &str,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    use std::io::Write;
    let mut child = Command::new(FERRY)
        .current_dir(root)
        .env_remove("FERRY_BUCKET")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env("XDG_CONFIG_HOME", root.join("no-user-config"))
        .envs(env.iter().copied())
        .arg("--bucket")
        .arg(root.join(bucket))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The JSON a command printed.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// `o`, after asserting it succeeded (its output in the message if not).
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Hashes of blob files on disk under `<bucket>/blobs`.
pub fn blob_files(bucket: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for dir in std::fs::read_dir(bucket.join("blobs")).unwrap() {
        let dir = dir.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            out.insert(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Hashes the index says live in blob files (present objects only).
pub fn referenced_blobs(conn: &rusqlite::Connection) -> std::collections::BTreeSet<String> {
    let mut stmt = conn
        .prepare("SELECT DISTINCT hash FROM objects WHERE present = 1 AND inline = 0")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    rows.map(|h| hex::encode(h.unwrap())).collect()
}
