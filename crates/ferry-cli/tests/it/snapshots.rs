//! The exact text people read, pinned with insta snapshots
//! (`tests/it/snapshots/`): help, plans, status, diffs and errors. A
//! change of wording shows as a snapshot diff in review.

use std::process::Command;

use crate::support::{ferry_in as ferry, stderr, stdout, Scratch, FERRY};

#[test]
fn help_lists_every_command_with_a_one_line_summary() {
    let o = Command::new(FERRY).arg("--help").output().unwrap();
    assert!(o.status.success());
    insta::assert_snapshot!("help", stdout(&o));
}

#[test]
fn status_plan_and_diff_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let url = format!("file://{}", root.join("remote").display());
    assert!(ferry(root, "a", &["init", "-q", "--remote", &url], None)
        .status
        .success());
    assert!(ferry(root, "b", &["init", "-q", "--remote", &url], None)
        .status
        .success());
    for key in ["docs/a.txt", "docs/b.txt", "old.txt"] {
        assert!(ferry(root, "a", &["put", "-q", key], Some(key.as_bytes()))
            .status
            .success());
    }
    assert!(ferry(root, "a", &["sync", "-q"], None).status.success());
    assert!(ferry(root, "b", &["sync", "-q"], None).status.success());
    assert!(ferry(root, "b", &["put", "-q", "docs/a.txt"], Some(b"b's"))
        .status
        .success());
    assert!(ferry(root, "b", &["sync", "-q"], None).status.success());
    assert!(ferry(root, "a", &["put", "-q", "docs/a.txt"], Some(b"a's"))
        .status
        .success());
    assert!(ferry(root, "a", &["put", "-q", "new.txt"], Some(b"new"))
        .status
        .success());
    assert!(ferry(root, "a", &["rm", "-q", "old.txt"], None)
        .status
        .success());

    let o = ferry(root, "a", &["sync", "--dry-run"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    insta::assert_snapshot!("dry_run_plan", stdout(&o));
    let o = ferry(root, "a", &["diff"], None);
    insta::assert_snapshot!("diff", format!("{}---\n{}", stdout(&o), stderr(&o)));
    let o = ferry(root, "a", &["status"], None);
    let text = stdout(&o).replace(&url, "file:///REMOTE");
    // The time of the last full listing changes from run to run.
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("full listing:   ") {
            Some(rest) => match rest.split_once(' ') {
                Some((_, after)) => format!("full listing:   TIME {after}\n"),
                None => "full listing:   TIME\n".to_owned(),
            },
            None => format!("{l}\n"),
        })
        .collect();
    insta::assert_snapshot!("status", text);
}

#[test]
fn error_messages_and_hints() {
    let s = Scratch::new();
    let mut all = String::new();
    for args in [
        &["put", "a//b"][..],
        &["put", "../x"],
        &["get", "missing"],
        &["put", "k", "--meta", "ferry-hash=1"],
        &["cp", "-r", "--include", "a{b", ".", "t/"],
        &["sync"],
    ] {
        let o = s.ferry_stdin(args, b"x");
        all.push_str(&format!(
            "$ ferry {}\nexit {:?}\n{}\n",
            args.join(" "),
            o.status.code(),
            stderr(&o)
        ));
    }
    insta::assert_snapshot!("errors", all);
}
