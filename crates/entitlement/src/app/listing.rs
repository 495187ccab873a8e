//! The one rule every list follows: filter, sort (or keep the catalog's creation order),
//! reverse when descending, then page.

use std::cmp::Ordering;

use crate::domain::{DomainError, Result};

/// Items a list returns when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 10;
/// The most items one page holds.
pub const MAX_LIMIT: u32 = 1000;

/// Which page of a list: `offset` items skipped, at most `limit` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub offset: u64,
    pub limit: u64,
}

impl PageRequest {
    /// A page of `limit` items (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub fn new(offset: u32, limit: Option<u32>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(DomainError::invalid(
                "page.limit",
                "must be between 1 and 1000",
            ));
        }
        Ok(Self {
            offset: u64::from(offset),
            limit: u64::from(limit),
        })
    }

    /// What the page holds out of `total` items.
    pub fn info(self, total: u64) -> PageInfo {
        PageInfo {
            total,
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// Where a page sits in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

impl PageInfo {
    pub fn total_pages(&self) -> u64 {
        self.total.div_ceil(self.limit.max(1))
    }

    pub fn has_next(&self) -> bool {
        self.offset + self.limit < self.total
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub page: PageInfo,
}

impl<T> Listed<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Listed<U> {
        Listed {
            items: self.items.into_iter().map(f).collect(),
            page: self.page,
        }
    }
}

/// A comparison of two list items.
pub type Order<'f, T> = &'f dyn Fn(&T, &T) -> Ordering;

/// How a list is ordered: `order` (`None`: as given, i.e. by creation), then reversed when
/// `descending`.
pub struct Sort<'f, T> {
    pub order: Option<Order<'f, T>>,
    pub descending: bool,
}

impl<T> std::fmt::Debug for Sort<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sort")
            .field("ordered", &self.order.is_some())
            .field("descending", &self.descending)
            .finish()
    }
}

/// Filters `items` with `keep`, sorts them and returns the requested page (with the count of
/// every item kept).
pub fn list<'a, T>(
    items: impl IntoIterator<Item = &'a T>,
    keep: impl Fn(&T) -> bool,
    sort: Sort<'_, T>,
    page: PageRequest,
) -> Listed<&'a T> {
    let mut kept: Vec<&T> = items.into_iter().filter(|t| keep(t)).collect();
    if let Some(order) = sort.order {
        // Stable: equal items keep their creation order.
        kept.sort_by(|a, b| order(a, b));
    }
    if sort.descending {
        kept.reverse();
    }
    let total = kept.len() as u64;
    let items = kept
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
        .collect();
    Listed {
        items,
        page: page.info(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_one_to_a_thousand_items_ten_by_default() {
        assert_eq!(PageRequest::new(3, None).unwrap().limit, 10);
        assert!(PageRequest::new(0, Some(0)).is_err());
        assert!(PageRequest::new(0, Some(1001)).is_err());
        assert_eq!(PageRequest::new(0, Some(1000)).unwrap().limit, 1000);
    }

    #[test]
    fn filters_sorts_reverses_then_pages() {
        let items = [5, 1, 4, 2, 3, 6];
        let even_last = |a: &i32, b: &i32| (a % 2, a).cmp(&(b % 2, b));
        let page = PageRequest::new(1, Some(2)).unwrap();
        let listed = list(
            &items,
            |n| *n != 6,
            Sort {
                order: Some(&even_last),
                descending: true,
            },
            page,
        );
        // kept: 5 1 4 2 3 → sorted 2 4 1 3 5 → reversed 5 3 1 4 2 → page [3, 1]
        assert_eq!(listed.items, vec![&3, &1]);
        assert_eq!(listed.page.total, 5);
        assert_eq!(listed.page.total_pages(), 3);
        assert!(listed.page.has_next());
        let unsorted = list(
            &items,
            |_| true,
            Sort {
                order: None,
                descending: false,
            },
            PageRequest::new(4, Some(10)).unwrap(),
        );
        assert_eq!(unsorted.items, vec![&3, &6]);
        assert!(!unsorted.page.has_next());
    }
}
