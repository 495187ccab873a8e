//! Listing accounts: the seed's `_limit`, `_offset`, `_filter`, `_sortBy`, `_order`, `_tenantIds`,
//! and `metadata` (exact `key = value` pairs).

use super::error::{Error, Result};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// Most IDs `_tenantIds` may name in one request.
pub const MAX_TENANT_IDS: usize = 1_000;
/// Most `key = value` pairs one metadata filter may hold.
pub const MAX_METADATA_MATCHES: usize = 10;
/// Longest metadata key a filter may name: the longest key metadata may hold.
pub const MAX_MATCH_KEY_CHARS: usize = tenantry_common::limits::MAX_FREEFORM_KEY_CHARS;
/// Longest value a metadata filter may look for.
pub const MAX_MATCH_VALUE_CHARS: usize = 1_024;

/// One condition of the metadata filter: the top-level `key` holds exactly the string `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataMatch {
    pub key: String,
    pub value: String,
}

impl MetadataMatch {
    /// The condition as the JSON object a matching account's metadata contains.
    pub fn as_json_object(&self) -> String {
        serde_json::json!({ &self.key: &self.value }).to_string()
    }
}

/// Checks a metadata filter's pairs: how many, and each key's and value's length and characters
/// (no control characters: neither engine can compare a NUL, and none is typed in a search).
fn check_metadata_matches(matches: &[MetadataMatch]) -> Result<()> {
    if matches.len() > MAX_METADATA_MATCHES {
        return Err(Error::invalid(
            "metadata",
            format!(
                "at most {MAX_METADATA_MATCHES} pairs may be given (got {})",
                matches.len()
            ),
        ));
    }
    for (i, m) in matches.iter().enumerate() {
        let key_chars = m.key.chars().count();
        if key_chars == 0 || key_chars > MAX_MATCH_KEY_CHARS {
            return Err(Error::invalid(
                format!("metadata[{i}].key"),
                format!("must be 1-{MAX_MATCH_KEY_CHARS} characters (got {key_chars})"),
            ));
        }
        if m.key.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("metadata[{i}].key"),
                "must not contain control characters",
            ));
        }
        let value_chars = m.value.chars().count();
        if value_chars > MAX_MATCH_VALUE_CHARS {
            return Err(Error::invalid(
                format!("metadata[{i}].value"),
                format!("must be at most {MAX_MATCH_VALUE_CHARS} characters (got {value_chars})"),
            ));
        }
        if m.value.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("metadata[{i}].value"),
                "must not contain control characters",
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortField {
    #[default]
    CreatedAt,
    Name,
    TenantId,
}

/// A validated account listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub offset: u32,
    /// Lowercased substring to look for in name or tenant ID.
    pub filter: Option<String>,
    pub sort: SortField,
    pub descending: bool,
    pub tenant_ids: Vec<String>,
    /// Every pair must hold (AND); empty = no metadata filter.
    pub metadata: Vec<MetadataMatch>,
}

/// Validates a page size: unset is `default`, 0 or above `max` is refused (never clamped).
pub fn page_limit(field: &str, limit: Option<u32>, default: u32, max: u32) -> Result<u32> {
    match limit {
        None => Ok(default),
        Some(l) if (1..=max).contains(&l) => Ok(l),
        Some(l) => Err(Error::invalid(
            field,
            format!("must be between 1 and {max} (got {l})"),
        )),
    }
}

impl ListQuery {
    pub fn new(
        limit: Option<u32>,
        offset: u32,
        filter: Option<String>,
        sort: SortField,
        descending: bool,
        tenant_ids: Vec<String>,
        metadata: Vec<MetadataMatch>,
    ) -> Result<Self> {
        let limit = page_limit("page.limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let filter = filter.filter(|f| !f.is_empty());
        if filter.as_ref().is_some_and(|f| f.chars().count() > 255) {
            return Err(Error::invalid("filter", "must be at most 255 characters"));
        }
        if tenant_ids.len() > MAX_TENANT_IDS {
            return Err(Error::invalid(
                "tenant_ids",
                format!("at most {MAX_TENANT_IDS} IDs may be given"),
            ));
        }
        check_metadata_matches(&metadata)?;
        Ok(Self {
            limit,
            offset,
            filter: filter.map(|f| f.to_lowercase()),
            sort,
            descending,
            tenant_ids,
            metadata,
        })
    }
}

/// One page of results plus the total across pages.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

impl<T> Page<T> {
    pub fn total_pages(&self) -> u64 {
        self.total.div_ceil(u64::from(self.limit.max(1)))
    }

    pub fn has_next(&self) -> bool {
        u64::from(self.offset) + (self.items.len() as u64) < self.total
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_contains(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_refuses_out_of_range() {
        assert_eq!(page_limit("l", None, 50, 200).unwrap(), 50);
        assert_eq!(page_limit("l", Some(200), 50, 200).unwrap(), 200);
        assert!(page_limit("l", Some(201), 50, 200).is_err());
        assert!(page_limit("l", Some(0), 50, 200).is_err());
    }

    fn pair(key: &str, value: &str) -> MetadataMatch {
        MetadataMatch {
            key: key.into(),
            value: value.into(),
        }
    }

    fn refused_field(metadata: Vec<MetadataMatch>) -> String {
        match ListQuery::new(None, 0, None, SortField::Name, false, vec![], metadata) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn metadata_filters_are_bounded() {
        let ten = (0..10).map(|i| pair(&format!("k{i}"), "v")).collect();
        assert!(ListQuery::new(None, 0, None, SortField::Name, false, vec![], ten).is_ok());
        let eleven = (0..11).map(|i| pair(&format!("k{i}"), "v")).collect();
        assert_eq!(refused_field(eleven), "metadata");
        assert_eq!(
            refused_field(vec![pair("a", "b"), pair("", "b")]),
            "metadata[1].key"
        );
        assert_eq!(
            refused_field(vec![pair(&"k".repeat(257), "b")]),
            "metadata[0].key"
        );
        assert_eq!(refused_field(vec![pair("k\u{0}", "b")]), "metadata[0].key");
        assert_eq!(
            refused_field(vec![pair("k", &"v".repeat(1_025))]),
            "metadata[0].value"
        );
        assert_eq!(refused_field(vec![pair("k", "a\nb")]), "metadata[0].value");
        // An empty value is a value: metadata can hold "".
        assert!(
            ListQuery::new(
                None,
                0,
                None,
                SortField::Name,
                false,
                vec![],
                vec![pair("k", "")]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_match_is_the_object_matching_metadata_contains() {
        assert_eq!(
            pair("plan\"x", "pro").as_json_object(),
            r#"{"plan\"x":"pro"}"#
        );
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_contains("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn pages_count_up() {
        let p = Page {
            items: vec![1, 2],
            total: 5,
            limit: 2,
            offset: 2,
        };
        assert_eq!(p.total_pages(), 3);
        assert!(p.has_next());
    }
}
