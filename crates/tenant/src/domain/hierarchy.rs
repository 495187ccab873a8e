//! The account hierarchy: a forest with one parent per account, no cycles and bounded depth.

use std::collections::BTreeMap;

use tenantry_common::error::{ALREADY_HAS_PARENT, CYCLE, SELF_PARENT};

use super::account::Account;
use super::error::{Error, Result};

/// An account in a flat hierarchy listing with its distance from the starting account.
#[derive(Clone, Debug, PartialEq)]
pub struct HierarchyEntry {
    pub account: Account,
    pub depth: u32,
}

/// A node of a subtree.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeNode {
    pub account: Account,
    pub children: Vec<TreeNode>,
}

/// What the attach rules need to know, read under the hierarchy lock.
#[derive(Clone, Debug)]
pub struct AttachFacts<'a> {
    pub parent_id: &'a str,
    pub child_id: &'a str,
    /// The child's current parent, if any.
    pub child_parent: Option<&'a str>,
    /// The parent's ancestors, nearest first (the parent itself excluded).
    pub parent_ancestors: &'a [String],
    /// Levels below the child (0 for a leaf).
    pub child_height: u32,
    /// Deepest allowed level; roots are at depth 0.
    pub max_depth: u32,
}

/// Checks attaching `child` under `parent`: not itself, not already attached, no cycle, and
/// the deepest node of the child's subtree stays within `max_depth`.
pub fn check_attach(f: &AttachFacts<'_>) -> Result<()> {
    if f.parent_id == f.child_id {
        return Err(Error::precondition(
            SELF_PARENT,
            format!("account `{}` cannot be its own parent", f.child_id),
        ));
    }
    if let Some(current) = f.child_parent {
        return Err(Error::precondition(
            ALREADY_HAS_PARENT,
            format!(
                "account `{}` is already a sub-account of `{current}`; detach it first",
                f.child_id
            ),
        ));
    }
    if f.parent_ancestors.iter().any(|a| a == f.child_id) {
        return Err(Error::precondition(
            CYCLE,
            format!(
                "attaching `{}` under `{}` would create a cycle: `{}` is an ancestor of `{}`",
                f.child_id, f.parent_id, f.child_id, f.parent_id
            ),
        ));
    }
    let parent_depth = f.parent_ancestors.len() as u64;
    let deepest = parent_depth + 1 + u64::from(f.child_height);
    if deepest > u64::from(f.max_depth) {
        return Err(Error::precondition(
            "MAX_DEPTH_EXCEEDED",
            format!(
                "the hierarchy would be {deepest} levels deep below its root; at most {} are allowed",
                f.max_depth
            ),
        ));
    }
    Ok(())
}

/// Builds the tree under `root` from its descendants (any order); children by tenant ID.
/// Accounts returned below a subtree's root by default, and at most.
pub const DEFAULT_SUBTREE_NODES: u32 = 500;
pub const MAX_SUBTREE_NODES: u32 = 1_000;

/// A subtree cut breadth first: `descendants` in order of depth (then ID), so each one's
/// parent is the root or comes before it; `truncated` says more lie below.
#[derive(Clone, Debug)]
pub struct Subtree {
    pub root: Account,
    pub descendants: Vec<Account>,
    pub truncated: bool,
}

pub fn build_tree(root: Account, descendants: Vec<Account>) -> TreeNode {
    let mut by_parent: BTreeMap<String, Vec<Account>> = BTreeMap::new();
    for account in descendants {
        if let Some(parent) = account.parent_tenant_id.clone() {
            by_parent.entry(parent).or_default().push(account);
        }
    }
    fn grow(account: Account, by_parent: &mut BTreeMap<String, Vec<Account>>) -> TreeNode {
        let mut children = by_parent.remove(&account.tenant_id).unwrap_or_default();
        children.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        TreeNode {
            children: children
                .into_iter()
                .map(|child| grow(child, by_parent))
                .collect(),
            account,
        }
    }
    grow(root, &mut by_parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(parent: &'a str, child: &'a str, ancestors: &'a [String]) -> AttachFacts<'a> {
        AttachFacts {
            parent_id: parent,
            child_id: child,
            child_parent: None,
            parent_ancestors: ancestors,
            child_height: 0,
            max_depth: 3,
        }
    }

    fn reason(r: Result<()>) -> &'static str {
        r.unwrap_err().reason()
    }

    #[test]
    fn refusals_carry_their_reason() {
        assert_eq!(reason(check_attach(&facts("a", "a", &[]))), "SELF_PARENT");
        let mut f = facts("a", "b", &[]);
        f.child_parent = Some("c");
        assert_eq!(reason(check_attach(&f)), "ALREADY_HAS_PARENT");
        let chain = vec!["x".to_owned(), "b".to_owned()];
        assert_eq!(reason(check_attach(&facts("a", "b", &chain))), "CYCLE");
    }

    #[test]
    fn depth_counts_the_child_subtree() {
        let chain = vec!["p1".to_owned(), "root".to_owned()];
        // parent at depth 2, child at 3: allowed with max 3.
        assert!(check_attach(&facts("a", "b", &chain)).is_ok());
        let mut f = facts("a", "b", &chain);
        f.child_height = 1;
        assert_eq!(reason(check_attach(&f)), "MAX_DEPTH_EXCEEDED");
    }
}
