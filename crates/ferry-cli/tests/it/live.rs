//! `ferry watch` as a real background process: leadership, takeover after
//! SIGKILL, requests from one-shot syncs, and the event stream.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{stderr, FERRY};

struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Watcher {
    fn start(root: &Path) -> Watcher {
        let mut child = Command::new(FERRY)
            .current_dir(root)
            .env_remove("FERRY_BUCKET")
            .args([
                "--bucket",
                root.join("b").to_str().unwrap(),
                "watch",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: serde_json::Value =
                    serde_json::from_str(&line).expect("watch --json prints JSON lines");
                sink.lock().unwrap().push(v);
            }
        });
        Watcher { child, lines }
    }

    fn events(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.events().iter().any(|e| e == what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// True once the process has exited by itself within `timeout`.
    fn exits_within(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, || self.child.try_wait().unwrap().is_some())
    }

    fn terminate(mut self) -> Vec<String> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "watch exited with {status}");
        std::thread::sleep(Duration::from_millis(100));
        self.events()
    }
}

fn setup(interval_secs: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let url = format!("file://{}", root.join("remote").display());
    let out = Command::new(FERRY)
        .current_dir(&root)
        .args([
            "--bucket",
            root.join("b").to_str().unwrap(),
            "init",
            "--remote",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        root.join("b/ferry.toml"),
        format!(
            "[sync]\ninterval_secs = {interval_secs}\ndebounce_ms = 100\nleader_poll_ms = 200\n"
        ),
    )
    .unwrap();
    (tmp, root)
}

fn ferry(root: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(FERRY)
        .current_dir(root)
        .env_remove("FERRY_BUCKET")
        .arg("--bucket")
        .arg(root.join("b"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn remote_files(root: &Path, prefix: &str) -> usize {
    let dir = root.join("remote").join(prefix);
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_writer_process_puts_reach_the_remote_through_the_watch_leader() {
    let (_t, root) = setup(30);
    let w = Watcher::start(&root);
    assert!(
        w.wait_for("sync-completed", Duration::from_secs(10)),
        "{:?}",
        w.events()
    );
    for i in 0..5 {
        let out = ferry(
            &root,
            &["put", &format!("w/{i}")],
            format!("value {i}").as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        wait_until(Duration::from_secs(10), || remote_files(&root, "w") == 5),
        "writes never reached the remote"
    );
    assert_eq!(std::fs::read(root.join("remote/w/3")).unwrap(), b"value 3");
    let events = w.terminate();
    assert_eq!(events.first().map(String::as_str), Some("leader-promoted"));
    assert_eq!(events.last().map(String::as_str), Some("leader-demoted"));
    assert_eq!(
        events.iter().filter(|e| *e == "object-pushed").count(),
        5,
        "{events:?}"
    );
}

#[test]
fn sigkill_the_leader_and_a_waiting_watcher_takes_over_with_nothing_lost() {
    let (_t, root) = setup(30);
    let a = Watcher::start(&root);
    assert!(a.wait_for("leader-promoted", Duration::from_secs(10)));
    let b = Watcher::start(&root);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !b.events().contains(&"leader-promoted".to_string()),
        "two leaders at once"
    );
    // Work for the leader: 300 objects, some large.
    let src = root.join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..300 {
        let size = if i % 30 == 0 { 400_000 } else { 100 };
        std::fs::write(src.join(format!("f{i:03}")), vec![(i % 251) as u8; size]).unwrap();
    }
    let out = ferry(&root, &["cp", "-r", "src", "k/"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    // Kill the leader while it pushes (as soon as its first object is out).
    assert!(
        a.wait_for("object-pushed", Duration::from_secs(10)),
        "{:?}",
        a.events()
    );
    let mut a = a;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    let killed = Instant::now();
    // Give the reader of its output time to take the rest.
    std::thread::sleep(Duration::from_millis(200));
    let a_events = a.events();
    assert!(
        b.wait_for("leader-promoted", Duration::from_secs(5)),
        "no takeover: {:?}",
        b.events()
    );
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || remote_files(&root, "k") == 300),
        "after takeover only {} of 300 reached the remote",
        remote_files(&root, "k")
    );
    for i in [0, 1, 30, 299] {
        let size = if i % 30 == 0 { 400_000 } else { 100 };
        assert_eq!(
            std::fs::read(root.join(format!("remote/k/f{i:03}"))).unwrap(),
            vec![(i % 251) as u8; size]
        );
    }
    // The waiting watcher never synced while the first one led: before
    // its promotion it shows only the leader's events (relayed through the
    // bucket's event log), never a run of its own.
    let b_events = b.terminate();
    let first_promoted = b_events
        .iter()
        .position(|e| e == "leader-promoted")
        .unwrap();
    let started = |events: &[String]| events.iter().filter(|e| *e == "sync-started").count();
    assert!(
        started(&b_events[..first_promoted]) <= started(&a_events),
        "{b_events:?} / leader: {a_events:?}"
    );
    let status = ferry(&root, &["status", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["dirty"], 0, "{v}");
}

#[test]
fn a_one_shot_sync_is_run_by_the_leader_and_the_event_stream_is_golden() {
    // Manual mode: the engine syncs once at start, then only on writes or requests.
    let (_t, root) = setup(0);
    let w = Watcher::start(&root);
    assert!(w.wait_for("sync-completed", Duration::from_secs(10)));
    // A one-shot sync from another process is answered by the leader.
    let out = ferry(&root, &["sync", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pushed"], 0);
    std::thread::sleep(Duration::from_millis(400));
    let out = ferry(&root, &["put", "golden"], b"g");
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(10), || root
        .join("remote/golden")
        .exists()));
    std::thread::sleep(Duration::from_millis(300));
    let events = w.terminate();
    assert_eq!(
        events,
        [
            "leader-promoted",
            "sync-started",
            "sync-completed",
            "sync-started",
            "sync-completed",
            "sync-started",
            "object-pushed",
            "sync-completed",
            "leader-demoted",
        ],
        "golden event sequence"
    );
}

/// `destroy` detaches the remote and stops every engine of the bucket (a
/// `watch` in another process exits by itself on the `destroyed` event), and
/// only then deletes the local data; the remote keeps what was pushed.
#[test]
fn destroy_stops_running_engines_before_clearing_local_data() {
    let (_t, root) = setup(30);
    assert!(ferry(&root, &["put", "k"], b"v").status.success());
    let mut w = Watcher::start(&root);
    assert!(w.wait_for("sync-completed", Duration::from_secs(20)));
    assert_eq!(remote_files(&root, ""), 2, "k and .ferry/ on the remote");

    // Without --clear-local: detached, the watch stops, a sync has no remote.
    let out = ferry(&root, &["destroy", "-y"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        w.exits_within(Duration::from_secs(10)),
        "watch kept running after destroy"
    );
    assert!(
        w.events().iter().any(|e| e == "destroyed"),
        "{:?}",
        w.events()
    );
    let shown = ferry(&root, &["remote", "show"], b"");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("no remote"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let sync = ferry(&root, &["sync"], b"");
    assert_eq!(sync.status.code(), Some(1), "{}", stderr(&sync));
    assert!(stderr(&sync).contains("no remote"), "{}", stderr(&sync));

    // Given a remote again it lives again; a new watch, then destroy
    // --clear-local from another process: the watch stops first.
    let url = format!("file://{}", root.join("remote").display());
    let out = ferry(&root, &["remote", "set", &url, "--yes"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut w = Watcher::start(&root);
    assert!(w.wait_for("sync-completed", Duration::from_secs(20)));
    let out = ferry(&root, &["destroy", "--clear-local", "-y"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!root.join("b").exists(), "local data deleted");
    assert!(
        w.exits_within(Duration::from_secs(10)),
        "watch kept running after destroy"
    );
    assert!(root.join("remote").join("k").exists(), "the remote keeps k");
}

/// `-q` silences `watch` too: it syncs and prints nothing.
#[test]
fn quiet_watch_syncs_and_prints_nothing() {
    let (_t, root) = setup(30);
    let child = Command::new(FERRY)
        .current_dir(&root)
        .env_remove("FERRY_BUCKET")
        .args(["--bucket", root.join("b").to_str().unwrap(), "-q", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(ferry(&root, &["put", "quiet/k"], b"v").status.success());
    assert!(
        wait_until(Duration::from_secs(20), || remote_files(&root, "quiet")
            == 1),
        "the put did not reach the remote"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no event lines");
    assert_eq!(stderr(&out), "");
}

/// Bytes of cached content, as the index counts them.
fn cached_bytes(root: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        root.join("b").join(ferry::INDEX_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT value FROM totals WHERE name = 'cached_bytes'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn settings_edited_while_watch_runs_apply_to_the_running_engine() {
    let (_t, root) = setup(1);
    let w = Watcher::start(&root);
    assert!(
        w.wait_for("sync-completed", Duration::from_secs(10)),
        "{:?}",
        w.events()
    );
    for i in 0..3 {
        let out = ferry(&root, &["put", &format!("k/{i}")], &[b'a' + i; 2000]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        wait_until(Duration::from_secs(10), || remote_files(&root, "k") == 3),
        "writes never reached the remote"
    );
    assert_eq!(cached_bytes(&root), 6000);
    // No other command runs: the watch process itself applies the edit.
    std::fs::write(
        root.join("b/ferry.toml"),
        "[sync]\ninterval_secs = 1\ndebounce_ms = 100\nleader_poll_ms = 200\nmax_cache_size = 2500\n",
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || cached_bytes(&root) <= 2500),
        "the running engine kept {} bytes cached over a limit of 2500",
        cached_bytes(&root)
    );
    let events = w.terminate();
    assert!(
        events.iter().filter(|e| *e == "object-evicted").count() >= 2,
        "{events:?}"
    );
}

/// `watch` holds keys for hours: it makes itself non-dumpable, which
/// Linux shows by handing the files in `/proc/<pid>` to root. As root the watch runs as
/// `nobody` (setpriv) so the change is visible.
#[test]
fn watch_disables_core_dumps() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_t, root) = setup(30);
    let exe = root.join("ferry-bin");
    std::fs::copy(FERRY, &exe).unwrap();
    let as_root = std::fs::metadata(&exe).unwrap().uid() == 0;
    let mut cmd = if as_root {
        // Everything under the scratch root writable for `nobody`.
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            let mode = if p.is_dir() { 0o777 } else { 0o666 };
            let keep_exec = p == exe;
            std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(if keep_exec { 0o755 } else { mode }),
            )
            .unwrap();
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let child = cmd
        .current_dir(&root)
        .env_remove("FERRY_BUCKET")
        .env("HOME", &root)
        .args(["--bucket", root.join("b").to_str().unwrap(), "watch", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // The process's own user, and the owner Linux gives its /proc entry.
    let real_uid = |status: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let became_private = wait_until(Duration::from_secs(10), || {
        let Ok(status) = std::fs::read_to_string(proc_dir.join("status")) else {
            return false;
        };
        let uid = real_uid(&status);
        uid != 0
            && std::fs::metadata(proc_dir.join("environ"))
                .map(|m| m.uid())
                .ok()
                == Some(0)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(
        became_private,
        "/proc/{pid}/environ stayed owned by the process's user: core dumps are enabled ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}
