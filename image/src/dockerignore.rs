//! `.dockerignore`: which files of a build context COPY and ADD may not see.
//!
//! Docker's rules: one pattern per line, `#` comments, paths relative to the context root
//! (a leading `/` is ignored), `*` and `?` within one path segment, `[...]` classes, `**`
//! for any number of segments, `!` re-includes. The last pattern that matches decides, and a
//! pattern that matches a directory matches everything under it. The same glob matching
//! picks COPY sources with wildcards ([`glob_match`]).

/// The parsed patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    segments: Vec<String>,
    exclude: bool,
}

impl DockerIgnore {
    /// Parse the file's text; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> DockerIgnore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (exclude, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (false, rest.trim()),
                    None => (true, line),
                };
                let segments = clean(pattern);
                (!segments.is_empty()).then_some(Rule { segments, exclude })
            })
            .collect();
        DockerIgnore { rules }
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut excluded = false;
        for rule in &self.rules {
            // The path itself or one of its parent directories.
            let matches = (1..=path.len()).any(|n| segments_match(&rule.segments, &path[..n]));
            if matches {
                excluded = rule.exclude;
            }
        }
        excluded
    }

    /// Whether some `!` rule could re-include a path under `dir` (an excluded directory
    /// must then still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| !r.exclude)
    }
}

/// `path` split into segments, `.` and empty segments dropped, `..` applied.
fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_owned()),
        }
    }
    out
}

/// Whether the whole of `path` (relative, `/`-separated) matches `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = clean(pattern);
    let path = clean(path);
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    segments_match(&pattern, &path)
}

/// Whether `pattern` has wildcard characters.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                segment_match(first.as_bytes(), segment.as_bytes())
                    && segments_match(rest, path_rest)
            }
            None => false,
        },
    }
}

/// One segment: `*` (any run), `?` (one byte), `[abc]`, `[a-z]`, `[!a]`/`[^a]`, `\x`.
fn segment_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| segment_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && segment_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            match class(rest, c) {
                Some((matched, after)) => matched && segment_match(after, name_rest),
                // No closing bracket: a literal '['.
                None => c == b'[' && segment_match(rest, name_rest),
            }
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && segment_match(&rest[1..], &name[1..])
        }
        Some((&p, rest)) => name.first() == Some(&p) && segment_match(rest, &name[1..]),
    }
}

/// Whether `c` is in the class that starts at `pattern` (after `[`), and the pattern after
/// the closing `]`; `None` without a closing `]`.
fn class(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut rest) = match pattern.first() {
        Some(b'!' | b'^') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match rest {
            [] => return None,
            [b']', after @ ..] if !first => return Some((matched != negated, after)),
            [lo, b'-', hi, after @ ..] if *hi != b']' => {
                matched |= (*lo..=*hi).contains(&c);
                rest = after;
            }
            [x, after @ ..] => {
                matched |= *x == c;
                rest = after;
            }
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "dir/a.txt"), "* stays in one segment");
        assert!(glob_match("**/*.txt", "dir/sub/a.txt"));
        assert!(glob_match("**/*.txt", "a.txt"), "** may be no segment");
        assert!(glob_match("dir/**", "dir/a/b"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("/lead/./x/../y", "lead/y"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
        assert!(is_glob("src/*.rs") && !is_glob("src/main.rs"));
    }

    #[test]
    fn last_match_wins_and_directories_cover_their_contents() {
        let ignore = DockerIgnore::parse(
            "# build output\n/target\n*.log\n!keep.log\n**/secret*\ndocs\n!docs/README.md\n\n",
        );
        assert!(ignore.is_excluded("target"));
        assert!(
            ignore.is_excluded("target/debug/app"),
            "a directory's contents"
        );
        assert!(ignore.is_excluded("x.log"));
        assert!(!ignore.is_excluded("sub/x.log"), "*.log is top-level only");
        assert!(!ignore.is_excluded("keep.log"));
        assert!(ignore.is_excluded("a/b/secret.key"));
        assert!(ignore.is_excluded("secrets"));
        assert!(ignore.is_excluded("docs/guide.md"));
        assert!(!ignore.is_excluded("docs/README.md"));
        assert!(!ignore.is_excluded("src/main.rs"));
        assert!(ignore.has_exceptions());
        assert!(!DockerIgnore::parse("a\n").has_exceptions());
        assert!(!DockerIgnore::default().is_excluded("anything"));
    }
}
