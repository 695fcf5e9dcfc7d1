//! Label selectors, in kubectl's string form (`app=web,tier!=db,env in (a,b),!canary`) and
//! matched against an object's labels.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let error = |reason: &str| SelectorError {
            selector: input.to_string(),
            reason: reason.to_string(),
        };
        let mut requirements = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                Requirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, set)) = split_set(term, " notin ") {
                Requirement::NotIn(key, set.ok_or_else(|| error("expected a set like (a,b)"))?)
            } else if let Some((key, set)) = split_set(term, " in ") {
                Requirement::In(key, set.ok_or_else(|| error("expected a set like (a,b)"))?)
            } else {
                Requirement::Exists(term.to_string())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(error(&format!("{term:?} does not name a label key")));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas that are not inside a `( )` set.
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

fn split_set(term: &str, operator: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, rest) = term.split_once(operator)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .map(|s| {
            s.split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        });
    Some((key.trim().to_string(), set))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let s = Selector::parse(
            "app=web, tier!=db,env in (prod, staging),track notin (canary),team,!legacy",
        )
        .unwrap();
        assert_eq!(s.0.len(), 6);
        assert!(s.matches(Some(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "x")
        ]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("env", "dev"),
            ("team", "x")
        ]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "x"),
            ("legacy", "1")
        ]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("env", "prod")]))));
        assert!(!s.matches(None));
        assert!(Selector::parse("").unwrap().matches(None));
        assert!(Selector::parse("app==web")
            .unwrap()
            .matches(Some(&labels(&[("app", "web")]))));
    }

    #[test]
    fn rejects_malformed_sets() {
        assert!(Selector::parse("env in prod").is_err());
        assert!(Selector::parse("=web").is_err());
    }
}
