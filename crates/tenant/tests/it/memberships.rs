//! Memberships: add, remove, list both ways.

use tenantry_proto::{common::v1::PageRequest, tenant::v1 as pb};
use tonic::Code;

use crate::helpers::{assert_code, reason, spawn_app};

#[tokio::test]
async fn memberships_are_added_listed_and_removed() {
    let app = spawn_app().await;
    app.create("a", "A").await;
    app.create("b", "B").await;
    let mut m = app.memberships();
    let add = |t: &str, u: &str| pb::AddMembershipRequest {
        tenant_id: t.into(),
        user_id: u.into(),
        idempotency_key: None,
    };
    for u in ["u3", "u1", "u2"] {
        m.add_membership(add("a", u)).await.unwrap();
    }
    m.add_membership(add("b", "u1")).await.unwrap();
    let s = assert_code(m.add_membership(add("a", "u1")).await, Code::AlreadyExists);
    assert_eq!(reason(&s), "MEMBERSHIP_EXISTS");
    assert_code(m.add_membership(add("ghost", "u1")).await, Code::NotFound);
    assert_code(
        m.add_membership(add("a", "  ")).await,
        Code::InvalidArgument,
    );

    let members = m
        .list_account_members(pb::ListAccountMembersRequest {
            tenant_id: "a".into(),
            page: Some(PageRequest {
                limit: Some(2),
                offset: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let users: Vec<_> = members
        .memberships
        .iter()
        .map(|m| m.user_id.as_str())
        .collect();
    assert_eq!(users, ["u1", "u2"]);
    let info = members.page.unwrap();
    assert_eq!(
        (info.total_items, info.total_pages, info.has_next),
        (3, 2, true)
    );

    let of_user = m
        .list_user_accounts(pb::ListUserAccountsRequest {
            user_id: "u1".into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    let tenants: Vec<_> = of_user
        .memberships
        .iter()
        .map(|m| m.tenant_id.as_str())
        .collect();
    assert_eq!(tenants, ["a", "b"]);

    m.remove_membership(pb::RemoveMembershipRequest {
        tenant_id: "a".into(),
        user_id: "u1".into(),
    })
    .await
    .unwrap();
    let s = assert_code(
        m.remove_membership(pb::RemoveMembershipRequest {
            tenant_id: "a".into(),
            user_id: "u1".into(),
        })
        .await,
        Code::NotFound,
    );
    assert_eq!(reason(&s), "MEMBERSHIP_NOT_FOUND");
    app.delete("b").await;
    assert_code(
        m.list_account_members(pb::ListAccountMembersRequest {
            tenant_id: "b".into(),
            page: None,
        })
        .await,
        Code::NotFound,
    );
    let of_user = m
        .list_user_accounts(pb::ListUserAccountsRequest {
            user_id: "u1".into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(of_user.memberships.is_empty());
}
