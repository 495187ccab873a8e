//! Accounts: create, reactivation, reads, list paging, update, delete, metadata, settings.

use std::collections::HashSet;

use futures::{StreamExt, stream};
use prost_types::{Struct, Value, value::Kind};
use tenantry_proto::{
    common::v1::{PageRequest, SortOrder},
    tenant::v1::{self as pb},
};
use tonic::Code;

use crate::helpers::{assert_code, reason, spawn_app, violated_fields};

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn object(fields: &[(&str, Value)]) -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        })),
    }
}

#[tokio::test]
async fn created_account_reads_back_with_a_generated_uuid_v7() {
    let app = spawn_app().await;
    let created = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                name: "Acme".into(),
                website: Some("https://acme.example".into()),
                currency: Some("EUR".into()),
                creator_email: Some("ops@acme.example".into()),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.reactivated);
    let account = created.account.unwrap();
    let id = uuid::Uuid::parse_str(&account.tenant_id).expect("generated ID is a UUID");
    assert_eq!(id.get_version_num(), 7);
    let read = app.get(&account.tenant_id).await.unwrap();
    assert_eq!(read, account);
    assert_eq!(read.website.as_deref(), Some("https://acme.example"));
    assert_eq!(
        read.settings.unwrap().currency.as_deref(),
        Some("EUR"),
        "profile fields are settings too"
    );
}

#[tokio::test]
async fn creating_a_live_id_conflicts_and_a_deleted_one_is_reactivated() {
    let app = spawn_app().await;
    let first = app.create("acme", "Acme").await;
    let again = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some("acme".into()),
                name: "Other".into(),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await;
    let status = assert_code(again, Code::AlreadyExists);
    assert_eq!(reason(&status), "ACCOUNT_EXISTS");

    app.delete("acme").await;
    assert_code(app.get("acme").await, Code::NotFound);

    let revived = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some("acme".into()),
                name: "Acme Reborn".into(),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revived.reactivated);
    let account = revived.account.unwrap();
    assert_eq!(account.name, "Acme Reborn");
    assert_eq!(account.created_at, first.created_at, "createdAt is kept");
    let (before, after) = (first.updated_at.unwrap(), account.updated_at.unwrap());
    assert!((after.seconds, after.nanos) > (before.seconds, before.nanos));
    assert_eq!(app.get("acme").await.unwrap().name, "Acme Reborn");
}

#[tokio::test]
async fn bad_tenant_ids_are_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    for bad in ["has space", "a/b", &"x".repeat(256), "tab\tin"] {
        let result = app
            .tenants()
            .create_account(pb::CreateAccountRequest {
                account: Some(pb::NewAccount {
                    tenant_id: Some(bad.to_owned()),
                    name: "n".into(),
                    ..pb::NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await;
        let status = assert_code(result, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            vec!["account.tenant_id".to_owned()]
        );
    }
    let status = assert_code(
        app.tenants()
            .create_account(pb::CreateAccountRequest {
                account: Some(pb::NewAccount {
                    name: "   ".into(),
                    ..pb::NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["account.name".to_owned()]);
    // No field at all (the seed's CreateTenantRequest requires none): a generated ID, and
    // the account is named after it.
    let created = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount::default()),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(!created.tenant_id.is_empty());
    assert_eq!(created.name, created.tenant_id);
}

#[tokio::test]
async fn alias_lookup_and_uniqueness_among_live_accounts() {
    let app = spawn_app().await;
    let mut tenants = app.tenants();
    let with_alias = |id: &str| pb::CreateAccountRequest {
        account: Some(pb::NewAccount {
            tenant_id: Some(id.to_owned()),
            name: id.to_owned(),
            alias: Some("acme-login".into()),
            ..pb::NewAccount::default()
        }),
        idempotency_key: None,
    };
    tenants.create_account(with_alias("a")).await.unwrap();
    let by_alias = tenants
        .get_account_by_alias(pb::GetAccountByAliasRequest {
            alias: "acme-login".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(by_alias.tenant_id, "a");
    let status = assert_code(
        tenants.create_account(with_alias("b")).await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "ALIAS_TAKEN");
    assert_code(
        tenants
            .get_account_by_alias(pb::GetAccountByAliasRequest {
                alias: "nobody".into(),
            })
            .await,
        Code::NotFound,
    );
    // Deleting the holder frees the alias.
    app.delete("a").await;
    tenants.create_account(with_alias("b")).await.unwrap();
}

#[tokio::test]
async fn update_answers_a_no_op_refuses_an_empty_change_and_applies_real_ones() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut tenants = app.tenants();
    let update = |patch: pb::UpdateAccountRequest| pb::UpdateAccountRequest {
        tenant_id: "acme".into(),
        ..patch
    };
    assert_code(
        tenants
            .update_account(update(pb::UpdateAccountRequest::default()))
            .await,
        Code::InvalidArgument,
    );
    // An update that changes nothing answers the account as it is and writes nothing.
    let before = app.get("acme").await.unwrap();
    let same = tenants
        .update_account(update(pb::UpdateAccountRequest {
            name: Some("Acme".into()),
            ..pb::UpdateAccountRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(same, before);

    let changed = tenants
        .update_account(update(pb::UpdateAccountRequest {
            name: Some("Acme Corp".into()),
            status: Some("trial".into()),
            timezone: Some("Europe/Paris".into()),
            ..pb::UpdateAccountRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(changed.name, "Acme Corp");
    assert_eq!(changed.status.as_deref(), Some("trial"));
    assert_eq!(changed.timezone.as_deref(), Some("Europe/Paris"));

    // An empty string clears an optional field.
    let cleared = tenants
        .update_account(update(pb::UpdateAccountRequest {
            status: Some(String::new()),
            ..pb::UpdateAccountRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(cleared.status, None);

    assert_code(
        tenants
            .update_account(pb::UpdateAccountRequest {
                tenant_id: "ghost".into(),
                name: Some("x".into()),
                ..pb::UpdateAccountRequest::default()
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn metadata_merges_overwrites_and_refuses_non_objects() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut tenants = app.tenants();
    let add = |metadata: Value| pb::AddAccountMetadataRequest {
        tenant_id: "acme".into(),
        metadata: Some(metadata),
    };
    tenants
        .add_account_metadata(add(object(&[
            ("maximumUsers", number(50.0)),
            ("plan", string("free")),
        ])))
        .await
        .unwrap();
    // A string holding a JSON object is accepted too; existing keys are overwritten.
    let merged = tenants
        .add_account_metadata(add(string(r#"{"plan": "pro", "region": "eu"}"#)))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
        .metadata
        .unwrap();
    let fields = merged.fields;
    assert_eq!(fields.len(), 3);
    assert_eq!(fields["maximumUsers"], number(50.0));
    assert_eq!(fields["plan"], string("pro"));
    assert_eq!(fields["region"], string("eu"));

    for bad in [
        number(5.0),
        string("[1,2]"),
        string("not json"),
        string("42"),
    ] {
        let status = assert_code(
            tenants.add_account_metadata(add(bad)).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains("JSON object"),
            "message says what is expected: {}",
            status.message()
        );
    }
    assert_code(
        tenants
            .add_account_metadata(pb::AddAccountMetadataRequest {
                tenant_id: "acme".into(),
                metadata: None,
            })
            .await,
        Code::InvalidArgument,
    );

    let after_delete = tenants
        .delete_account_metadata(pb::DeleteAccountMetadataRequest {
            tenant_id: "acme".into(),
            key: "plan".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
        .metadata
        .unwrap();
    assert!(!after_delete.fields.contains_key("plan"));
    assert_eq!(after_delete.fields.len(), 2);

    assert_code(
        tenants
            .add_account_metadata(pb::AddAccountMetadataRequest {
                tenant_id: "ghost".into(),
                metadata: Some(object(&[("a", number(1.0))])),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        tenants
            .delete_account_metadata(pb::DeleteAccountMetadataRequest {
                tenant_id: "ghost".into(),
                key: "a".into(),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn settings_update_needs_a_setting_and_public_subset_hides_the_rest() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut tenants = app.tenants();
    assert_code(
        tenants
            .update_account_settings(pb::UpdateAccountSettingsRequest {
                tenant_id: "acme".into(),
                settings: Some(pb::AccountSettings::default()),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        tenants
            .update_account_settings(pb::UpdateAccountSettingsRequest {
                tenant_id: "ghost".into(),
                settings: Some(pb::AccountSettings {
                    locale: Some("fr-FR".into()),
                    ..pb::AccountSettings::default()
                }),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        tenants
            .update_account_settings(pb::UpdateAccountSettingsRequest {
                tenant_id: "acme".into(),
                settings: Some(pb::AccountSettings {
                    currency: Some("euros".into()),
                    ..pb::AccountSettings::default()
                }),
            })
            .await,
        Code::InvalidArgument,
    );
    let updated = tenants
        .update_account_settings(pb::UpdateAccountSettingsRequest {
            tenant_id: "acme".into(),
            settings: Some(pb::AccountSettings {
                date_format: Some("dd/MM/yyyy".into()),
                address: Some("1 rue de la Paix".into()),
                logo_url: Some("https://acme.example/logo.png".into()),
                ..pb::AccountSettings::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(updated.date_format.as_deref(), Some("dd/MM/yyyy"));
    let read = tenants
        .get_account_settings(pb::GetAccountSettingsRequest {
            tenant_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(read, updated);
    let public = tenants
        .get_public_account_settings(pb::GetPublicAccountSettingsRequest {
            tenant_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(public.name, "Acme");
    assert_eq!(
        public.logo_url.as_deref(),
        Some("https://acme.example/logo.png")
    );
    assert_eq!(public.date_format.as_deref(), Some("dd/MM/yyyy"));
}

#[tokio::test]
async fn delete_current_account_requires_the_permission() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut tenants = app.tenants();
    let status = assert_code(
        tenants
            .delete_current_account(pb::DeleteCurrentAccountRequest {
                tenant_id: "acme".into(),
                caller_permissions: vec!["fe.secure.read.users".into()],
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status
            .message()
            .contains("fe.account-settings.delete.account")
    );
    assert!(
        app.get("acme").await.is_ok(),
        "refused delete left the account"
    );
    tenants
        .delete_current_account(pb::DeleteCurrentAccountRequest {
            tenant_id: "acme".into(),
            caller_permissions: vec!["fe.account-settings.delete.account".into()],
        })
        .await
        .unwrap();
    assert_code(app.get("acme").await, Code::NotFound);
}

#[tokio::test]
async fn batch_get_reports_missing_and_deleted_ids() {
    let app = spawn_app().await;
    app.create("a", "A").await;
    app.create("b", "B").await;
    app.delete("b").await;
    let r = app
        .tenants()
        .batch_get_accounts(pb::BatchGetAccountsRequest {
            tenant_ids: vec!["a".into(), "b".into(), "c".into()],
            missing_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accounts.len(), 1);
    assert_eq!(r.accounts[0].tenant_id, "a");
    assert_eq!(r.missing_tenant_ids, vec!["b".to_owned(), "c".to_owned()]);

    // The existence check answers the same, without the accounts.
    let r = app
        .tenants()
        .batch_get_accounts(pb::BatchGetAccountsRequest {
            tenant_ids: vec!["c".into(), "a".into(), "b".into(), "c".into()],
            missing_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accounts.is_empty());
    assert_eq!(r.missing_tenant_ids, vec!["b".to_owned(), "c".to_owned()]);
}

async fn list_all(
    app: &crate::helpers::TestApp,
    sort: pb::AccountSortField,
    order: SortOrder,
    filter: Option<&str>,
    limit: u32,
) -> (Vec<pb::Account>, u64) {
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page = app
            .tenants()
            .list_accounts(pb::ListAccountsRequest {
                page: Some(PageRequest {
                    limit: Some(limit),
                    offset,
                }),
                filter: filter.map(str::to_owned),
                sort_by: sort.into(),
                order: order.into(),
                tenant_ids: vec![],
                metadata: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        let info = page.page.unwrap();
        let n = page.accounts.len();
        all.extend(page.accounts);
        offset += limit;
        if !info.has_next {
            assert_eq!(all.len() as u64, info.total_items);
            return (all, info.total_items);
        }
        assert_eq!(n, limit as usize, "only the last page is short");
    }
}

#[tokio::test]
async fn list_pages_never_repeat_or_skip_under_every_sort() {
    let app = spawn_app().await;
    const N: usize = 2_500;
    // Names repeat (50 distinct) so the tenant_id tie-break decides the order within a name.
    stream::iter(0..N)
        .for_each_concurrent(16, |i| {
            let app = &app;
            async move {
                app.create(&format!("t{i:05}"), &format!("Name {:02}", i % 50))
                    .await;
            }
        })
        .await;
    for sort in [
        pb::AccountSortField::CreatedAt,
        pb::AccountSortField::Name,
        pb::AccountSortField::TenantId,
    ] {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let (all, total) = list_all(&app, sort, order, None, 200).await;
            assert_eq!(total, N as u64);
            let ids: HashSet<_> = all.iter().map(|a| a.tenant_id.clone()).collect();
            assert_eq!(
                ids.len(),
                N,
                "{sort:?} {order:?}: a row repeated or was skipped"
            );
            let key = |a: &pb::Account| -> (String, String) {
                let primary = match sort {
                    pb::AccountSortField::Name => a.name.clone(),
                    pb::AccountSortField::CreatedAt => {
                        let t = a.created_at.unwrap();
                        format!("{:020}.{:09}", t.seconds, t.nanos)
                    }
                    pb::AccountSortField::TenantId | pb::AccountSortField::Unspecified => {
                        String::new()
                    }
                };
                (primary, a.tenant_id.clone())
            };
            for pair in all.windows(2) {
                let (a, b) = (key(&pair[0]), key(&pair[1]));
                match order {
                    SortOrder::Desc => assert!(a > b, "{sort:?} desc out of order: {a:?} {b:?}"),
                    SortOrder::Asc | SortOrder::Unspecified => {
                        assert!(a < b, "{sort:?} asc out of order: {a:?} {b:?}")
                    }
                }
            }
        }
    }
    // Default page size is 50; the filter is a case-insensitive substring of name or ID.
    let page = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.accounts.len(), 50);
    assert_eq!(page.page.unwrap().total_pages, (N as u64).div_ceil(50));
    let (by_name, total) = list_all(
        &app,
        pb::AccountSortField::Name,
        SortOrder::Asc,
        Some("nAmE 07"),
        20,
    )
    .await;
    assert_eq!(total, (N / 50) as u64);
    assert!(by_name.iter().all(|a| a.name == "Name 07"));
    let (by_id, _) = list_all(
        &app,
        pb::AccountSortField::TenantId,
        SortOrder::Asc,
        Some("T0012"),
        200,
    )
    .await;
    let ids: Vec<_> = by_id.iter().map(|a| a.tenant_id.as_str()).collect();
    assert_eq!(
        ids,
        (120..130).map(|i| format!("t{i:05}")).collect::<Vec<_>>()
    );
    // `%` and `_` are literal characters in the filter, not wildcards.
    let (none, _) = list_all(
        &app,
        pb::AccountSortField::Name,
        SortOrder::Asc,
        Some("Name_0"),
        20,
    )
    .await;
    assert!(none.is_empty());

    let only = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            tenant_ids: vec!["t00003".into(), "t00001".into(), "nope".into()],
            sort_by: pb::AccountSortField::TenantId.into(),
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = only.accounts.iter().map(|a| a.tenant_id.as_str()).collect();
    assert_eq!(ids, ["t00001", "t00003"]);

    // Deleted accounts disappear from lists.
    app.delete("t00001").await;
    let (_, total) = list_all(
        &app,
        pb::AccountSortField::TenantId,
        SortOrder::Asc,
        Some("t0000"),
        200,
    )
    .await;
    assert_eq!(total, 9);

    for limit in [0, 201] {
        let status = assert_code(
            app.tenants()
                .list_accounts(pb::ListAccountsRequest {
                    page: Some(PageRequest {
                        limit: Some(limit),
                        offset: 0,
                    }),
                    ..pb::ListAccountsRequest::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page.limit".to_owned()]);
    }
}
