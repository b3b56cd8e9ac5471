//! Listing options and pages, shaped like S3's ListObjectsV2.

use crate::index::ObjectMeta;

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
