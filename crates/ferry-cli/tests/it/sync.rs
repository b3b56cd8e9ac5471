//! Sync through the real binary, two replicas on a `file://` remote.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{ferry_in as ferry, ferry_in_env, json, ok, stderr, stdout, FERRY};

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
    // A dry run's JSON shows the conflict its plan holds (issue 24, 7.11).
    let dry = json(&ok(ferry(
        root,
        "b",
        &["sync", "--dry-run", "--json"],
        None,
    )));
    assert_eq!(dry["conflicts"][0]["key"], "n/x.txt", "{dry}");
    // A sync that leaves conflicts exits 3 (documented), not 0.
    let human = ferry(root, "b", &["sync"], None);
    assert_eq!(human.status.code(), Some(3), "{}", stderr(&human));
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
    // The copy keeps its extension last: n/x.conflict.<time>.txt.
    assert!(
        stderr(&resolved).contains("n/x.conflict.") && stderr(&resolved).contains(".txt"),
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

/// `ferry cache evict` then `cat`, `get` and `cp -r` of the evicted object
/// fetch it from the remote; `stat --json` says whether the content is
/// local and pinned.
#[test]
fn reading_an_evicted_object_fetches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ok(ferry(root, "a", &["put", "c/2.bin"], Some(&big)));
    ok(ferry(root, "a", &["sync"], None));
    let st = json(&ok(ferry(root, "a", &["stat", "c/2.bin", "--json"], None)));
    assert_eq!(
        (st["cached"].as_bool(), st["pinned"].as_bool()),
        (Some(true), Some(false))
    );
    ok(ferry(root, "a", &["cache", "evict", "4MiB"], None));
    let st = json(&ok(ferry(root, "a", &["stat", "c/2.bin", "--json"], None)));
    assert_eq!(st["cached"], false, "{st}");
    let out = ok(ferry(root, "a", &["cat", "c/2.bin"], None));
    assert!(out.stdout == big, "cat returned {} bytes", out.stdout.len());
    ok(ferry(root, "a", &["cache", "evict", "4MiB"], None));
    let target = root.join("out.bin");
    ok(ferry(
        root,
        "a",
        &["get", "c/2.bin", target.to_str().unwrap()],
        None,
    ));
    assert!(std::fs::read(&target).unwrap() == big);
    ok(ferry(root, "a", &["cache", "evict", "4MiB"], None));
    let dir = root.join("export");
    ok(ferry(
        root,
        "a",
        &["cp", "-r", "ferry:c/", dir.to_str().unwrap()],
        None,
    ));
    assert!(std::fs::read(dir.join("2.bin")).unwrap() == big);

    // Unreachable (the remote's path is no longer a folder): a clear
    // error, never a wrong or empty body.
    ok(ferry(root, "a", &["cache", "evict", "4MiB"], None));
    std::fs::rename(root.join("remote"), root.join("remote-away")).unwrap();
    std::fs::write(root.join("remote"), b"not a folder").unwrap();
    let out = ferry(root, "a", &["cat", "c/2.bin"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("not on this device"),
        "{}",
        stderr(&out)
    );
}

/// Issue 24, 7.9: pushing a large object showed "0/1 objects, eta 0s"
/// until it was done. The progress of `push`, `pull` (and `sync`) names
/// the bytes moved of those planned, the rate and the ETA, as `put` does,
/// beside the objects; with `--progress` the log's last line is the final
/// state.
#[test]
fn sync_progress_shows_bytes_rate_and_eta() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "b", &["init", "--remote", &url], None));
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let file = root.join("big.bin");
    std::fs::write(&file, &big).unwrap();
    ok(ferry(
        root,
        "a",
        &["put", "big.bin", file.to_str().unwrap()],
        None,
    ));
    for (bucket, verb) in [("a", "push"), ("b", "pull")] {
        let o = ok(ferry(root, bucket, &["--progress", verb], None));
        let err = stderr(&o);
        let last = err
            .lines()
            .rev()
            .find(|l| l.contains(" objects ["))
            .unwrap_or_else(|| panic!("{verb}: no progress line: {err}"));
        let ing = if verb == "push" { "pushing" } else { "pulling" };
        assert!(
            last.starts_with(&format!("{ing} 1/1 objects [")),
            "{verb}: {last}"
        );
        assert!(last.contains("] 24.00 MiB/24.00 MiB "), "{verb}: {last}");
        assert!(last.contains("/s eta "), "{verb}: rate and ETA: {last}");
        assert!(
            !err.contains('\r') && !err.contains('\x1b'),
            "plain lines: {err:?}"
        );
    }
    assert!(ok(ferry(root, "b", &["cat", "big.bin"], None)).stdout == big);
    // `--json` draws nothing.
    ok(ferry(
        root,
        "a",
        &["put", "other.bin", file.to_str().unwrap()],
        None,
    ));
    let o = ok(ferry(root, "a", &["--progress", "push", "--json"], None));
    assert!(!stderr(&o).contains("objects ["), "{}", stderr(&o));
}

/// `memory://` is refused by the CLI: the next command would see it empty.
#[test]
fn memory_remote_is_refused_by_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = ferry(root, "a", &["init", "--remote", "memory://"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory://"), "{}", stderr(&out));
    assert!(!root.join("a").exists(), "nothing created");
    ok(ferry(root, "a", &["init"], None));
    let out = ferry(root, "a", &["remote", "set", "memory://"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A `file://` remote whose folder was replaced by an empty one (an
/// unmounted drive): `sync` refuses, deletes nothing locally, exit 1;
/// `--force` goes on.
/// Empties the folder remote (`.ferry/` too) and recreates it, as a wiped
/// and recreated bucket looks.
fn wipe_folder(remote: &Path) {
    std::fs::remove_dir_all(remote).unwrap();
    std::fs::create_dir(remote).unwrap();
}

/// The objects a fresh replica pulls from the remote: (key, content).
fn pulled_by_fresh_replica(root: &Path, name: &str, url: &str) -> Vec<(String, String)> {
    ok(ferry(root, name, &["init", "--remote", url], None));
    ok(ferry(root, name, &["sync"], None));
    let ls = stdout(&ok(ferry(root, name, &["ls"], None)));
    ls.lines()
        .map(|k| {
            let k = k.trim().to_owned();
            let body = stdout(&ok(ferry(root, name, &["cat", &k], None)));
            (k, body)
        })
        .collect()
}

/// Issue 24, 7.1: after the remote was wiped, `sync` refuses, and the
/// command its hint offers puts every object back on the remote and
/// deletes nothing here (the old hint, `--force`, deleted every synced
/// object locally). `push` after a wipe pushes everything. Accepting the
/// remote's deletes is its own option, which says how many and asks.
#[test]
fn wiped_remote_folder_the_hint_puts_the_local_copy_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let remote = root.join("remote");
    let url = format!("file://{}", remote.display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    let want: Vec<(String, String)> = (0..5)
        .map(|i| (format!("n/{i}.txt"), format!("content {i}")))
        .collect();
    for (k, v) in &want {
        ok(ferry(root, "a", &["put", k], Some(v.as_bytes())));
    }
    ok(ferry(root, "a", &["sync"], None));
    wipe_folder(&remote);

    let out = ferry(root, "a", &["sync"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("lists no objects"), "{err}");
    let hint = err.split("hint:").nth(1).unwrap_or_default();
    assert!(hint.contains("`ferry sync --restore-remote`"), "{err}");
    assert!(hint.contains("5 object(s)"), "{err}");
    assert!(!hint.contains("--force"), "{err}");
    // `--force` (the old hint) is not the way past this rail any more.
    let out = ferry(root, "a", &["sync", "--force"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&ok(ferry(root, "a", &["ls"], None))).lines().count(),
        5
    );

    // The hinted command.
    let run = json(&ok(ferry(
        root,
        "a",
        &["sync", "--restore-remote", "--json"],
        None,
    )));
    assert_eq!(run["pushed"], 5, "{run}");
    assert_eq!(run["deleted_local"], 0, "{run}");
    assert_eq!(
        stdout(&ok(ferry(root, "a", &["ls"], None))).lines().count(),
        5
    );
    assert_eq!(pulled_by_fresh_replica(root, "b", &url), want);
    let run = json(&ok(ferry(root, "a", &["sync", "--json"], None)));
    assert_eq!(
        (run["pushed"].as_u64(), run["deleted_local"].as_u64()),
        (Some(0), Some(0))
    );

    // `push` after a wipe pushes everything.
    wipe_folder(&remote);
    let run = json(&ok(ferry(root, "a", &["push", "--json"], None)));
    assert_eq!(run["pushed"], 5, "{run}");
    assert_eq!(pulled_by_fresh_replica(root, "c", &url), want);

    // Accepting the deletes: says how many, and with nobody to ask, refuses.
    wipe_folder(&remote);
    let out = ferry(root, "a", &["sync", "--accept-remote-deletes"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deletes 5 object(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&ok(ferry(root, "a", &["ls"], None))).lines().count(),
        5
    );
    let run = json(&ok(ferry(
        root,
        "a",
        &["sync", "--accept-remote-deletes", "--yes", "--json"],
        None,
    )));
    assert_eq!(run["deleted_local"], 5, "{run}");
    assert_eq!(
        stdout(&ok(ferry(root, "a", &["ls"], None))).lines().count(),
        0
    );
}

/// A sync that would delete more than `--max-delete` stops and says why.
#[test]
fn max_delete_stops_a_mass_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    for i in 0..5 {
        ok(ferry(root, "a", &["put", &format!("n/{i}")], Some(b"x")));
    }
    ok(ferry(root, "a", &["sync"], None));
    ok(ferry(root, "a", &["rm", "-r", "n/"], None));
    let out = ferry(root, "a", &["sync", "--max-delete", "2"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("would delete 5"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(root.join("remote/n")).unwrap().count(), 5);
    let out = ferry(root, "a", &["sync", "--max-delete", "nonsense"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    ok(ferry(root, "a", &["sync", "--max-delete", "100%"], None));
}

/// `remote set` with the same remote spelled differently keeps what was
/// agreed (a deleted object stays deleted); a different remote asks first.
#[test]
fn remote_set_same_remote_keeps_tombstones_different_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join("remote");
    let url = format!("file://{}", dir.display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "k"], Some(b"v")));
    ok(ferry(root, "a", &["sync"], None));
    ok(ferry(root, "a", &["rm", "k"], None));
    let respelled = format!("file://{}/./", dir.display());
    ok(ferry(root, "a", &["remote", "set", &respelled], None));
    let run = json(&ok(ferry(root, "a", &["sync", "--json"], None)));
    assert_eq!(
        (run["deleted_remote"].as_u64(), run["pulled"].as_u64()),
        (Some(1), Some(0)),
        "{run}"
    );
    let other = format!("file://{}", root.join("other").display());
    let out = ferry(root, "a", &["remote", "set", &other], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    let shown = json(&ok(ferry(root, "a", &["remote", "show", "--json"], None)));
    assert_eq!(shown["url"], respelled.as_str());
    ok(ferry(root, "a", &["remote", "set", &other, "--yes"], None));
}

/// A key the folder remote cannot hold is refused by name: a warning at
/// `put`, one error at the first sync, then parked (counted by `status`),
/// never an error on every run.
#[test]
fn key_the_remote_cannot_hold_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    let out = ok(ferry(root, "a", &["put", "a//b"], Some(b"x")));
    assert!(
        stderr(&out).contains("cannot hold the key \"a//b\""),
        "{}",
        stderr(&out)
    );
    ok(ferry(root, "a", &["put", "fine"], Some(b"x")));
    let out = ferry(root, "a", &["sync", "--json"], None);
    assert_eq!(out.status.code(), Some(1));
    let run = json(&out);
    assert_eq!(run["pushed"], 1, "{run}");
    assert_eq!(run["errors"][0]["key"], "a//b", "{run}");
    assert_eq!(run["errors"][0]["retryable"], false, "{run}");
    let run = json(&ok(ferry(root, "a", &["sync", "--json"], None)));
    assert_eq!(run["parked"], 1, "{run}");
    let status = json(&ok(ferry(root, "a", &["status", "--json"], None)));
    assert_eq!(status["failed"], 1, "{status}");
}

/// Runs ferry against the moto server the test command started.
fn ferry_s3(root: &Path, bucket: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let endpoint = std::env::var("FERRY_TEST_MOTO_ENDPOINT")
        .expect("FERRY_TEST_MOTO_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let env = [
        ("AWS_ACCESS_KEY_ID", "ferrytest"),
        ("AWS_SECRET_ACCESS_KEY", "ferrytestsecret"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    ferry_in_env(root, bucket, &env, args, stdin)
}

/// The defect as measured: `put "notes "` and `a//b`, sync to a real S3
/// server, sync again: the keys stay exactly as written on both replicas,
/// nothing is deleted or renamed, `dir/` does not fail.
#[test]
fn keys_travel_byte_for_byte_through_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("s3://ferry-test/cli{:016x}", rand::random::<u64>());
    for b in ["a", "b"] {
        ok(ferry_s3(
            root,
            b,
            &["init", "--remote", &url, "--path-style"],
            None,
        ));
    }
    let keys = ["notes ", " notes", "a//b", "dir/", "a+b", "a%2Fb"];
    for k in keys {
        ok(ferry_s3(root, "a", &["put", k], Some(k.as_bytes())));
    }
    let run = json(&ok(ferry_s3(root, "a", &["sync", "--json"], None)));
    assert_eq!(run["pushed"], keys.len(), "{run}");
    let run = json(&ok(ferry_s3(root, "a", &["sync", "--json"], None)));
    assert_eq!(
        (run["pulled"].as_u64(), run["deleted_local"].as_u64()),
        (Some(0), Some(0)),
        "{run}"
    );
    let run = json(&ok(ferry_s3(root, "b", &["sync", "--json"], None)));
    assert_eq!(run["pulled"], keys.len(), "{run}");
    let mut want: Vec<&str> = keys.to_vec();
    want.sort();
    for b in ["a", "b"] {
        let listed = json(&ok(ferry_s3(root, b, &["ls", "--json"], None)));
        let got: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "replica {b}");
    }
    for k in keys {
        let out = ok(ferry_s3(root, "b", &["cat", k], None));
        assert_eq!(stdout(&out), k);
    }
}

/// `put --meta v=1`, sync, same bytes with `--meta v=2`, sync: the other
/// replica gets v=2 (the measured defect kept v=1 and said `synced`).
#[test]
fn metadata_only_change_syncs_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("s3://ferry-test/cli{:016x}", rand::random::<u64>());
    for b in ["a", "b"] {
        ok(ferry_s3(
            root,
            b,
            &["init", "--remote", &url, "--path-style"],
            None,
        ));
    }
    ok(ferry_s3(
        root,
        "a",
        &["put", "m.txt", "--meta", "v=1"],
        Some(b"same"),
    ));
    ok(ferry_s3(root, "a", &["sync"], None));
    ok(ferry_s3(root, "b", &["sync"], None));
    ok(ferry_s3(
        root,
        "a",
        &["put", "m.txt", "--meta", "v=2"],
        Some(b"same"),
    ));
    let st = json(&ok(ferry_s3(root, "a", &["stat", "m.txt", "--json"], None)));
    assert_eq!(st["state"], "dirty", "{st}");
    let run = json(&ok(ferry_s3(root, "a", &["sync", "--json"], None)));
    assert_eq!(run["pushed"], 1, "{run}");
    let run = json(&ok(ferry_s3(root, "b", &["sync", "--json"], None)));
    assert_eq!(run["pulled"], 1, "{run}");
    let st = json(&ok(ferry_s3(root, "b", &["stat", "m.txt", "--json"], None)));
    assert_eq!(st["metadata"]["v"], "2", "{st}");
    assert_eq!(st["state"], "synced", "{st}");
}

/// `--dry-run` prints the plan in words, and `--json` as objects.
#[test]
fn dry_run_plan_in_words_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "notes/x"], Some(b"x")));
    let out = stdout(&ok(ferry(root, "a", &["sync", "--dry-run"], None)));
    assert!(
        out.contains("  upload notes/x (new on the remote)"),
        "{out}"
    );
    assert!(!out.contains("Push {"), "{out}");
    let plan = json(&ok(ferry(
        root,
        "a",
        &["sync", "--dry-run", "--json"],
        None,
    )));
    assert_eq!(plan["planned"][0]["action"], "upload", "{plan}");
    assert_eq!(plan["planned"][0]["key"], "notes/x", "{plan}");
}

/// An endpoint that accepts connections and never answers: `init` ends
/// with a clear error naming the endpoint after the no-progress time limit
/// (here 1 s from `ferry.toml`), creates nothing, never hangs.
#[test]
fn silent_endpoint_at_init_times_out_with_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(
        root.join("a/ferry.toml"),
        "[sync]\nio_timeout_secs = 1\nconnect_timeout_secs = 1\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let endpoint = format!("http://{addr}");
    let out = ferry(
        root,
        "a",
        &[
            "init",
            "--remote",
            "s3://b/p",
            "--endpoint",
            &endpoint,
            "--path-style",
        ],
        None,
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&addr.to_string()), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not answer in time"),
        "{}",
        stderr(&out)
    );
    assert!(!root.join("a/index.db").exists(), "nothing created");
}

/// A remote with objects and no key file may be an encrypted remote whose
/// key file someone deleted: `init --remote` does not join it in the clear
/// unasked (exit 1, nothing created, the hint names --plaintext); with
/// --plaintext it does. `remote set` asks the same.
#[test]
fn joining_a_remote_with_objects_and_no_key_file_needs_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Foreign data: objects written by another tool, no ferry record.
    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("k"), "v").unwrap();
    let url = format!("file://{}", foreign.display());

    let out = ferry(root, "b", &["init", "--remote", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--plaintext"), "{}", stderr(&out));
    assert!(!root.join("b").exists());
    ok(ferry(
        root,
        "b",
        &["init", "--plaintext", "--remote", &url],
        None,
    ));
    ok(ferry(root, "b", &["sync"], None));
    assert_eq!(stdout(&ok(ferry(root, "b", &["cat", "k"], None))), "v");

    ok(ferry(root, "c", &["init"], None));
    let out = ferry(root, "c", &["remote", "set", &url], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--plaintext"), "{}", stderr(&out));
    ok(ferry(
        root,
        "c",
        &["remote", "set", &url, "--plaintext"],
        None,
    ));
    // The same remote again (respelled) needs no second confirmation.
    let respelled = format!("{url}/./");
    ok(ferry(root, "c", &["remote", "set", &respelled], None));
}

/// Issue 24, 1: a remote that a plaintext ferry bucket pushed to records
/// its mode (`.ferry/plaintext.json`), and a second device joins it without
/// `--plaintext`, by `init` and by `remote set`.
#[test]
fn joining_your_own_plaintext_remote_needs_no_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let remote = root.join("remote");
    let url = format!("file://{}", remote.display());
    ok(ferry(root, "laptop", &["init", "--remote", &url], None));
    ok(ferry(root, "laptop", &["put", "notes/k.txt"], Some(b"v")));
    ok(ferry(root, "laptop", &["push"], None));
    assert!(remote.join(".ferry/plaintext.json").exists());

    ok(ferry(root, "desktop", &["init", "--remote", &url], None));
    ok(ferry(root, "desktop", &["sync"], None));
    assert_eq!(
        stdout(&ok(ferry(root, "desktop", &["cat", "notes/k.txt"], None))),
        "v"
    );
    ok(ferry(root, "third", &["init"], None));
    ok(ferry(root, "third", &["remote", "set", &url], None));
}

/// `ls -l` says where each object's content is and whether it is pinned.
#[test]
fn ls_long_shows_where_content_is_and_pins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "kept"], Some(b"v")));
    ok(ferry(root, "a", &["put", "gone"], Some(b"w")));
    ok(ferry(root, "a", &["put", "new"], Some(b"n")));
    ok(ferry(root, "a", &["pin", "kept"], None));
    ok(ferry(root, "a", &["sync"], None));
    ok(ferry(root, "a", &["rm", "new"], None));
    ok(ferry(root, "a", &["put", "new"], Some(b"n2")));
    ok(ferry(root, "a", &["cache", "evict", "1MiB"], None));
    let listing = stdout(&ok(ferry(root, "a", &["ls", "-l"], None)));
    let line = |key: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!("  {key}")))
            .unwrap_or_else(|| panic!("no {key} in {listing}"))
            .to_owned()
    };
    assert!(line("kept").contains(" local+pinned "), "{listing}");
    assert!(line("gone").contains(" remote "), "{listing}");
    assert!(line("new").contains(" local "), "{listing}");
}

/// `pin -r FOLDER` pins every object under the folder (not `photos2/`),
/// `unpin -r` undoes it; a folder with nothing under it is an error.
#[test]
fn pin_and_unpin_take_folders_with_recursive() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    ok(ferry(root, "a", &["init"], None));
    for key in ["photos/a.jpg", "photos/b/c.jpg", "photos2/d.jpg"] {
        ok(ferry(root, "a", &["put", key], Some(b"x")));
    }
    let plain = ferry(root, "a", &["pin", "photos"], None);
    assert_eq!(plain.status.code(), Some(1), "a folder is not a key");
    ok(ferry(root, "a", &["pin", "-r", "photos"], None));
    let listing = stdout(&ok(ferry(root, "a", &["ls", "-l"], None)));
    let pinned: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("+pinned"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(pinned, ["photos/a.jpg", "photos/b/c.jpg"], "{listing}");
    ok(ferry(root, "a", &["unpin", "-r", "photos/b/"], None));
    let listing = stdout(&ok(ferry(root, "a", &["ls", "-l"], None)));
    assert_eq!(listing.matches("+pinned").count(), 1, "{listing}");
    let none = ferry(root, "a", &["pin", "-r", "nothing"], None);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("no objects under \"nothing/\""),
        "{}",
        stderr(&none)
    );
}

/// `-v` logs each remote request with its timing on stderr, `-vv` also the
/// planner's decisions, RUST_LOG overrides both; without them, no log.
#[test]
fn verbose_flags_and_rust_log_log_requests_and_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "k1"], Some(b"1")));
    let quiet = stderr(&ok(ferry(root, "a", &["sync"], None)));
    assert!(!quiet.contains("request="), "{quiet}");
    ok(ferry(root, "a", &["put", "k2"], Some(b"2")));
    let v = stderr(&ok(ferry(root, "a", &["-v", "sync"], None)));
    assert!(v.contains("request=\"put\" key=\"k2\""), "{v}");
    assert!(v.contains(" ms="), "{v}");
    assert!(!v.contains("planned"), "{v}");
    assert!(
        !v.contains("\u{1b}["),
        "no colours when stderr is not a terminal"
    );
    ok(ferry(root, "a", &["put", "k3"], Some(b"3")));
    let vv = stderr(&ok(ferry(root, "a", &["-vv", "sync"], None)));
    assert!(vv.contains("planned key=\"k3\""), "{vv}");
    ok(ferry(root, "a", &["put", "k4"], Some(b"4")));
    let out = Command::new(FERRY)
        .current_dir(root)
        .env("RUST_LOG", "ferry=trace")
        .arg("--bucket")
        .arg(root.join("a"))
        .arg("sync")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("planned key=\"k4\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn diff_shows_what_differs_both_ways_and_exits_1_until_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "b", &["init", "--remote", &url], None));
    for key in ["d/x", "d/y", "d/z", "d/c", "e/w"] {
        ok(ferry(root, "a", &["put", key], Some(key.as_bytes())));
    }
    ok(ferry(root, "a", &["sync"], None));
    ok(ferry(root, "b", &["sync"], None));
    let o = ok(ferry(root, "a", &["diff"], None));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no differences"), "{}", stderr(&o));

    // The other replica changes z and c, adds m, deletes w; this one
    // changes x and c, deletes y, adds n.
    ok(ferry(root, "b", &["put", "d/z"], Some(b"z2")));
    ok(ferry(root, "b", &["put", "d/c"], Some(b"c-b")));
    ok(ferry(root, "b", &["put", "d/m"], Some(b"m")));
    ok(ferry(root, "b", &["rm", "e/w"], None));
    ok(ferry(root, "b", &["sync"], None));
    ok(ferry(root, "a", &["put", "d/x"], Some(b"x2")));
    ok(ferry(root, "a", &["put", "d/c"], Some(b"c-a")));
    ok(ferry(root, "a", &["rm", "d/y"], None));
    ok(ferry(root, "a", &["put", "d/n"], Some(b"n")));
    // The conflict policy and direction do not hide differences.
    std::fs::write(
        root.join("a/ferry.toml"),
        "[sync]\nconflict = \"keep-local\"\ndirection = \"upload-only\"\n",
    )
    .unwrap();

    let o = ferry(root, "a", &["diff", "--json"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let found: Vec<(String, String)> = json(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("d/c", "conflict"),
        ("d/m", "new-there"),
        ("d/n", "new-here"),
        ("d/x", "changed-here"),
        ("d/y", "deleted-here"),
        ("d/z", "changed-there"),
        ("e/w", "deleted-there"),
    ];
    assert_eq!(
        found,
        expected.map(|(k, v)| (k.to_owned(), v.to_owned())),
        "{}",
        stdout(&o)
    );
    // In words, under a prefix (a folder prefix of keys, like `ls`).
    let o = ferry(root, "a", &["diff", "e/"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "deleted there  e/w\n");
    assert!(stderr(&o).contains("1 key differs"), "{}", stderr(&o));
    let o = ferry(root, "a", &["diff", "d/c"], None);
    assert_eq!(stdout(&o), "conflict  d/c  (changed on both sides)\n");
    // Nothing was changed by looking.
    assert_eq!(std::fs::read(root.join("remote/d/x")).unwrap(), b"d/x");
    assert_eq!(stdout(&ok(ferry(root, "a", &["cat", "d/z"], None))), "d/z");

    std::fs::remove_file(root.join("a/ferry.toml")).unwrap();
    std::fs::write(
        root.join("a/ferry.toml"),
        "[sync]\nconflict = \"keep-local\"\n",
    )
    .unwrap();
    ok(ferry(root, "a", &["sync"], None));
    let o = ok(ferry(root, "a", &["diff"], None));
    assert_eq!(stdout(&o), "");
}

/// Flips one byte in the middle of every blob file of `bucket`.
fn damage_blobs(bucket: &Path) -> usize {
    let mut n = 0;
    for dir in std::fs::read_dir(bucket.join("blobs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn check_repair_downloads_damaged_objects_again_and_names_what_it_cannot_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ok(ferry(root, "a", &["put", "big.bin"], Some(&big)));
    ok(ferry(root, "a", &["put", "small.txt"], Some(b"small")));
    ok(ferry(root, "a", &["sync"], None));
    let o = ok(ferry(root, "a", &["check", "--remote"], None));
    assert!(
        stdout(&o)
            .contains("remote: 2 verified by hash, 0 without a ferry hash, 0 mismatched, 0 differ"),
        "{}",
        stdout(&o)
    );

    assert_eq!(damage_blobs(&root.join("a")), 1);
    let o = ferry(root, "a", &["check"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("damaged: big.bin"), "{}", stdout(&o));
    assert!(stderr(&o).contains("check --repair"), "{}", stderr(&o));
    let o = ok(ferry(root, "a", &["check", "--repair"], None));
    assert!(
        stdout(&o).contains("repaired: big.bin (downloaded again from the remote)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(ok(ferry(root, "a", &["cat", "big.bin"], None)).stdout, big);
    ok(ferry(root, "a", &["check"], None));

    // A change that was never pushed has no other copy.
    let mut other = big.clone();
    other[0] ^= 1;
    ok(ferry(root, "a", &["put", "big.bin"], Some(&other)));
    damage_blobs(&root.join("a"));
    let o = ferry(root, "a", &["check", "--repair", "--json"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["repaired"], serde_json::json!([]));
    assert_eq!(v["damaged"][0]["key"], "big.bin");
    assert!(
        v["damaged"][0]["error"]
            .as_str()
            .unwrap()
            .contains("changed here and not pushed"),
        "{v}"
    );
    // Nothing damaged was pushed meanwhile: the remote keeps the good copy.
    assert_eq!(std::fs::read(root.join("remote/big.bin")).unwrap(), big);

    // The remote side: a change there shows as a difference.
    std::fs::write(root.join("remote/small.txt"), b"changed by another tool").unwrap();
    let o = ferry(root, "a", &["check", "--remote", "small.txt"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("differs: changed there small.txt"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn check_repair_rebuilds_a_damaged_index_and_sync_brings_the_rest_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    ok(ferry(root, "a", &["put", "synced/big.bin"], Some(&big)));
    for i in 0..300 {
        let key = format!("synced/small-{i:03}");
        ok(ferry(root, "a", &["put", &key], Some(key.as_bytes())));
    }
    ok(ferry(root, "a", &["sync"], None));
    // A change that was never pushed, in a blob file.
    let local: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
    ok(ferry(root, "a", &["put", "unpushed.bin"], Some(&local)));

    // The root page of the objects table is overwritten.
    let index = root.join("a").join(ferry::INDEX_FILE);
    let (root_page, page_size): (i64, i64) = {
        let c = rusqlite::Connection::open(&index).unwrap();
        (
            c.query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'objects'",
                [],
                |r| r.get(0),
            )
            .unwrap(),
            c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap(),
        )
    };
    let mut bytes = std::fs::read(&index).unwrap();
    let at = ((root_page - 1) * page_size) as usize;
    bytes[at..at + page_size as usize].fill(0xff);
    std::fs::write(&index, &bytes).unwrap();
    let o = ferry(root, "a", &["ls"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("check --repair"), "{}", stderr(&o));

    let o = ferry(root, "a", &["check", "--repair"], None);
    let out = stdout(&o);
    assert!(out.contains("rebuilt the index"), "{out}\n{}", stderr(&o));
    assert!(!out.contains("remote setting was not recovered"), "{out}");
    assert!(out.contains("the damaged file is kept as"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(root.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.db.damaged-"))
        .collect();
    assert!(!kept.is_empty());
    // Whatever the rebuilt index lost of the synced objects, a sync
    // brings back from the remote; the unpushed content is either still
    // named or set aside, never deleted.
    ok(ferry(root, "a", &["sync"], None));
    let listed = stdout(&ok(ferry(root, "a", &["ls", "synced/"], None)));
    assert_eq!(listed.lines().count(), 301, "{listed}");
    assert_eq!(
        ok(ferry(root, "a", &["cat", "synced/big.bin"], None)).stdout,
        big
    );
    let named = ferry(root, "a", &["cat", "unpushed.bin"], None);
    let set_aside: Vec<Vec<u8>> = std::fs::read_dir(root.join("a/lost+found"))
        .map(|d| {
            d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        named.stdout == local || set_aside.contains(&local),
        "the unpushed content is neither named nor set aside: {out}"
    );
    ok(ferry(root, "a", &["check"], None));

    // An emptied index: nothing to read back, everything from the remote.
    std::fs::write(&index, b"").unwrap();
    let o = ferry(root, "a", &["check", "--repair"], None);
    assert!(
        stdout(&o).contains("rebuilt the index: 0 objects"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("`ferry remote set URL` attaches it again"),
        "{}",
        stdout(&o)
    );
    ok(ferry(
        root,
        "a",
        &["remote", "set", "--plaintext", &url],
        None,
    ));
    ok(ferry(root, "a", &["sync"], None));
    let listed = stdout(&ok(ferry(root, "a", &["ls", "synced/"], None)));
    assert_eq!(listed.lines().count(), 301);
}

/// Runs ferry against the fake-gcs-server the test command started, found
/// the way Google's tools find an emulator (`STORAGE_EMULATOR_HOST`).
fn ferry_gcs(root: &Path, bucket: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let endpoint = std::env::var("FERRY_TEST_GCS_ENDPOINT")
        .expect("FERRY_TEST_GCS_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let mut all = vec![("STORAGE_EMULATOR_HOST", endpoint.as_str())];
    all.extend_from_slice(env);
    ferry_in_env(root, bucket, &all, args, None)
}

/// `ferry init --remote gs://…` end to end: two devices sync exact keys
/// with metadata through a GCS server; `remote show` names it and what
/// its probe found; a missing service-account file is a clear error.
#[test]
fn gcs_remote_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("gs://ferry-test/cli{:016x}", rand::random::<u64>());
    for b in ["a", "b"] {
        ok(ferry_gcs(root, b, &["init", "--remote", &url], &[]));
    }
    let keys = ["notes ", "a//b", "dir/", "ü/€ #%+?.txt"];
    for k in keys {
        ok(ferry(
            root,
            "a",
            &["put", k, "--meta", "owner=ann"],
            Some(k.as_bytes()),
        ));
    }
    let run = json(&ok(ferry_gcs(root, "a", &["sync", "--json"], &[])));
    assert_eq!(run["pushed"], keys.len(), "{run}");
    let run = json(&ok(ferry_gcs(root, "b", &["sync", "--json"], &[])));
    assert_eq!(run["pulled"], keys.len(), "{run}");
    for k in keys {
        assert_eq!(stdout(&ok(ferry_gcs(root, "b", &["cat", k], &[]))), k);
        let stat = json(&ok(ferry_gcs(root, "b", &["stat", k, "--json"], &[])));
        assert_eq!(stat["metadata"]["owner"], "ann", "{stat}");
    }
    // What the probe measured on fake-gcs-server: generation preconditions
    // on uploads, none on deletes.
    let shown = stdout(&ok(ferry_gcs(root, "a", &["remote", "show"], &[])));
    assert!(shown.contains(&url), "{shown}");
    assert!(shown.contains("(from the environment)"), "{shown}");
    assert!(
        shown.contains("conditional writes:  enforced by the store"),
        "{shown}"
    );
    assert!(
        shown.contains("conditional deletes: not enforced"),
        "{shown}"
    );

    // A bucket that does not exist: a clear error naming it, nothing made.
    let out = ferry_gcs(
        root,
        "nb",
        &["init", "--remote", "gs://no-such-bucket/x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("does the bucket \"no-such-bucket\" exist")
            && err.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{err}"
    );
    assert!(!root.join("nb").exists());

    let out = ferry_gcs(
        root,
        "a",
        &["sync"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/key.json") && err.contains("service-account"),
        "{err}"
    );
}

/// `ferry init --remote az://…` end to end on Azurite, with the credentials
/// in `AZURE_STORAGE_CONNECTION_STRING` as Azure's tools take them: two
/// devices sync exact keys and metadata; a key with `\` is refused by name.
#[test]
fn azure_remote_end_to_end() {
    let endpoint = std::env::var("FERRY_TEST_AZURE_ENDPOINT")
        .expect("FERRY_TEST_AZURE_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
         AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
         BlobEndpoint={endpoint};"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run = |bucket: &str, args: &[&str], stdin: &[u8]| {
        let env = [("AZURE_STORAGE_CONNECTION_STRING", conn.as_str())];
        ferry_in_env(root, bucket, &env, args, Some(stdin))
    };
    // The container must exist, as an S3 bucket must (ferry does not make
    // it): `./scripts/test.sh` makes `ferry-test`.
    let url = format!(
        "az://devstoreaccount1/ferry-test/cli{:016x}",
        rand::random::<u64>()
    );
    for b in ["a", "b"] {
        ok(run(b, &["init", "--remote", &url], b""));
    }
    let keys = ["notes ", "a//b", "dir/", "ü/€ #%+?.txt"];
    for k in keys {
        ok(run("a", &["put", k, "--meta", "owner=ann"], k.as_bytes()));
    }
    let out = ok(run("a", &["put", "back\\slash"], b"x"));
    assert!(
        stderr(&out).contains("cannot hold the key \"back\\\\slash\""),
        "{}",
        stderr(&out)
    );
    ok(run("a", &["rm", "back\\slash"], b""));
    let report = json(&ok(run("a", &["sync", "--json"], b"")));
    assert_eq!(report["pushed"], keys.len(), "{report}");
    let report = json(&ok(run("b", &["sync", "--json"], b"")));
    assert_eq!(report["pulled"], keys.len(), "{report}");
    for k in keys {
        assert_eq!(stdout(&ok(run("b", &["cat", k], b""))), k);
        let stat = json(&ok(run("b", &["stat", k, "--json"], b"")));
        assert_eq!(stat["metadata"]["owner"], "ann", "{stat}");
    }
    // A container that does not exist, and a wrong key: clear errors.
    let out = run(
        "nc",
        &[
            "init",
            "--remote",
            "az://devstoreaccount1/no-such-container",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ContainerNotFound") && err.contains("the container must exist"),
        "{err}"
    );
    assert!(!root.join("nc").exists());
    // Azurite enforces both kinds of precondition, as the probe found.
    let shown = json(&ok(run("a", &["remote", "show", "--json"], b"")));
    assert_eq!(shown["probe"]["conditional_put"], true, "{shown}");
    assert_eq!(shown["probe"]["conditional_delete"], true, "{shown}");
    assert_eq!(shown["effective_endpoint"], endpoint.as_str(), "{shown}");
}

/// `ferry init --remote webdav://…` end to end on WsgiDAV, with the
/// credentials in `FERRY_WEBDAV_USER` / `FERRY_WEBDAV_PASSWORD`: two devices
/// sync exact keys (checked as files on the server's disk) and metadata;
/// keys a path cannot hold are refused by name; a wrong password is a clear
/// error that creates nothing.
#[test]
fn webdav_remote_end_to_end() {
    let endpoint = std::env::var("FERRY_TEST_WEBDAV_ENDPOINT")
        .expect("FERRY_TEST_WEBDAV_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let served = std::path::PathBuf::from(
        std::env::var("FERRY_TEST_WEBDAV_ROOT")
            .expect("FERRY_TEST_WEBDAV_ROOT is not set: run the suite with ./scripts/test.sh"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let run_as = |password: &str, bucket: &str, args: &[&str], stdin: &[u8]| {
        let env = [
            ("FERRY_WEBDAV_USER", "ferry"),
            ("FERRY_WEBDAV_PASSWORD", password),
        ];
        ferry_in_env(root, bucket, &env, args, Some(stdin))
    };
    let run = |bucket: &str, args: &[&str], stdin: &[u8]| run_as("secret", bucket, args, stdin);
    let path = format!("cli{:016x}/ferry", rand::random::<u64>());
    let url = format!("webdav://{}/{path}", endpoint.trim_start_matches("http://"));
    // The first init makes the remote folder and says so; the second finds it.
    let made = stderr(&ok(run("a", &["init", "--remote", &url], b"")));
    assert!(made.contains("Created the folder"), "{made}");
    assert!(served.join(&path).is_dir());
    let found = stderr(&ok(run("b", &["init", "--remote", &url], b"")));
    assert!(!found.contains("Created the folder"), "{found}");
    let keys = ["notes ", "back\\slash", "ü/€ #%+&=.txt", " lead/x"];
    for k in keys {
        ok(run("a", &["put", k, "--meta", "owner=ann"], k.as_bytes()));
    }
    for k in ["a//b", "dir/", "what?", "semi;colon"] {
        let out = ok(run("a", &["put", k], b"x"));
        assert!(
            stderr(&out).contains(&format!("cannot hold the key {k:?}")),
            "{}",
            stderr(&out)
        );
        ok(run("a", &["rm", k], b""));
    }
    let report = json(&ok(run("a", &["sync", "--json"], b"")));
    assert_eq!(report["pushed"], keys.len(), "{report}");
    // On the server's disk, each key is the file path, byte for byte.
    for k in keys {
        let file = served.join(&path).join(k);
        assert_eq!(std::fs::read(&file).unwrap(), k.as_bytes(), "{file:?}");
    }
    let report = json(&ok(run("b", &["sync", "--json"], b"")));
    assert_eq!(report["pulled"], keys.len(), "{report}");
    for k in keys {
        assert_eq!(stdout(&ok(run("b", &["cat", k], b""))), k);
        let stat = json(&ok(run("b", &["stat", k, "--json"], b"")));
        assert_eq!(stat["metadata"]["owner"], "ann", "{stat}");
    }
    // A wrong password: a clear error, and no bucket.
    let out = run_as("wrong", "w", &["init", "--remote", &url], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("FERRY_WEBDAV_PASSWORD"),
        "{err}"
    );
    assert!(!root.join("w").exists());
    // What the probe found: creates by `Overwrite: F`, replaces and
    // deletes by a check just before (see docs/design.md).
    let shown = json(&ok(run("a", &["remote", "show", "--json"], b"")));
    assert_eq!(shown["probe"]["conditional_put"], true, "{shown}");
    assert_eq!(shown["probe"]["conditional_delete"], true, "{shown}");
    assert_eq!(shown["probe"]["metadata_place"], "dead-property", "{shown}");
    // The remote folder gone (an unmounted share): the sync fails, names
    // the folder, and does not make it again.
    std::fs::remove_dir_all(served.join(&path)).unwrap();
    ok(run("a", &["put", "later", "-"], b"x"));
    let out = run("a", &["sync"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not on the server"), "{err}");
    assert!(!served.join(&path).exists());
}

/// `ferry init --remote webdav://…` on nginx with its DAV modules (no dead
/// properties): init makes the folder and says so, the probe picks
/// sidecars and `remote show` says so, and a second device pulls an object
/// with its metadata.
#[test]
fn webdav_remote_on_nginx_keeps_sidecars() {
    let endpoint = std::env::var("FERRY_TEST_NGINX_ENDPOINT")
        .expect("FERRY_TEST_NGINX_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let env = [
        ("FERRY_WEBDAV_USER", "ferry"),
        ("FERRY_WEBDAV_PASSWORD", "secret"),
    ];
    let run = |bucket: &str, args: &[&str], stdin: &[u8]| {
        ferry_in_env(root, bucket, &env, args, Some(stdin))
    };
    let path = format!("cli{:016x}/p1", rand::random::<u64>());
    let url = format!("webdav://{}/{path}", endpoint.trim_start_matches("http://"));
    let made = stderr(&ok(run("a", &["init", "--remote", &url], b"")));
    assert!(made.contains("Created the folder"), "{made}");
    ok(run(
        "a",
        &["put", "notes/a.txt", "--meta", "owner=ann"],
        b"hello",
    ));
    let report = json(&ok(run("a", &["sync", "--json"], b"")));
    assert_eq!(report["pushed"], 1, "{report}");
    // What the probe (at the first sync) chose.
    let shown = json(&ok(run("a", &["remote", "show", "--json"], b"")));
    assert_eq!(shown["probe"]["metadata_place"], "sidecar", "{shown}");
    let text = stdout(&ok(run("a", &["remote", "show"], b"")));
    assert!(text.contains("sidecar"), "{text}");
    ok(run("b", &["init", "--remote", &url], b""));
    let report = json(&ok(run("b", &["sync", "--json"], b"")));
    assert_eq!(report["pulled"], 1, "{report}");
    assert_eq!(stdout(&ok(run("b", &["cat", "notes/a.txt"], b""))), "hello");
    let stat = json(&ok(run("b", &["stat", "notes/a.txt", "--json"], b"")));
    assert_eq!(stat["metadata"]["owner"], "ann", "{stat}");
}

/// A TCP relay to `target` that can be frozen: from then on it forwards
/// nothing and answers nothing, and keeps every connection open (what a
/// SIGSTOPped server looks like to a client).
struct Relay {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn relay(target: &str) -> Relay {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    fn hold() -> ! {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let flag = flag.clone();
            let target = target.clone();
            std::thread::spawn(move || {
                if flag.load(Ordering::SeqCst) {
                    let _held = client;
                    hold();
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    return;
                };
                let pipe = move |mut from: std::net::TcpStream,
                                 mut to: std::net::TcpStream,
                                 flag: Arc<AtomicBool>| {
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => n,
                        };
                        if flag.load(Ordering::SeqCst) {
                            let _held = (from, to);
                            hold();
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let f2 = flag.clone();
                std::thread::spawn(move || pipe(s2, c2, f2));
                pipe(client, server, flag);
            });
        }
    });
    Relay { addr, frozen }
}

/// Issue 24, 7.2: with the S3 server frozen (no answer, connections kept
/// open), `cat` of an evicted object and `sync` each give up within about
/// the no-progress time limit plus a short retry budget (they took the
/// limit times every retry: 420 s at the default 60 s), and say so.
#[test]
fn frozen_s3_server_fails_within_the_time_limit() {
    let moto = std::env::var("FERRY_TEST_MOTO_ENDPOINT")
        .expect("FERRY_TEST_MOTO_ENDPOINT is not set: run the suite with ./scripts/test.sh");
    let relay = relay(&moto);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("a")).unwrap();
    let limit = 3u64;
    std::fs::write(
        root.join("a/ferry.toml"),
        format!("[sync]\nio_timeout_secs = {limit}\nconnect_timeout_secs = 2\n"),
    )
    .unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", "ferrytest"),
        ("AWS_SECRET_ACCESS_KEY", "ferrytestsecret"),
    ];
    let endpoint = format!("http://{}", relay.addr);
    let url = format!("s3://ferry-test/frozen{:016x}", rand::random::<u64>());
    let run = |args: &[&str], stdin: Option<&[u8]>| ferry_in_env(root, "a", &env, args, stdin);
    ok(run(
        &[
            "init",
            "--remote",
            &url,
            "--endpoint",
            &endpoint,
            "--path-style",
        ],
        None,
    ));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ok(run(&["put", "big.bin"], Some(&big)));
    for i in 0..20 {
        ok(run(&["put", &format!("k/{i}")], Some(b"x")));
    }
    ok(run(&["sync"], None));
    ok(run(&["cache", "evict", "2MiB"], None));
    for i in 20..40 {
        ok(run(&["put", &format!("k/{i}")], Some(b"x")));
    }
    relay
        .frozen
        .store(true, std::sync::atomic::Ordering::SeqCst);

    // One time limit for the attach's mode check, one for the request,
    // and the retry budget (10 s): before, 6 attempts of the limit each.
    let most = std::time::Duration::from_secs(2 * limit + 10);
    let started = std::time::Instant::now();
    let out = run(&["cat", "big.bin"], None);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < most, "cat took {took:?}: {}", stderr(&out));
    eprintln!("cat of an evicted object, server frozen: {took:?}");
    assert!(
        stderr(&out).contains("did not answer in time"),
        "{}",
        stderr(&out)
    );

    let started = std::time::Instant::now();
    let out = run(&["sync"], None);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    eprintln!("sync, server frozen: {took:?}");
    assert!(took < most, "sync took {took:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.lines().filter(|l| l.starts_with("error")).count() == 1,
        "{err}"
    );
    assert!(
        err.contains("did not answer in time") || err.contains("stopped answering"),
        "{err}"
    );
}

/// Issue 24, 2: a file another tool writes into the remote shows up at the
/// next `ferry sync` when the remote is cheap to list (the journal does not
/// name it; it took `--full` or the hourly listing); `status` says when the
/// last full listing ran. `cheap_listing_pages = 0` keeps the old rule.
#[test]
fn foreign_write_shows_up_at_the_next_sync_where_listing_is_cheap() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let remote = root.join("remote");
    let url = format!("file://{}", remote.display());
    ok(ferry(root, "a", &["init", "--remote", &url], None));
    ok(ferry(root, "a", &["put", "mine.txt"], Some(b"mine")));
    ok(ferry(root, "a", &["sync"], None));
    let st = stdout(&ok(ferry(root, "a", &["status"], None)));
    assert!(st.contains("full listing:"), "{st}");
    assert!(!st.contains("full listing:   never"), "{st}");
    let st = json(&ok(ferry(root, "a", &["status", "--json"], None)));
    assert!(st["last_full_listing"].is_string(), "{st}");

    std::fs::write(remote.join("theirs.txt"), "written by another tool").unwrap();
    let run = json(&ok(ferry(root, "a", &["sync", "--json"], None)));
    assert_eq!(run["pulled"], 1, "{run}");
    assert_eq!(run["full"], true, "{run}");
    assert_eq!(
        stdout(&ok(ferry(root, "a", &["cat", "theirs.txt"], None))),
        "written by another tool"
    );

    // The threshold is a setting: 0 keeps the journal between full listings.
    ok(ferry(root, "b", &["init", "--remote", &url], None));
    std::fs::write(
        root.join("b/ferry.toml"),
        "[sync]\ncheap_listing_pages = 0\n",
    )
    .unwrap();
    ok(ferry(root, "b", &["sync"], None));
    std::fs::write(remote.join("later.txt"), "later").unwrap();
    let run = json(&ok(ferry(root, "b", &["sync", "--json"], None)));
    assert_eq!(
        (run["pulled"].as_u64(), run["full"].as_bool()),
        (Some(0), Some(false)),
        "{run}"
    );
    let run = json(&ok(ferry(root, "b", &["sync", "--full", "--json"], None)));
    assert_eq!(run["pulled"], 1, "{run}");
}
