//! Listing: order, prefixes, pagination and S3-style delimiters.

use ferry::{Bucket, ListOptions, ListPage, PutOptions};

use crate::new_bucket;

async fn put_keys(bucket: &Bucket, keys: &[&str]) {
    for key in keys {
        bucket
            .put(key, key.to_string(), PutOptions::default())
            .await
            .unwrap();
    }
}

fn keys_of(page: &ListPage) -> Vec<&str> {
    page.objects.iter().map(|m| m.key.as_str()).collect()
}

/// One listing entry: an object key or a common prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Object(String),
    Prefix(String),
}

/// Walks every page of `opts` (with its limit), checking each page's size,
/// and returns all entries in the order S3 would present them.
async fn walk(bucket: &Bucket, opts: ListOptions) -> (Vec<Entry>, usize) {
    let limit = opts.limit.expect("walk needs a limit");
    let mut out = Vec::new();
    let mut pages = 0;
    let mut opts = opts;
    loop {
        let page = bucket.list(opts.clone()).await.unwrap();
        pages += 1;
        let n = page.objects.len() + page.common_prefixes.len();
        assert!(n <= limit, "page of {n} entries exceeds limit {limit}");
        let mut entries: Vec<Entry> = page
            .objects
            .iter()
            .map(|m| Entry::Object(m.key.clone()))
            .chain(
                page.common_prefixes
                    .iter()
                    .map(|p| Entry::Prefix(p.clone())),
            )
            .collect();
        entries.sort_by(|a, b| name(a).cmp(name(b)));
        match page.next_start_after {
            Some(next) => {
                assert_eq!(n, limit, "a cut-short page must be full");
                let last = entries.last().map(|e| name(e).to_owned());
                assert_eq!(
                    last.as_deref(),
                    Some(next.as_str()),
                    "next_start_after is the last entry"
                );
                out.extend(entries);
                opts.start_after = Some(next);
            }
            None => {
                out.extend(entries);
                return (out, pages);
            }
        }
        assert!(pages < 10_000, "listing does not terminate");
    }
}

fn name(e: &Entry) -> &str {
    match e {
        Entry::Object(k) | Entry::Prefix(k) => k,
    }
}

fn objects(keys: &[&str]) -> Vec<Entry> {
    keys.iter().map(|k| Entry::Object(k.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_in_utf8_byte_order() {
    let (_tmp, bucket) = new_bucket().await;
    // Inserted out of order. Byte order puts uppercase before lowercase, '/'
    // (0x2F) before '0' (0x30), and multibyte chars after ASCII in the order
    // of their UTF-8 bytes: é (C3 A9) < 日 (E6 97 A5) < Ａ (EF BC A1) < 😀 (F0 9F 98 80).
    let keys = [
        "b", "a0", "a/b", "B", "é", "😀", "Ａ", "a", "z", "~", "日本",
    ];
    put_keys(&bucket, &keys).await;
    let listed: Vec<String> = bucket
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(listed, expected);
    assert_eq!(
        listed,
        ["B", "a", "a/b", "a0", "b", "z", "~", "é", "日本", "Ａ", "😀"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_prefix() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(
        &bucket,
        &["a", "ab", "abc", "abd/x", "ac", "b", "a/1", "ab/2"],
    )
    .await;
    let listed = |p: &'static str| {
        let bucket = bucket.clone();
        async move {
            bucket
                .list_all(p)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("ab").await, ["ab", "ab/2", "abc", "abd/x"]);
    assert_eq!(listed("ab/").await, ["ab/2"]);
    assert_eq!(listed("abc").await, ["abc"]);
    assert_eq!(listed("b").await, ["b"]);
    assert!(listed("zzz").await.is_empty());
    assert!(listed("0").await.is_empty());
    assert_eq!(listed("").await.len(), 8);
    // The page object is consistent with list_all.
    let page = bucket.list(ListOptions::prefix("a/")).await.unwrap();
    assert_eq!(keys_of(&page), ["a/1"]);
    assert!(page.common_prefixes.is_empty());
    assert_eq!(page.next_start_after, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_2500_keys_exactly_once_in_order() {
    let (_tmp, bucket) = new_bucket().await;
    let mut keys: Vec<String> = (0..2500)
        .map(|i| format!("k/{:05}", (i * 7919) % 2500))
        .collect();
    // A few keys outside the prefix must never appear.
    for key in ["j", "k", "k0", "l/1"] {
        bucket.put(key, "x", PutOptions::default()).await.unwrap();
    }
    // Concurrent puts so the writer groups them.
    let mut tasks = Vec::new();
    for chunk in keys.chunks(250) {
        let bucket = bucket.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for key in chunk {
                bucket
                    .put(&key, Vec::from(key.as_bytes()), PutOptions::default())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2500);
    let expected: Vec<Entry> = keys.iter().map(|k| Entry::Object(k.clone())).collect();

    for (limit, pages) in [(1000, 3), (7, 358), (2500, 1), (1250, 2)] {
        let (got, n) = walk(&bucket, ListOptions::prefix("k/").limit(limit)).await;
        assert_eq!(got.len(), 2500, "limit {limit}");
        assert!(
            got == expected,
            "limit {limit}: keys missing, repeated or out of order"
        );
        assert_eq!(n, pages, "limit {limit}: page count");
    }
    // start_after in the middle, not itself a key.
    let page = bucket
        .list(ListOptions::prefix("k/").start_after("k/01234x").limit(3))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["k/01235", "k/01236", "k/01237"]);
    assert_eq!(page.next_start_after.as_deref(), Some("k/01237"));
    // start_after past the end, and before the prefix.
    let page = bucket
        .list(ListOptions::prefix("k/").start_after("k/99999"))
        .await
        .unwrap();
    assert!(page.objects.is_empty());
    assert_eq!(page.next_start_after, None);
    let page = bucket
        .list(ListOptions::prefix("k/").start_after("a").limit(2))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["k/00000", "k/00001"]);
    // No limit: everything on one page.
    let page = bucket.list(ListOptions::prefix("k/")).await.unwrap();
    assert_eq!(page.objects.len(), 2500);
    assert_eq!(page.next_start_after, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_final_page_has_no_next_marker() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(&bucket, &["1", "2", "3", "4"]).await;
    let page = bucket.list(ListOptions::default().limit(2)).await.unwrap();
    assert_eq!(keys_of(&page), ["1", "2"]);
    assert_eq!(page.next_start_after.as_deref(), Some("2"));
    let page = bucket
        .list(ListOptions::default().limit(2).start_after("2"))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["3", "4"]);
    assert_eq!(
        page.next_start_after, None,
        "nothing is left, so the page is not cut short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delimiter_groups_common_prefixes_like_s3() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(&bucket, &["a/1", "a/2", "b/c/d", "b/e", "c"]).await;

    let page = bucket
        .list(ListOptions::prefix("").delimiter('/'))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["c"]);
    assert_eq!(page.common_prefixes, ["a/", "b/"]);
    assert_eq!(page.next_start_after, None);

    let page = bucket
        .list(ListOptions::prefix("b/").delimiter('/'))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["b/e"]);
    assert_eq!(page.common_prefixes, ["b/c/"]);

    let page = bucket
        .list(ListOptions::prefix("b/c/").delimiter('/'))
        .await
        .unwrap();
    assert_eq!(keys_of(&page), ["b/c/d"]);
    assert!(page.common_prefixes.is_empty());

    // A prefix that is not a whole segment groups on the rest of the key.
    let page = bucket
        .list(ListOptions::prefix("b").delimiter('/'))
        .await
        .unwrap();
    assert!(page.objects.is_empty());
    assert_eq!(page.common_prefixes, ["b/"]);

    // Without a delimiter everything is an object.
    let page = bucket.list(ListOptions::prefix("")).await.unwrap();
    assert_eq!(keys_of(&page), ["a/1", "a/2", "b/c/d", "b/e", "c"]);
    assert!(page.common_prefixes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_across_common_prefixes_gives_one_per_page() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(&bucket, &["a/1", "a/2", "b/c/d", "b/e", "c"]).await;

    let opts = |after: Option<&str>| ListOptions {
        prefix: String::new(),
        start_after: after.map(str::to_owned),
        limit: Some(1),
        delimiter: Some('/'),
    };
    let p1 = bucket.list(opts(None)).await.unwrap();
    assert!(p1.objects.is_empty());
    assert_eq!(p1.common_prefixes, ["a/"]);
    assert_eq!(p1.next_start_after.as_deref(), Some("a/"));

    let p2 = bucket.list(opts(Some("a/"))).await.unwrap();
    assert!(p2.objects.is_empty());
    assert_eq!(p2.common_prefixes, ["b/"]);
    assert_eq!(p2.next_start_after.as_deref(), Some("b/"));

    let p3 = bucket.list(opts(Some("b/"))).await.unwrap();
    assert_eq!(keys_of(&p3), ["c"]);
    assert!(p3.common_prefixes.is_empty());
    assert_eq!(p3.next_start_after, None);

    // The generic walker agrees, for several page sizes.
    let all = vec![
        Entry::Prefix("a/".into()),
        Entry::Prefix("b/".into()),
        Entry::Object("c".into()),
    ];
    for limit in [1, 2, 3, 10] {
        let (got, _) = walk(&bucket, ListOptions::prefix("").delimiter('/').limit(limit)).await;
        assert_eq!(got, all, "limit {limit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delimiter_pagination_over_many_groups_and_objects() {
    let (_tmp, bucket) = new_bucket().await;
    // 30 groups of 40 keys each (more than one index batch in total),
    // interleaved with plain objects.
    let mut expected = Vec::new();
    for g in 0..30 {
        let group = format!("d{g:02}/");
        for i in 0..40 {
            let key = format!("{group}{i:02}");
            bucket.put(&key, "x", PutOptions::default()).await.unwrap();
        }
        expected.push(Entry::Prefix(group));
        let plain = format!("d{g:02}.txt");
        bucket
            .put(&plain, "x", PutOptions::default())
            .await
            .unwrap();
        expected.push(Entry::Object(plain));
    }
    expected.sort_by(|a, b| name(a).cmp(name(b)));
    for limit in [1, 4, 7, 60, 1000] {
        let (got, _) = walk(&bucket, ListOptions::prefix("").delimiter('/').limit(limit)).await;
        assert_eq!(got, expected, "limit {limit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_objects_are_not_listed() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(&bucket, &["a/1", "a/2", "b/1", "c"]).await;
    bucket.delete("a/1").await.unwrap();
    bucket.delete("c").await.unwrap();
    let listed: Vec<String> = bucket
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["a/2", "b/1"]);
    // A group whose every key is deleted is no common prefix.
    bucket.delete("b/1").await.unwrap();
    let page = bucket
        .list(ListOptions::prefix("").delimiter('/'))
        .await
        .unwrap();
    assert_eq!(page.common_prefixes, ["a/"]);
    assert!(page.objects.is_empty());
    // Paged listing skips deleted keys too.
    let (got, _) = walk(&bucket, ListOptions::prefix("").limit(1)).await;
    assert_eq!(got, objects(&["a/2"]));
    // Re-created keys come back.
    bucket
        .put("c", "again", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(bucket.list_all("").await.unwrap().len(), 2);
}

#[tokio::test]
async fn start_after_inside_a_group_still_lists_the_group() {
    let (_tmp, bucket) = new_bucket().await;
    put_keys(&bucket, &["a/1", "a/2", "b"]).await;
    let page = bucket
        .list(ListOptions::prefix("").delimiter('/').start_after("a/1"))
        .await
        .unwrap();
    assert_eq!(page.common_prefixes, ["a/"]);
    assert_eq!(keys_of(&page), ["b"]);
    let page = bucket
        .list(ListOptions::prefix("").delimiter('/').start_after("a/"))
        .await
        .unwrap();
    assert!(page.common_prefixes.is_empty());
    assert_eq!(keys_of(&page), ["b"]);
}
