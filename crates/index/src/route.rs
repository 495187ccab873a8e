//! Route patterns and their specificity order.
//!
//! A pattern is `/`-separated segments: a literal, `*` (exactly one segment) or `**` (zero or
//! more remaining segments, only as the last segment). Empty segments are ignored on both sides,
//! so `/a//b/` is `/a/b`; a request's query string is ignored; matching is case-sensitive.
//!
//! Most specific wins, decided without looking at the request path (so routes are sorted once
//! at build and the first match is the answer):
//! 1. segments compared left to right: literal > `*` > `**`; at the first difference the
//!    stronger segment wins; when one pattern is a prefix of the other the shorter wins (the
//!    longer can only match the same path through a trailing `**` matching nothing);
//! 2. then a named method beats `*`;
//! 3. then the more restrictive policy: deny > require > allow;
//! 4. then the lower route id, for a total, stable order.

use std::cmp::Ordering;

use super::model::{Route, RoutePolicy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 3,
            Segment::One => 2,
            Segment::Rest => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Box<[Segment]>,
}

/// Request path segments: query string dropped, empty segments skipped.
pub(crate) fn request_segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.split('/').filter(|s| !s.is_empty())
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err("path must start with '/'".into());
        }
        if pattern.contains('?') {
            return Err("path must not contain a query string".into());
        }
        let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err("'**' is only allowed as the last segment".into()),
                p if p.contains('*') => {
                    return Err("'*' must be a whole segment".into());
                }
                p => Segment::Literal(p.into()),
            });
        }
        Ok(Self {
            segments: segments.into(),
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let mut request = request_segments(path);
        for segment in self.segments.iter() {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if request.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if request.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        request.next().is_none()
    }

    /// Matches pre-split request segments (the check splits a path once for all routes).
    pub(crate) fn matches_segments(&self, request: &[&str]) -> bool {
        let mut rest = request;
        for segment in self.segments.iter() {
            match segment {
                Segment::Rest => return true,
                Segment::One => match rest.split_first() {
                    Some((_, tail)) => rest = tail,
                    None => return false,
                },
                Segment::Literal(lit) => match rest.split_first() {
                    Some((head, tail)) if *head == &**lit => rest = tail,
                    Some(_) | None => return false,
                },
            }
        }
        rest.is_empty()
    }

    /// `Greater` = more specific.
    pub(crate) fn specificity_cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.segments.iter().zip(other.segments.iter()) {
            match a.rank().cmp(&b.rank()) {
                Ordering::Equal => {}
                unequal @ (Ordering::Less | Ordering::Greater) => return unequal,
            }
        }
        other.segments.len().cmp(&self.segments.len())
    }
}

fn policy_rank(policy: &RoutePolicy) -> u8 {
    match policy {
        RoutePolicy::Deny => 3,
        RoutePolicy::Require { .. } => 2,
        RoutePolicy::Allow => 1,
    }
}

/// Validates a route method: `*` or an upper-case token such as `GET`.
pub fn parse_method(method: &str) -> Result<Option<Box<str>>, String> {
    if method == "*" {
        return Ok(None);
    }
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("method must be '*' or an upper-case HTTP method".into());
    }
    Ok(Some(method.into()))
}

/// Orders whole routes, most specific first, per the module documentation.
pub(crate) fn route_order(
    a: (&PathPattern, bool, &Route),
    b: (&PathPattern, bool, &Route),
) -> Ordering {
    b.0.specificity_cmp(a.0)
        .then_with(|| b.1.cmp(&a.1))
        .then_with(|| policy_rank(&b.2.policy).cmp(&policy_rank(&a.2.policy)))
        .then_with(|| a.2.id.cmp(&b.2.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    #[test]
    fn wildcards_match_as_documented() {
        assert!(p("/a/*/c").matches("/a/b/c"));
        assert!(!p("/a/*/c").matches("/a/c"));
        assert!(!p("/a/*").matches("/a/b/c"));
        assert!(p("/a/**").matches("/a/b/c"));
        assert!(p("/a/**").matches("/a"));
        assert!(p("/**").matches("/"));
        assert!(p("/a/b").matches("/a//b/?x=1"));
        assert!(!p("/a/b").matches("/a/B"));
        assert!(p("/").matches(""));
        let segs: Vec<&str> = request_segments("/a/b/c?q").collect();
        assert!(p("/a/*/c").matches_segments(&segs));
        assert!(p("/a/**").matches_segments(&segs));
        assert!(!p("/a/*").matches_segments(&segs));
        assert!(!p("/a/b/c/d").matches_segments(&segs));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["a/b", "/a/**/b", "/a*", "/a?b=1"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_method("get").is_err());
        assert_eq!(parse_method("*").unwrap(), None);
        assert_eq!(parse_method("GET").unwrap().as_deref(), Some("GET"));
    }

    #[test]
    fn specificity_is_left_to_right_and_shorter_on_prefix() {
        use Ordering::*;
        assert_eq!(p("/a/b/*").specificity_cmp(&p("/a/*/c")), Greater);
        assert_eq!(p("/a/*").specificity_cmp(&p("/a/**")), Greater);
        assert_eq!(p("/a").specificity_cmp(&p("/a/**")), Greater);
        assert_eq!(p("/a/b").specificity_cmp(&p("/a/b")), Equal);
        assert_eq!(p("/**").specificity_cmp(&p("/a/**")), Less);
    }
}
