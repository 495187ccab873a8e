//! Identifier rules every service applies itself. They were written twice and drifted: the
//! entitlement service passed on account IDs with control characters that the tenant service
//! then refused, and the refusal surfaced as an internal error (500).

/// Longest tenant (account) ID, in characters.
pub const MAX_TENANT_ID_CHARS: usize = 255;

/// A character no tenant ID may hold: whitespace, control characters and `/` (IDs appear in
/// URL paths and logs).
pub fn is_forbidden_in_tenant_id(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '/'
}

/// Why a tenant ID is malformed, if it is.
pub fn tenant_id_problem(id: &str) -> Option<&'static str> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_TENANT_ID_CHARS {
        Some("must be 1 to 255 characters")
    } else if id.chars().any(is_forbidden_in_tenant_id) {
        Some("must not contain whitespace, control characters or `/`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_refuse_whitespace_control_characters_and_slashes() {
        assert_eq!(tenant_id_problem("acme-1_x.y"), None);
        for bad in ["", "a b", "a/b", "a\u{1}b", "a\u{0}b", "a\u{7f}b", "a\tb"] {
            assert!(tenant_id_problem(bad).is_some(), "{bad:?}");
        }
        assert!(tenant_id_problem(&"x".repeat(256)).is_some());
        assert_eq!(tenant_id_problem(&"x".repeat(255)), None);
    }
}
