//! `--include`, `--exclude`, `--filter` and `--filter-from` (rclone's
//! filter syntax) on `cp -r`, `sync`/`push`/`pull` and `scope filter`.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{ok, stderr, stdout, Scratch, FERRY};

/// The tree the expected results were taken from.
const TREE: [&str; 14] = [
    "top.jpg",
    "top.txt",
    "a/p.jpg",
    "a/q.txt",
    "a/b/r.jpg",
    "x/a/p.jpg",
    "x/a/s.txt",
    "secret/k.jpg",
    "secret/deep/z.txt",
    "photos/2024/i.jpg",
    "photos/2024/i.raw",
    "photos/n.raw",
    "c/d.TXT",
    "c/sp ace.txt",
];

/// Flags and the files `rclone lsf -R --files-only FLAGS TREE` listed
/// (rclone v1.60.1, Debian's package, on this tree plus `c/br{a}.txt`).
#[rustfmt::skip]
const RCLONE: &[(&[&str], &[&str])] = &[
    (&["--include", "a/*.jpg"], &["a/p.jpg"]),
    (&["--include", "*.jpg"], &["a/b/r.jpg", "a/p.jpg", "photos/2024/i.jpg", "secret/k.jpg", "top.jpg", "x/a/p.jpg"]),
    (&["--exclude", "secret/"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt", "c/br{a}.txt", "c/d.TXT", "c/sp ace.txt", "photos/2024/i.jpg", "photos/2024/i.raw", "photos/n.raw", "top.jpg", "top.txt", "x/a/p.jpg", "x/a/s.txt"]),
    (&["--include", "secret/"], &[]),
    (&["--filter", "+ secret/", "--filter", "- *"], &[]),
    (&["--include", "/a/**"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt"]),
    (&["--include", "a/**"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt"]),
    (&["--exclude", "*.jpg", "--include", "a/**"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt"]),
    (&["--filter", "- /x/**", "--filter", "+ *.jpg", "--filter", "- **"], &["a/b/r.jpg", "a/p.jpg", "photos/2024/i.jpg", "secret/k.jpg", "top.jpg"]),
    (&["--include", "*.{jpg,raw}"], &["a/b/r.jpg", "a/p.jpg", "photos/2024/i.jpg", "photos/2024/i.raw", "photos/n.raw", "secret/k.jpg", "top.jpg", "x/a/p.jpg"]),
    (&["--exclude", "**/2024/**"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt", "c/br{a}.txt", "c/d.TXT", "c/sp ace.txt", "photos/n.raw", "secret/deep/z.txt", "secret/k.jpg", "top.jpg", "top.txt", "x/a/p.jpg", "x/a/s.txt"]),
    (&["--include", "/*.jpg"], &["top.jpg"]),
    (&["--filter", "+ **/", "--filter", "- *.jpg"], &["a/q.txt", "c/br{a}.txt", "c/d.TXT", "c/sp ace.txt", "photos/2024/i.raw", "photos/n.raw", "secret/deep/z.txt", "top.txt", "x/a/s.txt"]),
    (&["--include", "a/"], &[]),
    (&["--exclude", "*.TXT"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt", "c/br{a}.txt", "c/sp ace.txt", "photos/2024/i.jpg", "photos/2024/i.raw", "photos/n.raw", "secret/deep/z.txt", "secret/k.jpg", "top.jpg", "top.txt", "x/a/p.jpg", "x/a/s.txt"]),
    (&["--include", "c/sp ace.txt"], &["c/sp ace.txt"]),
    (&["--include", r"c/br\{a\}.txt"], &["c/br{a}.txt"]),
    (&["--exclude", "[a-c]/**"], &["photos/2024/i.jpg", "photos/2024/i.raw", "photos/n.raw", "secret/deep/z.txt", "secret/k.jpg", "top.jpg", "top.txt"]),
    (&["--include", "?/*"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt", "c/br{a}.txt", "c/d.TXT", "c/sp ace.txt", "x/a/p.jpg", "x/a/s.txt"]),
    (&["--filter", "- secret/deep/", "--filter", "+ secret/**", "--filter", "- *"], &["secret/k.jpg"]),
    (&["--include", "/photos/*/*.jpg"], &["photos/2024/i.jpg"]),
    (&["--include", "{a,x}/**"], &["a/b/r.jpg", "a/p.jpg", "a/q.txt", "x/a/p.jpg", "x/a/s.txt"]),
    (&["--include", "**/a/*"], &["x/a/p.jpg", "x/a/s.txt"]),
    (&["--filter", "+ /c/*", "--filter", "!", "--filter", "- *.txt"], &["a/b/r.jpg", "a/p.jpg", "c/d.TXT", "photos/2024/i.jpg", "photos/2024/i.raw", "photos/n.raw", "secret/k.jpg", "top.jpg", "x/a/p.jpg"]),
];

fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_owned).collect()
}

fn write_tree(dir: &Path) {
    for f in TREE.iter().chain(&["c/br{a}.txt"]) {
        let path = dir.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f.as_bytes()).unwrap();
    }
}

#[test]
fn cp_r_filters_select_the_files_rclone_selects() {
    let s = Scratch::new();
    let tree = s.path().join("tree");
    write_tree(&tree);
    for (i, (flags, expected)) in RCLONE.iter().enumerate() {
        let dest = format!("case{i}/");
        let mut args = vec!["cp", "-r", "-q"];
        args.extend_from_slice(flags);
        args.push(tree.to_str().unwrap());
        args.push(&dest);
        ok(s.ferry(&args));
        let listed: Vec<String> = lines(&ok(s.ferry(&["ls", &dest])))
            .iter()
            .map(|k| k.strip_prefix(&dest).unwrap().to_owned())
            .collect();
        assert_eq!(listed, *expected, "ferry cp -r {flags:?}");
    }
}

/// Issue 24, 7.10: `--include '*.jpg' --exclude 'tmp/'` takes tmp/t.jpg
/// (rclone's order: includes first), and says so as rclone does; rules
/// alone, or flags of one kind, give no warning.
#[test]
fn mixing_include_and_exclude_warns() {
    let s = Scratch::new();
    let tree = s.path().join("mixed");
    for f in ["tmp/t.jpg", "a.jpg", "b.txt"] {
        let path = tree.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f).unwrap();
    }
    let out = ok(s.ferry(&[
        "cp",
        "-r",
        "--include",
        "*.jpg",
        "--exclude",
        "tmp/",
        tree.to_str().unwrap(),
        "m/",
    ]));
    let err = stderr(&out);
    assert!(
        err.contains("warning: --include and --exclude are mixed"),
        "{err}"
    );
    assert!(err.contains("--filter"), "{err}");
    assert_eq!(
        lines(&ok(s.ferry(&["ls", "m/"]))),
        ["m/a.jpg", "m/tmp/t.jpg"]
    );
    let out = ok(s.ferry(&[
        "cp",
        "-r",
        "--filter",
        "- tmp/",
        "--filter",
        "+ *.jpg",
        "--filter",
        "- **",
        tree.to_str().unwrap(),
        "f/",
    ]));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(lines(&ok(s.ferry(&["ls", "f/"]))), ["f/a.jpg"]);
    let out = ok(s.ferry(&[
        "cp",
        "-r",
        "--include",
        "*.jpg",
        tree.to_str().unwrap(),
        "i/",
    ]));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn filter_from_reads_rules_with_comments_and_export_filters_below_the_prefix() {
    let s = Scratch::new();
    let tree = s.path().join("tree");
    write_tree(&tree);
    let rules = s.path().join("rules.txt");
    std::fs::write(
        &rules,
        "# pictures only, not the secret ones\n; a comment too\n\n- secret/\n+ *.jpg\n- **\n",
    )
    .unwrap();
    let o = ok(s.ferry(&[
        "cp",
        "-r",
        "--filter-from",
        rules.to_str().unwrap(),
        tree.to_str().unwrap(),
        "in/",
    ]));
    assert!(
        stderr(&o).contains(
            "copied 5 files into the bucket (8 files and 1 folder excluded by the filters)"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        lines(&ok(s.ferry(&["ls", "in/"]))),
        [
            "in/a/b/r.jpg",
            "in/a/p.jpg",
            "in/photos/2024/i.jpg",
            "in/top.jpg",
            "in/x/a/p.jpg"
        ]
    );
    // Out of the bucket: paths below the source prefix are judged, so an
    // anchored pattern names the prefix's own top level.
    let out = s.path().join("out");
    let o = ok(s.ferry(&[
        "cp",
        "-r",
        "--exclude",
        "/a/**",
        "ferry:in",
        out.to_str().unwrap(),
    ]));
    assert!(
        stderr(&o).contains("(2 files excluded by the filters)"),
        "{}",
        stderr(&o)
    );
    let mut got: Vec<String> = walk(&out);
    got.sort();
    assert_eq!(got, ["photos/2024/i.jpg", "top.jpg", "x/a/p.jpg"]);
    // Within the bucket.
    ok(s.ferry(&["cp", "-r", "--include", "x/**", "ferry:in/", "ferry:copy/"]));
    assert_eq!(lines(&ok(s.ferry(&["ls", "copy/"]))), ["copy/x/a/p.jpg"]);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|p| format!("{name}/{p}")));
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn bad_filters_are_usage_errors_that_name_the_pattern() {
    let s = Scratch::new();
    let tree = s.path().join("tree");
    write_tree(&tree);
    for (flags, says) in [
        (&["--include", "a{b"][..], "a{b"),
        (&["--exclude", "x]"][..], "x]"),
        (&["--include", "***"][..], "too many stars"),
        (&["--filter", "x"][..], "+ PATTERN"),
        (
            &["--filter-from", "/nonexistent/rules"][..],
            "/nonexistent/rules",
        ),
    ] {
        let mut args = vec!["cp", "-r"];
        args.extend_from_slice(flags);
        args.push(tree.to_str().unwrap());
        args.push("t/");
        let o = s.ferry(&args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{flags:?}: {}", stderr(&o));
    }
    // Nothing was copied by any of them.
    assert!(lines(&ok(s.ferry(&["ls"]))).is_empty());
    // A filter on a single-object copy is refused, not ignored.
    std::fs::write(s.path().join("f"), "x").unwrap();
    let o = s.ferry(&["cp", "--include", "*.jpg", "f", "k"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn ferry(root: &Path, bucket: &str, args: &[&str]) -> Output {
    Command::new(FERRY)
        .current_dir(root)
        .env_remove("FERRY_BUCKET")
        .arg("--bucket")
        .arg(root.join(bucket))
        .args(args)
        .output()
        .unwrap()
}

fn put(root: &Path, bucket: &str, key: &str) {
    let file = root.join("payload");
    std::fs::write(&file, key).unwrap();
    ok(ferry(root, bucket, &["put", key, file.to_str().unwrap()]));
}

fn status(root: &Path, bucket: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(ferry(root, bucket, &["status", "--json"])).stdout).unwrap()
}

fn remote_files(root: &Path) -> Vec<String> {
    let mut got: Vec<String> = walk(&root.join("remote"))
        .into_iter()
        .filter(|p| !p.starts_with(".ferry"))
        .collect();
    got.sort();
    got
}

#[test]
fn filtered_push_and_pull_leave_the_other_keys_for_a_later_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url]));
    ok(ferry(root, "b", &["init", "--remote", &url]));
    for key in ["p/1.jpg", "p/2.raw", "notes.txt"] {
        put(root, "a", key);
    }
    let o = ok(ferry(root, "a", &["push", "--include", "*.jpg", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["pushed"], 1);
    assert_eq!(remote_files(root), ["p/1.jpg"]);
    assert_eq!(status(root, "a")["dirty"], 2, "the others wait");
    let dry = ok(ferry(
        root,
        "a",
        &["push", "--dry-run", "--exclude", "*.txt"],
    ));
    assert!(stdout(&dry).contains("upload p/2.raw"), "{}", stdout(&dry));
    assert!(!stdout(&dry).contains("notes.txt"), "{}", stdout(&dry));
    ok(ferry(root, "a", &["push"]));
    assert_eq!(remote_files(root), ["notes.txt", "p/1.jpg", "p/2.raw"]);

    // The other replica pulls a part; the journal it skipped is read again.
    ok(ferry(root, "b", &["pull", "--exclude", "p/"]));
    assert_eq!(lines(&ok(ferry(root, "b", &["ls"]))), ["notes.txt"]);
    ok(ferry(
        root,
        "b",
        &["pull", "--filter", "+ *.raw", "--filter", "- *"],
    ));
    assert_eq!(
        lines(&ok(ferry(root, "b", &["ls"]))),
        ["notes.txt", "p/2.raw"]
    );
    ok(ferry(root, "b", &["sync"]));
    assert_eq!(
        lines(&ok(ferry(root, "b", &["ls"]))),
        ["notes.txt", "p/1.jpg", "p/2.raw"]
    );
}

#[test]
fn scope_filter_orphans_what_it_excludes_and_pulls_what_it_includes_again() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    ok(ferry(root, "a", &["init", "--remote", &url]));
    ok(ferry(root, "b", &["init", "--remote", &url]));
    for key in ["p/1.jpg", "p/2.raw", "notes.txt"] {
        put(root, "a", key);
    }
    ok(ferry(root, "a", &["sync"]));
    ok(ferry(root, "b", &["sync"]));

    ok(ferry(root, "b", &["scope", "filter", "--exclude", "*.raw"]));
    assert_eq!(
        lines(&ok(ferry(root, "b", &["scope", "ls"]))),
        ["(everything)", "filter:", "  - *.raw"]
    );
    assert_eq!(
        lines(&ok(ferry(root, "b", &["scope", "filter"]))),
        ["- *.raw"]
    );
    let st = status(root, "b");
    assert_eq!(st["orphan"], 1, "{st}");
    // A new raw object on the remote is not pulled; a jpg is.
    put(root, "a", "p/3.raw");
    put(root, "a", "p/4.jpg");
    ok(ferry(root, "a", &["sync"]));
    ok(ferry(root, "b", &["sync"]));
    assert_eq!(
        lines(&ok(ferry(root, "b", &["ls"]))),
        ["notes.txt", "p/1.jpg", "p/2.raw", "p/4.jpg"]
    );
    // A local change to an orphan is not pushed.
    put(root, "b", "p/2.raw");
    ok(ferry(root, "b", &["sync"]));
    assert_eq!(
        std::fs::read(root.join("remote/p/2.raw")).unwrap(),
        b"p/2.raw"
    );

    let o = ok(ferry(root, "b", &["scope", "filter", "--clear"]));
    assert!(
        stderr(&o).contains("cleared the scope filter"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        lines(&ok(ferry(root, "b", &["scope", "ls"]))),
        ["(everything)"]
    );
    assert_eq!(
        lines(&ok(ferry(root, "b", &["ls"]))),
        ["notes.txt", "p/1.jpg", "p/2.raw", "p/3.raw", "p/4.jpg"]
    );
    assert_eq!(status(root, "b")["orphan"], 0);
}
