//! Encrypted buckets through the real binary: init --encrypt, a second
//! device joining, passphrase sources, passwd, mode mismatch.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{ok, stderr, stdout, FERRY};

/// Runs ferry on bucket `root/<bucket>`; `pass` sets FERRY_PASSPHRASE.
fn ferry(root: &Path, bucket: &str, pass: Option<&str>, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(FERRY);
    cmd.current_dir(root)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_PASSPHRASE")
        .env_remove("FERRY_NEW_PASSPHRASE")
        .arg("--bucket")
        .arg(root.join(bucket))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pass {
        cmd.env("FERRY_PASSPHRASE", p);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn fails(o: Output) -> String {
    assert!(!o.status.success(), "should fail: {}", stdout(&o));
    stderr(&o)
}

/// A cheap KDF for tests; the default is 64 MiB / 3 passes.
const KDF: [&str; 4] = ["--kdf-memory", "19", "--kdf-passes", "2"];

#[test]
fn encrypted_buckets_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    let pass = Some("s3cret words");

    // init --encrypt without any passphrase source (no terminal) is refused.
    let err = fails(ferry(
        root,
        "a",
        None,
        &["init", "--encrypt", "--remote", &url],
        b"",
    ));
    assert!(err.contains("passphrase"), "{err}");
    assert!(!root.join("a").exists());

    let mut init = vec!["init", "--encrypt", "--remote", &url];
    init.extend(KDF);
    let out = ok(ferry(root, "a", pass, &init, b""));
    assert!(stdout(&out).contains("encrypted"), "{}", stdout(&out));
    ok(ferry(
        root,
        "a",
        pass,
        &["put", "docs/plan.txt", "--meta", "who=ann"],
        b"the plan",
    ));
    ok(ferry(root, "a", pass, &["sync"], b""));

    // Without the passphrase: listing and status work, content does not.
    let ls = ok(ferry(root, "a", None, &["ls"], b""));
    assert!(stdout(&ls).contains("docs/plan.txt"));
    let status = ok(ferry(root, "a", None, &["status", "--json"], b""));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["locked"], true);
    let err = fails(ferry(root, "a", None, &["cat", "docs/plan.txt"], b""));
    assert!(
        err.contains("encrypted") && err.contains("FERRY_PASSPHRASE"),
        "{err}"
    );
    let err = fails(ferry(
        root,
        "a",
        Some("wrong"),
        &["cat", "docs/plan.txt"],
        b"",
    ));
    assert!(err.contains("wrong passphrase"), "{err}");

    // --passphrase-file works too.
    std::fs::write(root.join("pass.txt"), "s3cret words\n").unwrap();
    let pf = root.join("pass.txt");
    let pf = pf.to_str().unwrap();
    let cat = ok(ferry(
        root,
        "a",
        None,
        &["--passphrase-file", pf, "cat", "docs/plan.txt"],
        b"",
    ));
    assert_eq!(cat.stdout, b"the plan");

    // A second device: init --remote detects the encryption.
    let err = fails(ferry(
        root,
        "b",
        Some("wrong"),
        &["init", "--remote", &url],
        b"",
    ));
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        !root.join("b").exists(),
        "a wrong passphrase creates nothing"
    );
    let out = ok(ferry(root, "b", pass, &["init", "--remote", &url], b""));
    assert!(stderr(&out).contains("encrypted"), "{}", stderr(&out));
    ok(ferry(root, "b", pass, &["sync"], b""));
    let stat = ok(ferry(
        root,
        "b",
        pass,
        &["stat", "docs/plan.txt", "--json"],
        b"",
    ));
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["metadata"]["who"], "ann");
    let cat = ok(ferry(root, "b", pass, &["cat", "docs/plan.txt"], b""));
    assert_eq!(cat.stdout, b"the plan");

    // passwd re-wraps the key; the old passphrase stops working.
    let mut passwd = vec!["passwd"];
    passwd.extend(KDF);
    let mut cmd_env = ferry_env(root, "a", &passwd, pass, Some("new words"));
    ok(cmd_env.output().unwrap());
    let err = fails(ferry(root, "a", pass, &["cat", "docs/plan.txt"], b""));
    assert!(err.contains("wrong passphrase"), "{err}");
    ok(ferry(
        root,
        "a",
        Some("new words"),
        &["cat", "docs/plan.txt"],
        b"",
    ));
    // Device b still holds the key under the old passphrase; commands that
    // stay local do not know the new one, and say how to learn it.
    let err = fails(ferry(
        root,
        "b",
        Some("new words"),
        &["cat", "docs/plan.txt"],
        b"",
    ));
    assert!(err.contains("ferry sync"), "{err}");
    // `ferry sync` reaches the remote and learns it; the old one is retired.
    ok(ferry(root, "b", Some("new words"), &["sync"], b""));
    ok(ferry(
        root,
        "b",
        Some("new words"),
        &["cat", "docs/plan.txt"],
        b"",
    ));
    let err = fails(ferry(root, "b", pass, &["cat", "docs/plan.txt"], b""));
    assert!(err.contains("wrong passphrase"), "{err}");
    // A third device joins with the new one.
    ok(ferry(
        root,
        "c",
        Some("new words"),
        &["init", "--remote", &url],
        b"",
    ));

    // Mode mismatch: a plaintext bucket pointed at the encrypted remote.
    ok(ferry(root, "p", None, &["init"], b""));
    let err = fails(ferry(root, "p", None, &["remote", "set", &url], b""));
    assert!(err.contains("is encrypted"), "{err}");
    // And --encrypt against a plaintext remote.
    let plain_url = format!("file://{}", root.join("plain-remote").display());
    ok(ferry(
        root,
        "q",
        None,
        &["init", "--remote", &plain_url],
        b"",
    ));
    ok(ferry(root, "q", None, &["put", "x"], b"plain"));
    ok(ferry(root, "q", None, &["sync"], b""));
    let mut init = vec!["init", "--encrypt", "--remote", &plain_url];
    init.extend(KDF);
    let err = fails(ferry(root, "r", pass, &init, b""));
    assert!(err.contains("is plaintext"), "{err}");
    assert!(!root.join("r").exists());
}

/// Issue 22, finding 15: an object file removed from an encrypted remote
/// by hand is pushed again by `ferry sync --full`, which names it, and
/// `ferry status` counts it until a sync finds nothing missing.
#[test]
fn status_counts_what_the_last_sync_found_missing_on_the_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let remote = root.join("remote");
    let url = format!("file://{}", remote.display());
    let pass = Some("s3cret words");
    let mut init = vec!["init", "--encrypt", "--remote", &url];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(root, "a", pass, &["put", "doc"], b"keep me"));
    ok(ferry(root, "a", pass, &["sync"], b""));
    // The object's file, removed as a person with the storage credentials
    // would (the one file there before `other` is pushed).
    let objects: Vec<_> = std::fs::read_dir(&remote)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != ".ferry"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    // A second object: a listing with nothing in it would stop the run
    // (the empty-listing rail) before any plan.
    ok(ferry(root, "a", pass, &["put", "other"], b"untouched"));
    ok(ferry(root, "a", pass, &["sync"], b""));
    ok(ferry(root, "b", pass, &["init", "--remote", &url], b""));
    ok(ferry(root, "b", pass, &["sync"], b""));
    std::fs::remove_file(&objects[0]).unwrap();

    let out = ferry(root, "b", pass, &["sync", "--full", "--json"], b"");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["missing_on_remote"],
        serde_json::json!(["doc"]),
        "{report}"
    );
    assert_eq!(report["pushed"], 1, "{report}");
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "not a failure: {report}"
    );
    // In text, a warning names it and the command succeeds.
    std::fs::remove_file(&objects[0]).unwrap();
    let out = ok(ferry(root, "b", pass, &["sync", "--full"], b""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: doc: missing on the remote") && err.contains("pushed again"),
        "{err}"
    );
    assert!(objects[0].exists(), "pushed again under its sealed name");
    let text = stdout(&ok(ferry(root, "b", pass, &["status"], b"")));
    assert!(
        text.contains("missing on remote (pushed again): 1"),
        "{text}"
    );
    let status = ok(ferry(root, "b", pass, &["status", "--json"], b""));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["missing_on_remote"], 1, "{v}");
    let verbose = stdout(&ok(ferry(root, "b", pass, &["-v", "status"], b"")));
    assert!(verbose.contains("    doc\n"), "{verbose}");

    // Nothing missing at the next sync: the line goes.
    ok(ferry(root, "b", pass, &["sync", "--full"], b""));
    let text = stdout(&ok(ferry(root, "b", pass, &["status"], b"")));
    assert!(!text.contains("missing on remote"), "{text}");
    let status = ok(ferry(root, "b", pass, &["status", "--json"], b""));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["missing_on_remote"], 0, "{v}");
}

fn ferry_env(
    root: &Path,
    bucket: &str,
    args: &[&str],
    pass: Option<&str>,
    new: Option<&str>,
) -> Command {
    let mut cmd = Command::new(FERRY);
    cmd.current_dir(root)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_PASSPHRASE")
        .env_remove("FERRY_NEW_PASSPHRASE")
        .arg("--bucket")
        .arg(root.join(bucket))
        .args(args)
        .stdin(Stdio::null());
    if let Some(p) = pass {
        cmd.env("FERRY_PASSPHRASE", p);
    }
    if let Some(n) = new {
        cmd.env("FERRY_NEW_PASSPHRASE", n);
    }
    cmd
}

/// A cost the bucket could never be unlocked with (above the ceiling a
/// phone can meet, or below the floor) is a usage error before any prompt
/// or write: `init` creates nothing, `passwd` leaves the old passphrase.
#[test]
fn kdf_costs_out_of_range_are_refused_before_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pass = Some("s3cret words");
    for cost in [
        ["--kdf-passes", "100"],
        ["--kdf-memory", "4096"],
        ["--kdf-memory", "1"],
        ["--kdf-passes", "1"],
    ] {
        let mut init = vec!["init", "--encrypt"];
        init.extend(cost);
        let out = ferry(root, "a", pass, &init, b"");
        assert_eq!(out.status.code(), Some(2), "{cost:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--kdf-"), "{}", stderr(&out));
        assert!(!root.join("a").exists(), "{cost:?} created a bucket");
    }
    let mut init = vec!["init", "--encrypt"];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(root, "a", pass, &["put", "k"], b"v"));
    let out = Command::new(FERRY)
        .args(["--bucket"])
        .arg(root.join("a"))
        .args(["passwd", "--kdf-passes", "100"])
        .env("FERRY_PASSPHRASE", "s3cret words")
        .env("FERRY_NEW_PASSPHRASE", "other words")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = ok(ferry(root, "a", pass, &["cat", "k"], b""));
    assert_eq!(stdout(&out), "v");
}

#[test]
fn passphrase_command_is_asked_and_the_environment_variable_is_gone_for_children() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut init = vec!["init", "--encrypt"];
    init.extend(KDF);
    ok(ferry(root, "b", Some("from env"), &init, b""));
    ok(ferry(
        root,
        "b",
        Some("from env"),
        &["put", "k"],
        b"secret data",
    ));

    // A password manager's command; the variable it could have read is
    // already out of the environment when it runs.
    let seen = root.join("seen.txt");
    let cmd = format!(
        "printf '%s' \"${{FERRY_PASSPHRASE:-absent}}\" > '{}'; echo 'from env'",
        seen.display()
    );
    let o = ok(ferry(
        root,
        "b",
        Some("wrong"),
        &["--passphrase-command", &cmd, "cat", "k"],
        b"",
    ));
    assert_eq!(o.stdout, b"secret data");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "absent");
    // The command's first line only.
    let o = ok(ferry(
        root,
        "b",
        None,
        &[
            "--passphrase-command",
            "printf 'from env\\nsecond line\\n'",
            "cat",
            "k",
        ],
        b"",
    ));
    assert_eq!(o.stdout, b"secret data");
    // A failing command is named, and nothing is read.
    let err = fails(ferry(
        root,
        "b",
        Some("from env"),
        &["--passphrase-command", "exit 3", "cat", "k"],
        b"",
    ));
    assert!(
        err.contains("the passphrase command `exit 3` failed"),
        "{err}"
    );
    // A wrong passphrase from a command is the usual error.
    let err = fails(ferry(
        root,
        "b",
        None,
        &["--passphrase-command", "echo nope", "cat", "k"],
        b"",
    ));
    assert!(err.contains("wrong passphrase"), "{err}");
}

/// `ferry rekey`: asks for confirmation (refused without a terminal unless
/// --yes), takes a new passphrase (refusing the current one), re-seals and
/// re-pushes every object under a new key epoch wrapped under it; the
/// device still on the old key is told to rejoin, and `ferry rejoin` with
/// the new passphrase carries its unpushed object over.
#[test]
fn rekey_re_seals_everything_and_other_devices_rejoin_with_their_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    let pass = Some("s3cret words");
    let mut init = vec!["init", "--encrypt", "--remote", &url];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(
        root,
        "a",
        pass,
        &["put", "notes/a.txt", "--meta", "who=ann"],
        b"alpha",
    ));
    ok(ferry(root, "a", pass, &["put", "notes/b.txt"], b"beta"));
    ok(ferry(root, "a", pass, &["sync"], b""));
    ok(ferry(root, "b", pass, &["init", "--remote", &url], b""));
    ok(ferry(root, "b", pass, &["sync"], b""));
    let key_file = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join("remote/.ferry/key.json")).unwrap())
            .unwrap()
    };
    assert_eq!(
        (key_file()["version"].clone(), key_file()["epoch"].clone()),
        (3.into(), 1.into())
    );

    let err = fails(ferry(root, "a", pass, &["rekey"], b""));
    assert!(err.contains("--yes"), "{err}");
    let err = fails(ferry(root, "a", Some("wrong"), &["rekey", "--yes"], b""));
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(key_file()["epoch"], 1, "nothing changed");

    // No new passphrase (no terminal), or the current one: refused.
    let err = fails(ferry(root, "a", pass, &["rekey", "--yes"], b""));
    assert!(err.contains("new passphrase"), "{err}");
    let same = ferry_env(root, "a", &["rekey", "--yes"], pass, pass)
        .output()
        .unwrap();
    let err = fails(same);
    assert!(
        err.contains("the new passphrase is the current one"),
        "{err}"
    );
    assert_eq!(key_file()["epoch"], 1, "nothing changed");

    let new_pass = Some("after the leak");
    let mut rekey = vec!["rekey", "--yes"];
    rekey.extend(KDF);
    let out = ok(ferry_env(root, "a", &rekey, pass, new_pass)
        .output()
        .unwrap());
    let told = stderr(&out);
    assert!(
        told.contains("key epoch 2")
            && told.contains("2 object(s) re-sealed, 2 pushed, 2 old remote object(s) deleted"),
        "{told}"
    );
    assert!(
        told.contains("join the remote again, with the NEW passphrase"),
        "{told}"
    );
    assert_eq!(key_file()["epoch"], 2);
    assert!(
        told.contains(key_file()["key_id"].as_str().unwrap()),
        "{told}"
    );
    let cat = ok(ferry(root, "a", new_pass, &["cat", "notes/a.txt"], b""));
    assert_eq!(cat.stdout, b"alpha");
    let err = fails(ferry(root, "a", pass, &["cat", "notes/a.txt"], b""));
    assert!(
        err.contains("wrong passphrase"),
        "the old passphrase: {err}"
    );

    // The old device: a clear error naming `ferry rejoin`, nothing
    // written, its data (and an edit it never pushed) still readable here.
    ok(ferry(
        root,
        "b",
        pass,
        &["put", "notes/c.txt"],
        b"written by b offline",
    ));
    let err = fails(ferry(root, "b", pass, &["sync"], b""));
    assert!(
        err.contains("rekeyed") && err.contains("ferry rejoin"),
        "{err}"
    );
    let cat = ok(ferry(root, "b", pass, &["cat", "notes/b.txt"], b""));
    assert_eq!(cat.stdout, b"beta");
    // `ferry rejoin`: the old passphrase does not open the new key; the
    // new one does, and the unpushed object is carried over and pushed.
    let mut rejoin = vec!["rejoin"];
    rejoin.extend(KDF);
    let err = fails(ferry(root, "b", pass, &rejoin, b""));
    assert!(err.contains("passphrase"), "no new passphrase given: {err}");
    let err = fails(ferry_env(root, "b", &rejoin, pass, pass).output().unwrap());
    assert!(err.contains("wrong passphrase"), "{err}");
    let mut rejoin_json = rejoin.clone();
    rejoin_json.push("--json");
    let out = ok(ferry_env(root, "b", &rejoin_json, pass, new_pass)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["epoch"], 2, "{v}");
    assert_eq!(v["carried"], serde_json::json!(["notes/c.txt"]), "{v}");
    assert_eq!(v["unpushed"], 0, "{v}");
    let cat = ok(ferry(root, "b", new_pass, &["cat", "notes/a.txt"], b""));
    assert_eq!(cat.stdout, b"alpha");
    ok(ferry(root, "a", new_pass, &["sync"], b""));
    let cat = ok(ferry(root, "a", new_pass, &["cat", "notes/c.txt"], b""));
    assert_eq!(cat.stdout, b"written by b offline");
    // Joining again works with the new passphrase (not the old one), with
    // every object and its metadata.
    let err = fails(ferry(root, "c", pass, &["init", "--remote", &url], b""));
    assert!(err.contains("wrong passphrase"), "{err}");
    ok(ferry(root, "c", new_pass, &["init", "--remote", &url], b""));
    ok(ferry(root, "c", new_pass, &["sync"], b""));
    let stat = ok(ferry(
        root,
        "c",
        new_pass,
        &["stat", "notes/a.txt", "--json"],
        b"",
    ));
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["metadata"]["who"], "ann", "{v}");
    let cat = ok(ferry(root, "c", new_pass, &["cat", "notes/b.txt"], b""));
    assert_eq!(cat.stdout, b"beta");
}

/// Finding 16, as measured: `"version": 1` written into a folder remote's
/// key.json made a new device join with names v1 (it could not read the
/// existing objects and pushed its own beside them). The version is now
/// bound into the wrapped key: the joining device refuses, saying the key
/// file was altered, and creates nothing.
#[test]
fn a_joining_device_refuses_a_key_file_edited_down_to_version_1() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    let pass = Some("s3cret words");
    let mut init = vec!["init", "--encrypt", "--remote", &url];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(root, "a", pass, &["put", "k"], b"existing"));
    ok(ferry(root, "a", pass, &["sync"], b""));
    let path = root.join("remote/.ferry/key.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["version"], 3, "{file}");
    file["version"] = 1.into();
    std::fs::write(&path, file.to_string()).unwrap();

    let err = fails(ferry(root, "b", pass, &["init", "--remote", &url], b""));
    assert!(
        err.contains("says version 1 but was written as version 3") && err.contains("altered"),
        "{err}"
    );
    assert!(!root.join("b").exists(), "nothing was created");
}

/// Finding 20 through the CLI: a joining device meets a key file that asks
/// for far more Argon2 work than it affords (here 512 MiB × 4 passes
/// against the default 64 MiB × 3: more than 8× the work) and refuses it
/// at once, before any Argon2 work, with a hint; saying it affords that
/// cost (--kdf-memory/--kdf-passes) lets it try the passphrase.
#[test]
fn a_joining_device_refuses_a_key_file_it_cannot_afford_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    let pass = Some("s3cret words");
    let mut init = vec!["init", "--encrypt", "--remote", &url];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(root, "a", pass, &["sync"], b""));
    let path = root.join("remote/.ferry/key.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["wrapped"]["kdf"]["m_kib"] = (512 * 1024).into();
    file["wrapped"]["kdf"]["t"] = 4.into();
    std::fs::write(&path, file.to_string()).unwrap();

    let started = std::time::Instant::now();
    let err = fails(ferry(root, "b", pass, &["init", "--remote", &url], b""));
    assert!(
        err.contains("more than 8× the work") && err.contains("--kdf-memory"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "refused before the KDF: {:?}",
        started.elapsed()
    );
    assert!(!root.join("b").exists());
    // Affording it: the KDF runs, and the forged cost opens nothing.
    let err = fails(ferry(
        root,
        "b",
        pass,
        &[
            "init",
            "--remote",
            &url,
            "--kdf-memory",
            "512",
            "--kdf-passes",
            "4",
        ],
        b"",
    ));
    assert!(err.contains("wrong passphrase"), "{err}");
}

/// `ferry serve` keeps an encrypted bucket unlocked for as long as it runs:
/// it sets its core file size limit to 0 (soft and hard), even when it was
/// started with core files allowed, before it unlocks anything. (It also
/// makes itself non-dumpable, which a test running as root cannot see in
/// `/proc`.)
#[test]
fn serve_allows_no_core_file_while_a_bucket_is_unlocked() {
    use std::io::Read as _;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pass = Some("s3cret words");
    let mut init = vec!["init", "--encrypt"];
    init.extend(KDF);
    ok(ferry(root, "a", pass, &init, b""));
    ok(ferry(root, "a", pass, &["put", "k"], b"secret data"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // Core files allowed (as far as the hard limit lets a shell raise it).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -c unlimited 2>/dev/null || ulimit -c \"$(ulimit -H -c)\"; exec \"$@\"")
        .arg("sh")
        .arg(FERRY)
        .arg("--bucket")
        .arg(root.join("a"))
        .args(["serve", "--listen", &listen])
        .current_dir(root)
        .env_remove("FERRY_BUCKET")
        .env("FERRY_PASSPHRASE", "s3cret words")
        .env("FERRY_SERVE_ACCESS_KEY_ID", "AKCORETEST")
        .env("FERRY_SERVE_SECRET_ACCESS_KEY", "core-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("access key id") {
        if err.read(&mut byte).unwrap() == 0 {
            let _ = child.kill();
            panic!("ferry serve stopped: {}", String::from_utf8_lossy(&seen));
        }
        seen.push(byte[0]);
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let core: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("{limits}"))
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect();
    assert_eq!(
        core,
        ["0", "0"],
        "soft and hard core limits of `ferry serve`:\n{limits}"
    );
}
