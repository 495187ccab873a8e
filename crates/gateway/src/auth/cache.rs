//! Tokens already verified, so a client reusing its token (the usual case) costs a hash
//! lookup instead of a signature check and two JSON parses per request.
//!
//! Keyed by the whole token string, so a token differing in any byte is verified afresh.
//! An entry lives until the token's `exp` but at most [`MAX_AGE_SECS`], so a key removed from
//! the identity provider's JWKS stops being honoured within that time. Failures are never
//! cached.

use std::{collections::HashMap, sync::Mutex};

use super::Principal;

/// The longest a verification is reused.
pub const MAX_AGE_SECS: u64 = 60;
/// Past this many tokens, expired entries are dropped, and if none are, all of them.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    /// Unix seconds; the entry is not used at or after this instant.
    valid_until: u64,
}

impl VerifiedTokens {
    /// The principal of `token` if it was verified and is still usable at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Principal> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(token)
            .filter(|e| now < e.valid_until)
            .map(|e| e.principal.clone())
    }

    /// Remembers a verified token whose `exp` claim is `exp`.
    pub fn insert(&self, token: &str, principal: &Principal, exp: u64, now: u64) {
        let valid_until = exp.min(now.saturating_add(MAX_AGE_SECS));
        if valid_until <= now {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now < e.valid_until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                principal: principal.clone(),
                valid_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Principal {
        Principal::User {
            user_id: id.into(),
            tenant_id: "t".into(),
            permissions: vec![],
            email: None,
            email_verified: None,
        }
    }

    #[test]
    fn an_entry_ends_at_exp_or_after_the_maximum_age() {
        let cache = VerifiedTokens::default();
        cache.insert("short", &user("a"), 1_005, 1_000);
        assert_eq!(cache.get("short", 1_004), Some(user("a")));
        assert_eq!(cache.get("short", 1_005), None);

        cache.insert("long", &user("b"), 100_000, 1_000);
        assert_eq!(cache.get("long", 1_000 + MAX_AGE_SECS - 1), Some(user("b")));
        assert_eq!(cache.get("long", 1_000 + MAX_AGE_SECS), None);
    }

    #[test]
    fn only_the_exact_token_matches_and_expired_tokens_are_not_kept() {
        let cache = VerifiedTokens::default();
        cache.insert("abc.def.ghi", &user("a"), 2_000, 1_000);
        assert_eq!(cache.get("abc.def.ghj", 1_001), None);
        assert_eq!(cache.get("abc.def.gh", 1_001), None);
        // Accepted within the leeway but already past `exp`: verified every time.
        cache.insert("late", &user("a"), 999, 1_000);
        assert_eq!(cache.get("late", 1_000), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedTokens::default();
        for i in 0..(MAX_ENTRIES + 10) {
            cache.insert(&format!("t{i}"), &user("a"), 5_000, 1_000);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= MAX_ENTRIES, "{len} entries");
        let last = format!("t{}", MAX_ENTRIES + 9);
        assert_eq!(cache.get(&last, 1_001), Some(user("a")));
    }
}
