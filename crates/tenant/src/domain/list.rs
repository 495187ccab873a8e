//! Listing accounts: the seed's `_limit`, `_offset`, `_filter`, `_sortBy`, `_order`, `_tenantIds`.

use super::error::{Error, Result};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// Most IDs `_tenantIds` may name in one request.
pub const MAX_TENANT_IDS: usize = 1_000;

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
        Ok(Self {
            limit,
            offset,
            filter: filter.map(|f| f.to_lowercase()),
            sort,
            descending,
            tenant_ids,
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
