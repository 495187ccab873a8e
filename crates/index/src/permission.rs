//! The one permission-matching rule, shared by the gateway, the tenant service and the
//! entitlement check: Frontegg's (`checkPermission` in its SDKs). A held permission grants a
//! needed one when it equals it, or when it is a pattern whose every `*` stands for any run of
//! characters, dots included, and the pattern covers the whole needed key: `fe.account-settings.*`
//! grants `fe.account-settings.write.account` and `fe.account-settings.delete.account`, `*`
//! grants everything, `fe.*.read` grants `fe.secure.read`, and `fe.account-settings` grants only
//! itself. Every other character is literal.

/// Whether any of `held` grants `needed`.
pub fn holds<S: AsRef<str>>(held: &[S], needed: &str) -> bool {
    held.iter().any(|p| grants(p.as_ref(), needed))
}

/// Whether the one held permission (or pattern) `held` grants `needed`.
pub fn grants(held: &str, needed: &str) -> bool {
    if !held.contains('*') {
        return held == needed;
    }
    // Glob matching with one backtrack point (the last `*`): linear in practice, never
    // exponential, whatever a token holds.
    let (p, s) = (held.as_bytes(), needed.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        match p.get(i) {
            Some(b'*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == s[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::{grants, holds};

    const SETTINGS_WRITE: &str = "fe.account-settings.write.account";
    const ACCOUNT_DELETE: &str = "fe.account-settings.delete.account";
    const SUB_ACCOUNTS: &str = "fe.account-hierarchy.write.subAccount";

    /// The matrix of held patterns × needed permissions the services ask for.
    #[test]
    fn the_matrix() {
        let cases: &[(&str, [bool; 3])] = &[
            // held                      settings write, account delete, sub-accounts
            ("fe.account-settings.*", [true, true, false]),
            ("fe.account-settings.write.*", [true, false, false]),
            ("fe.account-settings.write.account", [true, false, false]),
            ("fe.account-settings.delete.account", [false, true, false]),
            ("fe.account-hierarchy.*", [false, false, true]),
            ("fe.*", [true, true, true]),
            ("*", [true, true, true]),
            ("fe.*.account", [true, true, false]),
            ("fe.account-settings", [false, false, false]),
            ("fe.account-settings.", [false, false, false]),
            ("fe.account-settings.write", [false, false, false]),
            ("account-settings.*", [false, false, false]),
            ("*.write.account", [true, false, false]),
            ("", [false, false, false]),
            ("FE.ACCOUNT-SETTINGS.*", [false, false, false]),
        ];
        for (held, expected) in cases {
            let got = [
                grants(held, SETTINGS_WRITE),
                grants(held, ACCOUNT_DELETE),
                grants(held, SUB_ACCOUNTS),
            ];
            assert_eq!(&got, expected, "held {held:?}");
        }
    }

    #[test]
    fn patterns_are_anchored_and_stars_backtrack() {
        assert!(!grants("fe.secure.*", "prefix.fe.secure.x"));
        assert!(grants("a*b*c", "axxbyybzzc"));
        assert!(!grants("a*b*c", "axxbyybzz"));
        assert!(grants("**", ""));
        assert!(!grants("a", ""));
        // A dot is a literal, not "any character".
        assert!(!grants("fe.secure", "feXsecure"));
        assert!(holds(&["x", "fe.*"], "fe.y"));
        assert!(!holds::<&str>(&[], "fe.y"));
    }
}
