//! The registry's URL grammar, decided without IO: repository names and tags as the
//! distribution spec defines them, which endpoint a path names, query strings, page
//! boundaries and upload ranges.

/// The longest repository name the spec allows.
pub const MAX_REPOSITORY_LENGTH: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255
/// bytes.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_REPOSITORY_LENGTH && name.split('/').all(valid_component)
}

/// One path component: runs of `[a-z0-9]` joined by `.`, `_`, `__` or any number of `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.first().is_none_or(|b| !alnum(*b)) || bytes.last().is_none_or(|b| !alnum(*b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(&bytes[0])
        && bytes[1..]
            .iter()
            .all(|b| word(b) || *b == b'.' || *b == b'-')
}

/// The endpoint a path under `/v2/` names (the path percent-decoded, without `/v2/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/` (start) or `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: Option<String> },
}

/// Which endpoint `tail` (the path after `/v2/`) names; `None` if none. Names contain
/// slashes, and may even contain `blobs` or `manifests` as a component: the endpoint is
/// read from the end of the path.
pub fn parse_route(tail: &str) -> Option<Route> {
    if tail.is_empty() {
        return Some(Route::Base);
    }
    if tail == "_catalog" {
        return Some(Route::Catalog);
    }
    let segments: Vec<&str> = tail.split('/').collect();
    let name = |drop: usize| segments[..segments.len() - drop].join("/");
    let n = segments.len();
    let route = match segments.as_slice() {
        [.., _, "tags", "list"] => Route::Tags { name: name(2) },
        [.., _, "blobs", "uploads", ""] | [.., _, "blobs", "uploads"] => Route::Upload {
            name: name(if segments[n - 1].is_empty() { 3 } else { 2 }),
            id: None,
        },
        [.., _, "blobs", "uploads", id] => Route::Upload {
            name: name(3),
            id: Some(id.to_string()),
        },
        [.., _, "manifests", reference] if !reference.is_empty() => Route::Manifest {
            name: name(2),
            reference: reference.to_string(),
        },
        [.., _, "blobs", digest] if !digest.is_empty() => Route::Blob {
            name: name(2),
            digest: digest.to_string(),
        },
        _ => return None,
    };
    Some(route)
}

/// `%XX` escapes decoded; `None` if that does not give UTF-8 (no valid name or digest is
/// then possible).
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: u8| (b as char).to_digit(16);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of `key` in a query string, percent-decoded; the first if it repeats.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v))
}

/// One page of a sorted list: the items after `last`, at most `n` of them (all if `n` is
/// `None`), and whether more follow (never after an empty page: it has no last item to
/// resume after).
pub fn paginate(items: &[String], n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let start = match last {
        Some(last) => items.partition_point(|item| item.as_str() <= last),
        None => 0,
    };
    let rest = &items[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    (rest[..take].to_vec(), take > 0 && take < rest.len())
}

/// A `Content-Range` of an upload chunk: `<start>-<end>` (inclusive), optionally after
/// `bytes ` or `bytes=`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let range = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches(['=', ' ']);
    let (start, end) = range.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec() {
        for good in [
            "app",
            "team/app",
            "a/b/c",
            "my.app",
            "my_app",
            "my__app",
            "my---app",
            "0x",
            "library/busybox",
        ] {
            assert!(valid_repository(good), "{good}");
        }
        for bad in [
            "",
            "App",
            "app/",
            "/app",
            "a//b",
            ".app",
            "app.",
            "my..app",
            "my___app",
            "my.-app",
            "my app",
            "app:tag",
            "app@sha256",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_repository(&"a".repeat(255)));
        assert!(!valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn tags_follow_the_spec() {
        for good in ["latest", "v1.2.3", "_x", "1", "A-b_c.d"] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".v1", "-v1", "v/1", "v:1", "v1@x"] {
            assert!(!valid_tag(bad), "{bad}");
        }
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn routes_are_read_from_the_end_of_the_path() {
        let route = |tail| parse_route(tail);
        assert_eq!(route(""), Some(Route::Base));
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("team/app/tags/list"),
            Some(Route::Tags {
                name: "team/app".into()
            })
        );
        assert_eq!(
            route("a/manifests/b/manifests/latest"),
            Some(Route::Manifest {
                name: "a/manifests/b".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(
            route("app/blobs/sha256:ab"),
            Some(Route::Blob {
                name: "app".into(),
                digest: "sha256:ab".into()
            })
        );
        for start in ["x/y/blobs/uploads/", "x/y/blobs/uploads"] {
            assert_eq!(
                route(start),
                Some(Route::Upload {
                    name: "x/y".into(),
                    id: None
                }),
                "{start}"
            );
        }
        assert_eq!(
            route("x/blobs/uploads/123"),
            Some(Route::Upload {
                name: "x".into(),
                id: Some("123".into())
            })
        );
        assert_eq!(route("app"), None);
        assert_eq!(route("manifests/latest"), None, "a name is required");
        assert_eq!(route("app/manifests/"), None);
    }

    #[test]
    fn queries_and_escapes() {
        assert_eq!(percent_decode("sha256%3Aab").as_deref(), Some("sha256:ab"));
        assert_eq!(percent_decode("a%2Fb%").as_deref(), Some("a/b%"));
        assert_eq!(percent_decode("%ff"), None);
        let query = Some("mount=sha256%3Aab&from=team%2Fapp&flag");
        assert_eq!(query_param(query, "from").as_deref(), Some("team/app"));
        assert_eq!(query_param(query, "mount").as_deref(), Some("sha256:ab"));
        assert_eq!(query_param(query, "flag").as_deref(), Some(""));
        assert_eq!(query_param(query, "digest"), None);
        assert_eq!(query_param(None, "digest"), None);
    }

    #[test]
    fn pages_resume_after_the_last_item() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(paginate(&items, None, None), (items.clone(), false));
        assert_eq!(
            paginate(&items, Some(2), None),
            (vec!["a".to_string(), "b".to_string()], true)
        );
        assert_eq!(
            paginate(&items, Some(2), Some("b")),
            (vec!["c".to_string(), "d".to_string()], true)
        );
        assert_eq!(
            paginate(&items, Some(2), Some("d")),
            (vec!["e".to_string()], false)
        );
        // `last` need not be an item itself; a zero-sized page is empty.
        assert_eq!(
            paginate(&items, Some(10), Some("bb")),
            (vec!["c".into(), "d".into(), "e".into()], false)
        );
        assert_eq!(paginate(&items, Some(0), None), (vec![], false));
        assert_eq!(paginate(&items, None, Some("e")), (vec![], false));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_content_range("9-3"), None);
        assert_eq!(parse_content_range("x-3"), None);
        assert_eq!(parse_content_range("12"), None);
    }
}
