//! Include and exclude rules over keys, in rclone's filter syntax.
//!
//! A [`Filter`] is an ordered list of rules (`+ PATTERN` includes,
//! `- PATTERN` excludes); the first rule that matches decides, and a key no
//! rule matches is included. Patterns are rclone's globs:
//!
//! - `*` matches within one path segment, `**` across segments, `?` one
//!   character other than `/`, `[a-z]` a class, `{jpg,png}` alternatives,
//!   `\` escapes the next character;
//! - a pattern that starts with `/` is anchored at the root (the key's
//!   start); otherwise it matches the end of the key at a segment boundary
//!   (`*.jpg` matches `a/b/c.jpg`);
//! - a pattern that ends with `/` names folders: excluding `tmp/` excludes
//!   everything under any folder named `tmp`.
//!
//! Keys are judged as rclone judges files in a tree it walks: a key is
//! included when the file rules include it *and* every folder above it is
//! included by the folder rules. Folder rules are the patterns ending in
//! `/` and the ones containing `**`, plus, for each include, the folders
//! its pattern can lie in (so `--include '/a/*.jpg'` walks only `a/`).
//! `--include` adds an implicit `- /**` at the end, as in rclone. The
//! expected results in the CLI's filter test were produced by rclone 1.60.
//!
//! The rules are kept as the lines of an rclone filter file (`+ pat`,
//! `- pat`), which is also how a filter is stored in the index.

use regex_lite::Regex;

/// A filter pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad filter pattern {pattern:?}: {reason}")]
pub struct FilterError {
    /// The pattern or rule line.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Rule {
    include: bool,
    regex: Regex,
}

/// Ordered include/exclude rules (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    lines: Vec<String>,
    file_rules: Vec<Rule>,
    dir_rules: Vec<Rule>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.lines == other.lines
    }
}

impl Eq for Filter {}

impl Filter {
    /// The filter of rclone's `--include`, `--exclude` and `--filter`
    /// flags (and the lines of `--filter-from` files, as `filters`): the
    /// includes first, then the excludes, then the filter rules, then, when
    /// there were includes, `- /**`. Rclone applies them in this order too.
    pub fn new(
        includes: &[String],
        excludes: &[String],
        filters: &[String],
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for p in includes {
            f.add(true, p)?;
        }
        for p in excludes {
            f.add(false, p)?;
        }
        for line in filters {
            f.add_rule(line)?;
        }
        if !includes.is_empty() {
            f.add(false, "/**")?;
        }
        Ok(f)
    }

    /// Only the keys starting with `prefix` (glob characters in it are
    /// taken literally).
    pub fn prefix(prefix: &str) -> Filter {
        let mut glob = String::from("/");
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',') {
                glob.push('\\');
            }
            glob.push(c);
        }
        glob.push_str("**");
        let mut f = Filter::default();
        // An escaped literal and `**` always compile.
        if f.add(true, &glob).is_err() || f.add(false, "/**").is_err() {
            return Filter::default();
        }
        f
    }

    /// A filter from rule lines (`+ pat`, `- pat`, `!` clears the rules
    /// before it), as [`Filter::lines`] returns them.
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for line in lines {
            f.add_rule(line.as_ref())?;
        }
        Ok(f)
    }

    /// The rule lines of an rclone filter file: blank lines and comments
    /// (`#`, `;`) are dropped, the rest trimmed.
    pub fn file_lines(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .map(str::to_owned)
            .collect()
    }

    /// The rules, in order, as filter-file lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// True when there are no rules (everything is included).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds one rule line: `+ pattern`, `- pattern`, or `!` (clear).
    pub fn add_rule(&mut self, line: &str) -> Result<(), FilterError> {
        if line == "!" {
            *self = Filter::default();
            return Ok(());
        }
        if let Some(p) = line.strip_prefix("+ ") {
            return self.add(true, p);
        }
        if let Some(p) = line.strip_prefix("- ") {
            return self.add(false, p);
        }
        Err(FilterError {
            pattern: line.to_owned(),
            reason: "a rule is `+ PATTERN`, `- PATTERN` or `!`".into(),
        })
    }

    /// Adds an include (`include`) or exclude rule for `pattern`.
    pub fn add(&mut self, include: bool, pattern: &str) -> Result<(), FilterError> {
        if pattern.is_empty() {
            return Err(FilterError {
                pattern: String::new(),
                reason: "the pattern is empty".into(),
            });
        }
        let mut glob = pattern.to_owned();
        let mut dir_rule = glob.ends_with('/');
        let mut file_rule = !dir_rule;
        // Excluding a folder excludes everything under it.
        if dir_rule && !include {
            glob.push_str("**");
        }
        if glob.contains("**") {
            dir_rule = true;
            file_rule = true;
        }
        let regex = glob_regex(&glob).map_err(|reason| FilterError {
            pattern: pattern.to_owned(),
            reason,
        })?;
        if file_rule {
            self.file_rules.push(Rule {
                include,
                regex: regex.clone(),
            });
            // The folders an included key can lie in must be walked.
            if include || glob == "*" {
                for dir_glob in dir_globs(&glob) {
                    if dir_glob == "/" {
                        continue;
                    }
                    let regex = glob_regex(&dir_glob).map_err(|reason| FilterError {
                        pattern: pattern.to_owned(),
                        reason,
                    })?;
                    self.dir_rules.push(Rule { include, regex });
                }
            }
        }
        if dir_rule {
            self.dir_rules.push(Rule { include, regex });
        }
        self.lines
            .push(format!("{} {pattern}", if include { '+' } else { '-' }));
        Ok(())
    }

    /// Whether `key` (a path relative to where the filter applies) is
    /// included.
    pub fn matches(&self, key: &str) -> bool {
        if self.lines.is_empty() {
            return true;
        }
        for (i, c) in key.char_indices() {
            if c == '/' && !self.includes_dir(&key[..i]) {
                return false;
            }
        }
        first_match(&self.file_rules, key)
    }

    /// Whether the folder `dir` (no trailing `/`) is walked: false means
    /// nothing under it is included.
    pub fn includes_dir(&self, dir: &str) -> bool {
        if self.dir_rules.is_empty() {
            return true;
        }
        let dir = dir.trim_matches('/');
        if dir.is_empty() {
            return true;
        }
        first_match(&self.dir_rules, &format!("{dir}/"))
    }
}

fn first_match(rules: &[Rule], path: &str) -> bool {
    rules
        .iter()
        .find(|r| r.regex.is_match(path))
        .is_none_or(|r| r.include)
}

/// rclone's glob to regular expression translation.
fn glob_regex(glob: &str) -> Result<Regex, String> {
    let mut re = String::with_capacity(glob.len() * 2 + 8);
    let body = match glob.strip_prefix('/') {
        Some(rest) => {
            re.push('^');
            rest
        }
        None => {
            re.push_str("(^|/)");
            glob
        }
    };
    let mut stars = 0;
    let mut in_braces = false;
    let mut in_brackets = 0u32;
    let mut escaped = false;
    let flush = |re: &mut String, stars: &mut u32| -> Result<(), String> {
        match *stars {
            0 => {}
            1 => re.push_str("[^/]*"),
            2 => re.push_str(".*"),
            _ => return Err("too many stars (at most `**`)".into()),
        }
        *stars = 0;
        Ok(())
    };
    for c in body.chars() {
        if escaped {
            re.push_str(&regex_lite::escape(&c.to_string()));
            escaped = false;
            continue;
        }
        if c != '*' {
            flush(&mut re, &mut stars)?;
        }
        if in_brackets > 0 {
            re.push(c);
            match c {
                '[' => in_brackets += 1,
                ']' => in_brackets -= 1,
                _ => {}
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '*' => stars += 1,
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                in_brackets += 1;
            }
            ']' => return Err("`]` without `[`".into()),
            '{' if in_braces => return Err("`{` inside `{...}`".into()),
            '{' => {
                in_braces = true;
                re.push('(');
            }
            '}' if !in_braces => return Err("`}` without `{`".into()),
            '}' => {
                in_braces = false;
                re.push(')');
            }
            ',' if in_braces => re.push('|'),
            _ => re.push_str(&regex_lite::escape(&c.to_string())),
        }
    }
    flush(&mut re, &mut stars)?;
    if escaped {
        return Err("`\\` at the end".into());
    }
    if in_brackets > 0 {
        return Err("`[` without `]`".into());
    }
    if in_braces {
        return Err("`{` without `}`".into());
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

/// The folder globs a file glob can lie under (rclone's `globToDirGlobs`,
/// as of 1.60).
fn dir_globs(glob: &str) -> Vec<String> {
    // `/` or `**` inside braces: any folder may hold a match.
    if brace_too_hard(glob) {
        return vec!["/**".into()];
    }
    let mut glob = squash_slashes(glob);
    let mut out: Vec<String> = Vec::new();
    loop {
        let slash = glob.rfind('/');
        let stars = glob.rfind("**");
        let (at, what) = match (slash, stars) {
            (Some(i), Some(j)) if i > j => (i, ""),
            (_, Some(j)) => (j, "**"),
            (Some(i), None) => (i, ""),
            (None, None) => {
                if out.is_empty() {
                    out.push("/**".into());
                }
                break;
            }
        };
        glob.truncate(at);
        let next = format!("{glob}{what}/");
        if out.last() != Some(&next) {
            out.push(next);
        }
    }
    out
}

fn squash_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// True when a `{...}` group holds `/` or `**`.
fn brace_too_hard(glob: &str) -> bool {
    let mut group: Option<String> = None;
    for c in glob.chars() {
        match (c, &mut group) {
            ('{', _) => group = Some(String::new()),
            ('}', Some(g)) => {
                if g.contains('/') || g.contains("**") {
                    return true;
                }
                group = None;
            }
            (c, Some(g)) => g.push(c),
            _ => {}
        }
    }
    false
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.lines.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        Filter::from_lines(&lines).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keep(f: &Filter, keys: &[&str]) -> Vec<String> {
        keys.iter()
            .filter(|k| f.matches(k))
            .map(|k| (*k).to_owned())
            .collect()
    }

    #[test]
    fn dir_globs_follow_rclone() {
        assert_eq!(dir_globs("*.jpg"), ["/**"]);
        assert_eq!(dir_globs("/a/b/*.jpg"), ["/a/b/", "/a/", "/"]);
        assert_eq!(dir_globs("a/**/x"), ["a/**/", "a/"]);
        assert_eq!(dir_globs("{a/b,c}"), ["/**"]);
    }

    #[test]
    fn unanchored_include_walks_only_the_folders_it_names() {
        let f = Filter::new(&["a/*.jpg".into()], &[], &[]).unwrap();
        assert_eq!(keep(&f, &["a/p.jpg", "x/a/p.jpg", "a/q.txt"]), ["a/p.jpg"]);
    }

    #[test]
    fn a_prefix_filter_takes_glob_characters_literally() {
        let f = Filter::prefix("a*[b]{c,d}/x ");
        assert_eq!(
            keep(
                &f,
                &[
                    "a*[b]{c,d}/x y",
                    "aX[b]{c,d}/x y",
                    "a*[b]{c,d}/z",
                    "a*[b]{c,d}/x "
                ]
            ),
            ["a*[b]{c,d}/x y", "a*[b]{c,d}/x "]
        );
        let f = Filter::prefix("photos");
        assert_eq!(
            keep(&f, &["photos/a", "photos2/b", "photo"]),
            ["photos/a", "photos2/b"]
        );
    }

    #[test]
    fn lines_round_trip() {
        let f = Filter::new(&["*.jpg".into()], &["tmp/".into()], &["- *.raw".into()]).unwrap();
        assert_eq!(f.lines(), ["+ *.jpg", "- tmp/", "- *.raw", "- /**"]);
        let g = Filter::from_lines(f.lines()).unwrap();
        let keys = ["a.jpg", "tmp/a.jpg", "b/c.raw", "d.txt"];
        assert_eq!(keep(&f, &keys), keep(&g, &keys));
    }
}
