//! Sync through the real binary, two replicas on a `file://` remote.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{stderr, stdout, FERRY};

fn ferry(root: &Path, bucket: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(FERRY);
    cmd.current_dir(root)
        .env_remove("FERRY_BUCKET")
        .arg("--bucket")
        .arg(root.join(bucket))
        .args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn two_replicas_sync_conflict_and_resolve_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "b", &["init", "--remote", &url], None));
    let shown = json(&ok(ferry(root, "a", &["remote", "show", "--json"], None)));
    assert_eq!(shown["url"], url.as_str());

    ok(ferry(root, "a", &["put", "n/x.txt"], Some(b"one")));
    let dry = json(&ok(ferry(
        root,
        "a",
        &["sync", "--dry-run", "--json"],
        None,
    )));
    assert_eq!(dry["pushed"], 0);
    assert_eq!(dry["planned"].as_array().unwrap().len(), 1);
    let run = json(&ok(ferry(root, "a", &["push", "--json"], None)));
    for field in [
        "pushed",
        "pulled",
        "conflicts",
        "errors",
        "duration_ms",
        "timestamp",
    ] {
        assert!(run.get(field).is_some(), "sync --json lacks {field}: {run}");
    }
    assert_eq!(run["pushed"], 1);
    let run = json(&ok(ferry(root, "b", &["pull", "--json"], None)));
    assert_eq!(run["pulled"], 1);
    assert_eq!(
        stdout(&ok(ferry(root, "b", &["cat", "n/x.txt"], None))),
        "one"
    );

    ok(ferry(root, "a", &["put", "n/x.txt"], Some(b"from a")));
    ok(ferry(root, "b", &["put", "n/x.txt"], Some(b"from b")));
    ok(ferry(root, "a", &["sync"], None));
    let human = ok(ferry(root, "b", &["sync"], None));
    assert!(
        stdout(&human).contains("conflict: n/x.txt"),
        "{}",
        stdout(&human)
    );
    let status = json(&ok(ferry(root, "b", &["status", "--json"], None)));
    for field in [
        "total",
        "synced",
        "dirty",
        "stale",
        "conflicts",
        "pending_delete",
        "orphan",
        "cache_size",
    ] {
        assert!(
            status.get(field).is_some(),
            "status --json lacks {field}: {status}"
        );
    }
    assert_eq!(status["conflicts"], 1);
    let conflicts = json(&ok(ferry(root, "b", &["conflicts", "--json"], None)));
    assert_eq!(conflicts[0]["key"], "n/x.txt");

    let bad = ferry(root, "b", &["resolve", "n/x.txt", "keep-nothing"], None);
    assert_eq!(bad.status.code(), Some(2));
    let not_conflicted = ferry(root, "b", &["resolve", "n/other", "keep-local"], None);
    assert_eq!(not_conflicted.status.code(), Some(1));
    assert!(
        stderr(&not_conflicted).contains("not in conflict"),
        "{}",
        stderr(&not_conflicted)
    );

    let resolved = ok(ferry(root, "b", &["resolve", "n/x.txt", "keep-both"], None));
    assert!(
        stderr(&resolved).contains("n/x.txt.conflict."),
        "{}",
        stderr(&resolved)
    );
    assert_eq!(
        stdout(&ok(ferry(root, "b", &["cat", "n/x.txt"], None))),
        "from a"
    );
    ok(ferry(root, "b", &["sync"], None));
    ok(ferry(root, "a", &["sync"], None));
    let listing = stdout(&ok(ferry(root, "a", &["ls", "n/"], None)));
    assert_eq!(listing.lines().count(), 2, "{listing}");
    // The remote folder holds plain files any tool can read.
    assert_eq!(
        std::fs::read(root.join("remote/n/x.txt")).unwrap(),
        b"from a"
    );
}

#[test]
fn scopes_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "b", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "p/1"], Some(b"1")));
    ok(ferry(root, "a", &["put", "q/1"], Some(b"1")));
    ok(ferry(root, "a", &["sync"], None));
    assert_eq!(
        stdout(&ok(ferry(root, "b", &["scope", "ls"], None))),
        "(everything)\n"
    );
    ok(ferry(root, "b", &["scope", "add", "p/"], None));
    assert_eq!(
        stdout(&ok(ferry(root, "b", &["scope", "ls"], None))),
        "p/\n"
    );
    assert_eq!(stdout(&ok(ferry(root, "b", &["ls"], None))), "p/1\n");
    ok(ferry(root, "b", &["scope", "rm", "p/"], None));
    let status = json(&ok(ferry(root, "b", &["status", "--json"], None)));
    assert_eq!(status["orphan"], 1);
}

#[test]
fn unreachable_remote_at_init_is_a_clear_error_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = ferry(
        root,
        "x",
        &[
            "init",
            "--remote",
            "s3://bucket/p",
            "--endpoint",
            "http://127.0.0.1:9",
            "--path-style",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("127.0.0.1:9"),
        "the error names the endpoint: {}",
        stderr(&out)
    );
    assert!(!root.join("x").exists(), "nothing may be created locally");
    let bad_url = ferry(root, "y", &["init", "--remote", "ftp://nope"], None);
    assert_eq!(bad_url.status.code(), Some(2));
    let no_remote = ferry(root, "z", &["init"], None);
    assert!(no_remote.status.success());
    let sync = ferry(root, "z", &["sync"], None);
    assert_eq!(sync.status.code(), Some(1));
    assert!(stderr(&sync).contains("no remote"), "{}", stderr(&sync));
}
