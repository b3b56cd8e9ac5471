//! The `ferry` command, checked through the real binary.

use std::process::{Command, Stdio};

use crate::support::{ok, stderr, stdout, Scratch, FERRY};

#[test]
fn init_creates_the_bucket_and_refuses_a_second_time() {
    let s = Scratch::new();
    assert!(s.bucket().join("index.db").is_file());
    let again = s.ferry(&["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    // With --remote, the way to give the existing bucket a remote.
    let url = format!("file://{}", s.path().join("r").display());
    let again = s.ferry(&["init", "--remote", &url]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(&format!("ferry remote set {url}")),
        "{}",
        stderr(&again)
    );
    assert!(!s.path().join("r").exists(), "the remote was not touched");
}

#[test]
fn init_says_what_it_created() {
    let s = Scratch::empty();
    let out = s.ferry(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.starts_with("Created an empty ferry bucket in "),
        "{said}"
    );
    assert!(said.contains("ferry remote set URL"), "{said}");
}

#[test]
fn put_file_and_stdin_then_get_and_cat() {
    let s = Scratch::new();
    std::fs::write(s.path().join("a.txt"), b"from a file").unwrap();
    let out = s.ferry(&["put", "docs/a.txt", "a.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ferry_stdin(&["put", "docs/b.bin", "-"], b"from stdin");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ferry_stdin(&["put", "docs/c"], b"implicit stdin");
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(stdout(&s.ferry(&["cat", "docs/a.txt"])), "from a file");
    assert_eq!(stdout(&s.ferry(&["get", "docs/b.bin"])), "from stdin");
    assert_eq!(
        stdout(&s.ferry(&["cat", "docs/a.txt", "docs/c"])),
        "from a fileimplicit stdin"
    );
    let out = s.ferry(&["get", "docs/b.bin", "copy.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(s.path().join("copy.bin")).unwrap(),
        b"from stdin"
    );
}

#[test]
fn stat_json_has_the_documented_fields() {
    let s = Scratch::new();
    let out = s.ferry_stdin(
        &[
            "put",
            "x/report.json",
            "--meta",
            "Owner=ann",
            "--meta",
            "k=v=w",
        ],
        b"{\"a\":1}",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ferry(&["stat", "x/report.json", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["key"], "x/report.json");
    assert_eq!(v["size"], 7);
    assert_eq!(v["hash"], ferry::ContentHash::of(b"{\"a\":1}").to_hex());
    assert_eq!(v["content_type"], "application/json");
    assert_eq!(v["metadata"]["owner"], "ann");
    assert_eq!(v["metadata"]["k"], "v=w");
    assert_eq!(v["state"], "dirty");
    assert!(v["modified"].as_str().unwrap().ends_with('Z'));
    let human = stdout(&s.ferry(&["stat", "x/report.json"]));
    assert!(human.contains("content type: application/json"), "{human}");
}

#[test]
fn put_with_explicit_content_type() {
    let s = Scratch::new();
    let out = s.ferry_stdin(&["put", "k.txt", "--content-type", "image/png"], b"x");
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&s.ferry(&["stat", "k.txt", "--json"]).stdout).unwrap();
    assert_eq!(v["content_type"], "image/png");
}

#[test]
fn ls_plain_long_dirs_and_json() {
    let s = Scratch::new();
    for key in ["a/1", "a/2", "b/c/d", "b/e", "c"] {
        assert!(s
            .ferry_stdin(&["put", key], key.as_bytes())
            .status
            .success());
    }
    assert_eq!(stdout(&s.ferry(&["ls"])), "a/1\na/2\nb/c/d\nb/e\nc\n");
    assert_eq!(stdout(&s.ferry(&["ls", "b/"])), "b/c/d\nb/e\n");
    assert_eq!(stdout(&s.ferry(&["ls", "--dirs"])), "a/\nb/\nc\n");
    assert_eq!(stdout(&s.ferry(&["ls", "b/", "-d"])), "b/c/\nb/e\n");
    let long = stdout(&s.ferry(&["ls", "--long", "a/"]));
    assert_eq!(long.lines().count(), 2);
    assert!(
        long.lines()
            .all(|l| l.contains("dirty") && l.contains("3 B")),
        "{long}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&s.ferry(&["ls", "--json"]).stdout).unwrap();
    let keys: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/1", "a/2", "b/c/d", "b/e", "c"]);
    let json: serde_json::Value =
        serde_json::from_slice(&s.ferry(&["ls", "--json", "-d"]).stdout).unwrap();
    assert_eq!(json[0]["prefix"], "a/");
    assert_eq!(json[2]["key"], "c");
    let empty: serde_json::Value =
        serde_json::from_slice(&s.ferry(&["ls", "--json", "zzz"]).stdout).unwrap();
    assert_eq!(empty, serde_json::json!([]));
}

#[test]
fn ls_pages_through_more_than_one_listing_page() {
    let s = Scratch::new();
    let src = s.path().join("many");
    std::fs::create_dir(&src).unwrap();
    for i in 0..2100 {
        std::fs::write(src.join(format!("f{i:05}")), i.to_string()).unwrap();
    }
    let out = s.ferry(&["cp", "-r", "many", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&s.ferry(&["ls", "m/"]));
    let keys: Vec<&str> = listing.lines().collect();
    assert_eq!(keys.len(), 2100);
    assert_eq!(keys[0], "m/f00000");
    assert_eq!(keys[2099], "m/f02099");
}

#[test]
fn rm_deletes_and_reports_missing_keys() {
    let s = Scratch::new();
    for key in ["a", "b", "p/1", "p/2"] {
        assert!(s.ferry_stdin(&["put", key], b"x").status.success());
    }
    let out = s.ferry(&["rm", "a", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ferry(&["rm", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no object at \"a\""),
        "{}",
        stderr(&out)
    );
    assert!(s.ferry(&["rm", "--force", "a"]).status.success());
    assert!(s.ferry(&["rm", "-r", "p/"]).status.success());
    assert_eq!(stdout(&s.ferry(&["ls"])), "");
}

#[test]
fn cp_imports_and_exports_a_folder_tree() {
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::write(src.join("deep/er/data.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("deep/empty"), b"").unwrap();
    std::fs::write(src.join("deep/ünï.txt"), "unicode".as_bytes()).unwrap();
    let out = s.ferry(&["cp", "-r", "src", "backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&s.ferry(&["ls", "backup/"])),
        "backup/deep/empty\nbackup/deep/er/data.bin\nbackup/deep/ünï.txt\nbackup/top.txt\n"
    );
    let out = s.ferry(&["cp", "-r", "ferry:backup", "restored"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for rel in ["top.txt", "deep/er/data.bin", "deep/empty", "deep/ünï.txt"] {
        assert_eq!(
            std::fs::read(s.path().join("restored").join(rel)).unwrap(),
            std::fs::read(src.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // A directory without -r is a usage error.
    assert_eq!(s.ferry(&["cp", "src", "x"]).status.code(), Some(2));
    // Single files both ways.
    assert!(s
        .ferry(&["cp", "src/top.txt", "ferry:one.txt"])
        .status
        .success());
    assert!(s
        .ferry(&["cp", "ferry:one.txt", "one-back.txt"])
        .status
        .success());
    assert_eq!(
        std::fs::read(s.path().join("one-back.txt")).unwrap(),
        b"top"
    );
}

#[test]
fn cp_export_reports_keys_that_cannot_be_file_names() {
    let s = Scratch::new();
    assert!(s.ferry_stdin(&["put", "e/ok"], b"1").status.success());
    assert!(s
        .ferry_stdin(&["put", "e/bad//name"], b"2")
        .status
        .success());
    let out = s.ferry(&["cp", "-r", "ferry:e/", "out"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("e/bad//name"), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty segment"), "{}", stderr(&out));
    assert_eq!(std::fs::read(s.path().join("out/ok")).unwrap(), b"1");
}

#[test]
fn exit_codes_usage_failure_and_hints() {
    let s = Scratch::new();
    let bad_key = s.ferry_stdin(&["put", "/abs"], b"x");
    assert_eq!(bad_key.status.code(), Some(2));
    assert!(
        stderr(&bad_key).contains("may not start with `/`"),
        "{}",
        stderr(&bad_key)
    );
    let reserved = s.ferry_stdin(&["put", ".ferry/x"], b"x");
    assert_eq!(reserved.status.code(), Some(2));
    assert!(stderr(&reserved).contains("reserved"));
    let bad_meta = s.ferry_stdin(&["put", "k", "--meta", "novalue"], b"x");
    assert_eq!(bad_meta.status.code(), Some(2));
    let bad_meta_name = s.ferry_stdin(&["put", "k", "--meta", "bad name=1"], b"x");
    assert_eq!(bad_meta_name.status.code(), Some(2));
    assert!(stderr(&bad_meta_name).contains("metadata name"));
    let missing = s.ferry(&["cat", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no object at key \"nope\""));
    assert!(stderr(&missing).contains("hint:"));
    assert_eq!(s.ferry(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(s.ferry(&["ls", "--bogus"]).status.code(), Some(2));
    assert_eq!(s.ferry(&["--help"]).status.code(), Some(0));
}

#[test]
fn bucket_is_found_by_flag_env_and_parent_directories() {
    let s = Scratch::new();
    assert!(s.ferry_stdin(&["put", "k"], b"v").status.success());
    let nested = s.path().join("a/b/c");
    std::fs::create_dir_all(&nested).unwrap();
    let from_child = Command::new(FERRY)
        .current_dir(&nested)
        .env_remove("FERRY_BUCKET")
        .args(["cat", "k"])
        .output()
        .unwrap();
    assert_eq!(stdout(&from_child), "v");

    let elsewhere = Scratch::empty();
    let via_env = Command::new(FERRY)
        .current_dir(elsewhere.path())
        .env("FERRY_BUCKET", s.bucket())
        .args(["cat", "k"])
        .output()
        .unwrap();
    assert_eq!(stdout(&via_env), "v");
    let via_flag = Command::new(FERRY)
        .current_dir(elsewhere.path())
        .env_remove("FERRY_BUCKET")
        .args(["--bucket", s.bucket().to_str().unwrap(), "cat", "k"])
        .output()
        .unwrap();
    assert_eq!(stdout(&via_flag), "v");
    let none = Command::new(FERRY)
        .current_dir(elsewhere.path())
        .env_remove("FERRY_BUCKET")
        .args(["ls"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("ferry init"), "{}", stderr(&none));
}

#[test]
fn a_closed_pipe_exits_quietly() {
    let s = Scratch::new();
    std::fs::write(s.path().join("big"), vec![b'x'; 8 << 20]).unwrap();
    assert!(s.ferry(&["put", "big", "big"]).status.success());
    let mut child = s
        .cmd()
        .args(["cat", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close our end, as `head -c 10` does.
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stderr(&result), "");
}

#[test]
fn corrupt_objects_fail_get_and_leave_no_output_file() {
    let s = Scratch::new();
    std::fs::write(s.path().join("big"), vec![b'y'; 200_000]).unwrap();
    assert!(s.ferry(&["put", "big", "big"]).status.success());
    let hash = ferry::ContentHash::of(&vec![b'y'; 200_000]).to_hex();
    let blob = s.bucket().join("blobs").join(&hash[..2]).join(&hash);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1234] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let out = s.ferry(&["get", "big", "restored"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert!(!s.path().join("restored").exists());
    assert!(!s.path().join("restored.ferry-part").exists());
}

/// A recursive argument without a trailing `/` names the folder: with
/// `photos/x.jpg`, `photos2/y.jpg` and `photos-old.txt`, `cp -r
/// ferry:photos out` exports only `photos/`, and `rm -r photos` deletes
/// only `photos/...`; `--prefix` asks for the plain string match.
#[test]
fn recursive_arguments_are_folders_not_string_prefixes() {
    let s = Scratch::new();
    for k in [
        "photos/x.jpg",
        "photos2/y.jpg",
        "photos-old.txt",
        "photosX/a",
    ] {
        let out = s.ferry_stdin(&["put", k], k.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out_dir = s.path().join("out");
    let out = s.ferry(&["cp", "-r", "ferry:photos", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["x.jpg"]);
    let out = s.ferry(&["rm", "-r", "photos"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = stdout(&s.ferry(&["ls"]));
    let keys: Vec<&str> = ls.lines().collect();
    assert_eq!(keys, ["photos-old.txt", "photos2/y.jpg", "photosX/a"]);
    let out = s.ferry(&["rm", "-r", "--prefix", "photos"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&s.ferry(&["ls"])), "");
}

/// Every command that prints exits quietly (0, no panic) when its output
/// pipe is closed.
#[test]
fn closed_output_pipe_is_a_quiet_exit() {
    let s = Scratch::new();
    assert!(s.ferry_stdin(&["put", "k"], b"v").status.success());
    for args in [
        &["status"][..],
        &["remote", "show"],
        &["cache"],
        &["scope", "ls"],
        &["ls"],
        &["stat", "k"],
        &["conflicts"],
        &["cat", "k"],
    ] {
        let mut child = s
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `put --meta ferry-hash=...` is refused with exit 2: ferry's own names
/// would silently go missing on the other device.
#[test]
fn reserved_metadata_names_are_refused_at_put() {
    let s = Scratch::new();
    let out = s.ferry_stdin(&["put", "k", "--meta", "ferry-hash=abc"], b"v");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    assert_eq!(stdout(&s.ferry(&["ls"])), "");
}

/// `get KEY EXISTING_DIR` writes into the directory under the key's last
/// segment, and never leaves a `.ferry-part` file behind.
#[test]
fn get_into_an_existing_directory() {
    let s = Scratch::new();
    assert!(s
        .ferry_stdin(&["put", "notes/today.txt"], b"hello")
        .status
        .success());
    let dir = s.path().join("outdir");
    std::fs::create_dir(&dir).unwrap();
    let out = s.ferry(&["get", "notes/today.txt", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("today.txt")).unwrap(), b"hello");
    let names: Vec<String> = std::fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".ferry-part")),
        "{names:?}"
    );
}

/// `--meta k=a --meta k=b` is an error (exit 2), not a silent pick.
#[test]
fn repeated_meta_name_is_an_error() {
    let s = Scratch::new();
    let out = s.ferry_stdin(&["put", "k", "--meta", "k=a", "--meta", "k=b"], b"v");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("twice"), "{}", stderr(&out));
}

/// `scope rm` of a prefix that is not a scope says so (exit 1) and
/// changes nothing.
#[test]
fn removing_a_scope_that_is_not_there_is_an_error() {
    let s = Scratch::new();
    let out = s.ferry(&["scope", "rm", "nothere/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a sync scope"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&s.ferry(&["scope", "ls"])).trim(), "(everything)");
}

/// A remote URL with a trailing space is refused (it made a folder `r2 `).
#[test]
fn remote_url_with_surrounding_whitespace_is_refused() {
    let s = Scratch::new();
    let url = format!("file://{}/r2 ", s.path().display());
    let out = s.ferry(&["remote", "set", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!s.path().join("r2 ").exists());
}

#[test]
fn completions_and_man_page_cover_every_command() {
    let s = Scratch::empty();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = s.ferry(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for cmd in ["init", "sync", "watch", "destroy", "completions"] {
            assert!(script.contains(cmd), "{shell} lacks {cmd}");
        }
    }
    let out = s.ferry(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = s.ferry(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH ferry"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("object storage"), "not the about text");
    // No reference to pages that are not shipped (`ferry-init(1)`; issue
    // 24, 7.11): the commands are named, and where their help is.
    assert!(!page.contains("(1)"), "refers to another page");
    assert!(
        page.contains("ferry help COMMAND"),
        "says where the help is"
    );
    for cmd in ["init", "sync", "watch", "destroy", "completions"] {
        assert!(page.contains(cmd), "the man page lacks {cmd}");
    }
    // Closed pipes are quiet, as for every command that prints.
    let mut child = Command::new(FERRY)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An import counts exactly: symbolic links are skipped and named unless
/// `-L` follows them; with `-L`, a dangling link and a link loop are named
/// failures; a tab in a name is an invalid key, a named failure (exit 1).
#[test]
fn import_counts_exactly_and_names_each_skipped_link() {
    use std::os::unix::fs::symlink;
    let s = Scratch::new();
    let tree = s.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a").unwrap();
    std::fs::write(tree.join("sub/b.txt"), "b").unwrap();
    std::fs::write(tree.join("tab\tname.txt"), "t").unwrap();
    symlink(tree.join("a.txt"), tree.join("link-to-a")).unwrap();
    symlink(tree.join("missing"), tree.join("dangling")).unwrap();
    symlink(&tree, tree.join("sub/loop")).unwrap();

    // The tab makes an invalid key: a named failure, counted.
    let out = s.ferry(&["cp", "-r", tree.to_str().unwrap(), "plain/"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("copied 2 files into the bucket; skipped 3 (named above); 1 failed"),
        "{err}"
    );
    assert!(err.contains("1 of 3 files could not be copied"), "{err}");
    assert!(err.contains("tab\tname.txt"), "{err}");
    for name in ["link-to-a", "dangling", "sub/loop"] {
        assert!(
            err.contains(&format!(
                "skipped: {}: a symbolic link",
                tree.join(name).display()
            )),
            "{name} not named: {err}"
        );
    }
    let listed = stdout(&s.ferry(&["ls", "plain/"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let out = s.ferry(&["cp", "-r", "-L", tree.to_str().unwrap(), "followed/"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("copied 3 files into the bucket; 3 failed"),
        "{err}"
    );
    assert!(err.contains("a symbolic link to nothing"), "{err}");
    assert!(err.contains("a symbolic link loop"), "{err}");
    assert!(err.contains("3 of 6 files could not be copied"), "{err}");
    let got = s.ferry(&["cat", "followed/link-to-a"]);
    assert_eq!(stdout(&got), "a");
}

#[test]
fn du_counts_objects_and_bytes_per_folder() {
    let s = Scratch::new();
    for (key, data) in [
        ("photos/2024/a.jpg", "aaaa"),
        ("photos/2024/b.jpg", "bb"),
        ("photos/2025/c.jpg", "c"),
        ("photos/top.txt", "ttt"),
        ("photos2/x", "xxxxx"),
    ] {
        let out = s.ferry_stdin(&["put", key, "-"], data.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = s.ferry(&["du", "photos", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["prefix"], "photos/");
    assert_eq!(v["objects"], 4, "photos2/ is another folder");
    assert_eq!(v["bytes"], 10);
    let folders: Vec<(String, u64, u64)> = v["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["folder"].as_str().unwrap().to_owned(),
                f["objects"].as_u64().unwrap(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        folders,
        [
            (".".to_owned(), 1, 3),
            ("photos/2024/".to_owned(), 2, 6),
            ("photos/2025/".to_owned(), 1, 1)
        ]
    );
    let text = stdout(&s.ferry(&["du"]));
    assert!(text.contains("photos2/"), "{text}");
    assert!(
        text.lines().last().unwrap().contains("5 objects  total"),
        "{text}"
    );
}

#[test]
fn mv_renames_keeping_content_type_and_metadata() {
    let s = Scratch::new();
    let out = s.ferry_stdin(
        &[
            "put",
            "docs/a.txt",
            "-",
            "--meta",
            "who=ann",
            "--content-type",
            "text/x-note",
        ],
        b"alpha",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s
        .ferry_stdin(&["put", "docs/sub/b", "-"], b"beta")
        .status
        .success());
    assert!(s.ferry_stdin(&["put", "other", "-"], b"o").status.success());

    let out = s.ferry(&["mv", "docs/a.txt", "notes/a.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stat = s.ferry(&["stat", "notes/a.txt", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&stat)).unwrap();
    assert_eq!(v["content_type"], "text/x-note");
    assert_eq!(v["metadata"]["who"], "ann");
    assert_eq!(stdout(&s.ferry(&["cat", "notes/a.txt"])), "alpha");
    assert_eq!(s.ferry(&["stat", "docs/a.txt"]).status.code(), Some(1));

    // An existing destination needs --force.
    let out = s.ferry(&["mv", "other", "notes/a.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(s
        .ferry(&["mv", "-f", "other", "notes/a.txt"])
        .status
        .success());
    assert_eq!(stdout(&s.ferry(&["cat", "notes/a.txt"])), "o");

    // A folder with -r.
    let out = s.ferry(&["mv", "-r", "docs", "archive/docs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&s.ferry(&["cat", "archive/docs/sub/b"])), "beta");
    assert_eq!(stdout(&s.ferry(&["ls", "docs/"])), "");
    let out = s.ferry(&["mv", "-r", "archive", "archive/inner"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `ferry check` reads every local object through its hash check and asks
/// SQLite to check the index: a sound bucket exits 0; a flipped byte in a
/// blob file is named by key, and the command exits 1.
#[test]
fn check_verifies_content_and_names_damage() {
    let s = Scratch::new();
    let big = vec![7u8; 200_000];
    std::fs::write(s.path().join("big.bin"), &big).unwrap();
    assert!(s
        .ferry(&["put", "data/big.bin", "big.bin"])
        .status
        .success());
    assert!(s.ferry_stdin(&["put", "small", "-"], b"s").status.success());
    let out = s.ferry(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 objects, 2 verified on this device, 0 damaged; index ok"),
        "{}",
        stdout(&out)
    );

    let blob = crate::support::blob_files(&s.bucket())
        .into_iter()
        .next()
        .expect("the big object is a blob file");
    let path = s.bucket().join("blobs").join(&blob[..2]).join(&blob);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = s.ferry(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["index"], "ok");
    assert_eq!(v["verified"], 1);
    assert_eq!(v["damaged"][0]["key"], "data/big.bin", "{v}");
}

/// An emptied or overwritten index is named as damaged (exit 1, a hint
/// with the way out), and left exactly as it was.
#[test]
fn damaged_index_is_named_and_left_untouched() {
    for (name, damage) in [
        ("emptied", Vec::new()),
        ("overwritten", b"this is not a database at all".repeat(200)),
    ] {
        let s = Scratch::new();
        assert!(s.ferry_stdin(&["put", "k", "-"], b"v").status.success());
        let index = s.bucket().join("index.db");
        let _ = std::fs::remove_file(s.bucket().join("index.db-wal"));
        let _ = std::fs::remove_file(s.bucket().join("index.db-shm"));
        std::fs::write(&index, &damage).unwrap();
        for cmd in [&["ls"][..], &["status"], &["check"]] {
            let out = s.ferry(cmd);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {cmd:?}: {err}");
            assert!(err.contains("is damaged"), "{name} {cmd:?}: {err}");
            assert!(err.contains("restore index.db"), "{name}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        assert_eq!(
            std::fs::read(&index).unwrap(),
            damage,
            "{name} was modified"
        );
    }
}

/// A bucket this user may read but not write: as root the commands run as
/// `nobody` (setpriv), otherwise the bucket is made read-only with chmod.
#[test]
fn read_only_bucket_serves_reads_and_refuses_writes_by_name() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Scratch::new();
    let put = s.ferry_stdin(&["put", "notes/a.txt"], b"hello");
    assert!(put.status.success(), "{}", stderr(&put));
    let root = s.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The binary where `nobody` can run it, and a folder it may write to.
    let exe = root.join("ferry-bin");
    std::fs::copy(FERRY, &exe).unwrap();
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_root = std::fs::metadata(&exe).unwrap().uid() == 0;
    if !as_root {
        for entry in walk_all(&s.bucket()) {
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode & !0o222))
                .unwrap();
        }
    }
    let before = walk_all(&s.bucket());
    let run = |args: &[&str]| {
        let mut cmd = if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // The other user's own home, without a ferry config.
        cmd.current_dir(root)
            .env_remove("FERRY_BUCKET")
            .env("HOME", &out_dir)
            .env_remove("XDG_CONFIG_HOME")
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["ls"][..],
        &["ls", "-l"],
        &["stat", "notes/a.txt"],
        &["status"],
        &["du"],
        &["check"],
        &["scope", "ls"],
        &["cache"],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let o = run(&["cat", "notes/a.txt"]);
    assert_eq!(o.stdout, b"hello", "{}", stderr(&o));
    let target = out_dir.join("a.txt");
    let o = run(&["get", "notes/a.txt", target.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&target).unwrap(), b"hello");

    for args in [
        &["put", "notes/b.txt", target.to_str().unwrap()][..],
        &["rm", "notes/a.txt"],
        &["pin", "notes/a.txt"],
        &["mv", "notes/a.txt", "notes/c.txt"],
        &["cache", "evict", "1"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is read-only for this user"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(walk_all(&s.bucket()), before, "nothing was written");
    if !as_root {
        for entry in walk_all(&s.bucket()) {
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode | 0o200))
                .unwrap();
        }
    }
    let o = s.ferry(&["ls"]);
    assert_eq!(stdout(&o), "notes/a.txt\n");
}

/// Every path under `dir` (itself included), sorted.
fn walk_all(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            out.extend(walk_all(&e.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn config_show_names_where_each_setting_comes_from_and_files_apply_at_the_next_command() {
    let s = Scratch::new();
    let xdg = s.path().join("xdg");
    std::fs::create_dir_all(xdg.join("ferry")).unwrap();
    std::fs::write(
        xdg.join("ferry/config.toml"),
        "[credentials]\naccess_key_id = \"AKIAUSERDEFAULT\"\n\
         [profiles.lab]\naccess_key_id = \"LABKEY1234\"\nsecret_access_key = \"labsecret\"\n\
         [sync]\nconflict = \"keep-local\"\nmax_cache_size = 5000\n",
    )
    .unwrap();
    std::fs::write(
        s.bucket().join("ferry.toml"),
        "profile = \"lab\"\n[sync]\nmax_cache_size = 3000\n",
    )
    .unwrap();
    let show = |extra: &[(&str, &str)]| {
        let mut c = s.cmd();
        c.env("XDG_CONFIG_HOME", &xdg)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("FERRY_PROFILE")
            .args(["config", "show", "--json"]);
        for (k, v) in extra {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["settings"].clone()
    };
    let v = show(&[]);
    let user = xdg.join("ferry/config.toml").display().to_string();
    let bucket_file = s.bucket().join("ferry.toml").display().to_string();
    assert_eq!(v["sync.max_cache_size"]["value"], "3000");
    assert_eq!(
        v["sync.max_cache_size"]["source"],
        format!("bucket config {bucket_file}")
    );
    assert_eq!(v["sync.conflict"]["value"], "keep-local");
    assert_eq!(v["sync.conflict"]["source"], format!("user config {user}"));
    assert_eq!(v["sync.direction"]["source"], "default");
    assert_eq!(v["profile"]["value"], "lab");
    assert_eq!(v["credentials.access_key_id"]["value"], "LABK…");
    assert_eq!(
        v["credentials.access_key_id"]["source"],
        format!("user config {user} [profiles.lab]")
    );
    assert_eq!(v["credentials.secret_access_key"]["value"], "(hidden)");
    // The environment wins over both files.
    let v = show(&[("AWS_ACCESS_KEY_ID", "ENVKEY99")]);
    assert_eq!(
        v["credentials.access_key_id"]["source"],
        "environment AWS_ACCESS_KEY_ID"
    );
    // The files' settings reached the index (any command applies them).
    let conn = rusqlite::Connection::open(s.bucket().join(ferry::INDEX_FILE)).unwrap();
    let stored: String = conn
        .query_row("SELECT value FROM settings WHERE name = 'sync'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["max_cache_size"], 3000);
    assert_eq!(stored["conflict"], "keep-local");

    // A typo is an error naming the field and the file, for every command.
    std::fs::write(
        s.bucket().join("ferry.toml"),
        "[sync]\nconflit = \"flag\"\n",
    )
    .unwrap();
    let o = s
        .cmd()
        .env("XDG_CONFIG_HOME", &xdg)
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown setting `conflit`"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(&bucket_file), "{}", stderr(&o));
    // A profile that does not exist is named.
    std::fs::write(s.bucket().join("ferry.toml"), "profile = \"nope\"\n").unwrap();
    let o = s
        .cmd()
        .env("XDG_CONFIG_HOME", &xdg)
        .arg("ls")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("profile \"nope\" is not defined"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn progress_flag_draws_plain_progress_lines_on_a_non_terminal() {
    let s = Scratch::new();
    let file = s.path().join("data.bin");
    std::fs::write(&file, vec![5u8; 3 << 20]).unwrap();
    // stderr is a pipe here: no bar unless asked.
    let o = s.ferry(&["put", "plain", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("/3.00 MiB"), "{}", stderr(&o));
    let o = s.ferry(&["put", "--progress", "shown", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("shown ["), "{err}");
    assert!(err.contains("/3.00 MiB"), "{err}");
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "plain lines: {err:?}"
    );
    let out = s.path().join("back.bin");
    let o = s.ferry(&["get", "--progress", "shown", out.to_str().unwrap()]);
    assert!(stderr(&o).contains("/3.00 MiB"), "{}", stderr(&o));
    let o = s.ferry(&["put", "--progress", "-q", "x", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Issue 24, 7.6 and 7.7: the README's `<bucket>/ferry.toml` read as
/// `photos/ferry.toml` was ignored; it is read beside the `.ferry` folder
/// too, `config show` names the file (and shows `[serve]` keys and tokens
/// masked), both files at once are refused, and `--bucket photos` (the
/// folder that holds the bucket) is accepted as discovery accepts it.
#[test]
fn ferry_toml_beside_the_bucket_folder_and_bucket_by_its_folder() {
    let s = Scratch::new();
    let beside = s.path().join("ferry.toml");
    std::fs::write(
        &beside,
        "[sync]\nmax_cache_size = 4321\n[serve]\naccess_key_id = \"SERVEKEY123\"\n\
         secret_access_key = \"servesecret\"\n[serve.tokens.web]\ntoken = \"tok-secret-value\"\n",
    )
    .unwrap();
    let out = ok(s.ferry(&["config", "show", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bucket_config"], beside.display().to_string(), "{v}");
    assert_eq!(v["settings"]["sync.max_cache_size"]["value"], "4321", "{v}");
    assert_eq!(
        v["settings"]["serve.access_key_id"]["value"], "SERV…",
        "{v}"
    );
    assert_eq!(
        v["settings"]["serve.secret_access_key"]["value"],
        "(hidden)"
    );
    let token = v["settings"]["serve.tokens.web"]["value"].as_str().unwrap();
    assert!(token.starts_with("(hidden)"), "{token}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("tok-secret-value"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("servesecret"));
    let human = stdout(&ok(s.ferry(&["config", "show"])));
    assert!(
        human.contains(&format!("bucket config: {}", beside.display())),
        "{human}"
    );

    // Both files: refused, naming both.
    std::fs::write(
        s.bucket().join("ferry.toml"),
        "[sync]\nmax_cache_size = 1\n",
    )
    .unwrap();
    let out = s.ferry(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("two bucket config files"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(s.bucket().join("ferry.toml")).unwrap();

    // `--bucket` naming the folder that holds `.ferry`.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::FERRY)
        .current_dir(elsewhere.path())
        .env_remove("FERRY_BUCKET")
        .env("XDG_CONFIG_HOME", elsewhere.path().join("xdg"))
        .args(["--bucket", s.path().to_str().unwrap(), "put", "k"])
        .arg(&beside)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&ok(s.ferry(&["ls"]))).trim(), "k");
}
