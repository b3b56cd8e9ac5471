//! Listing options and pages, shaped like S3's ListObjectsV2.

use rusqlite::{params, Connection};

use crate::error::Result;
use crate::store::index::{object_from_row, ObjectMeta, StoredObject, OBJECT_COLUMNS};

/// What to list: a prefix, where to start, how many, and an optional delimiter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this (empty: all keys).
    pub prefix: String,
    /// Only keys (and common prefixes) strictly after this one.
    pub start_after: Option<String>,
    /// At most this many entries (objects plus common prefixes); `None`: all.
    pub limit: Option<usize>,
    /// Group keys that contain this after the prefix into common prefixes.
    pub delimiter: Option<char>,
}

impl ListOptions {
    /// Lists everything under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        ListOptions {
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Sets the key to start after (for the next page).
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Groups keys by `delimiter`, usually `/`.
    pub fn delimiter(mut self, delimiter: char) -> Self {
        self.delimiter = Some(delimiter);
        self
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes (each ending with the delimiter), in order.
    pub common_prefixes: Vec<String>,
    /// Set when the page was cut short: pass it as `start_after` for the next page.
    pub next_start_after: Option<String>,
}

/// One page of a listing, in key order, as S3's ListObjectsV2 would return it;
/// `reveal` turns each row into what the caller may see.
pub(crate) fn list(
    conn: &Connection,
    opts: &ListOptions,
    reveal: &dyn Fn(StoredObject) -> Result<ObjectMeta>,
) -> Result<ListPage> {
    const BATCH: usize = 1000;
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM objects \
         WHERE present = 1 AND key >= ?1 AND key > ?2 ORDER BY key LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let prefix = opts.prefix.as_str();
    let start_after = opts.start_after.clone().unwrap_or_default();
    let limit = opts.limit.unwrap_or(usize::MAX);
    let mut page = ListPage::default();
    // The scan reads keys >= `lower` and > `after`, in key order.
    let mut lower = prefix.to_owned();
    let mut after = start_after.clone();
    let mut emitted = 0usize;
    let mut last: Option<String> = None;
    loop {
        let rows: Vec<StoredObject> = stmt
            .query_map(params![lower, after, BATCH as i64], object_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let fetched = rows.len();
        let mut jump = None;
        for obj in rows {
            let key = obj.meta.key.as_str();
            if !key.starts_with(prefix) {
                return Ok(page);
            }
            let group = opts.delimiter.and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|i| key[..prefix.len() + i + d.len_utf8()].to_owned())
            });
            if let Some(cp) = group {
                // A group equal to `start_after` was the last entry of the previous
                // page; a `start_after` inside a group still lists the group, as S3 does.
                if cp != start_after {
                    if emitted == limit {
                        page.next_start_after = last;
                        return Ok(page);
                    }
                    page.common_prefixes.push(cp.clone());
                    emitted += 1;
                    last = Some(cp.clone());
                }
                // Skip every other key in the group with a fresh query.
                jump = Some(after_group(&cp));
                break;
            }
            if emitted == limit {
                page.next_start_after = last;
                return Ok(page);
            }
            after = key.to_owned();
            last = Some(after.clone());
            page.objects.push(reveal(obj)?);
            emitted += 1;
        }
        match jump {
            Some(next) => lower = next,
            None if fetched < BATCH => return Ok(page),
            None => {}
        }
    }
}

/// The smallest string greater than every string that starts with `group`
/// (which ends with its delimiter): the delimiter replaced by its successor.
fn after_group(group: &str) -> String {
    let mut chars: Vec<char> = group.chars().collect();
    if let Some(last) = chars.pop() {
        let mut code = u32::from(last) + 1;
        let next = loop {
            match char::from_u32(code) {
                Some(c) => break c,
                None => code += 1,
            }
        };
        chars.push(next);
    }
    chars.into_iter().collect()
}
