//! Key rules: each rejection names the rule, and the bucket enforces them.

use ferry::{validate_key, validate_key_bytes, Error, KeyRule, PutOptions, MAX_KEY_LEN};

use crate::{blob_files, new_bucket};

/// Asserts `key` is rejected for `rule` and the message contains `needle`.
fn rejected(key: &str, rule: KeyRule, needle: &str) {
    let err = validate_key(key).expect_err(&format!("{key:?} should be rejected"));
    assert_eq!(err.rule, rule, "rule for {key:?}");
    assert_eq!(err.key, key);
    let text = err.to_string();
    assert!(
        text.contains(needle),
        "message for {key:?} should mention {needle:?}: {text}"
    );
    // The same text reaches callers through the crate's error type.
    let wrapped = Error::from(err);
    assert!(matches!(wrapped, Error::InvalidKey(_)));
    assert!(wrapped.is_invalid_input());
    assert!(wrapped.to_string().contains(needle));
}

#[test]
fn empty_key_is_rejected_as_empty() {
    rejected("", KeyRule::Empty, "empty");
}

#[test]
fn key_of_1025_bytes_is_rejected_and_1024_accepted() {
    assert_eq!(MAX_KEY_LEN, 1024);
    let ok = "a".repeat(1024);
    assert_eq!(validate_key(&ok), Ok(()));
    let long = "a".repeat(1025);
    rejected(&long, KeyRule::TooLong { len: 1025 }, "1024");
    rejected(&long, KeyRule::TooLong { len: 1025 }, "1025 bytes");
}

#[test]
fn key_length_counts_utf8_bytes_not_chars() {
    // 512 two-byte chars: 1024 bytes, accepted.
    let two = "é".repeat(512);
    assert_eq!(two.len(), 1024);
    assert_eq!(validate_key(&two), Ok(()));
    // 256 four-byte chars: 1024 bytes, accepted.
    let four = "😀".repeat(256);
    assert_eq!(four.len(), 1024);
    assert_eq!(validate_key(&four), Ok(()));
    // 513 chars but 1025 bytes: rejected, although far below 1024 chars.
    let over = format!("{}a", "é".repeat(512));
    assert_eq!(over.chars().count(), 513);
    rejected(&over, KeyRule::TooLong { len: 1025 }, "1024");
    let emoji_over = "😀".repeat(257);
    rejected(&emoji_over, KeyRule::TooLong { len: 1028 }, "1024");
}

#[test]
fn nul_and_control_characters_are_rejected_as_control() {
    for (key, ch, offset) in [
        ("a\0b", '\0', 1),
        ("\0", '\0', 0),
        ("line\nbreak", '\n', 4),
        ("tab\there", '\t', 3),
        ("del\x7f", '\x7f', 3),
        ("é\u{85}x", '\u{85}', 2),
    ] {
        rejected(key, KeyRule::ControlCharacter { ch, offset }, "control");
    }
    let err = validate_key("a\0b").unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert!(err.to_string().contains("U+0000"), "{err}");
}

#[test]
fn dot_segments_are_rejected_naming_the_segment() {
    rejected(
        "a/./b",
        KeyRule::DotSegment {
            segment: ".".into(),
        },
        "`.` segment",
    );
    rejected(
        "../x",
        KeyRule::DotSegment {
            segment: "..".into(),
        },
        "`..`",
    );
    rejected(
        "a/..",
        KeyRule::DotSegment {
            segment: "..".into(),
        },
        "`..` segment",
    );
    rejected(
        "a/../b",
        KeyRule::DotSegment {
            segment: "..".into(),
        },
        "`..`",
    );
    rejected(
        ".",
        KeyRule::DotSegment {
            segment: ".".into(),
        },
        "`.` segment",
    );
    rejected(
        "..",
        KeyRule::DotSegment {
            segment: "..".into(),
        },
        "`..`",
    );
    // Dots inside a segment are fine.
    for ok in ["a.b", "..a", "a/...", ".hidden", "a/.b/c", "a..b/c"] {
        assert_eq!(validate_key(ok), Ok(()), "{ok:?} should be accepted");
    }
}

#[test]
fn leading_slash_is_rejected() {
    rejected("/a", KeyRule::LeadingSlash, "start with `/`");
    rejected("/", KeyRule::LeadingSlash, "start with `/`");
    // A slash elsewhere (even a trailing or doubled one) is allowed.
    for ok in ["a/", "a//b", "a/b/"] {
        assert_eq!(validate_key(ok), Ok(()), "{ok:?} should be accepted");
    }
}

#[test]
fn reserved_prefix_is_rejected_only_at_the_start() {
    assert_eq!(ferry::RESERVED_PREFIX, ".ferry/");
    rejected(".ferry/x", KeyRule::Reserved, "reserved");
    rejected(".ferry/", KeyRule::Reserved, ".ferry/");
    for ok in [".ferryx", ".ferry", "a/.ferry/x", "x.ferry/y"] {
        assert_eq!(validate_key(ok), Ok(()), "{ok:?} should be accepted");
    }
}

#[test]
fn invalid_utf8_bytes_are_rejected_as_not_utf8() {
    let err = validate_key_bytes(b"abc\xff\xfe").unwrap_err();
    assert_eq!(err.rule, KeyRule::NotUtf8);
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // A truncated multibyte sequence is also invalid.
    assert_eq!(
        validate_key_bytes(b"\xe6\x97").unwrap_err().rule,
        KeyRule::NotUtf8
    );
    // Valid bytes come back as the same string, and still face the other rules.
    assert_eq!(validate_key_bytes("日本/語".as_bytes()), Ok("日本/語"));
    assert_eq!(
        validate_key_bytes(b"/x").unwrap_err().rule,
        KeyRule::LeadingSlash
    );
    assert_eq!(validate_key_bytes(b"").unwrap_err().rule, KeyRule::Empty);
}

#[test]
fn ordinary_keys_are_accepted() {
    for ok in [
        "a",
        "a/b/c",
        "données/日本語/😀.txt",
        "with space",
        "a-b_c.d~e!",
    ] {
        assert_eq!(validate_key(ok), Ok(()), "{ok:?} should be accepted");
    }
}

/// Bad keys covering every rule.
fn bad_keys() -> Vec<(String, &'static str)> {
    vec![
        (String::new(), "empty"),
        ("a".repeat(1025), "1024"),
        ("a\0b".into(), "control"),
        ("a\nb".into(), "control"),
        ("a\x7f".into(), "control"),
        ("a\u{85}".into(), "control"),
        ("a/./b".into(), "`.`"),
        ("../x".into(), "`..`"),
        ("a/..".into(), "`..`"),
        (".".into(), "`.`"),
        ("/a".into(), "start with `/`"),
        (".ferry/x".into(), "reserved"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_operations_reject_bad_keys_and_write_nothing() {
    let (tmp, bucket) = new_bucket().await;
    let big = vec![7u8; 100 * 1024];
    for (key, needle) in bad_keys() {
        let check = |op: &str, result: Result<(), Error>| match result {
            Err(Error::InvalidKey(e)) => {
                assert_eq!(e.key, key, "{op}");
                assert!(e.to_string().contains(needle), "{op} {key:?}: {e}");
            }
            other => panic!("{op} {key:?}: expected InvalidKey, got {other:?}"),
        };
        check(
            "put",
            bucket
                .put(&key, "data", PutOptions::default())
                .await
                .map(drop),
        );
        check(
            "put large",
            bucket
                .put(&key, big.clone(), PutOptions::default())
                .await
                .map(drop),
        );
        check("get", bucket.get(&key).await.map(drop));
        check("get_bytes", bucket.get_bytes(&key).await.map(drop));
        check("head", bucket.head(&key).await.map(drop));
        check("exists", bucket.exists(&key).await.map(drop));
        check("delete", bucket.delete(&key).await.map(drop));
    }
    assert!(
        bucket.list_all("").await.unwrap().is_empty(),
        "nothing may be listed"
    );
    assert!(
        blob_files(bucket.dir()).is_empty(),
        "no blob may be written"
    );
    assert!(
        crate::tmp_files(bucket.dir()).is_empty(),
        "no temp file may be left"
    );

    // Nothing reached the index at all, not even as a deleted row or outbox entry.
    let dir = bucket.dir().to_owned();
    drop(bucket);
    let conn = rusqlite::Connection::open(dir.join(ferry::INDEX_FILE)).unwrap();
    for table in ["objects", "small_blobs", "outbox"] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "table {table} must stay empty");
    }
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_accepts_keys_at_the_limits() {
    let (_tmp, bucket) = new_bucket().await;
    let longest = "😀".repeat(256);
    for key in [longest.as_str(), ".ferryx", "a/.ferry/x", "a//b", "a/"] {
        bucket
            .put(key, key.to_owned(), PutOptions::default())
            .await
            .unwrap();
        let (meta, data) = bucket.get_bytes(key).await.unwrap();
        assert_eq!(meta.key, key);
        assert_eq!(&data[..], key.as_bytes());
    }
    assert_eq!(bucket.list_all("").await.unwrap().len(), 5);
}
