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
/// --yes), re-seals and re-pushes every object under a new key epoch, and
/// the device still on the old key is told to join again.
#[test]
fn rekey_re_seals_everything_and_other_devices_must_join_again() {
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
        (2.into(), 1.into())
    );

    let err = fails(ferry(root, "a", pass, &["rekey"], b""));
    assert!(err.contains("--yes"), "{err}");
    let err = fails(ferry(root, "a", Some("wrong"), &["rekey", "--yes"], b""));
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(key_file()["epoch"], 1, "nothing changed");

    let mut rekey = vec!["rekey", "--yes", "--json"];
    rekey.extend(KDF);
    let out = ok(ferry(root, "a", pass, &rekey, b""));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["epoch"], 2, "{v}");
    assert_eq!(
        (
            v["copied"].clone(),
            v["pushed"].clone(),
            v["retired"].clone()
        ),
        (2.into(), 2.into(), 2.into()),
        "{v}"
    );
    assert_eq!(key_file()["epoch"], 2);
    assert_eq!(key_file()["key_id"], v["key_id"]);
    let cat = ok(ferry(root, "a", pass, &["cat", "notes/a.txt"], b""));
    assert_eq!(cat.stdout, b"alpha");

    // The old device: a clear error, its data still readable here.
    let err = fails(ferry(root, "b", pass, &["sync"], b""));
    assert!(
        err.contains("rekeyed") && err.contains("init --remote"),
        "{err}"
    );
    let cat = ok(ferry(root, "b", pass, &["cat", "notes/b.txt"], b""));
    assert_eq!(cat.stdout, b"beta");
    // Joining again works, with every object and its metadata.
    ok(ferry(root, "c", pass, &["init", "--remote", &url], b""));
    ok(ferry(root, "c", pass, &["sync"], b""));
    let stat = ok(ferry(
        root,
        "c",
        pass,
        &["stat", "notes/a.txt", "--json"],
        b"",
    ));
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["metadata"]["who"], "ann", "{v}");
    let cat = ok(ferry(root, "c", pass, &["cat", "notes/b.txt"], b""));
    assert_eq!(cat.stdout, b"beta");
}
