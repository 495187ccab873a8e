//! Hierarchy: sub-accounts, attach refusals (also under concurrency), detach, re-parenting on
//! delete, reads, reseller and hierarchy settings.

use tenantry_proto::tenant::v1::{self as pb};
use tonic::Code;

use crate::helpers::{assert_code, reason, spawn_app, spawn_app_with};

async fn parent_of(app: &crate::helpers::TestApp, id: &str) -> Option<String> {
    app.get(id).await.unwrap().parent_tenant_id
}

#[tokio::test]
async fn attach_refuses_self_second_parent_and_cycles() {
    let app = spawn_app().await;
    for id in ["a", "b", "c", "d"] {
        app.create(id, id).await;
    }
    let s = assert_code(app.attach("a", "a").await, Code::FailedPrecondition);
    assert_eq!(reason(&s), "SELF_PARENT");
    app.attach("a", "b").await.unwrap();
    app.attach("b", "c").await.unwrap();
    let s = assert_code(app.attach("d", "b").await, Code::FailedPrecondition);
    assert_eq!(reason(&s), "ALREADY_HAS_PARENT");
    // c is under a; putting a under c would close a loop.
    let s = assert_code(app.attach("c", "a").await, Code::FailedPrecondition);
    assert_eq!(reason(&s), "CYCLE");
    let s = assert_code(app.attach("ghost", "d").await, Code::NotFound);
    assert_eq!(reason(&s), "PARENT_NOT_FOUND");
    assert_code(app.attach("a", "ghost").await, Code::NotFound);
    assert_eq!(parent_of(&app, "a").await, None, "refusals changed nothing");
}

#[tokio::test]
async fn two_concurrent_attaches_never_create_a_cycle() {
    let app = spawn_app().await;
    for round in 0..15 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        app.create(&x, "x").await;
        app.create(&y, "y").await;
        // x under y and y under x at the same time: exactly one may win.
        let (first, second) = tokio::join!(app.attach(&y, &x), app.attach(&x, &y));
        let wins = usize::from(first.is_ok()) + usize::from(second.is_ok());
        assert_eq!(wins, 1, "round {round}: {first:?} / {second:?}");
        let loser = first.err().or(second.err()).unwrap();
        assert_eq!(loser.code(), Code::FailedPrecondition);
        assert_eq!(reason(&loser), "CYCLE");
        let (px, py) = (parent_of(&app, &x).await, parent_of(&app, &y).await);
        assert!(
            px.is_none() || py.is_none(),
            "round {round}: both have parents ({px:?}, {py:?})"
        );
    }
    // A longer loop: a→b→c chain, then c→a and a root-level attach racing.
    for id in ["p", "q", "r"] {
        app.create(id, id).await;
    }
    app.attach("p", "q").await.unwrap();
    let (one, two) = tokio::join!(app.attach("q", "r"), app.attach("r", "p"));
    assert!(one.is_ok() != two.is_ok(), "{one:?} / {two:?}");
}

#[tokio::test]
async fn depth_limit_counts_the_attached_subtree() {
    let app = spawn_app_with(|c| c.max_hierarchy_depth = 2).await;
    for id in ["root", "mid", "leaf", "sub", "subchild"] {
        app.create(id, id).await;
    }
    app.attach("root", "mid").await.unwrap();
    app.attach("mid", "leaf").await.unwrap(); // depth 2: allowed
    app.create("deeper", "deeper").await;
    let s = assert_code(app.attach("leaf", "deeper").await, Code::FailedPrecondition);
    assert_eq!(reason(&s), "MAX_DEPTH_EXCEEDED");
    // A two-level subtree under a depth-1 node would reach depth 3.
    app.attach("sub", "subchild").await.unwrap();
    let s = assert_code(app.attach("mid", "sub").await, Code::FailedPrecondition);
    assert_eq!(reason(&s), "MAX_DEPTH_EXCEEDED");
    app.attach("root", "sub").await.unwrap();
    let s = assert_code(
        app.hierarchy()
            .create_sub_account(pb::CreateSubAccountRequest {
                tenant_id: "too-deep".into(),
                name: "x".into(),
                parent_tenant_id: "leaf".into(),
                ..pb::CreateSubAccountRequest::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "MAX_DEPTH_EXCEEDED");
    assert_code(app.get("too-deep").await, Code::NotFound);
}

#[tokio::test]
async fn detach_needs_a_parent_child_pair() {
    let app = spawn_app().await;
    for id in ["a", "b", "c"] {
        app.create(id, id).await;
    }
    app.attach("a", "b").await.unwrap();
    let detach = |parent: &str, child: &str| pb::DetachSubAccountRequest {
        parent_tenant_id: parent.into(),
        child_tenant_id: child.into(),
    };
    let s = assert_code(
        app.hierarchy().detach_sub_account(detach("c", "b")).await,
        Code::NotFound,
    );
    assert_eq!(reason(&s), "NOT_PARENT_AND_CHILD");
    let child = app
        .hierarchy()
        .detach_sub_account(detach("a", "b"))
        .await
        .unwrap()
        .into_inner()
        .child
        .unwrap();
    assert_eq!(child.parent_tenant_id, None);
    // Now a root again, it can be attached elsewhere.
    app.attach("c", "b").await.unwrap();
}

#[tokio::test]
async fn delete_reparents_children_and_removes_memberships() {
    let app = spawn_app().await;
    for id in ["top", "mid", "c1", "c2", "grandchild"] {
        app.create(id, id).await;
    }
    app.attach("top", "mid").await.unwrap();
    app.attach("mid", "c1").await.unwrap();
    app.attach("mid", "c2").await.unwrap();
    app.attach("c1", "grandchild").await.unwrap();
    for user in ["u1", "u2"] {
        app.memberships()
            .add_membership(pb::AddMembershipRequest {
                tenant_id: "mid".into(),
                user_id: user.into(),
                idempotency_key: None,
            })
            .await
            .unwrap();
    }
    let deleted = app.delete("mid").await;
    assert_eq!(
        deleted.reparented_tenant_ids,
        vec!["c1".to_owned(), "c2".to_owned()]
    );
    assert_eq!(deleted.removed_memberships, 2);
    assert_eq!(parent_of(&app, "c1").await.as_deref(), Some("top"));
    assert_eq!(parent_of(&app, "c2").await.as_deref(), Some("top"));
    assert_eq!(parent_of(&app, "grandchild").await.as_deref(), Some("c1"));
    let accounts_of_u1 = app
        .memberships()
        .list_user_accounts(pb::ListUserAccountsRequest {
            user_id: "u1".into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(accounts_of_u1.memberships.is_empty());

    // Deleting a root makes its children roots.
    app.delete("top").await;
    assert_eq!(parent_of(&app, "c1").await, None);
    assert_eq!(parent_of(&app, "c2").await, None);

    // The sub-account delete form checks the parent.
    app.create("p", "p").await;
    app.create("k", "k").await;
    app.attach("p", "k").await.unwrap();
    assert_code(
        app.tenants()
            .delete_account(pb::DeleteAccountRequest {
                tenant_id: "k".into(),
                expected_parent_tenant_id: Some("c1".into()),
            })
            .await,
        Code::NotFound,
    );
    app.tenants()
        .delete_account(pb::DeleteAccountRequest {
            tenant_id: "k".into(),
            expected_parent_tenant_id: Some("p".into()),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn reads_list_descendants_ancestors_and_the_tree() {
    let app = spawn_app().await;
    app.create("root", "Root").await;
    let mut hierarchy = app.hierarchy();
    for (id, parent) in [
        ("a", "root"),
        ("b", "root"),
        ("a1", "a"),
        ("a2", "a"),
        ("a1x", "a1"),
    ] {
        let created = hierarchy
            .create_sub_account(pb::CreateSubAccountRequest {
                tenant_id: id.into(),
                name: id.to_uppercase(),
                parent_tenant_id: parent.into(),
                is_reseller: Some(true),
                ..pb::CreateSubAccountRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            created.account.unwrap().parent_tenant_id.as_deref(),
            Some(parent)
        );
    }
    let direct = hierarchy
        .list_descendants(pb::ListDescendantsRequest {
            tenant_id: "root".into(),
            direct_only: true,
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<_> = direct
        .iter()
        .map(|e| e.account.as_ref().unwrap().tenant_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let all = hierarchy
        .list_descendants(pb::ListDescendantsRequest {
            tenant_id: "root".into(),
            direct_only: false,
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<_> = all
        .iter()
        .map(|e| (e.account.as_ref().unwrap().tenant_id.as_str(), e.depth))
        .collect();
    assert_eq!(ids, [("a", 1), ("b", 1), ("a1", 2), ("a2", 2), ("a1x", 3)]);
    let ancestors = hierarchy
        .list_ancestors(pb::ListAncestorsRequest {
            tenant_id: "a1x".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<_> = ancestors
        .iter()
        .map(|e| e.account.as_ref().unwrap().tenant_id.as_str())
        .collect();
    assert_eq!(ids, ["a1", "a", "root"], "nearest first");
    let tree = hierarchy
        .get_subtree(pb::GetSubtreeRequest {
            tenant_id: "root".into(),
            max_nodes: None,
        })
        .await
        .unwrap()
        .into_inner()
        .root
        .unwrap();
    let names = |n: &pb::HierarchyTreeNode| -> Vec<String> {
        n.children
            .iter()
            .map(|c| c.account.as_ref().unwrap().tenant_id.clone())
            .collect()
    };
    assert_eq!(names(&tree), ["a", "b"]);
    assert_eq!(names(&tree.children[0]), ["a1", "a2"]);
    assert_eq!(names(&tree.children[0].children[0]), ["a1x"]);
    assert!(tree.children[1].children.is_empty());
    assert_code(
        hierarchy
            .create_sub_account(pb::CreateSubAccountRequest {
                tenant_id: "orphan".into(),
                name: "x".into(),
                parent_tenant_id: "ghost".into(),
                ..pb::CreateSubAccountRequest::default()
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        hierarchy
            .create_sub_account(pb::CreateSubAccountRequest {
                tenant_id: "no-parent".into(),
                name: "x".into(),
                ..pb::CreateSubAccountRequest::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn reseller_and_hierarchy_settings_round_trip() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut hierarchy = app.hierarchy();
    let account = hierarchy
        .update_sub_account_management(pb::UpdateSubAccountManagementRequest {
            tenant_id: "acme".into(),
            is_reseller: true,
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(account.is_reseller);
    let read = hierarchy
        .get_hierarchy_settings(pb::GetHierarchySettingsRequest {
            tenant_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        read.sub_account_access_type(),
        pb::SubAccountAccessType::DefaultOff
    );
    let set = hierarchy
        .update_hierarchy_settings(pb::UpdateHierarchySettingsRequest {
            tenant_id: "acme".into(),
            sub_account_access_type: pb::SubAccountAccessType::AlwaysOn.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        set.sub_account_access_type(),
        pb::SubAccountAccessType::AlwaysOn
    );
    for bad in [0, 17] {
        assert_code(
            hierarchy
                .update_hierarchy_settings(pb::UpdateHierarchySettingsRequest {
                    tenant_id: "acme".into(),
                    sub_account_access_type: bad,
                })
                .await,
            Code::InvalidArgument,
        );
    }
    assert_code(
        hierarchy
            .update_hierarchy_settings(pb::UpdateHierarchySettingsRequest {
                tenant_id: "ghost".into(),
                sub_account_access_type: pb::SubAccountAccessType::DefaultOn.into(),
            })
            .await,
        Code::NotFound,
    );
}

async fn reachable(app: &crate::helpers::TestApp, caller: &str, ids: &[&str]) -> Vec<String> {
    app.hierarchy()
        .check_sub_account_scope(pb::CheckSubAccountScopeRequest {
            caller_tenant_id: caller.into(),
            tenant_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .reachable_tenant_ids
}

async fn open_sub_accounts(app: &crate::helpers::TestApp, id: &str) {
    app.hierarchy()
        .update_hierarchy_settings(pb::UpdateHierarchySettingsRequest {
            tenant_id: id.into(),
            sub_account_access_type: pb::SubAccountAccessType::DefaultOn.into(),
        })
        .await
        .unwrap();
}

/// The scope rule for a set of accounts in one call: descendants at any depth when the caller's
/// settings open them; never the caller itself, its ancestors, other trees, deleted or unknown
/// accounts; nothing at all under `defaultOff`.
async fn scope_rule_for_a_set(app: &crate::helpers::TestApp) {
    // root → a → a1 → a2 → a3, root → b; other → o
    for id in ["root", "a", "a1", "a2", "a3", "b", "other", "o", "gone"] {
        app.create(id, id).await;
    }
    for (parent, child) in [
        ("root", "a"),
        ("a", "a1"),
        ("a1", "a2"),
        ("a2", "a3"),
        ("root", "b"),
        ("other", "o"),
        ("a", "gone"),
    ] {
        app.attach(parent, child).await.unwrap();
    }
    app.delete("gone").await;
    let all = [
        "root", "a", "a1", "a2", "a3", "b", "other", "o", "gone", "ghost", "a3",
    ];
    assert!(reachable(app, "a", &all).await.is_empty(), "defaultOff");
    open_sub_accounts(app, "a").await;
    assert_eq!(reachable(app, "a", &all).await, ["a1", "a2", "a3"]);
    open_sub_accounts(app, "root").await;
    assert_eq!(
        reachable(app, "root", &all).await,
        ["a", "a1", "a2", "a3", "b"]
    );
    assert!(reachable(app, "ghost", &all).await.is_empty());
    assert!(reachable(app, "root", &[]).await.is_empty());
    let too_many: Vec<String> = (0..1_001).map(|i| format!("t{i}")).collect();
    let s = assert_code(
        app.hierarchy()
            .check_sub_account_scope(pb::CheckSubAccountScopeRequest {
                caller_tenant_id: "root".into(),
                tenant_ids: too_many,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(reason(&s), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn scope_rule_for_a_set_on_postgres() {
    scope_rule_for_a_set(&spawn_app().await).await;
}

#[tokio::test]
async fn scope_rule_for_a_set_on_sqlite() {
    scope_rule_for_a_set(&crate::helpers::spawn_sqlite_app().await).await;
}

/// CreateSubAccount never reclaims a deleted account's ID: the answer is the one a live
/// account's ID gets (same code, reason and message shape), and the deleted account stays
/// deleted; CreateAccount (management) still reactivates it.
#[tokio::test]
async fn sub_account_creation_takes_deleted_ids_as_taken() {
    let app = spawn_app().await;
    for id in ["parent", "live", "gone"] {
        app.create(id, id).await;
    }
    app.delete("gone").await;
    let create = |id: &str| {
        let mut h = app.hierarchy();
        let req = pb::CreateSubAccountRequest {
            tenant_id: id.into(),
            name: "mine".into(),
            parent_tenant_id: "parent".into(),
            ..pb::CreateSubAccountRequest::default()
        };
        async move { h.create_sub_account(req).await }
    };
    let live = assert_code(create("live").await, Code::AlreadyExists);
    let gone = assert_code(create("gone").await, Code::AlreadyExists);
    assert_eq!(reason(&live), reason(&gone));
    assert_eq!(
        live.message().replace("live", "ID"),
        gone.message().replace("gone", "ID")
    );
    assert_code(app.get("gone").await, Code::NotFound);
    let revived = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some("gone".into()),
                name: "back".into(),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revived.reactivated);
}

/// The subtree is cut breadth first: at `max_nodes` (at most 1,000; more is refused), and
/// earlier when its accounts would not fit in one message (it was unbounded, and 20 accounts
/// with the largest logo failed on the message limit). `truncated` says more lie below.
#[tokio::test]
async fn the_subtree_is_cut_breadth_first_by_count_and_size_and_says_so() {
    let app = spawn_app().await;
    let mut hierarchy = app.hierarchy();
    app.create("top", "Top").await;
    let logo = "A".repeat(tenantry_common::limits::MAX_LOGO_BYTES);
    for i in 0..20 {
        hierarchy
            .create_sub_account(pb::CreateSubAccountRequest {
                tenant_id: format!("child-{i:02}"),
                name: "Child".into(),
                parent_tenant_id: "top".into(),
                logo: Some(logo.clone()),
                ..pb::CreateSubAccountRequest::default()
            })
            .await
            .expect("sub-account with the largest logo");
    }
    hierarchy
        .create_sub_account(pb::CreateSubAccountRequest {
            tenant_id: "grandchild".into(),
            name: "Grandchild".into(),
            parent_tenant_id: "child-00".into(),
            ..pb::CreateSubAccountRequest::default()
        })
        .await
        .unwrap();
    let subtree = |max_nodes| {
        let mut hierarchy = app.hierarchy();
        async move {
            hierarchy
                .get_subtree(pb::GetSubtreeRequest {
                    tenant_id: "top".into(),
                    max_nodes,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    fn ids(node: &pb::HierarchyTreeNode, out: &mut Vec<String>) {
        for child in &node.children {
            out.push(child.account.as_ref().unwrap().tenant_id.clone());
            ids(child, out);
        }
    }

    // By size: 21 accounts do not fit in 4 MiB; the first children do, in ID order.
    let cut = subtree(None)
        .await
        .expect("a subtree past the message limit");
    let mut returned = Vec::new();
    ids(cut.root.as_ref().unwrap(), &mut returned);
    assert!(cut.truncated, "{returned:?}");
    assert!(
        !returned.is_empty() && returned.len() < 20,
        "{} accounts returned",
        returned.len()
    );
    let expected: Vec<String> = (0..returned.len())
        .map(|i| format!("child-{i:02}"))
        .collect();
    assert_eq!(returned, expected, "breadth first, by ID");

    // By count: the children (depth 1) come before the grandchild.
    let cut = subtree(Some(2)).await.unwrap();
    let mut returned = Vec::new();
    ids(cut.root.as_ref().unwrap(), &mut returned);
    assert_eq!(
        (returned, cut.truncated),
        (vec!["child-00".to_owned(), "child-01".to_owned()], true)
    );

    let status = assert_code(subtree(Some(1_001)).await, Code::InvalidArgument);
    assert_eq!(crate::helpers::violated_fields(&status), ["max_nodes"]);
    assert_code(subtree(Some(0)).await, Code::InvalidArgument);
}
